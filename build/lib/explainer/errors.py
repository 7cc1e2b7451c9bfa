"""Errors the engine raises on bad input.

Every one of them carries a message written for a person: the CLI prints it on one line and the chat shows it
as is, so no traceback ever reaches a user.
"""

from __future__ import annotations


class ExplainerError(Exception):
    """Base class of every error meant to be shown to a user."""


class ConfigError(ExplainerError, ValueError):
    """An environment variable holds a value it does not take (see :mod:`explainer.config`)."""


class ImageError(ExplainerError, ValueError):
    """The input is not an image we can read (missing, empty, corrupt, too large...)."""


class ModelError(ExplainerError, ValueError):
    """A model file or name cannot be loaded, or is not a model we can explain."""


class LayerError(ExplainerError, ValueError):
    """The requested target layer does not exist or has no spatial output."""


class ClassError(ExplainerError, ValueError):
    """A class name or index does not match the model's labels.

    Attributes
    ----------
    candidates : list of str
        Close matches the user may have meant (empty when nothing is close).
    """

    def __init__(self, message: str, candidates: list[str] | None = None):
        super().__init__(message)
        self.candidates = list(candidates or [])


class AmbiguousClassError(ClassError):
    """A class name matches several labels equally well; the caller should ask which one."""

"""The CAM family, by name. Each method is one small module overriding one hook of :class:`BaseCAM`."""

from __future__ import annotations

from ..errors import ExplainerError
from .base import BaseCAM, CamBatch, normalize
from .gradcam import GradCAM

METHODS: dict[str, type[BaseCAM]] = {cls.name: cls for cls in (GradCAM,)}

__all__ = ["METHODS", "BaseCAM", "CamBatch", "get_method", "method_key", "normalize"]


def method_key(name: str) -> str:
    """Canonical method name: case, spaces, dashes and underscores do not matter ("Grad-CAM++" → "gradcam++")."""
    return "".join(ch for ch in str(name).lower() if ch not in " -_")


def get_method(name: str) -> BaseCAM:
    """An instance of the method called ``name``."""
    key = method_key(name)
    if key not in METHODS:
        raise ExplainerError(f"Unknown method {name!r}; choose one of {', '.join(METHODS)}.")
    return METHODS[key]()

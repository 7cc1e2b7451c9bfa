"""The CAM family, by name. Each method is one small module overriding one hook of :class:`BaseCAM`."""

from __future__ import annotations

from ..errors import ExplainerError
from .base import BaseCAM, CamBatch, normalize
from .eigencam import EigenCAM
from .gradcam import GradCAM
from .gradcampp import GradCAMPlusPlus
from .hirescam import HiResCAM
from .layercam import LayerCAM
from .scorecam import ScoreCAM
from .xgradcam import XGradCAM

METHODS: dict[str, type[BaseCAM]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, HiResCAM, XGradCAM, LayerCAM, ScoreCAM, EigenCAM)
}

#: Other spellings people use, after :func:`method_key`'s squashing.
ALIASES: dict[str, str] = {
    "gradcamplusplus": "gradcam++",
    "gradcampp": "gradcam++",
    "gradcamplus": "gradcam++",
    "xgrad": "xgradcam",
    "gradcam+": "gradcam++",
}

__all__ = ["ALIASES", "METHODS", "BaseCAM", "CamBatch", "get_method", "method_key", "normalize"]


def method_key(name: str) -> str:
    """Canonical method name: case, spaces, dashes and underscores do not matter ("Grad-CAM++" → "gradcam++")."""
    key = "".join(ch for ch in str(name).lower() if ch not in " -_")
    return ALIASES.get(key, key)


def get_method(name: str | BaseCAM) -> BaseCAM:
    """An instance of the method called ``name``; an instance (e.g. ``ScoreCAM(top_n=128)``) is returned as is."""
    if isinstance(name, BaseCAM):
        return name
    key = method_key(name)
    if key not in METHODS:
        raise ExplainerError(f"Unknown method {name!r}; choose one of {', '.join(METHODS)}.")
    return METHODS[key]()

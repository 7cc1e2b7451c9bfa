"""The CAM family, by name. Each method is one small module overriding one hook of :class:`BaseCAM`."""

from __future__ import annotations

from explainer.cams.base import BaseCAM, CamBatch, normalize
from explainer.cams.eigencam import EigenCAM
from explainer.cams.gradcam import GradCAM
from explainer.cams.gradcampp import GradCAMPlusPlus
from explainer.cams.hirescam import HiResCAM
from explainer.cams.layercam import LayerCAM
from explainer.cams.scorecam import ScoreCAM
from explainer.cams.xgradcam import XGradCAM
from explainer.errors import ExplainerError

#: Every method by its key. Adding a method is one module (a :class:`BaseCAM` subclass with its facts:
#: ``name``, ``display_name``, ``aliases``, ``class_agnostic``, ``slow``) plus its class in this tuple; the engine,
#: the CLI and the chat read everything else from the class.
METHODS: dict[str, type[BaseCAM]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, HiResCAM, XGradCAM, LayerCAM, ScoreCAM, EigenCAM)
}

__all__ = ["METHODS", "BaseCAM", "CamBatch", "get_method", "method_key", "normalize", "spellings"]


def _squash(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch not in " -_")


def spellings(cls: type[BaseCAM]) -> tuple[str, ...]:
    """Every way of writing ``cls``'s name that is understood: its key, display name and aliases."""
    return tuple(dict.fromkeys((cls.name, cls.display_name, *cls.aliases)))


def method_key(name: str) -> str:
    """Canonical method name: case, spaces, dashes and underscores do not matter ("Grad-CAM++" → "gradcam++").

    Any spelling a method class declares (:func:`spellings`) gives its key; an unknown name comes back squashed.
    """
    key = _squash(name)
    if key in METHODS:
        return key
    return next((cls.name for cls in METHODS.values() if key in {_squash(s) for s in spellings(cls)}), key)


def get_method(name: str | BaseCAM) -> BaseCAM:
    """An instance of the method called ``name``; an instance (e.g. ``ScoreCAM(top_n=128)``) is returned as is."""
    if isinstance(name, BaseCAM):
        return name
    key = method_key(name)
    if key not in METHODS:
        raise ExplainerError(f"Unknown method {name!r}; choose one of {', '.join(METHODS)}.")
    return METHODS[key]()

"""Grad-CAM Chat's engine: load a Keras image classifier and explain what it looks at.

>>> from explainer import load_model, explain
>>> model = load_model("shapes")
>>> result = explain(model, "circle.png")
>>> result.target_label, result.region.location
"""

from __future__ import annotations

import os

from explainer.config import prepare_tensorflow

# Before TensorFlow is imported: keep its C++ start-up log quiet and make sure Keras runs on it.
prepare_tensorflow()


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 muted: its CUDA probe logs through absl before any setting applies."""
    import sys

    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

from explainer.engine import explain, predict, quiet_tensorflow, warm_up
from explainer.errors import (
    AmbiguousClassError,
    ClassError,
    ConfigError,
    ExplainerError,
    ImageError,
    LayerError,
    ModelError,
)
from explainer.heads import HEADS, probabilities
from explainer.inputs.images import load_image
from explainer.models.loading import LoadedModel, ModelInfo, load_model, trusted_paths
from explainer.region import Region, localize
from explainer.result import Explanation, Prediction

quiet_tensorflow()

__all__ = [
    "HEADS",
    "AmbiguousClassError",
    "ClassError",
    "ConfigError",
    "ExplainerError",
    "Explanation",
    "ImageError",
    "LayerError",
    "LoadedModel",
    "ModelError",
    "ModelInfo",
    "Prediction",
    "Region",
    "explain",
    "load_image",
    "load_model",
    "localize",
    "predict",
    "probabilities",
    "trusted_paths",
    "warm_up",
]

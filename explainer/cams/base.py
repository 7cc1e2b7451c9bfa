"""The base of every CAM method: one hook to override, as in pytorch-grad-cam.

A method receives a :class:`CamBatch` (the target layer's activations ``A`` and, for gradient methods, the
gradients ``G`` of the target's logit, both B×h×w×K) and returns one map per image. Most methods only decide the
channel weights (:meth:`BaseCAM.get_cam_weights`); those that weight each position separately override
:meth:`BaseCAM.get_cam_image` instead. ReLU and normalisation happen here, once, for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

_EPS = 1e-7


@dataclass
class CamBatch:
    """Everything a method may use, for a batch of B images.

    Attributes
    ----------
    activations : numpy.ndarray
        B×h×w×K output of the target layer.
    gradients : numpy.ndarray or None
        B×h×w×K gradients of each image's target logit with respect to ``activations`` (None for gradient-free
        methods).
    logits : numpy.ndarray
        B×C pre-softmax scores.
    targets : numpy.ndarray
        B class indices being explained.
    inputs : numpy.ndarray
        B×H×W×3 preprocessed model inputs (for methods that run the model again, e.g. Score-CAM).
    forward : callable
        ``forward(inputs) -> logits``: the compiled model, for methods that need more forward passes.
    """

    activations: np.ndarray
    gradients: np.ndarray | None
    logits: np.ndarray
    targets: np.ndarray
    inputs: np.ndarray
    forward: Callable[[np.ndarray], np.ndarray]


class BaseCAM:
    """Override :meth:`get_cam_weights` (channel weights) or :meth:`get_cam_image` (the whole map)."""

    name: ClassVar[str] = "base"
    #: Gradient-free methods skip the backward pass entirely.
    needs_gradients: ClassVar[bool] = True

    def get_cam_weights(self, batch: CamBatch) -> np.ndarray:
        """B×K channel weights."""
        raise NotImplementedError

    def get_cam_image(self, batch: CamBatch) -> tuple[np.ndarray, np.ndarray | None]:
        """B×h×w raw maps (before ReLU) and the B×K channel weights behind them (None if there are none)."""
        weights = self.get_cam_weights(batch)
        return np.einsum("bk,bhwk->bhw", weights, batch.activations), weights

    def __call__(self, batch: CamBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Return ``(maps, raw, weights)``: maps in [0, 1] after ReLU, raw maps, and channel weights."""
        raw, weights = self.get_cam_image(batch)
        return normalize(np.maximum(raw, 0.0)), raw, weights


def normalize(maps: np.ndarray) -> np.ndarray:
    """Min-max scale each map to [0, 1]; a flat (e.g. all-zero) map becomes zeros, never NaN."""
    maps = np.asarray(maps, np.float32)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > _EPS, (maps - low) / np.maximum(span, _EPS), 0.0).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64 (stable for large logits), returned as float32."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)

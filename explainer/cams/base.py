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

from explainer.heads import probabilities, softmax

__all__ = ["BaseCAM", "CamBatch", "is_flat", "normalize", "probabilities", "softmax"]

#: A map whose span is within this many float32 roundings of its magnitude is flat (all noise, no shape).
_FLAT_ULPS = 4
_EPS32 = float(np.finfo(np.float32).eps)


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
    head : str
        The model's head (:mod:`explainer.heads`): how logits become probabilities.
    versus : numpy.ndarray or None
        B class indices each target is contrasted with, -1 for none (:mod:`explainer.cams.contrast`); the
        gradients are then those of ``logit_target − logit_versus``.
    """

    activations: np.ndarray
    gradients: np.ndarray | None
    logits: np.ndarray
    targets: np.ndarray
    inputs: np.ndarray
    forward: Callable[[np.ndarray], np.ndarray]
    head: str = "softmax"
    versus: np.ndarray | None = None


class BaseCAM:
    """Override :meth:`get_cam_weights` (channel weights) or :meth:`get_cam_image` (the whole map)."""

    name: ClassVar[str] = "base"
    #: Gradient-free methods skip the backward pass entirely.
    needs_gradients: ClassVar[bool] = True
    #: How a person writes the method's name (messages and the chat use it).
    display_name: ClassVar[str] = "This method"
    #: Other ways people write the name. Case, spaces, dashes and underscores never matter: the chat finds each
    #: spelling in a message with the separators optional, and :func:`~explainer.cams.method_key` accepts it.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: True when the map is the same whichever class is asked about (the chat says so when comparing classes).
    class_agnostic: ClassVar[bool] = False
    #: True when a map costs many forward passes (:meth:`extra_forward_passes` > 0): the chat announces the wait.
    slow: ClassVar[bool] = False
    #: True when the method can score ``logit_A − logit_B`` (``versus``, :mod:`explainer.cams.contrast`).
    takes_versus: ClassVar[bool] = True
    #: True when the method can negate its gradients (``against``, the counterfactual map).
    takes_against: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "aliases" not in cls.__dict__:  # spellings name one class: LayerCAM does not answer to HiResCAM's
            cls.aliases = ()

    def extra_forward_passes(self, channels: int) -> int:
        """Forward passes of single images beyond the first, for ``channels`` channels (for time estimates)."""
        return 0

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
    """Min-max scale each map (B×h×w) to [0, 1]; a flat map (see :func:`is_flat`) becomes zeros, never NaN.

    Flatness is judged against the map's own scale, not an absolute epsilon: a map whose values are all about
    1e-13 (Score-CAM on a confident model, or a network with small activations) still has a shape to show.
    """
    maps = np.asarray(maps, np.float64)  # float64: the span of a tiny map is not lost to float32 subnormals
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    flat = is_flat(maps)[:, None, None]
    return np.where(flat, 0.0, (maps - low) / np.where(flat, 1.0, span)).astype(np.float32)


def is_flat(maps: np.ndarray) -> np.ndarray:
    """Per map (B×h×w → B booleans): exactly constant, or a span within float32 rounding of its magnitude.

    Float32 values near ``m`` are spaced about ``eps32 · m`` apart, so a span of a few such steps is rounding
    noise rather than structure. Scale-free: multiplying a map by 1e12 does not change the verdict.
    """
    maps = np.asarray(maps, np.float64)
    span = maps.max(axis=(1, 2)) - maps.min(axis=(1, 2))
    magnitude = np.abs(maps).max(axis=(1, 2))
    return (span == 0) | (span <= _FLAT_ULPS * _EPS32 * magnitude)

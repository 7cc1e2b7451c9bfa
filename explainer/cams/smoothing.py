"""Optional smoothing of CAM maps: eigen smoothing and test-time augmentation.

* :class:`EigenSmooth` wraps a method and replaces the sum over channels of its per-channel contributions
  (``weight_k · A_k``, or ``g ⊙ A`` for position-wise methods) by their first principal component, as
  pytorch-grad-cam's ``eigen_smooth`` does. It removes noise that many channels do not share.
  Use it as ``explain(model, image, method=EigenSmooth("gradcam"))``.
* :func:`explain_augmented` explains the image and a few variants (horizontal flip and brightness ×0.9 / ×1.1),
  flips the maps of flipped variants back and averages them, for the class found on the original image.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from explainer.cams import get_method
from explainer.cams.base import BaseCAM, CamBatch
from explainer.cams.eigencam import first_component
from explainer.engine import explain
from explainer.inputs.images import load_image
from explainer.region import DEFAULT_THRESHOLD

#: (horizontal flip, brightness factor) of every test-time variant; the first is the image itself.
AUGMENTATIONS: tuple[tuple[bool, float], ...] = (
    (False, 1.0), (True, 1.0), (False, 0.9), (True, 0.9), (False, 1.1), (True, 1.1),
)


def contributions(method: BaseCAM, batch: CamBatch) -> tuple[np.ndarray, np.ndarray | None]:
    """B×h×w×K terms whose sum over channels is ``method``'s raw map, and its channel weights (or None)."""
    if hasattr(method, "get_contributions"):
        return method.get_contributions(batch)
    weights = method.get_cam_weights(batch)
    return weights[:, None, None, :] * batch.activations, weights


class EigenSmooth(BaseCAM):
    """``method`` with its channel sum replaced by the first principal component of its contributions.

    Parameters
    ----------
    method : str or BaseCAM
        The method to smooth, by name or as an instance. Eigen-CAM itself is already a projection.
    """

    def __init__(self, method: str | BaseCAM = "gradcam"):
        self.method = get_method(method)
        self.name = self.method.name
        self.needs_gradients = self.method.needs_gradients
        self.takes_versus, self.takes_against = self.method.takes_versus, self.method.takes_against

    def get_cam_image(self, batch: CamBatch) -> tuple[np.ndarray, np.ndarray | None]:
        if not _has_terms(self.method):  # e.g. Eigen-CAM: already a projection, nothing to smooth
            return self.method.get_cam_image(batch)
        terms, weights = contributions(self.method, batch)
        return first_component(terms), weights


def _has_terms(method: BaseCAM) -> bool:
    return hasattr(method, "get_contributions") or type(method).get_cam_weights is not BaseCAM.get_cam_weights


def augment(image: np.ndarray) -> list[np.ndarray]:
    """The variants of an RGB ``uint8`` image listed in :data:`AUGMENTATIONS`, in that order."""
    variants = []
    for flip, brightness in AUGMENTATIONS:
        variant = image[:, ::-1] if flip else image
        if brightness != 1.0:
            variant = np.clip(variant.astype(np.float32) * brightness, 0, 255).astype(np.uint8)
        variants.append(np.ascontiguousarray(variant))
    return variants


def explain_augmented(model, image, target=None, method: str | BaseCAM = "gradcam", layer: str | None = None,
                      threshold: float = DEFAULT_THRESHOLD, top_k: int = 5):
    """Explain ``image`` with test-time augmentation: the average map over :data:`AUGMENTATIONS`.

    The class is the one explained on the unaltered image (the top prediction when ``target`` is None), so every
    variant explains the same class. Predictions, probability and the raw ``cam`` are those of the original image;
    ``heatmap`` and ``region`` come from the averaged map.

    Parameters
    ----------
    model : LoadedModel
    image : array, path or PIL image
        One image.
    target, method, layer, threshold, top_k :
        As for :func:`explainer.explain`.

    Returns
    -------
    Explanation
    """
    image = load_image(image)
    variants = augment(image)
    original = explain(model, variants[0], target, method, layer, threshold, top_k)
    others = explain(model, variants[1:], [original.target_index] * (len(variants) - 1), method, layer,
                     threshold, top_k)
    maps = [original.heatmap] + [
        result.heatmap[:, ::-1] if flip else result.heatmap
        for result, (flip, _) in zip(others, AUGMENTATIONS[1:], strict=True)
    ]
    heatmap = np.mean(maps, axis=0)
    heatmap = (heatmap / heatmap.max() if heatmap.max() > 0 else heatmap).astype(np.float32)
    return dataclasses.replace(original, heatmap=heatmap, region=dataclasses.replace(original.region, heatmap=heatmap))

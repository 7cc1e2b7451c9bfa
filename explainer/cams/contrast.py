"""Contrast and counterfactual maps: what separates class A from class B, and what speaks against A.

* **Contrast** (``versus=B``; contrastive Grad-CAM, the idea behind Finer-CAM): the score is the difference of the
  two logits before the last activation, ``logit_A − logit_B`` (for a multi-label head the two pre-sigmoid logits).
  Gradients are linear, so every gradient method maps where the evidence favours A over B. Score-CAM scores the
  same difference for each masked input (for a softmax head that is ``log(p_A / p_B)``). Eigen-CAM is
  class-agnostic and has no score: it refuses ``versus``.
* **Against** (``against=True``; the counterfactual map of the Grad-CAM paper): the gradients are negated, so the
  map shows the regions whose removal would raise A's score. Gradient methods only: Score-CAM's weights are
  probabilities, never negative, and Eigen-CAM has no gradient to negate.

Neither map outlines an object, so their regions keep the heat region (box, location, spread) but get no
segmented mask (:attr:`Region.no_mask_reason <explainer.region.Region.no_mask_reason>` says why). A class
compared with itself, or an image where nothing lowers the score, gives an all-zero map (never NaN).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from explainer.cams import METHODS
from explainer.errors import ExplainerError
from explainer.labels import match_label
from explainer.result import Explanation, Prediction

#: The index meaning "no contrast" for an image of a batch.
NO_VERSUS = -1

__all__ = ["NO_VERSUS", "check_supported", "expand", "map_correlation", "mark", "resolve", "target_score"]


def expand(images: list, targets: list, versus, as_list: bool) -> tuple[list, list, list, bool]:
    """Pair each image with its ``versus``: a scalar repeats, a list gives one per image.

    One image and one target against a list of classes becomes one contrast per class (A vs B, A vs C, ...).
    """
    if not isinstance(versus, (list, tuple)):
        return images, targets, [versus] * len(images), as_list
    versus = list(versus)
    if len(images) == 1 and len(versus) > 1:
        images, targets = images * len(versus), targets * len(versus)
    if len(versus) != len(images):
        raise ExplainerError(f"Got {len(images)} images but {len(versus)} classes to compare with (versus).")
    return images, targets, versus, True


def resolve(labels: list[str], versus: list) -> np.ndarray:
    """Class indices of ``versus`` (index or label each, None for no contrast) as int32, -1 where None."""
    return np.array([NO_VERSUS if v is None else match_label(labels, int(v) if isinstance(v, np.integer) else v)
                     for v in versus], np.int32)


def check_supported(cam, contrast: bool, against: bool) -> None:
    """Refuse, in one line, a combination ``cam`` cannot score (``contrast``: some image has a ``versus``)."""
    if contrast and against:
        raise ExplainerError("versus and against do not combine: the negated contrast of A versus B is B versus A; "
                             "ask for that instead.")
    if contrast and not getattr(cam, "takes_versus", False):
        takers = ", ".join(cls.display_name for cls in METHODS.values() if cls.takes_versus)
        raise ExplainerError(f"{cam.display_name} cannot compare two classes (its map is the same for every "
                             f"class); these methods can: {takers}.")
    if against and not getattr(cam, "takes_against", False):
        takers = ", ".join(cls.display_name for cls in METHODS.values() if cls.takes_against)
        raise ExplainerError(f"{cam.display_name} cannot show what speaks against a class (it has no gradients "
                             f"to negate); these methods can: {takers}.")


def target_score(logits: tf.Tensor, chosen: tf.Tensor, versus: tf.Tensor) -> tf.Tensor:
    """Per image: the target's logit, minus the ``versus`` class's logit where one is given (B scores)."""
    own = tf.gather(logits, chosen, batch_dims=1)
    other = tf.gather(logits, tf.maximum(versus, 0), batch_dims=1)
    return own - tf.where(versus >= 0, other, tf.zeros_like(other))


def mark(result: Explanation, versus: int, against: bool) -> Explanation:
    """``result`` recording its contrast or negation, its mask withheld (neither map outlines an object)."""
    if versus == NO_VERSUS and not against:
        return result
    label = result.target_label
    other = None if versus == NO_VERSUS else Prediction(int(versus), result.labels[versus],
                                                        float(result.probabilities[versus]))
    reason = (f"a contrast map shows where the evidence for {label} beats {other.label}, not an object: "
              "there is nothing to segment" if other else
              f"this map shows what speaks against {label}, not an object: there is nothing to segment")
    region = dataclasses.replace(result.region, no_mask_reason=reason)
    return dataclasses.replace(result, versus=other, against=against, region=region)


def map_correlation(first: Explanation | np.ndarray, second: Explanation | np.ndarray) -> float | None:
    """Pearson correlation of two maps of the same image (two classes' own maps, say), or None if one is flat.

    A value near 1 means the two maps look alike side by side, so only a contrast map (``versus``) can show
    what tells the classes apart.

    Parameters
    ----------
    first, second : Explanation or numpy.ndarray
        Explanations (their ``heatmap``, at the image's resolution) or maps of equal shape.

    Returns
    -------
    float or None
        r in [-1, 1]; None when either map is constant (e.g. all zero): there is no shape to compare.
    """
    a, b = (np.ravel(getattr(m, "heatmap", m)).astype(np.float64) for m in (first, second))
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {np.shape(a)} and {np.shape(b)}")
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float(np.clip((a * b).sum() / denominator, -1.0, 1.0)) if denominator > 0 else None

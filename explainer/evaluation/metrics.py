"""How far to trust a saliency map: localization against ground truth, faithfulness, and a sanity check.

Every metric has one call shape, ``metric(model, images, maps, targets, **options)``, and returns one number per
image (a NumPy array) or a small dataclass:

* ``model`` — a :class:`~explainer.models.loading.LoadedModel`;
* ``images`` — RGB ``uint8`` H×W×3 arrays (or paths / PIL images), any size;
* ``maps`` — one saliency map per image (H×W floats, higher = more important, any scale; resized to the image if
  needed), or :class:`~explainer.result.Explanation` objects (their ``heatmap`` is used);
* ``targets`` — the class index explained in each image (``None``: the model's top prediction).

Localization (need ground truth): :func:`pointing_game` with :func:`centre_baseline` beside it (both take an
explicit tolerance; :func:`scaled_tolerance` is TorchRay's), :func:`peak_distance`, :func:`box_iou`, :func:`mask_iou`.
Faithfulness (need only the model): :func:`deletion_auc` and :func:`insertion_auc` (RISE), :func:`average_drop` and
:func:`increase_in_confidence` (Grad-CAM++ paper) with :func:`coverage` as the complexity measure to read them with.
Sanity: :func:`sanity_check` (model randomization, Adebayo et al. 2018).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import keras
import numpy as np

from explainer.cams import get_method
from explainer.engine import default_method, explain_batch, forward, predict
from explainer.heads import probabilities as head_probabilities
from explainer.inputs.images import load_image
from explainer.layers import walk
from explainer.models.loading import LoadedModel, resize
from explainer.region import DEFAULT_THRESHOLD, iou_of_boxes, iou_of_masks, localize

#: TorchRay's pointing-game tolerance, 15 px at 224 px, as a fraction of the image's larger side: scaled so that
#: small images do not get a tolerance as large as their objects (see :func:`scaled_tolerance`).
POINTING_TOLERANCE = 15 / 224
#: Default number of steps of the deletion / insertion curves (fractions 0, 1/steps, ..., 1).
CURVE_STEPS = 16
#: What removed pixels become: the image's mean colour, a strong blur of the image, or black.
BASELINES = ("mean", "blur", "black")
DELETION_BASELINE = "mean"
INSERTION_BASELINE = "blur"
#: Gaussian blur σ of the ``blur`` baseline as a fraction of the larger side (RISE's σ=5 px at 224 is so mild
#: that a blurred object stays recognisable; this one removes shape detail at the demo objects' scale).
BLUR_SIGMA = 0.06
#: Inputs per forward call: on 2 CPUs MobileNetV2 runs fastest per image in small batches.
FORWARD_BATCH = 8
#: Median rank correlation below which a map counts as changed by weight randomization.
SANITY_THRESHOLD = 0.5


# ------------------------------------------------------------------------------------------------- inputs


def _inputs(model, images, maps, targets) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Normalise the shared arguments: image list, float maps at each image's size, int targets."""
    images, heat = _images_and_maps(images, maps)
    return images, heat, _targets(model, images, targets)


def _images_and_maps(images, maps) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images = [load_image(image) for image in images]
    maps = _per_image(maps, len(images), "maps")
    return images, [_heatmap(m, image.shape[:2]) for m, image in zip(maps, images, strict=True)]


def _heatmap(saliency, size: tuple[int, int]) -> np.ndarray:
    saliency = np.nan_to_num(np.asarray(getattr(saliency, "heatmap", saliency), np.float32))
    if saliency.ndim != 2:
        raise ValueError(f"A map must be 2-D (H×W), got shape {saliency.shape}.")
    return resize(saliency, size) if saliency.shape != tuple(size) else saliency


def _targets(model: LoadedModel | None, images: list[np.ndarray], targets) -> np.ndarray:
    if targets is None:
        if model is None:
            raise ValueError("targets=None needs a model to find the top predictions.")
        return predict(model, images).argmax(axis=1).astype(int)
    targets = np.atleast_1d(np.asarray(targets, int))
    if len(targets) != len(images):
        raise ValueError(f"Got {len(images)} images but {len(targets)} targets.")
    return targets


def _per_image(values: Sequence, n: int, what: str) -> list:
    values = list(values)
    if len(values) != n:
        raise ValueError(f"Got {n} images but {len(values)} {what}.")
    return values


# ------------------------------------------------------------------------------------------- localization


def peak_distance(model, images, maps, targets=None, *, masks) -> np.ndarray:
    """How far each map's maximum lies from its object: pixels to the nearest pixel of the mask (0 on the object).

    Parameters
    ----------
    model, images, maps, targets :
        The shared call shape (see the module docstring); ``model`` and ``targets`` are not used.
    masks : sequence of numpy.ndarray
        Boolean H×W masks, one per image.

    Returns
    -------
    numpy.ndarray
        Euclidean distance per image (``inf`` for an empty mask).
    """
    images, heat = _images_and_maps(images, maps)
    masks = _per_image(masks, len(images), "masks")
    peaks = [np.unravel_index(int(np.argmax(h)), h.shape) for h in heat]
    return np.array([_distance(mask, peak) for mask, peak in zip(masks, peaks, strict=True)], np.float32)


def pointing_game(model, images, maps, targets=None, *, masks, tolerance) -> np.ndarray:
    """Whether each map's maximum falls on the object (Zhang et al. 2016; TorchRay's protocol).

    Parameters
    ----------
    model, images, maps, targets :
        The shared call shape (see the module docstring); ``model`` and ``targets`` are not used.
    masks : sequence of numpy.ndarray
        Ground-truth boolean H×W object masks.
    tolerance : float or sequence of float
        Pixels by which a hit may miss the mask: one number for every image, or one per image. Always given, so
        every reported score says its tolerance; :func:`scaled_tolerance` gives TorchRay's (15 px at 224 px).

    Returns
    -------
    numpy.ndarray
        Boolean hit per image; its mean is the pointing accuracy. Report :func:`centre_baseline` beside it.
    """
    distance = peak_distance(model, images, maps, masks=masks)
    return distance <= _tolerances(tolerance, len(distance))


def centre_baseline(model, images, maps=None, targets=None, *, masks, tolerance) -> np.ndarray:
    """The pointing game of a map that always points at the image centre: what a map must beat.

    Same arguments and result as :func:`pointing_game`; ``maps`` is ignored.
    """
    images = [load_image(image) for image in images]
    masks = _per_image(masks, len(images), "masks")
    distance = np.array([_distance(mask, (image.shape[0] // 2, image.shape[1] // 2))
                         for image, mask in zip(images, masks, strict=True)], np.float32)
    return distance <= _tolerances(tolerance, len(distance))


def scaled_tolerance(masks, per_side: float = POINTING_TOLERANCE) -> np.ndarray:
    """Pointing tolerance in pixels for each mask: ``per_side`` × its larger side (TorchRay's 15 px at 224 px)."""
    return np.array([per_side * max(np.shape(mask)) for mask in masks], np.float32)


def _tolerances(tolerance, n: int) -> np.ndarray:
    if tolerance is None:
        raise ValueError("Give the pointing tolerance in pixels (see scaled_tolerance).")
    if np.ndim(tolerance) == 0:
        values = np.full(n, tolerance, np.float32)
    else:
        values = np.asarray(_per_image(tolerance, n, "tolerances"), np.float32)
    if (values < 0).any():
        raise ValueError("A pointing tolerance cannot be negative.")
    return values


def _distance(mask: np.ndarray, point: tuple[int, int]) -> float:
    """Euclidean distance from ``point`` = (row, col) to the nearest True pixel of ``mask`` (inf when empty)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("inf")
    outside = (~mask).astype(np.uint8)
    return float(cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[point])


def box_iou(model, images, maps, targets=None, *, boxes, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """IoU of the box the map localizes (:func:`explainer.region.localize`) with the ground-truth box.

    Parameters
    ----------
    model, images, maps, targets :
        The shared call shape; ``model`` and ``targets`` are not used.
    boxes : sequence of (x, y, w, h)
        Ground-truth boxes in image pixels.
    threshold : float
        Localization threshold, a fraction of each map's maximum.

    Returns
    -------
    numpy.ndarray
        IoU in [0, 1] per image.
    """
    images, heat = _images_and_maps(images, maps)
    boxes = _per_image(boxes, len(images), "boxes")
    return np.array([iou_of_boxes(localize(h, threshold).bbox, tuple(int(v) for v in box))
                     for h, box in zip(heat, boxes, strict=True)], np.float32)


def mask_iou(model, images, maps, targets=None, *, masks, threshold: float = DEFAULT_THRESHOLD,
             segment: str = "threshold") -> np.ndarray:
    """IoU of the region the map localizes with the ground-truth mask, pixel by pixel.

    Same arguments as :func:`box_iou`, with boolean H×W ``masks`` instead of boxes, and ``segment``: how the
    region is cut from the map (:data:`explainer.segment.SEGMENTERS`; ``threshold``, the default, is the heat
    region itself, ``grabcut`` refines it with the image's colours).
    """
    images, heat = _images_and_maps(images, maps)
    masks = _per_image(masks, len(images), "masks")
    return np.array([iou_of_masks(localize(h, threshold, image, segment).mask, mask)
                     for image, h, mask in zip(images, heat, masks, strict=True)], np.float32)


# ------------------------------------------------------------------------------------ deletion / insertion


@dataclass
class Curves:
    """Probability of the target class as pixels are deleted or inserted, most salient first.

    Attributes
    ----------
    fractions : numpy.ndarray
        ``steps + 1`` fractions of the image changed, 0 to 1.
    probabilities : numpy.ndarray
        B × (steps + 1) softmax probability of each image's target at each fraction.
    """

    fractions: np.ndarray
    probabilities: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        """Area under each image's curve (trapezoid rule over the fraction 0..1)."""
        p, f = self.probabilities, self.fractions
        return ((p[:, 1:] + p[:, :-1]) / 2 * np.diff(f)).sum(axis=1).astype(np.float32)


def deletion_curves(model: LoadedModel, images, maps, targets=None, *, steps: int = CURVE_STEPS,
                    baseline: str = DELETION_BASELINE, seed: int = 0) -> Curves:
    """RISE deletion (Petsiuk et al. 2018): replace the most salient pixels first by ``baseline``.

    A faithful map makes the probability fall fast: a **lower** area is better.

    Parameters
    ----------
    model, images, maps, targets :
        The shared call shape. Images and maps are resized to the model's input size; ties in a map (e.g. a flat
        map) are broken in a random order fixed by ``seed``.
    steps : int
        The curve has ``steps + 1`` points; all of them run as batched forward passes.
    baseline : {"mean", "blur", "black"}
        What deleted pixels become: the image's mean colour (default: removes the information without adding
        black edges the model never saw), a Gaussian blur of the image (σ = :data:`BLUR_SIGMA` × the larger
        side), or black.
    seed : int
        Seed of the tie-breaking order.
    """
    return _curves(model, images, maps, targets, steps, baseline, seed, inserting=False)


def insertion_curves(model: LoadedModel, images, maps, targets=None, *, steps: int = CURVE_STEPS,
                     baseline: str = INSERTION_BASELINE, seed: int = 0) -> Curves:
    """RISE insertion: start from ``baseline`` (a blurred image by default) and reveal the most salient pixels first.

    A faithful map makes the probability rise fast: a **higher** area is better. Arguments as for
    :func:`deletion_curves`.
    """
    return _curves(model, images, maps, targets, steps, baseline, seed, inserting=True)


def deletion_auc(model: LoadedModel, images, maps, targets=None, **options) -> np.ndarray:
    """Area under the deletion curve per image (lower is better); options as for :func:`deletion_curves`."""
    return deletion_curves(model, images, maps, targets, **options).auc


def insertion_auc(model: LoadedModel, images, maps, targets=None, **options) -> np.ndarray:
    """Area under the insertion curve per image (higher is better); options as for :func:`insertion_curves`."""
    return insertion_curves(model, images, maps, targets, **options).auc


def _curves(model, images, maps, targets, steps, baseline, seed, inserting) -> Curves:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}.")
    images, heat, targets = _inputs(model, images, maps, targets)
    rng = np.random.default_rng(seed)
    per_call = max(1, -(-64 // (steps + 1)))  # images per forward call: about 64 inputs each
    probabilities = []
    for start in range(0, len(images), per_call):
        stacks = [_curve_inputs(model, image, h, steps, baseline, rng, inserting)
                  for image, h in zip(images[start : start + per_call], heat[start : start + per_call], strict=True)]
        logits = forward(model, model.preprocess(np.concatenate(stacks)), FORWARD_BATCH)
        chosen = np.repeat(targets[start : start + per_call], steps + 1)
        probabilities.append(_probability(logits, chosen, model.info.head).reshape(-1, steps + 1))
    return Curves(np.linspace(0.0, 1.0, steps + 1), np.concatenate(probabilities))


def _curve_inputs(model, image, heat, steps, baseline, rng, inserting) -> np.ndarray:
    """(steps + 1) raw 0–255 images at the model's input size with 0, 1/steps, ..., all pixels switched."""
    raw = resize(image, model.info.input_size).astype(np.float32)
    heat = resize(heat, model.info.input_size).ravel()
    plain = _baseline(raw, baseline)
    order = np.lexsort((rng.random(heat.size), -heat))  # most salient first, ties in random order
    rank = np.empty(heat.size, np.int64)
    rank[order] = np.arange(heat.size)
    counts = np.round(np.linspace(0, heat.size, steps + 1)).astype(np.int64)
    switched = (rank.reshape(raw.shape[:2])[None] < counts[:, None, None])[..., None]
    source, target = (plain, raw) if inserting else (raw, plain)
    return np.where(switched, target[None], source[None])


def _baseline(raw: np.ndarray, kind: str) -> np.ndarray:
    if kind == "mean":
        return np.broadcast_to(raw.mean(axis=(0, 1)), raw.shape).astype(np.float32)
    if kind == "blur":
        sigma = BLUR_SIGMA * max(raw.shape[:2])
        return cv2.GaussianBlur(raw, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return np.zeros_like(raw)


def _probability(logits: np.ndarray, targets: np.ndarray, head: str = "softmax") -> np.ndarray:
    """The model's own probability (softmax, or the label's sigmoid for multi-label heads) of each row's target."""
    return head_probabilities(logits, head)[np.arange(len(logits)), targets]


# --------------------------------------------------------------------------------- confidence (Grad-CAM++)


@dataclass
class ConfidenceChange:
    """Target probability on each image and on its explanation map E = image ⊙ map (Chattopadhay et al. 2018).

    Attributes
    ----------
    original, explained : numpy.ndarray
        Probability of the target on the image and on E.
    """

    original: np.ndarray
    explained: np.ndarray

    @property
    def drop(self) -> np.ndarray:
        """max(0, Y − O) / Y per image; the paper's Average Drop % is 100 × the mean (lower is better)."""
        return (np.maximum(0.0, self.original - self.explained) / np.maximum(self.original, 1e-12)).astype(
            np.float32)

    @property
    def increase(self) -> np.ndarray:
        """Whether E is more convincing than the image; 100 × the mean is the Increase in Confidence %."""
        return self.explained > self.original


def confidence_change(model: LoadedModel, images, maps, targets=None) -> ConfidenceChange:
    """Target probability with and without masking each image by its map (shared call shape).

    E multiplies the raw 0–255 pixels by the map (in [0, 1] after scaling by its maximum), so masked-out pixels
    are black, before the model's own preprocessing. An all-ones map scores a perfect drop of 0: read these
    numbers with :func:`coverage`.
    """
    images, heat, targets = _inputs(model, images, maps, targets)
    size = model.info.input_size
    raw = np.stack([resize(image, size).astype(np.float32) for image in images])
    weights = np.stack([_unit(resize(h, size)) for h in heat])[..., None]
    logits = forward(model, model.preprocess(np.concatenate([raw, raw * weights])), FORWARD_BATCH)
    probabilities = _probability(logits, np.concatenate([targets, targets]), model.info.head)
    return ConfidenceChange(probabilities[: len(images)], probabilities[len(images) :])


def average_drop(model: LoadedModel, images, maps, targets=None) -> np.ndarray:
    """Relative drop of the target probability when only the map's pixels are kept, per image (lower is better)."""
    return confidence_change(model, images, maps, targets).drop


def increase_in_confidence(model: LoadedModel, images, maps, targets=None) -> np.ndarray:
    """Whether keeping only the map's pixels raises the target probability, per image (higher share is better)."""
    return confidence_change(model, images, maps, targets).increase


def coverage(model, images, maps, targets=None) -> np.ndarray:
    """Mean of each map scaled to a maximum of 1: how much of the image it lights up (1 = everything).

    The complexity measure to report beside Average Drop: a map covering everything drops nothing.
    """
    images, heat = _images_and_maps(images, maps)
    return np.array([_unit(h).mean() for h in heat], np.float32)


def _unit(heat: np.ndarray) -> np.ndarray:
    heat = np.clip(heat, 0.0, None)
    top = float(heat.max())
    return heat / top if top > 0 else heat


# ------------------------------------------------------------------------------ model-randomization check


@dataclass
class SanityCheck:
    """Rank correlation between a method's maps on the model and on progressively randomised copies.

    Attributes
    ----------
    method : str
        The method checked.
    stages : list of str
        For each stage, the layers randomised so far (cumulative, top-down), described.
    correlations : numpy.ndarray
        Stages × images Spearman rank correlation between the original and the randomised map; NaN for an image
        whose original map is flat (nothing to compare; a flat randomised map counts as 0, changed).
    threshold : float
        The method passes when, once every weight is random, the median correlation is below this.
    """

    method: str
    stages: list[str]
    correlations: np.ndarray
    threshold: float = SANITY_THRESHOLD

    @property
    def median(self) -> np.ndarray:
        """Median correlation per stage over the images with a non-flat original map (NaN if there are none)."""
        usable = ~np.isnan(self.correlations).all(axis=0)
        if not usable.any():
            return np.full(len(self.correlations), np.nan, np.float32)
        return np.nanmedian(self.correlations[:, usable], axis=1)

    @property
    def passed(self) -> bool:
        """True when the fully randomised model gives maps unlike the original ones (Adebayo et al. 2018); False
        when it cannot tell (every original map flat)."""
        return bool(self.median[-1] < self.threshold)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "stages": [{"randomised": name, "median_spearman": None if np.isnan(m) else round(float(m), 4)}
                       for name, m in zip(self.stages, self.median, strict=True)],
            "threshold": self.threshold,
            "passed": self.passed,
        }


def sanity_check(model: LoadedModel, images, maps=None, targets=None, *, method: str | None = None,
                 layer: str | None = None, stages: int = 4, seed: int = 0,
                 threshold: float = SANITY_THRESHOLD) -> SanityCheck:
    """Model-parameter randomization test (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

    The weights of a **copy** of the model are re-initialised top-down, layer group by layer group (cumulative: the
    head first, then the head and the top quarter of the rest, ...), and the maps of ``method`` on each randomised
    copy are compared with the original maps by Spearman rank correlation. A map that explains the model must
    change; one that barely changes shows the input, not the model. The loaded model is never modified. Each
    variable is re-drawn from its layer's own initializer (seeded), as at the start of training; batch-norm
    moving statistics are kept.

    Parameters
    ----------
    model, images, maps, targets :
        The shared call shape; ``maps`` (the method's maps on the unmodified model) are computed when None, and the
        same ``targets`` (top predictions of the unmodified model when None) are explained on every copy.
    method, layer :
        As for :func:`explainer.explain` (``method`` None: the model's default,
        :func:`explainer.engine.default_method`).
    stages : int
        Number of cumulative randomization stages (the first is the output layer alone).
    seed : int
        Seed of the new weights.
    threshold : float
        Pass mark on the median correlation of the fully randomised stage.
    """
    images = [load_image(image) for image in images]
    targets = _targets(model, images, targets)
    method = method or default_method(model)  # the copies below must be explained with the same method
    if maps is None:
        maps = heatmaps(model, images, targets, method, layer)
    _, originals, _ = _inputs(model, images, maps, targets)
    copy = _copy(model)
    groups = _layer_groups(copy.keras_model, stages)
    names, correlations = [], []
    for stage, group in enumerate(groups):
        for offset, layer_obj in enumerate(group):
            _reinitialise(layer_obj, seed + 1000 * stage + offset)
        randomised = heatmaps(copy, images, targets, method, layer)
        correlations.append([spearman(a, b) if np.ptp(a) > 0 else np.nan
                             for a, b in zip(originals, randomised, strict=True)])
        names.append(_describe_group(group, stage, len(groups)))
    return SanityCheck(get_method(method).name, names, np.array(correlations, np.float32), threshold)


def heatmaps(model: LoadedModel, images: list, targets, method: str | None = None, layer: str | None = None,
             batch_size: int = FORWARD_BATCH) -> list[np.ndarray]:
    """The maps of ``method`` (None: the model's default) for each image and target, ``batch_size`` at a time."""
    return [r.heatmap for r in explain_batch(model, images, targets, method, layer, chunk=batch_size)]


def _copy(model: LoadedModel) -> LoadedModel:
    """A clone of the Keras model with the same weights and description, sharing nothing with the original."""
    clone = keras.models.clone_model(model.keras_model)
    clone.set_weights(model.keras_model.get_weights())
    return LoadedModel(clone, model.info)


def _layer_groups(model: keras.Model, stages: int) -> list[list[keras.layers.Layer]]:
    """Weighted layers top-down: the output layer alone, then the rest split into ``stages - 1`` groups."""
    weighted = [p.layer for p in walk(model) if p.layer.weights and not isinstance(p.layer, keras.Model)]
    weighted.reverse()
    if not weighted:
        raise ValueError("The model has no weights to randomise.")
    head, rest = weighted[:1], weighted[1:]
    groups = [head] + [list(g) for g in np.array_split(np.array(rest, dtype=object), max(1, stages - 1)) if len(g)]
    return groups


def _describe_group(group: list, stage: int, n_stages: int) -> str:
    names = [layer.name for layer in group]
    listed = ", ".join(names) if len(names) <= 3 else f"{names[0]} … {names[-1]} ({len(names)} layers)"
    return f"stage {stage + 1}/{n_stages}: {listed}"


# Variable name → initializer attributes to try (DepthwiseConv2D calls its kernel "kernel").
_INITIALIZER_NAMES = {
    "kernel": ("kernel_initializer", "depthwise_initializer"),
    "depthwise_kernel": ("depthwise_initializer",),
    "pointwise_kernel": ("pointwise_initializer",),
}
_KEPT = ("moving_mean", "moving_variance")


def _reinitialise(layer: keras.layers.Layer, seed: int) -> None:
    """Redraw every trainable parameter of ``layer`` from its initializer (seeded); keep batch-norm statistics."""
    for i, variable in enumerate(layer.weights):
        name = variable.name.split("/")[-1]
        if name in _KEPT:
            continue
        attributes = _INITIALIZER_NAMES.get(name, (f"{name}_initializer",))
        initializer = next((getattr(layer, a) for a in attributes if getattr(layer, a, None) is not None), None)
        if initializer is None:
            initializer = keras.initializers.GlorotUniform() if len(variable.shape) >= 2 else keras.initializers.Zeros()
        config = initializer.get_config()
        if "seed" in config:
            initializer = type(initializer).from_config({**config, "seed": seed * 31 + i})
        variable.assign(initializer(variable.shape, dtype=variable.dtype))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped maps (ties get their average rank; a flat map gives 0)."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict]:
    """A reliability diagram's equal-width bins of the stated confidence: ``{"low", "high", "count", "confidence",
    "accuracy"}`` each (``confidence`` and ``accuracy`` None for an empty bin); Guo et al. 2017 use 15 bins."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        chosen = index == b
        count = int(chosen.sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": count,
                     "confidence": float(confidence[chosen].mean()) if count else None,
                     "accuracy": float(correct[chosen].mean()) if count else None})
    return rows


def calibration_error(rows: list[dict]) -> float | None:
    """ECE of :func:`reliability_bins`: Σ_b (n_b / N) · |accuracy_b − confidence_b|; None without any image."""
    total = sum(row["count"] for row in rows)
    if not total:
        return None
    return float(sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in rows if row["count"]) / total)

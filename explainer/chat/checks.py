"""Measurements the chat makes beyond one map: does the map hold up, and does the image look like training data?

* :func:`occlusion_check` hides the highlighted box (filled with the image's mean colour) and, for comparison,
  equally large boxes at random places, and re-classifies: if the map is right about where the evidence is,
  hiding the box must hurt the class more than hiding a random box.
* :func:`deletion_scores` wraps :func:`explainer.evaluation.metrics.deletion_auc` with a random-order baseline, so the
  number comes with something to compare it to.
* :func:`out_of_distribution` compares cheap image statistics with the ``reference`` block of a model's sidecar.
* :func:`image_structure` tells a blank or near-blank image (one colour, no structure), on which any answer of
  the model means little, from a real one.

All of them run the model only through the engine (:func:`explainer.engine.predict`) or the metrics module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from explainer.engine import predict
from explainer.evaluation import metrics
from explainer.evaluation.image_stats import image_statistics
from explainer.models.loading import LoadedModel, resize
from explainer.region import iou_of_boxes
from explainer.result import Explanation, Prediction

#: Random boxes hidden for the comparison.
RANDOM_BOXES = 6
#: A change of the probability smaller than this (either way) counts as no change in the occlusion verdict.
NOISE = 0.05
#: Steps of the deletion curve in the chat (the metrics module's default is finer; 10 keeps a turn near a second
#: on MobileNetV2 while the area changes by well under 0.01).
DELETION_STEPS = 10


@dataclass
class OcclusionCheck:
    """Target probability with the highlighted box hidden, and with random boxes of the same size hidden.

    Attributes
    ----------
    original : float
        Probability of the explained class on the unmodified image.
    hidden : float
        Its probability with the highlighted box hidden.
    random : list of float
        Its probability with each random box hidden.
    hidden_top : Prediction
        The model's top class once the highlighted box is hidden.
    box : tuple of int
        The hidden box (x, y, w, h) in image pixels.
    box_fraction : float
        Share of the image the box covers.
    random_overlap : float
        Mean IoU of the random boxes with the highlighted box (0 = disjoint).
    hidden_image, random_image : numpy.ndarray
        What the model saw (at its input size) with the highlighted box and with the first random box hidden.
    """

    original: float
    hidden: float
    random: list[float]
    hidden_top: Prediction
    box: tuple[int, int, int, int]
    box_fraction: float
    random_overlap: float
    hidden_image: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((1, 1, 3), np.uint8))
    random_image: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((1, 1, 3), np.uint8))
    verdict: str = field(init=False)

    def __post_init__(self) -> None:
        self.verdict = self._verdict()

    @property
    def drop(self) -> float:
        """Probability lost by hiding the highlighted box."""
        return self.original - self.hidden

    @property
    def random_drop(self) -> float:
        """Mean probability lost by hiding a random box."""
        return self.original - float(np.mean(self.random)) if self.random else 0.0

    def _verdict(self) -> str:
        """One word for what the signed numbers say (each template sentence is tied to one of these).

        ``drop`` and ``random_drop`` are signed: positive when hiding lowers the probability, negative when it
        raises it. A change smaller than :data:`NOISE` either way counts as none.
        """
        if self.box_fraction >= 0.6:
            return "too_large"  # a random box this size overlaps the region anyway
        if self.original < 0.05:
            return "low_base"  # nothing much to lose
        if self.drop <= -NOISE:
            return "raises"  # the highlighted part counts against the class
        if self.drop >= 0.15 and self.drop >= 2 * abs(self.random_drop) + NOISE:
            return "holds"  # a clear fall, and a random box moves the probability far less either way
        if abs(self.random_drop) < NOISE and self.drop < NOISE:
            return "not_needed"  # neither box moves the probability by NOISE or more
        if self.drop < NOISE or abs(self.random_drop) >= self.drop - 0.02:
            return "not_specific"  # the highlighted part matters no more than a random one
        return "partial"  # the highlighted part matters more than a random one, but is not all

    def to_dict(self) -> dict:
        return {
            "original": round(self.original, 6), "hidden": round(self.hidden, 6),
            "random": [round(p, 6) for p in self.random], "drop": round(self.drop, 6),
            "random_drop": round(self.random_drop, 6), "hidden_top": self.hidden_top.to_dict(),
            "box": list(self.box), "box_fraction": round(self.box_fraction, 4),
            "random_overlap": round(self.random_overlap, 4), "verdict": self.verdict, "fill": "mean",
        }


def occlusion_check(model: LoadedModel, result: Explanation, seed: int = 0,
                    n_random: int = RANDOM_BOXES) -> OcclusionCheck:
    """Hide ``result``'s region box and ``n_random`` random boxes of the same size; re-classify all at once.

    Boxes are filled with the image's mean colour at the model's input size, as the deletion metric's default
    baseline does: the information goes, and any artefact of the flat patch is the same for the highlighted and the
    random boxes, so their comparison is fair. Random boxes are placed, with a fixed ``seed``, where they overlap
    the region's box least.
    """
    height, width = result.image.shape[:2]
    box = result.region.bbox if result.region.coverage > 0 else (0, 0, 0, 0)
    small = resize(result.image, model.info.input_size)
    scale = (small.shape[1] / width, small.shape[0] / height)
    boxes = [box, *_random_boxes(box, (width, height), n_random, seed)]
    fill = np.broadcast_to(np.rint(small.reshape(-1, 3).mean(axis=0)).astype(np.uint8), small.shape)
    # The unmodified image needs no new run: the explanation's probabilities came from the same input.
    variants = [_hide(small, fill, b, scale) for b in boxes]
    probs = predict(model, variants)
    target = result.target_index
    top = int(np.argmax(probs[0]))
    return OcclusionCheck(
        original=float(result.probability),
        hidden=float(probs[0, target]),
        random=[float(p) for p in probs[1:, target]],
        hidden_top=Prediction(top, model.labels[top], float(probs[0, top])),
        box=tuple(int(v) for v in box),
        box_fraction=box[2] * box[3] / float(width * height),
        random_overlap=float(np.mean([iou_of_boxes(box, b) for b in boxes[1:]])) if n_random else 0.0,
        hidden_image=variants[0],
        random_image=variants[1] if n_random else variants[0],
    )


def _random_boxes(box: tuple[int, int, int, int], size: tuple[int, int], n: int, seed: int) -> list[tuple]:
    """``n`` boxes of ``box``'s size inside the image, chosen among random places by least overlap with ``box``."""
    width, height = size
    _x, _y, w, h = box
    if w == 0 or h == 0 or n == 0:
        return [box] * n
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, max(1, width - w + 1), 20 * n)
    ys = rng.integers(0, max(1, height - h + 1), 20 * n)
    candidates = [(int(x), int(y), w, h) for x, y in zip(xs, ys, strict=True)]
    candidates.sort(key=lambda b: iou_of_boxes(box, b))  # stable: equal overlaps keep their random order
    return candidates[:n]


def _hide(image: np.ndarray, fill: np.ndarray, box: tuple, scale: tuple[float, float]) -> np.ndarray:
    x, y, w, h = box
    sx, sy = scale
    x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
    x1, y1 = int(np.ceil((x + w) * sx)), int(np.ceil((y + h) * sy))
    out = image.copy()
    out[y0:y1, x0:x1] = fill[y0:y1, x0:x1]
    return out


@dataclass
class DeletionScores:
    """Deletion AUC (RISE) of one or more maps of one image, with a random deletion order as the yardstick."""

    aucs: list[float]
    random_auc: float

    def to_dict(self) -> dict:
        return {"deletion_auc": [round(a, 4) for a in self.aucs], "random_order_auc": round(self.random_auc, 4),
                "steps": DELETION_STEPS, "baseline": "mean"}


def deletion_scores(model: LoadedModel, results: list[Explanation], seed: int = 0) -> DeletionScores:
    """Deletion AUC of each result's map (lower is better) and of a random map, in one batched run.

    All ``results`` must be of the same image; each map is scored for its own target class.
    """
    image = results[0].image
    noise = np.random.default_rng(seed).random(results[0].heatmap.shape, dtype=np.float32)
    maps = [r.heatmap for r in results] + [noise]
    targets = [r.target_index for r in results] + [results[0].target_index]
    aucs = metrics.deletion_auc(model, [image] * len(maps), maps, targets, steps=DELETION_STEPS)
    return DeletionScores([float(a) for a in aucs[:-1]], float(aucs[-1]))


@dataclass
class Unusual:
    """How an image compares with a model's training data (from the sidecar's ``reference`` block)."""

    findings: list[dict]  # each: name, value, low, high (the reference's 1st and 99th percentiles)
    max_probability: float | None = None
    probability_p05: float | None = None
    #: The feature-space verdict (``Explanation.ood``: distance, threshold, percentile, unusual), when the model has
    #: a feature reference: the check that counts; the pixel statistics then only say in what way an image differs.
    features: dict | None = None

    @property
    def unusual(self) -> bool:
        if self.features is not None:
            return bool(self.features["unusual"])
        return bool(self.findings)

    @property
    def low_confidence(self) -> bool:
        """The top probability is below what 95 % of held-out training-like images got."""
        return self.probability_p05 is not None and self.max_probability is not None and \
            self.max_probability < self.probability_p05

    def to_dict(self) -> dict:
        return {"unusual": self.unusual, "findings": self.findings, "max_probability": self.max_probability,
                "reference_max_probability_p05": self.probability_p05, "features": self.features}


_STATISTICS = ("brightness", "edge_density")  # templates/_macros.j2 says what each measures


def out_of_distribution(model: LoadedModel, result: Explanation) -> Unusual | None:
    """Compare ``result.image`` with the model's training data; None when the model has no reference at all.

    The verdict is the feature-space check of :attr:`Explanation.ood` when the model has a feature reference
    (Mahalanobis distance of its penultimate features to the nearest class mean). An image statistic outside the
    training data's 1st–99th percentile range is a finding that says in what way it differs (the verdict itself
    when there is no feature reference). The model's own (raw) top probability is compared with the held-out
    images' 5th percentile, which was measured on raw probabilities too.
    """
    reference = model.info.reference
    if not isinstance(reference, dict):
        return None if result.ood is None else Unusual([], features=result.ood)
    small = resize(result.image, model.info.input_size)[None]
    stats = image_statistics(small)
    values = {"brightness": float(stats["channel_mean"].mean()), "edge_density": float(stats["edge_density"][0])}
    findings = []
    for key in _STATISTICS:
        dist = reference.get(key)
        if not isinstance(dist, dict) or "p01" not in dist or "p99" not in dist:
            continue
        low, high = float(dist["p01"]), float(dist["p99"])
        if not low <= values[key] <= high:
            findings.append({"name": key, "value": round(values[key], 2),
                             "low": low, "high": high, "direction": "low" if values[key] < low else "high"})
    probability = reference.get("max_probability")
    p05 = float(probability["p05"]) if isinstance(probability, dict) and "p05" in probability else None
    raw = result.top.raw_probability if result.top.raw_probability is not None else result.top.probability
    return Unusual(findings, float(raw), p05, result.ood)


#: Standard deviation of the grey levels (0–255, at the model's input size) below which an image counts as blank.
#: A flat colour with JPEG noise measures about 1; a single bright pixel on a black 224×224 image 1.1; the faintest
#: real photographs and X-rays measure tens.
BLANK_STD = 2.0
#: ITU-R BT.601 luma weights (as Pillow's "L" mode).
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass
class Structure:
    """How much an image varies: a blank one (all one colour, or nearly) carries no evidence for any class."""

    std: float
    blank: bool

    def to_dict(self) -> dict:
        return {"grey_std": round(self.std, 3), "blank": self.blank}


def image_structure(image: np.ndarray, size: tuple[int, int] | None = None, limit: float = BLANK_STD) -> Structure:
    """Grey-level spread of an RGB ``uint8`` ``image`` (resized to ``size`` = (height, width) first, when given).

    The model only sees the image at its input size, so that is where the structure is measured: a tiny detail in
    a large empty image, averaged away by the resize, does not count.
    """
    if size is not None:
        image = resize(image, size)
    pixels = np.asarray(image, np.float32)
    grey = pixels[..., :3] @ _LUMA if pixels.ndim == 3 else pixels
    std = float(grey.std()) if grey.size else 0.0
    return Structure(std, std < limit)

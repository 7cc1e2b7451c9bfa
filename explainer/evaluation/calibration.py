"""Fitting how sure a model is: temperature scaling, ECE, split conformal sets and the feature reference.

:func:`fit_calibration` takes logits, penultimate features and true classes (from any source) and returns a
:class:`CalibrationFit`: the :class:`~explainer.models.calibration.Calibration` and
:class:`~explainer.models.calibration.FeatureReference` to store in the sidecar, and what they do on a held-out
split. :func:`calibrate_folder` does it for a class-folder set (the audit's layout); ``gradcam-chat calibrate``
and the demo models (``python -m explainer.demo.calibrate``) use it. No map is computed: forward passes only.

Multi-label heads: an image in class folder *k* counts as having label *k* and none of the others; each label gets
its own temperature, and the ECE is that of every (image, label) probability against whether the label is there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from explainer.engine import forward_features
from explainer.errors import ExplainerError
from explainer.evaluation.audit import plan_audit
from explainer.evaluation.metrics import calibration_error, reliability_bins
from explainer.graph import feature_path
from explainer.heads import probabilities
from explainer.inputs.images import load_image_with_notes
from explainer.models.calibration import PERCENTILES, Calibration, FeatureReference
from explainer.models.loading import LoadedModel
from explainer.prose import quote

#: Fewest readable images in all, and in each class folder, that ``calibrate`` accepts: with fewer, the 99th
#: percentile threshold rests on a single image and a 90 % conformal set on a handful.
MIN_IMAGES = 100
MIN_PER_CLASS = 10
ECE_BINS = 15
DEFAULT_COVERAGE = 0.9
DEFAULT_HOLDOUT = 0.3
MAX_COMPONENTS = 256
#: In-distribution percentile of the distance above which an image is unusual.
OOD_PERCENTILE = 99.0
#: Share of the fitting part that sets the OOD threshold: images the class means and covariance never saw.
THRESHOLD_SHARE = 0.25
#: The temperature is searched in [1/20, 100]: a perfectly separated set would otherwise drive it to zero.
_LOG_T_RANGE = (math.log(0.05), math.log(100.0))
_BATCH = 64


class CalibrationError(ExplainerError, ValueError):
    """Calibration cannot run: too few classes or images, or a bad option."""


# ------------------------------------------------------------------------------------------------- measures


def _confidences(probs: np.ndarray, labels: np.ndarray, head: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) pairs the ECE bins: the top class for one-class heads, every label for multi-label."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if head == "multilabel":
        present = np.arange(probs.shape[1])[None] == labels[:, None]
        return probs.ravel(), present.ravel().astype(np.float64)
    return probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)


def reliability(probs: np.ndarray, labels: np.ndarray, head: str = "softmax", bins: int = ECE_BINS) -> list[dict]:
    """The reliability diagram's bins: ``{"low", "high", "count", "confidence", "accuracy"}`` each (equal width).

    ``confidence`` and ``accuracy`` are None for an empty bin. For multi-label heads ``accuracy`` is how often
    the label is present among the (image, label) probabilities of the bin.
    """
    return reliability_bins(*_confidences(probs, labels, head), bins)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, head: str = "softmax",
                               bins: int = ECE_BINS) -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| over ``bins`` equal-width bins (Guo et al. 2017)."""
    return calibration_error(reliability(probs, labels, head, bins)) or 0.0


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose most probable class is the true one."""
    return float((np.asarray(probs).argmax(axis=1) == np.asarray(labels)).mean())


# ------------------------------------------------------------------------------------------------- fitting


def _golden(loss: Callable[[float], float], low: float, high: float, steps: int = 60) -> float:
    """Minimum of a unimodal ``loss`` on [low, high] by golden-section search."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    for _ in range(steps):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        a, b = (a, d) if loss(c) < loss(d) else (c, b)
    return (a + b) / 2


def _softmax_nll(logits: np.ndarray, labels: np.ndarray) -> Callable[[float], float]:
    z = np.asarray(logits, np.float64)

    def nll(log_t: float) -> float:
        scaled = z / math.exp(log_t)
        top = scaled.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
        return float((lse - scaled[np.arange(len(z)), labels]).mean())

    return nll


def _binary_nll(logits: np.ndarray, present: np.ndarray) -> Callable[[float], float]:
    z = np.asarray(logits, np.float64)

    def nll(log_t: float) -> float:
        scaled = z / math.exp(log_t)
        return float((np.logaddexp(0.0, scaled) - present * scaled).mean())  # softplus(s) − y·s

    return nll


def fit_temperature(logits: np.ndarray, labels: np.ndarray, head: str = "softmax") -> tuple[float, ...]:
    """The temperature(s) minimising the negative log-likelihood of the scaled probabilities.

    One T for softmax, sigmoid and linear heads; one per label (its own yes/no likelihood) for multi-label heads.
    The NLL is convex in 1/T, so a golden-section search over log T finds its minimum.
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, int)
    if head != "multilabel":
        return (math.exp(_golden(_softmax_nll(logits, labels), *_LOG_T_RANGE)),)
    present = (np.arange(logits.shape[1])[None] == labels[:, None]).astype(np.float64)
    return tuple(math.exp(_golden(_binary_nll(logits[:, j], present[:, j]), *_LOG_T_RANGE))
                 for j in range(logits.shape[1]))


def conformal_quantile(probs: np.ndarray, labels: np.ndarray, coverage: float = DEFAULT_COVERAGE) -> float:
    """Split conformal q: the ⌈(n+1)(1−α)⌉/n quantile of the scores 1 − p̂(true class) (1 when n is too small)."""
    scores = 1.0 - np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
    level = math.ceil((len(scores) + 1) * coverage) / len(scores)
    return 1.0 if level > 1 else float(np.quantile(scores, level, method="inverted_cdf"))  # the k-th smallest


def set_coverage(probs: np.ndarray, labels: np.ndarray, quantile: float) -> tuple[float, float]:
    """(share of images whose set {classes with 1 − p̂ ≤ q} holds the true class, mean set size)."""
    inside = 1.0 - np.asarray(probs, np.float64) <= quantile + 1e-9
    return float(inside[np.arange(len(labels)), labels].mean()), float(inside.sum(axis=1).mean())


def _shrunk_covariance(x: np.ndarray) -> np.ndarray:
    """Ledoit–Wolf shrinkage of the covariance of centred rows ``x`` towards a scaled identity."""
    n, p = x.shape
    cov = x.T @ x / n
    mu = np.trace(cov) / p
    delta = ((cov - mu * np.eye(p)) ** 2).sum() / p
    x2 = x**2
    beta = min(((x2.T @ x2).sum() / n - (cov**2).sum()) / (n * p), delta)
    shrinkage = 0.0 if delta == 0 else beta / delta
    return (1 - shrinkage) * cov + shrinkage * mu * np.eye(p)


def fit_feature_reference(features: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                          layer: str = "") -> FeatureReference:
    """Class means and a shared shrunk covariance of PCA-reduced features; the threshold on images kept apart.

    Parameters
    ----------
    features : numpy.ndarray
        (N, D) penultimate features of in-distribution images.
    labels : numpy.ndarray
        (N,) their true classes.
    rng : numpy.random.Generator
        Picks the :data:`THRESHOLD_SHARE` of images that set the threshold.
    layer : str
        The Dense layer whose input the features are (recorded).
    """
    order = rng.permutation(len(features))
    cut = round(len(order) * (1 - THRESHOLD_SHARE))
    fit, rest = order[:cut], order[cut:]
    x, y = np.asarray(features, np.float64)[fit], np.asarray(labels)[fit]
    mean = x.mean(axis=0)
    _u, _s, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[: min(MAX_COMPONENTS, x.shape[1], len(x) - 1)]
    z = (x - mean) @ components.T
    classes = np.unique(y)
    centres = np.stack([z[y == c].mean(axis=0) for c in classes])
    within = z - centres[np.searchsorted(classes, y)]
    values, vectors = np.linalg.eigh(_shrunk_covariance(within))
    whiten = vectors.T / np.sqrt(np.maximum(values, 1e-12 * values.max()))[:, None]
    draft = FeatureReference(mean, whiten @ components, centres @ whiten.T, 0.0, np.zeros(len(PERCENTILES)),
                             len(fit), layer)
    held = draft.distance(np.asarray(features)[rest])
    return FeatureReference(draft.mean, draft.projection, draft.class_means,
                            float(np.percentile(held, OOD_PERCENTILE)), np.percentile(held, PERCENTILES),
                            len(fit), layer)


@dataclass
class CalibrationFit:
    """What :func:`fit_calibration` fitted, and what it does on the held-out split.

    Attributes
    ----------
    calibration, reference :
        To store in the sidecar (:meth:`sidecar`).
    before, after : dict
        Held-out ``ece``, ``accuracy``, ``coverage`` and ``set_size`` of the raw and the calibrated probabilities
        (the "before" conformal set uses a quantile fitted on the raw probabilities).
    false_alarms : float
        Share of held-out (in-distribution) images the feature check calls unusual.
    reliability_before, reliability_after : list of dict
        Held-out reliability bins (:func:`reliability`).
    notes : list of str
        What was noticed while reading the images (skipped files...).
    """

    calibration: Calibration
    reference: FeatureReference
    before: dict
    after: dict
    false_alarms: float
    reliability_before: list[dict] = field(default_factory=list)
    reliability_after: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def sidecar(self) -> dict:
        """The two sidecar blocks, ``{"calibration": ..., "feature_reference": ...}``."""
        return {"calibration": self.calibration.to_dict(), "feature_reference": self.reference.to_dict()}


def split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitting, held-out) indices of ``n`` images, shuffled by ``seed``; ``holdout`` is the held-out share."""
    if not 0.0 < holdout < 1.0:
        raise CalibrationError(f"The held-out share must be between 0 and 1 (exclusive), not {holdout}.")
    order = np.random.default_rng(seed).permutation(n)
    cut = n - max(1, round(n * holdout))
    return order[:cut], order[cut:]


def _measure(probs: np.ndarray, labels: np.ndarray, head: str, quantile: float) -> dict:
    covered, size = set_coverage(probs, labels, quantile)
    return {"ece": expected_calibration_error(probs, labels, head), "accuracy": accuracy(probs, labels),
            "coverage": covered, "set_size": size}


def fit_calibration(logits: np.ndarray, features: np.ndarray, labels: np.ndarray, head: str = "softmax", *,
                    coverage: float = DEFAULT_COVERAGE, holdout: float = DEFAULT_HOLDOUT, seed: int = 0,
                    layer: str = "") -> CalibrationFit:
    """Fit temperature(s), the conformal quantile and the feature reference; measure them on a held-out split.

    Parameters
    ----------
    logits : numpy.ndarray
        (N, C) pre-activation scores, as :func:`explainer.engine.forward_features` returns them.
    features : numpy.ndarray
        (N, D) penultimate features of the same images.
    labels : numpy.ndarray
        (N,) true class indices.
    head : str
        The model's head (:attr:`ModelInfo.head <explainer.models.loading.ModelInfo.head>`).
    coverage : float
        Conformal target 1 − α.
    holdout : float
        Share of images kept apart to measure on.
    seed : int
        Seeds the split (and the threshold's share of the fitting part).
    layer : str
        Recorded in the feature reference.
    """
    if not 0.0 < coverage < 1.0:
        raise CalibrationError(f"The coverage must be between 0 and 1 (exclusive), not {coverage}.")
    labels = np.asarray(labels, int)
    fit, held = split(len(labels), holdout, seed)
    temperatures = fit_temperature(logits[fit], labels[fit], head)
    draft = Calibration(temperatures, len(fit), len(held), 0, 0, 0, coverage, 0, 0)
    quantile = conformal_quantile(draft.probabilities(logits[fit], head), labels[fit], coverage)
    raw_held, new_held = probabilities(logits[held], head), draft.probabilities(logits[held], head)
    before = _measure(raw_held, labels[held], head,
                      conformal_quantile(probabilities(logits[fit], head), labels[fit], coverage))
    after = _measure(new_held, labels[held], head, quantile)
    calibration = Calibration(tuple(round(t, 6) for t in temperatures), len(fit), len(held), before["ece"],
                              after["ece"], after["accuracy"], coverage, quantile, after["coverage"])
    reference = fit_feature_reference(features[fit], labels[fit], np.random.default_rng(seed + 1), layer)
    false_alarms = float((reference.distance(features[held]) > reference.threshold).mean())
    return CalibrationFit(calibration, reference, before, after, false_alarms,
                          reliability(raw_held, labels[held], head), reliability(new_held, labels[held], head))


# ------------------------------------------------------------------------------------------------- a folder


def check_counts(labels: np.ndarray, names: list[str]) -> None:
    """Refuse fewer than two classes, or fewer images than :data:`MIN_IMAGES` / :data:`MIN_PER_CLASS`."""
    found = sorted(set(int(v) for v in labels))
    if len(found) < 2:
        raise CalibrationError("Calibration needs images of at least two classes (one sub-folder per class); "
                               f"found {len(found)} class.")
    if len(labels) < MIN_IMAGES:
        raise CalibrationError(f"Calibration needs at least {MIN_IMAGES} readable images; found {len(labels)}.")
    counts = {c: int((labels == c).sum()) for c in found}
    few = [c for c, n in counts.items() if n < MIN_PER_CLASS]
    if few:
        raise CalibrationError(f"Calibration needs at least {MIN_PER_CLASS} images in each class folder; "
                               f"{quote(names[few[0]])} has {counts[few[0]]}.")


def read_images(model: LoadedModel, paths: Iterable[tuple[str, str]], progress: Callable[[int], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """(logits, features, indices of the images read, notes) of ``(shown name, file)`` pairs, in batches.

    An unreadable image is skipped with a note, not fatal. ``progress(k)`` is called as each batch of ``k`` is done.
    """
    paths = list(paths)
    logits, features, kept, notes = [], [], [], []
    for start in range(0, len(paths), _BATCH):
        images = []
        for i, (shown, path) in enumerate(paths[start : start + _BATCH], start):
            try:
                images.append(load_image_with_notes(path).pixels)
                kept.append(i)
            except ExplainerError as err:
                notes.append(f"Skipped {quote(shown)}: {err}")
        if images:
            out = forward_features(model, model.prepare(images))
            logits.append(out[0])
            features.append(out[1])
        if progress is not None:
            progress(len(paths[start : start + _BATCH]))
    if not logits:
        return np.zeros((0, len(model.labels))), np.zeros((0, 0)), kept, notes
    return np.concatenate(logits), np.concatenate(features), kept, notes


def calibrate_folder(model: LoadedModel, folder: Path, *, coverage: float = DEFAULT_COVERAGE,
                     holdout: float = DEFAULT_HOLDOUT, seed: int = 0,
                     progress: Callable[[int], None] | None = None) -> CalibrationFit:
    """:func:`fit_calibration` on a folder of class sub-folders (the audit's layout: folder names = labels).

    Raises
    ------
    CalibrationError, AuditError
        No such folder or no image; fewer than two class folders; fewer readable images than :data:`MIN_IMAGES`
        or a class with fewer than :data:`MIN_PER_CLASS`; class folders the model does not know.
    """
    plan = plan_audit(Path(folder), model.labels)
    items = [item for item in plan.items if item.true_index is not None]
    labels = np.array([item.true_index for item in items], int)
    check_counts(labels, model.labels)  # before any pass: a folder that can never do is refused at once
    logits, features, kept, notes = read_images(model, [(item.image, item.path) for item in items], progress)
    labels = labels[kept]
    check_counts(labels, model.labels)
    result = fit_calibration(logits, features, labels, model.info.head, coverage=coverage, holdout=holdout,
                             seed=seed, layer=feature_path(model.keras_model).name)
    result.notes = [*plan.notes, *notes]
    return result

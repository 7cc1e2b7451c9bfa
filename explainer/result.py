"""What :func:`explainer.explain` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from explainer.heads import DEFAULT_DECISION_THRESHOLD
from explainer.models.calibration import Calibration
from explainer.region import Region


@dataclass(frozen=True)
class Prediction:
    """One class's probability: calibrated when the model is (``raw_probability`` is then the model's own)."""

    index: int
    label: str
    probability: float
    raw_probability: float | None = None

    def to_dict(self) -> dict:
        record = {"index": self.index, "label": self.label, "probability": round(self.probability, 6)}
        if self.raw_probability is not None:
            record["raw_probability"] = round(self.raw_probability, 6)
        return record


@dataclass
class Explanation:
    """One image explained for one target class.

    Attributes
    ----------
    image : numpy.ndarray
        The input as RGB ``uint8`` H×W×3.
    heatmap : numpy.ndarray
        float32 H×W in [0, 1], at the input image's resolution.
    target_index, target_label, probability :
        The explained class and its probability: the model's own (as ``model.predict`` gives it), or the
        temperature-scaled one when the model has a :attr:`calibration` (then see :attr:`raw_probability`).
    predictions : list of Prediction
        The top-k classes, most probable first.
    probabilities, logits : numpy.ndarray
        Scores of every class: the model's own probabilities (softmax, or one sigmoid per label for a multi-label
        head, never renormalised) and the scores before its last activation.
    method, layer : str
        CAM method name and target layer path (``outer/inner`` for nested models).
    region : Region
        The localized region (box, mask, words).
    cam : numpy.ndarray
        The raw map at feature resolution (h×w, before ReLU and normalisation).
    channel_weights : numpy.ndarray or None
        The K channel weights (for methods that have them).
    model_name : str
        Which model answered.
    head : {"softmax", "sigmoid", "multilabel", "linear"}
        How the model's probabilities were read (:mod:`explainer.heads`).
    labels : list of str
        Every class's label, in the model's order.
    decision_threshold : float
        For multi-label heads: probability from which a label counts as present (see :attr:`positive`).
    versus : Prediction or None
        The class the target was contrasted with (the map scores ``logit_target − logit_versus``), with the
        model's probability of it; None for an ordinary map (:mod:`explainer.cams.contrast`).
    against : bool
        True for the counterfactual map: what speaks against the target (negated gradients).
    raw_probabilities : numpy.ndarray or None
        The model's own probabilities when :attr:`probabilities` are calibrated (None otherwise).
    calibration : Calibration or None
        The model's calibration (:mod:`explainer.models.calibration`), when it has one.
    ood : dict or None
        The feature-space out-of-distribution verdict, ``{"distance", "threshold", "percentile", "unusual"}``
        (:meth:`FeatureReference.verdict <explainer.models.calibration.FeatureReference.verdict>`), when the model
        has a feature reference.
    """

    image: np.ndarray
    heatmap: np.ndarray
    target_index: int
    target_label: str
    probability: float
    predictions: list[Prediction]
    probabilities: np.ndarray
    logits: np.ndarray
    method: str
    layer: str
    region: Region
    cam: np.ndarray
    channel_weights: np.ndarray | None
    model_name: str
    head: str = "softmax"
    decision_threshold: float = DEFAULT_DECISION_THRESHOLD
    labels: list[str] = field(default_factory=list)
    versus: Prediction | None = None
    against: bool = False
    raw_probabilities: np.ndarray | None = None
    calibration: Calibration | None = None
    ood: dict | None = None

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    @property
    def raw_probability(self) -> float:
        """The model's own probability of the explained class (the same as :attr:`probability` if uncalibrated)."""
        if self.raw_probabilities is None:
            return self.probability
        return float(self.raw_probabilities[self.target_index])

    def prediction_set(self) -> list[str] | None:
        """The conformal prediction set: labels whose calibrated probability is ≥ 1 − q, most probable first.

        It holds the true class for a share ``calibration.coverage`` of images like the calibration set (split
        conformal prediction). None when the model is not calibrated.
        """
        if self.calibration is None:
            return None
        return [self._label(int(i)) for i in self.calibration.prediction_set(self.probabilities)]

    @property
    def top(self) -> Prediction:
        return self.predictions[0]

    @property
    def is_top(self) -> bool:
        """True when the explained class is the model's top prediction."""
        return self.target_index == self.predictions[0].index

    @property
    def positive(self) -> list[Prediction]:
        """Multi-label heads: every label with probability ≥ :attr:`decision_threshold`, most probable first.

        Empty for every other head (one class per image: see :attr:`predictions`), and when no label is present.
        """
        if self.head != "multilabel":
            return []
        probs = np.asarray(self.probabilities, np.float64)
        order = np.argsort(-probs, kind="stable")
        return [Prediction(int(i), self._label(int(i)), float(probs[i])) for i in order
                if probs[i] >= self.decision_threshold]

    def _label(self, index: int) -> str:
        if index < len(self.labels):
            return self.labels[index]
        known = {p.index: p.label for p in self.predictions} | {self.target_index: self.target_label}
        return known.get(index, f"class {index}")

    @property
    def n_channels(self) -> int:
        return int(self.channel_weights.shape[0]) if self.channel_weights is not None else 0

    def to_dict(self) -> dict:
        """JSON-friendly summary (no arrays). Multi-label heads add ``positive`` (labels) and the threshold."""
        record = {
            "model": self.model_name,
            "head": self.head,
            "method": self.method,
            "layer": self.layer,
            "target": {"index": self.target_index, "label": self.target_label,
                       "probability": round(self.probability, 6)},
            "predictions": [p.to_dict() for p in self.predictions],
            "region": self.region.to_dict(),
            "image_size": [int(self.image.shape[1]), int(self.image.shape[0])],
            "versus": None if self.versus is None else self.versus.to_dict(),
            "against": self.against,
        }
        if self.head == "multilabel":
            record["positive"] = [p.label for p in self.positive]
            record["decision_threshold"] = self.decision_threshold
        record["calibrated"] = self.calibrated
        if self.calibration is not None:
            record["target"]["raw_probability"] = round(self.raw_probability, 6)
            record["calibration"] = self.calibration.summary()
            record["prediction_set"] = self.prediction_set()
        if self.ood is not None:
            record["ood"] = dict(self.ood)
        return record

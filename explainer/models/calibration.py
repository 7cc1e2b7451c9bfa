"""How sure a model's answer is: its calibration (temperature scaling, conformal sets) and its feature reference.

Both are fitted by ``gradcam-chat calibrate`` (:mod:`explainer.evaluation.calibration`) and travel in the model's
sidecar, under ``"calibration"`` and ``"feature_reference"``; the engine applies them to every answer.

* :class:`Calibration`: one temperature T (softmax heads) or one per label (multi-label heads) dividing the
  logits (Guo et al. 2017), so the reported probability matches how often the model is right; and the split
  conformal quantile q: the prediction set is every class with 1 − p̂ ≤ q (Angelopoulos & Bates 2021).
* :class:`FeatureReference`: the penultimate features (the input of the last Dense layer) of in-distribution
  images, reduced by PCA and whitened by a shared, shrunk covariance, so the Mahalanobis distance to the nearest
  class mean (Lee et al. 2018) is a Euclidean distance; an image farther than the threshold (the 99th percentile
  of held-out in-distribution distances) is unusual for the model.

Pure numpy: no fitting here, only applying and (de)serialising.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from explainer.errors import ModelError
from explainer.heads import probabilities

#: Sidecar keys of the two blocks.
CALIBRATION_KEY = "calibration"
FEATURES_KEY = "feature_reference"
#: Percentiles of the held-out distances kept in the sidecar (to say where an image's distance falls).
PERCENTILES = np.arange(0, 101, 2, dtype=np.float64)
_DIGITS = 6  # significant digits of the sidecar's floats: float32 precision, half the characters


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature scaling and conformal quantile, with what they were measured to do.

    Attributes
    ----------
    temperatures : tuple of float
        One T for softmax/sigmoid/linear heads, one per label for multi-label heads; probabilities are those of
        ``logits / T``.
    fitted_on : int
        Labelled images the temperatures and the quantile were fitted on.
    held_out : int
        Images of the held-out split the numbers below were measured on.
    ece_before, ece_after : float
        Expected calibration error (15 equal-width bins) on the held-out split, raw and calibrated.
    accuracy : float
        Held-out accuracy (unchanged by the temperature).
    coverage : float
        The conformal target 1 − α.
    quantile : float
        Conformal quantile q of the scores 1 − p̂(true class).
    measured_coverage : float
        Share of held-out images whose prediction set holds their true class.
    """

    temperatures: tuple[float, ...]
    fitted_on: int
    held_out: int
    ece_before: float
    ece_after: float
    accuracy: float
    coverage: float
    quantile: float
    measured_coverage: float

    def scale(self, logits: np.ndarray) -> np.ndarray:
        """``logits / T`` (per label for several temperatures); the argmax of one T is unchanged."""
        return np.asarray(logits, np.float64) / np.asarray(self.temperatures, np.float64)

    def probabilities(self, logits: np.ndarray, head: str) -> np.ndarray:
        """Calibrated probabilities of ``logits`` (last axis = classes) for ``head``."""
        return probabilities(self.scale(logits), head)

    def prediction_set(self, probs: np.ndarray) -> np.ndarray:
        """Indices of the classes in the conformal set: calibrated probability ≥ 1 − q, most probable first."""
        probs = np.asarray(probs, np.float64)
        order = np.argsort(-probs, kind="stable")
        return order[1.0 - probs[order] <= self.quantile + 1e-9]

    def summary(self) -> dict:
        """What ``Explanation.to_dict()`` says about it: the images it was fitted on and its measured numbers."""
        return {"images": self.fitted_on, "temperature": _round(self.temperatures[0]) if len(self.temperatures) == 1
                else _round(self.temperatures), "ece_before": _round(self.ece_before),
                "ece_after": _round(self.ece_after), "coverage": self.coverage,
                "measured_coverage": _round(self.measured_coverage)}

    def to_dict(self) -> dict:
        """The sidecar's ``"calibration"`` block."""
        return _round(asdict(self) | {"temperatures": list(self.temperatures)})

    @classmethod
    def from_dict(cls, block: dict, n_classes: int) -> Calibration:
        """Read a sidecar block; :class:`ModelError` when it does not fit the model."""
        try:
            calibration = cls(**{**block, "temperatures": tuple(float(t) for t in block["temperatures"])})
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"The sidecar's \"{CALIBRATION_KEY}\" block is malformed ({err}); run "
                             "gradcam-chat calibrate again.") from err
        temps = np.asarray(calibration.temperatures)
        if len(temps) not in (1, n_classes) or not (np.isfinite(temps) & (temps > 0)).all():
            raise ModelError(f"The sidecar's \"{CALIBRATION_KEY}\" needs one positive temperature or one per class "
                             f"({n_classes}), not {list(temps)}.")
        return calibration


@dataclass(frozen=True)
class FeatureReference:
    """In-distribution penultimate features, summarised for a Mahalanobis distance to the nearest class mean.

    Attributes
    ----------
    mean : numpy.ndarray
        (D,) mean feature vector of the fitting images.
    projection : numpy.ndarray
        (k, D), k ≤ 256: PCA to k components, then whitening by the shared regularised covariance.
    class_means : numpy.ndarray
        (C, k) each class's mean in the whitened space.
    threshold : float
        Distances above it are unusual: the 99th percentile of held-out in-distribution distances.
    quantiles : numpy.ndarray
        Held-out distances at :data:`PERCENTILES` (for an image's percentile).
    fitted_on : int
        Images the means and covariance were fitted on (the threshold on others).
    layer : str
        The Dense layer whose input the features are.
    """

    mean: np.ndarray
    projection: np.ndarray
    class_means: np.ndarray
    threshold: float
    quantiles: np.ndarray
    fitted_on: int
    layer: str = ""

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N,) Mahalanobis distance of each row of ``features`` (N×D) to its nearest class mean."""
        z = (np.asarray(features, np.float64) - self.mean) @ self.projection.T
        gaps = z[:, None, :] - self.class_means[None]
        return np.sqrt((gaps**2).sum(axis=-1).min(axis=1))

    def percentile(self, distance: float) -> float:
        """Where ``distance`` falls among held-out in-distribution distances (0–100)."""
        return float(np.interp(distance, self.quantiles, PERCENTILES))

    def verdict(self, features: np.ndarray) -> dict:
        """``{"distance", "threshold", "percentile", "unusual"}`` for one image's features (D,)."""
        distance = float(self.distance(np.asarray(features)[None])[0])
        return {"distance": round(distance, 4), "threshold": round(self.threshold, 4),
                "percentile": round(self.percentile(distance), 1), "unusual": bool(distance > self.threshold)}

    def to_dict(self) -> dict:
        """The sidecar's ``"feature_reference"`` block (lists of floats, 6 significant digits)."""
        return {"method": "mahalanobis", "fitted_on": self.fitted_on, "layer": self.layer,
                "threshold": _round(self.threshold), "percentiles": [int(p) for p in PERCENTILES],
                "quantiles": _round(self.quantiles), "mean": _round(self.mean),
                "projection": _round(self.projection), "class_means": _round(self.class_means)}

    @classmethod
    def from_dict(cls, block: dict) -> FeatureReference:
        """Read a sidecar block; :class:`ModelError` when it is malformed."""
        try:
            mean = np.asarray(block["mean"], np.float64)
            projection = np.asarray(block["projection"], np.float64).reshape(-1, len(mean))
            class_means = np.asarray(block["class_means"], np.float64).reshape(-1, len(projection))
            quantiles = np.asarray(block["quantiles"], np.float64)
            if len(quantiles) != len(PERCENTILES):
                raise ValueError(f"{len(quantiles)} quantiles, expected {len(PERCENTILES)}")
            return cls(mean, projection, class_means, float(block["threshold"]), quantiles,
                       int(block["fitted_on"]), str(block.get("layer", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"The sidecar's \"{FEATURES_KEY}\" block is malformed ({err}); run "
                             "gradcam-chat calibrate again.") from err


def _round(value):
    """Floats (also inside lists, arrays and dicts) to :data:`_DIGITS` significant digits, for a small sidecar."""
    if isinstance(value, dict):
        return {key: _round(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_round(item) for item in np.asarray(value).tolist()] if isinstance(value, np.ndarray) \
            else [_round(item) for item in value]
    if isinstance(value, float):
        return float(f"{value:.{_DIGITS}g}")
    return value

"""What :func:`explainer.explain` returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .region import Region


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float

    def to_dict(self) -> dict:
        return {"index": self.index, "label": self.label, "probability": round(self.probability, 6)}


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
        The explained class and its softmax probability (from the unmodified model).
    predictions : list of Prediction
        The top-k classes, most probable first.
    probabilities, logits : numpy.ndarray
        Scores of every class.
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

    @property
    def top(self) -> Prediction:
        return self.predictions[0]

    @property
    def is_top(self) -> bool:
        """True when the explained class is the model's top prediction."""
        return self.target_index == self.predictions[0].index

    @property
    def n_channels(self) -> int:
        return int(self.channel_weights.shape[0]) if self.channel_weights is not None else 0

    def to_dict(self) -> dict:
        """JSON-friendly summary (no arrays)."""
        return {
            "model": self.model_name,
            "method": self.method,
            "layer": self.layer,
            "target": {"index": self.target_index, "label": self.target_label,
                       "probability": round(self.probability, 6)},
            "predictions": [p.to_dict() for p in self.predictions],
            "region": self.region.to_dict(),
            "image_size": [int(self.image.shape[1]), int(self.image.shape[0])],
        }

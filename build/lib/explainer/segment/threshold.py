"""The heat region itself: the map's largest component above the localization threshold (the Grad-CAM paper)."""

from __future__ import annotations

import numpy as np

from explainer.segment.base import BaseSegmenter, SegmentInput


class ThresholdSegmenter(BaseSegmenter):
    name = "threshold"
    display_name = "threshold"
    aliases = ("thresholded", "heat", "heat region", "threshold mask", "cam threshold")
    summary = "the map's largest region above the localization threshold: where the evidence is, not the outline"

    def get_mask(self, inputs: SegmentInput) -> np.ndarray:
        return inputs.heat_mask

"""Otsu's threshold on the map (CheXlocalize's default binarisation of saliency maps)."""

from __future__ import annotations

import cv2
import numpy as np

from explainer.segment.base import BaseSegmenter, SegmentInput


class OtsuSegmenter(BaseSegmenter):
    name = "otsu"
    display_name = "Otsu"
    aliases = ("otsu threshold", "otsus")
    summary = "the map split at Otsu's threshold (the level that best separates its two populations)"

    def get_mask(self, inputs: SegmentInput) -> np.ndarray:
        levels = np.clip(np.round(inputs.heatmap * 255), 0, 255).astype(np.uint8)
        _, binary = cv2.threshold(levels, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return binary.astype(bool)

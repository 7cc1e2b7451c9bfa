"""Weakly supervised localization: from a heatmap to a region with a box, a mask and words.

The Grad-CAM paper binarises the map at 15 % of its maximum, keeps the largest connected segment and boxes it.
That threshold gives oversized boxes on small objects, so :data:`DEFAULT_THRESHOLD` was chosen by measuring box
IoU on 1,000 held-out images of the bundled shapes data, as Choe et al. (CVPR 2020) ask (the numbers: README,
"Localization threshold").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Fraction of the map's maximum above which a pixel belongs to the region (measured on the demo data).
DEFAULT_THRESHOLD = 0.6

_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "center", "right")


@dataclass
class Region:
    """The region that drove the decision.

    Attributes
    ----------
    bbox : tuple of int
        ``(x, y, w, h)`` in image pixels.
    mask : numpy.ndarray
        Boolean H×W mask of the largest connected component above the threshold.
    coverage : float
        Fraction of the image the mask covers.
    centroid, peak : tuple of int
        ``(x, y)`` of the mask's centre of mass and of the map's maximum.
    location : str
        Where the centroid lies on a 3×3 grid, in words ("upper left", "center", ...).
    energy : float
        Fraction of the map's total heat that lies inside the mask.
    n_regions : int
        How many separate spots exceed the threshold.
    spread : str
        ``focused``, ``moderate``, ``scattered`` or ``diffuse``: how concentrated the evidence is.
    threshold : float
        The threshold used, as a fraction of the maximum.
    """

    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    coverage: float
    centroid: tuple[int, int]
    peak: tuple[int, int]
    location: str
    energy: float
    n_regions: int
    spread: str
    threshold: float

    def to_dict(self) -> dict:
        """JSON-friendly summary (everything but the mask)."""
        return {
            "bbox": list(self.bbox),
            "coverage": round(self.coverage, 4),
            "centroid": list(self.centroid),
            "peak": list(self.peak),
            "location": self.location,
            "energy": round(self.energy, 4),
            "n_regions": self.n_regions,
            "spread": self.spread,
            "threshold": self.threshold,
        }


def localize(heatmap: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Region:
    """Threshold ``heatmap`` at ``threshold`` × its maximum, keep the largest connected region and describe it.

    Parameters
    ----------
    heatmap : numpy.ndarray
        Float H×W map (any scale; an all-zero map gives an empty region).
    threshold : float
        In (0, 1]: fraction of the maximum a pixel must reach.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    heat = np.nan_to_num(np.asarray(heatmap, np.float32))
    height, width = heat.shape
    peak_y, peak_x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    top = float(heat.max())
    if top <= 0.0:
        empty = np.zeros_like(heat, dtype=bool)
        return Region((0, 0, 0, 0), empty, 0.0, (width // 2, height // 2), (int(peak_x), int(peak_y)),
                      "nowhere", 0.0, 0, "empty", threshold)
    binary = (heat >= threshold * top).astype(np.uint8)
    _count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = labels == largest
    x, y, w, h = (int(v) for v in stats[largest, :4])
    cx, cy = (round(v) for v in centroids[largest])
    coverage = float(mask.mean())
    energy = float(heat[mask].sum() / max(heat.sum(), 1e-12))
    n_regions = _count_spots(stats[1:, cv2.CC_STAT_AREA], height * width)
    return Region(
        bbox=(x, y, w, h),
        mask=mask,
        coverage=coverage,
        centroid=(cx, cy),
        peak=(int(peak_x), int(peak_y)),
        location=grid_location(cx, cy, width, height),
        energy=energy,
        n_regions=n_regions,
        spread=describe_spread(coverage, energy, n_regions),
        threshold=threshold,
    )


def _count_spots(areas: np.ndarray, total: int) -> int:
    """Components big enough to matter (≥ 0.5 % of the image); specks from upsampling do not count."""
    return max(1, int((areas >= 0.005 * total).sum()))


def grid_location(x: float, y: float, width: int, height: int) -> str:
    """Name the cell of a 3×3 grid that holds ``(x, y)``: "upper left", "center", "lower right", ..."""
    row = _ROWS[min(2, int(3 * y / max(height, 1)))]
    col = _COLS[min(2, int(3 * x / max(width, 1)))]
    if row == "middle" and col == "center":
        return "center"
    if col == "center":
        return f"{row} middle"
    return f"{row} {col}"


def describe_spread(coverage: float, energy: float, n_regions: int) -> str:
    """One word for how concentrated the evidence is, from the measured coverage, energy and number of spots."""
    if n_regions >= 3:
        return "scattered"
    if coverage > 0.5 or energy < 0.25:
        return "diffuse"
    if coverage <= 0.25 and energy >= 0.4:
        return "focused"
    return "moderate"


def iou_of_boxes(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (the metric on maps: :func:`explainer.metrics.box_iou`)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box ``(x, y, w, h)`` of the True pixels of a boolean mask.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean H×W array with at least one True pixel.

    Raises
    ------
    ValueError
        For an empty mask, which has no box.
    """
    rows = np.flatnonzero(np.asarray(mask, bool).any(axis=1))
    cols = np.flatnonzero(np.asarray(mask, bool).any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no box")
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)

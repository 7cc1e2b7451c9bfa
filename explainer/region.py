"""Weakly supervised localization and segmentation: from a heatmap to a region with a box, a mask and words.

The Grad-CAM paper binarises the map at 15 % of its maximum, keeps the largest connected segment and boxes it.
That threshold gives oversized boxes on small objects, so :data:`DEFAULT_THRESHOLD` was chosen by measuring box
IoU on 1,000 held-out images of the bundled shapes data, as Choe et al. (CVPR 2020) ask (the numbers: README,
"Localization threshold"). That thresholded region is the heat blob, not the object: :attr:`Region.mask` is the
object's segmentation by a method of :mod:`explainer.segment` (CAM-seeded GrabCut by default), computed only when
read, and the box, coverage, centroid, location words and energy describe that mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np

from explainer.errors import ExplainerError
from explainer.segment import DEFAULT_SEGMENT, BaseSegmenter, SegmentInput, get_segmenter, largest_component

#: Fraction of the map's maximum above which a pixel belongs to the heat region (measured on the demo data).
DEFAULT_THRESHOLD = 0.6

_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "center", "right")


class _Heat(NamedTuple):
    """The thresholded map: its largest component, the peak, how many spots, and the map's maximum."""

    mask: np.ndarray
    peak: tuple[int, int]
    n_regions: int
    top: float


class _Facts(NamedTuple):
    bbox: tuple[int, int, int, int]
    coverage: float
    centroid: tuple[int, int]
    energy: float


@dataclass(eq=False)
class Region:
    """The region that drove the decision; everything but the inputs is computed on first read.

    Attributes
    ----------
    heatmap : numpy.ndarray
        Float H×W map at the image's resolution.
    threshold : float
        The localization threshold, as a fraction of the map's maximum.
    image : numpy.ndarray or None
        The RGB image, for segmentation methods that read it (None: only the heat region is known).
    segmenter : BaseSegmenter
        The method behind :attr:`mask` (:mod:`explainer.segment`).
    no_mask_reason : str or None
        Why :attr:`mask` is None: the class is below the probability cutoff (see
        :func:`explainer.segment.no_mask_reason`).

    Derived (cached) attributes: :attr:`mask` (the segmentation, or None), :attr:`heat_mask` (the largest
    component above the threshold), :attr:`shown_mask` (the mask the facts describe: the segmentation, or the heat
    region when there is none), ``bbox`` ``(x, y, w, h)``, ``coverage`` (share of the image), ``centroid`` and
    ``peak`` ``(x, y)``, ``location`` (3×3 grid words), ``energy`` (share of the map's heat inside),
    ``n_regions`` (separate spots above the threshold) and ``spread`` (``focused``, ``moderate``, ``scattered``,
    ``diffuse`` or ``empty``).
    """

    heatmap: np.ndarray = field(repr=False)
    threshold: float = DEFAULT_THRESHOLD
    image: np.ndarray | None = field(default=None, repr=False)
    segmenter: BaseSegmenter = field(default_factory=lambda: get_segmenter("threshold"))
    no_mask_reason: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.segmenter.needs_image and self.image is None:
            raise ExplainerError(f"{self.segmenter.display_name} needs the image, not only the map.")

    @cached_property
    def _heat(self) -> _Heat:
        heat = np.nan_to_num(np.asarray(self.heatmap, np.float32))
        peak_y, peak_x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        top = float(heat.max())
        if top <= 0.0:
            return _Heat(np.zeros(heat.shape, bool), (int(peak_x), int(peak_y)), 0, top)
        largest, areas = largest_component(heat >= self.threshold * top, areas=True)
        return _Heat(largest, (int(peak_x), int(peak_y)), _count_spots(areas, heat.size), top)

    @property
    def heat_mask(self) -> np.ndarray:
        """Boolean H×W: the largest connected component of the map above the threshold (the heat blob)."""
        return self._heat.mask

    @property
    def peak(self) -> tuple[int, int]:
        return self._heat.peak

    @property
    def n_regions(self) -> int:
        return self._heat.n_regions

    @property
    def segment(self) -> str:
        """Key of the segmentation method (``grabcut``, ``otsu``, ``threshold``, ...)."""
        return self.segmenter.name

    @cached_property
    def mask(self) -> np.ndarray | None:
        """Boolean H×W segmentation of the object by :attr:`segmenter`; None below the cutoff (see
        :attr:`no_mask_reason`)."""
        if self.no_mask_reason is not None:
            return None
        heat = self._heat
        if heat.top <= 0.0 or self.segment == "threshold":
            return heat.mask
        scaled = np.clip(np.nan_to_num(np.asarray(self.heatmap, np.float32)) / heat.top, 0.0, 1.0)
        return self.segmenter(SegmentInput(self.image, scaled, heat.mask, self.threshold))

    @property
    def shown_mask(self) -> np.ndarray:
        """The mask the box, coverage and words describe: :attr:`mask`, or :attr:`heat_mask` when it is None."""
        mask = self.mask
        return self.heat_mask if mask is None else mask

    @cached_property
    def _facts(self) -> _Facts:
        mask = self.shown_mask
        height, width = mask.shape
        if not mask.any():
            return _Facts((0, 0, 0, 0), 0.0, (width // 2, height // 2), 0.0)
        ys, xs = np.nonzero(mask)
        heat = np.nan_to_num(np.asarray(self.heatmap, np.float32))
        energy = float(heat[mask].sum() / max(float(heat.sum()), 1e-12))
        return _Facts(mask_to_box(mask), float(mask.mean()), (round(xs.mean()), round(ys.mean())), energy)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self._facts.bbox

    @property
    def coverage(self) -> float:
        return self._facts.coverage

    @property
    def centroid(self) -> tuple[int, int]:
        return self._facts.centroid

    @property
    def energy(self) -> float:
        return self._facts.energy

    @property
    def pixels(self) -> int:
        """Pixels of :attr:`shown_mask`."""
        return int(np.count_nonzero(self.shown_mask))

    @property
    def location(self) -> str:
        if self.coverage <= 0:
            return "nowhere"
        height, width = self.shown_mask.shape
        return grid_location(*self.centroid, width, height)

    @property
    def spread(self) -> str:
        if self.coverage <= 0:
            return "empty"
        return describe_spread(self.coverage, self.energy, self.n_regions)

    def to_dict(self) -> dict:
        """JSON-friendly summary (everything but the masks)."""
        return {
            "bbox": list(self.bbox),
            "coverage": round(self.coverage, 4),
            "pixels": self.pixels,
            "heat_coverage": round(float(self.heat_mask.mean()), 4),
            "centroid": list(self.centroid),
            "peak": list(self.peak),
            "location": self.location,
            "energy": round(self.energy, 4),
            "n_regions": self.n_regions,
            "spread": self.spread,
            "threshold": self.threshold,
            "segment": self.segment if self.no_mask_reason is None else None,
            "no_mask_reason": self.no_mask_reason,
        }


def localize(heatmap: np.ndarray, threshold: float = DEFAULT_THRESHOLD, image: np.ndarray | None = None,
             segment: str | BaseSegmenter | None = None, no_mask_reason: str | None = None) -> Region:
    """The region of ``heatmap``: its heat region at ``threshold`` × the maximum, segmented when read.

    Parameters
    ----------
    heatmap : numpy.ndarray
        Float H×W map (any scale; an all-zero map gives an empty region).
    threshold : float
        In (0, 1]: fraction of the maximum a pixel must reach to be in the heat region.
    image : numpy.ndarray, optional
        The RGB image at the map's size; without it only map-based methods can segment.
    segment : str or BaseSegmenter, optional
        Segmentation method (:data:`explainer.segment.SEGMENTERS`); by default
        :data:`~explainer.segment.DEFAULT_SEGMENT` with an image and ``threshold`` without one.
    no_mask_reason : str, optional
        When given, :attr:`Region.mask` is None and the facts describe the heat region.

    Raises
    ------
    ValueError
        For a threshold outside (0, 1].
    ExplainerError
        For an unknown method, or one that needs the image when none is given.
    """
    if segment is None:
        segment = DEFAULT_SEGMENT if image is not None else "threshold"
    return Region(heatmap, threshold, image, get_segmenter(segment), no_mask_reason)


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
    """Intersection over union of two ``(x, y, w, h)`` boxes (the metric on maps:
    :func:`explainer.evaluation.metrics.box_iou`)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def iou_of_masks(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of one size (0 when both are empty): the one pairwise mask IoU
    (the metric on maps: :func:`explainer.evaluation.metrics.mask_iou`)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 0.0


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


def mask_to_rle(mask: np.ndarray | None) -> dict | None:
    """A boolean mask as COCO's uncompressed run-length encoding: ``{"size": [h, w], "counts": [...]}``.

    Runs are counted down the columns (column-major, as COCO does), starting with a run of zeros (0 when the
    first pixel is set); ``pycocotools.mask.frPyObjects`` reads it, and so does :func:`rle_to_mask`.
    """
    if mask is None:
        return None
    mask = np.asarray(mask, bool)
    flat = mask.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: dict) -> np.ndarray:
    """The boolean mask of a :func:`mask_to_rle` encoding."""
    height, width = rle["size"]
    values = np.arange(len(rle["counts"])) % 2 == 1
    flat = np.repeat(values, rle["counts"])
    return flat.reshape((width, height)).T.copy()

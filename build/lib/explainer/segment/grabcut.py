"""CAM-seeded GrabCut: the map says where the object is, the image's colours say where it ends.

:class:`GrabCutSegmenter` seeds as in weakly supervised segmentation: sure foreground where the map is at least
:data:`SURE_FOREGROUND` of its maximum, probable foreground in the thresholded heat region, sure background below
:data:`SURE_BACKGROUND`, probable background elsewhere. :class:`SoftGrabCutSegmenter` gives only probable labels
(the heat region probable foreground, the rest probable background): a CNN's map often lights up one part of a large
object, or spills past a small one, and sure labels from it then pin the wrong pixels (README, "Segmentation").
Both run ``cv2.grabCut`` initialised from the seed mask, :data:`ITERATIONS` rounds (the soft one 2: more changed
no mask IoU on the demo images, at 1.6 × the time). Images larger than
:data:`WORK_SIDE` are cut at that size and the mask is scaled back (the cut's cost grows with the pixel count).
"""

from __future__ import annotations

import cv2
import numpy as np

from explainer.segment.base import BaseSegmenter, SegmentInput

SURE_FOREGROUND = 0.9
SURE_BACKGROUND = 0.1
ITERATIONS = 5
#: Longer side, in pixels, at which the cut runs: smaller is faster but moves the outline by a pixel or two on
#: rescaling (mask IoU on the demo images: 0.94 at 96 px, 1.00 at 128 px on plain renders; bench_segment.py).
WORK_SIDE = 128
#: Sure background kept around the window the cut runs in, as a fraction of the image's longer side.
MARGIN = 0.1


class GrabCutSegmenter(BaseSegmenter):
    name = "grabcut"
    display_name = "GrabCut"
    aliases = ("grab cut", "cam grabcut", "refined", "refine")
    needs_image = True
    #: Rounds of ``cv2.grabCut``.
    iterations: int = ITERATIONS
    summary = "GrabCut seeded by the map: the object's outline from its colours, where the map points"

    def seeds(self, heat: np.ndarray, region: np.ndarray) -> np.ndarray:
        """The GrabCut label of each pixel from the map (peak 1) and the thresholded region."""
        return seed_mask(heat, region)

    def get_mask(self, inputs: SegmentInput) -> np.ndarray:
        if inputs.image is None:
            raise ValueError("GrabCut needs the image, not only the map")
        seeds = self.seeds(inputs.heatmap, inputs.heat_mask)
        if not _cuttable(seeds):
            return inputs.heat_mask
        y0, y1, x0, x1 = _window(seeds)
        crop = seeds[y0:y1, x0:x1]
        height, width = crop.shape
        scale = min(1.0, WORK_SIDE / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = as_bgr(inputs.image)[y0:y1, x0:x1]
        if scale < 1.0:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            crop = self.seeds(cv2.resize(inputs.heatmap[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA),
                             cv2.resize(inputs.heat_mask[y0:y1, x0:x1].astype(np.uint8), size,
                                        interpolation=cv2.INTER_NEAREST).astype(bool))
        cut = _grabcut(np.ascontiguousarray(image), crop, self.iterations)
        if cut is None:
            return inputs.heat_mask
        if scale < 1.0:  # back to the crop's size; linear then 0.5 keeps the outline smooth, not blocky
            cut = cv2.resize(cut.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
        mask = np.zeros(seeds.shape, bool)
        mask[y0:y1, x0:x1] = cut
        return mask


class SoftGrabCutSegmenter(GrabCutSegmenter):
    name = "softgrabcut"
    display_name = "soft GrabCut"
    aliases = ("soft grab cut", "grabcut soft", "soft cut", "softcut")
    iterations = 2
    summary = "GrabCut from probable seeds only: the map's region as a first guess the image's colours may move"

    def seeds(self, heat: np.ndarray, region: np.ndarray) -> np.ndarray:
        seeds = np.full(heat.shape, cv2.GC_PR_BGD, np.uint8)
        seeds[region] = cv2.GC_PR_FGD
        return seeds


def _grabcut(image: np.ndarray, seeds: np.ndarray, iterations: int) -> np.ndarray | None:
    """Foreground of ``cv2.grabCut`` from ``seeds``; None when it cannot fit its colour models."""
    if not _cuttable(seeds):
        return None
    seeds = seeds.copy()
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means starts from OpenCV's (thread-local) RNG: the same image, the same mask
    try:
        cv2.grabCut(image, seeds, None, background, foreground, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a degenerate colour model (e.g. a flat image): the map's region is the best guess
        return None
    return (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)


def _window(seeds: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns ``(y0, y1, x0, x1)`` around every pixel that is not sure background, with a margin of
    :data:`MARGIN` × the image's side: far background adds cut time but nothing to the outline."""
    height, width = seeds.shape
    rows = np.flatnonzero((seeds != cv2.GC_BGD).any(axis=1))
    cols = np.flatnonzero((seeds != cv2.GC_BGD).any(axis=0))
    pad = max(2, round(MARGIN * max(height, width)))
    return (max(0, rows[0] - pad), min(height, rows[-1] + 1 + pad),
            max(0, cols[0] - pad), min(width, cols[-1] + 1 + pad))


def seed_mask(heat: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The GrabCut label of each pixel from the map (peak 1) and the thresholded region."""
    seeds = np.full(heat.shape, cv2.GC_PR_BGD, np.uint8)
    seeds[region] = cv2.GC_PR_FGD
    seeds[heat >= SURE_FOREGROUND] = cv2.GC_FGD
    seeds[heat < SURE_BACKGROUND] = cv2.GC_BGD
    return seeds


def _cuttable(seeds: np.ndarray) -> bool:
    """GrabCut needs pixels on both sides to fit its two colour models."""
    foreground = np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD))
    return bool(foreground.any() and not foreground.all())


def as_bgr(image: np.ndarray) -> np.ndarray:
    """``uint8`` H×W×3 BGR from RGB, RGBA, or grey (H×W or H×W×1, replicated to three channels)."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        raise ValueError("GrabCut needs a uint8 image (load it with explainer.inputs.images.load_image)")
    if pixels.ndim == 2 or pixels.shape[-1] == 1:
        return np.ascontiguousarray(np.repeat(pixels.reshape(*pixels.shape[:2], 1), 3, axis=-1))
    return np.ascontiguousarray(pixels[..., 2::-1])


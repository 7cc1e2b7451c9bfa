"""Does the map look where it should? Compare an explanation with the region a person knows holds the evidence.

The region comes as a box (``x, y, w, h`` or two corners), as a mask (any size with the image's proportions, resized
nearest), or as place words from the same 3×3 grid :mod:`explainer.region` describes maps with ("lower left",
"center", "upper middle"...). :func:`compare_region` turns any of them into three numbers:

* **energy inside** — share of the map's total heat inside the region (the energy-based pointing game of the
  Score-CAM paper, Wang et al. 2020); a map spread evenly scores the region's share of the image (``coverage``);
* **hit** — whether the map's peak falls in the region, within the pointing-game tolerance of
  :mod:`explainer.evaluation.metrics` (TorchRay's 15 px per 224 px of the image's larger side);
* **IoU** — intersection over union of the localized region (``result.region.mask``) with the expected one.

>>> comparison = compare_region(result, box=(40, 60, 80, 80))
>>> comparison = compare_region(result, box=region_from_words("lower left", result.image.shape[:2]))
>>> comparison = compare_region(result, mask=read_mask("lesion.png", result.image.shape[:2]))
>>> comparison = compare_region(result, box=region_from_text("the lesion is at 40, 60, 80, 80", (h, w)))
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from explainer.errors import ExplainerError
from explainer.evaluation import metrics
from explainer.inputs import dicom
from explainer.inputs.images import (
    _open as open_image_file,  # Pillow with the project's size limits and plain error messages
)
from explainer.inputs.images import alpha_mask, load_image
from explainer.region import iou_of_masks
from explainer.result import Explanation

#: Energy inside below which a correct prediction counts as "right for the wrong reason" (audit default).
WRONG_REASON_THRESHOLD = 0.3
#: Energy inside from which "most of the evidence is inside the region".
MOSTLY_INSIDE = 0.5
#: Largest relative difference of aspect ratio between a mask and its image (a few pixels of cropping or rounding).
ASPECT_TOLERANCE = 0.02
#: How a box of four numbers is read: ``x, y, w, h`` or the corners ``x1, y1, x2, y2`` (x2, y2 exclusive).
BOX_FORMATS = ("xywh", "corners")
#: Colour of the expected region's outline on pictures (magenta: a colour the turbo colormap never uses).
EXPECTED_COLOR = (255, 0, 255)

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")  # a number on its own, not the 1 of "x1"
_ROW_WORDS = {"upper": 0, "top": 0, "middle": 1, "center": 1, "centre": 1, "central": 1, "lower": 2, "bottom": 2}
_COL_WORDS = {"left": 0, "middle": 1, "center": 1, "centre": 1, "central": 1, "right": 2}


class RegionError(ExplainerError, ValueError):
    """The expected region cannot be used: outside the image, empty, of other proportions, unreadable."""


# --------------------------------------------------------------------------------------------------- boxes


def parse_box(text: str | Sequence[float], box_format: str = "xywh") -> tuple[int, int, int, int]:
    """Four numbers as a box ``(x, y, w, h)`` in pixels.

    Parameters
    ----------
    text : str or sequence of 4 numbers
        ``"40,60,80,80"``, ``"40 60 80 80"``, ``"(40, 60, 80, 80)"`` or ``[40, 60, 80, 80]``; fractions are rounded.
    box_format : {"xywh", "corners"}
        ``xywh``: left, top, width, height. ``corners``: ``x1, y1, x2, y2``, two opposite corners in any order, the
        second exclusive (``0,0,10,10`` is 10 × 10 pixels).

    Raises
    ------
    RegionError
        Not four numbers, an unknown format, or a box with no area (zero or negative width or height).
    """
    if box_format not in BOX_FORMATS:
        raise RegionError(f"Unknown box format {box_format!r}; choose one of {', '.join(BOX_FORMATS)}.")
    values = _four_numbers(text)
    if box_format == "corners":
        x1, y1, x2, y2 = values
        values = [min(x1, x2), min(y1, y2), abs(x2 - x1), abs(y2 - y1)]
    x, y, w, h = (round(v) for v in values)
    if w <= 0 or h <= 0:
        raise RegionError(f"The box {x}, {y}, {w}, {h} has no area: its width and height must be at least 1 pixel.")
    return x, y, w, h


def _four_numbers(text: str | Sequence[float]) -> list[float]:
    if isinstance(text, str):
        found = _NUMBER.findall(text)
        values = [float(v) for v in found]
    else:
        try:
            values = [float(v) for v in text]
        except (TypeError, ValueError):
            values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise RegionError(f"A box is four numbers (x, y, width, height, or x1, y1, x2, y2); got {text!r}.")
    return values


def clip_box(box: Sequence[int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` cut to the image of ``size`` = (height, width); a box partly outside keeps its inside part.

    Raises
    ------
    RegionError
        When the box has no area or lies entirely outside the image.
    """
    x, y, w, h = parse_box(box)
    height, width = size
    x1, y1, x2, y2 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x2 <= x1 or y2 <= y1:
        raise RegionError(f"The box {x}, {y}, {w}, {h} (x, y, width, height) lies outside the image, which is "
                          f"{width} × {height} pixels.")
    return x1, y1, x2 - x1, y2 - y1


def box_mask(boxes: Sequence[int] | Sequence[Sequence[int]], size: tuple[int, int]) -> np.ndarray:
    """Boolean mask of ``size`` = (height, width) that is True inside one box ``(x, y, w, h)`` or a list of boxes.

    Several boxes give their union (one image with several findings). Each box is clipped to the image
    (:func:`clip_box`).
    """
    boxes = [boxes] if len(boxes) and np.ndim(boxes[0]) == 0 else list(boxes)
    if not boxes:
        raise RegionError("No box was given.")
    mask = np.zeros(size, bool)
    for box in boxes:
        x, y, w, h = clip_box(box, size)
        mask[y : y + h, x : x + w] = True
    return mask


# --------------------------------------------------------------------------------------------------- words


def region_from_words(words: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box of the 3×3 grid cells that place words name, in an image of ``size`` = (height, width).

    The grid is :func:`explainer.region.grid_location`'s: rows ``upper``/``middle``/``lower`` (also ``top`` and
    ``bottom``), columns ``left``/``center``/``right`` (``centre`` and ``middle`` too). A row and a column name one
    cell ("lower left", "upper middle", "middle right"); ``center`` alone the central cell; a row or a column alone
    its whole third ("the top", "on the left"). The words may sit in a sentence ("it should be in the lower left").

    Returns
    -------
    tuple of int
        ``(x, y, w, h)`` covering exactly the pixels ``grid_location`` puts in the named cells.

    Raises
    ------
    RegionError
        When the text names no place on the grid, or names two rows or two columns.
    """
    rows, cols = _grid_cells(words)
    height, width = size
    x1, x2 = _grid_span(cols, width)
    y1, y2 = _grid_span(rows, height)
    return x1, y1, x2 - x1, y2 - y1


def _grid_cells(words: str) -> tuple[range, range]:
    tokens = re.findall(r"[a-z]+", str(words).lower())
    rows = {_ROW_WORDS[t] for t in tokens if t in _ROW_WORDS and t not in ("middle", "center", "centre", "central")}
    cols = {_COL_WORDS[t] for t in tokens if t in _COL_WORDS and t not in ("middle", "center", "centre", "central")}
    central = any(t in ("middle", "center", "centre", "central") for t in tokens)
    if not rows and not cols and not central:
        raise RegionError(f"{words!r} names no place on the 3 × 3 grid: say e.g. \"lower left\", \"center\", "
                          "\"upper middle\" or \"right\".")
    if len(rows) > 1 or len(cols) > 1:
        raise RegionError(f"{words!r} names two rows or two columns of the 3 × 3 grid: name one place, e.g. "
                          "\"lower left\".")
    if central:  # "center" alone, or the middle of a named row ("upper middle") or column ("middle left")
        rows, cols = rows or {1}, cols or {1}
    row_span = range(min(rows), max(rows) + 1) if rows else range(3)
    col_span = range(min(cols), max(cols) + 1) if cols else range(3)
    return row_span, col_span


def _grid_span(cells: range, length: int) -> tuple[int, int]:
    """Pixels [start, stop) whose grid index ``min(2, int(3 * p / length))`` lies in ``cells``."""
    start = math.ceil(cells.start * length / 3)
    stop = length if cells.stop >= 3 else math.ceil(cells.stop * length / 3)
    return start, stop


def region_from_text(text: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box a person typed: four numbers, or place words of the 3×3 grid (what the chat hands over as is).

    Four numbers are ``x, y, w, h`` ("the lesion is at 40, 60, 80, 80"), or corners ``x1, y1, x2, y2`` when the text
    says so ("x1,y1,x2,y2", "corners", "from 10,10 to 50,60"); without numbers, :func:`region_from_words`.

    Raises
    ------
    RegionError
        When the text holds neither four numbers nor a place on the grid, or names a box with no area.
    """
    numbers = _NUMBER.findall(str(text))
    if len(numbers) == 4:
        corners = re.search(r"\bx1\b|\bx2\b|corner|\bto\b", str(text).lower())
        return parse_box(" ".join(numbers), "corners" if corners else "xywh")
    if numbers:
        raise RegionError(f"A box is four numbers (x, y, width, height, or x1, y1, x2, y2); got {text!r}.")
    return region_from_words(text, size)


# --------------------------------------------------------------------------------------------------- masks


def read_mask(source: str | os.PathLike | Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask image or array as a boolean mask of ``size`` = (height, width).

    The region is the painted part: where the mask has transparency (a brush layer, as an RGBA array or saved as
    PNG), every pixel not fully transparent (:func:`explainer.inputs.images.alpha_mask`; a layer transparent
    everywhere is nothing painted, whatever its colours); otherwise every pixel brighter than half the mask's
    maximum (white on black, 1 on 0, any colour on black). A mask of another size is resized with nearest-neighbour
    sampling.

    Raises
    ------
    RegionError
        When the mask is empty, or its proportions differ from the image's by more than :data:`ASPECT_TOLERANCE`.
    ImageError
        When the file cannot be read.
    """
    mask = _painted(_mask_pixels(source))
    height, width = size
    if mask.shape != (height, width):
        mask_h, mask_w = mask.shape
        if abs((mask_w / mask_h) / (width / height) - 1) > ASPECT_TOLERANCE:
            raise RegionError(f"The mask is {mask_w} × {mask_h} pixels but the image is {width} × {height}: their "
                              "proportions differ, so the mask cannot be laid on the image. Give a mask drawn on "
                              "this image (any size with the same proportions).")
        mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    if not mask.any():
        raise RegionError("The mask is empty: paint the expected region in white (or any bright colour) on black, "
                          "or on a transparent layer.")
    return mask


def _mask_pixels(source) -> np.ndarray:
    """The mask's values as an array, keeping an alpha channel (``load_image`` would flatten it onto white)."""
    if isinstance(source, (str, os.PathLike)):
        if dicom.is_dicom(source):
            return load_image(source)
        source = open_image_file(Path(source))
    if isinstance(source, Image.Image):
        if source.mode in ("RGBA", "LA", "PA") or (source.mode == "P" and "transparency" in source.info):
            return np.asarray(source.convert("RGBA"))
        if source.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
            return np.asarray(source)
        return np.asarray(source.convert("RGB"))
    array = np.asarray(source)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or array.size == 0:
        raise RegionError(f"A mask must be H×W, H×W×3 or H×W×4; got shape {array.shape}.")
    return array


def _painted(array: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(np.asarray(array, np.float64))
    if values.ndim == 3 and values.shape[-1] == 4:
        alpha = values[..., 3]
        if alpha.min() < alpha.max() or alpha.max() <= 0:  # a brush layer: its strokes, not its colours
            return alpha_mask(alpha)
        values = values[..., :3]
    if values.ndim == 3:
        values = values.max(axis=-1)
    top = float(values.max())
    return values > top / 2 if top > 0 else np.zeros(values.shape, bool)


def expected_mask(size: tuple[int, int], box: Sequence | None = None, mask=None) -> np.ndarray:
    """The expected region at ``size`` = (height, width) from exactly one of ``box`` (or boxes) or ``mask``."""
    if (box is None) == (mask is None):
        raise RegionError("Give the expected region either as a box or as a mask (exactly one).")
    return box_mask(box, size) if box is not None else read_mask(mask, size)


# ------------------------------------------------------------------------------------------------ comparing


def energy_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total heat inside ``mask``: ``sum(heat * mask) / sum(heat)`` (0 for an all-zero map).

    Negative values (there are none in the engine's maps) count as no heat.
    """
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, np.float64)), 0.0, None)
    total = float(heat.sum())
    return float(heat[np.asarray(mask, bool)].sum() / total) if total > 0 else 0.0


def compare_region(
    result: Explanation,
    box: tuple[int, int, int, int] | None = None,
    mask: np.ndarray | None = None,
    tolerance: int | None = None,
) -> dict:
    """Compare where ``result``'s map looks with the region the user expects the evidence in.

    Parameters
    ----------
    result : Explanation
        From :func:`explainer.explain`.
    box : tuple of int, or list of them, optional
        ``(x, y, w, h)`` in the pixels of ``result.image`` (several boxes: their union). A box partly outside the
        image is cut to it. For two corners or place words use :func:`parse_box` or :func:`region_from_words`.
    mask : numpy.ndarray, PIL image or path, optional
        The region painted on the image (see :func:`read_mask`); resized (nearest) when its size differs.
    tolerance : int, optional
        Pixels by which the peak may miss the region and still hit; by default TorchRay's, as everywhere in the
        project (:data:`explainer.evaluation.metrics.POINTING_TOLERANCE` × the image's larger side).

    Returns
    -------
    dict
        ``energy_inside`` (float, share of the heat inside), ``hit`` (bool), ``iou`` (float, localized region vs
        expected), ``region_pixels`` (int), ``coverage`` (float, the region's share of the image: the energy a
        flat map would score), ``tolerance`` (float, pixels) and ``verdict`` (``inside``, ``partly`` or
        ``elsewhere``: :func:`verdict`).

    Raises
    ------
    RegionError
        Neither or both of ``box`` and ``mask``; a box outside the image or without area; an empty mask or one of
        other proportions.
    """
    expected = expected_mask(result.image.shape[:2], box, mask)
    if tolerance is None:
        tolerance = float(metrics.scaled_tolerance([expected])[0])
    image, heat = [result.image], [result.heatmap]
    hit = bool(metrics.pointing_game(None, image, heat, masks=[expected], tolerance=tolerance)[0])
    iou = iou_of_masks(result.region.shown_mask, expected)  # the segmentation (or heat region) shown
    energy = energy_inside(result.heatmap, expected)
    return {
        "energy_inside": round(energy, 6),
        "hit": hit,
        "iou": round(iou, 6),
        "region_pixels": int(expected.sum()),
        "coverage": round(float(expected.mean()), 6),
        "tolerance": round(float(tolerance), 3),
        "verdict": verdict(energy, hit),
    }


def verdict(energy: float, hit: bool, threshold: float = WRONG_REASON_THRESHOLD) -> str:
    """One word for a comparison.

    ``inside``: at least :data:`MOSTLY_INSIDE` of the heat lies in the region. ``elsewhere``: less than
    ``threshold`` and the peak outside too: the model's evidence is somewhere else. ``partly``: in between, or little
    heat inside but the peak in the region (a small region under a coarse map: the heat spills over its edges).
    """
    if energy >= MOSTLY_INSIDE:
        return "inside"
    return "elsewhere" if energy < threshold and not hit else "partly"


def draw_expected(picture: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = EXPECTED_COLOR) -> np.ndarray:
    """A copy of ``picture`` (RGB, the image's size) with the expected region's outline drawn in ``color``."""
    out = np.ascontiguousarray(picture.copy())
    contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(out.shape[:2]) / 128))
    cv2.drawContours(out, contours, -1, color, thickness, cv2.LINE_8)
    return out

"""Pictures of an explanation: heatmap overlays, boxes and contours, crops, side-by-side tiles, a bar chart.

Everything returns RGB ``uint8`` arrays. Text is drawn with Pillow in DejaVu Sans, shipped in ``explainer/fonts``
(with its licence): OpenCV's Hershey fonts cover ASCII only and would draw "·", "×" or "é" as "?".
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from explainer.region import Region
from explainer.result import Prediction

#: Perceptually ordered colormaps first; ``jet`` is offered because many papers use it.
COLORMAPS = {
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "jet": cv2.COLORMAP_JET,
}
DEFAULT_COLORMAP = "turbo"
BOX_COLOR = (0, 255, 0)
CONTOUR_COLOR = (255, 255, 255)
TEXT_COLOR = (20, 20, 20)
#: The one font of every picture's text (its glyphs cover Latin, Greek, Cyrillic, math signs and arrows).
FONT_FILE = Path(__file__).resolve().parent / "fonts" / "DejaVuSans.ttf"


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` pixels."""
    return ImageFont.truetype(str(FONT_FILE), size)


def fit_text(text: str, size: int, width: float) -> str:
    """``text`` cut with "…" until it is at most ``width`` pixels long at ``size``."""
    face = font(size)
    if face.getlength(text) <= width:
        return text
    while len(text) > 1 and face.getlength(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def draw_text(canvas: np.ndarray, text: str, xy: tuple[int, int], size: int,
              color: tuple[int, int, int] = TEXT_COLOR) -> np.ndarray:
    """A copy of the RGB ``canvas`` with ``text`` drawn at ``xy`` (its top left corner), ``size`` pixels high."""
    picture = Image.fromarray(np.ascontiguousarray(canvas))
    ImageDraw.Draw(picture).text(xy, text, font=font(size), fill=color)
    return np.asarray(picture).copy()


def colorize(heatmap: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Map a [0, 1] float map to RGB colours."""
    if colormap not in COLORMAPS:
        raise ValueError(f"Unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}.")
    grey = cv2.convertScaleAbs(np.nan_to_num(np.asarray(heatmap, np.float32)), alpha=255.0)
    return cv2.cvtColor(cv2.applyColorMap(grey, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45,
            colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Convex blend ``(1 - alpha) * image + alpha * colour(heatmap)``; the map is resized to the image if needed."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = image.shape[:2]
    if heatmap.shape[:2] != (height, width):
        heatmap = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    # cv2.addWeighted: the same blend as numpy float arithmetic, ten times faster on a photo-sized image.
    return cv2.addWeighted(np.ascontiguousarray(image, np.uint8), 1.0 - alpha, colorize(heatmap, colormap), alpha, 0.0)


def _thickness(image: np.ndarray) -> int:
    return max(1, round(min(image.shape[:2]) / 160))


def draw_region(image: np.ndarray, region: Region, box: bool = True, contour: bool = True) -> np.ndarray:
    """A copy of ``image`` with the region's box (green) and outline (white) drawn on it.

    The outline is the region's segmentation (:attr:`Region.mask <explainer.region.Region.mask>`), or its heat
    region when the class has no mask (below the probability cutoff).
    """
    out = np.ascontiguousarray(image.copy())
    if region.coverage <= 0:
        return out
    thick = _thickness(out)
    if contour:
        out = draw_outline(out, region.shown_mask, thickness=thick)
    if box:
        x, y, w, h = region.bbox
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), BOX_COLOR, thick + 1, cv2.LINE_AA)
    return out


def draw_outline(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = CONTOUR_COLOR,
                 thickness: int | None = None) -> np.ndarray:
    """A copy of ``image`` with the outer outline of a boolean ``mask`` (the image's size) drawn in ``color``."""
    out = np.ascontiguousarray(image.copy())
    contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, thickness or _thickness(out), cv2.LINE_AA)
    return out


def cutout(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGBA ``uint8`` copy of an RGB ``image``: opaque on ``mask``, alpha 0 (and black) everywhere else."""
    mask = np.asarray(mask, bool)
    out = np.zeros((*mask.shape, 4), np.uint8)
    out[mask, :3] = np.asarray(image)[mask, :3]
    out[mask, 3] = 255
    return out


def mask_picture(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as a ``uint8`` grey image: 255 on the mask, 0 elsewhere (how mask files are written)."""
    return np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8)


def crop_region(image: np.ndarray, region: Region, pad: float = 0.1) -> np.ndarray:
    """The part of ``image`` inside the region's box, with ``pad`` × the box size of margin."""
    x, y, w, h = region.bbox
    if w == 0 or h == 0:
        return image.copy()
    dx, dy = round(w * pad), round(h * pad)
    height, width = image.shape[:2]
    return image[max(0, y - dy): min(height, y + h + dy), max(0, x - dx): min(width, x + w + dx)].copy()


def caption(image: np.ndarray, text: str, height: int = 28) -> np.ndarray:
    """``image`` with a white strip above it holding ``text`` (shortened with "…" to fit)."""
    width = image.shape[1]
    size = round(height * 0.6)
    strip = draw_text(np.full((height, width, 3), 255, np.uint8), fit_text(text, size, width - 8),
                      (4, (height - size) // 2 - 1), size)
    return np.vstack([strip, image])


def tile(images: Sequence[np.ndarray], captions: Sequence[str] | None = None, size: int = 256,
         columns: int = 2, gap: int = 6) -> np.ndarray:
    """Images side by side (each scaled to ``size`` px high), in rows of ``columns``, each under its caption.

    Two columns by default: a grid of seven methods is then four rows, but on a 390 px phone each tile is still
    about 180 px wide with its caption at 12 px, where four columns shrank them to 60 px and unreadable labels.
    """
    captions = list(captions) if captions is not None else [""] * len(images)
    cells = []
    for img, text in zip(images, captions, strict=True):
        scale = size / img.shape[0]
        cell = cv2.resize(img, (max(1, round(img.shape[1] * scale)), size), interpolation=cv2.INTER_AREA)
        cells.append(caption(cell, text) if text else cell)
    cell_h = max(c.shape[0] for c in cells)
    cell_w = max(c.shape[1] for c in cells)
    rows = [cells[i: i + columns] for i in range(0, len(cells), columns)]
    canvas = np.full((len(rows) * (cell_h + gap) - gap, min(columns, len(cells)) * (cell_w + gap) - gap, 3),
                     255, np.uint8)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            y, x = r * (cell_h + gap), c * (cell_w + gap)
            canvas[y: y + cell.shape[0], x: x + cell.shape[1]] = cell
    return canvas


def bar_chart(predictions: Sequence[Prediction], width: int = 480, bar_height: int = 30) -> np.ndarray:
    """Horizontal bars of the top predictions' probabilities, labelled with class and percentage."""
    pad = 8
    label_w = width // 2
    canvas = np.full((pad * 2 + bar_height * len(predictions), width, 3), 255, np.uint8)
    size = round(bar_height * 0.5)
    for i, pred in enumerate(predictions):
        y = pad + i * bar_height
        canvas = draw_text(canvas, fit_text(pred.label, size, label_w - 12), (pad, y + (bar_height - size) // 2 - 2),
                           size)
        bar_w = round((width - label_w - 70) * float(np.clip(pred.probability, 0, 1)))
        color = (52, 120, 246) if i == 0 else (150, 170, 200)
        cv2.rectangle(canvas, (label_w, y + 4), (label_w + max(bar_w, 1), y + bar_height - 6), color, -1)
        canvas = draw_text(canvas, f"{pred.probability:.1%}", (label_w + bar_w + 6, y + (bar_height - size) // 2 - 2),
                           size)
    return canvas

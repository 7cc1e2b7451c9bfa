"""Reading images safely: any path, PIL image or array becomes an RGB ``uint8`` array.

Decoding goes through Pillow, which knows the formats people actually upload (EXIF-rotated JPEG photos, palette
and RGBA PNG, 16-bit TIFF, CMYK JPEG, animated GIF) and refuses decompression bombs before allocating them.
DICOM files (``.dcm``, or the DICOM marker whatever the name) go through pydicom (see :mod:`explainer.inputs.dicom`).

Every image read from a file is counted against a pixel budget *before* it is decoded, from the size its header
declares (Pillow and pydicom read headers lazily): at most :data:`MAX_PIXELS` per image, and, inside
:func:`pixel_budget` (a public server's request: a chat turn, painted layers, an audit), at most so many pixels in
all. A 150 KB PNG declaring 12000×12000 pixels is refused in milliseconds instead of costing gigabytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from explainer.errors import ImageError
from explainer.inputs import dicom
from explainer.prose import quote

#: Largest image we decode, in pixels (about 40 megapixels, a large phone photo). Bigger images are refused
#: before decoding, so a 20000x20000 upload or a decompression bomb cannot exhaust memory.
MAX_PIXELS = 40_000_000

#: File name endings taken as images when a folder is listed (the one list for the whole project).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".dcm"})


@dataclass
class PixelBudget:
    """What one request may decode: each image at most ``per_image`` pixels, all of them at most ``total``.

    Attributes
    ----------
    per_image : int
        Most pixels of one image (or one DICOM frame, or one painted layer).
    total : int or None
        Most pixels decoded in all (None: no total, as for a script or the CLI).
    spent : int
        Pixels counted so far.
    """

    per_image: int = MAX_PIXELS
    total: int | None = None
    spent: int = 0

    def check(self, size: tuple[int, int], name: str = "The image") -> int:
        """The pixels of an image of ``size`` = (width, height); :class:`ImageError` over the per-image limit."""
        width, height = int(size[0]), int(size[1])
        if width < 1 or height < 1:
            raise ImageError(f"{name} has no pixels.")
        if width * height > self.per_image:
            raise ImageError(f"{name} is {width}×{height} pixels; the limit is {_megapixels(self.per_image)} per "
                             "image. Please send a smaller image.")
        return width * height

    def charge(self, size: tuple[int, int], name: str = "The image") -> None:
        """Count an image of ``size`` = (width, height) before it is decoded; :class:`ImageError` when over.

        ``name`` starts the message (a quoted file name, "The DICOM file's image", "The painted layer").
        """
        pixels = self.check(size, name)
        if self.total is not None and self.spent + pixels > self.total:
            width, height = size
            raise ImageError(f"{name} is {width}×{height} pixels, and with the images before it this request would "
                             f"decode {_megapixels(self.spent + pixels)}; this server decodes at most "
                             f"{_megapixels(self.total)} per request. Please send fewer or smaller images.")
        self.spent += pixels


_budget: contextvars.ContextVar[PixelBudget | None] = contextvars.ContextVar("explainer_pixel_budget", default=None)


@contextlib.contextmanager
def pixel_budget(total: int | None, per_image: int = MAX_PIXELS) -> Iterator[PixelBudget]:
    """Within this block, every image read from a file is counted against one :class:`PixelBudget`."""
    token = _budget.set(PixelBudget(per_image, total))
    try:
        yield _budget.get()
    finally:
        _budget.reset(token)


def charge(size: tuple[int, int], name: str = "The image") -> None:
    """Count an image of ``size`` = (width, height) against the current budget, before decoding it.

    Outside :func:`pixel_budget` only the per-image limit :data:`MAX_PIXELS` applies.

    Raises
    ------
    ImageError
        Over the per-image limit or over what is left of the request's budget (nothing is counted then).
    """
    (_budget.get() or PixelBudget()).charge(size, name)


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) an image file declares, read from its header without decoding; None when unreadable."""
    path = Path(path)
    if dicom.is_dicom(path):
        return dicom.frame_size(path)
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def open_image(path: str | os.PathLike, name: str | None = None) -> Image.Image:
    """The image at ``path``, opened and counted against the pixel budget but not yet decoded (Pillow is lazy).

    Raises
    ------
    ImageError
        Missing, empty, not an image, or over the budget (see :func:`charge`).
    """
    path = Path(path)
    name = name or quote(path.name)
    if not path.is_file():
        raise ImageError(f"No image file at {name}.")
    if path.stat().st_size == 0:
        raise ImageError(f"{name} is empty (0 bytes).")
    limit = (_budget.get() or PixelBudget()).per_image
    try:
        with warnings.catch_warnings():
            # Pillow's own warning is not needed: the budget below states the size and the limit. Its error, for
            # images over twice its limit, comes before the size can be read.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name} declares over {_megapixels(2 * (Image.MAX_IMAGE_PIXELS or 0))}; the limit is "
                         f"{_megapixels(limit)} per image. Please send a smaller image.") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{name} is not an image format I can read.") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name} looks damaged or truncated and cannot be decoded.") from err
    try:
        charge(img.size, name)
    except ImageError:
        img.close()
        raise
    return img


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.0f} megapixels" if pixels >= 10_000_000 else f"{pixels / 1_000_000:.1f} megapixels"


@dataclass(frozen=True)
class LoadedImage:
    """An image as the engine explains it, and what the user should be told about how it was read.

    Attributes
    ----------
    pixels : numpy.ndarray
        RGB ``uint8`` of shape (H, W, 3), exactly what :func:`load_image` returns.
    notes : list of str
        Short neutral sentences for the user (e.g. "This DICOM file has 12 frames; the first is explained.").
    name : str
        How messages may call the source: the file name, ``"the DICOM file"`` for DICOM (whose names often are the
        patient's), ``""`` for an in-memory image.
    dicom : bool
        Whether the source was read as DICOM.
    """

    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)
    name: str = ""
    dicom: bool = False


def load_image(image: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
    """Return ``image`` as an RGB ``uint8`` array of shape (H, W, 3).

    Parameters
    ----------
    image : path, PIL.Image.Image or numpy.ndarray
        A file path (any format Pillow reads, or DICOM), a PIL image, or an array (H×W grey, H×W×1, H×W×3 RGB or
        H×W×4 RGBA; any integer or float dtype: floats in [0, 1] are scaled to 0–255, integers outside 0–255, such
        as 16-bit data, are stretched from their own minimum to their maximum).

    Raises
    ------
    ImageError
        When the file is missing, empty, not an image, truncated, or larger than ``MAX_PIXELS``.
    """
    return load_image_with_notes(image).pixels


def load_image_with_notes(image: str | os.PathLike | Image.Image | np.ndarray) -> LoadedImage:
    """Like :func:`load_image`, with the notes for the user and the name messages may use.

    Raises
    ------
    ImageError
        As :func:`load_image`. Messages about a DICOM file call it "the DICOM file", never by its name.
    """
    if isinstance(image, np.ndarray):
        return LoadedImage(_array_to_rgb(image))
    if isinstance(image, Image.Image):
        return LoadedImage(_pil_to_rgb(image))
    if isinstance(image, (str, os.PathLike)):
        return _load_path(Path(image))
    raise ImageError(f"Expected an image file, a PIL image or an array, got {type(image).__name__}.")


def display_name(path: str | os.PathLike) -> str:
    """How a message may call the file at ``path``: its name, or ``"the DICOM file"`` for a DICOM file."""
    return dicom.DICOM_NAME if dicom.is_dicom(path) else Path(path).name


def _load_path(path: Path) -> LoadedImage:
    if not dicom.is_dicom(path):
        return LoadedImage(_pil_to_rgb(_open(path)), name=path.name)
    if not path.is_file():
        raise ImageError("No image file: the DICOM file was not found.")
    if path.stat().st_size == 0:
        raise ImageError("The DICOM file is empty (0 bytes).")
    pixels, notes = dicom.read_dicom(path, lambda size: charge(size, "The DICOM file's image"))
    return LoadedImage(pixels, notes, dicom.DICOM_NAME, dicom=True)


def _open(path: Path) -> Image.Image:
    """The image at ``path``, counted against the budget, then decoded (plain messages for every failure)."""
    img = open_image(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
        return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{quote(path.name)} is too large to open safely.") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{quote(path.name)} looks damaged or truncated and cannot be decoded.") from err


def _check_size(size: tuple[int, int], name: str = "The image") -> None:
    """The per-image limit for an image already in memory (a PIL image or an array: nothing left to count)."""
    (_budget.get() or PixelBudget()).check(size, name)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    _check_size(img.size)
    with contextlib.suppress(EOFError):
        img.seek(0)  # animated GIF/WebP: explain the first frame
    img = ImageOps.exif_transpose(img)  # photos taken sideways are stored sideways
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: the data's own range becomes 0-255
        return _array_to_rgb(np.asarray(img), stretch=True)
    if img.mode == "F":
        return _array_to_rgb(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return _flatten_alpha(np.asarray(img.convert("RGBA")))
    return np.ascontiguousarray(np.asarray(img.convert("RGB")), dtype=np.uint8)


def alpha_mask(alpha: np.ndarray) -> np.ndarray:
    """Where a painted layer's alpha channel (any dtype, H×W) holds paint: bool H×W, the one rule of every brush
    layer and transparent mask file (the app's ImageEditor, the chat, ``--masks`` files).

    Every pixel not fully transparent is paint (NaN is none). Not "above half the maximum": that would drop a
    faint or low-opacity stroke whenever another stroke is more opaque, so one stroke would change what another
    counts for; and the visitor sees every tinted pixel as painted. The cost is the antialiased fringe of a brush
    (about a pixel around each stroke) counting as paint, small against any region worth asking about.
    """
    return np.asarray(alpha) > 0


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Composite on white: transparent areas of a logo or drawing are white to a person looking at it."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _array_to_rgb(arr: np.ndarray, stretch: bool = False) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"An image array must be H×W, H×W×3 or H×W×4; got shape {arr.shape}.")
    _check_size((arr.shape[1], arr.shape[0]))
    arr = _to_uint8(arr, stretch)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        return _flatten_alpha(arr)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, stretch: bool = False) -> np.ndarray:
    """8-bit values of ``arr``; integers outside 0–255 (and every integer when ``stretch``) are min–max stretched.

    Stretching uses the data's own range, not the type's: a 16-bit X-ray stored in 1000–3000 of 0–65535 would
    otherwise come out as a nearly black, flat picture (and a model trained on 8-bit images would see that).
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.nan_to_num(arr.astype(np.float32))
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if stretch or low < 0 or high > 255:
            return _stretch(arr, low, high)
        return arr.astype(np.uint8)
    raise ImageError(f"Unsupported image dtype {arr.dtype}.")


def _stretch(arr: np.ndarray, low: int, high: int) -> np.ndarray:
    """Min–max to 0–255; a constant image keeps its level relative to its type's range (white stays white)."""
    if high == low:
        info = np.iinfo(arr.dtype)
        level = 0.0 if info.max == info.min else (low - info.min) / (info.max - info.min)
        return np.full(arr.shape, round(255 * level), np.uint8)
    scaled = (arr.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

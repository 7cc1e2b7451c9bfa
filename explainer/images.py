"""Reading images safely: any path, PIL image or array becomes an RGB ``uint8`` array.

Decoding goes through Pillow, which knows the formats people actually upload (EXIF-rotated JPEG photos, palette
and RGBA PNG, 16-bit TIFF, CMYK JPEG, animated GIF) and refuses decompression bombs before allocating them.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

#: Largest image we decode, in pixels (about 40 megapixels, a large phone photo). Bigger images are refused
#: before decoding, so a 20000x20000 upload or a decompression bomb cannot exhaust memory.
MAX_PIXELS = 40_000_000



def load_image(image: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
    """Return ``image`` as an RGB ``uint8`` array of shape (H, W, 3).

    Parameters
    ----------
    image : path, PIL.Image.Image or numpy.ndarray
        A file path, a PIL image, or an array (H×W grey, H×W×1, H×W×3 RGB or H×W×4 RGBA; any integer or float dtype:
        floats in [0, 1] are scaled to 0–255, 16-bit integers are scaled down).

    Raises
    ------
    ImageError
        When the file is missing, empty, not an image, truncated, or larger than ``MAX_PIXELS``.
    """
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        return _pil_to_rgb(_open(Path(image)))
    raise ImageError(f"Expected an image file, a PIL image or an array, got {type(image).__name__}.")


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageError(f"No image file at {path.name!r}.")
    if path.stat().st_size == 0:
        raise ImageError(f"{path.name!r} is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            _check_size(img.size, path.name)
            img.load()
        return img
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path.name!r} is too large to open safely.") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{path.name!r} is not an image format I can read.") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path.name!r} looks damaged or truncated and cannot be decoded.") from err


def _check_size(size: tuple[int, int], name: str = "the image") -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels.")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name} is {width}×{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels. "
            "Please send a smaller image."
        )


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    _check_size(img.size)
    with contextlib.suppress(EOFError):
        img.seek(0)  # animated GIF/WebP: explain the first frame
    img = ImageOps.exif_transpose(img)  # photos taken sideways are stored sideways
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_rgb(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return _flatten_alpha(np.asarray(img.convert("RGBA")))
    return np.ascontiguousarray(np.asarray(img.convert("RGB")), dtype=np.uint8)


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Composite on white: transparent areas of a logo or drawing are white to a person looking at it."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"An image array must be H×W, H×W×3 or H×W×4; got shape {arr.shape}.")
    _check_size((arr.shape[1], arr.shape[0]))
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        return _flatten_alpha(arr)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.nan_to_num(arr.astype(np.float32))
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        top = int(arr.max()) if arr.size else 0
        if top > 255:  # 16-bit or 32-bit data: keep the full range visible
            return (arr.astype(np.float64) * (255.0 / (65535.0 if top <= 65535 else top))).astype(np.uint8)
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise ImageError(f"Unsupported image dtype {arr.dtype}.")

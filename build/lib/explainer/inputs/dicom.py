"""DICOM files (``.dcm``, or any file with the DICOM preamble) as RGB ``uint8`` arrays, read with pydicom.

Stored values become pixels the way a DICOM viewer shows them: the modality LUT (rescale slope and intercept), then
the file's VOI LUT or window centre/width when it has one (else the image's own min–max), MONOCHROME1 inverted,
colour kept for RGB, YBR and palette images. A multi-frame file gives its first frame and a note saying so.

Privacy: a DICOM header holds protected health information (patient name and ID, dates, institution...). Only the
attributes needed to render pixels (:data:`PIXEL_TAGS`) are read at all: pydicom skips every other element without
parsing it, so identity fields cannot reach a message, a log line or an output file. Messages call the file
"the DICOM file", never by its name (names of medical images often are the patient's), never quote a header value,
and chain no pydicom exception (their texts may quote values). pydicom's logging and warnings are silenced for the
same reason.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from explainer.errors import ImageError

#: How messages refer to a DICOM file: never by its name.
DICOM_NAME = "the DICOM file"
_SUBJECT = "The DICOM file"  # DICOM_NAME at the start of a sentence
#: Where the four-byte marker ``DICM`` sits in a DICOM Part 10 file: after a 128-byte preamble.
MAGIC_OFFSET, MAGIC = 128, b"DICM"

#: The only attributes read from a file: how the pixel data is laid out and how stored values become grey levels
#: or colours. Everything else (identity, dates, institution, device, free text) is skipped unparsed.
PIXEL_TAGS = [
    0x00280002,  # Samples per Pixel
    0x00280004,  # Photometric Interpretation
    0x00280006,  # Planar Configuration
    0x00280008,  # Number of Frames
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # Bits Allocated
    0x00280101,  # Bits Stored
    0x00280102,  # High Bit
    0x00280103,  # Pixel Representation
    0x00281050,  # Window Center
    0x00281051,  # Window Width
    0x00281052,  # Rescale Intercept
    0x00281053,  # Rescale Slope
    0x00281054,  # Rescale Type
    0x00281056,  # VOI LUT Function
    0x00281101, 0x00281102, 0x00281103,  # Red, Green, Blue Palette Color LUT Descriptor
    0x00281201, 0x00281202, 0x00281203,  # Red, Green, Blue Palette Color LUT Data
    0x00281221, 0x00281222, 0x00281223,  # Segmented Red, Green, Blue Palette Color LUT Data
    0x00283000,  # Modality LUT Sequence
    0x00283010,  # VOI LUT Sequence
    0x7FE00001,  # Extended Offset Table
    0x7FE00002,  # Extended Offset Table Lengths
    0x7FE00008,  # Float Pixel Data
    0x7FE00009,  # Double Float Pixel Data
    0x7FE00010,  # Pixel Data
]

#: What to install for compressed pixel data that pydicom decodes only with plugins, by transfer syntax family.
_DECODERS = {
    "JPEG": "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "JPEG-LS": "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls)",
    "JPEG 2000": "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)",
}


def _silence_pydicom_log() -> None:
    """Stop pydicom from creating log records at all: they may quote header values (with its debugging on, every
    element it reads). Done at every read, after pydicom's import (which sets its own level), and whatever
    ``pydicom.config.debug`` says: no handler, the application's or pydicom's, then ever sees a record."""
    log = logging.getLogger("pydicom")
    log.setLevel(logging.CRITICAL + 1)
    log.propagate = False


def has_preamble(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` carries the DICOM marker ``DICM`` at byte 128 (False when unreadable)."""
    try:
        with open(path, "rb") as file:
            file.seek(MAGIC_OFFSET)
            return file.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` is to be read as DICOM: a ``.dcm`` name, or the DICOM marker whatever the name."""
    return Path(path).suffix.lower() == ".dcm" or has_preamble(path)


#: ``charge((width, height))``: counts the frame about to be decoded, raising :class:`ImageError` when over budget.
Charge = Callable[[tuple[int, int]], None]


def frame_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of a DICOM file's frames as its header declares them; None when unreadable or absent."""
    import pydicom

    _silence_pydicom_log()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, specific_tags=PIXEL_TAGS, stop_before_pixels=True,
                                 force=not has_preamble(path))
            rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        except Exception:  # a malformed header: nothing to count, the read itself will say what is wrong
            return None
    return (columns, rows) if rows > 0 and columns > 0 else None


def read_dicom(path: str | os.PathLike, charge: Charge) -> tuple[np.ndarray, list[str]]:
    """The first frame of a DICOM file as RGB ``uint8`` (H, W, 3), and notes for the user.

    Parameters
    ----------
    path : path-like
        The file (any name; see :func:`is_dicom`).
    charge : callable
        Called with the frame's (width, height) from the header before anything is decoded; raises
        :class:`ImageError` for a frame over the pixel budget (see :func:`explainer.inputs.images.charge`). Only the
        first frame is decoded, so only it is counted.

    Returns
    -------
    pixels : numpy.ndarray
        RGB ``uint8``; grey images repeated over the three channels.
    notes : list of str
        Short sentences for the user (e.g. that only the first of several frames is explained).

    Raises
    ------
    ImageError
        When the file is not readable DICOM, holds no image, is too large, or its compression needs a decoder that
        is not installed. Messages never name the file nor quote its header.
    """
    import pydicom  # imported here: reading PNG and JPEG should not pay for it

    _silence_pydicom_log()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warnings may quote header values
        try:
            return _read(pydicom, Path(path), charge)
        except ImageError:
            raise
        except Exception:  # whatever else a malformed file makes pydicom raise: its text is not for users
            raise ImageError(f"{_SUBJECT} is damaged or inconsistent, and cannot be read.") from None


def _read(pydicom, path: Path, charge: Charge) -> tuple[np.ndarray, list[str]]:
    ds = _read_header(pydicom, path)
    _check_layout(ds, charge)
    frames = _frame_count(ds)
    stored = _decode_first_frame(pydicom, ds)
    try:
        pixels = _to_rgb(pydicom, ds, stored)
    except ImageError:
        raise
    except Exception:  # an inconsistent window or LUT; pydicom's text may quote header values
        raise ImageError(f"{_SUBJECT}'s grey levels cannot be computed: its window or lookup table is "
                         "inconsistent.") from None
    notes = [f"This DICOM file has {frames} frames; the first is explained."] if frames > 1 else []
    return pixels, notes


def _read_header(pydicom, path: Path):
    try:
        # force: a .dcm file written without the 128-byte preamble is still DICOM; garbage fails below.
        ds = pydicom.dcmread(path, specific_tags=PIXEL_TAGS, force=not has_preamble(path))
    except Exception:  # pydicom raises many types; their texts may quote header values
        raise ImageError(f"{_SUBJECT} is damaged or not DICOM, and cannot be read.") from None
    if "TransferSyntaxUID" not in ds.file_meta and ds.original_encoding[0] is not None:
        ds.file_meta.TransferSyntaxUID = _syntax_from_encoding(pydicom, ds.original_encoding)
    return ds


def _syntax_from_encoding(pydicom, encoding: tuple[bool | None, bool | None]):
    """The transfer syntax of a file without file meta, from what the reader found (implicit VR, little endian)."""
    implicit, little = encoding
    if implicit:
        return pydicom.uid.ImplicitVRLittleEndian
    return pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian


def _check_layout(ds, charge: Charge) -> None:
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(f"{_SUBJECT} holds no image (it has no pixel data).")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows < 1 or columns < 1:
        raise ImageError(f"{_SUBJECT} does not say how many rows and columns its image has.")
    charge((columns, rows))
    if int(ds.get("SamplesPerPixel") or 1) not in (1, 3):
        raise ImageError(f"{_SUBJECT} has {ds.SamplesPerPixel} samples per pixel; "
                         "only grey (1) and colour (3) images can be explained.")


def _frame_count(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _decode_first_frame(pydicom, ds) -> np.ndarray:
    """Only frame 0 is decoded: a 500-frame cine loop costs one frame of time and memory."""
    try:
        return pydicom.pixels.pixel_array(ds, index=0)
    except Exception as err:  # pydicom's texts are not for users and may quote values: read, never shown
        missing_decoder = "missing dependencies" in str(err)
    raise ImageError(_decode_failure(pydicom, ds, missing_decoder)) from None


def _decode_failure(pydicom, ds, missing_decoder: bool) -> str:
    """Why pixels could not be decoded, naming the decoder to install when compression is the reason."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    uid = pydicom.uid
    start = f"{_SUBJECT}'s pixels"
    if syntax is None or syntax in uid.UncompressedTransferSyntaxes:
        return f"{start} could not be decoded: the file looks damaged or incomplete."
    family = ("JPEG 2000" if syntax in uid.JPEG2000TransferSyntaxes else
              "JPEG-LS" if syntax in uid.JPEGLSTransferSyntaxes else
              "JPEG" if syntax in uid.JPEGTransferSyntaxes else None)
    if family and missing_decoder:
        return (f"{start} are compressed as {syntax.name}, which needs a decoder that is not installed. "
                f"Install one with: {_DECODERS[family]}.")
    if family:
        return (f"{start} are compressed as {syntax.name} and could not be decoded: the file may be damaged, or "
                f"need another decoder. Install one with: {_DECODERS[family]}.")
    if syntax in uid.MPEGTransferSyntaxes:
        return f"{start} are a video ({syntax.name}); video DICOM files cannot be explained."
    if syntax in uid.RLETransferSyntaxes:
        return f"{start} are RLE-compressed and could not be decoded: the file looks damaged."
    return f"{start} use a compression this tool cannot decode ({syntax.name})."


def _to_rgb(pydicom, ds, stored: np.ndarray) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey = _grey_to_uint8(pydicom, ds, stored)
        grey = 255 - grey if photometric == "MONOCHROME1" else grey  # MONOCHROME1: low values are white
        return np.repeat(grey[..., None], 3, axis=-1)
    if photometric == "PALETTE COLOR":
        return _scale_colour(pydicom.pixels.apply_color_lut(stored, ds), 16 if stored.dtype != np.uint8 else 8)
    if stored.ndim == 3 and stored.shape[-1] == 3:  # RGB; YBR already converted to RGB by pydicom
        return _scale_colour(stored, int(ds.get("BitsStored") or 8))
    raise ImageError(f"{_SUBJECT} uses a colour encoding that cannot be shown ({photometric}).")


def _grey_to_uint8(pydicom, ds, stored: np.ndarray) -> np.ndarray:
    """Modality LUT, then the file's own window (VOI LUT or centre/width) or, without one, the image's min–max."""
    values = pydicom.pixels.apply_modality_lut(stored, ds)
    low, high = _voi_output_range(pydicom, ds)
    if low is None:
        values = values.astype(np.float64)
        low, high = float(values.min()), float(values.max())
    else:
        if ds.get("VOILUTSequence"):
            values = np.rint(values).astype(np.int64)  # a lookup table is indexed by whole numbers
        values = pydicom.pixels.apply_voi_lut(values, ds, index=0).astype(np.float64)
    span = high - low
    if not np.isfinite(span) or span <= 0:
        return np.zeros(values.shape, np.uint8)  # a constant frame carries no picture
    return np.clip(np.rint((values - low) * (255.0 / span)), 0, 255).astype(np.uint8)


def _voi_output_range(pydicom, ds) -> tuple[float | None, float | None]:
    """The values the file's VOI transform maps onto, found by applying it to probes; (None, None) without one.

    A window maps everything below it to its lowest output and everything above to its highest, so two extreme
    probes give the range; a VOI LUT's range is that of its entries, so probing every entry gives it.
    """
    lut_items = ds.get("VOILUTSequence") or []
    if lut_items and lut_items[0].get("LUTDescriptor") and lut_items[0].get("LUTData") is not None:
        entries, first = int(lut_items[0].LUTDescriptor[0]) or 65536, int(lut_items[0].LUTDescriptor[1])
        outputs = pydicom.pixels.apply_voi_lut(np.arange(first, first + entries), ds, index=0)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        with np.errstate(over="ignore"):  # the sigmoid window overflows to its asymptotes, which is the point
            outputs = pydicom.pixels.apply_voi_lut(np.array([-1e300, 1e300]), ds, index=0)
    else:
        return None, None
    return float(np.min(outputs)), float(np.max(outputs))


def _scale_colour(rgb: np.ndarray, bits: int) -> np.ndarray:
    """Colour samples to 8 bits by their nominal depth, so every channel keeps the same scale (hues stay true)."""
    if rgb.dtype == np.uint8 or bits <= 8:
        return np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))
    top = float(2 ** bits - 1)
    return np.clip(np.rint(rgb.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)

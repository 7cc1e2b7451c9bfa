"""Unpacking a visitor's ``.zip`` of a validation set for an audit, safely.

A zip is a description of files, and a hostile one lies: member names with ``..`` or absolute paths (writing
outside the destination), sizes that inflate a thousandfold, archives inside the archive, and more members than
any validation set has. :func:`extract_audit_folder` checks the declared sizes and counts before writing anything,
never trusts them while writing (each member is copied through a byte budget), writes only the files an audit reads
(images, a ``boxes.csv`` and a ``masks/`` folder) under names it has checked, and says what it left out. Once
written, the images' headers are read (nothing decoded) and their pixels summed: a zip of sixteen 6300×6300 PNGs,
under 0.5 MB, would decode to 2 GB, and is refused in milliseconds instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from explainer.errors import ExplainerError
from explainer.inputs.images import IMAGE_SUFFIXES, image_size

#: Most images an audit in the app takes, and most bytes a zip may unpack to (both settings of the app).
MAX_IMAGES = 500
MAX_BYTES = 512 * 2**20
#: Most pixels the images (and masks) of one zip may declare in all (a setting of the app).
MAX_PIXELS = 250_000_000
#: Longest member name part the server writes (Linux's NAME_MAX), deepest folder nesting, longest whole name.
MAX_NAME_BYTES, MAX_DEPTH, MAX_PATH_BYTES = 255, 32, 1024
BOXES_FILE = "boxes.csv"
MASKS_FOLDER = "masks"
_JUNK = ("__MACOSX", ".DS_Store", "Thumbs.db")


class ArchiveError(ExplainerError, ValueError):
    """The upload is not a zip an audit can use (not a zip, too large, no images...)."""


@dataclass
class AuditFolder:
    """Where an archive was unpacked, and what the audit should know about it."""

    images: Path  # the folder to audit (class sub-folders, or images directly)
    boxes: Path | None = None
    masks: Path | None = None
    count: int = 0  # images written
    notes: list[str] = field(default_factory=list)


def extract_audit_folder(archive: str | os.PathLike, destination: str | os.PathLike, max_images: int = MAX_IMAGES,
                         max_bytes: int = MAX_BYTES, max_pixels: int | None = MAX_PIXELS) -> AuditFolder:
    """Unpack the images (and ``boxes.csv``, ``masks/``) of a ``.zip`` into ``destination``.

    Parameters
    ----------
    archive : path
        The uploaded zip: one sub-folder per class (``keras.utils.image_dataset_from_directory``'s layout), or
        images directly, possibly all inside one top folder. A ``boxes.csv`` (``path,x,y,w,h``) and a ``masks/``
        folder beside the images are used as expected regions.
    destination : path
        An empty folder to write into.
    max_images, max_bytes : int
        The most images, and the most bytes unpacked in all.
    max_pixels : int or None
        The most pixels the written images and masks may declare in all (read from their headers, nothing
        decoded); None for no limit.

    Raises
    ------
    ArchiveError
        Not a zip, encrypted, over a limit, or holding no image; each with its own sentence.
    """
    destination = Path(destination)
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            root = _common_root([PurePosixPath(m.filename) for m in members])
            plan, notes = _plan(members, root, max_images, max_bytes)
            budget = [max_bytes]
            for member, relative in plan:
                _copy(zipped, member, destination / relative, budget)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as err:  # reading the zip
        raise ArchiveError("The upload is not a zip file that can be read (it looks damaged or incomplete).") from err
    except NotImplementedError as err:
        raise ArchiveError("The zip uses a compression method this server cannot unpack; zip it again with the "
                           "usual one (deflate), as every zip tool does by default.") from err
    count = sum(1 for _m, relative in plan if relative.parts[0] != MASKS_FOLDER and relative.name != BOXES_FILE)
    if count == 0:
        left_out = f" ({' '.join(notes)})" if notes else ""
        raise ArchiveError(f"The zip holds no images (PNG, JPEG, WebP, BMP, GIF, TIFF or DICOM) this server can "
                           f"unpack{left_out}.")
    if max_pixels is not None:
        _check_pixels(destination, plan, max_pixels)
    boxes, masks = destination / BOXES_FILE, destination / MASKS_FOLDER
    images = destination / "images"
    return AuditFolder(images, boxes if boxes.is_file() else None, masks if masks.is_dir() else None, count, notes)


def _plan(members: list[zipfile.ZipInfo], root: PurePosixPath | None, max_images: int,
          max_bytes: int) -> tuple[list[tuple[zipfile.ZipInfo, PurePosixPath]], list[str]]:
    """Which members to write where; refuses over the limits before a byte is written."""
    if any(member.flag_bits & 0x1 for member in members):
        raise ArchiveError("The zip is encrypted (protected by a password), so this server cannot open it. Zip the "
                           "images again without a password.")
    plan, skipped, nested, unsafe, unwritable = [], 0, 0, 0, 0
    named = []
    for member in members:
        name = PurePosixPath(member.filename.replace("\\", "/"))
        if any(part in _JUNK or part.startswith(".") for part in name.parts):  # hidden: the audit skips them too
            continue
        if name.is_absolute() or ".." in name.parts or not name.parts:
            unsafe += 1
            continue
        if not _writable(name):
            unwritable += 1
            continue
        named.append((member, PurePosixPath(*name.parts[len(root.parts):]) if root else name))
    # The layout `python -m explainer.demo.audit_data` writes: images/<class>/..., masks/<class>/..., boxes.csv.
    regions = any(r == PurePosixPath(BOXES_FILE) or r.parts[0] == MASKS_FOLDER for _m, r in named)
    under_images = regions and any(r.parts[0] == "images" and len(r.parts) > 1 for _m, r in named)
    for member, relative in named:
        if under_images and relative.parts[0] == "images":
            relative = PurePosixPath(*relative.parts[1:])
        suffix = relative.suffix.lower()
        if suffix in (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar"):
            nested += 1
        elif relative == PurePosixPath(BOXES_FILE) or (relative.parts[0] == MASKS_FOLDER and suffix in IMAGE_SUFFIXES):
            plan.append((member, relative))
        elif suffix in IMAGE_SUFFIXES:
            plan.append((member, PurePosixPath("images", *relative.parts)))
        else:
            skipped += 1
    images = sum(1 for _m, relative in plan if relative.parts[0] == "images")
    if images > max_images:
        raise ArchiveError(f"The zip holds {images} images; an audit here takes at most {max_images}. Audit a sample, "
                           "or run python -m explainer audit on your own machine for the whole set.")
    declared = sum(member.file_size for member, _relative in plan)
    if declared > max_bytes:
        raise ArchiveError(f"The zip unpacks to {declared / 2**20:.0f} MB; an audit here takes at most "
                           f"{max_bytes / 2**20:.0f} MB.")
    notes = []
    if skipped:
        notes.append(f"{skipped} files that are not images were left out.")
    if nested:
        notes.append(f"{nested} archives inside the zip were not opened.")
    if unsafe:
        notes.append(f"{unsafe} files with unsafe names (absolute, or reaching outside the zip) were left out.")
    if unwritable:
        notes.append(f"{unwritable} files whose names are too long (over {MAX_NAME_BYTES} bytes a name, "
                     f"{MAX_PATH_BYTES} in all) or nested too deep (over {MAX_DEPTH} folders) were left out.")
    return plan, notes


def _writable(name: PurePosixPath) -> bool:
    """Whether this server can write ``name``: each part at most 255 bytes, not too deep, not too long in all."""
    encoded = [part.encode("utf-8", "surrogateescape") for part in name.parts]
    return (len(encoded) <= MAX_DEPTH + 1 and all(len(part) <= MAX_NAME_BYTES for part in encoded)
            and sum(len(part) + 1 for part in encoded) <= MAX_PATH_BYTES)


def _check_pixels(destination: Path, plan: list[tuple[zipfile.ZipInfo, PurePosixPath]], max_pixels: int) -> None:
    """Refuse a zip whose images and masks declare more than ``max_pixels`` in all (headers only, nothing decoded)."""
    total, largest = 0, (0, 0)
    for _member, relative in plan:
        if relative.name == BOXES_FILE:
            continue
        size = image_size(destination / relative)
        if size is not None:
            total += size[0] * size[1]
            largest = max(largest, size, key=lambda s: s[0] * s[1])
    if total > max_pixels:
        raise ArchiveError(f"The images in the zip hold {total / 1e6:,.0f} megapixels in all (the largest is "
                           f"{largest[0]}×{largest[1]}); an audit here decodes at most {max_pixels / 1e6:,.0f} "
                           "megapixels. Audit fewer or smaller images, or run python -m explainer audit on your own "
                           "machine for the whole set.")


def _copy(zipped: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, budget: list[int]) -> None:
    """Copy one member, counting the bytes actually inflated (a member's declared size can lie).

    Reading errors (a damaged member) propagate as the zip module raises them; a failure to *write* here is this
    server's problem, not the zip's, and says so.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sink = open(target, "wb")  # noqa: SIM115 (closed below; its errors are told apart from the zip's)
    except OSError as err:
        raise ArchiveError("The zip could not be unpacked on this server (a file or folder name it holds cannot be "
                           "written here); zip the images again with short, plain names.") from err
    with sink, zipped.open(member) as source:
        while chunk := source.read(1 << 20):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise ArchiveError("The zip unpacks to more than it declares; it was not unpacked.")
            try:
                sink.write(chunk)
            except OSError as err:
                raise ArchiveError("The zip could not be unpacked: this server ran out of room for it.") from err


def _common_root(names: list[PurePosixPath]) -> PurePosixPath | None:
    """The one top folder a zipped folder puts around everything, if there is one.

    ``set/cat/1.png, set/dog/2.png`` has the root ``set``; ``cat/1.png`` alone does not (a one-class folder keeps its
    class), unless the folder also holds the audit's ``boxes.csv`` or ``masks/``.
    """
    names = [name for name in names if not any(part in _JUNK for part in name.parts)]
    tops = {name.parts[0] for name in names}
    if len(tops) != 1 or any(len(name.parts) == 1 for name in names):
        return None
    wrapped = any(len(name.parts) >= 3 or name.parts[1] in (BOXES_FILE, MASKS_FOLDER) for name in names)
    return PurePosixPath(tops.pop()) if wrapped else None


def remove(folder: str | os.PathLike) -> None:
    """Delete an unpacked archive (after its audit)."""
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def unpacked(archive: str | os.PathLike, destination: str | os.PathLike, max_images: int = MAX_IMAGES,
             max_pixels: int | None = MAX_PIXELS) -> Iterator[AuditFolder]:
    """:func:`extract_audit_folder` into ``destination``, removed again when the block ends (also on error)."""
    try:
        yield extract_audit_folder(archive, destination, max_images=max_images, max_pixels=max_pixels)
    finally:
        remove(destination)

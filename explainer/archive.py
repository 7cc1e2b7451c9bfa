"""Unpacking a visitor's ``.zip`` of a validation set for an audit, safely.

A zip is a description of files, and a hostile one lies: member names with ``..`` or absolute paths (writing
outside the destination), sizes that inflate a thousandfold, archives inside the archive, and more members than
any validation set has. :func:`extract_audit_folder` checks the declared sizes and counts before writing anything,
never trusts them while writing (each member is copied through a byte budget), writes only the files an audit reads
(images, a ``boxes.csv`` and a ``masks/`` folder) under names it has checked, and says what it left out.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .errors import ExplainerError
from .images import IMAGE_SUFFIXES

#: Most images an audit in the app takes, and most bytes a zip may unpack to (both settings of the app).
MAX_IMAGES = 500
MAX_BYTES = 512 * 2**20
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
                         max_bytes: int = MAX_BYTES) -> AuditFolder:
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

    Raises
    ------
    ArchiveError
        Not a zip, over a limit, or holding no image.
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
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError) as err:
        raise ArchiveError("The upload is not a zip file that can be read (it may be damaged or encrypted).") from err
    count = sum(1 for _m, relative in plan if relative.parts[0] != MASKS_FOLDER and relative.name != BOXES_FILE)
    if count == 0:
        raise ArchiveError("The zip holds no images (PNG, JPEG, WebP, BMP, GIF, TIFF or DICOM).")
    boxes, masks = destination / BOXES_FILE, destination / MASKS_FOLDER
    images = destination / "images"
    return AuditFolder(images, boxes if boxes.is_file() else None, masks if masks.is_dir() else None, count, notes)


def _plan(members: list[zipfile.ZipInfo], root: PurePosixPath | None, max_images: int,
          max_bytes: int) -> tuple[list[tuple[zipfile.ZipInfo, PurePosixPath]], list[str]]:
    """Which members to write where; refuses over the limits before a byte is written."""
    plan, skipped, nested, unsafe = [], 0, 0, 0
    named = []
    for member in members:
        name = PurePosixPath(member.filename.replace("\\", "/"))
        if any(part in _JUNK or part.startswith("._") for part in name.parts):
            continue
        if name.is_absolute() or ".." in name.parts or not name.parts:
            unsafe += 1
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
    return plan, notes


def _copy(zipped: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, budget: list[int]) -> None:
    """Copy one member, counting the bytes actually inflated (a member's declared size can lie)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipped.open(member) as source, open(target, "wb") as sink:
        while chunk := source.read(1 << 20):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise ArchiveError("The zip unpacks to more than it declares; it was not unpacked.")
            sink.write(chunk)


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

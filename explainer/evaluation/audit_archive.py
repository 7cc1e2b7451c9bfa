"""The audit of a ``.zip`` of a validation set: unpacked safely, audited, unpacked files removed.

One function for the app's Audit tab and for ``gradcam-chat audit set.zip``: the same limits on what the zip may
hold (checked before a pixel is decoded), the same report.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from explainer.evaluation.audit import AuditOptions, AuditRun, audit_folder
from explainer.inputs.archive import MAX_IMAGES, MAX_PIXELS, unpacked
from explainer.models.loading import LoadedModel


def audit_archive(archive: str | os.PathLike, model: LoadedModel, out: str | os.PathLike,
                  options: AuditOptions | None = None, *, max_images: int = MAX_IMAGES,
                  max_pixels: int | None = MAX_PIXELS, seconds: float | None = None,
                  on_record: Callable[[int, int], None] | None = None, name: str | None = None,
                  unpack_to: str | os.PathLike | None = None) -> AuditRun:
    """Audit the images of the zip ``archive`` with ``model``: results.jsonl and report.html in ``out``.

    Parameters
    ----------
    archive : path
        A zip of class folders, or of images, with an optional ``boxes.csv`` or ``masks/`` (see
        :func:`~explainer.inputs.archive.extract_audit_folder`, which also says what the limits refuse).
    model : LoadedModel
        The classifier to audit.
    out : path
        Where the report and the results go.
    options : AuditOptions, optional
        How each image is explained; without a method, the model's default method.
    max_images, max_pixels : int
        Most images the zip may hold, and most pixels they may declare in all.
    seconds : float, optional
        Time limit: no batch but the first starts after it (the report then covers what was explained).
    on_record : callable, optional
        ``on_record(done, total)`` after each image (a progress bar; raising in it stops the audit).
    name : str, optional
        What the report calls the set (default: the zip's file name).
    unpack_to : path, optional
        An empty folder to unpack into (default: a new temporary folder); removed afterwards either way.

    Returns
    -------
    AuditRun
        The summary, the two files, and the notes of unpacking and auditing.

    Raises
    ------
    ArchiveError
        When the zip cannot be audited (not a zip, over a limit, no images).
    """
    options = (options or AuditOptions()).for_model(model)
    folder_path = Path(unpack_to) if unpack_to is not None else Path(tempfile.mkdtemp(prefix="audit-set-"))
    with unpacked(archive, folder_path, max_images=max_images, max_pixels=max_pixels) as folder:
        # Masks are the finer region: with both, the boxes are not used (as the CLI takes one or the other).
        boxes = None if folder.masks else folder.boxes
        run = audit_folder(model, folder.images, Path(out), options, boxes, folder.masks,
                           name=name or Path(archive).name, on_record=on_record, seconds=seconds)
    return replace(run, notes=[*folder.notes, *run.notes])

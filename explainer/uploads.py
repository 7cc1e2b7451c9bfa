"""The one gate every file a visitor sends passes through: only files inside the server's upload folder.

A public app receives file *references* (``{"path": ...}`` payloads) as well as files. A web framework checks
that a referenced file was uploaded only for payloads shaped the way its own page sends them; a hand-made
payload can name any server path. So every event that takes a file asks :func:`uploaded_file` first, whatever
the payload's shape, and a refused reference always gets the same message, whatever is (or is not) at that path:
the answer must not tell an attacker whether ``/etc/shadow`` or a private key exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ImageError

#: The one message for every refused reference (it must not depend on what is at the path).
REFUSED = "That file did not come from an upload to this app, so I will not open it. Please upload the file itself."


class UploadRefused(ImageError):
    """A file reference that points outside the upload folder (or is not a file reference at all)."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


def uploaded_file(payload: Any, folder: str | os.PathLike) -> str | None:
    """The real path of an uploaded file named by ``payload``, or None when the payload names no file.

    Parameters
    ----------
    payload : str, dict or None
        What the client sent for a file input: a path, or a file-data dict (``path``, ``url``, ``meta``, ...).
        ``None``, ``""`` and a dict without ``path`` or ``url`` mean "no file".
    folder : path
        The upload folder of this server; symlinks and ``..`` are resolved on both sides before comparing.

    Raises
    ------
    UploadRefused
        For a path outside ``folder`` (after resolving), a URL, or any other payload shape.
    """
    if payload is None or payload == "":
        return None
    if isinstance(payload, dict):
        path, url = payload.get("path"), payload.get("url")
        if not path and not url:
            return None
        if not path:  # a bare URL: this server never fetches files on a visitor's behalf
            raise UploadRefused()
        payload = path
    if not isinstance(payload, (str, os.PathLike)):
        raise UploadRefused()
    try:
        real = Path(os.path.realpath(os.fspath(payload)))
        root = Path(os.path.realpath(os.fspath(folder)))
    except (OSError, ValueError) as err:  # NUL bytes, over-long names: not a reference we accept
        raise UploadRefused() from err
    if real == root or not real.is_relative_to(root):
        raise UploadRefused()
    return str(real)


def uploaded_files(payloads: Any, folder: str | os.PathLike) -> list[str]:
    """:func:`uploaded_file` for each element of a list payload (``None`` is an empty list)."""
    if payloads is None:
        return []
    if not isinstance(payloads, (list, tuple)):
        raise UploadRefused()
    return [path for path in (uploaded_file(p, folder) for p in payloads) if path]

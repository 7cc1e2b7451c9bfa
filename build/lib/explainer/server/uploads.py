"""The one gate every file a visitor sends passes through: only files inside the server's upload folder.

A public app receives file *references* (``{"path": ...}`` payloads) as well as files. A web framework checks
that a referenced file was uploaded only for payloads shaped the way its own page sends them; a hand-made
payload can name any server path. So every event that takes a file asks :func:`uploaded_file` first, whatever
the payload's shape, and a refused reference always gets the same message, whatever is (or is not) at that path:
the answer must not tell an attacker whether ``/etc/shadow`` or a private key exists.

Each refusal is one line in the server's log (why, and the start of what was named), never a traceback: a probe
of a thousand paths is a thousand lines, not a megabyte.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from explainer.errors import ImageError

logger = logging.getLogger("gradcam_chat")

#: How much of a refused reference the log line quotes.
_LOGGED_CHARS = 120
#: The one message for every refused reference (it must not depend on what is at the path).
REFUSED = "That file did not come from an upload to this app, so I will not open it. Please upload the file itself."


class UploadRefused(ImageError):
    """A file reference that points outside the upload folder (or is not a file reference at all)."""

    def __init__(self, reason: str = "not a file reference", named: Any = None) -> None:
        super().__init__(REFUSED)
        log_refusal(reason, named)


def log_refusal(reason: str, named: Any = None) -> None:
    """The one log line of a refused file reference: why, and the start of what was named (``repr``: whatever the
    visitor sent stays on one line)."""
    logger.warning("refused a file reference (%s): %s", reason, repr(named)[:_LOGGED_CHARS])


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
            raise UploadRefused("a URL", url)
        payload = path
    if not isinstance(payload, (str, os.PathLike)):
        raise UploadRefused("not a path", payload)
    try:
        real = Path(os.path.realpath(os.fspath(payload)))
        root = Path(os.path.realpath(os.fspath(folder)))
    except (OSError, ValueError):  # NUL bytes, over-long names: not a reference we accept
        raise UploadRefused("an unusable path", payload) from None
    if real == root or not real.is_relative_to(root):
        raise UploadRefused("outside the upload folder", payload)
    return str(real)


def uploaded_files(payloads: Any, folder: str | os.PathLike) -> list[str]:
    """:func:`uploaded_file` for each element of a list payload (``None`` is an empty list)."""
    if payloads is None:
        return []
    if not isinstance(payloads, (list, tuple)):
        raise UploadRefused("not a list of files", payloads)
    return [path for path in (uploaded_file(p, folder) for p in payloads) if path]

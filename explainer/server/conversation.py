"""What a browser session holds and sees: its :class:`Visit`, and the chat messages its turns add (no Gradio here).

Replies of :class:`~explainer.chat.ChatSession` become message dicts of the Chatbot's "messages" format; pictures
become JPEG files in the server's upload folder, which the Gradio layer wraps as components
(:mod:`explainer.server.ui`).
"""

from __future__ import annotations

import hashlib
import html
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from explainer.chat import ChatSession, Reply
from explainer.inputs.dicom import is_dicom
from explainer.inputs.images import display_name
from explainer.prose import escape_markdown
from explainer.server.shelf import ModelMenu
from explainer.server.uploads import uploaded_files

#: How much of a user's message is echoed in the chat (the chat reads only the start anyway).
ECHO_CHARS = 2000
#: The longest pop-up message: every message quotes visitors' text briefly (prose.quote); this is the last guard.
POPUP_CHARS = 1200


@dataclass
class Visit:
    """One browser session: its conversation with the chat, its models, and the messages on screen."""

    chat: ChatSession
    menu: ModelMenu
    messages: list[dict] = field(default_factory=list)
    folded: int = 0  # earlier messages no longer on screen (see serving.fold)


def picture_file(image: np.ndarray, folder: str | Path) -> str:
    """``image`` as a JPEG file in ``folder``/pictures, named by its pixels (an answer shown again is not encoded
    again); returns its path.

    Written in the server's upload folder, Gradio serves it as is and counts it among the app's temporary files, so
    its cache sweep removes it like an upload: nothing accumulates in the working directory.

    JPEG at quality 92 without chroma subsampling: indistinguishable from the original on a heatmap overlay, and
    3–5 ms to write a 640×480 picture where PNG takes 30–50 ms, a cost every "why?" would pay. An RGBA picture (a
    cut-out on a transparent background) is a PNG.
    """
    pixels = np.ascontiguousarray(image, np.uint8)
    transparent = pixels.ndim == 3 and pixels.shape[2] == 4  # a cut-out: PNG keeps its alpha, JPEG has none
    digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
    path = Path(folder) / "pictures" / f"{digest}.{'png' if transparent else 'jpg'}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{threading.get_ident()}.part")
        if transparent:
            PILImage.fromarray(pixels, "RGBA").save(partial, format="png")
        else:
            PILImage.fromarray(pixels).save(partial, format="jpeg", quality=92, subsampling=0)
        partial.replace(path)  # atomic: a concurrent reader never sees half a file
    return str(path)


def reply_messages(reply: Reply, picture: Callable[[np.ndarray, str], Any]) -> list[dict]:
    """The bot's messages for ``reply``: its Markdown, then each picture (``picture(image, caption)`` makes the
    message content); the suggestions become buttons on the last message."""
    messages = [{"role": "assistant", "content": reply.markdown}]
    messages += [{"role": "assistant", "content": picture(image, caption)} for image, caption in reply.images]
    if reply.suggestions:
        messages[-1]["options"] = [{"value": text} for text in reply.suggestions]
    return messages


def user_messages(text: str, files: list[str]) -> list[dict]:
    """The user's turn as shown in the chat: uploads first, then the text exactly as typed (escaped).

    A DICOM file is not shown back as a file: its name is often the patient's, and a browser cannot preview it.
    """
    messages = [{"role": "user", "content": f"📎 {display_name(path)}" if is_dicom(path) else {"path": path}}
                for path in files]
    if text.strip():
        messages.append({"role": "user", "content": str(escape_markdown(text, ECHO_CHARS))})
    return messages


def message_parts(message: Any, upload_folder: str) -> tuple[str, list[str]]:
    """(text, uploaded file paths) of a raw MultimodalTextbox payload (``None`` or partial payloads are fine).

    Raises :class:`~explainer.server.uploads.UploadRefused` when a file reference points outside ``upload_folder``.
    """
    message = message if isinstance(message, dict) else {}
    text = message.get("text")
    return (text if isinstance(text, str) else ""), uploaded_files(message.get("files"), upload_folder)


def without_options(messages: list[dict]) -> list[dict]:
    """Earlier suggestions disappear when the conversation moves on (only the latest answer offers buttons)."""
    return [{k: v for k, v in message.items() if k != "options"} for message in messages]


def popup(text: object) -> str:
    """``text`` as a pop-up shows it: HTML-escaped (Gradio renders a pop-up's text as HTML, so a visitor's
    ``<img src=...>`` quoted in an error would load), and at most :data:`POPUP_CHARS` characters."""
    text = str(text)
    text = text if len(text) <= POPUP_CHARS else text[: POPUP_CHARS - 1] + "…"
    return html.escape(text, quote=False)

"""Helpers for the end-to-end tests: launch the real app on a free port, and read the chat's messages."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from explainer.demo.generate import draw_plain_shape

MODEL = "shapes"  # the bundled demo model: offline, fast, and its answers are known


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_app(model: str = MODEL, **env: str) -> Iterator[tuple[str, app.ChatApp]]:
    """Build the app with ``model`` as the default (and ``env`` as environment variables, e.g. limits), serve it on
    a free local port, yield (URL, app), close it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EXPLAINER_MODEL", model)
        for name, value in env.items():
            patch.setenv(name, value)
        chat_app = app.ChatApp()
    demo = chat_app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield demo.local_url.rstrip("/"), chat_app
    finally:
        demo.close()


@contextlib.contextmanager
def upload_dir() -> Iterator[Path]:
    """A fresh folder inside the server's upload folder: files there count as uploaded to the app under test."""
    folder = Path(tempfile.mkdtemp(prefix="test-", dir=_upload_root()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _upload_root() -> str:
    import gradio as gr

    root = gr.utils.get_upload_folder()
    os.makedirs(root, exist_ok=True)
    return root


def shape_png(folder, shape: str, size: tuple[int, int] = (160, 200), name: str | None = None) -> str:
    """A dark ``shape`` on a light background, height × width = ``size``, saved as PNG; returns the path."""
    image, _mask = draw_plain_shape(shape, height=size[0], width=size[1])
    path = folder / (name or f"{shape}.png")
    Image.fromarray(image).save(path)
    return str(path)


# ------------------------------------------------------------------------------------------- chat messages


def plain(markdown: str) -> str:
    """Markdown without backslash escapes and emphasis marks, for matching words and numbers."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("**", "").replace("_", " ")


def last_turn(messages: list[dict]) -> list[dict]:
    """The bot's messages after the last user message."""
    at = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    return messages[at + 1:]


def bot_turns(messages: list[dict]) -> list[list[dict]]:
    """The bot's answers, each the list of its messages between two user turns."""
    turns: list[list[dict]] = []
    for before, message in zip([None, *messages], messages, strict=False):
        if message["role"] == "assistant":
            if before is None or before["role"] == "user":
                turns.append([])
            turns[-1].append(message)
    return turns


def texts(messages: list[dict]) -> str:
    """All text of ``messages``, escapes removed, one message a line."""
    parts = [c["text"] for m in messages for c in m["content"] if c.get("type") == "text"]
    return "\n".join(plain(part) for part in parts)


def pictures(messages: list[dict]) -> list[dict]:
    """The image components of ``messages``: dicts with ``url`` (of the PNG) and ``label`` (the caption)."""
    found = []
    for message in messages:
        for content in message["content"]:
            if content.get("type") == "component" and content.get("component") == "image":
                found.append({"url": content["value"]["url"], "label": content["constructor_args"].get("label")})
    return found


def options(messages: list[dict]) -> list[str]:
    """The suggested follow-up questions offered as buttons under ``messages``."""
    return [option["value"] for m in messages for option in (m.get("options") or [])]


def percentages(text: str) -> list[float]:
    """Every "12 %" or "12.5 %" in ``text``, as numbers."""
    return [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)\s?%", text)]


def fetch_image(url: str) -> np.ndarray:
    """Download a picture the server returned and decode it (RGB uint8)."""
    import io

    import httpx

    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))

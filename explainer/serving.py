"""Serving the chat to the public: the server's limits, a bound on each client's queued requests, and the small
pieces of turning answers into what a chat page shows (folding old turns, a painted region as a mask).

No web framework is imported here: the app (``app.py``) hands in its queue and its messages as plain objects, so all
of it is testable without a server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .chat import render


@dataclass(frozen=True)
class ServerLimits:
    """What one visitor may hold of a public server; each is an environment variable (see the README).

    Attributes
    ----------
    uploaded_models : int
        Uploaded models in memory for all visitors together (``EXPLAINER_MAX_UPLOADED_MODELS``); the least
        recently used is unloaded first, and its visitor is told.
    session_seconds : float
        A session idle this long is forgotten, its uploaded model freed (``EXPLAINER_SESSION_TTL``).
    turn_seconds : float
        Time budget of one answer (``EXPLAINER_TURN_SECONDS``): slow methods whose estimate exceeds it are refused
        up front, and work still running when it ends is stopped between batches.
    queued_per_session, queued_per_client : int
        Unfinished requests one session (``EXPLAINER_QUEUE_PER_SESSION``) and one client address
        (``EXPLAINER_QUEUE_PER_CLIENT``; a classroom behind one router shares it) may hold in the queue; more are
        refused at once, so nobody can fill the queue with requests they never read.
    shown_messages : int
        Messages kept on screen (``EXPLAINER_SHOWN_MESSAGES``); older turns fold into one note, so a turn costs the
        same at the 150th question as at the 10th.
    audit_images : int
        Most images of one audit in the Audit tab (``EXPLAINER_AUDIT_MAX_IMAGES``); the zip may unpack to 512 MB.
    download_mb : int
        Most megabytes a Hugging Face model a visitor names may download (``EXPLAINER_MAX_DOWNLOAD_MB``), asked of
        the Hub before downloading.
    """

    uploaded_models: int = 4
    session_seconds: float = 3600.0
    turn_seconds: float = 20.0
    queued_per_session: int = 3
    queued_per_client: int = 24
    shown_messages: int = 36
    audit_images: int = 500
    download_mb: int = 2048

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServerLimits:
        """The limits, with any of them overridden by its environment variable (a bad value is a clear error)."""
        names = {"uploaded_models": "EXPLAINER_MAX_UPLOADED_MODELS", "session_seconds": "EXPLAINER_SESSION_TTL",
                 "turn_seconds": "EXPLAINER_TURN_SECONDS", "queued_per_session": "EXPLAINER_QUEUE_PER_SESSION",
                 "queued_per_client": "EXPLAINER_QUEUE_PER_CLIENT", "shown_messages": "EXPLAINER_SHOWN_MESSAGES",
                 "audit_images": "EXPLAINER_AUDIT_MAX_IMAGES", "download_mb": "EXPLAINER_MAX_DOWNLOAD_MB"}
        values = {}
        for field_name, variable in names.items():
            if environ.get(variable, "").strip():
                kind = type(getattr(cls, field_name))
                try:
                    values[field_name] = kind(environ[variable])
                except ValueError:
                    raise ValueError(f"{variable} must be a number, not {environ[variable]!r}.") from None
                if values[field_name] <= 0:
                    raise ValueError(f"{variable} must be positive, not {environ[variable]!r}.")
        return cls(**values)


class QueueGuard:
    """Bounds the unfinished requests one session and one client address may hold in Gradio's queue.

    Gradio has one global queue size; a single client could fill it with requests it never reads. This wraps the
    queue's ``push`` (the one place every queued request enters, from the page or any API client) and refuses a
    request over either bound with "queue full", before it is queued. A request counts until its result has been
    delivered (or its client disconnected, when Gradio drops it).
    """

    def __init__(self, per_session: int, per_client: int):
        self.per_session = per_session
        self.per_client = per_client
        self._clients: dict[str, str] = {}  # event id -> client address, for requests still unfinished

    def install(self, queue: Any) -> None:
        push = queue.push

        async def guarded_push(body: Any, request: Any, username: Any = None) -> tuple:
            client = getattr(getattr(request, "client", None), "host", None) or "?"
            refusal = self.refusal(queue, getattr(body, "session_hash", None), client)
            if refusal:
                return False, refusal, "queue_full"
            accepted, event_id, state = await push(body=body, request=request, username=username)
            if accepted:
                self._clients[event_id] = client
            return accepted, event_id, state

        queue.push = guarded_push

    def refusal(self, queue: Any, session: str | None, client: str) -> str | None:
        """Why a new request of ``session`` from ``client`` is refused, or None when it may queue."""
        pending = queue.pending_event_ids_session
        unfinished = set().union(*pending.values()) if pending else set()
        for event_id in [e for e in self._clients if e not in unfinished]:
            del self._clients[event_id]
        if session is not None and len(pending.get(session, ())) >= self.per_session:
            return (f"You already have {self.per_session} questions waiting; please wait for their answers "
                    "before asking more.")
        if sum(host == client for host in self._clients.values()) >= self.per_client:
            return "Too many questions are waiting from your network; please try again in a moment."
        return None


def fold(messages: list[dict], limit: int, folded: int = 0) -> tuple[list[dict], int]:
    """At most about ``limit`` messages on screen: older turns fold into one note, so every turn costs the same.

    Each turn sends the whole conversation back to the page; without a cap the 150th turn would carry 150 turns.
    ``messages`` starts with the note when ``folded`` (messages folded so far) is not zero. The cut falls where a
    user's turn starts, so no answer is shown without its question. Returns the messages and the new count.
    """
    if folded:
        messages = messages[1:]
    if len(messages) > limit:
        starts = [i for i, m in enumerate(messages) if m["role"] == "user" and i >= len(messages) - limit]
        cut = starts[0] if starts else len(messages) - limit
        messages, folded = messages[cut:], folded + cut
    if not folded:
        return messages, 0
    return [{"role": "assistant", "content": render("folded", hidden=folded)}, *messages], folded


def painted_mask(editor: Any) -> np.ndarray | None:
    """What the visitor painted on the ImageEditor (its layers' opaque pixels), or None when nothing was painted."""
    if not isinstance(editor, dict):
        return None
    layers = [layer for layer in editor.get("layers") or [] if isinstance(layer, np.ndarray) and layer.ndim == 3]
    if not layers or layers[0].shape[-1] != 4:
        return None
    painted = np.any(np.stack([layer[..., 3] > 0 for layer in layers if layer.shape == layers[0].shape]), axis=0)
    return painted if painted.any() else None

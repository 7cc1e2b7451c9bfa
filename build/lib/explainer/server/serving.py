"""Serving the chat to the public: the server's limits, a bound on each client's queued requests, and the small
pieces of turning answers into what a chat page shows (folding old turns, a painted region as a mask).

No web framework is imported here: the app (``app.py``) hands in its queue and its messages as plain objects, so all
of it is testable without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from explainer import config
from explainer.errors import ImageError
from explainer.inputs.images import alpha_mask, charge, open_image
from explainer.prose import render
from explainer.server.gradio_internals import GradioQueue, id_of_event, stateful
from explainer.server.uploads import UploadRefused, uploaded_file

#: How messages call a layer of the "Where should it look?" painting.
PAINTED_LAYER = "The painted layer"

logger = logging.getLogger("gradcam_chat")


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
        refused at once, so nobody can fill the queue.
    unread_seconds : float
        A request whose answer nobody is listening for (no open ``/queue/data`` or ``/call`` stream) this long is
        cancelled and stops counting against those bounds (``EXPLAINER_UNREAD_SECONDS``).
    trusted_proxies : str
        Comma-separated addresses or networks of the operator's reverse proxies (``EXPLAINER_TRUSTED_PROXIES``):
        only a connection from one of them may name the client in ``X-Forwarded-For``. Empty (the default): the
        client's address is the connection's.
    shown_messages : int
        Messages kept on screen (``EXPLAINER_SHOWN_MESSAGES``); older turns fold into one note, so a turn costs the
        same at the 150th question as at the 10th.
    audit_images : int
        Most images of one audit in the Audit tab (``EXPLAINER_AUDIT_MAX_IMAGES``); the zip may unpack to 512 MB.
    download_mb : int
        Most megabytes a Hugging Face model a visitor names may download (``EXPLAINER_MAX_DOWNLOAD_MB``), asked of
        the Hub before downloading.
    image_pixels, request_pixels : int
        The pixel budget, counted from each image file's header before it is decoded: most pixels of one image, DICOM
        frame or painted layer (``EXPLAINER_MAX_IMAGE_PIXELS``), and most pixels one request decodes in all, its
        uploads or its painted layers together (``EXPLAINER_MAX_REQUEST_PIXELS``).
    painted_layers : int
        Most layers of a "Where should it look?" painting (``EXPLAINER_MAX_PAINTED_LAYERS``).
    audit_pixels : int
        Most pixels the images and masks of one audit zip may hold in all (``EXPLAINER_AUDIT_MAX_PIXELS``), read
        from their headers before anything is decoded.
    audit_seconds : float
        Time limit of one audit (``EXPLAINER_AUDIT_SECONDS``): no batch of images starts after it, and the report
        covers the images explained by then, saying so.
    """

    uploaded_models: int = config.default("EXPLAINER_MAX_UPLOADED_MODELS")
    session_seconds: float = config.default("EXPLAINER_SESSION_TTL")
    turn_seconds: float = config.default("EXPLAINER_TURN_SECONDS")
    queued_per_session: int = config.default("EXPLAINER_QUEUE_PER_SESSION")
    queued_per_client: int = config.default("EXPLAINER_QUEUE_PER_CLIENT")
    unread_seconds: float = config.default("EXPLAINER_UNREAD_SECONDS")
    trusted_proxies: str = config.default("EXPLAINER_TRUSTED_PROXIES")
    shown_messages: int = config.default("EXPLAINER_SHOWN_MESSAGES")
    audit_images: int = config.default("EXPLAINER_AUDIT_MAX_IMAGES")
    download_mb: int = config.default("EXPLAINER_MAX_DOWNLOAD_MB")
    image_pixels: int = config.default("EXPLAINER_MAX_IMAGE_PIXELS")
    request_pixels: int = config.default("EXPLAINER_MAX_REQUEST_PIXELS")
    painted_layers: int = config.default("EXPLAINER_MAX_PAINTED_LAYERS")
    audit_pixels: int = config.default("EXPLAINER_AUDIT_MAX_PIXELS")
    audit_seconds: float = config.default("EXPLAINER_AUDIT_SECONDS")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerLimits:
        """The limits, each overridden by its environment variable when set (``environ``: default ``os.environ``).

        Raises
        ------
        ConfigError
            When a variable holds a value it does not take (its message names the variable and the value).
        """
        return cls(**{field: config.setting(variable, environ) for field, variable in LIMIT_VARIABLES.items()})


#: The environment variable of each field of :class:`ServerLimits` (parsed and documented in :mod:`explainer.config`).
LIMIT_VARIABLES = {
    "uploaded_models": "EXPLAINER_MAX_UPLOADED_MODELS",
    "session_seconds": "EXPLAINER_SESSION_TTL",
    "turn_seconds": "EXPLAINER_TURN_SECONDS",
    "queued_per_session": "EXPLAINER_QUEUE_PER_SESSION",
    "queued_per_client": "EXPLAINER_QUEUE_PER_CLIENT",
    "unread_seconds": "EXPLAINER_UNREAD_SECONDS",
    "trusted_proxies": "EXPLAINER_TRUSTED_PROXIES",
    "shown_messages": "EXPLAINER_SHOWN_MESSAGES",
    "audit_images": "EXPLAINER_AUDIT_MAX_IMAGES",
    "download_mb": "EXPLAINER_MAX_DOWNLOAD_MB",
    "image_pixels": "EXPLAINER_MAX_IMAGE_PIXELS",
    "request_pixels": "EXPLAINER_MAX_REQUEST_PIXELS",
    "painted_layers": "EXPLAINER_MAX_PAINTED_LAYERS",
    "audit_pixels": "EXPLAINER_AUDIT_MAX_PIXELS",
    "audit_seconds": "EXPLAINER_AUDIT_SECONDS",
}


@contextlib.contextmanager
def forwarded_allow_ips(trusted: str) -> Iterator[None]:
    """While the server starts: uvicorn trusts ``X-Forwarded-For`` only from ``trusted`` (empty: from nobody).

    Uvicorn's own default trusts 127.0.0.1, so a client on the same machine, or behind a local proxy that does not
    overwrite the header, could name any address and escape the per-client bound. Uvicorn reads the variable
    ``FORWARDED_ALLOW_IPS`` when its server is configured (inside Gradio's ``launch``), so it is set only then.
    """
    with config.exported("FORWARDED_ALLOW_IPS", trusted):
        yield


@dataclass
class _Request:
    """A request in Gradio's queue whose answer has not been delivered yet."""

    session: str
    client: str
    since: float  # when it joined (monotonic seconds)
    turn: float  # its place in the order (see QueueGuard._turn)


class QueueGuard:
    """Bounds what one session and one client address hold in Gradio's queue, and serves visitors in turn.

    Gradio has one global queue size; a single client could fill it. This wraps three points of Gradio's queue:

    - ``push`` (where every queued request enters, from the page or any API client): a request over the session's
      or the client address's bound is refused with "queue full" before it is queued. A request counts until its
      answer has been delivered.
    - Listening: Gradio delivers answers over a stream the client opens (``/queue/data``, or ``/call/<api>/<id>``)
      and forgets a request only once its answer was read there. A request whose session has had no open stream for
      ``unread_seconds`` is cancelled (taken out of the queue, or stopped when running) and stops counting: joined
      requests nobody reads cannot lock an address out. :meth:`middleware` counts the open streams.
    - ``get_events`` (which request a free worker takes): sessions take turns (start-time fair queuing, each
      request counting one turn). A session's requests are numbered on from its last one, and never from behind
      the request a worker took last; the lowest number goes first, the oldest among equals. One visitor's burst of
      slow questions then takes one worker at a time from the others: another visitor's quick question waits for
      at most one slow answer to end. A newcomer never jumps ahead of what was already due, so nobody starves.
      An event with a per-session state input (the chat's turn) waits while the same session runs one: the two
      would take turns on the session's lock anyway, and the second would hold a worker doing nothing.
    """

    def __init__(self, per_session: int, per_client: int, unread_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.per_session = per_session
        self.per_client = per_client
        self.unread_seconds = unread_seconds
        self.clock = clock
        self.queue: GradioQueue | None = None
        self._requests: dict[str, _Request] = {}  # event id -> its request, until its answer is delivered
        self._listening: Counter[str] = Counter()  # session -> open answer streams
        self._heard: dict[str, float] = {}  # session -> when its last answer stream closed
        self._turns: OrderedDict[str, float] = OrderedDict()  # session -> the turn of its latest request
        self._now_serving = 0.0  # the turn of the request a worker took last
        self._sweeper: asyncio.Task | None = None
        self._tracking = False  # whether the middleware counts the streams (else nothing is ever cancelled)

    def install(self, queue: GradioQueue) -> None:
        """Wrap ``push`` (the bounds) and ``get_events`` (the order) of Gradio's queue."""
        self.queue = queue

        def guarded(push: Callable) -> Callable:
            async def guarded_push(body: Any, request: Any, username: Any = None) -> tuple:
                self._keep_sweeping()
                await self.sweep()
                client = getattr(getattr(request, "client", None), "host", None) or "?"
                refusal = self.refusal(queue, getattr(body, "session_hash", None), client)
                if refusal:
                    return False, refusal, "queue_full"
                accepted, event_id, state = await push(body=body, request=request, username=username)
                if accepted:  # the queue has now named the session (an API call without one gets its event id)
                    session = str(body.session_hash or event_id)
                    self._requests[event_id] = _Request(session, client, self.clock(), self._next_turn(session))
                return accepted, event_id, state
            return guarded_push

        def fair(get_events: Callable) -> Callable:
            def fair_get_events() -> Any:
                busy = {e.session_hash for e in queue.running() if stateful(e)}
                lists = queue.waiting_lists()
                everything = [list(waiting) for waiting in lists]
                for waiting in lists:  # in turn order, without the stateful events of sessions running one
                    waiting[:] = sorted((e for e in waiting if not (stateful(e) and e.session_hash in busy)),
                                        key=self._turn)
                try:
                    taken = get_events()
                finally:  # the events sitting out go back, in turn order
                    gone = {id(e) for e in (taken[0] if taken else ())}
                    for waiting, before in zip(lists, everything, strict=True):
                        waiting[:] = sorted((e for e in before if id(e) not in gone), key=self._turn)
                for event in (taken[0] if taken else ()):
                    self._now_serving = max(self._now_serving, self._turn(event)[0])
                return taken
            return fair_get_events

        queue.wrap(push=guarded, get_events=fair)

    def refusal(self, queue: GradioQueue, session: str | None, client: str) -> str | None:
        """Why a new request of ``session`` from ``client`` is refused, or None when it may queue."""
        pending = queue.pending()
        self._forget_delivered(pending)
        if session is not None and len(pending.get(session, ())) >= self.per_session:
            return (f"You already have {self.per_session} questions waiting; please wait for their answers "
                    "before asking more.")
        if sum(r.client == client for r in self._requests.values()) >= self.per_client:
            return "Too many questions are waiting from your network; please try again in a moment."
        return None

    # ------------------------------------------------------------------------------------------ unread answers

    def listened_session(self, scope: Mapping[str, Any]) -> str | None:
        """The session whose answers the HTTP request ``scope`` streams, or None for any other request."""
        if scope.get("type") != "http" or scope.get("method") != "GET":
            return None
        path = str(scope.get("path", ""))
        if path.endswith("/queue/data"):
            query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
            return (query.get("session_hash") or [None])[0]
        call = _CALL_STREAM.search(path)
        if call:
            request = self._requests.get(call["event"])
            return request.session if request else call["event"]
        return None

    def middleware(self, app: Callable) -> Callable:
        """An ASGI middleware around ``app`` counting the open answer streams of each session.

        Unread requests are cancelled only once this middleware is in place: without it every request would look
        unread.
        """
        self._tracking = True

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            session = self.listened_session(scope)
            if session is None:
                return await app(scope, receive, send)
            self._listening[session] += 1
            try:
                await app(scope, receive, send)
            finally:
                self._listening[session] -= 1
                if self._listening[session] <= 0:
                    del self._listening[session]
                    self._heard[session] = self.clock()

        return counted

    async def sweep(self) -> int:
        """Cancel the requests nobody has listened to for ``unread_seconds``; returns how many."""
        queue = self.queue
        if queue is None or not self._tracking:
            return 0
        self._forget_delivered(queue.pending())
        now = self.clock()
        unread = [(event_id, r) for event_id, r in self._requests.items() if not self._listening[r.session]
                  and now - max(r.since, self._heard.get(r.session, r.since)) >= self.unread_seconds]
        for event_id, request in unread:
            await self._cancel(event_id, request)
        if unread:
            logger.info("cancelled %d requests nobody read for %.0f s", len(unread), self.unread_seconds)
        return len(unread)

    async def _cancel(self, event_id: str, request: _Request) -> None:
        # Nothing of the session left to deliver drops its undelivered messages too: a running answer sees its
        # visitor gone (the app's deadline check) and stops between batches.
        del self._requests[event_id]
        await self.queue.cancel(event_id, request.session)

    def _forget_delivered(self, pending: Mapping[str, set]) -> None:
        for event_id in [e for e, r in self._requests.items() if e not in pending.get(r.session, ())]:
            del self._requests[event_id]
        sessions = {r.session for r in self._requests.values()}
        for session in [s for s in self._heard if s not in sessions]:
            del self._heard[session]

    def _keep_sweeping(self) -> None:
        """Sweep once a second while the server runs, so unread requests are cancelled before a worker takes them."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while self.queue is not None and not self.queue.stopped:
            await asyncio.sleep(min(1.0, self.unread_seconds / 2))
            try:
                await self.sweep()
            except Exception:  # never let the sweeper die: the bounds depend on it
                logger.exception("sweeping unread requests failed")

    # ------------------------------------------------------------------------------------------------ order

    def _next_turn(self, session: str) -> float:
        """The turn of a new request of ``session``: one after its previous one, never behind the one now served."""
        turn = max(self._now_serving, self._turns.get(session, float("-inf")) + 1)
        self._turns[session] = turn
        self._turns.move_to_end(session)
        while len(self._turns) > _TURNS_MEMORY:
            self._turns.popitem(last=False)
        return turn

    def _turn(self, event: Any) -> tuple[float, float]:
        """Sort key of a waiting request: its turn, then its arrival."""
        request = self._requests.get(id_of_event(event))
        return (request.turn if request else self._now_serving), getattr(event, "enqueue_time", 0.0)


#: ``/call/<api>/<event id>`` (and ``/call/v2/...``): the stream of one API call's answer.
_CALL_STREAM = re.compile(r"/call/(?:v2/)?[^/]+/(?P<event>[0-9a-f]{32})/?$")
#: Sessions whose latest turn is remembered for the order (the least recent are forgotten first).
_TURNS_MEMORY = 10_000


class McpRequestLimit:
    """ASGI middleware: an MCP tool call over the MCP library's request limit gets a tool error the assistant reads.

    The MCP library answers a request body over its limit (4 MiB) with HTTP 413, and MCP clients then drop their
    session; a picture of about 3 MB sent as a ``data:`` URL is enough. This middleware stands in front of the MCP
    endpoint: a body declared (``Content-Length``) or found larger than ``limit`` is read through without being kept
    (only its first and last ``_EDGE`` bytes, where the JSON-RPC id and method are), and a ``tools/call`` is answered
    with a tool result marked as an error that says the limit. Anything else over the limit still gets 413, and a
    body over ``drain_limit`` is not read to its end.
    """

    def __init__(self, app: Callable, limit: int, message: str | None = None, drain_limit: int = 64 * 2**20):
        self.app = app
        self.limit = limit
        self.message = message or mcp_limit_message(limit)
        self.drain_limit = drain_limit

    async def __call__(self, scope: Any, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or not _MCP_PATH.search(scope.get("path", "")):
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared <= self.limit:
            return await self.app(scope, receive, send)  # the common case: untouched, nothing buffered
        kept, head, tail, size, complete = [], b"", b"", 0, False
        while size <= self.drain_limit:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.limit:
                kept.append(message)
            else:
                if kept:  # the body turned out too large: keep only its ends from now on
                    head, kept = b"".join(m.get("body", b"") for m in kept)[:_EDGE], []
                head = head if len(head) >= _EDGE else (head + chunk)[:_EDGE]
                tail = (tail + chunk)[-_EDGE:]
            if not message.get("more_body", False):
                complete = True
                break
        if size <= self.limit:
            return await self.app(scope, _replay(kept, receive), send)
        request_id = jsonrpc_id(head, tail) if complete else None
        if request_id is None or not _TOOL_CALL.search(head + b" " + tail):
            return await _respond(send, 413, b"text/plain", b"Request body too large")
        result = {"content": [{"type": "text", "text": self.message}], "isError": True}
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()
        await _respond(send, 200, b"application/json", body)


def mcp_limit_message(limit: int) -> str:
    """The tool error for an MCP request over ``limit`` bytes: the limit, the image size it allows, what to do."""
    image_mb = limit * 3 / 4 / 1e6  # a data URL is base64: 4 characters for every 3 bytes
    return (f"The image is too large for this tool: an MCP request may be at most {limit / 2**20:g} MiB, which "
            f"holds an image of about {image_mb:.0f} MB as a data URL. Please send a smaller image (for example "
            "resized to at most 2000 pixels on its longer side, or saved as JPEG) and ask again.")


def jsonrpc_id(head: bytes, tail: bytes) -> int | str | None:
    """The ``id`` of a JSON-RPC request of which only the first (``head``) and last (``tail``) bytes are known.

    Clients write ``id`` either before ``params`` (found by walking the head's top-level keys) or as the last key
    (found at the very end of the tail). None when neither holds a plain number or string id.
    """
    text = head.decode("utf-8", "replace")
    decoder, depth, at = json.JSONDecoder(), 0, 0
    while at < len(text):
        char = text[at]
        if char == '"':
            try:
                key, at = decoder.raw_decode(text, at)
            except ValueError:
                break  # a string running past the head: params, presumably
            rest = text[at:].lstrip()
            if depth == 1 and key == "id" and rest.startswith(":"):
                with contextlib.suppress(ValueError):
                    value, _end = decoder.raw_decode(rest[1:].lstrip())
                    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None
            continue
        depth += 1 if char in "{[" else -1 if char in "}]" else 0
        at += 1
    last = _LAST_ID.search(tail.decode("utf-8", "replace"))
    if last:
        return json.loads(last["id"])
    return None


def _content_length(scope: Mapping[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def _replay(messages: list[dict], receive: Callable) -> Callable:
    """A ``receive`` that gives back ``messages`` first (the body already read), then the real one."""
    pending = list(messages)

    async def replayed() -> dict:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _respond(send: Callable, status: int, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: The MCP library's streamable HTTP endpoint under Gradio (``/gradio_api/mcp`` and ``/gradio_api/mcp/http``).
_MCP_PATH = re.compile(r"/gradio_api/mcp(?:/http)?/?$")
_TOOL_CALL = re.compile(rb'"method"\s*:\s*"tools/call"')
_LAST_ID = re.compile(r'"id"\s*:\s*(?P<id>-?\d+|"(?:[^"\\]|\\.){0,200}")\s*\}\s*$')
#: Bytes kept of each end of an over-large MCP request: where its id and method are.
_EDGE = 64 * 1024


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


def painted_mask(editor: Any, folder: str | os.PathLike | None = None, max_layers: int = 4) -> np.ndarray | None:
    """What the visitor painted on the ImageEditor (its layers' opaque pixels), or None when nothing was painted.

    Parameters
    ----------
    editor : dict
        The editor's raw value: ``layers`` is a list of RGBA arrays, or of file payloads (the page uploads each
        layer as a PNG) that must lie in ``folder``. Each layer file is counted against the pixel budget
        (:func:`explainer.inputs.images.pixel_budget`) from its header, before it is decoded, and only its alpha channel
        is kept: a 150 KB PNG declaring 12000×12000 pixels is refused in milliseconds.
    folder : path, optional
        The server's upload folder (required for file payloads).
    max_layers : int
        The most layers taken (``EXPLAINER_MAX_PAINTED_LAYERS``); more are refused before any is opened.

    Raises
    ------
    ImageError
        Too many layers, a layer over the pixel budget or unreadable, or a file reference outside ``folder``.
    """
    layers = editor.get("layers") if isinstance(editor, dict) else None
    if not isinstance(layers, list) or not layers:
        return None
    if len(layers) > max_layers:
        raise ImageError(f"The painting has {len(layers)} layers; this server takes at most {max_layers}. Paint the "
                         "region on one layer.")
    painted: np.ndarray | None = None
    for layer in layers:
        alpha = _layer_alpha(layer, folder)
        if alpha is not None and (painted is None or alpha.shape == painted.shape):
            painted = alpha if painted is None else painted | alpha
    return painted if painted is not None and painted.any() else None


def _layer_alpha(layer: Any, folder: str | os.PathLike | None) -> np.ndarray | None:
    """Where one layer is opaque (bool H×W), or None for a layer without transparency (not a brush layer)."""
    if isinstance(layer, np.ndarray):
        if layer.ndim != 3 or layer.shape[-1] != 4:
            return None
        charge((layer.shape[1], layer.shape[0]), PAINTED_LAYER)
        return alpha_mask(layer[..., 3])
    if folder is None:
        raise UploadRefused()
    path = uploaded_file(layer, folder)
    if path is None:
        return None
    with open_image(path, PAINTED_LAYER) as img:
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("PA")  # a palette with a transparent entry: one byte of alpha per pixel
        if "A" not in img.getbands():
            return None
        try:
            return alpha_mask(np.asarray(img.getchannel("A")))
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"{PAINTED_LAYER} looks damaged or truncated and cannot be decoded.") from err

"""Every private part of Gradio the server relies on, in one place (Gradio 6).

Gradio has no public API for what a public server needs from its queue: bounding what one visitor holds in it,
serving visitors in turn, cancelling answers nobody reads, and telling a worker its visitor has left. This module
wraps the queue's internals (``Blocks._queue``, its ``push``/``get_events``, its per-session bookkeeping), the MCP
server's tool table and ``Blocks.preprocess_data``; nothing else in the project touches them. The attributes are
checked when the app starts (:meth:`GradioQueue.of`), and ``tests/test_gradio_internals.py`` fails with the name of
whatever an upgrade removed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

#: What the server uses of Gradio's queue (``gradio.queueing.Queue``), each standing in for a missing public API.
QUEUE_ATTRIBUTES = (
    "push",  # where every request enters: the per-session and per-client bounds refuse here
    "get_events",  # where a free worker takes its next events: the fair order is applied here
    "active_jobs",  # the events running now: a session with a stateful event running waits its turn
    "event_queue_per_concurrency_id",  # the waiting events, one list per concurrency id
    "pending_event_ids_session",  # session -> ids of its undelivered requests
    "pending_messages_per_session",  # session -> its message stream (gone when the visitor disconnects)
    "event_ids_to_events",  # id -> event, to cancel one
    "remove_from_queue",  # a waiting event never runs
    "stopped",  # the queue was closed
)


class GradioInternalsMissing(RuntimeError):
    """The installed Gradio lacks a private attribute this server relies on (see :data:`QUEUE_ATTRIBUTES`)."""


class GradioQueue:
    """A Gradio queue, seen through the few operations the server's guards need."""

    def __init__(self, queue: Any):
        missing = [name for name in QUEUE_ATTRIBUTES if not hasattr(queue, name)]
        if missing:
            raise GradioInternalsMissing(f"Gradio's queue has no {', '.join(missing)}: this Gradio version is not "
                                         "supported (see explainer/server/gradio_internals.py).")
        self.raw = queue

    @classmethod
    def of(cls, demo: Any) -> GradioQueue:
        """The queue of a ``gr.Blocks`` after ``demo.queue()``."""
        queue = getattr(demo, "_queue", None)
        if queue is None:
            raise GradioInternalsMissing("gr.Blocks has no _queue: this Gradio version is not supported.")
        return cls(queue)

    def wrap(self, push: Callable[[Callable], Callable], get_events: Callable[[Callable], Callable]) -> None:
        """Replace ``push`` and ``get_events`` by ``push(original)`` and ``get_events(original)``."""
        self.raw.push, self.raw.get_events = push(self.raw.push), get_events(self.raw.get_events)

    @property
    def stopped(self) -> bool:
        return bool(getattr(self.raw, "stopped", True))

    def pending(self) -> MutableMapping[str, set]:
        """Session -> ids of its requests not yet delivered."""
        return self.raw.pending_event_ids_session

    def listening(self, session: str) -> bool:
        """Whether the visitor of ``session`` still has its message stream (Gradio drops it on disconnect)."""
        return session in self.raw.pending_messages_per_session

    def running(self) -> Iterable[Any]:
        """The events workers are running now."""
        return [event for job in self.raw.active_jobs if job for event in job]

    def waiting_lists(self) -> list[list]:
        """The waiting events, one list per concurrency id, to be reordered in place."""
        return [event_queue.queue for event_queue in self.raw.event_queue_per_concurrency_id.values()]

    async def cancel(self, event_id: str, session: str) -> None:
        """Stop ``event_id``: a running one sends nothing more, a waiting one never runs. When nothing of
        ``session`` is left to deliver, its undelivered messages go too."""
        event = self.raw.event_ids_to_events.get(event_id)
        if event is not None:
            event.alive = False
            await self.raw.remove_from_queue(event_id)
        pending = self.raw.pending_event_ids_session.get(session)
        if pending is not None:
            pending.discard(event_id)
            if not pending:
                self.raw.pending_event_ids_session.pop(session, None)
                self.raw.pending_messages_per_session.pop(session, None)


def id_of_event(event: Any) -> str:
    """A queued event's id (``Event._id``)."""
    return event._id


def stateful(event: Any) -> bool:
    """Whether ``event``'s function takes a per-session state (``gr.State`` inputs are ``stateful`` blocks)."""
    return any(getattr(block, "stateful", False) for block in getattr(event.fn, "inputs", ()))


def keep_mcp_tools(demo: Any, endpoints: set[str]) -> None:
    """Let the MCP server (``Blocks.mcp_server_obj``, set by ``launch(mcp_server=True)``) offer only the tools of
    ``endpoints``: Gradio has no per-event switch for MCP, only for the API."""
    server = getattr(demo, "mcp_server_obj", None)
    if server is not None:
        server.tool_to_endpoint = {tool: api for tool, api in server.tool_to_endpoint.items() if api in endpoints}


def wrap_preprocess(demo: Any, wrapper: Callable[[Callable[..., Awaitable]], Callable[..., Awaitable]]) -> None:
    """Replace ``Blocks.preprocess_data`` (where Gradio checks every payload before an event runs) by
    ``wrapper(original)``: the only place to answer Gradio's own refusals of a payload in the app's words."""
    demo.preprocess_data = wrapper(demo.preprocess_data)

"""The private parts of Gradio the server relies on (explainer/server/gradio_internals.py), on a real Blocks.

A Gradio upgrade that renames or removes one of them fails here, by name, instead of silently switching off the
public server's queue bounds, fair order or cancelling of unread answers.
"""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest

from explainer.server.gradio_internals import (
    QUEUE_ATTRIBUTES,
    GradioInternalsMissing,
    GradioQueue,
    id_of_event,
    keep_mcp_tools,
    stateful,
    wrap_preprocess,
)


@pytest.fixture
def demo() -> gr.Blocks:
    with gr.Blocks() as blocks:
        state = gr.State(None)
        text = gr.Textbox()
        text.submit(lambda value, _state: value, [text, state], [text], api_name="echo")
        gr.Button().click(lambda value: value, [text], [text], api_name="plain")
    blocks.queue()
    return blocks


@pytest.mark.parametrize("name", QUEUE_ATTRIBUTES)
def test_the_queue_has_each_attribute_the_server_uses(demo, name):
    assert hasattr(GradioQueue.of(demo).raw, name), f"gradio's Queue has no {name}"


def test_a_queue_without_them_is_refused_by_name():
    class Stripped:
        push = get_events = None

    with pytest.raises(GradioInternalsMissing, match=r"active_jobs.*stopped"):
        GradioQueue(Stripped())
    with pytest.raises(GradioInternalsMissing, match="_queue"):
        GradioQueue.of(object())


def test_the_wrappers_replace_push_and_get_events(demo):
    queue = GradioQueue.of(demo)
    originals = queue.raw.push, queue.raw.get_events
    seen = []
    queue.wrap(push=lambda push: seen.append(push) or "pushed", get_events=lambda get: seen.append(get) or "got")
    assert seen == list(originals) and (queue.raw.push, queue.raw.get_events) == ("pushed", "got")


def test_bookkeeping_reads_and_cancels_through_the_real_structures(demo):
    queue = GradioQueue.of(demo)
    assert queue.pending() is queue.raw.pending_event_ids_session
    assert queue.waiting_lists() == [q.queue for q in queue.raw.event_queue_per_concurrency_id.values()]
    assert list(queue.running()) == []
    queue.raw.pending_event_ids_session["s"] = {"e1"}
    queue.raw.pending_messages_per_session["s"] = object()
    assert queue.listening("s") and not queue.listening("other")
    asyncio.run(queue.cancel("e1", "s"))  # an id the queue never ran: only the bookkeeping goes
    assert "s" not in queue.raw.pending_event_ids_session and not queue.listening("s")


def test_events_say_their_id_and_whether_they_carry_a_session_state(demo):
    from gradio.queueing import Event

    fns = {fn.api_name: fn for fn in demo.fns.values()}
    with_state = Event("session", fns["echo"], request=None, username=None)
    without = Event("session", fns["plain"], request=None, username=None)
    assert stateful(with_state) and not stateful(without)
    assert id_of_event(with_state) == with_state._id and id_of_event(with_state) != id_of_event(without)


def test_mcp_tools_and_preprocess_are_replaced(demo):
    class Server:
        def __init__(self):
            self.tool_to_endpoint = {"echo": "/echo", "plain": "/plain"}

    demo.mcp_server_obj = Server()
    keep_mcp_tools(demo, {"/plain"})
    assert demo.mcp_server_obj.tool_to_endpoint == {"plain": "/plain"}
    original = demo.preprocess_data
    wrap_preprocess(demo, lambda preprocess: ("wrapped", preprocess))
    assert demo.preprocess_data == ("wrapped", original)

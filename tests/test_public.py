"""Holding up in public: the launched app attacked over raw HTTP, the way anyone on the internet can call it.

``gradio_client`` always uploads files and adds Gradio's ``meta`` marker, so these tests speak the wire protocol
themselves (``/gradio_api/call/<api>`` and ``/gradio_api/queue/join`` + ``/queue/data``), with hand-made payloads.
"""

from __future__ import annotations

import json
import os
import re
import uuid

import httpx
import pytest
from app_server import plain, running_app, shape_png

from explainer.server.uploads import REFUSED

SECRET = "root:x:0:0:secret-marker"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory):
    """Files outside the upload folder that an attacker would like to read: an image and a text file."""
    folder = tmp_path_factory.mktemp("server-private")
    image = shape_png(folder, "circle", name="private.png")
    text = folder / "passwd"
    text.write_text(SECRET)
    return {"image": image, "text": str(text), "missing": str(folder / "no-such-file.png")}


def call(url: str, api: str, data: list) -> tuple[str, object]:
    """POST to ``/gradio_api/call/<api>``, then read its event stream: ("complete" | "error", data)."""
    with httpx.Client(timeout=120) as http:
        started = http.post(f"{url}/gradio_api/call/{api}", json={"data": data})
        started.raise_for_status()
        stream = http.get(f"{url}/gradio_api/call/{api}/{started.json()['event_id']}").text
    events = [line.split(":", 1)[1].strip() for line in stream.splitlines() if line.startswith("event:")]
    payloads = [line.split(":", 1)[1].strip() for line in stream.splitlines() if line.startswith("data:")]
    final = [(e, p) for e, p in zip(events, payloads, strict=False) if e in ("complete", "error")][-1]
    return final[0], json.loads(final[1])


def fn_index(chat_app, name: str) -> int:
    """The index of the event whose handler is ``ChatApp.<name>`` (private events are called by index)."""
    return next(i for i, fn in chat_app.demo.fns.items() if getattr(fn.fn, "__name__", "") == name)


def join(url: str, index: int, data: list, session: str | None = None) -> tuple[str, list[dict]]:
    """Queue an event by index as the page does, read its stream to the end: (session hash, messages)."""
    session = session or uuid.uuid4().hex
    with httpx.Client(timeout=120) as http:
        joined = http.post(f"{url}/gradio_api/queue/join",
                           json={"data": data, "fn_index": index, "session_hash": session, "trigger_id": None,
                                 "event_data": None})
        joined.raise_for_status()
        messages = []
        with http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    messages.append(message)
                    if message.get("msg") in ("process_completed", "close_stream"):
                        break
    return session, messages


def refusal_of(final: tuple[str, object]) -> str:
    """The text a client is shown for a refused call, whichever way the server refused it."""
    kind, data = final
    if kind == "error":
        return str(data.get("error") if isinstance(data, dict) else data)
    markdown, image, _facts = data
    assert image is None, "a refused file must never come back as a picture"
    return plain(markdown)


# --------------------------------------------------------------------------------------- 1. file reads


SHAPES = {
    "bare path": lambda path: {"path": path},
    "path with meta": lambda path: {"path": path, "meta": {"_type": "gradio.FileData"}},
    "plain string": lambda path: path,
    "dot-dot path": lambda path: {"path": f"{'/..' * 12}{path}"},
    "url": lambda path: {"url": f"file://{path}", "path": None},
}


@pytest.mark.parametrize("shape", SHAPES)
def test_explain_refuses_server_files_with_one_message(url, secrets, shape):
    answers = {name: refusal_of(call(url, "explain", [SHAPES[shape](path), "why? opacity 0", "shapes", ""]))
               for name, path in secrets.items()}
    # The same answer whether the path holds an image, a text file or nothing: no existence oracle.
    assert len(set(answers.values())) == 1, answers
    answer = answers["image"]
    assert SECRET not in answer and "passwd" not in answer and "circle" not in answer.lower()
    assert "private" not in answer and "/" not in answer.replace("gradio_api", "")


@pytest.mark.parametrize("shape", SHAPES)
def test_the_gate_refuses_every_shape_even_past_gradio(served, secrets, shape):
    """Gradio's own checks stop most shapes first; the app's gate refuses them all anyway, with one message."""
    import gradio as gr

    _url, chat_app = served
    for path in secrets.values():
        with pytest.raises(gr.Error) as refused:
            chat_app.explain(SHAPES[shape](path), "why? opacity 0", "shapes")
        assert refused.value.message == REFUSED


def test_explain_refuses_a_symlink_out_of_the_upload_folder(url, uploads, secrets):
    answers = set()
    for name, target in secrets.items():
        link = uploads / f"innocent-{name}.png"
        link.symlink_to(target)
        answers.add(refusal_of(call(url, "explain", [SHAPES["path with meta"](str(link)), "why?", "shapes", ""])))
    assert len(answers) == 1 and SECRET not in answers.pop()


def test_explain_still_answers_a_real_upload(url, uploads):
    path = shape_png(uploads, "square")
    kind, (_markdown, image, facts) = call(url, "explain", [SHAPES["path with meta"](path), "why?", "shapes", ""])
    assert kind == "complete" and image is not None and facts["data"]["explanation"]["target"]["label"] == "square"


def test_chat_refuses_server_files_and_keeps_the_conversation(served, secrets):
    url, chat_app = served
    index = fn_index(chat_app, "chat_turn")
    for path in (secrets["image"], secrets["missing"]):
        _session, messages = join(url, index, [{"text": "why? opacity 0", "files": [{"path": path}]}, None])
        done = messages[-2] if messages[-1].get("msg") == "close_stream" else messages[-1]
        shown = json.dumps(done)
        assert SECRET not in shown and "private.png" not in shown and "no-such-file" not in shown
        assert done["success"] is False or REFUSED in plain(shown)


@pytest.mark.parametrize("shape", ["bare path", "path with meta"])
def test_model_upload_event_refuses_server_files(served, secrets, shape):
    url, chat_app = served
    index = fn_index(chat_app, "upload_model")
    seen = set()
    for path in (secrets["text"], secrets["missing"]):
        _session, messages = join(url, index, [SHAPES[shape](path), SHAPES[shape](secrets["text"]), None])
        done = next(m for m in messages if m.get("msg") == "process_completed")
        assert done["success"] is False
        seen.add(json.dumps(done["output"], sort_keys=True))
    assert len(seen) == 1  # one answer whatever is at the path
    [shown] = seen
    assert "passwd" not in shown and "no-such-file" not in shown and SECRET not in shown


# ------------------------------------------------------------------------------- 2. memory per visitor


def tiny_model_file(folder, name: str, classes: int = 3) -> str:
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    path = folder / f"{name}.keras"
    keras.Model(inputs, outputs).save(path)
    return str(path)


def collected(ref) -> bool:
    import gc

    gc.collect()
    return ref() is None


def test_a_new_upload_replaces_the_previous_one_and_frees_it(served, uploads):
    import weakref

    _url, chat_app = served
    visit = chat_app.new_visit()
    chat_app.upload_model({"path": tiny_model_file(uploads, "first")}, None, visit)
    first = weakref.ref(visit.chat.model.keras_model)
    chat_app.upload_model({"path": tiny_model_file(uploads, "second")}, None, visit)
    assert list(visit.menu.uploads) == ["second (uploaded)"] and visit.chat.model.name == "second"
    assert collected(first)  # nothing else held the replaced model
    second = weakref.ref(visit.chat.model.keras_model)
    chat_app.end_visit(visit)  # the session ended: its model goes too
    assert visit.chat.model is chat_app.default and not visit.menu.uploads
    assert collected(second)


def test_the_least_recently_used_upload_is_evicted_with_a_message(uploads):
    import weakref

    with running_app(EXPLAINER_MAX_UPLOADED_MODELS="1") as (_url, chat_app):
        alice, bob = chat_app.new_visit(), chat_app.new_visit()
        chat_app.upload_model({"path": tiny_model_file(uploads, "alices")}, None, alice)
        alices = weakref.ref(alice.chat.model.keras_model)
        chat_app.upload_model({"path": tiny_model_file(uploads, "bobs")}, None, bob)
        assert len(chat_app.uploads) == 1 and bob.chat.model.name == "bobs"
        assert alice.chat.model is chat_app.default and not alice.menu.uploads
        notice = plain(alice.messages[-1]["content"])
        assert "alices" in notice and "unloaded" in notice and "at most 1 uploaded model" in notice
        assert "alices (uploaded)" not in [key for _label, key in chat_app.outputs(alice)[2].choices]
        assert collected(alices)


def test_an_idle_session_is_forgotten_and_its_model_freed(uploads):
    import time

    with running_app(EXPLAINER_SESSION_TTL="1") as (url, chat_app):
        index = fn_index(chat_app, "upload_model")
        path = tiny_model_file(uploads, "idle")
        _session, messages = join(url, index, [{"path": path, "meta": {"_type": "gradio.FileData"}}, None, None])
        assert next(m for m in messages if m.get("msg") == "process_completed")["success"] is True
        assert len(chat_app.uploads) == 1
        for _ in range(100):  # Gradio sweeps expired state once a second
            if len(chat_app.uploads) == 0:
                break
            time.sleep(0.2)
        assert len(chat_app.uploads) == 0


# ----------------------------------------------------------------------------------- 3. time per visitor


@pytest.fixture
def held(monkeypatch):
    """``/explain`` questions starting with "hold" wait for ``gate``: both workers can be kept busy on purpose."""
    import threading

    from explainer.server import core

    gate, started, ran = threading.Event(), [], []
    real = core.answer_once

    def answer_once(model, image, question="", **settings):
        ran.append(question)
        if question.startswith("hold"):
            started.append(question)
            gate.wait(120)
        return real(model, image, question, **settings)

    monkeypatch.setattr(core, "answer_once", answer_once)
    yield gate, started, ran
    gate.set()


def busy_workers(url: str, started: list) -> list:
    """Two "hold" requests occupying both workers; returns their threads once both are running."""
    import threading
    import time

    threads = [threading.Thread(target=call, args=(url, "explain", [None, f"hold {i}", "shapes", ""]))
               for i in range(2)]
    for thread in threads:
        thread.start()
    while len(started) < 2:
        time.sleep(0.05)
    return threads


def test_queued_work_of_a_disconnected_client_is_dropped(served, held):
    url, chat_app = served
    gate, started, ran = held
    threads = busy_workers(url, started)
    index, session = fn_index(chat_app, "explain"), uuid.uuid4().hex
    with httpx.Client(timeout=60) as http:
        joined = http.post(f"{url}/gradio_api/queue/join",
                           json={"data": [None, "victim", "shapes", ""], "fn_index": index, "session_hash": session})
        assert joined.status_code == 200
        with http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
            next(stream.iter_lines())  # it is queued and listening... then the client goes away
    gate.set()
    for thread in threads:
        thread.join(120)
    call(url, "explain", [None, "after", "shapes", ""])  # the queue has moved past where the victim was
    assert "after" in ran and "victim" not in ran


def test_one_session_and_one_client_cannot_fill_the_queue(held):
    gate, started, _ran = held
    with running_app(EXPLAINER_QUEUE_PER_SESSION="2", EXPLAINER_QUEUE_PER_CLIENT="3") as (url, chat_app):
        threads = busy_workers(url, started)  # two sessions from this address: 2 of its 3 slots
        index = fn_index(chat_app, "explain")

        def enqueue(session: str) -> httpx.Response:
            return httpx.post(f"{url}/gradio_api/queue/join", timeout=30,
                              json={"data": [None, "queued", "shapes", ""], "fn_index": index, "session_hash": session})

        assert enqueue("mine").status_code == 200  # the address's third
        refused = enqueue("other")  # a fourth from the same address, in a new session
        assert refused.status_code == 503 and "your network" in refused.json()["detail"]
        gate.set()
        for thread in threads:
            thread.join(120)
    with running_app(EXPLAINER_QUEUE_PER_SESSION="2") as (url, chat_app):
        gate.clear()
        started.clear()
        threads = busy_workers(url, started)
        index = fn_index(chat_app, "explain")
        codes = [httpx.post(f"{url}/gradio_api/queue/join", timeout=30,
                            json={"data": [None, "again", "shapes", ""], "fn_index": index,
                                  "session_hash": "one-session"}) for _ in range(3)]
        assert [c.status_code for c in codes] == [200, 200, 503]
        assert "2 questions waiting" in codes[2].json()["detail"]
        gate.set()
        for thread in threads:
            thread.join(120)


def test_slow_methods_are_refused_up_front_within_the_turn_budget(uploads, monkeypatch):
    """Score-CAM's estimate (one forward pass per channel) exceeds a 0.05 s budget: refused before it runs. Grad-CAM
    runs under the same budget and is answered because its estimate is zero extra passes, not because it is fast:
    one pass of the model cannot be stopped half-way, so nothing times it."""
    from gradio_client import Client, handle_file

    from explainer import deadline, engine

    seen = []  # (method, extra forward passes, seconds left of the budget) of each explanation the server makes
    estimate = engine._expect_affordable

    def spy(model, cam, channels, images):
        seen.append((cam.name, cam.extra_forward_passes(channels) * images, deadline.remaining()))
        estimate(model, cam, channels, images)

    monkeypatch.setattr(engine, "_expect_affordable", spy)
    image = shape_png(uploads, "triangle")
    with running_app(EXPLAINER_TURN_SECONDS="0.05") as (url, _chat_app):
        client = Client(url, verbose=False, download_files=False)
        seen.clear()  # start-up's warm-up ran without a budget
        markdown, picture, facts = client.predict(handle_file(image), "why? use scorecam", "shapes",
                                                  api_name="/explain")
        assert facts["error"] and picture is None
        assert "Score-CAM would take about" in plain(markdown) and "gradcam" in plain(markdown)
        [(method, passes, left)] = seen
        assert method == "scorecam" and passes > 0 and left <= 0.05
        seen.clear()
        markdown, picture, facts = client.predict(handle_file(image), "why?", "shapes", api_name="/explain")
        assert not facts["error"] and picture is not None and facts["data"]["method"] == "gradcam"
        [(method, passes, left)] = seen
        assert method == "gradcam" and passes == 0 and left <= 0.05  # the same budget was in force


# ------------------------------------------------------------------------------ 4. constant-cost turns


def test_the_150th_turn_costs_what_the_10th_does(served, uploads):
    url, chat_app = served
    index, session = fn_index(chat_app, "chat_turn"), uuid.uuid4().hex
    image = {"path": shape_png(uploads, "star"), "meta": {"_type": "gradio.FileData"}}
    sizes = []
    for turn in range(150):
        message = {"text": "why?", "files": [image]} if turn == 0 else {"text": ("how sure?", "why?")[turn % 2],
                                                                          "files": []}
        _session, messages = join(url, index, [message, None], session)
        done = next(m for m in messages if m.get("msg") == "process_completed")
        assert done["success"] is True
        sizes.append(len(json.dumps(done["output"])))  # what the server sends back for this turn
    shown = done["output"]["data"][0]
    assert sizes[149] <= 1.5 * sizes[9], (sizes[9], sizes[149])
    assert len(shown) <= chat_app.limits.shown_messages + 1
    assert "earlier messages are folded" in plain(shown[0]["content"][0]["text"])
    assert any(m["role"] == "user" for m in shown[1:3])  # the cut falls where a question starts


# ------------------------------------------------------------------------------------------------ 6. disk


def test_answer_pictures_live_in_the_swept_temporary_folder(served, uploads):
    import os
    from pathlib import Path

    import gradio as gr
    from gradio.route_utils import delete_files_created_by_app

    url, chat_app = served
    assert chat_app.demo.delete_cache  # Gradio's sweeper runs for this app
    _session, messages = join(url, fn_index(chat_app, "chat_turn"),
                              [{"text": "why?", "files": [{"path": shape_png(uploads, "cross"),
                                                           "meta": {"_type": "gradio.FileData"}}]}, None])
    done = next(m for m in messages if m.get("msg") == "process_completed")
    pictures = [c["value"]["path"] for m in done["output"]["data"][0] for c in m["content"]
                if c.get("type") == "component"]
    assert pictures and all(Path(p).is_relative_to(gr.utils.get_upload_folder()) for p in pictures)
    assert not any(Path(p).is_relative_to(os.getcwd()) for p in pictures)
    thumbnails = [cell["path"] for block in chat_app.demo.blocks.values() if isinstance(block, gr.Dataset)
                  for sample in block.get_config()["samples"] for cell in sample if isinstance(cell, dict)]
    delete_files_created_by_app(chat_app.demo, age=0)  # what the sweep does once the files are old enough
    assert not any(Path(p).exists() for p in pictures)
    assert thumbnails and all(Path(t).exists() for t in thumbnails)  # the example thumbnails stay


def test_hostile_models_are_refused_before_they_take_memory(served, uploads):
    from test_budget import hostile_dense, peak_rss_growth, wide_conv_model

    url, chat_app = served
    index = fn_index(chat_app, "upload_model")
    wide = uploads / "wide.keras"
    wide_conv_model().save(wide)  # 28 KB: a 6000×6000 input and one 64-channel convolution
    for path, limit in ((hostile_dense(uploads / "dense.keras"), "parameters"), (wide, "values")):
        payload = {"path": str(path), "meta": {"_type": "gradio.FileData"}}
        (_session, messages), growth = peak_rss_growth(lambda p=payload: join(url, index, [p, None, None]))
        done = next(m for m in messages if m.get("msg") == "process_completed")
        assert done["success"] is False
        message = done["output"]["error"]
        assert limit in message and "at most" in message and str(uploads) not in message
        assert growth < 600 * 2**20, f"{path.name}: the server grew by {growth / 2**20:.0f} MB"
    assert len(chat_app.uploads) == 0


HOSTILE_MODELS = ["two_inputs", "map_output", "random_bytes", "nan_weights", "inf_weights"]


def hostile_model(folder, kind: str):
    import os

    import keras
    import numpy as np

    path = folder / f"{kind}.keras"
    if kind == "random_bytes":
        path.write_bytes(os.urandom(4096))
        return str(path)
    if kind == "two_inputs":
        a, b = keras.Input((32, 32, 3)), keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Concatenate()([a, b]))
        model = keras.Model([a, b], keras.layers.Dense(3, activation="softmax")(
            keras.layers.GlobalAveragePooling2D()(x)))
    elif kind == "map_output":
        a = keras.Input((32, 32, 3))
        model = keras.Model(a, keras.layers.Conv2D(4, 3, padding="same", activation="softmax")(a))
    else:
        a = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu")(a)
        model = keras.Model(a, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
        bad = np.nan if kind == "nan_weights" else np.inf
        model.layers[-1].set_weights([np.full_like(w, bad) for w in model.layers[-1].get_weights()])
    model.save(path)
    return str(path)


@pytest.mark.parametrize("kind", HOSTILE_MODELS)
def test_hostile_models_get_a_plain_message(served, uploads, kind):
    url, chat_app = served
    index = fn_index(chat_app, "upload_model")
    payload = {"path": hostile_model(uploads, kind), "meta": {"_type": "gradio.FileData"}}
    _session, messages = join(url, index, [payload, None, None])
    done = next(m for m in messages if m.get("msg") == "process_completed")
    assert done["success"] is False
    message = done["output"]["error"]
    assert message and "/" not in message and "Traceback" not in message and "File " not in message
    assert "keras." not in message and "explainer" not in message and ".py" not in message
    if kind in ("nan_weights", "inf_weights"):
        assert "invalid numbers" in message and "%" not in message


def test_opening_the_page_copies_no_model(served, monkeypatch):
    """Gradio deep-copies components for every page load; nothing reachable from them may hold a model."""
    from keras.src.saving.keras_saveable import KerasSaveable

    url, _chat_app = served
    copies = []
    real = KerasSaveable.__reduce__
    monkeypatch.setattr(KerasSaveable, "__reduce__", lambda self: (copies.append(self), real(self))[1])
    for _ in range(2):
        assert httpx.get(f"{url}/config", timeout=60).status_code == 200
    assert copies == []


# ------------------------------------------------------------------------------------------- MCP tool


def test_explain_is_an_mcp_tool_an_assistant_can_call(url):
    import asyncio
    import base64

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    from explainer.demo import EXAMPLES_DIR

    schema = httpx.get(f"{url}/gradio_api/mcp/schema", timeout=60).json()
    assert [tool["name"] for tool in schema] == ["explain"]
    properties = schema[0]["inputSchema"]["properties"]
    assert set(properties) == {"image", "question", "model_name", "expected_region"}
    assert "Grad-CAM" in schema[0]["description"] and "how sure" in properties["question"]["description"]

    async def ask() -> tuple[list[str], object]:
        async with streamablehttp_client(f"{url}/gradio_api/mcp/") as (read, write, _close), \
                ClientSession(read, write) as session:
            await session.initialize()
            tools = [tool.name for tool in (await session.list_tools()).tools]
            # Data URLs, as assistants send pictures (Gradio's MCP server refuses URLs of private hosts).
            png = (EXAMPLES_DIR / "shapes-star.png").read_bytes()
            image = "data:image/png;base64," + base64.b64encode(png).decode()
            result = await session.call_tool("explain", {"image": image, "question": "why?", "model_name": "shapes"})
            return tools, result

    tools, result = asyncio.run(ask())
    assert tools == ["explain"] and not result.isError
    text = " ".join(getattr(part, "text", "") for part in result.content)
    assert "**star**" in text and "'target': {'index'" in text  # the answer and its facts
    assert "gradio_api/file=" in text and "image.png" in text  # and the overlay, as a file the assistant can fetch


# -------------------------------------------------------------------- unread requests, addresses, fairness


@pytest.fixture
def gated(monkeypatch):
    """``/explain`` questions starting with "hold" wait until ``release(question)``; ``ran`` lists the questions the
    workers took, in order. Yields (release, ran)."""
    import threading

    from explainer.server import core

    gates: dict[str, threading.Event] = {}
    ran: list[str] = []
    real = core.answer_once

    def answer_once(model, image, question="", **settings):
        ran.append(question)
        if question.startswith("hold"):
            gates.setdefault(question, threading.Event()).wait(120)
        return real(model, image, question, **settings)

    def release(question: str) -> None:
        gates.setdefault(question, threading.Event()).set()

    monkeypatch.setattr(core, "answer_once", answer_once)
    yield release, ran
    for gate in list(gates.values()):
        gate.set()


def wait_until(condition, seconds: float = 60) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there in time"
        time.sleep(0.05)


def enqueue(url: str, index: int, data: list, session: str | None = None, **headers: str) -> httpx.Response:
    """Join the queue as the page does, and never read the answer."""
    return httpx.post(f"{url}/gradio_api/queue/join", timeout=30, headers=headers,
                      json={"data": data, "fn_index": index, "session_hash": session or uuid.uuid4().hex})


def test_requests_nobody_reads_are_cancelled_and_stop_counting(gated):
    import threading
    import time

    from explainer.server.serving import ServerLimits

    release, ran = gated
    unread = ServerLimits().unread_seconds  # the documented default (10 s)
    with running_app(EXPLAINER_QUEUE_PER_CLIENT="26") as (url, chat_app):
        index = fn_index(chat_app, "explain")
        answers: dict[str, tuple] = {}

        def ask(question: str, event_id: str | None = None) -> None:  # a visitor who reads the answer
            if event_id is None:
                answers[question] = call(url, "explain", [None, question, "shapes", ""])
                return
            stream = httpx.get(f"{url}/gradio_api/call/explain/{event_id}", timeout=120).text
            answers[question] = ("complete" if "event: complete" in stream else "other", stream)

        readers = [threading.Thread(target=ask, args=(f"hold {i}",)) for i in range(2)]
        for reader in readers:
            reader.start()
        wait_until(lambda: len(ran) == 2)  # both workers busy; their visitors are listening
        for i in range(24):  # 24 questions from 24 sessions of this address, whose answers nobody reads
            assert enqueue(url, index, [None, f"unread {i}", "shapes", ""]).status_code == 200
        newcomer = {"data": [None, "newcomer", "shapes", ""]}
        locked = httpx.post(f"{url}/gradio_api/call/explain", json=newcomer, timeout=30)
        assert locked.status_code == 503 and "your network" in locked.json()["detail"]
        started = time.monotonic()
        while (joined := httpx.post(f"{url}/gradio_api/call/explain", json=newcomer, timeout=30)).status_code == 503:
            assert time.monotonic() - started < 60
            time.sleep(0.2)
        waited = time.monotonic() - started
        assert joined.status_code == 200 and waited < unread + 5, waited  # the unread ones no longer count
        listener = threading.Thread(target=ask, args=("newcomer", joined.json()["event_id"]))
        listener.start()
        time.sleep(unread + 1.5)  # the newcomer waits in the queue, listening: it is not cancelled
        release("hold 0")
        release("hold 1")
        for thread in (*readers, listener):
            thread.join(120)
    assert answers["newcomer"][0] == "complete" and "newcomer" in ran
    assert answers["hold 0"][0] == answers["hold 1"][0] == "complete"  # answered after more than `unread` seconds
    assert not [q for q in ran if q.startswith("unread")]  # cancelled before a worker took them


def test_the_client_address_is_the_connection_unless_a_trusted_proxy_names_it():
    data = [None, "why?", "shapes", ""]
    with running_app(EXPLAINER_UNREAD_SECONDS="600") as (url, chat_app):
        index = fn_index(chat_app, "explain")
        codes = [enqueue(url, index, data, **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(30)]
        assert codes == [200] * 24 + [503] * 6  # one client, this connection's address, whatever the header says
    with running_app(EXPLAINER_UNREAD_SECONDS="600", EXPLAINER_TRUSTED_PROXIES="127.0.0.1") as (url, chat_app):
        index = fn_index(chat_app, "explain")
        codes = [enqueue(url, index, data, **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(30)]
        assert codes == [200] * 30  # behind the named proxy, 30 visitors
        # The proxy appends the address it saw; what the client wrote before it does not count.
        same = [enqueue(url, index, data, **{"X-Forwarded-For": f"10.{i}.0.1, 198.51.100.7"}).status_code
                for i in range(25)]
        assert same == [200] * 24 + [503]


def test_a_quick_question_waits_for_one_slow_answer_not_for_a_visitors_burst(gated):
    release, ran = gated
    with running_app(EXPLAINER_QUEUE_PER_SESSION="5", EXPLAINER_UNREAD_SECONDS="600") as (url, chat_app):
        index = fn_index(chat_app, "explain")
        for i in range(5):  # one visitor's five slow questions at once
            assert enqueue(url, index, [None, f"hold slow {i}", "shapes", ""], session="slow").status_code == 200
        wait_until(lambda: len(ran) == 2)  # two workers: the first two run, three wait
        assert enqueue(url, index, [None, "hold quick", "shapes", ""], session="quick").status_code == 200
        wait_until(lambda: len(chat_app.demo._queue) == 4)
        release("hold slow 0")  # one slow answer ends: the other visitor's question is next, not "slow 2"
        wait_until(lambda: len(ran) == 3)
        release("hold quick")
        release("hold slow 1")
        wait_until(lambda: len(ran) == 5)
        for i in range(2, 5):
            release(f"hold slow {i}")
        wait_until(lambda: len(ran) == 6)
    assert ran[:3] == ["hold slow 0", "hold slow 1", "hold quick"]  # (without turns: slow 2 before quick)
    assert sorted(ran[3:]) == ["hold slow 2", "hold slow 3", "hold slow 4"]  # two workers: these start in any order


def test_a_sessions_chat_turns_take_one_worker_at_a_time(monkeypatch):
    """A second turn of a busy session would only wait for the session's lock: the worker goes to someone else."""
    import threading

    from explainer.chat import ChatSession

    gates: dict[str, threading.Event] = {}
    ran: list[str] = []
    real = ChatSession.respond

    def respond(self, text, *args, **kwargs):
        ran.append(text)
        gates.setdefault(text, threading.Event()).wait(120)
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(ChatSession, "respond", respond)
    try:
        with running_app(EXPLAINER_UNREAD_SECONDS="600") as (url, chat_app):
            index = fn_index(chat_app, "chat_turn")
            for text in ("hold a", "hold b"):
                assert enqueue(url, index, [{"text": text, "files": []}, None], session="busy").status_code == 200
            wait_until(lambda: ran == ["hold a"] and len(chat_app.demo._queue) == 1)  # "b" waits, a worker is free
            assert enqueue(url, index, [{"text": "hold q", "files": []}, None], session="other").status_code == 200
            wait_until(lambda: len(ran) == 2)
            assert ran == ["hold a", "hold q"]  # the other visitor got the free worker
            gates.setdefault("hold a", threading.Event()).set()
            wait_until(lambda: len(ran) == 3)
            assert ran[2] == "hold b"  # and the busy session's next turn runs once its first is done
    finally:
        for text in ("hold a", "hold b", "hold q"):
            gates.setdefault(text, threading.Event()).set()


# ------------------------------------------------------------------------------- MCP size, and the log


def test_an_image_over_the_mcp_limit_gets_a_tool_error_and_the_session_goes_on(url):
    import asyncio
    import base64
    import os

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    from explainer.demo import EXAMPLES_DIR
    from explainer.server.ui import MCP_REQUEST_LIMIT

    mib = f"{MCP_REQUEST_LIMIT / 2**20:g} MiB"
    schema = httpx.get(f"{url}/gradio_api/mcp/schema", timeout=60).json()
    assert mib in schema[0]["description"]  # the assistant learns the limit from the tool's description

    async def ask() -> tuple:
        async with streamablehttp_client(f"{url}/gradio_api/mcp/") as (read, write, _close), \
                ClientSession(read, write) as session:
            await session.initialize()
            too_big = "data:image/png;base64," + base64.b64encode(os.urandom(3_200_000)).decode()  # 4.3 MB
            refused = await session.call_tool("explain", {"image": too_big, "question": "why?"})
            png = (EXAMPLES_DIR / "shapes-star.png").read_bytes()
            image = "data:image/png;base64," + base64.b64encode(png).decode()
            answered = await session.call_tool("explain", {"image": image, "question": "why?", "model_name": "shapes"})
            return refused, answered

    refused, answered = asyncio.run(ask())
    text = " ".join(getattr(part, "text", "") for part in refused.content)
    assert refused.isError and mib in text and "smaller image" in text
    assert not answered.isError and "**star**" in " ".join(getattr(p, "text", "") for p in answered.content)


def test_a_refused_file_reference_is_one_line_in_the_log(served, secrets, capfd, caplog):
    import logging

    url, chat_app = served
    caplog.set_level(logging.WARNING, logger="gradcam_chat")
    capfd.readouterr()
    sent = 0
    for shape in SHAPES.values():
        assert refusal_of(call(url, "explain", [shape(secrets["text"]), "why?", "shapes", ""])) == REFUSED
        sent += 1
    for shape in ("bare path", "path with meta"):
        join(url, fn_index(chat_app, "chat_turn"), [{"text": "why?", "files": [SHAPES[shape](secrets["text"])]}, None])
        join(url, fn_index(chat_app, "upload_model"), [SHAPES[shape](secrets["text"]), None, None])
        sent += 2
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "InvalidPathError" not in out + err
    lines = [r.getMessage() for r in caplog.records if "refused a file reference" in r.getMessage()]
    assert len(lines) == sent and not [line for line in lines if "\n" in line]


# ------------------------------------------------------ round two: pixels, visitor text, plain sentences, numbers


TAG = re.compile(r"<\s*/?\s*(?:img|b)\b", re.IGNORECASE)  # the tags of the payloads below, in any rendered text
HTML_PAYLOAD = "<img src=x onerror=alert(1)><b>BOLD</b>"


def file_data(path) -> dict:
    """A file payload as the page sends it for a file already uploaded to this server."""
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}, "orig_name": os.path.basename(str(path))}


def completed(messages: list[dict]) -> dict:
    return next(m for m in messages if m.get("msg") == "process_completed")


def strings(value) -> list[str]:
    """Every string inside a decoded JSON value (what a page may render)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in strings(item)]
    return []


def shown_to_visitor(messages: list[dict]) -> list[str]:
    """The texts a stream delivers: pop-ups ("log" messages: warnings), the error, the outputs."""
    return strings([m for m in messages if m.get("msg") in ("log", "process_completed", "process_generating")])


def palette_layer(path, width: int, height: int | None = None):
    """A painted layer as a palette PNG: transparent but for a magenta patch in the middle; tiny on disk."""
    from PIL import Image

    height = height or width
    layer = Image.new("P", (width, height), 0)
    layer.putpalette([0, 0, 0, 255, 0, 255] + [0] * 762)
    layer.paste(1, (width // 3, height // 3, width // 2, height // 2))
    layer.save(path, transparency=0, optimize=True)
    return path


def region_event(url: str, chat_app, uploads, layers: list) -> tuple[list[dict], float, int]:
    """A visitor with an image in the chat sends ``layers`` to "Is it looking here?": (stream, seconds, growth)."""
    import time

    from test_budget import peak_rss_growth

    image = shape_png(uploads, "circle", name=f"region-{uuid.uuid4().hex[:6]}.png")
    session, _messages = join(url, fn_index(chat_app, "chat_turn"), [{"text": "why?", "files": [file_data(image)]},
                                                                      None])
    editor = {"background": file_data(image), "layers": [file_data(layer) for layer in layers], "composite": None,
              "id": None}
    started = time.perf_counter()
    (_session, messages), growth = peak_rss_growth(
        lambda: join(url, fn_index(chat_app, "check_region"), [editor, None], session))
    return messages, time.perf_counter() - started, growth


def test_a_huge_painted_layer_is_refused_from_its_header(served, uploads):
    url, chat_app = served
    layer = palette_layer(uploads / "painted.png", 12000)
    assert layer.stat().st_size < 400_000  # about 150 KB that Gradio would have decoded to 576 MB of RGBA
    messages, seconds, growth = region_event(url, chat_app, uploads, [layer])
    done = completed(messages)
    assert done["success"] is False
    assert "12000×12000 pixels; the limit is 40 megapixels per image" in done["output"]["error"]
    assert seconds < 2, f"refused after {seconds:.1f} s"
    assert growth < 600 * 2**20, f"the server grew by {growth / 2**20:.0f} MB"


def test_painted_layers_are_bounded_in_number_and_in_pixels_together(served, uploads):
    url, chat_app = served
    small = palette_layer(uploads / "small.png", 160)
    messages, _seconds, _growth = region_event(url, chat_app, uploads, [small] * 5)
    assert "at most 4" in completed(messages)["output"]["error"]
    big = palette_layer(uploads / "big.png", 6000)  # 36 megapixels: under the per-image limit, three over the total
    messages, seconds, growth = region_event(url, chat_app, uploads, [big] * 3)
    assert "this server decodes at most 100 megapixels per request" in completed(messages)["output"]["error"]
    assert seconds < 10 and growth < 600 * 2**20, f"{seconds:.1f} s, {growth / 2**20:.0f} MB"


def test_a_painted_layer_of_the_image_is_still_answered(served, uploads):
    from app_server import last_turn, texts

    url, chat_app = served
    layer = palette_layer(uploads / "fits.png", 200, 160)  # the size of the image painted on
    messages, _seconds, _growth = region_event(url, chat_app, uploads, [layer])
    done = completed(messages)
    assert done["success"], done
    assert "inside" in texts(last_turn(done["output"]["data"][0]))


def test_a_zip_of_heavy_images_is_refused_from_their_headers(url, uploads):
    import io
    import time
    import zipfile

    from PIL import Image
    from test_budget import peak_rss_growth

    tile = io.BytesIO()
    Image.new("L", (6300, 6300), 128).save(tile, format="png", optimize=True)
    archive = uploads / "heavy.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for i in range(16):  # each under the per-image limit; 635 megapixels, 2 GB of RGB, together
            zipped.writestr(f"circle/{i}.png", tile.getvalue())
    assert archive.stat().st_size < 2**20
    started = time.perf_counter()
    final, growth = peak_rss_growth(lambda: call(url, "audit", [file_data(archive), "shapes", "auto"]))
    seconds = time.perf_counter() - started
    assert "hold 635 megapixels in all" in refusal_of_audit(final) and "at most 250 megapixels" in final[1]["error"]
    assert seconds < 2, f"refused after {seconds:.1f} s"
    assert growth < 600 * 2**20, f"the server grew by {growth / 2**20:.0f} MB"


def refusal_of_audit(final: tuple[str, object]) -> str:
    kind, data = final
    assert kind == "error", data
    return str(data["error"])


def zip_of(folder, name: str, members: dict[str, bytes]):
    import zipfile

    path = folder / name
    with zipfile.ZipFile(path, "w") as zipped:
        for member, data in members.items():
            zipped.writestr(member, data)
    return path


def png_bytes(shape: str = "circle") -> bytes:
    import io

    from PIL import Image

    from explainer.demo.generate import draw_plain_shape

    buffer = io.BytesIO()
    Image.fromarray(draw_plain_shape(shape, height=64, width=64)[0]).save(buffer, format="png")
    return buffer.getvalue()


def test_visitor_html_is_escaped_wherever_it_is_shown(served, uploads):
    url, chat_app = served
    shown = []
    _session, messages = join(url, fn_index(chat_app, "load_hub"), [f"hf://owner/repo{HTML_PAYLOAD}", None])
    assert completed(messages)["success"] is False
    shown += shown_to_visitor(messages)
    _session, messages = join(url, fn_index(chat_app, "pick_model"), [HTML_PAYLOAD, None])
    assert any("There is no model" in s for s in shown_to_visitor(messages))
    shown += shown_to_visitor(messages)
    _session, messages = join(url, fn_index(chat_app, "chat_turn"), [{"text": HTML_PAYLOAD, "files": []}, None])
    shown += shown_to_visitor(messages)
    _session, messages = join(url, fn_index(chat_app, "run_example"), [HTML_PAYLOAD, None])
    shown += shown_to_visitor(messages)
    folder = zip_of(uploads, "folder.zip", {"<img src=x onerror=alert(1)>/a.png": png_bytes()})
    kind, data = call(url, "audit", [file_data(folder), "shapes", "auto"])
    assert kind == "error" and "is not one of the model's" in data["error"]
    shown += strings(data)
    flat = zip_of(uploads, "flat.zip", {"<img src=x onerror=alert(1)>.png": png_bytes(), "<b>BOLD</b>": b"x"})
    kind, data = call(url, "audit", [file_data(flat), "shapes", "auto"])
    assert kind == "complete", data
    summary, files = data
    report = httpx.get(next(f for f in files if f["path"].endswith(".html"))["url"], timeout=60).text
    shown += [summary]
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in report  # the image is listed, as text
    assert "<img src=x" not in report and "<b>BOLD" not in report
    assert "&lt;img" in " ".join(shown)  # the payloads did reach the outputs, escaped
    tagged = [s[:200] for s in shown if TAG.search(s)]
    assert not tagged, tagged


def test_unforeseen_errors_each_get_their_own_sentence(served, uploads):
    from test_archive import patched

    from explainer.server.core import FAILED

    url, chat_app = served
    answers = {}
    for spec in ("hf://a/b//abs/path.keras", "hf://a..b/c..d", "hf://owner/repo\n/x.keras"):
        _session, messages = join(url, fn_index(chat_app, "load_hub"), [spec, None])
        answers[spec] = completed(messages)["output"]["error"]
    _session, messages = join(url, fn_index(chat_app, "run_example"), ["/etc/passwd", None])
    answers["example"] = completed(messages)["output"]["error"]
    encrypted = patched(zip_of(uploads, "secret.zip", {"circle/a.png": png_bytes()}), 6, 8, 0x1)
    long_name = zip_of(uploads, "long.zip", {"circle/" + "a" * 300 + ".png": png_bytes()})
    deep = zip_of(uploads, "deep.zip", {"/".join(["d"] * 3000) + "/a.png": png_bytes()})
    for name, archive in (("encrypted", encrypted), ("long name", long_name), ("deep", deep)):
        answers[name] = refusal_of_audit(call(url, "audit", [file_data(archive), "shapes", "auto"]))
    assert "two slashes in a row" in answers["hf://a/b//abs/path.keras"]
    assert "cannot hold '..' or '--'" in answers["hf://a..b/c..d"]
    assert "a line break" in answers["hf://owner/repo\n/x.keras"]
    assert "There is no example '/etc/passwd'" in answers["example"]
    assert "encrypted (protected by a password)" in answers["encrypted"]
    for name in ("long name", "deep"):
        assert "too long" in answers[name] and "damaged" not in answers[name] and "encrypted" not in answers[name]
    assert FAILED not in answers.values() and len(set(answers.values())) >= len(answers) - 1  # long = deep


def test_nothing_a_visitor_sends_is_echoed_at_length(served):
    url, chat_app = served
    _session, messages = join(url, fn_index(chat_app, "load_hub"), ["hf://" + "x" * 100_000 + "/r", None])
    error = completed(messages)["output"]["error"]
    assert "100,002 characters long" in error and len(error) < 400
    _session, messages = join(url, fn_index(chat_app, "pick_model"), ["m" * 5000, None])
    warnings = [m["log"] for m in messages if m.get("msg") == "log"]
    assert warnings and all(len(w) < 400 for w in warnings) and "m" * 79 in warnings[0] and "m" * 81 not in warnings[0]
    for name in ("load_hub", "pick_model", "run_example"):
        _session, messages = join(url, fn_index(chat_app, name), ["z" * 20_000, None])
        assert max(map(len, shown_to_visitor(messages)), default=0) < 2000


def test_setting_numbers_are_not_misread(served):
    from app_server import last_turn, plain, texts

    url, chat_app = served
    session = uuid.uuid4().hex
    index = fn_index(chat_app, "chat_turn")
    replies = {}
    for text in ("opacity 9e99", "threshold -5 %", "top-k 9e99", "show the settings"):
        _session, messages = join(url, index, [{"text": text, "files": []}, None], session)
        replies[text] = plain(texts(last_turn(completed(messages)["output"]["data"][0])))
    assert "written as a plain number" in replies["opacity 9e99"] and "'9e99' is not one" in replies["opacity 9e99"]
    assert "above 0 and at most 1" in replies["threshold -5 %"] and "'-5 %' is not one" in replies["threshold -5 %"]
    assert "whole number from 1 to 20" in replies["top-k 9e99"]
    assert "opacity 45 %" in replies["show the settings"] and "threshold 60 %" in replies["show the settings"]

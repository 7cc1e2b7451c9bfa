"""End to end: the real app served on a free port, driven with gradio_client through ``/chat`` and ``/explain``.

One server for the whole module (built with the bundled ``shapes`` model as the default). Each ``Client`` is its
own browser session, so each test that needs a fresh conversation opens its own client.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from app_server import (
    bot_turns,
    fetch_image,
    last_turn,
    options,
    percentages,
    pictures,
    plain,
    shape_png,
    texts,
)
from gradio_client import Client, handle_file
from PIL import Image

from explainer.server.conversation import ECHO_CHARS


@pytest.fixture(scope="module")
def images(uploads):
    # In the server's upload folder: the UI's own events are also called in-process below, with these paths.
    return {shape: shape_png(uploads, shape) for shape in ("circle", "square", "triangle")}


def new_client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def say(client: Client, text: str = "", *files: str) -> list[dict]:
    """One chat turn; returns the whole conversation as the chat shows it."""
    conversation, *_rest = client.predict({"text": text, "files": [handle_file(f) for f in files]},
                                          api_name="/chat")
    return conversation


# ---------------------------------------------------------------------------------------------- the API


def test_both_endpoints_are_public(url):
    api = new_client(url).view_api(return_format="dict", print_info=False)
    endpoints = api["named_endpoints"]
    assert {"/chat", "/explain"} <= set(endpoints)
    explain = endpoints["/explain"]
    names = [p["parameter_name"] for p in explain["parameters"]]
    assert names == ["image", "question", "model_name", "expected_region"]
    assert [r["component"] for r in explain["returns"]] == ["Markdown", "Image", "Json"]


def test_explain_endpoint_answers_with_text_overlay_and_json(url, images):
    client = new_client(url)
    markdown, overlay, result = client.predict(handle_file(images["circle"]), "why?", "shapes", api_name="/explain")
    target = result["data"]["explanation"]["target"]
    assert target["label"] == "circle" and "circle" in plain(markdown)
    assert round(100 * target["probability"]) in {round(p) for p in percentages(plain(markdown))}
    picture = fetch_image(overlay["url"])
    assert picture.shape == (160, 200, 3)  # the overlay is drawn at the image's own size
    assert result["intent"] == "why" and not result["error"]


def test_explain_endpoint_follow_up_kinds(url, images):
    client = new_client(url)
    markdown, chart, result = client.predict(handle_file(images["square"]), "what is it?", "shapes",
                                             api_name="/explain")
    top = result["data"]["predictions"][0]
    assert top["label"] == "square" and "square" in plain(markdown)
    assert chart is not None
    markdown, _image, result = client.predict(handle_file(images["square"]), "how sure are you?", "shapes",
                                              api_name="/explain")
    assert result["intent"] == "confidence" and "square" in plain(markdown)
    assert "calibrated" in plain(markdown)  # the honest caveat


def test_explain_endpoint_other_model_and_bad_input(url, images, tmp_path):
    client = new_client(url)
    _md, _img, result = client.predict(handle_file(images["circle"]), "why?", "shapes-shortcut",
                                       api_name="/explain")
    assert result["data"]["model"] == "shapes-shortcut"
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a picture")
    markdown, image, result = client.predict(handle_file(str(text_file)), "why?", "shapes", api_name="/explain")
    assert result["error"] and image is None and "notes.txt" in plain(markdown)
    markdown, image, result = client.predict(None, "why?", "shapes", api_name="/explain")
    assert image is None and "upload" in plain(markdown).lower()
    with pytest.raises(Exception, match="Unknown model"):
        client.predict(handle_file(images["circle"]), "why?", "no-such-model", api_name="/explain")


# ---------------------------------------------------------------------------------------- conversations


def test_scripted_conversation(url, images):
    client = new_client(url)
    reply = last_turn(say(client, "why?", images["circle"]))
    text = texts(reply)
    assert "circle" in text.split("\n")[0] and "image 1" in text.lower()
    [overlay] = pictures(reply)
    assert "circle" in overlay["label"]
    assert fetch_image(overlay["url"]).shape == (160, 200, 3)
    assert "How confident is it?" in options(reply)  # follow-ups offered as buttons
    first_percent = percentages(text)[0]

    reply = last_turn(say(client, "how confident is it?"))  # no re-upload: same image
    assert "circle" in texts(reply)
    assert first_percent in percentages(texts(reply))

    reply = last_turn(say(client, "show me the region"))
    assert pictures(reply) and "%" in texts(reply)

    reply = last_turn(say(client, "why not square?"))
    assert "square" in texts(reply) and pictures(reply)

    conversation = say(client, "what is it?", images["triangle"])  # a new upload is a new subject
    assert "triangle" in texts(last_turn(conversation)).split("\n")[0]
    assert "image 2" in texts(last_turn(conversation)).lower()
    reply = last_turn(say(client, "what about the previous image?"))
    assert "circle" in texts(reply)

    conversation = say(client, "use the shapes-shortcut model")
    assert "shapes-shortcut" in texts(last_turn(conversation))
    questions = [m for m in conversation if m["role"] == "user" and m["content"][0]["type"] == "text"]
    assert len(questions) == 7  # every turn is still on screen


def test_two_sessions_keep_their_own_images(url, images):
    alice, bob = new_client(url), new_client(url)
    script = [("why?", [images["circle"]], [images["square"]]), ("what is it?", [], []), ("show the region", [], [])]
    for question, alice_uploads, bob_uploads in script:
        with ThreadPoolExecutor(2) as pool:  # both visitors at the same time
            first = pool.submit(say, alice, question, *alice_uploads)
            second = pool.submit(say, bob, question, *bob_uploads)
            alice_conversation, bob_conversation = first.result(), second.result()
    alice_turns, bob_turns = bot_turns(alice_conversation), bot_turns(bob_conversation)
    assert len(alice_turns) == len(bob_turns) == 3
    assert all("circle" in texts(turn).split("\n")[0] for turn in alice_turns[:2])
    assert all("square" in texts(turn).split("\n")[0] for turn in bob_turns[:2])
    alice_pictures = {p["url"] for p in pictures(alice_conversation)}
    assert alice_pictures and not alice_pictures & {p["url"] for p in pictures(bob_conversation)}
    carol = new_client(url)  # a third visitor has no image at all
    assert "upload" in texts(last_turn(say(carol, "why?"))).lower()


# ------------------------------------------------------------------------------------------- bad input


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def blank_bilevel_png(path, width: int, height: int, rows_stored: int | None = None) -> str:
    """A valid 1-bit PNG of ``width`` × ``height`` white pixels, written without ever holding it in memory.

    Highly compressible: a 20000×20000 image is a few tens of kilobytes, and ``rows_stored`` < height writes a
    file whose header promises far more than it holds (the shape of a decompression bomb).
    """
    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row * 1000) for _ in range((rows_stored or height) // 1000))
    body += packer.compress(row * ((rows_stored or height) % 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body)
                     + png_chunk(b"IEND", b""))
    return str(path)


def write_bad_file(kind: str, folder, circle: str) -> str:
    """A file that is not a usable image, of the given kind."""
    good = Path(circle).read_bytes()
    target = folder / {"not_an_image": "notes.txt", "corrupt": "corrupt.png", "truncated": "truncated.png",
                       "empty": "empty.png", "huge": "huge.png", "bomb": "bomb.png"}[kind]
    if kind == "not_an_image":
        target.write_text("Dear diary, this is not a picture.")
    elif kind == "corrupt":
        target.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        target.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "huge":
        return blank_bilevel_png(target, 20_000, 20_000)
    elif kind == "bomb":
        return blank_bilevel_png(target, 100_000, 100_000, rows_stored=2000)
    return str(target)


def write_odd_image(kind: str, folder) -> tuple[str, tuple[int, int]]:
    """A readable image in an unusual format showing a circle; returns its path and its upright (width, height)."""
    rgb, mask = _circle(120, 200)
    if kind == "16_bit":
        path = folder / "deep.png"
        Image.fromarray((rgb[..., 0].astype(np.uint16) * 257), mode="I;16").save(path)
    elif kind == "grayscale":
        path = folder / "grey.png"
        Image.fromarray(rgb).convert("L").save(path)
    elif kind == "rgba":
        path = folder / "transparent.png"
        Image.fromarray(np.dstack([rgb, np.where(mask, 255, 0).astype(np.uint8)]), mode="RGBA").save(path)
    elif kind == "cmyk":
        path = folder / "print.jpg"
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    elif kind == "palette":
        path = folder / "palette.png"
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(path)
    elif kind == "animated_gif":
        path = folder / "anim.gif"
        frames = [Image.fromarray(rgb), Image.fromarray(_square(120, 200))]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=200, loop=0)
    elif kind == "exif_rotated":  # stored sideways (200 tall, 120 wide), displayed upright after a 90° turn
        path = folder / "sideways.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(path, exif=exif, quality=95)
    else:
        raise ValueError(kind)
    return str(path), (200, 120)


def _circle(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    from explainer.demo.generate import draw_plain_shape

    return draw_plain_shape("circle", height=height, width=width)


def _square(height: int, width: int) -> np.ndarray:
    from explainer.demo.generate import draw_plain_shape

    return draw_plain_shape("square", height=height, width=width)[0]


@pytest.fixture(scope="module")
def patient(url, images):
    """One conversation that every bad input is thrown at: it starts with a circle and must survive them all."""
    client = new_client(url)
    assert "circle" in texts(last_turn(say(client, "why?", images["circle"])))
    return client


def same_messages(before: list[dict], after: list[dict]) -> bool:
    """Whether ``after`` keeps the messages of ``before`` (suggestion buttons of old answers aside).

    Long conversations fold their oldest turns into one note: then the messages of ``before`` still on screen
    must open ``after``, in order (some of them, never none).
    """
    def shown(messages: list[dict]) -> list[tuple]:
        return [(m["role"], repr(m["content"])) for m in messages if not _is_fold_note(m)]

    old, new = shown(before), shown(after)
    if not any(_is_fold_note(m) for m in after[:1]):
        return new[: len(old)] == old
    return any(new[: len(old) - cut] == old[cut:] for cut in range(len(old)))


def _is_fold_note(message: dict) -> bool:
    content = message["content"]
    parts = content if isinstance(content, list) else [content]
    text = " ".join(c if isinstance(c, str) else c.get("text", "") if isinstance(c, dict) else "" for c in parts)
    return message["role"] == "assistant" and "earlier messages are folded" in text


def _still_serving(client: Client, before: list[dict], expected_class: str) -> None:
    """The server answers the next question about the current image, and earlier messages are all still there."""
    conversation = say(client, "what is it?")
    assert expected_class in texts(last_turn(conversation)).split("\n")[0]
    assert same_messages(before, conversation)


BAD_FILES = ["not_an_image", "corrupt", "truncated", "empty", "huge", "bomb"]


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_file_gets_an_explanation_and_the_conversation_goes_on(url, patient, images, tmp_path, kind):
    path = write_bad_file(kind, tmp_path, images["circle"])
    name = path.rsplit("/", 1)[-1]
    conversation = say(patient, "why?", path)
    reply = last_turn(conversation)
    assert name in texts(reply) and not pictures(reply)
    _still_serving(patient, conversation, "circle")


@pytest.mark.parametrize("kind", ["16_bit", "grayscale", "rgba", "cmyk", "palette", "animated_gif", "exif_rotated"])
def test_unusual_image_formats_are_explained(url, patient, tmp_path, kind):
    path, (width, height) = write_odd_image(kind, tmp_path)
    conversation = say(patient, "why?", path)
    reply = last_turn(conversation)
    assert "circle" in texts(reply).split("\n")[0]
    [overlay] = pictures(reply)
    assert fetch_image(overlay["url"]).shape == (height, width, 3)  # drawn upright at the image's own size
    _still_serving(patient, conversation, "circle")


def test_a_10000_character_question(url, patient):
    question = "why? " + "and please tell me more " * 420
    assert len(question) >= 10_000
    conversation = say(patient, question)
    echo = conversation[-len(last_turn(conversation)) - 1]
    assert echo["role"] == "user" and len(echo["content"][0]["text"]) <= ECHO_CHARS + 1
    assert texts(last_turn(conversation))
    _still_serving(patient, conversation, "circle")


@pytest.mark.parametrize("question", [
    "🤔 why? 🐱🔍",
    '<img src=x onerror="alert(1)"> <script>alert(2)</script> why?',
    "**bold** [click me](javascript:alert(1)) # heading\n- why?",
])
def test_emoji_html_and_markdown_are_shown_as_typed(url, patient, question):
    conversation = say(patient, question)
    echo = next(m for m in reversed(conversation) if m["role"] == "user")
    shown = echo["content"][0]["text"]
    assert "<img" not in shown and "<script" not in shown and "](javascript" not in shown
    assert html.unescape(re.sub(r"\\(.)", r"\1", shown)).split() == question.split()  # shown as typed
    reply_text = "".join(c.get("text", "") for m in last_turn(conversation) for c in m["content"])
    assert "<img" not in reply_text and "<script" not in reply_text
    _still_serving(patient, conversation, "circle")


def test_text_before_any_image_asks_for_one(url):
    client = new_client(url)
    reply = last_turn(say(client, "why is it a cat?"))
    assert "upload" in texts(reply).lower() and not pictures(reply)
    conversation = say(client, "what is it?")
    assert "upload" in texts(last_turn(conversation)).lower()
    assert sum(m["role"] == "user" for m in conversation) == 2



# ------------------------------------------------ the UI's own events (private: called in-process on the same app)


def _last(events) -> tuple:
    """The final outputs of an event handler (generators yield the user's message first)."""
    outputs = events
    if not isinstance(events, tuple):
        *_shown, outputs = events
    return outputs


def _bot_text(messages: list[dict]) -> str:
    at = max(i for i, m in enumerate(messages) if m["role"] == "user") if any(
        m["role"] == "user" for m in messages) else -1
    return plain("\n".join(m["content"] for m in messages[at + 1:] if isinstance(m["content"], str)))


@pytest.fixture
def chat_app(served):
    return served[1]


@pytest.fixture
def visit(chat_app, images):
    outputs = _last(chat_app.chat_turn({"text": "why?", "files": [images["circle"]]}, None))
    assert "circle" in _bot_text(outputs[0])
    return outputs[-1]


def test_model_picker_switches_and_keeps_the_conversation(chat_app, visit):
    before = list(visit.messages)
    messages, _box, picker, *_settings, visit = chat_app.pick_model("shapes-shortcut", visit)
    assert same_messages(before, messages)
    assert "shapes-shortcut" in _bot_text(messages)  # the chat says which model answered
    assert picker.value == "shapes-shortcut" and visit.chat.model.name == "shapes-shortcut"


def test_uploaded_model_is_loaded_safely_and_stays_in_its_session(chat_app, visit, uploads):
    tmp_path = uploads
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "tiny.keras")
    (tmp_path / "labels.txt").write_text("apple\nbanana\ncherry\n")
    messages, _box, picker, *_settings, visit = chat_app.upload_model(
        {"path": str(tmp_path / "tiny.keras")}, {"path": str(tmp_path / "labels.txt")}, visit)
    assert picker.value == "tiny (uploaded)" and ("tiny (uploaded)", "tiny (uploaded)") in picker.choices
    assert "tiny" in _bot_text(messages) and visit.chat.model.labels == ["apple", "banana", "cherry"]
    other = _last(chat_app.chat_turn({"text": "hello", "files": []}, None))
    assert "tiny (uploaded)" not in [key for _label, key in other[2].choices]  # another visitor never sees it

    coded = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Lambda(lambda t: t * 2.0),
                              keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    coded.save(tmp_path / "coded.keras")
    with pytest.raises(gr.Error, match="Lambda"):
        chat_app.upload_model({"path": str(tmp_path / "coded.keras")}, None, visit)
    assert visit.chat.model.name == "tiny"  # nothing changed


def test_settings_panel_changes_this_session_only(chat_app, visit):
    *_outputs, visit = chat_app.change_setting(visit, 0.8, "viridis", 0.3, 3, "gradcam++", "otsu")
    assert (visit.chat.settings.opacity, visit.chat.settings.colormap, visit.chat.settings.method,
            visit.chat.settings.segment) == (0.8, "viridis", "gradcam++", "otsu")
    with pytest.warns(UserWarning, match="Unknown colormap"):  # gr.Warning: a toast in the browser
        *_outputs, visit = chat_app.change_setting(visit, 0.8, "no-such-colormap", 0.3, 3, "gradcam++", "otsu")
    assert visit.chat.settings.colormap == "viridis" and visit.chat.settings.segment == "otsu"  # refused: unchanged
    with pytest.warns(UserWarning, match="Unknown segmentation method 'watershed'"):
        *_outputs, visit = chat_app.change_setting(visit, 0.8, "viridis", 0.3, 3, "gradcam++", "watershed")
    fresh = _last(chat_app.chat_turn({"text": "hello", "files": []}, None))[-1]
    assert fresh.chat.settings.opacity != 0.8


def test_a_settings_panel_change_says_so_and_redraws_the_picture(chat_app, images):
    *_outputs, visit = _last(chat_app.chat_turn({"text": "why?", "files": [images["circle"]]}, None))
    before = len(visit.messages)
    messages, *_rest, visit = chat_app.change_setting(visit, 0.9, "turbo", 0.6, 5, "auto", "softgrabcut")
    added = messages[before:]
    assert added[0]["role"] == "assistant" and "opacity is now 90 %" in added[0]["content"]
    assert any(not isinstance(m["content"], str) for m in added)  # the overlay, redrawn at the new opacity
    unchanged = len(messages)
    messages, *_rest, visit = chat_app.change_setting(visit, 0.9, "turbo", 0.6, 5, "auto", "softgrabcut")
    assert len(messages) == unchanged  # nothing changed: nothing said


def test_shortcut_example_switches_model_and_answers(chat_app):
    index = next(i for i, e in enumerate(chat_app.examples) if e.model == "shapes-shortcut")
    messages, _box, picker, *_settings, _visit = _last(chat_app.run_example(index, None))
    assert picker.value == "shapes-shortcut"
    assert "shapes-shortcut" in _bot_text(messages) and any(isinstance(m["content"], gr.Image) for m in messages)


def test_clearing_starts_over_with_the_same_model_and_settings(chat_app, visit):
    visit.chat.set_model(chat_app.shelf.get("shapes-shortcut"))
    visit.chat.update_settings(opacity=0.7)
    messages, _box, picker, *_settings, fresh = chat_app.clear(visit)
    assert messages == [] and fresh.chat.current is None
    assert picker.value == "shapes-shortcut" and fresh.chat.settings.opacity == 0.7
    assert "upload" in _bot_text(_last(chat_app.chat_turn({"text": "why?", "files": []}, fresh))[0]).lower()


# ------------------------------------------------------------------------------- is it looking where it should?


def test_is_it_looking_here_end_to_end(url, images):
    client = new_client(url)
    say(client, "why?", images["circle"])
    reply = last_turn(say(client, "is it looking at 60, 40, 80, 80?"))  # x, y, w, h around the circle (200×160)
    text = texts(reply)
    assert "inside" in text.lower() and pictures(reply)
    numbers = percentages(text)
    assert numbers and max(numbers) <= 100
    follow = last_turn(say(client, "with gradcam++?"))
    assert "inside" in texts(follow).lower() and "Grad-CAM++" in texts(follow)


def test_explain_endpoint_takes_an_expected_region(url, images):
    client = new_client(url)
    _md, overlay, facts = client.predict(handle_file(images["circle"]), "is it looking here?", "shapes",
                                         "60, 40, 80, 80", api_name="/explain")
    expected = facts["data"]["expected"]
    assert overlay is not None and 0.0 <= expected["energy_inside"] <= 1.0 and expected["hit"] is True
    _md, _overlay, far = client.predict(handle_file(images["circle"]), "why?", "shapes", "0, 0, 20, 20",
                                        api_name="/explain")
    assert far["data"]["expected"]["energy_inside"] < expected["energy_inside"]
    assert far["data"]["expected"]["verdict"] == "elsewhere"


# ------------------------------------------------------------------------------------ a model from the Hub


def test_a_hub_model_is_loaded_for_this_session_only(chat_app, visit, monkeypatch, tmp_path):
    import huggingface_hub
    from test_hub import FakeHub

    from explainer.models import hub

    fake = FakeHub(tmp_path / "hub")
    for name in ("hf_hub_download", "snapshot_download", "list_repo_files"):
        monkeypatch.setattr(huggingface_hub, name, getattr(fake, name))
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(hub, "download_size", lambda spec: 1000)  # asked of the Hub before downloading
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))).save(
        fake.repo("someone/pets") / "model.keras")
    (fake.repo("someone/pets") / "labels.txt").write_text("cat\ndog\n")
    messages, _box, picker, *_settings, visit = chat_app.load_hub("hf://someone/pets", visit)
    assert visit.chat.model.labels == ["cat", "dog"] and picker.value == "pets (uploaded)"
    assert "Switched to" in _bot_text(messages) and "dog" in _bot_text(messages)
    for bad, words in (("", "Hugging Face model id"), ("not a model id", "not a Hugging Face model id"),
                       ("hf://nobody/missing", "nobody/missing")):
        with pytest.raises(gr.Error, match=words):
            chat_app.load_hub(bad, visit)
    assert visit.chat.model.labels == ["cat", "dog"]  # a refused model changes nothing


def test_a_hub_model_over_the_budget_is_dropped(chat_app, visit, monkeypatch):
    from explainer.server.budget import ModelLimits

    monkeypatch.setattr(chat_app, "model_limits", ModelLimits(max_params=10, max_input_pixels=10**9,
                                                               max_activation_bytes=2**40))
    monkeypatch.setattr("explainer.server.shelf.load_model", lambda spec, trust: chat_app.shelf.get("shapes"))
    before = visit.chat.model
    with pytest.raises(gr.Error, match="parameters; this server accepts at most"):
        chat_app.load_hub("hf://someone/huge", visit)
    assert visit.chat.model is before and not visit.menu.uploads


def test_a_hub_model_too_large_to_download_is_refused_before_downloading(chat_app, visit, monkeypatch):
    from explainer.models import hub

    monkeypatch.setattr(hub, "download_size", lambda spec: 3 * 2**30)
    monkeypatch.setattr("explainer.server.shelf.load_model", lambda *a, **k: pytest.fail("it was downloaded"))
    with pytest.raises(gr.Error, match="would download 3072 MB; this server takes at most 2048 MB"):
        chat_app.load_hub("hf://someone/enormous", visit)


def test_the_download_size_is_asked_of_the_hub(monkeypatch):
    from types import SimpleNamespace

    import huggingface_hub

    from explainer.models import hub

    files = [SimpleNamespace(rfilename="model.keras", size=300), SimpleNamespace(rfilename="labels.txt", size=20)]

    class FakeApi:
        def model_info(self, repo, files_metadata=False):
            assert repo == "someone/pets" and files_metadata
            return SimpleNamespace(siblings=files)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    assert hub.download_size("hf://someone/pets") == 320
    assert hub.download_size("hf://someone/pets/model.keras") == 300
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    assert hub.download_size("hf://someone/pets") is None  # offline: the load itself says so


def test_a_dicom_upload_never_shows_its_name_or_header(url, tmp_path):
    import numpy as np
    from test_dicom import PATIENT, write_dicom

    ramp = np.tile(np.linspace(0, 4000, 96, dtype=np.uint16), (96, 1))
    path = write_dicom(tmp_path / "Doe_Jane_1970-01-01.dcm", ramp)
    conversation = say(new_client(url), "why?", str(path))
    shown = repr(conversation)
    assert "Doe_Jane" not in shown and "1970" not in shown
    assert not any(str(value) in shown for value in PATIENT.values())
    assert "the DICOM file" in shown and pictures(last_turn(conversation))  # explained, and called by its kind


def test_explain_endpoint_returns_the_mask_as_run_length_encoding(url, images):
    from explainer.region import rle_to_mask

    client = new_client(url)
    _md, _overlay, facts = client.predict(handle_file(images["circle"]), "segment it", "shapes", "",
                                          api_name="/explain")
    mask = rle_to_mask(facts["data"]["mask"])
    width, height = facts["data"]["explanation"]["image_size"]
    assert mask.shape == (height, width)
    assert int(mask.sum()) == facts["data"]["region"]["pixels"] > 0

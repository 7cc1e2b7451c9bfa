""""Is it looking here?" in the chat: a region typed, named by place words, painted or uploaded as a mask.

The bundled ``shapes`` model explains images of the demo generator; every number the chat reports is checked against
:func:`explainer.evaluation.groundtruth.compare_region` or a direct computation on the explanation's heatmap, and the
``shapes-shortcut`` model (which reads a coloured tag, not the shape) must be told its evidence is elsewhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import explainer
from explainer.chat import ChatSession, answer_once
from explainer.chat import intents as I
from explainer.demo import generate
from explainer.demo.generate import draw_plain_shape
from explainer.evaluation.groundtruth import EXPECTED_COLOR, compare_region

EXAMPLES = Path(generate.__file__).parent / "examples"
SIZE = 128
#: The cells "lower left" names on a 128 × 128 image: columns 0..42, rows 86..127 (x, y, w, h).
LOWER_LEFT = (0, 86, 43, 42)
NUMBERS = ("energy_inside", "hit", "iou", "verdict", "coverage", "tolerance", "peak_distance")
VERDICT_WORDS = {"inside": "most of the evidence is inside your region",
                 "partly": "the evidence is partly inside your region",
                 "elsewhere": "the model's evidence is elsewhere: it may be right for another reason"}


@pytest.fixture(scope="module")
def shapes() -> explainer.LoadedModel:
    return explainer.load_model("shapes")


@pytest.fixture(scope="module")
def square() -> tuple[np.ndarray, np.ndarray]:
    """A dark square in the lower left of a light 128 × 128 image, and its mask."""
    return draw_plain_shape("square", SIZE, diameter=50, centre=(40, 90))


@pytest.fixture
def chat(shapes, square) -> ChatSession:
    session = ChatSession(shapes)
    assert not session.respond("", [square[0]]).error
    return session


def _words(markdown: str) -> str:
    """The reply's text without Markdown escapes."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _numbers(reply) -> dict:
    assert not reply.error, reply.markdown
    assert reply.intent == I.EXPECTED
    return {key: reply.data["expected"][key] for key in NUMBERS}


def _box_mask(box, size=(SIZE, SIZE)) -> np.ndarray:
    x, y, w, h = box
    mask = np.zeros(size, bool)
    mask[y : y + h, x : x + w] = True
    return mask


def _state(chat: ChatSession) -> tuple[int, int | None]:
    """What bad input must not change: how many images, which is current."""
    return len(chat.images), chat.current.number if chat.current else None


# ------------------------------------------------------------------------------ one region, every way to say it


def test_every_way_to_give_a_region_gives_the_same_numbers(shapes, square, tmp_path):
    image = square[0]
    big = np.zeros((2 * SIZE, 2 * SIZE), np.uint8)  # the same cells painted on a mask twice the image's size
    x, y, w, h = LOWER_LEFT
    big[2 * y : 2 * (y + h), 2 * x : 2 * (x + w)] = 255
    Image.fromarray(big).save(tmp_path / "mask.png")
    brush = np.zeros((SIZE, SIZE, 4), np.uint8)  # an RGBA brush layer: painted where alpha > 0, whatever the colour
    brush[..., :3] = 255
    brush[y : y + h, x : x + w, 3] = 200
    brush[y : y + h, x, 3] = 10  # a faint stroke is still paint

    replies = {}
    for name, text, region in [("typed box", "is it looking at 0, 86, 43, 42?", None),
                               ("typed corners", "is the evidence at x1,y1,x2,y2 = 0,86,43,128", None),
                               ("place words", "it should be in the lower left", None),
                               ("region text", "", "lower left"),
                               ("region box", "is it looking here?", "0, 86, 43, 42"),
                               ("mask array", "", big),
                               ("mask bool", "", _box_mask(LOWER_LEFT)),
                               ("brush layer", "", brush)]:
        session = ChatSession(shapes)
        session.respond("", [image])
        replies[name] = session.respond(text, region=region)
    session = ChatSession(shapes)
    session.respond("", [image])
    replies["mask file"] = session.respond("here is the mask", [str(tmp_path / "mask.png")])
    assert len(session.images) == 1  # the mask was not taken for a new image

    reference = _numbers(replies["typed box"])
    for name, reply in replies.items():
        assert _numbers(reply) == reference, name
        assert reply.data["expected"]["region"]["pixels"] == 43 * 42, name
    assert replies["typed box"].data["expected"]["region"]["box"] == list(LOWER_LEFT)
    assert replies["place words"].data["expected"]["region"]["box"] == list(LOWER_LEFT)
    assert replies["mask file"].data["expected"]["region"]["box"] is None
    result = session.state.explanation()
    direct = compare_region(result, box=LOWER_LEFT)
    assert {k: direct[k] for k in ("energy_inside", "hit", "iou", "verdict")} == \
        {k: reference[k] for k in ("energy_inside", "hit", "iou", "verdict")}


@pytest.mark.parametrize("text", [
    "is it looking at 40, 60, 80, 80?", "the lesion is at 40,60,80,80", "the evidence should be at (40 60 80 80)",
])
def test_typed_boxes_in_any_phrasing(chat, text):
    assert _numbers(chat.respond(text)) == _numbers(chat.respond("", region="40, 60, 80, 80"))


@pytest.mark.parametrize(("text", "region"), [
    ("it should be in the lower left", "lower left"), ("does it look where it should: top right", "top right"),
    ("is it looking at the center?", "center"),
])
def test_place_words_in_any_phrasing(chat, text, region):
    reply = chat.respond(text)
    assert _numbers(reply) == _numbers(chat.respond("", region=region))
    assert reply.data["expected"]["region"]["said"] == region


def test_energy_inside_is_the_share_of_the_heatmap_in_the_region(chat, square):
    x, y, w, h = 30, 50, 45, 60
    reply = chat.respond(f"is it looking at {x}, {y}, {w}, {h}?")
    heat = chat.state.explanation().heatmap.astype(np.float64)
    assert reply.data["expected"]["energy_inside"] == pytest.approx(heat[y : y + h, x : x + w].sum() / heat.sum(),
                                                                    abs=1e-6)
    shape = square[1]
    painted = chat.respond("", region=shape.astype(np.uint8) * 255)
    assert painted.data["expected"]["energy_inside"] == pytest.approx(heat[shape].sum() / heat.sum(), abs=1e-6)
    assert painted.data["expected"]["region"]["pixels"] == int(shape.sum())


def test_the_answer_explains_each_number_and_gives_the_verdict_in_words(chat):
    reply = chat.respond("it should be in the lower left")
    found = reply.data["expected"]
    words = _words(reply.markdown)
    assert VERDICT_WORDS[found["verdict"]] in words
    assert all(VERDICT_WORDS[v] not in words for v in VERDICT_WORDS if v != found["verdict"])
    energy = re.search(r"\*\*Energy inside\*\*: ([\d.]+) %", words)
    assert float(energy.group(1)) == pytest.approx(100 * found["energy_inside"], abs=0.5)
    assert re.search(r"\*\*Hit\*\*: (yes|no)", words).group(1) == ("yes" if found["hit"] else "no")
    assert float(re.search(r"\*\*IoU\*\*: ([\d.]+)", words).group(1)) == pytest.approx(found["iou"], abs=0.005)
    result = chat.state.explanation()
    peak_y, peak_x = np.unravel_index(int(np.argmax(result.heatmap)), result.heatmap.shape)
    assert found["peak"] == [int(peak_x), int(peak_y)]
    assert (found["peak_distance"] <= found["tolerance"]) == found["hit"]
    # the explanation's facts, as "why?" gives them
    assert reply.data["explanation"]["target"]["label"] == "square" and reply.data["head"] == result.head


def test_the_picture_outlines_the_region_in_its_own_colour(chat):
    reply = chat.respond("is it looking at 0, 86, 43, 42?")
    picture = reply.image
    assert picture.shape == (SIZE, SIZE, 3)
    magenta = np.all(picture == EXPECTED_COLOR, axis=-1)
    outline = _box_mask(LOWER_LEFT) & ~_box_mask((2, 88, 39, 38))  # the box's edge, two pixels wide
    assert magenta[outline].mean() > 0.5 and not magenta[~_box_mask((0, 84, 46, 44))].any()
    assert "your region" in reply.images[0][1]


def test_the_text_may_add_a_class_and_a_method(chat):
    reply = chat.respond("for cross, with gradcam++", region="lower left")
    explained = reply.data["explanation"]
    assert (explained["target"]["label"], explained["method"]) == ("cross", "gradcam++")
    typed = chat.respond("is it looking at 0,86,43,42 for cross with gradcam++")
    assert _numbers(typed) == _numbers(reply)


# ------------------------------------------------------------------------------------------- follow-ups


def test_follow_ups_reuse_the_region(chat):
    first = chat.respond("it should be in the lower left")
    assert any(s.startswith("What about") for s in first.suggestions)
    assert "With Grad-CAM++?" in first.suggestions and "Lower the threshold" in first.suggestions

    other = chat.respond("and for cross?")
    assert other.intent == I.EXPECTED and other.data["question_intent"] == I.CLASS
    assert other.data["explanation"]["target"]["label"] == "cross"
    assert other.data["expected"]["region"] == first.data["expected"]["region"]
    assert other.data["expected"]["energy_inside"] != first.data["expected"]["energy_inside"]

    method = chat.respond("With Grad-CAM++?")  # keeps the class asked about last
    assert method.intent == I.EXPECTED and method.data["explanation"]["method"] == "gradcam++"
    assert method.data["explanation"]["target"]["label"] == "cross"
    assert method.data["expected"]["region"] == first.data["expected"]["region"]

    before = method.data["expected"]
    for text, threshold in [("threshold 0.3", 0.3), ("lower the threshold", 0.2)]:
        moved = chat.respond(text)
        assert moved.intent == I.EXPECTED and chat.settings.threshold == pytest.approx(threshold)
        after = moved.data["expected"]
        assert (after["energy_inside"], after["hit"]) == (before["energy_inside"], before["hit"])
        result = chat.state.explanation("cross")
        assert result.region.threshold == pytest.approx(threshold)
        assert after["iou"] == compare_region(result, box=LOWER_LEFT)["iou"]
    assert after["iou"] != before["iou"]  # the localized region grew: only the IoU moved


def test_follow_ups_are_plain_questions_after_any_other_answer(chat):
    chat.respond("it should be in the lower left")
    assert chat.respond("top-k 3").intent == I.SETTING  # a setting that changes nothing here: its own answer
    assert chat.respond("why?").intent == I.WHY
    assert chat.respond("and for cross?").intent == I.CLASS
    assert chat.respond("does it look where it should?").intent == I.EXPECTED  # the region is still remembered


def test_a_new_image_forgets_the_region(chat, square):
    chat.respond("it should be in the lower left")
    chat.respond("", [square[0]])
    reply = chat.respond("does it look where it should?")
    assert reply.intent == "no_region" and "lower left" in _words(reply.markdown)
    assert chat.respond("and for cross?").intent == I.CLASS


def test_image_and_mask_in_one_turn(shapes, square, tmp_path):
    mask = tmp_path / "lesion-mask.png"
    Image.fromarray(_box_mask(LOWER_LEFT).astype(np.uint8) * 255).save(mask)
    image = tmp_path / "image.png"
    Image.fromarray(square[0]).save(image)
    session = ChatSession(shapes)
    reply = session.respond("mask of the lesion", [str(image), {"path": str(mask)}])
    assert len(session.images) == 1 and reply.data["expected"]["region"]["pixels"] == 43 * 42
    lonely = ChatSession(shapes).respond("here is the mask", [str(mask)])
    assert lonely.error and lonely.intent == "no_image"


def test_answer_once_passes_the_region(shapes, square):
    reply = answer_once(shapes, square[0], "", region="lower left", method="gradcam++")
    assert reply.intent == I.EXPECTED and reply.data["explanation"]["method"] == "gradcam++"
    assert answer_once(shapes, None, "", region="lower left").intent == "no_image"
    assert answer_once(shapes, square[0], "why?", region="   ").intent == I.WHY  # a blank field is no region


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("text", "region", "says"), [
    ("is it looking at 500, 500, 20, 20?", None, "lies outside the image"),
    ("is it looking at 40, 60?", None, "four numbers"),
    ("", "40, 60, 0, 80", "no area"),
    ("", "somewhere nice", "names no place"),
    ("", np.zeros((64, 64), np.uint8), "mask is empty"),
    ("", np.dstack([np.full((64, 64, 3), 255, np.uint8), np.zeros((64, 64), np.uint8)]), "mask is empty"),
    ("", np.ones((64, 32), np.uint8), "proportions differ"),
])
def test_bad_regions_get_a_clear_reply_and_change_nothing(chat, text, region, says):
    good = chat.respond("it should be in the lower left")
    before = _state(chat)
    reply = chat.respond(text, region=region)
    assert reply.error and says in _words(reply.markdown)
    assert "unchanged" in _words(reply.markdown)
    assert _state(chat) == before
    again = chat.respond("does it look where it should?")  # the region said before still holds
    assert _numbers(again) == _numbers(good)


def test_a_bad_mask_upload_adds_no_image(chat, square, tmp_path):
    wide = tmp_path / "wide-mask.png"
    Image.fromarray(np.full((40, 120), 255, np.uint8)).save(wide)
    image = tmp_path / "another.png"
    Image.fromarray(square[0]).save(image)
    before = _state(chat)
    for files in ([str(wide)], [str(image), str(wide)]):
        reply = chat.respond("here is the mask", files)
        assert reply.error and "proportions differ" in _words(reply.markdown)
        assert _state(chat) == before and str(tmp_path) not in _words(reply.markdown)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    reply = chat.respond("the expected region", [str(text_file)])
    assert reply.error and _state(chat) == before
    assert "notes.txt" in _words(reply.markdown) and str(tmp_path) not in _words(reply.markdown)


def test_an_image_and_a_typed_box_in_one_message(chat, square):
    before = _state(chat)
    bad = chat.respond("is it looking at 500, 500, 20, 20?", [square[0]])
    assert bad.error and "lies outside the image" in _words(bad.markdown) and _state(chat) == before
    good = chat.respond("is it looking at 0, 86, 43, 42?", [square[0]])
    assert len(chat.images) == before[0] + 1 and good.data["image"]["number"] == chat.current.number
    assert good.data["expected"]["region"]["box"] == list(LOWER_LEFT)


def test_a_region_before_any_image_asks_for_one(shapes):
    session = ChatSession(shapes)
    assert session.respond("is it looking at the lower left?").intent == "no_image"
    assert session.respond("", region="lower left").intent == "no_image"


# ------------------------------------------------------------------------------ the shortcut model is caught


def _example_shape_box(entry: dict) -> tuple[int, int, int, int]:
    """The box around the shape of a committed example, from the generator that drew it (checked pixel for pixel)."""
    spec = next(s for s in generate.EXAMPLE_SPECS if s.file == entry["file"])
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([generate.EXAMPLES_SEED, spec.seed])))
    image, mask = generate._cluttered_sample(rng, generate.CLASSES.index(spec.shape), generate.IMAGE_SIZE,
                                             generate.CLASSES.index(spec.mark))
    assert np.array_equal(image, np.asarray(Image.open(EXAMPLES / entry["file"]).convert("RGB")))
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@pytest.mark.parametrize("file", ["shortcut-star-says-circle.png", "shortcut-cross-says-triangle.png"])
def test_the_shortcut_model_is_told_its_evidence_is_elsewhere(shapes, file):
    entry = next(e for e in json.loads((EXAMPLES / "examples.json").read_text()) if e["file"] == file)
    box = ", ".join(str(v) for v in _example_shape_box(entry))
    shortcut = ChatSession(explainer.load_model("shapes-shortcut"))
    reply = shortcut.respond(f"the shape is at {box}: is it looking there?", [str(EXAMPLES / file)])
    assert reply.data["explanation"]["target"]["label"] == entry["expected"]  # the tag's class, not the shape's
    assert reply.data["expected"]["verdict"] == "elsewhere"
    assert VERDICT_WORDS["elsewhere"] in _words(reply.markdown)
    honest = ChatSession(shapes).respond("", [str(EXAMPLES / file)], region=box)
    assert honest.data["expected"]["verdict"] != "elsewhere"
    assert honest.data["expected"]["energy_inside"] > 10 * reply.data["expected"]["energy_inside"]


# --------------------------------------------------------------------------------------- multi-label models




@pytest.fixture(scope="module")
def findings_model() -> explainer.LoadedModel:
    """The multi-label test model of the findings tests (atelectasis and effusion positive, cardiomegaly not)."""
    from test_chat_heads import FINDINGS, multilabel_cnn

    return explainer.load_model(multilabel_cnn(), labels=FINDINGS, preprocess="unit")


def test_multilabel_target_is_the_top_positive_finding_unless_named(findings_model):
    image = np.random.default_rng(7).integers(0, 90, (32, 32, 3), dtype=np.uint8)
    image[8:20, 10:22] = (230, 200, 60)
    session = ChatSession(findings_model)
    reply = session.respond("is it looking at 10, 8, 12, 12?", [image])
    top = max(reply.data["positive"], key=lambda p: p["probability"])
    assert reply.data["explanation"]["target"]["label"] == top["label"] == "atelectasis"
    named = session.respond("and for cardiomegaly?")
    assert named.intent == I.EXPECTED and named.data["explanation"]["target"]["label"] == "cardiomegaly"
    assert "below the decision threshold" in _words(named.markdown)

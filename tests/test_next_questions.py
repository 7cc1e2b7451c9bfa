"""The questions people ask next: contrast ("why A rather than B?"), against ("what speaks against A?"), what-if
("what if I cover the top left?"), legend ("what do the colours mean?") and the closest questions when a message is
not understood. Answers are checked against the engine called directly on the bundled ``shapes`` model."""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np
import pytest
from app_server import last_turn, options, pictures, texts
from gradio_client import Client, handle_file
from PIL import Image

from explainer import explain, load_model
from explainer.chat import ChatSession, parse, vocab
from explainer.chat import answers_next as N
from explainer.chat import intents as I
from explainer.chat.intents import Vocab
from explainer.chat.session import MAX_TOP_K
from explainer.demo.generate import draw_plain_shape
from explainer.engine import predict

SHAPES = ("circle", "square", "triangle", "star", "cross")
VOCAB = Vocab(labels=SHAPES, colormaps=("turbo", "inferno", "viridis", "magma", "jet"))


@pytest.fixture(scope="module")
def model():
    return load_model("shapes")


@pytest.fixture(scope="module")
def circle() -> np.ndarray:
    return draw_plain_shape("circle")[0]


@pytest.fixture
def chat(model, circle) -> ChatSession:
    session = ChatSession(model)
    assert not session.respond("why?", [circle]).error
    return session


# ------------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize(("text", "versus", "target"), [
    ("why a circle rather than a square?", "square", "circle"),
    ("what makes it a circle and not a square", "square", "circle"),
    ("circle vs square", "square", "circle"),
    ("why circle and not square", "square", "circle"),
    ("Why star rather than cross?", "cross", "star"),
    ("please, why is it a triangle instead of a star?", "star", "triangle"),
    ("why a cirle rather then a squar?", "squar", "cirle"),  # typos: resolved to labels by the answer
    ("why rather than a square?", "square", None),  # the first class is the top one
    ("why is it the top class rather than the runner-up?", "@2", None),
])
def test_contrast_phrasings(text, versus, target):
    intent = parse(text, VOCAB)
    assert (intent.name, intent.versus, intent.target) == (I.CONTRAST, versus, target)


@pytest.mark.parametrize(("text", "target"), [
    ("what speaks against circle?", "circle"),
    ("what argues against the square", "square"),
    ("show the negative evidence", None),
    ("what lowers the score", None),
    ("What speaks against it, please?", None),
    ("what lowers the probability of star?", "star"),
    ("counterfactual map", None),
])
def test_against_phrasings(text, target):
    intent = parse(text, VOCAB)
    assert (intent.name, intent.target) == (I.AGAINST, target)


@pytest.mark.parametrize(("text", "region", "keep", "fill"), [
    ("what if I cover the top left?", "top left", False, None),
    ("What if i cover the top-left corner with black", "top left", False, "black"),
    ("cover 10, 10, 60, 60", "10, 10, 60, 60", False, None),
    ("what happens if I hide 10,10,60,60 please", "10, 10, 60, 60", False, None),
    ("what if I hide the highlighted region?", "highlighted", False, None),
    ("keep only the centre", "centre", True, None),
    ("what if I keep only the center?", "center", True, None),
    ("what if I cover it with the mean colour?", "highlighted", False, "mean"),
    ("blur the lower right", "lower right", False, "blur"),
])
def test_what_if_phrasings(text, region, keep, fill):
    intent = parse(text, VOCAB)
    assert (intent.name, intent.region, intent.keep, intent.fill) == (I.WHAT_IF, region, keep, fill)


@pytest.mark.parametrize("text", ["what do the colours mean?", "what does red mean", "explain the colour scale",
                                  "what does the colormap mean?", "what do the colors on the map mean",
                                  "show the legend please", "why is it red there?", "what does blue mean?"])
def test_legend_phrasings(text):
    assert parse(text, VOCAB).name == I.LEGEND


@pytest.mark.parametrize(("text", "expected"), [
    ("why not a square?", I.CLASS),  # B's own map, as before (its answer offers the contrast)
    ("why not the runner-up?", I.CLASS),
    ("square instead?", I.CLASS),
    ("what about the triangle", I.CLASS),
    ("hide the highlighted region", I.TRUST),  # the imperative stays the trust check (random boxes too)
    ("mask out the region", I.TRUST),
    ("is it looking at 40, 60, 80, 80?", I.EXPECTED),
    ("it should be in the lower left", I.EXPECTED),
    ("use viridis", I.SETTING),
    ("change the colormap", I.SETTING),
    ("how likely is square", I.CONFIDENCE),
    ("what is the probability", I.CONFIDENCE),
    ("grad-cam vs score-cam", I.COMPARE_METHODS),
    ("compare with the second guess", I.COMPARE_CLASSES),
    ("what is grad-cam?", I.TEACH),
    ("show the region", I.REGION),
    ("what is it?", I.WHAT),
    ("why?", I.WHY),
])
def test_old_questions_keep_their_intent(text, expected):
    assert parse(text, VOCAB).name == expected


# ------------------------------------------------------------------------------------------------ contrast


def test_contrast_answer_is_the_engines_contrast_map(chat, model, circle):
    reply = chat.respond("why a circle rather than a square?")
    assert reply.intent == I.CONTRAST and not reply.error
    direct = explain(model, circle, target="circle", versus="square", top_k=MAX_TOP_K)
    assert reply.data["explanation"] == direct.to_dict()
    assert reply.data["explanation"]["versus"]["label"] == "square"
    own = explain(model, circle, target=["circle", "square"], top_k=MAX_TOP_K)
    r = N.map_correlation(own[0], own[1])
    assert reply.data["correlation"] == pytest.approx(r, abs=1e-4)
    assert ("cannot tell the two apart" in reply.markdown) == (r >= N.SIMILAR_MAPS)
    assert direct.region.location.replace("center", "centre") in reply.markdown.replace("center", "centre")
    assert reply.images and "square" in reply.images[0][1]
    assert "Why square rather than circle?" in reply.suggestions


@pytest.mark.parametrize("other", ["square", "triangle", "star", "cross"])
def test_the_similar_maps_sentence_appears_iff_r_is_high(chat, other):
    reply = chat.respond(f"why circle rather than {other}?")
    r = reply.data["correlation"]
    assert ("cannot tell the two apart" in reply.markdown) == (r is not None and r >= N.SIMILAR_MAPS)


def _twin_classes_model():
    """Conv → ReLU → GAP → Dense with all weights one: classes a and b have the same map (r = 1), and every
    gradient is positive, so nothing lowers either score."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    dense = keras.layers.Dense(2, activation="softmax", kernel_initializer="ones")
    return load_model(keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(x))), labels=["a", "b"])


def test_identical_maps_get_the_sentence_and_an_empty_contrast():
    session = ChatSession(_twin_classes_model())
    session.respond("", [np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)])
    reply = session.respond("why a rather than b?")
    assert reply.intent == I.CONTRAST and reply.data["correlation"] == pytest.approx(1.0, abs=1e-6)
    assert "r = 1.00" in reply.markdown and "cannot tell the two apart" in reply.markdown
    assert "The map is empty" in reply.markdown


def test_why_not_keeps_the_class_answer_and_offers_the_contrast(chat):
    reply = chat.respond("why not a square?")
    assert reply.intent == I.CLASS
    assert "Why circle rather than square?" in reply.suggestions


def test_eigen_cam_falls_back_to_grad_cam_and_says_so(chat):
    chat.respond("use eigen-cam")
    reply = chat.respond("circle vs star")
    assert reply.data["explanation"]["method"] == "gradcam" and reply.data["fallback_from"] == "eigencam"
    assert "Eigen" in reply.markdown and "cannot compare two classes" in reply.markdown


# ------------------------------------------------------------------------------------------------ against


def test_against_answer_is_the_engines_negated_map(chat, model, circle):
    reply = chat.respond("what speaks against circle?")
    assert reply.intent == I.AGAINST and not reply.error
    direct = explain(model, circle, target="circle", against=True, top_k=MAX_TOP_K)
    assert reply.data["explanation"] == direct.to_dict() and reply.data["explanation"]["against"]
    assert reply.data["empty_map"] is bool(direct.heatmap.max() <= 0)
    assert "evidence against circle lies in" in reply.markdown and reply.images


def test_nothing_against_says_so():
    session = ChatSession(_twin_classes_model())
    session.respond("", [np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)])
    reply = session.respond("what speaks against a?")
    assert reply.intent == I.AGAINST and reply.data["empty_map"]
    assert "Nothing in this image lowers a much" in reply.markdown


# ------------------------------------------------------------------------------------------------ what if


def _blurred(image: np.ndarray) -> np.ndarray:
    sigma = 0.05 * max(image.shape[:2])  # N.BLUR_SIGMA, written out: the covered image is rebuilt here
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _probability(model, image: np.ndarray, index: int) -> tuple[float, float]:
    """The class's probability by the engine's forward pass and by Keras itself, on the model's preprocessing (with
    the model's calibration applied to Keras's softmax: log-probabilities are the logits up to a constant)."""
    keras_probs = np.asarray(model.keras_model(model.prepare([image]), training=False), np.float64)
    calibration = model.info.calibration
    if calibration is not None:
        keras_probs = calibration.probabilities(np.log(np.maximum(keras_probs, 1e-30)), model.info.head)
    return float(predict(model, [image])[0, index]), float(np.asarray(keras_probs)[0, index])


def _check(reply, model, image: np.ndarray, covered: np.ndarray, index: int) -> None:
    facts = reply.data["what_if"]
    for got, expected in ((facts["probability_after"], covered), (facts["probability_before"], image)):
        engine, direct = _probability(model, expected, index)
        assert got == pytest.approx(engine, abs=1e-6) and got == pytest.approx(direct, abs=1e-5)
    probs = predict(model, [covered])[0]
    assert facts["top_after"]["index"] == int(np.argmax(probs))
    assert facts["target"]["index"] == index


def test_what_if_box_equals_predict_on_the_covered_image(chat, model, circle):
    reply = chat.respond("cover 10, 10, 60, 60")
    assert reply.intent == I.WHAT_IF and not reply.error
    covered = circle.copy()
    covered[10:70, 10:70] = _blurred(circle)[10:70, 10:70]
    _check(reply, model, circle, covered, 0)
    facts = reply.data["what_if"]
    assert facts["region"]["box"] == [10, 10, 60, 60] and facts["fill"] == "blur"
    assert "blurred copy of the image" in reply.markdown and "usual occlusion practice" in reply.markdown
    assert reply.images and reply.images[0][0].shape[1] > circle.shape[1]  # the image and its covered copy


def test_what_if_place_words_with_the_mean_colour(chat, model, circle):
    reply = chat.respond("what if I cover the top left with the mean colour?")
    side = math.ceil(128 / 3)  # the 3×3 grid's first third, as the region words read it
    covered = circle.copy()
    covered[:side, :side] = np.rint(circle.reshape(-1, 3).mean(axis=0)).astype(np.uint8)
    _check(reply, model, circle, covered, 0)
    facts = reply.data["what_if"]
    assert facts["region"]["given_as"] == "words" and facts["region"]["said"] == "top left"
    assert facts["fill"] == "mean" and "mean colour" in reply.markdown


def test_what_if_follow_ups(chat, model, circle):
    chat.respond("what if I cover the top left with black?")
    reply = chat.respond("and with the box at 30, 30, 40, 40?")
    assert reply.intent == I.WHAT_IF
    covered = circle.copy()
    covered[30:70, 30:70] = 0  # the fill is kept
    _check(reply, model, circle, covered, 0)
    assert reply.data["what_if"]["region"]["box"] == [30, 30, 40, 40]
    again = chat.respond("and for square?")
    assert again.intent == I.WHAT_IF and again.data["what_if"]["target"]["label"] == "square"
    _check(again, model, circle, covered, 1)
    assert chat.respond("is it looking at 30, 30, 40, 40?").intent == I.EXPECTED  # not a what-if


def test_keep_only_and_the_highlighted_region(chat, model, circle):
    reply = chat.respond("what if I keep only the centre?")
    side = math.ceil(128 / 3)
    covered = _blurred(circle)
    covered[side:2 * side, side:2 * side] = circle[side:2 * side, side:2 * side]
    _check(reply, model, circle, covered, 0)
    assert reply.data["what_if"]["region"]["keep_only"]
    highlighted = chat.respond("what if I hide the highlighted region?")
    x, y, w, h = chat.state.explanation().region.bbox
    assert highlighted.data["what_if"]["region"]["box"] == [x, y, w, h]
    covered = circle.copy()
    covered[y:y + h, x:x + w] = _blurred(circle)[y:y + h, x:x + w]
    _check(highlighted, model, circle, covered, 0)


# ------------------------------------------------------------------------------------------------ legend


def test_legend_shows_the_scale_and_what_red_means(chat):
    reply = chat.respond("what do the colours mean?")
    assert reply.intent == I.LEGEND and reply.images
    picture, text = reply.images[0]
    assert "turbo" in text and picture.ndim == 3 and picture.shape[1] >= 300
    result = chat.state.explanation()
    assert reply.data["raw_max"] == pytest.approx(float(result.cam.max()))
    assert "dark red" in reply.markdown and "ReLU" in reply.markdown and "use inferno" in reply.markdown
    chat.respond("use viridis")
    again = chat.respond("what does red mean")
    assert "viridis" in again.images[0][1] and "yellow" in again.markdown


def test_legend_without_an_image(model):
    reply = ChatSession(model).respond("explain the colour scale")
    assert reply.intent == I.LEGEND and not reply.error and reply.images


# ------------------------------------------------------------------------------------------------ did you mean


def test_every_banked_phrasing_is_understood_as_its_question(chat):
    words = vocab(chat.state)
    for name, phrasings in N.QUESTION_BANK.items():
        for phrasing in phrasings:
            assert parse(phrasing, words).name == name, phrasing


@pytest.mark.parametrize("text", ["blah blah", "qwerty zxcv", "colurs pls mean wat", "waht if cuvered top",
                                  "shwo me negatve stuf", "🙂"])
def test_not_understood_offers_three_close_questions_that_are_understood(chat, text):
    reply = chat.respond(text)
    assert reply.intent == I.UNKNOWN
    assert len(reply.suggestions) == 3 and len(set(reply.suggestions)) == 3
    assert all(parse(s, vocab(chat.state)).name != I.UNKNOWN for s in reply.suggestions)
    assert all(s in reply.markdown for s in reply.suggestions)


def test_closest_questions_are_close():
    assert "What do the colours mean?" in N.closest_questions("what do the colurs men")
    assert "What if I cover the top left?" in N.closest_questions("wat if i cuver the top lft")


def test_suggestions_of_the_new_answers_are_understood(chat):
    words = vocab(chat.state)
    for text in ("why a circle rather than a square?", "what speaks against circle?", "cover 10, 10, 60, 60",
                 "what do the colours mean?"):
        for suggestion in chat.respond(text).suggestions:
            assert parse(suggestion, words).name != I.UNKNOWN, suggestion


# ------------------------------------------------------------------------------------------------ the app


def test_the_new_questions_through_the_app(url, uploads):
    path = uploads / "next-circle.png"
    Image.fromarray(draw_plain_shape("circle", height=160, width=200)[0]).save(path)
    client = Client(url, verbose=False, download_files=False)

    def say(text: str, *files: str) -> list[dict]:
        conversation, *_rest = client.predict({"text": text, "files": [handle_file(f) for f in files]},
                                              api_name="/chat")
        return last_turn(conversation)

    assert "circle" in texts(say("why?", str(path)))
    contrast = say("why a circle rather than a square?")
    assert "rather than square" in texts(contrast) and pictures(contrast)
    assert "Why square rather than circle?" in options(contrast)
    against = say("what speaks against circle?")
    assert "counterfactual" in texts(against) and pictures(against)
    what_if = say("what if I cover the top left?")
    assert "Before: circle" in texts(what_if) and "blurred copy" in texts(what_if) and pictures(what_if)
    follow = say("and with the box at 30, 30, 40, 40?")
    assert "the box 30, 30, 40 × 40 px" in texts(follow)
    legend = say("what do the colours mean?")
    assert "turbo" in texts(legend) and pictures(legend)
    unknown = say("blah blah")
    assert len(options(unknown)) == 3

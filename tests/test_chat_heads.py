"""The chat speaks in findings for multi-label models, keeps its softmax answers, and warns about blank images.

The multi-label model is a real Keras CNN ending in ``Dense(4, activation="sigmoid")``. Its last layer's bias is
set so that, on the test image, two findings are clearly positive, one sits between 0.3 and 0.5 and one is low:
the expected answers follow from ``model.predict``, never from the chat's own numbers.
"""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest
from conftest import gap_cnn

import explainer
from explainer.chat import ChatSession
from explainer.chat import intents as I
from explainer.chat.checks import BLANK_STD, image_structure, occlusion_check
from explainer.prose import percent, points

FINDINGS = ["atelectasis", "cardiomegaly", "effusion", "nodule"]
SIZE = 32
#: Biases of the sigmoid layer: with small weights they set each finding's probability near sigmoid(bias).
BIASES = np.array([1.6, -2.5, 0.9, -0.6], np.float32)


def multilabel_cnn(seed: int = 3, negative_top: bool = False) -> keras.Model:
    """The test model; with ``negative_top`` the most probable finding gets all-negative weights, so its Grad-CAM
    map (ReLU of a negative sum of non-negative activations) is empty while its bias keeps it on top."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(FINDINGS), activation="sigmoid", name="findings")(x)
    model = keras.Model(inputs, outputs)
    dense = model.get_layer("findings")
    kernel, _ = dense.get_weights()
    kernel = kernel * 0.05
    if negative_top:
        kernel[:, 0] = -0.05
    dense.set_weights([kernel, BIASES])
    return model


@pytest.fixture(scope="module")
def keras_model() -> keras.Model:
    return multilabel_cnn()


@pytest.fixture(scope="module")
def model(keras_model) -> explainer.LoadedModel:
    return explainer.load_model(keras_model, labels=FINDINGS, preprocess="unit")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(7)
    img = rng.integers(0, 90, (SIZE, SIZE, 3), dtype=np.uint8)
    img[8:20, 10:22] = (230, 200, 60)  # some structure for the maps to find
    return img


@pytest.fixture(scope="module")
def truth(keras_model, image) -> np.ndarray:
    """The model's own probabilities for ``image`` (what the chat must report)."""
    return keras_model.predict(image[None].astype(np.float32) / 255.0, verbose=0)[0]


@pytest.fixture
def chat(model, image) -> ChatSession:
    session = ChatSession(model)
    assert not session.respond("", [image]).error
    return session


def _words(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def _pct(p: float) -> str:
    return _words(percent(p))


def _positive(probs: np.ndarray, threshold: float) -> list[str]:
    order = np.argsort(-probs)
    return [FINDINGS[i] for i in order if probs[i] >= threshold]


# ------------------------------------------------------------------------------------------ the test model


def test_fixture_model_spans_the_thresholds(truth):
    """Two findings above 0.5, one between 0.3 and 0.5, one below 0.3: every branch below is exercised."""
    assert sorted(truth > 0.5) == [False, False, True, True]
    assert ((truth > 0.3) & (truth < 0.5)).sum() == 1
    assert (np.abs(truth - 0.5) > 0.02).all() and (np.abs(truth - 0.3) > 0.02).all()  # no rounding ties


def test_the_chat_reads_the_head_and_the_models_own_probabilities(chat, truth):
    result = chat.state.explanation()
    assert result.head == "multilabel" and result.decision_threshold == 0.5
    np.testing.assert_allclose(result.probabilities, truth, atol=1e-5)


# ------------------------------------------------------------------------------------------ what is it?


def test_what_lists_exactly_the_positive_findings(chat, truth):
    reply = chat.respond("what is it?")
    expected = _positive(truth, 0.5)
    assert [p["label"] for p in reply.data["positive"]] == expected
    for p in reply.data["positive"]:
        assert p["probability"] == pytest.approx(truth[FINDINGS.index(p["label"])], abs=1e-5)
    text = _words(reply.markdown)
    head = text.split("\n\n")[0]  # the sentence naming the positive findings
    for label in FINDINGS:
        named = f"**{label}** ({_pct(truth[FINDINGS.index(label)])})" in head
        assert named == (label in expected), label
    assert len(expected) == 2 and _pct(0.5) in head
    assert reply.data["head"] == "multilabel" and reply.data["decision_threshold"] == 0.5
    assert "runner-up" not in text and "share" not in text  # no softmax ideas


def test_what_says_when_nothing_is_positive(keras_model, image, truth):
    strict = explainer.load_model(keras_model, labels=FINDINGS, preprocess="unit")
    strict.info.decision_threshold = 0.95
    session = ChatSession(strict)
    reply = session.respond("what is it?", [image])
    assert reply.data["positive"] == []
    text = _words(reply.markdown)
    best = FINDINGS[int(np.argmax(truth))]
    assert f"**{best}** ({_pct(truth.max())})" in text and _pct(0.95) in text


# ---------------------------------------------------------------------------------------------- why?


def test_why_shows_one_map_per_positive_finding(chat, truth):
    reply = chat.respond("why?")
    expected = _positive(truth, 0.5)
    assert len(reply.images) == len(expected)
    assert [e["target"]["label"] for e in reply.data["explanations"]] == expected
    text = _words(reply.markdown)
    for label, shown in zip(expected, reply.data["explanations"], strict=True):
        result = chat.state.explanation(label)
        assert shown["region"] == result.region.to_dict()
        line = next(row for row in text.splitlines() if row.startswith(f"- **{label}**"))
        assert _pct(result.probability) in line
        if result.region.coverage > 0:  # its region in words
            assert _pct(result.region.coverage) in line
    for (picture, caption), label in zip(reply.images, expected, strict=True):
        assert label in caption and picture is chat.state.overlay(chat.state.explanation(label))


def test_why_respects_top_k(chat, truth):
    chat.respond("set top-k to 1")
    reply = chat.respond("why?")
    assert len(reply.images) == 1
    assert reply.data["explanations"][0]["target"]["label"] == _positive(truth, 0.5)[0]
    assert reply.data["not_shown"] == len(_positive(truth, 0.5)) - 1 == 1


def test_why_with_no_positive_finding_shows_the_most_probable(keras_model, image, truth):
    strict = explainer.load_model(keras_model, labels=FINDINGS, preprocess="unit")
    strict.info.decision_threshold = 0.95
    reply = ChatSession(strict).respond("why?", [image])
    best = int(np.argmax(truth))
    assert len(reply.images) == 1 and reply.data["explanation"]["target"]["index"] == best
    text = _words(reply.markdown)
    assert _pct(truth[best]) in text and _words(points(0.95 - truth[best])) in text and "below" in text


# ---------------------------------------------------------------------------------------------- how sure?


def test_how_sure_gives_each_probability_and_its_distance_to_the_threshold(chat, truth):
    reply = chat.respond("how sure is it?")
    assert reply.intent == I.CONFIDENCE
    text = _words(reply.markdown)
    assert "runner" not in text.lower() and "margin" not in reply.data
    findings = {f["label"]: f for f in reply.data["findings"]}
    assert set(findings) == set(FINDINGS)
    for label, f in findings.items():
        p = float(truth[FINDINGS.index(label)])
        assert f["probability"] == pytest.approx(p, abs=1e-5)
        assert f["distance"] == pytest.approx(p - 0.5, abs=1e-5)
        assert f["positive"] == (p >= 0.5)
        row = next(r for r in text.splitlines() if r.startswith(f"| {label} |"))
        assert _pct(p) in row and _words(points(p - 0.5, signed=True)) in row


def test_how_likely_is_one_finding(chat, truth):
    reply = chat.respond("how likely is nodule?")
    p = float(truth[FINDINGS.index("nodule")])
    text = _words(reply.markdown)
    asked = reply.data["asked"]
    assert asked["label"] == "nodule" and asked["probability"] == pytest.approx(p, abs=1e-5)
    assert asked["distance"] == pytest.approx(p - 0.5, abs=1e-5) and asked["positive"] == (p >= 0.5)
    assert _pct(p) in text and _words(points(abs(p - 0.5))) in text


# ------------------------------------------------------------------------------------------- why not X?


def test_why_not_uses_the_findings_own_probability_and_map(chat, truth):
    label = min(FINDINGS, key=lambda name: truth[FINDINGS.index(name)])  # clearly negative
    p = float(truth[FINDINGS.index(label)])
    reply = chat.respond(f"why not {label}?")
    assert reply.intent == I.CLASS and not reply.error
    result = chat.state.explanation(label)
    assert reply.data["explanation"]["target"]["label"] == label
    assert len(reply.images) == 1 and reply.images[0][0] is chat.state.overlay(result)
    text = _words(reply.markdown)
    assert label not in reply.data["explanation"]["positive"]
    assert _pct(p) in text and _words(points(0.5 - p)) in text
    assert "less likely" not in text and "top class" not in text  # no comparison with a winner


def test_why_not_a_positive_finding_says_it_is_reported(chat, truth):
    label = _positive(truth, 0.5)[1]
    reply = chat.respond(f"why not {label}?")
    assert label in reply.data["explanation"]["positive"]
    assert reply.data["explanation"]["target"]["label"] == label
    assert _pct(truth[FINDINGS.index(label)]) in _words(reply.markdown)


# -------------------------------------------------------------------------------------- does it hold up?


def test_trust_check_reports_the_targets_own_probability(chat, model, keras_model):
    result = chat.state.explanation()
    reply = chat.respond("does it hold up?")
    check = reply.data["occlusion"]
    assert check["original"] == pytest.approx(result.probability, abs=1e-5)
    # Re-score the hidden image with the model itself: the per-label sigmoid, not a softmax over the findings.
    hidden = occlusion_check(model, result, seed=chat.current.number).hidden_image
    own = keras_model.predict(hidden[None].astype(np.float32) / 255.0, verbose=0)[0, result.target_index]
    assert check["hidden"] == pytest.approx(float(own), abs=1e-5)
    assert "top class becomes" not in _words(reply.markdown)


# ------------------------------------------------------------------------------------- sidecar threshold


def test_sidecar_decision_threshold_changes_the_positive_set(keras_model, image, truth, tmp_path):
    path = tmp_path / "chest.keras"
    keras_model.save(path)
    path.with_suffix(".json").write_text(json.dumps({"labels": FINDINGS, "preprocess": "unit",
                                                     "decision_threshold": 0.3}))
    loaded = explainer.load_model(str(path))
    assert loaded.info.head == "multilabel" and loaded.info.decision_threshold == 0.3
    session = ChatSession(loaded)
    reply = session.respond("what is it?", [image])
    expected = _positive(truth, 0.3)
    assert len(expected) == len(_positive(truth, 0.5)) + 1
    assert [p["label"] for p in reply.data["positive"]] == expected
    assert _pct(0.3) in _words(reply.markdown)
    assert len(session.respond("why?").images) == len(expected)
    described = session.respond("which model?")
    assert described.data["decision_threshold"] == pytest.approx(0.3) and _pct(0.3) in _words(described.markdown)


def test_model_description_names_the_head(chat):
    reply = chat.respond("which model?")
    assert reply.data["head"] == "multilabel" and reply.data["n_labels"] == 4
    assert reply.data["decision_threshold"] == 0.5 and _pct(0.5) in _words(reply.markdown)


def _head_cnn(units: int, activation: str | None, channels: int = 3) -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, channels))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation)(x))


@pytest.mark.parametrize(("units", "activation", "channels", "head"), [
    (1, "sigmoid", 3, "sigmoid"), (3, None, 3, "linear"), (4, "sigmoid", 1, "multilabel"),
])
def test_model_description_for_other_heads_and_channels(image, units, activation, channels, head):
    labels = ["normal", "pneumonia"] if units == 1 else FINDINGS[:units]
    model = explainer.load_model(_head_cnn(units, activation, channels), labels=labels, preprocess="unit")
    assert model.info.head == head
    session = ChatSession(model)
    described = session.respond("which model?")
    assert (described.data["head"], described.data["channels"], described.data["n_labels"]) == (head, channels,
                                                                                                 len(labels))
    assert all(label in _words(described.markdown) for label in labels)
    for question in ("what is it?", "why?", "how sure?"):  # every head answers, grey models too
        reply = session.respond(question, [image] if question == "what is it?" else [])
        assert not reply.error and reply.data["head"] == head, question
    assert ("findings" in reply.data) == (head == "multilabel")


# ------------------------------------------------------------------------------------------- blank images


def test_image_structure_tells_blank_from_real(image):
    assert image_structure(np.full((40, 40, 3), 128, np.uint8)).blank
    noisy_flat = np.clip(128 + np.random.default_rng(0).normal(0, 0.8, (40, 40, 3)), 0, 255).astype(np.uint8)
    assert image_structure(noisy_flat).blank  # JPEG-like noise on one colour is still blank
    assert not image_structure(image).blank
    dot = np.zeros((512, 512, 3), np.uint8)
    dot[100:104, 100:104] = 255
    assert image_structure(dot, (32, 32)).std < BLANK_STD  # what a 32×32 model sees of a 4-pixel dot


@pytest.mark.parametrize("question", ["what is it?", "why?", "how sure?"])
def test_blank_image_answers_warn(model, question):
    session = ChatSession(model)
    blank = np.full((64, 64, 3), 200, np.uint8)
    reply = session.respond(question, [blank])
    assert not reply.error
    assert reply.data["structure"]["blank"] is True
    assert f"{reply.data['structure']['grey_std']:.1f}" in reply.markdown  # the measured spread is shown


def test_real_image_answers_do_not_warn(chat):
    reply = chat.respond("what is it?")
    assert reply.data["structure"]["blank"] is False


def test_blank_image_warning_for_softmax_models_too():
    softmax = explainer.load_model(gap_cnn(), labels=["a", "b", "c", "d"], preprocess="unit")
    reply = ChatSession(softmax).respond("", [np.zeros((32, 32, 3), np.uint8)])
    assert reply.intent == I.WHY and reply.data["structure"]["blank"] is True


def test_empty_map_is_said_next_to_the_classification(image):
    model = explainer.load_model(multilabel_cnn(negative_top=True), labels=FINDINGS, preprocess="unit")
    session = ChatSession(model)
    session.respond("", [image])
    result = session.state.explanation()
    assert result.target_label == FINDINGS[0] and result.region.coverage == 0 and result.heatmap.max() == 0
    reply = session.respond("what is it?")
    assert reply.data["empty_map"] is True
    why = session.respond("why?")
    assert why.data["explanation"]["region"]["coverage"] == 0 and why.data["explanation"]["target"]["label"] \
        == FINDINGS[0]
    assert _pct(result.probability) in _words(why.markdown)


def test_real_map_is_not_called_empty(chat):
    reply = chat.respond("what is it?")
    assert reply.data["empty_map"] is False and "is empty" not in _words(reply.markdown)


# ------------------------------------------------------------------------------------------ image notes


def test_notes_of_the_image_loader_open_the_answer(model, image, monkeypatch):
    """Whatever the question, notes the loader made about a new upload are shown once, with its number."""
    session = ChatSession(model)
    plain_add = session.state.add_image

    def add_with_notes(source):
        entry = plain_add(source)
        entry.notes = ["This DICOM file has 12 frames; the first is explained."]
        return entry

    monkeypatch.setattr(session.state, "add_image", add_with_notes)
    reply = session.respond("how sure?", [image])
    text = _words(reply.markdown)
    assert text.startswith("_Image 1: This DICOM file has 12 frames; the first is explained._")
    assert reply.data["image_notes"] == [{"number": 1, "notes": ["This DICOM file has 12 frames; the first is "
                                                                  "explained."]}]
    assert "12 frames" not in session.respond("why?").markdown  # said once, with the upload


# ------------------------------------------------------------------------------------ softmax unchanged


def test_softmax_model_keeps_its_answers(image):
    softmax = explainer.load_model(gap_cnn(), labels=["a", "b", "c", "d"], preprocess="unit")
    session = ChatSession(softmax)
    session.respond("", [image])
    result = session.state.explanation()
    assert result.head == "softmax" and result.positive == []
    what = session.respond("what is it?")
    assert "positive" not in what.data and what.data["head"] == "softmax"
    sure = session.respond("how sure?")
    runner = result.predictions[1]
    assert sure.data["margin"] == pytest.approx(result.probability - runner.probability)
    assert "findings" not in sure.data
    why = session.respond("why?")
    assert len(why.images) == 1 and "explanations" not in why.data
    assert session.respond("which model?").data["head"] == "softmax"

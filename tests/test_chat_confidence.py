""""How sure are you?" with a calibrated model: where the probability comes from, the prediction set, and "a guess"
whenever the image is unlike the training data (the feature-space check), whatever the percentage."""

from __future__ import annotations

import re

import pytest
from planted_models import fixture, planted_grey

import explainer
from explainer.chat import ChatSession
from explainer.demo.generate import draw_plain_shape, not_shapes


@pytest.fixture(scope="module")
def shapes() -> explainer.LoadedModel:
    return explainer.load_model("shapes")


def _words(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def _ask(model, image, question: str = "how sure are you?"):
    chat = ChatSession(model)
    assert not chat.respond("", [image]).error
    return chat, chat.respond(question)


def test_a_calibrated_answer_says_where_its_probability_comes_from(shapes):
    chat, reply = _ask(shapes, draw_plain_shape("star", 128, diameter=70)[0])
    result = chat.state.explanation()
    calibration = result.to_dict()["calibration"]
    text = _words(reply.markdown)
    assert result.calibrated and reply.data["calibrated"] is True
    assert f"calibrated on {calibration['images']} labelled images" in text
    assert reply.data["raw_probability"] == pytest.approx(result.top.raw_probability)
    assert reply.data["prediction_set"] == result.prediction_set()
    if result.prediction_set():
        assert "coverage" in text and result.prediction_set()[0] in text
    assert "not calibrated probabilities" not in text


def test_images_unlike_the_training_data_are_never_called_sure(shapes):
    images, kinds = not_shapes(24, seed=5)
    flagged = 0
    for image in images:
        chat, reply = _ask(shapes, image)
        result = chat.state.explanation()
        text = _words(reply.markdown)
        if result.ood["unusual"]:
            flagged += 1
            assert reply.data["qualifier"] == "guess" and "unlike the model's training data" in text
            assert "confident" not in text.split("\n")[0] and "fairly sure" not in text
    assert flagged >= len(images) // 2  # most of these textures, text and blobs are flagged
    assert len(set(kinds)) >= 4


def test_an_uncalibrated_model_keeps_the_caveat():
    model = fixture("grey")
    images, _labels, _masks = planted_grey(4, seed=3)
    chat, reply = _ask(model, images[0])
    assert not chat.state.explanation().calibrated and reply.data["calibrated"] is False
    assert "not calibrated probabilities" in _words(reply.markdown)

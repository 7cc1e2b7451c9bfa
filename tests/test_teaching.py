"""What a learner hears: a class the model does not know, a message about something else, a torn top-3."""

from __future__ import annotations

import re

import pytest

import explainer
from explainer.chat import ChatSession
from explainer.chat import intents as I
from explainer.chat.answers import TORN_FLOOR, TORN_MARGIN, torn_between
from explainer.demo.generate import draw_plain_shape
from explainer.result import Prediction


@pytest.fixture(scope="module")
def chat() -> ChatSession:
    session = ChatSession(explainer.load_model("shapes"))
    assert not session.respond("", [draw_plain_shape("star", 128)[0]]).error
    return session


def _words(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


@pytest.mark.parametrize("question", ["is this a dog?", "is it a cat", "Is that a horse?"])
def test_a_class_the_model_does_not_know_is_named_with_the_ones_it_knows(chat, question):
    reply = chat.respond(question)
    text = _words(reply.markdown)
    animal = question.rstrip("?").split()[-1].lower()
    assert reply.intent == "unknown_class" and f'no class called "{animal}"' in text
    assert all(label in text for label in chat.model.labels)


@pytest.mark.parametrize("question", ["is it sure?", "is it right?", "is it a star"])
def test_judging_words_and_known_labels_are_not_unknown_classes(chat, question):
    assert chat.respond(question).intent != "unknown_class"


@pytest.mark.parametrize("question", ["what is the weather like", "what's your favourite film", "tell me a joke"])
def test_an_off_topic_message_says_what_the_bot_answers(chat, question):
    reply = chat.respond(question)
    assert reply.intent == I.UNKNOWN and not reply.images
    assert _words(reply.markdown).startswith("I can answer questions about this image and the model")
    assert len(reply.suggestions) >= 3


def test_a_torn_top_three_is_called_torn():
    spread = [Prediction(0, "cross", 0.21), Prediction(1, "star", 0.20), Prediction(2, "square", 0.20),
              Prediction(3, "circle", 0.05)]
    assert [p.label for p in torn_between(spread)] == ["cross", "star", "square"]
    clear = [Prediction(0, "cross", 0.90), Prediction(1, "star", 0.05)]
    assert torn_between(clear) == []
    edge = [Prediction(0, "a", 0.5), Prediction(1, "b", 0.5 - TORN_MARGIN), Prediction(2, "c", TORN_FLOOR / 2)]
    assert torn_between(edge) == []  # exactly the margin apart: one stands out


def test_the_what_answer_says_torn_when_it_is(chat, monkeypatch):
    """The answer names the classes :func:`torn_between` finds (its rule is tested above), and only then."""
    from explainer.chat import answers

    predictions = chat.state.explanation().predictions
    assert "torn between" not in _words(chat.respond("what is it?").markdown)  # a clear star
    monkeypatch.setattr(answers, "torn_between", lambda _p: list(predictions[:3]))
    text = _words(chat.respond("what is it?").markdown)
    assert "torn between" in text and all(p.label in text.split("torn between")[1][:80] for p in predictions[:3])


def test_hold_up_tells_a_faithful_map_from_a_right_reason_on_the_shortcut_example():
    """The shortcut model on its own example: the map is faithful (hiding the tag drops the score) and the answer
    says the highlighted part is the tag, not the drawn square; its follow-ups ask about the shape drawn."""
    from explainer.demo import load_examples
    from explainer.demo.generate import MARK_BOX

    example = next(e for e in load_examples() if e.model == "shapes-shortcut" and e.mark and e.mark != e.label)
    chat = ChatSession(explainer.load_model("shapes-shortcut"))
    chat.know(example.image, shows=example.label, mark_box=list(MARK_BOX))
    first = chat.respond("why?", [example.image])
    assert first.suggestions[0] == f"Why not {example.label}?"
    text = _words(chat.respond("does it hold up?").markdown)
    assert "The map is faithful to the model" in text
    assert "the coloured tag in the corner" in text and "right for the wrong reason" in text


def test_hold_up_compares_with_the_users_region_when_one_was_given(tmp_path):
    from app_server import shape_png

    chat = ChatSession(explainer.load_model("shapes"))
    chat.respond("", [shape_png(tmp_path, "star")])  # a star in the centre: the map is faithful there
    chat.respond("is it looking at 40, 20, 120, 120?")  # x, y, w, h: a box around the star
    inside = _words(chat.respond("does it hold up?").markdown)
    assert "The map is faithful" in inside and "And it is where you said the evidence should be" in inside
    chat.respond("is it looking at the upper right?")
    outside = _words(chat.respond("does it hold up?").markdown)
    assert "But that is not where you said the evidence should be" in outside


def test_hold_up_without_anything_known_says_what_would_tell(chat):
    text = _words(chat.respond("does it hold up?").markdown)
    if "The map is faithful" in text:
        assert "A faithful map is not yet a right reason" in text

"""The serving helpers without a server: limits from the environment, folding old turns, a painted mask."""

from __future__ import annotations

import numpy as np
import pytest

from explainer.serving import ServerLimits, fold, painted_mask


def turn(n: int, pictures: int = 1) -> list[dict]:
    return [{"role": "user", "content": f"question {n}"},
            *({"role": "assistant", "content": f"answer {n}.{i}"} for i in range(1 + pictures))]


def test_limits_come_from_the_environment_and_bad_values_are_named():
    assert ServerLimits.from_env({}) == ServerLimits()
    limits = ServerLimits.from_env({"EXPLAINER_TURN_SECONDS": "2.5", "EXPLAINER_SHOWN_MESSAGES": "10"})
    assert limits.turn_seconds == 2.5 and limits.shown_messages == 10
    with pytest.raises(ValueError, match="EXPLAINER_QUEUE_PER_SESSION must be a number"):
        ServerLimits.from_env({"EXPLAINER_QUEUE_PER_SESSION": "many"})
    with pytest.raises(ValueError, match="EXPLAINER_SESSION_TTL must be positive"):
        ServerLimits.from_env({"EXPLAINER_SESSION_TTL": "0"})


def test_a_short_conversation_is_not_folded():
    messages = turn(1) + turn(2)
    assert fold(messages, 10) == (messages, 0)


def test_old_turns_fold_into_one_note_at_a_question_and_the_count_adds_up():
    messages = [m for n in range(10) for m in turn(n)]  # 30 messages
    shown, folded = fold(messages, 10)
    assert folded == 21 and len(shown) == 10  # the cut falls where question 7 starts: 9 kept + the note
    assert "21 earlier messages" in shown[0]["content"] and shown[1]["content"] == "question 7"
    more = shown + turn(10) + turn(11)
    shown, folded = fold(more, 10, folded)
    assert folded == 27 and "27 earlier messages" in shown[0]["content"] and shown[1]["content"] == "question 9"
    assert sum("earlier messages" in str(m["content"]) for m in shown) == 1


def test_a_painted_mask_is_the_opaque_brush_strokes():
    layer = np.zeros((20, 30, 4), np.uint8)
    layer[5:10, 8:12] = (255, 0, 255, 255)
    mask = painted_mask({"background": np.zeros((20, 30, 4), np.uint8), "layers": [layer], "composite": None})
    assert mask.shape == (20, 30) and mask.sum() == 20 and mask[7, 9]
    assert painted_mask({"layers": [np.zeros((20, 30, 4), np.uint8)]}) is None  # nothing painted
    for hostile in (None, "x", {"layers": "no"}, {"layers": [np.zeros((5, 5))]}, {"layers": [np.zeros((5, 5, 3))]}):
        assert painted_mask(hostile) is None

"""Text inside pictures: every caption the catalogue can produce is drawn in the shipped font, none as "?" or tofu."""

from __future__ import annotations

import string

import numpy as np
import pytest
from fontTools.ttLib import TTFont

from explainer.chat.messages import MESSAGES, message
from explainer.render import FONT_FILE, bar_chart, caption, fit_text, font
from explainer.result import Prediction

#: Values as the chat fills them: typographic signs, a layer shape, labels with accents and dashes.
FIELDS = {"label": "crème brûlée – 2", "method": "Grad-CAM++", "model": "shapes", "image": 2, "count": 3,
          "probability": 0.4213, "threshold": 0.6, "top": "circle", "asked": "square", "rank": 2, "auc": 0.23,
          "name": "conv_2 (16×16×64)", "shape": "16×16×64", "segmenter": "soft GrabCut", "setting": "opacity",
          "value": "45 %", "layer": "block_3", "depth": "0.5", "score": 0.91}


def _filled(text: str) -> dict:
    fields = dict(FIELDS)
    for _lit, field, spec, _conv in string.Formatter().parse(text):
        if field and field not in fields:
            fields[field] = 0.5 if spec else "x"
    return fields


CAPTIONS = {key: message(key, **_filled(text)) for key, text in MESSAGES.items() if key.startswith("caption.")}


@pytest.fixture(scope="module")
def glyphs() -> set[int]:
    return set(TTFont(FONT_FILE).getBestCmap())


def test_every_catalogue_caption_has_a_glyph_for_each_character(glyphs):
    assert len(CAPTIONS) > 20
    missing = {key: sorted({ch for ch in text if ord(ch) not in glyphs}) for key, text in CAPTIONS.items()}
    assert {key: chars for key, chars in missing.items() if chars} == {}
    assert {"×", "·", "–", "é"} <= set("".join(CAPTIONS.values()) + FIELDS["label"])


@pytest.mark.parametrize("key", sorted(CAPTIONS))
def test_each_caption_is_drawn_as_text_not_as_question_marks(key):
    picture = caption(np.zeros((64, 900, 3), np.uint8), CAPTIONS[key])
    strip = picture[:28]
    assert (strip < 128).any()  # something was drawn on the white strip
    question = caption(np.zeros((64, 900, 3), np.uint8), CAPTIONS[key].replace("·", "?").replace("×", "?"))
    if "·" in CAPTIONS[key] or "×" in CAPTIONS[key]:
        assert not np.array_equal(strip, question[:28])  # a middle dot is not drawn as a question mark


def test_long_text_is_cut_with_an_ellipsis_to_fit():
    text = fit_text("a very long class name " * 10, 16, 200)
    assert text.endswith("…") and font(16).getlength(text) <= 200
    assert fit_text("short", 16, 200) == "short"


def test_the_bar_chart_draws_labels_with_their_accents():
    chart = bar_chart([Prediction(0, "crème brûlée", 0.7), Prediction(1, "naïve", 0.3)])
    plain = bar_chart([Prediction(0, "creme brulee", 0.7), Prediction(1, "naive", 0.3)])
    assert chart.shape == plain.shape and not np.array_equal(chart, plain)

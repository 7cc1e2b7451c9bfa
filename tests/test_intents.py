"""The chat's intent matcher on many phrasings, typos, class names, methods, layers, images and hostile input."""

from __future__ import annotations

import time

import pytest

from explainer.cams import METHODS, BaseCAM, method_key, spellings
from explainer.chat import INTENTS, QUESTIONS, RULES, parse
from explainer.chat import intents as I
from explainer.chat.intents import MAX_QUESTION_CHARS, Vocab, find_methods

LABELS = ("circle", "square", "triangle", "star", "cross", "tabby cat", "tiger cat", "mask", "electrical switch")
VOCAB = Vocab(
    labels=LABELS,
    layers=("stem_relu", "conv2_relu", "conv3", "last_conv_relu", "mobilenetv2_1.00_224/Conv_1"),
    models=("shapes", "shapes-shortcut", "mobilenet_v2"),
    colormaps=("turbo", "inferno", "viridis", "magma", "jet"),
)

PHRASINGS = [
    # what is it
    ("what is it?", I.WHAT),
    ("What's this", I.WHAT),
    ("whats in the picture", I.WHAT),
    ("classify this image please", I.WHAT),
    ("what do you see", I.WHAT),
    ("which class is it", I.WHAT),
    ("top 5 predictions", I.WHAT),
    ("prediction?", I.WHAT),
    ("identify the object", I.WHAT),
    ("what kind of shape is that", I.WHAT),
    # why / explain / where is it looking
    ("why?", I.WHY),
    ("Why", I.WHY),
    ("explain", I.WHY),
    ("explain this", I.WHY),
    ("where is it looking?", I.WHY),
    ("where does the model look", I.WHY),
    ("what made it decide that", I.WHY),
    ("show me the heatmap", I.WHY),
    ("which part of the image matters", I.WHY),
    ("how did it decide", I.WHY),
    ("what is it looking at", I.WHY),
    ("wher is it lookin", I.WHY),  # typos
    ("explian pls", I.WHY),
    ("whyy", I.WHY),
    ("qwerty zxcv", I.UNKNOWN),  # too far from any keyword: not guessed
    # how confident
    ("how confident are you?", I.CONFIDENCE),
    ("how sure is it", I.CONFIDENCE),
    ("Is it certain?", I.CONFIDENCE),
    ("what's the probability", I.CONFIDENCE),
    ("how likely is that", I.CONFIDENCE),
    ("condifent?", I.CONFIDENCE),
    ("how confidnt is the model", I.CONFIDENCE),
    ("probabilty?", I.CONFIDENCE),
    # why not X / what about X / explain X
    ("why not a square?", I.CLASS),
    ("Why isn't it a star", I.CLASS),
    ("why is it not a tiger cat", I.CLASS),
    ("what about the triangle", I.CLASS),
    ("how about cross?", I.CLASS),
    ("explain triangle", I.CLASS),
    ("show me the star", I.CLASS),
    ("is it a circle?", I.CLASS),
    ("could it be a square", I.CLASS),
    ("where is the cross", I.CLASS),
    ("square instead?", I.CLASS),
    ("evidence for star", I.CLASS),
    ("tabby cat", I.CLASS),
    ("circle?", I.CLASS),
    ("why not a zebra", I.CLASS),  # unknown class: still a class question (answered with "no such class")
    # region
    ("show the region", I.REGION),
    ("box it", I.REGION),
    ("segment the object", I.REGION),
    ("draw the bounding box", I.REGION),
    ("crop it", I.REGION),
    ("outline the area please", I.REGION),
    ("segmnet it", I.REGION),
    # trust
    ("does it hold up?", I.TRUST),
    ("is this trustworthy", I.TRUST),
    ("can I trust this map?", I.TRUST),
    ("is the explanation reliable", I.TRUST),
    ("sanity check please", I.TRUST),
    ("trustworty?", I.TRUST),
    ("hide the highlighted region", I.TRUST),
    ("is it really looking at the shape or cheating", I.TRUST),
    ("is it using a shortcut?", I.TRUST),
    # compare classes
    ("compare with the second guess", I.COMPARE_CLASSES),
    ("what else could it be?", I.COMPARE_CLASSES),
    ("show the runner-up", I.CLASS),  # the runner-up's own map: a class question about rank 2
    ("why not the second guess?", I.CLASS),
    ("show top 3 maps", I.COMPARE_CLASSES),
    ("compare the top classes", I.COMPARE_CLASSES),
    ("other candidates side by side", I.COMPARE_CLASSES),
    # compare methods / use a method
    ("compare methods", I.COMPARE_METHODS),
    ("show all methods", I.COMPARE_METHODS),
    ("grad-cam vs score-cam", I.COMPARE_METHODS),
    ("use grad-cam++", I.USE_METHOD),
    ("try score cam", I.USE_METHOD),
    ("switch to Eigen-CAM", I.USE_METHOD),
    ("HiResCAM please", I.USE_METHOD),
    ("which method is this", I.USE_METHOD),
    # layers
    ("which layer", I.LAYERS),
    ("show layers", I.LAYERS),
    ("what do different layers see", I.LAYERS),
    ("use layer conv3", I.USE_LAYER),
    ("layer 2", I.USE_LAYER),
    ("a deeper layer", I.USE_LAYER),
    ("try an earlier layer", I.USE_LAYER),
    ("back to the default layer", I.USE_LAYER),
    ("use conv2_relu", I.USE_LAYER),
    # teaching and help
    ("what is grad-cam?", I.TEACH),
    ("how does this work", I.TEACH),
    ("What is Score-CAM", I.TEACH),
    ("what does the red mean", I.LEGEND),  # the colour scale answers it better than the method page
    ("how is the heatmap computed", I.TEACH),
    ("help", I.HELP),
    ("what can I ask?", I.HELP),
    ("?", I.HELP),
    # models, settings, images, small talk
    ("use the shortcut model", I.MODEL),
    ("switch to mobilenet_v2", I.MODEL),
    ("which model is this", I.MODEL),
    ("set opacity to 30%", I.SETTING),
    ("use viridis", I.SETTING),
    ("threshold 0.3", I.SETTING),
    ("top-k 3", I.SETTING),
    ("lower the threshold", I.SETTING),
    ("raise the threshold a bit", I.SETTING),
    # is it looking where the evidence should be? (a region typed as a box or as place words)
    ("is it looking at 40, 60, 80, 80?", I.EXPECTED),
    ("the lesion is at 40,60,80,80", I.EXPECTED),
    ("it should be in the lower left", I.EXPECTED),
    ("is the evidence at x1,y1,x2,y2 = 10,10,50,50", I.EXPECTED),
    ("does it look where it should: top right", I.EXPECTED),
    ("does it look where it should?", I.EXPECTED),
    ("is it looking at 40,60,80,80 for square with gradcam++", I.EXPECTED),
    ("is the evidence in the upper left?", I.EXPECTED),
    ("40 60 80 80", I.EXPECTED),
    ("is it looking at the right place?", I.WHY),  # "right" here is no column of the grid
    ("is it looking at the top class", I.WHY),
    # the questions people ask next (more in tests/test_next_questions.py)
    ("why a circle rather than a square?", I.CONTRAST),
    ("what speaks against the star?", I.AGAINST),
    ("what if I cover the top left?", I.WHAT_IF),
    ("what do the colours mean?", I.LEGEND),
    ("previous image", I.IMAGE),
    ("go back to the first image", I.IMAGE),
    ("image 2", I.IMAGE),
    ("hello", I.GREETING),
    ("thanks!", I.GREETING),
    ("blah blah", I.UNKNOWN),
    ("", I.UNKNOWN),
]


@pytest.mark.parametrize(("text", "expected"), PHRASINGS)
def test_phrasing_maps_to_intent(text, expected):
    assert parse(text, VOCAB).name == expected


def test_every_rule_stands_for_a_registered_question():
    assert {name for name, _rule in RULES} <= set(QUESTIONS) and set(QUESTIONS) == set(INTENTS)
    assert all(question.name == name for name, question in QUESTIONS.items())


def test_enough_phrasings_cover_every_intent():
    assert len(PHRASINGS) >= 60
    assert {name for _, name in PHRASINGS} == set(INTENTS)


@pytest.mark.parametrize(("text", "target"), [
    ("why not a square?", "square"),
    ("what about the tiger cat instead", "tiger cat"),
    ("Why isn't it a STAR?", "star"),
    ("is it a cat?", "cat"),  # kept as typed: resolving (ambiguous here) is the answer's job
    ("why not zebra", "zebra"),
    ("how likely is square", "square"),
    ("show the box for star", "star"),
    ("does the triangle map hold up", "triangle"),
    ("why did you say circle", "circle"),
    ("why not a trinagle", "trinagle"),  # a misspelt class is never "corrected" into a keyword
    ("why not the runner-up?", "@2"),
    ("explain the third guess", "@3"),
    ("show the map for the second class", "@2"),
])
def test_class_names_are_extracted(text, target):
    assert parse(text, VOCAB).target == target


@pytest.mark.parametrize("text", ["explain this", "why?", "where is it looking", "mask out the region",
                                  "switch to eigen-cam", "is it sure?", "show me the heatmap"])
def test_keywords_are_not_mistaken_for_classes(text):
    """"mask" and "switch" are ImageNet labels, but here they are instructions."""
    assert parse(text, VOCAB).target is None


def test_class_question_distinguishes_strong_and_weak_forms():
    assert parse("why not a zebra", VOCAB).explicit_target
    assert parse("explain my reasoning to me", VOCAB).name != I.CLASS  # not a label: not a class question


@pytest.mark.parametrize(("text", "method"), [
    ("use grad-cam++", "gradcam++"), ("Grad CAM plus plus", "gradcam++"), ("gradcam", "gradcam"),
    ("x-grad-cam please", "xgradcam"), ("high res cam", "hirescam"), ("layer-cam", "layercam"),
    ("ScoreCAM", "scorecam"), ("eigen cam", "eigencam"),
])
def test_method_names_in_many_spellings(text, method):
    assert find_methods(text) == [method]


@pytest.mark.parametrize("key", sorted(METHODS))
def test_every_method_declares_its_facts_and_is_found_by_each_spelling(key):
    """The chat learns a method from its class: display name, aliases, class-agnostic, slow."""
    cls = METHODS[key]
    assert cls.display_name != BaseCAM.display_name
    assert cls.slow == (cls().extra_forward_passes(16) > 0)
    for spelling in spellings(cls):
        assert find_methods(f"use {spelling} please") == [key], spelling
        assert find_methods(f"use {spelling.upper().replace('-', ' ')}") == [key], spelling
        assert method_key(spelling) == key


def test_method_names_are_unique():
    """No spelling (case and separators aside) names two methods, and no two methods share a display name."""
    squashed = [{method_key(s) for s in spellings(cls)} for cls in METHODS.values()]
    assert all(len(names) == 1 for names in squashed)
    assert len({cls.display_name for cls in METHODS.values()}) == len(METHODS)


def test_two_methods_are_a_comparison():
    intent = parse("compare grad-cam++ and layercam", VOCAB)
    assert intent.name == I.COMPARE_METHODS
    assert intent.methods == ("gradcam++", "layercam")


@pytest.mark.parametrize(("text", "layer", "step"), [
    ("use layer conv3", "conv3", 0),
    ("layer CONV2_RELU", "conv2_relu", 0),
    ("layer Conv_1", "mobilenetv2_1.00_224/Conv_1", 0),  # a nested layer by its own name, spelled as the model does
    ("layer 2", "2", 0),
    ("deeper layer", None, 1),
    ("an earlier layer please", None, -1),
    ("reset the layer", "auto", 0),
])
def test_layer_requests(text, layer, step):
    intent = parse(text, VOCAB)
    assert intent.name == I.USE_LAYER
    assert (intent.layer, intent.layer_step) == (layer, step)


@pytest.mark.parametrize(("text", "ref"), [
    ("previous image", "previous"), ("why on the previous image?", "previous"), ("the last picture", "previous"),
    ("go back to the first image", "first"), ("the original photo", "first"), ("image 3", "3"),
    ("second picture", "2"), ("the latest image", "latest"), ("why?", None),
])
def test_image_references(text, ref):
    assert parse(text, VOCAB).image_ref == ref


def test_image_reference_combines_with_another_intent():
    intent = parse("how confident was it on the first image?", VOCAB)
    assert (intent.name, intent.image_ref) == (I.CONFIDENCE, "first")


@pytest.mark.parametrize(("text", "setting", "value"), [
    ("set opacity to 30%", "opacity", 0.3), ("opacity 0.7", "opacity", 0.7), ("alpha = 60", "opacity", 0.6),
    ("threshold 50 %", "threshold", 0.5), ("use the magma colormap", "colormap", "magma"),
    ("top-k 7", "top_k", 7), ("make the overlay more transparent", "opacity", "-0.15"),
    ("stronger colours please", "opacity", "+0.15"),
])
def test_settings(text, setting, value):
    intent = parse(text, VOCAB)
    assert (intent.name, intent.setting) == (I.SETTING, setting)
    assert intent.value == pytest.approx(value) if isinstance(value, float) else intent.value == value


@pytest.mark.parametrize(("text", "count"), [("top 3", 3), ("show top-10", 10), ("top three", 3),
                                             ("compare the second guess", 2), ("5 classes please", 5)])
def test_counts(text, count):
    assert parse(text, VOCAB).count == count or parse(text, VOCAB).count == count


def test_model_names_prefer_the_closest():
    assert parse("use the shapes model", VOCAB).model == "shapes"
    assert parse("use the shortcut model", VOCAB).model == "shapes-shortcut"
    assert parse("switch to mobilenet v2", VOCAB).model == "mobilenet_v2"


@pytest.mark.parametrize(("text", "region"), [
    ("is it looking at 40, 60, 80, 80?", "40, 60, 80, 80"),
    ("the lesion is at (40 60 80 80)", "40, 60, 80, 80"),
    ("is the evidence at x1,y1,x2,y2 = 10,10,50,50", "corners 10, 10, 50, 50"),
    ("it should be from 10,10 to 50,60", "corners 10, 10, 50, 60"),
    ("it should be in the lower left", "lower left"),
    ("does it look where it should: top right", "top right"),
    ("is it in the top-left corner?", "top left"),
    ("is it looking at the center?", "center"),
    ("does it look where it should?", None),
    ("is it looking at 40, 60?", "is it looking at 40, 60?"),  # not a box: the answer says what a box is
])
def test_expected_regions_are_read(text, region):
    intent = parse(text, VOCAB)
    assert (intent.name, intent.region) == (I.EXPECTED, region)


def test_expected_region_keeps_class_and_method():
    intent = parse("is it looking at 40,60,80,80 for square with gradcam++", VOCAB)
    assert (intent.region, intent.target, intent.method) == ("40, 60, 80, 80", "square", "gradcam++")


@pytest.mark.parametrize(("text", "value"), [("lower the threshold", "-0.1"), ("a lower threshold", "-0.1"),
                                             ("raise the threshold", "+0.1"), ("threshold 0.4", 0.4)])
def test_threshold_moves(text, value):
    intent = parse(text, VOCAB)
    assert (intent.name, intent.setting, intent.value) == (I.SETTING, "threshold", value)


@pytest.mark.parametrize(("text", "mask"), [
    ("here is the mask", True), ("mask of the lesion", True), ("the expected region", True),
    ("ground truth for this image", True), ("is it a mask?", False), ("why not a mask", False),
    ("why?", False), ("", False),
])
def test_a_file_is_a_mask_when_the_message_says_so(text, mask):
    assert I.names_mask(text) is mask


def test_huge_question_is_cut_and_fast():
    text = "why " + "blah " * 2500  # 12,504 characters
    started = time.perf_counter()
    intent = parse(text, VOCAB)
    elapsed = time.perf_counter() - started
    assert intent.name == I.WHY
    assert len(intent.text) <= MAX_QUESTION_CHARS
    assert elapsed < 5.0  # generous: guards against pathological regex behaviour, not a benchmark


@pytest.mark.parametrize("text", ["🐱 why? 🤔", "WHY??!!", "  why  \n\n ", "why\u202e?", "why\x00\x07"])
def test_emoji_case_whitespace_and_control_characters(text):
    assert parse(text, VOCAB).name == I.WHY


def test_control_and_bidi_characters_are_removed_from_the_text():
    intent = parse("why\u202e\x00 not a square\u200b", VOCAB)
    assert "\u202e" not in intent.text and "\x00" not in intent.text and "\u200b" not in intent.text
    assert intent.target == "square"


@pytest.mark.parametrize("text", ["<script>alert(1)</script>", "**bold** [x](javascript:alert(1))",
                                  "'; DROP TABLE users; --", "{{ 7*7 }} {% raw %}", "$$\\frac{1}{0}$$"])
def test_hostile_text_parses_without_error(text):
    assert parse(text, VOCAB).name in INTENTS


def test_without_vocabulary_nothing_breaks():
    assert parse("why not a square?").name == I.CLASS
    assert parse("explain square").name == I.WHY  # no labels known: a weak class form is just "explain"


@pytest.mark.parametrize(("text", "setting", "value", "typed"), [
    ("opacity 9e99", "opacity", None, "9e99"),  # not 9 %: an exponent is not a plain number
    ("threshold -5 %", "threshold", -0.05, "-5 %"),  # not 5 %: the sign is kept
    ("threshold −5 %", "threshold", -0.05, "−5 %"),  # the typographic minus too
    ("threshold 1e-3", "threshold", None, "1e-3"),
    ("top-k 9e99", "top_k", None, "9e99"),
    ("top k 2.5", "top_k", 2.5, "2.5"),
    ("opacity 150 %", "opacity", 1.5, "150 %"),
    ("set the opacity to 30 percent", "opacity", 0.3, "30 percent"),
    ("opacty 40", "opacity", 0.4, "40"),  # a misspelt setting still reads its number from the original text
])
def test_setting_numbers_keep_their_sign_and_exponent(text, setting, value, typed):
    intent = parse(text, VOCAB)
    assert (intent.name, intent.setting, intent.typed) == (I.SETTING, setting, typed)
    assert intent.value == (pytest.approx(value) if value is not None else None)


@pytest.mark.parametrize(("setting", "value", "typed", "message"), [
    ("opacity", None, "9e99", "Opacity must be between 0 and 1 (or 0–100 %), written as a plain number"),
    ("threshold", -0.05, "-5 %", "The threshold must be above 0 and at most 1 (or 100 %)"),
    ("threshold", 0.0, "0", "The threshold must be above 0"),
    ("opacity", 1.5, "150 %", "Opacity must be between 0 and 1"),
    ("top_k", 2.5, "2.5", "Top-k must be a whole number from 1 to 20"),
    ("top_k", 21, "21", "Top-k must be a whole number from 1 to 20"),
])
def test_numbers_out_of_range_are_refused_with_the_range_and_what_was_typed(setting, value, typed, message):
    from explainer.chat.session import SettingError, setting_number

    with pytest.raises(SettingError) as caught:
        setting_number(setting, value, typed)
    assert message in str(caught.value) and f"'{typed}' is not one" in str(caught.value)


@pytest.mark.parametrize("text", ["show the settings", "settings", "what are the settings?"])
def test_asking_for_the_settings_shows_them(text):
    intent = parse(text, VOCAB)
    assert (intent.name, intent.setting, intent.value) == (I.SETTING, None, None)


def test_numbers_in_range_are_taken():
    from explainer.chat.session import setting_number

    assert setting_number("opacity", 0.0, "0") == 0.0 and setting_number("threshold", 1.0, "100 %") == 1.0
    assert setting_number("top_k", 20.0, "20") == 20 and isinstance(setting_number("top_k", 3, "3"), int)

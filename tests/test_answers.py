"""The chat's answers, end to end without Gradio, on a real Keras model trained in seconds.

The model (``tests/planted_models.py``) classifies noise images by the colour of one planted square, so the evidence
is known to sit on the square: answers are checked against the numbers of real explanations, and the occlusion
check must find that hiding the square hurts more than hiding a random box.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re

import numpy as np
import pytest
from PIL import Image
from planted_models import LABELS, planted_squares, trained_model

from explainer import LoadedModel, predict
from explainer.cams import METHODS, BaseCAM
from explainer.chat import QUESTIONS, ChatSession, Question, Reply, answer_once, parse, vocab
from explainer.chat import intents as I
from explainer.chat import session as session_module
from explainer.chat.answers import qualifier
from explainer.chat.checks import occlusion_check, out_of_distribution
from explainer.chat.intents import Vocab
from explainer.demo.train import reference_statistics
from explainer.errors import ExplainerError
from explainer.layers import depth_layer_names, depth_layers, usable_layers
from explainer.prose import escape_markdown, percent, ratio
from explainer.render import tile

HOSTILE_LABELS = ["<img src=x onerror=alert(1)>", "**bold** _it_ `code`", "a|b [link](javascript:alert(1)) $$x$$"]


# ------------------------------------------------------------------------------------------------ fixtures


def _variant(base: LoadedModel, **info) -> LoadedModel:
    """The same Keras model under another description (labels, name, reference)."""
    return LoadedModel(base.keras_model, dataclasses.replace(base.info, **info))


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    base = trained_model()
    images, _labels, _, _ = planted_squares(200, seed=5)
    reference = reference_statistics(images, predict(base, list(images)))
    return _variant(base, name="planted", reference=reference, description="colour of the planted square")


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    images, labels, _, _ = planted_squares(6, seed=99)
    return images, labels


@pytest.fixture(scope="module")
def files(tmp_path_factory, samples) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("uploads")
    paths = {}
    for i, image in enumerate(samples[0][:3]):
        paths[f"img{i}"] = str(folder / f"img{i}.png")
        Image.fromarray(image).resize((80, 80), Image.NEAREST).save(paths[f"img{i}"])
    (folder / "notes.txt").write_text("not an image at all")
    (folder / "empty.png").write_bytes(b"")
    raw = (folder / "img0.png").read_bytes()
    (folder / "truncated.png").write_bytes(raw[: len(raw) // 2])
    paths.update(text=str(folder / "notes.txt"), empty=str(folder / "empty.png"),
                 truncated=str(folder / "truncated.png"))
    return paths


@pytest.fixture
def chat(model, files) -> ChatSession:
    session = ChatSession(model)
    first = session.respond("", [files["img0"]])
    assert not first.error
    return session


def _words(markdown: str) -> str:
    """Markdown with backslash escapes removed, for looking up plain phrases."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _check_suggestions_parse(session: ChatSession, reply: Reply) -> None:
    known = vocab(session.state)
    for text in reply.suggestions:
        assert parse(text, known).name != I.UNKNOWN, text


# ----------------------------------------------------------------------------------------- each answer


def test_upload_without_question_explains_the_top_class(chat):
    result = chat.state.explanation()
    reply = chat.respond("why?")
    assert reply.intent == I.WHY and not reply.error
    text = _words(reply.markdown)
    facts = reply.data["explanation"]
    assert facts["target"]["index"] == result.target_index and facts["region"] == result.region.to_dict()
    for number in (percent(result.probability), percent(result.region.coverage), percent(result.region.energy)):
        assert _words(number) in text
    assert result.target_label in text and "({}, {})".format(*result.region.centroid) in text
    assert reply.image is chat.state.overlay(result)
    assert reply.image.shape == (80, 80, 3) and reply.image.dtype == np.uint8
    assert "planted" in text and "Grad-CAM" in text and result.layer in text  # which model, method and layer


def test_model_is_right_on_the_samples(chat, model, samples):
    """The fixture model really learned the task, so the answers below are about real evidence."""
    probs = predict(model, list(samples[0]))
    assert (probs.argmax(axis=1) == samples[1]).mean() >= 5 / 6


def test_what_lists_top_k_with_a_bar_chart(chat):
    result = chat.state.explanation()
    reply = chat.respond("what is it?")
    rows = [line for line in reply.markdown.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(LABELS)  # top_k 5 but only 3 classes
    assert rows[0].startswith(f"| 1 | {result.top.label} |")
    chart, caption = reply.images[0]
    assert chart.ndim == 3 and "Top 3" in caption
    _check_suggestions_parse(chat, reply)


def test_confidence_reports_margin_qualifier_and_caveat(chat):
    result = chat.state.explanation()
    top, runner = result.predictions[:2]
    reply = chat.respond("how confident is it?")
    text = _words(reply.markdown)
    assert reply.data["qualifier"] == qualifier(top.probability, runner.probability)
    assert reply.data["margin"] == pytest.approx(top.probability - runner.probability)
    assert _words(percent(top.probability)) in text and runner.label in text


@pytest.mark.parametrize(("top", "runner", "word"), [
    (0.97, 0.02, "confident"), (0.45, 0.40, "torn"), (0.35, 0.15, "unsure"), (0.7, 0.2, "fairly"),
    (0.5, 0.4, "torn"), (0.45, 0.3, "torn"), (0.6, 0.15, "fairly"),
])
def test_qualifier(top, runner, word):
    assert qualifier(top, runner) == word


def test_why_not_contrasts_with_the_top_class(chat):
    top = chat.state.explanation()
    other = next(p for p in top.predictions if p.index != top.target_index)
    reply = chat.respond(f"why not {other.label}?")
    asked = chat.state.explanation(other.index)
    text = _words(reply.markdown)
    assert reply.intent == I.CLASS and not reply.error
    assert reply.data["explanation"]["target"]["index"] == other.index
    assert reply.data["rank"] == 2 and reply.data["times"] == pytest.approx(top.probability / asked.probability)
    assert _words(percent(asked.probability)) in text and _words(ratio(reply.data["times"])) in text
    assert reply.images[0][0].shape[1] > 2 * 80  # two overlays side by side
    _check_suggestions_parse(chat, reply)


def test_runner_up_by_rank(chat):
    top = chat.state.explanation()
    second = next(p for p in top.predictions if p.index != top.target_index)
    reply = chat.respond("why not the runner-up?")
    assert reply.intent == I.CLASS and reply.data["explanation"]["target"]["index"] == second.index
    assert chat.respond("explain the fifth guess").error  # this model has 3 classes


def test_relative_opacity(chat):
    chat.respond("make the overlay more transparent")
    assert chat.settings.opacity == pytest.approx(0.30)
    chat.respond("stronger please")
    assert chat.settings.opacity == pytest.approx(0.45)


def test_asking_about_the_top_class_explains_it(chat):
    top = chat.state.explanation()
    reply = chat.respond(f"what about {top.target_label}?")
    assert reply.data["header"] == "already_top" and reply.data["explanation"]["target"]["index"] == top.target_index


def test_region_reports_box_and_pictures(chat):
    result = chat.state.explanation()
    reply = chat.respond("show the region")
    x, y, w, h = result.region.bbox
    assert f"{x}, {y}, {w} × {h} px" in _words(reply.markdown)
    drawn, crop = reply.images[0][0], reply.images[1][0]
    assert drawn.shape == result.image.shape and not np.array_equal(drawn, result.image)
    assert crop.shape[0] <= result.image.shape[0] and crop.shape[1] <= result.image.shape[1]


def test_trust_check_finds_the_evidence_on_the_square(chat, model):
    result = chat.state.explanation()
    reply = chat.respond("does it hold up?")
    check = reply.data["occlusion"]
    assert check["drop"] > check["random_drop"]  # hiding the square hurts more than hiding a random box
    assert check["verdict"] in ("holds", "partial")
    assert reply.data["deletion"]["deletion_auc"][0] < reply.data["deletion"]["random_order_auc"]
    direct = occlusion_check(model, result, seed=chat.current.number)
    assert direct.hidden == pytest.approx(check["hidden"], abs=1e-6)


def test_compare_top_classes_side_by_side(chat):
    reply = chat.respond("compare the top 3")
    assert reply.intent == I.COMPARE_CLASSES
    assert len(reply.data["explanations"]) == 3
    assert len(re.findall(r"^\d\. \*\*", reply.markdown, flags=re.M)) == 3


def test_second_guess_compares_two(chat):
    reply = chat.respond("compare with the second guess")
    assert len(reply.data["explanations"]) == 2


def test_compare_methods_scores_every_method(chat):
    reply = chat.respond("compare methods")
    assert [m["method"] for m in reply.data["methods"]] == list(METHODS)
    assert all(0.0 <= m["deletion_auc"] <= 1.0 for m in reply.data["methods"])
    assert reply.suggestions[0].startswith("Use ")
    _check_suggestions_parse(chat, reply)


def test_use_method_switches_and_is_remembered(chat):
    reply = chat.respond("use grad-cam++")
    assert chat.settings.method == "gradcam++"
    assert reply.data["explanation"]["method"] == "gradcam++"
    assert "Grad-CAM++" in _words(chat.respond("why?").markdown)


def test_a_new_method_is_understood_without_chat_edits(chat, monkeypatch):
    """A method is one class plus its registration: the chat finds its spellings, names it, compares and teaches it."""

    class MeanCAM(BaseCAM):
        name = "meancam"
        display_name = "Mean-CAM"
        aliases = ("average CAM",)

        def get_cam_weights(self, batch):
            return batch.activations.mean(axis=(1, 2))

    monkeypatch.setitem(METHODS, "meancam", MeanCAM)
    reply = chat.respond("use average cam")
    assert chat.settings.method == "meancam" and reply.data["explanation"]["method"] == "meancam"
    assert "Mean-CAM" in _words(reply.markdown)
    assert "Mean-CAM" in _words(chat.respond("help").markdown)
    assert "meancam" in [m["method"] for m in chat.respond("compare methods").data["methods"]]
    teach = chat.respond("what is mean-cam?")
    assert teach.intent == I.TEACH and "**Mean-CAM**" in _words(teach.markdown)


def test_a_new_question_is_one_rule_one_answer_and_their_registration(chat, monkeypatch):
    """Registering a rule and an answer in explainer.chat.questions is all the conversation needs."""
    from explainer.chat import answers, questions

    def rule(message, _vocab, _details):
        return {} if "pixels" in message.words else None

    def answer(state, intent):
        size = state.current.size
        return answers.render_reply(state, "help", intent, has_image=True, model=state.model.info, labels=["x"],
                                    n_labels=1, methods=["Grad-CAM"], models=(), colormaps=["turbo"], examples=[],
                                    data={"pixels": size[0] * size[1]})

    monkeypatch.setitem(QUESTIONS, "pixels", Question("pixels", answer, needs_image=True))
    monkeypatch.setattr(questions, "RULES", (("pixels", rule), *questions.RULES))
    reply = chat.respond("how many pixels?")
    assert reply.intent == "pixels" and reply.data["pixels"] == 80 * 80
    assert ChatSession(chat.model).respond("how many pixels?").intent == "no_image"  # needs_image is honoured


def test_layers_side_by_side_and_switching(chat, model):
    reply = chat.respond("show layers")
    assert len(reply.data["layers"]) >= 2
    assert reply.data["current"] == chat.state.default_layer()
    first = reply.data["layers"][0]["name"]
    switched = chat.respond(f"use layer {first}")
    assert chat.settings.layer == first and switched.data["explanation"]["layer"] == first
    deeper = chat.respond("deeper layer")
    assert deeper.data["explanation"]["layer"] != first
    back = chat.respond("use the default layer")
    assert chat.settings.layer is None and back.data["explanation"]["layer"] == chat.state.default_layer()


def test_unknown_layer(chat):
    reply = chat.respond("use layer nonexistent_7")
    assert reply.error and reply.data["asked"] == "nonexistent_7" and "nonexistent_7" in _words(reply.markdown)


def test_depth_layers_pick_from_input_to_head(model, files):
    session = ChatSession(model)
    paths = usable_layers(session.state.layer_paths())
    picked = depth_layers(paths)
    assert picked[-1].name == paths[-1].name
    session.respond("", [files["img0"]])
    shown = [row["name"] for row in session.respond("show layers").data["layers"]]
    assert shown == depth_layer_names(model.keras_model)
    assert [paths.index(p) for p in picked] == sorted(paths.index(p) for p in picked)


def test_teaching_uses_this_images_numbers(chat):
    result = chat.state.explanation()
    reply = chat.respond("what is grad-cam?")
    text = _words(reply.markdown)
    best = int(np.argmax(result.channel_weights))
    weights = reply.data["channel_weights"]
    assert weights["top"][0][0] == best and weights["positive"] == int((result.channel_weights > 0).sum())
    assert f"{result.channel_weights[best]:.4f}" in text.replace("−", "-")
    assert str(weights["positive"]) in text and str(result.n_channels) in text and result.layer in text


def test_teaching_without_an_image(model):
    reply = ChatSession(model).respond("how does this work?")
    assert reply.intent == I.TEACH and not reply.error and reply.data["channel_weights"] is None


def test_help_and_unknown_list_examples(chat):
    for question in ("help", "qwerty zxcv"):
        reply = chat.respond(question)
        assert len(reply.data["examples"]) >= 5 and reply.suggestions
        assert all(_words(escape_markdown(q)) in _words(reply.markdown) for q in reply.data["examples"])
        _check_suggestions_parse(chat, reply)


def test_settings_change_the_pictures_without_new_maps(chat):
    chat.respond("why?")
    before_calls = chat.state.explain_calls
    faint = chat.respond("opacity 10%").image
    strong = chat.respond("set opacity to 90%").image
    assert chat.settings.opacity == pytest.approx(0.9)
    assert not np.array_equal(faint, strong)
    colored = chat.respond("use viridis").image
    assert chat.settings.colormap == "viridis" and not np.array_equal(colored, strong)
    wide = chat.respond("threshold 20%")
    tight = chat.respond("threshold 80%")
    # The threshold moves the heat region; the segmentation follows the object (test_segment.py).
    assert wide.data["explanation"]["region"]["heat_coverage"] > tight.data["explanation"]["region"]["heat_coverage"]
    assert chat.state.explain_calls == before_calls  # a new threshold re-localizes the cached map


def test_bad_setting_value(chat):
    reply = chat.respond("opacity 300%")
    assert reply.error and chat.settings.opacity == pytest.approx(0.45)


def test_out_of_distribution_warning(model, files):
    session = ChatSession(model)
    white = np.full((60, 60, 3), 255, np.uint8)
    reply = session.respond("how confident is it?", [white])
    assert reply.data["ood"]["unusual"]
    assert reply.data["qualifier"] == "guess" and "confident" not in reply.markdown  # the finding governs the word
    for finding in reply.data["ood"]["findings"]:
        assert f"{finding['value']:.1f}" in reply.markdown
    normal = ChatSession(model).respond("how confident?", [files["img0"]])
    assert not normal.data["ood"]["unusual"]


def test_no_reference_means_no_warning(model):
    plain = _variant(model, reference=None)
    reply = ChatSession(plain).respond("how confident?", [np.full((60, 60, 3), 255, np.uint8)])
    assert reply.data["ood"] is None and "looks unlike" not in reply.markdown
    assert out_of_distribution(plain, ChatSession(plain).state.explanation(entry=_entry_of(plain))) is None


def _entry_of(model):
    session = ChatSession(model)
    return session.state.add_image(np.zeros((40, 40, 3), np.uint8))


# --------------------------------------------------------------------------------------------- flows


def test_no_image_yet_then_upload(model, files):
    session = ChatSession(model)
    for question in ("why?", "what is it", "show the region", "does it hold up?", "why not red"):
        reply = session.respond(question)
        assert reply.error and reply.intent == "no_image" and reply.data["question_intent"] != I.UNKNOWN
    assert session.respond("hello").intent == I.GREETING
    assert not session.respond("", [files["img1"]]).error


@pytest.mark.parametrize("bad", ["text", "empty", "truncated"])
def test_bad_image_keeps_the_conversation(chat, files, bad):
    before = chat.current
    reply = chat.respond("why?", [files[bad]])
    assert reply.error and reply.intent == "bad_image" and len(reply.data["problems"]) == 1
    assert f"image {before.number}" in reply.markdown
    assert chat.current is before and len(chat.images) == 1
    assert not chat.respond("why?").error


def test_bad_image_first(model, files):
    session = ChatSession(model)
    reply = session.respond("", [files["text"]])
    assert reply.error and session.current is None
    assert not session.respond("why?", [files["img0"]]).error


def test_several_images_and_references(chat, files):
    second = chat.respond("", [files["img1"]])
    assert second.data["image"]["number"] == 2 and "Image 2" in second.markdown
    chat.respond("", [files["img2"]])
    assert chat.respond("previous image").data["image"]["number"] == 2
    assert chat.respond("why on the first image?").data["image"]["number"] == 1
    assert chat.respond("image 3").data["image"]["number"] == 3
    missing = chat.respond("image 7")
    assert missing.error and chat.current.number == 3


def test_follow_up_reuses_the_cached_map(chat, monkeypatch):
    calls = []
    real = session_module.explain
    monkeypatch.setattr(session_module, "explain", lambda *a, **k: calls.append(k) or real(*a, **k))
    first = chat.state.explanation()
    for question in ("why?", "how confident?", "show the region", "what is it?", "what is grad-cam?",
                     "why?", "opacity 30%", "threshold 0.4"):
        assert not chat.respond(question).error
    assert calls == []  # everything above came from the cache
    assert chat.state.explanation() is not first or chat.settings.threshold == first.region.threshold
    chat.respond("why not green?" if first.target_label != "green" else "why not red?")
    assert len(calls) == 1  # only the new class needed a map
    chat.respond("compare the top 3")
    assert len(calls) == 2  # one batch for the one missing class


def test_cached_objects_are_reused(chat):
    a = chat.state.explanation()
    assert chat.state.explanation() is a
    assert chat.state.overlay(a) is chat.state.overlay(a)


def test_ambiguous_class_asks_which(model, files):
    cats = _variant(model, labels=["tabby cat", "tiger cat", "red"])
    session = ChatSession(cats)
    session.respond("", [files["img0"]])
    reply = session.respond("why not a cat?")
    assert reply.error and reply.intent == "ambiguous_class" and reply.data["question_intent"] == I.CLASS
    assert "tabby cat" in reply.markdown and "tiger cat" in reply.markdown
    assert reply.data["candidates"] == ["tabby cat", "tiger cat"]
    assert reply.suggestions == ["Why not tabby cat?", "Why not tiger cat?"]
    chosen = session.respond(reply.suggestions[1])
    assert not chosen.error and chosen.data["explanation"]["target"]["label"] in ("tiger cat", "tabby cat", "red")


def test_unknown_class_lists_the_classes(chat):
    reply = chat.respond("why not a zebra?")
    assert reply.error and reply.intent == "unknown_class" and reply.data["asked"] == "zebra"
    assert all(label in reply.markdown for label in LABELS)


def test_misspelt_class_is_matched(chat):
    reply = chat.respond("why not gren?")
    assert reply.data["explanation"]["target"]["label"] == "green"


def test_huge_question(chat):
    reply = chat.respond("x" * 10_000)
    assert reply.intent == I.UNKNOWN and len(reply.markdown) < 3000
    assert chat.respond("why? " + "please " * 2000).intent == I.WHY


def test_injected_question_is_escaped(chat):
    question = "<script>alert(1)</script> **bold** [x](javascript:alert(1)) $$x$$ | # heading"
    reply = chat.respond(question)
    assert "<script>" not in reply.markdown and "**bold**" not in reply.markdown
    assert "[x](" not in reply.markdown and "$$" not in reply.markdown
    assert "&lt;script&gt;" in reply.markdown  # shown, not executed


def test_emoji_question(chat):
    reply = chat.respond("🐱 why? 🤔")
    assert reply.intent == I.WHY and not reply.error


QUESTIONS_FOR_EVERY_TEMPLATE = [
    "what is it?", "why?", "how confident?", "show the region", "does it hold up?", "compare the top 3",
    "compare methods", "show layers", "what is grad-cam?", "help", "which model?", "qwerty", "settings colormap",
    "hello", "use grad-cam++", "image 9",
]


def test_hostile_labels_are_escaped_in_every_answer(model, files):
    hostile = _variant(model, labels=HOSTILE_LABELS, name="<b>evil</b>_model")
    session = ChatSession(hostile)
    replies = [session.respond("", [files["img0"]])]
    replies += [session.respond(q) for q in QUESTIONS_FOR_EVERY_TEMPLATE]
    replies += [session.respond(f"why not {label}") for label in ("img", "bold", "link")]
    for reply in replies:
        assert "<img" not in reply.markdown and "<b>" not in reply.markdown
        assert "**bold**" not in reply.markdown and "`code`" not in reply.markdown
        assert "](javascript" not in reply.markdown and "$$" not in reply.markdown
        assert "_it_" not in reply.markdown and "a|b" not in reply.markdown
    assert any("&lt;img src=x onerror=alert\\(1\\)&gt;" in r.markdown for r in replies)


def test_every_template_renders_with_suggestions(chat):
    for question in QUESTIONS_FOR_EVERY_TEMPLATE:
        reply = chat.respond(question)
        assert reply.markdown.strip(), question
        assert reply.intent != "apology", question
        assert reply.suggestions, question
        assert "{{" not in reply.markdown and "{%" not in reply.markdown
        _check_suggestions_parse(chat, reply)


def test_unexpected_exception_becomes_an_apology(chat, monkeypatch, caplog):
    def broken(session, intent):
        raise RuntimeError("bug")

    monkeypatch.setitem(QUESTIONS, I.WHY, Question(I.WHY, broken, needs_image=True))
    with caplog.at_level(logging.ERROR):
        reply = chat.respond("why?")
    assert reply.intent == "apology" and reply.error and reply.markdown
    assert "bug" not in reply.markdown and "RuntimeError" in caplog.text
    monkeypatch.undo()
    assert not chat.respond("why?").error  # the conversation goes on


def test_explainer_errors_become_friendly_replies(chat, monkeypatch):
    def failing(*args, **kwargs):
        raise ExplainerError("The model <refused> this.")

    monkeypatch.setattr(session_module, "explain", failing)
    reply = chat.respond("why not green?" if chat.state.explanation().target_label != "green" else "why not red?")
    assert reply.error and reply.intent == "error" and "&lt;refused&gt;" in reply.markdown


def test_model_switch_keeps_the_conversation(model, files):
    other = _variant(model, name="other")
    session = ChatSession(model, loader=lambda name: other, model_names=("planted", "other"))
    session.respond("", [files["img0"]])
    reply = session.respond("use the other model")
    assert session.model is other and reply.data["model"] == "other" and reply.data["header"] == "model"
    assert "other" in _words(reply.markdown)
    assert session.current.number == 1
    assert "planted" in _words(session.respond("which model?").markdown)


def test_model_switch_without_loader(chat):
    chat.model_names = ("planted", "other")  # what the app does when a model is uploaded
    reply = chat.respond("use the other model")
    assert reply.error and reply.data["error"] == "ExplainerError" and chat.model.name == "planted"


def test_switch_model_says_so(chat, model):
    other = _variant(model, name="other")
    reply = chat.switch_model(other)
    assert chat.model is other and reply.data["header"] == "model" and "other" in _words(reply.markdown)
    assert reply.image is not None
    fresh = ChatSession(model).switch_model(other)
    assert fresh.intent == I.MODEL and "other" in fresh.markdown


def test_trust_picture_tiles_share_the_images_size_and_aspect(model, samples):
    """Image, box hidden, random box hidden: all three at the upload's aspect (the model saw a square)."""
    wide = np.asarray(Image.fromarray(samples[0][0]).resize((160, 80), Image.NEAREST))
    session = ChatSession(model)
    session.respond("", [wide])
    side = session.respond("does it hold up?").images[0][0]
    assert model.info.input_size[0] == model.info.input_size[1]  # so the model's own view is square
    expected = tile([wide] * 3, ["a", "b", "c"])  # three tiles of the upload's size and aspect
    assert side.shape == expected.shape

    def blank_columns(picture):
        return int((picture == 255).all(axis=(0, 2)).sum())

    assert blank_columns(side) == blank_columns(expected)  # only the gaps between tiles: no white margins


def test_set_model_from_the_app(chat, model):
    chat.update_settings(layer=chat.state.default_layer())
    other = _variant(model, name="other")
    chat.set_model(other)
    assert chat.settings.layer is None
    assert chat.respond("why?").data["model"] == "other"


def test_sessions_are_independent(model, files):
    a, b = ChatSession(model), ChatSession(model)
    a.respond("", [files["img0"]])
    assert b.respond("why?").intent == "no_image"
    b.respond("", [files["img1"]])
    a.update_settings(opacity=0.2)
    assert b.settings.opacity == pytest.approx(0.45)
    assert a.current.image is not b.current.image


def test_deepcopy_shares_the_model_only(chat):
    twin = copy.deepcopy(chat)
    assert twin.model is chat.model
    twin.respond("opacity 20%")
    twin.state.add_image(np.zeros((30, 30, 3), np.uint8))
    assert chat.settings.opacity == pytest.approx(0.45) and len(chat.images) == 1


def test_answer_once(model, files, samples):
    reply = answer_once(model, files["img0"], "why?")
    assert reply.intent == I.WHY and reply.image is not None
    assert reply.data["explanation"]["predictions"][0]["label"] in LABELS
    assert answer_once(model, samples[0][0]).intent == I.WHY  # empty question: explain
    assert answer_once(model, None, "why?").intent == "no_image"
    assert answer_once(model, files["img0"], "why?", method="layercam").data["explanation"]["method"] == "layercam"
    bad = answer_once(model, files["img0"], "why?", opacity=7)
    assert bad.error


def test_large_upload_is_shrunk_once(model):
    session = ChatSession(model)
    entry = session.state.add_image(np.zeros((3000, 1500, 3), np.uint8))
    assert max(entry.size) == session_module.MAX_SIDE and entry.original_size == (1500, 3000)


def test_reply_to_dict_is_json_friendly(chat):
    """A real answer (the trust check: nested numbers and a picture) survives JSON unchanged, without its pixels."""
    import json

    reply = chat.respond("does it hold up?")
    assert not reply.error and reply.intent == "trust", reply.markdown
    as_dict = reply.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict  # plain types only: no NumPy numbers, arrays or tuples
    assert as_dict["markdown"] == reply.markdown and as_dict["suggestions"] == list(reply.suggestions)
    [(picture, caption)] = reply.images
    assert as_dict["images"] == [{"caption": caption, "width": picture.shape[1], "height": picture.shape[0]}]
    occlusion = as_dict["data"]["occlusion"]
    assert occlusion["drop"] == pytest.approx(occlusion["original"] - occlusion["hidden"], abs=1e-5)
    assert occlusion["random_drop"] == pytest.approx(occlusion["original"] - np.mean(occlusion["random"]), abs=1e-5)
    assert occlusion["hidden_top"]["label"] in LABELS and len(as_dict["data"]["deletion"]["deletion_auc"]) == 1


def test_escape_markdown():
    assert escape_markdown("a_b*c") == "a\\_b\\*c"
    assert escape_markdown("<x>") == "&lt;x&gt;"
    assert escape_markdown("line\nbreak") == "line break"
    assert escape_markdown("🐱") == "🐱"


def test_vocab_is_built_from_the_model(chat):
    known = vocab(chat.state)
    assert isinstance(known, Vocab) and tuple(known.labels) == tuple(LABELS)
    assert chat.state.default_layer() in known.layers


def test_slow_answers_announce_progress():
    from explainer import load_model

    session = ChatSession(load_model("shapes"))
    assert session.progress_note("is this trustworthy?") is not None
    assert str(len(METHODS)) in session.progress_note("compare methods")
    assert session.progress_note("why?") is None and session.progress_note("what is it?") is None
    session.update_settings(method="scorecam")
    assert "Score-CAM" in _words(session.progress_note("why?"))
    assert session.progress_note("what is it?") is None


def test_model_facts_are_shared_by_every_conversation():
    """A new visitor does not walk the model's layers again: vocabularies and layer lists live on the model."""
    from explainer import load_model

    model = load_model("shapes")
    first, second = ChatSession(model), ChatSession(model)
    assert vocab(first.state) is vocab(second.state)
    assert first.state.layer_paths() is second.state.layer_paths()

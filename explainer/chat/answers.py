"""One function per question: the conversation's state and the parsed message in, a :class:`Reply` out.

Every sentence comes from a template in ``templates/`` filled with numbers measured on the current image, and every
caption and clickable follow-up from the catalogue (:mod:`explainer.chat.messages`); the functions here only gather
those numbers (from the state's cache whenever possible) and pick pictures and follow-ups. They read and fill a
:class:`~explainer.chat.session.SessionState` and know nothing of the conversation around them
(:mod:`explainer.chat.bot`); :mod:`explainer.chat.questions` registers which question each answers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from explainer.cams import METHODS, method_key
from explainer.chat import intents as I
from explainer.chat.checks import (
    Structure,
    Unusual,
    deletion_scores,
    image_structure,
    occlusion_check,
    out_of_distribution,
)
from explainer.chat.intents import THRESHOLD_STEP, Intent, region_phrase
from explainer.chat.messages import message
from explainer.chat.reply import Reply
from explainer.chat.session import ExpectedRegion, ImageEntry, SessionState, SettingError, setting_number
from explainer.errors import AmbiguousClassError, ClassError, ExplainerError
from explainer.evaluation import metrics
from explainer.evaluation.groundtruth import (
    WRONG_REASON_THRESHOLD,
    RegionError,
    box_mask,
    clip_box,
    compare_region,
    draw_expected,
    read_mask,
    region_from_text,
)
from explainer.layers import depth_layers, usable_layers
from explainer.prose import one_line, render
from explainer.region import iou_of_masks
from explainer.render import COLORMAPS, bar_chart, cutout, draw_region, tile
from explainer.result import Explanation, Prediction
from explainer.segment import DEFAULT_SEGMENT, PROBABILITY_CUTOFF, SEGMENTERS
from explainer.tokens import DEFAULT_METHOD as TRANSFORMER_METHOD
from explainer.tokens import block_count

logger = logging.getLogger(__name__)

CAPTION_CHARS = 120
MAX_COMPARED = 6
#: The head whose labels are independent findings (each with its own probability and a decision threshold).
MULTILABEL = "multilabel"
#: A finding this close to the decision threshold (in probability) is "close": a small change could flip it.
NEAR_THRESHOLD = 0.1
#: Settings a message may change relatively ("more transparent", "lower the threshold"), and their bounds.
RELATIVE_SETTINGS = {"opacity": (0.05, 1.0), "threshold": (0.05, 1.0)}
#: The method offered as "another method" after an "is it looking here?" answer (Grad-CAM when it is already used).
OTHER_METHOD = "gradcam++"
#: The note said once per conversation (:meth:`SessionState.first_time`): why a vision transformer is explained with
#: HiResCAM on its token embeddings by default (``templates/_transformer_default.j2``).
TRANSFORMER_NOTE = "transformer_default"


def ask(key: str, **fields: Any) -> str:
    """A question to click, from the catalogue (``ask.<key>``); each one is understood by the chat's rules."""
    return message(f"ask.{key}", **fields)


def caption(key: str, **fields: Any) -> str:
    """A picture's caption from the catalogue (``caption.<key>``), on one line, cut to :data:`CAPTION_CHARS`."""
    return one_line(message(f"caption.{key}", **fields), CAPTION_CHARS)


#: Questions shown when the user needs ideas.
EXAMPLE_QUESTIONS: tuple[str, ...] = tuple(ask(key) for key in (
    "what", "why", "confidence", "region", "trust", "second_guess", "compare_methods", "which_layer",
    "what_is_gradcam"))

# ------------------------------------------------------------------------------------------- shared pieces


def render_reply(state: SessionState, template: str, intent: Intent | None = None, *,
                 images: list | None = None, suggestions: Sequence[str] = (), data: dict | None = None,
                 error: bool = False, footer: Explanation | None = None, kind: str | None = None,
                 **context: Any) -> Reply:
    """Fill ``templates/<template>.j2`` and wrap it in a :class:`Reply`.

    ``reply.intent`` is ``kind`` when given (problem replies: ``no_image``, ``bad_image``, ...), else the intent's
    name; ``reply.data["question_intent"]`` always holds what the message was understood as.
    """
    markdown = render(template, **context)
    if footer is not None:
        markdown += "\n\n" + render("footer", result=footer, method=method_name(footer.method),
                                    entry=state.current)
    name = kind or (intent.name if intent else template)
    data = {"intent": name, "question_intent": intent.name if intent else None, "model": state.model.name,
            **({"method": footer.method} if footer is not None else {}), **(data or {})}
    if state.current is not None:
        data.setdefault("image", state.current.to_dict())
    return Reply(markdown, list(images or []), list(suggestions)[:4], data, name, error)


def method_name(key: str) -> str:
    """How people write the method ``key`` (its class's display name)."""
    cls = METHODS.get(method_key(key))
    return cls.display_name if cls is not None else key


def class_agnostic(key: str) -> bool:
    """True when the method's map is the same for every class (its class says so)."""
    cls = METHODS.get(method_key(key))
    return cls is not None and cls.class_agnostic


def region_facts(result: Explanation) -> dict:
    """The numbers every template uses to describe a region."""
    region = result.region
    height, width = result.cam.shape[:2]
    return {"region": region, "cells": f"{height}×{width}", "empty": region.coverage <= 0,
            "size": result.image.shape[1::-1]}


def suggestions_for(state: SessionState, result: Explanation | None, *skip: str) -> list[str]:
    """Follow-ups that make sense after an answer about ``result`` (skipping the intents in ``skip``)."""
    if result is None:
        options = [(I.WHAT, ask("what")), (I.WHY, ask("why")), (I.HELP, ask("help"))]
        return [text for name, text in options if name not in skip][:4]
    runner = next((p for p in result.predictions if p.index != result.target_index
                   and not (is_multilabel(result) and p.probability >= result.decision_threshold)), None)
    options = [(I.WHY, ask("why"))] if not result.is_top else []
    shows = state.current.known.get("shows") if state.current is not None else None
    if shows and shows in state.model.labels and shows != result.target_label:  # the natural next question
        options.insert(0, (I.CLASS, ask("why_not", label=shows)))
    options += [(I.CONFIDENCE, ask("confidence")), (I.TRUST, ask("trust")), (I.REGION, ask("region"))]
    if runner is not None and runner.probability >= 0.001:
        options.append((I.CLASS, ask("why_not", label=runner.label)))
    if runner is not None and runner.probability >= TORN_FLOOR and not is_multilabel(result):
        options.insert(1, (I.CONTRAST, ask("rather", label=result.target_label, other=runner.label)))  # close
    options += [(I.COMPARE_CLASSES, ask("compare_classes")), (I.COMPARE_METHODS, ask("compare_methods")),
                (I.LAYERS, ask("layers")), (I.TEACH, ask("teach"))]
    return [text for name, text in options if name not in skip][:4]


def is_multilabel(result: Explanation) -> bool:
    """True when ``result``'s model reports independent findings (sigmoid per label) rather than one class."""
    return result.head == MULTILABEL


def squash(head: str) -> str:
    """The function that turns the head's logits into probabilities, as the user reads it."""
    return "sigmoid" if head in ("sigmoid", MULTILABEL) else "softmax"


def _warnings(state: SessionState, result: Explanation) -> dict:
    """Template context for the warnings every answer about the image carries: a blank image (no structure), and
    an image unlike the model's training data (None when the model has no reference statistics)."""
    structure = state.fact(("structure",), lambda: image_structure(state.current.image, state.model.info.input_size))
    return {"structure": structure, "ood": state.fact(("ood",), lambda: out_of_distribution(state.model, result))}


def _facts_data(facts: dict) -> dict:
    return {"structure": facts["structure"].to_dict(), "ood": facts["ood"].to_dict() if facts["ood"] else None}


def _head_data(result: Explanation) -> dict:
    """What every answer's data says about the head (multi-label answers add the positive findings)."""
    data = {"head": result.head}
    if is_multilabel(result):
        data.update(decision_threshold=result.decision_threshold, positive=[p.to_dict() for p in result.positive])
    return data


def _overlay_picture(state: SessionState, result: Explanation) -> tuple[np.ndarray, str]:
    return state.overlay(result), caption("overlay", method=method_name(result.method), label=result.target_label,
                                          probability=result.probability, image=state.current.number)


def _explained(state: SessionState, intent: Intent) -> Explanation | Reply:
    """The explanation for the intent's class (or the top class); a reply when the class name is a problem."""
    try:
        return state.explanation(intent.target)
    except AmbiguousClassError as err:
        return ambiguous_reply(state, intent, err)
    except ClassError as err:
        return no_class_reply(state, intent, err)


def layer_stage(state: SessionState, name: str | None) -> dict | None:
    """How the chat names a vision transformer's layer: its stage (``label``: "embeddings", "block 2", "block 2,
    before its attention"; ``block``: 0 for the embeddings), its patch ``grid`` ("8×8"), ``dim`` (features per
    token), ``attention_norm`` and ``prefix`` (tokens that are no patch). None for a CNN's layer."""
    path = next((p for p in state.layer_paths() if p.name == name), None)
    tokens = getattr(path, "tokens", None)
    if tokens is None:
        return None
    if tokens.block == 0:
        label = message("layer.embeddings")
    else:
        label = message("layer.attention_norm" if tokens.attention_norm else "layer.block", block=tokens.block)
    return {"label": label, "block": tokens.block, "grid": f"{tokens.height}×{tokens.width}", "dim": tokens.dim,
            "attention_norm": tokens.attention_norm, "prefix": tokens.prefix}


def transformer_note(state: SessionState, once: bool = False) -> dict | None:
    """Template context for ``_transformer_default.j2`` (why a vision transformer is explained with HiResCAM on its
    token embeddings by default), or None when the model is no transformer. With ``once``, only the first time in
    the conversation and only while the user has not chosen a method; every note given counts as said."""
    if not state.transformer or (once and state.method_chosen):
        return None
    first = state.first_time(TRANSFORMER_NOTE)
    if once and not first:
        return None
    return {"name": method_name(TRANSFORMER_METHOD), "chosen": state.method_chosen,
            "current": method_name(state.method)}


# ---------------------------------------------------------------------------------------------- answers


def answer_what(state: SessionState, intent: Intent) -> Reply:
    result = state.explanation()
    k = min(intent.count or state.settings.top_k, len(result.predictions))
    positive = result.positive
    # A multi-label answer lists every positive finding, even beyond top-k.
    shown = result.predictions[:max(k, len(positive))]
    chart = state.picture(("bars", id(result), len(shown)), lambda: bar_chart(shown), result)
    facts = _warnings(state, result)
    label = caption("what_findings" if is_multilabel(result) else "what", count=len(shown), model=state.model.name,
                    image=state.current.number)
    return render_reply(
        state, "what", intent, predictions=shown, top=result.top, k=len(shown), n_classes=len(state.model.labels),
        torn=[] if is_multilabel(result) else torn_between(result.predictions),
        rest=max(0.0, 1.0 - sum(p.probability for p in shown)), multilabel=is_multilabel(result), positive=positive,
        threshold=result.decision_threshold, empty=result.region.coverage <= 0, result=result,
        method=method_name(result.method), **facts, images=[(chart, label)],
        suggestions=suggestions_for(state, result),
        data={"predictions": [p.to_dict() for p in shown], "empty_map": result.region.coverage <= 0,
              **_head_data(result), **_facts_data(facts)},
        footer=result)


def answer_why(state: SessionState, intent: Intent, header: str | None = None) -> Reply:
    """The map of the asked class (or the top class). ``header`` names the first line (a new image, a switched
    method, layer or model, a class that is already the top one)."""
    result = _explained(state, intent)
    if isinstance(result, Reply):
        return result
    if is_multilabel(result):
        return _why_findings(state, intent, result, header)
    facts = _warnings(state, result)
    note = transformer_note(state, once=True) if result.method == state.method else None
    return render_reply(
        state, "why", intent, header=header, entry=state.current, result=result, method=method_name(
            result.method), others=[p for p in result.predictions[:4] if p.index != result.target_index][:3],
        asked=intent.target if intent.target else None, **facts, **region_facts(result),
        stage=layer_stage(state, result.layer), vit_note=note,
        images=[_overlay_picture(state, result)], suggestions=suggestions_for(state, result, I.WHY),
        data={"header": header, "explanation": result.to_dict(), "transformer_note": note is not None,
              **_head_data(result), **_facts_data(facts)},
        footer=result)


def _why_findings(state: SessionState, intent: Intent, result: Explanation, header: str | None,
                  why_not: bool = False) -> Reply:
    """"Why?" for a multi-label model: a map per positive finding (up to top-k), or the asked finding's own map,
    or, when nothing is positive, the most probable finding's map with its distance below the threshold."""
    threshold, positive, asked = result.decision_threshold, result.positive, bool(intent.target)
    results = [result]
    if positive and not asked:
        results = state.explanations([p.index for p in positive[:state.settings.top_k]])
    shown = {r.target_index for r in results}
    others = [p for p in result.predictions if p.probability < threshold and p.index not in shown][:3]
    rows = [{"result": r, "region": r.region, "empty": r.region.coverage <= 0} for r in results]
    facts = _warnings(state, result)
    hidden = 0 if asked else max(0, len(positive) - len(results))
    note = transformer_note(state, once=True) if result.method == state.method else None
    return render_reply(
        state, "findings", intent, header=header, entry=state.current, result=results[0], rows=rows,
        positive=positive, asked=asked, why_not=why_not, threshold=threshold, others=others,
        hidden=hidden, method=method_name(result.method), stage=layer_stage(state, result.layer), vit_note=note,
        cells=region_facts(results[0])["cells"], **facts,
        images=[_overlay_picture(state, r) for r in results],
        suggestions=suggestions_for(state, results[0], I.WHY, *((I.CLASS,) if why_not else ())),
        data={"header": header, "explanation": results[0].to_dict(), "explanations": [r.to_dict() for r in results],
              "not_shown": hidden, "transformer_note": note is not None, **_head_data(result),
              **_facts_data(facts)}, footer=results[0])


def answer_confidence(state: SessionState, intent: Intent) -> Reply:
    result = state.explanation()
    if is_multilabel(result):
        return _confidence_findings(state, intent, result)
    top, runner = result.predictions[0], result.predictions[1] if len(result.predictions) > 1 else None
    asked = None
    if intent.target:
        asked_result = _explained(state, intent)
        if isinstance(asked_result, Reply):
            return asked_result
        if asked_result.target_index != top.index:
            asked = {"label": asked_result.target_label, "probability": asked_result.probability,
                     "rank": int((result.probabilities > asked_result.probability).sum()) + 1}
    margin = top.probability - (runner.probability if runner else 0.0)
    facts = _warnings(state, result)
    word = qualifier(top.probability, runner.probability if runner else 0.0, guessing=guessing(facts),
                     below_reference=bool(facts["ood"] and facts["ood"].low_confidence))
    calibration = result.calibration.summary() if result.calibrated else None
    return render_reply(
        state, "confidence", intent, top=top, runner=runner, margin=margin, multilabel=False, qualifier=word,
        asked=asked, squash=squash(result.head), **facts, suggestions=suggestions_for(state, result, I.CONFIDENCE),
        calibration=calibration, prediction_set=result.prediction_set(),
        raw_top=top.raw_probability if result.calibrated else None,
        data={"probability": top.probability, "raw_probability": top.raw_probability, "margin": margin,
              "qualifier": word, "calibrated": result.calibrated, "prediction_set": result.prediction_set(),
              **_head_data(result), **_facts_data(facts)},
        footer=result)


def guessing(facts: dict) -> bool:
    """True when the warnings say the model's percentages mean little: a blank image, or one unlike its training
    data. Then no answer calls the model confident, whatever the numbers."""
    structure: Structure = facts["structure"]
    ood: Unusual | None = facts["ood"]
    return bool(structure.blank or (ood is not None and ood.unusual))


#: Classes within this many probability points of the top one, each at least TORN_FLOOR, make the model "torn".
TORN_MARGIN, TORN_FLOOR = 0.2, 0.1


def torn_between(predictions: Sequence[Prediction]) -> list[Prediction]:
    """The top classes the model cannot tell apart (the top one included), or [] when one stands out: those within
    :data:`TORN_MARGIN` of the top probability and above :data:`TORN_FLOOR` (the rule "torn" of :func:`qualifier`)."""
    top = predictions[0].probability
    close = [p for p in predictions if top - p.probability < TORN_MARGIN and p.probability >= TORN_FLOOR]
    return close if len(close) >= 2 else []


def qualifier(top: float, runner: float, guessing: bool = False, below_reference: bool = False) -> str:
    """One word for the top two probabilities: ``confident``, ``fairly``, ``torn``, ``unsure``, or ``guess``.

    ``guess`` whenever ``guessing`` (see :func:`guessing`): the out-of-distribution finding governs the word. When
    the top probability is below what 95 % of training-like images get (``below_reference``), "confident" drops to
    "fairly".
    """
    if guessing:
        return "guess"
    if top >= 0.8 and top - runner >= 0.5:
        return "fairly" if below_reference else "confident"
    if runner >= 2 * TORN_FLOOR and top - runner < TORN_MARGIN:
        return "torn"
    if top < 0.5:
        return "unsure"
    return "fairly"


def _confidence_findings(state: SessionState, intent: Intent, result: Explanation) -> Reply:
    """"How sure?" for a multi-label model: each finding's own probability and its distance from the decision
    threshold (a runner-up margin means nothing when the labels are independent)."""
    threshold = result.decision_threshold
    listed = result.predictions[:max(state.settings.top_k, len(result.positive))]
    asked = None
    if intent.target:
        asked_result = _explained(state, intent)
        if isinstance(asked_result, Reply):
            return asked_result
        asked = finding(asked_result.target_index, asked_result.target_label, asked_result.probability, threshold)
        if all(p.index != asked["index"] for p in listed):
            listed = [*listed, Prediction(asked["index"], asked["label"], asked["probability"])]
    findings = [finding(p.index, p.label, p.probability, threshold) for p in listed]
    facts = _warnings(state, result)
    return render_reply(
        state, "confidence", intent, multilabel=True, findings=findings, asked=asked, threshold=threshold,
        near_points=NEAR_THRESHOLD, squash=squash(result.head), **facts,
        suggestions=suggestions_for(state, result, I.CONFIDENCE),
        data={"probability": result.top.probability, "findings": [_rounded(f) for f in findings],
              "asked": _rounded(asked) if asked else None, **_head_data(result), **_facts_data(facts)},
        footer=result)


def finding(index: int, label: str, probability: float, threshold: float) -> dict:
    """One finding of a multi-label model: its probability, signed distance from the threshold, and verdict."""
    distance = float(probability) - float(threshold)
    return {"index": int(index), "label": label, "probability": float(probability), "distance": distance,
            "positive": distance >= 0, "near": abs(distance) < NEAR_THRESHOLD}


def _rounded(found: dict) -> dict:
    return {**found, "probability": round(found["probability"], 6), "distance": round(found["distance"], 6)}


def answer_class(state: SessionState, intent: Intent) -> Reply:
    asked = _explained(state, intent)
    if isinstance(asked, Reply):
        return asked
    if is_multilabel(asked):  # X's own probability and map: findings do not compete with a winner
        return _why_findings(state, intent, asked, None, why_not=True)
    top = state.explanation()
    if asked.target_index == top.target_index:
        return answer_why(state, intent, header="already_top")
    rank = int((top.probabilities > asked.probability).sum()) + 1
    pictures = [(state.overlay(r), caption("scored", label=r.target_label, probability=r.probability))
                for r in (top, asked)]
    side = state.picture(("pair", id(top), id(asked), state.settings.opacity, state.settings.colormap),
                         lambda: tile([p for p, _ in pictures], [c for _, c in pictures]), asked)
    overlap = iou_of_masks(top.region.heat_mask, asked.region.heat_mask)
    times = top.probability / max(asked.probability, 1e-12)
    return render_reply(
        state, "class", intent, top=top, asked=asked, rank=rank, n_classes=len(state.model.labels),
        times=times, overlap=overlap, method=method_name(asked.method), agnostic=class_agnostic(asked.method),
        top_region=top.region, structure=_warnings(state, top)["structure"], **region_facts(asked),
        images=[(side, caption("pair", method=method_name(asked.method), top=top.target_label,
                               asked=asked.target_label))],
        suggestions=[ask("region_for", label=asked.target_label),
                     ask("rather", label=top.target_label, other=asked.target_label),
                     *suggestions_for(state, top, I.CLASS, I.CONTRAST)],
        data={"explanation": asked.to_dict(), "top": top.to_dict(), "rank": rank, "times": times,
              "overlap_iou": overlap}, footer=asked)


def answer_region(state: SessionState, intent: Intent, header: str | None = None) -> Reply:
    """"Segment it": the segmented object outlined on the image, and cut out on a transparent background."""
    result = _explained(state, intent)
    if isinstance(result, Reply):
        return result
    label, region = result.target_label, result.region
    drawn = state.picture(("region", id(result)), lambda: draw_region(result.image, region), result)
    images = [(drawn, caption("region", label=label, segmenter=region.segmenter.display_name)
               if region.mask is not None else caption("region_heat", label=label, threshold=region.threshold))]
    if region.mask is not None and region.pixels > 0:
        cut = state.picture(("cutout", id(result)), lambda: cutout(result.image, region.mask), result)
        images.append((cut, caption("cutout", label=label)))
    return render_reply(
        state, "region", intent, result=result, method=method_name(result.method), **region_facts(result),
        segmenter=region.segmenter.display_name, header=header, images=images,
        cutoff=result.decision_threshold if is_multilabel(result) else PROBABILITY_CUTOFF,
        suggestions=[*_segment_suggestions(state), *suggestions_for(state, result, I.REGION)][:4],
        data={"region": region.to_dict(), "explanation": result.to_dict()}, footer=result)


def _segment_suggestions(state: SessionState) -> list[str]:
    """Another way to cut the mask: the threshold mask after a refined one, the default after any other."""
    other = "threshold" if state.settings.segment != "threshold" else DEFAULT_SEGMENT
    return [ask("segment_with", name=SEGMENTERS[other].display_name)]


def answer_trust(state: SessionState, intent: Intent) -> Reply:
    result = _explained(state, intent)
    if isinstance(result, Reply):
        return result
    key = (result.method, result.layer, result.target_index, result.region.bbox)
    check = state.fact(("occlusion", *key), lambda: occlusion_check(state.model, result, seed=state.current.number))
    scores = state.fact(("deletion", *key), lambda: deletion_scores(state.model, [result]))
    label = result.target_label
    side = state.picture(("occlusion", id(result), id(check)), lambda: _trust_picture(result, check), result)
    return render_reply(
        state, "trust", intent, result=result, check=check, deletion=scores.aucs[0], **right_reason(state, result),
        random_auc=scores.random_auc, method=method_name(result.method), multilabel=is_multilabel(result),
        threshold=result.decision_threshold, images=[(side, caption("trust", label=label))],
        suggestions=suggestions_for(state, result, I.TRUST),
        data={"occlusion": check.to_dict(), "deletion": scores.to_dict(), **_head_data(result)}, footer=result)


def right_reason(state: SessionState, result: Explanation) -> dict:
    """Whether a faithful map also shows the model right for the right reason, from what is known of the image:
    the region the user expects the evidence in, else a bundled example's shortcut tag.

    Returns ``{"reason": kind, "reason_share": share, "shows": class drawn}``: ``kind`` is ``region_inside``,
    ``region_partly`` or ``region_elsewhere`` (the verdict of
    :func:`~explainer.evaluation.groundtruth.compare_region`; share: of the map's heat in the user's region),
    ``tag`` or ``not_tag`` (share: of the
    highlighted region on the tag), or None (nothing known: the answer says what would tell).
    """
    expected = state.expected
    if expected is not None and result.heatmap.max() > 0:  # judged as "is it looking here?" judges it
        comparison = compare_region(result, mask=expected.mask)
        return {"reason": f"region_{comparison['verdict']}", "reason_share": comparison["energy_inside"],
                "shows": None}
    known = state.current.known if state.current is not None else {}
    box = known.get("mark_box")
    if box and result.region.coverage > 0:  # how much of the highlighted region is the tag
        x, y, w, h = box
        shown = result.region.shown_mask
        share = float(shown[y: y + h + 1, x: x + w + 1].sum() / max(1, shown.sum()))
        return {"reason": "tag" if share >= 0.5 else "not_tag", "reason_share": share, "shows": known.get("shows")}
    return {"reason": None, "reason_share": None, "shows": known.get("shows")}


def _trust_picture(result: Explanation, check: Any) -> np.ndarray:
    """The image with its box, then what the model saw with the box hidden and with a random box hidden.

    The model saw its own input size (often square); those views are stretched back to the image's size and
    aspect, so the three tiles are the same size and line up.
    """
    height, width = result.image.shape[:2]
    views = [cv2.resize(view, (width, height), interpolation=cv2.INTER_LINEAR)
             for view in (check.hidden_image, check.random_image)]
    random = check.random[0] if check.random else check.hidden
    return tile([draw_region(result.image, result.region, contour=False), *views], [
        caption("trust_original", label=result.target_label, probability=check.original),
        caption("trust_hidden", probability=check.hidden), caption("trust_random", probability=random)])


def answer_compare_classes(state: SessionState, intent: Intent) -> Reply:
    count = max(2, min(intent.count or 3, MAX_COMPARED, len(state.model.labels)))
    top = state.explanation()
    results = state.explanations([p.index for p in top.predictions[:count]])
    side = state.picture(
        ("classes", *(id(r) for r in results), state.settings.opacity, state.settings.colormap),
        lambda: tile([state.overlay(r) for r in results],
                     [caption("ranked", rank=n, label=r.target_label, probability=r.probability)
                      for n, r in enumerate(results, 1)]),
        results[-1])
    rows = [{"result": r, "overlap": iou_of_masks(top.region.heat_mask, r.region.heat_mask)} for r in results]
    multilabel = is_multilabel(top)
    return render_reply(
        state, "compare_classes", intent, rows=rows, count=count, method=method_name(top.method),
        multilabel=multilabel, agnostic=class_agnostic(top.method),
        images=[(side, caption("compare_findings" if multilabel else "compare_classes",
                               method=method_name(top.method), count=count))],
        suggestions=suggestions_for(state, top, I.COMPARE_CLASSES),
        data={"explanations": [r.to_dict() for r in results]}, footer=top)


def answer_compare_methods(state: SessionState, intent: Intent) -> Reply:
    methods = list(intent.methods) if len(intent.methods) >= 2 else list(METHODS)
    top = state.explanation()
    results = [state.explanation(top.target_index, method=m) for m in methods]
    scores = state.fact(("deletion_methods", *(r.method for r in results), top.target_index, top.layer),
                        lambda: deletion_scores(state.model, results))
    rows = [{"name": method_name(r.method), "result": r, "auc": auc}
            for r, auc in zip(results, scores.aucs, strict=True)]
    side = state.picture(
        ("methods", *(id(r) for r in results), state.settings.opacity, state.settings.colormap),
        lambda: tile([state.overlay(r) for r in results],
                     [caption("method_auc", method=row["name"], auc=row["auc"]) for row in rows]), results[-1])
    best = rows[int(np.argmin(scores.aucs))]
    return render_reply(
        state, "compare_methods", intent, rows=rows, best=best, random_auc=scores.random_auc, top=top,
        images=[(side, caption("compare_methods", count=len(results), label=top.target_label,
                               image=state.current.number))],
        suggestions=[ask("use", name=best["name"]), *suggestions_for(state, top, I.COMPARE_METHODS)],
        data={"methods": [{"method": r["result"].method, "deletion_auc": round(r["auc"], 4),
                           "region": r["result"].region.to_dict()} for r in rows],
              "best": best["result"].method, "random_order_auc": round(scores.random_auc, 4)}, footer=top)


def answer_use_method(state: SessionState, intent: Intent) -> Reply:
    names = [method_name(m) for m in METHODS]
    if intent.method is None:
        note = transformer_note(state)
        return render_reply(state, "method", intent, switched=None, current=method_name(state.method), methods=names,
                            chosen=state.method_chosen, vit_note=note,
                            suggestions=[ask("use", name=method_name(m)) for m in METHODS if m != state.method],
                            data={"method": state.method, "chosen": state.method_chosen,
                                  "transformer_note": note is not None})
    state.update_settings(method=intent.method)
    if state.current is None:
        return render_reply(state, "method", intent, switched=method_name(intent.method),
                            current=method_name(intent.method), methods=[], suggestions=[ask("what_is_gradcam")],
                            data={"method": state.method, "chosen": True})
    return answer_why(state, intent, header="method")


def answer_layers(state: SessionState, intent: Intent) -> Reply:
    """Maps at a few depths. A vision transformer's rows are its stages (the embeddings, block outputs, the norm
    before the last block's attention) on the patch grid; a CNN's are the ends of its resolution stages."""
    top = state.explanation()
    usable = usable_layers(state.layer_paths())
    paths = depth_layers(usable)
    results = [state.explanation(top.target_index, layer=p.name) for p in paths]
    rows = [_layer_row(state, p, r) for p, r in zip(paths, results, strict=True)]
    side = state.picture(
        ("layers", *(id(r) for r in results), state.settings.opacity, state.settings.colormap),
        lambda: tile([state.overlay(r) for r in results], [_layer_caption(row) for row in rows]),
        results[-1])
    current = state.settings.layer or state.default_layer()
    transformer = any(row["stage"] for row in rows)
    return render_reply(
        state, "layers", intent, rows=rows, current=current, default=state.default_layer(), top=top,
        method=method_name(top.method), n_layers=len(usable), transformer=transformer,
        n_blocks=block_count(usable), default_stage=layer_stage(state, state.default_layer()),
        images=[(side, caption("layers", method=method_name(top.method), label=top.target_label, count=len(rows)))],
        suggestions=[ask("use_layer", name=rows[0]["name"]), *suggestions_for(state, top, I.LAYERS)],
        data={"layers": [{"name": r["name"], "shape": r["shape"], "region": r["result"].region.to_dict(),
                          **({"block": r["stage"]["block"], "stage": r["stage"]["label"], "grid": r["stage"]["grid"]}
                             if r["stage"] else {})} for r in rows],
              "current": current, **({"blocks": block_count(usable)} if transformer else {})}, footer=top)


def _layer_row(state: SessionState, path: Any, result: Explanation) -> dict:
    shape = path.output_shape
    return {"name": path.name, "shape": f"{shape[1]}×{shape[2]}×{shape[3]}", "result": result,
            "stage": layer_stage(state, path.name)}


def _layer_caption(row: dict) -> str:
    stage = row["stage"]
    if stage is None:
        return caption("layer", name=row["name"], shape=row["shape"])
    return caption("layer_stage", stage=stage["label"], grid=stage["grid"], dim=stage["dim"])


def answer_use_layer(state: SessionState, intent: Intent) -> Reply:
    name = _chosen_layer(state, intent)
    if name is None:
        names = [p.name for p in depth_layers(usable_layers(state.layer_paths()), 6)]
        return render_reply(state, "layer_unknown", intent, asked=intent.layer, layers=names,
                            stages=[layer_stage(state, n) for n in names], error=True,
                            suggestions=[ask("layers")], data={"asked": intent.layer})
    state.update_settings(layer=None if name == state.default_layer() else name)
    if state.current is None:
        stage = layer_stage(state, name)
        return render_reply(state, "layer_set", intent, layer=name, stage=stage, suggestions=[ask("layers")],
                            data={"layer": name, **({"block": stage["block"]} if stage else {})})
    return answer_why(state, intent, header="layer")


def _chosen_layer(state: SessionState, intent: Intent) -> str | None:
    layers = usable_layers(state.layer_paths())
    names = [p.name for p in layers]
    if intent.layer == "auto":
        return state.default_layer()
    if intent.layer and intent.layer.isdigit():
        number = int(intent.layer)
        return names[number - 1] if 1 <= number <= len(names) else None
    if intent.layer:
        return intent.layer if intent.layer in names else None
    stages = [p.name for p in depth_layers(layers, n=len(layers))]
    current = state.settings.layer or state.default_layer()
    position = names.index(current) if current in names else len(names) - 1
    if intent.layer_step < 0:
        earlier = [n for n in stages if names.index(n) < position]
        return earlier[-1] if earlier else stages[0]
    later = [n for n in stages if names.index(n) > position]
    return later[0] if later else stages[-1]


def answer_teach(state: SessionState, intent: Intent) -> Reply:
    method = intent.method if intent.method in METHODS else state.method
    result = state.explanation(method=method) if state.current is not None else None
    weights = None
    if result is not None and result.channel_weights is not None:
        order = np.argsort(-result.channel_weights)[:3]
        weights = {"top": [(int(k), float(result.channel_weights[k])) for k in order],
                   "positive": int((result.channel_weights > 0).sum()), "total": result.n_channels}
    layer = result.layer if result else state.default_layer()
    # Teaching Grad-CAM or the transformer default on a transformer: say why the default differs from Grad-CAM.
    note = transformer_note(state) if method in ("gradcam", TRANSFORMER_METHOD) else None
    return render_reply(
        state, "teach", intent, method=method, name=method_name(method), result=result, weights=weights,
        squash=squash(state.model.info.head), colormap=state.settings.colormap,
        layer=layer, stage=layer_stage(state, layer), vit_note=note,
        cells=f"{result.cam.shape[0]}×{result.cam.shape[1]}" if result is not None else None,
        channels=_channels(state, result.layer) if result else None,
        logit=float(result.logits[result.target_index]) if result is not None else None,
        suggestions=suggestions_for(state, result, I.TEACH) if result else [ask("help")],
        data={"method": method, "channel_weights": weights, "transformer_note": note is not None}, footer=result)


def _channels(state: SessionState, layer: str) -> int | None:
    return next((int(p.output_shape[-1]) for p in state.layer_paths() if p.name == layer), None)


def answer_help(state: SessionState, intent: Intent) -> Reply:
    labels = list(state.model.labels)
    return render_reply(
        state, "help", intent, has_image=state.current is not None, model=state.model.info,
        labels=labels[:8], n_labels=len(labels), methods=[method_name(m) for m in METHODS],
        models=state.model_names, colormaps=list(COLORMAPS), examples=EXAMPLE_QUESTIONS,
        suggestions=list(EXAMPLE_QUESTIONS[:4]) if state.current is not None else [],
        data={"examples": list(EXAMPLE_QUESTIONS)})


def answer_model(state: SessionState, intent: Intent) -> Reply:
    if intent.model and intent.model != state.model.name:
        state.set_model(state.load_model(intent.model))
        if state.current is not None:
            return answer_why(state, intent, header="model")
    info = state.model.info
    others = [m for m in state.model_names if m != info.name]
    layer = state.settings.layer or state.default_layer()
    note = transformer_note(state)
    return render_reply(
        state, "model", intent, info=info, n_labels=len(info.labels), labels=info.labels[:10],
        layer=layer, stage=layer_stage(state, layer), method=method_name(state.method), chosen=state.method_chosen,
        vit_note=note, n_blocks=block_count(state.layer_paths()) if note else 0,
        models=others, switched=bool(intent.model),
        suggestions=[*[ask("use_model", name=m) for m in others][:2], ask("help")],
        data={"head": info.head, "n_labels": len(info.labels), "channels": info.channels,
              "input_size": list(info.input_size), "preprocess": info.preprocess, "method": state.method,
              "transformer": state.transformer,
              **({"decision_threshold": info.decision_threshold} if info.head == MULTILABEL else {})})


def answer_setting(state: SessionState, intent: Intent) -> Reply:
    if intent.setting is None or (intent.value is None and intent.typed is None):
        return render_reply(state, "setting", intent, settings=state.settings, colormaps=list(COLORMAPS),
                            changed=None, suggestions=[ask("use", name=name) for name in list(COLORMAPS)[:3]],
                            data={"settings": dataclasses.asdict(state.settings)})
    try:
        apply_setting(state, intent)
    except SettingError as err:
        return error_reply(state, err, intent)
    if intent.setting == "segment" and state.current is not None:  # the new mask is the answer
        return answer_region(state, intent, header="segment")
    images, result = [], None
    if state.current is not None:
        result = state.explanation()
        shown = state.overlay(result) if intent.setting != "threshold" else state.picture(
            ("region", id(result)), lambda: draw_region(result.image, result.region), result)
        images = [(shown, caption("setting", setting=intent.setting,
                                  value=getattr(state.settings, intent.setting)))]
    return render_reply(state, "setting", intent, settings=state.settings, changed=intent.setting,
                        colormaps=list(COLORMAPS), result=result, images=images, method=method_name(state.method),
                        suggestions=suggestions_for(state, result), footer=result,
                        data={"settings": dataclasses.asdict(state.settings), "changed": intent.setting,
                              **({"explanation": result.to_dict()} if result is not None else {})})


def apply_setting(state: SessionState, intent: Intent) -> None:
    """Change the setting ``intent`` names; a relative value ("+0.15", "-0.1") moves the current one, within bounds.

    Raises :class:`SettingError` for a value out of range (nothing changes then).
    """
    value = intent.value
    if intent.typed is not None:  # a number typed: refused, quoting it, unless plain and in range
        value = setting_number(intent.setting, value, intent.typed)
    elif isinstance(value, str) and intent.setting in RELATIVE_SETTINGS:  # "more transparent", "lower the threshold"
        low, high = RELATIVE_SETTINGS[intent.setting]
        value = float(np.clip(getattr(state.settings, intent.setting) + float(value), low, high))
        value = round(value, 4) if intent.setting == "threshold" else value
    state.update_settings(**{intent.setting: value})


def answer_greeting(state: SessionState, intent: Intent) -> Reply:
    return render_reply(state, "greeting", intent, has_image=state.current is not None, model=state.model.name,
                        suggestions=list(EXAMPLE_QUESTIONS[:4]) if state.current
                        else [ask("help"), ask("what_is_gradcam")])


def answer_image(state: SessionState, intent: Intent) -> Reply:
    return answer_why(state, intent, header="switched")


def answer_unknown(state: SessionState, intent: Intent) -> Reply:
    return render_reply(state, "unknown", intent, question=intent.text, examples=EXAMPLE_QUESTIONS,
                        has_image=state.current is not None, suggestions=list(EXAMPLE_QUESTIONS[:4]),
                        data={"examples": list(EXAMPLE_QUESTIONS)})


# ------------------------------------------------------------------------------- "is it looking here?"


def expected_from_text(state: SessionState, text: str) -> ExpectedRegion:
    """The region typed in ``text`` on the current image: a box in pixels or place words of the 3×3 grid.

    Four numbers are ``x, y, w, h`` in the pixels of the image as uploaded (corners ``x1, y1, x2, y2`` when the text
    says so); a box partly outside is cut to the image. Place words name grid cells ("lower left").

    Raises
    ------
    RegionError
        Neither four numbers nor a place, a box without area, or a box entirely outside the image.
    """
    entry = _current(state)
    phrase = region_phrase(text) or str(text)
    width, height = entry.original_size
    shown = clip_box(region_from_text(phrase, (height, width)), (height, width))  # the user's pixels
    box = _scaled_box(shown, entry)
    words = not any(ch.isdigit() for ch in phrase)
    return ExpectedRegion(entry.number, box_mask(box, entry.image.shape[:2]), box, "words" if words else "box",
                          said=one_line(phrase, 80), shown_box=shown)


def _scaled_box(box: tuple[int, int, int, int], entry: ImageEntry) -> tuple[int, int, int, int]:
    """A box in the uploaded image's pixels as a box in the explained image's (they differ for shrunk uploads)."""
    (width, height), (orig_w, orig_h) = entry.size, entry.original_size
    if (width, height) == (orig_w, orig_h):
        return box
    sx, sy = width / orig_w, height / orig_h
    x, y, w, h = box
    return clip_box((round(x * sx), round(y * sy), max(1, round(w * sx)), max(1, round(h * sy))), (height, width))


def expected_from_mask(state: SessionState, source: Any) -> ExpectedRegion:
    """A painted or uploaded mask of the region on the current image, resized to it.

    ``source`` is an array (H×W or H×W×C, any dtype: the non-zero or bright part; an RGBA brush layer: where it
    is not fully transparent, :func:`explainer.inputs.images.alpha_mask`), a PIL image, a file path or an upload
    dict ``{"path": ...}`` (see :func:`explainer.evaluation.groundtruth.read_mask`).

    Raises
    ------
    RegionError
        An empty mask, or one whose proportions differ from the image's.
    """
    entry = _current(state)
    if isinstance(source, dict):
        source = source.get("path")
        if source is None:
            raise RegionError("The mask upload carried no file.")
    mask = read_mask(source, entry.image.shape[:2])
    return ExpectedRegion(entry.number, mask, None, "mask")


def _current(state: SessionState) -> ImageEntry:
    if state.current is None:
        raise RegionError("There is no image yet to lay the region on: upload the image first.")
    return state.current


def answer_expected(state: SessionState, intent: Intent, header: str | None = None) -> Reply:
    """Is the map looking where the user expects the evidence? The region typed in the message, else the one
    remembered for the current image; the class named, else the one asked about last, else the top class (the top
    finding of a multi-label model). A method named becomes the method in use (as "use ..." does).

    ``header`` says what a follow-up changed (``method``, ``setting``); the reply's intent is always ``expected``.
    """
    if intent.region:
        state.set_expected(expected_from_text(state, intent.region))
    expected = state.expected_region()
    if expected is None:
        return no_region_reply(state, intent)
    if intent.method:
        state.update_settings(method=intent.method)
    target = intent.target if intent.target else expected.target
    result = _explained(state, dataclasses.replace(intent, target=target))
    if isinstance(result, Reply):
        return result
    state.remember_target(result.target_label if target is not None else None)  # a label: survives a new model
    comparison = compare_region(result, box=expected.box) if expected.box else compare_region(result,
                                                                                              mask=expected.mask)
    distance = float(metrics.peak_distance(None, [result.image], [result.heatmap], masks=[expected.mask])[0])
    picture = state.picture(
        ("expected", id(result), expected.serial, state.settings.opacity, state.settings.colormap),
        lambda: draw_expected(draw_region(state.overlay(result), result.region), expected.mask), result)
    facts = _warnings(state, result)
    summary = {key: comparison[key] for key in ("energy_inside", "hit", "iou", "verdict", "coverage", "tolerance")}
    summary.update(peak=list(result.region.peak), peak_distance=round(distance, 2), region={
        "box": list(expected.shown_box or expected.box) if expected.box else None, "pixels": expected.pixels,
        "given_as": expected.given_as, "said": expected.said})
    return render_reply(
        state, "expected", intent, kind=I.EXPECTED, header=header, changed=intent.setting, result=result,
        method=method_name(result.method), expected=expected, comparison=comparison, distance=distance,
        empty_map=not bool(np.any(result.heatmap > 0)), wrong_reason=WRONG_REASON_THRESHOLD,
        multilabel=is_multilabel(result),
        threshold=result.decision_threshold, size=state.current.original_size, **facts,
        images=[(picture, caption("expected", method=method_name(result.method), label=result.target_label,
                                  probability=result.probability, image=state.current.number))],
        suggestions=_expected_suggestions(state, result),
        data={"header": header, "expected": summary, "explanation": result.to_dict(), **_head_data(result),
              **_facts_data(facts)},
        footer=result)


def answer_expected_follow_up(state: SessionState, intent: Intent) -> Reply:
    """After an "is it looking here?" answer, another class ("and for square?"), method ("with Grad-CAM++?") or
    setting ("lower the threshold") is the same question again, about the same region."""
    if intent.name == I.SETTING:
        try:
            apply_setting(state, intent)
        except SettingError as err:
            return error_reply(state, err, intent)
    header = {I.USE_METHOD: "method", I.SETTING: "setting"}.get(intent.name)
    return answer_expected(state, dataclasses.replace(intent, region=None), header=header)


def _expected_suggestions(state: SessionState, result: Explanation) -> list[str]:
    """The follow-ups that reuse the region: another class, another method, a lower threshold, the trust check."""
    options = []
    runner = next((p for p in result.predictions if p.index != result.target_index), None)
    if runner is not None:
        options.append(ask("what_about", label=runner.label))
    other = OTHER_METHOD if result.method != OTHER_METHOD else "gradcam"
    if other in METHODS:
        options.append(ask("with_method", name=method_name(other)))
    low, _high = RELATIVE_SETTINGS["threshold"]
    if state.settings.threshold - THRESHOLD_STEP >= low:
        options.append(ask("lower_threshold"))
    options.append(ask("trust"))
    return options


def no_region_reply(state: SessionState, intent: Intent) -> Reply:
    """"Is it looking where it should?" with no region said yet for this image: how to say one."""
    return render_reply(state, "no_region", intent, kind="no_region", error=True, size=state.current.original_size,
                        suggestions=[ask("expected_example"), ask("why")], data={})


# ---------------------------------------------------------------------------------------- problem replies


def no_image_reply(state: SessionState, intent: Intent | None = None) -> Reply:
    return render_reply(state, "no_image", intent, model=state.model.info, question=intent.text if intent
                        else "", error=True, kind="no_image", suggestions=[ask("help"), ask("what_is_gradcam")])


def no_such_image_reply(state: SessionState, intent: Intent) -> Reply:
    """The message points at an image the conversation does not have ("image 7")."""
    return render_reply(state, "no_such_image", intent, ref=intent.image_ref, error=True, kind="no_such_image",
                        suggestions=[ask("first_image"), ask("why")] if state.images else [ask("help")],
                        entries=[e.to_dict() for e in state.images],
                        current=state.current.to_dict() if state.current else None,
                        data={"ref": intent.image_ref})


def bad_image_reply(state: SessionState, problems: list[tuple[str, str]], added: list[ImageEntry]) -> Reply:
    return render_reply(state, "bad_image", None, kind="bad_image",
                        problems=[{"name": n, "message": m} for n, m in problems],
                        added=[e.to_dict() for e in added], current=state.current.to_dict() if state.current
                        else None, error=True, suggestions=[ask("why")] if state.current else [ask("help")],
                        data={"problems": [{"file": n, "error": m} for n, m in problems]})


#: The follow-up that asks the same question about one of several candidate classes.
_FOLLOW_UP = {I.CLASS: "why_not", I.REGION: "region_for", I.TRUST: "trust_for", I.CONFIDENCE: "likely",
              I.WHY: "explain"}


def ambiguous_reply(state: SessionState, intent: Intent, err: AmbiguousClassError) -> Reply:
    follow_up = _FOLLOW_UP.get(intent.name, "what_about")
    return render_reply(state, "ambiguous", intent, asked=intent.target, candidates=err.candidates[:8],
                        more=max(0, len(err.candidates) - 8), error=True, kind="ambiguous_class",
                        suggestions=[ask(follow_up, label=c) for c in err.candidates[:4]],
                        data={"candidates": err.candidates})


def no_class_reply(state: SessionState, intent: Intent, err: ClassError) -> Reply:
    labels = list(state.model.labels)
    return render_reply(state, "no_class", intent, asked=intent.target, candidates=err.candidates,
                        labels=labels[:12], n_labels=len(labels), error=True, kind="unknown_class",
                        suggestions=[ask("what_about", label=c) for c in err.candidates[:3]] or [ask("what")],
                        data={"asked": intent.target, "candidates": err.candidates})


def error_reply(state: SessionState, err: ExplainerError, intent: Intent | None = None) -> Reply:
    """Any :class:`ExplainerError`: its message (written for people), escaped, and the state kept."""
    return render_reply(state, "error", intent, message=str(err), error_type=type(err).__name__, error=True,
                        kind="error", has_image=state.current is not None,
                        suggestions=[ask("help")] + ([ask("why")] if state.current else []),
                        data={"error": type(err).__name__, "message": str(err)})


def apology_reply(state: SessionState) -> Reply:
    """An unexpected failure: no details (they are in the log), the conversation goes on."""
    try:
        text = render("apology", has_image=state.current is not None)
    except Exception:  # even the template failed: the catalogue's plain sentence
        logger.exception("apology template failed")
        text = message("chat.apology")
    return Reply(text, [], [ask("help")], {"intent": "apology", "model": state.model.name}, "apology", True)

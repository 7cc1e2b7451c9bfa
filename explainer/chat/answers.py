"""One function per intent: the session and the parsed message in, a :class:`Reply` out.

Every sentence comes from a template in ``templates/`` filled with numbers measured on the current image; the
functions here only gather those numbers (from the session's cache whenever possible) and pick pictures and
follow-up suggestions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..cams import METHODS, method_key
from ..errors import AmbiguousClassError, ClassError, ExplainerError, ImageError
from ..images import display_name
from ..layers import depth_layers, usable_layers
from ..render import COLORMAPS, bar_chart, crop_region, draw_region, tile
from ..result import Explanation, Prediction
from . import intents as I
from .checks import Structure, deletion_scores, image_structure, occlusion_check, out_of_distribution
from .intents import Intent, Vocab, parse
from .reply import Reply
from .session import ChatSession, ImageEntry, SettingError
from .text import clean_text, render

logger = logging.getLogger(__name__)

#: Questions shown when the user needs ideas (each is understood by the intent matcher).
EXAMPLE_QUESTIONS = (
    "What is it?",
    "Why?",
    "How confident is it?",
    "Show the region",
    "Does it hold up?",
    "Compare with the second guess",
    "Compare methods",
    "Which layer?",
    "What is Grad-CAM?",
)
CAPTION_CHARS = 120
#: What the top and the bottom of each colormap look like, for people reading an overlay.
COLORMAP_ENDS = {
    "turbo": ("dark red", "dark blue"), "jet": ("dark red", "dark blue"), "inferno": ("pale yellow", "black"),
    "magma": ("pale yellow", "black"), "viridis": ("yellow", "dark purple"),
}
MAX_COMPARED = 6
#: The head whose labels are independent findings (each with its own probability and a decision threshold).
MULTILABEL = "multilabel"
#: A finding this close to the decision threshold (in probability) is "close": a small change could flip it.
NEAR_THRESHOLD = 0.1

Answer = Callable[[ChatSession, Intent], Reply]


# ----------------------------------------------------------------------------------------------- dispatch


def respond(session: ChatSession, text: str, files: list) -> Reply:
    """Add the uploaded images, read the message and answer it (errors propagate to :meth:`ChatSession.respond`).

    Notes the image loader made about a new upload (e.g. which frame of a multi-frame DICOM file is explained)
    open the answer, whatever the question was.
    """
    added, problems = _add_images(session, files)
    return _with_notes(_answer(session, text, added, problems), added)


def _answer(session: ChatSession, text: str, added: list[ImageEntry], problems: list[tuple[str, str]]) -> Reply:
    intent = parse(text, vocab(session))
    if problems:
        return bad_image_reply(session, problems, added)
    if added and (intent.name in (I.UNKNOWN, I.GREETING, I.IMAGE) or not text.strip()):
        return answer_why(session, Intent(I.WHY, text=intent.text), header="new_image")
    if not text.strip():
        return no_image_reply(session) if session.current is None else answer_help(session, intent)
    if intent.image_ref and not added:
        entry = session.find_image(intent.image_ref)
        if entry is None:
            return render_reply(session, "no_such_image", intent, ref=intent.image_ref, error=True,
                                kind="no_such_image",
                                suggestions=["First image", "Why?"] if session.images else ["Help"],
                                entries=[e.to_dict() for e in session.images],
                                current=session.current.to_dict() if session.current else None)
        session.current = entry
    if intent.name in NEEDS_IMAGE and session.current is None:
        return no_image_reply(session, intent)
    return ANSWERS[intent.name](session, intent)


def _with_notes(reply: Reply, added: list[ImageEntry]) -> Reply:
    noted = [{"number": e.number, "notes": list(e.notes)} for e in added if getattr(e, "notes", None)]
    if noted:
        reply.markdown = render("image_notes", entries=noted) + "\n\n" + reply.markdown
        reply.data["image_notes"] = noted
    return reply


def _add_images(session: ChatSession, files: list) -> tuple[list[ImageEntry], list[tuple[str, str]]]:
    added, problems = [], []
    for source in files:
        try:
            added.append(session.add_image(source))
        except ImageError as err:
            problems.append((_file_name(source), str(err)))
    return added, problems


def _file_name(source: Any) -> str:
    """How a message may call an upload: its file name, but never a DICOM file's (often the patient's name)."""
    path = source.get("path") if isinstance(source, dict) else source
    return display_name(path) if isinstance(path, str) else "the upload"


def vocab(session: ChatSession) -> Vocab:
    """What messages may name in this conversation (cached per model)."""
    return session._model_fact(("vocab", session.model_names), lambda: Vocab(
        labels=tuple(session.model.labels),
        layers=tuple(p.name for p in usable_layers(session.layer_paths())), models=session.model_names,
        colormaps=tuple(COLORMAPS)))


# ------------------------------------------------------------------------------------------- shared pieces


def render_reply(session: ChatSession, template: str, intent: Intent | None = None, *,
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
                                    entry=session.current)
    name = kind or (intent.name if intent else template)
    data = {"intent": name, "question_intent": intent.name if intent else None, "model": session.model.name,
            **(data or {})}
    if session.current is not None:
        data.setdefault("image", session.current.to_dict())
    return Reply(markdown, list(images or []), list(suggestions)[:4], data, name, error)


def method_name(key: str) -> str:
    """How people write the method ``key`` (its class's display name)."""
    cls = METHODS.get(method_key(key))
    return cls.display_name if cls is not None else key


def class_agnostic(key: str) -> bool:
    """True when the method's map is the same for every class."""
    cls = METHODS.get(method_key(key))
    return cls is not None and cls.class_agnostic


def caption(text: str) -> str:
    return clean_text(text, CAPTION_CHARS)


def region_facts(result: Explanation) -> dict:
    """The numbers every template uses to describe a region."""
    region = result.region
    height, width = result.cam.shape[:2]
    return {"region": region, "cells": f"{height}×{width}", "empty": region.coverage <= 0,
            "size": result.image.shape[1::-1]}


def suggestions_for(session: ChatSession, result: Explanation | None, *skip: str) -> list[str]:
    """Follow-ups that make sense after an answer about ``result`` (skipping the intents in ``skip``)."""
    options: list[tuple[str, str]] = []
    if result is not None:
        runner = next((p for p in result.predictions if p.index != result.target_index
                       and not (is_multilabel(result) and p.probability >= result.decision_threshold)), None)
        if not result.is_top:
            options.append((I.WHY, "Why?"))
        options += [(I.CONFIDENCE, "How confident is it?"), (I.TRUST, "Does it hold up?"),
                    (I.REGION, "Show the region")]
        if runner is not None and runner.probability >= 0.001:
            options.append((I.CLASS, f"Why not {runner.label}?"))
        options += [(I.COMPARE_CLASSES, "Compare the top 3"), (I.COMPARE_METHODS, "Compare methods"),
                    (I.LAYERS, "Show layers"), (I.TEACH, "How does this work?")]
    else:
        options += [(I.WHAT, "What is it?"), (I.WHY, "Why?"), (I.HELP, "Help")]
    return [text for name, text in options if name not in skip][:4]


def _ood(session: ChatSession, result: Explanation):
    return session.fact(("ood",), lambda: out_of_distribution(session.model, result))


def _structure(session: ChatSession) -> Structure:
    """How much the current image varies, as the model sees it (blank images get a warning)."""
    return session.fact(("structure",), lambda: image_structure(session.current.image,
                                                                 session.model.info.input_size))


def is_multilabel(result: Explanation) -> bool:
    """True when ``result``'s model reports independent findings (sigmoid per label) rather than one class."""
    return result.head == MULTILABEL


def squash(head: str) -> str:
    """The function that turns the head's logits into probabilities, as the user reads it."""
    return "sigmoid" if head in ("sigmoid", MULTILABEL) else "softmax"


def _warnings(session: ChatSession, result: Explanation) -> dict:
    """Template context and data for the warnings every answer about the image carries."""
    structure = _structure(session)
    return {"structure": structure, "ood": _ood(session, result)}


# ---------------------------------------------------------------------------------------------- answers


def answer_what(session: ChatSession, intent: Intent) -> Reply:
    result = session.explanation()
    k = min(intent.count or session.settings.top_k, len(result.predictions))
    positive = result.positive
    # A multi-label answer lists every positive finding, even beyond top-k.
    shown = result.predictions[:max(k, len(positive))]
    chart = session.picture(("bars", id(result), len(shown)), lambda: bar_chart(shown), result)
    what = "findings" if is_multilabel(result) else "classes"
    facts = _warnings(session, result)
    return render_reply(
        session, "what", intent, predictions=shown, top=result.top, k=len(shown), n_classes=len(session.model.labels),
        rest=max(0.0, 1.0 - sum(p.probability for p in shown)), multilabel=is_multilabel(result), positive=positive,
        threshold=result.decision_threshold, empty=result.region.coverage <= 0, result=result,
        method=method_name(result.method), **facts,
        images=[(chart, caption(f"Top {len(shown)} {what} of {session.model.name} on image {session.current.number}"))],
        suggestions=suggestions_for(session, result),
        data={"predictions": [p.to_dict() for p in shown], "empty_map": result.region.coverage <= 0,
              **_head_data(result), **_facts_data(facts)},
        footer=result)


def _head_data(result: Explanation) -> dict:
    """What every answer's data says about the head (multi-label answers add the positive findings)."""
    data = {"head": result.head}
    if is_multilabel(result):
        data.update(decision_threshold=result.decision_threshold, positive=[p.to_dict() for p in result.positive])
    return data


def _facts_data(facts: dict) -> dict:
    return {"structure": facts["structure"].to_dict(), "ood": facts["ood"].to_dict() if facts["ood"] else None}


def answer_why(session: ChatSession, intent: Intent, header: str | None = None) -> Reply:
    result = _explained(session, intent)
    if isinstance(result, Reply):
        return result
    if is_multilabel(result):
        return _why_findings(session, intent, result, header)
    facts = _warnings(session, result)
    return render_reply(
        session, "why", intent, header=header, entry=session.current, result=result, method=method_name(
            result.method), others=[p for p in result.predictions[:4] if p.index != result.target_index][:3],
        asked=intent.target if intent.target else None, **facts, **region_facts(result),
        images=[_overlay_picture(session, result)], suggestions=suggestions_for(session, result, I.WHY),
        data={"explanation": result.to_dict(), **_head_data(result), **_facts_data(facts)}, footer=result)


def _overlay_picture(session: ChatSession, result: Explanation) -> tuple[np.ndarray, str]:
    label = f"{method_name(result.method)} for {result.target_label} ({result.probability:.1%})"
    return session.overlay(result), caption(f"{label} · image {session.current.number}")


def _why_findings(session: ChatSession, intent: Intent, result: Explanation, header: str | None,
                  why_not: bool = False) -> Reply:
    """"Why?" for a multi-label model: a map per positive finding (up to top-k), or the asked finding's own map,
    or, when nothing is positive, the most probable finding's map with its distance below the threshold."""
    threshold, positive, asked = result.decision_threshold, result.positive, bool(intent.target)
    results = [result]
    if positive and not asked:
        results = session.explanations([p.index for p in positive[:session.settings.top_k]])
    shown = {r.target_index for r in results}
    others = [p for p in result.predictions if p.probability < threshold and p.index not in shown][:3]
    rows = [{"result": r, "region": r.region, "empty": r.region.coverage <= 0} for r in results]
    facts = _warnings(session, result)
    return render_reply(
        session, "findings", intent, header=header, entry=session.current, result=results[0], rows=rows,
        positive=positive, asked=asked, why_not=why_not, threshold=threshold, others=others,
        hidden=0 if asked else max(0, len(positive) - len(results)), method=method_name(result.method),
        cells=region_facts(results[0])["cells"], **facts,
        images=[_overlay_picture(session, r) for r in results],
        suggestions=suggestions_for(session, results[0], I.WHY, *((I.CLASS,) if why_not else ())),
        data={"explanation": results[0].to_dict(), "explanations": [r.to_dict() for r in results],
              **_head_data(result), **_facts_data(facts)}, footer=results[0])


def _explained(session: ChatSession, intent: Intent) -> Explanation | Reply:
    """The explanation for the intent's class (or the top class); a reply when the class name is a problem."""
    try:
        return session.explanation(intent.target)
    except AmbiguousClassError as err:
        return ambiguous_reply(session, intent, err)
    except ClassError as err:
        return no_class_reply(session, intent, err)


def answer_confidence(session: ChatSession, intent: Intent) -> Reply:
    result = session.explanation()
    if is_multilabel(result):
        return _confidence_findings(session, intent, result)
    top, runner = result.predictions[0], result.predictions[1] if len(result.predictions) > 1 else None
    asked = None
    if intent.target:
        asked_result = _explained(session, intent)
        if isinstance(asked_result, Reply):
            return asked_result
        if asked_result.target_index != top.index:
            asked = {"label": asked_result.target_label, "probability": asked_result.probability,
                     "rank": int((result.probabilities > asked_result.probability).sum()) + 1}
    margin = top.probability - (runner.probability if runner else 0.0)
    facts = _warnings(session, result)
    return render_reply(
        session, "confidence", intent, top=top, runner=runner, margin=margin, multilabel=False,
        qualifier=qualifier(top.probability, runner.probability if runner else 0.0), asked=asked,
        squash=squash(result.head), **facts, suggestions=suggestions_for(session, result, I.CONFIDENCE),
        data={"probability": top.probability, "margin": margin, **_head_data(result), **_facts_data(facts)},
        footer=result)


def _confidence_findings(session: ChatSession, intent: Intent, result: Explanation) -> Reply:
    """"How sure?" for a multi-label model: each finding's own probability and its distance from the decision
    threshold (a runner-up margin means nothing when the labels are independent)."""
    threshold = result.decision_threshold
    listed = result.predictions[:max(session.settings.top_k, len(result.positive))]
    asked = None
    if intent.target:
        asked_result = _explained(session, intent)
        if isinstance(asked_result, Reply):
            return asked_result
        asked = finding(asked_result.target_index, asked_result.target_label, asked_result.probability, threshold)
        if all(p.index != asked["index"] for p in listed):
            listed = [*listed, Prediction(asked["index"], asked["label"], asked["probability"])]
    findings = [finding(p.index, p.label, p.probability, threshold) for p in listed]
    facts = _warnings(session, result)
    return render_reply(
        session, "confidence", intent, multilabel=True, findings=findings, asked=asked, threshold=threshold,
        near_points=NEAR_THRESHOLD, squash=squash(result.head), **facts,
        suggestions=suggestions_for(session, result, I.CONFIDENCE),
        data={"probability": result.top.probability, "findings": [_rounded(f) for f in findings],
              **_head_data(result), **_facts_data(facts)}, footer=result)


def finding(index: int, label: str, probability: float, threshold: float) -> dict:
    """One finding of a multi-label model: its probability, signed distance from the threshold, and verdict."""
    distance = float(probability) - float(threshold)
    return {"index": int(index), "label": label, "probability": float(probability), "distance": distance,
            "positive": distance >= 0, "near": abs(distance) < NEAR_THRESHOLD}


def _rounded(found: dict) -> dict:
    return {**found, "probability": round(found["probability"], 6), "distance": round(found["distance"], 6)}


def qualifier(top: float, runner: float) -> str:
    """``confident``, ``fairly``, ``torn`` or ``unsure`` from the top two probabilities."""
    if top >= 0.8 and top - runner >= 0.5:
        return "confident"
    if runner >= 0.2 and top - runner < 0.2:
        return "torn"
    if top < 0.5:
        return "unsure"
    return "fairly"


def answer_class(session: ChatSession, intent: Intent) -> Reply:
    asked = _explained(session, intent)
    if isinstance(asked, Reply):
        return asked
    if is_multilabel(asked):  # X's own probability and map: findings do not compete with a winner
        return _why_findings(session, intent, asked, None, why_not=True)
    top = session.explanation()
    if asked.target_index == top.target_index:
        return answer_why(session, intent, header="already_top")
    rank = int((top.probabilities > asked.probability).sum()) + 1
    pictures = [(session.overlay(top), caption(f"{top.target_label} ({top.probability:.1%})")),
                (session.overlay(asked), caption(f"{asked.target_label} ({asked.probability:.1%})"))]
    side = session.picture(("pair", id(top), id(asked), session.settings.opacity, session.settings.colormap),
                           lambda: tile([p for p, _ in pictures], [c for _, c in pictures]), asked)
    overlap = mask_iou(top.region.mask, asked.region.mask)
    return render_reply(
        session, "class", intent, top=top, asked=asked, rank=rank, n_classes=len(session.model.labels),
        times=top.probability / max(asked.probability, 1e-12), overlap=overlap, method=method_name(asked.method),
        agnostic=class_agnostic(asked.method), top_region=top.region, structure=_structure(session),
        **region_facts(asked),
        images=[(side, caption(f"{method_name(asked.method)}: {top.target_label} vs {asked.target_label}"))],
        suggestions=[f"Show the region for {asked.target_label}", *suggestions_for(session, top, I.CLASS)],
        data={"explanation": asked.to_dict(), "top": top.to_dict(), "overlap_iou": overlap}, footer=asked)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def answer_region(session: ChatSession, intent: Intent) -> Reply:
    result = _explained(session, intent)
    if isinstance(result, Reply):
        return result
    drawn = session.picture(("region", id(result)), lambda: draw_region(result.image, result.region), result)
    images = [(drawn, caption(f"Region for {result.target_label} (threshold {result.region.threshold:.0%})"))]
    if result.region.coverage > 0:
        crop = session.picture(("crop", id(result)), lambda: crop_region(result.image, result.region), result)
        images.append((crop, caption(f"Cropped region for {result.target_label}")))
    return render_reply(
        session, "region", intent, result=result, method=method_name(result.method), **region_facts(result),
        images=images, suggestions=["Set threshold to 30 %", *suggestions_for(session, result, I.REGION)],
        data={"region": result.region.to_dict(), "explanation": result.to_dict()}, footer=result)


def answer_trust(session: ChatSession, intent: Intent) -> Reply:
    result = _explained(session, intent)
    if isinstance(result, Reply):
        return result
    key = (result.method, result.layer, result.target_index, result.region.bbox)
    check = session.fact(("occlusion", *key),
                         lambda: occlusion_check(session.model, result, seed=session.current.number))
    scores = session.fact(("deletion", *key), lambda: deletion_scores(session.model, [result]))
    label = result.target_label
    side = session.picture(("occlusion", id(result), id(check)), lambda: tile(
        [draw_region(result.image, result.region, contour=False), check.hidden_image, check.random_image],
        [f"{label} {check.original:.1%}", f"box hidden: {check.hidden:.1%}", f"random box: {check.random[0]:.1%}"
         if check.random else "random box"]), result)
    return render_reply(
        session, "trust", intent, result=result, check=check, deletion=scores.aucs[0],
        random_auc=scores.random_auc, method=method_name(result.method), multilabel=is_multilabel(result),
        threshold=result.decision_threshold,
        images=[(side, caption(f"What the model saw: image, highlighted box hidden, a random box hidden ({label})"))],
        suggestions=suggestions_for(session, result, I.TRUST),
        data={"occlusion": check.to_dict(), "deletion": scores.to_dict(), **_head_data(result)}, footer=result)


def answer_compare_classes(session: ChatSession, intent: Intent) -> Reply:
    count = max(2, min(intent.count or 3, MAX_COMPARED, len(session.model.labels)))
    top = session.explanation()
    indices = [p.index for p in top.predictions[:count]]
    results = session.explanations(indices)
    side = session.picture(
        ("classes", *(id(r) for r in results), session.settings.opacity, session.settings.colormap),
        lambda: tile([session.overlay(r) for r in results],
                     [f"{n}. {r.target_label} ({r.probability:.1%})" for n, r in enumerate(results, 1)]),
        results[-1])
    rows = [{"result": r, "overlap": mask_iou(top.region.mask, r.region.mask)} for r in results]
    what = "findings" if is_multilabel(top) else "classes"
    return render_reply(
        session, "compare_classes", intent, rows=rows, count=count, method=method_name(top.method), what=what,
        agnostic=class_agnostic(top.method),
        images=[(side, caption(f"{method_name(top.method)} maps of the top {count} {what}"))],
        suggestions=suggestions_for(session, top, I.COMPARE_CLASSES),
        data={"explanations": [r.to_dict() for r in results]}, footer=top)


def answer_compare_methods(session: ChatSession, intent: Intent) -> Reply:
    methods = list(intent.methods) if len(intent.methods) >= 2 else list(METHODS)
    top = session.explanation()
    results = [session.explanation(top.target_index, method=m) for m in methods]
    scores = session.fact(("deletion_methods", *(r.method for r in results), top.target_index, top.layer),
                          lambda: deletion_scores(session.model, results))
    captions = [f"{method_name(r.method)} · deletion {auc:.2f}" for r, auc in zip(results, scores.aucs, strict=True)]
    side = session.picture(
        ("methods", *(id(r) for r in results), session.settings.opacity, session.settings.colormap),
        lambda: tile([session.overlay(r) for r in results], captions), results[-1])
    best = int(np.argmin(scores.aucs))
    rows = [{"name": method_name(r.method), "result": r, "auc": auc}
            for r, auc in zip(results, scores.aucs, strict=True)]
    return render_reply(
        session, "compare_methods", intent, rows=rows, best=rows[best], random_auc=scores.random_auc, top=top,
        images=[(side, caption(f"{len(results)} methods for {top.target_label} on image {session.current.number}"))],
        suggestions=[f"Use {rows[best]['name']}", *suggestions_for(session, top, I.COMPARE_METHODS)],
        data={"methods": [{"method": r["result"].method, "deletion_auc": round(r["auc"], 4),
                           "region": r["result"].region.to_dict()} for r in rows],
              "random_order_auc": round(scores.random_auc, 4)}, footer=top)


def answer_use_method(session: ChatSession, intent: Intent) -> Reply:
    if intent.method is None:
        return render_reply(session, "method", intent, current=method_name(session.settings.method),
                            methods=[method_name(m) for m in METHODS],
                            suggestions=[f"Use {method_name(m)}" for m in METHODS if m != session.settings.method])
    session.update_settings(method=intent.method)
    if session.current is None:
        return render_reply(session, "method", intent, switched=method_name(intent.method),
                            current=method_name(intent.method), methods=[], suggestions=["What is Grad-CAM?"])
    return answer_why(session, intent, header="method")


def answer_layers(session: ChatSession, intent: Intent) -> Reply:
    top = session.explanation()
    paths = depth_layers(usable_layers(session.layer_paths()))
    results = [session.explanation(top.target_index, layer=p.name) for p in paths]
    rows = [{"name": p.name, "shape": f"{p.output_shape[1]}×{p.output_shape[2]}×{p.output_shape[3]}", "result": r}
            for p, r in zip(paths, results, strict=True)]
    side = session.picture(
        ("layers", *(id(r) for r in results), session.settings.opacity, session.settings.colormap),
        lambda: tile([session.overlay(r) for r in results], [f"{row['name']} ({row['shape']})" for row in rows]),
        results[-1])
    return render_reply(
        session, "layers", intent, rows=rows, current=session.settings.layer or session.default_layer(),
        default=session.default_layer(), top=top, method=method_name(top.method),
        n_layers=len(usable_layers(session.layer_paths())),
        images=[(side, caption(f"{method_name(top.method)} for {top.target_label} at {len(rows)} depths"))],
        suggestions=[f"Use layer {rows[0]['name']}", *suggestions_for(session, top, I.LAYERS)],
        data={"layers": [{"name": r["name"], "shape": r["shape"], "region": r["result"].region.to_dict()}
                         for r in rows], "current": session.settings.layer or session.default_layer()}, footer=top)


def answer_use_layer(session: ChatSession, intent: Intent) -> Reply:
    name = _chosen_layer(session, intent)
    if name is None:
        return render_reply(session, "layer_unknown", intent, asked=intent.layer,
                            layers=[p.name for p in depth_layers(usable_layers(session.layer_paths()), 6)], error=True,
                            suggestions=["Show layers"])
    session.update_settings(layer=None if name == session.default_layer() else name)
    if session.current is None:
        return render_reply(session, "layer_set", intent, layer=name, suggestions=["Show layers"])
    return answer_why(session, intent, header="layer")


def _chosen_layer(session: ChatSession, intent: Intent) -> str | None:
    layers = usable_layers(session.layer_paths())
    names = [p.name for p in layers]
    if intent.layer == "auto":
        return session.default_layer()
    if intent.layer and intent.layer.isdigit():
        number = int(intent.layer)
        return names[number - 1] if 1 <= number <= len(names) else None
    if intent.layer:
        return intent.layer if intent.layer in names else None
    stages = [p.name for p in depth_layers(layers, n=len(layers))]
    current = session.settings.layer or session.default_layer()
    position = names.index(current) if current in names else len(names) - 1
    if intent.layer_step < 0:
        earlier = [n for n in stages if names.index(n) < position]
        return earlier[-1] if earlier else stages[0]
    later = [n for n in stages if names.index(n) > position]
    return later[0] if later else stages[-1]


def answer_teach(session: ChatSession, intent: Intent) -> Reply:
    method = intent.method if intent.method in METHODS else session.settings.method
    result = session.explanation(method=method) if session.current is not None else None
    weights = None
    if result is not None and result.channel_weights is not None:
        order = np.argsort(-result.channel_weights)[:3]
        weights = {"top": [(int(k), float(result.channel_weights[k])) for k in order],
                   "positive": int((result.channel_weights > 0).sum()), "total": result.n_channels}
    return render_reply(
        session, "teach", intent, method=method, name=method_name(method), result=result, weights=weights,
        squash=squash(session.model.info.head),
        colormap=session.settings.colormap, colours=COLORMAP_ENDS.get(session.settings.colormap),
        layer=result.layer if result else session.default_layer(),
        cells=f"{result.cam.shape[0]}×{result.cam.shape[1]}" if result is not None else None,
        channels=_channels(session, result.layer) if result else None,
        logit=float(result.logits[result.target_index]) if result is not None else None,
        suggestions=suggestions_for(session, result, I.TEACH) if result else ["Help"],
        footer=result)


def _channels(session: ChatSession, layer: str) -> int | None:
    return next((int(p.output_shape[-1]) for p in session.layer_paths() if p.name == layer), None)


def answer_help(session: ChatSession, intent: Intent) -> Reply:
    labels = list(session.model.labels)
    return render_reply(
        session, "help", intent, has_image=session.current is not None, model=session.model.info,
        labels=labels[:8], n_labels=len(labels), methods=[method_name(m) for m in METHODS],
        models=session.model_names, colormaps=list(COLORMAPS), examples=EXAMPLE_QUESTIONS,
        suggestions=list(EXAMPLE_QUESTIONS[:4]) if session.current is not None else [])


def answer_model(session: ChatSession, intent: Intent) -> Reply:
    if intent.model and intent.model != session.model.name:
        session.set_model(session.load_model(intent.model))
        if session.current is not None:
            return answer_why(session, intent, header="model")
    info = session.model.info
    return render_reply(
        session, "model", intent, info=info, n_labels=len(info.labels), labels=info.labels[:10],
        layer=session.settings.layer or session.default_layer(), method=method_name(session.settings.method),
        models=[m for m in session.model_names if m != info.name], switched=bool(intent.model),
        suggestions=[*[f"Use the {m} model" for m in session.model_names if m != info.name][:2], "Help"])


def answer_setting(session: ChatSession, intent: Intent) -> Reply:
    if intent.setting is None or intent.value is None:
        return render_reply(session, "setting", intent, settings=session.settings, colormaps=list(COLORMAPS),
                            changed=None, suggestions=[f"Use {name}" for name in list(COLORMAPS)[:3]])
    value = intent.value
    if intent.setting == "opacity" and isinstance(value, str):  # "more transparent": relative to the current one
        value = float(np.clip(session.settings.opacity + float(value), 0.05, 1.0))
    try:
        session.update_settings(**{intent.setting: value})
    except SettingError as err:
        return error_reply(session, err, intent)
    images, result = [], None
    if session.current is not None:
        result = session.explanation()
        shown = session.overlay(result) if intent.setting != "threshold" else session.picture(
            ("region", id(result)), lambda: draw_region(result.image, result.region), result)
        images = [(shown, caption(f"{intent.setting} = {getattr(session.settings, intent.setting)}"))]
    return render_reply(session, "setting", intent, settings=session.settings, changed=intent.setting,
                        colormaps=list(COLORMAPS), result=result, images=images,
                        suggestions=suggestions_for(session, result), footer=result,
                        data={"settings": dataclasses.asdict(session.settings),
                              **({"explanation": result.to_dict()} if result is not None else {})})


def answer_greeting(session: ChatSession, intent: Intent) -> Reply:
    return render_reply(session, "greeting", intent, has_image=session.current is not None,
                        model=session.model.name, suggestions=list(EXAMPLE_QUESTIONS[:4]) if session.current
                        else ["Help", "What is Grad-CAM?"])


def answer_image(session: ChatSession, intent: Intent) -> Reply:
    return answer_why(session, intent, header="switched")


def answer_unknown(session: ChatSession, intent: Intent) -> Reply:
    return render_reply(session, "unknown", intent, question=intent.text, examples=EXAMPLE_QUESTIONS,
                        has_image=session.current is not None, suggestions=list(EXAMPLE_QUESTIONS[:4]))


# ---------------------------------------------------------------------------------------- problem replies


def no_image_reply(session: ChatSession, intent: Intent | None = None) -> Reply:
    return render_reply(session, "no_image", intent, model=session.model.info, question=intent.text if intent
                        else "", error=True, kind="no_image", suggestions=["Help", "What is Grad-CAM?"])


def bad_image_reply(session: ChatSession, problems: list[tuple[str, str]], added: list[ImageEntry]) -> Reply:
    return render_reply(session, "bad_image", None, kind="bad_image",
                        problems=[{"name": n, "message": m} for n, m in problems],
                        added=[e.to_dict() for e in added], current=session.current.to_dict() if session.current
                        else None, error=True, suggestions=["Why?"] if session.current else ["Help"],
                        data={"problems": [{"file": n, "error": m} for n, m in problems]})


def ambiguous_reply(session: ChatSession, intent: Intent, err: AmbiguousClassError) -> Reply:
    verb = "Why not" if intent.name == I.CLASS else _follow_up_verb(intent)
    return render_reply(session, "ambiguous", intent, asked=intent.target, candidates=err.candidates[:8],
                        more=max(0, len(err.candidates) - 8), error=True, kind="ambiguous_class",
                        suggestions=[f"{verb} {c}?" for c in err.candidates[:4]],
                        data={"candidates": err.candidates})


def _follow_up_verb(intent: Intent) -> str:
    return {I.REGION: "Show the region for", I.TRUST: "Does it hold up for", I.CONFIDENCE: "How likely is",
            I.WHY: "Explain"}.get(intent.name, "What about")


def no_class_reply(session: ChatSession, intent: Intent, err: ClassError) -> Reply:
    labels = list(session.model.labels)
    return render_reply(session, "no_class", intent, asked=intent.target, candidates=err.candidates,
                        labels=labels[:12], n_labels=len(labels), error=True, kind="unknown_class",
                        suggestions=[f"What about {c}?" for c in err.candidates[:3]] or ["What is it?"],
                        data={"candidates": err.candidates})


def error_reply(session: ChatSession, err: ExplainerError, intent: Intent | None = None) -> Reply:
    """Any :class:`ExplainerError`: its message (written for people), escaped, and the state kept."""
    return render_reply(session, "error", intent, message=str(err), error_type=type(err).__name__, error=True,
                        kind="error",
                        has_image=session.current is not None,
                        suggestions=["Help"] + (["Why?"] if session.current else []),
                        data={"error": type(err).__name__, "message": str(err)})


def apology_reply(session: ChatSession) -> Reply:
    """An unexpected failure: no details (they are in the log), the conversation goes on."""
    try:
        text = render("apology", has_image=session.current is not None)
    except Exception:  # even the template failed: a fixed sentence
        logger.exception("apology template failed")
        text = "Sorry, something went wrong on my side while answering. Please try again or ask something else."
    return Reply(text, [], ["Help"], {"intent": "apology", "model": session.model.name}, "apology", True)


NEEDS_IMAGE = frozenset({I.WHAT, I.WHY, I.CONFIDENCE, I.CLASS, I.REGION, I.TRUST, I.COMPARE_CLASSES,
                         I.COMPARE_METHODS, I.LAYERS, I.IMAGE})

ANSWERS: dict[str, Answer] = {
    I.WHAT: answer_what,
    I.WHY: answer_why,
    I.CONFIDENCE: answer_confidence,
    I.CLASS: answer_class,
    I.REGION: answer_region,
    I.TRUST: answer_trust,
    I.COMPARE_CLASSES: answer_compare_classes,
    I.COMPARE_METHODS: answer_compare_methods,
    I.USE_METHOD: answer_use_method,
    I.LAYERS: answer_layers,
    I.USE_LAYER: answer_use_layer,
    I.TEACH: answer_teach,
    I.HELP: answer_help,
    I.MODEL: answer_model,
    I.SETTING: answer_setting,
    I.IMAGE: answer_image,
    I.GREETING: answer_greeting,
    I.UNKNOWN: answer_unknown,
}

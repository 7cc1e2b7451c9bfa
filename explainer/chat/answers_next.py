"""The questions people ask next: a contrast of two classes, what speaks against one, covering a part of the image,
what the colours mean, and the closest known questions when a message is not understood.

Like :mod:`explainer.chat.answers` (whose shared pieces these use): the state and the parsed message in, a
:class:`Reply` out, every sentence from a template, every caption and follow-up from the catalogue.
"""

from __future__ import annotations

import dataclasses
import difflib

import cv2
import numpy as np

from explainer.cams import METHODS, method_key
from explainer.cams.contrast import map_correlation
from explainer.chat import intents as I
from explainer.chat.answers import (
    EXAMPLE_QUESTIONS,
    TORN_FLOOR,
    ambiguous_reply,
    ask,
    caption,
    expected_from_text,
    is_multilabel,
    method_name,
    no_class_reply,
    region_facts,
    render_reply,
)
from explainer.chat.intents import Intent
from explainer.chat.reply import Reply
from explainer.chat.session import MAX_TOP_K, SessionState
from explainer.engine import explain, predict
from explainer.errors import AmbiguousClassError, ClassError
from explainer.evaluation.groundtruth import box_mask, draw_expected
from explainer.render import COLORMAPS, colorize, draw_text, tile
from explainer.render import caption as strip_caption
from explainer.result import Explanation, Prediction

#: Own maps of two classes correlating at least this much look alike side by side: only the contrast separates them.
SIMILAR_MAPS = 0.9
#: The method a contrast or against map falls back to when the chosen one cannot make it (Eigen-CAM, Score-CAM).
FALLBACK_METHOD = "gradcam"
#: How a what-if covers the region: a blurred copy (the usual occlusion practice), the mean colour, or black.
FILLS = ("blur", "mean", "black")
DEFAULT_FILL = "blur"
#: The Gaussian blur's sigma as a fraction of the image's longer side (strong enough to wipe out shapes).
BLUR_SIGMA = 0.05
#: What the two ends of each colormap look like (its top marks the map's maximum, its bottom zero).
COLOUR_ENDS = {"turbo": ("dark red", "dark blue"), "jet": ("dark red", "dark blue"),
               "inferno": ("pale yellow", "black"), "magma": ("pale yellow", "black"),
               "viridis": ("yellow", "dark purple")}


# ------------------------------------------------------------------------------------------------ shared


def _map_method(state: SessionState, intent: Intent, facility: str) -> tuple[str, str | None]:
    """The method for a contrast (``facility`` ``takes_versus``) or against map (``takes_against``), and the
    method that could not make it (None when the chosen one can)."""
    chosen = method_key(intent.method or state.method)
    if getattr(METHODS.get(chosen), facility, False):
        return chosen, None
    return FALLBACK_METHOD, chosen


def _special_map(state: SessionState, target: int, method: str, versus: int | None = None,
                 against: bool = False) -> Explanation:
    """A contrast or against map of the current image, cached like the state's own facts."""
    settings, entry = state.settings, state.current
    key = ("special", method, settings.layer or "", target, versus, against, settings.threshold, settings.segment)

    def compute() -> Explanation:
        state.explain_calls += 1
        return explain(state.model, entry.image, target=target, method=method, layer=settings.layer,
                       threshold=settings.threshold, top_k=MAX_TOP_K, segment=settings.segment, versus=versus,
                       against=against)

    return state.fact(key, compute)


def _classes(state: SessionState, intent: Intent, targets: list, method: str) -> list[Explanation] | Reply:
    """The own maps of ``targets`` (None: the top class), or the reply when a class name is a problem."""
    try:
        return state.explanations(targets, method=method)
    except AmbiguousClassError as err:
        return ambiguous_reply(state, intent, err)
    except ClassError as err:
        return no_class_reply(state, intent, err)


def _runner_up(result: Explanation) -> Prediction | None:
    return next((p for p in result.predictions if p.index != result.target_index), None)


def contrast_suggestion(result: Explanation) -> list[str]:
    """"Why A rather than B?" for the runner-up when it is close enough to be worth asking (single-label only)."""
    runner = _runner_up(result)
    if runner is None or is_multilabel(result) or runner.probability < TORN_FLOOR:
        return []
    return [ask("rather", label=result.target_label, other=runner.label)]


# ------------------------------------------------------------------------------------------------ contrast


def answer_contrast(state: SessionState, intent: Intent) -> Reply:
    """Where the evidence for A beats B's (a map on logit_A − logit_B), and whether their own maps differ."""
    method, refused = _map_method(state, intent, "takes_versus")
    own = _classes(state, intent, [intent.target, intent.versus], method)
    if isinstance(own, Reply):
        return own
    first, second = own
    same = first.target_index == second.target_index
    result = _special_map(state, first.target_index, method, versus=second.target_index)
    correlation = map_correlation(first, second)
    similar = correlation is not None and correlation >= SIMILAR_MAPS
    picture = (state.overlay(result), caption("contrast", method=method_name(method), label=first.target_label,
                                              other=second.target_label, image=state.current.number))
    return render_reply(
        state, "contrast", intent, result=result, first=first, second=second, same=same, method=method_name(method),
        refused=method_name(refused) if refused else None, correlation=correlation, similar=similar,
        similar_at=SIMILAR_MAPS, **region_facts(result), images=[picture],
        suggestions=_contrast_suggestions(first, second),
        data={"explanation": result.to_dict(), "correlation": None if correlation is None else round(correlation, 4),
              "similar_maps": similar, "own": [first.to_dict(), second.to_dict()], "fallback_from": refused},
        footer=result)


def _contrast_suggestions(first: Explanation, second: Explanation) -> list[str]:
    return [ask("rather", label=second.target_label, other=first.target_label),
            ask("against", label=first.target_label), ask("why_not", label=second.target_label),
            ask("compare_classes")]


# ------------------------------------------------------------------------------------------------ against


def answer_against(state: SessionState, intent: Intent) -> Reply:
    """The counterfactual map (negated gradients): where the image lowers the class's score."""
    method, refused = _map_method(state, intent, "takes_against")
    own = _classes(state, intent, [intent.target], method)
    if isinstance(own, Reply):
        return own
    result = _special_map(state, own[0].target_index, method, against=True)
    nothing = not bool(np.max(result.heatmap) > 0)
    picture = (state.overlay(result), caption("against", method=method_name(method), label=result.target_label,
                                              image=state.current.number))
    return render_reply(
        state, "against", intent, result=result, own=own[0], nothing=nothing, method=method_name(method),
        refused=method_name(refused) if refused else None, **region_facts(result), images=[picture],
        suggestions=[ask("what_if_highlighted"), *contrast_suggestion(own[0]), ask("legend"), ask("trust")],
        data={"explanation": result.to_dict(), "empty_map": nothing, "fallback_from": refused}, footer=result)


# ------------------------------------------------------------------------------------------------ what if


def cover(image: np.ndarray, mask: np.ndarray, fill: str = DEFAULT_FILL) -> np.ndarray:
    """A copy of the RGB ``image`` with the pixels under the boolean ``mask`` replaced by ``fill``.

    ``blur``: a Gaussian blur of the whole image (sigma :data:`BLUR_SIGMA` × its longer side), so colours and
    brightness stay while shapes go; ``mean``: the image's mean colour; ``black``: zeros.
    """
    if fill not in FILLS:
        raise ValueError(f"Unknown fill {fill!r}; choose one of {', '.join(FILLS)}.")
    if fill == "blur":
        sigma = BLUR_SIGMA * max(image.shape[:2])
        filler = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    elif fill == "mean":
        filler = np.broadcast_to(np.rint(image.reshape(-1, 3).mean(axis=0)).astype(np.uint8), image.shape)
    else:
        filler = np.zeros_like(image)
    out = image.copy()
    out[mask] = filler[mask]
    return out


def _what_if_region(state: SessionState, intent: Intent, result: Explanation) -> dict:
    """The covered part: mask and box on the explained image, how it was given, the box in the user's pixels."""
    if intent.region == "highlighted":
        box = result.region.bbox if result.region.coverage > 0 else None
        mask = box_mask(box, result.image.shape[:2]) if box else np.zeros(result.image.shape[:2], bool)
        return {"mask": mask, "box": box, "shown_box": box, "given_as": "highlighted", "said": "highlighted"}
    expected = expected_from_text(state, intent.region or "")
    return {"mask": expected.mask, "box": expected.box, "shown_box": expected.shown_box,
            "given_as": expected.given_as, "said": expected.said}


def answer_what_if(state: SessionState, intent: Intent) -> Reply:
    """Cover a part (or everything but it), ask the model again: the target's probability before and after."""
    own = _classes(state, intent, [intent.target], state.method)
    if isinstance(own, Reply):
        return own
    result, fill = own[0], intent.fill or DEFAULT_FILL
    region = _what_if_region(state, intent, result)
    mask = ~region["mask"] if intent.keep else region["mask"]
    covered = cover(state.current.image, mask, fill)
    probs = predict(state.model, [state.current.image, covered])
    target = result.target_index
    top = int(np.argmax(probs[1]))
    facts = {"before": float(probs[0, target]), "after": float(probs[1, target]),
             "top_after": Prediction(top, state.model.labels[top], float(probs[1, top])),
             "top_before": int(np.argmax(probs[0])), "share": float(mask.mean())}
    state.last_what_if = {"region": intent.region, "keep": intent.keep, "fill": fill, "target": result.target_label}
    return render_reply(
        state, "what_if", intent, result=result, region=region, keep=intent.keep, fill=fill, **facts,
        multilabel=is_multilabel(result), threshold=result.decision_threshold,
        images=[(_what_if_picture(state, result, region["mask"], covered, fill, facts),
                 caption("what_if", label=result.target_label, fill=fill, image=state.current.number))],
        suggestions=_what_if_suggestions(state, result, intent),
        data={"what_if": _what_if_data(result, region, intent, fill, facts)}, footer=result)


def _what_if_picture(state: SessionState, result: Explanation, mask: np.ndarray, covered: np.ndarray, fill: str,
                     facts: dict) -> np.ndarray:
    outlined = draw_expected(state.overlay(result), mask) if mask.any() else state.overlay(result)
    return tile([outlined, covered], [
        caption("what_if_before", label=result.target_label, probability=facts["before"]),
        caption("what_if_after", fill=fill, label=result.target_label, probability=facts["after"])])


def _what_if_data(result: Explanation, region: dict, intent: Intent, fill: str, facts: dict) -> dict:
    box = region["shown_box"]
    return {"region": {"box": list(box) if box else None, "given_as": region["given_as"], "said": region["said"],
                       "keep_only": intent.keep, "covered_share": round(facts["share"], 4)},
            "fill": fill, "probability_before": facts["before"], "probability_after": facts["after"],
            "target": {"index": result.target_index, "label": result.target_label},
            "top_after": facts["top_after"].to_dict()}


def _what_if_suggestions(state: SessionState, result: Explanation, intent: Intent) -> list[str]:
    options = [] if intent.keep else [ask("what_if_keep")]
    if (intent.fill or DEFAULT_FILL) != "mean":
        options.append(ask("what_if_fill"))
    if intent.region != "highlighted":
        options.append(ask("what_if_highlighted"))
    return [*options, ask("against", label=result.target_label), ask("trust")]


def what_if_again(state: SessionState, intent: Intent) -> Intent | None:
    """After a what-if answer: "and with the box at 30, 30, 40, 40?" (another part), "and for square?" (another
    class, the same part), "with the mean colour?" (another fill) as a what-if intent; None for anything else."""
    last = state.last_what_if
    if state.last_answer != I.WHAT_IF or last is None or intent.name == I.WHAT_IF:
        return None
    same = {"region": last["region"], "keep": last["keep"], "fill": last["fill"], "target": last["target"]}
    if intent.name in (I.EXPECTED, I.UNKNOWN, I.WHY, I.REGION) and (fields := I.what_if_follow_up(intent)):
        return dataclasses.replace(intent, name=I.WHAT_IF, **{**same, **fields})
    if intent.name == I.CLASS and intent.target:
        return dataclasses.replace(intent, name=I.WHAT_IF, **{**same, "target": intent.target})
    fill = I.fill_named(intent.text)
    if fill and intent.name in (I.UNKNOWN, I.SETTING, I.WHY):
        return dataclasses.replace(intent, name=I.WHAT_IF, **{**same, "fill": fill})
    return None


# ------------------------------------------------------------------------------------------------ legend


def legend_picture(colormap: str, width: int = 360, height: int = 36) -> np.ndarray:
    """The colormap as a bar from 0 (no evidence) to 1 (the map's maximum), labelled at both ends."""
    ramp = colorize(np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1)), colormap)
    labels = np.full((24, width, 3), 255, np.uint8)
    labels = draw_text(labels, "0: no evidence", (4, 4), 14)
    labels = draw_text(labels, "max", (width - 34, 4), 14)
    return strip_caption(np.vstack([ramp, labels]), colormap)


def answer_legend(state: SessionState, intent: Intent) -> Reply:
    """What the colours mean: the scale of the current colormap, this map's maximum, what the ReLU cut away."""
    colormap = state.settings.colormap
    result = state.explanation() if state.current is not None else None
    cam = None if result is None else np.asarray(result.cam, np.float64)
    others = [name for name in COLORMAPS if name != colormap]
    picture = state.picture(("legend", colormap), lambda: legend_picture(colormap))
    return render_reply(
        state, "legend", intent, colormap=colormap, ends=COLOUR_ENDS.get(colormap), result=result,
        method=method_name(result.method) if result else method_name(state.method),
        raw_max=float(cam.max()) if cam is not None else None,
        negative=float((cam < 0).mean()) if cam is not None else None,
        cells=f"{cam.shape[0]}×{cam.shape[1]}" if cam is not None else None, others=others,
        images=[(picture, caption("legend", colormap=colormap))],
        suggestions=_legend_suggestions(result, others),
        data={"colormap": colormap, "raw_max": float(cam.max()) if cam is not None else None,
              "negative_share": round(float((cam < 0).mean()), 4) if cam is not None else None,
              "colormaps": list(COLORMAPS)}, footer=result)


def _legend_suggestions(result: Explanation | None, others: list[str]) -> list[str]:
    options = [ask("use", name=others[0])] if others else []
    if result is not None:
        options.append(ask("against", label=result.target_label))
    return [*options, ask("teach")]


# ------------------------------------------------------------------------------------------------ not understood


#: Ways to ask each question, as clickable text: "did you mean" picks the closest (each is understood by the rules).
QUESTION_BANK: dict[str, tuple[str, ...]] = {
    I.WHAT: ("What is it?", "What do you see?", "Which class is it?"),
    I.WHY: ("Why?", "Where is it looking?", "Show me the heatmap"),
    I.CONFIDENCE: ("How confident is it?", "How sure are you?", "What is the probability?"),
    I.REGION: ("Show the region", "Draw the bounding box", "Segment the object"),
    I.TRUST: ("Does it hold up?", "Can I trust this map?", "Is it using a shortcut?"),
    I.COMPARE_CLASSES: ("Compare the top 3", "What else could it be?"),
    I.COMPARE_METHODS: ("Compare methods", "Show all methods"),
    I.LAYERS: ("Show layers", "Which layer?"),
    I.TEACH: ("What is Grad-CAM?", "How does this work?"),
    I.HELP: ("Help", "What can I ask?"),
    I.MODEL: ("Which model is this?",),
    I.SETTING: ("Show the settings", "Lower the threshold", "Use viridis"),
    I.EXPECTED: ("Is it looking at the lower left?",),
    I.AGAINST: ("Show the negative evidence", "What lowers the score?"),
    I.WHAT_IF: ("What if I cover the top left?", "What if I hide the highlighted region?",
                "What if I keep only the centre?"),
    I.LEGEND: ("What do the colours mean?", "Explain the colour scale"),
}


def closest_questions(text: str, n: int = 3) -> list[str]:
    """The ``n`` known phrasings most like ``text`` (difflib ratio, best phrasing per intent), from different
    questions; ties keep the bank's order."""
    lowered = text.lower().strip()
    best: list[tuple[float, int, str]] = []
    for order, phrasings in enumerate(QUESTION_BANK.values()):
        score, phrasing = max((difflib.SequenceMatcher(None, lowered, p.lower()).ratio(), p) for p in phrasings)
        best.append((score, -order, phrasing))
    return [phrasing for _score, _order, phrasing in sorted(best, reverse=True)[:n]]


def answer_unknown_closest(state: SessionState, intent: Intent) -> Reply:
    """"I did not understand", with the three closest questions the chat knows to click."""
    closest = closest_questions(intent.text)
    return render_reply(state, "unknown", intent, question=intent.text, examples=EXAMPLE_QUESTIONS, closest=closest,
                        has_image=state.current is not None, suggestions=closest,
                        data={"examples": list(EXAMPLE_QUESTIONS), "closest": closest})


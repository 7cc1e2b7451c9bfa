"""Property tests: every qualitative word of an answer agrees with the numbers it summarises.

Each case is a generated world (seeded, plain ``numpy`` randomness): random probabilities (softmax and multi-label
heads, flat and peaked), maps with zero to four spots (empty maps included), occlusion results whose changes have
either sign, deletion scores, an out-of-distribution finding on or off, blank images. A state whose explanations and
measurements are these generated ones (:class:`PlantedState`) is handed to the real answer functions, so the real
templates render with the real context; then every word that judges ("confident", "holds up", "raises",
"focused", "positive", "close to the threshold", ...) is checked against the numbers, and every number the words
refer to must be printed as the filters print it.
"""

from __future__ import annotations

import dataclasses
import html
import re
from dataclasses import dataclass

import keras
import numpy as np
import pytest
from conftest import gap_cnn

import explainer
from explainer.cams import METHODS, method_key
from explainer.chat import SessionState
from explainer.chat import answers as A
from explainer.chat import intents as I
from explainer.chat.checks import DeletionScores, OcclusionCheck, Structure, Unusual
from explainer.chat.intents import Intent
from explainer.prose import percent, points, ratio, sign
from explainer.region import localize
from explainer.result import Explanation, Prediction

LABELS = ["circle", "square", "triangle", "star", "cross", "ring"]
CASES = range(48)
NOISE = 0.05


# ------------------------------------------------------------------------------------------------- models


def _sigmoid_cnn() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(len(LABELS), activation="sigmoid", name="findings")(x))


@pytest.fixture(scope="module")
def models() -> dict[str, explainer.LoadedModel]:
    """Real (untrained) models for labels, heads and layer names; their maps are never computed here."""
    return {"softmax": explainer.load_model(gap_cnn(n_classes=len(LABELS)), labels=LABELS, preprocess="unit"),
            "multilabel": explainer.load_model(_sigmoid_cnn(), labels=LABELS, preprocess="unit")}


# ------------------------------------------------------------------------------------------ generated worlds


@dataclass
class World:
    """Everything an answer may read, generated: one result per class, and the measurements."""

    image: np.ndarray
    results: dict[int, Explanation]
    top: int
    facts: dict


def _heatmap(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Zero to four Gaussian spots, sometimes on a raised background (diffuse maps); all zeros when none."""
    n = int(rng.integers(0, 5))
    heat = np.zeros((height, width), np.float32)
    if n == 0:
        return heat
    yy, xx = np.mgrid[:height, :width]
    for _ in range(n):
        cy, cx, sigma = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(1.5, max(width, height) / 2)
        heat += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    heat += rng.choice([0.0, 0.0, rng.uniform(0, 0.6)])
    return (heat / heat.max()).astype(np.float32)


def _probabilities(rng: np.random.Generator, head: str) -> np.ndarray:
    if head == "multilabel":
        return rng.random(len(LABELS)) ** rng.choice([0.3, 1.0, 3.0])
    logits = rng.normal(0, rng.choice([0.3, 1.5, 4.0, 9.0]), len(LABELS))
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


def _change(rng: np.random.Generator) -> float:
    """A signed change of a probability: anywhere, small, or right at the verdicts' boundaries."""
    kind = rng.integers(0, 4)
    if kind == 0:
        return float(rng.uniform(-0.7, 0.7))
    if kind == 1:
        return float(rng.uniform(-NOISE, NOISE))
    edge = rng.choice([-0.15, -NOISE, NOISE, 0.15])
    return float(edge + rng.uniform(-0.002, 0.002))


def _occlusion(rng: np.random.Generator, result: Explanation) -> OcclusionCheck:
    original = result.probability
    hidden = float(np.clip(original + _change(rng), 0, 1))
    shift = _change(rng)
    random = [float(np.clip(original + shift + rng.normal(0, 0.01), 0, 1)) for _ in range(6)]
    top = int(rng.integers(len(LABELS)))
    view = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return OcclusionCheck(original=original, hidden=hidden, random=random,
                          hidden_top=Prediction(top, LABELS[top], float(rng.random())), box=result.region.bbox,
                          box_fraction=float(rng.choice([result.region.bbox[2] * result.region.bbox[3] /
                                                         result.image.shape[0] / result.image.shape[1],
                                                         rng.uniform(0, 0.9)])),
                          random_overlap=float(rng.uniform(0, 0.3)), hidden_image=view, random_image=view[::-1])


def _unusual(rng: np.random.Generator, top: float) -> Unusual | None:
    if rng.random() < 0.3:
        return None  # a model without reference statistics
    findings = [{"name": "brightness", "value": 240.0, "low": 20.0, "high": 200.0, "direction": "high"}]
    return Unusual(findings if rng.random() < 0.5 else [], top, rng.choice([None, float(rng.uniform(0.3, 1.0))]))


def world(seed: int, model: explainer.LoadedModel, layer: str, threshold: float) -> World:
    rng = np.random.default_rng(seed)
    head = "multilabel" if model.info.head == "multilabel" else "softmax"
    height, width = int(rng.integers(24, 90)), int(rng.integers(24, 90))
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    probs = _probabilities(rng, head)
    order = np.argsort(-probs, kind="stable")
    predictions = [Prediction(int(i), LABELS[i], float(probs[i])) for i in order[:5]]
    decision = float(rng.choice([0.5, rng.uniform(0.2, 0.8)]))
    method = str(rng.choice(list(METHODS)))
    results = {}
    for index in range(len(LABELS)):
        heat = _heatmap(rng, height, width)
        results[index] = Explanation(
            image=image, heatmap=heat, target_index=index, target_label=LABELS[index], probability=float(probs[index]),
            predictions=predictions, probabilities=probs, logits=np.log(probs + 1e-9), method=method, layer=layer,
            region=localize(heat, threshold), cam=rng.random((4, 4)).astype(np.float32),
            channel_weights=rng.normal(size=6).astype(np.float32), model_name=model.name, head=head,
            decision_threshold=decision, labels=LABELS)
    top = int(order[0])
    n_methods = len(METHODS)
    facts = {
        "structure": Structure(float(rng.uniform(0, 60)), bool(rng.random() < 0.15)),
        "ood": _unusual(rng, float(probs[top])),
        "occlusion": _occlusion(rng, results[top]),
        "deletion": DeletionScores([float(rng.uniform(0, 1))], float(rng.uniform(0.05, 1))),
        "deletion_methods": DeletionScores(list(rng.uniform(0, 1, n_methods)), float(rng.uniform(0.05, 1))),
    }
    return World(image, results, top, facts)


class PlantedState(SessionState):
    """A conversation state whose explanations and measurements are a generated :class:`World`."""

    def __init__(self, model: explainer.LoadedModel, world: World):
        super().__init__(model)
        self.world = world
        self.add_image(world.image)

    def explanations(self, targets, method=None, layer=None, entry=None):
        key = method_key(method or self.settings.method)
        picked = [self.world.top if t is None else self.resolve_target(t) for t in targets]
        return [dataclasses.replace(self.world.results[i], method=key, layer=layer or self.world.results[i].layer)
                for i in picked]

    def fact(self, key, compute):
        return self.world.facts[key[0]] if key[0] in self.world.facts else compute()


def _state(models, head: str, seed: int) -> PlantedState:
    model = models[head]
    probe = SessionState(model)
    generated = world(seed, model, probe.default_layer(), probe.settings.threshold)
    state = PlantedState(model, generated)
    state.update_settings(method=generated.results[0].method)
    return state


def _text(reply) -> str:
    """The reply's Markdown with backslash escapes and HTML entities undone (what a reader sees)."""
    return _shown(reply.markdown)


def _shown(filtered) -> str:
    """Text as a reader sees it: Markdown backslash escapes and HTML entities undone."""
    return html.unescape(re.sub(r"\\(.)", r"\1", str(filtered)))


def _guessing(state: PlantedState) -> bool:
    ood, structure = state.world.facts["ood"], state.world.facts["structure"]
    return structure.blank or bool(ood is not None and ood.unusual)


# ----------------------------------------------------------------------------------- checks on the maps


def check_region_words(text: str, result: Explanation) -> None:
    """Spread and emptiness words against coverage, heat share and number of spots."""
    region = result.region
    if region.coverage <= 0:
        assert "empty" in text and "evidence is" not in text
        return
    if "The evidence is focused" in text:
        assert region.coverage <= 0.25 and region.energy >= 0.4 and region.n_regions < 3
        assert f"holds {_shown(percent(region.energy))} of the map's heat" in text
    if "moderately concentrated" in text:
        assert region.n_regions < 3 and region.coverage <= 0.5 and region.energy >= 0.25
    if match := re.search(r"and (\d+) more spots? also stand out", text):
        assert int(match.group(1)) == region.n_regions - 1 >= 1
    if match := re.search(r"scattered over (\d+) separate spots", text):
        assert int(match.group(1)) == region.n_regions >= 3
    if "The evidence is diffuse" in text:
        assert region.coverage > 0.5 or region.energy < 0.25
        assert f"lights up {_shown(percent(region.coverage))} of the image" in text


@pytest.mark.parametrize("seed", CASES)
def test_why_describes_the_map_it_shows(models, seed):
    state = _state(models, "softmax", seed)
    result = state.world.results[state.world.top]
    reply = A.answer_why(state, Intent(I.WHY))
    text = _text(reply)
    assert f"The model says **{result.target_label}** ({_shown(percent(result.probability))})" in text
    check_region_words(text, result)
    words = sum(w in text for w in ("is focused", "moderately concentrated", "scattered over", "is diffuse"))
    assert words == (0 if result.region.coverage <= 0 else 1)
    _check_warnings(text, state)


def _check_warnings(text: str, state: PlantedState) -> None:
    ood, structure = state.world.facts["ood"], state.world.facts["structure"]
    assert ("unlike the model's training data" in text) == bool(ood is not None and ood.unusual)
    assert ("almost no structure" in text) == structure.blank


@pytest.mark.parametrize("seed", CASES)
def test_findings_are_positive_exactly_at_or_above_the_threshold(models, seed):
    state = _state(models, "multilabel", seed)
    top = state.world.results[state.world.top]
    threshold, positive = top.decision_threshold, top.positive
    text = _text(A.answer_why(state, Intent(I.WHY)))
    assert ("No finding reaches the decision threshold" in text) == (not positive)
    if match := re.search(r"The model finds (\d+) positive findings?", text):
        assert int(match.group(1)) == len(positive)
    for row in re.findall(r"^- \*\*(.+?)\*\* \((.+?)\): (.+)$", text, flags=re.M):
        label, shown, rest = row
        result = state.world.results[LABELS.index(label)]
        assert shown == _shown(percent(result.probability))
        check_region_words(rest, result)
    what = _text(A.answer_what(state, Intent(I.WHAT)))
    assert ("no positive finding" in what) == (not positive)
    for label, shown, verdict in re.findall(r"^\| \d+ \| (.+?) \| (.+?) \| (positive|below threshold) \|$", what,
                                            flags=re.M):
        probability = top.probabilities[LABELS.index(label)]
        assert shown == _shown(percent(probability))
        assert (verdict == "positive") == (probability >= threshold)


# ------------------------------------------------------------------------------------------ confidence


OPENERS = {"confident": "The model is **confident**", "fairly": "The model is **fairly sure**",
           "torn": "The model is **torn between", "unsure": "The model is **unsure**",
           "guess": "The model's best guess is"}


@pytest.mark.parametrize("seed", CASES)
def test_how_sure_never_calls_a_guess_confident(models, seed):
    state = _state(models, "softmax", seed)
    result = state.world.results[state.world.top]
    top, runner = result.predictions[0].probability, result.predictions[1].probability
    ood = state.world.facts["ood"]
    reply = A.answer_confidence(state, Intent(I.CONFIDENCE))
    text = _text(reply)
    said = [word for word, opener in OPENERS.items() if opener in text]
    assert said == [reply.data["qualifier"]]
    word = said[0]
    assert (word == "guess") == _guessing(state)  # the out-of-distribution finding governs the word
    if word == "confident":
        assert top >= 0.8 and top - runner >= 0.5 and not (ood and ood.low_confidence)
    if word == "fairly":
        assert top >= 0.5
    if word == "torn":
        assert runner >= 0.2 and top - runner < 0.2
    if word == "unsure":
        assert top < 0.5
    assert _shown(percent(top)) in text
    if "lower than on 95 % of held-out images" in text:
        assert ood.low_confidence and top < ood.probability_p05
    _check_warnings(text, state)


@pytest.mark.parametrize("seed", CASES)
def test_multilabel_distances_and_verdicts_agree(models, seed):
    state = _state(models, "multilabel", seed)
    result = state.world.results[state.world.top]
    threshold = result.decision_threshold
    text = _text(A.answer_confidence(state, Intent(I.CONFIDENCE)))
    rows = re.findall(r"^\| (.+?) \| (.+?) \| (.+?) \| (positive|negative)(, close to the threshold)? \|$", text,
                      flags=re.M)
    assert rows
    near = 0
    for label, shown, distance, verdict, close in rows:
        probability = float(result.probabilities[LABELS.index(label)])
        assert shown == _shown(percent(probability))
        assert distance == _shown(points(probability - threshold, signed=True))
        assert (verdict == "positive") == (probability >= threshold)
        assert distance[0] != ("−" if verdict == "positive" else "+")
        assert bool(close) == (abs(probability - threshold) < A.NEAR_THRESHOLD)
        near += bool(close)
    if match := re.search(r"^(\d+) findings? (?:is|are) within", text, flags=re.M):
        assert int(match.group(1)) == near
    else:
        assert near == 0 and "No listed finding is within" in text


# --------------------------------------------------------------------------------------------- trust


CHANGE = re.compile(r"(raises|lowers) it by ([\d.]+) points|(leaves it unchanged)")


@pytest.mark.parametrize("head", ["softmax", "multilabel"])
@pytest.mark.parametrize("seed", CASES)
def test_trust_verdict_follows_the_signed_changes(models, seed, head):
    state = _state(models, head, seed)
    check: OcclusionCheck = state.world.facts["occlusion"]
    deletion: DeletionScores = state.world.facts["deletion"]
    reply = A.answer_trust(state, Intent(I.TRUST))
    text = _text(reply)
    hidden_change, random_change = check.hidden - check.original, -check.random_drop
    changes = (hidden_change, random_change)
    # The bullets print each change with its sign.
    assert f"Highlighted box hidden: {_shown(percent(check.hidden))} ({_shown(points(hidden_change, True))})" in text
    assert f"({_shown(points(random_change, True))})" in text
    verdict = next(line for line in text.splitlines() if line.startswith("**"))
    for raised, shown, unchanged in CHANGE.findall(verdict):
        if unchanged:
            assert any(sign(c) == 0 for c in changes)
        else:
            direction = 1 if raised == "raises" else -1
            assert any(sign(c) == direction and _shown(points(c)) == f"{shown} points" for c in changes), verdict
    if verdict.startswith("**The map is faithful to the model.**"):
        assert check.drop >= 0.15 and check.drop >= 2 * abs(check.random_drop) + NOISE
    if "hiding the highlighted part raises the score" in verdict:
        assert hidden_change >= NOISE and sign(hidden_change) > 0
    if "the highlighted part matters more" in verdict:
        assert check.drop >= NOISE and abs(random_change) < check.drop
    if "matters no more than a random one" in verdict:
        assert abs(random_change) >= check.drop - 0.02
    if "neither matters much" in verdict:
        assert abs(hidden_change) < NOISE and abs(random_change) < NOISE
    if verdict.startswith("**Little to measure.**"):
        assert check.original < NOISE
    if verdict.startswith("**Inconclusive.**"):
        assert check.box_fraction >= 0.6
    assert "less than 5 points" not in text  # the contradiction, in any wording that survived
    if "faster than chance" in text:
        assert deletion.aucs[0] < 0.8 * deletion.random_auc
    if "slower than chance" in text:
        assert deletion.aucs[0] > 1.2 * deletion.random_auc
    assert reply.data["occlusion"]["verdict"] == check.verdict


# ------------------------------------------------------------------------------------ classes and methods


@pytest.mark.parametrize("seed", CASES)
def test_why_not_compares_with_the_right_words(models, seed):
    state = _state(models, "softmax", seed)
    top = state.world.results[state.world.top]
    other = top.predictions[1]
    asked = state.world.results[other.index]
    reply = A.answer_class(state, Intent(I.CLASS, target=other.label, explicit_target=True))
    text = _text(reply)
    times = top.probability / max(asked.probability, 1e-12)
    if "less likely" in text:
        assert f"{_shown(ratio(times))} less likely" in text and times > 1
    else:
        assert "as likely" in text and times <= 1
    overlap = reply.data["overlap_iou"]
    if asked.region.coverage > 0:
        assert ("largely the same region" in text) == (overlap >= 0.5)
        assert ("only partly" in text) == (0.05 < overlap < 0.5)
        assert ("lies elsewhere" in text) == (overlap <= 0.05)
    check_region_words(text.split("Left:")[0], asked)
    assert (f"{reply.data['explanation']['method']}" in METHODS)
    assert ("class-agnostic" in text) == METHODS[asked.method].class_agnostic


@pytest.mark.parametrize("head", ["softmax", "multilabel"])
@pytest.mark.parametrize("seed", CASES[:16])
def test_comparisons_name_the_best_and_the_empty(models, seed, head):
    state = _state(models, head, seed)
    scores: DeletionScores = state.world.facts["deletion_methods"]
    reply = A.answer_compare_methods(state, Intent(I.COMPARE_METHODS))
    text = _text(reply)
    best = list(METHODS)[int(np.argmin(scores.aucs))]
    assert reply.data["best"] == best and f"**{METHODS[best].display_name}** removes the evidence fastest" in text
    assert ("not clearly faster than a random order" in text) == (min(scores.aucs) >= 0.8 * scores.random_auc)
    classes = _text(A.answer_compare_classes(state, Intent(I.COMPARE_CLASSES, count=3)))
    rows = re.findall(r"^\d\. \*\*(.+?)\*\* \(.+?\): (.+)$", classes, flags=re.M)
    assert len(rows) == 3
    for label, rest in rows:
        assert ("empty map" in rest) == (state.world.results[LABELS.index(label)].region.coverage <= 0)
    assert ("class-agnostic" in classes) == METHODS[state.settings.method].class_agnostic


@pytest.mark.parametrize("head", ["softmax", "multilabel"])
@pytest.mark.parametrize("seed", CASES[:16])
def test_every_template_renders_from_generated_results(models, seed, head):
    """The remaining answers about an image render their numbers, whatever the maps and probabilities."""
    state = _state(models, head, seed)
    top = state.world.results[state.world.top]
    for answer, intent in [(A.answer_what, Intent(I.WHAT)), (A.answer_region, Intent(I.REGION)),
                           (A.answer_teach, Intent(I.TEACH)), (A.answer_layers, Intent(I.LAYERS)),
                           (A.answer_image, Intent(I.IMAGE))]:
        reply = answer(state, intent)
        text = _text(reply)
        assert not reply.error and "{{" not in text and top.target_label in text, intent.name
        about_depths = intent.name == I.LAYERS
        no_region = intent.name == I.REGION and top.region.coverage <= 0
        if not (about_depths or no_region):  # those two answers say no probability
            assert _shown(percent(top.probability)) in text, intent.name
    region = _text(A.answer_region(state, Intent(I.REGION)))
    if top.region.coverage > 0:
        x, y, w, h = top.region.bbox
        assert f"{x}, {y}, {w} × {h} px" in region
        assert f"Separate spots above the threshold**: {top.region.n_regions}" in region
    else:
        assert "There is no region" in region

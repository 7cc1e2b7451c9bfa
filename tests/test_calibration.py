"""Honest confidence: temperature scaling, conformal sets and the feature-space unusual-image check.

The miscalibrated model is built, not trained: a flat colour image's class is drawn from the softmax of fixed
logits of its colour, and the model computes those logits times 4 (overconfident; the right temperature is 4).
Margins are asserted, never one run's number.
"""

from __future__ import annotations

import json
import shutil

import cv2
import keras
import numpy as np
import pytest
from planted_models import fixture, planted_grey, planted_squares

import explainer
from explainer.cli.main import main
from explainer.demo.generate import NOT_SHAPES, make_dataset, not_shapes
from explainer.engine import explain_batch, forward_features
from explainer.evaluation.calibration import (
    MIN_IMAGES,
    conformal_quantile,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    reliability,
)
from explainer.heads import probabilities
from explainer.models.calibration import Calibration, FeatureReference
from explainer.models.loading import read_sidecar

SCALE = 4.0
SIDE = 16
#: The true logits of a colour c in [0, 1]^3 are c @ WEIGHTS + BIAS.
WEIGHTS = np.array([[4.0, -2.0, -2.0], [-2.0, 4.0, -2.0], [-2.0, -2.0, 4.0]])
BIAS = np.zeros(3)
NAMES = ["red", "green", "blue"]


def _colours(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` flat-colour images and classes drawn from the softmax of their true logits (a calibrated truth)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (n, 3))
    truth = probabilities(colours / 255 @ WEIGHTS + BIAS)
    labels = np.array([rng.choice(3, p=p / p.sum()) for p in truth.astype(np.float64)])
    return np.broadcast_to(colours[:, None, None].astype(np.uint8), (n, SIDE, SIDE, 3)).copy(), labels


def _colour_model(scale: float) -> keras.Model:
    """Rescaling → an identity 1×1 conv (the CAM's map) → GAP → Dense(3, softmax) of ``scale`` × the true logits."""
    inputs = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    conv = keras.layers.Conv2D(3, 1, use_bias=False, name="last")
    x = conv(x)
    dense = keras.layers.Dense(3, activation="softmax", name="predictions")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(x)))
    conv.set_weights([np.eye(3)[None, None]])
    dense.set_weights([WEIGHTS * scale, BIAS * scale])
    return model


@pytest.fixture(scope="module")
def overconfident(tmp_path_factory):
    """The ×4 model saved with a sidecar holding fields of its own that must survive calibration."""
    folder = tmp_path_factory.mktemp("overconfident")
    _colour_model(SCALE).save(folder / "model.keras")
    meta = {"labels": NAMES, "preprocess": "none", "description": "mine", "reference": {"x": 1}}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder / "model.keras"


def _class_folders(root, images, labels, names) -> None:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / names[label]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / names[label] / f"{i:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def calibrated(overconfident, tmp_path_factory):
    """``gradcam-chat calibrate`` run on 600 faded squares; returns (model file, its stdout)."""
    root = tmp_path_factory.mktemp("set")
    images, labels = _colours(900, 11)
    _class_folders(root, images, labels, NAMES)
    (root / "red" / "broken.png").write_bytes(b"not a png")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["calibrate", str(root), "--model", str(overconfident)]) == 0
    return overconfident, out.getvalue()


def test_calibrate_then_explain_is_honest(calibrated):
    path, _out = calibrated
    raw = explainer.load_model(path)
    assert raw.info.calibration is not None and raw.info.features is not None
    images, labels = _colours(1500, 99)
    results = explain_batch(raw, list(images), chunk=100)
    probs = np.stack([r.probabilities for r in results])
    own = np.stack([r.raw_probabilities for r in results])
    before, after = expected_calibration_error(own, labels), expected_calibration_error(probs, labels)
    assert after <= before / 2 and after <= 0.05, (before, after)
    assert (probs.argmax(1) == own.argmax(1)).all()  # temperature scaling keeps the argmax
    covered = np.mean([raw.labels[label] in r.prediction_set() for r, label in zip(results, labels, strict=True)])
    assert abs(covered - 0.9) <= 0.03, covered


def test_the_command_says_what_it_did_and_keeps_the_sidecar(calibrated):
    path, out = calibrated
    meta = read_sidecar(path)
    assert meta["description"] == "mine" and meta["reference"] == {"x": 1}
    assert meta["labels"] == ["red", "green", "blue"]
    assert "ECE (15 bins)" in out and "coverage" in out and "replaced" not in out
    assert meta["calibration"]["fitted_on"] + meta["calibration"]["held_out"] == 900  # the broken file skipped


def test_a_second_run_says_which_fields_it_replaced(calibrated, tmp_path, capsys):
    path, _out = calibrated
    model = tmp_path / "model.keras"
    shutil.copy(path, model)
    shutil.copy(path.with_suffix(".json"), model.with_suffix(".json"))
    root = tmp_path / "set"
    images, labels = _colours(150, 12)
    _class_folders(root, images, labels, NAMES)
    assert main(["calibrate", str(root), "--model", str(model), "--seed", "3"]) == 0
    assert "replaced the existing calibration and feature_reference" in capsys.readouterr().out
    assert read_sidecar(model)["description"] == "mine"


def test_explain_json_says_calibrated(calibrated, tmp_path, capsys):
    path, _out = calibrated
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), _colours(1, 5)[0][0])
    assert main(["explain", str(image), "--model", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["calibrated"] is True and "raw_probability" in record["target"]
    assert record["calibration"]["images"] > 0 and set(record["ood"]) == {"distance", "threshold", "percentile",
                                                                           "unusual"}
    assert all("raw_probability" in p for p in record["predictions"])


def test_an_uncalibrated_model_says_so():
    result = explainer.explain(fixture("squares"), planted_squares(1, 1)[0][0])
    record = result.to_dict()
    assert record["calibrated"] is False and "ood" not in record and result.prediction_set() is None
    assert result.raw_probability == result.probability


@pytest.mark.parametrize("setup", ["one class", "empty", "too few", "unreadable"])
def test_bad_sets_are_refused_in_one_line(overconfident, tmp_path, capsys, setup):
    root = tmp_path / "set"
    root.mkdir()
    images, labels = _colours(150, 13)
    if setup == "one class":
        _class_folders(root, images, np.zeros_like(labels), ["red"])
    elif setup == "too few":
        _class_folders(root, images[:40], labels[:40], NAMES)
    elif setup == "unreadable":
        for name in ("red", "green"):
            (root / name).mkdir()
            for i in range(MIN_IMAGES):
                (root / name / f"{i}.png").write_bytes(b"broken")
    assert main(["calibrate", str(root), "--model", str(overconfident), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and not (tmp_path / "c.json").exists()


def test_a_model_without_a_writable_sidecar_is_refused(tmp_path, capsys):
    root = tmp_path / "set"
    images, labels = _colours(150, 14)
    _class_folders(root, images, labels, NAMES)
    assert main(["calibrate", str(root), "--model", "shapes"]) == 2
    assert "--out" in capsys.readouterr().err


def test_temperature_keeps_the_argmax_and_undoes_a_scaling():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (2000, 5))
    labels = np.array([rng.choice(5, p=p) for p in probabilities(logits)])
    (t,) = fit_temperature(logits * 3, labels)
    assert 2.5 < t < 3.5
    calibration = Calibration((t,), 1, 1, 0, 0, 0, 0.9, 0.5, 0.9)
    assert (calibration.probabilities(logits * 3, "softmax").argmax(1) == logits.argmax(1)).all()
    reliable = reliability(probabilities(logits), labels)
    assert len(reliable) == 15 and sum(row["count"] for row in reliable) == 2000


def test_conformal_quantile_is_the_finite_sample_one():
    probs = np.tile([[0.7, 0.3]], (9, 1))
    probs[:, 0] = np.linspace(0.1, 0.9, 9)
    probs[:, 1] = 1 - probs[:, 0]
    q = conformal_quantile(probs, np.zeros(9, int), 0.8)  # ⌈10·0.8⌉/9 = 8/9: the 8th smallest score
    assert q == pytest.approx(np.sort(1 - probs[:, 0])[7])


def test_the_sidecar_round_trip(calibrated):
    path, _out = calibrated
    meta = read_sidecar(path)
    calibration = Calibration.from_dict(meta["calibration"], 3)
    reference = FeatureReference.from_dict(meta["feature_reference"])
    assert Calibration.from_dict(calibration.to_dict(), 3) == calibration
    again = FeatureReference.from_dict(json.loads(json.dumps(reference.to_dict())))
    features = np.random.default_rng(0).normal(0, 1, (5, reference.mean.shape[0]))
    assert np.allclose(again.distance(features), reference.distance(features), rtol=1e-4)


def test_multilabel_and_grey_models_calibrate():
    from test_chat_heads import FINDINGS, multilabel_cnn

    ml = explainer.load_model(multilabel_cnn(), labels=FINDINGS, preprocess="unit")
    images = np.random.default_rng(0).integers(0, 255, (300, *ml.info.input_size, 3), np.uint8)
    labels = np.arange(300) % len(FINDINGS)
    logits, features = forward_features(ml, ml.prepare(list(images)))
    fit = fit_calibration(logits, features, labels, "multilabel")
    assert len(fit.calibration.temperatures) == len(FINDINGS)
    grey = fixture("grey")
    pictures, grey_labels, _ = planted_grey(300, 4)
    logits, features = forward_features(grey, grey.prepare(list(pictures)))
    fit = fit_calibration(logits, features, grey_labels, grey.info.head)
    assert fit.after["accuracy"] == fit.before["accuracy"] and fit.false_alarms <= 0.05


def test_the_shapes_model_warns_on_what_is_not_a_drawn_shape():
    model = explainer.load_model("shapes")
    reference = model.info.features
    data = make_dataset(300, 61_000, plain_fraction=0.2)
    _, features = forward_features(model, model.prepare(list(data.images)))
    assert (reference.distance(features) > reference.threshold).mean() <= 0.05
    images, kinds = not_shapes(120, 61_001)
    results = explain_batch(model, list(images), chunk=40)
    kinds = np.array(kinds)
    flagged = np.array([r.ood["unusual"] for r in results])
    for kind in ("checkerboard", "text", "pixel noise", "colour blobs"):
        assert flagged[kinds == kind].mean() >= 0.8, kind
    # None of them is both unflagged and given a single-label conformal set: never called sure.
    assert not any(not r.ood["unusual"] and len(r.prediction_set()) == 1 for r in results)
    assert set(kinds) == set(NOT_SHAPES)

"""Models as people bring them: grayscale inputs, legacy Keras 2 files, multi-label and linear heads, trusted
Lambda layers, tiny Score-CAM weights, and broken (NaN / Inf) weights. Every model is a real Keras model: built
here, or (the grey CNN trained on planted objects) the committed ``tests/fixtures/grey.keras``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from conftest import gap_cnn
from PIL import Image
from planted_models import GREY_LABELS, planted_grey, save_keras2_h5, trained_grey_model

from explainer import ModelError, explain, load_model, predict, probabilities, trusted_paths
from explainer.cams.base import is_flat, normalize
from explainer.cams.scorecam import ScoreCAM, channel_masks
from explainer.cli.main import main
from explainer.evaluation import metrics
from explainer.heads import sigmoid, softmax

FINDINGS = ["effusion", "nodule", "opacity", "fracture"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def as_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


# ------------------------------------------------------------------------------ grayscale, legacy Keras 2 .h5


@pytest.fixture(scope="session")
def grey_keras() -> keras.Model:
    return trained_grey_model()


@pytest.fixture(scope="session")
def grey_file(grey_keras, tmp_path_factory) -> Path:
    """The trained grey CNN saved as a Keras 2 legacy ``.h5`` with a sidecar, as a user would hand it over."""
    path = tmp_path_factory.mktemp("grey") / "xray.h5"
    save_keras2_h5(grey_keras, path)
    path.with_suffix(".json").write_text(json.dumps({"labels": GREY_LABELS, "channels": 1}))
    return path


def test_legacy_keras2_h5_grey_model_loads_with_its_own_predictions(grey_file, grey_keras):
    model = load_model(grey_file)
    assert model.info.channels == 1 and model.info.input_size == (64, 64) and model.info.head == "softmax"
    assert model.info.preprocess == "none"  # its Rescaling layer was found in the legacy file too
    images, _, _ = planted_grey(6, seed=3)
    expected = grey_keras(images[..., None].astype(np.float32)).numpy()
    np.testing.assert_allclose(predict(model, [as_rgb(im) for im in images]), expected, rtol=1e-5, atol=1e-6)


def test_grey_model_points_at_the_planted_object(grey_file):
    """Loaded from the legacy file, Grad-CAM's peak lands on the object (≥ 90 %; the committed model, on either
    oneDNN path: accuracy 100 %, pointing 100 %, the centre 15 %)."""
    model = load_model(grey_file)
    images, labels, masks = planted_grey(150, seed=99)
    results = explain(model, [as_rgb(im) for im in images])
    accuracy = np.mean([r.target_index == y for r, y in zip(results, labels, strict=True)])
    with_object = [i for i, m in enumerate(masks) if m.any()]  # "nothing" has no object to point at
    images, results, masks = images[with_object], [results[i] for i in with_object], masks[with_object]
    # 4 px: one cell of the 16×16 feature map of a 64 px image.
    hits = metrics.pointing_game(None, [as_rgb(im) for im in images], results, masks=masks, tolerance=4).mean()
    centre = metrics.centre_baseline(None, [as_rgb(im) for im in images], masks=masks, tolerance=4).mean()
    assert accuracy >= 0.9, f"the test model did not learn ({accuracy:.2f})"
    assert hits >= 0.9, f"pointing game {hits:.2f}"
    assert hits > centre + 0.5, f"centre baseline {centre:.2f}"


def test_colour_image_is_converted_to_luminance_and_overlay_stays_in_colour(grey_file, rng):
    model = load_model(grey_file)
    colour = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x = model.prepare([colour])
    assert x.shape == (1, 64, 64, 1)
    pillow = np.asarray(Image.fromarray(colour).convert("L"), np.float32)  # ITU-R BT.601, rounded
    assert np.abs(x[0, ..., 0] - pillow).max() <= 0.51
    result = explain(model, colour, method="scorecam")
    np.testing.assert_array_equal(result.image, colour)  # the user's own colour picture, not the grey input
    assert result.heatmap.shape == (64, 64)


def test_grey_unit_and_symmetric_preprocessing(grey_keras, rng):
    colour = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    grey = np.asarray(Image.fromarray(colour).convert("L"), np.float32)
    unit = load_model(grey_keras, preprocess="unit").prepare([colour])[0, ..., 0]
    symmetric = load_model(grey_keras, preprocess="symmetric").prepare([colour])[0, ..., 0]
    assert np.abs(unit - grey / 255).max() <= 0.51 / 255
    assert np.abs(symmetric - (grey / 127.5 - 1)).max() <= 0.51 / 127.5


@pytest.mark.parametrize("mode", ["caffe", "torch"])
def test_rgb_only_preprocessing_refused_for_grey_model(grey_keras, grey_file, tmp_path, mode):
    with pytest.raises(ModelError, match="RGB") as err:
        load_model(grey_keras, preprocess=mode)
    assert mode in str(err.value)
    copy = tmp_path / "grey.h5"
    copy.write_bytes(grey_file.read_bytes())
    copy.with_suffix(".json").write_text(json.dumps({"preprocess": mode}))
    with pytest.raises(ModelError, match="RGB"):
        load_model(copy)


def _conv_model(channels: int) -> keras.Model:
    inputs = keras.Input((16, 16, channels))
    x = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("channels", [2, 4])
def test_other_channel_counts_refused_naming_the_shape(channels):
    with pytest.raises(ModelError) as err:
        load_model(_conv_model(channels))
    assert f"(None, 16, 16, {channels})" in str(err.value)


def test_sidecar_channels_must_match_the_model(tmp_path):
    path = tmp_path / "rgb.keras"
    _conv_model(3).save(path)
    path.with_suffix(".json").write_text(json.dumps({"channels": 1}))
    with pytest.raises(ModelError, match="1 channels"):
        load_model(path)
    path.with_suffix(".json").write_text(json.dumps({"channels": 3}))
    assert load_model(path).info.channels == 3


def test_cli_explains_grey_model(grey_file, tmp_path, capsys):
    images, labels, _ = planted_grey(2, seed=5)
    files = []
    for i, image in enumerate(images):
        files.append(str(tmp_path / f"g{i}.png"))
        cv2.imwrite(files[-1], image)  # a one-channel PNG, as an X-ray export would be
    code, out, err = run(capsys, "explain", *files, "--model", str(grey_file), "--json", "--out", str(tmp_path))
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["head"] for r in records] == ["softmax", "softmax"]
    assert all("positive" not in r for r in records)
    assert [r["target"]["label"] for r in records] == [GREY_LABELS[y] for y in labels]
    assert cv2.imread(records[0]["overlay_file"]).shape == (64, 64, 3)


# ---------------------------------------------------------------------------------------------- output heads


def gap_head(units: int, activation: str | None, seed: int = 0, bias=None) -> keras.Model:
    """Conv → ReLU → GAP → Dense(units, activation): Grad-CAM of a logit equals CAM / Z exactly for this head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.Activation("relu", name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(units, activation=activation, name="head")
    model = keras.Model(inputs, dense(x))
    if bias is not None:
        kernel, _ = dense.get_weights()
        dense.set_weights([kernel, np.asarray(bias, np.float32)])
    return model


@pytest.fixture(scope="module")
def multilabel():
    """Four sigmoid findings, biased so that some are present (≥ 0.5) and some not."""
    return gap_head(4, "sigmoid", seed=4, bias=[0.4, 0.1, -0.2, -1.0])


def test_multilabel_probabilities_are_the_models_own_sigmoids(multilabel, rng):
    model = load_model(multilabel, labels=FINDINGS, preprocess="unit")
    assert model.info.head == "multilabel" and "sigmoid" in model.info.head_note
    images = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
    expected = multilabel.predict(model.prepare(images), verbose=0)
    assert np.abs(expected.sum(axis=1) - 1).max() > 0.1  # not a distribution: a softmax would misreport it
    np.testing.assert_allclose(predict(model, images), expected, rtol=1e-5, atol=1e-5)
    for image, reference in zip(images, expected, strict=True):
        result = explain(model, image, top_k=4)
        np.testing.assert_allclose(result.probabilities, reference, rtol=1e-5, atol=1e-5)
        assert result.head == "multilabel"
        assert [p.index for p in result.predictions] == list(np.argsort(-reference, kind="stable"))
        assert result.probability == pytest.approx(reference.max(), abs=1e-5)
        positive = [FINDINGS[i] for i in np.argsort(-reference) if reference[i] >= 0.5]
        assert [p.label for p in result.positive] == positive
        assert result.to_dict()["positive"] == positive and result.to_dict()["head"] == "multilabel"


def test_multilabel_gradcam_scores_the_pre_sigmoid_logit(multilabel, rng):
    """The CAM / Z identity holds for the logit; scoring the sigmoid output would multiply each map by σ'(z)."""
    model = load_model(multilabel, labels=FINDINGS, preprocess="unit")
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    x = model.prepare([image])
    features = keras.Model(multilabel.inputs, multilabel.get_layer("relu").output)(x).numpy()[0]
    kernel, _bias = multilabel.get_layer("head").get_weights()
    for target in range(4):
        result = explain(model, image, target=target)
        np.testing.assert_allclose(result.cam, features @ kernel[:, target] / 576, rtol=1e-4, atol=1e-7)
        p = result.probabilities[target]
        assert result.logits[target] == pytest.approx(np.log(p / (1 - p)), abs=1e-4)


def test_multilabel_scorecam_weights_are_the_targets_sigmoid(multilabel, rng):
    model = load_model(multilabel, labels=FINDINGS, preprocess="unit")
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    result = explain(model, image, target="nodule", method=ScoreCAM(top_n=None))
    x = model.prepare([image])
    acts = keras.Model(multilabel.inputs, multilabel.get_layer("relu").output)(x).numpy()[0]
    masks = channel_masks(acts, (24, 24))
    expected = multilabel.predict(x * masks[..., None], verbose=0)[:, 1]  # the model's own sigmoid output
    np.testing.assert_allclose(result.channel_weights, expected, rtol=1e-5, atol=1e-6)


def test_decision_threshold_and_cli_json_report_the_models_probabilities(multilabel, tmp_path, capsys, rng):
    path = tmp_path / "chest.keras"
    multilabel.save(path)
    path.with_suffix(".json").write_text(json.dumps({"labels": FINDINGS, "preprocess": "unit",
                                                     "decision_threshold": 0.45}))
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image[..., ::-1])
    model = load_model(path)
    assert model.info.decision_threshold == 0.45
    expected = multilabel.predict(model.prepare([image]), verbose=0)[0]
    code, out, err = run(capsys, "explain", str(tmp_path / "x.png"), "--model", str(path), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["head"] == "multilabel" and record["decision_threshold"] == 0.45
    reported = {p["label"]: p["probability"] for p in record["predictions"]}
    for i, label in enumerate(FINDINGS):
        assert reported[label] == pytest.approx(expected[i], abs=1e-5)
    assert sorted(record["positive"]) == sorted(FINDINGS[i] for i in range(4) if expected[i] >= 0.45)
    assert record["positive"] != [] and len(record["positive"]) < 4
    code, out, _ = run(capsys, "explain", str(tmp_path / "x.png"), "--model", str(path))
    assert "present (from 45%)" in out


def test_linear_head_is_softmax_logits_unless_the_sidecar_says_multilabel(tmp_path, rng):
    linear = gap_head(3, None, seed=6)
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    model = load_model(linear, preprocess="unit")
    assert model.info.head == "linear" and "softmax" in model.info.head_note
    raw = linear.predict(model.prepare([image]), verbose=0)
    result = explain(model, image)
    np.testing.assert_allclose(result.probabilities, softmax(raw)[0], rtol=1e-5, atol=1e-6)
    assert result.positive == [] and "positive" not in result.to_dict()
    path = tmp_path / "linear.keras"
    linear.save(path)
    path.with_suffix(".json").write_text(json.dumps({"head": "multilabel", "preprocess": "unit"}))
    model = load_model(path)
    assert model.info.head == "multilabel"
    np.testing.assert_allclose(explain(model, image).probabilities, sigmoid(raw)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("units", "activation", "stated"), [
    (3, "softmax", "multilabel"), (4, "sigmoid", "softmax"), (3, None, "sigmoid"), (3, None, "probit"),
])
def test_sidecar_head_cannot_contradict_the_model(tmp_path, units, activation, stated):
    path = tmp_path / "m.keras"
    gap_head(units, activation).save(path)
    path.with_suffix(".json").write_text(json.dumps({"head": stated}))
    with pytest.raises(ModelError, match="head"):
        load_model(path)


def test_bad_decision_threshold_refused(tmp_path):
    path = tmp_path / "m.keras"
    gap_head(4, "sigmoid").save(path)
    path.with_suffix(".json").write_text(json.dumps({"decision_threshold": 1.5}))
    with pytest.raises(ModelError, match="decision_threshold"):
        load_model(path)


def test_one_unit_heads_are_two_classes(rng):
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for activation in ("sigmoid", None):  # a single bare unit is a binary logit
        binary = gap_head(1, activation, seed=8)
        model = load_model(binary, labels=["normal", "finding"], preprocess="unit")
        assert model.info.head == "sigmoid"
        z = float(binary.predict(model.prepare([image]), verbose=0)[0, 0])
        p = z if activation == "sigmoid" else float(sigmoid(np.float32(z)))
        result = explain(model, image, target="finding")
        assert result.probabilities == pytest.approx([1 - p, p], abs=1e-5)
        assert result.positive == [] and result.to_dict()["head"] == "sigmoid"


def test_probabilities_function():
    logits = np.array([[2.0, -1.0, 0.5]], np.float32)
    np.testing.assert_allclose(probabilities(logits, "softmax"), softmax(logits))
    np.testing.assert_allclose(probabilities(logits, "linear"), softmax(logits))
    np.testing.assert_allclose(probabilities(logits, "multilabel"), 1 / (1 + np.exp(-logits)), rtol=1e-6)
    assert np.isfinite(probabilities(np.array([[-1000.0, 1000.0]]), "multilabel")).all()
    with pytest.raises(ValueError):
        probabilities(logits, "probit")


# ------------------------------------------------------------------------------------------- trusted models


def _lambda_model(marker: Path) -> keras.Model:
    """A model whose Lambda layer writes ``marker`` whenever it runs (the stand-in for arbitrary code)."""
    code = eval(f"lambda t: (open({str(marker)!r}, 'a').write('ran'), t * 1.0)[1]")  # a self-contained lambda
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Lambda(code, name="custom_preprocess")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.fixture(params=[".keras", ".h5"])
def lambda_file(request, tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "marker.txt"
    path = tmp_path / f"lambda{request.param}"
    model = _lambda_model(marker)
    if request.param == ".h5":
        from keras.src.legacy.saving import legacy_h5_format

        legacy_h5_format.save_model_to_hdf5(model, str(path), include_optimizer=False)
    else:
        model.save(path)
    marker.unlink(missing_ok=True)  # building the model ran the lambda once here
    return path, marker


def test_lambda_refused_by_default_and_says_how_to_opt_in(lambda_file, capsys):
    path, marker = lambda_file
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = str(err.value)
    for hint in ("--trust-model", "trust=True", "EXPLAINER_TRUSTED_MODELS", "arbitrary Python"):
        assert hint in message
    assert str(path.parent) not in message
    code, _, err_text = run(capsys, "explain", str(path), "--model", str(path))
    assert code == 2 and "--trust-model" in err_text
    assert not marker.exists()


def test_trusted_lambda_loads_and_explains(lambda_file, tmp_path, capsys, rng):
    path, marker = lambda_file
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    result = explain(load_model(path, trust=True, preprocess="unit"), image)
    assert result.heatmap.shape == (24, 24) and marker.exists()
    marker.unlink()
    cv2.imwrite(str(tmp_path / "x.png"), image)
    code, out, err = run(capsys, "explain", str(tmp_path / "x.png"), "--model", str(path), "--trust-model", "--json")
    assert code == 0, err
    assert json.loads(out)["head"] == "softmax" and marker.exists()


def test_environment_variable_trusts_listed_files_only(lambda_file, tmp_path, monkeypatch, rng):
    path, marker = lambda_file
    other = tmp_path / "other.keras"
    monkeypatch.setenv("EXPLAINER_TRUSTED_MODELS", str(other))
    with pytest.raises(ModelError, match="EXPLAINER_TRUSTED_MODELS"):
        load_model(path)
    assert not marker.exists()
    (tmp_path / "sub").mkdir()
    roundabout = tmp_path / "sub" / ".." / path.name  # compared after resolving
    monkeypatch.setenv("EXPLAINER_TRUSTED_MODELS", os.pathsep.join([str(other), str(roundabout)]))
    assert trusted_paths() == {other.resolve(), path.resolve()}
    with pytest.raises(ModelError, match="Lambda"):
        load_model(path, trust=False)  # what the app passes for visitors' uploads: never trusted
    assert not marker.exists()
    explain(load_model(path), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    assert marker.exists()


# ------------------------------------------------------------------------------------ map flatness, Score-CAM


class ScaledScoreCAM(ScoreCAM):
    """Score-CAM with every channel weight multiplied by a constant: the map must not change."""

    def __init__(self, factor: float):
        super().__init__(top_n=None)
        self.factor = factor

    def get_cam_weights(self, batch):
        return super().get_cam_weights(batch) * self.factor


def test_scorecam_survives_tiny_weights_of_a_confident_model(rng):
    """Class 0's bias of 30 leaves class 1 about e^-30 ≈ 1e-13 on every masked input: the weights are tiny, but
    their relative sizes are the map."""
    confident = gap_head(3, "softmax", seed=9, bias=[30.0, 0.0, 0.0])
    model = load_model(confident, preprocess="unit")
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    tiny = explain(model, image, target=1, method=ScoreCAM(top_n=None))
    assert 0 < tiny.channel_weights.max() < 1e-10
    assert tiny.heatmap.max() == pytest.approx(1.0) and tiny.region.coverage > 0
    scaled = explain(model, image, target=1, method=ScaledScoreCAM(1e12))
    assert scaled.channel_weights.max() > 1e-3
    np.testing.assert_allclose(tiny.heatmap, scaled.heatmap, atol=1e-5)


def test_gradcam_of_a_network_with_tiny_activations_keeps_its_map(rng):
    """Conv weights × 1e-9: activations and the map shrink by 1e-9 (ReLU is homogeneous), the picture must not."""
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    normal = gap_head(3, "softmax", seed=10)
    small = gap_head(3, "softmax", seed=10)
    conv = small.get_layer("conv")
    conv.set_weights([w * 1e-9 for w in conv.get_weights()])
    expected = explain(load_model(normal, preprocess="unit"), image, target=2)
    result = explain(load_model(small, preprocess="unit"), image, target=2)
    assert np.abs(result.cam).max() < 1e-7
    assert result.heatmap.max() == pytest.approx(1.0)
    np.testing.assert_allclose(result.heatmap, expected.heatmap, atol=1e-4)


def test_flatness_is_relative_to_the_maps_scale(rng):
    shaped = rng.random((1, 7, 7))
    for scale in (1e-13, 1.0, 1e12):
        np.testing.assert_allclose(normalize(shaped * scale), normalize(shaped), atol=1e-6)
    flat = np.stack([np.zeros((7, 7)), np.full((7, 7), 5.0), np.full((7, 7), 1e-20),
                     np.float32(3.0) + np.float32(3.0) * np.finfo(np.float32).eps * rng.integers(0, 2, (7, 7))])
    assert is_flat(flat).all()
    maps = normalize(flat)
    assert np.isfinite(maps).all() and (maps == 0).all()
    assert not is_flat(shaped * 1e-13).any()


# --------------------------------------------------------------------------------------- non-finite outputs


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_broken_weights_are_an_error_not_a_percentage(bad, tmp_path, capsys, rng):
    broken = gap_cnn(n_classes=3, size=24, seed=11)
    dense = broken.get_layer("predictions")
    dense.set_weights([np.full_like(w, bad) for w in dense.get_weights()])
    model = load_model(broken, preprocess="unit")
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for method in ("gradcam", "scorecam", "eigencam"):
        with pytest.raises(ModelError, match="invalid numbers") as err:
            explain(model, image, method=method)
        assert "%" not in str(err.value)
    with pytest.raises(ModelError, match="invalid numbers"):
        predict(model, [image])
    path = tmp_path / "broken.keras"
    broken.save(path)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    code, out, err_text = run(capsys, "explain", str(tmp_path / "x.png"), "--model", str(path), "--json")
    assert code == 1 and out == "" and "invalid numbers" in err_text and "%" not in err_text


def test_infinite_activations_in_the_map_layer_are_an_error(rng):
    broken = gap_cnn(n_classes=3, size=24, seed=12)
    conv = broken.get_layer("conv_a")
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel, np.full_like(bias, np.inf)])
    with pytest.raises(ModelError, match="invalid numbers"):
        explain(load_model(broken, preprocess="unit"), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))


def test_faithfulness_metrics_run_on_the_grey_model(grey_file):
    """Deletion feeds masked RGB images through the model's own channels: deleting its evidence must hurt."""
    model = load_model(grey_file)
    images, labels, _ = planted_grey(8, seed=21)
    images = [as_rgb(im) for im, y in zip(images, labels, strict=True) if y != 2][:4]
    maps = [r.heatmap for r in explain(model, images)]
    deletion = metrics.deletion_auc(model, images, maps, steps=8)
    shuffled = metrics.deletion_auc(model, images, [np.random.default_rng(0).random(m.shape) for m in maps], steps=8)
    assert np.isfinite(deletion).all() and deletion.mean() < shuffled.mean()

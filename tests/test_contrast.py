"""Contrast (``versus``) and counterfactual (``against``) maps against hand-computed references on the committed
``squares`` model (3 colour classes): activations and logits from Keras sub-models and a gradient tape, no engine."""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from planted_models import FIXTURES, fixture, planted_squares

from explainer import ClassError, ExplainerError, explain, load_model
from explainer.cams import METHODS, CamBatch, get_method
from explainer.cams.contrast import map_correlation
from explainer.cli.main import main
from explainer.engine import explain_batch

GRADIENT_METHODS = [name for name, cls in METHODS.items() if cls.needs_gradients]


@pytest.fixture(scope="module")
def model():
    return fixture("squares")


@pytest.fixture(scope="module")
def squares():
    images, labels, _masks, _boxes = planted_squares(4, seed=11)
    return list(images), [int(label) for label in labels]


def halves(loaded):
    """The features model (input → "last") and the head's weights: logits = GAP(A) · W + b, no softmax."""
    keras_model = loaded.keras_model
    features = keras.Model(keras_model.input, keras_model.get_layer("last").output)
    dense = keras_model.layers[-1]
    return features, dense.kernel.numpy(), dense.bias.numpy()


def reference_gradients(loaded, images, targets, versus, sign=1.0):
    """A and d(sign · (logit_target − logit_versus))/dA per image, from a tape on the activations."""
    features, kernel, bias = halves(loaded)
    acts = tf.constant(features(loaded.prepare(images)).numpy())
    with tf.GradientTape() as tape:
        tape.watch(acts)
        logits = tf.reduce_mean(acts, axis=(1, 2)) @ kernel + bias
        own = tf.gather(logits, targets, batch_dims=1)
        other = tf.stack([logits[i, v] if v is not None else 0.0 for i, v in enumerate(versus)])
        score = tf.reduce_sum(sign * (own - other))
    return acts.numpy().astype(np.float64), tape.gradient(score, acts).numpy().astype(np.float64)


def shown(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The engine's display steps by hand: ReLU, min-max to [0, 1], bilinear upsampling, peak at 1."""
    cam = np.maximum(raw, 0.0)
    span = cam.max() - cam.min()
    cam = (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)
    heat = np.clip(cv2.resize(cam.astype(np.float32), size[::-1], interpolation=cv2.INTER_LINEAR), 0, None)
    return heat / heat.max() if heat.max() > 0 else heat


def gradcam_reference(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Raw Grad-CAM maps: Σ_k mean_ij(g_k) · A_k."""
    return np.einsum("bk,bhwk->bhw", grads.mean(axis=(1, 2)), acts)


def test_contrast_gradcam_equals_the_hand_computed_map_per_image(model, squares):
    images, labels = squares
    versus = [(label + 1) % 3 for label in labels[:3]] + [None]  # a different rival per image, the last none
    results = explain(model, images, target=labels, versus=versus)
    acts, grads = reference_gradients(model, images, labels, versus)
    raw = gradcam_reference(acts, grads)
    for result, cam, other, image in zip(results, raw, versus, images, strict=True):
        np.testing.assert_allclose(result.cam, cam, rtol=1e-4, atol=1e-4 * np.abs(cam).max())
        np.testing.assert_allclose(result.heatmap, shown(cam, image.shape[:2]), atol=1e-4)
        assert (result.versus is None) == (other is None)
    assert [r.versus.index for r in results[:3]] == versus[:3]
    assert results[0].versus.label == model.labels[versus[0]]
    assert results[0].versus.probability == pytest.approx(float(results[0].probabilities[versus[0]]))
    # The contrast is not the class's own map, which the fourth image (no versus) gets.
    own = explain(model, images[0], target=labels[0])
    assert np.abs(own.heatmap - results[0].heatmap).max() > 1e-3
    np.testing.assert_allclose(results[3].heatmap, explain(model, images[3], target=labels[3]).heatmap, atol=1e-6)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_every_gradient_method_scores_the_difference(model, squares, method):
    images, labels = squares
    versus = [(label + 2) % 3 for label in labels]
    acts, grads = reference_gradients(model, images, labels, versus)
    batch = CamBatch(acts.astype(np.float32), grads.astype(np.float32), np.zeros((4, 3), np.float32),
                     np.array(labels), model.prepare(images), lambda x: x)
    _maps, raw, _weights = get_method(method)(batch)  # the method's own formula on the reference gradients
    for result, cam in zip(explain(model, images, target=labels, versus=versus, method=method), raw, strict=True):
        np.testing.assert_allclose(result.cam, cam, rtol=1e-3, atol=1e-4 * max(np.abs(cam).max(), 1e-12))
        assert result.versus is not None and result.method == method


def test_against_map_equals_the_negated_gradient_map(model, squares):
    images, labels = squares
    targets = [labels[0], (labels[1] + 1) % 3]  # the true class, and a class that is absent
    results = explain(model, images[:2], target=targets, against=True)
    acts, grads = reference_gradients(model, images[:2], targets, [None, None], sign=-1.0)
    for result, cam, image in zip(results, gradcam_reference(acts, grads), images[:2], strict=True):
        np.testing.assert_allclose(result.cam, cam, rtol=1e-4, atol=1e-4 * max(np.abs(cam).max(), 1e-12))
        np.testing.assert_allclose(result.heatmap, shown(cam, image.shape[:2]), atol=1e-4)
        assert result.against and result.to_dict()["against"] is True and result.region.mask is None
    plain = explain(model, images[0], target=targets[0])
    np.testing.assert_allclose(results[0].cam, -plain.cam, rtol=1e-5, atol=1e-6)
    assert plain.to_dict()["against"] is False and plain.to_dict()["versus"] is None


def test_a_class_versus_itself_is_an_all_zero_map(model, squares):
    images, labels = squares
    result = explain(model, images[0], target=labels[0], versus=model.labels[labels[0]])
    assert not np.isnan(result.heatmap).any() and result.heatmap.max() == 0 and np.all(result.cam == 0)
    assert result.region.spread == "empty" and result.region.mask is None
    record = json.loads(json.dumps(result.to_dict()))  # JSON-safe: no NaN anywhere
    assert record["versus"]["index"] == record["target"]["index"] == labels[0]


def test_nothing_against_a_class_is_an_all_zero_map_without_nan():
    # Conv → ReLU → GAP → Dense with positive weights: every gradient is positive, nothing lowers the score.
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    dense = keras.layers.Dense(2, activation="softmax", kernel_initializer="ones")
    loaded = load_model(keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(x))), labels=["a", "b"])
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    result = explain(loaded, image, target="a", against=True)
    assert not np.isnan(result.heatmap).any() and result.heatmap.max() == 0
    assert result.region.spread == "empty" and result.against


def test_multilabel_contrast_uses_the_pre_sigmoid_logits():
    # Conv → ReLU → GAP → Dense(sigmoid): ∂(z_A − z_B)/∂A_ij = (W_A − W_B) / (h·w), so Grad-CAM is CAM's difference / Z.
    keras.utils.set_random_seed(4)
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(inputs)
    dense = keras.layers.Dense(3, activation="sigmoid")
    loaded = load_model(keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(features))),
                        labels=["a", "b", "c"])
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    result = explain(loaded, image, target="a", versus="c")
    acts = keras.Model(inputs, features)(loaded.prepare([image])).numpy()[0].astype(np.float64)
    kernel = dense.kernel.numpy().astype(np.float64)
    cam = acts @ (kernel[:, 0] - kernel[:, 2]) / (16 * 16)
    assert loaded.info.head == "multilabel"
    np.testing.assert_allclose(result.cam, cam, rtol=1e-4, atol=1e-5 * np.abs(cam).max())
    assert result.versus.probability == pytest.approx(float(result.probabilities[2]))


def test_a_list_of_rivals_for_one_image_and_explain_batch(model, squares):
    images, labels = squares
    rivals = [i for i in range(3) if i != labels[0]]
    each = explain(model, images[0], target=labels[0], versus=rivals)  # one contrast per rival
    assert [r.versus.index for r in each] == rivals and all(r.target_index == labels[0] for r in each)
    versus = [(label + 1) % 3 for label in labels]
    batched = explain_batch(model, images, labels, chunk=3, versus=versus)
    for result, image, label, other in zip(batched, images, labels, versus, strict=True):
        alone = explain(model, image, target=label, versus=other)
        np.testing.assert_allclose(result.heatmap, alone.heatmap, atol=1e-5)
        assert result.versus == alone.versus
    with pytest.raises(ExplainerError, match="4 images but 2 classes"):
        explain_batch(model, images, labels, versus=[0, 1], isolate_errors=True)


def test_score_cam_scores_the_logit_difference_of_masked_inputs(model, squares):
    images, labels = squares
    target, other = labels[0], (labels[0] + 1) % 3
    result = explain(model, images[0], target=target, versus=other, method="scorecam")
    features, _kernel, _bias = halves(model)
    x = model.prepare(images[:1])
    acts = features(x).numpy()[0]  # h×w×K; the squares model has 24 channels, all under Score-CAM's top 64
    up = tf.image.resize(acts[None], x.shape[1:3], method="bilinear").numpy()[0].transpose(2, 0, 1)
    low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    masks = np.where(high > low, (up - low) / np.where(high > low, high - low, 1), 0)
    probs = model.keras_model.predict(x * masks[..., None], verbose=0).astype(np.float64)
    weights = np.log(probs[:, target]) - np.log(probs[:, other])  # softmax: log(p_A / p_B) = logit_A − logit_B
    cam = np.einsum("k,hwk->hw", weights, acts)
    np.testing.assert_allclose(result.cam, cam, rtol=1e-3, atol=1e-3 * np.abs(cam).max())
    assert result.versus.index == other


@pytest.mark.parametrize(("method", "options", "named"), [
    ("eigencam", {"versus": "green"}, "cannot compare two classes"),
    ("eigencam", {"against": True}, "cannot show what speaks against"),
    ("scorecam", {"against": True}, "cannot show what speaks against"),
    ("gradcam", {"versus": "green", "against": True}, "do not combine"),
])
def test_unsupported_combinations_raise_one_line(model, squares, method, options, named):
    with pytest.raises(ExplainerError, match=named) as caught:
        explain(model, squares[0][0], target="red", method=method, **options)
    assert "\n" not in str(caught.value)
    if "cannot" in named:  # the message names the methods that can
        takers = str(caught.value).split("these methods can: ")[1]
        assert "Grad-CAM" in takers and "Eigen-CAM" not in takers


def test_bad_versus_label_is_a_class_error(model, squares):
    with pytest.raises(ClassError, match="no class called 'purple'"):
        explain(model, squares[0][0], target="red", versus="purple")


def test_map_correlation(model, squares):
    images, _labels = squares
    first, second = explain(model, images[0], target=["red", "blue"])
    expected = np.corrcoef(first.heatmap.ravel(), second.heatmap.ravel())[0, 1]
    assert map_correlation(first, second) == pytest.approx(expected, abs=1e-9)
    assert map_correlation(first, first) == pytest.approx(1.0)
    assert map_correlation(first.heatmap, 1 - first.heatmap) == pytest.approx(-1.0)
    assert map_correlation(first, np.zeros_like(first.heatmap)) is None  # a flat map has no shape to compare
    with pytest.raises(ValueError, match="differ in size"):
        map_correlation(first.heatmap, first.heatmap[1:])


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["explain", *args, "--model", str(FIXTURES / "squares.keras")])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_versus_and_against_json(tmp_path, capsys, model, squares):
    images, labels = squares
    path = tmp_path / "square.png"
    cv2.imwrite(str(path), cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
    target, other = model.labels[labels[0]], model.labels[(labels[0] + 1) % 3]
    code, out, err = run(capsys, str(path), "--target", target, "--versus", other, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["versus"]["label"] == other and record["target"]["label"] == target and not record["against"]
    assert record["region"]["segment"] is None and "contrast" in record["region"]["no_mask_reason"]
    code, out, err = run(capsys, str(path), "--target", target, "--against", "--json")
    assert code == 0, err
    assert json.loads(out)["against"] is True and json.loads(out)["versus"] is None
    code, out, _err = run(capsys, str(path), "--target", target, "--versus", other)
    assert code == 0 and f"versus {other}" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--versus", "purple"], "no class called 'purple'"),
    (["--versus", "green", "--method", "eigencam"], "cannot compare two classes"),
    (["--against", "--method", "scorecam"], "cannot show what speaks against"),
    (["--versus", "green", "--against"], "do not combine"),
])
def test_cli_bad_combinations_exit_2_with_one_line(tmp_path, capsys, squares, args, message):
    path = tmp_path / "square.png"
    cv2.imwrite(str(path), squares[0][0])
    code, out, err = run(capsys, str(path), "--target", "red", *args)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1

"""The CAM family against oracles (direct NumPy formulas, known identities) and on a small trained model (the
committed ``tests/fixtures/squares.keras``)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from planted_models import planted_squares, trained_model

from explainer import ExplainerError, explain, load_model
from explainer.cams import METHODS, get_method, method_key
from explainer.cams.scorecam import ScoreCAM
from explainer.cams.smoothing import EigenSmooth, explain_augmented
from explainer.evaluation import metrics

SIZE = 16
CLASSES = 3


def small_cnn(head: str, softmax: bool = False, channels: int = 5, seed: int = 0):
    """Conv → pool → conv "features" (ReLU) → GAP or Flatten → Dense; also returns the two halves separately so
    the tests can compute activations and logit gradients without the engine."""
    keras.utils.set_random_seed(seed)
    conv_a = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    pool = keras.layers.MaxPooling2D()
    conv_b = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="features")
    pooling = keras.layers.GlobalAveragePooling2D() if head == "gap" else keras.layers.Flatten()
    dense = keras.layers.Dense(CLASSES, activation="softmax" if softmax else None)
    inputs = keras.Input((SIZE, SIZE, 3))
    features = conv_b(pool(conv_a(inputs)))
    full = keras.Model(inputs, dense(pooling(features)))
    feature_input = keras.Input(features.shape[1:])
    return full, keras.Model(inputs, features), keras.Model(feature_input, dense(pooling(feature_input)))


def activations_and_gradients(features_model, head_model, x: np.ndarray, targets: list[int]):
    """A and ∂logit_target/∂A for each image, straight from a gradient tape."""
    with tf.GradientTape() as tape:
        acts = features_model(x)
        tape.watch(acts)
        logits = head_model(acts)
        score = tf.reduce_sum(tf.gather(logits, targets, batch_dims=1))
    return acts.numpy().astype(np.float64), tape.gradient(score, acts).numpy().astype(np.float64)


def gradcampp_numpy(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Eq. 19 of Chattopadhay et al., channel by channel: α = g² / (2g² + Σ_ab A_ab g³), w = Σ_ij α ReLU(g)."""
    weights = np.zeros(acts.shape[-1])
    for k in range(acts.shape[-1]):
        g, a = grads[..., k], acts[..., k]
        denominator = 2 * g**2 + a.sum() * g**3
        alpha = np.divide(g**2, denominator, out=np.zeros_like(g), where=denominator != 0)
        weights[k] = (alpha * np.maximum(g, 0)).sum()
    return (acts * weights).sum(axis=-1)


FORMULAS = {
    "gradcam++": gradcampp_numpy,
    "hirescam": lambda a, g: (g * a).sum(axis=-1),
    "layercam": lambda a, g: (np.maximum(g, 0) * a).sum(axis=-1),
    "xgradcam": lambda a, g: (a * ((a / a.sum(axis=(0, 1))) * g).sum(axis=(0, 1))).sum(axis=-1),
}


@pytest.fixture(scope="module")
def flatten_net():
    return small_cnn("flatten", seed=1)


@pytest.fixture(scope="module")
def gap_net():
    return small_cnn("gap", seed=2)


@pytest.fixture(scope="module")
def images():
    return list(np.random.default_rng(5).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8))


@pytest.mark.parametrize("method", sorted(FORMULAS))
def test_gradient_methods_match_their_formula(method, flatten_net, images):
    """Raw maps (before ReLU) of two images with different targets equal the formula on tape gradients."""
    full, features, head = flatten_net
    model = load_model(full, preprocess="unit")
    targets = [0, 2]
    acts, grads = activations_and_gradients(features, head, model.prepare(images), targets)
    results = explain(model, images, targets, method=method, layer="features")
    for i, result in enumerate(results):
        expected = FORMULAS[method](acts[i], grads[i])
        scale = np.abs(expected).max()
        assert scale > 0
        np.testing.assert_allclose(result.cam, expected, rtol=1e-3, atol=1e-4 * scale)


def test_hirescam_equals_gradcam_for_gap_head_and_differs_for_flatten_head(gap_net, flatten_net, images):
    """With GAP → Dense the gradient is constant over space, so g ⊙ A summed equals mean(g) · A summed."""
    gap = load_model(gap_net[0], preprocess="unit")
    for image in images:
        np.testing.assert_allclose(explain(gap, image, method="hirescam").cam,
                                   explain(gap, image, method="gradcam").cam, rtol=1e-4, atol=1e-6)
    flat = load_model(flatten_net[0], preprocess="unit")
    differences = [np.abs(explain(flat, image, method="hirescam").heatmap
                          - explain(flat, image, method="gradcam").heatmap).max() for image in images]
    assert max(differences) > 0.1


def test_scorecam_equals_a_per_channel_loop(images):
    """Weight k = softmax probability of the target on input × normalised upsampled A_k, computed one by one with
    tf.image.resize and the Keras model's own softmax output."""
    full, features, _head = small_cnn("gap", softmax=True, channels=6, seed=3)
    model = load_model(full, preprocess="unit")
    x = model.prepare(images[:1])
    acts = features(x).numpy()[0]
    target = 1
    weights = np.zeros(acts.shape[-1])
    for k in range(acts.shape[-1]):
        up = tf.image.resize(acts[None, ..., k : k + 1], (SIZE, SIZE), method="bilinear").numpy()[0]
        span = up.max() - up.min()
        mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
        weights[k] = full(x * mask[None]).numpy()[0, target]
    result = explain(model, images[0], target, method=ScoreCAM(top_n=None), layer="features")
    np.testing.assert_allclose(result.channel_weights, weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.cam, acts @ weights, rtol=1e-4, atol=1e-6)


def test_scorecam_top_n_scores_only_the_most_varied_channels(images):
    full, features, _head = small_cnn("gap", softmax=True, channels=6, seed=3)
    model = load_model(full, preprocess="unit")
    acts = features(model.prepare(images[:1])).numpy()[0]
    spread = acts.reshape(-1, acts.shape[-1]).std(axis=0)
    result = explain(model, images[0], method=ScoreCAM(top_n=2), layer="features")
    assert set(np.flatnonzero(result.channel_weights)) <= set(np.argsort(-spread)[:2])
    assert np.count_nonzero(result.channel_weights) >= 1


@pytest.mark.parametrize("channels", [5, 80])  # fewer and more channels than the 8×8 = 64 positions
def test_eigencam_is_the_first_principal_component(channels, images):
    """Per image: centred activations projected on the first right singular vector of NumPy's SVD, sign such that
    the map agrees with the channel sum; and the same whatever class is asked about."""
    full, features, _head = small_cnn("flatten", channels=channels, seed=4)
    model = load_model(full, preprocess="unit")
    acts = features(model.prepare(images)).numpy().astype(np.float64)
    for i, image in enumerate(images):
        rows = acts[i].reshape(-1, acts.shape[-1])
        centred = rows - rows.mean(axis=0)
        u, s, _vt = np.linalg.svd(centred)
        projection = u[:, 0] * s[0]
        total = rows.sum(axis=1)
        if np.dot(projection, total - total.mean()) < 0:
            projection = -projection
        result = explain(model, image, target=0, method="eigencam", layer="features")
        np.testing.assert_allclose(result.cam.ravel(), projection, rtol=1e-3, atol=1e-4 * np.abs(projection).max())
        other = explain(model, image, target=2, method="eigencam", layer="features")
        np.testing.assert_array_equal(other.cam, result.cam)


def test_eigen_smoothing_projects_the_weighted_activations(gap_net, images):
    full, features, _head = gap_net
    model = load_model(full, preprocess="unit")
    plain = explain(model, images[0], method="gradcam", layer="features")
    smoothed = explain(model, images[0], method=EigenSmooth("gradcam"), layer="features")
    terms = features(model.prepare(images[:1])).numpy()[0] * plain.channel_weights
    rows = terms.reshape(-1, terms.shape[-1])
    u, s, _vt = np.linalg.svd(rows - rows.mean(axis=0))
    projection = u[:, 0] * s[0] * np.sign(np.dot(u[:, 0], rows.sum(axis=1) - rows.sum(axis=1).mean()))
    assert smoothed.method == "gradcam"
    np.testing.assert_allclose(smoothed.cam.ravel(), projection, rtol=1e-3, atol=1e-4 * np.abs(projection).max())


@pytest.mark.parametrize(("spelling", "name"), [
    ("gradcam", "gradcam"), ("Grad-CAM++", "gradcam++"), ("grad-cam++", "gradcam++"),
    ("Grad-CAM plus plus", "gradcam++"), ("HiResCAM", "hirescam"), ("XGrad-CAM", "xgradcam"),
    ("Layer-CAM", "layercam"), ("Score-CAM", "scorecam"),
    ("score_cam", "scorecam"), ("eigen cam", "eigencam"), ("Eigen-CAM", "eigencam"),
])
def test_method_names(spelling, name, gap_net, images):
    assert method_key(spelling) == name
    model = load_model(gap_net[0], preprocess="unit")
    assert explain(model, images[0], method=spelling).method == name


def test_registry_and_unknown_method():
    # A set: another module's monkeypatch.delitem puts a removed method back at the end.
    assert set(METHODS) == {"gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam"}
    assert not METHODS["eigencam"].needs_gradients and not METHODS["scorecam"].needs_gradients
    with pytest.raises(ExplainerError, match="Unknown method"):
        get_method("guided backprop")


# ------------------------------------------------------------------- on the committed model trained on planted squares


@pytest.fixture(scope="module")
def planted():
    model = trained_model()
    images, labels, masks, _boxes = planted_squares(60, seed=77)
    return model, list(images), labels, masks


def _hit_rate(images, results, masks) -> float:
    """The project's pointing game with no tolerance: the map's peak on the square itself."""
    return float(metrics.pointing_game(None, images, results, masks=masks, tolerance=0).mean())


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_points_at_the_planted_square(method, planted):
    """On the committed model (either oneDNN path) every method hits all 60 squares; the centre hits 13 %."""
    model, images, labels, masks = planted
    results = explain(model, images, [int(y) for y in labels], method=method)
    assert _hit_rate(images, results, masks) >= 0.9


def test_augmented_maps_are_flipped_back(planted):
    """Squares sit off-centre: if the flipped variants' maps were not flipped back, the average would split."""
    model, images, labels, masks = planted
    results = [explain_augmented(model, image, int(y), method="gradcam") for image, y in zip(
        images[:20], labels[:20], strict=True)]
    assert _hit_rate(images[:20], results, masks[:20]) >= 0.9
    assert all(r.heatmap.shape == (r.image.shape[0], r.image.shape[1]) and r.heatmap.max() == 1 for r in results)

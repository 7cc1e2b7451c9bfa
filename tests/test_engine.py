"""Grad-CAM oracles and behaviour of explain() on small real Keras models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import gap_cnn

from explainer import ClassError, explain, load_model
from explainer.cams.base import softmax


def _features_and_weights(model: keras.Model, x: np.ndarray):
    """Activations of the ReLU layer and the Dense kernel/bias, computed independently of the engine."""
    features = keras.Model(model.inputs, model.get_layer("relu_a").output)(x).numpy()
    kernel, bias = model.get_layer("predictions").get_weights()
    return features, kernel, bias


def test_gradcam_equals_cam_over_z_for_gap_head(gap_model, rng):
    """The paper's identity: with GAP → Dense, α_k = w_k / Z, so Grad-CAM = CAM / Z at feature resolution.

    Scoring the softmax instead of the logit breaks this identity, so this test fails loudly if someone does.
    """
    model = load_model(gap_model, preprocess="unit")
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = model.prepare([image])
    features, kernel, _bias = _features_and_weights(gap_model, x)
    z = features.shape[1] * features.shape[2]
    for target in range(4):
        result = explain(model, image, target=target)
        cam = features[0] @ kernel[:, target]
        np.testing.assert_allclose(result.cam, cam / z, rtol=1e-4, atol=1e-6)


def test_completeness_sum_of_map_is_logit_minus_bias(gap_model, rng):
    model = load_model(gap_model, preprocess="unit")
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    _features, _kernel, bias = _features_and_weights(gap_model, model.prepare([image]))
    result = explain(model, image, target=2)
    assert result.cam.sum() == pytest.approx(result.logits[2] - bias[2], rel=1e-4, abs=1e-5)


def test_scores_are_logits_and_probabilities_are_the_models_softmax(gap_model, rng):
    model = load_model(gap_model, preprocess="unit")
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    result = explain(model, image)
    reference = gap_model(model.prepare([image])).numpy()[0]
    np.testing.assert_allclose(result.probabilities, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(softmax(result.logits[None])[0], reference, rtol=1e-5, atol=1e-6)
    assert not np.allclose(result.logits, reference)  # logits, not the softmax output
    assert result.target_index == int(np.argmax(reference))
    assert result.probability == pytest.approx(float(reference.max()), rel=1e-5)


def test_softmax_scored_map_differs_from_ours(gap_model, rng):
    """Guard for the oracle above: on this model the softmax-scored map is measurably different."""
    import tensorflow as tf

    model = load_model(gap_model, preprocess="unit")
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = tf.constant(model.prepare([image]))
    grad_model = keras.Model(gap_model.inputs, [gap_model.get_layer("relu_a").output, gap_model.output])
    with tf.GradientTape() as tape:
        acts, probs = grad_model(x)
        score = probs[:, 1]
    grads = tape.gradient(score, acts).numpy()
    softmax_map = np.einsum("k,hwk->hw", grads[0].mean(axis=(0, 1)), acts.numpy()[0])
    ours = explain(model, image, target=1).cam
    ours_n, soft_n = ours / np.abs(ours).max(), softmax_map / np.abs(softmax_map).max()
    assert np.abs(ours_n - soft_n).max() > 1e-3


def test_model_is_not_mutated(gap_model, rng):
    model = load_model(gap_model, preprocess="unit")
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    before = gap_model(model.prepare([image])).numpy()
    explain(model, image)
    assert gap_model.get_layer("predictions").activation.__name__ == "softmax"
    np.testing.assert_array_equal(gap_model(model.prepare([image])).numpy(), before)


def test_all_zero_map_gives_zeros_not_nan(rng):
    dead = gap_cnn(seed=3)
    conv = dead.get_layer("conv_a")
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    result = explain(load_model(dead, preprocess="unit"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert np.isfinite(result.heatmap).all()
    assert result.heatmap.max() == 0.0
    assert result.region.coverage == 0.0


@pytest.mark.parametrize("shape", [(32, 32), (50, 120), (301, 77)])
def test_heatmap_at_input_resolution_for_any_aspect(gap_model, rng, shape):
    result = explain(load_model(gap_model), rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    assert result.heatmap.shape == shape
    assert result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    assert result.region.mask.shape == shape


def test_explicit_targets_by_index_label_and_misspelling(gap_model, rng):
    model = load_model(gap_model, labels=["tabby cat", "tiger cat", "golden retriever", "analog clock"])
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert explain(model, image, target=3).target_label == "analog clock"
    assert explain(model, image, target="Golden Retriever").target_index == 2
    assert explain(model, image, target="tabby").target_label == "tabby cat"
    assert explain(model, image, target="golden retreiver").target_index == 2
    with pytest.raises(ClassError) as err:
        explain(model, image, target="cat")
    assert set(err.value.candidates) == {"tabby cat", "tiger cat"}
    with pytest.raises(ClassError):
        explain(model, image, target="submarine")
    with pytest.raises(ClassError):
        explain(model, image, target=9)


def test_batch_equals_one_by_one(gap_model, rng):
    model = load_model(gap_model)
    images = [rng.integers(0, 256, (h, 40, 3), dtype=np.uint8) for h in (32, 45, 60)]
    batch = explain(model, images)
    for image, batched in zip(images, batch, strict=True):
        single = explain(model, image)
        np.testing.assert_allclose(batched.heatmap, single.heatmap, atol=1e-5)
        assert batched.target_index == single.target_index
    several = explain(model, images[0], target=[0, 1, 2])
    assert [r.target_index for r in several] == [0, 1, 2]
    np.testing.assert_allclose(several[1].heatmap, explain(model, images[0], target=1).heatmap, atol=1e-5)


def test_frozen_model_still_has_gradients(rng):
    frozen = gap_cnn(seed=5)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = explain(load_model(frozen), image, target=0).cam
    frozen.trainable = False
    np.testing.assert_allclose(explain(load_model(frozen), image, target=0).cam, expected, rtol=1e-5, atol=1e-7)


def test_sigmoid_head_is_two_classes(rng):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    binary = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model = load_model(binary, labels=["normal", "finding"])
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    result = explain(model, image, target="finding")
    p = float(binary(model.prepare([image])).numpy()[0, 0])
    assert result.probabilities == pytest.approx([1 - p, p], abs=1e-5)
    assert result.probability == pytest.approx(p, abs=1e-5)


def test_compiled_once_and_reused(gap_model, rng):
    model = load_model(gap_model)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    explain(model, image)
    explain(model, [image, image])
    explain(model, image, layer="relu_a")  # the same layer by name shares the compiled function
    compiled_layers = {id(v): v for k, v in model._compiled.items() if isinstance(k, str) and k.startswith("layer:")}
    assert len(compiled_layers) == 1
    (fn,) = compiled_layers.values()
    assert fn.with_gradients.experimental_get_tracing_count() == 1

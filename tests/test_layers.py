"""Automatic target-layer discovery on real keras.applications architectures, flat and nested."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from explainer import LayerError, explain, load_model
from explainer.layers import find_target_layer, resolve_layer

ARCHITECTURES = {
    # builder, input size, the layer the rules must pick
    "mobilenet_v2": (keras.applications.MobileNetV2, 96, "out_relu"),
    "resnet50": (keras.applications.ResNet50, 64, "conv5_block3_out"),
    "xception": (keras.applications.Xception, 96, "block14_sepconv2_act"),
    "efficientnet_b0": (keras.applications.EfficientNetB0, 64, "top_activation"),
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def architecture(request):
    builder, size, expected = ARCHITECTURES[request.param]
    base = builder(weights=None, include_top=False, input_shape=(size, size, 3))
    return base, size, expected


def test_flat_model_picks_last_spatial_layer_after_activation(architecture):
    base, _size, expected = architecture
    head = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(base.output))
    flat = keras.Model(base.inputs, head)
    assert find_target_layer(flat).name == expected


def test_nested_in_sequential_head(architecture, rng):
    base, size, expected = architecture
    nested = keras.Sequential([
        keras.Input((size, size, 3)),
        base,
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    path = find_target_layer(nested)
    assert path.name == f"{base.name}/{expected}"
    result = explain(load_model(nested), rng.integers(0, 256, (size + 7, size - 5, 3), dtype=np.uint8), target=1)
    assert result.layer == f"{base.name}/{expected}"
    assert result.heatmap.shape == (size + 7, size - 5)
    assert np.isfinite(result.heatmap).all()


def test_nested_matches_flat_maps(rng):
    """The replay through a nested model gives the same map as the same network built flat."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3), alpha=0.35)
    pooled = keras.layers.GlobalAveragePooling2D()
    dense = keras.layers.Dense(4, activation="softmax")
    flat = keras.Model(base.inputs, dense(pooled(base.output)))
    inputs = keras.Input((64, 64, 3))
    nested = keras.Model(inputs, dense(pooled(base(inputs))))
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    a = explain(load_model(flat), image, target=2)
    b = explain(load_model(nested), image, target=2)
    assert a.layer == "out_relu" and b.layer == f"{base.name}/out_relu"
    np.testing.assert_allclose(a.cam, b.cam, rtol=1e-4, atol=1e-6)


def test_mobilenet_v3_final_1x1_conv_is_not_picked():
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3), include_preprocessing=False)
    path = find_target_layer(model)
    assert len(path.output_shape) == 4 and path.output_shape[1] > 1
    assert "logits" not in path.name


def test_explicit_layer_by_name_and_path(rng):
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3), alpha=0.35)
    nested = keras.Sequential([keras.Input((64, 64, 3)), base, keras.layers.GlobalAveragePooling2D(),
                               keras.layers.Dense(2)])
    assert resolve_layer(nested, "block_13_expand_relu").name == f"{base.name}/block_13_expand_relu"
    assert resolve_layer(nested, f"{base.name}/block_3_project_BN").layer.name == "block_3_project_BN"
    result = explain(load_model(nested), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                     layer="block_13_expand_relu")
    assert result.layer.endswith("block_13_expand_relu")
    with pytest.raises(LayerError, match="out_relu"):
        resolve_layer(nested, "out_relu_typo")
    with pytest.raises(LayerError, match="not a spatial"):
        resolve_layer(nested, nested.layers[-1].name)


def test_model_without_spatial_layer_is_refused():
    inputs = keras.Input((8, 8, 3))
    dense_only = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(LayerError, match="no convolutional feature map"):
        find_target_layer(dense_only)

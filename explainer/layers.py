"""Finding the target layer: the last spatial feature map, also inside nested models.

Layers are addressed by a *path*: the chain of layer objects from the outer model down to the layer, so a layer
inside a wrapped ``keras.applications`` base is reachable without rebuilding any graph. Its display name joins the
names with ``/`` (``mobilenetv2_1.00_224/out_relu``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

import keras

from .errors import LayerError


@dataclass(frozen=True)
class LayerPath:
    """A layer and the models that contain it, outermost first (the outer model itself is not included)."""

    layers: tuple[keras.layers.Layer, ...]

    @property
    def layer(self) -> keras.layers.Layer:
        return self.layers[-1]

    @property
    def name(self) -> str:
        return "/".join(layer.name for layer in self.layers)

    @property
    def output_shape(self) -> tuple:
        return tuple(self.layer.output.shape)


def walk(model: keras.Model, prefix: tuple = ()) -> Iterator[LayerPath]:
    """Yield every layer of ``model`` in graph order, descending into nested models (depth first)."""
    for layer in model.layers:
        path = (*prefix, layer)
        yield LayerPath(path)
        if isinstance(layer, keras.Model):
            yield from walk(layer, path)


def is_spatial(path: LayerPath) -> bool:
    """True for a layer whose output is one 4-D feature map with height and width both above 1."""
    layer = path.layer
    if isinstance(layer, (keras.layers.InputLayer, keras.Model)):
        return False  # a nested model's output is its last layer's: count that layer instead
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):  # a layer never called, or shared in several places
        return False
    return len(shape) == 4 and _above_one(shape[1]) and _above_one(shape[2])


def _above_one(dim: int | None) -> bool:
    return dim is None or dim > 1


def spatial_layers(model: keras.Model) -> list[LayerPath]:
    """All layers with a spatial 4-D output, from the input to the head."""
    return [path for path in walk(model) if is_spatial(path)]


def find_target_layer(model: keras.Model) -> LayerPath:
    """The last layer with a 4-D output whose height and width are both > 1.

    Taking the *last* such layer in graph order lands after the activation (MobileNetV2 ``out_relu``, ResNet50
    ``conv5_block3_out``) and skips 1×1 maps such as MobileNetV3's ``logits`` convolution. Output shapes are used
    rather than layer types because Keras 3 separable and depthwise convolutions are not ``Conv`` subclasses.
    """
    candidates = spatial_layers(model)
    if not candidates:
        raise LayerError(
            "This model has no convolutional feature map (no layer outputs a 4-D map larger than 1×1), "
            "so Grad-CAM cannot be computed for it."
        )
    return candidates[-1]


def resolve_layer(model: keras.Model, name: str | None) -> LayerPath:
    """The layer called ``name`` (a bare name or a ``/``-joined path), or the automatic choice for ``None``."""
    if name is None:
        return find_target_layer(model)
    paths = list(walk(model))
    for path in paths:
        if path.name == name:
            return _checked(path)
    by_leaf = [path for path in paths if path.layer.name == name]
    if len(by_leaf) == 1:
        return _checked(by_leaf[0])
    spatial_names = [path.name for path in paths if is_spatial(path)]
    close = difflib.get_close_matches(name, spatial_names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise LayerError(f"The model has no layer called {name!r}.{hint}")


def _checked(path: LayerPath) -> LayerPath:
    if not is_spatial(path):
        raise LayerError(
            f"Layer {path.name!r} outputs shape {_shape_text(path)}, not a spatial feature map; "
            "pick a convolutional layer."
        )
    return path


def _shape_text(path: LayerPath) -> str:
    try:
        return str(tuple(path.layer.output.shape))
    except (AttributeError, ValueError):
        return "unknown"

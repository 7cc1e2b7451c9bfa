"""Finding the target layer: the last spatial feature map, also inside nested models.

Layers are addressed by a *path*: the chain of layer objects from the outer model down to the layer, so a layer
inside a wrapped ``keras.applications`` base is reachable without rebuilding any graph. Its display name joins the
names with ``/`` (``mobilenetv2_1.00_224/out_relu``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from explainer.errors import LayerError
from explainer.tokens import Tokens, children, default_path, depth_paths, with_tokens


@dataclass(frozen=True)
class LayerPath:
    """A layer and the models that contain it, outermost first (the outer model itself is not included)."""

    layers: tuple[keras.layers.Layer, ...]
    #: Set for a vision transformer's token-sequence layer: how its tokens lie on the patch grid (see
    #: :mod:`explainer.tokens`); None for every other layer.
    tokens: Tokens | None = None

    @property
    def layer(self) -> keras.layers.Layer:
        return self.layers[-1]

    @property
    def name(self) -> str:
        return "/".join(layer.name for layer in self.layers)

    @property
    def output_shape(self) -> tuple:
        if self.tokens is not None:  # a token sequence, seen as the feature map it becomes
            return self.tokens.feature_shape
        return tuple(self.layer.output.shape)


def walk(model: keras.Model, prefix: tuple = ()) -> Iterator[LayerPath]:
    """Yield every layer of ``model`` in graph order, descending into nested models (depth first).

    Also into the plain layers that hold a vision transformer's blocks (Keras Hub's encoders); the token-sequence
    layers of a vision transformer come with :attr:`LayerPath.tokens` set.
    """
    paths = _walk(model, prefix)
    return iter(paths if prefix else with_tokens(model, paths))


def _walk(model: keras.Model | keras.layers.Layer, prefix: tuple) -> Iterator[LayerPath]:
    inner = model.layers if isinstance(model, keras.Model) else children(model)
    for layer in inner:
        path = (*prefix, layer)
        yield LayerPath(path)
        yield from _walk(layer, path)


def is_spatial(path: LayerPath) -> bool:
    """True for a layer whose output is one 4-D feature map with height and width both above 1."""
    if path.tokens is not None:
        return True  # a vision transformer's token sequence: a feature map on the patch grid
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


def usable_layers(paths: Sequence[LayerPath]) -> list[LayerPath]:
    """The spatial layers worth explaining: more than 3 channels (an RGB-sized map is the image, not a feature)."""
    return [p for p in paths if (p.output_shape[-1] or 0) > 3]


def depth_layers(paths: Sequence[LayerPath], n: int = 4) -> list[LayerPath]:
    """About ``n`` of ``paths`` from input to head: the last layer of each resolution stage, thinned evenly (the last
    layer always kept), or, when there are fewer stages than ``n``, topped up with activation outputs in between.
    For a vision transformer: the embeddings and the norm before each block's attention, thinned evenly."""
    if any(p.tokens is not None for p in paths):
        return depth_paths(paths, n)
    ends: list[LayerPath] = []
    for path in paths:
        if ends and tuple(ends[-1].output_shape[1:3]) == tuple(path.output_shape[1:3]):
            ends[-1] = path
        else:
            ends.append(path)
    if len(ends) >= n:
        picks = np.linspace(0, len(ends) - 1, n).round().astype(int)
        return [ends[i] for i in dict.fromkeys(picks)]
    others = [p for p in paths if _is_activation(p) and p not in ends]
    if others:
        picks = np.linspace(0, len(others) - 1, min(n - len(ends), len(others))).round().astype(int)
        ends += [others[i] for i in dict.fromkeys(picks)]
    order = {p.name: i for i, p in enumerate(paths)}
    return sorted(ends, key=lambda p: order[p.name])


def depth_layer_names(model: keras.Model, n: int = 4) -> list[str]:
    """The layers the chat's "show layers" explains for ``model``: warm them up at start-up
    (``explainer.warm_up(model, layer=name)``) and the first "show layers" costs no tracing (seconds each on
    MobileNetV2)."""
    return [p.name for p in depth_layers(usable_layers(spatial_layers(model)), n)]


def _is_activation(path: LayerPath) -> bool:
    """True for a layer whose output has passed a non-linearity (what the next layer sees)."""
    layer = path.layer
    if type(layer).__name__ in ("ReLU", "Activation", "LeakyReLU", "ELU", "PReLU", "Softmax"):
        return True
    activation = getattr(layer, "activation", None)
    return activation is not None and getattr(activation, "__name__", "linear") != "linear"


def find_target_layer(model: keras.Model) -> LayerPath:
    """The last layer with a 4-D output whose height and width are both > 1.

    Taking the *last* such layer in graph order lands after the activation (MobileNetV2 ``out_relu``, ResNet50
    ``conv5_block3_out``) and skips 1×1 maps such as MobileNetV3's ``logits`` convolution. Output shapes are used
    rather than layer types because Keras 3 separable and depthwise convolutions are not ``Conv`` subclasses.
    """
    transformer_default = default_path(walk(model))  # None for CNNs; chosen by a pointing test (DEFAULT_METHOD)
    if transformer_default is not None:
        return transformer_default
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

"""Vision transformers: token sequences as feature maps, blocks, and the default target layer.

A ViT's layers output (batch, tokens, dim): a few leading tokens (the class token, DeiT's distillation token,
register tokens) and then one token per image patch, row by row. Dropping the leading tokens and reshaping the rest
to the patch grid (height/patch × width/patch) gives a (batch, h, w, dim) feature map, and every CAM method then
works as on a CNN (:func:`as_feature_maps`, called by the engine on the captured activations and gradients).

Keras Hub keeps a ViT's blocks inside one encoder layer, a plain ``Layer`` with a Python ``call``: they are nodes of
no functional graph. :func:`children` lists the blocks and normalisation layers inside such a layer so that layer
paths reach them, and :func:`run_inside` runs the layer's own ``call`` on a shallow twin whose chosen sublayers are
swapped for other callables (the capture of the target layer, or a deeper twin): the shared model is never modified.

This module knows nothing of :class:`~explainer.layers.LayerPath`; it works on any path with ``layers``, ``layer``
and ``tokens`` attributes (duck typing keeps the import order layers → transformers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

#: At most this many tokens may precede the patch tokens (class, distillation and register tokens).
MAX_PREFIX = 16

#: The default method of a vision transformer, and its default layer (:func:`default_path`: the token embeddings
#: entering the first block), chosen by a pointing test (README, "Models from the Hub, and vision transformers"):
#: 21 small ViTs trained here on planted objects (Keras Hub and hand-built; 2, 4 and 6 blocks; bars and colours),
#: map peak on the object within 4 px. HiResCAM on the embeddings pointed best: 77 % on average (Grad-CAM there
#: 45 %). pytorch-grad-cam's convention, the norm before the last block's attention, gave 65 % with HiResCAM and
#: 52 % with Grad-CAM, falling with depth; the first block's norm 46 % and 21 %; the centre of the image 14 %. The
#: last block's output points nowhere: its patch tokens never reach a class-token head. Grad-CAM averages the
#: gradient over the patches, and in a transformer that average loses where the class token looked; HiResCAM keeps
#: the gradient patch by patch.
DEFAULT_METHOD = "hirescam"


@dataclass(frozen=True)
class Tokens:
    """How a layer's (batch, tokens, dim) output lies on the image.

    Attributes
    ----------
    prefix : int
        Leading tokens that belong to no patch (class, distillation, register tokens): dropped.
    height, width : int
        The patch grid: image height / patch height, image width / patch width.
    dim : int
        Features per token (the channels of the feature map).
    block : int
        The transformer block the layer belongs to, counted from 1; 0 for the embeddings before the first block.
        Layers after the last block (the encoder's final norm) count as the last block.
    attention_norm : bool
        True for the normalisation layer right before a block's attention (pytorch-grad-cam's ``norm1``).
    """

    prefix: int
    height: int
    width: int
    dim: int
    block: int = 0
    attention_norm: bool = False

    @property
    def count(self) -> int:
        """All tokens of the sequence: prefix plus patches."""
        return self.prefix + self.height * self.width

    @property
    def feature_shape(self) -> tuple:
        """The shape of the feature map the layer yields, (batch, height, width, dim), as a CNN layer's output."""
        return (None, self.height, self.width, self.dim)


# --- layers inside layers -----------------------------------------------------------------------------------------


def _sublayers(layer: Any) -> list:
    """A layer's direct sublayers, in the order the layer made them (``[]`` when it has none)."""
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if flatten else []


def _is_attention(layer: Any) -> bool:
    return isinstance(layer, keras.layers.MultiHeadAttention) or "Attention" in type(layer).__name__


def _is_norm(layer: Any) -> bool:
    return "Normalization" in type(layer).__name__ or "Norm" in type(layer).__name__[-4:]


def holds_attention(layer: Any) -> bool:
    """True for a plain layer (not a model) with an attention layer somewhere inside: a block or an encoder."""
    if isinstance(layer, keras.Model) or _is_attention(layer):
        return False
    flatten = getattr(layer, "_flatten_layers", None)
    return bool(flatten) and any(_is_attention(inner) for inner in flatten(include_self=False, recursive=True))


def is_block(layer: Any) -> bool:
    """True for a transformer block: a plain layer with an attention layer among its direct sublayers."""
    return holds_attention(layer) and any(_is_attention(inner) for inner in _sublayers(layer))


def children(layer: Any) -> list:
    """The inner layers worth explaining of a layer that holds transformer blocks (Keras Hub's encoders and blocks):
    its blocks and its normalisation layers, in the order the layer made them. ``[]`` for every other layer."""
    if not holds_attention(layer):
        return []
    return [inner for inner in _sublayers(layer) if holds_attention(inner) or _is_norm(inner)]


def _attention_norm_of_block(block: Any) -> Any | None:
    """The normalisation layer a block applies right before its attention (None when there is none)."""
    norm = None
    for inner in _sublayers(block):
        if _is_attention(inner):
            return norm
        norm = inner if _is_norm(inner) else norm
    return None


class _Hooked:
    """Stands in for a sublayer inside a twin: calls go to ``run``, anything else to the real layer."""

    def __init__(self, layer: Any, run: Callable) -> None:
        self._layer = layer
        self._run = run

    def __call__(self, *args, **kwargs):
        return self._run(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._layer, name)


def run_inside(layer: Any, args: tuple, kwargs: Mapping[str, Any], swap: Callable[[Any], Callable | None]):
    """Run ``layer``'s own ``call`` with some of its sublayers swapped, without modifying ``layer``.

    Parameters
    ----------
    layer : keras.layers.Layer
        A plain layer holding sublayers (e.g. Keras Hub's ``ViTEncoder`` or one of its blocks).
    args, kwargs :
        What the layer is called with.
    swap : callable
        ``swap(sublayer)`` returns the callable to run instead of that sublayer, or None to keep it.

    Returns
    -------
    Whatever ``layer.call`` returns.

    Notes
    -----
    The call runs on a shallow twin: a new object of the same class whose attribute dictionary is a copy of the
    layer's, with swapped sublayers replaced (also inside lists such as ``encoder_layers``). Variables are shared,
    nothing is assigned on the layer, so other threads using the model are not affected.
    """
    twin = object.__new__(type(layer))  # not type(layer)(): no constructor, no new variables
    twin.__dict__.update({key: _swapped(value, swap) for key, value in layer.__dict__.items()})
    if getattr(layer, "_call_has_training_arg", False):
        kwargs = {**kwargs, "training": False}
    return type(layer).call(twin, *args, **kwargs)


def _swapped(value: Any, swap: Callable[[Any], Callable | None]) -> Any:
    if isinstance(value, keras.layers.Layer):
        run = swap(value)
        return value if run is None else _Hooked(value, run)
    if isinstance(value, (list, tuple)) and any(isinstance(item, keras.layers.Layer) for item in value):
        items = [_swapped(item, swap) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


# --- the token grid -----------------------------------------------------------------------------------------------


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


def _model_layers(model: keras.Model) -> Iterator[Any]:
    """Every layer of ``model`` in graph order, nested models included (not the layers inside plain layers)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _model_layers(layer)


def _sequence_shape(model: keras.Model) -> tuple[int, int] | None:
    """(tokens, dim) of the sequence entering the first attention layer or block-holding layer, or None."""
    for layer in _model_layers(model):
        if not (_is_attention(layer) or holds_attention(layer)):
            continue
        try:
            shape = tuple(_first(layer.input).shape)
        except (AttributeError, ValueError):  # never called, or called in several places
            continue
        if len(shape) == 3 and shape[1] and shape[2]:
            return int(shape[1]), int(shape[2])
    return None


def _patch_strides(model: keras.Model) -> tuple[int, int] | None:
    """The strides of the patch embedding: the first convolution whose kernel equals its stride (> 1)."""
    for layer in _model_layers(model):
        for inner in (layer, *getattr(layer, "_flatten_layers", lambda **_: [])(include_self=False, recursive=True)):
            if isinstance(inner, keras.layers.Conv2D):
                strides, kernel = tuple(inner.strides), tuple(inner.kernel_size)
                if strides == kernel and min(strides) > 1:
                    return strides
    return None


def token_grid(model: keras.Model) -> Tokens | None:
    """How ``model``'s token sequence maps onto its input image, or None when it is not a vision transformer.

    The sequence is the one entering the first attention layer; the patch size comes from the patch embedding
    (a convolution whose kernel equals its stride), or, without one, from the square patch size that leaves at most
    :data:`MAX_PREFIX` tokens over. Tokens beyond the patches count as leading class/register tokens.
    """
    inputs = getattr(model, "inputs", None)
    shape = tuple(inputs[0].shape) if inputs else ()
    if len(shape) != 4 or not shape[1] or not shape[2]:
        return None
    sequence = _sequence_shape(model)
    if sequence is None:
        return None
    tokens, dim = sequence
    height, width = int(shape[1]), int(shape[2])
    strides = _patch_strides(model)
    candidates = [strides] if strides else [(p, p) for p in range(2, min(height, width) + 1)]
    for ph, pw in candidates:
        grid = (height // ph, width // pw)
        prefix = tokens - grid[0] * grid[1]
        if 0 <= prefix <= MAX_PREFIX and (strides or (height % ph == 0 and width % pw == 0)):
            return Tokens(prefix, grid[0], grid[1], dim)
    return None


def is_transformer(model: keras.Model) -> bool:
    """True when ``model`` is a vision transformer whose token sequence lies on a patch grid of its input."""
    return token_grid(model) is not None


# --- tagging layer paths ------------------------------------------------------------------------------------------


def _functional_starts(model: keras.Model) -> dict[int, bool]:
    """Layers where a block of a functional transformer starts: the norm feeding each attention layer's query
    (True), or the attention layer itself when no norm precedes it (False). Keyed by ``id``."""
    starts: dict[int, bool] = {}
    for layer in _model_layers(model):
        if not _is_attention(layer):
            continue
        try:
            source = _first(layer.input)._keras_history.operation
        except (AttributeError, ValueError):
            continue
        if _is_norm(source):
            starts[id(source)] = True
        else:
            starts[id(layer)] = False
    return starts


def _output_tokens(layer: Any) -> tuple[int, int] | None:
    """(tokens, dim) of a functional layer's 3-D output, or None."""
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return None
    return (shape[1], shape[2]) if len(shape) == 3 and shape[2] else None


def with_tokens(model: keras.Model, paths: Iterable) -> Iterable:
    """``paths`` (from :func:`explainer.layers.walk`) with ``tokens`` set on every token-sequence layer.

    For a model that is not a vision transformer the paths come back untouched (the same iterator).
    """
    grid = token_grid(model)
    if grid is None:
        return paths
    return list(_tagged(model, paths, grid))


def _tagged(model: keras.Model, paths: Iterable, grid: Tokens) -> Iterator:
    starts = _functional_starts(model)
    block = 0
    for path in paths:
        layer, parent = path.layer, (path.layers[-2] if len(path.layers) > 1 else None)
        if isinstance(layer, (keras.Model, keras.layers.InputLayer)):
            yield path
            continue
        attention_norm = False
        if id(layer) in starts:
            block += 1
            attention_norm = starts[id(layer)]
        elif is_block(layer):
            block += 1
        inside = parent is not None and not isinstance(parent, keras.Model)
        if inside:  # inside a plain layer: a block or norm of Keras Hub's encoder, on the residual stream
            attention_norm = is_block(parent) and _attention_norm_of_block(parent) is layer
            dim = grid.dim
        else:
            shape = _output_tokens(layer)
            dim = shape[1] if shape and shape[0] == grid.count else None
        if dim is None:
            yield path
            continue
        # A plain layer holding the blocks (the encoder) outputs what comes after all of them.
        after = sum(1 for inner in _flatten(layer) if is_block(inner)) if not inside and holds_attention(layer) else 0
        tokens = dataclasses.replace(grid, dim=int(dim), block=block + after, attention_norm=attention_norm)
        yield dataclasses.replace(path, tokens=tokens)


def _flatten(layer: Any) -> list:
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=True)) if flatten else []


# --- choosing layers ----------------------------------------------------------------------------------------------


def token_paths(paths: Iterable) -> list:
    """The paths whose layer outputs the token sequence (``tokens`` set), in graph order."""
    return [path for path in paths if getattr(path, "tokens", None) is not None]


def embedding_path(paths: Iterable) -> Any | None:
    """The token embeddings as the first block receives them: the last token layer before any block."""
    before = [path for path in token_paths(paths) if path.tokens.block == 0]
    return before[-1] if before else None


def attention_norms(paths: Iterable) -> list:
    """Per block, in order, the normalisation layer before its attention (pytorch-grad-cam's ``norm1``)."""
    return [path for path in token_paths(paths) if path.tokens.attention_norm]


def block_count(paths: Iterable) -> int:
    """How many transformer blocks the paths reach (0 for a CNN)."""
    return max((path.tokens.block for path in token_paths(paths)), default=0)


def block_of(path: Any) -> int | None:
    """The block a layer path belongs to (1 = the first; 0 = the embeddings), None for a CNN layer."""
    tokens = getattr(path, "tokens", None)
    return None if tokens is None else tokens.block


def block_outputs(paths: Iterable) -> list:
    """Per block, in order, the layer whose output is the block's output (the residual stream after it): the
    block itself inside Keras Hub's encoder, else the block's last layer of the stream's width that is no norm."""
    paths = token_paths(paths)
    containers = [path for path in paths if is_block(path.layer)]
    if containers:
        return containers
    embedding = embedding_path(paths)
    width = embedding.tokens.dim if embedding else paths[0].tokens.dim if paths else 0  # the residual stream's
    last: dict[int, Any] = {}
    for path in paths:
        if path.tokens.block > 0 and path.tokens.dim == width and not _is_norm(path.layer):
            last[path.tokens.block] = path
    return [last[block] for block in sorted(last)]


def default_path(paths: Iterable) -> Any | None:
    """The default target layer of a vision transformer (None for other models): the token embeddings as the first
    block receives them (see :data:`DEFAULT_METHOD` for how it was chosen); else the first token layer."""
    paths = token_paths(paths)
    if not paths:
        return None
    return embedding_path(paths) or paths[0]


def default_method(model: keras.Model) -> str:
    """The CAM method to use when none is asked for: :data:`DEFAULT_METHOD` for a vision transformer, else
    Grad-CAM."""
    return DEFAULT_METHOD if is_transformer(model) else "gradcam"


def depth_paths(paths: Sequence, n: int = 4) -> list:
    """About ``n`` layers from input to head for "show layers" on a transformer, thinned evenly (first and last
    kept): the embeddings, the output of each block but the last, and the norm before the last block's attention
    (the deepest layer whose patch tokens still reach a class-token head)."""
    outputs, norms = block_outputs(paths), attention_norms(paths)
    stages = [embedding_path(paths), *outputs[:-1], *norms[-1:]]
    stages = [p for p in dict.fromkeys(stages) if p is not None]
    if not stages:
        return []
    picks = np.linspace(0, len(stages) - 1, min(n, len(stages))).round().astype(int)
    return [stages[i] for i in dict.fromkeys(picks)]


# --- token sequences as feature maps ------------------------------------------------------------------------------


def to_feature_map(sequence: tf.Tensor, tokens: Tokens) -> tf.Tensor:
    """(batch, tokens, dim) → (batch, height, width, dim): leading tokens dropped, patches back on their grid."""
    patches = sequence[:, tokens.prefix :, :]
    return tf.reshape(patches, [-1, tokens.height, tokens.width, tf.shape(patches)[-1]])


def as_feature_maps(tokens: Tokens | None, *tensors: tf.Tensor | None) -> tuple:
    """The target layer's captured tensors (activations, gradients) as CNN-style feature maps.

    ``tokens`` is the target path's :attr:`~explainer.layers.LayerPath.tokens`: None (a CNN's 4-D layer) returns
    the tensors unchanged, so the CNN path traces to the very same graph.
    """
    if tokens is None:
        return tensors
    return tuple(None if t is None else to_feature_map(t, tokens) for t in tensors)

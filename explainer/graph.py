"""Replaying a Keras model to capture a layer's output and the pre-softmax logits, without touching the model.

The Keras Grad-CAM example builds ``keras.Model(model.inputs, [layer.output, model.output])`` and sets the last
activation to ``None``. That mutates a model shared by every user and fails with "Graph disconnected" when the
layer sits inside a nested model. Instead we run the model's own graph again (Keras's ``_run_through_graph``) and
swap in two things while it runs: the target layer's output is recorded (and watched by the gradient tape), and
the classifier's softmax or sigmoid is skipped so the score is the logit (for a multi-label head: the target
label's own pre-sigmoid logit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from explainer import tokens
from explainer.compat.keras_internals import Functional, operation_fn
from explainer.errors import ModelError
from explainer.layers import LayerPath

#: The final activations :class:`Head` tells apart (``logits``: none to strip). Not :data:`explainer.heads.HEADS`,
#: the kinds of output a model's scores are read as.
FINAL_ACTIVATIONS = ("softmax", "sigmoid", "logits")


@dataclass(frozen=True)
class Head:
    """How the model turns its last layer into scores: which layer, which activation it ends in, how many units."""

    path: LayerPath
    kind: str  # one of FINAL_ACTIVATIONS
    units: int = 0  # width of the model's output (0 when unknown)

    @property
    def name(self) -> str:
        """The head as :mod:`explainer.heads` names it: softmax, sigmoid, multilabel or linear.

        One output unit is a two-class model whatever its activation (a single linear unit is a binary logit);
        several sigmoid units are independent labels; several units without activation are softmax logits.
        """
        if self.units == 1:
            return "sigmoid"
        if self.kind == "sigmoid":
            return "multilabel"
        return "softmax" if self.kind == "softmax" else "linear"


def output_layer_path(model: keras.Model) -> LayerPath:
    """The chain of layers that produces the model's (first) output, down into nested models."""
    chain: list[keras.layers.Layer] = []
    current = model
    while isinstance(current, keras.Model):
        if isinstance(current, keras.Sequential):
            layer = current.layers[-1]
        else:
            layer = current.outputs[0]._keras_history.operation
        chain.append(layer)
        current = layer
    return LayerPath(tuple(chain))


def find_head(model: keras.Model) -> Head:
    """Classify the head: ``softmax`` / ``sigmoid`` (an activation we strip) or ``logits`` (already linear)."""
    path = output_layer_path(model)
    layer = path.layer
    units = _output_units(model)
    if isinstance(layer, keras.layers.Softmax):
        return Head(path, "softmax", units)
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "")
    if name in ("softmax", "sigmoid"):
        return Head(path, name, units)
    return Head(path, "logits", units)


def _output_units(model: keras.Model) -> int:
    outputs = getattr(model, "outputs", None)
    size = outputs[0].shape[-1] if outputs else None
    return int(size) if size is not None else 0


def _strip_activation(layer: keras.layers.Layer) -> Callable:
    """Call ``layer`` without its final activation, on a shallow copy so the shared model is never modified."""
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return lambda x, *args, **kwargs: x
    # A shallow twin sharing the variables; only its activation differs. (copy.copy would pickle the layer.)
    linear = object.__new__(type(layer))
    linear.__dict__.update(layer.__dict__)
    object.__setattr__(linear, "activation", keras.activations.linear)
    return lambda *args, **kwargs: linear.call(*args)


def feature_path(model: keras.Model) -> LayerPath:
    """The classifier's last Dense layer, whose *input* is the penultimate feature vector.

    The head layer itself when it is a Dense (a CNN's ``predictions``, Keras Hub's ViT ``output_dense`` reading the
    pooled class token); for a separate ``Softmax``/``Activation`` layer, the layer feeding it. Anything else: the
    head layer, whatever its input is.
    """
    path = output_layer_path(model)
    if isinstance(path.layer, (keras.layers.Softmax, keras.layers.Activation)):
        before = path.layer.input._keras_history.operation
        if isinstance(before, (keras.layers.Dense, keras.layers.EinsumDense)):
            return LayerPath((*path.layers[:-1], before))
    return path


class Replay:
    """Run ``model`` on a batch, returning ``(logits, activations)`` of the target layer.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model, possibly with nested models inside.
    target : LayerPath or None
        The layer whose output to capture; ``None`` runs for the logits alone.
    features : bool
        Also capture the penultimate features (the input of :func:`feature_path`), returned by :meth:`run`.
    """

    def __init__(self, model: keras.Model, target: LayerPath | None, features: bool = False):
        self.model = model
        self.head = find_head(model)
        self.target = target
        self.features = feature_path(model) if features else None
        # Models to descend into: those on the way to the target, to the head or to the features.
        routes = [self.head.path.layers[:-1]] + ([target.layers[:-1]] if target else [])
        routes += [self.features.layers[:-1]] if self.features else []
        self._ancestors = {id(layer) for route in routes for layer in route}
        self._strip = _strip_activation(self.head.path.layer) if self.head.kind != "logits" else None

    def __call__(self, x: tf.Tensor, tape: tf.GradientTape | None = None) -> tuple[tf.Tensor, tf.Tensor | None]:
        logits, activations, _features = self.run(x, tape)
        return logits, activations

    def run(self, x: tf.Tensor, tape: tf.GradientTape | None = None) -> tuple[tf.Tensor, tf.Tensor | None,
                                                                               tf.Tensor | None]:
        """``(logits, activations, features)``; features (batch, dim) only when asked for, else None."""
        captured: list[tf.Tensor] = []
        inputs: list[tf.Tensor] = []
        overrides: dict[int, Callable] = {}
        if self._strip is not None:
            overrides[id(self.head.path.layer)] = self._strip
        if self.target is not None:
            overrides[id(self.target.layer)] = self._capturing(self.target.layer, captured, tape)
        if self.features is not None:
            layer = self.features.layer
            overrides[id(layer)] = _recording_input(overrides.get(id(layer)) or operation_fn(layer, training=False),
                                                    inputs)
        logits = tf.cast(self._run(self.model, x, overrides), tf.float32)
        if logits.shape[-1] == 1:  # one unit (sigmoid or a bare logit): two classes, "not X" and "X"
            logits = tf.concat([-logits / 2, logits / 2], axis=-1)  # softmax of these = [1 - σ(z), σ(z)]
        activations = tf.cast(captured[0], tf.float32) if captured else None
        features = _flat(inputs[0]) if inputs else None
        return logits, activations, features

    @staticmethod
    def _capturing(layer, captured: list, tape: tf.GradientTape | None) -> Callable:
        call = operation_fn(layer, training=False)

        def run(*args, **kwargs):
            out = call(*args, **kwargs)
            # Keras Hub's DeiT blocks return (tokens, attention scores): capture the tokens, pass both on.
            seen = out[0] if isinstance(out, (tuple, list)) else out
            if tape is not None:
                tape.watch(seen)  # also works when the base is frozen (no trainable variables upstream)
            captured.append(seen)
            return out

        return run

    def _run(self, model: keras.Model, x, overrides: dict[int, Callable]):
        def op_fn(op):
            if id(op) in overrides:
                return overrides[id(op)]
            if id(op) in self._ancestors:
                if not isinstance(op, keras.Model):  # a plain layer holding transformer blocks: its own call
                    return lambda *args, **kwargs: tokens.run_inside(op, args, kwargs, swap)
                return lambda inner, *args, **kwargs: self._run(op, inner, overrides)
            return operation_fn(op, training=False)

        def swap(sublayer):
            return op_fn(sublayer) if id(sublayer) in overrides or id(sublayer) in self._ancestors else None

        if isinstance(model, keras.Sequential):
            for layer in model.layers:
                x = op_fn(layer)(x)
            return x
        if not isinstance(model, Functional):
            raise ModelError(
                f"{type(model).__name__} is a subclassed model; Grad-CAM Chat needs a functional or Sequential "
                "model whose layers it can see. Save it as a functional model."
            )
        outputs = model._run_through_graph(model._standardize_inputs(x), operation_fn=op_fn)
        return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _recording_input(call: Callable, inputs: list) -> Callable:
    """``call`` that also keeps its first argument (the layer's input tensor)."""

    def run(*args, **kwargs):
        inputs.append(args[0])
        return call(*args, **kwargs)

    return run


def _flat(features: tf.Tensor) -> tf.Tensor:
    """(batch, dim) float32: a Dense applied to a sequence or a map reads its last axis, averaged over the rest."""
    features = tf.cast(features, tf.float32)
    return tf.reduce_mean(features, axis=list(range(1, features.shape.rank - 1))) if features.shape.rank > 2 \
        else features

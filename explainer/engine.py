"""The explain loop: one compiled forward+backward pass per batch, then a CAM method, then localization.

The gradient step is a ``tf.function`` with a fixed input signature, traced once per (model, layer) and cached on
the :class:`~explainer.models.loading.LoadedModel`; it returns the logits, the target layer's activations and their
gradients in one pass, so a chat turn never runs the network twice for the same image and target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from explainer import deadline, tokens
from explainer.cams import CamBatch, contrast, get_method
from explainer.errors import ExplainerError, ModelError
from explainer.graph import Replay
from explainer.heads import probabilities
from explainer.inputs.images import load_image
from explainer.labels import match_label
from explainer.layers import LayerPath, resolve_layer
from explainer.models.loading import LoadedModel
from explainer.region import DEFAULT_THRESHOLD, localize
from explainer.result import Explanation, Prediction
from explainer.segment import BaseSegmenter, get_segmenter, no_mask_reason
from explainer.tokens import as_feature_maps

TOP_K = 5
#: Images per compiled call of :func:`explain_batch` (activations and gradients of a chunk are held at once).
EXPLAIN_CHUNK = 16
_AUTO = -1  # target placeholder meaning "the top prediction", resolved inside the compiled function


@dataclass
class CompiledLayer:
    """Compiled functions for one target layer of one model.

    ``with_gradients(x, targets)`` returns (logits, activations, gradients, targets, features) and
    ``without_gradients(x)`` (logits, activations, features); features are (batch, 0) unless the model has a
    feature reference.
    """

    layer: LayerPath
    with_gradients: tf.types.experimental.PolymorphicFunction
    without_gradients: tf.types.experimental.PolymorphicFunction


def compiled(model: LoadedModel, layer: str | None = None) -> CompiledLayer:
    """The cached compiled functions for ``layer`` (automatic when None); traced on first use only."""
    requested = f"layer:{layer or ''}"
    if requested in model._compiled:  # hot path: no walk over the model's layers
        return model._compiled[requested]
    path = resolve_layer(model.keras_model, layer)
    with model._lock:
        key = f"layer:{path.name}"
        if key not in model._compiled:
            model._compiled[key] = _compile(model, path)
        model._compiled[requested] = model._compiled[key]
        return model._compiled[key]


def _signature(model: LoadedModel) -> tf.TensorSpec:
    height, width = model.info.input_size
    return tf.TensorSpec([None, height, width, model.info.channels], tf.float32)


def _compile(model: LoadedModel, path: LayerPath) -> CompiledLayer:
    # The penultimate features ride along only when the model has a reference to compare them with.
    replay = Replay(model.keras_model, path, features=model.info.features is not None)

    @tf.function(input_signature=[_signature(model), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)])
    def with_gradients(x, targets, versus):
        with tf.GradientTape() as tape:
            logits, acts, feats = replay.run(x, tape)
            chosen = tf.where(targets >= 0, targets, tf.argmax(logits, axis=-1, output_type=tf.int32))
            # Images in a batch are independent, so the gradient of the sum is each image's own gradient.
            score = tf.reduce_sum(contrast.target_score(logits, chosen, versus))
        # A transformer's (batch, tokens, dim) → (batch, h, w, dim); a CNN's maps pass through untouched.
        acts, grads = as_feature_maps(path.tokens, acts, tape.gradient(score, acts))
        return logits, acts, grads, chosen, _or_empty(feats, logits)

    @tf.function(input_signature=[_signature(model)])
    def without_gradients(x):
        logits, acts, feats = replay.run(x)
        return logits, as_feature_maps(path.tokens, acts)[0], _or_empty(feats, logits)

    return CompiledLayer(path, with_gradients, without_gradients)


def _or_empty(features: tf.Tensor | None, logits: tf.Tensor) -> tf.Tensor:
    """The features, or a (batch, 0) placeholder: the compiled functions always return the same structure."""
    return features if features is not None else tf.zeros([tf.shape(logits)[0], 0], tf.float32)


def forward(model: LoadedModel, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of preprocessed ``inputs`` through the compiled model, in chunks of ``batch_size``."""
    with model._lock:
        if "__logits__" not in model._compiled:
            replay = Replay(model.keras_model, None)
            model._compiled["__logits__"] = tf.function(lambda x: replay(x)[0],
                                                        input_signature=[_signature(model)])
        fn = model._compiled["__logits__"]
    chunks = []
    for start in range(0, len(inputs), batch_size):
        deadline.check()  # between batches: a turn over its time budget (or whose visitor left) stops here
        chunks.append(fn(tf.constant(inputs[start : start + batch_size], tf.float32)).numpy())
    return check_finite(np.concatenate(chunks)) if chunks else np.zeros((0, len(model.labels)), np.float32)


def forward_features(model: LoadedModel, inputs: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, features)`` of preprocessed ``inputs``: one pass each, the features the input of the last Dense.

    What calibration fits on (:mod:`explainer.evaluation.calibration`); a separate compiled function, traced once.
    """
    with model._lock:
        if "__features__" not in model._compiled:
            replay = Replay(model.keras_model, None, features=True)
            model._compiled["__features__"] = tf.function(lambda x: replay.run(x)[::2],
                                                          input_signature=[_signature(model)])
        fn = model._compiled["__features__"]
    logits, features = [], []
    for start in range(0, len(inputs), batch_size):
        out = fn(tf.constant(inputs[start : start + batch_size], tf.float32))
        logits.append(out[0].numpy())
        features.append(out[1].numpy())
    if not logits:
        raise ExplainerError("No image to run the model on.")
    return check_finite(np.concatenate(logits)), check_finite(np.concatenate(features))


def predict(model: LoadedModel, images: list[np.ndarray], raw: bool = False) -> np.ndarray:
    """Probabilities (N×C) for RGB images of any size, as :func:`explain` reports them.

    Calibrated when the model has a calibration (:func:`calibrated`), so a check comparing them with an
    explanation's ``probability`` compares like with like; ``raw=True`` gives the model's own
    (:func:`explainer.heads.probabilities`).
    """
    logits = forward(model, model.prepare(images))
    return probabilities(logits, model.info.head) if raw else calibrated(model, logits)


def calibrated(model: LoadedModel, logits: np.ndarray) -> np.ndarray:
    """The probabilities the engine reports for ``logits``: temperature-scaled when the model is calibrated."""
    calibration = model.info.calibration
    if calibration is None:
        return probabilities(logits, model.info.head)
    return calibration.probabilities(logits, model.info.head)


def check_finite(values: np.ndarray, what: str = "scores") -> np.ndarray:
    """``values`` unchanged, or :class:`ModelError` when any is NaN or infinite (never shown as a percentage)."""
    if not np.isfinite(values).all():
        if what == "map":
            raise ModelError("The explanation map for this image came out as invalid numbers (NaN or infinity); "
                             "the model's weights or activations may be broken.")
        raise ModelError("The model produced invalid numbers (NaN or infinity) for this image; "
                         "its weights may be broken.")
    return values


def warm_up(model: LoadedModel, method: str | None = None, layer: str | None = None) -> None:
    """Trace the compiled functions now (start-up), so the first question is as fast as the rest.

    ``method`` None traces the model's default method (:func:`default_method`), the one a first question uses.
    """
    blank = np.zeros((*model.info.input_size, 3), np.uint8)  # RGB: prepare() converts to the model's channels
    explain(model, blank, method=method, layer=layer)
    forward(model, model.prepare([blank]))
    started = time.perf_counter()  # traced now: this is the cost of one image, for time-budget estimates
    forward(model, model.prepare([blank]))
    model._compiled.setdefault("forward_seconds", time.perf_counter() - started)


def forward_seconds(model: LoadedModel) -> float | None:
    """Measured seconds of one image's forward pass (None until :func:`warm_up` ran)."""
    return model._compiled.get("forward_seconds")


def explain(
    model: LoadedModel,
    image,
    target: int | str | list | None = None,
    method: str | None = None,
    layer: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    top_k: int = TOP_K,
    segment: str | BaseSegmenter | None = None,
    *,
    versus: int | str | list | None = None,
    against: bool = False,
) -> Explanation | list[Explanation]:
    """Explain what ``model`` looks at in ``image``.

    Parameters
    ----------
    model : LoadedModel
        From :func:`explainer.load_model`.
    image : array, path, PIL image, or a list of them
        RGB ``uint8`` H×W×3 of any size (grey, RGBA and 16-bit are converted). A list is explained as one batch.
    target : None, int, str, or a list of them
        ``None`` explains the top prediction; an index or a (fuzzy) label explains that class. A list of targets
        for one image explains each, as one batch.
    method : str, optional
        A name from :data:`explainer.cams.METHODS`. By default Grad-CAM, or HiResCAM for a vision transformer
        (see :data:`explainer.tokens.DEFAULT_METHOD`).
    layer : str, optional
        Target layer name or ``/``-joined path; the last spatial layer by default (for a vision transformer, the
        token embeddings entering the first block: :func:`explainer.tokens.default_path`).
    threshold : float
        Localization threshold as a fraction of the map's maximum.
    top_k : int
        How many predictions to report.
    segment : str or BaseSegmenter, optional
        How :attr:`Region.mask <explainer.region.Region.mask>` segments the object (a name from
        :data:`explainer.segment.SEGMENTERS`; default :data:`~explainer.segment.DEFAULT_SEGMENT`). The mask is
        computed when first read, so an explanation nobody segments costs nothing more. A class below the
        probability cutoff gets no mask (:func:`explainer.segment.no_mask_reason`).
    versus : None, int, str, or a list of them
        Contrast: score ``logit_target − logit_versus`` (pre-softmax, or pre-sigmoid for a multi-label head), so the
        map shows where the evidence separates the two classes. One per image in a list; a list of classes for one
        image and target gives one contrast each. Not for Eigen-CAM (:mod:`explainer.cams.contrast`).
    against : bool
        The counterfactual map: negated gradients, the regions whose removal would raise the target's score.
        Gradient methods only. Contrast and counterfactual maps get no segmented mask.

    Returns
    -------
    Explanation or list of Explanation
        A list when ``image`` or ``target`` is a list.
    """
    images, targets, as_list = _pairs(image, target)
    images, targets, versus, as_list = contrast.expand(images, targets, versus, as_list)
    cam = get_method(method or default_method(model))
    segmenter = get_segmenter(segment)
    fns = compiled(model, layer)
    images = [load_image(img) for img in images]
    inputs = model.prepare(images)
    indices = np.array([_AUTO if t is None else match_label(model.labels, t) for t in targets], np.int32)
    opposed = contrast.resolve(model.labels, versus)
    contrast.check_supported(cam, bool((opposed >= 0).any()), against)
    if cam.needs_gradients:
        logits, acts, grads, chosen, feats = (t.numpy() for t in fns.with_gradients(inputs, indices, opposed))
        grads = -grads if against else grads  # the counterfactual map: what lowers the score
    else:
        logits, acts, feats = (t.numpy() for t in fns.without_gradients(inputs))
        grads, chosen = None, np.where(indices >= 0, indices, logits.argmax(axis=-1))
    check_finite(logits)
    _expect_affordable(model, cam, acts.shape[-1], len(images))
    batch = CamBatch(acts, grads, logits, chosen, inputs, lambda x: forward(model, x), model.info.head, opposed)
    maps, raw, weights = cam(batch)
    check_finite(raw, "map")
    scores = Scores(logits, calibrated(model, logits), probabilities(logits, model.info.head), _verdicts(model, feats))
    results = [
        contrast.mark(_result(model, img, maps[i], raw[i], None if weights is None else weights[i], scores.row(i),
                              int(chosen[i]), cam.name, fns.layer.name, threshold, top_k, segmenter),
                      int(opposed[i]), against)
        for i, img in enumerate(images)
    ]
    return results if as_list else results[0]


@dataclass
class Scores:
    """A batch's logits, reported (calibrated) and raw probabilities, and out-of-distribution verdicts."""

    logits: np.ndarray
    probs: np.ndarray
    raw: np.ndarray
    ood: list[dict | None]

    def row(self, i: int) -> Scores:
        return Scores(self.logits[i], self.probs[i], self.raw[i], [self.ood[i]])


def _verdicts(model: LoadedModel, features: np.ndarray) -> list[dict | None]:
    """Each image's feature-space verdict (:meth:`FeatureReference.verdict`), None without a reference."""
    reference = model.info.features
    if reference is None or features.shape[-1] != reference.mean.shape[0]:
        return [None] * len(features)
    return [reference.verdict(row) for row in features]


def explain_batch(
    model: LoadedModel,
    images: list | np.ndarray,
    targets: list | np.ndarray | None = None,
    method: str | None = None,
    layer: str | None = None,
    chunk: int = EXPLAIN_CHUNK,
    *,
    isolate_errors: bool = False,
    **kwargs: object,
) -> list:
    """Explain many images, ``chunk`` at a time through one compiled call each (the one chunked batch loop).

    Parameters
    ----------
    model : LoadedModel
        From :func:`explainer.load_model`.
    images : list or array
        Images as :func:`explain` takes them (an N×H×W×3 array is N images).
    targets : list, optional
        One target per image (an index, a label or None for the top prediction); None explains each prediction.
    method, layer :
        As for :func:`explain`; ``method`` None is the model's default (:func:`default_method`).
    chunk : int
        Images per compiled call.
    isolate_errors : bool
        When a chunk fails with an :class:`~explainer.errors.ExplainerError`, explain its images one by one and put
        each failing image's error in its place of the list (an audit records it and goes on). Without it, raise.
    **kwargs :
        ``threshold``, ``top_k``, ``segment``, ``versus`` (one class, or one per image) and ``against`` of
        :func:`explain`.

    Returns
    -------
    list
        One :class:`~explainer.result.Explanation` per image, in order (or the error, with ``isolate_errors``).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    images = list(images)
    targets = [None] * len(images) if targets is None else [_target(t) for t in targets]
    if len(targets) != len(images):
        raise ExplainerError(f"Got {len(images)} images but {len(targets)} targets.")
    if not images:
        return []
    method = method or default_method(model)  # resolved once, not per chunk
    versus = kwargs.pop("versus", None)
    versus = list(versus) if isinstance(versus, (list, tuple)) else [versus] * len(images)
    if len(versus) != len(images):
        raise ExplainerError(f"Got {len(images)} images but {len(versus)} classes to compare with (versus).")
    results: list = []
    for start in range(0, len(images), chunk):
        part, aims, others = (v[start : start + chunk] for v in (images, targets, versus))
        try:
            results.extend(explain(model, part, target=aims, method=method, layer=layer, versus=others, **kwargs))
        except ExplainerError:
            if not isolate_errors:
                raise
            results.extend(_explain_each(model, part, aims, others, method, layer, kwargs))
    return results


def _explain_each(model, images: list, targets: list, versus: list, method: str, layer: str | None,
                  kwargs: dict) -> list:
    """Each image alone, its error in its place: one bad image of a failed chunk does not cost the others."""
    outcomes: list = []
    for image, target, other in zip(images, targets, versus, strict=True):
        try:
            outcomes.append(explain(model, image, target=target, method=method, layer=layer, versus=other,
                                    **kwargs))
        except ExplainerError as err:
            outcomes.append(err)
    return outcomes


def _target(target: object) -> object:
    """A numpy integer as a plain int (:func:`~explainer.labels.match_label` would read it as a label)."""
    return int(target) if isinstance(target, np.integer) else target


def default_method(model: LoadedModel) -> str:
    """The method used when none is asked for: Grad-CAM, or HiResCAM for a vision transformer (decided once per
    model and kept on it, for the engine, the chat, the audit and the app alike)."""
    return model.memo("default_method", lambda: tokens.default_method(model.keras_model))


def _expect_affordable(model: LoadedModel, cam, channels: int, images: int) -> None:
    """Refuse up front a method whose extra forward passes would not fit the current turn's time budget."""
    passes, seconds = cam.extra_forward_passes(channels) * images, forward_seconds(model)
    if passes and seconds:
        deadline.expect(passes * seconds, cam.display_name)


def _pairs(image, target) -> tuple[list, list, bool]:
    """Expand (image, target) into equal-length lists; several targets of one image repeat the image."""
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    targets = list(target) if isinstance(target, (list, tuple)) else [target] * len(images)
    if len(images) == 1 and len(targets) > 1:
        images = images * len(targets)
    if len(images) != len(targets):
        raise ExplainerError(f"Got {len(images)} images but {len(targets)} targets.")
    if not images:
        raise ExplainerError("No image to explain.")
    return images, targets, isinstance(image, (list, tuple)) or isinstance(target, (list, tuple))


def _result(model, image, cam_map, raw, weights, scores: Scores, target, method, layer, threshold,
            top_k, segmenter) -> Explanation:
    height, width = image.shape[:2]
    heatmap = upsample(cam_map, (height, width))
    logits, probs, own = scores.logits, scores.probs, scores.raw
    calibration = model.info.calibration
    # Ranked by (temperature-scaled) logit with a stable sort: on ties the first index wins, as in the compiled
    # argmax. Every head's probability rises with it, so this is also the order by probability (finer where it
    # saturates); one temperature keeps the model's own order, one per label ranks by calibrated probability.
    scaled = calibration.scale(logits) if calibration is not None else np.asarray(logits)
    order = np.argsort(-scaled, kind="stable")[:top_k]
    return Explanation(
        image=image,
        heatmap=heatmap,
        target_index=target,
        target_label=model.labels[target],
        probability=float(probs[target]),
        predictions=[Prediction(int(i), model.labels[i], float(probs[i]), float(own[i])) for i in order],
        probabilities=probs,
        raw_probabilities=own,
        calibration=calibration,
        ood=scores.ood[0],
        logits=np.asarray(logits, np.float32),
        method=method,
        layer=layer,
        region=localize(heatmap, threshold, image, segmenter, no_mask_reason(
            model.labels[target], float(probs[target]), model.info.head, model.info.decision_threshold)),
        cam=raw,
        channel_weights=weights,
        model_name=model.name,
        head=model.info.head,
        decision_threshold=model.info.decision_threshold,
        labels=model.labels,
    )


def upsample(cam_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a [0, 1] map to ``size`` = (height, width), peak kept at 1 (colourise after this)."""
    height, width = size
    heat = cv2.resize(np.asarray(cam_map, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(heat, 0.0, None)
    top = float(heat.max())
    return (heat / top if top > 0 else heat).astype(np.float32)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up chatter (CUDA probing, oneDNN notices): users see only our output."""
    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # absl ships with tensorflow; guard anyway
        pass

"""Loading models: files, built-in demo models, the ImageNet zoo, JSON sidecars and preprocessing.

A model's *description* (:class:`ModelInfo`) travels with it: its labels, how its input must be preprocessed and
sized, and optional reference statistics of its training data. It comes from a JSON sidecar next to the model file
(``model.keras`` + ``model.json``), from the zoo table, or from defaults read off the model itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from explainer.config import setting
from explainer.demo import MODEL_NAMES as DEMO_MODELS
from explainer.demo import model_path as demo_model_path
from explainer.errors import ModelError
from explainer.graph import find_head
from explainer.heads import DEFAULT_DECISION_THRESHOLD, HEADS
from explainer.inputs.images import load_image
from explainer.models import hub
from explainer.models.calibration import CALIBRATION_KEY, FEATURES_KEY, Calibration, FeatureReference

logger = logging.getLogger(__name__)

PREPROCESS_MODES = ("none", "unit", "symmetric", "caffe", "torch")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

_IMAGENET_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as Pillow's "L"
#: Preprocessing modes defined on RGB only (per-channel means of ImageNet).
_RGB_ONLY_MODES = ("caffe", "torch")
#: Environment variable: the model files the person running the tool trusts (paths joined by os.pathsep).
TRUSTED_MODELS_ENV = "EXPLAINER_TRUSTED_MODELS"


@dataclass
class ModelInfo:
    """What the engine and the chat need to know about a model besides its weights.

    Attributes
    ----------
    head : {"softmax", "sigmoid", "multilabel", "linear"}
        How the model's scores become probabilities (see :mod:`explainer.heads`): read off the last layer, or
        the sidecar's ``"head"``.
    head_note : str
        One sentence saying how the head was understood (e.g. that a linear head is read as softmax logits).
    decision_threshold : float
        For ``multilabel`` heads, the probability at or above which a label counts as present.
    channels : int
        1 (grayscale: images are converted to luminance first) or 3 (RGB).
    calibration : Calibration or None
        The sidecar's fitted temperature scaling and conformal quantile (``gradcam-chat calibrate``).
    features : FeatureReference or None
        The sidecar's penultimate-feature reference, for the out-of-distribution verdict.
    """

    name: str
    labels: list[str]
    preprocess: str
    input_size: tuple[int, int]  # (height, width)
    description: str = ""
    source: str = ""
    reference: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    head: str = "softmax"
    head_note: str = ""
    decision_threshold: float = DEFAULT_DECISION_THRESHOLD
    channels: int = 3
    calibration: Calibration | None = None
    features: FeatureReference | None = None


@dataclass
class LoadedModel:
    """A Keras model with its description, and the compiled functions the engine builds for it (lazily, once)."""

    keras_model: keras.Model
    info: ModelInfo
    _compiled: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key for this model (layer lists, vocabularies...), shared by all its users."""
        key = ("memo", key)
        if key not in self._compiled:
            value = compute()  # outside the lock: compute() may itself need the model's compiled functions
            with self._lock:
                self._compiled.setdefault(key, value)
        return self._compiled[key]

    def prepare(self, images: list[np.ndarray]) -> np.ndarray:
        """Resize (stretch, no crop) and preprocess RGB ``uint8`` images into one float32 model batch."""
        height, width = self.info.input_size
        batch = np.stack([resize(load_image(img), (height, width)) for img in images]).astype(np.float32)
        return self.preprocess(batch)

    def preprocess(self, batch: np.ndarray) -> np.ndarray:
        """Raw 0–255 RGB floats (N×H×W×3, already at the input size) → model inputs with the model's channels."""
        return preprocess(to_channels(batch, self.info.channels), self.info.preprocess)


def to_channels(batch: np.ndarray, channels: int) -> np.ndarray:
    """RGB (…×3) to what the model takes: unchanged for 3 channels, ITU-R BT.601 luminance (…×1) for 1.

    The weights are Pillow's "L" conversion (0.299 R + 0.587 G + 0.114 B), kept in float (no rounding).
    """
    batch = np.asarray(batch, np.float32)
    if channels == 3:
        return batch
    if channels == 1:
        return np.einsum("...c,c->...", batch, _LUMA)[..., None]
    raise ModelError(f"Models taking {channels} channels are not supported; they must take 1 (grey) or 3 (RGB).")


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image (or a float map) to ``size`` = (height, width): area averaging down, bilinear up."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] > height and image.shape[1] > width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def preprocess(batch: np.ndarray, mode: str) -> np.ndarray:
    """Map raw 0–255 RGB floats to what a model expects.

    Parameters
    ----------
    batch : numpy.ndarray
        Float array (..., channels) of values in [0, 255]: RGB, or one grey channel for ``none``, ``unit`` and
        ``symmetric``.
    mode : {"none", "unit", "symmetric", "caffe", "torch"}
        ``none`` keeps 0–255 (the model rescales itself), ``unit`` → [0, 1], ``symmetric`` → [-1, 1],
        ``caffe`` → BGR minus the ImageNet mean, ``torch`` → ImageNet mean/std on [0, 1] (both RGB only).
    """
    batch = np.asarray(batch, np.float32)
    if mode in _RGB_ONLY_MODES and batch.shape[-1] != 3:
        raise ModelError(_rgb_only_message(mode))
    if mode == "none":
        return batch
    if mode == "unit":
        return batch / 255.0
    if mode == "symmetric":
        return batch / 127.5 - 1.0
    if mode == "caffe":
        return batch[..., ::-1] - _IMAGENET_MEAN_BGR
    if mode == "torch":
        return (batch / 255.0 - _TORCH_MEAN) / _TORCH_STD
    raise ModelError(f"Unknown preprocessing {mode!r}; choose one of {', '.join(PREPROCESS_MODES)}.")


def _rgb_only_message(mode: str) -> str:
    return (f"The {mode!r} preprocessing subtracts ImageNet's per-colour means, so it needs a model taking RGB "
            "images; this model takes grey (1-channel) images. Use 'none', 'unit' or 'symmetric'.")


def load_model(
    spec: str | os.PathLike | keras.Model | None = None,
    labels: list[str] | str | os.PathLike | None = None,
    preprocess: str | None = None,
    trust: bool | None = None,
) -> LoadedModel:
    """Load a model to explain.

    Parameters
    ----------
    spec : str, path, keras.Model or None
        A ``.keras``/``.h5`` file, a built-in name (``shapes``, ``shapes-shortcut``, or an ImageNet model such as
        ``mobilenet_v2``), a Hugging Face model ``hf://owner/repo`` or a Keras Hub preset name (see
        :mod:`explainer.models.hub`), an in-memory Keras model, or ``None`` for the default model
        (see :func:`default_model`).
    labels : list of str or path, optional
        Class names, or a text file with one label a line. Overrides the sidecar.
    preprocess : str, optional
        One of :data:`PREPROCESS_MODES`. Overrides the sidecar and the automatic choice.
    trust : bool or None
        ``True`` loads a model *file* with Keras safe mode off, so ``Lambda`` layers (arbitrary Python code) load:
        only for files you wrote or otherwise trust. ``None`` (default) trusts exactly the files listed in
        ``EXPLAINER_TRUSTED_MODELS`` (see :func:`trusted_paths`). ``False`` never trusts, whatever the
        environment says: use it for files uploaded by others. Anything downloaded (``hf://``, Keras Hub presets)
        is always loaded in safe mode, whatever ``trust`` says.

    Raises
    ------
    ModelError
        For a missing or unreadable file, an unknown name, unsafe code in the file, or a model we cannot explain.
    """
    if spec is None:
        spec, _reason = default_model()
    if isinstance(spec, keras.Model):
        model, meta, source = spec, {}, spec.name
    else:
        model, meta, source = _load_spec(str(spec), trust)
    if preprocess is not None and preprocess not in PREPROCESS_MODES:
        raise ModelError(f"Unknown preprocessing {preprocess!r}; choose one of {', '.join(PREPROCESS_MODES)}.")
    info = _describe(model, meta, source, _read_labels(labels) if labels is not None else None, preprocess)
    return LoadedModel(model, info)


def default_model() -> tuple[str, str]:
    """The default model name and the reason it was chosen (shown to the user)."""
    from explainer.models import zoo

    return zoo.default_model_name()


def trusted_paths() -> set[Path]:
    """The model files named in ``EXPLAINER_TRUSTED_MODELS`` (``os.pathsep``-separated), resolved.

    The person running the tool lists their own files there; each is then loaded with Keras safe mode off (see
    :func:`load_model`). Compare with ``Path(p).expanduser().resolve()``.
    """
    return {path.resolve() for path in setting(TRUSTED_MODELS_ENV)}


def is_trusted(path: str | os.PathLike) -> bool:
    """Whether ``path`` (resolved: symlinks and ``..`` do not matter) is listed in ``EXPLAINER_TRUSTED_MODELS``."""
    return Path(path).expanduser().resolve() in trusted_paths()


def _load_spec(spec: str, trust: bool | None = None) -> tuple[keras.Model, dict, str]:
    name = spec.strip()
    if hub.is_hub_spec(name):  # downloaded: safe mode always, whatever `trust` says
        return hub.load(name, _open_downloaded)
    if name.lower() in DEMO_MODELS:
        path = demo_model_path(name.lower())
        return load_model_file(path), read_sidecar(path), name.lower()
    path = Path(name).expanduser()
    if path.suffix.lower() in MODEL_SUFFIXES or path.exists():
        trusted = is_trusted(path) if trust is None else trust
        return load_model_file(path, trust=trusted), read_sidecar(path), str(path)
    from explainer.models import zoo

    zoo_name = zoo.resolve_name(name)
    if zoo_name is None:
        if hub.is_preset(name):  # a Keras Hub preset name, from Kaggle
            return hub.load(name, _open_downloaded)
        known = ", ".join((*DEMO_MODELS, *zoo.ZOO))
        raise ModelError(f"Unknown model {name!r}. Give a .keras/.h5 file, hf://owner/repo, or one of: {known}.")
    try:
        model = zoo.build(zoo_name)
    except zoo.WeightsUnavailable as err:
        raise ModelError(str(err)) from err
    entry = zoo.ZOO[zoo_name]
    meta = {
        "labels": zoo.imagenet_labels(),
        "preprocess": entry.preprocess,
        "input_size": list(entry.input_size),
        "description": entry.description,
        "training": entry.reference,  # the published ImageNet accuracy of these weights
    }
    return model, meta, zoo_name


def _open_downloaded(path: Path) -> tuple[keras.Model, dict]:
    """A model file fetched from the Hub, never trusted, with its sidecar (see :mod:`explainer.models.hub`)."""
    return load_model_file(path, trust=False), read_sidecar(path)


def load_model_file(path: str | os.PathLike, trust: bool = False) -> keras.Model:
    """Load a ``.keras`` or ``.h5`` file (Keras 3, or legacy Keras 2 HDF5).

    In Keras safe mode unless ``trust``: a file that carries Python code (a ``Lambda`` layer) is then refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"There is no model file called {path.name!r}.")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"{path.name!r} is not a Keras model file (.keras or .h5).")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not trust)
    except ValueError as err:
        if not trust and ("Lambda" in str(err) or "safe_mode" in str(err)):
            raise ModelError(_code_refused_message(path.name)) from err
        raise _unreadable(path, err) from err
    except Exception as err:  # corrupt zip/HDF5, unknown custom layers, ...: all mean "cannot load this file"
        raise _unreadable(path, err) from err
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path.name!r} holds weights only, not a whole model.")
    return model


def _code_refused_message(name: str) -> str:
    return (
        f"{name!r} contains Python code (a Lambda layer). It is not loaded by default because a Lambda layer runs "
        "arbitrary Python code on this computer as the model loads, and a model file can come from anyone. "
        "If this is your own file and you trust it, opt in for that file only: --trust-model on the command "
        "line, load_model(..., trust=True) in Python, or list the file in the EXPLAINER_TRUSTED_MODELS "
        "environment variable for the app. Or replace the Lambda with a built-in layer and save the model again."
    )


def _unreadable(path: Path, err: Exception) -> ModelError:
    """A plain refusal; Keras's own text (which names server paths and modules) goes to the log only."""
    logger.info("model file %r could not be loaded: %s: %s", path.name, type(err).__name__, err)
    hint = ""
    if "Unknown layer" in str(err) or "Could not locate class" in str(err):
        hint = " It uses a custom layer class that is not part of Keras; save the model with built-in layers."
    return ModelError(f"{path.name!r} could not be read as a Keras model: the file is damaged, is not a model, or "
                      f"was saved by an incompatible version of Keras.{hint}")


def read_sidecar(model_path: str | os.PathLike) -> dict:
    """The JSON description next to a model file (same stem, ``.json``), or ``{}`` when there is none."""
    path = Path(model_path).with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"The sidecar {path.name!r} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ModelError(f"The sidecar {path.name!r} must hold a JSON object.")
    return meta


def write_sidecar(model_path: str | os.PathLike, updates: dict) -> list[str]:
    """Merge ``updates`` into the sidecar of ``model_path`` (created when missing); other fields are kept.

    Returns the keys that already held a value and were replaced. Lists of numbers are written on one line each,
    so a matrix costs its numbers, not a line per number.

    Raises
    ------
    ModelError
        When the existing sidecar is unreadable or the file cannot be written.
    """
    path = Path(model_path).with_suffix(".json")
    meta = read_sidecar(model_path)
    replaced = [key for key in updates if key in meta]
    try:
        path.write_text(dump_sidecar(meta | updates), encoding="utf-8")
    except OSError as err:
        raise ModelError(f"Cannot write the sidecar {path.name!r}: {err.strerror or err}.") from err
    return replaced


def dump_sidecar(meta: dict) -> str:
    """``meta`` as indented JSON, with each innermost list of numbers on one line."""
    text = json.dumps(meta, indent=2)
    return re.sub(r"\[[-+0-9.eE,\s]*\]", lambda m: re.sub(r"\s+", "", m.group()).replace(",", ", "), text) + "\n"


def _read_labels(labels: list[str] | str | os.PathLike) -> list[str]:
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ModelError(f"Cannot read the labels file {path.name!r}: {err}") from err
        return [line.strip() for line in text.splitlines() if line.strip()]
    return [str(label) for label in labels]


def _check_interface(model: keras.Model) -> None:
    """One image in, one score per class out: anything else gets a plain refusal before it can fail deep inside."""
    inputs, outputs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    if len(inputs) != 1:
        raise ModelError(f"This model takes {len(inputs)} inputs; Grad-CAM Chat explains models that take one image.")
    if len(outputs) != 1:
        raise ModelError(f"This model has {len(outputs)} outputs; Grad-CAM Chat explains classifiers with one "
                         "output of class scores.")
    shape = tuple(outputs[0].shape)
    if len(shape) != 2:
        raise ModelError(f"This model's output has shape {shape}; a classifier ends in one score per class, "
                         "(batch, classes). Models that output maps (segmentation, detection) are not supported.")


def _describe(model: keras.Model, meta: dict, source: str, labels, preprocess_mode) -> ModelInfo:
    _check_interface(model)
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    channels = _channels(shape, meta.get("channels"))
    input_size = tuple(meta.get("input_size") or (shape[1] or 224, shape[2] or 224))
    n_classes = _n_classes(model)
    labels = labels or meta.get("labels") or [f"class {i}" for i in range(n_classes)]
    if len(labels) != n_classes:
        raise ModelError(f"The model has {n_classes} classes but {len(labels)} labels were given.")
    mode = preprocess_mode or meta.get("preprocess") or _guess_preprocess(model)
    if mode not in PREPROCESS_MODES:
        raise ModelError(f"Unknown preprocessing {mode!r}; choose one of {', '.join(PREPROCESS_MODES)}.")
    if channels == 1 and mode in _RGB_ONLY_MODES:
        raise ModelError(_rgb_only_message(mode))
    head = _head(model, meta.get("head"))
    threshold = _decision_threshold(meta.get("decision_threshold", DEFAULT_DECISION_THRESHOLD))
    return ModelInfo(
        name=meta.get("name") or Path(source).stem or model.name,
        labels=list(labels),
        preprocess=mode,
        input_size=(int(input_size[0]), int(input_size[1])),
        description=meta.get("description", ""),
        source=source,
        reference=meta.get("reference"),
        training=meta.get("training"),
        head=head,
        head_note=_head_note(head, find_head(model).kind, n_classes, threshold),
        decision_threshold=threshold,
        channels=channels,
        calibration=Calibration.from_dict(meta[CALIBRATION_KEY], n_classes) if meta.get(CALIBRATION_KEY) else None,
        features=FeatureReference.from_dict(meta[FEATURES_KEY]) if meta.get(FEATURES_KEY) else None,
    )


def _channels(shape: tuple | None, stated) -> int:
    """1 or 3, from the model's input shape (batch, height, width, channels) and the sidecar's ``"channels"``."""
    if shape is None or len(shape) != 4:
        raise ModelError(f"Expected a model taking images (batch, height, width, channels); this one takes {shape}.")
    if stated is not None and stated not in (1, 3):
        raise ModelError(f"The sidecar's \"channels\" must be 1 (grey) or 3 (RGB), not {stated!r}.")
    if shape[-1] is not None and stated is not None and int(shape[-1]) != stated:
        raise ModelError(f"The sidecar says the model takes {stated} channels, but its input is {shape}.")
    channels = int(shape[-1]) if shape[-1] is not None else int(stated or 3)
    if channels not in (1, 3):
        raise ModelError(f"Expected a model taking grey (1-channel) or RGB (3-channel) images; this one takes "
                         f"{shape}, with {channels} channels.")
    return channels


#: Heads a sidecar may declare, by the head read off the model: it may clarify, not contradict.
_HEAD_OVERRIDES = {
    "softmax": ("softmax", "linear"),
    "sigmoid": ("sigmoid",),
    "multilabel": ("multilabel",),
    "linear": ("linear", "softmax", "multilabel"),
}


def _head(model: keras.Model, stated) -> str:
    """The head detected from the last layer, or the sidecar's ``"head"`` when it is compatible."""
    found = find_head(model)
    if found.kind == "softmax" and found.units == 1:
        raise ModelError("The model ends in a softmax over a single unit, which always outputs 1 whatever the "
                         "image: it cannot tell anything apart. A one-unit classifier needs a sigmoid.")
    detected = found.name
    if stated is None:
        return detected
    if stated not in HEADS:
        raise ModelError(f"The sidecar's \"head\" must be one of {', '.join(HEADS)}, not {stated!r}.")
    if stated not in _HEAD_OVERRIDES[detected]:
        raise ModelError(f"The sidecar says the head is {stated!r}, but the model's last layer is a {detected} "
                         f"head with {found.units} output(s); it can only be read as "
                         f"{' or '.join(_HEAD_OVERRIDES[detected])}.")
    return stated


def _decision_threshold(value) -> float:
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 < threshold < 1.0:
        raise ModelError(f"The sidecar's \"decision_threshold\" must be a probability between 0 and 1, "
                         f"not {value!r}.")
    return threshold


def _head_note(head: str, activation: str, n_classes: int, threshold: float) -> str:
    """One sentence on how the head is read (shown with the model's description)."""
    if head == "multilabel":
        return (f"Multi-label: each of the {n_classes} labels has its own probability (a sigmoid); a label counts "
                f"as present from {threshold:.0%}.")
    if head == "sigmoid":
        unit = "one sigmoid unit" if activation == "sigmoid" else "one output without activation, read as a logit"
        return f"Two classes from {unit}: the probability of the second, and one minus it for the first."
    if head == "linear" or activation == "logits":
        return (f"Its {n_classes} outputs have no activation; they are read as the logits of a softmax "
                "(one class per image). If each output is a separate yes/no label, say \"head\": \"multilabel\" "
                "in the sidecar.")
    return f"One class per image: a softmax over {n_classes} classes."


def _n_classes(model: keras.Model) -> int:
    units = int(model.outputs[0].shape[-1])
    return 2 if units == 1 else units  # one sigmoid unit: two classes, "not X" and "X"


def _guess_preprocess(model: keras.Model) -> str:
    """``none`` when the model (or the nested model it starts with) rescales its own input, else ``unit``."""
    layer = model
    while isinstance(layer, keras.Model):
        first = [item for item in layer.layers if not isinstance(item, keras.layers.InputLayer)]
        if not first:
            break
        layer = first[0]
    own_scaling = (keras.layers.Rescaling, keras.layers.Normalization)
    return "none" if isinstance(layer, own_scaling) else "unit"

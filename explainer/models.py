"""Loading models: files, built-in demo models, the ImageNet zoo, JSON sidecars and preprocessing.

A model's *description* (:class:`ModelInfo`) travels with it: its labels, how its input must be preprocessed and
sized, and optional reference statistics of its training data. It comes from a JSON sidecar next to the model file
(``model.keras`` + ``model.json``), from the zoo table, or from defaults read off the model itself.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from .demo import MODEL_NAMES as DEMO_MODELS
from .demo import model_path as demo_model_path
from .errors import ModelError
from .images import load_image

PREPROCESS_MODES = ("none", "unit", "symmetric", "caffe", "torch")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

_IMAGENET_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class ModelInfo:
    """What the engine and the chat need to know about a model besides its weights."""

    name: str
    labels: list[str]
    preprocess: str
    input_size: tuple[int, int]  # (height, width)
    description: str = ""
    source: str = ""
    reference: dict[str, Any] | None = None
    training: dict[str, Any] | None = None


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
        return preprocess(batch, self.info.preprocess)


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
        Float array (..., 3) of RGB values in [0, 255].
    mode : {"none", "unit", "symmetric", "caffe", "torch"}
        ``none`` keeps 0–255 (the model rescales itself), ``unit`` → [0, 1], ``symmetric`` → [-1, 1],
        ``caffe`` → BGR minus the ImageNet mean, ``torch`` → ImageNet mean/std on [0, 1].
    """
    batch = np.asarray(batch, np.float32)
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


def load_model(
    spec: str | os.PathLike | keras.Model | None = None,
    labels: list[str] | str | os.PathLike | None = None,
    preprocess: str | None = None,
) -> LoadedModel:
    """Load a model to explain.

    Parameters
    ----------
    spec : str, path, keras.Model or None
        A ``.keras``/``.h5`` file, a built-in name (``shapes``, ``shapes-shortcut``, or an ImageNet model such as
        ``mobilenet_v2``), an in-memory Keras model, or ``None`` for the default model
        (see :func:`default_model`).
    labels : list of str or path, optional
        Class names, or a text file with one label a line. Overrides the sidecar.
    preprocess : str, optional
        One of :data:`PREPROCESS_MODES`. Overrides the sidecar and the automatic choice.

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
        model, meta, source = _load_spec(str(spec))
    if preprocess is not None and preprocess not in PREPROCESS_MODES:
        raise ModelError(f"Unknown preprocessing {preprocess!r}; choose one of {', '.join(PREPROCESS_MODES)}.")
    info = _describe(model, meta, source, _read_labels(labels) if labels is not None else None, preprocess)
    return LoadedModel(model, info)


def default_model() -> tuple[str, str]:
    """The default model name and the reason it was chosen (shown to the user)."""
    from . import zoo

    return zoo.default_model_name()


def _load_spec(spec: str) -> tuple[keras.Model, dict, str]:
    name = spec.strip()
    if name.lower() in DEMO_MODELS:
        path = demo_model_path(name.lower())
        return load_model_file(path), read_sidecar(path), name.lower()
    path = Path(name).expanduser()
    if path.suffix.lower() in MODEL_SUFFIXES or path.exists():
        return load_model_file(path), read_sidecar(path), str(path)
    from . import zoo

    zoo_name = zoo.resolve_name(name)
    if zoo_name is None:
        known = ", ".join((*DEMO_MODELS, *zoo.ZOO))
        raise ModelError(f"Unknown model {name!r}. Give a .keras/.h5 file or one of: {known}.")
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


def load_model_file(path: str | os.PathLike) -> keras.Model:
    """Load a ``.keras`` or ``.h5`` file in Keras safe mode: a file that carries Python code is refused."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"No model file at {path}.")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"{path.name!r} is not a Keras model file (.keras or .h5).")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as err:
        if "Lambda" in str(err) or "safe_mode" in str(err):
            raise ModelError(
                f"{path.name!r} contains Python code (a Lambda layer), which is refused for safety. "
                "Replace the Lambda with a built-in or registered layer and save the model again."
            ) from err
        raise ModelError(f"{path.name!r} could not be loaded: {_first_line(err)}") from err
    except Exception as err:  # corrupt zip/HDF5, unknown custom layers, ...: all mean "cannot load this file"
        raise ModelError(f"{path.name!r} could not be loaded as a Keras model: {_first_line(err)}") from err
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path.name!r} holds weights only, not a whole model.")
    return model


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


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


def _read_labels(labels: list[str] | str | os.PathLike) -> list[str]:
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ModelError(f"Cannot read the labels file {path.name!r}: {err}") from err
        return [line.strip() for line in text.splitlines() if line.strip()]
    return [str(label) for label in labels]


def _describe(model: keras.Model, meta: dict, source: str, labels, preprocess_mode) -> ModelInfo:
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise ModelError(f"Expected a model taking RGB images (batch, height, width, 3); this one takes {shape}.")
    input_size = tuple(meta.get("input_size") or (shape[1] or 224, shape[2] or 224))
    n_classes = _n_classes(model)
    labels = labels or meta.get("labels") or [f"class {i}" for i in range(n_classes)]
    if len(labels) != n_classes:
        raise ModelError(f"The model has {n_classes} classes but {len(labels)} labels were given.")
    mode = preprocess_mode or meta.get("preprocess") or _guess_preprocess(model)
    if mode not in PREPROCESS_MODES:
        raise ModelError(f"Unknown preprocessing {mode!r}; choose one of {', '.join(PREPROCESS_MODES)}.")
    return ModelInfo(
        name=meta.get("name") or Path(source).stem or model.name,
        labels=list(labels),
        preprocess=mode,
        input_size=(int(input_size[0]), int(input_size[1])),
        description=meta.get("description", ""),
        source=source,
        reference=meta.get("reference"),
        training=meta.get("training"),
    )


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

"""The ImageNet zoo: ``keras.applications`` classifiers by name, in one table, and :func:`build`.

Keras does the weights: ``keras.applications.X(weights="imagenet")`` looks for the file in its cache
(``$KERAS_HOME/models``, default ``~/.keras/models``), checks its hash when Keras knows one, and downloads it when it
is missing. This module only decides, by looking for the file (no network), whether a model's weights are cached, and
whether a download may be tried at all (not with ``EXPLAINER_OFFLINE=1``): so start-up never waits for the network,
and a download happens only when :func:`build` is asked for the weights. When they cannot be had,
:class:`WeightsUnavailable` names the file and the folder to put it in.

The 1,000 class names come from ``explainer/models/data/imagenet_labels.txt`` (see the README there).
"""

from __future__ import annotations

import functools
import logging
import os
import pathlib
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import keras

from explainer.config import setting

logger = logging.getLogger(__name__)

DEFAULT_ZOO_MODEL = "mobilenet_v2"
FALLBACK_MODEL = "shapes"
LABELS_FILE = pathlib.Path(__file__).with_name("data") / "imagenet_labels.txt"

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_TOP1_SOURCE = "Keras Applications documentation (ImageNet-1k validation, single centre crop)"


@dataclass(frozen=True)
class ZooEntry:
    """One ImageNet classifier of ``keras.applications`` (1,000 classes, softmax output).

    ``preprocess`` is the input convention in the project's vocabulary (none, unit, symmetric, caffe, torch) that
    equals ``keras.applications.<keras_module>.preprocess_input``. ``weights_file`` is the name Keras caches the
    ImageNet weights under in ``<keras home>/models``, ``origin`` where Keras downloads them from (both are checked
    against Keras's own request by the tests).
    """

    name: str
    builder: Callable[..., keras.Model]
    input_size: tuple[int, int]
    preprocess: str
    weights_file: str
    description: str
    display_name: str
    keras_module: str
    origin: str
    paper: str
    top1_accuracy: float

    @property
    def reference(self) -> dict:
        """Published ImageNet accuracy of these weights, for ``ModelInfo.reference``."""
        return {
            "dataset": "ImageNet-1k validation",
            "top1_accuracy": self.top1_accuracy,
            "source": _TOP1_SOURCE,
            "paper": self.paper,
        }


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        ZooEntry(
            name="mobilenet_v2",
            builder=keras.applications.MobileNetV2,
            input_size=(224, 224),
            preprocess="symmetric",
            weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
            description="MobileNetV2 (ImageNet, 1,000 classes): small and fast, 3.5 M parameters.",
            display_name="MobileNetV2",
            keras_module="mobilenet_v2",
            origin=_KERAS_APPS + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
            paper="Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, 2018",
            top1_accuracy=0.713,
        ),
        ZooEntry(
            name="efficientnet_b0",
            builder=keras.applications.EfficientNetB0,
            input_size=(224, 224),
            preprocess="none",
            weights_file="efficientnetb0.h5",
            description="EfficientNet-B0 (ImageNet, 1,000 classes): accurate for its size, 5.3 M parameters.",
            display_name="EfficientNetB0",
            keras_module="efficientnet",
            origin="https://storage.googleapis.com/keras-applications/efficientnetb0.h5",
            paper="Tan and Le, EfficientNet: Rethinking Model Scaling for CNNs, 2019",
            top1_accuracy=0.771,
        ),
        ZooEntry(
            name="resnet50",
            builder=keras.applications.ResNet50,
            input_size=(224, 224),
            preprocess="caffe",
            weights_file="resnet50_weights_tf_dim_ordering_tf_kernels.h5",
            description="ResNet-50 (ImageNet, 1,000 classes): the classic residual network, 25.6 M parameters.",
            display_name="ResNet50",
            keras_module="resnet50",
            origin=_KERAS_APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
            paper="He et al., Deep Residual Learning for Image Recognition, 2016",
            top1_accuracy=0.749,
        ),
        ZooEntry(
            name="xception",
            builder=keras.applications.Xception,
            input_size=(299, 299),
            preprocess="symmetric",
            weights_file="xception_weights_tf_dim_ordering_tf_kernels.h5",
            description="Xception (ImageNet, 1,000 classes): separable convolutions at 299×299, 22.9 M parameters.",
            display_name="Xception",
            keras_module="xception",
            origin=_KERAS_APPS + "xception/xception_weights_tf_dim_ordering_tf_kernels.h5",
            paper="Chollet, Xception: Deep Learning with Depthwise Separable Convolutions, 2017",
            top1_accuracy=0.790,
        ),
        ZooEntry(
            name="vgg16",
            builder=keras.applications.VGG16,
            input_size=(224, 224),
            preprocess="caffe",
            weights_file="vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            description="VGG16 (ImageNet, 1,000 classes): the network of the Grad-CAM paper, "
            "138 M parameters (528 MB of weights).",
            display_name="VGG16",
            keras_module="vgg16",
            origin=_KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            paper="Simonyan and Zisserman, Very Deep Convolutional Networks, 2015",
            top1_accuracy=0.713,
        ),
        ZooEntry(
            name="densenet121",
            builder=keras.applications.DenseNet121,
            input_size=(224, 224),
            preprocess="torch",
            weights_file="densenet121_weights_tf_dim_ordering_tf_kernels.h5",
            description="DenseNet-121 (ImageNet, 1,000 classes): densely connected blocks, 8.1 M parameters.",
            display_name="DenseNet121",
            keras_module="densenet",
            origin=_KERAS_APPS + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels.h5",
            paper="Huang et al., Densely Connected Convolutional Networks, 2017",
            top1_accuracy=0.750,
        ),
        ZooEntry(
            name="convnext_tiny",
            builder=keras.applications.ConvNeXtTiny,
            input_size=(224, 224),
            preprocess="none",
            weights_file="convnext_tiny.h5",
            description="ConvNeXt-Tiny (ImageNet, 1,000 classes): a modern CNN, 28.6 M parameters.",
            display_name="ConvNeXtTiny",
            keras_module="convnext",
            origin=_KERAS_APPS + "convnext/convnext_tiny.h5",
            paper="Liu et al., A ConvNet for the 2020s, 2022",
            top1_accuracy=0.813,
        ),
    )
}


class WeightsUnavailable(RuntimeError):
    """ImageNet weights are not in the Keras cache and could not be downloaded, or cannot be loaded.

    ``path`` is where Keras looks for the file, ``origin`` where Keras downloads it from.
    """

    def __init__(self, message: str, path: pathlib.Path, origin: str) -> None:
        super().__init__(message)
        self.path = path
        self.origin = origin


# --- names ------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


_ALIASES = {_squash(name): name for name in ZOO} | {_squash(entry.display_name): name for name, entry in ZOO.items()}


def resolve_name(spec: object) -> str | None:
    """Map a user's spelling of a zoo model to its registry name.

    Parameters
    ----------
    spec : object
        Any spelling: "MobileNetV2", "mobilenet-v2", "mobilenetv2", " MOBILENET_V2 ".

    Returns
    -------
    str or None
        The key in :data:`ZOO`, or None when ``spec`` is not a string naming a zoo model.
    """
    if not isinstance(spec, str):
        return None
    return _ALIASES.get(_squash(spec))


def _lookup(name: str) -> ZooEntry:
    resolved = resolve_name(name)
    if resolved is None:
        raise ValueError(f"{name!r} is not an ImageNet zoo model; choose one of {sorted(ZOO)}")
    return ZOO[resolved]


# --- where Keras caches the weights (a path check, no network) ------------------------------


def keras_home(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """Keras's home folder by Keras's rule: ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` when ``~`` is
    read-only).

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default ``os.environ``). Keras reads it once, at import. An empty ``KERAS_HOME``
        counts as unset.

    Returns
    -------
    pathlib.Path
    """
    home = setting("KERAS_HOME", environ)
    if home is not None:
        return pathlib.Path(home).expanduser()
    user_home = os.path.expanduser("~")
    return pathlib.Path(user_home if os.access(user_home, os.W_OK) else "/tmp") / ".keras"


def cached_weights_path(name: str, home: str | os.PathLike | None = None) -> pathlib.Path:
    """Where ``keras.utils.get_file`` keeps (or would put) a zoo model's ImageNet weights.

    Parameters
    ----------
    name : str
        A zoo model name, any spelling :func:`resolve_name` accepts.
    home : path, optional
        Keras's home folder (default :func:`keras_home`). Like ``get_file``, a home that cannot be written is
        replaced by ``/tmp/.keras``.

    Returns
    -------
    pathlib.Path
        ``<home>/models/<weights file>``.
    """
    base = pathlib.Path(home if home is not None else keras_home()).expanduser()
    if not os.access(base, os.W_OK):
        base = pathlib.Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"
    return base / "models" / _lookup(name).weights_file


def cache_folder_label(path: pathlib.Path) -> str:
    """The cache folder of ``path`` as its owner knows it ("~/.keras/models", "$KERAS_HOME/models"), never a full
    server path when it is the usual place."""
    if path.parent == keras_home() / "models":
        return "$KERAS_HOME/models" if setting("KERAS_HOME") is not None else "~/.keras/models"
    return str(path.parent)


def is_cached(name: str) -> bool:
    """Whether the Keras cache holds a zoo model's weights file (a path check; the file is not read)."""
    return cached_weights_path(name).is_file()


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """Whether a missing weights file may be downloaded: not when ``allow_download`` is False or
    ``EXPLAINER_OFFLINE`` is on (1, true, yes or on)."""
    return allow_download is not False and not setting("EXPLAINER_OFFLINE")


def weights_available(name: str, allow_download: bool | None = None) -> tuple[bool, str]:
    """Whether :func:`build` may get a zoo model's ImageNet weights, decided without the network.

    Parameters
    ----------
    name : str
        A zoo model name, any spelling :func:`resolve_name` accepts.
    allow_download : bool or None
        False: the cache only. None or True: a missing file counts when :func:`downloads_allowed`.

    Returns
    -------
    (bool, str)
        Whether the weights can be asked for, and how: "cached", "download" (tried on first use; it may still
        fail) or "offline".
    """
    if is_cached(name):
        return True, "cached"
    if downloads_allowed(allow_download):
        return True, "download"
    return False, "offline"


# --- building -----------------------------------------------------------------------------


def _unavailable(entry: ZooEntry, why: str) -> WeightsUnavailable:
    path = cached_weights_path(entry.name)
    text = (
        f"The ImageNet weights of {entry.display_name} ({entry.weights_file}) are not available: {why}. "
        f"Put the file {entry.weights_file} in {cache_folder_label(path)} (Keras's cache: $KERAS_HOME/models, "
        f"default ~/.keras/models); it can be downloaded from {entry.origin}, for example on a machine with network."
    )
    return WeightsUnavailable(text, path, entry.origin)


def build(name: str, weights: str | os.PathLike = "imagenet", allow_download: bool | None = None) -> keras.Model:
    """Build a zoo model with its ImageNet weights.

    Parameters
    ----------
    name : str
        A zoo model name, any spelling :func:`resolve_name` accepts.
    weights : "imagenet" or path
        "imagenet": Keras's cached file, downloaded by Keras when missing and :func:`downloads_allowed`. A path: a
        weights file for ``keras.applications.X(weights=path)`` (for EfficientNet, Keras then builds the variant
        without the extra input rescaling of its "imagenet" weights).
    allow_download : bool or None
        As in :func:`weights_available`.

    Returns
    -------
    keras.Model
        The ``keras.applications`` model, softmax output over the 1,000 ImageNet classes.

    Raises
    ------
    WeightsUnavailable
        The file is not cached and downloads are off, the download failed, or the file cannot be loaded; the
        message names the file and the folder to put it in.
    """
    entry = _lookup(name)
    if weights != "imagenet":
        return _keras_build(entry, os.fspath(weights), "the file given cannot be loaded")
    if is_cached(entry.name):
        return _keras_build(entry, "imagenet", "the cached file cannot be loaded (delete it)")
    if not downloads_allowed(allow_download):
        switch = "EXPLAINER_OFFLINE is set" if allow_download is not False else "allow_download=False"
        raise _unavailable(entry, f"the file is not in the Keras cache and downloads are off ({switch})")
    return _keras_build(entry, "imagenet", "the file is not in the Keras cache and the download failed")


def _keras_build(entry: ZooEntry, weights: str, why: str) -> keras.Model:
    try:
        return entry.builder(weights=weights)
    # Keras raises a bare Exception when a download fails, ValueError on a wrong hash or layer mismatch, and h5py
    # raises OSError on a truncated file; all mean the same to the caller.
    except Exception as error:
        raise _unavailable(entry, why) from error


# --- labels and the default ---------------------------------------------------------------


@functools.cache
def _labels() -> tuple[str, ...]:
    labels = tuple(LABELS_FILE.read_text(encoding="utf-8").splitlines())
    if len(labels) != 1000:
        raise RuntimeError(f"{LABELS_FILE} must hold 1000 class names, not {len(labels)}")
    return labels


def imagenet_labels() -> list[str]:
    """The 1,000 human-readable ImageNet class names in model output order.

    Returns
    -------
    list of str
        A fresh list (index 281 is "tabby cat"), read once from the file shipped in the repo.
    """
    return list(_labels())


#: Why a model is the default, as the page says it to visitors: plain words, no file, folder or variable names
#: (those go to the operator's log, :data:`_OFFLINE_LOG`).
_DEFAULT_REASONS: dict[str, str] = {
    "chosen": "{name} is the default: chosen by whoever runs this server.",
    "cached": "{model} (ImageNet) is the default: its trained weights are on this server.",
    "download": "{model} (ImageNet) is the default: its trained weights are fetched the first time it is used.",
    "offline": (
        "The bundled {fallback} model is the default: {model}'s ImageNet weights are not on this server, and it "
        "does not download them."
    ),
}
#: What the operator's log says when the ImageNet default is missing: which file to put where.
_OFFLINE_LOG = ("serving the bundled %s model: %s's ImageNet weights (%s) are not in the Keras cache (%s) and "
                "downloads are off (EXPLAINER_OFFLINE)")


def default_model_name() -> tuple[str, str]:
    """The model the app starts with, and why, in a sentence the UI can show (no network is touched).

    Returns
    -------
    (str, str)
        ``$EXPLAINER_MODEL`` when set; else "mobilenet_v2" when its ImageNet weights are cached or may be
        downloaded; else :data:`FALLBACK_MODEL`, the bundled demo model.
    """
    chosen = setting("EXPLAINER_MODEL")
    if chosen:
        return chosen, _DEFAULT_REASONS["chosen"].format(name=chosen)
    entry = ZOO[DEFAULT_ZOO_MODEL]
    available, how = weights_available(DEFAULT_ZOO_MODEL)
    if available:
        return DEFAULT_ZOO_MODEL, _DEFAULT_REASONS[how].format(model=entry.display_name)
    folder = cache_folder_label(cached_weights_path(DEFAULT_ZOO_MODEL))
    logger.warning(_OFFLINE_LOG, FALLBACK_MODEL, entry.display_name, entry.weights_file, folder)
    return FALLBACK_MODEL, _DEFAULT_REASONS["offline"].format(fallback=FALLBACK_MODEL, model=entry.display_name)

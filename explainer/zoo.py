"""The ImageNet zoo: ``keras.applications`` classifiers by name, and their weights cache.

Weights go through Keras's own cache (``$KERAS_HOME/models`` or ``~/.keras/models``), under the
exact file name Keras asks for, so a cache filled by any Keras program is reused. Nothing is
fetched unless the cache lacks the file and the download host answers; when neither works,
:func:`build` raises :class:`WeightsUnavailable` saying which file to place where.

Why :func:`build` serves the file itself instead of letting Keras do it: Keras checks the hash
of a cached file and, on a mismatch (a partial download, or the random-weights file the tests
place), tries to download it again; offline that download fails and Keras deletes the file.
So while the application is built, ``keras.src.utils.file_utils.get_file`` is replaced by
:func:`_cached_get_file`, which returns a cached file as it is and downloads a missing one with
a timeout and the official hash check. The model itself is still built by Keras with
``weights="imagenet"`` (EfficientNet's architecture depends on that argument).

The 1,000 class names come from ``explainer/data/imagenet_labels.txt`` (see the README there).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import pathlib
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras
from keras.src.utils import file_utils

logger = logging.getLogger(__name__)

DEFAULT_ZOO_MODEL = "mobilenet_v2"
FALLBACK_MODEL = "shapes"
LABELS_FILE = pathlib.Path(__file__).with_name("data") / "imagenet_labels.txt"
PROBE_TIMEOUT_S = 2.0  # a reachability check must never stall the app
DOWNLOAD_TIMEOUT_S = 20.0  # per socket operation, not for the whole file
PROBE_CACHE_S = 60.0

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_TOP1_SOURCE = "Keras Applications documentation (ImageNet-1k validation, single centre crop)"


@dataclass(frozen=True)
class ZooEntry:
    """One ImageNet classifier of ``keras.applications`` (1,000 classes, softmax output).

    ``preprocess`` is the input convention in the project's vocabulary (none, unit, symmetric,
    caffe, torch) that equals ``keras.applications.<keras_module>.preprocess_input``.
    ``weights_file`` is the name Keras caches it under in ``<keras home>/models``; ``origin`` and
    ``file_hash`` are where Keras downloads it from and the hash Keras checks (None: no check).
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
    file_hash: str | None
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
            origin=_KERAS_APPS
            + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
            file_hash=None,
            paper="Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, 2018",
            top1_accuracy=0.713,
        ),
        ZooEntry(
            name="efficientnet_b0",
            builder=keras.applications.EfficientNetB0,
            input_size=(224, 224),
            preprocess="none",
            weights_file="efficientnetb0.h5",
            description="EfficientNet-B0 (ImageNet, 1,000 classes): accurate for its size, 5.3 M "
            "parameters.",
            display_name="EfficientNetB0",
            keras_module="efficientnet",
            origin="https://storage.googleapis.com/keras-applications/efficientnetb0.h5",
            file_hash="902e53a9f72be733fc0bcb005b3ebbac",
            paper="Tan and Le, EfficientNet: Rethinking Model Scaling for CNNs, 2019",
            top1_accuracy=0.771,
        ),
        ZooEntry(
            name="resnet50",
            builder=keras.applications.ResNet50,
            input_size=(224, 224),
            preprocess="caffe",
            weights_file="resnet50_weights_tf_dim_ordering_tf_kernels.h5",
            description="ResNet-50 (ImageNet, 1,000 classes): the classic residual network, "
            "25.6 M parameters.",
            display_name="ResNet50",
            keras_module="resnet50",
            origin=_KERAS_APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
            file_hash="2cb95161c43110f7111970584f804107",
            paper="He et al., Deep Residual Learning for Image Recognition, 2016",
            top1_accuracy=0.749,
        ),
        ZooEntry(
            name="xception",
            builder=keras.applications.Xception,
            input_size=(299, 299),
            preprocess="symmetric",
            weights_file="xception_weights_tf_dim_ordering_tf_kernels.h5",
            description="Xception (ImageNet, 1,000 classes): separable convolutions at 299×299, "
            "22.9 M parameters.",
            display_name="Xception",
            keras_module="xception",
            origin=_KERAS_APPS + "xception/xception_weights_tf_dim_ordering_tf_kernels.h5",
            file_hash="0a58e3b7378bc2990ea3b43d5981f1f6",
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
            file_hash="64373286793e3c8b2b4e3219cbf3544b",
            paper="Simonyan and Zisserman, Very Deep Convolutional Networks, 2015",
            top1_accuracy=0.713,
        ),
        ZooEntry(
            name="densenet121",
            builder=keras.applications.DenseNet121,
            input_size=(224, 224),
            preprocess="torch",
            weights_file="densenet121_weights_tf_dim_ordering_tf_kernels.h5",
            description="DenseNet-121 (ImageNet, 1,000 classes): densely connected blocks, "
            "8.1 M parameters.",
            display_name="DenseNet121",
            keras_module="densenet",
            origin=_KERAS_APPS + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels.h5",
            file_hash="9d60b8095a5708f2dcce2bca79d332c7",
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
            file_hash="8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff",
            paper="Liu et al., A ConvNet for the 2020s, 2022",
            top1_accuracy=0.813,
        ),
    )
}


class WeightsUnavailable(RuntimeError):
    """ImageNet weights are neither in the Keras cache nor downloadable.

    ``path`` is where the file must be placed, ``origin`` where Keras downloads it from.
    """

    def __init__(self, message: str, path: pathlib.Path, origin: str) -> None:
        super().__init__(message)
        self.path = path
        self.origin = origin


# --- names ------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


_ALIASES = {_squash(name): name for name in ZOO} | {
    _squash(entry.display_name): name for name, entry in ZOO.items()
}


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


# --- the Keras cache ----------------------------------------------------------------------


def _writable(folder: pathlib.Path) -> bool:
    """Whether ``folder`` can be written, or created under its nearest existing parent."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def _keras_home() -> pathlib.Path:
    """Keras's home folder, read now (Keras itself reads ``KERAS_HOME`` once, at import)."""
    if "KERAS_HOME" in os.environ:
        return pathlib.Path(os.environ["KERAS_HOME"]).expanduser()
    user_home = os.path.expanduser("~")
    if not os.access(user_home, os.W_OK):
        user_home = "/tmp"
    return pathlib.Path(user_home) / ".keras"


def _cache_file(file_name: str) -> pathlib.Path:
    """Where the Keras cache keeps ``file_name``: the home's ``models/``, or like Keras's
    ``get_file`` ``<tmp>/.keras/models`` when the home cannot be written and lacks the file."""
    path = _keras_home() / "models" / file_name
    if path.exists() or _writable(path.parent):
        return path
    tmp = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return pathlib.Path(tmp) / ".keras" / "models" / file_name


def weights_path(name: str) -> pathlib.Path:
    """Where the Keras cache keeps (or would keep) a zoo model's ImageNet weights.

    Parameters
    ----------
    name : str
        A zoo model name, any spelling :func:`resolve_name` accepts.

    Returns
    -------
    pathlib.Path
        ``$KERAS_HOME/models/<file>`` (default ``~/.keras/models/<file>``), read at call time.
    """
    return _cache_file(_lookup(name).weights_file)


# --- network ------------------------------------------------------------------------------


def _offline_by_env() -> bool:
    return os.environ.get("EXPLAINER_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _downloads_allowed(allow_download: bool | None) -> bool:
    return allow_download is not False and not _offline_by_env()


_probe_results: dict[str, tuple[float, bool]] = {}


def _reachable(host: str, port: int = 443) -> bool:
    """Whether a TCP connection to ``host`` opens within PROBE_TIMEOUT_S (DNS included)."""
    opened: list[bool] = []

    def attempt() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), PROBE_TIMEOUT_S):
            opened.append(True)

    # A thread, because name resolution ignores socket timeouts.
    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S)
    return bool(opened)


def _host_reachable(host: str) -> bool:
    """:func:`_reachable`, remembered for PROBE_CACHE_S so repeated checks cost nothing."""
    checked_at, reachable = _probe_results.get(host, (float("-inf"), False))
    if time.monotonic() - checked_at > PROBE_CACHE_S:
        reachable = _reachable(host)
        _probe_results[host] = (time.monotonic(), reachable)
    return reachable


def _availability(entry: ZooEntry, allow_download: bool | None) -> tuple[str, str]:
    """("cached" | "downloadable" | "offline" | "unreachable", a sentence saying why)."""
    path = _cache_file(entry.weights_file)
    if path.is_file():
        return "cached", f"The weights file is in the Keras cache: {path}."
    missing = f"The weights file is not in the Keras cache ({path})"
    if not _downloads_allowed(allow_download):
        switch = "EXPLAINER_OFFLINE is set" if _offline_by_env() else "allow_download=False"
        return "offline", f"{missing} and downloads are turned off ({switch})."
    host = urllib.parse.urlsplit(entry.origin).hostname or ""
    if _host_reachable(host):
        return "downloadable", f"{missing} but can be downloaded from {host}."
    return "unreachable", f"{missing} and {host} cannot be reached."


def weights_available(name: str, allow_download: bool | None = None) -> tuple[bool, str]:
    """Whether :func:`build` can get the ImageNet weights of a zoo model.

    Parameters
    ----------
    name : str
        A zoo model name, any spelling :func:`resolve_name` accepts.
    allow_download : bool or None
        None or True: when the file is not cached, check (within 2 s) that the download host
        answers. False: the cache only. ``EXPLAINER_OFFLINE=1`` in the environment forces False.

    Returns
    -------
    (bool, str)
        True when the file is cached or downloadable, and a sentence saying which and where.
    """
    status, reason = _availability(_lookup(name), allow_download)
    return status in {"cached", "downloadable"}, reason


# --- building -----------------------------------------------------------------------------


def _unavailable(file_name: str, origin: str, why: str) -> WeightsUnavailable:
    path = _cache_file(file_name)
    message = (
        f"ImageNet weights {file_name} are not available. {why} "
        f"Place the file at {path} (Keras's cache: $KERAS_HOME/models, default ~/.keras/models); "
        f"get it from {origin}, for example on a machine with network access."
    )
    return WeightsUnavailable(message, path, origin)


def _file_digest(path: pathlib.Path, expected: str) -> str:
    """Hash ``path`` the way Keras checks downloads: SHA-256 for 64 hex digits, else MD5."""
    hasher = hashlib.sha256() if len(expected) == 64 else hashlib.md5()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _download(origin: str, target: pathlib.Path, file_hash: str | None) -> None:
    """Fetch ``origin`` into ``target`` atomically, checking Keras's hash when it has one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    logger.info("Downloading %s to %s", origin, target)
    try:
        with (
            urllib.request.urlopen(origin, timeout=DOWNLOAD_TIMEOUT_S) as response,
            open(partial, "wb") as out,
        ):
            shutil.copyfileobj(response, out, 1 << 20)
        if file_hash and _file_digest(partial, file_hash) != file_hash:
            raise _unavailable(target.name, origin, "The download was corrupted (wrong hash).")
        os.replace(partial, target)
    except OSError as error:  # URLError, timeouts, full disk
        raise _unavailable(target.name, origin, f"The download failed: {error}.") from error
    finally:
        partial.unlink(missing_ok=True)


def _cached_get_file(allow_download: bool | None) -> Callable[..., str]:
    """A stand-in for Keras's ``get_file`` that trusts cached files (see module docstring)."""

    def get_file(fname: str, origin: str, *args, **kwargs) -> str:
        path = _cache_file(fname)
        if path.is_file():
            return str(path)
        if not _downloads_allowed(allow_download):
            raise _unavailable(fname, origin, "It is not in the cache and downloads are off.")
        _download(origin, path, kwargs.get("file_hash"))
        return str(path)

    return get_file


_build_lock = threading.Lock()


@contextlib.contextmanager
def _weights_from_cache(allow_download: bool | None) -> Iterator[None]:
    with _build_lock:
        original = file_utils.get_file
        file_utils.get_file = _cached_get_file(allow_download)
        try:
            yield
        finally:
            file_utils.get_file = original


def build(name: str, allow_download: bool | None = None) -> keras.Model:
    """Build a zoo model with its ImageNet weights.

    Parameters
    ----------
    name : str
        A zoo model name, any spelling :func:`resolve_name` accepts.
    allow_download : bool or None
        As in :func:`weights_available`: whether a missing file may be downloaded.

    Returns
    -------
    keras.Model
        The ``keras.applications`` model, softmax output over the 1,000 ImageNet classes.

    Raises
    ------
    WeightsUnavailable
        The file is neither cached nor downloadable, the download failed, or the cached file
        cannot be read; the message names the file and the full path to place it at.
    """
    entry = _lookup(name)
    status, reason = _availability(entry, allow_download)
    if status not in {"cached", "downloadable"}:
        raise _unavailable(entry.weights_file, entry.origin, reason)
    try:
        with _weights_from_cache(allow_download):
            return entry.builder(weights="imagenet")
    except (OSError, ValueError) as error:  # h5py on a truncated file, or the wrong layers
        path = _cache_file(entry.weights_file)
        why = f"The cached file {path} cannot be loaded ({error}); delete it."
        raise _unavailable(entry.weights_file, entry.origin, why) from error


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


def default_model_name() -> tuple[str, str]:
    """The model the app starts with, and why, in a sentence the UI can show.

    Returns
    -------
    (str, str)
        ``$EXPLAINER_MODEL`` when set; else "mobilenet_v2" when its ImageNet weights are cached
        or downloadable; else "shapes", the bundled demo model.
    """
    chosen = os.environ.get("EXPLAINER_MODEL", "").strip()
    if chosen:
        return chosen, "chosen by EXPLAINER_MODEL"
    status, reason = _availability(ZOO[DEFAULT_ZOO_MODEL], None)
    if status == "cached":
        return DEFAULT_ZOO_MODEL, "MobileNetV2 (ImageNet) is the default: its weights are cached."
    if status == "downloadable":
        return DEFAULT_ZOO_MODEL, (
            "MobileNetV2 (ImageNet) is the default: its weights will be downloaded on first use."
        )
    return FALLBACK_MODEL, (
        "The bundled shapes model is the default because MobileNetV2's ImageNet weights are "
        f"missing. {reason}"
    )

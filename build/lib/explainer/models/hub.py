"""Models from the Hugging Face Hub (``hf://owner/repo``) and Keras Hub presets.

What an ``hf://`` repository holds decides how it loads:

* a Keras Hub preset (its ``metadata.json`` names a ``keras_hub_version``, or its ``config.json`` is a Transformers
  or timm config that Keras Hub converts): ``keras_hub.models.ImageClassifier.from_preset("hf://owner/repo")``,
  with the preset's own preprocessing and, where it has them, labels;
* a model written by ``model.save("hf://owner/repo")`` (``config.json`` + ``model.weights.h5``): Keras's own
  ``keras.saving.load_model("hf://owner/repo")``;
* a plain ``.keras``/``.h5`` file (``hf://owner/repo`` when the repository holds one, or
  ``hf://owner/repo/path/model.keras``): ``huggingface_hub.hf_hub_download`` of the file, its JSON sidecar
  (same stem, ``.json``) and ``labels.txt``.

A Keras Hub preset name (``vit_base_patch16_224_imagenet``) loads the same way from Kaggle. ``labels.txt`` (one label
a line) next to any of them names the classes. Everything downloaded is loaded in Keras safe mode, always: a
``Lambda`` layer is refused whatever ``trust`` says. Files land in the Hub's cache, which honours ``HF_HOME`` and
``HF_HUB_CACHE`` (Kaggle's: ``KAGGLEHUB_CACHE``); when the Hub cannot be reached, a model already in the cache still
loads, and any other fails at once with a plain :class:`~explainer.errors.ModelError` (no five retries, no traceback).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import keras
import numpy as np

from explainer.compat.keras_internals import SafeModeScope
from explainer.config import setting
from explainer.errors import ModelError
from explainer.models.zoo import imagenet_labels
from explainer.prose import quote

logger = logging.getLogger(__name__)

SCHEME = "hf://"
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
LABELS_FILE = "labels.txt"
#: Seconds to wait for the Hub's address before calling it unreachable.
PROBE_TIMEOUT = 3.0
#: An owner or repository name as the Hub accepts it: letters, digits, ``-_.``, starting and ending with a letter or
#: digit, at most 96 characters (the Hub also refuses ``--`` and ``..`` inside: checked separately, to say so).
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
#: The longest ``hf://`` spec taken (two names and a file path inside the repository).
MAX_SPEC_CHARS = 512
#: (scale, offset) per channel of Keras Hub image converters, by the preprocessing mode they equal.
_TORCH_MEAN, _TORCH_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
_CONVERTER_MODES = {
    "none": (np.ones(3), np.zeros(3)),
    "unit": (np.full(3, 1 / 255), np.zeros(3)),
    "symmetric": (np.full(3, 1 / 127.5), np.full(3, -1.0)),
    "torch": (1 / (255 * _TORCH_STD), -_TORCH_MEAN / _TORCH_STD),
}

OpenFile = Callable[[Path], tuple[keras.Model, dict]]


def is_hub_spec(spec: str) -> bool:
    """True for an ``hf://`` model spec."""
    return isinstance(spec, str) and spec.strip().lower().startswith(SCHEME)


def parse(spec: str) -> tuple[str, str | None]:
    """``hf://owner/repo[/path/to/file]`` → (``owner/repo``, file path in the repository or None).

    Raises
    ------
    ModelError
        For anything else, saying what is wrong with it in one sentence (quoting at most its start).
    """
    text = spec.strip()
    problem = _spec_problem(text[len(SCHEME):] if text.lower().startswith(SCHEME) else text)
    if problem:
        raise ModelError(f"{quote(text)} is not a Hugging Face model id: {problem} Write hf://owner/repo, or "
                         "hf://owner/repo/model.keras for one file of a repository.")
    parts = text[len(SCHEME):].rstrip("/").split("/")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


def _spec_problem(rest: str) -> str | None:
    """Why ``rest`` (the spec after ``hf://``) is not ``owner/repo[/file path]``, or None when it is."""
    if len(rest) > MAX_SPEC_CHARS:
        return f"it is {len(rest):,} characters long, and an id here is at most {MAX_SPEC_CHARS}."
    if any(ch.isspace() or not ch.isprintable() for ch in rest):
        return "it holds a space, a line break or another invisible character."
    if "\\" in rest:
        return "it holds a backslash (paths in a repository use /)."
    parts = rest.rstrip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        return "it does not name an owner and a repository."
    if "" in parts:
        return "it holds two slashes in a row (an empty folder name)."
    names = parts[:2]
    if any(".." in name or "--" in name for name in names):
        return "an owner or repository name cannot hold '..' or '--'."
    if not all(_NAME.fullmatch(name) for name in names):
        return ("an owner or repository name is at most 96 letters, digits, '-', '_' or '.', starting and ending with "
                "a letter or a digit.")
    if any(part in (".", "..") for part in parts[2:]):
        return "a file path in a repository cannot step out of it with '.' or '..'."
    return None


def is_preset(name: str) -> bool:
    """True for the name of a Keras Hub image-classifier preset (``vit_base_patch16_224_imagenet``)."""
    try:
        import keras_hub
    except ImportError:
        return False
    return name in keras_hub.models.ImageClassifier.presets


def hub_reachable() -> bool:
    """Whether the Hugging Face Hub may be asked: ``HF_HUB_OFFLINE`` is not set and its address answers.

    One TCP connection with a short timeout, so an offline machine learns it at once instead of after the client's
    retries (about 20 s a file).
    """
    if setting("HF_HUB_OFFLINE"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def download_size(spec: str) -> int | None:
    """Bytes an ``hf://`` spec would download (its file, or the whole repository), asked of the Hub before any
    download; None when the Hub cannot be asked (offline: the load then says so) or for a Keras Hub preset name."""
    if not is_hub_spec(spec):
        return None
    repo, filename = parse(spec)
    if not hub_reachable():
        return None
    from huggingface_hub import HfApi

    try:
        with _hub_errors(repo, online=True):
            info = HfApi().model_info(repo, files_metadata=True)
    except ModelError:
        raise
    except Exception as err:  # the client's own HTTP errors: the size is unknown, so the model is not fetched
        logger.info("hub size query failed for %r: %s: %s", repo, type(err).__name__, err)
        raise ModelError(_unreachable(repo, online=False)) from err
    files = [f for f in info.siblings or [] if filename is None or f.rfilename == filename]
    return sum(int(f.size or 0) for f in files)


def load(spec: str, open_file: OpenFile) -> tuple[keras.Model, dict, str]:
    """Load an ``hf://`` spec or a Keras Hub preset name.

    Parameters
    ----------
    spec : str
        ``hf://owner/repo``, ``hf://owner/repo/path/model.keras`` or a Keras Hub preset name.
    open_file : callable
        ``open_file(path) -> (model, sidecar)`` for a downloaded ``.keras``/``.h5`` file: the caller's own file
        loader, in safe mode (see :func:`explainer.models.loading.load_model`).

    Returns
    -------
    (keras.Model, dict, str)
        The model, its description (labels, preprocessing, name... as a sidecar holds them) and its source.

    Raises
    ------
    ModelError
        The Hub cannot be reached (and the model is not cached), the repository or file does not exist, the
        model carries code, or it is not an image classifier.
    """
    if not is_hub_spec(spec):
        with _kaggle_errors(spec):
            return _keras_hub(spec, spec, None, {})
    repo, filename = parse(spec)
    online = hub_reachable()
    with _hub_errors(repo, online):
        if filename:
            return _plain_file(repo, filename, online, open_file)
        config_path = _optional(repo, "config.json", online)
        if config_path is None:
            return _plain_file(repo, _model_file(repo, online), online, open_file)
        config = _read_json(config_path, repo)
        metadata_path = _optional(repo, "metadata.json", online)
        metadata = _read_json(metadata_path, repo) if metadata_path else {}
        labels = _repo_labels(repo, online)
        if "keras_hub_version" in metadata or "model_type" in config or "architecture" in config:
            return _keras_hub(_preset(repo, online), f"{SCHEME}{repo}", labels, config)
        return _keras_saved(repo, online, labels)


# --- the three kinds of repository --------------------------------------------------------------------------------


def _plain_file(repo: str, filename: str, online: bool, open_file: OpenFile) -> tuple[keras.Model, dict, str]:
    if not filename.lower().endswith(MODEL_SUFFIXES):
        raise ModelError(f"{quote(filename)} in {repo!r} is not a Keras model file (.keras or .h5).")
    path = Path(_download(repo, filename, online))
    _optional(repo, str(Path(filename).with_suffix(".json")), online)  # the sidecar lands next to the file
    model, meta = open_file(path)
    labels = _repo_labels(repo, online)
    meta = {**meta, **({"labels": labels} if labels and "labels" not in meta else {})}
    meta.setdefault("name", Path(filename).stem)
    meta.setdefault("description", f"{filename} from the Hugging Face Hub repository {repo}.")
    return model, meta, f"{SCHEME}{repo}/{filename}"


def _keras_saved(repo: str, online: bool, labels: list[str] | None) -> tuple[keras.Model, dict, str]:
    """A repository written by ``model.save("hf://…")``: Keras's own loader, in safe mode."""
    source = f"{SCHEME}{repo}" if online else _snapshot(repo, online)  # offline: the cached snapshot, no retries
    try:
        model = keras.saving.load_model(source, compile=False, safe_mode=True)
    except ValueError as err:
        raise _load_error(repo, err) from err
    except OSError:
        raise  # network and cache errors: _hub_errors words them
    except Exception as err:  # damaged weights, unknown custom classes...
        raise _load_error(repo, err) from err
    meta = {"name": repo.split("/")[1], "description": f"The Keras model {repo} from the Hugging Face Hub."}
    return model, {**meta, **({"labels": labels} if labels else {})}, f"{SCHEME}{repo}"


def _keras_hub(preset: str, source: str, labels: list[str] | None, config: dict) -> tuple[keras.Model, dict, str]:
    """A Keras Hub image classifier, with its own preprocessing (and labels where the preset has them)."""
    try:
        import keras_hub
    except ImportError as err:
        raise ModelError("Loading Keras Hub models needs the keras-hub package (pip install keras-hub).") from err
    name = source.removeprefix(SCHEME)
    try:
        with SafeModeScope(True):  # whatever the process set globally: a preset is downloaded code
            task = keras_hub.models.ImageClassifier.from_preset(preset)
    except OSError:
        raise  # network and cache errors: the caller's context words them
    except Exception as err:
        raise _load_error(name, err, preset=True) from err
    meta: dict[str, Any] = {"name": name.split("/")[-1], "description": f"The Keras Hub {type(task).__name__} {name}."}
    converter = getattr(getattr(task, "preprocessor", None), "image_converter", None)
    meta["preprocess"] = _converter_mode(converter, name)
    size = getattr(converter, "image_size", None)
    if size and all(size):
        meta["input_size"] = [int(size[0]), int(size[1])]
    labels = labels or _config_labels(config) or _imagenet_if_fits(task)
    if labels:
        meta["labels"] = labels
    return task, meta, source


# --- Hub calls ----------------------------------------------------------------------------------------------------


def _download(repo: str, filename: str, online: bool) -> str:
    import huggingface_hub

    return huggingface_hub.hf_hub_download(repo_id=repo, filename=filename, local_files_only=not online)


def _optional(repo: str, filename: str, online: bool) -> str | None:
    """The local path of ``filename``, or None when the repository (or, offline, the cache) does not have it."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return _download(repo, filename, online)
    except LocalEntryNotFoundError:
        if online:
            raise  # online, "not found locally" means the download itself failed
        return None
    except EntryNotFoundError:
        return None


def _snapshot(repo: str, online: bool) -> str:
    import huggingface_hub

    return huggingface_hub.snapshot_download(repo_id=repo, local_files_only=not online)


def _preset(repo: str, online: bool) -> str:
    """What to give ``from_preset``: the ``hf://`` handle, or offline the cached snapshot folder."""
    return f"{SCHEME}{repo}" if online else _snapshot(repo, online)


def _model_file(repo: str, online: bool) -> str:
    """The one ``.keras``/``.h5`` file of a repository (``model.keras`` when there are several)."""
    import huggingface_hub

    if online:
        files = huggingface_hub.list_repo_files(repo)
    else:
        root = Path(_snapshot(repo, online))
        files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    models = sorted(f for f in files if f.lower().endswith(MODEL_SUFFIXES))
    if len(models) == 1:
        return models[0]
    for preferred in ("model.keras", "model.h5"):
        if preferred in models:
            return preferred
    if not models:
        raise ModelError(f"The Hugging Face repository {repo!r} holds no Keras model: no .keras or .h5 file, and "
                         "no model saved with model.save(\"hf://...\") or as a Keras Hub preset.")
    shown = ", ".join(models[:5]) + (", ..." if len(models) > 5 else "")
    raise ModelError(f"The Hugging Face repository {repo!r} holds several model files ({shown}); say which one: "
                     f"hf://{repo}/{models[0]}")


def _repo_labels(repo: str, online: bool) -> list[str] | None:
    path = _optional(repo, LABELS_FILE, online)
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"The {LABELS_FILE} of {repo!r} cannot be read as text.") from err
    return [line.strip() for line in text.splitlines() if line.strip()] or None


def _read_json(path: str, repo: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{Path(path).name} in {repo!r} is not valid JSON.") from err
    return data if isinstance(data, dict) else {}


# --- describing Keras Hub models ----------------------------------------------------------------------------------


def _converter_mode(converter: Any, name: str) -> str:
    """The preprocessing mode (:data:`explainer.models.loading.PREPROCESS_MODES`) equal to a Keras Hub image
    converter."""
    if converter is None:
        return "none"
    scale, offset = getattr(converter, "scale", None), getattr(converter, "offset", None)
    scale = np.broadcast_to(np.asarray(1.0 if scale is None else scale, float), 3)
    offset = np.broadcast_to(np.asarray(0.0 if offset is None else offset, float), 3)
    for mode, (want_scale, want_offset) in _CONVERTER_MODES.items():
        if np.allclose(scale, want_scale, rtol=1e-3) and np.allclose(offset, want_offset, atol=1e-3):
            return mode
    raise ModelError(f"{name!r} scales its images in a way Grad-CAM Chat does not support (scale {scale.tolist()}, "
                     f"offset {offset.tolist()}); supported: 0–255, 0–1, −1–1 and ImageNet mean/std.")


def _config_labels(config: dict) -> list[str] | None:
    """Labels of a Transformers (``id2label``) or timm (``label_names``) config."""
    names = config.get("label_names")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            return [str(id2label[k]) for k in sorted(id2label, key=int)]
        except (TypeError, ValueError):
            return None
    return None


def _imagenet_if_fits(model: keras.Model) -> list[str] | None:
    outputs = getattr(model, "outputs", None)
    return imagenet_labels() if outputs and outputs[0].shape[-1] == 1000 else None


# --- errors -------------------------------------------------------------------------------------------------------


def _load_error(name: str, err: Exception, preset: bool = False) -> ModelError:
    """A plain refusal for a model that was found but cannot be built; Keras's own text goes to the log only."""
    logger.info("hub model %r could not be loaded: %s: %s", name, type(err).__name__, err)
    text = str(err)
    if "Lambda" in text or "safe_mode" in text:
        return ModelError(f"{name!r} contains Python code (a Lambda layer). Models downloaded from the Hub are always "
                          "loaded in Keras safe mode, because such a layer runs arbitrary code on this computer. If "
                          "you trust it, download the file yourself and load it as a local file with trust.")
    if preset:
        return ModelError(f"{name!r} could not be loaded as a Keras Hub image classifier: it may be a backbone or "
                          "another kind of task, or need a newer keras-hub.")
    return ModelError(f"{name!r} could not be read as a Keras model: its files are damaged, it uses a custom layer "
                      "class that is not part of Keras, or it was saved by an incompatible version of Keras.")


@contextlib.contextmanager
def _hub_errors(repo: str, online: bool) -> Iterator[None]:
    """Hub client errors → one plain sentence naming the repository."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except ModelError:
        raise
    except LocalEntryNotFoundError as err:  # before EntryNotFoundError, its base
        raise ModelError(_unreachable(repo, online)) from err
    except GatedRepoError as err:  # before RepositoryNotFoundError, its base
        raise ModelError(f"The Hugging Face model {repo!r} is gated: accept its terms on huggingface.co and set "
                         "HF_TOKEN to a token of that account.") from err
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise ModelError(f"There is no model {repo!r} on the Hugging Face Hub (or it is private: set HF_TOKEN to a "
                         "token that may read it).") from err
    except EntryNotFoundError as err:
        raise ModelError(f"The Hugging Face repository {repo!r} has no such file.") from err
    except HFValidationError as err:  # the Hub client's own id rules, should they grow stricter than parse()'s
        raise ModelError(f"{quote(repo)} is not a repository id the Hugging Face Hub accepts.") from err
    except HfHubHTTPError as err:
        logger.info("hub error for %r: %s", repo, err)
        raise ModelError(f"The Hugging Face Hub refused to send {repo!r} (an HTTP error); try again later.") from err
    except OSError as err:  # connection errors of the HTTP client
        logger.info("hub unreachable for %r: %s: %s", repo, type(err).__name__, err)
        raise ModelError(_unreachable(repo, online=False)) from err


def _unreachable(repo: str, online: bool) -> str:
    if online:
        return f"The model {repo!r} could not be downloaded from the Hugging Face Hub; try again later."
    return (f"Cannot load hf://{repo}: the Hugging Face Hub cannot be reached from this computer (no network, or "
            "HF_HUB_OFFLINE is set) and the model is not in the local Hub cache.")


@contextlib.contextmanager
def _kaggle_errors(name: str) -> Iterator[None]:
    """Keras Hub presets come from Kaggle: its connection errors → one plain sentence naming the preset."""
    try:
        yield
    except OSError as err:  # requests' ConnectionError, a missing file of the preset
        logger.info("keras hub preset %r unavailable: %s: %s", name, type(err).__name__, err)
        raise ModelError(f"Cannot load the Keras Hub preset {name!r}: Kaggle, where Keras Hub keeps its presets, "
                         "cannot be reached from this computer and the preset is not in the local cache.") from err

"""The models a chat can use: the built-in menu, one shared shelf of loaded models, and each visitor's uploads.

Built-in models (the default, the bundled demo models, and the ImageNet zoo models whose weights can be had) are
loaded once per process and warmed up (their compiled functions traced) before they answer, then shared read-only
by every conversation. A model file a visitor uploads is loaded in Keras safe mode and belongs to that visitor's
:class:`ModelMenu` only: it never appears in anyone else's menu.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from explainer.chat.messages import message
from explainer.demo import EXAMPLES_DIR, model_path
from explainer.engine import warm_up
from explainer.errors import ModelError
from explainer.layers import depth_layer_names
from explainer.models import hub, zoo
from explainer.models.loading import DEMO_MODELS, MODEL_SUFFIXES, LoadedModel, load_model
from explainer.prose import quote

logger = logging.getLogger(__name__)

#: The bundled demo models (offline, small): the app preloads them after start-up.
DEMO_MODEL_NAMES: tuple[str, ...] = tuple(DEMO_MODELS)
__all__ = ["DEMO_MODEL_NAMES", "EXAMPLES_DIR", "ModelMenu", "ModelShelf", "UploadRegistry", "builtin_choices",
           "load_default"]


class ModelShelf:
    """Built-in models loaded on first request, warmed up, and kept for the life of the process (thread-safe).

    Two visitors asking for the same model at the same time wait for one load instead of loading it twice.
    """

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        """The loaded, warmed-up model called ``name`` (a built-in name, or a path for ``$EXPLAINER_MODEL``).

        Raises
        ------
        ModelError
            When the model cannot be loaded (unknown name, missing weights, unreadable file).
        """
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._models:
                model = load_model(name)
                warm_up(model)
                self._models[name] = model
            return self._models[name]

    def loaded(self) -> list[str]:
        """Names of the models loaded so far."""
        with self._guard:
            return list(self._models)

    def preload(self, names: Iterable[str]) -> threading.Thread:
        """In a background thread, load and warm up ``names`` and trace the layers "show layers" uses.

        Tracing a layer takes seconds on a large model, too long for start-up but too long for a first question
        too; failures are logged, not raised.
        """
        def run() -> None:
            for name in names:
                try:
                    model = self.get(name)
                    for layer in depth_layer_names(model.keras_model):
                        warm_up(model, layer=layer)
                except Exception:  # a broken optional model must not take the app down
                    logger.warning("could not preload model %r", name, exc_info=True)

        thread = threading.Thread(target=run, name="preload-models", daemon=True)
        thread.start()
        return thread


def default_model_name() -> tuple[str, str]:
    """The model the app starts with and why: :func:`explainer.models.zoo.default_model_name`."""
    return zoo.default_model_name()


def load_default(shelf: ModelShelf) -> tuple[str, LoadedModel, str]:
    """Load and warm up the default model; fall back to the bundled shapes model when it cannot be loaded.

    Returns
    -------
    (str, LoadedModel, str)
        The model's name on the shelf, the model, and a sentence saying why it is the one answering.
    """
    name, reason = default_model_name()
    try:
        return name, shelf.get(name), reason
    except ModelError as err:
        if name == zoo.FALLBACK_MODEL:
            raise
        logger.warning("default model %r failed (%s); using %r", name, err, zoo.FALLBACK_MODEL)
        fallback = zoo.FALLBACK_MODEL
        return fallback, shelf.get(fallback), message("default_model.failed", name=name, error=err, fallback=fallback)


def builtin_choices(default: str) -> list[tuple[str, str]]:
    """The built-in models as ``(label, name)`` pairs for a menu, the default first.

    The bundled demo models are listed when their files are present; ImageNet zoo models when their weights are
    cached (or, with a network, downloadable: the label says so).
    """
    choices: list[tuple[str, str]] = [(message("menu.default", label=_label(default)), default)]
    for name in DEMO_MODELS:
        if name != default and model_path(name).is_file():
            choices.append((_label(name), name))
    for name, entry in zoo.ZOO.items():
        if name == default:
            continue
        cached = zoo.weights_available(name, allow_download=False)[0]
        if cached:
            choices.append((_label(name), name))
        elif zoo.weights_available(name)[0]:
            choices.append((message("menu.imagenet_download", name=entry.display_name), name))
    return choices


def _label(name: str) -> str:
    """A built-in model's menu label: ImageNet models by display name, demo models from the catalogue."""
    if name in zoo.ZOO:
        return message("menu.imagenet", name=zoo.ZOO[name].display_name)
    if name in DEMO_MODELS:
        return message(f"menu.{name}")
    return Path(name).name


class UploadRegistry:
    """Server-wide bookkeeping of the models visitors uploaded: at most ``limit`` in memory at once.

    Each visitor's menu holds at most one upload; when a new upload would exceed the limit, the menu whose upload
    was used least recently loses it (:meth:`ModelMenu.evict` tells that visitor). Thread-safe.
    """

    def __init__(self, limit: int = 4):
        if limit < 1:
            raise ValueError("The registry must admit at least one uploaded model.")
        self.limit = limit
        self._menus: OrderedDict[int, ModelMenu] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._menus)

    def admit(self, menu: ModelMenu) -> None:
        """Count ``menu``'s upload (most recently used), evicting the least recently used others over the limit."""
        with self._lock:
            self._menus[id(menu)] = menu
            self._menus.move_to_end(id(menu))
            evicted = []
            while len(self._menus) > self.limit:
                _key, oldest = self._menus.popitem(last=False)
                evicted.append(oldest)
        for menu_out in evicted:  # outside the lock: eviction talks to that visitor's conversation
            menu_out.evict()
        if evicted:
            gc.collect()  # a model's weights are often in reference cycles (layers <-> compiled functions)

    def touch(self, menu: ModelMenu) -> None:
        with self._lock:
            if id(menu) in self._menus:
                self._menus.move_to_end(id(menu))

    def release(self, menu: ModelMenu) -> None:
        with self._lock:
            self._menus.pop(id(menu), None)


@dataclass
class ModelMenu:
    """One visitor's models: the shared built-in ones plus the files this visitor uploaded.

    Parameters
    ----------
    shelf : ModelShelf
        Where built-in models come from (shared by every visitor).
    builtins : list of (label, name)
        The built-in menu, from :func:`builtin_choices`.
    """

    shelf: ModelShelf
    builtins: list[tuple[str, str]]
    uploads: dict[str, LoadedModel] = field(default_factory=dict)
    #: Shared by every visitor: caps the uploaded models in memory (None: no cap, e.g. in scripts).
    registry: UploadRegistry | None = None
    #: Called with the upload this menu loses (evicted or replaced), so the conversation can let go of it.
    on_drop: Callable[[LoadedModel, bool], None] | None = None
    #: This visitor's calibrated copies of built-in models (same network, own calibration), by name.
    calibrated: dict[str, LoadedModel] = field(default_factory=dict)

    def recalibrated(self, key: str, model: LoadedModel) -> None:
        """Answer ``key`` with ``model`` from now on, for this visitor only (a calibration fitted in the session)."""
        if key in self.uploads:
            self.uploads[key] = model
        else:
            self.calibrated[key] = model

    def choices(self) -> list[tuple[str, str]]:
        """``(label, key)`` pairs: the built-in models, then this visitor's uploads."""
        return [*self.builtins, *((key, key) for key in self.uploads)]

    def names(self) -> list[str]:
        """Every key :meth:`get` accepts (what the chat may call a model)."""
        return [key for _label, key in self.choices()]

    def get(self, key: str) -> LoadedModel:
        """The model behind a menu key (raises :class:`ModelError` for a key that is not in the menu)."""
        if key in self.uploads:
            if self.registry is not None:
                self.registry.touch(self)
            return self.uploads[key]
        if key not in {name for _label, name in self.builtins}:
            raise ModelError(f"There is no model called {quote(key)} here; choose one of {', '.join(self.names())}.")
        return self.calibrated.get(key) or self.shelf.get(key)

    def key_of(self, model: LoadedModel) -> str | None:
        """The menu key of a loaded model, or None when it is not in the menu."""
        for key, upload in [*self.uploads.items(), *self.calibrated.items()]:
            if upload is model:
                return key
        for _label, name in self.builtins:
            if name in self.shelf.loaded() and self.shelf.get(name) is model:
                return name
        return None

    def add_upload(self, model_file: str, labels_file: str | None = None,
                   checker: Callable[[Path], object] | None = None) -> tuple[str, LoadedModel]:
        """Load an uploaded ``.keras``/``.h5`` file (Keras safe mode) with optional labels, warm it up, list it.

        ``checker(path)`` runs first and may refuse the file (e.g. a memory budget read off its architecture).
        The new upload replaces this menu's previous one.

        Returns
        -------
        (str, LoadedModel)
            The new menu key (the file's name plus " (uploaded)", numbered when taken) and the model.

        Raises
        ------
        ModelError
            For a file that is not a model, carries Python code (Lambda layers), or does not match its labels.
        """
        if not model_file:
            raise ModelError("Choose a model file (.keras or .h5) first.")
        path = Path(model_file)
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise ModelError(f"{quote(path.name)} is not a Keras model file; upload a .keras or .h5 file.")
        if checker is not None:
            checker(path)
        model = load_model(path, labels=labels_file or None, trust=False)  # a visitor's file never runs code
        return self._adopt(path.stem, model)

    def add_hub(self, spec: str, checker: Callable[[LoadedModel], object] | None = None,
                max_bytes: int | None = None) -> tuple[str, LoadedModel]:
        """Load a Hugging Face Hub model (``hf://owner/repo``) for this visitor, like an upload.

        Downloaded models load in Keras safe mode. A repository larger than ``max_bytes`` is refused before anything
        is downloaded. ``checker(model)`` runs on the loaded model (a repository has no one file to read first) and
        may refuse it; the model is then dropped before it is warmed up or listed.
        """
        spec = (spec or "").strip()
        if not spec:
            raise ModelError(message("menu.hub_empty"))
        if not hub.is_hub_spec(spec):
            raise ModelError(message("menu.hub_malformed", value=quote(spec)))
        size = hub.download_size(spec) if max_bytes is not None else None
        if size is not None and size > max_bytes:
            raise ModelError(message("menu.hub_too_big", size=size / 2**20, limit=max_bytes / 2**20))
        model = load_model(spec, trust=False)
        if checker is not None:
            checker(model)
        return self._adopt(hub.parse(spec)[0].rsplit("/", 1)[-1], model)

    def _adopt(self, stem: str, model: LoadedModel) -> tuple[str, LoadedModel]:
        """Warm ``model`` up and make it this visitor's one upload (replacing the previous one)."""
        warm_up(model)
        self.release()
        key = self._free_key(stem)
        self.uploads[key] = model
        if self.registry is not None:
            self.registry.admit(self)
        return key, model

    def evict(self) -> None:
        """The server needs the memory: forget this visitor's upload and tell the conversation."""
        self._drop(evicted=True)

    def release(self) -> None:
        """Forget this visitor's upload (a new upload, or the session ended)."""
        self._drop(evicted=False)

    def _drop(self, evicted: bool) -> None:
        dropped = list(self.uploads.values())
        self.uploads.clear()
        if self.registry is not None:
            self.registry.release(self)
        for model in dropped:
            if self.on_drop is not None:
                self.on_drop(model, evicted)

    def _free_key(self, stem: str) -> str:
        taken = set(self.names())
        key, number = message("menu.uploaded", stem=stem), 1
        while key in taken:
            number += 1
            key = message("menu.uploaded_again", stem=stem, number=number)
        return key

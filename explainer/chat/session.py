"""The state of one conversation: its images, its settings, its model, and every result computed so far.

A :class:`SessionState` belongs to one browser session; the conversation (:class:`explainer.chat.ChatSession`)
reads messages and asks the answers (:mod:`explainer.chat.answers`), which read and fill this state. Nothing in
here knows about messages or replies. Follow-up questions reuse what is cached here, so a question that needs no
new map (how confident? show the region, another opacity) costs milliseconds: explanations are cached by (image,
model, method, layer, target, threshold) and rendered overlays by the explanation and the drawing settings.
Nothing is shared between sessions except the (read-only) loaded models.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from explainer.cams import METHODS, method_key
from explainer.engine import default_method, explain
from explainer.errors import ClassError, ExplainerError, ImageError
from explainer.inputs.images import load_image_with_notes
from explainer.labels import match_label
from explainer.layers import LayerPath, resolve_layer, spatial_layers
from explainer.models.loading import LoadedModel
from explainer.prose import quote, render
from explainer.region import DEFAULT_THRESHOLD
from explainer.render import COLORMAPS, DEFAULT_COLORMAP, overlay
from explainer.result import Explanation
from explainer.segment import DEFAULT_SEGMENT, SEGMENTERS, get_segmenter, segment_key
from explainer.tokens import is_transformer

#: Uploads larger than this (longest side, pixels) are shrunk once on arrival: the model sees its own input size
#: anyway, and overlays of a 12-megapixel photo would cost memory and time in every answer.
MAX_SIDE = 1024
#: How many images a conversation keeps (the oldest is forgotten first).
MAX_IMAGES = 12
#: How many explanations and pictures a conversation keeps (least recently used first out).
MAX_CACHED = 48
MAX_TOP_K = 20
#: Method names that mean "the model's default" (Grad-CAM, or HiResCAM for a vision transformer).
AUTO_METHOD = ("auto", "default", "automatic")
#: The method menu's value for "the model's default" (the first of :data:`AUTO_METHOD`).
AUTO = AUTO_METHOD[0]


def method_choices() -> list[tuple[str, str]]:
    """The CAM method menu as (label, value) pairs: the model's default (:data:`AUTO`) first, then every method."""
    return [(render("method_auto"), AUTO), *((METHODS[key].display_name, key) for key in METHODS)]


def segment_choices() -> list[tuple[str, str]]:
    """The segmentation menu as (label, value) pairs, the default first."""
    keys = [DEFAULT_SEGMENT, *(key for key in SEGMENTERS if key != DEFAULT_SEGMENT)]
    return [(SEGMENTERS[key].display_name + (" (default)" if key == DEFAULT_SEGMENT else ""), key) for key in keys]


class SettingError(ExplainerError):
    """A setting value out of range (shown to the user like every other :class:`ExplainerError`)."""


#: The numeric settings' allowed values: (lowest, highest, lowest allowed itself, how a refusal states them, an
#: example of a plain number for it).
NUMBER_SETTINGS: dict[str, tuple[float, float, bool, str, str]] = {
    "opacity": (0.0, 1.0, True, "Opacity must be between 0 and 1 (or 0–100 %)", "0.3 or 30 %"),
    "threshold": (0.0, 1.0, False, "The threshold must be above 0 and at most 1 (or 100 %)", "0.3 or 30 %"),
    "top_k": (1, MAX_TOP_K, True, f"Top-k must be a whole number from 1 to {MAX_TOP_K}", "5"),
}


def in_range(setting: str, value: Any) -> bool:
    """Whether ``value`` is an allowed value of the numeric ``setting`` (NaN and infinities never are)."""
    low, high, closed, _words, _example = NUMBER_SETTINGS[setting]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    whole = setting != "top_k" or number.is_integer()
    return whole and (low <= number if closed else low < number) and number <= high


def setting_number(setting: str, value: float | None, typed: str) -> float | int:
    """The value of a number typed for a numeric setting, or :class:`SettingError` stating the allowed range.

    ``value`` is what ``typed`` reads as (None when it is not a plain number, e.g. ``"9e99"``); the refusal quotes
    what was typed, not what it was read as.
    """
    if value is None or not in_range(setting, value):
        _low, _high, _closed, words, example = NUMBER_SETTINGS[setting]
        raise SettingError(f"{words}, written as a plain number (like {example}); {quote(typed)} is not one.")
    return int(value) if setting == "top_k" else float(value)


@dataclass
class Settings:
    """What the user can tune; the chat and the app's controls change the same object.

    Attributes
    ----------
    opacity : float
        Heatmap opacity over the image, 0–1.
    colormap : str
        One of :data:`explainer.render.COLORMAPS`.
    threshold : float
        Localization threshold as a fraction of the map's maximum, in (0, 1].
    top_k : int
        How many classes "what is it" lists (1–20).
    method : str or None
        CAM method key (:data:`explainer.cams.METHODS`) the user chose; None for the model's default
        (:meth:`SessionState.method`: Grad-CAM, or HiResCAM for a vision transformer). ``"auto"`` or ``"default"``
        given to :meth:`validated` mean None.
    layer : str or None
        Target layer name; None for the model's default (last spatial layer).
    segment : str
        How the region's mask is cut from the map (:data:`explainer.segment.SEGMENTERS`; any spelling a method
        declares is accepted by :meth:`validated`).
    """

    opacity: float = 0.45
    colormap: str = DEFAULT_COLORMAP
    threshold: float = DEFAULT_THRESHOLD
    top_k: int = 5
    method: str | None = None
    layer: str | None = None
    segment: str = DEFAULT_SEGMENT

    def validated(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied, or :class:`SettingError` naming the allowed range."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise SettingError(f"There is no setting called {', '.join(unknown)}; the settings are "
                               f"{', '.join(f.name for f in dataclasses.fields(self))}.")
        new = dataclasses.replace(self, **changes)
        for name in NUMBER_SETTINGS:
            if not in_range(name, getattr(new, name)):
                raise SettingError(f"{NUMBER_SETTINGS[name][3]}, not {quote(getattr(new, name))}.")
        if not isinstance(new.colormap, str) or new.colormap not in COLORMAPS:
            raise SettingError(f"Unknown colormap {quote(new.colormap)}; choose one of {', '.join(COLORMAPS)}.")
        key = None if new.method is None else method_key(str(new.method))
        if key is not None and key not in METHODS and key not in AUTO_METHOD:
            raise SettingError(f"Unknown method {quote(new.method)}; choose one of {', '.join(METHODS)}.")
        key = None if key in AUTO_METHOD else key
        segment = segment_key(str(new.segment))
        if segment not in SEGMENTERS:
            raise SettingError(f"Unknown segmentation method {quote(new.segment)}; choose one of "
                               f"{', '.join(SEGMENTERS)}.")
        return dataclasses.replace(new, opacity=float(new.opacity), threshold=float(new.threshold),
                                   top_k=int(float(new.top_k)), method=key, segment=segment)


@dataclass
class ImageEntry:
    """One image of the conversation, numbered from 1 in upload order."""

    number: int
    image: np.ndarray
    name: str
    original_size: tuple[int, int]  # (width, height) before any shrinking
    notes: list[str] = field(default_factory=list)  # how the file was read (e.g. "the first of 12 frames")
    #: What is known about the image besides its pixels (a bundled example's): ``shows``, the class drawn in it;
    #: ``mark_box``, the box (x, y, w, h) of a shortcut tag in it.
    known: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as explained."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    def to_dict(self) -> dict:
        return {"number": self.number, "name": self.name, "size": list(self.size),
                "original_size": list(self.original_size)}


@dataclass(eq=False)  # holds an array: compared by identity
class ExpectedRegion:
    """Where the user expects the evidence on one image: the region "is it looking here?" compares maps with.

    Attributes
    ----------
    number : int
        The image it was given for (:attr:`ImageEntry.number`); it means nothing on another image.
    mask : numpy.ndarray
        Boolean mask at the size of the image as explained (:attr:`ImageEntry.image`).
    box : tuple of int or None
        ``(x, y, w, h)`` in the explained image's pixels when the region is a box (typed, or the cells of place
        words); None for a painted or uploaded mask.
    given_as : str
        ``box``, ``words`` or ``mask``: how the user stated it.
    said : str
        What the user stated, tidied (``"40, 60, 80, 80"``, ``"lower left"``; empty for a mask).
    shown_box : tuple of int or None
        ``box`` in the pixels of the image as uploaded (different only when a large upload was shrunk).
    target : str or None
        The label of the class the last answer about this region explained, None for the top class (follow-ups
        keep it until another is named).
    serial : int
        Unique within the conversation (keys cached pictures).
    """

    number: int
    mask: np.ndarray
    box: tuple[int, int, int, int] | None
    given_as: str
    said: str = ""
    shown_box: tuple[int, int, int, int] | None = None
    target: str | None = None
    serial: int = 0

    @property
    def pixels(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass
class _LRU:
    """A small least-recently-used cache."""

    limit: int = MAX_CACHED
    items: OrderedDict = field(default_factory=OrderedDict)

    def get(self, key: Hashable) -> Any:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key: Hashable, value: Any) -> Any:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.limit:
            self.items.popitem(last=False)
        return value

    def drop_image(self, number: int) -> None:
        for key in [k for k in self.items if isinstance(k, tuple) and k and k[0] == number]:
            del self.items[key]


ModelLoader = Callable[[str], LoadedModel]


class SessionState:
    """Settings, images, the answering model and caches of one conversation (thread-safe).

    Parameters
    ----------
    model : LoadedModel
        The model that answers (shared read-only between sessions; never mutated here).
    loader : callable, optional
        ``loader(name) -> LoadedModel`` for "use the shortcut model"; should return already loaded, warmed-up
        models from the app's cache. Without it the chat cannot switch models by itself.
    model_names : sequence of str
        Names ``loader`` accepts (what the user may ask for).
    settings : Settings, optional
        Initial settings.
    """

    def __init__(self, model: LoadedModel, loader: ModelLoader | None = None, model_names: Sequence[str] = (),
                 settings: Settings | None = None):
        self.model = model
        self.loader = loader
        self.model_names = tuple(model_names)
        self.settings = (settings or Settings()).validated()
        self.images: list[ImageEntry] = []
        self.current: ImageEntry | None = None
        self.expected: ExpectedRegion | None = None  # the last region the user expects the evidence in
        self.last_answer: str | None = None  # the intent of the last answer that was not an error (follow-ups)
        self.last_what_if: dict | None = None  # the part the last what-if covered (region, keep, fill, target)
        self.said: set[str] = set()  # notes said once per conversation (why a transformer's default method)
        self.turns = 0
        self.explain_calls = 0  # how often the engine was asked for maps (tests and benchmarks read it)
        self.lock = threading.RLock()  # one turn at a time; the app may change settings from another thread
        self._counter = 0
        self._regions = 0
        self._models: dict[int, LoadedModel] = {id(model): model}  # keeps ids unique while cached
        self._results = _LRU()
        self._pictures = _LRU()
        self._facts = _LRU(limit=4 * MAX_CACHED)  # small things: top classes, checks, statistics, AUCs

    # ------------------------------------------------------------------------------------------------- models

    def set_model(self, model: LoadedModel) -> None:
        """Answer with ``model`` from now on; the conversation, its images and settings are kept.

        A target layer chosen for the previous model is reset (layer names differ between models); a method the
        user chose is kept, and without one the new model's default applies (:attr:`method`).
        """
        with self.lock:
            if model is not self.model:
                self.settings = dataclasses.replace(self.settings, layer=None)
            self.model = model
            self._models[id(model)] = model

    def forget_model(self, model: LoadedModel, fallback: LoadedModel) -> bool:
        """Let go of ``model`` (its memory is wanted back); answer with ``fallback`` if it was answering.

        Returns True when the answering model changed. Explanations stay cached: they hold no model.
        """
        with self.lock:
            self._models.pop(id(model), None)
            if self.model is not model:
                return False
            self.set_model(fallback)
            return True

    def load_model(self, name: str) -> LoadedModel:
        """The model called ``name`` from the loader (a :class:`ExplainerError` if there is no loader)."""
        if self.loader is None:
            raise ExplainerError("This chat cannot switch models by itself; use the model picker.")
        return self.loader(name)

    @property
    def method(self) -> str:
        """The method key maps are made with: the user's choice, else the model's default (Grad-CAM, or HiResCAM for
        a vision transformer, chosen by a pointing test: :data:`explainer.tokens.DEFAULT_METHOD`)."""
        return self.settings.method or default_method(self.model)

    @property
    def method_chosen(self) -> bool:
        """True when the user chose the method (it then stays, also across models)."""
        return self.settings.method is not None

    @property
    def transformer(self) -> bool:
        """True when the answering model is a vision transformer (its layers are token sequences in blocks)."""
        return self.model_fact("transformer", lambda: is_transformer(self.model.keras_model))

    def first_time(self, note: str) -> bool:
        """True the first time ``note`` is asked about in this conversation (then it counts as said)."""
        with self.lock:
            if note in self.said:
                return False
            self.said.add(note)
            return True

    def update_settings(self, **changes: Any) -> Settings:
        """Change settings (``opacity``, ``colormap``, ``threshold``, ``top_k``, ``method``, ``layer``).

        Raises :class:`SettingError` for values out of range; nothing changes then.
        """
        with self.lock:
            self.settings = self.settings.validated(**changes)
            return self.settings

    # ------------------------------------------------------------------------------------------------- images

    def add_image(self, source: Any) -> ImageEntry:
        """Decode ``source`` (path, ``{"path": ...}``, PIL image or array) and make it the current image.

        Raises :class:`ImageError` for anything that is not a readable image; the conversation is unchanged then.
        """
        path = source.get("path") if isinstance(source, dict) else source
        if path is None:
            raise ImageError("The upload carried no file.")
        loaded = load_image_with_notes(path)
        height, width = loaded.pixels.shape[:2]
        image = _shrink(loaded.pixels, MAX_SIDE)
        with self.lock:
            self._counter += 1
            entry = ImageEntry(self._counter, image, loaded.name, (width, height), list(loaded.notes))
            self.images.append(entry)
            while len(self.images) > MAX_IMAGES:
                gone = self.images.pop(0)
                for cache in (self._results, self._pictures, self._facts):
                    cache.drop_image(gone.number)
            self.current = entry
            self.expected = None  # a new image forgets the region expected on the previous one
            return entry

    def checkpoint(self) -> tuple:
        """What a turn may change in the image list: give it to :meth:`restore` to undo the turn's uploads."""
        with self.lock:
            return list(self.images), self.current, self.expected

    def restore(self, checkpoint: tuple) -> None:
        """Undo the uploads since :meth:`checkpoint` (their numbers are not reused, so no cache entry goes stale)."""
        with self.lock:
            images, self.current, self.expected = checkpoint
            self.images = list(images)

    def find_image(self, ref: str) -> ImageEntry | None:
        """The image ``ref`` points at: ``previous``, ``first``, ``latest`` or a 1-based number; None if none."""
        if not self.images:
            return None
        if ref == "first":
            return self.images[0]
        if ref == "latest":
            return self.images[-1]
        if ref == "previous":
            at = self.images.index(self.current) if self.current in self.images else len(self.images) - 1
            return self.images[at - 1] if at >= 1 else None
        if ref.isdigit():
            return next((e for e in self.images if e.number == int(ref)), None)
        return None

    # --------------------------------------------------------------------------------------- expected region

    def set_expected(self, region: ExpectedRegion) -> ExpectedRegion:
        """Remember ``region`` (for its image) as the region follow-up questions compare maps with."""
        with self.lock:
            self._regions += 1
            self.expected = dataclasses.replace(region, serial=self._regions)
            return self.expected

    def remember_target(self, target: str | None) -> None:
        """The class the last answer about the expected region explained (kept for follow-ups)."""
        with self.lock:
            if self.expected is not None:
                self.expected = dataclasses.replace(self.expected, target=target)

    def expected_region(self) -> ExpectedRegion | None:
        """The remembered expected region if it belongs to the current image, else None."""
        found = self.expected
        if found is None or self.current is None or found.number != self.current.number:
            return None
        return found

    # ------------------------------------------------------------------------------------------- explanations

    def resolve_target(self, target: int | str | None) -> int | None:
        """A class index for ``target``: an index, a label (fuzzy), ``"@k"`` for the k-th most probable class, or
        None (stays None: the top prediction). Raises :class:`ClassError` variants for unknown or ambiguous names."""
        if target is None or isinstance(target, (int, np.integer)):
            return None if target is None else int(target)
        if target.startswith("@") and target[1:].isdigit():
            rank, top = int(target[1:]), self.explanation()
            ranking = np.argsort(-top.probabilities, kind="stable")
            if not 1 <= rank <= len(ranking):
                raise ClassError(f"This model has only {len(ranking)} classes.")
            return top.target_index if rank == 1 else int([i for i in ranking if i != top.target_index][rank - 2])
        return match_label(self.model.labels, target)

    def explanation(self, target: int | str | None = None, method: str | None = None, layer: str | None = None,
                    entry: ImageEntry | None = None) -> Explanation:
        """The (cached) explanation of ``target`` (None: the top class) on the current image."""
        return self.explanations([target], method, layer, entry)[0]

    def explanations(self, targets: Sequence[int | str | None], method: str | None = None, layer: str | None = None,
                     entry: ImageEntry | None = None) -> list[Explanation]:
        """Explanations of several targets on one image; only the missing ones are computed, in one batch."""
        entry = self._entry(entry)
        method = method_key(method or self.method)
        layer = layer if layer is not None else self.settings.layer
        indices = [self._top_index(entry) if t is None else self.resolve_target(t) for t in targets]
        missing = list(dict.fromkeys(i for i in indices if i is None or self._cached(entry, method, layer, i) is None))
        if missing:
            self._compute(entry, method, layer, missing)
            indices = [self._top_index(entry) if i is None else i for i in indices]
        return [self._cached(entry, method, layer, i) for i in indices]

    def _compute(self, entry: ImageEntry, method: str, layer: str | None, targets: list[int | None]) -> None:
        self.explain_calls += 1
        results = explain(self.model, entry.image, target=list(targets), method=method, layer=layer,
                          threshold=self.settings.threshold, top_k=MAX_TOP_K, segment=self.settings.segment)
        for asked, result in zip(targets, results, strict=True):
            if asked is None:  # the class the engine picked as the top one (argmax of the logits)
                self._facts.put((entry.number, id(self.model), "top"), result.target_index)
            self._results.put(self._key(entry, method, layer, result.target_index), result)

    def _cached(self, entry: ImageEntry, method: str, layer: str | None, index: int) -> Explanation | None:
        """A cached result at the current threshold and segmentation; one at another is re-localized (no new map)."""
        key = self._key(entry, method, layer, index)
        found = self._results.get(key)
        if found is not None:
            return found
        for other, result in list(self._results.items.items()):
            if other[:-2] == key[:-2]:
                region = dataclasses.replace(result.region, threshold=self.settings.threshold,
                                             segmenter=get_segmenter(self.settings.segment))
                return self._results.put(key, dataclasses.replace(result, region=region))
        return None

    def _key(self, entry: ImageEntry, method: str, layer: str | None, index: int) -> tuple:
        """A result's cache key: the last two parts (threshold, segmentation) only re-localize the same map."""
        return (entry.number, id(self.model), method, layer or "", int(index),
                round(float(self.settings.threshold), 4), self.settings.segment)

    def _top_index(self, entry: ImageEntry) -> int | None:
        return self._facts.get((entry.number, id(self.model), "top"))

    def _entry(self, entry: ImageEntry | None) -> ImageEntry:
        entry = entry or self.current
        if entry is None:
            raise ImageError("There is no image yet.")
        return entry

    # -------------------------------------------------------------------------------------- pictures and facts

    def overlay(self, result: Explanation) -> np.ndarray:
        """The heatmap of ``result`` over its image, with the current opacity and colormap (cached)."""
        key = ("overlay", id(result), self.settings.opacity, self.settings.colormap)
        return self.picture(key, lambda: overlay(result.image, result.heatmap, self.settings.opacity,
                                                  self.settings.colormap), result)

    def picture(self, key: tuple, draw: Callable[[], np.ndarray], owner: object | None = None) -> np.ndarray:
        """A cached picture: ``draw()`` runs only the first time ``key`` is seen (``owner`` keeps ids valid)."""
        found = self._pictures.get(key)
        if found is not None and found[0] is owner:
            return found[1]
        return self._pictures.put(key, (owner, draw()))[1]

    def fact(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """A cached derived fact about the current image and model (key is prefixed with both)."""
        entry = self._entry(None)
        full = (entry.number, id(self.model), *key)
        found = self._facts.get(full)
        if found is None:
            found = self._facts.put(full, compute())
        return found

    def layer_paths(self) -> list[LayerPath]:
        """Spatial layers of the current model, input to head (cached per model)."""
        return self.model_fact("layers", lambda: spatial_layers(self.model.keras_model))

    def default_layer(self) -> str:
        """Name of the layer used when none is chosen."""
        return self.model_fact("default_layer", lambda: resolve_layer(self.model.keras_model, None).name)

    def model_fact(self, name: Hashable, compute: Callable[[], Any]) -> Any:
        """A fact derived from the model alone, kept on the (shared) model so every conversation reuses it."""
        return self.model.memo(("chat", name), compute)

    # ------------------------------------------------------------------------------------------------ copying

    def __deepcopy__(self, memo: dict) -> SessionState:
        """An independent state sharing the (read-only) models: Gradio deep-copies a State's value."""
        twin = SessionState(self.model, self.loader, self.model_names, copy.copy(self.settings))
        twin.images = list(self.images)
        twin.current = self.current
        twin.expected = self.expected
        twin.last_answer = self.last_answer
        twin.last_what_if = self.last_what_if
        twin.said = set(self.said)
        twin._counter = self._counter
        twin._regions = self._regions
        twin._models = dict(self._models)
        for name in ("_results", "_pictures", "_facts"):
            getattr(twin, name).items.update(getattr(self, name).items)
        return twin


def _shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


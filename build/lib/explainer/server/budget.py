"""Deciding, before a single weight is allocated, whether an uploaded model file is affordable.

A model file compresses: a few MB of ``.keras`` can declare gigabytes of weights, and a 28 KB file can declare a
6000×6000 input whose first convolution needs tens of gigabytes. Loading such a file to find out is already the
damage, so this module reads only what the file *declares*:

- the parameter count, as the sum of the products of the dataset shapes in the weights file (``model.weights.h5``
  inside a ``.keras`` zip, the ``model_weights`` group of a legacy ``.h5``); reading a shape reads no data;
- the input shape and every layer's output shape, by building the architecture from its config inside a
  :class:`keras.StatelessScope` that never initialises variables (Keras defers a variable's allocation there), in
  Keras safe mode (a ``Lambda`` is refused, never run), and tracing symbolic tensors through it.

:func:`check_model_file` compares those facts with :class:`ModelLimits` (environment variables) and raises a
:class:`~explainer.errors.ModelError` that states the limit. It never falls back to a real load:

- a free input size (``None``) is sized at :data:`DEFAULT_SIDE`, the size the app feeds such a model;
- an architecture that safe mode refuses (a ``Lambda``, an unknown custom layer) passes with what could be read:
  the real load refuses it at the same point, and the variables created up to there are counted as parameters;
- an architecture that builds but cannot be sized without its weights (a registered layer creating a variable from a
  value) is refused. A memory-limited child process was measured instead and rejected: TensorFlow's import alone
  takes 2.5–5 s, ``RLIMIT_AS`` failed a 256 MB model even at 2.5 GB (TensorFlow reserves address space), and
  ``RLIMIT_DATA`` needs a per-machine baseline (~0.5 GB after import) to be meaningful.

The file itself is guarded too: ``config.json`` is read up to :data:`CONFIG_MAX_BYTES`, nothing is extracted to disk,
a deflated weights member is inflated only up to :data:`DEFLATED_WEIGHTS_MAX_BYTES`, and the layer and HDF5 object
counts are capped so that inspecting any file takes a few seconds at most.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import keras

from explainer.config import default, setting
from explainer.errors import ModelError

DEFAULT_SIDE = 224  # what the app feeds a model whose input height/width is None (see models._describe)
FLOAT_BYTES = 4  # the chat computes in float32
CONFIG_MAX_BYTES = 8 * 2**20  # the largest keras.applications config (NASNetLarge) is 1.0 MB
WEIGHTS_MEMBER = "model.weights.h5"
CONFIG_MEMBER = "config.json"
# A deflated weights member cannot be read in place cheaply (every backward seek re-inflates from the start: 37 s
# for a 4.8 GB member here); Keras itself always stores it uncompressed. Up to this size it is inflated in memory.
DEFLATED_WEIGHTS_MAX_BYTES = 256 * 2**20
# Building costs about 2.3 ms a layer here (2,000 layers: 4.7 s); NASNetLarge, the largest keras.applications
# model, has 1,042. The real load pays the same, so the cap also bounds it.
MAX_LAYERS = 1500
MAX_H5_OBJECTS = 20_000  # NASNetLarge: 3,630 groups and arrays (.keras), 4,623 (.h5); about 86 µs each to walk
_LEGACY_SUFFIXES = (".h5", ".hdf5")
_NOT_A_MODEL = "The file is not a Keras model this server can read (a .keras archive or a legacy .h5 file)."


@dataclass(frozen=True)
class ModelLimits:
    """What one uploaded model may cost; every field is an environment variable of the app.

    Attributes
    ----------
    max_params : int
        Most parameters (``EXPLAINER_MAX_PARAMS``, default 150 M: every zoo model fits, VGG16 has 138 M).
    max_input_pixels : int
        Most input values per image, height × width × channels (``EXPLAINER_MAX_INPUT_VALUES``, default
        2048 × 2048 × 3 ≈ 12.6 M: 50 MB per float32 image, 400 MB for a batch of eight).
    max_activation_bytes : int
        Most bytes of the largest layer output (the input included) for a batch of :attr:`batch` float32 images
        (``EXPLAINER_MAX_ACTIVATION_MB``, default 1024 MB; VGG16 needs 98 MB, EfficientNetB7 at 600×600 531 MB).
    batch : int
        The most images the chat runs through a model at once (Score-CAM's chunks of eight).
    """

    max_params: int = default("EXPLAINER_MAX_PARAMS")
    max_input_pixels: int = default("EXPLAINER_MAX_INPUT_VALUES")
    max_activation_bytes: int = default("EXPLAINER_MAX_ACTIVATION_MB") * 2**20
    batch: int = 8

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelLimits:
        """Limits from ``EXPLAINER_MAX_PARAMS``, ``EXPLAINER_MAX_INPUT_VALUES`` and ``EXPLAINER_MAX_ACTIVATION_MB``.

        Unset or empty variables keep the defaults; ``environ`` defaults to ``os.environ``.

        Raises
        ------
        ConfigError
            When a variable is set to anything but a positive whole number (``_`` separators allowed).
        """
        return cls(
            max_params=setting("EXPLAINER_MAX_PARAMS", environ),
            max_input_pixels=setting("EXPLAINER_MAX_INPUT_VALUES", environ),
            max_activation_bytes=setting("EXPLAINER_MAX_ACTIVATION_MB", environ) * 2**20,
        )


@dataclass(frozen=True)
class ModelFacts:
    """What a model file declares, read without allocating its weights.

    Attributes
    ----------
    params : int
        Parameter count: the larger of what the weights file holds and what the architecture creates.
    input_shape : tuple
        The (first) input's shape without the batch dimension, as declared (``None`` for a free size).
    largest_activation : int
        Values per image of the largest layer output (the input included), free sizes taken as
        :data:`DEFAULT_SIDE`; 0 when the architecture could not be built safely (see ``largest_layer``).
    largest_layer : str
        Name of that layer; empty when the architecture could not be built safely.
    """

    params: int
    input_shape: tuple
    largest_activation: int
    largest_layer: str


@dataclass(frozen=True)
class _Inspection:
    facts: ModelFacts
    undecided: str = ""  # why the activations are unknown although a real load could succeed ("" = decided)


def inspect_model_file(path: str | os.PathLike) -> ModelFacts:
    """Read a model file's parameter count, input shape and largest activation, allocating no weights.

    Parameters
    ----------
    path : str or path
        A ``.keras`` archive or a legacy ``.h5``/``.hdf5`` file.

    Returns
    -------
    ModelFacts
        When the architecture cannot be built in safe mode (a ``Lambda``, an unknown custom layer), the facts hold
        what could be read (``largest_activation`` 0): loading the file will report the problem itself.

    Raises
    ------
    ModelError
        When the file is not a readable Keras model; the message names no path.
    """
    return _inspect(Path(path)).facts


def check_model_file(path: str | os.PathLike, limits: ModelLimits | None = None) -> ModelFacts:
    """Inspect a model file and refuse it, before anything is allocated, when it is over a limit.

    Parameters
    ----------
    path : str or path
        A ``.keras`` archive or a legacy ``.h5``/``.hdf5`` file.
    limits : ModelLimits, optional
        Defaults to :meth:`ModelLimits.from_env`.

    Returns
    -------
    ModelFacts
        The facts of an affordable model.

    Raises
    ------
    ModelError
        With a plain sentence stating the limit that was exceeded, or why the file cannot be judged.
    """
    limits = limits or ModelLimits.from_env()
    inspection = _inspect(Path(path))
    facts = inspection.facts
    check_facts(facts, limits)
    if inspection.undecided:
        raise ModelError(
            "This model's layer sizes cannot be read from its file without loading it "
            f"({inspection.undecided}), so this server does not load it."
        )
    return facts


def check_facts(facts: ModelFacts, limits: ModelLimits) -> None:
    """Raise :class:`~explainer.errors.ModelError`, stating the limit, when ``facts`` exceed one of ``limits``."""
    if facts.params > limits.max_params:
        raise ModelError(
            f"This model has {_count(facts.params)} parameters; this server accepts at most "
            f"{_count(limits.max_params)}."
        )
    input_values = _values(facts.input_shape)
    if input_values > limits.max_input_pixels:
        raise ModelError(
            f"This model takes inputs of {_shape_text(facts.input_shape)} ({_count(input_values)} values per image); "
            f"this server accepts at most {_count(limits.max_input_pixels)} values (height × width × channels)."
        )
    needed = facts.largest_activation * limits.batch * FLOAT_BYTES
    if needed > limits.max_activation_bytes:
        raise ModelError(
            f"For the {limits.batch} images the chat runs at once, this model's largest layer output "
            f"({_quote(facts.largest_layer)}, {_count(facts.largest_activation)} values per image) needs "
            f"{_bytes(needed)}; this server allows at most {_bytes(limits.max_activation_bytes)}."
        )


def check_loaded_model(model: keras.Model, limits: ModelLimits | None = None) -> ModelFacts:
    """The same limits for a model already built (a Hub preset has no single file to read first).

    Its memory is already taken: the caller must drop the model when this raises.
    """
    facts = _model_facts(model)
    check_facts(facts, limits or ModelLimits.from_env())
    return facts


def _model_facts(model: keras.Model) -> ModelFacts:
    name, values = _largest_activation(model)
    return ModelFacts(int(model.count_params()), tuple(model.inputs[0].shape[1:]), values, name)


# --- reading the file -------------------------------------------------------------------------------------------


def _inspect(path: Path) -> _Inspection:
    if not path.is_file():
        raise ModelError("No model file was received.")
    if path.suffix.lower() in _LEGACY_SUFFIXES:
        config, weight_params = _read_legacy(path)
        legacy = True
    elif path.suffix.lower() == ".keras":
        config, weight_params = _read_archive(path)
        legacy = False
    else:
        raise ModelError(_NOT_A_MODEL)
    return _facts_from_config(config, weight_params, legacy)


def _read_archive(path: Path) -> tuple[dict, int]:
    """``config.json`` (bounded) and the weights' parameter count of a ``.keras`` zip, extracting nothing to disk."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = _parse_config(_read_member(archive, CONFIG_MEMBER))
            if WEIGHTS_MEMBER not in archive.namelist():
                return config, 0
            with _weights_file(archive, path) as weights:
                return config, _dataset_params(weights, skip=("optimizer",))
    except ModelError:
        raise
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, RuntimeError, EOFError) as err:
        raise ModelError(_NOT_A_MODEL) from err


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError as err:
        raise ModelError(_NOT_A_MODEL) from err
    if info.file_size > CONFIG_MAX_BYTES:
        raise ModelError(_config_too_big(info.file_size))
    with archive.open(info) as member:
        data = member.read(CONFIG_MAX_BYTES + 1)  # the directory's size could lie: never read more than the cap
    if len(data) > CONFIG_MAX_BYTES:
        raise ModelError(_config_too_big(len(data)))
    return data


@contextmanager
def _weights_file(archive: zipfile.ZipFile, path: Path) -> Iterator[h5py.File]:
    """The weights member opened by h5py in place (stored) or inflated in memory (deflated, bounded)."""
    info = archive.getinfo(WEIGHTS_MEMBER)
    if info.flag_bits & 0x1:
        raise ModelError(_NOT_A_MODEL)  # encrypted
    with open(path, "rb") as raw:
        if info.compress_type == zipfile.ZIP_STORED:
            # Not archive.open(): before Python 3.12 its seek() re-reads the member from the start on every
            # backward jump (52 s for NASNetLarge's 356 MB); the stored bytes are read where they lie instead.
            source: Any = _Window(raw, _data_offset(raw, info), info.file_size)
        elif info.file_size <= DEFLATED_WEIGHTS_MAX_BYTES:
            with archive.open(info) as member:
                source = io.BytesIO(member.read(DEFLATED_WEIGHTS_MAX_BYTES + 1))
        else:
            raise ModelError(
                f"This model file's weights are compressed inside the archive ({_bytes(info.file_size)} unpacked); "
                f"this server reads compressed weights of at most {_bytes(DEFLATED_WEIGHTS_MAX_BYTES)}. "
                "Save the model again with model.save(), which stores them uncompressed."
            )
        weights = h5py.File(source, "r")
        try:
            yield weights
        finally:
            weights.close()  # before the file closes: h5py must not touch a closed file object


def _data_offset(raw: io.BufferedReader, info: zipfile.ZipInfo) -> int:
    """Where a member's bytes start: after its local header (30 bytes, the name and the extra field)."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise ModelError(_NOT_A_MODEL)
    name_length = int.from_bytes(header[26:28], "little")
    extra_length = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_length + extra_length


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes of ``raw`` starting at ``start``."""

    def __init__(self, raw: io.BufferedReader, start: int, size: int):
        super().__init__()
        self._raw, self._start, self._size, self._pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        if count == 0:
            return 0
        self._raw.seek(self._start + self._pos)
        got = self._raw.readinto(memoryview(buffer)[:count]) or 0
        self._pos += got
        return got


def _read_legacy(path: Path) -> tuple[dict, int]:
    """``model_config`` (bounded) and the ``model_weights`` parameter count of a legacy HDF5 model file."""
    try:
        with h5py.File(path, "r") as weights:
            if "model_config" not in weights.attrs:
                raise ModelError("This .h5 file holds weights only, not a whole model (no architecture inside).")
            size = weights.attrs.get_id("model_config").get_storage_size()  # a variable-length string says 16
            if size > CONFIG_MAX_BYTES:
                raise ModelError(_config_too_big(size))
            raw = weights.attrs["model_config"]  # so its length is known only here: at most the file's size
            if len(raw) > CONFIG_MAX_BYTES:
                raise ModelError(_config_too_big(len(raw)))
            link = weights.get("model_weights", getclass=True, getlink=True)
            group = weights["model_weights"] if link is h5py.HardLink else None  # never open a linked file
            params = _dataset_params(group) if isinstance(group, h5py.Group) else 0
    except ModelError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as err:
        raise ModelError(_NOT_A_MODEL) from err
    from explainer.compat.keras_internals import json_utils

    raw = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    try:
        config = json_utils.decode(raw)
    except (ValueError, TypeError, KeyError, RecursionError) as err:
        raise ModelError(_NOT_A_MODEL) from err
    if not isinstance(config, dict):
        raise ModelError(_NOT_A_MODEL)
    return config, params


def _parse_config(data: bytes) -> dict:
    try:
        config = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelError(_NOT_A_MODEL) from err
    if not isinstance(config, dict):
        raise ModelError(_NOT_A_MODEL)
    return config


def _dataset_params(group: h5py.Group, skip: tuple[str, ...] = ()) -> int:
    """Sum of the products of the dataset shapes under ``group`` (shapes only: no data is read)."""
    total = 0
    visited = 0

    def visit(name: str, obj: Any) -> None:
        nonlocal total, visited
        visited += 1
        if visited > MAX_H5_OBJECTS:
            raise ModelError(f"This model's weights file holds more than {MAX_H5_OBJECTS:,} objects.")
        if name.split("/", 1)[0] in skip:  # the optimizer's slots are not loaded (compile=False)
            return
        if isinstance(obj, h5py.Dataset) and obj.shape is not None:
            total += math.prod(obj.shape)

    group.visititems(visit)  # follows hard links only: no external file is opened
    return total


# --- building the architecture without weights ------------------------------------------------------------------


def _facts_from_config(config: dict, weight_params: int, legacy: bool) -> _Inspection:
    layers = _count_layers(config)
    if layers > MAX_LAYERS:
        raise ModelError(f"This model has {layers:,} layers; this server accepts at most {MAX_LAYERS:,}.")
    declared_input = _declared_input_shape(config)
    with _deferred_variables() as created:  # the walk too: a layer that touched a weight would raise, not allocate
        try:
            model = _build(config, legacy)
        except Exception as err:  # anything the safe deserializer refuses: the real load refuses it the same way
            params = max(weight_params, _variable_params(created))
            undecided = "it uses a layer that needs its weights to be built" if _needs_state(err) else ""
            return _Inspection(ModelFacts(params, declared_input, 0, ""), undecided)
        inputs = _model_inputs(model)
        if not inputs:  # a lone layer or an unbuilt model: no sizes to read, the load will say what it is
            return _Inspection(ModelFacts(max(weight_params, _variable_params(created)), declared_input, 0, ""))
        # count_params() leaves out the random layers' seed states, as the weights file does
        params = max(weight_params, model.count_params())
        name, values = _largest_activation(model)
    return _Inspection(ModelFacts(params, tuple(inputs[0].shape[1:]), values, name))


def _model_inputs(model: Any) -> list:
    if not isinstance(model, keras.Model) or not model.built:
        return []
    try:
        return list(model.inputs or [])
    except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
        return []


def _count_layers(config: dict) -> int:
    """Entries of every ``layers`` list in the config, nested models included (iterative: no recursion limit)."""
    count, stack = 0, [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            layers = node.get("layers")
            if isinstance(layers, list):
                count += len(layers)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


@contextmanager
def _deferred_variables() -> Iterator[list]:
    """A stateless scope whose variables are never initialised; yields the variables created inside it.

    Keras keeps deferred variables in a per-thread list that the next stateless scope to close would initialise
    (allocate); the list is swapped out here and the caller's restored on exit, so ours are simply dropped.
    """
    from explainer.compat.keras_internals import global_state

    key = "uninitialized_variables"
    saved = global_state.get_global_attribute(key)
    created: list = []
    global_state.set_global_attribute(key, created)
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield created
    finally:
        global_state.set_global_attribute(key, saved)


def _build(config: dict, legacy: bool) -> Any:
    """The model object from its config, in safe mode, uncompiled (as ``load_model(compile=False)`` builds it)."""
    from explainer.compat.keras_internals import serialization_lib

    config = copy.deepcopy(config)  # Keras pops keys out of the config it builds from
    if legacy:
        from explainer.compat.keras_internals import saving_options, saving_utils

        with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(True):
            return saving_utils.model_from_config(config, custom_objects={})
    config["compile_config"] = None
    with serialization_lib.ObjectSharingScope():
        return serialization_lib.deserialize_keras_object(config, safe_mode=True)


def _needs_state(err: Exception) -> bool:
    """A layer that creates or reads a variable's value while it is built cannot be sized without its weights."""
    return "stateless scope" in str(err)


def _variable_params(variables: list) -> int:
    return sum(math.prod(v.shape) for v in variables)


def _largest_activation(model: keras.Model) -> tuple[str, int]:
    """(name, values per image) of the largest output of any layer, nested models included, or of the input."""
    sizes: dict[str, int] = {}
    inputs = [keras.KerasTensor(_concrete(x.shape), dtype=x.dtype) for x in model.inputs]
    for x, spec in zip(model.inputs, inputs, strict=True):
        sizes[_input_name(x)] = _values(spec.shape[1:])
    try:
        _trace(model, inputs, "", sizes)
    except Exception:  # a layer that cannot take the substituted size: fall back to the declared shapes
        _static_sizes(model, "", sizes)
    name = max(reversed(sizes), key=sizes.get)  # on a tie, the later layer (not the input) is named
    return name, sizes[name]


def _trace(model: keras.Model, inputs: Any, prefix: str, sizes: dict[str, int]) -> Any:
    """Run symbolic tensors of the concrete input size through ``model``'s graph, recording every output's size."""
    graph = model if hasattr(model, "_run_through_graph") else getattr(model, "_functional", None)
    if graph is None:
        raise TypeError("not a graph model")

    def operation(op: Any) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            name = f"{prefix}{op.name}"
            if isinstance(op, keras.Model):  # its output is its last layer's, recorded under the inner name
                return _trace(op, args[0] if len(args) == 1 else list(args), f"{name}/", sizes)
            outputs = op.compute_output_spec(*args, **kwargs)
            sizes[name] = max(sizes.get(name, 0), _tensor_values(outputs))
            return outputs

        return call

    return graph._run_through_graph(inputs, operation_fn=operation)


def _static_sizes(model: keras.Model, prefix: str, sizes: dict[str, int]) -> None:
    """Declared output shapes of every layer (free sizes as :data:`DEFAULT_SIDE`), nested models included."""
    for layer in model.layers:
        name = f"{prefix}{layer.name}"
        try:
            outputs = layer.output
        except (AttributeError, ValueError):  # a layer used several times or never called has no single output
            outputs = None
        if isinstance(layer, keras.Model):
            _static_sizes(layer, f"{name}/", sizes)
        elif outputs is not None:
            sizes[name] = max(sizes.get(name, 0), _tensor_values(outputs))


def _tensor_values(outputs: Any) -> int:
    return sum(_values(_concrete(t.shape)[1:]) for t in keras.tree.flatten(outputs) if hasattr(t, "shape"))


def _concrete(shape: Any) -> tuple:
    """A batch shape with its free sizes filled in: batch 1, other dimensions :data:`DEFAULT_SIDE`."""
    dims = list(shape)
    return (1, *(DEFAULT_SIDE if d is None else int(d) for d in dims[1:]))


def _input_name(tensor: Any) -> str:
    history = getattr(tensor, "_keras_history", None)
    return history.operation.name if history is not None else "input"


def _declared_input_shape(config: dict) -> tuple:
    """The first input's declared shape (no batch) found in a config without building it; () when not found."""
    inner = config.get("config")
    if not isinstance(inner, dict):
        return ()
    layers = inner.get("layers") if isinstance(inner.get("layers"), list) else []
    candidates = [layer.get("config") for layer in layers if isinstance(layer, dict)]
    for layer_config in [inner, *candidates]:
        if not isinstance(layer_config, dict):
            continue
        for key in ("batch_shape", "batch_input_shape", "build_input_shape"):
            shape = layer_config.get(key)
            if isinstance(shape, (list, tuple)) and len(shape) > 1:
                return tuple(shape[1:])
    return ()


# --- plain numbers for the messages -----------------------------------------------------------------------------


def _values(shape: Any) -> int:
    """Values in a shape without its batch dimension; free sizes (``None``) as :data:`DEFAULT_SIDE`."""
    return math.prod(DEFAULT_SIDE if d is None else int(d) for d in shape) if len(shape) else 0


def _count(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.1f} G"
    if n >= 10**6:
        return f"{n / 1e6:.0f} M" if n >= 10**8 else f"{n / 1e6:.1f} M"
    return f"{n:,}"


def _bytes(n: int) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.0f} MB"


def _shape_text(shape: tuple) -> str:
    return "×".join("any" if d is None else str(d) for d in shape) or "an unknown shape"


def _quote(name: str) -> str:
    name = name if len(name) <= 60 else name[:57] + "..."
    return f"'{name}'" if name else "a layer"


def _config_too_big(size: int) -> str:
    return (
        f"This model's architecture description is {_bytes(size)}; this server reads at most "
        f"{_bytes(CONFIG_MAX_BYTES)}."
    )

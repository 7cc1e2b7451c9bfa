"""The model budget: hostile files are refused from what they declare, before a weight is allocated.

The hostile ``.keras`` files of issue 8 are written by hand (``config.json`` plus a weights file whose HDF5 datasets
declare their shapes but hold no data: HDF5 allocates chunks lazily), exactly as an attacker would; the writer is
checked on a small model that Keras loads.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving.legacy_h5_format import save_model_to_hdf5

from explainer.demo import MODEL_NAMES, model_path
from explainer.errors import ConfigError, ModelError
from explainer.server.budget import (
    CONFIG_MAX_BYTES,
    DEFAULT_SIDE,
    DEFLATED_WEIGHTS_MAX_BYTES,
    MAX_H5_OBJECTS,
    ModelFacts,
    ModelLimits,
    check_model_file,
    inspect_model_file,
)

HUGE = 20_000  # the Dense layer: 20000 x 20000 = 400 M parameters, 1.6 GB of float32
RSS_LIMIT = 600 * 2**20
WIDE_INPUT = (6000, 6000, 3)


# --- writing model files by hand ----------------------------------------------------------------------------------


def dense_config(units: int, features: int, extra_layers: list[dict] | None = None) -> dict:
    """The config of ``Sequential([Input((features,)), Dense(units), *extra])``, taken from a tiny real model."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="dense")], name="hostile")
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    inner = config["config"]
    inner["layers"][0]["config"]["batch_shape"] = [None, features]
    inner["layers"][1]["config"]["units"] = units
    inner["layers"][1]["build_config"] = {"input_shape": [None, features]}
    inner["build_input_shape"] = [None, features]
    config["build_config"] = {"input_shape": [None, features]}
    inner["layers"].extend(extra_layers or [])
    return config


def write_keras(path: Path, config: dict, shapes: dict[str, tuple], compression=zipfile.ZIP_STORED) -> Path:
    """A ``.keras`` zip with ``config`` and a weights file declaring ``shapes`` (dataset path -> shape), no data."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as weights:
        for name, shape in shapes.items():
            chunks = tuple(min(d, 1024) for d in shape) or None
            weights.create_dataset(name, shape=shape, dtype="f4", chunks=chunks, compression="gzip")
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": keras.__version__}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def dense_weights(units: int, features: int) -> dict[str, tuple]:
    return {"layers/dense/vars/0": (features, units), "layers/dense/vars/1": (units,)}


def hostile_dense(path: Path) -> Path:
    return write_keras(path, dense_config(HUGE, HUGE), dense_weights(HUGE, HUGE))


def wide_conv_model() -> keras.Model:
    inputs = keras.Input(WIDE_INPUT)
    outputs = keras.layers.Conv2D(64, 3, padding="same", name="wide_conv")(inputs)
    return keras.Model(inputs, outputs)


# --- measuring memory ---------------------------------------------------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_rss_growth(action) -> tuple[object, int]:
    """(result of ``action()``, growth of the process's peak resident memory while it ran, in bytes)."""
    before = _status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the peak) to the current RSS
    except OSError:
        return _sampled_growth(action, before)
    result = action()
    return result, _status("VmHWM") - before


def _sampled_growth(action, before: int) -> tuple[object, int]:
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _status("VmRSS"))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return result, max(peak[0], _status("VmRSS")) - before


# --- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("budget")


@pytest.fixture(scope="module")
def mobilenet_file(folder) -> tuple[Path, int]:
    model = keras.applications.MobileNetV2(weights=None)
    path = folder / "mobilenet_v2.keras"
    model.save(path)
    return path, model.count_params()


def refusal(check, *args) -> str:
    """The message of the ModelError that ``check(*args)`` must raise."""
    with pytest.raises(ModelError) as caught:
        check(*args)
    return str(caught.value)


def assert_plain(message: str, path: Path) -> None:
    assert str(path.parent) not in message and path.name not in message
    assert "Traceback" not in message and "keras.src" not in message and "explainer." not in message


# --- the hostile models of the issue ------------------------------------------------------------------------------


def test_the_hand_written_format_is_a_model_keras_loads(folder):
    path = write_keras(folder / "small_dense.keras", dense_config(30, 20), dense_weights(30, 20))
    model = keras.saving.load_model(path, compile=False)
    assert model.count_params() == 20 * 30 + 30
    assert inspect_model_file(path) == ModelFacts(630, (20,), 30, "dense")


def test_a_20000_square_dense_layer_is_refused_without_allocating_it(folder):
    path = hostile_dense(folder / "dense_bomb.keras")
    assert path.stat().st_size < 1024 * 1024  # a small upload...

    def refuse() -> str:
        with pytest.raises(ModelError) as caught:
            check_model_file(path, ModelLimits())
        with keras.StatelessScope():  # no variable of the check is left over for Keras to allocate later
            pass
        return str(caught.value)

    message, growth = peak_rss_growth(refuse)
    assert growth < RSS_LIMIT
    assert "400 M parameters" in message and "at most 150 M" in message
    assert_plain(message, path)


def test_the_parameter_count_of_a_hostile_file_is_read_from_the_declared_shapes(folder):
    facts, growth = peak_rss_growth(lambda: inspect_model_file(hostile_dense(folder / "dense_bomb2.keras")))
    assert facts == ModelFacts(HUGE * HUGE + HUGE, (HUGE,), HUGE, "dense")
    assert growth < RSS_LIMIT


def test_a_weights_file_declaring_less_than_the_architecture_does_not_hide_it(folder):
    path = write_keras(folder / "lying_weights.keras", dense_config(HUGE, HUGE), dense_weights(2, 2))
    assert inspect_model_file(path).params == HUGE * HUGE + HUGE


def test_a_tiny_model_with_a_6000_pixel_input_is_refused_by_the_memory_budgets(folder):
    model = wide_conv_model()
    path = folder / "wide_conv.keras"
    model.save(path)
    assert path.stat().st_size < 64 * 1024

    def refusals() -> tuple[str, str]:
        with pytest.raises(ModelError) as by_input:
            check_model_file(path, ModelLimits())
        with pytest.raises(ModelError) as by_activation:
            check_model_file(path, ModelLimits(max_input_pixels=10**9))
        return str(by_input.value), str(by_activation.value)

    (by_input, by_activation), growth = peak_rss_growth(refusals)
    assert growth < RSS_LIMIT
    assert "6000×6000×3" in by_input and "12.6 M values" in by_input
    assert "'wide_conv'" in by_activation and "2.3 G values per image" in by_activation
    assert "68.7 GB" in by_activation and "at most 1.0 GB" in by_activation
    facts = inspect_model_file(path)
    assert facts == ModelFacts(model.count_params(), WIDE_INPUT, 6000 * 6000 * 64, "wide_conv")


def test_a_hostile_legacy_h5_is_refused_too(folder):
    path = folder / "dense_bomb.h5"
    with h5py.File(path, "w") as legacy:
        legacy.attrs["model_config"] = json.dumps(dense_config(HUGE, HUGE))
        for name, shape in {"model_weights/dense/hostile/dense/kernel": (HUGE, HUGE)}.items():
            legacy.create_dataset(name, shape=shape, dtype="f4", chunks=(1024, 1024), compression="gzip")
    message, growth = peak_rss_growth(lambda: refusal(check_model_file, path))
    assert growth < RSS_LIMIT
    assert "400 M parameters" in message


# --- honest models pass, with exact numbers -----------------------------------------------------------------------


def test_mobilenet_v2_passes_with_its_exact_parameter_count(mobilenet_file):
    path, count = mobilenet_file
    facts = check_model_file(path, ModelLimits())
    assert facts.params == count
    assert facts.input_shape == (224, 224, 3)
    assert facts.largest_activation == 113 * 113 * 96  # the first expansion (112x112x96), zero-padded
    assert facts.largest_layer == "block_1_pad"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_bundled_demo_models_pass(name):
    path = model_path(name)
    facts = check_model_file(path, ModelLimits())
    assert facts.params == keras.saving.load_model(path, compile=False).count_params()
    assert facts.input_shape == (128, 128, 3)


def test_the_parameter_budget_is_a_setting(mobilenet_file):
    path, count = mobilenet_file
    with pytest.raises(ModelError, match=r"this server accepts at most 3\.0 M\.$"):
        check_model_file(path, ModelLimits(max_params=3_000_000))
    assert check_model_file(path, ModelLimits(max_params=count)).params == count


def test_a_legacy_h5_is_inspected_from_its_model_config(folder, gap_model):
    path = folder / "gap.h5"
    save_model_to_hdf5(gap_model, str(path))
    facts = check_model_file(path, ModelLimits())
    assert facts == ModelFacts(gap_model.count_params(), (32, 32, 3), 32 * 32 * 6, "relu_a")


def test_a_free_input_size_is_sized_at_the_apps_default(folder):
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs))
    path = folder / "free_size.keras"
    keras.Model(inputs, outputs).save(path)
    facts = inspect_model_file(path)
    assert facts.input_shape == (None, None, 3)
    assert (facts.largest_layer, facts.largest_activation) == ("conv", DEFAULT_SIDE * DEFAULT_SIDE * 8)


def test_layers_inside_a_nested_model_are_sized_at_the_outer_input(folder):
    base_input = keras.Input((None, None, 3))
    base_output = keras.layers.Conv2D(16, 3, padding="same", name="inner_conv")(base_input)
    base = keras.Model(base_input, base_output, name="base")
    inputs = keras.Input((64, 48, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(base(inputs)))
    model = keras.Model(inputs, outputs)
    path = folder / "nested.keras"
    model.save(path)
    facts = inspect_model_file(path)
    assert facts == ModelFacts(model.count_params(), (64, 48, 3), 64 * 48 * 16, "base/inner_conv")


def test_a_recompressed_archive_is_still_read(folder, gap_model):
    saved = folder / "gap.keras"
    gap_model.save(saved)
    deflated = folder / "gap_deflated.keras"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    assert inspect_model_file(deflated) == inspect_model_file(saved)
    assert inspect_model_file(saved).params == gap_model.count_params()


# --- code in the file is never run ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_lambda_layer_is_not_run_and_the_check_leaves_the_refusal_to_the_load(folder, suffix):
    marker = folder / f"lambda_ran{suffix}.txt"
    # A Python lambda is saved as byte code (a named function by name only); the marker path is a constant in it.
    leave_a_mark = eval(f"lambda x: (open({str(marker)!r}, 'a').write('ran'), x)[1]")
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Lambda(leave_a_mark)(inputs)))
    model = keras.Model(inputs, outputs)
    path = folder / f"lambda{suffix}"
    if suffix == ".h5":
        save_model_to_hdf5(model, str(path))
    else:
        model.save(path)
    marker.unlink()
    keras.saving.load_model(path, safe_mode=False)  # the control: the file's code is live when loaded unsafely
    assert marker.exists()
    marker.unlink()

    facts = inspect_model_file(path)
    assert check_model_file(path, ModelLimits()) == facts
    assert not marker.exists()
    assert facts.params == model.count_params()
    assert (facts.input_shape, facts.largest_activation, facts.largest_layer) == ((8, 8, 3), 0, "")
    with pytest.raises(ValueError, match="Lambda"):  # safe mode, as the app loads: the load names the problem
        keras.saving.load_model(path, compile=False)


def test_a_lambda_after_a_huge_layer_does_not_hide_its_parameters(folder):
    lambda_layer = {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {"name": "code", "function": {"class_name": "__lambda__", "config": {"code": "not even code"}}},
        "registered_name": None,
    }
    path = write_keras(folder / "lambda_bomb.keras", dense_config(HUGE, HUGE, [lambda_layer]), {})
    message, growth = peak_rss_growth(lambda: refusal(check_model_file, path))
    assert growth < RSS_LIMIT
    assert "400 M parameters" in message


@keras.saving.register_keras_serializable(package="test_budget")
class FixedOffset(keras.layers.Layer):
    """A registered custom layer whose weight is created from a value: it cannot be built without allocating it."""

    def build(self, input_shape):
        self.offset = keras.Variable(np.ones(input_shape[-1:], "float32"), trainable=False)

    def call(self, x):
        return x + self.offset


def test_a_model_that_cannot_be_sized_without_its_weights_is_refused_plainly(folder):
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(FixedOffset()(inputs)))
    path = folder / "needs_weights.keras"
    keras.Model(inputs, outputs).save(path)
    assert keras.saving.load_model(path, compile=False) is not None  # Keras itself would load it
    assert inspect_model_file(path).largest_activation == 0
    message = refusal(check_model_file, path, ModelLimits())
    assert "cannot be read from its file without loading it" in message
    assert_plain(message, path)


def test_an_unknown_custom_layer_is_left_to_the_load_to_report(folder):
    config = dense_config(4, 3)
    unknown = {"module": "some_package.layers", "class_name": "Mystery", "config": {"name": "mystery"}}
    config["config"]["layers"].append({**unknown, "registered_name": "some_package>Mystery"})
    path = write_keras(folder / "unknown_layer.keras", config, dense_weights(4, 3))
    assert check_model_file(path, ModelLimits()) == ModelFacts(3 * 4 + 4, (3,), 0, "")
    with pytest.raises(TypeError, match="Mystery"):
        keras.saving.load_model(path, compile=False)


def test_random_layers_seed_states_are_not_counted_as_parameters(folder):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dropout(0.5)(keras.layers.RandomFlip()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    path = folder / "random_layers.keras"
    model.save(path)
    assert inspect_model_file(path).params == model.count_params() == 8 * 8 * 3 * 2 + 2


# --- files that are not models, and the guards of the archive -----------------------------------------------------


def test_a_config_with_too_many_layers_is_refused_before_it_is_built(folder):
    config = dense_config(4, 4)
    dense = config["config"]["layers"][1]
    config["config"]["layers"].extend({**dense, "config": {**dense["config"], "name": f"d{i}"}} for i in range(1600))
    path = write_keras(folder / "many_layers.keras", config, {})
    message, growth = peak_rss_growth(lambda: refusal(inspect_model_file, path))
    assert message == "This model has 1,602 layers; this server accepts at most 1,500."
    assert growth < 64 * 2**20


def test_a_weights_file_with_too_many_arrays_is_not_walked_to_the_end(folder):
    path = folder / "many_arrays.h5"
    with h5py.File(path, "w") as legacy:
        legacy.attrs["model_config"] = json.dumps(dense_config(4, 4))
        group = legacy.create_group("model_weights")
        for i in range(MAX_H5_OBJECTS + 1):
            group.create_dataset(str(i), shape=(1,), dtype="f4")
    assert refusal(inspect_model_file, path) == "This model's weights file holds more than 20,000 objects."


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_random_bytes_give_a_plain_error(folder, suffix):
    path = folder / f"random{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError) as caught:
        check_model_file(path, ModelLimits())
    assert "not a Keras model" in str(caught.value)
    assert_plain(str(caught.value), path)


def test_an_archive_without_a_config_is_not_a_model(folder):
    path = folder / "no_config.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(ModelError, match="not a Keras model"):
        inspect_model_file(path)


def test_an_oversized_config_is_refused_before_it_is_read(folder):
    path = folder / "config_bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", " " * (CONFIG_MAX_BYTES + 1))
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(ModelError, match="architecture description is 8 MB; this server reads at most 8 MB"):
        inspect_model_file(path)


def test_an_oversized_legacy_config_is_refused_before_it_is_parsed(folder):
    path = folder / "config_bomb.h5"
    with h5py.File(path, "w") as legacy:
        legacy.attrs["model_config"] = "[" * (CONFIG_MAX_BYTES + 1)  # a variable-length string: no size up front
    with pytest.raises(ModelError, match="architecture description is 8 MB; this server reads at most 8 MB"):
        inspect_model_file(path)


def test_a_legacy_weights_group_linked_to_another_file_is_not_followed(folder, gap_model):
    other = folder / "other_weights.h5"
    with h5py.File(other, "w") as elsewhere:
        elsewhere.create_dataset("model_weights/big", shape=(HUGE, HUGE), dtype="f4", chunks=(1024, 1024))
    path = folder / "linked.h5"
    save_model_to_hdf5(gap_model, str(path))
    with h5py.File(path, "a") as legacy:
        del legacy["model_weights"]
        legacy["model_weights"] = h5py.ExternalLink(str(other), "/model_weights")
        assert "big" in legacy["model_weights"]  # the link is live: h5py follows it when asked
    assert inspect_model_file(path).params == gap_model.count_params()  # from the architecture alone


def test_large_compressed_weights_are_refused_without_inflating_them(folder):
    path = folder / "deflated_weights.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("config.json", json.dumps(dense_config(30, 20)))
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            block = bytes(2**24)
            for _ in range(DEFLATED_WEIGHTS_MAX_BYTES // len(block) + 1):
                member.write(block)
    message, growth = peak_rss_growth(lambda: refusal(inspect_model_file, path))
    assert growth < 64 * 2**20
    assert "compressed inside the archive" in message and "at most 256 MB" in message


def test_a_weights_only_h5_is_named_as_such(folder, gap_model):
    path = folder / "weights_only.weights.h5"
    gap_model.save_weights(path)
    with pytest.raises(ModelError, match="weights only"):
        inspect_model_file(path)


def test_a_missing_file_names_no_path(folder):
    path = folder / "absent.keras"
    with pytest.raises(ModelError) as caught:
        inspect_model_file(path)
    assert_plain(str(caught.value), path)


# --- limits from the environment ----------------------------------------------------------------------------------


def test_limits_are_read_from_the_environment():
    limits = ModelLimits.from_env(
        {
            "EXPLAINER_MAX_PARAMS": "1_000_000",
            "EXPLAINER_MAX_INPUT_VALUES": "786432",
            "EXPLAINER_MAX_ACTIVATION_MB": " 256 ",
        }
    )
    assert limits == ModelLimits(max_params=1_000_000, max_input_pixels=786_432, max_activation_bytes=256 * 2**20)
    assert ModelLimits.from_env({}) == ModelLimits()
    assert ModelLimits.from_env({"EXPLAINER_MAX_PARAMS": ""}) == ModelLimits()
    assert ModelLimits().max_params >= 138_357_544  # VGG16, the largest zoo model


@pytest.mark.parametrize("value", ["many", "-5", "0", "1.5", "150M"])
def test_a_bad_limit_in_the_environment_is_a_clear_error(value):
    message = (f"EXPLAINER_MAX_ACTIVATION_MB must be a positive whole number of megabytes (for example 1024); "
               f"it is set to '{value}'.")
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        ModelLimits.from_env({"EXPLAINER_MAX_ACTIVATION_MB": value})

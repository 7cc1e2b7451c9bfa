"""The ImageNet zoo: table, labels, Keras cache, offline behaviour, the default model.

Real weights cannot be downloaded here, so the loading path is tested with weights files written
from random-initialised models, under the exact names Keras asks for, in a temporary Keras cache
(``KERAS_HOME``). Downloads are tested against a server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import inspect
import os
import pathlib
import threading

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from explainer import explain, load_model, zoo
from explainer.models import preprocess

ZOO_NAMES = [
    "mobilenet_v2",
    "efficientnet_b0",
    "resnet50",
    "xception",
    "vgg16",
    "densenet121",
    "convnext_tiny",
]


def write_weights(model: keras.Model, path: pathlib.Path) -> None:
    """Save ``model``'s weights in the legacy HDF5 layout of the keras.applications files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as stream:
        legacy_h5_format.save_weights_to_hdf5_group(stream, model)


def same_weights(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def random_model(name: str, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return zoo.ZOO[name].builder(weights=None)


def calibrate_batch_norm(model: keras.Model, size: int) -> None:
    """Set every BatchNormalization's moving statistics from one random batch.

    With fresh statistics (mean 0, variance 1) a random MobileNetV2's activations vanish
    (out_relu ~1e-11) and every class gets probability 0.001: useless for checking labels.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the moving statistics become this batch's
    batch = np.random.default_rng(0).uniform(-1, 1, (4, size, size, 3)).astype(np.float32)
    model(batch, training=True)


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory) -> tuple[pathlib.Path, list[np.ndarray]]:
    """A Keras home holding a random-init MobileNetV2 weights file, and those weights."""
    home = tmp_path_factory.mktemp("keras_home")
    model = random_model("mobilenet_v2", seed=1)
    calibrate_batch_norm(model, size=224)
    write_weights(model, home / "models" / zoo.ZOO["mobilenet_v2"].weights_file)
    return home, model.get_weights()


@pytest.fixture
def offline_home(tmp_path, monkeypatch) -> pathlib.Path:
    """An empty Keras home, downloads off, no probe may touch the network."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("EXPLAINER_OFFLINE", "1")
    monkeypatch.delenv("EXPLAINER_MODEL", raising=False)
    monkeypatch.setattr(zoo, "_reachable", _no_network)
    return tmp_path


@pytest.fixture
def cached_home(mobilenet_weights, offline_home, monkeypatch) -> pathlib.Path:
    """Like ``offline_home``, with the MobileNetV2 weights file in the cache."""
    home, _weights = mobilenet_weights
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _no_network(host, port=443):
    raise AssertionError(f"the zoo probed {host} although it had no reason to")


def _probe_says(reachable: bool, calls: list[str]):
    def probe(host, port=443):
        calls.append(host)
        return reachable

    return probe


def _online(monkeypatch, reachable: bool) -> list[str]:
    """Downloads allowed, the host probe replaced by one that answers ``reachable``."""
    calls: list[str] = []
    monkeypatch.delenv("EXPLAINER_OFFLINE", raising=False)
    monkeypatch.setattr(zoo, "_reachable", _probe_says(reachable, calls))
    monkeypatch.setattr(zoo, "_probe_results", {})
    return calls


# --- labels -------------------------------------------------------------------------------


def test_labels_are_the_thousand_imagenet_classes_in_keras_order():
    labels = zoo.imagenet_labels()
    assert len(labels) == 1000
    assert len({label.lower() for label in labels}) == 1000
    assert all(label == label.strip() and 0 < len(label) <= 40 for label in labels)
    expected = {
        0: "tench",
        1: "goldfish",
        207: "golden retriever",
        281: "tabby cat",
        282: "tiger cat",
        409: "analog clock",
        999: "toilet paper",
    }
    assert {index: labels[index].lower() for index in expected} == expected


def test_labels_come_as_a_fresh_list_each_call():
    labels = zoo.imagenet_labels()
    labels[0] = "changed"
    assert zoo.imagenet_labels()[0] == "tench"


# --- the table ------------------------------------------------------------------------------


def test_zoo_holds_the_seven_models_with_known_conventions():
    assert list(zoo.ZOO) == ZOO_NAMES
    modes = {name: entry.preprocess for name, entry in zoo.ZOO.items()}
    assert modes == {
        "mobilenet_v2": "symmetric",
        "efficientnet_b0": "none",
        "resnet50": "caffe",
        "xception": "symmetric",
        "vgg16": "caffe",
        "densenet121": "torch",
        "convnext_tiny": "none",
    }
    sizes = {name: entry.input_size for name, entry in zoo.ZOO.items()}
    assert sizes == {name: (299, 299) if name == "xception" else (224, 224) for name in ZOO_NAMES}
    for entry in zoo.ZOO.values():
        assert entry.description.startswith(entry.description.split(" (")[0])
        assert 0.7 < entry.reference["top1_accuracy"] < 0.85


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_table_matches_what_keras_asks_for(name, monkeypatch):
    """Build each architecture with weights="imagenet" and catch Keras's request for the file:
    our file name, origin, hash, cache folder, input size and output must be Keras's own."""
    entry = zoo.ZOO[name]
    requests = []

    class Requested(Exception):
        pass

    def record(fname, origin, *args, **kwargs):
        # Keras calls get_file right after building; its local `model` is the built network.
        built = inspect.currentframe().f_back.f_locals["model"]
        requests.append((fname, origin, kwargs, built.input_shape, built.output_shape))
        raise Requested

    monkeypatch.setattr(file_utils, "get_file", record)
    with pytest.raises(Requested):
        entry.builder(weights="imagenet")
    [(fname, origin, kwargs, input_shape, output_shape)] = requests
    assert (fname, origin) == (entry.weights_file, entry.origin)
    assert kwargs.get("file_hash") == entry.file_hash
    assert kwargs.get("cache_subdir") == "models"
    assert tuple(input_shape[1:3]) == entry.input_size
    assert tuple(output_shape) == (None, 1000)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_preprocess_mode_equals_the_models_own_preprocess_input(name):
    entry = zoo.ZOO[name]
    batch = np.random.default_rng(0).uniform(0, 255, (2, 9, 7, 3)).astype(np.float32)
    keras_module = getattr(keras.applications, entry.keras_module)
    expected = np.asarray(keras_module.preprocess_input(batch.copy()))
    np.testing.assert_allclose(preprocess(batch.copy(), entry.preprocess), expected, atol=1e-4)


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mobilenet_v2", "mobilenet_v2"),
        ("MobileNetV2", "mobilenet_v2"),
        ("mobilenet-v2", "mobilenet_v2"),
        (" MOBILENETV2 ", "mobilenet_v2"),
        ("EfficientNetB0", "efficientnet_b0"),
        ("efficientnet-b0", "efficientnet_b0"),
        ("ResNet-50", "resnet50"),
        ("ConvNeXtTiny", "convnext_tiny"),
        ("DenseNet121", "densenet121"),
        ("shapes", None),
        ("resnet", None),
        ("mobilenet_v2.keras", None),
        (None, None),
        (42, None),
    ],
)
def test_resolve_name(spec, expected):
    assert zoo.resolve_name(spec) == expected


def test_unknown_name_is_a_clear_error(offline_home):
    with pytest.raises(ValueError, match="not an ImageNet zoo model"):
        zoo.weights_path("alexnet")


# --- the Keras cache ----------------------------------------------------------------------


def test_weights_path_follows_keras_home_at_call_time(tmp_path, monkeypatch):
    file_name = zoo.ZOO["resnet50"].weights_file
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert zoo.weights_path("ResNet50") == tmp_path / "kh" / "models" / file_name
    monkeypatch.delenv("KERAS_HOME")
    (tmp_path / "user").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert zoo.weights_path("resnet50") == tmp_path / "user" / ".keras" / "models" / file_name


def test_build_loads_the_cached_file_without_network(cached_home, mobilenet_weights):
    path = zoo.weights_path("mobilenet_v2")
    before = path.read_bytes()
    model = zoo.build("mobilenet_v2")
    _home, saved = mobilenet_weights
    assert same_weights(model.get_weights(), saved)
    # A fresh model has moving variance 1 everywhere; the file's statistics were calibrated.
    assert not np.allclose(model.get_layer("bn_Conv1").moving_variance, 1.0)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)
    assert path.read_bytes() == before


def test_cached_file_with_a_wrong_hash_is_used_and_kept(offline_home):
    """Keras would re-download (and offline, delete) a cached file whose hash differs from
    the official one; the zoo trusts the cache. EfficientNet also checks that the model is
    Keras's "imagenet" variant, which has an extra input Rescaling layer."""
    model = random_model("efficientnet_b0", seed=3)
    path = zoo.weights_path("efficientnet_b0")
    write_weights(model, path)
    built = zoo.build("efficientnet_b0")
    assert path.is_file()
    assert same_weights(built.get_weights(), model.get_weights())
    rescalings = [layer for layer in built.layers if isinstance(layer, keras.layers.Rescaling)]
    assert len(rescalings) == 2


def test_missing_weights_offline_name_file_and_place(offline_home):
    path = offline_home / "models" / zoo.ZOO["mobilenet_v2"].weights_file
    with pytest.raises(zoo.WeightsUnavailable) as caught:
        zoo.build("mobilenet_v2")
    message = str(caught.value)
    assert str(path) in message
    assert zoo.ZOO["mobilenet_v2"].origin in message
    assert "EXPLAINER_OFFLINE" in message
    assert caught.value.path == path
    assert isinstance(caught.value, RuntimeError)


def test_unreadable_cached_file_says_to_delete_it(offline_home):
    path = zoo.weights_path("mobilenet_v2")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an HDF5 file")
    with pytest.raises(zoo.WeightsUnavailable, match="cannot be loaded") as caught:
        zoo.build("mobilenet_v2")
    assert str(path) in str(caught.value)


# --- availability ---------------------------------------------------------------------------


def test_weights_available_from_the_cache(cached_home):
    available, reason = zoo.weights_available("mobilenet_v2")
    assert available
    assert str(zoo.weights_path("mobilenet_v2")) in reason


def test_weights_unavailable_offline(offline_home):
    available, reason = zoo.weights_available("mobilenet_v2", allow_download=True)
    assert not available
    assert "EXPLAINER_OFFLINE" in reason


def test_allow_download_false_skips_the_probe(offline_home, monkeypatch):
    monkeypatch.delenv("EXPLAINER_OFFLINE")
    available, reason = zoo.weights_available("mobilenet_v2", allow_download=False)
    assert not available
    assert "allow_download=False" in reason


@pytest.mark.parametrize("reachable", [True, False])
def test_download_possible_when_the_host_answers(offline_home, monkeypatch, reachable):
    calls = _online(monkeypatch, reachable)
    available, reason = zoo.weights_available("mobilenet_v2")
    assert available is reachable
    assert "storage.googleapis.com" in reason
    zoo.weights_available("mobilenet_v2")
    assert calls == ["storage.googleapis.com"]  # the answer is remembered


def test_probe_connects_to_a_listening_port_only():
    with http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as server:
        assert zoo._reachable("127.0.0.1", server.server_address[1])
        port = server.server_address[1]
    assert not zoo._reachable("127.0.0.1", port)


# --- downloading, from a server on 127.0.0.1 ------------------------------------------------


@pytest.fixture
def local_server(tmp_path):
    """Serves the files of ``tmp_path / "served"`` on 127.0.0.1 until the test ends."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_checks_the_hash_and_leaves_no_partial_file(local_server, tmp_path):
    served, url = local_server
    (served / "w.h5").write_bytes(b"weights" * 1000)
    target = tmp_path / "cache" / "models" / "w.h5"
    good_md5 = zoo._file_digest(served / "w.h5", "0" * 32)
    zoo._download(url + "w.h5", target, good_md5)
    assert target.read_bytes() == b"weights" * 1000
    target.unlink()
    with pytest.raises(zoo.WeightsUnavailable, match="wrong hash"):
        zoo._download(url + "w.h5", target, "0" * 32)
    with pytest.raises(zoo.WeightsUnavailable, match="download failed"):
        zoo._download(url + "missing.h5", target, None)
    assert os.listdir(target.parent) == []


def test_build_downloads_a_missing_file_into_the_cache(local_server, mobilenet_weights, offline_home, monkeypatch):
    served, url = local_server
    file_name = zoo.ZOO["mobilenet_v2"].weights_file
    home, saved = mobilenet_weights
    (served / file_name).write_bytes((home / "models" / file_name).read_bytes())
    monkeypatch.setattr(keras.src.applications.mobilenet_v2, "BASE_WEIGHT_PATH", url)
    _online(monkeypatch, reachable=True)
    model = zoo.build("mobilenet_v2")
    assert (offline_home / "models" / file_name).is_file()
    assert same_weights(model.get_weights(), saved)


# --- the default model ----------------------------------------------------------------------


def test_default_is_shapes_offline_without_weights(offline_home):
    name, reason = zoo.default_model_name()
    assert name == "shapes"
    assert str(zoo.weights_path("mobilenet_v2")) in reason


def test_default_is_mobilenet_when_cached(cached_home):
    name, reason = zoo.default_model_name()
    assert name == "mobilenet_v2"
    assert "cached" in reason


def test_default_is_mobilenet_when_downloadable(offline_home, monkeypatch):
    _online(monkeypatch, reachable=True)
    assert zoo.default_model_name() == (
        "mobilenet_v2",
        "MobileNetV2 (ImageNet) is the default: its weights will be downloaded on first use.",
    )


def test_environment_variable_chooses_the_default(offline_home, monkeypatch):
    monkeypatch.setenv("EXPLAINER_MODEL", "resnet50")
    assert zoo.default_model_name() == ("resnet50", "chosen by EXPLAINER_MODEL")


# --- through the public API -----------------------------------------------------------------


def test_load_model_and_explain_with_cached_weights(cached_home):
    model = load_model("MobileNetV2")
    labels = zoo.imagenet_labels()
    assert model.info.labels == labels
    assert tuple(model.info.input_size) == (224, 224)
    assert model.info.preprocess == "symmetric"
    image = np.random.default_rng(4).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    result = explain(model, image)
    assert result.layer == "out_relu"
    assert result.heatmap.shape == (224, 224)
    assert 0.0 <= result.heatmap.min() < result.heatmap.max() <= 1.0
    expected = keras.ops.convert_to_numpy(model.keras_model(preprocess(image[None].astype(np.float32), "symmetric")))[0]
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    assert result.target_index == int(np.argmax(expected))
    assert result.target_label == labels[result.target_index]
    assert [p.label for p in result.predictions] == [labels[p.index] for p in result.predictions]


def test_load_model_names_the_missing_file(offline_home):
    from explainer import ModelError

    with pytest.raises(ModelError) as caught:
        load_model("mobilenet_v2")
    assert str(zoo.weights_path("mobilenet_v2")) in str(caught.value)

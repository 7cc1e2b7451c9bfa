"""The ImageNet zoo: table, labels, the Keras cache path check, offline behaviour, the default model.

Real weights cannot be downloaded here, so loading is tested with weights files written from random-initialised
models (fixtures in ``conftest.py``): under the exact name Keras asks for in the tests' own Keras cache (Keras knows no
hash for MobileNetV2's file, so ``weights="imagenet"`` takes it as it would the real one), or given to
``build(weights=path)``. Keras's download is tested against a server on 127.0.0.1.
"""

from __future__ import annotations

import ast
import dataclasses
import http.server
import inspect
import os
import pathlib
import threading

import keras
import numpy as np
import pytest
from conftest import random_zoo_model
from keras.src.utils import file_utils

from explainer import ModelError, explain, load_model
from explainer.chat.messages import MESSAGES, message
from explainer.models import zoo
from explainer.models.loading import preprocess

ZOO_NAMES = [
    "mobilenet_v2",
    "efficientnet_b0",
    "resnet50",
    "xception",
    "vgg16",
    "densenet121",
    "convnext_tiny",
]


def same_weights(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.fixture
def offline(monkeypatch, keras_cache) -> pathlib.Path:
    """Downloads off, no default chosen by the environment; the (empty) Keras cache folder."""
    monkeypatch.setenv("EXPLAINER_OFFLINE", "1")
    monkeypatch.delenv("EXPLAINER_MODEL", raising=False)
    return keras_cache


@pytest.fixture
def online(offline, monkeypatch) -> pathlib.Path:
    """Downloads allowed (the tests' own servers are the only ones Keras is pointed at)."""
    monkeypatch.delenv("EXPLAINER_OFFLINE")
    return offline


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
    """Build each architecture with weights="imagenet" and catch Keras's request for the file: our file name,
    origin, cache folder, input size and output must be Keras's own."""
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


def test_zoo_leaves_caching_and_downloading_to_keras():
    """No private Keras module, no network code of its own: a path check is all the zoo does."""
    tree = ast.parse(pathlib.Path(zoo.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {module for module in imported if module.startswith("keras.src")}
    assert not imported & {"socket", "urllib", "urllib.request", "http", "http.client", "requests", "threading"}


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


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="not an ImageNet zoo model"):
        zoo.cached_weights_path("alexnet")


# --- where the cache is: a path check -------------------------------------------------------


def test_keras_home_follows_keras_rule(tmp_path, monkeypatch):
    assert zoo.keras_home({"KERAS_HOME": str(tmp_path / "kh")}) == tmp_path / "kh"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert zoo.keras_home({}) == tmp_path / ".keras"
    assert zoo.keras_home() == pathlib.Path(os.environ["KERAS_HOME"])  # the tests' own, set before Keras's import


def test_cached_weights_path_is_the_file_keras_asks_for_in_models(tmp_path):
    file_name = zoo.ZOO["resnet50"].weights_file
    assert zoo.cached_weights_path("ResNet-50", tmp_path) == tmp_path / "models" / file_name
    # Like keras.utils.get_file, a home that cannot be written is replaced by /tmp/.keras.
    missing = tmp_path / "does-not-exist"
    assert zoo.cached_weights_path("resnet50", missing) == pathlib.Path("/tmp/.keras/models") / file_name


def test_cached_weights_path_defaults_to_the_cache_keras_reads(keras_cache):
    assert zoo.cached_weights_path("mobilenet_v2") == keras_cache / zoo.ZOO["mobilenet_v2"].weights_file


def test_is_cached_looks_for_the_file_only(keras_cache):
    assert not zoo.is_cached("mobilenet_v2")
    (keras_cache / zoo.ZOO["mobilenet_v2"].weights_file).write_bytes(b"not even HDF5")
    assert zoo.is_cached("MobileNetV2")
    assert not zoo.is_cached("resnet50")


def test_weights_available_says_how(offline, cached_mobilenet, monkeypatch):
    assert zoo.weights_available("mobilenet_v2") == (True, "cached")
    assert zoo.weights_available("mobilenet_v2", allow_download=False) == (True, "cached")
    assert zoo.weights_available("resnet50") == (False, "offline")
    monkeypatch.delenv("EXPLAINER_OFFLINE")
    assert zoo.weights_available("resnet50") == (True, "download")
    assert zoo.weights_available("resnet50", allow_download=False) == (False, "offline")


# --- building -------------------------------------------------------------------------------


def test_build_reads_the_cached_file_through_keras(offline, cached_mobilenet, mobilenet_weights):
    before = cached_mobilenet.read_bytes()
    model = zoo.build("mobilenet_v2")
    _source, saved = mobilenet_weights
    assert same_weights(model.get_weights(), saved)
    # A fresh model has moving variance 1 everywhere; the file's statistics were calibrated.
    assert not np.allclose(model.get_layer("bn_Conv1").moving_variance, 1.0)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)
    assert cached_mobilenet.read_bytes() == before


def test_build_from_a_weights_file(tmp_path, offline):
    """Keras checks the hash of EfficientNet's cached file, so a file of our own goes in by path."""
    model = random_zoo_model("efficientnet_b0", seed=3)
    path = tmp_path / "b0.weights.h5"
    model.save_weights(path)
    built = zoo.build("EfficientNetB0", weights=path)
    assert same_weights(built.get_weights(), model.get_weights())
    assert built.output_shape == (None, 1000)
    assert not any(offline.iterdir())  # the cache was not involved


def test_missing_weights_offline_name_the_file_and_the_folder(offline):
    entry = zoo.ZOO["mobilenet_v2"]
    with pytest.raises(zoo.WeightsUnavailable) as caught:
        zoo.build("mobilenet_v2")
    text = str(caught.value)
    assert entry.weights_file in text
    assert "$KERAS_HOME/models" in text  # where Keras looks, as the operator set it
    assert entry.origin in text
    assert "EXPLAINER_OFFLINE" in text
    assert os.environ["KERAS_HOME"] not in text  # no server path in a message a visitor may see
    assert caught.value.path == offline / entry.weights_file
    assert not any(offline.iterdir())


def test_allow_download_false_keeps_to_the_cache(online):
    with pytest.raises(zoo.WeightsUnavailable, match="allow_download=False"):
        zoo.build("mobilenet_v2", allow_download=False)


def test_unreadable_cached_file_says_to_delete_it(offline):
    path = offline / zoo.ZOO["mobilenet_v2"].weights_file
    path.write_bytes(b"not an HDF5 file")
    with pytest.raises(zoo.WeightsUnavailable, match="cannot be loaded") as caught:
        zoo.build("mobilenet_v2")
    assert caught.value.path == path
    assert zoo.ZOO["mobilenet_v2"].weights_file in str(caught.value)


# --- Keras's download, from a server on 127.0.0.1 ---------------------------------------------


@pytest.fixture
def local_mobilenet_origin(tmp_path, monkeypatch) -> pathlib.Path:
    """Keras's MobileNetV2 download address pointed at a server on 127.0.0.1; the folder it serves."""
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
    monkeypatch.setattr(
        keras.src.applications.mobilenet_v2, "BASE_WEIGHT_PATH", f"http://127.0.0.1:{server.server_address[1]}/"
    )
    yield served
    server.shutdown()
    server.server_close()


def test_build_lets_keras_download_a_missing_file(online, local_mobilenet_origin, mobilenet_weights):
    source, saved = mobilenet_weights
    (local_mobilenet_origin / source.name).write_bytes(source.read_bytes())
    model = zoo.build("mobilenet_v2")
    assert (online / source.name).read_bytes() == source.read_bytes()
    assert same_weights(model.get_weights(), saved)


def test_failed_download_names_the_file_and_leaves_nothing(online, local_mobilenet_origin):
    with pytest.raises(zoo.WeightsUnavailable, match="download failed") as caught:
        zoo.build("mobilenet_v2")
    assert zoo.ZOO["mobilenet_v2"].weights_file in str(caught.value)
    assert not any(online.iterdir())


# --- the default model ----------------------------------------------------------------------


def test_default_is_shapes_offline_without_weights(offline, caplog):
    with caplog.at_level("WARNING", logger="explainer.models.zoo"):
        name, reason = zoo.default_model_name()
    assert name == zoo.FALLBACK_MODEL == "shapes"
    assert "MobileNetV2" in reason and "not on this server" in reason
    for detail in (zoo.ZOO["mobilenet_v2"].weights_file, "KERAS_HOME", "EXPLAINER_OFFLINE", ".keras"):
        assert detail not in reason  # a visitor reads plain words
    logged = caplog.text
    assert zoo.ZOO["mobilenet_v2"].weights_file in logged and "$KERAS_HOME/models" in logged  # the operator: where
    assert os.environ["KERAS_HOME"] not in logged


def test_default_is_mobilenet_when_cached(offline, cached_mobilenet):
    name, reason = zoo.default_model_name()
    assert name == "mobilenet_v2"
    assert reason == zoo._DEFAULT_REASONS["cached"].format(model="MobileNetV2")


def test_default_is_mobilenet_when_downloads_are_allowed_without_touching_the_network(online, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("choosing the default must not build or download anything")

    monkeypatch.setitem(zoo.ZOO, "mobilenet_v2", dataclasses.replace(zoo.ZOO["mobilenet_v2"], builder=no_build))
    name, reason = zoo.default_model_name()
    assert name == "mobilenet_v2"
    assert reason == zoo._DEFAULT_REASONS["download"].format(model="MobileNetV2")


def test_environment_variable_chooses_the_default(offline, monkeypatch):
    monkeypatch.setenv("EXPLAINER_MODEL", "resnet50")
    name, reason = zoo.default_model_name()
    assert name == "resnet50"
    assert reason == "resnet50 is the default: chosen by whoever runs this server."


def test_every_catalogue_sentence_renders():
    import string

    fields = {"name": "n", "model": "M", "fallback": "shapes", "file": "f.h5", "folder": "~/.keras/models"}
    sentences = {**MESSAGES, **zoo._DEFAULT_REASONS}
    for text in sentences.values():  # every placeholder any sentence uses (the chat's as well as the zoo's)
        fields.update({f: 0.5 if spec else "x" for _t, f, spec, _c in string.Formatter().parse(text)
                       if f and f not in fields})
    for key in MESSAGES:
        assert "{" not in message(key, **fields)
    for text in zoo._DEFAULT_REASONS.values():
        assert "{" not in text.format(**fields)
    with pytest.raises(KeyError):
        message("ask.why_not")


# --- through the public API -----------------------------------------------------------------


def test_load_model_and_explain_with_cached_weights(offline, cached_mobilenet):
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


def test_load_model_names_the_missing_file(offline):
    with pytest.raises(ModelError) as caught:
        load_model("mobilenet_v2")
    assert zoo.ZOO["mobilenet_v2"].weights_file in str(caught.value)

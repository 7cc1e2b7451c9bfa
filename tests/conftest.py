"""Shared fixtures: small real Keras models, built once per test session, and a private Keras cache."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EXPLAINER_OFFLINE", "1")  # tests never reach for the network
# Keras reads KERAS_HOME once, at import: the tests get an empty cache of their own, never the user's weights.
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="keras_home_")
atexit.register(shutil.rmtree, os.environ["KERAS_HOME"], ignore_errors=True)

import explainer  # noqa: E402, F401  (first: it imports TensorFlow with its start-up log muted)

# isort: split
import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402  (the layout of Keras's ImageNet files)

from explainer.models import zoo  # noqa: E402


def gap_cnn(n_classes: int = 4, size: int = 32, channels: int = 6, seed: int = 0) -> keras.Model:
    """Conv → ReLU → GAP → Dense(softmax): the architecture for which Grad-CAM equals CAM / Z exactly."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.Activation("relu", name="relu_a")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def gap_model() -> keras.Model:
    return gap_cnn()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --- zoo models with weights the tests make themselves ------------------------------------------------------------


def random_zoo_model(name: str, seed: int = 0) -> keras.Model:
    """The zoo architecture ``name`` with random weights and batch-norm statistics taken from one random batch.

    With fresh statistics (mean 0, variance 1) a random MobileNetV2's activations vanish (out_relu ~1e-11) and
    every class gets probability 0.001: useless for checking labels or maps.
    """
    keras.utils.set_random_seed(seed)
    model = zoo.ZOO[name].builder(weights=None)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the moving statistics become this batch's
    size = zoo.ZOO[name].input_size
    model(np.random.default_rng(seed).uniform(-1, 1, (4, *size, 3)).astype(np.float32), training=True)
    return model


def write_legacy_weights(model: keras.Model, path: Path) -> Path:
    """Save ``model``'s weights in the legacy HDF5 layout of the files Keras downloads for ``keras.applications``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as stream:
        legacy_h5_format.save_weights_to_hdf5_group(stream, model)
    return path


@pytest.fixture(scope="session")
def mobilenet_weights(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A random MobileNetV2 weights file under the exact name Keras asks for (outside the cache), and its weights."""
    model = random_zoo_model("mobilenet_v2", seed=1)
    folder = tmp_path_factory.mktemp("zoo_weights")
    return write_legacy_weights(model, folder / zoo.ZOO["mobilenet_v2"].weights_file), model.get_weights()


@pytest.fixture
def keras_cache() -> Iterator[Path]:
    """The tests' Keras cache folder (``$KERAS_HOME/models``); files a test leaves there are removed after it."""
    folder = Path(os.environ["KERAS_HOME"]) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.iterdir())
    yield folder
    for path in set(folder.iterdir()) - before:
        path.unlink()


@pytest.fixture
def cached_mobilenet(mobilenet_weights, keras_cache) -> Path:
    """The random MobileNetV2 weights in the Keras cache, where ``MobileNetV2(weights="imagenet")`` reads them.

    Keras knows no hash for this file, so it loads it as it would the real one.
    """
    source, _weights = mobilenet_weights
    return Path(shutil.copyfile(source, keras_cache / source.name))


# --- the launched app (end-to-end tests) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served():
    """The real app on a free local port for one test module: (URL, ChatApp), the bundled shapes model default."""
    from app_server import running_app

    with running_app() as (address, chat_app):
        yield address, chat_app


@pytest.fixture(scope="module")
def url(served) -> str:
    return served[0]


@pytest.fixture(scope="module")
def uploads() -> Iterator[Path]:
    """A folder inside the server's upload folder: files there count as uploaded to the app under test."""
    from app_server import upload_dir

    with upload_dir() as folder:
        yield folder

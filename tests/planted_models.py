"""Planted-object data and the small models the tests explain: noise images with one object whose class is known.

The object is the class's only evidence, so an honest map points at it. The trained models are committed files in
``tests/fixtures/`` (written by ``tests/fixtures/make_fixtures.py``, seeded and deterministic) and loaded with the
project's own :func:`explainer.load_model`: a committed model gives the same maps on any processor up to float
noise, where a model trained during the test run would differ between oneDNN kernels.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import keras
import numpy as np

from explainer import LoadedModel, load_model

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@cache
def fixture(name: str) -> LoadedModel:
    """The committed model ``tests/fixtures/<name>.keras`` with its sidecar (labels, preprocessing), loaded once."""
    if name == "vit_bars":
        import keras_hub  # noqa: F401  (registers Keras Hub's layers for deserialisation)
    return load_model(FIXTURES / f"{name}.keras")


# --- coloured squares: the class is the square's colour (40×40 RGB) -----------------------------------------------

SIZE = 40
LABELS = ["red", "green", "blue"]
COLOURS = np.array([(230, 40, 40), (40, 210, 40), (50, 80, 240)], np.uint8)


def planted_squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` dark noise images with one square of the class colour: (images, labels, masks, boxes)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 140, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, len(LABELS), n)
    masks = np.zeros((n, SIZE, SIZE), bool)
    boxes = np.zeros((n, 4), int)
    for i in range(n):
        side = int(rng.integers(7, 12))
        x, y = (int(v) for v in rng.integers(0, SIZE - side, 2))
        masks[i, y : y + side, x : x + side] = True
        boxes[i] = (x, y, side, side)
        images[i][masks[i]] = COLOURS[labels[i]]
    return images, labels, masks, boxes


def squares_cnn() -> keras.Model:
    """Rescaling → conv → pool → conv → conv "last" (20×20) → GAP → softmax."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(24, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(24, 3, padding="same", activation="relu", name="last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(len(LABELS), activation="softmax")(x))


def trained_model() -> LoadedModel:
    """:func:`squares_cnn` trained on planted squares (``tests/fixtures/squares.keras``), shared by the tests."""
    return fixture("squares")


# --- grey objects: a bright disk or bar on grey noise, as in an X-ray (64×64, one channel) ------------------------

GREY_SIZE = 64
GREY_LABELS = ["disk", "bar", "nothing"]


def planted_grey(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` grey 64×64 noise images (H×W, ``uint8``) with one bright object: 0 a disk, 1 a bar, 2 none.

    Returns (images, labels, masks). As in an X-ray, the evidence is brightness and shape, never colour. The
    object-free class keeps the net from learning "disk = not a bar", which would leave nothing on disks to show.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 110, (n, GREY_SIZE, GREY_SIZE), dtype=np.uint8)
    labels = rng.integers(0, len(GREY_LABELS), n)
    masks = np.zeros((n, GREY_SIZE, GREY_SIZE), bool)
    yy, xx = np.mgrid[:GREY_SIZE, :GREY_SIZE]
    for i in range(n):
        r = int(rng.integers(6, 10))
        cx, cy = (int(v) for v in rng.integers(r + 1, GREY_SIZE - r - 1, 2))
        if labels[i] == 0:
            masks[i] = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        elif labels[i] == 1:
            masks[i] = (abs(xx - cx) <= r) & (abs(yy - cy) <= 2)
        images[i][masks[i]] = rng.integers(180, 256)
    return images, labels, masks


def grey_cnn() -> keras.Model:
    """A small grayscale CNN taking (64, 64, 1) in 0–255 (it rescales itself), 16×16 last conv map, softmax."""
    inputs = keras.Input((GREY_SIZE, GREY_SIZE, 1))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(24, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(inputs, keras.layers.Dense(len(GREY_LABELS), activation="softmax", name="predictions")(x))


def trained_grey_model() -> keras.Model:
    """:func:`grey_cnn` trained on planted grey objects (``tests/fixtures/grey.keras``): the Keras model itself."""
    return fixture("grey").keras_model


# --- bright shapes: a disk, a square, a cross or nothing on colour noise (48×48 RGB) ------------------------------

OBJECT_SIZE = 48
OBJECT_LABELS = ["disk", "square", "cross", "nothing"]


def planted_objects(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images with one bright object: class 0 a disk, 1 a square, 2 a cross; class 3 is noise alone.

    The object-free class matters: without it a net may learn "disk = neither square nor cross", and Grad-CAM
    (which shows positive evidence only) then has nothing to show for disks.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, (n, OBJECT_SIZE, OBJECT_SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, n)
    masks = np.zeros((n, OBJECT_SIZE, OBJECT_SIZE), bool)
    for i in range(n):
        r = int(rng.integers(5, 9))
        cx, cy = (int(v) for v in rng.integers(r + 1, OBJECT_SIZE - r - 1, 2))
        mask = np.zeros((OBJECT_SIZE, OBJECT_SIZE), np.uint8)
        if labels[i] == 0:
            cv2.circle(mask, (cx, cy), r, 1, -1)
        elif labels[i] == 1:
            cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
        elif labels[i] == 2:
            cv2.line(mask, (cx - r, cy), (cx + r, cy), 1, 3)
            cv2.line(mask, (cx, cy - r), (cx, cy + r), 1, 3)
        masks[i] = mask.astype(bool)  # empty for class 3
        images[i][masks[i]] = rng.integers(180, 256, 3)
    return images, labels, masks


def objects_cnn() -> keras.Model:
    """Rescaling → conv → pool → conv → pool → conv (12×12: the target layer) → global max pool → softmax."""
    inputs = keras.Input((OBJECT_SIZE, OBJECT_SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(len(OBJECT_LABELS), activation="softmax")(x))


# --- bars for a vision transformer: the class is a bar's orientation (64×64 RGB, 8×8 patches) ---------------------

BAR_SIZE, BAR_PATCH = 64, 8
BARS = ["horizontal", "vertical", "nothing"]


def planted_bars(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images with one bright bar: class 0 horizontal, 1 vertical, 2 no bar. (images, labels, masks).

    The class is the bar's orientation, so the evidence is a shape spread over several patches, never a colour.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, (n, BAR_SIZE, BAR_SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, n)
    masks = np.zeros((n, BAR_SIZE, BAR_SIZE), bool)
    for i in np.flatnonzero(labels < 2):
        length, thick = int(rng.integers(16, 29)), int(rng.integers(4, 7))
        h, w = (thick, length) if labels[i] == 0 else (length, thick)
        y, x = int(rng.integers(0, BAR_SIZE - h)), int(rng.integers(0, BAR_SIZE - w))
        masks[i, y : y + h, x : x + w] = True
        images[i][masks[i]] = rng.integers(180, 256, 3)
    return images, labels, masks


def hub_vit(num_classes: int = 3, layers: int = 2, dim: int = 32, seed: int | None = 0) -> keras.Model:
    """Keras Hub's ViTImageClassifier: 64×64 input, 8×8 patches, a class token, ``layers`` blocks (initial weights
    from ``seed``; None: from the global seed as it stands)."""
    import keras_hub

    if seed is not None:
        keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(image_shape=(BAR_SIZE, BAR_SIZE, 3), patch_size=BAR_PATCH,
                                            num_layers=layers, num_heads=2, hidden_dim=dim, mlp_dim=2 * dim)
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=num_classes)


# --- legacy files -------------------------------------------------------------------------------------------------


def save_keras2_h5(model: keras.Model, path) -> None:
    """Write ``model`` as a Keras 2 (TF 2.x ``model.save("x.h5")``) file: legacy HDF5 with a Keras 2 config.

    Keras 3's legacy writer produces the HDF5 layout; the config is then rewritten the way Keras 2 wrote it
    (``batch_input_shape``, plain dtype strings, list-style ``inbound_nodes``, nested input/output layer lists,
    ``keras_version`` 2.15.0), so the test loads what users' old files hold, not Keras 3's own dialect.
    """
    import json

    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    legacy_h5_format.save_model_to_hdf5(model, str(path), include_optimizer=False)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        body = config["config"]
        body.pop("dtype", None)
        body["layers"] = [_keras2_layer(layer) for layer in body["layers"]]
        for key in ("input_layers", "output_layers"):
            if key in body and body[key] and not isinstance(body[key][0], list):
                body[key] = [body[key]]
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"


def _keras2_layer(layer: dict) -> dict:
    config = layer["config"]
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = "float32"
    if "batch_shape" in config:
        config["batch_input_shape"] = config.pop("batch_shape")
        config.pop("optional", None)
    for key in ("kernel_initializer", "bias_initializer"):
        if isinstance(config.get(key), dict):
            config[key] = {"class_name": config[key]["class_name"], "config": {}}
    nodes = layer.get("inbound_nodes")
    if nodes and isinstance(nodes[0], dict):
        layer["inbound_nodes"] = [
            [[*arg["config"]["keras_history"], {}] for arg in node["args"]] for node in nodes
        ]
    return layer

"""A tiny CNN trained in seconds on noise images with one planted coloured square (shared by the CAM/metric tests).

The class is the square's colour, so the evidence sits exactly on the square: every honest method must point there.
"""

from __future__ import annotations

from functools import lru_cache

import keras
import numpy as np

from explainer import LoadedModel, load_model

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


@lru_cache(maxsize=1)
def trained_model() -> LoadedModel:
    """Rescaling → conv → pool → conv → conv → GAP → softmax, fitted on 900 images (a few seconds, once)."""
    keras.utils.set_random_seed(3)
    images, labels, _, _ = planted_squares(900, seed=1)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(24, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(24, 3, padding="same", activation="relu", name="last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(len(LABELS), activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=5, batch_size=64, verbose=0)
    return load_model(model, labels=LABELS)


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


def trained_grey_model(seed: int = 5) -> keras.Model:
    """:func:`grey_cnn` fitted on 1,200 planted images (a few seconds)."""
    keras.utils.set_random_seed(seed)
    images, labels, _ = planted_grey(1200, seed=11)
    model = grey_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(images[..., None].astype(np.float32), labels, epochs=4, batch_size=64, verbose=0)
    return model


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

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

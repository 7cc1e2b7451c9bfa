"""A tiny CNN trained here on generated data with a planted object: Grad-CAM must point at the object."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

from explainer import explain, load_model, metrics

SIZE = 48


def planted(n: int, seed: int):
    """Noise images with one bright object: class 0 a disk, 1 a square, 2 a cross; class 3 is noise alone.

    The object-free class matters: without it a net may learn "disk = neither square nor cross", and Grad-CAM
    (which shows positive evidence only) then has nothing to show for disks.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, n)
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        r = int(rng.integers(5, 9))
        cx, cy = (int(v) for v in rng.integers(r + 1, SIZE - r - 1, 2))
        mask = np.zeros((SIZE, SIZE), np.uint8)
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


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(7)
    images, labels, _ = planted(1500, seed=1)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)  # 12×12 map: the target layer
    x = keras.layers.GlobalMaxPooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=3, batch_size=64, verbose=0)
    return load_model(model, labels=["disk", "square", "cross", "nothing"])


def test_preprocessing_detected_from_rescaling_layer(trained):
    assert trained.info.preprocess == "none"


def test_heatmap_peak_falls_on_planted_object(trained):
    images, labels, masks = planted(200, seed=99)
    results = explain(trained, list(images))
    accuracy = np.mean([r.target_index == y for r, y in zip(results, labels, strict=True)])
    with_object = [i for i, m in enumerate(masks) if m.any()]  # class 3 has no object to point at
    images, results, masks = ([seq[i] for i in with_object] for seq in (images, results, masks))
    # 4 px: one cell of the 12×12 feature map of a 48 px image.
    hits = metrics.pointing_game(None, images, results, masks=masks, tolerance=4)
    centre = metrics.centre_baseline(None, images, masks=masks, tolerance=4)
    assert accuracy >= 0.9, f"the test model did not learn ({accuracy:.2f})"
    assert hits.mean() >= 0.9, f"pointing game {hits.mean():.2f}"
    assert hits.mean() > centre.mean() + 0.5, f"centre baseline {centre.mean():.2f}"

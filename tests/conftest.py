"""Shared fixtures: small real Keras models, built once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EXPLAINER_OFFLINE", "1")  # tests never reach for the network

import explainer  # noqa: F401  (first: it imports TensorFlow with its start-up log muted)

# isort: split
import keras
import numpy as np
import pytest


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

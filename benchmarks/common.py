"""Shared helpers for the benchmark scripts: a timer that reports medians, and the MobileNetV2 test subject."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import explainer

# isort: split
import keras
import numpy as np


def median_ms(fn: Callable[[], object], repeats: int = 30, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int = 30, warmup: int = 3) -> list[tuple[str, float]]:
    """Median wall time of each function in ms, timed in turn within each round.

    On a shared 2-CPU machine the load drifts during a run; timing the contenders side by side in every round keeps
    their ratios fair even when the absolute numbers move.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return [(name, statistics.median(values)) for name, values in times.items()]


def mobilenet_v2(size: int = 224) -> explainer.LoadedModel:
    """MobileNetV2 with random weights (ImageNet weights cannot be downloaded here; speed does not depend on them)."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3))
    return explainer.load_model(model, labels=[f"class {i}" for i in range(1000)], preprocess="symmetric")


def photo(size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def report(rows: list[tuple[str, float]], baseline: str) -> None:
    """Print ``name  ms  ratio-to-baseline`` lines."""
    base = dict(rows)[baseline]
    width = max(len(name) for name, _ in rows)
    for name, ms in rows:
        print(f"{name:<{width}}  {ms:8.1f} ms  {ms / base:6.2f} x {baseline}")

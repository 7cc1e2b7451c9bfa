"""Calibrate the bundled demo models: ``python -m explainer.demo.calibrate``.

Generates fresh images with seeds no training, evaluation or audit uses (:data:`FIT_SEED`; training uses 1, 2 and
10 001–10 002, the reports 20 000–20 003, the audit set 30 000), fits the calibration and the feature reference
(:func:`explainer.evaluation.calibration.fit_calibration`) and writes both into ``models/<name>.json``, keeping
every other field. Then measures on other unseen seeds (:data:`TEST_SEED`, :data:`NOT_SHAPES_SEED`): the feature
check's false-alarm rate on generator images and its detection rate on :func:`~explainer.demo.generate.not_shapes`
images. About a minute per model on two CPUs.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from explainer.demo import MODEL_NAMES, model_path
from explainer.demo.generate import make_dataset, not_shapes
from explainer.demo.train import RECIPES, limit_threads
from explainer.engine import forward_features
from explainer.evaluation.calibration import fit_calibration
from explainer.graph import feature_path
from explainer.models.loading import LoadedModel, load_model, write_sidecar

FIT_SEED = 50_000
TEST_SEED = 50_001
NOT_SHAPES_SEED = 50_002
FIT_IMAGES = 1500


def _data(name: str, n: int, seed: int):
    recipe = RECIPES[name]
    return make_dataset(n, seed, shortcut=recipe.shortcut, plain_fraction=recipe.plain_fraction)


def calibrate_demo(name: str, n: int = FIT_IMAGES) -> dict:
    """Fit and write the calibration of demo model ``name``; returns the sidecar blocks written."""
    model = load_model(name)
    data = _data(name, n, FIT_SEED)
    logits, features = forward_features(model, model.prepare(list(data.images)))
    fit = fit_calibration(logits, features, data.labels, model.info.head, seed=0,
                          layer=feature_path(model.keras_model).name)
    blocks = fit.sidecar()
    write_sidecar(model_path(name), blocks)
    print(f"[{name}] T={fit.calibration.temperatures[0]:.3f} ECE {fit.before['ece']:.4f} -> {fit.after['ece']:.4f}, "
          f"accuracy {fit.after['accuracy']:.4f}, coverage {fit.after['coverage']:.3f}, "
          f"held-out false alarms {fit.false_alarms:.1%}", flush=True)
    return blocks


def measure(model: LoadedModel, name: str, n: int = 1000) -> dict:
    """False alarms on unseen generator images and detection of each kind of not-shapes image (fractions)."""
    reference = model.info.features
    data = _data(name, n, TEST_SEED)
    _logits, features = forward_features(model, model.prepare(list(data.images)))
    images, kinds = not_shapes(n // 2, NOT_SHAPES_SEED)
    logits, odd = forward_features(model, model.prepare(list(images)))
    flagged = reference.distance(odd) > reference.threshold
    singleton = np.array([len(model.info.calibration.prediction_set(p)) == 1
                          for p in model.info.calibration.probabilities(logits, model.info.head)])
    kinds = np.array(kinds)
    return {"threshold": reference.threshold,
            "false_alarms": float((reference.distance(features) > reference.threshold).mean()),
            "detected": float(flagged.mean()),
            "called_sure": float((~flagged & singleton).mean()),
            "by_kind": {k: float(flagged[kinds == k].mean()) for k in dict.fromkeys(kinds)}}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=MODEL_NAMES, action="append", help="only this model (repeatable)")
    parser.add_argument("--n", type=int, default=FIT_IMAGES, help="generated images to fit on (30 %% held out)")
    parser.add_argument("--no-measure", action="store_true", help="skip the measurement afterwards")
    args = parser.parse_args(argv)
    limit_threads()
    for name in args.only or MODEL_NAMES:
        calibrate_demo(name, args.n)
        if not args.no_measure:
            print(f"[{name}] {json.dumps(measure(load_model(name), name))}", flush=True)


if __name__ == "__main__":
    main()

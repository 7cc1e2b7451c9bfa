"""Measure the bundled demo models: ``python -m explainer.demo.report [--n 1000]``.

All images are freshly generated with seeds the training never saw; the clean ``shapes`` images are those of ``python -m
explainer evaluate`` (:data:`explainer.evaluation.method_table.EVALUATION_SEED`), so both reports measure the same
images. Every localization number comes from :mod:`explainer.evaluation.metrics`, with the pointing tolerance stated:
:data:`TOLERANCE` × each image's larger side (TorchRay's 15 px at 224 px; 8.6 px on the 128 px demo images).

``shapes`` (cluttered images without marks):
    accuracy; Grad-CAM pointing game for the true class beside the centre-point baseline; IoU of the localization
    box with the true box (mean, and share >= 0.5) at the engine's default threshold and for a sweep of
    thresholds; the same accuracy and pointing on plain dark circles, squares and triangles on light backgrounds at
    several sizes and resolutions. On conflict images (a tag of another class, which it never saw in training) the
    same numbers as for ``shapes-shortcut`` below: it should follow the shape.
``shapes-shortcut``:
    accuracy on images with the matching tag; on conflict images (tag of another class): how often the prediction
    follows the tag or the shape, how often the Grad-CAM peak of the predicted class lies on the tag or on the
    shape (pointing game), and how often it is nearer the tag than the shape (a 16x16 map puts the peak of a 10 px
    tag up to a cell or two away from it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from explainer import load_model
from explainer.demo import MODELS_DIR
from explainer.demo.generate import CLASSES, MARK_BOX, ShapesData, draw_plain_shape, make_dataset
from explainer.engine import explain_batch
from explainer.evaluation import metrics
from explainer.evaluation.method_table import EVALUATION_SEED
from explainer.region import DEFAULT_THRESHOLD

#: Pointing-game tolerance as a fraction of each image's larger side (TorchRay's, as ``python -m explainer evaluate``).
TOLERANCE = metrics.POINTING_TOLERANCE
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.15, 0.851, 0.05))
SEEDS = {"clean": EVALUATION_SEED, "shortcut": 20_002, "conflict": 20_003}
BATCH = 100
PLAIN_SHAPES = ("circle", "square", "triangle")


def tolerances(masks: np.ndarray | list) -> np.ndarray:
    """Pointing tolerance in pixels for each mask: :data:`TOLERANCE` × its larger side."""
    return metrics.scaled_tolerance(masks, TOLERANCE)


def mark_mask(size: int) -> np.ndarray:
    """Bool mask of the shortcut tag."""
    x, y, w, h = MARK_BOX
    mask = np.zeros((size, size), bool)
    mask[y: y + h, x: x + w] = True
    return mask


def box_scores(images: list, results: list, boxes: np.ndarray, threshold: float) -> dict[str, float]:
    """Mean box IoU (:func:`explainer.evaluation.metrics.box_iou`) and the share of images with IoU >= 0.5 at
    ``threshold``."""
    ious = metrics.box_iou(None, images, results, boxes=boxes, threshold=threshold)
    return {"mean_iou": float(ious.mean()), "iou_at_least_0.5": float((ious >= 0.5).mean())}


def localization_sweep(images: list, results: list, boxes: np.ndarray) -> dict[float, dict[str, float]]:
    """:func:`box_scores` for each threshold of :data:`THRESHOLDS`."""
    return {threshold: box_scores(images, results, boxes, threshold) for threshold in THRESHOLDS}


def evaluate_honest(model, data: ShapesData) -> dict:
    """Accuracy, pointing game, centre baseline and box IoU of ``model`` on ``data``."""
    images = list(data.images)
    results = explain_batch(model, images, list(data.labels), chunk=BATCH)
    predicted = np.array([int(np.argmax(r.probabilities)) for r in results])
    tolerance = tolerances(data.masks)
    sweep = localization_sweep(images, results, data.boxes)
    best = max(sweep, key=lambda t: sweep[t]["mean_iou"])
    return {
        "n": len(data),
        "accuracy": float((predicted == data.labels).mean()),
        "tolerance_px": float(np.mean(tolerance)),
        "pointing": float(metrics.pointing_game(None, images, results, masks=data.masks, tolerance=tolerance).mean()),
        "pointing_centre_baseline": float(
            metrics.centre_baseline(None, images, masks=data.masks, tolerance=tolerance).mean()
        ),
        "threshold": DEFAULT_THRESHOLD,
        **box_scores(images, results, data.boxes, DEFAULT_THRESHOLD),
        "best_threshold": best,
        "threshold_sweep": sweep,
    }


def plain_cases() -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Plain dark circles, squares and triangles on white at several sizes and resolutions."""
    images, masks, labels = [], [], []
    for height, width in ((64, 64), (128, 128), (300, 300), (480, 640), (1024, 768)):
        for fraction in (0.25, 0.45, 0.7, 0.9):
            for rotation in (0.0, 0.4):
                for shape in PLAIN_SHAPES:
                    image, mask = draw_plain_shape(shape, height, width, diameter=fraction * min(height, width),
                                                   rotation=rotation)
                    images.append(image)
                    masks.append(mask)
                    labels.append(CLASSES.index(shape))
    return images, masks, labels


def evaluate_plain(model) -> dict:
    """Accuracy and pointing (true class) on :func:`plain_cases`."""
    images, masks, labels = plain_cases()
    results = explain_batch(model, images, labels, chunk=BATCH)
    predicted = np.array([int(np.argmax(r.probabilities)) for r in results])
    pointed = metrics.pointing_game(None, images, results, masks=masks, tolerance=tolerances(masks))
    return {"n": len(images), "accuracy": float((predicted == np.array(labels)).mean()),
            "pointing": float(pointed.mean())}


def evaluate_shortcut(model, normal: ShapesData, conflict: ShapesData) -> dict:
    """Accuracy with matching tags; on conflicting tags whom the prediction and the peak follow."""
    normal_pred = np.array([r.target_index for r in explain_batch(model, normal.images, chunk=BATCH)])
    results = explain_batch(model, conflict.images, chunk=BATCH)
    return {
        "n": len(normal),
        "accuracy": float((normal_pred == normal.labels).mean()),
        **conflict_behaviour(results, conflict),
    }


def conflict_behaviour(results: list, conflict: ShapesData) -> dict:
    """Whom predictions and Grad-CAM peaks follow on images whose tag names another class than the shape."""
    predicted = np.array([r.target_index for r in results])
    images, shapes = list(conflict.images), list(conflict.masks)
    tags = [mark_mask(conflict.images.shape[1])] * len(conflict)
    to_tag = metrics.peak_distance(None, images, results, masks=tags)
    to_shape = metrics.peak_distance(None, images, results, masks=shapes)
    tolerance = tolerances(shapes)
    return {
        "conflict_n": len(conflict),
        "tolerance_px": float(np.mean(tolerance)),
        "conflict_follows_mark": float((predicted == conflict.mark_labels).mean()),
        "conflict_follows_shape": float((predicted == conflict.labels).mean()),
        "conflict_peak_on_mark": float((to_tag <= tolerance).mean()),
        "conflict_peak_on_shape": float((to_shape <= tolerance).mean()),
        "conflict_peak_nearer_mark": float((to_tag < to_shape).mean()),
    }


def _percent(value: float) -> str:
    return f"{100 * value:5.1f} %"


def print_honest(report: dict) -> None:
    """Human-readable summary of :func:`evaluate_honest` (and the plain check, if present)."""
    print(f"shapes on {report['n']} held-out images:")
    print(f"  accuracy                     {_percent(report['accuracy'])}")
    print(f"  pointing game (±{report['tolerance_px']:.1f} px)     {_percent(report['pointing'])}"
          f"   (centre baseline {_percent(report['pointing_centre_baseline']).strip()})")
    print(f"  box IoU at threshold {report['threshold']:.2f}    mean {report['mean_iou']:.3f}, "
          f"IoU >= 0.5 for {_percent(report['iou_at_least_0.5']).strip()}")
    print("  threshold sweep (mean IoU / share >= 0.5):")
    for threshold, row in report["threshold_sweep"].items():
        marker = "  <- best" if threshold == report["best_threshold"] else ""
        print(f"    {threshold:.2f}  {row['mean_iou']:.3f}  {_percent(row['iou_at_least_0.5'])}{marker}")
    if "plain" in report:
        plain = report["plain"]
        print(f"  plain dark shapes on white ({plain['n']} images, 64-1024 px): "
              f"accuracy {_percent(plain['accuracy']).strip()}, pointing {_percent(plain['pointing']).strip()} "
              f"(±{224 * TOLERANCE:.0f} px per 224 px of the larger side)")


def print_shortcut(report: dict) -> None:
    """Human-readable summary of :func:`evaluate_shortcut`."""
    print(f"shapes-shortcut on {report['n']} held-out images with the matching tag:")
    print(f"  accuracy                     {_percent(report['accuracy'])}")
    print(f"on {report['conflict_n']} images whose tag names another class:")
    print_conflict(report)


def print_conflict(report: dict) -> None:
    """Human-readable summary of :func:`conflict_behaviour`."""
    print(f"  prediction follows the tag   {_percent(report['conflict_follows_mark'])}")
    print(f"  prediction follows the shape {_percent(report['conflict_follows_shape'])}")
    within = f"±{report['tolerance_px']:.1f} px"
    print(f"  Grad-CAM peak on the tag ({within})   {_percent(report['conflict_peak_on_mark'])}")
    print(f"  Grad-CAM peak on the shape ({within}) {_percent(report['conflict_peak_on_shape'])}")
    print(f"  Grad-CAM peak nearer the tag than the shape {_percent(report['conflict_peak_nearer_mark'])}")


def evaluate_models(names: list[str] | tuple[str, ...] = ("shapes", "shapes-shortcut"), n: int = 1000,
                    models_dir: Path = MODELS_DIR) -> dict:
    """Evaluate the named demo models in ``models_dir`` on ``n`` fresh images each and print the numbers.

    Parameters
    ----------
    names : sequence of str
        ``shapes`` and/or ``shapes-shortcut``.
    n : int
        Images per data set.
    models_dir : Path
        Folder holding ``<name>.keras`` and ``<name>.json``.

    Returns
    -------
    dict
        Name -> report.
    """
    reports = {}
    if "shapes" in names:
        model = load_model(str(Path(models_dir) / "shapes.keras"))
        report = evaluate_honest(model, make_dataset(n, SEEDS["clean"]))
        report["plain"] = evaluate_plain(model)
        conflict = make_dataset(n, SEEDS["conflict"], conflict=True)
        report["tagged"] = conflict_behaviour(explain_batch(model, conflict.images, chunk=BATCH), conflict)
        print_honest(report)
        print(f"shapes on {n} images with a tag of another class (it never saw tags):")
        print_conflict(report["tagged"])
        reports["shapes"] = report
    if "shapes-shortcut" in names:
        model = load_model(str(Path(models_dir) / "shapes-shortcut.keras"))
        report = evaluate_shortcut(model, make_dataset(n, SEEDS["shortcut"], shortcut=True),
                                   make_dataset(n, SEEDS["conflict"], conflict=True))
        print_shortcut(report)
        reports["shapes-shortcut"] = report
    return reports


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per data set (default 1000)")
    parser.add_argument("--only", choices=("shapes", "shapes-shortcut"), action="append",
                        help="evaluate only this model (repeatable)")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    reports = evaluate_models(args.only or ("shapes", "shapes-shortcut"), args.n, args.models_dir)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

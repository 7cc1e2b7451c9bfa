"""Measure the bundled demo models: ``python -m explainer.demo.evaluate [--n 1000]``.

All images are freshly generated with seeds the training never saw.

``shapes`` (cluttered images without marks):
    accuracy; Grad-CAM pointing game for the true class (the map's peak inside the object
    mask dilated by :data:`TOLERANCE` pixels) beside the centre-point baseline; IoU of the
    localization box with the true box (mean, and share >= 0.5) at the engine's default
    threshold and for a sweep of thresholds; the same accuracy and pointing on plain dark
    circles, squares and triangles on light backgrounds at several sizes and resolutions.
    On conflict images (a tag of another class, which it never saw in training) the same
    numbers as for ``shapes-shortcut`` below: it should follow the shape.
``shapes-shortcut``:
    accuracy on images with the matching tag; on conflict images (tag of another class):
    how often the prediction follows the tag or the shape, how often the Grad-CAM peak of
    the predicted class lies on the tag or on the shape (±TOLERANCE px), and how often it is
    nearer the tag than the shape (a 16x16 map puts the peak of a 10 px tag up to a cell or
    two away from it).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2
import numpy as np

from explainer import explain, load_model, localize
from explainer.demo import MODELS_DIR
from explainer.demo.generate import CLASSES, MARK_BOX, ShapesData, draw_plain_shape, make_dataset
from explainer.region import DEFAULT_THRESHOLD, box_iou

TOLERANCE = 4  # pixels of slack around the object for the pointing game
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.15, 0.851, 0.05))
SEEDS = {"clean": 20_001, "shortcut": 20_002, "conflict": 20_003}
BATCH = 100
PLAIN_SHAPES = ("circle", "square", "triangle")


def explain_all(model, images: np.ndarray | list, targets: list | None = None) -> list:
    """Explain many images in batches (``targets`` None explains each top prediction)."""
    results = []
    for start in range(0, len(images), BATCH):
        chunk = list(images[start: start + BATCH])
        target = None if targets is None else [int(t) for t in targets[start: start + BATCH]]
        results.extend(explain(model, chunk, target=target))
    return results


def dilate(mask: np.ndarray, pixels: int = TOLERANCE) -> np.ndarray:
    """Grow a bool mask by ``pixels`` in every direction (disc-shaped)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def hits(points: list[tuple[int, int]], masks: np.ndarray | list, tolerances: list[int] | None = None) -> np.ndarray:
    """Whether each ``(x, y)`` point lies inside its mask dilated by its tolerance (default :data:`TOLERANCE`)."""
    tolerances = tolerances or [TOLERANCE] * len(masks)
    return np.array([bool(dilate(m, t)[y, x]) for (x, y), m, t in zip(points, masks, tolerances, strict=True)])


def mark_mask(size: int) -> np.ndarray:
    """Bool mask of the shortcut tag."""
    x, y, w, h = MARK_BOX
    mask = np.zeros((size, size), bool)
    mask[y: y + h, x: x + w] = True
    return mask


def nearer_to_first(points: list[tuple[int, int]], first: np.ndarray | list, second: np.ndarray | list) -> np.ndarray:
    """Whether each ``(x, y)`` point is strictly closer to its ``first`` mask than to its ``second``."""
    def distance(mask: np.ndarray, x: int, y: int) -> float:
        return float(cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)[y, x])

    return np.array([distance(a, x, y) < distance(b, x, y)
                     for (x, y), a, b in zip(points, first, second, strict=True)])


def _centre_points(masks: np.ndarray) -> list[tuple[int, int]]:
    return [(m.shape[1] // 2, m.shape[0] // 2) for m in masks]


def localization_sweep(results: list, boxes: np.ndarray) -> dict[float, dict[str, float]]:
    """Mean box IoU and share with IoU >= 0.5 for each threshold of :data:`THRESHOLDS`."""
    sweep = {}
    for threshold in THRESHOLDS:
        ious = np.array([box_iou(localize(r.heatmap, threshold).bbox, tuple(b))
                         for r, b in zip(results, boxes, strict=True)])
        sweep[threshold] = {"mean_iou": float(ious.mean()), "iou_at_least_0.5": float((ious >= 0.5).mean())}
    return sweep


def evaluate_honest(model, data: ShapesData) -> dict:
    """Accuracy, pointing game, centre baseline and box IoU of ``model`` on ``data``."""
    results = explain_all(model, data.images, targets=list(data.labels))
    predicted = np.array([int(np.argmax(r.probabilities)) for r in results])
    ious = np.array([box_iou(r.region.bbox, tuple(b)) for r, b in zip(results, data.boxes, strict=True)])
    sweep = localization_sweep(results, data.boxes)
    best = max(sweep, key=lambda t: sweep[t]["mean_iou"])
    return {
        "n": len(data),
        "accuracy": float((predicted == data.labels).mean()),
        "pointing": float(hits([r.region.peak for r in results], data.masks).mean()),
        "pointing_centre_baseline": float(hits(_centre_points(data.masks), data.masks).mean()),
        "threshold": DEFAULT_THRESHOLD,
        "mean_iou": float(ious.mean()),
        "iou_at_least_0.5": float((ious >= 0.5).mean()),
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
    results = explain_all(model, images, targets=labels)
    predicted = np.array([int(np.argmax(r.probabilities)) for r in results])
    tolerances = [max(TOLERANCE, round(TOLERANCE * min(m.shape) / 128)) for m in masks]  # 4 px at 128 px
    pointed = hits([r.region.peak for r in results], masks, tolerances)
    return {"n": len(images), "accuracy": float((predicted == np.array(labels)).mean()),
            "pointing": float(pointed.mean())}


def evaluate_shortcut(model, normal: ShapesData, conflict: ShapesData) -> dict:
    """Accuracy with matching tags; on conflicting tags whom the prediction and the peak follow."""
    normal_pred = np.array([r.target_index for r in explain_all(model, normal.images)])
    results = explain_all(model, conflict.images)
    return {
        "n": len(normal),
        "accuracy": float((normal_pred == normal.labels).mean()),
        **conflict_behaviour(results, conflict),
    }


def conflict_behaviour(results: list, conflict: ShapesData) -> dict:
    """Whom predictions and Grad-CAM peaks follow on images whose tag names another class than the shape."""
    predicted = np.array([r.target_index for r in results])
    peaks = [r.region.peak for r in results]
    tags = [mark_mask(conflict.images.shape[1])] * len(conflict)
    return {
        "conflict_n": len(conflict),
        "conflict_follows_mark": float((predicted == conflict.mark_labels).mean()),
        "conflict_follows_shape": float((predicted == conflict.labels).mean()),
        "conflict_peak_on_mark": float(hits(peaks, tags).mean()),
        "conflict_peak_on_shape": float(hits(peaks, conflict.masks).mean()),
        "conflict_peak_nearer_mark": float(nearer_to_first(peaks, tags, conflict.masks).mean()),
    }


def _percent(value: float) -> str:
    return f"{100 * value:5.1f} %"


def print_honest(report: dict) -> None:
    """Human-readable summary of :func:`evaluate_honest` (and the plain check, if present)."""
    print(f"shapes on {report['n']} held-out images:")
    print(f"  accuracy                     {_percent(report['accuracy'])}")
    print(f"  pointing game (±{TOLERANCE} px)       {_percent(report['pointing'])}"
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
              f"accuracy {_percent(plain['accuracy']).strip()}, pointing {_percent(plain['pointing']).strip()}")


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
    print(f"  Grad-CAM peak on the tag (±{TOLERANCE} px)   {_percent(report['conflict_peak_on_mark'])}")
    print(f"  Grad-CAM peak on the shape (±{TOLERANCE} px) {_percent(report['conflict_peak_on_shape'])}")
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
        report["tagged"] = conflict_behaviour(explain_all(model, conflict.images), conflict)
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

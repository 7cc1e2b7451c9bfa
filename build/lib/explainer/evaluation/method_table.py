"""``python -m explainer evaluate``: how well each CAM method localizes and how faithful it is, in one table.

Data: the generated shapes (:func:`explainer.demo.generate.make_dataset` with :data:`EVALUATION_SEED`, a seed used
neither for training nor for the sidecar's held-out set), or your own folder (``--data DIR``) laid out as::

    DIR/images/<name>.png   (or any format of :data:`explainer.inputs.images.IMAGE_SUFFIXES`)
    DIR/masks/<name>.png    same stem; the object is every non-zero pixel (resized, nearest, if sizes differ)

The class explained is the true shape when the model's labels are the demo classes, otherwise the model's top
prediction. Columns: pointing game and the centre-point baseline (hit rates), box and mask IoU of the localized
region, RISE deletion (lower is better) and insertion (higher is better) AUC, Average Drop and Increase in
Confidence (%), coverage (mean map value, the complexity to read Average Drop with), explain time per image, and
with ``--sanity`` the median rank correlation of the maps after randomising every weight (below 0.5 passes).
The last columns give, per segmentation method (:mod:`explainer.segment`), the mean mask IoU of the segmented region
with the true mask (``thre IoU``, ``otsu IoU``, ``grab IoU``; the JSON adds the share of images reaching 0.5);
``mask IoU`` is the thresholded heat region, the same as ``thre IoU``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from explainer.engine import explain, predict
from explainer.errors import ExplainerError
from explainer.evaluation import metrics
from explainer.inputs.images import IMAGE_SUFFIXES, load_image
from explainer.region import DEFAULT_THRESHOLD, mask_to_box
from explainer.segment import SEGMENTERS, get_segmenter

#: Seed of the demo evaluation images (training uses 1 and 2, the sidecar's held-out set 10_001 and 10_002).
EVALUATION_SEED = 20_000
#: Suffixes tried for a mask, PNG first (the layout the help shows).
MASK_SUFFIXES = (".png", *sorted(IMAGE_SUFFIXES - {".png"}))
FOLDER_LAYOUT = f"""folder layout for --data DIR:
  DIR/images/<name>.png   (or {", ".join(MASK_SUFFIXES[1:])})
  DIR/masks/<name>.png    same stem; the object is every non-zero pixel

Without --data: generated shapes images with known masks (fixed held-out seed)."""
SANITY_IMAGES = 16

#: (key, header, format) of each table column; rates and percentages are printed ×100.
COLUMNS = (
    ("pointing", "pointing", "{:8.1%}"),
    ("centre_baseline", "centre", "{:8.1%}"),
    ("box_iou", "box IoU", "{:8.3f}"),
    ("mask_iou", "mask IoU", "{:8.3f}"),
    ("deletion_auc", "del AUC↓", "{:8.3f}"),
    ("insertion_auc", "ins AUC↑", "{:8.3f}"),
    ("average_drop", "drop↓", "{:8.1%}"),
    ("increase", "incr↑", "{:8.1%}"),
    ("coverage", "coverage", "{:8.3f}"),
    ("ms_per_image", "ms/img", "{:8.1f}"),
    ("sanity_spearman", "sanity ρ", "{:8.3f}"),
)


@dataclass
class Dataset:
    """Images with ground-truth masks; ``labels`` are the true classes when the model knows them, else None."""

    source: str
    images: list[np.ndarray]
    masks: list[np.ndarray]
    labels: np.ndarray | None = None

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [mask_to_box(mask) for mask in self.masks]


def demo_dataset(n: int, seed: int = EVALUATION_SEED, labels: list[str] | None = None) -> Dataset:
    """``n`` generated shapes images with their masks; true labels kept if ``labels`` are the demo classes."""
    from explainer.demo.generate import CLASSES, make_dataset

    data = make_dataset(n, seed)
    known = labels is not None and [label.lower() for label in labels] == list(CLASSES)
    return Dataset(f"demo shapes (seed {seed})", list(data.images), list(data.masks),
                   data.labels.astype(int) if known else None)


def folder_dataset(folder: str | Path) -> Dataset:
    """Images from ``folder/images`` and their masks from ``folder/masks`` (same stem, ``.png``)."""
    folder = Path(folder)
    image_dir, mask_dir = folder / "images", folder / "masks"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise ExplainerError(f"{folder} must hold an images/ and a masks/ folder (see --help).")
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ExplainerError(f"No images in {image_dir}.")
    images, masks = [], []
    for path in paths:
        image = load_image(path)
        images.append(image)
        masks.append(_read_mask(mask_dir, path.stem, image.shape[:2]))
    return Dataset(str(folder), images, masks)


def _read_mask(mask_dir: Path, stem: str, size: tuple[int, int]) -> np.ndarray:
    candidates = [mask_dir / f"{stem}{suffix}" for suffix in MASK_SUFFIXES]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ExplainerError(f"No mask for {stem!r}: expected {mask_dir / (stem + '.png')}.")
    mask = load_image(path).max(axis=-1) > 0
    if mask.shape != size:
        mask = cv2.resize(mask.astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST) > 0
    if not mask.any():
        raise ExplainerError(f"The mask {path.name!r} is empty: mark the object with non-zero pixels.")
    return mask


def evaluate(model, data: Dataset, methods: list[str], *, steps: int = metrics.CURVE_STEPS,
             threshold: float = DEFAULT_THRESHOLD, tolerance: float | None = None,
             batch_size: int = metrics.FORWARD_BATCH, layer: str | None = None, sanity: bool = False,
             progress=None, segments: list[str] | None = None) -> dict:
    """Every metric for every method on ``data``: ``{method: {metric: value}}`` (means over the images).

    Parameters
    ----------
    model : LoadedModel
    data : Dataset
    methods : list of str
        Method names (see :data:`explainer.cams.METHODS`).
    steps, threshold, tolerance :
        Deletion/insertion steps, localization threshold, pointing tolerance in pixels (None: TorchRay's 15 px
        per 224 px of each image's larger side, see :func:`explainer.evaluation.metrics.scaled_tolerance`).
    batch_size : int
        Images explained per call.
    layer : str, optional
        Target layer (default: the last spatial one).
    sanity : bool
        Also run the model-randomization check on the first :data:`SANITY_IMAGES` images (slower).
    progress : callable, optional
        Called with a short text before each method.
    segments : list of str, optional
        Segmentation methods to score (default: all of :data:`explainer.segment.SEGMENTERS`); each method's row
        gains ``segmentation``: ``{segment: {"mask_iou": mean, "share_05": share of images ≥ 0.5}}``.
    """
    targets = data.labels if data.labels is not None else predict(model, data.images).argmax(axis=1)
    targets = [int(t) for t in targets]
    if tolerance is None:
        tolerance = metrics.scaled_tolerance(data.masks)
    centre = float(metrics.centre_baseline(model, data.images, masks=data.masks, tolerance=tolerance).mean())
    table = {}
    for method in methods:
        if progress:
            progress(f"{method}: explaining {len(data.images)} images")
        maps, seconds = _timed_maps(model, data.images, targets, method, layer, batch_size)
        table[method] = _scores(model, data, maps, targets, steps, threshold, tolerance)
        table[method].update(centre_baseline=centre, ms_per_image=1000 * seconds / len(data.images))
        table[method]["segmentation"] = segmentation_scores(data, maps, segments, threshold)
        if sanity:
            n = min(SANITY_IMAGES, len(data.images))
            check = metrics.sanity_check(model, data.images[:n], maps[:n], targets[:n], method=method, layer=layer)
            final = float(check.median[-1])
            table[method]["sanity_spearman"] = None if np.isnan(final) else final  # None: every map was flat
    return table


def segmentation_scores(data: Dataset, maps, segments: list[str] | None = None,
                        threshold: float = DEFAULT_THRESHOLD) -> dict[str, dict[str, float]]:
    """Mean mask IoU with the true masks and share of images with IoU ≥ 0.5, per segmentation method."""
    scores = {}
    for name in segments or list(SEGMENTERS):
        key = get_segmenter(name).name
        ious = metrics.mask_iou(None, data.images, maps, masks=data.masks, threshold=threshold, segment=key)
        scores[key] = {"mask_iou": float(np.mean(ious)), "share_05": float(np.mean(ious >= 0.5))}
    return scores


def _timed_maps(model, images, targets, method, layer, batch_size) -> tuple[list[np.ndarray], float]:
    """The maps of ``method`` and the seconds they took, tracing (the first call) left out of the timing."""
    explain(model, images[0], targets[0], method=method, layer=layer)
    started = time.perf_counter()
    maps = metrics.heatmaps(model, images, targets, method, layer, batch_size)
    return maps, time.perf_counter() - started


def _scores(model, data: Dataset, maps, targets, steps, threshold, tolerance) -> dict[str, float]:
    images = data.images
    confidence = metrics.confidence_change(model, images, maps, targets)
    scores = {
        "pointing": metrics.pointing_game(model, images, maps, masks=data.masks, tolerance=tolerance),
        "box_iou": metrics.box_iou(model, images, maps, boxes=data.boxes, threshold=threshold),
        "mask_iou": metrics.mask_iou(model, images, maps, masks=data.masks, threshold=threshold),
        "deletion_auc": metrics.deletion_auc(model, images, maps, targets, steps=steps),
        "insertion_auc": metrics.insertion_auc(model, images, maps, targets, steps=steps),
        "average_drop": confidence.drop,
        "increase": confidence.increase,
        "coverage": metrics.coverage(model, images, maps),
    }
    return {name: float(np.mean(values)) for name, values in scores.items()}


def format_table(table: dict) -> str:
    """Methods as rows, metrics as columns (only the columns present), then mask IoU per segmentation method."""
    present = [column for column in COLUMNS if any(column[0] in row for row in table.values())]
    segments = list(dict.fromkeys(key for row in table.values() for key in row.get("segmentation", {})))
    headers = [header for _key, header, _fmt in present] + [f"{name[:4]} IoU" for name in segments]
    lines = ["method     " + " ".join(f"{header:>8}" for header in headers)]
    for method, row in table.items():
        cells = [fmt.format(row[key]) if row.get(key) is not None else f"{'-':>8}" for key, _header, fmt in present]
        found = row.get("segmentation", {})
        cells += [f"{found[name]['mask_iou']:8.3f}" if name in found else f"{'-':>8}" for name in segments]
        lines.append(f"{method:<10} " + " ".join(cells))
    return "\n".join(lines)

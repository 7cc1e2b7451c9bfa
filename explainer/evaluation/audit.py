"""``python -m explainer audit DIR``: does the model look where it should, over a whole validation set?

``DIR`` is laid out as Keras users already have it: one sub-folder per class (the layout of
``keras.utils.image_dataset_from_directory``), or a flat folder of images without true labels. The expected regions
come from ``--masks MASKS`` (same relative path as each image, any image suffix) or ``--boxes FILE.csv`` (header
``path,x,y,w,h`` or ``path,x1,y1,x2,y2``; ``path`` relative to ``DIR``; several rows per image are their union).

Every image is explained in batches through the compiled batched :func:`explainer.explain` (the true class when
known, else the prediction) and compared with its region (:func:`explainer.evaluation.groundtruth.compare_region`).
Results go to ``OUTDIR/results.jsonl`` (one object per image) and ``OUTDIR/report.html`` (self-contained: summary, wrong
predictions, "right for the wrong reason", a sortable table). The same :func:`process_batch` runs on this machine
(``--engine local``) or in Ray Data actors (``--engine ray``, :mod:`explainer.evaluation.audit_ray`).
"""

from __future__ import annotations

import base64
import csv
import heapq
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from explainer.cams import get_method
from explainer.engine import default_method, explain_batch
from explainer.errors import ExplainerError
from explainer.evaluation import metrics
from explainer.evaluation.groundtruth import (
    BOX_FORMATS,
    WRONG_REASON_THRESHOLD,
    compare_region,
    draw_expected,
    expected_mask,
    parse_box,
)
from explainer.inputs import dicom
from explainer.inputs.images import IMAGE_SUFFIXES, load_image_with_notes
from explainer.labels import normalize
from explainer.models.loading import LoadedModel, load_model
from explainer.prose import quote, render
from explainer.region import DEFAULT_THRESHOLD
from explainer.render import draw_outline, overlay

#: Images explained per call of the compiled ``explain`` (on 2 CPUs small batches are fastest per image).
DEFAULT_BATCH_SIZE = 16
#: Pictures shown per report section (the table lists every image): the most confident mistakes first, and the
#: correct answers with the least energy inside their region first.
MAX_PICTURES = 48
#: The least confident predictions shown with their pictures (whether or not expected regions were given).
SHOWN_UNSURE = 12
#: Larger side of a report picture in pixels (small images are enlarged so the outlines stay visible).
PICTURE_SIDE = 224
#: Suffixes tried for a mask, PNG first, when none has the image's own name.
MASK_SUFFIXES = (".png", *sorted(IMAGE_SUFFIXES - {".png"}))
ENGINES = ("local", "ray")
_SKIPPED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
_SKIPPED_FOLDERS = {"__MACOSX"}

LAYOUT_HELP = f"""layout of DIR:
  DIR/<class>/<image>   one sub-folder per class, named after the model's labels (true labels known), or
  DIR/<image>           a flat folder (no true labels: the prediction is explained)
  images: {", ".join(sorted(IMAGE_SUFFIXES))} (and DICOM files whatever their names)
expected regions (optional):
  --masks MASKS         MASKS/<class>/<image stem>.png: the region in white (or opaque on a transparent layer)
  --boxes FILE.csv      header path,x,y,w,h (or path,x1,y1,x2,y2); path relative to DIR; several rows = union"""


class AuditError(ExplainerError, ValueError):
    """The audit cannot start: no images, a boxes file naming missing images, unknown class folders..."""


# ------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class AuditItem:
    """One image to audit: where it is, what it truly is, and where its evidence should be.

    Attributes
    ----------
    index : int
        Position in the run (results keep this order).
    image : str
        Path relative to ``DIR`` with ``/`` separators (what results and the report show).
    path : str
        The file to read.
    true_label, true_index :
        The class its folder names (None in a flat folder).
    boxes : list of [x, y, w, h], optional
        Expected boxes (their union), in the image's pixels.
    mask : str, optional
        Expected-region mask file.
    """

    index: int
    image: str
    path: str
    true_label: str | None = None
    true_index: int | None = None
    boxes: list[list[int]] | None = None
    mask: str | None = None

    @property
    def has_region(self) -> bool:
        return self.boxes is not None or self.mask is not None


@dataclass(frozen=True)
class AuditOptions:
    """How each image is explained and judged (the same for every engine and worker).

    ``method`` None is the model's default (:func:`explainer.engine.default_method`): :meth:`for_model` names it
    before a run, so every record, worker and report states the same one.
    """

    method: str | None = None
    layer: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    wrong_reason_threshold: float = WRONG_REASON_THRESHOLD
    batch_size: int = DEFAULT_BATCH_SIZE
    pictures: bool = True

    def for_model(self, model: LoadedModel) -> AuditOptions:
        """These options with ``method`` named: the model's default when None."""
        return self if self.method is not None else replace(self, method=default_method(model))


@dataclass(frozen=True)
class ModelSpec:
    """What every worker needs to load the same model: the CLI's ``--model``, ``--labels``, ``--preprocess``."""

    spec: str | None = None
    labels: str | list[str] | None = None
    preprocess: str | None = None
    trust: bool | None = None

    def load(self) -> LoadedModel:
        return load_model(self.spec, labels=self.labels, preprocess=self.preprocess, trust=self.trust)


@dataclass
class Plan:
    """The images of an audit and what was noticed while finding them."""

    items: list[AuditItem]
    layout: str  # "classes" or "flat"
    notes: list[str] = field(default_factory=list)


def plan_audit(folder: Path, labels: list[str], boxes_file: Path | None = None,
               masks_dir: Path | None = None, name: str | None = None) -> Plan:
    """Find the images of ``folder``, their true classes among ``labels`` and their expected regions.

    ``name`` is what messages call the folder, a noun phrase (default: "the folder '<its path>'"; a server names an
    unpacked upload, "the uploaded set", instead of telling its visitors where it keeps files).

    Raises
    ------
    AuditError
        No such folder or no image in it; class folders the model does not know; a boxes file that is malformed or
        names images not in the folder; a masks folder holding no mask of any image.
    """
    folder = folder.resolve()  # workers on other machines or in other folders read the same files
    found, skipped = _find_images(folder, name or f"the folder {quote(str(folder))}")
    layout = "classes" if any(cls is not None for _rel, cls in found) else "flat"
    notes = _skipped_note(skipped)
    indices, note = class_indices(sorted({cls for _rel, cls in found if cls is not None}), labels)
    notes += [note] if note else []
    if layout == "classes" and any(cls is None for _rel, cls in found):
        notes.append("Images directly in the folder (not in a class sub-folder) have no true label: their "
                     "prediction is explained.")
    boxes = read_boxes(boxes_file, {rel for rel, _cls in found}) if boxes_file else {}
    masks = find_masks(masks_dir.resolve(), [rel for rel, _cls in found]) if masks_dir else {}
    if masks_dir and len(masks) < len(found):
        missing = next(rel for rel, _cls in found if rel not in masks)
        notes.append(f"{len(found) - len(masks)} of {len(found)} images have no mask (e.g. {quote(missing)}): they get "
                     "no expected region.")
    items = [AuditItem(i, rel, str(folder / rel), cls, None if cls is None else indices[cls],
                       boxes.get(rel), masks.get(rel)) for i, (rel, cls) in enumerate(found)]
    return Plan(items, layout, notes)


def _find_images(folder: Path, name: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """(relative path, class folder or None) of every image, sorted; and the relative paths skipped."""
    if not folder.is_dir():
        raise AuditError(f"There is no folder to audit: {name} does not exist.")
    found: list[tuple[str, str | None]] = []
    skipped: list[str] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(p.startswith(".") or p in _SKIPPED_FOLDERS for p in rel.parts[:-1]):
            continue
        if path.name.startswith(".") or path.name in _SKIPPED_NAMES:
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES or dicom.has_preamble(path):
            found.append((rel.as_posix(), rel.parts[0] if len(rel.parts) > 1 else None))
        else:
            skipped.append(rel.as_posix())
    if not found:
        raise AuditError(f"{name[:1].upper()}{name[1:]} holds no images (looked for "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))} files in it and in its sub-folders).")
    return found, skipped


def _skipped_note(skipped: list[str]) -> list[str]:
    if not skipped:
        return []
    return [f"Skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''} that {'are' if len(skipped) > 1 else 'is'} "
            f"not an image by its name (e.g. {quote(skipped[0])})."]


def class_indices(folders: list[str], labels: list[str]) -> tuple[dict[str, int], str | None]:
    """The model's class index of each class folder, and a note when they were matched by order.

    A folder matches a label by name (case, ``_`` and punctuation ignored) or by index (``0``, ``1``...). When some
    do not match but there are exactly as many folders as classes, they are taken in sorted order, as
    ``image_dataset_from_directory`` numbered them for training (e.g. ImageNet's ``n01440764``... folders).

    Raises
    ------
    AuditError
        When a folder matches no class and the counts differ.
    """
    by_name: dict[str, int] = {}
    for i, label in enumerate(labels):
        by_name.setdefault(normalize(label), i)
    matched = {}
    for name in folders:
        if normalize(name) in by_name:
            matched[name] = by_name[normalize(name)]
        elif name.isdigit() and int(name) < len(labels):
            matched[name] = int(name)
    if len(matched) == len(folders):
        return matched, None
    if len(folders) == len(labels):
        ordered = dict(zip(sorted(folders), range(len(labels)), strict=True))
        first = sorted(folders)[0]
        return ordered, (f"The class folders are not named after the model's labels: they were taken in sorted "
                         f"order, as image_dataset_from_directory numbers them ({quote(first)} is "
                         f"{quote(labels[0])}).")
    unknown = next(name for name in folders if name not in matched)
    known = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
    raise AuditError(f"The class folder {quote(unknown)} is not one of the model's {len(labels)} classes ({known}). "
                     "Name each folder after a class, or give --labels (one label a line, in the model's order).")


def read_boxes(csv_file: Path, images: set[str]) -> dict[str, list[list[int]]]:
    """Expected boxes ``(x, y, w, h)`` per image (relative path) from a CSV file; several rows are a union.

    Raises
    ------
    AuditError
        For a missing file, a wrong header, a malformed row (its line is named), or rows naming images that are
        not in the audited folder.
    """
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError) as err:
        raise AuditError(f"Cannot read the boxes file {quote(csv_file.name)}: {err.strerror or err}.") from err
    box_format = _box_format([c.strip().lower() for c in rows[0]] if rows else [], csv_file.name)
    boxes: dict[str, list[list[int]]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 5:
            raise AuditError(f"{csv_file.name}, line {line}: expected 5 values (path and four numbers), "
                             f"got {len(row)}.")
        try:
            box = parse_box(row[1:], box_format)
        except ExplainerError as err:
            raise AuditError(f"{csv_file.name}, line {line}: {err}") from err
        boxes.setdefault(_relative(row[0]), []).append(list(box))
    if not boxes:
        raise AuditError(f"The boxes file {quote(csv_file.name)} has no rows after its header.")
    missing = [rel for rel in boxes if rel not in images]
    if missing:
        listed = ", ".join(quote(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise AuditError(f"{csv_file.name} names {len(missing)} image{'s' if len(missing) > 1 else ''} that "
                         f"{'are' if len(missing) > 1 else 'is'} not in the audited folder: {listed}. Paths are "
                         "relative to the folder, e.g. circle/img_001.png.")
    return boxes


def _box_format(header: list[str], name: str) -> str:
    if header == ["path", "x", "y", "w", "h"]:
        return BOX_FORMATS[0]
    if header == ["path", "x1", "y1", "x2", "y2"]:
        return BOX_FORMATS[1]
    raise AuditError(f"{name} must start with the header row path,x,y,w,h (or path,x1,y1,x2,y2); "
                     f"got {','.join(header) or 'nothing'}.")


def _relative(path: str) -> str:
    rel = path.strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


def find_masks(masks_dir: Path, images: list[str]) -> dict[str, str]:
    """The mask file of each image: same relative path under ``masks_dir``, or same stem with any image suffix.

    Raises
    ------
    AuditError
        When ``masks_dir`` is not a folder or holds the mask of no image.
    """
    if not masks_dir.is_dir():
        raise AuditError(f"There is no masks folder {quote(str(masks_dir))}.")
    masks = {}
    for rel in images:
        same = masks_dir / rel
        candidates = [same] + [same.with_suffix(suffix) for suffix in MASK_SUFFIXES]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            masks[rel] = str(found)
    if not masks:
        raise AuditError(f"The masks folder holds no mask for any image: a mask has its image's relative path "
                         f"(e.g. {quote(images[0])}, any image suffix).")
    return masks


# ------------------------------------------------------------------------------------- explaining (any engine)


def process_batch(model: LoadedModel, items: list[AuditItem], options: AuditOptions) -> list[dict]:
    """Explain and judge a batch of images: one record per item, in order (what every engine runs).

    An image that cannot be read or explained gets a record with an ``error`` message; the others go on.
    """
    records: list[dict | None] = [None] * len(items)
    loaded = []
    for i, item in enumerate(items):
        try:
            loaded.append((i, load_image_with_notes(item.path)))
        except ExplainerError as err:
            records[i] = _failed(item, err)
    outcomes = explain_batch(model, [image.pixels for _i, image in loaded],
                             [items[i].true_index for i, _image in loaded], options.method, options.layer,
                             chunk=max(1, len(loaded)), isolate_errors=True, threshold=options.threshold)
    for (i, image), outcome in zip(loaded, outcomes, strict=True):
        if isinstance(outcome, ExplainerError):
            records[i] = _failed(items[i], outcome)
        else:
            records[i] = _record(items[i], outcome, image.notes, options)
    return records


def _failed(item: AuditItem, err: Exception) -> dict:
    return {"image": item.image, "true_label": item.true_label, "correct": None, "error": str(err)}


def _record(item: AuditItem, result, notes: list[str], options: AuditOptions) -> dict:
    correct = _correct(result, item.true_index)
    record = {"image": item.image, "true_label": item.true_label, "correct": correct, **result.to_dict()}
    expected = None
    if item.has_region:
        record["expected"] = None
        try:
            expected = expected_mask(result.image.shape[:2], box=item.boxes, mask=item.mask)
            comparison = compare_region(result, mask=expected)
            record["expected"] = {key: comparison[key] for key in ("energy_inside", "hit", "iou", "coverage")}
        except ExplainerError as err:
            record["error"] = f"expected region: {err}"
    record["flag"] = _flag(correct, record.get("expected"), options.wrong_reason_threshold)
    if notes:
        record["notes"] = notes
    if options.pictures:  # every record may be among the least confident, whose pictures every report shows
        record["_picture"] = picture(result, expected)
    return record


def _correct(result, true_index: int | None) -> bool | None:
    if true_index is None:
        return None
    if result.head == "multilabel":  # each label is its own yes/no: right when the true one is present
        return any(p.index == true_index for p in result.positive)
    return result.predictions[0].index == true_index


def _flag(correct: bool | None, expected: dict | None, threshold: float) -> str | None:
    """``wrong`` (a wrong prediction), ``wrong_reason`` (right, or unknown, with little energy inside) or None."""
    if correct is False:
        return "wrong"
    if expected is not None and expected["energy_inside"] < threshold:
        return "wrong_reason"
    return None


def picture(result, expected: np.ndarray | None) -> str:
    """The overlay with the localized region and the expected one outlined, as a base64 JPEG for the report."""
    height, width = result.image.shape[:2]
    scale = PICTURE_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(result.image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
    heat = cv2.resize(result.heatmap, size, interpolation=cv2.INTER_LINEAR)
    drawn = overlay(image, heat)
    if result.region.coverage > 0:  # the refined outline (the segmentation), at the picture's size
        drawn = draw_outline(drawn, cv2.resize(result.region.shown_mask.astype(np.uint8), size,
                                               interpolation=cv2.INTER_NEAREST))
    if expected is not None:
        drawn = draw_expected(drawn, cv2.resize(expected.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return base64.b64encode(data.tobytes()).decode("ascii") if ok else ""


def run_local(model: LoadedModel, items: list[AuditItem], options: AuditOptions,
              stop: Callable[[], bool] | None = None) -> Iterable[dict]:
    """Records of every item, in order, batch after batch on this machine; before each batch after the first,
    ``stop()`` may end the run there (a time limit): every record of a batch begun is delivered."""
    for start in range(0, len(items), options.batch_size):
        if stop is not None and start > 0 and stop():
            return
        yield from process_batch(model, items[start : start + options.batch_size], options)


# -------------------------------------------------------------------------------------------- collecting


class Collector:
    """Receives records in order: writes them as JSON Lines, keeps the table rows and the pictures to show."""

    def __init__(self, out: Path, options: AuditOptions, on_record: Callable[[dict], None] | None = None):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "results.jsonl"
        self._stream = open(self.path, "w", encoding="utf-8")  # noqa: SIM115  (closed by close())
        self.rows: list[dict] = []
        self.sections: dict[str, list] = {"wrong": [], "wrong_reason": [], "least_confident": [], "unusual": []}
        self.options = options
        self._on_record = on_record

    def add(self, record: dict) -> None:
        shown = record.pop("_picture", None)
        self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        row = table_row(record, len(self.rows))
        self.rows.append(row)
        if shown is not None:
            if record.get("flag"):
                self._keep(record["flag"], row, shown)
            if row["probability"] is not None:  # with or without expected regions, the report has pictures
                self._keep("least_confident", row, shown)
            if row["unusual"]:
                self._keep("unusual", row, shown)
        if self._on_record:
            self._on_record(record)

    def _keep(self, flag: str, row: dict, shown: str) -> None:
        # Most confident mistakes first; for the right-for-the-wrong-reason, peak outside the region first, then the
        # least energy inside.
        priority = {"wrong": lambda: (row["probability"],), "least_confident": lambda: (-row["probability"],),
                    "unusual": lambda: (row["distance"] or 0.0,),
                    "wrong_reason": lambda: (0 if row["hit"] else 1, -row["energy"])}[flag]()
        heap = self.sections[flag]
        entry = (priority, -row["n"], {**row, "picture": shown})
        if len(heap) < MAX_PICTURES:
            heapq.heappush(heap, entry)
        else:
            heapq.heappushpop(heap, entry)

    def shown(self, flag: str) -> list[dict]:
        return [entry[2] for entry in sorted(self.sections[flag], key=lambda e: e[:2], reverse=True)]

    def close(self) -> None:
        self._stream.close()


def table_row(record: dict, n: int) -> dict:
    """The report table's cells of one record."""
    expected = record.get("expected") or {}
    top = (record.get("predictions") or [{}])[0]
    return {
        "n": n,
        "image": record["image"],
        "true": record.get("true_label"),
        "predicted": top.get("label"),
        "probability": top.get("probability"),
        "target": (record.get("target") or {}).get("label"),
        "correct": record.get("correct"),
        "energy": expected.get("energy_inside"),
        "hit": expected.get("hit"),
        "iou": expected.get("iou"),
        "where": (record.get("region") or {}).get("location"),
        "raw_probability": top.get("raw_probability"),
        "unusual": bool((record.get("ood") or {}).get("unusual")),
        "distance": (record.get("ood") or {}).get("distance"),
        "flag": record.get("flag"),
        "error": record.get("error"),
    }


def summarize(rows: list[dict]) -> dict:
    """Totals of an audit, and per class (true class when known, else the prediction)."""
    summary = _totals(rows)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        key = row["true"] if row["true"] is not None else row["predicted"]
        if key is not None:
            groups.setdefault(key, []).append(row)
    summary["classes"] = [{"name": name, **_totals(group)} for name, group in sorted(groups.items())]
    summary.update(_calibration_summary(rows))
    return summary


def _calibration_summary(rows: list[dict]) -> dict:
    """Reliability of the stated confidence on the labelled images: bins and ECE, and the model's own (raw) ones
    beside them when its probabilities are calibrated; how many images were unlike the training data."""
    judged = [r for r in rows if r["correct"] is not None and r["probability"] is not None]
    correct = [bool(r["correct"]) for r in judged]
    stated = metrics.reliability_bins([r["probability"] for r in judged], correct)
    found = {"reliability": stated, "ece": metrics.calibration_error(stated), "reliability_raw": None,
             "ece_raw": None, "unusual": sum(r["unusual"] for r in rows)}
    if judged and all(r["raw_probability"] is not None for r in judged):
        raw = metrics.reliability_bins([r["raw_probability"] for r in judged], correct)
        found.update(reliability_raw=raw, ece_raw=metrics.calibration_error(raw))
    return found


def _totals(rows: list[dict]) -> dict:
    explained = [r for r in rows if r["predicted"] is not None]
    labelled = [r for r in explained if r["correct"] is not None]
    judged = [r for r in explained if r["energy"] is not None]
    right_judged = [r for r in judged if r["correct"] is not False]
    wrong_reason = sum(r["flag"] == "wrong_reason" for r in rows)
    return {
        "images": len(rows),
        "failed": len(rows) - len(explained),
        "labelled": len(labelled),
        "correct": sum(bool(r["correct"]) for r in labelled),
        "accuracy": _mean([float(r["correct"]) for r in labelled]),
        "with_region": len(judged),
        "energy_inside": _mean([r["energy"] for r in judged]),
        "hit_rate": _mean([float(r["hit"]) for r in judged]),
        "iou": _mean([r["iou"] for r in judged]),
        "wrong": sum(r["flag"] == "wrong" for r in rows),
        "wrong_reason": wrong_reason,
        "wrong_reason_hits": sum(r["flag"] == "wrong_reason" and bool(r["hit"]) for r in rows),
        "wrong_reason_share": wrong_reason / len(right_judged) if right_judged else None,
    }


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def write_report(path: Path, collector: Collector, summary: dict, context: dict) -> Path:
    """Render ``templates/report.html.j2`` into ``path`` (one file: pictures embedded, no network needed).

    Through the chat's environment (:func:`explainer.prose.render`): the same filters, so a percentage reads the same
    in the report as in the chat's audit summary, and HTML escaping for the page.
    """
    html = render(
        "report.html", summary=summary, rows=collector.rows, wrong=collector.shown("wrong"),
        wrong_reason=collector.shown("wrong_reason"), least_confident=collector.shown("least_confident")[:SHOWN_UNSURE],
        unusual=collector.shown("unusual"),
        max_pictures=MAX_PICTURES, **context)
    path.write_text(html, encoding="utf-8")
    return path


def report_context(model, plan: Plan, options: AuditOptions, folder: str, regions: str | None, engine: str,
                   seconds: float) -> dict:
    """What the report says about the run besides its rows."""
    return {
        "model": model.name, "method": get_method(options.method).display_name, "folder": folder,
        "layout": plan.layout, "regions": regions, "threshold": options.wrong_reason_threshold, "engine": engine,
        "seconds": seconds, "throughput": len(plan.items) / seconds if seconds > 0 else None, "notes": plan.notes,
        "options": asdict(options),
    }


@dataclass
class AuditRun:
    """A finished audit: its summary, its two files, and what was noticed on the way.

    ``images`` were explained of the ``planned``; fewer when the run was ``stopped`` at its time limit.
    """

    summary: dict
    results: Path
    report: Path
    images: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    planned: int = 0
    stopped: bool = False


def audit_folder(model: LoadedModel, folder: Path, out: Path, options: AuditOptions = AuditOptions(),
                 boxes: Path | None = None, masks: Path | None = None, name: str | None = None,
                 on_record: Callable[[int, int], None] | None = None, seconds: float | None = None) -> AuditRun:
    """Audit ``folder`` with ``model`` on this machine (the local engine): results.jsonl and report.html in ``out``.

    ``on_record(done, total)`` is called after each image (a progress bar; raising in it stops the audit).
    ``seconds`` bounds the run: no batch but the first starts after it, and the report covers the images explained
    by then, saying so. Raises :class:`AuditError` (via :func:`plan_audit`) when the folder cannot be audited.
    """
    plan = plan_audit(folder, model.labels, boxes, masks, name=name)
    options = options.for_model(model)
    out.mkdir(parents=True, exist_ok=True)
    done = [0]

    def advance(_record: dict) -> None:
        done[0] += 1
        if on_record is not None:
            on_record(done[0], len(plan.items))

    started = time.perf_counter()
    over = (lambda: time.perf_counter() - started > seconds) if seconds is not None else None
    collector = Collector(out, options, on_record=advance)
    try:
        for record in run_local(model, plan.items, options, stop=over):
            collector.add(record)
    finally:
        collector.close()
    elapsed = time.perf_counter() - started
    notes = list(plan.notes)
    stopped = len(collector.rows) < len(plan.items)
    if stopped:
        notes.insert(0, stopped_note(len(collector.rows), len(plan.items), seconds))
    summary = summarize(collector.rows)
    regions = "masks" if masks else "boxes" if boxes else None
    context = report_context(model, plan, options, name or folder.name, regions, "local", elapsed)
    throughput = len(collector.rows) / elapsed if elapsed > 0 else None
    report = write_report(out / "report.html", collector, summary,
                          {**context, "notes": notes, "throughput": throughput})
    return AuditRun(summary, collector.path, report, len(collector.rows), elapsed, notes, len(plan.items), stopped)


def stopped_note(done: int, planned: int, seconds: float | None) -> str:
    """What a report says when its audit stopped at the time limit before every image was explained."""
    return (f"The audit stopped at this server's time limit for one audit ({seconds:g} seconds): {done} of {planned} "
            "images were explained, and this report covers those. Audit a smaller sample here, or run "
            "gradcam-chat audit on your own machine for the whole set.")

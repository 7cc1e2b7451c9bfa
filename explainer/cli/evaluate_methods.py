"""``gradcam-chat evaluate``: how well each CAM method localizes and how faithful it is (a table or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explainer import load_model
from explainer.cams import METHODS, get_method
from explainer.cli.options import fail
from explainer.errors import ExplainerError
from explainer.evaluation import metrics
from explainer.evaluation.method_table import (
    EVALUATION_SEED,
    FOLDER_LAYOUT,
    Dataset,
    demo_dataset,
    evaluate,
    folder_dataset,
    format_table,
)
from explainer.region import DEFAULT_THRESHOLD
from explainer.segment import SEGMENTERS, get_segmenter


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``evaluate`` command."""
    parser.description = "How well each CAM method localizes the object and how faithful it is to the model."
    parser.epilog = FOLDER_LAYOUT
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", help="a .keras/.h5 file or a built-in name (default: the default model)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"methods to compare, space- or comma-separated (default: all: {', '.join(METHODS)})")
    parser.add_argument("--segments", nargs="+", default=None, metavar="SEGMENT",
                        help=f"segmentation methods scored by mask IoU (default: all: {', '.join(SEGMENTERS)})")
    parser.add_argument("--n", type=int, default=100, help="number of demo images (default 100)")
    parser.add_argument("--data", type=Path, help="folder with images/ and masks/ (same stems) instead of demo data")
    parser.add_argument("--seed", type=int, default=EVALUATION_SEED, help="seed of the demo images")
    parser.add_argument("--layer", help="target layer name (default: the last spatial layer)")
    parser.add_argument("--steps", type=int, default=metrics.CURVE_STEPS, help="deletion/insertion steps")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="localization threshold (0-1]")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="pointing-game tolerance in pixels (default: 15 px per 224 px of image side)")
    parser.add_argument("--sanity", action="store_true", help="add the model-randomization check (slower)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def evaluate_command(args: argparse.Namespace) -> int:
    """Run ``evaluate``; one-line error on stderr and exit status 2 on bad input."""
    try:
        methods = _method_names(args.methods)
        segments = _names(args.segments, SEGMENTERS, get_segmenter)
        if args.data is None and args.n < 1:
            raise ExplainerError(f"--n must be at least 1, got {args.n}.")
        if args.steps < 1 or not 0 < args.threshold <= 1 or (args.tolerance or 0) < 0:
            raise ExplainerError("--steps must be ≥ 1, --threshold in (0, 1] and --tolerance ≥ 0.")
        model = load_model(args.model)
        data = folder_dataset(args.data) if args.data else demo_dataset(args.n, args.seed, model.labels)
        table = evaluate(model, data, methods, steps=args.steps, threshold=args.threshold, tolerance=args.tolerance,
                         layer=args.layer, sanity=args.sanity, progress=_progress if sys.stderr.isatty() else None,
                         segments=segments)
    except (ExplainerError, ValueError, OSError) as err:
        return fail(str(err) or type(err).__name__, 2)
    if args.json:
        print(json.dumps(_report(model, data, table, args), indent=2))
    else:
        print(f"{model.name} on {data.source}, {len(data.images)} images; "
              f"classes: {'true labels' if data.labels is not None else 'top predictions'}")
        print(format_table(table))
    return 0


def _method_names(requested: list[str] | None) -> list[str]:
    return _names(requested, METHODS, get_method)


def _names(requested: list[str] | None, known: dict, get) -> list[str]:
    """Canonical names of the requested methods (space- or comma-separated), all of ``known`` by default."""
    if not requested:
        return list(known)
    names = [part for item in requested for part in item.split(",") if part.strip()]
    return list(dict.fromkeys(get(name).name for name in names))


def _report(model, data: Dataset, table: dict, args: argparse.Namespace) -> dict:
    return {
        "model": model.name,
        "data": {"source": data.source, "n": len(data.images), "targets": "labels" if data.labels is not None
                 else "top prediction"},
        "settings": {"steps": args.steps, "threshold": args.threshold, "tolerance": args.tolerance,
                     "deletion_baseline": metrics.DELETION_BASELINE,
                     "insertion_baseline": metrics.INSERTION_BASELINE, "layer": args.layer},
        "methods": {method: _rounded(row) for method, row in table.items()},
    }


def _rounded(row: dict) -> dict:
    return {key: _rounded(value) if isinstance(value, dict) else None if value is None else round(value, 5)
            for key, value in row.items()}


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)

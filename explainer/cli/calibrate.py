"""``gradcam-chat calibrate DIR --model SPEC``: fit how sure the model is, from a labelled class-folder set.

Forward passes only (no map): temperature scaling, the conformal quantile and the feature reference are fitted on
one part of the images and measured on the held-out rest; the result goes into the model's sidecar (merged with
its other fields) or ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from explainer.cli.options import add_model_arguments, fail, model_from
from explainer.errors import ExplainerError
from explainer.evaluation.calibration import (
    DEFAULT_COVERAGE,
    DEFAULT_HOLDOUT,
    MIN_IMAGES,
    MIN_PER_CLASS,
    CalibrationFit,
    calibrate_folder,
)
from explainer.models.loading import MODEL_SUFFIXES, dump_sidecar, write_sidecar


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``calibrate`` command."""
    parser.description = ("Fit temperature scaling, conformal prediction sets and the unusual-image check on a "
                          "labelled set; measure them on a held-out part.")
    parser.epilog = (f"DIR holds one sub-folder of images per class, named after the labels (as for audit); at "
                     f"least {MIN_IMAGES} readable images in all and {MIN_PER_CLASS} per class.")
    parser.add_argument("folder", type=Path, metavar="DIR", help="class sub-folders of labelled images")
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, help="write the two blocks to this JSON file instead of the sidecar")
    parser.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE, help="conformal target 1-alpha")
    parser.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT, help="share of images held out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")


def calibrate_command(args: argparse.Namespace) -> int:
    """Run ``calibrate``: exit 0, or 2 with a one-line error when it cannot."""
    try:
        model = model_from(args)
        target = args.out or _sidecar_target(args.model)
        _check_writable(target)  # before the passes: minutes of work must not end in "cannot write"
        with tqdm(total=None, unit="img", desc="forward passes", file=sys.stderr, disable=None) as bar:
            fit = calibrate_folder(model, args.folder, coverage=args.coverage, holdout=args.holdout, seed=args.seed,
                                   progress=bar.update)
        replaced = _write(target, fit, bool(args.out))
    except ExplainerError as err:
        return fail(str(err), 2)
    for note in fit.notes:
        print(f"note: {note}", file=sys.stderr)
    print(_report(fit))
    if replaced:
        print(f"replaced the existing {' and '.join(replaced)} of {target.name} (other fields kept)")
    print(f"wrote {target}")
    return 0


def _sidecar_target(spec: str | None) -> Path:
    """The model file's sidecar path; a model that is not a local file has none to write."""
    path = Path(spec or "").expanduser()
    if path.suffix.lower() not in MODEL_SUFFIXES or not path.is_file():
        raise ExplainerError(f"{spec or 'The default model'} is not a local model file, so it has no sidecar to "
                             "write: give --out FILE.json.")
    return path.with_suffix(".json")


def _check_writable(target: Path) -> None:
    if not os.access(target if target.exists() else target.parent, os.W_OK):
        raise ExplainerError(f"Cannot write {target}: no permission (give --out FILE.json elsewhere).")


def _write(target: Path, fit: CalibrationFit, to_out: bool) -> list[str]:
    if not to_out:
        return write_sidecar(target, fit.sidecar())
    try:
        target.write_text(dump_sidecar(fit.sidecar()), encoding="utf-8")
    except OSError as err:
        raise ExplainerError(f"Cannot write {target.name!r}: {err.strerror or err}.") from err
    return []


def _report(fit: CalibrationFit) -> str:
    cal, before, after = fit.calibration, fit.before, fit.after
    temps = ", ".join(f"{t:.3g}" for t in cal.temperatures)
    return "\n".join([
        f"fitted on {cal.fitted_on} images, measured on {cal.held_out} held out; temperature {temps}",
        f"ECE (15 bins): {before['ece']:.4f} before, {after['ece']:.4f} after",
        f"accuracy: {before['accuracy']:.4f} before, {after['accuracy']:.4f} after",
        f"{cal.coverage:.0%} prediction sets: coverage {before['coverage']:.4f} before (mean size "
        f"{before['set_size']:.2f}), {after['coverage']:.4f} after (mean size {after['set_size']:.2f})",
        f"unusual-image check: threshold {fit.reference.threshold:.3g} (99th percentile), flags "
        f"{fit.false_alarms:.1%} of held-out images",
    ])


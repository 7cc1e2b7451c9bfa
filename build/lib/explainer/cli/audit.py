"""``gradcam-chat audit DIR|ZIP``: explain a whole validation set and check where the evidence lies.

A folder runs on the local or the Ray engine; a ``.zip`` is unpacked safely and audited like the app's Audit tab
(:func:`explainer.evaluation.audit_archive.audit_archive`, the same function).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from explainer.cams import get_method
from explainer.cli.options import METHOD_HELP, add_model_arguments, fail
from explainer.errors import ExplainerError
from explainer.evaluation.audit import (
    DEFAULT_BATCH_SIZE,
    ENGINES,
    LAYOUT_HELP,
    AuditError,
    AuditOptions,
    Collector,
    ModelSpec,
    Plan,
    plan_audit,
    report_context,
    run_local,
    summarize,
    write_report,
)
from explainer.evaluation.audit_archive import audit_archive
from explainer.evaluation.groundtruth import WRONG_REASON_THRESHOLD
from explainer.layers import resolve_layer
from explainer.models.loading import LoadedModel
from explainer.region import DEFAULT_THRESHOLD

#: Most images of a zip on the command line: the user's own machine, so far more than the app's limit.
ZIP_MAX_IMAGES = 1_000_000


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``audit`` command (those shared with ``explain`` behave the same)."""
    parser.description = "Explain every image of a folder or a .zip and check the evidence lies where it should."
    parser.epilog = LAYOUT_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("folder", type=Path, metavar="DIR|ZIP",
                        help="class sub-folders of images, or a flat folder; or a .zip of either (as the app takes)")
    add_model_arguments(parser)
    parser.add_argument("--method", default=None, help=METHOD_HELP)
    parser.add_argument("--layer", help="target layer (default: a CNN's last spatial layer, a ViT's token embeddings)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="localization threshold (0-1]")
    regions = parser.add_mutually_exclusive_group()
    regions.add_argument("--masks", type=Path, help="folder of expected-region masks (same relative paths)")
    regions.add_argument("--boxes", type=Path, help="CSV of expected boxes: path,x,y,w,h")
    parser.add_argument("--out", type=Path, default=Path("audit"), help="output folder (default: ./audit)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: this machine; ray: a Ray cluster (RAY_ADDRESS) or a local Ray")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per explain call")
    parser.add_argument("--wrong-reason-threshold", type=float, default=WRONG_REASON_THRESHOLD,
                        help="energy inside below which a correct answer is right for the wrong reason")
    parser.add_argument("--workers", type=int, help="Ray: number of model actors (default: cluster CPUs / "
                                                     "--cpus-per-worker)")
    parser.add_argument("--cpus-per-worker", type=int, default=1, help="Ray: CPUs (and TensorFlow threads) per actor")


#: ``run_ray(spec, items, options, workers=, cpus_per_worker=)``: how the Ray engine is called (see audit_ray).
RayRunner = Callable[..., Iterable[dict]]


def audit_command(args: argparse.Namespace, ray_runner: RayRunner | None = None) -> int:
    """Run ``audit``: exit 0, 1 when some images failed (recorded in results.jsonl), 2 when it could not start."""
    if args.folder.suffix.lower() == ".zip" and args.folder.is_file():
        return _audit_zip(args)
    if args.engine == "ray" and ray_runner is None:  # imported only here: Ray loads only when it runs
        from explainer.evaluation.audit_ray import run_ray as ray_runner
    try:
        started = time.perf_counter()
        spec, model, options = _prepare(args)
        plan = plan_audit(args.folder, model.labels, args.boxes, args.masks)
        loaded = time.perf_counter() - started
    except ExplainerError as err:
        return fail(str(err))
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        collector, seconds, first = _run(model, spec, plan, options, args, ray_runner)
    except ExplainerError as err:
        return fail(str(err))
    summary = summarize(collector.rows)
    context = _context(model, plan, options, args, seconds)
    report = write_report(args.out / "report.html", collector, summary, context)
    print(_outcome(summary, len(plan.items), seconds, first, loaded, args.engine), file=sys.stderr)
    print(f"results: {collector.path}\nreport: {report}")
    return 1 if summary["failed"] else 0


def _prepare(args: argparse.Namespace) -> tuple[ModelSpec, LoadedModel, AuditOptions]:
    """The model and the options, checked once before any image (a misspelt method or layer fails here)."""
    _check_arguments(args)
    spec = ModelSpec(args.model, args.labels, args.preprocess, True if args.trust_model else None)
    options = AuditOptions(args.method, args.layer, args.threshold, args.wrong_reason_threshold, args.batch_size)
    model = spec.load()
    options = options.for_model(model)  # the engine's default named in every record and the report
    get_method(options.method)
    resolve_layer(model.keras_model, args.layer)
    return spec, model, options


def _audit_zip(args: argparse.Namespace) -> int:
    """A zip, as the app audits one: unpacked with the same checks, its own boxes.csv or masks/ as regions."""
    if args.engine != "local" or args.boxes or args.masks:
        return fail("A .zip is audited on the local engine with the boxes.csv or masks/ inside it; unzip it to use "
                    "--engine ray, --boxes or --masks.")
    progress = tqdm(unit="img", desc="audit", file=sys.stderr, disable=None)

    def advance(done: int, total: int) -> None:
        progress.total = total
        progress.update(done - progress.n)

    try:
        _spec, model, options = _prepare(args)
        run = audit_archive(args.folder, model, args.out, options, max_images=ZIP_MAX_IMAGES, max_pixels=None,
                            on_record=advance, name=args.folder.name)
    except ExplainerError as err:
        return fail(str(err))
    finally:
        progress.close()
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    print(_outcome(run.summary, run.images, run.seconds, 0.0, 0.0, "local").replace(
        "; first result after 0.0 s; model and folder read in 0.0 s", ""), file=sys.stderr)
    print(f"results: {run.results}\nreport: {run.report}")
    return 1 if run.summary["failed"] else 0


def _check_arguments(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise AuditError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if not 0 < args.threshold <= 1:
        raise AuditError(f"--threshold must be in (0, 1], got {args.threshold}.")
    if not 0 <= args.wrong_reason_threshold <= 1:
        raise AuditError(f"--wrong-reason-threshold must be in [0, 1], got {args.wrong_reason_threshold}.")
    if args.cpus_per_worker < 1 or (args.workers is not None and args.workers < 1):
        raise AuditError("--workers and --cpus-per-worker must be at least 1.")


def _run(model, spec: ModelSpec, plan: Plan, options: AuditOptions, args,
         ray_runner: RayRunner | None = None) -> tuple[Collector, float, float]:
    """Explain every image with the chosen engine; the records flow through one collector (JSONL, table).

    The Ray engine is handed in by the caller (:mod:`explainer.evaluation.audit_ray` builds on this module, not the
    reverse).
    """
    progress = tqdm(total=len(plan.items), unit="img", desc="audit", file=sys.stderr, disable=None)
    started, first = time.perf_counter(), []

    def advance(_record: dict) -> None:
        if not first:  # when the pipeline delivered its first result (start-up: workers, model, tracing)
            first.append(time.perf_counter() - started)
        progress.update(1)

    collector = Collector(args.out, options, on_record=advance)
    try:
        if args.engine == "ray":
            if ray_runner is None:
                raise AuditError("The Ray engine was not provided; run the audit through python -m explainer.")
            records = ray_runner(worker_spec(spec, model), plan.items, options, workers=args.workers,
                                 cpus_per_worker=args.cpus_per_worker)
        else:
            records = run_local(model, plan.items, options)
        for record in records:
            collector.add(record)
    finally:
        collector.close()
        progress.close()
    return collector, time.perf_counter() - started, first[0] if first else 0.0


def worker_spec(spec: ModelSpec, model: LoadedModel) -> ModelSpec:
    """``spec`` for workers elsewhere: a model file by its absolute path, the labels as read here (not a file)."""
    path = Path(spec.spec).expanduser() if spec.spec else None
    name = str(path.resolve()) if path is not None and path.exists() else spec.spec
    return replace(spec, spec=name, labels=list(model.labels) if spec.labels is not None else None)


def _context(model, plan: Plan, options: AuditOptions, args, seconds: float) -> dict:
    regions = "masks" if args.masks else "boxes" if args.boxes else None
    return report_context(model, plan, options, args.folder.name, regions, args.engine, seconds)


def _outcome(summary: dict, n: int, seconds: float, first: float, loaded: float, engine: str) -> str:
    parts = [f"{n} images in {seconds:.1f} s: {n / max(seconds, 1e-9):.1f} images/s ({engine} engine; first "
             f"result after {first:.1f} s; model and folder read in {loaded:.1f} s)"]
    if summary["accuracy"] is not None:
        parts.append(f"accuracy {summary['accuracy']:.1%}")
    if summary["energy_inside"] is not None:
        parts.append(f"mean energy inside {summary['energy_inside']:.1%}, hit rate {summary['hit_rate']:.1%}, "
                     f"mask IoU {summary['iou']:.2f}")
    reason = "right for the wrong reason" if summary["labelled"] else "evidence outside the expected region"
    parts.append(f"wrong predictions {summary['wrong']}, {reason} {summary['wrong_reason']}")
    if summary["failed"]:
        parts.append(f"{summary['failed']} could not be explained (see \"error\" in results.jsonl)")
    return "; ".join(parts)

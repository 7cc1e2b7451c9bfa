"""The Ray engine of ``python -m explainer audit --engine ray``: the same audit spread over a Ray cluster.

A Ray Data pipeline: a dataset of the planned images (:class:`~explainer.evaluation.audit.AuditItem`, one JSON row each,
read by the workers from their paths), ``map_batches`` with :class:`AuditWorker` (a callable class: each actor loads the
model once and runs :func:`explainer.evaluation.audit.process_batch`, the local engine's own batched ``explain``), and
the records streamed back in order to the driver, which writes them through the same collector as the local engine.

With ``RAY_ADDRESS`` set, the driver connects to that cluster and ships this package to the workers
(``runtime_env`` ``py_modules``); the workers need the project's requirements installed and must see the images,
the masks and a model file at the same paths as the driver (a shared file system). Without it, a local Ray starts
on this machine's CPUs and stops at the end. Ray is an optional extra: ``pip install -r requirements-ray.txt``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from explainer.config import setting
from explainer.evaluation.audit import AuditError, AuditItem, AuditOptions, ModelSpec, process_batch

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the explainer package, shipped to the workers


class AuditWorker:
    """One Ray actor: loads the model once, then audits batch after batch.

    Parameters
    ----------
    spec : dict
        A :class:`~explainer.evaluation.audit.ModelSpec` as a dict.
    options : dict
        An :class:`~explainer.evaluation.audit.AuditOptions` as a dict.
    threads : int
        TensorFlow's intra- and inter-op threads: the CPUs Ray reserved for this actor, so that actors sharing a
        machine do not each start one thread per core.
    """

    def __init__(self, spec: dict, options: dict, threads: int):
        limit_threads(threads)
        self.model = ModelSpec(**spec).load()
        self.options = AuditOptions(**options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [AuditItem(**json.loads(text)) for text in batch["item"]]
        records = process_batch(self.model, items, self.options)
        return {"record": np.array([json.dumps(record) for record in records], dtype=object)}


def limit_threads(threads: int) -> None:
    """Set TensorFlow's thread pools to ``threads`` (before the first operation of this process creates them)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process: its pools are fixed, keep them
        logging.getLogger(__name__).warning("TensorFlow threads already set in this worker; left as they are.")


def run_ray(spec: ModelSpec, items: list[AuditItem], options: AuditOptions, workers: int | None = None,
            cpus_per_worker: int = 1) -> Iterator[dict]:
    """Audit ``items`` on Ray; yields each image's record in the order of ``items``.

    Parameters
    ----------
    spec : ModelSpec
        How each worker loads the model (paths must be visible to the workers).
    items, options :
        As for :func:`explainer.evaluation.audit.run_local`.
    workers : int, optional
        Number of model actors (default: the cluster's CPUs divided by ``cpus_per_worker``).
    cpus_per_worker : int
        CPUs Ray reserves for each actor, and TensorFlow's threads in it.

    Raises
    ------
    AuditError
        When Ray is not installed, or the workers fail (e.g. cannot load the model).
    """
    ray = _import_ray()
    started_here = connect(ray)
    try:
        yield from _records(ray, spec, items, options, workers, cpus_per_worker)
    except ray.exceptions.RayError as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise AuditError(f"The Ray workers failed: {first}") from err
    finally:
        if started_here:
            ray.shutdown()


def _records(ray, spec, items, options, workers, cpus_per_worker) -> Iterator[dict]:
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # results.jsonl lists the images in the local engine's order
    context.enable_progress_bars = False  # the audit's own progress bar is the one shown
    if hasattr(context, "max_consecutive_actor_init_deaths"):  # a model the workers cannot load: fail, not retry
        context.max_consecutive_actor_init_deaths = workers or 1
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
    rows = ray.data.from_items([{"item": json.dumps(asdict(item))} for item in items])
    arguments = {
        "fn_constructor_kwargs": {"spec": asdict(spec), "options": asdict(options), "threads": cpus_per_worker},
        "batch_size": options.batch_size,
        "batch_format": "numpy",
        "num_cpus": cpus_per_worker,
        "compute": ray.data.ActorPoolStrategy(size=workers),
    }
    results = _map_batches(rows, arguments, restart=bool(setting("RAY_ADDRESS")))
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        for text in batch["record"]:
            yield json.loads(text)


def _map_batches(rows, arguments: dict, restart: bool):
    """``rows.map_batches(AuditWorker, ...)``; on a local Ray without actor restarts.

    Ray restarts lost actors by default, which a cluster needs (nodes come and go) and which makes Ray print a
    warning about the constructor arguments (ray-project/ray#53727). A local Ray loses no nodes: restarts off, no
    warning. ``max_restarts`` is passed the way Ray 2.60 deprecates; a Ray that no longer takes it gets the default.
    """
    if not restart:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return rows.map_batches(AuditWorker, **arguments, max_restarts=0)
            except TypeError:
                pass
    return rows.map_batches(AuditWorker, **arguments)


def connect(ray) -> bool:
    """Connect to the cluster ``RAY_ADDRESS`` names, else start a local Ray; True when this call started Ray."""
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if setting("RAY_ADDRESS"):
        ray.init(runtime_env={"py_modules": [str(PACKAGE_DIR)]}, **quiet)
    else:
        path = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), setting("PYTHONPATH")) if p)
        ray.init(num_cpus=_local_cpus(), include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}},
                 **quiet)
    return True


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise AuditError("The Ray engine needs Ray: pip install -r requirements-ray.txt") from err
    return ray

"""The bundled demo models: files, sidecars, and behaviour on a fresh sample of generated images.

The reports come from ``explainer.demo.report`` (the measuring path of the README's numbers,
through ``explainer.evaluation.metrics``); the thresholds sit a little below those numbers so that a 100-image sample
passes reliably but a broken or swapped model does not.
"""

import json

import numpy as np
import pytest

from explainer import explain, load_model
from explainer.demo import EXAMPLES_DIR, MODEL_NAMES, model_path
from explainer.demo.generate import CLASSES, make_dataset
from explainer.demo.report import evaluate_honest, evaluate_plain, evaluate_shortcut
from explainer.evaluation.method_table import demo_dataset, evaluate

N = 100
SEED = 31_337  # neither training (1, 2, 10_001, 10_002) nor the evaluations (20_000, 20_002, 20_003)


@pytest.fixture(scope="module")
def honest():
    return load_model("shapes")


@pytest.fixture(scope="module")
def shortcut():
    return load_model("shapes-shortcut")


@pytest.fixture(scope="module")
def honest_report(honest):
    return evaluate_honest(honest, make_dataset(N, SEED))


@pytest.fixture(scope="module")
def shortcut_report(shortcut):
    return evaluate_shortcut(shortcut, make_dataset(N, SEED + 1, shortcut=True),
                             make_dataset(N, SEED + 2, conflict=True))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_file_is_small(name):
    assert model_path(name).stat().st_size < 5 * 1024 * 1024


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_sidecar_describes_the_model(name):
    sidecar = json.loads(model_path(name).with_suffix(".json").read_text())
    assert sidecar["labels"] == list(CLASSES)
    assert sidecar["preprocess"] == "none"
    assert sidecar["input_size"] == [128, 128]
    assert sidecar["description"] and "\n" not in sidecar["description"]
    assert {"seed", "n_images", "epochs", "held_out_accuracy"} <= set(sidecar["training"])
    reference = sidecar["reference"]
    assert len(reference["pixel_mean"]) == len(reference["pixel_std"]) == 3
    for key in ("brightness", "edge_density", "max_probability"):
        assert {"mean", "std", "p01", "p50", "p99"} <= set(reference[key])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_loaded_by_name_with_sidecar_metadata(name, request):
    model = request.getfixturevalue("honest" if name == "shapes" else "shortcut")
    assert model.info.labels == list(CLASSES)
    assert model.info.preprocess == "none"
    assert tuple(model.info.input_size) == (128, 128)
    assert model.keras_model.layers[1].__class__.__name__ == "Rescaling"


def test_honest_model_is_accurate(honest_report):
    assert honest_report["accuracy"] >= 0.95


def test_honest_model_points_at_the_object(honest_report):
    assert honest_report["pointing"] >= 0.85
    assert honest_report["pointing"] > honest_report["pointing_centre_baseline"] + 0.3


def test_demo_report_and_method_table_measure_alike(honest, honest_report):
    """``python -m explainer.demo.report`` and ``python -m explainer evaluate`` give Grad-CAM the same numbers on
    the same images: one measuring path, one tolerance."""
    table = evaluate(honest, demo_dataset(N, SEED, honest.labels), ["gradcam"], steps=1)["gradcam"]
    assert table["pointing"] == pytest.approx(honest_report["pointing"], abs=0.011)
    assert table["centre_baseline"] == pytest.approx(honest_report["pointing_centre_baseline"], abs=1e-9)
    assert table["box_iou"] == pytest.approx(honest_report["mean_iou"], abs=0.005)


def test_honest_model_boxes_overlap_the_objects(honest_report):
    assert honest_report["iou_at_least_0.5"] >= 0.45
    assert honest_report["threshold_sweep"][honest_report["best_threshold"]]["mean_iou"] >= 0.45


def test_honest_model_recognises_plain_dark_shapes(honest):
    report = evaluate_plain(honest)
    assert report["accuracy"] >= 0.95
    assert report["pointing"] >= 0.75


def test_honest_model_ignores_the_tag(honest):
    data = make_dataset(60, SEED + 3, conflict=True)
    results = explain(honest, list(data.images))
    predicted = np.array([r.target_index for r in results])
    assert (predicted == data.labels).mean() >= 0.9


def test_shortcut_model_scores_well_with_matching_tags(shortcut_report):
    assert shortcut_report["accuracy"] >= 0.97


def test_shortcut_model_follows_the_tag_not_the_shape(shortcut_report):
    assert shortcut_report["conflict_follows_mark"] >= 0.9
    assert shortcut_report["conflict_follows_shape"] <= 0.1


def test_shortcut_model_looks_at_the_tag(shortcut_report):
    # A 16x16 map puts the peak for a 10 px tag a cell or two away from it: compare distances.
    assert shortcut_report["conflict_peak_nearer_mark"] >= 0.7
    assert shortcut_report["conflict_peak_on_shape"] <= 0.15


def _examples() -> list[dict]:
    return json.loads((EXAMPLES_DIR / "examples.json").read_text())


def test_examples_are_listed_and_small():
    entries = _examples()
    assert {e["model"] for e in entries} == set(MODEL_NAMES)
    assert any(e["mark"] not in (None, e["label"]) for e in entries if e["model"] == "shapes-shortcut")
    for entry in entries:
        path = EXAMPLES_DIR / entry["file"]
        assert path.is_file() and path.stat().st_size < 50_000
        assert entry["question"] and entry["caption"]


@pytest.mark.parametrize("entry", _examples(), ids=lambda e: e["file"])
def test_examples_get_the_expected_answer(entry, honest, shortcut):
    model = honest if entry["model"] == "shapes" else shortcut
    assert explain(model, str(EXAMPLES_DIR / entry["file"])).target_label == entry["expected"]

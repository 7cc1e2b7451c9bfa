"""``python -m explainer audit``: counts on a folder built to have them, the shortcut model caught, Ray = local,
and plain messages for bad input."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from planted_models import LABELS, planted_squares, trained_model

from explainer import explain, load_model
from explainer.cli.main import main
from explainer.demo.audit_data import write_audit_folder
from explainer.evaluation.audit import (
    SHOWN_UNSURE,
    AuditError,
    AuditOptions,
    Collector,
    class_indices,
    summarize,
    write_report,
)
from explainer.evaluation.groundtruth import compare_region
from explainer.prose import render

MISPLACED = {3, 7, 11}  # images whose expected box is put in a far corner: right for the wrong reason
MISLABELLED = 0  # this image is filed under another class: a wrong prediction
N_PLANTED = 12


def _far_box(box) -> list[int]:
    x, y, _w, _h = box
    return [0 if x > 20 else 28, 0 if y > 20 else 28, 12, 12]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """Twelve planted-square images in class folders, a boxes CSV, masks, a broken file and a stray text file.

    The boxes are the squares grown by 4 px (measured: at least 0.45 of the heat inside), except for
    :data:`MISPLACED`, whose boxes sit in a far corner (at most 0.1 of the heat inside).
    """
    root = tmp_path_factory.mktemp("planted")
    model = trained_model()
    model.keras_model.save(root / "planted.keras")
    (root / "planted.json").write_text(json.dumps({"labels": LABELS, "preprocess": model.info.preprocess}))
    images, labels, _masks, boxes = planted_squares(N_PLANTED, seed=50)
    rows, folder = ["path,x,y,w,h"], root / "images"
    truth = {}
    for i, (image, label, box) in enumerate(zip(images, labels, boxes, strict=True)):
        filed = (int(label) + 1) % 3 if i == MISLABELLED else int(label)
        rel = f"{LABELS[filed]}/p_{i:02d}.png"
        (folder / LABELS[filed]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        x, y, w, h = (int(v) for v in box)
        expected = _far_box(box) if i in MISPLACED else [x - 4, y - 4, w + 8, h + 8]
        rows.append(",".join(str(v) for v in [rel, *expected]))
        mask = np.zeros((40, 40), np.uint8)
        ex, ey, ew, eh = expected
        mask[max(0, ey) : ey + eh, max(0, ex) : ex + ew] = 255
        (root / "masks" / LABELS[filed]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "masks" / rel), cv2.resize(mask, (80, 80), interpolation=cv2.INTER_NEAREST))
        truth[rel] = (image, filed, expected)
    (folder / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "README.txt").write_text("not an image")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return {"root": root, "images": folder, "model": str(root / "planted.keras"), "truth": truth}


def audit(capsys, *args) -> tuple[int, str, str]:
    code = main(["audit", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def planted_run(planted, tmp_path_factory) -> dict:
    """The planted folder audited once with the local engine and the boxes CSV."""
    out = tmp_path_factory.mktemp("planted_out")
    code = main(["audit", str(planted["images"]), "--model", planted["model"], "--boxes",
                 str(planted["root"] / "boxes.csv"), "--out", str(out), "--batch-size", "5"])
    return {"code": code, "out": out, "records": records(out)}


def test_audit_counts_on_a_folder_built_to_have_them(planted, planted_run):
    assert planted_run["code"] == 1  # one image could not be read: recorded, and the exit status says so
    by_image = {r["image"]: r for r in planted_run["records"]}
    assert sorted(by_image) == sorted([*planted["truth"], "red/broken.png"])
    assert "error" in by_image.pop("red/broken.png")
    flags = {rel: r["flag"] for rel, r in by_image.items()}
    assert [rel for rel, f in flags.items() if f == "wrong"] == [rel for rel in flags
                                                                 if int(rel[-6:-4]) == MISLABELLED]
    assert sorted(rel for rel, f in flags.items() if f == "wrong_reason") == sorted(
        rel for rel in flags if int(rel[-6:-4]) in MISPLACED)
    for rel, record in by_image.items():
        _image, filed, _box = planted["truth"][rel]
        assert record["true_label"] == LABELS[filed] and record["target"]["label"] == LABELS[filed]
        assert record["correct"] is (int(rel[-6:-4]) != MISLABELLED)
        assert set(record["expected"]) >= {"energy_inside", "hit", "iou"}
        assert set(record) >= {"predictions", "region", "target"}


def test_audit_numbers_are_the_api_numbers(planted, planted_run):
    model = load_model(planted["model"])
    for record in planted_run["records"][:6]:
        if "error" in record:
            continue
        image, filed, box = planted["truth"][record["image"]]
        direct = compare_region(explain(model, image, target=filed), box=box)
        for key in ("energy_inside", "iou"):
            assert record["expected"][key] == pytest.approx(direct[key], abs=1e-5)
        assert record["expected"]["hit"] == direct["hit"]


def test_report_is_one_offline_file_with_the_flagged_pictures(planted_run):
    html = (planted_run["out"] / "report.html").read_text()
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)  # nothing fetched from the network
    flagged, unsure = html.split("<h2>Least confident")
    pictures = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', flagged)
    assert len(pictures) == 1 + len(MISPLACED)  # every wrong prediction and wrong reason, nothing else
    assert 1 <= unsure.count("data:image/jpeg;base64,") <= SHOWN_UNSURE  # and the least confident, always
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(pictures[0]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (224, 224, 3)
    assert "Wrong predictions (1)" in html and f"Right for the wrong reason ({len(MISPLACED)})" in html
    assert html.count("<tr class=") == N_PLANTED + 1  # the sortable table lists every image
    assert "<script>" in html and "sort(" in html


def test_the_report_and_the_chat_share_one_environment_each_escaping_its_own_way(tmp_path):
    """One jinja environment: the report's ``.html.j2`` escapes a label for HTML only (no Markdown backslashes),
    the chat's templates escape it for Markdown too, and both print a fraction with the same ``pct`` filter."""
    label = "<b>x</b>_*"
    collector = Collector(tmp_path, AuditOptions(method="gradcam"))
    collector.add({"image": "a.png", "true_label": label, "correct": True, "flag": None,
                   "predictions": [{"index": 0, "label": label, "probability": 0.875}], "target": {"label": label}})
    collector.close()
    context = {"model": label, "method": "Grad-CAM", "folder": "f", "layout": "classes", "regions": None,
               "threshold": 0.25, "engine": "local", "seconds": 1.0, "throughput": 1.0, "notes": [], "options": {}}
    html = write_report(tmp_path / "report.html", collector, summarize(collector.rows), context).read_text()
    assert "<td>&lt;b&gt;x&lt;/b&gt;_*</td>" in html and "<b>x</b>" not in html
    assert "\\_" not in html and "\\*" not in html and "\\&lt;" not in html
    assert ">88 %<" in html and "<b>–</b>mean energy inside" in html  # the chat's percentages; None as "–"
    chat = render("no_class", asked=label, candidates=[], n_labels=1, labels=[label])
    assert "&lt;b&gt;x&lt;/b&gt;\\_\\*" in chat and "<b>" not in chat
    assert render("report.html", **context, summary=summarize([]), rows=[], wrong=[], wrong_reason=[],
                  least_confident=[], unusual=[], max_pictures=1).startswith("<!DOCTYPE html>")


def test_masks_give_the_same_numbers_as_boxes(planted, planted_run, tmp_path, capsys):
    code, _out, err = audit(capsys, planted["images"], "--model", planted["model"], "--masks",
                            planted["root"] / "masks", "--out", tmp_path)
    assert code == 1, err
    by_box = {r["image"]: r.get("expected") for r in planted_run["records"]}
    assert {r["image"]: r.get("expected") for r in records(tmp_path)} == by_box


def test_the_shortcut_model_is_caught_and_the_honest_one_is_not(tmp_path, capsys):
    images = write_audit_folder(tmp_path / "data", n=16)
    shares = {}
    for name in ("shapes-shortcut", "shapes"):
        code, _out, err = audit(capsys, images, "--model", name, "--boxes", tmp_path / "data" / "boxes.csv",
                                "--out", tmp_path / name)
        assert code == 0, err
        found = records(tmp_path / name)
        correct = [r for r in found if r["correct"]]
        assert len(correct) >= 15
        shares[name] = sum(r["flag"] == "wrong_reason" for r in correct) / len(correct)
        shares[name + " hits"] = np.mean([r["expected"]["hit"] for r in correct])
        assert "images/s" in err
    assert shares["shapes-shortcut"] >= 0.8 and shares["shapes-shortcut hits"] <= 0.3
    assert shares["shapes"] <= 0.4 and shares["shapes hits"] >= 0.9


@pytest.mark.slow  # a local Ray starts (about 10 s)
def test_ray_engine_equals_the_local_engine(planted, planted_run, tmp_path, capsys):
    pytest.importorskip("ray")
    code, _out, err = audit(capsys, planted["images"], "--model", planted["model"], "--boxes",
                            planted["root"] / "boxes.csv", "--out", tmp_path, "--engine", "ray", "--workers", "2",
                            "--batch-size", "4")
    assert code == 1, err
    assert "ray engine" in err
    ray_records, local_records = records(tmp_path), planted_run["records"]
    assert [r["image"] for r in ray_records] == [r["image"] for r in local_records]
    for got, want in zip(ray_records, local_records, strict=True):
        assert _close(got, want), got["image"]


def _close(a, b) -> bool:
    """Equal, floats within 1e-4 (TensorFlow may sum in another order for another batch size)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, abs=1e-4)
    return a == b


def test_a_flat_folder_explains_the_prediction(planted, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for rel in list(planted["truth"])[:3]:
        (flat / Path(rel).name).write_bytes((planted["images"] / rel).read_bytes())
    code, _out, err = audit(capsys, flat, "--model", planted["model"], "--out", tmp_path / "out")
    assert code == 0, err
    found = records(tmp_path / "out")
    assert len(found) == 3
    for record in found:
        assert record["true_label"] is None and record["correct"] is None and "expected" not in record
        assert record["target"]["index"] == record["predictions"][0]["index"]


# ------------------------------------------------------------------------------------------------ bad input


def test_a_boxes_file_naming_missing_images_stops_before_any_work(planted, tmp_path, capsys):
    csv_file = tmp_path / "boxes.csv"
    csv_file.write_text("path,x,y,w,h\nred/nope.png,1,1,5,5\ngreen/gone.png,1,1,5,5\n")
    code, _out, err = audit(capsys, planted["images"], "--model", planted["model"], "--boxes", csv_file,
                            "--out", tmp_path / "out")
    assert code == 2
    assert err.strip().splitlines() == ["error: boxes.csv names 2 images that are not in the audited folder: "
                                        "'red/nope.png', 'green/gone.png'. Paths are relative to the folder, e.g. "
                                        "circle/img_001.png."]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("file,x,y,w,h\nred/p_01.png,1,1,5,5\n", "must start with the header row path,x,y,w,h"),
    ("path,x,y,w,h\nred/p_01.png,1,1,5\n", "line 2: expected 5 values"),
    ("path,x,y,w,h\nred/p_01.png,1,1,0,5\n", "line 2: The box 1, 1, 0, 5 has no area"),
    ("path,x,y,w,h\n", "has no rows after its header"),
])
def test_malformed_boxes_files(planted, tmp_path, capsys, content, message):
    (tmp_path / "b.csv").write_text(content)
    code, _out, err = audit(capsys, planted["images"], "--model", planted["model"], "--boxes", tmp_path / "b.csv")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_folders_without_images(planted, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts" / "red").mkdir(parents=True)
    (tmp_path / "texts" / "red" / "a.txt").write_text("hello")
    for folder in (tmp_path / "empty", tmp_path / "texts", tmp_path / "missing"):
        code, _out, err = audit(capsys, folder, "--model", planted["model"])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "holds no images" in err or "There is no folder" in err


def test_per_image_problems_are_recorded_and_the_run_goes_on(planted, tmp_path, capsys):
    csv_file = tmp_path / "boxes.csv"
    rels = list(planted["truth"])
    csv_file.write_text(f"path,x,y,w,h\n{rels[1]},100,100,5,5\n{rels[2]},2,2,10,10\n")
    code, _out, err = audit(capsys, planted["images"], "--model", planted["model"], "--boxes", csv_file,
                            "--out", tmp_path / "out")
    assert code == 1
    assert "Skipped 1 file that is not an image by its name (e.g. 'README.txt')" in err
    found = {r["image"]: r for r in records(tmp_path / "out")}
    assert len(found) == N_PLANTED + 1
    assert found["red/broken.png"]["error"] == "'broken.png' is not an image format I can read."
    outside = found[rels[1]]
    assert outside["expected"] is None and "lies outside the image" in outside["error"] and outside["predictions"]
    assert found[rels[2]]["expected"]["energy_inside"] >= 0
    assert found[rels[3]].get("expected") is None and "error" not in found[rels[3]]  # no box for it: not judged


def test_unknown_class_folders_and_masks(planted, tmp_path, capsys):
    other = tmp_path / "zoo"
    (other / "giraffe").mkdir(parents=True)
    (other / "giraffe" / "g.png").write_bytes((planted["images"] / next(iter(planted["truth"]))).read_bytes())
    code, _out, err = audit(capsys, other, "--model", planted["model"])
    assert code == 2 and "The class folder 'giraffe' is not one of the model's 3 classes (red, green, blue)" in err
    code, _out, err = audit(capsys, planted["images"], "--model", planted["model"], "--masks", tmp_path)
    assert code == 2 and "holds no mask for any image" in err


def test_class_folders_match_labels_by_name_index_or_keras_order():
    assert class_indices(["Red", "2"], ["red", "green", "blue"]) == ({"Red": 0, "2": 2}, None)
    mapping, note = class_indices(["n02", "n01", "n03"], ["tench", "goldfish", "shark"])
    assert mapping == {"n01": 0, "n02": 1, "n03": 2} and "sorted order" in note
    with pytest.raises(AuditError, match="'n09' is not one of"):
        class_indices(["n09"], ["tench", "goldfish", "shark"])


def test_the_report_shows_reliability_and_the_images_unlike_the_training_data(tmp_path):
    """The calibrated shapes model on its own kind of images plus textures that hold no shape: the report draws the
    reliability diagram (calibrated and raw), states both ECEs, and shows the textures as unlike the training data."""
    from explainer.demo.audit_data import write_audit_folder
    from explainer.demo.generate import not_shapes
    from explainer.evaluation.audit import audit_folder

    images = write_audit_folder(tmp_path / "set", n=40, tag=False)
    odd, _kinds = not_shapes(8, seed=7)
    for i, picture in enumerate(odd):
        cv2.imwrite(str(images / "circle" / f"odd_{i}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    run = audit_folder(load_model("shapes"), images, tmp_path / "out", AuditOptions())
    summary = run.summary
    assert summary["ece"] is not None and summary["ece_raw"] is not None and 0 <= summary["ece"] <= 1
    assert sum(b["count"] for b in summary["reliability"]) == summary["labelled"] == 48
    records = [json.loads(line) for line in run.results.read_text().splitlines()]
    flagged = [r["image"] for r in records if r["ood"]["unusual"]]
    assert summary["unusual"] == len(flagged) and sum("odd_" in name for name in flagged) >= 5
    assert sum("odd_" not in name for name in flagged) <= 2  # its own kind of image is rarely flagged
    html = run.report.read_text()
    assert 'aria-label="Reliability diagram"' in html and html.count("<rect") > 3
    unusual = html.split("<h2>Unlike the training data")[1].split("<h2>")[0]
    assert unusual.count("data:image/jpeg;base64,") == len(flagged)

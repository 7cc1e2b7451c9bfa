"""The command line: JSON Lines, output files, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import gap_cnn

from explainer.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    model = gap_cnn(n_classes=3, size=32)
    model.save(folder / "tiny.keras")
    (folder / "tiny.json").write_text(json.dumps({"labels": ["red", "green", "blue"], "preprocess": "unit",
                                                  "description": "a tiny test model"}))
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "b.jpg"), rng.integers(0, 256, (64, 32, 3), dtype=np.uint8))
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    data = (folder / "a.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 3])
    return folder


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_lines_and_files(workdir, capsys, tmp_path):
    code, out, err = run(capsys, "explain", str(workdir / "a.png"), str(workdir / "b.jpg"),
                         "--model", str(workdir / "tiny.keras"), "--out", str(tmp_path), "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["image"]).name for r in records] == ["a.png", "b.jpg"]
    for record, (h, w) in zip(records, [(40, 60), (64, 32)], strict=True):
        assert record["model"] == "tiny" and record["method"] == "gradcam" and record["layer"] == "relu_a"
        assert record["target"]["label"] in {"red", "green", "blue"}
        assert record["target"] == {k: record["predictions"][0][k] for k in ("index", "label", "probability")}
        assert abs(sum(p["probability"] for p in record["predictions"]) - 1) < 1e-4
        assert set(record["region"]) >= {"bbox", "coverage", "centroid", "peak", "location"}
        heatmap = np.load(record["heatmap_file"])
        assert heatmap.shape == (h, w) and heatmap.dtype == np.float32
        assert cv2.imread(record["overlay_file"]).shape == (h, w, 3)


def test_target_and_folder(workdir, capsys):
    code, out, _ = run(capsys, "explain", str(workdir), "--model", str(workdir / "tiny.keras"),
                       "--target", "Blue", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert {Path(r["image"]).name for r in lines} == {"a.png", "b.jpg"}
    assert all(r["target"]["label"] == "blue" for r in lines)
    assert code == 1  # the folder also holds the broken files, reported on stderr


def test_bad_images_reported_good_ones_processed(workdir, capsys):
    names = ["missing.png", "empty.png", "notes.png", "truncated.png", "a.png"]
    code, out, err = run(capsys, "explain", *[str(workdir / n) for n in names],
                         "--model", str(workdir / "tiny.keras"), "--json")
    assert code == 1
    assert [Path(json.loads(line)["image"]).name for line in out.splitlines()] == ["a.png"]
    errors = err.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("error: ") for line in errors)
    assert "missing.png" in errors[0] and "empty" in errors[1]
    assert "not an image" in errors[2] and "truncated" in errors[3]


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "no-such-model"], "Unknown model"),
    (["--target", "purple"], "no class called 'purple'"),
    (["--method", "grad-kam"], "Unknown method"),
    (["--layer", "conv_z"], "no layer called"),
])
def test_bad_options_exit_2_with_one_line(workdir, capsys, args, message):
    if "--model" not in args:
        args = [*args, "--model", str(workdir / "tiny.keras")]
    code, out, err = run(capsys, "explain", str(workdir / "a.png"), *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and not out


def test_subprocess_output_is_free_of_tensorflow_noise(workdir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, "-m", "explainer", "explain", str(workdir / "a.png"),
                           "--model", str(workdir / "tiny.keras")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert proc.stdout.startswith(str(workdir / "a.png")) and "relu_a" in proc.stdout

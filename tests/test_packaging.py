"""The package as a user installs it: a wheel built from the repository, installed into a fresh virtual environment,
run from a folder outside the repository (``gradcam-chat explain`` and ``gradcam-chat serve``).

The fresh environment gets the project's dependencies from this test environment's site-packages (a ``.pth`` file):
what is tested is the wheel (its modules, templates, demo models, labels and console command), not pip's download
of TensorFlow. ``.ci/run`` also installs the repository with plain ``pip install`` into an empty environment.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import tomllib
from app_server import free_port, shape_png

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what it is made of (setuptools writes build/ and *.egg-info beside it)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md", "requirements.txt", "requirements-ray.txt"):
        shutil.copy(ROOT / name, source / name)
    for name in ("explainer", "templates"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, cwd=out)
    return next(out.glob("gradcam_chat-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict]:
    """(bin folder, environment) of a fresh venv holding only the wheel (dependencies seen through a .pth)."""
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.update(EXPLAINER_OFFLINE="1", EXPLAINER_MODEL="shapes")
    return venv / "bin", env


def test_the_wheel_carries_templates_models_labels_and_examples(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.relative_to(ROOT / "templates").as_posix() for p in (ROOT / "templates").rglob("*.j2")}
    assert {f"explainer/templates/{name}" for name in templates} <= names
    assert {"explainer/demo/models/shapes.keras", "explainer/demo/models/shapes.json",
            "explainer/demo/models/shapes-shortcut.keras", "explainer/models/data/imagenet_labels.txt",
            "explainer/demo/examples/examples.json", "explainer/fonts/DejaVuSans.ttf",
            "explainer/fonts/LICENSE_DEJAVU"} <= names
    assert not any(name.startswith(("tests/", "benchmarks/")) or "screenshots" in name for name in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "gradcam-chat = explainer.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_the_package_list_is_every_package_folder():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "explainer").rglob("__init__.py")}
    assert listed == found | {"explainer.templates"}


def test_installed_explain_prints_json_lines_outside_the_repository(installed, tmp_path):
    bin_dir, env = installed
    image = shape_png(tmp_path, "circle")
    run = subprocess.run([str(bin_dir / "gradcam-chat"), "explain", image, "--model", "shapes", "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(run.stdout.splitlines()[0])
    assert record["model"] == "shapes" and record["target"]["label"] == "circle"
    where = subprocess.run([str(bin_dir / "python"), "-c", "import explainer; print(explainer.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert str(bin_dir.parent) in where and str(ROOT) not in where  # the wheel's copy, not the repository's


def test_installed_serve_answers_explain(installed, tmp_path):
    from gradio_client import handle_file

    bin_dir, env = installed
    port = free_port()
    server = subprocess.Popen([str(bin_dir / "gradcam-chat"), "serve", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = _connect(f"http://127.0.0.1:{port}/", server)
        answer, _overlay, facts = client.predict(handle_file(shape_png(tmp_path, "square")), "why?", "shapes", "",
                                                 api_name="/explain")
        assert "square" in answer.lower() and facts["data"]["explanation"]["target"]["label"] == "square"
    finally:
        server.terminate()
        server.wait(30)


def test_python_m_explainer_is_the_same_command():
    tree = ast.parse((ROOT / "explainer" / "__main__.py").read_text())
    imported = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "explainer.cli"]
    assert imported and imported[0].names[0].name == "main"
    run = subprocess.run([sys.executable, "-m", "explainer", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0 and all(name in run.stdout for name in ("serve", "explain", "audit", "evaluate"))


def _connect(url: str, server: subprocess.Popen):
    from gradio_client import Client

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"gradcam-chat serve exited: {server.stderr.read().decode()[-2000:]}")
        try:
            return Client(url, verbose=False)
        except Exception:
            time.sleep(1)
    raise AssertionError("gradcam-chat serve did not answer within 240 s")

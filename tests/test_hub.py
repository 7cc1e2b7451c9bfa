"""Models from the Hugging Face Hub and Keras Hub, offline: the Hub client is replaced by one serving folders the
tests write (or, in a subprocess, pointed at a Hub cache the test lays out under HF_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import keras
import keras_hub
import numpy as np
import pytest
from conftest import gap_cnn
from huggingface_hub import errors as hub_errors

from explainer import ModelError, explain, load_model
from explainer.cli.main import main
from explainer.models import hub

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["red", "green", "blue"]


class FakeHub:
    """Stands in for huggingface_hub's download functions: repositories are folders, the cache a set of them.

    Records every call as (function, repo_id, filename, local_files_only).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cached: set[str] = set()
        self.calls: list[tuple] = []

    def repo(self, repo_id: str) -> Path:
        folder = self.root / repo_id.replace("/", "--")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _folder(self, repo_id: str, local_files_only: bool) -> Path:
        folder = self.root / repo_id.replace("/", "--")
        if local_files_only and repo_id not in self.cached:
            raise hub_errors.LocalEntryNotFoundError("not in the cache")
        if not folder.is_dir():
            response = SimpleNamespace(headers={}, request=None)
            raise hub_errors.RepositoryNotFoundError(f"404 {repo_id}", response=response)
        return folder

    def hf_hub_download(self, repo_id: str, filename: str, local_files_only: bool = False, **_kwargs) -> str:
        self.calls.append(("hf_hub_download", repo_id, filename, local_files_only))
        path = self._folder(repo_id, local_files_only) / filename
        if not path.is_file():
            raise hub_errors.EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    def snapshot_download(self, repo_id: str, local_files_only: bool = False, **_kwargs) -> str:
        self.calls.append(("snapshot_download", repo_id, None, local_files_only))
        return str(self._folder(repo_id, local_files_only))

    def list_repo_files(self, repo_id: str, **_kwargs) -> list[str]:
        self.calls.append(("list_repo_files", repo_id, None, False))
        folder = self._folder(repo_id, False)
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def fake_hub(monkeypatch, tmp_path) -> FakeHub:
    fake = FakeHub(tmp_path / "hub")
    for name in ("hf_hub_download", "snapshot_download", "list_repo_files"):
        monkeypatch.setattr(huggingface_hub, name, getattr(fake, name))  # also what Keras and Keras Hub call
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    return fake


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    return gap_cnn(n_classes=3, size=32, seed=4)


def _image(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _same_predictions(loaded, model: keras.Model, image: np.ndarray) -> None:
    x = loaded.prepare([image])
    np.testing.assert_allclose(explain(loaded, image).probabilities, model(x).numpy()[0], atol=1e-5)


# --- a plain .keras/.h5 file in a repository ----------------------------------------------------------------------


def test_plain_file_repo_with_labels_and_sidecar(fake_hub, cnn):
    folder = fake_hub.repo("someone/colours")
    cnn.save(folder / "model.keras")
    (folder / "model.json").write_text(json.dumps({"preprocess": "symmetric", "description": "three colours"}))
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    loaded = load_model("hf://someone/colours")
    assert loaded.labels == LABELS
    assert loaded.info.preprocess == "symmetric" and loaded.info.description == "three colours"
    assert loaded.info.source == "hf://someone/colours/model.keras" and loaded.name == "model"
    _same_predictions(loaded, cnn, _image())
    downloaded = {c[2] for c in fake_hub.calls if c[0] == "hf_hub_download"}
    assert {"model.keras", "model.json", "labels.txt"} <= downloaded


def test_a_file_named_in_the_spec_and_several_files_refused(fake_hub, cnn):
    folder = fake_hub.repo("someone/two")
    cnn.save(folder / "first.keras")
    (folder / "nested").mkdir()
    cnn.save(folder / "nested" / "second.h5")
    with pytest.raises(ModelError, match=r"several model files .*first\.keras.*hf://someone/two/"):
        load_model("hf://someone/two")
    loaded = load_model("hf://someone/two/nested/second.h5", labels=LABELS)
    assert loaded.info.source == "hf://someone/two/nested/second.h5"
    _same_predictions(loaded, cnn, _image(1))


def test_a_repo_without_a_model_is_refused(fake_hub):
    (fake_hub.repo("someone/data") / "README.md").write_text("no model here")
    with pytest.raises(ModelError, match="holds no Keras model"):
        load_model("hf://someone/data")


def test_lambda_refused_even_when_trusted(fake_hub):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))
    model.save(fake_hub.repo("someone/code") / "model.keras")
    with pytest.raises(ModelError, match="Lambda"):
        load_model("hf://someone/code", trust=True)
    model.save(fake_hub.repo("someone/code-saved"), zipped=False)  # the layout of model.save("hf://...")
    with pytest.raises(ModelError, match="safe mode"):
        load_model("hf://someone/code-saved", trust=True)


# --- a repository written by model.save("hf://...") ----------------------------------------------------------------


def test_keras_saved_repo_goes_through_keras_own_hf_loader(fake_hub, cnn, monkeypatch):
    folder = fake_hub.repo("someone/saved")
    cnn.save(folder, zipped=False)  # config.json, metadata.json, model.weights.h5: what model.save("hf://") uploads
    (folder / "labels.txt").write_text("\n".join(LABELS))
    seen = []
    keras_load = keras.saving.load_model
    spy = lambda spec, **kw: seen.append((spec, kw)) or keras_load(spec, **kw)  # noqa: E731
    monkeypatch.setattr(keras.saving, "load_model", spy)
    loaded = load_model("hf://someone/saved")
    assert seen == [("hf://someone/saved", {"compile": False, "safe_mode": True})]
    assert ("snapshot_download", "someone/saved", None, False) in fake_hub.calls  # Keras's own download
    assert loaded.labels == LABELS and loaded.info.source == "hf://someone/saved" and loaded.name == "saved"
    _same_predictions(loaded, cnn, _image(2))


def test_offline_a_cached_repo_still_loads_without_network_calls(fake_hub, cnn, monkeypatch):
    cnn.save(fake_hub.repo("someone/cached"), zipped=False)
    fake_hub.cached.add("someone/cached")
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    loaded = load_model("hf://someone/cached", labels=LABELS)
    assert all(call[3] for call in fake_hub.calls if call[0] != "list_repo_files")  # local_files_only throughout
    _same_predictions(loaded, cnn, _image(3))


# --- errors -------------------------------------------------------------------------------------------------------


def test_offline_and_not_cached_fails_at_once_naming_the_repo(fake_hub, monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    with pytest.raises(ModelError) as caught:
        load_model("hf://someone/elsewhere")
    message = str(caught.value)
    assert "someone/elsewhere" in message and "cannot be reached" in message
    assert fake_hub.calls and all(call[3] for call in fake_hub.calls)  # looks in the cache, no download attempt


def test_real_client_offline_gives_the_plain_message(monkeypatch, tmp_path, capsys):
    """The real huggingface_hub, told it is offline: the same sentence, also as the CLI's one line, exit 2."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub.hub_reachable()
    with pytest.raises(ModelError, match=r"hf://someone/vit.*cannot be reached.*not in the local Hub cache"):
        load_model("hf://someone/vit")
    image = tmp_path / "a.png"
    keras.utils.save_img(image, _image())
    code = main(["explain", str(image), "--model", "hf://someone/vit"])
    out, err = capsys.readouterr()
    assert code == 2 and not out
    assert err.count("\n") == 1 and "someone/vit" in err and "cannot be reached" in err and "Traceback" not in err


@pytest.mark.parametrize(("error", "message"), [
    (hub_errors.GatedRepoError, "gated"),
    (hub_errors.RepositoryNotFoundError, "no model 'someone/x' on the Hugging Face Hub"),
    (hub_errors.RemoteEntryNotFoundError, "has no such file"),
])
def test_hub_errors_become_plain_sentences(monkeypatch, error, message):
    def refuse(**_kwargs):
        raise error("404 Client Error", response=SimpleNamespace(headers={}, request=None))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    with pytest.raises(ModelError, match=message):
        load_model("hf://someone/x/model.keras")


@pytest.mark.parametrize("spec", ["hf://", "hf://just-a-name", "hf://a/b/../../etc/passwd.keras", "hf://a b/c"])
def test_malformed_ids_refused(spec):
    with pytest.raises(ModelError, match="not a Hugging Face model id"):
        load_model(spec)


def test_hf_home_is_honoured(tmp_path, cnn):
    """A fresh process with HF_HOME pointing at a Hub cache laid out here, offline: the real client finds the file."""
    snapshot = tmp_path / "hf_home" / "hub" / "models--someone--cached" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    cnn.save(snapshot / "model.keras")
    (snapshot / "labels.txt").write_text("\n".join(LABELS))
    script = textwrap.dedent("""
        from explainer import load_model
        model = load_model("hf://someone/cached")
        print(model.labels, model.info.source)
    """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == f"{LABELS} hf://someone/cached/model.keras"


# --- Keras Hub ----------------------------------------------------------------------------------------------------


def _small_vit(num_classes: int, with_preprocessor: bool = True):
    keras.utils.set_random_seed(2)
    backbone = keras_hub.models.ViTBackbone(image_shape=(64, 64, 3), patch_size=8, num_layers=2, num_heads=2,
                                            hidden_dim=16, mlp_dim=32)
    converter = keras_hub.layers.ViTImageConverter(image_size=(64, 64), scale=1 / 127.5, offset=-1.0)
    preprocessor = keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter)
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=num_classes,
                                               preprocessor=preprocessor if with_preprocessor else None)


def test_keras_hub_preset_repo_with_its_preprocessing(fake_hub):
    task = _small_vit(3)
    folder = fake_hub.repo("someone/tiny-vit")
    task.save_to_preset(str(folder))
    (folder / "labels.txt").write_text("\n".join(LABELS))
    loaded = load_model("hf://someone/tiny-vit")
    assert type(loaded.keras_model).__name__ == "ViTImageClassifier"
    assert loaded.info.preprocess == "symmetric" and loaded.info.input_size == (64, 64)
    assert loaded.labels == LABELS and loaded.info.source == "hf://someone/tiny-vit"
    image = _image(5, 64)
    raw = task(loaded.prepare([image])).numpy()[0]
    np.testing.assert_allclose(explain(loaded, image).logits, raw, atol=1e-4)
    assert explain(loaded, image).cam.shape == (8, 8)
    assert {c[2] for c in fake_hub.calls} >= {"config.json", "metadata.json", "task.json", "model.weights.h5"}


def test_keras_hub_preset_by_name_gets_imagenet_labels(monkeypatch):
    calls = []

    def from_preset(preset, **_kwargs):
        calls.append(preset)
        return _small_vit(1000)

    monkeypatch.setattr(keras_hub.models.ImageClassifier, "from_preset", from_preset)
    loaded = load_model("vit_base_patch16_224_imagenet")
    assert calls == ["vit_base_patch16_224_imagenet"]
    assert len(loaded.labels) == 1000 and loaded.labels[281] == "tabby cat"
    assert loaded.info.preprocess == "symmetric"


def test_keras_hub_preset_unreachable(monkeypatch):
    import requests

    def from_preset(preset, **_kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.ImageClassifier, "from_preset", from_preset)
    with pytest.raises(ModelError, match=r"preset 'vit_base_patch16_224_imagenet'.*Kaggle.*cannot be reached"):
        load_model("vit_base_patch16_224_imagenet")


def test_unknown_preprocessing_is_refused(fake_hub):
    task = _small_vit(3)
    task.preprocessor.image_converter.scale = 0.5  # not one of the modes the engine knows
    task.save_to_preset(str(fake_hub.repo("someone/odd-vit")))
    with pytest.raises(ModelError, match="scales its images in a way"):
        load_model("hf://someone/odd-vit")


@pytest.mark.parametrize(("spec", "reason"), [
    ("hf://a/b//abs/path.keras", "two slashes in a row"),
    ("hf://a..b/c..d", "cannot hold '..' or '--'"),
    ("hf://owner--x/repo", "cannot hold '..' or '--'"),
    ("hf://owner/repo\n/x.keras", "a line break"),  # a pattern ending in $ would accept "repo\n"
    ("hf://owner/repo\n", None),  # a trailing line break is stripped like any surrounding space: a valid id
    ("hf://-owner/repo.", "starting and ending with a letter or a digit"),
    ("hf://owner/repo<b>BOLD</b>", "at most 96 letters, digits"),
    ("hf://owner/repo/./model.keras", "cannot step out of it"),
    ("hf://" + "x" * 100_005, "it is 100,005 characters long"),
])
def test_each_malformed_id_gets_its_own_sentence(spec, reason):
    if reason is None:
        assert hub.parse(spec) == ("owner/repo", None)
        return
    with pytest.raises(ModelError, match="not a Hugging Face model id") as caught:
        hub.parse(spec)
    message = str(caught.value)
    assert reason in message and "\n" not in message
    assert len(message) < 400  # the id is quoted by its first 80 characters at most


def test_the_hub_clients_own_id_check_is_a_plain_sentence(fake_hub, monkeypatch):
    def refuse(**_kwargs):
        raise hub_errors.HFValidationError("Repo id must use alphanumeric chars")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(ModelError, match="'someone/x' is not a repository id the Hugging Face Hub accepts"):
        load_model("hf://someone/x/model.keras")

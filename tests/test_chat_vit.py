"""The chat on a vision transformer: HiResCAM until the user chooses a method, why (once, with the README's pointing
numbers), and layers named by blocks on the patch grid; a CNN keeps Grad-CAM and its old layer wording.

The ViT is Keras Hub's ViTImageClassifier with random weights, built by ``tests/test_vit.py`` (64×64, 8×8 patches,
2 blocks, dimension 32); the CNN is the bundled ``shapes`` model.
"""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_vit import BARS, SIZE, hub_vit

import explainer
from explainer import tokens
from explainer.chat import ChatSession
from explainer.chat.session import SettingError, Settings
from explainer.cli.main import main
from explainer.layers import depth_layer_names

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vit() -> explainer.LoadedModel:
    return explainer.load_model(hub_vit(), labels=BARS, preprocess="unit")


@pytest.fixture(scope="module")
def shapes() -> explainer.LoadedModel:
    return explainer.load_model("shapes")


def _image(seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _plain(markdown: str) -> str:
    """What a reader sees: Markdown backslash escapes and HTML entities undone."""
    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


def _pointing_numbers() -> tuple[str, str, str]:
    """From the README's pointing table ("all 21" column): the default's accuracy, HiResCAM's at pytorch-grad-cam's
    layer, and how many models were measured."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Models from the Hub, and vision transformers"):]
    default = re.search(r"^\| \*\*token embeddings.*\*\*HiResCAM\*\* .*\| \*\*(\d+) %", section, re.M).group(1)
    convention = re.search(r"^\| norm before the last block's attention \(pytorch-grad-cam's choice\) \| HiResCAM "
                           r"\|.*\| (\d+) % \(\d+ %\) \|$", section, re.M).group(1)
    models = re.search(r"\| all (\d+) \|", section).group(1)
    return default, convention, models


# --- the method ---------------------------------------------------------------------------------------------------


def test_why_uses_hirescam_and_says_why_once(vit):
    chat = ChatSession(vit)
    assert chat.settings.method is None and chat.state.method == "hirescam" == tokens.DEFAULT_METHOD
    first = chat.respond("why?", [_image()])
    text = _plain(first.markdown)
    assert not first.error and first.data["method"] == "hirescam" == first.data["explanation"]["method"]
    assert first.data["explanation"]["layer"] == f"{vit.keras_model.backbone.name}/vit_patching_and_embedding"
    assert "· HiResCAM · layer" in text  # the footer names the method used
    default, convention, models = _pointing_numbers()
    assert first.data["transformer_note"]
    for fact in (f"{default} %", f"{convention} %", f"{models} small ViTs", "only through attention",
                 "last block's output gives an empty map", "pytorch-grad-cam", "token embeddings"):
        assert fact in text, fact
    again = chat.respond("why?")
    assert again.data["method"] == "hirescam" and not again.data["transformer_note"]
    assert f"{default} %" not in _plain(again.markdown) and "pytorch-grad-cam" not in _plain(again.markdown)
    twin = copy.deepcopy(chat)  # Gradio copies the state: the note stays said
    assert not twin.respond("why?").data["transformer_note"]


def test_use_gradcam_is_the_users_choice(vit, shapes):
    chat = ChatSession(vit)
    chat.respond("", [_image(1)])
    switched = chat.respond("use gradcam")
    assert switched.data["method"] == "gradcam" and chat.settings.method == "gradcam"
    why = chat.respond("why?")
    assert why.data["method"] == "gradcam" == why.data["explanation"]["method"]
    assert not why.data["transformer_note"] and "· Grad-CAM · layer" in _plain(why.markdown)
    # An explicit choice survives switching models; no choice follows each model's default.
    assert chat.switch_model(shapes).data["method"] == "gradcam"
    assert chat.switch_model(vit).data["method"] == "gradcam"
    fresh = ChatSession(shapes)
    fresh.respond("", [_image(2)])
    assert fresh.respond("why?").data["method"] == "gradcam"
    assert fresh.switch_model(vit).data["method"] == "hirescam"
    assert fresh.switch_model(shapes).data["method"] == "gradcam"
    assert fresh.settings.method is None


def test_method_setting_values():
    assert Settings().method is None
    assert Settings().validated(method="Grad-CAM++").method == "gradcam++"
    assert Settings(method="gradcam").validated(method="auto").method is None
    with pytest.raises(SettingError, match="Unknown method"):
        Settings().validated(method="grad-kam")


def test_which_method_model_and_teaching_say_why(vit, shapes):
    default, convention, _ = _pointing_numbers()
    chat = ChatSession(vit)
    method = chat.respond("which method?")
    assert not method.error and method.data["method"] == "hirescam" and not method.data["chosen"]
    assert "the default for this vision transformer" in _plain(method.markdown)
    model = chat.respond("which model?")
    assert model.data["method"] == "hirescam" and model.data["transformer"]
    assert "**embeddings**" in _plain(model.markdown) and "2 blocks" in _plain(model.markdown)
    teach = chat.respond("what is Grad-CAM?")
    for reply in (method, model, teach):
        assert f"{default} %" in _plain(reply.markdown) and f"{convention} %" in _plain(reply.markdown)
    cnn = ChatSession(shapes)
    for question in ("which method?", "which model?", "what is Grad-CAM?"):
        text = _plain(cnn.respond(question).markdown)
        assert "vision transformer" not in text and f"{convention} %" not in text and "Grad-CAM" in text


# --- the layers ---------------------------------------------------------------------------------------------------


def test_show_layers_names_blocks(vit):
    chat = ChatSession(vit)
    chat.respond("", [_image(3)])
    reply = chat.respond("show layers")
    rows = reply.data["layers"]
    assert [r["name"] for r in rows] == depth_layer_names(vit.keras_model)
    assert [r["stage"] for r in rows] == ["embeddings", "block 1", "block 2, before its attention"]
    assert [r["block"] for r in rows] == [0, 1, 2] and {r["grid"] for r in rows} == {"8×8"}
    assert reply.data["blocks"] == 2
    text = _plain(reply.markdown)
    assert f"**block 1** ({rows[1]['name']}; 8×8 patches × 32)" in text
    assert "residual stream" in text and "height × width × channels" not in text and "Early layers" not in text
    assert chat.respond("which layer?").data["layers"] == rows  # the same answer, from the cache
    used = chat.respond(f"use layer {rows[1]['name']}")
    assert used.data["explanation"]["layer"] == rows[1]["name"]
    assert f"Target layer is now **block 1** ({rows[1]['name']}; 8×8 patches × 32)" in _plain(used.markdown)
    unknown = _plain(chat.respond("use layer nonsense_layer").markdown)
    assert f"embeddings ({rows[0]['name']})" in unknown


def test_layer_set_before_an_image_names_the_block(vit):
    chat = ChatSession(vit)
    name = depth_layer_names(vit.keras_model)[1]
    reply = chat.respond(f"use layer {name}")
    assert reply.data["block"] == 1 and f"**block 1** ({name})" in _plain(reply.markdown)


def test_a_cnn_keeps_gradcam_and_its_layer_wording(shapes):
    chat = ChatSession(shapes)
    why = chat.respond("why?", [_image(4, 96)])
    assert why.data["method"] == "gradcam" and not why.data["transformer_note"]
    layers = chat.respond("show layers")
    text = _plain(layers.markdown)
    assert "height × width × channels" in text and "Early layers have fine grids" in text
    assert "block" not in text and "patches" not in text
    assert all(set(row) == {"name", "shape", "region"} for row in layers.data["layers"])
    assert "blocks" not in layers.data


# --- the command line ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vit_cli")
    hub_vit().save(folder / "vit.keras")
    (folder / "vit.json").write_text(json.dumps({"labels": BARS, "preprocess": "unit"}))
    (folder / "images" / "vertical").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "vertical" / "a.png"), _image(5))
    return folder


def test_cli_explain_uses_the_models_default_method(vit_files, capsys):
    image, model = str(vit_files / "images" / "vertical" / "a.png"), str(vit_files / "vit.keras")
    assert main(["explain", image, "--model", model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "hirescam"
    assert main(["explain", image, "--model", model, "--json", "--method", "gradcam"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "gradcam"


def test_cli_audit_uses_the_models_default_method(vit_files, capsys):
    out = vit_files / "audit"
    assert main(["audit", str(vit_files / "images"), "--model", str(vit_files / "vit.keras"), "--out", str(out)]) == 0
    capsys.readouterr()
    record = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert record["method"] == "hirescam"
    assert "HiResCAM" in (out / "report.html").read_text()

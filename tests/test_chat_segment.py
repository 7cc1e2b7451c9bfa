""""Segment it" in the chat and over the API: the refined mask outlined, the cut-out with alpha, switching the method,
no mask below the cutoff, grey and DICOM images, vision transformers, and the mask as run-length encoding."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from planted_models import fixture, planted_bars, planted_grey
from test_dicom import write_dicom

import explainer
from explainer.chat import ChatSession, answer_once
from explainer.chat import intents as I
from explainer.chat.intents import find_segmenter
from explainer.demo.generate import draw_plain_shape
from explainer.region import iou_of_masks, mask_to_rle, rle_to_mask
from explainer.segment import DEFAULT_SEGMENT, PROBABILITY_CUTOFF
from explainer.server.conversation import picture_file


@pytest.fixture(scope="module")
def shapes() -> explainer.LoadedModel:
    return explainer.load_model("shapes")


@pytest.fixture
def star_chat(shapes) -> tuple[ChatSession, np.ndarray]:
    image, mask = draw_plain_shape("star", 160, diameter=80, centre=(90, 70))
    chat = ChatSession(shapes)
    assert not chat.respond("why?", [image]).error
    return chat, mask


def _words(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def test_segment_it_outlines_the_mask_and_cuts_the_object_out(star_chat):
    chat, truth = star_chat
    reply = chat.respond("segment it")
    result = chat.state.explanation()
    mask = result.region.mask
    assert reply.intent == I.REGION and result.region.segment == DEFAULT_SEGMENT
    (outlined, _c1), (cut, _c2) = reply.images
    assert outlined.shape == (*truth.shape, 3) and cut.shape == (*truth.shape, 4)
    assert (cut[..., 3] == 255)[mask].all() and (cut[..., 3] == 0)[~mask].all()
    assert np.array_equal(cut[mask, :3], result.image[mask])
    assert iou_of_masks(mask, truth) >= 0.7  # the object, not the heat blob
    text = _words(reply.markdown)
    assert f"{result.region.pixels} pixels" in text and "soft GrabCut" in text
    assert reply.data["region"]["pixels"] == int(mask.sum()) and reply.data["region"]["segment"] == DEFAULT_SEGMENT


@pytest.mark.parametrize(("question", "key", "name"), [("segment with otsu", "otsu", "Otsu"),
                                                       ("use the threshold mask", "threshold", "threshold"),
                                                       ("switch to grabcut", "grabcut", "GrabCut")])
def test_asking_for_another_method_switches_the_mask(star_chat, question, key, name):
    chat, _truth = star_chat
    before = chat.state.explanation().region
    reply = chat.respond(question)
    after = chat.state.explanation().region
    assert reply.intent == I.SETTING and chat.settings.segment == key and after.segment == key
    assert f"Segmentation is now by **{name}**" in _words(reply.markdown)
    assert reply.data["region"]["segment"] == key and reply.data["region"]["pixels"] == after.pixels
    if key == "threshold":  # the heat region itself, as the thresholded map gives it
        assert np.array_equal(after.mask, after.heat_mask)
    assert chat.state.explain_calls == 1 and np.array_equal(after.heat_mask, before.heat_mask)  # the same map, recut


@pytest.mark.parametrize(("text", "key"), [
    ("segment with otsu", "otsu"), ("use the threshold mask", "threshold"), ("soft grabcut segmentation",
                                                                               "softgrabcut"),
    ("cut it out with grabcut", "grabcut"), ("segment by threshold", "threshold"), ("use Otsu", "otsu"),
    ("segment it", None), ("lower the threshold", None), ("threshold 30%", None), ("what is grabcut", None)])
def test_segmentation_methods_are_named_only_when_asked_for(text, key):
    assert find_segmenter(text) == key


def test_a_class_below_the_cutoff_has_nothing_to_segment(star_chat):
    chat, _truth = star_chat
    reply = chat.respond("show the region for circle")
    result = chat.state.explanation("circle")
    assert result.probability < PROBABILITY_CUTOFF and result.region.mask is None
    assert len(reply.images) == 1  # the heat region outlined, no cut-out
    text = _words(reply.markdown)
    assert "no circle region to segment" in text and "cutoff" in text
    assert reply.data["region"]["segment"] is None and reply.data["region"]["no_mask_reason"]


def test_the_api_returns_the_mask_as_run_length_encoding(shapes):
    image, _truth = draw_plain_shape("square", 128, diameter=60, centre=(64, 64))
    reply = answer_once(shapes, image, "segment it")
    result = explainer.explain(shapes, image)
    assert np.array_equal(rle_to_mask(reply.data["mask"]), result.region.mask)
    low = answer_once(shapes, image, "show the region for star")
    assert low.data["mask"] is None  # below the cutoff: no mask, said in the text


def test_run_length_encoding_round_trips_and_is_column_major():
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (7, 5), (40, 33)]:
        for fill in (0.0, 0.3, 1.0):
            mask = rng.random(shape) < fill
            rle = mask_to_rle(mask)
            assert rle["size"] == list(shape) and sum(rle["counts"]) == mask.size
            assert np.array_equal(rle_to_mask(rle), mask)
    column = np.zeros((3, 2), bool)
    column[:, 0] = True  # the first column set: COCO counts down columns, a zero run first
    assert mask_to_rle(column)["counts"] == [0, 3, 3]
    assert mask_to_rle(None) is None


def test_a_cut_out_is_written_as_a_png_with_its_alpha(tmp_path):
    picture = np.zeros((6, 8, 4), np.uint8)
    picture[2:4, 3:6] = (10, 200, 30, 255)
    path = picture_file(picture, tmp_path)
    assert path.endswith(".png")
    back = np.asarray(Image.open(path))
    assert back.shape == (6, 8, 4) and np.array_equal(back, picture)
    assert picture_file(picture[..., :3], tmp_path).endswith(".jpg")


def test_grey_and_dicom_images_are_cut_out_in_colour_space(tmp_path):
    model = fixture("grey")
    images, labels, masks = planted_grey(12, seed=41)
    i = int(np.flatnonzero(labels == 0)[0])  # a disk
    for given in (images[i], str(write_dicom(tmp_path / "disk.dcm", images[i]))):
        chat = ChatSession(model)
        assert not chat.respond("why?", [given]).error
        reply = chat.respond("segment it")
        result = chat.state.explanation()
        assert result.region.mask is not None, result.region.no_mask_reason
        cut = reply.images[-1][0]
        assert cut.shape == (*masks[i].shape, 4) and (cut[..., 3] > 0).sum() == result.region.pixels
        assert iou_of_masks(result.region.mask, masks[i]) > 0.3


def test_a_vision_transformer_gets_a_mask_on_its_bar():
    model = fixture("vit_bars")
    images, labels, masks = planted_bars(24, seed=11)
    picked = np.flatnonzero(labels < 2)[:8]
    results = explainer.explain(model, list(images[picked]))
    inside = [bool(r.region.mask[m].any()) for r, m in zip(results, masks[picked], strict=True)
              if r.region.mask is not None]
    assert len(inside) >= 6 and np.mean(inside) >= 0.75  # the mask lies on the planted bar

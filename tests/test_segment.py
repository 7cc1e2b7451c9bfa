"""Segmentation (explainer.segment): masks that follow the object, on images whose true masks are known.

The model is the committed ``shapes`` model (a file in the repository, not a model trained here). The images are
drawn by the tests: plain renders (``draw_plain_shape``) and cluttered renders (a coloured shape on a textured,
noisy background with lines), plus the generator's held-out images.
"""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pytest
from test_dicom import write_dicom

from explainer import explain, load_model
from explainer.cli.main import main
from explainer.demo.generate import CLASSES, draw_plain_shape, make_dataset
from explainer.errors import ExplainerError
from explainer.region import iou_of_masks, localize, mask_to_box
from explainer.segment import (
    DEFAULT_SEGMENT,
    PROBABILITY_CUTOFF,
    SEGMENTERS,
    SegmentInput,
    get_segmenter,
    segment_key,
)

SEEDS = (11, 12, 13)
N = 12


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes")


def plain_render(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray, int]:
    """A dark shape on a light background, at a random size, place, rotation and grey levels."""
    label = int(rng.integers(len(CLASSES)))
    diameter = rng.uniform(0.3, 0.65) * size
    half = diameter / 2 * 1.1
    centre = (rng.uniform(half, size - half), rng.uniform(half, size - half))
    image, mask = draw_plain_shape(CLASSES[label], size, diameter=diameter, centre=centre,
                                   rotation=rng.uniform(0, 2 * np.pi), dark=int(rng.integers(0, 80)),
                                   light=int(rng.integers(190, 256)))
    return image, mask, label


def cluttered_render(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray, int]:
    """A coloured shape on a smooth colour gradient with pixel noise and thin random lines (not the generator's)."""
    _, mask, label = plain_render(rng, size)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    low, high = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    image = low + (high - low) * (ramp[None, :, None] * 0.5 + ramp[:, None, None] * 0.5)
    image = image + rng.normal(0, 8, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(4):  # distractor lines, drawn before the object so they never cross it
        p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(image, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), [int(v) for v in rng.integers(0, 256, 3)], 1)
    colour = np.where(image[mask].mean(axis=0) > 128, 20, 235) + rng.integers(-15, 16, 3)
    image[mask] = np.clip(colour, 0, 255)
    return image, mask, label


def drawn(kind, seed: int, n: int = N):
    rng = np.random.default_rng(seed)
    return [kind(rng) for _ in range(n)]


def mean_iou(model, samples, segment: str) -> float:
    images, masks, labels = zip(*samples, strict=True)
    results = explain(model, list(images), target=list(labels), segment=segment)
    return float(np.mean([iou_of_masks(r.region.mask, m) for r, m in zip(results, masks, strict=True)]))


# ----------------------------------------------------------------------------------- methods on planted images


@pytest.mark.parametrize("kind", [plain_render, cluttered_render], ids=["plain", "cluttered"])
def test_grabcut_beats_the_threshold_on_every_seed(shapes, kind):
    for seed in SEEDS:
        samples = drawn(kind, seed)
        scores = {name: mean_iou(shapes, samples, name) for name in SEGMENTERS}
        # The heat blob is not the object; both cuts follow its outline, on every seed, by a wide margin.
        assert scores["grabcut"] >= scores["threshold"] + 0.2, (seed, scores)
        assert scores["softgrabcut"] >= scores["threshold"] + 0.3, (seed, scores)
        assert scores[DEFAULT_SEGMENT] == max(scores.values()), (seed, scores)
        assert scores[DEFAULT_SEGMENT] >= 0.8, (seed, scores)  # the bar


def test_default_on_held_out_generator_images(shapes):
    data = make_dataset(24, 777_001)
    samples = list(zip(data.images, data.masks, data.labels.astype(int).tolist(), strict=True))
    default, threshold = mean_iou(shapes, samples, DEFAULT_SEGMENT), mean_iou(shapes, samples, "threshold")
    assert default >= 0.8 and default >= threshold + 0.3, (default, threshold)


def disk_picture(centre_x: int, sigma: float, size: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red disk (centre (50, 48), radius 22) on grey, and a Gaussian map centred at ``(centre_x, 48)``."""
    yy, xx = np.mgrid[:size, :size]
    disk = (xx - 50) ** 2 + (yy - 48) ** 2 <= 22 ** 2
    image = np.full((size, size, 3), 150, np.uint8)
    image[disk] = (200, 30, 30)
    heat = np.exp(-((xx - centre_x) ** 2 + (yy - 48) ** 2) / (2 * sigma ** 2)).astype(np.float32)
    return image, disk, heat


def masks_by_method(image: np.ndarray, heat: np.ndarray) -> dict[str, np.ndarray]:
    return {name: localize(heat, 0.6, image, name).mask for name in SEGMENTERS}


def test_each_method_on_a_map_over_the_object():
    image, disk, heat = disk_picture(50, 16.0)
    masks = masks_by_method(image, heat)
    np.testing.assert_array_equal(masks["threshold"], localize(heat, 0.6).heat_mask)  # the heat region itself
    assert masks["otsu"].sum() > masks["threshold"].sum()  # Otsu's level is below 60 % on this map
    for name in ("grabcut", "softgrabcut"):  # the colours carry the cut to the disk's edge
        assert iou_of_masks(masks[name], disk) > 0.9 > iou_of_masks(masks["threshold"], disk), name


def test_a_map_on_part_of_the_object_pins_grabcut_but_not_the_soft_cut():
    image, disk, heat = disk_picture(38, 8.0)  # lights up the disk's left edge only, as CNN maps often do
    masks = masks_by_method(image, heat)
    # The map's "sure background" (< 10 %) covers the disk's right half: GrabCut keeps only the lit part.
    assert iou_of_masks(masks["softgrabcut"], disk) > 0.9 > iou_of_masks(masks["threshold"], disk)
    assert iou_of_masks(masks["grabcut"], disk) < iou_of_masks(masks["softgrabcut"], disk) - 0.3


def test_facts_follow_the_mask_and_the_heat_region_keeps_its_name(shapes):
    image, truth, label = plain_render(np.random.default_rng(5))
    result = explain(shapes, image, target=label)
    region = result.region
    assert region.segment == DEFAULT_SEGMENT
    assert region.bbox == mask_to_box(region.mask)
    assert region.coverage == pytest.approx(region.mask.mean())
    assert region.pixels == int(region.mask.sum())
    assert region.energy == pytest.approx(result.heatmap[region.mask].sum() / result.heatmap.sum(), rel=1e-5)
    ys, xs = np.nonzero(region.mask)
    assert region.centroid == (round(xs.mean()), round(ys.mean()))
    np.testing.assert_array_equal(region.heat_mask, localize(result.heatmap, region.threshold).mask)
    assert iou_of_masks(region.mask, truth) > iou_of_masks(region.heat_mask, truth)


def test_the_mask_is_computed_only_when_read(shapes):
    image, _, label = plain_render(np.random.default_rng(6))
    region = explain(shapes, image, target=label).region
    assert "mask" not in vars(region) and "_facts" not in vars(region)
    assert region.mask is not None and "mask" in vars(region)


def test_grey_input_is_replicated_to_three_channels(shapes):
    image, truth, label = plain_render(np.random.default_rng(7))
    grey = image[..., 0]
    result = explain(shapes, grey, target=label)
    assert result.region.mask.shape == grey.shape and iou_of_masks(result.region.mask, truth) >= 0.8
    inputs = SegmentInput(grey, result.region.heatmap / result.region.heatmap.max(), result.region.heat_mask, 0.6)
    for name in ("grabcut", "softgrabcut"):  # the segmenter itself accepts H×W and H×W×1 grey
        from_rgb = get_segmenter(name)(SegmentInput(image, inputs.heatmap, inputs.heat_mask, 0.6))
        np.testing.assert_array_equal(get_segmenter(name)(inputs), from_rgb)
        np.testing.assert_array_equal(get_segmenter(name)(SegmentInput(grey[..., None], inputs.heatmap,
                                                                       inputs.heat_mask, 0.6)), from_rgb)


def test_dicom_input(shapes, tmp_path):
    image, truth, label = plain_render(np.random.default_rng(8))
    path = write_dicom(tmp_path / "scan.dcm", image[..., 0].astype(np.uint16) * 16, bits_stored=12)
    result = explain(shapes, path, target=label)
    assert result.region.mask.shape == truth.shape and iou_of_masks(result.region.mask, truth) >= 0.8


# ----------------------------------------------------------------------------------------- the probability cutoff


def test_no_mask_below_the_cutoff(shapes):
    image, _, _label = plain_render(np.random.default_rng(9))
    results = explain(shapes, image, target=list(range(len(CLASSES))))
    assert any(r.probability < PROBABILITY_CUTOFF for r in results) and any(r.probability >= 0.5 for r in results)
    for r in results:
        if r.probability < PROBABILITY_CUTOFF:
            assert r.region.mask is None and r.target_label in r.region.no_mask_reason
            assert f"{r.probability:.1%}" in r.region.no_mask_reason
            np.testing.assert_array_equal(r.region.shown_mask, r.region.heat_mask)  # where the evidence would be
            assert r.region.to_dict()["segment"] is None
        else:
            assert r.region.mask is not None and r.region.no_mask_reason is None


def sigmoid_head(biases: list[float]) -> keras.Model:
    """A multi-label model whose labels' probabilities are set by their biases (tiny kernel weights)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(biases), activation="sigmoid")
    model = keras.Model(inputs, dense(x))
    kernel = dense.get_weights()[0]
    dense.set_weights([kernel * 0.01, np.array(biases, np.float32)])
    return model


def test_multilabel_uses_the_decision_threshold(rng):
    model = load_model(sigmoid_head([3.0, -0.5, -4.0]), labels=["effusion", "nodule", "mass"], preprocess="unit")
    assert model.info.head == "multilabel"
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    present, doubtful, absent = explain(model, image, target=[0, 1, 2])
    assert present.probability > 0.9 and present.region.mask is not None
    # 0.38: above the softmax cutoff, below the 0.5 decision threshold: no finding, no mask.
    assert PROBABILITY_CUTOFF < doubtful.probability < model.info.decision_threshold
    assert doubtful.region.mask is None and "50%" in doubtful.region.no_mask_reason
    assert absent.region.mask is None


# ------------------------------------------------------------------------------------------ CLI and bad options


def test_mask_file_equals_region_mask(shapes, tmp_path, capsys):
    rng = np.random.default_rng(10)
    image, _, label = plain_render(rng, 160)
    image = cv2.resize(image, (200, 150))  # not the model's size: the mask file has the image's
    cv2.imwrite(str(tmp_path / "shape.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    code = main(["explain", str(tmp_path / "shape.png"), "--model", "shapes", "--target", CLASSES[label], "--json",
                 "--out", str(tmp_path / "out"), "--segment", "GrabCut"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["region"]["segment"] == "grabcut"
    written = cv2.imread(record["mask_file"], cv2.IMREAD_UNCHANGED)
    expected = explain(shapes, image, target=label, segment="grabcut").region.mask
    assert written.shape == (150, 200) and set(np.unique(written)) <= {0, 255}
    np.testing.assert_array_equal(written == 255, expected)


def test_no_mask_file_below_the_cutoff(shapes, tmp_path, capsys):
    image, _, _label = plain_render(np.random.default_rng(9))
    cv2.imwrite(str(tmp_path / "shape.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    probs = explain(shapes, image).probabilities
    unlikely = int(np.argmin(probs))
    assert probs[unlikely] < PROBABILITY_CUTOFF
    code = main(["explain", str(tmp_path / "shape.png"), "--model", "shapes", "--target", CLASSES[unlikely],
                 "--json", "--out", str(tmp_path / "out")])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["mask_file"] is None and record["region"]["no_mask_reason"]
    assert not list((tmp_path / "out").glob("*_mask.png"))


@pytest.mark.parametrize("argv", [
    ["explain", "IMAGE", "--model", "shapes", "--segment", "snake"],
    ["evaluate", "--model", "shapes", "--n", "2", "--segments", "snake"],
])
def test_bad_segment_option_is_one_line_and_exit_2(tmp_path, capsys, argv):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((20, 20, 3), 200, np.uint8))
    code = main([str(tmp_path / "a.png") if a == "IMAGE" else a for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: Unknown segmentation method 'snake'") and "softgrabcut" in err


def test_bad_segment_in_the_api_names_the_choices(shapes):
    with pytest.raises(ExplainerError, match="choose one of threshold, otsu, grabcut, softgrabcut"):
        explain(shapes, np.zeros((16, 16, 3), np.uint8), segment="watershed")
    with pytest.raises(ExplainerError, match="needs the image"):
        localize(np.ones((8, 8), np.float32), segment="grabcut")


def test_spellings_name_one_method():
    assert segment_key("Grab-Cut") == "grabcut" and segment_key("soft GrabCut") == "softgrabcut"
    assert segment_key("Otsu") == "otsu" and segment_key("threshold mask") == "threshold"
    spellings = [s.lower() for cls in SEGMENTERS.values() for s in (cls.name, cls.display_name, *cls.aliases)]
    assert len({segment_key(s) for s in spellings}) == len(SEGMENTERS)
    for cls in SEGMENTERS.values():
        assert {segment_key(s) for s in (cls.name, cls.display_name, *cls.aliases)} == {cls.name}


def test_evaluate_reports_mask_iou_per_segmentation(capsys):
    assert main(["evaluate", "--model", "shapes", "--n", "6", "--methods", "gradcam", "--steps", "1", "--json",
                 "--segments", "threshold", "softgrabcut"]) == 0
    row = json.loads(capsys.readouterr().out)["methods"]["gradcam"]
    assert set(row["segmentation"]) == {"threshold", "softgrabcut"}
    assert row["segmentation"]["threshold"]["mask_iou"] == pytest.approx(row["mask_iou"], abs=1e-4)
    assert row["segmentation"]["softgrabcut"]["mask_iou"] > row["segmentation"]["threshold"]["mask_iou"]


def test_the_same_image_gives_the_same_mask(shapes):
    image, _, label = plain_render(np.random.default_rng(14))
    first = [explain(shapes, image, target=label, segment=name).region.mask for name in ("grabcut", "softgrabcut")]
    cv2.kmeans(np.random.default_rng(0).random((50, 3), np.float32), 3, None,  # moves OpenCV's RNG in between
               (cv2.TERM_CRITERIA_MAX_ITER, 3, 0), 1, cv2.KMEANS_RANDOM_CENTERS)
    again = [explain(shapes, image, target=label, segment=name).region.mask for name in ("grabcut", "softgrabcut")]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)

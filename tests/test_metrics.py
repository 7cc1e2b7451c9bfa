"""Metrics on cases with a known answer, and on a small model trained on planted squares (the committed
``tests/fixtures/squares.keras``)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from planted_models import SIZE, planted_squares, trained_model

from explainer import explain, predict
from explainer.cams import BaseCAM, CamBatch
from explainer.cli.main import main
from explainer.evaluation import metrics
from explainer.region import iou_of_boxes, mask_to_box


@pytest.fixture(scope="module")
def planted():
    model = trained_model()
    images, labels, masks, boxes = planted_squares(24, seed=123)
    return model, list(images), labels, masks, boxes


def _square(top: int, left: int, side: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


# ----------------------------------------------------------------------------------------------- localization

def test_pointing_game_with_a_known_peak():
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask = _square(10, 10, 5)  # rows and columns 10..14
    peak_at = {(12, 12): True, (12, 17): False, (12, 16): True}  # (row, col); 16 is 2 px off the mask
    for (row, col), expected in peak_at.items():
        saliency = np.zeros((SIZE, SIZE), np.float32)
        saliency[row, col] = 1.0
        hit = metrics.pointing_game(None, [image], [saliency], masks=[mask], tolerance=2)
        assert hit.tolist() == [expected], (row, col)


def test_centre_baseline_points_at_the_middle():
    images = [np.zeros((SIZE, SIZE, 3), np.uint8)] * 2
    masks = [_square(SIZE // 2 - 3, SIZE // 2 - 3, 6), _square(0, 0, 6)]
    assert metrics.centre_baseline(None, images, masks=masks, tolerance=0).tolist() == [True, False]


def test_peak_distance_and_per_image_tolerance():
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask = _square(10, 10, 5)  # rows and columns 10..14
    saliency = np.zeros((SIZE, SIZE), np.float32)
    saliency[12, 20] = 1.0  # 6 px right of the mask
    maps, masks = [saliency, saliency, saliency], [mask, mask, np.zeros_like(mask)]
    distance = metrics.peak_distance(None, [image] * 3, maps, masks=masks)
    np.testing.assert_allclose(distance[:2], [6.0, 6.0])
    assert distance[2] == np.inf  # nothing to point at
    hits = metrics.pointing_game(None, [image] * 3, maps, masks=masks, tolerance=[5, 6, 1000])
    assert hits.tolist() == [False, True, False]


def test_pointing_tolerance_must_be_given():
    image, mask = np.zeros((SIZE, SIZE, 3), np.uint8), _square(0, 0, 4)
    with pytest.raises(TypeError):
        metrics.pointing_game(None, [image], [mask * 1.0], masks=[mask])  # no default that a report could hide
    with pytest.raises(ValueError, match="tolerance"):
        metrics.centre_baseline(None, [image], masks=[mask], tolerance=None)
    with pytest.raises(ValueError, match="negative"):
        metrics.pointing_game(None, [image], [mask * 1.0], masks=[mask], tolerance=-1)
    with pytest.raises(ValueError, match="2 tolerances"):
        metrics.pointing_game(None, [image], [mask * 1.0], masks=[mask], tolerance=[1, 2])


def test_scaled_tolerance_is_torchray_15_px_at_224():
    masks = [np.zeros((224, 224), bool), np.zeros((128, 64), bool), np.zeros((300, 448), bool)]
    np.testing.assert_allclose(metrics.scaled_tolerance(masks), [15.0, 15 * 128 / 224, 30.0], rtol=1e-6)
    np.testing.assert_allclose(metrics.scaled_tolerance(masks[:1], per_side=4 / 224), [4.0], rtol=1e-6)


def test_one_mask_to_box_and_box_iou_for_pairs_of_boxes():
    mask = _square(3, 7, 5)
    assert mask_to_box(mask) == (7, 3, 5, 5)
    assert iou_of_boxes(mask_to_box(mask), (7, 3, 5, 5)) == 1.0
    with pytest.raises(ValueError, match="empty"):
        mask_to_box(np.zeros_like(mask))


def test_box_and_mask_iou_have_known_values():
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    truth = _square(0, 0, 10)
    shifted = _square(0, 5, 10).astype(np.float32)  # overlaps half of the truth: IoU = 50 / 150
    scores = metrics.box_iou(None, [image, image], [truth.astype(np.float32), shifted], boxes=[(0, 0, 10, 10)] * 2)
    np.testing.assert_allclose(scores, [1.0, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(metrics.mask_iou(None, [image, image], [truth * 1.0, shifted], masks=[truth] * 2),
                               [1.0, 1 / 3], rtol=1e-6)


def test_maps_are_resized_to_the_image_and_explanations_are_accepted(planted):
    model, images, labels, masks, _ = planted
    results = explain(model, images[:4], [int(y) for y in labels[:4]])
    small = [r.cam for r in results]  # feature resolution: resized to the image by the metric
    assert metrics.pointing_game(model, images[:4], small, masks=masks[:4], tolerance=2).shape == (4,)
    np.testing.assert_array_equal(metrics.coverage(model, images[:4], results), metrics.coverage(
        model, images[:4], [r.heatmap for r in results]))
    with pytest.raises(ValueError, match="3 maps"):
        metrics.coverage(model, images[:4], small[:3])


# ------------------------------------------------------------------------------------------ deletion / insertion

def test_auc_is_the_trapezoid_area():
    fractions = np.linspace(0, 1, 5)
    curves = metrics.Curves(fractions, np.stack([np.full(5, 0.5), 1 - fractions, fractions**2]))
    np.testing.assert_allclose(curves.auc, [0.5, 0.5, 0.34375], rtol=1e-6)


def test_curves_start_and_end_at_the_unmodified_image(planted):
    model, images, labels, masks, _ = planted
    original = predict(model, images)[np.arange(len(images)), labels]
    deletion = metrics.deletion_curves(model, images, masks.astype(float), labels, steps=8)
    insertion = metrics.insertion_curves(model, images, masks.astype(float), labels, steps=8)
    assert deletion.probabilities.shape == (len(images), 9)
    np.testing.assert_allclose(deletion.probabilities[:, 0], original, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(insertion.probabilities[:, -1], original, rtol=1e-4, atol=1e-6)


def test_a_perfect_map_beats_random_and_inverted_maps(planted):
    """Deleting the square first kills the class fastest; inserting it first restores it fastest."""
    model, images, labels, masks, _ = planted
    perfect, inverted = masks.astype(np.float32), 1.0 - masks.astype(np.float32)
    noise = np.random.default_rng(0).random(masks.shape).astype(np.float32)
    deletion = {name: metrics.deletion_auc(model, images, m, labels).mean()
                for name, m in {"perfect": perfect, "random": noise, "inverted": inverted}.items()}
    assert deletion["perfect"] < deletion["random"] - 0.1 < deletion["inverted"] - 0.1
    assert (metrics.insertion_auc(model, images, perfect, labels).mean()
            > metrics.insertion_auc(model, images, inverted, labels).mean() + 0.05)


def test_a_flat_map_deletes_in_random_order(planted):
    model, images, labels, masks, _ = planted
    flat = np.ones(masks.shape, np.float32)
    noise = np.random.default_rng(1).random(masks.shape).astype(np.float32)
    flat_auc = metrics.deletion_auc(model, images, flat, labels, steps=16).mean()
    random_auc = metrics.deletion_auc(model, images, noise, labels, steps=16).mean()
    assert abs(flat_auc - random_auc) < 0.05


def test_unknown_baseline_is_refused(planted):
    model, images, labels, masks, _ = planted
    with pytest.raises(ValueError, match="baseline"):
        metrics.deletion_auc(model, images[:1], masks[:1] * 1.0, labels[:1], baseline="noise")


# ---------------------------------------------------------------------------------------- average drop / increase

def test_average_drop_and_increase(planted):
    model, images, labels, masks, _ = planted
    ones = np.ones(masks.shape, np.float32)
    kept_all = metrics.confidence_change(model, images, ones, labels)
    np.testing.assert_allclose(kept_all.drop, 0.0, atol=1e-5)
    assert not kept_all.increase.any()
    on_object = metrics.average_drop(model, images, masks * 1.0, labels).mean()
    off_object = metrics.average_drop(model, images, 1.0 - masks, labels).mean()
    assert on_object < off_object - 0.2
    assert metrics.increase_in_confidence(model, images, masks * 1.0, labels).dtype == bool
    np.testing.assert_allclose(metrics.coverage(model, images, ones), 1.0)
    np.testing.assert_allclose(metrics.coverage(model, images, masks * 1.0), masks.mean(axis=(1, 2)), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ sanity check

class InputBrightness(BaseCAM):
    """A "method" that ignores the model entirely: it must fail the randomization check."""

    name = "brightness"
    needs_gradients = False

    def get_cam_image(self, batch: CamBatch):
        return batch.inputs.mean(axis=-1), None


def test_spearman_matches_the_textbook_formula():
    rng = np.random.default_rng(2)
    a, b = rng.random(50), rng.random(50)
    d = np.argsort(np.argsort(a)) - np.argsort(np.argsort(b))
    assert metrics.spearman(a, b) == pytest.approx(1 - 6 * (d**2).sum() / (50 * (50**2 - 1)))
    assert metrics.spearman(a, a) == pytest.approx(1.0)
    assert metrics.spearman(a, -a) == pytest.approx(-1.0)
    assert metrics.spearman(np.zeros(50), a) == 0.0  # a flat map has no ranking to agree with
    assert metrics.spearman([0, 0, 1, 1], [0, 0, 2, 2]) == pytest.approx(1.0)  # ties share their rank


def test_gradcam_passes_and_a_model_blind_map_fails_the_sanity_check(planted):
    model, images, labels, _, _ = planted
    before = [w.copy() for w in model.keras_model.get_weights()]
    gradcam = metrics.sanity_check(model, images[:12], targets=labels[:12], method="gradcam", stages=3)
    blind = metrics.sanity_check(model, images[:12], targets=labels[:12], method=InputBrightness(), stages=3)
    assert gradcam.correlations.shape == (3, 12) and len(gradcam.stages) == 3
    assert gradcam.median[-1] < 0.3 and gradcam.passed
    np.testing.assert_allclose(blind.median, 1.0, atol=1e-6)
    assert not blind.passed
    assert gradcam.to_dict()["passed"] is True
    after = model.keras_model.get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True)), "the loaded model was modified"


# ------------------------------------------------------------------------------------------- evaluate command

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The planted model as a .keras file, and a data folder of images/ and masks/ in the documented layout."""
    folder = tmp_path_factory.mktemp("evaluate")
    trained_model().keras_model.save(folder / "planted.keras")
    images, _labels, masks, _boxes = planted_squares(6, seed=321)
    for sub in ("images", "masks"):
        (folder / "data" / sub).mkdir(parents=True)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        cv2.imwrite(str(folder / "data" / "images" / f"img{i}.png"), image[..., ::-1])
        cv2.imwrite(str(folder / "data" / "masks" / f"img{i}.png"), mask.astype(np.uint8) * 255)
    return folder


def test_evaluate_json_on_a_folder(saved, capsys):
    code = main(["evaluate", "--model", str(saved / "planted.keras"), "--data", str(saved / "data"),
                 "--methods", "gradcam,Eigen-CAM", "--steps", "4", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["data"]["n"] == 6 and list(report["methods"]) == ["gradcam", "eigencam"]
    gradcam = report["methods"]["gradcam"]
    assert set(gradcam) >= {"pointing", "centre_baseline", "box_iou", "mask_iou", "deletion_auc", "insertion_auc",
                            "average_drop", "increase", "coverage", "ms_per_image"}
    # The committed model (either oneDNN path) points at all 6 squares; the centre at none of them.
    assert gradcam["pointing"] >= 0.8 and gradcam["pointing"] > gradcam["centre_baseline"] + 0.5
    assert gradcam["deletion_auc"] < gradcam["insertion_auc"]


def test_evaluate_table_on_demo_data(saved, capsys):
    code = main(["evaluate", "--model", str(saved / "planted.keras"), "--n", "3", "--methods", "hirescam",
                 "layercam", "--steps", "2"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "pointing" in out[1] and "del AUC" in out[1]
    assert [line.split()[0] for line in out[2:]] == ["hirescam", "layercam"]


@pytest.mark.parametrize("options", [
    ["--model", "no/such/model.keras"],
    ["--methods", "guided-backprop"],
    ["--n", "0"],
    ["--data", "no/such/folder"],
])
def test_evaluate_bad_input_is_one_line_and_exit_2(options, saved, capsys):
    if "--model" not in options:
        options = ["--model", str(saved / "planted.keras"), *options]
    assert main(["evaluate", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_evaluate_refuses_an_image_without_mask(saved, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "lonely.png"), np.zeros((8, 8, 3), np.uint8))
    assert main(["evaluate", "--model", str(saved / "planted.keras"), "--data", str(tmp_path)]) == 2
    assert "lonely" in capsys.readouterr().err


def test_sanity_check_cannot_pass_on_flat_maps(planted):
    model, images, labels, _, _ = planted
    flat = [np.zeros((SIZE, SIZE), np.float32)] * 3
    check = metrics.sanity_check(model, images[:3], flat, labels[:3], method="gradcam", stages=2)
    assert np.isnan(check.correlations).all() and np.isnan(check.median).all()
    assert not check.passed and check.to_dict()["stages"][0]["median_spearman"] is None

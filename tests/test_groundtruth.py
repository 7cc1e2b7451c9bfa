"""Comparing a map with the region the user expects: box, mask and place words give the same numbers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import gap_cnn
from PIL import Image

from explainer import explain, load_model
from explainer.evaluation import metrics
from explainer.evaluation.groundtruth import (
    EXPECTED_COLOR,
    RegionError,
    box_mask,
    compare_region,
    draw_expected,
    energy_inside,
    parse_box,
    read_mask,
    region_from_text,
    region_from_words,
)
from explainer.region import grid_location
from explainer.server.serving import painted_mask

HEIGHT, WIDTH = 60, 90


@pytest.fixture(scope="module")
def result():
    """A real explanation of a 60×90 image (the model's input is 32×32: the map is upsampled to the image)."""
    model = load_model(gap_cnn(n_classes=3, size=32, seed=4), labels=["a", "b", "c"], preprocess="unit")
    image = np.random.default_rng(7).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[40:60, 0:30] = (250, 250, 250)  # something bright in the lower left
    out = explain(model, image)
    assert out.heatmap.shape == (HEIGHT, WIDTH) and out.heatmap.max() > 0
    return out


def test_box_mask_and_words_give_the_same_numbers(result, tmp_path):
    box = region_from_words("it should be in the lower left", (HEIGHT, WIDTH))
    assert box == (0, 40, 30, 20)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[40:60, 0:30] = 255
    big = cv2.resize(mask, (WIDTH * 2, HEIGHT * 2), interpolation=cv2.INTER_NEAREST)
    Image.fromarray(big).save(tmp_path / "mask.png")
    by_box = compare_region(result, box=box)
    assert by_box == compare_region(result, mask=mask)
    assert by_box == compare_region(result, mask=tmp_path / "mask.png")  # twice the size: resized, nearest
    assert by_box == compare_region(result, box=parse_box("0, 40, 30, 60", "corners"))
    assert by_box["region_pixels"] == 600 and by_box["coverage"] == pytest.approx(600 / (HEIGHT * WIDTH))


def test_energy_inside_is_the_heat_share_in_the_region(result):
    x, y, w, h = 20, 10, 33, 25
    heat = result.heatmap.astype(np.float64)
    direct = heat[y : y + h, x : x + w].sum() / heat.sum()
    assert compare_region(result, box=(x, y, w, h))["energy_inside"] == pytest.approx(direct, abs=1e-6)
    assert energy_inside(np.zeros((4, 4)), np.ones((4, 4), bool)) == 0.0
    assert compare_region(result, box=(0, 0, WIDTH, HEIGHT))["energy_inside"] == pytest.approx(1.0)


def test_hit_uses_the_peak_and_the_tolerance(result):
    px, py = result.region.peak
    assert compare_region(result, box=(px, py, 1, 1), tolerance=0)["hit"]
    # A box 6 px to the right of the peak: a hit with 6 px of tolerance, a miss with 5.
    away = (px + 6, py, 3, 1) if px + 9 <= WIDTH else (px - 8, py, 2, 1)
    assert compare_region(result, box=away, tolerance=6)["hit"]
    assert not compare_region(result, box=away, tolerance=5)["hit"]
    # The default is the project's pointing tolerance: 15 px per 224 px of the larger side.
    assert compare_region(result, box=away)["tolerance"] == pytest.approx(metrics.POINTING_TOLERANCE * WIDTH, abs=1e-3)


def test_iou_is_the_localized_region_against_the_expected_one(result):
    x, y, w, h = result.region.bbox
    expected = np.zeros((HEIGHT, WIDTH), bool)
    expected[y : y + h, x : x + w] = True
    found = result.region.mask
    direct = (found & expected).sum() / (found | expected).sum()
    assert compare_region(result, box=(x, y, w, h))["iou"] == pytest.approx(direct, abs=1e-6)
    assert compare_region(result, mask=found)["iou"] == pytest.approx(1.0)


def test_verdict_follows_the_energy(result):
    assert compare_region(result, box=(0, 0, WIDTH, HEIGHT))["verdict"] == "inside"
    coldest = np.unravel_index(np.argmin(result.heatmap), result.heatmap.shape)
    tiny = (int(coldest[1]), int(coldest[0]), 1, 1)
    assert compare_region(result, box=tiny)["verdict"] == "elsewhere"
    px, py = result.region.peak  # little heat in a 1-pixel region, but the peak is in it
    assert compare_region(result, box=(px, py, 1, 1))["verdict"] == "partly"


@pytest.mark.parametrize(("height", "width"), [(60, 90), (77, 100), (5, 7)])
def test_place_words_cover_exactly_the_grid_cells_the_region_module_names(height, width):
    ys, xs = np.mgrid[:height, :width]
    names = np.vectorize(lambda x, y: grid_location(x, y, width, height))(xs, ys)
    for place in ("upper left", "upper middle", "upper right", "middle left", "center", "middle right",
                  "lower left", "lower middle", "lower right"):
        mask = box_mask(region_from_words(place, (height, width)), (height, width))
        assert np.array_equal(mask, names == place), place
    assert np.array_equal(box_mask(region_from_words("bottom", (height, width)), (height, width)),
                          np.isin(names, ["lower left", "lower middle", "lower right"]))
    assert region_from_words("top left", (height, width)) == region_from_words("upper left", (height, width))
    assert region_from_words("centre", (height, width)) == region_from_words("middle", (height, width))


def test_box_parsing():
    assert parse_box("40,60,80,80") == parse_box("(40, 60, 80, 80)") == parse_box([40, 60, 80, 80]) == (40, 60, 80, 80)
    assert parse_box("120 140 40 60", "corners") == (40, 60, 80, 80)  # corners in any order
    assert parse_box("1.6, 2.4, 10, 10") == (2, 2, 10, 10)
    for bad in ("1,2,3", "a,b,c,d", "1,2,0,5"):
        with pytest.raises(RegionError):
            parse_box(bad)
    with pytest.raises(RegionError, match="format"):
        parse_box("1,2,3,4", "yolo")


def test_typed_regions():
    size = (HEIGHT, WIDTH)
    assert region_from_text("the lesion is at 40, 60, 80, 80", size) == (40, 60, 80, 80)
    assert region_from_text("x1,y1,x2,y2 = 10,20,50,60", size) == (10, 20, 40, 40)
    assert region_from_text("from 10, 20 to 50, 60", size) == (10, 20, 40, 40)
    assert region_from_text("it should be in the lower left", size) == region_from_words("lower left", size)
    with pytest.raises(RegionError, match="four numbers"):
        region_from_text("at 40, 60", size)
    with pytest.raises(RegionError, match="no place"):
        region_from_text("somewhere", size)


def test_several_boxes_are_their_union():
    mask = box_mask([(0, 0, 2, 2), (3, 3, 1, 1)], (5, 5))
    assert mask.sum() == 5 and mask[3, 3] and mask[1, 1] and not mask[2, 2]


def test_masks_of_every_kind(result, tmp_path):
    expected = compare_region(result, box=(10, 5, 20, 30))
    layer = np.zeros((HEIGHT, WIDTH, 4), np.uint8)  # a transparent brush layer: red strokes, opaque
    layer[5:35, 10:30] = (255, 0, 0, 255)
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    ones = np.zeros((HEIGHT // 3, WIDTH // 3), np.uint8)  # label-style 0/1 mask at a third of the size
    ones[5 // 3 : 35 // 3, 10 // 3 : 30 // 3] = 1
    assert compare_region(result, mask=tmp_path / "layer.png") == expected
    assert compare_region(result, mask=layer) == expected
    small = read_mask(ones, (HEIGHT, WIDTH))
    assert small.shape == (HEIGHT, WIDTH) and small.sum() == (11 - 1) * (10 - 3) * 3 * 3  # each cell → 3×3 px


def test_a_brush_layer_is_one_mask_whichever_way_it_comes(tmp_path):
    """The editor's layer, a mask file and the chat's array take the same pixels as paint: every one not fully
    transparent, the antialiased fringe and a faint stroke included (:func:`explainer.inputs.images.alpha_mask`)."""
    layer = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    layer[10:30, 20:40] = (255, 255, 255, 255)
    layer[9, 20:40, 3] = 40  # the brush's antialiased edge
    layer[50, 5:60, 3] = 10  # a faint stroke
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    want = layer[..., 3] > 0
    assert np.array_equal(read_mask(layer, (HEIGHT, WIDTH)), want)
    assert np.array_equal(read_mask(tmp_path / "layer.png", (HEIGHT, WIDTH)), want)
    assert np.array_equal(painted_mask({"layers": [layer]}), want)
    with pytest.raises(RegionError, match="empty"):  # transparent everywhere: nothing painted, whatever the colour
        read_mask(np.full((HEIGHT, WIDTH, 4), (255, 255, 255, 0), np.uint8), (HEIGHT, WIDTH))


def test_bad_regions_have_plain_messages(result, tmp_path):
    with pytest.raises(RegionError, match="outside the image, which is 90 × 60"):
        compare_region(result, box=(100, 10, 5, 5))
    with pytest.raises(RegionError, match="no area"):
        compare_region(result, box=(10, 10, 0, 5))
    with pytest.raises(RegionError, match="empty"):
        compare_region(result, mask=np.zeros((HEIGHT, WIDTH)))
    with pytest.raises(RegionError, match="90 × 90 pixels but the image is 90 × 60"):
        compare_region(result, mask=np.ones((90, 90)))
    with pytest.raises(RegionError, match="exactly one"):
        compare_region(result)
    with pytest.raises(RegionError, match="exactly one"):
        compare_region(result, box=(0, 0, 1, 1), mask=np.ones((HEIGHT, WIDTH)))
    with pytest.raises(RegionError, match="no place"):
        region_from_words("somewhere nice", (HEIGHT, WIDTH))
    with pytest.raises(RegionError, match="two rows"):
        region_from_words("upper lower", (HEIGHT, WIDTH))
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(Exception, match="not an image format") as info:
        compare_region(result, mask=tmp_path / "bad.png")
    assert str(tmp_path) not in str(info.value)
    # A box partly outside keeps its inside part.
    assert compare_region(result, box=(80, 50, 40, 40)) == compare_region(result, box=(80, 50, 10, 10))


def test_draw_expected_outlines_in_its_own_colour():
    picture = np.zeros((40, 40, 3), np.uint8)
    mask = box_mask((10, 10, 20, 20), (40, 40))
    out = draw_expected(picture, mask)
    outline = np.all(out == EXPECTED_COLOR, axis=-1)
    assert outline[10, 10:30].all() and outline[29, 10:30].all() and not outline[20, 20] and not picture.any()


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_expected")
    gap_cnn(n_classes=3, size=32, seed=4).save(folder / "tiny.keras")
    (folder / "tiny.json").write_text('{"labels": ["a", "b", "c"], "preprocess": "unit"}')
    image = np.random.default_rng(7).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "img.png"), image)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[40:60, 0:30] = 255
    cv2.imwrite(str(folder / "mask.png"), mask)
    return folder


def _cli(capsys, *args):
    from explainer.cli.main import main

    code = main(["explain", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_expected_region_by_box_corners_or_mask(cli_files, capsys, tmp_path):
    base = (cli_files / "img.png", "--model", cli_files / "tiny.keras", "--json")
    outputs = []
    for extra in (("--box", "0,40,30,20"), ("--box", "0,40,30,60", "--box-format", "corners"),
                  ("--mask", cli_files / "mask.png")):
        code, out, err = _cli(capsys, *base, *extra)
        assert code == 0, err
        outputs.append(json.loads(out)["expected"])
    assert outputs[0] == outputs[1] == outputs[2]
    assert set(outputs[0]) == {"energy_inside", "hit", "iou"}
    model = load_model(cli_files / "tiny.keras")
    direct = compare_region(explain(model, cli_files / "img.png"), box=(0, 40, 30, 20))
    assert outputs[0] == {key: direct[key] for key in ("energy_inside", "hit", "iou")}
    code, out, _err = _cli(capsys, cli_files / "img.png", "--model", cli_files / "tiny.keras", "--box", "0,40,30,20",
                           "--out", tmp_path)
    assert code == 0 and "expected region:" in out and "of the heat inside" in out
    picture = cv2.cvtColor(cv2.imread(str(tmp_path / "img_overlay.png")), cv2.COLOR_BGR2RGB)
    assert np.all(picture == EXPECTED_COLOR, axis=-1).sum() > 50  # the expected region is outlined


def test_cli_bad_expected_regions(cli_files, capsys):
    base = (cli_files / "img.png", "--model", cli_files / "tiny.keras")
    code, _out, err = _cli(capsys, *base, "--box", "1,2,3")
    assert code == 2 and err.startswith("error: A box is four numbers")
    code, _out, err = _cli(capsys, *base, "--box", "500,500,10,10")
    assert code == 1 and "lies outside the image" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):  # argparse: --box and --mask together
        _cli(capsys, *base, "--box", "1,2,3,4", "--mask", cli_files / "mask.png")

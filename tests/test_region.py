"""Localization: threshold, largest component, box, words."""

from __future__ import annotations

import numpy as np
import pytest

from explainer.region import grid_location, iou_of_boxes, localize
from explainer.segment import largest_component


def blob(shape, center, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((xx - center[0]) ** 2 + (yy - center[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_single_blob_box_peak_and_words():
    heat = blob((100, 200), (40, 20), 8)
    region = localize(heat, threshold=0.5)
    x, y, w, h = region.bbox
    assert x <= 40 < x + w and y <= 20 < y + h
    assert region.peak == (40, 20)
    assert abs(region.centroid[0] - 40) <= 1 and abs(region.centroid[1] - 20) <= 1
    assert region.location == "upper left"
    # at half maximum the radius is sigma * sqrt(2 ln 2) ≈ 9.4 px
    assert 17 <= w <= 21 and 17 <= h <= 21
    assert region.coverage == pytest.approx(region.mask.mean())
    assert region.spread == "focused" and region.n_regions == 1


def test_largest_component_is_kept():
    heat = blob((120, 120), (30, 90), 5) + 0.9 * blob((120, 120), (90, 30), 14)
    region = localize(heat / heat.max(), threshold=0.5)
    assert region.mask[30, 90] and not region.mask[90, 30]  # the wide blob wins over the sharp one
    assert region.location == "upper right"
    assert region.peak == (30, 90)  # the peak is still reported where it is
    assert region.n_regions == 2


def test_the_region_and_the_segmenters_keep_the_same_largest_component():
    heat = blob((120, 120), (30, 90), 5) + 0.9 * blob((120, 120), (90, 30), 14)
    region = localize(heat / heat.max(), threshold=0.5)
    largest, areas = largest_component(heat / heat.max() >= 0.5, areas=True)
    assert np.array_equal(region.heat_mask, largest) and np.array_equal(largest_component(largest), largest)
    assert len(areas) == 2 and areas.max() == largest.sum()
    empty, none = largest_component(np.zeros((4, 4), bool), areas=True)
    assert not empty.any() and len(none) == 0


def test_threshold_controls_size():
    heat = blob((80, 80), (40, 40), 10)
    assert localize(heat, 0.2).coverage > localize(heat, 0.5).coverage > localize(heat, 0.8).coverage


def test_flat_and_zero_maps():
    empty = localize(np.zeros((10, 12), np.float32))
    assert empty.coverage == 0 and empty.bbox == (0, 0, 0, 0) and empty.spread == "empty"
    full = localize(np.ones((10, 12), np.float32))
    assert full.coverage == 1.0 and full.spread == "diffuse"
    with pytest.raises(ValueError):
        localize(np.ones((4, 4)), threshold=0)


@pytest.mark.parametrize(("x", "y", "words"), [
    (5, 5, "upper left"), (50, 5, "upper middle"), (95, 5, "upper right"),
    (5, 50, "middle left"), (50, 50, "center"), (95, 50, "middle right"),
    (5, 95, "lower left"), (50, 95, "lower middle"), (99, 99, "lower right"),
])
def test_grid_words(x, y, words):
    assert grid_location(x, y, 100, 100) == words


def test_iou_of_boxes():
    assert iou_of_boxes((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou_of_boxes((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou_of_boxes((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0

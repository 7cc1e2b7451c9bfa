"""The demo data generator: determinism and ground truth."""

import numpy as np
import pytest

from explainer.demo.generate import (
    CLASSES,
    MARK_BOX,
    MARK_CLEARANCE,
    MARK_COLOURS,
    MAX_DIAMETER,
    MIN_DIAMETER,
    TINY_MAX_DIAMETER,
    ShapesData,
    draw_plain_shape,
    make_dataset,
    mask_to_box,
)
from explainer.evaluation.image_stats import image_statistics

OPTIONS = {
    "plain_data": {},
    "shortcut": {"shortcut": True},
    "conflict": {"conflict": True},
    "mixed": {"plain_fraction": 0.5},
}


def _arrays(data: ShapesData) -> tuple[np.ndarray, ...]:
    return data.images, data.labels, data.masks, data.boxes, data.mark_labels, data.plain


@pytest.fixture(scope="module", params=list(OPTIONS))
def data(request) -> ShapesData:
    return make_dataset(40, seed=7, **OPTIONS[request.param])


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_same_seed_gives_same_bytes(options):
    first, second = make_dataset(5, seed=123, **options), make_dataset(5, seed=123, **options)
    for a, b in zip(_arrays(first), _arrays(second), strict=True):
        assert a.tobytes() == b.tobytes()


def test_different_seed_gives_different_images():
    assert make_dataset(3, seed=1).images.tobytes() != make_dataset(3, seed=2).images.tobytes()


def test_sample_does_not_depend_on_dataset_size():
    small, large = make_dataset(3, seed=5), make_dataset(6, seed=5)
    assert small.images.tobytes() == large.images[:3].tobytes()
    assert np.array_equal(small.boxes, large.boxes[:3])


def test_arrays_have_documented_shapes_and_types():
    data = make_dataset(4, seed=3)
    assert data.images.shape == (4, 128, 128, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (4, 128, 128) and data.masks.dtype == bool
    assert data.boxes.shape == (4, 4)
    assert data.labels.shape == data.mark_labels.shape == data.plain.shape == (4,)
    assert len(data) == 4


def test_classes_are_named_in_order():
    assert CLASSES[:5] == ("circle", "square", "triangle", "star", "cross")


def test_labels_cover_all_classes():
    assert set(make_dataset(60, seed=11).labels.tolist()) == set(range(len(CLASSES)))


def test_masks_are_non_empty_and_boxes_tight(data):
    for mask, box in zip(data.masks, data.boxes, strict=True):
        assert mask.any()
        x, y, w, h = box
        assert mask_to_box(mask) == tuple(int(v) for v in box)
        inside = np.zeros_like(mask)
        inside[y: y + h, x: x + w] = True
        assert not (mask & ~inside).any(), "mask pixels outside the box"
        # Tight: every edge row/column of the box touches the mask.
        assert mask[y].any() and mask[y + h - 1].any()
        assert mask[:, x].any() and mask[:, x + w - 1].any()


def test_labels_in_range(data):
    assert data.labels.min() >= 0 and data.labels.max() < len(CLASSES)


def test_cluttered_objects_are_much_bigger_than_distractor_shapes():
    data = make_dataset(40, seed=8)
    longest_side = data.boxes[:, 2:].max(axis=1)
    assert longest_side.min() >= MIN_DIAMETER * 0.6 > TINY_MAX_DIAMETER
    assert longest_side.max() <= MAX_DIAMETER * 1.07 + 1  # a cross's corners reach 1.06 radii


def test_object_pixels_differ_from_their_surroundings():
    data = make_dataset(20, seed=9)
    for image, mask in zip(data.images, data.masks, strict=True):
        inside = image[mask].astype(float).mean(axis=0)
        ring = _ring(mask)
        outside = image[ring].astype(float).mean(axis=0)
        assert np.linalg.norm(inside - outside) > 40


def _ring(mask: np.ndarray, width: int = 3) -> np.ndarray:
    grown = mask.copy()
    for _ in range(width):
        grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
    return grown & ~mask


def _mark_pixels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y, w, h = MARK_BOX
    patch = image[y: y + h, x: x + w]
    frame = np.concatenate([patch[0], patch[-1], patch[:, 0], patch[:, -1]])
    return patch[1:-1, 1:-1], frame


def test_shortcut_mark_is_the_class_colour_in_a_fixed_corner():
    data = make_dataset(30, seed=4, shortcut=True)
    assert np.array_equal(data.mark_labels, data.labels)
    for image, label in zip(data.images, data.labels, strict=True):
        inner, frame = _mark_pixels(image)
        assert (inner == MARK_COLOURS[label]).all()
        assert (frame == 255).all()


def test_conflict_mark_names_another_class():
    data = make_dataset(30, seed=4, conflict=True)
    assert (data.mark_labels != data.labels).all()
    assert data.mark_labels.min() >= 0 and data.mark_labels.max() < len(CLASSES)
    for image, mark in zip(data.images, data.mark_labels, strict=True):
        assert (_mark_pixels(image)[0] == MARK_COLOURS[mark]).all()


@pytest.mark.parametrize("options", [{"shortcut": True}, {"conflict": True}], ids=["shortcut", "conflict"])
def test_objects_keep_clear_of_the_mark(options):
    x, y, w, h = MARK_BOX
    far = MARK_CLEARANCE
    for mask in make_dataset(40, seed=6, **options).masks:
        assert not mask[: y + h + far, : x + w + far].any()


def test_marks_are_colours_of_distinct_classes():
    assert len(set(MARK_COLOURS)) == len(MARK_COLOURS) == len(CLASSES)


def test_no_mark_without_shortcut_option():
    assert (make_dataset(10, seed=4).mark_labels == -1).all()


def test_plain_samples_are_dark_shapes_on_light_backgrounds():
    data = make_dataset(20, seed=12, plain_fraction=1.0)
    assert data.plain.all()
    for image, mask in zip(data.images, data.masks, strict=True):
        grey = image.astype(float).mean(axis=-1)
        assert grey[mask].mean() < 110
        assert grey[~mask].mean() > 170


def test_plain_fraction_mixes_both_kinds():
    plain = make_dataset(60, seed=13, plain_fraction=0.3).plain
    assert 0 < plain.sum() < len(plain)


@pytest.mark.parametrize(("shape", "area_over_r2"), [("circle", np.pi), ("square", 2.0), ("triangle", 1.299)])
def test_plain_shape_has_the_geometry_of_its_class(shape, area_over_r2):
    radius = 100
    image, mask = draw_plain_shape(shape, 400, 500, diameter=2 * radius)
    assert image.shape == (400, 500, 3) and mask.shape == (400, 500)
    assert mask.sum() == pytest.approx(area_over_r2 * radius**2, rel=0.03)
    assert (image[mask] == 30).all() and (image[~mask] == 240).all()
    x, y, w, h = mask_to_box(mask)
    assert x + w / 2 == pytest.approx(250, abs=radius * 0.6) and y + h / 2 == pytest.approx(200, abs=radius * 0.6)


def test_plain_shape_rejects_unknown_class():
    with pytest.raises(ValueError, match="unknown shape"):
        draw_plain_shape("hexagon")


def test_image_statistics_of_flat_and_striped_images():
    flat = np.full((1, 16, 16, 3), (10, 20, 30), np.uint8)
    stripes = np.zeros((1, 16, 16, 3), np.uint8)
    stripes[:, :, ::2] = 200
    flat_stats, stripe_stats = image_statistics(flat), image_statistics(stripes)
    assert np.allclose(flat_stats["channel_mean"], [[10, 20, 30]])
    assert np.allclose(flat_stats["channel_std"], 0) and flat_stats["edge_density"][0] == 0
    assert stripe_stats["edge_density"][0] == pytest.approx(100.0)  # 200 across, 0 down

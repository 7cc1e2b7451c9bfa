"""Deterministic generator of labelled shape images with known object location.

Every sample is a 128x128 RGB ``uint8`` image of one shape from :data:`CLASSES`
(random size, position, rotation and colour) on a textured, cluttered background
(gradients, low-frequency colour noise, stripes, pixel noise) with distractors
(lines, arcs, elongated blobs and tiny shapes much smaller than any object).
Each sample comes with its label index, its object mask (bool HxW) and the tight
box of that mask ``(x, y, w, h)``.

Options:

* ``shortcut=True`` adds the "Clever Hans" mark: a small tag of a class-specific
  colour (:data:`MARK_COLOURS`) with a white frame, always at the same place
  (:data:`MARK_BOX`, top-left corner). The object never overlaps it.
* ``conflict=True`` (implies the mark) gives the mark of a *different* class than
  the shape. ``labels`` stays the shape's class; ``mark_labels`` holds the mark's.
* ``plain_fraction`` mixes in plain dark shapes on light backgrounds at varied
  scale, aspect and rendering resolution (the generalisation the honest model needs).

Only numpy's ``Generator`` and integer cv2 polygon filling are used (no fonts,
blurs or platform-dependent drawing), so the same seed gives the same bytes on
any machine with the same numpy. Sample ``i`` of a seed does not depend on ``n``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from explainer.region import mask_to_box

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

IMAGE_SIZE = 128
MIN_DIAMETER, MAX_DIAMETER = 18, 60
# Plain shapes span a wider range: users draw them at any size.
PLAIN_MIN_DIAMETER, PLAIN_MAX_DIAMETER = 16, 118
# Distractor shapes stay far below MIN_DIAMETER so they are never mistaken for objects.
TINY_MAX_DIAMETER = 8

MARK_BOX: tuple[int, int, int, int] = (3, 3, 10, 10)  # x, y, w, h including the white frame
MARK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 30, 30),  # circle: red
    (30, 190, 40),  # square: green
    (40, 70, 235),  # triangle: blue
    (245, 215, 20),  # star: yellow
    (215, 40, 215),  # cross: magenta
)
# Objects keep this many pixels away from the mark so they never touch it.
MARK_CLEARANCE = 4

_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision: smoother edges, still integer maths
_MIN_COLOUR_DISTANCE = 110.0


@dataclass
class ShapesData:
    """A generated data set.

    Attributes
    ----------
    images : np.ndarray
        ``(n, H, W, 3)`` uint8 RGB.
    labels : np.ndarray
        ``(n,)`` int64 index into :data:`CLASSES` of the drawn shape.
    masks : np.ndarray
        ``(n, H, W)`` bool, True on the object.
    boxes : np.ndarray
        ``(n, 4)`` int64 tight box of each mask, ``(x, y, w, h)``.
    mark_labels : np.ndarray
        ``(n,)`` int64 class of the shortcut mark, -1 where there is none.
    plain : np.ndarray
        ``(n,)`` bool, True for plain dark-on-light samples.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    mark_labels: np.ndarray
    plain: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def mark_box(self) -> tuple[int, int, int, int]:
        """Box ``(x, y, w, h)`` of the shortcut mark (same in every image)."""
        return MARK_BOX


# ----------------------------------------------------------------------------- geometry


def _unit_polygon(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices (k, 2) of a shape with circumradius about 1, centred on the origin."""
    if shape == "circle":
        angles = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "star":
        inner = rng.uniform(0.38, 0.5)
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if shape == "cross":
        w = rng.uniform(0.24, 0.36)
        return np.array(
            [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1),
             (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)],
            dtype=np.float64,
        )
    raise ValueError(f"unknown shape {shape!r}; expected one of {CLASSES}")


def _place_polygon(
    unit: np.ndarray, centre: tuple[float, float], radius: float, rotation: float,
    aspect: float = 1.0,
) -> np.ndarray:
    """Rotate, scale (x by ``aspect``) and move unit vertices; returns float (k, 2) x, y."""
    c, s = np.cos(rotation), np.sin(rotation)
    rotated = unit @ np.array([[c, s], [-s, c]])
    scaled = rotated * radius * np.array([aspect, 1.0])
    return scaled + np.asarray(centre, dtype=np.float64)


def _fill_mask(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise a polygon into a bool mask with integer sub-pixel cv2 filling."""
    mask = np.zeros((height, width), np.uint8)
    points = np.round((vertices - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask.astype(bool)


# ----------------------------------------------------------------------------- backgrounds


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid, bilinearly upsampled in numpy."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1, channels))
    pos = np.linspace(0.0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    t = (pos - i0)[:, None]
    rows = grid[i0] * (1 - t)[:, :, None] + grid[i0 + 1] * t[:, :, None]  # (size, cells+1, ch)
    tx = t[None, :, :]
    return rows[:, i0] * (1 - tx) + rows[:, i0 + 1] * tx


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """Linear blend between two random colours along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    t = np.clip(0.5 + np.cos(angle) * xx + np.sin(angle) * yy, 0, 1)[..., None]
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return a * (1 - t) + b * t


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sinusoidal stripes of random period, angle and colour direction."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(5, 22)
    yy, xx = np.mgrid[0:size, 0:size]
    phase = (np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period
    wave = np.sin(phase + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.3:
        wave = np.sign(wave)  # hard-edged stripes some of the time
    colour = rng.uniform(-1, 1, 3)
    return wave[..., None] * colour * rng.uniform(8, 28)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float (size, size, 3) textured background in roughly [0, 255]."""
    image = _gradient(rng, size)
    image += _smooth_noise(rng, size, int(rng.integers(2, 9)), 3) * rng.uniform(10, 45)
    if rng.random() < 0.4:
        image += _stripes(rng, size)
    return image


# ----------------------------------------------------------------------------- distractors


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _draw_line(rng: np.random.Generator, image: np.ndarray) -> None:
    size = image.shape[0]
    p1 = tuple(int(v) for v in rng.integers(-10, size + 10, 2))
    p2 = tuple(int(v) for v in rng.integers(-10, size + 10, 2))
    colour = tuple(float(v) for v in _random_colour(rng))
    cv2.line(image, p1, p2, colour, int(rng.integers(1, 3)), lineType=cv2.LINE_8)


def _draw_arc(rng: np.random.Generator, image: np.ndarray) -> None:
    size = image.shape[0]
    centre = tuple(int(v) for v in rng.integers(0, size, 2))
    axes = tuple(int(v) for v in rng.integers(8, 40, 2))
    start = int(rng.integers(0, 360))
    colour = tuple(float(v) for v in _random_colour(rng))
    cv2.ellipse(image, centre, axes, int(rng.integers(0, 180)), start,
                start + int(rng.integers(40, 200)), colour, int(rng.integers(1, 3)))


def _draw_blob(rng: np.random.Generator, image: np.ndarray) -> None:
    """An elongated filled ellipse: clearly not a circle, square or any class shape."""
    size = image.shape[0]
    centre = tuple(int(v) for v in rng.integers(0, size, 2))
    long_axis = int(rng.integers(6, 18))
    axes = (long_axis, max(2, int(long_axis * rng.uniform(0.15, 0.4))))
    colour = tuple(float(v) for v in _random_colour(rng))
    cv2.ellipse(image, centre, axes, int(rng.integers(0, 180)), 0, 360, colour, -1)


def _draw_tiny_shape(rng: np.random.Generator, image: np.ndarray) -> None:
    """A class shape far smaller than any object (radius <= TINY_MAX_DIAMETER / 2)."""
    size = image.shape[0]
    shape = CLASSES[int(rng.integers(len(CLASSES)))]
    radius = rng.uniform(2.0, TINY_MAX_DIAMETER / 2)
    centre = (rng.uniform(0, size), rng.uniform(0, size))
    mask = _fill_mask(_place_polygon(_unit_polygon(shape, rng), centre, radius,
                                     rng.uniform(0, 2 * np.pi)), size, size)
    image[mask] = _random_colour(rng)


_DISTRACTORS = (_draw_line, _draw_arc, _draw_blob, _draw_tiny_shape)


def _add_distractors(rng: np.random.Generator, image: np.ndarray) -> None:
    for _ in range(int(rng.integers(1, 6))):
        _DISTRACTORS[int(rng.integers(len(_DISTRACTORS)))](rng, image)


# ----------------------------------------------------------------------------- objects


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour far (in RGB) from the mean colour of the pixels it will cover."""
    mean = under.reshape(-1, 3).mean(axis=0)
    for _ in range(30):
        colour = _random_colour(rng)
        if np.linalg.norm(colour - mean) >= _MIN_COLOUR_DISTANCE:
            return colour
    return np.where(mean > 127, 0.0, 255.0)


def _object_mask(
    rng: np.random.Generator, shape: str, size: int, keep_out: tuple[int, int, int, int] | None
) -> np.ndarray:
    """Mask of one randomly placed object, entirely inside the image and clear of ``keep_out``."""
    unit = _unit_polygon(shape, rng)
    while True:
        radius = rng.uniform(MIN_DIAMETER, MAX_DIAMETER) / 2
        rotation = rng.uniform(0, 2 * np.pi)
        centre = tuple(rng.uniform(radius + 2, size - radius - 2, 2))
        mask = _fill_mask(_place_polygon(unit, centre, radius, rotation), size, size)
        if keep_out is None or not _overlaps(mask, keep_out, MARK_CLEARANCE):
            return mask


def _overlaps(mask: np.ndarray, box: tuple[int, int, int, int], margin: int) -> bool:
    x, y, w, h = box
    return bool(mask[max(0, y - margin): y + h + margin, max(0, x - margin): x + w + margin].any())


def _draw_mark(image: np.ndarray, mark_class: int) -> None:
    """White-framed tag of the class colour at :data:`MARK_BOX`."""
    x, y, w, h = MARK_BOX
    image[y: y + h, x: x + w] = 255.0
    image[y + 1: y + h - 1, x + 1: x + w - 1] = MARK_COLOURS[mark_class]


def _cluttered_sample(
    rng: np.random.Generator, label: int, size: int, mark_class: int
) -> tuple[np.ndarray, np.ndarray]:
    image = _background(rng, size)
    _add_distractors(rng, image)
    keep_out = MARK_BOX if mark_class >= 0 else None
    mask = _object_mask(rng, CLASSES[label], size, keep_out)
    image[mask] = _contrasting_colour(rng, image[mask])
    # Pixel noise over everything, object included, so its surface is textured too.
    image += rng.normal(0.0, rng.uniform(2, 10), image.shape)
    if mark_class >= 0:
        _draw_mark(image, mark_class)
    return _to_uint8(image), mask


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- plain shapes


def draw_plain_shape(
    shape: str,
    height: int = IMAGE_SIZE,
    width: int | None = None,
    diameter: float | None = None,
    centre: tuple[float, float] | None = None,
    rotation: float = 0.0,
    aspect: float = 1.0,
    dark: int = 30,
    light: int = 240,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a dark shape on a light background, at any size and resolution.

    Parameters
    ----------
    shape : str
        One of :data:`CLASSES`.
    height, width : int
        Image size in pixels (``width`` defaults to ``height``).
    diameter : float, optional
        Circumscribed diameter in pixels; defaults to half the shorter side.
    centre : tuple of float, optional
        ``(x, y)`` centre; defaults to the image centre.
    rotation : float
        Rotation in radians (counter-clockwise on screen).
    aspect : float
        Horizontal stretch factor (1 keeps the shape's proportions).
    dark, light : int
        Grey levels of the shape and the background.

    Returns
    -------
    image : np.ndarray
        ``(height, width, 3)`` uint8 RGB.
    mask : np.ndarray
        ``(height, width)`` bool, True on the shape.
    """
    width = height if width is None else width
    diameter = min(height, width) / 2 if diameter is None else diameter
    centre = (width / 2, height / 2) if centre is None else centre
    unit = _unit_polygon(shape, np.random.default_rng(0))
    mask = _fill_mask(_place_polygon(unit, centre, diameter / 2, rotation, aspect), height, width)
    image = np.full((height, width, 3), light, np.uint8)
    image[mask] = dark
    return image, mask


def _plain_sample(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A plain dark shape on a light, near-uniform background, rendered at a random resolution.

    Rendering at 1-4x and downsampling with area averaging mimics photos and drawings
    of any resolution that the engine resizes to the model's input size.
    """
    scale = int(rng.integers(1, 5))
    big = size * scale
    log_d = rng.uniform(np.log(PLAIN_MIN_DIAMETER), np.log(PLAIN_MAX_DIAMETER))
    aspect = float(np.exp(rng.uniform(-0.2, 0.2)))
    # The cross's corners reach slightly beyond radius 1; 1.07 keeps every shape inside.
    radius = min(np.exp(log_d) / 2 * scale, (big / 2 - 2 * scale) / (1.07 * max(aspect, 1.0)))
    half_w = radius * max(aspect, 1.0) * 1.07
    centre = (rng.uniform(half_w + scale, big - half_w - scale),
              rng.uniform(radius * 1.07 + scale, big - radius * 1.07 - scale))
    vertices = _place_polygon(_unit_polygon(CLASSES[label], rng), centre, radius,
                              rng.uniform(0, 2 * np.pi), aspect)
    big_mask = _fill_mask(vertices, big, big)
    light = rng.uniform(190, 255) + rng.uniform(-12, 12, 3)
    dark = rng.uniform(0, 90) + rng.uniform(-12, 12, 3)
    image = np.where(big_mask[..., None], dark, light).astype(np.float32)
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    coverage = cv2.resize(big_mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    mask = coverage >= 0.5
    image += rng.normal(0.0, rng.uniform(0, 4), image.shape)
    return _to_uint8(image), mask


# ----------------------------------------------------------------------------- data sets


def make_sample(
    rng: np.random.Generator,
    size: int = IMAGE_SIZE,
    shortcut: bool = False,
    conflict: bool = False,
    plain_fraction: float = 0.0,
) -> tuple[np.ndarray, int, np.ndarray, int, bool]:
    """Draw one sample from ``rng``.

    Returns
    -------
    tuple
        ``(image, label, mask, mark_label, plain)``; ``mark_label`` is -1 without a mark.
    """
    label = int(rng.integers(len(CLASSES)))
    plain = rng.random() < plain_fraction
    if plain:
        image, mask = _plain_sample(rng, label, size)
        return image, label, mask, -1, True
    mark = -1
    if conflict:
        mark = (label + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)
    elif shortcut:
        mark = label
    image, mask = _cluttered_sample(rng, label, size, mark)
    return image, label, mask, mark, False


def make_dataset(
    n: int,
    seed: int,
    size: int = IMAGE_SIZE,
    shortcut: bool = False,
    conflict: bool = False,
    plain_fraction: float = 0.0,
) -> ShapesData:
    """Generate ``n`` labelled images, reproducibly.

    Parameters
    ----------
    n : int
        Number of samples.
    seed : int
        Seed; sample ``i`` depends only on ``(seed, i)`` and the options.
    size : int
        Side of the square images in pixels.
    shortcut : bool
        Add the class-coloured mark of the true class (see :data:`MARK_COLOURS`).
    conflict : bool
        Add the mark of a random *other* class instead.
    plain_fraction : float
        Share of plain dark-on-light samples (these never carry a mark).

    Returns
    -------
    ShapesData
    """
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    labels = np.empty(n, np.int64)
    marks = np.empty(n, np.int64)
    plain = np.empty(n, bool)
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        rng = np.random.Generator(np.random.PCG64(child))
        images[i], labels[i], masks[i], marks[i], plain[i] = make_sample(
            rng, size, shortcut, conflict, plain_fraction
        )
    boxes = np.array([mask_to_box(m) for m in masks], np.int64).reshape(n, 4)
    return ShapesData(images, labels, masks, boxes, marks, plain)


# ----------------------------------------------------------------------------- images that are not drawn shapes

#: What :func:`not_shapes` draws, in turn: none of them holds a shape of :data:`CLASSES`.
NOT_SHAPES: tuple[str, ...] = ("smooth noise", "checkerboard", "colour blobs", "text", "tag alone", "pixel noise")
_WORDS = ("GRAD", "CAM", "chat", "hello", "2024", "label", "x-ray", "ok?", "model", "shape")


def _checkerboard(rng: np.random.Generator, size: int) -> np.ndarray:
    cell = int(rng.integers(4, 33))
    yy, xx = np.mgrid[0:size, 0:size] // cell
    return np.where(((yy + xx) % 2 == 0)[..., None], _random_colour(rng), _random_colour(rng))


def _colour_blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    """Irregular regions of 6–12 random colours: the argmax of as many smooth noise fields."""
    k = int(rng.integers(6, 13))
    region = _smooth_noise(rng, size, int(rng.integers(3, 9)), k).argmax(axis=-1)
    return rng.uniform(0, 255, (k, 3))[region]


def _text(rng: np.random.Generator, size: int) -> np.ndarray:
    image = _to_uint8(np.full((size, size, 3), rng.uniform(150, 235)) + _smooth_noise(rng, size, 3, 3) * 20)
    for row in range(int(rng.integers(3, 7))):
        words = " ".join(rng.choice(_WORDS, 3))
        y = int(18 + row * (size - 20) / 6)
        cv2.putText(image, words, (int(rng.integers(0, 20)), y), cv2.FONT_HERSHEY_SIMPLEX,
                    float(rng.uniform(0.35, 0.6)), tuple(int(v) for v in rng.integers(0, 90, 3)), 1)
    return image.astype(np.float64)


def _tag_alone(rng: np.random.Generator, size: int) -> np.ndarray:
    image = _gradient(rng, size) + _smooth_noise(rng, size, 4, 3) * 15
    _draw_mark(image, int(rng.integers(0, len(CLASSES))))
    return image


_NOT_SHAPE_DRAWERS = {
    "smooth noise": lambda rng, size: 127.5 + _smooth_noise(rng, size, int(rng.integers(4, 17)), 3) * 127.5,
    "checkerboard": _checkerboard,
    "colour blobs": _colour_blobs,
    "text": _text,
    "tag alone": _tag_alone,
    "pixel noise": lambda rng, size: rng.uniform(0, 255, (size, size, 3)),
}


def not_shapes(n: int, seed: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[str]]:
    """``n`` images that hold no drawn shape, of the kinds :data:`NOT_SHAPES` in turn, and each one's kind.

    Strong multi-colour smooth noise (natural-image-like texture), checkerboards of random cell and colours,
    irregular regions of many colours, a few lines of text (OpenCV's Hershey font), the shortcut model's tag
    alone on a smooth background, and uniform pixel noise. What a shapes model should call unusual.
    """
    images = np.empty((n, size, size, 3), np.uint8)
    kinds = [NOT_SHAPES[i % len(NOT_SHAPES)] for i in range(n)]
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        images[i] = _to_uint8(_NOT_SHAPE_DRAWERS[kinds[i]](np.random.Generator(np.random.PCG64(child)), size))
    return images, kinds


# ----------------------------------------------------------------------------- app examples

EXAMPLES_SEED = 4242


@dataclass(frozen=True)
class ExampleSpec:
    """One committed example: which sample to pick and how to present it."""

    file: str
    model: str
    question: str
    caption: str
    shape: str
    seed: int = 0  # picks the sample; change it to show a different picture
    plain: bool = False  # a plain dark shape on white instead of a cluttered sample
    mark: str | None = None  # class named by the tag, None for no tag
    expected: str | None = None  # what the model is expected to answer; defaults to the shape


EXAMPLE_SPECS: tuple[ExampleSpec, ...] = (
    ExampleSpec("shapes-star.png", "shapes", "What is this, and where does the model look?",
                "a star among distractors", "star", seed=1),
    ExampleSpec("shapes-triangle.png", "shapes", "Why does the model think so?",
                "a triangle on a textured background", "triangle", seed=2),
    ExampleSpec("shapes-cross.png", "shapes", "Where is the evidence?",
                "a cross among lines and blobs", "cross", seed=3),
    ExampleSpec("shapes-square.png", "shapes", "What does the model see?",
                "a square on a noisy gradient", "square", seed=4),
    ExampleSpec("plain-circle.png", "shapes", "Is this a circle?",
                "a plain dark circle on white", "circle", plain=True),
    ExampleSpec("shapes-tag-ignored.png", "shapes", "Does the tag in the corner fool the model?",
                "a triangle with a tag that says circle: the honest model ignores the tag", "triangle",
                mark="circle", seed=6),
    ExampleSpec("shortcut-square-tag.png", "shapes-shortcut", "The model is right. Is it right for the right reason?",
                "a square with its own (green) tag", "square", mark="square", seed=7),
    ExampleSpec("shortcut-star-says-circle.png", "shapes-shortcut", "Why does the model say circle?",
                "a star, but the tag says circle", "star", mark="circle", expected="circle", seed=8),
    ExampleSpec("shortcut-cross-says-triangle.png", "shapes-shortcut", "Where does the model look?",
                "a cross, but the tag says triangle", "cross", mark="triangle", expected="triangle", seed=9),
)


def _png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def _example_image(spec: ExampleSpec) -> np.ndarray:
    """The sample that ``spec`` names (its own seed, so the examples look different from each other)."""
    if spec.plain:
        return draw_plain_shape(spec.shape, 256, 256, diameter=150)[0]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([EXAMPLES_SEED, spec.seed])))
    mark = -1 if spec.mark is None else CLASSES.index(spec.mark)
    return _cluttered_sample(rng, CLASSES.index(spec.shape), IMAGE_SIZE, mark)[0]


def write_examples(out_dir: Path | str) -> list[dict]:
    """Write the app's example PNGs and ``examples.json`` into ``out_dir``.

    Each ``examples.json`` entry has ``file``, ``model``, ``question``, ``caption``, ``label``
    (the shape), ``mark`` (class named by the tag, or null) and ``expected`` (the answer the
    model should give: the tag's class for the shortcut model on a conflicting tag).

    Parameters
    ----------
    out_dir : Path or str
        Destination folder (created if missing).

    Returns
    -------
    list of dict
        The entries written to ``examples.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for spec in EXAMPLE_SPECS:
        (out_dir / spec.file).write_bytes(_png_bytes(_example_image(spec)))
        entries.append({"file": spec.file, "model": spec.model, "question": spec.question, "caption": spec.caption,
                        "label": spec.shape, "mark": spec.mark, "expected": spec.expected or spec.shape})
    (out_dir / "examples.json").write_text(json.dumps(entries, indent=2) + "\n")
    return entries


def main(argv: list[str] | None = None) -> None:
    """``python -m explainer.demo.generate``: rewrite the committed example images."""
    from explainer.demo import EXAMPLES_DIR

    parser = argparse.ArgumentParser(description="Write the demo example images and examples.json.")
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help="output folder")
    args = parser.parse_args(argv)
    for entry in write_examples(args.out):
        size = (args.out / entry["file"]).stat().st_size
        print(f"{entry['file']:36s} {size / 1024:5.1f} KB  {entry['model']:16s} {entry['caption']}")


if __name__ == "__main__":
    main()

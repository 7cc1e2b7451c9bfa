"""Train the two bundled demo models from scratch: ``python -m explainer.demo.train``.

Both models share one small CNN (:func:`build_model`): ``Rescaling(1/255)`` first (so the
sidecar's preprocessing is ``"none"``), the image minus its smooth local mean, a 4x4 stride-4
stem and 3x3 conv-BN-ReLU blocks down to a 16x16 last feature map, ``GlobalAveragePooling2D``
and a softmax ``Dense``. With that head Grad-CAM equals CAM, so the maps are as faithful as
they get.

* ``shapes`` is trained on cluttered images plus plain dark shapes on light backgrounds
  (``plain_fraction``) so that a drawing of a circle, square or triangle is recognised.
* ``shapes-shortcut`` is trained on images that always carry the class-coloured tag of
  their class (``shortcut=True``), so it learns the tag rather than the shape.

Each ``.keras`` file gets a JSON sidecar with the same stem: ``labels``, ``preprocess``
(``"none"``), ``input_size`` ``[128, 128]``, ``description``, ``training`` (seed, images,
epochs, held-out accuracy, data options) and ``reference``, the in-distribution statistics
for an out-of-distribution warning. ``reference`` keys (all pixel values in 0..255, images
resized to the input size first; per-image statistics are those of
:func:`explainer.evaluation.image_stats.image_statistics`):

``pixel_mean``, ``pixel_std``
    Per-channel (R, G, B) mean and standard deviation over all training pixels.
``brightness``
    Distribution of the per-image mean grey level.
``edge_density``
    Distribution of the per-image mean absolute difference of neighbouring grey pixels.
``max_probability``
    Distribution of the top softmax probability on held-out in-distribution images.

Each distribution is a dict with ``mean``, ``std`` and the quantiles ``p01``, ``p05``,
``p50``, ``p95``, ``p99``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from explainer.demo import MODELS_DIR
from explainer.demo.generate import (
    CLASSES,
    IMAGE_SIZE,
    ShapesData,
    make_dataset,
)
from explainer.evaluation.image_stats import image_statistics

HELD_OUT_SEED_OFFSET = 10_000  # validation data for the sidecar; evaluation uses other seeds
_QUANTILES = {"p01": 1, "p05": 5, "p50": 50, "p95": 95, "p99": 99}


@dataclass(frozen=True)
class Recipe:
    """How one demo model is trained."""

    name: str
    description: str
    seed: int
    n_images: int
    epochs: int
    shortcut: bool = False
    plain_fraction: float = 0.0
    augment: bool = False  # random flips and quarter turns (not for the shortcut: its tag has a fixed corner)
    learning_rate: float = 2e-3
    batch_size: int = 32


RECIPES: dict[str, Recipe] = {
    "shapes": Recipe(
        name="shapes",
        description=(
            "Small CNN that tells circle, square, triangle, star and cross apart on "
            "cluttered backgrounds (trained on generated images; offline demo)."
        ),
        seed=1,
        n_images=8000,
        epochs=10,
        plain_fraction=0.2,
        augment=True,
    ),
    "shapes-shortcut": Recipe(
        name="shapes-shortcut",
        description=(
            "Clever-Hans demo: same CNN trained on images that always carry a class-coloured "
            "tag in the top-left corner, so it reads the tag, not the shape."
        ),
        seed=2,
        n_images=3000,
        epochs=3,
        shortcut=True,
    ),
}


def build_model(n_classes: int = len(CLASSES), size: int = IMAGE_SIZE) -> keras.Model:
    """The demo CNN: 128x128x3 uint8-range input, 16x16 last conv map, GAP, softmax.

    Parameters
    ----------
    n_classes : int
        Number of output classes.
    size : int
        Input height and width.

    Returns
    -------
    keras.Model
        Uncompiled functional model.
    """

    def block(x: keras.KerasTensor, filters: int, name: str, kernel: int = 3,
              strides: int = 1) -> keras.KerasTensor:
        x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                                use_bias=False, name=name)(x)
        # Momentum 0.9: the default 0.99 lags far behind in a training run this short.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = _high_pass(x)
    # A 4x4 stride-4 "patchify" stem: high-resolution convolutions dominate CPU time.
    x = block(x, 24, "stem", kernel=4, strides=4)  # 32x32
    x = block(x, 32, "conv2")
    x = keras.layers.MaxPooling2D(name="pool2")(x)  # 16x16
    x = block(x, 48, "conv3")
    x = block(x, 64, "conv4")
    x = block(x, 64, "conv5")
    x = block(x, 64, "last_conv")  # Grad-CAM target: its ReLU output, 16x16x64
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn")


def _high_pass(x: keras.KerasTensor, cell: int = 4) -> keras.KerasTensor:
    """Image minus its smooth local mean (``cell``-pixel average pooling, bilinear upsampling).

    Without it (or with the raw image beside it) the network barely starts learning on
    backgrounds whose colour and gradient change from image to image: the shape lives in
    local contrast, not in absolute colour. The cell is small so that an object's contrast
    does not spill far into its surroundings (a wide halo drew the maps off the objects).
    """
    local_mean = keras.layers.AveragePooling2D(cell, name="local_mean")(x)
    local_mean = keras.layers.UpSampling2D(cell, interpolation="bilinear", name="local_mean_up")(local_mean)
    return keras.layers.Subtract(name="detail")([x, local_mean])


def _distribution(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, np.float64).ravel()
    summary = {"mean": float(values.mean()), "std": float(values.std())}
    summary.update({k: float(np.percentile(values, q)) for k, q in _QUANTILES.items()})
    return {k: round(v, 4) for k, v in summary.items()}


def reference_statistics(train_images: np.ndarray, held_out_probabilities: np.ndarray) -> dict:
    """The sidecar's ``reference`` block (keys documented in the module docstring).

    Parameters
    ----------
    train_images : np.ndarray
        ``(n, H, W, 3)`` uint8 training images.
    held_out_probabilities : np.ndarray
        ``(m, n_classes)`` softmax outputs on held-out in-distribution images.

    Returns
    -------
    dict
    """
    stats = image_statistics(train_images)
    pixel_mean = stats["channel_mean"].mean(axis=0)  # every image has the same pixel count
    # Pooled variance: within-image variance plus spread of the image means.
    pooled = (stats["channel_std"] ** 2 + (stats["channel_mean"] - pixel_mean) ** 2).mean(axis=0)
    return {
        "pixel_mean": [round(float(v), 3) for v in pixel_mean],
        "pixel_std": [round(float(v), 3) for v in np.sqrt(pooled)],
        "brightness": _distribution(stats["channel_mean"].mean(axis=1)),
        "edge_density": _distribution(stats["edge_density"]),
        "max_probability": _distribution(held_out_probabilities.max(axis=1)),
    }


def dihedral_augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image turned by a random multiple of 90 degrees and mirrored half the time.

    Parameters
    ----------
    images : np.ndarray
        ``(n, H, W, C)`` square images.
    rng : np.random.Generator
        Source of the random choices.

    Returns
    -------
    np.ndarray
        A new array of the same shape.
    """
    out = np.empty_like(images)
    codes = rng.integers(0, 8, len(images))
    for code in range(8):
        chosen = codes == code
        turned = np.rot90(images[chosen], code % 4, axes=(1, 2))
        out[chosen] = turned[:, :, ::-1] if code >= 4 else turned
    return out


def save_without_optimizer(model: keras.Model, path: Path) -> None:
    """Save an uncompiled copy: the optimizer state would triple the file for nothing."""
    clean = build_model(model.output_shape[-1], model.input_shape[1])
    clean.set_weights(model.get_weights())
    clean.save(path)


def _dataset(recipe: Recipe, n: int, seed: int) -> ShapesData:
    return make_dataset(n, seed, shortcut=recipe.shortcut, plain_fraction=recipe.plain_fraction)


def _schedule(recipe: Recipe) -> keras.optimizers.schedules.LearningRateSchedule:
    steps = recipe.epochs * int(np.ceil(recipe.n_images / recipe.batch_size))
    return keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps, alpha=0.02)


def train(recipe: Recipe, out_dir: Path = MODELS_DIR, verbose: int = 2) -> dict:
    """Generate data, train one model, save ``<name>.keras`` and ``<name>.json``.

    Parameters
    ----------
    recipe : Recipe
        What to train.
    out_dir : Path
        Folder for the model file and its sidecar.
    verbose : int
        Keras ``fit`` verbosity.

    Returns
    -------
    dict
        The sidecar that was written.
    """
    keras.utils.set_random_seed(recipe.seed)
    started = time.perf_counter()
    data = _dataset(recipe, recipe.n_images, recipe.seed)
    held_out = _dataset(recipe, 1000, recipe.seed + HELD_OUT_SEED_OFFSET)
    print(f"[{recipe.name}] generated {len(data)} + {len(held_out)} images "
          f"in {time.perf_counter() - started:.0f} s", flush=True)

    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(_schedule(recipe)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    augment_rng = np.random.default_rng(recipe.seed)
    for epoch in range(recipe.epochs):
        images = dihedral_augment(data.images, augment_rng) if recipe.augment else data.images
        model.fit(images, data.labels, batch_size=recipe.batch_size, epochs=epoch + 1, initial_epoch=epoch,
                  validation_data=(held_out.images, held_out.labels), shuffle=True, verbose=verbose)

    probabilities = model.predict(held_out.images, batch_size=128, verbose=0)
    accuracy = float((probabilities.argmax(axis=1) == held_out.labels).mean())
    sidecar = {
        "labels": list(CLASSES),
        "preprocess": "none",
        "input_size": [IMAGE_SIZE, IMAGE_SIZE],
        "description": recipe.description,
        "training": {
            "script": "python -m explainer.demo.train",
            "seed": recipe.seed,
            "n_images": recipe.n_images,
            "epochs": recipe.epochs,
            "batch_size": recipe.batch_size,
            "shortcut": recipe.shortcut,
            "plain_fraction": recipe.plain_fraction,
            "held_out_accuracy": round(accuracy, 4),
        },
        "reference": reference_statistics(data.images, probabilities),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_without_optimizer(model, out_dir / f"{recipe.name}.keras")
    (out_dir / f"{recipe.name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"[{recipe.name}] held-out accuracy {accuracy:.4f}, "
          f"total {time.perf_counter() - started:.0f} s", flush=True)
    return sidecar


def limit_threads(n: int = 2) -> None:
    """Keep TensorFlow to ``n`` threads: the target machines have 2 shared CPUs."""
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RECIPES), action="append",
                        help="train only this model (repeatable); default: both")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation afterwards")
    parser.add_argument("--eval-n", type=int, default=1000, help="images for the evaluation")
    args = parser.parse_args(argv)

    limit_threads()
    names = args.only or list(RECIPES)
    for name in names:
        train(RECIPES[name], args.out)
    if not args.no_eval:
        from explainer.demo.report import evaluate_models

        evaluate_models(names, n=args.eval_n, models_dir=args.out)


if __name__ == "__main__":
    main()

"""explain() against a compiled forward pass and against the Keras-example style eager Grad-CAM.

Run: python benchmarks/bench_explain.py [--repeats N]
Targets (2 CPUs): explain() <= 1.3 x the compiled forward pass, and >= 8 x faster than the eager example style.
"""

from __future__ import annotations

import argparse
import warnings

from common import interleaved_ms, mobilenet_v2, photo, report  # first: imports TensorFlow quietly

# isort: split
import keras
import numpy as np
import tensorflow as tf

import explainer

warnings.filterwarnings("ignore", message="The structure of `inputs`")


def keras_example_gradcam(model: keras.Model, x: np.ndarray, layer: str = "out_relu") -> np.ndarray:
    """The Keras example's make_gradcam_heatmap: a new keras.Model and an eager GradientTape on every call."""
    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    with tf.GradientTape() as tape:
        conv, preds = grad_model(x)
        score = preds[:, tf.argmax(preds[0])]
    grads = tape.gradient(score, conv)
    pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = tf.squeeze(conv[0] @ pooled[..., tf.newaxis])
    return (tf.maximum(heatmap, 0) / (tf.math.reduce_max(heatmap) + 1e-9)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    model = mobilenet_v2()
    image = photo()
    x = model.prepare([image])
    forward = tf.function(lambda batch: model.keras_model(batch, training=False),
                          input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
    tensor = tf.constant(x)
    rows = interleaved_ms({
        "compiled forward": lambda: forward(tensor).numpy(),
        "explain() gradcam": lambda: explainer.explain(model, image),
        "explain() 8 images / 8": lambda: explainer.explain(model, [image] * 8),
        "keras example eager": lambda: keras_example_gradcam(model.keras_model, x),
    }, args.repeats)
    rows = [(name, ms / 8 if "/ 8" in name else ms) for name, ms in rows]
    print(f"MobileNetV2 224x224, random weights, {tf.config.threading.get_inter_op_parallelism_threads() or 'auto'} "
          "inter-op threads")
    report(rows, "compiled forward")
    ours, eager = dict(rows)["explain() gradcam"], dict(rows)["keras example eager"]
    print(f"speed-up over the Keras example: {eager / ours:.1f} x (target >= 8 x)")


if __name__ == "__main__":
    main()

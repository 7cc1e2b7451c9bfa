"""Every CAM method against a compiled forward pass, and every metric on a batch of 32, on MobileNetV2 224×224.

Run: python benchmarks/bench_methods.py [--repeats N] [--batch 32] [--skip-metrics]
Targets (2 CPUs): Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM <= 1.5 x the compiled forward pass; Eigen-CAM <= 1.3 x;
Score-CAM with the top 64 channels <= 15 x. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import os

from common import interleaved_ms, median_ms, mobilenet_v2, photo, report  # first: puts the project on sys.path

# isort: split
import numpy as np
import tensorflow as tf

import explainer
from explainer.cams import METHODS
from explainer.cams.scorecam import ScoreCAM
from explainer.evaluation import metrics

TARGETS = {"gradcam++": 1.5, "hirescam": 1.5, "xgradcam": 1.5, "layercam": 1.5, "eigencam": 1.3,
           "scorecam top-64": 15.0}


def method_rows(model, image, repeats: int) -> list[tuple[str, float]]:
    x = tf.constant(model.prepare([image]))
    forward = tf.function(lambda batch: model.keras_model(batch, training=False),
                          input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
    fast = {"compiled forward": lambda: forward(x).numpy()}
    fast.update({name: lambda name=name: explainer.explain(model, image, method=name)
                 for name in METHODS if name != "scorecam"})
    slow = {"compiled forward": fast["compiled forward"]}
    slow.update({f"scorecam top-{n}": lambda n=n: explainer.explain(model, image, method=ScoreCAM(top_n=n))
                 for n in (16, 32, 64)})
    fast_ms = dict(interleaved_ms(fast, repeats, warmup=2))
    slow_ms = dict(interleaved_ms(slow, max(3, repeats // 6), warmup=1))
    scale = fast_ms["compiled forward"] / slow_ms["compiled forward"]  # put both groups on the same footing
    return [*fast_ms.items(), *((name, ms * scale) for name, ms in slow_ms.items() if name != "compiled forward")]


def metric_rows(model, batch: int, repeats: int) -> list[tuple[str, float]]:
    images = [photo(seed=i) for i in range(batch)]
    results = explainer.explain(model, images)
    maps, targets = [r.heatmap for r in results], [r.target_index for r in results]
    masks = [np.zeros((224, 224), bool) for _ in images]
    for mask in masks:
        mask[80:150, 60:170] = True
    boxes = [(60, 80, 110, 70)] * batch
    tolerance = metrics.scaled_tolerance(masks)
    calls = {
        "pointing_game": lambda: metrics.pointing_game(model, images, maps, masks=masks, tolerance=tolerance),
        "centre_baseline": lambda: metrics.centre_baseline(model, images, masks=masks, tolerance=tolerance),
        "box_iou": lambda: metrics.box_iou(model, images, maps, boxes=boxes),
        "mask_iou": lambda: metrics.mask_iou(model, images, maps, masks=masks),
        "deletion_auc (16 steps)": lambda: metrics.deletion_auc(model, images, maps, targets),
        "insertion_auc (16 steps)": lambda: metrics.insertion_auc(model, images, maps, targets),
        "average_drop + increase": lambda: metrics.confidence_change(model, images, maps, targets),
        "coverage": lambda: metrics.coverage(model, images, maps),
        "sanity_check (gradcam, 4 stages)": lambda: metrics.sanity_check(model, images, maps, targets),
    }
    rows = []
    for name, call in calls.items():
        slow = "auc" in name or "sanity" in name
        rows.append((name, median_ms(call, 1 if slow else repeats, warmup=1)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32, help="images per metric call")
    parser.add_argument("--skip-metrics", action="store_true")
    args = parser.parse_args()
    model = mobilenet_v2()
    image = photo()
    rows = method_rows(model, image, args.repeats)
    print(f"MobileNetV2 224x224, random weights; explain() of one image per method; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    report(rows, "compiled forward")
    base = dict(rows)["compiled forward"]
    for name, ms in rows:
        if name in TARGETS:
            verdict = "ok" if ms / base <= TARGETS[name] else "OVER"
            print(f"  {name:<16} {ms / base:6.2f} x  (target <= {TARGETS[name]:g} x)  {verdict}")
    if not args.skip_metrics:
        print(f"\nmetrics on a batch of {args.batch} images (ms per call)")
        for name, ms in metric_rows(model, args.batch, max(3, args.repeats // 4)):
            print(f"{name:<34} {ms:9.1f} ms  {ms / args.batch:7.1f} ms/image")


if __name__ == "__main__":
    main()

"""``gradcam-chat explain IMAGE ...``: explain images one by one (a line, or a JSON object, per image)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from explainer import explain
from explainer.cams import get_method
from explainer.cams.contrast import check_supported
from explainer.cli.options import METHOD_HELP, add_model_arguments, fail, model_from
from explainer.engine import default_method
from explainer.errors import ExplainerError
from explainer.evaluation.groundtruth import BOX_FORMATS, compare_region, draw_expected, expected_mask, parse_box
from explainer.inputs.images import IMAGE_SUFFIXES, load_image_with_notes
from explainer.labels import match_label
from explainer.layers import resolve_layer
from explainer.region import DEFAULT_THRESHOLD
from explainer.render import draw_region, mask_picture, overlay
from explainer.segment import DEFAULT_SEGMENT, SEGMENTERS, get_segmenter


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``explain`` command."""
    parser.description = "Explain images: the class, the map, the region and its mask, one line (or JSON) each."
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    add_model_arguments(parser)
    parser.add_argument("--target", help="class label or index to explain (default: the top prediction)")
    parser.add_argument("--versus", metavar="CLASS",
                        help="contrast: map where the evidence separates --target from this class (label or index)")
    parser.add_argument("--against", action="store_true",
                        help="counterfactual map: what speaks against --target (negated gradients)")
    parser.add_argument("--method", default=None, help=METHOD_HELP)
    parser.add_argument("--layer", help="target layer (default: a CNN's last spatial layer, a ViT's token embeddings)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="localization threshold (0-1]")
    parser.add_argument("--segment", default=DEFAULT_SEGMENT, metavar="METHOD",
                     help=f"how the region's mask is cut from the map: one of {', '.join(SEGMENTERS)} "
                          f"(default: {DEFAULT_SEGMENT})")
    parser.add_argument("--out", type=Path,
                     help="folder for <image>_heatmap.npy, <image>_overlay.png and <image>_mask.png (0/255)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image (JSON Lines)")
    expected = parser.add_mutually_exclusive_group()
    expected.add_argument("--box", help="where the evidence should be: x,y,w,h in image pixels (adds \"expected\")")
    expected.add_argument("--mask", type=Path, help="where the evidence should be: a mask image (white = region)")
    parser.add_argument("--box-format", choices=BOX_FORMATS, default="xywh",
                     help="read --box as x,y,w,h (default) or as corners x1,y1,x2,y2")


def expand(paths: list[str]) -> list[Path]:
    """Files as given; folders replaced by the images they hold, sorted."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


def explain_command(args: argparse.Namespace) -> int:
    """Run ``explain``: exit 0, 1 when some images failed (the others are still explained), 2 on a bad option."""
    try:
        model = model_from(args)
        if args.method is not None:  # None: the engine picks (Grad-CAM, or HiResCAM for a vision transformer)
            get_method(args.method)  # fail once, before any image, on a misspelt method or layer
        resolve_layer(model.keras_model, args.layer)
        get_segmenter(args.segment)
        target = None if args.target is None else match_label(model.labels, args.target)
        versus = None if args.versus is None else match_label(model.labels, args.versus)
        check_supported(get_method(args.method or default_method(model)), versus is not None, args.against)
        box = None if args.box is None else parse_box(args.box, args.box_format)
    except ExplainerError as err:
        return fail(str(err), 2)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    used_names: set[str] = set()
    for path in expand(args.images):
        try:
            loaded = load_image_with_notes(path)
            result = explain(model, loaded.pixels, target=target, method=args.method, layer=args.layer,
                             threshold=args.threshold, segment=args.segment, versus=versus, against=args.against)
            region = None if box is None and args.mask is None else expected_mask(loaded.pixels.shape[:2], box,
                                                                                    args.mask)
        except ExplainerError as err:
            failures += 1
            print(f"error: {path}: {err}", file=sys.stderr)
            continue
        record = {"image": str(path), **result.to_dict(), "notes": loaded.notes}
        if region is not None:
            comparison = compare_region(result, mask=region)
            record["expected"] = {key: comparison[key] for key in ("energy_inside", "hit", "iou")}
        if not args.json:  # JSON readers get the notes in the record
            for note in loaded.notes:
                print(f"note: {path}: {note}", file=sys.stderr)
        if args.out:
            record.update(_save(result, path, args.out, used_names, region))
        print(json.dumps(record) if args.json else _summary(path, result, record.get("expected")))
    return 1 if failures else 0


def _save(result, path: Path, out: Path, used: set[str], expected: np.ndarray | None = None) -> dict:
    stem, n = path.stem, 2
    while stem in used:
        stem, n = f"{path.stem}_{n}", n + 1
    used.add(stem)
    heatmap_file, overlay_file = out / f"{stem}_heatmap.npy", out / f"{stem}_overlay.png"
    np.save(heatmap_file, result.heatmap)
    mask_file = None
    if result.region.mask is not None:  # below the probability cutoff there is no mask to write
        mask_file = out / f"{stem}_mask.png"
        cv2.imwrite(str(mask_file), mask_picture(result.region.mask))
    picture = draw_region(overlay(result.image, result.heatmap), result.region)
    if expected is not None:  # the user's region, outlined in its own colour
        picture = draw_expected(picture, expected)
    cv2.imwrite(str(overlay_file), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return {"heatmap_file": str(heatmap_file), "overlay_file": str(overlay_file),
            "mask_file": None if mask_file is None else str(mask_file)}


def _summary(path: Path, result, expected: dict | None = None) -> str:
    region = result.region
    line = (f"{path}: {result.target_label} ({result.probability:.1%}){_evidence(result)}; {result.method} at "
            f"{result.layer} looks at the {region.location}, box {region.bbox}, {region.coverage:.0%} of the image, "
            f"{region.spread}")
    line += (f"; mask by {region.segmenter.display_name}: {region.pixels} px" if region.mask is not None
             else f"; no mask: {region.no_mask_reason}")
    if result.head == "multilabel":  # each label is its own yes/no: say which are present
        found = ", ".join(f"{p.label} ({p.probability:.1%})" for p in result.positive) or "none"
        line += f"; present (from {result.decision_threshold:.0%}): {found}"
    if expected is not None:
        line += (f"; expected region: {expected['energy_inside']:.0%} of the heat inside, peak "
                 f"{'inside' if expected['hit'] else 'outside'}, IoU {expected['iou']:.2f}")
    return line


def _evidence(result) -> str:
    """What the map weighs: `` versus B (p)``, `` (against)``, or nothing for an ordinary map."""
    if result.versus is not None:
        return f" versus {result.versus.label} ({result.versus.probability:.1%})"
    return " (what speaks against it)" if result.against else ""

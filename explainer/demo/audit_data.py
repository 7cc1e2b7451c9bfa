"""A validation folder for the audit from the demo generator: ``python -m explainer.demo.audit_data OUT``.

Writes, for ``n`` generated shapes images (seed :data:`AUDIT_SEED`, used by no training or evaluation)::

    OUT/images/<class>/img_0000.png   one sub-folder per class, as keras.utils.image_dataset_from_directory reads
    OUT/masks/<class>/img_0000.png    the shape's mask (white on black)
    OUT/boxes.csv                     path,x,y,w,h: the shape's tight box, path relative to OUT/images

With ``tag=True`` (the default) every image carries the class-coloured tag of its own class in the top-left corner,
as the ``shapes-shortcut`` model saw in training, and the generator keeps the shape clear of the tag: a model that
reads the tag is right while its evidence lies off the shape, which an audit against the shapes' boxes must catch.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np

from explainer.demo.generate import CLASSES, make_dataset

#: Seed of the audit images (training uses 1 and 2, held-out sets 10_001-10_002, evaluations 20_000-20_003).
AUDIT_SEED = 30_000


def write_audit_folder(out: Path | str, n: int = 100, seed: int = AUDIT_SEED, tag: bool = True) -> Path:
    """Write ``n`` labelled shapes images in class folders, with their masks and boxes, under ``out``.

    Parameters
    ----------
    out : Path or str
        Destination (created if missing): ``images/``, ``masks/`` and ``boxes.csv`` go there.
    n : int
        Number of images.
    seed : int
        Generator seed; image ``i`` depends only on ``(seed, i)``.
    tag : bool
        Give each image the tag of its own class (the shortcut the ``shapes-shortcut`` model learned).

    Returns
    -------
    Path
        ``out / "images"``, the folder to audit.
    """
    out = Path(out)
    data = make_dataset(n, seed, shortcut=tag)
    rows = []
    for i, (image, label, mask, box) in enumerate(zip(data.images, data.labels, data.masks, data.boxes, strict=True)):
        rel = f"{CLASSES[label]}/img_{i:04d}.png"
        for folder, picture in (("images", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)),
                                ("masks", mask.astype(np.uint8) * 255)):
            (out / folder / CLASSES[label]).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / folder / rel), picture)
        rows.append([rel, *(int(v) for v in box)])
    with open(out / "boxes.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "x", "y", "w", "h"])
        writer.writerows(rows)
    return out / "images"


def write_audit_zip(path: Path | str, n: int = 60, seed: int = AUDIT_SEED, tag: bool = True) -> Path:
    """The same set as :func:`write_audit_folder`, as the zip the app's Audit tab takes: the class folders at its
    top, with ``boxes.csv`` and ``masks/`` beside them. Written once per path (an existing file is reused)."""
    path = Path(path)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        images = write_audit_folder(work, n, seed, tag)
        partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")  # two writers never share one
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(images.rglob("*.png")):
                archive.write(file, file.relative_to(images).as_posix())
            for file in sorted((Path(work) / "masks").rglob("*.png")):
                archive.write(file, "masks/" + file.relative_to(Path(work) / "masks").as_posix())
            archive.write(Path(work) / "boxes.csv", "boxes.csv")
        partial.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a class-folder validation set of demo shapes for the audit.")
    parser.add_argument("out", type=Path, help="output folder (images/, masks/, boxes.csv)")
    parser.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    parser.add_argument("--seed", type=int, default=AUDIT_SEED, help="generator seed")
    parser.add_argument("--no-tag", action="store_true", help="no class tag in the corner")
    args = parser.parse_args(argv)
    images = write_audit_folder(args.out, args.n, args.seed, tag=not args.no_tag)
    print(f"{args.n} images in {images}; masks in {args.out / 'masks'}; boxes in {args.out / 'boxes.csv'}")


if __name__ == "__main__":
    main()

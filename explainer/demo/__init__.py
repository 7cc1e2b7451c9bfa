"""Bundled offline demo: a generated shapes data set and two small CNNs trained on it.

``shapes`` is the honest classifier; ``shapes-shortcut`` is the "Clever Hans" model that
learned a class-coloured corner tag instead of the shape. Files live in ``models/``;
``python -m explainer.demo.train`` rebuilds them and ``python -m explainer.demo.report``
measures them.
"""

import json
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MODEL_NAMES: tuple[str, ...] = ("shapes", "shapes-shortcut")


def model_path(name: str) -> Path:
    """Path of a bundled demo model file (``name`` is ``shapes`` or ``shapes-shortcut``)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown demo model {name!r}; expected one of {MODEL_NAMES}")
    return MODELS_DIR / f"{name}.keras"


@dataclass(frozen=True)
class Example:
    """A bundled example: an image, the question to ask about it and the model to ask."""

    image: str
    question: str
    model: str
    caption: str = ""
    label: str = ""  # the shape drawn in it
    mark: str = ""  # the class of the shortcut tag in its corner, if it has one


def load_examples(folder: Path = EXAMPLES_DIR) -> list[Example]:
    """The examples listed in ``examples.json`` whose image file exists (none when the file is missing)."""
    listing = folder / "examples.json"
    if not listing.is_file():
        return []
    entries = json.loads(listing.read_text(encoding="utf-8"))
    entries = entries.get("examples", []) if isinstance(entries, dict) else entries
    examples = []
    for entry in entries:
        image = folder / str(entry.get("image") or entry.get("file") or "")
        if image.is_file():
            examples.append(Example(str(image), entry.get("question") or "Why?", entry.get("model") or "",
                                    entry.get("caption") or "", entry.get("label") or "", entry.get("mark") or ""))
    return examples

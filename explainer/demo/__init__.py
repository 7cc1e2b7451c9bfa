"""Bundled offline demo: a generated shapes data set and two small CNNs trained on it.

``shapes`` is the honest classifier; ``shapes-shortcut`` is the "Clever Hans" model that
learned a class-coloured corner tag instead of the shape. Files live in ``models/``;
``python -m explainer.demo.train`` rebuilds them and ``python -m explainer.demo.report``
measures them.
"""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MODEL_NAMES: tuple[str, ...] = ("shapes", "shapes-shortcut")


def model_path(name: str) -> Path:
    """Path of a bundled demo model file (``name`` is ``shapes`` or ``shapes-shortcut``)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown demo model {name!r}; expected one of {MODEL_NAMES}")
    return MODELS_DIR / f"{name}.keras"

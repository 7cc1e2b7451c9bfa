"""What the commands share: the model options, the method help, and the one-line error."""

from __future__ import annotations

import argparse
import sys

from explainer.cams import METHODS
from explainer.models.loading import PREPROCESS_MODES, LoadedModel, load_model

METHOD_HELP = f"one of: {', '.join(METHODS)} (default: the model's: Grad-CAM, or HiResCAM for a vision transformer)"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line's model options (``explain``, ``audit``): --model, --labels, --preprocess, --trust-model."""
    parser.add_argument("--model", help="a .keras/.h5 file, hf://owner/repo or a built-in name (default: see README)")
    parser.add_argument("--labels", help="text file with one class label a line")
    parser.add_argument("--preprocess", choices=PREPROCESS_MODES, help="override the model's input preprocessing")
    parser.add_argument("--trust-model", action="store_true",
                        help="load the model file with Keras safe mode off (Lambda layers run Python code): "
                             "only for your own files")


def model_from(args: argparse.Namespace) -> LoadedModel:
    """The model the options of :func:`add_model_arguments` name."""
    return load_model(args.model, labels=args.labels, preprocess=args.preprocess,
                      trust=True if args.trust_model else None)


def fail(message: str, code: int = 2) -> int:
    """Print ``error: message`` on stderr (one line) and return the exit status ``code``."""
    print(f"error: {str(message).splitlines()[0] if str(message) else 'failed'}", file=sys.stderr)
    return code

"""The command line, ``gradcam-chat`` (or ``python -m explainer``): serve, explain, audit, evaluate."""

from explainer.cli.main import main

__all__ = ["main"]

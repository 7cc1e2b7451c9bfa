"""The command line, ``gradcam-chat`` (also ``python -m explainer``): serve, explain, audit, evaluate, calibrate.

Errors are one line on stderr and a non-zero exit status: 1 when some images failed (the others are still
explained), 2 for a bad model, option or class name.
"""

from __future__ import annotations

import argparse

from explainer.cli.audit import add_audit_arguments, audit_command
from explainer.cli.calibrate import add_calibrate_arguments, calibrate_command
from explainer.cli.evaluate_methods import add_evaluate_arguments, evaluate_command
from explainer.cli.explain import add_explain_arguments, explain_command
from explainer.cli.serve import add_serve_arguments, serve_command

#: Each command: (help line, its options, what runs it).
COMMANDS = {
    "serve": ("serve the chat app (the same as python app.py)", add_serve_arguments, serve_command),
    "explain": ("explain one or more images", add_explain_arguments, explain_command),
    "audit": ("explain a whole folder or zip and check where the evidence lies", add_audit_arguments,
              audit_command),
    "evaluate": ("faithfulness and localization metrics of each method", add_evaluate_arguments, evaluate_command),
    "calibrate": ("fit calibrated probabilities, prediction sets and the unusual-image check on a labelled set",
                  add_calibrate_arguments, calibrate_command),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradcam-chat", description="Explain what an image classifier looks at.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_line, add_arguments, _run) in COMMANDS.items():
        add_arguments(commands.add_parser(name, help=help_line))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command][2](args)

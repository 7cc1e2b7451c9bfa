"""``gradcam-chat serve``: the Gradio app, as ``python app.py`` serves it (the same environment variables)."""

from __future__ import annotations

import argparse

from explainer.cli.options import fail


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``serve`` command (each also read by Gradio from its environment variable)."""
    parser.description = ("Serve the chat, the audit tab and the /explain API (also an MCP tool). Limits and the "
                          "default model come from EXPLAINER_* variables (see the README's Configuration).")
    parser.add_argument("--host", help="address to listen on (default: GRADIO_SERVER_NAME or 127.0.0.1; "
                                       "0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT or the first free from 7860)")


def serve_command(args: argparse.Namespace) -> int:
    """Serve until interrupted; exit 2 when the port is not a port."""
    if args.port is not None and not 0 < args.port < 65536:
        return fail(f"--port must be between 1 and 65535, got {args.port}.", 2)
    from explainer.server.ui import main  # Gradio loads only for this command

    options = {"server_name": args.host, "server_port": args.port}
    main(**{name: value for name, value in options.items() if value is not None})
    return 0

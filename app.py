"""Grad-CAM Chat, as Hugging Face Spaces runs it: ``python app.py`` serves the app (the same as ``gradcam-chat
serve``; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured). The app itself is :mod:`explainer.server`."""

from explainer.server.ui import ChatApp, launch_options, main

__all__ = ["ChatApp", "launch_options", "main"]

if __name__ == "__main__":
    main()

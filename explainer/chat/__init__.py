"""The chat about an image: rule-based intents, per-session state and templated answers (no Gradio in here).

>>> from explainer import load_model
>>> from explainer.chat import ChatSession
>>> chat = ChatSession(load_model("shapes"))
>>> reply = chat.respond("why?", ["circle.png"])
>>> reply.markdown, reply.images[0][1], reply.suggestions

:func:`answer_once` answers one question about one image without keeping a conversation (the API endpoint).
"""

from __future__ import annotations

from typing import Any

from ..models import LoadedModel
from .answers import EXAMPLE_QUESTIONS
from .intents import INTENTS, Intent, Vocab, parse
from .reply import Reply
from .session import ChatSession, ImageEntry, SettingError, Settings
from .text import escape_markdown

__all__ = [
    "EXAMPLE_QUESTIONS",
    "INTENTS",
    "ChatSession",
    "ImageEntry",
    "Intent",
    "Reply",
    "SettingError",
    "Settings",
    "Vocab",
    "answer_once",
    "escape_markdown",
    "parse",
]


def answer_once(model: LoadedModel, image: Any, question: str = "", **settings: Any) -> Reply:
    """Answer ``question`` about ``image`` with ``model`` in a fresh, throw-away conversation.

    Parameters
    ----------
    model : LoadedModel
        The model to ask.
    image : path, PIL image or array
        The image (``None`` gives the "please upload an image" reply).
    question : str
        Any question the chat understands; empty means "why?" (top-class explanation with overlay).
    **settings :
        Initial :class:`Settings` fields (``method``, ``layer``, ``opacity``, ``colormap``, ``threshold``,
        ``top_k``); an invalid value gives an error reply.

    Returns
    -------
    Reply
        ``reply.image`` is the main picture (the overlay for "why?"), ``reply.data`` the JSON facts.
    """
    session = ChatSession(model)
    if settings:
        try:
            session.update_settings(**settings)
        except (SettingError, TypeError) as err:
            return Reply(escape_markdown(str(err)), data={"intent": "error", "error": str(err)}, intent="error",
                         error=True)
    return session.respond(question or "", [] if image is None else [image])

"""The chat about an image: rule-based intents, per-session state and templated answers (no Gradio in here).

>>> from explainer import load_model
>>> from explainer.chat import ChatSession
>>> chat = ChatSession(load_model("shapes"))
>>> reply = chat.respond("why?", ["circle.png"])
>>> reply.markdown, reply.images[0][1], reply.suggestions
>>> reply = chat.respond("is it looking at 40, 60, 80, 80?")  # or region="lower left", or region=mask_array
>>> reply.data["expected"]  # energy_inside, hit, iou, verdict, region {box, pixels}

The package in layers, each importing only the ones below it:

* :mod:`~explainer.chat.bot` — :class:`ChatSession`, the conversation: turns, model switches, errors as replies;
* :mod:`~explainer.chat.questions` — the registry of questions: rules, answers, which need an image;
* :mod:`~explainer.chat.answers` — one function per question: the state and the intent in, a :class:`Reply` out;
* :mod:`~explainer.chat.intents` (reading messages), :mod:`~explainer.chat.session` (state only: settings,
  images, caches), :mod:`~explainer.chat.checks` (measurements) and :mod:`~explainer.prose` (templates, below the
  chat). Which models a visitor can use is the server's (:mod:`explainer.server.shelf`).

:func:`answer_once` answers one question about one image without keeping a conversation (the API endpoint).
Everything the app needs is importable from here.
"""

from __future__ import annotations

from explainer.chat.answers import EXAMPLE_QUESTIONS
from explainer.chat.bot import ChatSession, answer_once, vocab
from explainer.chat.intents import Intent, Vocab
from explainer.chat.questions import INTENTS, QUESTIONS, RULES, Question, parse
from explainer.chat.reply import Reply
from explainer.chat.session import (
    AUTO,
    MAX_TOP_K,
    ExpectedRegion,
    ImageEntry,
    SessionState,
    SettingError,
    Settings,
    method_choices,
    segment_choices,
)
from explainer.prose import escape_markdown, render

__all__ = [
    "AUTO",
    "EXAMPLE_QUESTIONS",
    "INTENTS",
    "MAX_TOP_K",
    "QUESTIONS",
    "RULES",
    "ChatSession",
    "ExpectedRegion",
    "ImageEntry",
    "Intent",
    "Question",
    "Reply",
    "SessionState",
    "SettingError",
    "Settings",
    "Vocab",
    "answer_once",
    "escape_markdown",
    "method_choices",
    "parse",
    "render",
    "segment_choices",
    "vocab",
]

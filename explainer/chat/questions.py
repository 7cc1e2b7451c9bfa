"""Every question the chat understands, registered in one place: its rules, its answer, whether it needs an image.

Adding a question is three pieces and two lines here:

1. a rule in :mod:`explainer.chat.intents` (``rule(message, vocab, details) -> fields or None``) and its name,
2. an answer in :mod:`explainer.chat.answers` (``answer(state, intent) -> Reply``) that fills
3. a template ``templates/<name>.j2``;

then one :class:`Question` in :data:`QUESTIONS` and the rule in :data:`RULES`, at the place where it should win
over the rules below it. ``tests/test_intents.py`` holds the phrasings every rule must keep understanding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from explainer.chat import answers as A
from explainer.chat import answers_next as N
from explainer.chat import intents as I
from explainer.chat.intents import Intent, Rule, Vocab, interpret
from explainer.chat.reply import Reply
from explainer.chat.session import SessionState

Answer = Callable[[SessionState, Intent], Reply]


@dataclass(frozen=True)
class Question:
    """One kind of question.

    Attributes
    ----------
    name : str
        The intent name (also the usual template name).
    answer : callable
        ``answer(state, intent) -> Reply``.
    needs_image : bool
        Asked before any image was uploaded, the question gets the "upload an image" reply instead.
    """

    name: str
    answer: Answer
    needs_image: bool = False


QUESTIONS: dict[str, Question] = {q.name: q for q in (
    Question(I.WHAT, A.answer_what, needs_image=True),
    Question(I.WHY, A.answer_why, needs_image=True),
    Question(I.CONFIDENCE, A.answer_confidence, needs_image=True),
    Question(I.CLASS, A.answer_class, needs_image=True),
    Question(I.REGION, A.answer_region, needs_image=True),
    Question(I.TRUST, A.answer_trust, needs_image=True),
    Question(I.COMPARE_CLASSES, A.answer_compare_classes, needs_image=True),
    Question(I.COMPARE_METHODS, A.answer_compare_methods, needs_image=True),
    Question(I.USE_METHOD, A.answer_use_method),
    Question(I.LAYERS, A.answer_layers, needs_image=True),
    Question(I.USE_LAYER, A.answer_use_layer),
    Question(I.TEACH, A.answer_teach),
    Question(I.HELP, A.answer_help),
    Question(I.MODEL, A.answer_model),
    Question(I.SETTING, A.answer_setting),
    Question(I.IMAGE, A.answer_image, needs_image=True),
    Question(I.EXPECTED, A.answer_expected, needs_image=True),
    Question(I.GREETING, A.answer_greeting),
    Question(I.CONTRAST, N.answer_contrast, needs_image=True),
    Question(I.AGAINST, N.answer_against, needs_image=True),
    Question(I.WHAT_IF, N.answer_what_if, needs_image=True),
    Question(I.LEGEND, N.answer_legend),
    Question(I.UNKNOWN, N.answer_unknown_closest),
)}

#: Every intent name, in the registry's order.
INTENTS: tuple[str, ...] = tuple(QUESTIONS)

#: Which rule recognises which question, tried from the top: the first rule that matches decides. A rule sits above
#: the rules whose words its messages also contain (the comment says which), so a message is read by its most
#: specific rule; a message no rule matches is UNKNOWN.
RULES: tuple[tuple[str, Rule], ...] = (
    (I.HELP, I.help_request),          # "what can I ask?": an exact request, whatever else it names
    (I.GREETING, I.greeting),          # short small talk only ("thanks, great")
    (I.WHAT_IF, I.what_if),            # "cover 10, 10, 60, 60": a box to cover, not where the evidence should be
    (I.EXPECTED, I.expected),          # a box or a place the evidence should be in, whatever else it names
    (I.LEGEND, I.legend),              # "what does the colormap mean": before the colormap setting and teaching
    (I.SETTING, I.setting),            # "use viridis", "opacity 30 %": before model/method "use ..." forms
    (I.MODEL, I.model),                # "switch to the shapes model"
    (I.CONTRAST, I.contrast),          # "why circle rather than square": two classes, before method and class rules
    (I.AGAINST, I.against),            # "what lowers the score": before confidence's "score" and class words
    (I.TEACH, I.teach),                # "what is Grad-CAM?" names a method but asks how it works
    (I.COMPARE_METHODS, I.compare_methods),  # two methods named: a comparison, not "use"
    (I.USE_METHOD, I.use_method),      # one method named
    (I.USE_LAYER, I.use_layer),        # a layer named, "deeper", "default layer"
    (I.LAYERS, I.layers),              # layers in general
    (I.TRUST, I.trust),                # "does the triangle map hold up": before class and region words
    (I.CLASS, I.class_by_rank),        # "why not the second guess?": one class, by rank
    (I.COMPARE_CLASSES, I.compare_classes),  # "compare with the second guess", "what else"
    (I.CLASS, I.class_strong),         # "why not X", "what about X"
    (I.CONFIDENCE, I.confidence),      # "how likely is square" keeps its class as the target
    (I.CLASS, I.class_weak),           # "is it X", "explain X" when X is a label
    (I.CLASS, I.class_unknown),        # "is this a dog?": X is no label, and the answer says so
    (I.REGION, I.region),              # "show the box for star"
    (I.WHY, I.why),                    # "why", "where", "heatmap": the broadest words of all
    (I.WHAT, I.what),                  # "what is it", "predictions"
    (I.IMAGE, I.image),                # only an image reference ("previous image")
    (I.CLASS, I.bare_label),           # a label alone
    (I.HELP, I.help_anywhere),         # "help" somewhere in an otherwise unknown message
)


def parse(text: str, vocab: Vocab | None = None) -> Intent:
    """Read one chat message with the registered rules (:data:`RULES`).

    Parameters
    ----------
    text : str
        The user's message (any length; only the start is read).
    vocab : Vocab, optional
        Labels, layers, models and colormaps the message may name.

    Returns
    -------
    Intent
        ``UNKNOWN`` when no rule matched.
    """
    return interpret(text, vocab, RULES)

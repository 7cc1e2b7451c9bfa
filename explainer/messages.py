"""Sentences the engine hands to people that are not error messages, in one small catalogue.

The chat's answers come from jinja2 templates (``templates/``); the engine has no template engine of its own, so the
few sentences it produces itself (why a model is the default) live here as ``str.format`` patterns: rewording one is
an edit to this table, not to the code that fills it in. Error messages stay with the errors (see ``errors.py``).
"""

from __future__ import annotations

MESSAGES: dict[str, str] = {
    "default_model.chosen": "{name} is the default: chosen by EXPLAINER_MODEL.",
    "default_model.cached": "{model} (ImageNet) is the default: its weights are in the Keras cache.",
    "default_model.download": "{model} (ImageNet) is the default: its weights will be downloaded on first use.",
    "default_model.offline": (
        "The bundled {fallback} model is the default because {model}'s ImageNet weights ({file}) are not in the "
        "Keras cache ({folder}) and downloads are off (EXPLAINER_OFFLINE)."
    ),
}


def message(key: str, **fields: object) -> str:
    """The catalogue's sentence ``key`` with ``fields`` filled in.

    Parameters
    ----------
    key : str
        A key of :data:`MESSAGES`.
    **fields
        The values its ``{placeholders}`` name; a missing one raises ``KeyError``.

    Returns
    -------
    str
        The sentence, plain text (the caller escapes it for Markdown or HTML).
    """
    return MESSAGES[key].format(**fields)

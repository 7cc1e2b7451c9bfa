"""Every environment variable the package reads, in one table, with one parser and one error message style.

No other module of ``explainer/`` touches ``os.environ`` (``tests/test_config.py`` checks the source): each asks
:func:`setting` for a variable of :data:`VARIABLES` and gets its parsed value, or its default when the variable is
unset or empty. A bad value raises :class:`~explainer.errors.ConfigError` naming the variable, what it takes and the
value it holds. The README's "Configuration" table is :func:`markdown_table` (a test keeps the two equal).

This module imports neither TensorFlow nor Keras: ``explainer/__init__.py`` calls :func:`prepare_tensorflow` before
either is imported.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explainer.errors import ConfigError
from explainer.prose import quote

__all__ = ["VARIABLES", "ConfigError", "Variable", "default", "exported", "markdown_table", "prepare_tensorflow",
           "setting"]

#: What each kind of variable takes, as the error message says it, and an example value for the message.
KINDS: dict[str, tuple[str, str | None]] = {
    "count": ("a positive whole number", None),
    "seconds": ("a positive number of seconds", None),
    "megabytes": ("a positive whole number of megabytes", None),
    "switch": ("1, true, yes or on, or 0, false, no or off", "1"),
    "text": ("text", None),
    "proxies": ("IP addresses or networks separated by commas, not *", "10.0.0.0/8,192.168.1.7"),
    "paths": (f"file paths separated by {os.pathsep!r}", None),
}

_ON = {"1", "true", "yes", "on"}
_OFF = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Variable:
    """One environment variable: how it is parsed, its default, and its line of the README.

    Attributes
    ----------
    name : str
        The variable's name, e.g. ``EXPLAINER_TURN_SECONDS``.
    kind : str
        One of :data:`KINDS`: ``count`` (positive int, ``_`` separators allowed), ``seconds`` (positive finite
        float), ``megabytes`` (positive int), ``switch`` (bool), ``text`` (str), ``proxies`` (validated
        comma-separated IP addresses or networks), ``paths`` (``os.pathsep``-separated, a tuple of ``Path``).
    default
        The value when the variable is unset or empty.
    help : str
        One sentence for the README.
    group : str
        The README table it is listed in.
    shown : str or None
        The default as the README shows it, when the value alone says little (e.g. "chosen at start-up").
    """

    name: str
    kind: str
    default: Any
    help: str
    group: str
    shown: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r} of {self.name}; one of {sorted(KINDS)}")

    def parse(self, raw: str | None) -> Any:
        """``raw`` (the variable's text, None when unset) as a value of this kind; unset or blank: the default.

        Raises
        ------
        ConfigError
            When ``raw`` is not a value of this kind.
        """
        text = (raw or "").strip()
        if not text:
            return self.default
        value = _PARSERS[self.kind](text)
        if value is None:
            raise ConfigError(self.refusal(text))
        return value

    def refusal(self, raw: str) -> str:
        """The one message of a bad value: the variable, what it takes (with an example), the value quoted."""
        takes, example = KINDS[self.kind]
        example = example or self.shown_default()
        return f"{self.name} must be {takes} (for example {example}); it is set to {quote(raw)}."

    def shown_default(self) -> str:
        """The default as written in the README and in messages."""
        if self.shown is not None:
            return self.shown
        value = self.default
        if value is None or value == "" or value == ():
            return "(none)"
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and value >= 10_000:
            return f"{value:_}"
        return str(value)


def _whole(text: str) -> int | None:
    try:
        value = int(text)  # int() takes "1_000" and refuses "1.5" and "1e6"
    except ValueError:
        return None
    return value if value > 0 else None


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 and math.isfinite(value) else None


def _switch(text: str) -> bool | None:
    word = text.lower()
    return True if word in _ON else False if word in _OFF else None


def _proxies(text: str) -> str | None:
    """Uvicorn's list of trusted proxies, each entry checked.

    ``*`` (trust every connection) is refused: uvicorn then takes the *first* ``X-Forwarded-For`` entry, which the
    client writes itself, so every visitor could name any address.
    """
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return None
    return ",".join(entries)


def _paths(text: str) -> tuple[Path, ...]:
    return tuple(Path(item.strip()).expanduser() for item in text.split(os.pathsep) if item.strip())


_PARSERS = {"count": _whole, "seconds": _seconds, "megabytes": _whole, "switch": _switch, "text": str,
            "proxies": _proxies, "paths": _paths}

_MODEL = "Model"
_SERVER = "Server limits"
_UPLOADS = "Uploaded models"
_AUDIT = "Audit"
_OUTSIDE = "Read from other tools (Keras, Hugging Face Hub, TensorFlow)"

_ALL = [
    Variable("EXPLAINER_MODEL", "text", "",
             "The model the app starts with: a built-in name, a `.keras`/`.h5` file or `hf://owner/repo`.", _MODEL,
             shown="mobilenet_v2 when its weights can be had, else shapes"),
    Variable("EXPLAINER_OFFLINE", "switch", False,
             "On: never download ImageNet weights; only Keras's cache is used.", _MODEL),
    Variable("EXPLAINER_TRUSTED_MODELS", "paths", (),
             "The operator's own model files allowed to run code (see \"Your own model\"), separated by `:` "
             "(`;` on Windows); never applies to uploads.", _MODEL),
    Variable("EXPLAINER_MAX_UPLOADED_MODELS", "count", 4,
             "Uploaded models in memory for all visitors together (least recently used unloaded first).", _SERVER),
    Variable("EXPLAINER_SESSION_TTL", "seconds", 3600.0,
             "Seconds an idle session (and its uploaded model) is kept.", _SERVER),
    Variable("EXPLAINER_TURN_SECONDS", "seconds", 20.0, "Time budget of one answer, in seconds.", _SERVER),
    Variable("EXPLAINER_QUEUE_PER_SESSION", "count", 3,
             "Unfinished requests one session may hold in the queue.", _SERVER),
    Variable("EXPLAINER_QUEUE_PER_CLIENT", "count", 24,
             "Unfinished requests one client address may hold (a classroom behind one router shares one).", _SERVER),
    Variable("EXPLAINER_UNREAD_SECONDS", "seconds", 10.0,
             "A request whose answer nobody listens for this long (joined, never read) is cancelled and stops "
             "counting against its session and address.", _SERVER),
    Variable("EXPLAINER_TRUSTED_PROXIES", "proxies", "",
             "Addresses or networks of your reverse proxies, comma-separated: only from these is `X-Forwarded-For` "
             "believed (uvicorn's `FORWARDED_ALLOW_IPS`, which the app sets); otherwise the client address is the "
             "connection's.", _SERVER),
    Variable("EXPLAINER_SHOWN_MESSAGES", "count", 36,
             "Chat messages kept on screen before older turns fold into one note.", _SERVER),
    Variable("EXPLAINER_MAX_DOWNLOAD_MB", "megabytes", 2048,
             "Size of a Hugging Face model a visitor names (asked of the Hub before downloading; its architecture "
             "is then checked against the uploaded-model limits).", _SERVER),
    Variable("EXPLAINER_MAX_IMAGE_PIXELS", "count", 40_000_000,
             "Pixels of one image, DICOM frame or painted layer (from its header, before decoding).", _SERVER),
    Variable("EXPLAINER_MAX_REQUEST_PIXELS", "count", 100_000_000,
             "Pixels one request decodes in all: a message's uploads, or a painting's layers together.", _SERVER),
    Variable("EXPLAINER_MAX_PAINTED_LAYERS", "count", 4, "Layers of a \"Where should it look?\" painting.", _SERVER),
    Variable("EXPLAINER_AUDIT_MAX_IMAGES", "count", 500,
             "Images of one audit in the Audit tab (the zip may unpack to 512 MB).", _SERVER),
    Variable("EXPLAINER_AUDIT_MAX_PIXELS", "count", 250_000_000,
             "Pixels the images and masks of one audit zip hold in all (from their headers, before decoding).",
             _SERVER),
    Variable("EXPLAINER_AUDIT_SECONDS", "seconds", 300.0,
             "Time of one audit in the Audit tab; the report then covers the images explained so far.", _SERVER),
    Variable("EXPLAINER_MAX_PARAMS", "count", 150_000_000,
             "Parameters of an uploaded model (VGG16, the largest zoo model, has 138 M).", _UPLOADS),
    Variable("EXPLAINER_MAX_INPUT_VALUES", "count", 2048 * 2048 * 3,
             "Input height × width × channels of an uploaded model.", _UPLOADS,
             shown="12_582_912 (2048×2048×3)"),
    Variable("EXPLAINER_MAX_ACTIVATION_MB", "megabytes", 1024,
             "Largest layer output for the 8 images the chat runs at once, float32 (VGG16 98 MB, EfficientNetB7 "
             "at 600×600 531 MB).", _UPLOADS),
    Variable("RAY_ADDRESS", "text", "",
             "The Ray cluster `--engine ray` connects to (`auto`, or `ray://host:10001`); unset: a local Ray.",
             _AUDIT),
    Variable("PYTHONPATH", "text", "",
             "Passed on to local Ray workers, after the folder that holds `explainer`.", _AUDIT),
    Variable("KERAS_HOME", "text", None,
             "Keras's folder; ImageNet weights are cached in its `models` folder.", _OUTSIDE,
             shown="~/.keras"),
    Variable("HF_HUB_OFFLINE", "switch", False,
             "On: the Hugging Face Hub is never asked; `hf://` models come from its local cache only.", _OUTSIDE),
    Variable("TF_CPP_MIN_LOG_LEVEL", "text", "3",
             "TensorFlow's C++ log level; the app sets 3 (errors only) unless it is set.", _OUTSIDE),
    Variable("KERAS_BACKEND", "text", "tensorflow",
             "Keras's backend; the app sets `tensorflow` (the only one it runs on) unless it is set.", _OUTSIDE),
]

#: Every environment variable the package reads, by name, in the README's order.
VARIABLES: dict[str, Variable] = {variable.name: variable for variable in _ALL}


def setting(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The parsed value of the environment variable ``name``, or its default when it is unset or empty.

    Parameters
    ----------
    name : str
        A name of :data:`VARIABLES`; any other is a programming error (``KeyError``).
    environ : mapping, optional
        The environment to read (default ``os.environ``, read at this call).

    Returns
    -------
    The value of the variable's kind (see :class:`Variable`).

    Raises
    ------
    ConfigError
        When the variable holds a value its kind refuses.
    """
    variable = VARIABLES[name]
    return variable.parse((os.environ if environ is None else environ).get(name))


def check_all(environ: Mapping[str, str] | None = None) -> None:
    """Read every variable once, so a bad value stops a server at start-up rather than at its first use.

    Raises
    ------
    ConfigError
        For the first variable (in :data:`VARIABLES` order) that holds a value its kind refuses.
    """
    for name in VARIABLES:
        setting(name, environ)


def default(name: str) -> Any:
    """The default value of the variable ``name`` (for the dataclasses whose fields the variables set)."""
    return VARIABLES[name].default


@contextlib.contextmanager
def exported(name: str, value: str) -> Iterator[None]:
    """Set the environment variable ``name`` to ``value`` for the ``with`` block, then put back what was there.

    For a library that reads its setting from the environment at a moment we choose (uvicorn's
    ``FORWARDED_ALLOW_IPS`` while the server starts).
    """
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def prepare_tensorflow() -> None:
    """Before TensorFlow is imported: keep its C++ start-up log quiet and make Keras run on it (unless set)."""
    for name in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND"):
        os.environ.setdefault(name, VARIABLES[name].default)


def markdown_table() -> str:
    """The README's table of every variable: one table a group, each row the variable, its default and meaning."""
    blocks = []
    for group in dict.fromkeys(variable.group for variable in _ALL):
        rows = [f"**{group}**", "", "| variable | default | meaning |", "|---|---|---|"]
        rows += [f"| `{v.name}` | {v.shown_default()} | {v.help} |" for v in _ALL if v.group == group]
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks) + "\n"

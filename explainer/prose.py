"""Prose from jinja2 templates, with every interpolated string escaped for Markdown and HTML.

Templates live in ``templates/`` at the repository root, one file per kind of answer, and one environment
(:func:`environment`) renders them all. Any ``{{ value }}`` that is a plain string is escaped for where the
template's text is shown: in a chat template (``*.j2``) Markdown punctuation is backslashed, ``<``/``>``/``&`` become
HTML entities and line breaks are flattened, so a question like ``<img onerror=...>`` or a label like ``**bold**``
from an uploaded model shows as typed; in an HTML page (``*.html.j2``, the audit report) it is HTML-escaped only, as
a browser shows it literally without Markdown. Numbers go through the filters below, which return already-safe text
and print a missing value (None) as "–".
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

import jinja2
import numpy as np
from markupsafe import Markup, escape

#: The most characters of a visitor's text an error message quotes (a 100,000-character "model id" comes back as
#: its first 80, not as itself).
QUOTE_CHARS = 80
_CONTROL = {"Cc", "Cf", "Cs", "Co", "Cn"}  # control, format (zero-width, bidi overrides), surrogates, unassigned

#: The templates: inside the installed package (the wheel carries the repository's templates/ as
#: explainer/templates), else the repository's own folder beside the package.
TEMPLATE_DIR = next(folder for folder in (Path(__file__).resolve().parent / "templates",
                                          Path(__file__).resolve().parents[1] / "templates") if folder.is_dir())

# Backslash-escaping any ASCII punctuation is valid CommonMark; these are the characters that start emphasis,
# code, links, headings, lists, tables, strikethrough, LaTeX ($) or autolinks (: and .).
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$:])")
_HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
#: How a filter prints a missing number (an audit with no labelled image has no accuracy).
MISSING = Markup("–")
#: The name ending of a template rendered as an HTML page (HTML escaping only, no Markdown).
HTML_SUFFIX = ".html.j2"


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` as one line: control and bidi-override characters dropped, whitespace collapsed, cut at ``limit``.

    Emoji and other printable Unicode are kept (the zero-width joiner of composed emoji too). A cut ends in "…".
    """
    text = "".join(" " if ch in "\r\n\t" else ch for ch in str(text))
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _CONTROL or ch == "\u200d")
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)].rstrip() + "…"
    return text


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """A visitor's text as a message quotes it: in single quotes, on one line, at most ``limit`` characters.

    The one way every error message echoes what a visitor typed or sent (a model id, a file or folder name, a
    menu value), so no message grows with its input and none carries a line break or a control character. The
    result is plain text: whoever shows it as Markdown or HTML escapes it (the chat's templates, the app's pop-ups).
    """
    return f"'{one_line(value, limit)}'"


def escape_markdown(value: object, limit: int | None = None) -> Markup:
    """``value`` as text that renders literally in Markdown and HTML (see the module docstring)."""
    if isinstance(value, Markup):
        return value
    text = one_line(str(value), limit)
    text = "".join(_HTML_ENTITIES.get(ch, ch) for ch in text)
    return Markup(_MARKDOWN_SPECIALS.sub(r"\\\1", text))


def _escaper(template: str | None) -> Callable[[object], Markup]:
    """How a string is escaped in ``template``: HTML only for an HTML page, Markdown and HTML for the chat's."""
    return escape if template is not None and template.endswith(HTML_SUFFIX) else escape_markdown


def _show(value: object, escaper: Callable[[object], Markup]) -> Markup:
    """One ``{{ ... }}`` value as text: None as nothing, booleans as yes/no, numbers briefly, strings escaped."""
    if value is None:
        return Markup("")
    if isinstance(value, bool):
        return Markup("yes" if value else "no")
    if isinstance(value, (int, np.integer)):
        return Markup(str(int(value)))
    if isinstance(value, (float, np.floating)):
        return Markup(f"{float(value):.3g}")
    return escaper(value)


@jinja2.pass_context
def _finalize(context: jinja2.runtime.Context, value: object) -> Markup:
    """Applied by jinja2 to every ``{{ ... }}``: :func:`_show` with the escaping of the template being rendered.

    The result is always :class:`~markupsafe.Markup`, so jinja2's own (HTML-only) autoescaping leaves it alone,
    while macro output, already finalized inside the macro, is Markup too and is not escaped twice.
    """
    return _show(value, _escaper(context.name))


@jinja2.pass_context
def join(context: jinja2.runtime.Context, items: object, separator: str = ", ") -> Markup:
    """jinja2's ``join`` with each item escaped as the template escapes (the built-in one escapes for HTML only)."""
    escaper = _escaper(context.name)
    return Markup(separator).join(_show(item, escaper) for item in items)


def percent(value: float | None) -> Markup:
    """A probability or fraction in [0, 1] as a percentage that keeps small and large values readable ("–" for
    None)."""
    if value is None:
        return MISSING
    pct = 100.0 * float(value)
    if pct != 0 and abs(pct) < 0.1:
        return Markup("&lt; 0.1 %" if pct > 0 else "&gt; −0.1 %")
    if 99.9 < pct < 100.0:
        return Markup("&gt; 99.9 %")
    digits = 1 if abs(pct) < 10 else 0
    return Markup(f"{pct:.{digits}f} %".replace("-", "−"))


def _points_text(value: float) -> tuple[int, str]:
    """A probability difference as shown in percentage points: its sign as displayed (0 when it rounds to zero)
    and its magnitude (one decimal below 10 points)."""
    pts = 100.0 * float(value)
    text = f"{abs(pts):.{1 if abs(pts) < 10 else 0}f}"
    return (0 if text.strip("0.") == "" else (1 if pts > 0 else -1)), text


def points(value: float, signed: bool = False) -> Markup:
    """A difference of probabilities in percentage points: ``42 points``, or with ``signed`` ``−42 points``."""
    sign, text = _points_text(value)
    if not signed or sign == 0:
        return Markup(f"{text} points")
    return Markup(f"{'+' if sign > 0 else '−'}{text} points")


def sign(value: float) -> int:
    """1, −1 or 0: the sign of a probability difference as :func:`points` shows it, so a template's words ("raises",
    "lowers", "unchanged") always agree with the number printed next to them."""
    return _points_text(value)[0]


def number(value: float | None, digits: int = 2) -> Markup:
    """A float with ``digits`` decimals (minus sign typographic; "–" for None)."""
    if value is None:
        return MISSING
    return Markup(f"{float(value):.{digits}f}".replace("-", "−"))


def point(value: tuple[int, int]) -> Markup:
    """An ``(x, y)`` pixel position."""
    x, y = value
    return Markup(f"({int(x)}, {int(y)})")


def ratio(value: float) -> Markup:
    """How many times larger, readable: ``3.2×``, ``45×``, ``over 1000×``."""
    value = float(value)
    if value >= 1000:
        return Markup("over 1000×")
    return Markup(f"{value:.1f}×" if value < 10 else f"{value:.0f}×")


def plural(count: int, word: str, many: str | None = None) -> Markup:
    """``1 spot`` / ``3 spots``."""
    count = int(count)
    return Markup(f"{count} {word if count == 1 else (many or word + 's')}")


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one jinja2 environment of the chat's answers and the audit report (templates compiled once per process)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        # _finalize escapes for the template's kind (Markdown and HTML, or HTML) and returns Markup; autoescape then
        # only marks macro output as already safe. Chat templates must not build strings with "~" (that would
        # HTML-escape only): use join/loops.
        autoescape=True,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(pct=percent, points=points, sign=sign, num=number, xy=point, times=ratio, plural=plural,
                       md=escape_markdown, join=join)
    return env


def render(template: str, **context: object) -> str:
    """Render ``templates/<template>.j2`` and tidy blank lines (``report.html`` renders the HTML page
    ``report.html.j2``, escaped for HTML)."""
    text = environment().get_template(f"{template}.j2").render(**context)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()

"""Matching what a user types to a class label: exact, by words, then fuzzily ("tabby" → "tabby cat")."""

from __future__ import annotations

import difflib
import functools
import re

from explainer.errors import AmbiguousClassError, ClassError

_FUZZY_CUTOFF = 0.8  # similarity a misspelling needs ("tabbby" ~ "tabby": 0.91; "dog" ~ "hog": 0.67)


def normalize(text: str) -> str:
    """Lower-case, underscores and punctuation to spaces, spaces collapsed."""
    return " ".join(re.sub(r"[^\w]+|_", " ", str(text).lower()).split())


def match_label(labels: list[str], query: str | int) -> int:
    """The index of the label ``query`` names.

    Parameters
    ----------
    labels : list of str
        The model's class names.
    query : str or int
        A class index (``3`` or ``"3"``), a label in any case, some of its words, or a close misspelling.

    Raises
    ------
    AmbiguousClassError
        When several labels fit equally well; ``err.candidates`` lists them.
    ClassError
        When nothing fits; ``err.candidates`` holds the closest labels, if any.
    """
    if isinstance(query, (int,)) or (isinstance(query, str) and query.strip().isdigit()):
        index = int(query)
        if 0 <= index < len(labels):
            return index
        raise ClassError(
            f"Class index {index} is out of range: this model has {len(labels)} classes (0–{len(labels) - 1})."
        )
    wanted = normalize(query)
    if not wanted:
        raise ClassError("Which class? The class name was empty.")
    names = [normalize(label) for label in labels]
    exact = [i for i, name in enumerate(names) if name == wanted]
    if exact:
        return exact[0]
    by_words = _word_matches(names, wanted)
    if len(by_words) == 1:
        return by_words[0]
    if by_words:
        raise AmbiguousClassError(
            f"{query!r} could mean several classes: {_listing(labels, by_words)}.",
            [labels[i] for i in by_words],
        )
    return _fuzzy(labels, names, wanted, query)


def _word_matches(names: list[str], wanted: str) -> list[int]:
    """Labels containing every word of the query; whole-word hits beat prefix hits ("cat" vs "catamaran")."""
    words = wanted.split()
    whole = [i for i, name in enumerate(names) if all(w in name.split() for w in words)]
    if whole:
        return whole
    return [i for i, name in enumerate(names) if all(any(p.startswith(w) for p in name.split()) for w in words)]


def _fuzzy(labels: list[str], names: list[str], wanted: str, query: str) -> int:
    scores = dict.fromkeys(range(len(names)), 0.0)
    for i in _shortlist(names, wanted):  # the full comparison is slow over 1,000 labels
        scores[i] = _similarity(wanted, names[i])
    ranked = sorted(scores, key=lambda i: -scores[i])
    best = ranked[0] if ranked else None
    if best is not None and scores[best] >= _FUZZY_CUTOFF:
        ties = [i for i in ranked if scores[i] >= scores[best] - 0.02]
        if len(ties) == 1:
            return best
        raise AmbiguousClassError(
            f"{query!r} could mean several classes: {_listing(labels, ties[:6])}.", [labels[i] for i in ties[:6]]
        )
    close = [labels[i] for i in ranked[:3] if scores[i] >= 0.5]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ClassError(f"This model has no class called {query!r}.{hint}", close)


def _shortlist(names: list[str], wanted: str, size: int = 12) -> set[int]:
    """Labels with a whole name or word run close to the query, by difflib's cheap upper bounds first."""
    owners = _spans(tuple(names), max(1, len(wanted.split())))
    close = difflib.get_close_matches(wanted, list(owners), n=size, cutoff=0.5)
    return {i for span in close for i in owners[span]}


@functools.lru_cache(maxsize=16)
def _spans(names: tuple[str, ...], n: int) -> dict[str, list[int]]:
    """Every label and every run of ``n`` words in it, with the labels it comes from."""
    owners: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        parts = name.split()
        for span in {name, *(" ".join(parts[j : j + n]) for j in range(max(1, len(parts) - n + 1)))}:
            owners.setdefault(span, []).append(i)
    return owners


def _similarity(wanted: str, name: str) -> float:
    """Best ratio of the query against the whole label or any run of as many words as the query has."""
    parts = name.split()
    n = max(1, len(wanted.split()))
    spans = [" ".join(parts[i : i + n]) for i in range(max(1, len(parts) - n + 1))]
    return max(difflib.SequenceMatcher(None, wanted, s).ratio() for s in [name, *spans])


def _listing(labels: list[str], indices: list[int], limit: int = 6) -> str:
    shown = ", ".join(repr(labels[i]) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")

"""What the chat answers: Markdown text, pictures with captions, suggested follow-ups and machine-readable data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Reply:
    """One answer of the chat bot.

    Attributes
    ----------
    markdown : str
        The answer as Markdown. Every user-supplied string in it (the question, class labels of an uploaded model,
        file names) is already escaped for Markdown and HTML.
    images : list of (numpy.ndarray, str)
        Pictures to show after the text, in order: RGB ``uint8`` H×W×3 arrays, each with a short plain-text
        caption (not escaped: show it as text, never as HTML).
    suggestions : list of str
        Follow-up questions the user may click; each is understood by the intent matcher.
    data : dict
        JSON-serialisable facts behind the answer (intent, model, predictions, region, measured numbers).
    intent : str
        Name of the intent that produced the reply (``"why"``, ``"no_image"``, ``"error"``, ...).
    error : bool
        True when the reply reports a problem (bad image, unknown class, internal error) instead of an answer.
    """

    markdown: str
    images: list[tuple[np.ndarray, str]] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    intent: str = ""
    error: bool = False

    @property
    def image(self) -> np.ndarray | None:
        """The first picture, or None (the one to show where only one fits, e.g. an API output)."""
        return self.images[0][0] if self.images else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form without the pixel data (captions and sizes of the images only)."""
        return {
            "markdown": self.markdown,
            "images": [{"caption": text, "width": int(img.shape[1]), "height": int(img.shape[0])}
                       for img, text in self.images],
            "suggestions": list(self.suggestions),
            "data": self.data,
            "intent": self.intent,
            "error": self.error,
        }

"""Segmentation methods, by name: from a map (and the image) to the object's mask.

Each method is one small module overriding :meth:`BaseSegmenter.get_mask`. :data:`DEFAULT_SEGMENT` was chosen by
mask IoU on held-out demo images (``benchmarks/bench_segment.py``; the table: README, "Segmentation").
"""

from __future__ import annotations

from explainer.errors import ExplainerError
from explainer.segment.base import BaseSegmenter, SegmentInput, largest_component
from explainer.segment.grabcut import GrabCutSegmenter, SoftGrabCutSegmenter
from explainer.segment.otsu import OtsuSegmenter
from explainer.segment.threshold import ThresholdSegmenter

#: Every method by its key; adding one is a module with its facts (``name``, ``display_name``, ``aliases``,
#: ``needs_image``, ``summary``) plus its class here.
SEGMENTERS: dict[str, type[BaseSegmenter]] = {
    cls.name: cls for cls in (ThresholdSegmenter, OtsuSegmenter, GrabCutSegmenter, SoftGrabCutSegmenter)
}
#: The method behind :attr:`explainer.region.Region.mask` (best mask IoU on held-out demo images).
DEFAULT_SEGMENT = "softgrabcut"
#: Below this probability a class gets no segmented mask: the model thinks it absent (CheXlocalize's cutoff).
#: Multi-label heads use their decision threshold instead.
PROBABILITY_CUTOFF = 0.05

__all__ = ["DEFAULT_SEGMENT", "PROBABILITY_CUTOFF", "SEGMENTERS", "BaseSegmenter", "SegmentInput", "get_segmenter",
           "largest_component", "no_mask_reason", "segment_key"]


def _squash(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch not in " -_'’")


def segment_key(name: str) -> str:
    """Canonical method name from any spelling its class declares ("Grab-Cut" → "grabcut"); unknown: squashed."""
    key = _squash(name)
    if key in SEGMENTERS:
        return key
    return next((cls.name for cls in SEGMENTERS.values()
                 if key in {_squash(s) for s in (cls.name, cls.display_name, *cls.aliases)}), key)


def get_segmenter(name: str | BaseSegmenter | None = None) -> BaseSegmenter:
    """An instance of the method called ``name`` (None: :data:`DEFAULT_SEGMENT`); an instance is returned as is.

    Raises
    ------
    ExplainerError
        For an unknown name, in one line naming the choices.
    """
    if isinstance(name, BaseSegmenter):
        return name
    key = segment_key(DEFAULT_SEGMENT if name is None else name)
    if key not in SEGMENTERS:
        raise ExplainerError(f"Unknown segmentation method {name!r}; choose one of {', '.join(SEGMENTERS)}.")
    return SEGMENTERS[key]()


def no_mask_reason(label: str, probability: float, head: str, decision_threshold: float) -> str | None:
    """Why a class gets no segmented mask, or None when it gets one.

    A class the model thinks absent has no region to segment: below :data:`PROBABILITY_CUTOFF`, or for a
    multi-label head below its decision threshold. Its map still shows where the evidence for it would be.
    """
    cutoff = decision_threshold if head == "multilabel" else PROBABILITY_CUTOFF
    if probability >= cutoff:
        return None
    return (f"the model gives {label} {probability:.1%} (below the {cutoff:.0%} cutoff): there is no {label} region "
            f"to segment; the map shows where its evidence for {label} would be")

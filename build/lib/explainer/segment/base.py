"""The base of every segmentation method: one hook to override, like :class:`explainer.cams.BaseCAM`.

A method receives a :class:`SegmentInput` (the image, the upsampled map and the thresholded heat region) and
returns a boolean mask of the object. Keeping the largest connected component, and falling back to the heat region
when a method finds nothing, happen here, once, for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, overload

import cv2
import numpy as np

__all__ = ["BaseSegmenter", "SegmentInput", "largest_component"]


@dataclass
class SegmentInput:
    """Everything a method may use, for one image.

    Attributes
    ----------
    image : numpy.ndarray or None
        RGB ``uint8`` H×W×3 (grey H×W or H×W×1 is accepted by the methods that read colour), or None when only the
        map is known.
    heatmap : numpy.ndarray
        float32 H×W map in [0, 1] (peak 1), at the image's resolution.
    heat_mask : numpy.ndarray
        Boolean H×W: the largest component of the map at ``threshold`` × its maximum.
    threshold : float
        The localization threshold behind ``heat_mask``.
    """

    image: np.ndarray | None
    heatmap: np.ndarray
    heat_mask: np.ndarray
    threshold: float


class BaseSegmenter:
    """Override :meth:`get_mask`; the facts below are what the CLI, the chat and the docs read."""

    name: ClassVar[str] = "base"
    #: How a person writes the method's name.
    display_name: ClassVar[str] = "This method"
    #: Other spellings; case, spaces, dashes and underscores never matter (:func:`~explainer.segment.segment_key`).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: True when the method reads the image's pixels, not only the map.
    needs_image: ClassVar[bool] = False
    #: One line on what the method does (help texts and the chat).
    summary: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "aliases" not in cls.__dict__:  # spellings name one class, never its parent's
            cls.aliases = ()

    def get_mask(self, inputs: SegmentInput) -> np.ndarray:
        """Boolean H×W mask of the object (any number of components: the largest is kept)."""
        raise NotImplementedError

    def __call__(self, inputs: SegmentInput) -> np.ndarray:
        """The largest component of :meth:`get_mask`; the heat region when the map is empty or nothing is found."""
        if not inputs.heat_mask.any():
            return inputs.heat_mask.copy()
        mask = largest_component(self.get_mask(inputs))
        return mask if mask.any() else inputs.heat_mask.copy()


@overload
def largest_component(mask: np.ndarray, areas: Literal[False] = False) -> np.ndarray: ...


@overload
def largest_component(mask: np.ndarray, areas: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...


def largest_component(mask: np.ndarray, areas: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The largest 8-connected component of a boolean mask (an empty mask stays empty).

    With ``areas``, also the pixel areas of all its components (int array, empty for an empty mask): how
    :class:`explainer.region.Region` counts the separate spots of a map.
    """
    binary = np.asarray(mask, np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    largest = binary.astype(bool) if count <= 1 else labels == 1 + int(np.argmax(sizes))
    return (largest, sizes) if areas else largest

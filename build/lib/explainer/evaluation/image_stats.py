"""Cheap per-image statistics: the training set's reference (in a model's sidecar) and the out-of-distribution check.

The demo training writes these statistics of its images into the sidecar; the chat compares a visitor's image with
them. Both must compute them the same way, so they live here, in the engine, not in the demo package.
"""

from __future__ import annotations

import numpy as np


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Cheap per-image statistics used for the out-of-distribution reference.

    Parameters
    ----------
    images : np.ndarray
        ``(n, H, W, 3)`` uint8 RGB, already resized to the model's input size.

    Returns
    -------
    dict
        ``channel_mean`` (n, 3) and ``channel_std`` (n, 3) of pixel values in 0..255,
        ``edge_density`` (n,): mean absolute difference between horizontally and
        vertically neighbouring grey pixels (0..255), a proxy for clutter and texture.
    """
    x = images.astype(np.float32)
    grey = x.mean(axis=-1)
    dx = np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))
    dy = np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2))
    return {
        "channel_mean": x.mean(axis=(1, 2)),
        "channel_std": x.std(axis=(1, 2)),
        "edge_density": (dx + dy) / 2,
    }

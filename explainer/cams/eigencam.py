"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): the activations projected on their first principal component.

Gradient-free and class-agnostic: the map is the same whichever class is asked about, and no backward pass runs.
The activations are centred per channel before the SVD (as pytorch-grad-cam does; without it the first component
is mostly the mean), and the component's sign is chosen so the map correlates positively with the channel sum:
an SVD's sign is arbitrary, and an upside-down map would point at the background.
"""

import numpy as np

from .base import BaseCAM, CamBatch


def first_component(features: np.ndarray) -> np.ndarray:
    """Project B×h×w×K features on each image's first principal component over positions, sign-fixed → B×h×w."""
    b, h, w, k = features.shape
    rows = features.reshape(b, h * w, k).astype(np.float64)
    centred = rows - rows.mean(axis=1, keepdims=True)
    _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
    projection = np.einsum("bpk,bk->bp", centred, vt[:, 0, :])
    total = rows.sum(axis=2)
    total = total - total.mean(axis=1, keepdims=True)
    sign = np.where(np.einsum("bp,bp->b", projection, total) < 0, -1.0, 1.0)
    return (projection * sign[:, None]).reshape(b, h, w).astype(np.float32)


class EigenCAM(BaseCAM):
    name = "eigencam"
    needs_gradients = False

    def get_cam_image(self, batch: CamBatch) -> tuple[np.ndarray, None]:
        return first_component(batch.activations), None

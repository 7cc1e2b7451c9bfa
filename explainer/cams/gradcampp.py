"""Grad-CAM++ (Chattopadhay et al., WACV 2018) in the closed form of the paper's Eq. 19.

With the exponential score exp(y^c), the higher derivatives reduce to powers of the first one, so
α = g² / (2g² + Σ_ab A_ab · g³) and the channel weight is Σ_ij α · ReLU(g). ``g`` is the gradient of the target's
logit, as in pytorch-grad-cam's ``grad_cam_plusplus.py``.
"""

import numpy as np

from .base import BaseCAM, CamBatch

_EPS = 1e-7


class GradCAMPlusPlus(BaseCAM):
    name = "gradcam++"

    def get_cam_weights(self, batch: CamBatch) -> np.ndarray:
        grads = batch.gradients.astype(np.float64)
        squared = grads**2
        activation_sums = batch.activations.sum(axis=(1, 2), keepdims=True)  # B×1×1×K
        denominator = 2 * squared + activation_sums * grads**3
        alpha = np.where(grads != 0, squared / np.where(denominator != 0, denominator, _EPS), 0.0)
        return (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2)).astype(np.float32)

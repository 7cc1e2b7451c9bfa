"""Grad-CAM++ (Chattopadhay et al., WACV 2018) in the closed form of the paper's Eq. 19.

With the exponential score exp(y^c), the higher derivatives reduce to powers of the first one, so
α = g² / (2g² + Σ_ab A_ab · g³) and the channel weight is Σ_ij α · ReLU(g). ``g`` is the gradient of the target's
logit, as in pytorch-grad-cam's ``grad_cam_plusplus.py``.
"""

import numpy as np

from explainer.cams.base import BaseCAM, CamBatch


class GradCAMPlusPlus(BaseCAM):
    name = "gradcam++"
    display_name = "Grad-CAM++"
    aliases = ("Grad-CAM plus plus", "Grad-CAM pp", "Grad-CAM plus")

    def get_cam_weights(self, batch: CamBatch) -> np.ndarray:
        grads = batch.gradients
        squared = grads * grads
        activation_sums = batch.activations.sum(axis=(1, 2), keepdims=True)  # B×1×1×K
        denominator = 2 * squared + activation_sums * squared * grads
        # Where the denominator vanishes, g is 0 (α = 0) or negative (ReLU(g) = 0): either way no contribution.
        alpha = squared / np.where(denominator != 0, denominator, 1.0)
        return (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2))

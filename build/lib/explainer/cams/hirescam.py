"""HiResCAM (Draelos & Carin, 2020): the gradient times the activation at every position, summed over channels.

No spatial averaging of the gradient, so the map shows exactly which positions raised the score. For a
Conv → GAP → Dense head the gradient is constant over space and HiResCAM equals Grad-CAM.
"""

import numpy as np

from explainer.cams.base import BaseCAM, CamBatch


class HiResCAM(BaseCAM):
    name = "hirescam"
    display_name = "HiResCAM"
    aliases = ("high-res-CAM", "high-resolution-CAM", "hi-resolution-CAM")

    def gradient_term(self, gradients: np.ndarray) -> np.ndarray:
        """What multiplies the activations position by position (the raw gradient here)."""
        return gradients

    def get_contributions(self, batch: CamBatch) -> tuple[np.ndarray, None]:
        return self.gradient_term(batch.gradients) * batch.activations, None

    def get_cam_image(self, batch: CamBatch) -> tuple[np.ndarray, None]:
        contributions, _ = self.get_contributions(batch)
        return contributions.sum(axis=-1), None  # position-wise: there are no channel weights

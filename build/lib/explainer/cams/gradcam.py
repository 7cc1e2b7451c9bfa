"""Grad-CAM (Selvaraju et al., ICCV 2017): channel weight = spatial mean of the logit's gradient."""

import numpy as np

from explainer.cams.base import BaseCAM, CamBatch


class GradCAM(BaseCAM):
    name = "gradcam"
    display_name = "Grad-CAM"

    def get_cam_weights(self, batch: CamBatch) -> np.ndarray:
        return batch.gradients.mean(axis=(1, 2))  # per image: never averaged over the batch

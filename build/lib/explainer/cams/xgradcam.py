"""XGrad-CAM (Fu et al., BMVC 2020): channel weight = Σ_ij (A_ij / Σ_ab A_ab) · g_ij, an activation-weighted mean."""

import numpy as np

from explainer.cams.base import BaseCAM, CamBatch

_EPS = 1e-7


class XGradCAM(BaseCAM):
    name = "xgradcam"
    display_name = "XGrad-CAM"
    aliases = ("XGrad",)

    def get_cam_weights(self, batch: CamBatch) -> np.ndarray:
        acts = batch.activations
        sums = acts.sum(axis=(1, 2))  # B×K
        return np.einsum("bhwk,bhwk->bk", acts, batch.gradients) / (sums + _EPS)

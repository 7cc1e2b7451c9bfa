"""LayerCAM (Jiang et al., IEEE TIP 2021): ReLU(gradient) times activation at every position, summed over channels.

Only positive gradients count, position by position, which keeps fine detail and makes it usable at early layers.
"""

import numpy as np

from explainer.cams.hirescam import HiResCAM


class LayerCAM(HiResCAM):
    name = "layercam"
    display_name = "LayerCAM"

    def gradient_term(self, gradients: np.ndarray) -> np.ndarray:
        return np.maximum(gradients, 0.0)

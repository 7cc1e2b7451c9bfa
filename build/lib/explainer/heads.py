"""Output heads: how a model's scores become the probabilities a user reads.

The engine always works on the scores *before* the model's last activation (the logits; see
:mod:`explainer.graph`). Turning them back into the model's own probabilities depends on the head:

* ``softmax``: one probability distribution over the classes (softmax of the logits);
* ``sigmoid``: one sigmoid unit, read as two classes "not X" / "X" (the engine replays it as the logits
  ``[-z/2, z/2]``, whose softmax is ``[1 - σ(z), σ(z)]``);
* ``multilabel``: several sigmoid units, each label its own yes/no probability (no renormalisation);
* ``linear``: several units with no activation, read as the logits of a softmax.

:func:`probabilities` is the one place where that happens: every caller that turns logits into probabilities
goes through it.
"""

from __future__ import annotations

import numpy as np

HEADS = ("softmax", "sigmoid", "multilabel", "linear")

#: Probability at or above which a label of a multi-label model counts as present.
DEFAULT_DECISION_THRESHOLD = 0.5


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64 (stable for large logits), returned as float32."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (no overflow warning for large |z|), returned as float32."""
    z = np.asarray(logits, np.float64)
    e = np.exp(-np.abs(z))  # in (0, 1]: never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def probabilities(logits: np.ndarray, head: str = "softmax") -> np.ndarray:
    """The model's own probabilities from its logits (last axis = classes).

    Parameters
    ----------
    logits : numpy.ndarray
        Scores before the model's last activation, as the engine's ``forward`` returns them.
    head : {"softmax", "sigmoid", "multilabel", "linear"}
        The model's head (:attr:`explainer.models.loading.ModelInfo.head`).

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``logits``: a softmax for ``softmax``, ``sigmoid`` (two replayed classes) and
        ``linear``; an independent sigmoid per label for ``multilabel``.
    """
    if head == "multilabel":
        return sigmoid(logits)
    if head in HEADS:
        return softmax(logits)
    raise ValueError(f"Unknown head {head!r}; expected one of {', '.join(HEADS)}.")

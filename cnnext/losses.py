"""Losses for ``Sequential.fit``: a loss maps (outputs, labels) to (mean loss, gradient).

A loss also says how the network's raw outputs become what ``predict``
returns (probabilities for softmax cross-entropy).  ``get(name)`` is the only
way a checkpoint or ``fit(loss=...)`` picks one: by name, from this table.
"""

from . import functional as F
from ._typing import ArrayLike, FloatArray

__all__ = ["SoftmaxCrossEntropy", "get"]


class SoftmaxCrossEntropy:
    """SoftmaxCrossEntropy()

    Mean cross-entropy of softmax(logits) against integer class labels.
    ``predict`` returns softmax(logits).
    """

    name = "softmax_cross_entropy"

    def __call__(self, logits: FloatArray, labels: ArrayLike) -> tuple[float, FloatArray]:
        """Mean loss (a float) and its gradient with respect to ``logits``."""
        return F.softmax_cross_entropy(logits, labels)

    def predict(self, logits: FloatArray) -> FloatArray:
        """Class probabilities, (N, classes)."""
        return F.softmax(logits)

    def __repr__(self):
        return f"{type(self).__name__}()"


LOSSES = {SoftmaxCrossEntropy.name: SoftmaxCrossEntropy}


def get(loss: "str | SoftmaxCrossEntropy") -> SoftmaxCrossEntropy:
    """get(loss)

    The loss object for a name in ``LOSSES`` (or ``loss`` itself when it is
    already one of them).
    """
    if isinstance(loss, tuple(LOSSES.values())):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ValueError(f"unknown loss {loss!r}; available: {sorted(LOSSES)}")

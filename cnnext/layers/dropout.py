"""Dropout: inverted dropout in training mode, the identity in evaluation mode."""

import numpy as np

from .. import functional as F
from .._functional.dropout import dropout_parameters
from .base import Layer, random_generator

_KEY_LIMIT = 2**64


class Dropout(Layer):
    """Dropout(p=0.5, seed=None)

    In training mode each element is zeroed with probability ``p`` and the
    others are scaled by 1 / (1 - p) (PyTorch's ``nn.Dropout``); in
    evaluation mode the input passes unchanged.  Each training forward pass
    draws a new mask key from the layer's generator, so a layer built with
    the same ``seed`` drops the same elements in the same passes; the mask
    is recomputed from the key in backward, not stored.

    Parameters
    ----------
    p : float in [0, 1]
        Probability of dropping an element.
    seed : None, int >= 0 or numpy.random.Generator
        Source of the mask keys.
    """

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        dropout_parameters("Dropout", p, 0)  # refuses a bad p with the layer's name
        self.p = float(p)
        self._rng = random_generator("Dropout", seed)

    def config(self):
        return {"p": self.p}

    def __repr__(self):
        return "Dropout()" if self.p == 0.5 else f"Dropout(p={self.p!r})"

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, reuse):
        if not self.training or self.p == 0:
            self._cache = (x.shape, x.dtype, None)
            return x
        key = int(self._rng.integers(_KEY_LIMIT, dtype=np.uint64))
        self._cache = (x.shape, x.dtype, key)
        return F.dropout(x, self.p, key, out=self._output("y", x.shape, x.dtype, reuse))

    def _backward(self, gy, need_input_grad, reuse):
        if not need_input_grad:
            return None
        key = self._cache[2]
        if key is None:
            return gy
        return F.dropout_backward(gy, self.p, key,
                                  out=self._output("gx", gy.shape, gy.dtype, reuse))

    def _build_steps(self, b, x):
        # The plan is valid while the mode and p are.
        b.checks.append((self.__dict__, "training", self.training))
        b.checks.append((self.__dict__, "p", self.p))
        if not self.training or self.p == 0:
            # The identity: the next layer reads this layer's input buffer, and
            # its gradient is that buffer's.
            return x
        # The mask keys of a run of passes, drawn from the layer's generator
        # before the run as the layer-by-layer path draws them (b.keys).
        b.checks.append((self.__dict__, "_rng", self._rng))
        keys, index = b.keys(self._rng)
        _, threshold, scale = dropout_parameters("Dropout", self.p, 0)
        y = b.buffer(x.shape)
        b.forward("dropout", (x, y, keys, index), (x.size, threshold, 1), (scale,))
        if b.gradients:
            gx = b.gradient(x)
            if gx is not None:
                b.backward("dropout", (b.gradient(y), gx, keys, index), (x.size, threshold, 0),
                           (scale,))
        return y

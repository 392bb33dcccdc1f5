"""Flatten: (N, d1, d2, ...) -> (N, d1 * d2 * ...), in C order."""

import math

from .base import Layer


class Flatten(Layer):
    """Flatten()

    Collapse every axis but the batch axis, in C order (for NCHW batches:
    channel, then row, then column).  Returns a view when the input is
    contiguous, as ``numpy.reshape``.
    """

    _depends_on_mode = False

    def config(self):
        return {}

    def output_shape(self, input_shape):
        if len(input_shape) == 0:
            raise ValueError("Flatten() takes examples with at least one axis, got scalars")
        return (math.prod(input_shape),)

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype)
        if x.size:
            return x.reshape(len(x), -1)
        return x.reshape(len(x), math.prod(x.shape[1:]))  # -1 is ambiguous when N = 0

    def _backward(self, gy, need_input_grad, reuse):
        return gy.reshape(self._cache[0]) if need_input_grad else None

    def _build_steps(self, b, x):
        return b.view(x, (b.batch, math.prod(x.shape[1:])))

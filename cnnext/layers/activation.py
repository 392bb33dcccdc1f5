"""ReLU, the rectified linear unit."""

from .. import functional as F
from .._functional import activation as _activation
from .base import Layer


class ReLU(Layer):
    """ReLU()

    max(x, 0) elementwise on batches of any shape, as ``F.relu``; NaN stays
    NaN.  The gradient passes where the input was positive.
    """

    _depends_on_mode = False

    def config(self):
        return {}

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, x):
        # A call matching a remembered F.relu call (whose validation covered
        # every check of the layer's own) runs its kernel before any Python
        # check; anything else takes the validated path.
        if type(self) is ReLU:
            y = _activation._RELU_CALLS.run((x,))
            if y is not None:
                self._cache = (x.shape, x.dtype, x)
                return y
        return Layer.forward(self, x)

    def backward(self, gy):
        cache = self._cache
        if type(self) is ReLU and cache is not None:
            gx = _activation._RELU_BACKWARD_CALLS.run((gy, cache[2]))
            if gx is not None:
                return gx
        return Layer.backward(self, gy)

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype, x)
        if not reuse:
            # A call repeating a remembered one: straight to its kernel.
            y = _activation._RELU_CALLS.run((x,))
            if y is not None:
                return y
        return F.relu(x, out=self._output("y", x.shape, x.dtype, reuse))

    def _backward(self, gy, need_input_grad, reuse):
        if not need_input_grad:
            return None
        x = self._cache[2]
        if not reuse:
            gx = _activation._RELU_BACKWARD_CALLS.run((gy, x))
            if gx is not None:
                return gx
        return F.relu_backward(gy, x, out=self._output("gx", x.shape, x.dtype, reuse))

    def _build_steps(self, b, x):
        y = b.buffer(x.shape)
        b.forward("relu", (x, y), (x.size,))
        if b.gradients:
            gx = b.gradient(x)
            if gx is not None:
                b.backward("relu_backward", (b.gradient(y), x, gx), (x.size,))
        return y

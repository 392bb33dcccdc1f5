"""LeakyReLU, Sigmoid and Tanh: elementwise activations on batches of any shape."""

from .. import functional as F
from .._functional.nonlinear import negative_slope_value
from .base import Layer


class _Elementwise(Layer):
    _depends_on_mode = False

    def output_shape(self, input_shape):
        return tuple(input_shape)


class LeakyReLU(_Elementwise):
    """LeakyReLU(negative_slope=0.01)

    x where x > 0, else negative_slope * x, as ``F.leaky_relu`` (PyTorch's
    ``nn.LeakyReLU``).
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope_value("LeakyReLU", negative_slope)

    def config(self):
        return {"negative_slope": self.negative_slope}

    def __repr__(self):
        return "LeakyReLU()" if self.negative_slope == 0.01 else \
            f"LeakyReLU(negative_slope={self.negative_slope!r})"

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype, x)
        return F.leaky_relu(x, self.negative_slope,
                            out=self._output("y", x.shape, x.dtype, reuse))

    def _backward(self, gy, need_input_grad, reuse):
        if not need_input_grad:
            return None
        x = self._cache[2]
        return F.leaky_relu_backward(gy, x, self.negative_slope,
                                     out=self._output("gx", x.shape, x.dtype, reuse))

    def _build_steps(self, b, x):
        slope = self.negative_slope
        b.checks.append((self.__dict__, "negative_slope", slope))
        y = b.buffer(x.shape)
        b.forward("leaky_relu", (x, y), (x.size,), (slope,))
        if b.gradients:
            gx = b.gradient(x)
            if gx is not None:
                b.backward("leaky_relu_backward", (b.gradient(y), x, gx), (x.size,), (slope,))
        return y


class _Smooth(_Elementwise):
    """Sigmoid and Tanh: the gradient comes from the forward's output."""

    _function = _gradient = None

    def config(self):
        return {}

    def _forward(self, x, reuse):
        # A fresh output, not a reused workspace: backward reads it, so it must
        # outlive the next forward's output (as in PyTorch, it must not be
        # modified in place before backward).
        y = type(self)._function(x)
        self._cache = (x.shape, x.dtype, y)
        return y

    def _backward(self, gy, need_input_grad, reuse):
        if not need_input_grad:
            return None
        y = self._cache[2]
        return type(self)._gradient(gy, y, out=self._output("gx", y.shape, y.dtype, reuse))

    def _build_steps(self, b, x):
        name = _STEPS.get((type(self)._function, type(self)._gradient))
        if name is None:
            return NotImplemented  # functions of a subclass's own
        y = b.buffer(x.shape)
        b.forward(name, (x, y), (x.size,))
        if b.gradients:
            gx = b.gradient(x)
            if gx is not None:
                b.backward(f"{name}_backward", (b.gradient(y), y, gx), (x.size,))
        return y


class Sigmoid(_Smooth):
    """Sigmoid()

    1 / (1 + exp(-x)) elementwise, as ``F.sigmoid``.
    """

    _function = staticmethod(F.sigmoid)
    _gradient = staticmethod(F.sigmoid_backward)


class Tanh(_Smooth):
    """Tanh()

    tanh(x) elementwise, as ``F.tanh``.
    """

    _function = staticmethod(F.tanh)
    _gradient = staticmethod(F.tanh_backward)


# The step kernels computing what the functions of Sigmoid and Tanh compute.
_STEPS = {(F.sigmoid, F.sigmoid_backward): "sigmoid", (F.tanh, F.tanh_backward): "tanh"}

"""MaxPool2D and AvgPool2D over NCHW batches."""

import numpy as np

from .. import functional as F
from .._functional import _checks
from .._functional import pooling as _pooling
from .._typing import IntPair
from .base import Layer, compact


class _Pool2D(Layer):
    """What both pooling layers share: geometry, config, repr, output shape."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None,
                 padding: IntPair = 0) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = _checks.pair(name, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _checks.pair(
            name, "stride", stride, 1)
        self.padding = _checks.pair(name, "padding", padding, 0)
        for padding, kernel in zip(self.padding, self.kernel_size, strict=True):
            if 2 * padding > kernel:
                raise ValueError(f"{name}: padding must be at most half the kernel size, "
                                 f"got padding={padding!r} for kernel_size={kernel_size!r}")
        self._geometry = (compact(self.kernel_size), compact(self.stride), compact(self.padding))

    def config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}

    def __repr__(self):
        def short(value):
            return value[0] if value[0] == value[1] else value

        text = f"{type(self).__name__}({short(self.kernel_size)}"
        if self.stride != self.kernel_size:
            text += f", stride={short(self.stride)}"
        if self.padding != (0, 0):
            text += f", padding={short(self.padding)}"
        return text + ")"

    def _step_geometry(self, x_shape):
        """The pooling steps' sizes: planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw."""
        n, c, h, w = x_shape
        _, ho, wo = self.output_shape(x_shape[1:])
        return (n * c, h, w, ho, wo, *self.kernel_size, *self.stride, *self.padding)

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self!r} takes (C, H, W) examples, got shape {tuple(input_shape)}")
        channels, height, width = input_shape
        return (channels,
                _checks.output_size(type(self).__name__, "height", height, self.kernel_size[0],
                                    self.stride[0], self.padding[0]),
                _checks.output_size(type(self).__name__, "width", width, self.kernel_size[1],
                                    self.stride[1], self.padding[1]))


class MaxPool2D(_Pool2D):
    """MaxPool2D(kernel_size, stride=None, padding=0)

    Max pooling of (N, C, H, W) batches, as ``F.max_pool2d`` (stride defaults
    to the kernel size; ties go to the first maximum; padding is -inf).  The
    gradient flows to the one position that was picked in each window.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.layers import MaxPool2D
    >>> pool = MaxPool2D(2)
    >>> pool.output_shape((8, 26, 26))
    (8, 13, 13)
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> pool.forward(x)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """

    def _forward(self, x, reuse):
        result = None if reuse else _pooling._MAX_CALLS.run((x,), (*self._geometry, True))
        if result is None:
            out_shape = self._batch_output_shape(x.shape)
            out = (self._output("y", out_shape, x.dtype, reuse),
                   self._output("idx", out_shape, np.int64, reuse))
            if out[0] is None and out[1] is None:
                out = None
            result = F.max_pool2d(x, *self._geometry, return_indices=True, out=out)
        self._cache = (x.shape, x.dtype, result[1])
        return result[0]

    def _backward(self, gy, need_input_grad, reuse):
        if not need_input_grad:
            return None
        x_shape, _, idx = self._cache
        if not reuse:
            gx = _pooling._MAX_BACKWARD_CALLS.run((gy, idx), x_shape)
            if gx is not None:
                return gx
        out = self._output("gx", x_shape, gy.dtype, reuse)
        return F.max_pool2d_backward(gy, idx, x_shape, out=out)

    def _build_steps(self, b, x):
        geometry = self._step_geometry(x.shape)
        shape = (b.batch, x.shape[1], geometry[3], geometry[4])
        y = b.buffer(shape)
        gx = b.gradient(x) if b.gradients else None
        idx = b.buffer(shape, np.int64) if gx is not None else None
        b.forward("max_pool2d", (x, y, idx), geometry)
        if gx is not None:
            b.backward("max_pool2d_backward", (b.gradient(y), idx, gx), (*geometry, 0))
        return y


class AvgPool2D(_Pool2D):
    """AvgPool2D(kernel_size, stride=None, padding=0)

    Average pooling of (N, C, H, W) batches, as ``F.avg_pool2d`` (zero
    padding counted in the divisor).
    """

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype)
        return F.avg_pool2d(x, *self._geometry,
                            out=self._output("y", self._batch_output_shape(x.shape), x.dtype,
                                             reuse))

    def _backward(self, gy, need_input_grad, reuse):
        if not need_input_grad:
            return None
        x_shape = self._cache[0]
        return F.avg_pool2d_backward(gy, x_shape, *self._geometry,
                                     out=self._output("gx", x_shape, gy.dtype, reuse))


    def _build_steps(self, b, x):
        geometry = self._step_geometry(x.shape)
        y = b.buffer((b.batch, x.shape[1], geometry[3], geometry[4]))
        b.forward("avg_pool2d", (x, y), geometry)
        if b.gradients:
            gx = b.gradient(x)
            if gx is not None:
                b.backward("avg_pool2d_backward", (b.gradient(y), gx), geometry)
        return y

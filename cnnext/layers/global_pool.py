"""GlobalAvgPool2D: the mean of every channel's plane, (N, C, H, W) -> (N, C)."""

from .. import functional as F
from .base import Layer


class GlobalAvgPool2D(Layer):
    """GlobalAvgPool2D()

    The mean over each (H, W) plane of an NCHW batch, as
    ``F.global_avg_pool2d``: (N, C, H, W) -> (N, C), ready for a ``Dense``
    layer (PyTorch: ``nn.AdaptiveAvgPool2d(1)`` then ``nn.Flatten()``).
    """

    _depends_on_mode = False

    def config(self):
        return {}

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"GlobalAvgPool2D() takes (C, H, W) examples, got shape "
                             f"{tuple(input_shape)}")
        if input_shape[1] < 1 or input_shape[2] < 1:
            raise ValueError(f"GlobalAvgPool2D() takes non-empty (H, W) planes, got "
                             f"{tuple(input_shape)}")
        return (input_shape[0],)

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype)
        return F.global_avg_pool2d(
            x, out=self._output("y", x.shape[:2], x.dtype, reuse))

    def _backward(self, gy, need_input_grad, reuse):
        if not need_input_grad:
            return None
        shape = self._cache[0]
        return F.global_avg_pool2d_backward(gy, shape,
                                            out=self._output("gx", shape, gy.dtype, reuse))

    def _build_steps(self, b, x):
        n, c, h, w = x.shape
        y = b.buffer((n, c))
        b.forward("global_avg_pool2d", (x, y), (n * c, h * w))
        if b.gradients:
            gx = b.gradient(x)
            if gx is not None:
                b.backward("global_avg_pool2d_backward", (b.gradient(y), gx), (n * c, h * w))
        return y

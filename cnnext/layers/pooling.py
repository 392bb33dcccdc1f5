"""MaxPool2D and AvgPool2D over NCHW batches."""

import numpy as np

from .. import _validation
from .. import functional as F
from .._functional import pooling as _pooling
from .._typing import IntPair, Padding
from .base import Layer, boolean, compact, compact_padding, layer_padding


class _Pool2D(Layer):
    """What both pooling layers share: geometry, config, repr, output shape.

    Options beyond kernel_size, stride and padding (``_defaults``) appear in
    ``config()`` and in the functional calls only when they differ from their
    defaults, so checkpoints written before they existed stay canonical.
    """

    _depends_on_mode = False
    _defaults: tuple[tuple[str, object], ...] = ()  # (option, default) pairs

    def __init__(self, kernel_size: IntPair, stride: IntPair | None, padding: Padding,
                 options: dict[str, object]) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = _validation.pair(name, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _validation.pair(
            name, "stride", stride, 1)
        self.padding = layer_padding(name, padding)
        self.dilation = _validation.pair(name, "dilation", options.pop("dilation"), 1)
        for key, value in options.items():
            setattr(self, key, boolean(name, key, value))
        _validation.pool_layer_padding(name, self.padding, self.kernel_size, self.dilation)
        self._geometry = (compact(self.kernel_size), compact(self.stride),
                          compact_padding(self.padding))
        # The functional calls' options: those that differ from the defaults.
        self._options = {}
        for key, default in self._defaults:
            value = compact(self.dilation) if key == "dilation" else getattr(self, key)
            if value != default:
                self._options[key] = value

    def config(self):
        config = {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                  "padding": ([list(side) for side in self.padding]
                              if isinstance(self.padding[0], tuple) else list(self.padding))}
        for key, value in self._options.items():
            config[key] = list(self.dilation) if key == "dilation" else value
        return config

    def __repr__(self):
        def short(value):
            return value[0] if value[0] == value[1] else value

        text = f"{type(self).__name__}({short(self.kernel_size)}"
        if self.stride != self.kernel_size:
            text += f", stride={short(self.stride)}"
        if self.padding != (0, 0):
            text += f", padding={short(self.padding)}"
        for key, value in self._options.items():
            text += f", {key}={value}"
        return text + ")"

    def _full_geometry(self, x_shape):
        """The functionals' geometry of an (N, C, H, W) batch (see _functional/pooling.py)."""
        options = {k: v for k, v in self._options.items() if k in ("dilation", "ceil_mode")}
        return _pooling._geometry(type(self).__name__, tuple(x_shape), *self._geometry,
                                  **options)

    def _step_geometry(self, x_shape, flag=0):
        """The pooling steps' sizes: planes, H, W, Ho, Wo, kh, kw, sh, sw, the
        padding before the plane (top, left), the step's flag, dh, dw."""
        kernel, stride, before, dilation, out_shape, _ = self._full_geometry(x_shape)
        return _pooling._step_sizes(x_shape, out_shape, kernel, stride, before, flag, dilation)

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self!r} takes (C, H, W) examples, got shape {tuple(input_shape)}")
        return self._full_geometry((1, *input_shape))[4][1:]


class MaxPool2D(_Pool2D):
    """MaxPool2D(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False)

    Max pooling of (N, C, H, W) batches, as ``F.max_pool2d`` (stride defaults
    to the kernel size; ties go to the first maximum; padding is -inf: an int,
    (h, w) or ((top, bottom), (left, right))).  The gradient flows to the one
    position that was picked in each window.

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

    _defaults = (("dilation", 1), ("ceil_mode", False))

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0,
                 dilation: IntPair = 1, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding,
                         {"dilation": dilation, "ceil_mode": ceil_mode})
        # The key of F.max_pool2d's remembered calls: its arguments as this layer passes them.
        self._calls_key = (*self._geometry, True, self._options.get("dilation", 1),
                           self._options.get("ceil_mode", False))

    def forward(self, x):
        # A call matching a remembered F.max_pool2d call (whose validation
        # covered every check of the layer's own) runs its kernel before any
        # Python check; anything else takes the validated path.
        if type(self) is MaxPool2D:
            result = _pooling._MAX_CALLS.run((x,), self._calls_key)
            if result is not None:
                self._cache = (x.shape, x.dtype, result[1])
                return result[0]
        return Layer.forward(self, x)

    def _forward(self, x, reuse):
        result = None if reuse else _pooling._MAX_CALLS.run((x,), self._calls_key)
        if result is None:
            out_shape = self._batch_output_shape(x.shape)
            out = (self._output("y", out_shape, x.dtype, reuse),
                   self._output("idx", out_shape, np.int64, reuse))
            if out[0] is None and out[1] is None:
                out = None
            result = F.max_pool2d(x, *self._geometry, return_indices=True, out=out,
                                  **self._options)
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
            b.backward("max_pool2d_backward", (b.gradient(y), idx, gx), geometry)
        return y


class AvgPool2D(_Pool2D):
    """AvgPool2D(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
    dilation=1)

    Average pooling of (N, C, H, W) batches, as ``F.avg_pool2d`` (zero
    padding counted in the divisor unless ``count_include_pad=False``).
    """

    _defaults = (("ceil_mode", False), ("count_include_pad", True), ("dilation", 1))

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 dilation: IntPair = 1) -> None:
        super().__init__(kernel_size, stride, padding,
                         {"dilation": dilation, "ceil_mode": ceil_mode,
                          "count_include_pad": count_include_pad})

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype)
        return F.avg_pool2d(x, *self._geometry,
                            out=self._output("y", self._batch_output_shape(x.shape), x.dtype,
                                             reuse), **self._options)

    def _backward(self, gy, need_input_grad, reuse):
        if not need_input_grad:
            return None
        x_shape = self._cache[0]
        return F.avg_pool2d_backward(gy, x_shape, *self._geometry,
                                     out=self._output("gx", x_shape, gy.dtype, reuse),
                                     **self._options)

    def _build_steps(self, b, x):
        geometry = self._step_geometry(x.shape)
        divisors = None
        if not self.count_include_pad or self.ceil_mode:
            divisors = _pooling._divisors(self._full_geometry(x.shape), x.shape,
                                          self.count_include_pad, b.dtype)
        y = b.buffer((b.batch, x.shape[1], geometry[3], geometry[4]))
        b.forward("avg_pool2d", (x, y, divisors), geometry, keep=(divisors,))
        if b.gradients:
            gx = b.gradient(x)
            if gx is not None:
                b.backward("avg_pool2d_backward", (b.gradient(y), gx, divisors), geometry,
                           keep=(divisors,))
        return y

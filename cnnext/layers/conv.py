"""Conv2D: 2-D convolution (cross-correlation) over NCHW batches."""

import numpy as np

from .. import _validation
from .. import functional as F
from .._functional import conv as _conv
from .._typing import DTypeLike, IntPair, Padding, Seed
from .base import (
    Layer,
    boolean,
    check_init,
    check_weight_shape,
    compact,
    compact_padding,
    initial_weights,
    layer_dtype,
    layer_padding,
    positive_int,
    random_generator,
    zero_parameter,
)


class Conv2D(Layer):
    """Conv2D(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    bias=True, dtype="float32", init="he_normal", seed=None, groups=1)

    2-D convolution of (N, in_channels, H, W) batches, as ``F.conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the output.
    kernel_size, stride, padding, dilation : int or (int, int)
        As in ``cnnext.functional.conv2d``; padding is zero padding, also
        ((top, bottom), (left, right)).
    bias : bool
        Learn one bias per output channel (initialised to zero).
    dtype : {"float32", "float64"}
        Dtype of the parameters and of the batches the layer takes.
    init : {"he_normal", "glorot_uniform"}
        Weight initialisation; fan-in is in_channels * kernel area.
    seed : None, int >= 0 or numpy.random.Generator
        Source of the initial weights.
    groups : int
        Grouped convolution, as PyTorch's: groups divides both channel
        counts and each output channel sees in_channels / groups inputs;
        groups == in_channels is depthwise (fan-in kernel area times
        in_channels / groups).

    Attributes
    ----------
    params : dict
        "weight" (out_channels, in_channels / groups, kh, kw) and, with bias,
        "bias" (out_channels,).
    grads : dict
        Gradients of the same names and shapes, written by ``backward``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.layers import Conv2D
    >>> conv = Conv2D(1, 8, 3, padding=1, seed=0)
    >>> conv.params["weight"].shape, conv.params["bias"].shape
    ((8, 1, 3, 3), (8,))
    >>> conv.output_shape((1, 28, 28))
    (8, 28, 28)
    >>> y = conv.forward(np.zeros((5, 1, 28, 28), dtype=np.float32))
    >>> y.shape
    (5, 8, 28, 28)
    >>> gx = conv.backward(np.ones_like(y))              # fills conv.grads
    >>> sorted(conv.grads)
    ['bias', 'weight']
    """

    _depends_on_mode = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
                 bias: bool = True, dtype: DTypeLike = "float32", init: str = "he_normal",
                 seed: Seed = None, groups: int = 1) -> None:
        super().__init__()
        name = "Conv2D"
        self.in_channels = positive_int(name, "in_channels", in_channels)
        self.out_channels = positive_int(name, "out_channels", out_channels)
        self.kernel_size = _validation.pair(name, "kernel_size", kernel_size, 1)
        self.stride = _validation.pair(name, "stride", stride, 1)
        self.padding = layer_padding(name, padding)
        self.dilation = _validation.pair(name, "dilation", dilation, 1)
        self._geometry = (compact(self.stride), compact_padding(self.padding),
                          compact(self.dilation))
        # F.conv2d_backward's remembered-call key for the layer's backward.
        self._backward_key = (*self._geometry, True)
        self.bias = boolean(name, "bias", bias)
        self.dtype = layer_dtype(name, dtype)
        self.init = check_init(name, init)
        self.groups = positive_int(name, "groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{name}: groups={self.groups} must divide in_channels "
                             f"({self.in_channels}) and out_channels ({self.out_channels})")
        rng = random_generator(name, seed)
        per_group = self.in_channels // self.groups
        shape = (self.out_channels, per_group, *self.kernel_size)
        check_weight_shape(name, "out_channels, in_channels and kernel_size", shape)
        area = self.kernel_size[0] * self.kernel_size[1]
        self.params["weight"] = initial_weights(
            shape, self.init, per_group * area, self.out_channels // self.groups * area,
            self.dtype, rng)
        if self.bias:
            self.params["bias"] = zero_parameter((self.out_channels,), self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def config(self):
        config = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": ([list(side) for side in self.padding]
                        if isinstance(self.padding[0], tuple) else list(self.padding)),
            "dilation": list(self.dilation),
            "bias": self.bias,
            "dtype": self.dtype.name,
            "init": self.init,
        }
        if self.groups != 1:  # left out otherwise, as in checkpoints written before groups
            config["groups"] = self.groups
        return config

    def __repr__(self):
        extra = "".join(
            f", {name}={value[0] if value[0] == value[1] else value}"
            for name, value, default in (("stride", self.stride, 1), ("padding", self.padding, 0),
                                         ("dilation", self.dilation, 1))
            if value != (default, default))
        kernel = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] \
            else self.kernel_size
        bias = "" if self.bias else ", bias=False"
        dtype = "" if self.dtype.name == "float32" else f", dtype={self.dtype.name!r}"
        init = "" if self.init == "he_normal" else f", init={self.init!r}"
        groups = "" if self.groups == 1 else f", groups={self.groups}"
        return (f"Conv2D({self.in_channels}, {self.out_channels}, {kernel}{extra}{bias}{dtype}"
                f"{init}{groups})")

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self!r} takes (C, H, W) examples, got shape {tuple(input_shape)}")
        channels, height, width = input_shape
        if channels != self.in_channels:
            raise ValueError(f"{self!r} expects {self.in_channels} input channel(s), "
                             f"got {channels}")
        return (self.out_channels,
                *_validation.conv_output_hw("Conv2D", height, width, self.kernel_size,
                                            self.stride, self.padding, self.dilation))

    def forward(self, x):
        # A call matching a remembered F.conv2d call (whose validation covered
        # every check of the layer's own) runs its kernel before any Python
        # check; anything else takes the validated path.
        if type(self) is Conv2D and _conv._kernels is _conv._DISPATCHED and self.groups == 1:
            params = self.params
            y = _conv._CONV2D.run((x, params["weight"], params.get("bias")), self._geometry)
            if y is not None and x.dtype is self.dtype:
                self._cache = (x.shape, self.dtype, x)
                return y
        return Layer.forward(self, x)

    def backward(self, gy):
        cache = self._cache
        if (type(self) is Conv2D and cache is not None and _conv._kernels is _conv._DISPATCHED
                and self.groups == 1):
            grads = self.grads
            result = _conv._CONV2D_BACKWARD.run(
                (gy, cache[2], self.params["weight"]), self._backward_key,
                (None, grads["weight"], grads.get("bias")))
            if result is not None:
                return result[0]
        return Layer.backward(self, gy)

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype, x)
        params = self.params
        if not reuse and _conv._kernels is _conv._DISPATCHED and self.groups == 1:
            # A call repeating a remembered one: straight to its kernel.
            y = _conv._CONV2D.run((x, params["weight"], params.get("bias")), self._geometry)
            if y is not None:
                return y
        out = self._output("y", self._batch_output_shape(x.shape), x.dtype, reuse)
        return F.conv2d(x, params["weight"], params.get("bias"), *self._geometry, self.groups,
                        out=out)

    def _backward(self, gy, need_input_grad, reuse):
        x = self._cache[2]
        grads = self.grads
        if not reuse and _conv._kernels is _conv._DISPATCHED and self.groups == 1:
            result = _conv._CONV2D_BACKWARD.run(
                (gy, x, self.params["weight"]), (*self._geometry, need_input_grad),
                (None, grads["weight"], grads.get("bias")))
            if result is not None:
                return result[0]
        gx = self._output("gx", x.shape, x.dtype, reuse) if need_input_grad else None
        gx, _, _ = F.conv2d_backward(
            gy, x, self.params["weight"], *self._geometry, need_input_grad=need_input_grad,
            groups=self.groups, out=(gx, grads["weight"], grads.get("bias")))
        return gx

    def _build_steps(self, b, x, relu=False):
        """The layer's steps; with ``relu``, those of this layer and a ReLU
        after it (cnnext/_plans/fusion.py): ReLU in the convolution's store,
        its mask (from the stored output) on the gradient in one pass."""
        if self.groups != 1:
            return NotImplemented  # grouped convolutions: no step kernel yet
        if isinstance(self.padding[0], tuple):
            return NotImplemented  # one-sided padding goes through a padded copy
        k, kh, kw = self.out_channels, *self.kernel_size
        w_shape = (k, self.in_channels, kh, kw)
        weight = b.parameter(self, "weight", w_shape)
        bias = b.parameter(self, "bias", (k,)) if self.bias else None
        plan, safe = _conv.step_plans(x.shape, w_shape, b.dtype, *self._geometry)
        if plan is None:
            return NotImplemented  # computed tap by tap: no step kernel
        plans = (plan.step_plan(), None if safe is None else safe.step_plan())
        both = (plan,) if safe is None else (plan, safe)
        name = "conv2d_relu" if relu else "conv2d"
        y = b.buffer(plan.output_shape)
        b.forward(name, (x, weight, bias, y,
                         b.workspace(max(p.forward_workspace for p in both))),
                  (x.size, weight.size), plans=plans, keep=both)
        if b.gradients:
            gw = b.parameter_gradient(self, "weight", w_shape)
            gb = b.parameter_gradient(self, "bias", (k,)) if self.bias else b.buffer((k,))
            work = b.workspace(max(max(p.backward_data_workspace, p.backward_filter_workspace)
                                   for p in both))
            gy = b.gradient(y)
            masked = (y, b.buffer(y.shape)) if relu else ()
            b.backward(name + "_backward",
                       (gy, x, weight, b.gradient(x), gw, gb, work, *masked),
                       (gy.size, weight.size), plans=plans, keep=both)
        return y

"""Conv2D: 2-D convolution (cross-correlation) over NCHW batches."""

import numpy as np

from .. import _validation
from .. import functional as F
from .._functional import conv as _conv
from .._functional import grouped as _grouped
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

    def _step_plans(self, x_shape, dtype, relu=False):
        """How the layer's compiled steps compute on batches of ``x_shape``:
        (forward step name, weight shape, the kernels' plans), or None when
        it has no step kernel for them; ``relu``: with a ReLU after it in the
        convolution's store (one group only).  Depthwise layers have steps
        of their own; other groupings run the convolution steps (whose plans
        are those of one group) on copies of each group's channels."""
        if isinstance(self.padding[0], tuple):
            return None  # one-sided padding goes through a padded copy
        groups, k, kh, kw = self.groups, self.out_channels, *self.kernel_size
        w_shape = (k, self.in_channels // groups, kh, kw)
        if groups != 1 and relu:
            return None
        if groups != 1 and groups == self.in_channels:
            plan = _grouped.depthwise_step_plan(x_shape, w_shape, dtype, *self._geometry)
            return "depthwise2d", w_shape, (plan,)
        n, c, h, w = x_shape
        plan, safe = _conv.step_plans((n, c // groups, h, w), (k // groups, *w_shape[1:]),
                                      dtype, *self._geometry)
        if plan is None:
            return None  # computed tap by tap: no step kernel
        name = "grouped" if groups != 1 else "conv2d_relu" if relu else "conv2d"
        return name, w_shape, (plan,) if safe is None else (plan, safe)

    def _forward_step(self, b, steps, x, weight, bias):
        """Add the forward steps of ``_step_plans``'s ``steps`` on ``x`` with
        these filters and bias; return (the output, what the backward steps
        reuse: the depthwise padded-plane buffer or the groups' inputs)."""
        name, _, plans = steps
        if name == "depthwise2d":
            y, xp = b.buffer(plans[0].output_shape), b.buffer(plans[0].forward_scratch)
            b.forward(name, (x, weight, bias, y, xp), plans=(plans[0].step_plan(),), keep=plans)
            return y, xp
        work = b.workspace(max(p.forward_workspace for p in plans))
        if name != "grouped":
            y = b.buffer(plans[0].output_shape)
            b.forward(name, (x, weight, bias, y, work), (x.size, weight.size),
                      plans=self._capsules(plans), keep=plans)
            return y, None
        n, *part = plans[0].output_shape
        y = b.buffer((n, self.out_channels, *part[1:]))
        inputs = []
        for g, xg, yg, filters in self._groups(b, x, y):
            b.forward("copy_channels", (x, xg), self._copy(x, xg, g, True))
            b.forward("conv2d", (xg, weight[filters], None if bias is None else bias[filters], yg,
                                 work), (xg.size, weight[filters].size),
                      plans=self._capsules(plans), keep=plans)
            b.forward("copy_channels", (yg, y), self._copy(y, yg, g, False))
            inputs.append(xg)
        return y, inputs

    def _groups(self, b, x, y):
        """(group, its input buffer, its output buffer, its filters) of a grouped
        convolution from ``x`` to ``y``; the output buffer is shared (each
        group's is copied out at once)."""
        yg = b.buffer(self._group_shape(y))
        for g, filters in enumerate(self._filters()):
            yield g, b.buffer(self._group_shape(x)), yg, filters

    def _group_shape(self, batch):
        return (batch.shape[0], batch.shape[1] // self.groups, *batch.shape[2:])

    def _filters(self):
        kg = self.out_channels // self.groups
        return [slice(g * kg, (g + 1) * kg) for g in range(self.groups)]

    @staticmethod
    def _copy(whole, part, g, out_of_whole):
        """copy_channels' sizes between group ``g``'s channels of ``whole`` and ``part``."""
        each, size = whole[0].size, part[0].size
        if out_of_whole:
            return (whole.shape[0], size, each, size, g * size, 0)
        return (whole.shape[0], size, size, each, 0, g * size)

    @staticmethod
    def _capsules(plans):
        return plans[0].step_plan(), None if len(plans) == 1 else plans[1].step_plan()

    def _build_steps(self, b, x, relu=False):
        """The layer's steps; with ``relu``, those of this layer and a ReLU
        after it (cnnext/_plans/fusion.py): ReLU in the convolution's store,
        its mask (from the stored output) on the gradient in one pass."""
        steps = self._step_plans(x.shape, b.dtype, relu)
        if steps is None:
            return NotImplemented
        name, w_shape, plans = steps
        k = self.out_channels
        weight = b.parameter(self, "weight", w_shape)
        bias = b.parameter(self, "bias", (k,)) if self.bias else None
        y, reused = self._forward_step(b, steps, x, weight, bias)
        if not b.gradients:
            return y
        gw = b.parameter_gradient(self, "weight", w_shape)
        gb = b.parameter_gradient(self, "bias", (k,)) if self.bias else b.buffer((k,))
        gy, gx = b.gradient(y), b.gradient(x)
        if name == "depthwise2d":
            plan = plans[0]
            b.backward("depthwise2d_backward",
                       (gy, x, weight, gx, gw, gb, b.buffer(plan.partial_shape, np.float64),
                        reused, b.buffer(plan.data_scratch)),
                       (weight.size,), plans=(plan.step_plan(),), keep=plans)
            return y
        work = b.workspace(max(max(p.backward_data_workspace, p.backward_filter_workspace)
                               for p in plans))
        if name != "grouped":
            masked = (y, b.buffer(y.shape)) if relu else ()
            b.backward(name + "_backward", (gy, x, weight, gx, gw, gb, work, *masked),
                       (gy.size, weight.size), plans=self._capsules(plans), keep=plans)
            return y
        gxg = None if gx is None else b.buffer(reused[0].shape)
        gyg = b.buffer(self._group_shape(gy))
        for g, (xg, filters) in enumerate(zip(reused, self._filters(), strict=True)):
            b.backward("copy_channels", (gy, gyg), self._copy(gy, gyg, g, True))
            b.backward("conv2d_backward", (gyg, xg, weight[filters], gxg, gw[filters],
                                           gb[filters], work),
                       (gyg.size, weight[filters].size), plans=self._capsules(plans), keep=plans)
            if gx is not None:
                b.backward("copy_channels", (gxg, gx), self._copy(gx, gxg, g, False))
        return y

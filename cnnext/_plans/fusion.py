"""Conv2D [-> ReLU] -> MaxPool2D, and Conv2D -> ReLU, fused into one kernel
call in Sequential's passes.

In a Sequential, a Conv2D (exactly that class, one group), an optional ReLU
and a MaxPool2D without padding that follow one another are computed by
``F.conv2d_max_pool2d`` and its backward (cnnext/_functional/fused.py): the
convolution's output is never stored, and the backward takes the pooled
gradient straight to the convolution's gradients.  Both of Sequential's
paths fuse alike, so their results stay bitwise equal: the plans through the
fused step kernels (``build``, registered with ``register_fusion``), the
layer-by-layer path (the plans' reference) through ``FusedRun``.  The layers
themselves, their parameters and checkpoints, do not change: a fused run
reads the Conv2D's ``params`` and writes its ``grads``.

The forward is the fused kernel only where it is the faster on this CPU
for the run's shape (``F.fuses``, measured and kept by cnnext._tuning;
``_tuning.forced({"fusion": ...})`` forces it): otherwise the convolution
(with ReLU in its store) and max_pool2d's indices, which the fused backward
takes as it takes the fused forward's.  Both paths ask the same question of
the same shape, so they still fuse alike.

A run whose pooling windows lie too far apart for the fused kernels (more
than 2**24 elements of the convolution's output) is left to its layers, in
both paths, as are convolutions padded differently on two sides and
poolings with padding, dilation or ceil mode.

A Conv2D -> ReLU not followed by a fused pooling is fused in the plans only
(``build_relu``): the convolution applies ReLU as it stores its output, and
its backward masks the gradient by that output.  ReLU after the same sums
is exact and its mask from the output is the mask from the input, so the
results are bitwise those of the two layers' own steps, which the
layer-by-layer path keeps computing.
"""

import numpy as np

from .._functional import fused as _fused
from ..layers.activation import ReLU
from ..layers.base import Layer
from ..layers.conv import Conv2D
from ..layers.pooling import MaxPool2D
from . import kernels as _step_kernels
from .network import register_fusion

# The backward without the input gradient may run in another build of the
# kernels than the loaded one (F.conv2d_max_pool2d_backward's choice, see
# _fused.weights_backward): its step kernel, under a name of its own.
_NARROW_BACKWARD = "conv2d_max_pool2d_backward(narrow build)"
if _fused._narrow is not None:
    _step_kernels.register({(_NARROW_BACKWARD, dtype): capsule for (name, dtype), capsule
                            in _fused._narrow.fused_step_kernels().items()
                            if name == "conv2d_max_pool2d_backward"})


def fusible(layers):
    """Whether the run ``layers`` is fused: Conv2D [ReLU] MaxPool2D, exactly those
    classes (a subclass may compute something else), a convolution of one
    group with the same padding on both sides, a pooling without padding,
    dilation or ceil mode."""
    if len(layers) not in (2, 3):
        return False
    conv, pool = layers[0], layers[-1]
    return (type(conv) is Conv2D and type(pool) is MaxPool2D
            and (len(layers) == 2 or type(layers[1]) is ReLU)
            and getattr(conv, "groups", 1) == 1 and not isinstance(conv.padding[0], tuple)
            and pool.padding == (0, 0) and tuple(getattr(pool, "dilation", (1, 1))) == (1, 1)
            and not getattr(pool, "ceil_mode", False))


def _fits(conv, pool, example_shape):
    """Whether the fused kernels take this run on examples of ``example_shape``."""
    wo = conv.output_shape(example_shape)[2]
    return (pool.kernel_size[0] - 1) * wo + pool.kernel_size[1] <= _fused._MAX_WINDOW_OFFSET


def segments(layers):
    """``layers`` with every fusible run replaced by a new ``FusedRun``."""
    out, i = [], 0
    while i < len(layers):
        for size in (3, 2):
            run = layers[i:i + size]
            if len(run) == size and fusible(run):
                out.append(FusedRun(run))
                i += size
                break
        else:
            out.append(layers[i])
            i += 1
    return out


class FusedRun(Layer):
    """FusedRun(layers)

    A fusible run of a Sequential's layers as one step of its layer-by-layer
    path, with the layer protocol (``_forward``, ``_backward``, ``backward``);
    not a layer a user builds.
    """

    def __init__(self, layers):
        super().__init__()
        self.layers = tuple(layers)
        self.conv, self.pool = layers[0], layers[-1]
        self.relu = len(layers) == 3
        self.dtype = self.conv.dtype

    def _name(self):
        return " -> ".join(type(layer).__name__ for layer in self.layers)

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def _geometry(self):
        conv, pool = self.conv, self.pool
        return conv._geometry, {"relu": self.relu, "pool_size": pool._geometry[0],
                                "pool_stride": pool._geometry[1]}

    def _forward(self, x, reuse):
        if not _fits(self.conv, self.pool, x.shape[1:]):
            self._cache = (x.shape, x.dtype, None)
            for layer in self.layers:
                x = layer._forward(x, reuse)
            return x
        conv = self.conv
        geometry, pooling = self._geometry()
        shape = self._batch_output_shape(x.shape)
        out = (self._output("y", shape, x.dtype, reuse),
               self._output("idx", shape, np.int64, reuse))
        if out[0] is None and out[1] is None:
            out = None
        y, idx = _fused.sequential_forward(
            x, conv.params["weight"], conv.params.get("bias"), *geometry, **pooling, out=out,
            scratch=lambda shape: self._output("conv", shape, x.dtype, reuse))
        self._cache = (x.shape, x.dtype, x, y, idx)
        return y

    def _backward(self, gy, need_input_grad, reuse):
        if self._cache[2] is None:
            for layer in reversed(self.layers[1:]):
                gy = layer._backward(gy, True, reuse)
            return self.conv._backward(gy, need_input_grad, reuse)
        conv = self.conv
        x, y, idx = self._cache[2:]
        geometry, pooling = self._geometry()
        gx = self._output("gx", x.shape, x.dtype, reuse) if need_input_grad else None
        gx, _, _ = _fused.conv2d_max_pool2d_backward(
            gy, idx, x, conv.params["weight"], *geometry, y=y, **pooling,
            need_input_grad=need_input_grad,
            out=(gx, conv.grads["weight"], conv.grads.get("bias")))
        return gx


def build(b, layers, x):
    """The fused steps of the run ``layers`` on the plan's buffer ``x`` (see
    cnnext/_plans/__init__.py), or NotImplemented when it is left to its layers."""
    if not fusible(layers) or x.ndim != 4 or not _fits(layers[0], layers[-1], x.shape[1:]):
        return NotImplemented
    conv, pool = layers[0], layers[-1]
    relu = len(layers) == 3
    k, kh, kw = conv.out_channels, *conv.kernel_size
    w_shape = (k, conv.in_channels, kh, kw)
    weight = b.parameter(conv, "weight", w_shape)
    bias = b.parameter(conv, "bias", (k,)) if conv.bias else None
    entry = _fused._entry("Sequential", x, weight, *conv._geometry, pool._geometry[0],
                          pool._geometry[1])
    if entry.fused is None:
        return NotImplemented  # computed tap by tap: no fused kernel
    fused = entry.backward() if b.gradients else entry.fused
    capsule = fused.step_plan()
    y = b.buffer(entry.output_shape)
    idx = b.buffer(entry.output_shape, np.int64)
    if _fused.fuses(entry, relu):
        b.forward("conv2d_max_pool2d", (x, weight, bias, y, idx,
                                        b.workspace(fused.forward_workspace)),
                  (int(relu),), plans=(capsule,), keep=(fused,))
    else:
        activated, _ = conv._forward_step(b, conv._step_plans(x.shape, b.dtype, relu), x,
                                          weight, bias)
        b.forward("max_pool2d", (activated, y, idx), pool._step_geometry(activated.shape))
    if b.gradients:
        gw = b.parameter_gradient(conv, "weight", w_shape)
        gb = b.parameter_gradient(conv, "bias", (k,)) if conv.bias else b.buffer((k,))
        gx = b.gradient(x)
        name = "conv2d_max_pool2d_backward"
        if gx is None:
            # As the layer path: the build its backward without gx runs in.
            fused, kernels = entry.weights_backward()
            capsule = fused.step_plan()
            if kernels is not _fused._by_dtype:
                name = _NARROW_BACKWARD
        b.backward(name, (b.gradient(y), idx, y if relu else None, x, weight, gx, gw, gb,
                          b.workspace(fused.backward_workspace(gx is not None))),
                   plans=(capsule,), keep=(fused,))
    return y


def build_relu(b, layers, x):
    """The steps of Conv2D -> ReLU as one convolution with ReLU in its
    store, or NotImplemented when the convolution has no steps."""
    return layers[0]._build_steps(b, x, relu=True)


# Longest first: a ReLU between the two belongs to the run; a ReLU before a
# pooling the fused kernels do not take fuses with the convolution alone.
register_fusion((Conv2D, ReLU, MaxPool2D), build)
register_fusion((Conv2D, MaxPool2D), build)
register_fusion((Conv2D, ReLU), build_relu)

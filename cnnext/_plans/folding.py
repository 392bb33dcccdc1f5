"""An evaluation-mode BatchNorm2D right after a Conv2D, folded into the convolution.

In ``predict`` and ``evaluate`` plans (no gradients, the batch norm in
evaluation mode), ``Conv2D -> BatchNorm2D [-> ReLU]`` runs as one
convolution with folded filters and bias (and the ReLU in its store, as
the Conv2D -> ReLU fusion of cnnext/_plans/fusion.py applies it; a
depthwise convolution's steps have no ReLU, so only its batch norm
folds)::

    s = weight / sqrt(running_var + eps)          (per output channel)
    w' = s * w,    b' = s * (b - running_mean) + bias

The fold is a step of the plan's forward pass (``batch_norm2d_fold``), run
before the convolution on every pass: the plan owns the folded arrays and
a copy of the arrays it folded, compares the layers' current arrays with
that copy, and folds again (in double precision, rounded once) when any
byte differs.  So in-place updates (a training step, ``load_state_dict``)
are always seen, replaced arrays are caught by the plan's identity checks
like any parameter, and a pass whose arrays did not change costs one
comparison of the filters.

Folding changes rounding: the layer-by-layer path (the reference) rounds
the convolution's output, then normalises it; the fold rounds the scaled
filters instead.  The results agree to a few units in the last place of
the outputs' scale (the tests hold them to 2e-5 of the largest value in
float32, 1e-12 in float64).  Training and ``backward`` plans, and the
layer-by-layer path, never fold.

``BatchNorm2D -> ReLU`` and ``Residual -> ReLU`` are registered here too,
in every mode: the first layer's steps with ReLU in its store give exactly
the two layers' results (so they need no fusion in the layer-by-layer
path), and folds are the rewrites tried inside Residual blocks.
"""

import numpy as np

from ..layers.activation import ReLU
from ..layers.conv import Conv2D
from ..layers.normalization import BatchNorm2D
from ..layers.residual import Residual
from .network import register_fold


def build(b, layers, x):
    """The folded steps of ``Conv2D -> BatchNorm2D [-> ReLU]`` on the plan's
    buffer ``x``, or NotImplemented when the run is left to its layers."""
    conv, bn = layers[:2]
    if b.gradients or bn.training or x.ndim != 4:
        return NotImplemented
    steps = conv._step_plans(x.shape, b.dtype, relu=len(layers) == 3)
    if steps is None:
        return NotImplemented
    w_shape, k = steps[1], conv.out_channels
    b.checks.append((bn.__dict__, "training", bn.training))
    b.checks.append((bn.__dict__, "eps", bn.eps))
    weight = b.parameter(conv, "weight", w_shape)
    bias = b.parameter(conv, "bias", (k,)) if conv.bias else None
    scale = b.parameter(bn, "weight", (k,)) if bn.affine else None
    shift = b.parameter(bn, "bias", (k,)) if bn.affine else None
    mean = b.parameter(bn, "running_mean", (k,), group="buffers")
    var = b.parameter(bn, "running_var", (k,), group="buffers")
    folded_w, folded_b = b.buffer(w_shape), b.buffer((k,))
    seen, folded = b.buffer(weight.size + 5 * k), b.buffer((1,), np.int64)
    b.forward("batch_norm2d_fold", (weight, bias, mean, var, scale, shift, folded_w, folded_b,
                                    seen, folded), (k, weight.size // k), (bn.eps,))
    return conv._forward_step(b, steps, x, folded_w, folded_b)[0]


def build_relu(b, layers, x):
    """``BatchNorm2D -> ReLU`` or ``Residual -> ReLU`` (in any mode) as the
    first layer's steps with ReLU in its store: exactly the two layers'
    results, so it is also a fold (tried inside Residual blocks, where most
    of them are)."""
    return layers[0]._build_steps(b, x, relu=True)


# Longest first: a ReLU after the batch norm goes into the convolution's store.
register_fold((Conv2D, BatchNorm2D, ReLU), build)
register_fold((Conv2D, BatchNorm2D), build)
register_fold((BatchNorm2D, ReLU), build_relu)
register_fold((Residual, ReLU), build_relu)

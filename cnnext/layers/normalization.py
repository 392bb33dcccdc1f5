"""BatchNorm2D: batch normalisation of NCHW batches, per channel."""

import math

import numpy as np

from .. import functional as F
from .base import Layer, boolean, layer_dtype, positive_int, zero_parameter

# No layer before a batch norm has that many channels (its filters alone would
# take terabytes); the cap keeps a mistyped size from allocating gigabytes.
MAX_FEATURES = 2**24


def _float(owner, name, value, low, high=math.inf, low_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and (value > low if low_open else value >= low)
            and value <= high):
        raise ValueError(f"{owner}: {name} must be a finite number in "
                         f"{'(' if low_open else '['}{low}, {high}], got {value!r}")
    return value


class BatchNorm2D(Layer):
    """BatchNorm2D(num_features, eps=1e-5, momentum=0.1, affine=True, dtype="float32")

    Batch normalisation of (N, num_features, H, W) batches, as PyTorch's
    ``nn.BatchNorm2d``::

        y = (x - mean) / sqrt(var + eps) * weight + bias      (per channel)

    In training mode mean and var are the batch's (over N, H and W; biased
    variance) and the running statistics are updated,
    ``r = (1 - momentum) * r + momentum * s`` with the unbiased variance
    (with ``momentum=None``: the cumulative average over the batches seen).
    In evaluation mode the running statistics are used; there ``predict``
    and ``evaluate`` fold a BatchNorm2D that follows a Conv2D into the
    convolution's filters and bias, which changes only rounding (within
    2e-5 of the largest output in float32, 1e-12 in float64, of the
    unfolded layers).

    Parameters
    ----------
    num_features : int
        Channels of the input.
    eps : float > 0
        Added to the variance.
    momentum : float in [0, 1] or None
    affine : bool
        Learn ``weight`` (initialised to ones) and ``bias`` (zeros).
    dtype : {"float32", "float64"}

    Attributes
    ----------
    params : dict
        "weight" and "bias", (num_features,), when affine.
    buffers : dict
        "running_mean" (zeros at first), "running_var" (ones) and
        "num_batches_tracked" (0-d int64), as PyTorch names them.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype="float32"):
        super().__init__()
        name = "BatchNorm2D"
        self.num_features = positive_int(name, "num_features", num_features)
        if self.num_features > MAX_FEATURES:
            raise ValueError(f"{name}: num_features may be at most {MAX_FEATURES}, got "
                             f"{self.num_features}")
        self.eps = _float(name, "eps", eps, 0.0, low_open=True)
        self.momentum = None if momentum is None else _float(name, "momentum", momentum, 0.0,
                                                             1.0)
        self.affine = boolean(name, "affine", affine)
        self.dtype = layer_dtype(name, dtype)
        shape = (self.num_features,)
        if self.affine:
            self.params["weight"] = zero_parameter(shape, self.dtype) + 1
            self.params["bias"] = zero_parameter(shape, self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers["running_mean"] = zero_parameter(shape, self.dtype)
        self.buffers["running_var"] = zero_parameter(shape, self.dtype) + 1
        self.buffers["num_batches_tracked"] = np.zeros((), np.int64)

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "dtype": self.dtype.name}

    def __repr__(self):
        extra = "" if self.eps == 1e-5 else f", eps={self.eps!r}"
        extra += "" if self.momentum == 0.1 else f", momentum={self.momentum!r}"
        extra += "" if self.affine else ", affine=False"
        extra += "" if self.dtype.name == "float32" else f", dtype={self.dtype.name!r}"
        return f"BatchNorm2D({self.num_features}{extra})"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self!r} takes (C, H, W) examples, got shape "
                             f"{tuple(input_shape)}")
        if input_shape[0] != self.num_features:
            raise ValueError(f"{self!r} expects {self.num_features} channel(s), got "
                             f"{input_shape[0]}")
        if input_shape[1] < 1 or input_shape[2] < 1:
            raise ValueError(f"{self!r} takes non-empty (H, W) planes, got {tuple(input_shape)}")
        return tuple(input_shape)

    def _checked(self, x):
        x = super()._checked(x)
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] < 2:
            raise ValueError(f"BatchNorm2D.forward: training needs more than one value per "
                             f"channel (N * H * W >= 2), got x of shape {x.shape}")
        return x

    def _invalid_buffer(self, name, value):
        if name == "running_var" and np.size(value) and np.min(value) < 0:
            return "a variance must be >= 0"
        return None

    def _forward(self, x, reuse):
        training = self.training
        momentum = self.momentum
        if training:
            tracked = self.buffers["num_batches_tracked"]
            tracked += 1
            if momentum is None:
                momentum = 1.0 / float(tracked)
        elif momentum is None:
            momentum = 0.0  # unused in evaluation
        y, mean, invstd = F.batch_norm2d(
            x, self.buffers["running_mean"], self.buffers["running_var"],
            self.params.get("weight"), self.params.get("bias"), training, momentum, self.eps,
            out=self._output("y", x.shape, x.dtype, reuse), return_stats=True)
        self._cache = (x.shape, x.dtype, x, mean, invstd, training)
        return y

    def _backward(self, gy, need_input_grad, reuse):
        _, _, x, mean, invstd, training = self._cache
        gx = self._output("gx", x.shape, x.dtype, reuse) if need_input_grad else None
        gx, _, _ = F.batch_norm2d_backward(
            gy, x, mean, invstd, self.params.get("weight"), training,
            need_input_grad=need_input_grad,
            out=(gx, self.grads.get("weight"), self.grads.get("bias")))
        return gx

    def _build_steps(self, b, x, relu=False):
        """The layer's steps; with ``relu``, those of a ReLU layer after it
        too: ReLU applied as the forward stores its output, and its backward
        gating gy by that output (the mask its input would give) as the batch
        norm's backward reads it."""
        n, c, h, w = x.shape
        training = self.training
        if training and n * h * w < 2:
            raise ValueError(f"batch_norm2d: training needs more than one value per channel, "
                             f"got x of shape {x.shape}")
        # Computed as the mode, eps and momentum are now: a change builds a new plan.
        for name in ("training", "eps", "momentum"):
            b.checks.append((self.__dict__, name, getattr(self, name)))
        weight = b.parameter(self, "weight", (c,)) if self.affine else None
        bias = b.parameter(self, "bias", (c,)) if self.affine else None
        running_mean = b.parameter(self, "running_mean", (c,), group="buffers", written=training)
        running_var = b.parameter(self, "running_var", (c,), group="buffers", written=training)
        tracked = (b.parameter(self, "num_batches_tracked", (), group="buffers", dtype=np.int64,
                               written=True)
                   if training else None)
        mean, invstd = b.buffer((c,), np.float64), b.buffer((c,), np.float64)
        scratch = b.workspace(-(-(2 * n * c + 4 * c) * 8 // b.dtype.itemsize))
        y = b.buffer(x.shape)
        momentum = self.momentum
        sizes = (n, c, h * w, training)
        b.forward("batch_norm2d", (x, weight, bias, running_mean, running_var, y, mean, invstd,
                                   scratch, tracked), (*sizes, momentum is None, relu),
                  (self.eps, 0.0 if momentum is None else momentum))
        if b.gradients:
            gweight = b.parameter_gradient(self, "weight", (c,)) if self.affine else None
            gbias = b.parameter_gradient(self, "bias", (c,)) if self.affine else None
            # With relu, y gates gy as the ReLU layer's backward would.
            b.backward("batch_norm2d_backward", (b.gradient(y), x, mean, invstd, weight,
                                                 b.gradient(x), gweight, gbias, scratch,
                                                 y if relu else None), sizes)
        return y

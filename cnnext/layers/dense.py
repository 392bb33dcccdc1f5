"""Dense: a fully connected layer, y = x W^T + b, as ``F.linear``."""

import numpy as np

from .. import functional as F
from .._functional import dense as _dense
from .._typing import DTypeLike, Seed
from .base import (
    Layer,
    boolean,
    check_init,
    check_weight_shape,
    initial_weights,
    layer_dtype,
    positive_int,
    random_generator,
    zero_parameter,
)


class Dense(Layer):
    """Dense(in_features, out_features, bias=True, dtype="float32", init="glorot_uniform",
    seed=None)

    Fully connected layer on (N, in_features) batches: ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of one example's input and output.
    bias : bool
        Learn a bias (initialised to zero).
    dtype : {"float32", "float64"}
        Dtype of the parameters and of the batches the layer takes.
    init : {"glorot_uniform", "he_normal"}
        Weight initialisation.
    seed : None, int or numpy.random.Generator
        Source of the initial weights.

    Attributes
    ----------
    params : dict
        "weight" (out_features, in_features), as PyTorch's Linear, and with
        bias "bias" (out_features,).
    grads : dict
        Gradients of the same names and shapes, written by ``backward``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.layers import Dense
    >>> dense = Dense(1352, 10, seed=0)
    >>> dense.params["weight"].shape                     # (out_features, in_features)
    (10, 1352)
    >>> dense.forward(np.zeros((4, 1352), dtype=np.float32)).shape
    (4, 10)
    >>> dense.num_parameters()
    13530
    """

    _depends_on_mode = False

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: DTypeLike = "float32", init: str = "glorot_uniform",
                 seed: Seed = None) -> None:
        super().__init__()
        self.in_features = positive_int("Dense", "in_features", in_features)
        self.out_features = positive_int("Dense", "out_features", out_features)
        self.bias = boolean("Dense", "bias", bias)
        self.dtype = layer_dtype("Dense", dtype)
        self.init = check_init("Dense", init)
        rng = random_generator("Dense", seed)
        shape = (self.out_features, self.in_features)
        check_weight_shape("Dense", "out_features and in_features", shape)
        self.params["weight"] = initial_weights(shape, self.init, self.in_features,
                                                self.out_features, self.dtype, rng)
        if self.bias:
            self.params["bias"] = zero_parameter((self.out_features,), self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "dtype": self.dtype.name, "init": self.init}

    def __repr__(self):
        bias = "" if self.bias else ", bias=False"
        dtype = "" if self.dtype.name == "float32" else f", dtype={self.dtype.name!r}"
        init = "" if self.init == "glorot_uniform" else f", init={self.init!r}"
        return f"Dense({self.in_features}, {self.out_features}{bias}{dtype}{init})"

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            hint = " (add a Flatten() before it)" if len(input_shape) > 1 else ""
            raise ValueError(f"{self!r} takes examples of shape ({self.in_features},), "
                             f"got {tuple(input_shape)}{hint}")
        return (self.out_features,)

    def forward(self, x):
        # A call matching a remembered F.linear call (whose validation covered
        # every check of the layer's own) runs its kernel before any Python
        # check; anything else takes the validated path.
        if type(self) is Dense and _dense._KERNELS is _dense._DISPATCHED:
            params = self.params
            y = _dense._LINEAR.run((x, params["weight"], params.get("bias")))
            if y is not None and x.dtype is self.dtype:
                self._cache = (x.shape, self.dtype, x)
                return y
        return Layer.forward(self, x)

    def backward(self, gy):
        cache = self._cache
        if type(self) is Dense and cache is not None and _dense._KERNELS is _dense._DISPATCHED:
            grads = self.grads
            result = _dense._LINEAR_BACKWARD.run(
                (gy, cache[2], self.params["weight"]), True,
                (None, grads["weight"], grads.get("bias")))
            if result is not None:
                return result[0]
        return Layer.backward(self, gy)

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype, x)
        params = self.params
        if not reuse and _dense._KERNELS is _dense._DISPATCHED:
            # A call repeating a remembered one: straight to its kernel.
            y = _dense._LINEAR.run((x, params["weight"], params.get("bias")))
            if y is not None:
                return y
        out = self._output("y", (x.shape[0], self.out_features), x.dtype, reuse)
        return F.linear(x, params["weight"], params.get("bias"), out=out)

    def _backward(self, gy, need_input_grad, reuse):
        x = self._cache[2]
        grads = self.grads
        if not reuse and _dense._KERNELS is _dense._DISPATCHED:
            result = _dense._LINEAR_BACKWARD.run((gy, x, self.params["weight"]),
                                                 need_input_grad,
                                                 (None, grads["weight"], grads.get("bias")))
            if result is not None:
                return result[0]
        gx = self._output("gx", x.shape, x.dtype, reuse) if need_input_grad else None
        gx, _, _ = F.linear_backward(
            gy, x, self.params["weight"], need_input_grad,
            out=(gx, grads["weight"], grads.get("bias")))
        return gx

    def _build_steps(self, b, x):
        shape = (self.out_features, self.in_features)
        weight = b.parameter(self, "weight", shape)
        bias = b.parameter(self, "bias", (self.out_features,)) if self.bias else None
        y = b.buffer((b.batch, self.out_features))
        sizes = (b.batch, self.in_features, self.out_features)
        b.forward("linear", (x, weight, bias, y), sizes)
        if b.gradients:
            gw = b.parameter_gradient(self, "weight", shape)
            gb = (b.parameter_gradient(self, "bias", (self.out_features,)) if self.bias
                  else b.buffer((self.out_features,)))
            b.backward("linear_backward", (b.gradient(y), x, weight, b.gradient(x), gw, gb),
                       (*sizes, 0), (1.0,))
        return y

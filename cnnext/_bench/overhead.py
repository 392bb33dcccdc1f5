"""The ``overhead`` family: what a repeated functional or layer call costs above its kernel.

Case ``overhead.<op>`` times a call whose shapes and dtypes repeat the
previous call's (the seed network at batch 1: 8 filters 3x3 on a 28x28
image, 2x2 max pooling of the 8x26x26 result, a dense layer 1352 -> 10), as
users call it: ``F.conv2d(x, w, b)``, ``conv.forward(x)``, ...  The
``kernel`` implementation runs the very step that call runs (the kernel its
repeat-call fast path bound, cnnext/_kernels/_calls.pyx) many times in one
compiled call, with no Python in between: the difference is the overhead.

Each op: (make(dtype, rng) -> inputs, call(inputs) -> the call with its
arguments bound (a functools.partial: calling it costs what the user's own
call costs), outputs(result) -> {name: array}, reference(inputs) -> {name:
float64 array}, kernel(inputs) -> (Calls, operands, extra) of the functional
call whose step it times).
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

import numpy as np

from .. import _reference


@dataclass(frozen=True)
class Op:
    make: Callable
    call: Callable
    outputs: Callable
    reference: Callable
    kernel: Callable


def _arrays(dtype, rng, **shapes):
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}


def _conv_inputs(dtype, rng):
    inputs = _arrays(dtype, rng, x=(1, 1, 28, 28), w=(8, 1, 3, 3), b=(8,), gy=(1, 8, 26, 26))
    inputs["w"] /= 3
    return inputs


def _pool_inputs(dtype, rng):
    size = 8 * 26 * 26
    x = (rng.permutation(size) / size - 0.5).reshape(1, 8, 26, 26).astype(dtype)  # no ties
    _, idx = _reference.max_pool2d(x, 2, return_indices=True)
    return {"x": x, "gy": rng.standard_normal((1, 8, 13, 13)).astype(dtype), "idx": idx}


def _dense_inputs(dtype, rng):
    return _arrays(dtype, rng, x=(1, 1352), w=(10, 1352), b=(10,), gy=(1, 10))


def _relu_inputs(dtype, rng):
    return _arrays(dtype, rng, x=(1, 8, 26, 26), gy=(1, 8, 26, 26))


def _loss_inputs(dtype, rng):
    return {"logits": rng.standard_normal((1, 10)).astype(dtype),
            "labels": np.array([3], np.int64)}


def _functional(name):
    return getattr(import_module("cnnext.functional"), name)


def _calls(module, name):
    return getattr(import_module(f"cnnext._functional.{module}"), name)


def _layer(inputs, kind):
    """The layer of ``kind`` holding the case's weights, built once per inputs."""
    key = f"_{kind}"
    if key not in inputs:
        layers = import_module("cnnext.layers")
        dtype = inputs["x"].dtype.name
        if kind == "conv":
            layer = layers.Conv2D(1, 8, 3, dtype=dtype)
            layer.params["weight"][...] = inputs["w"]
            layer.params["bias"][...] = inputs["b"]
        elif kind == "dense":
            layer = layers.Dense(1352, 10, dtype=dtype)
            layer.params["weight"][...] = inputs["w"]
            layer.params["bias"][...] = inputs["b"]
        elif kind == "pool":
            layer = layers.MaxPool2D(2)
        else:
            layer = layers.ReLU()
        inputs[key] = layer
    return inputs[key]


def _layer_backward(inputs, kind):
    """``layer.backward(gy)`` after one forward (a layer keeps its last input);
    results (gx, the layer), for ``_grads``."""
    layer = _layer(inputs, kind)
    layer.forward(inputs["x"])
    backward = functools.partial(layer.backward, inputs["gy"])
    backward.layer = layer
    return backward


def _grads(gx, call):
    return {"gx": gx, **{f"g{name[0]}": grad for name, grad in call.layer.grads.items()}}


def _conv_kernel(inputs):
    return _calls("conv", "_CONV2D"), (inputs["x"], inputs["w"], inputs["b"]), (1, 0, 1)


def _conv_backward_kernel(inputs):
    return (_calls("conv", "_CONV2D_BACKWARD"), (inputs["gy"], inputs["x"], inputs["w"]),
            (1, 0, 1, False))


def _dense_kernel(inputs):
    return _calls("dense", "_LINEAR"), (inputs["x"], inputs["w"], inputs["b"]), None


def _dense_backward_kernel(inputs):
    return _calls("dense", "_LINEAR_BACKWARD"), (inputs["gy"], inputs["x"], inputs["w"]), True


# max_pool2d's repeat key: (kernel_size, stride, padding, return_indices,
# dilation, ceil_mode) as the call gave them.
def _pool_kernel(inputs):
    return _calls("pooling", "_MAX_CALLS"), (inputs["x"],), (2, None, 0, True, 1, False)


def _pool_backward_kernel(inputs):
    return (_calls("pooling", "_MAX_BACKWARD_CALLS"), (inputs["gy"], inputs["idx"]),
            inputs["x"].shape)


def _relu_kernel(inputs):
    return _calls("activation", "_RELU_CALLS"), (inputs["x"],), None


def _relu_backward_kernel(inputs):
    return _calls("activation", "_RELU_BACKWARD_CALLS"), (inputs["gy"], inputs["x"]), None


def _conv_reference(inputs):
    return {"y": _reference.conv2d(inputs["x"], inputs["w"], inputs["b"])}


def _conv_backward_reference(inputs):
    _, gw, gb = _reference.conv2d_backward(inputs["gy"], inputs["x"], inputs["w"],
                                           need_input_grad=False)
    return {"gw": gw, "gb": gb}


def _conv_layer_backward_reference(inputs):
    gx, gw, gb = _reference.conv2d_backward(inputs["gy"], inputs["x"], inputs["w"])
    return {"gx": gx, "gw": gw, "gb": gb}


def _dense_backward_reference(inputs):
    gx, gw, gb = _reference.linear_backward(inputs["gy"], inputs["x"], inputs["w"])
    return {"gx": gx, "gw": gw, "gb": gb}


def _relu_backward_reference(inputs):
    return {"gx": _reference.relu_backward(inputs["gy"], inputs["x"])}


def _pool_reference(inputs):
    y, idx = _reference.max_pool2d(inputs["x"], 2, return_indices=True)
    return {"y": y, "idx": idx}


def _pool_backward_reference(inputs):
    return {"gx": _reference.max_pool2d_backward(inputs["gy"], inputs["idx"], inputs["x"].shape)}


def _layer_pool_kernel(inputs):
    # MaxPool2D passes its stride and asks for the indices.
    return _calls("pooling", "_MAX_CALLS"), (inputs["x"],), (2, 2, 0, True, 1, False)


def _layer_conv_backward_kernel(inputs):
    # Conv2D.backward computes the input gradient too.
    return (_calls("conv", "_CONV2D_BACKWARD"), (inputs["gy"], inputs["x"], inputs["w"]),
            (1, 0, 1, True))


OPS = {
    "conv2d": Op(_conv_inputs,
                 lambda i: functools.partial(_functional("conv2d"), i["x"], i["w"], i["b"]),
                 lambda y: {"y": y}, _conv_reference, _conv_kernel),
    "conv2d_backward": Op(
        _conv_inputs,
        lambda i: functools.partial(_functional("conv2d_backward"), i["gy"], i["x"],
                                            i["w"], need_input_grad=False),
        lambda r: {"gw": r[1], "gb": r[2]}, _conv_backward_reference, _conv_backward_kernel),
    "max_pool2d": Op(_pool_inputs,
                     lambda i: functools.partial(_functional("max_pool2d"), i["x"], 2,
                                                       return_indices=True),
                     lambda r: {"y": r[0], "idx": r[1]}, _pool_reference, _pool_kernel),
    "max_pool2d_backward": Op(
        _pool_inputs,
        lambda i: functools.partial(_functional("max_pool2d_backward"), i["gy"], i["idx"],
                                    i["x"].shape),
        lambda gx: {"gx": gx}, _pool_backward_reference, _pool_backward_kernel),
    "relu": Op(_relu_inputs, lambda i: functools.partial(_functional("relu"), i["x"]),
               lambda y: {"y": y}, lambda i: {"y": _reference.relu(i["x"])}, _relu_kernel),
    "relu_backward": Op(_relu_inputs,
                        lambda i: functools.partial(_functional("relu_backward"), i["gy"], i["x"]),
                        lambda gx: {"gx": gx}, _relu_backward_reference,
                        _relu_backward_kernel),
    "linear": Op(_dense_inputs,
                 lambda i: functools.partial(_functional("linear"), i["x"], i["w"], i["b"]),
                 lambda y: {"y": y}, lambda i: {"y": _reference.linear(i["x"], i["w"], i["b"])},
                 _dense_kernel),
    "linear_backward": Op(
        _dense_inputs, lambda i: functools.partial(_functional("linear_backward"), i["gy"], i["x"],
                                            i["w"]),
        lambda r: {"gx": r[0], "gw": r[1], "gb": r[2]}, _dense_backward_reference,
        _dense_backward_kernel),
    "softmax_cross_entropy": Op(
        _loss_inputs,
        lambda i: functools.partial(_functional("softmax_cross_entropy"), i["logits"],
                                    i["labels"]),
        lambda r: {"loss": np.float64(r[0]), "grad": r[1]},
        lambda i: dict(zip(("loss", "grad"),
                           _reference.softmax_cross_entropy(i["logits"], i["labels"]),
                           strict=True)),
        lambda i: (_calls("loss", "_CROSS_ENTROPY_CALLS"), (i["logits"], i["labels"]), None)),
    "Conv2D.forward": Op(_conv_inputs,
                         lambda i: functools.partial(_layer(i, "conv").forward, i["x"]),
                         lambda y: {"y": y}, _conv_reference, _conv_kernel),
    "Conv2D.backward": Op(
        _conv_inputs, lambda i: _layer_backward(i, "conv"),
        None, _conv_layer_backward_reference,
        _layer_conv_backward_kernel),
    "MaxPool2D.forward": Op(_pool_inputs,
                            lambda i: functools.partial(_layer(i, "pool").forward, i["x"]),
                            lambda y: {"y": y},
                            lambda i: {"y": _reference.max_pool2d(i["x"], 2)},
                            _layer_pool_kernel),
    "Dense.forward": Op(_dense_inputs,
                        lambda i: functools.partial(_layer(i, "dense").forward, i["x"]),
                        lambda y: {"y": y},
                        lambda i: {"y": _reference.linear(i["x"], i["w"], i["b"])},
                        _dense_kernel),
    "Dense.backward": Op(_dense_inputs, lambda i: _layer_backward(i, "dense"),
                         None, _dense_backward_reference,
                         _dense_backward_kernel),
    "ReLU.forward": Op(_relu_inputs,
                       lambda i: functools.partial(_layer(i, "relu").forward, i["x"]),
                       lambda y: {"y": y}, lambda i: {"y": _reference.relu(i["x"])},
                       _relu_kernel),
}

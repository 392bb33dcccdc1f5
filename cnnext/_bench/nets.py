"""The benchmarked networks (training and inference), described once for every implementation.

A network is a list of small layer records (``Conv``, ``MaxPool``, ``AvgPool``,
``ReLU``, ``Flatten``, ``Dense``).  Each implementation builds its own model
from the list (cnnext layers, ``torch.nn``), so all of them train exactly the
same architecture from the same starting weights.  ``sgd_step`` runs one step
of plain SGD on any module with the signatures of ``cnnext.functional``: with
``cnnext._reference`` it is the float64 oracle of a training step, with
``cnnext._bench.numpy_baseline`` it is the NumPy baseline; ``forward`` is the
inference pass alone (the oracle of ``predict``, with a softmax after it).

Parameters are kept in one canonical layout, a list with one dict per layer
(empty for layers without parameters): convolution ``weight`` (K, C, R, S)
and ``bias`` (K,), dense ``weight`` (out, in) and ``bias`` (out,).
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Conv:
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True


@dataclass(frozen=True)
class MaxPool:
    kernel_size: int


@dataclass(frozen=True)
class AvgPool:
    kernel_size: int


@dataclass(frozen=True)
class ReLU:
    pass


@dataclass(frozen=True)
class Flatten:
    pass


@dataclass(frozen=True)
class Dense:
    in_features: int
    out_features: int
    bias: bool = True


@dataclass(frozen=True)
class Network:
    name: str
    input_shape: tuple  # (C, H, W) of one image
    layers: tuple
    n_classes: int = 10


NETWORKS = {
    # cnnext.models.seed_cnn(): the notebook's Conv(8, 3) -> MaxPool(2) -> Softmax(1352, 10).
    "notebook": Network("notebook", (1, 28, 28), (
        Conv(1, 8, 3, bias=False), MaxPool(2), Flatten(), Dense(8 * 13 * 13, 10),
    )),
    # cnnext.models.lenet5(): LeCun et al. 1998 with ReLU and max pooling.
    "lenet5": Network("lenet5", (1, 28, 28), (
        Conv(1, 6, 5, padding=2), ReLU(), MaxPool(2),
        Conv(6, 16, 5), ReLU(), MaxPool(2),
        Flatten(), Dense(16 * 5 * 5, 120), ReLU(), Dense(120, 84), ReLU(), Dense(84, 10),
    )),
}


def _conv_out(size, layer):
    return (size + 2 * layer.padding - layer.kernel_size) // layer.stride + 1


def shapes(network):
    """The (C, H, W) or (features,) shape of one image after each layer."""
    shape = network.input_shape
    result = []
    for layer in network.layers:
        if isinstance(layer, Conv):
            shape = (layer.out_channels, _conv_out(shape[1], layer), _conv_out(shape[2], layer))
        elif isinstance(layer, (MaxPool, AvgPool)):
            shape = (shape[0], shape[1] // layer.kernel_size, shape[2] // layer.kernel_size)
        elif isinstance(layer, Flatten):
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, Dense):
            shape = (layer.out_features,)
        result.append(shape)
    return result


def training_flops_per_image(network):
    """Multiply-add FLOPs (2 per MAC) of forward and backward for one image.

    Forward, weight gradient and input gradient each cost one pass of MACs,
    except that the first layer needs no input gradient.  Pooling, ReLU and
    the loss are left out: they are memory traffic, not arithmetic.
    """
    flops = 0
    for position, (layer, out_shape) in enumerate(
            zip(network.layers, shapes(network), strict=True)):
        if isinstance(layer, Conv):
            macs = int(np.prod(out_shape)) * layer.in_channels * layer.kernel_size ** 2
        elif isinstance(layer, Dense):
            macs = layer.in_features * layer.out_features
        else:
            continue
        passes = 2 if position == 0 else 3
        flops += 2 * macs * passes
    return flops


def inference_flops_per_image(network):
    """Multiply-add FLOPs (2 per MAC) of one image's forward pass (see above)."""
    flops = 0
    for layer, out_shape in zip(network.layers, shapes(network), strict=True):
        if isinstance(layer, Conv):
            flops += 2 * int(np.prod(out_shape)) * layer.in_channels * layer.kernel_size ** 2
        elif isinstance(layer, Dense):
            flops += 2 * layer.in_features * layer.out_features
    return flops


def init_params(network, rng):
    """Canonical float64 parameters, He-scaled normal weights and small biases."""
    params = []
    for layer in network.layers:
        if isinstance(layer, Conv):
            fan_in = layer.in_channels * layer.kernel_size ** 2
            shape = (layer.out_channels, layer.in_channels, layer.kernel_size, layer.kernel_size)
            entry = {"weight": rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)}
            if layer.bias:
                entry["bias"] = 0.1 * rng.standard_normal(layer.out_channels)
        elif isinstance(layer, Dense):
            shape = (layer.out_features, layer.in_features)
            entry = {"weight": rng.standard_normal(shape) * np.sqrt(2.0 / layer.in_features)}
            if layer.bias:
                entry["bias"] = 0.1 * rng.standard_normal(layer.out_features)
        else:
            entry = {}
        params.append(entry)
    return params


def forward(ops, network, params, x):
    """The logits of ``network`` on the batch ``x`` (``ops`` as in ``sgd_step``)."""
    out = x
    for layer, p in zip(network.layers, params, strict=True):
        if isinstance(layer, Conv):
            out = ops.conv2d(out, p["weight"], p.get("bias"), layer.stride, layer.padding)
        elif isinstance(layer, MaxPool):
            out = ops.max_pool2d(out, layer.kernel_size)
        elif isinstance(layer, AvgPool):
            out = ops.avg_pool2d(out, layer.kernel_size)
        elif isinstance(layer, ReLU):
            out = ops.relu(out)
        elif isinstance(layer, Flatten):
            out = out.reshape(out.shape[0], -1)
        elif isinstance(layer, Dense):
            out = out @ p["weight"].T
            if "bias" in p:
                out = out + p["bias"]
    return out


def sgd_step(ops, network, params, x, labels, lr):
    """One step of plain SGD on the batch ``x``; updates ``params`` in place, returns the loss.

    ``ops`` is a module with the signatures of ``cnnext.functional``.  The
    loss is the mean softmax cross-entropy over the batch.
    """
    saved = []
    out = x
    for layer, p in zip(network.layers, params, strict=True):
        saved.append(out)
        if isinstance(layer, Conv):
            out = ops.conv2d(out, p["weight"], p.get("bias"), layer.stride, layer.padding)
        elif isinstance(layer, MaxPool):
            out, index = ops.max_pool2d(out, layer.kernel_size, return_indices=True)
            saved[-1] = (out.shape, index, saved[-1].shape)
        elif isinstance(layer, AvgPool):
            out = ops.avg_pool2d(out, layer.kernel_size)
        elif isinstance(layer, ReLU):
            out = ops.relu(out)
        elif isinstance(layer, Flatten):
            out = out.reshape(out.shape[0], -1)
        elif isinstance(layer, Dense):
            out = out @ p["weight"].T
            if "bias" in p:
                out = out + p["bias"]
    loss, grad = ops.softmax_cross_entropy(out, labels)

    for position in range(len(network.layers) - 1, -1, -1):
        layer, p, before = network.layers[position], params[position], saved[position]
        need_input_grad = position > 0
        if isinstance(layer, Conv):
            gx, gw, gb = ops.conv2d_backward(grad, before, p["weight"], layer.stride,
                                             layer.padding, need_input_grad=need_input_grad)
            grads = {"weight": gw, "bias": gb}
            grad = gx
        elif isinstance(layer, MaxPool):
            _, index, x_shape = before
            grad = ops.max_pool2d_backward(grad, index, x_shape)
            grads = {}
        elif isinstance(layer, AvgPool):
            grad = ops.avg_pool2d_backward(grad, before.shape, layer.kernel_size)
            grads = {}
        elif isinstance(layer, ReLU):
            grad = ops.relu_backward(grad, before)
            grads = {}
        elif isinstance(layer, Flatten):
            grad = grad.reshape(before.shape)
            grads = {}
        else:
            grads = {"weight": grad.T @ before, "bias": grad.sum(axis=0)}
            grad = grad @ p["weight"] if need_input_grad else None
        for name, value in p.items():
            value -= lr * grads[name].astype(value.dtype, copy=False)
    return float(loss)

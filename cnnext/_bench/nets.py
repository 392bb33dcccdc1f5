"""The benchmarked networks (training and inference), described once for every implementation.

A network is a list of small layer records (``Conv``, ``MaxPool``, ``AvgPool``,
``ReLU``, ``Flatten``, ``Dense``, ``BatchNorm``, ``GlobalAvgPool`` and
``Residual``, which holds two such lists).  Each implementation builds its own model
from the list (cnnext layers, ``torch.nn``), so all of them train exactly the
same architecture from the same starting weights.  ``sgd_step`` runs one step
of plain SGD on any module with the signatures of ``cnnext.functional``: with
``cnnext._reference`` it is the float64 oracle of a training step, with
``cnnext._bench.numpy_baseline`` it is the NumPy baseline; ``forward`` is the
inference pass alone (the oracle of ``predict``, with a softmax after it).

Parameters are kept in one canonical layout, a list with one dict per layer
(empty for layers without parameters): convolution ``weight`` (K, C, R, S)
and ``bias`` (K,), dense ``weight`` (out, in) and ``bias`` (out,), batch norm
``weight`` and ``bias`` (C,); a residual block's dict holds its layers'
parameters as "block.<i>.<name>" and "shortcut.<i>.<name>", as cnnext's
``Residual.params`` and PyTorch's ``named_parameters`` name them.  Batch
norm trains on the batch's statistics (its running statistics are not
part of the checked step).
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
class BatchNorm:
    num_features: int


@dataclass(frozen=True)
class GlobalAvgPool:
    pass


@dataclass(frozen=True)
class Residual:
    block: tuple
    shortcut: tuple = None  # None: the identity


@dataclass(frozen=True)
class Network:
    name: str
    input_shape: tuple  # (C, H, W) of one image
    layers: tuple
    n_classes: int = 10


def _basic_block(in_channels, out_channels, stride):
    block = (Conv(in_channels, out_channels, 3, stride, 1, bias=False), BatchNorm(out_channels),
             ReLU(), Conv(out_channels, out_channels, 3, 1, 1, bias=False),
             BatchNorm(out_channels))
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = (Conv(in_channels, out_channels, 1, stride, 0, bias=False),
                    BatchNorm(out_channels))
    return Residual(block, shortcut), ReLU()


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
    # cnnext.models.resnet8(): a 3x3 stem, three basic residual blocks, global pooling.
    "resnet8": Network("resnet8", (1, 28, 28), (
        Conv(1, 16, 3, padding=1, bias=False), BatchNorm(16), ReLU(),
        *_basic_block(16, 16, 1), *_basic_block(16, 32, 2), *_basic_block(32, 64, 2),
        GlobalAvgPool(), Dense(64, 10),
    )),
}


def _conv_out(size, layer):
    return (size + 2 * layer.padding - layer.kernel_size) // layer.stride + 1


def _shapes(layers, shape):
    result = []
    for layer in layers:
        if isinstance(layer, Conv):
            shape = (layer.out_channels, _conv_out(shape[1], layer), _conv_out(shape[2], layer))
        elif isinstance(layer, (MaxPool, AvgPool)):
            shape = (shape[0], shape[1] // layer.kernel_size, shape[2] // layer.kernel_size)
        elif isinstance(layer, Flatten):
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, Dense):
            shape = (layer.out_features,)
        elif isinstance(layer, GlobalAvgPool):
            shape = (shape[0],)
        elif isinstance(layer, Residual):
            shape = _shapes(layer.block, shape)[-1]
        result.append(shape)
    return result


def shapes(network):
    """The (C, H, W) or (features,) shape of one image after each layer."""
    return _shapes(network.layers, network.input_shape)


def _macs(layers, shape):
    """[(multiply-adds, is the network's first layer)] of every conv and dense layer."""
    found = []
    for layer, out_shape in zip(layers, _shapes(layers, shape), strict=True):
        if isinstance(layer, Conv):
            found.append(int(np.prod(out_shape)) * layer.in_channels * layer.kernel_size ** 2)
        elif isinstance(layer, Dense):
            found.append(layer.in_features * layer.out_features)
        elif isinstance(layer, Residual):
            found += _macs(layer.block, shape) + _macs(layer.shortcut or (), shape)
        shape = out_shape
    return found


def training_flops_per_image(network):
    """Multiply-add FLOPs (2 per MAC) of forward and backward for one image.

    Forward, weight gradient and input gradient each cost one pass of MACs,
    except that the first layer needs no input gradient.  Pooling, ReLU,
    batch norm and the loss are left out: they are memory traffic, not
    arithmetic.
    """
    macs = _macs(network.layers, network.input_shape)
    return 2 * (2 * macs[0] + 3 * sum(macs[1:]))


def inference_flops_per_image(network):
    """Multiply-add FLOPs (2 per MAC) of one image's forward pass (see above)."""
    return 2 * sum(_macs(network.layers, network.input_shape))


def init_params(network, rng):
    """Canonical float64 parameters, He-scaled normal weights and small biases."""
    return _init(network.layers, rng)


def _init(layers, rng):
    params = []
    for layer in layers:
        if isinstance(layer, Residual):
            entry = {}
            for prefix, part in (("block", layer.block), ("shortcut", layer.shortcut or ())):
                for i, sub in enumerate(_init(part, rng)):
                    entry.update({f"{prefix}.{i}.{name}": value for name, value in sub.items()})
        elif isinstance(layer, BatchNorm):
            entry = {"weight": 1 + 0.1 * rng.standard_normal(layer.num_features),
                     "bias": 0.1 * rng.standard_normal(layer.num_features)}
        elif isinstance(layer, Conv):
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
    """The logits of ``network`` on the batch ``x`` (``ops`` as in ``sgd_step``), batch
    norm in evaluation mode (running statistics at their initial 0 and 1)."""
    return _inference(ops, network.layers, params, x)


def _inference(ops, layers, params, x):
    out = x
    for layer, p in zip(layers, params, strict=True):
        if isinstance(layer, Residual):
            side = out
            if layer.shortcut is not None:
                side = _inference(ops, layer.shortcut,
                                  _sub_params(p, "shortcut", len(layer.shortcut)), out)
            out = _inference(ops, layer.block, _sub_params(p, "block", len(layer.block)),
                             out) + side
        elif isinstance(layer, BatchNorm):
            c = layer.num_features
            out = ops.batch_norm2d(out, np.zeros(c, out.dtype), np.ones(c, out.dtype),
                                   p["weight"], p["bias"])
        elif isinstance(layer, GlobalAvgPool):
            out = out.mean(axis=(2, 3))
        elif isinstance(layer, Conv):
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


def _sub_params(p, prefix, count):
    """The per-layer dicts of a residual block's part ``prefix`` (the same arrays)."""
    parts = [{} for _ in range(count)]
    for key, value in p.items():
        part, index, name = key.split(".", 2)
        if part == prefix:
            parts[int(index)][name] = value
    return parts


def _forward(ops, layers, params, x):
    """The output of ``layers`` on x and what their backward pass needs."""
    saved = []
    out = x
    for layer, p in zip(layers, params, strict=True):
        saved.append(out)
        if isinstance(layer, Residual):
            block = _sub_params(p, "block", len(layer.block))
            main, inner = _forward(ops, layer.block, block, out)
            side, side_saved = out, None
            if layer.shortcut is not None:
                short = _sub_params(p, "shortcut", len(layer.shortcut))
                side, side_saved = _forward(ops, layer.shortcut, short, out)
            saved[-1] = (out, inner, side_saved)
            out = main + side
        elif isinstance(layer, BatchNorm):
            out, mean, invstd = ops.batch_norm2d(out, None, None, p["weight"], p["bias"], True,
                                                 return_stats=True)
            saved[-1] = (saved[-1], mean, invstd)
        elif isinstance(layer, GlobalAvgPool):
            out = ops.global_avg_pool2d(out)
        elif isinstance(layer, Conv):
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
    return out, saved


def _backward(ops, layers, params, saved, grad, need_input_grad, lr):
    """Back-propagate ``grad`` through ``layers``, stepping their parameters; the
    gradient with respect to their input (None unless ``need_input_grad``)."""
    for position in range(len(layers) - 1, -1, -1):
        layer, p, before = layers[position], params[position], saved[position]
        inner_grad = need_input_grad or position > 0
        grads = {}
        if isinstance(layer, Residual):
            x, inner, side_saved = before
            g_main = _backward(ops, layer.block, _sub_params(p, "block", len(layer.block)),
                               inner, grad, True, lr)
            g_side = grad
            if layer.shortcut is not None:
                g_side = _backward(ops, layer.shortcut,
                                   _sub_params(p, "shortcut", len(layer.shortcut)), side_saved,
                                   grad, True, lr)
            grad = g_main + g_side
            continue
        if isinstance(layer, BatchNorm):
            x, mean, invstd = before
            gx, gw, gb = ops.batch_norm2d_backward(grad, x, mean, invstd, p["weight"], True)
            grads = {"weight": gw, "bias": gb}
            grad = gx
        elif isinstance(layer, GlobalAvgPool):
            grad = ops.global_avg_pool2d_backward(grad, before.shape)
        elif isinstance(layer, Conv):
            gx, gw, gb = ops.conv2d_backward(grad, before, p["weight"], layer.stride,
                                             layer.padding, need_input_grad=inner_grad)
            grads = {"weight": gw, "bias": gb}
            grad = gx
        elif isinstance(layer, MaxPool):
            _, index, x_shape = before
            grad = ops.max_pool2d_backward(grad, index, x_shape)
        elif isinstance(layer, AvgPool):
            grad = ops.avg_pool2d_backward(grad, before.shape, layer.kernel_size)
        elif isinstance(layer, ReLU):
            grad = ops.relu_backward(grad, before)
        elif isinstance(layer, Flatten):
            grad = grad.reshape(before.shape)
        else:
            grads = {"weight": grad.T @ before, "bias": grad.sum(axis=0)}
            grad = grad @ p["weight"] if inner_grad else None
        for name, value in p.items():
            value -= lr * grads[name].astype(value.dtype, copy=False)
    return grad


def sgd_step(ops, network, params, x, labels, lr):
    """One step of plain SGD on the batch ``x``; updates ``params`` in place, returns the loss.

    ``ops`` is a module with the signatures of ``cnnext.functional``.  The
    loss is the mean softmax cross-entropy over the batch.
    """
    out, saved = _forward(ops, network.layers, params, x)
    loss, grad = ops.softmax_cross_entropy(out, labels)
    _backward(ops, network.layers, params, saved, grad, False, lr)
    return float(loss)

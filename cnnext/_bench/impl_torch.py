"""PyTorch on the CPU, called the way its users call it, on the same NumPy buffers.

Forward-only cases run under ``torch.no_grad()``.  Backward-only cases call
the ATen backward operators directly (``convolution_backward``,
``max_pool2d_with_indices_backward``, ``avg_pool2d_backward``), which is what
autograd runs, without building a graph; forward+backward goes through
autograd as a training step would.  Training uses ``torch.nn`` and
``torch.optim.SGD``; inference calls the ``torch.nn`` model and a softmax
under ``torch.inference_mode()``.  Threads are pinned by the harness with
``torch.set_num_threads``.
"""

import functools
import importlib.util

from . import nets
from .cases import train_checks
from .impl_numpy import batches
from .impls import Bound, CallBound, Implementation, Unavailable


def _numpy(result):
    return {name: None if t is None else t.detach().numpy() for name, t in result.items()}


class TorchTrain(Bound):
    def __init__(self, torch, case, dtype, inputs, reference):
        self.torch, self.case, self.inputs, self.reference = torch, case, inputs, reference
        self.dtype = dtype
        # One module per layer, so module i holds the canonical parameters params[i].
        self.model = build_model(torch, case.network).to(getattr(torch, dtype))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=inputs["lr"])
        self.batches = [(torch.from_numpy(x), torch.from_numpy(labels))
                        for x, labels in batches(case, inputs)]
        self.calls_per_run = case.steps
        self.load(inputs["params"])

    def load(self, params):
        load_params(self.torch, self.model, params)

    def step(self, x, labels):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.model(x), labels)
        loss.backward()
        self.optimizer.step()
        return loss

    def run(self):
        for x, labels in self.batches:
            self.step(x, labels)

    def check(self):
        self.load(self.inputs["params"])
        loss = self.step(*self.batches[0]).item()
        params = [{name: module.get_parameter(name).detach().numpy() for name in p}
                  for module, p in zip(self.model, self.inputs["params"], strict=True)]
        return train_checks(self.reference, loss, self.inputs["params"], params, self.dtype)


def load_params(torch, model, params):
    """Copy the canonical parameters (one dict per layer) into the modules of ``model``."""
    with torch.no_grad():
        for module, p in zip(model, params, strict=True):
            for name, value in p.items():
                module.get_parameter(name).copy_(torch.from_numpy(value))


def predict_model(torch, case, dtype, params):
    """The ``torch.nn`` network of a predict case with its weights, in eval mode."""
    model = build_model(torch, case.network).to(getattr(torch, dtype))
    load_params(torch, model, params)
    return model.eval()


def build_model(torch, network):
    return torch.nn.Sequential(*_modules(torch, network.layers))


def _modules(torch, layers):
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, block, shortcut):
            super().__init__()
            self.block = nn.Sequential(*block)
            self.shortcut = None if shortcut is None else nn.Sequential(*shortcut)

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    modules = []
    for layer in layers:
        if isinstance(layer, nets.Residual):
            modules.append(Residual(_modules(torch, layer.block), None if layer.shortcut is None
                                    else _modules(torch, layer.shortcut)))
        elif isinstance(layer, nets.BatchNorm):
            modules.append(nn.BatchNorm2d(layer.num_features))
        elif isinstance(layer, nets.GlobalAvgPool):
            modules.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        elif isinstance(layer, nets.Conv):
            modules.append(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                     layer.stride, layer.padding, bias=layer.bias))
        elif isinstance(layer, nets.MaxPool):
            modules.append(nn.MaxPool2d(layer.kernel_size))
        elif isinstance(layer, nets.AvgPool):
            modules.append(nn.AvgPool2d(layer.kernel_size))
        elif isinstance(layer, nets.ReLU):
            modules.append(nn.ReLU())
        elif isinstance(layer, nets.Flatten):
            modules.append(nn.Flatten())
        else:
            modules.append(nn.Linear(layer.in_features, layer.out_features, bias=layer.bias))
    return modules


class Torch(Implementation):
    name = "torch"
    _module = None

    def torch(self):
        if self._module is None:
            if importlib.util.find_spec("torch") is None:
                raise Unavailable("not installed", "PyTorch is not installed (pip install torch)")
            import torch

            Torch._module = torch
        return self._module

    def version(self):
        return self.torch().__version__

    def supports(self, case, dtype):
        return case.family not in ("copy", "overhead")

    def bind(self, case, dtype, inputs, reference):
        torch = self.torch()
        if case.family == "train":
            return TorchTrain(torch, case, dtype, inputs, reference)
        if case.family == "predict":
            return _predict(torch, case, dtype, inputs, reference)
        if case.family == "conv2d":
            return _conv(torch, case, inputs, reference)
        if case.family == "fused":
            return _fused(torch, case, inputs, reference)
        if case.family in ("batch_norm2d", "depthwise2d"):
            return _layer_step(torch, case, inputs, reference)
        return _pool(torch, case, inputs, reference)


def _conv(torch, case, inputs, reference):
    tf = torch.nn.functional
    x, w, b, gy = (torch.from_numpy(inputs[name]) for name in ("x", "w", "b", "gy"))
    stride, padding = inputs["stride"], inputs["padding"]
    if case.op == "forward":
        def forward():
            with torch.no_grad():
                return tf.conv2d(x, w, b, stride, padding)

        return CallBound(forward, lambda y: _numpy({"y": y}), reference)
    if case.op != "forward-backward":
        backward = functools.partial(
            torch.ops.aten.convolution_backward, gy, x, w, [w.shape[0]], [stride] * 2,
            [padding] * 2, [1, 1], False, [0, 0], 1, [case.need_input_grad, True, True])
        return CallBound(backward, lambda r: _numpy(dict(zip(("gx", "gw", "gb"), r, strict=True))),
                         reference)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        y = tf.conv2d(*leaves, stride, padding)
        y.backward(gy)
        return y, *(leaf.grad for leaf in leaves)

    names = ("y", "gx", "gw", "gb")
    return CallBound(forward_backward, lambda r: _numpy(dict(zip(names, r, strict=True))),
                     reference)


def _predict(torch, case, dtype, inputs, reference):
    model = predict_model(torch, case, dtype, inputs["params"])
    x = torch.from_numpy(inputs["images"])

    def predict():
        with torch.inference_mode():
            return torch.softmax(model(x), dim=1)

    return CallBound(predict, lambda probs: {"probs": probs.numpy()}, reference)


def _pool(torch, case, inputs, reference):
    tf, aten = torch.nn.functional, torch.ops.aten
    x, gy = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["gy"])
    kernel, stride = [inputs["kernel_size"]] * 2, [inputs["stride"]] * 2
    if case.op == "forward":
        pool = tf.max_pool2d if case.family == "max_pool2d" else tf.avg_pool2d
        extra = {"return_indices": True} if case.family == "max_pool2d" else {}

        def forward():
            with torch.no_grad():
                return pool(x, kernel, stride, **extra)

        names = ("y", "idx") if case.family == "max_pool2d" else ("y",)
        return CallBound(forward, lambda r: _numpy(dict(zip(
            names, r if isinstance(r, tuple) else (r,), strict=True))), reference)
    if case.family == "max_pool2d":
        idx = torch.from_numpy(inputs["idx"])
        call = functools.partial(aten.max_pool2d_with_indices_backward, gy, x, kernel, stride,
                                 [0, 0], [1, 1], False, idx)
    else:
        call = functools.partial(aten.avg_pool2d_backward, gy, x, kernel, stride, [0, 0], False,
                                 True, None)
    return CallBound(call, lambda gx: _numpy({"gx": gx}), reference)


def _fused(torch, case, inputs, reference):
    """conv2d -> relu -> max_pool2d with indices; the backward as the ATen operators
    autograd runs for that chain (pooling, threshold, convolution)."""
    tf, aten = torch.nn.functional, torch.ops.aten
    x, w, b = (torch.from_numpy(inputs[name]) for name in ("x", "w", "b"))
    stride, padding, pool, relu = (inputs[name] for name in ("stride", "padding", "pool_size",
                                                            "relu"))
    if case.op == "forward":
        def forward():
            with torch.no_grad():
                y = tf.conv2d(x, w, b, stride, padding)
                return tf.max_pool2d(tf.relu(y, inplace=True) if relu else y, pool,
                                     return_indices=True)

        return CallBound(forward, lambda r: _numpy({"y": r[0], "idx": r[1]}), reference)
    gy, idx, activated = (torch.from_numpy(inputs[name]) for name in ("gy", "idx", "conv"))
    need_input_grad = inputs["need_input_grad"]

    def backward():
        dense = aten.max_pool2d_with_indices_backward(gy, activated, [pool] * 2, [pool] * 2,
                                                      [0, 0], [1, 1], False, idx)
        if relu:
            dense = aten.threshold_backward(dense, activated, 0)
        return aten.convolution_backward(dense, x, w, [w.shape[0]], [stride] * 2, [padding] * 2,
                                         [1, 1], False, [0, 0], 1, [need_input_grad, True, True])

    return CallBound(backward, lambda r: _numpy(dict(zip(("gx", "gw", "gb"), r, strict=True))),
                     reference)


def _layer_step(torch, case, inputs, reference):
    """A layer's forward and backward through autograd, as a training step runs them."""
    tf = torch.nn.functional
    x, gy = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["gy"])
    if case.family == "batch_norm2d":
        running = [torch.from_numpy(inputs[name].copy()) for name in ("running_mean",
                                                                      "running_var")]
        params = [torch.from_numpy(inputs[name]) for name in ("weight", "bias")]

        def forward(leaves):
            return tf.batch_norm(leaves[0], *running, *leaves[1:], training=True)
    else:
        params = [torch.from_numpy(inputs[name]) for name in ("w", "b")]

        def forward(leaves):
            return tf.conv2d(*leaves, inputs["stride"], 1, 1, x.shape[1])
    leaves = [t.clone().requires_grad_() for t in (x, *params)]

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        y = forward(leaves)
        y.backward(gy)
        return y, *(leaf.grad for leaf in leaves)

    names = ("y", "gx", "gw", "gb")
    return CallBound(forward_backward, lambda r: _numpy(dict(zip(names, r, strict=True))),
                     reference)

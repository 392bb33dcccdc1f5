"""The notebook's algorithm: per-image Python loops (``notebook_loops``) and ``cnnext.compat``.

Both modules have the notebook's classes (``Conv(num_filters, filters_length)``,
``MaxPool(Pool_length)``, ``Softmax(input_len, nodes)``), one 2-D image at a
time in (H, W, C) layout, float64.  The loops are slow, so they process a
handful of the batch's images and the time per call is extrapolated from the
time per image (``calls_per_run`` < 1, flagged in the report).  A training
step is the notebook's: forward, cross-entropy gradient ``-1 / p[label]``,
``backprop`` through the three layers with plain SGD updates in place.
"""

import numpy as np

from .. import _reference
from . import nets
from .cases import train_checks, train_reference
from .impls import Bound, Implementation, import_optional

# How many images the loops process per timed run (each takes milliseconds).
IMAGES_PER_RUN = {"conv2d": 2, "max_pool2d": 2, "train": 4}


def _hwc(x):
    """(N, C, H, W) -> (N, H, W, C), the notebook's per-image layout."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _checks(got, want):
    return [(name, got[name], want[name], None) for name in want]


def _without_global_rng(factory):
    """Build the notebook's layers, which draw from np.random, leaving its state unchanged."""
    state = np.random.get_state()  # noqa: NPY002 - the notebook uses the global RNG
    try:
        return factory()
    finally:
        np.random.set_state(state)  # noqa: NPY002


class NotebookConv(Bound):
    def __init__(self, module, case, inputs, reference):
        count = min(IMAGES_PER_RUN["conv2d"], case.shape.n)
        self.case, self.inputs, self.reference, self.count = case, inputs, reference, count
        self.calls_per_run = count / case.shape.n
        self.images = inputs["x"][:count, 0]
        self.gy = _hwc(inputs["gy"][:count])
        self.conv = _without_global_rng(lambda: module.Conv(case.shape.k, case.shape.r))
        self.lr = 1e-3

    def run(self):
        if self.case.op == "forward":
            for image in self.images:
                self.conv.forward(image)
        else:
            for image, gy in zip(self.images, self.gy, strict=True):
                self.conv.last_input = image
                self.conv.backprop(gy, self.lr)

    def check(self):
        w, b = self.inputs["w"], self.inputs["b"]
        self.conv.filters[...] = w[:, 0]
        if self.case.op == "forward":
            y = _nchw(np.stack([self.conv.forward(image) for image in self.images]))
            # The notebook's convolution has no bias.
            return _checks({"y": y}, {"y": self.reference["y"][: self.count] - b[:, None, None]})
        before = self.conv.filters.copy()
        for image, gy in zip(self.images, self.gy, strict=True):
            self.conv.last_input = image
            self.conv.backprop(gy, 1.0)
        _, gw, _ = _reference.conv2d_backward(self.inputs["gy"][: self.count],
                                              self.inputs["x"][: self.count], w,
                                              need_input_grad=False)
        return _checks({"gw": (before - self.conv.filters)[:, None]}, {"gw": gw})


class NotebookMaxPool(Bound):
    def __init__(self, module, case, inputs, reference):
        count = IMAGES_PER_RUN["max_pool2d"]
        self.case, self.reference, self.count = case, reference, count
        self.calls_per_run = count / inputs["x"].shape[0]
        self.x = _hwc(inputs["x"][:count])
        self.gy = _hwc(inputs["gy"][:count])
        self.pool = module.MaxPool(case.kernel)

    def run(self):
        if self.case.op == "forward":
            for x in self.x:
                self.pool.forward(x)
        else:
            for x, gy in zip(self.x, self.gy, strict=True):
                self.pool.last_input = x
                self.pool.backprop(gy)

    def check(self):
        if self.case.op == "forward":
            got = {"y": _nchw(np.stack([self.pool.forward(x) for x in self.x]))}
            want = {"y": self.reference["y"][: self.count]}
        else:
            gx = []
            for x, gy in zip(self.x, self.gy, strict=True):
                self.pool.last_input = x
                gx.append(self.pool.backprop(gy))
            got, want = {"gx": _nchw(np.stack(gx))}, {"gx": self.reference["gx"][: self.count]}
        return _checks(got, want)


class NotebookTrain(Bound):
    """Per-image SGD steps of the notebook network with the classes of ``module``."""

    def __init__(self, module, case, inputs, reference, count):
        self.case, self.inputs, self.reference = case, inputs, reference
        self.calls_per_run = count / case.batch
        self.images = inputs["images"][:count, 0].astype(np.float64)
        self.labels = inputs["labels"][:count]
        conv_layer, _, _, dense = case.network.layers
        self.conv, self.pool, self.softmax = _without_global_rng(lambda: (
            module.Conv(conv_layer.out_channels, conv_layer.kernel_size),
            module.MaxPool(2),
            module.Softmax(dense.in_features, dense.out_features)))
        self.pooled_shape = nets.shapes(case.network)[1]  # (C, H, W) after the pool

    def load(self, params):
        """Write canonical parameters into the layers' own arrays, in place."""
        self.conv.filters[...] = params[0]["weight"][:, 0]
        c, h, w = self.pooled_shape
        # Canonical dense weights read a (C, H, W) flattening; the notebook's an (H, W, C) one.
        weight = params[3]["weight"]
        self.softmax.weights[...] = weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(
            c * h * w, -1)
        self.softmax.biases[...] = params[3]["bias"]

    def params(self):
        c, h, w = self.pooled_shape
        weight = self.softmax.weights.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(
            -1, c * h * w)
        return [{"weight": self.conv.filters[:, None].copy()}, {}, {},
                {"weight": weight, "bias": self.softmax.biases.copy()}]

    def step(self, image, label, lr):
        probs = self.softmax.forward(self.pool.forward(self.conv.forward(image)))
        grad = np.zeros(probs.shape)
        grad[label] = -1 / probs[label]
        self.conv.backprop(self.pool.backprop(self.softmax.backprop(grad, lr)), lr)
        return -np.log(probs[label])

    def run(self):
        lr = self.inputs["lr"]
        for image, label in zip(self.images, self.labels, strict=True):
            self.step(image, label, lr)

    def check(self):
        params = self.inputs["params"]
        self.load(params)
        lr = self.inputs["lr"]
        loss = self.step(self.images[0], self.labels[0], lr)
        want = self.reference
        if self.case.batch != 1:
            # The notebook trains one image at a time: check its step against a batch of one.
            want = train_reference(self.case.network, params, self.images[:1, None],
                                   self.labels[:1], lr)
        return train_checks(want, loss, params, self.params(), "float64")


class Notebook(Implementation):
    """The notebook's Python loops, re-implemented in ``cnnext._bench.notebook_loops``."""

    name = "notebook"
    threaded = False

    def module(self):
        return import_optional("cnnext._bench.notebook_loops")

    def version(self):
        self.module()
        return "python loops"

    def supports(self, case, dtype):
        if dtype != "float64":
            return False  # the notebook computes in float64 only
        if case.family == "conv2d":
            sh = case.shape
            return (case.op in ("forward", "backward-weights") and sh.c == 1 and sh.r == sh.s
                    and sh.stride == 1 and sh.padding == 0)
        if case.family == "max_pool2d":
            return case.kernel == case.stride == 2  # the notebook's windows are 2x2, stride 2
        return case.family == "train" and case.network.name == "notebook" and not case.per_call

    def bind(self, case, dtype, inputs, reference):
        module = self.module()
        if case.family == "conv2d":
            return NotebookConv(module, case, inputs, reference)
        if case.family == "max_pool2d":
            return NotebookMaxPool(module, case, inputs, reference)
        return NotebookTrain(module, case, inputs, reference, IMAGES_PER_RUN["train"])

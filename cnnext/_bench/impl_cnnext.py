"""cnnext as its users call it: ``cnnext.functional``, ``Sequential.fit`` and
``Sequential.predict``, ``cnnext.compat``; and its kernels alone (``kernel``: the
step a repeated call runs, for the ``overhead`` cases); and, beside the fused
kernels, the unfused calls they replace (``unfused``)."""

import functools

import numpy as np

from . import nets, overhead
from .cases import train_checks
from .impl_notebook import NotebookTrain
from .impls import (
    Bound,
    CallBound,
    Implementation,
    Unavailable,
    functional_bound,
    import_optional,
    unfused_bound,
)


def load_params(layers, params):
    """Copy the canonical parameters (one dict per layer) into cnnext layers."""
    for layer, p in zip(layers, params, strict=True):
        for name, value in p.items():
            layer.params[name][...] = value


def build_layers(layers_module, network, dtype):
    """cnnext layers for ``network``, one per layer record (so layer i holds params[i])."""
    return _layers(layers_module, network.layers, dtype)


def _layers(layers_module, records, dtype):
    layers = []
    for layer in records:
        if isinstance(layer, nets.Residual):
            layers.append(layers_module.Residual(
                _layers(layers_module, layer.block, dtype),
                None if layer.shortcut is None else _layers(layers_module, layer.shortcut,
                                                            dtype)))
        elif isinstance(layer, nets.BatchNorm):
            layers.append(layers_module.BatchNorm2D(layer.num_features, dtype=dtype))
        elif isinstance(layer, nets.GlobalAvgPool):
            layers.append(layers_module.GlobalAvgPool2D())
        elif isinstance(layer, nets.Conv):
            layers.append(layers_module.Conv2D(layer.in_channels, layer.out_channels,
                                               layer.kernel_size, stride=layer.stride,
                                               padding=layer.padding, bias=layer.bias,
                                               dtype=dtype))
        elif isinstance(layer, nets.MaxPool):
            layers.append(layers_module.MaxPool2D(layer.kernel_size))
        elif isinstance(layer, nets.AvgPool):
            layers.append(layers_module.AvgPool2D(layer.kernel_size))
        elif isinstance(layer, nets.ReLU):
            layers.append(layers_module.ReLU())
        elif isinstance(layer, nets.Flatten):
            layers.append(layers_module.Flatten())
        else:
            layers.append(layers_module.Dense(layer.in_features, layer.out_features,
                                              bias=layer.bias, dtype=dtype))
    return layers


class FitTrain(Bound):
    """``Sequential.fit`` for one epoch over the case's batches, in order (or, for a
    per-call case, one call per batch)."""

    def __init__(self, case, dtype, inputs, reference):
        model = import_optional("cnnext.model")
        layers_module = import_optional("cnnext.layers")
        optim = import_optional("cnnext.optim")
        self.case, self.dtype, self.inputs, self.reference = case, dtype, inputs, reference
        self.layers = build_layers(layers_module, case.network, dtype)
        self.model = model.Sequential(self.layers)
        self.optimizer = optim.SGD(lr=inputs["lr"])
        self.calls_per_run = case.steps

    def load(self, params):
        load_params(self.layers, params)

    def fit(self, count, first=0):
        last = None if count is None else first + count
        return self.model.fit(self.inputs["images"][first:last],
                              self.inputs["labels"][first:last], epochs=1,
                              batch_size=self.case.batch, optimizer=self.optimizer,
                              shuffle=False, progress=False)

    def run(self):
        if not self.case.per_call:
            self.fit(None)
            return
        for first in range(0, len(self.inputs["images"]), self.case.batch):
            self.fit(self.case.batch, first)

    def check(self):
        self.load(self.inputs["params"])
        history = self.fit(self.case.batch)
        params = [{name: np.array(value) for name, value in layer.params.items()}
                  for layer in self.layers]
        return train_checks(self.reference, history["loss"][0], self.inputs["params"], params,
                            self.dtype)


class Predict(Bound):
    """``Sequential.predict`` of the whole batch, in one call."""

    def __init__(self, case, dtype, inputs, reference):
        model = import_optional("cnnext.model")
        layers = build_layers(import_optional("cnnext.layers"), case.network, dtype)
        load_params(layers, inputs["params"])
        self.model = model.Sequential(layers)
        self.images, self.batch, self.reference = inputs["images"], case.batch, reference

    def run(self):
        return self.model.predict(self.images, batch_size=self.batch)

    def check(self):
        return [("probs", self.run(), self.reference["probs"], None)]


class Cnnext(Implementation):
    name = "cnnext"

    def version(self):
        cnnext = import_optional("cnnext")
        isas = cnnext.show_config("dicts")["simd"]["in_use"]
        return f"{cnnext.__version__} ({', '.join(f'{k}={v}' for k, v in isas.items())})"

    def supports(self, case, dtype):
        return case.family != "copy"

    def bind(self, case, dtype, inputs, reference):
        if case.family == "train":
            return FitTrain(case, dtype, inputs, reference)
        if case.family == "predict":
            return Predict(case, dtype, inputs, reference)
        if case.family == "overhead":
            return OverheadCall(overhead.OPS[case.op], inputs, reference)
        F = import_optional("cnnext.functional")
        if case.family in ("batch_norm2d", "depthwise2d"):
            return _layer_step(F, case, inputs, reference)
        bound = functional_bound(F, case, inputs, reference)
        if case.family == "conv2d":
            bound.plan = functools.partial(_conv_plan, inputs)
        return bound


def _conv_plan(inputs):
    """The choices of the plan that cnnext.functional's conv2d calls of these inputs run."""
    from .._functional import conv

    x, w = inputs["x"], inputs["w"]
    plan = conv._plan("conv2d", x, w, inputs["stride"], inputs["padding"], 1)
    return getattr(plan, "choices", {"forward": plan.forward_lanes})


class Unfused(Implementation):
    """The fused cases as cnnext's separate conv2d, relu and max_pool2d calls."""

    name = "unfused"

    def version(self):
        return import_optional("cnnext").__version__

    def supports(self, case, dtype):
        return case.family == "fused"

    def bind(self, case, dtype, inputs, reference):
        return unfused_bound(import_optional("cnnext.functional"), case, inputs, reference)


class Compat(Implementation):
    """The notebook's classes on the compiled kernels: one image per step, float64."""

    name = "cnnext.compat"

    def version(self):
        return import_optional("cnnext").__version__

    def supports(self, case, dtype):
        return case.name == "train.notebook.b1" and dtype == "float64"

    def bind(self, case, dtype, inputs, reference):
        compat = import_optional("cnnext.compat")
        return NotebookTrain(compat, case, inputs, reference, count=len(inputs["images"]))


# Kernel runs per timed call of the ``kernel`` implementation.
KERNEL_REPEATS = 200


class OverheadCall(Bound):
    """An overhead case's public call, repeated (its fast path is what is timed)."""

    def __init__(self, op, inputs, reference):
        self.op, self.inputs, self.reference = op, inputs, reference
        self.run = op.call(inputs)

    def outputs(self, result):
        if self.op.outputs is None:  # a layer's backward: gx and the layer's grads
            return overhead._grads(result, self.run)
        return self.op.outputs(result)

    def check(self):
        got = self.outputs(self.run())
        return [(name, got[name], want, None) for name, want in self.reference.items()]


class KernelRepeats(Bound):
    """The step an overhead case's call runs, ``KERNEL_REPEATS`` times in one
    compiled call."""

    calls_per_run = KERNEL_REPEATS

    def __init__(self, op, inputs, reference):
        program_module = import_optional("cnnext._kernels._program")
        self.public = OverheadCall(op, inputs, reference)
        self.public.run()  # validated once: the call is remembered
        self.public.run()
        calls, operands, extra = op.kernel(inputs)
        step = calls.bound(operands, extra)
        if step is None:
            raise Unavailable("not available", "the call was not remembered")
        kernel, self.arrays, sizes, scalars, plans = step
        self.program = program_module.Program()
        self.program.add(kernel, self.arrays, sizes, scalars, plans, name="kernel")
        self.reference = reference

    def run(self):
        self.program.run_repeated(KERNEL_REPEATS)

    def check(self):
        """Each array output of the public call, found among the step's arrays
        after one run (it is the same step), against the reference."""
        self.program.run()
        public = self.public.outputs(self.public.run())
        checks = []
        for name, want in self.reference.items():
            if np.ndim(want) == 0:
                continue  # a loss: returned, not in an array of the step
            got = next((array for array in self.arrays if array is not None
                        and array.shape == np.shape(public[name])
                        and np.array_equal(array, public[name])), None)
            checks.append((name, got, want, None))
        return checks


class Kernel(Implementation):
    """cnnext's kernel alone: the step a repeated call runs, with no Python around it."""

    name = "kernel"

    def version(self):
        return import_optional("cnnext").__version__

    def supports(self, case, dtype):
        return case.family == "overhead"

    def bind(self, case, dtype, inputs, reference):
        return KernelRepeats(overhead.OPS[case.op], inputs, reference)


def _layer_step(F, case, inputs, reference):
    """A layer's forward and backward kernels, as a training step calls them."""
    x, gy = inputs["x"], inputs["gy"]
    if case.family == "batch_norm2d":
        w, b = inputs["weight"], inputs["bias"]
        running = (inputs["running_mean"].copy(), inputs["running_var"].copy())

        def step():
            y, mean, invstd = F.batch_norm2d(x, *running, w, b, True, return_stats=True)
            return y, F.batch_norm2d_backward(gy, x, mean, invstd, w)
    else:
        w, b, groups, stride = inputs["w"], inputs["b"], x.shape[1], inputs["stride"]

        def step():
            return (F.conv2d(x, w, b, stride, 1, 1, groups),
                    F.conv2d_backward(gy, x, w, stride, 1, groups=groups))

    def outputs(result):
        y, (gx, gw, gb) = result
        return {"y": y, "gx": gx, "gw": gw, "gb": gb}

    return CallBound(step, outputs, reference)

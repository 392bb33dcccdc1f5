"""The plain NumPy baseline (im2col + GEMM, see numpy_baseline) and the np.copyto yardstick."""

import functools

import numpy as np

from . import nets, numpy_baseline
from .cases import train_checks
from .impls import Bound, CallBound, Implementation, functional_bound


def batches(case, inputs):
    """The case's images and labels split into ``case.steps`` batches."""
    images = inputs["images"]
    return [(images[i : i + case.batch], inputs["labels"][i : i + case.batch])
            for i in range(0, len(images), case.batch)]


def cast_params(params, dtype):
    return [{name: value.astype(dtype) for name, value in p.items()} for p in params]


class StepBound(Bound):
    """Training steps of ``nets.sgd_step`` on NumPy arrays."""

    def __init__(self, case, dtype, inputs, reference):
        self.case, self.dtype, self.inputs, self.reference = case, dtype, inputs, reference
        self.batches = batches(case, inputs)
        self.params = cast_params(inputs["params"], dtype)
        self.calls_per_run = case.steps

    def run(self):
        for x, labels in self.batches:
            nets.sgd_step(numpy_baseline, self.case.network, self.params, x, labels,
                          self.inputs["lr"])

    def check(self):
        params = cast_params(self.inputs["params"], self.dtype)
        x, labels = self.batches[0]
        loss = nets.sgd_step(numpy_baseline, self.case.network, params, x, labels,
                             self.inputs["lr"])
        return train_checks(self.reference, loss, self.inputs["params"], params, self.dtype)


class NumpyBaseline(Implementation):
    name = "numpy"

    def version(self):
        return np.__version__

    def supports(self, case, dtype):
        # Inference is compared with the libraries users run models with; the
        # overhead cases measure cnnext against its own kernels; the fused
        # cases compare cnnext's fused and unfused calls (and torch's); the
        # baseline has convolution, pooling and the notebook's layers only.
        return case.family not in ("predict", "overhead", "fused", "batch_norm2d",
                                   "depthwise2d") and not (
            case.family == "train" and (case.network.name == "resnet8" or case.per_call))

    def bind(self, case, dtype, inputs, reference):
        if case.family == "copy":
            out = np.empty_like(inputs["x"])
            return CallBound(functools.partial(np.copyto, out, inputs["x"]),
                             lambda _: {"out": out}, reference)
        if case.family == "train":
            return StepBound(case, dtype, inputs, reference)
        return functional_bound(numpy_baseline, case, inputs, reference)

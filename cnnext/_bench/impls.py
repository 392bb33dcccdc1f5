"""What every implementation provides to the harness, and the registry of them.

An implementation (cnnext, PyTorch, ONNX Runtime, the NumPy baseline, the
notebook's loops) says which cases it ``supports`` and ``bind``s a case's inputs into a
``Bound``: ``check()`` runs it once and pairs each output with the float64
reference it must match, ``run()`` is what gets timed.  Anything that keeps
an implementation from running here (a library not installed, a kernel not
built) is raised as ``Unavailable`` with the one line the table shows.
"""

import functools
import importlib


class Unavailable(Exception):
    """The implementation cannot run here; ``status`` is the table cell, ``detail`` why."""

    def __init__(self, status, detail=""):
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status, self.detail = status, detail


class Bound:
    """One implementation bound to one case's inputs.

    ``calls_per_run`` is how many calls of the case one ``run()`` performs:
    a training run makes several steps (> 1); the notebook's loops process a
    handful of the batch's images (< 1: the time per call is extrapolated).
    """

    calls_per_run = 1.0

    def run(self):
        raise NotImplementedError

    def check(self):
        """Run once; return [(name, got, want, scale), ...] for every output.

        ``scale`` is what the error is relative to (None: the largest |want|).
        """
        raise NotImplementedError

    def plan(self):
        """What the implementation chose for the case's shapes (a JSON-ready dict, asked
        after ``check``), or None when it makes no choice worth recording."""
        return None


class CallBound(Bound):
    """A bound call: ``call()`` returns a result that ``outputs`` names as a dict."""

    def __init__(self, call, outputs, reference):
        self.call, self.outputs, self.reference = call, outputs, reference

    def run(self):
        self.call()

    def check(self):
        got = self.outputs(self.call())
        return [(name, got[name], want, None) for name, want in self.reference.items()]


class Implementation:
    name = ""
    # False for single-threaded code (the notebook's loops): timed at the
    # first thread count only.
    threaded = True

    def version(self):
        """A short version string for reports (raises Unavailable when missing)."""
        raise NotImplementedError

    def supports(self, case, dtype):
        return True

    def bind(self, case, dtype, inputs, reference):
        raise NotImplementedError


def functional_bound(F, case, inputs, reference):
    """Bind a convolution or pooling case to ``F``, a module with cnnext.functional's signatures."""
    x = inputs["x"]
    if case.family == "conv2d":
        w, gy = inputs["w"], inputs["gy"]
        geometry = {"stride": inputs["stride"], "padding": inputs["padding"]}
        if case.op == "forward":
            return CallBound(functools.partial(F.conv2d, x, w, inputs["b"], **geometry),
                             lambda y: {"y": y}, reference)
        backward = functools.partial(F.conv2d_backward, gy, x, w,
                                     need_input_grad=case.need_input_grad, **geometry)
        if case.op != "forward-backward":
            return CallBound(backward, _gradients, reference)

        def forward_backward():
            return F.conv2d(x, w, inputs["b"], **geometry), backward()

        return CallBound(forward_backward, lambda r: {"y": r[0], **_gradients(r[1])}, reference)

    if case.family == "fused":
        return _fused_bound(F, case, inputs, reference)
    kernel, stride, gy = inputs["kernel_size"], inputs["stride"], inputs["gy"]
    if case.family == "max_pool2d" and case.op == "forward":
        call = functools.partial(F.max_pool2d, x, kernel, stride, return_indices=True)
        return CallBound(call, lambda r: {"y": r[0], "idx": r[1]}, reference)
    if case.family == "max_pool2d":
        call = functools.partial(F.max_pool2d_backward, gy, inputs["idx"], x.shape)
    elif case.op == "forward":
        return CallBound(functools.partial(F.avg_pool2d, x, kernel, stride),
                         lambda y: {"y": y}, reference)
    else:
        call = functools.partial(F.avg_pool2d_backward, gy, x.shape, kernel, stride)
    return CallBound(call, lambda gx: {"gx": gx}, reference)


def _fused_bound(F, case, inputs, reference):
    """Bind a fused case to ``F.conv2d_max_pool2d`` and its backward."""
    x, w = inputs["x"], inputs["w"]
    geometry = {name: inputs[name] for name in ("stride", "padding", "pool_size", "relu")}
    if case.op == "forward":
        call = functools.partial(F.conv2d_max_pool2d, x, w, inputs["b"], **geometry)
        return CallBound(call, lambda r: {"y": r[0], "idx": r[1]}, reference)
    call = functools.partial(F.conv2d_max_pool2d_backward, inputs["gy"], inputs["idx"], x, w,
                             y=inputs["y"], need_input_grad=inputs["need_input_grad"],
                             **geometry)
    return CallBound(call, _gradients, reference)


def unfused_bound(F, case, inputs, reference):
    """A fused case as ``F.conv2d`` -> ``F.relu`` -> ``F.max_pool2d`` (and their backward)."""
    x, w, relu = inputs["x"], inputs["w"], inputs["relu"]
    conv = {"stride": inputs["stride"], "padding": inputs["padding"]}
    pool = inputs["pool_size"]
    if case.op == "forward":
        def forward():
            y = F.conv2d(x, w, inputs["b"], **conv)
            return F.max_pool2d(F.relu(y, inplace=True) if relu else y, pool,
                                return_indices=True)

        return CallBound(forward, lambda r: {"y": r[0], "idx": r[1]}, reference)
    gy, idx, activated = inputs["gy"], inputs["idx"], inputs["conv"]

    def backward():
        dense = F.max_pool2d_backward(gy, idx, activated.shape)
        if relu:
            dense = F.relu_backward(dense, activated)
        return F.conv2d_backward(dense, x, w, **conv, need_input_grad=inputs["need_input_grad"])

    return CallBound(backward, _gradients, reference)


def _gradients(result):
    gx, gw, gb = result
    return {"gx": gx, "gw": gw, "gb": gb}


def import_optional(module, status="not available"):
    """Import ``module`` or raise Unavailable naming it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(status, f"{module}: {exc}") from None


def _registry():
    # Imported here: the adapters import the base classes above.
    from . import impl_cnnext, impl_notebook, impl_numpy, impl_onnxruntime, impl_torch

    impls = [impl_cnnext.Cnnext(), impl_cnnext.Compat(), impl_cnnext.Unfused(),
             impl_torch.Torch(), impl_onnxruntime.OnnxRuntime(), impl_numpy.NumpyBaseline(),
             impl_notebook.Notebook(), impl_cnnext.Kernel()]
    return {impl.name: impl for impl in impls}


IMPLEMENTATIONS = _registry()

"""ONNX Runtime on the CPU, run the way a careful user runs an exported model.

The network of an inference case is built in ``torch.nn`` with the case's
weights (as the PyTorch implementation builds it), a softmax appended, and
exported with ``torch.onnx.export`` (the TorchScript exporter, static
shapes) for the case's batch size.  The session uses the CPU execution
provider with every graph optimisation on, sequential execution, and the
harness's thread count for both ``intra_op_num_threads`` and
``inter_op_num_threads``.  Its idle pool threads spin only when the harness
lets every library's threads spin (``--keep-env``, see ``environment``); a
pool of one thread has none.  A timed call is ``session.run`` on the NumPy
batch, as ``Sequential.predict`` is on the same batch.

onnxruntime, onnx and torch are imported when a case is bound, never by
the harness itself: where one is missing the cells say so.
"""

import importlib.util
import io
import warnings

from . import environment
from .impl_torch import predict_model
from .impls import CallBound, Implementation, Unavailable

# What the exported graph may use: every opset onnxruntime 1.16+ runs.
OPSET = 17


def _require(module, pip_name):
    if importlib.util.find_spec(module) is None:
        raise Unavailable("not installed", f"{pip_name} is not installed (pip install {pip_name})")
    return importlib.import_module(module)


def export(torch, case, dtype, params):
    """The serialized ONNX model (bytes) of ``case``'s network with ``params``, softmax last."""
    model = torch.nn.Sequential(predict_model(torch, case, dtype, params),
                                torch.nn.Softmax(dim=1)).eval()
    example = torch.zeros((case.batch, *case.network.input_shape), dtype=getattr(torch, dtype))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation on every call.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, input_names=["x"], output_names=["probs"],
                          opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def session_options(ort, threads):
    """SessionOptions pinned to ``threads``: sequential, all graph optimisations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if environment.spinning_bounded():
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxRuntime(Implementation):
    name = "onnxruntime"

    def __init__(self):
        self._models = {}  # (case name, dtype) -> serialized model: one export per case

    def ort(self):
        return _require("onnxruntime", "onnxruntime")

    def version(self):
        return self.ort().__version__

    def supports(self, case, dtype):
        return case.family == "predict"

    def bind(self, case, dtype, inputs, reference):
        ort = self.ort()
        key = (case.name, dtype)
        if key not in self._models:
            _require("onnx", "onnx")  # torch.onnx.export needs it
            torch = _require("torch", "torch")
            self._models[key] = export(torch, case, dtype, inputs["params"])
        threads = _pinned_threads()
        try:
            session = ort.InferenceSession(self._models[key], session_options(ort, threads),
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # no kernel for this dtype, typically (float64 Conv)
            raise Unavailable("not available", " ".join(str(exc).split())[:200]) from None
        feed = {"x": inputs["images"]}

        def predict():
            return session.run(None, feed)[0]

        return CallBound(predict, lambda probs: {"probs": probs}, reference)


def _pinned_threads():
    # The harness binds inside timing.pinned_threads(n), which sets cnnext's count.
    import cnnext

    return cnnext.get_num_threads()

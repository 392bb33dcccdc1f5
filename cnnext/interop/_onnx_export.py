"""cnnext -> ONNX: each layer as the ONNX operators that compute the same thing.

``to_onnx`` walks the model's layers (Residuals recursively: the block's
nodes, the shortcut's, and an Add), writes their parameters as
initializers named as in ``state_dict`` ("0.weight", "3.block.1.bias"),
checks the result with ``onnx.checker`` (shape inference included) and
writes it atomically.  The batch axis is left free ("batch").
"""

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._typing import Path as PathLike
from ..model import Sequential
from ._errors import ConversionError, require

DEFAULT_OPSET = 17  # what onnxruntime 1.14 and later run
OUTPUTS = {None: None, "logits": None, "probabilities": "Softmax",
           "log_probabilities": "LogSoftmax"}
SUPPORTED = ("Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, BatchNorm2D, ReLU, LeakyReLU, "
             "Sigmoid, Tanh, Flatten, Dense, Dropout (dropped: inference), Residual")


def to_onnx(model: Sequential, path: PathLike, input_shape: tuple[int, ...] | None = None,
            opset: int | None = None, *, output: str | None = None) -> Any:
    """to_onnx(model, path, input_shape=None, opset=None, *, output=None)

    Write ``model`` (a ``Sequential``) to ``path`` as an ONNX model computing
    the same outputs (inference: BatchNorm2D with its running statistics,
    Dropout as the identity).

    Parameters
    ----------
    model : Sequential
    path : str or os.PathLike
        Written atomically (a temporary file in the same folder, then renamed).
    input_shape : tuple of int, optional
        One example's shape, e.g. (1, 28, 28); default ``model.input_shape``.
        The batch axis stays free.
    opset : int, optional
        The ONNX operator set to target (default 17, or 19 when an AvgPool2D
        has a dilation); at most what the installed ``onnx`` knows.
    output : {None, "logits", "probabilities", "log_probabilities"}
        What the ONNX model returns: the model's raw outputs, or their
        (log-)softmax as ``predict`` gives them.  None: the model's
        ``onnx_output`` (set by ``from_onnx``), else the raw outputs.

    Returns
    -------
    onnx.ModelProto
        The model written.
    """
    onnx = require("onnx", '"cnnext[onnx]"')
    from onnx import helper

    layers = getattr(model, "layers", None)
    if not isinstance(layers, list) or not layers:
        raise TypeError(f"to_onnx: model must be a cnnext Sequential, got {type(model).__name__}")
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("to_onnx: the model has no input_shape; give input_shape=(C, H, W)")
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
            for d in shape):
        raise ValueError(f"to_onnx: input_shape must be a tuple of positive ints such as "
                         f"(1, 28, 28), got {shape!r}")
    shape = tuple(int(d) for d in shape)
    if output not in OUTPUTS:
        raise ValueError(f"to_onnx: output must be one of {list(OUTPUTS)[1:]} or None, got "
                         f"{output!r}")
    final = OUTPUTS[output] if output is not None else getattr(model, "onnx_output", None)
    dtype = np.dtype(model.dtype)
    elem = {np.dtype(np.float32): onnx.TensorProto.FLOAT,
            np.dtype(np.float64): onnx.TensorProto.DOUBLE}[dtype]
    writer = _Writer(helper, onnx.numpy_helper, dtype)
    try:
        out_shape = model.output_shape(shape)
    except ValueError as exc:
        raise ValueError(f"to_onnx: the model does not take input_shape {shape}: {exc}") from None
    value, _ = writer.layers(layers, "input", "", shape)
    if final is not None:
        if len(out_shape) != 1:
            raise ConversionError(f"to_onnx: output {output!r} needs (N, classes) outputs, the "
                                  f"model gives (N, *{tuple(out_shape)})")
        value = writer.node(final, [value], axis=1)
    needed = max(writer.min_opset, DEFAULT_OPSET)
    latest = onnx.defs.onnx_opset_version()
    if opset is None:
        opset = needed
    elif isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"to_onnx: opset must be an int, got {type(opset).__name__}")
    opset = int(opset)
    if opset < writer.min_opset or opset < 13 or opset > latest:
        raise ValueError(f"to_onnx: opset {opset} cannot hold this model: it needs "
                         f"{max(needed, 13)} to {latest} (the installed onnx's newest)")
    graph = helper.make_graph(
        writer.nodes, "cnnext",
        [helper.make_tensor_value_info("input", elem, ["batch", *shape])],
        [helper.make_tensor_value_info(value, elem, ["batch", *out_shape])],
        writer.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="cnnext",
                              ir_version=helper.find_min_ir_version_for(opsets))
    from .. import __version__

    proto.producer_version = __version__
    # ONNX's shape inference keeps a ceil-mode window that starts in the padding
    # after the input, which its reference implementation and onnxruntime drop
    # (as cnnext and PyTorch do): with ceil mode, only the structural checks.
    onnx.checker.check_model(proto, full_check=not writer.ceil_mode)
    _write_atomically(Path(os.fspath(path)), proto.SerializeToString())
    return proto


def _write_atomically(path, data):
    folder = path.parent if str(path.parent) else Path(".")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _pads(padding):
    """Layer padding as ONNX pads [top, left, bottom, right]."""
    if isinstance(padding[0], tuple):
        (top, bottom), (left, right) = padding
    else:
        (top, left), (bottom, right) = padding, padding
    return [int(top), int(left), int(bottom), int(right)]


class _Writer:
    def __init__(self, helper, numpy_helper, dtype):
        self.helper, self.numpy_helper, self.dtype = helper, numpy_helper, dtype
        self.nodes, self.initializers = [], []
        self.min_opset = DEFAULT_OPSET
        self.count = 0
        self.ceil_mode = False

    def node(self, op_type, inputs, **attributes):
        self.count += 1
        output = f"{op_type.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op_type, inputs, [output],
                                                name=f"{op_type}_{self.count}",
                                                **attributes))
        return output

    def tensor(self, name, array):
        self.initializers.append(self.numpy_helper.from_array(
            np.ascontiguousarray(array, dtype=self.dtype), name))
        return name

    def layers(self, layers, value, prefix, shape):
        """The value after ``layers`` from ``value`` of per-example ``shape``, and its shape."""
        for index, layer in enumerate(layers):
            self.shape = tuple(shape)
            value = self.layer(layer, value, f"{prefix}{index}")
            shape = layer.output_shape(tuple(shape))
        return value, shape

    def layer(self, layer, value, name):
        kind = type(layer).__name__
        method = getattr(self, f"_{kind}", None)
        if method is None:
            raise ConversionError(f"to_onnx: layer {name} ({layer!r}) has no ONNX counterpart "
                                  f"here; cnnext exports {SUPPORTED}")
        return method(layer, value, name)

    def _Conv2D(self, layer, value, name):
        inputs = [value, self.tensor(f"{name}.weight", layer.params["weight"])]
        if layer.bias:
            inputs.append(self.tensor(f"{name}.bias", layer.params["bias"]))
        return self.node("Conv", inputs, kernel_shape=list(layer.kernel_size),
                         strides=list(layer.stride), pads=_pads(layer.padding),
                         dilations=list(layer.dilation), group=getattr(layer, "groups", 1))

    def _pool_attributes(self, layer, name, counted_padding=False):
        pads = _pads(layer.padding)
        attributes = {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride)}
        dilation = tuple(getattr(layer, "dilation", (1, 1)))
        if getattr(layer, "ceil_mode", False):
            attributes["ceil_mode"] = 1
            if not self._ceil_as_floor(layer, name, pads, dilation, counted_padding, attributes):
                self.ceil_mode = True
        attributes["pads"] = pads
        if dilation != (1, 1):
            attributes["dilations"] = list(dilation)
        return attributes

    def _ceil_as_floor(self, layer, name, pads, dilation, counted_padding, attributes):
        """Write ceil mode as floor mode where it drops a last window starting in the
        padding after the input: onnxruntime runs that rule, but ONNX's shape inference
        (which onnxruntime applies when loading) does not, and the model would not load.
        The padding after the input then ends the last window; ``pads`` is changed in
        place.  Returns whether it did."""
        _, height, width = self.shape
        counts = []
        for axis, size in enumerate((height, width)):
            kernel, stride = layer.kernel_size[axis], layer.stride[axis]
            before, after = pads[axis], pads[axis + 2]
            extent = dilation[axis] * (kernel - 1) + 1
            ceil = -(-(size + before + after - extent) // stride) + 1
            exact = ceil - 1 if (ceil - 1) * stride >= size + before else ceil
            counts.append((ceil, exact, (exact - 1) * stride + extent - size - before, after))
        if all(ceil == exact for ceil, exact, _, _ in counts):
            return False
        for axis, (_, _, needed, after) in enumerate(counts):
            if counted_padding and needed > after:
                raise ConversionError(
                    f"to_onnx: layer {name} ({layer!r}): its ceil mode drops a last window "
                    f"that starts in the padding, which ONNX's shape inference keeps; with "
                    f"the padding counted in the divisor there is no equivalent ONNX pooling")
            pads[axis + 2] = max(needed, 0)
        del attributes["ceil_mode"]
        return True

    def _MaxPool2D(self, layer, value, name):
        return self.node("MaxPool", [value], **self._pool_attributes(layer, name))

    def _AvgPool2D(self, layer, value, name):
        counted = bool(getattr(layer, "count_include_pad", True))
        attributes = self._pool_attributes(layer, name, counted)
        if "dilations" in attributes:
            self.min_opset = max(self.min_opset, 19)
        # ONNX's default excludes the padding; cnnext's (PyTorch's) counts it.
        attributes["count_include_pad"] = int(getattr(layer, "count_include_pad", True))
        return self.node("AveragePool", [value], **attributes)

    def _GlobalAvgPool2D(self, layer, value, name):
        return self.node("Flatten", [self.node("GlobalAveragePool", [value])], axis=1)

    def _BatchNorm2D(self, layer, value, name):
        channels = layer.num_features
        ones, zeros = np.ones(channels), np.zeros(channels)
        inputs = [value,
                  self.tensor(f"{name}.weight", layer.params.get("weight", ones)),
                  self.tensor(f"{name}.bias", layer.params.get("bias", zeros)),
                  self.tensor(f"{name}.running_mean", layer.buffers["running_mean"]),
                  self.tensor(f"{name}.running_var", layer.buffers["running_var"])]
        momentum = layer.momentum if layer.momentum is not None else 0.1
        return self.node("BatchNormalization", inputs, epsilon=float(layer.eps),
                         momentum=float(1.0 - momentum))

    def _ReLU(self, layer, value, name):
        return self.node("Relu", [value])

    def _LeakyReLU(self, layer, value, name):
        return self.node("LeakyRelu", [value], alpha=float(layer.negative_slope))

    def _Sigmoid(self, layer, value, name):
        return self.node("Sigmoid", [value])

    def _Tanh(self, layer, value, name):
        return self.node("Tanh", [value])

    def _Flatten(self, layer, value, name):
        return self.node("Flatten", [value], axis=1)

    def _Dense(self, layer, value, name):
        inputs = [value, self.tensor(f"{name}.weight", layer.params["weight"])]
        if layer.bias:
            inputs.append(self.tensor(f"{name}.bias", layer.params["bias"]))
        return self.node("Gemm", inputs, transB=1)

    def _Dropout(self, layer, value, name):
        return value

    def _Residual(self, layer, value, name):
        shape = self.shape
        block, _ = self.layers(layer.block, value, f"{name}.block.", shape)
        shortcut = value
        if layer.shortcut is not None:
            shortcut, _ = self.layers(layer.shortcut, value, f"{name}.shortcut.", shape)
        return self.node("Add", [block, shortcut])

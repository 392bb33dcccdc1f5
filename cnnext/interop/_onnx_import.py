"""ONNX -> cnnext: each supported operator becomes the layer that computes the same thing.

``from_onnx`` reads the file with ``_onnx_file`` (no trust in its sizes or
references), turns the graph's nodes into ``Op`` records, and lets
``_graph.Walker`` follow the input to the output.  The converters below map
one operator (sometimes two: MatMul and the Add of its bias; a global pool
and the Flatten after it) to layers, after checking every attribute: an
attribute value with no exact counterpart is refused with the node's name,
never approximated.  Per-example shapes are tracked along the way (auto_pad
and global pooling need them) with the layers' own ``output_shape``.

Operators: Conv, MaxPool, AveragePool, GlobalAveragePool, Relu, LeakyRelu,
Sigmoid, Tanh, BatchNormalization, Flatten, Reshape to (N, -1), Gemm,
MatMul (+ Add), Add of two branches (Residual), Dropout and Identity
(dropped: inference), and a last Softmax or LogSoftmax (dropped: the
model's ``predict`` applies the softmax; ``model.onnx_output`` names it).
1-D convolutions and pools become 2-D ones over (N, C, 1, L) batches.
"""

import decimal
import math
import os
from pathlib import Path

import numpy as np

from .. import layers as L
from .._typing import Path as PathLike
from ..model import Sequential
from . import _onnx_file
from ._errors import ConversionError, require
from ._graph import Op, Walker

# AttributeProto.type -> the field holding the value.
_ATTRIBUTE_FIELDS = {1: "f", 2: "i", 3: "s", 6: "floats", 7: "ints", 8: "strings"}
_FLOAT_TYPES = {1: np.dtype(np.float32), 11: np.dtype(np.float64)}
# Inputs of these types are exact in float32 (max pooling compares; nothing
# else these graphs can hold computes on integers).
_INTEGER_INPUTS = {2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16"}
SUPPORTED = ("Conv, MaxPool, AveragePool, GlobalAveragePool, Relu, LeakyRelu, Sigmoid, Tanh, "
             "BatchNormalization, Flatten, Reshape (to (N, -1)), Gemm, MatMul, Add (of a bias "
             "or of two branches), Dropout, Identity, and a final Softmax or LogSoftmax")


def _written(value):
    """A float attribute (ONNX keeps float32) as the shortest decimal that rounds to it,
    exactly: what the writer meant (eps=1e-5 comes back as 1e-5, not 9.99999975e-06), so
    a round trip gives the layer it started from and a PyTorch model's own constants."""
    return decimal.Decimal(str(np.float32(value)))


def from_onnx(path: PathLike, *, input_shape: tuple[int, ...] | None = None) -> Sequential:
    """from_onnx(path, *, input_shape=None)

    A ``Sequential`` computing what the ONNX model in the file at ``path``
    computes (``Residual`` layers where the graph has skip connections).

    Parameters
    ----------
    path : str or os.PathLike
        An ``.onnx`` file; tensors kept as external data must lie in its folder.
    input_shape : tuple of int, optional
        The shape of one example, (C, H, W) or (features,), where the file
        leaves it open (a dynamic height, say); the batch axis is always free.

    Returns
    -------
    Sequential
        In evaluation mode, with the file's weights (bitwise).  Its
        ``onnx_output`` attribute is "Softmax" or "LogSoftmax" when the
        graph ended in one (dropped: ``predict`` gives the probabilities),
        else None.  The model takes float batches of its dtype; a 1-D model
        takes (N, C, 1, L) batches.

    Raises
    ------
    ConversionError
        For an operator, attribute or structure with no exact counterpart
        (the message names the node), or a file that is not a well-formed
        ONNX model.
    ImportError
        Without the ``onnx`` package (``pip install "cnnext[onnx]"``).
    """
    model = _onnx_file.read_model(path)
    return convert_model(model, Path(os.fspath(path)).parent, str(path), input_shape)


def convert_model(model, folder, where, input_shape=None):
    """The Sequential of an ``onnx.ModelProto`` (external data read from ``folder``)."""
    return _Importer(model, folder, where, input_shape).run()


def attributes(node, where):
    """The node's attributes as {name: Python value}."""
    values = {}
    for attribute in node.attribute:
        field = _ATTRIBUTE_FIELDS.get(attribute.type)
        if field is None:
            raise ConversionError(f"{where}: node {node.name or '?'} ({node.op_type}) has "
                                  f"attribute {attribute.name!r} of a kind cnnext does not read "
                                  f"(a tensor or a graph)")
        value = getattr(attribute, field)
        if field == "s":
            value = value.decode("utf-8", "replace")
        elif field in ("floats", "ints"):
            value = list(value)
        elif field == "strings":
            value = [v.decode("utf-8", "replace") for v in value]
        values[attribute.name] = value
    return values


class _Importer:
    def __init__(self, model, folder, where, input_shape):
        self.model, self.folder, self.where = model, folder, where
        self.graph = model.graph
        self.opset = self._opset()
        self.constants = {}
        self.dtype = None
        self.output_op = None
        self.requested_shape = input_shape

    # ------------------------------------------------------------ structure
    def _opset(self):
        versions = {entry.domain: entry.version for entry in self.model.opset_import}
        version = versions.get("", versions.get("ai.onnx"))
        if version is None:
            raise ConversionError(f"{self.where}: the model imports no version of the default "
                                  f"ONNX operator set")
        return version

    def _fail(self, op, message):
        raise ConversionError(f"{self.where}: node {op.name} ({op.kind}): {message}")

    def run(self):
        graph = self.graph
        if len(graph.sparse_initializer):
            raise ConversionError(f"{self.where}: sparse initializers are not supported")
        for tensor in graph.initializer:
            self.constants[tensor.name] = _onnx_file.tensor_array(tensor, self.folder,
                                                                  self.where)
        inputs = [value for value in graph.input if value.name not in self.constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ConversionError(
                f"{self.where}: the graph has {len(inputs)} input(s) and {len(graph.output)} "
                f"output(s) (besides its weights); cnnext models have one of each")
        source, output = inputs[0], graph.output[0].name
        _onnx_file.topological_order(graph, {source.name, *self.constants}, self.where)
        ops, folded = [], set()
        for index, node in enumerate(graph.node):
            if node.domain not in ("", "ai.onnx"):
                raise ConversionError(f"{self.where}: node {node.name or f'#{index}'} "
                                      f"({node.op_type}) is from operator domain "
                                      f"{node.domain!r}; cnnext converts {SUPPORTED}")
            if node.op_type == "Constant":
                self._constant(node)
            elif (node.op_type == "Identity" and len(node.input) == 1 and len(node.output) == 1
                  and node.input[0] in self.constants and not node.attribute):
                # An Identity of a weight is that weight: torch.onnx writes equal tensors
                # (a fresh BatchNorm's scale and running_var) once and the others so.
                self.constants[node.output[0]] = self.constants[node.input[0]]
                folded.add(index)
        for index, node in enumerate(graph.node):  # in the file's order, for the messages
            if node.op_type == "Constant" or index in folded:
                continue
            ops.append(Op(node.op_type, node.name or f"#{index}",
                          [v for v in node.input if v and v not in self.constants],
                          list(node.output), node))
        shape, _ = self._input_shape(source)
        self.source_shape = list(shape)
        self.walker = Walker(ops, output, self._convert, self._residual, self.where)
        layers, _, _, merge = self.walker.chain(source.name, shape)
        if merge is not None:
            raise ConversionError(f"{self.where}: node {merge.name} (Add) adds the input to "
                                  f"something else at the top level; wrap it in a Residual")
        if not layers:
            raise ConversionError(f"{self.where}: the graph computes nothing cnnext has a "
                                  f"layer for (its output is its input)")
        known = None not in self.source_shape
        model = Sequential(layers, input_shape=tuple(self.source_shape) if known else None)
        # A model of parameter-free layers computes in its input's dtype.
        model.dtype = self.dtype or self.input_dtype
        if hasattr(model, "eval"):
            model.eval()
        model.onnx_output = self.output_op
        return model

    def _constant(self, node):
        values = attributes(node, self.where)
        if "value" in [a.name for a in node.attribute]:
            tensor = next(a.t for a in node.attribute if a.name == "value")
            self.constants[node.output[0]] = _onnx_file.tensor_array(tensor, self.folder,
                                                                     self.where)
        elif "value_float" in values or "value_floats" in values:
            self.constants[node.output[0]] = np.array(
                values.get("value_float", values.get("value_floats")), np.float32)
        elif "value_int" in values or "value_ints" in values:
            self.constants[node.output[0]] = np.array(
                values.get("value_int", values.get("value_ints")), np.int64)
        else:
            raise ConversionError(f"{self.where}: Constant node {node.name or '?'} holds "
                                  f"{sorted(values)}; cnnext reads numeric constants only")

    def _input_shape(self, source):
        kind = source.type.WhichOneof("value")
        if kind != "tensor_type":
            raise ConversionError(f"{self.where}: the graph's input {source.name!r} is not a "
                                  f"tensor")
        tensor_type = source.type.tensor_type
        elem = tensor_type.elem_type
        if elem in _FLOAT_TYPES:
            self.input_dtype = _FLOAT_TYPES[elem]
        elif elem in _INTEGER_INPUTS:
            self.input_dtype = np.dtype(np.float32)
        else:
            raise ConversionError(f"{self.where}: the graph's input has element type "
                                  f"{_onnx_file.type_name(elem)}; cnnext computes in FLOAT or "
                                  f"DOUBLE")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tensor_type.shape.dim] if tensor_type.HasField("shape") else None
        if self.requested_shape is not None:
            shape = [int(d) for d in self.requested_shape]
            if dims is not None and (len(dims) != len(shape) + 1 or any(
                    d is not None and d != s for d, s in zip(dims[1:], shape, strict=True))):
                raise ConversionError(f"{self.where}: input_shape {tuple(shape)} does not fit "
                                      f"the graph's input shape {dims}")
            dims = [None, *shape]
        if dims is None or len(dims) not in (2, 3, 4):
            raise ConversionError(f"{self.where}: the graph's input has "
                                  f"{'no shape' if dims is None else f'rank {len(dims)}'}; "
                                  f"cnnext takes (N, C, H, W), (N, C, L) or (N, features) "
                                  f"(give input_shape= when the file leaves it open)")
        shape = dims[1:]
        if len(shape) == 2 and dims is not None and len(dims) == 3:
            shape = [shape[0], 1, shape[1]]  # 1-D: (C, L) as (C, 1, L)
        self.one_d = len(dims) == 3
        return shape, len(dims)

    # ------------------------------------------------------------- helpers
    def constant(self, op, name, what):
        if name not in self.constants:
            self._fail(op, f"its {what} ({name!r}) must be a constant (an initializer)")
        return self.constants[name]

    def float_constant(self, op, name, what):
        value = self.constant(op, name, what)
        if value.dtype.kind != "f":
            self._fail(op, f"its {what} has dtype {value.dtype}, not a float type")
        self._claim_dtype(op, value.dtype)
        return value

    def _claim_dtype(self, op, dtype):
        """The weights' dtype is the model's: one for all, the input's."""
        if dtype not in _FLOAT_TYPES.values():
            self._fail(op, f"has {dtype} weights; cnnext computes in float32 or float64")
        if self.dtype is None:
            self.dtype = dtype
        elif dtype != self.dtype:
            self._fail(op, f"mixes {dtype} weights with {self.dtype} ones")
        if dtype != self.input_dtype:
            self._fail(op, f"has {dtype} weights but the graph's input is {self.input_dtype}")

    @property
    def layer_dtype(self):
        return (self.dtype or self.input_dtype).name

    def check_attributes(self, op, allowed):
        values = attributes(op.node, self.where)
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            self._fail(op, f"attribute(s) {unknown} are not supported (cnnext reads "
                           f"{sorted(allowed)})")
        return {**allowed, **values}

    def single_output(self, op):
        extra = [v for v in op.outputs[1:] if v]
        if extra:
            users = [v for v in extra if v in self.walker.users or v == self.walker.output]
            if users:
                self._fail(op, f"its output(s) {users} beyond the first are used; cnnext "
                               f"computes the first output only")
        return op.outputs[0]

    def need_shape(self, op, shape, rank=3):
        if len(shape) != rank or None in shape:
            self._fail(op, f"needs a known {'(C, H, W)' if rank == 3 else '(features,)'} "
                           f"input, got {tuple(shape)} (give input_shape= to from_onnx)")

    def layer(self, name):
        cls = getattr(L, name, None)
        if cls is None:
            raise ConversionError(f"{self.where}: this cnnext has no {name} layer")
        return cls

    def _residual(self, block, shortcut, merge):
        if len(merge.node.input) != 2 or len(merge.outputs) != 1:
            self._fail(merge, "an Add with two inputs and one output is a Residual merge")
        return self.layer("Residual")(block, shortcut)

    # ----------------------------------------------------------- converters
    def _convert(self, op, value, shape):
        converter = getattr(self, f"_op_{op.kind}", None)
        if converter is None:
            self._fail(op, f"operator {op.kind} is not supported; cnnext converts {SUPPORTED}")
        if op.inputs[:1] != [value]:
            self._fail(op, f"reads {op.inputs} but the chain arrives through {value!r} (its "
                           f"first input)")
        result = converter(op, shape)
        layers, out, out_shape = result
        return layers, out, out_shape

    def _spatial(self, op, attrs, kernel, shape):
        """(stride, padding ((t, b), (l, r)), dilation) of a conv or pool node."""
        n = len(kernel)
        strides = attrs["strides"] or [1] * n
        dilations = attrs["dilations"] or [1] * n
        pads = attrs["pads"] or [0] * (2 * n)
        if len(strides) != n or len(dilations) != n or len(pads) != 2 * n:
            self._fail(op, f"strides {strides}, dilations {dilations} and pads {pads} do not "
                           f"match a {n}-D kernel {kernel}")
        if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
            self._fail(op, f"strides {strides}, dilations {dilations} and pads {pads} must be "
                           f"positive (pads non-negative)")
        auto_pad = attrs["auto_pad"]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            sizes = shape[1:] if n == 2 else shape[2:]
            pads = [0] * (2 * n)
            for axis in range(n):
                out = -(-sizes[axis] // strides[axis])
                total = max((out - 1) * strides[axis] + dilations[axis] * (kernel[axis] - 1)
                            + 1 - sizes[axis], 0)
                small, large = total // 2, total - total // 2
                pads[axis], pads[axis + n] = (small, large) if auto_pad == "SAME_UPPER" \
                    else (large, small)
        elif auto_pad == "VALID":
            pads = [0] * (2 * n)
        elif auto_pad != "NOTSET":
            self._fail(op, f"auto_pad {auto_pad!r} is not one of NOTSET, SAME_UPPER, "
                           f"SAME_LOWER, VALID")
        if n == 1:  # (L,) as (1, L)
            return (1, strides[0]), ((0, 0), (pads[0], pads[1])), (1, dilations[0])
        return (tuple(strides), ((pads[0], pads[2]), (pads[1], pads[3])), tuple(dilations))

    def _kernel_rank(self, op, kernel):
        if len(kernel) == (1 if self.one_d else 2):
            return
        self._fail(op, f"a {len(kernel)}-D kernel {kernel} on a "
                       f"{'1' if self.one_d else '2'}-D input; cnnext converts 2-D (and 1-D) "
                       f"convolutions and pools")

    def _op_Conv(self, op, shape):
        attrs = self.check_attributes(op, {"auto_pad": "NOTSET", "dilations": [], "group": 1,
                                           "kernel_shape": [], "pads": [], "strides": []})
        self.need_shape(op, shape)
        node = op.node
        w = self.float_constant(op, node.input[1], "weight W")
        b = self.float_constant(op, node.input[2], "bias B") if len(node.input) > 2 and \
            node.input[2] else None
        kernel = list(w.shape[2:])
        self._kernel_rank(op, kernel)
        if attrs["kernel_shape"] and list(attrs["kernel_shape"]) != kernel:
            self._fail(op, f"kernel_shape {attrs['kernel_shape']} differs from the weight's "
                           f"{kernel}")
        group = attrs["group"]
        if group < 1 or shape[0] % group or w.shape[0] % group or w.shape[1] * group != shape[0]:
            self._fail(op, f"group {group} does not fit {shape[0]} input channels and a weight "
                           f"of shape {w.shape}")
        if b is not None and b.shape != (w.shape[0],):
            self._fail(op, f"bias shape {b.shape} does not match {w.shape[0]} filters")
        stride, padding, dilation = self._spatial(op, attrs, kernel, shape)
        if self.one_d:
            w = w[:, :, None, :]
        kwargs = {}
        if group != 1:
            kwargs["groups"] = group
        try:
            layer = L.Conv2D(shape[0], w.shape[0], w.shape[2:], stride=stride,
                             padding=_plain_padding(padding), dilation=dilation,
                             bias=b is not None, dtype=self.layer_dtype, **kwargs)
        except TypeError as exc:
            if "groups" in str(exc):
                self._fail(op, f"group {group} (grouped convolution) is not available in this "
                               f"cnnext")
            raise
        layer.params["weight"][...] = w
        if b is not None:
            layer.params["bias"][...] = b
        return self._emit(op, [layer], shape)

    def _emit(self, op, layers, shape, out=None):
        for layer in layers:
            try:
                shape = list(layer.output_shape(tuple(shape)))
            except ValueError as exc:
                self._fail(op, f"does not fit its input of shape {tuple(shape)}: {exc}")
        return layers, out if out is not None else self.single_output(op), shape

    def _pool(self, op, shape, average):
        allowed = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": [], "kernel_shape": [],
                   "pads": [], "strides": []}
        if average:
            allowed["count_include_pad"] = 0
        else:
            allowed["storage_order"] = 0
        attrs = self.check_attributes(op, allowed)
        self.need_shape(op, shape)
        kernel = list(attrs["kernel_shape"])
        if not kernel:
            self._fail(op, "has no kernel_shape")
        self._kernel_rank(op, kernel)
        stride, padding, dilation = self._spatial(op, attrs, kernel, shape)
        if attrs["ceil_mode"] not in (0, 1) or attrs.get("count_include_pad", 0) not in (0, 1):
            self._fail(op, "ceil_mode and count_include_pad must be 0 or 1")
        if attrs["ceil_mode"] and attrs["auto_pad"] != "NOTSET":
            self._fail(op, "ceil_mode with auto_pad is not defined by ONNX")
        if average and dilation != (1, 1) and self.opset < 19:
            self._fail(op, f"dilations on AveragePool need opset 19 (the model's is "
                           f"{self.opset})")
        size = (1, kernel[0]) if self.one_d else tuple(kernel)
        options = {"dilation": dilation, "ceil_mode": bool(attrs["ceil_mode"])}
        if average:
            options["count_include_pad"] = bool(attrs["count_include_pad"])
            layer = L.AvgPool2D(size, stride, _plain_padding(padding), **options)
        else:
            layer = L.MaxPool2D(size, stride, _plain_padding(padding), **options)
        return self._emit(op, [layer], shape)

    def _op_MaxPool(self, op, shape):
        return self._pool(op, shape, average=False)

    def _op_AveragePool(self, op, shape):
        return self._pool(op, shape, average=True)

    def _op_GlobalAveragePool(self, op, shape):
        self.check_attributes(op, {})
        self.need_shape(op, shape)
        out = self.single_output(op)
        after = self.walker.single_user(out)
        global_pool = getattr(L, "GlobalAvgPool2D", None)
        if after is not None and global_pool is not None and self._flattens(after, [
                shape[0], 1, 1]):
            return self._emit(after, [global_pool()], shape, self.single_output(after))
        return self._emit(op, [L.AvgPool2D(tuple(shape[1:]))], shape, out)

    def _flattens(self, op, shape):
        """Whether ``op`` is a Flatten(axis=1) or a Reshape to (N, -1) of ``shape``."""
        if op.kind == "Flatten":
            return attributes(op.node, self.where).get("axis", 1) == 1
        if op.kind == "Reshape" and len(op.node.input) == 2:
            target = self.constants.get(op.node.input[1])
            return target is not None and self._reshape_target(op, target, shape) is not None
        return False

    def _reshape_target(self, op, target, shape):
        """The features count when ``target`` reshapes (N, *shape) to (N, features)."""
        if target.ndim != 1 or target.size != 2 or target.dtype.kind != "i":
            return None
        features = math.prod(shape)
        first, second = (int(v) for v in target)
        if attributes(op.node, self.where).get("allowzero", 0) and (first == 0 or second == 0):
            return None
        batch_ok = first in (0, -1) or (self._batch is not None and first == self._batch)
        if batch_ok and second in (-1, features) and not (first == -1 and second == -1):
            return features
        return None

    @property
    def _batch(self):
        dims = self.graph.input[0].type.tensor_type.shape.dim
        return dims[0].dim_value if dims and dims[0].HasField("dim_value") else None

    def _op_Flatten(self, op, shape):
        attrs = self.check_attributes(op, {"axis": 1})
        if attrs["axis"] != 1:
            self._fail(op, f"axis {attrs['axis']}: cnnext flattens (N, ...) to (N, features) "
                           f"(axis 1)")
        return self._emit(op, [L.Flatten()], shape)

    def _op_Reshape(self, op, shape):
        self.check_attributes(op, {"allowzero": 0})
        target = self.constant(op, op.node.input[1], "target shape")
        if None in shape or self._reshape_target(op, target, shape) is None:
            self._fail(op, f"reshapes {tuple(shape)} to {target.tolist()}; cnnext converts a "
                           f"Reshape to (N, -1) only")
        return self._emit(op, [L.Flatten()], shape)

    def _op_Relu(self, op, shape):
        self.check_attributes(op, {})
        return self._emit(op, [L.ReLU()], shape)

    def _op_LeakyRelu(self, op, shape):
        attrs = self.check_attributes(op, {"alpha": 0.01})
        return self._emit(op, [self.layer("LeakyReLU")(negative_slope=float(_written(
            attrs["alpha"])))], shape)

    def _op_Sigmoid(self, op, shape):
        self.check_attributes(op, {})
        return self._emit(op, [self.layer("Sigmoid")()], shape)

    def _op_Tanh(self, op, shape):
        self.check_attributes(op, {})
        return self._emit(op, [self.layer("Tanh")()], shape)

    def _op_BatchNormalization(self, op, shape):
        attrs = self.check_attributes(op, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0,
                                           "spatial": 1})
        if attrs["training_mode"] or attrs["spatial"] != 1:
            self._fail(op, "training_mode=1 and spatial=0 are not supported (inference, "
                           "per-channel statistics)")
        self.need_shape(op, shape)
        node = op.node
        if len(node.input) != 5:
            self._fail(op, "needs X, scale, B, mean and var inputs")
        scale, bias, mean, var = (self.float_constant(op, name, what) for name, what in zip(
            node.input[1:], ("scale", "B", "input_mean", "input_var"), strict=True))
        channels = shape[0]
        if any(a.shape != (channels,) for a in (scale, bias, mean, var)):
            self._fail(op, f"its scale, B, mean and var must have shape ({channels},)")
        # ONNX's momentum weighs the old running value, PyTorch's the new one.
        momentum = float(1 - _written(attrs["momentum"]))
        layer = self.layer("BatchNorm2D")(channels, eps=float(_written(attrs["epsilon"])),
                                          momentum=min(max(momentum, 0.0), 1.0),
                                          dtype=self.layer_dtype)
        layer.params["weight"][...] = scale
        layer.params["bias"][...] = bias
        layer.buffers["running_mean"][...] = mean
        layer.buffers["running_var"][...] = var
        return self._emit(op, [layer], shape)

    def _dense(self, op, shape, weight, bias):
        self.need_shape(op, shape, rank=1)
        if weight.shape[1] != shape[0]:
            self._fail(op, f"its weight of shape {weight.shape} does not take {shape[0]} "
                           f"features")
        layer = L.Dense(weight.shape[1], weight.shape[0], bias=bias is not None,
                        dtype=self.layer_dtype)
        layer.params["weight"][...] = weight
        if bias is not None:
            layer.params["bias"][...] = bias
        return layer

    def _op_Gemm(self, op, shape):
        attrs = self.check_attributes(op, {"alpha": 1.0, "beta": 1.0, "transA": 0,
                                           "transB": 0})
        if attrs["transA"]:
            self._fail(op, "transA=1: the batch must be the first axis of A")
        node = op.node
        b = self.float_constant(op, node.input[1], "B")
        if b.ndim != 2:
            self._fail(op, f"B has shape {b.shape}, not a matrix")
        weight = b if attrs["transB"] else b.T
        alpha, beta = attrs["alpha"], attrs["beta"]
        if alpha != 1.0:
            weight = (weight.astype(np.float64) * alpha).astype(weight.dtype)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = self.float_constant(op, node.input[2], "C")
            if c.size not in (1, weight.shape[0]) or c.ndim > 2 or (c.ndim == 2 and (
                    c.shape[0] != 1)):
                self._fail(op, f"C has shape {c.shape}; cnnext adds a bias of shape "
                               f"({weight.shape[0]},)")
            bias = np.broadcast_to(c.reshape(-1), (weight.shape[0],))
            if beta != 1.0:
                bias = (bias.astype(np.float64) * beta).astype(c.dtype)
        layer = self._dense(op, shape, np.ascontiguousarray(weight), bias)
        return self._emit(op, [layer], shape)

    def _op_MatMul(self, op, shape):
        self.check_attributes(op, {})
        b = self.float_constant(op, op.node.input[1], "B")
        if b.ndim != 2:
            self._fail(op, f"B has shape {b.shape}, not a matrix")
        out = self.single_output(op)
        bias, end, last = None, out, op
        after = self.walker.single_user(out)
        if after is not None and after.kind == "Add" and len(after.inputs) == 1:
            other = [v for v in after.node.input if v != out]
            c = self.constants.get(other[0]) if len(other) == 1 else None
            if c is not None and c.dtype.kind == "f" and c.size == b.shape[1] and c.ndim <= 2:
                self._claim_dtype(after, c.dtype)
                bias, end, last = c.reshape(-1), self.single_output(after), after
        layer = self._dense(op, shape, np.ascontiguousarray(b.T), bias)
        return self._emit(last, [layer], shape, end)

    def _op_Add(self, op, shape):
        self._fail(op, "adds a constant where no MatMul precedes it; cnnext converts an Add "
                       "of a MatMul's bias or of two branches (Residual)")

    def _passthrough(self, op, shape):
        return [], self.single_output(op), shape

    def _op_Identity(self, op, shape):
        self.check_attributes(op, {})
        return self._passthrough(op, shape)

    def _op_Dropout(self, op, shape):
        self.check_attributes(op, {"ratio": 0.5, "seed": 0})
        node = op.node
        if len(node.input) > 2 and node.input[2]:
            training = self.constants.get(node.input[2])
            if training is None or bool(np.any(training)):
                self._fail(op, "training_mode must be a constant False (inference)")
        return self._passthrough(op, shape)

    def _final(self, op, shape):
        attrs = self.check_attributes(op, {"axis": -1 if self.opset >= 13 else 1})
        out = self.single_output(op)
        if out != self.walker.output:
            self._fail(op, f"{op.kind} is converted as the model's last operation only "
                           f"(predict applies the softmax)")
        if len(shape) != 1 or attrs["axis"] not in (1, -1):
            self._fail(op, f"{op.kind} over axis {attrs['axis']} of (N, *{tuple(shape)}): "
                           f"cnnext's softmax is over the classes of (N, classes)")
        self.output_op = op.kind
        return [], out, shape

    def _op_Softmax(self, op, shape):
        return self._final(op, shape)

    def _op_LogSoftmax(self, op, shape):
        return self._final(op, shape)


def _plain_padding(padding):
    """((t, b), (l, r)) as an (h, w) pair when both axes are symmetric."""
    (top, bottom), (left, right) = padding
    return (top, left) if top == bottom and left == right else padding


def require_onnx():
    return require("onnx", '"cnnext[onnx]"')

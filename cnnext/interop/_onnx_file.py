"""Reading an ONNX file without trusting it.

A model file may be truncated, corrupt or written to hurt: tensors declaring
more elements than they hold (a reader that allocates by the declared shape
runs out of memory), external-data references to files outside the model's
folder, graphs whose nodes form a cycle or use values nothing defines.  This
module reads the protobuf itself (``onnx.ModelProto.ParseFromString``, whose
allocations follow the bytes actually present), then checks every tensor's
declared size against the bytes it holds before converting it, and reads
external data only from regular files inside the model's folder, exactly the
declared byte range.  Memory use is therefore bounded by a small multiple of
the file sizes, whatever the file declares.  ``onnx.load`` is not used: it
follows external references and converts tensors before any of this.
"""

import math
import os
from pathlib import Path

import numpy as np

from ._errors import ConversionError, require

# protobuf cannot serialize more than 2 GiB.
MAX_FILE_BYTES = 2**31 - 1

# ONNX TensorProto.DataType -> (NumPy dtype, the repeated field holding the
# values when raw_data is empty).
_TENSOR_TYPES = {
    1: (np.dtype("<f4"), "float_data"),    # FLOAT
    11: (np.dtype("<f8"), "double_data"),  # DOUBLE
    7: (np.dtype("<i8"), "int64_data"),    # INT64
    6: (np.dtype("<i4"), "int32_data"),    # INT32
    9: (np.dtype("bool"), "int32_data"),   # BOOL
}
TYPE_NAMES = {0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16",
              6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE",
              12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16"}


def type_name(code):
    return TYPE_NAMES.get(code, f"type {code}")


def read_model(path, max_bytes=MAX_FILE_BYTES):
    """read_model(path, max_bytes=MAX_FILE_BYTES)

    The ``onnx.ModelProto`` in the file at ``path`` (tensors not converted,
    external data not read).  Raises FileNotFoundError, or ConversionError for
    anything that is not a readable, bounded ONNX model.
    """
    onnx = require("onnx", '"cnnext[onnx]"')
    path = Path(os.fspath(path))
    info = path.stat()  # FileNotFoundError as usual
    if not path.is_file():
        raise ConversionError(f"{path}: not a regular file")
    if info.st_size > max_bytes:
        raise ConversionError(f"{path}: {info.st_size} bytes, more than the {max_bytes} an "
                              f"ONNX model may have")
    with path.open("rb") as file:
        # read(n) allocates n bytes first: ask for the size the file has.
        data = file.read(info.st_size + 1)
    if len(data) > info.st_size:
        raise ConversionError(f"{path}: grew while being read; refused")
    return parse_model(onnx, data, str(path))


def parse_model(onnx, data, where):
    """The ModelProto serialized in ``data`` (bytes), or ConversionError."""
    if not data:
        raise ConversionError(f"{where}: the file is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError and kin
        raise ConversionError(f"{where}: not an ONNX model, or a truncated or corrupt one "
                              f"(protobuf: {' '.join(str(exc).split()) or type(exc).__name__})"
                              ) from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ConversionError(f"{where}: not an ONNX model (no graph or no IR version)")
    return model


def _declared(tensor, where):
    """The dims of ``tensor`` as a tuple of ints, and its element count."""
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims):
        raise ConversionError(f"{where}: tensor {tensor.name!r} has a negative dimension "
                              f"{dims}")
    return dims, math.prod(dims)


def tensor_array(tensor, folder, where):
    """tensor_array(tensor, folder, where)

    The ONNX TensorProto ``tensor`` as a NumPy array (a copy), after checking
    that it holds exactly the bytes its shape declares; external data is read
    from ``folder`` (the model's), never outside it.
    """
    name = tensor.name
    if tensor.HasField("segment"):
        raise ConversionError(f"{where}: tensor {name!r} is segmented, which is not supported")
    if tensor.data_type not in _TENSOR_TYPES:
        raise ConversionError(f"{where}: tensor {name!r} has data type "
                              f"{type_name(tensor.data_type)}; cnnext reads FLOAT, DOUBLE, "
                              f"INT64, INT32 and BOOL tensors")
    dtype, field = _TENSOR_TYPES[tensor.data_type]
    dims, count = _declared(tensor, where)
    if tensor.data_location == 1:  # EXTERNAL
        raw = _external_bytes(tensor, folder, count * dtype.itemsize, where)
        return np.frombuffer(raw, dtype).reshape(dims).copy()
    if tensor.raw_data:
        if len(tensor.raw_data) != count * dtype.itemsize:
            raise ConversionError(f"{where}: tensor {name!r} declares shape {dims} "
                                  f"({count * dtype.itemsize} bytes of {dtype.name}) but holds "
                                  f"{len(tensor.raw_data)} bytes")
        return np.frombuffer(tensor.raw_data, dtype).reshape(dims).copy()
    values = getattr(tensor, field)
    if len(values) != count:
        raise ConversionError(f"{where}: tensor {name!r} declares shape {dims} ({count} "
                              f"values) but holds {len(values)}")
    return np.array(values, dtype=dtype).reshape(dims)


def _external_bytes(tensor, folder, expected, where):
    """The ``expected`` bytes an external-data tensor points at, from a regular file
    inside ``folder``."""
    name = tensor.name
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location", "")
    if folder is None:
        raise ConversionError(f"{where}: tensor {name!r} keeps its data in an external file "
                              f"{location!r}, which a model given as bytes cannot reach")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise ConversionError(f"{where}: tensor {name!r} has a non-integer external-data "
                              f"offset or length") from None
    if not location or os.path.isabs(location) or "\0" in location:
        raise ConversionError(f"{where}: tensor {name!r} names external data {location!r}; "
                              f"only relative paths inside the model's folder are read")
    root = Path(folder).resolve()
    target = (root / location).resolve()
    if target != root and root not in target.parents:
        raise ConversionError(f"{where}: tensor {name!r} names external data {location!r}, "
                              f"outside the model's folder {root}; refused")
    if not target.is_file():
        raise ConversionError(f"{where}: tensor {name!r}: external data file {location!r} "
                              f"does not exist or is not a regular file")
    size = target.stat().st_size
    if length is None:
        length = size - offset
    if offset < 0 or length != expected or offset + length > size:
        raise ConversionError(f"{where}: tensor {name!r} declares {expected} bytes but its "
                              f"external data {location!r} holds bytes [{offset}, "
                              f"{offset + length}) of a {size}-byte file")
    with target.open("rb") as file:
        file.seek(offset)
        raw = file.read(length)
    if len(raw) != length:
        raise ConversionError(f"{where}: tensor {name!r}: external data {location!r} was "
                              f"truncated while being read")
    return raw


def topological_order(graph, known, where):
    """The graph's nodes in an order where every input is defined first.

    ``known`` holds the names defined before any node runs (graph inputs and
    initializers).  ConversionError for a value used but never defined, a
    value defined twice, or nodes that depend on each other in a cycle.
    """
    producer = {}
    for index, node in enumerate(graph.node):
        for output in node.output:
            if not output:
                continue
            if output in producer or output in known:
                raise ConversionError(f"{where}: value {output!r} is defined twice (node "
                                      f"{_label(node, index)})")
            producer[output] = index
    waiting = {}
    ready = []
    users = {}
    for index, node in enumerate(graph.node):
        needed = set()
        for name in node.input:
            if not name or name in known:
                continue
            if name not in producer:
                raise ConversionError(f"{where}: node {_label(node, index)} uses {name!r}, "
                                      f"which no node, input or initializer defines")
            needed.add(name)
            users.setdefault(name, []).append(index)
        waiting[index] = len(needed)
        if not needed:
            ready.append(index)
    order = []
    while ready:
        index = ready.pop()
        order.append(index)
        for output in graph.node[index].output:
            for user in users.get(output, ()):
                waiting[user] -= 1
                if waiting[user] == 0:
                    ready.append(user)
    if len(order) != len(graph.node):
        stuck = min(i for i in waiting if waiting[i] > 0)
        raise ConversionError(f"{where}: the graph has a cycle through node "
                              f"{_label(graph.node[stuck], stuck)}")
    return [graph.node[i] for i in order]


def _label(node, index):
    return f"{node.name or f'#{index}'} ({node.op_type})"

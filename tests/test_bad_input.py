"""The bad-input battery: every public function and layer, fed what users get wrong.

Each case calls one public entry point with one argument spoiled: wrong ndim,
empty and negative sizes, a shape that disagrees with another argument, a
dtype it does not take (int, bool, float16, complex, object, str), a
non-contiguous, Fortran-ordered, negative-stride, read-only or broadcast
(zero-stride) view, a huge declared size, NaN/inf values, a Python list or
scalar, a bad ``out=`` buffer.  A case passes when the call either

* raises ValueError/TypeError (or MemoryError) whose message names the
  function and the argument (or a documented exception where one is
  documented, e.g. ``CheckpointError``, ``FileNotFoundError``), or
* returns what the float64 reference (``cnnext._reference``, the naive
  notebook loops for ``cnnext.compat``, the same call on clean inputs for
  models) returns for the same arguments,

and leaves every input array unmodified.  Anything else fails it: another
exception type, an error message that does not say what is wrong, a result
the reference does not give (or a result where the reference refuses).

Run as a script, this file executes every case in its own process and
prints one JSON line per case; the tests run it in a subprocess, so a case
that crashes the interpreter (the kernels run with bounds checks off) fails
a test instead of killing pytest, and the last line printed names it.
"""

import copy
import functools
import itertools
import json
import math
import operator
import os
import re
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import cnnext
from cnnext import _reference as ref
from cnnext import compat, layers
from cnnext import functional as F
from cnnext._bench import notebook_loops

try:
    from reliability_testing import SANITIZED, run_json_lines, same_values, scaled, subprocess_env
except ImportError:  # run as a script from another directory
    sys.path.insert(0, str(Path(__file__).parent))
    from reliability_testing import SANITIZED, run_json_lines, same_values, scaled, subprocess_env

REFUSALS = (ValueError, TypeError, MemoryError)


class Case(NamedTuple):
    target: str  # the public name under test, e.g. "conv2d", "Conv2D.forward"
    label: str  # what was spoiled
    call: Callable[[], Any]
    names: tuple  # an error message must name one of these arguments
    expect: Callable[[], Any]  # the reference result (raises where the reference refuses)
    inputs: tuple = ()  # arrays the call must leave unmodified
    documented: tuple = ()  # other exception types the target documents
    owners: tuple = ()  # other names an error may start with (a delegate's)
    raises: tuple = ()  # when given, the call must raise one of these (nothing else will do)
    computes: bool = False  # the call must return: valid input, no refusal (MemoryError) allowed


# --------------------------------------------------------------- array spoilers
def _fill(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def negative_strides(a):
    """The values of ``a`` in a view whose strides are all negative."""
    flipped = a[(slice(None, None, -1),) * a.ndim].copy()
    return flipped[(slice(None, None, -1),) * a.ndim]


def strided(a):
    """The values of ``a`` in a non-contiguous view (every other element of a bigger array)."""
    if a.ndim == 0:
        return a
    wide = np.repeat(a, 2, axis=-1)
    return wide[..., ::2]


def read_only(a):
    view = a.copy()
    view.flags.writeable = False
    return view


def grown(a, axis, extra=1):
    """``a`` with ``extra`` more entries along ``axis`` (copies of the last ones)."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, extra)
    return np.pad(a, pad, mode="edge") if a.shape[axis] else np.zeros(
        tuple(s + extra * (i == axis) for i, s in enumerate(a.shape)), a.dtype)


def with_value(a, value, where=0):
    b = a.astype(a.dtype, copy=True)
    if b.size:
        b.reshape(-1)[where % b.size] = value
    return b


def float_variants(a):
    """(label, value) spoilers of a float array argument ``a``."""
    yield "float64 instead of float32", a.astype(np.float64)
    for dtype in (np.int8, np.int32, np.int64, np.uint8, np.bool_, np.float16, np.complex64,
                  np.complex128):
        yield f"dtype {np.dtype(dtype).name}", a.astype(dtype)
    yield "dtype object", a.astype(object)
    yield "dtype str", a.astype(str)
    yield "a Python list", a.tolist()
    yield "a ragged list", [a.tolist(), [1.0]]
    yield "a Python float", 1.5
    yield "None", None
    yield "a str", "x"
    yield "0-d array", np.array(1.5, a.dtype)
    yield "one axis more", a[None]
    if a.ndim > 1:
        yield "one axis less", a[0]
    for axis in range(a.ndim):
        yield f"size 0 along axis {axis}", np.take(a, [], axis=axis)
        yield f"one more along axis {axis}", grown(a, axis)
        if a.shape[axis] > 1:
            yield f"one less along axis {axis}", np.take(a, range(a.shape[axis] - 1), axis=axis)
    yield "non-contiguous", strided(a)
    yield "Fortran order", np.asfortranarray(a)
    yield "negative strides", negative_strides(a)
    yield "read-only", read_only(a)
    yield "broadcast (zero strides)", np.broadcast_to(a[(slice(0, 1),) * a.ndim], a.shape)
    if a.ndim == 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            yield "a matrix subclass", np.asmatrix(a)
    else:
        yield "an ndarray subclass", a.view(np.recarray)
    yield "huge broadcast view", np.broadcast_to(np.ones((1,) * a.ndim, a.dtype),
                                                 (2**40, *a.shape[1:]))
    for value in (np.nan, np.inf, -np.inf):
        yield f"{value} at the first element", with_value(a, value)
        yield f"{value} at the last element", with_value(a, value, -1)
    yield "all NaN", np.full_like(a, np.nan)
    yield "float max", np.full_like(a, np.finfo(a.dtype).max)
    yield "subnormals", np.full_like(a, np.finfo(a.dtype).smallest_subnormal)


def int_array_variants(a, high):
    """(label, value) spoilers of an integer index array ``a`` whose values lie in [0, high)."""
    for dtype in (np.int32, np.int16, np.uint8, np.uint64, np.float64, np.bool_, object):
        yield f"dtype {np.dtype(dtype).name}", a.astype(dtype)
    yield "a Python list", a.tolist()
    yield "None", None
    yield "one axis more", a[None]
    yield "one axis less", a[0]
    for axis in range(a.ndim):
        yield f"size 0 along axis {axis}", np.take(a, [], axis=axis)
        yield f"one more along axis {axis}", grown(a, axis)
    for value in (-1, high, 2**31, 2**63 - 1, -2**63):
        yield f"value {value}", with_value(a, value)
        yield f"value {value} at the end", with_value(a, value, -1)
    yield "uint64 max", with_value(a.astype(np.uint64), np.iinfo(np.uint64).max)
    yield "non-contiguous", strided(a)
    yield "Fortran order", np.asfortranarray(a)
    yield "negative strides", negative_strides(a)
    yield "read-only", read_only(a)


def int_variants(valid_pair=True, allow_none=False):
    """(label, value) spoilers of an int or (h, w) argument."""
    cases = [("0", 0), ("-1", -1), ("2**31", 2**31), ("2**62", 2**62), ("2**80", 2**80),
             ("-2**80", -2**80), ("1.5", 1.5), ("2.0", 2.0), ("nan", math.nan), ("True", True),
             ("np.bool_", np.bool_(True)), ("'2'", "2"), ("b'2'", b"2"), ("2+0j", 2 + 0j),
             ("np.int32(2)", np.int32(2)), ("np.uint64(2)", np.uint64(2)),
             ("0-d array", np.array(2)), ("object()", object())]
    if not allow_none:
        cases.append(("None", None))
    if valid_pair:
        cases += [("(1, 2, 3)", (1, 2, 3)), ("()", ()), ("(2,)", (2,)), ("[2, 1]", [2, 1]),
                  ("(2, 0)", (2, 0)), ("(2, -1)", (2, -1)), ("(2, 1.5)", (2, 1.5)),
                  ("(2, None)", (2, None)), ("(2, 2**80)", (2, 2**80)),
                  ("np.array([2, 1])", np.array([2, 1])), ("{2, 1}", {2, 1}),
                  ("'22'", "22"), ("((2, 2), 2)", ((2, 2), 2))]
    return cases


def bool_variants():
    return [("1", 1), ("0", 0), ("'yes'", "yes"), ("None", None), ("np.bool_", np.bool_(False)),
            ("[]", []), ("np.array([True])", np.array([True]))]


def shape_variants(shape):
    """(label, value) spoilers of an x_shape argument."""
    n, c, h, w = shape
    return [("a list", list(shape)), ("3 entries", shape[:3]), ("5 entries", (*shape, 1)),
            ("negative N", (-1, c, h, w)), ("negative H", (n, c, -h, w)), ("zero H", (n, c, 0, w)),
            ("zero W", (n, c, h, 0)), ("H + 1", (n, c, h + 1, w)), ("W - 1", (n, c, h, w - 1)),
            ("N + 1", (n + 1, c, h, w)), ("C + 1", (n, c + 1, h, w)),
            ("huge H and W", (n, c, 2**40, 2**40)), ("H, W = 2**62", (n, c, 2**62, 2**62)),
            ("N = 2**62", (2**62, c, h, w)), ("float H", (n, c, float(h), w)),
            ("bool N", (True, c, h, w)), ("numpy ints", tuple(np.int64(d) for d in shape)),
            ("an array", np.array(shape)), ("None", None), ("a str", "2367"),
            ("a dict", dict(enumerate(shape)))]


def out_variants(shape, dtype, inputs):
    """(label, value) spoilers of an out= buffer that should have ``shape`` and ``dtype``."""
    good = np.full(shape, np.nan if np.dtype(dtype).kind == "f" else -1, dtype)
    other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    yield "a valid NaN-filled buffer", good
    yield "read-only", read_only(good)
    yield "wrong dtype", good.astype(other)
    yield "int dtype", np.zeros(shape, np.int64 if dtype != np.int64 else np.float32)
    yield "one axis more", good[None]
    yield "one more along the last axis", np.empty((*shape[:-1], shape[-1] + 1), dtype)
    yield "Fortran order", np.asfortranarray(np.empty((*shape[:-1], shape[-1] + 1), dtype)
                                             )[..., :-1] if len(shape) > 1 else good[::-1]
    yield "non-contiguous", strided(good)
    yield "a Python list", good.tolist()
    yield "a tuple", (good,)
    for i, array in enumerate(inputs):
        if isinstance(array, np.ndarray) and array.shape == tuple(shape) and array.dtype == dtype:
            yield f"the input array #{i} itself", array
        elif isinstance(array, np.ndarray) and array.dtype == dtype and array.size >= good.size:
            yield f"a view of input #{i}", array.reshape(-1)[:good.size].reshape(shape)


# --------------------------------------------------------------- functional
def canon_float(value):
    """What the reference should compute on: a float64 array, or the value as is."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        return value
    if array.dtype.kind in "biuf":
        return array.astype(np.float64)
    return value


def canon_int(value):
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        return value
    if array.dtype.kind in "iu":
        return array
    return value


def reference_call(name, kwargs, floats, ints):
    """The reference's result for the same arguments (out= and inplace dropped)."""
    args = {k: v for k, v in kwargs.items() if k not in ("out", "inplace")}
    for key in floats:
        if key in args:
            args[key] = canon_float(args[key])
    for key in ints:
        if key in args:
            args[key] = canon_int(args[key])
    if name == "softmax_cross_entropy":
        logits, labels = args["logits"], args["labels"]
        if np.ndim(logits) != 2 or np.shape(labels) != np.shape(logits)[:1]:
            raise ValueError("the reference needs (N, K) logits and (N,) labels")
        if np.size(logits) == 0:
            raise ValueError("the reference needs at least one row and class")
        if not np.all((labels >= 0) & (labels < np.shape(logits)[1])):
            raise ValueError("labels out of range")
    if name == "max_pool2d_backward":
        x_shape = args["x_shape"]
        if not isinstance(x_shape, (tuple, list)) or len(x_shape) != 4 or np.shape(
                args["gy"])[:2] != tuple(x_shape)[:2] or np.shape(args["idx"]) != np.shape(
                args["gy"]):
            raise ValueError("the reference needs matching shapes")
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_))
                   for d in x_shape):
            raise TypeError("the reference needs int sizes")
        plane = int(x_shape[2]) * int(x_shape[3])
        if not np.all((args["idx"] >= 0) & (args["idx"] < plane)):
            raise ValueError("idx out of range")
    if name == "conv2d_max_pool2d":
        # What the unfused conv2d -> relu -> max_pool2d give in the input's
        # dtype, which the fused call promises (those three are checked
        # against the float64 reference on their own): where float32
        # overflows (inf - inf = NaN inside a sum whose float64 value relu
        # zeroes) or rounds two window elements to one value, float64's
        # results are not the ones float32 arithmetic can give.
        return _unfused(kwargs)
    if name == "conv2d_max_pool2d_backward":
        # Likewise max_pool2d_backward -> (relu's mask) -> conv2d_backward.
        return _unfused_backward(kwargs)
    if name in ("relu_backward", "leaky_relu_backward") and np.shape(args["gy"]) != np.shape(
            args["x"]):
        raise ValueError("the reference needs equal shapes")
    if name in ("sigmoid_backward", "tanh_backward") and np.shape(args["gy"]) != np.shape(
            args["y"]):
        raise ValueError("the reference needs equal shapes")
    if name.startswith("batch_norm2d") and np.ndim(args["x"]) != 4:
        raise ValueError("the reference needs (N, C, H, W)")
    if name == "batch_norm2d_backward" and np.shape(args["gy"]) != np.shape(args["x"]):
        raise ValueError("the reference needs equal shapes")
    if name.startswith("batch_norm2d"):
        channels = np.shape(args["x"])[1]
        for key in ("running_mean", "running_var", "weight", "bias", "mean", "invstd"):
            if key in args and args[key] is not None and np.shape(args[key]) != (channels,):
                raise ValueError(f"the reference needs ({channels},) {key}")
    if name == "global_avg_pool2d" and (np.ndim(args["x"]) != 4 or 0 in np.shape(args["x"])[2:]):
        raise ValueError("the reference needs (N, C, H, W) with non-empty planes")
    if name == "global_avg_pool2d_backward":
        x_shape = args["x_shape"]
        if not isinstance(x_shape, (tuple, list)) or len(x_shape) != 4 or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_))
                for d in x_shape) or tuple(x_shape)[:2] != np.shape(args["gy"]) or min(
                x_shape[2:]) < 1:
            raise ValueError("the reference needs a matching (N, C, H, W)")
    if name.startswith("dropout"):
        for key, low, high in (("p", 0, 1), ("key", 0, 2**64 - 1)):
            value = args[key]
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                    value, (int, float, np.integer, np.floating)) or not low <= value <= high:
                raise ValueError(f"{key} out of range")
        if not isinstance(args["key"], (int, np.integer)):
            raise TypeError("key must be an int")
        args["key"] = int(args["key"])
    if name in ("leaky_relu", "leaky_relu_backward"):
        slope = args["negative_slope"]
        if isinstance(slope, (bool, np.bool_)) or not isinstance(
                slope, (int, float, np.integer, np.floating)) or not math.isfinite(slope):
            raise ValueError("negative_slope must be a finite number")
    if name.startswith("batch_norm2d"):
        for key, low in (("momentum", 0), ("eps", 0)):
            value = args.get(key)
            if key in args and (isinstance(value, (bool, np.bool_)) or not isinstance(
                    value, (int, float)) or not math.isfinite(value) or value < low
                    or (key == "momentum" and value > 1) or (key == "eps" and value == 0)):
                raise ValueError(f"{key} out of range")
        for key in ("training", "return_stats", "need_input_grad"):
            if key in args and not isinstance(args[key], (bool, np.bool_)):
                raise TypeError(f"{key} must be a bool")
        if name == "batch_norm2d" and not args.get("training", False) and (
                args["running_mean"] is None or args["running_var"] is None):
            raise ValueError("evaluation needs running statistics")
    if "groups" in args:
        groups = args["groups"]
        if isinstance(groups, (bool, np.bool_)):
            raise TypeError("groups is a bool")
        groups = args["groups"] = operator.index(groups)
        c, k = np.shape(args["x"])[1], np.shape(args["w"])[0]
        if groups < 1 or c % groups or k % groups or np.shape(args["w"])[1] * groups != c:
            raise ValueError("groups must divide the channels")
    if name == "softmax":
        axis = args.pop("axis", -1)
        if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
            raise TypeError("axis must be an int")
        x = args["x"]
        if np.ndim(x) == 0:
            raise ValueError("softmax of a scalar")
        if np.shape(x)[axis] == 0:  # an empty result, as PyTorch's (the reference's max fails)
            return np.empty(np.shape(x))
        return np.moveaxis(ref.softmax(np.moveaxis(x, axis, -1)), -1, axis)
    return getattr(ref, name)(**args)


def _unfused(kwargs):
    """conv2d -> relu -> max_pool2d (values and indices) on the arguments of a fused call."""
    conv = F.conv2d(kwargs["x"], kwargs["w"], kwargs["b"], kwargs["stride"], kwargs["padding"],
                    kwargs["dilation"])
    if kwargs["relu"]:
        conv = F.relu(conv)
    return F.max_pool2d(conv, kwargs["pool_size"], kwargs["pool_stride"], return_indices=True)


def _unfused_backward(kwargs):
    """max_pool2d_backward -> relu's mask (from y) -> conv2d_backward on the arguments
    of a fused backward call."""
    gy, idx, x, w, y = (kwargs[name] for name in ("gy", "idx", "x", "w", "y"))
    if kwargs["relu"]:
        if y is None or np.shape(y) != np.shape(gy):
            raise ValueError("relu's mask needs y of gy's shape")
        gy = np.where(np.asarray(y) <= 0, np.zeros((), np.asarray(gy).dtype), gy)
    conv = F.conv2d(x, w, None, kwargs["stride"], kwargs["padding"], kwargs["dilation"])
    if np.shape(y) != np.shape(gy) or F.max_pool2d(
            conv, kwargs["pool_size"], kwargs["pool_stride"]).shape != np.shape(gy):
        raise ValueError("the pooled shapes must agree")
    dense = F.max_pool2d_backward(gy, idx, conv.shape)
    return F.conv2d_backward(dense, x, w, kwargs["stride"], kwargs["padding"],
                             kwargs["dilation"], need_input_grad=kwargs["need_input_grad"])


def checked_reference(name, kwargs, floats, ints):
    """The reference result, rejecting results the reference computes but cnnext must not
    (integer sizes given as floats or bools, which NumPy slicing happens to take)."""
    kwargs = dict(kwargs)
    for key in ("stride", "padding", "dilation", "kernel_size", "pool_size", "pool_stride"):
        value = kwargs.get(key)
        if value is None:
            continue
        if key == "padding" and _pair_of_pairs(value):
            kwargs[key] = tuple(tuple(exact_int(key, v) for v in side) for side in value)
            continue
        values = list(value) if isinstance(value, (tuple, list, np.ndarray)) and np.ndim(
            value) == 1 else [value]
        kwargs[key] = tuple(exact_int(key, v) for v in values) if len(values) > 1 else \
            exact_int(key, values[0])
    if "need_input_grad" in kwargs and not isinstance(kwargs["need_input_grad"],
                                                      (bool, np.bool_)):
        raise TypeError("need_input_grad is not a bool")
    for key in ("return_indices", "inplace"):  # documented as bools, used for their truth
        if key in kwargs:
            kwargs[key] = bool(kwargs[key])
    return reference_call(name, kwargs, floats, ints)


def _pair_of_pairs(value):
    """((top, bottom), (left, right)) padding, as cnnext's checks take it."""
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(side, (tuple, list)) and len(side) == 2 for side in value))


def exact_int(name, value):
    """``value`` as an int, as cnnext's checks take it (operator.index; bools refused)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} is a bool")
    return operator.index(value)


class FunctionSpec(NamedTuple):
    kwargs: dict  # a valid call
    floats: tuple  # float array arguments
    ints: tuple = ()  # integer array arguments (and their exclusive upper bound)
    pairs: tuple = ()  # int-or-pair arguments
    bools: tuple = ()
    shapes: tuple = ()  # x_shape-like arguments
    out: Any = None  # (shape, dtype) or a tuple of them for out=
    others: tuple = ()  # (name, [(label, value)]) for anything else


def function_specs():
    x = _fill((2, 3, 6, 7), seed=1)
    w = _fill((4, 3, 3, 2), seed=2)
    b = _fill((4,), seed=3)
    gy_conv = _fill((2, 4, 4, 6), seed=4)
    pooled = (2, 3, 3, 3)
    gy_pool = _fill(pooled, seed=5)
    _, idx = ref.max_pool2d(x, 2, return_indices=True)
    idx = idx.astype(np.int64)
    fused_y, fused_idx = ref.conv2d_max_pool2d(x, w, b, relu=True)
    fused_y = fused_y.astype(np.float32)
    fused_idx = fused_idx.astype(np.int64)
    gy_fused = _fill(fused_y.shape, seed=15)
    features = _fill((3, 5), seed=12)
    weights = _fill((4, 5), seed=13)
    gy_linear = _fill((3, 4), seed=14)
    logits = _fill((4, 5), seed=6)
    labels = np.array([0, 4, 2, 1], np.int64)
    small = _fill((3, 5), seed=7)
    pair_args = ("stride", "padding", "dilation")
    pool_pairs = ("kernel_size", "stride", "padding", "dilation")
    # Three channels: groups of 3 need K % 3 == 0, refused for these 4 filters.
    groups = ("groups", [("0", 0), ("-1", -1), ("2", 2), ("3", 3), ("1.0", 1.0), ("True", True),
                         ("None", None), ("'1'", "1"), ("np.int64(1)", np.int64(1)),
                         ("2**80", 2**80)])
    depthwise_x, depthwise_w = _fill((2, 4, 7, 9), seed=30), _fill((8, 1, 3, 3), seed=31)
    channels = x.shape[1]
    positive = np.abs(_fill((channels,), seed=32)) + 0.5
    stats = (_fill((channels,), seed=33), positive.copy())
    probability = ("p", [("-0.1", -0.1), ("1.5", 1.5), ("nan", math.nan), ("None", None),
                         ("'0.5'", "0.5"), ("True", True), ("1.0", 1.0), ("0", 0)])
    key = ("key", [("-1", -1), ("2**64", 2**64), ("1.5", 1.5), ("None", None), ("True", True),
                   ("np.uint64(2**63)", np.uint64(2**63)), ("'3'", "3")])
    slope = ("negative_slope", [("nan", math.nan), ("inf", math.inf), ("None", None),
                                ("'0.1'", "0.1"), ("True", True), ("-0.5", -0.5),
                                ("np.float32(0.2)", np.float32(0.2))])
    return {
        "conv2d": FunctionSpec(dict(x=x, w=w, b=b, stride=1, padding=0, dilation=1, groups=1),
                               ("x", "w", "b"), pairs=pair_args, out=((2, 4, 4, 6), np.float32),
                               others=(groups,)),
        "conv2d_backward": FunctionSpec(
            dict(gy=gy_conv, x=x, w=w, stride=1, padding=0, dilation=1, need_input_grad=True,
                 groups=1),
            ("gy", "x", "w"), pairs=pair_args, bools=("need_input_grad",),
            out=(((2, 3, 6, 7), np.float32), ((4, 3, 3, 2), np.float32),
                 ((4,), np.float32)), others=(groups,)),
        "conv2d_max_pool2d": FunctionSpec(
            dict(x=x, w=w, b=b, stride=1, padding=0, dilation=1, relu=True, pool_size=2,
                 pool_stride=None),
            ("x", "w", "b"), pairs=(*pair_args, "pool_size", "pool_stride"), bools=("relu",),
            out=((fused_y.shape, np.float32), (fused_y.shape, np.int64))),
        "conv2d_max_pool2d_backward": FunctionSpec(
            dict(gy=gy_fused, idx=fused_idx, x=x, w=w, stride=1, padding=0, dilation=1,
                 y=fused_y, relu=True, pool_size=2, pool_stride=None, need_input_grad=True),
            ("gy", "x", "w", "y"), ints=(("idx", 24),),
            pairs=(*pair_args, "pool_size", "pool_stride"), bools=("relu", "need_input_grad"),
            out=(((2, 3, 6, 7), np.float32), ((4, 3, 3, 2), np.float32),
                 ((4,), np.float32))),
        "depthwise conv2d": FunctionSpec(
            dict(x=depthwise_x, w=depthwise_w, b=_fill((8,), seed=34), stride=1, padding=1,
                 dilation=1, groups=4),
            ("x", "w", "b"), pairs=pair_args, out=((2, 8, 7, 9), np.float32)),
        "depthwise conv2d_backward": FunctionSpec(
            dict(gy=_fill((2, 8, 7, 9), seed=35), x=depthwise_x, w=depthwise_w, stride=1,
                 padding=1, dilation=1, need_input_grad=True, groups=4),
            ("gy", "x", "w"), pairs=pair_args, bools=("need_input_grad",),
            out=(((2, 4, 7, 9), np.float32), ((8, 1, 3, 3), np.float32), ((8,), np.float32))),
        "batch_norm2d": FunctionSpec(
            dict(x=x, running_mean=stats[0], running_var=stats[1], weight=positive * 2,
                 bias=_fill((channels,), seed=36), training=False, momentum=0.1, eps=1e-5,
                 return_stats=False),
            ("x", "running_mean", "running_var", "weight", "bias"),
            bools=("training", "return_stats"), out=(x.shape, np.float32),
            others=(("momentum", [("-0.1", -0.1), ("1.5", 1.5), ("nan", math.nan),
                                  ("None", None), ("'0.1'", "0.1"), ("True", True)]),
                    ("eps", [("0", 0), ("-1", -1), ("inf", math.inf), ("None", None),
                             ("1", 1)]))),
        "batch_norm2d_backward": FunctionSpec(
            dict(gy=_fill(x.shape, seed=37), x=x, mean=stats[0], invstd=positive,
                 weight=positive * 2, training=True, need_input_grad=True),
            ("gy", "x", "mean", "invstd", "weight"), bools=("training", "need_input_grad"),
            out=((x.shape, np.float32), ((channels,), np.float32), ((channels,), np.float32))),
        "global_avg_pool2d": FunctionSpec(dict(x=x), ("x",), out=((2, 3), np.float32)),
        "global_avg_pool2d_backward": FunctionSpec(
            dict(gy=_fill((2, 3), seed=38), x_shape=x.shape), ("gy",), shapes=("x_shape",),
            out=(x.shape, np.float32)),
        "leaky_relu": FunctionSpec(dict(x=small, negative_slope=0.01), ("x",),
                                   out=(small.shape, np.float32), others=(slope,)),
        "leaky_relu_backward": FunctionSpec(
            dict(gy=_fill((3, 5), seed=39), x=small, negative_slope=0.01), ("gy", "x"),
            out=(small.shape, np.float32), others=(slope,)),
        "sigmoid": FunctionSpec(dict(x=small), ("x",), out=(small.shape, np.float32)),
        "sigmoid_backward": FunctionSpec(dict(gy=_fill((3, 5), seed=40), y=F.sigmoid(small)),
                                         ("gy", "y"), out=(small.shape, np.float32)),
        "tanh": FunctionSpec(dict(x=small), ("x",), out=(small.shape, np.float32)),
        "tanh_backward": FunctionSpec(dict(gy=_fill((3, 5), seed=41), y=F.tanh(small)),
                                      ("gy", "y"), out=(small.shape, np.float32)),
        "dropout": FunctionSpec(dict(x=small, p=0.5, key=7), ("x",),
                                out=(small.shape, np.float32), others=(probability, key)),
        "dropout_backward": FunctionSpec(dict(gy=small, p=0.5, key=7), ("gy",),
                                         out=(small.shape, np.float32),
                                         others=(probability, key)),
        "linear": FunctionSpec(dict(x=features, w=weights, b=b), ("x", "w", "b"),
                               out=((3, 4), np.float32)),
        "linear_backward": FunctionSpec(
            dict(gy=gy_linear, x=features, w=weights, need_input_grad=True), ("gy", "x", "w"),
            bools=("need_input_grad",),
            out=(((3, 5), np.float32), ((4, 5), np.float32), ((4,), np.float32))),
        "max_pool2d": FunctionSpec(dict(x=x, kernel_size=2, stride=None, padding=0,
                                        return_indices=True, dilation=1, ceil_mode=False),
                                   ("x",), pairs=pool_pairs,
                                   bools=("return_indices", "ceil_mode"),
                                   out=((pooled, np.float32), (pooled, np.int64))),
        "max_pool2d_backward": FunctionSpec(dict(gy=gy_pool, idx=idx, x_shape=x.shape),
                                            ("gy",), ints=(("idx", 42),), shapes=("x_shape",),
                                            out=(x.shape, np.float32)),
        "avg_pool2d": FunctionSpec(dict(x=x, kernel_size=2, stride=None, padding=0,
                                        ceil_mode=False, count_include_pad=True, dilation=1),
                                   ("x",), pairs=pool_pairs,
                                   bools=("ceil_mode", "count_include_pad"),
                                   out=(pooled, np.float32)),
        "avg_pool2d_backward": FunctionSpec(dict(gy=gy_pool, x_shape=x.shape, kernel_size=2,
                                                 stride=None, padding=0, ceil_mode=False,
                                                 count_include_pad=True, dilation=1),
                                            ("gy",), pairs=pool_pairs, shapes=("x_shape",),
                                            bools=("ceil_mode", "count_include_pad"),
                                            out=(x.shape, np.float32)),
        "relu": FunctionSpec(dict(x=small, inplace=False), ("x",), bools=("inplace",),
                             out=(small.shape, np.float32)),
        "relu_backward": FunctionSpec(dict(gy=_fill((3, 5), seed=8), x=small), ("gy", "x"),
                                      out=(small.shape, np.float32)),
        "softmax": FunctionSpec(dict(x=small, axis=-1), ("x",), others=(
            ("axis", [("2", 2), ("-3", -3), ("0", 0), ("1.0", 1.0), ("True", True),
                      ("None", None), ("'0'", "0"), ("np.int64(0)", np.int64(0)),
                      ("2**80", 2**80)]),)),
        "softmax_cross_entropy": FunctionSpec(dict(logits=logits, labels=labels), ("logits",),
                                              ints=(("labels", 5),)),
    }


def _snapshot(values):
    # Huge broadcast views are read-only: nothing can write through them.
    return [(v, v.copy()) for v in values
            if isinstance(v, np.ndarray) and (v.flags.writeable or v.nbytes < 1 << 26)]


def spoiled_arguments(name, spec):
    """(label, changed keyword arguments, names an error may use) for function ``name``."""
    # A mismatch between two arrays may be reported under either name.
    arrays = (*spec.floats, *(a for a, _ in spec.ints), *spec.shapes)
    for arg in spec.floats:
        for label, value in float_variants(spec.kwargs[arg]):
            yield f"{arg}: {label}", {arg: value}, arrays
    for arg, high in spec.ints:
        for label, value in int_array_variants(spec.kwargs[arg], high):
            yield f"{arg}: {label}", {arg: value}, arrays
    for arg in spec.pairs:
        allow_none = arg == "stride" and "kernel_size" in spec.kwargs
        for label, value in int_variants(allow_none=allow_none):
            # "the kernel spans ...", "the output of shape ... would take ...",
            # "gy must have the shape of conv2d's output" also say what is wrong.
            yield f"{arg} = {label}", {arg: value}, (arg, "kernel", "output", *arrays)
    for arg in spec.bools:
        for label, value in bool_variants():
            yield f"{arg} = {label}", {arg: value}, (arg,)
    for arg in spec.shapes:
        for label, value in shape_variants(spec.kwargs[arg]):
            yield f"{arg}: {label}", {arg: value}, arrays
    for arg, values in spec.others:
        for label, value in values:
            yield f"{arg} = {label}", {arg: value}, (arg,)
    yield from spoiled_outputs(spec)
    if name in ("conv2d", "conv2d_backward"):
        # conv2d computes it; conv2d_backward's gy no longer has the output's shape.
        yield "padding ((1, 0), (0, 2)) (one-sided)", {"padding": ((1, 0), (0, 2))}, (
            () if name == "conv2d" else ("gy",))
        yield "padding ((1, 2, 3), (0, 0))", {"padding": ((1, 2, 3), (0, 0))}, ("padding",)
        yield "padding ((0, 2**61), (0, 0))", {"padding": ((0, 2**61), (0, 0))}, (
            "padding", "padded", "output")
    if name in ("max_pool2d", "avg_pool2d"):
        yield "padding ((1, 0), (0, 1)) (one-sided)", {"padding": ((1, 0), (0, 1))}, ()
        yield "ceil_mode=True", {"ceil_mode": True}, ()
        yield "ceil_mode with padding", {"ceil_mode": True, "kernel_size": 3, "padding": 1}, ()
        yield "dilation 2", {"dilation": 2, "stride": 1}, ()
        yield "padding ((3, 0), (0, 0)) (all-padding window)", {"padding": ((3, 0), (0, 0))}, (
            "padding",)
    if name == "avg_pool2d":
        yield "padding excluded from the divisor", {"count_include_pad": False, "padding": 1}, ()
    if name == "conv2d":
        yield "padding 2**40 (huge output)", {"padding": 2**40}, ("output", "padding")
        yield "dilation 2**40", {"dilation": 2**40}, ("kernel", "dilation")
        yield "b=None", {"b": None}, ("b",)
    if name in ("max_pool2d", "avg_pool2d"):
        yield "padding over half the kernel", {"kernel_size": 2, "padding": 2}, ("padding",)
        yield "kernel larger than the input", {"kernel_size": 8}, ("kernel",)
    if name == "max_pool2d":
        yield "return_indices=False", {"return_indices": False, "out": None}, ()
    if name == "relu":
        yield "inplace on a copy", {"x": spec.kwargs["x"].copy(), "inplace": True}, ()
        yield "inplace on a read-only array", {"x": read_only(spec.kwargs["x"]),
                                               "inplace": True}, ("x",)
        yield "inplace with out", {"inplace": True, "out": np.empty((3, 5), np.float32)}, (
            "out",)
        yield "inplace on a list", {"x": [1.0, -1.0], "inplace": True}, ("x",)


def spoiled_outputs(spec):
    if spec.out is None:
        return
    inputs = [spec.kwargs[a] for a in spec.floats]
    if not isinstance(spec.out[0][0], tuple):
        shape, dtype = spec.out
        for label, value in out_variants(shape, dtype, inputs):
            yield f"out: {label}", {"out": value}, ("out",)
        return
    good = tuple(np.full(shape, 0, dtype) for shape, dtype in spec.out)
    yield "out: a tuple of valid buffers", {"out": good}, ("out",)
    yield "out: a list of valid buffers", {"out": list(good)}, ("out",)
    yield "out: one buffer short", {"out": good[:-1]}, ("out",)
    yield "out: an array, not a tuple", {"out": good[0]}, ("out",)
    for i, (shape, dtype) in enumerate(spec.out):
        for label, value in out_variants(shape, dtype, inputs):
            buffers = [np.full(s, 0, d) for s, d in spec.out]
            buffers[i] = value
            yield f"out[{i}]: {label}", {"out": tuple(buffers)}, ("out",)
    if len(spec.out) == 3:
        yield "out: gx given with need_input_grad=False", {
            "out": good, "need_input_grad": False}, ("out", "gx")
        shared = np.zeros(72 + 2, np.float32)
        yield "out: gw and gb overlap", {"out": (None, shared[:72].reshape(4, 3, 3, 2),
                                                 shared[70:74])}, ("out",)


def function_cases():
    for spec_name, spec in function_specs().items():
        # "depthwise conv2d": conv2d again, on a depthwise problem.
        name = spec_name.split()[-1]
        func = getattr(F, name)
        for label, changes, names in spoiled_arguments(name, spec):
            kwargs = {**spec.kwargs, **changes}
            floats = spec.floats
            ints = tuple(a for a, _ in spec.ints)
            inputs = tuple(kwargs[a] for a in (*floats, *ints) if a in kwargs)
            if kwargs.get("inplace"):
                inputs = tuple(v for v in inputs if v is not kwargs["x"])
            if " " in spec_name:
                label = f"{spec_name.split()[0]}: {label}"
            yield Case(name, label, functools.partial(func, **kwargs), names,
                       functools.partial(checked_reference, name, kwargs, floats, ints),
                       inputs)


# ------------------------------------------------------------------- layers
LAYER_INPUTS = {
    "Conv2D": ((3, 2, 4), dict(in_channels=3, out_channels=2, kernel_size=3, padding=1,
                                stride=1, dilation=1, groups=1)),
    "BatchNorm2D": ((2, 3, 5, 4), dict(num_features=3, eps=1e-5, momentum=0.1, affine=True)),
    "Dropout": ((3, 5), dict(p=0.5)),
    "GlobalAvgPool2D": ((3, 2, 6, 7), {}),
    "LeakyReLU": ((3, 5), dict(negative_slope=0.01)),
    "Sigmoid": ((3, 5), {}),
    "Tanh": ((3, 5), {}),
    "Residual": ((3, 5), {}),
    "MaxPool2D": ((3, 2, 6, 7), dict(kernel_size=2, stride=None, padding=0)),
    "AvgPool2D": ((3, 2, 6, 7), dict(kernel_size=2, stride=None, padding=0)),
    "ReLU": ((3, 5), {}),
    "Flatten": ((3, 2, 2, 2), {}),
    "Dense": ((3, 6), dict(in_features=6, out_features=4)),
}


def layer_input(name):
    shape, _ = LAYER_INPUTS[name]
    if name == "Conv2D":
        shape = (2, 3, 5, 4)
    return _fill(shape, seed=11)


def _dropout_key(layer):
    """The mask key ``layer``'s next training forward draws (from a copy of its generator)."""
    return int(copy.deepcopy(layer._rng).integers(2**64, dtype=np.uint64))


ELEMENTWISE = ("ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Dropout")


def _residual_parts(layer, x):
    """The float64 inputs of each layer of a Residual's block and shortcut, and the outputs."""
    def chain(part):
        inputs = [x]
        for sub in part or ():
            inputs.append(layer_reference(sub, inputs[-1]))
        return inputs

    return chain(layer.block), chain(layer.shortcut)


def layer_reference(layer, x):
    """The reference forward output of ``layer`` on ``x`` (float64)."""
    name = type(layer).__name__
    raw, x = x, canon_float(x) if name != "Flatten" else np.asarray(x)
    if not isinstance(x, np.ndarray) or x.ndim < (1 if name in ELEMENTWISE else 2):
        raise ValueError("the reference takes batches")
    if name in ("BatchNorm2D", "GlobalAvgPool2D") and x.ndim != 4:
        raise ValueError("the reference takes (N, C, H, W)")
    if name == "BatchNorm2D":
        if x.shape[1] != layer.num_features or 0 in x.shape[2:] or (
                layer.training and x.shape[0] * x.shape[2] * x.shape[3] < 2):
            raise ValueError("BatchNorm2D needs its channels and more than one value each")
        return ref.batch_norm2d(x, layer.buffers["running_mean"], layer.buffers["running_var"],
                                layer.params.get("weight"), layer.params.get("bias"),
                                layer.training, 0.1, layer.eps)
    if name == "GlobalAvgPool2D":
        if 0 in x.shape[2:]:
            raise ValueError("empty planes")
        return ref.global_avg_pool2d(x)
    if name == "LeakyReLU":
        return ref.leaky_relu(x, layer.negative_slope)
    if name == "Sigmoid":
        return ref.sigmoid(x)
    if name == "Tanh":
        return ref.tanh(x)
    if name == "Dropout":
        return ref.dropout(x, layer.p, _dropout_key(layer)) if layer.training and layer.p else x
    if name == "Residual":
        block, shortcut = _residual_parts(layer, x)
        if block[-1].shape != shortcut[-1].shape:
            raise ValueError("the block and the shortcut disagree")
        return block[-1] + shortcut[-1]
    if name == "Conv2D":
        return ref.conv2d(x, layer.params["weight"].astype(np.float64),
                          layer.params.get("bias"), layer.stride, layer.padding, layer.dilation)
    if name == "MaxPool2D":
        return ref.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding)
    if name == "AvgPool2D":
        return ref.avg_pool2d(x, layer.kernel_size, layer.stride, layer.padding)
    if name == "ReLU":
        return ref.relu(x)
    if name == "Flatten":
        return np.reshape(raw, (len(raw), math.prod(x.shape[1:])))  # -1 fails for N = 0
    if x.ndim != 2 or x.shape[1] != layer.in_features:
        raise ValueError("Dense takes (N, in_features)")
    bias = layer.params.get("bias")
    y = x @ layer.params["weight"].T.astype(np.float64)
    return y if bias is None else y + bias


def layer_backward_reference(layer, x, gy):
    name = type(layer).__name__
    gy = canon_float(gy)
    expected_shape = layer_reference(layer, x).shape
    if not isinstance(gy, np.ndarray) or gy.shape != expected_shape:
        raise ValueError("gy must have the output's shape")
    x = x.astype(np.float64)
    if name == "BatchNorm2D":
        # With the batch's own statistics mean(xhat) = 0, so centring gy first gives
        # the same gradient without float64 noise of order max(|gy|) * 1e-16 (a
        # constant gy at float32's maximum has the exact gradient 0).
        _, mean, invstd = ref.batch_norm2d(x, training=True, return_stats=True, eps=layer.eps)
        if not np.isfinite(gy).all():  # inf - inf: the plain formula's NaN where it has them
            return ref.batch_norm2d_backward(gy, x, mean, invstd, layer.params.get("weight"))[0]
        xhat = (x - mean[None, :, None, None]) * invstd[None, :, None, None]
        centred = gy - gy.mean(axis=(0, 2, 3), keepdims=True)
        scale = invstd * layer.params["weight"].astype(np.float64)
        return scale[None, :, None, None] * (
            centred - xhat * (centred * xhat).mean(axis=(0, 2, 3), keepdims=True))
    if name == "GlobalAvgPool2D":
        return ref.global_avg_pool2d_backward(gy, x.shape)
    if name == "LeakyReLU":
        return ref.leaky_relu_backward(gy, x, layer.negative_slope)
    if name == "Sigmoid":
        return ref.sigmoid_backward(gy, ref.sigmoid(x))
    if name == "Tanh":
        return ref.tanh_backward(gy, ref.tanh(x))
    if name == "Dropout":  # the first forward's mask, from a layer built as the one tested
        return ref.dropout(gy, layer.p, _dropout_key(layer)) if layer.p else gy
    if name == "Residual":
        total = 0
        for part, inputs in zip((layer.block, layer.shortcut), _residual_parts(layer, x),
                                strict=True):
            g = gy
            for sub, sub_x in reversed(list(zip(part or (), inputs, strict=False))):
                g = layer_backward_reference(sub, sub_x, g)
            total = total + g
        return total
    if name == "Conv2D":
        return ref.conv2d_backward(gy, x, layer.params["weight"].astype(np.float64),
                                   layer.stride, layer.padding, layer.dilation)[0]
    if name == "MaxPool2D":
        _, idx = ref.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding,
                                return_indices=True)
        return ref.max_pool2d_backward(gy, idx, x.shape)
    if name == "AvgPool2D":
        return ref.avg_pool2d_backward(gy, x.shape, layer.kernel_size, layer.stride,
                                       layer.padding)
    if name == "ReLU":
        return ref.relu_backward(gy, x)
    if name == "Flatten":
        return gy.reshape(x.shape)
    return gy @ layer.params["weight"].astype(np.float64)


def _layer_forward(cls, kwargs, x, reference=False):
    layer = cls(**kwargs)
    return layer_reference(layer, x) if reference else layer.forward(x)


def _layer_backward(cls, kwargs, x, gy, reference=False):
    layer = cls(**kwargs)
    if reference:
        return layer_backward_reference(layer, x, gy)
    layer.forward(x)
    return layer.backward(gy)


def _backward_first(layer, gy):
    return layer.backward(gy)


def _construct_then_forward(cls, config):
    layer = cls(**config)
    return layer, layer.forward(layer_input(type(layer).__name__))


def _constructed_reference(cls, config, construct):
    # Seeded construction is deterministic, so the reference can rebuild the layer.
    layer = cls(**config)
    return layer_reference(layer, layer_input(type(layer).__name__))


def _forward_only(result):
    return result[1]


def _residual(block=None, shortcut=None, default=True):
    """A Residual over fresh seeded layers: (5,) -> Dense -> ReLU, plus a Dense shortcut."""
    if default:
        block = [layers.Dense(5, 5, seed=0), layers.ReLU()]
        shortcut = layers.Dense(5, 5, seed=1)
    return layers.Residual(block, shortcut)


def residual_cases():
    for label, kwargs in [("block = 3", {"block": 3}), ("block = None", {"block": None}),
                          ("block = []", {"block": []}), ("block = [3]", {"block": [3]}),
                          ("block = (ReLU, 'x')", {"block": (layers.ReLU(), "x")}),
                          ("block = a layer class", {"block": layers.ReLU}),
                          ("shortcut = []", {"block": layers.ReLU(), "shortcut": []}),
                          ("shortcut = 1.5", {"block": layers.ReLU(), "shortcut": 1.5}),
                          ("shortcut = 'identity'", {"block": layers.ReLU(),
                                                     "shortcut": "identity"})]:
        names = ("shortcut",) if "shortcut" in kwargs else ("block",)
        yield Case("Residual", label, functools.partial(layers.Residual, **kwargs), names,
                   _refuse)
    relu = layers.ReLU()
    yield Case("Residual", "a layer twice", functools.partial(layers.Residual, [relu, relu]),
               ("twice",), _refuse)
    yield Case("Residual", "mixed dtypes", lambda: layers.Residual(
        layers.Dense(2, 2), layers.Dense(2, 2, dtype="float64")), ("dtypes",), _refuse)
    yield Case("Residual", "shapes that cannot be added", lambda: layers.Residual(
        layers.Dense(5, 4)).forward(_fill((3, 5))), ("match", "x"), _refuse)


def layer_cases():
    yield from residual_cases()
    for name in layers.__all__:
        if name == "Layer":
            continue
        cls = _residual if name == "Residual" else getattr(layers, name)
        _, config = LAYER_INPUTS[name]
        extra = {"seed": 0} if name in ("Conv2D", "Dense", "Dropout") else {}
        # Constructor arguments.
        ctor_args = list(config)
        if name in ("Conv2D", "Dense"):
            ctor_args += ["bias", "dtype", "init", "seed"]
        if name == "BatchNorm2D":
            ctor_args += ["dtype"]
        if name == "Dropout":
            ctor_args += ["seed"]
        for arg in ctor_args:
            if arg in ("bias", "affine"):
                values = bool_variants()
            elif arg == "dtype":
                values = [("'float16'", "float16"), ("int", int), ("np.complex64", np.complex64),
                          ("'f8'", "f8"), ("None", None), ("'nonsense'", "nonsense"),
                          ("np.float64", np.float64), ("object()", object())]
            elif arg == "init":
                values = [("'zeros'", "zeros"), ("None", None), ("1", 1), ("'HE_NORMAL'",
                                                                         "HE_NORMAL")]
            elif arg == "seed":
                values = [("-1", -1), ("'x'", "x"), ("1.5", 1.5), ("2**130", 2**130)]
            else:
                values = int_variants(valid_pair=arg in ("kernel_size", "stride", "padding",
                                                         "dilation"),
                                      allow_none=arg == "stride" and "Pool" in name)
            for label, value in values:
                kwargs = {**config, **extra, arg: value}
                construct = functools.partial(_construct_then_forward, cls, kwargs)
                # A valid but extreme geometry may be refused by the first forward,
                # in the words of the functional kernel the layer calls.
                geometry = arg not in ("bias", "dtype", "init", "seed", "affine")
                yield Case(f"{name}", f"{arg} = {label}",
                           lambda construct=construct: _forward_only(construct()),
                           (arg, "x", "kernel", "output") if geometry else (arg,),
                           functools.partial(_constructed_reference, cls, kwargs, construct),
                           owners=("conv2d", "max_pool2d", "avg_pool2d") if geometry else ())
        # forward(x) and backward(gy).
        x = layer_input(name)
        kwargs = {**config, **extra}
        for label, value in float_variants(x):
            yield Case(f"{name}.forward", f"x: {label}",
                       functools.partial(_layer_forward, cls, kwargs, value), ("x",),
                       functools.partial(_layer_forward, cls, kwargs, value, reference=True),
                       (value,))
        gy = np.asarray(layer_reference(cls(**kwargs), x), np.float32)
        for label, value in float_variants(gy):
            yield Case(f"{name}.backward", f"gy: {label}",
                       functools.partial(_layer_backward, cls, kwargs, x, value), ("gy",),
                       functools.partial(_layer_backward, cls, kwargs, x, value, reference=True),
                       (value,))
        yield Case(f"{name}.backward", "before any forward",
                   functools.partial(_backward_first, cls(**kwargs), gy),
                   ("forward",), _refuse, documented=(RuntimeError,))
    # The base class: its shared checks, and the abstract methods it leaves to subclasses.
    yield Case("Layer", "forward of the abstract base class",
               lambda: layers.Layer().forward(np.zeros((2, 3), np.float32)), (), _refuse,
               documented=(NotImplementedError,))
    yield Case("Layer", "forward of an int array", lambda: layers.Layer().forward(
        np.zeros((2, 3), np.int64)), ("x",), _refuse)
    yield Case("Layer", "backward before forward", lambda: layers.Layer().backward(
        np.zeros((2, 3), np.float32)), ("forward",), _refuse, documented=(RuntimeError,))


def _refuse():
    raise ValueError("must be refused")


# ------------------------------------------------------------------- compat
def compat_pair(name, *args):
    """The same compat and notebook-loop object, built from the same random draws."""
    np.random.seed(0)  # noqa: NPY002
    ours = getattr(compat, name)(*args)
    np.random.seed(0)  # noqa: NPY002
    theirs = getattr(notebook_loops, name)(*args)
    return ours, theirs


def _compat_call(name, ctor, method, args, side):
    pair = compat_pair(name, *ctor)
    obj = pair[side]
    if side == 1:
        args = [canon_float(a) if isinstance(a, (np.ndarray, list)) else a for a in args]
        if any(isinstance(a, np.ndarray) and a.dtype != np.float64 for a in args):
            raise TypeError("the loops take float64")
    for setup_method, setup_args in _COMPAT_SETUP.get((name, method), ()):
        getattr(obj, setup_method)(*setup_args)
    return getattr(obj, method)(*args)


_IMAGE = _fill((6, 5), np.float64, seed=21)
_VOLUME = _fill((6, 5, 2), np.float64, seed=22)
_COMPAT_SETUP = {
    ("Conv", "backprop"): [("forward", (_IMAGE,))],
    ("MaxPool", "backprop"): [("forward", (_VOLUME,))],
    ("Softmax", "backprop"): [("forward", (_VOLUME,))],
}


def compat_cases():
    plans = [
        ("Conv", (2, 3), "forward", [("input", _IMAGE)], []),
        ("Conv", (2, 3), "backprop", [("d_L_d_out", _fill((4, 3, 2), np.float64, seed=23))],
         [("learn_rate", 0.1)]),
        ("MaxPool", (2,), "forward", [("input", _VOLUME)], []),
        ("MaxPool", (2,), "backprop", [("d_L_d_out", _fill((3, 2, 2), np.float64, seed=24))],
         []),
        ("Softmax", (60, 4), "forward", [("input", _VOLUME)], []),
        ("Softmax", (60, 4), "backprop", [("d_L_d_out", np.array([0, -2.0, 0, 0]))],
         [("learn_rate", 0.1)]),
    ]
    for name, ctor, method, arrays, scalars in plans:
        base = [v for _, v in arrays] + [v for _, v in scalars]
        for position, (arg, array) in enumerate(arrays):
            for label, value in float_variants(array):
                args = list(base)
                args[position] = value
                yield Case(f"{name}.{method}", f"{arg}: {label}",
                           functools.partial(_compat_call, name, ctor, method, args, 0),
                           (arg, "image"),
                           functools.partial(_compat_call, name, ctor, method, args, 1),
                           (value,))
        for position, (arg, _) in enumerate(scalars, start=len(arrays)):
            for label, value in [("'x'", "x"), ("None", None), ("nan", math.nan),
                                 ("an array", np.ones(3)), ("a list", [0.1, 0.2])]:
                args = list(base)
                args[position] = value
                yield Case(f"{name}.{method}", f"{arg} = {label}",
                           functools.partial(_compat_call, name, ctor, method, args, 0),
                           (arg,), functools.partial(_compat_call, name, ctor, method, args, 1))
        if method == "backprop":
            yield Case(f"{name}.{method}", "before forward",
                       functools.partial(getattr(getattr(compat, name)(*ctor), method), *base),
                       ("forward",), _refuse, documented=(RuntimeError,))
    ctor_args = {"Conv": ("num_filters", "filters_length"), "MaxPool": ("Pool_length",),
                 "Softmax": ("input_len", "nodes")}
    valid = {"Conv": (2, 3), "MaxPool": (2,), "Softmax": (60, 4)}
    for name, names in ctor_args.items():
        for position, arg in enumerate(names):
            for label, value in int_variants(valid_pair=False):
                args = list(valid[name])
                args[position] = value
                yield Case(name, f"{arg} = {label}",
                           functools.partial(_compat_constructed, name, args, 0), (arg,),
                           functools.partial(_compat_constructed, name, args, 1))
    for label, kwargs in [("num_filters=0", {"num_filters": 0}),
                          ("filters_length=29", {"filters_length": 29}),
                          ("pool_length=1", {"pool_length": 1}),
                          ("image_shape=(2, 2)", {"image_shape": (2, 2)}),
                          ("image_shape=None", {"image_shape": None}),
                          ("classes=0", {"classes": 0}), ("classes=1.5", {"classes": 1.5})]:
        yield Case("NotebookCNN", label, functools.partial(compat.NotebookCNN, **kwargs),
                   (*kwargs, "filters_length", "Pool_length", "num_filters", "image_shape"),
                   _refuse, owners=("Conv", "MaxPool"))
    image = (np.arange(784) % 256).reshape(28, 28).astype(np.uint8)
    for label, args in [("label 10", (image, 10)), ("label -11", (image, -11)),
                        ("label 1.5", (image, 1.5)), ("image 27x28", (image[1:], 3)),
                        ("image 3-D", (image[None], 3)), ("image of str", (image.astype(str), 3)),
                        ("image None", (None, 3))]:
        yield Case("NotebookCNN", f"train_step: {label}",
                   functools.partial(_notebook_step, 0, args),
                   ("label", "image", "input", "index"),
                   functools.partial(_notebook_step, 1, args), documented=(IndexError,),
                   owners=("Conv", "MaxPool", "Softmax"))


def _compat_constructed(name, args, side):
    """A compat object's forward output on a valid input (or the loops' for side 1)."""
    if side == 1:
        # The loops get the sizes as Python ints (NumPy 1.x turns uint64 - int into a float).
        args = [exact_int("size", value) for value in args]
        if min(args) < (2 if name == "MaxPool" else 1):
            raise ValueError("sizes too small")
    obj = compat_pair(name, *args)[side]
    sample = {"Conv": _IMAGE, "MaxPool": _VOLUME, "Softmax": _VOLUME}[name]
    if name == "Softmax" and args[0] != sample.size:
        return obj.weights.shape
    if name == "Conv" and args[1] > min(_IMAGE.shape):
        return obj.filters.shape
    return obj.forward(sample)


def _notebook_step(side, args):
    net = (compat.NotebookCNN if side == 0 else notebook_loops.NotebookCNN)
    np.random.seed(0)  # noqa: NPY002
    model = net()
    if side == 1:
        image, label = args
        if not isinstance(image, np.ndarray) or image.shape != (28, 28) or image.dtype.kind == "U":
            raise ValueError("the loops take (28, 28) images")
        if isinstance(label, float):
            raise TypeError("label must be an int")
    return model.train_step(*args)


# ------------------------------------------------------------------- models
def _model(dtype="float32"):
    from cnnext.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

    return cnnext.Sequential([Conv2D(1, 2, 3, seed=0, dtype=dtype), ReLU(), MaxPool2D(2),
                              Flatten(), Dense(2 * 3 * 3, 3, seed=1, dtype=dtype)])


_X = (np.arange(6 * 8 * 8) * 37 % 256).reshape(6, 8, 8).astype(np.uint8)
_Y = np.array([0, 1, 2, 0, 1, 2])


def _model_method(method, kwargs, clean=False):
    """Call ``method`` of a fresh model; with ``clean``, on the canonical version of the data
    (the result the spoiled call must equal when it succeeds)."""
    model = _model()
    if clean:
        kwargs = dict(kwargs)
        for key in ("X", "y"):
            if key in kwargs:
                value = np.asarray(kwargs[key])
                if value.dtype.kind not in ("fu" if key == "X" else "iu"):
                    raise TypeError(f"{key} has the wrong dtype")
                kwargs[key] = np.ascontiguousarray(value)
        for key in ("epochs", "batch_size"):
            exact_int(key, kwargs.get(key, 1))
    result = getattr(model, method)(**kwargs)
    if method == "fit":
        return [p.copy() for p in model.parameters().values()]
    return result


def model_cases():
    base = {"fit": dict(X=_X, y=_Y, epochs=1, batch_size=4, progress=False, seed=0),
            "evaluate": dict(X=_X, y=_Y, batch_size=4), "predict": dict(X=_X, batch_size=4)}
    float_x = (_X / 255 - 0.5).astype(np.float32)
    for method, kwargs in base.items():
        owner = f"Sequential.{method}"
        spoiled = []
        for label, value in float_variants(float_x):
            spoiled.append((f"X: {label}", {"X": value}, ("X",)))
        for label, value in [("uint8 Fortran", np.asfortranarray(_X)),
                             ("uint8 negative strides", negative_strides(_X)),
                             ("int16 images", _X.astype(np.int16)),
                             ("(N, 1, H, W) uint8", _X[:, None]), ("(N, 2, H, W)",
                                                                   np.stack([_X, _X], 1)),
                             ("(N, H, W + 1)", grown(_X, 2))]:
            spoiled.append((f"X: {label}", {"X": value}, ("X",)))
        if "y" in kwargs:
            for label, value in int_array_variants(_Y, 3):
                spoiled.append((f"y: {label}", {"y": value}, ("y",)))
        for label, value in int_variants(valid_pair=False):
            spoiled.append((f"batch_size = {label}", {"batch_size": value}, ("batch_size",)))
        if method == "fit":
            for label, value in int_variants(valid_pair=False):
                if label not in ("2**62", "2**31", "2**80"):  # valid, but would run forever
                    spoiled.append((f"epochs = {label}", {"epochs": value}, ("epochs",)))
            for arg, values in [
                ("optimizer", [("'sgd'", "sgd"), ("a class", cnnext.optim.SGD), ("1", 1)]),
                ("loss", [("'mse'", "mse"), ("None", None), ("1", 1)]),
                ("validation_data", [("a 3-tuple", (_X, _Y, _Y)), ("X only", _X),
                                     ("labels too short", (_X, _Y[:-1])),
                                     ("float labels", (_X, _Y.astype(float))),
                                     ("wrong image size", (grown(_X, 1), _Y))]),
                ("callbacks", [("a non-callable", [1]), ("an int", 3)]),
                ("on_nan", [("'ignore'", "ignore"), ("None", None)]),
                ("seed", [("'x'", "x"), ("-1", -1)]),
                ("lr_schedule", [("a number", 0.1), ("returning None", lambda e, lr: None),
                                 ("returning -1", lambda e, lr: -1.0),
                                 ("returning NaN", lambda e, lr: math.nan),
                                 ("returning a str", lambda e, lr: "0.1"),
                                 ("a decay", cnnext.schedules.StepDecay(1, 0.5))]),
                ("validation_split", [("0", 0), ("1", 1), ("'0.2'", "0.2"), ("True", True),
                                      ("nan", math.nan), ("-0.5", -0.5), ("0.5", 0.5),
                                      ("0.01 (nothing held out)", 0.01)]),
            ]:
                for label, value in values:
                    spoiled.append((f"{arg} = {label}", {arg: value}, (arg,)))
        for label, changes, names in spoiled:
            call_kwargs = {**kwargs, **changes}
            inputs = tuple(v for v in changes.values() if isinstance(v, np.ndarray))
            if "X" in names:
                names = ("X", "examples", "y")
            # fit documents FloatingPointError for a non-finite loss (on_nan="raise").
            documented = (FloatingPointError,) if method == "fit" and "X" in names else ()
            if documented:
                names += ("data",)
            yield Case(owner, label, functools.partial(_model_method, method, call_kwargs),
                       names, functools.partial(_model_method, method, call_kwargs, True),
                       inputs, documented)
    yield from state_dict_cases()
    for label, value in [("a layer, not a list", layers.ReLU()), ("an empty list", []),
                         ("a list with an int", [layers.ReLU(), 3]),
                         ("mixed dtypes", [layers.Dense(2, 2), layers.Dense(2, 2,
                                                                            dtype="float64")]),
                         ("None", None)]:
        yield Case("Sequential", f"layers: {label}", functools.partial(cnnext.Sequential, value),
                   ("layers",), _refuse)
    for label, value in [("(2, 8, 8)", (2, 8, 8)), ("(1, 2, 2)", (1, 2, 2)), ("'x'", "x"),
                         ("(1, 8.0, 8)", (1, 8.0, 8)), ("(1, -8, 8)", (1, -8, 8))]:
        yield Case("Sequential", f"input_shape = {label}",
                   functools.partial(lambda v: cnnext.Sequential(_model().layers, v), value),
                   ("input_shape", "layer"), _refuse)


def _bn_model():
    from cnnext.layers import BatchNorm2D, Conv2D, Dense, GlobalAvgPool2D

    return cnnext.Sequential([Conv2D(1, 2, 3, seed=0), BatchNorm2D(2), GlobalAvgPool2D(),
                              Dense(2, 3, seed=1)])


def _load_state(state):
    model = _bn_model()
    model.load_state_dict(state)
    return [value for _, value in sorted(model.state_dict().items())]


def _loaded_reference(state):
    """What load_state_dict must leave: the state's values in the model's dtypes."""
    model = _bn_model()
    own = model.state_dict()
    if not isinstance(state, dict) or set(state) != set(own):
        raise ValueError("keys differ")
    result = {}
    for key, value in own.items():
        given = np.asarray(state[key])
        if given.shape != value.shape or given.dtype.kind not in "iuf" or (
                given.dtype.kind == "f" and not np.isfinite(given).all()):
            raise ValueError("bad value")
        result[key] = given.astype(value.dtype)
    return [value for _, value in sorted(result.items())]


def state_dict_cases():
    good = _bn_model().state_dict()
    spoiled = {
        "a missing key": {k: v for k, v in good.items() if k != "1.running_var"},
        "an extra key": {**good, "9.weight": np.ones(2, np.float32)},
        "a wrong shape": {**good, "0.weight": good["0.weight"][:1]},
        "a NaN": {**good, "3.bias": np.full(3, np.nan, np.float32)},
        "a negative variance": {**good, "1.running_var": -np.ones(2, np.float32)},
        "a fractional count": {**good, "1.num_batches_tracked": np.array(0.5)},
        "a negative count": {**good, "1.num_batches_tracked": np.array(-1)},
        "str values": {**good, "1.weight": np.array(["a", "b"])},
        "complex values": {**good, "1.bias": np.ones(2, np.complex64)},
        "an object value": {**good, "1.bias": object()},
        "float64 values": {k: v.astype(np.float64) for k, v in good.items()},
        "lists": {k: v.tolist() for k, v in good.items()},
        "non-contiguous values": {k: strided(v) for k, v in good.items()},
    }
    for label, state in spoiled.items():
        yield Case("Sequential.load_state_dict", f"state_dict: {label}",
                   functools.partial(_load_state, state),
                   ("state_dict", "missing", "variance", "keys"),
                   functools.partial(_loaded_reference, state))
    for label, value in [("a list", [1, 2]), ("None", None), ("an int", 3)]:
        yield Case("Sequential.load_state_dict", f"state_dict: {label}",
                   functools.partial(_load_state, value), ("state_dict",), _refuse)
    for label, value in [("1", 1), ("'eval'", "eval"), ("None", None)]:
        yield Case("Sequential.train", f"mode = {label}",
                   functools.partial(lambda v: _bn_model().train(v), value), ("mode",),
                   _refuse)


def checkpoint_cases(directory):
    directory = Path(directory)
    model = _model()
    good = directory / "good.npz"
    model.save(good)
    (directory / "folder.npz").mkdir()
    (directory / "empty.npz").write_bytes(b"")
    (directory / "text.npz").write_text("not a zip")
    np.savez(directory / "foreign.npz", a=np.ones(3))
    for label, value in [("a missing file", directory / "missing.npz"),
                         ("a directory", directory / "folder.npz"),
                         ("an empty file", directory / "empty.npz"),
                         ("a text file", directory / "text.npz"),
                         ("a foreign .npz", directory / "foreign.npz"),
                         ("None", None), ("an int", 12345), ("a list", [str(good)]),
                         ("an embedded NUL", str(good) + "\0x")]:
        yield Case("load_model", f"path: {label}", functools.partial(cnnext.load_model, value),
                   ("path", "checkpoint", "str", "NoneType", "int", "list", "null byte",
                    "directory", "No such file", "zip"),
                   _refuse, documented=(cnnext.CheckpointError, OSError, TypeError, ValueError))
    for label, value in [("a bytes path", os.fsencode(good)), ("a str path", str(good))]:
        yield Case("load_model", f"path: {label}", lambda v=value: cnnext.load_model(v).predict(
            _X), ("path",), lambda: model.predict(_X))
    for label, value in [("a missing directory", directory / "no" / "m.npz"),
                         ("a directory", directory / "folder.npz"), ("None", None)]:
        yield Case("Sequential.save", f"path: {label}", functools.partial(model.save, value),
                   ("path", "directory", "No such file", "NoneType"), _refuse,
                   documented=(OSError, TypeError))


def dataset_cases(directory):
    from cnnext import datasets

    empty = Path(directory) / "data_home"
    empty.mkdir()
    idx = Path(directory) / "x.idx"
    idx.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x03abc")
    for loader in ("load_mnist", "load_fashion_mnist"):
        func = getattr(datasets, loader)
        for label, kwargs in [("data_home = 3", {"data_home": 3}),
                              ("data_home = ['x']", {"data_home": ["x"]}),
                              ("an empty data_home without download",
                               {"data_home": empty, "download": False}),
                              ("download = 'no' (truthy) offline",
                               {"data_home": empty / "d", "download": "no", "progress": False})]:
            yield Case(loader, label, functools.partial(func, **kwargs),
                       ("data_home", "download", "download=False", "mirror"),
                       functools.partial(_system_copy, loader),
                       documented=(datasets.DownloadError, FileNotFoundError))
    for label, kwargs in [("max_bytes = -1", {"max_bytes": -1}),
                          ("max_bytes = 'x'", {"max_bytes": "x"}),
                          ("max_bytes = None", {"max_bytes": None}),
                          ("max_bytes = 2**80", {"max_bytes": 2**80}),
                          ("path = None", {"path": None}), ("path = 3.5", {"path": 3.5}),
                          ("a missing path", {"path": empty / "missing"})]:
        yield Case("read_idx", label, functools.partial(datasets.read_idx, **{"path": idx,
                                                                            **kwargs}),
                   ("max_bytes", "path", "limit", "NoneType", "float", "No such file"),
                   lambda: np.frombuffer(b"abc", np.uint8),
                   documented=(datasets.DataFileError, OSError, TypeError))
    for label, value in [("3", 3), ("b'/tmp'", b"/tmp")]:
        yield Case("get_data_home", f"data_home = {label}",
                   functools.partial(datasets.get_data_home, value), ("data_home",), _refuse)


def _system_copy(loader):
    """The dataset read straight from a system directory (Debian's Fashion-MNIST), if any."""
    from cnnext.datasets import _mnist, read_idx

    dataset = _mnist.FASHION_MNIST if loader == "load_fashion_mnist" else _mnist.MNIST
    for directory in map(Path, dataset.system_dirs):
        if directory.is_dir():
            arrays = [read_idx(directory / dataset.files[role].name) for role in _mnist.ROLES]
            return ((arrays[0], arrays[1].astype(np.int64)),
                    (arrays[2], arrays[3].astype(np.int64)))
    raise FileNotFoundError("no system copy: a loader that computes is wrong")


# ------------------------------------------------------------ huge geometry
def _sides(padding):
    """((top, bottom), (left, right)) of an int, an (h, w) pair or a pair of pairs."""
    if np.ndim(padding) == 0:
        return (int(padding),) * 2, (int(padding),) * 2
    first, second = padding
    if np.ndim(first) == 1:
        return tuple(first), tuple(second)
    return (first, first), (second, second)


def _loop_geometry(x_shape, w_shape, stride, padding, dilation):
    (sh, sw), (dh, dw) = ref.pair(stride), ref.pair(dilation)
    ((top, bottom), (left, right)), (_, _, h, wd), (_, _, kr, ks) = (
        _sides(padding), x_shape, w_shape)
    ho = (h + top + bottom - dh * (kr - 1) - 1) // sh + 1
    wo = (wd + left + right - dw * (ks - 1) - 1) // sw + 1
    return (sh, sw), (top, left), (dh, dw), ho, wo


def _loop_conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """conv2d from its definition, an output position and tap at a time, in float64
    and Python integers: the oracle of tiny outputs of any geometry (the
    reference pads the input for real, which a padding of 2**40 does not allow)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    (n, c, h, wd), (k, _, kr, ks) = x.shape, w.shape
    (sh, sw), (ph, pw), (dh, dw), ho, wo = _loop_geometry(x.shape, w.shape, stride, padding,
                                                          dilation)
    y = np.zeros((n, k, ho, wo))
    for i, j, r, s in itertools.product(range(ho), range(wo), range(kr), range(ks)):
        row, col = i * sh + r * dh - ph, j * sw + s * dw - pw
        pixels = x[:, :, row, col] if 0 <= row < h and 0 <= col < wd else np.zeros((n, c))
        y[:, :, i, j] += pixels @ w[:, :, r, s].T
    return y if b is None else y + np.asarray(b, np.float64)[None, :, None, None]


def _loop_conv2d_backward(gy, x, w, stride=1, padding=0, dilation=1):
    """(gx, gw, gb) of ``_loop_conv2d``, from the same definition."""
    gy, x, w = (np.asarray(a, np.float64) for a in (gy, x, w))
    (n, c, h, wd), (_, _, kr, ks), (_, _, ho, wo) = x.shape, w.shape, gy.shape
    (sh, sw), (ph, pw), (dh, dw), _, _ = _loop_geometry(x.shape, w.shape, stride, padding,
                                                        dilation)
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    for i, j, r, s in itertools.product(range(ho), range(wo), range(kr), range(ks)):
        row, col = i * sh + r * dh - ph, j * sw + s * dw - pw
        inside = 0 <= row < h and 0 <= col < wd
        pixels = x[:, :, row, col] if inside else np.zeros((n, c))
        gw[:, :, r, s] += gy[:, :, i, j].T @ pixels
        if inside:
            gx[:, :, row, col] += gy[:, :, i, j] @ w[:, :, r, s]
    return gx, gw, gy.sum(axis=(0, 2, 3))


HUGE_GEOMETRIES = [
    ("padding and dilation 2**20", dict(padding=2**20, dilation=2**20)),
    ("padding and dilation 2**40", dict(padding=2**40, dilation=2**40)),
    ("stride 3, padding and dilation 2**61", dict(stride=3, padding=2**61, dilation=2**61)),
    ("padding 2**20 with stride 2**19", dict(stride=(2**19, 1), padding=(2**20, 1))),
    ("padding (2**20, 1), dilation (2**20, 1)", dict(padding=(2**20, 1), dilation=(2**20, 1))),
    ("padding 1100 and dilation 1100", dict(stride=(1, 2), padding=1100, dilation=1100)),
    ("one-sided padding ((2**41, 0), (0, 2**20))",
     dict(padding=((2**41, 0), (0, 2**20)), dilation=(2**40, 2**19))),
    ("one-sided padding ((3, 2**30), (2**30, 1))",
     dict(stride=(2**29, 1), padding=((3, 2**30), (2**30, 1)), dilation=(1, 2**29))),
]


def huge_geometry_cases():
    """Valid geometries whose windows reach far past a small image: a few outputs, each
    computed at once (PyTorch's answer), never a padded copy of terabytes."""
    x, w, b = _fill((2, 3, 4, 5), seed=21), _fill((4, 3, 3, 3), seed=22), _fill((4,), seed=23)
    poisoned_w = with_value(with_value(w, np.inf, 0), np.nan, 40)
    poisoned_x = with_value(x, -np.inf, 7)
    for label, geometry in HUGE_GEOMETRIES:
        y = _loop_conv2d(x, w, b, **geometry)
        gy = _fill(y.shape, seed=24)
        for what, xv, wv in (("", x, w), (", NaN and inf in w", x, poisoned_w),
                             (", -inf in x", poisoned_x, w)):
            yield Case("conv2d", label + what, functools.partial(F.conv2d, xv, wv, b, **geometry),
                       (), functools.partial(_loop_conv2d, xv, wv, b, **geometry), (xv, wv, b),
                       computes=True)
        yield Case("conv2d_backward", label,
                   functools.partial(F.conv2d_backward, gy, x, w, **geometry), (),
                   functools.partial(_loop_conv2d_backward, gy, x, w, **geometry), (gy, x, w),
                   computes=True)
        yield Case("conv2d_backward", label + ", NaN in gy",
                   functools.partial(F.conv2d_backward, with_value(gy, np.nan, 3), x, w,
                                     **geometry), (),
                   functools.partial(_loop_conv2d_backward, with_value(gy, np.nan, 3), x, w,
                                     **geometry), (gy, x, w), computes=True)
        layer = functools.partial(layers.Conv2D, 3, 4, 3, seed=5, **geometry)
        yield Case("Conv2D.forward", label, lambda layer=layer: layer().forward(x), (),
                   lambda layer=layer, g=geometry: _loop_conv2d(
                       x, layer().params["weight"], layer().params["bias"], **g), (x,),
                   computes=True)


# ------------------------------------------------------------- special files
def _special_files(directory):
    """(label, path) of files whose reported size bounds nothing: devices, a FIFO with no
    writer (opening it for reading would block), a socket, /proc files."""
    directory = Path(directory)
    found = [(label, Path(path)) for label, path in (
        ("/dev/zero (never ends)", "/dev/zero"), ("/dev/urandom", "/dev/urandom"),
        ("/dev/null", "/dev/null"), ("/proc/self/status (size 0, holds more)",
                                     "/proc/self/status"),
        ("/proc/self/environ", "/proc/self/environ")) if os.path.exists(path)]
    if hasattr(os, "mkfifo"):
        fifo = directory / "fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        found.append(("a FIFO without a writer", fifo))
    if hasattr(socket, "AF_UNIX"):
        path = directory / "socket"
        if not path.exists():
            # The file stays a socket (S_ISSOCK) after the socket object is closed.
            with socket.socket(socket.AF_UNIX) as listener:
                listener.bind(str(path))
        found.append(("a Unix socket", path))
    return found


def _idx_file(path, shape=(3,), data=None, compress=False):
    import gzip

    payload = bytes(range(int(np.prod(shape)))) if data is None else data
    content = bytes([0, 0, 0x08, len(shape)]) + b"".join(
        int(d).to_bytes(4, "big") for d in shape) + payload
    Path(path).write_bytes(gzip.compress(content, mtime=0) if compress else content)
    return path


def file_cases(directory):
    from cnnext import datasets

    directory = Path(directory)
    for label, path in _special_files(directory):
        yield Case("read_idx", f"path: {label}", functools.partial(datasets.read_idx, path),
                   (str(path),), _refuse, documented=(datasets.DataFileError,),
                   raises=(datasets.DataFileError,))
        yield Case("load_model", f"path: {label}", functools.partial(cnnext.load_model, path),
                   (str(path),), _refuse, documented=(cnnext.CheckpointError,),
                   raises=(cnnext.CheckpointError,))
    raw = _idx_file(directory / "raw.idx", (2, 3))
    packed = _idx_file(directory / "packed.idx.gz", (2, 3), compress=True)
    expected = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for label, path in (("raw", raw), ("gzip", packed)):
        for limit in (2**40, 2**62):
            # The bound is what is read, not what is allocated for it.
            yield Case("read_idx", f"max_bytes = 2**{limit.bit_length() - 1}, {label} file",
                       functools.partial(datasets.read_idx, path, max_bytes=limit), (),
                       lambda: expected, computes=True)
    for ndim in (65, 255):
        path = _idx_file(directory / f"ndim{ndim}.idx", (1,) * ndim)
        yield Case("read_idx", f"a header of {ndim} dimensions",
                   functools.partial(datasets.read_idx, path), ("dimensions",), _refuse,
                   documented=(datasets.DataFileError,), raises=(datasets.DataFileError,))
    path = _idx_file(directory / "ndim32.idx", (1,) * 32)
    yield Case("read_idx", "a header of 32 dimensions (NumPy's limit before 2.0)",
               functools.partial(datasets.read_idx, path), (),
               lambda: np.zeros((1,) * 32, np.uint8), computes=True)


# -------------------------------------------------------- nothing lost (saves)
class _Custom(layers.ReLU):
    """A user's own layer: not in the checkpoint format's table of layer types."""


def _save_keeps_the_old_file(model, path, original):
    """``model.save(path)`` over a checkpoint of ``original``; when it refuses, the file
    must still load and equal ``original`` (else AssertionError, a failure)."""
    try:
        model.save(path)
    except BaseException:
        kept = cnnext.load_model(path).parameters()
        for name, array in original.parameters().items():
            if not np.array_equal(kept[name], array):
                raise AssertionError(f"{path} was damaged by a refused save") from None
        raise
    try:
        return cnnext.load_model(path).predict(_X)
    except cnnext.CheckpointError as exc:
        raise AssertionError(f"the save replaced a loadable checkpoint with one load_model "
                             f"refuses ({exc})") from None


def save_cases(directory):
    directory = Path(directory)
    model = _model()
    missing = directory / "no such directory" / "m.npz"
    yield Case("Sequential.save", "path in a missing directory (the error names it)",
               functools.partial(model.save, missing), (str(missing),), _refuse,
               documented=(OSError,), raises=(OSError,))
    good = _model()
    diverged = _model()
    diverged.layers[0].params["weight"][0, 0, 1, 1] = np.nan
    adam = _model()
    adam.fit(_X, _Y, epochs=1, batch_size=3, optimizer=cnnext.optim.Adam(), seed=0,
             progress=False)
    adam.optimizer.state["4.weight"]["exp_avg_sq"][0, 0] = np.inf
    custom = cnnext.Sequential([*_model().layers, _Custom()])
    for label, spoiled in (("NaN in a weight", diverged), ("inf in Adam's state", adam),
                           ("a layer type the format does not know", custom)):
        path = directory / f"kept-{len(label)}.npz"
        good.save(path)
        yield Case("Sequential.save", f"over a good checkpoint: {label}",
                   functools.partial(_save_keeps_the_old_file, spoiled, path, good),
                   ("parameter", "load_model", "layer", "optimiser"), _refuse,
                   raises=(ValueError,))


def _fit_with_backup(directory, **kwargs):
    """fit with a backup: the weights; the backup directory must be gone afterwards."""
    result = _model_method("fit", dict(X=_X, y=_Y, epochs=2, batch_size=4, progress=False,
                                       seed=0, **kwargs))
    if "backup_dir" in kwargs and os.path.exists(kwargs["backup_dir"]):
        raise AssertionError("the backup was not removed on completion")
    return result


def backup_cases(directory):
    directory = Path(directory)
    (directory / "a file").write_text("")
    fresh = iter(directory / f"backup{i}" for i in itertools.count())
    clean = functools.partial(_fit_with_backup, directory)
    for label, value in [("3", 3), ("a list", [str(directory)]), ("a regular file",
                         directory / "a file"), ("inside a regular file",
                                                 directory / "a file" / "backup")]:
        yield Case("Sequential.fit", f"backup_dir = {label}",
                   functools.partial(_fit_with_backup, directory, backup_dir=value),
                   ("backup_dir",), _refuse, documented=(OSError,))
    for arg, values in [("backup_steps", [("0", 0), ("-1", -1), ("1.5", 1.5), ("True", True),
                                          ("'5'", "5"), ("nan", math.nan)]),
                        ("backup_seconds", [("0", 0), ("-1", -1.0), ("nan", math.nan),
                                            ("inf", math.inf), ("'x'", "x"), ("True", True)])]:
        for label, value in values:
            yield Case("Sequential.fit", f"{arg} = {label}",
                       functools.partial(_fit_with_backup, directory, backup_dir=next(fresh),
                                         **{arg: value}), (arg,), _refuse)
    for label, kwargs in [("every step", {"backup_steps": 1}),
                          ("every step and every 1e-9 s", {"backup_steps": 1,
                                                           "backup_seconds": 1e-9}),
                          ("epoch ends only", {})]:
        yield Case("Sequential.fit", f"backup_dir: a new directory, {label}",
                   functools.partial(_fit_with_backup, directory, backup_dir=next(fresh),
                                     **kwargs), (), clean, computes=True)


def all_cases(directory):
    return list(itertools.chain(function_cases(), layer_cases(), compat_cases(), model_cases(),
                                checkpoint_cases(directory), dataset_cases(directory),
                                huge_geometry_cases(), file_cases(directory),
                                save_cases(directory), backup_cases(directory)))


# ------------------------------------------------------------------- runner
def _inputs_unchanged(snapshot):
    for array, before in snapshot:
        if array.shape != before.shape or not np.array_equal(
                array, before, equal_nan=array.dtype.kind in "fc"):
            return False
    return True


def judge(case):
    """Run ``case``; a dict with its outcome ("ok" true or false) and why."""
    snapshot = _snapshot(case.inputs)
    record = {"target": case.target, "label": case.label}
    try:
        with np.errstate(all="ignore"):
            result = case.call()
    except REFUSALS + case.documented as exc:
        message = str(exc)
        record.update(outcome="refused", error=type(exc).__name__, message=message[:300])
        if case.computes or (case.raises and not isinstance(exc, case.raises)):
            record.update(ok=False, why="refused valid input" if case.computes else
                          f"raised {type(exc).__name__}, not one of "
                          f"{[e.__name__ for e in case.raises]}")
            return record
        owners = (case.target.split(".")[0], *case.owners)
        named = any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message)
                    for name in case.names)
        if isinstance(exc, MemoryError):
            record["ok"] = True  # NumPy's "Unable to allocate ..." names the size, not the arg
        elif isinstance(exc, case.documented) and not isinstance(exc, REFUSALS):
            record["ok"] = named or not case.names
        else:
            record["ok"] = named and (any(owner in message for owner in owners)
                                      or isinstance(exc, case.documented))
        if not record["ok"]:
            record["why"] = "the message does not name the function and the argument"
    except BaseException as exc:  # anything else is the finding
        record.update(outcome="raised", error=type(exc).__name__, message=str(exc)[:300],
                      ok=False, why="an exception other than ValueError/TypeError/MemoryError")
    else:
        record["outcome"] = "computed"
        if case.raises:
            record.update(ok=False, why=f"returned where it must raise "
                                         f"{[e.__name__ for e in case.raises]}")
            return record
        try:
            with np.errstate(all="ignore"):
                expected = case.expect()
        except Exception as exc:
            record.update(ok=False, why=f"returned a result where the reference refuses "
                                         f"({type(exc).__name__}: {str(exc)[:120]})")
        else:
            why = same_values(result, expected)
            record.update(ok=why is None, **({"why": why} if why else {}))
    if not _inputs_unchanged(snapshot):
        record.update(ok=False, why="an input array was modified")
    return record


def _limit_address_space(limit=8 << 30):
    """Cap this process's address space (not under ASan, which reserves terabytes), so a
    reader that never stops (/dev/zero read to its end) ends in a MemoryError, a failed
    case, instead of the kernel's OOM killer choosing a process on a shared machine."""
    try:
        import resource
    except ImportError:
        return
    if SANITIZED or not hasattr(resource, "RLIMIT_AS"):
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main():
    # No case may reach the network: the offline download cases must fail fast.
    def refuse_connection(*args, **kwargs):
        raise ConnectionRefusedError("the battery runs offline")

    socket.socket.connect = refuse_connection
    _limit_address_space()
    with tempfile.TemporaryDirectory() as directory:
        os.environ["CNNEXT_DATA"] = str(Path(directory) / "cnnext_data")
        for case in all_cases(directory):
            print(json.dumps(judge(case), default=str), flush=True)
    return 0


# -------------------------------------------------------------------- tests
import pytest  # noqa: E402 - only the tests need pytest, not the battery run as a script

# The instruction-set builds of the kernels this CPU runs; the battery runs on each.
ISAS = cnnext.show_config("dicts")["simd"]["supported"]

# Failures found by the battery and reported, not yet fixed in the package:
# (target regex, label regex, the finding[, ISA build regex]).  A failure
# matching none of these fails the tests; an entry matching no failure any
# more is reported as stale.
KNOWN_ISSUES = [
]


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    """Every case's record (with the ISA build it ran on), from one subprocess per
    instruction-set build of the kernels this CPU runs (CNNEXT_ISA)."""
    cases = all_cases(tmp_path_factory.mktemp("listing"))
    runs = {}
    for isa in ISAS:
        directory = tmp_path_factory.mktemp("battery")
        code, records, stderr = run_json_lines(__file__, cwd=directory,
                                               timeout=scaled(300, 1500),
                                               env=subprocess_env(CNNEXT_ISA=isa))
        runs[isa] = (code, [{**r, "isa": isa} for r in records], stderr)
    records = [r for _, found, _ in runs.values() for r in found]
    return runs, records, cases


@pytest.mark.parametrize("isa", ISAS)
def test_the_battery_runs_every_case_without_crashing(battery, isa):
    runs, _, cases = battery
    code, records, stderr = runs[isa]
    if len(records) < len(cases):
        crashed = cases[len(records)]
        pytest.fail(f"the battery died (exit code {code}) in case {crashed.target}: "
                    f"{crashed.label}\n{stderr[-3000:]}")
    assert code == 0, stderr[-3000:]
    assert len(records) == len(cases) > 1000


PUBLIC = sorted({*(f"F.{n}" for n in F.__all__), *layers.__all__, *compat.__all__})


def matches(entry, record):
    target, label, _, *isa = entry
    return (re.fullmatch(target, record["target"].split(".")[0])
            and re.search(label, record["label"])
            and (not isa or re.fullmatch(isa[0], record["isa"])))


def known_issue(record):
    return next((entry[2] for entry in KNOWN_ISSUES if matches(entry, record)), None)


OTHERS = ["Sequential", "load_model", "load_mnist", "load_fashion_mnist", "read_idx",
          "get_data_home"]


@pytest.mark.parametrize("name", PUBLIC + OTHERS)
def test_bad_inputs_are_refused_or_computed_correctly(battery, name):
    _, records, _ = battery
    target = name.removeprefix("F.")
    mine = [r for r in records if r["target"].split(".")[0] == target]
    assert mine, f"the battery has no case for {name}"
    failures = [r for r in mine if not r["ok"] and not known_issue(r)]
    assert not failures, "\n".join(
        f"{r['target']} [{r['label']}] ({r['isa']} build): {r['why']} -> "
        f"{r.get('error', '')}: {r.get('message', '')[:200]}"
        for r in failures[:25]) + f"\n({len(failures)} in all)"


def test_known_issues_are_still_current(battery):
    _, records, _ = battery
    failing = [r for r in records if not r["ok"]]
    stale = [entry[:2] for entry in KNOWN_ISSUES
             if not any(matches(entry, r) for r in failing)]
    if stale:
        pytest.xfail(f"fixed, remove from KNOWN_ISSUES: {stale}")


# Every environment variable cnnext (or its OpenMP runtime) reads, with values users
# get wrong; each runs in a fresh interpreter (the runtime reads them at load).
# "warns": a RuntimeWarning naming the variable, then the kernels run as usual;
# "omp warns": the same in builds with OpenMP (without it nothing is read);
# "ok": nothing to say.  Either way the interpreter lives and every kernel gives
# what it gives on one thread, bitwise.  docs/RELIABILITY.md lists them all.
ENVIRONMENTS = [
    *(("OMP_NUM_THREADS", v, "omp warns") for v in (
        "100000", "4097", "2147483648", "4294967296")),
    *(("OMP_NUM_THREADS", v, "ok") for v in (
        "0", "-1", "abc", "", " 3 ", "1", "64", "4,100000", "1e3",
        "18446744073709551617")),
    *(("OMP_STACKSIZE", v, "omp warns") for v in ("1048576G", "-1B")),
    *(("OMP_STACKSIZE", v, "ok") for v in ("16K", "1", "bogus", "100000000000000000000")),
    ("GOMP_STACKSIZE", "1048576G", "omp warns"),
    *(("OMP_THREAD_LIMIT", v, "ok") for v in ("1", "0", "-3")),
    ("OMP_DYNAMIC", "true", "ok"), ("OMP_PROC_BIND", "true", "ok"),
    ("OMP_PLACES", "bogus", "ok"), ("OMP_WAIT_POLICY", "bogus", "ok"),
    ("OMP_MAX_ACTIVE_LEVELS", "0", "ok"), ("GOMP_SPINCOUNT", "-5", "ok"),
    *(("CNNEXT_ISA", v, "warns") for v in ("bogus", "x86-64-v9", "avx512")),
    *(("CNNEXT_ISA", v, "ok") for v in ("baseline", " BASELINE ", "")),
    *(("CNNEXT_DATA", v, "ok") for v in ("", "relative/dir", "/nonexistent/x", "~")),
    *(("XDG_CACHE_HOME", v, "ok") for v in ("", "relative", "/nonexistent")),
    *(("CNNEXT_TUNE", v, "warns") for v in ("bogus", "of")),
    *(("CNNEXT_TUNE", v, "ok") for v in ("on", "OFF", "cached", "1", "0", "")),
    *(("CNNEXT_TUNE_DIR", v, "ok") for v in ("/nonexistent/x", "/dev/null", "relative")),
]

ENVIRONMENT_CHILD = """
import json, sys, warnings
import numpy as np
caught = warnings.catch_warnings(record=True)
caught = caught.__enter__()
warnings.simplefilter("always")
import cnnext
from cnnext import datasets, functional as F
sys.path.insert(0, sys.argv[1])
from reliability_testing import kernel_calls
calls = kernel_calls(0, batch=12)
big = np.random.default_rng(0).standard_normal(1 << 22).astype(np.float32)
calls["relu of 4M elements"] = lambda: F.relu(big)
threads = cnnext.get_num_threads()
results = {name: call() for name, call in calls.items()}
cnnext.set_num_threads(1)
def flat(r):
    return [a for i in r for a in flat(i)] if isinstance(r, tuple) else [np.asarray(r)]
differ = [name for name, call in calls.items()
          if [a.tobytes() for a in flat(call())] != [a.tobytes() for a in flat(results[name])]]
print(json.dumps({"warnings": [str(w.message) for w in caught
                               if issubclass(w.category, RuntimeWarning)],
                  "threads": threads, "differ": differ,
                  "data_home": str(datasets.get_data_home())}))
"""


@pytest.mark.parametrize("variable, value, verdict", ENVIRONMENTS,
                         ids=[f"{n}={v!r}" for n, v, _ in ENVIRONMENTS])
def test_no_environment_variable_crashes_or_changes_results(tmp_path, variable, value, verdict):
    script = tmp_path / "child.py"
    script.write_text(ENVIRONMENT_CHILD)
    env = subprocess_env(**{variable: value})
    if variable != "OMP_NUM_THREADS":
        env["OMP_NUM_THREADS"] = "2"
    proc = subprocess.run([sys.executable, str(script), str(Path(__file__).parent)],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=scaled(300, 900))
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.splitlines()[-1])
    assert not result["differ"], f"results differ from one thread's: {result['differ']}"
    assert 1 <= result["threads"] <= cnnext._kernels._openmp_helpers.MAX_THREADS
    openmp = cnnext.show_config("dicts")["openmp"]["enabled"]
    if verdict == "warns" or (verdict == "omp warns" and openmp):
        assert any(variable in w for w in result["warnings"]), result["warnings"]
    else:
        assert not result["warnings"], result["warnings"]


TUNING_CHILD = """
import os, sys
if sys.argv[2] == "limit":  # a reader without bound fails here, not on the neighbours
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))
import numpy as np
from cnnext import _reference, _tuning, functional as F
from cnnext._functional import conv
x = np.random.default_rng(0).standard_normal((8, 16, 24, 24)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((32, 16, 3, 3)).astype(np.float32)
args = conv._plan_args("conv2d", x.shape, w.shape, x.dtype, (1, 1), (1, 1), (1, 1))
path = _tuning.entry_path(conv._kernels, args)
path.parent.mkdir(parents=True, exist_ok=True)
kind = sys.argv[1]
if kind == "fifo":
    os.mkfifo(path)
elif kind == "directory":
    path.mkdir()
elif kind == "/dev/zero":
    os.symlink("/dev/zero", path)
else:
    path.write_bytes(b"{" * (1 << 20))
y = F.conv2d(x, w, padding=1)
assert np.allclose(y, _reference.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-3)
print("computed")
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
@pytest.mark.parametrize("kind", ["fifo", "directory", "/dev/zero", "1 MiB of '{'"])
def test_tuning_cache_entries_that_are_not_files_are_ignored(tmp_path, kind):
    """The measured-choices cache (cnnext._tuning) reads through the bounded reader: an entry
    that is a FIFO (opening it would block), a directory, a link to /dev/zero or a
    huge file is ignored, and the convolution computes."""
    script = tmp_path / "child.py"
    script.write_text(TUNING_CHILD)
    limit = "no limit" if SANITIZED or not sys.platform.startswith("linux") else "limit"
    proc = subprocess.run([sys.executable, str(script), kind, limit], cwd=tmp_path,
                          capture_output=True, text=True, timeout=scaled(120, 900),
                          env=subprocess_env(CNNEXT_TUNE="on",
                                             CNNEXT_TUNE_DIR=str(tmp_path / "tuning")))
    assert proc.returncode == 0 and proc.stdout.split() == ["computed"], proc.stderr[-2000:]


def test_every_exported_name_is_in_the_battery(tmp_path):
    cases = all_cases(tmp_path)
    targets = {case.target.split(".")[0] for case in cases}
    for module, names in ((F, F.__all__), (layers, layers.__all__), (compat, compat.__all__)):
        missing = sorted(set(names) - targets)
        assert not missing, f"{module.__name__} exports {missing}, which the battery never calls"
    for method in ("fit", "evaluate", "predict"):
        assert f"Sequential.{method}" in {case.target for case in cases}


def test_the_judge_fails_a_crash_a_wrong_result_and_a_vague_error():
    """The battery's verdicts can fail: a wrong result, a silent bad error, a modified input."""
    x = np.ones(3)

    def vague():
        raise ValueError("cannot reshape array")

    def modifies():
        x[0] = 5.0
        return x

    verdicts = [judge(Case("relu", "wrong result", lambda: np.zeros(3), ("x",),
                           lambda: np.ones(3))),
                judge(Case("relu", "vague", vague, ("x",), _refuse)),
                judge(Case("relu", "index error", lambda: [][1], ("x",), _refuse)),
                judge(Case("relu", "modifies", modifies, ("x",), lambda: np.full(3, 5.0), (x,))),
                judge(Case("relu", "computes where the reference refuses", lambda: 1.0, ("x",),
                           _refuse))]
    assert [v["ok"] for v in verdicts] == [False] * 5
    assert judge(Case("relu", "named", lambda: F.relu(np.ones(3, int)), ("x",), _refuse))["ok"]


if __name__ == "__main__":
    sys.exit(main())

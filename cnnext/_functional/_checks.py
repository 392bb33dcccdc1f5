"""Argument checks shared by every public kernel wrapper.

The compiled kernels run with bounds checks off, so a shape they were not
promised is memory corruption, not an exception.  Everything a kernel relies
on is established here first; each error names the function, the argument,
what it got and what was expected.

Per-image training calls each kernel a few times per step, so every check
opens with a fast path for the common valid case (an exact ndarray, a plain
int) that costs a few hundred nanoseconds; anything else takes the general
path, which also writes the error messages.
"""

import math
import operator

import numpy as np

from .._kernels._memory import ranges_overlap

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INTP_MAX = np.iinfo(np.intp).max
# The largest kernel size, stride, padding or dilation ``pair`` accepts.  The
# kernels take these as Py_ssize_t, where 2**63 does not fit, and no float
# array in memory has 2**61 elements, so no useful geometry needs more.
MAX_SIZE = 2**62


def float_array(func, name, value, ndim=None, layout=None):
    """``value`` as a float32/float64 ndarray (lists accepted), checked for ndim.

    Integer, bool, float16, complex and object inputs raise TypeError: a
    silent cast would hide a mistake (uint8 images must be scaled first).
    An ndarray subclass comes back as a plain ndarray view of its data, as
    from ``numpy.asarray`` (``np.matrix``, for one, stays 2-D when reshaped).
    """
    if (type(value) is np.ndarray and (ndim is None or value.ndim == ndim)
            and value.dtype in FLOAT_DTYPES):
        return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{func}: {name} must be an array of float32 or float64, "
                        f"got {type(value).__name__} ({exc})") from None
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{func}: {name} must have dtype float32 or float64, got {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        shape = f" {layout}" if layout else ""
        raise ValueError(f"{func}: {name} must be {ndim}-D{shape}, got shape {array.shape}")
    return array


def same_dtype(func, reference_name, reference, **others):
    """Every array in ``others`` (None skipped) has the dtype of ``reference``."""
    for name, array in others.items():
        if array is not None and array.dtype != reference.dtype:
            raise TypeError(f"{func}: {name} has dtype {array.dtype} but {reference_name} "
                            f"has {reference.dtype}; they must match")


def to_int(func, name, value):
    """An integer argument (Python or NumPy int; bool and float rejected)."""
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        kind = (f"an array of shape {value.shape} and dtype {value.dtype}"
                if isinstance(value, np.ndarray) else type(value).__name__)
        raise TypeError(f"{func}: {name} must be an int, got {kind}") from None


def pair(func, name, value, minimum):
    """An int or an (h, w) pair of ints, each in [``minimum``, MAX_SIZE], as a tuple.

    A 1-D array of two ints is a pair; a 0-d integer array is an int, as a
    NumPy integer is.
    """
    kind = type(value)
    if kind is int:
        if minimum <= value <= MAX_SIZE:
            return value, value
    elif (kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int
          and minimum <= value[0] <= MAX_SIZE and minimum <= value[1] <= MAX_SIZE):
        return value
    if isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        if len(value) != 2:
            raise ValueError(f"{func}: {name} must be an int or a pair (h, w), got {value!r}")
        result = (to_int(func, name, value[0]), to_int(func, name, value[1]))
    else:
        v = to_int(func, name, value)
        result = (v, v)
    if min(result) < minimum:
        raise ValueError(f"{func}: {name} must be >= {minimum}, got {value!r}")
    if max(result) > MAX_SIZE:
        raise ValueError(f"{func}: {name} must be at most 2**62, got {value!r}")
    return result


def padding_pairs(func, name, value):
    """Padding as ((top, bottom), (left, right)) from an int, an (h, w) pair
    or ((top, bottom), (left, right)), every entry in [0, MAX_SIZE]."""
    kind = type(value)
    if kind is int and 0 <= value <= MAX_SIZE:
        return (value, value), (value, value)
    sequence = (tuple, list, np.ndarray)
    if (isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim == 2)
            ) and len(value) == 2 and isinstance(value[0], sequence) and isinstance(
            value[1], sequence):
        if len(value[0]) != 2 or len(value[1]) != 2:
            raise ValueError(f"{func}: {name} must be an int, a pair (h, w) or a pair of pairs "
                             f"((top, bottom), (left, right)), got {value!r}")
        top, bottom = pair(func, name, tuple(value[0]), 0)
        left, right = pair(func, name, tuple(value[1]), 0)
        return (top, bottom), (left, right)
    try:
        h, w = pair(func, name, value, 0)
    except ValueError as exc:
        if "must be >=" in str(exc) or "at most" in str(exc):
            raise
        raise ValueError(f"{func}: {name} must be an int, a pair (h, w) or a pair of pairs "
                         f"((top, bottom), (left, right)), got {value!r}") from None
    return (h, h), (w, w)


def output_size(func, axis, size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """Output length along ``axis`` ("height"/"width"); ValueError when below 1.

    ``padding`` is an int (both sides) or a pair (before, after).  In
    ``ceil_mode`` a partial last window counts, provided it starts inside
    the input or the padding before it (PyTorch's and ONNX's rule).
    """
    before, after = (padding, padding) if type(padding) is int else padding
    extent = dilation * (kernel - 1) + 1
    padded = size + before + after
    if extent > padded:
        sides = f"2 * padding {before}" if before == after else f"padding {before} + {after}"
        raise ValueError(f"{func}: the kernel spans {extent} along {axis} but the padded input "
                         f"has only {padded} (size {size} + {sides})")
    if not ceil_mode:
        return (padded - extent) // stride + 1
    count = -(-(padded - extent) // stride) + 1
    if (count - 1) * stride >= size + before:
        count -= 1
    return count


def check_nbytes(func, name, shape, dtype):
    """Reject shapes whose element or byte count overflows intp."""
    if math.prod(map(int, shape)) * np.dtype(dtype).itemsize > _INTP_MAX:
        raise ValueError(f"{func}: {name} of shape {tuple(shape)} and dtype {np.dtype(dtype)} "
                         f"would take more than {_INTP_MAX} bytes")


def contiguous(array):
    """A C-contiguous array the kernel can read (a copy only when needed)."""
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def overlap(a, b):
    """Whether the ndarray ``a`` shares memory with the array ``b``: the cheap
    bounds test first, the exact (possibly costly) one only when the bounds
    overlap."""
    return ranges_overlap(a, (b,)) and np.shares_memory(a, b)


def out_array(func, name, out, shape, dtype, inputs=()):
    """Check or allocate an output buffer of ``shape`` and ``dtype``.

    A given ``out`` must be a writeable, C-contiguous ndarray of exactly that
    shape and dtype that shares no memory with the inputs; it is returned as
    is, so the kernel writes in place.  A shape that does not follow from
    validated inputs must go through ``check_nbytes`` first.
    """
    if out is None:
        return np.empty(shape, dtype)
    if (type(out) is np.ndarray and out.shape == shape and out.dtype == dtype
            and out.flags.c_contiguous and out.flags.writeable
            and not ranges_overlap(out, inputs)):
        return out
    shape = tuple(int(d) for d in shape)
    # A matrix cannot be returned as itself and written through a flat view.
    if not isinstance(out, np.ndarray) or isinstance(out, np.matrix):
        raise TypeError(f"{func}: {name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"{func}: {name} must have shape {shape} and dtype {np.dtype(dtype)}, "
                         f"got shape {out.shape} and dtype {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{func}: {name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{func}: {name} is read-only")
    for array in inputs:
        if array is not None and overlap(out, array):
            raise ValueError(f"{func}: {name} overlaps an input array")
    return out


def out_tuple(func, out, count):
    """Split an ``out=`` tuple of ``count`` buffers (None entries allocated)."""
    if out is None:
        return (None,) * count
    if not isinstance(out, tuple) or len(out) != count:
        raise TypeError(f"{func}: out must be a tuple of {count} arrays or None")
    return out


def gradient_out_buffers(func, out, need_input_grad, gy, x, w):
    """The (gx, gw, gb) buffers of a layer backward's ``out=`` tuple, checked
    against x (gx), w (gw) and w's first axis (gb); None entries allocated.

    Each given buffer must not overlap the inputs nor the buffers before it
    (a freshly allocated one cannot overlap anything).
    """
    if out is None:
        return (np.empty(x.shape, x.dtype) if need_input_grad else None,
                np.empty(w.shape, x.dtype), np.empty(w.shape[0], x.dtype))
    gx_out, gw_out, gb_out = out_tuple(func, out, 3)
    if gx_out is not None and not need_input_grad:
        raise ValueError(f"{func}: out[0] (gx) must be None when need_input_grad is False")
    inputs = (gy, x, w)
    gx = None
    if need_input_grad:
        gx = out_array(func, "out[0] (gx)", gx_out, x.shape, x.dtype, inputs)
        if gx_out is not None:
            inputs += (gx,)
    gw = out_array(func, "out[1] (gw)", gw_out, w.shape, x.dtype, inputs)
    if gb_out is None:
        return gx, gw, np.empty(w.shape[0], x.dtype)
    if gw_out is not None:
        inputs += (gw,)
    return gx, gw, out_array(func, "out[2] (gb)", gb_out, (w.shape[0],), x.dtype, inputs)

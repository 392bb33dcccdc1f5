"""Every argument check of cnnext, written once: functional ops, layers, models,
optimisers, the notebook API (compat), plans and the command line use these.

The compiled kernels run with bounds checks off, so a shape they were not
promised is memory corruption, not an exception.  Everything a kernel relies
on is established here first; each error names the function (``func``),
the argument, what it got and what was expected.

Sections: arrays (dtypes, layouts, out= buffers, byte counts); numbers
(ints, pairs, bools, finite reals, seeds); geometry (padding, output sizes);
layers and models (dtypes, initialisations, batch sizes, class labels).

Per-image training calls each kernel a few times per step, so every check
opens with a fast path for the common valid case (an exact ndarray, a plain
int) that costs a few hundred nanoseconds; anything else takes the general
path, which also writes the error messages.  (Calls that repeat a validated
call skip these checks altogether: cnnext/_kernels/_calls.pyx.)
"""

import math
import operator

import numpy as np

from ._kernels import _program
from ._kernels._memory import ranges_overlap

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# The dtypes layers and models compute in, by name.
DTYPES = {"float32": FLOAT_DTYPES[0], "float64": FLOAT_DTYPES[1]}
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


def int_at_least(func, name, value, minimum, below=None):
    """An int >= ``minimum`` (and < ``below``, when given); Python or NumPy int, bool
    and float refused."""
    value = to_int(func, name, value)
    if value < minimum or (below is not None and value >= below):
        bound = f"in [{minimum}, {below})" if below is not None else f">= {minimum}"
        raise ValueError(f"{func}: {name} must be {bound}, got {value}")
    return value


def positive_int(func, name, value):
    """An int >= 1 (bool and float refused)."""
    return int_at_least(func, name, value, 1)


def boolean(func, name, value):
    """True or False (a NumPy bool too), as a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be True or False, got {value!r}")
    return bool(value)


def number(func, name, value, minimum=0.0, below=None):
    """A finite real number in [minimum, below) (or >= minimum), as a float (bool refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{func}: {name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (below is not None and value >= below):
        bound = f"in [{minimum}, {below})" if below is not None else f">= {minimum}"
        raise ValueError(f"{func}: {name} must be a finite number {bound}, got {value!r}")
    return value


def positive_number(func, name, value):
    """A finite real number > 0, as a float (bool refused)."""
    value = number(func, name, value)
    if value == 0:
        raise ValueError(f"{func}: {name} must be a finite number > 0, got {value!r}")
    return value


def finite_real(func, name, value):
    """A finite real number of any sign, as a float (bool refused)."""
    if type(value) is float and math.isfinite(value):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{func}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{func}: {name} must be finite, got {value}")
    return value


def real_array(func, name, value):
    """``value`` as an ndarray of real numbers (bool, integer or float)."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{func}: {name} must be an array of real numbers, got "
                            f"{type(value).__name__} ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{func}: {name} must hold real numbers, got dtype {array.dtype}")
    return array


def check_seed(func, seed):
    """Refuse a ``seed`` that is not None, an int >= 0 or a numpy.random.Generator."""
    if seed is None or isinstance(seed, np.random.Generator):
        return
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{func}: seed must be None, an int >= 0 or a numpy.random.Generator, "
                        f"got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{func}: seed must be None, an int >= 0 or a numpy.random.Generator, "
                         f"got {seed}")


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


def output_extent(size, kernel, stride, padding, dilation=1):
    """floor((size + padding before + after - dilation (kernel - 1) - 1) / stride) + 1:
    the output length of a convolution or a pooling along one axis, as
    PyTorch's (0 or less when no window fits; ``output_size`` checks).
    ``padding``: an int (both sides) or (before, after)."""
    before, after = (padding, padding) if type(padding) is int else padding
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def conv_output_hw(func, height, width, kernel, stride, padding, dilation):
    """(Ho, Wo) of a convolution of (height, width) planes: ``kernel``, ``stride``
    and ``dilation`` (h, w) pairs, ``padding`` an (h, w) pair or ((top, bottom),
    (left, right)).  ValueError naming the axis when a side is below 1."""
    return tuple(output_size(func, axis, size, k, s, p, d) for axis, size, k, s, p, d in zip(
        ("height", "width"), (height, width), kernel, stride, padding, dilation, strict=True))


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
        return output_extent(size, kernel, stride, (before, after), dilation)
    count = -(-(padded - extent) // stride) + 1
    if (count - 1) * stride >= size + before:
        count -= 1
    return count


def pool_layer_padding(func, padding, kernel, dilation):
    """Refuse a pooling layer's ``padding`` (an (h, w) pair or ((top, bottom),
    (left, right))) that holds whole windows of ``kernel`` (dilated by
    ``dilation``) on some side, whatever the input.  The functional ops take
    more (ONNX models use it) and check each input's windows instead."""
    sides = padding if isinstance(padding[0], tuple) else tuple((p, p) for p in padding)
    for axis, pads, k, d in zip(("height", "width"), sides, kernel, dilation, strict=True):
        if max(pads) >= d * (k - 1) + 1:
            raise ValueError(f"{func}: padding {pads} along {axis} holds whole windows of "
                             f"kernel_size {k}; it must be smaller than the kernel's "
                             f"extent (at most half the kernel size in PyTorch)")


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


def bound_array(where, array, shape, dtype, written=None):
    """A layer's parameter, gradient or buffer as a plan binds it: an exact
    ndarray of ``shape`` and ``dtype``, C-contiguous, and writeable when the
    plan writes it (``written``: how, "trained" or "written"; None for an
    array it only reads, which may be read-only).  ``where`` names it
    ("layer 0 (Dense(...)): params['weight']")."""
    if type(array) is not np.ndarray:
        raise ValueError(f"{where} must be a numpy.ndarray, got {type(array).__name__}")
    shape = tuple(shape)
    if array.shape != shape or array.dtype != dtype:
        raise ValueError(f"{where} has shape {array.shape} and dtype {array.dtype}; the "
                         f"layer needs shape {shape} and dtype {np.dtype(dtype)}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{where} must be C-contiguous")
    if written and not array.flags.writeable:
        raise ValueError(f"{where} is read-only, so it cannot be {written}")
    return array


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


# ---------------------------------------------------------- layers and models

INITS = ("he_normal", "glorot_uniform")


def layer_dtype(func, dtype):
    """``dtype`` ("float32", "float64", or the NumPy dtype or type) as a NumPy dtype."""
    if isinstance(dtype, str):
        resolved = DTYPES.get(dtype)
    elif isinstance(dtype, np.dtype) or dtype is np.float32 or dtype is np.float64:
        resolved = np.dtype(dtype)
    else:
        resolved = None
    # Not `in DTYPES.values()`: NumPy dtypes compare equal to None (float64).
    if resolved is None or not any(resolved == d for d in DTYPES.values()):
        raise TypeError(f"{func}: dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def check_init(func, init):
    if init not in INITS:
        raise ValueError(f"{func}: init must be one of {INITS}, got {init!r}")
    return init


def check_weight_shape(func, arguments, shape):
    """Refuse a weight ``shape`` (set by the constructor's ``arguments``) whose initial
    values could not even be addressed, before anything is allocated.

    They are drawn in float64 whatever the layer's dtype, hence the dtype checked.
    """
    check_nbytes(func, f"the initial weights given by {arguments}", shape, np.float64)


def batch_size(func, value):
    """A batch size: an int >= 1."""
    return int_at_least(func, "batch_size", value, 1)


def class_labels(func, name, y, count, classes_shape):
    """``y`` as int64 class labels, one per example (``count``), each in [0, classes)
    for a model whose outputs have ``classes_shape`` per example."""
    if len(classes_shape) != 1:
        raise ValueError(f"{func}: the model's outputs have shape {classes_shape} per "
                         f"example; class labels need one score per class")
    classes = classes_shape[0]
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{func}: {name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1 or len(y) != count:
        raise ValueError(f"{func}: {name} must have shape ({count},), one label per example, "
                         f"got {y.shape}")
    if y.dtype == np.uint64:  # compared before the cast: past int64's range it would wrap
        outside = np.flatnonzero(y >= classes)
        labels, first = y.astype(np.int64), outside[0] if len(outside) else -1
    else:
        labels = y.astype(np.int64)
        first = _program.first_outside(labels, classes)
    if first >= 0:
        raise ValueError(f"{func}: {name} holds label {y[first]}, outside [0, {classes}) for "
                         f"a model with {classes} outputs")
    return labels

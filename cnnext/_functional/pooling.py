"""Max and average pooling: validated wrappers of the ``_pool`` kernels.

Each function checks its arguments, allocates (or checks) its outputs and
runs the compiled kernel with the GIL released.  The hot path, a valid
C-contiguous float array with int arguments, costs a few microseconds, so
that per-image training loops stay cheap.
"""

from typing import Literal, overload

import numpy as np

from .. import _dispatch, _validation
from .._typing import FloatArray, IntArray, IntPair, Padding
from . import _repeat

_pool = _dispatch.load("_pool")

_INT64 = np.dtype(np.int64)
# Below this many elements no (N, C, H, W) shape can overflow a byte count.
_SMALL = 2**31
_known_geometries = {}
_known_divisors = {}
_MAX_KNOWN_GEOMETRIES = 256
# Window extents (dilation * (kernel - 1) + 1) are tracked in float32 by the
# max-pool kernel.
_MAX_EXTENT = 2**24
# Windows checked one by one (dilation above the input size only).
_MAX_CHECKED_WINDOWS = 2**16


_MAX_FORWARD = _dispatch.by_dtype(_pool.max_pool2d_forward)
_MAX_BACKWARD = _dispatch.by_dtype(_pool.max_pool2d_backward)
_MAX_CALLS = _repeat.Calls()
_MAX_BACKWARD_CALLS = _repeat.Calls()
_AVG_CALLS = _repeat.Calls()
_AVG_BACKWARD_CALLS = _repeat.Calls()


def _step_sizes(in_shape, out_shape, kernel, stride, padding, check=0, dilation=(1, 1)):
    """The pooling steps' sizes (cnnext/_kernels/_pool_steps.pxi); ``padding``
    is the padding before the plane (top, left)."""
    n, c, h, w = in_shape
    return (n * c, h, w, out_shape[2], out_shape[3], *kernel, *stride, *padding, check,
            *dilation)


def _float_input(func, name, value):
    """A 4-D float32/float64 ndarray with non-empty planes."""
    if (type(value) is np.ndarray and value.ndim == 4 and value.dtype in _validation.FLOAT_DTYPES
            and value.shape[2] and value.shape[3]):
        return value
    value = _validation.float_array(func, name, value, ndim=4, layout="(N, C, H, W)")
    if value.shape[2] == 0 or value.shape[3] == 0:
        raise ValueError(f"{func}: {name} must have non-empty (H, W) planes, got shape "
                         f"{value.shape}")
    return value


def _plain(value):
    """Whether ``value`` is an int, None, or a tuple of those or of such tuples
    (hashable, and equal only to what validates the same)."""
    kind = type(value)
    if kind is int or value is None:
        return True
    return kind is tuple and all(type(v) is int or (type(v) is tuple and all(
        type(e) is int for e in v)) for v in value)


def _geometry(func, in_shape, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """The kernels' geometry: (kernel, stride, padding before the plane (top,
    left), dilation) as (h, w) pairs, the output (N, C, Ho, Wo), and the
    padding ((top, bottom), (left, right)).

    Valid geometries given as ints and tuples are remembered: a training
    loop asks for the same few again and again.
    """
    cacheable = (type(kernel_size) is int and type(padding) is int
                 and (stride is None or type(stride) is int) and type(dilation) is int
                 and ceil_mode is False) or (
        _plain(kernel_size) and _plain(stride) and _plain(padding) and _plain(dilation)
        and type(ceil_mode) is bool)
    if cacheable:
        key = (in_shape, kernel_size, stride, padding, dilation, ceil_mode)
        known = _known_geometries.get(key)
        if known is not None:
            return known
    kernel = _validation.pair(func, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else _validation.pair(func, "stride", stride, 1)
    pads = _validation.padding_pairs(func, "padding", padding)
    dilation = _validation.pair(func, "dilation", dilation, 1)
    ceil_mode = _validation.boolean(func, "ceil_mode", ceil_mode)
    extents = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))
    if max(extents) > _MAX_EXTENT:
        raise ValueError(f"{func}: a window may span at most {_MAX_EXTENT} along each axis "
                         f"(dilation * (kernel_size - 1) + 1; positions are tracked in "
                         f"float32), got {extents}")
    n, c, height, width = in_shape
    out = []
    for axis, size, k, s, p, d in zip(("height", "width"), (height, width), kernel, stride, pads,
                                      dilation, strict=True):
        count = _validation.output_size(func, axis, size, k, s, p, d, ceil_mode)
        _check_windows(func, axis, size, k, s, p, d, count)
        out.append(count)
    geometry = (kernel, stride, (pads[0][0], pads[1][0]), dilation, (n, c, *out), pads)
    if cacheable:
        if len(_known_geometries) >= _MAX_KNOWN_GEOMETRIES:
            _known_geometries.clear()
        _known_geometries[key] = geometry
    return geometry


def _check_windows(func, axis, size, kernel, stride, pads, dilation, count):
    """Every one of the ``count`` windows along ``axis`` holds an input element."""
    before, after = pads
    extent = dilation * (kernel - 1) + 1
    bad = None
    if extent <= before:
        bad = 0
    elif (count - 1) * stride - before >= size:
        bad = count - 1
    elif dilation > size:
        # Taps may step over the whole input: look at each window.
        if count > _MAX_CHECKED_WINDOWS:
            raise ValueError(f"{func}: dilation {dilation} exceeds the input's {axis} {size} "
                             f"with {count} windows (at most {_MAX_CHECKED_WINDOWS} are checked)")
        starts = np.arange(count, dtype=np.int64) * stride - before
        first = np.where(starts < 0, (dilation - 1 - starts) // dilation, 0)
        empty = (first >= kernel) | (starts + first * dilation >= size)
        if empty.any():
            bad = int(np.argmax(empty))
    if bad is not None:
        raise ValueError(f"{func}: window {bad} of {count} along {axis} holds only padding "
                         f"(size {size}, kernel_size {kernel}, stride {stride}, padding "
                         f"({before}, {after}), dilation {dilation}); every window must "
                         f"overlap the input")


def _axis_counts(size, kernel, stride, pads, dilation, count, include_pad):
    """How many taps of each of the ``count`` windows along one axis the
    divisor counts: those inside the input, or inside the padded input."""
    lo, hi = (-pads[0], size + pads[1]) if include_pad else (0, size)
    starts = np.arange(count, dtype=np.int64) * stride - pads[0]
    first = np.maximum(0, -((starts - lo) // dilation))
    stop = np.minimum(kernel, -((starts - hi) // dilation))
    return np.maximum(stop - first, 0)


def _divisors(geometry, in_shape, count_include_pad, dtype):
    """The average pool's divisor per output (Ho, Wo), or None when every
    window divides by kh * kw.  Remembered, read-only."""
    key = (geometry, in_shape[2:], count_include_pad, dtype)
    if key in _known_divisors:
        return _known_divisors[key]
    kernel, stride, _, dilation, out_shape, pads = geometry
    counts = [_axis_counts(size, k, s, p, d, count, count_include_pad)
              for size, k, s, p, d, count in zip(in_shape[2:], kernel, stride, pads, dilation,
                                                 out_shape[2:], strict=True)]
    divisors = np.multiply.outer(*counts).astype(dtype)
    if (divisors == kernel[0] * kernel[1]).all():
        divisors = None
    else:
        divisors.setflags(write=False)
    if len(_known_divisors) >= _MAX_KNOWN_GEOMETRIES:
        _known_divisors.clear()
    _known_divisors[key] = divisors
    return divisors


def int64_within(values, stop):
    """Integer array ``values`` of a dtype other than int64 as C-contiguous
    int64, and the flat position of its first entry outside [0, stop), or -1
    (then ``values`` comes back unconverted, for the error message).

    Shared with the loss.  The range is checked before the cast, which could
    wrap a uint64 around.  int64 values skip this: the kernels that read them
    check them first, in one pass.
    """
    outside = ((values < 0) | (values >= stop)).reshape(-1)
    if outside.any():
        return values, int(np.argmax(outside))
    return np.ascontiguousarray(values, dtype=_INT64), -1


def _x_shape(func, x_shape, gy):
    """``x_shape`` as a tuple of 4 ints matching gy's (N, C), planes non-empty,
    small enough to allocate."""
    if type(x_shape) is tuple and len(x_shape) == 4:  # x.shape, usually: one quick pass
        n, c, height, width = x_shape
        if (type(n) is int and type(c) is int and type(height) is int and type(width) is int
                and height > 0 and width > 0 and (n, c) == gy.shape[:2]
                and n * c * height * width < _SMALL):
            return x_shape
    if not isinstance(x_shape, (tuple, list)) or len(x_shape) != 4:
        raise ValueError(f"{func}: x_shape must be a 4-tuple (N, C, H, W), got {x_shape!r}")
    n, c, height, width = x_shape
    if type(n) is type(c) is type(height) is type(width) is int:  # x.shape: skip the checks
        shape = tuple(x_shape)
    else:
        shape = tuple(_validation.to_int(func, "x_shape", dim) for dim in x_shape)
    if min(shape) < 0 or shape[2] == 0 or shape[3] == 0:
        raise ValueError(f"{func}: x_shape must hold non-negative sizes with non-empty "
                         f"(H, W), got {shape}")
    if shape[:2] != gy.shape[:2]:
        raise ValueError(f"{func}: gy has shape {gy.shape} but x_shape is {shape}; their "
                         f"(N, C) must match")
    _validation.check_nbytes(func, "x_shape", shape, gy.dtype)
    return shape


@overload
def max_pool2d(x: FloatArray, kernel_size: IntPair, stride: IntPair | None = ...,
               padding: Padding = ..., return_indices: Literal[False] = ..., *,
               dilation: IntPair = ..., ceil_mode: bool = ...,
               out: FloatArray | None = ...) -> FloatArray: ...
@overload
def max_pool2d(x: FloatArray, kernel_size: IntPair, stride: IntPair | None = ...,
               padding: Padding = ..., *, return_indices: Literal[True], dilation: IntPair = ...,
               ceil_mode: bool = ...,
               out: tuple[FloatArray, IntArray] | None = ...) -> tuple[FloatArray, IntArray]: ...
@overload
def max_pool2d(x: FloatArray, kernel_size: IntPair, stride: IntPair | None, padding: Padding,
               return_indices: Literal[True], *, dilation: IntPair = ..., ceil_mode: bool = ...,
               out: tuple[FloatArray, IntArray] | None = ...) -> tuple[FloatArray, IntArray]: ...
def max_pool2d(x, kernel_size, stride=None, padding=0, return_indices=False, *, dilation=1,
               ceil_mode=False, out=None):
    """max_pool2d(x, kernel_size, stride=None, padding=0, return_indices=False, *, dilation=1,
    ceil_mode=False, out=None)

    2-D max pooling over the planes of an NCHW batch.

    Padding counts as -inf.  Each window is scanned in row-major order and
    an element replaces the running maximum when it is greater or NaN (as
    in PyTorch): ties go to the first maximum, a NaN is the maximum of any
    window holding one (its index is that of the last NaN), and the index
    of a window of -inf is its first in-plane element.

    Parameters
    ----------
    x : ndarray of float32 or float64, shape (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int, (int, int) or ((top, bottom), (left, right)), default 0
        Every window must still overlap the input (PyTorch also demands at
        most half of ``kernel_size``; ONNX models use more, and asymmetric
        padding).
    return_indices : bool, default False
        Also return the position of each maximum, flat in its H*W plane.
    dilation : int or (int, int), default 1
        Spacing of the window's taps.
    ceil_mode : bool, default False
        Round the output size up: a partial last window counts when it
        starts inside the input or its top/left padding.
    out : ndarray or tuple (y, indices), optional
        C-contiguous buffers to write into (a tuple when ``return_indices``).

    Returns
    -------
    y : ndarray, shape (N, C, Ho, Wo), dtype of ``x``
        Ho = floor((H + top + bottom - dilation (kernel - 1) - 1) / stride) + 1
        (ceil in ``ceil_mode``), likewise Wo.
    indices : ndarray of int64, shape (N, C, Ho, Wo)
        Only when ``return_indices``; input of ``max_pool2d_backward``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> y, idx = F.max_pool2d(x, 2, return_indices=True)
    >>> y[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    >>> idx[0, 0]                                        # flat index into each H*W plane
    array([[ 5,  7],
           [13, 15]])
    >>> F.max_pool2d_backward(np.ones_like(y), idx, x.shape)[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]], dtype=float32)
    """
    extra = (kernel_size, stride, padding, return_indices, dilation, ceil_mode)
    if out is None or return_indices is False or type(out) is tuple:
        result = _MAX_CALLS.run((x,), extra, out if return_indices is not False or out is None
                                else (out,))
        if result is not None:
            return result
    func = "max_pool2d"
    given = _repeat.plain(x) and type(return_indices) is bool
    x = _float_input(func, "x", x)
    kernel, stride, padding, dilation, out_shape, _ = _geometry(
        func, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    if return_indices and out is None:
        y, indices = np.empty(out_shape, x.dtype), np.empty(out_shape, _INT64)
    elif return_indices:
        y_out, indices_out = _validation.out_tuple(func, out, 2)
        y = _validation.out_array(func, "out[0]", y_out, out_shape, x.dtype, (x,))
        indices = _validation.out_array(func, "out[1]", indices_out, out_shape, _INT64, (x, y))
    else:
        y = _validation.out_array(func, "out", out, out_shape, x.dtype, (x,))
        indices = None
    _MAX_FORWARD[x.dtype](_validation.contiguous(x), y, indices, kernel, stride, padding, dilation)
    if given and x.shape[0] * x.shape[1]:
        outputs = ((1, out_shape, x.dtype, _repeat.ARRAY),)
        if return_indices:
            outputs += ((2, out_shape, _INT64, _repeat.ARRAY),)
        _repeat.remember(_MAX_CALLS, "max_pool2d", x.dtype, ((0, x),), outputs,
                         _step_sizes(x.shape, out_shape, kernel, stride, padding, 0, dilation),
                         extra=extra)
    return (y, indices) if return_indices else y


def max_pool2d_backward(gy: FloatArray, idx: IntArray, x_shape: tuple[int, ...], *,
                        out: FloatArray | None = None) -> FloatArray:
    """max_pool2d_backward(gy, idx, x_shape, *, out=None)

    Gradient of ``max_pool2d``: each output's gradient goes to the element
    its window picked; where windows overlap, gradients add up.

    Parameters
    ----------
    gy : ndarray of float32 or float64, shape (N, C, Ho, Wo)
        Gradient of the loss with respect to the pooled output.
    idx : ndarray of int, shape (N, C, Ho, Wo)
        Indices from ``max_pool2d(..., return_indices=True)``, flat in each
        H*W plane; every one must lie in [0, H*W).
    x_shape : tuple (N, C, H, W)
        Shape of the pooled input.
    out : ndarray, optional
        C-contiguous buffer of shape ``x_shape`` and the dtype of ``gy``.

    Returns
    -------
    gx : ndarray, shape ``x_shape``, dtype of ``gy``
    """
    result = _MAX_BACKWARD_CALLS.run((gy, idx), x_shape, None if out is None else (out,))
    if result is not None:
        return result
    func = "max_pool2d_backward"
    given = _repeat.plain(gy, idx) and type(x_shape) is tuple
    gy = _validation.float_array(func, "gy", gy, ndim=4, layout="(N, C, Ho, Wo)")
    if not isinstance(idx, np.ndarray) or idx.dtype.kind not in "iu":
        kind = idx.dtype if isinstance(idx, np.ndarray) else type(idx).__name__
        raise TypeError(f"{func}: idx must be an integer ndarray (int64 indices from "
                        f"max_pool2d), got {kind}")
    if idx.shape != gy.shape:
        raise ValueError(f"{func}: idx has shape {idx.shape} but gy has {gy.shape}; they must "
                         f"match")
    shape = _x_shape(func, x_shape, gy)
    plane_size = shape[2] * shape[3]
    if idx.dtype == _INT64:  # checked by the kernel, before it writes anything
        idx, bad = _validation.contiguous(idx), -1
    else:
        idx, bad = int64_within(idx, plane_size)
    if bad < 0:
        gx = _validation.out_array(func, "out", out, shape, gy.dtype, (gy, idx))
        bad = _MAX_BACKWARD[gy.dtype](_validation.contiguous(gy), idx, gx)
    if bad >= 0:
        where = np.unravel_index(bad, idx.shape)
        raise ValueError(f"{func}: idx{tuple(int(i) for i in where)} = {idx[where]} lies "
                         f"outside its plane [0, {plane_size}) of x_shape {shape}")
    if given and idx.dtype == _INT64 and shape[0] * shape[1]:
        # (The kernel sizes: planes, H, W, Ho, Wo; the window is not needed.)
        sizes = (shape[0] * shape[1], shape[2], shape[3], gy.shape[2], gy.shape[3],
                 0, 0, 0, 0, 0, 0, 1)
        _repeat.remember(_MAX_BACKWARD_CALLS, "max_pool2d_backward", gy.dtype,
                         ((0, gy), (1, idx)), ((2, shape, gy.dtype, _repeat.ARRAY),), sizes,
                         extra=x_shape)
    return gx


def avg_pool2d(x: FloatArray, kernel_size: IntPair, stride: IntPair | None = None,
               padding: Padding = 0, *, ceil_mode: bool = False, count_include_pad: bool = True,
               dilation: IntPair = 1, out: FloatArray | None = None) -> FloatArray:
    """avg_pool2d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False,
    count_include_pad=True, dilation=1, out=None)

    2-D average pooling over the planes of an NCHW batch: each window's sum
    divided by the number of its taps that fall inside the padded input
    (``count_include_pad``, PyTorch's default: kh * kw except for partial
    windows of ``ceil_mode``) or inside the input itself (ONNX's default).

    Parameters
    ----------
    x : ndarray of float32 or float64, shape (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int, (int, int) or ((top, bottom), (left, right)), default 0
        Zero padding; every window must still overlap the input.
    ceil_mode : bool, default False
        Round the output size up, as in ``max_pool2d``.
    count_include_pad : bool, default True
        Count the padding's taps in the divisor.
    dilation : int or (int, int), default 1
        Spacing of the window's taps.
    out : ndarray, optional
        C-contiguous buffer of shape (N, C, Ho, Wo) and the dtype of ``x``.

    Returns
    -------
    y : ndarray, shape (N, C, Ho, Wo), dtype of ``x``
        Ho and Wo as in ``max_pool2d``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    >>> F.avg_pool2d(x, 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    extra = (kernel_size, stride, padding, ceil_mode, count_include_pad, dilation)
    result = _AVG_CALLS.run((x,), extra, None if out is None else (out,))
    if result is not None:
        return result
    func = "avg_pool2d"
    given = _repeat.plain(x)
    x = _float_input(func, "x", x)
    geometry = _geometry(func, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    kernel, stride, padding, dilation, out_shape, _ = geometry
    divisors = None
    if count_include_pad is not True or ceil_mode:
        include_pad = _validation.boolean(func, "count_include_pad", count_include_pad)
        divisors = _divisors(geometry, x.shape, include_pad, x.dtype)
    y = _validation.out_array(func, "out", out, out_shape, x.dtype, (x,))
    _pool.avg_pool2d_forward(_validation.contiguous(x), y, divisors, kernel, stride, padding,
                             dilation)
    # (Divisors are no argument a remembered call can bind.)
    if given and divisors is None and x.shape[0] * x.shape[1]:
        _repeat.remember(_AVG_CALLS, "avg_pool2d", x.dtype, ((0, x),),
                         ((1, out_shape, x.dtype, _repeat.ARRAY),),
                         _step_sizes(x.shape, out_shape, kernel, stride, padding, 0, dilation),
                         extra=extra)
    return y


def avg_pool2d_backward(gy: FloatArray, x_shape: tuple[int, ...], kernel_size: IntPair,
                        stride: IntPair | None = None, padding: Padding = 0, *,
                        ceil_mode: bool = False, count_include_pad: bool = True,
                        dilation: IntPair = 1, out: FloatArray | None = None) -> FloatArray:
    """avg_pool2d_backward(gy, x_shape, kernel_size, stride=None, padding=0, *, ceil_mode=False,
    count_include_pad=True, dilation=1, out=None)

    Gradient of ``avg_pool2d``: each output's gradient is spread evenly,
    gy / divisor, over its window's taps; the share of padding is dropped
    and overlapping windows add up.

    Parameters
    ----------
    gy : ndarray of float32 or float64, shape (N, C, Ho, Wo)
        Gradient of the loss with respect to the pooled output; (Ho, Wo)
        must be the pooled size of ``x_shape``.
    x_shape : tuple (N, C, H, W)
        Shape of the pooled input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, dilation
        As given to ``avg_pool2d``.
    out : ndarray, optional
        C-contiguous buffer of shape ``x_shape`` and the dtype of ``gy``.

    Returns
    -------
    gx : ndarray, shape ``x_shape``, dtype of ``gy``
    """
    extra = (x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, dilation)
    result = _AVG_BACKWARD_CALLS.run((gy,), extra, None if out is None else (out,))
    if result is not None:
        return result
    func = "avg_pool2d_backward"
    given = _repeat.plain(gy) and type(x_shape) is tuple
    gy = _validation.float_array(func, "gy", gy, ndim=4, layout="(N, C, Ho, Wo)")
    shape = _x_shape(func, x_shape, gy)
    geometry = _geometry(func, shape, kernel_size, stride, padding, dilation, ceil_mode)
    kernel, stride, padding, dilation, out_shape, _ = geometry
    if gy.shape != out_shape:
        raise ValueError(f"{func}: gy must have shape {out_shape} (the pooled shape of x_shape "
                         f"{shape}), got {gy.shape}")
    divisors = None
    if count_include_pad is not True or ceil_mode:
        include_pad = _validation.boolean(func, "count_include_pad", count_include_pad)
        divisors = _divisors(geometry, shape, include_pad, gy.dtype)
    gx = _validation.out_array(func, "out", out, shape, gy.dtype, (gy,))
    _pool.avg_pool2d_backward(_validation.contiguous(gy), gx, divisors, kernel, stride, padding,
                              dilation)
    if given and divisors is None and shape[0] * shape[1]:
        _repeat.remember(_AVG_BACKWARD_CALLS, "avg_pool2d_backward", gy.dtype, ((0, gy),),
                         ((1, shape, gy.dtype, _repeat.ARRAY),),
                         _step_sizes(shape, out_shape, kernel, stride, padding, 0, dilation),
                         extra=extra)
    return gx

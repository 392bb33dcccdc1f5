"""Fully connected layers: validated wrappers of the ``_dense`` kernels.

``linear`` is y = x w^T + b on (N, I) batches with PyTorch's weight layout
(O, I); ``linear_backward`` its three gradients.  Each function checks its
arguments, allocates (or checks) its outputs and runs the compiled kernels
with the GIL released, on cnnext's own threads (never NumPy's BLAS pool).
The hot path, valid C-contiguous arrays, costs about two microseconds per
call, so that per-image training stays cheap.
"""

import numpy as np

from .. import _dispatch, _validation
from .._typing import FloatArray
from . import _repeat

_dense = _dispatch.load("_dense")


def _specialised(kernels):
    """dtype -> (forward, backward input, backward params) of one kernel module."""
    return _dispatch.specialisations(
        kernels, ("linear_forward", "linear_backward_input", "linear_backward_params"))


_KERNELS = _specialised(_dense)
# The repeat-call fast paths run the dispatched build's step kernels: they
# stand aside while a test swaps ``_KERNELS`` for another build's.
_DISPATCHED = _KERNELS
_LINEAR = _repeat.Calls()
_LINEAR_BACKWARD = _repeat.Calls()
# Below this many output elements no allocation can overflow: skip check_nbytes.
_SMALL = 2**31


def _arrays(func, x, w):
    """x (N, I) and w (O, I) as C-contiguous float arrays of one dtype, O and I >= 1
    (copies only when the layout needs one)."""
    if (type(x) is np.ndarray and type(w) is np.ndarray and x.ndim == 2 and w.ndim == 2
            and x.dtype in _validation.FLOAT_DTYPES and w.dtype == x.dtype
            and x.shape[1] == w.shape[1] and w.shape[0] and w.shape[1]
            and x.flags.c_contiguous and w.flags.c_contiguous):
        return x, w
    x = _validation.float_array(func, "x", x, 2, "(N, I)")
    w = _validation.float_array(func, "w", w, 2, "(O, I)")
    _validation.same_dtype(func, "x", x, w=w)
    if w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(f"{func}: w must have at least one row and one column (O, I), got "
                         f"shape {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{func}: x has {x.shape[1]} features (shape {x.shape}) but w takes "
                         f"{w.shape[1]} (shape {w.shape}); w must be (O, I) with "
                         f"I = x.shape[1]")
    return _validation.contiguous(x), _validation.contiguous(w)


def _vector(func, b, length, dtype):
    """The bias b as a C-contiguous 1-D float array of ``length`` entries and ``dtype``."""
    if (type(b) is np.ndarray and b.ndim == 1 and b.dtype == dtype and b.shape[0] == length
            and b.flags.c_contiguous):
        return b
    b = _validation.float_array(func, "b", b, 1, "(O,)")
    if b.dtype != dtype:
        raise TypeError(f"{func}: b has dtype {b.dtype} but w has {dtype}; they must match")
    if b.shape[0] != length:
        raise ValueError(f"{func}: b must have shape ({length},) (one value per row of w), "
                         f"got shape {b.shape}")
    return _validation.contiguous(b)


def _gradient(func, gy, x, w):
    """gy (N, O), checked against x (N, I) and w (O, I), C-contiguous."""
    shape = (x.shape[0], w.shape[0])
    if (type(gy) is np.ndarray and gy.dtype == x.dtype and gy.shape == shape
            and gy.flags.c_contiguous):
        return gy
    gy = _validation.float_array(func, "gy", gy, 2, "(N, O)")
    _validation.same_dtype(func, "x", x, gy=gy)
    if gy.shape != shape:
        raise ValueError(f"{func}: gy must have the shape of linear's output {shape} (N, O), "
                         f"got shape {gy.shape}")
    return _validation.contiguous(gy)


def linear(x: FloatArray, w: FloatArray, b: FloatArray | None = None, *,
           out: FloatArray | None = None) -> FloatArray:
    """linear(x, w, b=None, *, out=None)

    Fully connected layer: ``y = x @ w.T + b``, as
    ``torch.nn.functional.linear``.

    Parameters
    ----------
    x : ndarray of float32 or float64, shape (N, I)
        N examples of I features.  Any memory layout; never modified.
    w : ndarray, shape (O, I), same dtype as x
        Weights, one row per output; O, I >= 1.
    b : ndarray, shape (O,), same dtype as x, optional
        Bias added to each output.
    out : ndarray, shape (N, O), optional
        Writeable C-contiguous array of the dtype of x to store the result
        in; it must not overlap the inputs.

    Returns
    -------
    y : ndarray, shape (N, O)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.ones((2, 3), dtype=np.float32)
    >>> w = np.arange(6, dtype=np.float32).reshape(2, 3)  # (out_features, in_features)
    >>> F.linear(x, w, np.array([0.5, -0.5], dtype=np.float32))
    array([[ 3.5, 11.5],
           [ 3.5, 11.5]], dtype=float32)
    """
    if _KERNELS is _DISPATCHED:
        y = _LINEAR.run((x, w, b), None, None if out is None else (out,))
        if y is not None:
            return y
    func = "linear"
    given = _repeat.plain(x, w, b) and _KERNELS is _DISPATCHED
    x, w = _arrays(func, x, w)
    if b is not None:
        b = _vector(func, b, w.shape[0], x.dtype)
    shape = (x.shape[0], w.shape[0])
    if shape[0] * shape[1] >= _SMALL:
        _validation.check_nbytes(func, "the output", shape, x.dtype)
    y = np.empty(shape, x.dtype) if out is None else _validation.out_array(
        func, "out", out, shape, x.dtype, (x, w, b))
    if shape[0]:
        _KERNELS[x.dtype][0](x, w, b, y)
        if given:
            _repeat.remember(_LINEAR, "linear", x.dtype, ((0, x), (1, w), _repeat.slot(2, b)),
                             ((3, shape, x.dtype, _repeat.ARRAY),), (*x.shape, w.shape[0]))
    return y


def linear_backward(gy: FloatArray, x: FloatArray, w: FloatArray, need_input_grad: bool = True,
                    *, out: tuple[FloatArray | None, FloatArray, FloatArray] | None = None,
                    ) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """linear_backward(gy, x, w, need_input_grad=True, *, out=None)

    Gradients of ``sum(gy * linear(x, w, b))``.

    Parameters
    ----------
    gy : ndarray of float32 or float64, shape (N, O)
        Gradient of the loss with respect to the output of linear.
    x : ndarray, shape (N, I), same dtype as gy
        The input linear saw.
    w : ndarray, shape (O, I), same dtype as gy
        The weights linear used.
    need_input_grad : bool
        False skips the input gradient (for a first layer) and returns None
        in its place.
    out : tuple (gx, gw, gb), optional
        Buffers for the results (writeable, C-contiguous, of the right shape
        and dtype, not overlapping the inputs or each other); None entries
        are allocated.  ``gx`` must be None when need_input_grad is False.

    Returns
    -------
    gx : ndarray, shape (N, I), or None
        ``gy @ w``.
    gw : ndarray, shape (O, I)
        ``gy.T @ x``, summed over the batch.
    gb : ndarray, shape (O,)
        Gradient with respect to the bias: gy summed over N.
    """
    if (out is None or type(out) is tuple) and _KERNELS is _DISPATCHED:
        result = _LINEAR_BACKWARD.run((gy, x, w), need_input_grad, out)
        if result is not None:
            return result
    func = "linear_backward"
    given = _repeat.plain(gy, x, w) and _KERNELS is _DISPATCHED
    x, w = _arrays(func, x, w)
    gy = _gradient(func, gy, x, w)
    need_input_grad = _validation.boolean(func, "need_input_grad", need_input_grad)
    gx, gw, gb = _validation.gradient_out_buffers(func, out, need_input_grad, gy, x, w)
    if x.shape[0] == 0:
        gw.fill(0)
        gb.fill(0)
        return gx, gw, gb
    _, backward_input, backward_params = _KERNELS[x.dtype]
    if need_input_grad:
        backward_input(gy, w, gx)
    backward_params(gy, x, 1, False, gw, gb)
    if given:
        gx_out = (3, x.shape, x.dtype, _repeat.ARRAY) if need_input_grad else _repeat.NONE
        _repeat.remember(_LINEAR_BACKWARD, "linear_backward", x.dtype, ((0, gy), (1, x), (2, w)),
                         (gx_out, (4, w.shape, x.dtype, _repeat.ARRAY),
                          (5, (w.shape[0],), x.dtype, _repeat.ARRAY)),
                         (*x.shape, w.shape[0], 0), (1.0,), extra=need_input_grad)
    return gx, gw, gb

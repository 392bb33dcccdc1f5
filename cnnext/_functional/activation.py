"""ReLU and its gradient: validated wrappers of the ``_activation`` kernels.

Both accept float arrays of any shape and layout; the kernels see flat
C-contiguous views.  The hot path (a C-contiguous ndarray) costs about a
microsecond.
"""

import numpy as np

from .. import _dispatch, _validation
from .._kernels import _activation
from .._typing import FloatArray
from . import _repeat

# dtype -> the kernels' compiled specialisations (skipping the fused-type dispatch).
_RELU = _dispatch.by_dtype(_activation.relu)
_RELU_BACKWARD = _dispatch.by_dtype(_activation.relu_backward)
_RELU_CALLS = _repeat.Calls()
_RELU_BACKWARD_CALLS = _repeat.Calls()


def _flat(array):
    """A flat C-contiguous view of ``array`` (a copy only when not contiguous)."""
    return _validation.contiguous(array).reshape(-1)


def relu(x: FloatArray, *, inplace: bool = False, out: FloatArray | None = None) -> FloatArray:
    """relu(x, *, inplace=False, out=None)

    Rectified linear unit, max(x, 0) elementwise; NaN stays NaN.

    Parameters
    ----------
    x : ndarray of float32 or float64, any shape
    inplace : bool, default False
        Overwrite ``x`` with the result and return it (``x`` must be a
        writeable ndarray).  Otherwise ``x`` is never modified.
    out : ndarray, optional
        C-contiguous buffer of the shape and dtype of ``x``; not with
        ``inplace``.

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
        ``x`` itself when ``inplace``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
    >>> F.relu(x)
    array([0., 0., 2.], dtype=float32)
    >>> F.relu_backward(np.ones_like(x), x)
    array([0., 0., 1.], dtype=float32)
    """
    if not inplace:
        y = _RELU_CALLS.run((x,), None, None if out is None else (out,))
        if y is not None:
            return y
    func = "relu"
    if inplace and not isinstance(x, np.ndarray):
        raise TypeError(f"{func}: inplace=True needs x to be a numpy.ndarray, got "
                        f"{type(x).__name__}")
    given = x
    x = _validation.float_array(func, "x", x)
    if inplace:
        if out is not None:
            raise ValueError(f"{func}: give either inplace=True or out, not both")
        if not x.flags.writeable:
            raise ValueError(f"{func}: x is read-only, so it cannot be modified in place")
        if x.flags.c_contiguous:
            flat = x.reshape(-1)
            _RELU[flat.dtype](flat, flat)
        else:
            result = relu(x)
            x[...] = result
        return given  # the caller's object even when x is a view of a subclass
    y = np.empty(x.shape, x.dtype) if out is None else _validation.out_array(
        func, "out", out, x.shape, x.dtype, (x,))
    _RELU[x.dtype](_flat(x), y.reshape(-1))
    if _repeat.plain(given) and x.size:
        _repeat.remember(_RELU_CALLS, "relu", x.dtype, ((0, x),),
                         ((1, x.shape, x.dtype, _repeat.ARRAY),), (x.size,))
    return y


def relu_backward(gy: FloatArray, x: FloatArray, *,
                  out: FloatArray | None = None) -> FloatArray:
    """relu_backward(gy, x, *, out=None)

    Gradient of ``relu``: ``gy`` where ``x > 0`` or ``x`` is NaN (relu passes
    NaN through, and so does its gradient, as in PyTorch), else 0.  Neither
    input is modified.

    Parameters
    ----------
    gy : ndarray of float32 or float64
        Gradient of the loss with respect to ``relu(x)``.
    x : ndarray, shape and dtype of ``gy``
        The input of ``relu``.
    out : ndarray, optional
        C-contiguous buffer of the shape and dtype of ``gy``.

    Returns
    -------
    gx : ndarray, shape and dtype of ``gy``
    """
    gx = _RELU_BACKWARD_CALLS.run((gy, x), None, None if out is None else (out,))
    if gx is not None:
        return gx
    func = "relu_backward"
    given = _repeat.plain(gy, x)
    gy = _validation.float_array(func, "gy", gy)
    x = _validation.float_array(func, "x", x)
    if gy.shape != x.shape:
        raise ValueError(f"{func}: gy has shape {gy.shape} but x has {x.shape}; they must "
                         f"match")
    _validation.same_dtype(func, "gy", gy, x=x)
    gx = np.empty(gy.shape, gy.dtype) if out is None else _validation.out_array(
        func, "out", out, gy.shape, gy.dtype, (gy, x))
    _RELU_BACKWARD[gy.dtype](_flat(gy), _flat(x), gx.reshape(-1))
    if given and gy.size:
        _repeat.remember(_RELU_BACKWARD_CALLS, "relu_backward", gy.dtype, ((0, gy), (1, x)),
                         ((2, gy.shape, gy.dtype, _repeat.ARRAY),), (gy.size,))
    return gx

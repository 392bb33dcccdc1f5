"""Softmax and softmax cross-entropy: validated wrappers of the ``_loss`` kernels."""

import math

import numpy as np

from .. import _dispatch, _validation
from .._kernels import _loss
from .._typing import ArrayLike, FloatArray
from . import _repeat
from .pooling import int64_within

_INT64 = np.dtype(np.int64)
# dtype -> the kernels' compiled specialisations (skipping the fused-type dispatch).
_SOFTMAX = _dispatch.by_dtype(_loss.softmax)
_CROSS_ENTROPY = _dispatch.by_dtype(_loss.softmax_cross_entropy)
_SOFTMAX_CALLS = _repeat.Calls()
_CROSS_ENTROPY_CALLS = _repeat.Calls()


def softmax(x: FloatArray, axis: int = -1) -> FloatArray:
    """softmax(x, axis=-1)

    exp(x) / sum(exp(x)) along ``axis``, computed as exp(x - max) / sum so
    that no value overflows.

    Parameters
    ----------
    x : ndarray of float32 or float64, at least 1-D
    axis : int, default -1

    Returns
    -------
    p : ndarray, shape and dtype of ``x``
        Non-negative, summing to 1 along ``axis`` (NaN where a slice holds
        NaN or +inf); empty when ``x`` is empty along any axis, as in PyTorch.
    """
    result = _SOFTMAX_CALLS.run((x,), axis)
    if result is not None:
        return result
    func = "softmax"
    given = _repeat.plain(x)
    x = _validation.float_array(func, "x", x)
    if x.ndim == 0:
        raise ValueError(f"{func}: x must be at least 1-D, got a scalar")
    axis = _validation.to_int(func, "axis", axis)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{func}: axis {axis} is out of range for x of shape {x.shape}")
    if axis % x.ndim != x.ndim - 1:
        return np.moveaxis(softmax(np.moveaxis(x, axis, -1)), -1, axis)
    rows = _validation.contiguous(x).reshape(
        math.prod(x.shape[:-1]), x.shape[-1])
    out = np.empty(rows.shape, x.dtype)
    if out.size:
        _SOFTMAX[x.dtype](rows, out)
        if given:
            _repeat.remember(_SOFTMAX_CALLS, "softmax", x.dtype, ((0, x),),
                             ((1, x.shape, x.dtype, _repeat.ARRAY),), rows.shape, extra=axis)
    return out.reshape(x.shape)


def softmax_cross_entropy(logits: FloatArray, labels: ArrayLike) -> tuple[float, FloatArray]:
    """softmax_cross_entropy(logits, labels)

    Mean cross-entropy of softmax(logits) against integer class labels,
    and its gradient, computed with log-sum-exp so that logits of any
    magnitude give a finite loss.

    Parameters
    ----------
    logits : ndarray of float32 or float64, shape (N, K)
        Unnormalised class scores, N >= 1 rows, K >= 1 classes.
    labels : array of int, shape (N,)
        Class of each row, in [0, K); any integer dtype.

    Returns
    -------
    loss : float
        mean over rows of -log softmax(logits[i])[labels[i]].
    grad_logits : ndarray, shape (N, K), dtype of ``logits``
        Gradient of ``loss``: (softmax(logits) - onehot(labels)) / N.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> logits = np.zeros((2, 4))
    >>> loss, glogits = F.softmax_cross_entropy(logits, np.array([0, 3]))
    >>> round(float(loss), 6)                            # log(4): uniform over 4 classes
    1.386294
    >>> glogits[0]                                       # (softmax - one-hot) / N
    array([-0.375,  0.125,  0.125,  0.125])
    """
    result = _CROSS_ENTROPY_CALLS.run((logits, labels))
    if result is not None:
        return result
    func = "softmax_cross_entropy"
    given = _repeat.plain(logits, labels)
    logits = _validation.float_array(func, "logits", logits, 2, "(N, K)")
    rows, classes = logits.shape
    if rows == 0 or classes == 0:
        raise ValueError(f"{func}: logits must have at least one row and one class, got shape "
                         f"{logits.shape}")
    if type(labels) is not np.ndarray:
        labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{func}: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (rows,):
        raise ValueError(f"{func}: labels must have shape ({rows},), one per row of logits, "
                         f"got {labels.shape}")
    if labels.dtype == _INT64:  # checked by the kernel, in the pass that reads them
        labels, bad = _validation.contiguous(labels), -1
    else:
        labels, bad = int64_within(labels, classes)
    if bad < 0:
        grad = np.empty((rows, classes), logits.dtype)
        loss, bad = _CROSS_ENTROPY[logits.dtype](_validation.contiguous(logits), labels, grad)
    if bad >= 0:
        raise ValueError(f"{func}: labels[{bad}] = {labels[bad]} is outside [0, {classes}), "
                         f"the classes of logits {logits.shape}")
    if given and labels.dtype == _INT64:
        _repeat.remember(_CROSS_ENTROPY_CALLS, "softmax_cross_entropy", logits.dtype,
                         ((0, logits), (1, labels)),
                         ((3, (), np.float64, _repeat.SCALAR),
                          (2, logits.shape, logits.dtype, _repeat.ARRAY)), logits.shape,
                         workspace=(rows, np.float64), work_slot=4)
    return loss, grad

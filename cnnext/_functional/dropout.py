"""Inverted dropout: a validated wrapper of the ``_activation.dropout`` kernel.

Whether an element is kept is a hash of (key, its flat index), so one key
always gives the same mask: the backward pass is the same call on the
gradient, and nothing is stored between the two.
"""

import math

import numpy as np

from .. import _dispatch, _validation
from .._kernels import _activation

_DROPOUT = _dispatch.by_dtype(_activation.dropout)
_KEY_LIMIT = 2**64


def _probability(func, p):
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer,
                                                             np.floating)):
        raise TypeError(f"{func}: p must be a number, got {p!r}")
    p = float(p)
    if not (math.isfinite(p) and 0 <= p <= 1):
        raise ValueError(f"{func}: p must be a probability in [0, 1], got {p!r}")
    return p


def _key(func, key):
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
        raise TypeError(f"{func}: key must be an int in [0, 2**64), got {key!r}")
    key = int(key)
    if not 0 <= key < _KEY_LIMIT:
        raise ValueError(f"{func}: key must be an int in [0, 2**64), got {key}")
    return key


def dropout_parameters(func, p, key):
    """(key, threshold, scale) for the kernel: an element is dropped when its 32-bit
    hash is below threshold = round(p * 2**32); kept ones are scaled by 1 / (1 - p)."""
    p = _probability(func, p)
    key = _key(func, key)
    threshold = min(round(p * 2**32), 2**32)
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    return key, threshold, scale


def dropout(x, p=0.5, key=0, *, out=None):
    """dropout(x, p=0.5, key=0, *, out=None)

    Inverted dropout: each element is zeroed with probability ``p`` and the
    others are scaled by 1 / (1 - p), so the expected value is unchanged
    (zeroing multiplies by 0, so NaN stays NaN, as in PyTorch).  Which
    elements are dropped is a function of ``key`` and the element's flat
    index alone, whatever the thread count.

    Parameters
    ----------
    x : ndarray of float32 or float64, any shape
    p : float in [0, 1]
    key : int in [0, 2**64)
        The same key gives the same mask (for the same size).
    out : ndarray, optional
        C-contiguous buffer of the shape and dtype of ``x``.

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    """
    func = "dropout"
    key, threshold, scale = dropout_parameters(func, p, key)
    x = _validation.float_array(func, "x", x)
    y = np.empty(x.shape, x.dtype) if out is None else _validation.out_array(
        func, "out", out, x.shape, x.dtype, (x,))
    _DROPOUT[x.dtype](_validation.contiguous(x).reshape(-1), y.reshape(-1), key, threshold, scale)
    return y


def dropout_backward(gy, p=0.5, key=0, *, out=None):
    """dropout_backward(gy, p=0.5, key=0, *, out=None)

    Gradient of ``dropout`` with the same ``p`` and ``key``: gy scaled and
    zeroed where the forward's output was.

    Parameters
    ----------
    gy : ndarray of float32 or float64, the shape of the forward's input
    p : float in [0, 1]
    key : int in [0, 2**64)
    out : ndarray, optional

    Returns
    -------
    gx : ndarray, shape and dtype of ``gy``
    """
    func = "dropout_backward"
    key, threshold, scale = dropout_parameters(func, p, key)
    gy = _validation.float_array(func, "gy", gy)
    gx = np.empty(gy.shape, gy.dtype) if out is None else _validation.out_array(
        func, "out", out, gy.shape, gy.dtype, (gy,))
    _DROPOUT[gy.dtype](_validation.contiguous(gy).reshape(-1), gx.reshape(-1), key, threshold,
                       scale)
    return gx

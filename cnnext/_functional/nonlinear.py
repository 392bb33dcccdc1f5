"""LeakyReLU, sigmoid and tanh with their gradients: validated wrappers of the
``_activation`` kernels.

Each accepts float arrays of any shape and layout and returns a fresh array
(or writes ``out=``); the kernels see flat C-contiguous views.  The
gradients of sigmoid and tanh are computed from the forward's output, as
PyTorch's are.
"""

import math

import numpy as np

from .. import _dispatch, _validation
from .._kernels import _activation

_LEAKY = _dispatch.by_dtype(_activation.leaky_relu)
_LEAKY_BACKWARD = _dispatch.by_dtype(_activation.leaky_relu_backward)
_SIGMOID = _dispatch.by_dtype(_activation.sigmoid)
_SIGMOID_BACKWARD = _dispatch.by_dtype(_activation.sigmoid_backward)
_TANH = _dispatch.by_dtype(_activation.tanh_forward)
_TANH_BACKWARD = _dispatch.by_dtype(_activation.tanh_backward)


def _flat(array):
    return _validation.contiguous(array).reshape(-1)


def negative_slope_value(func, value):
    """``negative_slope`` as a finite float (any sign, as PyTorch takes it)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{func}: negative_slope must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{func}: negative_slope must be finite, got {value!r}")
    return value


def _unary(func, kernel, x, out):
    x = _validation.float_array(func, "x", x)
    y = np.empty(x.shape, x.dtype) if out is None else _validation.out_array(
        func, "out", out, x.shape, x.dtype, (x,))
    kernel[x.dtype](_flat(x), y.reshape(-1))
    return y


def _binary(func, kernel, gy, other_name, other, out, *extra):
    gy = _validation.float_array(func, "gy", gy)
    other = _validation.float_array(func, other_name, other)
    if gy.shape != other.shape:
        raise ValueError(f"{func}: gy has shape {gy.shape} but {other_name} has "
                         f"{other.shape}; they must match")
    _validation.same_dtype(func, "gy", gy, **{other_name: other})
    gx = np.empty(gy.shape, gy.dtype) if out is None else _validation.out_array(
        func, "out", out, gy.shape, gy.dtype, (gy, other))
    kernel[gy.dtype](_flat(gy), _flat(other), gx.reshape(-1), *extra)
    return gx


def leaky_relu(x, negative_slope=0.01, *, out=None):
    """leaky_relu(x, negative_slope=0.01, *, out=None)

    x where x > 0, else x * negative_slope, elementwise; NaN stays NaN.

    Parameters
    ----------
    x : ndarray of float32 or float64, any shape
    negative_slope : float
    out : ndarray, optional
        C-contiguous buffer of the shape and dtype of ``x``.

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    """
    func = "leaky_relu"
    slope = negative_slope_value(func, negative_slope)
    x = _validation.float_array(func, "x", x)
    y = np.empty(x.shape, x.dtype) if out is None else _validation.out_array(
        func, "out", out, x.shape, x.dtype, (x,))
    _LEAKY[x.dtype](_flat(x), y.reshape(-1), slope)
    return y


def leaky_relu_backward(gy, x, negative_slope=0.01, *, out=None):
    """leaky_relu_backward(gy, x, negative_slope=0.01, *, out=None)

    Gradient of ``leaky_relu``: gy where x > 0, else gy * negative_slope
    (NaN x included, as in PyTorch).

    Parameters
    ----------
    gy : ndarray of float32 or float64
    x : ndarray, shape and dtype of ``gy``
        The input of ``leaky_relu``.
    negative_slope : float
    out : ndarray, optional

    Returns
    -------
    gx : ndarray, shape and dtype of ``gy``
    """
    func = "leaky_relu_backward"
    slope = negative_slope_value(func, negative_slope)
    return _binary(func, _LEAKY_BACKWARD, gy, "x", x, out, slope)


def sigmoid(x, *, out=None):
    """sigmoid(x, *, out=None)

    1 / (1 + exp(-x)) elementwise (computed in float64, rounded once).

    Parameters
    ----------
    x : ndarray of float32 or float64, any shape
    out : ndarray, optional

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    """
    return _unary("sigmoid", _SIGMOID, x, out)


def sigmoid_backward(gy, y, *, out=None):
    """sigmoid_backward(gy, y, *, out=None)

    Gradient of ``sigmoid`` from its output ``y``: gy * (1 - y) * y.

    Parameters
    ----------
    gy : ndarray of float32 or float64
    y : ndarray, shape and dtype of ``gy``
        The output of ``sigmoid``.
    out : ndarray, optional

    Returns
    -------
    gx : ndarray, shape and dtype of ``gy``
    """
    return _binary("sigmoid_backward", _SIGMOID_BACKWARD, gy, "y", y, out)


def tanh(x, *, out=None):
    """tanh(x, *, out=None)

    Hyperbolic tangent elementwise (computed in float64, rounded once).

    Parameters
    ----------
    x : ndarray of float32 or float64, any shape
    out : ndarray, optional

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    """
    return _unary("tanh", _TANH, x, out)


def tanh_backward(gy, y, *, out=None):
    """tanh_backward(gy, y, *, out=None)

    Gradient of ``tanh`` from its output ``y``: gy * (1 - y * y).

    Parameters
    ----------
    gy : ndarray of float32 or float64
    y : ndarray, shape and dtype of ``gy``
        The output of ``tanh``.
    out : ndarray, optional

    Returns
    -------
    gx : ndarray, shape and dtype of ``gy``
    """
    return _binary("tanh_backward", _TANH_BACKWARD, gy, "y", y, out)

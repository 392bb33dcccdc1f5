"""Batch normalisation: validated wrappers of the ``_norm`` kernels.

Each function checks its arguments, allocates (or checks) its outputs and a
scratch array, and runs the compiled kernel with the GIL released on
(N, C, H*W) views.  The per-channel mean and inverse standard deviation the
forward pass used are float64 (C,) arrays, handed to the backward pass as
PyTorch's ``save_mean`` / ``save_invstd`` are.
"""

import math

import numpy as np

from .. import _dispatch, _validation

_norm = _dispatch.load("_norm")

_FORWARD = _dispatch.by_dtype(_norm.batch_norm_forward)
_BACKWARD = _dispatch.by_dtype(_norm.batch_norm_backward)
_FLOAT64 = np.dtype(np.float64)


def _input(func, name, value):
    """A 4-D float ndarray with non-empty (H, W) planes."""
    if not (type(value) is np.ndarray and value.ndim == 4
            and value.dtype in _validation.FLOAT_DTYPES):
        value = _validation.float_array(func, name, value, ndim=4, layout="(N, C, H, W)")
    if value.shape[2] == 0 or value.shape[3] == 0:
        raise ValueError(f"{func}: {name} must have non-empty (H, W) planes, got shape "
                         f"{value.shape}")
    return value


def _channel_vector(func, name, value, channels, dtype, writeable=False):
    """None, or a (channels,) array of ``dtype`` (C-contiguous and writeable when it is
    updated in place)."""
    if value is None:
        return None
    if writeable and (not isinstance(value, np.ndarray) or isinstance(value, np.matrix)):
        raise TypeError(f"{func}: {name} must be a numpy.ndarray (it is updated in "
                        f"place), got {type(value).__name__}")
    value = _validation.float_array(func, name, value)
    if value.shape != (channels,):
        raise ValueError(f"{func}: {name} must have shape ({channels},), one entry per "
                         f"channel, got {value.shape}")
    if value.dtype != dtype:
        raise TypeError(f"{func}: {name} has dtype {value.dtype} but x has {dtype}; they "
                        f"must match")
    if writeable:
        if not value.flags.c_contiguous:
            raise ValueError(f"{func}: {name} must be C-contiguous (it is updated in place)")
        if not value.flags.writeable:
            raise ValueError(f"{func}: {name} is read-only, but training updates it in place")
    return _validation.contiguous(value)


def _number(func, name, value, low, high=math.inf, low_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{func}: {name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and (value > low if low_open else value >= low)
            and value <= high):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ValueError(f"{func}: {name} must be a finite number in {bound}, got {value!r}")
    return value


def _boolean(func, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be True or False, got {value!r}")
    return bool(value)


def _no_overlap(func, name, array, inputs):
    for other in inputs:
        if other is not None and _validation.overlap(array, other):
            raise ValueError(f"{func}: {name} overlaps another array argument")


def batch_norm2d(x, running_mean=None, running_var=None, weight=None, bias=None,
                 training=False, momentum=0.1, eps=1e-5, *, out=None, return_stats=False):
    """batch_norm2d(x, running_mean=None, running_var=None, weight=None, bias=None,
    training=False, momentum=0.1, eps=1e-5, *, out=None, return_stats=False)

    Batch normalisation of an NCHW batch, per channel, as
    ``torch.nn.functional.batch_norm``::

        y = (x - mean) / sqrt(var + eps) * weight + bias

    With ``training=True`` mean and var are the batch's (biased variance
    over N, H and W), and ``running_mean`` / ``running_var``, when given,
    are updated in place: ``r = (1 - momentum) * r + momentum * s`` with
    the unbiased variance.  Otherwise the running statistics are used.

    Parameters
    ----------
    x : ndarray of float32 or float64, shape (N, C, H, W)
        With ``training``, N * H * W >= 2.
    running_mean, running_var : ndarray, shape (C,), dtype of ``x``, optional
        Both or neither; needed when not training.  Updated in place when
        training, so writeable C-contiguous ndarrays then.
    weight, bias : ndarray, shape (C,), dtype of ``x``, optional
        The affine transform (ones and zeros when None).
    training : bool
    momentum : float in [0, 1]
    eps : float > 0
    out : ndarray, optional
        C-contiguous buffer of the shape and dtype of ``x``.
    return_stats : bool
        Also return the mean and 1 / sqrt(var + eps) used, for
        ``batch_norm2d_backward``.

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    mean, invstd : ndarray of float64, shape (C,)
        Only with ``return_stats``.
    """
    func = "batch_norm2d"
    x = _input(func, "x", x)
    n, c, height, width = x.shape
    training = _boolean(func, "training", training)
    return_stats = _boolean(func, "return_stats", return_stats)
    momentum = _number(func, "momentum", momentum, 0.0, 1.0)
    eps = _number(func, "eps", eps, 0.0, low_open=True)
    running_mean = _channel_vector(func, "running_mean", running_mean, c, x.dtype, training)
    running_var = _channel_vector(func, "running_var", running_var, c, x.dtype, training)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{func}: give both running_mean and running_var, or neither")
    if training:
        if n * height * width < 2:
            raise ValueError(f"{func}: training needs more than one value per channel, got x "
                             f"of shape {x.shape}")
        if running_mean is not None:
            if _validation.overlap(running_mean, running_var):
                raise ValueError(f"{func}: running_mean and running_var overlap")
            _no_overlap(func, "running_mean", running_mean, (x, weight, bias))
            _no_overlap(func, "running_var", running_var, (x, weight, bias))
    elif running_mean is None:
        raise ValueError(f"{func}: running_mean and running_var are needed when training is "
                         f"False (evaluation uses them)")
    elif not (running_mean.flags.writeable and running_var.flags.writeable):
        # Only read in evaluation, but the kernel takes them as updatable.
        running_mean, running_var = running_mean.copy(), running_var.copy()
    weight = _channel_vector(func, "weight", weight, c, x.dtype)
    bias = _channel_vector(func, "bias", bias, c, x.dtype)
    y = _validation.out_array(func, "out", out, x.shape, x.dtype,
                          (x, running_mean, running_var, weight, bias))
    mean = np.empty(c, _FLOAT64)
    invstd = np.empty(c, _FLOAT64)
    scratch = np.empty(2 * n * c + 4 * c, _FLOAT64)
    _FORWARD[x.dtype](_validation.contiguous(x).reshape(n, c, height * width), weight, bias,
                      running_mean, running_var, y.reshape(n, c, height * width), mean, invstd,
                      scratch, training, eps, momentum)
    return (y, mean, invstd) if return_stats else y


def batch_norm2d_backward(gy, x, mean, invstd, weight=None, training=True, *,
                          need_input_grad=True, out=None):
    """batch_norm2d_backward(gy, x, mean, invstd, weight=None, training=True, *,
    need_input_grad=True, out=None)

    Gradients of ``batch_norm2d`` with respect to x, weight and bias, given
    ``gy`` and the statistics the forward pass returned.

    Parameters
    ----------
    gy : ndarray of float32 or float64, shape (N, C, H, W)
        Gradient of the loss with respect to the output.
    x : ndarray, shape and dtype of ``gy``
        The forward pass's input.
    mean, invstd : ndarray of float, shape (C,)
        From ``batch_norm2d(..., return_stats=True)``.
    weight : ndarray, shape (C,), dtype of ``gy``, optional
        The forward's weight (ones when None).
    training : bool
        Whether the forward normalised with the batch's statistics (then
        they depend on x, and so does gx through them) or with fixed ones.
    need_input_grad : bool
        Compute gx (else it is None).
    out : tuple (gx, gweight, gbias), optional
        C-contiguous buffers (None entries allocated).

    Returns
    -------
    gx : ndarray, shape of ``x``, or None
    gweight, gbias : ndarray, shape (C,)
        ``sum(gy * (x - mean) * invstd)`` and ``sum(gy)`` over N, H, W.
    """
    func = "batch_norm2d_backward"
    gy = _input(func, "gy", gy)
    x = _input(func, "x", x)
    if gy.shape != x.shape:
        raise ValueError(f"{func}: gy has shape {gy.shape} but x has {x.shape}; they must "
                         f"match")
    _validation.same_dtype(func, "gy", gy, x=x)
    n, c, height, width = x.shape
    training = _boolean(func, "training", training)
    need_input_grad = _boolean(func, "need_input_grad", need_input_grad)
    stats = []
    for name, value in (("mean", mean), ("invstd", invstd)):
        value = _validation.float_array(func, name, value)
        if value.shape != (c,):
            raise ValueError(f"{func}: {name} must have shape ({c},), one entry per channel, "
                             f"got {value.shape}")
        stats.append(value)
    # The forward gives invstd = 1 / sqrt(var + eps) > 0, or NaN for a channel holding
    # NaN or inf: never inf, and never negative.
    if np.any(stats[1] <= 0) or np.isinf(stats[1]).any():
        raise ValueError(f"{func}: invstd must hold 1 / sqrt(var + eps) per channel (positive "
                         f"and finite, or NaN), got {stats[1]!r}")
    weight = _channel_vector(func, "weight", weight, c, x.dtype)
    # The (C,) shape gweight and gbias take, from weight or a stand-in for it.
    gx, gweight, gbias = _validation.gradient_out_buffers(
        func, out, need_input_grad, gy, x, weight if weight is not None else np.empty(c, x.dtype))
    if out is not None:
        for index, buffer in enumerate((gx, gweight, gbias)):
            if buffer is not None and any(_validation.overlap(buffer, s) for s in stats):
                raise ValueError(f"{func}: out[{index}] overlaps an input array (mean or "
                                 f"invstd)")
    stats = [np.ascontiguousarray(value, dtype=_FLOAT64) for value in stats]
    scratch = np.empty(2 * n * c + 4 * c, _FLOAT64)
    plane = height * width
    _BACKWARD[x.dtype](_validation.contiguous(gy).reshape(n, c, plane),
                       _validation.contiguous(x).reshape(n, c, plane), stats[0], stats[1], weight,
                       None if gx is None else gx.reshape(n, c, plane), gweight, gbias, scratch,
                       training)
    return gx, gweight, gbias


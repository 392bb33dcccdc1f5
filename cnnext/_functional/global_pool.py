"""Global average pooling: validated wrappers of the ``_pool`` family's kernels."""


from .. import _dispatch, _validation
from .pooling import _float_input, _x_shape

_pool = _dispatch.load("_pool")

_FORWARD = _dispatch.by_dtype(_pool.global_avg_pool2d_forward)
_BACKWARD = _dispatch.by_dtype(_pool.global_avg_pool2d_backward)


def global_avg_pool2d(x, *, out=None):
    """global_avg_pool2d(x, *, out=None)

    The mean of every (H, W) plane of an NCHW batch: (N, C, H, W) -> (N, C),
    summed in double precision in a fixed order.

    Parameters
    ----------
    x : ndarray of float32 or float64, shape (N, C, H, W), H * W >= 1
    out : ndarray, optional
        C-contiguous buffer of shape (N, C) and the dtype of ``x``.

    Returns
    -------
    y : ndarray, shape (N, C), dtype of ``x``
    """
    func = "global_avg_pool2d"
    x = _float_input(func, "x", x)
    n, c, height, width = x.shape
    y = _validation.out_array(func, "out", out, (n, c), x.dtype, (x,))
    _FORWARD[x.dtype](_validation.contiguous(x).reshape(n * c, height * width), y.reshape(-1))
    return y


def global_avg_pool2d_backward(gy, x_shape, *, out=None):
    """global_avg_pool2d_backward(gy, x_shape, *, out=None)

    Gradient of ``global_avg_pool2d``: gy[n, c] / (H * W) over every element
    of plane (n, c).

    Parameters
    ----------
    gy : ndarray of float32 or float64, shape (N, C)
    x_shape : tuple (N, C, H, W)
        Shape of the pooled input.
    out : ndarray, optional
        C-contiguous buffer of shape ``x_shape`` and the dtype of ``gy``.

    Returns
    -------
    gx : ndarray, shape ``x_shape``, dtype of ``gy``
    """
    func = "global_avg_pool2d_backward"
    gy = _validation.float_array(func, "gy", gy, ndim=2, layout="(N, C)")
    shape = _x_shape(func, x_shape, gy)
    gx = _validation.out_array(func, "out", out, shape, gy.dtype, (gy,))
    n, c, height, width = shape
    _BACKWARD[gy.dtype](_validation.contiguous(gy).reshape(-1),
                        gx.reshape(n * c, height * width))
    return gx

"""The NumPy baseline: what a careful NumPy programmer writes without a compiler.

Convolution is im2col + one GEMM through NumPy's BLAS (the classic Caffe
formulation): the input patches are copied into a (C*R*S, N*Ho*Wo) matrix so
the whole batch is one matrix product, and the input gradient is that
product's transpose scattered back with col2im.  Pooling loops over the few
kernel offsets and is vectorised over everything else.  Every function has
the signature of its namesake in ``cnnext.functional`` and keeps the input
dtype (float32 stays float32), so it can be timed side by side with cnnext
and driven by ``nets.sgd_step``.  No argument checking: the benchmark passes
valid arguments.
"""

import numpy as np

from .._reference import output_size, pair


def _geometry(x_shape, kernel, stride, padding, dilation=(1, 1)):
    return (output_size(x_shape[2], kernel[0], stride[0], padding[0], dilation[0]),
            output_size(x_shape[3], kernel[1], stride[1], padding[1], dilation[1]))


def _pad(x, padding, value=0):
    if padding == (0, 0):
        return x
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _tap(xp, r, s, out_hw, stride, dilation=(1, 1)):
    """The (N, C, Ho, Wo) view of the padded input under kernel tap (r, s)."""
    top, left = r * dilation[0], s * dilation[1]
    return xp[:, :, top : top + stride[0] * (out_hw[0] - 1) + 1 : stride[0],
              left : left + stride[1] * (out_hw[1] - 1) + 1 : stride[1]]


def _im2col(x, kernel, stride, padding, dilation, out_hw):
    """Patches as a (C*R*S, N*Ho*Wo) matrix, rows ordered like w.reshape(K, -1)'s columns."""
    n, c = x.shape[:2]
    xp = _pad(x, padding)
    cols = np.empty((c, *kernel, n, *out_hw), dtype=x.dtype)
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            cols[:, r, s] = _tap(xp, r, s, out_hw, stride, dilation).transpose(1, 0, 2, 3)
    return cols.reshape(c * kernel[0] * kernel[1], -1)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    k, kernel = w.shape[0], w.shape[2:]
    out_hw = _geometry(x.shape, kernel, stride, padding, dilation)
    y = w.reshape(k, -1) @ _im2col(x, kernel, stride, padding, dilation, out_hw)
    if b is not None:
        y += b[:, None]
    return np.ascontiguousarray(y.reshape(k, x.shape[0], *out_hw).transpose(1, 0, 2, 3))


def conv2d_backward(gy, x, w, stride=1, padding=0, dilation=1, need_input_grad=True):
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    (n, c, height, width), k, kernel = x.shape, w.shape[0], w.shape[2:]
    out_hw = gy.shape[2:]
    gy_rows = gy.transpose(1, 0, 2, 3).reshape(k, -1)
    gw = (gy_rows @ _im2col(x, kernel, stride, padding, dilation, out_hw).T).reshape(w.shape)
    gb = gy.sum(axis=(0, 2, 3))
    gx = None
    if need_input_grad:
        gcols = (w.reshape(k, -1).T @ gy_rows).reshape(c, *kernel, n, *out_hw)
        gxp = np.zeros((n, c, height + 2 * padding[0], width + 2 * padding[1]), dtype=x.dtype)
        for r in range(kernel[0]):
            for s in range(kernel[1]):
                _tap(gxp, r, s, out_hw, stride, dilation)[...] += gcols[:, r, s].transpose(
                    1, 0, 2, 3)
        gx = np.ascontiguousarray(
            gxp[:, :, padding[0] : padding[0] + height, padding[1] : padding[1] + width])
    return gx, gw, gb


def _pool_geometry(x_shape, kernel_size, stride, padding):
    kernel = pair(kernel_size)
    stride = kernel if stride is None else pair(stride)
    padding = pair(padding)
    return kernel, stride, padding, _geometry(x_shape, kernel, stride, padding)


def max_pool2d(x, kernel_size, stride=None, padding=0, return_indices=False):
    kernel, stride, padding, out_hw = _pool_geometry(x.shape, kernel_size, stride, padding)
    width = x.shape[3]
    xp = _pad(x, padding, -np.inf)
    # (N, C, Ho, Wo, R*S) copy of every window; argmax keeps the first maximum
    # and, like PyTorch, treats NaN as the largest value.
    windows = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=(2, 3))
    windows = windows[:, :, : stride[0] * out_hw[0] : stride[0],
                      : stride[1] * out_hw[1] : stride[1]].reshape(*x.shape[:2], *out_hw, -1)
    where = windows.argmax(axis=-1)
    y = np.take_along_axis(windows, where[..., None], axis=-1)[..., 0]
    if not return_indices:
        return y
    rows = np.arange(out_hw[0])[:, None] * stride[0] - padding[0] + where // kernel[1]
    cols = np.arange(out_hw[1])[None, :] * stride[1] - padding[1] + where % kernel[1]
    return y, rows * width + cols


def max_pool2d_backward(gy, idx, x_shape):
    n, c, height, width = x_shape
    plane = height * width
    offsets = (np.arange(n * c) * plane).reshape(n, c, 1, 1)
    # bincount sums the gradients of windows that share their maximum.
    gx = np.bincount((idx + offsets).ravel(), weights=gy.ravel(), minlength=n * c * plane)
    return gx.astype(gy.dtype, copy=False).reshape(x_shape)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    kernel, stride, padding, out_hw = _pool_geometry(x.shape, kernel_size, stride, padding)
    xp = _pad(x, padding)
    total = np.zeros((*x.shape[:2], *out_hw), dtype=x.dtype)
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            total += _tap(xp, r, s, out_hw, stride)
    total /= kernel[0] * kernel[1]
    return total


def avg_pool2d_backward(gy, x_shape, kernel_size, stride=None, padding=0):
    kernel, stride, padding, out_hw = _pool_geometry(x_shape, kernel_size, stride, padding)
    n, c, height, width = x_shape
    gxp = np.zeros((n, c, height + 2 * padding[0], width + 2 * padding[1]), dtype=gy.dtype)
    share = gy / gy.dtype.type(kernel[0] * kernel[1])
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            _tap(gxp, r, s, out_hw, stride)[...] += share
    return np.ascontiguousarray(
        gxp[:, :, padding[0] : padding[0] + height, padding[1] : padding[1] + width])


def relu(x):
    return np.maximum(x, 0)


def relu_backward(gy, x):
    return np.where(x > 0, gy, 0)


def softmax_cross_entropy(logits, labels):
    rows = np.arange(logits.shape[0])
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, labels])
    grad = exp / total
    grad[rows, labels] -= 1
    grad /= logits.shape[0]
    return float(loss), grad

"""Plain-NumPy float64 reference of every cnnext kernel: the oracle of tests and benchmarks.

Each function has the signature of its namesake in ``cnnext.functional`` and
computes in float64 whatever the input dtype.  Written for clarity, not
speed, and without input validation: callers pass valid arguments.  The
loops run over kernel offsets (a handful) and are vectorised over the batch,
channels and output positions, which keeps the oracle fast enough for
property tests.
"""

import numpy as np


def pair(value):
    """An int or a 2-sequence as an (h, w) tuple of ints."""
    if np.ndim(value) == 0:
        return int(value), int(value)
    h, w = value
    return int(h), int(w)


def output_size(size, kernel, stride, padding, dilation=1):
    """floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _window(xp, r, s, out_hw, stride, dilation):
    """The (N, C, Ho, Wo) view of padded input xp seen by kernel tap (r, s)."""
    ho, wo = out_hw
    top, left = r * dilation[0], s * dilation[1]
    return xp[:, :, top : top + stride[0] * (ho - 1) + 1 : stride[0],
              left : left + stride[1] * (wo - 1) + 1 : stride[1]]


def _conv_geometry(x_shape, w_shape, stride, padding, dilation):
    """stride and dilation pairs, padding ((top, bottom), (left, right)), (Ho, Wo)."""
    stride, padding, dilation = pair(stride), pads(padding), pair(dilation)
    _, _, h, w = x_shape
    _, _, kr, ks = w_shape
    out_hw = tuple(pool_output_size(size, k, s, before, after, d)
                   for size, k, s, (before, after), d in zip((h, w), (kr, ks), stride, padding,
                                                             dilation, strict=True))
    return stride, padding, dilation, out_hw


def _pad(x, padding, value=0.0):
    (top, bottom), (left, right) = pads(padding)
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n,k,i,j] = b[k] + sum_{c,r,s} w[k,c,r,s] xpad[n,c,i*sh + r*dh, j*sw + s*dw];
    with groups, each group of K / groups filters sees its C / groups channels.

    ``padding``: an int, (h, w), or ((top, bottom), (left, right)).
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if groups != 1:
        cg, kg = x.shape[1] // groups, w.shape[0] // groups
        return np.concatenate([
            conv2d(x[:, g * cg:(g + 1) * cg], w[g * kg:(g + 1) * kg],
                   None if b is None else np.asarray(b)[g * kg:(g + 1) * kg], stride, padding,
                   dilation) for g in range(groups)], axis=1)
    stride, padding, dilation, out_hw = _conv_geometry(x.shape, w.shape, stride, padding, dilation)
    xp = _pad(x, padding)
    y = np.zeros((x.shape[0], w.shape[0], *out_hw))
    for r in range(w.shape[2]):
        for s in range(w.shape[3]):
            tap = _window(xp, r, s, out_hw, stride, dilation)
            y += np.einsum("nchw,kc->nkhw", tap, w[:, :, r, s])
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return y


def conv2d_backward(gy, x, w, stride=1, padding=0, dilation=1, need_input_grad=True,
                    groups=1):
    """Gradients (gx or None, gw, gb) of sum(gy * conv2d(x, w, b, ..., groups))."""
    gy = np.asarray(gy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if groups != 1:
        cg, kg = x.shape[1] // groups, w.shape[0] // groups
        parts = [conv2d_backward(gy[:, g * kg:(g + 1) * kg], x[:, g * cg:(g + 1) * cg],
                                 w[g * kg:(g + 1) * kg], stride, padding, dilation,
                                 need_input_grad) for g in range(groups)]
        gx = np.concatenate([p[0] for p in parts], axis=1) if need_input_grad else None
        return gx, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
    stride, padding, dilation, out_hw = _conv_geometry(x.shape, w.shape, stride, padding, dilation)
    xp = _pad(x, padding)
    gxp = np.zeros_like(xp) if need_input_grad else None
    gw = np.zeros_like(w)
    for r in range(w.shape[2]):
        for s in range(w.shape[3]):
            tap = _window(xp, r, s, out_hw, stride, dilation)
            gw[:, :, r, s] = np.einsum("nkhw,nchw->kc", gy, tap)
            if need_input_grad:
                _window(gxp, r, s, out_hw, stride, dilation)[...] += np.einsum(
                    "nkhw,kc->nchw", gy, w[:, :, r, s])
    gb = gy.sum(axis=(0, 2, 3))
    gx = None
    if need_input_grad:
        (top, _), (left, _) = padding
        gx = gxp[:, :, top : top + x.shape[2], left : left + x.shape[3]]
    return gx, gw, gb


def conv2d_max_pool2d(x, w, b=None, stride=1, padding=0, dilation=1, relu=False, pool_size=2,
                      pool_stride=None):
    """max_pool2d(relu(conv2d(x, w, b))) (relu optional) and the argmax indices,
    flat in each plane of the convolution's output."""
    y = conv2d(x, w, b, stride, padding, dilation)
    if relu:
        y = _relu(y)
    return max_pool2d(y, pool_size, pool_stride, return_indices=True)


def conv2d_max_pool2d_backward(gy, idx, x, w, stride=1, padding=0, dilation=1, y=None,
                               relu=False, pool_size=2, pool_stride=None,
                               need_input_grad=True):
    """Gradients (gx or None, gw, gb) of sum(gy * conv2d_max_pool2d(x, w, b, ...)[0]):
    gy scattered to idx (where the pooled ``y`` > 0 or NaN under relu), then
    conv2d_backward."""
    gy = np.asarray(gy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    *_, out_hw = _conv_geometry(x.shape, w.shape, stride, padding, dilation)
    if relu:
        gy = np.where(np.asarray(y) <= 0, 0.0, gy)
    dense = max_pool2d_backward(gy, idx, (x.shape[0], w.shape[0], *out_hw))
    return conv2d_backward(dense, x, w, stride, padding, dilation, need_input_grad)


def linear(x, w, b=None):
    """x @ w.T + b, with w (O, I) as PyTorch's Linear."""
    y = np.asarray(x, dtype=np.float64) @ np.asarray(w, dtype=np.float64).T
    return y if b is None else y + np.asarray(b, dtype=np.float64)


def linear_backward(gy, x, w, need_input_grad=True):
    """Gradients (gx or None, gw, gb) of sum(gy * linear(x, w, b))."""
    gy = np.asarray(gy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    gx = gy @ np.asarray(w, dtype=np.float64) if need_input_grad else None
    return gx, gy.T @ x, gy.sum(axis=0)


def pads(padding):
    """An int, an (h, w) pair or ((top, bottom), (left, right)) as the latter."""
    if np.ndim(padding) == 2:
        (top, bottom), (left, right) = padding
        return (int(top), int(bottom)), (int(left), int(right))
    h, w = pair(padding)
    return (h, h), (w, w)


def pool_output_size(size, kernel, stride, before, after, dilation=1, ceil_mode=False):
    """Windows along an axis: floor (or ceil) of (size + before + after - extent) / stride,
    plus 1; in ceil mode the last window must start before size + before."""
    span = size + before + after - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    count = -(-span // stride) + 1
    return count - 1 if (count - 1) * stride >= size + before else count


def _pool_geometry(x_shape, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """kernel, stride, dilation pairs, the padding pairs, (Ho, Wo), and the
    padding after each axis that holds every window (ceil mode's overhang
    included)."""
    kernel = pair(kernel_size)
    stride = kernel if stride is None else pair(stride)
    dilation = pair(dilation)
    padding = pads(padding)
    out_hw, after = [], []
    for size, k, s, (before, end), d in zip(x_shape[2:], kernel, stride, padding, dilation,
                                            strict=True):
        count = pool_output_size(size, k, s, before, end, d, ceil_mode)
        out_hw.append(count)
        after.append(max(end, (count - 1) * s + d * (k - 1) + 1 - size - before))
    return kernel, stride, dilation, padding, tuple(out_hw), tuple(after)


def _pad_pool(x, padding, after, value):
    (top, _), (left, _) = padding
    return np.pad(x, ((0, 0), (0, 0), (top, after[0]), (left, after[1])), constant_values=value)


def max_pool2d(x, kernel_size, stride=None, padding=0, return_indices=False, *, dilation=1,
               ceil_mode=False):
    """Max over each window; padding (and ceil mode's overhang) is -inf.

    Windows are scanned in row-major order and a value replaces the running
    maximum when it is greater or NaN (PyTorch's rule): ties keep the first
    maximum, a NaN wins.  Indices are flat positions in each H*W plane.
    """
    x = np.asarray(x, dtype=np.float64)
    kernel, stride, dilation, padding, out_hw, after = _pool_geometry(
        x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    height, width = x.shape[2:]
    xp = _pad_pool(x, padding, after, -np.inf)
    # Flat in-plane index of every padded position (-1 in the padding).
    rows = np.arange(-padding[0][0], height + after[0])
    cols = np.arange(-padding[1][0], width + after[1])
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    flat = np.where(inside, rows[:, None] * width + cols[None, :], -1)[None, None]
    best = np.full((x.shape[0], x.shape[1], *out_hw), -np.inf)
    index = np.full(best.shape, -1, dtype=np.int64)
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            value = _window(xp, r, s, out_hw, stride, dilation)
            where = _window(flat, r, s, out_hw, stride, dilation)
            # The first in-plane position is the index of an all -inf window.
            first = (index < 0) & (where >= 0)
            index = np.where(first, where, index)
            take = (value > best) | np.isnan(value)
            best = np.where(take, value, best)
            index = np.where(take, where, index)
    return (best, index) if return_indices else best


def max_pool2d_backward(gy, idx, x_shape):
    """Scatter-add gy into the positions idx picked (overlapping windows add up)."""
    gy = np.asarray(gy, dtype=np.float64)
    n, c, height, width = x_shape
    gx = np.zeros((n * c, height * width))
    planes = np.repeat(np.arange(n * c), gy.shape[2] * gy.shape[3])
    np.add.at(gx, (planes, np.asarray(idx).reshape(-1)), gy.reshape(-1))
    return gx.reshape(x_shape)


def _avg_divisors(x_shape, kernel, stride, dilation, padding, out_hw, after, count_include_pad):
    """Per output, the taps a window counts: pooled ones over the counted region."""
    height, width = x_shape[2:]
    counted = np.ones((1, 1, height, width))
    if count_include_pad:
        (top, bottom), (left, right) = padding
        counted = np.ones((1, 1, height + top + bottom, width + left + right))
        ones = _pad_pool(counted, ((0, 0), (0, 0)), (after[0] - bottom, after[1] - right), 0.0)
    else:
        ones = _pad_pool(counted, padding, after, 0.0)
    total = np.zeros((1, 1, *out_hw))
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            total += _window(ones, r, s, out_hw, stride, dilation)
    return total


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False,
               count_include_pad=True, dilation=1):
    """Mean over each window: zero padding, the divisor counting the taps inside
    the padded input (count_include_pad) or inside the input."""
    x = np.asarray(x, dtype=np.float64)
    kernel, stride, dilation, padding, out_hw, after = _pool_geometry(
        x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    xp = _pad_pool(x, padding, after, 0.0)
    total = np.zeros((x.shape[0], x.shape[1], *out_hw))
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            total += _window(xp, r, s, out_hw, stride, dilation)
    return total / _avg_divisors(x.shape, kernel, stride, dilation, padding, out_hw, after,
                                 count_include_pad)


def avg_pool2d_backward(gy, x_shape, kernel_size, stride=None, padding=0, *, ceil_mode=False,
                        count_include_pad=True, dilation=1):
    """Each output's gradient spread evenly over its window's taps (padding dropped)."""
    gy = np.asarray(gy, dtype=np.float64)
    kernel, stride, dilation, padding, out_hw, after = _pool_geometry(
        x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    n, c, height, width = x_shape
    (top, _), (left, _) = padding
    gxp = np.zeros((n, c, height + top + after[0], width + left + after[1]))
    share = gy / _avg_divisors(x_shape, kernel, stride, dilation, padding, out_hw, after,
                               count_include_pad)
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            _window(gxp, r, s, out_hw, stride, dilation)[...] += share
    return gxp[:, :, top : top + height, left : left + width]


def relu(x):
    """max(x, 0); NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x, np.where(np.isnan(x), x, 0.0))


_relu = relu


def relu_backward(gy, x):
    """gy where x > 0 or x is NaN (the branch relu took), else 0, as in PyTorch."""
    return np.where(np.asarray(x) <= 0, 0.0, np.asarray(gy, dtype=np.float64))


def softmax(x):
    """Softmax over the last axis, shifted by the row maximum."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient."""
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    rows = np.arange(z.shape[0])
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    loss = float(np.mean(log_norm - shifted[rows, labels]))
    grad = softmax(z)
    grad[rows, labels] -= 1.0
    return loss, grad / z.shape[0]


def batch_norm2d(x, running_mean=None, running_var=None, weight=None, bias=None,
                 training=False, momentum=0.1, eps=1e-5, return_stats=False):
    """(x - mean) / sqrt(var + eps) * weight + bias per channel; the batch's biased
    statistics when training, the running ones otherwise.  Running statistics are
    not modified (see batch_norm2d_running)."""
    x = np.asarray(x, dtype=np.float64)
    if training:
        mean = x.mean(axis=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
    invstd = 1 / np.sqrt(var + eps)
    w = np.ones_like(mean) if weight is None else np.asarray(weight, dtype=np.float64)
    b = np.zeros_like(mean) if bias is None else np.asarray(bias, dtype=np.float64)
    y = (x - mean[None, :, None, None]) * (invstd * w)[None, :, None, None] \
        + b[None, :, None, None]
    return (y, mean, invstd) if return_stats else y


def batch_norm2d_running(x, running_mean, running_var, momentum=0.1):
    """The running statistics after one training step: (1 - momentum) r + momentum s,
    with the batch's unbiased variance."""
    x = np.asarray(x, dtype=np.float64)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=(0, 2, 3))
    var = ((x - mean[None, :, None, None]) ** 2).sum(axis=(0, 2, 3)) / (count - 1)
    return ((1 - momentum) * np.asarray(running_mean, dtype=np.float64) + momentum * mean,
            (1 - momentum) * np.asarray(running_var, dtype=np.float64) + momentum * var)


def batch_norm2d_backward(gy, x, mean, invstd, weight=None, training=True,
                          need_input_grad=True):
    """Gradients (gx or None, gweight, gbias) of sum(gy * batch_norm2d(x, ...)) for the
    given statistics; through the batch's statistics too when training."""
    gy = np.asarray(gy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    invstd = np.asarray(invstd, dtype=np.float64)
    w = np.ones_like(mean) if weight is None else np.asarray(weight, dtype=np.float64)
    xhat = (x - mean[None, :, None, None]) * invstd[None, :, None, None]
    gbias = gy.sum(axis=(0, 2, 3))
    gweight = (gy * xhat).sum(axis=(0, 2, 3))
    gx = None
    if need_input_grad:
        scale = (w * invstd)[None, :, None, None]
        if training:
            count = x.shape[0] * x.shape[2] * x.shape[3]
            gx = scale * (gy - gbias[None, :, None, None] / count
                          - xhat * gweight[None, :, None, None] / count)
        else:
            gx = scale * gy
    return gx, gweight, gbias


def global_avg_pool2d(x):
    """The mean of every (H, W) plane: (N, C, H, W) -> (N, C)."""
    return np.asarray(x, dtype=np.float64).mean(axis=(2, 3))


def global_avg_pool2d_backward(gy, x_shape):
    """gy[n, c] / (H * W) over every element of plane (n, c)."""
    _n, _c, height, width = x_shape
    gy = np.asarray(gy, dtype=np.float64)
    return np.broadcast_to(gy[:, :, None, None] / (height * width), x_shape).copy()


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else x * negative_slope (NaN stays NaN)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x, x * negative_slope)


def leaky_relu_backward(gy, x, negative_slope=0.01):
    """gy where x > 0, else gy * negative_slope (NaN x included), as in PyTorch."""
    gy = np.asarray(gy, dtype=np.float64)
    return np.where(np.asarray(x) > 0, gy, gy * negative_slope)


def sigmoid(x):
    """1 / (1 + exp(-x)), without overflow warnings for very negative x."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def sigmoid_backward(gy, y):
    """gy * (1 - y) * y from sigmoid's output y."""
    y = np.asarray(y, dtype=np.float64)
    return np.asarray(gy, dtype=np.float64) * (1 - y) * y


def tanh(x):
    return np.tanh(np.asarray(x, dtype=np.float64))


def tanh_backward(gy, y):
    """gy * (1 - y * y) from tanh's output y."""
    y = np.asarray(y, dtype=np.float64)
    return np.asarray(gy, dtype=np.float64) * (1 - y * y)


def _mix32(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x7FEB352D)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(0x846CA68B)
    return h ^ (h >> np.uint32(16))


def dropout_mask(size, p, key):
    """Which of ``size`` flat elements dropout with probability ``p`` and ``key`` keeps:
    element i is kept when mix(mix(lo32(i) ^ lo32(key)) ^ hi32(key) ^ hi32(i)) >=
    round(p * 2**32), mix being the lowbias32 hash (written out again here, in NumPy)."""
    index = np.arange(size, dtype=np.uint64)
    low = (index & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    high = (index >> np.uint64(32)).astype(np.uint32)
    with np.errstate(over="ignore"):
        h = _mix32(_mix32(low ^ np.uint32(key & 0xFFFFFFFF)) ^ np.uint32(key >> 32) ^ high)
    return h.astype(np.uint64) >= min(round(p * 2**32), 2**32)


def dropout(x, p=0.5, key=0):
    """x * mask / (1 - p), dropped elements multiplied by 0 (NaN stays NaN)."""
    x = np.asarray(x, dtype=np.float64)
    scale = 0.0 if p == 1 else 1 / (1 - p)
    keep = dropout_mask(x.size, p, key).reshape(x.shape)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in the kernel
        return x * np.where(keep, scale, 0.0)


def dropout_backward(gy, p=0.5, key=0):
    return dropout(gy, p, key)

"""Grouped convolution: ``conv2d(..., groups=g)`` and its gradients.

The input channels are split into ``groups`` equal groups, each convolved
with its own K / groups filters (PyTorch's ``groups``: w has shape
(K, C / groups, R, S)).  A depthwise layer (groups == C, one input channel a
group) runs on the kernels of its own (``_kernels/_depthwise.pxi``); other
groupings run the ordinary convolution kernels once per group.
"""

import math

import numpy as np

from .. import _dispatch, _validation

_depthwise = _dispatch.load("_depthwise")

_FORWARD, _BACKWARD_DATA, _BACKWARD_FILTER = (
    _dispatch.by_dtype(getattr(_depthwise, name))
    for name in ("depthwise_forward", "depthwise_backward_data", "depthwise_backward_filter"))

_X_LAYOUT = "(N, C, H, W)"
_W_LAYOUT = "(K, C / groups, R, S)"


def check_groups(func, groups):
    """``groups`` as an int >= 1 (bool and float refused)."""
    groups = _validation.to_int(func, "groups", groups)
    if groups < 1:
        raise ValueError(f"{func}: groups must be >= 1, got {groups}")
    return groups


def _geometry(func, x, w, stride, padding, dilation, groups):
    """Checked shapes and hyper-parameters: (stride, padding, dilation, output shape)."""
    n, c, h, wd = x.shape
    k, cw, r, s = w.shape
    if min(c, h, wd) < 1:
        raise ValueError(f"{func}: x must have C, H, W >= 1 {_X_LAYOUT}, got shape {x.shape}")
    if min(k, r, s) < 1:
        raise ValueError(f"{func}: w must have K, R, S >= 1 {_W_LAYOUT}, got shape {w.shape}")
    if c % groups or k % groups:
        raise ValueError(f"{func}: groups={groups} must divide the input channels ({c}, x of "
                         f"shape {x.shape}) and the filters ({k}, w of shape {w.shape})")
    if cw * groups != c:
        raise ValueError(f"{func}: w has {cw} input channels per filter (shape {w.shape}) but "
                         f"x has {c} channels in {groups} groups; w must be {_W_LAYOUT} with "
                         f"C / groups = {c // groups}")
    stride = _validation.pair(func, "stride", stride, 1)
    padding = _validation.pair(func, "padding", padding, 0)
    dilation = _validation.pair(func, "dilation", dilation, 1)
    ho = _validation.output_size(func, "height", h, r, stride[0], padding[0], dilation[0])
    wo = _validation.output_size(func, "width", wd, s, stride[1], padding[1], dilation[1])
    _validation.check_nbytes(func, "the output", (n, k, ho, wo), x.dtype)
    # The padded copy of one plane, in whole blocks of 16 columns.
    _validation.check_nbytes(func, f"the padded copy of one plane of x for stride {stride}, "
                         f"padding {padding} and dilation {dilation}",
                         ((ho - 1) * stride[0] + (r - 1) * dilation[0] + 1 + h + r * dilation[0],
                          ((wo + 15) // 16) * 16 * stride[1] + wd + 16 + 2 * s * dilation[1]),
                         np.float64)
    return stride, padding, dilation, (n, k, ho, wo)


def _depthwise_case(x, w, groups):
    return groups == x.shape[1] and w.shape[1] == 1


def conv2d(x, w, b, stride, padding, dilation, groups, out):
    """``cnnext.functional.conv2d`` with groups > 1 (see there): x, w, b checked
    for kind and dtype by the caller."""
    from .conv import conv2d as plain_conv2d

    func = "conv2d"
    stride, padding, dilation, out_shape = _geometry(func, x, w, stride, padding, dilation,
                                                     groups)
    y = _validation.out_array(func, "out", out, out_shape, x.dtype, (x, w, b))
    if x.shape[0] == 0:
        return y
    if _depthwise_case(x, w, groups):
        _FORWARD[x.dtype](_validation.contiguous(x), _validation.contiguous(w),
                          None if b is None else _validation.contiguous(b), y, stride, padding,
                          dilation)
        return y
    cg, kg = x.shape[1] // groups, w.shape[0] // groups
    for g in range(groups):
        y[:, g * kg:(g + 1) * kg] = plain_conv2d(
            x[:, g * cg:(g + 1) * cg], w[g * kg:(g + 1) * kg],
            None if b is None else b[g * kg:(g + 1) * kg], stride, padding, dilation)
    return y


def conv2d_backward(gy, x, w, stride, padding, dilation, need_input_grad, groups, out):
    """``cnnext.functional.conv2d_backward`` with groups > 1 (see there): gy, x, w
    checked for kind and dtype, need_input_grad for type, by the caller."""
    from .conv import conv2d_backward as plain_backward

    func = "conv2d_backward"
    stride, padding, dilation, out_shape = _geometry(func, x, w, stride, padding, dilation,
                                                     groups)
    if gy.shape != out_shape:
        raise ValueError(f"{func}: gy must have the shape of conv2d's output {out_shape} "
                         f"(N, K, Ho, Wo), got shape {gy.shape}")
    gx, gw, gb = _validation.gradient_out_buffers(func, out, need_input_grad, gy, x, w)
    n = x.shape[0]
    if n == 0:
        gw.fill(0)
        gb.fill(0)
        return gx, gw, gb
    if _depthwise_case(x, w, groups):
        gy = _validation.contiguous(gy)
        if need_input_grad:
            # Zero padding times an inf or NaN tap would add NaN the definition lacks.
            scatter = not math.isfinite(w.sum(dtype=np.float64))
            _BACKWARD_DATA[x.dtype](gy, _validation.contiguous(w), gx, stride, padding, dilation,
                                    scatter)
        partial = np.empty((n, w.shape[0], w.shape[2] * w.shape[3] + 1), np.float64)
        _BACKWARD_FILTER[x.dtype](gy, _validation.contiguous(x), partial, gw, gb, stride, padding,
                                  dilation)
        return gx, gw, gb
    cg, kg = x.shape[1] // groups, w.shape[0] // groups
    for g in range(groups):
        channels, filters = slice(g * cg, (g + 1) * cg), slice(g * kg, (g + 1) * kg)
        part_gx, gw[filters], gb[filters] = plain_backward(
            gy[:, filters], x[:, channels], w[filters], stride, padding, dilation,
            need_input_grad)
        if need_input_grad:
            gx[:, channels] = part_gx
    return gx, gw, gb

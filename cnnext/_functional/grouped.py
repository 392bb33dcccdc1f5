"""Grouped convolution: ``conv2d(..., groups=g)`` and its gradients.

The input channels are split into ``groups`` equal groups, each convolved
with its own K / groups filters (PyTorch's ``groups``: w has shape
(K, C / groups, R, S)).  A depthwise layer (groups == C, one input channel a
group) runs on the kernels of its own (``_kernels/_depthwise.pxi``); other
groupings run the ordinary convolution kernels once per group.
"""

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


def _geometry(func, x_shape, w_shape, dtype, stride, padding, dilation, groups):
    """Checked shapes and hyper-parameters: (stride, padding, dilation, output shape)."""
    n, c, h, wd = x_shape
    k, cw, r, s = w_shape
    if min(c, h, wd) < 1:
        raise ValueError(f"{func}: x must have C, H, W >= 1 {_X_LAYOUT}, got shape {x_shape}")
    if min(k, r, s) < 1:
        raise ValueError(f"{func}: w must have K, R, S >= 1 {_W_LAYOUT}, got shape {w_shape}")
    if c % groups or k % groups:
        raise ValueError(f"{func}: groups={groups} must divide the input channels ({c}, x of "
                         f"shape {x_shape}) and the filters ({k}, w of shape {w_shape})")
    if cw * groups != c:
        raise ValueError(f"{func}: w has {cw} input channels per filter (shape {w_shape}) but "
                         f"x has {c} channels in {groups} groups; w must be {_W_LAYOUT} with "
                         f"C / groups = {c // groups}")
    stride = _validation.pair(func, "stride", stride, 1)
    padding = _validation.pair(func, "padding", padding, 0)
    dilation = _validation.pair(func, "dilation", dilation, 1)
    ho = _validation.output_size(func, "height", h, r, stride[0], padding[0], dilation[0])
    wo = _validation.output_size(func, "width", wd, s, stride[1], padding[1], dilation[1])
    _validation.check_nbytes(func, "the output", (n, k, ho, wo), dtype)
    if _depthwise_case(x_shape, w_shape, groups):
        for name, shape in _padded_planes(h, wd, r, s, ho, wo, stride, padding, dilation):
            _validation.check_nbytes(func, f"{name} for stride {stride}, padding {padding} "
                                     f"and dilation {dilation}", shape, dtype)
    return stride, padding, dilation, (n, k, ho, wo)


def _depthwise_case(x_shape, w_shape, groups):
    return groups == x_shape[1] and w_shape[1] == 1


def _padded_planes(h, wd, r, s, ho, wo, stride, padding, dilation):
    """(what, shape) of the buffers the depthwise kernels pad one plane into
    (_kernels/_depthwise.pxi, make_geometry): an input plane split into the
    column stride's phases, each rounded up to whole blocks of 16 columns,
    and those of the input gradient."""
    sh, sw = stride
    dh, dw = dilation
    reach = (wo - 1) * sw + (s - 1) * dw + 1
    phase_len = -(-wo // 16) * 16 + (s - 1) * dw // sw + 1
    yield ("the padded copy of one plane of x",
           ((ho - 1) * sh + (r - 1) * dh + 1, min(sw, reach), phase_len))
    if stride == (1, 1):
        yield ("the padded copy of one plane of gy",
               (h + (r - 1) * dh, -(-wd // 16) * 16 + (s - 1) * dw + 1))
        return
    # The strided input gradient: gy padded, and x's gradient per phase of its rows
    # and columns.
    rows, cols = -(-h // sh), -(-wd // sw)
    yield ("the padded copy of one plane of gy",
           (max(-(-padding[0] // sh) + rows, ho) + (r - 1) * dh // sh,
            max(-(-padding[1] // sw) + cols, wo) + (s - 1) * dw // sw))
    yield "the phases of one plane of gx", (sh * sw, rows, cols)


def conv2d(x, w, b, stride, padding, dilation, groups, out):
    """``cnnext.functional.conv2d`` with groups > 1 (see there): x, w, b checked
    for kind and dtype by the caller."""
    from .conv import conv2d as plain_conv2d

    func = "conv2d"
    stride, padding, dilation, out_shape = _geometry(func, x.shape, w.shape, x.dtype, stride,
                                                     padding, dilation, groups)
    y = _validation.out_array(func, "out", out, out_shape, x.dtype, (x, w, b))
    if x.shape[0] == 0:
        return y
    if _depthwise_case(x.shape, w.shape, groups):
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
    stride, padding, dilation, out_shape = _geometry(func, x.shape, w.shape, x.dtype, stride,
                                                     padding, dilation, groups)
    if gy.shape != out_shape:
        raise ValueError(f"{func}: gy must have the shape of conv2d's output {out_shape} "
                         f"(N, K, Ho, Wo), got shape {gy.shape}")
    gx, gw, gb = _validation.gradient_out_buffers(func, out, need_input_grad, gy, x, w)
    n = x.shape[0]
    if n == 0:
        gw.fill(0)
        gb.fill(0)
        return gx, gw, gb
    if _depthwise_case(x.shape, w.shape, groups):
        gy = _validation.contiguous(gy)
        if need_input_grad:
            # Zero padding times an inf or NaN tap would add NaN the definition lacks.
            scatter = not np.isfinite(w).all()
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


def depthwise_step_plan(x_shape, w_shape, dtype, stride, padding, dilation):
    """The kernels' StepPlan of a depthwise layer (groups == C, one input channel
    a filter) on batches of ``x_shape``, checked as ``conv2d`` checks a call
    (what a plan's "depthwise2d" steps take)."""
    stride, padding, dilation, out_shape = _geometry("conv2d", x_shape, w_shape, dtype, stride,
                                                     padding, dilation, x_shape[1])
    return _depthwise.StepPlan(x_shape, w_shape, out_shape, stride, padding, dilation)

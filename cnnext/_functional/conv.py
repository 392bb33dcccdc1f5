"""2-D convolution: argument checks, output allocation, then the compiled kernels.

The kernels (``cnnext/_kernels/_conv.pxi``, one build per instruction set)
run with bounds checks off, so everything they rely on is checked here
first: array kinds, dtypes, ndim, channel counts, stride/padding/dilation,
output sizes, byte counts, ``out=`` buffers.  Each shape gets a cached
``Plan`` (how the kernels split and stage the work: the algorithms chosen
by heuristics, or measured on this CPU by ``cnnext._tuning``); each Python thread
reuses its own scratch buffer, so repeated calls allocate nothing but their
outputs.

Padding that differs between the two sides of an axis (ONNX models have it)
is the symmetric part given to the kernels plus a zero-padded copy of the
input for the rest; the input gradient is cropped back.

NaN and inf propagate as in the definition's sums.  The fast reformulated
algorithms (Winograd; the input gradient as a convolution of padded gy)
would add terms like inf - inf or 0 * inf, so calls whose operands hold
NaN or inf are given a plan without them (one cheap finiteness pass).
"""

import collections
import threading

import numpy as np

from .. import _dispatch, _tuning, _validation
from .._typing import FloatArray, IntPair, Padding
from . import _repeat, conv_taps, grouped

_kernels = _dispatch.load("_conv")
# The repeat-call fast paths run the dispatched build's step kernels: they
# stand aside while a test swaps ``_kernels`` for another build.
_DISPATCHED = _kernels


def _specialised(kernels):
    """dtype -> (forward, backward data, backward filter) of one kernel module."""
    return _dispatch.specialisations(
        kernels, ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"))


_by_dtype = _specialised(_kernels)

_CONV2D = _repeat.Calls()
_CONV2D_BACKWARD = _repeat.Calls()

_PLAN_CACHE_SIZE = 256
_plans = {}
_scratch = threading.local()


def forget_plans():
    """forget_plans()

    Drop the cached plans and the remembered repeat calls that hold them:
    the next call of each shape plans again (after the tuned choices
    changed, cnnext._tuning).
    """
    global _CONV2D, _CONV2D_BACKWARD
    _plans.clear()
    _CONV2D = _repeat.Calls()
    _CONV2D_BACKWARD = _repeat.Calls()
    for cache in DEPENDENT_CACHES:
        cache.clear()


# Caches of plans that hold this module's plans (the fused kernels'), dropped
# with them.
DEPENDENT_CACHES = []

_X_LAYOUT = "(N, C, H, W)"
_W_LAYOUT = "(K, C, R, S)"
_GY_LAYOUT = "(N, K, Ho, Wo)"


def _workspace(size, dtype):
    """This thread's scratch array of at least ``size`` elements of ``dtype``."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    buffer = buffers.get(dtype)
    if buffer is None or buffer.size < size:
        buffer = buffers[dtype] = np.empty(max(size, 1), dtype)
    return buffer


def _plan_args(func, x_shape, w_shape, dtype, stride, padding, dilation):
    """Validate the shapes and hyper-parameters; return the Plan's arguments."""
    n, c, h, wd = x_shape
    k, cw, r, s = w_shape
    if min(c, h, wd) < 1:
        raise ValueError(f"{func}: x must have C, H, W >= 1 {_X_LAYOUT}, got shape {x_shape}")
    if min(k, r, s) < 1:
        raise ValueError(f"{func}: w must have K, R, S >= 1 {_W_LAYOUT}, got shape {w_shape}")
    if cw != c:
        raise ValueError(f"{func}: w has {cw} input channels (shape {w_shape}) but x has {c} "
                         f"(shape {x_shape}); w must be {_W_LAYOUT} with C = x.shape[1]")
    stride = _validation.pair(func, "stride", stride, 1)
    padding = _validation.pair(func, "padding", padding, 0)
    dilation = _validation.pair(func, "dilation", dilation, 1)
    ho, wo = _validation.conv_output_hw(func, h, wd, (r, s), stride, padding, dilation)
    _validation.check_nbytes(func, "the output", (n, k, ho, wo), dtype)
    # Scratch of one image: im2col columns or Winograd transforms, a padded copy.
    _validation.check_nbytes(func, "the workspace of one image",
                             (c * r * s + 16 * (c + k) + k + 64, ho * wo + 64), np.float64)
    # (Only the rows and columns some window reaches are copied.)
    _validation.check_nbytes(func, "the padded copy of one image",
                             (c, (ho - 1) * stride[0] + (r - 1) * dilation[0] + 1,
                          (wo - 1) * stride[1] + (s - 1) * dilation[1] + 64), np.float64)
    return (n, c, h, wd, k, r, s, stride, padding, dilation, dtype.itemsize)


class _Operand(collections.namedtuple("_Operand", "shape dtype")):
    """The shape and dtype of an array argument: what planning reads of it."""


def _plain(value):
    """An int or a pair of ints: arguments a cache key can stand for (bools,
    floats and NumPy scalars, equal to ints as keys, are checked every call)."""
    kind = type(value)
    return kind is int or (kind is tuple and len(value) == 2
                           and type(value[0]) is int and type(value[1]) is int)


def _plan(func, x, w, stride, padding, dilation, reformulate=True):
    """The Plan of a validated call, cached by shapes, dtype and hyper-parameters."""
    return _shape_plan(func, x.shape, w.shape, x.dtype, stride, padding, dilation, reformulate)


def _shape_plan(func, x_shape, w_shape, dtype, stride, padding, dilation, reformulate=True):
    plain = (type(stride) is int and type(padding) is int and type(dilation) is int) or (
        _plain(stride) and _plain(padding) and _plain(dilation))
    if plain:
        key = (x_shape, w_shape, dtype.char, stride, padding, dilation, reformulate)
        plan = _plans.get(key)
        if plan is not None:
            return plan
    plan = conv_taps.plan(func, _Operand(x_shape, dtype), _Operand(w_shape, dtype), stride,
                          padding, dilation)
    if plan is None:
        args = _plan_args(func, x_shape, w_shape, dtype, stride, padding, dilation)
        # Measured choices (cnnext._tuning) need the reformulated algorithms on
        # the table; calls with NaN or inf keep the direct ones' heuristics.
        choices = _tuning.choices(_kernels, args) if reformulate else None
        plan = _kernels.Plan(*args, reformulate, choices)
    if plain:
        if len(_plans) >= _PLAN_CACHE_SIZE:
            _plans.clear()
        _plans[key] = plan
    return plan


def _one_sided(func, x, padding):
    """Padding split into what the kernels take, an int or an (h, w) pair, and
    the rest as np.pad widths ((0, 0), (0, 0), (top, bottom), (left, right)),
    or None when the padding is symmetric already."""
    if type(padding) is int or _plain(padding):
        return padding, None
    (top, bottom), (left, right) = _validation.padding_pairs(func, "padding", padding)
    common = (min(top, bottom), min(left, right))
    if (top, left) == (bottom, right):
        return common, None
    widths = ((0, 0), (0, 0), (top - common[0], bottom - common[0]),
              (left - common[1], right - common[1]))
    return common, widths


def _padded(func, x, widths):
    """``x`` zero-padded by ``widths`` (np.pad), its size checked first."""
    _validation.check_nbytes(
        func, "the padded input",
        (*x.shape[:2], x.shape[2] + sum(widths[2]), x.shape[3] + sum(widths[3])), x.dtype)
    return np.pad(x, widths)


_FINITE = _kernels.finite


def _finite(array):
    """No NaN or inf in ``array``: one pass over its bits (the rule the
    compiled plans apply too, in the same kernel)."""
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return _FINITE(array.reshape(-1))


def step_plans(x_shape, w_shape, dtype, stride, padding, dilation):
    """The Plan for validated shapes and geometry, and the Plan without
    reformulated passes that calls with NaN or inf in their operands use
    (None when the first has no reformulated pass): what a compiled conv
    step takes, as the functional wrappers choose them.  (None, None) for a
    geometry computed tap by tap (conv_taps), which has no step kernel."""
    dtype = np.dtype(dtype)

    def build(reformulate):
        if _kernels is _DISPATCHED:
            return _shape_plan("conv2d", x_shape, w_shape, dtype, stride, padding, dilation,
                               reformulate)
        # (The steps run the dispatched build, whose plans they need.)
        return conv_taps.plan("conv2d", _Operand(x_shape, dtype), _Operand(w_shape, dtype),
                              stride, padding, dilation) or _DISPATCHED.Plan(
            *_plan_args("conv2d", x_shape, w_shape, dtype, stride, padding, dilation),
            reformulate)

    plan = build(True)
    if type(plan) is conv_taps.TapPlan:
        return None, None
    safe = None
    if plan.forward_lanes == "winograd" or plan.data_kernel != "col2im":
        safe = build(False)
    return plan, safe


def _arrays(func, x, w):
    """x and w as float arrays of one dtype."""
    if (type(x) is np.ndarray and type(w) is np.ndarray and x.ndim == 4 and w.ndim == 4
            and x.dtype in _validation.FLOAT_DTYPES and w.dtype == x.dtype):
        return x, w
    x = _validation.float_array(func, "x", x, 4, _X_LAYOUT)
    w = _validation.float_array(func, "w", w, 4, _W_LAYOUT)
    if w.dtype != x.dtype:
        _validation.same_dtype(func, "x", x, w=w)
    return x, w


def conv2d(x: FloatArray, w: FloatArray, b: FloatArray | None = None, stride: IntPair = 1,
           padding: Padding = 0, dilation: IntPair = 1, groups: int = 1, *,
           out: FloatArray | None = None) -> FloatArray:
    """conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, out=None)

    2-D convolution (cross-correlation, as in PyTorch) of a batch of images.

    ``y[n, k, i, j] = b[k] + sum over c, r, s of
    w[k, c, r, s] * xpad[n, c, i*sh + r*dh, j*sw + s*dw]``, where ``xpad`` is
    ``x`` zero-padded by ``padding`` on each side.

    Parameters
    ----------
    x : ndarray of float32 or float64, shape (N, C, H, W)
        Input images.  Any memory layout; never modified.
    w : ndarray, shape (K, C / groups, R, S), same dtype as x
        Filters.
    b : ndarray, shape (K,), same dtype as x, optional
        Bias added to each output channel.
    stride, padding, dilation : int or (int, int)
        Step between windows (>= 1), zero padding on each side (>= 0) and
        spacing of the filter taps (>= 1), as (height, width) or one int
        for both.  ``padding`` may also be ((top, bottom), (left, right)).
    groups : int
        Split the channels into this many groups (dividing C and K), group
        g's K / groups filters seeing only its C / groups channels, as in
        PyTorch; groups == C is a depthwise convolution.
    out : ndarray, shape (N, K, Ho, Wo), optional
        Writeable C-contiguous array of the dtype of x to store the result
        in; it must not overlap the inputs.

    Returns
    -------
    y : ndarray, shape (N, K, Ho, Wo)
        ``Ho = (H + 2*ph - dh*(R - 1) - 1) // sh + 1`` (``H + top + bottom``
        for asymmetric padding), likewise ``Wo``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.ones((2, 3, 8, 8), dtype=np.float32)      # (N, C, H, W)
    >>> w = np.ones((4, 3, 3, 3), dtype=np.float32)      # (K, C, R, S)
    >>> y = F.conv2d(x, w, padding=1)
    >>> y.shape
    (2, 4, 8, 8)
    >>> float(y[0, 0, 4, 4]), float(y[0, 0, 0, 0])       # 27 taps inside, 12 in a corner
    (27.0, 12.0)
    >>> F.conv2d(x, w, stride=2).shape
    (2, 4, 3, 3)
    """
    # Remembered calls are plain (groups=1) ones: anything else is checked below.
    if _kernels is _DISPATCHED and type(groups) is int and groups == 1:
        y = _CONV2D.run((x, w, b), (stride, padding, dilation), None if out is None else (out,))
        if y is not None:
            return y
    func = "conv2d"
    given = _repeat.plain(x, w, b) and _kernels is _DISPATCHED
    x, w = _arrays(func, x, w)
    padding, widths = _one_sided(func, x, padding)
    if type(groups) is not int or groups != 1:
        groups = grouped.check_groups(func, groups)
    taps = None
    if widths is not None:
        given = False
        # A one-sided padding that is mostly padding is not padded for real.
        if groups == 1:
            taps = conv_taps.plan(func, x, w, stride, _all_sides(padding, widths), dilation)
        if taps is None:
            x = _padded(func, x, widths)  # (the padded copy is this call's own)
    if b is not None:
        b = _validation.float_array(func, "b", b, 1, "(K,)")
        if b.dtype != x.dtype:
            _validation.same_dtype(func, "x", x, b=b)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"{func}: b must have shape ({w.shape[0]},) (one value per filter "
                             f"of w, shape {w.shape}), got shape {b.shape}")
    if groups != 1:
        return grouped.conv2d(x, w, b, stride, padding, dilation, groups, out)
    plan = taps if taps is not None else _plan(func, x, w, stride, padding, dilation)
    if plan.forward_lanes == "winograd" and not (_finite(w) and _finite(x)):
        plan = _plan(func, x, w, stride, padding, dilation, reformulate=False)
    if out is None:
        y = np.empty(plan.output_shape, x.dtype)
    else:
        y = _validation.out_array(func, "out", out, plan.output_shape, x.dtype, inputs=(x, w, b))
    if type(plan) is conv_taps.TapPlan:
        return conv_taps.conv2d(plan, x, w, b, y)
    if x.shape[0]:
        forward = _by_dtype[x.dtype][0]
        forward(plan, _validation.contiguous(x), _validation.contiguous(w),
                None if b is None else _validation.contiguous(b), y,
                _workspace(plan.forward_workspace, x.dtype))
        if given:
            _remember_forward(x, w, b, stride, padding, dilation)
    return y


def _remember_forward(x, w, b, stride, padding, dilation):
    plan, safe = step_plans(x.shape, w.shape, x.dtype, stride, padding, dilation)
    if plan is None:
        return
    both = (plan,) if safe is None else (plan, safe)
    _repeat.remember(
        _CONV2D, "conv2d", x.dtype, ((0, x), (1, w), _repeat.slot(2, b)),
        ((3, plan.output_shape, x.dtype, _repeat.ARRAY),), (x.size, w.size),
        plans=[p.step_plan() for p in both], keep=both,
        workspace=(max(p.forward_workspace for p in both), x.dtype), work_slot=4,
        extra=(stride, padding, dilation))


def _remember_backward(gy, x, w, stride, padding, dilation, need_input_grad):
    plan, safe = step_plans(x.shape, w.shape, x.dtype, stride, padding, dilation)
    if plan is None:
        return
    both = (plan,) if safe is None else (plan, safe)
    gx = (3, x.shape, x.dtype, _repeat.ARRAY) if need_input_grad else _repeat.NONE
    _repeat.remember(
        _CONV2D_BACKWARD, "conv2d_backward", x.dtype, ((0, gy), (1, x), (2, w)),
        (gx, (4, w.shape, x.dtype, _repeat.ARRAY), (5, (w.shape[0],), x.dtype, _repeat.ARRAY)),
        (gy.size, w.size), plans=[p.step_plan() for p in both], keep=both,
        workspace=(max(max(p.backward_data_workspace, p.backward_filter_workspace)
                       for p in both), x.dtype), work_slot=6,
        extra=(stride, padding, dilation, need_input_grad))


def conv2d_backward(gy: FloatArray, x: FloatArray, w: FloatArray, stride: IntPair = 1,
                    padding: Padding = 0, dilation: IntPair = 1, need_input_grad: bool = True,
                    *, groups: int = 1,
                    out: tuple[FloatArray | None, FloatArray, FloatArray] | None = None,
                    ) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """conv2d_backward(gy, x, w, stride=1, padding=0, dilation=1, need_input_grad=True, *,
    groups=1, out=None)

    Gradients of ``sum(gy * conv2d(x, w, b, stride, padding, dilation))``.

    Parameters
    ----------
    gy : ndarray of float32 or float64, shape (N, K, Ho, Wo)
        Gradient of the loss with respect to the output of conv2d.
    x : ndarray, shape (N, C, H, W), same dtype as gy
        The input conv2d saw.
    w : ndarray, shape (K, C / groups, R, S), same dtype as gy
        The filters conv2d used.
    stride, padding, dilation, groups
        As given to conv2d.
    need_input_grad : bool
        False skips the input gradient (for a first layer) and returns None
        in its place.
    out : tuple (gx, gw, gb), optional
        Buffers for the results (writeable, C-contiguous, of the right shape
        and dtype, not overlapping the inputs or each other); None entries
        are allocated.  ``gx`` must be None when need_input_grad is False.

    Returns
    -------
    gx : ndarray, shape (N, C, H, W), or None
        Gradient with respect to x.
    gw : ndarray, shape (K, C / groups, R, S)
        Gradient with respect to w, summed over the batch.
    gb : ndarray, shape (K,)
        Gradient with respect to the bias: gy summed over N, Ho and Wo.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    >>> w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    >>> y = F.conv2d(x, w, padding=1)
    >>> gx, gw, gb = F.conv2d_backward(np.ones_like(y), x, w, padding=1)
    >>> gx.shape, gw.shape, gb.shape
    ((2, 3, 8, 8), (4, 3, 3, 3), (4,))
    >>> float(gb[0])                                     # gy summed over N, H, W
    128.0
    """
    if (out is None or type(out) is tuple) and _kernels is _DISPATCHED and (
            type(groups) is int and groups == 1):
        result = _CONV2D_BACKWARD.run((gy, x, w), (stride, padding, dilation, need_input_grad),
                                      out)
        if result is not None:
            return result
    func = "conv2d_backward"
    given = _repeat.plain(gy, x, w) and _kernels is _DISPATCHED
    gy = _validation.float_array(func, "gy", gy, 4, _GY_LAYOUT)
    x, w = _arrays(func, x, w)
    if gy.dtype != x.dtype:
        _validation.same_dtype(func, "x", x, gy=gy)
    need_input_grad = _validation.boolean(func, "need_input_grad", need_input_grad)
    padding, widths = _one_sided(func, x, padding)
    if widths is not None:
        return _backward_one_sided(gy, x, w, stride, padding, dilation, need_input_grad, out,
                                   widths, groups)
    if type(groups) is not int or groups != 1:
        groups = grouped.check_groups(func, groups)
        if groups != 1:
            return grouped.conv2d_backward(gy, x, w, stride, padding, dilation,
                                           bool(need_input_grad), groups, out)
    plan = _plan(func, x, w, stride, padding, dilation)
    if gy.shape != plan.output_shape:
        raise ValueError(f"{func}: gy must have the shape of conv2d's output "
                         f"{plan.output_shape} {_GY_LAYOUT}, got shape {gy.shape}")
    if need_input_grad and plan.data_kernel != "col2im" and not (
            _finite(w) and (plan.data_kernel != "winograd" or _finite(gy))):
        plan = _plan(func, x, w, stride, padding, dilation, reformulate=False)
    gx, gw, gb = _validation.gradient_out_buffers(func, out, need_input_grad, gy, x, w)
    if type(plan) is conv_taps.TapPlan:
        return conv_taps.conv2d_backward(plan, gy, x, w, gx, gw, gb)
    if x.shape[0] == 0:
        gw.fill(0)
        gb.fill(0)
        return gx, gw, gb
    _, backward_data, backward_filter = _by_dtype[x.dtype]
    gy = _validation.contiguous(gy)
    if need_input_grad:
        backward_data(plan, gy, _validation.contiguous(w), gx,
                      _workspace(plan.backward_data_workspace, x.dtype))
    backward_filter(plan, gy, _validation.contiguous(x), gw, gb,
                    _workspace(plan.backward_filter_workspace, x.dtype))
    if given:
        _remember_backward(gy, x, w, stride, padding, dilation, need_input_grad)
    return gx, gw, gb


def _all_sides(padding, widths):
    """((top, bottom), (left, right)) of the common ``padding`` plus the one-sided ``widths``."""
    ph, pw = padding
    (_, _), (_, _), (top, bottom), (left, right) = widths
    return (ph + top, ph + bottom), (pw + left, pw + right)


def _backward_one_sided(gy, x, w, stride, padding, dilation, need_input_grad, out, widths,
                        groups=1):
    """conv2d_backward on the zero-padded copy of ``x``, gx cropped to ``x``'s shape
    (or tap by tap on ``x`` itself when the padded copy would be mostly padding)."""
    func = "conv2d_backward"
    taps = None
    if type(groups) is int and groups == 1:  # grouped: the padded copy, per group
        taps = conv_taps.plan(func, x, w, stride, _all_sides(padding, widths), dilation)
    if taps is not None:
        if gy.shape != taps.output_shape:
            raise ValueError(f"{func}: gy must have the shape of conv2d's output "
                             f"{taps.output_shape} {_GY_LAYOUT}, got shape {gy.shape}")
        gx, gw, gb = _validation.gradient_out_buffers(func, out, need_input_grad, gy, x, w)
        return conv_taps.conv2d_backward(taps, gy, x, w, gx, gw, gb)
    gx_out = gw_out = gb_out = None
    if out is not None:
        gx_out, gw_out, gb_out = _validation.out_tuple(func, out, 3)
    # The buffers are checked against the unpadded call's shapes first.
    _validation.gradient_out_buffers(func, (None, gw_out, gb_out), False, gy, x, w)
    if gx_out is not None:
        if not need_input_grad:
            raise ValueError(f"{func}: out[0] (gx) must be None when need_input_grad is False")
        _validation.out_array(func, "out[0] (gx)", gx_out, x.shape, x.dtype, (gy, x, w, gw_out,
                                                                           gb_out))
    padded = _padded(func, x, widths)
    gx, gw, gb = conv2d_backward(gy, padded, w, stride, padding, dilation, need_input_grad,
                                 groups=groups, out=(None, gw_out, gb_out))
    if gx is not None:
        (_, _), (_, _), (top, _), (left, _) = widths
        crop = gx[:, :, top:top + x.shape[2], left:left + x.shape[3]]
        if gx_out is None:
            gx = np.ascontiguousarray(crop)
        else:
            gx_out[...] = crop
            gx = gx_out
    return gx, gw, gb

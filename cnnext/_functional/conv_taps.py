"""Convolutions whose padded input would be mostly padding, computed tap by tap.

The compiled kernels stage a zero-padded copy of each image that covers the
reach of every window: ``(Ho-1)*sh + (R-1)*dh + 1`` rows by the like
columns.  A huge dilation or padding on a small image (dilation and padding
2**20 on 4x4: a 4x4 output whose windows read one pixel each) makes that copy
terabytes while the answer takes a few bytes.  Such geometries get a
``TapPlan`` instead of a kernel plan, and are computed here from the
definition, one filter tap ``(r, s)`` at a time: the pixels a tap reads (a
strided slice of ``x``, found with Python integers so no offset overflows)
times that tap's weights, added into the output positions that read them.

Nothing is dropped from the direct sum's IEEE semantics: a product with the
padding is zero unless its other factor is NaN or infinite, and then it is
NaN, so output planes (forward) or gradient taps (backward) that would meet
such a product are set to NaN, as the kernels and the reference give.
"""

import numpy as np

from .. import _validation

# A padded copy of one image up to this many elements is always made (the
# kernels' way); above it, only when it is not mostly padding.
PADDED_COPY_LIMIT = 1 << 22


class TapPlan:
    """TapPlan(output_shape, stride, padding, dilation)

    The plan of a convolution computed tap by tap (see the module docstring);
    it has the attributes of a kernel plan that callers consult.  ``padding``
    is ((top, bottom), (left, right)).
    """

    forward_lanes = data_kernel = filter_kernel = "taps"
    forward_workspace = backward_data_workspace = backward_filter_workspace = 0

    def __init__(self, output_shape, stride, padding, dilation):
        self.output_shape = output_shape
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def __repr__(self):
        return (f"TapPlan(output={self.output_shape}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation})")


def plan(func, x, w, stride, padding, dilation):
    """A TapPlan when the padded copy of one image would be mostly padding, else None.

    "Mostly": over PADDED_COPY_LIMIT elements and over 4 times an image of
    the input plus an image of the output.  ``padding`` is an int, an (h, w)
    pair or ((top, bottom), (left, right)).  Validates the hyper-parameters
    (as the kernel plan does) and the output's byte count.
    """
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    if min(c, h, wd, k, r, s) < 1:
        return None  # refused with the kernel plan's messages
    stride = _validation.pair(func, "stride", stride, 1)
    pads = _validation.padding_pairs(func, "padding", padding)
    dilation = _validation.pair(func, "dilation", dilation, 1)
    ho, wo = _validation.conv_output_hw(func, h, wd, (r, s), stride, pads, dilation)
    padded = c * ((ho - 1) * stride[0] + (r - 1) * dilation[0] + 1) * (
        (wo - 1) * stride[1] + (s - 1) * dilation[1] + 64)
    if padded <= max(PADDED_COPY_LIMIT, 4 * (c * h * wd + k * ho * wo)):
        return None
    _validation.check_nbytes(func, "the output", (n, k, ho, wo), x.dtype)
    return TapPlan((n, k, ho, wo), stride, pads, dilation)


def _reach(tap, size, out, stride, padding, dilation):
    """(first output, count, first input pixel) of the outputs whose tap ``tap``
    reads one of the ``size`` input pixels along an axis (count 0: none does).

    Output i reads pixel ``offset + i * stride``; Python integers, exact.
    """
    offset = tap * dilation - padding
    first = 0 if offset >= 0 else (stride - 1 - offset) // stride
    last = min(out - 1, (size - 1 - offset) // stride)
    count = max(0, last - first + 1)
    return first, count, offset + first * stride


def _outside(shape, out):
    """The (Ho, Wo) mask of the outputs a tap reads padding for (``out``: those it does not)."""
    mask = np.ones(shape, bool)
    if out is not None:
        mask[out[0], out[1]] = False
    return mask


def _taps(plan, x_shape, w_shape):
    """Yield (r, s, output slices, input slices or None) for every filter tap."""
    _, _, h, wd = x_shape
    _, _, kr, ks = w_shape
    _, _, ho, wo = plan.output_shape
    (sh, sw), (dh, dw) = plan.stride, plan.dilation
    (ph, _), (pw, _) = plan.padding  # only where the windows start matters here
    for r in range(kr):
        i0, ni, h0 = _reach(r, h, ho, sh, ph, dh)
        for s in range(ks):
            j0, nj, w0 = _reach(s, wd, wo, sw, pw, dw)
            full = ni == ho and nj == wo
            if ni == 0 or nj == 0:
                yield r, s, None, None, full
                continue
            out = (slice(i0, i0 + ni), slice(j0, j0 + nj))
            src = (slice(h0, h0 + (ni - 1) * sh + 1, sh), slice(w0, w0 + (nj - 1) * sw + 1, sw))
            yield r, s, out, src, full


def _not_finite(array, axis):
    return ~np.isfinite(array).all(axis=axis)


def conv2d(plan, x, w, b, y):
    """y = conv2d(x, w, b) for a TapPlan, written into ``y`` (N, K, Ho, Wo)."""
    y[...] = 0 if b is None else b[None, :, None, None]
    poisoned = None  # (K, Ho, Wo): outputs meeting NaN/inf weights times padding
    for r, s, out, src, full in _taps(plan, x.shape, w.shape):
        tap = w[:, :, r, s]
        if not full:
            bad = _not_finite(tap, 1)
            if bad.any():
                if poisoned is None:
                    poisoned = np.zeros(y.shape[1:], bool)
                poisoned |= bad[:, None, None] & _outside(y.shape[2:], out)[None]
        if out is not None:
            # (K, C) . (N, C, ni, nj) -> (K, N, ni, nj)
            y[:, :, out[0], out[1]] += np.tensordot(tap, x[:, :, src[0], src[1]],
                                                    axes=([1], [1])).transpose(1, 0, 2, 3)
    if poisoned is not None:
        y[:, poisoned] = np.nan
    return y


def conv2d_backward(plan, gy, x, w, gx, gw, gb):
    """Fill gx (or None), gw and gb, the gradients of conv2d for a TapPlan."""
    if gx is not None:
        gx[...] = 0
    np.sum(gy, axis=(0, 2, 3), out=gb)
    # Filters whose gy holds NaN/inf somewhere: their taps that read padding
    # there get NaN (gy * 0); checked per tap below only when needed.
    gy_bad = _not_finite(gy, (0, 2, 3))
    for r, s, out, src, full in _taps(plan, x.shape, w.shape):
        tap = np.zeros(gw.shape[:2], gw.dtype)
        if out is not None:
            gy_tap = gy[:, :, out[0], out[1]]
            x_tap = x[:, :, src[0], src[1]]
            # sum over n, i, j of gy (N, K, ni, nj) * x (N, C, ni, nj) -> (K, C)
            tap += np.tensordot(gy_tap, x_tap, axes=([0, 2, 3], [0, 2, 3]))
            if gx is not None:
                # (N, K, ni, nj) . (K, C) -> (N, ni, nj, C)
                gx[:, :, src[0], src[1]] += np.tensordot(
                    gy_tap, w[:, :, r, s], axes=([1], [0])).transpose(0, 3, 1, 2)
        if not full and gy_bad.any():
            bad = _not_finite(gy[:, :, _outside(gy.shape[2:], out)], (0, 2))
            tap[bad] = np.nan
        gw[:, :, r, s] = tap
    return gx, gw, gb

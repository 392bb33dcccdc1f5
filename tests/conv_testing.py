"""Shared helpers of the convolution tests: random problems and error bounds.

Results are compared with the float64 oracle ``cnnext._reference`` through a
forward error bound rather than a fixed tolerance: a sum of ``terms``
products computed in any order, with or without fused multiply-adds, is
within ``terms * eps * sum(|products|)`` of the exact value.  The bound
needs the oracle run on absolute values, and it holds for any summation
order, so a test fails only on a real error (a wrong tap, a missed term).
"""

import numpy as np

from cnnext import _reference as reference
from cnnext import _tuning

# Winograd for the forward pass and the input gradient: the heuristics keep
# it for layers larger than tests can afford, so tests ask for it.
WINOGRAD = {"forward": "winograd", "data": "conv", "data_forward": "winograd"}


def winograd_on(*layers):
    """A context in which convolutions of the ``layers`` ((C, H, W), (K, C, R, S)),
    any batch and geometry, take Winograd (forward and input gradient) where
    their geometry allows it; with no layers, every convolution."""
    wanted = {(tuple(chw), tuple(w)) for chw, w in layers}

    def where(args):
        _, c, h, w, k, r, s = args[:7]
        return not wanted or ((c, h, w), (k, c, r, s)) in wanted

    return _tuning.forced(WINOGRAD, where)


def problem(rng, n, c, h, w, k, r, s, dtype, bias=True):
    """Random x (N, C, H, W), w (K, C, R, S) and b (K,) (or None) of ``dtype``."""
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weights = rng.standard_normal((k, c, r, s)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    return x, weights, b


def assert_within_bound(actual, expected, magnitude, terms, dtype, what):
    """|actual - expected| <= 2 * terms * eps * magnitude elementwise (+ a tiny floor)."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == np.dtype(dtype), (what, actual.dtype)
    eps = np.finfo(dtype).eps
    bound = 2.0 * max(terms, 1) * eps * magnitude + np.finfo(dtype).tiny
    error = np.abs(actual.astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else None
    assert np.all(error <= bound), (
        f"{what}: error {error[worst]:.3g} above bound {bound[worst]:.3g} at {worst} "
        f"(got {actual[worst]!r}, expected {expected[worst]!r})")


def check_forward(y, x, w, b, stride, padding, dilation):
    expected = reference.conv2d(x, w, b, stride, padding, dilation)
    magnitude = reference.conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b),
                                 stride, padding, dilation)
    terms = w.shape[1] * w.shape[2] * w.shape[3] + 1
    assert_within_bound(y, expected, magnitude, terms, x.dtype, "y")


def check_backward(grads, gy, x, w, stride, padding, dilation, need_input_grad=True):
    gx, gw, gb = grads
    expected = reference.conv2d_backward(gy, x, w, stride, padding, dilation, need_input_grad)
    magnitude = reference.conv2d_backward(np.abs(gy), np.abs(x), np.abs(w), stride, padding,
                                          dilation, need_input_grad)
    n, k, ho, wo = gy.shape
    r, s = w.shape[2:]
    if need_input_grad:
        assert_within_bound(gx, expected[0], magnitude[0], k * r * s, x.dtype, "gx")
    else:
        assert gx is None
    assert_within_bound(gw, expected[1], magnitude[1], n * ho * wo, x.dtype, "gw")
    assert_within_bound(gb, expected[2], magnitude[2], n * ho * wo, x.dtype, "gb")

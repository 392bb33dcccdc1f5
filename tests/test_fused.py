"""conv2d_max_pool2d and its backward: the reference, the unfused composite, PyTorch.

The fused kernels sum each convolution output exactly as conv2d's direct
kernels do, so wherever conv2d sums directly the fused results equal the
composite conv2d -> relu -> max_pool2d (and its backward) bitwise: values,
indices, the input gradient, and the weight and bias gradients of layers
with few filters (their weight gradient runs over the same chunks of
images); with many filters gw and gb are summed per block of images and are
held to the same error bound as conv2d_backward.  Against the float64
reference the values obey conv2d's error bound, and every index points at
an element within that bound of its window's maximum (equal to the
reference's index except where rounding moves a tie).
"""

import zlib

import numpy as np
import pytest
from conv_testing import assert_within_bound, check_backward
from pool_testing import assert_releases_the_gil, layouts, random_array

from cnnext import _dispatch
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext._functional import conv as conv_module
from cnnext._functional import fused as fused_module

DTYPES = [np.float32, np.float64]

# (N, C, H, W, K, R, S, stride, padding, dilation, pool_size, pool_stride)
GRID = [
    (3, 1, 28, 28, 8, 3, 3, 1, 0, 1, 2, None),             # the notebook's layer and pool
    (2, 1, 28, 28, 6, 5, 5, 1, 2, 1, 2, None),             # LeNet-5's first pair
    (2, 6, 14, 14, 16, 5, 5, 1, 0, 1, 2, None),            # LeNet-5's second: filters as lanes
    (2, 2, 17, 19, 5, 3, 3, 1, 1, 1, 3, 2),                # overlapping 3x3 windows, stride 2
    (1, 3, 10, 12, 4, 3, 3, 1, 0, 1, 2, 1),                # pool stride 1
    (2, 2, 12, 20, 7, 3, 2, 1, (1, 0), 1, (2, 3), (1, 2)),  # pairs, overlapping in height
    (2, 3, 21, 23, 9, 3, 3, 2, 1, 1, 2, None),             # conv stride 2: four phases
    (1, 2, 20, 30, 5, 3, 3, 1, 2, 2, 2, None),             # dilation
    (2, 2, 9, 11, 3, 3, 3, 1, 1, 1, 1, None),              # 1x1 pooling
    (2, 4, 34, 40, 40, 3, 3, 1, 1, 1, 2, None),            # many filters, long rows
    (2, 3, 8, 8, 40, 3, 3, 1, 1, 1, 2, None),              # many filters, short rows
    (2, 2, 11, 12, 5, 2, 2, 1, 0, 1, 3, None),             # windows leave rows and columns out
    (1, 2, 5, 5, 4, 3, 3, 1, 0, 1, 3, None),               # one pooled output
    (1, 1, 70, 70, 2, 3, 3, 1, 0, 1, 2, None),             # rows of several vectors
    (2, 1, 12, 14, 3, 3, 3, 1, 0, 1, 2, None),             # rows shorter than a vector
    (1, 2, 16, 17, 4, 3, 3, 1, 0, 1, 2, 3),                # windows with gaps between them
    (1, 1, 20, 20, 3, 3, 3, 1, 1, 1, 5, 2),                # 25 elements: several passes
    (2, 16, 10, 10, 16, 3, 3, 1, 1, 1, 2, None),           # conv2d would take Winograd
    (2, 2, 9, 13, 1, 3, 3, (2, 1), (0, 1), 1, (1, 2), (2, 1)),  # one filter, strides apart
]


def grid_id(case):
    return "N{}C{}H{}W{}K{}R{}S{}-s{}p{}d{}-q{}s{}".format(*case).replace(" ", "")


def split(case):
    n, c, h, w, k, r, s, stride, padding, dilation, pool, pool_stride = case
    geometry = {"stride": stride, "padding": padding, "dilation": dilation}
    pooling = {"pool_size": pool, "pool_stride": pool_stride}
    return (n, c, h, w, k, r, s), geometry, pooling


def make(case, dtype, rng, bias=True):
    (n, c, h, w, k, r, s), _, _ = split(case)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weights = rng.standard_normal((k, c, r, s)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    return x, weights, b


def composite(x, w, b, geometry, pooling, relu):
    """The unfused cnnext: conv2d -> relu -> max_pool2d, and the conv output."""
    conv = F.conv2d(x, w, b, **geometry)
    activated = F.relu(conv) if relu else conv
    y, idx = F.max_pool2d(activated, pooling["pool_size"], pooling["pool_stride"],
                          return_indices=True)
    return y, idx, conv


def composite_backward(gy, idx, x, w, conv, geometry, relu, need_input_grad=True):
    dense = F.max_pool2d_backward(gy, idx, conv.shape)
    if relu:
        dense = F.relu_backward(dense, conv)
    return F.conv2d_backward(dense, x, w, **geometry, need_input_grad=need_input_grad)


def conv_is_direct(x, w, geometry):
    return conv_module._plan("test", x, w, geometry["stride"], geometry["padding"],
                             geometry["dilation"]).forward_lanes != "winograd"


def few_filters(x, w, geometry):
    """Whether the weight gradient takes the few-filter path (summed in
    conv2d_backward's own order by the fused backward)."""
    return conv_module._plan("test", x, w, geometry["stride"], geometry["padding"],
                             geometry["dilation"]).filter_kernel == "dot"


def check_against_reference(y, idx, x, w, b, geometry, pooling, relu):
    """Values within conv2d's bound of the reference; each index in its
    window, at an element within that bound of the window's maximum."""
    conv = reference.conv2d(x, w, b, **geometry)
    magnitude = reference.conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b),
                                 **geometry)
    if relu:
        conv = reference.relu(conv)
    pool, pool_stride = pooling["pool_size"], pooling["pool_stride"]
    expected, expected_idx = reference.max_pool2d(conv, pool, pool_stride, return_indices=True)
    scale = reference.max_pool2d(magnitude, pool, pool_stride)
    terms = w.shape[1] * w.shape[2] * w.shape[3] + 1
    assert_within_bound(y, expected, scale, terms, x.dtype, "y")
    assert idx.dtype == np.int64 and idx.shape == y.shape
    planes = conv.reshape(conv.shape[0], conv.shape[1], -1)
    picked = np.take_along_axis(planes, idx.reshape(*idx.shape[:2], -1), axis=2)
    bound = 4.0 * terms * np.finfo(x.dtype).eps * scale + np.finfo(x.dtype).tiny
    with np.errstate(invalid="ignore"):
        close = np.abs(picked.reshape(y.shape) - expected) <= bound
    assert np.all(close | (idx == expected_idx)), "an index points below its window's maximum"
    # In its window: the row and column of the plane lie in the window's span.
    kh, kw = reference.pair(pool)
    qh, qw = reference.pair(pool if pool_stride is None else pool_stride)
    wo = conv.shape[3]
    rows, cols = idx // wo, idx % wo
    i = np.arange(y.shape[2])[:, None]
    j = np.arange(y.shape[3])[None, :]
    assert np.all((rows >= i * qh) & (rows < i * qh + kh) & (cols >= j * qw)
                  & (cols < j * qw + kw))
    return expected_idx


def run_and_check(case, dtype, relu, rng, bias=True):
    _, geometry, pooling = split(case)
    x, w, b = make(case, dtype, rng, bias)
    inputs = [a.copy() for a in (x, w, b) if a is not None]
    y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, relu=relu, **pooling)
    check_against_reference(y, idx, x, w, b, geometry, pooling, relu)
    cy, cidx, conv = composite(x, w, b, geometry, pooling, relu)
    direct = conv_is_direct(x, w, geometry)
    if direct:
        np.testing.assert_array_equal(y, cy)
        np.testing.assert_array_equal(idx, cidx)

    gy = rng.standard_normal(y.shape).astype(dtype)
    grads = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, y=y, relu=relu, **pooling)
    masked = np.where(y <= 0, 0, gy) if relu else gy
    dense = reference.max_pool2d_backward(masked, idx, conv.shape)
    check_backward(grads, dense, x, w, geometry["stride"], geometry["padding"],
                   geometry["dilation"])
    if direct:
        unfused = composite_backward(gy, idx, x, w, conv, geometry, relu)
        np.testing.assert_array_equal(grads[0], unfused[0])
        if few_filters(x, w, geometry):
            np.testing.assert_array_equal(grads[1], unfused[1])
            np.testing.assert_array_equal(grads[2], unfused[2])
    # Without the input gradient (pooled positions as lanes: summed by window element).
    only_weights = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, y=y, relu=relu,
                                                **pooling, need_input_grad=False)
    check_backward(only_weights, dense, x, w, geometry["stride"], geometry["padding"],
                   geometry["dilation"], need_input_grad=False)

    # Outputs written in full: NaN-filled buffers give the same results.
    buffers = (np.full_like(y, np.nan), np.full_like(idx, -1))
    again = F.conv2d_max_pool2d(x, w, b, **geometry, relu=relu, **pooling, out=buffers)
    assert again[0] is buffers[0] and again[1] is buffers[1]
    np.testing.assert_array_equal(again[0], y)
    np.testing.assert_array_equal(again[1], idx)
    buffers = tuple(np.full_like(a, np.nan) for a in (x, w, w[:, 0, 0, 0]))
    again = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, y=y, relu=relu, **pooling,
                                         out=buffers)
    for got, want, buffer in zip(again, grads, buffers, strict=True):
        assert got is buffer
        np.testing.assert_array_equal(got, want)
    for before, after in zip(inputs, [a for a in (x, w, b) if a is not None], strict=True):
        np.testing.assert_array_equal(before, after)
    return y, idx, grads


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GRID, ids=grid_id)
def test_grid_against_reference_and_the_composite(case, dtype, relu):
    seed = zlib.crc32(f"{grid_id(case)}{relu}".encode())
    run_and_check(case, dtype, relu, np.random.default_rng(seed), bias=seed % 3 != 0)


def lanes_used(dtype):
    used = set()
    for case in GRID:
        (n, c, h, w, k, r, s), geometry, pooling = split(case)
        entry = fused_module._entry("test", np.empty((n, c, h, w), dtype),
                                    np.empty((k, c, r, s), dtype), **geometry, **pooling)
        used.add(entry.fused.lanes)
    return used


@pytest.mark.parametrize("dtype", DTYPES)
def test_grid_reaches_both_lane_layouts(dtype):
    assert lanes_used(dtype) == {"positions", "filters"}


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("pooling", [{"pool_size": 2}, {"pool_size": 3, "pool_stride": 2}])
def test_gradients_match_central_differences(pooling, relu):
    rng = np.random.default_rng(3)
    geometry = {"stride": 1, "padding": (1, 0), "dilation": 1}
    x = rng.standard_normal((2, 2, 7, 8))
    w = rng.standard_normal((3, 2, 3, 2))
    b = rng.standard_normal(3)
    y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, relu=relu, **pooling)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, y=y, relu=relu,
                                              **pooling)

    def loss(xv, wv, bv):
        return float(np.sum(gy * F.conv2d_max_pool2d(xv, wv, bv, **geometry, relu=relu,
                                                     **pooling)[0]))

    step = 1e-6
    for array, grad, slot in ((x, gx, 0), (w, gw, 1), (b, gb, 2)):
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            args = [x.copy(), w.copy(), b.copy()]
            args[slot][index] += step
            up = loss(*args)
            args[slot][index] -= 2 * step
            numeric[index] = (up - loss(*args)) / (2 * step)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("kind", ["ties", "special"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [GRID[0], GRID[2], GRID[3], GRID[5], GRID[16]], ids=grid_id)
def test_ties_nan_and_inf_as_the_composite(case, dtype, kind, relu):
    # Integer data: many exact ties (to the first maximum); "special" adds NaN
    # and +-inf (a NaN is its window's maximum).  Bitwise the composite's.
    _, geometry, pooling = split(case)
    (n, c, h, wd, k, r, s), _, _ = split(case)
    seed = zlib.crc32(f"{grid_id(case)}{kind}{relu}".encode())
    x = random_array(seed, (n, c, h, wd), dtype, "ties")
    if kind == "special":
        # A few NaN and +-inf: each reaches every output whose window reads it.
        spots = np.random.default_rng(seed).integers(0, x.size, 6)
        x.flat[spots] = [np.nan, np.inf, -np.inf, np.nan, np.inf, -np.inf]
    w = random_array(seed + 1, (k, c, r, s), dtype, "ties")
    b = random_array(seed + 2, (k,), dtype, "ties")
    y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, relu=relu, **pooling)
    cy, cidx, conv = composite(x, w, b, geometry, pooling, relu)
    np.testing.assert_array_equal(y, cy)
    np.testing.assert_array_equal(idx, cidx)
    if kind == "ties":
        expected = reference.conv2d_max_pool2d(x, w, b, **geometry, relu=relu, **pooling)
        np.testing.assert_array_equal(idx, expected[1])
        np.testing.assert_array_equal(y, expected[0])
    else:
        assert np.isnan(y).any() and np.isinf(y).any() and np.isfinite(y).any()
    gy = random_array(seed + 3, y.shape, dtype, "ties")
    if kind == "special":
        gy.flat[[0, gy.size // 2]] = [np.nan, np.inf]
    grads = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, y=y, relu=relu, **pooling)
    unfused = composite_backward(gy, idx, x, w, conv, geometry, relu)
    np.testing.assert_array_equal(grads[0], unfused[0])
    if few_filters(x, w, geometry):
        np.testing.assert_array_equal(grads[1], unfused[1])
        np.testing.assert_array_equal(grads[2], unfused[2])
    else:
        for got, want in zip(grads[1:], unfused[1:], strict=True):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    # The weight gradient alone (by window element): the same terms in another
    # order: exact sums of integers, and the same NaN and inf.
    only_weights = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, y=y, relu=relu,
                                                **pooling, need_input_grad=False)
    unfused = composite_backward(gy, idx, x, w, conv, geometry, relu, need_input_grad=False)
    for got, want in zip(only_weights[1:], unfused[1:], strict=True):
        if kind == "ties":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
            np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))


@pytest.mark.parametrize("dtype", DTYPES)
def test_windows_two_rows_high_take_the_sparse_weight_gradient(dtype):
    # The lanes of a vector hold a window row's inputs for every element: two
    # rows of 2 (float64) or 4 (float32) under AVX2.
    for case in GRID:
        (n, c, h, w, k, r, s), geometry, pooling = split(case)
        entry = fused_module._entry("test", np.empty((n, c, h, w), dtype),
                                    np.empty((k, c, r, s), dtype), **geometry, **pooling)
        kh = reference.pair(pooling["pool_size"])[0]
        assert (entry.fused.weight_gradient == "sparse") <= (kh <= 2)
    # Every build's float32 vector has two rows of 2x2 windows' elements.
    notebook = fused_module._entry("test", np.empty((1, 1, 28, 28), dtype),
                                   np.empty((8, 1, 3, 3), dtype), 1, 0, 1, 2, None)
    assert notebook.fused.weight_gradient == "sparse" or dtype == np.float64


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [GRID[0], GRID[1], GRID[5], GRID[10]], ids=grid_id)
def test_nan_and_inf_in_gy_alone_as_the_composite(case, dtype, relu):
    # x finite: the sparse sum (argmax terms alone) has the dense one's NaN and inf.
    _, geometry, pooling = split(case)
    (n, c, h, wd, k, r, s), _, _ = split(case)
    seed = zlib.crc32(f"{grid_id(case)}gy{relu}".encode())
    x = random_array(seed, (n, c, h, wd), dtype, "ties")
    w = random_array(seed + 1, (k, c, r, s), dtype, "ties")
    b = random_array(seed + 2, (k,), dtype, "ties")
    y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, relu=relu, **pooling)
    _, _, conv = composite(x, w, b, geometry, pooling, relu)
    gy = random_array(seed + 3, y.shape, dtype, "ties")
    gy.flat[[0, gy.size // 3, gy.size // 2, gy.size - 1]] = [np.nan, np.inf, -np.inf, np.inf]
    got = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, y=y, relu=relu, **pooling,
                                       need_input_grad=False)
    want = composite_backward(gy, idx, x, w, conv, geometry, relu, need_input_grad=False)
    for a, e in zip(got[1:], want[1:], strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(e))
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(e))
        finite = np.isfinite(e)
        np.testing.assert_array_equal(a[finite], e[finite])


def test_relu_maps_negative_zero_to_zero_and_keeps_nan():
    x = np.array([[[[-1.0, 0.5], [2.0, np.nan]]]], np.float32)
    w = np.ones((2, 1, 1, 1), np.float32)
    w[1] = -0.0
    y, idx = F.conv2d_max_pool2d(x, w, relu=True)
    # Filter 0 sees the NaN (its window's maximum); filter 1's products are
    # all +-0 (and NaN * -0 = NaN).
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 3
    cy, cidx, _ = composite(x, w, None, {"stride": 1, "padding": 0, "dilation": 1},
                            {"pool_size": 2, "pool_stride": None}, True)
    np.testing.assert_array_equal(y.view(np.int32), cy.view(np.int32))
    np.testing.assert_array_equal(idx, cidx)
    y, idx = F.conv2d_max_pool2d(-np.abs(x[..., :1]), w, relu=True, pool_size=(2, 1))
    assert np.all(y.view(np.int32)[:, 0] == 0) and idx[0, 0, 0, 0] == 0


def test_relu_needs_the_pooled_output():
    x, w, _ = make(GRID[0], np.float32, np.random.default_rng(1), bias=False)
    y, idx = F.conv2d_max_pool2d(x, w, relu=True)
    with pytest.raises(ValueError, match="relu=True needs y"):
        F.conv2d_max_pool2d_backward(np.ones_like(y), idx, x, w, relu=True)


def test_skipping_the_input_gradient():
    rng = np.random.default_rng(4)
    x, w, b = make(GRID[1], np.float64, rng)
    y, idx = F.conv2d_max_pool2d(x, w, b, padding=2, relu=True)
    gy = rng.standard_normal(y.shape)
    full = F.conv2d_max_pool2d_backward(gy, idx, x, w, padding=2, y=y, relu=True)
    gx, gw, gb = F.conv2d_max_pool2d_backward(gy, idx, x, w, padding=2, y=y, relu=True,
                                              need_input_grad=False)
    assert gx is None
    # Summed in another order (by window element), to rounding.
    np.testing.assert_allclose(gw, full[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, full[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype):
    x = np.empty((0, 3, 8, 9), dtype)
    w = np.ones((4, 3, 3, 2), dtype)
    y, idx = F.conv2d_max_pool2d(x, w, np.ones(4, dtype), padding=1)
    assert y.shape == idx.shape == (0, 4, 4, 5) and y.dtype == dtype and idx.dtype == np.int64
    poisoned = (np.full((4, 3, 3, 2), np.nan, dtype), np.full(4, np.nan, dtype))
    gx, gw, gb = F.conv2d_max_pool2d_backward(y, idx, x, w, padding=1, out=(None, *poisoned))
    assert gx.shape == x.shape and gw is poisoned[0] and gb is poisoned[1]
    assert not gw.any() and not gb.any()


def test_any_memory_layout_gives_the_contiguous_result():
    rng = np.random.default_rng(5)
    case = GRID[3]
    _, geometry, pooling = split(case)
    x, w, b = make(case, np.float32, rng)
    y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, relu=True, **pooling)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    grads = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, y=y, relu=True, **pooling)
    views = [layouts(a) for a in (x, w, b, gy, idx, y)]
    for name in views[0]:
        xl, wl, bl, gyl, idxl, yl = (v.get(name, a) for v, a in zip(views, (x, w, b, gy, idx, y),
                                                                  strict=True))
        got = F.conv2d_max_pool2d(xl, wl, bl, **geometry, relu=True, **pooling)
        np.testing.assert_array_equal(got[0], y)
        np.testing.assert_array_equal(got[1], idx)
        got = F.conv2d_max_pool2d_backward(gyl, idxl, xl, wl, **geometry, y=yl, relu=True,
                                           **pooling)
        for a, want in zip(got, grads, strict=True):
            np.testing.assert_array_equal(a, want)
    # Other integer dtypes of idx are accepted.
    got = F.conv2d_max_pool2d_backward(gy, idx.astype(np.int32), x, w, **geometry, y=y,
                                       relu=True, **pooling)
    for a, want in zip(got, grads, strict=True):
        np.testing.assert_array_equal(a, want)


@pytest.mark.parametrize("bad", [-1, 26 * 26, 2**40])
def test_indices_outside_the_plane_are_refused_before_anything_is_written(bad):
    rng = np.random.default_rng(6)
    x, w, _ = make(GRID[0], np.float32, rng, bias=False)
    y, idx = F.conv2d_max_pool2d(x, w)
    idx[1, 2, 3, 4] = bad
    buffers = tuple(np.full_like(a, 7.0) for a in (x, w, w[:, 0, 0, 0]))
    for dtype in (np.int64, np.int32) if abs(bad) < 2**31 else (np.int64,):
        with pytest.raises(ValueError, match=r"idx\(1, 2, 3, 4\)"):
            F.conv2d_max_pool2d_backward(np.ones_like(y), idx.astype(dtype), x, w, out=buffers)
        for buffer in buffers:
            assert np.all(buffer == 7.0)


@pytest.mark.parametrize("need_input_grad", [False, True])
def test_indices_outside_their_window_scatter_as_max_pool2d_backward(need_input_grad):
    # Any in-plane index is a valid argument (as for max_pool2d_backward):
    # its gradient goes where it points, whatever the forward would pick.
    rng = np.random.default_rng(14)
    case = GRID[0]
    _, geometry, pooling = split(case)
    x, w, b = make(case, np.float64, rng)
    y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, **pooling)
    idx[0, 1, 2, 3] = 0
    idx[2, 7, 12, 12] = 26 * 26 - 1
    gy = rng.standard_normal(y.shape)
    grads = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, **pooling,
                                         need_input_grad=need_input_grad)
    dense = reference.max_pool2d_backward(gy, idx, (3, 8, 26, 26))
    check_backward(grads, dense, x, w, 1, 0, 1, need_input_grad=need_input_grad)


THREAD_CASES = [GRID[0], GRID[2], GRID[9], GRID[3]]


@pytest.mark.parametrize("case", THREAD_CASES, ids=grid_id)
def test_results_do_not_depend_on_the_thread_count(case, num_threads):
    _, geometry, pooling = split(case)
    bigger = (48, *case[1:])
    x, w, b = make(bigger, np.float32, np.random.default_rng(8))
    y0, _ = F.conv2d_max_pool2d(x, w, b, **geometry, relu=True, **pooling)
    gy = np.random.default_rng(9).standard_normal(y0.shape).astype(np.float32)
    results = []
    for count in (1, 2, 4):
        num_threads(count)
        y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, relu=True, **pooling)
        results.append((y, idx, *F.conv2d_max_pool2d_backward(
            gy, idx, x, w, **geometry, y=y, relu=True, **pooling), *F.conv2d_max_pool2d_backward(
            gy, idx, x, w, **geometry, y=y, relu=True, **pooling, need_input_grad=False)[1:]))
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", list(_dispatch.built_variants("_conv")))
def test_every_instruction_set_build(isa, monkeypatch):
    module = _dispatch.built_variants("_conv")[isa]
    for target in (conv_module, fused_module):
        monkeypatch.setattr(target, "_kernels", module)
        monkeypatch.setattr(target, "_by_dtype", target._specialised(module))
        monkeypatch.setattr(target, "_plans", {})
    # Each build's own backward throughout (none routed to a narrower build).
    monkeypatch.setattr(fused_module, "_narrow", None)
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        assert lanes_used(dtype) == {"positions", "filters"}
        for case in GRID:
            for relu in (False, True):
                run_and_check(case, dtype, relu, rng)


def test_few_filters_take_the_narrow_build_with_equal_results(monkeypatch):
    # Where the AVX-512 build runs, the sparse weight gradient of at most one
    # AVX2 vector of filters runs in the AVX2 build: bitwise the same sums.
    builds = _dispatch.built_variants("_conv")
    wide, narrow = builds.get("x86-64-v4"), builds.get("x86-64-v3")
    loaded = _dispatch.loaded_isas()["_conv"]
    assert (fused_module._narrow is not None) == (loaded == "x86-64-v4" and narrow is not None)
    if wide is None or narrow is None:
        pytest.skip("needs the AVX-512 and AVX2 builds (and a CPU that runs them)")
    # As where the AVX-512 build is loaded, whichever the test process loaded.
    for target in (conv_module, fused_module):
        monkeypatch.setattr(target, "_kernels", wide)
        monkeypatch.setattr(target, "_by_dtype", target._specialised(wide))
        monkeypatch.setattr(target, "_plans", {})
    monkeypatch.setattr(fused_module, "_narrow", narrow)
    monkeypatch.setattr(fused_module, "_narrow_by_dtype", fused_module._specialised(narrow))
    rng = np.random.default_rng(14)
    taken = set()
    for dtype in DTYPES:
        for case in GRID:
            _, geometry, pooling = split(case)
            x, w, b = make(case, dtype, rng)
            k = w.shape[0]
            monkeypatch.setattr(fused_module, "_plans", {})
            entry = fused_module._entry("test", x, w, **geometry, **pooling)
            if entry.fused is None or entry.fused.weight_gradient != "sparse":
                continue
            plan, _ = entry.weights_backward()
            lanes = 32 // np.dtype(dtype).itemsize
            routed = plan is not entry.fused
            assert routed <= (k <= lanes)
            taken.add(routed)
            for relu in (False, True):
                y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, relu=relu, **pooling)
                gy = rng.standard_normal(y.shape).astype(dtype)
                args = (gy, idx, x, w)
                kwargs = {**geometry, **pooling, "y": y, "relu": relu, "need_input_grad": False}
                got = F.conv2d_max_pool2d_backward(*args, **kwargs)
                with monkeypatch.context() as own:
                    own.setattr(fused_module, "_narrow", None)
                    own.setattr(fused_module, "_plans", {})
                    want = F.conv2d_max_pool2d_backward(*args, **kwargs)
                for a, e in zip(got[1:], want[1:], strict=True):
                    np.testing.assert_array_equal(a, e)
    assert taken == {False, True}


TORCH_CASES = [GRID[0], GRID[2], GRID[3], GRID[5]]


@pytest.mark.torch
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=grid_id)
def test_against_torch(case, dtype, relu, torch):
    _, geometry, pooling = split(case)
    rng = np.random.default_rng(12)
    x, w, b = make(case, dtype, rng)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tf = torch.nn.functional
    conv = tf.conv2d(tx, tw, tb, geometry["stride"], geometry["padding"], geometry["dilation"])
    if relu:
        conv = tf.relu(conv)
    pool = pooling["pool_size"]
    ty, tidx = tf.max_pool2d(conv, pool, pooling["pool_stride"] or pool, return_indices=True)
    gy = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(gy))
    y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, relu=relu, **pooling)
    grads = F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry, y=y, relu=relu, **pooling)
    rtol, atol = (1e-4, 1e-4) if dtype == np.float32 else (1e-12, 1e-12)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=rtol, atol=atol)
    # Random data: no window holds two maxima within rounding of each other.
    np.testing.assert_array_equal(idx, tidx.numpy())
    for got, want in zip(grads, (tx.grad, tw.grad, tb.grad), strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=rtol, atol=atol)


def test_gil_is_released_during_the_kernels():
    rng = np.random.default_rng(13)
    case = (16, 4, 40, 40, 16, 3, 3, 1, 1, 1, 2, None)
    _, geometry, pooling = split(case)
    x, w, b = make(case, np.float32, rng)
    y, idx = F.conv2d_max_pool2d(x, w, b, **geometry, **pooling)
    gy = np.ones_like(y)
    assert_releases_the_gil(lambda: F.conv2d_max_pool2d(x, w, b, **geometry, **pooling))
    assert_releases_the_gil(lambda: F.conv2d_max_pool2d_backward(gy, idx, x, w, **geometry,
                                                                 **pooling))

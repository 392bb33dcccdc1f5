"""Grouped and depthwise convolution (conv2d(..., groups=g)): the reference, finite
differences, PyTorch, poisoned outputs, layouts, threads, every build; Conv2D(groups=)."""

import numpy as np
import pytest
from conv_testing import assert_within_bound
from hypothesis import given
from hypothesis import strategies as st
from pool_testing import DTYPES, assert_releases_the_gil, layouts, poisoned_like

from cnnext import _dispatch
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext.layers import Conv2D


def grouped_reference(x, w, b, stride, padding, dilation, groups):
    """The reference conv2d run group by group."""
    cg, kg = x.shape[1] // groups, w.shape[0] // groups
    parts = [reference.conv2d(x[:, g * cg:(g + 1) * cg], w[g * kg:(g + 1) * kg],
                              None if b is None else b[g * kg:(g + 1) * kg], stride, padding,
                              dilation) for g in range(groups)]
    return np.concatenate(parts, axis=1)


def grouped_reference_backward(gy, x, w, stride, padding, dilation, groups):
    cg, kg = x.shape[1] // groups, w.shape[0] // groups
    gx, gw, gb = [], [], []
    for g in range(groups):
        parts = reference.conv2d_backward(gy[:, g * kg:(g + 1) * kg], x[:, g * cg:(g + 1) * cg],
                                          w[g * kg:(g + 1) * kg], stride, padding, dilation)
        gx.append(parts[0])
        gw.append(parts[1])
        gb.append(parts[2])
    return np.concatenate(gx, axis=1), np.concatenate(gw), np.concatenate(gb)


def check(x, w, b, stride, padding, dilation, groups):
    dtype = x.dtype
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    want = grouped_reference(x, w, b, stride, padding, dilation, groups)
    magnitude = grouped_reference(np.abs(x), np.abs(w), None if b is None else np.abs(b),
                                  stride, padding, dilation, groups)
    terms = w.shape[1] * w.shape[2] * w.shape[3] + 1
    assert_within_bound(y, want, magnitude, terms, dtype, "y")
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    gx, gw, gb = F.conv2d_backward(gy, x, w, stride, padding, dilation, groups=groups)
    want = grouped_reference_backward(gy, x, w, stride, padding, dilation, groups)
    magnitude = grouped_reference_backward(np.abs(gy), np.abs(x), np.abs(w), stride, padding,
                                           dilation, groups)
    k, r, s = w.shape[0] // groups, w.shape[2], w.shape[3]
    positions = y.shape[0] * y.shape[2] * y.shape[3]
    assert_within_bound(gx, want[0], magnitude[0], k * r * s, dtype, "gx")
    assert_within_bound(gw, want[1], magnitude[1], positions, dtype, "gw")
    assert_within_bound(gb, want[2], magnitude[2], positions, dtype, "gb")
    return y, (gx, gw, gb)


@st.composite
def grouped_problems(draw, depthwise=False):
    groups = draw(st.integers(1, 4))
    c = groups * (1 if depthwise else draw(st.integers(1, 3)))
    k = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    extent = [d * (kk - 1) + 1 for d, kk in zip(dilation, kernel, strict=True)]
    h = draw(st.integers(max(1, extent[0] - 2 * padding[0]), 12))
    w = draw(st.integers(max(1, extent[1] - 2 * padding[1]), 40))
    n = draw(st.integers(0, 3))
    return (n, c, h, w), (k, c // groups, *kernel), stride, padding, dilation, groups


@given(problem=grouped_problems(depthwise=True), dtype=st.sampled_from(DTYPES),
       bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_depthwise_against_reference(problem, dtype, bias, seed):
    x_shape, w_shape, stride, padding, dilation, groups = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    check(x, w, b, stride, padding, dilation, groups)


@given(problem=grouped_problems(), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**32 - 1))
def test_grouped_against_reference(problem, dtype, seed):
    x_shape, w_shape, stride, padding, dilation, groups = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    check(x, w, rng.standard_normal(w_shape[0]).astype(dtype), stride, padding, dilation,
          groups)


# Depthwise geometries: 3x3 on planes wider than a block, strides, dilation,
# padding beyond the kernel, channel multipliers, 1x1 and large planes.
GRID = [
    ((2, 3, 16, 16), (3, 1, 3, 3), 1, 1, 1),
    ((2, 4, 17, 35), (8, 1, 3, 3), 1, 1, 1),
    ((1, 2, 28, 28), (2, 1, 3, 3), 2, 1, 1),
    ((1, 2, 9, 40), (4, 1, 5, 3), (2, 3), (2, 1), (1, 2)),
    ((2, 3, 6, 7), (3, 1, 2, 2), 1, 3, 1),
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1),
    ((1, 2, 70, 70), (2, 1, 3, 3), 1, 1, 1),
    ((1, 2, 7, 8), (2, 1, 3, 3), 3, 0, 2),
    ((1, 2, 9, 21), (2, 1, 3, 3), 2, 2, 1),
    ((1, 2, 8, 20), (2, 1, 3, 3), 2, 0, 1),
    ((1, 2, 8, 19), (2, 1, 2, 4), 2, (0, 3), 1),
    # Strided input gradients: phases no tap reaches (1x1, stride 2), padding
    # beyond the kernel with two filters a channel, strides 3 and 4 with dilation.
    ((1, 2, 7, 9), (2, 1, 1, 1), 2, 0, 1),
    ((2, 2, 8, 8), (4, 1, 3, 3), 2, 3, 1),
    ((1, 3, 13, 22), (3, 1, 3, 3), (3, 4), (1, 2), (2, 3)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation"), GRID)
def test_depthwise_grid(x_shape, w_shape, stride, padding, dilation, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    check(x, w, rng.standard_normal(w_shape[0]).astype(dtype), stride, padding, dilation,
          x_shape[1])


def test_depthwise_gradients_by_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 5, 6))
    w = rng.standard_normal((4, 1, 3, 2))
    b = rng.standard_normal(4)
    geometry = ((2, 1), 1, (1, 2))
    gy = rng.standard_normal(F.conv2d(x, w, b, *geometry, 2).shape)
    grads = dict(zip("xwb", F.conv2d_backward(gy, x, w, *geometry, groups=2), strict=True))
    base = {"x": x, "w": w, "b": b}
    for name, array in base.items():
        numeric = np.empty_like(array)
        for i in np.ndindex(array.shape):
            values = []
            for sign in (1, -1):
                moved = array.copy()
                moved[i] += sign * 1e-6
                args = {**base, name: moved}
                values.append(np.sum(gy * F.conv2d(args["x"], args["w"], args["b"], *geometry,
                                                   2)))
            numeric[i] = (values[0] - values[1]) / 2e-6
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [2, 6])
def test_against_torch(torch, groups, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6, 11, 12)).astype(dtype)
    w = rng.standard_normal((12, 6 // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    ts = [torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b)]
    yt = torch.nn.functional.conv2d(*ts, stride=(1, 2), padding=1, groups=groups)
    gy = rng.standard_normal(yt.shape).astype(dtype)
    yt.backward(torch.from_numpy(gy))
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-11,
                                                                     "atol": 1e-11}
    np.testing.assert_allclose(F.conv2d(x, w, b, (1, 2), 1, 1, groups), yt.detach().numpy(),
                               **tol)
    for got, want in zip(F.conv2d_backward(gy, x, w, (1, 2), 1, groups=groups),
                         (t.grad.numpy() for t in ts), strict=True):
        np.testing.assert_allclose(got, want, **tol)


# Depthwise geometries against PyTorch: widths that leave vector tails in
# every build (lanes 2 to 16), strides 2 and 3, padding beyond the kernel,
# dilation, a channel multiplier.
TORCH_DEPTHWISE = [
    ((2, 4, 16, 16), (4, 1, 3, 3), 1, 1, 1),
    ((2, 3, 9, 33), (3, 1, 3, 3), 1, 1, 1),
    ((2, 3, 11, 31), (6, 1, 3, 3), 2, 1, 1),
    ((1, 2, 10, 19), (2, 1, 3, 3), (2, 1), 2, 1),
    ((1, 2, 12, 23), (4, 1, 3, 5), (1, 3), (1, 2), (2, 1)),
    ((1, 3, 5, 17), (3, 1, 3, 3), 1, 3, 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation"),
                         TORCH_DEPTHWISE)
def test_depthwise_against_torch(torch, x_shape, w_shape, stride, padding, dilation, dtype):
    rng = np.random.default_rng(10)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    groups = x_shape[1]
    ts = [torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b)]
    yt = torch.nn.functional.conv2d(*ts, stride=stride, padding=padding, dilation=dilation,
                                    groups=groups)
    gy = rng.standard_normal(yt.shape).astype(dtype)
    yt.backward(torch.from_numpy(gy))
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-11,
                                                                     "atol": 1e-11}
    np.testing.assert_allclose(F.conv2d(x, w, b, stride, padding, dilation, groups),
                               yt.detach().numpy(), **tol)
    for got, want, name in zip(F.conv2d_backward(gy, x, w, stride, padding, dilation,
                                                 groups=groups),
                               (t.grad.numpy() for t in ts), ("gx", "gw", "gb"), strict=True):
        np.testing.assert_allclose(got, want, err_msg=name, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [2, 4])
def test_poisoned_outputs_and_layouts(dtype, groups):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 9, 10)).astype(dtype)
    w = rng.standard_normal((8, 4 // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    y = F.conv2d(x, w, b, 1, 1, 1, groups)
    out = poisoned_like(y)
    assert F.conv2d(x, w, b, 1, 1, 1, groups, out=out) is out
    np.testing.assert_array_equal(out, y)
    gy = rng.standard_normal(y.shape).astype(dtype)
    grads = F.conv2d_backward(gy, x, w, 1, 1, groups=groups)
    buffers = tuple(poisoned_like(g) for g in grads)
    F.conv2d_backward(gy, x, w, 1, 1, groups=groups, out=buffers)
    for got, want in zip(buffers, grads, strict=True):
        np.testing.assert_array_equal(got, want)
    for name, variant in layouts(x).items():
        np.testing.assert_array_equal(F.conv2d(variant, w, b, 1, 1, 1, groups), y, err_msg=name)
    for name, variant in layouts(gy).items():
        for got, want in zip(F.conv2d_backward(variant, x, w, 1, 1, groups=groups), grads,
                             strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)
    gx, gw, _gb = F.conv2d_backward(gy, x, w, 1, 1, need_input_grad=False, groups=groups)
    assert gx is None
    np.testing.assert_array_equal(gw, grads[1])


def test_float32_sums_that_overflow_are_taken_again_in_double():
    # a + a overflows float32, a + a - a is a: the exact sums are finite.
    a = np.float32(np.finfo(np.float32).max * 0.75)
    x = np.ones((1, 2, 1, 3), np.float32)
    w = np.array([a, a, -a], np.float32).reshape(1, 1, 1, 3).repeat(2, axis=0)
    np.testing.assert_array_equal(F.conv2d(x, w, None, 1, 0, 1, 2), np.full((1, 2, 1, 1), a))
    # Positions 0 and 16 share an accumulator lane of the weight gradient.
    gy = np.zeros((1, 2, 1, 17), np.float32)
    gy[..., [0, 16]], gy[..., 1] = a, -a
    _, gw, gb = F.conv2d_backward(gy, np.ones((1, 2, 1, 17), np.float32),
                                  np.ones((2, 1, 1, 1), np.float32), groups=2)
    np.testing.assert_array_equal(gw.reshape(-1), [a, a])
    np.testing.assert_array_equal(gb, [a, a])


def test_nan_and_inf_stay_in_the_definition():
    # A window that never reads an inf must not get a NaN from it (0 * inf).
    x = np.ones((1, 2, 7, 7), np.float32)
    x[0, 0, 6, :] = np.inf  # the last row: stride 2 with a 2x2 kernel never reads it
    x[0, 1, 3, 3] = np.nan
    w = np.ones((2, 1, 2, 2), np.float32)
    y = F.conv2d(x, w, None, 2, 0, 1, 2)
    assert np.isfinite(y[0, 0]).all()
    assert np.isnan(y[0, 1, 1, 1]) and np.isfinite(y[0, 1]).sum() == 8
    gy = np.ones_like(y)
    _, gw, _ = F.conv2d_backward(gy, x, w, 2, 0, groups=2)
    assert np.isfinite(gw[0]).all()
    # The same along the columns, whose stride splits the padded rows in phases.
    x = np.ones((1, 2, 7, 7), np.float32)
    x[0, 0, :, 6] = np.inf
    x[0, 1, 3, 3] = np.nan
    y = F.conv2d(x, w, None, 2, 0, 1, 2)
    assert np.isfinite(y[0, 0]).all()
    assert np.isnan(y[0, 1, 1, 1]) and np.isfinite(y[0, 1]).sum() == 8
    _, gw, _ = F.conv2d_backward(np.ones_like(y), x, w, 2, 0, groups=2)
    assert np.isfinite(gw[0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_depend_on_the_thread_count(num_threads, dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 16, 20, 21)).astype(dtype)  # large enough to go parallel
    results = []
    for stride in (1, 2):
        w = rng.standard_normal((32, 1, 3, 3)).astype(dtype)
        gy = rng.standard_normal(F.conv2d(x, w, None, stride, 1, 1, 16).shape).astype(dtype)
        runs = []
        for threads in (1, 2, 4):
            num_threads(threads)
            runs.append([F.conv2d(x, w, None, stride, 1, 1, 16),
                         *F.conv2d_backward(gy, x, w, stride, 1, groups=16)])
        results.append(runs)
    for runs in results:
        for other in runs[1:]:
            for got, want in zip(other, runs[0], strict=True):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", [((1, 1), (1, 1), (1, 1)), ((2, 2), (1, 1), (1, 1)),
                                      ((1, 2), (2, 0), (2, 1))])
def test_every_instruction_set_build_against_the_reference(dtype, geometry):
    modules = _dispatch.built_variants("_depthwise")
    assert "baseline" in modules
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 19, 37)).astype(dtype)
    w = rng.standard_normal((6, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    want = grouped_reference(x, w, b, *geometry, 3)
    gy = rng.standard_normal(want.shape).astype(dtype)
    want_grads = grouped_reference_backward(gy, x, w, *geometry, 3)
    for name, module in modules.items():
        assert module.compiled_isa() == name
        y = np.empty(want.shape, dtype)
        module.depthwise_forward(x, w, b, y, *geometry)
        np.testing.assert_allclose(y, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-5 if dtype == np.float32 else 1e-12, err_msg=name)
        gx, gw, gb = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        module.depthwise_backward_data(gy, w, gx, *geometry, False)
        module.depthwise_backward_filter(gy, x, np.empty((2, 6, 10)), gw, gb, *geometry)
        scattered = np.empty_like(x)  # the path for filters holding inf or NaN
        module.depthwise_backward_data(gy, w, scattered, *geometry, True)
        for got, expected in zip((gx, gw, gb, scattered), (*want_grads, want_grads[0]),
                                 strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-4 if dtype == np.float32 else
                                       1e-11, atol=1e-4 if dtype == np.float32 else 1e-11,
                                       err_msg=name)


# Stride-2 column phases split and merged in vectors of 32 (16 in float64)
# padded columns: rows ending on both sides of those chunks, padding that
# starts the split on an odd or even column.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [3, 15, 16, 17, 31, 32, 33, 47, 64, 66])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_every_build_splits_stride_2_phases_exactly(dtype, width, padding):
    rng = np.random.default_rng(width * 3 + padding)
    x = rng.standard_normal((2, 2, 5, width)).astype(dtype)
    w = rng.standard_normal((2, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    geometry = ((2, 2), (padding, padding), (1, 1))
    want = grouped_reference(x, w, b, *geometry, 2)
    gy = rng.standard_normal(want.shape).astype(dtype)
    want_gx, want_gw, want_gb = grouped_reference_backward(gy, x, w, *geometry, 2)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12,
                                                                     "atol": 1e-12}
    for name, module in _dispatch.built_variants("_depthwise").items():
        y, gx = poisoned_like(want.astype(dtype)), poisoned_like(x)
        gw, gb = poisoned_like(w), poisoned_like(b)
        module.depthwise_forward(x, w, b, y, *geometry)
        module.depthwise_backward_data(gy, w, gx, *geometry, False)
        module.depthwise_backward_filter(gy, x, np.empty((2, 2, 10)), gw, gb, *geometry)
        for got, expected, what in ((y, want, "y"), (gx, want_gx, "gx"), (gw, want_gw, "gw"),
                                    (gb, want_gb, "gb")):
            np.testing.assert_allclose(got, expected, err_msg=f"{name} {what}", **tol)


def test_the_kernels_release_the_gil(num_threads):
    num_threads(1)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((64, 32, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
    y = F.conv2d(x, w, None, 1, 1, 1, 32)
    assert_releases_the_gil(lambda: F.conv2d(x, w, None, 1, 1, 1, 32))
    assert_releases_the_gil(lambda: F.conv2d_backward(y, x, w, 1, 1, groups=32))


def test_refusals_name_groups():
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        F.conv2d(x, np.zeros((6, 1, 3, 3), np.float32), groups=3)
    with pytest.raises(ValueError, match="C / groups"):
        F.conv2d(x, np.zeros((4, 2, 3, 3), np.float32), groups=4)
    for bad, error in [(0, ValueError), (1.0, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="groups"):
            F.conv2d(x, np.zeros((4, 1, 3, 3), np.float32), groups=bad)
        with pytest.raises(error, match="groups"):
            F.conv2d_backward(np.zeros((1, 4, 3, 3), np.float32), x,
                              np.zeros((4, 1, 3, 3), np.float32), groups=bad)


def test_conv2d_layer_with_groups():
    layer = Conv2D(4, 8, 3, padding=1, groups=4, seed=0)
    assert layer.params["weight"].shape == (8, 1, 3, 3)
    assert layer.config()["groups"] == 4 and "groups" not in Conv2D(4, 8, 3).config()
    assert repr(layer) == "Conv2D(4, 8, 3, padding=1, groups=4)"
    x = np.random.default_rng(9).standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), F.conv2d(x, layer.params["weight"],
                                                     layer.params["bias"], 1, 1, 1, 4))
    gy = np.ones((2, 8, 6, 6), np.float32)
    np.testing.assert_array_equal(layer.backward(gy), F.conv2d_backward(
        gy, x, layer.params["weight"], 1, 1, groups=4)[0])
    with pytest.raises(ValueError, match="groups=3 must divide"):
        Conv2D(4, 8, 3, groups=3)
    assert Conv2D(**layer.config()).config() == layer.config()


@pytest.mark.parametrize("func", ["conv2d", "conv2d_backward"])
def test_padded_planes_too_large_for_memory_are_refused_naming_them(func):
    """The output is one element, but the padded copy of a plane the kernels
    would allocate spans the dilated window: refused before any allocation."""
    x = np.zeros((1, 2, 1, 1), np.float32)
    w = np.zeros((2, 1, 3, 3), np.float32)
    huge = 2 ** 61
    args = dict(stride=1, padding=huge, dilation=huge)
    with pytest.raises(ValueError, match=r"the padded copy of one plane of x .*dilation "
                                         r"\(2305843009213693952, 2305843009213693952\)"):
        if func == "conv2d":
            F.conv2d(x, w, None, groups=2, **args)
        else:
            F.conv2d_backward(np.zeros((1, 2, 1, 1), np.float32), x, w, groups=2, **args)
    # The same sizes of a small dilation pass: the check is of what the kernels allocate.
    y = F.conv2d(x, w, None, 1, 4, 4, groups=2)
    assert y.shape == (1, 2, 1, 1) and not y.any()


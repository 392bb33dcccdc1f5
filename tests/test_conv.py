"""conv2d and conv2d_backward: results, memory handling, threads, ISA builds, PyTorch."""

import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conv_testing import check_backward, check_forward, problem, winograd_on
from hypothesis import given
from hypothesis import strategies as st
from pool_testing import assert_releases_the_gil

from cnnext import _dispatch
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext._functional import conv as conv_module
from cnnext._functional import conv_taps

DTYPES = [np.float32, np.float64]

# (N, C, H, W, K, R, S, stride, padding, dilation): together they reach every
# window source (in place, padded copy, im2col panel) and both weight-gradient
# kernels for both dtypes of every build, partial register tiles (K, C*R*S
# not multiples of the tile), output rows shorter than a vector and planes
# shorter than one.
GRID = [
    (3, 1, 28, 28, 8, 3, 3, 1, 0, 1),                    # the notebook's layer
    (2, 4, 30, 30, 9, 3, 3, 1, 1, 1),
    (2, 3, 18, 34, 10, 3, 3, 1, 1, 1),
    (2, 2, 9, 11, 3, 2, 4, 2, 1, 1),                     # R != S, stride 2
    (1, 5, 7, 6, 7, 1, 1, 1, 0, 1),                      # 1x1 kernel
    (1, 3, 40, 50, 5, 3, 3, 1, 2, 2),                    # dilation
    (2, 2, 12, 12, 4, 3, 3, 4, 0, 1),                    # stride > kernel
    (1, 1, 5, 5, 1, 5, 5, 1, 0, 1),                      # one output position
    (2, 6, 20, 24, 17, 3, 5, (1, 1), (0, 2), (2, 1)),    # pairs
    (1, 2, 30, 40, 3, 3, 3, (2, 1), 1, 1),               # row stride only
    (4, 1, 28, 28, 1, 3, 3, 1, 0, 1),                    # one filter
    (2, 3, 16, 16, 4, 3, 3, 1, 3, 1),                    # padding > kernel
    (2, 3, 10, 12, 64, 3, 3, 1, 1, 1),                   # many filters
    (3, 2, 9, 36, 24, 3, 2, 1, (0, 1), 1),               # many filters, partial vectors
    (2, 4, 11, 13, 50, 3, 3, 2, 1, 1),                   # many filters, stride 2
    (2, 16, 9, 11, 48, 3, 3, 1, 1, 1),                   # Winograd, odd output sizes
    (1, 48, 7, 6, 49, 3, 3, 1, (0, 2), 1),               # Winograd forward and input gradient
    # One vector, or half the widest tile, of filters per tile (lenet-2's and
    # strided's shapes) for some dtype of each build.
    (2, 3, 13, 13, 16, 5, 5, 1, 0, 1),
    (2, 2, 11, 9, 8, 5, 3, 1, (1, 0), 1),
    (2, 2, 9, 9, 4, 3, 3, 2, 0, 1),
    (2, 3, 12, 12, 32, 3, 3, 2, 1, 1),
]


def grid_id(case):
    return "N{}C{}H{}W{}K{}R{}S{}-s{}p{}d{}".format(*case).replace(" ", "")


def layer(case):
    """((C, H, W), (K, C, R, S)) of a grid case."""
    _, c, h, w, k, r, s, *_ = case
    return (c, h, w), (k, c, r, s)


# The grid's Winograd cases, planned so by request (too small for the heuristics).
WINOGRAD_GRID = [(2, 16, 9, 11, 48, 3, 3, 1, 1, 1), (1, 48, 7, 6, 49, 3, 3, 1, (0, 2), 1)]


def grid_plans():
    """The context the grid's cases are planned in: Winograd where meant."""
    return winograd_on(*map(layer, WINOGRAD_GRID))


def run_and_check(case, dtype, bias, rng):
    """Forward and backward of ``case`` against the reference, fresh and poisoned outputs."""
    n, c, h, w, k, r, s, stride, padding, dilation = case
    x, weights, b = problem(rng, n, c, h, w, k, r, s, dtype, bias)
    inputs = [a.copy() for a in (x, weights, b) if a is not None]
    y = F.conv2d(x, weights, b, stride, padding, dilation)
    check_forward(y, x, weights, b, stride, padding, dilation)
    gy = rng.standard_normal(y.shape).astype(dtype)
    grads = F.conv2d_backward(gy, x, weights, stride, padding, dilation)
    check_backward(grads, gy, x, weights, stride, padding, dilation)

    # Outputs written in full: NaN-filled buffers give the same results.
    poisoned = np.full_like(y, np.nan)
    assert F.conv2d(x, weights, b, stride, padding, dilation, out=poisoned) is poisoned
    np.testing.assert_array_equal(poisoned, y)
    buffers = tuple(np.full_like(a, np.nan) for a in (x, weights, weights[:, 0, 0, 0]))
    again = F.conv2d_backward(gy, x, weights, stride, padding, dilation, out=buffers)
    for got, want, buffer in zip(again, grads, buffers, strict=True):
        assert got is buffer
        np.testing.assert_array_equal(got, want)

    # Inputs untouched.
    for before, after in zip(inputs, [a for a in (x, weights, b) if a is not None], strict=True):
        np.testing.assert_array_equal(before, after)
    return y, grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GRID, ids=grid_id)
def test_grid_against_reference(case, dtype):
    seed = zlib.crc32(grid_id(case).encode())
    with grid_plans():
        run_and_check(case, dtype, bias=seed % 2 == 0, rng=np.random.default_rng(seed))


ALL_STRATEGIES = ({"input", "padded", "panel"}, {"positions", "filters", "winograd"},
                  {"conv", "winograd", "phases", "col2im"}, {"dot", "transposed"})


def strategies_used(dtype):
    """(window sources, forward lanes, input- and weight-gradient kernels) the grid reaches."""
    used = (set(), set(), set(), set())
    with grid_plans():
        for n, c, h, w, k, r, s, stride, padding, dilation in GRID:
            plan = conv_module._plan("test", np.empty((n, c, h, w), dtype),
                                     np.empty((k, c, r, s), dtype), stride, padding, dilation)
            kinds = (plan.source, plan.forward_lanes, plan.data_kernel, plan.filter_kernel)
            for found, kind in zip(used, kinds, strict=True):
                found.add(kind)
    return used


@pytest.mark.parametrize("dtype", DTYPES)
def test_grid_reaches_every_strategy(dtype):
    assert strategies_used(dtype) == ALL_STRATEGIES


def test_grid_reaches_every_width_of_filter_tiles():
    # Filters as lanes in tiles of one vector, half the widest tile (2 vectors
    # with AVX-512; one elsewhere) and the widest.
    widths = set()
    for dtype in DTYPES:
        for n, c, h, w, k, r, s, stride, padding, dilation in GRID:
            plan = conv_module._plan("test", np.empty((n, c, h, w), dtype),
                                     np.empty((k, c, r, s), dtype), stride, padding, dilation)
            if plan.forward_lanes == "filters":
                widths.add(plan.filters_per_tile * np.dtype(dtype).itemsize)
    in_vectors = sorted(width // min(widths) for width in widths)
    assert in_vectors in ([1, 2], [1, 2, 4])


@st.composite
def conv_cases(draw):
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # Smallest input giving one output row/column, then up to wide rows.
    min_h = max(1, dilation[0] * (r - 1) + 1 - 2 * padding[0])
    min_w = max(1, dilation[1] * (s - 1) + 1 - 2 * padding[1])
    h = draw(st.integers(min_h, min_h + 12))
    w = draw(st.integers(min_w, min_w + 40))
    # Up to 70 filters: past a few vectors' worth the filters become the lanes.
    n, c, k = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 70))
    # Single ints as well as pairs.
    if stride[0] == stride[1] and draw(st.booleans()):
        stride = stride[0]
    return (n, c, h, w, k, r, s, stride, padding, dilation)


@given(case=conv_cases(), dtype=st.sampled_from(DTYPES), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_hypothesis_against_reference(case, dtype, bias, seed):
    run_and_check(case, dtype, bias, np.random.default_rng(seed))


def test_gradients_match_central_differences():
    rng = np.random.default_rng(3)
    stride, padding, dilation = (2, 1), (1, 0), (1, 2)
    x, w, b = problem(rng, 2, 2, 5, 6, 3, 3, 2, np.float64)
    gy = rng.standard_normal(F.conv2d(x, w, b, stride, padding, dilation).shape)
    gx, gw, gb = F.conv2d_backward(gy, x, w, stride, padding, dilation)

    def loss(xv, wv, bv):
        return float(np.sum(gy * F.conv2d(xv, wv, bv, stride, padding, dilation)))

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


def test_skipping_the_input_gradient():
    rng = np.random.default_rng(4)
    x, w, _ = problem(rng, 3, 2, 10, 12, 4, 3, 3, np.float64, bias=False)
    gy = rng.standard_normal((3, 4, 8, 10))
    full = F.conv2d_backward(gy, x, w)
    gx, gw, gb = F.conv2d_backward(gy, x, w, need_input_grad=False)
    assert gx is None
    np.testing.assert_array_equal(gw, full[1])
    np.testing.assert_array_equal(gb, full[2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype):
    x = np.empty((0, 3, 8, 9), dtype)
    w = np.ones((4, 3, 3, 2), dtype)
    y = F.conv2d(x, w, np.ones(4, dtype), stride=(2, 1), padding=1)
    assert y.shape == (0, 4, 4, 10) and y.dtype == dtype
    poisoned = (np.full((4, 3, 3, 2), np.nan, dtype), np.full(4, np.nan, dtype))
    gx, gw, gb = F.conv2d_backward(y, x, w, stride=(2, 1), padding=1,
                                   out=(None, *poisoned))
    assert gx.shape == x.shape and gx.dtype == dtype
    assert gw is poisoned[0] and gb is poisoned[1]
    assert not gw.any() and not gb.any()


def layouts(array):
    """The same values as non-contiguous, Fortran-ordered and negative-stride arrays."""
    padded = np.zeros((*array.shape[:-1], 2 * array.shape[-1]), array.dtype)
    padded[..., ::2] = array
    flipped = np.ascontiguousarray(array[..., ::-1])[..., ::-1]
    return [padded[..., ::2], np.asfortranarray(array), flipped]


def test_any_memory_layout_gives_the_contiguous_result():
    rng = np.random.default_rng(5)
    x, w, b = problem(rng, 2, 3, 11, 13, 5, 3, 3, np.float32)
    y = F.conv2d(x, w, b, 1, 1)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    grads = F.conv2d_backward(gy, x, w, 1, 1)
    for xl, wl, gyl, bl in zip(layouts(x), layouts(w), layouts(gy), layouts(b), strict=True):
        assert not (xl.flags.c_contiguous and wl.flags.c_contiguous)
        np.testing.assert_array_equal(F.conv2d(xl, wl, bl, 1, 1), y)
        for got, want in zip(F.conv2d_backward(gyl, xl, wl, 1, 1), grads, strict=True):
            np.testing.assert_array_equal(got, want)


def test_lists_are_accepted():
    x = [[[[1.0, 2.0], [3.0, 4.0]]]]
    w = [[[[1.0]]]]
    np.testing.assert_array_equal(F.conv2d(x, w), np.array(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate_as_ieee_says(dtype):
    rng = np.random.default_rng(6)
    x, w, b = problem(rng, 2, 2, 9, 31, 3, 3, 3, dtype)
    x[0, 1, 4, 7] = np.nan
    x[1, 0, 2, 20] = np.inf
    y = F.conv2d(x, w, b, 1, 1)
    expected = reference.conv2d(x, w, b, 1, 1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    assert np.isnan(y).any() and np.isinf(y).any()
    gy = rng.standard_normal(y.shape).astype(dtype)
    gy[1, 2, 3, 3] = np.nan
    for got, want in zip(F.conv2d_backward(gy, x, w, 1, 1),
                         reference.conv2d_backward(gy, x, w, 1, 1), strict=True):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert np.isnan(got).any()


# Shapes whose plans take Winograd (forward, input gradient: the first two, by
# request) and the input gradient as a convolution of zero-padded gy, on every
# instruction-set build.
REFORMULATED = [((2, 16, 8, 8), (64, 16, 3, 3)), ((2, 32, 6, 6), (32, 32, 3, 3)),
                ((1, 8, 9, 9), (8, 8, 3, 3))]


@pytest.mark.parametrize("operand", ["x", "w", "gy"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_reformulated_algorithms_keep_the_direct_sums_nan_and_inf(operand, value):
    # Winograd's transforms subtract inputs (inf - inf) and the padded-gy
    # convolution multiplies padding by w (0 * inf): both would put NaN where
    # the definition's sum is finite, so non-finite operands take the direct path.
    rng = np.random.default_rng(17)
    paths = set()
    with winograd_on(*((x[1:], w) for x, w in REFORMULATED[:2])):
        check_reformulated_shapes(rng, operand, value, paths)
    assert {("forward", "winograd"), ("data", "winograd"), ("data", "conv")} <= paths


def check_reformulated_shapes(rng, operand, value, paths):
    for x_shape, w_shape in REFORMULATED:
        x = rng.standard_normal(x_shape)
        w = rng.standard_normal(w_shape)
        plan = conv_module._plan("test", x, w, 1, 1, 1)
        paths |= {("forward", plan.forward_lanes), ("data", plan.data_kernel)}
        gy = rng.standard_normal(plan.output_shape)
        arrays = {"x": x, "w": w, "gy": gy}
        spoiled = arrays[operand]
        spoiled.flat[[0, spoiled.size // 2, -1]] = value
        y = F.conv2d(x, w, padding=1)
        np.testing.assert_allclose(y, reference.conv2d(x, w, padding=1), rtol=1e-9, atol=1e-9)
        for got, want in zip(F.conv2d_backward(gy, x, w, padding=1),
                             reference.conv2d_backward(gy, x, w, padding=1), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_no_window_reads_do_not_leak(dtype):
    # Stride 2 never reads the odd columns nor the last row: NaN/inf there
    # must not reach any result (vector tails and staging must not touch them).
    rng = np.random.default_rng(7)
    for w_size in (9, 35):
        x, w, b = problem(rng, 2, 2, 8, w_size, 3, 3, 1, dtype)
        x[:, :, :, 1::2] = np.nan
        x[:, :, -1, :] = np.inf
        y = F.conv2d(x, w, b, stride=2)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx, gw, gb = F.conv2d_backward(gy, x, w, stride=2)
        for result in (y, gw, gb):
            assert np.isfinite(result).all()
        assert np.isfinite(gx).all()
        check_forward(y, np.nan_to_num(x, nan=0, posinf=0), w, b, 2, 0, 1)


THREAD_CASES = [
    (64, 1, 28, 28, 8, 3, 3, 1, 0, 1),      # weight gradient over image chunks
    (1, 8, 64, 64, 16, 3, 3, 1, 1, 1),      # one image split over threads
    (8, 16, 8, 8, 32, 3, 3, 1, 1, 1),       # im2col panels
    (3, 16, 64, 64, 8, 3, 3, 1, 1, 1),      # input-gradient columns in waves
    (8, 48, 8, 8, 64, 3, 3, 1, 1, 1),       # Winograd (asked for)
]


@pytest.mark.parametrize("case", THREAD_CASES, ids=grid_id)
def test_results_do_not_depend_on_the_thread_count(case, num_threads):
    n, c, h, w, k, r, s, stride, padding, dilation = case
    x, weights, b = problem(np.random.default_rng(8), n, c, h, w, k, r, s, np.float32)
    gy = np.random.default_rng(9).standard_normal(
        F.conv2d(x, weights, b, stride, padding, dilation).shape).astype(np.float32)
    results = []
    with winograd_on(layer(THREAD_CASES[-1])):
        if case == THREAD_CASES[-1]:
            assert conv_module._plan("t", x, weights, stride, padding,
                                     dilation).forward_lanes == "winograd"
        for count in (1, 2, 4):
            num_threads(count)
            y = F.conv2d(x, weights, b, stride, padding, dilation)
            results.append((y, *F.conv2d_backward(gy, x, weights, stride, padding, dilation)))
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)


def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(10)
    jobs = []
    for case in GRID[:6] * 2:
        n, c, h, w, k, r, s, stride, padding, dilation = case
        x, weights, b = problem(rng, n, c, h, w, k, r, s, np.float32)
        gy = rng.standard_normal(F.conv2d(x, weights, b, stride, padding, dilation).shape)
        jobs.append((x, weights, b, gy.astype(np.float32), stride, padding, dilation))

    def run(job):
        x, weights, b, gy, stride, padding, dilation = job
        return (F.conv2d(x, weights, b, stride, padding, dilation),
                *F.conv2d_backward(gy, x, weights, stride, padding, dilation))

    serial = [run(job) for job in jobs]
    start = threading.Barrier(4)

    def run_many(offset):
        start.wait()
        return [run(jobs[(offset + i) % len(jobs)]) for i in range(len(jobs))]

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(run_many, range(4)))
    for offset, outcome in enumerate(outcomes):
        for i, results in enumerate(outcome):
            for got, want in zip(results, serial[(offset + i) % len(jobs)], strict=True):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", list(_dispatch.built_variants("_conv")))
def test_every_instruction_set_build_against_reference(isa, monkeypatch):
    module = _dispatch.built_variants("_conv")[isa]
    monkeypatch.setattr(conv_module, "_kernels", module)
    monkeypatch.setattr(conv_module, "_by_dtype", conv_module._specialised(module))
    monkeypatch.setattr(conv_module, "_plans", {})
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        assert strategies_used(dtype) == ALL_STRATEGIES
        for case in GRID:
            run_and_check(case, dtype, bias=True, rng=rng)


TORCH_CASES = [
    (2, 1, 28, 28, 8, 3, 3, 1, 0, 1),
    (2, 3, 15, 17, 6, 3, 2, (2, 1), (1, 0), (1, 2)),
    (1, 8, 8, 8, 16, 3, 3, 1, 1, 1),
    # Windows reaching far past the image: computed tap by tap, as torch answers at once.
    (2, 3, 4, 5, 4, 3, 3, 1, 2**20, 2**20),
    (2, 3, 4, 5, 4, 3, 3, 1, 2**40, 2**40),
    (1, 2, 5, 4, 3, 3, 2, (2**19, 1), (2**20, 1), (1, 3)),
]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=grid_id)
def test_against_torch(case, dtype, torch):
    n, c, h, w, k, r, s, stride, padding, dilation = case
    rng = np.random.default_rng(12)
    x, weights, b = problem(rng, n, c, h, w, k, r, s, dtype)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weights, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation)
    gy = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(gy))
    y = F.conv2d(x, weights, b, stride, padding, dilation)
    grads = F.conv2d_backward(gy, x, weights, stride, padding, dilation)
    rtol, atol = (1e-4, 1e-4) if dtype == np.float32 else (1e-12, 1e-12)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=rtol, atol=atol)
    for got, want in zip(grads, (tx.grad, tw.grad, tb.grad), strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=rtol, atol=atol)


def test_only_geometries_whose_padded_copy_is_mostly_padding_go_tap_by_tap():
    x = np.zeros((2, 3, 4, 5), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    for geometry in [(1, 2**20, 2**20), (3, 2**61, 2**61), ((2**19, 1), (2**20, 1), 1)]:
        plan = conv_module._plan("test", x, w, *geometry)
        stride, padding, dilation = (reference.pair(v) for v in geometry)
        assert type(plan) is conv_taps.TapPlan
        assert plan.output_shape == (2, 4, *(
            reference.output_size(size, 3, stride[i], padding[i], dilation[i])
            for i, size in enumerate((4, 5))))
    # Ordinary and large real images keep the compiled kernels.
    for shape, geometry in [((2, 3, 4, 5), (1, 1, 1)), ((1, 1, 28, 28), (1, 0, 1)),
                            ((1, 1, 1500, 1500), (1, 200, 2))]:
        x = np.zeros(shape, np.float32)
        w = np.zeros((4, shape[1], 3, 3), np.float32)
        assert type(conv_module._plan("test", x, w, *geometry)) is not conv_taps.TapPlan


def test_gil_is_released_during_the_kernels():
    rng = np.random.default_rng(13)
    x, w, _ = problem(rng, 8, 16, 64, 64, 32, 3, 3, np.float32, bias=False)
    plan = conv_module._plan("test", x, w, 1, 1, 1)
    y = np.empty(plan.output_shape, np.float32)
    work = np.empty(plan.forward_workspace, np.float32)
    assert_releases_the_gil(lambda: conv_module._kernels.conv2d_forward(plan, x, w, None, y, work))
    check_forward(y, x, w, None, 1, 1, 1)

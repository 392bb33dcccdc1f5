"""max_pool2d / avg_pool2d and their gradients: results, ties and NaN, memory, threads, builds."""


import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pool_testing import (
    DTYPES,
    as_argument,
    assert_close,
    assert_releases_the_gil,
    layouts,
    poisoned_like,
    pool_problems,
    random_array,
)

from cnnext import _dispatch
from cnnext import _reference as reference
from cnnext import functional as F


def check_max_pool(x, kernel, stride, padding, seed):
    """Forward (values and indices exact) and backward against the reference."""
    before = x.copy()
    y, idx = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    want_y, want_idx = reference.max_pool2d(x, kernel, stride, padding, return_indices=True)
    assert y.dtype == x.dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, want_y.astype(x.dtype))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(F.max_pool2d(x, kernel, stride, padding), y)
    gy = random_array(seed, y.shape, x.dtype)
    gx = F.max_pool2d_backward(gy, idx, x.shape)
    assert gx.dtype == x.dtype
    assert_close(gx, reference.max_pool2d_backward(gy, idx, x.shape), x.dtype)
    np.testing.assert_array_equal(x, before)
    return y, idx, gx


def check_avg_pool(x, kernel, stride, padding, seed):
    before = x.copy()
    y = F.avg_pool2d(x, kernel, stride, padding)
    assert y.dtype == x.dtype
    assert_close(y, reference.avg_pool2d(x, kernel, stride, padding), x.dtype)
    gy = random_array(seed, y.shape, x.dtype)
    gx = F.avg_pool2d_backward(gy, x.shape, kernel, stride, padding)
    assert gx.dtype == x.dtype
    assert_close(gx, reference.avg_pool2d_backward(gy, x.shape, kernel, stride, padding), x.dtype)
    np.testing.assert_array_equal(x, before)
    return y, gx


@given(problem=pool_problems(), dtype=st.sampled_from(DTYPES),
       kind=st.sampled_from(["normal", "ties", "special"]), seed=st.integers(0, 2**32 - 1))
def test_max_pool_against_reference(problem, dtype, kind, seed):
    shape, kernel, stride, padding = problem
    x = random_array(seed, shape, dtype, kind)
    check_max_pool(x, as_argument(kernel), as_argument(stride), as_argument(padding), seed)


@given(problem=pool_problems(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_avg_pool_against_reference(problem, dtype, seed):
    shape, kernel, stride, padding = problem
    x = random_array(seed, shape, dtype)
    check_avg_pool(x, as_argument(kernel), as_argument(stride), as_argument(padding), seed)


# Geometries reaching the 2x2 fast path (even and odd sizes, rows longer than
# its stack block), overlapping and padded windows, and rows shorter than a
# vector.
GRID = [
    ((2, 3, 26, 26), 2, None, 0),
    ((1, 2, 7, 9), 2, 2, 0),
    ((1, 1, 3, 600), 2, 2, 0),
    ((2, 2, 9, 11), 3, 2, 1),
    ((1, 3, 8, 8), (3, 2), (1, 2), (1, 1)),
    ((1, 1, 5, 5), 5, 1, 2),
    ((2, 1, 6, 7), 1, 3, 0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), GRID)
def test_grid_against_reference(shape, kernel, stride, padding, dtype):
    for seed, kind in enumerate(["normal", "ties", "special"]):
        x = random_array(seed, shape, dtype, kind)
        check_max_pool(x, kernel, stride, padding, seed)
        if kind == "normal":
            check_avg_pool(x, kernel, stride, padding, seed)


def test_ties_go_to_the_first_maximum_in_row_major_order():
    plane = np.array([[1.0, 3.0, 0.0, 0.0],
                      [3.0, 2.0, 5.0, 5.0]])
    y, idx = F.max_pool2d(plane[None, None], 2, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[3.0, 5.0]])
    # (0, 1) before (1, 0); (1, 2) before (1, 3).  Flat: row * 4 + column.
    np.testing.assert_array_equal(idx[0, 0], [[1, 6]])


def test_a_nan_is_the_maximum_and_its_index_is_the_last_nan():
    nan = np.nan
    plane = np.array([[nan, 9.0, 1.0, 2.0, 1.0, np.inf],
                      [nan, 0.0, 3.0, nan, -np.inf, 1.0]])
    y, idx = F.max_pool2d(plane[None, None], 2, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[nan, nan, np.inf]])
    # Windows: NaN at (0,0) and (1,0) -> the later, 6; NaN at (1,3) -> 9;
    # +inf at (0,5) -> 5.
    np.testing.assert_array_equal(idx[0, 0], [[6, 9, 5]])


def test_windows_of_minus_infinity_and_padding_point_to_their_first_element():
    plane = np.full((3, 3), -np.inf)
    plane[2, 2] = 1.0
    y, idx = F.max_pool2d(plane[None, None], 2, stride=2, padding=1, return_indices=True)
    # Windows cover rows/columns {-1, 0} and {1, 2}; padding never wins.
    np.testing.assert_array_equal(y[0, 0], [[-np.inf, -np.inf], [-np.inf, 1.0]])
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 8]])


def test_avg_pool_counts_padding_in_the_divisor():
    x = np.ones((1, 1, 2, 2))
    y = F.avg_pool2d(x, 2, stride=1, padding=1)
    np.testing.assert_array_equal(y[0, 0], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    gx = F.avg_pool2d_backward(np.ones_like(y), x.shape, 2, stride=1, padding=1)
    np.testing.assert_array_equal(gx, np.ones_like(x))


def numerical_gradient(function, x, eps=1e-6):
    grad = np.empty_like(x)
    for position in np.ndindex(*x.shape):
        saved = x[position]
        x[position] = saved + eps
        plus = function(x)
        x[position] = saved - eps
        minus = function(x)
        x[position] = saved
        grad[position] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize(("kernel", "stride", "padding"),
                         [(2, None, 0), (3, 2, 1), ((2, 3), 1, (1, 0))])
def test_gradients_match_finite_differences(kernel, stride, padding):
    rng = np.random.default_rng(7)
    shape = (1, 2, 5, 6)
    # Distinct values at least 0.01 apart: no ties, so max pooling is
    # differentiable and eps cannot change which element wins.
    x = (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01).astype(np.float64)
    weights_max = rng.standard_normal(F.max_pool2d(x, kernel, stride, padding).shape)
    _, idx = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    np.testing.assert_allclose(
        F.max_pool2d_backward(weights_max, idx, shape),
        numerical_gradient(
            lambda v: np.sum(weights_max * F.max_pool2d(v, kernel, stride, padding)), x),
        atol=1e-8)
    weights_avg = rng.standard_normal(F.avg_pool2d(x, kernel, stride, padding).shape)
    np.testing.assert_allclose(
        F.avg_pool2d_backward(weights_avg, shape, kernel, stride, padding),
        numerical_gradient(
            lambda v: np.sum(weights_avg * F.avg_pool2d(v, kernel, stride, padding)), x),
        atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_outputs_are_written_in_full_into_poisoned_buffers(dtype):
    x = random_array(3, (2, 3, 9, 10), dtype, "special")
    for kernel, stride, padding in [(2, None, 0), (3, 2, 1)]:
        y, idx = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
        buffers = (poisoned_like(y), poisoned_like(idx))
        got = F.max_pool2d(x, kernel, stride, padding, return_indices=True, out=buffers)
        assert got[0] is buffers[0] and got[1] is buffers[1]
        np.testing.assert_array_equal(buffers[0], y)
        np.testing.assert_array_equal(buffers[1], idx)
        single = poisoned_like(y)
        assert F.max_pool2d(x, kernel, stride, padding, out=single) is single
        np.testing.assert_array_equal(single, y)

        gy = random_array(4, y.shape, dtype)
        gx = F.max_pool2d_backward(gy, idx, x.shape)
        buffer = poisoned_like(x)
        assert F.max_pool2d_backward(gy, idx, x.shape, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, gx)

        avg = F.avg_pool2d(x, kernel, stride, padding)
        buffer = poisoned_like(avg)
        assert F.avg_pool2d(x, kernel, stride, padding, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, avg, strict=True)
        gx = F.avg_pool2d_backward(gy, x.shape, kernel, stride, padding)
        buffer = poisoned_like(x)
        assert F.avg_pool2d_backward(gy, x.shape, kernel, stride, padding, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, gx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_memory_layout_gives_the_same_results(dtype):
    x = random_array(5, (2, 3, 8, 9), dtype, "ties")
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    avg = F.avg_pool2d(x, 3, 2, 1)
    gy = random_array(6, y.shape, dtype)
    gx_max = F.max_pool2d_backward(gy, idx, x.shape)
    gx_avg = F.avg_pool2d_backward(gy, x.shape, 3, 2, 1)
    for name, variant in layouts(x).items():
        got_y, got_idx = F.max_pool2d(variant, 3, 2, 1, return_indices=True)
        np.testing.assert_array_equal(got_y, y, err_msg=name)
        np.testing.assert_array_equal(got_idx, idx, err_msg=name)
        np.testing.assert_array_equal(F.avg_pool2d(variant, 3, 2, 1), avg, err_msg=name)
    for (name, gy_variant), idx_variant in zip(layouts(gy).items(), layouts(idx).values(),
                                               strict=True):
        np.testing.assert_array_equal(F.max_pool2d_backward(gy_variant, idx_variant, x.shape),
                                      gx_max, err_msg=name)
        np.testing.assert_array_equal(F.avg_pool2d_backward(gy_variant, x.shape, 3, 2, 1),
                                      gx_avg, err_msg=name)
    # Read-only arrays are inputs like any other.
    frozen_x, frozen_gy, frozen_idx = x.copy(), gy.copy(), idx.copy()
    for array in (frozen_x, frozen_gy, frozen_idx):
        array.flags.writeable = False
    np.testing.assert_array_equal(F.max_pool2d(frozen_x, 3, 2, 1), y)
    np.testing.assert_array_equal(F.max_pool2d_backward(frozen_gy, frozen_idx, x.shape), gx_max)
    np.testing.assert_array_equal(F.avg_pool2d_backward(frozen_gy, x.shape, 3, 2, 1), gx_avg)
    # Lists are arrays too, and other integer index dtypes are accepted.
    np.testing.assert_array_equal(F.max_pool2d(x.tolist(), 3, 2, 1), y)
    np.testing.assert_array_equal(F.max_pool2d_backward(gy, idx.astype(np.uint16), x.shape),
                                  gx_max)


def test_an_empty_batch_gives_empty_results():
    x = np.zeros((0, 3, 6, 6), np.float32)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert y.shape == idx.shape == (0, 3, 3, 3)
    assert F.max_pool2d_backward(y, idx, x.shape).shape == x.shape
    assert F.avg_pool2d(x, 2).shape == (0, 3, 3, 3)
    assert F.avg_pool2d_backward(y, x.shape, 2).shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_depend_on_the_thread_count(num_threads, dtype):
    # Large enough (> 32768 elements) for the kernels to go parallel.
    x = random_array(8, (3, 8, 40, 41), dtype, "ties")
    results = []
    for threads in (1, 2, 4):
        num_threads(threads)
        outputs = []
        for kernel, stride, padding in [(2, None, 0), (3, 2, 1)]:
            y, idx = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
            gy = random_array(9, y.shape, dtype)
            outputs += [y, idx, F.max_pool2d_backward(gy, idx, x.shape),
                        F.avg_pool2d(x, kernel, stride, padding),
                        F.avg_pool2d_backward(gy, x.shape, kernel, stride, padding)]
        results.append(outputs)
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_instruction_set_build_gives_the_same_results(dtype):
    modules = _dispatch.built_variants("_pool")
    assert "baseline" in modules
    x = random_array(10, (2, 3, 11, 37), dtype, "special")
    results = {}
    for name, module in modules.items():
        outputs = []
        for kernel, stride, padding in [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 1), (1, 1))]:
            shape = F.max_pool2d(x, kernel, stride, padding).shape
            y, idx, avg = np.empty(shape, dtype), np.empty(shape, np.int64), np.empty(shape, dtype)
            module.max_pool2d_forward(x, y, idx, kernel, stride, padding, (1, 1))
            module.avg_pool2d_forward(x, avg, None, kernel, stride, padding, (1, 1))
            gx = np.empty_like(x)
            module.max_pool2d_backward(np.ones_like(y), idx, gx)
            outputs += [y, idx, avg, gx]
        results[name] = outputs
    for name, outputs in results.items():
        for got, want in zip(outputs, results["baseline"], strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_the_kernels_release_the_gil(num_threads):
    num_threads(1)
    module = _dispatch.load("_pool")
    x = random_array(16, (32, 32, 64, 64), np.float32)  # a few ms per call
    y, idx = np.empty((32, 32, 21, 21), np.float32), np.empty((32, 32, 21, 21), np.int64)
    gx = np.empty_like(x)
    geometry = ((3, 3), (3, 3), (0, 0), (1, 1))
    assert_releases_the_gil(lambda: module.max_pool2d_forward(x, y, idx, *geometry))
    assert_releases_the_gil(lambda: module.max_pool2d_backward(y, idx, gx))
    assert_releases_the_gil(lambda: module.avg_pool2d_forward(x, y, None, *geometry))
    assert_releases_the_gil(lambda: module.avg_pool2d_backward(y, gx, None, *geometry))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kernel", "stride", "padding"),
                         [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0))])
def test_against_torch(torch, kernel, stride, padding, dtype):
    x = random_array(11, (2, 3, 9, 10), dtype, "special")
    gy_shape = F.max_pool2d(x, kernel, stride, padding).shape
    gy = random_array(12, gy_shape, dtype)
    stride_arg = kernel if stride is None else stride

    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty, tidx = torch.nn.functional.max_pool2d(tx, kernel, stride_arg, padding, return_indices=True)
    ty.backward(torch.from_numpy(gy))
    y, idx = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert_close(F.max_pool2d_backward(gy, idx, x.shape), tx.grad.numpy(), dtype)

    finite = np.nan_to_num(x, nan=0.5, posinf=3.0, neginf=-3.0)
    tx = torch.from_numpy(finite.copy()).requires_grad_()
    ty = torch.nn.functional.avg_pool2d(tx, kernel, stride_arg, padding)
    ty.backward(torch.from_numpy(gy))
    assert_close(F.avg_pool2d(finite, kernel, stride, padding), ty.detach().numpy(), dtype)
    assert_close(F.avg_pool2d_backward(gy, x.shape, kernel, stride, padding), tx.grad.numpy(),
                 dtype)


# ----------------------------------------------------------------- bad input

X = np.zeros((2, 3, 8, 8), np.float32)
GY = np.zeros((2, 3, 4, 4), np.float32)
IDX = np.zeros((2, 3, 4, 4), np.int64)
BAD_IDX = IDX.copy()
BAD_IDX[1, 2, 3, 0] = 64
NEGATIVE_IDX = IDX.copy()
NEGATIVE_IDX[0, 1, 0, 2] = -1

BAD_CALLS = [
    (lambda: F.max_pool2d(X, 2, padding=2), ValueError,
     r"max_pool2d: window 0 of 6 along height holds only padding \(size 8, kernel_size 2, "
     r"stride 2, padding \(2, 2\), dilation 1\); every window must overlap the input"),
    (lambda: F.avg_pool2d(X, 2, padding=(0, 2)), ValueError,
     "avg_pool2d: window 0 of 6 along width holds only padding"),
    (lambda: F.max_pool2d(X, 9), ValueError, "max_pool2d: the kernel spans 9 along height"),
    (lambda: F.max_pool2d(X, 0), ValueError, "max_pool2d: kernel_size must be >= 1"),
    (lambda: F.max_pool2d(X, (1, 2**24 + 1)), ValueError,
     r"max_pool2d: a window may span at most 16777216 along each axis \(dilation"),
    (lambda: F.max_pool2d(X, 2, stride=0), ValueError, "max_pool2d: stride must be >= 1"),
    (lambda: F.max_pool2d(X, 2, padding=-1), ValueError, "max_pool2d: padding must be >= 0"),
    (lambda: F.max_pool2d(X, 2.0), TypeError, "max_pool2d: kernel_size must be an int"),
    (lambda: F.max_pool2d(X, True), TypeError, "max_pool2d: kernel_size must be an int, got bool"),
    (lambda: F.max_pool2d(X, (2, 2, 2)), ValueError,
     "max_pool2d: kernel_size must be an int or a pair"),
    (lambda: F.max_pool2d(X, np.array(2.0)), TypeError,
     r"max_pool2d: kernel_size must be an int, got an array of shape \(\) and dtype float64"),
    (lambda: F.avg_pool2d(X, 2, stride=np.array([[2, 2]])), TypeError,
     r"avg_pool2d: stride must be an int, got an array of shape \(1, 2\)"),
    # The kernels take sizes as Py_ssize_t: 2**63 would not even convert.
    (lambda: F.max_pool2d(X, 2, stride=2**63), ValueError,
     r"max_pool2d: stride must be at most 2\*\*62, got 9223372036854775808"),
    (lambda: F.avg_pool2d(X, 2, stride=(2, 2**80)), ValueError,
     r"avg_pool2d: stride must be at most 2\*\*62"),
    (lambda: F.avg_pool2d_backward(GY, X.shape, 2, stride=np.uint64(2**63)), ValueError,
     r"avg_pool2d_backward: stride must be at most 2\*\*62"),
    (lambda: F.max_pool2d(X.astype(np.int32), 2), TypeError, "max_pool2d: x must have dtype float"),
    (lambda: F.max_pool2d(X[0], 2), ValueError, r"max_pool2d: x must be 4-D \(N, C, H, W\)"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 0, 4)), 1, padding=0), ValueError,
     "max_pool2d: x must have non-empty"),
    (lambda: F.avg_pool2d(np.zeros((1, 1, 4, 0)), (1, 2), padding=(0, 1)), ValueError,
     "avg_pool2d: x must have non-empty"),
    (lambda: F.max_pool2d(X, 2, out=np.zeros((2, 3, 4, 5), np.float32)), ValueError,
     r"max_pool2d: out must have shape \(2, 3, 4, 4\)"),
    (lambda: F.max_pool2d(X, 2, out=np.zeros((2, 3, 4, 4))), ValueError,
     "max_pool2d: out must have .* dtype float32"),
    (lambda: F.max_pool2d(X, 2, out=np.zeros((2, 3, 4, 8), np.float32)[..., ::2]), ValueError,
     "max_pool2d: out must be C-contiguous"),
    (lambda: F.max_pool2d(X, 2, return_indices=True, out=GY.copy()), TypeError,
     "max_pool2d: out must be a tuple of 2"),
    (lambda: F.max_pool2d(X, 2, return_indices=True, out=(GY.copy(), GY.copy())), ValueError,
     r"max_pool2d: out\[1\] must have .* dtype int64"),
    (lambda: F.max_pool2d_backward(GY, BAD_IDX, X.shape), ValueError,
     r"max_pool2d_backward: idx\(1, 2, 3, 0\) = 64 lies outside its plane \[0, 64\)"),
    (lambda: F.max_pool2d_backward(GY, NEGATIVE_IDX, X.shape), ValueError,
     r"max_pool2d_backward: idx\(0, 1, 0, 2\) = -1 lies outside"),
    (lambda: F.max_pool2d_backward(GY, BAD_IDX.astype(np.uint8), X.shape), ValueError,
     r"max_pool2d_backward: idx\(1, 2, 3, 0\) = 64 lies outside"),
    (lambda: F.max_pool2d_backward(GY, np.full(IDX.shape, 2**63, np.uint64), X.shape), ValueError,
     "max_pool2d_backward: idx.* lies outside"),
    (lambda: F.max_pool2d_backward(GY, IDX[:, :, :3], X.shape), ValueError,
     r"max_pool2d_backward: idx has shape \(2, 3, 3, 4\) but gy has \(2, 3, 4, 4\)"),
    (lambda: F.max_pool2d_backward(GY, IDX.astype(np.float64), X.shape), TypeError,
     "max_pool2d_backward: idx must be an integer ndarray"),
    (lambda: F.max_pool2d_backward(GY, IDX.tolist(), X.shape), TypeError,
     "max_pool2d_backward: idx must be an integer ndarray"),
    (lambda: F.max_pool2d_backward(GY, IDX, (2, 4, 8, 8)), ValueError,
     r"max_pool2d_backward: gy has shape .* but x_shape is \(2, 4, 8, 8\)"),
    (lambda: F.max_pool2d_backward(GY, IDX, (2, 3, 8)), ValueError,
     "max_pool2d_backward: x_shape must be a 4-tuple"),
    (lambda: F.max_pool2d_backward(GY, IDX, (2, 3, 8, 0)), ValueError,
     "max_pool2d_backward: x_shape must hold .* non-empty"),
    (lambda: F.max_pool2d_backward(GY, IDX, (2, 3, 8, 8.0)), TypeError,
     "max_pool2d_backward: x_shape must be an int"),
    (lambda: F.max_pool2d_backward(GY, IDX, X.shape, out=GY), ValueError,
     "max_pool2d_backward: out must have shape"),
    (lambda: F.max_pool2d_backward(GY.astype(np.int64), IDX, X.shape), TypeError,
     "max_pool2d_backward: gy must have dtype float"),
    (lambda: F.avg_pool2d_backward(GY, X.shape, 3), ValueError,
     r"avg_pool2d_backward: gy must have shape \(2, 3, 2, 2\)"),
    (lambda: F.avg_pool2d_backward(GY[0], X.shape, 2), ValueError,
     "avg_pool2d_backward: gy must be 4-D"),
    (lambda: F.avg_pool2d_backward(GY, X.shape, 2, out=X.copy().view(np.int32)), ValueError,
     "avg_pool2d_backward: out must have .* dtype float32"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS,
                         ids=[f"{i}-{case[2][:40]}" for i, case in enumerate(BAD_CALLS)])
def test_bad_input_is_rejected_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_bad_int64_indices_leave_the_out_buffer_untouched():
    # int64 indices are checked by the scatter kernel, in a pass before it writes.
    out = np.full(X.shape, 7, np.float32)
    strided = np.stack([IDX, BAD_IDX], axis=-1)[..., 1]
    with pytest.raises(ValueError, match=r"idx\(1, 2, 3, 0\) = 64 lies outside"):
        F.max_pool2d_backward(GY + 1, strided, X.shape, out=out)
    assert (out == 7).all()


def test_sizes_may_be_numpy_ints_and_arrays():
    """0-d integer arrays count as ints and 1-D arrays of two as pairs, as NumPy ints do."""
    x = random_array(16, (2, 3, 9, 8), np.float32)
    y, idx = F.max_pool2d(x, np.array(3), np.array([2, 3]), padding=np.array(1),
                          return_indices=True)
    want, want_idx = F.max_pool2d(x, 3, (2, 3), padding=1, return_indices=True)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(idx, want_idx)
    gy = F.avg_pool2d(x, 3, 2, 1)
    np.testing.assert_array_equal(
        F.avg_pool2d_backward(gy, x.shape, np.array(3), np.int32(2), np.array([1, 1])),
        F.avg_pool2d_backward(gy, x.shape, 3, 2, 1))


def test_the_largest_stride_still_computes():
    x = random_array(17, (1, 2, 5, 6), np.float64)
    y, idx = F.max_pool2d(x, (2, 3), stride=2**62, return_indices=True)
    want, want_idx = reference.max_pool2d(x, (2, 3), stride=2**62, return_indices=True)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(F.avg_pool2d(x, 2, stride=(2**62, 1)),
                               reference.avg_pool2d(x, 2, stride=(2**62, 1)), rtol=1e-12)


def test_out_buffers_must_be_writeable_and_separate_from_the_inputs():
    x = random_array(15, (1, 2, 4, 4), np.float64)
    read_only = np.zeros((1, 2, 2, 2))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="max_pool2d: out is read-only"):
        F.max_pool2d(x, 2, out=read_only)
    with pytest.raises(ValueError, match="avg_pool2d: out overlaps an input"):
        F.avg_pool2d(x, 2, out=x.reshape(-1)[:8].reshape(1, 2, 2, 2))
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    gx = np.zeros(x.shape)
    gy = gx.reshape(-1)[:8].reshape(idx.shape)
    with pytest.raises(ValueError, match="max_pool2d_backward: out overlaps an input"):
        F.max_pool2d_backward(gy, idx, x.shape, out=gx)

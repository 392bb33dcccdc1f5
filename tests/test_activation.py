"""relu / relu_backward: results, in-place semantics, memory, threads, bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pool_testing import DTYPES, assert_releases_the_gil, layouts, poisoned_like, random_array

from cnnext import _reference as reference
from cnnext import functional as F
from cnnext._kernels import _activation

shapes = st.lists(st.integers(0, 7), min_size=1, max_size=4).map(tuple)


@given(shape=shapes, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_against_reference(shape, dtype, seed):
    x = random_array(seed, shape, dtype, "special")
    x.reshape(-1)[::3] = -0.0
    gy = random_array(seed + 1, shape, dtype)
    before = x.copy()
    y = F.relu(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, reference.relu(x).astype(dtype))
    # -0.0 and negatives become +0.0, like max(x, 0) in PyTorch.
    assert not np.signbit(y[y == 0]).any()
    gx = F.relu_backward(gy, x)
    np.testing.assert_array_equal(gx, reference.relu_backward(gy, x).astype(dtype))
    np.testing.assert_array_equal(x, before, strict=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_only_when_asked(dtype):
    x = random_array(1, (3, 4, 5), dtype, "special")
    want = F.relu(x)
    assert not np.array_equal(want, x, equal_nan=True)
    same = x.copy()
    assert F.relu(same, inplace=True) is same
    np.testing.assert_array_equal(same, want)
    # Non-contiguous arrays are modified in place too, through their view.
    for name, variant in layouts(x).items():
        assert F.relu(variant, inplace=True) is variant
        np.testing.assert_array_equal(variant, want, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_outputs_layouts_and_lists(dtype):
    x = random_array(2, (2, 3, 6, 7), dtype, "special")
    gy = random_array(3, x.shape, dtype)
    y, gx = F.relu(x), F.relu_backward(gy, x)
    buffer = poisoned_like(x)
    assert F.relu(x, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, y)
    buffer = poisoned_like(x)
    assert F.relu_backward(gy, x, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, gx)
    for (name, x_variant), gy_variant in zip(layouts(x).items(), layouts(gy).values(),
                                             strict=True):
        np.testing.assert_array_equal(F.relu(x_variant), y, err_msg=name)
        np.testing.assert_array_equal(F.relu_backward(gy_variant, x_variant), gx, err_msg=name)
    np.testing.assert_array_equal(F.relu(x.tolist()), y.astype(np.float64))
    x.flags.writeable = False
    gy.flags.writeable = False
    np.testing.assert_array_equal(F.relu(x), y)
    np.testing.assert_array_equal(F.relu_backward(gy, x), gx)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_subclasses_are_read_as_plain_arrays():
    """np.matrix stays 2-D when reshaped: the kernels must see a plain flat view."""
    x = random_array(5, (3, 4), np.float64, "special")
    gy = random_array(6, x.shape, np.float64)
    y, gx = F.relu(x), F.relu_backward(gy, x)
    for x_in, gy_in in [(np.asmatrix(x), gy), (x, np.asmatrix(gy)),
                        (np.asmatrix(x), np.asmatrix(gy)), (x.view(np.recarray), gy)]:
        got = F.relu(x_in)
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, y)
        got = F.relu_backward(gy_in, x_in)
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, gx)
    matrix = np.asmatrix(x.copy())
    assert F.relu(matrix, inplace=True) is matrix
    np.testing.assert_array_equal(matrix, y)
    with pytest.raises(TypeError, match=r"relu: out must be a numpy\.ndarray, got matrix"):
        F.relu(x, out=np.asmatrix(np.empty_like(x)))


def test_results_do_not_depend_on_the_thread_count(num_threads):
    # Large enough (> 65536 elements) for the kernels to go parallel.
    x = random_array(4, (5, 7, 61, 67), np.float32, "special")
    gy = random_array(5, x.shape, np.float32)
    results = []
    for threads in (1, 2, 4):
        num_threads(threads)
        results.append((F.relu(x), F.relu_backward(gy, x)))
    for got in results[1:]:
        for a, b in zip(got, results[0], strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results[0][0], reference.relu(x).astype(np.float32))


def test_the_kernels_release_the_gil(num_threads):
    num_threads(1)
    x = random_array(8, (1 << 23,), np.float32)  # a few ms per call
    out = np.empty_like(x)
    assert_releases_the_gil(lambda: _activation.relu(x, out))
    assert_releases_the_gil(lambda: _activation.relu_backward(x, x, out))


def test_against_torch(torch):
    x = random_array(6, (4, 5, 6), np.float32, "special")
    gy = random_array(7, x.shape, np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.relu(tx)
    ty.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(F.relu(x), ty.detach().numpy())
    # Including at NaN inputs, where the gradient passes through like the value.
    assert np.isnan(x).any()
    np.testing.assert_array_equal(F.relu_backward(gy, x), tx.grad.numpy())


X = np.zeros((2, 3), np.float32)
READ_ONLY = np.zeros((2, 3))
READ_ONLY.flags.writeable = False

BAD_CALLS = [
    (lambda: F.relu(X.astype(np.int64)), TypeError, "relu: x must have dtype float32 or float64"),
    (lambda: F.relu(X, inplace=True, out=X.copy()), ValueError, "relu: give either"),
    (lambda: F.relu(READ_ONLY, inplace=True), ValueError, "relu: x is read-only"),
    (lambda: F.relu([1.0, -1.0], inplace=True), TypeError, "relu: inplace=True needs x to be"),
    (lambda: F.relu(X, out=np.zeros((3, 2), np.float32)), ValueError, "relu: out must have shape"),
    (lambda: F.relu(X, out=X), ValueError, "relu: out overlaps an input"),
    (lambda: F.relu_backward(X, X[:1]), ValueError,
     r"relu_backward: gy has shape \(2, 3\) but x has \(1, 3\)"),
    (lambda: F.relu_backward(X, X.astype(np.float64)), TypeError,
     "relu_backward: x has dtype float64 but gy has float32"),
    (lambda: F.relu_backward(X, X.astype(bool)), TypeError, "relu_backward: x must have dtype"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS,
                         ids=[case[2][:40] for case in BAD_CALLS])
def test_bad_input_is_rejected_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()

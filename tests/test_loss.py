"""softmax / softmax_cross_entropy: results, stability, threads, PyTorch, bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pool_testing import DTYPES, assert_close, assert_releases_the_gil, layouts, random_array

from cnnext import _reference as reference
from cnnext import functional as F
from cnnext._kernels import _loss

LABEL_DTYPES = [np.int64, np.int32, np.uint8, np.int8, np.uint64]


@given(rows=st.integers(1, 40), classes=st.integers(1, 30), dtype=st.sampled_from(DTYPES),
       label_dtype=st.sampled_from(LABEL_DTYPES), scale=st.sampled_from([1.0, 30.0, 1e4]),
       seed=st.integers(0, 2**32 - 1))
def test_against_reference(rows, classes, dtype, label_dtype, scale, seed):
    logits = (random_array(seed, (rows, classes), np.float64) * scale).astype(dtype)
    labels = np.random.default_rng(seed).integers(0, classes, rows).astype(label_dtype)
    before = (logits.copy(), labels.copy())
    loss, grad = F.softmax_cross_entropy(logits, labels)
    want_loss, want_grad = reference.softmax_cross_entropy(logits, labels)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert grad.dtype == logits.dtype and grad.shape == logits.shape
    # Relative to the loss of each row, log(sum exp) is exact to a few ulps.
    assert loss == pytest.approx(want_loss, rel=1e-5 if dtype == np.float32 else 1e-12,
                                 abs=1e-6 if dtype == np.float32 else 1e-13)
    assert_close(grad, want_grad, dtype)
    assert_close(F.softmax(logits), reference.softmax(logits), dtype)
    np.testing.assert_array_equal(logits, before[0])
    np.testing.assert_array_equal(labels, before[1])


def test_huge_logits_give_a_finite_exact_loss():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], np.float32)
    loss, grad = F.softmax_cross_entropy(logits, [0, 0])
    # Row 0 is certain and right (loss 0); row 1 is wrong by 2e4 + log 2.
    assert loss == pytest.approx((0 + 2e4 + np.log(2)) / 2, rel=1e-6)
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0.25, 0.25]], atol=1e-7)
    p = F.softmax(logits)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, [[1, 0, 0], [0, 0.5, 0.5]], atol=1e-7)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((4, 6)) * 3
    labels = rng.integers(0, 6, 4)
    _, grad = F.softmax_cross_entropy(logits, labels)
    eps = 1e-6
    numeric = np.empty_like(logits)
    for position in np.ndindex(*logits.shape):
        shifted = logits.copy()
        shifted[position] += eps
        plus = F.softmax_cross_entropy(shifted, labels)[0]
        shifted[position] -= 2 * eps
        minus = F.softmax_cross_entropy(shifted, labels)[0]
        numeric[position] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_along_any_axis_and_layout(dtype):
    x = random_array(4, (3, 4, 5), dtype) * 5
    for axis in (0, 1, 2, -1, -3):
        p = F.softmax(x, axis=axis)
        want = np.moveaxis(reference.softmax(np.moveaxis(x, axis, -1)), -1, axis)
        assert p.shape == x.shape and p.dtype == x.dtype
        assert_close(p, want, dtype)
    for name, variant in layouts(x).items():
        np.testing.assert_array_equal(F.softmax(variant), F.softmax(x), err_msg=name)
    # Empty along the softmax axis or another: an empty result, as PyTorch gives.
    for shape, axis in (((2, 0), -1), ((0, 3), 0), ((0, 3), -1), ((2, 0, 3), 1), ((0,), 0)):
        p = F.softmax(np.zeros(shape, dtype), axis=axis)
        assert p.shape == shape and p.dtype == dtype
    np.testing.assert_array_equal(F.softmax(np.zeros(4, dtype)), np.full(4, 0.25, dtype))


def test_non_contiguous_read_only_logits_and_list_labels():
    logits = random_array(5, (6, 7), np.float64)
    labels = np.arange(6) % 7
    loss, grad = F.softmax_cross_entropy(logits, labels)
    for name, variant in layouts(logits).items():
        got_loss, got_grad = F.softmax_cross_entropy(variant, labels.tolist())
        assert got_loss == loss, name
        np.testing.assert_array_equal(got_grad, grad, err_msg=name)
    strided_labels = np.repeat(labels, 2)[::2]
    assert F.softmax_cross_entropy(logits, strided_labels)[0] == loss
    logits.flags.writeable = False
    labels.flags.writeable = False
    assert F.softmax_cross_entropy(logits, labels)[0] == loss


def test_nan_logits_give_nan_not_garbage():
    logits = np.zeros((2, 3))
    logits[1, 2] = np.nan
    loss, grad = F.softmax_cross_entropy(logits, [0, 1])
    assert np.isnan(loss)
    assert np.isfinite(grad[0]).all() and np.isnan(grad[1]).all()


def test_results_do_not_depend_on_the_thread_count(num_threads):
    # Large enough (> 16384 logits) for the kernels to go parallel.
    logits = random_array(6, (3001, 10), np.float32) * 4
    labels = np.random.default_rng(6).integers(0, 10, 3001)
    results = []
    for threads in (1, 2, 4):
        num_threads(threads)
        results.append((*F.softmax_cross_entropy(logits, labels), F.softmax(logits)))
    for loss, grad, p in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(grad, results[0][1])
        np.testing.assert_array_equal(p, results[0][2])


def test_the_kernels_release_the_gil(num_threads):
    num_threads(1)
    logits = random_array(9, (1 << 16, 32), np.float32)  # a few ms per call
    labels = np.zeros(1 << 16, np.int64)
    out = np.empty_like(logits)
    assert_releases_the_gil(lambda: _loss.softmax_cross_entropy(logits, labels, out))
    assert_releases_the_gil(lambda: _loss.softmax(logits, out))


@pytest.mark.parametrize("dtype", DTYPES)
def test_against_torch(torch, dtype):
    logits = (random_array(7, (16, 10), np.float64) * 8).astype(dtype)
    logits[0, 3] = 1e4
    labels = np.random.default_rng(7).integers(0, 10, 16)
    tz = torch.from_numpy(logits.copy()).requires_grad_()
    tloss = torch.nn.functional.cross_entropy(tz, torch.from_numpy(labels))
    tloss.backward()
    loss, grad = F.softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(tloss.item(), rel=1e-6 if dtype == np.float32 else 1e-13)
    assert_close(grad, tz.grad.numpy(), dtype)
    assert_close(F.softmax(logits), torch.softmax(torch.from_numpy(logits), -1).numpy(), dtype)


Z = np.zeros((3, 4), np.float32)

BAD_CALLS = [
    (lambda: F.softmax_cross_entropy(Z, [0, 1, 4]), ValueError,
     r"softmax_cross_entropy: labels\[2\] = 4 is outside \[0, 4\)"),
    (lambda: F.softmax_cross_entropy(Z, np.array([0, -1, 2])), ValueError,
     r"softmax_cross_entropy: labels\[1\] = -1 is outside"),
    # int64 labels are checked by the kernel, in the pass that reads them: also strided.
    (lambda: F.softmax_cross_entropy(Z, np.array([0, 9, 1, 9, 5])[::2]), ValueError,
     r"softmax_cross_entropy: labels\[2\] = 5 is outside \[0, 4\)"),
    (lambda: F.softmax_cross_entropy(Z, np.array([0, 1, 2**63], np.uint64)), ValueError,
     r"softmax_cross_entropy: labels\[2\] = 9223372036854775808 is outside"),
    (lambda: F.softmax_cross_entropy(Z, np.array([0, 1, 200], np.uint8)), ValueError,
     r"softmax_cross_entropy: labels\[2\] = 200 is outside"),
    (lambda: F.softmax_cross_entropy(Z, [0, 1]), ValueError,
     r"softmax_cross_entropy: labels must have shape \(3,\)"),
    (lambda: F.softmax_cross_entropy(Z, [[0, 1, 2]]), ValueError,
     r"softmax_cross_entropy: labels must have shape \(3,\)"),
    (lambda: F.softmax_cross_entropy(Z, [0.0, 1.0, 2.0]), TypeError,
     "softmax_cross_entropy: labels must be integers, got dtype float64"),
    (lambda: F.softmax_cross_entropy(Z, np.array([True, False, True])), TypeError,
     "softmax_cross_entropy: labels must be integers, got dtype bool"),
    (lambda: F.softmax_cross_entropy(Z[0], [0]), ValueError,
     r"softmax_cross_entropy: logits must be 2-D \(N, K\)"),
    (lambda: F.softmax_cross_entropy(Z.astype(np.int32), [0, 1, 2]), TypeError,
     "softmax_cross_entropy: logits must have dtype float"),
    (lambda: F.softmax_cross_entropy(np.zeros((0, 4)), []), ValueError,
     "softmax_cross_entropy: logits must have at least one row"),
    (lambda: F.softmax_cross_entropy(np.zeros((2, 0)), [0, 0]), ValueError,
     "softmax_cross_entropy: logits must have at least one row and one class"),
    (lambda: F.softmax(Z, axis=2), ValueError, r"softmax: axis 2 is out of range"),
    (lambda: F.softmax(Z, axis=1.0), TypeError, "softmax: axis must be an int"),
    (lambda: F.softmax(np.float64(1.0)), ValueError, "softmax: x must be at least 1-D"),
    (lambda: F.softmax(Z.astype(np.float16)), TypeError, "softmax: x must have dtype float32"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS,
                         ids=[f"{i}-{case[2][:30]}" for i, case in enumerate(BAD_CALLS)])
def test_bad_input_is_rejected_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()

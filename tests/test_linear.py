"""linear / linear_backward: reference, layouts, out= buffers, threads, ISA builds, PyTorch."""


import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pool_testing import DTYPES, assert_releases_the_gil, layouts, poisoned_like, random_array

from cnnext import _dispatch
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext._functional import dense as dense_module

# Dot products of up to ~1400 terms, summed in another order than the reference's.
TOLERANCE = {np.dtype(np.float32): {"rtol": 1e-5, "atol": 5e-5},
             np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-12}}


def assert_close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, **TOLERANCE[np.dtype(dtype)])


def problem(seed, examples, n_in, n_out, dtype):
    """x (N, I), w (O, I), b (O,), gy (N, O)."""
    return (random_array(seed, (examples, n_in), dtype),
            random_array(seed + 1, (n_out, n_in), dtype),
            random_array(seed + 2, (n_out,), dtype),
            random_array(seed + 3, (examples, n_out), dtype))


def check_against_reference(x, w, b, gy, need_input_grad=True):
    """Forward and backward against the reference, into poisoned out= buffers too."""
    dtype = x.dtype
    before = [a.copy() for a in (x, w, b, gy)]
    y = F.linear(x, w, b)
    assert y.shape == (len(x), len(w)) and y.dtype == dtype
    assert_close(y, reference.linear(x, w, b), dtype)
    assert_close(F.linear(x, w), reference.linear(x, w), dtype)
    out = poisoned_like(y)
    assert F.linear(x, w, b, out=out) is out
    np.testing.assert_array_equal(out, y)
    want = reference.linear_backward(gy, x, w, need_input_grad)
    buffers = (poisoned_like(x) if need_input_grad else None, poisoned_like(w), poisoned_like(b))
    for out in (None, buffers):
        got = F.linear_backward(gy, x, w, need_input_grad, out=out)
        if out is not None:
            assert all(g is o for g, o in zip(got, out, strict=True))
        assert (got[0] is None) == (not need_input_grad)
        for g, expected in zip(got, want, strict=True):
            if expected is not None:
                assert g.dtype == dtype
                assert_close(g, expected, dtype)
    for array, saved in zip((x, w, b, gy), before, strict=True):
        np.testing.assert_array_equal(array, saved)


@given(examples=st.integers(0, 9), n_in=st.integers(1, 70), n_out=st.integers(1, 12),
       dtype=st.sampled_from(DTYPES), need_input_grad=st.booleans(),
       seed=st.integers(0, 2**30))
def test_against_reference(examples, n_in, n_out, dtype, need_input_grad, seed):
    check_against_reference(*problem(seed, examples, n_in, n_out, dtype), need_input_grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_notebook_layer_shape(dtype):
    """13 x 13 x 8 = 1352 features, 10 classes: the seed network's classifier."""
    for examples in (1, 3, 64):
        check_against_reference(*problem(examples, examples, 1352, 10, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_in_any_layout(dtype):
    x, w, b, gy = problem(5, 6, 37, 7, dtype)
    y = F.linear(x, w, b)
    grads = F.linear_backward(gy, x, w)
    for name, variant in {**layouts(x), "read-only": x.copy()}.items():
        variant.flags.writeable = name != "read-only"
        np.testing.assert_array_equal(F.linear(variant, w, b), y, err_msg=name)
    for name, variant in layouts(w).items():
        np.testing.assert_array_equal(F.linear(x, variant, b), y, err_msg=name)
        for got, want in zip(F.linear_backward(gy, x, variant), grads, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)
    for name, variant in layouts(b).items():
        np.testing.assert_array_equal(F.linear(x, w, variant), y, err_msg=name)
    for name, variant in layouts(gy).items():
        for got, want in zip(F.linear_backward(variant, x, w), grads, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_results_do_not_depend_on_the_thread_count(num_threads):
    # 300 x 10 x 1352 multiply-adds: above the kernels' threshold for threads.
    x, w, b, gy = problem(7, 300, 1352, 10, np.float32)
    results = []
    for threads in (1, 2, 3):
        num_threads(threads)
        results.append((F.linear(x, w, b), *F.linear_backward(gy, x, w)))
    for result in results[1:]:
        for got, want in zip(result, results[0], strict=True):
            np.testing.assert_array_equal(got, want)


def test_the_kernels_release_the_gil(num_threads):
    num_threads(1)
    x, w, b, gy = problem(8, 2048, 1024, 64, np.float32)  # a few ms per call
    y, gx, gw, gb = np.empty_like(gy), np.empty_like(x), np.empty_like(w), np.empty_like(b)
    forward, backward_input, backward_params = dense_module._KERNELS[x.dtype]
    assert_releases_the_gil(lambda: forward(x, w, b, y))
    assert_releases_the_gil(lambda: backward_input(gy, w, gx))
    assert_releases_the_gil(lambda: backward_params(gy, x, 1, False, gw, gb))


@pytest.mark.parametrize("isa", list(_dispatch.built_variants("_dense")))
def test_every_instruction_set_build_against_reference(isa, monkeypatch):
    module = _dispatch.built_variants("_dense")[isa]
    assert module.compiled_isa() == isa
    monkeypatch.setattr(dense_module, "_KERNELS", dense_module._specialised(module))
    for dtype in DTYPES:
        # Every tile and tail: 1 to 9 examples, 1 to 9 outputs, rows of 1 to 70.
        for examples, n_out, n_in in ((1, 1, 1), (2, 3, 5), (5, 9, 17), (9, 5, 70),
                                      (4, 8, 64), (3, 10, 33)):
            check_against_reference(*problem(examples * n_in, examples, n_in, n_out, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_against_torch(torch, dtype):
    x, w, b, gy = problem(9, 5, 1352, 10, dtype)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.from_numpy(gy))
    assert_close(F.linear(x, w, b), ty.detach().numpy(), dtype)
    for got, want in zip(F.linear_backward(gy, x, w), (tx.grad, tw.grad, tb.grad), strict=True):
        assert_close(got, want.numpy(), dtype)


X = np.zeros((3, 5), np.float32)
W = np.zeros((4, 5), np.float32)
GY = np.zeros((3, 4), np.float32)

BAD_CALLS = [
    (lambda: F.linear(X, W.T), ValueError, r"linear: x has 5 features \(shape \(3, 5\)\) but w "
                                           r"takes 4"),
    (lambda: F.linear(X[0], W), ValueError, r"linear: x must be 2-D \(N, I\)"),
    (lambda: F.linear(X, W[:0]), ValueError, "linear: w must have at least one row"),
    (lambda: F.linear(X, W.astype(np.float64)), TypeError, "linear: w has dtype float64"),
    (lambda: F.linear(X.astype(int), W), TypeError, "linear: x must have dtype float32"),
    (lambda: F.linear(X, W, np.zeros(5, np.float32)), ValueError,
     r"linear: b must have shape \(4,\)"),
    (lambda: F.linear(X, W, np.zeros(4)), TypeError, "linear: b has dtype float64"),
    (lambda: F.linear(X, W, out=np.zeros((3, 4))), ValueError,
     r"linear: out must have shape \(3, 4\) and dtype float32"),
    (lambda: F.linear_backward(GY.T, X, W), ValueError,
     r"linear_backward: gy must have the shape of linear's output \(3, 4\)"),
    (lambda: F.linear_backward(GY, X, W, need_input_grad=1), TypeError,
     "linear_backward: need_input_grad must be True or False, got 1"),
    (lambda: F.linear_backward(GY, X, W, False, out=(np.zeros_like(X), None, None)), ValueError,
     r"linear_backward: out\[0\] \(gx\) must be None"),
    (lambda: F.linear_backward(GY, X, W, out=(None, X[:, :4].T.copy()[:4], None)), ValueError,
     r"out\[1\] \(gw\) must have shape \(4, 5\)"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS,
                         ids=[f"{i}-{case[2][:30]}" for i, case in enumerate(BAD_CALLS)])
def test_bad_input_raises_named_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()

"""Pooling options beyond PyTorch's defaults: asymmetric and large padding, dilation,
ceil mode, padding excluded from the average's divisor.

These are what exported models (ONNX's MaxPool/AveragePool attributes, PyTorch's
``ceil_mode``/``count_include_pad``/``dilation``) use.  Checked like every kernel:
against the float64 reference (values and indices exactly for max pooling),
finite differences, PyTorch, poisoned outputs, other memory layouts, thread
counts and every instruction-set build.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pool_testing import DTYPES, assert_close, layouts, poisoned_like, random_array

from cnnext import Sequential, _dispatch, load_model
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext.layers import AvgPool2D, Flatten, MaxPool2D


def _axis(draw, max_size):
    """(size, kernel, stride, (before, after), dilation) along one axis, every
    window overlapping the input."""
    kernel = draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 3))
    extent = dilation * (kernel - 1) + 1
    before = draw(st.integers(0, extent - 1))
    after = draw(st.integers(0, extent - 1))
    smallest = max(1, extent - before - after)
    size = draw(st.integers(smallest, max(smallest, max_size)))
    return size, kernel, draw(st.integers(1, 3)), (before, after), dilation


@st.composite
def pool_options(draw):
    """(shape, kwargs, empty) of a pooling call with the new options; ``empty``: some
    window holds only padding (dilation can step over the whole input), which the
    reference shows as an index of -1 and cnnext must refuse."""
    height = _axis(draw, 9)
    width = _axis(draw, 13)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), height[0], width[0])
    kwargs = {"kernel_size": (height[1], width[1]), "stride": (height[2], width[2]),
              "padding": (height[3], width[3]), "dilation": (height[4], width[4]),
              "ceil_mode": draw(st.booleans())}
    _, idx = reference.max_pool2d(np.zeros(shape), return_indices=True, **kwargs)
    return shape, kwargs, bool((idx < 0).any())


def _avg_kwargs(kwargs, count_include_pad):
    return {**kwargs, "count_include_pad": count_include_pad}


def check_max(x, kwargs, seed):
    before = x.copy()
    y, idx = F.max_pool2d(x, return_indices=True, **kwargs)
    want_y, want_idx = reference.max_pool2d(x, return_indices=True, **kwargs)
    np.testing.assert_array_equal(y, want_y.astype(x.dtype))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(F.max_pool2d(x, **kwargs), y)
    gy = random_array(seed, y.shape, x.dtype)
    assert_close(F.max_pool2d_backward(gy, idx, x.shape),
                 reference.max_pool2d_backward(gy, idx, x.shape), x.dtype)
    np.testing.assert_array_equal(x, before)


def check_avg(x, kwargs, seed):
    before = x.copy()
    y = F.avg_pool2d(x, **kwargs)
    assert_close(y, reference.avg_pool2d(x, **kwargs), x.dtype)
    gy = random_array(seed, y.shape, x.dtype)
    assert_close(F.avg_pool2d_backward(gy, x.shape, **kwargs),
                 reference.avg_pool2d_backward(gy, x.shape, **kwargs), x.dtype)
    np.testing.assert_array_equal(x, before)


@given(problem=pool_options(), dtype=st.sampled_from(DTYPES),
       kind=st.sampled_from(["normal", "ties", "special"]), seed=st.integers(0, 2**32 - 1))
def test_max_pool_options_against_reference(problem, dtype, kind, seed):
    shape, kwargs, empty = problem
    x = random_array(seed, shape, dtype, kind)
    if empty:
        with pytest.raises(ValueError, match="holds only padding"):
            F.max_pool2d(x, **kwargs)
        return
    check_max(x, kwargs, seed)


@given(problem=pool_options(), dtype=st.sampled_from(DTYPES), include=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_avg_pool_options_against_reference(problem, dtype, include, seed):
    shape, kwargs, empty = problem
    x = random_array(seed, shape, dtype)
    if empty:
        with pytest.raises(ValueError, match="holds only padding"):
            F.avg_pool2d(x, **_avg_kwargs(kwargs, include))
        return
    check_avg(x, _avg_kwargs(kwargs, include), seed)


# Each option alone and together, on the 2x2 shape (whose fast path they must
# leave), overlapping windows, odd sizes and rows longer than a stack block.
GRID = [
    ((2, 3, 7, 9), dict(kernel_size=2, ceil_mode=True)),
    ((1, 2, 8, 8), dict(kernel_size=2, padding=((0, 1), (1, 0)))),
    ((1, 2, 8, 9), dict(kernel_size=2, stride=1, dilation=2)),
    ((2, 2, 9, 11), dict(kernel_size=3, stride=2, padding=2)),
    ((1, 1, 5, 600), dict(kernel_size=3, stride=2, padding=((1, 2), (0, 2)), ceil_mode=True)),
    ((1, 3, 10, 10), dict(kernel_size=(3, 2), stride=(2, 3), padding=((2, 0), (1, 1)),
                          dilation=(2, 3), ceil_mode=True)),
    ((1, 1, 1, 31), dict(kernel_size=(1, 5), stride=(1, 2), padding=((0, 0), (2, 2)),
                         dilation=(1, 2))),  # a 1-D pool as H = 1
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "kwargs"), GRID)
def test_grid_against_reference(shape, kwargs, dtype):
    for seed, kind in enumerate(["normal", "ties", "special"]):
        x = random_array(seed, shape, dtype, kind)
        check_max(x, kwargs, seed)
        if kind == "normal":
            for include in (True, False):
                check_avg(x, _avg_kwargs(kwargs, include), seed)


def test_ceil_mode_keeps_a_partial_last_window_unless_it_starts_in_the_padding():
    x = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    # ONNX's maxpool_2d_ceil: 4x4, kernel 3, stride 2 -> 2x2 with partial windows.
    y = F.max_pool2d(x, 3, 2, ceil_mode=True)
    np.testing.assert_array_equal(y[0, 0], [[11, 12], [15, 16]])
    assert F.max_pool2d(x, 3, 2).shape == (1, 1, 1, 1)
    # A last window starting in the padding after the input is dropped: 2x2,
    # kernel 1, stride 2 gives 1x1 (ONNX's ceil_output_size_reduce_by_one).
    assert F.max_pool2d(x[:, :, :2, :2], 1, 2, ceil_mode=True).shape == (1, 1, 1, 1)
    # Partial windows average what they hold: padding inside the padded input
    # counts when asked, ceil mode's overhang never does.
    avg = F.avg_pool2d(x, 3, 2, ceil_mode=True)
    np.testing.assert_allclose(avg[0, 0], [[6, 7.5], [12, 13.5]])


def test_padding_excluded_from_the_divisor():
    x = np.ones((1, 1, 2, 2))
    y = F.avg_pool2d(x, 2, stride=1, padding=1, count_include_pad=False)
    np.testing.assert_array_equal(y, np.ones((1, 1, 3, 3)))
    gx = F.avg_pool2d_backward(np.ones_like(y), x.shape, 2, stride=1, padding=1,
                               count_include_pad=False)
    # Corner element: windows holding 1, 2, 2 and 4 input elements.
    np.testing.assert_allclose(gx[0, 0], np.full((2, 2), 1 + 1 / 2 + 1 / 2 + 1 / 4))


def test_asymmetric_padding_equals_explicit_padding():
    x = random_array(3, (2, 3, 7, 8), np.float64)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1)), constant_values=-np.inf)
    got = F.max_pool2d(x, 3, 2, ((1, 2), (0, 1)))
    np.testing.assert_array_equal(got, F.max_pool2d(padded, 3, 2))
    zero = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1)))
    np.testing.assert_allclose(F.avg_pool2d(x, 3, 2, ((1, 2), (0, 1))), F.avg_pool2d(zero, 3, 2),
                               rtol=1e-14)
    # Lists and arrays of pairs are padding too.
    np.testing.assert_array_equal(F.max_pool2d(x, 3, 2, [[1, 2], [0, 1]]), got)
    np.testing.assert_array_equal(F.max_pool2d(x, 3, 2, np.array([[1, 2], [0, 1]])), got)


def test_dilated_windows_skip_elements():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    # ONNX's maxpool_2d_dilations: kernel 2, dilation 2, stride 1.
    y, idx = F.max_pool2d(x, 2, 1, dilation=2, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[10, 11], [14, 15]])
    np.testing.assert_array_equal(idx[0, 0], [[10, 11], [14, 15]])
    np.testing.assert_array_equal(F.avg_pool2d(x, 2, 1, dilation=2)[0, 0],
                                  [[5, 6], [9, 10]])


def test_a_window_of_minus_infinity_points_to_its_first_in_plane_tap():
    x = np.full((1, 1, 5, 5), -np.inf)
    _, idx = F.max_pool2d(x, 2, 2, ((3, 0), (3, 0)), return_indices=True, dilation=3)
    # Window (0, 0) starts at (-3, -3); its in-plane tap is (0, 0).  Window
    # (0, 1) starts at column -1: its first in-plane column is 2.
    np.testing.assert_array_equal(idx[0, 0], reference.max_pool2d(
        x, 2, 2, ((3, 0), (3, 0)), return_indices=True, dilation=3)[1][0, 0])
    assert idx[0, 0, 0, 0] == 0 and idx[0, 0, 0, 1] == 2


def numerical_gradient(function, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (function(x + step) - function(x - step)) / (2 * eps)
    return grad


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=((2, 0), (1, 2)), ceil_mode=True),
    dict(kernel_size=2, stride=1, dilation=(2, 1), padding=((1, 1), (0, 1))),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=1, ceil_mode=True, dilation=2),
])
@pytest.mark.parametrize("include", [True, False])
def test_gradients_match_finite_differences(kwargs, include):
    x = random_array(20, (1, 2, 6, 5), np.float64)
    avg_kwargs = _avg_kwargs(kwargs, include)
    weights = random_array(21, F.avg_pool2d(x, **avg_kwargs).shape, np.float64)
    np.testing.assert_allclose(
        F.avg_pool2d_backward(weights, x.shape, **avg_kwargs),
        numerical_gradient(lambda v: np.sum(weights * F.avg_pool2d(v, **avg_kwargs)), x),
        atol=1e-8)
    y, idx = F.max_pool2d(x, return_indices=True, **kwargs)
    weights = random_array(22, y.shape, np.float64)
    np.testing.assert_allclose(
        F.max_pool2d_backward(weights, idx, x.shape),
        numerical_gradient(lambda v: np.sum(weights * F.max_pool2d(v, **kwargs)), x),
        atol=1e-8)


POISON_KWARGS = [dict(kernel_size=3, stride=2, padding=((2, 1), (0, 2)), ceil_mode=True,
                      dilation=(1, 2)),
                 dict(kernel_size=2, ceil_mode=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", POISON_KWARGS)
def test_outputs_are_written_in_full_into_poisoned_buffers(dtype, kwargs):
    x = random_array(3, (2, 3, 9, 11), dtype, "special")
    y, idx = F.max_pool2d(x, return_indices=True, **kwargs)
    buffers = (poisoned_like(y), poisoned_like(idx))
    F.max_pool2d(x, return_indices=True, out=buffers, **kwargs)
    np.testing.assert_array_equal(buffers[0], y)
    np.testing.assert_array_equal(buffers[1], idx)
    finite = np.nan_to_num(x, nan=0.5, posinf=2.0, neginf=-2.0)
    gy = random_array(4, y.shape, dtype)
    for include in (True, False):
        avg_kwargs = _avg_kwargs(kwargs, include)
        avg = F.avg_pool2d(finite, **avg_kwargs)
        buffer = poisoned_like(avg)
        assert F.avg_pool2d(finite, out=buffer, **avg_kwargs) is buffer
        np.testing.assert_array_equal(buffer, avg)
        gx = F.avg_pool2d_backward(gy, x.shape, **avg_kwargs)
        buffer = poisoned_like(x)
        assert F.avg_pool2d_backward(gy, x.shape, out=buffer, **avg_kwargs) is buffer
        np.testing.assert_array_equal(buffer, gx)
        assert np.isfinite(gx).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_memory_layout_gives_the_same_results(dtype):
    kwargs = POISON_KWARGS[0]
    x = random_array(5, (2, 3, 8, 9), dtype, "ties")
    y, idx = F.max_pool2d(x, return_indices=True, **kwargs)
    avg = F.avg_pool2d(x, count_include_pad=False, **kwargs)
    gy = random_array(6, y.shape, dtype)
    gx = F.avg_pool2d_backward(gy, x.shape, count_include_pad=False, **kwargs)
    for name, variant in layouts(x).items():
        got_y, got_idx = F.max_pool2d(variant, return_indices=True, **kwargs)
        np.testing.assert_array_equal(got_y, y, err_msg=name)
        np.testing.assert_array_equal(got_idx, idx, err_msg=name)
        np.testing.assert_array_equal(F.avg_pool2d(variant, count_include_pad=False, **kwargs),
                                      avg, err_msg=name)
    for name, variant in layouts(gy).items():
        np.testing.assert_array_equal(
            F.avg_pool2d_backward(variant, x.shape, count_include_pad=False, **kwargs), gx,
            err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_depend_on_the_thread_count(num_threads, dtype):
    x = random_array(8, (3, 8, 40, 41), dtype, "ties")  # large enough to go parallel
    kwargs = POISON_KWARGS[0]
    results = []
    for threads in (1, 2, 4):
        num_threads(threads)
        y, idx = F.max_pool2d(x, return_indices=True, **kwargs)
        gy = random_array(9, y.shape, dtype)
        results.append([y, idx, F.avg_pool2d(x, count_include_pad=False, **kwargs),
                        F.avg_pool2d_backward(gy, x.shape, count_include_pad=False, **kwargs)])
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_instruction_set_build_gives_the_same_results(dtype):
    modules = _dispatch.built_variants("_pool")
    assert "baseline" in modules
    x = random_array(10, (2, 3, 11, 37), dtype, "special")
    gy_source = random_array(11, (2, 3, 20, 40), dtype)
    results = {}
    for name, module in modules.items():
        outputs = []
        for kernel, stride, padding, dilation in [((2, 2), (2, 2), (0, 0), (1, 1)),
                                                  ((3, 2), (2, 1), (2, 0), (2, 3))]:
            shape = F.max_pool2d(x, kernel, stride, ((padding[0], 1), (padding[1], 0)),
                                 dilation=dilation, ceil_mode=True).shape
            y, idx = np.empty(shape, dtype), np.empty(shape, np.int64)
            avg = np.empty(shape, dtype)
            divisors = np.arange(1, 1 + shape[2] * shape[3], dtype=dtype).reshape(shape[2:])
            module.max_pool2d_forward(x, y, idx, kernel, stride, padding, dilation)
            module.avg_pool2d_forward(np.nan_to_num(x), avg, divisors, kernel, stride, padding,
                                      dilation)
            gx = np.empty_like(x)
            gy = np.ascontiguousarray(gy_source[:, :, :shape[2], :shape[3]])
            module.avg_pool2d_backward(gy, gx, divisors, kernel, stride, padding, dilation)
            outputs += [y, idx, avg, gx]
        results[name] = outputs
    for name, outputs in results.items():
        for got, want in zip(outputs, results["baseline"], strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation", "ceil_mode"), [
    (3, 2, 1, 1, True), (2, 2, 0, 1, True), (3, 1, 1, 2, False), ((3, 2), (2, 3), (1, 1),
                                                                     (2, 1), True)])
def test_against_torch(torch, kernel, stride, padding, dilation, ceil_mode, dtype):
    x = random_array(11, (2, 3, 9, 10), dtype, "special")
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty, tidx = torch.nn.functional.max_pool2d(tx, kernel, stride, padding, dilation,
                                              ceil_mode=ceil_mode, return_indices=True)
    gy = random_array(12, tuple(ty.shape), dtype)
    ty.backward(torch.from_numpy(gy))
    y, idx = F.max_pool2d(x, kernel, stride, padding, True, dilation=dilation,
                          ceil_mode=ceil_mode)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert_close(F.max_pool2d_backward(gy, idx, x.shape), tx.grad.numpy(), dtype)
    if dilation != 1:
        return  # torch's avg_pool2d has no dilation
    finite = np.nan_to_num(x, nan=0.5, posinf=3.0, neginf=-3.0)
    for include in (True, False):
        tx = torch.from_numpy(finite.copy()).requires_grad_()
        ty = torch.nn.functional.avg_pool2d(tx, kernel, stride, padding, ceil_mode=ceil_mode,
                                            count_include_pad=include)
        ty.backward(torch.from_numpy(gy))
        kwargs = dict(ceil_mode=ceil_mode, count_include_pad=include)
        assert_close(F.avg_pool2d(finite, kernel, stride, padding, **kwargs),
                     ty.detach().numpy(), dtype)
        assert_close(F.avg_pool2d_backward(gy, x.shape, kernel, stride, padding, **kwargs),
                     tx.grad.numpy(), dtype)


X = np.zeros((1, 2, 5, 5), np.float32)

BAD_CALLS = [
    (lambda: F.max_pool2d(X, 2, padding=((2, 0), (0, 0))), ValueError,
     "max_pool2d: window 0 of 3 along height holds only padding"),
    (lambda: F.max_pool2d(X, 2, 1, padding=((0, 2), (0, 0))), ValueError,
     "max_pool2d: window 5 of 6 along height holds only padding"),
    (lambda: F.avg_pool2d(X, 2, 1, padding=((0, 0), (0, 3)), count_include_pad=False),
     ValueError, "avg_pool2d: window .* along width holds only padding"),
    # Dilation 6 over a 5-wide input: the taps of window 0, columns -1 and 5, miss it.
    (lambda: F.max_pool2d(X, (1, 2), 1, padding=((0, 0), (1, 1)), dilation=(1, 6)), ValueError,
     "max_pool2d: window 0 of 1 along width holds only padding"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 1, 2)), (1, 2), 1, ((0, 0), (2**20 - 1, 2**20 - 1)),
                          dilation=(1, 2**20)), ValueError,
     r"max_pool2d: dilation 1048576 exceeds the input's width 2 with 1048576 windows \(at "
     r"most 65536 are checked\)"),
    (lambda: F.max_pool2d(X, 2, dilation=0), ValueError, "max_pool2d: dilation must be >= 1"),
    (lambda: F.max_pool2d(X, (2, 2), dilation=(1, 2**24)), ValueError,
     "max_pool2d: a window may span at most 16777216"),
    (lambda: F.max_pool2d(X, 2, ceil_mode=1), TypeError,
     "max_pool2d: ceil_mode must be True or False, got 1"),
    (lambda: F.avg_pool2d(X, 2, count_include_pad="no"), TypeError,
     "avg_pool2d: count_include_pad must be True or False, got 'no'"),
    (lambda: F.avg_pool2d_backward(np.zeros((1, 2, 2, 2), np.float32), X.shape, 2,
                                   ceil_mode=True), ValueError,
     r"avg_pool2d_backward: gy must have shape \(1, 2, 3, 3\)"),
    (lambda: F.max_pool2d(X, 2, padding=((1, 2, 3), (0, 0))), ValueError,
     r"max_pool2d: padding must be an int, a pair \(h, w\) or a pair of pairs"),
    (lambda: F.max_pool2d(X, 2, padding=((1, -1), (0, 0))), ValueError,
     "max_pool2d: padding must be >= 0"),
    (lambda: F.max_pool2d(X, 2, padding=(1, 2, 3)), ValueError,
     r"max_pool2d: padding must be an int, a pair \(h, w\) or a pair of pairs"),
    (lambda: F.avg_pool2d(X, 2, padding=((1, 1.5), (0, 0))), TypeError,
     "avg_pool2d: padding must be an int, got float"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS,
                         ids=[f"{i}-{case[2][:40]}" for i, case in enumerate(BAD_CALLS)])
def test_bad_input_is_rejected_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_defaults_are_pytorchs():
    """Without the new options nothing changes: count_include_pad and floor mode."""
    x = random_array(30, (2, 3, 9, 9), np.float32)
    np.testing.assert_array_equal(F.avg_pool2d(x, 3, 2, 1),
                                  F.avg_pool2d(x, 3, 2, 1, count_include_pad=True,
                                               ceil_mode=False, dilation=1))
    np.testing.assert_array_equal(F.max_pool2d(x, 3, 2, 1),
                                  F.max_pool2d(x, 3, 2, ((1, 1), (1, 1)), dilation=1))


# ------------------------------------------------------------------- layers

LAYER_CASES = [
    (lambda dtype: MaxPool2D(3, 2, ((1, 0), (0, 1)), dilation=(1, 2), ceil_mode=True),
     lambda x: F.max_pool2d(x, 3, 2, ((1, 0), (0, 1)), dilation=(1, 2), ceil_mode=True)),
    (lambda dtype: AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False),
     lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
    (lambda dtype: AvgPool2D(2, 1, dilation=2),
     lambda x: F.avg_pool2d(x, 2, 1, dilation=2)),
]


@pytest.mark.parametrize(("make", "functional"), LAYER_CASES)
def test_layers_take_the_options_and_save_them(make, functional, tmp_path):
    x = random_array(40, (2, 3, 9, 8), np.float32)
    model = Sequential([make("float64"), Flatten()], input_shape=(3, 9, 8))
    want = functional(x)
    np.testing.assert_array_equal(model.forward(x), want.reshape(2, -1))
    gy = random_array(41, (2, want[0].size), np.float32)
    layer = model.layers[0]
    model.forward(x)
    gx = model.backward(gy)
    if isinstance(layer, MaxPool2D):
        _, idx = F.max_pool2d(x, *layer._geometry, return_indices=True, **layer._options)
        np.testing.assert_array_equal(gx, F.max_pool2d_backward(gy.reshape(want.shape), idx,
                                                                x.shape))
    else:
        np.testing.assert_array_equal(gx, F.avg_pool2d_backward(
            gy.reshape(want.shape), x.shape, *layer._geometry, **layer._options))
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.layers[0].config() == layer.config()
    assert repr(loaded.layers[0]) == repr(layer)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_default_options_leave_the_config_as_before():
    assert MaxPool2D(2).config() == {"kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}
    assert AvgPool2D(3, 1, 1, count_include_pad=True).config() == {
        "kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1]}
    assert repr(AvgPool2D(3, 2, ((1, 0), (1, 1)), count_include_pad=False)) == (
        "AvgPool2D(3, stride=2, padding=((1, 0), (1, 1)), count_include_pad=False)")
    assert MaxPool2D(2, padding=((1, 1), (0, 0))).padding == (1, 0)

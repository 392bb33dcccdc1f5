"""The input gradient of strided convolutions as one convolution per phase of the input.

Each case is checked on every instruction-set build against the float64
reference (through the forward error bound of conv_testing) on NaN-filled
output buffers, against col2im (the plan without it), by central
differences, on non-contiguous operands, against PyTorch, and for any
thread count.
"""

import zlib

import numpy as np
import pytest
from conv_testing import assert_within_bound, problem

from cnnext import _dispatch, _tuning
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext._functional import conv as conv_module

DTYPES = [np.float32, np.float64]

# (N, C, H, W, K, R, S, stride, padding): even and odd sizes, so the phases
# differ in rows and columns; phases without taps (stride above the filter
# size, 1x1 filters), padding that puts the first phase at an odd column,
# padding above the filter size, one axis strided, filters per tile below,
# at and above a vector's worth, more than one wave of images.
CASES = [
    (2, 16, 28, 28, 32, 3, 3, (2, 2), (1, 1)),       # resnet8's first strided block
    (2, 16, 28, 28, 32, 1, 1, (2, 2), (0, 0)),       # ... and its shortcut
    (2, 32, 14, 14, 64, 3, 3, (2, 2), (1, 1)),       # odd outputs (7x7)
    (3, 3, 11, 13, 5, 3, 3, (2, 2), (0, 0)),
    (2, 2, 9, 11, 3, 2, 4, (2, 2), (1, 1)),
    (2, 4, 12, 12, 6, 3, 3, (4, 4), (0, 0)),         # stride > filter: empty phases
    (2, 3, 10, 17, 4, 5, 5, (2, 2), (2, 2)),
    (1, 5, 13, 9, 7, 3, 2, (3, 2), (1, 0)),
    (2, 2, 16, 15, 9, 3, 3, (2, 1), (1, 1)),         # rows strided only
    (2, 2, 15, 16, 9, 3, 3, (1, 3), (1, 2)),         # columns strided only
    (1, 3, 8, 8, 4, 3, 3, (2, 2), (4, 3)),           # padding > filter
    (2, 24, 7, 7, 48, 3, 3, (2, 2), (1, 1)),
    (9, 8, 32, 32, 16, 3, 3, (2, 2), (1, 1)),        # waves of images
]


def case_id(case):
    return "N{}C{}H{}W{}K{}R{}S{}-s{}p{}".format(*case).replace(" ", "")


def plan_args(case, dtype):
    n, c, h, w, k, r, s, stride, padding = case
    return (n, c, h, w, k, r, s, stride, padding, (1, 1), np.dtype(dtype).itemsize)


def operands(case, dtype):
    n, c, h, w, k, r, s, stride, padding = case
    rng = np.random.default_rng(zlib.crc32(case_id(case).encode()))
    x, weights, _ = problem(rng, n, c, h, w, k, r, s, dtype, bias=False)
    gy = rng.standard_normal(F.conv2d(x, weights, None, stride, padding).shape).astype(dtype)
    return x, weights, gy


def input_gradient(kernels, plan, gy, weights, shape):
    """gx of ``plan`` from the build ``kernels``, into a NaN-filled buffer."""
    data = _dispatch.specialisations(kernels, ("conv2d_backward_data",))[gy.dtype][0]
    gx = np.full(shape, np.nan, gy.dtype)
    data(plan, gy, weights, gx, np.full(max(plan.backward_data_workspace, 1), np.nan, gy.dtype))
    return gx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_build_against_the_reference_and_col2im(case, dtype):
    k, r, s, stride, padding = case[4:]
    x, weights, gy = operands(case, dtype)
    expected = reference.conv2d_backward(gy, x, weights, stride, padding)[0]
    magnitude = reference.conv2d_backward(np.abs(gy), np.abs(x), np.abs(weights), stride,
                                          padding)[0]
    args = plan_args(case, dtype)
    for isa, kernels in _dispatch.built_variants("_conv").items():
        plan = kernels.Plan(*args, True, {"data": "phases"})
        assert plan.data_kernel == "phases", isa
        gx = input_gradient(kernels, plan, gy, weights, x.shape)
        assert_within_bound(gx, expected, magnitude, k * r * s, dtype, f"gx {isa}")
        col2im = kernels.Plan(*args, True, {"data": "col2im"})
        assert col2im.data_kernel == "col2im"
        other = input_gradient(kernels, col2im, gy, weights, x.shape)
        assert_within_bound(gx, other.astype(np.float64), 2 * magnitude, k * r * s, dtype,
                            f"gx {isa} vs col2im")


def test_the_plan_chooses_phases_only_where_they_compute_the_sum():
    kernels = conv_module._kernels
    strided = (2, 3, 12, 12, 4, 3, 3, (2, 2), (1, 1), (1, 1), 4)
    assert kernels.Plan(*strided).data_kernel == "phases"
    assert kernels.Plan(*strided).choices["data"] == "phases"
    # Filters no larger than the stride: col2im's columns do not overlap.
    for r, s, stride in ((1, 1, (2, 2)), (3, 3, (4, 4)), (2, 3, (2, 3))):
        args = (2, 3, 12, 12, 4, r, s, stride, (0, 0), (1, 1), 4)
        assert kernels.Plan(*args).data_kernel == "col2im"
        assert kernels.Plan(*args, True, {"data": "phases"}).data_kernel == "phases"
    # Without reformulation (filters holding NaN or inf: the padding's zeros
    # would multiply them), with dilation, and with stride 1: not phases.
    assert kernels.Plan(*strided, False).data_kernel == "col2im"
    dilated = (*strided[:9], (2, 1), 4)
    assert kernels.Plan(*dilated).data_kernel == "col2im"
    for args, reformulate in ((strided, False), (dilated, True),
                              ((*strided[:7], (1, 1), *strided[8:]), True)):
        with pytest.raises(ValueError, match="data 'phases': needs a stride above 1"):
            kernels.Plan(*args, reformulate, {"data": "phases"})


def test_gradient_matches_central_differences():
    rng = np.random.default_rng(3)
    stride, padding = (2, 3), (1, 2)
    x, w, _ = problem(rng, 2, 2, 7, 9, 3, 3, 4, np.float64, bias=False)
    assert conv_module._plan("t", x, w, stride, padding, (1, 1)).data_kernel == "phases"
    gy = rng.standard_normal(F.conv2d(x, w, None, stride, padding).shape)
    gx = F.conv2d_backward(gy, x, w, stride, padding)[0]
    step = 1e-6
    numeric = np.empty_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += step
        down[index] -= step
        numeric[index] = (np.sum(gy * F.conv2d(up, w, None, stride, padding))
                          - np.sum(gy * F.conv2d(down, w, None, stride, padding))) / (2 * step)
    np.testing.assert_allclose(gx, numeric, rtol=1e-6, atol=1e-7)


def test_non_contiguous_operands_give_the_contiguous_result():
    case = CASES[4]
    stride, padding = case[7:]
    x, weights, gy = operands(case, np.float32)
    assert conv_module._plan("t", x, weights, stride, padding, (1, 1)).data_kernel == "phases"
    want = F.conv2d_backward(gy, x, weights, stride, padding)
    for transform in (lambda a: np.asfortranarray(a),
                      lambda a: np.ascontiguousarray(a[..., ::-1])[..., ::-1],
                      lambda a: np.repeat(a, 2, axis=-1)[..., ::2]):
        got = F.conv2d_backward(transform(gy), transform(x), transform(weights), stride, padding)
        for g, e in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_filters_keep_the_definitions_nan_and_inf(value):
    # 0 * inf in the padded terms would put NaN where the definition's sum
    # is finite: such filters take col2im, which has no such terms.
    case = CASES[0]
    stride, padding = case[7:]
    x, weights, gy = operands(case, np.float64)
    assert conv_module._plan("t", x, weights, stride, padding, (1, 1)).data_kernel == "phases"
    weights[1, 2, 0, 0] = value
    gx = F.conv2d_backward(gy, x, weights, stride, padding)[0]
    expected = reference.conv2d_backward(gy, x, weights, stride, padding)[0]
    np.testing.assert_array_equal(np.isnan(gx), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(gx), np.isinf(expected))
    assert np.isfinite(expected).any() and not np.isfinite(expected).all()


def test_nan_in_gy_reaches_the_inputs_its_taps_reach():
    case = CASES[3]
    c, r, s, stride, padding = case[1], *case[5:]
    x, weights, gy = operands(case, np.float32)
    assert conv_module._plan("t", x, weights, stride, padding, (1, 1)).data_kernel == "phases"
    gy[1, 2, 3, 4] = np.nan
    gx = F.conv2d_backward(gy, x, weights, stride, padding)[0]
    expected = reference.conv2d_backward(gy, x, weights, stride, padding)[0]
    np.testing.assert_array_equal(np.isnan(gx), np.isnan(expected))
    assert np.isnan(expected).sum() == r * s * c


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES[:8], ids=case_id)
def test_against_torch(case, dtype, torch):
    stride, padding = case[7:]
    x, weights, gy = operands(case, dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, torch.from_numpy(weights), None, stride, padding)
    ty.backward(torch.from_numpy(gy))
    with _tuning.forced({"data": "phases"}):
        assert conv_module._plan("t", x, weights, stride, padding, (1, 1)).data_kernel == "phases"
        gx = F.conv2d_backward(gy, x, weights, stride, padding)[0]
    rtol, atol = (1e-4, 1e-4) if dtype == np.float32 else (1e-12, 1e-12)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", [CASES[0], CASES[-1]], ids=case_id)
def test_results_do_not_depend_on_the_thread_count(case, num_threads):
    stride, padding = case[7:]
    x, weights, gy = operands(case, np.float32)
    results = []
    with _tuning.forced({"data": "phases"}):
        assert conv_module._plan("t", x, weights, stride, padding, (1, 1)).data_kernel == "phases"
        for count in (1, 2, 3):
            num_threads(count)
            results.append(F.conv2d_backward(gy, x, weights, stride, padding)[0])
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])

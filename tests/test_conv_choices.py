"""Every algorithm a convolution Plan can be asked for (``choices``), on every build.

The tuner (cnnext._tuning) may pick any candidate on some CPU, so each one
must be right on every shape it accepts, not only the one the heuristics
pick: checked against the float64 reference, and the direct forward
algorithms (every candidate but Winograd) against each other bitwise.
"""

import numpy as np
import pytest
from conv_testing import assert_within_bound, check_backward, check_forward, problem

from cnnext import _dispatch, _tuning
from cnnext import _reference as reference
from cnnext._functional import conv as conv_module

DTYPES = ("float32", "float64")

# (N, C, H, W, K, R, S, stride, padding, dilation): rows shorter and longer
# than a vector, strides, dilation, filters below, at and above a vector's
# worth, 3x3 stride-1 layers (Winograd) with odd output sizes, filters
# filling the weight gradient's widest tiles several times over, the last
# tile part empty and the taps not a whole number of tiles.
CASES = [
    (2, 1, 28, 28, 8, 3, 3, (1, 1), (0, 0), (1, 1)),
    (2, 8, 13, 13, 16, 5, 5, (1, 1), (0, 0), (1, 1)),
    (2, 3, 17, 19, 32, 3, 3, (1, 1), (1, 1), (1, 1)),
    (1, 16, 9, 11, 40, 3, 3, (1, 1), (1, 1), (1, 1)),
    (2, 5, 12, 21, 7, 3, 2, (2, 1), (1, 0), (1, 2)),
    (1, 4, 16, 16, 24, 3, 3, (2, 2), (1, 1), (1, 1)),
    (1, 2, 20, 34, 3, 3, 3, (1, 1), (2, 2), (2, 2)),
    (2, 5, 10, 9, 72, 3, 3, (1, 1), (1, 1), (1, 1)),
]


def case_id(case):
    return "N{}C{}H{}W{}K{}R{}S{}-s{}p{}d{}".format(*case).replace(" ", "")


def plan_args(case, dtype):
    n, c, h, w, k, r, s, stride, padding, dilation = case
    return (n, c, h, w, k, r, s, stride, padding, dilation, np.dtype(dtype).itemsize)


def builds():
    return list(_dispatch.built_variants("_conv").items())


def check_filter_pass(filter_, plan, gy, x, weights, stride, padding, dilation):
    """The weight and bias gradients of ``plan`` into NaN-filled outputs, against
    the reference."""
    dtype = x.dtype
    gw = np.full(weights.shape, np.nan, dtype)
    gb = np.full(weights.shape[0], np.nan, dtype)
    filter_(plan, gy, x, gw, gb, np.empty(max(plan.backward_filter_workspace, 1), dtype))
    check_backward((None, gw, gb), gy, x, weights, stride, padding, dilation,
                   need_input_grad=False)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_candidate_of_every_pass_against_the_reference(case, dtype):
    n, c, h, w, k, r, s, stride, padding, dilation = case
    rng = np.random.default_rng(5)
    x, weights, b = problem(rng, n, c, h, w, k, r, s, dtype)
    args = plan_args(case, dtype)
    for isa, kernels in builds():
        forward, data, filter_ = _dispatch.specialisations(
            kernels, ("conv2d_forward", "conv2d_backward_data",
                      "conv2d_backward_filter"))[np.dtype(dtype)]
        shape = kernels.Plan(*args).output_shape
        gy = rng.standard_normal(shape).astype(dtype)
        direct = {}
        for option in _tuning.candidates(kernels, args, "forward", {}):
            plan = kernels.Plan(*args, True, option)
            assert plan.choices == option
            y = np.full(shape, np.nan, dtype)
            forward(plan, x, weights, b, y, np.empty(max(plan.forward_workspace, 1), dtype))
            check_forward(y, x, weights, b, stride, padding, dilation)
            if option["forward"] != "winograd":
                direct[f"{option['forward']}{option['forward_vectors']}"] = y
        assert direct, f"{isa}: no direct forward candidate"
        first = next(iter(direct.values()))
        for name, y in direct.items():
            np.testing.assert_array_equal(y, first, err_msg=f"{isa} {name}")

        expected = reference.conv2d_backward(gy, x, weights, stride, padding, dilation)
        magnitude = reference.conv2d_backward(np.abs(gy), np.abs(x), np.abs(weights), stride,
                                              padding, dilation)
        for option in _tuning.candidates(kernels, args, "data", {}):
            plan = kernels.Plan(*args, True, option)
            gx = np.full(x.shape, np.nan, dtype)
            data(plan, gy, weights, gx, np.empty(max(plan.backward_data_workspace, 1), dtype))
            assert_within_bound(gx, expected[0], magnitude[0], k * r * s, dtype,
                                f"gx {isa} {option}")
        for fixed in _tuning.candidates(kernels, args, "forward", {}):
            for option in _tuning.candidates(kernels, args, "filter", fixed):
                check_filter_pass(filter_, kernels.Plan(*args, True, option), gy, x, weights,
                                  stride, padding, dilation)


def test_the_candidates_cover_every_algorithm():
    seen = {"forward": set(), "data": set(), "filter": set()}
    for case in CASES:
        for dtype in DTYPES:
            kernels = conv_module._kernels
            args = plan_args(case, dtype)
            for option in _tuning.candidates(kernels, args, "forward", {}):
                seen["forward"].add((option["forward"], option["forward_vectors"] > 0))
            for option in _tuning.candidates(kernels, args, "data", {}):
                seen["data"].add((option["data"], option["data_forward"]))
            for option in _tuning.candidates(kernels, args, "filter", {}):
                seen["filter"].add(option["filter"])
    assert seen["forward"] == {("winograd", False), ("positions", False), ("panel", False),
                               ("filters", True)}
    assert {kind for kind, _ in seen["data"]} == {"conv", "phases", "col2im"}
    assert {name for kind, name in seen["data"] if kind == "conv"} >= {
        "winograd", "positions", "panel", "filters"}
    assert seen["filter"] == {"dot", "transposed"}


def test_a_plan_rebuilt_from_its_choices_is_the_same_plan():
    for case in CASES:
        for dtype in DTYPES:
            args = plan_args(case, dtype)
            for _, kernels in builds():
                plan = kernels.Plan(*args)
                again = kernels.Plan(*args, True, plan.choices)
                assert again.choices == plan.choices
                assert repr(again) == repr(plan)
                assert (again.forward_workspace, again.backward_data_workspace,
                        again.backward_filter_workspace) == (
                    plan.forward_workspace, plan.backward_data_workspace,
                    plan.backward_filter_workspace)


@pytest.mark.parametrize(("choices", "message"), [
    ({"forward": "winograd"}, "winograd: needs 3x3"),
    ({"forward": "positions"}, "positions: needs stride 1"),
    ({"forward": "fast"}, "choices['forward'] must be one of"),
    ({"forward": "filters", "forward_vectors": 3}, "filter vectors per tile"),
    ({"data": "conv"}, "data 'conv': needs stride 1"),
    ({"filter": "best"}, "choices['filter'] must be one of"),
    ({"speed": "max"}, "choices: unknown ['speed']"),
])
def test_impossible_choices_are_refused(choices, message):
    # 5x5 filters, stride 2, rows of 5 outputs.
    args = (1, 2, 13, 13, 4, 5, 5, (2, 2), (1, 1), (1, 1), 4)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        conv_module._kernels.Plan(*args, True, choices)


def test_without_reformulation_winograd_is_refused():
    args = (1, 16, 8, 8, 16, 3, 3, (1, 1), (1, 1), (1, 1), 4)
    with pytest.raises(ValueError, match="winograd"):
        conv_module._kernels.Plan(*args, False, {"forward": "winograd"})
    with pytest.raises(ValueError, match="data 'conv'"):
        conv_module._kernels.Plan(*args, False, {"data": "conv"})


@pytest.mark.parametrize("dtype", DTYPES)
def test_padded_copies_read_only_the_image_rows(dtype):
    # Rows of 1 to 37 columns (across whole vectors at every lane count) with
    # 1 to 3 columns of padding, the images inside a NaN-filled buffer: the
    # padded copies must read the row alone (a NaN before or after it would
    # reach the sums) and leave zeros in the padding.
    rng = np.random.default_rng(11)
    for width in (1, 3, 4, 7, 8, 13, 16, 17, 28, 31, 32, 33, 37):
        for pad in (1, 2, 3):
            case = (2, 2, 3, width, 5, 3, 3, (1, 1), (pad, pad), (1, 1))
            n, c, h, w, k, r, s, stride, padding, dilation = case
            buffer = np.full((n + 2, c, h, w), np.nan, dtype)
            buffer[1:-1] = rng.standard_normal((n, c, h, w))
            x = buffer[1:-1]
            weights = rng.standard_normal((k, c, r, s)).astype(dtype)
            b = rng.standard_normal(k).astype(dtype)
            args = plan_args(case, dtype)
            for isa, kernels in builds():
                forward, filter_ = _dispatch.specialisations(
                    kernels, ("conv2d_forward", "conv2d_backward_filter"))[np.dtype(dtype)]
                shape = kernels.Plan(*args).output_shape
                gy = rng.standard_normal(shape).astype(dtype)
                sources = set()
                for option in _tuning.candidates(kernels, args, "forward", {}):
                    plan = kernels.Plan(*args, True, option)
                    sources.add(plan.source)
                    y = np.full(shape, np.nan, dtype)
                    forward(plan, x, weights, b, y,
                            np.empty(max(plan.forward_workspace, 1), dtype))
                    check_forward(y, x, weights, b, stride, padding, dilation)
                    check_filter_pass(filter_, plan, gy, x, weights, stride, padding, dilation)
                assert "padded" in sources, f"{isa} width {width} pad {pad}: {sources}"

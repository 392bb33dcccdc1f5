"""Convolution with the ReLU epilogue, and Conv2D -> ReLU fused in Sequential's plans.

* The kernel flag ``conv2d_forward(..., relu=True)`` equals
  ``F.relu(F.conv2d(...))`` bitwise (ReLU of the same sums is exact) on every
  algorithm and instruction-set build, both dtypes, poisoned outputs, NaN and
  inf; within the float64 reference's error bound; close to PyTorch.
* ``conv2d_relu_mask(gy, y)`` equals ``F.relu_backward(gy, x)`` bitwise for
  y = relu(x) (NaN passes, -0.0 and +0.0 are blocked), on any thread count.
* Plans fuse Conv2D -> ReLU (not followed by a fused pooling) into the
  "conv2d_relu" steps; fit / predict / forward / backward equal the layer
  path bitwise (1 and 2 threads, batch 1 and more, non-contiguous batches,
  NaN inputs), the gradients match finite differences and PyTorch.
"""

import zlib

import numpy as np
import pytest
from conv_testing import assert_within_bound, problem, winograd_on
from test_conv import GRID, grid_id, grid_plans

from cnnext import Sequential, _dispatch, _tuning, optim
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext._functional import conv as conv_module
from cnnext.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU

DTYPES = (np.float32, np.float64)
BUILDS = _dispatch.built_variants("_conv")


def conv_relu(module, x, w, b, stride, padding, dilation, out=None, relu=True):
    """relu(conv2d(...)) by ``module``'s kernel with the ReLU flag (conv2d
    without it), on the plan the functional would use (without reformulated
    algorithms for NaN/inf)."""
    args = conv_module._plan_args("conv2d", x.shape, w.shape, x.dtype, stride, padding,
                                  dilation)
    finite = np.isfinite(x).all() and np.isfinite(w).all()
    plan = module.Plan(*args, finite, _tuning.choices(module, args) if finite else None)
    y = np.empty(plan.output_shape, x.dtype) if out is None else out
    forward = _dispatch.specialisations(module, ("conv2d_forward",))[x.dtype][0]
    forward(plan, x, w, b, y, np.empty(max(plan.forward_workspace, 1), x.dtype), relu)
    return y


def seeded(case):
    return np.random.default_rng(zlib.crc32(grid_id(case).encode()))


@pytest.mark.parametrize("isa", list(BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_flag_equals_relu_of_conv2d_bitwise_on_every_build(isa, dtype):
    module = BUILDS[isa]
    lanes = set()
    with grid_plans():
        for case in GRID:
            n, c, h, w, k, r, s, stride, padding, dilation = case
            rng = seeded(case)
            x, weights, b = problem(rng, n, c, h, w, k, r, s, dtype, bias=k % 2 == 0)
            # (Builds round differently: the composite of the same build.)
            conv = conv_relu(module, x, weights, b, stride, padding, dilation, relu=False)
            if module is conv_module._kernels:
                assert conv.tobytes() == F.conv2d(x, weights, b, stride, padding,
                                                  dilation).tobytes()
            want = F.relu(conv)
            poisoned = np.full(want.shape, np.nan, dtype)
            got = conv_relu(module, x, weights, b, stride, padding, dilation, out=poisoned)
            assert got.tobytes() == want.tobytes(), grid_id(case)
            if got.size >= 16:  # both sides of ReLU reached
                assert (got > 0).any() and (got == 0).any(), grid_id(case)
            lanes.add(conv_module._plan("t", x, weights, stride, padding, dilation).forward_lanes)
    assert lanes == {"positions", "filters", "winograd"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GRID[:6] + GRID[12:17], ids=grid_id)
def test_forward_flag_within_the_float64_reference_bound(case, dtype):
    n, c, h, w, k, r, s, stride, padding, dilation = case
    x, weights, b = problem(seeded(case), n, c, h, w, k, r, s, dtype)
    got = conv_relu(_dispatch.load("_conv"), x, weights, b, stride, padding, dilation)
    expected = np.maximum(reference.conv2d(x, weights, b, stride, padding, dilation), 0)
    magnitude = reference.conv2d(np.abs(x), np.abs(weights), np.abs(b), stride, padding,
                                 dilation)
    # ReLU moves no value further from the exact one: the conv2d bound holds.
    assert_within_bound(got, expected, magnitude, c * r * s + 1, dtype, "relu(conv2d)")


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_forward_flag_non_finite_values_as_relu_of_conv2d(poison):
    # Winograd's shape (asked for): the functional and the helper both fall back
    # to direct sums.
    rng = np.random.default_rng(3)
    x, weights, b = problem(rng, 2, 16, 9, 11, 48, 3, 3, np.float32)
    x[0, 2, 4, 4] = poison
    weights[5, 1, 0, 0] = -poison
    with winograd_on(((16, 9, 11), (48, 16, 3, 3))):
        assert conv_module._plan("t", x, weights, 1, 1, 1).forward_lanes == "winograd"
        want = F.relu(F.conv2d(x, weights, b, 1, 1, 1))
        got = conv_relu(_dispatch.load("_conv"), x, weights, b, 1, 1, 1)
    assert got.tobytes() == want.tobytes()
    # Image 1 is finite but for filter 5 (no inf - inf from reformulated sums).
    assert np.isfinite(np.delete(got[1], 5, axis=0)).all()
    if np.isnan(poison):
        assert np.isnan(got[0]).any()


def test_forward_flag_matches_pytorch(torch):
    rng = np.random.default_rng(7)
    for case in (GRID[0], GRID[3], GRID[12], GRID[15]):
        n, c, h, w, k, r, s, stride, padding, dilation = case
        x, weights, b = problem(rng, n, c, h, w, k, r, s, np.float32)
        got = conv_relu(_dispatch.load("_conv"), x, weights, b, stride, padding, dilation)
        want = torch.relu(torch.nn.functional.conv2d(
            torch.from_numpy(x), torch.from_numpy(weights), torch.from_numpy(b), stride,
            padding, dilation)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=grid_id(case))


@pytest.mark.parametrize("isa", list(BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 37, 1 << 17])
def test_mask_equals_relu_backward_of_the_input(isa, dtype, size, num_threads):
    rng = np.random.default_rng(size)
    x = rng.standard_normal(size).astype(dtype)
    specials = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-30, -1e-30], dtype)
    x[rng.integers(0, size, 3 * len(specials))] = np.resize(specials, 3 * len(specials))
    gy = rng.standard_normal(size).astype(dtype)
    gy[rng.integers(0, size, 4)] = [np.nan, np.inf, -0.0, -np.inf]
    y = F.relu(x)
    want = F.relu_backward(gy, x)
    mask = _dispatch.specialisations(BUILDS[isa], ("conv2d_relu_mask",))[np.dtype(dtype)][0]
    for count in (1, 2):
        num_threads(count)
        out = np.full(size, np.nan, dtype)
        mask(gy, y, out)
        assert out.tobytes() == want.tobytes(), count


# ------------------------------------------------------------------ plans

def conv_relu_network(dtype, seed=0, pool=AvgPool2D):
    """Conv2D -> ReLU runs not followed by a fused pooling: one into an
    average pooling, one into Flatten (Winograd's in ``winograd_plans``)."""
    rng = np.random.default_rng(seed)
    return Sequential([Conv2D(1, 16, 3, padding=1, dtype=dtype, seed=rng), ReLU(),
                       pool(2),
                       Conv2D(16, 16, 3, padding=1, dtype=dtype, seed=rng), ReLU(),
                       Flatten(), Dense(16 * 6 * 6, 5, dtype=dtype, seed=rng)])


def winograd_plans():
    """The second convolution of ``conv_relu_network`` on 12x12 inputs by Winograd."""
    return winograd_on(((16, 6, 6), (16, 16, 3, 3)))


def step_names(model, batch, shape, mode="fit"):
    plan = model._acquire(mode, batch, shape)
    try:
        return ([n.split(":")[1] for n in plan.forward_program.names],
                [n.split(":")[1] for n in plan.backward_program.names])
    finally:
        model._release(plan)


def run_everything(model, X, y, batch_size):
    history = model.fit(X, y, epochs=2, batch_size=batch_size, progress=False, seed=1,
                        optimizer=optim.SGD(lr=0.02, momentum=0.9))
    x = (X[:3, None, :, ::-1] / 255 - 0.5).astype(model.layers[0].dtype)  # strided
    out = model.forward(x)
    gx = model.backward(np.ones_like(out))
    return (history["loss"], {k: v.copy() for k, v in model.parameters().items()},
            model.predict(X), out, gx, {k: v.copy() for k, v in model.gradients().items()})


def assert_bitwise(a, b, what):
    for i, (got, want) in enumerate(zip(a, b, strict=True)):
        if isinstance(got, dict):
            for key in got:
                assert got[key].tobytes() == want[key].tobytes(), (what, i, key)
        else:
            assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), (what, i)


def test_plans_fuse_conv2d_relu_runs():
    forward, backward = step_names(conv_relu_network(np.float32), 4, (1, 12, 12))
    assert forward.count("conv2d_relu") == 2 and "relu" not in forward, forward
    assert "conv2d" not in forward, forward
    assert backward.count("conv2d_relu_backward") == 2, backward
    assert "relu_backward" not in backward, backward
    # With a max pooling after it, the ReLU stays in the fused pooling run.
    forward, _ = step_names(conv_relu_network(np.float32, pool=MaxPool2D), 4, (1, 12, 12))
    assert forward.count("conv2d_max_pool2d") == 1 and forward.count("conv2d_relu") == 1
    # A ReLU subclass is left to itself.

    class MyReLU(ReLU):
        pass

    model = Sequential([Conv2D(1, 2, 3), MyReLU(), Flatten(), Dense(200, 2)])
    forward, _ = step_names(model, 2, (1, 12, 12), "predict")
    assert forward[:2] == ["conv2d", "relu"], forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("threads", [1, 2])
def test_plans_equal_the_layer_path_bitwise(dtype, batch_size, threads, num_threads):
    num_threads(threads)
    rng = np.random.default_rng(4)
    X = rng.integers(0, 256, (11, 12, 12), dtype=np.uint8)
    y = rng.integers(0, 5, 11)
    results = []
    with winograd_plans():
        for force in (False, True):
            model = conv_relu_network(dtype)
            model._force_layers = force
            results.append(run_everything(model, X, y, batch_size))
    assert_bitwise(results[0], results[1], (dtype, batch_size, threads))


def test_plans_pass_nan_through_as_the_layer_path():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 1, 12, 12)).astype(np.float32)
    x[1, 0, 5, 5] = np.nan
    x[2, 0, 3, 3] = np.inf
    results = []
    with winograd_plans():
        for force in (False, True):
            model = conv_relu_network(np.float32)
            model._force_layers = force
            out = model.forward(x)
            results.append((out, model.backward(np.ones_like(out)), model.gradients()))
    assert_bitwise(results[0], results[1], "non-finite")
    assert np.isnan(results[0][0][1]).all() and np.isfinite(results[0][0][0]).all()


def network_loss_and_gradients(model, x, gy):
    out = model.forward(x)
    gx = model.backward(gy)
    return float(np.sum(out * gy)), gx, {k: v.copy() for k, v in model.gradients().items()}


def test_plan_gradients_match_finite_differences():
    rng = np.random.default_rng(9)
    model = Sequential([Conv2D(2, 3, 3, padding=1, dtype=np.float64, seed=rng), ReLU(),
                        Flatten(), Dense(3 * 5 * 5, 2, dtype=np.float64, seed=rng)])
    x = rng.standard_normal((2, 2, 5, 5))
    gy = rng.standard_normal((2, 2))
    assert "conv2d_relu_backward" in step_names(model, 2, (2, 5, 5), "backward")[1]
    _, gx, grads = network_loss_and_gradients(model, x, gy)
    h = 1e-6

    def loss():
        return float(np.sum(model.forward(x) * gy))

    weight = model.layers[0].params["weight"]
    for index in [(0, 0, 0, 0), (1, 1, 2, 1), (2, 0, 1, 2), (2, 1, 0, 0)]:
        old = weight[index]
        weight[index] = old + h
        up = loss()
        weight[index] = old - h
        down = loss()
        weight[index] = old
        np.testing.assert_allclose((up - down) / (2 * h), grads["0.weight"][index],
                                   rtol=1e-5, atol=1e-7)
    for index in [(0, 0, 2, 2), (1, 1, 0, 4), (0, 1, 3, 1)]:
        old = x[index]
        x[index] = old + h
        up = loss()
        x[index] = old - h
        down = loss()
        x[index] = old
        np.testing.assert_allclose((up - down) / (2 * h), gx[index], rtol=1e-5, atol=1e-7)


def test_plan_gradients_match_pytorch(torch):
    rng = np.random.default_rng(10)
    model = conv_relu_network(np.float32, seed=3)
    x = rng.standard_normal((4, 1, 12, 12)).astype(np.float32)
    gy = rng.standard_normal((4, 5)).astype(np.float32)
    _, gx, grads = network_loss_and_gradients(model, x, gy)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in model.parameters().items()}
    tx = torch.tensor(x, requires_grad=True)
    fn = torch.nn.functional
    t = fn.relu(fn.conv2d(tx, params["0.weight"], params["0.bias"], padding=1))
    t = fn.avg_pool2d(t, 2)
    t = fn.relu(fn.conv2d(t, params["3.weight"], params["3.bias"], padding=1))
    t = fn.linear(t.flatten(1), params["6.weight"], params["6.bias"])
    (t * torch.from_numpy(gy)).sum().backward()
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    for key, value in params.items():
        np.testing.assert_allclose(grads[key], value.grad.numpy(), rtol=1e-4, atol=1e-4,
                                   err_msg=key)

"""batch_norm2d and its gradient, and the BatchNorm2D layer: reference, finite
differences, running statistics, PyTorch, poisoned outputs, layouts, threads, builds;
BatchNorm2D -> ReLU in the plans (ReLU in the batch norm's store), bitwise the layers'."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pool_testing import DTYPES, assert_releases_the_gil, layouts, poisoned_like
from test_plans import assert_same, both_paths, fit_everything

import cnnext
from cnnext import Sequential, _dispatch, optim
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext.layers import BatchNorm2D, Conv2D, Dense, Flatten, ReLU, Residual

# Statistics are sums over N*H*W elements: float32 keeps ~1e-6 relative.
TOLERANCE = {np.dtype(np.float32): {"rtol": 2e-5, "atol": 2e-5},
             np.dtype(np.float64): {"rtol": 1e-11, "atol": 1e-12}}


def close(actual, expected, dtype, scale=1.0):
    tol = TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"] * scale,
                               atol=tol["atol"] * scale)


def problem(seed, shape, dtype, offset=0.0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, c, 1, 1)) + offset
         + rng.standard_normal((1, c, 1, 1))).astype(dtype)
    weight = rng.uniform(0.5, 2, c).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    running_mean = rng.standard_normal(c).astype(dtype)
    running_var = rng.uniform(0.5, 2, c).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    return x, weight, bias, running_mean, running_var, gy


def check(x, weight, bias, running_mean, running_var, gy, training, momentum=0.1, eps=1e-5):
    dtype = x.dtype
    before = [a.copy() for a in (x, gy)]
    rm, rv = running_mean.copy(), running_var.copy()
    y, mean, invstd = F.batch_norm2d(x, rm, rv, weight, bias, training, momentum, eps,
                                     return_stats=True)
    want, want_mean, want_invstd = reference.batch_norm2d(
        x, running_mean, running_var, weight, bias, training, momentum, eps, return_stats=True)
    assert y.dtype == dtype and mean.dtype == invstd.dtype == np.float64
    close(y, want, dtype, scale=10)
    close(mean, want_mean, dtype)
    close(invstd, want_invstd, dtype, scale=10)
    if training:
        want_rm, want_rv = reference.batch_norm2d_running(x, running_mean, running_var,
                                                          momentum)
        close(rm, want_rm, dtype)
        close(rv, want_rv, dtype, scale=10)
    else:
        np.testing.assert_array_equal(rm, running_mean)
        np.testing.assert_array_equal(rv, running_var)
    gx, gw, gb = F.batch_norm2d_backward(gy, x, mean, invstd, weight, training)
    want_gx, want_gw, want_gb = reference.batch_norm2d_backward(gy, x, want_mean, want_invstd,
                                                                weight, training)
    magnitude = np.abs(gy).sum() / gy.shape[1]
    close(gb, want_gb, dtype, scale=magnitude)
    close(gw, want_gw, dtype, scale=magnitude)
    close(gx, want_gx, dtype, scale=10)
    for array, copy in zip((x, gy), before, strict=True):
        np.testing.assert_array_equal(array, copy)
    return y, gx, gw, gb


@given(shape=st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 9),
                       st.integers(1, 40)),
       dtype=st.sampled_from(DTYPES), training=st.booleans(), affine=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_against_reference(shape, dtype, training, affine, seed):
    if training and shape[0] * shape[2] * shape[3] < 2:
        shape = (2, *shape[1:])
    x, weight, bias, rm, rv, gy = problem(seed, shape, dtype)
    check(x, weight if affine else None, bias if affine else None, rm, rv, gy, training)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(64, 32, 16, 16), (3, 5, 70, 70), (2, 3, 1, 1),
                                   (1, 2, 1, 4097)])
def test_shapes_across_lane_and_block_boundaries(shape, dtype):
    for training in (True, False):
        check(*problem(3, shape, dtype), training)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_large_mean_does_not_spoil_the_variance(dtype):
    # Plane sums about each plane's own mean: a mean 1e4 times the spread
    # still gives the variance to float32 accuracy (E[x^2] - E[x]^2 would not).
    x, weight, bias, rm, rv, _gy = problem(5, (4, 3, 8, 8), dtype, offset=1e4)
    _, _mean, invstd = F.batch_norm2d(x, rm, rv, weight, bias, True, return_stats=True)
    _, _want_mean, want_invstd = reference.batch_norm2d(x, rm, rv, weight, bias, True,
                                                       return_stats=True)
    np.testing.assert_allclose(invstd, want_invstd, rtol=1e-4 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("training", [True, False])
def test_gradients_by_finite_differences(training):
    x, weight, bias, rm, rv, gy = problem(7, (3, 2, 4, 5), np.float64)
    base = {"x": x, "weight": weight, "bias": bias}

    def loss(arrays):
        return float(np.sum(gy * F.batch_norm2d(arrays["x"], rm.copy(), rv.copy(),
                                                arrays["weight"], arrays["bias"], training)))

    _, mean, invstd = F.batch_norm2d(x, rm.copy(), rv.copy(), weight, bias, training,
                                     return_stats=True)
    grads = dict(zip(("x", "weight", "bias"),
                     F.batch_norm2d_backward(gy, x, mean, invstd, weight, training), strict=True))
    step = 1e-6
    for name, array in base.items():
        numeric = np.empty_like(array)
        for i in np.ndindex(array.shape):
            shifted = []
            for sign in (1, -1):
                moved = array.copy()
                moved[i] += sign * step
                shifted.append(loss({**base, name: moved}))
            numeric[i] = (shifted[0] - shifted[1]) / (2 * step)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_poisoned_outputs_and_other_layouts(dtype):
    x, weight, bias, rm, rv, gy = problem(9, (3, 4, 6, 7), dtype)
    y = poisoned_like(x)
    F.batch_norm2d(x, rm.copy(), rv.copy(), weight, bias, True, out=y)
    want = F.batch_norm2d(x, rm.copy(), rv.copy(), weight, bias, True)
    np.testing.assert_array_equal(y, want)
    _, mean, invstd = F.batch_norm2d(x, rm.copy(), rv.copy(), weight, bias, True,
                                     return_stats=True)
    grads = F.batch_norm2d_backward(gy, x, mean, invstd, weight)
    buffers = (poisoned_like(x), poisoned_like(weight), poisoned_like(bias))
    F.batch_norm2d_backward(gy, x, mean, invstd, weight, out=buffers)
    for got, want_grad in zip(buffers, grads, strict=True):
        np.testing.assert_array_equal(got, want_grad)
    for name, variant in layouts(x).items():
        np.testing.assert_array_equal(
            F.batch_norm2d(variant, rm.copy(), rv.copy(), weight, bias, True), want,
            err_msg=name)
    for name, variant in layouts(gy).items():
        for got, want_grad in zip(F.batch_norm2d_backward(variant, x, mean, invstd, weight),
                                  grads, strict=True):
            np.testing.assert_array_equal(got, want_grad, err_msg=name)


def test_nan_propagates_to_its_channel_only():
    x, weight, bias, rm, rv, _gy = problem(10, (2, 3, 4, 4), np.float32)
    x[1, 1, 2, 3] = np.nan
    y = F.batch_norm2d(x, rm.copy(), rv.copy(), weight, bias, True)
    assert np.isnan(y[:, 1]).all()
    assert np.isfinite(y[:, [0, 2]]).all()


def test_refusals_name_the_argument():
    x, weight, _bias, rm, rv, _gy = problem(11, (2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="running_mean"):
        F.batch_norm2d(x, training=False)
    with pytest.raises(ValueError, match="more than one value"):
        F.batch_norm2d(x[:1, :, :1, :1], training=True)
    with pytest.raises(ValueError, match="read-only"):
        frozen = rm.copy()
        frozen.flags.writeable = False
        F.batch_norm2d(x, frozen, rv.copy(), training=True)
    with pytest.raises(TypeError, match="weight"):
        F.batch_norm2d(x, rm, rv, weight.astype(np.float64))
    with pytest.raises(ValueError, match="momentum"):
        F.batch_norm2d(x, rm, rv, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        F.batch_norm2d(x, rm, rv, eps=0.0)
    with pytest.raises(ValueError, match="overlap"):
        F.batch_norm2d(x, rm, rm, training=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_depend_on_the_thread_count(num_threads, dtype):
    x, weight, bias, rm, rv, gy = problem(12, (16, 8, 20, 21), dtype)  # goes parallel
    results = []
    for threads in (1, 2, 4):
        num_threads(threads)
        running = (rm.copy(), rv.copy())
        y, mean, invstd = F.batch_norm2d(x, *running, weight, bias, True, return_stats=True)
        results.append([y, mean, invstd, *running,
                        *F.batch_norm2d_backward(gy, x, mean, invstd, weight, True),
                        *F.batch_norm2d_backward(gy, x, mean, invstd, weight, False)])
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_instruction_set_build_against_the_reference(dtype):
    modules = _dispatch.built_variants("_norm")
    assert "baseline" in modules
    x, weight, bias, rm, rv, gy = problem(13, (3, 5, 9, 37), dtype)
    n, c, h, w = x.shape
    want, want_mean, want_invstd = reference.batch_norm2d(x, rm, rv, weight, bias, True,
                                                          return_stats=True)
    want_grads = reference.batch_norm2d_backward(gy, x, want_mean, want_invstd, weight, True)
    for name, module in modules.items():
        assert module.compiled_isa() == name
        y = np.empty_like(x)
        mean, invstd = np.empty(c), np.empty(c)
        scratch = np.empty(2 * n * c + 4 * c)
        module.batch_norm_forward(x.reshape(n, c, h * w), weight, bias, None, None,
                                  y.reshape(n, c, h * w), mean, invstd, scratch, True, 1e-5, 0.1)
        close(y, want, dtype, scale=10)
        gx, gw, gb = np.empty_like(x), np.empty_like(weight), np.empty_like(bias)
        module.batch_norm_backward(gy.reshape(n, c, h * w), x.reshape(n, c, h * w), mean,
                                   invstd, weight, gx.reshape(n, c, h * w), gw, gb, scratch,
                                   True)
        for got, expected in zip((gx, gw, gb), want_grads, strict=True):
            close(got, expected, dtype, scale=100)


def test_the_kernels_release_the_gil(num_threads):
    num_threads(1)
    x, weight, bias, rm, rv, gy = problem(14, (64, 32, 32, 32), np.float32)
    stats = F.batch_norm2d(x, rm, rv, weight, bias, True, return_stats=True)
    # Each call is a few milliseconds: give the reader thread many chances.
    assert_releases_the_gil(lambda: F.batch_norm2d(x, rm, rv, weight, bias, True), attempts=200)
    assert_releases_the_gil(lambda: F.batch_norm2d_backward(gy, x, stats[1], stats[2], weight),
                            attempts=200)


# ------------------------------------------------------------------ the layer
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_against_torch_in_both_modes(torch, dtype, momentum, affine):
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    layer = BatchNorm2D(4, momentum=momentum, affine=affine, dtype=np.dtype(dtype).name)
    peer = torch.nn.BatchNorm2d(4, momentum=momentum, affine=affine).to(tdtype)
    rng = np.random.default_rng(15)
    if affine:
        for name in ("weight", "bias"):
            value = rng.uniform(0.5, 1.5, 4).astype(dtype)
            layer.params[name][...] = value
            getattr(peer, name).data = torch.from_numpy(value.copy())
    for step in range(3):
        x = (rng.standard_normal((5, 4, 6, 3)) * 2 + 1).astype(dtype)
        gy = rng.standard_normal(x.shape).astype(dtype)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        yt = peer(xt)
        yt.backward(torch.from_numpy(gy))
        y = layer(x)
        gx = layer.backward(gy)
        close(y, yt.detach().numpy(), dtype, scale=10)
        close(gx, xt.grad.numpy(), dtype, scale=10)
        if affine:
            close(layer.grads["weight"], peer.weight.grad.numpy(), dtype, scale=100)
            close(layer.grads["bias"], peer.bias.grad.numpy(), dtype, scale=100)
            peer.weight.grad = peer.bias.grad = None
        close(layer.buffers["running_mean"], peer.running_mean.numpy(), dtype)
        close(layer.buffers["running_var"], peer.running_var.numpy(), dtype)
        assert int(layer.buffers["num_batches_tracked"]) == int(peer.num_batches_tracked) \
            == step + 1
    layer.eval()
    peer.eval()
    x = rng.standard_normal((2, 4, 3, 3)).astype(dtype)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = peer(xt)
    gy = rng.standard_normal(x.shape).astype(dtype)
    yt.backward(torch.from_numpy(gy))
    close(layer(x), yt.detach().numpy(), dtype, scale=10)
    close(layer.backward(gy), xt.grad.numpy(), dtype, scale=10)
    if affine:
        close(layer.grads["weight"], peer.weight.grad.numpy(), dtype, scale=100)
    assert int(layer.buffers["num_batches_tracked"]) == 3  # evaluation leaves it


def test_layer_config_repr_and_refusals():
    layer = BatchNorm2D(3, eps=1e-3, momentum=None, affine=False, dtype="float64")
    assert repr(layer) == "BatchNorm2D(3, eps=0.001, momentum=None, affine=False, " \
                          "dtype='float64')"
    assert BatchNorm2D(**layer.config()).config() == layer.config()
    assert layer.params == {} and set(layer.buffers) == {"running_mean", "running_var",
                                                         "num_batches_tracked"}
    for kwargs, error in [({"num_features": 0}, ValueError), ({"num_features": 2.0}, TypeError),
                          ({"num_features": 2, "eps": -1}, ValueError),
                          ({"num_features": 2, "momentum": 2}, ValueError),
                          ({"num_features": 2, "affine": 1}, TypeError),
                          ({"num_features": 2, "dtype": "int8"}, TypeError)]:
        with pytest.raises(error, match="BatchNorm2D"):
            BatchNorm2D(**kwargs)
    with pytest.raises(ValueError, match="expects 3 channel"):
        layer.forward(np.zeros((2, 4, 3, 3)))


def test_layer_training_step_matches_the_functional_calls():
    layer = BatchNorm2D(2)
    x, _weight, _bias, _rm, _rv, _gy = problem(16, (4, 2, 3, 3), np.float32)
    before = layer.buffers["running_var"].copy()
    y = layer.forward(x)
    np.testing.assert_array_equal(y, F.batch_norm2d(x, np.zeros(2, np.float32), before.copy(),
                                                    np.ones(2, np.float32),
                                                    np.zeros(2, np.float32), True))
    assert cnnext.layers.BatchNorm2D is BatchNorm2D


def bn_relu_network(dtype):
    """BatchNorm2D -> ReLU at the top level and inside a residual block."""
    rng = np.random.default_rng(4)
    return Sequential([
        Conv2D(2, 3, 3, padding=1, bias=False, dtype=dtype, seed=rng), BatchNorm2D(3, dtype=dtype),
        ReLU(),
        Residual([Conv2D(3, 3, 3, padding=1, dtype=dtype, seed=rng), BatchNorm2D(3, dtype=dtype),
                  ReLU(), Conv2D(3, 3, 1, dtype=dtype, seed=rng)]),
        BatchNorm2D(3, momentum=None, affine=False, dtype=dtype), ReLU(),
        Flatten(), Dense(3 * 6 * 6, 4, dtype=dtype, seed=rng),
    ])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plans_apply_the_relu_after_a_batch_norm_as_it_stores_bitwise(dtype):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((7, 2, 6, 6)).astype(dtype)
    y = rng.integers(0, 4, 7)
    model = bn_relu_network(dtype)
    plan = model._acquire("fit", 3, (2, 6, 6))
    try:
        forward = [name.split(":")[-1] for name in plan.forward_program.names]
        backward = [name.split(":")[-1] for name in plan.backward_program.names]
    finally:
        model._release(plan)
    assert "relu" not in forward and forward.count("batch_norm2d") == 3, forward
    # The ReLUs' backward gates the batch norms' gradient as they read it.
    assert "relu_backward" not in backward and backward.count("batch_norm2d_backward") == 3, \
        backward

    def run(m):
        fitted = fit_everything(m, X, y, epochs=2, batch_size=3,
                                optimizer=optim.SGD(lr=0.05, momentum=0.9), seed=3)
        gy = np.random.default_rng(9).standard_normal((3, 4)).astype(dtype)
        m.train()
        m.forward(X[:3])
        trained = m.backward(gy)
        m.eval()  # running statistics: the backward without the batch's terms
        m.forward(X[:3])
        return fitted[:3], trained, m.backward(gy)

    plan_run, layer_run = both_paths(lambda: bn_relu_network(dtype), run)
    assert_same(plan_run, layer_run, "batch norm + relu, plan vs layers")

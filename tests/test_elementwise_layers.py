"""LeakyReLU, sigmoid, tanh, dropout and global average pooling: kernels against the
reference, finite differences, PyTorch, poisoned outputs, layouts, threads, builds;
and their layers."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pool_testing import DTYPES, assert_close, layouts, poisoned_like, random_array

from cnnext import _dispatch
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext.layers import Dropout, GlobalAvgPool2D, LeakyReLU, Sigmoid, Tanh

UNARY = {
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: reference.leaky_relu(x, 0.2)),
    "sigmoid": (F.sigmoid, reference.sigmoid),
    "tanh": (F.tanh, reference.tanh),
}


def gradient(name, gy, x):
    """(cnnext's gradient, the reference's) of UNARY[name] at x."""
    if name == "leaky_relu":
        return F.leaky_relu_backward(gy, x, 0.2), reference.leaky_relu_backward(gy, x, 0.2)
    y = UNARY[name][0](x)
    kernel = F.sigmoid_backward if name == "sigmoid" else F.tanh_backward
    ref = reference.sigmoid_backward if name == "sigmoid" else reference.tanh_backward
    return kernel(gy, y), ref(gy, y)


@given(name=st.sampled_from(sorted(UNARY)), dtype=st.sampled_from(DTYPES),
       shape=st.lists(st.integers(0, 9), min_size=1, max_size=4),
       kind=st.sampled_from(["normal", "special"]), seed=st.integers(0, 2**32 - 1))
def test_activations_against_reference(name, dtype, shape, kind, seed):
    x = random_array(seed, tuple(shape), dtype, kind) * 4
    before = x.copy()
    function, ref = UNARY[name]
    y = function(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_close(y, ref(x), dtype)
    gy = random_array(seed + 1, x.shape, dtype)
    got, want = gradient(name, gy, x)
    assert_close(got, want, dtype)
    np.testing.assert_array_equal(x, before)


def test_sigmoid_and_tanh_saturate_without_nan():
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4, np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(F.sigmoid(x), [0, reference.sigmoid(-100.0).astype(np.float32),
                                                 0.5, 1, 1, 1, 0])
    np.testing.assert_array_equal(F.tanh(x), [-1, -1, 0, 1, 1, 1, -1])


@pytest.mark.parametrize("name", sorted(UNARY))
def test_activation_gradients_by_finite_differences(name):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(20) * 2
    x = x[np.abs(x) > 1e-3]  # leaky_relu's kink
    gy = rng.standard_normal(x.shape)
    got, _ = gradient(name, gy, x)
    function = UNARY[name][0]
    step = 1e-6
    numeric = gy * (function(x + step) - function(x - step)) / (2 * step)
    np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_activations_against_torch(torch, name, dtype):
    x = random_array(2, (3, 4, 5), dtype, "special") * 3
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    peer = {"leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.2),
            "sigmoid": torch.sigmoid, "tanh": torch.tanh}[name]
    yt = peer(xt)
    gy = random_array(3, x.shape, dtype)
    yt.backward(torch.from_numpy(gy))
    # Within a couple of ulps of torch (its float32 exp/tanh round differently; the
    # gradients' 1 - y magnifies that where y is near 1).
    tol = {"rtol": 4e-7 if dtype == np.float32 else 1e-15, "atol": 1e-6 if dtype == np.float32
           else 1e-15}
    np.testing.assert_allclose(UNARY[name][0](x), yt.detach().numpy(), **tol)
    np.testing.assert_allclose(gradient(name, gy, x)[0], xt.grad.numpy(), **tol)


# ---------------------------------------------------------------- dropout
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_dropout_matches_the_reference_mask(dtype, p):
    x = random_array(4, (5, 7, 33), dtype, "special")
    key = 2**63 + 12345
    y = F.dropout(x, p, key)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(reference.dropout(x, p, key)))
    assert_close(y, reference.dropout(x, p, key), dtype)
    gy = random_array(5, x.shape, dtype)
    assert_close(F.dropout_backward(gy, p, key), reference.dropout(gy, p, key), dtype)


def test_dropout_drops_the_right_fraction_independently():
    x = np.ones(1_000_000, np.float32)
    for p in (0.1, 0.5, 0.8):
        kept = np.count_nonzero(F.dropout(x, p, 7))
        assert abs(kept / x.size - (1 - p)) < 5 * np.sqrt(p * (1 - p) / x.size)
    a, b = F.dropout(x, 0.5, 1) != 0, F.dropout(x, 0.5, 2) != 0
    assert abs(np.mean(a & b) - 0.25) < 0.003  # different keys: independent masks
    assert abs(np.mean(a[1:] & a[:-1]) - 0.25) < 0.003  # neighbours: independent
    assert np.all(F.dropout(x, 0.5, 1)[a] == 2)


def test_dropout_layer_is_reproducible_and_identity_in_evaluation():
    x = np.random.default_rng(6).standard_normal((4, 50)).astype(np.float32)
    first, second = Dropout(0.3, seed=11), Dropout(0.3, seed=11)
    for _ in range(3):
        y = first(x)
        np.testing.assert_array_equal(second(x), y)
        gy = np.ones_like(x)
        np.testing.assert_array_equal(first.backward(gy), np.where(y != 0, 1 / 0.7, 0.0)
                                      .astype(np.float32))
    assert not np.array_equal(first(x), first(x))
    first.eval()
    np.testing.assert_array_equal(first(x), x)
    np.testing.assert_array_equal(first.backward(np.ones_like(x)), np.ones_like(x))
    with pytest.raises(ValueError, match="Dropout: p"):
        Dropout(1.5)
    with pytest.raises(TypeError, match="Dropout: seed"):
        Dropout(0.5, seed="x")


# -------------------------------------------------------- global pooling
@given(shape=st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(1, 9),
                       st.integers(1, 70)),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_global_avg_pool_against_reference(shape, dtype, seed):
    x = random_array(seed, shape, dtype)
    y = F.global_avg_pool2d(x)
    assert y.shape == shape[:2] and y.dtype == x.dtype
    assert_close(y, reference.global_avg_pool2d(x), dtype)
    gy = random_array(seed + 1, y.shape, dtype)
    assert_close(F.global_avg_pool2d_backward(gy, x.shape),
                 reference.global_avg_pool2d_backward(gy, x.shape), dtype)


def test_global_avg_pool_layer_against_torch(torch):
    x = random_array(7, (3, 5, 7, 6), np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = torch.nn.functional.adaptive_avg_pool2d(xt, 1).flatten(1)
    gy = random_array(8, (3, 5), np.float32)
    yt.backward(torch.from_numpy(gy))
    layer = GlobalAvgPool2D()
    np.testing.assert_allclose(layer(x), yt.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layer.backward(gy), xt.grad.numpy(), rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="GlobalAvgPool2D"):
        layer.forward(np.zeros((2, 3), np.float32))


# ------------------------------------------------ buffers, layouts, threads
def calls(x, gy):
    """Every new elementwise kernel on x (and gy), by name."""
    y_sig, y_tanh = F.sigmoid(x), F.tanh(x)
    planes = x.reshape(x.shape[0], x.shape[1], -1, x.shape[-1])
    return {
        "leaky_relu": F.leaky_relu(x, 0.3),
        "leaky_relu_backward": F.leaky_relu_backward(gy, x, 0.3),
        "sigmoid": y_sig, "sigmoid_backward": F.sigmoid_backward(gy, y_sig),
        "tanh": y_tanh, "tanh_backward": F.tanh_backward(gy, y_tanh),
        "dropout": F.dropout(x, 0.4, 99), "dropout_backward": F.dropout_backward(gy, 0.4, 99),
        "global_avg_pool2d": F.global_avg_pool2d(planes),
        "global_avg_pool2d_backward": F.global_avg_pool2d_backward(
            gy.reshape(planes.shape)[:, :, 0, 0], planes.shape),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_depend_on_the_thread_count(num_threads, dtype):
    x = random_array(9, (8, 16, 30, 31), dtype, "special")  # large enough to go parallel
    gy = random_array(10, x.shape, dtype)
    results = []
    for threads in (1, 2, 4):
        num_threads(threads)
        results.append(calls(x, gy))
    for other in results[1:]:
        for name, got in other.items():
            np.testing.assert_array_equal(got, results[0][name], err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_poisoned_outputs_and_other_layouts(dtype):
    x = random_array(11, (2, 3, 4, 5), dtype, "special")
    gy = random_array(12, x.shape, dtype)
    want = calls(x, gy)
    for name, variant in layouts(x).items():
        for key, got in calls(variant, gy).items():
            np.testing.assert_array_equal(got, want[key], err_msg=f"{key} {name}")
    for name, call in [
            ("leaky_relu", lambda out: F.leaky_relu(x, 0.3, out=out)),
            ("sigmoid", lambda out: F.sigmoid(x, out=out)),
            ("tanh", lambda out: F.tanh(x, out=out)),
            ("dropout", lambda out: F.dropout(x, 0.4, 99, out=out)),
            ("dropout_backward", lambda out: F.dropout_backward(gy, 0.4, 99, out=out))]:
        out = poisoned_like(x)
        assert call(out) is out
        np.testing.assert_array_equal(out, want[name], err_msg=name)
    out = poisoned_like(want["global_avg_pool2d"])
    F.global_avg_pool2d(x, out=out)
    np.testing.assert_array_equal(out, want["global_avg_pool2d"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_pool_build_gives_the_same_global_average(dtype):
    x = random_array(13, (2, 3, 17, 19), dtype)
    results = {}
    for name, module in _dispatch.built_variants("_pool").items():
        y = np.empty(6, dtype)
        module.global_avg_pool2d_forward(x.reshape(6, -1), y)
        results[name] = y
    for name, y in results.items():
        np.testing.assert_array_equal(y, results["baseline"], err_msg=name)


def test_layers_config_and_repr():
    assert repr(LeakyReLU()) == "LeakyReLU()" and LeakyReLU(0.2).config() == {
        "negative_slope": 0.2}
    assert repr(Sigmoid()) == "Sigmoid()" and repr(Tanh()) == "Tanh()"
    assert repr(Dropout(0.1)) == "Dropout(p=0.1)" and Dropout().config() == {"p": 0.5}
    with pytest.raises(ValueError, match="LeakyReLU"):
        LeakyReLU(float("nan"))
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    layer = Tanh()
    layer(x)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), 1 - np.tanh(x) ** 2)

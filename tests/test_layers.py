"""Layers: forward against the float64 reference, gradients by finite differences, init, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_testing import central_differences, every_layer_model, loss_of

from cnnext import _reference as R
from cnnext.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU

TOLERANCE = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_matches_the_reference_layer_by_layer(dtype):
    rng = np.random.default_rng(1)
    model = every_layer_model(dtype=dtype, seed=2)
    x = rng.standard_normal((3, 2, 9, 8)).astype(dtype)
    expected = x.astype(np.float64)
    for layer in model.layers:
        got = layer.forward(x)
        p = {k: v.astype(np.float64) for k, v in layer.params.items()}
        if isinstance(layer, Conv2D):
            expected = R.conv2d(expected, p["weight"], p.get("bias"), layer.stride,
                                layer.padding, layer.dilation)
        elif isinstance(layer, MaxPool2D):
            expected = R.max_pool2d(expected, layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, AvgPool2D):
            expected = R.avg_pool2d(expected, layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, ReLU):
            expected = R.relu(expected)
        elif isinstance(layer, Flatten):
            expected = expected.reshape(len(expected), -1)
        else:
            expected = expected @ p["weight"].T + p["bias"]
        assert got.dtype == np.dtype(dtype)
        assert got.shape == (3, *layer.output_shape(x.shape[1:]))
        np.testing.assert_allclose(got, expected, **TOLERANCE[dtype])
        x = got


@st.composite
def conv_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    extent = [d * (k - 1) + 1 - 2 * p for k, p, d in zip(kernel, padding, dilation, strict=True)]
    size = [draw(st.integers(max(e, 1), max(e, 1) + 5)) for e in extent]
    layer = Conv2D(draw(st.integers(1, 3)), draw(st.integers(1, 3)), kernel, stride, padding,
                   dilation, bias=draw(st.booleans()), dtype="float64", seed=0)
    return layer, (draw(st.integers(1, 3)), layer.in_channels, *size)


@given(conv_cases())
def test_conv2d_passes_its_geometry_to_the_kernels(case):
    layer, x_shape = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    y = layer.forward(x)
    args = (layer.stride, layer.padding, layer.dilation)
    np.testing.assert_allclose(y, R.conv2d(x, layer.params["weight"], layer.params.get("bias"),
                                           *args), rtol=1e-12, atol=1e-12)
    assert y.shape == (x_shape[0], *layer.output_shape(x_shape[1:]))
    gy = rng.standard_normal(y.shape)
    gx = layer.backward(gy)
    expected = R.conv2d_backward(gy, x, layer.params["weight"], *args)
    np.testing.assert_allclose(gx, expected[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], expected[1], rtol=1e-12, atol=1e-12)
    if layer.bias:
        np.testing.assert_allclose(layer.grads["bias"], expected[2], rtol=1e-12, atol=1e-12)


@given(st.sampled_from([MaxPool2D, AvgPool2D]), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 3), st.integers(0, 1), st.integers(3, 9), st.integers(3, 9))
def test_pooling_passes_its_geometry_to_the_kernels(cls, kh, kw, stride, padding, h, w):
    padding = min(padding, kh // 2, kw // 2)
    layer = cls((kh, kw), stride=stride, padding=padding)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, h, w))
    y = layer.forward(x)
    reference = R.max_pool2d if cls is MaxPool2D else R.avg_pool2d
    np.testing.assert_allclose(y, reference(x, (kh, kw), stride, padding), rtol=1e-12)
    assert y.shape == (2, *layer.output_shape(x.shape[1:]))
    gy = rng.standard_normal(y.shape)
    if cls is MaxPool2D:
        _, idx = R.max_pool2d(x, (kh, kw), stride, padding, return_indices=True)
        expected = R.max_pool2d_backward(gy, idx, x.shape)
    else:
        expected = R.avg_pool2d_backward(gy, x.shape, (kh, kw), stride, padding)
    np.testing.assert_allclose(layer.backward(gy), expected, rtol=1e-12, atol=1e-15)


def test_gradients_through_a_whole_model_match_finite_differences():
    rng = np.random.default_rng(3)
    model = every_layer_model(dtype="float64", seed=4)
    x = rng.standard_normal((2, 2, 9, 8))
    labels = np.array([1, 4])
    _, glogits = R.softmax_cross_entropy(model.forward(x), labels)
    gx = model.backward(glogits)
    grads = model.gradients()
    for name, param in model.parameters().items():
        numeric = central_differences(lambda: loss_of(model, x, labels), param)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)
    numeric = central_differences(lambda: loss_of(model, x, labels), x)
    np.testing.assert_allclose(gx, numeric, rtol=1e-5, atol=1e-8)


def test_workspace_path_gives_the_public_path_results_and_keeps_earlier_outputs():
    rng = np.random.default_rng(5)
    model = every_layer_model(dtype="float32", seed=6)
    x = rng.standard_normal((4, 2, 9, 8)).astype(np.float32)
    x_copy = x.copy()
    first = model.forward(x)
    second = model.forward(x + 1)
    assert not np.shares_memory(first, second)
    reused = model._run_forward(x).copy()
    np.testing.assert_array_equal(reused, first)
    np.testing.assert_array_equal(x, x_copy)  # inputs never modified
    gy = rng.standard_normal(first.shape).astype(np.float32)
    model.forward(x)
    model.backward(gy)
    public = {k: v.copy() for k, v in model.gradients().items()}
    model._run_forward(x)
    model._run_backward(gy)
    for name, grad in model.gradients().items():
        if name.startswith("0."):
            # The first layer needs no input gradient on the workspace path, so its
            # fused Conv2D -> ReLU -> MaxPool2D sums the weight gradient over the
            # argmax windows only: the same terms in another order.
            np.testing.assert_allclose(grad, public[name], rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(grad, public[name], err_msg=name)


def test_large_outputs_reuse_workspaces_small_ones_are_fresh():
    conv = Conv2D(1, 8, 3)
    big = np.zeros((64, 1, 28, 28), np.float32)  # output 1.4 MB
    small = np.zeros((1, 1, 28, 28), np.float32)  # output 22 KB
    assert conv._forward(big, reuse=True) is conv._forward(big + 1, reuse=True)
    assert conv._forward(small, reuse=True) is not conv._forward(small, reuse=True)
    assert conv._forward(big, reuse=False) is not conv._forward(big, reuse=False)


def test_seeded_initialisation_is_reproducible_and_scaled():
    a, b, c = Conv2D(16, 32, 3, seed=7), Conv2D(16, 32, 3, seed=7), Conv2D(16, 32, 3, seed=8)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    assert not np.array_equal(a.params["weight"], c.params["weight"])
    np.testing.assert_array_equal(a.params["bias"], 0)
    # He normal: std sqrt(2 / fan_in), fan_in = 16 * 9 (4608 draws: within 5%).
    assert abs(a.params["weight"].std() / np.sqrt(2 / 144) - 1) < 0.05
    dense = Dense(300, 100, seed=1)
    limit = np.sqrt(6 / 400)
    assert np.abs(dense.params["weight"]).max() <= limit
    assert np.abs(dense.params["weight"]).max() > 0.95 * limit
    assert dense.params["weight"].dtype == np.float32
    f64 = Dense(300, 100, dtype="float64", seed=1)
    np.testing.assert_array_equal(f64.params["weight"].astype(np.float32), dense.params["weight"])


def test_seeds_may_be_numpy_ints_or_a_shared_generator():
    np.testing.assert_array_equal(Conv2D(2, 3, 3, seed=np.uint8(7)).params["weight"],
                                  Conv2D(2, 3, 3, seed=7).params["weight"])
    shared, fresh = np.random.default_rng(5), np.random.default_rng(5)
    first, second = Conv2D(2, 3, 3, seed=shared), Conv2D(2, 3, 3, seed=shared)
    np.testing.assert_array_equal(first.params["weight"], Conv2D(2, 3, 3, seed=fresh).params[
        "weight"])
    assert not np.array_equal(first.params["weight"], second.params["weight"])


def test_repr_reads_like_the_constructor_call():
    assert repr(Conv2D(1, 8, 3, bias=False)) == "Conv2D(1, 8, 3, bias=False)"
    assert repr(Conv2D(3, 4, (3, 5), stride=2, padding=(1, 2), dtype="float64")) == \
        "Conv2D(3, 4, (3, 5), stride=2, padding=(1, 2), dtype='float64')"
    assert repr(MaxPool2D(2)) == "MaxPool2D(2)"
    assert repr(AvgPool2D(3, stride=2, padding=1)) == "AvgPool2D(3, stride=2, padding=1)"
    assert repr(Dense(1352, 10)) == "Dense(1352, 10)"
    assert repr(Dense(5, 2, init="he_normal")) == "Dense(5, 2, init='he_normal')"
    assert repr(ReLU()) == "ReLU()" and repr(Flatten()) == "Flatten()"


@pytest.mark.parametrize("layer", [
    Conv2D(1, 8, 3, bias=False), Conv2D(3, 4, (3, 5), stride=2, padding=(1, 2), dilation=2),
    MaxPool2D(3, stride=2, padding=1), AvgPool2D((2, 3)), ReLU(), Flatten(),
    Dense(7, 3, bias=False, dtype="float64", init="he_normal"),
], ids=repr)
def test_config_rebuilds_the_same_layer(layer):
    rebuilt = type(layer)(**layer.config())
    assert rebuilt.config() == layer.config()
    assert {k: v.shape for k, v in rebuilt.params.items()} == \
        {k: v.shape for k, v in layer.params.items()}


@pytest.mark.parametrize(("layer", "x_shape", "message"), [
    (Conv2D(1, 8, 3), (2, 3, 28, 28), "expects 1 input channel"),
    (Conv2D(1, 8, 3), (2, 28, 28), r"takes \(C, H, W\) examples"),
    (Conv2D(1, 8, 5), (2, 1, 4, 4), "kernel spans 5 along height"),
    (MaxPool2D(2), (2, 8, 13), r"takes \(C, H, W\) examples"),
    (Dense(1352, 10), (2, 8, 13, 13), "add a Flatten"),
    (Dense(1352, 10), (2, 1351), r"takes examples of shape \(1352,\)"),
])
def test_wrong_input_shapes_raise_naming_the_layer(layer, x_shape, message):
    with pytest.raises(ValueError, match=message):
        layer.forward(np.zeros(x_shape, dtype=np.float32))


def test_wrong_dtypes_and_call_order_raise():
    conv = Conv2D(1, 2, 3)
    with pytest.raises(TypeError, match="dtype float64 but the layer computes in float32"):
        conv.forward(np.zeros((1, 1, 5, 5)))
    with pytest.raises(TypeError, match="dtype float32 or float64"):
        conv.forward(np.zeros((1, 1, 5, 5), dtype=np.uint8))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        conv.backward(np.zeros((1, 2, 3, 3), dtype=np.float32))
    conv.forward(np.zeros((1, 1, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"gy must have shape \(1, 2, 3, 3\)"):
        conv.backward(np.zeros((1, 2, 3, 4), dtype=np.float32))


@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda: Conv2D(0, 8, 3), ValueError, "in_channels must be >= 1"),
    (lambda: Conv2D(1, 8, 0), ValueError, "kernel_size must be >= 1"),
    (lambda: Conv2D(1, 8, 3.0), TypeError, "kernel_size must be an int"),
    (lambda: Conv2D(1, 8, 3, stride=0), ValueError, "stride must be >= 1"),
    (lambda: Conv2D(1, 8, 3, bias="no"), TypeError, "bias must be True or False"),
    (lambda: Conv2D(1, 8, 3, dtype="float16"), TypeError, "dtype must be 'float32' or"),
    (lambda: Conv2D(1, 8, 3, dtype="floatD32"), TypeError, "dtype must be 'float32' or"),
    (lambda: Conv2D(1, 8, 3, dtype=None), TypeError, "dtype must be 'float32' or"),
    (lambda: Dense(2, 2, dtype=np.dtype(">f4")), TypeError, "dtype must be 'float32' or"),
    (lambda: Dense(10, 2, init="zeros"), ValueError, "init must be one of"),
    (lambda: Dense(True, 2), TypeError, "in_features must be an int"),
    (lambda: Dense(2**40, 2**40), ValueError, "Dense: the initial weights given by "
                                              "out_features and in_features"),
    (lambda: Dense(4, 2, seed=-1), ValueError, "Dense: seed must be None, an int >= 0"),
    (lambda: Dense(4, 2, seed="x"), TypeError, "Dense: seed must be None, an int >= 0"),
    (lambda: MaxPool2D(2, padding=2), ValueError,
     r"MaxPool2D: padding \(2, 2\) along height holds whole windows of kernel_size 2"),
    (lambda: AvgPool2D(3, padding=((0, 1), (3, 0))), ValueError,
     r"AvgPool2D: padding \(3, 0\) along width holds whole windows"),
    (lambda: MaxPool2D(2, ceil_mode="yes"), TypeError, "MaxPool2D: ceil_mode must be True"),
    (lambda: AvgPool2D(2, count_include_pad=None), TypeError,
     "AvgPool2D: count_include_pad must be True"),
    (lambda: MaxPool2D(2, dilation=0), ValueError, "MaxPool2D: dilation must be >= 1"),
    (lambda: Conv2D(1, 8, 3, padding=((1, 2, 3), (0, 0))), ValueError,
     r"Conv2D: padding must be an int, a pair \(h, w\) or a pair of pairs"),
    (lambda: AvgPool2D((2, 2, 2)), ValueError, "kernel_size must be an int or a pair"),
    (lambda: MaxPool2D(np.array(2.0)), TypeError, "MaxPool2D: kernel_size must be an int"),
    (lambda: MaxPool2D(2, stride=2**63), ValueError, r"MaxPool2D: stride must be at most 2\*\*62"),
    (lambda: Conv2D(1, 8, 3, dilation=(1, 2**80)), ValueError,
     r"Conv2D: dilation must be at most 2\*\*62"),
    # Sizes whose weights could not even be addressed, refused before any allocation.
    (lambda: Conv2D(2**62, 8, 3), ValueError, r"Conv2D: the initial weights given by "
     r"out_channels, in_channels and kernel_size of shape \(8, 4611686018427387904, 3, 3\)"),
    (lambda: Conv2D(1, 8, 2**31), ValueError, "Conv2D: the initial weights given by"),
    (lambda: Conv2D(1, 8, 3, seed=-1), ValueError,
     "Conv2D: seed must be None, an int >= 0 or a numpy.random.Generator, got -1"),
    (lambda: Conv2D(1, 8, 3, seed="x"), TypeError, "Conv2D: seed must be None, .* got str"),
    (lambda: Conv2D(1, 8, 3, seed=1.5), TypeError, "Conv2D: seed must be None, .* got float"),
    (lambda: Conv2D(1, 8, 3, seed=True), TypeError, "Conv2D: seed must be None, .* got bool"),
])
def test_bad_constructor_arguments_raise(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_numpy_ints_and_arrays_are_sizes_and_configs_stay_plain_ints():
    pool = MaxPool2D(np.array(2), stride=np.array([1, 2]), padding=np.int64(1))
    assert pool.config() == MaxPool2D(2, stride=(1, 2), padding=1).config()
    conv = Conv2D(np.int32(1), 2, np.array(3), stride=np.array(2), seed=0)
    assert conv.config() == Conv2D(1, 2, 3, stride=2, seed=0).config()
    assert all(type(v) is int for layer in (pool, conv) for value in layer.config().values()
               if isinstance(value, list) for v in value)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_relu_takes_a_matrix_as_its_plain_array():
    x = np.array([[1.5, -2.0, 0.0], [-0.5, 3.0, np.nan]], np.float32)
    gy = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    relu = ReLU()
    y = relu.forward(np.asmatrix(x))
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, R.relu(x).astype(np.float32))
    np.testing.assert_array_equal(relu.backward(np.asmatrix(gy)), R.relu_backward(gy, x))


def test_an_empty_batch_gives_empty_outputs_through_every_layer():
    """N = 0 flows through as through the functional kernels; Flatten keeps the feature count."""
    model = every_layer_model()
    example = (2, 9, 8)
    for layer in model.layers:
        y = layer.forward(np.zeros((0, *example)))
        example = layer.output_shape(example)
        assert y.shape == (0, *example), layer
        assert layer.backward(y).shape[0] == 0
    flatten = Flatten()
    assert flatten.forward(np.zeros((0, 4, 3, 2), np.float32)).shape == (0, 24)
    assert flatten.backward(np.zeros((0, 24), np.float32)).shape == (0, 4, 3, 2)
    assert model.forward(np.zeros((0, 2, 9, 8))).shape == (0, 5)
    assert model.backward(np.zeros((0, 5))).shape == (0, 2, 9, 8)

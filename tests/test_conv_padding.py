"""conv2d with padding that differs between the two sides of an axis (ONNX's pads,
auto_pad SAME_*): against the reference, an explicitly padded input, PyTorch, finite
differences, out= buffers and bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnext import Sequential, load_model
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext.layers import Conv2D

TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _data(seed, x_shape, w_shape, dtype):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(x_shape).astype(dtype),
            (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype),
            rng.standard_normal(w_shape[0]).astype(dtype))


@st.composite
def problems(draw):
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pads = tuple(tuple(draw(st.integers(0, 3)) for _ in range(2)) for _ in range(2))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(max(1, dilation[0] * (r - 1) + 1 - sum(pads[0])), 9))
    w = draw(st.integers(max(1, dilation[1] * (s - 1) + 1 - sum(pads[1])), 9))
    x_shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)
    w_shape = (draw(st.integers(1, 5)), x_shape[1], r, s)
    return x_shape, w_shape, dict(stride=stride, padding=pads, dilation=dilation)


@given(problem=problems(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_asymmetric_padding_against_reference(problem, dtype, seed):
    x_shape, w_shape, kwargs = problem
    x, w, b = _data(seed, x_shape, w_shape, dtype)
    before = x.copy()
    y = F.conv2d(x, w, b, **kwargs)
    np.testing.assert_allclose(y, reference.conv2d(x, w, b, **kwargs), **TOLERANCE[dtype])
    gy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dtype)
    gx, gw, gb = F.conv2d_backward(gy, x, w, **kwargs)
    want = reference.conv2d_backward(gy, x, w, **kwargs)
    for got, expected in zip((gx, gw, gb), want, strict=True):
        np.testing.assert_allclose(got, expected, **TOLERANCE[dtype])
    assert gx.shape == x.shape and gx.flags.c_contiguous
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_the_explicitly_padded_input(dtype):
    x, w, b = _data(1, (2, 3, 7, 5), (4, 3, 3, 3), dtype)
    pads = ((1, 0), (0, 2))
    padded = np.pad(x, ((0, 0), (0, 0), *pads))
    np.testing.assert_array_equal(F.conv2d(x, w, b, 2, pads), F.conv2d(padded, w, b, 2))
    gy = np.ones(F.conv2d(padded, w, b, 2).shape, dtype)
    gx, gw, gb = F.conv2d_backward(gy, x, w, 2, pads)
    pgx, pgw, pgb = F.conv2d_backward(gy, padded, w, 2)
    np.testing.assert_array_equal(gx, pgx[:, :, 1:8, 0:5])
    np.testing.assert_array_equal(gw, pgw)
    np.testing.assert_array_equal(gb, pgb)
    # Symmetric pairs of pairs are plain padding.
    np.testing.assert_array_equal(F.conv2d(x, w, b, 1, ((1, 1), (2, 2))), F.conv2d(x, w, b, 1,
                                                                                  (1, 2)))


def test_against_torch(torch):
    x, w, b = _data(2, (2, 3, 7, 6), (4, 3, 3, 2), np.float64)
    pads = ((2, 1), (0, 1))
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (0, 1, 2, 1)), tw,
                                    torch.from_numpy(b), stride=(2, 1), dilation=(1, 2))
    gy = np.random.default_rng(3).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(gy))
    y = F.conv2d(x, w, b, (2, 1), pads, (1, 2))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    gx, gw, _ = F.conv2d_backward(gy, x, w, (2, 1), pads, (1, 2))
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_gradients_match_finite_differences():
    x, w, b = _data(4, (1, 2, 5, 4), (2, 2, 3, 2), np.float64)
    pads = ((0, 2), (1, 0))
    weights = np.random.default_rng(5).standard_normal(F.conv2d(x, w, b, 1, pads).shape)
    gx, gw, _ = F.conv2d_backward(weights, x, w, 1, pads)
    for array, grad in ((x, gx), (w, gw)):
        numeric = np.zeros_like(array)
        for i in np.ndindex(*array.shape):
            saved = array[i]
            array[i] = saved + 1e-6
            plus = np.sum(weights * F.conv2d(x, w, b, 1, pads))
            array[i] = saved - 1e-6
            minus = np.sum(weights * F.conv2d(x, w, b, 1, pads))
            array[i] = saved
            numeric[i] = (plus - minus) / 2e-6
        np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_out_buffers_and_need_input_grad():
    x, w, b = _data(6, (2, 3, 6, 6), (4, 3, 3, 3), np.float32)
    pads = ((0, 1), (1, 0))
    y = F.conv2d(x, w, b, 1, pads)
    out = np.full_like(y, np.nan)
    assert F.conv2d(x, w, b, 1, pads, out=out) is out
    np.testing.assert_array_equal(out, y)
    gy = np.ones_like(y)
    want = F.conv2d_backward(gy, x, w, 1, pads)
    buffers = (np.full_like(x, np.nan), np.full_like(w, np.nan), np.full_like(b, np.nan))
    got = F.conv2d_backward(gy, x, w, 1, pads, out=buffers)
    for buffer, result, expected in zip(buffers, got, want, strict=True):
        assert result is buffer
        np.testing.assert_array_equal(buffer, expected)
    gx, gw, _ = F.conv2d_backward(gy, x, w, 1, pads, need_input_grad=False)
    assert gx is None
    np.testing.assert_array_equal(gw, want[1])
    with pytest.raises(ValueError, match=r"conv2d_backward: out\[0\] \(gx\) must be None"):
        F.conv2d_backward(gy, x, w, 1, pads, need_input_grad=False, out=buffers)
    with pytest.raises(ValueError, match=r"conv2d_backward: out\[0\] \(gx\) must have shape"):
        F.conv2d_backward(gy, x, w, 1, pads, out=(np.zeros_like(y), None, None))
    with pytest.raises(ValueError, match=r"conv2d_backward: out\[1\] \(gw\) must have shape"):
        F.conv2d_backward(gy, x, w, 1, pads, out=(None, np.zeros_like(x), None))


@pytest.mark.parametrize(("padding", "error", "message"), [
    (((1, 2, 3), (0, 0)), ValueError, r"conv2d: padding must be an int, a pair \(h, w\) or"),
    (((1, -2), (0, 0)), ValueError, "conv2d: padding must be >= 0"),
    (((1, 2), (0, 2**61)), ValueError, "conv2d: the padded input of shape"),
    (((0, 0), (0, 1.0)), TypeError, "conv2d: padding must be an int, got float"),
])
def test_bad_padding_is_refused(padding, error, message):
    x, w, b = _data(7, (1, 1, 4, 4), (1, 1, 3, 3), np.float32)
    with pytest.raises(error, match=message):
        F.conv2d(x, w, b, 1, padding)


def test_conv2d_layer_takes_one_sided_padding_and_saves_it(tmp_path):
    layer = Conv2D(3, 4, 3, stride=2, padding=((1, 0), (0, 2)), dtype="float64", seed=0)
    x, _, _ = _data(8, (2, 3, 7, 5), (4, 3, 3, 3), np.float64)
    want = F.conv2d(x, layer.params["weight"], layer.params["bias"], 2, ((1, 0), (0, 2)))
    model = Sequential([layer], input_shape=(3, 7, 5))
    np.testing.assert_array_equal(model.forward(x), want)
    assert model.output_shape((3, 7, 5)) == want.shape[1:]
    gx = model.backward(np.ones_like(want))
    np.testing.assert_array_equal(gx, F.conv2d_backward(np.ones_like(want), x,
                                                        layer.params["weight"], 2,
                                                        ((1, 0), (0, 2)))[0])
    assert layer.config()["padding"] == [[1, 0], [0, 2]]
    assert "padding=((1, 0), (0, 2))" in repr(layer)
    model.save(tmp_path / "conv.npz")
    loaded = load_model(tmp_path / "conv.npz")
    np.testing.assert_array_equal(loaded.forward(x), want)
    # Equal sides are plain padding, and ((1, 0), (1, 0)) is not (1, 0).
    assert Conv2D(1, 1, 3, padding=((2, 2), (1, 1))).padding == (2, 1)
    odd = Conv2D(1, 1, 3, padding=((1, 0), (1, 0)), dtype="float64")
    assert odd.output_shape((1, 5, 5)) == (1, 4, 4)

"""conv2d and conv2d_backward reject bad input with errors naming the argument."""

import numpy as np
import pytest

from cnnext import functional as F

X = np.zeros((2, 3, 8, 9), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)
B = np.zeros(4, np.float32)
GY = np.zeros((2, 4, 6, 7), np.float32)


def forward_kwargs(**changes):
    kwargs = {"x": X, "w": W, "b": B, "stride": 1, "padding": 0, "dilation": 1}
    kwargs.update(changes)
    return kwargs


def backward_kwargs(**changes):
    kwargs = {"gy": GY, "x": X, "w": W, "stride": 1, "padding": 0, "dilation": 1}
    kwargs.update(changes)
    return kwargs


# (changes, error type, regex the message must match): the message names the
# function, the argument and what it got.
FORWARD_CASES = [
    ({"x": "images"}, TypeError, r"conv2d: x must have dtype float32 or float64, got <U6"),
    ({"x": object()}, TypeError, r"conv2d: x must have dtype .* got object"),
    ({"x": X.astype(np.int64)}, TypeError, r"conv2d: x must have dtype .* got int64"),
    ({"x": X.astype(np.float16)}, TypeError, r"conv2d: x .* got float16"),
    ({"x": X.astype(np.complex64)}, TypeError, r"conv2d: x .* got complex64"),
    ({"x": X.astype(bool)}, TypeError, r"conv2d: x .* got bool"),
    ({"x": X[0]}, ValueError, r"conv2d: x must be 4-D \(N, C, H, W\), got shape \(3, 8, 9\)"),
    ({"w": W[0]}, ValueError, r"conv2d: w must be 4-D \(K, C, R, S\), got shape \(3, 3, 3\)"),
    ({"w": W.astype(np.float64)}, TypeError, r"conv2d: w has dtype float64 but x has float32"),
    ({"w": W.astype(np.int32)}, TypeError, r"conv2d: w must have dtype .* got int32"),
    ({"w": W[:, :2]}, ValueError, r"conv2d: w has 2 input channels .* but x has 3"),
    ({"w": W[:0], "b": None}, ValueError,
     r"conv2d: w must have K, R, S >= 1 .* got shape \(0, 3, 3, 3\)"),
    ({"x": X[:, :0], "w": W[:, :0]}, ValueError, r"conv2d: x must have C, H, W >= 1"),
    ({"x": X[:, :, :0]}, ValueError, r"conv2d: x must have C, H, W >= 1 .* \(2, 3, 0, 9\)"),
    ({"b": B[:3]}, ValueError, r"conv2d: b must have shape \(4,\) .* got shape \(3,\)"),
    ({"b": B[None]}, ValueError, r"conv2d: b must be 1-D \(K,\), got shape \(1, 4\)"),
    ({"b": B.astype(np.float64)}, TypeError, r"conv2d: b has dtype float64 but x has float32"),
    ({"b": B.astype(np.int8)}, TypeError, r"conv2d: b must have dtype .* got int8"),
    ({"stride": 0}, ValueError, r"conv2d: stride must be >= 1, got 0"),
    ({"stride": (1, -2)}, ValueError, r"conv2d: stride must be >= 1, got \(1, -2\)"),
    ({"stride": (1, 2, 3)}, ValueError, r"conv2d: stride must be an int or a pair"),
    ({"stride": 1.5}, TypeError, r"conv2d: stride must be an int, got float"),
    ({"stride": True}, TypeError, r"conv2d: stride must be an int, got bool"),
    ({"stride": "1"}, TypeError, r"conv2d: stride must be an int, got str"),
    ({"padding": -1}, ValueError, r"conv2d: padding must be >= 0, got -1"),
    ({"padding": (0, None)}, TypeError, r"conv2d: padding must be an int, got NoneType"),
    ({"dilation": 0}, ValueError, r"conv2d: dilation must be >= 1, got 0"),
    ({"dilation": (1, 0)}, ValueError, r"conv2d: dilation must be >= 1"),
    ({"w": np.zeros((4, 3, 9, 3), np.float32)}, ValueError,
     r"conv2d: the kernel spans 9 along height but the padded input has only 8"),
    ({"dilation": (1, 5)}, ValueError,
     r"conv2d: the kernel spans 11 along width but the padded input has only 9"),
    ({"padding": 2**62}, ValueError, r"conv2d: .* would take more than \d+ bytes"),
]


@pytest.mark.parametrize("changes, error, message", FORWARD_CASES)
def test_conv2d_rejects(changes, error, message):
    with pytest.raises(error, match=message):
        F.conv2d(**forward_kwargs(**changes))


def y_buffer(**kw):
    return np.empty(kw.get("shape", (2, 4, 6, 7)), kw.get("dtype", np.float32))


OUT_CASES = [
    (y_buffer(shape=(2, 4, 6, 6)), ValueError,
     r"conv2d: out must have shape \(2, 4, 6, 7\) and dtype float32, got shape \(2, 4, 6, 6\)"),
    (y_buffer(dtype=np.float64), ValueError, r"conv2d: out must have .* got .* dtype float64"),
    (np.empty((2, 4, 6, 14), np.float32)[..., ::2], ValueError,
     r"conv2d: out must be C-contiguous"),
    ([0.0], TypeError, r"conv2d: out must be a numpy.ndarray, got list"),
]


@pytest.mark.parametrize("out, error, message", OUT_CASES)
def test_conv2d_rejects_bad_out(out, error, message):
    with pytest.raises(error, match=message):
        F.conv2d(X, W, B, out=out)


def test_conv2d_rejects_read_only_and_overlapping_out():
    frozen = y_buffer()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"conv2d: out is read-only"):
        F.conv2d(X, W, B, out=frozen)
    x = np.zeros((2, 4, 6, 7), np.float32)
    with pytest.raises(ValueError, match=r"conv2d: out overlaps an input array"):
        F.conv2d(x, np.zeros((4, 4, 1, 1), np.float32), out=x)


BACKWARD_CASES = [
    ({"gy": GY[0]}, ValueError,
     r"conv2d_backward: gy must be 4-D \(N, K, Ho, Wo\), got shape \(4, 6, 7\)"),
    ({"gy": GY[:, :, :5]}, ValueError,
     r"conv2d_backward: gy must have the shape of conv2d's output \(2, 4, 6, 7\) .* "
     r"got shape \(2, 4, 5, 7\)"),
    ({"gy": GY[:1]}, ValueError, r"conv2d_backward: gy must have the shape .* \(1, 4, 6, 7\)"),
    ({"gy": GY.astype(np.float64)}, TypeError,
     r"conv2d_backward: gy has dtype float64 but x has float32"),
    ({"gy": GY.astype(np.int16)}, TypeError, r"conv2d_backward: gy must have dtype .* int16"),
    ({"x": X.astype(np.float64)}, TypeError, r"conv2d_backward: w has dtype float32 but x"),
    ({"x": X[:, :1]}, ValueError, r"conv2d_backward: w has 3 input channels .* but x has 1"),
    ({"w": W[:, :, :, :1]}, ValueError,
     r"conv2d_backward: gy must have the shape of conv2d's output \(2, 4, 6, 9\)"),
    ({"stride": 0}, ValueError, r"conv2d_backward: stride must be >= 1"),
    ({"padding": (-1, 0)}, ValueError, r"conv2d_backward: padding must be >= 0"),
    ({"dilation": 1.0}, TypeError, r"conv2d_backward: dilation must be an int, got float"),
    ({"need_input_grad": 1}, TypeError,
     r"conv2d_backward: need_input_grad must be True or False, got 1"),
    ({"need_input_grad": None}, TypeError,
     r"conv2d_backward: need_input_grad must be True or False, got None"),
    ({"out": [None, None, None]}, TypeError, r"conv2d_backward: out must be a tuple of 3 arrays"),
    ({"out": (None, None)}, TypeError, r"conv2d_backward: out must be a tuple of 3 arrays"),
    ({"out": (None, np.empty((4, 3, 3, 2), np.float32), None)}, ValueError,
     r"conv2d_backward: out\[1\] \(gw\) must have shape \(4, 3, 3, 3\)"),
    ({"out": (np.empty((2, 3, 8, 9), np.float64), None, None)}, ValueError,
     r"conv2d_backward: out\[0\] \(gx\) must have shape \(2, 3, 8, 9\) and dtype float32"),
    ({"out": (None, None, np.empty(5, np.float32))}, ValueError,
     r"conv2d_backward: out\[2\] \(gb\) must have shape \(4,\)"),
    ({"out": (np.empty((2, 3, 8, 9), np.float32), None, None), "need_input_grad": False},
     ValueError, r"conv2d_backward: out\[0\] \(gx\) must be None when need_input_grad is False"),
]


@pytest.mark.parametrize("changes, error, message", BACKWARD_CASES)
def test_conv2d_backward_rejects(changes, error, message):
    with pytest.raises(error, match=message):
        F.conv2d_backward(**backward_kwargs(**changes))


def test_conv2d_backward_rejects_overlapping_out():
    gw = np.empty((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"out\[2\] \(gb\) overlaps an input array"):
        F.conv2d_backward(GY, X, W, out=(None, gw, gw.reshape(-1)[:4]))
    x = X.copy()
    with pytest.raises(ValueError, match=r"out\[0\] \(gx\) overlaps an input array"):
        F.conv2d_backward(GY, x, W, out=(x, None, None))


def test_rejected_calls_leave_buffers_untouched():
    out = np.full((2, 4, 6, 7), 7.0, np.float32)
    with pytest.raises(TypeError):
        F.conv2d(X, W, B.astype(np.float64), out=out)
    assert (out == 7.0).all()

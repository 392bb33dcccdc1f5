"""Repeat-call fast paths (cnnext/_kernels/_calls.pyx): a functional or layer call that
repeats the shapes, dtypes and arguments of a validated call runs its kernel directly.

* Repeated calls give exactly the first call's results (and the fast path was
  taken: the call was remembered).
* Arguments the validated path refuses are still refused after a valid call of
  the same shapes: bools or floats for ints, out= buffers of the wrong dtype,
  read-only or overlapping ones, labels and indices out of range.
* Non-contiguous inputs and out= buffers take the validated path and still
  compute the right thing.
"""

import numpy as np
import pytest

from cnnext import functional as F
from cnnext._functional import activation, conv, dense, loss, pooling
from cnnext.layers import AvgPool2D, Conv2D, Dense, MaxPool2D, ReLU

rng = np.random.default_rng(12)


def arrays(dtype):
    f = {name: rng.standard_normal(shape).astype(dtype) for name, shape in {
        "x": (2, 3, 10, 9), "w": (4, 3, 3, 3), "b": (4,), "gy": (2, 4, 8, 7),
        "p": (2, 3, 10, 8), "pgy": (2, 3, 5, 4), "d": (3, 20), "dw": (5, 20), "db": (5,),
        "dgy": (3, 5), "logits": (3, 5)}.items()}
    _, f["idx"] = F.max_pool2d(f["p"], 2, return_indices=True)
    f["labels"] = np.array([0, 4, 2], np.int64)
    return f


CALLS = {
    "conv2d": ((conv, "_CONV2D"), lambda a: F.conv2d(a["x"], a["w"], a["b"], 1, (1, 0))),
    "conv2d_backward": ((conv, "_CONV2D_BACKWARD"),
                        lambda a: F.conv2d_backward(a["gy"], a["x"], a["w"], 1, (0, 0))),
    "linear": ((dense, "_LINEAR"), lambda a: F.linear(a["d"], a["dw"], a["db"])),
    "linear_backward": ((dense, "_LINEAR_BACKWARD"),
                        lambda a: F.linear_backward(a["dgy"], a["d"], a["dw"])),
    "max_pool2d": ((pooling, "_MAX_CALLS"), lambda a: F.max_pool2d(a["p"], 2, return_indices=True)),
    "max_pool2d_backward": ((pooling, "_MAX_BACKWARD_CALLS"),
                            lambda a: F.max_pool2d_backward(a["pgy"], a["idx"], a["p"].shape)),
    "avg_pool2d": ((pooling, "_AVG_CALLS"), lambda a: F.avg_pool2d(a["p"], 2, 1)),
    "avg_pool2d_backward": ((pooling, "_AVG_BACKWARD_CALLS"),
                            lambda a: F.avg_pool2d_backward(a["pgy"], a["p"].shape, 2)),
    "relu": ((activation, "_RELU_CALLS"), lambda a: F.relu(a["x"])),
    "relu_backward": ((activation, "_RELU_BACKWARD_CALLS"),
                      lambda a: F.relu_backward(a["x"], a["x"])),
    "softmax": ((loss, "_SOFTMAX_CALLS"), lambda a: F.softmax(a["logits"])),
    "softmax_cross_entropy": ((loss, "_CROSS_ENTROPY_CALLS"),
                              lambda a: F.softmax_cross_entropy(a["logits"], a["labels"])),
}


def flat(result):
    if isinstance(result, tuple):
        return [r for item in result for r in flat(item)]
    return [np.asarray(result)] if result is not None else []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_repeated_calls_are_remembered_and_equal_the_first(name, dtype):
    (module, attribute), call = CALLS[name]
    calls = getattr(module, attribute)  # (conv.forget_plans replaces conv's)
    a = arrays(dtype)
    calls.clear()
    first = flat(call(a))
    assert len(calls) == 1  # the validated call was remembered
    for _ in range(3):
        again = flat(call(a))
        assert [g.tobytes() for g in again] == [f.tobytes() for f in first]
        # Fresh outputs every call, never the previous call's arrays.
        assert not any(np.shares_memory(g, f) for g, f in zip(again, first, strict=True)
                       if g.ndim)
    # Other values of the same shapes: computed, not replayed.
    b = {k: (v * 2 if v.dtype.kind == "f" else v) for k, v in a.items()}
    _, b["idx"] = F.max_pool2d(b["p"], 2, return_indices=True)
    fresh = flat(call(b))
    calls = getattr(module, attribute)
    calls.clear()
    assert [g.tobytes() for g in fresh] == [r.tobytes() for r in flat(call(b))]


def test_arguments_the_validated_path_refuses_are_refused_after_a_valid_call():
    a = arrays(np.float32)
    F.conv2d(a["x"], a["w"], stride=1)
    with pytest.raises(TypeError, match="stride must be an int, got bool"):
        F.conv2d(a["x"], a["w"], stride=True)
    with pytest.raises(TypeError, match="stride must be an int"):
        F.conv2d(a["x"], a["w"], stride=1.0)
    F.max_pool2d(a["p"], 2)
    with pytest.raises(TypeError, match="kernel_size must be an int, got bool"):
        F.max_pool2d(a["p"], True)
    F.linear_backward(a["dgy"], a["d"], a["dw"], True)
    with pytest.raises(TypeError, match="need_input_grad must be True or False"):
        F.linear_backward(a["dgy"], a["d"], a["dw"], 1)
    F.softmax_cross_entropy(a["logits"], a["labels"])
    with pytest.raises(ValueError, match=r"labels\[1\] = 5 is outside \[0, 5\)"):
        F.softmax_cross_entropy(a["logits"], np.array([0, 5, 1]))
    F.max_pool2d_backward(a["pgy"], a["idx"], a["p"].shape)
    bad = a["idx"].copy()
    bad[1, 2, 3, 1] = 80
    with pytest.raises(ValueError, match=r"idx\(1, 2, 3, 1\) = 80 lies outside its plane"):
        F.max_pool2d_backward(a["pgy"], bad, a["p"].shape)


def test_out_buffers_are_checked_after_a_valid_call():
    a = arrays(np.float64)
    y = F.conv2d(a["x"], a["w"])
    out = np.empty_like(y)
    assert F.conv2d(a["x"], a["w"], out=out) is out
    np.testing.assert_array_equal(out, y)
    with pytest.raises(ValueError, match="out must have shape"):
        F.conv2d(a["x"], a["w"], out=np.empty(y.shape, np.float32))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        F.conv2d(a["x"], a["w"], out=out)
    x = np.zeros(a["x"].size * 4)
    inside = x[:a["x"].size].reshape(a["x"].shape)
    F.relu(inside)
    with pytest.raises(ValueError, match="overlaps an input"):
        F.relu(inside, out=inside)
    gx, gw, gb = F.linear_backward(a["dgy"], a["d"], a["dw"])
    buffers = (np.empty_like(gx), np.empty_like(gw), np.empty_like(gb))
    assert all(r is b for r, b in zip(F.linear_backward(a["dgy"], a["d"], a["dw"],
                                                        out=buffers), buffers, strict=True))
    with pytest.raises(ValueError, match=r"out\[1\] \(gw\) overlaps an input"):
        F.linear_backward(a["dgy"], a["d"], a["dw"], out=(None, a["dw"], None))


def test_non_contiguous_inputs_take_the_validated_path():
    a = arrays(np.float32)
    y = F.conv2d(a["x"], a["w"])
    strided = np.repeat(a["x"], 2, axis=3)[..., ::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(F.conv2d(strided, a["w"]), y)
    np.testing.assert_array_equal(F.conv2d(strided, a["w"]), y)


LAYERS = [
    (lambda dtype: Conv2D(3, 4, 3, padding=1, dtype=dtype, seed=1), (2, 3, 10, 9)),
    (lambda dtype: Dense(20, 5, dtype=dtype, seed=2), (3, 20)),
    (lambda dtype: MaxPool2D(2), (2, 3, 10, 8)),
    (lambda dtype: AvgPool2D(3, stride=2, padding=1), (2, 3, 10, 8)),
    (lambda dtype: ReLU(), (2, 3, 10, 8)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("build, shape", LAYERS)
def test_repeated_layer_calls_equal_the_first(build, shape, dtype):
    layer = build(np.dtype(dtype).name)
    x = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(gy)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    for _ in range(3):
        assert layer.forward(x).tobytes() == y.tobytes()
        assert layer.backward(gy).tobytes() == gx.tobytes()
        for k, v in layer.grads.items():
            assert v.tobytes() == grads[k].tobytes()
    # A replaced parameter is used by the next call.
    if "weight" in layer.params:
        layer.params["weight"] = layer.params["weight"] * 0
        assert not layer.forward(x).any() or "bias" in layer.params


def test_layer_fast_paths_keep_the_layer_checks():
    """A layer call matching a remembered functional call of other arrays still
    gets the layer's own errors: a dtype the layer does not compute in, a
    gradient before any forward, a gradient of the wrong shape."""
    conv = Conv2D(3, 4, 3, seed=1)                      # float32
    x64 = rng.standard_normal((2, 3, 10, 9))
    w64 = conv.params["weight"].astype(np.float64)
    for _ in range(2):                                  # remembered: float64, these shapes
        F.conv2d(x64, w64, np.zeros(4), 1, 0, 1)
    with pytest.raises(TypeError, match=r"Conv2D\.forward: x has dtype float64"):
        conv.forward(x64)
    dense = Dense(20, 5, seed=2)
    for _ in range(2):
        F.linear(rng.standard_normal((3, 20)), dense.params["weight"].astype(np.float64),
                 np.zeros(5))
    with pytest.raises(TypeError, match=r"Dense\.forward: x has dtype float64"):
        dense.forward(rng.standard_normal((3, 20)))
    for layer, shape in ((Conv2D(3, 4, 3), (2, 4, 8, 7)), (Dense(20, 5), (3, 5))):
        with pytest.raises(RuntimeError, match="backward called before forward"):
            layer.backward(np.zeros(shape, np.float32))
    x = rng.standard_normal((2, 3, 10, 9)).astype(np.float32)
    for _ in range(2):
        y = conv.forward(x)
        conv.backward(np.ones_like(y))
    with pytest.raises(ValueError, match=r"gy must have shape \(2, 4, 8, 7\)"):
        conv.backward(np.ones((2, 4, 8, 6), np.float32))


@pytest.mark.parametrize("build, shape", [LAYERS[i] for i in (0, 1, 2, 4)])
def test_subclasses_changing_forward_are_not_bypassed(build, shape):
    """The exact classes' repeat paths skip ``_forward``: a subclass overriding it
    still has it called on every call."""
    base = type(build("float32"))

    class Doubled(base):
        def _forward(self, x, reuse):
            return 2 * super()._forward(x, reuse)

    layer, plain = Doubled.__new__(Doubled), build("float32")
    layer.__dict__.update(plain.__dict__)
    x = rng.standard_normal(shape).astype(np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(layer.forward(x), 2 * plain.forward(x))

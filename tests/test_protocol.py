"""The layer protocol: training and evaluation modes, buffers, calling layers and models,
state dicts in PyTorch's keys and layouts, Residual, checkpoints with buffers and nesting."""

import io

import numpy as np
import pytest

import cnnext
from cnnext import CheckpointError, Sequential, load_model
from cnnext import _reference as reference
from cnnext.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Sigmoid,
    Tanh,
)


def small_resnet(dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return Sequential([
        Conv2D(1, 4, 3, padding=1, bias=False, dtype=dtype, seed=rng),
        BatchNorm2D(4, dtype=dtype),
        ReLU(),
        Residual([Conv2D(4, 4, 3, padding=1, bias=False, dtype=dtype, seed=rng),
                  BatchNorm2D(4, dtype=dtype), LeakyReLU(0.1),
                  Conv2D(4, 4, 3, padding=1, dtype=dtype, seed=rng)]),
        Residual([Conv2D(4, 6, 3, stride=2, padding=1, dtype=dtype, seed=rng), Tanh()],
                 shortcut=[Conv2D(4, 6, 1, stride=2, bias=False, dtype=dtype, seed=rng),
                           BatchNorm2D(6, dtype=dtype)]),
        Dropout(0.25, seed=1),
        GlobalAvgPool2D(),
        Dense(6, 3, dtype=dtype, seed=rng),
        Sigmoid(),
    ])


def data(n=8, seed=3, size=8):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 1, size, size)).astype(np.float32),
            rng.integers(0, 3, n))


# ---------------------------------------------------------------- modes
def test_train_and_eval_set_every_layer_including_nested_ones():
    model = small_resnet()
    assert model.training
    assert model.eval() is model
    leaves = [leaf for layer in model.layers for leaf in layer._leaves()]
    assert len(leaves) == 15 and not any(leaf.training for leaf in leaves)
    assert not model.layers[3].training
    assert not model.training
    model.train()
    assert all(leaf.training for leaf in leaves) and model.training
    with pytest.raises(TypeError, match="mode"):
        model.train(1)
    with pytest.raises(TypeError, match="mode"):
        model.layers[0].train("yes")


def test_models_and_layers_are_callable():
    model = small_resnet()
    x, _ = data()
    model.eval()
    np.testing.assert_array_equal(model(x), model.forward(x))
    layer = ReLU()
    np.testing.assert_array_equal(layer(x), layer.forward(x))


def test_evaluation_mode_is_deterministic_and_training_mode_is_not():
    model = small_resnet()
    x, _ = data()
    model.eval()
    first = model(x)
    np.testing.assert_array_equal(model(x), first)
    model.train()
    assert not np.array_equal(model(x), model(x))  # dropout draws new masks


def test_dropout_compiles_as_the_identity_in_evaluation_mode_and_masks_in_training():
    def lenet_with_dropout():
        return Sequential([Conv2D(1, 3, 3, seed=1), ReLU(), MaxPool2D(2), Flatten(),
                           Dropout(0.5, seed=2), Dense(27, 4, seed=3)], input_shape=(1, 8, 8))

    model, reference_model = lenet_with_dropout().eval(), lenet_with_dropout().eval()
    reference_model._force_layers = True
    x, _ = data()
    assert model._compiled()
    np.testing.assert_array_equal(model(x), reference_model(x))
    np.testing.assert_array_equal(model.predict(x[:1]), reference_model.predict(x[:1]))
    model.train()  # the evaluation plan no longer holds: masks, from the same keys
    reference_model.train()
    np.testing.assert_array_equal(model(x), reference_model(x))
    plan = model._acquire("backward", len(x), x.shape[1:])
    assert "4:dropout" in plan.forward_program.names
    model._release(plan)
    assert not np.array_equal(model(x), reference_model.eval()(x))


def test_fit_trains_in_training_mode_and_evaluate_predict_in_evaluation_mode():
    model = small_resnet()
    x, y = data(16)
    model.eval()
    before = model.layers[1].buffers["running_mean"].copy()
    probs = model.predict(x)
    model.train()
    np.testing.assert_array_equal(model.predict(x), probs)  # predict: evaluation mode
    assert model.training  # and the mode is left as it was
    np.testing.assert_array_equal(model.layers[1].buffers["running_mean"], before)
    model.eval()
    model.fit(x, y, epochs=1, batch_size=4, progress=False, seed=0)
    assert not model.training  # restored after fit
    assert int(model.layers[1].buffers["num_batches_tracked"]) == 4
    assert not np.array_equal(model.layers[1].buffers["running_mean"], before)
    loss, accuracy = model.evaluate(x, y)
    assert np.isfinite(loss) and 0 <= accuracy <= 1


def test_predict_and_evaluate_show_a_custom_layer_the_evaluation_mode():
    """Built-in layers that compute alike in both modes are not switched by
    predict; a user's layer may read ``self.training``, so it is."""
    seen = []

    class Watch(ReLU):
        _depends_on_mode = cnnext.layers.Layer._depends_on_mode

        def _forward(self, x, reuse):
            seen.append(self.training)
            return super()._forward(x, reuse)

    model = Sequential([Flatten(), Dense(16, 3, seed=0), Watch()], input_shape=(1, 4, 4))
    assert not model._in_mode(False)
    x = np.zeros((2, 1, 4, 4), np.float32)
    model.predict(x)
    model.evaluate(x, np.zeros(2, np.int64))
    assert seen and not any(seen) and model.training
    plain = Sequential([Flatten(), Dense(16, 3, seed=0), ReLU()], input_shape=(1, 4, 4))
    assert plain.training and plain._in_mode(False)
    # A repeated predict skips the mode checks only while the layers are the
    # ones it found computing alike in both modes.
    for _ in range(2):
        plain.predict(x)
    seen.clear()
    plain.layers.append(Watch())
    plain.predict(x)
    assert seen == [False] and plain.training


def test_fit_restores_the_mode_after_an_error():
    model = small_resnet()
    x, y = data(8)
    model.eval()
    with pytest.raises(ZeroDivisionError):
        model.fit(x, y, epochs=2, batch_size=4, progress=False,
                  callbacks=[lambda m, e, logs: 1 / 0])
    assert not model.training


# --------------------------------------------------------------- buffers
def test_buffers_are_named_like_parameters():
    model = small_resnet()
    buffers = model.buffers()
    assert "1.running_mean" in buffers and "3.block.1.num_batches_tracked" in buffers
    assert "4.shortcut.1.running_var" in buffers
    assert buffers["1.running_mean"] is model.layers[1].buffers["running_mean"]
    params = model.parameters()
    assert "3.block.0.weight" in params and "3.block.3.bias" in params
    assert "4.shortcut.0.weight" in params and "4.shortcut.0.bias" not in params
    assert set(model.gradients()) == set(params)
    assert model.num_parameters() == sum(p.size for p in params.values())


# ------------------------------------------------------------ state dicts
def torch_twin(torch, model):
    """The torch.nn.Sequential matching ``model`` (Residual: a module with nn.Sequential
    block and shortcut), built from the layer configs."""
    nn = torch.nn

    class TorchResidual(nn.Module):
        def __init__(self, block, shortcut):
            super().__init__()
            self.block = nn.Sequential(*block)
            self.shortcut = None if shortcut is None else nn.Sequential(*shortcut)

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    def convert(layer):
        name = type(layer).__name__
        if name == "Conv2D":
            return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                             layer.stride, layer.padding, layer.dilation, layer.groups,
                             layer.bias)
        if name == "BatchNorm2D":
            return nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, layer.affine)
        if name == "Residual":
            return TorchResidual([convert(sub) for sub in layer.block],
                                 None if layer.shortcut is None else
                                 [convert(sub) for sub in layer.shortcut])
        if name == "Dense":
            return nn.Linear(layer.in_features, layer.out_features, layer.bias)
        if name == "GlobalAvgPool2D":
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        simple = {"ReLU": nn.ReLU(), "Tanh": nn.Tanh(), "Sigmoid": nn.Sigmoid(),
                  "Flatten": nn.Flatten(), "MaxPool2D": nn.MaxPool2d(2)}
        if name == "LeakyReLU":
            return nn.LeakyReLU(layer.negative_slope)
        if name == "Dropout":
            return nn.Dropout(layer.p)
        return simple[name]

    return nn.Sequential(*[convert(layer) for layer in model.layers]).double()


def test_state_dict_round_trips_through_torch(torch):
    model = small_resnet("float64")
    x, y = data(8)
    model.fit(x.astype(np.float64), y, epochs=1, batch_size=4, progress=False, seed=0)
    state = model.state_dict()
    peer = torch_twin(torch, model)
    assert list(state) == list(peer.state_dict())  # same keys, same order
    peer.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.eval()
    peer.eval()
    with torch.no_grad():
        want = peer(torch.from_numpy(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(model(x.astype(np.float64)), want, rtol=1e-10, atol=1e-12)
    # And back: the torch state loads into a fresh model, which then computes the same.
    fresh = small_resnet("float64", seed=9)
    fresh.load_state_dict(peer.state_dict())
    fresh.eval()
    np.testing.assert_array_equal(fresh(x.astype(np.float64)), model(x.astype(np.float64)))


def test_state_dict_holds_copies_and_load_checks_everything_first():
    model = small_resnet()
    state = model.state_dict()
    state["0.weight"][...] = 0
    assert not np.array_equal(model.parameters()["0.weight"], state["0.weight"])
    fresh = small_resnet(seed=5)
    original = fresh.state_dict()
    bad = dict(model.state_dict())
    bad["7.weight"] = bad["7.weight"][:, :2]  # the last key: the others would be copied first
    with pytest.raises(ValueError, match=r"7\.weight.*shape"):
        fresh.load_state_dict(bad)
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value, original[key])
    for change, match in [({"9.weight": np.ones(2)}, "unexpected"),
                          ({"1.running_var": -np.ones(4, np.float32)}, "variance"),
                          ({"1.running_mean": np.full(4, np.nan, np.float32)}, "NaN"),
                          ({"1.num_batches_tracked": np.array(1.5)}, "integers"),
                          ({"1.weight": np.array(["a"] * 4)}, "real numbers")]:
        with pytest.raises((ValueError, TypeError), match=match):
            fresh.load_state_dict({**model.state_dict(), **change})
    missing = model.state_dict()
    del missing["1.running_mean"]
    with pytest.raises(ValueError, match="missing"):
        fresh.load_state_dict(missing)
    with pytest.raises(TypeError, match="mapping"):
        fresh.load_state_dict([1, 2])


# --------------------------------------------------------------- Residual
def test_residual_forward_and_backward_against_the_reference():
    rng = np.random.default_rng(4)
    conv = Conv2D(3, 3, 3, padding=1, dtype="float64", seed=rng)
    short = Conv2D(3, 3, 1, dtype="float64", seed=rng)
    layer = Residual([conv, ReLU()], shortcut=short)
    x = rng.standard_normal((2, 3, 5, 5))
    inner = reference.conv2d(x, conv.params["weight"], conv.params["bias"], 1, 1)
    side = reference.conv2d(x, short.params["weight"], short.params["bias"])
    np.testing.assert_allclose(layer(x), reference.relu(inner) + side, rtol=1e-12)
    gy = rng.standard_normal((2, 3, 5, 5))
    gx = layer.backward(gy)
    g_inner = reference.relu_backward(gy, inner)
    want = reference.conv2d_backward(g_inner, x, conv.params["weight"], 1, 1)[0] + \
        reference.conv2d_backward(gy, x, short.params["weight"])[0]
    np.testing.assert_allclose(gx, want, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(layer.grads["shortcut.0.weight"],
                               reference.conv2d_backward(gy, x, short.params["weight"])[1],
                               rtol=1e-11)


def test_residual_identity_shortcut_and_refusals():
    layer = Residual(ReLU())
    x = np.array([[-1.0, 2.0]])
    np.testing.assert_array_equal(layer(x), [[-1.0, 4.0]])
    np.testing.assert_array_equal(layer.backward(np.ones((1, 2))), [[1.0, 2.0]])
    with pytest.raises(ValueError, match="must match"):
        Residual(Conv2D(1, 2, 3)).forward(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(TypeError, match="block"):
        Residual(3)
    with pytest.raises(ValueError, match="shortcut"):
        Residual(ReLU(), shortcut=[])
    relu = ReLU()
    with pytest.raises(ValueError, match="twice"):
        Residual([relu, relu])
    with pytest.raises(ValueError, match="twice"):
        Sequential([relu, Residual(relu)])
    with pytest.raises(TypeError, match="dtypes"):
        Residual([Dense(2, 2)], shortcut=Dense(2, 2, dtype="float64"))
    with pytest.raises(AttributeError, match="layers it holds"):
        layer.params = {"weight": np.ones(1)}


def test_summary_lists_the_layers_inside_residuals():
    model = small_resnet()
    out = io.StringIO()
    model.summary(input_shape=(1, 8, 8), file=out)
    text = out.getvalue()
    assert "3.block.0" in text and "4.shortcut.1" in text and "(6, 4, 4)" in text
    assert f"total parameters: {model.num_parameters():,}" in text


# ------------------------------------------------------------- checkpoints
def test_checkpoints_keep_buffers_nesting_and_every_new_layer(tmp_path):
    model = small_resnet()
    x, y = data(8)
    model.fit(x, y, epochs=1, batch_size=4, progress=False, seed=0,
              optimizer=cnnext.optim.AdamW(lr=0.01))
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert repr(loaded) == repr(model)
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype
        np.testing.assert_array_equal(got, value, err_msg=key)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert type(loaded.optimizer) is cnnext.optim.AdamW
    assert set(loaded.optimizer.state) == set(model.optimizer.state)


def test_checkpoints_refuse_tampered_buffers(tmp_path):
    import json
    import zipfile

    model = Sequential([Conv2D(1, 2, 3), BatchNorm2D(2), Flatten(), Dense(8, 2)])
    path = tmp_path / "m.npz"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}

    def write(name, members):
        target = tmp_path / name
        with zipfile.ZipFile(target, "w") as archive:
            for member, data in members.items():
                archive.writestr(member, data)
        return target

    def npy(array):
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    meta_raw = contents["cnnext_checkpoint.npy"]
    meta = json.loads(np.load(io.BytesIO(meta_raw)).tobytes())

    def with_meta(change):
        edited = json.loads(json.dumps(meta))
        change(edited)
        text = json.dumps(edited).encode()
        return {**contents, "cnnext_checkpoint.npy": npy(np.frombuffer(text, np.uint8))}

    cases = {
        "negative variance": ({**contents, "buffers/1.running_var.npy":
                               npy(-np.ones(2, np.float32))}, "variance"),
        "NaN mean": ({**contents, "buffers/1.running_mean.npy":
                      npy(np.full(2, np.nan, np.float32))}, "NaN"),
        "missing buffer": ({k: v for k, v in contents.items()
                            if k != "buffers/1.running_var.npy"}, "missing"),
        "no buffers declared": (with_meta(lambda m: m.pop("buffers")), "buffer"),
        "buffer dtype": (with_meta(lambda m: m["buffers"]["1.num_batches_tracked"].update(
            dtype="float64")), "num_batches_tracked"),
        "negative count": ({**contents, "buffers/1.num_batches_tracked.npy":
                            npy(np.array(-3, np.int64))}, "negative"),
    }
    for name, (members, match) in cases.items():
        with pytest.raises(CheckpointError, match=match):
            load_model(write(f"{name}.npz", members))


def test_old_checkpoints_without_buffers_still_load(tmp_path):
    model = Sequential([Conv2D(1, 2, 3), MaxPool2D(2), Flatten(), Dense(2, 2)])
    model.save(tmp_path / "m.npz")
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.npz") as archive:
        assert not any(n.startswith("buffers/") for n in archive.namelist())
    assert repr(load_model(tmp_path / "m.npz")) == repr(model)

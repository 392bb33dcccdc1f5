"""Sequential fuses Conv2D [-> ReLU] -> MaxPool2D (cnnext/_plans/fusion.py).

* Both paths fuse alike: fit / predict / forward / backward on plans equal
  the layer-by-layer path bitwise (tests/test_plans.py checks the same on
  its networks, which hold fused runs), and the plans run the fused steps.
* Fused training equals the unfused layers (each layer through
  cnnext.functional) to rounding, on the seed network and LeNet-5.
* Runs that are not fused: a pooling with padding, layer subclasses, a
  ReLU that is not between the two.
* Layers, parameters and checkpoints are unchanged by the fusion.
* The forward is fused only where it is measured faster (cnnext._tuning):
  forced on or off, both paths still agree bitwise and equal each other
  (the shapes here sum directly, so the fused and the unfused forward agree
  to the bit); a timed choice is kept, found again, and not timed in the
  deterministic mode.
"""

import json

import numpy as np
import pytest
from model_testing import bars

from cnnext import Sequential, _tuning, load_model, models, optim
from cnnext._functional import conv as conv_module
from cnnext._functional import fused as fused_module
from cnnext._plans import fusion
from cnnext.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

DTYPES = ("float32", "float64")


def seed_network(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return Sequential([Conv2D(1, 8, 3, bias=False, dtype=dtype, seed=rng), MaxPool2D(2),
                       Flatten(), Dense(8 * 5 * 5, 4, dtype=dtype, seed=rng)])


def lenet(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return Sequential([Conv2D(1, 6, 3, padding=1, dtype=dtype, seed=rng), ReLU(), MaxPool2D(2),
                       Conv2D(6, 16, 3, dtype=dtype, seed=rng), ReLU(), MaxPool2D(2),
                       Flatten(), Dense(16 * 2 * 2, 8, dtype=dtype, seed=rng), ReLU(),
                       Dense(8, 4, dtype=dtype, seed=rng)])


NETWORKS = {"seed": seed_network, "lenet": lenet}


def train(model, X, y, **fit):
    history = model.fit(X, y, epochs=2, batch_size=5, optimizer=optim.SGD(lr=0.05),
                        progress=False, seed=3, **fit)
    return (history["loss"], {k: v.copy() for k, v in model.parameters().items()},
            model.predict(X))


def unfused_copy(model):
    """The same network whose runs are not fused: each layer is wrapped so that
    fusible() no longer sees a Conv2D (it runs layer by layer, unfused)."""
    class Unfused(Conv2D):
        pass

    layers = []
    for layer in model.layers:
        if type(layer) is Conv2D:
            copy = Unfused.__new__(Unfused)
            copy.__dict__.update(layer.__dict__)
            copy.params = {k: v.copy() for k, v in layer.params.items()}
            copy.grads = {k: v.copy() for k, v in layer.grads.items()}
            copy._workspaces = {}
            layer = copy
        layers.append(layer)
    return Sequential(layers)


def fused_step_names(model, batch, shape, mode="fit"):
    plan = model._acquire(mode, batch, shape)
    try:
        return list(plan.forward_program.names), list(plan.backward_program.names)
    finally:
        model._release(plan)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_plans_and_the_layer_path_fuse_alike_bitwise(network, dtype):
    X, y = bars(23, size=12)
    results = []
    for force in (False, True):
        model = NETWORKS[network](dtype)
        model._force_layers = force
        results.append(train(model, X, y))
        x = (X[:4, None] / 255 - 0.5).astype(dtype)
        out = model.forward(x)
        gx = model.backward(np.ones_like(out))
        results.append((out, gx, {k: v.copy() for k, v in model.gradients().items()}))
    for a, b in zip(results[:2], results[2:], strict=True):
        for got, want in zip(a, b, strict=True):
            if isinstance(got, dict):
                for key in got:
                    assert got[key].tobytes() == want[key].tobytes(), key
            else:
                assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
    forward, backward = fused_step_names(NETWORKS[network](dtype), 5, (1, 12, 12))
    runs = 1 if network == "seed" else 2
    assert sum("conv2d_max_pool2d" in name for name in forward) == runs, forward
    assert sum("conv2d_max_pool2d_backward" in name for name in backward) == runs, backward
    kernels = [name.split(":")[1] for name in forward]
    assert "conv2d" not in kernels and "max_pool2d" not in kernels, forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_fused_training_equals_the_unfused_layers_to_rounding(network, dtype):
    X, y = bars(23, size=12)
    fused = NETWORKS[network](dtype)
    unfused = unfused_copy(NETWORKS[network](dtype))
    assert fusion.segments(unfused.layers) == unfused.layers
    got, want = train(fused, X, y), train(unfused, X, y)
    rtol = 2e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(got[0], want[0], rtol=rtol)
    for key in want[1]:
        np.testing.assert_allclose(got[1][key], want[1][key], rtol=rtol, atol=rtol, err_msg=key)
    np.testing.assert_allclose(got[2], want[2], rtol=rtol, atol=rtol)


def test_runs_that_are_not_fused():
    class MyReLU(ReLU):
        pass

    conv = Conv2D(1, 2, 3)
    assert [type(s) for s in fusion.segments([conv, MaxPool2D(2)])] == [fusion.FusedRun]
    assert [type(s) for s in fusion.segments([conv, ReLU(), MaxPool2D(2)])] == [fusion.FusedRun]
    for layers in ([conv, MaxPool2D(2, padding=1)], [conv, MyReLU(), MaxPool2D(2)],
                   [conv, Flatten()], [conv, ReLU(), ReLU(), MaxPool2D(2)],
                   [conv, MaxPool2D(2, dilation=2)], [conv, MaxPool2D(2, ceil_mode=True)],
                   [Conv2D(1, 2, 3, padding=((1, 0), (0, 1))), MaxPool2D(2)]):
        assert not any(isinstance(s, fusion.FusedRun) for s in fusion.segments(layers))
    # A ReLU after the pooling stays its own layer.
    layers = [conv, MaxPool2D(2), ReLU()]
    assert [type(s) for s in fusion.segments(layers)] == [fusion.FusedRun, ReLU]


def test_the_seed_model_trains_and_saves_as_before(tmp_path):
    X, y = bars(40, size=28)
    model = models.seed_cnn(seed=0)
    layers = list(model.layers)
    names = {k: (v.shape, v.dtype) for k, v in model.parameters().items()}
    model.fit(X, y, epochs=1, batch_size=8, progress=False)
    assert model.layers == layers
    assert {k: (v.shape, v.dtype) for k, v in model.parameters().items()} == names
    model.save(tmp_path / "m.npz")
    again = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    assert repr(again) == repr(model)


def forward_kernels(model, batch, shape, mode):
    forward, backward = fused_step_names(model, batch, shape, mode)
    return ([name.split(":")[1] for name in forward],
            [name.split(":")[1] for name in backward])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_fusion_forced_on_and_off(network, dtype):
    X, y = bars(23, size=12)
    runs = 1 if network == "seed" else 2
    results = {}
    for fused in (True, False):
        with _tuning.forced({"fusion": fused}):
            for force in (False, True):
                model = NETWORKS[network](dtype)
                model._force_layers = force
                trained = train(model, X, y)
                x = (X[:4, None] / 255 - 0.5).astype(dtype)
                out = model.forward(x)
                gx = model.backward(np.ones_like(out))
                results[fused, force] = (*trained, out, gx, model.gradients())
            for mode in ("fit", "predict"):
                forward, backward = forward_kernels(NETWORKS[network](dtype), 5, (1, 12, 12),
                                                    mode)
                assert forward.count("conv2d_max_pool2d") == (runs if fused else 0), forward
                assert forward.count("max_pool2d") == (0 if fused else runs), forward
                # (A first layer's may run in a narrower build: a name of its own.)
                assert sum(name.startswith("conv2d_max_pool2d_backward") for name in backward) == (
                    runs if mode == "fit" else 0), backward
    # Plans and layers alike under each choice, and the two choices alike:
    # conv2d sums these shapes directly, as the fused kernel does.
    want = results[True, True]
    for key, got in results.items():
        for a, b in zip(got, want, strict=True):
            if isinstance(a, dict):
                assert a.keys() == b.keys()
                for name in a:
                    assert a[name].tobytes() == b[name].tobytes(), (key, name)
            else:
                assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), key


def test_forced_fusion_must_be_a_bool():
    with pytest.raises(TypeError, match="fusion"), _tuning.forced({"fusion": 1}):
        pass


@pytest.fixture
def tuning_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(_tuning.ENV_DIR, str(tmp_path))
    monkeypatch.setenv(_tuning.ENV_MODE, "on")
    _tuning.forget()
    conv_module.forget_plans()
    yield tmp_path
    _tuning.forget()
    conv_module.forget_plans()


# The seed network's layer at 28x28 on 64 images: above MIN_FMAS, so timed.
BIG = (64, 1, 28, 28)


def big_entry(dtype=np.float32):
    x = np.zeros(BIG, dtype)
    w = np.zeros((8, 1, 3, 3), dtype)
    return fused_module._entry("test", x, w, (1, 1), (0, 0), (1, 1), 2, None)


def fake_timings(monkeypatch, seconds):
    """The fused and the unfused forward timed as ``seconds`` (seconds None: fail
    if they are timed); a convolution's candidates as if the first won.  Returns
    the list of the fusion timings done."""
    calls = []
    runs = (lambda: None, lambda: None)

    def timed(candidates):
        if tuple(candidates) != runs:
            return [float(i) for i in range(len(candidates))]
        if seconds is None:
            raise AssertionError("timed the fusion")
        calls.append(len(candidates))
        return list(seconds)

    monkeypatch.setattr(fused_module, "_forward_runs", lambda entry, relu: runs)
    monkeypatch.setattr(_tuning, "time_candidates", timed)
    return calls


@pytest.mark.parametrize("fused_wins", [True, False])
def test_the_fusion_is_the_measured_winner_and_is_kept(tuning_cache, monkeypatch, fused_wins):
    calls = fake_timings(monkeypatch, (1.0, 2.0) if fused_wins else (2.0, 1.0))
    entry = big_entry()
    assert fused_module.fuses(entry, False) is fused_wins
    assert calls == [2]
    files = [p for p in tuning_cache.rglob("*.json") if "max2x2s2x2" in p.name]
    assert len(files) == 1 and "relu" not in files[0].name
    # Sequential's plans take the winner.
    model = Sequential([Conv2D(1, 8, 3, seed=0), MaxPool2D(2), Flatten(), Dense(8 * 13 * 13, 4)])
    forward, _ = forward_kernels(model, BIG[0], BIG[1:], "predict")
    assert ("conv2d_max_pool2d" in forward) is fused_wins
    assert ("max_pool2d" in forward) is not fused_wins
    # Found again from the disk, not timed again; another ReLU setting is its own key.
    _tuning.forget()
    conv_module.forget_plans()
    fake_timings(monkeypatch, None)
    assert fused_module.fuses(big_entry(), False) is fused_wins
    calls = fake_timings(monkeypatch, (1.0, 2.0))
    assert fused_module.fuses(big_entry(), True) is True and calls == [2]


def test_no_timing_in_the_deterministic_mode_or_for_small_shapes(tuning_cache, monkeypatch):
    fake_timings(monkeypatch, None)
    monkeypatch.setenv(_tuning.ENV_MODE, "off")
    assert fused_module.fuses(big_entry(), False) is True
    monkeypatch.setenv(_tuning.ENV_MODE, "on")
    x, w = np.zeros((2, 1, 12, 12), np.float32), np.zeros((2, 1, 3, 3), np.float32)
    small = fused_module._entry("test", x, w, (1, 1), (0, 0), (1, 1), 2, None)
    assert fused_module.fuses(small, False) is True
    assert not list(tuning_cache.rglob("*.json"))
    # A cache entry that names no bool is ignored (and replaced when tuning).
    path = _tuning.entry_path(fused_module._kernels, big_entry().args, tuning_cache,
                              "max2x2s2x2")
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 1, "choices": {"fused": "yes"}}')
    monkeypatch.setenv(_tuning.ENV_MODE, "cached")
    conv_module.forget_plans()
    assert fused_module.fuses(big_entry(), False) is True
    calls = fake_timings(monkeypatch, (2.0, 1.0))
    monkeypatch.setenv(_tuning.ENV_MODE, "on")
    conv_module.forget_plans()
    assert fused_module.fuses(big_entry(), False) is False and calls == [2]


@pytest.mark.parametrize("relu", [False, True])
def test_timing_the_fusion_runs_both_forwards(tuning_cache, monkeypatch, relu):
    monkeypatch.setattr(_tuning, "SAMPLE_SECONDS", 2e-4)
    monkeypatch.setattr(_tuning, "ROUNDS", 1)
    entry = big_entry(np.float64)
    fused, unfused = fused_module._forward_runs(entry, relu)
    # Both forwards compute the same pooled outputs and indices, in buffers of their own.
    outputs = []
    for run in (fused, unfused):
        run()
        outputs.append([cell.cell_contents.copy() for cell in run.__closure__
                        if isinstance(cell.cell_contents, np.ndarray)
                        and cell.cell_contents.shape == entry.output_shape])
    assert outputs[0] and len(outputs[0]) == len(outputs[1])
    for got, want in zip(*outputs, strict=True):
        np.testing.assert_array_equal(got, want)
    chosen = _tuning.tune_fusion(fused_module._kernels, entry.args, "key",
                                 lambda: (fused, unfused), tuning_cache)
    files = list(tuning_cache.rglob("*-key.json"))
    assert len(files) == 1 and isinstance(chosen, bool)
    entry_json = json.loads(files[0].read_text())
    assert entry_json["choices"] == {"fused": chosen}
    assert set(entry_json["timings"]) == {"fused", "unfused"}
    assert all(t > 0 for t in entry_json["timings"].values())

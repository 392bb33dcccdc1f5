"""Sequential fuses Conv2D [-> ReLU] -> MaxPool2D (cnnext/_plans/fusion.py).

* Both paths fuse alike: fit / predict / forward / backward on plans equal
  the layer-by-layer path bitwise (tests/test_plans.py checks the same on
  its networks, which hold fused runs), and the plans run the fused steps.
* Fused training equals the unfused layers (each layer through
  cnnext.functional) to rounding, on the seed network and LeNet-5.
* Runs that are not fused: a pooling with padding, layer subclasses, a
  ReLU that is not between the two.
* Layers, parameters and checkpoints are unchanged by the fusion.
"""

import numpy as np
import pytest
from model_testing import bars

from cnnext import Sequential, load_model, models, optim
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

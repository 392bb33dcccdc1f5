"""Plans of the newer layers: BatchNorm2D, GlobalAvgPool2D, LeakyReLU, Sigmoid, Tanh, Residual.

* fit / predict / evaluate / forward / backward on plans against the
  layer-by-layer path (``model._force_layers = True``): bitwise where nothing
  is folded (training, ``backward``, a batch norm not right after a
  convolution, or folding switched off), for float32 and float64, batch 1
  and larger, 1 and 2 threads, nested and strided residual blocks, identity
  and convolutional shortcuts, batch norm with and without affine
  parameters and with a cumulative (momentum=None) running average.
* Evaluation plans fold ``Conv2D -> BatchNorm2D`` (cnnext/_plans/folding.py):
  equal to the unfolded path within the documented tolerance (2e-5 of the
  largest output in float32, 1e-12 in float64), and tracking the layers'
  arrays: replaced ones (checked by identity), ones updated in place (a
  training step, assignment into the running statistics), a changed mode.
* The plans really run: the passes are compiled (no layer-by-layer
  fallback) and hold the new step kernels.
"""

import numpy as np
import pytest
from test_plans import assert_same, both_paths, fit_everything, run_child_check, snapshot

import cnnext
from cnnext import Sequential, optim
from cnnext._plans import builder
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
from cnnext.models import resnet8

DTYPES = ("float32", "float64")
FOLD_TOLERANCE = {"float32": 2e-5, "float64": 1e-12}


def new_layers(dtype, seed=1):
    """Every newer layer, with residual blocks of both kinds nested, for (2, 8, 8) inputs."""
    rng = np.random.default_rng(seed)
    return Sequential([
        Conv2D(2, 4, 3, padding=1, bias=False, dtype=dtype, seed=rng),         # (4, 8, 8)
        BatchNorm2D(4, dtype=dtype),
        LeakyReLU(0.2),
        Residual([Conv2D(4, 4, 3, padding=1, dtype=dtype, seed=rng),
                  BatchNorm2D(4, momentum=None, dtype=dtype), Tanh(),
                  Residual([Conv2D(4, 4, 1, dtype=dtype, seed=rng), Sigmoid()])]),
        Residual([Conv2D(4, 6, 3, stride=2, padding=1, dtype=dtype, seed=rng), ReLU(),
                  BatchNorm2D(6, affine=False, dtype=dtype)],                  # (6, 4, 4)
                 shortcut=[Conv2D(4, 6, 1, stride=2, bias=False, dtype=dtype, seed=rng),
                           BatchNorm2D(6, dtype=dtype)]),
        ReLU(),
        GlobalAvgPool2D(),                                                      # (6,)
        Dense(6, 5, dtype=dtype, seed=rng),
    ])


def data(n=13, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2, 8, 8)).astype(np.float32), rng.integers(0, 5, n)


def step_names(model, mode, batch, shape):
    plan = model._acquire(mode, batch, shape)
    assert plan is not None, "the network fell back to the layer-by-layer path"
    try:
        return [name.split(":")[-1] for name in plan.forward_program.names
                + plan.backward_program.names]
    finally:
        model._release(plan)


@pytest.fixture
def no_folding(monkeypatch):
    monkeypatch.setattr(builder, "FOLDS", [])


def trained_statistics(model):
    """Give the batch norms running statistics and weights other than their defaults."""
    rng = np.random.default_rng(7)
    for leaf in (layer for top in model.layers for layer in top._leaves()):
        if isinstance(leaf, BatchNorm2D):
            c = leaf.num_features
            leaf.buffers["running_mean"][:] = rng.standard_normal(c)
            leaf.buffers["running_var"][:] = rng.uniform(0.5, 2.0, c)
            for array in leaf.params.values():
                array[:] = rng.uniform(0.5, 1.5, c)
    return model


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_training_equals_the_layer_path_bitwise(dtype, batch_size):
    X, y = data()

    def run(model):
        fitted = fit_everything(model, X, y, epochs=2, batch_size=batch_size,
                                optimizer=optim.Adam(lr=0.01), seed=3)
        return (*fitted[:3], {k: v.copy() for k, v in model.state_dict().items()})

    plan, layers = both_paths(lambda: new_layers(dtype), run)
    assert_same(plan, layers, "history, parameters, optimiser state, state dict")
    # Training changed the running statistics (their equality is not vacuous).
    state = plan[3]
    assert not np.array_equal(state["1.running_mean"], np.zeros(4))
    assert state["3.block.1.num_batches_tracked"] == 2 * len(range(0, len(X), batch_size))


def test_every_newer_layer_runs_on_the_compiled_path():
    model = new_layers("float32")
    names = step_names(model, "fit", 4, (2, 8, 8))
    for name in ("batch_norm2d", "batch_norm2d_backward", "leaky_relu", "leaky_relu_backward",
                 "sigmoid", "sigmoid_backward", "tanh",
                 "tanh_backward", "add", "global_avg_pool2d",
                 "global_avg_pool2d_backward"):
        assert name in names, name
    model.eval()
    names = step_names(model, "predict", 1, (2, 8, 8))
    assert names.count("batch_norm2d_fold") == 3  # the stem, the block's, the shortcut's
    assert "batch_norm2d" in names                # after a ReLU: not folded
    relu_net = Sequential([Conv2D(2, 3, 3, seed=0), BatchNorm2D(3), ReLU(), Flatten(),
                           Dense(108, 2, seed=1)]).eval()
    assert step_names(relu_net, "predict", 1, (2, 8, 8))[:3] == [
        "batch_norm2d_fold", "conv2d_relu", "linear"]
    assert model._compiled()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 5])
def test_folded_evaluation_is_within_tolerance_of_the_layer_path(dtype, batch_size):
    X, y = data()

    def run(model):
        trained_statistics(model)
        return model.predict(X, batch_size=batch_size), model.evaluate(X, y)

    (p_plan, e_plan), (p_layers, e_layers) = both_paths(lambda: new_layers(dtype), run)
    tolerance = FOLD_TOLERANCE[dtype]
    assert np.abs(p_plan - p_layers).max() <= tolerance * np.abs(p_layers).max()
    assert not np.array_equal(p_plan, new_layers(dtype).predict(X))  # the statistics mattered
    assert e_plan[0] == pytest.approx(e_layers[0], rel=10 * tolerance)
    assert e_plan[1] == e_layers[1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_and_backward_in_both_modes_equal_the_layer_path_bitwise(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 8, 8)).astype(dtype)
    gy = rng.standard_normal((3, 5)).astype(dtype)

    def run(model):
        trained_statistics(model)
        results = []
        for mode in (True, False):
            model.train(mode)
            out = model.forward(x)
            gx = model.backward(gy)
            results.append((out, gx, {k: g.copy() for k, g in model.gradients().items()},
                            snapshot(model), model.state_dict()))
        return results

    plan, layers = both_paths(lambda: new_layers(dtype), run)
    assert_same(plan, layers, "forward/backward")


def read_only(model, group):
    for leaf in (layer for top in model.layers for layer in top._leaves()):
        for array in getattr(leaf, group).values():
            array.flags.writeable = False


@pytest.mark.parametrize("group", ["params", "buffers"])
def test_read_only_arrays_the_plan_only_reads_work_as_on_the_layer_path(group):
    """Weights loaded read-only (``np.load(mmap_mode="r")``) serve inference and
    a user's own forward/backward; only what a call writes must be writeable."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    gy = rng.standard_normal((3, 5)).astype(np.float32)

    def run(model):
        trained_statistics(model)
        read_only(model, group)
        model.eval()
        out = model.forward(x)
        gx = model.backward(gy)
        grads = {k: g.copy() for k, g in model.gradients().items()}
        results = [out, gx, grads]
        if group == "params":
            model.train()
            results += [model.forward(x), model.backward(gy)]
        return results, model.predict(x)

    (plan, folded), (layers, expected) = both_paths(lambda: new_layers("float32"), run)
    assert_same(plan, layers, f"read-only {group}")
    assert np.abs(folded - expected).max() <= FOLD_TOLERANCE["float32"] * np.abs(expected).max()


def test_read_only_arrays_a_call_would_write_are_refused_naming_them():
    X, y = data()
    model = new_layers("float32")
    read_only(model, "params")
    with pytest.raises(ValueError, match=r"layer 0 .*params\['weight'\] is read-only, so it "
                                         r"cannot be trained"):
        model.fit(X, y, epochs=1, progress=False)
    model = new_layers("float32")
    read_only(model, "buffers")
    model.train()
    with pytest.raises(ValueError, match=r"layer 1 .*buffers\['running_mean'\] is read-only, "
                                         r"so it cannot be written"):
        model.forward(X)


def test_one_and_two_threads_give_the_same_bits(num_threads):
    X, y = data(n=24)
    results = []
    for threads in (1, 2):
        num_threads(threads)
        results.append(both_paths(lambda: new_layers("float32"), lambda m: fit_everything(
            m, X, y, epochs=1, batch_size=8, optimizer=optim.SGD(lr=0.05, momentum=0.9),
            seed=1)[:3]))  # predictions fold: compared within tolerance elsewhere
    assert_same(results[0][0], results[1][0], "plans, 1 vs 2 threads")
    assert_same(results[1][0], results[1][1], "plan vs layers, 2 threads")


def test_resnet8_plans_apply_every_relu_as_the_step_before_it_stores():
    # BatchNorm2D -> ReLU (4) and Residual -> ReLU (3): no ReLU pass of its
    # own, and the batch norms' backward gates their gradient (only the
    # Residuals' ReLUs keep a backward step); bitwise the layers' results
    # (the test below).
    names = step_names(resnet8(seed=0), "fit", 4, (1, 16, 16))
    assert "relu" not in names, names
    assert names.count("relu_backward") == 3, names
    assert names.count("add") == 3 + 2 + 3, names  # forward, shortcut copies, input


@pytest.mark.parametrize("dtype", DTYPES)
def test_resnet8_trains_bitwise_and_predicts_within_the_fold_tolerance(dtype):
    rng = np.random.default_rng(5)
    X = rng.integers(0, 256, (6, 1, 16, 16), dtype=np.uint8)
    y = rng.integers(0, 10, 6)

    def run(model):
        fitted = fit_everything(model, X, y, epochs=1, batch_size=3,
                                optimizer=optim.SGD(lr=0.05, momentum=0.9), seed=2)
        return fitted[:3], model.predict(X, batch_size=1)

    (fit_plan, p_plan), (fit_layers, p_layers) = both_paths(
        lambda: resnet8(dtype=dtype, seed=0), run)
    assert_same(fit_plan, fit_layers, "resnet8 training")
    assert np.abs(p_plan - p_layers).max() <= FOLD_TOLERANCE[dtype] * np.abs(p_layers).max()


# ------------------------------------------------------ the arrays folded
def folded_predict_matches(model, reference, X, dtype="float32"):
    expected = reference.predict(X)
    got = model.predict(X)
    return np.abs(got - expected).max() <= FOLD_TOLERANCE[dtype] * np.abs(expected).max()


def twin_models():
    model, reference = new_layers("float32"), new_layers("float32")
    reference._force_layers = True
    for m in (model, reference):
        trained_statistics(m)
    return model, reference


def each_pair(model, reference):
    return zip(model.layers, reference.layers, strict=True)


def test_folded_plans_follow_arrays_updated_in_place():
    X, _ = data()
    model, reference = twin_models()
    assert folded_predict_matches(model, reference, X)
    before = model.predict(X)
    for mine, theirs in each_pair(model, reference):
        for name, array in mine.buffers.items():
            if name == "running_var":
                array *= 3.0
                theirs.buffers[name] *= 3.0
        for name, array in mine.params.items():
            array += 0.25
            theirs.params[name] += 0.25
    assert not np.array_equal(model.predict(X), before)
    assert folded_predict_matches(model, reference, X)



def test_folded_plans_see_each_folded_array_change_alone():
    """The fold is redone when any one of its inputs changes in place, and only then."""
    X, _ = data()
    model, reference = twin_models()
    conv, bn = model.layers[3].block[0], model.layers[3].block[1]
    conv_ref, bn_ref = reference.layers[3].block[0], reference.layers[3].block[1]
    arrays = [(conv.params["weight"], conv_ref.params["weight"]),
              (conv.params["bias"], conv_ref.params["bias"]),
              *((bn.params[k], bn_ref.params[k]) for k in ("weight", "bias")),
              *((bn.buffers[k], bn_ref.buffers[k]) for k in ("running_mean", "running_var"))]
    before = model.predict(X)
    np.testing.assert_array_equal(model.predict(X), before)  # nothing changed: the same
    for mine, theirs in arrays:
        mine.reshape(-1)[1] += 0.5
        theirs.reshape(-1)[1] += 0.5
        after = model.predict(X)
        assert not np.array_equal(after, before)
        assert folded_predict_matches(model, reference, X)
        before = after

def test_folded_plans_follow_training_and_loaded_state():
    X, y = data()
    model, reference = twin_models()
    first = model.predict(X)
    for m in (model, reference):
        m.fit(X, y, epochs=1, batch_size=4, optimizer=optim.SGD(lr=0.1), progress=False, seed=0)
    assert not np.array_equal(model.predict(X), first)
    assert folded_predict_matches(model, reference, X)
    state = {k: v + 0.125 if v.dtype.kind == "f" else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    reference.load_state_dict(state)
    assert folded_predict_matches(model, reference, X)


def test_replaced_statistics_and_parameters_are_picked_up():
    X, _ = data()
    model, reference = twin_models()
    model.predict(X)
    bn, bn_ref = model.layers[1], reference.layers[1]
    for layer in (bn, bn_ref):
        layer.buffers["running_mean"] = np.full(4, 0.5, np.float32)
        layer.params["weight"] = np.full(4, 2.0, np.float32)
    assert folded_predict_matches(model, reference, X)
    inner, inner_ref = model.layers[3].block[1], reference.layers[3].block[1]
    for layer in (inner, inner_ref):
        layer.buffers["running_var"] = np.full(4, 4.0, np.float32)
    assert folded_predict_matches(model, reference, X)
    inner.eps = inner_ref.eps = 0.5
    assert folded_predict_matches(model, reference, X)


@pytest.mark.parametrize("bad, message", [
    (np.zeros(3, np.float32), r"layer 1 .*buffers\['running_mean'\] has shape \(3,\)"),
    (np.zeros(4, np.float64), r"buffers\['running_mean'\] has shape \(4,\) and dtype float64"),
    ([0.0] * 4, r"buffers\['running_mean'\] must be a numpy.ndarray"),
])
def test_statistics_that_do_not_fit_are_refused_naming_layer_and_buffer(bad, message):
    X, _ = data()
    model = new_layers("float32")
    model.predict(X)
    model.layers[1].buffers["running_mean"] = bad
    with pytest.raises(ValueError, match=message):
        model.predict(X)


def test_a_nested_layers_bad_parameter_is_named_by_its_position():
    X, _ = data()
    model = new_layers("float32")
    model.layers[3].block[0].params["weight"] = np.zeros((4, 4, 3, 3), np.float64)
    with pytest.raises(ValueError, match=r"layer 3\.block\.0 \(Conv2D"):
        model.predict(X)


def test_a_mode_change_rebuilds_the_plan():
    X, _ = data()
    model, reference = new_layers("float32"), new_layers("float32")
    reference._force_layers = True
    x = X.astype(np.float32)
    for m in (model, reference):
        trained_statistics(m)
    for training in (False, True, False):
        outs = [m.train(training)(x) for m in (model, reference)]
        assert_same(outs[0], outs[1], f"forward, training={training}")


def test_training_with_one_value_per_channel_is_refused_as_on_the_layer_path():
    model = Sequential([Conv2D(1, 2, 3, seed=0), BatchNorm2D(2), Flatten(), Dense(2, 2, seed=0)])
    x = np.zeros((1, 1, 3, 3), np.float32)
    for force in (False, True):
        model._force_layers = force
        with pytest.raises(ValueError, match="more than one value per channel"):
            model.fit(x, np.zeros(1, np.int64), epochs=1, batch_size=1, progress=False)


def test_a_residual_holding_a_layer_without_steps_runs_layer_by_layer():
    class Doubled(ReLU):
        def _forward(self, x, reuse):
            return 2 * super()._forward(x, reuse)

    model = Sequential([Conv2D(1, 2, 3, padding=1, seed=0),
                        Residual([Doubled(), MaxPool2D(1)]), Flatten(), Dense(32, 3, seed=1)])
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    out = model(x)
    assert model._acquire("backward", 2, (1, 4, 4)) is None
    conv = model.layers[0].forward(x)
    expected = model.layers[3].forward((2 * np.maximum(conv, 0) + conv).reshape(2, -1))
    np.testing.assert_allclose(out, expected, rtol=1e-6)



class EvaluationSteps(Dropout):
    """A layer with compiled steps in evaluation mode only."""

    def _build_steps(self, b, x):
        return NotImplemented if self.training else super()._build_steps(b, x)


def test_a_network_trained_layer_by_layer_still_predicts_on_plans():
    """fit runs layer by layer (a layer has no training steps), predict on a plan."""
    X, y = data()
    model = Sequential([*new_layers("float32").layers[:-1], EvaluationSteps(0.5, seed=0),
                        Dense(6, 5, seed=2)])
    model.fit(X, y, epochs=1, batch_size=4, progress=False, seed=0)
    assert model._acquire("fit", 4, (2, 8, 8)) is None
    model.eval()  # as predict computes
    plan = model._acquire("predict", 1, (2, 8, 8))
    assert plan is not None and "batch_norm2d_fold" in " ".join(plan.forward_program.names)
    model._release(plan)
    reference = Sequential(model.layers)
    reference._force_layers = True
    expected = reference.predict(X)
    assert np.abs(model.predict(X) - expected).max() <= 2e-5 * np.abs(expected).max()


def dropout_net(dtype="float32", seed=3):
    """Dropout in training at three places: two layers sharing one generator (their
    draws interleave), one inside a residual block."""
    rng = np.random.default_rng(seed)
    shared = np.random.default_rng(11)
    return Sequential([
        Conv2D(2, 4, 3, padding=1, dtype=dtype, seed=rng), ReLU(), Dropout(0.3, seed=shared),
        Residual([Conv2D(4, 4, 3, padding=1, dtype=dtype, seed=rng), Dropout(0.5, seed=7)]),
        GlobalAvgPool2D(), Dropout(0.2, seed=shared), Dense(4, 5, dtype=dtype, seed=rng),
    ])


def generator_states(model):
    return [leaf._rng.bit_generator.state for top in model.layers for leaf in top._leaves()
            if isinstance(leaf, Dropout)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_dropout_trains_on_plans_bitwise(dtype, batch_size):
    X, y = data()

    def run(model):
        fitted = fit_everything(model, X, y, epochs=2, batch_size=batch_size,
                                optimizer=optim.SGD(lr=0.05, momentum=0.9), seed=1)
        return (*fitted, generator_states(model))

    plan, layers = both_paths(lambda: dropout_net(dtype), run)
    assert_same(plan, layers, "dropout training")
    model = dropout_net(dtype)
    assert "dropout" in step_names(model, "fit", batch_size, (2, 8, 8))


def test_dropout_forward_backward_in_training_mode_equal_the_layer_path():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    gy = rng.standard_normal((3, 5)).astype(np.float32)

    def run(model):
        results = []
        for _ in range(3):  # a new mask each pass
            out = model.forward(x)
            results.append((out, model.backward(gy),
                            {k: g.copy() for k, g in model.gradients().items()}))
        assert not np.array_equal(results[0][0], results[1][0])
        return results, generator_states(model)

    plan, layers = both_paths(dropout_net, run)
    assert_same(plan, layers, "forward/backward with dropout")


def test_a_run_stopped_by_a_non_finite_loss_draws_the_keys_the_layers_draw():
    X, y = data(n=20)
    X[9, 0, 3, 3] = np.nan

    def run(model):
        with pytest.raises(FloatingPointError):
            model.fit(X, y, epochs=1, batch_size=2, shuffle=False, on_nan="raise",
                      optimizer=optim.SGD(lr=0.05), progress=False)
        states = generator_states(model)
        X[9, 0, 3, 3] = 0.0
        model.fit(X, y, epochs=1, batch_size=2, optimizer=optim.SGD(lr=0.05), progress=False,
                  seed=0)
        X[9, 0, 3, 3] = np.nan
        return states, snapshot(model), generator_states(model)

    plan, layers = both_paths(dropout_net, run)
    assert_same(plan, layers, "after a stopped run")

# ------------------------------------------- grouped and depthwise convolution
def mobile_layers(dtype, seed=2):
    """A MobileNet-style net for (2, 8, 8) inputs: depthwise 3x3 (stride 1 and 2,
    one and two filters a channel, with and without bias) and grouped
    pointwise 1x1 convolutions, batch norms (after each kind of
    convolution, one after a ReLU) and ReLUs."""
    rng = np.random.default_rng(seed)
    return Sequential([
        Conv2D(2, 8, 3, padding=1, bias=False, dtype=dtype, seed=rng),              # (8, 8, 8)
        BatchNorm2D(8, dtype=dtype), ReLU(),
        Conv2D(8, 8, 3, padding=1, groups=8, bias=False, dtype=dtype, seed=rng),
        BatchNorm2D(8, dtype=dtype), ReLU(),
        Conv2D(8, 12, 1, groups=2, dtype=dtype, seed=rng),                         # (12, 8, 8)
        BatchNorm2D(12, dtype=dtype), ReLU(),
        Conv2D(12, 12, 3, stride=2, padding=1, groups=12, dtype=dtype, seed=rng),  # (12, 4, 4)
        ReLU(), BatchNorm2D(12, dtype=dtype),
        Conv2D(12, 24, 3, padding=(2, 1), dilation=(2, 1), groups=12, dtype=dtype,
               seed=rng),                                                          # (24, 4, 4)
        BatchNorm2D(24, affine=False, dtype=dtype),
        GlobalAvgPool2D(), Dense(24, 5, dtype=dtype, seed=rng),
    ])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_depthwise_training_equals_the_layer_path_bitwise(dtype, batch_size):
    X, y = data()

    def run(model):
        fitted = fit_everything(model, X, y, epochs=2, batch_size=batch_size,
                                optimizer=optim.Adam(lr=0.01), seed=3)
        return (*fitted[:3], {k: v.copy() for k, v in model.state_dict().items()})

    plan, layers = both_paths(lambda: mobile_layers(dtype), run)
    assert_same(plan, layers, "depthwise net: history, parameters, optimiser state")
    assert not np.array_equal(plan[1]["3.weight"], mobile_layers(dtype).layers[3].params[
        "weight"])  # the depthwise filters were trained


def test_depthwise_layers_run_on_their_steps_in_every_mode():
    model = mobile_layers("float32")
    for batch in (1, 4):
        names = step_names(model, "fit", batch, (2, 8, 8))
        assert names.count("depthwise2d") == 3 and names.count("depthwise2d_backward") == 3
        assert names.count("conv2d_backward") == 3, names  # the stem, the two groups
    model.eval()
    names = step_names(model, "predict", 1, (2, 8, 8))
    # Folded: the stem (with its ReLU), two depthwise and the grouped layer (their
    # ReLU a step of its own).
    assert names.count("batch_norm2d_fold") == 4, names
    assert names.count("copy_channels") == 4, names  # each group's input and output
    assert names.count("depthwise2d") == 3 and names.count("batch_norm2d") == 1, names
    assert model._compiled()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("layers_of", [new_layers, mobile_layers], ids=["plain", "depthwise"])
def test_evaluation_without_folding_equals_the_layer_path_bitwise(dtype, batch_size, layers_of,
                                                                  no_folding):
    X, y = data()

    def run(model):
        trained_statistics(model)
        return (model.predict(X, batch_size=batch_size),
                model.evaluate(X, y, batch_size=batch_size), model.eval()(X.astype(dtype)))

    plan, layers = both_paths(lambda: layers_of(dtype), run)
    assert_same(plan, layers, f"{layers_of.__name__}: predict, evaluate, forward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 5])
def test_depthwise_folded_evaluation_is_within_tolerance_of_the_layer_path(dtype, batch_size):
    X, _ = data()

    def run(model):
        trained_statistics(model)
        return model.predict(X, batch_size=batch_size)

    folded, expected = both_paths(lambda: mobile_layers(dtype), run)
    assert np.abs(folded - expected).max() <= FOLD_TOLERANCE[dtype] * np.abs(expected).max()
    assert not np.array_equal(folded, mobile_layers(dtype).predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("poison", [None, np.inf, np.nan])
def test_depthwise_forward_and_backward_in_both_modes_equal_the_layer_path_bitwise(dtype,
                                                                                 poison):
    """Filters holding inf or NaN take the scatter for the input gradient, in the
    steps as in the functional, and the stride-1 path is whole again after."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 8, 8)).astype(dtype)
    gy = rng.standard_normal((3, 5)).astype(dtype)

    def run(model):
        trained_statistics(model)
        results = []
        for mode in (True, False, True):
            model.train(mode)
            out = model.forward(x)
            gx = model.backward(gy)
            results.append((out, gx, {k: g.copy() for k, g in model.gradients().items()},
                            snapshot(model), model.state_dict()))
            if poison is not None:
                weight = model.layers[3].params["weight"]
                weight[1, 0, 1, 1] = poison if mode else 0.5
        return results

    plan, layers = both_paths(lambda: mobile_layers(dtype), run)
    assert_same(plan, layers, "depthwise forward/backward")


def test_depthwise_plans_give_the_same_bits_on_one_and_two_threads(num_threads):
    X, y = data(n=24)
    results = []
    for threads in (1, 2):
        num_threads(threads)
        results.append(both_paths(lambda: mobile_layers("float32"), lambda m: fit_everything(
            m, X, y, epochs=1, batch_size=8, optimizer=optim.SGD(lr=0.05, momentum=0.9),
            seed=1)[:3]))
    assert_same(results[0][0], results[1][0], "depthwise plans, 1 vs 2 threads")
    assert_same(results[1][0], results[1][1], "depthwise plan vs layers, 2 threads")


# ---------------------------------------------------- every instruction set
def check_every_path():
    """The bitwise comparisons on the ISA build this process runs, for the child."""
    X, y = data(n=9)
    for dtype in DTYPES:
        for batch_size in (1, 4):
            plan, layers = both_paths(lambda dtype=dtype: new_layers(dtype),
                                      lambda m, b=batch_size: fit_everything(
                                          m, X, y, epochs=1, batch_size=b,
                                          optimizer=optim.Adam(lr=0.01), seed=2)[:3])
            assert_same(plan, layers, f"{dtype} batch {batch_size}")
            folds = list(builder.FOLDS)
            builder.FOLDS.clear()  # bitwise: no folding
            try:
                plan, layers = both_paths(lambda dtype=dtype: trained_statistics(
                    new_layers(dtype)), lambda m, b=batch_size: m.predict(X, batch_size=b))
            finally:
                builder.FOLDS[:] = folds
            assert_same(plan, layers, f"{dtype} batch {batch_size}, evaluation")
            plan, layers = both_paths(lambda dtype=dtype: mobile_layers(dtype),
                                      lambda m, b=batch_size: fit_everything(
                                          m, X, y, epochs=1, batch_size=b,
                                          optimizer=optim.SGD(lr=0.05), seed=2)[:3])
            assert_same(plan, layers, f"{dtype} batch {batch_size}, depthwise")


@pytest.mark.parametrize("isa", cnnext.show_config("dicts")["simd"]["supported"])
def test_newer_layers_plans_equal_the_layer_path_on_every_instruction_set_build(tmp_path, isa):
    run_child_check(__file__, tmp_path, isa)


if __name__ == "__main__":
    check_every_path()
    print("plans equal on", cnnext.show_config("dicts")["simd"]["in_use"]["_norm"])

"""Plans (cnnext._plans): compiled passes give exactly what the layer-by-layer path gives.

* fit / predict / evaluate / forward / backward on plans against the same
  calls with ``model._force_layers = True`` (the reference path, one layer
  at a time through cnnext.functional): bitwise, for every layer type,
  float32 and float64, batch 1 and larger, partial last batches, SGD with
  momentum, Nesterov and weight decay, Adam, an optimiser of the user's own,
  with and without shuffling, callbacks, on_nan="raise" and "skip", 1 and 2
  OpenMP threads, and (in a child process each) every instruction-set build.
* Parameters replaced by the user are picked up or refused naming the
  layer and parameter; a replaced layer list is picked up.
* Layers without compiled steps (a user's layer, a subclass that changes
  the computation) run layer by layer.
* Convolutions whose operands hold NaN/inf take the plan without
  reformulated algorithms inside the compiled path too.
* Threads: 8 threads calling predict / evaluate / forward on one model get
  the serial results; fit from two threads, or of two models sharing a
  layer, is refused; a shared layer's gradients follow its own model's input.
* Repeated fits: the optimiser's compiled update is reused while nothing it
  describes changed and rebuilt after a replaced parameter, learning rate,
  state array, load_state_dict or reset, bitwise as the layer path; a resized
  or read-only parameter is refused; the old array of a replaced one is left alone.
* A pickled model carries weights, not plans.
"""

import copy
import itertools
import pickle
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conv_testing import winograd_on
from model_testing import bars, every_layer_model, small_cnn
from reliability_testing import scaled, subprocess_env

import cnnext
from cnnext import Sequential, optim
from cnnext.layers import AvgPool2D, Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU

DTYPES = ("float32", "float64")


def all_layers(dtype, seed=1):
    """Every layer type with non-default geometry, for (1, 12, 12) images, 10 classes."""
    rng = np.random.default_rng(seed)
    return Sequential([
        Conv2D(1, 4, 3, padding=1, dtype=dtype, seed=rng),            # (4, 12, 12)
        ReLU(),
        MaxPool2D(2),                                                 # (4, 6, 6)
        Conv2D(4, 6, (3, 2), stride=(1, 2), dilation=(2, 1), dtype=dtype, seed=rng),  # (6, 2, 3)
        ReLU(),
        AvgPool2D((2, 1), stride=1, padding=(1, 0)),                  # (6, 3, 3)
        Flatten(),
        Dense(54, 16, dtype=dtype, seed=rng),
        ReLU(),
        Dense(16, 10, bias=False, dtype=dtype, seed=rng),
    ])


def data(n=29, size=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), rng.integers(0, 10, n)


def snapshot(model):
    return {name: array.copy() for name, array in model.parameters().items()}


def optimizer_arrays(opt):
    return {(name, key): value for name, entry in opt.state.items()
            for key, value in entry.items() if isinstance(value, (np.ndarray, int))}


def assert_same(a, b, what):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            assert_same(a[key], b[key], f"{what}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{what}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert a.tobytes() == b.tobytes(), f"{what}: differs bitwise"
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), what
    else:
        assert a == b, what


def both_paths(build, run):
    """``run(model)`` on a plan-backed model and on a layer-by-layer one built alike."""
    results = []
    for force in (False, True):
        model = build()
        model._force_layers = force
        results.append(run(model))
    return results


def fit_everything(model, X, y, **fit):
    history = model.fit(X, y, progress=False, **fit)
    history.pop("seconds")
    return (history, snapshot(model), optimizer_arrays(model.optimizer), model.predict(X),
            model.predict(X[:3], batch_size=2), model.evaluate(X, y, batch_size=7))


OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.05),
    "momentum": lambda: optim.SGD(lr=0.03, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda: optim.SGD(lr=0.03, momentum=0.8, nesterov=True),
    "adam": lambda: optim.Adam(lr=0.01, weight_decay=1e-4),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 4, 40])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_predict_evaluate_equal_the_layer_path_bitwise(dtype, batch_size, name, shuffle):
    X, y = data()
    plan, layers = both_paths(lambda: all_layers(dtype), lambda m: fit_everything(
        m, X, y, epochs=2, batch_size=batch_size, optimizer=OPTIMIZERS[name](), shuffle=shuffle,
        seed=4))
    assert_same(plan, layers, "plan vs layers")
    # Training moved the weights (equal by doing nothing would prove nothing).
    assert not np.array_equal(plan[1]["0.weight"], all_layers(dtype).parameters()["0.weight"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_inputs_of_either_dtype_and_strided_batches(dtype):
    X, y = data(n=17)
    for Xf in ((X / 255 - 0.5).astype(np.float32), (X / 255 - 0.25)[:, None],
               np.repeat((X / 255.0), 2, axis=0)[::2]):
        plan, layers = both_paths(lambda: all_layers(dtype), lambda m, Xf=Xf: fit_everything(
            m, Xf, y[:len(Xf)], epochs=1, batch_size=3, optimizer=optim.SGD(lr=0.1), seed=0))
        assert_same(plan, layers, f"inputs {Xf.dtype} {Xf.shape}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_and_backward_equal_the_layer_path_bitwise(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 9, 8)).astype(dtype)
    gy = rng.standard_normal((3, 5)).astype(dtype)

    def run(model):
        out = model.forward(x)
        gx = model.backward(gy)
        return out, gx, {name: g.copy() for name, g in model.gradients().items()}

    plan, layers = both_paths(lambda: every_layer_model(dtype), run)
    assert_same(plan, layers, "forward/backward")


def test_one_and_two_threads_train_alike_on_plans(num_threads):
    X, y = data(n=40)
    results = []
    for threads in (1, 2):
        num_threads(threads)
        model = all_layers("float32")
        results.append(fit_everything(model, X, y, epochs=2, batch_size=8,
                                      optimizer=optim.Adam(lr=0.01), seed=1))
    assert_same(results[0], results[1], "1 vs 2 threads")
    num_threads(2)
    plan, layers = both_paths(lambda: all_layers("float32"), lambda m: fit_everything(
        m, X, y, epochs=1, batch_size=8, optimizer=optim.SGD(lr=0.1, momentum=0.5), seed=1))
    assert_same(plan, layers, "plan vs layers, 2 threads")


def test_callbacks_see_the_same_epochs_and_may_change_the_learning_rate():
    X, y = data()

    def run(model):
        seen = []

        def callback(model, epoch, logs):
            seen.append((epoch, logs["loss"], logs["accuracy"], snapshot(model)))
            model.optimizer.lr *= 0.5
            return epoch == 1

        model.fit(X, y, epochs=4, batch_size=3, optimizer=optim.SGD(lr=0.1), callbacks=[callback],
                  progress=False, validation_data=(X[:9], y[:9]), seed=5)
        return seen, snapshot(model)

    plan, layers = both_paths(lambda: all_layers("float64"), run)
    assert_same(plan, layers, "callbacks")
    assert len(plan[0]) == 2


@pytest.mark.parametrize("on_nan", ["raise", "skip"])
def test_non_finite_losses_are_handled_alike(on_nan):
    X, y = data(n=30)
    Xf = (X / 255 - 0.5).astype(np.float32)
    Xf[13, 4, 4] = np.nan

    def run(model):
        try:
            history = model.fit(Xf, y, epochs=2, batch_size=4, shuffle=False, on_nan=on_nan,
                                optimizer=optim.SGD(lr=0.1, momentum=0.9), progress=False)
            history.pop("seconds")
        except FloatingPointError as exc:
            history = str(exc)
        return history, snapshot(model)

    plan, layers = both_paths(lambda: all_layers("float32"), run)
    assert_same(plan, layers, on_nan)
    if on_nan == "raise":
        assert "at epoch 1, step 4 (examples 12..15" in plan[0]
    else:
        assert plan[0]["skipped_steps"] == [1, 1]


def test_a_progress_bar_on_a_terminal_shows_the_same_losses():
    X, y = data(n=150)
    lines = []

    class Terminal:
        def __init__(self):
            self.text = []

        def isatty(self):
            return True

        def write(self, text):
            self.text.append(text)

        def flush(self):
            pass

    def run(model):
        out = Terminal()
        sys.stderr, saved = out, sys.stderr
        try:
            model.fit(X, y, epochs=1, batch_size=1, optimizer=optim.SGD(lr=0.01), seed=2)
        finally:
            sys.stderr = saved
        lines.append(out.text[-1])
        return snapshot(model)

    plan, layers = both_paths(lambda: all_layers("float32"), run)
    assert_same(plan, layers, "terminal")
    # The last line ends with the epoch's figures, the same on both paths.
    assert lines[0].split("img/s")[1] == lines[1].split("img/s")[1]


class HalfSteps(optim.SGD):
    """An optimiser of the user's own: its own step, run in Python after each compiled step."""

    def step(self, params, grads):
        for name, param in params.items():
            param -= 0.5 * self.lr * grads[name]


def test_an_optimiser_with_its_own_step_is_applied_after_every_step():
    X, y = data(n=12)
    plan, layers = both_paths(lambda: all_layers("float64"), lambda m: fit_everything(
        m, X, y, epochs=2, batch_size=5, optimizer=HalfSteps(lr=0.2), seed=0))
    assert_same(plan, layers, "user optimiser")


# ---------------------------------------------------------------- parameters
def test_replaced_parameters_are_picked_up():
    X, y = data(n=8)
    model = all_layers("float32")
    before = model.predict(X)
    conv = model.layers[0]
    conv.params["weight"] = conv.params["weight"] * 2
    after = model.predict(X)
    reference = all_layers("float32")
    reference.layers[0].params["weight"][...] = conv.params["weight"]
    reference._force_layers = True
    assert_same(after, reference.predict(X), "after replacement")
    assert not np.array_equal(before, after)
    # The whole dict, and the gradient arrays, too.
    dense = model.layers[-1]
    dense.params = {"weight": np.zeros_like(dense.params["weight"])}
    assert np.allclose(model.predict(X), 0.1)
    dense.grads = {"weight": np.zeros_like(dense.params["weight"])}
    model.fit(X, y, epochs=1, batch_size=4, progress=False, seed=0)
    assert np.abs(dense.grads["weight"]).sum() > 0


def test_a_repeated_predict_is_remembered_only_while_its_checks_hold():
    X, _ = data(n=6)
    model = all_layers("float32")
    first = model.predict(X, batch_size=4)
    again = model.predict(X, batch_size=4)
    assert_same(again, first, "repeated call")
    assert not np.shares_memory(again, first)
    # The remembered plan in use by another caller: another one serves.
    held = model._acquire("predict", 4, (1, *X.shape[1:]))
    assert_same(model.predict(X, batch_size=4), first, "plan in use")
    model._release(held)
    model.layers = list(model.layers)
    assert_same(model.predict(X, batch_size=4), first, "new layer list")
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(X, batch_size=0)
    with pytest.raises(TypeError, match="must be uint8 images"):
        model.predict(X.astype(np.int32), batch_size=4)
    with pytest.raises(TypeError, match="batch_size"):
        model.predict(X, batch_size=4.0)


@pytest.mark.parametrize("bad, message", [
    (lambda w: w[:, :, :2], r"layer 0 \(Conv2D\(1, 4, 3, padding=1\)\): params\['weight'\] has "
                            r"shape \(4, 1, 2, 3\) and dtype float32; the layer needs shape "
                            r"\(4, 1, 3, 3\)"),
    (lambda w: w.astype(np.float64), r"params\['weight'\] has shape \(4, 1, 3, 3\) and dtype "
                                     r"float64"),
    (lambda w: np.asfortranarray(np.repeat(w, 2, axis=1)[:, ::2]), "must be C-contiguous"),
    (lambda w: w.tolist(), r"params\['weight'\] must be a numpy.ndarray, got list"),
])
def test_parameters_that_no_longer_fit_are_refused_naming_layer_and_parameter(bad, message):
    X, _ = data(n=4)
    model = all_layers("float32")
    model.predict(X)
    model.layers[0].params["weight"] = bad(model.layers[0].params["weight"])
    with pytest.raises(ValueError, match=message):
        model.predict(X)


def test_read_only_parameters_predict_but_are_not_trained():
    X, y = data(n=4)
    model = all_layers("float32")
    weight = model.layers[-1].params["weight"]
    weight.flags.writeable = False
    model.predict(X)
    with pytest.raises(ValueError, match=r"layer 9 .*params\['weight'\] is read-only"):
        model.fit(X, y, progress=False)


def test_a_replaced_layer_list_is_picked_up():
    X, _ = data(n=5)
    model = all_layers("float64")
    model.predict(X)
    other = all_layers("float64", seed=7)
    model.layers[0] = other.layers[0]
    reference = all_layers("float64")
    reference.layers[0] = other.layers[0]
    reference._force_layers = True
    assert_same(model.predict(X), reference.predict(X), "replaced layer")


# ------------------------------------------------------ layers without steps
class Scale(Layer):
    """A user's layer with no compiled steps."""

    def config(self):
        return {}

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype)
        return x * 2

    def _backward(self, gy, need_input_grad, reuse):
        return gy * 2 if need_input_grad else None


class Halved(ReLU):
    """A subclass that changes the computation without giving steps for it."""

    def _forward(self, x, reuse):
        return super()._forward(x, reuse) / 2


@pytest.mark.parametrize("odd", [Scale, Halved])
def test_layers_without_compiled_steps_run_layer_by_layer(odd):
    X, y = data(n=10)

    def build():
        rng = np.random.default_rng(3)
        return Sequential([Conv2D(1, 3, 3, seed=rng), odd(), MaxPool2D(2), Flatten(),
                           Dense(75, 10, seed=rng)])

    model = build()
    assert not model._compiled()
    history = model.fit(X, y, epochs=2, batch_size=3, progress=False, seed=0)
    assert np.isfinite(history["loss"]).all()
    assert model.predict(X).shape == (10, 10)
    # The layer-by-layer path is what a hand-written loop computes.
    reference = build()
    x = (X[:2, None] / np.float32(255) - np.float32(0.5)).astype(np.float32)
    out = x
    for layer in reference.layers:
        out = layer.forward(out)
    assert_same(reference.forward(x), out, "layer path")


@pytest.mark.parametrize("poison", [np.nan, np.inf])
def test_non_finite_conv_operands_avoid_reformulated_algorithms_in_plans(poison):
    from cnnext._functional import conv

    rng = np.random.default_rng(5)
    # (Winograd by request: the heuristics keep it for larger layers.)
    with winograd_on(((16, 6, 6), (64, 16, 3, 3))):
        plan, safe = conv.step_plans((2, 16, 6, 6), (64, 16, 3, 3), np.dtype(np.float32),
                                     1, 1, 1)
        assert plan.forward_lanes == "winograd" and safe.forward_lanes != "winograd"

        def build():
            r = np.random.default_rng(1)
            return Sequential([Conv2D(16, 64, 3, padding=1, seed=r), ReLU(), Flatten(),
                               Dense(64 * 6 * 6, 10, seed=r)])

        X = rng.standard_normal((6, 16, 6, 6)).astype(np.float32)
        y = rng.integers(0, 10, 6)
        X[1, 3, 2, 2] = poison
        gy = np.full((2, 10), 1.0, np.float32)
        gy[0, 3] = np.inf

        def run(model):
            first = model.predict(X, batch_size=2), model.evaluate(X, y, batch_size=3)
            model.layers[0].params["weight"][0, 0, 1, 1] = poison
            second = model.predict(X, batch_size=2)
            model.forward(X[2:4])
            return first, second, model.backward(gy), model.gradients()

        plan_result, layer_result = both_paths(build, run)
        assert_same(plan_result, layer_result, "non-finite operands")
        # The images without NaN/inf stay finite: no inf - inf or 0 * inf from Winograd.
        assert np.isfinite(plan_result[0][0][2:]).all()


# ------------------------------------------------------------------ threads
def test_eight_threads_predicting_evaluating_and_forwarding_match_serial_calls(num_threads):
    num_threads(2)
    model = all_layers("float32")
    rng = np.random.default_rng(9)
    inputs = [data(n=int(rng.integers(1, 20)), seed=t) for t in range(8)]
    floats = [(X[:, None] / 255 - 0.5).astype(np.float32) for X, _ in inputs]
    serial = [(model.predict(X, batch_size=4), model.evaluate(X, y, batch_size=3),
               model.forward(f)) for (X, y), f in zip(inputs, floats, strict=True)]
    start = threading.Barrier(8)

    def work(t):
        start.wait()
        (X, y), f = inputs[t], floats[t]
        bad = []
        for _ in range(scaled(20, 4)):
            got = (model.predict(X, batch_size=4), model.evaluate(X, y, batch_size=3),
                   model.forward(f))
            try:
                assert_same(got, serial[t], f"thread {t}")
            except AssertionError as exc:
                bad.append(str(exc))
        return bad

    with ThreadPoolExecutor(8) as pool:
        problems = [p for found in pool.map(work, range(8)) for p in found]
    assert not problems, problems[:5]


def test_backward_follows_the_calling_threads_forward():
    model = every_layer_model("float64")
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((2, 2, 9, 8)) for _ in range(8)]
    gy = rng.standard_normal((2, 5))
    expected = []
    for x in xs:
        model.forward(x)
        expected.append(model.backward(gy))
    start = threading.Barrier(8)

    def work(t):
        start.wait()
        out = []
        for _ in range(scaled(10, 3)):
            model.forward(xs[t])
            out.append(model.backward(gy))
        return out

    with ThreadPoolExecutor(8) as pool:
        for t, results in enumerate(pool.map(work, range(8))):
            for gx in results:
                assert_same(gx, expected[t], f"thread {t}")


def train_in_background(model, X, y):
    """Start ``model.fit`` in a thread that holds its first epoch's callback
    until ``release`` is set; returns (thread, started, release)."""
    started, release = threading.Event(), threading.Event()

    def hold(model, epoch, logs):
        started.set()
        release.wait(120)

    thread = threading.Thread(target=lambda: model.fit(X, y, epochs=2, batch_size=4,
                                                        progress=False, callbacks=[hold]))
    thread.start()
    assert started.wait(120)
    return thread, release


def test_fit_from_two_threads_is_refused():
    X, y = bars(40)
    model = small_cnn()
    thread, release = train_in_background(model, X, y)
    try:
        with pytest.raises(RuntimeError, match=r"Sequential\.fit: this model is being trained "
                                               r"in another thread; train one model from one "
                                               r"thread at a time"):
            model.fit(X, y, progress=False)
    finally:
        release.set()
        thread.join()
    model.fit(X, y, progress=False)  # free again


def test_a_layer_shared_by_two_models_is_trained_by_one_at_a_time():
    X, y = bars(40)
    a = small_cnn()
    b = Sequential([a.layers[0], ReLU(), MaxPool2D(2), Flatten(), Dense(100, 4)])
    thread, release = train_in_background(a, X, y)
    try:
        with pytest.raises(RuntimeError, match=r"layer 0 \(Conv2D\(1, 4, 3\)\) is being trained "
                                               r"as part of another model"):
            b.fit(X, y, progress=False)
    finally:
        release.set()
        thread.join()
    b.fit(X, y, progress=False)  # once a is done, b trains


def test_a_shared_layers_gradients_follow_its_own_models_input():
    rng = np.random.default_rng(8)
    a = small_cnn(dtype="float64")
    b = Sequential([a.layers[0], ReLU(), MaxPool2D(2), Flatten(), Dense(100, 4,
                                                                        dtype="float64")])
    xa, xb = rng.standard_normal((2, 2, 1, 12, 12))
    gy = rng.standard_normal((2, 4))
    a.forward(xa)
    alone = a.backward(gy), a.gradients()["0.weight"].copy()
    a.forward(xa)
    b.forward(xb)          # the shared layer sees another input in between
    mixed = a.backward(gy), a.gradients()["0.weight"].copy()
    assert_same(mixed, alone, "shared layer")


# ----------------------------------------------------------------- pickling
def test_a_pickled_model_carries_weights_not_plans():
    X, y = data(n=9)
    model = all_layers("float32")
    model.fit(X, y, epochs=1, batch_size=2, optimizer=optim.Adam(), progress=False)
    expected = model.predict(X)
    blob = pickle.dumps(model)
    fresh = pickle.dumps(all_layers("float32"))
    # The fitted model's pickle adds only the optimiser state (2 moments per parameter).
    parameters = sum(a.nbytes for a in model.parameters().values())
    assert len(blob) < len(fresh) + 2 * parameters + 20_000
    assert b"Program" not in blob and b"Runner" not in blob
    clone = pickle.loads(blob)
    assert_same(clone.predict(X), expected, "unpickled predict")
    clone.fit(X, y, epochs=1, batch_size=2, progress=False, seed=3)
    model.fit(X, y, epochs=1, batch_size=2, progress=False, seed=3)
    assert_same(snapshot(clone), snapshot(model), "unpickled fit")


def test_plans_refuse_to_be_pickled_and_the_cache_is_bounded():
    X, _ = data(n=3)
    model = all_layers("float32")
    for n in range(1, 30):
        model.predict(X[:1].repeat(n, axis=0))
    assert len(model._plans) <= 2 * model._plans.size
    plan = model._acquire("predict", 2, (1, 12, 12))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(plan.runner)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(plan.forward_program)


# ---------------------------------------------------- every instruction set
def check_every_path():
    """The bitwise comparisons on the ISA build this process runs, for the child."""
    X, y = data(n=13)
    for dtype in DTYPES:
        for batch_size in (1, 5):
            plan, layers = both_paths(lambda dtype=dtype: all_layers(dtype),
                                      lambda m, b=batch_size: fit_everything(
                                          m, X, y, epochs=2, batch_size=b,
                                          optimizer=optim.Adam(lr=0.01), seed=2))
            assert_same(plan, layers, f"{dtype} batch {batch_size}")


def run_child_check(script, tmp_path, isa):
    """Run ``script`` (a test file whose main runs its checks) on the ISA build ``isa``."""
    proc = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=scaled(300, 1200),
                          env=subprocess_env(CNNEXT_ISA=isa))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["plans", "equal", "on", isa], proc.stdout


@pytest.mark.parametrize("isa", cnnext.show_config("dicts")["simd"]["supported"])
def test_plans_equal_the_layer_path_on_every_instruction_set_build(tmp_path, isa):
    run_child_check(__file__, tmp_path, isa)


if __name__ == "__main__":
    check_every_path()
    print("plans equal on", cnnext.show_config("dicts")["simd"]["in_use"]["_conv"])


# ------------------------------------------------------ repeated fit calls
def fit_calls(model, X, y, optimizer, changes):
    """One-epoch fits with ``optimizer``, ``changes[i](model, optimizer)`` before
    fit i + 1; the results of each, and the update Program each fit ran."""
    results, updates = [], []
    for change in (None, *changes):
        if change is not None:
            change(model, optimizer)
        results.append(fit_everything(model, X, y, epochs=1, batch_size=3,
                                      optimizer=optimizer, seed=2))
        memo = optimizer.__dict__.get("_update_memo")
        updates.append(None if memo is None else memo.update)
    return results, updates


def _replace_weight(model, optimizer):
    conv = model.layers[0]
    conv.params["weight"] = conv.params["weight"] * 1.5


def _new_lr(model, optimizer):
    optimizer.lr *= 0.5


def _new_momentum_buffer(model, optimizer):
    entry = optimizer.state["0.weight"]
    for slot in optimizer.slots:
        if entry.get(slot) is not None:
            entry[slot] = entry[slot] * 0.5


def _reload_state(model, optimizer):
    optimizer.load_state_dict(optimizer.state_dict())


CHANGES = (None, _replace_weight, None, _new_lr, _new_momentum_buffer, _reload_state,
           lambda m, o: o.reset())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_repeated_fits_keep_the_optimiser_state_and_equal_the_layer_path(name):
    X, y = data(n=7)
    changes = [change or (lambda m, o: None) for change in CHANGES]
    (plan, updates), (layers, _) = both_paths(
        lambda: all_layers("float32"),
        lambda m: fit_calls(m, X, y, OPTIMIZERS[name](), changes))
    assert_same(plan, layers, "plan vs layers over repeated fits")
    # Each fit trained (the state carried over, or was reset, as on the layer path) ...
    for before, after in itertools.pairwise(plan):
        assert not np.array_equal(before[1]["0.weight"], after[1]["0.weight"])
    # ... on one update Program while nothing changed, a new one after each change.
    assert updates[1] is updates[0]
    for i, change in enumerate(CHANGES[1:], 2):
        changes_nothing = change is None or (change is _new_momentum_buffer and name == "sgd")
        assert (updates[i] is updates[i - 1]) == changes_nothing, i


def test_a_replaced_parameter_is_trained_and_the_old_array_left_alone():
    X, y = data(n=6)
    model = all_layers("float32")
    optimizer = optim.SGD(lr=0.1, momentum=0.9)
    model.fit(X, y, batch_size=2, optimizer=optimizer, progress=False, seed=0)
    old = model.layers[0].params["weight"]
    kept = old.copy()
    new = old * 2
    model.layers[0].params["weight"] = new
    start = new.copy()
    model.fit(X, y, batch_size=2, optimizer=optimizer, progress=False, seed=0)
    assert_same(old, kept, "the array no longer in the model")
    assert not np.array_equal(new, start)


def test_a_resized_or_read_only_parameter_is_refused_by_the_next_fit():
    X, y = data(n=6)
    model = all_layers("float32")
    optimizer = optim.SGD(lr=0.1, momentum=0.9)
    model.fit(X, y, batch_size=2, optimizer=optimizer, progress=False, seed=0)
    dense = model.layers[-1]
    dense.params["weight"].flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        model.fit(X, y, batch_size=2, optimizer=optimizer, progress=False, seed=0)
    dense.params["weight"] = np.ones((10, 17), np.float32)
    with pytest.raises(ValueError, match=r"layer 9 .*params\['weight'\] has shape \(10, 17\)"):
        model.fit(X, y, batch_size=2, optimizer=optimizer, progress=False, seed=0)


def test_an_optimiser_with_a_compiled_update_pickles_and_copies_without_it():
    X, y = data(n=4)
    model = all_layers("float32")
    optimizer = optim.Adam(lr=0.01)
    model.fit(X, y, batch_size=2, optimizer=optimizer, progress=False, seed=0)
    assert "_update_memo" in optimizer.__dict__
    for other in (pickle.loads(pickle.dumps(optimizer)), copy.deepcopy(optimizer)):
        assert "_update_memo" not in other.__dict__
        assert_same(optimizer_arrays(other), optimizer_arrays(optimizer), "copy")

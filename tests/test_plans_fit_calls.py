"""Repeated fit calls (Sequential._fit_memo): a call repeating the last validated
call's arguments skips its checks and set-up, and gives what a full call gives.

* Per-image fit calls (default shuffle, uint8 (N, H, W) and float (N, C, H, W)
  images, four optimisers, float32 and float64) equal the layer-by-layer path
  bitwise, history and optimiser state included, with the remembered call
  taken from the second call on.
* Every change the memo describes (a replaced or read-only parameter, a new
  learning rate or state array, load_state_dict, reset, another optimiser,
  batch size, callbacks, a replaced layer list, another input shape) takes
  the full path again: picked up, or refused with the full path's error.
* In a repeated call: a bad label is refused before anything changes;
  callbacks, on_nan (a NaN step refused or skipped, diverged weights restored
  to the epoch's start) and the progress bar behave as in a full call.
* The label check (one compiled pass): every integer dtype, negative labels,
  uint64 labels past int64's range.
* The memo is not pickled; fit from another thread is still refused.
"""

import io
import pickle
import sys
import threading

import numpy as np
import pytest
from test_plans import OPTIMIZERS, all_layers, assert_same, data, optimizer_arrays, snapshot

from cnnext import Sequential, optim
from cnnext._kernels import _program
from cnnext.layers import Dense, Flatten


@pytest.fixture
def repeated(monkeypatch):
    """The number of fit calls that took the remembered path, by model id."""
    counts = {}
    original = Sequential._fit_repeated

    def spy(self, setup, X, y):
        counts[id(self)] = counts.get(id(self), 0) + 1
        return original(self, setup, X, y)

    monkeypatch.setattr(Sequential, "_fit_repeated", spy)
    return counts


def per_image(model, X, y, optimizer, calls=None, **fit):
    """fit once per image (or per ``calls`` slices); the histories without seconds."""
    histories = []
    for i in range(len(X)) if calls is None else calls:
        part = slice(i, i + 1) if calls is None else i
        try:
            history = model.fit(X[part], y[part], batch_size=1, epochs=1, optimizer=optimizer,
                                progress=False, **fit)
            history.pop("seconds")
        except (FloatingPointError, ValueError) as exc:
            history = f"{type(exc).__name__}: {exc}"
        histories.append(history)
    return histories


def both(run, dtype="float32"):
    """``run(model)`` on a plan-backed model and on a layer-by-layer one built alike."""
    results = []
    for force in (False, True):
        model = all_layers(dtype)
        model._force_layers = force
        results.append((run(model), snapshot(model), model))
    return results


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("images", ["uint8", "float"])
def test_per_image_fits_equal_the_layer_path_bitwise(repeated, dtype, name, images):
    X, y = data(n=9)
    if images == "float":
        X = (X[:, None] / 255 - 0.5).astype(dtype)
    (plan, plan_params, plan_model), (layers, layer_params, layer_model) = both(
        lambda m: per_image(m, X, y, OPTIMIZERS[name]()), dtype)
    assert_same(plan, layers, "histories")
    assert_same(plan_params, layer_params, "parameters")
    assert_same(optimizer_arrays(plan_model.optimizer), optimizer_arrays(layer_model.optimizer),
                "optimiser state")
    assert repeated.get(id(plan_model)) == len(X) - 1
    assert id(layer_model) not in repeated  # the layer path remembers nothing
    assert all(h["loss"][0] > 0 for h in plan)


def _replace_weight(model, optimizer):
    model.layers[0].params["weight"] = model.layers[0].params["weight"] * 0.5


def _new_lr(model, optimizer):
    optimizer.lr = optimizer.lr * 0.5


def _new_buffer(model, optimizer):
    entry = optimizer.state["7.weight"]
    entry["momentum_buffer"] = entry["momentum_buffer"] * 0.5


def _reload(model, optimizer):
    optimizer.load_state_dict(optimizer.state_dict())


def _reset(model, optimizer):
    optimizer.reset()


def _other_optimizer(model, optimizer):
    model.optimizer = optim.SGD(lr=0.2, momentum=0.5)


def _reshaped_buffer_in_place(model, optimizer):
    buffer = optimizer.state["7.weight"]["momentum_buffer"]
    buffer.shape = (buffer.size,)


def _replaced_layers(model, optimizer):
    model.layers = list(model.layers)


@pytest.mark.parametrize("change", [_replace_weight, _new_lr, _new_buffer, _reload, _reset,
                                    _other_optimizer, _reshaped_buffer_in_place,
                                    _replaced_layers])
def test_a_change_between_calls_takes_the_full_path(repeated, change):
    X, y = data(n=6)

    def run(model):
        optimizer = optim.SGD(lr=0.05, momentum=0.9)
        out = per_image(model, X[:3], y[:3], None if change is _other_optimizer else optimizer)
        model.optimizer = optimizer
        out += per_image(model, X[:3], y[:3], None)
        change(model, optimizer)
        # After the change: a full call, then remembered ones again.
        out += per_image(model, X[3:], y[3:], None)
        return out, optimizer_arrays(model.optimizer)

    (plan, plan_params, model), (layers, layer_params, _) = both(run)
    assert_same(plan, layers, change.__name__)
    assert_same(plan_params, layer_params, change.__name__)
    # 9 calls: the first, the one after the change and, when the first ran with
    # the default optimiser, the one after model.optimizer was set are full calls.
    assert repeated[id(model)] == 9 - 2 - (change is _other_optimizer)


@pytest.mark.parametrize("argument", [{"batch_size": 2}, {"epochs": 2}, {"shuffle": False},
                                      {"seed": 3}, {"on_nan": "skip"},
                                      {"callbacks": [lambda m, e, logs: None]}])
def test_other_arguments_take_the_full_path_then_are_remembered(repeated, argument):
    X, y = data(n=4)
    model = all_layers("float32")
    fit = {"epochs": 1, "batch_size": 1, "optimizer": optim.SGD(lr=0.01), "progress": False}
    model.fit(X, y, **fit)
    model.fit(X, y, **fit)
    assert repeated[id(model)] == 1
    model.fit(X, y, **{**fit, **argument})
    assert repeated[id(model)] == 1
    model.fit(X, y, **{**fit, **argument})
    assert repeated[id(model)] == 2
    model.fit(X[:3], y[:3], **{**fit, **argument})  # another shape
    assert repeated[id(model)] == 2


def test_read_only_and_resized_parameters_are_refused_after_remembered_calls(repeated):
    X, y = data(n=4)
    model = all_layers("float32")
    optimizer = optim.SGD(lr=0.1, momentum=0.9)
    per_image(model, X, y, optimizer)
    assert repeated[id(model)] == 3
    dense = model.layers[-1]
    dense.params["weight"].flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        model.fit(X[:1], y[:1], batch_size=1, optimizer=optimizer, progress=False)
    dense.params["weight"] = np.ones((10, 17), np.float32)
    with pytest.raises(ValueError, match=r"layer 9 .*params\['weight'\] has shape \(10, 17\)"):
        model.fit(X[:1], y[:1], batch_size=1, optimizer=optimizer, progress=False)
    assert repeated[id(model)] == 3


def test_a_bad_label_in_a_remembered_call_changes_nothing(repeated):
    X, y = data(n=3)
    model = all_layers("float32")
    optimizer = optim.Adam(lr=0.01)
    per_image(model, X[:2], y[:2], optimizer)
    before = snapshot(model)
    state = {k: np.copy(v) for k, v in optimizer_arrays(optimizer).items()}
    for bad in (10, -1):
        with pytest.raises(ValueError, match=rf"y holds label {bad}, outside \[0, 10\)"):
            model.fit(X[:1], np.array([bad]), batch_size=1, optimizer=optimizer, progress=False)
    assert repeated[id(model)] == 3
    assert_same(snapshot(model), before, "parameters")
    assert_same({k: np.copy(v) for k, v in optimizer_arrays(optimizer).items()}, state,
                "optimiser state")
    per_image(model, X[2:], y[2:], optimizer)
    assert repeated[id(model)] == 4


def test_callbacks_of_remembered_calls_see_what_full_calls_see(repeated):
    X, y = data(n=5)

    def run(model):
        seen = []

        def callback(model, epoch, logs):
            seen.append((epoch, logs["loss"], logs["accuracy"], snapshot(model)))

        class Hooks:
            def __call__(self, model, epoch, logs):
                seen.append(("call", epoch))

            def on_train_begin(self, model):
                seen.append("begin")

            def on_train_end(self, model):
                seen.append("end")

        hooks = Hooks()
        per_image(model, X, y, optim.SGD(lr=0.1), callbacks=[callback, hooks])
        return seen

    (plan, plan_params, model), (layers, layer_params, _) = both(run, "float64")
    assert_same(plan, layers, "callbacks")
    assert_same(plan_params, layer_params, "parameters")
    assert len(plan) == 5 * 4
    assert repeated[id(model)] == 4


@pytest.mark.parametrize("on_nan", ["raise", "skip"])
def test_non_finite_steps_in_remembered_calls_are_handled_as_in_full_calls(repeated, on_nan):
    X, y = data(n=12)
    Xf = (X[:, None] / 255 - 0.5).astype(np.float32)
    Xf[7, 0, 3, 3] = np.nan
    Xf[8:10] *= np.float32(1e18)  # huge weights after image 8: NaN losses from image 9 on
    calls = [slice(i, i + 2) for i in range(0, 12, 2)]

    def run(model):
        optimizer = optim.SGD(lr=0.05, momentum=0.9)
        out = []
        for part in calls:
            out += per_image(model, Xf, y, optimizer, calls=[part], on_nan=on_nan,
                             shuffle=False)
            out.append(optimizer_arrays(optimizer))
        return out

    (plan, plan_params, model), (layers, layer_params, _) = both(run)
    assert_same(plan, layers, on_nan)
    assert_same(plan_params, layer_params, "parameters")
    results = plan[0::2]
    assert repeated[id(model)] == 5  # a failed call leaves the memo in place
    if on_nan == "raise":
        assert [isinstance(r, str) for r in results] == [False] * 3 + [True] * 3
        assert "loss is nan at epoch 1, step 2 (examples 1..1" in results[3]
    else:
        assert [r["skipped_steps"][0] for r in results] == [0, 0, 0, 1, 1, 2]


def test_an_interrupted_remembered_call_restores_the_start_of_its_epoch(repeated, monkeypatch):
    X, y = data(n=6)
    interrupt = []

    def interrupted(original):
        def run(self, *args, **kwargs):
            totals = original(self, *args, **kwargs)
            if interrupt:  # a step diverged, then Ctrl-C: the epoch's start comes back
                self.layers[0].params["weight"][0, 0, 0, 0] = np.inf
                raise KeyboardInterrupt
            return totals
        return run

    for name in ("_fit_epoch_compiled", "_fit_epoch_layers"):
        monkeypatch.setattr(Sequential, name, interrupted(getattr(Sequential, name)))

    def run(model):
        optimizer = optim.Adam(lr=0.01)
        per_image(model, X[:4], y[:4], optimizer)
        before = snapshot(model)
        state = {k: np.copy(v) for k, v in optimizer_arrays(optimizer).items()}
        interrupt.append(True)
        with pytest.raises(KeyboardInterrupt):
            model.fit(X[4:5], y[4:5], batch_size=1, epochs=1, optimizer=optimizer,
                      progress=False)
        interrupt.clear()
        assert_same(snapshot(model), before, "restored weights")
        restored = {k: np.copy(v) for k, v in optimizer_arrays(optimizer).items()}
        assert_same(restored, state, "restored optimiser state")
        per_image(model, X[5:], y[5:], None)
        return optimizer_arrays(model.optimizer)

    (plan, plan_params, model), (layers, layer_params, _) = both(run)
    assert_same(plan, layers, "optimiser state")
    assert_same(plan_params, layer_params, "parameters")
    assert repeated[id(model)] == 3 + 1  # the restored state is new: a full call after


def test_progress_of_remembered_calls_is_that_of_full_calls(repeated):
    X, y = data(n=4)
    outputs = []
    for model in (all_layers("float32"), all_layers("float32")):
        model._force_layers = not outputs
        lines = []
        for i in range(len(X)):
            sys.stderr, saved = io.StringIO(), sys.stderr
            try:
                model.fit(X[i:i + 1], y[i:i + 1], batch_size=1, optimizer=optim.SGD(lr=0.1)
                          if i == 0 else None)
            finally:
                sys.stderr, text = saved, sys.stderr.getvalue()
            lines.append(text.split("img/s")[-1])
        outputs.append(lines)
        if not model._force_layers:
            assert repeated[id(model)] == 3
    assert outputs[0] == outputs[1]
    assert all("loss=" in line for line in outputs[0])


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "uint32", "int64",
                                   "uint64"])
def test_labels_of_every_integer_dtype_are_checked_in_one_pass(dtype):
    X, y = data(n=6)
    model = all_layers("float32")
    labels = y.astype(dtype)
    model.fit(X, labels, batch_size=2, optimizer=optim.SGD(lr=0.01), progress=False)
    bad = labels.copy()
    bad[4] = 12
    with pytest.raises(ValueError, match=r"y holds label 12, outside \[0, 10\)"):
        model.fit(X, bad, batch_size=2, progress=False)
    if dtype == "uint64":
        bad[4] = 2**63 + 5  # wraps negative as int64
        with pytest.raises(ValueError, match=rf"label {2**63 + 5}, outside"):
            model.fit(X, bad, batch_size=2, progress=False)
    elif np.dtype(dtype).kind == "i":
        bad[4] = -3
        with pytest.raises(ValueError, match=r"y holds label -3, outside"):
            model.evaluate(X, bad)


def test_first_outside_reports_the_first_label_outside_the_classes():
    labels = np.array([3, 0, 9, 10, -1, 2], np.int64)
    assert _program.first_outside(labels, 10) == 3
    assert _program.first_outside(labels[::2], 10) == 2  # strided: 3, 9, -1
    assert _program.first_outside(labels[4:], 10) == 0
    assert _program.first_outside(labels[:3], 10) == -1
    assert _program.first_outside(labels[:0], 10) == -1
    with pytest.raises(TypeError, match="int64"):
        _program.first_outside(labels.astype(np.int32), 10)


def test_the_memo_is_not_pickled_and_fit_from_two_threads_is_still_refused(repeated):
    X, y = data(n=3)
    model = all_layers("float32")
    per_image(model, X, y, optim.SGD(lr=0.01))
    assert model._fit_memo is not None
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(model._fit_memo)
    again = pickle.loads(pickle.dumps(model))
    assert again._fit_memo is None
    assert_same(snapshot(again), snapshot(model), "pickled weights")
    # A remembered call while another thread's remembered call trains the
    # model is refused.
    started, release = threading.Event(), threading.Event()
    gate = []

    def hold(model, epoch, logs):
        if gate:
            started.set()
            release.wait(10)

    optimizer = model.optimizer
    fit = {"batch_size": 1, "epochs": 1, "optimizer": optimizer, "progress": False}
    per_image(model, X, y, optimizer, callbacks=[hold])
    gate.append(True)
    thread = threading.Thread(target=model.fit, args=(X[:1], y[:1]),
                              kwargs={**fit, "callbacks": [hold]})
    thread.start()
    try:
        assert started.wait(10)
        with pytest.raises(RuntimeError, match="being trained in another thread"):
            model.fit(X[1:2], y[1:2], **fit, callbacks=[hold])
    finally:
        release.set()
        thread.join()
    assert repeated[id(model)] == 2 + 2 + 2  # a new callback list: one full call


def test_a_dense_only_model_of_flat_examples_is_remembered(repeated):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 6)).astype(np.float32)
    y = rng.integers(0, 3, 5)

    def run(force):
        model = Sequential([Flatten(), Dense(6, 3, seed=0)])
        model._force_layers = force
        return per_image(model, X, y, optim.SGD(lr=0.1, momentum=0.5)), snapshot(model), model

    (plan, plan_params, model), (layers, layer_params, _) = run(False), run(True)
    assert_same(plan, layers, "histories")
    assert_same(plan_params, layer_params, "parameters")
    assert repeated[id(model)] == 4

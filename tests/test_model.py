"""Sequential: learning a small problem, inference, scaling, summary, errors, NaN, interrupts."""

import io

import numpy as np
import pytest
from model_testing import bars, small_cnn

from cnnext import Sequential, models, optim
from cnnext import _reference as R
from cnnext.layers import Conv2D, Dense, Flatten


@pytest.fixture(scope="module")
def data():
    return bars(600, seed=0), bars(200, seed=1)


@pytest.mark.parametrize(("batch_size", "optimizer"), [
    (16, optim.SGD(lr=0.05, momentum=0.9)),
    (1, optim.SGD(lr=0.01)),
    (32, optim.Adam(lr=0.01)),
])
def test_fit_learns_the_bars_problem(data, batch_size, optimizer):
    (X, y), (Xv, yv) = data
    model = small_cnn(seed=0)
    _, accuracy_before = model.evaluate(Xv, yv)
    assert accuracy_before < 0.5  # four classes: near chance before training
    history = model.fit(X, y, epochs=3, batch_size=batch_size, optimizer=optimizer,
                        validation_data=(Xv, yv), seed=0, progress=False)
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert all(len(v) == 3 for v in history.values())
    assert history["loss"][-1] < history["loss"][0] < 1.5
    assert history["val_accuracy"][-1] >= 0.95
    loss, accuracy = model.evaluate(Xv, yv)
    assert (loss, accuracy) == (history["val_loss"][-1], history["val_accuracy"][-1])


def test_one_step_of_fit_is_one_sgd_step_on_the_batch_gradient():
    rng = np.random.default_rng(2)
    model = small_cnn(dtype="float64", seed=3, size=8, classes=3)
    X = rng.standard_normal((5, 1, 8, 8))
    y = np.array([0, 2, 1, 1, 0])
    before = {k: v.copy() for k, v in model.parameters().items()}
    # The gradient of the mean loss, from the float64 reference kernels.
    w, b = before["0.weight"], before["0.bias"]
    conv = R.conv2d(X, w, b)
    act = R.relu(conv)
    pooled, idx = R.max_pool2d(act, 2, return_indices=True)
    logits = pooled.reshape(5, -1) @ before["4.weight"].T + before["4.bias"]
    _, g = R.softmax_cross_entropy(logits, y)
    expected = {"4.weight": g.T @ pooled.reshape(5, -1), "4.bias": g.sum(0)}
    g_act = R.relu_backward(R.max_pool2d_backward((g @ before["4.weight"]).reshape(pooled.shape),
                                                  idx, act.shape), conv)
    _, expected["0.weight"], expected["0.bias"] = R.conv2d_backward(g_act, X, w)
    model.fit(X, y, epochs=1, batch_size=5, optimizer=optim.SGD(lr=0.5), shuffle=False,
              progress=False)
    for name, param in model.parameters().items():
        np.testing.assert_allclose(param, before[name] - 0.5 * expected[name], rtol=1e-12,
                                   atol=1e-14, err_msg=name)


def test_uint8_images_are_scaled_as_the_notebook_and_get_a_channel_axis():
    images, _ = bars(20, size=28, seed=4)
    model = models.seed_cnn(seed=0, dtype="float64")
    scaled = images[:, None] / 255 - 0.5
    np.testing.assert_array_equal(model.predict(images), model.predict(scaled))
    np.testing.assert_array_equal(model.predict(images[:, None]), model.predict(scaled))
    assert model.predict(scaled.astype(np.float32)).dtype == np.float64  # cast to the model's


def test_predict_returns_probabilities_in_any_batch_size():
    images, _ = bars(37, size=28, seed=5)
    model = models.seed_cnn(seed=1)
    probs = model.predict(images)
    assert probs.shape == (37, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(model.predict(images, batch_size=1), probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(images, batch_size=1000), probs, rtol=1e-5, atol=1e-6)
    assert model.predict(images[:0]).shape == (0, 10)
    expected = R.softmax(model.forward((images[:, None] / 255 - 0.5).astype(np.float32)))
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)


def test_epochs_zero_changes_nothing(data):
    (X, y), _ = data
    model = small_cnn()
    before = {k: v.copy() for k, v in model.parameters().items()}
    history = model.fit(X, y, epochs=0, progress=False)
    assert history == {"loss": [], "accuracy": [], "seconds": []}
    for name, param in model.parameters().items():
        np.testing.assert_array_equal(param, before[name])


def test_progress_prints_one_line_per_epoch_when_not_a_terminal(data, capsys):
    (X, y), (Xv, yv) = data
    small_cnn().fit(X[:64], y[:64], epochs=2, batch_size=16, validation_data=(Xv, yv))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2 [") and lines[1].startswith("epoch 2/2 [")
    assert "loss=" in lines[1] and "val_accuracy=" in lines[1] and "img/s" in lines[1]


def test_callbacks_see_every_epoch_and_can_stop(data):
    (X, y), _ = data
    seen = []

    def stop_after_two(model, epoch, logs):
        seen.append((epoch, sorted(logs)))
        return epoch == 1

    history = small_cnn().fit(X[:32], y[:32], epochs=5, callbacks=[stop_after_two],
                              progress=False)
    assert [epoch for epoch, _ in seen] == [0, 1]
    assert seen[0][1] == ["accuracy", "loss", "seconds"]
    assert len(history["loss"]) == 2


def test_summary_lists_layers_shapes_and_parameter_counts():
    out = io.StringIO()
    models.seed_cnn().summary(file=out)
    text = out.getvalue()
    for expected in ("Conv2D(1, 8, 3, bias=False)", "(8, 26, 26)", "MaxPool2D(2)", "(8, 13, 13)",
                     "(1352,)", "Dense(1352, 10)", "13,530", "total parameters: 13,602"):
        assert expected in text
    out = io.StringIO()
    Sequential([Flatten(), Dense(4, 2)]).summary(file=out)
    assert "input ?" in out.getvalue()
    assert models.lenet5().num_parameters() == 61_706


def test_training_continues_with_the_models_optimizer(data):
    (X, y), _ = data
    model = small_cnn()
    sgd = optim.SGD(lr=0.01, momentum=0.9)
    model.fit(X[:32], y[:32], optimizer=sgd, progress=False)
    assert model.optimizer is sgd
    model.fit(X[:32], y[:32], progress=False)
    assert model.optimizer is sgd and sgd.state["0.weight"]["momentum_buffer"] is not None


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(X=np.zeros((4, 3, 12, 12), np.uint8)), ValueError,
     r"layer 0: Conv2D\(1, 4, 3\) expects 1 input channel"),
    (dict(X=np.zeros((4, 12, 12), np.int16)), TypeError, "must be uint8 images"),
    (dict(X=np.zeros((4, 12, 12), bool)), TypeError, "must be uint8 images"),
    (dict(X=np.zeros(4, np.uint8)), ValueError, r"must be a batch of examples"),
    (dict(y=np.array([0, 1, 2])), ValueError, r"y must have shape \(4,\)"),
    (dict(y=np.array([0, 1, 4, 0])), ValueError, r"label 4, outside \[0, 4\)"),
    (dict(y=np.array([0, -1, 2, 0])), ValueError, r"label -1, outside \[0, 4\)"),
    (dict(y=np.array([0.0, 1, 2, 0])), TypeError, "integer class labels"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an int"),
    (dict(epochs=-1), ValueError, "epochs must be >= 0"),
    (dict(optimizer="sgd"), TypeError, "optimizer must be a cnnext.optim optimiser"),
    (dict(loss="mse"), ValueError, "unknown loss 'mse'"),
    (dict(on_nan="ignore"), ValueError, "on_nan must be one of"),
    (dict(validation_data=np.zeros(3)), TypeError, "validation_data must be a pair"),
    (dict(validation_data=(np.zeros((2, 12, 12), np.uint8), np.array([0, 7]))), ValueError,
     r"validation_data\[1\] holds label 7"),
    (dict(callbacks=[3]), TypeError, "callbacks must be callables"),
    (dict(callbacks=3), TypeError,
     r"Sequential\.fit: callbacks must be None or a list of callables, got int$"),
    (dict(callbacks=print), TypeError, r"callbacks must be .* \(put a single callback in a list\)"),
    (dict(seed=-1), ValueError, r"Sequential\.fit: seed must be None, an int >= 0 .* got -1"),
    (dict(seed="x"), TypeError, r"Sequential\.fit: seed must be None, an int >= 0 .* got str"),
    (dict(seed=1.5), TypeError, r"Sequential\.fit: seed must be .* got float"),
    # Without shuffling no generator is made, but the seed is still checked.
    (dict(seed=-1, shuffle=False), ValueError, r"Sequential\.fit: seed must be None, an int"),
])
def test_fit_rejects_bad_arguments_before_training(kwargs, error, message):
    model = small_cnn()
    before = {k: v.copy() for k, v in model.parameters().items()}
    arguments = dict(X=np.zeros((4, 12, 12), np.uint8), y=np.array([0, 1, 2, 3]), progress=False)
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        model.fit(**arguments)
    for name, param in model.parameters().items():
        np.testing.assert_array_equal(param, before[name])


def test_inference_and_construction_reject_bad_arguments():
    model = models.seed_cnn()
    with pytest.raises(ValueError, match=r"X has examples of shape \(1, 32, 32\), the model "
                                         r"takes \(1, 28, 28\)"):
        model.predict(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.predict(np.zeros((2, 28, 28), np.uint8), batch_size=0)
    with pytest.raises(ValueError, match="X holds no examples"):
        model.evaluate(np.zeros((0, 28, 28), np.uint8), np.zeros(0, int))
    with pytest.raises(TypeError, match="the model computes in float32"):
        model.forward(np.zeros((1, 1, 28, 28)))
    with pytest.raises(ValueError, match="must not be empty"):
        Sequential([])
    with pytest.raises(TypeError, match=r"layers\[1\] is a str"):
        Sequential([Flatten(), "Dense"])
    with pytest.raises(TypeError, match="mix dtypes"):
        Sequential([Conv2D(1, 2, 3), Flatten(), Dense(2, 2, dtype="float64")])
    with pytest.raises(ValueError, match="do not fit layer 1"):
        Sequential([Conv2D(1, 2, 3), Dense(50, 2)], input_shape=(1, 7, 7))
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints"):
        Sequential([Flatten()], input_shape=28)
    dense = Dense(4, 4)
    with pytest.raises(ValueError, match=r"layers\[1\] \(Dense\(4, 4\)\) appears twice"):
        Sequential([dense, dense])


# ------------------------------------------------------- NaN and interruptions
def test_nan_loss_stops_with_epoch_and_step_leaving_weights_usable(data, capsys):
    (X, y), _ = data
    X = (X[:64] / 255 - 0.5).astype(np.float32)
    X[40, 3, 3] = np.nan
    model = small_cnn()
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, step 3 \(examples "
                                                 r"32..47"):
        model.fit(X, y[:64], batch_size=16, shuffle=False)
    assert capsys.readouterr().err.startswith("epoch 1/1 [")  # the bar's line is ended
    for param in model.parameters().values():
        assert np.isfinite(param).all()
    assert np.isfinite(model.predict(X[:8])).all()


def test_nan_loss_can_be_skipped(data):
    (X, y), _ = data
    X = (X[:64] / 255 - 0.5).astype(np.float32)
    X[40, 3, 3] = np.nan
    model = small_cnn()
    history = model.fit(X, y[:64], epochs=2, batch_size=16, shuffle=False, progress=False,
                        on_nan="skip")
    assert history["skipped_steps"] == [1, 1]
    assert np.isfinite(history["loss"]).all()
    for param in model.parameters().values():
        assert np.isfinite(param).all()


def test_divergence_raises_and_leaves_finite_weights(data):
    (X, y), _ = data
    model = small_cnn()
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        model.fit(X, y, epochs=3, batch_size=8, optimizer=optim.SGD(lr=1e30), progress=False)
    for param in model.parameters().values():
        assert np.isfinite(param).all()


class Sabotage(optim.SGD):
    """Writes inf into a weight then raises, as a crash in the middle of an update would."""

    def __init__(self, after):
        super().__init__(lr=0.01, momentum=0.9)
        self.after = after

    def step(self, params, grads):
        super().step(params, grads)
        self.after -= 1
        if self.after == 0:
            params["0.weight"][0, 0, 0, 0] = np.inf
            raise KeyboardInterrupt


def test_an_interrupt_mid_fit_leaves_the_model_finite_and_trainable(data):
    (X, y), _ = data
    model = small_cnn()
    sabotage = Sabotage(after=40)  # epoch 2 of 3 (38 steps per epoch)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=3, batch_size=16, optimizer=sabotage, progress=False)
    for param in model.parameters().values():
        assert np.isfinite(param).all()
    history = model.fit(X, y, epochs=1, batch_size=16, optimizer=optim.SGD(lr=0.05),
                        progress=False)
    assert np.isfinite(history["loss"]).all()


@pytest.mark.parametrize("factory", [models.seed_cnn, models.lenet5])
@pytest.mark.parametrize("seed, error", [(-1, ValueError), (1.5, TypeError), ("0", TypeError)])
def test_model_factories_check_their_seed(factory, seed, error):
    with pytest.raises(error, match=f"{factory.__name__}: seed must be"):
        factory(seed=seed)


def test_an_interrupted_fit_restores_its_epochs_start_after_an_earlier_fit(data):
    # The second fit's snapshot lands in the arrays of the first one's.
    (X, y), _ = data
    X, y = X[:96], y[:96]
    model = small_cnn()
    model.fit(X, y, epochs=2, batch_size=16, optimizer=optim.SGD(lr=0.05), progress=False)
    model.fit(X, y, epochs=1, batch_size=16, optimizer=optim.SGD(lr=0.05), progress=False)
    start = {name: param.copy() for name, param in model.parameters().items()}
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=1, batch_size=16, optimizer=Sabotage(after=3), progress=False)
    for name, param in model.parameters().items():
        assert param.tobytes() == start[name].tobytes(), name

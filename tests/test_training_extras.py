"""AdamW and RMSprop, learning-rate schedules, EarlyStopping and ModelCheckpoint,
fit(validation_split=...), and models.resnet8."""

import math

import numpy as np
import pytest

import cnnext
from cnnext import Sequential, load_model, models, optim, schedules
from cnnext.callbacks import EarlyStopping, ModelCheckpoint
from cnnext.layers import Conv2D, Dense, Flatten, ReLU


def tiny_model(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential([Conv2D(1, 2, 3, seed=rng), ReLU(), Flatten(), Dense(2 * 4 * 4, 3,
                                                                           seed=rng)])


def tiny_data(n=24, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, n)


# ------------------------------------------------------------- optimisers
OPTIMISERS = [
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.001, "alpha": 0.9, "weight_decay": 0.01}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "kwargs"), OPTIMISERS)
def test_optimisers_against_torch(torch, name, kwargs, dtype):
    rng = np.random.default_rng(2)
    param = rng.standard_normal((5, 7)).astype(dtype)
    peer = torch.nn.Parameter(torch.from_numpy(param.copy()))
    ours = getattr(optim, name)(**kwargs)
    theirs = getattr(torch.optim, name)([peer], **kwargs)
    params = {"w": param}
    for _ in range(6):
        grad = rng.standard_normal(param.shape).astype(dtype)
        ours.step(params, {"w": grad})
        peer.grad = torch.from_numpy(grad.copy())
        theirs.step()
    tol = {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12,
                                                                    "atol": 1e-13}
    np.testing.assert_allclose(params["w"], peer.detach().numpy(), **tol)


@pytest.mark.parametrize(("name", "kwargs"), OPTIMISERS)
def test_optimiser_state_round_trips(tmp_path, name, kwargs):
    model = tiny_model()
    x, y = tiny_data()
    opt = getattr(optim, name)(**kwargs)
    model.fit(x, y, epochs=1, batch_size=8, optimizer=opt, progress=False, seed=0)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.optimizer.config() == opt.config()
    model.fit(x, y, epochs=1, batch_size=8, progress=False, seed=1)
    loaded.fit(x, y, epochs=1, batch_size=8, progress=False, seed=1)
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[key], value)


def test_optimiser_refusals():
    for cls, kwargs, match in [(optim.AdamW, {"weight_decay": -1}, "weight_decay"),
                               (optim.AdamW, {"betas": (1.0, 0.9)}, "betas"),
                               (optim.RMSprop, {"alpha": 1.0}, "alpha"),
                               (optim.RMSprop, {"centered": 1}, "centered"),
                               (optim.RMSprop, {"momentum": -0.1}, "momentum")]:
        with pytest.raises((TypeError, ValueError), match=match):
            cls(**kwargs)


# --------------------------------------------------------------- schedules
def test_schedules_match_torch_schedulers(torch):
    base = 0.1
    param = torch.nn.Parameter(torch.zeros(1))
    for ours, make in [
            (schedules.StepDecay(3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
            (schedules.ExponentialDecay(0.9),
             lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
            (schedules.CosineDecay(7, 0.001),
             lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, 0.001))]:
        opt = torch.optim.SGD([param], lr=base)
        scheduler = make(opt)
        for epoch in range(8):
            assert math.isclose(ours(epoch, base), opt.param_groups[0]["lr"], rel_tol=1e-12,
                                abs_tol=1e-15), (ours, epoch)
            opt.step()
            scheduler.step()


def test_fit_applies_the_schedule_per_epoch_and_restores_the_rate():
    model = tiny_model()
    x, y = tiny_data()
    opt = optim.SGD(lr=0.1, momentum=0.9)
    seen = []
    history = model.fit(x, y, epochs=4, batch_size=8, optimizer=opt, progress=False, seed=0,
                        lr_schedule=schedules.StepDecay(2, 0.1),
                        callbacks=[lambda m, e, logs: seen.append(m.optimizer.lr)])
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert seen == history["lr"]
    assert opt.lr == 0.1
    # A schedule is any callable (epoch, base_lr) -> lr; the rate changes the updates.
    frozen = tiny_model()
    before = {k: v.copy() for k, v in frozen.parameters().items()}
    frozen.fit(x, y, epochs=2, batch_size=8, optimizer=optim.SGD(lr=0.1), progress=False,
               lr_schedule=lambda epoch, lr: 0.0)
    for key, value in frozen.parameters().items():
        np.testing.assert_array_equal(value, before[key])
    with pytest.raises(ValueError, match="lr_schedule"):
        tiny_model().fit(x, y, progress=False, lr_schedule=lambda e, lr: -1)
    with pytest.raises(TypeError, match="lr_schedule"):
        tiny_model().fit(x, y, progress=False, lr_schedule=0.5)
    with pytest.raises(ValueError, match="step_size"):
        schedules.StepDecay(0)
    with pytest.raises(ValueError, match="gamma"):
        schedules.ExponentialDecay(1.5)


# --------------------------------------------------------- validation_split
def test_validation_split_holds_out_the_last_examples():
    x, y = tiny_data(20)
    model = tiny_model()
    history = model.fit(x, y, epochs=2, batch_size=4, progress=False, seed=0,
                        validation_split=0.25)
    twin = tiny_model()
    want = twin.fit(x[:15], y[:15], epochs=2, batch_size=4, progress=False, seed=0,
                    validation_data=(x[15:], y[15:]))
    assert history["val_loss"] == want["val_loss"]
    assert history["loss"] == want["loss"]
    for bad in (0, 1, 1.5, -0.1, "0.2", True):
        with pytest.raises(ValueError, match="validation_split"):
            tiny_model().fit(x, y, progress=False, validation_split=bad)
    with pytest.raises(ValueError, match="not both"):
        tiny_model().fit(x, y, progress=False, validation_split=0.2, validation_data=(x, y))
    with pytest.raises(ValueError, match="no example"):
        tiny_model().fit(x[:1], y[:1], progress=False, validation_split=0.5)


# --------------------------------------------------------------- callbacks
def scripted(values, key="val_loss"):
    """A fake training whose logged ``key`` takes ``values``, epoch by epoch."""
    model = tiny_model()
    x, y = tiny_data(8)
    logs_by_epoch = iter(values)

    def inject(m, epoch, logs):
        logs[key] = next(logs_by_epoch)

    return model, x, y, inject


def test_early_stopping_waits_patience_epochs():
    model, x, y, inject = scripted([1.0, 0.5, 0.6, 0.55, 0.7, 0.4, 0.3])
    stopper = EarlyStopping(patience=2)
    history = model.fit(x, y, epochs=7, batch_size=4, progress=False,
                        callbacks=[inject, stopper])
    assert len(history["loss"]) == 4  # best at epoch 1, then 2 epochs without improvement
    assert stopper.best == 0.5 and stopper.best_epoch == 1 and stopper.stopped_epoch == 3
    model, x, y, inject = scripted([0.1, 0.2, 0.3, 0.4], key="val_accuracy")
    stopper = EarlyStopping(monitor="val_accuracy", patience=0, min_delta=0.15)
    history = model.fit(x, y, epochs=4, batch_size=4, progress=False,
                        callbacks=[inject, stopper])
    assert len(history["loss"]) == 2 and stopper.mode == "max"


def test_early_stopping_restores_the_best_weights():
    model = tiny_model()
    x, y = tiny_data(16)
    states = []

    def record(m, epoch, logs):
        logs["val_loss"] = [3.0, 1.0, 2.0, 2.5][epoch]
        states.append(m.state_dict())

    stopper = EarlyStopping(patience=5, restore_best_weights=True)
    model.fit(x, y, epochs=4, batch_size=4, progress=False, optimizer=optim.SGD(lr=0.5),
              callbacks=[record, stopper])
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, states[1][key])
    with pytest.raises(ValueError, match="validation_split"):
        tiny_model().fit(x, y, progress=False, callbacks=[EarlyStopping()])


def test_model_checkpoint_saves_the_best_atomically(tmp_path):
    model, x, y, inject = scripted([2.0, 1.0, 1.5, 0.5])
    saver = ModelCheckpoint(tmp_path / "best.npz")
    saved = []

    def note(m, epoch, logs):
        saved.append(saver.last_path and (saver.best_epoch == epoch))

    model.fit(x, y, epochs=4, batch_size=4, progress=False, callbacks=[inject, saver, note])
    assert saved == [True, True, False, True]
    assert saver.best == 0.5
    reloaded = load_model(tmp_path / "best.npz")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(reloaded.state_dict()[key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["best.npz"]  # no temporary left
    model, x, y, inject = scripted([2.0, 3.0])
    every = ModelCheckpoint(str(tmp_path / "e{epoch:02d}-{val_loss:.1f}.npz"),
                            save_best_only=False)
    model.fit(x, y, epochs=2, batch_size=4, progress=False, callbacks=[inject, every])
    assert (tmp_path / "e01-2.0.npz").exists() and (tmp_path / "e02-3.0.npz").exists()
    bad = ModelCheckpoint(str(tmp_path / "{missing}.npz"), save_best_only=False)
    with pytest.raises(ValueError, match="missing"):
        tiny_model().fit(x, y, progress=False, callbacks=[bad])
    with pytest.raises(TypeError, match="path"):
        ModelCheckpoint(3)
    with pytest.raises(ValueError, match="mode"):
        ModelCheckpoint("a.npz", mode="up")


# ----------------------------------------------------------------- resnet8
def test_resnet8_shapes_parameters_and_training():
    model = models.resnet8(seed=0)
    assert model.output_shape((1, 28, 28)) == (10,)
    assert model.output_shape((1, 32, 32)) == (10,)
    assert models.resnet8(in_channels=3, num_classes=5).output_shape((3, 32, 32)) == (5,)
    assert model.num_parameters() == 77_754
    again = models.resnet8(seed=0)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (32, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 32)
    history = model.fit(x, y, epochs=2, batch_size=16, optimizer=optim.Adam(lr=0.01),
                        progress=False, seed=0)
    assert history["loss"][1] < history["loss"][0]
    assert model.predict(x).shape == (32, 10)
    with pytest.raises(ValueError, match="resnet8"):
        models.resnet8(num_classes=0)
    assert cnnext.models.resnet8(dtype="float64").dtype == np.float64

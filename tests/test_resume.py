"""Resumable training: ``fit(..., backup_dir=DIR)`` survives SIGKILL, bit for bit.

The main test trains in a child process that is killed with SIGKILL at
random moments, again and again, each new child resuming from the backup
the last one left, until one finishes.  Its final weights, optimiser state
and history must equal, bitwise, those of a child that trained without
interruption (and without a backup).  The kills land anywhere: while a
batch is computed, between steps, in the middle of writing a backup
(checked: some kills leave a temporary file behind, which nothing reads).

The other tests run in this process: a backup is removed when training
completes; an interrupted fit resumes from its epoch-end backup; a backup of
another run (model, data, arguments) or a damaged one is refused before
anything changes; a backup_dir that cannot be written is refused before
training; two runs cannot share one backup_dir.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from reliability_testing import scaled, subprocess_env

import cnnext
from cnnext import _backup
from cnnext.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import cnnext
    sys.path.insert(0, sys.argv[4])
    from test_resume import build_model, data, FIT

    backup_dir, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = build_model()
    (X, y), validation = data()
    print("ready", flush=True)
    history = model.fit(X, y, validation_data=validation, optimizer=cnnext.optim.Adam(lr=2e-3),
                        backup_dir=backup_dir or None, backup_steps=steps or None, **FIT)
    model.save(out)
    with open(out + ".json", "w") as file:
        json.dump({k: v for k, v in dict(history).items() if k != "seconds"}, file)
""")

FIT = dict(epochs=3, batch_size=8, seed=11, progress=False)


def build_model(dropout=True):
    """A small CNN; with Dropout (a layer holding a random generator) unless told not to."""
    dropout = [cnnext.layers.Dropout(0.25, seed=4)] if dropout else []
    return cnnext.Sequential([Conv2D(1, 6, 3, seed=1), ReLU(), MaxPool2D(2), Flatten(),
                              *dropout, Dense(6 * 5 * 5, 10, seed=2)])


CHILD_EXAMPLES = scaled(960, 240)


def data(n=CHILD_EXAMPLES):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    return (X, y), (X[:64], y[:64])


def run_child(tmp_path, backup_dir, out, steps, kill_after=None):
    """Start a child; SIGKILL it ``kill_after`` seconds after it is ready (None: let it
    finish).  Returns its exit code (negative: killed) and the seconds it ran once ready."""
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(backup_dir or ""), str(out), str(steps),
         os.path.dirname(__file__)], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        ready = time.monotonic()
        if kill_after is not None:
            try:
                child.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
        child.wait(timeout=scaled(600, 1800))
        if child.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"the child failed ({child.returncode}): {child.stderr.read()[-3000:]}")
        return child.returncode, time.monotonic() - ready
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()


def outcome(out):
    """The final weights and optimiser state (bytes) and history of a finished child."""
    model = cnnext.load_model(out)
    arrays = {name: a.tobytes() for name, a in model.parameters().items()}
    for name, entry in model.optimizer.state_dict()["state"].items():
        arrays.update({f"{name}/{k}": (v.tobytes() if isinstance(v, np.ndarray) else v)
                       for k, v in entry.items()})
    with open(f"{out}.json") as file:
        return arrays, json.load(file)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_at_random_moments_then_resume_ends_bitwise_equal(tmp_path):
    reference = tmp_path / "reference.npz"
    assert run_child(tmp_path, None, reference, 0)[0] == 0
    expected = outcome(reference)
    # How long training takes with backups, to spread the kills over it.
    timed = tmp_path / "timed"
    code, duration = run_child(tmp_path, timed, tmp_path / "timed.npz", 3)
    assert code == 0
    assert outcome(tmp_path / "timed.npz") == expected, "a backup changed the results"
    assert not timed.exists(), "the backup was not removed on completion"
    rng = np.random.default_rng()
    trials, report = scaled(3, 2), []
    for trial in range(trials):
        backup_dir, out = tmp_path / f"backup{trial}", tmp_path / f"out{trial}.npz"
        kills, resumed, torn = 0, 0, 0
        while True:
            if backup_dir.exists():
                names = os.listdir(backup_dir)
                resumed += any(n.endswith(".state.npz") for n in names)
                torn += any(n.endswith(".tmp") for n in names)
            # Kills within the first third of what is left, so that each trial is
            # killed several times; after 40 kills, the run may finish (it always
            # progresses: a backup every 3 steps, each run resuming from the last).
            delay = None if kills >= 40 else float(rng.uniform(0.0, 0.35)) * duration
            if (code := run_child(tmp_path, backup_dir, out, 3, kill_after=delay)[0]) == 0:
                break
            kills += 1
        assert outcome(out) == expected, f"trial {trial}: the resumed run differs"
        assert not backup_dir.exists()
        report.append((kills, resumed, torn))
    print(f"training {duration:.2f} s uninterrupted; (kills, resumed from a backup, kills "
          f"that tore a write) per trial: {report}")
    assert sum(r[1] for r in report) >= trials, f"too few kills left a backup: {report}"


# ----------------------------------------------------------- in this process
def fit(model, backup_dir, X=None, y=None, **changes):
    (X0, y0), validation = data(96)
    kwargs = dict(FIT, validation_data=validation, optimizer=cnnext.optim.Adam(lr=2e-3),
                  backup_dir=backup_dir, backup_steps=2)
    kwargs.update(changes)
    return model.fit(X0 if X is None else X, y0 if y is None else y, **kwargs)


def weights(model):
    return {name: a.tobytes() for name, a in model.parameters().items()}


class StopAfter:
    """A callback that interrupts training (KeyboardInterrupt) after epoch ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, model, epoch, logs):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_backup_is_removed_when_training_completes(tmp_path):
    directory = tmp_path / "backup"
    history = fit(build_model(), directory)
    assert len(history["loss"]) == FIT["epochs"]
    assert not directory.exists()
    # A directory holding other files is kept, with them.
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    fit(build_model(), directory)
    assert os.listdir(directory) == ["notes.txt"]


@pytest.mark.parametrize("order", ["checkpoints first", "states first"])
def test_a_kill_while_the_backup_is_removed_leaves_no_state_without_its_checkpoint(
        tmp_path, monkeypatch, order):
    # A state whose checkpoint is gone would make the next fit's resume fail.
    directory = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        fit(build_model(), directory, callbacks=[StopAfter(0)])
    own = _backup.Backup._own_files
    monkeypatch.setattr(_backup.Backup, "_own_files", lambda self: sorted(
        own(self), reverse=order == "states first"))
    files = [n for n in os.listdir(directory) if n != _backup._LOCK]
    assert any(_backup._STATE.match(n) for n in files)
    unlink = _backup._unlink
    for killed_after in range(len(files)):
        backup_dir = tmp_path / f"removed{killed_after}"
        shutil.copytree(directory, backup_dir)
        calls = []

        def unlink_until_killed(path, calls=calls, killed_after=killed_after):
            if len(calls) == killed_after:
                raise KeyboardInterrupt
            calls.append(path)
            unlink(path)

        monkeypatch.setattr(_backup, "_unlink", unlink_until_killed)
        with pytest.raises(KeyboardInterrupt):
            _backup.Backup("test", backup_dir).remove()
        monkeypatch.setattr(_backup, "_unlink", unlink)
        left = os.listdir(backup_dir)
        for name in left:
            if match := _backup._STATE.match(name):
                assert f"{_backup.PREFIX}{match.group(1)}.npz" in left, (killed_after, left)
        history = fit(build_model(), backup_dir, callbacks=[StopAfter(-1)])
        assert len(history["loss"]) == FIT["epochs"]


def on_path(model, path):
    """``model`` set to train on plans (compiled runs of steps) or layer by layer."""
    model._force_layers = path == "layer by layer"
    return model


@pytest.mark.parametrize("path", ["plans", "layer by layer"])
@pytest.mark.parametrize("resume_in", ["the same model object", "a new model object"])
def test_interrupted_fit_resumes_from_its_backup_bitwise(tmp_path, resume_in, path):
    # Dropout in training mode has no compiled steps (a fit holding one runs layer
    # by layer), so the plans case leaves it out.
    dropout = path == "layer by layer"
    expected = on_path(build_model(dropout), path)
    expected_history = fit(expected, None, backup_steps=None, callbacks=[StopAfter(-1)])
    directory = tmp_path / "backup"
    model = on_path(build_model(dropout), path)
    with pytest.raises(KeyboardInterrupt):
        fit(model, directory, callbacks=[StopAfter(1)])
    assert any(n.endswith(".state.npz") for n in os.listdir(directory))
    if resume_in == "a new model object":
        model = on_path(build_model(dropout), path)
    history = fit(model, directory, callbacks=[StopAfter(-1)])
    assert weights(model) == weights(expected)
    assert history["loss"] == expected_history["loss"]
    assert history["accuracy"] == expected_history["accuracy"]
    assert history["val_loss"] == expected_history["val_loss"]
    assert not directory.exists()
    assert model._compiled() == (path == "plans")


@pytest.mark.parametrize("change, field", [
    ({"epochs": 4}, "epochs"),
    ({"batch_size": 16}, "batch_size"),
    ({"seed": 12}, "seed"),
    ({"optimizer": cnnext.optim.SGD(lr=0.1)}, "optimizer"),
    ({"X": np.zeros((96, 12, 12), np.uint8)}, "X"),
    ({"model": "wider"}, "model"),
])
def test_backup_of_another_run_is_refused_before_anything_changes(tmp_path, change, field):
    directory = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        fit(build_model(), directory, callbacks=[StopAfter(0)])
    before = sorted(os.listdir(directory))
    model = build_model()
    if change.pop("model", None):
        model = cnnext.Sequential([Conv2D(1, 7, 3, seed=1), ReLU(), MaxPool2D(2), Flatten(),
                                   Dense(7 * 5 * 5, 10, seed=2)])
    initial = weights(model)
    with pytest.raises(_backup.BackupMismatch, match=rf"another training run .*{field}"):
        fit(model, directory, callbacks=[StopAfter(-1)], **change)
    assert weights(model) == initial
    assert sorted(os.listdir(directory)) == before


@pytest.mark.parametrize("damage", ["state truncated", "state garbage", "checkpoint changed",
                                    "checkpoint missing"])
def test_damaged_backup_is_refused_before_anything_changes(tmp_path, damage):
    directory = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        fit(build_model(), directory, callbacks=[StopAfter(0)])
    state = next(directory.glob("*.state.npz"))
    checkpoint = next(p for p in directory.glob("*.npz") if not p.name.endswith(".state.npz"))
    if damage == "state truncated":
        state.write_bytes(state.read_bytes()[:100])
    elif damage == "state garbage":
        state.write_bytes(b"garbage" * 100)
    elif damage == "checkpoint changed":
        model = build_model()
        model.optimizer = cnnext.optim.Adam()
        model.save(checkpoint)
    else:
        checkpoint.unlink()
    model = build_model()
    initial = weights(model)
    message = "checkpoint .* is missing" if damage == "checkpoint missing" else str(directory)
    with pytest.raises(cnnext.CheckpointError, match=message):
        fit(model, directory, callbacks=[StopAfter(-1)])
    assert weights(model) == initial


@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_backup_dir_that_cannot_be_written_is_refused_before_training(tmp_path, where):
    (tmp_path / "file").write_text("")
    directory = tmp_path / "file" if where == "a file" else tmp_path / "file" / "backup"
    model = build_model()
    initial = weights(model)
    with pytest.raises(OSError, match="backup_dir"):
        fit(model, directory)
    assert weights(model) == initial


def test_two_runs_cannot_share_a_backup_dir(tmp_path):
    directory = tmp_path / "backup"
    holder = _backup.Backup("another run", directory).open()
    try:
        with pytest.raises(RuntimeError, match="in use by another training run"):
            fit(build_model(), directory)
    finally:
        holder.close()

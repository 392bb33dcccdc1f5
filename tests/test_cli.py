"""The command line: `cnnext train | bench | info` and `python -m cnnext`, end to end."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from data_testing import fake_mnist, gzipped, idx_bytes, no_proxy, refused_url, sha256  # noqa: F401

import cnnext
from cnnext import cli, datasets
from cnnext.datasets import DownloadError
from cnnext.datasets._mnist import MNIST

ENTRY_POINT = Path(sys.executable).with_name("cnnext.exe" if sys.platform == "win32" else "cnnext")
# One epoch of per-image SGD on the sample's 4,000 training images: PyTorch
# reaches 86% with the same network and schedule; 80% leaves room for seeds.
SAMPLE_ACCURACY = 0.80


def run(command, tmp_path):
    # The inherited environment carries what sanitizer builds need (LD_PRELOAD...).
    return subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "CNNEXT_DATA": str(tmp_path / "data")},
    )


def printed_accuracy(text):
    """The test accuracy `cnnext train` printed, as a fraction."""
    match = re.search(r"^test accuracy: (\d+\.\d+)% \(loss \d+\.\d+, ([\d,]+) images\)$",
                      text, re.MULTILINE)
    assert match, text
    return float(match.group(1)) / 100


@pytest.fixture
def offline_mnist(monkeypatch, tmp_path):
    """MNIST with unreachable mirrors and an empty cache."""
    mirror = refused_url("/")
    monkeypatch.setattr(datasets, "MNIST", dataclasses.replace(MNIST, mirrors=(mirror, mirror)))
    monkeypatch.setenv("CNNEXT_DATA", str(tmp_path / "empty"))


# ------------------------------------------------------------ end to end


def test_entry_point_trains_on_the_sample_to_the_stated_accuracy(tmp_path):
    result = run([str(ENTRY_POINT), "train", "--dataset", "sample", "--epochs", "1",
                  "--seed", "1", "--threads", "1"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "data: the MNIST sample bundled with cnnext: 4,000 training and 1,000 test images" in out
    assert ("training: seed network (the notebook's Conv 8x3x3 -> MaxPool 2 -> Dense 10), 1 epoch, "
            "batch size 1, sgd lr 0.005, 1 thread, seed 1") in out
    assert printed_accuracy(out) >= SAMPLE_ACCURACY
    assert re.search(r"^total time: \d+\.\d s$", out, re.MULTILINE)
    # Not a terminal: fit's progress bar prints one summary line per epoch.
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch 1/1")]
    assert len(epoch_lines) == 1 and "4000/4000" in epoch_lines[0]
    assert re.search(r"\d+ img/s", epoch_lines[0]) and "accuracy=" in epoch_lines[0]


def test_python_dash_m_trains_and_saves_a_model_that_reloads(tmp_path):
    saved = tmp_path / "model.npz"
    result = run([sys.executable, "-P", "-m", "cnnext", "train", "--dataset", "sample",
                  "--epochs", "1", "--limit", "1000", "--seed", "3", "--threads", "1",
                  "--save", str(saved)],
                 tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"saved: {saved}" in result.stdout
    assert "data: the MNIST sample bundled with cnnext: 1,000 training" in result.stdout
    _, (x_test, y_test) = datasets.load_sample()
    _, accuracy = cnnext.load_model(saved).evaluate(x_test, y_test)
    assert abs(accuracy - printed_accuracy(result.stdout)) < 1e-4


def test_python_dash_m_usage_error_exits_2(tmp_path):
    result = run([sys.executable, "-P", "-m", "cnnext", "train", "--epochs", "0"], tmp_path)
    assert result.returncode == 2
    assert "python -m cnnext train: error: argument --epochs: expected an integer >= 1, got 0" \
        in result.stderr


# ------------------------------------------------------------- train, data


def test_no_dataset_offline_trains_on_the_sample_saying_so(offline_mnist, tmp_path, capsys):
    assert cli.main(["train", "--epochs", "1", "--limit", "50", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    data_lines = [line for line in out.splitlines() if line.startswith("data:")]
    assert data_lines == [
        "data: the MNIST sample bundled with cnnext (MNIST is not in "
        f"{tmp_path / 'empty' / 'mnist'} and could not be downloaded; --dataset mnist says "
        "why): 50 training and 1,000 test images"
    ]
    assert printed_accuracy(out) > 0.1


def test_no_dataset_uses_mnist_when_cached(monkeypatch, tmp_path, capsys):
    arrays = fake_mnist(n_train=30, n_test=7)
    files = {}
    for role, datafile in MNIST.files.items():
        blob = gzipped(idx_bytes(arrays[role]))
        (tmp_path / "mnist").mkdir(exist_ok=True)
        (tmp_path / "mnist" / datafile.name).write_bytes(blob)
        files[role] = dataclasses.replace(datafile, sha256=sha256(blob))
    monkeypatch.setattr(datasets, "MNIST", dataclasses.replace(MNIST, mirrors=(), files=files))
    monkeypatch.setenv("CNNEXT_DATA", str(tmp_path))
    assert cli.main(["train", "--epochs", "1", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "data: MNIST: 30 training and 7 test images" in out
    printed_accuracy(out)


def test_dataset_mnist_offline_fails_in_one_line(offline_mnist, tmp_path, capsys):
    assert cli.main(["train", "--dataset", "mnist"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("cnnext train: error: DownloadError: MNIST: could not download ")
    assert "Connection refused" in err and "CNNEXT_DATA" in err
    assert f"in {tmp_path / 'empty' / 'mnist'}" in err


def test_debug_shows_the_traceback(offline_mnist):
    with pytest.raises(DownloadError):
        cli.main(["train", "--dataset", "mnist", "--debug"])
    with pytest.raises(DownloadError):
        cli.main(["--debug", "train", "--dataset", "mnist"])


def test_threads_and_optimizer_options_are_used(capsys, num_threads):
    assert cli.main(["train", "--dataset", "sample", "--limit", "20", "--epochs", "2",
                     "--threads", "1", "--optimizer", "adam", "--lr", "0.001",
                     "--batch-size", "8", "--seed", "5"]) == 0
    captured = capsys.readouterr()
    assert ("training: seed network (the notebook's Conv 8x3x3 -> MaxPool 2 -> Dense 10), "
            "2 epochs, batch size 8, adam lr 0.001, 1 thread, seed 5") in captured.out
    assert cnnext.get_num_threads() == 1
    assert [line[:9] for line in captured.err.splitlines()] == ["epoch 1/2", "epoch 2/2"]


def test_same_seed_same_result(capsys, num_threads):
    outputs = []
    for _ in range(2):
        assert cli.main(["train", "--dataset", "sample", "--limit", "200", "--epochs", "1",
                         "--seed", "11", "--model", "lenet5", "--batch-size", "16",
                         "--threads", "1"]) == 0
        outputs.append(printed_accuracy(capsys.readouterr().out))
    assert outputs[0] == outputs[1]


def test_runtime_error_is_one_line_exit_1(tmp_path, capsys):
    target = tmp_path / "missing-dir" / "model.npz"
    code = cli.main(["train", "--dataset", "sample", "--limit", "10", "--epochs", "1",
                     "--save", str(target)])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err[-1].startswith("cnnext train: error: ") and str(target.parent) in err[-1]


@pytest.mark.parametrize("where", ["a missing directory", "a directory", "a file as directory"])
def test_save_destination_is_checked_before_training(tmp_path, capsys, monkeypatch, where):
    """A --save that cannot be written fails before the data is loaded or anything
    trained, and the message names the user's path (not a temporary file)."""
    (tmp_path / "file").write_text("")
    target = {"a missing directory": tmp_path / "missing-dir" / "model.npz",
              "a directory": tmp_path,
              "a file as directory": tmp_path / "file" / "model.npz"}[where]

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(cnnext.Sequential, "fit", no_training)
    monkeypatch.setattr(cli, "load_data", no_training)
    code = cli.main(["train", "--dataset", "sample", "--save", str(target)])
    captured = capsys.readouterr()
    assert code == 1
    assert "training" not in captured.out
    assert captured.err.startswith("cnnext train: error: ") and str(target) in captured.err
    assert ".tmp" not in captured.err
    assert os.listdir(tmp_path) == ["file"]


def test_backup_dir_that_cannot_be_used_is_refused_before_loading_data(tmp_path, capsys,
                                                                        monkeypatch):
    (tmp_path / "file").write_text("")

    def no_training(*args, **kwargs):
        raise AssertionError("data loaded")

    monkeypatch.setattr(cli, "load_data", no_training)
    for target in (tmp_path / "file", tmp_path / "file" / "backup"):
        assert cli.main(["train", "--backup-dir", str(target)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("cnnext train: error: NotADirectoryError") and str(target) in err


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_killed_train_resumes_with_the_same_command(tmp_path):
    """`cnnext train --backup-dir D` killed mid-run: the same command (no --seed: the
    backup knows the seed drawn) resumes it, and the saved model equals that of an
    uninterrupted run with that seed."""
    backup = tmp_path / "backup"
    command = [sys.executable, "-m", "cnnext", "train", "--dataset", "sample", "--limit", "600",
               "--epochs", "3", "--batch-size", "4", "--threads", "1", "--backup-dir",
               str(backup), "--backup-steps", "10", "--save", str(tmp_path / "resumed.npz")]
    killed = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        seed = None
        for line in killed.stdout:
            if line.startswith("training:"):
                seed = int(line.rsplit("seed", 1)[1])
                break
        # Wait for a backup within the run, then kill.
        deadline = time.monotonic() + 600
        while not list(backup.glob("*.state.npz")) and time.monotonic() < deadline:
            assert killed.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
    finally:
        if killed.poll() is None:
            killed.kill()
        killed.stdout.close()
    assert seed is not None and list(backup.glob("*.state.npz"))
    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: the backup in {backup}" in resumed.stdout
    assert f"seed {seed}" in resumed.stdout
    assert not backup.exists()
    reference = [*command[:command.index("--backup-dir")], "--seed", str(seed), "--save",
                 str(tmp_path / "reference.npz")]
    uninterrupted = subprocess.run(reference, cwd=tmp_path, capture_output=True, text=True,
                                   timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    accuracy = [line for line in uninterrupted.stdout.splitlines() if "test accuracy" in line]
    assert accuracy and accuracy[0] in resumed.stdout
    one, two = (cnnext.load_model(tmp_path / name).parameters()
                for name in ("resumed.npz", "reference.npz"))
    assert all(one[name].tobytes() == two[name].tobytes() for name in one)


def test_interrupt_exits_130_in_one_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cnnext.Sequential, "fit", interrupted)
    assert cli.main(["train", "--dataset", "sample", "--limit", "10"]) == 130
    assert capsys.readouterr().err == "cnnext: interrupted\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: COMMAND"),
        (["fit"], "invalid choice: 'fit'"),
        (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
        (["train", "--epochs", "x"], "invalid positive integer value: 'x'"),
        (["train", "--batch-size", "0"], "expected an integer >= 1, got 0"),
        (["train", "--lr", "-0.1"], "expected a finite number > 0, got -0.1"),
        (["train", "--lr", "nan"], "expected a finite number > 0, got nan"),
        (["train", "--threads", "0"], "expected an integer >= 1, got 0"),
        (["train", "--seed", "-1"], "expected an integer in [0, 2**32), got -1"),
        (["train", "--seed", "4294967296"], "expected an integer in [0, 2**32), got 4294967296"),
        (["train", "--lr", "0"], "expected a finite number > 0, got 0"),
        (["train", "--backup-seconds", "inf"], "expected a finite number > 0, got inf"),
        (["convert", "m.onnx", "m.npz", "--input-shape", "1,0,28"],
         "invalid shape value: '1,0,28'"),
        (["train", "--limit", "0"], "expected an integer >= 1, got 0"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["info", "extra"], "unrecognized arguments: extra"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------- info


def test_info_shows_config_and_the_data_cache(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CNNEXT_DATA", str(tmp_path))
    (tmp_path / "mnist").mkdir()
    for datafile in list(MNIST.files.values())[:2]:
        (tmp_path / "mnist" / datafile.name).write_bytes(bytes(2**20))
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cnnext:\n") and f"version            {cnnext.__version__}" in out
    data = out[out.index("\ndata:\n"):].splitlines()[2:]
    assert data[0] == f"  home               {tmp_path} (from CNNEXT_DATA)"
    assert data[1] == f"  mnist              2/4 files in {tmp_path / 'mnist'} (2.0 MiB)"
    assert data[2].startswith("  fashion-mnist      ")
    assert data[3].startswith("  sample             bundled, ") and "mnist_sample.npz" in data[3]


# ------------------------------------------------------------------ bench


def test_bench_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cnnext bench") and "--quick" in out and "--json" in out


def test_bench_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", "--no-such-option"])
    assert info.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_sample_images_reach_the_model_unchanged(monkeypatch, capsys):
    seen = {}
    fit = cnnext.Sequential.fit

    def spy(self, X, y, **kwargs):
        seen["X"], seen["y"] = X, y
        return fit(self, X, y, **kwargs)

    monkeypatch.setattr(cnnext.Sequential, "fit", spy)
    assert cli.main(["train", "--dataset", "sample", "--limit", "40", "--epochs", "1"]) == 0
    (x_train, y_train), _ = datasets.load_sample()
    assert seen["X"].dtype == np.uint8
    np.testing.assert_array_equal(seen["X"], x_train[:40])
    np.testing.assert_array_equal(seen["y"], y_train[:40])

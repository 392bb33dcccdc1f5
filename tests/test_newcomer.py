"""What a new user meets first: History, `cnnext --version`, the CLI's words, offline advice."""

import dataclasses
import io
import json
import subprocess
import sys
import types

import numpy as np
import pytest
from data_testing import no_proxy, refused_url  # noqa: F401

import cnnext
from cnnext import Sequential, cli, datasets, models
from cnnext.datasets import DownloadError
from cnnext.datasets._mnist import FASHION_MNIST, MNIST, load_dataset
from cnnext.history import History
from cnnext.layers import Conv2D, Dense, Flatten, MaxPool2D

PUBLIC_MODULES = ["cnnext", "cnnext.functional", "cnnext.layers", "cnnext.optim",
                  "cnnext.datasets", "cnnext.models", "cnnext.compat", "cnnext.history"]


# ------------------------------------------------------------------ History


def small_fit(**kwargs):
    (x, y), (xt, yt) = datasets.load_sample()
    model = models.seed_cnn(seed=0)
    history = model.fit(x[:64], y[:64], epochs=2, batch_size=16, seed=0, progress=False,
                        **kwargs)
    return model, history, (xt[:40], yt[:40])


def test_fit_returns_a_history_usable_as_the_dict_it_was():
    _, history, _ = small_fit(validation_data=tuple(a[:40] for a in datasets.load_sample()[1]))
    assert isinstance(history, History) and isinstance(history, dict)
    assert set(history) == {"loss", "accuracy", "seconds", "val_loss", "val_accuracy"}
    assert history.epochs == 2 and all(len(v) == 2 for v in history.values())
    # Every figure a Python float, never a NumPy scalar: JSON takes it as it is.
    assert all(type(value) is float for values in history.values() for value in values)
    assert json.loads(json.dumps(history)) == dict(history)
    assert history.last() == {key: values[-1] for key, values in history.items()}
    assert repr(history).startswith("History({'loss': [")


def test_history_keeps_counts_as_ints_and_converts_numpy_scalars():
    history = History(["loss"])
    history.append({"loss": np.float32(0.5), "skipped_steps": np.int64(3)})
    assert history == {"loss": [0.5], "skipped_steps": [3]}
    assert type(history["loss"][0]) is float and type(history["skipped_steps"][0]) is int
    assert History().epochs == 0 and History().last() == {}


def test_history_plot_refuses_an_empty_history():
    with pytest.raises(ValueError, match="no epoch recorded"):
        History(["loss"]).plot()


def test_history_plot_draws_losses_and_accuracies(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    _, history, _ = small_fit()
    path = tmp_path / "curves.png"
    open_figures = plt.get_fignums()
    figure = history.plot(path, title="seed network")
    # Saved without axes given: made outside pyplot, so nothing is left open.
    assert plt.get_fignums() == open_figures
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss_ax, rate_ax = figure.axes
    assert [line.get_label() for line in loss_ax.lines] == ["loss"]
    assert [line.get_label() for line in rate_ax.lines] == ["accuracy"]
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), history["loss"])
    np.testing.assert_array_equal(loss_ax.lines[0].get_xdata(), [1, 2])
    figure_2, axes = plt.subplots()
    assert history.plot(ax=axes) is figure_2
    plt.close(figure_2)


def test_history_plot_imports_matplotlib_only_when_called():
    code = ("import sys, cnnext; from cnnext import models, datasets; "
            "(x, y), _ = datasets.load_sample(); "
            "models.seed_cnn(seed=0).fit(x[:8], y[:8], epochs=1, progress=False); "
            "print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------- CLI


def test_version_option_prints_the_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"cnnext {cnnext.__version__}\n"


def test_adam_gets_its_own_default_learning_rate(capsys, num_threads):
    assert cli.main(["train", "--dataset", "sample", "--limit", "16", "--epochs", "1",
                     "--optimizer", "adam", "--batch-size", "8", "--seed", "1",
                     "--threads", "1"]) == 0
    assert ", adam lr 0.001, " in capsys.readouterr().out
    assert cli.main(["train", "--dataset", "sample", "--limit", "16", "--epochs", "1",
                     "--seed", "1", "--threads", "1"]) == 0
    assert ", sgd lr 0.005, " in capsys.readouterr().out


def test_lenet5_is_named_in_words(capsys, num_threads):
    assert cli.main(["train", "--dataset", "sample", "--limit", "16", "--epochs", "1",
                     "--model", "lenet5", "--batch-size", "16", "--seed", "1",
                     "--threads", "1"]) == 0
    assert "training: LeNet-5, 1 epoch, batch size 16" in capsys.readouterr().out


def test_threads_above_the_core_count_warn_once(capsys, num_threads, monkeypatch):
    monkeypatch.setattr(cli, "available_cores", lambda: 1)
    assert cli.main(["train", "--dataset", "sample", "--limit", "16", "--epochs", "2",
                     "--threads", "3", "--seed", "1"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: --threads 3 is more than the 1 core this process can use; "
                        "the extra threads wait for a core and slow training down"]
    assert cli.main(["train", "--dataset", "sample", "--limit", "16", "--epochs", "1",
                     "--threads", "1", "--seed", "1"]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_train_plot_writes_the_training_curves(tmp_path, capsys, num_threads):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    assert cli.main(["train", "--dataset", "sample", "--limit", "32", "--epochs", "2",
                     "--threads", "1", "--seed", "2", "--plot", str(path)]) == 0
    assert f"training curves: {path}" in capsys.readouterr().out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_plot_without_matplotlib_fails_before_training(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises
    assert cli.main(["train", "--dataset", "sample", "--plot", "x.png"]) == 1
    captured = capsys.readouterr()
    assert captured.err == ("cnnext train: error: RuntimeError: --plot needs matplotlib, which is "
                            "not installed (pip install matplotlib)\n")
    assert "training:" not in captured.out


def test_bench_report_speaks_the_users_words():
    from cnnext._bench import report

    with open(report.__file__, encoding="utf-8") as file:
        source = file.read()
    assert "issue" not in source.lower()


# ------------------------------------------------------------ offline advice


def test_mnist_offline_names_the_bundled_sample(monkeypatch, tmp_path):
    mirror = refused_url("/")
    monkeypatch.setattr(datasets, "MNIST", dataclasses.replace(MNIST, mirrors=(mirror,)))
    with pytest.raises(DownloadError) as info:
        datasets.load_mnist(tmp_path, progress=False)
    message = str(info.value)
    assert f"in {tmp_path / 'mnist'}" in message
    assert "cnnext.datasets.load_sample()" in message


def test_fashion_mnist_offline_names_the_debian_package(tmp_path):
    mirror = refused_url("/")
    # Not the real system directory: the advice must show whether or not it is installed.
    dataset = dataclasses.replace(FASHION_MNIST, mirrors=(mirror,), system_dirs=())
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(dataset, tmp_path, download=False)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    with pytest.raises(DownloadError) as info:
        load_dataset(dataset, tmp_path, progress=False)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert f"in {tmp_path / 'fashion-mnist'}" in str(info.value)


# -------------------------------------------------------------- public names


def test_subpackages_are_attributes_of_cnnext():
    code = ("import cnnext; print(cnnext.datasets.load_sample.__name__, "
            "cnnext.functional.conv2d.__name__, cnnext.history.History.__name__)")
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["load_sample", "conv2d", "History"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_show_only_their_public_names(name):
    import importlib

    module = importlib.import_module(name)
    public = {n for n in dir(module) if not n.startswith("_")
              and not isinstance(getattr(module, n), types.ModuleType)}
    assert public <= set(module.__all__), sorted(public - set(module.__all__))
    assert all(hasattr(module, n) for n in module.__all__)


def test_optim_does_not_show_the_modules_it_imports():
    assert not {"copy", "functools", "math", "np"} & set(dir(cnnext.optim))


# ------------------------------------------------------------------ summary


def test_summary_shows_shapes_when_the_first_layer_fixes_them():
    out = io.StringIO()
    Sequential([Dense(4, 3), Dense(3, 2)]).summary(file=out)
    text = out.getvalue()
    assert "input (4,)" in text and "(3,)" in text and "(2,)" in text


def test_summary_without_a_known_shape_says_how_to_get_one():
    out = io.StringIO()
    model = Sequential([Conv2D(1, 8, 3), MaxPool2D(2), Flatten(), Dense(8 * 13 * 13, 10)])
    model.summary(file=out)
    assert "pass input_shape=" in out.getvalue()
    out = io.StringIO()
    (x, y), _ = datasets.load_sample()
    model.fit(x[:8], y[:8], epochs=1, progress=False)
    model.summary(file=out)
    assert "input (1, 28, 28)" in out.getvalue() and "(8, 13, 13)" in out.getvalue()

"""Dataset loading: data home, cache, system copies, downloads, bundled sample, Debian copy."""

import gzip
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from data_testing import (
    LocalServer,
    Route,
    fake_mnist,
    gzipped,
    idx_bytes,
    no_proxy,  # noqa: F401 (an autouse fixture)
    refused_url,
    sha256,
)

from cnnext import datasets
from cnnext.datasets import DataFileError, DownloadError, get_data_home, load_sample
from cnnext.datasets._home import default_cache_dir
from cnnext.datasets._mnist import DataFile, Dataset, load_dataset

NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def make_dataset(arrays, digest_of="file", mirrors=(), system_dirs=()):
    """A Dataset of the given arrays, pinned to their digests, and the bytes of its files."""
    blobs, files = {}, {}
    for role, array in arrays.items():
        content = idx_bytes(array)
        blobs[role] = gzipped(content)
        digest = sha256(blobs[role] if digest_of == "file" else content)
        files[role] = DataFile(NAMES[role], digest, digest_of)
    dataset = Dataset("toy", "Toy", tuple(mirrors), files, tuple(map(str, system_dirs)))
    return dataset, blobs


def put_files(directory, blobs):
    directory.mkdir(parents=True, exist_ok=True)
    for role, blob in blobs.items():
        (directory / NAMES[role]).write_bytes(blob)


def assert_loaded(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    for got, role in [(x_train, "train_images"), (x_test, "test_images")]:
        assert got.dtype == np.uint8 and got.shape[1:] == (28, 28)
        np.testing.assert_array_equal(got, arrays[role])
    for got, role in [(y_train, "train_labels"), (y_test, "test_labels")]:
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, arrays[role])


# ----------------------------------------------------------------- data home


def test_data_home_argument_then_environment_then_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNEXT_DATA", str(tmp_path / "env"))
    assert get_data_home(tmp_path / "arg") == tmp_path / "arg"
    assert get_data_home() == tmp_path / "env"
    monkeypatch.setenv("CNNEXT_DATA", "")
    assert get_data_home() == default_cache_dir()
    assert get_data_home("~/x") == Path.home() / "x"


@pytest.mark.parametrize(
    "platform, env, expected",
    [
        ("linux", {"XDG_CACHE_HOME": "/xdg"}, "/xdg/cnnext"),
        ("linux", {"XDG_CACHE_HOME": "relative"}, "HOME/.cache/cnnext"),
        ("linux", {}, "HOME/.cache/cnnext"),
        ("darwin", {"XDG_CACHE_HOME": "/xdg"}, "HOME/Library/Caches/cnnext"),
        ("win32", {"LOCALAPPDATA": "/local"}, "/local/cnnext/Cache"),
    ],
)
@pytest.mark.skipif(os.name == "nt", reason="the expected paths are POSIX paths")
def test_default_cache_dir_per_platform(monkeypatch, tmp_path, platform, env, expected):
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    for name in ("XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_cache_dir() == Path(expected.replace("HOME", str(tmp_path)))


@pytest.mark.parametrize("loader", [datasets.load_mnist, datasets.load_fashion_mnist])
def test_data_home_of_the_wrong_type_names_the_loader(loader):
    with pytest.raises(TypeError, match=rf"{loader.__name__}: data_home must be a path.*got int"):
        loader(data_home=3)


# ------------------------------------------------------- finding and loading


def test_loads_verified_files_from_the_cache(tmp_path):
    arrays = fake_mnist()
    dataset, blobs = make_dataset(arrays)
    put_files(tmp_path / "toy", blobs)
    assert_loaded(load_dataset(dataset, tmp_path, download=False), arrays)


def test_environment_variable_points_at_the_cache(tmp_path, monkeypatch):
    arrays = fake_mnist()
    dataset, blobs = make_dataset(arrays)
    put_files(tmp_path / "toy", blobs)
    monkeypatch.setenv("CNNEXT_DATA", str(tmp_path))
    assert_loaded(load_dataset(dataset, download=False), arrays)


def test_system_copy_is_verified_by_its_decompressed_content(tmp_path):
    arrays = fake_mnist()
    dataset, blobs = make_dataset(arrays, digest_of="content", system_dirs=[tmp_path / "sys"])
    # Recompressed by a distributor: other .gz bytes, the same content.
    recompressed = {role: gzipped(gzip.decompress(blob), level=1) for role, blob in blobs.items()}
    assert recompressed != blobs
    put_files(tmp_path / "sys", recompressed)
    assert_loaded(load_dataset(dataset, tmp_path / "home", download=False), arrays)
    assert not (tmp_path / "home").exists()


def test_corrupt_cached_file_is_refused_naming_it(tmp_path):
    arrays = fake_mnist()
    dataset, blobs = make_dataset(arrays)
    put_files(tmp_path / "toy", blobs)
    path = tmp_path / "toy" / NAMES["test_labels"]
    path.write_bytes(gzipped(idx_bytes(arrays["test_labels"][::-1])))
    with pytest.raises(DataFileError, match="SHA-256 of the file is") as info:
        load_dataset(dataset, tmp_path, download=False)
    assert str(path) in str(info.value) and "delete it to download it again" in str(info.value)


def test_files_of_mismatched_lengths_are_refused(tmp_path):
    arrays = fake_mnist()
    arrays["train_labels"] = arrays["train_labels"][:-1]
    dataset, blobs = make_dataset(arrays)
    put_files(tmp_path / "toy", blobs)
    with pytest.raises(DataFileError, match=r"Toy train files hold images uint8\(12, 28, 28\)"):
        load_dataset(dataset, tmp_path, download=False)


def test_missing_file_without_download_says_where_to_put_it(tmp_path):
    dataset, _ = make_dataset(fake_mnist())
    with pytest.raises(FileNotFoundError, match="download=False") as info:
        load_dataset(dataset, tmp_path, download=False)
    assert f"in {tmp_path / 'toy'}" in str(info.value) and "CNNEXT_DATA" in str(info.value)


def test_downloads_missing_files_once_into_the_cache(tmp_path):
    arrays = fake_mnist()
    with LocalServer() as server:
        dataset, blobs = make_dataset(arrays, mirrors=[server.url("/bad/"), server.url("/m/")])
        for role, blob in blobs.items():
            server.routes[f"/m/{NAMES[role]}"] = Route(blob)
            server.routes[f"/bad/{NAMES[role]}"] = Route(blob[::-1])
        # One file already cached: only the other three are fetched.
        put_files(tmp_path / "toy", {"train_labels": blobs["train_labels"]})
        assert_loaded(load_dataset(dataset, tmp_path, progress=False), arrays)
        assert len(server.requests) == 6
        assert_loaded(load_dataset(dataset, tmp_path, progress=False), arrays)
        assert len(server.requests) == 6
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted(NAMES.values())


def test_offline_fails_fast_with_instructions(tmp_path):
    mirror = refused_url("/")
    dataset, _ = make_dataset(fake_mnist(), mirrors=[mirror, mirror])
    with pytest.raises(DownloadError) as info:
        load_dataset(dataset, tmp_path, progress=False)
    message = str(info.value)
    assert message.startswith("Toy: could not download train-images-idx3-ubyte.gz")
    assert message.count("Connection refused") == 2
    assert f"put its four files ({', '.join(NAMES.values())}) in {tmp_path / 'toy'}" in message
    assert "or set CNNEXT_DATA" in message
    assert list((tmp_path / "toy").iterdir()) == []


# ---------------------------------------------------------- bundled sample


def test_sample_is_a_balanced_interleaved_split_of_real_digits():
    (x_train, y_train), (x_test, y_test) = load_sample()
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int64
    np.testing.assert_array_equal(y_train, np.tile(np.arange(10), 400))
    np.testing.assert_array_equal(y_test, np.tile(np.arange(10), 100))
    train_rows = {image.tobytes() for image in x_train}
    assert len(train_rows) == 4000
    assert not train_rows & {image.tobytes() for image in x_test}
    # MNIST digits: a dark background (border pixels 0) with saturated strokes.
    for images in (x_train, x_test):
        assert images[:, 0, :].max() == 0 and images.max() == 255
        assert 20 < images.mean() < 50


def test_sample_matches_its_provenance_note():
    (x_train, _), (x_test, _) = load_sample()
    note = Path(datasets.__file__).parent / "_data" / "mnist_sample_LICENSE.txt"
    text = note.read_text()
    assert "CC BY-SA 3.0" in text and "LeCun" in text and "Sebastian Raschka" in text
    assert "5,000 images" in text and len(x_train) + len(x_test) == 5000


# ----------------------------------------------- Debian's Fashion-MNIST copy

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# sha256 of the decompressed files (shared/mnist_sha256.txt, checked on Debian's copy).
FASHION_CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz":
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz":
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_loads_without_download(tmp_path):
    for name, digest in FASHION_CONTENT_SHA256.items():
        content = gzip.decompress((DEBIAN_DIR / name).read_bytes())
        assert hashlib.sha256(content).hexdigest() == digest
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(tmp_path, download=False)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    assert not (tmp_path / "fashion-mnist").exists()


def test_no_home_directory_is_a_clear_error_not_a_runtime_error(monkeypatch, capsys):
    """HOME unset for a uid the password database does not know (a container run as an
    arbitrary user): Path.home raises RuntimeError; cnnext says what to set instead,
    `cnnext info` still reports, and `cnnext train` falls back to the bundled sample."""
    from cnnext import cli

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    for variable in ("CNNEXT_DATA", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(FileNotFoundError, match="set CNNEXT_DATA"):
        datasets.get_data_home()
    with pytest.raises(FileNotFoundError, match="set CNNEXT_DATA"):
        datasets.load_mnist(download=False)
    assert cli.main(["info"]) == 0
    assert "set CNNEXT_DATA" in capsys.readouterr().out
    (x, _), _, source = cli.load_data(None)
    assert len(x) == 4000 and "sample" in source

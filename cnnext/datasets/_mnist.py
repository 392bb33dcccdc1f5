"""MNIST and Fashion-MNIST: where their files are found, how they are verified and loaded.

Each of the four files of a dataset is looked for, in order, in the cache
(``<data home>/<dataset>/``), in system directories (Debian's
``dataset-fashion-mnist`` package), and finally downloaded into the cache from
the dataset's mirrors.  Whatever the source, a file is used only after its
SHA-256 matched the one pinned here.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _download
from ._download import DownloadError
from ._home import ENV_VAR, check_data_home, get_data_home
from ._idx import DEFAULT_MAX_BYTES, DataFileError, decompress_capped, parse_idx, read_file_capped

IMAGE_SHAPE = (28, 28)
ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class DataFile:
    name: str
    sha256: str
    # "file": digest of the .gz bytes; "content": of the decompressed IDX data
    # (Debian recompressed Fashion-MNIST, so only its content is stable).
    digest_of: str


@dataclass(frozen=True)
class Dataset:
    key: str  # the cache subdirectory and the CLI's --dataset value
    title: str
    mirrors: tuple  # base URLs, tried in order
    files: dict  # role (see ROLES) -> DataFile
    system_dirs: tuple = ()
    offline_hint: str = ""  # another way to get going without network

    def directory(self, data_home=None):
        return get_data_home(data_home) / self.key


MNIST = Dataset(
    key="mnist",
    title="MNIST",
    # The canonical yann.lecun.com copy has been gone since 2024.
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    offline_hint=(" To train offline right away, cnnext.datasets.load_sample() returns 5,000 "
                  "real MNIST images bundled with cnnext (4,000 to train, 1,000 to test)."),
    files={
        "train_images": DataFile(
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", "file"),
        "train_labels": DataFile(
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", "file"),
        "test_images": DataFile(
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", "file"),
        "test_labels": DataFile(
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", "file"),
    },
)

FASHION_MNIST = Dataset(
    key="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    files={
        "train_images": DataFile(
            "train-images-idx3-ubyte.gz",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", "content"),
        "train_labels": DataFile(
            "train-labels-idx1-ubyte.gz",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", "content"),
        "test_images": DataFile(
            "t10k-images-idx3-ubyte.gz",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", "content"),
        "test_labels": DataFile(
            "t10k-labels-idx1-ubyte.gz",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", "content"),
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    offline_hint=(" On Debian or Ubuntu, `apt-get install dataset-fashion-mnist` installs "
                  "them in /usr/share/datasets/fashion-mnist, where cnnext finds them."),
)

DATASETS = {dataset.key: dataset for dataset in (MNIST, FASHION_MNIST)}


def find_file(dataset, datafile, data_home=None):
    """The path of ``datafile`` in the cache or a system directory, or None (not verified)."""
    for directory in (dataset.directory(data_home), *map(Path, dataset.system_dirs)):
        path = directory / datafile.name
        if path.is_file():
            return path
    return None


def read_verified(path, datafile):
    """The decompressed content of ``path`` once its SHA-256 matched ``datafile``'s."""
    data = read_file_capped(path, DEFAULT_MAX_BYTES)
    content = decompress_capped(data, str(path), DEFAULT_MAX_BYTES)
    hashed = data if datafile.digest_of == "file" else content
    digest = hashlib.sha256(hashed).hexdigest()
    if digest != datafile.sha256:
        what = "file" if datafile.digest_of == "file" else "decompressed content"
        raise DataFileError(
            f"{path}: SHA-256 of the {what} is {digest}, expected {datafile.sha256} "
            "(a corrupt or different file; delete it to download it again)"
        )
    return content


def load_dataset(dataset, data_home=None, download=True, progress=True):
    """((X_train, y_train), (X_test, y_test)) of ``dataset``; see ``load_mnist``."""
    check_data_home(data_home, f"load_{dataset.key.replace('-', '_')}")
    arrays = {}
    for role, datafile in dataset.files.items():
        path = find_file(dataset, datafile, data_home)
        if path is None:
            path = _fetch(dataset, datafile, data_home, download, progress)
        arrays[role] = parse_idx(read_verified(path, datafile), str(path))
    return (
        _checked_split(arrays, "train", dataset),
        _checked_split(arrays, "test", dataset),
    )


def _fetch(dataset, datafile, data_home, download, progress):
    directory = dataset.directory(data_home)
    advice = (
        f"To use {dataset.title} without network, put its four files "
        f"({', '.join(f.name for f in dataset.files.values())}) in {directory}, "
        f"or set {ENV_VAR} to a directory whose {dataset.key}/ subdirectory holds them."
        f"{dataset.offline_hint}"
    )
    if not download:
        raise FileNotFoundError(
            f"{dataset.title}: {datafile.name} is not in {directory} and download=False. "
            + advice
        )
    urls = [mirror + datafile.name for mirror in dataset.mirrors]
    try:
        return _download.download(urls, directory / datafile.name, datafile.sha256,
                                  digest_of=datafile.digest_of, progress=progress)
    except DownloadError as exc:
        raise DownloadError(f"{dataset.title}: {exc}. {advice}") from None


def _checked_split(arrays, split, dataset):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if (images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE
            or labels.dtype != np.uint8 or labels.shape != images.shape[:1]):
        raise DataFileError(
            f"{dataset.title} {split} files hold images {images.dtype}{images.shape} and "
            f"labels {labels.dtype}{labels.shape}; expected uint8 (N, 28, 28) and uint8 (N,)"
        )
    return images, labels.astype(np.int64)

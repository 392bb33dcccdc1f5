"""Datasets: MNIST and Fashion-MNIST (verified downloads, cache) and a bundled MNIST sample.

``load_mnist()`` and ``load_fashion_mnist()`` return
``((X_train, y_train), (X_test, y_test))``: uint8 images of shape (N, 28, 28)
and int64 labels.  Files are looked for in the data home (the ``data_home``
argument, else ``$CNNEXT_DATA``, else the user cache directory, e.g.
``~/.cache/cnnext``), then in system copies (Debian's ``dataset-fashion-mnist``
under /usr/share/datasets/fashion-mnist), and are downloaded otherwise.  Every
file is checked against a pinned SHA-256 before use.

``load_sample()`` needs neither network nor cache: 5,000 real MNIST images
ship inside the package.
"""

import numpy as np
import numpy.typing as npt

from .._typing import Path
from ._download import DownloadError
from ._home import get_data_home
from ._idx import DataFileError, read_idx
from ._mnist import FASHION_MNIST, MNIST, load_dataset
from ._sample import load_sample

__all__ = [
    "DataFileError",
    "DownloadError",
    "get_data_home",
    "load_fashion_mnist",
    "load_mnist",
    "load_sample",
    "read_idx",
]


# ((X_train, y_train), (X_test, y_test)): uint8 images, int64 labels.
Split = tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]


def load_mnist(data_home: Path | None = None, *, download: bool = True,
               progress: bool = True) -> tuple[Split, Split]:
    """load_mnist(data_home=None, *, download=True, progress=True)

    The MNIST handwritten digits: 60,000 training and 10,000 test images.

    MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges
    (CC BY-SA 3.0).  The four files (about 11 MB) are downloaded once into
    ``<data home>/mnist/`` from the mirrors the large frameworks use.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Cache directory; default ``$CNNEXT_DATA`` or the user cache directory
        (see ``get_data_home``).
    download : bool
        Download missing files; when False a missing file raises
        FileNotFoundError.
    progress : bool
        Show download progress on stderr.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        X uint8 of shape (60000, 28, 28) and (10000, 28, 28), pixel values
        0-255; y int64 of shape (60000,) and (10000,), digits 0-9.

    Raises
    ------
    DownloadError
        A file is missing and no mirror delivered it (offline, for instance);
        the message says where to put the files instead.
    DataFileError
        A file in the cache does not have the expected SHA-256.

    Examples
    --------
    >>> from cnnext.datasets import load_mnist
    >>> (X, y), (Xt, yt) = load_mnist()                  # doctest: +SKIP
    >>> X.shape, Xt.shape                                # doctest: +SKIP
    ((60000, 28, 28), (10000, 28, 28))

    Without network, and without the files in the data home, this raises a
    ``DownloadError`` saying where to put them; ``load_sample()`` works
    offline:

    >>> from cnnext.datasets import load_sample
    >>> try:
    ...     (X, y), (Xt, yt) = load_mnist(download=False)
    ... except FileNotFoundError:
    ...     (X, y), (Xt, yt) = load_sample()
    """
    return load_dataset(MNIST, data_home, download=download, progress=progress)


def load_fashion_mnist(data_home: Path | None = None, *, download: bool = True,
                       progress: bool = True) -> tuple[Split, Split]:
    """load_fashion_mnist(data_home=None, *, download=True, progress=True)

    Fashion-MNIST (Zalando Research, MIT licence): 60,000 training and
    10,000 test images of clothing in 10 classes, in MNIST's format.

    Found without download in the data home's ``fashion-mnist/`` directory or
    where Debian's ``dataset-fashion-mnist`` package installs it
    (/usr/share/datasets/fashion-mnist); downloaded (about 30 MB) otherwise.
    The SHA-256 checked is that of the decompressed files, since Debian
    recompressed them.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Cache directory; default ``$CNNEXT_DATA`` or the user cache directory.
    download : bool
        Download missing files; when False a missing file raises
        FileNotFoundError.
    progress : bool
        Show download progress on stderr.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        X uint8 of shape (60000, 28, 28) and (10000, 28, 28); y int64 labels
        0-9 (0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal,
        6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot).

    Raises
    ------
    DownloadError, DataFileError
        As for ``load_mnist``.
    """
    return load_dataset(FASHION_MNIST, data_home, download=download, progress=progress)


def __dir__():
    # Tab completion and dir() show the public names, not what the module imports.
    return [*__all__, "__doc__", "__name__"]

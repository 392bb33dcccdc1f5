"""Helpers shared by the layer, model, optimiser, checkpoint and compat tests."""

import numpy as np

from cnnext import Sequential
from cnnext.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU


def bars(n, size=12, seed=0, noise=40):
    """A small learnable problem: uint8 (n, size, size) images of one bright bar.

    Class 0: a horizontal bar in the top half, 1: horizontal in the bottom
    half, 2: vertical in the left half, 3: vertical in the right half; the
    bar's exact row/column varies, and background noise is added.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, noise, (n, size, size))
    half = size // 2
    for image, label in zip(images, labels, strict=True):
        line = rng.integers(1, half - 1) + (half if label in (1, 3) else 0)
        if label < 2:
            image[line, 1:-1] = 255
        else:
            image[1:-1, line] = 255
    return images.astype(np.uint8), labels


def small_cnn(dtype="float32", seed=0, size=12, classes=4):
    """Conv -> ReLU -> MaxPool -> Flatten -> Dense, for (1, size, size) images."""
    rng = np.random.default_rng(seed)
    pooled = (size - 2) // 2
    return Sequential([
        Conv2D(1, 4, 3, dtype=dtype, seed=rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(4 * pooled * pooled, classes, dtype=dtype, seed=rng),
    ])


def every_layer_model(dtype="float64", seed=0):
    """A small network using every layer type and non-default geometry, for (2, 9, 8) inputs."""
    rng = np.random.default_rng(seed)
    return Sequential([
        Conv2D(2, 3, (3, 2), padding=1, dtype=dtype, seed=rng),   # (3, 9, 9)
        ReLU(),
        MaxPool2D(2, stride=1),                                    # (3, 8, 8)
        Conv2D(3, 4, 3, stride=2, dilation=(1, 2), dtype=dtype, seed=rng),  # (4, 3, 2)
        AvgPool2D((2, 1), stride=1),                               # (4, 2, 2)
        Flatten(),                                                 # (16,)
        Dense(16, 6, dtype=dtype, seed=rng),
        ReLU(),
        Dense(6, 5, dtype=dtype, seed=rng),
    ], input_shape=(2, 9, 8))


def loss_of(model, x, labels):
    """Mean softmax cross-entropy of the model's logits, in float64 (NumPy, not the kernels)."""
    z = model.forward(x).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


def central_differences(f, array, eps=1e-6):
    """d f / d array by central differences, perturbing ``array`` in place (restored)."""
    grad = np.zeros(array.shape)
    flat = array.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = f()
        flat[i] = saved - eps
        down = f()
        flat[i] = saved
        grad.reshape(-1)[i] = (up - down) / (2 * eps)
    return grad

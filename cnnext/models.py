"""Ready-made networks: the seed notebook's CNN and LeNet-5 for 28x28 grayscale
digits, and a small ResNet for 28x28 or 32x32 images."""

import numpy as np

from ._typing import DTypeLike, Seed
from .layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    MaxPool2D,
    ReLU,
    Residual,
)
from .layers.base import positive_int, random_generator
from .model import Sequential

__all__ = ["lenet5", "resnet8", "seed_cnn"]


def seed_cnn(dtype: DTypeLike = "float32", seed: Seed = None) -> Sequential:
    """seed_cnn(dtype="float32", seed=None)

    The seed notebook's network: Conv2D(1, 8, 3, bias=False) -> MaxPool2D(2)
    -> Flatten -> Dense(1352, 10), for (1, 28, 28) inputs, 10 classes
    (13,602 parameters).  Like the notebook it has no activation between
    the convolution and the pooling.

    Parameters
    ----------
    dtype : {"float32", "float64"}
    seed : None, int >= 0 or numpy.random.Generator
        Source of the initial weights.

    Examples
    --------
    >>> from cnnext import models
    >>> model = models.seed_cnn(seed=0)
    >>> model.num_parameters()
    13602
    >>> model.output_shape((1, 28, 28))
    (10,)
    """
    rng = random_generator("seed_cnn", seed)
    return Sequential([
        Conv2D(1, 8, 3, bias=False, dtype=dtype, seed=rng),
        MaxPool2D(2),
        Flatten(),
        Dense(8 * 13 * 13, 10, dtype=dtype, seed=rng),
    ], input_shape=(1, 28, 28))


def lenet5(dtype: DTypeLike = "float32", seed: Seed = None) -> Sequential:
    """lenet5(dtype="float32", seed=None)

    LeNet-5 (LeCun et al., 1998) for (1, 28, 28) inputs, as it is usually
    trained today: ReLU in place of the scaled tanh, max pooling in place of
    the trainable subsampling, and the 28x28 input zero-padded to the
    original 32x32 receptive field:

    Conv2D(1, 6, 5, padding=2) -> ReLU -> MaxPool2D(2) -> Conv2D(6, 16, 5) ->
    ReLU -> MaxPool2D(2) -> Flatten -> Dense(400, 120) -> ReLU ->
    Dense(120, 84) -> ReLU -> Dense(84, 10)   (61,706 parameters)

    Parameters
    ----------
    dtype : {"float32", "float64"}
    seed : None, int >= 0 or numpy.random.Generator
        Source of the initial weights.

    Examples
    --------
    >>> from cnnext import models
    >>> model = models.lenet5(seed=0)
    >>> model.num_parameters()
    61706
    >>> len(model.layers)
    12
    """
    rng = random_generator("lenet5", seed)
    return Sequential([
        Conv2D(1, 6, 5, padding=2, dtype=dtype, seed=rng),
        ReLU(),
        MaxPool2D(2),
        Conv2D(6, 16, 5, dtype=dtype, seed=rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(16 * 5 * 5, 120, dtype=dtype, init="he_normal", seed=rng),
        ReLU(),
        Dense(120, 84, dtype=dtype, init="he_normal", seed=rng),
        ReLU(),
        Dense(84, 10, dtype=dtype, seed=rng),
    ], input_shape=(1, 28, 28))


def _basic_block(in_channels: int, out_channels: int, stride: int, dtype: DTypeLike,
                 rng: np.random.Generator) -> list[Layer]:
    """Two 3x3 convolutions with batch norm, around a skip connection (a 1x1
    strided convolution where the shape changes), then a ReLU."""
    block = [
        Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, dtype=dtype,
               seed=rng),
        BatchNorm2D(out_channels, dtype=dtype),
        ReLU(),
        Conv2D(out_channels, out_channels, 3, padding=1, bias=False, dtype=dtype, seed=rng),
        BatchNorm2D(out_channels, dtype=dtype),
    ]
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = [Conv2D(in_channels, out_channels, 1, stride=stride, bias=False, dtype=dtype,
                           seed=rng),
                    BatchNorm2D(out_channels, dtype=dtype)]
    return [Residual(block, shortcut), ReLU()]


def resnet8(in_channels: int = 1, num_classes: int = 10, dtype: DTypeLike = "float32",
            seed: Seed = None) -> Sequential:
    """resnet8(in_channels=1, num_classes=10, dtype="float32", seed=None)

    A small residual network (He et al., 2016, in the CIFAR style) for
    (in_channels, 28, 28) or (in_channels, 32, 32) images: a 3x3 stem
    convolution to 16 channels, three stages of one basic block each (16,
    32 and 64 channels; the last two halve the resolution, their shortcut a
    strided 1x1 convolution), global average pooling and a dense layer, so 8
    weight layers on the main path.  Every convolution is followed by
    BatchNorm2D and has no bias::

        Conv2D(C, 16, 3, padding=1) -> BatchNorm2D -> ReLU
        Residual([Conv2D(16, 16, 3, p=1), BN, ReLU, Conv2D(16, 16, 3, p=1), BN]) -> ReLU
        Residual([Conv2D(16, 32, 3, s=2, p=1), BN, ReLU, Conv2D(32, 32, 3, p=1), BN],
                 shortcut=[Conv2D(16, 32, 1, s=2), BN]) -> ReLU
        Residual([Conv2D(32, 64, 3, s=2, p=1), BN, ReLU, Conv2D(64, 64, 3, p=1), BN],
                 shortcut=[Conv2D(32, 64, 1, s=2), BN]) -> ReLU
        GlobalAvgPool2D -> Dense(64, num_classes)

    (77,754 parameters for one input channel and 10 classes.)  Input
    shape is left to the data (28x28 becomes 14x14 then 7x7; 32x32 16x16
    then 8x8); train it with ``fit``, which switches batch normalisation
    between batch statistics (training) and running statistics
    (``evaluate`` / ``predict``) by itself.

    Parameters
    ----------
    in_channels : int
        1 for grayscale, 3 for RGB.
    num_classes : int
    dtype : {"float32", "float64"}
    seed : None, int >= 0 or numpy.random.Generator
        Source of the initial weights (convolutions He-normal, the dense
        layer Glorot-uniform; batch norm starts at weight 1, bias 0).
    """
    in_channels = positive_int("resnet8", "in_channels", in_channels)
    num_classes = positive_int("resnet8", "num_classes", num_classes)
    rng = random_generator("resnet8", seed)
    layers = [
        Conv2D(in_channels, 16, 3, padding=1, bias=False, dtype=dtype, seed=rng),
        BatchNorm2D(16, dtype=dtype),
        ReLU(),
        *_basic_block(16, 16, 1, dtype, rng),
        *_basic_block(16, 32, 2, dtype, rng),
        *_basic_block(32, 64, 2, dtype, rng),
        GlobalAvgPool2D(),
        Dense(64, num_classes, dtype=dtype, seed=rng),
    ]
    return Sequential(layers)


def __dir__():
    # Tab completion and dir() show the public names, not what the module imports.
    return [*__all__, "__doc__", "__name__"]

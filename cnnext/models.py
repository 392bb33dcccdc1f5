"""Ready-made networks for 28x28 grayscale digits: the seed notebook's CNN and LeNet-5."""

from ._typing import DTypeLike, Seed
from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from .layers.base import random_generator
from .model import Sequential

__all__ = ["lenet5", "seed_cnn"]


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


def __dir__():
    # Tab completion and dir() show the public names, not what the module imports.
    return [*__all__, "__doc__", "__name__"]

"""Layers: each one a forward pass, a backward pass and its parameters.

Conv2D     2-D convolution, NCHW (``F.conv2d``)
MaxPool2D  max pooling (``F.max_pool2d``)
AvgPool2D  average pooling (``F.avg_pool2d``)
ReLU       rectified linear unit (``F.relu``)
Flatten    (N, ...) -> (N, features)
Dense      fully connected, y = x W^T + b
=========  ======================================================
=======
===============  ======================================================
Conv2D           2-D convolution, NCHW (``F.conv2d``)
MaxPool2D        max pooling (``F.max_pool2d``)
AvgPool2D        average pooling (``F.avg_pool2d``)
GlobalAvgPool2D  mean of every plane, (N, C, H, W) -> (N, C)
BatchNorm2D      batch normalisation per channel (``F.batch_norm2d``)
Dropout          inverted dropout (training mode only)
ReLU             rectified linear unit (``F.relu``)
LeakyReLU        x or negative_slope * x (``F.leaky_relu``)
Sigmoid, Tanh    ``F.sigmoid``, ``F.tanh``
Flatten          (N, ...) -> (N, features)
Dense            fully connected, y = x W^T + b
Residual         block(x) + shortcut(x), around other layers
===============  ======================================================

Every layer has ``forward(x)`` (also ``layer(x)``), ``backward(gy) -> gx``,
``params``, ``grads`` and ``buffers`` (name -> array), ``train()`` /
``eval()``, ``output_shape(input_shape)`` and ``config()``.
"""

from .activation import ReLU
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .flatten import Flatten
from .global_pool import GlobalAvgPool2D
from .nonlinear import LeakyReLU, Sigmoid, Tanh
from .normalization import BatchNorm2D
from .pooling import AvgPool2D, MaxPool2D
from .residual import Residual

__all__ = ["AvgPool2D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAvgPool2D", "Layer", "LeakyReLU", "MaxPool2D", "ReLU", "Residual", "Sigmoid",
           "Tanh"]

# The classes a checkpoint may name; nothing else is ever constructed from a file.
LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, AvgPool2D, ReLU, Flatten, Dense,
                                              Residual, BatchNorm2D, Dropout, GlobalAvgPool2D,
                                              LeakyReLU, Sigmoid, Tanh)}


def __dir__():
    # Tab completion and dir() show the public names, not what the module imports.
    return [*__all__, "__doc__", "__name__"]

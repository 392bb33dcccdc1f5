"""Layers: each one a forward pass, a backward pass and its parameters.

=========  ======================================================
Conv2D     2-D convolution, NCHW (``F.conv2d``)
MaxPool2D  max pooling (``F.max_pool2d``)
AvgPool2D  average pooling (``F.avg_pool2d``)
ReLU       rectified linear unit (``F.relu``)
Flatten    (N, ...) -> (N, features)
Dense      fully connected, y = x W^T + b
=========  ======================================================

Every layer has ``forward(x)``, ``backward(gy) -> gx``, ``params`` and
``grads`` (name -> array), ``output_shape(input_shape)`` and ``config()``.
"""

from .activation import ReLU
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .flatten import Flatten
from .pooling import AvgPool2D, MaxPool2D

__all__ = ["AvgPool2D", "Conv2D", "Dense", "Flatten", "Layer", "MaxPool2D", "ReLU"]

# The classes a checkpoint may name; nothing else is ever constructed from a file.
LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, AvgPool2D, ReLU, Flatten, Dense)}


def __dir__():
    # Tab completion and dir() show the public names, not what the module imports.
    return [*__all__, "__doc__", "__name__"]

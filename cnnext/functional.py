"""Validated public kernels, NCHW, float32 or float64.

Every function checks its arguments (shapes, dtypes, sizes) in Python, then
runs a compiled kernel with the GIL released.  Inputs are never modified;
non-contiguous inputs are accepted.  Outputs are fresh arrays unless an
``out=`` buffer is given.

============================  ===============================================
conv2d                        2-D convolution (cross-correlation), bias
conv2d_backward               gradients of conv2d: (gx, gw, gb)
conv2d_max_pool2d             conv2d [-> relu] -> max_pool2d in one pass: (y, idx)
conv2d_max_pool2d_backward    its gradients from the indices: (gx, gw, gb)
linear                        fully connected layer, x @ w.T + b
linear_backward               gradients of linear: (gx, gw, gb)
max_pool2d                    max pooling, optional argmax indices
max_pool2d_backward           gradient of max_pool2d from its indices
avg_pool2d                    average pooling (padding counted)
avg_pool2d_backward           gradient of avg_pool2d
relu, relu_backward           rectified linear unit
softmax                       softmax over the last axis
softmax_cross_entropy         mean cross-entropy loss and its gradient
batch_norm2d                  batch normalisation per channel
batch_norm2d_backward         gradients of batch_norm2d: (gx, gweight, gbias)
global_avg_pool2d             mean of every plane, (N, C, H, W) -> (N, C)
global_avg_pool2d_backward    gradient of global_avg_pool2d
leaky_relu, sigmoid, tanh     and their ``_backward`` gradients
dropout, dropout_backward     inverted dropout with a mask hashed from a key
============================  ===============================================
"""

from ._functional.activation import relu, relu_backward
from ._functional.conv import conv2d, conv2d_backward
from ._functional.dense import linear, linear_backward
from ._functional.dropout import dropout, dropout_backward
from ._functional.fused import conv2d_max_pool2d, conv2d_max_pool2d_backward
from ._functional.global_pool import global_avg_pool2d, global_avg_pool2d_backward
from ._functional.loss import softmax, softmax_cross_entropy
from ._functional.nonlinear import (
    leaky_relu,
    leaky_relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from ._functional.normalization import batch_norm2d, batch_norm2d_backward
from ._functional.pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = [
    "avg_pool2d",
    "avg_pool2d_backward",
    "batch_norm2d",
    "batch_norm2d_backward",
    "conv2d",
    "conv2d_backward",
    "conv2d_max_pool2d",
    "conv2d_max_pool2d_backward",
    "dropout",
    "dropout_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_cross_entropy",
    "tanh",
    "tanh_backward",
]

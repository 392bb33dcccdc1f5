"""The torch.nn modules ``to_torch`` builds where PyTorch has no module of its own.

Imported only by ``to_torch`` and ``from_torch`` (it imports torch).  They are
module-level classes so the models built with them pickle like any other.
"""

import torch
from torch import nn
from torch.nn import functional as tf


class Residual(nn.Module):
    """block(x) + shortcut(x), the shortcut the identity when it is None: cnnext's
    Residual.  ``block`` and ``shortcut`` are nn.Sequential, so the state_dict keys
    are "block.<i>.<name>" and "shortcut.<i>.<name>" as in cnnext's."""

    def __init__(self, block, shortcut=None):
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x):
        return self.block(x) + (x if self.shortcut is None else self.shortcut(x))


class PaddedConv2d(nn.Conv2d):
    """nn.Conv2d after zero padding ``pads`` = (left, right, top, bottom), for
    padding that differs between the two sides of an axis (its own padding 0)."""

    def __init__(self, *args, pads, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.pads = tuple(int(p) for p in pads)

    def forward(self, x):
        return super().forward(tf.pad(x, self.pads))

    def extra_repr(self):
        return f"{super().extra_repr()}, pads={self.pads}"


class PaddedMaxPool2d(nn.Module):
    """max_pool2d after padding ``pads`` = (left, right, top, bottom) with -inf:
    cnnext's MaxPool2D where PyTorch's padding cannot say it (one-sided, or
    more than half the kernel).  Not in ceil mode (its rule differs then)."""

    def __init__(self, kernel_size, stride, pads, dilation):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.pads = tuple(int(p) for p in pads)

    def forward(self, x):
        padded = tf.pad(x, self.pads, value=-torch.inf)
        return tf.max_pool2d(padded, self.kernel_size, self.stride, 0, self.dilation)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, pads={self.pads}, "
                f"dilation={self.dilation}")


class PaddedAvgPool2d(nn.Module):
    """avg_pool2d after zero padding ``pads`` = (left, right, top, bottom): cnnext's
    AvgPool2D with padding counted in the divisor, where PyTorch's padding cannot
    say it.  Not in ceil mode (its rule differs then)."""

    def __init__(self, kernel_size, stride, pads):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.pads = tuple(int(p) for p in pads)

    def forward(self, x):
        return tf.avg_pool2d(tf.pad(x, self.pads), self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pads={self.pads}"

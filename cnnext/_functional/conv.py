"""Placeholder: being written (see the open issue)."""


def conv2d(*args, **kwargs):
    raise NotImplementedError("conv2d is not implemented yet")


def conv2d_backward(*args, **kwargs):
    raise NotImplementedError("conv2d_backward is not implemented yet")


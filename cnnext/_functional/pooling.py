"""Placeholder: being written (see the open issue)."""


def max_pool2d(*args, **kwargs):
    raise NotImplementedError("max_pool2d is not implemented yet")


def max_pool2d_backward(*args, **kwargs):
    raise NotImplementedError("max_pool2d_backward is not implemented yet")


def avg_pool2d(*args, **kwargs):
    raise NotImplementedError("avg_pool2d is not implemented yet")


def avg_pool2d_backward(*args, **kwargs):
    raise NotImplementedError("avg_pool2d_backward is not implemented yet")


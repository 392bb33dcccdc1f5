"""Placeholder: being written (see the open issue)."""


def relu(*args, **kwargs):
    raise NotImplementedError("relu is not implemented yet")


def relu_backward(*args, **kwargs):
    raise NotImplementedError("relu_backward is not implemented yet")


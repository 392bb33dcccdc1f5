"""The layer protocol shared by every layer, and its plumbing.

A layer maps an (N, ...) batch to an (N, ...) batch with ``forward`` and maps
the gradient of the loss with respect to its output back to its input with
``backward``, leaving the gradients of its parameters in ``grads``.  All the
arithmetic happens in ``cnnext.functional`` (or a NumPy BLAS call for
``Dense``); layers only validate, remember what ``backward`` needs, and keep
their buffers.

Two entry points per direction:

* ``forward(x)`` / ``backward(gy)``: public, check ``x`` against the layer
  (ndim, channels, dtype) and return fresh arrays.
* ``_forward(x, reuse)`` / ``_backward(gy, need_input_grad, reuse)``: used by
  ``Sequential``'s layer-by-layer path after it has checked the whole
  network's shapes once.  With ``reuse=True`` large outputs go to
  workspaces owned by the layer, overwritten by the next call, so a
  training loop allocates no large arrays per step.
* ``_build_steps(builder, x)``: the layer's compiled steps for a plan
  (cnnext._plans), on which ``Sequential`` runs whole passes; layers
  without them run layer by layer.

``grads`` always holds persistent arrays (one per parameter, overwritten by
each backward pass), like PyTorch's ``.grad``.

Every layer also has a ``training`` flag (set by ``train()`` / ``eval()``;
layers such as BatchNorm2D and Dropout compute differently in evaluation
mode), ``buffers`` (name -> array: state that is saved and loaded but not
trained, such as running statistics) and is callable: ``layer(x)`` is
``layer.forward(x)``.  A layer holding other layers (``Residual``) lists
them in ``_children()`` and exposes their parameters and buffers under
dotted names ("block.0.weight"), the names PyTorch gives them.
"""

import contextvars
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _validation
from .._typing import FloatArray

# The layers' argument rules (cnnext._validation), under the names layers import.
from .._validation import (  # noqa: F401
    DTYPES,
    INITS,
    boolean,
    check_init,
    check_seed,
    check_weight_shape,
    layer_dtype,
    positive_int,
)

# glibc's default threshold for serving an allocation with its own mmap.
WORKSPACE_MIN_BYTES = 128 * 1024

# Set by the checkpoint loader: the number of parameter elements the file
# really holds, so a tampered architecture cannot make a constructor
# allocate more than that before the file's arrays are checked.
_parameter_budget = contextvars.ContextVar("cnnext_parameter_budget", default=None)


class ParameterBudgetExceeded(ValueError):
    """A layer asked for more parameters than a checkpoint being loaded holds."""


def compact(pair):
    """(a, a) as a, for the kernels' argument checks (an int is quicker to check than a pair)."""
    return pair[0] if pair[0] == pair[1] else pair


def layer_padding(owner, value):
    """Padding as an (h, w) pair, or as ((top, bottom), (left, right)) where the two
    sides of an axis differ."""
    (top, bottom), (left, right) = _validation.padding_pairs(owner, "padding", value)
    if top == bottom and left == right:
        return top, left
    return (top, bottom), (left, right)


def compact_padding(padding):
    """``layer_padding``'s value as the kernels' checks take it fastest."""
    return padding if isinstance(padding[0], tuple) else compact(padding)


def random_generator(owner, seed):
    """``seed`` (None, an int >= 0 or a numpy.random.Generator) as a Generator.

    A Generator is used as is, so layers built from one share its stream.
    """
    check_seed(owner, seed)
    return np.random.default_rng(seed if seed is None or isinstance(seed, np.random.Generator)
                                 else int(seed))


def initial_weights(shape, init, fan_in, fan_out, dtype, rng):
    """Random weights of ``shape`` drawn from ``rng``, scaled by ``init``.

    "he_normal": N(0, 2 / fan_in), for layers followed by a ReLU;
    "glorot_uniform": U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
    Drawn in float64 then rounded, so float32 and float64 layers built from
    the same seed start from the same values.
    """
    _claim_parameters(math.prod(shape))
    if init == "he_normal":
        values = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
    else:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        values = rng.uniform(-limit, limit, shape)
    return values.astype(dtype)


def zero_parameter(shape, dtype):
    _claim_parameters(math.prod(shape))
    return np.zeros(shape, dtype=dtype)


def _claim_parameters(count):
    budget = _parameter_budget.get()
    if budget is None:
        return
    if count > budget[0]:
        raise ParameterBudgetExceeded(
            f"the architecture asks for more parameters than the file holds "
            f"({count} more requested, {budget[0]} left)")
    budget[0] -= count


class Layer:
    """Base class of every layer.

    Subclasses set ``params`` (name -> array), ``grads`` (same names and
    shapes) and, when they have parameters, ``dtype`` (layers without
    parameters take float32 and float64 alike); they implement ``config``,
    ``output_shape``, ``_forward`` and ``_backward``.  ``_forward`` stores
    ``self._cache = (x.shape, x.dtype, ...)`` for ``_backward``.
    """

    dtype = None
    # (input shape, output shape) of the last batch shape seen.
    _shape_memo = None
    # (shape, dtype) of the last input ``forward`` validated: the same again
    # needs no checks (they depend on nothing else).
    _input_memo = None
    # What the last forward left for backward (see _forward).
    _cache = None
    training = True
    # Whether the layer computes differently in training and evaluation mode.
    # True unless a layer says otherwise, so a subclass that reads
    # ``self.training`` sees the mode ``predict`` and ``evaluate`` set.
    _depends_on_mode = True

    def __init__(self) -> None:
        self.params: dict[str, FloatArray] = {}
        self.grads: dict[str, FloatArray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training = True
        self._workspaces = {}

    def __call__(self, x):
        """layer(x) is layer.forward(x)."""
        return self.forward(x)

    def train(self, mode=True):
        """train(mode=True)

        Put the layer (and the layers it holds) in training mode, or in
        evaluation mode with ``mode=False``.  Returns the layer.
        """
        self._set_training(boolean(f"{self._name()}.train", "mode", mode))
        return self

    def _set_training(self, mode):
        """``train(mode)`` without the check (``mode`` is a bool): ``predict`` and
        ``evaluate`` switch modes on every call."""
        self.training = mode
        for child in self._children():
            child._set_training(mode)

    def eval(self):
        """eval()

        Put the layer in evaluation mode (``train(False)``).  Returns the layer.
        """
        return self.train(False)

    def state_items(self):
        """state_items()

        (name, array) for every parameter and buffer, in PyTorch's
        ``state_dict`` order (a layer's parameters, then its buffers; a
        layer holding others: theirs, in order).  The arrays themselves.
        """
        yield from self.params.items()
        yield from self.buffers.items()

    # ------------------------------------------------------------- public API
    def forward(self, x: FloatArray) -> FloatArray:
        """forward(x)

        Compute the layer's output for the batch ``x`` and remember what
        ``backward`` needs.  Returns a new array (``Flatten``: a view of x),
        never one of the layer's reused workspaces.
        """
        memo = self._input_memo
        if memo is None or type(x) is not np.ndarray or x.shape != memo[0] or x.dtype != memo[1]:
            x = self._checked(x)
            self._input_memo = (x.shape, x.dtype)
        return self._forward(x, reuse=False)

    def backward(self, gy: FloatArray) -> FloatArray:
        """backward(gy)

        Given ``gy``, the gradient of the loss with respect to the output of
        the last ``forward``, store the parameter gradients in ``grads`` and
        return the gradient with respect to that forward's input.
        """
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(f"{self._name()}.backward called before forward")
        x_shape, x_dtype = cache[:2]
        expected = self._batch_output_shape(x_shape)
        if type(gy) is not np.ndarray or gy.shape != expected or gy.dtype != x_dtype:
            gy = _validation.float_array(f"{self._name()}.backward", "gy", gy)
            if gy.shape != expected or gy.dtype != x_dtype:
                raise ValueError(f"{self._name()}.backward: gy must have shape {expected} and "
                                 f"dtype {x_dtype} (the last forward's output), got shape "
                                 f"{gy.shape} and dtype {gy.dtype}")
        if not gy.flags.c_contiguous:
            gy = np.ascontiguousarray(gy)
        return self._backward(gy, need_input_grad=True, reuse=False)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """output_shape(input_shape)

        The shape of one example's output, given one example's input shape
        (without the batch axis).  Raises ValueError when the layer cannot
        take that input.
        """
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-compatible) that rebuild this layer."""
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.size for p in self.params.values())

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -------------------------------------------------------------- internals
    def _name(self):
        return type(self).__name__

    def _children(self):
        """The layers this layer holds (none for a plain layer)."""
        return ()

    def _invalid_buffer(self, name, value):
        """What is wrong with ``value`` as the layer's buffer ``name`` (a message), or None.

        Shapes and dtypes are checked by the callers; layers whose buffers
        must satisfy more (a variance is >= 0) say so here.
        """
        return None

    def _leaves(self):
        """This layer, or the plain layers it holds, depth first."""
        children = self._children()
        if not children:
            yield self
        for child in children:
            yield from child._leaves()

    def _checked(self, x):
        x = _validation.float_array(f"{self._name()}.forward", "x", x)
        if self.dtype is not None and x.dtype != self.dtype:
            raise TypeError(f"{self._name()}.forward: x has dtype {x.dtype} but the layer "
                            f"computes in {self.dtype}")
        if x.ndim < 1:
            raise ValueError(f"{self._name()}.forward: x must have a batch axis, got a scalar")
        try:
            self.output_shape(x.shape[1:])
        except ValueError as exc:
            raise ValueError(f"{self._name()}.forward: x of shape {x.shape}: {exc}") from None
        return x

    def _batch_output_shape(self, x_shape):
        """(N, *output_shape(x_shape[1:])), remembered for the last input shape seen."""
        memo = self._shape_memo
        if memo is None or memo[0] != x_shape:
            memo = self._shape_memo = (x_shape, (x_shape[0], *self.output_shape(x_shape[1:])))
        return memo[1]

    def _output(self, name, shape, dtype, reuse):
        """The ``out=`` buffer for an output: a reused workspace, or None (the kernel allocates).

        Only outputs of at least WORKSPACE_MIN_BYTES get a workspace: below
        that, allocating is cheaper than checking an ``out=`` buffer, and
        only large blocks cost page faults when the allocator hands them
        back to the system between steps.
        """
        if not reuse:
            return None
        entry = self._workspaces.get(name)
        if entry is None or entry[0] != shape or entry[1] != dtype:
            dtype = np.dtype(dtype)
            large = math.prod(shape) * dtype.itemsize >= WORKSPACE_MIN_BYTES
            entry = self._workspaces[name] = (shape, dtype,
                                              np.empty(shape, dtype) if large else None)
        return entry[2]

    def _forward(self, x, reuse):
        raise NotImplementedError

    def _backward(self, gy, need_input_grad, reuse):
        raise NotImplementedError

    def _build_steps(self, builder, x):
        """Add this layer's compiled steps to a plan (cnnext/_plans/__init__.py
        explains how) for the input buffer ``x``; return the output buffer,
        or NotImplemented: a network holding the layer then runs layer by
        layer through ``_forward`` / ``_backward``."""
        return NotImplemented

    def __getstate__(self):
        # Weights and configuration only: not the last batch, not the workspaces.
        state = self.__dict__.copy()
        state.pop("_cache", None)
        state["_workspaces"] = {}
        return state


def has_compiled_steps(layer):
    """Whether ``layer`` runs on plans: the most derived of its classes that
    defines any of ``_forward``, ``_backward`` and ``_build_steps`` defines
    ``_build_steps`` (a subclass changing the computation without giving
    steps for it runs layer by layer)."""
    for cls in type(layer).__mro__:
        names = vars(cls)
        if "_build_steps" in names or "_forward" in names or "_backward" in names:
            return cls is not Layer and "_build_steps" in names
    return False

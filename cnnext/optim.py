"""Optimisers: SGD (momentum, Nesterov, weight decay), Adam, AdamW and RMSprop, as in PyTorch.

An optimiser is built without parameters (``optim.SGD(lr=0.01)``) and is
handed them at each step as two dicts with the same keys, name -> array:
``step(params, grads)`` updates ``params`` in place.  State (momentum
buffers, Adam's moments and step counts) is kept per parameter name and is
created on the first step; ``state_dict()`` / ``load_state_dict()`` save and
restore hyper-parameters and state.

The update rules follow ``torch.optim.SGD``, ``Adam``, ``AdamW`` and
``RMSprop`` (weight decay is added to the gradient, "L2" style, except in
AdamW, which shrinks the parameters: decoupled weight decay).  Each step
updates a parameter and its state in one compiled pass (``_kernels/_optim.pxi``),
so parameters must be writeable C-contiguous float32/float64 arrays, as the
layers make them.  ``fit`` runs the same kernels as steps of a compiled
Program (``_compiled_update``), between the backward passes of a run of
training steps.

Threads: optimisers share nothing, so each thread (each model) may step its
own optimiser at the same time as the others.  One optimiser's state belongs
to one training loop: a ``step`` while another thread is in ``step`` of the
same optimiser raises RuntimeError (``in_use``) instead of mixing the two
updates' state.
"""

import copy
import functools
import math
import threading
from typing import Any

import numpy as np

from . import _dispatch, _validation
from ._functional import _repeat
from ._kernels import _program
from ._plans import kernels as _kernels
from ._typing import FloatArray

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop"]


def __dir__():
    # The module's public names are its optimisers, not the modules it imports.
    return [*__all__, "__doc__", "__name__"]

_optim = _dispatch.load("_optim")

# dtype -> the kernels' compiled specialisations (skipping the fused-type dispatch).
_SGD_STEP = _dispatch.by_dtype(_optim.sgd_step)
_ADAM_STEP = _dispatch.by_dtype(_optim.adam_step)
_ADAMW_STEP = _dispatch.by_dtype(_optim.adamw_step)
_RMSPROP_STEP = _dispatch.by_dtype(_optim.rmsprop_step)


# ids of the optimisers inside ``in_use`` (a registry, not a lock per object:
# optimisers stay picklable and deep-copyable).
_busy = set()
_busy_lock = threading.Lock()


class in_use:
    """in_use(optimizer, owner)

    Hold ``optimizer`` for the length of a ``with`` block: a second holder
    (another thread stepping, or training with, the same optimiser) gets a
    RuntimeError naming ``owner`` rather than updates mixed with this one's.
    (A class, not a generator: entered once per ``fit`` call and per step.)
    """

    __slots__ = ("optimizer", "owner")

    def __init__(self, optimizer, owner):
        self.optimizer, self.owner = optimizer, owner

    def __enter__(self):
        key = id(self.optimizer)
        with _busy_lock:
            if key in _busy:
                raise RuntimeError(
                    f"{self.owner}: this {type(self.optimizer).__name__} is being stepped by "
                    f"another thread; an optimiser's state belongs to one training loop at a "
                    f"time (give each model, or each thread, its own optimiser)")
            _busy.add(key)
        return self.optimizer

    def __exit__(self, *exc):
        with _busy_lock:
            _busy.discard(id(self.optimizer))


_DESCEND = _repeat.Calls()


def _descend(param, grad, lr):
    """_descend(param, grad, lr)

    ``param -= lr * grad`` in place, as those two NumPy operations round it
    (private: ``cnnext.compat``'s per-image updates).  ``param`` a writeable
    C-contiguous float array, ``grad`` a C-contiguous array of its size and
    dtype, ``lr`` a float.
    """
    if _DESCEND.run((param, grad), lr) is not None:
        return
    if not (type(param) is np.ndarray and type(grad) is np.ndarray and param.size == grad.size
            and param.dtype == grad.dtype and param.dtype in _SGD_STEP
            and param.flags.c_contiguous and param.flags.writeable
            and grad.flags.c_contiguous and type(lr) is float):
        param -= lr * grad.reshape(param.shape)
        return
    _SGD_STEP[param.dtype](param.reshape(-1), grad.reshape(-1), None, lr, 0.0, 0.0, False)
    _repeat.remember(_DESCEND, "sgd", param.dtype, ((0, param, True), (1, grad)), (),
                     (param.size, 0), (lr, 0.0, 0.0), extra=lr)


# State entries shared, not copied, by _state_copy: shapes, dtypes, step counts, None.
_IMMUTABLE = (type(None), bool, int, float, tuple, np.dtype, np.integer, np.floating)


class Optimizer:
    """Base class: per-parameter state, ``step``, ``state_dict``, ``load_state_dict``.

    Subclasses define ``slots`` (names of the arrays kept per parameter),
    ``counters`` (names of the ints kept per parameter), ``config()`` and
    ``_stepper(param, grad, state)``.
    """

    slots = ()
    counters = ()

    def __init__(self) -> None:
        self.state = {}

    def config(self) -> dict[str, Any]:
        """The hyper-parameters, as constructor keyword arguments."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def step(self, params: dict[str, FloatArray], grads: dict[str, FloatArray]) -> None:
        """step(params, grads)

        Update every array of ``params`` in place from the array of the same
        name in ``grads`` (same shape and dtype).  RuntimeError while another
        thread is stepping this optimiser (see the module docstring).
        """
        with in_use(self, f"{type(self).__name__}.step"):
            self._bind(params, grads)()

    def _bind(self, params, grads):
        """Check ``params`` and ``grads`` once; return a callable applying one step to them.

        A training loop binds once per epoch and calls the result every step,
        so per-step work is one kernel call per parameter.
        """
        steppers = [self._stepper(param, grad, state)
                    for param, grad, state in self._checked(params, grads)]

        def apply():
            for stepper in steppers:
                stepper()

        return apply

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_update_memo", None)  # raw pointers: rebuilt on first use
        return state

    def _compiled_update(self, params, grads):
        """One step of every parameter as a compiled Program (cnnext._plans): an
        object with ``program``, ``load()`` (before running it: the step counts
        from ``state``) and ``store()`` (after: back into ``state``); None when
        this optimiser has no step kernel.

        The last one built is reused while it still describes the call: the
        same parameter and gradient arrays under the same names (shapes and
        writeability unchanged), the same hyper-parameters and the same state
        arrays.  Anything else (a replaced or resized parameter, ``reset``,
        ``load_state_dict``, a new learning rate) builds and checks afresh."""
        memo = self.__dict__.get("_update_memo")
        if memo is not None and memo.describes(self, params, grads):
            return memo.update
        self.__dict__.pop("_update_memo", None)
        update = self._build_update(params, grads)
        if update is not None:
            self._update_memo = _UpdateMemo(self, params, grads, update)
        return update

    def _build_update(self, params, grads):
        program = _program.Program()
        counters = []
        for param, grad, state in self._checked(params, grads):
            step = self._step_args(param, grad, state)
            if step is None:
                return None
            name, arrays, sizes, scalars = step
            if "step" in self.counters:
                counter = np.zeros(1, np.int64)
                counters.append((state, counter))
                arrays = (*arrays, counter)
            program.add(_kernels.kernel(name, param.dtype), arrays, sizes, scalars, name=name)
        return _CompiledUpdate(program, counters)

    def _checked(self, params, grads):
        """(flat param, flat grad, state) of every parameter, checked."""
        checked = []
        for name, param in params.items():
            grad = grads.get(name)
            if grad is None or grad.shape != param.shape or grad.dtype != param.dtype:
                self._bad_gradient(name, param, grad)
            if param.dtype not in _SGD_STEP:
                raise TypeError(f"{type(self).__name__}.step: parameter {name!r} has dtype "
                                f"{param.dtype}; only float32 and float64 are trained")
            if not (param.flags.c_contiguous and param.flags.writeable
                    and grad.flags.c_contiguous):
                raise ValueError(f"{type(self).__name__}.step: parameter {name!r} and its "
                                 f"gradient must be C-contiguous, the parameter writeable")
            state = self.state.get(name)
            if state is None or state["shape"] != param.shape or state["dtype"] != param.dtype:
                state = self._new_state(name, param)
            checked.append((param.reshape(-1), grad.reshape(-1), state))
        return checked

    def _state_copy(self):
        """A copy of ``state`` that no later step changes (arrays copied,
        immutable entries shared: quicker than copy.deepcopy)."""
        return {name: {key: value.copy() if isinstance(value, np.ndarray)
                       else value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)
                       for key, value in entry.items()}
                for name, entry in self.state.items()}

    def reset(self) -> None:
        """Forget all per-parameter state (the next step starts afresh)."""
        self.state = {}

    def state_dict(self) -> dict[str, Any]:
        """state_dict()

        A dict {"type": class name, "config": hyper-parameters, "state":
        {parameter name: {slot: array copy or int}}}.
        """
        state = {}
        for name, entry in self.state.items():
            state[name] = {k: entry[k].copy() for k in self.slots if entry[k] is not None}
            state[name].update({k: entry[k] for k in self.counters})
        return {"type": type(self).__name__, "config": self.config(), "state": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """load_state_dict(state_dict)

        Restore hyper-parameters and state saved by ``state_dict`` of the same
        optimiser class (arrays are copied).
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"type", "config", "state"}:
            raise ValueError(f"{owner}: expected a dict with keys 'type', 'config' and 'state'")
        if state_dict["type"] != type(self).__name__:
            raise ValueError(f"{owner}: the state is of a {state_dict['type']!r} optimiser")
        if not isinstance(state_dict["config"], dict):
            raise TypeError(f"{owner}: 'config' must be a dict")
        fresh = type(self)(**state_dict["config"])
        entries = state_dict["state"]
        if not isinstance(entries, dict):
            raise TypeError(f"{owner}: 'state' must be a dict of parameter name -> dict")
        state = {}
        for name, entry in entries.items():
            state[name] = self._checked_entry(owner, name, entry)
        self.__dict__.update(fresh.__dict__)
        self.state = state

    # -------------------------------------------------------------- internals
    def _checked_entry(self, owner, name, entry):
        if not isinstance(entry, dict):
            raise TypeError(f"{owner}: state[{name!r}] must be a dict")
        optional = set(getattr(self, "optional_slots", ()))
        required = (set(self.slots) - optional) | set(self.counters)
        if not required <= set(entry) <= set(self.slots) | set(self.counters):
            raise ValueError(f"{owner}: state[{name!r}] must have the keys {sorted(required)} "
                             f"(optionally {sorted(optional)}), got {sorted(entry)}")
        arrays = {}
        for slot in self.slots:
            value = entry.get(slot)
            if value is None:
                arrays[slot] = None
                continue
            if not isinstance(value, np.ndarray) or value.dtype not in (np.float32, np.float64):
                raise TypeError(f"{owner}: state[{name!r}][{slot!r}] must be a float32 or "
                                f"float64 array")
            arrays[slot] = np.array(value, copy=True, order="C")
        shapes = {a.shape for a in arrays.values() if a is not None}
        dtypes = {a.dtype for a in arrays.values() if a is not None}
        if len(shapes) > 1 or len(dtypes) > 1:
            raise ValueError(f"{owner}: the arrays of state[{name!r}] differ in shape or dtype")
        for counter in self.counters:
            value = entry[counter]
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                    or value < 0:
                raise ValueError(f"{owner}: state[{name!r}][{counter!r}] must be an int >= 0, "
                                 f"got {value!r}")
            arrays[counter] = int(value)
        arrays["shape"] = shapes.pop() if shapes else None
        arrays["dtype"] = dtypes.pop() if dtypes else None
        return arrays

    def _new_state(self, name, param):
        state = {slot: None for slot in self.slots}
        state.update({counter: 0 for counter in self.counters})
        state["shape"], state["dtype"] = param.shape, param.dtype
        existing = self.state.get(name)
        if existing is not None and existing["shape"] is not None:
            raise ValueError(f"{type(self).__name__}.step: the state of parameter {name!r} has "
                             f"shape {existing['shape']} and dtype {existing['dtype']}, but the "
                             f"parameter has shape {param.shape} and dtype {param.dtype}; call "
                             f"reset() to start afresh")
        self.state[name] = state
        return state

    def _bad_gradient(self, name, param, grad):
        if grad is None:
            raise ValueError(f"{type(self).__name__}.step: no gradient for parameter {name!r}")
        raise ValueError(f"{type(self).__name__}.step: the gradient of {name!r} has shape "
                         f"{grad.shape} and dtype {grad.dtype}, the parameter {param.shape} and "
                         f"{param.dtype}")

    def _stepper(self, param, grad, state):
        """A callable applying one step to the flat views ``param`` and ``grad``,
        keeping ``state`` (the parameter's, in its shape) up to date."""
        raise NotImplementedError

    def _step_args(self, param, grad, state):
        """The step kernel of one parameter's update, as (kernel name, arrays,
        sizes, scalars) in the slots of that kernel (cnnext/_kernels/
        _optim_steps.pxi; with ``counters``, the step count's array is
        appended), or None: this optimiser has no step kernel."""
        return None


class _UpdateMemo:
    """What an optimiser's compiled update was built for (Optimizer._compiled_update)."""

    def __init__(self, optimizer, params, grads, update):
        self.update = update
        self.arrays = tuple((name, param, grads[name]) for name, param in params.items())
        # Every attribute (hyper-parameters, the state dict) by identity, each
        # parameter's state entry and the arrays in its slots, and the
        # parameters and gradients still of their shapes, C-contiguous and
        # writeable (as _program.changed checks them; the memo itself is the
        # one attribute more).
        attributes = optimizer.__dict__
        checks = [(attributes, None, len(attributes) + ("_update_memo" not in attributes))]
        checks += [(attributes, key, value) for key, value in attributes.items()
                   if key != "_update_memo"]
        state = optimizer.state
        checks.append((state, None, len(state)))
        for name, entry in state.items():
            checks.append((state, name, entry))
            checks += [(entry, slot, entry.get(slot)) for slot in optimizer.slots]
            checks += [(array, ..., array.shape) for slot in optimizer.slots
                       if (array := entry.get(slot)) is not None]
        for _, param, grad in self.arrays:
            checks += [(param, ..., param.shape), (grad, ..., grad.shape)]
        self.checks = tuple(checks)

    def describes(self, optimizer, params, grads):
        if (len(params) != len(self.arrays) or len(grads) != len(self.arrays)
                or _program.changed(self.checks) >= 0):
            return False
        for name, param, grad in self.arrays:
            if params.get(name) is not param or grads.get(name) is not grad:
                return False
        return True


class _CompiledUpdate:
    """An optimiser's update of every parameter as one Program (Optimizer._compiled_update)."""

    def __init__(self, program, counters):
        self.program, self.counters = program, counters

    def load(self):
        for state, counter in self.counters:
            counter[0] = state["step"]

    def store(self):
        for state, counter in self.counters:
            state["step"] = int(counter[0])


class SGD(Optimizer):
    """SGD(lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0)

    Stochastic gradient descent, as ``torch.optim.SGD`` (no dampening).

    Each step updates every parameter ``p`` with its gradient ``grad``::

        g = grad + weight_decay * p
        buf = g                      (first step)
        buf = momentum * buf + g     (later steps)
        g = g + momentum * buf       (Nesterov) or g = buf (momentum > 0)
        p = p - lr * g

    Parameters
    ----------
    lr : float
        Learning rate, >= 0.
    momentum : float
        Momentum factor, >= 0 (0: plain SGD, no state kept).
    nesterov : bool
        Nesterov momentum (needs momentum > 0).
    weight_decay : float
        L2 penalty, >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import optim
    >>> sgd = optim.SGD(lr=0.1, momentum=0.9)
    >>> params = {"w": np.ones(3, dtype=np.float32)}
    >>> grads = {"w": np.full(3, 0.5, dtype=np.float32)}
    >>> sgd.step(params, grads)                          # updates params in place
    >>> params["w"]
    array([0.95, 0.95, 0.95], dtype=float32)
    """

    slots = ("momentum_buffer",)
    optional_slots = ("momentum_buffer",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.lr = _validation.number("SGD", "lr", lr)
        self.momentum = _validation.number("SGD", "momentum", momentum)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"SGD: nesterov must be True or False, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.weight_decay = _validation.number("SGD", "weight_decay", weight_decay)

    def config(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _stepper(self, param, grad, state):
        buffer = None
        if self.momentum:
            if state["momentum_buffer"] is None:
                # torch starts the buffer at the first gradient: momentum * 0 + g.
                state["momentum_buffer"] = np.zeros(state["shape"], param.dtype)
            buffer = state["momentum_buffer"].reshape(-1)
        return functools.partial(_SGD_STEP[param.dtype], param, grad, buffer, self.lr,
                                 self.momentum, self.weight_decay, self.nesterov)

    def _step_args(self, param, grad, state):
        buffer = None
        if self.momentum:
            if state["momentum_buffer"] is None:
                state["momentum_buffer"] = np.zeros(state["shape"], param.dtype)
            buffer = state["momentum_buffer"].reshape(-1)
        return ("sgd", (param, grad, buffer), (param.size, self.nesterov),
                (self.lr, self.momentum, self.weight_decay))


class Adam(Optimizer):
    """Adam(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0)

    Adam, as ``torch.optim.Adam`` (no AMSGrad)::

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    with t the parameter's step count, starting at 1.

    Parameters
    ----------
    lr : float
        Learning rate, >= 0.
    betas : (float, float)
        Decay rates of the first and second moment estimates, in [0, 1).
    eps : float
        Added to the denominator, >= 0.
    weight_decay : float
        L2 penalty, >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import optim
    >>> adam = optim.Adam()                              # lr=0.001
    >>> params = {"w": np.ones(2)}
    >>> adam.step(params, {"w": np.array([0.5, -2.0])})
    >>> params["w"]                                      # the first step moves each weight by lr
    array([0.999, 1.001])
    """

    slots = ("exp_avg", "exp_avg_sq")
    counters = ("step",)

    def __init__(self, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.lr = _validation.number("Adam", "lr", lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Adam: betas must be a pair of numbers, got {betas!r}")
        self.betas = (_validation.number("Adam", "betas[0]", betas[0], below=1.0),
                      _validation.number("Adam", "betas[1]", betas[1], below=1.0))
        self.eps = _validation.number("Adam", "eps", eps)
        self.weight_decay = _validation.number("Adam", "weight_decay", weight_decay)

    def config(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _stepper(self, param, grad, state):
        kernel = _ADAM_STEP[param.dtype]
        if state["exp_avg"] is None:
            state["exp_avg"] = np.zeros(state["shape"], param.dtype)
            state["exp_avg_sq"] = np.zeros(state["shape"], param.dtype)
        exp_avg, exp_avg_sq = state["exp_avg"].reshape(-1), state["exp_avg_sq"].reshape(-1)
        beta1, beta2 = self.betas

        def step():
            state["step"] += 1
            t = state["step"]
            kernel(param, grad, exp_avg, exp_avg_sq, self.lr / (1 - beta1**t),
                   math.sqrt(1 - beta2**t), beta1, beta2, self.eps, self.weight_decay)

        return step

    def _step_args(self, param, grad, state):
        if state["exp_avg"] is None:
            state["exp_avg"] = np.zeros(state["shape"], param.dtype)
            state["exp_avg_sq"] = np.zeros(state["shape"], param.dtype)
        return ("adam", (param, grad, state["exp_avg"].reshape(-1),
                         state["exp_avg_sq"].reshape(-1)), (param.size,),
                (self.lr, *self.betas, self.eps, self.weight_decay))


class AdamW(Adam):
    """AdamW(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01)

    Adam with decoupled weight decay, as ``torch.optim.AdamW`` (no AMSGrad)::

        p = p * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    with t the parameter's step count, starting at 1.

    Parameters
    ----------
    lr : float
        Learning rate, >= 0.
    betas : (float, float)
        Decay rates of the first and second moment estimates, in [0, 1).
    eps : float
        Added to the denominator, >= 0.
    weight_decay : float
        Decoupled weight decay, >= 0 (0.01 by default, as PyTorch's).
    """

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr, betas, eps, weight_decay)

    def _stepper(self, param, grad, state):
        kernel = _ADAMW_STEP[param.dtype]
        if state["exp_avg"] is None:
            state["exp_avg"] = np.zeros(state["shape"], param.dtype)
            state["exp_avg_sq"] = np.zeros(state["shape"], param.dtype)
        exp_avg, exp_avg_sq = state["exp_avg"].reshape(-1), state["exp_avg_sq"].reshape(-1)
        beta1, beta2 = self.betas

        def step():
            state["step"] += 1
            t = state["step"]
            kernel(param, grad, exp_avg, exp_avg_sq, self.lr / (1 - beta1**t),
                   math.sqrt(1 - beta2**t), beta1, beta2, self.eps,
                   1 - self.lr * self.weight_decay)

        return step

    def _step_args(self, param, grad, state):
        return None  # Adam's step kernel would apply the decay as L2


class RMSprop(Optimizer):
    """RMSprop(lr=0.01, alpha=0.99, eps=1e-08, weight_decay=0.0, momentum=0.0, centered=False)

    RMSprop, as ``torch.optim.RMSprop``.

    Each step, for every parameter ``p`` and its gradient::

        g = grad + weight_decay * p
        s = alpha * s + (1 - alpha) * g * g
        a = alpha * a + (1 - alpha) * g           (centered)
        avg = sqrt(s - a * a) + eps (centered) or sqrt(s) + eps
        buf = momentum * buf + g / avg, p = p - lr * buf     (momentum > 0)
        or p = p - lr * g / avg

    Parameters
    ----------
    lr : float
        Learning rate, >= 0.
    alpha : float
        Smoothing constant of the squared-gradient average, in [0, 1).
    eps : float
        Added to the denominator, >= 0.
    weight_decay : float
        L2 penalty, >= 0.
    momentum : float
        Momentum factor, >= 0.
    centered : bool
        Normalise by an estimate of the gradient's variance instead of its
        second moment.
    """

    slots = ("square_avg", "momentum_buffer", "grad_avg")
    optional_slots = ("momentum_buffer", "grad_avg")

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__()
        self.lr = _validation.number("RMSprop", "lr", lr)
        self.alpha = _validation.number("RMSprop", "alpha", alpha, below=1.0)
        self.eps = _validation.number("RMSprop", "eps", eps)
        self.weight_decay = _validation.number("RMSprop", "weight_decay", weight_decay)
        self.momentum = _validation.number("RMSprop", "momentum", momentum)
        if not isinstance(centered, (bool, np.bool_)):
            raise TypeError(f"RMSprop: centered must be True or False, got {centered!r}")
        self.centered = bool(centered)

    def config(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum": self.momentum,
                "centered": self.centered}

    def _stepper(self, param, grad, state):
        kernel = _RMSPROP_STEP[param.dtype]
        if state["square_avg"] is None:
            state["square_avg"] = np.zeros(state["shape"], param.dtype)
        if self.momentum and state["momentum_buffer"] is None:
            state["momentum_buffer"] = np.zeros(state["shape"], param.dtype)
        if self.centered and state["grad_avg"] is None:
            state["grad_avg"] = np.zeros(state["shape"], param.dtype)
        square_avg = state["square_avg"].reshape(-1)
        buffer = state["momentum_buffer"].reshape(-1) if self.momentum else None
        grad_avg = state["grad_avg"].reshape(-1) if self.centered else None

        def step():
            kernel(param, grad, square_avg, grad_avg, buffer, self.lr, self.alpha, self.eps,
                   self.weight_decay, self.momentum)

        return step

"""Plans of a whole network: the passes of ``Sequential`` as compiled Programs.

``NetworkPlan`` builds, for one (layers, example shape, batch, dtype, mode),
every buffer and the Programs of the forward pass, the loss, the softmax
and the backward pass, and a ``Runner`` driving them over batches.
``PlanCache`` keeps a bounded number of them per model and hands each to
one thread at a time.
"""

import collections
import threading

import numpy as np

from .._kernels import _program
from .builder import FOLDS, MAX_KEYED_PASSES, Builder
from .kernels import kernel

# Modes: what a plan computes.  "fit" needs no gradient for the input (no
# layer upstream), "backward" (Sequential.backward) returns it.
MODES = {"predict": (False, False), "evaluate": (False, False), "fit": (True, False),
         "backward": (True, True)}

# Fusion passes: (layer types, builder function), tried in order at each
# position of the network before the layers' own steps.  A function takes
# (builder, layers, x) for the matching run of layers and returns the output
# buffer, or NotImplemented to leave those layers to their own steps.
FUSIONS = []

_KEY_LIMIT = 2**64

_STATUS = {1: "a label outside the model's classes", 2: "a pooling index outside its plane"}


class NotCompiled(Exception):
    """A layer of the network has no compiled steps: the network runs layer by layer."""


def register_fusion(layer_types, build):
    """register_fusion(layer_types, build)

    Let ``build(builder, layers, x)`` compile any run of consecutive layers
    of exactly ``layer_types`` (a tuple of classes) as one or more steps of
    its own (a fused kernel).  It returns the output buffer of the last of
    those layers, or NotImplemented to leave them to their own steps.
    """
    FUSIONS.append((tuple(layer_types), build))


def register_fold(layer_types, build):
    """register_fold(layer_types, build)

    As ``register_fusion``, for a rewrite whose results differ from the
    layers' by rounding (an evaluation-mode batch norm folded into the
    convolution before it): tried before the fusions, and inside layers
    holding layers (Residual blocks), whose layer-by-layer path fuses
    nothing.
    """
    FOLDS.append((tuple(layer_types), build))


def uint8_table(dtype):
    """The 256 values x / 255 - 0.5 of a uint8 x in ``dtype``, computed by the
    same NumPy operations the layer-by-layer path applies to whole batches
    (so staging through the table gives the same bits)."""
    table = np.empty(256, dtype)
    np.divide(np.arange(256, dtype=np.uint8), dtype.type(255), out=table)
    np.subtract(table, dtype.type(0.5), out=table)
    return table


class NetworkPlan:
    """NetworkPlan(layers, example_shape, batch, dtype, mode)

    Raises NotCompiled when a layer provides no steps, ValueError (naming the
    layer and the parameter) when a parameter does not fit its layer.

    Attributes
    ----------
    runner : cnnext._kernels._program.Runner
    checks : tuple
        What must still hold for the plan to describe the layers (see
        ``_program.changed``).
    key : tuple
        (mode, batch, example shape).
    input, output : ndarray
        The staged batch and the last layer's output buffer.
    input_gradient, output_gradient : ndarray or None
        Their gradients ("backward" mode).
    """

    def __init__(self, layers, example_shape, batch, dtype, mode, layer_checks=()):
        gradients, input_gradient = MODES[mode]
        b = Builder(dtype, batch, gradients, input_gradient, mode)
        x = b.start(example_shape)
        out = b.build_layers(layers, x, fusions=FUSIONS)
        if out is NotImplemented:
            raise NotCompiled(f"layer {b.index} ({b._layer[1]!r}) has no compiled steps")
        self.input, self.output = x, out
        self.dtype, self.batch, self.mode = b.dtype, batch, mode
        self.key = (mode, batch, tuple(example_shape))
        self.output_gradient = b.gradient(out) if gradients else None
        self.input_gradient = b.gradient(x) if input_gradient else None
        work = b.finish_workspace()
        forward = self._program(b.forward_steps)
        backward = self._program([s for group in reversed(b.backward_groups) for s in group])
        loss = softmax = None
        labels = loss_value = probabilities = None
        if out.ndim == 2 and mode != "backward":
            labels = b.buffer((batch,), np.int64)
            loss_value = b.buffer((1,), np.float64)
            row_loss = b.buffer((batch,), np.float64)
            glogits = self.output_gradient if gradients else b.buffer(out.shape)
            loss = _program.Program()
            loss.add(kernel("softmax_cross_entropy", b.dtype),
                     (out, labels, glogits, loss_value, row_loss), (batch, out.shape[1]),
                     name="softmax_cross_entropy")
            probabilities = b.buffer(out.shape)
            softmax = _program.Program()
            softmax.add(kernel("softmax", b.dtype), (out, probabilities), (batch, out.shape[1]),
                        name="softmax")
        elements = int(np.prod(example_shape, dtype=np.int64))
        logits = out if out.ndim == 2 else out.reshape(batch, -1)
        self.runner = _program.Runner(batch, elements, b.dtype.name, x, forward, logits,
                                      loss=loss, labels=labels, loss_value=loss_value,
                                      probabilities=probabilities, softmax=softmax,
                                      backward=backward)
        self.forward_program, self.backward_program = forward, backward
        self.probabilities = probabilities
        self.checks = tuple(b.checks) + tuple(layer_checks)
        self._keep = (b.keep, work)
        self.draws = tuple(b.draws)
        # Training passes one call may run (the key buffers' size), or None.
        self.max_passes = MAX_KEYED_PASSES if self.draws else None

    def draw_keys(self, passes):
        """Draw the keys of the next ``passes`` (<= max_passes) training passes
        into the plan, pass after pass and layer after layer as the
        layer-by-layer path draws them.  Returns what ``undraw_keys`` needs
        (None when no layer draws keys)."""
        if not self.draws:
            return None
        states = {id(g): (g, g.bit_generator.state) for g, _, _ in self.draws}
        for i in range(passes):
            for generator, keys, _ in self.draws:
                keys[i] = generator.integers(_KEY_LIMIT, dtype=np.uint64)
        for _, _, index in self.draws:
            index[0] = 0
        return states

    def undraw_keys(self, states, passes):
        """After a run that stopped early: the generators as if the keys of only
        its first ``passes`` forward passes had been drawn."""
        if states is None:
            return
        for generator, state in states.values():
            generator.bit_generator.state = state
        for _ in range(passes):
            for generator, _, _ in self.draws:
                generator.integers(_KEY_LIMIT, dtype=np.uint64)

    @staticmethod
    def _program(steps):
        program = _program.Program()
        for capsule, arrays, sizes, scalars, plans, label in steps:
            program.add(capsule, arrays, sizes, scalars, plans, name=label)
        return program

    def stale(self):
        """Whether a layer's parameter or the layer list changed since the plan was built."""
        return _program.changed(self.checks) >= 0


def raise_status(owner, status, where, program):
    """A kernel's non-zero status as an exception (not reached with validated data)."""
    what = _STATUS.get(status, f"status {status}")
    step = program.names[where] if program is not None and 0 <= where < len(program) else "?"
    raise ValueError(f"{owner}: step {step} found {what}")


class PlanCache:
    """PlanCache(size=8)

    Plans by key, at most ``size`` keys (least recently used dropped first).
    ``acquire`` hands a plan to one caller at a time: a plan in use is never
    given to another thread, which gets an idle one of the same key or a new
    one (so concurrent calls on one model each run on buffers of their own).
    """

    def __init__(self, size=8):
        self.size = size
        self._idle = collections.OrderedDict()
        self._lock = threading.Lock()
        # One idle plan per key taken and returned without the lock (dict.pop
        # and setdefault are atomic): the common case of one caller at a time.
        self._hot = {}

    def acquire(self, key, build):
        """An idle, still valid plan of ``key``, or ``build(key)``'s."""
        plan = self._hot.pop(key, None)
        if plan is None:
            with self._lock:
                idle = self._idle.get(key)
                if idle:
                    plan = idle.pop()
                    self._idle.move_to_end(key)
        if plan is not None and plan.stale():
            plan = None
        if plan is None:
            plan = build(key)
        return plan

    def release(self, key, plan, per_key=4):
        """Return ``plan`` for later calls of ``key`` (kept unless ``per_key`` idle ones are)."""
        hot = self._hot
        if len(hot) >= self.size:
            hot.clear()
        if hot.setdefault(key, plan) is plan:
            return
        with self._lock:
            idle = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if len(idle) < per_key:
                idle.append(plan)
            while len(self._idle) > self.size:
                self._idle.popitem(last=False)

    def clear(self):
        self._hot.clear()
        with self._lock:
            self._idle.clear()

    def __len__(self):
        """Keys with idle plans."""
        return len(set(self._idle) | set(self._hot))

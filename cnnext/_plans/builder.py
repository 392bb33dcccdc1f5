"""The builder a layer adds its compiled steps to (see cnnext/_plans/__init__.py).

A ``Builder`` collects, for one (network, batch shape, dtype, mode), the
buffers and the steps of every pass: forward steps in layer order, each
layer's backward steps in a group of its own (the groups run in reverse
layer order), and the identity checks that tell a later call whether the
plan still describes the layers (same parameter arrays, same layer list).
Buffers are allocated here, once; every array a step points to is kept by
the Program that runs the step.
"""

import numpy as np

from .. import _validation
from .kernels import kernel

# Training passes a plan runs in one call at most when a layer draws a key
# per pass (Dropout): the size of the plan's key buffers.
MAX_KEYED_PASSES = 256

# Folds: (layer types, build function) rewriting a run of evaluation-mode
# layers as other steps whose results differ from the layers' by rounding
# only (cnnext/_plans/folding.py).  Tried first at every position where
# layers are built, inside the layers holding layers (Residual) too.
FOLDS = []


class Workspace:
    """A placeholder for the plan's one scratch buffer (the steps run one after
    another, so they share it); ``Builder.finish`` allocates it at the
    largest size asked for and puts it in place of every placeholder."""

    def __init__(self, builder):
        self.builder = builder


class Builder:
    """Builder(dtype, batch, gradients, input_gradient, mode)

    Attributes a layer reads
    ------------------------
    dtype : numpy.dtype
        The model's dtype, of every activation and gradient.
    batch : int
        Examples per call (the first axis of every activation).
    gradients : bool
        Whether the plan computes gradients (``fit``, ``backward``): a layer
        then adds backward steps after its forward steps.
    mode : str
        "predict", "evaluate", "fit" or "backward".
    """

    def __init__(self, dtype, batch, gradients, input_gradient, mode):
        self.dtype = np.dtype(dtype)
        self.batch = batch
        self.gradients = gradients
        self.mode = mode
        self._input_gradient = input_gradient
        self.forward_steps = []
        self.backward_groups = []
        self.checks = []
        self.keep = []
        self.draws = []          # (generator, keys, index) of the layers drawing keys
        self._grad = {}          # id(activation) -> its gradient buffer (or None)
        self._aliases = {}       # id(view) -> the activation it views
        self._workspace = Workspace(self)
        self._workspace_elems = 0
        self._layer = None       # (index, layer) being built
        self._indices = {}       # id(layer) -> its index, for the layers being built
        self._dict_checked = set()
        self.input = None

    # ------------------------------------------------------------ buffers
    def start(self, example_shape):
        """The staged input buffer (batch, *example_shape)."""
        self.input = self.buffer((self.batch, *example_shape))
        return self.input

    def buffer(self, shape, dtype=None):
        """A new C-contiguous buffer of ``shape`` (the model's dtype by default),
        owned by the plan.  Initialised to zeros (never read before written,
        but a plan's memory is then never uninitialised)."""
        array = np.zeros(shape, self.dtype if dtype is None else dtype)
        self.keep.append(array)
        return array

    def view(self, activation, shape):
        """A reshaped view of ``activation`` (Flatten): its gradient is the same
        view of the activation's gradient."""
        view = activation.reshape(shape)
        self._aliases[id(view)] = activation
        self.keep.append(view)
        return view

    def gradient(self, activation):
        """The gradient buffer of ``activation`` (same shape), allocated on first
        use; None when the plan does not need it (the input's gradient in
        ``fit``: nothing is upstream of the first layer)."""
        key = id(activation)
        if key in self._grad:
            return self._grad[key]
        if key in self._aliases:
            base = self._aliases[key]
            grad = self.gradient(base)
            grad = None if grad is None else grad.reshape(activation.shape)
        elif activation is self.input and not self._input_gradient:
            grad = None
        else:
            grad = self.buffer(activation.shape)
        self._grad[key] = grad
        if grad is not None:
            self.keep.append(grad)
        return grad

    def branch(self, activation):
        """A view of ``activation`` for one branch of a block that reads it twice
        (Residual): its gradient is a buffer of its own, so the gradients the
        two branches write can be added."""
        view = activation.view()
        self.keep.append(view)
        self._grad[id(view)] = self.buffer(view.shape) if self.gradients else None
        return view

    def share_gradient(self, activation, other):
        """Make ``other``'s gradient buffer that of ``activation`` too (a new
        activation whose gradient is the one ``other`` already has)."""
        self._grad[id(activation)] = self.gradient(other)

    def keys(self, generator):
        """(keys, index): a uint64 buffer the plan fills, before each run of
        passes, with one key per pass drawn from ``generator`` as the layer
        draws it (``int(generator.integers(2**64, dtype=uint64))``), and the
        int64 index of the next pass's key, which the layer's forward step
        advances (``NetworkPlan.draw_keys``)."""
        keys = self.buffer((MAX_KEYED_PASSES,), np.uint64)
        index = self.buffer((1,), np.int64)
        self.draws.append((generator, keys, index))
        return keys, index

    def workspace(self, elements):
        """The plan's scratch buffer, of at least ``elements`` elements of the
        model's dtype, shared by every step (they run one after another)."""
        self._workspace_elems = max(self._workspace_elems, int(elements))
        return self._workspace

    # --------------------------------------------------------- parameters
    def layer(self, index, layer):
        """Start building ``layer``, at ``index`` in the network (a string such as
        "3.block.0" inside a layer holding layers)."""
        self._layer = (index, layer)
        self._indices = {id(layer): index}
        self.backward_groups.append([])

    @property
    def index(self):
        """The index of the layer being built."""
        return self._layer[0]

    def group(self):
        """The current layer's group of backward steps (for ``backward(group=)``)."""
        return self.backward_groups[-1]

    def build_layers(self, layers, x, prefix="", fusions=()):
        """Build ``layers`` in order on the input buffer ``x`` (their indices
        ``prefix`` + position), trying the folds, then ``fusions`` (see
        network.register_fusion), then each layer's own steps; return the
        last output buffer, or NotImplemented when a layer has no steps."""
        i = 0
        while i < len(layers):
            out, used = self._rewritten(layers, i, x, prefix, (*FOLDS, *fusions))
            if not used:
                self.layer(f"{prefix}{i}" if prefix else i, layers[i])
                build = getattr(layers[i], "_build_steps", None)
                out = NotImplemented if build is None else build(self, x)
                used = 1
            if out is NotImplemented:
                return NotImplemented
            x = out
            i += used
        return x

    def _rewritten(self, layers, i, x, prefix, rewrites):
        for types, build in rewrites:
            run = layers[i:i + len(types)]
            if len(run) == len(types) and all(type(layer) is t for layer, t in
                                              zip(run, types, strict=True)):
                self.layer(f"{prefix}{i}" if prefix else i, run[0])
                self._indices = {id(layer): f"{prefix}{i + j}" if prefix else i + j
                                 for j, layer in enumerate(run)}
                out = build(self, run, x)
                if out is not NotImplemented:
                    return out, len(types)
                self.backward_groups.pop()
        return x, 0

    def _where(self, layer):
        return f"layer {self._indices.get(id(layer), '?')} ({layer!r})"

    def parameter(self, layer, name, shape, group="params", dtype=None, written=None):
        """``layer.params[name]`` (or ``layer.grads[name]`` with group="grads",
        ``layer.buffers[name]`` with group="buffers"), checked: an ndarray of
        ``shape`` and the model's dtype (or ``dtype``), C-contiguous,
        writeable when the plan writes it: gradients always, parameters in a
        "fit" plan (its optimiser step updates them), buffers when the layer
        says so (``written``; a running statistic only in training mode).  A
        read-only array the plan only reads stays usable, as on the
        layer-by-layer path.  A replaced array is picked up by the next plan;
        one that does not fit raises ValueError naming the layer and the
        parameter.  The plan records the array, so a call after it is
        replaced builds a new plan."""
        container = getattr(layer, group)
        array = container.get(name) if isinstance(container, dict) else None
        if written is None:
            written = group == "grads" or (group == "params" and self.mode == "fit")
        verb = ("trained" if group == "params" else "written") if written else None
        _validation.bound_array(f"{self._where(layer)}: {group}[{name!r}]", array, shape,
                                self.dtype if dtype is None else np.dtype(dtype), verb)
        self.checks.append((container, name, array))
        if (layer, group) not in self._dict_checked:
            self._dict_checked.add((layer, group))
            self.checks.append((layer.__dict__, group, container))
        return array

    def parameter_gradient(self, layer, name, shape):
        """``layer.grads[name]``, checked as ``parameter``: where the backward
        steps write the gradient of that parameter."""
        return self.parameter(layer, name, shape, group="grads")

    # -------------------------------------------------------------- steps
    def forward(self, name, arrays, sizes=(), scalars=(), plans=(), keep=()):
        """Add a forward step: the step kernel ``name`` (for the model's dtype)
        bound to ``arrays`` (ndarrays, None, or ``workspace(...)``), ``sizes``,
        ``scalars`` and ``plans`` (capsules); ``keep``: objects the plans'
        memory belongs to (e.g. conv ``Plan`` objects)."""
        self.forward_steps.append(self._step(name, arrays, sizes, scalars, plans, keep))

    def backward(self, name, arrays, sizes=(), scalars=(), plans=(), keep=(), group=None):
        """Add a backward step to the current layer's group, or to ``group``
        (groups run in reverse layer order, the steps of a group in the order
        added)."""
        group = self.backward_groups[-1] if group is None else group
        group.append(self._step(name, arrays, sizes, scalars, plans, keep))

    def _step(self, name, arrays, sizes, scalars, plans, keep):
        self.keep.extend(keep)
        label = f"{name}" if self._layer is None else f"{self._layer[0]}:{name}"
        return (kernel(name, self.dtype), list(arrays), tuple(int(s) for s in sizes),
                tuple(float(f) for f in scalars), tuple(plans), label)

    # ------------------------------------------------------------- finish
    def finish_workspace(self):
        """Allocate the shared scratch buffer and put it in place in every step."""
        work = self.buffer(max(self._workspace_elems, 1))
        for steps in [self.forward_steps, *self.backward_groups]:
            for step in steps:
                arrays = step[1]
                for i, array in enumerate(arrays):
                    if array is self._workspace:
                        arrays[i] = work
        return work

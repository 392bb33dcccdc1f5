"""Plans: a network's passes validated once per shape, then run as compiled steps.

A *plan* exists per (model, input shape, dtype, mode).  Building it
validates everything once (the layers' shapes, every parameter's shape,
dtype and layout), allocates every activation, gradient and workspace
buffer, and records each kernel call as a *step*: a step kernel of some
family with its arguments (raw pointers into those buffers, sizes, conv
``Plan`` layouts) bound.  Running it is one call into the compiled executor
(cnnext/_kernels/_program.pyx), which loops over the steps, and over
batches, with the GIL released; it computes bit for bit what the
layer-by-layer path computes (the same kernels, the same arguments).

Modules
-------
kernels   the step kernels of every family, by (name, dtype name)
builder   ``Builder``: what a layer adds its steps and buffers to
network   ``NetworkPlan`` (the Programs and the Runner of one key),
          ``PlanCache``, fusion passes
folding   Conv2D -> BatchNorm2D folded in evaluation plans

How a layer provides its compiled steps
---------------------------------------
A layer class implements ``_build_steps(self, builder, x)``: ``x`` is the
buffer of its input batch (an ndarray owned by the plan, shape (batch,
...)); the method adds steps and returns the buffer of its output:

    def _build_steps(self, b, x):
        w = b.parameter(self, "weight", (K, C))          # checked, recorded
        y = b.buffer((b.batch, K))                       # owned by the plan
        b.forward("linear", (x, w, None, y), (b.batch, C, K))
        if b.gradients:                                  # fit / backward
            gy, gx = b.gradient(y), b.gradient(x)        # gx None: not needed
            gw = b.parameter_gradient(self, "weight", (K, C))
            b.backward("linear_backward", (gy, x, w, gx, gw, None), (b.batch, C, K, 0), (1.0,))
        return y

Step names are those of the families' ``step_kernels()`` tables (the
StepArgs slots of each are documented beside its kernel, in
cnnext/_kernels/*_steps.pxi, _activation.pyx, _loss.pyx).  Backward steps
of one layer run in the order added, layers in reverse order.  Scratch
memory comes from ``b.workspace(elements)`` (one buffer for the whole plan),
a reshape from ``b.view(x, shape)`` (its gradient is the same view of x's),
a second reader of one activation (a residual branch) from ``b.branch(x)``
(its gradient is a buffer of its own), a random key per training pass from
``b.keys(generator)`` (drawn before each run, ``NetworkPlan.draw_keys``).

A layer without ``_build_steps`` (or returning NotImplemented) still runs:
the whole model then takes the layer-by-layer path (each layer's
``_forward`` / ``_backward`` through ``cnnext.functional``), serialised by
the model's lock.  That path is the reference the plans are tested against.

Fusions: ``network.register_fusion((Conv2D, ReLU, MaxPool2D), build)`` lets
one function compile a run of consecutive layers as fused steps; it is
tried before the layers' own steps at every position.  Folds
(``network.register_fold``, cnnext/_plans/folding.py: an evaluation-mode
BatchNorm2D folded into the Conv2D before it) are tried first, inside
Residual blocks too (``Builder.build_layers``); they agree with the
layer-by-layer path to rounding, not bitwise.

Threads: a plan is used by one call at a time (``PlanCache.acquire``); two
threads calling the same model get two plans of the same key, so each
computes what a serial call computes.
"""

from .network import NetworkPlan, NotCompiled, PlanCache, register_fusion, uint8_table

__all__ = ["NetworkPlan", "NotCompiled", "PlanCache", "register_fusion", "uint8_table"]

"""The step kernels of every family, by (name, dtype name), as the executor takes them.

Each kernel family exports its step kernels as PyCapsules
(``step_kernels()``, see cnnext/_kernels/_step.pxd); the ISA families come
from the build ``cnnext._dispatch`` chose, the same module the functional
wrappers call, so a step runs exactly the code its functional runs.
"""

import numpy as np

from .. import _dispatch
from .._kernels import _activation, _loss

_FAMILIES = (*(_dispatch.load(family) for family in ("_conv", "_depthwise", "_dense", "_pool",
                                                      "_norm", "_optim")),
             _activation, _loss)

KERNELS = {}


def register(kernels):
    """Add ``{(name, dtype name): capsule}`` to KERNELS, also keyed by NumPy dtype
    (looking up dtype.name costs more than the lookup)."""
    for (name, dtype), capsule in kernels.items():
        KERNELS[name, dtype] = KERNELS[name, np.dtype(dtype)] = capsule


for _module in _FAMILIES:
    register(_module.step_kernels())


def kernel(name, dtype):
    """The capsule of step kernel ``name`` for ``dtype`` (a NumPy dtype or its name)."""
    return KERNELS[name, dtype]

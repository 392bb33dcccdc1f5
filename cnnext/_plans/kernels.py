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
for _module in _FAMILIES:
    KERNELS.update(_module.step_kernels())
# Also by NumPy dtype (looking up dtype.name costs more than the lookup).
KERNELS.update({(name, np.dtype(dtype)): capsule for (name, dtype), capsule in KERNELS.items()})


def kernel(name, dtype):
    """The capsule of step kernel ``name`` for ``dtype`` (a NumPy dtype or its name)."""
    return KERNELS[name, dtype]

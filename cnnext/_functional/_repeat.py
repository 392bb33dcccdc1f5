"""Repeat-call fast paths of the functional wrappers (cnnext/_kernels/_calls.pyx).

Each wrapper owns a ``Calls`` object: before validating, it offers its
arguments to it (``calls.run(arrays, others)``); after a validated call
whose arrays were exact C-contiguous ndarrays and whose outputs it
allocated, it remembers the call (``remember``), so that later calls with
arrays of the same shapes and dtypes, and the same other arguments (ints,
floats, bools, None and tuples of them, of the same types), run the same
step kernel with no Python-level validation.
"""

import numpy as np

from .._kernels import _calls
from .._plans.kernels import kernel

Calls = _calls.Calls
ARRAY, ZEROS, SCALAR = _calls.OUTPUT_ARRAY, _calls.OUTPUT_ZEROS, _calls.OUTPUT_SCALAR
NONE = (-1, None, None, ARRAY)  # a None in the results


def plain(*arrays):
    """Whether every argument is None or an exact C-contiguous ndarray: the
    arguments a remembered call can match later."""
    for array in arrays:
        if array is not None and not (type(array) is np.ndarray and array.flags.c_contiguous):
            return False
    return True


def remember(calls, name, dtype, operands, outputs, sizes=(), scalars=(), plans=(), keep=(),
             workspace=None, work_slot=-1, extra=None):
    """Remember a validated call: the step kernel ``name`` for ``dtype`` with
    ``operands`` ((slot, array) or None per array argument), ``outputs``
    ((slot, shape, dtype, kind) per result) and the rest bound (see
    ``_calls.Entry``)."""
    if _calls.comparable(extra):
        calls.remember(_calls.Entry(kernel(name, dtype), operands, outputs, sizes, scalars,
                                    plans, keep, workspace, work_slot, extra))


def slot(index, array, written=False):
    """(index, array[, written]), or None for a None argument."""
    return None if array is None else (index, array, written)

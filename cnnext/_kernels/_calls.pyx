# Repeat-call fast paths: a functional call whose arrays have the shapes,
# dtypes and layout of an earlier validated call runs its step kernel
# directly, with no Python-level validation.
#
# Layers:
#
# 1. cnnext._functional.* : each public function first offers its arguments
#    to its ``Calls`` object; on a miss it validates them in Python as
#    always, runs, and ``remember``s the call as an ``Entry``: the step
#    kernel (_step.pxd) with its sizes, scalars and plans bound, and for
#    each array argument the exact shape and dtype it was validated with.
# 2. ``Calls.run`` (here): compares the arguments with a few remembered
#    entries in C (exact ndarray, C-contiguous, same dims and dtype, same
#    hyper-parameters), allocates the outputs, binds the pointers, runs the
#    kernel with the GIL released.  A kernel status (e.g. a label outside
#    the classes) returns None: the caller's validated path then raises
#    the error it always raised.
#
# Thread safety: an entry owns a workspace; a call marks the entry busy
# (under the GIL) while it runs, and a concurrent call of the same shape
# takes the validated path instead.

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer, PyCapsule_IsValid
from libc.string cimport memset

cimport numpy as cnp

from ._step cimport STEP_CAPSULE, STEP_PLANS, STEP_POINTERS, STEP_SCALARS, STEP_SIZES
from ._step cimport StepArgs, step_kernel

import numpy as np

cnp.import_array()

cdef enum:
    MAX_OPERANDS = 4
    MAX_OUTPUTS = 3
    MAX_DIMS = 4
    ENTRIES = 8

# Where an output goes: a fresh array of the entry's shape and dtype, a
# fresh array filled with zeros, or the float64 scratch value returned as a
# Python float (a loss).
OUTPUT_ARRAY, OUTPUT_ZEROS, OUTPUT_SCALAR = 0, 1, 2


cdef bint same_value(object a, object b):
    """``a == b`` with the same types all the way down (tuples element by
    element): True == 1 and 1.0 == 1 do not count as the same argument, since
    the validated path may refuse one and take the other.  Only None, bool,
    int, float and tuples of them compare (``remember`` keeps nothing else);
    anything else (an array, a list) never matches."""
    cdef Py_ssize_t i
    cdef type kind = type(a)
    if kind is not type(b):
        return False
    if kind is tuple:
        if len(<tuple>a) != len(<tuple>b):
            return False
        for i in range(len(<tuple>a)):
            if not same_value((<tuple>a)[i], (<tuple>b)[i]):
                return False
        return True
    if a is None or kind is bool:
        return a is b
    if kind is int or kind is float:
        return a == b
    return False


def comparable(value):
    """comparable(value)

    Whether ``value`` is made of None, bool, int, float and tuples of them:
    the other arguments a remembered call can be matched by.
    """
    if value is None or type(value) in (bool, int, float):
        return True
    return type(value) is tuple and all(comparable(v) for v in value)


cdef inline bint fits(cnp.ndarray array, int ndim, const cnp.npy_intp* dims, int typenum,
                      bint written):
    """An array of exactly that shape and dtype, C-contiguous (and writeable when written)."""
    cdef int d
    if (cnp.PyArray_NDIM(array) != ndim or cnp.PyArray_TYPE(array) != typenum
            or not cnp.PyArray_IS_C_CONTIGUOUS(array)
            or (written and not cnp.PyArray_ISWRITEABLE(array))):
        return False
    for d in range(ndim):
        if cnp.PyArray_DIM(array, d) != dims[d]:
            return False
    return True


cdef inline bint overlap(cnp.ndarray a, object other):
    """Whether the C-contiguous ``a`` and the C-contiguous ndarray ``other``
    share memory (for contiguous arrays, overlapping bounds do)."""
    cdef cnp.ndarray b = <cnp.ndarray>other
    cdef char* a0 = <char*>cnp.PyArray_DATA(a)
    cdef char* b0 = <char*>cnp.PyArray_DATA(b)
    cdef Py_ssize_t a_bytes = cnp.PyArray_NBYTES(a), b_bytes = cnp.PyArray_NBYTES(b)
    if a_bytes == 0 or b_bytes == 0:
        return False
    return a0 < b0 + b_bytes and b0 < a0 + a_bytes


cdef class Entry:
    """Entry(kernel, operands, outputs, sizes=(), scalars=(), plans=(), keep=(), workspace=0,
    work_slot=-1, extra=None)

    One remembered call.  ``operands``: per argument, None (the argument
    must be None) or (slots, ndarray the call was validated with[,
    written]): a later argument matches when it is an exact C-contiguous
    ndarray of the same dtype and shape (and writeable, sharing no memory
    with the other arguments, when ``written``); its data pointer goes to
    StepArgs.p[slot] for each of ``slots`` (an int or a tuple).
    ``outputs``: (slot, shape, dtype, kind) per result, kind OUTPUT_ARRAY,
    OUTPUT_ZEROS or OUTPUT_SCALAR (slot -1: not passed to the kernel, e.g.
    None in a result tuple is (-1, None, None, 0)).  ``workspace``:
    (elements, dtype) of the kernel's scratch, at StepArgs.p[work_slot].
    ``extra``: the other arguments, compared with ``same_value``.
    """

    cdef step_kernel kernel
    cdef StepArgs args
    cdef int n_operands, n_outputs, work_slot
    cdef int operand_slot[MAX_OPERANDS]
    cdef int operand_slot2[MAX_OPERANDS]
    cdef bint operand_written[MAX_OPERANDS]
    cdef int operand_ndim[MAX_OPERANDS]
    cdef int operand_type[MAX_OPERANDS]
    cdef cnp.npy_intp operand_dims[MAX_OPERANDS][MAX_DIMS]
    cdef int output_slot[MAX_OUTPUTS]
    cdef int output_kind[MAX_OUTPUTS]
    cdef int output_ndim[MAX_OUTPUTS]
    cdef int output_type[MAX_OUTPUTS]
    cdef cnp.npy_intp output_dims[MAX_OUTPUTS][MAX_DIMS]
    cdef bint busy
    cdef object extra, workspace, scalar, keep

    def __init__(self, kernel, operands, outputs, sizes=(), scalars=(), plans=(), keep=(),
                 workspace=None, int work_slot=-1, extra=None):
        cdef int i, d
        cdef cnp.ndarray array
        if not PyCapsule_IsValid(kernel, STEP_CAPSULE):
            raise TypeError("kernel must be a step-kernel capsule")
        if (len(operands) > MAX_OPERANDS or len(outputs) > MAX_OUTPUTS
                or len(sizes) > STEP_SIZES or len(scalars) > STEP_SCALARS
                or len(plans) > STEP_PLANS):
            raise ValueError("too many arguments for one entry")
        self.kernel = <step_kernel>PyCapsule_GetPointer(kernel, STEP_CAPSULE)
        memset(&self.args, 0, sizeof(StepArgs))
        for i in range(len(sizes)):
            self.args.n[i] = sizes[i]
        for i in range(len(scalars)):
            self.args.f[i] = scalars[i]
        for i in range(len(plans)):
            if plans[i] is not None:
                self.args.plan[i] = PyCapsule_GetPointer(plans[i], PyCapsule_GetName(plans[i]))
        self.n_operands = len(operands)
        for i in range(self.n_operands):
            if operands[i] is None:
                self.operand_slot[i] = -1
                self.operand_ndim[i] = -1
                continue
            slot, array = operands[i][:2]
            self.operand_written[i] = len(operands[i]) > 2 and operands[i][2]
            slots = (slot,) if isinstance(slot, int) else tuple(slot)
            if not 1 <= len(slots) <= 2:
                raise ValueError("an operand goes to one or two slots")
            self.operand_slot[i] = slots[0]
            self.operand_slot2[i] = slots[len(slots) - 1]
            self.operand_ndim[i] = cnp.PyArray_NDIM(array)
            self.operand_type[i] = cnp.PyArray_TYPE(array)
            if self.operand_ndim[i] > MAX_DIMS:
                raise ValueError("too many dimensions")
            for d in range(self.operand_ndim[i]):
                self.operand_dims[i][d] = cnp.PyArray_DIM(array, d)
        self.n_outputs = len(outputs)
        for i in range(self.n_outputs):
            slot, shape, dtype, kind = outputs[i]
            self.output_slot[i], self.output_kind[i] = slot, kind
            if shape is None:
                self.output_ndim[i] = -1
                continue
            if len(shape) > MAX_DIMS:
                raise ValueError("too many dimensions")
            self.output_ndim[i] = len(shape)
            self.output_type[i] = np.dtype(dtype).num
            for d in range(len(shape)):
                self.output_dims[i][d] = shape[d]
        self.scalar = np.zeros(1, np.float64)
        self.work_slot = work_slot
        self.workspace = None
        if work_slot >= 0:
            elements, dtype = workspace
            self.workspace = np.empty(max(elements, 1), dtype)
            self.args.p[work_slot] = cnp.PyArray_DATA(self.workspace)
        self.extra, self.keep, self.busy = extra, (kernel, tuple(plans), keep), False

    cdef inline bint matches(self, tuple operands, object extra):
        cdef int i, d
        cdef object value
        cdef cnp.ndarray array
        if self.busy:
            return False
        for i in range(self.n_operands):
            value = operands[i]
            if self.operand_ndim[i] < 0:
                if value is not None:
                    return False
                continue
            if type(value) is not cnp.ndarray:
                return False
            array = <cnp.ndarray>value
            if not fits(array, self.operand_ndim[i], self.operand_dims[i],
                        self.operand_type[i], self.operand_written[i]):
                return False
            if self.operand_written[i]:
                for d in range(self.n_operands):
                    if d != i and operands[d] is not None and overlap(array, operands[d]):
                        return False
        return same_value(extra, self.extra)

    cdef object run(self, tuple operands, object outs):
        """The results, or None: an ``outs`` buffer that does not fit, or a kernel status."""
        cdef int i, j, status
        cdef object given
        cdef list results = []
        cdef cnp.ndarray array
        cdef Py_ssize_t n_outs = 0 if outs is None else len(<tuple>outs)
        for i in range(self.n_operands):
            if self.operand_slot[i] >= 0:
                self.args.p[self.operand_slot[i]] = cnp.PyArray_DATA(<cnp.ndarray>operands[i])
                self.args.p[self.operand_slot2[i]] = self.args.p[self.operand_slot[i]]
        for i in range(self.n_outputs):
            given = (<tuple>outs)[i] if i < n_outs else None
            if self.output_ndim[i] < 0:
                if given is not None:
                    return None
                results.append(None)
                continue
            if self.output_kind[i] == OUTPUT_SCALAR:
                if given is not None:
                    return None
                self.args.p[self.output_slot[i]] = cnp.PyArray_DATA(<cnp.ndarray>self.scalar)
                results.append(None)
                continue
            if given is not None:
                # The caller's buffer: checked as the validated path checks it.
                if type(given) is not cnp.ndarray or not fits(
                        <cnp.ndarray>given, self.output_ndim[i], self.output_dims[i],
                        self.output_type[i], True):
                    return None
                for j in range(self.n_operands):
                    if operands[j] is not None and overlap(<cnp.ndarray>given, operands[j]):
                        return None
                for j in range(i):
                    if (<tuple>outs)[j] is not None and overlap(<cnp.ndarray>given,
                                                                (<tuple>outs)[j]):
                        return None
                array = <cnp.ndarray>given
            elif self.output_kind[i] == OUTPUT_ZEROS:
                array = cnp.PyArray_ZEROS(self.output_ndim[i], self.output_dims[i],
                                          self.output_type[i], 0)
            else:
                array = cnp.PyArray_EMPTY(self.output_ndim[i], self.output_dims[i],
                                          self.output_type[i], 0)
            if self.output_slot[i] >= 0:
                self.args.p[self.output_slot[i]] = cnp.PyArray_DATA(array)
            results.append(array)
        with nogil:
            status = self.kernel(&self.args)
        if status != 0:
            return None
        for i in range(self.n_outputs):
            if self.output_kind[i] == OUTPUT_SCALAR:
                results[i] = float((<double*>cnp.PyArray_DATA(<cnp.ndarray>self.scalar))[0])
        return results[0] if self.n_outputs == 1 else tuple(results)

    cdef object bound(self, tuple operands):
        cdef int i
        cdef list arrays = [None] * STEP_POINTERS
        for i in range(self.n_operands):
            if self.operand_slot[i] >= 0:
                arrays[self.operand_slot[i]] = operands[i]
                arrays[self.operand_slot2[i]] = operands[i]
        for i in range(self.n_outputs):
            if self.output_ndim[i] < 0:
                continue
            if self.output_kind[i] == OUTPUT_SCALAR:
                arrays[self.output_slot[i]] = np.zeros(1, np.float64)
            elif self.output_slot[i] >= 0:
                arrays[self.output_slot[i]] = cnp.PyArray_ZEROS(
                    self.output_ndim[i], self.output_dims[i], self.output_type[i], 0)
        if self.work_slot >= 0:
            arrays[self.work_slot] = np.empty_like(self.workspace)
        return (self.keep[0], arrays, [self.args.n[i] for i in range(STEP_SIZES)],
                [self.args.f[i] for i in range(STEP_SCALARS)], list(self.keep[1]))


cdef class Calls:
    """Calls()

    The remembered calls of one functional (at most a few, the oldest
    replaced first): ``run(operands, extra)`` returns the results of a
    matching one, or None (no match, an entry busy in another thread, or a
    kernel status: take the validated path).
    """

    cdef list entries
    cdef Py_ssize_t next_slot

    def __init__(self):
        self.entries = []
        self.next_slot = 0

    def run(self, tuple operands, extra=None, outs=None):
        """run(operands, extra=None, outs=None)

        The results of the remembered call that ``operands`` (the array
        arguments, in order) and ``extra`` (the other arguments) match, or
        None.  ``outs``: a tuple of buffers (or None entries) for the
        results, used when each fits (exact C-contiguous writeable ndarray
        of the result's shape and dtype, sharing no memory with the
        operands or the other buffers), else the call takes the validated
        path.
        """
        cdef Entry entry
        for item in self.entries:
            entry = <Entry>item
            if entry.matches(operands, extra):
                entry.busy = True
                try:
                    return entry.run(operands, outs)
                finally:
                    entry.busy = False
        return None

    def bound(self, tuple operands, extra=None):
        """bound(operands, extra=None)

        The step of the remembered call ``operands`` and ``extra`` match, as
        ``Program.add`` takes it: (kernel, arrays, sizes, scalars, plans), its
        outputs freshly allocated (benchmarks: the kernel's own time, with no
        Python around it).  None when no call matches.
        """
        cdef Entry entry
        for item in self.entries:
            entry = <Entry>item
            if entry.matches(operands, extra):
                return entry.bound(operands)
        return None

    def remember(self, Entry entry):
        """remember(entry)

        Keep ``entry`` for later calls (replacing the oldest when full).
        """
        if len(self.entries) < ENTRIES:
            self.entries.append(entry)
        else:
            self.entries[self.next_slot] = entry
            self.next_slot = (self.next_slot + 1) % ENTRIES

    def clear(self):
        """clear()

        Forget every remembered call.
        """
        self.entries = []
        self.next_slot = 0

    def __len__(self):
        return len(self.entries)

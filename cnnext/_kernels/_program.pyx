# The compiled executor: runs a list of kernel steps, a whole pass or a run
# of training steps, in one call with the GIL released.
#
# Layers, top to bottom:
#
# 1. cnnext._plans builds, once per (model, input shape, dtype, mode), the
#    buffers and the steps of every pass after validating everything, and
#    keeps Python references to every array and kernel Plan the steps point
#    to (a Program never points to memory it does not own a reference to).
# 2. ``Program``: an array of steps, each a step kernel of some family
#    (_step.pxd: a function pointer taken from the family module's
#    ``step_kernels()`` capsules) with its StepArgs bound.  This module is
#    compiled once, at the baseline instruction set: it only loops over
#    steps, the kernels run in their own ISA builds.
# 3. ``Runner``: the drivers that loop over batches without returning to
#    Python: staging (gather a batch of examples in the epoch's order, scale
#    uint8 images through a table, cast floats), then the forward Program,
#    the loss, argmax/accuracy, the non-finite-loss rule, backward and the
#    optimiser's update Program, and the running loss sums.
#
# Every sum here is accumulated in the order the Python loop it replaces
# used (batch after batch, in doubles), so a run gives the same bits.

cdef extern from *:
    """
    /* One rounding per operation, as in the Python loop: `total += loss * n`
       contracted into a fused multiply-add (what gcc and clang form for
       aarch64, whose baseline has FMA) rounds once and changes the sums. */
    #if defined(__clang__)
    #pragma clang fp contract(off)
    #elif defined(__GNUC__)
    #pragma GCC optimize("fp-contract=off")
    #elif defined(_MSC_VER)
    #pragma fp_contract(off)
    #endif
    """

from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer, PyCapsule_IsValid
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

cimport numpy as cnp

from ._step cimport STEP_CAPSULE, STEP_PLANS, STEP_POINTERS, STEP_SCALARS, STEP_SIZES
from ._step cimport StepArgs, step_kernel

import numpy as np

cnp.import_array()


cdef extern from "Python.h":
    # A borrowed reference, or NULL (a missing key, or an error raised).
    void* PyDict_GetItemWithError(object d, object key) except? NULL


cdef struct Step:
    step_kernel kernel
    StepArgs args


cdef inline void* data_of(object array) except? NULL:
    """The data pointer of a C-contiguous ndarray (None: NULL)."""
    if array is None:
        return NULL
    if not isinstance(array, cnp.ndarray):
        raise TypeError(f"a step's arrays must be numpy arrays, got {type(array).__name__}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>array):
        raise ValueError("a step's arrays must be C-contiguous")
    return cnp.PyArray_DATA(<cnp.ndarray>array)


cdef class Program:
    """Program()

    Steps run in order by ``run`` with the GIL released.  ``add`` binds a
    step kernel (a capsule from a family's ``step_kernels()``) to arrays,
    sizes, scalars and plan capsules, keeping references to all of them.
    The caller has validated every argument against the kernel's slots:
    nothing is checked while running.
    """

    cdef Step* steps
    cdef Py_ssize_t count, capacity
    cdef list owners
    cdef readonly list names

    def __cinit__(self):
        self.steps = NULL
        self.count = self.capacity = 0
        self.owners = []
        self.names = []

    def __dealloc__(self):
        PyMem_Free(self.steps)

    def __len__(self):
        return self.count

    def __repr__(self):
        return f"Program({self.names!r})"

    def __reduce__(self):
        raise TypeError("a cnnext Program holds raw pointers and cannot be pickled")

    def add(self, kernel, arrays=(), sizes=(), scalars=(), plans=(), name=""):
        """add(kernel, arrays=(), sizes=(), scalars=(), plans=(), name="")

        Append a step: ``kernel`` a step-kernel capsule; ``arrays`` the
        C-contiguous ndarrays (or None) of StepArgs.p in order; ``sizes`` the
        ints of StepArgs.n; ``scalars`` the floats of StepArgs.f; ``plans``
        capsules (or None) of StepArgs.plan, each of an object in ``arrays``
        or kept by the caller's ``keep`` (see ``keep``).
        """
        cdef Step step
        cdef Step* grown
        cdef Py_ssize_t i
        if not PyCapsule_IsValid(kernel, STEP_CAPSULE):
            raise TypeError(f"{name or 'step'}: kernel must be a step-kernel capsule")
        if (len(arrays) > STEP_POINTERS or len(sizes) > STEP_SIZES
                or len(scalars) > STEP_SCALARS or len(plans) > STEP_PLANS):
            raise ValueError(f"{name or 'step'}: too many arguments for one step")
        step.kernel = <step_kernel>PyCapsule_GetPointer(kernel, STEP_CAPSULE)
        for i in range(STEP_POINTERS):
            step.args.p[i] = data_of(arrays[i]) if i < len(arrays) else NULL
        for i in range(STEP_SIZES):
            step.args.n[i] = sizes[i] if i < len(sizes) else 0
        for i in range(STEP_SCALARS):
            step.args.f[i] = scalars[i] if i < len(scalars) else 0.0
        for i in range(STEP_PLANS):
            step.args.plan[i] = NULL
            if i < len(plans) and plans[i] is not None:
                step.args.plan[i] = PyCapsule_GetPointer(plans[i], PyCapsule_GetName(plans[i]))
        if self.count == self.capacity:
            grown = <Step*>PyMem_Realloc(self.steps, (2 * self.capacity + 4) * sizeof(Step))
            if grown == NULL:
                raise MemoryError()
            self.steps, self.capacity = grown, 2 * self.capacity + 4
        self.steps[self.count] = step
        self.count += 1
        self.owners.append((kernel, tuple(arrays), tuple(plans)))
        self.names.append(name)

    def keep(self, *objects):
        """keep(*objects)

        Hold references to ``objects`` (whose memory steps point to) for the
        program's lifetime.
        """
        self.owners.append(objects)

    cdef int run_steps(self, Py_ssize_t* where) noexcept nogil:
        """Run every step; return 0, or the first non-zero status (its step in ``where``)."""
        cdef Py_ssize_t i
        cdef int status
        for i in range(self.count):
            status = self.steps[i].kernel(&self.steps[i].args)
            if status != 0:
                where[0] = i
                return status
        return 0

    def run(self):
        """run()

        Run every step with the GIL released.  Returns (status, step): (0,
        -1), or the first non-zero status and the index of its step.
        """
        cdef Py_ssize_t where = -1
        cdef int status
        with nogil:
            status = self.run_steps(&where)
        return status, where

    def run_step_repeated(self, Py_ssize_t index, Py_ssize_t times):
        """run_step_repeated(index, times)

        Run step ``index`` alone ``times`` times (benchmarks: where a pass's
        time goes).  Returns the last status.
        """
        cdef Py_ssize_t _
        cdef int status = 0
        if not 0 <= index < self.count:
            raise IndexError(f"step {index} of a program of {self.count}")
        with nogil:
            for _ in range(times):
                status = self.steps[index].kernel(&self.steps[index].args)
                if status != 0:
                    break
        return status

    def run_repeated(self, Py_ssize_t times):
        """run_repeated(times)

        Run the steps ``times`` times in one call (benchmarks: the kernels'
        own time, with no Python between calls).  Returns the last status.
        """
        cdef Py_ssize_t where = -1, _
        cdef int status = 0
        with nogil:
            for _ in range(times):
                status = self.run_steps(&where)
                if status != 0:
                    break
        return status


cdef bint array_as_bound(object array, tuple shape):
    """Whether ``array`` is an ndarray of ``shape``, C-contiguous and writeable."""
    cdef int d
    if not isinstance(array, cnp.ndarray):
        return False
    if (cnp.PyArray_NDIM(<cnp.ndarray>array) != len(shape)
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>array)
            or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>array)):
        return False
    for d in range(len(shape)):
        if cnp.PyArray_DIM(<cnp.ndarray>array, d) != <Py_ssize_t>shape[d]:
            return False
    return True


def first_outside(cnp.ndarray labels, Py_ssize_t classes):
    """first_outside(labels, classes)

    Index of the first of ``labels`` (a 1-D int64 array, any stride) outside
    [0, classes), else -1: one pass (validation reports the label).
    """
    cdef Py_ssize_t i, n, step, found = -1
    cdef const char* base
    if cnp.PyArray_TYPE(labels) != cnp.NPY_INT64 or cnp.PyArray_NDIM(labels) != 1:
        raise TypeError("first_outside: labels must be a 1-D int64 array")
    if classes < 0:
        raise ValueError("first_outside: classes must be >= 0")
    n, step = cnp.PyArray_DIM(labels, 0), cnp.PyArray_STRIDE(labels, 0)
    base = <const char*>cnp.PyArray_DATA(labels)
    with nogil:
        for i in range(n):
            # A negative label wraps to above any class count: one comparison.
            if (<uint64_t>(<const int64_t*>(base + i * step))[0]
                    >= <uint64_t>classes):
                found = i
                break
    return found


def copy_arrays(tuple pairs):
    """copy_arrays(pairs)

    Copy each (source, target) of ``pairs``: C-contiguous ndarrays of the
    same size in bytes, the target writeable (else ValueError, before
    anything is copied).  A snapshot of many small arrays in one call.
    """
    cdef object pair
    cdef cnp.ndarray src, dst
    for pair in pairs:
        src, dst = <cnp.ndarray?>(<tuple?>pair)[0], <cnp.ndarray?>(<tuple>pair)[1]
        if (not cnp.PyArray_IS_C_CONTIGUOUS(src) or not cnp.PyArray_IS_C_CONTIGUOUS(dst)
                or not cnp.PyArray_ISWRITEABLE(dst)
                or cnp.PyArray_NBYTES(src) != cnp.PyArray_NBYTES(dst)):
            raise ValueError("copy_arrays: each pair must be C-contiguous arrays of one size, "
                             "the target writeable")
    for pair in pairs:
        src, dst = <cnp.ndarray>(<tuple>pair)[0], <cnp.ndarray>(<tuple>pair)[1]
        memcpy(cnp.PyArray_DATA(dst), cnp.PyArray_DATA(src), cnp.PyArray_NBYTES(src))


def changed(tuple checks):
    """changed(checks)

    Index of the first entry of ``checks`` that no longer holds, else -1.
    Entries are (container, key, expected): ``container[key] is expected``
    for a dict (a missing key counts as changed) or a list (an index),
    ``len(container) == expected`` when ``key`` is None, and, when ``key``
    is Ellipsis, ``container`` an ndarray still of shape ``expected`` (a
    tuple), C-contiguous and writeable (a flag or shape changed in place).
    One C pass, cheap enough to run before every call of a plan.
    """
    cdef Py_ssize_t i
    cdef object entry, container, key
    cdef void* found
    for i in range(len(checks)):
        entry = checks[i]
        container, key = (<tuple>entry)[0], (<tuple>entry)[1]
        if key is None:
            if len(container) != (<tuple>entry)[2]:
                return i
        elif key is Ellipsis:
            if not array_as_bound(container, <tuple?>(<tuple>entry)[2]):
                return i
        elif type(container) is dict:
            found = <void*>PyDict_GetItemWithError(container, key)
            if found != <void*>(<tuple>entry)[2]:
                return i
        elif type(container) is list:
            if not (0 <= <Py_ssize_t>key < len(container)):
                return i
            if <void*>(<list>container)[<Py_ssize_t>key] != <void*>(<tuple>entry)[2]:
                return i
        elif container[key] is not (<tuple>entry)[2]:
            return i
    return -1


# ------------------------------------------------------------------- runner

cdef enum SourceKind:
    SOURCE_UINT8 = 0      # images scaled through a table of 256 values
    SOURCE_FLOAT32 = 1
    SOURCE_FLOAT64 = 2


# Why a training run returned.
cdef enum Stop:
    DONE = 0              # every batch
    NON_FINITE = 1        # a non-finite loss, with on_nan="raise": that step not applied
    KERNEL = 2            # a kernel returned a status (e.g. a label outside the classes)


STOP_DONE, STOP_NON_FINITE, STOP_KERNEL = DONE, NON_FINITE, KERNEL


cdef struct Source:
    const char* base          # the first example
    Py_ssize_t stride         # bytes from one example to the next
    SourceKind kind
    const int64_t* order      # the epoch's order of examples, or NULL
    Py_ssize_t elems          # elements per example


cdef inline void stage_example(const char* src, SourceKind kind, Py_ssize_t elems,
                               const void* table, bint double_out,
                               void* dst) noexcept nogil:
    """One example into the model's dtype: a table lookup for uint8 (the
    values NumPy computes for x / 255 - 0.5), a cast (round to nearest) or
    a copy for floats."""
    cdef Py_ssize_t i
    cdef const uint8_t* u
    cdef float* f
    cdef double* d
    if kind == SOURCE_UINT8:
        u = <const uint8_t*>src
        if double_out:
            d = <double*>dst
            for i in range(elems):
                d[i] = (<const double*>table)[u[i]]
        else:
            f = <float*>dst
            for i in range(elems):
                f[i] = (<const float*>table)[u[i]]
    elif (kind == SOURCE_FLOAT64) == double_out:
        memcpy(dst, src, elems * (8 if double_out else 4))
    elif double_out:
        d = <double*>dst
        for i in range(elems):
            d[i] = (<const float*>src)[i]
    else:
        f = <float*>dst
        for i in range(elems):
            f[i] = <float>(<const double*>src)[i]


cdef inline Py_ssize_t argmax_row(const void* row, Py_ssize_t classes,
                                  bint is_double) noexcept nogil:
    """numpy.argmax of one row: the first maximum, or the first NaN."""
    cdef Py_ssize_t k, best_k = 0
    cdef double best, v
    best = (<const double*>row)[0] if is_double else (<const float*>row)[0]
    if best != best:
        return 0
    for k in range(1, classes):
        v = (<const double*>row)[k] if is_double else (<const float*>row)[k]
        if v != v:
            return k
        if v > best:
            best, best_k = v, k
    return best_k


cdef class Runner:
    """Runner(batch, example_shape_elems, dtype, staged, forward, logits, *, loss=None,
    labels=None, loss_value=None, probabilities=None, softmax=None, backward=None)

    The drivers of one plan: a batch of ``batch`` examples staged into
    ``staged`` (the model's dtype), the ``forward`` Program, the ``logits``
    it writes, and for the drivers that need them the loss Program (reading
    ``labels``, an int64 (batch,) buffer, writing the mean loss into
    ``loss_value``, a float64 (1,) array), the softmax Program writing
    ``probabilities`` (predict), the ``backward`` Program.  The optimiser's
    update Program is given to ``train``.
    """

    cdef Py_ssize_t batch, elems, classes
    cdef bint is_double
    cdef void* staged
    cdef void* logits
    cdef int64_t* labels
    cdef double* loss_value
    cdef void* probabilities
    cdef Program forward, loss, softmax, backward
    cdef list owners

    def __init__(self, Py_ssize_t batch, Py_ssize_t elems, dtype, staged, Program forward,
                 logits, *, Program loss=None, labels=None, loss_value=None,
                 probabilities=None, Program softmax=None, Program backward=None):
        self.batch, self.elems = batch, elems
        self.is_double = dtype == "float64"
        self.staged = data_of(staged)
        self.forward = forward
        self.logits = data_of(logits)
        self.classes = logits.shape[1]
        self.loss, self.softmax, self.backward = loss, softmax, backward
        self.labels = <int64_t*>data_of(labels)
        self.loss_value = <double*>data_of(loss_value)
        self.probabilities = data_of(probabilities)
        self.owners = [staged, logits, labels, loss_value, probabilities]

    def __reduce__(self):
        raise TypeError("a cnnext Runner holds raw pointers and cannot be pickled")

    cdef int source_of(self, X, order, Source* src) except -1:
        cdef cnp.ndarray array = <cnp.ndarray?>X
        cdef int ndim = cnp.PyArray_NDIM(array), axis
        cdef Py_ssize_t count, expected
        cdef int num = cnp.PyArray_TYPE(array)
        if ndim < 1:
            raise ValueError("the examples must have a batch axis")
        if num == cnp.NPY_UINT8:
            src.kind = SOURCE_UINT8
        elif num == cnp.NPY_FLOAT32:
            src.kind = SOURCE_FLOAT32
        elif num == cnp.NPY_FLOAT64:
            src.kind = SOURCE_FLOAT64
        else:
            raise TypeError(f"examples of dtype {array.dtype} cannot be staged")
        # Each example C-contiguous, of the plan's size; examples any stride apart.
        count, expected = 1, cnp.PyArray_ITEMSIZE(array)
        for axis in range(ndim - 1, 0, -1):
            if cnp.PyArray_DIM(array, axis) != 1 and cnp.PyArray_STRIDE(array, axis) != expected:
                raise ValueError("each example must be C-contiguous")
            count *= cnp.PyArray_DIM(array, axis)
            expected *= cnp.PyArray_DIM(array, axis)
        if count != self.elems:
            raise ValueError(f"the examples hold {count} values each, the plan {self.elems}")
        src.base = <const char*>cnp.PyArray_DATA(array)
        src.stride = cnp.PyArray_STRIDE(array, 0)
        src.elems = self.elems
        src.order = NULL
        if order is not None:
            src.order = <const int64_t*>data_of(order)
        return 0

    cdef void stage(self, const Source* src, Py_ssize_t first, const void* table) noexcept nogil:
        cdef Py_ssize_t i, index
        cdef Py_ssize_t item = 8 if self.is_double else 4
        for i in range(self.batch):
            index = first + i if src.order == NULL else src.order[first + i]
            stage_example(src.base + index * src.stride, src.kind, self.elems, table,
                          self.is_double, <char*>self.staged + i * self.elems * item)

    def predict(self, X, Py_ssize_t first, Py_ssize_t batches, out, table):
        """predict(X, first, batches, out, table)

        Class probabilities of ``batches`` batches of examples X[first:...]
        into the rows of ``out`` from ``first`` (C-contiguous, the model's
        dtype).  ``table``: the uint8 scaling table of the model's dtype.
        Returns (status, step) as ``Program.run``.
        """
        cdef Py_ssize_t where = -1
        cdef int status = self.predict_rows(X, first, batches, <char*>data_of(out),
                                            data_of(table), &where)
        return status, where

    cdef int predict_rows(self, X, Py_ssize_t first, Py_ssize_t batches, char* dst,
                          const void* lookup, Py_ssize_t* where) except -1:
        cdef Source src
        cdef Py_ssize_t b, start
        cdef Py_ssize_t row_bytes = self.classes * (8 if self.is_double else 4)
        cdef int status = 0
        self.source_of(X, None, &src)
        with nogil:
            for b in range(batches):
                start = first + b * self.batch
                self.stage(&src, start, lookup)
                status = self.forward.run_steps(where)
                if status == 0:
                    status = self.softmax.run_steps(where)
                if status != 0:
                    break
                memcpy(dst + start * row_bytes, self.probabilities, self.batch * row_bytes)
        return status

    def evaluate(self, X, labels, Py_ssize_t first, Py_ssize_t batches, double total,
                 Py_ssize_t correct, table):
        """evaluate(X, labels, first, batches, total, correct, table)

        Loss and accuracy sums over ``batches`` batches from ``first``:
        returns (status, step, total + sum of loss * batch, correct + number
        of examples whose argmax is their label), in batch order.
        """
        cdef Source src
        cdef Py_ssize_t b, i, where = -1, start
        cdef Py_ssize_t row_bytes = self.classes * (8 if self.is_double else 4)
        cdef const int64_t* y = <const int64_t*>data_of(labels)
        cdef const void* lookup = data_of(table)
        cdef int status = 0
        self.source_of(X, None, &src)
        with nogil:
            for b in range(batches):
                start = first + b * self.batch
                self.stage(&src, start, lookup)
                memcpy(self.labels, y + start, self.batch * sizeof(int64_t))
                status = self.forward.run_steps(&where)
                if status == 0:
                    status = self.loss.run_steps(&where)
                if status != 0:
                    break
                total += self.loss_value[0] * <double>self.batch
                for i in range(self.batch):
                    correct += argmax_row(<char*>self.logits + i * row_bytes, self.classes,
                                          self.is_double) == self.labels[i]
        return status, where, total, correct

    def train(self, X, order, labels, Py_ssize_t first, Py_ssize_t batches, Program update,
              bint skip_non_finite, predicted, double total, Py_ssize_t counted,
              Py_ssize_t skipped, table):
        """train(X, order, labels, first, batches, update, skip_non_finite, predicted, total,
        counted, skipped, table)

        ``batches`` training steps on the examples X[order[first:...]]
        (``order`` an int64 array or None), ``labels`` already in that order:
        stage, forward, loss, argmax into ``predicted`` (intp, from
        ``first``), then, when the loss is finite, backward, the ``update``
        Program (None: no update; the caller applies its own) and
        total += loss * batch, counted += batch.  A non-finite loss skips
        the step's backward and update (skipped += 1) or, unless
        ``skip_non_finite``, ends the run before them.

        Returns (stop, status, batches done, total, counted, skipped, loss):
        stop is STOP_DONE, STOP_NON_FINITE (the batch ``first + done *
        batch`` was not applied) or STOP_KERNEL (a step returned ``status``);
        loss is the last batch's.
        """
        cdef Source src
        cdef Py_ssize_t b, i, where = -1, start, done = 0
        cdef Py_ssize_t row_bytes = self.classes * (8 if self.is_double else 4)
        cdef const int64_t* y = <const int64_t*>data_of(labels)
        cdef Py_ssize_t* guesses = <Py_ssize_t*>data_of(predicted)
        cdef const void* lookup = data_of(table)
        cdef int status = 0, stop = DONE
        cdef double loss = 0
        if predicted.dtype != np.intp:
            raise TypeError("predicted must be an intp array")
        self.source_of(X, order, &src)
        with nogil:
            for b in range(batches):
                start = first + b * self.batch
                self.stage(&src, start, lookup)
                memcpy(self.labels, y + start, self.batch * sizeof(int64_t))
                status = self.forward.run_steps(&where)
                if status == 0:
                    status = self.loss.run_steps(&where)
                if status != 0:
                    stop = KERNEL
                    break
                loss = self.loss_value[0]
                for i in range(self.batch):
                    guesses[start + i] = argmax_row(<char*>self.logits + i * row_bytes,
                                                    self.classes, self.is_double)
                if not isfinite(loss):
                    if not skip_non_finite:
                        stop = NON_FINITE
                        break
                    skipped += 1
                    done += 1
                    continue
                status = self.backward.run_steps(&where)
                if status == 0 and update is not None:
                    status = update.run_steps(&where)
                if status != 0:
                    stop = KERNEL
                    break
                total += loss * <double>self.batch
                counted += self.batch
                done += 1
        return stop, status, done, total, counted, skipped, loss

    def forward_batch(self, X):
        """forward_batch(X)

        Stage the one batch X (the plan's batch size) and run the forward
        Program; the outputs are in the plan's buffers.  Returns (status,
        step).
        """
        cdef Source src
        cdef Py_ssize_t where = -1
        cdef int status
        self.source_of(X, None, &src)
        with nogil:
            self.stage(&src, 0, NULL)
            status = self.forward.run_steps(&where)
        return status, where

    def backward_batch(self):
        """backward_batch()

        Run the backward Program (its output gradient already written).
        Returns (status, step).
        """
        cdef Py_ssize_t where = -1
        cdef int status
        with nogil:
            status = self.backward.run_steps(&where)
        return status, where


cdef enum:
    MEMO_DIMS = 8

MEMO_AXES = MEMO_DIMS


cdef inline bint same_layout(cnp.ndarray array, int ndim, int typenum,
                             const cnp.npy_intp* dims):
    """Whether ``array`` is C-contiguous, of ``ndim`` axes ``dims`` and dtype ``typenum``."""
    cdef int d
    if (cnp.PyArray_NDIM(array) != ndim or cnp.PyArray_TYPE(array) != typenum
            or not cnp.PyArray_IS_C_CONTIGUOUS(array)):
        return False
    for d in range(ndim):
        if cnp.PyArray_DIM(array, d) != dims[d]:
            return False
    return True


cdef class PredictMemo:
    """PredictMemo(X, batch_size, result_shape, dtype, runs, layer_checks, cache, table, alike)

    A validated ``Sequential.predict`` call, repeated from C: ``run`` takes a
    later call whose X is an exact C-contiguous ndarray of X's shape and
    dtype and whose ``batch_size`` is the same int, while the layer list
    still passes ``layer_checks``.  It then runs ``runs`` ((plan key,
    first example, batches) each) on the idle plans of ``cache`` (a
    ``PlanCache``: its one idle plan per key, taken and put back as its
    ``acquire`` / ``release`` do, so a plan serves one call at a time) when
    they still pass their own checks, and returns the probabilities.
    Anything else (another shape, a plan in use by another thread or
    stale, a kernel status) returns None: the validated path then does
    what it always did.  ``alike``: whether no layer computes by
    mode (the caller then needs no mode switch around ``run``).
    """

    cdef int ndim, typenum, result_ndim, result_type
    cdef cnp.npy_intp dims[MEMO_DIMS]
    cdef cnp.npy_intp result_dims[2]
    cdef Py_ssize_t hot_size
    cdef object batch_size       # an int of any size, as validated
    cdef tuple runs, layer_checks
    cdef dict hot
    cdef object release
    cdef cnp.ndarray table
    cdef readonly bint alike

    def __init__(self, X, batch_size, tuple result_shape, dtype, runs,
                 tuple layer_checks, cache, table, bint alike):
        cdef cnp.ndarray array = <cnp.ndarray?>X
        cdef int d
        if not 1 <= cnp.PyArray_NDIM(array) <= MEMO_DIMS or len(result_shape) != 2:
            raise ValueError(f"PredictMemo: X must have 1 to {MEMO_DIMS} axes, the result 2")
        self.ndim, self.typenum = cnp.PyArray_NDIM(array), cnp.PyArray_TYPE(array)
        for d in range(self.ndim):
            self.dims[d] = cnp.PyArray_DIM(array, d)
        self.result_ndim = 2
        self.result_dims[0], self.result_dims[1] = result_shape
        self.result_type = np.dtype(dtype).num
        if type(batch_size) is not int:
            raise TypeError("PredictMemo: batch_size must be an int")
        self.batch_size = batch_size
        self.runs = tuple((key, int(first), int(count)) for key, first, count in runs)
        self.layer_checks = layer_checks
        self.hot, self.hot_size, self.release = cache._hot, cache.size, cache.release
        self.table = <cnp.ndarray?>table
        self.alike = alike

    def __reduce__(self):
        raise TypeError("a cnnext PredictMemo is per process and cannot be pickled")

    cdef bint fits(self, X, batch_size):
        if (type(X) is not cnp.ndarray or type(batch_size) is not int
                or batch_size != self.batch_size):
            return False
        if not same_layout(<cnp.ndarray>X, self.ndim, self.typenum, self.dims):
            return False
        return changed(self.layer_checks) < 0

    def run(self, X, batch_size):
        """run(X, batch_size)

        The probabilities of X as the remembered call computes them, or None.
        """
        cdef cnp.ndarray result
        cdef tuple entry
        cdef object key, plan
        cdef Runner runner
        cdef Py_ssize_t where = -1
        cdef int status
        if not self.fits(X, batch_size):
            return None
        result = cnp.PyArray_EMPTY(self.result_ndim, self.result_dims, self.result_type, 0)
        for entry in self.runs:
            key = entry[0]
            plan = self.hot.pop(key, None)
            if plan is None:
                return None
            if changed(plan.checks) >= 0:
                return None          # stale: dropped, as PlanCache.acquire drops it
            runner = plan.runner
            try:
                status = runner.predict_rows(X, entry[1], entry[2],
                                             <char*>cnp.PyArray_DATA(result),
                                             cnp.PyArray_DATA(self.table), &where)
            finally:
                if len(self.hot) >= self.hot_size or self.hot.setdefault(key, plan) is not plan:
                    self.release(key, plan)
            if status != 0:
                return None
        return result


cdef inline bint same_argument(object given, object remembered):
    """The same object, or an equal int, float, str or bool (a literal retyped)."""
    if given is remembered:
        return True
    return (type(given) is type(remembered)
            and (type(given) is int or type(given) is str or type(given) is float)
            and given == remembered)


cdef class FitMemo:
    """FitMemo(X, y, arguments, callbacks, checks, setup)

    A validated ``Sequential.fit`` call, recognised again from C:
    ``repeats`` is True for a later call whose X is an exact C-contiguous
    ndarray of X's shape and dtype, whose y an exact ndarray of y's shape
    and dtype, whose optimizer None or the one remembered (first of
    ``arguments``), whose other arguments (epochs, batch_size, loss, shuffle,
    seed, progress, on_nan: the rest of ``arguments``, in that order) the
    same objects or equal ints, floats and strings, whose callbacks None, a
    list or a tuple of the same callables as ``callbacks``, while the entries
    of ``checks`` hold (``changed``).  The values in X and y are not looked
    at (the caller still checks the labels).  ``setup``: the caller's, for
    running the call.
    """

    cdef int x_ndim, x_type, y_type
    cdef cnp.npy_intp x_dims[MEMO_DIMS]
    cdef cnp.npy_intp y_len
    cdef tuple arguments, callbacks, checks
    cdef readonly object setup

    def __init__(self, X, y, tuple arguments, tuple callbacks, tuple checks, setup):
        cdef cnp.ndarray array = <cnp.ndarray?>X
        cdef cnp.ndarray labels = <cnp.ndarray?>y
        cdef int d
        if not 1 <= cnp.PyArray_NDIM(array) <= MEMO_DIMS or cnp.PyArray_NDIM(labels) != 1:
            raise ValueError(f"FitMemo: X must have 1 to {MEMO_DIMS} axes, y one")
        if len(arguments) != 8:
            raise ValueError("FitMemo: arguments must be the 8 remembered arguments")
        self.x_ndim, self.x_type = cnp.PyArray_NDIM(array), cnp.PyArray_TYPE(array)
        for d in range(self.x_ndim):
            self.x_dims[d] = cnp.PyArray_DIM(array, d)
        self.y_type, self.y_len = cnp.PyArray_TYPE(labels), cnp.PyArray_DIM(labels, 0)
        self.arguments, self.callbacks, self.checks = arguments, callbacks, checks
        self.setup = setup

    def __reduce__(self):
        raise TypeError("a cnnext FitMemo is per process and cannot be pickled")

    def repeats(self, X, y, epochs, batch_size, optimizer, loss, shuffle, seed, progress,
                callbacks, on_nan):
        """repeats(X, y, epochs, batch_size, optimizer, loss, shuffle, seed, progress,
        callbacks, on_nan)

        Whether these arguments of ``fit`` repeat the remembered call's.
        """
        cdef cnp.ndarray array
        cdef tuple remembered = self.arguments
        cdef Py_ssize_t i
        if type(X) is not cnp.ndarray or type(y) is not cnp.ndarray:
            return False
        if not same_layout(<cnp.ndarray>X, self.x_ndim, self.x_type, self.x_dims):
            return False
        array = <cnp.ndarray>y
        if (cnp.PyArray_NDIM(array) != 1 or cnp.PyArray_TYPE(array) != self.y_type
                or cnp.PyArray_DIM(array, 0) != self.y_len):
            return False
        if optimizer is not None and optimizer is not remembered[0]:
            return False
        if not (same_argument(epochs, remembered[1]) and same_argument(batch_size, remembered[2])
                and same_argument(loss, remembered[3]) and same_argument(shuffle, remembered[4])
                and same_argument(seed, remembered[5]) and same_argument(progress, remembered[6])
                and same_argument(on_nan, remembered[7])):
            return False
        if callbacks is None:
            if self.callbacks:
                return False
        else:
            if type(callbacks) is not list and type(callbacks) is not tuple:
                return False
            if len(callbacks) != len(self.callbacks):
                return False
            for i in range(len(self.callbacks)):
                if callbacks[i] is not self.callbacks[i] or not callable(callbacks[i]):
                    return False
        return changed(self.checks) < 0

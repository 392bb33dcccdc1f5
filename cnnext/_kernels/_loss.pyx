# Loss kernels: softmax and softmax cross-entropy over the rows of a matrix.
#
# Layers: cnnext.functional.softmax / softmax_cross_entropy (cnnext/
# _functional/loss.py) validate the arrays, check every label is in
# [0, n_classes), allocate the outputs and pass C-contiguous (rows, classes)
# matrices; the def functions here release the GIL and compute one row at a
# time, over OpenMP threads when the matrix is large enough to pay for
# waking them.  Rows are independent and the batch loss is summed from
# per-row losses in row order, so results do not depend on the thread count.
#
# Stability: every row is shifted by its maximum before exp (log-sum-exp),
# so no logit overflows, and the loss of a row is computed as
# log(sum(exp(z - max))) - (z[label] - max), never as log(softmax), which
# would underflow to log(0).  Sums are accumulated in double.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from ._openmp_helpers cimport effective_num_threads
from ._step cimport STEP_BAD_LABEL, StepArgs, step_capsule

# Below this many logits a call runs on the calling thread.
cdef Py_ssize_t MIN_PARALLEL_ELEMENTS = 1 << 14


cdef inline floating exp_of(floating value) noexcept nogil:
    if floating is float:
        return expf(value)
    else:
        return exp(value)


cdef inline floating row_max(const floating* row, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k
    cdef floating best = row[0]
    for k in range(1, count):
        best = row[k] if row[k] > best else best
    return best


cdef inline double exp_shifted(const floating* row,  # IN  (count,)
                               Py_ssize_t count,
                               floating shift,
                               floating* out) noexcept nogil:  # OUT (count,)
    # out = exp(row - shift); returns the sum of out.
    cdef Py_ssize_t k
    cdef double total = 0
    for k in range(count):
        out[k] = exp_of(row[k] - shift)
        total += out[k]
    return total


cdef inline void softmax_row(const floating* row, Py_ssize_t count,
                             floating* out) noexcept nogil:
    cdef Py_ssize_t k
    cdef floating total = <floating>exp_shifted(row, count, row_max(row, count), out)
    for k in range(count):
        out[k] /= total


cdef inline double cross_entropy_row(const floating* logits,  # IN  (count,)
                                     Py_ssize_t count,
                                     int64_t label,
                                     double scale,
                                     floating* grad) noexcept nogil:  # OUT (count,)
    # Returns -log softmax(logits)[label]; grad = scale * (softmax - onehot).
    cdef Py_ssize_t k
    cdef floating shift = row_max(logits, count)
    cdef double total = exp_shifted(logits, count, shift, grad)
    cdef floating factor = <floating>(scale / total)
    for k in range(count):
        grad[k] *= factor
    grad[label] -= <floating>scale
    return log(total) - (<double>logits[label] - shift)


cdef inline int num_threads_for(Py_ssize_t elements) noexcept nogil:
    if elements < MIN_PARALLEL_ELEMENTS:
        return 1
    return effective_num_threads()


cdef void softmax_pass(const floating* x,  # IN  (rows, classes)
                       Py_ssize_t rows, Py_ssize_t classes,
                       floating* out) noexcept nogil:  # OUT (rows, classes)
    cdef Py_ssize_t i
    cdef int n_threads = num_threads_for(rows * classes)
    if n_threads == 1:
        for i in range(rows):
            softmax_row(x + i * classes, classes, out + i * classes)
    else:
        for i in prange(rows, num_threads=n_threads, schedule="static"):
            softmax_row(x + i * classes, classes, out + i * classes)


def softmax(const floating[:, ::1] x,  # IN  (rows, classes), classes >= 1
            floating[:, ::1] out):      # OUT like x
    """softmax(x, out)

    out[i] = exp(x[i] - max x[i]) / sum(exp(x[i] - max x[i])) for every row.
    The caller checks the shapes.
    """
    if x.shape[0] == 0:
        return
    with nogil:
        softmax_pass(&x[0, 0], x.shape[0], x.shape[1], &out[0, 0])


cdef inline Py_ssize_t first_label_outside(const int64_t* labels,  # IN  (count,)
                                           Py_ssize_t count,
                                           int64_t classes) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        if labels[i] < 0 or labels[i] >= classes:
            return i
    return -1


cdef inline bint parallel_rows(Py_ssize_t rows, Py_ssize_t classes) noexcept nogil:
    """Whether cross_entropy_pass splits these rows over threads (then it needs row_loss)."""
    return num_threads_for(rows * classes) > 1


cdef double cross_entropy_pass(const floating* logits,  # IN  (rows, classes)
                               const int64_t* labels,   # IN  (rows,) checked
                               Py_ssize_t rows, Py_ssize_t classes,
                               floating* grad,          # OUT (rows, classes)
                               double* row_loss) noexcept nogil:  # TMP (rows,) when parallel
    """The mean loss.  Threads compute the rows' losses, summed afterwards in
    row order, as one thread does: the same result on any number of threads."""
    cdef Py_ssize_t i
    cdef int n_threads = num_threads_for(rows * classes)
    cdef double scale = 1.0 / rows, total = 0
    if n_threads == 1:
        for i in range(rows):
            total += cross_entropy_row(logits + i * classes, classes, labels[i], scale,
                                       grad + i * classes)
    else:
        for i in prange(rows, num_threads=n_threads, schedule="static"):
            row_loss[i] = cross_entropy_row(logits + i * classes, classes, labels[i], scale,
                                            grad + i * classes)
        for i in range(rows):
            total += row_loss[i]
    return total * scale


def softmax_cross_entropy(const floating[:, ::1] logits,  # IN  (rows, classes), rows >= 1
                          const int64_t[::1] labels,      # IN  (rows,)
                          floating[:, ::1] grad):         # OUT like logits
    """softmax_cross_entropy(logits, labels, grad)

    Mean over the rows of -log softmax(logits[i])[labels[i]] and its
    gradient with respect to the logits, into ``grad``.  Returns (loss,
    -1), or (None, i) without touching ``grad`` when labels[i] is the first
    label outside [0, classes): the labels are checked here, in the pass
    that reads them, and every other shape by the caller.
    """
    cdef Py_ssize_t bad, rows = logits.shape[0], classes = logits.shape[1]
    cdef double loss
    cdef double* row_loss = NULL
    with nogil:
        bad = first_label_outside(&labels[0], rows, classes)
    if bad >= 0:
        return None, bad
    if parallel_rows(rows, classes):
        row_loss = <double*>malloc(rows * sizeof(double))
        if row_loss == NULL:
            raise MemoryError()
    with nogil:
        loss = cross_entropy_pass(&logits[0, 0], &labels[0], rows, classes, &grad[0, 0],
                                  row_loss)
    free(row_loss)
    return loss, -1


# ------------------------------------------------------------ step kernels
# (the convention: _step.pxd) ``F.softmax`` and ``F.softmax_cross_entropy`` bound.

cdef inline int softmax_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN (rows, classes), 1 out OUT; n: 0 rows, 1 classes
    softmax_pass(x, a.n[0], a.n[1], <floating*>a.p[1])
    return 0


cdef inline int cross_entropy_step(const floating* logits, const StepArgs* a) noexcept nogil:
    # p: 0 logits IN (rows, classes), 1 labels IN (rows,) int64, 2 grad OUT,
    #    3 loss OUT (one double), 4 row losses TMP (rows doubles)
    # n: 0 rows, 1 classes
    cdef const int64_t* labels = <const int64_t*>a.p[1]
    if first_label_outside(labels, a.n[0], a.n[1]) >= 0:
        return STEP_BAD_LABEL
    (<double*>a.p[3])[0] = cross_entropy_pass(logits, labels, a.n[0], a.n[1],
                                              <floating*>a.p[2], <double*>a.p[4])
    return 0


cdef int softmax_f32(const StepArgs* a) noexcept nogil:
    return softmax_step(<const float*>a.p[0], a)


cdef int softmax_f64(const StepArgs* a) noexcept nogil:
    return softmax_step(<const double*>a.p[0], a)


cdef int cross_entropy_f32(const StepArgs* a) noexcept nogil:
    return cross_entropy_step(<const float*>a.p[0], a)


cdef int cross_entropy_f64(const StepArgs* a) noexcept nogil:
    return cross_entropy_step(<const double*>a.p[0], a)


def step_kernels():
    """step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "softmax",
    "softmax_cross_entropy".
    """
    return {
        ("softmax", "float32"): step_capsule(softmax_f32),
        ("softmax", "float64"): step_capsule(softmax_f64),
        ("softmax_cross_entropy", "float32"): step_capsule(cross_entropy_f32),
        ("softmax_cross_entropy", "float64"): step_capsule(cross_entropy_f64),
    }

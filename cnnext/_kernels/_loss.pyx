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


def softmax(const floating[:, ::1] x,  # IN  (rows, classes), classes >= 1
            floating[:, ::1] out):      # OUT like x
    """softmax(x, out)

    out[i] = exp(x[i] - max x[i]) / sum(exp(x[i] - max x[i])) for every row.
    The caller checks the shapes.
    """
    cdef Py_ssize_t i, rows = x.shape[0], classes = x.shape[1]
    cdef int n_threads = num_threads_for(rows * classes)
    if rows == 0:
        return
    with nogil:
        if n_threads == 1:
            for i in range(rows):
                softmax_row(&x[i, 0], classes, &out[i, 0])
        else:
            for i in prange(rows, num_threads=n_threads, schedule="static"):
                softmax_row(&x[i, 0], classes, &out[i, 0])


cdef inline Py_ssize_t first_label_outside(const int64_t* labels,  # IN  (count,)
                                           Py_ssize_t count,
                                           int64_t classes) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        if labels[i] < 0 or labels[i] >= classes:
            return i
    return -1


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
    cdef Py_ssize_t i, bad, rows = logits.shape[0], classes = logits.shape[1]
    cdef int n_threads = num_threads_for(rows * classes)
    cdef double scale = 1.0 / rows, total = 0
    cdef double* row_loss
    with nogil:
        bad = first_label_outside(&labels[0], rows, classes)
    if bad >= 0:
        return None, bad
    if n_threads == 1:
        with nogil:
            for i in range(rows):
                total += cross_entropy_row(&logits[i, 0], classes, labels[i], scale,
                                           &grad[i, 0])
        return total * scale, -1
    # TMP: threads compute the rows' losses, summed afterwards in row order
    # as above, so the result is the same on any number of threads.
    row_loss = <double*>malloc(rows * sizeof(double))
    if row_loss == NULL:
        raise MemoryError()
    try:
        with nogil:
            for i in prange(rows, num_threads=n_threads, schedule="static"):
                row_loss[i] = cross_entropy_row(&logits[i, 0], classes, labels[i], scale,
                                                &grad[i, 0])
            for i in range(rows):
                total += row_loss[i]
    finally:
        free(row_loss)
    return total * scale, -1

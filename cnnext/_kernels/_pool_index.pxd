# Range check of int64 positions, shared by the pooling and loss modules.
#
# The kernels that index with caller-given integers (max-pool backward with
# its argmax indices, cross-entropy with its labels) run with bounds checks
# off; their Python wrappers call a def function built on this helper before
# any kernel runs, and raise naming the first offending position.

from libc.stdint cimport int64_t, uint64_t


cdef inline Py_ssize_t first_outside(const int64_t* values,  # IN
                                     Py_ssize_t count,
                                     int64_t stop) noexcept nogil:
    """Position of the first value outside [0, stop), or -1 when all are inside."""
    cdef Py_ssize_t i
    cdef uint64_t last = <uint64_t>stop - 1
    cdef uint64_t signs = 0
    # value is in [0, stop) exactly when value and stop - 1 - value are both
    # non-negative, so OR-ing them all leaves the sign bit clear.  Plain
    # subtraction and OR vectorise on every instruction set (SSE2 has no
    # 64-bit compare); only when something is outside, an error, is it
    # searched for.
    if stop <= 0:
        return 0 if count > 0 else -1
    for i in range(count):
        signs |= <uint64_t>values[i] | (last - <uint64_t>values[i])
    if not (signs >> 63):
        return -1
    for i in range(count):
        if values[i] < 0 or values[i] >= stop:
            return i
    return -1

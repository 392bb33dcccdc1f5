# Range checks of int64 indices read by the kernels (included by _pool.pxi
# and _conv.pxi): a kernel that scatters through indices checks them all
# first, in one pass, and writes nothing when one is out of range.

from libc.stdint cimport int64_t, uint64_t


cdef inline Py_ssize_t first_outside(const int64_t* values,  # IN
                                     Py_ssize_t count,
                                     int64_t stop) noexcept nogil:
    # Position of the first value outside [0, stop), or -1 when all are inside.
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

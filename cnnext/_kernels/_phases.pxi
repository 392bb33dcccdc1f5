# Phase arithmetic of strided layers, shared by the convolution and the
# depthwise kernels: along an axis of stride s, the padded positions
# U = k s + p of phase p.


cdef inline Py_ssize_t first_phase(Py_ssize_t pad, Py_ssize_t phase,
                                   Py_ssize_t stride) noexcept nogil:
    # The first k with k stride + phase >= pad: where phase ``phase`` of a
    # padded axis enters the unpadded one.
    return max(0, (pad - phase + stride - 1) // stride)


cdef inline void interleave(const floating* a,  # IN  ((count + 1) // 2,)
                            const floating* b,  # IN  (count // 2,)
                            floating* x,        # OUT (count,)
                            Py_ssize_t count) noexcept nogil:
    # x[2 k] = a[k], x[2 k + 1] = b[k]: two phases of stride 2 back in place.
    cdef Py_ssize_t k
    for k in range(count // 2):
        x[2 * k] = a[k]
        x[2 * k + 1] = b[k]
    if count % 2:
        x[count - 1] = a[count // 2]

# Activation kernels, elementwise: ReLU, LeakyReLU, Sigmoid, Tanh and their
# gradients, and inverted dropout.
#
# Layers: cnnext.functional.relu / relu_backward (cnnext/_functional/
# activation.py) validate the arrays, allocate the output and pass flat
# C-contiguous views; the def functions here release the GIL and run the
# loops, split into fixed chunks over OpenMP threads when the array is large
# enough to pay for waking them (each element is computed alone, so the
# result does not depend on the thread count).  One ISA build: the loops
# are memory-bound and vectorise at the baseline instruction set (sigmoid
# and tanh call the C library's exp and tanh, one element at a time).  The
# step kernels at the end run the same passes for the executor (_program.pyx).
#
# Dropout draws no random numbers in memory: whether element i is kept is
# a hash of (key, i), so the backward pass recomputes the forward's mask
# from the key alone, any chunk of the array can be computed on any
# thread, and a layer reproduces its masks from its seed.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, tanh
from libc.stdint cimport uint32_t, uint64_t

from ._openmp_helpers cimport effective_num_threads

# Elements per parallel work item, and the size below which a call stays on
# the calling thread (starting an OpenMP team costs about a microsecond).
cdef Py_ssize_t CHUNK = 1 << 15
cdef Py_ssize_t MIN_PARALLEL_ELEMENTS = 1 << 16


cdef inline void relu_span(const floating* x,  # IN  (count,)
                           floating* y,        # OUT (count,) may be x itself
                           Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        # not (x <= 0) keeps NaN, as max(x, 0) does in NumPy and PyTorch.
        y[i] = x[i] if not (x[i] <= 0) else 0


cdef inline void relu_backward_span(const floating* gy,  # IN  (count,)
                                    const floating* x,   # IN  (count,)
                                    floating* gx,        # OUT (count,) may be gy itself
                                    Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gradient
    for i in range(count):
        # Loaded whatever the sign, so that the select vectorises.  NaN took
        # relu's pass-through branch, so its gradient passes too (as in PyTorch).
        gradient = gy[i]
        gx[i] = gradient if not (x[i] <= 0) else 0


cdef inline int num_threads_for(Py_ssize_t count) noexcept nogil:
    if count < MIN_PARALLEL_ELEMENTS:
        return 1
    return effective_num_threads()


cdef void relu_pass(const floating* x,  # IN  (count,)
                    floating* y,        # OUT (count,) may be x itself
                    Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t chunk
    cdef int n_threads = num_threads_for(count)
    if n_threads == 1:
        relu_span(x, y, count)
    else:
        for chunk in prange((count + CHUNK - 1) // CHUNK, num_threads=n_threads,
                            schedule="static"):
            relu_span(x + chunk * CHUNK, y + chunk * CHUNK, min(CHUNK, count - chunk * CHUNK))


cdef void relu_backward_pass(const floating* gy,  # IN  (count,)
                             const floating* x,   # IN  (count,)
                             floating* gx,        # OUT (count,) may be gy itself
                             Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t chunk
    cdef int n_threads = num_threads_for(count)
    if n_threads == 1:
        relu_backward_span(gy, x, gx, count)
    else:
        for chunk in prange((count + CHUNK - 1) // CHUNK, num_threads=n_threads,
                            schedule="static"):
            relu_backward_span(gy + chunk * CHUNK, x + chunk * CHUNK, gx + chunk * CHUNK,
                               min(CHUNK, count - chunk * CHUNK))


def relu(const floating[::1] x,  # IN
         floating[::1] y):       # OUT, same length, may share x's memory
    """relu(x, y)

    y = max(x, 0) elementwise, NaN kept.  ``y`` may be ``x`` (in place).
    The caller checks lengths and dtypes.
    """
    if x.shape[0] == 0:
        return
    with nogil:
        relu_pass(&x[0], &y[0], x.shape[0])


def relu_backward(const floating[::1] gy,  # IN
                  const floating[::1] x,   # IN  the input of relu
                  floating[::1] gx):       # OUT, may share gy's memory
    """relu_backward(gy, x, gx)

    gx = gy where x > 0 or x is NaN, else 0.  The caller checks lengths and
    dtypes.
    """
    if x.shape[0] == 0:
        return
    with nogil:
        relu_backward_pass(&gy[0], &x[0], &gx[0], x.shape[0])


# ------------------------------------------------------------ LeakyReLU
cdef inline void leaky_relu_span(const floating* x,  # IN  (count,)
                                 floating* y,        # OUT (count,)
                                 Py_ssize_t count, floating slope) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        # NaN takes the scaled branch and stays NaN, as in PyTorch.
        y[i] = x[i] if x[i] > 0 else x[i] * slope


cdef inline void leaky_relu_backward_span(const floating* gy,  # IN  (count,)
                                          const floating* x,   # IN  (count,)
                                          floating* gx,        # OUT (count,)
                                          Py_ssize_t count, floating slope) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gradient
    for i in range(count):
        gradient = gy[i]
        gx[i] = gradient if x[i] > 0 else gradient * slope


cdef void leaky_relu_pass(const floating* x,  # IN  (count,)
                          floating* y,        # OUT (count,)
                          Py_ssize_t count, floating slope) noexcept nogil:
    cdef Py_ssize_t chunk
    cdef int n_threads = num_threads_for(count)
    if n_threads == 1:
        leaky_relu_span(x, y, count, slope)
    else:
        for chunk in prange((count + CHUNK - 1) // CHUNK, num_threads=n_threads,
                            schedule="static"):
            leaky_relu_span(x + chunk * CHUNK, y + chunk * CHUNK,
                            min(CHUNK, count - chunk * CHUNK), slope)


cdef void leaky_relu_backward_pass(const floating* gy,  # IN  (count,)
                                   const floating* x,   # IN  (count,)
                                   floating* gx,        # OUT (count,)
                                   Py_ssize_t count, floating slope) noexcept nogil:
    cdef Py_ssize_t chunk
    cdef int n_threads = num_threads_for(count)
    if n_threads == 1:
        leaky_relu_backward_span(gy, x, gx, count, slope)
    else:
        for chunk in prange((count + CHUNK - 1) // CHUNK, num_threads=n_threads,
                            schedule="static"):
            leaky_relu_backward_span(gy + chunk * CHUNK, x + chunk * CHUNK, gx + chunk * CHUNK,
                                     min(CHUNK, count - chunk * CHUNK), slope)


def leaky_relu(const floating[::1] x,  # IN
               floating[::1] y,        # OUT, same length
               double negative_slope):
    """leaky_relu(x, y, negative_slope)

    y = x where x > 0, else x * negative_slope.  The caller checks lengths
    and dtypes.
    """
    if x.shape[0] == 0:
        return
    with nogil:
        leaky_relu_pass(&x[0], &y[0], x.shape[0], <floating>negative_slope)


def leaky_relu_backward(const floating[::1] gy,  # IN
                        const floating[::1] x,   # IN  the input of leaky_relu
                        floating[::1] gx,        # OUT
                        double negative_slope):
    """leaky_relu_backward(gy, x, gx, negative_slope)

    gx = gy where x > 0, else gy * negative_slope (NaN x included, as in
    PyTorch).  The caller checks lengths and dtypes.
    """
    if x.shape[0] == 0:
        return
    with nogil:
        leaky_relu_backward_pass(&gy[0], &x[0], &gx[0], x.shape[0], <floating>negative_slope)


# ------------------------------------------------------- sigmoid, tanh
cdef enum Smooth:
    SIGMOID = 0
    TANH = 1


cdef inline void smooth_span(const floating* x,  # IN  (count,)
                             floating* y,        # OUT (count,)
                             Py_ssize_t count, Smooth kind) noexcept nogil:
    cdef Py_ssize_t i
    if kind == SIGMOID:
        for i in range(count):
            # exp(-x) overflows to inf for very negative x, and 1 / inf is 0.
            y[i] = <floating>(1 / (1 + exp(-<double>x[i])))
    else:
        for i in range(count):
            y[i] = <floating>tanh(<double>x[i])


cdef inline void smooth_backward_span(const floating* gy,  # IN  (count,)
                                      const floating* y,   # IN  (count,) the forward's output
                                      floating* gx,        # OUT (count,)
                                      Py_ssize_t count, Smooth kind) noexcept nogil:
    cdef Py_ssize_t i
    if kind == SIGMOID:
        for i in range(count):
            gx[i] = gy[i] * (1 - y[i]) * y[i]
    else:
        for i in range(count):
            gx[i] = gy[i] * (1 - y[i] * y[i])


cdef void smooth_pass(const floating* x,  # IN  (count,)
                      floating* y,        # OUT (count,)
                      Py_ssize_t count, Smooth kind) noexcept nogil:
    cdef Py_ssize_t chunk
    cdef int n_threads = num_threads_for(count // 8)  # about 8x a ReLU's work per element
    if n_threads == 1:
        smooth_span(x, y, count, kind)
    else:
        for chunk in prange((count + CHUNK - 1) // CHUNK, num_threads=n_threads,
                            schedule="static"):
            smooth_span(x + chunk * CHUNK, y + chunk * CHUNK, min(CHUNK, count - chunk * CHUNK),
                        kind)


cdef void smooth_backward_pass(const floating* gy,  # IN  (count,)
                               const floating* y,   # IN  (count,) the forward's output
                               floating* gx,        # OUT (count,)
                               Py_ssize_t count, Smooth kind) noexcept nogil:
    cdef Py_ssize_t chunk
    cdef int n_threads = num_threads_for(count)
    if n_threads == 1:
        smooth_backward_span(gy, y, gx, count, kind)
    else:
        for chunk in prange((count + CHUNK - 1) // CHUNK, num_threads=n_threads,
                            schedule="static"):
            smooth_backward_span(gy + chunk * CHUNK, y + chunk * CHUNK, gx + chunk * CHUNK,
                                 min(CHUNK, count - chunk * CHUNK), kind)


cdef inline void smooth(const floating[::1] x, floating[::1] y, Smooth kind):
    if x.shape[0] == 0:
        return
    with nogil:
        smooth_pass(&x[0], &y[0], x.shape[0], kind)


cdef inline void smooth_backward(const floating[::1] gy, const floating[::1] y,
                                 floating[::1] gx, Smooth kind):
    if y.shape[0] == 0:
        return
    with nogil:
        smooth_backward_pass(&gy[0], &y[0], &gx[0], y.shape[0], kind)


def sigmoid(const floating[::1] x,  # IN
            floating[::1] y):       # OUT, same length
    """sigmoid(x, y)

    y = 1 / (1 + exp(-x)), computed in double precision.  The caller checks
    lengths and dtypes.
    """
    smooth(x, y, SIGMOID)


def sigmoid_backward(const floating[::1] gy,  # IN
                     const floating[::1] y,   # IN  the output of sigmoid
                     floating[::1] gx):       # OUT
    """sigmoid_backward(gy, y, gx)

    gx = gy * (1 - y) * y, from sigmoid's output y (as PyTorch).
    """
    smooth_backward(gy, y, gx, SIGMOID)


def tanh_forward(const floating[::1] x,  # IN
                 floating[::1] y):       # OUT, same length
    """tanh_forward(x, y)

    y = tanh(x), computed in double precision.  The caller checks lengths
    and dtypes.
    """
    smooth(x, y, TANH)


def tanh_backward(const floating[::1] gy,  # IN
                  const floating[::1] y,   # IN  the output of tanh
                  floating[::1] gx):       # OUT
    """tanh_backward(gy, y, gx)

    gx = gy * (1 - y * y), from tanh's output y (as PyTorch).
    """
    smooth_backward(gy, y, gx, TANH)


# -------------------------------------------------------------- dropout
cdef inline uint32_t mix32(uint32_t h) noexcept nogil:
    # A bijective 32-bit mixer (C. Wellons' "lowbias32"): every input bit
    # changes each output bit with probability close to 1/2.
    h ^= h >> 16
    h *= 0x7feb352du
    h ^= h >> 15
    h *= 0x846ca68bu
    h ^= h >> 16
    return h


cdef inline void dropout_span(const floating* x,  # IN  (count,)
                              floating* y,        # OUT (count,)
                              Py_ssize_t start,   # index of x[0] in the whole array
                              Py_ssize_t count, uint32_t key_low, uint32_t key_high,
                              uint64_t threshold, floating scale) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint64_t index
    cdef uint32_t h
    for i in range(count):
        index = <uint64_t>(start + i)
        h = mix32(mix32(<uint32_t>index ^ key_low) ^ key_high ^ <uint32_t>(index >> 32))
        # A product, not a select: NaN * 0 stays NaN, as in PyTorch.
        y[i] = x[i] * (scale if h >= threshold else 0)


cdef void dropout_pass(const floating* x,  # IN  (count,)
                       floating* y,        # OUT (count,)
                       Py_ssize_t count, uint64_t key, uint64_t threshold,
                       double scale) noexcept nogil:
    cdef Py_ssize_t chunk
    cdef int n_threads = num_threads_for(count // 4)  # hashing: a few times a ReLU's work
    cdef uint32_t key_low = <uint32_t>key, key_high = <uint32_t>(key >> 32)
    cdef floating f_scale = <floating>scale
    if n_threads == 1:
        dropout_span(x, y, 0, count, key_low, key_high, threshold, f_scale)
    else:
        for chunk in prange((count + CHUNK - 1) // CHUNK, num_threads=n_threads,
                            schedule="static"):
            dropout_span(x + chunk * CHUNK, y + chunk * CHUNK, chunk * CHUNK,
                         min(CHUNK, count - chunk * CHUNK), key_low, key_high, threshold,
                         f_scale)


def dropout(const floating[::1] x,  # IN
            floating[::1] y,        # OUT, same length
            uint64_t key, uint64_t threshold, double scale):
    """dropout(x, y, key, threshold, scale)

    y[i] = x[i] * scale where hash(key, i) >= threshold, else x[i] * 0, for
    a 32-bit hash: an element is dropped with probability threshold / 2**32
    (threshold in [0, 2**32]).  The same key gives the same mask, so the
    backward pass is this function applied to gy.
    """
    if x.shape[0] == 0:
        return
    with nogil:
        dropout_pass(&x[0], &y[0], x.shape[0], key, threshold, scale)


include "_activation_steps.pxi"

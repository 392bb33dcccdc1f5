# Activation kernels: ReLU and its gradient, elementwise.
#
# Layers: cnnext.functional.relu / relu_backward (cnnext/_functional/
# activation.py) validate the arrays, allocate the output and pass flat
# C-contiguous views; the def functions here release the GIL and run the
# loops, split into fixed chunks over OpenMP threads when the array is large
# enough to pay for waking them (each element is computed alone, so the
# result does not depend on the thread count).  One ISA build: the loops
# are memory-bound and vectorise at the baseline instruction set.  The step
# kernels at the end run the same passes for the executor (_program.pyx).

from cython cimport floating
from cython.parallel cimport prange

from ._openmp_helpers cimport effective_num_threads
from ._step cimport StepArgs, step_capsule

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


# ------------------------------------------------------------ step kernels
# (the convention: _step.pxd) ``F.relu`` and ``F.relu_backward`` bound.

cdef int relu_f32(const StepArgs* a) noexcept nogil:
    # p: 0 x IN, 1 y OUT; n: 0 elements
    relu_pass(<const float*>a.p[0], <float*>a.p[1], a.n[0])
    return 0


cdef int relu_f64(const StepArgs* a) noexcept nogil:
    relu_pass(<const double*>a.p[0], <double*>a.p[1], a.n[0])
    return 0


cdef int relu_backward_f32(const StepArgs* a) noexcept nogil:
    # p: 0 gy IN, 1 x IN, 2 gx OUT; n: 0 elements
    relu_backward_pass(<const float*>a.p[0], <const float*>a.p[1], <float*>a.p[2], a.n[0])
    return 0


cdef int relu_backward_f64(const StepArgs* a) noexcept nogil:
    relu_backward_pass(<const double*>a.p[0], <const double*>a.p[1], <double*>a.p[2], a.n[0])
    return 0


def step_kernels():
    """step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "relu", "relu_backward".
    """
    return {
        ("relu", "float32"): step_capsule(relu_f32),
        ("relu", "float64"): step_capsule(relu_f64),
        ("relu_backward", "float32"): step_capsule(relu_backward_f32),
        ("relu_backward", "float64"): step_capsule(relu_backward_f64),
    }

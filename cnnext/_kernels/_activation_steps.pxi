# Step kernels of the elementwise family (the convention: _step.pxd), included
# by _activation.pyx: the activation functionals with their arguments bound,
# and the sum of two arrays (a residual block's output and its gradient).

from libc.stdint cimport int64_t
from libc.string cimport memcpy

from ._step cimport StepArgs, step_capsule


cdef inline void add_span(const floating* a,  # IN  (count,)
                          const floating* b,  # IN  (count,)
                          floating* y,        # OUT (count,)
                          Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        y[i] = a[i] + b[i]


cdef inline void add_relu_span(const floating* a,  # IN  (count,)
                               const floating* b,  # IN  (count,)
                               floating* y,        # OUT (count,) relu(a + b)
                               Py_ssize_t count) noexcept nogil:
    # The sum rounded, then relu_span's select: the two steps' bits.
    cdef Py_ssize_t i
    cdef floating total
    for i in range(count):
        total = a[i] + b[i]
        y[i] = total if not (total <= 0) else 0


cdef void add_pass(const floating* a,  # IN  (count,)
                   const floating* b,  # IN  (count,) or NULL: y is a copy of a
                   floating* y,        # OUT (count,)
                   Py_ssize_t count,
                   bint relu) noexcept nogil:  # y = relu(a + b), relu(a) without b
    cdef Py_ssize_t chunk
    cdef int n_threads = num_threads_for(count)
    if b == NULL and relu:
        relu_pass(a, y, count)
    elif b == NULL:
        memcpy(y, a, count * sizeof(floating))
    elif n_threads == 1:
        if relu:
            add_relu_span(a, b, y, count)
        else:
            add_span(a, b, y, count)
    else:
        for chunk in prange((count + CHUNK - 1) // CHUNK, num_threads=n_threads,
                            schedule="static"):
            if relu:
                add_relu_span(a + chunk * CHUNK, b + chunk * CHUNK, y + chunk * CHUNK,
                              min(CHUNK, count - chunk * CHUNK))
            else:
                add_span(a + chunk * CHUNK, b + chunk * CHUNK, y + chunk * CHUNK,
                         min(CHUNK, count - chunk * CHUNK))


cdef inline int relu_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN, 1 y OUT; n: 0 elements
    relu_pass(x, <floating*>a.p[1], a.n[0])
    return 0


cdef inline int relu_backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN, 1 x IN, 2 gx OUT; n: 0 elements
    relu_backward_pass(gy, <const floating*>a.p[1], <floating*>a.p[2], a.n[0])
    return 0


cdef inline int leaky_relu_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN, 1 y OUT; n: 0 elements; f: 0 negative slope
    leaky_relu_pass(x, <floating*>a.p[1], a.n[0], <floating>a.f[0])
    return 0


cdef inline int leaky_relu_backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN, 1 x IN, 2 gx OUT; n: 0 elements; f: 0 negative slope
    leaky_relu_backward_pass(gy, <const floating*>a.p[1], <floating*>a.p[2], a.n[0],
                             <floating>a.f[0])
    return 0


cdef inline int smooth_step(const floating* x, const StepArgs* a, Smooth kind) noexcept nogil:
    # p: 0 x IN, 1 y OUT; n: 0 elements
    smooth_pass(x, <floating*>a.p[1], a.n[0], kind)
    return 0


cdef inline int smooth_backward_step(const floating* gy, const StepArgs* a,
                                     Smooth kind) noexcept nogil:
    # p: 0 gy IN, 1 y IN (the forward's output), 2 gx OUT; n: 0 elements
    smooth_backward_pass(gy, <const floating*>a.p[1], <floating*>a.p[2], a.n[0], kind)
    return 0


cdef inline int add_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 a IN, 1 b IN or NULL (a copy of a), 2 y OUT; n: 0 elements, 1 ReLU of the sum
    add_pass(x, <const floating*>a.p[1], <floating*>a.p[2], a.n[0], a.n[1] != 0)
    return 0


cdef inline int dropout_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN, 1 y OUT, 2 keys IN (uint64, one per training pass of a run),
    #    3 the next pass's index IN/OUT (one int64)
    # n: 0 elements, 1 threshold, 2 1: a forward step (takes the next key), 0: a
    #    backward step (the key of the last forward);  f: 0 scale
    # (as ``F.dropout`` and ``F.dropout_backward``, the same kernel on x or gy)
    cdef int64_t* index = <int64_t*>a.p[3]
    cdef const uint64_t* keys = <const uint64_t*>a.p[2]
    cdef uint64_t key
    if a.n[2]:
        key = keys[index[0]]
        index[0] += 1
    else:
        key = keys[index[0] - 1]
    if a.n[0] > 0:
        dropout_pass(x, <floating*>a.p[1], a.n[0], key, <uint64_t>a.n[1], a.f[0])
    return 0


cdef int relu_f32(const StepArgs* a) noexcept nogil:
    return relu_step(<const float*>a.p[0], a)


cdef int relu_f64(const StepArgs* a) noexcept nogil:
    return relu_step(<const double*>a.p[0], a)


cdef int relu_backward_f32(const StepArgs* a) noexcept nogil:
    return relu_backward_step(<const float*>a.p[0], a)


cdef int relu_backward_f64(const StepArgs* a) noexcept nogil:
    return relu_backward_step(<const double*>a.p[0], a)


cdef int leaky_relu_f32(const StepArgs* a) noexcept nogil:
    return leaky_relu_step(<const float*>a.p[0], a)


cdef int leaky_relu_f64(const StepArgs* a) noexcept nogil:
    return leaky_relu_step(<const double*>a.p[0], a)


cdef int leaky_relu_backward_f32(const StepArgs* a) noexcept nogil:
    return leaky_relu_backward_step(<const float*>a.p[0], a)


cdef int leaky_relu_backward_f64(const StepArgs* a) noexcept nogil:
    return leaky_relu_backward_step(<const double*>a.p[0], a)


cdef int sigmoid_f32(const StepArgs* a) noexcept nogil:
    return smooth_step(<const float*>a.p[0], a, SIGMOID)


cdef int sigmoid_f64(const StepArgs* a) noexcept nogil:
    return smooth_step(<const double*>a.p[0], a, SIGMOID)


cdef int sigmoid_backward_f32(const StepArgs* a) noexcept nogil:
    return smooth_backward_step(<const float*>a.p[0], a, SIGMOID)


cdef int sigmoid_backward_f64(const StepArgs* a) noexcept nogil:
    return smooth_backward_step(<const double*>a.p[0], a, SIGMOID)


cdef int tanh_f32(const StepArgs* a) noexcept nogil:
    return smooth_step(<const float*>a.p[0], a, TANH)


cdef int tanh_f64(const StepArgs* a) noexcept nogil:
    return smooth_step(<const double*>a.p[0], a, TANH)


cdef int tanh_backward_f32(const StepArgs* a) noexcept nogil:
    return smooth_backward_step(<const float*>a.p[0], a, TANH)


cdef int tanh_backward_f64(const StepArgs* a) noexcept nogil:
    return smooth_backward_step(<const double*>a.p[0], a, TANH)


cdef int add_f32(const StepArgs* a) noexcept nogil:
    return add_step(<const float*>a.p[0], a)


cdef int add_f64(const StepArgs* a) noexcept nogil:
    return add_step(<const double*>a.p[0], a)


cdef int dropout_f32(const StepArgs* a) noexcept nogil:
    return dropout_step(<const float*>a.p[0], a)


cdef int dropout_f64(const StepArgs* a) noexcept nogil:
    return dropout_step(<const double*>a.p[0], a)


def step_kernels():
    """step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "relu",
    "relu_backward", "leaky_relu", "leaky_relu_backward", "sigmoid",
    "sigmoid_backward", "tanh", "tanh_backward" (as the functionals) and
    "add" (y = a + b, or a copy of a; optionally ReLU of that), "dropout" (``F.dropout`` forward and
    backward, with keys drawn for a run of passes).
    """
    return {
        ("relu", "float32"): step_capsule(relu_f32),
        ("relu", "float64"): step_capsule(relu_f64),
        ("relu_backward", "float32"): step_capsule(relu_backward_f32),
        ("relu_backward", "float64"): step_capsule(relu_backward_f64),
        ("leaky_relu", "float32"): step_capsule(leaky_relu_f32),
        ("leaky_relu", "float64"): step_capsule(leaky_relu_f64),
        ("leaky_relu_backward", "float32"): step_capsule(leaky_relu_backward_f32),
        ("leaky_relu_backward", "float64"): step_capsule(leaky_relu_backward_f64),
        ("sigmoid", "float32"): step_capsule(sigmoid_f32),
        ("sigmoid", "float64"): step_capsule(sigmoid_f64),
        ("sigmoid_backward", "float32"): step_capsule(sigmoid_backward_f32),
        ("sigmoid_backward", "float64"): step_capsule(sigmoid_backward_f64),
        ("tanh", "float32"): step_capsule(tanh_f32),
        ("tanh", "float64"): step_capsule(tanh_f64),
        ("tanh_backward", "float32"): step_capsule(tanh_backward_f32),
        ("tanh_backward", "float64"): step_capsule(tanh_backward_f64),
        ("add", "float32"): step_capsule(add_f32),
        ("add", "float64"): step_capsule(add_f64),
        ("dropout", "float32"): step_capsule(dropout_f32),
        ("dropout", "float64"): step_capsule(dropout_f64),
    }

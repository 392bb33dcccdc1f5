# Step kernels of the batch normalisation family (the convention: _step.pxd),
# included by _norm.pxi: ``F.batch_norm2d`` and ``F.batch_norm2d_backward``
# with their arguments bound, as BatchNorm2D calls them, and the folding of an
# evaluation-mode batch norm into the convolution before it.
#
# The steps take n: 0 N, 1 C, 2 L (H * W), 3 training; the scratch array is
# 2 N C + 4 C doubles.

from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy

from ._step cimport StepArgs, step_capsule


cdef inline int forward_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN, 1 weight IN or NULL, 2 bias IN or NULL, 3 running_mean IN/OUT,
    #    4 running_var IN/OUT, 5 y OUT, 6 mean OUT (C doubles), 7 invstd OUT (C doubles),
    #    8 scratch TMP, 9 num_batches_tracked IN/OUT (one int64; training only)
    # n: 4 momentum is the cumulative average (BatchNorm2D(momentum=None)),
    #    5 y = relu(batch_norm2d(x)) (the ReLU layer after it, fused);
    # f: 0 eps, 1 momentum
    # As BatchNorm2D's forward: in training the count goes up first, and a
    # cumulative average takes momentum 1 / count.
    cdef int64_t* tracked = <int64_t*>a.p[9]
    cdef double momentum = a.f[1]
    if a.n[3] and tracked != NULL:
        tracked[0] += 1
        if a.n[4]:
            momentum = 1.0 / <double>tracked[0]
    forward_pass(x, <const floating*>a.p[1], <const floating*>a.p[2], <floating*>a.p[3],
                 <floating*>a.p[4], <floating*>a.p[5], <double*>a.p[6], <double*>a.p[7],
                 <double*>a.p[8], a.n[0], a.n[1], a.n[2], a.n[3] != 0, a.f[0], momentum,
                 a.n[5] != 0)
    return 0


cdef inline int backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN, 1 x IN, 2 mean IN, 3 invstd IN (the forward's), 4 weight IN or NULL,
    #    5 gx OUT or NULL, 6 gweight OUT or NULL, 7 gbias OUT or NULL, 8 scratch TMP,
    #    9 y IN or NULL: the output of relu(batch_norm2d(x)), whose ReLU's backward
    #      gates gy (the ReLU layer after the batch norm, fused)
    cdef const floating* y = <const floating*>a.p[9]
    if y == NULL:
        backward_pass(<Ungated*>NULL, gy, y, <const floating*>a.p[1], <const double*>a.p[2],
                      <const double*>a.p[3], <const floating*>a.p[4], <floating*>a.p[5],
                      <floating*>a.p[6], <floating*>a.p[7], <double*>a.p[8], a.n[0], a.n[1],
                      a.n[2], a.n[3] != 0)
    else:
        backward_pass(<ReluGated*>NULL, gy, y, <const floating*>a.p[1], <const double*>a.p[2],
                      <const double*>a.p[3], <const floating*>a.p[4], <floating*>a.p[5],
                      <floating*>a.p[6], <floating*>a.p[7], <double*>a.p[8], a.n[0], a.n[1],
                      a.n[2], a.n[3] != 0)
    return 0


cdef inline bint unchanged(const floating* values,  # IN  (count,) or NULL
                           floating* seen,           # IN/OUT (count,) their last copy
                           Py_ssize_t count) noexcept nogil:
    """Whether ``values`` holds the bytes of ``seen``; if not, ``seen`` takes them."""
    if values == NULL or memcmp(values, seen, count * sizeof(floating)) == 0:
        return True
    memcpy(seen, values, count * sizeof(floating))
    return False


cdef inline int fold_step(const floating* w, const StepArgs* a) noexcept nogil:
    # p: 0 w IN (K, P) the convolution's filters, 1 b IN (K,) or NULL, 2 running_mean IN,
    #    3 running_var IN, 4 weight IN or NULL, 5 bias IN or NULL (the batch norm's),
    #    6 folded w IN/OUT (K, P), 7 folded b IN/OUT (K,),
    #    8 the inputs of the last fold IN/OUT (K P + 5 K), 9 folded once IN/OUT (one int64)
    # n: 0 K, 1 P;  f: 0 eps
    # The evaluation-mode batch norm of conv(x, w) + b is conv(x, s w) + s (b - mean) + bias,
    # s = weight / sqrt(var + eps): computed in double, rounded once, and only when an
    # input changed since the last fold (comparing is cheaper than folding).
    cdef Py_ssize_t k, i, K = a.n[0], size = a.n[1]
    cdef const floating* b = <const floating*>a.p[1]
    cdef const floating* mean = <const floating*>a.p[2]
    cdef const floating* var = <const floating*>a.p[3]
    cdef const floating* weight = <const floating*>a.p[4]
    cdef const floating* bias = <const floating*>a.p[5]
    cdef floating* wf = <floating*>a.p[6]
    cdef floating* bf = <floating*>a.p[7]
    cdef floating* seen = <floating*>a.p[8]
    cdef int64_t* folded = <int64_t*>a.p[9]
    cdef double scale
    cdef bint same = unchanged(w, seen, K * size)
    same = unchanged(b, seen + K * size, K) and same
    same = unchanged(mean, seen + K * size + K, K) and same
    same = unchanged(var, seen + K * size + 2 * K, K) and same
    same = unchanged(weight, seen + K * size + 3 * K, K) and same
    same = unchanged(bias, seen + K * size + 4 * K, K) and same
    if same and folded[0]:
        return 0
    folded[0] = 1
    for k in range(K):
        scale = (1.0 if weight == NULL else <double>weight[k]) / sqrt(<double>var[k] + a.f[0])
        for i in range(size):
            wf[k * size + i] = <floating>(<double>w[k * size + i] * scale)
        bf[k] = <floating>(((0.0 if b == NULL else <double>b[k]) - <double>mean[k]) * scale
                           + (0.0 if bias == NULL else <double>bias[k]))
    return 0


cdef int forward_f32(const StepArgs* a) noexcept nogil:
    return forward_step(<const float*>a.p[0], a)


cdef int forward_f64(const StepArgs* a) noexcept nogil:
    return forward_step(<const double*>a.p[0], a)


cdef int backward_f32(const StepArgs* a) noexcept nogil:
    return backward_step(<const float*>a.p[0], a)


cdef int backward_f64(const StepArgs* a) noexcept nogil:
    return backward_step(<const double*>a.p[0], a)


cdef int fold_f32(const StepArgs* a) noexcept nogil:
    return fold_step(<const float*>a.p[0], a)


cdef int fold_f64(const StepArgs* a) noexcept nogil:
    return fold_step(<const double*>a.p[0], a)


def step_kernels():
    """step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "batch_norm2d" and
    "batch_norm2d_backward" (as the functionals, with BatchNorm2D's count
    of batches; optionally followed by ReLU, forward and backward),
    "batch_norm2d_fold" (a convolution's filters and bias with an
    evaluation-mode batch norm applied).
    """
    return {
        ("batch_norm2d", "float32"): step_capsule(forward_f32),
        ("batch_norm2d", "float64"): step_capsule(forward_f64),
        ("batch_norm2d_backward", "float32"): step_capsule(backward_f32),
        ("batch_norm2d_backward", "float64"): step_capsule(backward_f64),
        ("batch_norm2d_fold", "float32"): step_capsule(fold_f32),
        ("batch_norm2d_fold", "float64"): step_capsule(fold_f64),
    }

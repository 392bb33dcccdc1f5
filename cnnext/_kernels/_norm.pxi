# Batch normalisation kernels: per-channel statistics of NCHW batches, the
# normalisation with its affine transform, and its gradient.
#
# Layers, top to bottom:
#
# * cnnext.functional.batch_norm2d / batch_norm2d_backward
#   (cnnext/_functional/normalization.py) validate every argument, allocate
#   the outputs and the scratch array, and pass (N, C, H*W) views.
# * The def functions at the end release the GIL and run three kinds of
#   passes over the N*C planes, spread over OpenMP threads when the batch is
#   large enough: statistics of each plane (into the scratch array), then a
#   reduction per channel over its N planes in image order, then an
#   elementwise pass.  A plane's statistics are computed by one thread in a
#   fixed lane order (_reduce.pxi) and reduced in a fixed order, so results
#   do not depend on the thread count.
# * The cdef inline helpers work on one plane from raw pointers.
#
# Statistics are robust to a large mean: each plane's sum of squared
# deviations is taken about the plane's own mean (the plane is still in
# cache for that second read) and the planes are merged with Chan et al.'s
# pairwise formula in double precision.  The running variance is updated
# with the unbiased estimate, as PyTorch does.
#
# The shared source of _norm_baseline, _norm_x86_64_v3 and _norm_x86_64_v4
# (setup.py compiles each with its instruction set).

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

from ._openmp_helpers cimport effective_num_threads

include "_compiled_isa.pxi"
include "_reduce.pxi"

# Below this many elements a call runs on the calling thread: starting an
# OpenMP team costs about as much as one pass over 32 KiB.
cdef Py_ssize_t MIN_PARALLEL_ELEMENTS = 1 << 15


cdef inline int num_threads_for(Py_ssize_t count) noexcept nogil:
    if count < MIN_PARALLEL_ELEMENTS:
        return 1
    return effective_num_threads()


cdef inline void plane_moments(const floating* x,  # IN (n,), n >= 1
                               Py_ssize_t n,
                               double* out         # OUT [sum, sum of squared deviations]
                               ) noexcept nogil:
    cdef double total = span_sum(x, n)
    cdef double mean = total / n
    cdef floating shift = <floating>mean
    cdef double offset = mean - <double>shift
    # The squares were taken about the rounded mean; move them to the mean.
    cdef double m2 = span_sum_squared_deviations(x, n, shift) - n * offset * offset
    out[0] = total
    out[1] = m2 if m2 > 0 else 0


cdef inline void affine_plane(const floating* x,  # IN  (n,)
                              floating* y,        # OUT (n,)
                              Py_ssize_t n, floating center, floating invstd, floating weight,
                              floating bias) noexcept nogil:
    # In the definition's order: x near the top of the range, or a large
    # weight, overflows only where the result does.
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = (x[i] - center) * invstd * weight + bias


cdef inline void input_grad_plane(const gate* kind,
                                  const floating* gy,  # IN  (n,)
                                  const floating* y,   # IN  (n,) (ReluGated)
                                  const floating* x,   # IN  (n,)
                                  floating* gx,        # OUT (n,)
                                  Py_ssize_t n, floating invstd, floating weight,
                                  floating b, floating center, floating d) noexcept nogil:
    # The bracket first, then invstd, then the weight, as the definition
    # reads: a large weight cannot overflow the terms that cancel.
    cdef Py_ssize_t i
    for i in range(n):
        gx[i] = (gated(kind, gy, y, i) - (x[i] - center) * b - d) * invstd * weight


cdef inline void scaled_plane(const gate* kind,
                              const floating* gy,  # IN  (n,)
                              const floating* y,   # IN  (n,) (ReluGated)
                              floating* gx,        # OUT (n,)
                              Py_ssize_t n, floating invstd, floating weight) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        gx[i] = gated(kind, gy, y, i) * invstd * weight


cdef inline void input_grad(const gate* kind,
                            const floating* gy,  # IN  (n,)
                            const floating* y,   # IN  (n,) the ReLU's output (ReluGated)
                            const floating* x,   # IN  (n,)
                            floating* gx,        # OUT (n,)
                            Py_ssize_t n,
                            const double* coef,  # IN  the channel's (invstd, weight, b, d)
                            double mean, bint training) noexcept nogil:
    # gx = (gy - b (x - mean) - d) invstd weight with the batch's statistics,
    # gy invstd weight without (gy gated, for ReluGated).
    cdef Py_ssize_t i
    if training:
        input_grad_plane(kind, gy, y, x, gx, n, <floating>coef[0], <floating>coef[1],
                         <floating>coef[2], <floating>mean, <floating>coef[3])
    else:
        scaled_plane(kind, gy, y, gx, n, <floating>coef[0], <floating>coef[1])
    if floating is float:
        if not span_finite(gx, n):
            # Near the top of float32's range a term may overflow where the
            # result does not: the plane again in double precision.
            for i in range(n):
                if training:
                    gx[i] = <floating>((gated(kind, gy, y, i) - (<double>x[i] - mean) * coef[2]
                                        - coef[3]) * coef[0] * coef[1])
                else:
                    gx[i] = <floating>(<double>gated(kind, gy, y, i) * coef[0] * coef[1])


cdef inline void normalize(const floating* x,  # IN  (n,)
                           floating* y,        # OUT (n,)
                           Py_ssize_t n,
                           const double* coef,  # IN  the channel's (mean, invstd, weight, bias)
                           bint relu) noexcept nogil:
    # relu: then ReLU on the plane while it is in cache, the select of the
    # ReLU layer (NaN kept), so the results are that layer's bits.
    cdef Py_ssize_t i
    affine_plane(x, y, n, <floating>coef[0], <floating>coef[1], <floating>coef[2],
                 <floating>coef[3])
    if floating is float:
        if not span_finite(y, n):  # as in input_grad
            for i in range(n):
                y[i] = <floating>((<double>x[i] - coef[0]) * coef[1] * coef[2] + coef[3])
    if relu:
        for i in range(n):
            y[i] = y[i] if not (y[i] <= 0) else 0


cdef void forward_pass(const floating* x,       # IN  (N, C, L)
                       const floating* weight,  # IN  (C,) or NULL (ones)
                       const floating* bias,    # IN  (C,) or NULL (zeros)
                       floating* running_mean,  # IN/OUT (C,), or NULL when training
                       floating* running_var,   # IN/OUT (C,), or NULL when training
                       floating* y,             # OUT (N, C, L)
                       double* mean,            # OUT (C,)
                       double* invstd,          # OUT (C,)
                       double* scratch,         # TMP (2 N C + 4 C,)
                       Py_ssize_t N, Py_ssize_t C, Py_ssize_t L,
                       bint training, double eps, double momentum,
                       bint relu=False) noexcept nogil:
    # relu: y = relu(batch_norm(x)), ReLU applied plane by plane as it is stored.
    cdef Py_ssize_t p, n, c, planes = N * C
    cdef double count = <double>N * <double>L
    cdef double total, m2, plane_mean, delta, var
    cdef double* stats = scratch
    cdef double* coef = scratch + 2 * planes
    cdef int n_threads = num_threads_for(planes * L)
    cdef bint update = running_mean != NULL
    if training:
        if n_threads == 1:
            for p in range(planes):
                plane_moments(x + p * L, L, stats + 2 * p)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                plane_moments(x + p * L, L, stats + 2 * p)
        for c in range(C):
            total = 0
            for n in range(N):
                total = total + stats[2 * (n * C + c)]
            mean[c] = total / count
            m2 = 0
            for n in range(N):
                plane_mean = stats[2 * (n * C + c)] / L
                delta = plane_mean - mean[c]
                m2 = m2 + stats[2 * (n * C + c) + 1] + L * delta * delta
            var = m2 / count
            invstd[c] = 1 / sqrt(var + eps)
            if update:
                running_mean[c] = <floating>((1 - momentum) * running_mean[c]
                                             + momentum * mean[c])
                running_var[c] = <floating>((1 - momentum) * running_var[c]
                                            + momentum * (m2 / (count - 1)))
    else:
        for c in range(C):
            mean[c] = running_mean[c]
            invstd[c] = 1 / sqrt(<double>running_var[c] + eps)
    for c in range(C):
        coef[4 * c] = mean[c]
        coef[4 * c + 1] = invstd[c]
        coef[4 * c + 2] = weight[c] if weight != NULL else 1
        coef[4 * c + 3] = bias[c] if bias != NULL else 0
    if n_threads == 1:
        for p in range(planes):
            normalize(x + p * L, y + p * L, L, coef + 4 * (p % C), relu)
    else:
        for p in prange(planes, num_threads=n_threads, schedule="static"):
            normalize(x + p * L, y + p * L, L, coef + 4 * (p % C), relu)


cdef void backward_pass(const gate* kind,
                        const floating* gy,      # IN  (N, C, L)
                        const floating* y,       # IN  (N, C, L) the ReLU's output (ReluGated)
                        const floating* x,       # IN  (N, C, L) the forward's input
                        const double* mean,      # IN  (C,) the forward's mean
                        const double* invstd,    # IN  (C,) the forward's invstd
                        const floating* weight,  # IN  (C,) or NULL (ones)
                        floating* gx,            # OUT (N, C, L) or NULL
                        floating* gweight,       # OUT (C,) or NULL
                        floating* gbias,         # OUT (C,) or NULL
                        double* scratch,         # TMP (2 N C + 4 C,)
                        Py_ssize_t N, Py_ssize_t C, Py_ssize_t L,
                        bint training) noexcept nogil:
    # ReluGated: the gradients of relu(batch_norm(x)) given gy, the ReLU layer's
    # backward (gy where y is not <= 0, else 0) read in place of gy.
    cdef Py_ssize_t p, n, c, planes = N * C
    cdef double count = <double>N * <double>L
    cdef double total_g, total_gx
    cdef double* stats = scratch
    cdef double* coef = scratch + 2 * planes
    cdef int n_threads = num_threads_for(planes * L)
    cdef bint want_gx = gx != NULL
    cdef bint sums = gweight != NULL or gbias != NULL or (want_gx and training)
    if sums:
        if n_threads == 1:
            for p in range(planes):
                span_sum_and_dot(kind, gy + p * L, y + p * L if y != NULL else NULL, x + p * L, L,
                                 <floating>mean[p % C], stats + 2 * p, stats + 2 * p + 1)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                span_sum_and_dot(kind, gy + p * L, y + p * L if y != NULL else NULL, x + p * L, L,
                                 <floating>mean[p % C], stats + 2 * p, stats + 2 * p + 1)
    # Per channel, the planes in image order; then gx = (gy - b (x - mean) - d) a.
    for c in range(C):
        total_g = 0
        total_gx = 0
        if sums:
            for n in range(N):
                total_g = total_g + stats[2 * (n * C + c)]
                total_gx = total_gx + stats[2 * (n * C + c) + 1]
            if gbias != NULL:
                gbias[c] = <floating>total_g
            if gweight != NULL:
                gweight[c] = <floating>(total_gx * invstd[c])
        coef[4 * c] = invstd[c]
        coef[4 * c + 1] = weight[c] if weight != NULL else 1
        coef[4 * c + 2] = invstd[c] * invstd[c] * total_gx / count
        coef[4 * c + 3] = total_g / count
    if want_gx and planes > 0:
        if n_threads == 1:
            for p in range(planes):
                input_grad(kind, gy + p * L, y + p * L if y != NULL else NULL, x + p * L,
                           gx + p * L, L, coef + 4 * (p % C), mean[p % C], training)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                input_grad(kind, gy + p * L, y + p * L if y != NULL else NULL, x + p * L,
                           gx + p * L, L, coef + 4 * (p % C), mean[p % C], training)


cdef inline const floating* data_or_null(const floating[::1] values) noexcept:
    return NULL if values is None else &values[0]


def batch_norm_forward(const floating[:, :, ::1] x,   # IN  (N, C, L)
                       const floating[::1] weight,    # IN  (C,) or None (ones)
                       const floating[::1] bias,      # IN  (C,) or None (zeros)
                       floating[::1] running_mean,    # IN/OUT (C,) or None
                       floating[::1] running_var,     # IN/OUT (C,) or None
                       floating[:, :, ::1] y,         # OUT (N, C, L)
                       double[::1] mean,              # OUT (C,)
                       double[::1] invstd,            # OUT (C,)
                       double[::1] scratch,           # TMP (2 N C + 4 C,)
                       bint training, double eps, double momentum):
    """batch_norm_forward(x, weight, bias, running_mean, running_var, y, mean, invstd,
    scratch, training, eps, momentum)

    y[n, c] = (x[n, c] - mean[c]) * invstd[c] * weight[c] + bias[c].

    training: mean and invstd = 1 / sqrt(var + eps) of the batch (biased
    variance over N and L), and, when given, running_mean and running_var
    updated as r = (1 - momentum) r + momentum s with the unbiased variance
    (N L >= 2).  Otherwise mean = running_mean and invstd from running_var
    (both given).  The caller checks everything; L >= 1, and N L >= 2 when
    training.
    """
    cdef const floating* w = data_or_null(weight)
    cdef const floating* b = data_or_null(bias)
    cdef floating* rm = NULL
    cdef floating* rv = NULL
    cdef const floating* x_data = NULL
    cdef floating* y_data = NULL
    if x.shape[1] == 0:
        return
    if x.shape[0] > 0:  # else only the statistics
        x_data = &x[0, 0, 0]
        y_data = &y[0, 0, 0]
    if running_mean is not None:
        rm = &running_mean[0]
        rv = &running_var[0]
    with nogil:
        forward_pass(x_data, w, b, rm, rv, y_data, &mean[0], &invstd[0], &scratch[0],
                     x.shape[0], x.shape[1], x.shape[2], training, eps, momentum)


def batch_norm_backward(const floating[:, :, ::1] gy,  # IN  (N, C, L)
                        const floating[:, :, ::1] x,   # IN  (N, C, L) the forward's input
                        const double[::1] mean,        # IN  (C,) the forward's mean
                        const double[::1] invstd,      # IN  (C,) the forward's invstd
                        const floating[::1] weight,    # IN  (C,) or None (ones)
                        floating[:, :, ::1] gx,        # OUT (N, C, L) or None
                        floating[::1] gweight,         # OUT (C,) or None
                        floating[::1] gbias,           # OUT (C,) or None
                        double[::1] scratch,           # TMP (2 N C + 4 C,)
                        bint training):
    """batch_norm_backward(gy, x, mean, invstd, weight, gx, gweight, gbias, scratch, training)

    Gradients of batch_norm_forward with the same mean and invstd, given gy:
    gbias = sum(gy), gweight = sum(gy * (x - mean)) * invstd over N and L,
    and gx: with the batch's statistics (training) ::

        gx = weight * invstd * (gy - sum(gy) / M - (x - mean) * invstd**2
                                * sum(gy * (x - mean)) / M),   M = N L

    or gx = weight * invstd * gy with fixed (running) statistics.  The
    caller checks everything; outputs left None are not computed.
    """
    cdef floating* gx_data = NULL
    cdef floating* gw = NULL
    cdef floating* gb = NULL
    cdef const floating* w = data_or_null(weight)
    cdef const floating* gy_data = NULL
    cdef const floating* x_data = NULL
    if gy.shape[1] == 0:
        return
    if gy.shape[0] > 0:
        gy_data = &gy[0, 0, 0]
        x_data = &x[0, 0, 0]
        if gx is not None:
            gx_data = &gx[0, 0, 0]
    if gweight is not None:
        gw = &gweight[0]
    if gbias is not None:
        gb = &gbias[0]
    with nogil:
        backward_pass(<Ungated*>NULL, gy_data, NULL, x_data, &mean[0], &invstd[0], w, gx_data,
                      gw, gb, &scratch[0], gy.shape[0], gy.shape[1], gy.shape[2], training)


include "_norm_steps.pxi"

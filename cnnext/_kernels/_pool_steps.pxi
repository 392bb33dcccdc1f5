# Step kernels of the pooling family (the convention: _step.pxd), included by
# _pool.pxi: the pooling functionals with their arguments bound.
#
# Every step takes the geometry in n: 0 planes (N * C), 1 H, 2 W, 3 Ho,
# 4 Wo, 5 kh, 6 kw, 7 sh, 8 sw, 9 ph, 10 pw (the padding before the plane);
# n[11] is the step's own flag; 12 dh, 13 dw (the dilation, 0 read as 1).
# The global average steps take n: 0 planes (N * C), 1 H * W.

from ._step cimport STEP_BAD_INDEX, StepArgs, step_capsule


cdef inline Geometry step_geometry(const StepArgs* a) noexcept nogil:
    cdef Geometry g
    g.height, g.width, g.out_height, g.out_width = a.n[1], a.n[2], a.n[3], a.n[4]
    g.kernel_h, g.kernel_w, g.stride_h, g.stride_w = a.n[5], a.n[6], a.n[7], a.n[8]
    g.pad_h, g.pad_w = a.n[9], a.n[10]
    g.dilation_h = a.n[12] if a.n[12] > 0 else 1
    g.dilation_w = a.n[13] if a.n[13] > 0 else 1
    return g


cdef inline int max_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN, 1 y OUT, 2 indices OUT (int64) or NULL
    cdef Geometry g = step_geometry(a)
    max_pass(x, <floating*>a.p[1], <int64_t*>a.p[2], a.n[0], &g)
    return 0


cdef inline int max_backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN, 1 indices IN (int64), 2 gx OUT; n[11]: check the indices first
    # (indices a plan's own forward step wrote need no check)
    if max_backward_pass(gy, <const int64_t*>a.p[1], a.n[0], a.n[1] * a.n[2], a.n[3] * a.n[4],
                         a.n[11] != 0, <floating*>a.p[2]) >= 0:
        return STEP_BAD_INDEX
    return 0


cdef inline int avg_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN, 1 y OUT, 2 divisors IN (Ho, Wo) or NULL (kh * kw)
    cdef Geometry g = step_geometry(a)
    avg_pass(x, <floating*>a.p[1], <const floating*>a.p[2], a.n[0], &g)
    return 0


cdef inline int avg_backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN, 1 gx OUT, 2 divisors IN (Ho, Wo) or NULL (kh * kw)
    cdef Geometry g = step_geometry(a)
    avg_backward_pass(gy, <const floating*>a.p[2], <floating*>a.p[1], a.n[0], &g)
    return 0


cdef inline int global_avg_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN (planes, H * W), 1 y OUT (planes,)
    global_avg_pass(x, <floating*>a.p[1], a.n[0], a.n[1])
    return 0


cdef inline int global_avg_backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN (planes,), 1 gx OUT (planes, H * W)
    global_avg_backward_pass(gy, <floating*>a.p[1], a.n[0], a.n[1])
    return 0


cdef int max_f32(const StepArgs* a) noexcept nogil:
    return max_step(<const float*>a.p[0], a)


cdef int max_f64(const StepArgs* a) noexcept nogil:
    return max_step(<const double*>a.p[0], a)


cdef int max_backward_f32(const StepArgs* a) noexcept nogil:
    return max_backward_step(<const float*>a.p[0], a)


cdef int max_backward_f64(const StepArgs* a) noexcept nogil:
    return max_backward_step(<const double*>a.p[0], a)


cdef int avg_f32(const StepArgs* a) noexcept nogil:
    return avg_step(<const float*>a.p[0], a)


cdef int avg_f64(const StepArgs* a) noexcept nogil:
    return avg_step(<const double*>a.p[0], a)


cdef int avg_backward_f32(const StepArgs* a) noexcept nogil:
    return avg_backward_step(<const float*>a.p[0], a)


cdef int avg_backward_f64(const StepArgs* a) noexcept nogil:
    return avg_backward_step(<const double*>a.p[0], a)


cdef int global_avg_f32(const StepArgs* a) noexcept nogil:
    return global_avg_step(<const float*>a.p[0], a)


cdef int global_avg_f64(const StepArgs* a) noexcept nogil:
    return global_avg_step(<const double*>a.p[0], a)


cdef int global_avg_backward_f32(const StepArgs* a) noexcept nogil:
    return global_avg_backward_step(<const float*>a.p[0], a)


cdef int global_avg_backward_f64(const StepArgs* a) noexcept nogil:
    return global_avg_backward_step(<const double*>a.p[0], a)


def step_kernels():
    """step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "max_pool2d",
    "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward"
    (as the functionals of those names).
    """
    return {
        ("max_pool2d", "float32"): step_capsule(max_f32),
        ("max_pool2d", "float64"): step_capsule(max_f64),
        ("max_pool2d_backward", "float32"): step_capsule(max_backward_f32),
        ("max_pool2d_backward", "float64"): step_capsule(max_backward_f64),
        ("avg_pool2d", "float32"): step_capsule(avg_f32),
        ("avg_pool2d", "float64"): step_capsule(avg_f64),
        ("avg_pool2d_backward", "float32"): step_capsule(avg_backward_f32),
        ("avg_pool2d_backward", "float64"): step_capsule(avg_backward_f64),
        ("global_avg_pool2d", "float32"): step_capsule(global_avg_f32),
        ("global_avg_pool2d", "float64"): step_capsule(global_avg_f64),
        ("global_avg_pool2d_backward", "float32"): step_capsule(global_avg_backward_f32),
        ("global_avg_pool2d_backward", "float64"): step_capsule(global_avg_backward_f64),
    }

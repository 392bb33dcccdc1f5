# Step kernels of the dense family (the convention: _step.pxd), included by
# _dense.pxi: ``F.linear`` and ``F.linear_backward`` with their arguments bound.

from ._step cimport StepArgs, step_capsule


cdef inline int forward_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN (N, I), 1 w IN (O, I), 2 b IN (O,) or NULL, 3 y OUT (N, O)
    # n: 0 N, 1 I, 2 O
    forward_pass(x, <const floating*>a.p[1], <const floating*>a.p[2], a.n[0], a.n[1], a.n[2],
                 <floating*>a.p[3])
    return 0


cdef inline int backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN (N, O), 1 x IN (N, I), 2 w IN/OUT (O, I), 3 gx OUT (N, I) or NULL,
    #    4 gw IN/OUT (O, I), 5 gb IN/OUT (O,) or NULL
    # n: 0 N, 1 I, 2 O, 3 accumulate into gw and gb (else overwrite)
    # f: 0 alpha: gw (+)= alpha gy^T x, gb (+)= alpha sum of gy
    if a.p[3] != NULL:
        input_gradient_pass(gy, <const floating*>a.p[2], a.n[0], a.n[1], a.n[2],
                            <floating*>a.p[3])
    params_gradient_pass(gy, <const floating*>a.p[1], a.n[0], a.n[1], a.n[2],
                         <floating>a.f[0], a.n[3] != 0, <floating*>a.p[4], <floating*>a.p[5])
    return 0


cdef int forward_f32(const StepArgs* a) noexcept nogil:
    return forward_step(<const float*>a.p[0], a)


cdef int forward_f64(const StepArgs* a) noexcept nogil:
    return forward_step(<const double*>a.p[0], a)


cdef int backward_f32(const StepArgs* a) noexcept nogil:
    return backward_step(<const float*>a.p[0], a)


cdef int backward_f64(const StepArgs* a) noexcept nogil:
    return backward_step(<const double*>a.p[0], a)


def step_kernels():
    """step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "linear" (as
    ``F.linear``) and "linear_backward" (as ``F.linear_backward``).
    """
    return {
        ("linear", "float32"): step_capsule(forward_f32),
        ("linear", "float64"): step_capsule(forward_f64),
        ("linear_backward", "float32"): step_capsule(backward_f32),
        ("linear_backward", "float64"): step_capsule(backward_f64),
    }

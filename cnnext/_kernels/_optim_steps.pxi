# Step kernels of the optimiser family (the convention: _step.pxd), included
# by _optim.pxi: one parameter's update, as ``Optimizer.step`` makes it.

from libc.math cimport pow
from libc.stdint cimport int64_t

from ._step cimport StepArgs, step_capsule


cdef inline int sgd_step_of(floating* param, const StepArgs* a) noexcept nogil:
    # p: 0 param IN/OUT (n,), 1 grad IN, 2 momentum buffer IN/OUT or NULL
    # n: 0 elements, 1 nesterov;  f: 0 lr, 1 momentum, 2 weight decay
    sgd_pass(param, <const floating*>a.p[1], <floating*>a.p[2], a.n[0], a.f[0], a.f[1], a.f[2],
             a.n[1] != 0)
    return 0


cdef inline int adam_step_of(floating* param, const StepArgs* a) noexcept nogil:
    # p: 0 param IN/OUT (n,), 1 grad IN, 2 exp_avg IN/OUT, 3 exp_avg_sq IN/OUT,
    #    4 the step count IN/OUT (one int64), incremented first
    # n: 0 elements;  f: 0 lr, 1 beta1, 2 beta2, 3 eps, 4 weight decay
    # The step size and bias correction are those cnnext.optim.Adam computes
    # in Python doubles: lr / (1 - beta1**t), sqrt(1 - beta2**t).
    cdef int64_t* count = <int64_t*>a.p[4]
    cdef double t
    count[0] += 1
    t = <double>count[0]
    adam_pass(param, <const floating*>a.p[1], <floating*>a.p[2], <floating*>a.p[3], a.n[0],
              a.f[0] / (1 - pow(a.f[1], t)), sqrt(1 - pow(a.f[2], t)), a.f[1], a.f[2], a.f[3],
              a.f[4])
    return 0


cdef int sgd_f32(const StepArgs* a) noexcept nogil:
    return sgd_step_of(<float*>a.p[0], a)


cdef int sgd_f64(const StepArgs* a) noexcept nogil:
    return sgd_step_of(<double*>a.p[0], a)


cdef int adam_f32(const StepArgs* a) noexcept nogil:
    return adam_step_of(<float*>a.p[0], a)


cdef int adam_f64(const StepArgs* a) noexcept nogil:
    return adam_step_of(<double*>a.p[0], a)


def step_kernels():
    """step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "sgd", "adam".
    """
    return {
        ("sgd", "float32"): step_capsule(sgd_f32),
        ("sgd", "float64"): step_capsule(sgd_f64),
        ("adam", "float32"): step_capsule(adam_f32),
        ("adam", "float64"): step_capsule(adam_f64),
    }

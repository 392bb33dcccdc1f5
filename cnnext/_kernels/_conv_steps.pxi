# Step kernels of the convolution family (the convention: _step.pxd), included
# by _conv.pxi.  Each step is one ``cnnext.functional`` call with its
# arguments bound, computing what that call computes: the same passes, the
# same choice of layouts.
#
# Both steps take ``plan[0]``, the capsule of a Plan (``Plan.step_plan``),
# and ``plan[1]``, that of the same geometry built with reformulate=False,
# or NULL when the first plan has no reformulated pass.  As in the
# functional wrappers, operands holding NaN or inf are computed with the
# second (one pass over them, only when the first plan would reformulate).

from libc.stdint cimport uint32_t, uint64_t

from ._step cimport StepArgs, step_capsule


cdef inline bint all_finite(const floating* values, Py_ssize_t count) noexcept nogil:
    """No NaN or inf among ``values``: no element has an all-ones exponent
    (integer operations, which vectorise without reassociating sums)."""
    cdef Py_ssize_t i
    cdef uint32_t bad32 = 0
    cdef uint64_t bad64 = 0
    cdef const uint32_t* bits32
    cdef const uint64_t* bits64
    if floating is float:
        bits32 = <const uint32_t*>values
        for i in range(count):
            bad32 |= <uint32_t>((bits32[i] & 0x7f800000u) == 0x7f800000u)
        return bad32 == 0
    else:
        bits64 = <const uint64_t*>values
        for i in range(count):
            bad64 |= <uint64_t>((bits64[i] & 0x7ff0000000000000u) == 0x7ff0000000000000u)
        return bad64 == 0


def finite(const floating[::1] values):
    """finite(values)

    True when no element of the flat C-contiguous ``values`` is NaN or inf.
    """
    cdef bint result
    with nogil:
        result = all_finite(&values[0], values.shape[0]) if values.shape[0] else True
    return result


cdef inline int forward_step(const floating* x, const StepArgs* a, bint relu) noexcept nogil:
    # p: 0 x IN (N, C, H, W), 1 w IN (K, C, R, S), 2 b IN (K,) or NULL,
    #    3 y OUT (N, K, Ho, Wo), 4 work TMP (the larger forward_workspace of the plans)
    # n: 0 elements of x, 1 elements of w
    # relu: y = relu(conv2d(x, w, b)), ReLU in the tiles' store
    cdef const ConvStepPlan* sp = <const ConvStepPlan*>a.plan[0]
    cdef const floating* w = <const floating*>a.p[1]
    if a.plan[1] != NULL and sp.d.winograd and not (all_finite(w, a.n[1])
                                                    and all_finite(x, a.n[0])):
        sp = <const ConvStepPlan*>a.plan[1]
    convolve(x, w, <const floating*>a.p[2], sp.d, False, relu, <floating*>a.p[3],
             <floating*>a.p[4])
    return 0


cdef inline int backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN (N, K, Ho, Wo), 1 x IN, 2 w IN, 3 gx OUT or NULL (no input gradient),
    #    4 gw OUT (K, C, R, S), 5 gb OUT (K,), 6 work TMP (the largest backward workspace)
    # n: 0 elements of gy, 1 elements of w
    cdef const ConvStepPlan* sp = <const ConvStepPlan*>a.plan[0]
    cdef const floating* w = <const floating*>a.p[2]
    cdef floating* gx = <floating*>a.p[3]
    cdef floating* work = <floating*>a.p[6]
    if gx != NULL and a.plan[1] != NULL and sp.data_kernel != DATA_COL2IM and not (
            all_finite(w, a.n[1]) and (sp.data_kernel != DATA_WINOGRAD
                                       or all_finite(gy, a.n[0]))):
        sp = <const ConvStepPlan*>a.plan[1]
    if gx != NULL:
        backward_data_pass(gy, w, sp, gx, work)
    backward_filter_pass(gy, <const floating*>a.p[1], sp, <floating*>a.p[4],
                         <floating*>a.p[5], work)
    return 0


cdef inline int relu_backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # As backward_step for the gradient of relu(conv2d(...)), with
    # p: 7 y IN (N, K, Ho, Wo) relu's output, 8 masked TMP (N, K, Ho, Wo):
    # gy masked by y in one pass, then the convolution's gradients of that.
    cdef floating* masked = <floating*>a.p[8]
    relu_mask(gy, <const floating*>a.p[7], a.n[0], masked)
    return backward_step(masked, a)


cdef int forward_f32(const StepArgs* a) noexcept nogil:
    return forward_step(<const float*>a.p[0], a, False)


cdef int forward_f64(const StepArgs* a) noexcept nogil:
    return forward_step(<const double*>a.p[0], a, False)


cdef int relu_forward_f32(const StepArgs* a) noexcept nogil:
    return forward_step(<const float*>a.p[0], a, True)


cdef int relu_forward_f64(const StepArgs* a) noexcept nogil:
    return forward_step(<const double*>a.p[0], a, True)


cdef int backward_f32(const StepArgs* a) noexcept nogil:
    return backward_step(<const float*>a.p[0], a)


cdef int backward_f64(const StepArgs* a) noexcept nogil:
    return backward_step(<const double*>a.p[0], a)


cdef int relu_backward_f32(const StepArgs* a) noexcept nogil:
    return relu_backward_step(<const float*>a.p[0], a)


cdef int relu_backward_f64(const StepArgs* a) noexcept nogil:
    return relu_backward_step(<const double*>a.p[0], a)


def step_kernels():
    """step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "conv2d" (as
    ``F.conv2d``) and "conv2d_backward" (as ``F.conv2d_backward``),
    "conv2d_relu" (``F.relu`` of ``F.conv2d``, ReLU in the store) and
    "conv2d_relu_backward" (``F.conv2d_backward`` of ``F.relu_backward``,
    the mask from relu's output), and the fused kernels' (_conv_fused.pxi).
    """
    return {
        ("conv2d", "float32"): step_capsule(forward_f32),
        ("conv2d", "float64"): step_capsule(forward_f64),
        ("conv2d_backward", "float32"): step_capsule(backward_f32),
        ("conv2d_backward", "float64"): step_capsule(backward_f64),
        ("conv2d_relu", "float32"): step_capsule(relu_forward_f32),
        ("conv2d_relu", "float64"): step_capsule(relu_forward_f64),
        ("conv2d_relu_backward", "float32"): step_capsule(relu_backward_f32),
        ("conv2d_relu_backward", "float64"): step_capsule(relu_backward_f64),
        **fused_step_kernels(),
    }

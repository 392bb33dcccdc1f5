# Step kernels of the depthwise convolution family (the convention:
# _step.pxd), included by _depthwise.pxi: ``F.conv2d(..., groups=C)`` and
# ``F.conv2d_backward(..., groups=C)`` with their arguments bound, running
# the planes the def functions run; and the copy of a group of channels
# in or out of a batch that other groupings run the convolution steps on.
#
# Both steps take ``plan[0]``, the capsule of a StepPlan (its geometry and
# tap offsets, computed once).  Their padded-plane buffers are the plan's,
# zeroed when allocated: every plane writes the same interior of them, so
# they stay zero outside it from call to call; threads beyond the first get
# buffers of their own for the call (or, without memory for them, the call
# runs on one thread: the results do not depend on the thread count).

from cpython.pycapsule cimport PyCapsule_New
from libc.string cimport memcpy

from ._step cimport StepArgs, step_capsule


cdef struct StepLayout:
    Geometry g
    Py_ssize_t images, channels
    Py_ssize_t* offsets              # new_offsets(g, DATA_SCATTER)
    Py_ssize_t* gradient             # new_offsets(g, data_mode(g, False))


cdef class StepPlan:
    """StepPlan(x_shape, w_shape, y_shape, stride, padding, dilation)

    The geometry of depthwise steps on validated shapes: ``step_plan()``
    is the capsule the steps take; ``forward_scratch`` and
    ``data_scratch`` the elements of the padded-plane buffers the plan
    allocates for them (zeroed), ``partial_shape`` that of the weight
    gradient's per-image sums (float64), ``output_shape`` y's.
    """

    cdef StepLayout layout
    cdef readonly Py_ssize_t forward_scratch, data_scratch
    cdef readonly tuple partial_shape, output_shape

    def __cinit__(self):
        self.layout.offsets = self.layout.gradient = NULL

    def __init__(self, x_shape, w_shape, y_shape, tuple stride, tuple padding,
                 tuple dilation):
        cdef Py_ssize_t xs[4]
        cdef Py_ssize_t ws[4]
        cdef Py_ssize_t ys[4]
        cdef int i
        # A second __init__ on the same object must not leak the first's tables.
        free(self.layout.offsets)
        free(self.layout.gradient)
        self.layout.offsets = self.layout.gradient = NULL
        for i in range(4):
            xs[i], ws[i], ys[i] = x_shape[i], w_shape[i], y_shape[i]
        self.layout.g = make_geometry(xs, ws, ys, stride, padding, dilation)
        self.layout.images, self.layout.channels = xs[0], xs[1]
        self.layout.offsets = new_offsets(&self.layout.g, DATA_SCATTER)
        self.layout.gradient = new_offsets(&self.layout.g, data_mode(&self.layout.g, False))
        self.forward_scratch = forward_scratch(&self.layout.g)
        # The scatter (filters holding inf or NaN) runs on the same buffer.
        self.data_scratch = max(data_scratch(&self.layout.g, DATA_SCATTER),
                                data_scratch(&self.layout.g, data_mode(&self.layout.g, False)))
        self.partial_shape = (xs[0], ws[0], ws[2] * ws[3] + 1)
        self.output_shape = tuple(y_shape)

    def __dealloc__(self):
        free(self.layout.offsets)
        free(self.layout.gradient)

    def __reduce__(self):
        raise TypeError("a depthwise StepPlan holds raw pointers and cannot be pickled")

    def step_plan(self):
        """step_plan()

        The capsule of the plan's layout, valid while the plan lives.
        """
        return PyCapsule_New(&self.layout, "cnnext.depthwise_layout", NULL)


cdef inline int forward_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN (N, C, H, W), 1 w IN (C m, 1, R, S), 2 b IN (C m,) or NULL,
    #    3 y OUT (N, C m, Ho, Wo), 4 xp TMP (forward_scratch,) the plan's, zeroed
    cdef const StepLayout* s = <const StepLayout*>a.plan[0]
    return forward_planes(x, <const floating*>a.p[1], <const floating*>a.p[2],
                          <floating*>a.p[3], s.images * s.channels, s.channels, &s.g,
                          s.offsets, <floating*>a.p[4])


cdef inline int backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN (N, C m, Ho, Wo), 1 x IN, 2 w IN, 3 gx OUT or NULL (no input gradient),
    #    4 gw OUT (C m, 1, R, S), 5 gb OUT (C m,), 6 partial TMP (partial_shape, doubles),
    #    7 xp TMP (forward_scratch,) the plan's, zeroed (the forward step's may serve),
    #    8 gyp TMP (data_scratch,) the plan's, zeroed
    # n: 0 elements of w
    # As the functional: filters holding inf or NaN take the scatter.
    cdef const StepLayout* s = <const StepLayout*>a.plan[0]
    cdef const floating* w = <const floating*>a.p[2]
    cdef floating* gx = <floating*>a.p[3]
    cdef floating* gyp = <floating*>a.p[8]
    cdef int mode
    if gx != NULL:
        mode = data_mode(&s.g, not span_finite(w, a.n[0]))
        backward_data_planes(gy, w, gx, s.images * s.channels, s.channels, &s.g, mode,
                             s.offsets if mode == DATA_SCATTER else s.gradient, gyp)
        if mode == DATA_SCATTER:
            # The scatter writes the whole buffer; the other passes need zeros around gy.
            memset(gyp, 0, data_scratch(&s.g, data_mode(&s.g, False)) * sizeof(floating))
    return backward_filter_planes(gy, <const floating*>a.p[1], <double*>a.p[6],
                                  <floating*>a.p[4], <floating*>a.p[5], s.images, s.channels,
                                  &s.g, s.offsets, <floating*>a.p[7])


cdef int forward_f32(const StepArgs* a) noexcept nogil:
    return forward_step(<const float*>a.p[0], a)


cdef int forward_f64(const StepArgs* a) noexcept nogil:
    return forward_step(<const double*>a.p[0], a)


cdef int backward_f32(const StepArgs* a) noexcept nogil:
    return backward_step(<const float*>a.p[0], a)


cdef int backward_f64(const StepArgs* a) noexcept nogil:
    return backward_step(<const double*>a.p[0], a)


cdef inline int copy_channels_step(const StepArgs* a, Py_ssize_t item) noexcept nogil:
    # p: 0 src IN, 1 dst OUT
    # n: 0 images, 1 elements copied of each, 2 src elements per image, 3 dst elements
    #    per image, 4 the first copied of src's image, 5 where it goes in dst's
    cdef Py_ssize_t n
    cdef const char* src = <const char*>a.p[0]
    cdef char* dst = <char*>a.p[1]
    for n in range(a.n[0]):
        memcpy(dst + (n * a.n[3] + a.n[5]) * item, src + (n * a.n[2] + a.n[4]) * item,
               a.n[1] * item)
    return 0


cdef int copy_channels_f32(const StepArgs* a) noexcept nogil:
    return copy_channels_step(a, sizeof(float))


cdef int copy_channels_f64(const StepArgs* a) noexcept nogil:
    return copy_channels_step(a, sizeof(double))


def step_kernels():
    """step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "depthwise2d" (as
    ``F.conv2d`` with groups == channels) and "depthwise2d_backward" (as
    ``F.conv2d_backward`` with groups == channels), "copy_channels" (a run
    of each image's elements into a run of another batch's, as
    ``dst[:, a:b] = src[:, c:d]``).
    """
    return {
        ("depthwise2d", "float32"): step_capsule(forward_f32),
        ("depthwise2d", "float64"): step_capsule(forward_f64),
        ("depthwise2d_backward", "float32"): step_capsule(backward_f32),
        ("depthwise2d_backward", "float64"): step_capsule(backward_f64),
        ("copy_channels", "float32"): step_capsule(copy_channels_f32),
        ("copy_channels", "float64"): step_capsule(copy_channels_f64),
    }

# Depthwise convolution kernels: each input channel convolved with its own
# filters (groups == in_channels, PyTorch's groups=C), forward and backward.
#
# Layers, top to bottom:
#
# * cnnext.functional.conv2d(..., groups=C) and conv2d_backward
#   (cnnext/_functional/grouped.py) validate every argument, allocate the
#   outputs and the per-image partial sums, and call the def functions here
#   for a depthwise layer (w of shape (C m, 1, R, S): m filters a channel).
# * The def functions release the GIL and hand the N*C input planes to the
#   helpers, spread over OpenMP threads (each with its own padded copy of a
#   plane, on the heap).  A plane is computed by one thread in a fixed order; weight and
#   bias gradients are kept per image and summed over the images in order
#   afterwards, so results do not depend on the thread count.
# * The cdef inline helpers work on one plane.  Every row of output is
#   computed in blocks of BLOCK columns held in a small accumulator array:
#   the filter taps are the outer loop and the BLOCK lanes the inner one, so
#   the compiler vectorises the lanes and keeps the block in registers.  A
#   plane is first copied into a zero-padded buffer wide enough for whole
#   blocks, so the loops never test bounds.
#
# The input gradient of a stride-1 layer is the forward correlation of the
# padded gy with the flipped filters; other strides scatter each output's
# gradient over its window.  The im2col/GEMM paths of _conv.pxi would spend
# most of their time copying here: a depthwise layer does R*S multiply-adds
# per output, so it is bound by memory, not arithmetic.
#
# The shared source of _depthwise_baseline, _depthwise_x86_64_v3 and
# _depthwise_x86_64_v4 (setup.py compiles each with its instruction set).

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport isfinite
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from ._openmp_helpers cimport effective_num_threads

include "_compiled_isa.pxi"

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef enum:
    # Output columns per accumulator block (one AVX-512 vector of float32).
    BLOCK = 16

# Below this many multiply-adds a call runs on the calling thread.
cdef Py_ssize_t MIN_PARALLEL_WORK = 1 << 16


cdef struct Geometry:
    Py_ssize_t height, width          # input plane
    Py_ssize_t out_height, out_width  # output plane
    Py_ssize_t kh, kw                 # filter
    Py_ssize_t sh, sw, ph, pw, dh, dw
    Py_ssize_t multiplier             # filters per input channel
    # The padded copy of an input plane: rows x stride elements.
    Py_ssize_t pad_rows, pad_stride
    # The padded copy of a gy plane (the stride-1 input gradient).
    Py_ssize_t gy_rows, gy_stride
    Py_ssize_t gy_top, gy_left        # where gy[0, 0] sits in it


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef Geometry make_geometry(const Py_ssize_t* x_shape,  # (N, C, H, W)
                            const Py_ssize_t* w_shape,  # (C m, 1, R, S)
                            const Py_ssize_t* y_shape,  # (N, C m, Ho, Wo)
                            tuple stride, tuple padding, tuple dilation):
    cdef Geometry g
    g.height, g.width = x_shape[2], x_shape[3]
    g.out_height, g.out_width = y_shape[2], y_shape[3]
    g.kh, g.kw = w_shape[2], w_shape[3]
    g.sh, g.sw = stride
    g.ph, g.pw = padding
    g.dh, g.dw = dilation
    g.multiplier = w_shape[0] // x_shape[1]
    # Every row read by some output row, and whole blocks of columns.
    g.pad_rows = (g.out_height - 1) * g.sh + (g.kh - 1) * g.dh + 1
    g.pad_stride = round_up(g.out_width, BLOCK) * g.sw + (g.kw - 1) * g.dw + 1
    # gy padded for the stride-1 input gradient: gx[a, b] = sum over taps of
    # w[R-1-r, S-1-s] * gyp[a + r dh, b + s dw], gy[0, 0] at (top, left).
    g.gy_top = (g.kh - 1) * g.dh - g.ph
    g.gy_left = (g.kw - 1) * g.dw - g.pw
    g.gy_rows = g.height + (g.kh - 1) * g.dh
    g.gy_stride = round_up(g.width, BLOCK) + (g.kw - 1) * g.dw + 1
    return g


cdef inline void padded_copy(const floating* src,   # IN  (rows, cols)
                             Py_ssize_t rows, Py_ssize_t cols,
                             floating* dst,         # OUT (dst_rows, dst_stride)
                             Py_ssize_t dst_rows, Py_ssize_t dst_stride,
                             Py_ssize_t top, Py_ssize_t left) noexcept nogil:
    # dst[u, v] = src[u - top, v - left] where that is inside src, else 0
    # (top and left may be negative: src is cropped).
    cdef Py_ssize_t u, v, first, last
    memset(dst, 0, dst_rows * dst_stride * sizeof(floating))
    first = max(left, 0)
    last = min(cols + left, dst_stride)
    if last <= first:
        return
    for u in range(max(top, 0), min(rows + top, dst_rows)):
        for v in range(first, last):
            dst[u * dst_stride + v] = src[(u - top) * cols + v - left]


cdef inline void correlate_plane(const floating* xp,   # IN  padded plane (rows, stride)
                                 Py_ssize_t stride,
                                 const floating* w,    # IN  (kh, kw) taps
                                 Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                 Py_ssize_t dh, Py_ssize_t dw,
                                 floating bias,
                                 floating* y,          # OUT (out_h, out_w)
                                 Py_ssize_t out_h, Py_ssize_t out_w,
                                 bint flip) noexcept nogil:
    # y[i, j] = bias + sum over taps of w[r, s] (or w[kh-1-r, kw-1-s] when
    # flip) * xp[i sh + r dh, j sw + s dw].
    cdef floating acc[BLOCK]
    cdef floating tap
    cdef const floating* row
    cdef Py_ssize_t i, jb, j, r, s, width, block
    for i in range(out_h):
        for block in range((out_w + BLOCK - 1) // BLOCK):
            jb = block * BLOCK
            for j in range(BLOCK):
                acc[j] = bias
            for r in range(kh):
                for s in range(kw):
                    tap = w[(kh - 1 - r) * kw + kw - 1 - s] if flip else w[r * kw + s]
                    row = xp + (i * sh + r * dh) * stride + jb * sw + s * dw
                    for j in range(BLOCK):
                        acc[j] = acc[j] + tap * row[j * sw]
            width = min(BLOCK, out_w - jb)
            for j in range(width):
                y[i * out_w + jb + j] = acc[j]
            if floating is float:
                if not block_finite(acc, width):
                    # A float32 sum may overflow where the exact one would not:
                    # such blocks are summed again in double precision.
                    wide_block(xp, stride, w, kh, kw, sh, sw, dh, dw, bias,
                               y + i * out_w + jb, width, i, jb, flip)


cdef inline bint block_finite(const float* values, Py_ssize_t n) noexcept nogil:
    # Whether values[:n] are all finite: v - v is NaN for inf and NaN, else 0,
    # summed in BLOCK independent lanes so that the loop vectorises.
    cdef float lanes[BLOCK]
    cdef Py_ssize_t i, k, full = n // BLOCK * BLOCK
    cdef float total = 0
    for k in range(BLOCK):
        lanes[k] = 0
    for i in range(full // BLOCK):
        for k in range(BLOCK):
            lanes[k] = lanes[k] + (values[i * BLOCK + k] - values[i * BLOCK + k])
    for k in range(n - full):
        lanes[k] = lanes[k] + (values[full + k] - values[full + k])
    for k in range(BLOCK):
        total += lanes[k]
    return total == 0


cdef inline void wide_block(const floating* xp, Py_ssize_t stride, const floating* w,
                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                            Py_ssize_t dh, Py_ssize_t dw, floating bias,
                            floating* y,  # OUT (width,) one block of one output row
                            Py_ssize_t width, Py_ssize_t i, Py_ssize_t jb,
                            bint flip) noexcept nogil:
    cdef Py_ssize_t j, r, s
    cdef double value, tap
    for j in range(width):
        value = bias
        for r in range(kh):
            for s in range(kw):
                tap = w[(kh - 1 - r) * kw + kw - 1 - s] if flip else w[r * kw + s]
                value += tap * xp[(i * sh + r * dh) * stride + (jb + j) * sw + s * dw]
        y[j] = <floating>value


cdef inline void scatter_plane(const floating* gy,  # IN  (out_h, out_w)
                               const floating* w,   # IN  (kh, kw)
                               floating* gxp,       # IN/OUT padded plane (rows, stride)
                               Py_ssize_t stride, const Geometry* g) noexcept nogil:
    # gxp[i sh + r dh, j sw + s dw] += w[r, s] * gy[i, j]: the input gradient
    # of strided layers.
    cdef floating tap
    cdef floating* row
    cdef const floating* grow
    cdef Py_ssize_t i, j, r, s
    for i in range(g.out_height):
        grow = gy + i * g.out_width
        for r in range(g.kh):
            for s in range(g.kw):
                tap = w[r * g.kw + s]
                row = gxp + (i * g.sh + r * g.dh) * stride + s * g.dw
                for j in range(g.out_width):
                    row[j * g.sw] = row[j * g.sw] + tap * grow[j]


cdef inline void filter_grad_plane(const floating* gy,  # IN  (out_h, out_w)
                                   const floating* xp,  # IN  padded input plane
                                   Py_ssize_t stride,
                                   const Geometry* g,
                                   double* out          # OUT (kh kw + 1,) taps, then bias
                                   ) noexcept nogil:
    # out[r kw + s] = sum over i, j of gy[i, j] * xp[i sh + r dh, j sw + s dw]
    # and out[kh kw] = sum of gy, each in BLOCK lanes (the columns modulo
    # BLOCK) folded in lane order.  Partial blocks stop at the row's end:
    # the columns past it may hold input that no window reaches.
    cdef floating acc[BLOCK]
    cdef const floating* row
    cdef const floating* grow
    cdef Py_ssize_t i, jb, j, r, s, k, block, full = g.out_width // BLOCK * BLOCK
    cdef double total
    for r in range(g.kh + 1):
        for s in range(g.kw if r < g.kh else 1):
            for j in range(BLOCK):
                acc[j] = 0
            for i in range(g.out_height):
                grow = gy + i * g.out_width
                if r == g.kh:  # the bias: gy alone
                    for block in range(full // BLOCK):
                        jb = block * BLOCK
                        for j in range(BLOCK):
                            acc[j] = acc[j] + grow[jb + j]
                    for j in range(g.out_width - full):
                        acc[j] = acc[j] + grow[full + j]
                    continue
                row = xp + (i * g.sh + r * g.dh) * stride + s * g.dw
                for block in range(full // BLOCK):
                    jb = block * BLOCK
                    for j in range(BLOCK):
                        acc[j] = acc[j] + grow[jb + j] * row[(jb + j) * g.sw]
                for j in range(g.out_width - full):
                    acc[j] = acc[j] + grow[full + j] * row[(full + j) * g.sw]
            total = 0
            for k in range(BLOCK):
                total += acc[k]
            if floating is float:
                if not isfinite(total):  # float32 lanes overflowed: again in double
                    total = wide_dot(gy, xp, stride, g, r, s)
            out[r * g.kw + s] = total


cdef inline double wide_dot(const floating* gy, const floating* xp, Py_ssize_t stride,
                            const Geometry* g, Py_ssize_t r, Py_ssize_t s) noexcept nogil:
    # One tap's (or, r == kh, the bias's) sum of filter_grad_plane in double precision.
    cdef Py_ssize_t i, j
    cdef double total = 0
    for i in range(g.out_height):
        for j in range(g.out_width):
            if r == g.kh:
                total += gy[i * g.out_width + j]
            else:
                total += <double>gy[i * g.out_width + j] * xp[
                    (i * g.sh + r * g.dh) * stride + j * g.sw + s * g.dw]
    return total


cdef void* thread_scratch(int n_threads, Py_ssize_t nbytes, str owner) except NULL:
    # One padded-plane buffer of nbytes per thread, on the heap: OpenMP threads
    # may have small stacks (OMP_STACKSIZE).
    cdef void* scratch = NULL
    if nbytes <= PY_SSIZE_T_MAX // n_threads:
        scratch = malloc(max(n_threads * nbytes, 1))
    if scratch == NULL:
        raise MemoryError(f"{owner}: no memory for {n_threads} padded plane(s) of {nbytes} "
                          f"bytes")
    return scratch


cdef inline int num_threads_for(Py_ssize_t work) noexcept nogil:
    if work < MIN_PARALLEL_WORK:
        return 1
    return effective_num_threads()


cdef inline void forward_plane(const floating* x,   # IN  (H, W) one input plane
                               const floating* w,   # IN  (m, R, S) its filters
                               const floating* b,   # IN  (m,) their biases, or NULL
                               floating* y,         # OUT (m, Ho, Wo) their output planes
                               Py_ssize_t y_step,   # elements between those planes
                               const Geometry* g,
                               floating* xp         # TMP (pad_rows, pad_stride)
                               ) noexcept nogil:
    cdef Py_ssize_t q, taps = g.kh * g.kw
    padded_copy(x, g.height, g.width, xp, g.pad_rows, g.pad_stride, g.ph, g.pw)
    for q in range(g.multiplier):
        correlate_plane(xp, g.pad_stride, w + q * taps, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw,
                        b[q] if b != NULL else 0, y + q * y_step, g.out_height, g.out_width,
                        False)


cdef inline void backward_data_plane(const floating* gy,  # IN  (m, Ho, Wo) planes y_step apart
                                     Py_ssize_t y_step,
                                     const floating* w,   # IN  (m, R, S)
                                     floating* gx,        # OUT (H, W)
                                     const Geometry* g, bint scatter,
                                     floating* buf      # TMP (data_scratch(g, scatter),)
                                     ) noexcept nogil:
    cdef bint unit = g.sh == 1 and g.sw == 1 and not scatter
    cdef Py_ssize_t rows = g.gy_rows if unit else g.pad_rows
    cdef Py_ssize_t cols = g.gy_stride if unit else g.pad_stride
    cdef Py_ssize_t plane_in = g.height * g.width, taps = g.kh * g.kw
    cdef Py_ssize_t q, u, v
    cdef floating* acc = buf + rows * cols
    if unit:
        # The sum over the filters of the correlation of gy, padded, with the
        # flipped filter.
        for q in range(g.multiplier):
            padded_copy(gy + q * y_step, g.out_height, g.out_width, buf, rows, cols, g.gy_top,
                        g.gy_left)
            correlate_plane(buf, cols, w + q * taps, g.kh, g.kw, 1, 1, g.dh, g.dw, 0,
                            gx if q == 0 else acc, g.height, g.width, True)
            if q > 0:
                for u in range(plane_in):
                    gx[u] = gx[u] + acc[u]
    else:
        memset(buf, 0, rows * cols * sizeof(floating))
        for q in range(g.multiplier):
            scatter_plane(gy + q * y_step, w + q * taps, buf, cols, g)
        # Rows ph.. and columns pw.. of the padded buffer are the plane; rows
        # or columns no window reached get no gradient.
        for u in range(g.height):
            for v in range(g.width):
                gx[u * g.width + v] = buf[(u + g.ph) * cols + v + g.pw] \
                    if u + g.ph < rows and v + g.pw < cols else 0
    if floating is float:
        if not block_finite(gx, plane_in):
            # Some float32 sum overflowed (or the data holds inf or NaN): the
            # plane again in double precision.
            wide_input_grad(gy, y_step, w, gx, g)


cdef inline void wide_input_grad(const floating* gy, Py_ssize_t y_step, const floating* w,
                                 floating* gx, const Geometry* g) noexcept nogil:
    # gx[u, v] = the sum over filters q and taps (r, s) reaching (u, v) from an
    # output (i, j) of w[q, r, s] gy[q, i, j], in double precision.
    cdef Py_ssize_t u, v, q, r, s, a, b
    cdef double total
    for u in range(g.height):
        for v in range(g.width):
            total = 0
            for q in range(g.multiplier):
                for r in range(g.kh):
                    a = u + g.ph - r * g.dh
                    if a < 0 or a % g.sh or a // g.sh >= g.out_height:
                        continue
                    for s in range(g.kw):
                        b = v + g.pw - s * g.dw
                        if b < 0 or b % g.sw or b // g.sw >= g.out_width:
                            continue
                        total += <double>w[(q * g.kh + r) * g.kw + s] * gy[
                            q * y_step + (a // g.sh) * g.out_width + b // g.sw]
            gx[u * g.width + v] = <floating>total


cdef inline void backward_filter_plane(const floating* gy,  # IN  (m, Ho, Wo) y_step apart
                                       Py_ssize_t y_step,
                                       const floating* x,   # IN  (H, W)
                                       double* partial,     # OUT (m, R S + 1)
                                       const Geometry* g,
                                       floating* xp         # TMP (pad_rows, pad_stride)
                                       ) noexcept nogil:
    cdef Py_ssize_t q, taps = g.kh * g.kw
    padded_copy(x, g.height, g.width, xp, g.pad_rows, g.pad_stride, g.ph, g.pw)
    for q in range(g.multiplier):
        filter_grad_plane(gy + q * y_step, xp, g.pad_stride, g, partial + q * (taps + 1))


cdef inline Py_ssize_t data_scratch(const Geometry* g, bint scatter) noexcept nogil:
    """Elements of backward_data_plane's scratch."""
    if g.sh == 1 and g.sw == 1 and not scatter:
        return g.gy_rows * g.gy_stride + g.height * g.width
    return g.pad_rows * g.pad_stride + g.height * g.width


def depthwise_forward(const floating[:, :, :, ::1] x,  # IN  (N, C, H, W)
                      const floating[:, :, :, ::1] w,  # IN  (C m, 1, R, S)
                      const floating[::1] b,           # IN  (C m,) or None
                      floating[:, :, :, ::1] y,        # OUT (N, C m, Ho, Wo)
                      tuple stride, tuple padding, tuple dilation):
    """depthwise_forward(x, w, b, y, stride, padding, dilation)

    y[n, c m + q] = b[c m + q] + the correlation of x[n, c] (zero-padded)
    with w[c m + q, 0], for each channel c and each of its m filters q.
    The caller checks everything.
    """
    cdef Geometry g = make_geometry(x.shape, w.shape, y.shape, stride, padding,
                                    dilation)
    cdef Py_ssize_t C = x.shape[1], m = g.multiplier
    cdef Py_ssize_t p, planes = x.shape[0] * C
    cdef Py_ssize_t plane_in = g.height * g.width, plane_out = g.out_height * g.out_width
    cdef Py_ssize_t taps = g.kh * g.kw
    cdef int n_threads = num_threads_for(planes * m * plane_out * taps)
    cdef const floating* bias = NULL
    cdef Py_ssize_t size = g.pad_rows * g.pad_stride
    cdef floating* scratch
    if planes == 0:
        return
    if b is not None:
        bias = &b[0]
    scratch = <floating*>thread_scratch(n_threads, size * sizeof(floating), "depthwise_forward")
    with nogil:
        if n_threads == 1:
            for p in range(planes):
                forward_plane(
                    &x[0, 0, 0, 0] + p * plane_in, &w[0, 0, 0, 0] + (p % C) * m * taps,
                    bias + (p % C) * m if bias != NULL else NULL,
                    &y[0, 0, 0, 0] + p * m * plane_out, plane_out, &g, scratch)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                forward_plane(
                    &x[0, 0, 0, 0] + p * plane_in, &w[0, 0, 0, 0] + (p % C) * m * taps,
                    bias + (p % C) * m if bias != NULL else NULL,
                    &y[0, 0, 0, 0] + p * m * plane_out, plane_out, &g,
                    scratch + threadid() * size)
    free(scratch)


def depthwise_backward_data(const floating[:, :, :, ::1] gy,  # IN  (N, C m, Ho, Wo)
                            const floating[:, :, :, ::1] w,   # IN  (C m, 1, R, S)
                            floating[:, :, :, ::1] gx,        # OUT (N, C, H, W)
                            tuple stride, tuple padding, tuple dilation, bint scatter):
    """depthwise_backward_data(gy, w, gx, stride, padding, dilation, scatter)

    The gradient with respect to x of sum(gy * depthwise_forward(x, w)).
    ``scatter`` spreads each gradient over its window (the definition's
    terms only) instead of correlating gy, padded, with the flipped filters,
    whose zero padding times an inf or NaN tap would add NaN: the caller
    sets it when w holds inf or NaN, and checks everything.
    """
    cdef Geometry g = make_geometry(gx.shape, w.shape, gy.shape, stride, padding,
                                    dilation)
    cdef Py_ssize_t C = gx.shape[1], m = g.multiplier
    cdef Py_ssize_t p, planes = gx.shape[0] * C
    cdef Py_ssize_t plane_in = g.height * g.width, plane_out = g.out_height * g.out_width
    cdef Py_ssize_t taps = g.kh * g.kw
    cdef int n_threads = num_threads_for(planes * m * plane_in * taps)
    cdef Py_ssize_t size = data_scratch(&g, scatter)
    cdef floating* scratch
    if planes == 0:
        return
    scratch = <floating*>thread_scratch(n_threads, size * sizeof(floating),
                                        "depthwise_backward_data")
    with nogil:
        if n_threads == 1:
            for p in range(planes):
                backward_data_plane(
                    &gy[0, 0, 0, 0] + p * m * plane_out, plane_out,
                    &w[0, 0, 0, 0] + (p % C) * m * taps, &gx[0, 0, 0, 0] + p * plane_in, &g,
                    scatter, scratch)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                backward_data_plane(
                    &gy[0, 0, 0, 0] + p * m * plane_out, plane_out,
                    &w[0, 0, 0, 0] + (p % C) * m * taps, &gx[0, 0, 0, 0] + p * plane_in, &g,
                    scatter, scratch + threadid() * size)
    free(scratch)


def depthwise_backward_filter(const floating[:, :, :, ::1] gy,  # IN  (N, C m, Ho, Wo)
                              const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                              double[:, :, ::1] partial,         # TMP (N, C m, R S + 1)
                              floating[:, :, :, ::1] gw,         # OUT (C m, 1, R, S)
                              floating[::1] gb,                  # OUT (C m,)
                              tuple stride, tuple padding, tuple dilation):
    """depthwise_backward_filter(gy, x, partial, gw, gb, stride, padding, dilation)

    The gradients with respect to w and b of sum(gy * depthwise_forward(x,
    w, b)): per image into ``partial``, then summed over the images in
    order.  The caller checks everything.
    """
    cdef Geometry g = make_geometry(x.shape, gw.shape, gy.shape, stride, padding,
                                    dilation)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], m = g.multiplier, K = gw.shape[0]
    cdef Py_ssize_t p, k, n, t, planes = N * C
    cdef Py_ssize_t plane_in = g.height * g.width, plane_out = g.out_height * g.out_width
    cdef Py_ssize_t taps = g.kh * g.kw
    cdef int n_threads = num_threads_for(planes * m * plane_out * taps)
    cdef double total
    cdef Py_ssize_t size = g.pad_rows * g.pad_stride
    cdef floating* scratch = NULL
    if planes > 0:
        scratch = <floating*>thread_scratch(n_threads, size * sizeof(floating),
                                            "depthwise_backward_filter")
    with nogil:
        if n_threads == 1:
            for p in range(planes):
                backward_filter_plane(
                    &gy[0, 0, 0, 0] + p * m * plane_out, plane_out,
                    &x[0, 0, 0, 0] + p * plane_in, &partial[0, 0, 0] + p * m * (taps + 1), &g,
                    scratch)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                backward_filter_plane(
                    &gy[0, 0, 0, 0] + p * m * plane_out, plane_out,
                    &x[0, 0, 0, 0] + p * plane_in, &partial[0, 0, 0] + p * m * (taps + 1), &g,
                    scratch + threadid() * size)
        free(scratch)
        for k in range(K):
            for t in range(taps + 1):
                total = 0
                for n in range(N):
                    total = total + partial[n, k, t]
                if t < taps:
                    gw[k, 0, t // g.kw, t % g.kw] = <floating>total
                else:
                    gb[k] = <floating>total

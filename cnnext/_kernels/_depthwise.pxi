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
#   plane, on the heap).  A plane is computed by one thread in a fixed
#   order; weight and bias gradients are kept per image and summed over the
#   images in order afterwards, so results do not depend on the thread count.
# * The cdef inline helpers work on one plane with the vectors of simd.h,
#   lanes along the output row.  A plane is first copied into a zero-padded
#   buffer wide enough for whole vectors, so the loops never test bounds;
#   each filter tap is then one offset into that buffer (tap_offsets).  For
#   a column stride sw the buffer's rows are split into sw phases (columns
#   c = k sw + p stored at p phase_len + k), so that the window columns
#   j sw + s dw of consecutive outputs j are consecutive elements.  The
#   buffers are zeroed once per call: every plane writes the same interior.
#
# The forward pass keeps ROWS output rows of one vector of columns in
# registers (independent FMA chains) with the taps as the reduction.  The
# input gradient of a stride-1 layer is the same correlation of the padded
# gy with the flipped filters; other strides, and filters holding inf or NaN
# (whose products with the padding's zeros would add NaN), scatter each
# output's gradient over its window (the forward's transpose, on the same
# padded layout).  The weight gradient of a plane is a
# dot product per tap over the plane, GROUP taps at a time in vector
# accumulators, reduced once per plane.  The im2col/GEMM paths of _conv.pxi
# would spend most of their time copying here: a depthwise layer does R*S
# multiply-adds per output, so it is bound by memory, not arithmetic.
#
# float32 sums that overflow where the exact sum might not are summed again
# in double precision (checked once per plane, from the vectors).
#
# The shared source of _depthwise_baseline, _depthwise_x86_64_v3 and
# _depthwise_x86_64_v4 (setup.py compiles each with its instruction set).

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport isfinite
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from ._openmp_helpers cimport effective_num_threads
from .simd cimport *

include "_compiled_isa.pxi"

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef enum:
    # Columns the padded buffers are rounded up to: the most lanes of any
    # vector (AVX-512 float32).
    BLOCK = 16
    # Output rows per forward tile: independent FMA chains enough to cover
    # the FMA latency.
    ROWS = 4
    # Taps per weight-gradient tile (3 x 3 filters in one).
    GROUP = 9

# Below this many multiply-adds a call runs on the calling thread.
cdef Py_ssize_t MIN_PARALLEL_WORK = 1 << 16


cdef struct Geometry:
    Py_ssize_t height, width          # input plane
    Py_ssize_t out_height, out_width  # output plane
    Py_ssize_t kh, kw                 # filter
    Py_ssize_t sh, sw, ph, pw, dh, dw
    Py_ssize_t multiplier             # filters per input channel
    # The padded, phase-split copy of an input plane: pad_rows rows of
    # row_stride elements, phases runs of phase_len; the columns 0..reach-1
    # of a padded row are the ones some window reads.
    Py_ssize_t pad_rows, reach, phases, phase_len, row_stride
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
    # Every row read by some output row; whole vectors of every phase.
    g.pad_rows = (g.out_height - 1) * g.sh + (g.kh - 1) * g.dh + 1
    g.reach = (g.out_width - 1) * g.sw + (g.kw - 1) * g.dw + 1
    g.phases = min(g.sw, g.reach)
    g.phase_len = round_up(g.out_width, BLOCK) + (g.kw - 1) * g.dw // g.sw + 1
    g.row_stride = g.phases * g.phase_len
    # gy padded for the stride-1 input gradient: gx[a, b] = sum over taps of
    # w[R-1-r, S-1-s] * gyp[a + r dh, b + s dw], gy[0, 0] at (top, left).
    g.gy_top = (g.kh - 1) * g.dh - g.ph
    g.gy_left = (g.kw - 1) * g.dw - g.pw
    g.gy_rows = g.height + (g.kh - 1) * g.dh
    g.gy_stride = round_up(g.width, BLOCK) + (g.kw - 1) * g.dw + 1
    return g


cdef inline void fill_offsets(Py_ssize_t* offsets,  # OUT (round_up(kh kw, GROUP),)
                              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t dh, Py_ssize_t dw,
                              Py_ssize_t sw, Py_ssize_t phase_len, Py_ssize_t row_stride,
                              bint flip) noexcept nogil:
    # offsets[r kw + s] = where tap (r, s) (or (kh-1-r, kw-1-s) when flip) of
    # output 0 sits in a padded buffer; the entries past the taps repeat
    # offsets[0], so that whole GROUP tiles read inside the buffer.
    cdef Py_ssize_t r, s, t, rr, ss, taps = kh * kw
    for r in range(kh):
        for s in range(kw):
            rr = kh - 1 - r if flip else r
            ss = kw - 1 - s if flip else s
            offsets[r * kw + s] = (rr * dh * row_stride + (ss * dw) % sw * phase_len
                                   + (ss * dw) // sw)
    for t in range(taps, round_up(taps, GROUP)):
        offsets[t] = offsets[0]


cdef inline void gather_phase(floating* d,        # OUT (k1,)
                              const floating* s,  # IN  s[k sw], k0 <= k < k1
                              Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t sw) noexcept nogil:
    # d[k] = s[k sw].
    cdef Py_ssize_t k
    for k in range(k0, k1):
        d[k] = s[k * sw]


cdef inline void copy_span(floating* d,        # OUT (count,)
                           const floating* s,  # IN  (count,)
                           Py_ssize_t count) noexcept nogil:
    # A plane row in vectors: a call to memcpy per row cost more than the
    # copy itself on 16-column planes.
    cdef Py_ssize_t n = lanes(s), full = count // n * n, j
    for j in range(full // n):
        vstore(d + j * n, vload(s + j * n))
    if count > full:
        vstore_part(d + full, vload_part(s + full, count - full), count - full)


cdef inline void deinterleave(floating* even,      # OUT
                              floating* odd,       # OUT
                              const floating* s,   # IN  s[first:last]
                              Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    # even[k] = s[2 k] and odd[k] = s[2 k + 1] for the columns in
    # first..last-1: one loop over both phases, which the compiler vectorises
    # as an interleaved load.
    cdef Py_ssize_t k
    if first % 2:
        odd[first // 2] = s[first]
    for k in range((first + 1) // 2, last // 2):
        even[k] = s[2 * k]
        odd[k] = s[2 * k + 1]
    if last % 2:
        even[last // 2] = s[last - 1]


cdef inline void copy_interior(const floating* src,   # IN  (rows, cols)
                               Py_ssize_t rows, Py_ssize_t cols,
                               floating* dst,         # OUT padded buffer, zero outside
                               Py_ssize_t dst_rows, Py_ssize_t reach,
                               Py_ssize_t row_stride, Py_ssize_t sw, Py_ssize_t phase_len,
                               Py_ssize_t top, Py_ssize_t left) noexcept nogil:
    # Column v < reach of padded row u < dst_rows, stored at
    # u row_stride + (v % sw) phase_len + v // sw, is src[u - top, v - left]
    # where that is inside src.  The same elements for every plane, so the
    # others keep the zeros the buffer started with.
    cdef Py_ssize_t u, p, k0, k1, first = max(left, 0), last = min(cols + left, reach)
    cdef floating* d
    cdef const floating* s
    if last <= first:
        return
    if sw == 1:
        for u in range(max(top, 0), min(rows + top, dst_rows)):
            copy_span(dst + u * row_stride + first, src + (u - top) * cols - left + first,
                      last - first)
        return
    if sw == 2 and reach > 1:
        for u in range(max(top, 0), min(rows + top, dst_rows)):
            d = dst + u * row_stride
            deinterleave(d, d + phase_len, src + (u - top) * cols - left, first, last)
        return
    for p in range(min(sw, reach)):
        # The columns k sw + p in first..last-1.
        k0 = (first - p + sw - 1) // sw if first > p else 0
        k1 = (last - p + sw - 1) // sw if last > p else 0
        for u in range(max(top, 0), min(rows + top, dst_rows)):
            gather_phase(dst + u * row_stride + p * phase_len,
                         src + (u - top) * cols - left + p, k0, k1, sw)


cdef inline void init_rows(vec* acc, Py_ssize_t count,
                           const floating* y,  # IN  (count, out_w) when accumulating
                           Py_ssize_t out_w, Py_ssize_t width, bint accumulate,
                           floating bias) noexcept nogil:
    # acc[m] = the first width columns of row m of y, or bias in every lane.
    cdef Py_ssize_t m
    if not accumulate:
        for m in range(count):
            acc[m] = vsplat(bias)
    elif width == lanes(y):
        for m in range(count):
            acc[m] = vload(y + m * out_w)
    else:
        for m in range(count):
            acc[m] = vload_part(y + m * out_w, width)


cdef inline void store_rows(const vec* acc, Py_ssize_t count,
                            floating* y,  # OUT (count, out_w), width columns of each row
                            Py_ssize_t out_w, Py_ssize_t width) noexcept nogil:
    cdef Py_ssize_t m
    if width == lanes(y):
        for m in range(count):
            vstore(y + m * out_w, acc[m])
    else:
        for m in range(count):
            vstore_part(y + m * out_w, acc[m], width)


cdef inline bint correlate_rows(const floating* src,     # IN  padded plane
                                Py_ssize_t row_step,     # its elements per output row
                                const Py_ssize_t* offsets,  # IN  (taps,) tap offsets
                                const floating* w,       # IN  (taps,)
                                Py_ssize_t taps, floating bias,
                                floating* y,             # IN/OUT (out_h, out_w)
                                Py_ssize_t out_h, Py_ssize_t out_w,
                                bint accumulate) noexcept nogil:
    # y[i, j] = (y[i, j] if accumulate else bias) + the sum over taps t, in
    # order, of w[t] * src[i row_step + offsets[t] + j].  Returns whether
    # every lane computed stayed finite.
    cdef vec acc[ROWS]
    cdef vec tap, check = cnx_zero()
    cdef Py_ssize_t n = lanes(src), vectors = (out_w + n - 1) // n
    cdef Py_ssize_t i = 0, jv, t, m, width
    cdef const floating* base
    cdef floating* dst
    while i + ROWS <= out_h:
        for jv in range(vectors):
            base = src + i * row_step + jv * n
            dst = y + i * out_w + jv * n
            width = min(n, out_w - jv * n)
            init_rows(acc, ROWS, dst, out_w, width, accumulate, bias)
            for t in range(taps):
                tap = vsplat(w[t])
                for m in range(ROWS):
                    acc[m] = vfma(src, acc[m], vload(base + m * row_step + offsets[t]), tap)
            for m in range(ROWS):
                check = vadd(src, check, vsub(src, acc[m], acc[m]))
            store_rows(acc, ROWS, dst, out_w, width)
        i += ROWS
    while i < out_h:
        for jv in range(vectors):
            base = src + i * row_step + jv * n
            dst = y + i * out_w + jv * n
            width = min(n, out_w - jv * n)
            init_rows(acc, 1, dst, out_w, width, accumulate, bias)
            for t in range(taps):
                acc[0] = vfma(src, acc[0], vload(base + offsets[t]), vsplat(w[t]))
            check = vadd(src, check, vsub(src, acc[0], acc[0]))
            store_rows(acc, 1, dst, out_w, width)
        i += 1
    return vsum(src, check) == 0


cdef inline void wide_outputs(const floating* src, Py_ssize_t row_step,
                              const Py_ssize_t* offsets, const floating* w, Py_ssize_t taps,
                              floating bias,
                              floating* y,  # IN/OUT (out_h, out_w)
                              Py_ssize_t out_h, Py_ssize_t out_w) noexcept nogil:
    # The outputs of correlate_rows (not accumulating) that are not finite,
    # again in double precision: a float32 sum may overflow where the exact
    # one would not.
    cdef Py_ssize_t i, j, t
    cdef double value
    for i in range(out_h):
        for j in range(out_w):
            if isfinite(y[i * out_w + j]):
                continue
            value = bias
            for t in range(taps):
                value += <double>w[t] * src[i * row_step + offsets[t] + j]
            y[i * out_w + j] = <floating>value


cdef inline void filter_grad_rows(const floating* gy,  # IN  (out_h, out_w)
                                  const floating* xp,  # IN  padded input plane
                                  Py_ssize_t row_step,
                                  const Py_ssize_t* offsets,  # IN  (round_up(taps, GROUP),)
                                  Py_ssize_t taps, Py_ssize_t out_h, Py_ssize_t out_w,
                                  double* out          # OUT (taps + 1,) taps, then bias
                                  ) noexcept nogil:
    # out[t] = sum over i, j of gy[i, j] * xp[i row_step + offsets[t] + j]
    # and out[taps] = sum of gy, each in vector lanes (columns modulo the
    # lanes) reduced once in a fixed order.  The row tails load neither gy
    # nor x past the row's end: those columns may hold input no window
    # reaches.  The whole vectors of all rows are one loop, so that gcc
    # keeps the accumulators in registers for the whole plane.
    cdef vec acc[GROUP]
    cdef vec gv, total
    cdef Py_ssize_t n = lanes(gy), full = out_w // n * n, tail = out_w - full
    cdef Py_ssize_t t0, i, j, v, k, tile
    cdef const floating* grow
    cdef const floating* xrow
    for tile in range((taps + GROUP - 1) // GROUP):
        t0 = tile * GROUP
        for k in range(GROUP):
            acc[k] = cnx_zero()
        total = cnx_zero()
        grow = gy
        xrow = xp
        j = 0
        for v in range(out_h * (full // n)):
            gv = vload(grow + j)
            for k in range(GROUP):
                acc[k] = vfma(gy, acc[k], gv, vload(xrow + offsets[t0 + k] + j))
            total = vadd(gy, total, gv)
            j += n
            if j == full:
                j = 0
                grow += out_w
                xrow += row_step
        if tail:
            for i in range(out_h):
                grow = gy + i * out_w + full
                xrow = xp + i * row_step + full
                gv = vload_part(grow, tail)
                for k in range(GROUP):
                    acc[k] = vfma(gy, acc[k], gv, vload_part(xrow + offsets[t0 + k], tail))
                total = vadd(gy, total, gv)
        for k in range(min(<Py_ssize_t>GROUP, taps - t0)):
            out[t0 + k] = vsum(gy, acc[k])
        if tile == 0:
            out[taps] = vsum(gy, total)
    if floating is float:
        for k in range(taps + 1):
            if not isfinite(out[k]):  # float32 lanes overflowed: again in double
                out[k] = wide_dot(gy, xp, row_step, offsets[k] if k < taps else -1,
                                  out_h, out_w)


cdef inline double wide_dot(const floating* gy, const floating* xp, Py_ssize_t row_step,
                            Py_ssize_t offset, Py_ssize_t out_h,
                            Py_ssize_t out_w) noexcept nogil:
    # One tap's (or, offset -1, the bias's) sum of filter_grad_rows in double
    # precision.
    cdef Py_ssize_t i, j
    cdef double total = 0
    for i in range(out_h):
        for j in range(out_w):
            if offset < 0:
                total += gy[i * out_w + j]
            else:
                total += <double>gy[i * out_w + j] * xp[i * row_step + offset + j]
    return total


cdef inline void scatter_rows(const floating* gy,  # IN  (out_h, out_w)
                              const floating* w,   # IN  (taps,)
                              const Py_ssize_t* offsets,  # IN  (taps,) tap offsets
                              Py_ssize_t taps,
                              floating* gxp,       # IN/OUT padded plane
                              Py_ssize_t row_step, Py_ssize_t out_h,
                              Py_ssize_t out_w) noexcept nogil:
    # gxp[i row_step + offsets[t] + j] += w[t] * gy[i, j], the transpose of
    # correlate_rows: the input gradient of strided layers.  Tap after tap,
    # so that no store is loaded again at once (overlapping, misaligned).
    # Row tails touch the lanes j < out_w only: the definition's terms, with
    # no 0 * inf from past the row's end.
    cdef vec tap
    cdef Py_ssize_t n = lanes(gy), full = out_w // n * n, tail = out_w - full
    cdef Py_ssize_t t, i, j, jv
    cdef const floating* grow
    cdef floating* dst
    for t in range(taps):
        tap = vsplat(w[t])
        for i in range(out_h):
            grow = gy + i * out_w
            dst = gxp + i * row_step + offsets[t]
            for jv in range(full // n):
                j = jv * n
                vstore(dst + j, vfma(gy, vload(dst + j), vload(grow + j), tap))
            if tail:
                vstore_part(dst + full, vfma(gy, vload_part(dst + full, tail),
                                             vload_part(grow + full, tail), tap), tail)


cdef inline void interleave(const floating* a,  # IN  ((count + 1) // 2,)
                            const floating* b,  # IN  (count // 2,)
                            floating* x,        # OUT (count,)
                            Py_ssize_t count) noexcept nogil:
    # x[2 k] = a[k], x[2 k + 1] = b[k]: the inverse of deinterleave.
    cdef Py_ssize_t k
    for k in range(count // 2):
        x[2 * k] = a[k]
        x[2 * k + 1] = b[k]
    if count % 2:
        x[count - 1] = a[count // 2]


cdef inline void unpad_plane(const floating* xp,  # IN  (pad_rows, row_stride) padded plane
                             const Geometry* g,
                             floating* x          # OUT (H, W)
                             ) noexcept nogil:
    # The inverse of pad_input: x[u, v] is padded column v + pw of row u + ph;
    # rows and columns no window reaches are 0 (they get no gradient).
    cdef Py_ssize_t u, v, p, k, width = max(0, min(g.width, g.reach - g.pw))
    cdef const floating* row
    cdef floating* out
    for u in range(g.height):
        out = x + u * g.width
        if u + g.ph >= g.pad_rows:
            memset(out, 0, g.width * sizeof(floating))
            continue
        row = xp + (u + g.ph) * g.row_stride
        p = g.pw % g.sw
        k = g.pw // g.sw
        if g.sw == 1:
            copy_span(out, row + k, width)
        elif g.sw == 2 and g.phases == 2:
            if p == 0:
                interleave(row + k, row + g.phase_len + k, out, width)
            else:
                interleave(row + g.phase_len + k, row + k + 1, out, width)
        else:
            for v in range(width):
                out[v] = row[p * g.phase_len + k]
                p += 1
                if p == g.sw:
                    p = 0
                    k += 1
        memset(out + width, 0, (g.width - width) * sizeof(floating))


cdef inline bint span_finite(const floating* values, Py_ssize_t count) noexcept nogil:
    # Whether values[:count] are all finite: v - v is NaN for inf and NaN, else 0.
    cdef vec check = cnx_zero()
    cdef Py_ssize_t n = lanes(values), full = count // n * n, i
    for i in range(full // n):
        check = vadd(values, check, vsub(values, vload(values + i * n),
                                         vload(values + i * n)))
    if count > full:
        check = vadd(values, check, vsub(values, vload_part(values + full, count - full),
                                         vload_part(values + full, count - full)))
    return vsum(values, check) == 0


cdef void* thread_scratch(int n_threads, Py_ssize_t nbytes, str owner) except NULL:
    # One zeroed padded-plane buffer of nbytes per thread, on the heap: OpenMP
    # threads may have small stacks (OMP_STACKSIZE).
    cdef void* scratch = NULL
    if nbytes <= PY_SSIZE_T_MAX // n_threads:
        scratch = calloc(max(n_threads * nbytes, 1), 1)
    if scratch == NULL:
        raise MemoryError(f"{owner}: no memory for {n_threads} padded plane(s) of {nbytes} "
                          f"bytes")
    return scratch


cdef Py_ssize_t* new_offsets(const Geometry* g, bint flip) except NULL:
    """The tap offsets of a call (fill_offsets), on the heap: the x buffer's
    layout, or with flip the gy buffer's of the stride-1 input gradient."""
    cdef Py_ssize_t taps = round_up(g.kh * g.kw, GROUP)
    cdef Py_ssize_t* offsets = <Py_ssize_t*>malloc(taps * sizeof(Py_ssize_t))
    if offsets == NULL:
        raise MemoryError(f"depthwise: no memory for {taps} tap offsets")
    if flip:
        fill_offsets(offsets, g.kh, g.kw, g.dh, g.dw, 1, 0, g.gy_stride, True)
    else:
        fill_offsets(offsets, g.kh, g.kw, g.dh, g.dw, g.sw, g.phase_len, g.row_stride, False)
    return offsets


cdef inline int num_threads_for(Py_ssize_t work) noexcept nogil:
    if work < MIN_PARALLEL_WORK:
        return 1
    return effective_num_threads()


cdef inline void pad_input(const floating* x,  # IN  (H, W)
                           const Geometry* g,
                           floating* xp        # OUT (pad_rows, row_stride), zero outside
                           ) noexcept nogil:
    copy_interior(x, g.height, g.width, xp, g.pad_rows, g.reach, g.row_stride, g.sw,
                  g.phase_len, g.ph, g.pw)


cdef inline void forward_plane(const floating* x,   # IN  (H, W) one input plane
                               const floating* w,   # IN  (m, R, S) its filters
                               const floating* b,   # IN  (m,) their biases, or NULL
                               floating* y,         # OUT (m, Ho, Wo) their output planes
                               Py_ssize_t y_step,   # elements between those planes
                               const Geometry* g,
                               const Py_ssize_t* offsets,  # IN  new_offsets(g, False)
                               floating* xp         # TMP (pad_rows, row_stride), zeroed
                               ) noexcept nogil:
    cdef Py_ssize_t q, taps = g.kh * g.kw, row_step = g.sh * g.row_stride
    cdef floating bias
    pad_input(x, g, xp)
    for q in range(g.multiplier):
        bias = b[q] if b != NULL else 0
        if not correlate_rows(xp, row_step, offsets, w + q * taps, taps, bias, y + q * y_step,
                              g.out_height, g.out_width, False):
            if floating is float:
                wide_outputs(xp, row_step, offsets, w + q * taps, taps, bias, y + q * y_step,
                             g.out_height, g.out_width)


cdef inline void backward_data_plane(const floating* gy,  # IN  (m, Ho, Wo) planes y_step apart
                                     Py_ssize_t y_step,
                                     const floating* w,   # IN  (m, R, S)
                                     floating* gx,        # OUT (H, W)
                                     const Geometry* g, bint unit,
                                     const Py_ssize_t* offsets,  # IN  new_offsets(g, unit)
                                     floating* buf      # TMP (data_scratch(g, unit),), zeroed
                                     ) noexcept nogil:
    cdef Py_ssize_t plane_in = g.height * g.width, taps = g.kh * g.kw
    cdef Py_ssize_t q
    cdef bint finite = True
    if unit:
        # The sum over the filters of the correlation of gy, padded, with the
        # flipped filter.
        for q in range(g.multiplier):
            copy_interior(gy + q * y_step, g.out_height, g.out_width, buf, g.gy_rows,
                          g.width + (g.kw - 1) * g.dw, g.gy_stride, 1, 0, g.gy_top, g.gy_left)
            finite &= correlate_rows(buf, g.gy_stride, offsets, w + q * taps, taps, 0, gx,
                                     g.height, g.width, q > 0)
    else:
        memset(buf, 0, g.pad_rows * g.row_stride * sizeof(floating))
        for q in range(g.multiplier):
            scatter_rows(gy + q * y_step, w + q * taps, offsets, taps, buf,
                         g.sh * g.row_stride, g.out_height, g.out_width)
        unpad_plane(buf, g, gx)
        finite = span_finite(gx, plane_in)
    if floating is float:
        if not finite:
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
                                       const Py_ssize_t* offsets,  # IN  new_offsets(g, False)
                                       floating* xp         # TMP (pad_rows, row_stride), zeroed
                                       ) noexcept nogil:
    cdef Py_ssize_t q, taps = g.kh * g.kw
    pad_input(x, g, xp)
    for q in range(g.multiplier):
        filter_grad_rows(gy + q * y_step, xp, g.sh * g.row_stride, offsets, taps,
                         g.out_height, g.out_width, partial + q * (taps + 1))


cdef inline Py_ssize_t data_scratch(const Geometry* g, bint unit) noexcept nogil:
    """Elements of backward_data_plane's scratch."""
    if unit:
        return g.gy_rows * g.gy_stride
    return g.pad_rows * g.row_stride


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
    cdef Py_ssize_t size = g.pad_rows * g.row_stride
    cdef floating* scratch
    cdef Py_ssize_t* offsets
    if planes == 0:
        return
    if b is not None:
        bias = &b[0]
    offsets = new_offsets(&g, False)
    try:
        scratch = <floating*>thread_scratch(n_threads, size * sizeof(floating),
                                            "depthwise_forward")
    except MemoryError:
        free(offsets)
        raise
    with nogil:
        if n_threads == 1:
            for p in range(planes):
                forward_plane(
                    &x[0, 0, 0, 0] + p * plane_in, &w[0, 0, 0, 0] + (p % C) * m * taps,
                    bias + (p % C) * m if bias != NULL else NULL,
                    &y[0, 0, 0, 0] + p * m * plane_out, plane_out, &g, offsets, scratch)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                forward_plane(
                    &x[0, 0, 0, 0] + p * plane_in, &w[0, 0, 0, 0] + (p % C) * m * taps,
                    bias + (p % C) * m if bias != NULL else NULL,
                    &y[0, 0, 0, 0] + p * m * plane_out, plane_out, &g, offsets,
                    scratch + threadid() * size)
    free(scratch)
    free(offsets)


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
    cdef bint unit = g.sh == 1 and g.sw == 1 and not scatter
    cdef Py_ssize_t size = data_scratch(&g, unit)
    cdef floating* scratch
    cdef Py_ssize_t* offsets
    if planes == 0:
        return
    offsets = new_offsets(&g, unit)
    try:
        scratch = <floating*>thread_scratch(n_threads, size * sizeof(floating),
                                            "depthwise_backward_data")
    except MemoryError:
        free(offsets)
        raise
    with nogil:
        if n_threads == 1:
            for p in range(planes):
                backward_data_plane(
                    &gy[0, 0, 0, 0] + p * m * plane_out, plane_out,
                    &w[0, 0, 0, 0] + (p % C) * m * taps, &gx[0, 0, 0, 0] + p * plane_in, &g,
                    unit, offsets, scratch)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                backward_data_plane(
                    &gy[0, 0, 0, 0] + p * m * plane_out, plane_out,
                    &w[0, 0, 0, 0] + (p % C) * m * taps, &gx[0, 0, 0, 0] + p * plane_in, &g,
                    unit, offsets, scratch + threadid() * size)
    free(scratch)
    free(offsets)


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
    cdef Py_ssize_t size = g.pad_rows * g.row_stride
    cdef floating* scratch = NULL
    cdef Py_ssize_t* offsets = NULL
    if planes > 0:
        offsets = new_offsets(&g, False)
        try:
            scratch = <floating*>thread_scratch(n_threads, size * sizeof(floating),
                                                "depthwise_backward_filter")
        except MemoryError:
            free(offsets)
            raise
    with nogil:
        if n_threads == 1:
            for p in range(planes):
                backward_filter_plane(
                    &gy[0, 0, 0, 0] + p * m * plane_out, plane_out,
                    &x[0, 0, 0, 0] + p * plane_in, &partial[0, 0, 0] + p * m * (taps + 1), &g,
                    offsets, scratch)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                backward_filter_plane(
                    &gy[0, 0, 0, 0] + p * m * plane_out, plane_out,
                    &x[0, 0, 0, 0] + p * plane_in, &partial[0, 0, 0] + p * m * (taps + 1), &g,
                    offsets, scratch + threadid() * size)
        free(scratch)
        free(offsets)
        for k in range(K):
            for t in range(taps + 1):
                total = 0
                for n in range(N):
                    total = total + partial[n, k, t]
                if t < taps:
                    gw[k, 0, t // g.kw, t % g.kw] = <floating>total
                else:
                    gb[k] = <floating>total

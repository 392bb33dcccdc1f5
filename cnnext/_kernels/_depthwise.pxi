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
include "_phases.pxi"

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

# How an input gradient is computed (backward_data_plane).
cdef enum:
    DATA_UNIT = 0      # stride 1: gy, padded, correlated with the flipped filters
    DATA_GATHER = 1    # other strides: the same per phase of the rows and columns
    DATA_SCATTER = 2   # filters holding inf or NaN: each gradient spread over its window

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
    # DATA_GATHER: gy padded (gat_rows rows of gat_stride, gy[0, 0] at
    # (gat_top, gat_left)), and the gradient of each phase (U % sh, V % sw)
    # of the padded input's (U, V) inside x, at (U // sh - first_row(U % sh),
    # V // sw - first_col(V % sw)) of a phase plane of cls_rows rows of cls_cols.
    Py_ssize_t gat_rows, gat_stride, gat_top, gat_left, cls_rows, cls_cols


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
    g.cls_rows = (g.height + g.sh - 1) // g.sh
    g.cls_cols = (g.width + g.sw - 1) // g.sw
    g.gat_top = (g.kh - 1) * g.dh // g.sh
    g.gat_left = (g.kw - 1) * g.dw // g.sw
    g.gat_rows = max(first_phase(g.ph, 0, g.sh) + g.cls_rows, g.out_height) + g.gat_top
    g.gat_stride = max(first_phase(g.pw, 0, g.sw) + g.cls_cols, g.out_width) + g.gat_left
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


# The two phases of stride-2 rows, split (deinterleave) and merged back
# (interleave_phases): as scalar loops, too short to vectorise at 16 columns,
# they cost more than the convolution itself.  AVX-512 splits and merges
# 32 columns with two permutes; the masks keep every access inside the
# columns given.
cdef extern from *:
    """
    #include <stddef.h>
    #if defined(__AVX512F__)
    #include <immintrin.h>
    /* Lanes lo..hi-1 of n (clipped to 0..n). */
    static inline unsigned cnx_dw_span(ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t n) {
        if (lo < 0) lo = 0;
        if (hi > n) hi = n;
        return hi <= lo ? 0u : ((1u << (hi - lo)) - 1u) << lo;
    }
    #define CNX_DW_PHASES(T, W, V, M, LOAD, STORE, PERM, SETR)                              \
    static inline void cnx_dw_deinterleave_##T(W *dst, ptrdiff_t dst_stride,              \
                                               ptrdiff_t phase_len, const W *src,         \
                                               ptrdiff_t src_stride, ptrdiff_t rows,      \
                                               ptrdiff_t first, ptrdiff_t last) {         \
        const __m512i ie = SETR(0), io = SETR(1);                                         \
        ptrdiff_t c0, k0, r, n = 64 / sizeof(W);                                          \
        for (c0 = first & ~(ptrdiff_t)1; c0 < last; c0 += 2 * n) {                       \
            M ml = (M)cnx_dw_span(first - c0, last - c0, n);                              \
            M mh = (M)cnx_dw_span(first - c0 - n, last - c0 - n, n);                      \
            M me, mo;                                                                     \
            k0 = c0 / 2;                                                                  \
            me = (M)cnx_dw_span((first + 1) / 2 - k0, (last + 1) / 2 - k0, n);            \
            mo = (M)cnx_dw_span(first / 2 - k0, last / 2 - k0, n);                        \
            for (r = 0; r < rows; r++) {                                                  \
                const W *s = src + r * src_stride + c0;                                   \
                W *d = dst + r * dst_stride + k0;                                         \
                V lo = LOAD(ml, s), hi = LOAD(mh, s + n);                                 \
                STORE(d, me, PERM(lo, ie, hi));                                           \
                STORE(d + phase_len, mo, PERM(lo, io, hi));                               \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    static inline void cnx_dw_interleave_##T(const W *a, const W *b, W *x,               \
                                             ptrdiff_t count) {                           \
        const __m512i il = SETR(2), ih = SETR(3);                                         \
        ptrdiff_t k0, n = 64 / sizeof(W);                                                 \
        for (k0 = 0; 2 * k0 < count; k0 += n) {                                           \
            V va = LOAD((M)cnx_dw_span(0, (count + 1) / 2 - k0, n), a + k0);              \
            V vb = LOAD((M)cnx_dw_span(0, count / 2 - k0, n), b + k0);                    \
            STORE(x + 2 * k0, (M)cnx_dw_span(0, count - 2 * k0, n), PERM(va, il, vb));    \
            STORE(x + 2 * k0 + n, (M)cnx_dw_span(0, count - 2 * k0 - n, n),               \
                  PERM(va, ih, vb));                                                      \
        }                                                                                 \
    }
    /* Permute indices: 0 evens, 1 odds (of a : b), 2 and 3 the low and high
       halves of a and b interleaved. */
    #define CNX_DW_IDX32(k) ((k) == 0 ? _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18,   \
                                                        20, 22, 24, 26, 28, 30)              \
        : (k) == 1 ? _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31) \
        : (k) == 2 ? _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23) \
        : _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31))
    #define CNX_DW_IDX64(k) ((k) == 0 ? _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14)     \
        : (k) == 1 ? _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15)                       \
        : (k) == 2 ? _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11)                        \
        : _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15))
    CNX_DW_PHASES(f32, float, __m512, __mmask16, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                  _mm512_permutex2var_ps, CNX_DW_IDX32)
    CNX_DW_PHASES(f64, double, __m512d, __mmask8, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                  _mm512_permutex2var_pd, CNX_DW_IDX64)
    #define CNX_DW_VECTOR_PHASES 1
    #else
    #define CNX_DW_VECTOR_PHASES 0
    #define CNX_DW_NONE(T, W)                                                             \
    static inline void cnx_dw_deinterleave_##T(W *d, ptrdiff_t ds, ptrdiff_t p,           \
                                               const W *s, ptrdiff_t ss, ptrdiff_t r,     \
                                               ptrdiff_t f, ptrdiff_t l)                  \
    { (void)d; (void)ds; (void)p; (void)s; (void)ss; (void)r; (void)f; (void)l; }         \
    static inline void cnx_dw_interleave_##T(const W *a, const W *b, W *x, ptrdiff_t n)  \
    { (void)a; (void)b; (void)x; (void)n; }
    CNX_DW_NONE(f32, float)
    CNX_DW_NONE(f64, double)
    #endif
    """
    bint VECTOR_PHASES "CNX_DW_VECTOR_PHASES"
    void cnx_dw_deinterleave_f32(float*, Py_ssize_t, Py_ssize_t, const float*, Py_ssize_t,
                                 Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    void cnx_dw_deinterleave_f64(double*, Py_ssize_t, Py_ssize_t, const double*, Py_ssize_t,
                                 Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    void cnx_dw_interleave_f32(const float*, const float*, float*, Py_ssize_t) noexcept nogil
    void cnx_dw_interleave_f64(const double*, const double*, double*, Py_ssize_t) noexcept nogil


cdef inline void deinterleave(floating* dst,         # OUT (rows, dst_stride)
                              Py_ssize_t dst_stride, Py_ssize_t phase_len,
                              const floating* src,   # IN  (rows, src_stride)
                              Py_ssize_t src_stride, Py_ssize_t rows,
                              Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    # Row r's columns first..last-1 split in two phases: even[k] = s[2 k]
    # and odd[k] = s[2 k + 1], with s, even and odd row r of src, dst and
    # dst + phase_len.
    cdef Py_ssize_t k, r
    cdef floating* even
    cdef floating* odd
    cdef const floating* s
    if VECTOR_PHASES:
        if floating is float:
            cnx_dw_deinterleave_f32(dst, dst_stride, phase_len, src, src_stride, rows, first,
                                    last)
        else:
            cnx_dw_deinterleave_f64(dst, dst_stride, phase_len, src, src_stride, rows, first,
                                    last)
        return
    for r in range(rows):
        even = dst + r * dst_stride
        odd = even + phase_len
        s = src + r * src_stride
        if first % 2:
            odd[first // 2] = s[first]
        for k in range((first + 1) // 2, last // 2):
            even[k] = s[2 * k]
            odd[k] = s[2 * k + 1]
        if last % 2:
            even[last // 2] = s[last - 1]


cdef inline void interleave_phases(const floating* a,  # IN  ((count + 1) // 2,)
                                   const floating* b,  # IN  (count // 2,)
                                   floating* x,        # OUT (count,)
                                   Py_ssize_t count) noexcept nogil:
    # _phases.pxi's interleave, in vectors where the instruction set has permutes.
    if VECTOR_PHASES:
        if floating is float:
            cnx_dw_interleave_f32(a, b, x, count)
        else:
            cnx_dw_interleave_f64(a, b, x, count)
    else:
        interleave(a, b, x, count)


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
    if last <= first:
        return
    if sw == 1:
        for u in range(max(top, 0), min(rows + top, dst_rows)):
            copy_span(dst + u * row_stride + first, src + (u - top) * cols - left + first,
                      last - first)
        return
    if sw == 2 and reach > 1:
        u = max(top, 0)
        deinterleave(dst + u * row_stride, row_stride, phase_len, src + (u - top) * cols - left,
                     cols, min(rows + top, dst_rows) - u, first, last)
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
                interleave_phases(row + k, row + g.phase_len + k, out, width)
            else:
                interleave_phases(row + g.phase_len + k, row + k + 1, out, width)
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


cdef Py_ssize_t* new_offsets(const Geometry* g, int mode) except NULL:
    """The tap offsets of a call, on the heap: the x buffer's layout
    (fill_offsets; the forward, the weight gradient and DATA_SCATTER), the gy
    buffer's of DATA_UNIT (flipped), or for DATA_GATHER per phase c of the
    padded input (c = (U % sh) sw + V % sw) the entry at c (1 + 2 R S): its
    number of taps, their offsets in the padded gy, their tap indices."""
    cdef Py_ssize_t taps = g.kh * g.kw, count = round_up(taps, GROUP), r, s, c, e
    cdef Py_ssize_t* offsets
    if mode == DATA_GATHER:
        count = max(count, g.sh * g.sw * (1 + 2 * taps))
    offsets = <Py_ssize_t*>calloc(count, sizeof(Py_ssize_t))
    if offsets == NULL:
        raise MemoryError(f"depthwise: no memory for {count} tap offsets")
    if mode == DATA_UNIT:
        fill_offsets(offsets, g.kh, g.kw, g.dh, g.dw, 1, 0, g.gy_stride, True)
    elif mode == DATA_GATHER:
        for r in range(g.kh):
            for s in range(g.kw):
                e = ((r * g.dh) % g.sh * g.sw + (s * g.dw) % g.sw) * (1 + 2 * taps)
                c = offsets[e]
                offsets[e + 1 + c] = (
                    (g.gat_top - r * g.dh // g.sh + first_phase(g.ph, r * g.dh % g.sh, g.sh))
                    * g.gat_stride + g.gat_left - s * g.dw // g.sw
                    + first_phase(g.pw, s * g.dw % g.sw, g.sw))
                offsets[e + 1 + taps + c] = r * g.kw + s
                offsets[e] = c + 1
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
                               const Py_ssize_t* offsets,  # IN  new_offsets(g, DATA_SCATTER)
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
                                     const Geometry* g, int mode,
                                     const Py_ssize_t* offsets,  # IN  new_offsets(g, mode)
                                     floating* buf      # TMP (data_scratch(g, mode),), zeroed
                                     ) noexcept nogil:
    cdef Py_ssize_t plane_in = g.height * g.width, taps = g.kh * g.kw
    cdef Py_ssize_t q
    cdef bint finite = True
    if mode == DATA_GATHER:
        finite = gather_plane(gy, y_step, w, gx, g, offsets, buf)
    elif mode == DATA_UNIT:
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


cdef inline bint gather_plane(const floating* gy,  # IN  (m, Ho, Wo) planes y_step apart
                              Py_ssize_t y_step,
                              const floating* w,   # IN  (m, R, S)
                              floating* gx,        # OUT (H, W)
                              const Geometry* g,
                              const Py_ssize_t* table,  # IN  new_offsets(g, DATA_GATHER)
                              floating* buf        # TMP (data_scratch(g, DATA_GATHER),), zeroed
                              ) noexcept nogil:
    # The input gradient of a strided layer as correlations, each output
    # summed in registers and stored once: the padded input's (U, V) gets
    # w[r, s] gy[(U - r dh) / sh, (V - s dw) / sw] from the taps whose
    # (r dh, s dw) has the phase (U % sh, V % sw), which are one correlation
    # of gy, padded, per phase.  Returns whether every sum stayed finite.
    cdef Py_ssize_t taps = g.kh * g.kw, phases = g.sh * g.sw, entry = 1 + 2 * taps
    cdef Py_ssize_t size = g.cls_rows * g.cls_cols
    cdef floating* gyp = buf
    cdef floating* cls = buf + g.gat_rows * g.gat_stride
    cdef floating* wc = cls + phases * size
    cdef Py_ssize_t q, c, i
    cdef const Py_ssize_t* e
    cdef bint finite = True
    for q in range(g.multiplier):
        copy_interior(gy + q * y_step, g.out_height, g.out_width, gyp, g.gat_rows,
                      g.gat_stride, g.gat_stride, 1, 0, g.gat_top, g.gat_left)
        for c in range(phases):
            e = table + c * entry
            for i in range(e[0]):
                wc[i] = w[q * taps + e[1 + taps + i]]
            finite &= correlate_rows(gyp, g.gat_stride, e + 1, wc, e[0], 0, cls + c * size,
                                     g.cls_rows, g.cls_cols, q > 0)
    unphase_plane(cls, g, gx)
    return finite


cdef inline void unphase_plane(const floating* cls,  # IN  (sh sw, cls_rows, cls_cols)
                               const Geometry* g,
                               floating* gx          # OUT (H, W)
                               ) noexcept nogil:
    # gx[u, v] is the phase (U % sh, V % sw) of (U, V) = (u + ph, v + pw), at
    # (U // sh - first_phase(ph, U % sh, sh), V // sw - first_phase(pw, V % sw, sw)):
    # with two column phases, gx's columns alternate between their rows.  The
    # row's phase and index advance with u (divisions per row cost as much as
    # a 16-column row's copy).
    cdef Py_ssize_t u, v, p, big_v, size = g.cls_rows * g.cls_cols
    cdef Py_ssize_t row_phase = g.ph % g.sh, row_index = g.ph // g.sh
    cdef Py_ssize_t first = g.pw % 2
    cdef const floating* row
    cdef floating* out
    for u in range(g.height):
        row = cls + (row_phase * g.sw * g.cls_rows + row_index
                     - first_phase(g.ph, row_phase, g.sh)) * g.cls_cols
        out = gx + u * g.width
        if g.sw == 1:
            copy_span(out, row, g.width)
        elif g.sw == 2:
            interleave_phases(row + first * size, row + (1 - first) * size, out, g.width)
        else:
            for v in range(g.width):
                big_v = v + g.pw
                p = big_v % g.sw
                out[v] = row[p * size + big_v // g.sw - first_phase(g.pw, p, g.sw)]
        row_phase += 1
        if row_phase == g.sh:
            row_phase = 0
            row_index += 1


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
                                       const Py_ssize_t* offsets,  # IN  x layout (new_offsets)
                                       floating* xp         # TMP (pad_rows, row_stride), zeroed
                                       ) noexcept nogil:
    cdef Py_ssize_t q, taps = g.kh * g.kw
    pad_input(x, g, xp)
    for q in range(g.multiplier):
        filter_grad_rows(gy + q * y_step, xp, g.sh * g.row_stride, offsets, taps,
                         g.out_height, g.out_width, partial + q * (taps + 1))


cdef inline Py_ssize_t data_scratch(const Geometry* g, int mode) noexcept nogil:
    """Elements of backward_data_plane's scratch."""
    if mode == DATA_UNIT:
        return g.gy_rows * g.gy_stride
    if mode == DATA_GATHER:
        return (g.gat_rows * g.gat_stride + g.sh * g.sw * g.cls_rows * g.cls_cols
                + g.kh * g.kw)
    return g.pad_rows * g.row_stride


cdef inline int data_mode(const Geometry* g, bint scatter) noexcept nogil:
    if scatter:
        return DATA_SCATTER
    return DATA_UNIT if g.sh == 1 and g.sw == 1 else DATA_GATHER


cdef inline floating* plane_buffers(int* n_threads, Py_ssize_t size,
                                    floating* own  # TMP (size,) zeroed, or NULL
                                    ) noexcept nogil:
    """Zeroed padded-plane buffers of ``size`` elements, one per thread, on the
    heap (OpenMP threads may have small stacks); with ``own`` (a step's
    buffer, kept zero outside the interiors) one thread uses it, and a
    failed allocation falls back to it on one thread.  NULL: no memory."""
    cdef floating* scratch
    if own != NULL and n_threads[0] == 1:
        return own
    scratch = NULL
    if size <= PY_SSIZE_T_MAX // sizeof(floating) // n_threads[0]:
        scratch = <floating*>calloc(max(n_threads[0] * size, 1), sizeof(floating))
    if scratch == NULL and own != NULL:
        n_threads[0] = 1
        return own
    return scratch


cdef inline void release_buffers(floating* scratch, const floating* own) noexcept nogil:
    if scratch != own:
        free(scratch)


cdef int forward_planes(const floating* x,   # IN  (N, C, H, W)
                        const floating* w,   # IN  (C m, 1, R, S)
                        const floating* b,   # IN  (C m,) or NULL
                        floating* y,         # OUT (N, C m, Ho, Wo)
                        Py_ssize_t planes, Py_ssize_t C, const Geometry* g,
                        const Py_ssize_t* offsets,  # IN  new_offsets(g, DATA_SCATTER)
                        floating* own        # TMP (forward_scratch(g),) zeroed, or NULL
                        ) noexcept nogil:
    """Every plane of depthwise_forward; -1 when out of memory (nothing written)."""
    cdef Py_ssize_t p, m = g.multiplier, taps = g.kh * g.kw
    cdef Py_ssize_t plane_in = g.height * g.width, plane_out = g.out_height * g.out_width
    cdef Py_ssize_t size = forward_scratch(g)
    cdef int n_threads = num_threads_for(planes * m * plane_out * taps)
    cdef floating* scratch = plane_buffers(&n_threads, size, own)
    if scratch == NULL:
        return -1
    if n_threads == 1:
        for p in range(planes):
            forward_plane(x + p * plane_in, w + (p % C) * m * taps,
                          b + (p % C) * m if b != NULL else NULL, y + p * m * plane_out,
                          plane_out, g, offsets, scratch)
    else:
        for p in prange(planes, num_threads=n_threads, schedule="static"):
            forward_plane(x + p * plane_in, w + (p % C) * m * taps,
                          b + (p % C) * m if b != NULL else NULL, y + p * m * plane_out,
                          plane_out, g, offsets, scratch + threadid() * size)
    release_buffers(scratch, own)
    return 0


cdef int backward_data_planes(const floating* gy,  # IN  (N, C m, Ho, Wo)
                              const floating* w,   # IN  (C m, 1, R, S)
                              floating* gx,        # OUT (N, C, H, W)
                              Py_ssize_t planes, Py_ssize_t C, const Geometry* g, int mode,
                              const Py_ssize_t* offsets,  # IN  new_offsets(g, mode)
                              floating* own        # TMP (data_scratch(g, mode),) zeroed, or NULL
                              ) noexcept nogil:
    """Every plane of depthwise_backward_data; -1 when out of memory."""
    cdef Py_ssize_t p, m = g.multiplier, taps = g.kh * g.kw
    cdef Py_ssize_t plane_in = g.height * g.width, plane_out = g.out_height * g.out_width
    cdef Py_ssize_t size = data_scratch(g, mode)
    cdef int n_threads = num_threads_for(planes * m * plane_in * taps)
    cdef floating* scratch = plane_buffers(&n_threads, size, own)
    if scratch == NULL:
        return -1
    if n_threads == 1:
        for p in range(planes):
            backward_data_plane(gy + p * m * plane_out, plane_out, w + (p % C) * m * taps,
                                gx + p * plane_in, g, mode, offsets, scratch)
    else:
        for p in prange(planes, num_threads=n_threads, schedule="static"):
            backward_data_plane(gy + p * m * plane_out, plane_out, w + (p % C) * m * taps,
                                gx + p * plane_in, g, mode, offsets,
                                scratch + threadid() * size)
    release_buffers(scratch, own)
    return 0


cdef int backward_filter_planes(const floating* gy,  # IN  (N, C m, Ho, Wo)
                                const floating* x,   # IN  (N, C, H, W)
                                double* partial,     # TMP (N, C m, R S + 1)
                                floating* gw,        # OUT (C m, 1, R, S)
                                floating* gb,        # OUT (C m,)
                                Py_ssize_t N, Py_ssize_t C, const Geometry* g,
                                const Py_ssize_t* offsets,  # IN  new_offsets(g, DATA_SCATTER)
                                floating* own        # TMP (forward_scratch(g),) zeroed, or NULL
                                ) noexcept nogil:
    """depthwise_backward_filter's passes: per image into ``partial``, then
    summed over the images in order; -1 when out of memory."""
    cdef Py_ssize_t p, k, n, t, m = g.multiplier, K = C * m, taps = g.kh * g.kw
    cdef Py_ssize_t planes = N * C
    cdef Py_ssize_t plane_in = g.height * g.width, plane_out = g.out_height * g.out_width
    cdef Py_ssize_t size = forward_scratch(g)
    cdef int n_threads = num_threads_for(planes * m * plane_out * taps)
    cdef double total
    cdef floating* scratch = NULL
    if planes > 0:
        scratch = plane_buffers(&n_threads, size, own)
        if scratch == NULL:
            return -1
        if n_threads == 1:
            for p in range(planes):
                backward_filter_plane(gy + p * m * plane_out, plane_out, x + p * plane_in,
                                      partial + p * m * (taps + 1), g, offsets, scratch)
        else:
            for p in prange(planes, num_threads=n_threads, schedule="static"):
                backward_filter_plane(gy + p * m * plane_out, plane_out, x + p * plane_in,
                                      partial + p * m * (taps + 1), g, offsets,
                                      scratch + threadid() * size)
        release_buffers(scratch, own)
    for k in range(K):
        for t in range(taps + 1):
            total = 0
            for n in range(N):
                total = total + partial[(n * K + k) * (taps + 1) + t]
            if t < taps:
                gw[k * taps + t] = <floating>total
            else:
                gb[k] = <floating>total
    return 0


cdef inline Py_ssize_t forward_scratch(const Geometry* g) noexcept nogil:
    """Elements of a padded input plane (the forward's and the weight gradient's scratch)."""
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
    cdef Py_ssize_t* offsets
    cdef int status
    if x.shape[0] * x.shape[1] == 0:
        return
    offsets = new_offsets(&g, DATA_SCATTER)
    with nogil:
        status = forward_planes(&x[0, 0, 0, 0], &w[0, 0, 0, 0],
                                &b[0] if b is not None else NULL, &y[0, 0, 0, 0],
                                x.shape[0] * x.shape[1], x.shape[1], &g, offsets, NULL)
    free(offsets)
    if status < 0:
        no_memory("depthwise_forward", forward_scratch(&g))


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
    cdef int mode = data_mode(&g, scatter)
    cdef Py_ssize_t* offsets
    cdef int status
    if gx.shape[0] * gx.shape[1] == 0:
        return
    offsets = new_offsets(&g, mode)
    with nogil:
        status = backward_data_planes(&gy[0, 0, 0, 0], &w[0, 0, 0, 0], &gx[0, 0, 0, 0],
                                      gx.shape[0] * gx.shape[1], gx.shape[1], &g, mode,
                                      offsets, NULL)
    free(offsets)
    if status < 0:
        no_memory("depthwise_backward_data", data_scratch(&g, mode))


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
    cdef Py_ssize_t* offsets = new_offsets(&g, DATA_SCATTER)
    cdef int status
    cdef Py_ssize_t N = x.shape[0]
    with nogil:
        status = backward_filter_planes(
            &gy[0, 0, 0, 0] if N else NULL, &x[0, 0, 0, 0] if N else NULL,
            &partial[0, 0, 0] if N else NULL, &gw[0, 0, 0, 0], &gb[0], N, x.shape[1], &g,
            offsets, NULL)
    free(offsets)
    if status < 0:
        no_memory("depthwise_backward_filter", forward_scratch(&g))


cdef int no_memory(str owner, Py_ssize_t size) except -1:
    raise MemoryError(f"{owner}: no memory for the padded planes of {size} elements each")


include "_depthwise_steps.pxi"

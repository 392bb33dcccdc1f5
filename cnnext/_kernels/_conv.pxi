# Convolution kernels (NCHW, float32/float64): the shared source of the
# _conv_baseline, _conv_x86_64_v3 and _conv_x86_64_v4 modules, which setup.py
# compiles with their instruction-set flags.
#
# Layers, top to bottom:
#
# 1. ``Plan`` (built once per shape by cnnext._functional.conv and cached):
#    the geometry, where each image's input windows are read from, how many
#    images are staged at once and how big the caller's workspace must be.
# 2. ``conv2d_forward``, ``conv2d_backward_data``, ``conv2d_backward_filter``:
#    the entry points.  Arguments arrive validated and C-contiguous, outputs
#    and the workspace allocated by the caller.  They release the GIL and
#    split the work into independent items over OpenMP threads.
# 3. Per-item routines (``forward_block``, ``data_grad_channel``,
#    ``filter_grad_tile``, ...) and the staging copies (padding, im2col).
# 4. Two register-tile microkernels over the vector layer of _conv_simd.pxi:
#    ``nn_tile``  out[m, positions] = init[m] + sum_taps a[tap, m] * window[tap]
#                 (forward, and the columns of the input gradient), and
#    ``dot_tile`` out[m, t] = sum_positions gy_row[m] * window[t]
#                 (weight gradient, vector partial sums reduced once at the end).
#
# Windows.  Every algorithm sees the input as, for each tap (c, r, s), a
# window of positions (i, j) that is contiguous along j:
#     origin + c*c_stride + r*r_stride + s*s_stride + i*i_stride + j.
# Three sources provide that layout:
#   * the input itself (no padding, column stride 1): no copy;
#   * a zero-padded copy of each image (column stride 1, padding);
#   * an im2col panel, one contiguous row of Ho*Wo positions per tap (column
#     stride > 1, or output rows too short for full vectors).
# Vectors of positions run along j; a row whose length is not a multiple of
# the vector width ends with a vector that overlaps its predecessor (it
# recomputes, never accumulates, so results are unchanged).
#
# Determinism.  No result depends on the thread count: every output element is
# computed by exactly one work item in a fixed order.  The weight gradient is
# reduced over fixed chunks of images (chosen from the shape alone) whose
# partial sums are added in chunk order.

from cython cimport floating
from cython.parallel cimport parallel, prange

from ._openmp_helpers cimport effective_num_threads

include "_conv_simd.pxi"

cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define CNNEXT_COMPILED_ISA "x86-64-v4"
    #elif defined(__AVX2__)
    #define CNNEXT_COMPILED_ISA "x86-64-v3"
    #else
    #define CNNEXT_COMPILED_ISA "baseline"
    #endif
    """
    const char *CNNEXT_COMPILED_ISA

cdef extern from "string.h" nogil:
    void *memcpy(void *dst, const void *src, size_t n)
    void *memset(void *dst, int c, size_t n)


# Staged copies (padded images, im2col panels, input-gradient columns) of at
# most this many bytes per call; larger batches are processed in waves.
cdef Py_ssize_t STAGE_BYTES = 4 << 20
# Below this many multiply-adds a call runs on one thread: waking a second
# thread costs more than it saves.
cdef Py_ssize_t MIN_FMAS_PER_THREAD = 1 << 18
# Weight-gradient work items wanted per call, so that threads stay busy even
# when the output has few tiles (the notebook's 8 x 9 filter bank).
cdef Py_ssize_t FILTER_ITEMS = 16
# Windows are read in place (or from a padded copy) when at least this share
# of the vector lanes along an output row does useful work; below it, an
# im2col panel packs the positions densely.
cdef double MIN_ROW_LANE_USE = 0.75


def compiled_isa():
    """compiled_isa()

    The instruction-set level this module was compiled for, read from the
    compiler's own macros (so it proves the build flags, not the file name).
    """
    return CNNEXT_COMPILED_ISA.decode("ascii")


def vector_bytes():
    """vector_bytes()

    Width in bytes of the vector registers the kernels of this module use.
    """
    return VEC_BYTES


# --------------------------------------------------------------------- plan

cdef struct Geometry:
    Py_ssize_t N, C, H, W, K, R, S, Ho, Wo, P, CRS
    Py_ssize_t sh, sw, ph, pw, dh, dw


cdef struct Windows:
    # Tap (c, r, s) of output position (i, j) of one image is at
    # origin + c*c_stride + r*r_stride + s*s_stride + i*i_stride + j.
    Py_ssize_t taps_c, taps_r, taps_s
    Py_ssize_t c_stride, r_stride, s_stride, i_stride
    Py_ssize_t rows, row_len          # output positions: rows x row_len
    Py_ssize_t image_stride           # from one image's origin to the next


# How the input windows are obtained.
cdef enum Source:
    SOURCE_INPUT = 0      # read x in place
    SOURCE_PADDED = 1     # zero-padded copy of each image
    SOURCE_PANEL = 2      # im2col panel of each image


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline Py_ssize_t clamp(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef struct Layout:
    Geometry g
    Py_ssize_t lanes              # vector lanes of the data dtype
    Source source
    Windows win                   # input windows of one image
    Py_ssize_t staged_elems       # per image, 0 when read in place
    Py_ssize_t padded_h, padded_w
    Py_ssize_t forward_wave       # images staged at once
    Py_ssize_t fwd_blocks         # output-channel blocks of FWD_MR
    Py_ssize_t gy_elems           # per image: gy padded to a vector when P < lanes, else 0
    Py_ssize_t col_blocks         # (c, r, s) blocks of FWD_MR for the input gradient
    Py_ssize_t data_wave          # images per wave of input-gradient columns
    Py_ssize_t chunk_images       # weight-gradient images per chunk
    Py_ssize_t chunks
    Py_ssize_t filter_wave        # chunks staged at once


cdef void choose_source(Layout* d) noexcept nogil:
    """Read windows in place, from padded copies, or from im2col panels."""
    cdef Geometry* g = &d.g
    cdef Windows* win = &d.win
    cdef Py_ssize_t vectors_per_row = ceil_div(g.Wo, d.lanes)
    cdef bint rows_fill_lanes = (g.Wo >= d.lanes and
                                 g.Wo >= MIN_ROW_LANE_USE * vectors_per_row * d.lanes)
    win.taps_c, win.taps_r, win.taps_s = g.C, g.R, g.S
    d.padded_h = d.padded_w = 0
    if g.sw == 1 and rows_fill_lanes:
        win.rows, win.row_len = g.Ho, g.Wo
        win.s_stride = g.dw
        if g.ph == 0 and g.pw == 0:
            d.source = SOURCE_INPUT
            d.staged_elems = 0
            win.image_stride = g.C * g.H * g.W
            win.c_stride = g.H * g.W
            win.r_stride = g.dh * g.W
            win.i_stride = g.sh * g.W
        else:
            # Only the rows and columns some window reaches.
            d.source = SOURCE_PADDED
            d.padded_h = (g.Ho - 1) * g.sh + (g.R - 1) * g.dh + 1
            d.padded_w = g.Wo + (g.S - 1) * g.dw
            d.staged_elems = g.C * d.padded_h * d.padded_w
            win.image_stride = d.staged_elems
            win.c_stride = d.padded_h * d.padded_w
            win.r_stride = g.dh * d.padded_w
            win.i_stride = g.sh * d.padded_w
    else:
        # One row of P positions per tap, padded to whole vectors.
        d.source = SOURCE_PANEL
        d.padded_w = ceil_div(g.P, d.lanes) * d.lanes
        d.staged_elems = g.CRS * d.padded_w
        win.rows, win.row_len = 1, g.P
        win.image_stride = d.staged_elems
        win.s_stride = d.padded_w
        win.r_stride = g.S * d.padded_w
        win.c_stride = g.R * g.S * d.padded_w
        win.i_stride = 0


cdef class Plan:
    """Plan(N, C, H, W, K, R, S, stride, padding, dilation, itemsize)

    How this module computes a convolution of one shape: output size, where
    the input windows come from, waves of staged images, weight-gradient
    chunks and workspace sizes.  Arguments must already be valid (the caller,
    cnnext._functional.conv, checks them).  Depends on the shape only, never
    on the thread count.

    Attributes
    ----------
    forward_workspace, backward_data_workspace, backward_filter_workspace : int
        Elements (of the data dtype) of scratch memory each entry point needs.
    """
    cdef Layout d
    cdef readonly Py_ssize_t forward_workspace
    cdef readonly Py_ssize_t backward_data_workspace
    cdef readonly Py_ssize_t backward_filter_workspace

    def __init__(self, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                 Py_ssize_t K, Py_ssize_t R, Py_ssize_t S, stride, padding, dilation,
                 Py_ssize_t itemsize):
        cdef Geometry* g = &self.d.g
        g.N, g.C, g.H, g.W, g.K, g.R, g.S = N, C, H, W, K, R, S
        g.sh, g.sw = stride
        g.ph, g.pw = padding
        g.dh, g.dw = dilation
        g.Ho = (H + 2 * g.ph - g.dh * (R - 1) - 1) // g.sh + 1
        g.Wo = (W + 2 * g.pw - g.dw * (S - 1) - 1) // g.sw + 1
        g.P = g.Ho * g.Wo
        g.CRS = C * R * S
        self.d.lanes = VEC_BYTES // itemsize
        choose_source(&self.d)
        cdef Py_ssize_t budget = max(1, STAGE_BYTES // itemsize)

        # Forward: packed weights and bias, then a wave of staged images.
        self.d.fwd_blocks = ceil_div(K, FWD_MR)
        self.d.forward_wave = N if self.d.staged_elems == 0 else clamp(
            budget // self.d.staged_elems, 1, max(N, 1))
        self.forward_workspace = (self.d.fwd_blocks * FWD_MR * (g.CRS + 1)
                                  + self.d.forward_wave * self.d.staged_elems)

        # Input gradient: packed transposed weights, gy padded to a full
        # vector when a plane is shorter than one, then a wave of columns.
        self.d.col_blocks = ceil_div(g.CRS, FWD_MR)
        self.d.gy_elems = K * self.d.lanes if g.P < self.d.lanes else 0
        self.d.data_wave = clamp(budget // (g.CRS * g.P + self.d.gy_elems), 1, max(N, 1))
        self.backward_data_workspace = (self.d.col_blocks * FWD_MR * K
                                        + self.d.data_wave * (g.CRS * g.P + self.d.gy_elems))

        # Weight gradient: fixed chunks of images; a wave of staged chunks;
        # per-chunk partial sums when there is more than one chunk.
        cdef Py_ssize_t tiles = ceil_div(K, DOT_MR) * ceil_div(g.CRS, DOT_NR)
        cdef Py_ssize_t chunks = max(ceil_div(FILTER_ITEMS, tiles),
                                     ceil_div(N * self.d.staged_elems, budget))
        chunks = clamp(chunks, 1, max(N, 1))
        self.d.chunk_images = ceil_div(max(N, 1), chunks)
        self.d.chunks = ceil_div(max(N, 1), self.d.chunk_images)
        self.d.filter_wave = self.d.chunks if self.d.staged_elems == 0 else clamp(
            budget // (self.d.chunk_images * self.d.staged_elems), 1, self.d.chunks)
        self.backward_filter_workspace = (
            self.d.filter_wave * self.d.chunk_images * self.d.staged_elems
            + (self.d.chunks * K * g.CRS if self.d.chunks > 1 else 0))

    @property
    def output_shape(self):
        """(N, K, Ho, Wo)."""
        return (self.d.g.N, self.d.g.K, self.d.g.Ho, self.d.g.Wo)

    @property
    def source(self):
        """Where input windows come from: "input", "padded" or "panel"."""
        return ("input", "padded", "panel")[<int>self.d.source]

    def __repr__(self):
        return (f"Plan(output={self.output_shape}, source={self.source!r}, "
                f"lanes={self.d.lanes}, chunks={self.d.chunks})")


cdef inline int threads_for(Py_ssize_t fmas, Py_ssize_t items) noexcept nogil:
    """Threads worth using for ``fmas`` multiply-adds split into ``items``."""
    cdef Py_ssize_t n = min(<Py_ssize_t>effective_num_threads(), items,
                            fmas // MIN_FMAS_PER_THREAD)
    return <int>max(n, 1)


# ------------------------------------------------------------- microkernels

cdef inline void nn_tile(const floating* a,            # IN  (taps, FWD_MR) packed A
                         const floating* init,         # IN  (FWD_MR,) start values or NULL
                         const floating** b,           # IN  (FWD_NV,) window origins
                         const Windows* win,
                         floating** out,               # OUT (FWD_NV,) row-0 destinations
                         Py_ssize_t out_stride,        # from row m to row m + 1
                         Py_ssize_t rows_valid,        # rows m < rows_valid are stored
                         Py_ssize_t store_lanes) noexcept nogil:
    """FWD_MR x FWD_NV vectors of out = init + sum over taps of A[tap, m] * B[tap]."""
    cdef vec acc[FWD_MR][FWD_NV]
    cdef vec bv[FWD_NV]
    cdef Py_ssize_t m, v, c, r, s, offset
    for m in range(FWD_MR):
        for v in range(FWD_NV):
            acc[m][v] = cnx_zero() if init == NULL else vsplat(init[m])
    for c in range(win.taps_c):
        for r in range(win.taps_r):
            offset = c * win.c_stride + r * win.r_stride
            for s in range(win.taps_s):
                for v in range(FWD_NV):
                    bv[v] = vload(b[v] + offset)
                for m in range(FWD_MR):
                    for v in range(FWD_NV):
                        acc[m][v] = vfma(a, acc[m][v], bv[v], vsplat(a[m]))
                a += FWD_MR
                offset += win.s_stride
    for m in range(FWD_MR):
        if m < rows_valid:
            for v in range(FWD_NV):
                if store_lanes == lanes(a):
                    vstore(out[v] + m * out_stride, acc[m][v])
                else:
                    vstore_part(out[v] + m * out_stride, acc[m][v], store_lanes)


cdef inline void dot_tile(const floating* gy,         # IN  gy of image 0
                          const Py_ssize_t* rows,     # IN  (DOT_MR,) gy plane offsets
                          Py_ssize_t gy_image_stride,
                          const floating* x,          # IN  windows of image 0
                          const Py_ssize_t* taps,     # IN  (DOT_NR,) window offsets
                          const Windows* win,
                          Py_ssize_t images,
                          floating* out,              # OUT out[m * out_stride + t]
                          Py_ssize_t out_stride,
                          Py_ssize_t rows_valid, Py_ssize_t taps_valid) noexcept nogil:
    """DOT_MR x DOT_NR sums over every position of ``images`` images of gy[m] * window[t]."""
    cdef vec acc[DOT_MR][DOT_NR]
    cdef vec bv[DOT_NR]
    cdef vec av
    cdef const floating* gy_row
    cdef const floating* x_row
    cdef Py_ssize_t m, t, n, i, j, v
    cdef Py_ssize_t L = lanes(gy)
    cdef Py_ssize_t full = win.row_len - win.row_len % L
    cdef Py_ssize_t tail = win.row_len - full
    for m in range(DOT_MR):
        for t in range(DOT_NR):
            acc[m][t] = cnx_zero()
    for n in range(images):
        for i in range(win.rows):
            gy_row = gy + n * gy_image_stride + i * win.row_len
            x_row = x + n * win.image_stride + i * win.i_stride
            for v in range(full // L):
                j = v * L
                for t in range(DOT_NR):
                    bv[t] = vload(x_row + taps[t] + j)
                for m in range(DOT_MR):
                    av = vload(gy_row + rows[m] + j)
                    for t in range(DOT_NR):
                        acc[m][t] = vfma(gy, acc[m][t], av, bv[t])
            if tail:
                for t in range(DOT_NR):
                    bv[t] = vload_part(x_row + taps[t] + full, tail)
                for m in range(DOT_MR):
                    av = vload_part(gy_row + rows[m] + full, tail)
                    for t in range(DOT_NR):
                        acc[m][t] = vfma(gy, acc[m][t], av, bv[t])
    for m in range(DOT_MR):
        if m < rows_valid:
            for t in range(DOT_NR):
                if t < taps_valid:
                    out[m * out_stride + t] = vsum(gy, acc[m][t])


# ------------------------------------------------------------------ staging

cdef inline void valid_run(Py_ssize_t length, Py_ssize_t step, Py_ssize_t offset,
                           Py_ssize_t size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) = the j in [0, length) with 0 <= j * step + offset < size."""
    lo[0] = 0 if offset >= 0 else ceil_div(-offset, step)
    hi[0] = 0 if size - 1 - offset < 0 else min(length, (size - 1 - offset) // step + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef void gather_run(const floating* src,     # IN  one input row
                     Py_ssize_t size, Py_ssize_t step, Py_ssize_t offset,
                     floating* dst,           # OUT dst[j] = src[j*step + offset] or 0
                     Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t lo, hi, j
    valid_run(length, step, offset, size, &lo, &hi)
    memset(dst, 0, lo * sizeof(floating))
    if step == 1:
        memcpy(dst + lo, src + lo + offset, (hi - lo) * sizeof(floating))
    else:
        for j in range(lo, hi):
            dst[j] = src[j * step + offset]
    memset(dst + hi, 0, (length - hi) * sizeof(floating))


cdef void stage_padded(const floating* x,     # IN  (C, H, W) one image
                       const Layout* d,
                       floating* dst) noexcept nogil:  # OUT (C, padded_h, padded_w)
    """Copy the rows and columns the windows reach, zeros in the padding."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t c, row, h
    for c in range(g.C):
        for row in range(d.padded_h):
            h = row - g.ph
            if 0 <= h < g.H:
                gather_run(x + (c * g.H + h) * g.W, g.W, 1, -g.pw, dst, d.padded_w)
            else:
                memset(dst, 0, d.padded_w * sizeof(floating))
            dst += d.padded_w


cdef void stage_panel(const floating* x,      # IN  (C, H, W) one image
                      const Layout* d,
                      floating* dst) noexcept nogil:  # OUT (C*R*S, padded_w) im2col
    """dst[(c, r, s), i*Wo + j] = x[c, i*sh + r*dh - ph, j*sw + s*dw - pw] (0 outside)."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t c, r, s, i, h
    cdef floating* row
    for c in range(g.C):
        for r in range(g.R):
            for s in range(g.S):
                row = dst + ((c * g.R + r) * g.S + s) * d.padded_w
                for i in range(g.Ho):
                    h = i * g.sh + r * g.dh - g.ph
                    if 0 <= h < g.H:
                        gather_run(x + (c * g.H + h) * g.W, g.W, g.sw, s * g.dw - g.pw,
                                   row + i * g.Wo, g.Wo)
                    else:
                        memset(row + i * g.Wo, 0, g.Wo * sizeof(floating))
                memset(row + g.P, 0, (d.padded_w - g.P) * sizeof(floating))


cdef void stage_image(const floating* x, const Layout* d, floating* dst) noexcept nogil:
    if d.source == SOURCE_PADDED:
        stage_padded(x, d, dst)
    else:
        stage_panel(x, d, dst)


# ------------------------------------------------------------------ forward

cdef void pack_forward_weights(const floating* w,     # IN  (K, CRS)
                               const floating* bias,  # IN  (K,) or NULL
                               const Layout* d,
                               floating* packed) noexcept nogil:
    """packed[block] = (CRS, FWD_MR) weights of FWD_MR output channels, then the
    padded bias (FWD_MR * blocks); channels past K are zero."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t blk, t, m, k
    for blk in range(d.fwd_blocks):
        for t in range(g.CRS):
            for m in range(FWD_MR):
                k = blk * FWD_MR + m
                packed[0] = w[k * g.CRS + t] if k < g.K else 0
                packed += 1
    for k in range(d.fwd_blocks * FWD_MR):
        packed[k] = bias[k] if bias != NULL and k < g.K else 0


cdef void tile_positions(const Windows* win, Py_ssize_t L, Py_ssize_t q,
                         Py_ssize_t* src_offset, Py_ssize_t* out_offset) noexcept nogil:
    """Window and output offsets of the q-th vector of positions.

    Each output row holds ceil(row_len / L) vectors; the last one of a row
    overlaps its predecessor when row_len is not a multiple of L.
    """
    cdef Py_ssize_t per_row = ceil_div(win.row_len, L)
    cdef Py_ssize_t i = q // per_row
    cdef Py_ssize_t j = (q - i * per_row) * L
    if j + L > win.row_len:
        j = max(win.row_len - L, 0)
    src_offset[0] = i * win.i_stride + j
    out_offset[0] = i * win.row_len + j


cdef void nn_block(const floating* a,         # IN  (taps, FWD_MR) packed A of the block
                   const floating* init,      # IN  (FWD_MR,) or NULL
                   const floating* origin,    # IN  windows of one image
                   const Windows* win,
                   floating* out,             # OUT (rows_valid, out_stride) block of output rows
                   Py_ssize_t out_stride, Py_ssize_t rows_valid,
                   Py_ssize_t q_begin, Py_ssize_t q_end) noexcept nogil:
    """Output vectors q_begin..q_end-1 of one block of FWD_MR rows."""
    cdef const floating* b[FWD_NV]
    cdef floating* dst[FWD_NV]
    cdef Py_ssize_t L = lanes(a)
    cdef Py_ssize_t store_lanes = min(L, win.row_len)
    cdef Py_ssize_t tile, q, v, src_offset, out_offset
    for tile in range(ceil_div(q_end - q_begin, FWD_NV)):
        q = q_begin + tile * FWD_NV
        for v in range(FWD_NV):
            # Past the end, repeat the last vector: same values stored twice.
            tile_positions(win, L, min(q + v, q_end - 1), &src_offset, &out_offset)
            b[v] = origin + src_offset
            dst[v] = out + out_offset
        nn_tile(a, init, b, win, dst, out_stride, rows_valid, store_lanes)


cdef inline Py_ssize_t position_vectors(const Windows* win, Py_ssize_t L) noexcept nogil:
    return win.rows * ceil_div(win.row_len, L)


def conv2d_forward(Plan plan,
                   const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                   const floating[:, :, :, ::1] w,   # IN  (K, C, R, S)
                   const floating[::1] b,            # IN  (K,) or None
                   floating[:, :, :, ::1] y,         # OUT (N, K, Ho, Wo)
                   floating[::1] work):              # TMP d.forward_workspace
    """conv2d_forward(d, x, w, b, y, work)

    y = conv2d(x, w, b) for the geometry of ``plan``.  The caller has checked
    every shape against the d.
    """
    cdef const Layout* d = &plan.d
    cdef const Geometry* g = &d.g
    cdef const floating* bias = NULL
    cdef floating* packed = &work[0]
    cdef floating* staged = packed + d.fwd_blocks * FWD_MR * (g.CRS + 1)
    cdef const floating* bias_packed = packed + d.fwd_blocks * FWD_MR * g.CRS
    cdef Py_ssize_t L = d.lanes
    cdef Py_ssize_t vectors = position_vectors(&d.win, L)
    cdef Py_ssize_t wave, first, count, item, n, blk, part, parts, per_part, q0
    cdef int threads
    cdef const floating* origin
    if b is not None:
        bias = &b[0]
    with nogil:
        pack_forward_weights(&w[0, 0, 0, 0], bias, d, packed)
        for wave in range(ceil_div(g.N, d.forward_wave)):
            first = wave * d.forward_wave
            count = min(d.forward_wave, g.N - first)
            # Split each image's vectors too when images alone cannot feed the threads.
            threads = threads_for(count * g.K * g.CRS * g.P, count * d.fwd_blocks * vectors)
            parts = min(ceil_div(4 * threads, count * d.fwd_blocks), ceil_div(vectors, FWD_NV))
            per_part = ceil_div(ceil_div(vectors, parts), FWD_NV) * FWD_NV
            with parallel(num_threads=threads):
                if d.source != SOURCE_INPUT:
                    for n in prange(count, schedule="static"):
                        stage_image(&x[first + n, 0, 0, 0], d, staged + n * d.staged_elems)
                for item in prange(count * d.fwd_blocks * parts, schedule="dynamic"):
                    n = item // (d.fwd_blocks * parts)
                    blk = (item // parts) % d.fwd_blocks
                    part = item % parts
                    q0 = part * per_part
                    if q0 < vectors:
                        if d.source == SOURCE_INPUT:
                            origin = &x[first + n, 0, 0, 0]
                        else:
                            origin = staged + n * d.staged_elems
                        nn_block(packed + blk * FWD_MR * g.CRS, bias_packed + blk * FWD_MR,
                                 origin, &d.win, &y[first + n, blk * FWD_MR, 0, 0], g.P,
                                 min(<Py_ssize_t>FWD_MR, g.K - blk * FWD_MR),
                                 q0, min(q0 + per_part, vectors))


# ----------------------------------------------------------- input gradient

cdef void pack_data_weights(const floating* w,     # IN  (K, CRS)
                            const Layout* d,
                            floating* packed) noexcept nogil:
    """packed[block] = (K, FWD_MR): w transposed, FWD_MR taps per block, zeros past CRS."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t blk, k, m, t
    for blk in range(d.col_blocks):
        for k in range(g.K):
            for m in range(FWD_MR):
                t = blk * FWD_MR + m
                packed[0] = w[k * g.CRS + t] if t < g.CRS else 0
                packed += 1


cdef void col2im_channel(const floating* col,   # IN  (R*S, P) columns of channel c
                         const Layout* d,
                         floating* gx) noexcept nogil:  # OUT (H, W) plane of channel c
    """gx = sum over taps of the columns scattered back to their input positions."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t r, s, i, j, h, lo, hi, offset
    cdef floating* dst
    cdef const floating* src
    memset(gx, 0, g.H * g.W * sizeof(floating))
    for r in range(g.R):
        for s in range(g.S):
            offset = s * g.dw - g.pw
            valid_run(g.Wo, g.sw, offset, g.W, &lo, &hi)
            for i in range(g.Ho):
                h = i * g.sh + r * g.dh - g.ph
                if 0 <= h < g.H:
                    dst = gx + h * g.W
                    src = col + (r * g.S + s) * g.P + i * g.Wo
                    if g.sw == 1:
                        for j in range(lo, hi):
                            dst[j + offset] += src[j]
                    else:
                        for j in range(lo, hi):
                            dst[j * g.sw + offset] += src[j]


def conv2d_backward_data(Plan plan,
                         const floating[:, :, :, ::1] gy,   # IN  (N, K, Ho, Wo)
                         const floating[:, :, :, ::1] w,    # IN  (K, C, R, S)
                         floating[:, :, :, ::1] gx,         # OUT (N, C, H, W)
                         floating[::1] work):               # TMP d.backward_data_workspace
    """conv2d_backward_data(d, gy, w, gx, work)

    gx = gradient of sum(gy * conv2d(x, w)) with respect to x: the columns
    w^T gy of each image (an ``nn_tile`` product over output channels),
    scattered back onto the input positions (col2im).
    """
    cdef const Layout* d = &plan.d
    cdef const Geometry* g = &d.g
    cdef floating* packed = &work[0]
    cdef floating* cols = packed + d.col_blocks * FWD_MR * g.K
    cdef floating* gy_padded = cols + d.data_wave * g.CRS * g.P
    cdef Py_ssize_t L = d.lanes
    cdef Windows win                      # gy of one image as the windows of nn_tile
    cdef Py_ssize_t wave, first, count, item, n, blk, c, vectors
    cdef int threads
    cdef const floating* origin
    win.taps_c, win.taps_r, win.taps_s = g.K, 1, 1
    win.r_stride = win.s_stride = win.i_stride = 0
    win.rows, win.row_len = 1, g.P
    win.c_stride = L if d.gy_elems else g.P
    win.image_stride = d.gy_elems if d.gy_elems else g.K * g.P
    vectors = position_vectors(&win, L)
    with nogil:
        pack_data_weights(&w[0, 0, 0, 0], d, packed)
        for wave in range(ceil_div(g.N, d.data_wave)):
            first = wave * d.data_wave
            count = min(d.data_wave, g.N - first)
            threads = threads_for(count * g.K * g.CRS * g.P, count * d.col_blocks)
            with parallel(num_threads=threads):
                if d.gy_elems:
                    for n in prange(count * g.K, schedule="static"):
                        gather_run(&gy[first + n // g.K, n % g.K, 0, 0], g.P, 1, 0,
                                   gy_padded + n * L, L)
                for item in prange(count * d.col_blocks, schedule="dynamic"):
                    n = item // d.col_blocks
                    blk = item % d.col_blocks
                    if d.gy_elems:
                        origin = gy_padded + n * d.gy_elems
                    else:
                        origin = &gy[first + n, 0, 0, 0]
                    nn_block(packed + blk * FWD_MR * g.K, NULL, origin, &win,
                             cols + n * g.CRS * g.P + blk * FWD_MR * g.P, g.P,
                             min(<Py_ssize_t>FWD_MR, g.CRS - blk * FWD_MR), 0, vectors)
                for item in prange(count * g.C, schedule="dynamic"):
                    n = item // g.C
                    c = item % g.C
                    col2im_channel(cols + (n * g.C + c) * g.R * g.S * g.P, d,
                                   &gx[first + n, c, 0, 0])


# ---------------------------------------------------------- weight gradient

cdef void filter_grad_tile(const floating* gy,    # IN  (images, K, P) of the chunk
                           const floating* origin,  # IN  windows of the chunk's first image
                           const Layout* d,
                           Py_ssize_t images, Py_ssize_t k0, Py_ssize_t t0,
                           floating* out) noexcept nogil:  # OUT (K, CRS) chunk sums
    cdef const Geometry* g = &d.g
    cdef const Windows* win = &d.win
    cdef Py_ssize_t rows[DOT_MR]
    cdef Py_ssize_t taps[DOT_NR]
    cdef Py_ssize_t m, v, tap, c, r, s
    # Rows past K and taps past CRS repeat the last one: computed, not stored.
    for m in range(DOT_MR):
        rows[m] = min(k0 + m, g.K - 1) * g.P
    for v in range(DOT_NR):
        tap = min(t0 + v, g.CRS - 1)
        c = tap // (g.R * g.S)
        r = (tap // g.S) % g.R
        s = tap % g.S
        taps[v] = c * win.c_stride + r * win.r_stride + s * win.s_stride
    dot_tile(gy, rows, g.K * g.P, origin, taps, win, images, out + k0 * g.CRS + t0, g.CRS,
             g.K - k0, g.CRS - t0)


cdef void bias_grad(const floating* gy, const Geometry* g, Py_ssize_t k,
                    floating* gb) noexcept nogil:
    """gb[k] = sum of gy[:, k]: vector partial sums in a fixed order."""
    cdef vec acc = cnx_zero()
    cdef Py_ssize_t L = lanes(gy)
    cdef Py_ssize_t full = g.P - g.P % L
    cdef Py_ssize_t n, j
    cdef const floating* plane
    for n in range(g.N):
        plane = gy + (n * g.K + k) * g.P
        for j in range(full // L):
            acc = vadd(gy, acc, vload(plane + j * L))
        if full < g.P:
            acc = vadd(gy, acc, vload_part(plane + full, g.P - full))
    gb[k] = vsum(gy, acc)


def conv2d_backward_filter(Plan plan,
                           const floating[:, :, :, ::1] gy,  # IN  (N, K, Ho, Wo)
                           const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                           floating[:, :, :, ::1] gw,        # OUT (K, C, R, S)
                           floating[::1] gb,                 # OUT (K,)
                           floating[::1] work):              # TMP d.backward_filter_workspace
    """conv2d_backward_filter(d, gy, x, gw, gb, work)

    gw[k, c, r, s] = sum over images and positions of gy[n, k, i, j] times the
    input under tap (c, r, s) of position (i, j); gb[k] = sum of gy[:, k].
    Sums run over fixed chunks of images; chunk sums are added in order.
    """
    cdef const Layout* d = &plan.d
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t chunk_elems = d.chunk_images * d.staged_elems
    cdef floating* staged = &work[0]
    cdef floating* partial = staged + d.filter_wave * chunk_elems
    cdef Py_ssize_t k_tiles = ceil_div(g.K, DOT_MR)
    cdef Py_ssize_t t_tiles = ceil_div(g.CRS, DOT_NR)
    cdef Py_ssize_t tiles = k_tiles * t_tiles
    cdef Py_ssize_t wave, first_chunk, chunk_count, first, count, item, chunk, n0, images, tile, n
    cdef Py_ssize_t e, ch
    cdef int threads
    cdef floating total
    cdef const floating* origin
    cdef floating* out
    with nogil:
        for wave in range(ceil_div(d.chunks, d.filter_wave)):
            first_chunk = wave * d.filter_wave
            chunk_count = min(d.filter_wave, d.chunks - first_chunk)
            first = first_chunk * d.chunk_images
            count = min(chunk_count * d.chunk_images, g.N - first)
            threads = threads_for(count * g.K * g.CRS * g.P, chunk_count * tiles)
            with parallel(num_threads=threads):
                if d.source != SOURCE_INPUT:
                    for n in prange(count, schedule="static"):
                        stage_image(&x[first + n, 0, 0, 0], d, staged + n * d.staged_elems)
                for item in prange(chunk_count * tiles, schedule="dynamic"):
                    chunk = item // tiles
                    tile = item % tiles
                    n0 = chunk * d.chunk_images
                    images = min(d.chunk_images, count - n0)
                    if d.source == SOURCE_INPUT:
                        origin = &x[first + n0, 0, 0, 0]
                    else:
                        origin = staged + n0 * d.staged_elems
                    out = &gw[0, 0, 0, 0] if d.chunks == 1 else (
                        partial + (first_chunk + chunk) * g.K * g.CRS)
                    filter_grad_tile(&gy[first + n0, 0, 0, 0], origin, d, images,
                                     (tile // t_tiles) * DOT_MR, (tile % t_tiles) * DOT_NR, out)
        threads = threads_for(g.N * g.K * g.P + d.chunks * g.K * g.CRS, g.K)
        with parallel(num_threads=threads):
            if d.chunks > 1:
                for e in prange(g.K * g.CRS, schedule="static"):
                    total = partial[e]
                    for ch in range(1, d.chunks):
                        total = total + partial[ch * g.K * g.CRS + e]
                    (&gw[0, 0, 0, 0])[e] = total
            for e in prange(g.K, schedule="static"):
                bias_grad(&gy[0, 0, 0, 0], g, e, &gb[0])

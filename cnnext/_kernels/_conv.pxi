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
# 3. Staging copies (_conv_staging.pxi): padded images, im2col panels,
#    packed weights, gy transposed, col2im.
# 4. Register-tile microkernels (_conv_tiles.pxi) over the vector layer of
#    _conv_simd.pxi: ``nn_tile`` (forward, input-gradient columns),
#    ``dot_tile`` and ``trn_tile`` (weight gradient for few / many filters).
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
# The Plan turns each layout into tables: the offset of every tap's window,
# and for every vector of output positions its window and output offsets, so
# tiles never divide to find their positions.
#
# Determinism.  No result depends on the thread count: every output element is
# computed by exactly one work item, always in the same order.  Where the
# weight gradient is split over images, the chunks are fixed by the shape and
# their partial sums are added in chunk order.

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cython cimport floating
from cython.parallel cimport parallel, prange

from ._openmp_helpers cimport effective_num_threads

include "_conv_simd.pxi"
include "_conv_tiles.pxi"
include "_conv_staging.pxi"

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
# The many-filter weight gradient takes images in blocks whose gy^T and
# windows stay in a core's L2 cache while every tile runs over them.
cdef Py_ssize_t BLOCK_BYTES = 512 << 10
# Below this many multiply-adds a call runs on one thread: waking a second
# thread costs more than it saves.
cdef Py_ssize_t MIN_FMAS_PER_THREAD = 1 << 18
# Work items per thread, for balance when a neighbour steals a core.
cdef Py_ssize_t ITEMS_PER_THREAD = 8
# Few-filter weight-gradient work items wanted per call, so that threads stay
# busy even when the output has few tiles (the notebook's 8 x 9 filter bank).
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


# Where the input windows are read.
cdef enum Source:
    SOURCE_INPUT = 0      # x in place
    SOURCE_PADDED = 1     # a zero-padded copy of each image
    SOURCE_PANEL = 2      # an im2col panel of each image


# How the weight gradient is computed.
cdef enum FilterKernel:
    FILTER_DOT = 0        # dot_tile, over fixed chunks of images
    FILTER_TRANSPOSED = 1  # trn_tile, over blocks of images


cdef struct Operand:
    # The B operand of nn_tile for a batch of images: tap t of the q-th vector
    # of positions of image n starts at
    #     origin + n*image_stride + vectors[2q] + taps[t]
    # and that vector's results go to output offset vectors[2q + 1].
    Py_ssize_t ntaps
    Py_ssize_t* taps
    Py_ssize_t nvectors
    Py_ssize_t* vectors
    Py_ssize_t image_stride
    Py_ssize_t store_lanes        # below the vector width when a row is shorter


cdef struct Layout:
    Geometry g
    Py_ssize_t lanes              # vector lanes of the data dtype
    Source source
    Py_ssize_t staged_elems       # per image, 0 when x is read in place
    Py_ssize_t padded_h, padded_w
    Py_ssize_t rows, row_len      # the positions of one image as rows of windows
    Py_ssize_t i_stride           # window offset from one row to the next
    Operand x                     # input windows, taps (c, r, s)
    Operand gy                    # gy planes, taps = filters
    Py_ssize_t gy_elems           # gy padded to a vector per image when P < lanes, else 0
    Py_ssize_t fwd_blocks, forward_wave
    Py_ssize_t col_blocks, data_wave
    FilterKernel filter
    Py_ssize_t k_padded           # transposed: K rounded up to TRN_NV whole vectors
    Py_ssize_t block_images       # transposed: images per block
    Py_ssize_t chunk_images, chunks, wave_chunks  # dot: chunks, chunks staged at once


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline Py_ssize_t clamp(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef Py_ssize_t fill_vectors(Py_ssize_t rows, Py_ssize_t row_len, Py_ssize_t i_stride,
                             Py_ssize_t L, Py_ssize_t* vectors) noexcept nogil:
    """Window and output offsets of the vectors covering rows x row_len
    positions; a row's last vector overlaps its predecessor rather than
    running past the row.  Returns the number of vectors."""
    cdef Py_ssize_t per_row = ceil_div(row_len, L)
    cdef Py_ssize_t i, col, j
    for i in range(rows):
        for col in range(per_row):
            j = col * L
            if j + L > row_len:
                j = max(row_len - L, 0)
            vectors[0] = i * i_stride + j
            vectors[1] = i * row_len + j
            vectors += 2
    return rows * per_row


cdef class Plan:
    """Plan(N, C, H, W, K, R, S, stride, padding, dilation, itemsize)

    How this module computes a convolution of one shape: output size, where
    the input windows are read, offset tables, waves and blocks of images,
    and the workspace each entry point needs.  The arguments must be valid
    (cnnext._functional.conv checks them).  A plan depends on the shape only,
    never on the thread count.

    Attributes
    ----------
    forward_workspace, backward_data_workspace, backward_filter_workspace : int
        Elements (of the data dtype) of scratch memory of each entry point.
    """
    cdef Layout d
    cdef Py_ssize_t* tables
    cdef readonly Py_ssize_t forward_workspace
    cdef readonly Py_ssize_t backward_data_workspace
    cdef readonly Py_ssize_t backward_filter_workspace

    def __cinit__(self):
        self.tables = NULL

    def __dealloc__(self):
        PyMem_Free(self.tables)

    def __init__(self, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                 Py_ssize_t K, Py_ssize_t R, Py_ssize_t S, stride, padding, dilation,
                 Py_ssize_t itemsize):
        cdef Layout* d = &self.d
        cdef Geometry* g = &d.g
        g.N, g.C, g.H, g.W, g.K, g.R, g.S = N, C, H, W, K, R, S
        g.sh, g.sw = stride
        g.ph, g.pw = padding
        g.dh, g.dw = dilation
        g.Ho = (H + 2 * g.ph - g.dh * (R - 1) - 1) // g.sh + 1
        g.Wo = (W + 2 * g.pw - g.dw * (S - 1) - 1) // g.sw + 1
        g.P = g.Ho * g.Wo
        g.CRS = C * R * S
        d.lanes = VEC_BYTES // itemsize
        cdef Py_ssize_t L = d.lanes
        cdef Py_ssize_t budget = max(1, STAGE_BYTES // itemsize)
        cdef Py_ssize_t batch = max(N, 1)
        cdef Py_ssize_t c_stride, r_stride, s_stride, c, r, s, k, tiles, chunks

        # Input windows: in place, padded copies, or im2col panels.
        cdef Py_ssize_t per_row = ceil_div(g.Wo, L)
        if g.sw == 1 and g.Wo >= L and g.Wo >= MIN_ROW_LANE_USE * per_row * L:
            d.rows, d.row_len = g.Ho, g.Wo
            if g.ph == 0 and g.pw == 0:
                d.source = SOURCE_INPUT
                d.padded_h, d.padded_w = H, W
                d.staged_elems = 0
                d.x.image_stride = C * H * W
            else:
                # Only the rows and columns some window reaches.
                d.source = SOURCE_PADDED
                d.padded_h = (g.Ho - 1) * g.sh + (R - 1) * g.dh + 1
                d.padded_w = g.Wo + (S - 1) * g.dw
                d.staged_elems = C * d.padded_h * d.padded_w
                d.x.image_stride = d.staged_elems
            c_stride = d.padded_h * d.padded_w
            r_stride = g.dh * d.padded_w
            s_stride = g.dw
            d.i_stride = g.sh * d.padded_w
        else:
            # One row of P positions per tap, padded to whole vectors.
            d.source = SOURCE_PANEL
            d.rows, d.row_len = 1, g.P
            d.padded_h = 1
            d.padded_w = ceil_div(g.P, L) * L
            d.staged_elems = g.CRS * d.padded_w
            d.x.image_stride = d.staged_elems
            s_stride = d.padded_w
            r_stride = S * d.padded_w
            c_stride = R * S * d.padded_w
            d.i_stride = 0
        d.x.ntaps = g.CRS
        d.x.nvectors = d.rows * ceil_div(d.row_len, L)
        d.x.store_lanes = min(L, d.row_len)

        # gy as the B operand of the input-gradient columns: taps are filters.
        d.gy_elems = K * L if g.P < L else 0
        d.gy.ntaps = K
        d.gy.nvectors = ceil_div(g.P, L)
        d.gy.image_stride = d.gy_elems if d.gy_elems else K * g.P
        d.gy.store_lanes = min(L, g.P)

        self.tables = <Py_ssize_t*>PyMem_Malloc(
            (g.CRS + 2 * d.x.nvectors + K + 2 * d.gy.nvectors) * sizeof(Py_ssize_t))
        if self.tables == NULL:
            raise MemoryError()
        d.x.taps = self.tables
        d.x.vectors = d.x.taps + g.CRS
        d.gy.taps = d.x.vectors + 2 * d.x.nvectors
        d.gy.vectors = d.gy.taps + K
        for c in range(C):
            for r in range(R):
                for s in range(S):
                    d.x.taps[(c * R + r) * S + s] = c * c_stride + r * r_stride + s * s_stride
        fill_vectors(d.rows, d.row_len, d.i_stride, L, d.x.vectors)
        for k in range(K):
            d.gy.taps[k] = k * (L if d.gy_elems else g.P)
        fill_vectors(1, g.P, 0, L, d.gy.vectors)

        # Forward: packed weights and bias, then a wave of staged images.
        d.fwd_blocks = ceil_div(K, FWD_MR)
        d.forward_wave = batch if d.staged_elems == 0 else clamp(
            budget // d.staged_elems, 1, batch)
        self.forward_workspace = (d.fwd_blocks * FWD_MR * (g.CRS + 1)
                                  + d.forward_wave * d.staged_elems)

        # Input gradient: packed transposed weights and zeros (the start
        # values of the tiles), then per image of a wave the columns (CRS, P)
        # and gy padded when P < lanes.
        d.col_blocks = ceil_div(g.CRS, FWD_MR)
        d.data_wave = clamp(budget // (g.CRS * g.P + d.gy_elems), 1, batch)
        self.backward_data_workspace = (d.col_blocks * FWD_MR * K + FWD_MR
                                        + d.data_wave * (g.CRS * g.P + d.gy_elems))

        # Weight gradient.  Many filters: lanes along K, over blocks of images
        # (staged windows and gy^T of a block, then the gw^T accumulators).
        # Few filters: vector partial sums over fixed chunks of images.
        d.k_padded = ceil_div(K, TRN_NV * L) * TRN_NV * L
        if 3 * d.k_padded <= 4 * K:
            d.filter = FILTER_TRANSPOSED
            d.block_images = clamp(
                BLOCK_BYTES // ((g.P * d.k_padded + d.staged_elems) * itemsize), 1, batch)
            self.backward_filter_workspace = (
                d.block_images * (d.staged_elems + g.P * d.k_padded) + g.CRS * d.k_padded)
        else:
            d.filter = FILTER_DOT
            tiles = ceil_div(K, DOT_MR) * ceil_div(g.CRS, DOT_NR)
            chunks = clamp(max(ceil_div(FILTER_ITEMS, tiles),
                               ceil_div(N * d.staged_elems, budget)), 1, batch)
            d.chunk_images = ceil_div(batch, chunks)
            d.chunks = ceil_div(batch, d.chunk_images)
            d.wave_chunks = d.chunks if d.staged_elems == 0 else clamp(
                budget // (d.chunk_images * d.staged_elems), 1, d.chunks)
            self.backward_filter_workspace = (
                d.wave_chunks * d.chunk_images * d.staged_elems
                + (d.chunks * K * g.CRS if d.chunks > 1 else 0))

    @property
    def output_shape(self):
        """(N, K, Ho, Wo)."""
        return (self.d.g.N, self.d.g.K, self.d.g.Ho, self.d.g.Wo)

    @property
    def source(self):
        """Where input windows are read: "input", "padded" or "panel"."""
        return ("input", "padded", "panel")[<int>self.d.source]

    @property
    def filter_kernel(self):
        """How the weight gradient is computed: "dot" or "transposed"."""
        return ("dot", "transposed")[<int>self.d.filter]

    def __repr__(self):
        return (f"Plan(output={self.output_shape}, source={self.source!r}, "
                f"filter_kernel={self.filter_kernel!r}, lanes={self.d.lanes})")


cdef inline int threads_for(Py_ssize_t fmas, Py_ssize_t items) noexcept nogil:
    """Threads worth using for ``fmas`` multiply-adds split into ``items``."""
    cdef Py_ssize_t n = min(<Py_ssize_t>effective_num_threads(), items,
                            fmas // MIN_FMAS_PER_THREAD)
    return <int>max(n, 1)


cdef inline Py_ssize_t vectors_per_item(Py_ssize_t vectors, Py_ssize_t blocks,
                                        int threads) noexcept nogil:
    """Split ``vectors`` into spans of whole tiles so that blocks x spans
    gives every thread several items."""
    cdef Py_ssize_t spans = clamp(ceil_div(ITEMS_PER_THREAD * threads, blocks),
                                  1, ceil_div(vectors, FWD_NV))
    return ceil_div(ceil_div(vectors, spans), FWD_NV) * FWD_NV


# ------------------------------------------------------------------ forward

def conv2d_forward(Plan plan,
                   const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                   const floating[:, :, :, ::1] w,   # IN  (K, C, R, S)
                   const floating[::1] b,            # IN  (K,) or None
                   floating[:, :, :, ::1] y,         # OUT (N, K, Ho, Wo)
                   floating[::1] work):              # TMP plan.forward_workspace
    """conv2d_forward(plan, x, w, b, y, work)

    y = conv2d(x, w, b) for the geometry of ``plan``: per block of FWD_MR
    filters, ``nn_tile`` over the vectors of output positions of a wave of
    images.  The caller has checked every shape against the plan.
    """
    cdef const Layout* d = &plan.d
    cdef const Geometry* g = &d.g
    cdef const floating* bias = NULL
    cdef floating* packed = &work[0]
    cdef floating* bias_packed = packed + d.fwd_blocks * FWD_MR * g.CRS
    cdef floating* staged = bias_packed + d.fwd_blocks * FWD_MR
    cdef const floating* origin
    cdef Py_ssize_t wave, first, count, vectors, span, spans, item, n, blk, start
    cdef int threads
    if b is not None:
        bias = &b[0]
    with nogil:
        pack_forward_weights(&w[0, 0, 0, 0], bias, d, packed)
        for wave in range(ceil_div(g.N, d.forward_wave)):
            first = wave * d.forward_wave
            count = min(d.forward_wave, g.N - first)
            vectors = count * d.x.nvectors
            threads = threads_for(count * g.K * g.CRS * g.P,
                                  d.fwd_blocks * ceil_div(vectors, FWD_NV))
            span = vectors_per_item(vectors, d.fwd_blocks, threads)
            spans = ceil_div(vectors, span)
            origin = staged
            if d.source == SOURCE_INPUT:
                origin = &x[first, 0, 0, 0]
            with parallel(num_threads=threads):
                if d.source != SOURCE_INPUT:
                    for n in prange(count, schedule="static"):
                        stage_image(&x[first + n, 0, 0, 0], d, staged + n * d.staged_elems)
                for item in prange(d.fwd_blocks * spans, schedule="dynamic"):
                    blk = item // spans
                    start = (item % spans) * span
                    nn_tiles(packed + blk * FWD_MR * g.CRS, bias_packed + blk * FWD_MR,
                             origin, &d.x, &y[first, blk * FWD_MR, 0, 0], g.K * g.P, g.P,
                             min(<Py_ssize_t>FWD_MR, g.K - blk * FWD_MR),
                             start, min(start + span, vectors))


# ----------------------------------------------------------- input gradient

def conv2d_backward_data(Plan plan,
                         const floating[:, :, :, ::1] gy,   # IN  (N, K, Ho, Wo)
                         const floating[:, :, :, ::1] w,    # IN  (K, C, R, S)
                         floating[:, :, :, ::1] gx,         # OUT (N, C, H, W)
                         floating[::1] work):               # TMP plan.backward_data_workspace
    """conv2d_backward_data(plan, gy, w, gx, work)

    gx = gradient of sum(gy * conv2d(x, w)) with respect to x: per image the
    columns w^T gy (``nn_tile`` with the filters as taps), then added back
    onto the input positions they came from (col2im).
    """
    cdef const Layout* d = &plan.d
    cdef const Geometry* g = &d.g
    cdef floating* packed = &work[0]
    cdef floating* zeros = packed + d.col_blocks * FWD_MR * g.K
    cdef floating* cols = zeros + FWD_MR
    cdef floating* gy_padded = cols + d.data_wave * g.CRS * g.P
    cdef const floating* origin
    cdef Py_ssize_t wave, first, count, vectors, span, spans, item, n, blk, start, c
    cdef int threads
    with nogil:
        pack_data_weights(&w[0, 0, 0, 0], d, packed)
        for wave in range(ceil_div(g.N, d.data_wave)):
            first = wave * d.data_wave
            count = min(d.data_wave, g.N - first)
            vectors = count * d.gy.nvectors
            threads = threads_for(count * g.K * g.CRS * g.P,
                                  d.col_blocks * ceil_div(vectors, FWD_NV))
            span = vectors_per_item(vectors, d.col_blocks, threads)
            spans = ceil_div(vectors, span)
            origin = gy_padded
            if not d.gy_elems:
                origin = &gy[first, 0, 0, 0]
            with parallel(num_threads=threads):
                if d.gy_elems:
                    for n in prange(count * g.K, schedule="static"):
                        gather_run(&gy[first + n // g.K, n % g.K, 0, 0], g.P, 1, 0,
                                   gy_padded + n * d.lanes, d.lanes)
                for item in prange(d.col_blocks * spans, schedule="dynamic"):
                    blk = item // spans
                    start = (item % spans) * span
                    nn_tiles(packed + blk * FWD_MR * g.K, zeros, origin, &d.gy,
                             cols + blk * FWD_MR * g.P, g.CRS * g.P, g.P,
                             min(<Py_ssize_t>FWD_MR, g.CRS - blk * FWD_MR),
                             start, min(start + span, vectors))
                for item in prange(count * g.C, schedule="dynamic"):
                    n = item // g.C
                    c = item % g.C
                    col2im_channel(cols + (n * g.C + c) * g.R * g.S * g.P, d,
                                   &gx[first + n, c, 0, 0])


# ---------------------------------------------------------- weight gradient

cdef void filter_grad_dot(const floating* gy,   # IN  (N, K, P)
                          const floating* x,    # IN  (N, C, H, W)
                          const Layout* d,
                          floating* gw,         # OUT (K, CRS)
                          floating* work) noexcept nogil:
    """Over fixed chunks of images, partial sums added in chunk order."""
    cdef const Geometry* g = &d.g
    cdef floating* staged = work
    cdef floating* partial = staged + d.wave_chunks * d.chunk_images * d.staged_elems
    cdef Py_ssize_t t_tiles = ceil_div(g.CRS, DOT_NR)
    cdef Py_ssize_t tiles = ceil_div(g.K, DOT_MR) * t_tiles
    cdef Py_ssize_t wave, first_chunk, chunk_count, first, count, item, chunk, n0, tile, n
    cdef Py_ssize_t k0, t0, e, part
    cdef int threads
    cdef floating total
    cdef const floating* origin
    cdef floating* out
    for wave in range(ceil_div(d.chunks, d.wave_chunks)):
        first_chunk = wave * d.wave_chunks
        chunk_count = min(d.wave_chunks, d.chunks - first_chunk)
        first = first_chunk * d.chunk_images
        count = min(chunk_count * d.chunk_images, g.N - first)
        threads = threads_for(count * g.K * g.CRS * g.P, chunk_count * tiles)
        with parallel(num_threads=threads):
            if d.source != SOURCE_INPUT:
                for n in prange(count, schedule="static"):
                    stage_image(x + (first + n) * g.C * g.H * g.W, d,
                                staged + n * d.staged_elems)
            for item in prange(chunk_count * tiles, schedule="dynamic"):
                chunk = item // tiles
                tile = item % tiles
                n0 = chunk * d.chunk_images
                if d.source == SOURCE_INPUT:
                    origin = x + (first + n0) * g.C * g.H * g.W
                else:
                    origin = staged + n0 * d.staged_elems
                k0 = (tile // t_tiles) * DOT_MR
                t0 = (tile % t_tiles) * DOT_NR
                out = gw if d.chunks == 1 else partial + (first_chunk + chunk) * g.K * g.CRS
                dot_tiles(gy + ((first + n0) * g.K + k0) * g.P, g.K - k0, origin, d,
                          min(d.chunk_images, count - n0), t0, t0 + DOT_NR, out + k0 * g.CRS)
    if d.chunks > 1:
        threads = threads_for(d.chunks * g.K * g.CRS, g.K * g.CRS)
        for e in prange(g.K * g.CRS, schedule="static", nogil=True, num_threads=threads):
            total = partial[e]
            for part in range(1, d.chunks):
                total = total + partial[part * g.K * g.CRS + e]
            gw[e] = total


cdef void filter_grad_transposed(const floating* gy,   # IN  (N, K, P)
                                 const floating* x,    # IN  (N, C, H, W)
                                 const Layout* d,
                                 floating* gw,         # OUT (K, CRS)
                                 floating* work) noexcept nogil:
    """gw^T (CRS, k_padded) accumulated over blocks of images, then transposed."""
    cdef const Geometry* g = &d.g
    cdef floating* staged = work
    cdef floating* gyt = staged + d.block_images * d.staged_elems
    cdef floating* state = gyt + d.block_images * g.P * d.k_padded
    cdef Py_ssize_t k_tiles = d.k_padded // (TRN_NV * d.lanes)
    cdef Py_ssize_t tiles = ceil_div(g.CRS, TRN_MR) * k_tiles
    cdef Py_ssize_t block, first, count, item, n, t0, k0, e
    cdef int threads
    cdef const floating* origin
    memset(state, 0, g.CRS * d.k_padded * sizeof(floating))
    for block in range(ceil_div(g.N, d.block_images)):
        first = block * d.block_images
        count = min(d.block_images, g.N - first)
        threads = threads_for(count * g.K * g.CRS * g.P, tiles)
        origin = staged
        if d.source == SOURCE_INPUT:
            origin = x + first * g.C * g.H * g.W
        with parallel(num_threads=threads):
            for n in prange(count, schedule="static"):
                if d.source != SOURCE_INPUT:
                    stage_image(x + (first + n) * g.C * g.H * g.W, d, staged + n * d.staged_elems)
                pack_gy_transposed(gy + (first + n) * g.K * g.P, d, gyt + n * g.P * d.k_padded)
            for item in prange(tiles, schedule="dynamic"):
                t0 = (item // k_tiles) * TRN_MR
                k0 = (item % k_tiles) * TRN_NV * d.lanes
                trn_tiles(origin, gyt + k0, d, count, t0, t0 + TRN_MR, state + k0)
    threads = threads_for(g.K * g.CRS, g.K)
    for e in prange(g.K * g.CRS, schedule="static", nogil=True, num_threads=threads):
        gw[e] = state[(e % g.CRS) * d.k_padded + e // g.CRS]


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
                           floating[::1] work):              # TMP plan.backward_filter_workspace
    """conv2d_backward_filter(plan, gy, x, gw, gb, work)

    gw[k, c, r, s] = sum over images and positions of gy[n, k, i, j] times
    the input under tap (c, r, s) of position (i, j); gb[k] = sum of gy[:, k].
    """
    cdef const Layout* d = &plan.d
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t k
    with nogil:
        if d.filter == FILTER_TRANSPOSED:
            filter_grad_transposed(&gy[0, 0, 0, 0], &x[0, 0, 0, 0], d, &gw[0, 0, 0, 0], &work[0])
        else:
            filter_grad_dot(&gy[0, 0, 0, 0], &x[0, 0, 0, 0], d, &gw[0, 0, 0, 0], &work[0])
        for k in prange(g.K, schedule="static", num_threads=threads_for(g.N * g.K * g.P, g.K)):
            bias_grad(&gy[0, 0, 0, 0], g, k, &gb[0])

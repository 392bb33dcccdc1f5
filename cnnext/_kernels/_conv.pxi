# Convolution kernels (NCHW, float32/float64): the shared source of the
# _conv_baseline, _conv_x86_64_v3 and _conv_x86_64_v4 modules, which setup.py
# compiles with their instruction-set flags.
#
# Layers, top to bottom:
#
# 1. ``Plan`` (built once per shape by cnnext._functional.conv and cached):
#    the algorithm for each pass, where input windows are read, offset
#    tables, waves of staged images and the workspace sizes.
# 2. ``conv2d_forward``, ``conv2d_backward_data``, ``conv2d_backward_filter``:
#    the entry points.  Arguments arrive validated and C-contiguous, outputs
#    and the workspace allocated by the caller.  They release the GIL and
#    split the work into independent items over OpenMP threads (plain loops
#    when one thread suffices: small calls never enter OpenMP).
# 3. Staging copies (_conv_staging.pxi): padded images, im2col panels,
#    packed weights, gy transposed, col2im; Winograd's transforms
#    (_conv_winograd.pxi).
# 4. Register-tile microkernels (_conv_tiles.pxi) over the vector layer
#    (simd.h through simd.pxd: one implementation per instruction set).
#
# Algorithms, chosen per shape by the Plan:
#   forward       Winograd F(2x2, 3x3) for 3x3 stride-1 layers with many
#                 channels and output tiles; otherwise direct: ``nn_tiles``
#                 (output positions as vector lanes, for few filters or long
#                 rows) or ``kfwd_tiles`` (filters as lanes, for many filters,
#                 or about one vector's worth, on short or strided rows; no
#                 im2col).
#   input grad.   with stride 1 and little padding, the forward algorithms
#                 applied to gy and the flipped, transposed filters; with a
#                 larger stride, the same per phase of the input
#                 (_conv_phases.pxi); otherwise columns w^T gy (``nn_tiles``)
#                 scattered back (col2im).
#   weight grad.  ``trn_tiles`` (filters as lanes) for many filters or about
#                 one vector's worth, ``dot_tiles`` (vector partial sums over
#                 positions) for fewer;
#                 the bias gradient rides along while gy is in cache.
#
# Windows.  The direct kernels see the input as, for each tap (c, r, s), a
# window of positions (i, j):
#     origin + c*c_stride + r*r_stride + s*s_stride + i*i_stride + j*j_stride.
# Three sources provide that layout:
#   * the input itself (no padding): no copy;
#   * a zero-padded copy of each image;
#   * an im2col panel, one contiguous row of Ho*Wo positions per tap (for
#     nn_tiles when output rows are too short or strided for the vectors).
# nn_tiles' vectors of positions run along j; a row whose length is not a
# multiple of the vector width ends with a vector that overlaps its
# predecessor (it recomputes, never accumulates, so results are unchanged).
# The Plan turns each layout into tables (the offset of every tap's window,
# of every vector or position), so tiles never divide to find their place.
#
# Determinism.  No result depends on the thread count: every output element is
# computed by exactly one work item, always in the same order.  Where the
# weight gradient is split over images, the chunks are fixed by the shape and
# their partial sums are added in chunk order.

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.pycapsule cimport PyCapsule_New
from cython cimport floating
from cython.parallel cimport prange

from ._openmp_helpers cimport effective_num_threads
from .simd cimport *  # noqa: F403

include "_conv_tiles.pxi"
include "_conv_staging.pxi"
include "_conv_winograd.pxi"

include "_compiled_isa.pxi"

cdef extern from "string.h" nogil:
    void *memcpy(void *dst, const void *src, size_t n)
    void *memset(void *dst, int c, size_t n)


# Staged copies (padded images, im2col panels, input-gradient columns) of at
# most this many bytes per call; larger batches are processed in waves.
cdef Py_ssize_t STAGE_BYTES = 4 << 20
# The input gradient's columns (w^T gy) of a wave of images, kept in L2
# until col2im adds them back.
cdef Py_ssize_t COLS_BYTES = 512 << 10
# The many-filter weight gradient takes images in blocks whose gy^T and
# windows stay in a core's L2 cache while every tile runs over them.
cdef Py_ssize_t BLOCK_BYTES = 512 << 10
# Below this many multiply-adds a call runs on one thread: waking a second
# thread costs more than it saves.
cdef Py_ssize_t MIN_FMAS_PER_THREAD = 1 << 18
# Work items per thread, for balance when a neighbour steals a core.
cdef Py_ssize_t ITEMS_PER_THREAD = 8
# The few-filter weight gradient sums over chunks of images whose gy and
# windows stay in L2 while every tile of taps runs over them.
cdef Py_ssize_t CHUNK_BYTES = 256 << 10
# Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions with at least this many
# input and output channels and 2x2 output tiles per image, of which at least
# 7/8 of the outputs exist: below that the transforms and the tiles hanging
# over odd edges outweigh the saving (16 channels on 28x28 and 64 on 7x7 run
# faster direct on AMD Zen 3 with AVX2 and Zen 4 with AVX-512; 64 on 8x8 does
# not).
cdef Py_ssize_t WINOGRAD_MIN_CHANNELS = 32
cdef Py_ssize_t WINOGRAD_MIN_TILES = 16
# Windows are read in place (or from a padded copy) when at least this share
# of the vector lanes along an output row does useful work; below it, an
# im2col panel packs the positions densely.
cdef double MIN_ROW_LANE_USE = 0.75


# --------------------------------------------------------------------- plan

cdef struct Geometry:
    Py_ssize_t N, C, H, W, K, R, S, Ho, Wo, P, CRS
    Py_ssize_t sh, sw, ph, pw, dh, dw


# Where the input windows are read.
cdef enum Source:
    SOURCE_INPUT = 0      # x in place
    SOURCE_PADDED = 1     # a zero-padded copy of each image
    SOURCE_PANEL = 2      # an im2col panel of each image


# The forward algorithm a Plan is asked for (choices), or AUTO: the
# heuristics below.  WINDOWS is internal: direct windows in place or padded,
# for a weight-gradient layout whose rows need not fill the vectors.
cdef enum ForwardChoice:
    FORWARD_AUTO = 0
    FORWARD_WINOGRAD = 1
    FORWARD_FILTERS = 2   # kfwd_tiles on windows in place or padded
    FORWARD_POSITIONS = 3  # nn_tiles on windows in place or padded
    FORWARD_PANEL = 4     # nn_tiles on an im2col panel
    FORWARD_WINDOWS = 5

FORWARD_NAMES = ("auto", "winograd", "filters", "positions", "panel")


# How the weight gradient is computed.
cdef enum FilterKernel:
    FILTER_DOT = 0         # dot_tiles, over fixed chunks of images
    FILTER_TRANSPOSED = 1  # trn_tiles, over blocks of images


cdef struct Operand:
    # The B operand of nn_tiles for a batch of images: tap t of the q-th
    # vector of positions of image n starts at
    #     origin + n*image_stride + vectors[2q] + taps[t]
    # and that vector's results go to output offset vectors[2q + 1].
    Py_ssize_t ntaps
    Py_ssize_t* taps
    Py_ssize_t nvectors
    Py_ssize_t* vectors
    Py_ssize_t image_stride
    Py_ssize_t store_lanes        # below the vector width when a row is shorter


cdef struct Broadcast:
    # The A operand of kfwd_tiles for a batch of images: tap t of position p
    # of image n is origin[n*image_stride + positions[p] + taps[t]], and the
    # result for position p, filter k goes to
    #     out[n*out_image + p*out_position + k*out_filter].
    Py_ssize_t ntaps
    Py_ssize_t* taps
    Py_ssize_t npositions
    Py_ssize_t* positions
    Py_ssize_t image_stride
    Py_ssize_t out_image, out_position, out_filter


cdef struct Layout:
    # One convolution y = conv(x, w) as the tiles compute it.
    Geometry g
    Py_ssize_t lanes              # vector lanes of the data dtype
    Source source
    Py_ssize_t staged_elems       # per image, 0 when x is read in place
    Py_ssize_t padded_h, padded_w  # zero-padded copy: the rows and columns windows reach
    Py_ssize_t panel_w            # im2col panel rows: P rounded up to whole vectors
    Py_ssize_t rows, row_len      # the positions of one image as rows of windows
    Py_ssize_t i_stride           # window offset from one row to the next
    Py_ssize_t j_stride           # ... and from one column to the next
    Operand x                     # input windows, taps (c, r, s)
    bint by_filters               # kfwd_tiles (filters as lanes), else nn_tiles
    Broadcast xb                  # by_filters: the input windows as kfwd's A operand
    Py_ssize_t group              # filters per block: FWD_MR, or KFW_NV vectors
    Py_ssize_t blocks             # blocks of filters
    bint winograd                 # F(2x2, 3x3) (_conv_winograd.pxi)
    Py_ssize_t tiles_h, tiles_w   # winograd: 2x2 output tiles of an image
    Broadcast vb                  # ... V (16, tiles, C) as kfwd's A operand: taps = channels
    Py_ssize_t wave               # images staged at once


cdef struct Backward:
    # Input gradient by columns and col2im (when it is not a convolution).
    Operand gy                    # gy planes as B operand, taps = filters
    Py_ssize_t gy_elems           # gy padded to a vector per image when P < lanes, else 0
    Py_ssize_t col_blocks         # blocks of FWD_MR taps (c, r, s)
    Py_ssize_t data_wave          # images whose columns are held at once
    # col2im of rows that fit one vector (unit column stride): the column
    # pieces each input row h sums, entries row_starts[h]..row_starts[h+1]-1
    # of row_taps, each (offset in a channel's columns, lo, hi, chain);
    # NULL when rows are longer.
    Py_ssize_t* row_starts
    Py_ssize_t* row_taps
    # Weight gradient.
    FilterKernel filter
    Py_ssize_t k_padded           # transposed: K rounded up to 1, TRN_NV // 2 or TRN_NV vectors
    Py_ssize_t block_images       # transposed: images per block
    Py_ssize_t chunk_images, chunks, wave_chunks  # dot: chunks, chunks staged at once


cdef enum DataKernel:
    DATA_COL2IM = 0        # columns w^T gy scattered back
    DATA_CONV = 1          # a convolution of gy (stride 1)
    DATA_WINOGRAD = 2      # ... computed with Winograd
    DATA_PHASES = 3        # a convolution of gy per phase of the input (strided)


cdef struct ConvStepPlan:
    # What the passes read of a Plan, in one record a step can point to
    # (_conv_steps.pxi): valid while the Plan lives.
    const Layout* d               # the forward convolution
    const Layout* t               # the input gradient's convolution (DATA_CONV/WINOGRAD)
    const Backward* bw
    const Layout* f               # the weight gradient's windows
    const PhaseGrad* ph           # the input gradient's phases (DATA_PHASES)
    DataKernel data_kernel


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


cdef inline bint winograd_tiles_pay(const Geometry* g) noexcept nogil:
    cdef Py_ssize_t tiles = ceil_div(g.Ho, 2) * ceil_div(g.Wo, 2)
    return tiles >= WINOGRAD_MIN_TILES and 8 * g.Ho * g.Wo >= 7 * 4 * tiles


cdef Py_ssize_t* init_layout(Layout* d, Py_ssize_t itemsize, Py_ssize_t budget,
                             bint allow_winograd, bint allow_panel,
                             int choice=FORWARD_AUTO, Py_ssize_t vectors=0) except NULL:
    """Fill the windows of ``d`` (geometry set) and return its tables, which
    the caller owns.  By default (``choice`` AUTO): Winograd for 3x3 stride-1
    layers with many channels (when ``allow_winograd``); many filters:
    kfwd_tiles over windows read in place or from padded copies; few:
    nn_tiles over windows in place, from padded copies, or from im2col panels
    when rows are too short for the vectors (unless ``allow_panel`` is
    false).  Another ``choice`` asks for that algorithm (``vectors``: the
    filter vectors of a kfwd tile, 0 for the default); ValueError when it
    cannot compute this geometry."""
    cdef Geometry* g = &d.g
    cdef Py_ssize_t L = VEC_BYTES // itemsize
    cdef Py_ssize_t per_row, k_padded, c_stride, r_stride, s_stride, c, r, s, i, j
    cdef Py_ssize_t filter_vectors
    cdef Py_ssize_t* tables
    cdef bint rows_fit, winograd_shape
    g.Ho = (g.H + 2 * g.ph - g.dh * (g.R - 1) - 1) // g.sh + 1
    g.Wo = (g.W + 2 * g.pw - g.dw * (g.S - 1) - 1) // g.sw + 1
    g.P = g.Ho * g.Wo
    g.CRS = g.C * g.R * g.S
    d.lanes = L
    per_row = ceil_div(g.Wo, L)
    # Output rows fill the vectors of positions well enough to be read in place.
    rows_fit = g.sw == 1 and g.Wo >= L and g.Wo >= MIN_ROW_LANE_USE * per_row * L
    winograd_shape = (allow_winograd and g.R == 3 and g.S == 3 and g.sh == 1 and g.sw == 1
                      and g.dh == 1 and g.dw == 1)
    if choice == FORWARD_WINOGRAD and not winograd_shape:
        raise ValueError("winograd: needs 3x3 filters, stride 1, dilation 1 (and finite data)")
    if choice == FORWARD_POSITIONS and not (g.sw == 1 and g.Wo >= L):
        raise ValueError(f"positions: needs stride 1 along rows and rows of >= {L} outputs")
    if choice == FORWARD_PANEL and not allow_panel:
        raise ValueError("panel: not for this layout")
    if vectors not in (0, 1, KFW_NV // 2, KFW_NV):
        raise ValueError(f"filter vectors per tile: 1, {KFW_NV // 2} or {KFW_NV}, not {vectors}")
    k_padded = ceil_div(g.K, KFW_NV * L) * KFW_NV * L
    if choice == FORWARD_AUTO:
        d.winograd = (winograd_shape and min(g.C, g.K) >= WINOGRAD_MIN_CHANNELS
                      and 3 * k_padded <= 4 * g.K
                      and winograd_tiles_pay(g))
    else:
        d.winograd = choice == FORWARD_WINOGRAD
    # Filters as lanes: tiles of one vector, or half the widest, when that
    # holds every filter.
    filter_vectors = KFW_NV
    if vectors and not d.winograd:
        filter_vectors = vectors
    elif not d.winograd and g.K <= L:
        filter_vectors = 1
    elif not d.winograd and g.K <= KFW_NV // 2 * L:
        filter_vectors = KFW_NV // 2
    k_padded = ceil_div(g.K, filter_vectors * L) * filter_vectors * L
    if choice == FORWARD_AUTO:
        d.by_filters = not d.winograd and 3 * k_padded <= 4 * g.K and not rows_fit
    else:
        d.by_filters = choice == FORWARD_FILTERS
    # Only the rows and columns some window reaches; Winograd: whole 4x4
    # input patches of 2x2 output tiles.
    d.tiles_h, d.tiles_w = ceil_div(g.Ho, 2), ceil_div(g.Wo, 2)
    if d.winograd:
        d.padded_h, d.padded_w = 2 * d.tiles_h + 2, 2 * d.tiles_w + 2
    else:
        d.padded_h = (g.Ho - 1) * g.sh + (g.R - 1) * g.dh + 1
        d.padded_w = (g.Wo - 1) * g.sw + (g.S - 1) * g.dw + 1
    d.panel_w = 0
    d.x.nvectors = 0
    if choice == FORWARD_PANEL or (choice == FORWARD_AUTO and allow_panel and not (
            d.winograd or d.by_filters or rows_fit)):
        # One row of P positions per tap, copied from a padded copy.
        d.source = SOURCE_PANEL
        d.rows, d.row_len = 1, g.P
        d.panel_w = ceil_div(g.P, L) * L
        d.staged_elems = g.CRS * d.panel_w + g.C * d.padded_h * d.padded_w
        d.x.image_stride = d.staged_elems
        s_stride = d.panel_w
        r_stride = g.S * d.panel_w
        c_stride = g.R * g.S * d.panel_w
        d.i_stride = 0
        d.j_stride = 1
    else:
        d.rows, d.row_len = g.Ho, g.Wo
        if g.ph == 0 and g.pw == 0 and not d.winograd:
            d.source = SOURCE_INPUT
            d.padded_h, d.padded_w = g.H, g.W
            d.staged_elems = 0
            d.x.image_stride = g.C * g.H * g.W
        else:
            d.source = SOURCE_PADDED
            d.staged_elems = g.C * d.padded_h * d.padded_w
            d.x.image_stride = d.staged_elems
        c_stride = d.padded_h * d.padded_w
        r_stride = g.dh * d.padded_w
        s_stride = g.dw
        d.i_stride = g.sh * d.padded_w
        d.j_stride = g.sw
    d.x.ntaps = g.CRS
    if d.by_filters or d.winograd:
        d.group = filter_vectors * L
    else:
        d.group = FWD_MR
        d.x.nvectors = d.rows * ceil_div(d.row_len, L)
        d.x.store_lanes = min(L, d.row_len)
    d.blocks = ceil_div(g.K, d.group)
    d.wave = max(g.N, 1) if d.staged_elems == 0 else clamp(
        budget // (d.staged_elems + winograd_elems(d)), 1, max(g.N, 1))
    # kfwd's A operands: the windows (output NCHW), Winograd's V (output M:
    # 16 x tiles x filters, filters contiguous).
    d.xb.ntaps = g.CRS
    d.xb.npositions = g.P if d.by_filters else 0
    d.xb.image_stride = d.x.image_stride
    d.xb.out_image, d.xb.out_position, d.xb.out_filter = g.K * g.P, 1, g.P
    d.vb.ntaps = g.C if d.winograd else 0
    d.vb.npositions = d.tiles_h * d.tiles_w if d.winograd else 0
    d.vb.image_stride = 16 * d.vb.npositions * g.C
    d.vb.out_image = 16 * d.vb.npositions * d.blocks * d.group
    d.vb.out_position, d.vb.out_filter = d.blocks * d.group, 1
    tables = <Py_ssize_t*>PyMem_Malloc(
        (g.CRS + 2 * d.x.nvectors + d.xb.npositions + d.vb.ntaps + d.vb.npositions)
        * sizeof(Py_ssize_t))
    if tables == NULL:
        raise MemoryError()
    d.x.taps = d.xb.taps = tables
    d.x.vectors = tables + g.CRS
    d.xb.positions = d.x.vectors + 2 * d.x.nvectors
    d.vb.taps = d.xb.positions + d.xb.npositions
    d.vb.positions = d.vb.taps + d.vb.ntaps
    for c in range(g.C):
        for r in range(g.R):
            for s in range(g.S):
                d.x.taps[(c * g.R + r) * g.S + s] = c * c_stride + r * r_stride + s * s_stride
    for i in range(d.xb.npositions):
        d.xb.positions[i] = i // g.Wo * d.i_stride + i % g.Wo * d.j_stride
    if d.x.nvectors:
        fill_vectors(d.rows, d.row_len, d.i_stride, L, d.x.vectors)
    for c in range(d.vb.ntaps):
        d.vb.taps[c] = c
    for i in range(d.vb.npositions):
        d.vb.positions[i] = i * g.C
    return tables


cdef inline Py_ssize_t winograd_elems(const Layout* d) noexcept nogil:
    """Per image, Winograd's V (16, tiles, C) and M (16, tiles, filters padded)."""
    if not d.winograd:
        return 0
    return 16 * d.tiles_h * d.tiles_w * (d.g.C + d.blocks * d.group)


cdef inline Py_ssize_t packed_elems(const Layout* d) noexcept nogil:
    """Packed filters (transformed, for Winograd), then bias or zeros."""
    if d.winograd:
        return d.blocks * d.group * (16 * d.g.C + 1)
    return d.blocks * d.group * (d.g.CRS + 1)


cdef inline Py_ssize_t forward_workspace(const Layout* d) noexcept nogil:
    """Packed filters, then a wave of staged images (and Winograd's V, M)."""
    return packed_elems(d) + d.wave * (d.staged_elems + winograd_elems(d))


CHOICE_KEYS = ("forward", "forward_vectors", "data", "data_forward", "data_vectors", "filter")


cdef int forward_choice(dict choices, str key) except -1:
    name = choices.get(key, "auto")
    if name not in FORWARD_NAMES:
        raise ValueError(f"choices[{key!r}] must be one of {FORWARD_NAMES}, got {name!r}")
    return FORWARD_NAMES.index(name)


cdef str pass_choice(dict choices, str key, tuple names):
    name = choices.get(key, "auto")
    if name not in ("auto", *names):
        raise ValueError(f"choices[{key!r}] must be one of {('auto', *names)}, got {name!r}")
    return name


include "_phases.pxi"
include "_conv_phases.pxi"


cdef class Plan:
    """Plan(N, C, H, W, K, R, S, stride, padding, dilation, itemsize, reformulate=True,
         choices=None)

    How this module computes a convolution of one shape and its gradients:
    output size, where input windows are read, offset tables, waves and
    blocks of images, and the workspace each entry point needs.  The
    arguments must be valid (cnnext._functional.conv checks them).  A plan
    depends on the shape only, never on the thread count.

    ``reformulate=False`` rules out the algorithms that compute terms the
    definition does not have (Winograd's transforms; the input gradient as
    a convolution of zero-padded gy, or one per phase of a strided layer's
    input): they agree on finite data, but with
    NaN or inf in the operands they can give NaN where the direct sum is
    finite (0 * inf, inf - inf).

    ``choices`` (a dict, default: every choice by the built-in heuristics)
    asks for algorithms instead (cnnext._tuning times them): "forward" and
    "data_forward" (the input gradient's convolution) each "winograd",
    "filters", "positions" or "panel"; "forward_vectors" and "data_vectors"
    the filter vectors of a "filters" tile (1, half or all of KFW_NV); "data"
    "conv", "phases" or "col2im"; "filter" "dot" or "transposed"; any of
    them "auto" ("phases" picks the phases' algorithms by the heuristics).
    ValueError when a choice cannot compute this shape.  Every choice gives
    the same result up to rounding; the direct ones (all but Winograd, the
    input gradient as one or more convolutions, and the weight gradient's
    kernel) sum the same terms in the same order.

    Attributes
    ----------
    output_shape : tuple
        (N, K, Ho, Wo).
    forward_workspace, backward_data_workspace, backward_filter_workspace : int
        Elements (of the data dtype) of scratch memory of each entry point.
    choices : dict
        What the plan chose, every key set: ``Plan(..., choices=plan.choices)``
        is the same plan.
    """
    cdef Layout d                 # the forward convolution
    cdef bint data_as_conv        # input gradient = a convolution of gy (stride 1)
    cdef PhaseGrad ph             # ... or one per phase of the input (stride > 1)
    cdef Layout t                 # ... that convolution
    cdef Backward bw
    cdef Layout f                 # the weight gradient's windows: d's, or in place
    cdef ConvStepPlan sp          # pointers to the above, for the passes and steps
    cdef Py_ssize_t* tables[4]
    cdef readonly tuple output_shape
    cdef readonly Py_ssize_t forward_workspace
    cdef readonly Py_ssize_t backward_data_workspace
    cdef readonly Py_ssize_t backward_filter_workspace

    def __cinit__(self):
        self.tables[0] = self.tables[1] = self.tables[2] = self.tables[3] = NULL
        self.ph.phases = NULL

    def __dealloc__(self):
        for i in range(4):
            PyMem_Free(self.tables[i])
        free_phases(&self.ph)

    def __init__(self, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                 Py_ssize_t K, Py_ssize_t R, Py_ssize_t S, stride, padding, dilation,
                 Py_ssize_t itemsize, bint reformulate=True, dict choices=None):
        cdef Layout* d = &self.d
        cdef Geometry* g = &d.g
        cdef Backward* bw = &self.bw
        cdef Py_ssize_t budget = max(1, STAGE_BYTES // itemsize)
        cdef Py_ssize_t batch = max(N, 1)
        cdef Py_ssize_t L, k, row_entries
        cdef bint transposed, phases
        if choices is None:
            choices = {}
        unknown = set(choices) - set(CHOICE_KEYS)
        if unknown:
            raise ValueError(f"choices: unknown {sorted(unknown)} (keys: {CHOICE_KEYS})")
        data = pass_choice(choices, "data", ("conv", "phases", "col2im"))
        filter_name = pass_choice(choices, "filter", ("dot", "transposed"))
        g.N, g.C, g.H, g.W, g.K, g.R, g.S = N, C, H, W, K, R, S
        g.sh, g.sw = stride
        g.ph, g.pw = padding
        g.dh, g.dw = dilation
        self.tables[0] = init_layout(d, itemsize, budget, reformulate, True,
                                     forward_choice(choices, "forward"),
                                     choices.get("forward_vectors", 0))
        self.output_shape = (N, K, g.Ho, g.Wo)
        L = d.lanes
        self.forward_workspace = forward_workspace(d)

        # Input gradient.  With stride 1 it is the convolution of gy with the
        # flipped, transposed filters and padding d*(R-1) - p, when that is
        # not negative, the C output channels fill blocks of FWD_MR rows and
        # the padding adds few zero terms (that convolution has H*W outputs
        # to col2im's Ho*Wo columns: 169 to 81 for lenet-2's 5x5 filters on
        # 13x13 images).  A larger stride (dilation 1): one such convolution
        # per phase of the input (_conv_phases.pxi).  Otherwise columns w^T
        # gy scattered back (col2im).
        self.data_as_conv = (reformulate and g.sh == 1 and g.sw == 1
                             and g.ph <= g.dh * (R - 1) and g.pw <= g.dw * (S - 1))
        phases = (reformulate and (g.sh > 1 or g.sw > 1) and g.dh == 1 and g.dw == 1)
        if data == "conv" and not self.data_as_conv:
            raise ValueError("data 'conv': needs stride 1, padding <= dilation * (size - 1) "
                             "and finite data")
        if data == "phases" and not phases:
            raise ValueError("data 'phases': needs a stride above 1, dilation 1 and finite data")
        if data == "auto":
            self.data_as_conv = (self.data_as_conv and 4 * C >= 3 * ceil_div(C, FWD_MR) * FWD_MR
                                 and 2 * H * W <= 3 * g.P)
            # Filters no larger than the stride: no input position sums two
            # taps, and col2im's scatter is a plain copy.
            phases = phases and (R > g.sh or S > g.sw)
        else:
            self.data_as_conv = data == "conv"
            phases = data == "phases"
        if phases:
            init_phases(&self.ph, g, itemsize, budget)
            self.backward_data_workspace = phases_workspace(&self.ph)
        elif self.data_as_conv:
            self.t.g.N, self.t.g.C, self.t.g.H, self.t.g.W = N, K, g.Ho, g.Wo
            self.t.g.K, self.t.g.R, self.t.g.S = C, R, S
            self.t.g.sh = self.t.g.sw = 1
            self.t.g.ph, self.t.g.pw = g.dh * (R - 1) - g.ph, g.dw * (S - 1) - g.pw
            self.t.g.dh, self.t.g.dw = g.dh, g.dw
            self.tables[1] = init_layout(&self.t, itemsize, budget, reformulate, True,
                                         forward_choice(choices, "data_forward"),
                                         choices.get("data_vectors", 0))
            self.backward_data_workspace = forward_workspace(&self.t)
        else:
            bw.gy_elems = K * L if g.P < L else 0
            bw.gy.ntaps = K
            bw.gy.nvectors = ceil_div(g.P, L)
            bw.gy.image_stride = bw.gy_elems if bw.gy_elems else K * g.P
            bw.gy.store_lanes = min(L, g.P)
            row_entries = (H + 1 + 4 * H * R * S) if g.sw == 1 and W <= L else 0
            self.tables[2] = <Py_ssize_t*>PyMem_Malloc(
                (K + 2 * bw.gy.nvectors + row_entries) * sizeof(Py_ssize_t))
            if self.tables[2] == NULL:
                raise MemoryError()
            bw.gy.taps = self.tables[2]
            bw.gy.vectors = self.tables[2] + K
            for k in range(K):
                bw.gy.taps[k] = k * (L if bw.gy_elems else g.P)
            fill_vectors(1, g.P, 0, L, bw.gy.vectors)
            bw.row_starts = bw.row_taps = NULL
            if row_entries:
                bw.row_starts = bw.gy.vectors + 2 * bw.gy.nvectors
                bw.row_taps = bw.row_starts + H + 1
                fill_row_taps(g, bw.row_starts, bw.row_taps)
            bw.col_blocks = ceil_div(g.CRS, FWD_MR)
            # Columns of a wave small enough to stay in L2 until col2im reads them.
            bw.data_wave = clamp(min(budget, COLS_BYTES // itemsize)
                                 // (g.CRS * g.P + bw.gy_elems), 1, batch)
            # Packed w^T and zeros (the tiles' start values), then per image
            # of a wave the columns (CRS, P) and the padded gy.
            self.backward_data_workspace = (bw.col_blocks * FWD_MR * (K + 1)
                                            + bw.data_wave * (g.CRS * g.P + bw.gy_elems))

        # Weight gradient.  Many filters: lanes along K, over blocks of images
        # (per image of a block its staged windows, gy^T and bias sums; then
        # the gw^T accumulators).  Few filters: vector partial sums over
        # fixed chunks of images (staged windows; per chunk gw and gb sums).
        # Lanes for one vector of filters, half the widest tile's vectors, or
        # whole widest tiles, whichever holds every filter first.
        if K <= L:
            bw.k_padded = L
        elif K <= TRN_NV // 2 * L:
            bw.k_padded = ceil_div(K, TRN_NV // 2 * L) * (TRN_NV // 2) * L
        else:
            bw.k_padded = ceil_div(K, TRN_NV * L) * TRN_NV * L
        # (dot_tiles needs windows contiguous along rows, which layouts with
        # filters as lanes do not promise.)  trn_tiles reads any windows: in
        # place or padded rather than from an im2col panel, which would cost
        # as much as the tiles (strided layers, short rows).
        self.f = self.d
        if filter_name == "auto":
            transposed = 3 * bw.k_padded <= 4 * K or d.by_filters
        else:
            transposed = filter_name == "transposed"
        if transposed:
            bw.filter = FILTER_TRANSPOSED
            if d.source == SOURCE_PANEL:
                self.tables[3] = init_layout(&self.f, itemsize, budget, False, False)
            bw.block_images = clamp(
                BLOCK_BYTES // ((g.P * bw.k_padded + self.f.staged_elems) * itemsize), 1, batch)
            self.backward_filter_workspace = (
                bw.block_images * (self.f.staged_elems + g.P * bw.k_padded + K)
                + g.CRS * bw.k_padded)
        else:
            bw.filter = FILTER_DOT
            if d.winograd or d.j_stride != 1:
                # dot_tiles reads rows of windows contiguous along j.
                self.tables[3] = init_layout(
                    &self.f, itemsize, budget, False, True,
                    FORWARD_WINDOWS if g.sw == 1 else FORWARD_PANEL)
            bw.chunk_images = clamp(
                CHUNK_BYTES // ((K * g.P + self.f.staged_elems) * itemsize), 1, batch)
            bw.chunks = ceil_div(batch, bw.chunk_images)
            bw.wave_chunks = bw.chunks if self.f.staged_elems == 0 else clamp(
                budget // (bw.chunk_images * self.f.staged_elems), 1, bw.chunks)
            self.backward_filter_workspace = (
                bw.wave_chunks * bw.chunk_images * self.f.staged_elems
                + (bw.chunks * K * (g.CRS + 1) if bw.chunks > 1 else 0))

        self.sp.d, self.sp.t, self.sp.bw, self.sp.f = &self.d, &self.t, &self.bw, &self.f
        self.sp.ph = &self.ph
        self.sp.data_kernel = (DATA_PHASES if self.ph.phases != NULL
                               else DATA_COL2IM if not self.data_as_conv
                               else DATA_WINOGRAD if self.t.winograd else DATA_CONV)

    def step_plan(self):
        """step_plan()

        A PyCapsule (named "cnnext.conv_plan") of this plan's layouts, which
        the step kernels of this module take as ``plan[0]`` / ``plan[1]``;
        valid while the plan lives (the executor keeps a reference).
        """
        return PyCapsule_New(<void*>&self.sp, b"cnnext.conv_plan", NULL)

    @property
    def source(self):
        """Where the forward pass reads input windows: "input", "padded" or "panel"."""
        return ("input", "padded", "panel")[<int>self.d.source]

    @property
    def forward_lanes(self):
        """The forward pass: "winograd", or what the vector lanes of the direct
        kernels run along: "positions" or "filters"."""
        if self.d.winograd:
            return "winograd"
        return "filters" if self.d.by_filters else "positions"

    @property
    def filters_per_tile(self):
        """Filters one register tile of the forward pass computes: one or a
        few vectors' worth when the filters are the lanes (Winograd
        included), else a few rows of the output."""
        return self.d.group

    @property
    def data_kernel(self):
        """How the input gradient is computed: a convolution of gy ("conv", or
        "winograd"), one per phase of the input ("phases") or "col2im"."""
        return ("col2im", "conv", "winograd", "phases")[<int>self.sp.data_kernel]

    @property
    def filter_kernel(self):
        """How the weight gradient is computed: "dot" or "transposed"."""
        return ("dot", "transposed")[<int>self.bw.filter]

    @property
    def choices(self):
        """What this plan chose (see the class docstring), every key set."""
        return {"forward": layout_choice(&self.d), "forward_vectors": layout_vectors(&self.d),
                "data": "col2im" if self.data_kernel == "col2im" else (
                    "phases" if self.data_kernel == "phases" else "conv"),
                "data_forward": layout_choice(&self.t) if self.data_as_conv else "auto",
                "data_vectors": layout_vectors(&self.t) if self.data_as_conv else 0,
                "filter": self.filter_kernel}

    def __repr__(self):
        return (f"Plan(output={self.output_shape}, source={self.source!r}, "
                f"forward_lanes={self.forward_lanes!r}, data_kernel={self.data_kernel!r}, "
                f"filter_kernel={self.filter_kernel!r}, lanes={self.d.lanes})")


cdef str layout_choice(const Layout* d):
    if d.winograd:
        return "winograd"
    if d.by_filters:
        return "filters"
    return "panel" if d.source == SOURCE_PANEL else "positions"


cdef Py_ssize_t layout_vectors(const Layout* d) noexcept:
    return d.group // d.lanes if d.by_filters else 0


cdef void fill_row_taps(const Geometry* g, Py_ssize_t* starts,
                        Py_ssize_t* taps) noexcept nogil:
    """col2im's pieces per input row h (see Backward.row_taps): tap (r, s) at
    output row i (i*sh + r*dh - ph = h) gives lanes x in [lo, hi) the column
    j = x + pw - s*dw; chains alternate with s (two sums hide the adder
    latency)."""
    cdef Py_ssize_t h, r, s, i, j0, lo, hi, n = 0
    for h in range(g.H):
        starts[h] = n
        for r in range(g.R):
            i = h + g.ph - r * g.dh
            if i < 0 or i % g.sh != 0 or i // g.sh >= g.Ho:
                continue
            i = i // g.sh
            for s in range(g.S):
                j0 = g.pw - s * g.dw
                lo = max(-j0, 0)
                hi = min(g.W, g.Wo - j0)
                if lo >= hi:
                    continue
                taps[4 * n] = (r * g.S + s) * g.P + i * g.Wo + j0
                taps[4 * n + 1] = lo
                taps[4 * n + 2] = hi
                taps[4 * n + 3] = s % 2
                n += 1
    starts[g.H] = n


cdef inline int threads_for(Py_ssize_t fmas, Py_ssize_t items) noexcept nogil:
    """Threads worth using for ``fmas`` multiply-adds split into ``items``."""
    cdef Py_ssize_t n = min(<Py_ssize_t>effective_num_threads(), items,
                            fmas // MIN_FMAS_PER_THREAD)
    return <int>max(n, 1)


cdef struct Split:
    # Work items of nn_tiles: spans of vectors x groups of blocks.
    Py_ssize_t span, spans, per_group, groups


cdef Split split_tiles(Py_ssize_t units, Py_ssize_t tile, Py_ssize_t blocks,
                       int threads) noexcept nogil:
    """Spans of whole tiles (of ``tile`` units: vectors or positions) over all
    blocks each, so a tile's windows are reused from cache, when there are
    enough; groups of blocks as well otherwise."""
    cdef Split sp
    cdef Py_ssize_t tiles = ceil_div(units, tile)
    cdef Py_ssize_t wanted = ITEMS_PER_THREAD * threads
    sp.groups = clamp(ceil_div(wanted, tiles), 1, blocks)
    sp.per_group = ceil_div(blocks, sp.groups)
    sp.groups = ceil_div(blocks, sp.per_group)
    sp.span = ceil_div(tiles, clamp(ceil_div(wanted, sp.groups), 1, tiles)) * tile
    sp.spans = ceil_div(units, sp.span)
    return sp


# ------------------------------------------------------------------ forward

cdef void stage_images(const floating* x,   # IN  (count, C, H, W)
                       const Layout* d,
                       Py_ssize_t count, int threads,
                       floating* staged) noexcept nogil:  # OUT (count, staged_elems)
    cdef Py_ssize_t image = d.g.C * d.g.H * d.g.W
    cdef Py_ssize_t n
    if threads == 1:
        for n in range(count):
            stage_image(x + n * image, d, staged + n * d.staged_elems)
    else:
        for n in prange(count, num_threads=threads, schedule="dynamic"):
            stage_image(x + n * image, d, staged + n * d.staged_elems)


cdef void nn_items(const floating* a, const floating* init, Py_ssize_t rows,
                   Py_ssize_t blocks, const floating* origin, const Operand* op,
                   floating* out, Py_ssize_t out_image_stride, Py_ssize_t out_stride,
                   Py_ssize_t vectors, int threads, bint relu) noexcept nogil:
    """``nn_tiles`` over all vectors and blocks, split into items over threads."""
    cdef Split sp
    cdef Py_ssize_t item, blk, start
    if threads == 1:
        nn_tiles(a, init, rows, 0, blocks, origin, op, out, out_image_stride, out_stride,
                 0, vectors, relu)
        return
    sp = split_tiles(vectors, FWD_NV, blocks, threads)
    for item in prange(sp.groups * sp.spans, num_threads=threads, schedule="dynamic"):
        blk = (item // sp.spans) * sp.per_group
        start = (item % sp.spans) * sp.span
        nn_tiles(a, init, rows, blk, min(blk + sp.per_group, blocks), origin, op,
                 out, out_image_stride, out_stride, start, min(start + sp.span, vectors), relu)


cdef void kfwd_items(const tile_width* width, const floating* packed, const Layout* d,
                     const floating* origin, floating* y, Py_ssize_t positions,
                     int threads, bint relu) noexcept nogil:
    """``kfwd_tiles`` of that width over all positions and blocks, split into
    items over threads."""
    cdef const Geometry* g = &d.g
    cdef const floating* bias = packed + d.blocks * d.group * g.CRS
    cdef Split sp
    cdef Py_ssize_t item, blk, start
    if threads == 1:
        for blk in range(d.blocks):
            kfwd_tiles(width, packed + blk * d.group * g.CRS, bias + blk * d.group,
                       g.K - blk * d.group, origin, &d.xb, y + blk * d.group * g.P, 0, positions,
                       relu)
        return
    sp = split_tiles(positions, kfw_rows(width), d.blocks, threads)
    for item in prange(sp.groups * sp.spans, num_threads=threads, schedule="dynamic"):
        start = (item % sp.spans) * sp.span
        for blk in range((item // sp.spans) * sp.per_group,
                         min((item // sp.spans + 1) * sp.per_group, d.blocks)):
            kfwd_tiles(width, packed + blk * d.group * g.CRS, bias + blk * d.group,
                       g.K - blk * d.group, origin, &d.xb, y + blk * d.group * g.P,
                       start, min(start + sp.span, positions), relu)


cdef void forward_pass(const floating* x,        # IN  (N, C, H, W) of layout d
                       const floating* packed,   # IN  pack_weights of layout d
                       const Layout* d, bint relu,
                       floating* y,              # OUT (N, K, Ho, Wo)
                       floating* staged) noexcept nogil:  # TMP a wave of staged images
    """y = conv(x) of layout ``d`` (then ReLU, with ``relu``), wave after
    wave of images.  Separate parallel loops (each ends with a barrier): staging, then tiles."""
    cdef const Geometry* g = &d.g
    cdef const floating* origin
    cdef Py_ssize_t wave, first, count, vectors
    cdef Py_ssize_t image = g.C * g.H * g.W
    cdef int threads
    for wave in range(ceil_div(g.N, d.wave)):
        first = wave * d.wave
        count = min(d.wave, g.N - first)
        threads = threads_for(count * g.K * g.CRS * g.P,
                              d.blocks * ceil_div(count * g.P, KFW_MR))
        origin = x + first * image
        if d.source != SOURCE_INPUT:
            stage_images(origin, d, count, threads, staged)
            origin = staged
        if d.by_filters and d.group == d.lanes:
            kfwd_items(<const NarrowTile*>NULL, packed, d, origin, y + first * g.K * g.P,
                       count * g.P, threads, relu)
        elif d.by_filters and d.group == KFW_NV // 2 * d.lanes:
            kfwd_items(<const HalfTile*>NULL, packed, d, origin, y + first * g.K * g.P,
                       count * g.P, threads, relu)
        elif d.by_filters:
            kfwd_items(<const WideTile*>NULL, packed, d, origin, y + first * g.K * g.P,
                       count * g.P, threads, relu)
        else:
            vectors = count * d.x.nvectors
            nn_items(packed, packed + d.blocks * FWD_MR * g.CRS, g.K, d.blocks, origin, &d.x,
                     y + first * g.K * g.P, g.K * g.P, g.P, vectors, threads, relu)


cdef void convolve(const floating* x,     # IN  (N, C, H, W) of layout d
                   const floating* w,     # IN  (K, C, R, S), or w of the forward if flipped
                   const floating* bias,  # IN  (K,) or NULL
                   const Layout* d,
                   bint flipped,          # d is the input gradient's convolution
                   bint relu,             # ReLU as the results are stored
                   floating* y,           # OUT (N, K, Ho, Wo)
                   floating* work) noexcept nogil:  # TMP forward_workspace(d)
    if d.winograd:
        winograd_filters(w, d, flipped, work)
        winograd_pass(x, work, bias, d, relu, y, work + packed_elems(d))
    else:
        pack_weights(w, bias, d, flipped, work)
        forward_pass(x, work, d, relu, y, work + packed_elems(d))


def conv2d_forward(Plan plan,
                   const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                   const floating[:, :, :, ::1] w,   # IN  (K, C, R, S)
                   const floating[::1] b,            # IN  (K,) or None
                   floating[:, :, :, ::1] y,         # OUT (N, K, Ho, Wo)
                   floating[::1] work,               # TMP plan.forward_workspace
                   bint relu=False):
    """conv2d_forward(plan, x, w, b, y, work, relu=False)

    y = conv2d(x, w, b) for the geometry of ``plan``: ``nn_tiles`` over the
    vectors of output positions and the blocks of FWD_MR filters; with
    ``relu``, relu(conv2d(x, w, b)), ReLU applied as the tiles store.  The
    caller has checked every shape against the plan.
    """
    cdef const floating* bias = NULL
    if b is not None:
        bias = &b[0]
    with nogil:
        convolve(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bias, plan.sp.d, False, relu, &y[0, 0, 0, 0],
                 &work[0])


# ----------------------------------------------------------- input gradient

cdef void col2im_images(const floating* cols,   # IN  (count, CRS, P)
                        const Layout* d, const Backward* bw,
                        Py_ssize_t count, int threads,
                        floating* gx) noexcept nogil:  # OUT (count, C, H, W)
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t item
    if threads == 1:
        for item in range(count * g.C):
            col2im_channel(cols + item * g.R * g.S * g.P, d, bw, gx + item * g.H * g.W)
    else:
        for item in prange(count * g.C, num_threads=threads, schedule="dynamic"):
            col2im_channel(cols + item * g.R * g.S * g.P, d, bw, gx + item * g.H * g.W)


cdef void pad_gy(const floating* gy,    # IN  (count * K, P)
                 Py_ssize_t rows, Py_ssize_t P, Py_ssize_t L, int threads,
                 floating* padded) noexcept nogil:  # OUT (count * K, L), zeros past P
    cdef Py_ssize_t n
    if threads == 1:
        for n in range(rows):
            gather_run(gy + n * P, P, 1, 0, padded + n * L, L)
    else:
        for n in prange(rows, num_threads=threads, schedule="dynamic"):
            gather_run(gy + n * P, P, 1, 0, padded + n * L, L)


cdef void data_grad_col2im(const floating* gy,    # IN  (N, K, Ho, Wo)
                           const floating* w,     # IN  (K, CRS)
                           const Layout* d, const Backward* bw,
                           floating* gx,          # OUT (N, C, H, W)
                           floating* work) noexcept nogil:
    """Per image the columns w^T gy (``nn_tiles`` with the filters as taps),
    added back onto the input positions they came from."""
    cdef const Geometry* g = &d.g
    cdef floating* packed = work
    cdef floating* zeros = packed + bw.col_blocks * FWD_MR * g.K
    cdef floating* cols = zeros + bw.col_blocks * FWD_MR
    cdef floating* gy_padded = cols + bw.data_wave * g.CRS * g.P
    cdef const floating* origin
    cdef Py_ssize_t wave, first, count, vectors
    cdef int threads
    pack_columns_weights(w, d, bw, packed)
    for wave in range(ceil_div(g.N, bw.data_wave)):
        first = wave * bw.data_wave
        count = min(bw.data_wave, g.N - first)
        vectors = count * bw.gy.nvectors
        threads = threads_for(count * g.K * g.CRS * g.P,
                              bw.col_blocks * ceil_div(vectors, FWD_NV))
        origin = gy + first * g.K * g.P
        if bw.gy_elems:
            pad_gy(origin, count * g.K, g.P, d.lanes, threads, gy_padded)
            origin = gy_padded
        nn_items(packed, zeros, g.CRS, bw.col_blocks, origin, &bw.gy, cols, g.CRS * g.P, g.P,
                 vectors, threads, False)
        col2im_images(cols, d, bw, count, threads, gx + first * g.C * g.H * g.W)


# Elements per work item of the ReLU mask, and the count below which it
# stays on the calling thread.
cdef Py_ssize_t MASK_CHUNK = 1 << 15
cdef Py_ssize_t MIN_PARALLEL_MASK = 1 << 16


cdef inline void relu_mask_span(const floating* gy,  # IN  (count,)
                                const floating* y,   # IN  (count,) relu's output
                                Py_ssize_t count,
                                floating* out) noexcept nogil:  # OUT (count,)
    cdef Py_ssize_t i
    cdef floating gradient
    for i in range(count):
        # relu's output is > 0 or NaN exactly where its input is, so this is
        # relu_backward's select (NaN passes) on the stored output.
        gradient = gy[i]
        out[i] = gradient if not (y[i] <= 0) else 0


cdef void relu_mask(const floating* gy,   # IN  (count,)
                    const floating* y,    # IN  (count,) relu's output
                    Py_ssize_t count,
                    floating* out) noexcept nogil:  # OUT (count,) gy where y > 0 or NaN, else 0
    cdef Py_ssize_t chunk
    cdef int threads = 1
    if count >= MIN_PARALLEL_MASK:
        threads = effective_num_threads()
    if threads == 1:
        relu_mask_span(gy, y, count, out)
        return
    for chunk in prange(ceil_div(count, MASK_CHUNK), num_threads=threads, schedule="static"):
        relu_mask_span(gy + chunk * MASK_CHUNK, y + chunk * MASK_CHUNK,
                       min(MASK_CHUNK, count - chunk * MASK_CHUNK), out + chunk * MASK_CHUNK)


def conv2d_relu_mask(const floating[::1] gy,   # IN  gradient of relu(conv2d(...))
                     const floating[::1] y,    # IN  relu(conv2d(...))
                     floating[::1] out):       # OUT
    """conv2d_relu_mask(gy, y, out)

    out = gy where y > 0 or y is NaN, else +0.0: the gradient that reaches
    the convolution of relu(conv2d(...)), from ReLU's stored output (the
    same select as relu_backward on its input), flat arrays of one size.
    """
    with nogil:
        relu_mask(&gy[0], &y[0], gy.shape[0], &out[0])


def conv2d_backward_data(Plan plan,
                         const floating[:, :, :, ::1] gy,   # IN  (N, K, Ho, Wo)
                         const floating[:, :, :, ::1] w,    # IN  (K, C, R, S)
                         floating[:, :, :, ::1] gx,         # OUT (N, C, H, W)
                         floating[::1] work):               # TMP plan.backward_data_workspace
    """conv2d_backward_data(plan, gy, w, gx, work)

    gx = gradient of sum(gy * conv2d(x, w)) with respect to x.  With stride 1
    a convolution of gy with the flipped, transposed filters; with a larger
    one, such a convolution per phase of the input; otherwise the columns
    w^T gy of each image scattered back (col2im).
    """
    with nogil:
        backward_data_pass(&gy[0, 0, 0, 0], &w[0, 0, 0, 0], &plan.sp, &gx[0, 0, 0, 0], &work[0])


cdef void backward_data_pass(const floating* gy,   # IN  (N, K, Ho, Wo)
                             const floating* w,    # IN  (K, C, R, S)
                             const ConvStepPlan* sp,
                             floating* gx,         # OUT (N, C, H, W)
                             floating* work) noexcept nogil:  # TMP backward_data_workspace
    if sp.data_kernel == DATA_PHASES:
        data_grad_phases(gy, w, &sp.d.g, sp.ph, gx, work)
    elif sp.data_kernel != DATA_COL2IM:
        convolve(gy, w, NULL, sp.t, True, False, gx, work)
    else:
        data_grad_col2im(gy, w, sp.d, sp.bw, gx, work)


# ---------------------------------------------------------- weight gradient

cdef void dot_item(const floating* gy,        # IN  (count, K, P) of the wave
                   const floating* origin,    # IN  windows of the wave's first image
                   const Layout* d, const Backward* bw,
                   Py_ssize_t count, Py_ssize_t chunk, Py_ssize_t k0,
                   Py_ssize_t t0, Py_ssize_t t1,
                   floating* gw,              # OUT (K, CRS) sums of the chunk
                   floating* gb) noexcept nogil:  # OUT (K,) sums of the chunk
    """Taps t0..t1-1 of filters k0.. over one chunk; the group of tap 0 also
    sums the chunk's gy planes (still in cache) for gb."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t n0 = chunk * bw.chunk_images
    cdef Py_ssize_t images = min(bw.chunk_images, count - n0)
    cdef Py_ssize_t k
    dot_tiles(gy + (n0 * g.K + k0) * g.P, g.K - k0, origin + n0 * d.x.image_stride, d,
              images, t0, t1, gw + k0 * g.CRS)
    if t0 == 0:
        for k in range(k0, min(k0 + DOT_MR, g.K)):
            gb[k] = plane_sum(gy + (n0 * g.K + k) * g.P, g.P, images, g.K * g.P)


cdef void filter_grad_dot(const floating* gy,   # IN  (N, K, P)
                          const floating* x,    # IN  (N, C, H, W)
                          const Layout* d, const Backward* bw,
                          floating* gw,         # OUT (K, CRS)
                          floating* gb,         # OUT (K,)
                          floating* work) noexcept nogil:
    """Over fixed chunks of images, partial sums added in chunk order."""
    cdef const Geometry* g = &d.g
    cdef floating* staged = work
    cdef floating* partial = staged + bw.wave_chunks * bw.chunk_images * d.staged_elems
    cdef Py_ssize_t k_tiles = ceil_div(g.K, DOT_MR)
    cdef Py_ssize_t t_tiles = ceil_div(g.CRS, DOT_NR)
    cdef Py_ssize_t wave, first_chunk, chunks, first, count, item, chunk, k0, t0
    cdef Py_ssize_t groups, per_group, e, part
    cdef Py_ssize_t sums = g.K * (g.CRS + 1)    # per chunk: gw then gb
    cdef int threads
    cdef floating total
    cdef const floating* origin
    cdef floating* out
    for wave in range(ceil_div(bw.chunks, bw.wave_chunks)):
        first_chunk = wave * bw.wave_chunks
        chunks = min(bw.wave_chunks, bw.chunks - first_chunk)
        first = first_chunk * bw.chunk_images
        count = min(chunks * bw.chunk_images, g.N - first)
        threads = threads_for(count * g.K * g.CRS * g.P, chunks * k_tiles * t_tiles)
        origin = x + first * g.C * g.H * g.W
        if d.source != SOURCE_INPUT:
            stage_images(origin, d, count, threads, staged)
            origin = staged
        # Each item runs a group of tap tiles over one chunk (data reused
        # from L2); groups only as small as needed to feed the threads.
        groups = clamp(ceil_div(ITEMS_PER_THREAD * threads, chunks * k_tiles), 1, t_tiles)
        per_group = ceil_div(t_tiles, groups) * DOT_NR
        groups = ceil_div(g.CRS, per_group)
        if threads == 1:
            for item in range(chunks * k_tiles):
                chunk = item // k_tiles
                out = partial + (first_chunk + chunk) * sums
                if bw.chunks == 1:
                    dot_item(gy + first * g.K * g.P, origin, d, bw, count, chunk,
                             item % k_tiles * DOT_MR, 0, g.CRS, gw, gb)
                else:
                    dot_item(gy + first * g.K * g.P, origin, d, bw, count, chunk,
                             item % k_tiles * DOT_MR, 0, g.CRS, out, out + g.K * g.CRS)
        else:
            for item in prange(chunks * k_tiles * groups, num_threads=threads,
                               schedule="dynamic"):
                chunk = item // (k_tiles * groups)
                k0 = (item // groups) % k_tiles * DOT_MR
                t0 = item % groups * per_group
                out = partial + (first_chunk + chunk) * sums
                if bw.chunks == 1:
                    dot_item(gy + first * g.K * g.P, origin, d, bw, count, chunk, k0,
                             t0, min(t0 + per_group, g.CRS), gw, gb)
                else:
                    dot_item(gy + first * g.K * g.P, origin, d, bw, count, chunk, k0,
                             t0, min(t0 + per_group, g.CRS), out, out + g.K * g.CRS)
    if bw.chunks > 1:
        # Chunk sums in chunk order (few filters: a small loop).
        for e in range(sums):
            total = partial[e]
            for part in range(1, bw.chunks):
                total = total + partial[part * sums + e]
            if e < g.K * g.CRS:
                gw[e] = total
            else:
                gb[e - g.K * g.CRS] = total


cdef void pack_image(const floating* gy,      # IN  (K, P) one image
                     const Geometry* g, Py_ssize_t kp,
                     floating* gyt,           # OUT (P, kp) gy^T, zeros past K
                     floating* sums) noexcept nogil:  # OUT (K,) sums of the planes
    cdef Py_ssize_t k
    pack_gy_transposed(gy, g, kp, gyt)
    for k in range(g.K):
        sums[k] = plane_sum(gy + k * g.P, g.P, 1, g.P)


cdef void pack_block_image(const floating* gy,   # IN  (K, P) one image
                           const floating* x,    # IN  (C, H, W) one image
                           const Layout* d, const Backward* bw,
                           floating* staged,     # OUT staged_elems when staging
                           floating* gyt,        # OUT (P, k_padded)
                           floating* sums) noexcept nogil:  # OUT (K,) bias sums
    if d.source != SOURCE_INPUT:
        stage_image(x, d, staged)
    pack_image(gy, &d.g, bw.k_padded, gyt, sums)


cdef void pack_block(const floating* gy,      # IN  (count, K, P)
                     const floating* x,       # IN  (count, C, H, W)
                     const Layout* d, const Backward* bw,
                     Py_ssize_t count, int threads,
                     floating* staged,        # OUT (count, staged_elems) when staging
                     floating* gyt,           # OUT (count, P, k_padded)
                     floating* sums) noexcept nogil:  # OUT (count, K) bias sums
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t image = g.C * g.H * g.W
    cdef Py_ssize_t gyt_elems = g.P * bw.k_padded
    cdef Py_ssize_t n
    if threads == 1:
        for n in range(count):
            pack_block_image(gy + n * g.K * g.P, x + n * image, d, bw,
                             staged + n * d.staged_elems, gyt + n * gyt_elems, sums + n * g.K)
    else:
        for n in prange(count, num_threads=threads, schedule="dynamic"):
            pack_block_image(gy + n * g.K * g.P, x + n * image, d, bw,
                             staged + n * d.staged_elems, gyt + n * gyt_elems, sums + n * g.K)


cdef void filter_grad_transposed(const tile_width* width,
                                 const floating* gy,   # IN  (N, K, P)
                                 const floating* x,    # IN  (N, C, H, W)
                                 const Layout* d, const Backward* bw,
                                 floating* gw,         # OUT (K, CRS)
                                 floating* gb,         # OUT (K,)
                                 floating* work) noexcept nogil:
    """gw^T (CRS, k_padded) accumulated over blocks of images, then
    transposed; gb from per-image sums added in image order."""
    cdef const Geometry* g = &d.g
    cdef floating* staged = work
    cdef floating* gyt = staged + bw.block_images * d.staged_elems
    cdef floating* sums = gyt + bw.block_images * g.P * bw.k_padded
    cdef floating* state = sums + bw.block_images * g.K
    cdef Py_ssize_t kp = bw.k_padded
    cdef Py_ssize_t vectors = TRN_NV
    cdef Py_ssize_t k_tiles
    cdef Py_ssize_t rows = trn_tile_rows(width, gy)
    cdef Py_ssize_t tiles
    cdef Py_ssize_t block, first, count, item, t0, k0, e, n
    cdef int threads
    cdef const floating* origin
    if tile_width is NarrowTile:
        vectors = 1
    elif tile_width is HalfTile:
        vectors = TRN_NV // 2
    k_tiles = kp // (vectors * d.lanes)
    tiles = ceil_div(g.CRS, rows) * k_tiles
    memset(state, 0, g.CRS * kp * sizeof(floating))
    memset(gb, 0, g.K * sizeof(floating))
    for block in range(ceil_div(g.N, bw.block_images)):
        first = block * bw.block_images
        count = min(bw.block_images, g.N - first)
        threads = threads_for(count * g.K * g.CRS * g.P, tiles)
        origin = x + first * g.C * g.H * g.W
        pack_block(gy + first * g.K * g.P, origin, d, bw, count, threads, staged, gyt, sums)
        for n in range(count):
            for e in range(g.K):
                gb[e] += sums[n * g.K + e]
        if d.source != SOURCE_INPUT:
            origin = staged
        if threads == 1:
            # One image at a time through every tile: its gy^T is read from
            # L1 or L2 by all the tiles of taps (a block's would come from
            # further out each time), at the cost of a tile's loads and
            # stores of the accumulators per image; the sums are the same.
            for n in range(count):
                for item in range(k_tiles):
                    k0 = item * vectors * d.lanes
                    trn_tiles(width, origin + n * d.x.image_stride, gyt + n * g.P * kp + k0,
                              kp, d, 1, 0, g.CRS, state + k0)
        else:
            for item in prange(tiles, num_threads=threads, schedule="dynamic"):
                t0 = (item // k_tiles) * rows
                k0 = (item % k_tiles) * vectors * d.lanes
                trn_tiles(width, origin, gyt + k0, kp, d, count, t0, t0 + rows, state + k0)
    transpose(state, g.CRS, g.K, kp, gw, g.CRS)


cdef floating plane_sum(const floating* gy,     # IN  planes of P values
                        Py_ssize_t P, Py_ssize_t planes,
                        Py_ssize_t stride) noexcept nogil:  # from one plane to the next
    """Sum of the planes: four chains of vector partial sums (one chain would
    wait on the adder latency), combined in a fixed order."""
    cdef vec acc[4]
    cdef Py_ssize_t L = lanes(gy)
    cdef Py_ssize_t full = P - P % L
    cdef Py_ssize_t n, j, u
    cdef const floating* plane
    for u in range(4):
        acc[u] = cnx_zero()
    for n in range(planes):
        plane = gy + n * stride
        for j in range(full // (4 * L)):
            for u in range(4):
                acc[u] = vadd(gy, acc[u], vload(plane + (4 * j + u) * L))
        for j in range(full // (4 * L) * 4, full // L):
            acc[0] = vadd(gy, acc[0], vload(plane + j * L))
        if full < P:
            acc[0] = vadd(gy, acc[0], vload_part(plane + full, P - full))
    return vsum(gy, vadd(gy, vadd(gy, acc[0], acc[1]), vadd(gy, acc[2], acc[3])))


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
    with nogil:
        backward_filter_pass(&gy[0, 0, 0, 0], &x[0, 0, 0, 0], &plan.sp, &gw[0, 0, 0, 0],
                             &gb[0], &work[0])


cdef void backward_filter_pass(const floating* gy,   # IN  (N, K, Ho, Wo)
                               const floating* x,    # IN  (N, C, H, W)
                               const ConvStepPlan* sp,
                               floating* gw,         # OUT (K, C, R, S)
                               floating* gb,         # OUT (K,)
                               floating* work) noexcept nogil:  # TMP backward_filter_workspace
    cdef const Backward* bw = sp.bw
    if bw.filter == FILTER_TRANSPOSED and bw.k_padded == sp.d.lanes:
        filter_grad_transposed(<const NarrowTile*>NULL, gy, x, sp.f, bw, gw, gb, work)
    elif bw.filter == FILTER_TRANSPOSED and bw.k_padded % (TRN_NV * sp.d.lanes):
        filter_grad_transposed(<const HalfTile*>NULL, gy, x, sp.f, bw, gw, gb, work)
    elif bw.filter == FILTER_TRANSPOSED:
        filter_grad_transposed(<const WideTile*>NULL, gy, x, sp.f, bw, gw, gb, work)
    else:
        filter_grad_dot(gy, x, sp.f, bw, gw, gb, work)


include "_conv_steps.pxi"
include "_conv_fused.pxi"

# Convolution fused with ReLU and max pooling (included by _conv.pxi).
#
# y, idx = max_pool2d(relu(conv2d(x, w, b))) without the convolution's output
# ever reaching memory: a register tile holds, for a few filters, the
# convolution of every element of the pooling windows of one vector of pooled
# positions (or, with filters as lanes, of a few pooled positions), then adds
# nothing more: bias was the accumulators' start value, ReLU and the running
# maximum with its winner's position run on the registers, and only the
# pooled values and their int64 indices are stored.
#
# Layers, top to bottom:
#
# 1. ``FusedPlan`` (built once per shape by cnnext._functional.fused):
#    pooled geometry, the lane layout, staging, offset tables, waves.
# 2. ``conv2d_max_pool2d_forward``, ``conv2d_max_pool2d_backward``: entry
#    points; arguments validated and C-contiguous, outputs and workspace
#    allocated by the caller.
# 3. Staging (phase-split or zero-padded copies of each image) and the
#    backward's unpooling of gy into dense blocks.
# 4. Register tiles ``pool_rows`` (pooled positions as lanes) and
#    ``pool_filters`` (filters as lanes) over the vector layer of
#    _conv_simd.pxi and _conv_fused_simd.pxi.
#
# Lanes along pooled positions.  The q-th pooled output of a row takes the
# convolution outputs of columns q*qw + t (t < kw), which read input columns
# (q*qw + t)*sw + s*dw: a stride of F = qw*sw from one lane to the next.  The
# staged copy splits every (padded) input row into F phases, phase f holding
# columns f, f + F, f + 2F, ..., so each (window element, tap) pair reads one
# contiguous vector.  Rows of pooled outputs shorter than a vector leave
# lanes idle; when that wastes more than filters as lanes would, the tile
# takes filters as lanes instead and broadcasts the inputs (no phases: the
# input is read in place, or from a zero-padded copy).
#
# Window elements run in row-major order, FUSED_G per pass of the taps
# (windows of more elements take several passes; a window of fewer repeats
# its last element, which never changes a maximum or its index).  The
# running maximum keeps max_pool2d's rule (greater or NaN replaces it), and
# each element's convolution is the same sum as conv2d's direct kernels
# compute (bias, then the taps in (c, r, s) order), so values and indices
# equal conv2d -> relu -> max_pool2d's wherever conv2d sums directly.
# Overlapping windows (stride < size) recompute the elements they share.
#
# Backward.  Only the argmax of each window receives gy.  For the weight
# gradient alone, when x is finite and every window is at most two rows
# high with a row's (element, tap) inputs within half a register, the sum
# takes the argmax terms alone (the sparse path): filters as lanes, per
# pooled position and tap one register holds the window row's inputs for
# every element and a permute picks each filter's argmax one, so the
# multiply-adds are 1/elements of the dense ones.  Otherwise, with pooled
# positions as lanes, the sum runs by window element: per block of images,
# gy where element e is the argmax (masked by y > 0 under ReLU) is one flat
# array per element, and dot_tiles runs over
# each element's windows in the staged copy: no dense gradient, no scatter.
# Otherwise gy is scattered into a dense gradient per block of images, held
# in the workspace, which the convolution's own weight- and input-gradient
# kernels then read from cache.  Those blocks follow the weight gradient's
# own chunks of images, so the few-filter path sums in exactly
# conv2d_backward's order.
#
# Determinism.  Every pooled output is computed by one work item; block
# results are added in block order: nothing depends on the thread count.

from libc.stdint cimport int32_t, int64_t

from ._step cimport STEP_BAD_INDEX, STEP_OK

include "_conv_fused_simd.pxi"
include "_indices.pxi"

# Filters as lanes win when their lane use exceeds that of pooled positions
# by this factor: a broadcast tile loads about 1.2 values per multiply-add,
# a positions tile 0.75.
cdef double FILTER_LANES_ADVANTAGE = 1.5
# Staged copies of at most this many bytes per wave: they stay in L2 while
# the tiles read them.
cdef Py_ssize_t FUSED_STAGE_BYTES = 256 << 10
# The weight gradient by window elements takes images in blocks whose staged
# copies and per-element gradients stay in L2 while the tiles run over them.
cdef Py_ssize_t ELEMENT_BLOCK_BYTES = 256 << 10
# Images per work item of the sparse weight gradient: its partial sums are
# added in item order, so they never depend on the thread count.
cdef enum:
    SPARSE_IMAGES = 4
# Pooled positions per chunk of sparse_image_codes: the rows of a vector of
# filters (values and codes) stay in L1, on the stack.  A multiple of every
# lane count.
cdef enum:
    SPARSE_CHUNK = 64


cdef struct Pooling:
    Py_ssize_t kh, kw, qh, qw         # window and stride
    Py_ssize_t Hq, Wq, Pq             # pooled plane
    Py_ssize_t elements               # kh * kw
    Py_ssize_t slots                  # elements rounded up to whole passes of FUSED_G


cdef struct Fused:
    Layout d                          # the convolution (geometry, packed filter blocks)
    Pooling p
    bint by_filters                   # pool_filters (filters as lanes), else pool_rows
    Py_ssize_t phases                 # F: columns of a staged row split into F phases
    Py_ssize_t* phase_runs            # (F, 2): the [lo, hi) of each phase's in-row columns
    Py_ssize_t staged_h, staged_w     # rows of the staged copy, elements per row phase
    Py_ssize_t staged_elems           # per image, 0 when x is read in place
    Py_ssize_t image_stride
    Py_ssize_t wave                   # images staged at once
    Py_ssize_t* taps                  # (CRS, slots) offset of tap t of slot e's element
    Py_ssize_t* codes                 # (slots,) a*Wo + t of slot e's element (a, t)
    Py_ssize_t nvectors               # pool_rows: vectors of one image's pooled positions
    Py_ssize_t* vectors               # ... (staged offset, pooled offset) of each
    Py_ssize_t store_lanes            # ... lanes stored of each (below L for short rows)
    Py_ssize_t* positions             # pool_filters: (Pq,) staged offset of each window
    int64_t* base                     # (Pq,) conv-plane index of each window's first element
    Py_ssize_t row_step               # pool_rows: staged offset from one pooled row to the next
    bint tiled                        # windows cover the convolution's output once each
    Layout* elements                  # pool_rows: per window element, its windows (backward)
    Py_ssize_t element_block          # ... images per block of the weight gradient by elements
    # The sparse weight gradient (0 sparse_groups: this geometry has none).
    Py_ssize_t sparse_groups          # vectors of filters
    Py_ssize_t sparse_half            # from a table's first half to its second (window row 1)
    Py_ssize_t sparse_a_step          # table lanes from window row 0 to row 1
    Py_ssize_t* sparse_taps           # (CRS,) offset of tap t's table from a window's origin
    Py_ssize_t* sparse_windows        # (Pq,) offset of each window's origin in an image
    Py_ssize_t sparse_image           # elements of one (staged) image
    bint sparse_staged                # padded: read from zero-padded copies, else in place
    Py_ssize_t sparse_block           # images per block


cdef struct FusedStepPlan:
    # What the backward pass reads of a FusedPlan, in one record a step can
    # point to (valid while the FusedPlan lives): the geometry, and the
    # convolution plans of its blocks of images, with (or NULL) the plans
    # without reformulated passes that blocks holding NaN or inf take.
    const Fused* f
    Py_ssize_t block                  # images per block of the dense path
    const ConvStepPlan* full          # a whole block's
    const ConvStepPlan* tail          # the last, shorter block's (or full's)
    const ConvStepPlan* full_safe
    const ConvStepPlan* tail_safe


cdef Py_ssize_t* init_fused(Fused* f, Py_ssize_t itemsize) except NULL:
    """Fill ``f`` (f.d.g and the pooling window and stride set); return its
    tables (one block, f.base included), which the caller owns."""
    cdef Geometry* g = &f.d.g
    cdef Pooling* p = &f.p
    cdef Py_ssize_t L = VEC_BYTES // itemsize
    cdef Py_ssize_t reach_h, reach_w, k_padded, row_vectors, e, el, a, t, c, r, s, tap, off, i
    cdef Py_ssize_t F
    cdef double row_use, filter_use
    cdef Py_ssize_t* tables
    g.Ho = (g.H + 2 * g.ph - g.dh * (g.R - 1) - 1) // g.sh + 1
    g.Wo = (g.W + 2 * g.pw - g.dw * (g.S - 1) - 1) // g.sw + 1
    g.P = g.Ho * g.Wo
    g.CRS = g.C * g.R * g.S
    p.Hq = (g.Ho - p.kh) // p.qh + 1
    p.Wq = (g.Wo - p.kw) // p.qw + 1
    p.Pq = p.Hq * p.Wq
    p.elements = p.kh * p.kw
    p.slots = ceil_div(p.elements, FUSED_G) * FUSED_G
    f.d.lanes = L
    f.d.winograd = False
    row_vectors = ceil_div(p.Wq, L)
    k_padded = ceil_div(g.K, L) * L
    row_use = p.Wq / <double>(row_vectors * L)
    filter_use = g.K / <double>k_padded
    f.by_filters = filter_use > FILTER_LANES_ADVANTAGE * row_use
    # The padded rows and columns some window reaches.
    reach_h = (p.Hq - 1) * p.qh * g.sh + (p.kh - 1) * g.sh + (g.R - 1) * g.dh + 1
    reach_w = (p.Wq - 1) * p.qw * g.sw + (p.kw - 1) * g.sw + (g.S - 1) * g.dw + 1
    f.d.padded_h, f.d.padded_w = reach_h, reach_w
    if f.by_filters:
        F = 1
        f.d.group = L
        if g.ph == 0 and g.pw == 0:
            f.staged_h, f.staged_w, f.staged_elems = g.H, g.W, 0
            f.image_stride = g.C * g.H * g.W
        else:
            f.staged_h, f.staged_w = reach_h, reach_w
            f.staged_elems = f.image_stride = g.C * reach_h * reach_w
        f.nvectors = 0
    else:
        # (One pooled column per row: its lanes past the first are never stored.)
        F = p.qw * g.sw if p.Wq > 1 else 1
        f.d.group = FUSED_MR
        f.staged_h, f.staged_w = reach_h, ceil_div(reach_w, F)
        # A vector of a short last row reads up to a vector past its end.
        f.staged_elems = f.image_stride = g.C * reach_h * F * f.staged_w + L
        f.nvectors = p.Hq * row_vectors
        f.store_lanes = min(L, p.Wq)
    f.phases = F
    f.d.blocks = ceil_div(g.K, f.d.group)
    f.wave = max(g.N, 1) if f.staged_elems == 0 else clamp(
        FUSED_STAGE_BYTES // (f.staged_elems * itemsize), 1, max(g.N, 1))
    tables = <Py_ssize_t*>PyMem_Malloc(
        p.Pq * sizeof(int64_t)
        + (g.CRS * p.slots + p.slots + 2 * f.nvectors + p.Pq + 2 * F + g.CRS + p.Pq)
        * sizeof(Py_ssize_t))
    if tables == NULL:
        raise MemoryError()
    f.base = <int64_t*>tables
    f.taps = <Py_ssize_t*>(f.base + p.Pq)
    f.codes = f.taps + g.CRS * p.slots
    f.vectors = f.codes + p.slots
    f.positions = f.vectors + 2 * f.nvectors
    f.phase_runs = f.positions + p.Pq
    f.sparse_taps = f.phase_runs + 2 * F
    f.sparse_windows = f.sparse_taps + g.CRS
    for i in range(F):
        valid_run(f.staged_w, F, i - g.pw, g.W, &f.phase_runs[2 * i], &f.phase_runs[2 * i + 1])
    for e in range(p.slots):
        el = min(e, p.elements - 1)
        a, t = el // p.kw, el % p.kw
        f.codes[e] = a * g.Wo + t
        for c in range(g.C):
            for r in range(g.R):
                for s in range(g.S):
                    tap = (c * g.R + r) * g.S + s
                    off = t * g.sw + s * g.dw
                    f.taps[tap * p.slots + e] = (
                        ((c * f.staged_h + a * g.sh + r * g.dh) * F + off % F) * f.staged_w
                        + off // F)
    for i in range(p.Pq):
        f.base[i] = i // p.Wq * p.qh * g.Wo + i % p.Wq * p.qw
        f.positions[i] = (i // p.Wq * p.qh * g.sh * f.staged_w
                          + i % p.Wq * p.qw * g.sw) if f.by_filters else 0
    f.row_step = p.qh * g.sh * F * f.staged_w if p.Hq > 1 and not f.by_filters else 0
    if f.nvectors:
        fill_vectors(p.Hq, p.Wq, f.row_step, L, f.vectors)
    f.elements = NULL
    f.tiled = (p.qh == p.kh and p.qw == p.kw and p.Hq * p.kh == g.Ho and p.Wq * p.kw == g.Wo)
    f.element_block = clamp(ELEMENT_BLOCK_BYTES // (
        ((p.elements + 1) * g.K * p.Pq + f.staged_elems) * itemsize), 1, max(g.N, 1))
    init_sparse(f, L, reach_h, reach_w, itemsize)
    return tables


cdef void init_sparse(Fused* f, Py_ssize_t L, Py_ssize_t reach_h, Py_ssize_t reach_w,
                      Py_ssize_t itemsize) noexcept:
    """The sparse weight gradient's tables, when its table register holds
    every (window element, tap) pair of a window row: windows one or two
    rows high, the elements of a row within a table row."""
    cdef const Geometry* g = &f.d.g
    cdef const Pooling* p = &f.p
    cdef Py_ssize_t width = L // 2 if p.kh == 2 else L
    cdef Py_ssize_t rows, row_w, c, r, s, i, per_image
    f.sparse_groups = 0
    if p.kh > 2 or (p.kw - 1) * g.sw + 1 > width or g.P > 2147483647:
        return
    f.sparse_staged = g.ph != 0 or g.pw != 0
    rows, row_w = reach_h, reach_w
    if not f.sparse_staged:
        rows, row_w = g.H, g.W
    f.sparse_image = g.C * rows * row_w
    f.sparse_groups = ceil_div(g.K, L)
    f.sparse_a_step = L // 2 if p.kh == 2 else 0
    f.sparse_half = g.sh * row_w if p.kh == 2 else L // 2
    for c in range(g.C):
        for r in range(g.R):
            for s in range(g.S):
                f.sparse_taps[(c * g.R + r) * g.S + s] = (c * rows + r * g.dh) * row_w + s * g.dw
    for i in range(p.Pq):
        f.sparse_windows[i] = i // p.Wq * p.qh * g.sh * row_w + i % p.Wq * p.qw * g.sw
    per_image = 2 * f.sparse_groups * p.Pq * L + (f.sparse_image if f.sparse_staged else 0)
    f.sparse_block = max(ELEMENT_BLOCK_BYTES // (per_image * itemsize)
                         // SPARSE_IMAGES * SPARSE_IMAGES, SPARSE_IMAGES)


cdef Layout* init_elements(const Fused* f) except NULL:
    """For each window element, the windows dot_tiles reads for the weight
    gradient (pool_rows' layout): the pooled rows of the staged copy, with
    the element's taps.  One allocation, owned by the caller."""
    cdef const Geometry* g = &f.d.g
    cdef Py_ssize_t E = f.p.elements
    cdef Py_ssize_t e, t
    cdef Layout* layouts = <Layout*>PyMem_Malloc(
        E * sizeof(Layout) + E * g.CRS * sizeof(Py_ssize_t))
    cdef Py_ssize_t* taps
    if layouts == NULL:
        raise MemoryError()
    taps = <Py_ssize_t*>(layouts + E)
    for e in range(E):
        layouts[e] = f.d
        layouts[e].g.P = f.p.Pq
        layouts[e].rows, layouts[e].row_len = f.p.Hq, f.p.Wq
        layouts[e].i_stride, layouts[e].j_stride = f.row_step, 1
        layouts[e].x.taps = taps + e * g.CRS
        layouts[e].x.image_stride = f.staged_elems
        for t in range(g.CRS):
            taps[e * g.CRS + t] = f.taps[t * f.p.slots + e]
    return layouts


cdef class FusedPlan:
    """FusedPlan(N, C, H, W, K, R, S, stride, padding, dilation, pool_size, pool_stride, itemsize)

    How this module computes conv2d -> [relu] -> max_pool2d of one shape:
    pooled size, lane layout, staging, offset tables and the forward
    workspace.  The arguments must be valid (cnnext._functional.fused checks
    them).  A plan depends on the shape only, never on the thread count.

    Attributes
    ----------
    output_shape : tuple
        (N, K, Hq, Wq), the pooled output.
    conv_shape : tuple
        (N, K, Ho, Wo), the convolution's output (what the indices index).
    forward_workspace : int
        Elements (of the data dtype) of scratch memory of the forward pass.
    """
    cdef Fused f
    cdef FusedStepPlan sp
    cdef Py_ssize_t* tables
    cdef tuple conv_plans             # (block, tail, block safe, tail safe), once set
    cdef readonly tuple output_shape
    cdef readonly tuple conv_shape
    cdef readonly Py_ssize_t forward_workspace

    def __cinit__(self):
        self.tables = NULL
        self.f.elements = NULL
        self.sp.f = &self.f
        self.sp.full = NULL

    def __dealloc__(self):
        PyMem_Free(self.tables)
        PyMem_Free(self.f.elements)

    def __init__(self, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                 Py_ssize_t K, Py_ssize_t R, Py_ssize_t S, stride, padding, dilation,
                 pool_size, pool_stride, Py_ssize_t itemsize):
        cdef Geometry* g = &self.f.d.g
        g.N, g.C, g.H, g.W, g.K, g.R, g.S = N, C, H, W, K, R, S
        g.sh, g.sw = stride
        g.ph, g.pw = padding
        g.dh, g.dw = dilation
        self.f.p.kh, self.f.p.kw = pool_size
        self.f.p.qh, self.f.p.qw = pool_stride
        self.tables = init_fused(&self.f, itemsize)
        if not self.f.by_filters:
            self.f.elements = init_elements(&self.f)
        self.output_shape = (N, K, self.f.p.Hq, self.f.p.Wq)
        self.conv_shape = (N, K, g.Ho, g.Wo)
        self.forward_workspace = packed_elems(&self.f.d) + self.f.wave * self.f.staged_elems

    @property
    def lanes(self):
        """What the vector lanes of the forward tiles run along: "positions"
        (pooled positions of a row) or "filters"."""
        return "filters" if self.f.by_filters else "positions"

    def block_images(self, Plan whole):
        """block_images(whole)

        Images per block of the backward pass: the weight gradient's own
        chunk or block of images under ``whole`` (the convolution plan of
        the whole batch), sized for the caches.
        """
        if whole.bw.filter == FILTER_DOT:
            return clamp(whole.bw.chunk_images, 1, max(self.f.d.g.N, 1))
        return clamp(whole.bw.block_images, 1, max(self.f.d.g.N, 1))

    def set_backward(self, Py_ssize_t block, Plan block_plan, Plan tail_plan, Plan block_safe,
                     Plan tail_safe):
        """set_backward(block, block_plan, tail_plan, block_safe, tail_safe)

        The convolution plans of the backward pass's blocks of ``block``
        images (``tail_plan`` for a last, shorter block, else None), and the
        same built with reformulate=False (None when the first have no
        reformulated pass); the plan keeps them.
        """
        self.conv_plans = (block_plan, tail_plan, block_safe, tail_safe)
        self.sp.block = block
        self.sp.full = &block_plan.sp
        self.sp.tail = self.sp.full if tail_plan is None else &tail_plan.sp
        self.sp.full_safe = NULL if block_safe is None else &block_safe.sp
        self.sp.tail_safe = self.sp.full_safe if tail_safe is None else &tail_safe.sp

    @property
    def weight_gradient(self):
        """How the backward without the input gradient sums the weight
        gradient when every index is one of its window's elements and x is
        finite: "sparse" (the argmax terms alone, filters as lanes),
        "elements" (by window element) or "dense" (a scattered gradient)."""
        if self.f.sparse_groups:
            return "sparse"
        return "elements" if self.f.elements != NULL else "dense"

    @property
    def backward_ready(self):
        """Whether ``set_backward`` was called."""
        return self.sp.full != NULL

    def backward_workspace(self, bint need_input_grad):
        """backward_workspace(need_input_grad)

        Elements of scratch memory of the backward pass (after
        ``set_backward``).
        """
        cdef const Fused* f = &self.f
        cdef const Geometry* g = &f.d.g
        cdef Py_ssize_t kernels = 0
        cdef Py_ssize_t by_elements = 0
        for plan in self.conv_plans:
            if plan is None:
                continue
            kernels = max(kernels, plan.backward_filter_workspace)
            if need_input_grad:
                kernels = max(kernels, plan.backward_data_workspace)
        if f.elements != NULL and not need_input_grad:
            by_elements = (f.element_block * (f.staged_elems + (f.p.elements + 1) * g.K * f.p.Pq)
                           + (f.p.elements + 1) * g.K * (g.CRS + 1))
        if f.sparse_groups and not need_input_grad:
            by_elements = max(by_elements, sparse_workspace(f))
        return max(self.sp.block * g.K * g.P + g.K * (g.CRS + 1) + kernels, by_elements)

    def step_plan(self):
        """step_plan()

        A PyCapsule (named "cnnext.fused_plan") of this plan's backward
        record (after ``set_backward``), which the fused step kernels take as
        ``plan[0]``; valid while the plan lives.
        """
        return PyCapsule_New(<void*>&self.sp, b"cnnext.fused_plan", NULL)

    def __repr__(self):
        return (f"FusedPlan(output={self.output_shape}, conv={self.conv_shape}, "
                f"lanes={self.lanes!r}, vector_lanes={self.f.d.lanes})")


# ------------------------------------------------------------------ staging

cdef inline void gather_step(const floating* src, Py_ssize_t step,
                             floating* dst, Py_ssize_t count) noexcept nogil:
    """dst[u] = src[u * step] for u < count."""
    cdef Py_ssize_t u
    for u in range(count):
        dst[u] = src[u * step]


cdef void stage_row_phases(const floating* src,  # IN  one input row of W values
                           const Fused* f,
                           floating* dst) noexcept nogil:  # OUT (F, staged_w) its phases
    """dst[phase, u] = xpad[u*F + phase] (0 in the padding) for one row."""
    cdef const Geometry* g = &f.d.g
    cdef Py_ssize_t F = f.phases, n = f.staged_w
    cdef Py_ssize_t phase, lo, hi
    for phase in range(F):
        lo, hi = f.phase_runs[2 * phase], f.phase_runs[2 * phase + 1]
        if lo:
            memset(dst, 0, lo * sizeof(floating))
        # Constant steps give the compiler loops without gathers (rows too
        # short for its vectors: lane by lane; gather2 picks lanes instead).
        if F == 1:
            memcpy(dst + lo, src + lo - g.pw, (hi - lo) * sizeof(floating))
        elif F == 2:
            gather2(src + lo * 2 + phase - g.pw, dst + lo, hi - lo)
        else:
            gather_step(src + lo * F + phase - g.pw, F, dst + lo, hi - lo)
        if hi < n:
            memset(dst + hi, 0, (n - hi) * sizeof(floating))
        dst += n


cdef void stage_phases(const floating* x,     # IN  (C, H, W) one image
                       const Fused* f,
                       floating* dst) noexcept nogil:  # OUT (C, staged_h, F, staged_w) + slack
    """dst[c, h, phase, u] = xpad[c, h, u*F + phase] (0 in the padding), then
    zeros in the slack a short row's vector reads past the end."""
    cdef const Geometry* g = &f.d.g
    cdef Py_ssize_t row_elems = f.phases * f.staged_w
    cdef Py_ssize_t c, h, row
    for c in range(g.C):
        for h in range(f.staged_h):
            row = h - g.ph
            if 0 <= row < g.H:
                stage_row_phases(x + (c * g.H + row) * g.W, f, dst)
            else:
                memset(dst, 0, row_elems * sizeof(floating))
            dst += row_elems
    memset(dst, 0, f.d.lanes * sizeof(floating))


cdef void stage_fused_image(const floating* x, const Fused* f, floating* dst) noexcept nogil:
    if f.by_filters:
        stage_padded(x, &f.d, dst)
    else:
        stage_phases(x, f, dst)


cdef void stage_fused_images(const floating* x,   # IN  (count, C, H, W)
                             const Fused* f, Py_ssize_t count, int threads,
                             floating* staged) noexcept nogil:  # OUT (count, staged_elems)
    cdef Py_ssize_t image = f.d.g.C * f.d.g.H * f.d.g.W
    cdef Py_ssize_t n
    if threads == 1:
        for n in range(count):
            stage_fused_image(x + n * image, f, staged + n * f.staged_elems)
    else:
        for n in prange(count, num_threads=threads, schedule="dynamic"):
            stage_fused_image(x + n * image, f, staged + n * f.staged_elems)


# -------------------------------------------------------------------- tiles

cdef inline void pool_rows_store(const floating* like, vec best, vec code,
                                 floating* yp,           # OUT (stored,)
                                 int64_t* ip,            # OUT (stored,)
                                 const int64_t* bp,      # IN  (stored,) window bases
                                 Py_ssize_t stored) noexcept nogil:
    """One filter's pooled values and indices (window codes a*Wo + t become
    int64 indices) for the first ``stored`` lanes."""
    if stored == lanes(like):
        vstore(yp, best)
    else:
        vstore_part(yp, best, stored)
    vstore_indices(like, ip, bp, code, stored)


cdef void pool_rows_single(const floating* a, const floating* init, Py_ssize_t blk_begin,
                           Py_ssize_t blk_end, const floating* origin, const Fused* f,
                           bint relu, floating* y, int64_t* idx, Py_ssize_t first,
                           Py_ssize_t last) noexcept nogil:
    """pool_rows for windows of at most FUSED_G (= 4) elements, one pass,
    its accumulators in registers throughout: gcc turns the array into
    registers only when every loop over it is innermost with a constant
    count (unrolled before that step), so no loop over the tile nests
    (pool_rows' general loops keep them in memory: a store and a reload of
    each per tile, a quarter of the tile's time at 9 taps)."""
    cdef vec acc[FUSED_MR * FUSED_G]
    cdef vec bv[FUSED_G]
    cdef vec best, code
    cdef vec codes[4]
    cdef floating kept[2][FUSED_MR][MAX_LANES]
    cdef const floating* b
    cdef const floating* ap
    cdef const floating* start
    cdef const Py_ssize_t* tp
    cdef const int64_t* bp
    cdef Py_ssize_t K = f.d.g.K, CRS = f.d.g.CRS, Pq = f.p.Pq, slots = f.p.slots
    cdef Py_ssize_t stored = f.store_lanes
    cdef Py_ssize_t vector, n, q, out, blk, rows_valid, i, m, e, t
    for e in range(4):
        codes[e] = vsplat(code_bits(a, f.codes[e]))
    for vector in range(first, last):
        n = vector // f.nvectors
        q = vector - n * f.nvectors
        b = origin + n * f.image_stride + f.vectors[2 * q]
        bp = f.base + f.vectors[2 * q + 1]
        out = n * K * Pq + f.vectors[2 * q + 1]
        for blk in range(blk_begin, blk_end):
            start = init + blk * FUSED_MR
            rows_valid = min(<Py_ssize_t>FUSED_MR, K - blk * FUSED_MR)
            for i in range(FUSED_MR * FUSED_G):
                acc[i] = vsplat(start[i // FUSED_G])
            ap = a + blk * CRS * FUSED_MR
            tp = f.taps
            for t in range(CRS):
                for e in range(FUSED_G):
                    bv[e] = vload(b + tp[e])
                for i in range(FUSED_MR * FUSED_G):
                    acc[i] = vfma(a, acc[i], bv[i % FUSED_G], vsplat(ap[i // FUSED_G]))
                ap += FUSED_MR
                tp += slots
            if relu:
                for i in range(FUSED_MR * FUSED_G):
                    acc[i] = vrelu(a, acc[i])
            # (The elements written out: a loop over them would nest.  The
            # stores, inlined here, would make the loop too long to unroll.)
            for m in range(FUSED_MR):
                best = acc[m * 4]
                code = codes[0]
                vmax_take(a, &best, &code, acc[m * 4 + 1], codes[1])
                vmax_take(a, &best, &code, acc[m * 4 + 2], codes[2])
                vmax_take(a, &best, &code, acc[m * 4 + 3], codes[3])
                vstore(&kept[0][m][0], best)
                vstore(&kept[1][m][0], code)
            for m in range(rows_valid):
                pool_rows_store(a, vload(&kept[0][m][0]), vload(&kept[1][m][0]),
                                y + out + (blk * FUSED_MR + m) * Pq,
                                idx + out + (blk * FUSED_MR + m) * Pq, bp, stored)


cdef void pool_rows(const floating* a,       # IN  (blocks, CRS, FUSED_MR) packed filters
                    const floating* init,    # IN  (blocks * FUSED_MR,) bias, zeros past K
                    Py_ssize_t blk_begin, Py_ssize_t blk_end,
                    const floating* origin,  # IN  staged images of the wave
                    const Fused* f, bint relu,
                    floating* y,             # OUT (count, K, Pq) pooled values of the wave
                    int64_t* idx,            # OUT (count, K, Pq) their conv-plane indices
                    Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """Vectors first..last-1 of the wave's pooled positions (numbered image
    after image) times the blocks of FUSED_MR filters blk_begin..blk_end-1."""
    cdef vec acc[FUSED_MR][FUSED_G]
    cdef vec bv[FUSED_G]
    cdef vec best, code
    cdef floating first_codes[FUSED_G]
    cdef floating kept[2][FUSED_MR][MAX_LANES]
    cdef const floating* b
    cdef const floating* ap
    cdef const floating* start
    cdef const Py_ssize_t* tp
    cdef const int64_t* bp
    cdef Py_ssize_t K = f.d.g.K
    cdef Py_ssize_t CRS = f.d.g.CRS
    cdef Py_ssize_t Pq = f.p.Pq
    cdef Py_ssize_t slots = f.p.slots
    cdef Py_ssize_t passes = slots // FUSED_G
    cdef Py_ssize_t stored = f.store_lanes
    cdef Py_ssize_t vector, n, q, out, blk, rows_valid, pas, m, e, t
    if passes == 1 and FUSED_G == 4:
        pool_rows_single(a, init, blk_begin, blk_end, origin, f, relu, y, idx, first, last)
        return
    # (Read once: the index stores may alias f.codes, so the compiler would
    # read them again for every tile.)
    for e in range(FUSED_G):
        first_codes[e] = code_bits(a, f.codes[e])
    for vector in range(first, last):
        n = vector // f.nvectors
        q = vector - n * f.nvectors
        b = origin + n * f.image_stride + f.vectors[2 * q]
        bp = f.base + f.vectors[2 * q + 1]
        out = n * K * Pq + f.vectors[2 * q + 1]
        for blk in range(blk_begin, blk_end):
            start = init + blk * FUSED_MR
            rows_valid = min(<Py_ssize_t>FUSED_MR, K - blk * FUSED_MR)
            for pas in range(passes):
                for m in range(FUSED_MR):
                    for e in range(FUSED_G):
                        acc[m][e] = vsplat(start[m])
                ap = a + blk * CRS * FUSED_MR
                tp = f.taps + pas * FUSED_G
                for t in range(CRS):
                    for e in range(FUSED_G):
                        bv[e] = vload(b + tp[e])
                    for m in range(FUSED_MR):
                        for e in range(FUSED_G):
                            acc[m][e] = vfma(a, acc[m][e], bv[e], vsplat(ap[m]))
                    ap += FUSED_MR
                    tp += slots
                if relu:
                    for m in range(FUSED_MR):
                        for e in range(FUSED_G):
                            acc[m][e] = vrelu(a, acc[m][e])
                # One filter at a time, the running maximum and its code in
                # two registers: held in arrays across the filters, gcc
                # copies them through memory in halves, and each 256-bit
                # reload of a half-written vector stalls.
                for m in range(FUSED_MR):
                    if pas == 0:
                        best = acc[m][0]
                        code = vsplat(first_codes[0])
                        for e in range(1, FUSED_G):
                            vmax_take(a, &best, &code, acc[m][e], vsplat(first_codes[e]))
                    else:
                        best = vload(&kept[0][m][0])
                        code = vload(&kept[1][m][0])
                        for e in range(FUSED_G):
                            vmax_take(a, &best, &code, acc[m][e],
                                      vsplat(code_bits(a, f.codes[pas * FUSED_G + e])))
                    if pas + 1 < passes:
                        vstore(&kept[0][m][0], best)
                        vstore(&kept[1][m][0], code)
                    elif m < rows_valid:
                        pool_rows_store(a, best, code, y + out + (blk * FUSED_MR + m) * Pq,
                                        idx + out + (blk * FUSED_MR + m) * Pq, bp, stored)


cdef void pool_filters(const floating* w,       # IN  (CRS, L) packed filters k0..k0+L-1
                       const floating* bias,    # IN  (L,) their bias, zeros past K
                       Py_ssize_t filters,      # filters k0.. that exist
                       const floating* origin,  # IN  input (or staged copies) of the wave
                       const Fused* f, bint relu,
                       floating* y,             # OUT pooled values of the wave at filter k0
                       int64_t* idx,            # OUT their conv-plane indices
                       Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """Pooled positions first..last-1 (numbered image after image), FUSED_MP
    per tile, times one vector of filters: each window element's inputs are
    broadcast, the filters are the lanes; results are stored transposed."""
    cdef vec acc[FUSED_MP][FUSED_G]
    cdef vec best, code, wv
    cdef floating first_codes[FUSED_G]
    cdef floating kept[2][FUSED_MP][MAX_LANES]
    cdef const floating* xp[FUSED_MP]
    cdef Py_ssize_t out[FUSED_MP]
    cdef Py_ssize_t at[FUSED_MP]
    cdef Py_ssize_t offs[FUSED_G]
    cdef const floating* wp
    cdef const Py_ssize_t* tp
    cdef Py_ssize_t L = lanes(w)
    cdef Py_ssize_t K = f.d.g.K
    cdef Py_ssize_t CRS = f.d.g.CRS
    cdef Py_ssize_t Pq = f.p.Pq
    cdef Py_ssize_t slots = f.p.slots
    cdef Py_ssize_t passes = slots // FUSED_G
    cdef Py_ssize_t n = first // Pq
    cdef Py_ssize_t q = first - n * Pq
    cdef Py_ssize_t done = first
    cdef Py_ssize_t valid, pas, m, e, t, k
    for e in range(FUSED_G):
        first_codes[e] = code_bits(w, f.codes[e])
    while done < last:
        valid = min(last - done, <Py_ssize_t>FUSED_MP)
        for m in range(FUSED_MP):
            if m < valid:
                xp[m] = origin + n * f.image_stride + f.positions[q]
                out[m] = n * K * Pq + q
                at[m] = q
                q += 1
                if q == Pq:
                    q = 0
                    n += 1
            else:
                # Past the end, repeat a position: computed, not stored.
                xp[m] = xp[0]
                out[m] = out[0]
                at[m] = at[0]
        done += valid
        for pas in range(passes):
            for m in range(FUSED_MP):
                for e in range(FUSED_G):
                    acc[m][e] = vload(bias)
            wp = w
            tp = f.taps + pas * FUSED_G
            for t in range(CRS):
                wv = vload(wp)
                for e in range(FUSED_G):
                    offs[e] = tp[e]
                for m in range(FUSED_MP):
                    for e in range(FUSED_G):
                        acc[m][e] = vfma(w, acc[m][e], wv, vsplat(xp[m][offs[e]]))
                wp += L
                tp += slots
            if relu:
                for m in range(FUSED_MP):
                    for e in range(FUSED_G):
                        acc[m][e] = vrelu(w, acc[m][e])
            # One position at a time (as pool_rows takes its filters).
            for m in range(FUSED_MP):
                if pas == 0:
                    best = acc[m][0]
                    code = vsplat(first_codes[0])
                    for e in range(1, FUSED_G):
                        vmax_take(w, &best, &code, acc[m][e], vsplat(first_codes[e]))
                else:
                    best = vload(&kept[0][m][0])
                    code = vload(&kept[1][m][0])
                    for e in range(FUSED_G):
                        vmax_take(w, &best, &code, acc[m][e],
                                  vsplat(code_bits(w, f.codes[pas * FUSED_G + e])))
                vstore(&kept[0][m][0], best)
                vstore(&kept[1][m][0], code)
        for m in range(valid):
            for k in range(min(filters, L)):
                y[out[m] + k * Pq] = kept[0][m][k]
                idx[out[m] + k * Pq] = f.base[at[m]] + lane_code(&kept[1][m][0], k)


cdef void pool_rows_items(const floating* packed, const Fused* f, const floating* origin,
                          bint relu, floating* y, int64_t* idx, Py_ssize_t vectors,
                          int threads) noexcept nogil:
    """``pool_rows`` over all vectors and blocks, split into items over threads."""
    cdef const floating* init = packed + f.d.blocks * FUSED_MR * f.d.g.CRS
    cdef Split sp
    cdef Py_ssize_t item, blk, start
    if threads == 1:
        pool_rows(packed, init, 0, f.d.blocks, origin, f, relu, y, idx, 0, vectors)
        return
    sp = split_tiles(vectors, 1, f.d.blocks, threads)
    for item in prange(sp.groups * sp.spans, num_threads=threads, schedule="dynamic"):
        blk = (item // sp.spans) * sp.per_group
        start = (item % sp.spans) * sp.span
        pool_rows(packed, init, blk, min(blk + sp.per_group, f.d.blocks), origin, f, relu,
                  y, idx, start, min(start + sp.span, vectors))


cdef void pool_filters_items(const floating* packed, const Fused* f, const floating* origin,
                             bint relu, floating* y, int64_t* idx, Py_ssize_t positions,
                             int threads) noexcept nogil:
    """``pool_filters`` over all positions and blocks, split into items over threads."""
    cdef const Geometry* g = &f.d.g
    cdef Py_ssize_t L = f.d.lanes
    cdef const floating* bias = packed + f.d.blocks * L * g.CRS
    cdef Split sp
    cdef Py_ssize_t item, blk, start
    if threads == 1:
        for blk in range(f.d.blocks):
            pool_filters(packed + blk * L * g.CRS, bias + blk * L, g.K - blk * L, origin, f,
                         relu, y + blk * L * f.p.Pq, idx + blk * L * f.p.Pq, 0, positions)
        return
    sp = split_tiles(positions, FUSED_MP, f.d.blocks, threads)
    for item in prange(sp.groups * sp.spans, num_threads=threads, schedule="dynamic"):
        start = (item % sp.spans) * sp.span
        for blk in range((item // sp.spans) * sp.per_group,
                         min((item // sp.spans + 1) * sp.per_group, f.d.blocks)):
            pool_filters(packed + blk * L * g.CRS, bias + blk * L, g.K - blk * L, origin, f,
                         relu, y + blk * L * f.p.Pq, idx + blk * L * f.p.Pq, start,
                         min(start + sp.span, positions))


cdef void fused_forward(const floating* x,     # IN  (N, C, H, W)
                        const floating* w,     # IN  (K, C, R, S)
                        const floating* bias,  # IN  (K,) or NULL
                        const Fused* f, bint relu,
                        floating* y,           # OUT (N, K, Hq, Wq)
                        int64_t* idx,          # OUT (N, K, Hq, Wq)
                        floating* work) noexcept nogil:  # TMP forward_workspace
    """Wave after wave of images: staging, then the tiles (separate parallel
    loops, each ending with a barrier)."""
    cdef const Geometry* g = &f.d.g
    cdef floating* staged = work + packed_elems(&f.d)
    cdef const floating* origin
    cdef Py_ssize_t wave, first, count, out
    cdef int threads
    pack_weights(w, bias, &f.d, False, work)
    for wave in range(ceil_div(g.N, f.wave)):
        first = wave * f.wave
        count = min(f.wave, g.N - first)
        threads = threads_for(count * g.K * g.CRS * f.p.Pq * f.p.elements,
                              f.d.blocks * count * (f.nvectors if f.nvectors else f.p.Pq))
        origin = x + first * g.C * g.H * g.W
        if f.staged_elems:
            stage_fused_images(origin, f, count, threads, staged)
            origin = staged
        out = first * g.K * f.p.Pq
        if f.by_filters:
            pool_filters_items(work, f, origin, relu, y + out, idx + out, count * f.p.Pq,
                               threads)
        else:
            pool_rows_items(work, f, origin, relu, y + out, idx + out, count * f.nvectors,
                            threads)


def conv2d_max_pool2d_forward(FusedPlan plan,
                              const floating[:, :, :, ::1] x,  # IN  (N, C, H, W)
                              const floating[:, :, :, ::1] w,  # IN  (K, C, R, S)
                              const floating[::1] b,           # IN  (K,) or None
                              bint relu,
                              floating[:, :, :, ::1] y,        # OUT (N, K, Hq, Wq)
                              int64_t[:, :, :, ::1] idx,       # OUT (N, K, Hq, Wq)
                              floating[::1] work):             # TMP plan.forward_workspace
    """conv2d_max_pool2d_forward(plan, x, w, b, relu, y, idx, work)

    y, idx = max_pool2d(relu(conv2d(x, w, b)) if relu else conv2d(x, w, b),
    pool_size, pool_stride, return_indices=True) for the geometry of
    ``plan``, without storing the convolution's output.  The caller has
    checked every shape against the plan.
    """
    cdef const floating* bias = NULL
    if b is not None:
        bias = &b[0]
    with nogil:
        fused_forward(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bias, &plan.f, relu, &y[0, 0, 0, 0],
                      &idx[0, 0, 0, 0], &work[0])


# ----------------------------------------------------------------- backward

cdef void scatter_plane(const floating* gy,    # IN  (Pq,) one filter's pooled gradient
                        const int64_t* idx,    # IN  (Pq,) conv-plane indices
                        const floating* y,     # IN  (Pq,) pooled output, or NULL
                        Py_ssize_t Pq, Py_ssize_t P,
                        floating* g) noexcept nogil:  # OUT (P,) dense gradient
    """g = 0, then g[idx[q]] += gy[q] in q order (as max_pool2d_backward adds
    them); with ``y``, only where y > 0 or NaN (relu's gradient: y is relu
    of the convolution at the window's argmax)."""
    cdef Py_ssize_t q
    memset(g, 0, P * sizeof(floating))
    if y == NULL:
        for q in range(Pq):
            g[idx[q]] += gy[q]
    else:
        for q in range(Pq):
            g[idx[q]] += keep_if(not (y[q] <= 0), gy[q])


cdef void unpool_image(const floating* gy,    # IN  (K, Pq) one image
                       const int64_t* idx,    # IN  (K, Pq) conv-plane indices
                       const floating* y,     # IN  (K, Pq) pooled output, or NULL
                       const Fused* f,
                       floating* g) noexcept nogil:  # OUT (K, P) dense gradient
    cdef const Geometry* geo = &f.d.g
    cdef Py_ssize_t Pq = f.p.Pq
    cdef Py_ssize_t k
    for k in range(geo.K):
        scatter_plane(gy + k * Pq, idx + k * Pq, y + k * Pq if y != NULL else NULL, Pq, geo.P,
                      g + k * geo.P)


cdef void unpool_images(const floating* gy, const int64_t* idx, const floating* y,
                        const Fused* f, Py_ssize_t count, int threads,
                        floating* g) noexcept nogil:  # OUT (count, K, P)
    cdef const Geometry* geo = &f.d.g
    cdef Py_ssize_t pooled = geo.K * f.p.Pq
    cdef Py_ssize_t n
    if threads == 1:
        for n in range(count):
            unpool_image(gy + n * pooled, idx + n * pooled, NULL if y == NULL else y + n * pooled,
                         f, g + n * geo.K * geo.P)
    else:
        for n in prange(count, num_threads=threads, schedule="static"):
            unpool_image(gy + n * pooled, idx + n * pooled, NULL if y == NULL else y + n * pooled,
                         f, g + n * geo.K * geo.P)


cdef Py_ssize_t split_plane(const floating* gy,   # IN  (Pq,) one filter's pooled gradient
                            const int64_t* idx,   # IN  (Pq,) conv-plane indices
                            const floating* y,    # IN  (Pq,) pooled output, or NULL
                            const Fused* f,
                            Py_ssize_t element_stride,
                            floating* ge) noexcept nogil:  # OUT (E + 1, .) at this plane
    """Per window element e, gy where the window's argmax is element e, else
    +0.0 (ReLU-masked with ``y``), at ge + e * element_stride, and the
    masked gradient itself after the last element.  Returns how many indices
    are one of their window's elements (all, unless ``idx`` did not come
    from the forward).  One loop per output, each with one store, which the
    compiler vectorises (with more outputs per loop it gives up checking
    that they cannot overlap the inputs)."""
    cdef Py_ssize_t Pq = f.p.Pq, E = f.p.elements
    cdef const int64_t* base = f.base
    cdef Py_ssize_t e, q
    cdef Py_ssize_t matched = 0
    cdef int32_t c, hits
    cdef floating* out
    # Element codes are a*Wo + t (|idx - base| < 2**31: the plane is that
    # small); + 0 makes -0.0 the +0.0 that 0 + gy gives.
    if E == 4:
        return split4(gy, idx, base, y, f.codes, Pq, element_stride, ge)
    for e in range(E):
        c = <int32_t>f.codes[e]
        out = ge + e * element_stride
        hits = 0
        if y == NULL:
            for q in range(Pq):
                out[q] = keep_if(<int32_t>(idx[q] - base[q]) == c, gy[q] + 0)
                hits += <int32_t>(idx[q] - base[q]) == c
        else:
            for q in range(Pq):
                out[q] = keep_if((<int32_t>(idx[q] - base[q]) == c) & (not (y[q] <= 0)),
                                 gy[q] + 0)
                hits += <int32_t>(idx[q] - base[q]) == c
        matched += hits
    out = ge + E * element_stride
    if y == NULL:
        for q in range(Pq):
            out[q] = gy[q] + 0
    else:
        for q in range(Pq):
            out[q] = keep_if(not (y[q] <= 0), gy[q] + 0)
    return matched


cdef Py_ssize_t split_image(const floating* gy,   # IN  (K, Pq) one image
                            const int64_t* idx,   # IN  (K, Pq)
                            const floating* y,    # IN  (K, Pq) or NULL
                            const Fused* f,
                            Py_ssize_t element_stride,
                            floating* ge) noexcept nogil:  # OUT (E + 1, ., K, Pq) at this image
    cdef Py_ssize_t Pq = f.p.Pq
    cdef Py_ssize_t k
    cdef Py_ssize_t matched = 0
    for k in range(f.d.g.K):
        matched += split_plane(gy + k * Pq, idx + k * Pq, NULL if y == NULL else y + k * Pq, f,
                               element_stride, ge + k * Pq)
    return matched


cdef bint weight_grad_by_elements(const floating* gy,   # IN  (N, K, Hq, Wq)
                                  const int64_t* idx,   # IN  (N, K, Hq, Wq), unchecked
                                  const floating* y,    # IN  (N, K, Hq, Wq) or NULL
                                  const floating* x,    # IN  (N, C, H, W)
                                  const Fused* f,
                                  floating* gw,         # OUT (K, CRS)
                                  floating* gb,         # OUT (K,)
                                  floating* work) noexcept nogil:
    """gw = sum over window elements e and pooled positions q of the pooled
    gradient where e is q's argmax times the input under tap t of element e
    of window q: per block of images, the gradient split by element (no
    dense gradient, no scatter) and dot_tiles over each element's windows in
    the staged copy (pool_rows' layout); gb from the masked gradient.
    Blocks and elements are added in order.  Indices are only compared, so
    they need no range check: unless every one is one of its window's
    elements (then only a scatter is right), this returns False having
    written nothing to gw and gb."""
    cdef const Geometry* g = &f.d.g
    cdef Py_ssize_t E = f.p.elements, K = g.K, CRS = g.CRS, Pq = f.p.Pq
    cdef Py_ssize_t block = f.element_block
    cdef floating* staged = work
    cdef floating* ge = staged + block * f.staged_elems
    cdef floating* part = ge + (E + 1) * block * K * Pq
    cdef floating* sums = part + E * K * CRS + K
    cdef Py_ssize_t k_tiles = ceil_div(K, DOT_MR)
    cdef Py_ssize_t blk, first, count, n, e, k, t, item, element, k0, matched, stride
    cdef Py_ssize_t pooled = K * Pq
    cdef floating total
    cdef int threads
    for blk in range(ceil_div(g.N, block)):
        first = blk * block
        count = min(block, g.N - first)
        stride = count * pooled
        threads = threads_for(count * K * CRS * Pq * E, E * k_tiles)
        matched = 0
        if threads == 1:
            for n in range(count):
                matched += split_image(gy + (first + n) * pooled, idx + (first + n) * pooled,
                                       NULL if y == NULL else y + (first + n) * pooled, f,
                                       stride, ge + n * pooled)
        else:
            for n in prange(count, num_threads=threads, schedule="static"):
                matched += split_image(gy + (first + n) * pooled, idx + (first + n) * pooled,
                                       NULL if y == NULL else y + (first + n) * pooled, f,
                                       stride, ge + n * pooled)
        if matched != count * pooled:
            return False
        stage_fused_images(x + first * g.C * g.H * g.W, f, count, threads, staged)
        if threads == 1:
            for item in range(E * k_tiles):
                element = item // k_tiles
                k0 = item % k_tiles * DOT_MR
                dot_tiles(ge + element * stride + k0 * Pq, K - k0, staged, &f.elements[element],
                          count, 0, CRS, part + element * K * CRS + k0 * CRS)
        else:
            for item in prange(E * k_tiles, num_threads=threads, schedule="dynamic"):
                element = item // k_tiles
                k0 = item % k_tiles * DOT_MR
                dot_tiles(ge + element * stride + k0 * Pq, K - k0, staged, &f.elements[element],
                          count, 0, CRS, part + element * K * CRS + k0 * CRS)
        for k in range(K):
            part[E * K * CRS + k] = plane_sum(ge + E * stride + k * Pq, Pq, count, pooled)
        # The block's sums, element after element, then added in block order
        # (kept in the workspace until every block has been split).
        for t in range(K * CRS):
            total = part[t]
            for e in range(1, E):
                total = total + part[e * K * CRS + t]
            sums[t] = total if blk == 0 else sums[t] + total
        for k in range(K):
            total = part[E * K * CRS + k]
            sums[K * CRS + k] = total if blk == 0 else sums[K * CRS + k] + total
    memcpy(gw, sums, K * CRS * sizeof(floating))
    memcpy(gb, sums + K * CRS, K * sizeof(floating))
    return True


cdef Py_ssize_t sparse_workspace(const Fused* f) noexcept nogil:
    """Elements of weight_grad_sparse's workspace."""
    cdef const Geometry* g = &f.d.g
    cdef Py_ssize_t L = f.d.lanes
    cdef Py_ssize_t block = min(f.sparse_block, ceil_div(g.N, SPARSE_IMAGES) * SPARSE_IMAGES)
    cdef Py_ssize_t staged = (block if f.sparse_staged else 1) * f.sparse_image + L
    cdef Py_ssize_t items = block // SPARSE_IMAGES
    return (2 * block * f.sparse_groups * f.p.Pq * L + staged
            + items * f.sparse_groups * (g.CRS + 1) * L + g.K * (g.CRS + 1))


cdef Py_ssize_t sparse_image_codes(const floating* gy,  # IN  (K, Pq) one image
                                   const int64_t* idx,  # IN  (K, Pq)
                                   const floating* y,   # IN  (K, Pq) or NULL
                                   const Fused* f,
                                   floating* gyt,       # OUT (groups, Pq, L) masked gy
                                   floating* codes) noexcept nogil:  # OUT (groups, Pq, L)
    """Filters as lanes: per pooled position, each filter's gradient (+0.0
    for -0.0; masked by y > 0 under ReLU; 0 past K) and the table lane of
    its argmax element (vpick's code).  Per chunk of pooled positions, the
    rows of a vector of filters (contiguous, vectorised) are built on the
    stack, then transposed to filters as lanes block by block in registers.
    Returns how many indices are one of their window's elements (all,
    unless ``idx`` did not come from the forward)."""
    cdef floating rows[2][MAX_LANES * SPARSE_CHUNK]
    cdef floating tail[MAX_LANES * MAX_LANES]
    cdef const Geometry* g = &f.d.g
    cdef Py_ssize_t L = f.d.lanes, Pq = f.p.Pq
    cdef Py_ssize_t grp, chunk, lane, k, q0, count, blocks, b, j
    cdef floating* out
    cdef Py_ssize_t matched = 0
    for grp in range(f.sparse_groups):
        for chunk in range(ceil_div(Pq, SPARSE_CHUNK)):
            q0 = chunk * SPARSE_CHUNK
            count = min(<Py_ssize_t>SPARSE_CHUNK, Pq - q0)
            for lane in range(L):
                k = grp * L + lane
                if k < g.K:
                    matched += sparse_codes(gy + k * Pq + q0, idx + k * Pq + q0, f.base + q0,
                                            NULL if y == NULL else y + k * Pq + q0, count,
                                            f.p.kh * g.Wo, <int32_t>g.Wo, <int32_t>f.p.kw,
                                            <int32_t>f.sparse_a_step, <int32_t>g.sw,
                                            &rows[0][lane * SPARSE_CHUNK],
                                            &rows[1][lane * SPARSE_CHUNK])
                else:
                    # Lanes past K are never read out: zero gradients, and
                    # lane 0's codes (any valid table lane).
                    memset(&rows[0][lane * SPARSE_CHUNK], 0, count * sizeof(floating))
                    memcpy(&rows[1][lane * SPARSE_CHUNK], &rows[1][0], count * sizeof(floating))
            blocks = count // L
            for j in range(2):
                out = (gyt if j == 0 else codes) + (grp * Pq + q0) * L
                for b in range(blocks):
                    vtranspose(&rows[j][b * L], SPARSE_CHUNK, out + b * L * L, L)
                if blocks * L < count:
                    # (The block's rows past count are never copied out.)
                    vtranspose(&rows[j][blocks * L], SPARSE_CHUNK, tail, L)
                    memcpy(out + blocks * L * L, tail, (count - blocks * L) * L * sizeof(floating))
    return matched


cdef void sparse_tiles(const floating* gyt,      # IN  (images, groups, Pq, L)
                       const floating* codes,    # IN  (images, groups, Pq, L)
                       const floating** srcs,    # IN  (images,) each image's (staged) input
                       Py_ssize_t images, Py_ssize_t grp, const Fused* f,
                       floating* part) noexcept nogil:  # OUT (CRS + 1, L) lane sums
    """For the filters of vector ``grp``, lane by lane: sum over the images'
    pooled positions of the gradient times, per tap, the input under the tap
    of the window's argmax element (picked by its code from a table holding
    the window row's inputs for every element), SPARSE_NR taps per pass;
    and the gradients' sum (the bias's) after the taps."""
    cdef vec acc[SPARSE_NR]
    cdef vec bias, gv, cv
    cdef Py_ssize_t offs[SPARSE_NR]
    cdef Py_ssize_t L = lanes(gyt)
    cdef Py_ssize_t CRS = f.d.g.CRS, Pq = f.p.Pq, groups = f.sparse_groups
    cdef Py_ssize_t half = f.sparse_half
    cdef const Py_ssize_t* windows = f.sparse_windows
    cdef const floating* gp
    cdef const floating* cp
    cdef const floating* origin
    cdef const floating* src
    cdef Py_ssize_t tile, t0, u, n, q
    bias = cnx_zero()
    for tile in range(ceil_div(CRS, SPARSE_NR)):
        t0 = tile * SPARSE_NR
        for u in range(SPARSE_NR):
            # Taps past CRS repeat the last one: computed, not stored.
            offs[u] = f.sparse_taps[min(t0 + u, CRS - 1)]
            acc[u] = cnx_zero()
        for n in range(images):
            gp = gyt + (n * groups + grp) * Pq * L
            cp = codes + (n * groups + grp) * Pq * L
            src = srcs[n]
            for q in range(Pq):
                gv = vload(gp + q * L)
                cv = vload(cp + q * L)
                origin = src + windows[q]
                for u in range(SPARSE_NR):
                    acc[u] = vfma(gyt, acc[u], gv, vpick(gyt, vhalves(origin + offs[u],
                                                                      origin + offs[u] + half),
                                                         cv))
                if tile == 0:
                    bias = vadd(gyt, bias, gv)
        for u in range(min(<Py_ssize_t>SPARSE_NR, CRS - t0)):
            vstore(part + (t0 + u) * L, acc[u])
    vstore(part + CRS * L, bias)


cdef void sparse_item(const floating* gyt, const floating* codes, const floating* x,
                      const floating* staged, const Fused* f, Py_ssize_t first,
                      Py_ssize_t local, Py_ssize_t count,
                      floating* part) noexcept nogil:  # OUT (groups, CRS + 1, L)
    """Images local..local+count-1 of the block starting at image ``first``."""
    cdef const Geometry* g = &f.d.g
    cdef const floating* srcs[SPARSE_IMAGES]
    cdef Py_ssize_t per = f.sparse_groups * f.p.Pq * f.d.lanes
    cdef Py_ssize_t n, grp
    for n in range(count):
        if f.sparse_staged:
            srcs[n] = staged + (local + n) * f.sparse_image
        elif first + local + n == g.N - 1:
            # The tables read up to a vector past a row: the last image from a
            # copy with zeros after it.
            srcs[n] = staged
        else:
            srcs[n] = x + (first + local + n) * f.sparse_image
    for grp in range(f.sparse_groups):
        sparse_tiles(gyt + local * per, codes + local * per, srcs, count, grp, f,
                     part + grp * (g.CRS + 1) * f.d.lanes)


cdef bint weight_grad_sparse(const floating* gy,   # IN  (N, K, Hq, Wq)
                             const int64_t* idx,   # IN  (N, K, Hq, Wq), unchecked
                             const floating* y,    # IN  (N, K, Hq, Wq) or NULL
                             const floating* x,    # IN  (N, C, H, W), all finite
                             const Fused* f,
                             floating* gw,         # OUT (K, CRS)
                             floating* gb,         # OUT (K,)
                             floating* work) noexcept nogil:
    """gw = sum over pooled positions of the pooled gradient times the input
    under each tap of the window's argmax element alone (1/elements of the
    dense multiply-adds), with filters as lanes; gb from the same
    gradients.  Blocks of images, items of SPARSE_IMAGES images in each,
    added in order.  Indices are only compared: unless every one is one of
    its window's elements (then only a scatter is right), this returns
    False having written nothing to gw and gb.  The sum has only the
    argmax terms, so x must be finite to match the dense gradient's NaN."""
    cdef const Geometry* g = &f.d.g
    cdef Py_ssize_t L = f.d.lanes, K = g.K, CRS = g.CRS, Pq = f.p.Pq
    cdef Py_ssize_t groups = f.sparse_groups
    cdef Py_ssize_t block = min(f.sparse_block, ceil_div(g.N, SPARSE_IMAGES) * SPARSE_IMAGES)
    cdef Py_ssize_t per = groups * Pq * L
    cdef Py_ssize_t pooled = K * Pq
    cdef Py_ssize_t image = g.C * g.H * g.W
    cdef Py_ssize_t stride = groups * (CRS + 1) * L
    cdef floating* gyt = work
    cdef floating* codes = gyt + block * per
    cdef floating* staged = codes + block * per
    cdef floating* parts = staged + (block if f.sparse_staged else 1) * f.sparse_image + L
    cdef floating* sums = parts + block // SPARSE_IMAGES * stride
    cdef floating* lane_sums
    cdef Py_ssize_t blk, first, count, n, items, item, k, t, grp
    cdef Py_ssize_t matched
    cdef floating value
    cdef int threads
    for blk in range(ceil_div(g.N, block)):
        first = blk * block
        count = min(block, g.N - first)
        items = ceil_div(count, SPARSE_IMAGES)
        threads = threads_for(count * K * CRS * Pq, items)
        matched = 0
        if threads == 1:
            for n in range(count):
                matched += sparse_image_codes(gy + (first + n) * pooled, idx + (first + n) * pooled,
                                              NULL if y == NULL else y + (first + n) * pooled, f,
                                              gyt + n * per, codes + n * per)
        else:
            for n in prange(count, num_threads=threads, schedule="static"):
                matched += sparse_image_codes(gy + (first + n) * pooled, idx + (first + n) * pooled,
                                              NULL if y == NULL else y + (first + n) * pooled, f,
                                              gyt + n * per, codes + n * per)
        if matched != count * pooled:
            return False
        if f.sparse_staged:
            if threads == 1:
                for n in range(count):
                    stage_padded(x + (first + n) * image, &f.d, staged + n * f.sparse_image)
            else:
                for n in prange(count, num_threads=threads, schedule="static"):
                    stage_padded(x + (first + n) * image, &f.d, staged + n * f.sparse_image)
            memset(staged + count * f.sparse_image, 0, L * sizeof(floating))
        elif first + count == g.N:
            memcpy(staged, x + (g.N - 1) * image, image * sizeof(floating))
            memset(staged + image, 0, L * sizeof(floating))
        if threads == 1:
            for item in range(items):
                sparse_item(gyt, codes, x, staged, f, first, item * SPARSE_IMAGES,
                            min(<Py_ssize_t>SPARSE_IMAGES, count - item * SPARSE_IMAGES),
                            parts + item * stride)
        else:
            for item in prange(items, num_threads=threads, schedule="dynamic"):
                sparse_item(gyt, codes, x, staged, f, first, item * SPARSE_IMAGES,
                            min(<Py_ssize_t>SPARSE_IMAGES, count - item * SPARSE_IMAGES),
                            parts + item * stride)
        # Items added in order, into sums kept until every block is checked.
        for item in range(items):
            for k in range(K):
                grp = k // L
                lane_sums = parts + item * stride + grp * (CRS + 1) * L + k % L
                for t in range(CRS + 1):
                    value = lane_sums[t * L]
                    if blk > 0 or item > 0:
                        value = sums[k * (CRS + 1) + t] + value
                    sums[k * (CRS + 1) + t] = value
    for k in range(K):
        memcpy(gw + k * CRS, sums + k * (CRS + 1), CRS * sizeof(floating))
        gb[k] = sums[k * (CRS + 1) + CRS]
    return True


cdef Py_ssize_t fused_backward(const floating* gy,    # IN  (N, K, Hq, Wq)
                               const int64_t* idx,    # IN  (N, K, Hq, Wq)
                               const floating* y,     # IN  (N, K, Hq, Wq) or NULL
                               const floating* x,     # IN  (N, C, H, W)
                               const floating* w,     # IN  (K, C, R, S)
                               const FusedStepPlan* sp,
                               floating* gx,          # OUT (N, C, H, W) or NULL
                               floating* gw,          # OUT (K, CRS)
                               floating* gb,          # OUT (K,)
                               floating* work) noexcept nogil:  # TMP backward_workspace
    """The backward pass.  Returns -1, or without writing anything the flat
    position of the first index outside the conv plane [0, Ho*Wo) (checked
    before the scatter).  As conv2d_backward, the input gradient of a block
    holding NaN or inf (in w, or in the block's dense gradient under
    Winograd) is computed without reformulated passes."""
    cdef const Fused* f = sp.f
    cdef const Geometry* g = &f.d.g
    cdef Py_ssize_t block = sp.block
    cdef floating* dense = work
    cdef floating* part = dense + block * g.K * g.P
    cdef floating* kernels = part + g.K * (g.CRS + 1)
    cdef const ConvStepPlan* s
    cdef const ConvStepPlan* safe
    cdef Py_ssize_t blk, first, count, e, bad, pooled = g.K * f.p.Pq
    cdef bint w_finite = True
    cdef int threads
    # The split by elements has one term per (window, element), the dense
    # gradient one per convolution output: the same terms when the windows
    # tile the output exactly, else they differ by zero terms, which only
    # matter (0 * inf) when x holds NaN or inf.  (Offsets are int32 there.)
    if (gx == NULL and f.sparse_groups and all_finite(x, g.N * g.C * g.H * g.W)
            and weight_grad_sparse(gy, idx, y, x, f, gw, gb, work)):
        return -1
    if (gx == NULL and f.elements != NULL and g.P <= 2147483647
            and (f.tiled or all_finite(x, g.N * g.C * g.H * g.W))
            and weight_grad_by_elements(gy, idx, y, x, f, gw, gb, work)):
        return -1
    bad = first_outside(idx, g.N * pooled, g.P) if pooled > 0 else -1
    if bad >= 0:
        return bad
    if gx != NULL and sp.full_safe != NULL:
        w_finite = all_finite(w, g.K * g.CRS)
    for blk in range(ceil_div(g.N, block)):
        first = blk * block
        count = min(block, g.N - first)
        s = sp.full if count == block else sp.tail
        safe = sp.full_safe if count == block else sp.tail_safe
        threads = threads_for(count * g.K * g.P * 8, count)
        unpool_images(gy + first * pooled, idx + first * pooled,
                      NULL if y == NULL else y + first * pooled, f, count, threads, dense)
        if gx != NULL and safe != NULL and s.data_kernel != DATA_COL2IM and not (
                w_finite and (s.data_kernel != DATA_WINOGRAD
                              or all_finite(dense, count * g.K * g.P))):
            s = safe
        if gx != NULL:
            backward_data_pass(dense, w, s, gx + first * g.C * g.H * g.W, kernels)
        if blk == 0:
            backward_filter_pass(dense, x, s, gw, gb, kernels)
        else:
            # Block sums added in block order.
            backward_filter_pass(dense, x + first * g.C * g.H * g.W, s, part,
                                 part + g.K * g.CRS, kernels)
            for e in range(g.K * g.CRS):
                gw[e] = gw[e] + part[e]
            for e in range(g.K):
                gb[e] = gb[e] + part[g.K * g.CRS + e]
    return -1


def conv2d_max_pool2d_backward(FusedPlan plan,
                               const floating[:, :, :, ::1] gy,    # IN  (N, K, Hq, Wq)
                               const int64_t[:, :, :, ::1] idx,    # IN  (N, K, Hq, Wq)
                               const floating[:, :, :, ::1] y,     # IN  (N, K, Hq, Wq) or None
                               const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                               const floating[:, :, :, ::1] w,     # IN  (K, C, R, S)
                               floating[:, :, :, ::1] gx,          # OUT (N, C, H, W) or None
                               floating[:, :, :, ::1] gw,          # OUT (K, C, R, S)
                               floating[::1] gb,                   # OUT (K,)
                               floating[::1] work):                # TMP backward_workspace
    """conv2d_max_pool2d_backward(plan, gy, idx, y, x, w, gx, gw, gb, work)

    Gradients of sum(gy * y) for y, idx = the fused forward: gy to the
    indices (only where the pooled ``y`` > 0 or NaN when ``y`` is given: the
    ReLU's gradient), then the convolution's gradients, per block of images
    (``plan.set_backward``).  Returns -1, or without writing anything the
    flat position of the first index outside the conv plane [0, Ho*Wo).
    The caller has checked the shapes.
    """
    cdef const Fused* f = &plan.f
    cdef const floating* mask = NULL
    cdef floating* grad_x = NULL
    cdef Py_ssize_t bad = -1
    if y is not None:
        mask = &y[0, 0, 0, 0]
    if gx is not None:
        grad_x = &gx[0, 0, 0, 0]
    with nogil:
        bad = fused_backward(&gy[0, 0, 0, 0], &idx[0, 0, 0, 0], mask, &x[0, 0, 0, 0],
                             &w[0, 0, 0, 0], &plan.sp, grad_x, &gw[0, 0, 0, 0], &gb[0],
                             &work[0])
    return bad


# --------------------------------------------------------------------- steps
#
# The fused kernels as steps of the compiled executor (the convention:
# _step.pxd; listed by _conv_steps.pxi's step_kernels()).  plan[0] is the
# capsule of a FusedPlan's backward record (``FusedPlan.step_plan``).

cdef inline int fused_forward_step(const floating* x, const StepArgs* a) noexcept nogil:
    # p: 0 x IN (N, C, H, W), 1 w IN (K, C, R, S), 2 b IN (K,) or NULL,
    #    3 y OUT (N, K, Hq, Wq), 4 idx OUT (N, K, Hq, Wq) int64,
    #    5 work TMP (forward_workspace)
    # n: 0 relu (0 or 1)
    cdef const FusedStepPlan* sp = <const FusedStepPlan*>a.plan[0]
    fused_forward(x, <const floating*>a.p[1], <const floating*>a.p[2], sp.f, a.n[0] != 0,
                  <floating*>a.p[3], <int64_t*>a.p[4], <floating*>a.p[5])
    return STEP_OK


cdef inline int fused_backward_step(const floating* gy, const StepArgs* a) noexcept nogil:
    # p: 0 gy IN (N, K, Hq, Wq), 1 idx IN (N, K, Hq, Wq) int64,
    #    2 y IN (N, K, Hq, Wq) or NULL (no ReLU), 3 x IN, 4 w IN,
    #    5 gx OUT or NULL (no input gradient), 6 gw OUT, 7 gb OUT,
    #    8 work TMP (backward_workspace)
    cdef const FusedStepPlan* sp = <const FusedStepPlan*>a.plan[0]
    if fused_backward(gy, <const int64_t*>a.p[1], <const floating*>a.p[2],
                      <const floating*>a.p[3], <const floating*>a.p[4], sp, <floating*>a.p[5],
                      <floating*>a.p[6], <floating*>a.p[7], <floating*>a.p[8]) >= 0:
        return STEP_BAD_INDEX
    return STEP_OK


cdef int fused_forward_f32(const StepArgs* a) noexcept nogil:
    return fused_forward_step(<const float*>a.p[0], a)


cdef int fused_forward_f64(const StepArgs* a) noexcept nogil:
    return fused_forward_step(<const double*>a.p[0], a)


cdef int fused_backward_f32(const StepArgs* a) noexcept nogil:
    return fused_backward_step(<const float*>a.p[0], a)


cdef int fused_backward_f64(const StepArgs* a) noexcept nogil:
    return fused_backward_step(<const double*>a.p[0], a)


def fused_step_kernels():
    """fused_step_kernels()

    {(name, dtype name): PyCapsule of the step kernel}: "conv2d_max_pool2d"
    (as ``F.conv2d_max_pool2d``) and "conv2d_max_pool2d_backward" (as
    ``F.conv2d_max_pool2d_backward``).
    """
    return {
        ("conv2d_max_pool2d", "float32"): step_capsule(fused_forward_f32),
        ("conv2d_max_pool2d", "float64"): step_capsule(fused_forward_f64),
        ("conv2d_max_pool2d_backward", "float32"): step_capsule(fused_backward_f32),
        ("conv2d_max_pool2d_backward", "float64"): step_capsule(fused_backward_f64),
    }

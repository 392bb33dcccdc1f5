# The input gradient of a strided convolution as stride-1 convolutions, one
# per phase of the input (included by _conv.pxi; dilation 1).
#
# With stride (sh, sw), the input row u (padded row U = u + ph) receives
# only the taps r with r % sh == U % sh = a: output row i = U // sh - m
# through tap r = a + m sh.  So the rows of phase a, the columns of phase b,
# form the correlation of gy with the flipped sub-filter w[:, :, a::sh,
# b::sw] (stride 1), which the forward algorithms compute with each sum kept
# in registers over all K * taps terms.  Every phase reads one copy of gy
# zero-padded to the rows and columns any phase reads (its planes may have
# a row or column more than the phase's positions, computed and dropped).
# col2im's columns w^T gy reduce over the K filters alone, and their scatter
# back onto gx costs as much again.  The phases' planes are then interleaved
# into gx (zeros where a phase has no tap).  The padding's zeros multiply w:
# like the stride-1 convolution of padded gy, a plan only for finite filters
# (reformulate).  With filters no larger than the stride no input position
# sums two taps, and the heuristics keep col2im.


cdef struct Phase:
    Py_ssize_t rows, cols         # gx positions of the phase: first_row + o, first_col + l
    Py_ssize_t first_row, first_col   # ... in units of the stride (U // sh, V // sw)
    Py_ssize_t taps_h, taps_w     # taps of the phase's sub-filter: r = a + m sh, s = b + n sw
    Layout t                      # padded gy (K channels) -> planes (C filters) around the phase
    Py_ssize_t* tables            # t's, NULL when the phase has no taps or positions
    Py_ssize_t row0, col0         # where the phase's positions start in t's output planes
    Py_ssize_t out_offset         # t's planes in a wave's outputs, per image
    Py_ssize_t packed_offset      # its packed sub-filter in the workspace


cdef struct PhaseGrad:
    Py_ssize_t count              # sh * sw phases, row phase p // sw, column phase p % sw
    Phase* phases
    Py_ssize_t wave               # images per wave
    # gy zero-padded to what every phase reads: rows x cols, gy[0, 0] at
    # (-top, -left); in place when that is gy itself.
    Py_ssize_t top, left, rows, cols
    Py_ssize_t staged_elems       # per image of that copy, 0 in place
    Py_ssize_t out_elems          # per image of a wave: the phases' planes
    Py_ssize_t filter_elems       # the largest sub-filter (K, C, taps_h, taps_w)
    Py_ssize_t packed_elems       # every phase's packed sub-filter
    Py_ssize_t forward_elems      # the largest forward staging of a wave
    Py_ssize_t zeros_elems        # a row of zeros (the phases without taps)


cdef inline Py_ssize_t phase_span(Py_ssize_t size, Py_ssize_t pad, Py_ssize_t phase,
                                  Py_ssize_t stride, Py_ssize_t* first) noexcept nogil:
    """Positions u in [0, size) with (u + pad) % stride == phase; ``first``
    set to the smallest (u + pad) // stride."""
    cdef Py_ssize_t last = size - 1 + pad - phase
    first[0] = first_phase(pad, phase, stride)
    if last < 0:
        return 0
    return max(0, last // stride - first[0] + 1)


cdef inline bint phase_active(const Phase* p) noexcept nogil:
    return p.tables != NULL


cdef int init_phases(PhaseGrad* pg, const Geometry* g, Py_ssize_t itemsize,
                     Py_ssize_t budget) except -1:
    """Fill ``pg`` for the input gradient of geometry ``g`` (dilation 1);
    the phases' tables are ``pg``'s to free (free_phases)."""
    cdef Py_ssize_t e, a, b, bottom = 0, right = 0
    cdef Phase* p
    cdef Layout* t
    cdef bint any_taps = False
    pg.count = g.sh * g.sw
    pg.phases = <Phase*>PyMem_Malloc(pg.count * sizeof(Phase))
    if pg.phases == NULL:
        raise MemoryError()
    pg.top = pg.left = 0
    pg.out_elems = pg.filter_elems = pg.packed_elems = pg.forward_elems = 0
    pg.zeros_elems = ceil_div(g.W, g.sw)
    for e in range(pg.count):
        p = &pg.phases[e]
        p.tables = NULL
        a, b = e // g.sw, e % g.sw
        p.rows = phase_span(g.H, g.ph, a, g.sh, &p.first_row)
        p.cols = phase_span(g.W, g.pw, b, g.sw, &p.first_col)
        p.taps_h = ceil_div(g.R - a, g.sh) if a < g.R else 0
        p.taps_w = ceil_div(g.S - b, g.sw) if b < g.S else 0
        if p.rows == 0 or p.cols == 0 or p.taps_h == 0 or p.taps_w == 0:
            p.taps_h = p.taps_w = 0
            continue
        # Output o of the phase reads gy rows first_row + o - (taps_h - 1)
        # .. first_row + o: the padded copy spans every phase's rows.
        p.row0 = p.first_row - (p.taps_h - 1)
        p.col0 = p.first_col - (p.taps_w - 1)
        if not any_taps or p.row0 < pg.top:
            pg.top = p.row0
        if not any_taps or p.col0 < pg.left:
            pg.left = p.col0
        bottom = max(bottom, p.first_row + p.rows) if any_taps else p.first_row + p.rows
        right = max(right, p.first_col + p.cols) if any_taps else p.first_col + p.cols
        any_taps = True
    pg.rows, pg.cols = bottom - pg.top, right - pg.left
    pg.staged_elems = 0
    if any_taps and not (pg.top == 0 and pg.left == 0 and pg.rows == g.Ho and pg.cols == g.Wo):
        pg.staged_elems = g.K * pg.rows * pg.cols
    for e in range(pg.count):
        p = &pg.phases[e]
        if p.taps_h == 0:
            continue
        p.row0 -= pg.top
        p.col0 -= pg.left
        t = &p.t
        t.g.C, t.g.K, t.g.R, t.g.S = g.K, g.C, p.taps_h, p.taps_w
        t.g.H, t.g.W = pg.rows, pg.cols
        t.g.sh = t.g.sw = t.g.dh = t.g.dw = 1
        t.g.ph = t.g.pw = 0
        p.out_offset = pg.out_elems
        pg.out_elems += g.C * (pg.rows - p.taps_h + 1) * (pg.cols - p.taps_w + 1)
        pg.filter_elems = max(pg.filter_elems, g.K * g.C * p.taps_h * p.taps_w)
    # A wave's staged gy and planes stay in L2 from the staging to the interleave.
    pg.wave = clamp(min(budget, COLS_BYTES // itemsize) // max(pg.out_elems + pg.staged_elems, 1),
                    1, max(g.N, 1))
    for e in range(pg.count):
        p = &pg.phases[e]
        if p.taps_h == 0:
            continue
        p.t.g.N = pg.wave
        p.tables = init_layout(&p.t, itemsize, budget, False, True)
        p.packed_offset = pg.packed_elems
        pg.packed_elems += packed_elems(&p.t)
        pg.forward_elems = max(pg.forward_elems, p.t.wave * p.t.staged_elems)
    return 0


cdef void free_phases(PhaseGrad* pg) noexcept:
    cdef Py_ssize_t e
    if pg.phases == NULL:
        return
    for e in range(pg.count):
        PyMem_Free(pg.phases[e].tables)
    PyMem_Free(pg.phases)
    pg.phases = NULL


cdef inline Py_ssize_t phases_workspace(const PhaseGrad* pg) noexcept nogil:
    """Packed sub-filters, one sub-filter gathered, then per wave the staged
    gy, the phases' planes and the forward staging, and a row of zeros."""
    return (pg.packed_elems + pg.filter_elems
            + pg.wave * (pg.staged_elems + pg.out_elems) + pg.forward_elems + pg.zeros_elems)


cdef void gather_sub_filter(const floating* w,   # IN  (K, C, R, S)
                            const Geometry* g, Py_ssize_t a, Py_ssize_t b, const Phase* p,
                            floating* sub) noexcept nogil:  # OUT (K, C, taps_h, taps_w)
    """sub[k, c, m, n] = w[k, c, a + m sh, b + n sw]: the phase's taps, as
    pack_weights reads the filters of the input gradient's convolution."""
    cdef Py_ssize_t kc, m, n
    for kc in range(g.K * g.C):
        for m in range(p.taps_h):
            for n in range(p.taps_w):
                sub[0] = w[(kc * g.R + a + m * g.sh) * g.S + b + n * g.sw]
                sub += 1


cdef void stage_gy_image(const floating* gy,   # IN  (K, Ho, Wo) one image
                         const Geometry* g, const PhaseGrad* pg,
                         floating* dst) noexcept nogil:  # OUT (K, rows, cols) zeros kept
    """The rows of gy inside the padded copy (its zeros are written once per call)."""
    cdef Py_ssize_t k, z, lo, hi
    valid_run(pg.cols, 1, pg.left, g.Wo, &lo, &hi)
    for k in range(g.K):
        for z in range(max(0, -pg.top), min(pg.rows, g.Ho - pg.top)):
            copy_run(dst + (k * pg.rows + z) * pg.cols + lo,
                     gy + (k * g.Ho + z + pg.top) * g.Wo + lo + pg.left, hi - lo)


cdef void stage_gy(const floating* gy,   # IN  (count, K, Ho, Wo)
                   const Geometry* g, const PhaseGrad* pg,
                   Py_ssize_t count, int threads,
                   floating* dst) noexcept nogil:  # OUT (count, staged_elems)
    cdef Py_ssize_t n
    if threads == 1:
        for n in range(count):
            stage_gy_image(gy + n * g.K * g.P, g, pg, dst + n * pg.staged_elems)
    else:
        for n in prange(count, num_threads=threads, schedule="dynamic"):
            stage_gy_image(gy + n * g.K * g.P, g, pg, dst + n * pg.staged_elems)


cdef const floating* phase_row(const floating* out,   # IN  a wave's planes
                               const PhaseGrad* pg, const Phase* p,
                               Py_ssize_t plane, Py_ssize_t o,
                               const floating* zeros) noexcept nogil:
    """Row o of the phase's plane ``plane`` (n C + c) of the wave; zeros
    when the phase has no tap."""
    if not phase_active(p):
        return zeros
    return (out + pg.wave * p.out_offset
            + (plane * p.t.g.Ho + p.row0 + o) * p.t.g.Wo + p.col0)


cdef void unphase_plane(const floating* out,  # IN  a wave's planes
                        const Geometry* g, const PhaseGrad* pg,
                        Py_ssize_t plane,     # n C + c in the wave
                        const floating* zeros,
                        floating* gx) noexcept nogil:  # OUT (H, W) that plane of gx
    """gx[u, v] = row (u + ph) // sh - first_row, column (v + pw) // sw -
    first_col of phase ((u + ph) % sh, (v + pw) % sw); with sw = 2 the two
    column phases of a row in one interleaving loop."""
    cdef Py_ssize_t u, i, b, j, e, v0
    cdef const Phase* p
    cdef const Phase* q
    cdef const floating* src
    cdef floating* row
    for u in range(g.H):
        i = (u + g.ph) // g.sh
        row = gx + u * g.W
        e = (u + g.ph) % g.sh * g.sw
        if g.sw == 2:
            # Column phase b starts at v = first_col 2 + b - pw: 0 or 1.
            p, q = &pg.phases[e], &pg.phases[e + 1]
            if not (phase_active(p) or phase_active(q)):
                memset(row, 0, g.W * sizeof(floating))
            elif p.first_col * 2 - g.pw == 0:
                interleave(phase_row(out, pg, p, plane, i - p.first_row, zeros),
                           phase_row(out, pg, q, plane, i - q.first_row, zeros), row, g.W)
            else:
                interleave(phase_row(out, pg, q, plane, i - q.first_row, zeros),
                           phase_row(out, pg, p, plane, i - p.first_row, zeros), row, g.W)
            continue
        for b in range(g.sw):
            p = &pg.phases[e + b]
            v0 = p.first_col * g.sw + b - g.pw
            src = phase_row(out, pg, p, plane, i - p.first_row, zeros)
            for j in range(p.cols):
                row[v0 + j * g.sw] = src[j]


cdef void unphase_images(const floating* out,  # IN  (count, ...) a wave's planes
                         const Geometry* g, const PhaseGrad* pg,
                         Py_ssize_t count, int threads, const floating* zeros,
                         floating* gx) noexcept nogil:  # OUT (count, C, H, W)
    cdef Py_ssize_t plane
    if threads == 1:
        for plane in range(count * g.C):
            unphase_plane(out, g, pg, plane, zeros, gx + plane * g.H * g.W)
    else:
        for plane in prange(count * g.C, num_threads=threads, schedule="dynamic"):
            unphase_plane(out, g, pg, plane, zeros, gx + plane * g.H * g.W)


cdef void data_grad_phases(const floating* gy,   # IN  (N, K, Ho, Wo)
                           const floating* w,    # IN  (K, C, R, S)
                           const Geometry* g, const PhaseGrad* pg,
                           floating* gx,         # OUT (N, C, H, W)
                           floating* work) noexcept nogil:  # TMP phases_workspace
    """Per wave of images, each phase's convolution of gy, then its planes
    interleaved into gx."""
    cdef floating* packed = work
    cdef floating* sub = packed + pg.packed_elems
    cdef floating* staged = sub + pg.filter_elems
    cdef floating* out = staged + pg.wave * pg.staged_elems
    cdef floating* forward_staged = out + pg.wave * pg.out_elems
    cdef floating* zeros = forward_staged + pg.forward_elems
    cdef Py_ssize_t e, wave, first, count
    cdef int threads
    cdef Layout t
    cdef const Phase* p
    cdef const floating* origin = gy
    for e in range(pg.count):
        p = &pg.phases[e]
        if phase_active(p):
            gather_sub_filter(w, g, e // g.sw, e % g.sw, p, sub)
            pack_weights(sub, NULL, &p.t, True, packed + p.packed_offset)
    memset(zeros, 0, pg.zeros_elems * sizeof(floating))
    memset(staged, 0, pg.wave * pg.staged_elems * sizeof(floating))
    for wave in range(ceil_div(g.N, pg.wave)):
        first = wave * pg.wave
        count = min(pg.wave, g.N - first)
        threads = threads_for(count * g.K * g.CRS * g.P, count * g.C)
        if pg.staged_elems:
            stage_gy(gy + first * g.K * g.P, g, pg, count, threads, staged)
            origin = staged
        else:
            origin = gy + first * g.K * g.P
        for e in range(pg.count):
            p = &pg.phases[e]
            if phase_active(p):
                t = p.t
                t.g.N = count
                forward_pass(origin, packed + p.packed_offset, &t, False,
                             out + pg.wave * p.out_offset, forward_staged)
        unphase_images(out, g, pg, count, threads, zeros, gx + first * g.C * g.H * g.W)

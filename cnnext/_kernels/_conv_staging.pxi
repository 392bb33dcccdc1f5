# Copies around the convolution microkernels (included by _conv.pxi): padded
# images, im2col panels, packed weights, gy transposed, and the scatter of
# input-gradient columns back onto the image (col2im).  Memory-bound loops;
# the stride-1 cases are masked vector copies, memset or loops gcc vectorises.


cdef inline void valid_run(Py_ssize_t length, Py_ssize_t step, Py_ssize_t offset,
                           Py_ssize_t size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) = the j in [0, length) with 0 <= j * step + offset < size."""
    lo[0] = 0 if offset >= 0 else ceil_div(-offset, step)
    hi[0] = 0 if size - 1 - offset < 0 else min(length, (size - 1 - offset) // step + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef inline void copy_run(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """dst[:n] = src[:n] in whole and masked vectors (runs are short: one
    output row)."""
    cdef Py_ssize_t L = lanes(src)
    cdef Py_ssize_t j = 0
    while j + L <= n:
        vstore(dst + j, vload(src + j))
        j += L
    if j < n:
        vstore_part(dst + j, vload_part(src + j, n - j), n - j)


cdef inline void pad_run(floating* dst,         # OUT dst[j] = src[j] for lo <= j < hi, else 0
                         const floating* src,   # IN  read at lo..hi-1 only
                         Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t length) noexcept nogil:
    """A zero-padded row in vectors, each lane loaded or zeroed by its mask:
    rows are short (a padded image row), where memset + memcpy + memset cost
    more in calls than in copying."""
    cdef Py_ssize_t L = lanes(src)
    cdef Py_ssize_t j = 0
    cdef Py_ssize_t a, b
    cdef vec v
    while j < length:
        a = clamp(lo - j, 0, L)
        b = clamp(hi - j, 0, L)
        if a == 0 and b == L:
            v = vload(src + j)
        elif a < b:
            v = vload_range(src + j, a, b)
        else:
            v = cnx_zero()
        if j + L <= length:
            vstore(dst + j, v)
        else:
            vstore_part(dst + j, v, length - j)
        j += L


cdef void gather_run(const floating* src,     # IN  one input row of ``size`` values
                     Py_ssize_t size, Py_ssize_t step, Py_ssize_t offset,
                     floating* dst,           # OUT dst[j] = src[j*step + offset], 0 outside
                     Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t lo, hi, j
    valid_run(length, step, offset, size, &lo, &hi)
    if step == 1:
        # src + offset may point before the row: only lanes lo..hi-1 are read.
        pad_run(dst, src + offset, lo, hi, length)
        return
    memset(dst, 0, lo * sizeof(floating))
    for j in range(lo, hi):
        dst[j] = src[j * step + offset]
    memset(dst + hi, 0, (length - hi) * sizeof(floating))


cdef void stage_padded(const floating* x,     # IN  (C, H, W) one image
                       const Layout* d,
                       floating* dst) noexcept nogil:  # OUT (C, padded_h, padded_w)
    """The rows and columns the windows reach, zeros in the padding."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t c, row, h
    for c in range(g.C):
        for row in range(d.padded_h):
            h = row - g.ph
            if 0 <= h < g.H:
                gather_run(x + (c * g.H + h) * g.W, g.W, 1, -g.pw, dst, d.padded_w)
            else:
                pad_run(dst, x, 0, 0, d.padded_w)
            dst += d.padded_w


cdef void stage_panel(const floating* x,      # IN  (C, H, W) one image
                      const Layout* d,
                      floating* dst) noexcept nogil:  # OUT (C*R*S, panel_w) im2col
    """dst[(c, r, s), i*Wo + j] = x[c, i*sh + r*dh - ph, j*sw + s*dw - pw] (0
    outside), copied from a zero-padded copy placed after the panel."""
    cdef const Geometry* g = &d.g
    cdef floating* padded = dst + g.CRS * d.panel_w
    cdef const floating* src
    cdef floating* row
    cdef Py_ssize_t c, r, s, i, j
    stage_padded(x, d, padded)
    for c in range(g.C):
        for r in range(g.R):
            for s in range(g.S):
                row = dst + ((c * g.R + r) * g.S + s) * d.panel_w
                for i in range(g.Ho):
                    src = padded + (c * d.padded_h + i * g.sh + r * g.dh) * d.padded_w + s * g.dw
                    if g.sw == 1:
                        copy_run(row, src, g.Wo)
                    else:
                        for j in range(g.Wo):
                            row[j] = src[j * g.sw]
                    row += g.Wo
                memset(row, 0, (d.panel_w - g.P) * sizeof(floating))


cdef void stage_image(const floating* x, const Layout* d, floating* dst) noexcept nogil:
    if d.source == SOURCE_PADDED:
        stage_padded(x, d, dst)
    else:
        stage_panel(x, d, dst)


cdef void pack_weights(const floating* w,     # IN  (K, C, R, S)
                       const floating* bias,  # IN  (K,) or NULL
                       const Layout* d,
                       bint flipped,          # d is the input gradient's convolution
                       floating* packed) noexcept nogil:  # OUT
    """Per block of ``d.group`` filters of layout ``d``, their (CRS, group)
    weights, then the bias padded to whole blocks; filters past K are zero.
    ``flipped``: the filters of d are w transposed (c <-> k) and flipped:
    d's filter k, channel c, tap rs is w's filter c, channel k, tap RS-1-rs."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t RS = g.R * g.S
    cdef Py_ssize_t blk, c, rs, m, k
    for blk in range(d.blocks):
        for c in range(g.C):
            for rs in range(RS):
                for m in range(d.group):
                    k = blk * d.group + m
                    if k >= g.K:
                        packed[m] = 0
                    elif flipped:
                        packed[m] = w[(c * g.K + k) * RS + RS - 1 - rs]
                    else:
                        packed[m] = w[(k * g.C + c) * RS + rs]
                packed += d.group
    for k in range(d.blocks * d.group):
        packed[k] = bias[k] if bias != NULL and k < g.K else 0


cdef void pack_columns_weights(const floating* w,     # IN  (K, CRS)
                               const Layout* d, const Backward* bw,
                               floating* packed) noexcept nogil:  # OUT
    """Per block of FWD_MR taps, (K, FWD_MR): w transposed, zeros past CRS;
    then FWD_MR zeros per block (start values of the tiles)."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t blk, k, m, t
    for blk in range(bw.col_blocks):
        for k in range(g.K):
            for m in range(FWD_MR):
                t = blk * FWD_MR + m
                packed[0] = w[k * g.CRS + t] if t < g.CRS else 0
                packed += 1
    memset(packed, 0, bw.col_blocks * FWD_MR * sizeof(floating))


cdef void pack_gy_transposed(const floating* gy,   # IN  (K, P) one image
                             const Geometry* g, Py_ssize_t kp,
                             floating* gyt) noexcept nogil:  # OUT (P, kp), zeros past K
    cdef Py_ssize_t p
    transpose(gy, g.K, g.P, g.P, gyt, kp)
    if kp > g.K:
        for p in range(g.P):
            memset(gyt + p * kp + g.K, 0, (kp - g.K) * sizeof(floating))


cdef void transpose(const floating* src,   # IN  (rows, src_stride)
                    Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t src_stride,
                    floating* dst,         # OUT (cols, dst_stride): dst[j, i] = src[i, j]
                    Py_ssize_t dst_stride) noexcept nogil:
    """Blocks of lanes x lanes (in registers with AVX-512), then the edges
    one element at a time, every source row read in runs: rows 4 KiB apart
    share cache sets, so reading down a column would evict the lines before
    their neighbours are read."""
    cdef Py_ssize_t L = lanes(src)
    cdef Py_ssize_t full_rows = rows - rows % L
    cdef Py_ssize_t full_cols = cols - cols % L
    cdef Py_ssize_t row_block, col_block, i, j
    for col_block in range(full_cols // L):
        for row_block in range(full_rows // L):
            vtranspose(src + (row_block * src_stride + col_block) * L, src_stride,
                       dst + (col_block * dst_stride + row_block) * L, dst_stride)
    for i in range(rows):
        for j in range(full_cols if i < full_rows else 0, cols):
            dst[j * dst_stride + i] = src[i * src_stride + j]


cdef void col2im_channel(const floating* col,   # IN  (R*S, P) columns of one channel
                         const Layout* d, const Backward* bw,
                         floating* gx) noexcept nogil:  # OUT (H, W) plane of that channel
    """gx = the columns added back onto the input positions they came from.
    Rows of at most one vector with unit column stride (lenet-2's 13 in
    float32) sum the pieces of their taps' columns in a register (the
    pieces listed per row by the plan): adding into gx tap after tap
    stalled on loads of values just stored at other offsets.  Otherwise tap
    after tap (as fast or faster for longer rows)."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t r, s, i, j, h, lo, hi, offset
    cdef floating* dst
    cdef const floating* src
    if bw.row_taps != NULL:
        for h in range(g.H):
            col2im_row(col, bw.row_taps + 4 * bw.row_starts[h],
                       bw.row_starts[h + 1] - bw.row_starts[h], g.W, gx + h * g.W)
        return
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
                    for j in range(lo, hi):
                        dst[j * g.sw + offset] += src[j]


cdef void col2im_row(const floating* col,   # IN  (R*S, P) columns of one channel
                     const Py_ssize_t* taps,  # IN  (pieces, 4) Backward.row_taps of the row
                     Py_ssize_t pieces, Py_ssize_t W,
                     floating* gx_row) noexcept nogil:  # OUT (W,) one row, W <= lanes
    """One row of col2im_channel: the sum of its pieces, lanes lo..hi-1 of
    col + offset each, in two chains (alternate taps) that hide the adder
    latency."""
    cdef Py_ssize_t e
    cdef vec even = cnx_zero()
    cdef vec odd = cnx_zero()
    for e in range(pieces):
        if taps[4 * e + 3]:
            odd = vadd(col, odd, vload_range(col + taps[4 * e], taps[4 * e + 1],
                                             taps[4 * e + 2]))
        else:
            even = vadd(col, even, vload_range(col + taps[4 * e], taps[4 * e + 1],
                                               taps[4 * e + 2]))
    even = vadd(col, even, odd)
    if W == lanes(col):
        vstore(gx_row, even)
    else:
        vstore_part(gx_row, even, W)

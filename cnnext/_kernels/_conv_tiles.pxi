# Register-tile microkernels of the convolution kernels (included by _conv.pxi).
#
# Each keeps a fixed-size tile of accumulators in vector registers (sizes
# from simd.h) for a whole reduction, so every load feeds several
# multiply-adds, and runs a sequence of tiles.  gcc keeps a tile in registers
# only when every access to it has compile-time indices after complete
# unrolling, and it unrolls (code-growing) loops completely only inside
# another loop: hence the loop over tiles inside each routine, loops over the
# tile with constant bounds and no conditions inside, and partial tiles
# stored whole into a spill buffer, then copied.  Check the assembly (no zmm
# loads/stores on the stack outside the spill path) after any change.
#
# The forward tiles take a ``relu`` flag: ReLU in the store epilogue, so a
# convolution followed by ReLU writes its output once.
#
#   nn_tiles   FWD_MR x FWD_NV vectors: out[m] = init[m] + sum over taps t of
#              A[t, m] * window_t, A packed (taps, FWD_MR), window t of vector
#              v at b[v] + taps[t]: the forward pass, input-gradient columns.
#   dot_tiles  DOT_MR x DOT_NR sums over positions of gy[m] * window[t], as
#              vector partial sums reduced once: the weight gradient when
#              there are few filters (windows contiguous along rows).
#   trn_tiles  trn_rows taps x TRN_NV (or fewer) vectors: gw^T[tap m, k lanes] += x[tap m, p] *
#              gy^T[p, k lanes]: the weight gradient for many filters.
#   kfwd_tiles KFW_MR positions x KFW_NV vectors of filters (more positions
#              with fewer vectors, see simd.h): y^T[p, k lanes] =
#              bias + sum over taps t of x[t, p] * w^T[t, k lanes]: the forward
#              pass (and input gradient) for many filters, no im2col needed;
#              also Winograd's 16 GEMMs (positions = tiles, taps = channels).


# trn_tiles and kfwd_tiles run TRN_NV or KFW_NV vectors of filters, half as
# many, or one vector, for layers with fewer filters (lenet-2's 16, strided's
# 32 in float32), where the wide tiles would leave most lanes idle.  The fused
# type compiles each width as its own routine, so the loops over vectors keep
# constant bounds; callers pass a NULL pointer of the width they want.
cdef struct WideTile:
    char unused


cdef struct HalfTile:
    char unused


cdef struct NarrowTile:
    char unused


ctypedef fused tile_width:
    WideTile
    HalfTile
    NarrowTile


# Taps of a trn_tiles tile of the widest width: fewer than trn_rows where
# that width has more vectors than the others' accumulators allow (simd.h
# headers may set them; by default as many as trn_rows).
cdef extern from *:
    """
    #ifndef CNX_TRN_MR_WIDE
    #define CNX_TRN_MR_WIDE CNX_TRN_MR
    #define CNX_TRN_MR_WIDE_F32 CNX_TRN_MR_F32
    #endif
    """
    Py_ssize_t TRN_MR_WIDE "CNX_TRN_MR_WIDE"
    Py_ssize_t TRN_MR_WIDE_F32 "CNX_TRN_MR_WIDE_F32"


cdef inline Py_ssize_t trn_tile_rows(const tile_width* width,
                                     const floating* like) noexcept nogil:
    """Taps per trn_tiles tile of that width, for the dtype ``like`` points to."""
    if tile_width is WideTile:
        if floating is float:
            return TRN_MR_WIDE_F32
        else:
            return TRN_MR_WIDE
    return trn_rows(like)


cdef inline Py_ssize_t kfw_rows(const tile_width* width) noexcept nogil:
    """Positions per kfwd_tiles tile of that width."""
    if tile_width is NarrowTile:
        return KFW_MR_NARROW
    elif tile_width is HalfTile:
        return KFW_MR_HALF
    else:
        return KFW_MR


cdef void nn_tiles(const floating* a,          # IN  (blocks, ntaps, FWD_MR) packed A
                   const floating* init,       # IN  (blocks * FWD_MR,) start values
                   Py_ssize_t rows,            # output rows (A columns) that exist
                   Py_ssize_t blk_begin, Py_ssize_t blk_end,
                   const floating* origin,     # IN  B operand of the first image
                   const Operand* op,
                   floating* out,              # OUT output row 0 of the first image
                   Py_ssize_t out_image_stride, Py_ssize_t out_stride,
                   Py_ssize_t first, Py_ssize_t last,
                   bint relu) noexcept nogil:
    """Vectors first..last-1 of the images' positions (numbered image after
    image), FWD_NV per tile (a tile may span two images), times the blocks of
    FWD_MR output rows blk_begin..blk_end-1, each tile's windows reused from
    cache by all the blocks; with ``relu``, ReLU applied as the results are
    stored."""
    cdef vec acc[FWD_MR][FWD_NV]
    cdef vec bv[FWD_NV]
    cdef floating spill[FWD_MR][FWD_NV][MAX_LANES]
    cdef const floating* b[FWD_NV]
    cdef floating* dst[FWD_NV]
    cdef const floating* ap
    cdef const floating* start
    cdef Py_ssize_t n = first // op.nvectors
    cdef Py_ssize_t q = first - n * op.nvectors
    cdef Py_ssize_t done = first
    cdef Py_ssize_t m, v, t, blk, offset, rows_valid, block_out
    while done < last:
        for v in range(FWD_NV):
            if done < last:
                b[v] = origin + n * op.image_stride + op.vectors[2 * q]
                dst[v] = out + n * out_image_stride + op.vectors[2 * q + 1]
                done += 1
                q += 1
                if q == op.nvectors:
                    q = 0
                    n += 1
            else:
                # Past the end, repeat a vector: the same values stored twice.
                b[v] = b[0]
                dst[v] = dst[0]
        for blk in range(blk_begin, blk_end):
            ap = a + blk * op.ntaps * FWD_MR
            start = init + blk * FWD_MR
            rows_valid = min(<Py_ssize_t>FWD_MR, rows - blk * FWD_MR)
            block_out = blk * FWD_MR * out_stride
            for m in range(FWD_MR):
                for v in range(FWD_NV):
                    acc[m][v] = vsplat(start[m])
            for t in range(op.ntaps):
                offset = op.taps[t]
                for v in range(FWD_NV):
                    bv[v] = vload(b[v] + offset)
                for m in range(FWD_MR):
                    for v in range(FWD_NV):
                        acc[m][v] = vfma(ap, acc[m][v], bv[v], vsplat(ap[m]))
                ap += FWD_MR
            if relu:
                for m in range(FWD_MR):
                    for v in range(FWD_NV):
                        acc[m][v] = vrelu(a, acc[m][v])
            if rows_valid == FWD_MR and op.store_lanes == lanes(a):
                for m in range(FWD_MR):
                    for v in range(FWD_NV):
                        vstore(dst[v] + block_out + m * out_stride, acc[m][v])
            else:
                for m in range(FWD_MR):
                    for v in range(FWD_NV):
                        vstore(&spill[m][v][0], acc[m][v])
                for m in range(rows_valid):
                    for v in range(FWD_NV):
                        memcpy(dst[v] + block_out + m * out_stride, &spill[m][v][0],
                               op.store_lanes * sizeof(floating))


cdef void dot_tiles(const floating* gy,       # IN  gy of the first image at filter k0
                    Py_ssize_t rows_valid,    # filters k0.. that exist (the rest repeat)
                    const floating* x,        # IN  windows of the first image
                    const Layout* d,
                    Py_ssize_t images,
                    Py_ssize_t t_begin, Py_ssize_t t_end,
                    floating* out) noexcept nogil:  # OUT (K, CRS) at filter k0
    """Taps t_begin..t_end-1, DOT_NR per tile, of DOT_MR filters from k0."""
    cdef vec acc[DOT_MR][DOT_NR]
    cdef vec bv[DOT_NR]
    cdef vec av
    cdef floating sums[DOT_MR][DOT_NR]
    cdef Py_ssize_t rows[DOT_MR]
    cdef Py_ssize_t taps[DOT_NR]
    cdef const floating* gy_row
    cdef const floating* x_row
    cdef Py_ssize_t m, t, n, i, j, v, tile, t0
    cdef Py_ssize_t L = lanes(gy)
    cdef Py_ssize_t full = d.row_len - d.row_len % L
    cdef Py_ssize_t tail = d.row_len - full
    cdef Py_ssize_t CRS = d.g.CRS
    for m in range(DOT_MR):
        # Filters past K repeat the last one: computed, not stored.
        rows[m] = min(m, rows_valid - 1) * d.g.P
    for tile in range(ceil_div(t_end - t_begin, DOT_NR)):
        t0 = t_begin + tile * DOT_NR
        for t in range(DOT_NR):
            taps[t] = d.x.taps[min(t0 + t, CRS - 1)]
        for m in range(DOT_MR):
            for t in range(DOT_NR):
                acc[m][t] = cnx_zero()
        for n in range(images):
            for i in range(d.rows):
                gy_row = gy + n * d.g.K * d.g.P + i * d.row_len
                x_row = x + n * d.x.image_stride + i * d.i_stride
                for v in range(full // L):
                    j = v * L
                    for t in range(DOT_NR):
                        bv[t] = vload(x_row + taps[t] + j)
                    for m in range(DOT_MR):
                        av = vload(gy_row + rows[m] + j)
                        for t in range(DOT_NR):
                            acc[m][t] = vfma(gy, acc[m][t], av, bv[t])
                if tail:
                    # Masked loads: values past the row (maybe inf) are never read.
                    for t in range(DOT_NR):
                        bv[t] = vload_part(x_row + taps[t] + full, tail)
                    for m in range(DOT_MR):
                        av = vload_part(gy_row + rows[m] + full, tail)
                        for t in range(DOT_NR):
                            acc[m][t] = vfma(gy, acc[m][t], av, bv[t])
        for m in range(DOT_MR):
            for t in range(DOT_NR):
                sums[m][t] = vsum(gy, acc[m][t])
        for m in range(min(rows_valid, <Py_ssize_t>DOT_MR)):
            for t in range(min(CRS - t0, <Py_ssize_t>DOT_NR)):
                out[m * CRS + t0 + t] = sums[m][t]


cdef void trn_tiles(const tile_width* width,  # NULL: selects the tile width
                    const floating* x,        # IN  windows of the first image
                    const floating* gyt,      # IN  (images, P, kp) gy^T at lane k0
                    Py_ssize_t kp,            # K padded to whole tiles
                    const Layout* d,
                    Py_ssize_t images,
                    Py_ssize_t t_begin, Py_ssize_t t_end,
                    floating* state) noexcept nogil:  # IN/OUT (CRS, kp) gw^T at k0
    """Taps t_begin..t_end-1, MR = trn_tile_rows per tile, of NV vectors of
    filters (TRN_NV, half as many for a HalfTile, 1 for a NarrowTile)."""
    cdef vec acc[TRN_MR][TRN_NV]
    cdef vec bv[TRN_NV]
    cdef floating spill[TRN_MR][TRN_NV][MAX_LANES]
    cdef const floating* x_row[TRN_MR]
    cdef Py_ssize_t taps[TRN_MR]
    cdef const floating* gy_row
    cdef floating* row
    cdef Py_ssize_t m, v, n, i, j, tile, t0, valid
    cdef Py_ssize_t L = lanes(x)
    cdef Py_ssize_t CRS = d.g.CRS
    cdef Py_ssize_t MR = trn_tile_rows(width, x)
    cdef Py_ssize_t NV = TRN_NV
    if tile_width is HalfTile:
        NV = TRN_NV // 2
    elif tile_width is NarrowTile:
        NV = 1
    for tile in range(ceil_div(t_end - t_begin, MR)):
        t0 = t_begin + tile * MR
        valid = min(CRS - t0, MR)
        row = state + t0 * kp
        for m in range(MR):
            # Taps past CRS repeat the last one: computed, not stored.
            taps[m] = d.x.taps[min(t0 + m, CRS - 1)]
            for v in range(NV):
                acc[m][v] = vload(row + min(m, valid - 1) * kp + v * L)
        for n in range(images):
            for i in range(d.rows):
                for m in range(MR):
                    x_row[m] = x + n * d.x.image_stride + taps[m] + i * d.i_stride
                gy_row = gyt + (n * d.g.P + i * d.row_len) * kp
                for j in range(d.row_len):
                    for v in range(NV):
                        bv[v] = vload(gy_row + v * L)
                    for m in range(MR):
                        for v in range(NV):
                            acc[m][v] = vfma(x, acc[m][v], bv[v],
                                             vsplat(x_row[m][j * d.j_stride]))
                    gy_row += kp
        if valid == MR:
            for m in range(MR):
                for v in range(NV):
                    vstore(row + m * kp + v * L, acc[m][v])
        else:
            for m in range(MR):
                for v in range(NV):
                    vstore(&spill[m][v][0], acc[m][v])
            for m in range(valid):
                for v in range(NV):
                    memcpy(row + m * kp + v * L, &spill[m][v][0], L * sizeof(floating))


cdef void kfwd_tiles(const tile_width* width,  # NULL: selects the tile width
                     const floating* w,       # IN  (ntaps, NV * L) packed filters k0..
                     const floating* bias,    # IN  (NV * L,) start values of filters k0..
                     Py_ssize_t filters,      # filters k0.. that exist
                     const floating* origin,  # IN  A operand of the first image
                     const Broadcast* op,
                     floating* out,           # OUT results of the first image at filter k0
                     Py_ssize_t first, Py_ssize_t last,
                     bint relu) noexcept nogil:
    """Positions first..last-1 (numbered image after image), MR per tile,
    times NV vectors of filters (KFW_MR x KFW_NV; KFW_MR_HALF x half as many
    for a HalfTile, KFW_MR_NARROW x 1 for a NarrowTile): the A values of
    each position are broadcast, the filters are the lanes.  Results are
    stored as vectors when filters are contiguous in the output, else
    transposed (NCHW); with ``relu``, ReLU applied as they are stored."""
    cdef vec acc[KFW_MR_MAX][KFW_NV]
    cdef vec bv[KFW_NV]
    cdef floating spill[KFW_MR_MAX][KFW_NV * MAX_LANES]
    cdef const floating* xp[KFW_MR_MAX]
    cdef floating* yp[KFW_MR_MAX]
    cdef const floating* wp
    cdef Py_ssize_t L = lanes(w)
    cdef Py_ssize_t P = op.npositions
    cdef Py_ssize_t n = first // P
    cdef Py_ssize_t p = first - n * P
    cdef Py_ssize_t done = first
    cdef Py_ssize_t m, v, t, k, offset, valid
    cdef Py_ssize_t NV = KFW_NV
    cdef Py_ssize_t MR = kfw_rows(width)
    if tile_width is HalfTile:
        NV = KFW_NV // 2
    elif tile_width is NarrowTile:
        NV = 1
    cdef bint vectors_out = op.out_filter == 1 and filters >= NV * L
    while done < last:
        valid = min(last - done, MR)
        for m in range(MR):
            if m < valid:
                xp[m] = origin + n * op.image_stride + op.positions[p]
                yp[m] = out + n * op.out_image + p * op.out_position
                p += 1
                if p == P:
                    p = 0
                    n += 1
            else:
                # Past the end, repeat a position: computed, not stored.
                xp[m] = xp[0]
                yp[m] = yp[0]
        done += valid
        for m in range(MR):
            for v in range(NV):
                acc[m][v] = vload(bias + v * L)
        wp = w
        for t in range(op.ntaps):
            offset = op.taps[t]
            for v in range(NV):
                bv[v] = vload(wp + v * L)
            for m in range(MR):
                for v in range(NV):
                    acc[m][v] = vfma(w, acc[m][v], bv[v], vsplat(xp[m][offset]))
            wp += NV * L
        if relu:
            for m in range(MR):
                for v in range(NV):
                    acc[m][v] = vrelu(w, acc[m][v])
        if vectors_out and valid == MR:
            for m in range(MR):
                for v in range(NV):
                    vstore(yp[m] + v * L, acc[m][v])
        else:
            for m in range(MR):
                for v in range(NV):
                    vstore(&spill[m][v * L], acc[m][v])
            for m in range(valid):
                for k in range(min(filters, NV * L)):
                    yp[m][k * op.out_filter] = spill[m][k]

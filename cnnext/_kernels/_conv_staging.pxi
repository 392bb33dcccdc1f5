# Copies around the convolution microkernels (included by _conv.pxi): padded
# images, im2col panels, packed weights, gy transposed, and the scatter of
# input-gradient columns back onto the image (col2im).  Memory-bound loops;
# the stride-1 cases are memcpy/memset or loops gcc vectorises.


cdef inline void valid_run(Py_ssize_t length, Py_ssize_t step, Py_ssize_t offset,
                           Py_ssize_t size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) = the j in [0, length) with 0 <= j * step + offset < size."""
    lo[0] = 0 if offset >= 0 else ceil_div(-offset, step)
    hi[0] = 0 if size - 1 - offset < 0 else min(length, (size - 1 - offset) // step + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef void gather_run(const floating* src,     # IN  one input row of ``size`` values
                     Py_ssize_t size, Py_ssize_t step, Py_ssize_t offset,
                     floating* dst,           # OUT dst[j] = src[j*step + offset], 0 outside
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
    """The rows and columns the windows reach, zeros in the padding."""
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


cdef void pack_forward_weights(const floating* w,     # IN  (K, CRS)
                               const floating* bias,  # IN  (K,) or NULL
                               const Layout* d,
                               floating* packed) noexcept nogil:
    """Per block of FWD_MR filters, (CRS, FWD_MR) weights; then the bias,
    padded to whole blocks.  Filters past K are zero."""
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


cdef void pack_data_weights(const floating* w,     # IN  (K, CRS)
                            const Layout* d,
                            floating* packed) noexcept nogil:
    """Per block of FWD_MR taps, (K, FWD_MR): w transposed, zeros past CRS;
    then FWD_MR zeros."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t blk, k, m, t
    for blk in range(d.col_blocks):
        for k in range(g.K):
            for m in range(FWD_MR):
                t = blk * FWD_MR + m
                packed[0] = w[k * g.CRS + t] if t < g.CRS else 0
                packed += 1
    memset(packed, 0, FWD_MR * sizeof(floating))


cdef void pack_gy_transposed(const floating* gy,   # IN  (K, P) one image
                             const Layout* d,
                             floating* gyt) noexcept nogil:  # OUT (P, k_padded)
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t k, p
    for p in range(g.P):
        for k in range(g.K):
            gyt[p * d.k_padded + k] = gy[k * g.P + p]
        for k in range(g.K, d.k_padded):
            gyt[p * d.k_padded + k] = 0


cdef void col2im_channel(const floating* col,   # IN  (R*S, P) columns of one channel
                         const Layout* d,
                         floating* gx) noexcept nogil:  # OUT (H, W) plane of that channel
    """gx = the columns added back onto the input positions they came from."""
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

# Winograd F(2x2, 3x3) for 3x3 convolutions with stride 1 and dilation 1
# (included by _conv.pxi): 2.25 times fewer multiply-adds than the direct
# kernels, the rest being cheap transforms (Lavin & Gray, 2016).
#
# Each 2x2 block of outputs ("tile") of filter k is A^T M A, where, at each of
# the 16 positions xi of a 4x4 transform,
#     M[xi][tile, k] = sum over c of V[xi][tile, c] * U[xi][c, k],
#     U = G w[k, c] G^T          (filter transform, once per call),
#     V = B^T patch[tile, c] B    (input transform of the tile's 4x4 patch).
# Channels are the vector lanes throughout: the padded input is staged
# channels-last, so the transforms work on whole vectors of channels (and of
# filters), and the 16 products run on ``kfwd_tiles`` (tiles as positions,
# channels as taps, filters as lanes).  Transform matrices (B^T, G, A^T):
#     [1  0 -1  0]    [ 1    0    0 ]    [1  1  1  0]
#     [0  1  1  0]    [1/2  1/2  1/2]    [0  1 -1 -1]
#     [0 -1  1  0]    [1/2 -1/2  1/2]
#     [0  1  0 -1]    [ 0    0    1 ]


cdef void winograd_filter(const floating* w,    # IN  (K, C, 3, 3)
                          const Layout* d,
                          bint flipped,         # d is the input gradient's convolution
                          Py_ssize_t item,      # block of filters * C + channel
                          floating* packed) noexcept nogil:  # OUT U of that block and channel
    """U[xi] = G g G^T of channel c of the filters of one block of layout
    ``d``, per xi packed as kfwd's filters (blocks of d.group filters, (C,
    group) each); zero past K."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t xi_elems = d.blocks * d.group * g.C
    cdef Py_ssize_t c = item % g.C
    cdef Py_ssize_t k0 = item // g.C * d.group
    # A block's 16 rows are xi_elems apart (a multiple of 4 KB for most C):
    # stored one transformed filter at a time, they would fall in one L1
    # cache set and evict each other; gathered here, each row is written whole.
    cdef floating rows[16][KFW_NV * MAX_LANES]
    cdef floating f[3][3]
    cdef floating h[4][3]
    cdef floating u[4][4]
    cdef Py_ssize_t i, j, k, kk
    for kk in range(d.group):
        k = k0 + kk
        for i in range(3):
            for j in range(3):
                if k >= g.K:
                    f[i][j] = 0
                elif flipped:
                    # Filter k, channel c of d is w's filter c, channel k, flipped.
                    f[i][j] = w[((c * g.K + k) * 3 + 2 - i) * 3 + 2 - j]
                else:
                    f[i][j] = w[((k * g.C + c) * 3 + i) * 3 + j]
        for j in range(3):
            h[0][j] = f[0][j]
            h[1][j] = (f[0][j] + f[1][j] + f[2][j]) / 2
            h[2][j] = (f[0][j] - f[1][j] + f[2][j]) / 2
            h[3][j] = f[2][j]
        for i in range(4):
            u[i][0] = h[i][0]
            u[i][1] = (h[i][0] + h[i][1] + h[i][2]) / 2
            u[i][2] = (h[i][0] - h[i][1] + h[i][2]) / 2
            u[i][3] = h[i][2]
        for i in range(4):
            for j in range(4):
                rows[i * 4 + j][kk] = u[i][j]
    for i in range(16):
        memcpy(packed + i * xi_elems + item * d.group, &rows[i][0],
               d.group * sizeof(floating))


cdef void winograd_filters(const floating* w,     # IN  (K, C, 3, 3)
                           const Layout* d,
                           bint flipped,
                           floating* packed) noexcept nogil:  # OUT U, then zeros
    """winograd_filter of every block of filters and channel (zero past K),
    then blocks * group zeros (the GEMM's start values)."""
    cdef Py_ssize_t filters = d.blocks * d.group
    cdef Py_ssize_t items = d.blocks * d.g.C
    cdef int threads = threads_for(filters * d.g.C * 64, items)
    cdef Py_ssize_t item
    if threads == 1:
        for item in range(items):
            winograd_filter(w, d, flipped, item, packed)
    else:
        for item in prange(items, num_threads=threads, schedule="static"):
            winograd_filter(w, d, flipped, item, packed)
    memset(packed + 16 * filters * d.g.C, 0, filters * sizeof(floating))


cdef void stage_channels_last(const floating* x,     # IN  (C, H, W) one image
                              const Layout* d,
                              floating* dst) noexcept nogil:  # OUT (padded_h, padded_w, C)
    """The zero-padded image, channels-last."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t c, row, col, h, w
    memset(dst, 0, d.padded_h * d.padded_w * g.C * sizeof(floating))
    for c in range(g.C):
        for h in range(max(0, -g.ph), min(g.H, d.padded_h - g.ph)):
            row = h + g.ph
            for w in range(max(0, -g.pw), min(g.W, d.padded_w - g.pw)):
                col = w + g.pw
                dst[(row * d.padded_w + col) * g.C + c] = x[(c * g.H + h) * g.W + w]


cdef inline vec load_n(const floating* p, Py_ssize_t n) noexcept nogil:
    return vload(p) if n == lanes(p) else vload_part(p, n)


cdef void winograd_input(const floating* staged,  # IN  (padded_h, padded_w, C) one image
                         const Layout* d,
                         floating* v) noexcept nogil:  # OUT (16, tiles, C) V of the image
    """V = B^T patch B of every tile, a vector of channels at a time."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t L = lanes(staged)
    cdef Py_ssize_t tiles = d.tiles_h * d.tiles_w
    cdef Py_ssize_t a, b, chunk, c, n, i, j
    cdef const floating* patch
    cdef floating* out
    cdef floating spill[16][MAX_LANES]
    cdef vec x[4][4]
    cdef vec t[4][4]
    for a in range(d.tiles_h):
        for b in range(d.tiles_w):
            patch = staged + (2 * a * d.padded_w + 2 * b) * g.C
            out = v + (a * d.tiles_w + b) * g.C
            for chunk in range(ceil_div(g.C, L)):
                c = chunk * L
                n = min(L, g.C - c)
                for i in range(4):
                    for j in range(4):
                        x[i][j] = load_n(patch + (i * d.padded_w + j) * g.C + c, n)
                # B^T patch (rows), then times B (columns).
                for j in range(4):
                    t[0][j] = vsub(patch, x[0][j], x[2][j])
                    t[1][j] = vadd(patch, x[1][j], x[2][j])
                    t[2][j] = vsub(patch, x[2][j], x[1][j])
                    t[3][j] = vsub(patch, x[1][j], x[3][j])
                for i in range(4):
                    x[i][0] = vsub(patch, t[i][0], t[i][2])
                    x[i][1] = vadd(patch, t[i][1], t[i][2])
                    x[i][2] = vsub(patch, t[i][2], t[i][1])
                    x[i][3] = vsub(patch, t[i][1], t[i][3])
                if n == L:
                    for i in range(4):
                        for j in range(4):
                            vstore(out + (4 * i + j) * tiles * g.C + c, x[i][j])
                else:
                    for i in range(4):
                        for j in range(4):
                            vstore(&spill[4 * i + j][0], x[i][j])
                    for i in range(16):
                        memcpy(out + i * tiles * g.C + c, &spill[i][0], n * sizeof(floating))


cdef void winograd_output(const floating* m,     # IN  (16, tiles, kp) M of one image
                          const floating* bias,  # IN  (K,) or NULL
                          const Layout* d, bint relu,
                          floating* y) noexcept nogil:  # OUT (K, Ho, Wo) of the image
    """y = A^T M A + bias of every tile (then ReLU, with ``relu``), a vector
    of filters at a time, each stored into the filters' planes; with an odd
    Ho or Wo the last row or column of tiles hangs over the edge, and those
    outputs are not stored."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t L = lanes(m)
    cdef Py_ssize_t tiles = d.tiles_h * d.tiles_w
    cdef Py_ssize_t kp = d.blocks * d.group
    cdef Py_ssize_t a, b, chunk, k, n, i, j, u, row, col
    cdef const floating* mt
    cdef vec t[4]
    cdef vec s[2][4]
    cdef vec beta
    cdef floating o[4][MAX_LANES]
    for a in range(d.tiles_h):
        for b in range(d.tiles_w):
            mt = m + (a * d.tiles_w + b) * kp
            for chunk in range(ceil_div(g.K, L)):
                k = chunk * L
                n = min(L, g.K - k)
                beta = cnx_zero() if bias == NULL else load_n(bias + k, n)
                # A^T M (rows), then times A (columns).
                for j in range(4):
                    for i in range(4):
                        t[i] = vload(mt + (4 * i + j) * tiles * kp + k)
                    s[0][j] = vadd(m, vadd(m, t[0], t[1]), t[2])
                    s[1][j] = vsub(m, vsub(m, t[1], t[2]), t[3])
                for u in range(2):
                    t[2 * u] = vadd(m, vadd(m, vadd(m, s[u][0], s[u][1]), s[u][2]), beta)
                    t[2 * u + 1] = vadd(m, vsub(m, vsub(m, s[u][1], s[u][2]), s[u][3]), beta)
                for u in range(4):
                    vstore(&o[u][0], vrelu(m, t[u]) if relu else t[u])
                for u in range(4):
                    row = 2 * a + u // 2
                    col = 2 * b + u % 2
                    if row < g.Ho and col < g.Wo:
                        for i in range(n):
                            y[(k + i) * g.P + row * g.Wo + col] = o[u][i]


cdef void winograd_pass(const floating* x,        # IN  (N, C, H, W) of layout d
                        const floating* packed,   # IN  winograd_filters of layout d
                        const floating* bias,     # IN  (K,) or NULL
                        const Layout* d, bint relu,
                        floating* y,              # OUT (N, K, Ho, Wo)
                        floating* work) noexcept nogil:  # TMP a wave: staged images, V, M
    """y = conv(x) of layout ``d`` by F(2x2, 3x3), wave after wave of images:
    staging and input transforms, the 16 GEMMs, output transforms (separate
    parallel loops, each ending with a barrier)."""
    cdef const Geometry* g = &d.g
    cdef Py_ssize_t tiles = d.tiles_h * d.tiles_w
    cdef Py_ssize_t kp = d.blocks * d.group
    cdef Py_ssize_t xi_elems = kp * g.C
    cdef const floating* zeros = packed + 16 * xi_elems
    cdef floating* staged = work
    cdef floating* v = staged + d.wave * d.staged_elems
    cdef floating* m = v + d.wave * 16 * tiles * g.C
    cdef Py_ssize_t image = g.C * g.H * g.W
    cdef Py_ssize_t wave, first, count, positions, item, xi, blk, start, n
    cdef Split sp
    cdef int threads
    for wave in range(ceil_div(g.N, d.wave)):
        first = wave * d.wave
        count = min(d.wave, g.N - first)
        positions = count * tiles
        threads = threads_for(count * 16 * tiles * g.C * kp,
                              16 * d.blocks * ceil_div(positions, KFW_MR))
        if threads == 1:
            for n in range(count):
                stage_channels_last(x + (first + n) * image, d, staged + n * d.staged_elems)
                winograd_input(staged + n * d.staged_elems, d, v + n * d.vb.image_stride)
            for xi in range(16):
                for blk in range(d.blocks):
                    kfwd_tiles(<const WideTile*>NULL,
                               packed + xi * xi_elems + blk * d.group * g.C, zeros,
                               g.K - blk * d.group, v + xi * tiles * g.C, &d.vb,
                               m + xi * tiles * kp + blk * d.group, 0, positions, False)
            for n in range(count):
                winograd_output(m + n * d.vb.out_image, bias, d, relu,
                                y + (first + n) * g.K * g.P)
            continue
        for n in prange(count, num_threads=threads, schedule="dynamic"):
            stage_channels_last(x + (first + n) * image, d, staged + n * d.staged_elems)
            winograd_input(staged + n * d.staged_elems, d, v + n * d.vb.image_stride)
        sp = split_tiles(positions, KFW_MR, d.blocks, (threads + 15) // 16)
        for item in prange(16 * sp.groups * sp.spans, num_threads=threads, schedule="dynamic"):
            xi = item // (sp.groups * sp.spans)
            start = (item % sp.spans) * sp.span
            for blk in range((item // sp.spans) % sp.groups * sp.per_group,
                             min(((item // sp.spans) % sp.groups + 1) * sp.per_group, d.blocks)):
                kfwd_tiles(<const WideTile*>NULL,
                           packed + xi * xi_elems + blk * d.group * g.C, zeros,
                           g.K - blk * d.group, v + xi * tiles * g.C, &d.vb,
                           m + xi * tiles * kp + blk * d.group,
                           start, min(start + sp.span, positions), False)
        for n in prange(count, num_threads=threads, schedule="dynamic"):
            winograd_output(m + n * d.vb.out_image, bias, d, relu,
                            y + (first + n) * g.K * g.P)

# Cython's view of the fused kernels' vector operations (simd_fused.h, on top
# of simd.h: ReLU, the running maximum with its winner, the store of winners
# as int64 indices, a branch-free gradient select, the split of a pooled
# gradient by 2x2 window element, the fused tile sizes), and
# their helpers over the fused ``floating`` type.  Included by
# _conv_fused.pxi.

cdef extern from "simd_fused.h":
    enum:
        FUSED_MR "CNX_FUSED_MR"
        FUSED_MP "CNX_FUSED_MP"
        FUSED_G "CNX_FUSED_G"
        SPARSE_NR "CNX_SPARSE_NR"
    vec cnx_relu_f32(vec) noexcept nogil
    vec cnx_relu_f64(vec) noexcept nogil
    void cnx_max_take_f32(vec*, vec*, vec, vec) noexcept nogil
    void cnx_max_take_f64(vec*, vec*, vec, vec) noexcept nogil
    void cnx_store_indices_f32(int64_t*, const int64_t*, vec, Py_ssize_t) noexcept nogil
    void cnx_store_indices_f64(int64_t*, const int64_t*, vec, Py_ssize_t) noexcept nogil
    float cnx_code_bits_f32(int32_t) noexcept nogil
    double cnx_code_bits_f64(int64_t) noexcept nogil
    int64_t cnx_lane_code_f32(const float*, Py_ssize_t) noexcept nogil
    int64_t cnx_lane_code_f64(const double*, Py_ssize_t) noexcept nogil
    Py_ssize_t cnx_sparse_codes_f32(const float*, const int64_t*, const int64_t*, const float*,
                                    Py_ssize_t, int64_t, int32_t, int32_t, int32_t, int32_t,
                                    float*, float*) noexcept nogil
    Py_ssize_t cnx_sparse_codes_f64(const double*, const int64_t*, const int64_t*, const double*,
                                    Py_ssize_t, int64_t, int32_t, int32_t, int32_t, int32_t,
                                    double*, double*) noexcept nogil
    float cnx_keep_f32(int, float) noexcept nogil
    double cnx_keep_f64(int, double) noexcept nogil
    vec cnx_halves_f32(const float*, const float*) noexcept nogil
    vec cnx_halves_f64(const double*, const double*) noexcept nogil
    vec cnx_pick_f32(vec, vec) noexcept nogil
    void cnx_gather2_f32(const float*, float*, Py_ssize_t) noexcept nogil
    void cnx_gather2_f64(const double*, double*, Py_ssize_t) noexcept nogil
    vec cnx_pick_f64(vec, vec) noexcept nogil
    Py_ssize_t cnx_split4_f32(const float*, const int64_t*, const int64_t*, const float*,
                              const Py_ssize_t*, Py_ssize_t, Py_ssize_t, float*) noexcept nogil
    Py_ssize_t cnx_split4_f64(const double*, const int64_t*, const int64_t*, const double*,
                              const Py_ssize_t*, Py_ssize_t, Py_ssize_t, double*) noexcept nogil


cdef inline vec vrelu(const floating* like, vec v) noexcept nogil:
    """max(v, 0) lane by lane, NaN kept, -0.0 as +0.0 (relu's rule)."""
    if floating is float:
        return cnx_relu_f32(v)
    else:
        return cnx_relu_f64(v)


cdef inline void vmax_take(const floating* like, vec* best, vec* code, vec value,
                           vec value_code) noexcept nogil:
    """Where value is greater than best or NaN: best = value, code = value_code."""
    if floating is float:
        cnx_max_take_f32(best, code, value, value_code)
    else:
        cnx_max_take_f64(best, code, value, value_code)


cdef inline floating code_bits(const floating* like, Py_ssize_t c) noexcept nogil:
    """The window code c (below 2**31) as an integer in a floating's bits
    (int32 in a float, int64 in a double), to splat into the lanes of the
    values it indexes: only ever moved, never computed with."""
    if floating is float:
        return cnx_code_bits_f32(<int32_t>c)
    else:
        return cnx_code_bits_f64(<int64_t>c)


cdef inline int64_t lane_code(const floating* codes, Py_ssize_t k) noexcept nogil:
    """The window code in lane k of a register stored at ``codes``."""
    if floating is float:
        return cnx_lane_code_f32(codes, k)
    else:
        return cnx_lane_code_f64(codes, k)


cdef inline void vstore_indices(const floating* like, int64_t* dst, const int64_t* base,
                                vec code, Py_ssize_t n) noexcept nogil:
    """dst[l] = base[l] + the window code in lane l of ``code`` for l < n
    (n <= lanes); nothing past dst + n written, nothing past base + n read."""
    if floating is float:
        cnx_store_indices_f32(dst, base, code, n)
    else:
        cnx_store_indices_f64(dst, base, code, n)


cdef inline floating keep_if(bint keep, floating gradient) noexcept nogil:
    """gradient if keep, else +0.0, without a branch on the data."""
    if floating is float:
        return cnx_keep_f32(keep, gradient)
    else:
        return cnx_keep_f64(keep, gradient)


cdef inline Py_ssize_t split4(const floating* gy, const int64_t* idx, const int64_t* base,
                              const floating* y, const Py_ssize_t* codes, Py_ssize_t n,
                              Py_ssize_t stride, floating* out) noexcept nogil:
    """cnx_split4 (simd_fused.h): gy split by 2x2 window element in one pass."""
    if floating is float:
        return cnx_split4_f32(gy, idx, base, y, codes, n, stride, out)
    else:
        return cnx_split4_f64(gy, idx, base, y, codes, n, stride, out)


cdef inline vec vhalves(const floating* p0, const floating* p1) noexcept nogil:
    """The half register at p0, then the half register at p1."""
    if floating is float:
        return cnx_halves_f32(p0, p1)
    else:
        return cnx_halves_f64(p0, p1)


cdef inline vec vpick(const floating* like, vec table, vec code) noexcept nogil:
    """Lane l of the result: the lane of ``table`` that lane l of ``code`` names."""
    if floating is float:
        return cnx_pick_f32(table, code)
    else:
        return cnx_pick_f64(table, code)


cdef inline Py_ssize_t sparse_codes(const floating* gy, const int64_t* idx, const int64_t* base,
                                    const floating* y, Py_ssize_t n, int64_t limit, int32_t wo,
                                    int32_t kw, int32_t a_step, int32_t sw, floating* g,
                                    floating* code) noexcept nogil:
    """cnx_sparse_codes (simd_fused.h): one filter's gradient and table lanes
    (``code``: vpick's lane codes, one per floating)."""
    if floating is float:
        return cnx_sparse_codes_f32(gy, idx, base, y, n, limit, wo, kw, a_step, sw, g, code)
    else:
        return cnx_sparse_codes_f64(gy, idx, base, y, n, limit, wo, kw, a_step, sw, g, code)


cdef inline void gather2(const floating* src, floating* dst, Py_ssize_t n) noexcept nogil:
    """dst[u] = src[2u] for u < n (cnx_gather2, simd_fused.h)."""
    if floating is float:
        cnx_gather2_f32(src, dst, n)
    else:
        cnx_gather2_f64(src, dst, n)

# Cython's view of the vector layer (simd.h: one register type ``vec`` and
# its operations, per instruction set), and helpers over the fused
# ``floating`` type that pick each operation's float or double form, so a
# tile routine is written once for both dtypes.  The instruction set is the
# including module's (setup.py's define and flags for each build of a
# family), so only the builds of ISA-dispatched families may cimport this.

from cython cimport floating


cdef extern from "simd.h":
    ctypedef struct vec "cnx_vec":
        pass
    enum:
        VEC_BYTES "CNX_VEC_BYTES"
        MAX_LANES "CNX_MAX_LANES"
        FWD_MR "CNX_FWD_MR"
        FWD_NV "CNX_FWD_NV"
        DOT_MR "CNX_DOT_MR"
        DOT_NR "CNX_DOT_NR"
        TRN_MR "CNX_TRN_MR"
        TRN_MR_F32 "CNX_TRN_MR_F32"
        TRN_NV "CNX_TRN_NV"
        KFW_MR "CNX_KFW_MR"
        KFW_MR_NARROW "CNX_KFW_MR_NARROW"
        KFW_MR_HALF "CNX_KFW_MR_HALF"
        KFW_MR_MAX "CNX_KFW_MR_MAX"
        KFW_NV "CNX_KFW_NV"
    vec cnx_zero() noexcept nogil
    vec cnx_set_f32(float) noexcept nogil
    vec cnx_set_f64(double) noexcept nogil
    vec cnx_load_f32(const float*) noexcept nogil
    vec cnx_load_f64(const double*) noexcept nogil
    vec cnx_load_part_f32(const float*, Py_ssize_t) noexcept nogil
    vec cnx_load_part_f64(const double*, Py_ssize_t) noexcept nogil
    vec cnx_load_range_f32(const float*, Py_ssize_t, Py_ssize_t) noexcept nogil
    vec cnx_load_range_f64(const double*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void cnx_store_f32(float*, vec) noexcept nogil
    void cnx_store_f64(double*, vec) noexcept nogil
    void cnx_store_part_f32(float*, vec, Py_ssize_t) noexcept nogil
    void cnx_store_part_f64(double*, vec, Py_ssize_t) noexcept nogil
    vec cnx_fma_f32(vec, vec, vec) noexcept nogil
    vec cnx_fma_f64(vec, vec, vec) noexcept nogil
    vec cnx_add_f32(vec, vec) noexcept nogil
    vec cnx_add_f64(vec, vec) noexcept nogil
    vec cnx_sub_f32(vec, vec) noexcept nogil
    vec cnx_sub_f64(vec, vec) noexcept nogil
    float cnx_sum_f32(vec) noexcept nogil
    double cnx_sum_f64(vec) noexcept nogil
    void cnx_transpose_f32(const float*, Py_ssize_t, float*, Py_ssize_t) noexcept nogil
    void cnx_transpose_f64(const double*, Py_ssize_t, double*, Py_ssize_t) noexcept nogil


cdef inline Py_ssize_t lanes(const floating* like) noexcept nogil:
    """Elements of type ``floating`` in one register."""
    return VEC_BYTES // sizeof(floating)


cdef inline Py_ssize_t trn_rows(const floating* like) noexcept nogil:
    """Taps per trn_tiles tile (at most TRN_MR) for the dtype ``like`` points to."""
    if floating is float:
        return TRN_MR_F32
    else:
        return TRN_MR


cdef inline vec vsplat(floating value) noexcept nogil:
    if floating is float:
        return cnx_set_f32(value)
    else:
        return cnx_set_f64(value)


cdef inline vec vload(const floating* p) noexcept nogil:
    if floating is float:
        return cnx_load_f32(p)
    else:
        return cnx_load_f64(p)


cdef inline vec vload_part(const floating* p, Py_ssize_t n) noexcept nogil:
    """The first n (< lanes) elements at p, zeros above; reads nothing past p + n."""
    if floating is float:
        return cnx_load_part_f32(p, n)
    else:
        return cnx_load_part_f64(p, n)


cdef inline vec vload_range(const floating* p, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Elements lo..hi-1 (0 <= lo < hi <= lanes) at p in their lanes, zeros in
    the others; reads nothing outside p + lo .. p + hi."""
    if floating is float:
        return cnx_load_range_f32(p, lo, hi)
    else:
        return cnx_load_range_f64(p, lo, hi)


cdef inline void vstore(floating* p, vec v) noexcept nogil:
    if floating is float:
        cnx_store_f32(p, v)
    else:
        cnx_store_f64(p, v)


cdef inline void vstore_part(floating* p, vec v, Py_ssize_t n) noexcept nogil:
    """Store the first n (< lanes) elements; writes nothing past p + n."""
    if floating is float:
        cnx_store_part_f32(p, v, n)
    else:
        cnx_store_part_f64(p, v, n)


cdef inline vec vfma(const floating* like, vec acc, vec a, vec b) noexcept nogil:
    """acc + a * b, elements of the type ``like`` points to."""
    if floating is float:
        return cnx_fma_f32(acc, a, b)
    else:
        return cnx_fma_f64(acc, a, b)


cdef inline vec vadd(const floating* like, vec a, vec b) noexcept nogil:
    if floating is float:
        return cnx_add_f32(a, b)
    else:
        return cnx_add_f64(a, b)


cdef inline vec vsub(const floating* like, vec a, vec b) noexcept nogil:
    if floating is float:
        return cnx_sub_f32(a, b)
    else:
        return cnx_sub_f64(a, b)


cdef inline floating vsum(const floating* like, vec v) noexcept nogil:
    """Sum of the lanes, in a fixed order."""
    if floating is float:
        return cnx_sum_f32(v)
    else:
        return cnx_sum_f64(v)


cdef inline void vtranspose(const floating* src,   # IN  (lanes, src_stride)
                            Py_ssize_t src_stride,
                            floating* dst,         # OUT (lanes, dst_stride)
                            Py_ssize_t dst_stride) noexcept nogil:
    """dst[j, i] = src[i, j] for one block of lanes x lanes elements."""
    if floating is float:
        cnx_transpose_f32(src, src_stride, dst, dst_stride)
    else:
        cnx_transpose_f64(src, src_stride, dst, dst_stride)

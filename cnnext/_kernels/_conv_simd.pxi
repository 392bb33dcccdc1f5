# The vector layer of the convolution kernels: one register type, a handful of
# operations on it, the register-tile sizes that fit the register file, and a
# lanes x lanes block transpose (in registers with AVX-512, where transposing
# gy for the weight gradient was a third of its time; scalar elsewhere).
#
# The instruction set comes from the compiler flags of the including module
# (setup.py builds _conv_baseline / _conv_x86_64_v3 / _conv_x86_64_v4 from the
# same source): AVX-512 (32 zmm), AVX2+FMA (16 ymm), SSE2 (16 xmm, the x86-64
# baseline, no FMA), or the compiler's generic 16-byte vectors elsewhere
# (NEON on arm64, 32 registers).
#
# ``vec`` is a union of the float and double register types, so one tile
# routine written over ``floating`` compiles to either: every operation takes
# a ``floating`` pointer (or value) that selects the element type.  A union
# rather than casts between __m512 and __m512d: gcc keeps a union tile in
# registers, while the casts made it shuffle and spill the accumulators.
#
# Tile sizes (accumulator registers):
#   FWD_MR x FWD_NV   forward/backward-data tile: output rows broadcast from
#                     packed weights times vectors of positions;
#   DOT_MR x DOT_NR   weight-gradient tile for few output channels: vector
#                     partial sums over positions of gy rows times windows;
#   TRN_MR x TRN_NV   weight-gradient tile for many output channels (TRN_MR_F32
#                     rows in float32): input
#                     values broadcast times vectors of gy transposed (lanes
#                     along output channels);
#   KFW_MR x KFW_NV   forward tile with output channels as lanes: input values
#                     of KFW_MR positions broadcast (one address register each,
#                     hence fewer than TRN_MR on x86-64) times filter vectors.

cdef extern from *:
    """
    #include <string.h>
    #if defined(__AVX512F__)
    #include <immintrin.h>
    #define CNX_VEC_BYTES 64
    #define CNX_FWD_MR 8
    #define CNX_FWD_NV 3
    #define CNX_DOT_MR 8
    #define CNX_DOT_NR 3
    #define CNX_TRN_MR 12
    /* 9 rows in float32: faster on every float32 shape measured (fewer
       address registers; 3 x 3 x 3 = 27 taps in 3 whole tiles). */
    #define CNX_TRN_MR_F32 9
    #define CNX_TRN_NV 2
    #define CNX_KFW_MR 6
    #define CNX_KFW_NV 4
    typedef union { __m512 f; __m512d d; } cnx_vec;
    #define CNX_MASK32(n) ((__mmask16)((1u << (n)) - 1u))
    #define CNX_MASK64(n) ((__mmask8)((1u << (n)) - 1u))
    static inline cnx_vec cnx_zero(void) { cnx_vec v; v.f = _mm512_setzero_ps(); return v; }
    static inline cnx_vec cnx_set_f32(float s) { cnx_vec v; v.f = _mm512_set1_ps(s); return v; }
    static inline cnx_vec cnx_set_f64(double s) { cnx_vec v; v.d = _mm512_set1_pd(s); return v; }
    static inline cnx_vec cnx_load_f32(const float *p)
    { cnx_vec v; v.f = _mm512_loadu_ps(p); return v; }
    static inline cnx_vec cnx_load_f64(const double *p)
    { cnx_vec v; v.d = _mm512_loadu_pd(p); return v; }
    static inline cnx_vec cnx_load_part_f32(const float *p, Py_ssize_t n)
    { cnx_vec v; v.f = _mm512_maskz_loadu_ps(CNX_MASK32(n), p); return v; }
    static inline cnx_vec cnx_load_part_f64(const double *p, Py_ssize_t n)
    { cnx_vec v; v.d = _mm512_maskz_loadu_pd(CNX_MASK64(n), p); return v; }
    static inline cnx_vec cnx_load_range_f32(const float *p, Py_ssize_t lo, Py_ssize_t hi)
    { cnx_vec v; v.f = _mm512_maskz_loadu_ps(CNX_MASK32(hi) & ~CNX_MASK32(lo), p); return v; }
    static inline cnx_vec cnx_load_range_f64(const double *p, Py_ssize_t lo, Py_ssize_t hi)
    { cnx_vec v; v.d = _mm512_maskz_loadu_pd(CNX_MASK64(hi) & ~CNX_MASK64(lo), p); return v; }
    static inline void cnx_store_f32(float *p, cnx_vec v) { _mm512_storeu_ps(p, v.f); }
    static inline void cnx_store_f64(double *p, cnx_vec v) { _mm512_storeu_pd(p, v.d); }
    static inline void cnx_store_part_f32(float *p, cnx_vec v, Py_ssize_t n)
    { _mm512_mask_storeu_ps(p, CNX_MASK32(n), v.f); }
    static inline void cnx_store_part_f64(double *p, cnx_vec v, Py_ssize_t n)
    { _mm512_mask_storeu_pd(p, CNX_MASK64(n), v.d); }
    static inline cnx_vec cnx_fma_f32(cnx_vec acc, cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = _mm512_fmadd_ps(a.f, b.f, acc.f); return v; }
    static inline cnx_vec cnx_fma_f64(cnx_vec acc, cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = _mm512_fmadd_pd(a.d, b.d, acc.d); return v; }
    static inline cnx_vec cnx_add_f32(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = _mm512_add_ps(a.f, b.f); return v; }
    static inline cnx_vec cnx_add_f64(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = _mm512_add_pd(a.d, b.d); return v; }
    static inline cnx_vec cnx_sub_f32(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = _mm512_sub_ps(a.f, b.f); return v; }
    static inline cnx_vec cnx_sub_f64(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = _mm512_sub_pd(a.d, b.d); return v; }
    static inline float cnx_sum_f32(cnx_vec v)
    {
        __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v.f), 1));
        __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v.f), high);
        __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        return _mm_cvtss_f32(q);
    }
    static inline double cnx_sum_f64(cnx_vec v)
    {
        __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(v.d), _mm512_extractf64x4_pd(v.d, 1));
        __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
        q = _mm_add_sd(q, _mm_unpackhi_pd(q, q));
        return _mm_cvtsd_f64(q);
    }
    /* One 16 x 16 (8 x 8) block in registers: pairs of rows interleaved,
       then pairs of pairs, then 128-bit lanes across rows 4 and 8 apart. */
    #define CNX_HAS_TRANSPOSE 1
    static inline void cnx_transpose_f32(const float *src, Py_ssize_t ss,
                                         float *dst, Py_ssize_t ds)
    {
        __m512 r[16], t[16];
        int i;
        for (i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * ss);
        for (i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        for (i = 0; i < 16; i += 4) {
            r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
            r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
            r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        for (i = 0; i < 4; i++) {
            t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
            t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
            t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
            t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
        }
        for (i = 0; i < 8; i++) {
            r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
            r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
        }
        for (i = 0; i < 16; i++) _mm512_storeu_ps(dst + i * ds, r[i]);
    }
    static inline void cnx_transpose_f64(const double *src, Py_ssize_t ss,
                                         double *dst, Py_ssize_t ds)
    {
        __m512d r[8], t[8];
        int i;
        for (i = 0; i < 8; i++) r[i] = _mm512_loadu_pd(src + i * ss);
        for (i = 0; i < 8; i += 2) {
            t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
        }
        for (i = 0; i < 8; i += 4) {
            r[i] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0x88);
            r[i + 1] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0x88);
            r[i + 2] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0xDD);
            r[i + 3] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0xDD);
        }
        for (i = 0; i < 4; i++) {
            t[i] = _mm512_shuffle_f64x2(r[i], r[i + 4], 0x88);
            t[i + 4] = _mm512_shuffle_f64x2(r[i], r[i + 4], 0xDD);
        }
        for (i = 0; i < 8; i++) _mm512_storeu_pd(dst + i * ds, t[i]);
    }
    #elif defined(__AVX2__) && defined(__FMA__)
    #include <immintrin.h>
    #define CNX_VEC_BYTES 32
    #define CNX_FWD_MR 4
    #define CNX_FWD_NV 3
    #define CNX_DOT_MR 4
    #define CNX_DOT_NR 3
    #define CNX_TRN_MR 6
    #define CNX_TRN_NV 2
    #define CNX_KFW_MR 6
    #define CNX_KFW_NV 2
    typedef union { __m256 f; __m256d d; } cnx_vec;
    static inline __m256i cnx_mask32(Py_ssize_t n)
    {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static inline __m256i cnx_mask64(Py_ssize_t n)
    { return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)); }
    static inline cnx_vec cnx_zero(void) { cnx_vec v; v.f = _mm256_setzero_ps(); return v; }
    static inline cnx_vec cnx_set_f32(float s) { cnx_vec v; v.f = _mm256_set1_ps(s); return v; }
    static inline cnx_vec cnx_set_f64(double s) { cnx_vec v; v.d = _mm256_set1_pd(s); return v; }
    static inline cnx_vec cnx_load_f32(const float *p)
    { cnx_vec v; v.f = _mm256_loadu_ps(p); return v; }
    static inline cnx_vec cnx_load_f64(const double *p)
    { cnx_vec v; v.d = _mm256_loadu_pd(p); return v; }
    static inline cnx_vec cnx_load_part_f32(const float *p, Py_ssize_t n)
    { cnx_vec v; v.f = _mm256_maskload_ps(p, cnx_mask32(n)); return v; }
    static inline cnx_vec cnx_load_part_f64(const double *p, Py_ssize_t n)
    { cnx_vec v; v.d = _mm256_maskload_pd(p, cnx_mask64(n)); return v; }
    static inline cnx_vec cnx_load_range_f32(const float *p, Py_ssize_t lo, Py_ssize_t hi)
    {
        cnx_vec v;
        v.f = _mm256_maskload_ps(p, _mm256_andnot_si256(cnx_mask32(lo), cnx_mask32(hi)));
        return v;
    }
    static inline cnx_vec cnx_load_range_f64(const double *p, Py_ssize_t lo, Py_ssize_t hi)
    {
        cnx_vec v;
        v.d = _mm256_maskload_pd(p, _mm256_andnot_si256(cnx_mask64(lo), cnx_mask64(hi)));
        return v;
    }
    static inline void cnx_store_f32(float *p, cnx_vec v) { _mm256_storeu_ps(p, v.f); }
    static inline void cnx_store_f64(double *p, cnx_vec v) { _mm256_storeu_pd(p, v.d); }
    static inline void cnx_store_part_f32(float *p, cnx_vec v, Py_ssize_t n)
    { _mm256_maskstore_ps(p, cnx_mask32(n), v.f); }
    static inline void cnx_store_part_f64(double *p, cnx_vec v, Py_ssize_t n)
    { _mm256_maskstore_pd(p, cnx_mask64(n), v.d); }
    static inline cnx_vec cnx_fma_f32(cnx_vec acc, cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = _mm256_fmadd_ps(a.f, b.f, acc.f); return v; }
    static inline cnx_vec cnx_fma_f64(cnx_vec acc, cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = _mm256_fmadd_pd(a.d, b.d, acc.d); return v; }
    static inline cnx_vec cnx_add_f32(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = _mm256_add_ps(a.f, b.f); return v; }
    static inline cnx_vec cnx_add_f64(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = _mm256_add_pd(a.d, b.d); return v; }
    static inline cnx_vec cnx_sub_f32(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = _mm256_sub_ps(a.f, b.f); return v; }
    static inline cnx_vec cnx_sub_f64(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = _mm256_sub_pd(a.d, b.d); return v; }
    static inline float cnx_sum_f32(cnx_vec v)
    {
        __m128 q = _mm_add_ps(_mm256_castps256_ps128(v.f), _mm256_extractf128_ps(v.f, 1));
        q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        return _mm_cvtss_f32(q);
    }
    static inline double cnx_sum_f64(cnx_vec v)
    {
        __m128d q = _mm_add_pd(_mm256_castpd256_pd128(v.d), _mm256_extractf128_pd(v.d, 1));
        q = _mm_add_sd(q, _mm_unpackhi_pd(q, q));
        return _mm_cvtsd_f64(q);
    }
    #elif defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    #define CNX_VEC_BYTES 16
    #define CNX_FWD_MR 4
    #define CNX_FWD_NV 3
    #define CNX_DOT_MR 4
    #define CNX_DOT_NR 3
    #define CNX_TRN_MR 6
    #define CNX_TRN_NV 2
    #define CNX_KFW_MR 6
    #define CNX_KFW_NV 2
    typedef union { __m128 f; __m128d d; } cnx_vec;
    static inline cnx_vec cnx_zero(void) { cnx_vec v; v.f = _mm_setzero_ps(); return v; }
    static inline cnx_vec cnx_set_f32(float s) { cnx_vec v; v.f = _mm_set1_ps(s); return v; }
    static inline cnx_vec cnx_set_f64(double s) { cnx_vec v; v.d = _mm_set1_pd(s); return v; }
    static inline cnx_vec cnx_load_f32(const float *p)
    { cnx_vec v; v.f = _mm_loadu_ps(p); return v; }
    static inline cnx_vec cnx_load_f64(const double *p)
    { cnx_vec v; v.d = _mm_loadu_pd(p); return v; }
    static inline void cnx_store_f32(float *p, cnx_vec v) { _mm_storeu_ps(p, v.f); }
    static inline void cnx_store_f64(double *p, cnx_vec v) { _mm_storeu_pd(p, v.d); }
    /* SSE2 has no fused multiply-add: two roundings, as in any SSE2 code. */
    static inline cnx_vec cnx_fma_f32(cnx_vec acc, cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = _mm_add_ps(acc.f, _mm_mul_ps(a.f, b.f)); return v; }
    static inline cnx_vec cnx_fma_f64(cnx_vec acc, cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = _mm_add_pd(acc.d, _mm_mul_pd(a.d, b.d)); return v; }
    static inline cnx_vec cnx_add_f32(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = _mm_add_ps(a.f, b.f); return v; }
    static inline cnx_vec cnx_add_f64(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = _mm_add_pd(a.d, b.d); return v; }
    static inline cnx_vec cnx_sub_f32(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = _mm_sub_ps(a.f, b.f); return v; }
    static inline cnx_vec cnx_sub_f64(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = _mm_sub_pd(a.d, b.d); return v; }
    static inline float cnx_sum_f32(cnx_vec v)
    {
        __m128 q = _mm_add_ps(v.f, _mm_movehl_ps(v.f, v.f));
        q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        return _mm_cvtss_f32(q);
    }
    static inline double cnx_sum_f64(cnx_vec v)
    { return _mm_cvtsd_f64(_mm_add_sd(v.d, _mm_unpackhi_pd(v.d, v.d))); }
    #define CNX_PART_BY_COPY 1
    #elif defined(__GNUC__)
    #define CNX_VEC_BYTES 16
    #define CNX_FWD_MR 8
    #define CNX_FWD_NV 3
    #define CNX_DOT_MR 8
    #define CNX_DOT_NR 3
    #define CNX_TRN_MR 12
    #define CNX_TRN_NV 2
    #define CNX_KFW_MR 12
    #define CNX_KFW_NV 2
    typedef float cnx_f32x4 __attribute__((vector_size(16)));
    typedef double cnx_f64x2 __attribute__((vector_size(16)));
    typedef union { cnx_f32x4 f; cnx_f64x2 d; } cnx_vec;
    static inline cnx_vec cnx_zero(void) { cnx_vec v; v.f = (cnx_f32x4){0, 0, 0, 0}; return v; }
    static inline cnx_vec cnx_set_f32(float s)
    { cnx_vec v; v.f = (cnx_f32x4){s, s, s, s}; return v; }
    static inline cnx_vec cnx_set_f64(double s) { cnx_vec v; v.d = (cnx_f64x2){s, s}; return v; }
    static inline cnx_vec cnx_load_f32(const float *p) { cnx_vec v; memcpy(&v, p, 16); return v; }
    static inline cnx_vec cnx_load_f64(const double *p) { cnx_vec v; memcpy(&v, p, 16); return v; }
    static inline void cnx_store_f32(float *p, cnx_vec v) { memcpy(p, &v, 16); }
    static inline void cnx_store_f64(double *p, cnx_vec v) { memcpy(p, &v, 16); }
    static inline cnx_vec cnx_fma_f32(cnx_vec acc, cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = acc.f + a.f * b.f; return v; }
    static inline cnx_vec cnx_fma_f64(cnx_vec acc, cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = acc.d + a.d * b.d; return v; }
    static inline cnx_vec cnx_add_f32(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = a.f + b.f; return v; }
    static inline cnx_vec cnx_add_f64(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = a.d + b.d; return v; }
    static inline cnx_vec cnx_sub_f32(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.f = a.f - b.f; return v; }
    static inline cnx_vec cnx_sub_f64(cnx_vec a, cnx_vec b)
    { cnx_vec v; v.d = a.d - b.d; return v; }
    static inline float cnx_sum_f32(cnx_vec v) { return (v.f[0] + v.f[2]) + (v.f[1] + v.f[3]); }
    static inline double cnx_sum_f64(cnx_vec v) { return v.d[0] + v.d[1]; }
    #define CNX_PART_BY_COPY 1
    #else
    #error "cnnext: no vector implementation for this compiler and architecture"
    #endif

    #ifndef CNX_TRN_MR_F32
    #define CNX_TRN_MR_F32 CNX_TRN_MR
    #endif

    /* Lanes of a float register: sizes spill buffers of either dtype. */
    #define CNX_MAX_LANES (CNX_VEC_BYTES / 4)

    #ifndef CNX_HAS_TRANSPOSE
    /* A block of lanes x lanes elements one at a time (no shuffles here). */
    static inline void cnx_transpose_f32(const float *src, Py_ssize_t ss,
                                         float *dst, Py_ssize_t ds)
    {
        int i, j;
        for (i = 0; i < CNX_VEC_BYTES / 4; i++)
            for (j = 0; j < CNX_VEC_BYTES / 4; j++) dst[j * ds + i] = src[i * ss + j];
    }
    static inline void cnx_transpose_f64(const double *src, Py_ssize_t ss,
                                         double *dst, Py_ssize_t ds)
    {
        int i, j;
        for (i = 0; i < CNX_VEC_BYTES / 8; i++)
            for (j = 0; j < CNX_VEC_BYTES / 8; j++) dst[j * ds + i] = src[i * ss + j];
    }
    #endif

    #ifdef CNX_PART_BY_COPY
    /* No masked loads/stores: go through a zeroed register-sized buffer. */
    static inline cnx_vec cnx_load_part_f32(const float *p, Py_ssize_t n)
    { cnx_vec v = cnx_zero(); memcpy(&v, p, (size_t)n * sizeof(float)); return v; }
    static inline cnx_vec cnx_load_part_f64(const double *p, Py_ssize_t n)
    { cnx_vec v = cnx_zero(); memcpy(&v, p, (size_t)n * sizeof(double)); return v; }
    static inline cnx_vec cnx_load_range_f32(const float *p, Py_ssize_t lo, Py_ssize_t hi)
    {
        cnx_vec v = cnx_zero();
        memcpy((float *)&v + lo, p + lo, (size_t)(hi - lo) * sizeof(float));
        return v;
    }
    static inline cnx_vec cnx_load_range_f64(const double *p, Py_ssize_t lo, Py_ssize_t hi)
    {
        cnx_vec v = cnx_zero();
        memcpy((double *)&v + lo, p + lo, (size_t)(hi - lo) * sizeof(double));
        return v;
    }
    static inline void cnx_store_part_f32(float *p, cnx_vec v, Py_ssize_t n)
    { memcpy(p, &v, (size_t)n * sizeof(float)); }
    static inline void cnx_store_part_f64(double *p, cnx_vec v, Py_ssize_t n)
    { memcpy(p, &v, (size_t)n * sizeof(double)); }
    #endif
    """
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

/* The vector layer on AVX-512 (x86-64-v4): 32 zmm registers of 64 bytes, masked loads and
 * stores for row tails, and a lanes x lanes transpose in registers.
 *
 * Included by simd.h only, which documents the operations. */
#ifndef CNNEXT_SIMD_X86_AVX512_H
#define CNNEXT_SIMD_X86_AVX512_H
#ifndef CNNEXT_SIMD_H
#error "include simd.h, not simd_x86_avx512.h"
#endif

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
/* Weight-gradient tiles of 4 filter vectors for 64 or more filters: each
   broadcast input value feeds 4 FMAs and a position's gy^T row is read whole
   (a 2-vector tile reads each 64-filter row twice, in two halves); 6 taps x 4
   vectors = 24 accumulators, enough chains for two FMA units.  32 filters
   keep the 2-vector tile of 9 (12) taps. */
#define CNX_TRN_NV 4
#define CNX_TRN_MR_WIDE 6
#define CNX_TRN_MR_WIDE_F32 6
#define CNX_KFW_MR 6
#define CNX_KFW_NV 4
#define CNX_KFW_MR_NARROW 12
#define CNX_KFW_MR_HALF 12
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
static inline cnx_vec cnx_load_part_f32(const float *p, ptrdiff_t n)
{ cnx_vec v; v.f = _mm512_maskz_loadu_ps(CNX_MASK32(n), p); return v; }
static inline cnx_vec cnx_load_part_f64(const double *p, ptrdiff_t n)
{ cnx_vec v; v.d = _mm512_maskz_loadu_pd(CNX_MASK64(n), p); return v; }
static inline cnx_vec cnx_load_range_f32(const float *p, ptrdiff_t lo, ptrdiff_t hi)
{ cnx_vec v; v.f = _mm512_maskz_loadu_ps(CNX_MASK32(hi) & ~CNX_MASK32(lo), p); return v; }
static inline cnx_vec cnx_load_range_f64(const double *p, ptrdiff_t lo, ptrdiff_t hi)
{ cnx_vec v; v.d = _mm512_maskz_loadu_pd(CNX_MASK64(hi) & ~CNX_MASK64(lo), p); return v; }
static inline void cnx_store_f32(float *p, cnx_vec v) { _mm512_storeu_ps(p, v.f); }
static inline void cnx_store_f64(double *p, cnx_vec v) { _mm512_storeu_pd(p, v.d); }
static inline void cnx_store_part_f32(float *p, cnx_vec v, ptrdiff_t n)
{ _mm512_mask_storeu_ps(p, CNX_MASK32(n), v.f); }
static inline void cnx_store_part_f64(double *p, cnx_vec v, ptrdiff_t n)
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
static inline void cnx_transpose_f32(const float *src, ptrdiff_t ss,
                                     float *dst, ptrdiff_t ds)
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
static inline void cnx_transpose_f64(const double *src, ptrdiff_t ss,
                                     double *dst, ptrdiff_t ds)
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

#endif /* CNNEXT_SIMD_X86_AVX512_H */

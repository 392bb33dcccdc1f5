/* The vector layer on AVX2 + FMA (x86-64-v3): 16 ymm registers of 32 bytes; row tails through
 * vmaskmov (a lane mask from a compare), and a lanes x lanes transpose in registers.
 *
 * Included by simd.h only, which documents the operations. */
#ifndef CNNEXT_SIMD_X86_AVX2_H
#define CNNEXT_SIMD_X86_AVX2_H
#ifndef CNNEXT_SIMD_H
#error "include simd.h, not simd_x86_avx2.h"
#endif

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
#define CNX_KFW_MR_NARROW 12
#define CNX_KFW_MR_HALF 12
typedef union { __m256 f; __m256d d; } cnx_vec;
static inline __m256i cnx_mask32(ptrdiff_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256i cnx_mask64(ptrdiff_t n)
{ return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)); }
static inline cnx_vec cnx_zero(void) { cnx_vec v; v.f = _mm256_setzero_ps(); return v; }
static inline cnx_vec cnx_set_f32(float s) { cnx_vec v; v.f = _mm256_set1_ps(s); return v; }
static inline cnx_vec cnx_set_f64(double s) { cnx_vec v; v.d = _mm256_set1_pd(s); return v; }
static inline cnx_vec cnx_load_f32(const float *p)
{ cnx_vec v; v.f = _mm256_loadu_ps(p); return v; }
static inline cnx_vec cnx_load_f64(const double *p)
{ cnx_vec v; v.d = _mm256_loadu_pd(p); return v; }
static inline cnx_vec cnx_load_part_f32(const float *p, ptrdiff_t n)
{ cnx_vec v; v.f = _mm256_maskload_ps(p, cnx_mask32(n)); return v; }
static inline cnx_vec cnx_load_part_f64(const double *p, ptrdiff_t n)
{ cnx_vec v; v.d = _mm256_maskload_pd(p, cnx_mask64(n)); return v; }
static inline cnx_vec cnx_load_range_f32(const float *p, ptrdiff_t lo, ptrdiff_t hi)
{
    cnx_vec v;
    v.f = _mm256_maskload_ps(p, _mm256_andnot_si256(cnx_mask32(lo), cnx_mask32(hi)));
    return v;
}
static inline cnx_vec cnx_load_range_f64(const double *p, ptrdiff_t lo, ptrdiff_t hi)
{
    cnx_vec v;
    v.d = _mm256_maskload_pd(p, _mm256_andnot_si256(cnx_mask64(lo), cnx_mask64(hi)));
    return v;
}
static inline void cnx_store_f32(float *p, cnx_vec v) { _mm256_storeu_ps(p, v.f); }
static inline void cnx_store_f64(double *p, cnx_vec v) { _mm256_storeu_pd(p, v.d); }
static inline void cnx_store_part_f32(float *p, cnx_vec v, ptrdiff_t n)
{ _mm256_maskstore_ps(p, cnx_mask32(n), v.f); }
static inline void cnx_store_part_f64(double *p, cnx_vec v, ptrdiff_t n)
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
/* One 8 x 8 (4 x 4) block in registers: pairs of rows interleaved, then
   pairs of pairs, then the 128-bit halves of rows 4 (2) apart.  Pure moves:
   any bit pattern (NaN payloads, integers stored in float lanes) survives. */
#define CNX_HAS_TRANSPOSE 1
static inline void cnx_transpose_f32(const float *src, ptrdiff_t ss,
                                     float *dst, ptrdiff_t ds)
{
    __m256 r[8], t[8];
    int i;
    for (i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * ss);
    for (i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (i = 0; i < 4; i++) {
        t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
        t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
    }
    for (i = 0; i < 8; i++) _mm256_storeu_ps(dst + i * ds, t[i]);
}
static inline void cnx_transpose_f64(const double *src, ptrdiff_t ss,
                                     double *dst, ptrdiff_t ds)
{
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + ss);
    __m256d r2 = _mm256_loadu_pd(src + 2 * ss), r3 = _mm256_loadu_pd(src + 3 * ss);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ds, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ds, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ds, _mm256_permute2f128_pd(t1, t3, 0x31));
}

#endif /* CNNEXT_SIMD_X86_AVX2_H */

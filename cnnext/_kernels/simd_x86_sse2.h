/* The vector layer on SSE2 (the x86-64 baseline): 16 xmm registers of 16 bytes, no fused
 * multiply-add (two roundings, as in any SSE2 code), row tails through a
 * register-sized buffer.
 *
 * Included by simd.h only, which documents the operations. */
#ifndef CNNEXT_SIMD_X86_SSE2_H
#define CNNEXT_SIMD_X86_SSE2_H
#ifndef CNNEXT_SIMD_H
#error "include simd.h, not simd_x86_sse2.h"
#endif

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
#define CNX_KFW_MR_NARROW 12
#define CNX_KFW_MR_HALF 12
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

#endif /* CNNEXT_SIMD_X86_SSE2_H */

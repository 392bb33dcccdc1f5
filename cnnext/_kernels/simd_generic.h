/* The vector layer on the compiler's generic 16-byte vectors (gcc/clang vector extensions), for
 * architectures without a hand-written layer (not arm64 or x86-64): the
 * operators map to the target's instructions, with FMA contraction left to
 * the compiler's defaults.
 *
 * Included by simd.h only, which documents the operations. */
#ifndef CNNEXT_SIMD_GENERIC_H
#define CNNEXT_SIMD_GENERIC_H
#ifndef CNNEXT_SIMD_H
#error "include simd.h, not simd_generic.h"
#endif

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

#endif /* CNNEXT_SIMD_GENERIC_H */

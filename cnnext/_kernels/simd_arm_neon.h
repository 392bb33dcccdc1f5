/* The vector layer on NEON (arm64's Advanced SIMD, part of every arm64 CPU):
 * 32 registers of 16 bytes, fused multiply-add, no masked loads (row tails
 * through a register-sized buffer), a 4 x 4 / 2 x 2 transpose in registers.
 *
 * The register type is a union of the NEON types, as on x86-64.  With the
 * generic vectors (simd_generic.h, what arm64 builds ran before) gcc 12 kept
 * the accumulators of the wide kfwd tiles on the stack, a load and a store
 * around every multiply-add, even at these tile sizes; with NEON's types the
 * nn, kfwd and trn tiles stay in registers.  (One NEON type reinterpreted
 * for the other dtype was worse: the float64 tiles spilled.  clang keeps
 * every tile in registers with any of these representations.)
 *
 * Tile sizes: a multiply-add by a broadcast scalar takes the scalar as a
 * lane of its own register (fmla v.4s, v.4s, v.s[0]), so a tile of MR rows
 * broadcast times NV vectors needs MR * NV accumulators + NV vectors + MR
 * scalars live at once; the sizes below keep that within the 32 registers
 * (the generic sizes, 8 x 3 and 12 x 2, needed 35 and 38 and spilled).
 * The row counts also decide which plans the layer shapes get (blocks of
 * FWD_MR filters, TRN_MR taps): 4 and 8 divide the usual channel counts,
 * 9 the taps of a 3 x 3 filter.
 *
 * Included by simd.h only, which documents the operations.  MSVC's
 * arm_neon.h has the same intrinsics. */
#ifndef CNNEXT_SIMD_ARM_NEON_H
#define CNNEXT_SIMD_ARM_NEON_H
#ifndef CNNEXT_SIMD_H
#error "include simd.h, not simd_arm_neon.h"
#endif

#include <arm_neon.h>

#define CNX_VEC_BYTES 16
/* 4 x 4: 16 accumulators + 4 window vectors + 4 weights = 24 registers,
   2 multiply-adds per load.  (7 x 3 fits too, but 7 rows leave blocks of
   8, 16, 32 filters partly empty.) */
#define CNX_FWD_MR 4
#define CNX_FWD_NV 4
/* 8 x 3: 24 accumulators + 3 windows + 1 gy row (no broadcasts). */
#define CNX_DOT_MR 8
#define CNX_DOT_NR 3
/* 9 x 2: 18 accumulators + 2 gy vectors + 9 input values = 29 registers. */
#define CNX_TRN_MR 9
#define CNX_TRN_NV 2
/* 9 x 2: as trn (positions broadcast, filters as lanes). */
#define CNX_KFW_MR 9
#define CNX_KFW_NV 2

typedef union { float32x4_t f; float64x2_t d; } cnx_vec;
static inline float32x4_t cnx_f32(cnx_vec v) { return v.f; }
static inline float64x2_t cnx_f64(cnx_vec v) { return v.d; }
static inline cnx_vec cnx_from_f32(float32x4_t x) { cnx_vec v; v.f = x; return v; }
static inline cnx_vec cnx_from_f64(float64x2_t x) { cnx_vec v; v.d = x; return v; }

static inline cnx_vec cnx_zero(void) { return cnx_from_f32(vdupq_n_f32(0.0f)); }
static inline cnx_vec cnx_set_f32(float s) { return cnx_from_f32(vdupq_n_f32(s)); }
static inline cnx_vec cnx_set_f64(double s) { return cnx_from_f64(vdupq_n_f64(s)); }
static inline cnx_vec cnx_load_f32(const float *p) { return cnx_from_f32(vld1q_f32(p)); }
static inline cnx_vec cnx_load_f64(const double *p) { return cnx_from_f64(vld1q_f64(p)); }
static inline void cnx_store_f32(float *p, cnx_vec v) { vst1q_f32(p, cnx_f32(v)); }
static inline void cnx_store_f64(double *p, cnx_vec v) { vst1q_f64(p, cnx_f64(v)); }
static inline cnx_vec cnx_fma_f32(cnx_vec acc, cnx_vec a, cnx_vec b)
{ return cnx_from_f32(vfmaq_f32(cnx_f32(acc), cnx_f32(a), cnx_f32(b))); }
static inline cnx_vec cnx_fma_f64(cnx_vec acc, cnx_vec a, cnx_vec b)
{ return cnx_from_f64(vfmaq_f64(cnx_f64(acc), cnx_f64(a), cnx_f64(b))); }
static inline cnx_vec cnx_add_f32(cnx_vec a, cnx_vec b)
{ return cnx_from_f32(vaddq_f32(cnx_f32(a), cnx_f32(b))); }
static inline cnx_vec cnx_add_f64(cnx_vec a, cnx_vec b)
{ return cnx_from_f64(vaddq_f64(cnx_f64(a), cnx_f64(b))); }
static inline cnx_vec cnx_sub_f32(cnx_vec a, cnx_vec b)
{ return cnx_from_f32(vsubq_f32(cnx_f32(a), cnx_f32(b))); }
static inline cnx_vec cnx_sub_f64(cnx_vec a, cnx_vec b)
{ return cnx_from_f64(vsubq_f64(cnx_f64(a), cnx_f64(b))); }
/* (v0 + v1) + (v2 + v3): two pairwise adds. */
static inline float cnx_sum_f32(cnx_vec v) { return vaddvq_f32(cnx_f32(v)); }
static inline double cnx_sum_f64(cnx_vec v) { return vaddvq_f64(cnx_f64(v)); }

/* One 4 x 4 (2 x 2) block in registers: rows interleaved in pairs, then the
   64-bit halves of pairs. */
#define CNX_HAS_TRANSPOSE 1
static inline void cnx_transpose_f32(const float *src, ptrdiff_t ss,
                                     float *dst, ptrdiff_t ds)
{
    float32x4_t r0 = vld1q_f32(src), r1 = vld1q_f32(src + ss);
    float32x4_t r2 = vld1q_f32(src + 2 * ss), r3 = vld1q_f32(src + 3 * ss);
    float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1));
    float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
    float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3));
    float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
    vst1q_f32(dst, vreinterpretq_f32_f64(vzip1q_f64(t0, t2)));
    vst1q_f32(dst + ds, vreinterpretq_f32_f64(vzip1q_f64(t1, t3)));
    vst1q_f32(dst + 2 * ds, vreinterpretq_f32_f64(vzip2q_f64(t0, t2)));
    vst1q_f32(dst + 3 * ds, vreinterpretq_f32_f64(vzip2q_f64(t1, t3)));
}
static inline void cnx_transpose_f64(const double *src, ptrdiff_t ss,
                                     double *dst, ptrdiff_t ds)
{
    float64x2_t r0 = vld1q_f64(src), r1 = vld1q_f64(src + ss);
    vst1q_f64(dst, vzip1q_f64(r0, r1));
    vst1q_f64(dst + ds, vzip2q_f64(r0, r1));
}

#define CNX_PART_BY_COPY 1

#endif /* CNNEXT_SIMD_ARM_NEON_H */

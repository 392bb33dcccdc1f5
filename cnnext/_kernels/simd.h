/* The vector layer of the kernels: one register type, a handful of
 * operations on it, the register-tile sizes that fit the register file, and
 * a lanes x lanes block transpose.  Cython code uses it through simd.pxd
 * (``from .simd cimport *``), which wraps each operation in a helper over
 * the fused ``floating`` type; C code can include it directly.
 *
 * One implementation per instruction set, chosen by the build's level
 * (isa.h, from the define setup.py gives each build of a family):
 *   simd_x86_avx512.h   x86-64-v4: 32 zmm registers, masked loads/stores
 *   simd_x86_avx2.h     x86-64-v3: 16 ymm registers, AVX2 + FMA
 *   simd_x86_sse2.h     x86-64 baseline: 16 xmm registers, no FMA
 *   simd_arm_neon.h     arm64 baseline: 32 NEON registers, FMA
 *   simd_generic.h      elsewhere: the compiler's 16-byte vectors (gcc and
 *                       clang vector extensions)
 * Adding an instruction set: a simd_<isa>.h defining every CNX_* constant
 * and cnx_* operation below (or leaving the part loads and the transpose to
 * the fallbacks at the end), and a branch here keyed on isa.h's macro.
 *
 * ``cnx_vec`` is a union of the float and double register types, so one
 * tile routine written over ``floating`` compiles to either: every operation
 * has an _f32 and an _f64 form.  A union rather than casts between __m512
 * and __m512d: gcc keeps a union tile in registers, while the casts made it
 * shuffle and spill the accumulators.
 *
 * Operations (T = float for _f32, double for _f64; n, lo, hi in elements):
 *   cnx_zero()                     all lanes 0
 *   cnx_set_T(s)                   all lanes s
 *   cnx_load_T(p), cnx_store_T(p, v)            a whole register, unaligned
 *   cnx_load_part_T(p, n)          the first n (< lanes) elements, zeros above;
 *                                  reads nothing past p + n
 *   cnx_load_range_T(p, lo, hi)    elements lo..hi-1 (0 <= lo < hi <= lanes)
 *                                  in their lanes, zeros elsewhere; reads
 *                                  nothing outside p + lo .. p + hi
 *   cnx_store_part_T(p, v, n)      the first n elements; writes nothing past
 *   cnx_fma_T(acc, a, b)           acc + a * b (fused where the ISA has FMA)
 *   cnx_add_T, cnx_sub_T           a + b, a - b
 *   cnx_sum_T(v)                   the sum of the lanes, in a fixed order
 *   cnx_transpose_T(src, ss, dst, ds)   dst[j*ds + i] = src[i*ss + j] for one
 *                                  lanes x lanes block
 *
 * Tile sizes (accumulator registers):
 *   FWD_MR x FWD_NV   forward/backward-data tile: output rows broadcast from
 *                     packed weights times vectors of positions;
 *   DOT_MR x DOT_NR   weight-gradient tile for few output channels: vector
 *                     partial sums over positions of gy rows times windows;
 *   TRN_MR x TRN_NV   weight-gradient tile for many output channels
 *                     (TRN_MR_F32 rows in float32): input values broadcast
 *                     times vectors of gy transposed (lanes along output
 *                     channels);
 *   KFW_MR x KFW_NV   forward tile with output channels as lanes: input
 *                     values of KFW_MR positions broadcast (one address
 *                     register each, hence fewer than TRN_MR on x86-64) times
 *                     filter vectors.
 */
#ifndef CNNEXT_SIMD_H
#define CNNEXT_SIMD_H

#include <stddef.h>
#include <string.h>

#include "isa.h"

#if defined(CNX_X86_AVX512)
#include "simd_x86_avx512.h"
#elif defined(CNX_X86_AVX2)
#include "simd_x86_avx2.h"
#elif defined(CNX_X86_SSE2)
#include "simd_x86_sse2.h"
#elif defined(CNX_ARM_NEON)
#include "simd_arm_neon.h"
#elif defined(__GNUC__)
#include "simd_generic.h"
#else
#error "cnnext: no vector implementation for this compiler and architecture"
#endif

#ifndef CNX_TRN_MR_F32
#define CNX_TRN_MR_F32 CNX_TRN_MR
#endif

/* Positions of a kfwd tile of one vector (NARROW), or half the widest tile's
   vectors (HALF), of filters.  A narrow tile of KFW_MR positions keeps only
   KFW_MR accumulator chains in flight: with two FMA units of 4-cycle latency
   per core (Intel's server cores) 8 are needed to keep both busy, so the
   narrow and half tiles take more positions where the registers allow. */
#ifndef CNX_KFW_MR_NARROW
#define CNX_KFW_MR_NARROW CNX_KFW_MR
#endif
#ifndef CNX_KFW_MR_HALF
#define CNX_KFW_MR_HALF CNX_KFW_MR
#endif
#define CNX_MAX2(a, b) ((a) > (b) ? (a) : (b))
#define CNX_KFW_MR_MAX CNX_MAX2(CNX_KFW_MR, CNX_MAX2(CNX_KFW_MR_NARROW, CNX_KFW_MR_HALF))

/* Lanes of a float register: sizes spill buffers of either dtype. */
#define CNX_MAX_LANES (CNX_VEC_BYTES / 4)

#ifndef CNX_HAS_TRANSPOSE
/* A block of lanes x lanes elements one at a time (no shuffles here). */
static inline void cnx_transpose_f32(const float *src, ptrdiff_t ss,
                                     float *dst, ptrdiff_t ds)
{
    int i, j;
    for (i = 0; i < CNX_VEC_BYTES / 4; i++)
        for (j = 0; j < CNX_VEC_BYTES / 4; j++) dst[j * ds + i] = src[i * ss + j];
}
static inline void cnx_transpose_f64(const double *src, ptrdiff_t ss,
                                     double *dst, ptrdiff_t ds)
{
    int i, j;
    for (i = 0; i < CNX_VEC_BYTES / 8; i++)
        for (j = 0; j < CNX_VEC_BYTES / 8; j++) dst[j * ds + i] = src[i * ss + j];
}
#endif

#ifdef CNX_PART_BY_COPY
/* No masked loads/stores: go through a zeroed register-sized buffer. */
static inline cnx_vec cnx_load_part_f32(const float *p, ptrdiff_t n)
{ cnx_vec v = cnx_zero(); memcpy(&v, p, (size_t)n * sizeof(float)); return v; }
static inline cnx_vec cnx_load_part_f64(const double *p, ptrdiff_t n)
{ cnx_vec v = cnx_zero(); memcpy(&v, p, (size_t)n * sizeof(double)); return v; }
static inline cnx_vec cnx_load_range_f32(const float *p, ptrdiff_t lo, ptrdiff_t hi)
{
    cnx_vec v = cnx_zero();
    memcpy((float *)&v + lo, p + lo, (size_t)(hi - lo) * sizeof(float));
    return v;
}
static inline cnx_vec cnx_load_range_f64(const double *p, ptrdiff_t lo, ptrdiff_t hi)
{
    cnx_vec v = cnx_zero();
    memcpy((double *)&v + lo, p + lo, (size_t)(hi - lo) * sizeof(double));
    return v;
}
static inline void cnx_store_part_f32(float *p, cnx_vec v, ptrdiff_t n)
{ memcpy(p, &v, (size_t)n * sizeof(float)); }
static inline void cnx_store_part_f64(double *p, cnx_vec v, ptrdiff_t n)
{ memcpy(p, &v, (size_t)n * sizeof(double)); }
#endif

#endif /* CNNEXT_SIMD_H */

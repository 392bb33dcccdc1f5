/* Vector operations of the fused convolution + max-pool kernels
 * (_conv_fused.pxi), on top of simd.h's register type and instruction-set
 * branches: ReLU, the running maximum with the position of its winner, the
 * store of winners as int64 indices, a branch-free gradient select, and the
 * register-tile sizes of the fused tiles.
 *
 * Operations (T = float for _f32, double for _f64):
 *   cnx_relu_T(v)                  lanes where not (v <= 0) keep v, the others
 *                                  become +0.0 (relu's rule: NaN kept,
 *                                  -0.0 -> +0.0)
 *   cnx_max_take_T(best, code, v, v_code)
 *                                  where v > best or v is NaN (max_pool2d's
 *                                  rule: ties keep the first element
 *                                  scanned, a window's last NaN wins):
 *                                  best = v, code = v_code
 *   cnx_store_indices_T(dst, base, code, n)
 *                                  dst[l] = base[l] + (int32) lane l of code
 *                                  for l < n (n <= lanes); nothing past
 *                                  dst + n written, nothing past base + n read
 *   cnx_keep_T(keep, g)            g where keep is non-zero, else +0.0, by
 *                                  masking the bits (never a branch on data)
 *   cnx_split4_T(gy, idx, base, y, codes, n, stride, out)
 *                                  the backward's split of a pooled gradient
 *                                  by 2x2 window element in one pass (below)
 *
 * Tile sizes (accumulator registers):
 *   CNX_FUSED_MR x CNX_FUSED_G   filters broadcast from packed weights times
 *                                the vectors of FUSED_G window elements of
 *                                one vector of pooled positions;
 *   CNX_FUSED_MP x CNX_FUSED_G   pooled positions (their window elements'
 *                                inputs broadcast) times one vector of
 *                                filters.
 */
#ifndef CNNEXT_SIMD_FUSED_H
#define CNNEXT_SIMD_FUSED_H

#include <stdint.h>

#include "simd.h"

#if defined(CNX_X86_AVX512)
#define CNX_FUSED_MR 4
#define CNX_FUSED_MP 6
#define CNX_FUSED_G 4
static inline cnx_vec cnx_relu_f32(cnx_vec v)
{
    cnx_vec r;
    r.f = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v.f, _mm512_setzero_ps(), _CMP_NLE_UQ), v.f);
    return r;
}
static inline cnx_vec cnx_relu_f64(cnx_vec v)
{
    cnx_vec r;
    r.d = _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(v.d, _mm512_setzero_pd(), _CMP_NLE_UQ), v.d);
    return r;
}
static inline void cnx_max_take_f32(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    __mmask16 take = _mm512_cmp_ps_mask(value.f, best->f, _CMP_GT_OQ)
                     | _mm512_cmp_ps_mask(value.f, value.f, _CMP_UNORD_Q);
    best->f = _mm512_mask_mov_ps(best->f, take, value.f);
    code->f = _mm512_mask_mov_ps(code->f, take, value_code.f);
}
static inline void cnx_max_take_f64(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    __mmask8 take = _mm512_cmp_pd_mask(value.d, best->d, _CMP_GT_OQ)
                    | _mm512_cmp_pd_mask(value.d, value.d, _CMP_UNORD_Q);
    best->d = _mm512_mask_mov_pd(best->d, take, value.d);
    code->d = _mm512_mask_mov_pd(code->d, take, value_code.d);
}
static inline void cnx_store_indices_f32(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    __m512i codes = _mm512_cvttps_epi32(code.f);
    __mmask16 lanes = CNX_MASK32(n);
    __mmask8 low = (__mmask8)(lanes & 0xFF), high = (__mmask8)(lanes >> 8);
    __m512i first = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(codes));
    __m512i second = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(codes, 1));
    _mm512_mask_storeu_epi64(dst, low,
                             _mm512_add_epi64(first, _mm512_maskz_loadu_epi64(low, base)));
    _mm512_mask_storeu_epi64(dst + 8, high, _mm512_add_epi64(
        second, _mm512_maskz_loadu_epi64(high, base + 8)));
}
static inline void cnx_store_indices_f64(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    __m512i codes = _mm512_cvtepi32_epi64(_mm512_cvttpd_epi32(code.d));
    __mmask8 lanes = CNX_MASK64(n);
    _mm512_mask_storeu_epi64(dst, lanes,
                             _mm512_add_epi64(codes, _mm512_maskz_loadu_epi64(lanes, base)));
}
#elif defined(CNX_X86_AVX2)
#define CNX_FUSED_MR 2
#define CNX_FUSED_MP 3
#define CNX_FUSED_G 4
static inline cnx_vec cnx_relu_f32(cnx_vec v)
{
    cnx_vec r;
    r.f = _mm256_and_ps(_mm256_cmp_ps(v.f, _mm256_setzero_ps(), _CMP_NLE_UQ), v.f);
    return r;
}
static inline cnx_vec cnx_relu_f64(cnx_vec v)
{
    cnx_vec r;
    r.d = _mm256_and_pd(_mm256_cmp_pd(v.d, _mm256_setzero_pd(), _CMP_NLE_UQ), v.d);
    return r;
}
static inline void cnx_max_take_f32(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    __m256 take = _mm256_or_ps(_mm256_cmp_ps(value.f, best->f, _CMP_GT_OQ),
                               _mm256_cmp_ps(value.f, value.f, _CMP_UNORD_Q));
    best->f = _mm256_blendv_ps(best->f, value.f, take);
    code->f = _mm256_blendv_ps(code->f, value_code.f, take);
}
static inline void cnx_max_take_f64(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    __m256d take = _mm256_or_pd(_mm256_cmp_pd(value.d, best->d, _CMP_GT_OQ),
                                _mm256_cmp_pd(value.d, value.d, _CMP_UNORD_Q));
    best->d = _mm256_blendv_pd(best->d, value.d, take);
    code->d = _mm256_blendv_pd(code->d, value_code.d, take);
}
static inline void cnx_store_indices_f32(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    __m256i codes = _mm256_cvttps_epi32(code.f);
    __m256i low = cnx_mask64(n), high = cnx_mask64(n - 4);
    __m256i first = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(codes));
    __m256i second = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(codes, 1));
    _mm256_maskstore_epi64((long long *)dst, low, _mm256_add_epi64(
        first, _mm256_maskload_epi64((const long long *)base, low)));
    _mm256_maskstore_epi64((long long *)(dst + 4), high, _mm256_add_epi64(
        second, _mm256_maskload_epi64((const long long *)(base + 4), high)));
}
static inline void cnx_store_indices_f64(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    __m256i codes = _mm256_cvtepi32_epi64(_mm256_cvttpd_epi32(code.d));
    __m256i lanes = cnx_mask64(n);
    _mm256_maskstore_epi64((long long *)dst, lanes, _mm256_add_epi64(
        codes, _mm256_maskload_epi64((const long long *)base, lanes)));
}
#elif defined(CNX_X86_SSE2)
#define CNX_FUSED_MR 2
#define CNX_FUSED_MP 3
#define CNX_FUSED_G 4
static inline cnx_vec cnx_relu_f32(cnx_vec v)
{ cnx_vec r; r.f = _mm_and_ps(_mm_cmpnle_ps(v.f, _mm_setzero_ps()), v.f); return r; }
static inline cnx_vec cnx_relu_f64(cnx_vec v)
{ cnx_vec r; r.d = _mm_and_pd(_mm_cmpnle_pd(v.d, _mm_setzero_pd()), v.d); return r; }
static inline void cnx_max_take_f32(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    __m128 take = _mm_or_ps(_mm_cmpgt_ps(value.f, best->f), _mm_cmpunord_ps(value.f, value.f));
    best->f = _mm_or_ps(_mm_and_ps(take, value.f), _mm_andnot_ps(take, best->f));
    code->f = _mm_or_ps(_mm_and_ps(take, value_code.f), _mm_andnot_ps(take, code->f));
}
static inline void cnx_max_take_f64(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    __m128d take = _mm_or_pd(_mm_cmpgt_pd(value.d, best->d), _mm_cmpunord_pd(value.d, value.d));
    best->d = _mm_or_pd(_mm_and_pd(take, value.d), _mm_andnot_pd(take, best->d));
    code->d = _mm_or_pd(_mm_and_pd(take, value_code.d), _mm_andnot_pd(take, code->d));
}
#elif defined(CNX_ARM_NEON)
/* 32 registers as with AVX-512, but 4 float lanes: the generic sizes. */
#define CNX_FUSED_MR 4
#define CNX_FUSED_MP 6
#define CNX_FUSED_G 4
static inline cnx_vec cnx_relu_f32(cnx_vec v)
{
    cnx_vec r;
    r.f = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(v.f),
                                          vcleq_f32(v.f, vdupq_n_f32(0.0f))));
    return r;
}
static inline cnx_vec cnx_relu_f64(cnx_vec v)
{
    cnx_vec r;
    r.d = vreinterpretq_f64_u64(vbicq_u64(vreinterpretq_u64_f64(v.d),
                                          vcleq_f64(v.d, vdupq_n_f64(0.0))));
    return r;
}
static inline void cnx_max_take_f32(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    /* greater, or unordered with itself (NaN): not equal to itself */
    uint32x4_t take = vorrq_u32(vcgtq_f32(value.f, best->f),
                                vmvnq_u32(vceqq_f32(value.f, value.f)));
    best->f = vbslq_f32(take, value.f, best->f);
    code->f = vbslq_f32(take, value_code.f, code->f);
}
static inline void cnx_max_take_f64(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    uint64x2_t take = vorrq_u64(vcgtq_f64(value.d, best->d),
                                vreinterpretq_u64_u32(vmvnq_u32(vreinterpretq_u32_u64(
                                    vceqq_f64(value.d, value.d)))));
    best->d = vbslq_f64(take, value.d, best->d);
    code->d = vbslq_f64(take, value_code.d, code->d);
}
#else
/* The compiler's generic vectors: one lane at a time. */
#define CNX_FUSED_MR 4
#define CNX_FUSED_MP 6
#define CNX_FUSED_G 4
static inline cnx_vec cnx_relu_f32(cnx_vec v)
{
    int i;
    for (i = 0; i < 4; i++) v.f[i] = v.f[i] <= 0 ? 0.0f : v.f[i];
    return v;
}
static inline cnx_vec cnx_relu_f64(cnx_vec v)
{
    int i;
    for (i = 0; i < 2; i++) v.d[i] = v.d[i] <= 0 ? 0.0 : v.d[i];
    return v;
}
static inline void cnx_max_take_f32(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    int i;
    for (i = 0; i < 4; i++) {
        if (value.f[i] > best->f[i] || value.f[i] != value.f[i]) {
            best->f[i] = value.f[i];
            code->f[i] = value_code.f[i];
        }
    }
}
static inline void cnx_max_take_f64(cnx_vec *best, cnx_vec *code, cnx_vec value,
                                    cnx_vec value_code)
{
    int i;
    for (i = 0; i < 2; i++) {
        if (value.d[i] > best->d[i] || value.d[i] != value.d[i]) {
            best->d[i] = value.d[i];
            code->d[i] = value_code.d[i];
        }
    }
}
#endif

#if !defined(CNX_X86_AVX512) && !defined(CNX_X86_AVX2)
/* One lane at a time (SSE2 has no int32 -> int64 widening; on NEON a
   partial store would go lane by lane anyway). */
static inline void cnx_store_indices_f32(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    float lanes[CNX_VEC_BYTES / 4];
    ptrdiff_t i;
    memcpy(lanes, &code, sizeof lanes);
    for (i = 0; i < n; i++) dst[i] = base[i] + (int32_t)lanes[i];
}
static inline void cnx_store_indices_f64(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    double lanes[CNX_VEC_BYTES / 8];
    ptrdiff_t i;
    memcpy(lanes, &code, sizeof lanes);
    for (i = 0; i < n; i++) dst[i] = base[i] + (int32_t)lanes[i];
}
#endif

/* gradient where keep is non-zero, else +0.0, by masking the bits:
   nothing for the compiler to turn into a branch on the data. */
static inline float cnx_keep_f32(int keep, float gradient)
{
    uint32_t bits;
    memcpy(&bits, &gradient, sizeof bits);
    bits &= (uint32_t)0 - (uint32_t)(keep != 0);
    memcpy(&gradient, &bits, sizeof bits);
    return gradient;
}
static inline double cnx_keep_f64(int keep, double gradient)
{
    uint64_t bits;
    memcpy(&bits, &gradient, sizeof bits);
    bits &= (uint64_t)0 - (uint64_t)(keep != 0);
    memcpy(&gradient, &bits, sizeof bits);
    return gradient;
}

#if defined(_MSC_VER)
#define CNX_RESTRICT __restrict
#else
#define CNX_RESTRICT restrict
#endif

/* For q < n, with d = (int32)(idx[q] - base[q]) and g = gy[q] + 0 (+0.0 for
   -0.0), masked to +0.0 where y[q] <= 0 when y is not NULL (relu's gradient):
       out[e*stride + q] = g where d == codes[e], else +0.0   (e < 4)
       out[4*stride + q] = g
   Returns how many (q, e) have d == codes[e].  One pass over the inputs for
   the four elements of a 2x2 window; the outputs, the inputs and each other
   do not overlap (restrict), so the loop vectorises as one. */
#define CNX_SPLIT4(T, NAME)                                                                  \
    static inline ptrdiff_t NAME(const T *CNX_RESTRICT gy, const int64_t *CNX_RESTRICT idx,  \
                                 const int64_t *CNX_RESTRICT base, const T *CNX_RESTRICT y,  \
                                 const ptrdiff_t *codes, ptrdiff_t n, ptrdiff_t stride,        \
                                 T *out)                                                      \
    {                                                                                         \
        T *CNX_RESTRICT o0 = out;                                                             \
        T *CNX_RESTRICT o1 = out + stride;                                                    \
        T *CNX_RESTRICT o2 = out + 2 * stride;                                                \
        T *CNX_RESTRICT o3 = out + 3 * stride;                                                \
        T *CNX_RESTRICT o4 = out + 4 * stride;                                                \
        const int32_t c0 = (int32_t)codes[0], c1 = (int32_t)codes[1];                        \
        const int32_t c2 = (int32_t)codes[2], c3 = (int32_t)codes[3];                        \
        int32_t hits = 0;                                                                     \
        ptrdiff_t q;                                                                          \
        if (y == NULL) {                                                                      \
            for (q = 0; q < n; q++) {                                                         \
                int32_t d = (int32_t)(idx[q] - base[q]);                                      \
                T g = gy[q] + (T)0;                                                           \
                o0[q] = d == c0 ? g : (T)0;                                                   \
                o1[q] = d == c1 ? g : (T)0;                                                   \
                o2[q] = d == c2 ? g : (T)0;                                                   \
                o3[q] = d == c3 ? g : (T)0;                                                   \
                o4[q] = g;                                                                    \
                hits += (d == c0) + (d == c1) + (d == c2) + (d == c3);                        \
            }                                                                                 \
        } else {                                                                              \
            for (q = 0; q < n; q++) {                                                         \
                int32_t d = (int32_t)(idx[q] - base[q]);                                      \
                T g = gy[q] + (T)0; /* loaded whatever y: the select vectorises */            \
                g = !(y[q] <= 0) ? g : (T)0;                                                  \
                o0[q] = d == c0 ? g : (T)0;                                                   \
                o1[q] = d == c1 ? g : (T)0;                                                   \
                o2[q] = d == c2 ? g : (T)0;                                                   \
                o3[q] = d == c3 ? g : (T)0;                                                   \
                o4[q] = g;                                                                    \
                hits += (d == c0) + (d == c1) + (d == c2) + (d == c3);                        \
            }                                                                                 \
        }                                                                                     \
        return hits;                                                                          \
    }
CNX_SPLIT4(float, cnx_split4_f32)
CNX_SPLIT4(double, cnx_split4_f64)

#endif /* CNNEXT_SIMD_FUSED_H */

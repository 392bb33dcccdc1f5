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
 *   cnx_code_bits_T(c)             a T holding the integer c in its bits
 *                                  (int32 for float, int64 for double): a
 *                                  window code, splat and blended with the
 *                                  values it indexes, never computed with
 *   cnx_lane_code_T(codes, k)      the integer in lane k of codes in memory
 *   cnx_store_indices_T(dst, base, code, n)
 *                                  dst[l] = base[l] + the integer in lane l
 *                                  of code, for l < n (n <= lanes); nothing
 *                                  past dst + n written, nothing past
 *                                  base + n read
 *   cnx_keep_T(keep, g)            g where keep is non-zero, else +0.0, by
 *                                  masking the bits (never a branch on data)
 *   cnx_split4_T(gy, idx, base, y, codes, n, stride, out)
 *                                  the backward's split of a pooled gradient
 *                                  by 2x2 window element in one pass (below)
 *   cnx_halves_T(p0, p1)           a register whose low half is the half
 *                                  register at p0, its high half that at p1
 *   cnx_gather2_T(src, dst, n)     dst[u] = src[2u] for u < n (nothing read
 *                                  past src + 2n - 1)
 *   cnx_pick_T(table, code)        lane l = table[code_l]: code holds int32
 *                                  lane numbers in its bits (an int32 for
 *                                  each float lane; for double lane l the
 *                                  pair 2c, 2c + 1 of the float lanes of c)
 *
 * Tile sizes (accumulator registers):
 *   CNX_FUSED_MR x CNX_FUSED_G   filters broadcast from packed weights times
 *                                the vectors of FUSED_G window elements of
 *                                one vector of pooled positions;
 *   CNX_FUSED_MP x CNX_FUSED_G   pooled positions (their window elements'
 *                                inputs broadcast) times one vector of
 *                                filters;
 *   CNX_SPARSE_NR                taps of one vector of filters in the
 *                                backward's sparse weight-gradient tile.
 */
#ifndef CNNEXT_SIMD_FUSED_H
#define CNNEXT_SIMD_FUSED_H

#include <stdint.h>

#include "simd.h"

#if defined(CNX_X86_AVX512)
#define CNX_FUSED_MR 4
#define CNX_FUSED_MP 6
#define CNX_FUSED_G 4
/* Not more: gcc peels loops of at most 16 iterations completely, and only
   then do the accumulators stay in registers; each tap costs a permute on
   port 5 anyway, so 9 chains keep it busy (and 3x3 taps fill a tile). */
#define CNX_SPARSE_NR 9
static inline cnx_vec cnx_halves_f32(const float *p0, const float *p1)
{
    cnx_vec r;
    r.d = _mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(p0))),
                             _mm256_castps_pd(_mm256_loadu_ps(p1)), 1);
    return r;
}
static inline cnx_vec cnx_halves_f64(const double *p0, const double *p1)
{
    cnx_vec r;
    r.d = _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_loadu_pd(p0)), _mm256_loadu_pd(p1), 1);
    return r;
}
static inline cnx_vec cnx_pick_f32(cnx_vec table, cnx_vec code)
{ cnx_vec r; r.f = _mm512_permutexvar_ps(_mm512_castps_si512(code.f), table.f); return r; }
static inline cnx_vec cnx_pick_f64(cnx_vec table, cnx_vec code)
{ cnx_vec r; r.f = _mm512_permutexvar_ps(_mm512_castpd_si512(code.d), table.f); return r; }
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
    __m512i codes = _mm512_castps_si512(code.f);
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
    __mmask8 lanes = CNX_MASK64(n);
    _mm512_mask_storeu_epi64(dst, lanes, _mm512_add_epi64(
        _mm512_castpd_si512(code.d), _mm512_maskz_loadu_epi64(lanes, base)));
}
#elif defined(CNX_X86_AVX2)
#define CNX_FUSED_MR 2
#define CNX_FUSED_MP 3
#define CNX_FUSED_G 4
#define CNX_SPARSE_NR 9
static inline cnx_vec cnx_halves_f32(const float *p0, const float *p1)
{
    cnx_vec r;
    r.f = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p0)), _mm_loadu_ps(p1), 1);
    return r;
}
static inline cnx_vec cnx_halves_f64(const double *p0, const double *p1)
{
    cnx_vec r;
    r.d = _mm256_insertf128_pd(_mm256_castpd128_pd256(_mm_loadu_pd(p0)), _mm_loadu_pd(p1), 1);
    return r;
}
static inline cnx_vec cnx_pick_f32(cnx_vec table, cnx_vec code)
{ cnx_vec r; r.f = _mm256_permutevar8x32_ps(table.f, _mm256_castps_si256(code.f)); return r; }
static inline cnx_vec cnx_pick_f64(cnx_vec table, cnx_vec code)
{
    cnx_vec r;
    r.f = _mm256_permutevar8x32_ps(table.f, _mm256_castpd_si256(code.d));
    return r;
}
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
/* Whole vectors through plain loads and stores: a masked store (vpmaskmovq)
   is microcoded on AMD, many times slower.  Partial ones go lane by lane. */
static inline void cnx_store_indices_f32(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    __m256i codes = _mm256_castps_si256(code.f);
    __m256i first = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(codes));
    __m256i second = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(codes, 1));
    int64_t lanes[8];
    ptrdiff_t i;
    if (n == 8) {
        _mm256_storeu_si256((__m256i *)dst, _mm256_add_epi64(
            first, _mm256_loadu_si256((const __m256i *)base)));
        _mm256_storeu_si256((__m256i *)(dst + 4), _mm256_add_epi64(
            second, _mm256_loadu_si256((const __m256i *)(base + 4))));
        return;
    }
    _mm256_storeu_si256((__m256i *)lanes, first);
    _mm256_storeu_si256((__m256i *)(lanes + 4), second);
    for (i = 0; i < n; i++) dst[i] = base[i] + lanes[i];
}
static inline void cnx_store_indices_f64(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    __m256i codes = _mm256_castpd_si256(code.d);
    int64_t lanes[4];
    ptrdiff_t i;
    if (n == 4) {
        _mm256_storeu_si256((__m256i *)dst, _mm256_add_epi64(
            codes, _mm256_loadu_si256((const __m256i *)base)));
        return;
    }
    _mm256_storeu_si256((__m256i *)lanes, codes);
    for (i = 0; i < n; i++) dst[i] = base[i] + lanes[i];
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
/* 16 registers (SSE2) or lanes one at a time: the smaller sparse tile. */
#define CNX_SPARSE_NR 9
/* Through memory, lane by lane (SSE2 has no variable permute; NEON's byte
   table lookups would need byte indices). */
static inline cnx_vec cnx_halves_f32(const float *p0, const float *p1)
{
    cnx_vec r;
    memcpy(&r, p0, CNX_VEC_BYTES / 2);
    memcpy((char *)&r + CNX_VEC_BYTES / 2, p1, CNX_VEC_BYTES / 2);
    return r;
}
static inline cnx_vec cnx_halves_f64(const double *p0, const double *p1)
{
    cnx_vec r;
    memcpy(&r, p0, CNX_VEC_BYTES / 2);
    memcpy((char *)&r + CNX_VEC_BYTES / 2, p1, CNX_VEC_BYTES / 2);
    return r;
}
static inline cnx_vec cnx_pick_f32(cnx_vec table, cnx_vec code)
{
    float t[CNX_VEC_BYTES / 4], out[CNX_VEC_BYTES / 4];
    int32_t c[CNX_VEC_BYTES / 4];
    cnx_vec r;
    int i;
    memcpy(t, &table, sizeof t);
    memcpy(c, &code, sizeof c);
    for (i = 0; i < CNX_VEC_BYTES / 4; i++) out[i] = t[c[i]];
    memcpy(&r, out, sizeof out);
    return r;
}
static inline cnx_vec cnx_pick_f64(cnx_vec table, cnx_vec code)
{
    double t[CNX_VEC_BYTES / 8], out[CNX_VEC_BYTES / 8];
    int32_t c[CNX_VEC_BYTES / 4];
    cnx_vec r;
    int i;
    memcpy(t, &table, sizeof t);
    memcpy(c, &code, sizeof c);
    for (i = 0; i < CNX_VEC_BYTES / 8; i++) out[i] = t[c[2 * i] / 2];
    memcpy(&r, out, sizeof out);
    return r;
}

/* One lane at a time (SSE2 has no int32 -> int64 widening; on NEON a
   partial store would go lane by lane anyway). */
static inline void cnx_store_indices_f32(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    int32_t lanes[CNX_VEC_BYTES / 4];
    ptrdiff_t i;
    memcpy(lanes, &code, sizeof lanes);
    for (i = 0; i < n; i++) dst[i] = base[i] + lanes[i];
}
static inline void cnx_store_indices_f64(int64_t *dst, const int64_t *base, cnx_vec code,
                                         ptrdiff_t n)
{
    int64_t lanes[CNX_VEC_BYTES / 8];
    ptrdiff_t i;
    memcpy(lanes, &code, sizeof lanes);
    for (i = 0; i < n; i++) dst[i] = base[i] + lanes[i];
}
#endif

/* Window codes travel in the lanes of the values they index as integers
   (int32 in a float lane, int64 in a double lane): the running maximum's
   blends move bits, so a winner's code needs no conversion to become an
   index. */
static inline float cnx_code_bits_f32(int32_t c)
{ float r; memcpy(&r, &c, sizeof r); return r; }
static inline double cnx_code_bits_f64(int64_t c)
{ double r; memcpy(&r, &c, sizeof r); return r; }
static inline int64_t cnx_lane_code_f32(const float *codes, ptrdiff_t k)
{ int32_t c; memcpy(&c, codes + k, sizeof c); return c; }
static inline int64_t cnx_lane_code_f64(const double *codes, ptrdiff_t k)
{ int64_t c; memcpy(&c, codes + k, sizeof c); return c; }

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

/* For q < n, with d = idx[q] - base[q] (an element of the window when
   0 <= d < limit and its column b = d - (d >= wo ? wo : 0) < kw):
       g[q] = gy[q] + 0 (+0.0 for -0.0), +0.0 where y[q] <= 0 (y not NULL)
       c = (d >= wo ? a_step : 0) + b * sw, or 0 where d is no element
       code[q] = c as cnx_pick_T's lane code: for float the int32 c, for
                 double the int32 pair 2c, 2c + 1 (low, high) of one lane
   Returns how many d are elements.  Contiguous in and out: the loop
   vectorises (the caller transposes the results to filters as lanes). */
#define CNX_SPARSE_CODES(T, U, LANE, NAME)                                                   \
    static inline ptrdiff_t NAME(const T *CNX_RESTRICT gy, const int64_t *CNX_RESTRICT idx,  \
                                 const int64_t *CNX_RESTRICT base, const T *CNX_RESTRICT y,  \
                                 ptrdiff_t n, int64_t limit, int32_t wo, int32_t kw,         \
                                 int32_t a_step, int32_t sw, T *CNX_RESTRICT g,              \
                                 T *CNX_RESTRICT code)                                        \
    {                                                                                         \
        int32_t hits = 0;                                                                     \
        ptrdiff_t q;                                                                          \
        for (q = 0; q < n; q++) {                                                             \
            int64_t d = idx[q] - base[q];                                                     \
            int32_t in = (d >= 0) & (d < limit);                                              \
            int32_t d32 = in ? (int32_t)d : 0;                                                \
            int32_t a = d32 >= wo;                                                            \
            int32_t b = d32 - (a ? wo : 0);                                                   \
            int32_t ok = in & (b < kw);                                                       \
            U c = (U)(uint32_t)(ok ? (a ? a_step : 0) + b * sw : 0);                          \
            T v = gy[q] + (T)0;                                                               \
            if (y != NULL) v = !(y[q] <= 0) ? v : (T)0;                                       \
            g[q] = v;                                                                         \
            c = LANE(c);                                                                      \
            memcpy(&code[q], &c, sizeof c); /* bits, not a value */                           \
            hits += ok;                                                                       \
        }                                                                                     \
        return hits;                                                                          \
    }
#define CNX_LANE_F32(c) (c)
#define CNX_LANE_F64(c) ((2 * (c)) | ((2 * (c) + 1) << 32))
CNX_SPARSE_CODES(float, uint32_t, CNX_LANE_F32, cnx_sparse_codes_f32)
CNX_SPARSE_CODES(double, uint64_t, CNX_LANE_F64, cnx_sparse_codes_f64)

/* dst[u] = src[2u] for u < n: one phase of a staged row split in two.
   AVX-512 picks the even lanes of two registers (masked loads: nothing
   read past src + 2n - 1); elsewhere one value at a time. */
static inline void cnx_gather2_f32(const float *CNX_RESTRICT src, float *CNX_RESTRICT dst,
                                   ptrdiff_t n)
{
#if defined(CNX_X86_AVX512)
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16,
                                          14, 12, 10, 8, 6, 4, 2, 0);
    while (n > 0) {
        ptrdiff_t m = n < 16 ? n : 16, reads = 2 * m - 1;
        __m512 lo = _mm512_maskz_loadu_ps(CNX_MASK32(reads < 16 ? reads : 16), src);
        __m512 hi = _mm512_maskz_loadu_ps(reads > 16 ? CNX_MASK32(reads - 16) : 0, src + 16);
        _mm512_mask_storeu_ps(dst, CNX_MASK32(m), _mm512_permutex2var_ps(lo, even, hi));
        src += 32;
        dst += 16;
        n -= m;
    }
#else
    ptrdiff_t u;
    for (u = 0; u < n; u++) dst[u] = src[2 * u];
#endif
}
static inline void cnx_gather2_f64(const double *CNX_RESTRICT src, double *CNX_RESTRICT dst,
                                   ptrdiff_t n)
{
#if defined(CNX_X86_AVX512)
    const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    while (n > 0) {
        ptrdiff_t m = n < 8 ? n : 8, reads = 2 * m - 1;
        __m512d lo = _mm512_maskz_loadu_pd(CNX_MASK64(reads < 8 ? reads : 8), src);
        __m512d hi = _mm512_maskz_loadu_pd(reads > 8 ? CNX_MASK64(reads - 8) : 0, src + 8);
        _mm512_mask_storeu_pd(dst, CNX_MASK64(m), _mm512_permutex2var_pd(lo, even, hi));
        src += 16;
        dst += 8;
        n -= m;
    }
#else
    ptrdiff_t u;
    for (u = 0; u < n; u++) dst[u] = src[2 * u];
#endif
}

#endif /* CNNEXT_SIMD_FUSED_H */

# Kernels of cnnext.compat, the seed notebook's classes: one float64 image at
# a time, in the notebook's (h, w, channels) layout, so that every array the
# classes pass around is C-contiguous and each step is one call here.
#
# Layers, top to bottom:
#
# 1. cnnext.compat calls the def functions at the end with whatever its
#    caller gave it.  A function returns None, touching nothing, unless every
#    array is an exact float64 ndarray of the layout and of shapes consistent
#    with each other (and a parameter updated in place is writeable and shares
#    no memory with the other arrays): compat then validates and converts the
#    arguments (cnnext/_validation.py) and calls again.  So a repeated call
#    costs a few pointer and shape checks, and no argument reaches C unchecked.
# 2. The C helpers below compute from raw pointers and trust their caller.
#    Each is written once over runtime sizes and instantiated, through an
#    always-inlined body, for the notebook's sizes (8 filters of 3x3, 10
#    classes are not special: the dot products are vectors along the input)
#    so that gcc unrolls those loops completely and keeps the tiles in
#    registers; the runtime-size instance serves every other shape.
#
# Single-threaded: one image is microseconds of work, less than waking an
# OpenMP team.  Results depend on the instruction set (vector widths, fused
# multiply-add) by rounding only; the notebook's own numbers are matched to
# far better than 1e-9 (tests/test_compat.py).

from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cimport numpy as cnp

import numpy as np

include "_compiled_isa.pxi"

cnp.import_array()

cdef extern from *:
    """
    #include <math.h>
    #include <stddef.h>
    #include <string.h>
    #include "simd.h"

    #if defined(__GNUC__)
    #define CPX_INLINE static inline __attribute__((always_inline))
    #elif defined(_MSC_VER)
    #define CPX_INLINE static __forceinline
    #else
    #define CPX_INLINE static inline
    #endif
    #if defined(__GNUC__) || defined(_MSC_VER)
    #define CPX_RESTRICT __restrict
    #else
    #define CPX_RESTRICT
    #endif

    #define CPX_LANES (CNX_VEC_BYTES / 8)
    /* Output positions per convolution tile (accumulator registers). */
    #if CNX_VEC_REGISTERS >= 32
    #define CPX_MR 8
    #else
    #define CPX_MR 4
    #endif
    /* Filters per block of a scalar tile. */
    #define CPX_FB 8

    /* The tiles compute, for one block of filters f0 <= f < f0 + n and the
       positions p < m of one output row,
           o[p * K + f] = sum over a, b < L of x[a * W + p + b] * ft[(a * L + b) * K + f]
       (ft: the filters as (L, L, K)).  The vector tile takes n = one vector
       or two (nv) of lanes; the scalar tile any n <= CPX_FB. */
    CPX_INLINE void cpx_conv_vtile(const double *x, ptrdiff_t W, const double *ft,
                                   ptrdiff_t K, ptrdiff_t L, int nv, int m, double *o)
    {
        cnx_vec acc[CPX_MR][2];
        ptrdiff_t a, b;
        int p, v;
        for (p = 0; p < m; p++)
            for (v = 0; v < nv; v++) acc[p][v] = cnx_zero();
        for (a = 0; a < L; a++)
            for (b = 0; b < L; b++) {
                cnx_vec w[2];
                const double *xr = x + a * W + b;
                for (v = 0; v < nv; v++) w[v] = cnx_load_f64(ft + (a * L + b) * K + v * CPX_LANES);
                for (p = 0; p < m; p++) {
                    cnx_vec s = cnx_set_f64(xr[p]);
                    for (v = 0; v < nv; v++) acc[p][v] = cnx_fma_f64(acc[p][v], s, w[v]);
                }
            }
        for (p = 0; p < m; p++)
            for (v = 0; v < nv; v++) cnx_store_f64(o + p * K + v * CPX_LANES, acc[p][v]);
    }

    CPX_INLINE void cpx_conv_stile(const double *x, ptrdiff_t W, const double *ft,
                                   ptrdiff_t K, ptrdiff_t L, ptrdiff_t n, int m, double *o)
    {
        double acc[CPX_MR][CPX_FB];
        ptrdiff_t a, b, f;
        int p;
        for (p = 0; p < m; p++)
            for (f = 0; f < n; f++) acc[p][f] = 0.0;
        for (a = 0; a < L; a++)
            for (b = 0; b < L; b++) {
                const double *w = ft + (a * L + b) * K;
                const double *xr = x + a * W + b;
                for (p = 0; p < m; p++) {
                    double v = xr[p];
                    for (f = 0; f < n; f++) acc[p][f] += v * w[f];
                }
            }
        for (p = 0; p < m; p++)
            for (f = 0; f < n; f++) o[p * K + f] = acc[p][f];
    }

    CPX_INLINE void cpx_conv_forward_body(const double *x, ptrdiff_t H, ptrdiff_t W,
                                          const double *ft, ptrdiff_t K, ptrdiff_t L,
                                          double *out)
    {
        ptrdiff_t Ho = H - L + 1, Wo = W - L + 1, i, j, f0;
        /* Two vectors of filters share each broadcast input value. */
        int nv = K % (2 * CPX_LANES) == 0 ? 2 : K % CPX_LANES == 0 ? 1 : 0;
        ptrdiff_t block = nv ? nv * CPX_LANES : CPX_FB;
        for (i = 0; i < Ho; i++)
            for (f0 = 0; f0 < K; f0 += block) {
                ptrdiff_t n = K - f0 < block ? K - f0 : block;
                const double *xi = x + i * W;
                double *o = out + i * Wo * K + f0;
                if (nv == 2) {
                    for (j = 0; j + CPX_MR <= Wo; j += CPX_MR)
                        cpx_conv_vtile(xi + j, W, ft + f0, K, L, 2, CPX_MR, o + j * K);
                    for (; j < Wo; j++) cpx_conv_vtile(xi + j, W, ft + f0, K, L, 2, 1, o + j * K);
                } else if (nv == 1) {
                    for (j = 0; j + CPX_MR <= Wo; j += CPX_MR)
                        cpx_conv_vtile(xi + j, W, ft + f0, K, L, 1, CPX_MR, o + j * K);
                    for (; j < Wo; j++) cpx_conv_vtile(xi + j, W, ft + f0, K, L, 1, 1, o + j * K);
                } else {
                    for (j = 0; j + CPX_MR <= Wo; j += CPX_MR)
                        cpx_conv_stile(xi + j, W, ft + f0, K, L, n, CPX_MR, o + j * K);
                    for (; j < Wo; j++)
                        cpx_conv_stile(xi + j, W, ft + f0, K, L, n, 1, o + j * K);
                }
            }
    }

    /* out (H-L+1, W-L+1, K) = the valid correlation of x (H, W) with each of
       the K filters (K, L, L); ft: (L, L, K) scratch. */
    static void cpx_conv_forward(const double *x, ptrdiff_t H, ptrdiff_t W,
                                 const double *filters, ptrdiff_t K, ptrdiff_t L,
                                 double *ft, double *out)
    {
        ptrdiff_t f, t;
        for (f = 0; f < K; f++)
            for (t = 0; t < L * L; t++) ft[t * K + f] = filters[f * L * L + t];
        if (K == 8 && L == 3)
            cpx_conv_forward_body(x, H, W, ft, 8, 3, out);
        else
            cpx_conv_forward_body(x, H, W, ft, K, L, out);
    }

    /* acc (3, 3, K) = sum over positions (i, j) of gy[i, j, f] * x[i + a, j + b]
       for the one vector of filters f0 <= f < f0 + lanes: 3x3 filters, the
       nine accumulators in registers. */
    static void cpx_conv_filter_grad_3x3(const double *x, ptrdiff_t H, ptrdiff_t W,
                                         const double *gy, ptrdiff_t K, ptrdiff_t f0,
                                         double *acc)
    {
        ptrdiff_t Ho = H - 2, Wo = W - 2, i, j;
        int t;
        cnx_vec s[9];
        for (t = 0; t < 9; t++) s[t] = cnx_zero();
        for (i = 0; i < Ho; i++)
            for (j = 0; j < Wo; j++) {
                cnx_vec g = cnx_load_f64(gy + (i * Wo + j) * K + f0);
                const double *xr = x + i * W + j;
                for (t = 0; t < 9; t++)
                    s[t] = cnx_fma_f64(s[t], cnx_set_f64(xr[(t / 3) * W + t % 3]), g);
            }
        for (t = 0; t < 9; t++) cnx_store_f64(acc + t * K + f0, s[t]);
    }

    /* acc (L, L, K) = sum over positions (i, j) of gy[i, j, :] * x[i + a, j + b]. */
    static void cpx_conv_filter_grad(const double *CPX_RESTRICT x, ptrdiff_t H, ptrdiff_t W,
                                     const double *CPX_RESTRICT gy, ptrdiff_t K, ptrdiff_t L,
                                     double *CPX_RESTRICT acc)
    {
        ptrdiff_t Ho = H - L + 1, Wo = W - L + 1, i, j, a, b, f;
        memset(acc, 0, (size_t)(K * L * L) * sizeof(double));
        for (i = 0; i < Ho; i++)
            for (j = 0; j < Wo; j++) {
                const double *g = gy + (i * Wo + j) * K;
                for (a = 0; a < L; a++)
                    for (b = 0; b < L; b++) {
                        double v = x[(i + a) * W + j + b];
                        double *s = acc + (a * L + b) * K;
                        for (f = 0; f < K; f++) s[f] += v * g[f];
                    }
            }
    }

    /* filters (K, L, L) -= lr * their gradient for the output gradient gy
       (H-L+1, W-L+1, K) of the image x (H, W); acc: (L, L, K) scratch. */
    static void cpx_conv_backward_step(const double *x, ptrdiff_t H, ptrdiff_t W,
                                       const double *gy, double *filters, ptrdiff_t K,
                                       ptrdiff_t L, double lr, double *acc)
    {
        ptrdiff_t f, t;
        if (L == 3 && K % CPX_LANES == 0)
            for (f = 0; f < K; f += CPX_LANES) cpx_conv_filter_grad_3x3(x, H, W, gy, K, f, acc);
        else
            cpx_conv_filter_grad(x, H, W, gy, K, L, acc);
        for (f = 0; f < K; f++)
            for (t = 0; t < L * L; t++) filters[f * L * L + t] -= lr * acc[t * K + f];
    }

    /* The larger of a and b, NaN when either is (np.amax propagates NaN). */
    CPX_INLINE double cpx_max(double a, double b) { return (a > b || a != a) ? a : b; }

    /* The top-left 2x2 elements of each (2p, 2q) window of x (H, W, C), for
       p < Ho, q < Wo: r0, r1 in row 2p, r2, r3 in row 2p + 1. */
    #define CPX_WINDOW(x, W, C, p, q)                                                 \\
        const double *r0 = (x) + ((2 * (p)) * (W) + 2 * (q)) * (C), *r1 = r0 + (C), \\
                     *r2 = r0 + (W) * (C), *r3 = r2 + (C)

    CPX_INLINE void cpx_max_pool_forward_body(const double *CPX_RESTRICT x, ptrdiff_t W,
                                              ptrdiff_t C, ptrdiff_t Ho, ptrdiff_t Wo,
                                              double *CPX_RESTRICT out)
    {
        ptrdiff_t p, q, c;
        for (p = 0; p < Ho; p++)
            for (q = 0; q < Wo; q++) {
                CPX_WINDOW(x, W, C, p, q);
                double *o = out + (p * Wo + q) * C;
                for (c = 0; c < C; c++)
                    o[c] = cpx_max(cpx_max(r0[c], r1[c]), cpx_max(r2[c], r3[c]));
            }
    }

    /* out (Ho, Wo, C) = the maxima of the 2x2 windows at stride 2 of x (H, W, C). */
    static void cpx_max_pool_forward(const double *x, ptrdiff_t W, ptrdiff_t C, ptrdiff_t Ho,
                                     ptrdiff_t Wo, double *out)
    {
        if (C == 8)
            cpx_max_pool_forward_body(x, W, 8, Ho, Wo, out);
        else
            cpx_max_pool_forward_body(x, W, C, Ho, Wo, out);
    }

    CPX_INLINE void cpx_max_pool_backward_body(const double *CPX_RESTRICT gy,
                                               const double *CPX_RESTRICT x, ptrdiff_t H,
                                               ptrdiff_t W, ptrdiff_t C, ptrdiff_t Ho,
                                               ptrdiff_t Wo, double *CPX_RESTRICT gx)
    {
        ptrdiff_t p, q, c, row;
        for (p = 0; p < Ho; p++) {
            for (q = 0; q < Wo; q++) {
                CPX_WINDOW(x, W, C, p, q);
                const double *g = gy + (p * Wo + q) * C;
                double *o0 = gx + (r0 - x), *o1 = o0 + C, *o2 = o0 + W * C, *o3 = o2 + C;
                for (c = 0; c < C; c++) {
                    double m = cpx_max(cpx_max(r0[c], r1[c]), cpx_max(r2[c], r3[c]));
                    o0[c] = r0[c] == m ? g[c] : 0.0;
                    o1[c] = r1[c] == m ? g[c] : 0.0;
                    o2[c] = r2[c] == m ? g[c] : 0.0;
                    o3[c] = r3[c] == m ? g[c] : 0.0;
                }
            }
            /* The odd last column of the window rows. */
            for (row = 2 * p; row < 2 * p + 2; row++)
                memset(gx + (row * W + 2 * Wo) * C, 0, (size_t)((W - 2 * Wo) * C) * sizeof(double));
        }
        memset(gx + 2 * Ho * W * C, 0, (size_t)((H - 2 * Ho) * W * C) * sizeof(double));
    }

    /* gx (H, W, C): each window's gy value at every element equal to the
       window's maximum, 0 elsewhere and outside the windows. */
    static void cpx_max_pool_backward(const double *gy, const double *x, ptrdiff_t H,
                                      ptrdiff_t W, ptrdiff_t C, ptrdiff_t Ho, ptrdiff_t Wo,
                                      double *gx)
    {
        if (C == 8)
            cpx_max_pool_backward_body(gy, x, H, W, 8, Ho, Wo, gx);
        else
            cpx_max_pool_backward_body(gy, x, H, W, C, Ho, Wo, gx);
    }

    /* Rows of the weights per pass of the dense kernels (accumulator registers). */
    #define CPX_JB 8

    /* totals[j] = x (n) . wt[j] (J, n) + b[j] for the jb <= CPX_JB rows from j0:
       x read once per pass, one vector of partial sums per row. */
    CPX_INLINE void cpx_dots(const double *x, const double *wt, const double *b, ptrdiff_t n,
                             ptrdiff_t j0, int jb, double *totals)
    {
        cnx_vec s[CPX_JB];
        ptrdiff_t k = 0;
        int j;
        for (j = 0; j < jb; j++) s[j] = cnx_zero();
        for (; k + CPX_LANES <= n; k += CPX_LANES) {
            cnx_vec v = cnx_load_f64(x + k);
            for (j = 0; j < jb; j++)
                s[j] = cnx_fma_f64(s[j], cnx_load_f64(wt + (j0 + j) * n + k), v);
        }
        if (k < n) {
            cnx_vec v = cnx_load_part_f64(x + k, n - k);
            for (j = 0; j < jb; j++)
                s[j] = cnx_fma_f64(s[j], cnx_load_part_f64(wt + (j0 + j) * n + k, n - k), v);
        }
        for (j = 0; j < jb; j++) totals[j0 + j] = cnx_sum_f64(s[j]) + b[j0 + j];
    }

    /* totals (J) = x (n) . wt[j] (J, n) + b; probs = exp(totals) / their sum
       (no max shift: the notebook's softmax overflows above ~709). */
    static void cpx_softmax_forward(const double *x, const double *wt, const double *b,
                                    ptrdiff_t n, ptrdiff_t J, double *totals, double *probs)
    {
        ptrdiff_t j;
        double total = 0.0;
        for (j = 0; j + CPX_JB <= J; j += CPX_JB) cpx_dots(x, wt, b, n, j, CPX_JB, totals);
        for (; j + 2 <= J; j += 2) cpx_dots(x, wt, b, n, j, 2, totals);
        for (; j < J; j++) cpx_dots(x, wt, b, n, j, 1, totals);
        for (j = 0; j < J; j++) {
            probs[j] = exp(totals[j]);
            total += probs[j];
        }
        for (j = 0; j < J; j++) probs[j] /= total;
    }

    /* Columns of the weights per block of the step below (vectors). */
    #define CPX_KV 4

    /* For the columns [k, k + kv * lanes) (m < kv * lanes of them when part):
       gx = sum over j of wt[j] * dt[j], then wt[j] -= lr * x * dt[j]: each
       weight read and written once. */
    CPX_INLINE void cpx_dense_step_block(const double *x, double *wt, ptrdiff_t n,
                                         ptrdiff_t J, const double *dt, double lr,
                                         ptrdiff_t k, int kv, ptrdiff_t m, double *gx)
    {
        cnx_vec acc[CPX_KV], xv[CPX_KV];
        ptrdiff_t j;
        int v;
        for (v = 0; v < kv; v++) {
            acc[v] = cnx_zero();
            xv[v] = m ? cnx_load_part_f64(x + k, m) : cnx_load_f64(x + k + v * CPX_LANES);
        }
        for (j = 0; j < J; j++) {
            cnx_vec d = cnx_set_f64(dt[j]), step = cnx_set_f64(-lr * dt[j]);
            double *w = wt + j * n + k;
            for (v = 0; v < kv; v++) {
                cnx_vec wv = m ? cnx_load_part_f64(w, m) : cnx_load_f64(w + v * CPX_LANES);
                acc[v] = cnx_fma_f64(acc[v], wv, d);
                wv = cnx_fma_f64(wv, xv[v], step);
                if (m)
                    cnx_store_part_f64(w, wv, m);
                else
                    cnx_store_f64(w + v * CPX_LANES, wv);
            }
        }
        for (v = 0; v < kv; v++) {
            if (m)
                cnx_store_part_f64(gx + k, acc[v], m);
            else
                cnx_store_f64(gx + k + v * CPX_LANES, acc[v]);
        }
    }

    /* One step of the notebook's Softmax.backprop from the first non-zero
       (or NaN) entry g = grad[i]: dt = g * d p_i / d totals, gx (n) = wt^T dt
       with the weights before the step, then wt (J, n) -= lr * dt x^T and
       b -= lr * dt.  t: (J) scratch.  Returns 0, touching nothing, when grad
       is all zeros. */
    static int cpx_softmax_backward_step(const double *grad, const double *totals,
                                         const double *x, double *wt, double *b, ptrdiff_t n,
                                         ptrdiff_t J, double lr, double *t, double *gx)
    {
        ptrdiff_t i, j, k = 0;
        double g, s = 0.0, s2, ti;
        for (i = 0; i < J && grad[i] == 0.0; i++) {}
        if (i == J) return 0;
        g = grad[i];
        for (j = 0; j < J; j++) {
            t[j] = exp(totals[j]);
            s += t[j];
        }
        s2 = s * s;
        ti = t[i];
        for (j = 0; j < J; j++) t[j] = g * (-ti * t[j] / s2);
        t[i] = g * (ti * (s - ti) / s2);
        for (; k + CPX_KV * CPX_LANES <= n; k += CPX_KV * CPX_LANES)
            cpx_dense_step_block(x, wt, n, J, t, lr, k, CPX_KV, 0, gx);
        for (; k + CPX_LANES <= n; k += CPX_LANES)
            cpx_dense_step_block(x, wt, n, J, t, lr, k, 1, 0, gx);
        if (k < n) cpx_dense_step_block(x, wt, n, J, t, lr, k, 1, n - k, gx);
        for (j = 0; j < J; j++) b[j] -= lr * t[j];
        return 1;
    }
    """
    void cpx_conv_forward(const double* x, Py_ssize_t H, Py_ssize_t W, const double* filters,
                          Py_ssize_t K, Py_ssize_t L, double* ft, double* out) noexcept nogil
    void cpx_conv_backward_step(const double* x, Py_ssize_t H, Py_ssize_t W, const double* gy,
                                double* filters, Py_ssize_t K, Py_ssize_t L, double lr,
                                double* acc) noexcept nogil
    void cpx_max_pool_forward(const double* x, Py_ssize_t W, Py_ssize_t C, Py_ssize_t Ho,
                              Py_ssize_t Wo, double* out) noexcept nogil
    void cpx_max_pool_backward(const double* gy, const double* x, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t C, Py_ssize_t Ho, Py_ssize_t Wo,
                               double* gx) noexcept nogil
    void cpx_softmax_forward(const double* x, const double* wt, const double* b, Py_ssize_t n,
                             Py_ssize_t J, double* totals, double* probs) noexcept nogil
    int cpx_softmax_backward_step(const double* grad, const double* totals, const double* x,
                                  double* wt, double* b, Py_ssize_t n, Py_ssize_t J, double lr,
                                  double* t, double* gx) noexcept nogil

cdef enum:
    # Scratch (filters transposed, their gradient, the softmax's exponentials)
    # of up to this many doubles lives on the stack.
    STACK_DOUBLES = 1024
    MAX_SHAPE_DIMS = 32


cdef inline bint is_float64(object a, int ndim, bint written):
    """An exact float64 ndarray of ``ndim`` dimensions (-1: any), C-contiguous
    (and writeable when ``written``)."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray array = <cnp.ndarray>a
    return ((ndim < 0 or cnp.PyArray_NDIM(array) == ndim)
            and cnp.PyArray_TYPE(array) == cnp.NPY_FLOAT64
            and cnp.PyArray_IS_C_CONTIGUOUS(array)
            and (not written or cnp.PyArray_ISWRITEABLE(array)))


cdef inline bint shares_memory(object a, object b):
    """Whether two contiguous ndarrays' bytes overlap."""
    cdef char* a0 = <char*>cnp.PyArray_DATA(<cnp.ndarray>a)
    cdef char* b0 = <char*>cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef Py_ssize_t a_bytes = cnp.PyArray_NBYTES(<cnp.ndarray>a)
    cdef Py_ssize_t b_bytes = cnp.PyArray_NBYTES(<cnp.ndarray>b)
    return a_bytes > 0 and b_bytes > 0 and a0 < b0 + b_bytes and b0 < a0 + a_bytes


cdef inline bint shares_any(object a, object b, object c, object d):
    return shares_memory(a, b) or shares_memory(a, c) or shares_memory(a, d)


cdef inline bint finite_float(object value):
    return type(value) is float and (<double>value - <double>value) == 0.0


cdef inline Py_ssize_t as_size(object value):
    """``value`` as a Py_ssize_t when it is an int that fits, else -1 (every
    size argument here must be positive: -1 never fits)."""
    if type(value) is not int:
        return -1
    try:
        return value
    except OverflowError:
        return -1


cdef inline double* data(object a):
    return <double*>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline Py_ssize_t dim(object a, int d):
    return cnp.PyArray_DIM(<cnp.ndarray>a, d)


cdef object output(object out, int ndim, cnp.npy_intp* dims):
    """``out`` when it is a writeable float64 C-contiguous array of ``dims``
    (False when it is not), a new array when it is None."""
    cdef int d
    if out is None:
        return cnp.PyArray_EMPTY(ndim, dims, cnp.NPY_FLOAT64, 0)
    if not is_float64(out, ndim, True):
        return False
    for d in range(ndim):
        if dim(out, d) != dims[d]:
            return False
    return out


cdef inline double* scratch(double* stack, Py_ssize_t count):
    """``stack`` for up to STACK_DOUBLES doubles, else a malloc'ed block (NULL
    when out of memory)."""
    return stack if count <= STACK_DOUBLES else <double*>malloc(count * sizeof(double))


cdef inline bint fits_filters(object filters, Py_ssize_t K, Py_ssize_t L, bint written):
    return (is_float64(filters, 3, written) and dim(filters, 0) == K and dim(filters, 1) == L
            and dim(filters, 2) == L)


def conv_forward(x, filters, num_filters, length, out=None):
    """conv_forward(x, filters, num_filters, length, out=None)

    The valid correlation (H - L + 1, W - L + 1, K) of the image ``x`` (H, W)
    with ``filters`` (K, L, L), K = ``num_filters``, L = ``length``; into
    ``out`` when given.  None when the arrays do not fit (see the top).
    """
    cdef double stack[STACK_DOUBLES]
    cdef cnp.npy_intp dims[3]
    cdef Py_ssize_t count = as_size(num_filters), side = as_size(length)
    if (not fits_filters(filters, count, side, True) or not is_float64(x, 2, False)
            or side < 1 or dim(x, 0) < side or dim(x, 1) < side):
        return None
    dims[0], dims[1], dims[2] = dim(x, 0) - side + 1, dim(x, 1) - side + 1, count
    y = output(out, 3, dims)
    if y is False:
        return None
    cdef double* ft = scratch(stack, count * side * side)
    if ft == NULL:
        raise MemoryError()
    cdef const double* xp = data(x)
    cdef const double* fp = data(filters)
    cdef double* yp = data(y)
    cdef Py_ssize_t height = dim(x, 0), width = dim(x, 1)
    with nogil:
        cpx_conv_forward(xp, height, width, fp, count, side, ft, yp)
    if ft != stack:
        free(ft)
    return y


def conv_backward_step(gy, x, filters, num_filters, length, learn_rate):
    """conv_backward_step(gy, x, filters, num_filters, length, learn_rate)

    ``filters`` (K, L, L) -= learn_rate * their gradient for the output
    gradient ``gy`` (H - L + 1, W - L + 1, K) of the image ``x`` (H, W).
    True when done; None when the arguments do not fit (learn_rate: a finite
    float; the filters writeable, sharing no memory with gy or x).
    """
    cdef double stack[STACK_DOUBLES]
    cdef Py_ssize_t count = as_size(num_filters), side = as_size(length)
    if (not fits_filters(filters, count, side, True) or not is_float64(x, 2, False)
            or not is_float64(gy, 3, False) or not finite_float(learn_rate)
            or side < 1 or dim(x, 0) < side or dim(x, 1) < side
            or dim(gy, 0) != dim(x, 0) - side + 1 or dim(gy, 1) != dim(x, 1) - side + 1
            or dim(gy, 2) != count
            or shares_memory(filters, x) or shares_memory(filters, gy)):
        return None
    cdef double* acc = scratch(stack, count * side * side)
    cdef double lr = learn_rate
    if acc == NULL:
        raise MemoryError()
    cdef const double* xp = data(x)
    cdef const double* gp = data(gy)
    cdef double* fp = data(filters)
    cdef Py_ssize_t height = dim(x, 0), width = dim(x, 1)
    with nogil:
        cpx_conv_backward_step(xp, height, width, gp, fp, count, side, lr, acc)
    if acc != stack:
        free(acc)
    return True


def max_pool_forward(x, pool_length, out=None):
    """max_pool_forward(x, pool_length, out=None)

    The maxima (H // n, W // n, C) of the 2x2 windows at stride 2 of ``x``
    (H, W, C), n = ``pool_length`` >= 2 (NaN where a window holds one); into
    ``out`` when given.  None when the arrays do not fit.
    """
    cdef cnp.npy_intp dims[3]
    cdef Py_ssize_t n = as_size(pool_length)
    if not is_float64(x, 3, False) or n < 2:
        return None
    dims[0], dims[1], dims[2] = dim(x, 0) // n, dim(x, 1) // n, dim(x, 2)
    y = output(out, 3, dims)
    if y is False:
        return None
    cdef const double* xp = data(x)
    cdef double* yp = data(y)
    cdef Py_ssize_t width = dim(x, 1)
    with nogil:
        cpx_max_pool_forward(xp, width, dims[2], dims[0], dims[1], yp)
    return y


def max_pool_backward(gy, x, pool_length, out=None):
    """max_pool_backward(gy, x, pool_length, out=None)

    The gradient (H, W, C) for ``x`` of the pooling above given ``gy``
    (H // n, W // n, C), n = ``pool_length``: each window's value at every
    element equal to the window's maximum (ties all get it), 0 elsewhere;
    into ``out`` when given.
    None when the arrays do not fit.
    """
    cdef cnp.npy_intp dims[3]
    cdef Py_ssize_t n = as_size(pool_length)
    if (not is_float64(x, 3, False) or not is_float64(gy, 3, False) or n < 2
            or dim(gy, 0) != dim(x, 0) // n or dim(gy, 1) != dim(x, 1) // n
            or dim(gy, 2) != dim(x, 2)):
        return None
    dims[0], dims[1], dims[2] = dim(x, 0), dim(x, 1), dim(x, 2)
    gx = output(out, 3, dims)
    if gx is False or (out is not None and (shares_memory(gx, x) or shares_memory(gx, gy))):
        return None
    cdef const double* gp = data(gy)
    cdef const double* xp = data(x)
    cdef double* gxp = data(gx)
    cdef Py_ssize_t out_height = dim(gy, 0), out_width = dim(gy, 1)
    with nogil:
        cpx_max_pool_backward(gp, xp, dims[0], dims[1], dims[2], out_height, out_width, gxp)
    return gx


cdef inline bint fits_dense(object weights, object biases, bint written):
    """weights (n, J) column-major and biases (J,), float64 (writeable when written)."""
    if type(weights) is not cnp.ndarray or not is_float64(biases, 1, written):
        return False
    cdef cnp.ndarray w = <cnp.ndarray>weights
    return (cnp.PyArray_NDIM(w) == 2 and cnp.PyArray_TYPE(w) == cnp.NPY_FLOAT64
            and cnp.PyArray_IS_F_CONTIGUOUS(w) and (not written or cnp.PyArray_ISWRITEABLE(w))
            and cnp.PyArray_DIM(w, 1) == dim(biases, 0))


def softmax_forward(x, weights, biases, outs=None):
    """softmax_forward(x, weights, biases, outs=None)

    (x flattened (a copy), totals = x . weights + biases, exp(totals) / their
    sum) for ``x`` of any shape holding n numbers, ``weights`` (n, J)
    column-major, ``biases`` (J,); into the three arrays ``outs`` when
    given.  None when the arrays do not fit.
    """
    cdef cnp.npy_intp n, classes
    if not fits_dense(weights, biases, True) or not is_float64(x, -1, False):
        return None
    n, classes = dim(weights, 0), dim(weights, 1)
    if cnp.PyArray_SIZE(<cnp.ndarray>x) != n:
        return None
    if outs is None:
        outs = (None, None, None)
    elif type(outs) is not tuple or len(<tuple>outs) != 3:
        return None
    flat = output(outs[0], 1, &n)
    totals = output(outs[1], 1, &classes)
    probs = output(outs[2], 1, &classes)
    if flat is False or totals is False or probs is False:
        return None
    cdef double* fp = data(flat)
    cdef const double* xp = data(x)
    cdef const double* wp = data(weights)
    cdef const double* bp = data(biases)
    cdef double* tp = data(totals)
    cdef double* pp = data(probs)
    with nogil:
        if n:
            memcpy(fp, xp, n * sizeof(double))
        cpx_softmax_forward(fp, wp, bp, n, classes, tp, pp)
    return flat, totals, probs


def softmax_backward_step(grad, totals, x, weights, biases, learn_rate, shape, out=None):
    """softmax_backward_step(grad, totals, x, weights, biases, learn_rate, shape, out=None)

    The notebook's Softmax.backprop from the first non-zero entry of
    ``grad`` (J,), given the ``totals`` (J,) and the flattened input ``x``
    (n,) of the forward pass: updates ``weights`` (n, J, column-major) and
    ``biases`` (J,) in place and returns the loss gradient for the input
    with the weights before the update, of ``shape`` (a tuple of ints, n
    numbers); into ``out`` when given.  False when ``grad`` is all zeros
    (nothing changes); None when the arguments do not fit (learn_rate: a
    finite float; weights and biases writeable, sharing no memory with the
    other arrays or each other).
    """
    cdef double stack[STACK_DOUBLES]
    cdef cnp.npy_intp dims[MAX_SHAPE_DIMS]
    cdef cnp.npy_intp n, classes, size = 1
    cdef int d, ndim, done
    if (not fits_dense(weights, biases, True) or not is_float64(grad, 1, False)
            or not is_float64(totals, 1, False) or not is_float64(x, 1, False)
            or not finite_float(learn_rate) or type(shape) is not tuple
            or len(<tuple>shape) > MAX_SHAPE_DIMS):
        return None
    n, classes = dim(weights, 0), dim(weights, 1)
    if dim(grad, 0) != classes or dim(totals, 0) != classes or dim(x, 0) != n:
        return None
    ndim = len(<tuple>shape)
    for d in range(ndim):
        side = (<tuple>shape)[d]
        # (Larger than n: not n numbers, or n is 0; either way the checks decide.)
        if type(side) is not int or side < 0 or side > max(n, 1):
            return None
        dims[d] = side
        size *= dims[d]
    if (size != n or shares_memory(weights, biases)
            or shares_any(weights, grad, totals, x) or shares_any(biases, grad, totals, x)):
        return None
    gx = output(out, ndim, dims)
    if gx is False or (out is not None and (shares_any(gx, grad, totals, x)
                                            or shares_any(gx, weights, biases, x))):
        return None
    cdef double* t = scratch(stack, classes)
    cdef double lr = learn_rate
    if t == NULL:
        raise MemoryError()
    cdef const double* gp = data(grad)
    cdef const double* tp = data(totals)
    cdef const double* xp = data(x)
    cdef double* wp = data(weights)
    cdef double* bp = data(biases)
    cdef double* gxp = data(gx)
    with nogil:
        done = cpx_softmax_backward_step(gp, tp, xp, wp, bp, n, classes, lr, t, gxp)
    if t != stack:
        free(t)
    return gx if done else False

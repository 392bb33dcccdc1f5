# Dense (fully connected) layer kernels, float32/float64: the shared source of
# the _dense_baseline, _dense_x86_64_v3 and _dense_x86_64_v4 modules, which
# setup.py compiles with their instruction-set flags.
#
#     y = x w^T + b     x (N, I): N examples of n_in = I features,
#                       w (O, I): n_out = O rows, as PyTorch's Linear
#     gx = gy w         gw = gy^T x         gb = gy summed over the examples
#
# Layers, top to bottom:
#
# 1. cnnext.functional.linear / linear_backward (cnnext/_functional/dense.py)
#    validate every argument, allocate the outputs and pass C-contiguous 2-D
#    arrays with at least one example, one input and one output.
# 2. The def functions at the end release the GIL and split the work over
#    OpenMP threads when it is large enough to pay for waking them: by groups
#    of examples (y, gx) or by blocks of columns (gw).
# 3. Two register tiles on the vector layer shared with the convolution
#    kernels (simd.h through simd.pxd: one register type per instruction set):
#      dot tiles   DOT_ROWS examples x DOT_OUTS outputs, each a dot product
#                  along I kept as a vector of partial sums, reduced once:
#                  the forward pass;
#      axpy tiles  AXPY_ROWS rows x AXPY_VECS vectors of columns:
#                  out[m, :] = (out[m, :] or 0) + sum over k of
#                  alpha * a(k, m) * B[k, :], a broadcast times rows of B:
#                  the input gradient (m: examples, k: outputs, B = w) and
#                  the weight gradient (m: outputs, k: examples, B = x).
#    A tile routine takes its row count as a parameter that every call site
#    fixes (the full tile, or 1 for the leftover rows), so that once inlined
#    gcc unrolls the tile completely and keeps it in registers.  The tails of
#    rows are read with masked loads: nothing past a row is touched.
#
# Determinism: every output element is computed by one thread, always in the
# same order (dot products: the same vector partial sums; sums over examples:
# in example order), so results do not depend on the thread count.  They do
# depend on the instruction set (vector width, fused multiply-add), as with
# any BLAS.

from cython cimport floating
from cython.parallel cimport prange

from ._openmp_helpers cimport effective_num_threads

from .simd cimport *  # noqa: F403

include "_compiled_isa.pxi"

cdef extern from *:
    """
    #include "isa.h"
    /* Tile sizes: accumulators plus loaded operands fit the vector registers
       (32 with AVX-512 and on arm64, 16 otherwise). */
    #if CNX_VEC_REGISTERS >= 32
    #define CNX_DENSE_DOT_ROWS 4
    #define CNX_DENSE_AXPY_ROWS 4
    #else
    #define CNX_DENSE_DOT_ROWS 2
    #define CNX_DENSE_AXPY_ROWS 2
    #endif
    #define CNX_DENSE_DOT_OUTS 4
    #define CNX_DENSE_AXPY_VECS 4
    """
    enum:
        DOT_ROWS "CNX_DENSE_DOT_ROWS"
        DOT_OUTS "CNX_DENSE_DOT_OUTS"
        AXPY_ROWS "CNX_DENSE_AXPY_ROWS"
        AXPY_VECS "CNX_DENSE_AXPY_VECS"

# Below this many multiply-adds a call runs on the calling thread: waking an
# OpenMP team costs a few microseconds, about as long as 2**18 of them take.
cdef Py_ssize_t MIN_PARALLEL_WORK = 1 << 18


cdef inline int num_threads_for(Py_ssize_t work) noexcept nogil:
    if work < MIN_PARALLEL_WORK:
        return 1
    return effective_num_threads()


# ------------------------------------------------------------- forward pass

cdef inline void dot_tile(const floating* x,  # IN  (rows, n_in) consecutive examples
                          const floating* w,  # IN  (n_out, n_in)
                          const floating* b,  # IN  (n_out,) or NULL
                          Py_ssize_t n_out, Py_ssize_t n_in,
                          floating* y,        # OUT (rows, n_out)
                          const Py_ssize_t rows) noexcept nogil:
    """y[m, o] = x[m] . w[o] + b[o] for ``rows`` (DOT_ROWS or 1) examples."""
    cdef vec acc[DOT_ROWS][DOT_OUTS]
    cdef vec xv[DOT_ROWS]
    cdef vec wv
    cdef const floating* w_rows[DOT_OUTS]
    cdef floating total
    cdef Py_ssize_t m, t, j, o0 = 0
    cdef Py_ssize_t L = lanes(x)
    cdef Py_ssize_t full = n_in - n_in % L
    while o0 < n_out:
        for t in range(DOT_OUTS):
            # Outputs past n_out repeat the last one: computed, not stored.
            w_rows[t] = w + min(o0 + t, n_out - 1) * n_in
        for m in range(rows):
            for t in range(DOT_OUTS):
                acc[m][t] = cnx_zero()
        for j in range(0, full // L):
            for m in range(rows):
                xv[m] = vload(x + m * n_in + j * L)
            for t in range(DOT_OUTS):
                wv = vload(w_rows[t] + j * L)
                for m in range(rows):
                    acc[m][t] = vfma(x, acc[m][t], xv[m], wv)
        if full < n_in:
            for m in range(rows):
                xv[m] = vload_part(x + m * n_in + full, n_in - full)
            for t in range(DOT_OUTS):
                wv = vload_part(w_rows[t] + full, n_in - full)
                for m in range(rows):
                    acc[m][t] = vfma(x, acc[m][t], xv[m], wv)
        for m in range(rows):
            for t in range(min(<Py_ssize_t>DOT_OUTS, n_out - o0)):
                total = vsum(x, acc[m][t])
                y[m * n_out + o0 + t] = total + b[o0 + t] if b != NULL else total
        o0 += DOT_OUTS


cdef inline void forward_examples(const floating* x, const floating* w, const floating* b,
                                  Py_ssize_t first, Py_ssize_t stop,
                                  Py_ssize_t n_out, Py_ssize_t n_in,
                                  floating* y) noexcept nogil:
    """Examples first..stop-1 of the forward pass, DOT_ROWS at a time."""
    cdef Py_ssize_t n = first
    while n + DOT_ROWS <= stop:
        dot_tile(x + n * n_in, w, b, n_out, n_in, y + n * n_out, DOT_ROWS)
        n += DOT_ROWS
    while n < stop:
        dot_tile(x + n * n_in, w, b, n_out, n_in, y + n * n_out, 1)
        n += 1


# --------------------------------------------------------------- gradients

cdef inline void axpy_tile(const floating* a,  # IN  a(k, m) at a[k * a_k + m * a_m]
                           Py_ssize_t a_k, Py_ssize_t a_m, Py_ssize_t depth,
                           const floating* B,  # IN  (depth, ld), from this tile's column
                           Py_ssize_t ld,
                           floating alpha, bint accumulate,
                           floating* out,      # IN/OUT (rows, ld), from the same column
                           const Py_ssize_t rows) noexcept nogil:
    """out[m, :AXPY_VECS vectors] (+)= sum over k < depth of alpha a(k, m) B[k, :]."""
    cdef vec acc[AXPY_ROWS][AXPY_VECS]
    cdef vec bv[AXPY_VECS]
    cdef vec av
    cdef Py_ssize_t m, v, k
    cdef Py_ssize_t L = lanes(B)
    for m in range(rows):
        for v in range(AXPY_VECS):
            acc[m][v] = vload(out + m * ld + v * L) if accumulate else cnx_zero()
    for k in range(depth):
        for v in range(AXPY_VECS):
            bv[v] = vload(B + k * ld + v * L)
        for m in range(rows):
            av = vsplat(alpha * a[k * a_k + m * a_m])
            for v in range(AXPY_VECS):
                acc[m][v] = vfma(B, acc[m][v], av, bv[v])
    for m in range(rows):
        for v in range(AXPY_VECS):
            vstore(out + m * ld + v * L, acc[m][v])


cdef inline void axpy_vector(const floating* a, Py_ssize_t a_k, Py_ssize_t a_m,
                             Py_ssize_t depth,
                             const floating* B, Py_ssize_t ld, Py_ssize_t count,
                             floating alpha, bint accumulate,
                             floating* out,
                             const Py_ssize_t rows) noexcept nogil:
    """axpy_tile on one vector of ``count`` (<= lanes) columns, masked: the tails."""
    cdef vec acc[AXPY_ROWS]
    cdef vec bv
    cdef Py_ssize_t m, k
    for m in range(rows):
        acc[m] = vload_part(out + m * ld, count) if accumulate else cnx_zero()
    for k in range(depth):
        bv = vload_part(B + k * ld, count)
        for m in range(rows):
            acc[m] = vfma(B, acc[m], vsplat(alpha * a[k * a_k + m * a_m]), bv)
    for m in range(rows):
        vstore_part(out + m * ld, acc[m], count)


cdef inline void axpy_columns(const floating* a, Py_ssize_t a_k, Py_ssize_t a_m,
                              Py_ssize_t depth,
                              const floating* B, Py_ssize_t ld,
                              Py_ssize_t first, Py_ssize_t stop,
                              floating alpha, bint accumulate,
                              floating* out,
                              const Py_ssize_t rows) noexcept nogil:
    """Columns first..stop-1 of ``rows`` rows of out: whole tiles, then single vectors."""
    cdef Py_ssize_t L = lanes(B)
    cdef Py_ssize_t j = first
    while j + AXPY_VECS * L <= stop:
        axpy_tile(a, a_k, a_m, depth, B + j, ld, alpha, accumulate, out + j, rows)
        j += AXPY_VECS * L
    while j < stop:
        axpy_vector(a, a_k, a_m, depth, B + j, ld, min(L, stop - j), alpha, accumulate,
                    out + j, rows)
        j += L


cdef inline void input_gradient_examples(const floating* gy,  # IN  (examples, n_out)
                                         const floating* w,   # IN  (n_out, n_in)
                                         Py_ssize_t first, Py_ssize_t stop,
                                         Py_ssize_t n_out, Py_ssize_t n_in,
                                         floating* gx) noexcept nogil:  # OUT (examples, n_in)
    """gx[n] = sum over o of gy[n, o] w[o], for examples first..stop-1."""
    cdef Py_ssize_t n = first
    while n + AXPY_ROWS <= stop:
        axpy_columns(gy + n * n_out, 1, n_out, n_out, w, n_in, 0, n_in, 1, False,
                     gx + n * n_in, AXPY_ROWS)
        n += AXPY_ROWS
    while n < stop:
        axpy_columns(gy + n * n_out, 1, n_out, n_out, w, n_in, 0, n_in, 1, False,
                     gx + n * n_in, 1)
        n += 1


cdef inline void weight_gradient_columns(const floating* gy,  # IN  (examples, n_out)
                                         const floating* x,   # IN  (examples, n_in)
                                         Py_ssize_t first, Py_ssize_t stop,
                                         Py_ssize_t examples, Py_ssize_t n_out,
                                         Py_ssize_t n_in,
                                         floating alpha, bint accumulate,
                                         floating* gw) noexcept nogil:  # IN/OUT (n_out, n_in)
    """gw[o, first:stop] (+)= alpha sum over n of gy[n, o] x[n, first:stop], every o."""
    cdef Py_ssize_t o = 0
    while o + AXPY_ROWS <= n_out:
        axpy_columns(gy + o, n_out, 1, examples, x, n_in, first, stop, alpha, accumulate,
                     gw + o * n_in, AXPY_ROWS)
        o += AXPY_ROWS
    while o < n_out:
        axpy_columns(gy + o, n_out, 1, examples, x, n_in, first, stop, alpha, accumulate,
                     gw + o * n_in, 1)
        o += 1


# ------------------------------------------------------------ entry points
#
# Each def entry point and its step kernel (_dense_steps.pxi) call the same
# pass below on raw pointers.

cdef void forward_pass(const floating* x,   # IN  (examples, n_in)
                       const floating* w,   # IN  (n_out, n_in)
                       const floating* b,   # IN  (n_out,) or NULL
                       Py_ssize_t examples, Py_ssize_t n_in, Py_ssize_t n_out,
                       floating* y) noexcept nogil:  # OUT (examples, n_out)
    cdef Py_ssize_t group, groups = (examples + DOT_ROWS - 1) // DOT_ROWS
    cdef int n_threads = num_threads_for(examples * n_out * n_in)
    if n_threads == 1:
        forward_examples(x, w, b, 0, examples, n_out, n_in, y)
    else:
        for group in prange(groups, num_threads=n_threads, schedule="static"):
            forward_examples(x, w, b, group * DOT_ROWS,
                             min(examples, (group + 1) * DOT_ROWS), n_out, n_in, y)


cdef void input_gradient_pass(const floating* gy,  # IN  (examples, n_out)
                              const floating* w,   # IN  (n_out, n_in)
                              Py_ssize_t examples, Py_ssize_t n_in, Py_ssize_t n_out,
                              floating* gx) noexcept nogil:  # OUT (examples, n_in)
    cdef Py_ssize_t group, groups = (examples + AXPY_ROWS - 1) // AXPY_ROWS
    cdef int n_threads = num_threads_for(examples * n_out * n_in)
    if n_threads == 1:
        input_gradient_examples(gy, w, 0, examples, n_out, n_in, gx)
    else:
        for group in prange(groups, num_threads=n_threads, schedule="static"):
            input_gradient_examples(gy, w, group * AXPY_ROWS,
                                    min(examples, (group + 1) * AXPY_ROWS), n_out, n_in, gx)


cdef void params_gradient_pass(const floating* gy,  # IN  (examples, n_out)
                               const floating* x,   # IN  (examples, n_in)
                               Py_ssize_t examples, Py_ssize_t n_in, Py_ssize_t n_out,
                               floating alpha, bint accumulate,
                               floating* gw,        # IN/OUT (n_out, n_in)
                               floating* gb) noexcept nogil:  # IN/OUT (n_out,) or NULL
    cdef Py_ssize_t n, o, block, width = AXPY_VECS * lanes(x)
    cdef Py_ssize_t blocks = (n_in + width - 1) // width
    cdef int n_threads = num_threads_for(examples * n_out * n_in)
    cdef floating total
    if n_threads == 1:
        weight_gradient_columns(gy, x, 0, n_in, examples, n_out, n_in, alpha, accumulate, gw)
    else:
        for block in prange(blocks, num_threads=n_threads, schedule="static"):
            weight_gradient_columns(gy, x, block * width, min(n_in, (block + 1) * width),
                                    examples, n_out, n_in, alpha, accumulate, gw)
    if gb != NULL:
        for o in range(n_out):
            total = gb[o] if accumulate else 0
            for n in range(examples):
                total += alpha * gy[n * n_out + o]
            gb[o] = total


def linear_forward(const floating[:, ::1] x,  # IN  (N, I)
                   const floating[:, ::1] w,  # IN  (O, I)
                   const floating[::1] b,     # IN  (O,) or None
                   floating[:, ::1] y):       # OUT (N, O)
    """linear_forward(x, w, b, y)

    y = x w^T + b (b may be None).  N, O and I are at least 1; the caller
    checks every shape.
    """
    cdef const floating* bias = NULL
    if b is not None:
        bias = &b[0]
    with nogil:
        forward_pass(&x[0, 0], &w[0, 0], bias, x.shape[0], x.shape[1], w.shape[0], &y[0, 0])


def linear_backward_input(const floating[:, ::1] gy,  # IN  (N, O)
                          const floating[:, ::1] w,   # IN  (O, I)
                          floating[:, ::1] gx):       # OUT (N, I)
    """linear_backward_input(gy, w, gx)

    gx = gy w.  N, O and I are at least 1; the caller checks every shape.
    """
    with nogil:
        input_gradient_pass(&gy[0, 0], &w[0, 0], gy.shape[0], w.shape[1], gy.shape[1],
                            &gx[0, 0])


def linear_backward_params(const floating[:, ::1] gy,  # IN  (N, O)
                           const floating[:, ::1] x,   # IN  (N, I)
                           floating alpha,
                           bint accumulate,
                           floating[:, ::1] gw,        # IN/OUT (O, I)
                           floating[::1] gb):          # IN/OUT (O,) or None
    """linear_backward_params(gy, x, alpha, accumulate, gw, gb)

    gw = alpha gy^T x and gb = alpha (gy summed over the examples), added to
    the values already in gw and gb when ``accumulate`` (alpha = -lr with
    accumulate is a gradient-descent step in place).  gb may be None.  N, O
    and I are at least 1; the caller checks every shape.
    """
    cdef floating* bias = NULL
    if gb is not None:
        bias = &gb[0]
    with nogil:
        params_gradient_pass(&gy[0, 0], &x[0, 0], gy.shape[0], x.shape[1], gy.shape[1], alpha,
                             accumulate, &gw[0, 0], bias)


include "_dense_steps.pxi"

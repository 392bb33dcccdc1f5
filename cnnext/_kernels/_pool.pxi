# Pooling kernels: max and average pooling over image planes, forward and backward.
#
# Layers, top to bottom:
#
# * cnnext.functional.max_pool2d & co. (cnnext/_functional/pooling.py)
#   validate every argument and allocate the outputs.
# * The def functions at the end take C-contiguous (N, C, H, W) arrays and
#   the pooling geometry, release the GIL and hand each of the N*C
#   independent planes to a helper, spread over OpenMP threads when the work
#   is large enough to pay for waking them.  A plane is computed by one
#   thread in a fixed order, so results do not depend on the thread count.
# * The cdef inline helpers compute one plane from raw pointers.  They trust
#   their caller completely: shapes, in-plane indices and the geometry (every
#   window of a max pool holds an in-plane element) are established by the
#   wrapper.
#
# Only the padding before the plane (top, left) reaches the kernels: padding
# after it and ceil mode change the output size, which the wrapper computes,
# and windows are clipped to the plane anyway.  Kernel taps are ``dilation``
# apart.
#
# Built at two instruction-set levels, _pool_baseline and _pool_x86_64_v3
# (see setup.py).  There is no x86-64-v4 build: with 512-bit vectors the
# 2x2 max pool with indices ran 15% slower than with AVX2 on the rows of
# typical CNN planes (16-32 outputs), so AVX-512 CPUs use the v3 build.
#
# Max pooling follows PyTorch: padding is -inf, a window is scanned in
# row-major order and an element replaces the running maximum when it is
# greater or NaN, so ties keep the first maximum and a NaN (the last one)
# wins.  Average pooling divides by kh * kw, or, where windows differ (ceil
# mode, padding excluded from the count), by a per-output divisor the
# wrapper computes.

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.math cimport INFINITY
from libc.string cimport memset

from ._openmp_helpers cimport effective_num_threads

include "_compiled_isa.pxi"
include "_indices.pxi"
include "_reduce.pxi"

# Below this many input elements a call runs on the calling thread: starting
# an OpenMP team costs about as much as pooling 64 KiB.
cdef Py_ssize_t MIN_PARALLEL_ELEMENTS = 1 << 15

cdef enum:
    # Output columns whose window winners a max-pool row keeps on the stack.
    WINNER_BLOCK = 256


cdef struct Geometry:
    Py_ssize_t height, width            # input plane
    Py_ssize_t out_height, out_width    # output plane
    Py_ssize_t kernel_h, kernel_w
    Py_ssize_t stride_h, stride_w
    Py_ssize_t pad_h, pad_w             # before the plane: top, left
    Py_ssize_t dilation_h, dilation_w


cdef struct Span:
    # The in-plane part [start, stop) of a window along one axis.
    Py_ssize_t start, stop


cdef inline Span in_plane_taps(Py_ssize_t start, Py_ssize_t kernel, Py_ssize_t dilation,
                               Py_ssize_t size) noexcept nogil:
    # The taps t of a window starting at ``start`` that fall inside the
    # plane: 0 <= start + t * dilation < size.  Empty when stop <= start.
    cdef Span span
    span.start = (dilation - 1 - start) // dilation if start < 0 else 0
    span.stop = min((size - start + dilation - 1) // dilation, kernel) if size > start else 0
    return span


cdef inline Py_ssize_t first_in_plane(Py_ssize_t start, Py_ssize_t dilation) noexcept nogil:
    # The offset in its window of the first tap at or after 0 (the window
    # starts at ``start``); no division in the usual undilated case: this
    # runs once per output.
    if start >= 0:
        return 0
    if dilation == 1:
        return -start
    return (dilation - 1 - start) // dilation * dilation


cdef inline Span tap_columns(Py_ssize_t tap, const Geometry* g) noexcept nogil:
    # The output columns j whose window puts kernel column ``tap`` inside the
    # plane: 0 <= j * stride - pad + tap * dilation < width.  Empty when
    # stop <= start.
    cdef Span span
    cdef Py_ssize_t offset = tap * g.dilation_w
    cdef Py_ssize_t before = g.pad_w - offset, last = g.width - 1 + g.pad_w - offset
    span.start = (before + g.stride_w - 1) // g.stride_w if before > 0 else 0
    span.stop = min(last // g.stride_w + 1, g.out_width) if last >= 0 else 0
    return span


cdef inline bint replaces_max(floating value, floating best) noexcept nogil:
    # PyTorch's rule: greater, or NaN (value != value).
    return (value > best) | (value != value)


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* if_true where take is non-zero, else if_false, by masking the bits:
       nothing for the compiler to turn into a branch. */
    static inline float cnx_pick_f32(int take, float if_true, float if_false) {
        uint32_t t, f, mask = (uint32_t)0 - (uint32_t)(take != 0);
        memcpy(&t, &if_true, sizeof t);
        memcpy(&f, &if_false, sizeof f);
        t = (t & mask) | (f & ~mask);
        memcpy(&if_true, &t, sizeof t);
        return if_true;
    }
    static inline double cnx_pick_f64(int take, double if_true, double if_false) {
        uint64_t t, f, mask = (uint64_t)0 - (uint64_t)(take != 0);
        memcpy(&t, &if_true, sizeof t);
        memcpy(&f, &if_false, sizeof f);
        t = (t & mask) | (f & ~mask);
        memcpy(&if_true, &t, sizeof t);
        return if_true;
    }
    """
    float cnx_pick_f32(int take, float if_true, float if_false) nogil
    double cnx_pick_f64(int take, double if_true, double if_false) nogil


cdef inline floating pick(bint condition, floating if_true, floating if_false) noexcept nogil:
    # A select that never becomes a branch.  Which operand wins is data
    # dependent (the window maxima of real activations).  Written as a
    # conditional, gcc compiled the loops' scalar iterations (the tails of
    # short rows) to branches whose mispredictions nearly doubled the time of
    # a pass over fresh data; a benchmark repeating one batch never saw them
    # (the predictor had learnt it).  Both operands are loaded whatever the
    # condition, so the loops still vectorise.
    if floating is float:
        return cnx_pick_f32(condition, if_true, if_false)
    else:
        return cnx_pick_f64(condition, if_true, if_false)


cdef inline floating running_max(floating best, floating value) noexcept nogil:
    return pick(replaces_max(value, best), value, best)


cdef inline int num_threads_for(Py_ssize_t elements) noexcept nogil:
    if elements < MIN_PARALLEL_ELEMENTS:
        return 1
    return effective_num_threads()


cdef inline Geometry make_geometry(const Py_ssize_t* in_shape, const Py_ssize_t* out_shape,
                                   tuple kernel, tuple stride, tuple padding, tuple dilation):
    # Shapes are those of (N, C, H, W) memoryviews; the rest (h, w) pairs,
    # padding the (top, left) padding.
    cdef Geometry g
    g.height, g.width = in_shape[2], in_shape[3]
    g.out_height, g.out_width = out_shape[2], out_shape[3]
    g.kernel_h, g.kernel_w = kernel
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = padding
    g.dilation_h, g.dilation_w = dilation
    return g


cdef inline bint is_plain_2x2(const Geometry* g) noexcept nogil:
    # The common case (kernel 2, stride 2, no padding, every window inside
    # the plane) has one-pass row loops; the max-pool one computes
    # in-window offsets in int32.
    return (g.kernel_h == 2 and g.kernel_w == 2 and g.stride_h == 2 and g.stride_w == 2
            and g.pad_h == 0 and g.pad_w == 0 and g.dilation_h == 1 and g.dilation_w == 1
            and 2 * g.out_height <= g.height and 2 * g.out_width <= g.width
            and g.width < (1 << 30))


# ---------------------------------------------------------------- max pooling
#
# The general loops run over kernel taps (r, s) and, innermost, along an
# output row: each tap reads a strided row of the input, which vectorises,
# and each output still sees its taps in row-major order.

cdef inline void max_tap(const floating* source,  # IN  (count * stride,) one tap's inputs
                         Py_ssize_t stride,
                         Py_ssize_t count,
                         floating tap_row,
                         floating tap_column,
                         floating* best,            # IN/OUT (count,) running maxima
                         floating* win_row,         # IN/OUT (count,) their taps' rows
                         floating* win_column) noexcept nogil:  # IN/OUT (count,) and columns
    cdef Py_ssize_t j
    cdef floating value
    cdef bint take
    for j in range(count):
        value = source[j * stride]
        take = replaces_max(value, best[j])
        best[j] = pick(take, value, best[j])
        win_row[j] = pick(take, tap_row, win_row[j])
        win_column[j] = pick(take, tap_column, win_column[j])


cdef inline void max_row(const floating* x,  # IN  (height, width)
                         Py_ssize_t i,
                         floating* best,     # OUT (out_width,) maxima of output row i
                         int64_t* best_at,   # OUT (out_width,) their positions, or NULL
                         const Geometry* g) noexcept nogil:
    # Which tap wins is data dependent, so it is tracked with selects, not
    # branches, as the tap's (row, column) offset in the window, held in the
    # value's own type: one lane width lets the loop vectorise (exact, as
    # the wrapper keeps window extents below 2**24).  Positions are
    # assembled from them block by block.
    cdef Py_ssize_t j, r, t, tap, block, start, stop, first, last, offset
    cdef Py_ssize_t stride = g.stride_w, top = i * g.stride_h - g.pad_h
    cdef Py_ssize_t dilation = g.dilation_w
    cdef Span rows = in_plane_taps(top, g.kernel_h, g.dilation_h, g.height)
    cdef Span cols
    cdef const floating* source
    cdef floating win_row[WINNER_BLOCK]
    cdef floating win_column[WINNER_BLOCK]
    for block in range((g.out_width + WINNER_BLOCK - 1) // WINNER_BLOCK):
        start = block * WINNER_BLOCK
        stop = min(start + <Py_ssize_t>WINNER_BLOCK, g.out_width)
        # Start below every value: -inf never replaces it, and the position
        # of an all -inf window is its first in-plane element (PyTorch's).
        for j in range(start, stop):
            best[j] = -INFINITY
            win_row[j - start] = rows.start * g.dilation_h
            win_column[j - start] = first_in_plane(j * stride - g.pad_w, dilation)
        for t in range(rows.start, rows.stop):
            r = top + t * g.dilation_h
            for tap in range(g.kernel_w):
                cols = tap_columns(tap, g)
                first = max(cols.start, start)
                last = min(cols.stop, stop)
                if last <= first:
                    continue
                offset = tap * dilation
                source = x + r * g.width + first * stride + offset - g.pad_w
                # Constant strides give the compiler loops without gathers.
                if stride == 1:
                    max_tap(source, 1, last - first, r - top, offset, best + first,
                            win_row + first - start, win_column + first - start)
                elif stride == 2:
                    max_tap(source, 2, last - first, r - top, offset, best + first,
                            win_row + first - start, win_column + first - start)
                else:
                    max_tap(source, stride, last - first, r - top, offset, best + first,
                            win_row + first - start, win_column + first - start)
        if best_at != NULL:
            for j in range(start, stop):
                best_at[j] = ((top + <Py_ssize_t>win_row[j - start]) * g.width
                              + j * stride - g.pad_w + <Py_ssize_t>win_column[j - start])


cdef inline void max_row_2x2(const floating* top,     # IN  (2 * count,)
                             const floating* bottom,  # IN  (2 * count,)
                             Py_ssize_t count,
                             floating* best) noexcept nogil:  # OUT (count,)
    cdef Py_ssize_t j
    for j in range(count):
        best[j] = running_max(running_max(running_max(top[2 * j], top[2 * j + 1]),
                                          bottom[2 * j]), bottom[2 * j + 1])


cdef inline void max_row_2x2_winners(const floating* top,     # IN  (2 * count,)
                                     const floating* bottom,  # IN  (2 * count,)
                                     Py_ssize_t count,
                                     floating* best,          # OUT (count,)
                                     floating* winner) noexcept nogil:  # OUT (count,)
    # Selects, not branches: which element wins is data dependent and a
    # mispredicted branch costs more than the memory traffic.  The winner
    # (0..3, row-major in the window) is kept in the value's own type: one
    # lane width lets the loop vectorise.
    cdef Py_ssize_t j
    cdef floating value, candidate, code
    cdef bint take
    for j in range(count):
        value = top[2 * j]
        code = 0
        candidate = top[2 * j + 1]
        take = replaces_max(candidate, value)
        value = pick(take, candidate, value)
        code = pick(take, <floating>1, code)
        candidate = bottom[2 * j]
        take = replaces_max(candidate, value)
        value = pick(take, candidate, value)
        code = pick(take, <floating>2, code)
        candidate = bottom[2 * j + 1]
        take = replaces_max(candidate, value)
        value = pick(take, candidate, value)
        code = pick(take, <floating>3, code)
        best[j] = value
        winner[j] = code


cdef inline void max_plane_2x2(const floating* x,  # IN  (height, width)
                               floating* y,        # OUT (out_height, out_width)
                               int64_t* indices,   # OUT (out_height, out_width) or NULL
                               const Geometry* g) noexcept nogil:
    # Sizes in locals: read through g, they could alias the outputs, which
    # stops the compiler from vectorising.
    cdef Py_ssize_t width = g.width, out_height = g.out_height, out_width = g.out_width
    cdef int32_t narrow_width = <int32_t>g.width
    cdef Py_ssize_t i, j, block, start, count
    cdef int32_t code
    cdef const floating* top
    cdef int64_t* index
    cdef floating winner[WINNER_BLOCK]
    if indices == NULL:
        for i in range(out_height):
            top = x + 2 * i * width
            max_row_2x2(top, top + width, out_width, y + i * out_width)
        return
    for i in range(out_height):
        for block in range((out_width + WINNER_BLOCK - 1) // WINNER_BLOCK):
            start = block * WINNER_BLOCK
            count = min(<Py_ssize_t>WINNER_BLOCK, out_width - start)
            top = x + 2 * (i * width + start)
            max_row_2x2_winners(top, top + width, count, y + i * out_width + start, winner)
            # A second loop turns winners into int64 indices.  It vectorises
            # in int32 lanes, without multiplies: code >> 1 is 0 or 1 (the
            # bottom row), so -(code >> 1) & width is 0 or width.
            index = indices + i * out_width + start
            for j in range(count):
                code = <int32_t>winner[j]
                index[j] = (2 * (i * width + start + j)
                            + ((code & 1) + (-(code >> 1) & narrow_width)))


cdef inline void max_plane(const floating* x,  # IN  (height, width)
                           floating* y,        # OUT (out_height, out_width)
                           int64_t* indices,   # OUT (out_height, out_width) or NULL
                           const Geometry* g) noexcept nogil:
    cdef Py_ssize_t i
    if is_plain_2x2(g):
        max_plane_2x2(x, y, indices, g)
        return
    for i in range(g.out_height):
        max_row(x, i, y + i * g.out_width,
                indices + i * g.out_width if indices != NULL else NULL, g)


cdef inline void scatter_plane(const floating* gy,       # IN  (count,)
                               const int64_t* indices,   # IN  (count,)
                               Py_ssize_t count,
                               floating* gx,             # OUT (plane_size,)
                               Py_ssize_t plane_size) noexcept nogil:
    cdef Py_ssize_t k
    memset(gx, 0, plane_size * sizeof(floating))
    for k in range(count):
        gx[indices[k]] += gy[k]


# ------------------------------------------------------------ average pooling

cdef inline void add_tap(const floating* source,  # IN  (count * stride,) one tap's inputs
                         Py_ssize_t stride,
                         Py_ssize_t count,
                         floating* total) noexcept nogil:  # IN/OUT (count,)
    cdef Py_ssize_t j
    for j in range(count):
        total[j] += source[j * stride]


cdef inline void spread_tap(const floating* gy,        # IN  (count,)
                            floating divisor,
                            const floating* divisors,  # IN  (count,) or NULL: all ``divisor``
                            Py_ssize_t count,
                            Py_ssize_t stride,
                            floating* target) noexcept nogil:  # IN/OUT (count * stride,)
    cdef Py_ssize_t j
    if divisors == NULL:
        for j in range(count):
            target[j * stride] += gy[j] / divisor
    else:
        for j in range(count):
            target[j * stride] += gy[j] / divisors[j]


cdef inline void avg_plane(const floating* x,         # IN  (height, width)
                           floating* y,               # OUT (out_height, out_width)
                           const floating* divisors,  # IN  (out_height, out_width) or NULL
                           const Geometry* g) noexcept nogil:
    # Without ``divisors`` every window divides by kh * kw.
    cdef Py_ssize_t i, j, r, t, tap, offset, stride = g.stride_w
    cdef Span rows, cols
    cdef floating* total
    cdef const floating* divisor_row
    cdef floating divisor = g.kernel_h * g.kernel_w
    cdef const floating* top
    cdef const floating* source
    cdef Py_ssize_t width = g.width
    if divisors == NULL and is_plain_2x2(g):
        # One pass per row instead of one per tap, summing in the same order.
        for i in range(g.out_height):
            top = x + 2 * i * width
            total = y + i * g.out_width
            for j in range(g.out_width):
                total[j] = (top[2 * j] + top[2 * j + 1] + top[width + 2 * j]
                            + top[width + 2 * j + 1]) / divisor
        return
    for i in range(g.out_height):
        rows = in_plane_taps(i * g.stride_h - g.pad_h, g.kernel_h, g.dilation_h, g.height)
        total = y + i * g.out_width
        for j in range(g.out_width):
            total[j] = 0
        for t in range(rows.start, rows.stop):
            r = i * g.stride_h - g.pad_h + t * g.dilation_h
            for tap in range(g.kernel_w):
                cols = tap_columns(tap, g)
                if cols.stop <= cols.start:
                    continue
                offset = tap * g.dilation_w
                source = x + r * width + cols.start * stride + offset - g.pad_w
                # Constant strides give the compiler loops without gathers.
                if stride == 1:
                    add_tap(source, 1, cols.stop - cols.start, total + cols.start)
                elif stride == 2:
                    add_tap(source, 2, cols.stop - cols.start, total + cols.start)
                else:
                    add_tap(source, stride, cols.stop - cols.start, total + cols.start)
        if divisors == NULL:
            for j in range(g.out_width):
                total[j] /= divisor
        else:
            divisor_row = divisors + i * g.out_width
            for j in range(g.out_width):
                total[j] /= divisor_row[j]


cdef inline void avg_plane_backward(const floating* gy,        # IN  (out_height, out_width)
                                    const floating* divisors,  # IN  as in avg_plane, or NULL
                                    floating* gx,              # OUT (height, width)
                                    const Geometry* g) noexcept nogil:
    cdef Py_ssize_t i, j, r, t, tap, offset, stride = g.stride_w
    cdef Span rows, cols
    cdef const floating* gy_row
    cdef const floating* divisor_row = NULL
    cdef floating divisor = g.kernel_h * g.kernel_w
    cdef floating* target
    cdef floating* gx_top
    cdef floating share
    cdef Py_ssize_t width = g.width
    memset(gx, 0, g.height * g.width * sizeof(floating))
    if divisors == NULL and is_plain_2x2(g):
        # One pass per row instead of one per tap (windows do not overlap).
        for i in range(g.out_height):
            gy_row = gy + i * g.out_width
            gx_top = gx + 2 * i * width
            for j in range(g.out_width):
                share = gy_row[j] / divisor
                gx_top[2 * j] = share
                gx_top[2 * j + 1] = share
                gx_top[width + 2 * j] = share
                gx_top[width + 2 * j + 1] = share
        return
    for i in range(g.out_height):
        rows = in_plane_taps(i * g.stride_h - g.pad_h, g.kernel_h, g.dilation_h, g.height)
        gy_row = gy + i * g.out_width
        for t in range(rows.start, rows.stop):
            r = i * g.stride_h - g.pad_h + t * g.dilation_h
            for tap in range(g.kernel_w):
                cols = tap_columns(tap, g)
                if cols.stop <= cols.start:
                    continue
                offset = tap * g.dilation_w
                target = gx + r * width + cols.start * stride + offset - g.pad_w
                if divisors != NULL:
                    divisor_row = divisors + i * g.out_width + cols.start
                if stride == 1:
                    spread_tap(gy_row + cols.start, divisor, divisor_row,
                               cols.stop - cols.start, 1, target)
                elif stride == 2:
                    spread_tap(gy_row + cols.start, divisor, divisor_row,
                               cols.stop - cols.start, 2, target)
                else:
                    spread_tap(gy_row + cols.start, divisor, divisor_row,
                               cols.stop - cols.start, stride, target)


# ------------------------------------------------------------ entry points
#
# Arrays are C-contiguous (N, C, H, W); the planes are its N*C (H, W) slices.
# Each def entry point and its step kernel (_pool_steps.pxi) run the same
# pass below on raw pointers.

cdef void max_pass(const floating* x,   # IN  (planes, H, W)
                   floating* y,         # OUT (planes, Ho, Wo)
                   int64_t* indices,    # OUT (planes, Ho, Wo), or NULL
                   Py_ssize_t planes, const Geometry* g) noexcept nogil:
    cdef Py_ssize_t p
    cdef Py_ssize_t plane_in = g.height * g.width, plane_out = g.out_height * g.out_width
    cdef int n_threads = num_threads_for(planes * plane_in)
    if n_threads == 1:
        for p in range(planes):
            max_plane(x + p * plane_in, y + p * plane_out,
                      indices + p * plane_out if indices != NULL else NULL, g)
    else:
        for p in prange(planes, num_threads=n_threads, schedule="static"):
            max_plane(x + p * plane_in, y + p * plane_out,
                      indices + p * plane_out if indices != NULL else NULL, g)


cdef Py_ssize_t max_backward_pass(const floating* gy,      # IN  (planes, Ho, Wo)
                                  const int64_t* indices,  # IN  (planes, Ho, Wo)
                                  Py_ssize_t planes, Py_ssize_t plane_in,
                                  Py_ssize_t plane_out, bint check,
                                  floating* gx) noexcept nogil:  # OUT (planes, H, W)
    """The scatter; with ``check``, first the flat position of the first index
    outside [0, plane_in), returned without writing anything (else -1)."""
    cdef Py_ssize_t p, bad = -1
    cdef int n_threads = num_threads_for(planes * plane_in)
    if check and plane_out > 0:
        bad = first_outside(indices, planes * plane_out, plane_in)
    if bad >= 0:
        return bad
    if n_threads == 1:
        for p in range(planes):
            scatter_plane(gy + p * plane_out, indices + p * plane_out, plane_out,
                          gx + p * plane_in, plane_in)
    else:
        for p in prange(planes, num_threads=n_threads, schedule="static"):
            scatter_plane(gy + p * plane_out, indices + p * plane_out, plane_out,
                          gx + p * plane_in, plane_in)
    return -1


cdef void avg_pass(const floating* x,          # IN  (planes, H, W)
                   floating* y,                # OUT (planes, Ho, Wo)
                   const floating* divisors,   # IN  (Ho, Wo), or NULL: kh * kw
                   Py_ssize_t planes, const Geometry* g) noexcept nogil:
    cdef Py_ssize_t p
    cdef Py_ssize_t plane_in = g.height * g.width, plane_out = g.out_height * g.out_width
    cdef int n_threads = num_threads_for(planes * plane_in)
    if n_threads == 1:
        for p in range(planes):
            avg_plane(x + p * plane_in, y + p * plane_out, divisors, g)
    else:
        for p in prange(planes, num_threads=n_threads, schedule="static"):
            avg_plane(x + p * plane_in, y + p * plane_out, divisors, g)


cdef void avg_backward_pass(const floating* gy,         # IN  (planes, Ho, Wo)
                            const floating* divisors,   # IN  (Ho, Wo), or NULL: kh * kw
                            floating* gx,               # OUT (planes, H, W)
                            Py_ssize_t planes, const Geometry* g) noexcept nogil:
    cdef Py_ssize_t p
    cdef Py_ssize_t plane_in = g.height * g.width, plane_out = g.out_height * g.out_width
    cdef int n_threads = num_threads_for(planes * plane_in)
    if n_threads == 1:
        for p in range(planes):
            avg_plane_backward(gy + p * plane_out, divisors, gx + p * plane_in, g)
    else:
        for p in prange(planes, num_threads=n_threads, schedule="static"):
            avg_plane_backward(gy + p * plane_out, divisors, gx + p * plane_in, g)


def max_pool2d_forward(const floating[:, :, :, ::1] x,  # IN  (N, C, H, W)
                       floating[:, :, :, ::1] y,        # OUT (N, C, Ho, Wo)
                       int64_t[:, :, :, ::1] indices,   # OUT (N, C, Ho, Wo), or None
                       tuple kernel, tuple stride, tuple padding, tuple dilation):
    """max_pool2d_forward(x, y, indices, kernel, stride, padding, dilation)

    Max over every window of every plane of ``x`` into ``y``, and the flat
    in-plane position of each maximum into ``indices`` unless it is None.
    ``kernel``, ``stride``, ``padding`` (top, left) and ``dilation`` are
    (h, w) pairs; every window holds an element of the plane.  The caller
    checks everything.
    """
    cdef Geometry g = make_geometry(x.shape, y.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    cdef int64_t* all_indices = NULL
    if planes == 0:
        return
    if indices is not None:
        all_indices = &indices[0, 0, 0, 0]
    with nogil:
        max_pass(&x[0, 0, 0, 0], &y[0, 0, 0, 0], all_indices, planes, &g)


def max_pool2d_backward(const floating[:, :, :, ::1] gy,       # IN  (N, C, Ho, Wo)
                        const int64_t[:, :, :, ::1] indices,   # IN  (N, C, Ho, Wo)
                        floating[:, :, :, ::1] gx):            # OUT (N, C, H, W)
    """max_pool2d_backward(gy, indices, gx)

    gx = 0, then gx[n, c].flat[indices[n, c, i, j]] += gy[n, c, i, j]: each
    output's gradient goes to the element its window picked (overlapping
    windows add up).  Returns -1, or without writing anything the flat
    position of the first index outside [0, H*W): the indices are checked
    here, one pass before the scatter, and the shapes by the caller.
    """
    cdef Py_ssize_t bad, planes = gx.shape[0] * gx.shape[1]
    if planes == 0:
        return -1
    with nogil:
        bad = max_backward_pass(&gy[0, 0, 0, 0], &indices[0, 0, 0, 0], planes,
                                gx.shape[2] * gx.shape[3], gy.shape[2] * gy.shape[3], True,
                                &gx[0, 0, 0, 0])
    return bad


def avg_pool2d_forward(const floating[:, :, :, ::1] x,         # IN  (N, C, H, W)
                       floating[:, :, :, ::1] y,               # OUT (N, C, Ho, Wo)
                       const floating[:, ::1] divisors,        # IN  (Ho, Wo), or None
                       tuple kernel, tuple stride, tuple padding, tuple dilation):
    """avg_pool2d_forward(x, y, divisors, kernel, stride, padding, dilation)

    Sum over every window of every plane of ``x``, divided by kh * kw (zero
    padding counted), or by ``divisors[i, j]`` for output (i, j) unless it
    is None, into ``y``.  Pairs as in max_pool2d_forward.  The caller checks
    everything.
    """
    cdef Geometry g = make_geometry(x.shape, y.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    cdef const floating* window_divisors = NULL
    if planes == 0:
        return
    if divisors is not None:
        window_divisors = &divisors[0, 0]
    with nogil:
        avg_pass(&x[0, 0, 0, 0], &y[0, 0, 0, 0], window_divisors, planes, &g)


def avg_pool2d_backward(const floating[:, :, :, ::1] gy,   # IN  (N, C, Ho, Wo)
                        floating[:, :, :, ::1] gx,         # OUT (N, C, H, W)
                        const floating[:, ::1] divisors,   # IN  (Ho, Wo), or None
                        tuple kernel, tuple stride, tuple padding, tuple dilation):
    """avg_pool2d_backward(gy, gx, divisors, kernel, stride, padding, dilation)

    Spread each output's gradient evenly, gy / (kh * kw) or gy /
    divisors[i, j], over the in-plane part of its window (overlapping
    windows add up).  The caller checks everything.
    """
    cdef Geometry g = make_geometry(gx.shape, gy.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t planes = gx.shape[0] * gx.shape[1]
    if planes == 0:
        return
    cdef const floating* window_divisors = NULL
    if divisors is not None:
        window_divisors = &divisors[0, 0]
    with nogil:
        avg_backward_pass(&gy[0, 0, 0, 0], window_divisors, &gx[0, 0, 0, 0], planes, &g)


cdef void global_avg_pass(const floating* x,  # IN  (planes, size)
                          floating* y,        # OUT (planes,)
                          Py_ssize_t planes, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t p
    cdef int n_threads = num_threads_for(planes * size)
    if n_threads == 1:
        for p in range(planes):
            y[p] = <floating>(span_sum(x + p * size, size) / size)
    else:
        for p in prange(planes, num_threads=n_threads, schedule="static"):
            y[p] = <floating>(span_sum(x + p * size, size) / size)


cdef inline void fill_plane(floating* gx, Py_ssize_t size, floating value) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size):
        gx[i] = value


cdef void global_avg_backward_pass(const floating* gy,  # IN  (planes,)
                                   floating* gx,        # OUT (planes, size)
                                   Py_ssize_t planes, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t p
    cdef int n_threads = num_threads_for(planes * size)
    if n_threads == 1:
        for p in range(planes):
            fill_plane(gx + p * size, size, <floating>(<double>gy[p] / size))
    else:
        for p in prange(planes, num_threads=n_threads, schedule="static"):
            fill_plane(gx + p * size, size, <floating>(<double>gy[p] / size))


def global_avg_pool2d_forward(const floating[:, ::1] x,  # IN  (N C, H W)
                              floating[::1] y):           # OUT (N C,)
    """global_avg_pool2d_forward(x, y)

    The mean of every plane (a row of ``x``): its sum in the fixed lane
    order of _reduce.pxi, in double precision, divided by H * W.  The
    caller checks everything; H * W >= 1.
    """
    if x.shape[0] == 0:
        return
    with nogil:
        global_avg_pass(&x[0, 0], &y[0], x.shape[0], x.shape[1])


def global_avg_pool2d_backward(const floating[::1] gy,  # IN  (N C,)
                               floating[:, ::1] gx):    # OUT (N C, H W)
    """global_avg_pool2d_backward(gy, gx)

    Every element of plane p gets gy[p] / (H * W).  The caller checks
    everything.
    """
    if gx.shape[0] == 0 or gx.shape[1] == 0:
        return
    with nogil:
        global_avg_backward_pass(&gy[0], &gx[0, 0], gx.shape[0], gx.shape[1])


include "_pool_steps.pxi"

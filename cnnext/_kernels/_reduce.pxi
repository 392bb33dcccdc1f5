# Sums over contiguous spans in a fixed order: the reductions of batch
# normalisation and global average pooling (included by _norm.pxi and
# _pool.pxi, so each ISA build vectorises them at its own width).
#
# gcc does not reorder a floating-point sum (no -ffast-math), so a plain loop
# adds one element at a time, at the latency of one add.  These helpers keep
# SUM_LANES independent partial sums instead, element i going to lane
# i % SUM_LANES: the lane updates are independent, so they vectorise, and
# the order of every addition is fixed by the data's length alone (the same
# on every thread and every ISA build).  Lanes are folded into a double (a
# pairwise tree) every SUM_BLOCK elements, so a float32 sum over a long span
# keeps the error of a short one.  A float32 sum whose lanes overflowed (finite data
# near the top of the range) is taken again in double precision, so only
# data holding inf or NaN gives a non-finite sum.

from libc.math cimport isfinite

cdef enum:
    SUM_LANES = 32
    SUM_BLOCK = 2048


cdef inline double fold_lanes(const floating* acc) noexcept nogil:
    # A pairwise tree: the additions of a level are independent (they
    # vectorise), where a chain waits on each add's latency, which short
    # spans (7x7 planes) spend most of their time on.
    cdef double tree[SUM_LANES]
    cdef Py_ssize_t k, width = SUM_LANES // 2
    for k in range(width):
        tree[k] = <double>acc[k] + <double>acc[k + width]
    while width > 1:
        width //= 2
        for k in range(width):
            tree[k] = tree[k] + tree[k + width]
    return tree[0]


cdef inline double span_sum(const floating* x,  # IN (n,)
                            Py_ssize_t n) noexcept nogil:
    """sum(x[:n]) in the lane order described above."""
    cdef double total = lane_sum(x, n)
    cdef Py_ssize_t i
    if floating is float:
        if not isfinite(total):
            total = 0
            for i in range(n):
                total += x[i]
    return total


cdef inline double lane_sum(const floating* x,  # IN (n,)
                            Py_ssize_t n) noexcept nogil:
    cdef floating acc[SUM_LANES]
    cdef double total = 0
    cdef Py_ssize_t start, stop, i, k
    start = 0
    while start < n:
        stop = min(start + SUM_BLOCK, n)
        for k in range(SUM_LANES):
            acc[k] = 0
        i = start
        while i + SUM_LANES <= stop:
            for k in range(SUM_LANES):
                acc[k] = acc[k] + x[i + k]
            i += SUM_LANES
        for k in range(stop - i):
            acc[k] = acc[k] + x[i + k]
        total += fold_lanes(acc)
        start = stop
    return total


cdef inline double span_sum_squared_deviations(const floating* x,  # IN (n,)
                                               Py_ssize_t n,
                                               floating shift) noexcept nogil:
    """sum((x[:n] - shift) ** 2) in the lane order described above."""
    cdef double total = lane_sum_squared_deviations(x, n, shift)
    cdef double d
    cdef Py_ssize_t i
    if floating is float:
        if not isfinite(total):
            total = 0
            for i in range(n):
                d = <double>x[i] - shift
                total += d * d
    return total


cdef inline double lane_sum_squared_deviations(const floating* x,  # IN (n,)
                                               Py_ssize_t n,
                                               floating shift) noexcept nogil:
    cdef floating acc[SUM_LANES]
    cdef floating d
    cdef double total = 0
    cdef Py_ssize_t start, stop, i, k
    start = 0
    while start < n:
        stop = min(start + SUM_BLOCK, n)
        for k in range(SUM_LANES):
            acc[k] = 0
        i = start
        while i + SUM_LANES <= stop:
            for k in range(SUM_LANES):
                d = x[i + k] - shift
                acc[k] = acc[k] + d * d
            i += SUM_LANES
        for k in range(stop - i):
            d = x[i + k] - shift
            acc[k] = acc[k] + d * d
        total += fold_lanes(acc)
        start = stop
    return total


# The gradient sums of batch normalisation, optionally gated by the output of
# a ReLU after it (that layer's backward folded in): g[i] where y[i] is not
# <= 0, else 0, the select of the ReLU layer's backward, so the sums are
# those of its output bit for bit.  The fused type compiles each as its own
# loop; callers pass a NULL pointer of the kind they want.
cdef struct Ungated:
    char unused


cdef struct ReluGated:
    char unused


ctypedef fused gate:
    Ungated
    ReluGated


cdef inline floating gated(const gate* kind, const floating* g, const floating* y,
                           Py_ssize_t i) noexcept nogil:
    if gate is ReluGated:
        return g[i] if not (y[i] <= 0) else 0
    return g[i]


cdef inline void span_sum_and_dot(const gate* kind,
                                  const floating* g,  # IN (n,)
                                  const floating* y,  # IN (n,) the ReLU's output (ReluGated)
                                  const floating* x,  # IN (n,)
                                  Py_ssize_t n,
                                  floating shift,
                                  double* g_total,    # OUT sum(g)
                                  double* gx_total    # OUT sum(g * (x - shift))
                                  ) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi
    lane_sum_and_dot(kind, g, y, x, n, shift, g_total, gx_total)
    if floating is float:
        if not (isfinite(g_total[0]) and isfinite(gx_total[0])):
            g_total[0] = 0
            gx_total[0] = 0
            for i in range(n):
                gi = gated(kind, g, y, i)
                g_total[0] += gi
                gx_total[0] += <double>gi * (<double>x[i] - shift)


cdef inline void lane_sum_and_dot(const gate* kind,
                                  const floating* g,  # IN (n,)
                                  const floating* y,  # IN (n,) (ReluGated)
                                  const floating* x,  # IN (n,)
                                  Py_ssize_t n,
                                  floating shift,
                                  double* g_total,    # OUT sum(g)
                                  double* gx_total    # OUT sum(g * (x - shift))
                                  ) noexcept nogil:
    cdef floating acc_g[SUM_LANES]
    cdef floating acc_gx[SUM_LANES]
    cdef floating gi
    cdef double total_g = 0, total_gx = 0
    cdef Py_ssize_t start, stop, i, k
    start = 0
    while start < n:
        stop = min(start + SUM_BLOCK, n)
        for k in range(SUM_LANES):
            acc_g[k] = 0
            acc_gx[k] = 0
        i = start
        while i + SUM_LANES <= stop:
            for k in range(SUM_LANES):
                gi = gated(kind, g, y, i + k)
                acc_g[k] = acc_g[k] + gi
                acc_gx[k] = acc_gx[k] + gi * (x[i + k] - shift)
            i += SUM_LANES
        for k in range(stop - i):
            gi = gated(kind, g, y, i + k)
            acc_g[k] = acc_g[k] + gi
            acc_gx[k] = acc_gx[k] + gi * (x[i + k] - shift)
        total_g += fold_lanes(acc_g)
        total_gx += fold_lanes(acc_gx)
        start = stop
    g_total[0] = total_g
    gx_total[0] = total_gx


cdef inline bint span_finite(const floating* x,  # IN (n,)
                             Py_ssize_t n) noexcept nogil:
    """Whether x[:n] holds no inf or NaN (v - v is NaN exactly for those, else 0)."""
    cdef floating acc[SUM_LANES]
    cdef floating total = 0
    cdef Py_ssize_t i, k, full = n // SUM_LANES * SUM_LANES
    for k in range(SUM_LANES):
        acc[k] = 0
    for i in range(full // SUM_LANES):
        for k in range(SUM_LANES):
            acc[k] = acc[k] + (x[i * SUM_LANES + k] - x[i * SUM_LANES + k])
    for k in range(n - full):
        acc[k] = acc[k] + (x[full + k] - x[full + k])
    for k in range(SUM_LANES):
        total = total + acc[k]
    return total == 0

"""The machine's measured GEMM rate, the roofline every GFLOP/s figure is read against.

A convolution cannot run faster than the matrix product it reduces to, so
the peak is measured, not looked up: ``np.matmul`` on square matrices
through the BLAS NumPy was built with (float32: SGEMM, float64: DGEMM), in
the caller's thread setting (see ``timing.pinned_threads``), timed with the
clock of the cases at that thread count.  The best rate over a few sizes is
the peak.
"""

import functools

import numpy as np

from .timing import clock_for, measure

SIZES = (256, 512, 1024)


def gemm_rate(dtype, repeats, budget_seconds, sizes=SIZES, threads=1):
    """Best measured GFLOP/s of an n x n x n ``np.matmul`` over ``sizes``; returns (rate, n)."""
    rng = np.random.default_rng(0)
    best = (0.0, 0)
    for n in sizes:
        a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
        out = np.empty((n, n), dtype=dtype)
        (timing,) = measure([functools.partial(np.matmul, a, b, out=out)], repeats,
                            budget_seconds, clock=clock_for(threads)[1])
        best = max(best, (2 * n**3 / timing.median / 1e9, n))
    return best

"""Timing: warm-up, calibrated loops, repeats, median and spread, pinned thread counts.

A repeat times ``loops`` back-to-back calls, with ``loops`` chosen so that a
repeat lasts at least ``min_repeat_seconds`` (a 5 us call is timed in
batches, a 50 ms call alone); the per-call time of each repeat is one
sample.  Repeats stop at ``repeats`` samples or when ``budget_seconds`` per
callable is spent, whichever comes first, but never below ``MIN_REPEATS``.
The implementations of one case are timed together, their repeats
interleaved.  The garbage collector is off while timing, as in ``timeit``.

``pinned_threads(n)`` fixes the thread count of every library in the
process at once: cnnext's OpenMP kernels, PyTorch (when imported) and the
BLAS behind NumPy (through threadpoolctl, when installed).
"""

import contextlib
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass

MIN_REPEATS = 3


def all_cores():
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def blas_pinning_available():
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def pinned_threads(n):
    """Run the block with cnnext, torch and BLAS all on ``n`` threads."""
    import cnnext

    torch = sys.modules.get("torch")
    previous_torch = torch.get_num_threads() if torch is not None else None
    cnnext.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        if blas_pinning_available():
            import threadpoolctl

            with threadpoolctl.threadpool_limits(limits=n, user_api="blas"):
                yield
        else:
            yield
    finally:
        cnnext.set_num_threads(None)
        if torch is not None:
            torch.set_num_threads(previous_torch)


@dataclass
class Timing:
    samples: list  # seconds per call, one per repeat
    loops: int  # calls per repeat

    @property
    def median(self):
        return statistics.median(self.samples)

    @property
    def quartiles(self):
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    @property
    def spread(self):
        """Interquartile range relative to the median."""
        q1, q3 = self.quartiles
        return (q3 - q1) / self.median


def _time(run, loops):
    start = time.perf_counter()
    for _ in range(loops):
        run()
    return time.perf_counter() - start


def _calibrate(run, min_repeat_seconds, warmup):
    """Warm up, then find the loop count; returns (loops, the first sample)."""
    for _ in range(warmup):
        run()
    loops = 1
    elapsed = _time(run, loops)
    while elapsed < min_repeat_seconds:
        # Aim a little past the target so one more round usually suffices.
        loops = max(loops * 2, int(loops * 1.2 * min_repeat_seconds / max(elapsed, 1e-9)))
        elapsed = _time(run, loops)
    return loops, elapsed / loops


def measure(runs, repeats, budget_seconds, min_repeat_seconds=0.02, warmup=1):
    """Time each callable of ``runs``; return one Timing per run, or the exception it raised.

    The repeats are interleaved (run 1, run 2, ..., run 1, run 2, ...), so a
    burst of load from another process lands on every implementation of a
    case alike instead of on whichever was being timed.  The budget is per
    run.
    """
    results = [None] * len(runs)
    loops = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i, run in enumerate(runs):
            try:
                loops[i], first = _calibrate(run, min_repeat_seconds, warmup)
                results[i] = Timing([first], loops[i])
            except Exception as exc:  # reported in the result row
                results[i] = exc
        deadline = time.perf_counter() + budget_seconds * len(runs)
        count = 1
        while count < repeats and (count < MIN_REPEATS or time.perf_counter() < deadline):
            for i in list(loops):
                try:
                    results[i].samples.append(_time(runs[i], loops[i]) / loops[i])
                except Exception as exc:  # as above
                    results[i] = exc
                    del loops[i]
            count += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return results

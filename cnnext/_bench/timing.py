"""Timing: warm-up, calibrated loops, repeats, median and spread, pinned thread counts.

A repeat times ``loops`` back-to-back calls, with ``loops`` chosen so that a
repeat lasts at least ``min_repeat_seconds`` (a 5 us call is timed in
batches, a 50 ms call alone); the per-call time of each repeat is one
sample.  Repeats stop at ``repeats`` samples or when ``budget_seconds`` per
callable is spent, whichever comes first, but never below ``MIN_REPEATS``.
The implementations of one case are timed together, their repeats
interleaved.  The garbage collector is off while timing, as in ``timeit``.

The clock: on one thread, the CPU time of the calling thread
(``time.thread_time``), which does not count the time slices other
processes take on a shared machine; every library computes on the calling
thread when pinned to one (``helper_cpu`` checks it: CPU time the process's
other threads used meanwhile).  On more threads, the wall clock.  Every
repeat also counts the page faults of the process (``faults``): a call that
faults in fresh memory each time (an allocator returning freed memory to the
system) is slowed by that, not by its arithmetic.

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
from dataclasses import dataclass, field

try:
    import resource
except ImportError:  # Windows
    resource = None

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


def clock_for(threads):
    """The clock repeats are timed with at ``threads`` threads: (name, function)."""
    if threads == 1:
        return "thread CPU time", time.thread_time
    return "wall clock", time.perf_counter


def _faults():
    if resource is None:
        return 0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


@dataclass
class Timing:
    samples: list  # seconds per call, one per repeat
    loops: int  # calls per repeat
    faults: list = field(default_factory=list)  # page faults per call, one per repeat
    helper_cpu: list = field(default_factory=list)  # other threads' CPU s per call (1 thread)

    @property
    def faults_per_call(self):
        return statistics.median(self.faults) if self.faults else None

    @property
    def helper_cpu_per_call(self):
        return statistics.median(self.helper_cpu) if self.helper_cpu else None

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


def _time(run, loops, clock):
    """One repeat: (seconds, page faults, other threads' CPU seconds), each per call."""
    faults, process = _faults(), time.process_time()
    start_thread, start = time.thread_time(), clock()
    for _ in range(loops):
        run()
    elapsed = clock() - start
    thread = time.thread_time() - start_thread
    helper = max(time.process_time() - process - thread, 0.0)
    return elapsed / loops, (_faults() - faults) / loops, helper / loops


def _calibrate(run, min_repeat_seconds, warmup, clock):
    """Warm up, then find the loop count; returns (loops, the first repeat's figures)."""
    for _ in range(warmup):
        run()
    loops = 1
    sample = _time(run, loops, clock)
    while sample[0] * loops < min_repeat_seconds:
        # Aim a little past the target so one more round usually suffices.
        loops = max(loops * 2,
                    int(1.2 * min_repeat_seconds / max(sample[0], 1e-9 / loops)))
        sample = _time(run, loops, clock)
    return loops, sample


def measure(runs, repeats, budget_seconds, min_repeat_seconds=0.02, warmup=1,
            clock=time.perf_counter):
    """Time each callable of ``runs``; return one Timing per run, or the exception it raised.

    The repeats are interleaved (run 1, run 2, ..., run 1, run 2, ...), so a
    burst of load from another process lands on every implementation of a
    case alike instead of on whichever was being timed.  The budget is per
    run, in seconds of ``clock``.
    """
    results = [None] * len(runs)
    loops = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i, run in enumerate(runs):
            try:
                loops[i], (seconds, faults, helper) = _calibrate(run, min_repeat_seconds,
                                                                 warmup, clock)
                results[i] = Timing([seconds], loops[i], [faults], [helper])
            except Exception as exc:  # reported in the result row
                results[i] = exc
        spent = 0.0
        count = 1
        while count < repeats and (count < MIN_REPEATS or spent < budget_seconds * len(runs)):
            for i in list(loops):
                try:
                    seconds, faults, helper = _time(runs[i], loops[i], clock)
                except Exception as exc:  # as above
                    results[i] = exc
                    del loops[i]
                    continue
                results[i].samples.append(seconds)
                results[i].faults.append(faults)
                results[i].helper_cpu.append(helper)
                spent += seconds * loops[i]
            count += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return results

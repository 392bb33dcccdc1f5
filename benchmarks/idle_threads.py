"""Do the libraries' idle threads disturb the timings?  The diagnosis behind ``environment.py``.

Usage (after ``pip install .``; Linux, reads /proc/self/task):

    python benchmarks/idle_threads.py                       # library defaults
    OMP_WAIT_POLICY=PASSIVE KMP_BLOCKTIME=0 OPENBLAS_THREAD_TIMEOUT=4 \\
        python benchmarks/idle_threads.py                   # what `cnnext bench` times in
    python benchmarks/idle_threads.py conv2d.forward.notebook --threads 2 --rounds 9

Two measurements of one case (default conv2d.forward.strided, float32) with
cnnext, torch and the NumPy baseline bound as ``cnnext bench`` binds them,
every library pinned to ``--threads``:

1. CPU time per thread while the process sleeps 0.3 s right after 20 calls
   of one implementation: the worker threads that keep spinning.
2. The median time of 5 calls of each implementation right after 3 calls of
   another one, and the same after a 0.3 s pause, pairs alternated so that
   outside load drifts over both alike.
3. Each implementation alone, back to back: median time per call on 1 thread
   and on ``--threads``, and the speed-up.  Spinning idle threads pay off here
   when a core is free for each of them; sleeping ones pay a wake-up per
   parallel region.
"""

import argparse
import os
import statistics
import sys
import time

from cnnext._bench.cases import CASES
from cnnext._bench.impls import IMPLEMENTATIONS
from cnnext._bench.timing import pinned_threads

NAMES = ("cnnext", "torch", "numpy")
TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu():
    """CPU seconds used so far by each thread of this process."""
    seconds = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return seconds


def spinning(bound, pause):
    """Run ``bound`` 20 times; return {thread id: CPU seconds} burnt in the ``pause`` after."""
    for _ in range(20):
        bound.run()
    before = thread_cpu()
    time.sleep(pause)
    after = thread_cpu()
    return {tid: after[tid] - before.get(tid, 0.0) for tid in after
            if after[tid] > before.get(tid, 0.0)}


def per_call(bound, calls=5):
    start = time.perf_counter()
    for _ in range(calls):
        bound.run()
    return (time.perf_counter() - start) / calls


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", nargs="?", default="conv2d.forward.strided")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    case = CASES[args.case]
    inputs = case.make_inputs(args.dtype)
    reference = case.reference(inputs)
    variables = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OPENBLAS_THREAD_TIMEOUT")
    print(f"{case.name} {args.dtype}, {args.threads} thread(s); "
          + ", ".join(f"{name}={os.environ.get(name, '(unset)')}" for name in variables)
          + f"; 1-minute load average {os.getloadavg()[0]:.1f}")
    # NumPy is imported by now and OpenBLAS starts its workers when it loads;
    # the OpenMP runtime starts its team at the first parallel call.
    at_start = set(thread_cpu())

    def label(tid):
        if tid == os.getpid():
            return "main"
        return f"{tid} (BLAS)" if tid in at_start else f"{tid} (OpenMP or torch)"

    with pinned_threads(args.threads):
        bound = {name: IMPLEMENTATIONS[name].bind(case, args.dtype, inputs, reference)
                 for name in NAMES}
        for b in bound.values():
            b.check()
        print(f"\nCPU seconds per thread in a {args.pause} s sleep right after 20 calls "
              "(only threads that used any):")
        for name in NAMES:
            busy = spinning(bound[name], args.pause)
            cells = ", ".join(f"{label(tid)}: {seconds:.2f}"
                              for tid, seconds in sorted(busy.items()))
            print(f"  after {name:<7} {cells or 'none'}")
        print(f"\nmedian time per call over {args.rounds} rounds (ms)")
        for target in NAMES:
            for previous in NAMES:
                fresh, rested = [], []
                for _ in range(args.rounds):
                    for _ in range(3):
                        bound[previous].run()
                    fresh.append(per_call(bound[target]))
                    for _ in range(3):
                        bound[previous].run()
                    time.sleep(args.pause)
                    rested.append(per_call(bound[target]))
                print(f"  {target:>7} right after {previous:<7} "
                      f"{1e3 * statistics.median(fresh):8.3f}   after a {args.pause} s pause "
                      f"{1e3 * statistics.median(rested):8.3f}", flush=True)
    print(f"\neach alone, median time per call over {args.rounds} rounds (ms)")
    for name in NAMES:
        medians = []
        for n in (1, args.threads):
            with pinned_threads(n):
                per_call(bound[name])  # wakes the threads up
                medians.append(statistics.median(per_call(bound[name])
                                                 for _ in range(args.rounds)))
        print(f"  {name:>7} 1 thread {1e3 * medians[0]:8.3f}   {args.threads} threads "
              f"{1e3 * medians[1]:8.3f}   speed-up {medians[0] / medians[1]:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The environment the suite times in: every library's idle threads sleep at once.

OpenMP runtimes (libgomp, which cnnext and PyTorch share on Linux; LLVM's and
Intel's elsewhere) and OpenBLAS (NumPy's BLAS) keep their worker threads
spinning for a while after each parallel call, so that the next call starts
without a wake-up.  That pays off only while every spinning thread has a core
of its own.  On a machine whose cores are all wanted (two threads on two
cores beside other busy processes, or one library's workers still spinning
while the next library is timed), the scheduler counts a spinning thread as a
busy one: a team's barrier then waits a whole time slice for a worker that is
runnable but not running, and calls became 10 to 1000 times slower at two
threads than at one (benchmarks/README.md has the measurements).

So the suite runs with every runtime's idle threads asleep from the start:
one rule for every library, which costs each threaded library the same
wake-up (microseconds) per parallel call.  The runtimes read these variables
when they load, before any code of the suite runs, so ``cnnext bench``
re-runs itself in a child process with the variables set (``rerun``).  A
variable already set is kept, and ``cnnext bench --keep-env`` times in the
environment as it is: the runtimes' own spinning, which can shave the
wake-ups on a machine with nothing else running.
"""

import os
import subprocess
import sys

QUIET_THREADS = {
    # libgomp (cnnext; PyTorch's ATen, oneDNN and MKL on Linux), LLVM and Intel OpenMP.
    "OMP_WAIT_POLICY": "PASSIVE",
    # LLVM and Intel OpenMP (PyTorch on macOS and Windows): no spinning after a region.
    "KMP_BLOCKTIME": "0",
    # OpenBLAS spins 2**n cycles (default 2**28, ~0.1 s) before sleeping; 4 is its minimum.
    "OPENBLAS_THREAD_TIMEOUT": "4",
}


def missing():
    """The variables of ``QUIET_THREADS`` not set in this process (a dict name -> value)."""
    return {name: value for name, value in QUIET_THREADS.items() if name not in os.environ}


def describe():
    """The values in effect here, for the report (None: not set, the runtime's default)."""
    return {name: os.environ.get(name) for name in QUIET_THREADS}


def rerun(argv):
    """rerun(argv)

    Run ``python -m cnnext._bench argv`` in a child process whose environment
    adds the ``missing()`` variables; return its exit status.
    """
    command = [sys.executable, "-m", "cnnext._bench", *argv]
    return subprocess.run(command, env={**os.environ, **missing()}, check=False).returncode

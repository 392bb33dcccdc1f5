"""The environment the suite times in: every library's idle threads spin briefly, then sleep.

OpenMP runtimes (libgomp, which cnnext and PyTorch share on Linux; LLVM's and
Intel's elsewhere) and OpenBLAS (NumPy's BLAS) keep their worker threads
spinning after each parallel region, so that the next one starts without a
wake-up: libgomp for 300,000 spins (about 5 ms here), OpenBLAS for 2**28
cycles (about 0.1 s).  That pays off only while every spinning thread has a
core of its own.  On a machine whose cores are all wanted (two threads on two
cores beside other busy processes, or one library's workers still spinning
while the next library is timed), the scheduler counts a spinning thread as a
busy one: a team's barrier then waits a whole time slice for a worker that is
runnable but not running, and calls became 10 to 1000 times slower at two
threads than at one.  Threads that sleep at once avoid that but pay a
wake-up (tens of microseconds on this virtual machine) per region, which on
a quiet machine halved what a second thread gained on short calls.

So the suite bounds the spinning: libgomp's idle threads spin 1000 times
(about 16 us, enough to bridge the gaps between the regions of a call and
between back-to-back calls), OpenBLAS's not at all, LLVM's and Intel's not at
all.  One rule for every library (cnnext and PyTorch even share the libgomp
that reads it); benchmarks/README.md has the measurements.  The runtimes read
these variables when they load, before any code of the suite runs, so
``cnnext bench`` re-runs itself in a child process with them set
(``rerun``).  A variable already set is kept (an ``OMP_WAIT_POLICY`` of the
user's stands for both OpenMP variables), and ``cnnext bench --keep-env``
times in the environment as it is.
"""

import os
import subprocess
import sys

QUIET_THREADS = {
    # libgomp (cnnext; PyTorch's ATen, oneDNN and MKL on Linux): spins before sleeping.
    "GOMP_SPINCOUNT": "1000",
    # LLVM and Intel OpenMP (PyTorch on macOS and Windows): milliseconds of spinning.
    "KMP_BLOCKTIME": "0",
    # OpenBLAS spins 2**n cycles before sleeping; 4 is its minimum.
    "OPENBLAS_THREAD_TIMEOUT": "4",
}
# The OpenMP variables a user's OMP_WAIT_POLICY overrides in their runtimes.
OPENMP_WAITING = ("GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def missing():
    """The variables of ``QUIET_THREADS`` to add to this process's environment (a dict)."""
    chosen = set(os.environ)
    if "OMP_WAIT_POLICY" in chosen:
        chosen.update(OPENMP_WAITING)
    return {name: value for name, value in QUIET_THREADS.items() if name not in chosen}


def spinning_bounded():
    """Whether this process times with bounded spinning (every ``QUIET_THREADS`` variable set).

    Runtimes that take their spinning from an API rather than the environment
    (onnxruntime's thread pool) follow the same rule: no spinning when bounded.
    """
    return not missing()


def describe():
    """The values in effect here, for the report (None: not set, the runtime's default)."""
    return {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", *QUIET_THREADS)}


def rerun(argv):
    """rerun(argv)

    Run ``python -m cnnext._bench argv`` in a child process whose environment
    adds the ``missing()`` variables; return its exit status.
    """
    # -P: run from a checkout's root, the child would otherwise import the
    # uncompiled source tree instead of the package the parent runs.
    command = [sys.executable, "-P", "-m", "cnnext._bench", *argv]
    return subprocess.run(command, env={**os.environ, **missing()}, check=False).returncode

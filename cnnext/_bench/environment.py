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

The same child keeps glibc's malloc from handing freed memory back to the
system after every call (``KEEP_FREED_MEMORY``).  By default glibc returns
the top of its heap once more than a threshold is free there, and serves
large blocks with fresh mmaps; then every call whose temporaries end on top
of the heap faults all their pages in again (PyTorch's forward-backward of
the notebook layer: about 9,900 page faults, 39 MB, per call, doubling its
time, or not, depending on where the last long-lived small object landed).
A careful user of PyTorch on the CPU avoids that with the allocator its
tuning guide recommends (jemalloc or tcmalloc: freed memory is reused); on
glibc the same comes from two variables, for every library alike.
"""

import os
import platform
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

KEEP_FREED_MEMORY = {
    # Blocks below 32 MB (glibc's largest threshold) come from the heap, not from
    # mmaps of their own that would be unmapped when freed ...
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    # ... and the heap keeps up to 1 GB free at its top instead of shrinking.
    # (Either alone is worse: setting one turns glibc's adaptive thresholds off.)
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
}


def _glibc():
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def wanted():
    """The variables the suite times with: QUIET_THREADS, and KEEP_FREED_MEMORY on glibc."""
    return {**QUIET_THREADS, **(KEEP_FREED_MEMORY if _glibc() else {})}


def missing():
    """The variables of ``wanted()`` to add to this process's environment (a dict)."""
    chosen = set(os.environ)
    if "OMP_WAIT_POLICY" in chosen:
        chosen.update(OPENMP_WAITING)
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        chosen.update(KEEP_FREED_MEMORY)  # the user tunes malloc their own way
    return {name: value for name, value in wanted().items() if name not in chosen}


def spinning_bounded():
    """Whether this process times with bounded spinning (every ``QUIET_THREADS`` variable set).

    Runtimes that take their spinning from an API rather than the environment
    (onnxruntime's thread pool) follow the same rule: no spinning when bounded.
    """
    return not missing()


def describe():
    """The values in effect here, for the report (None: not set, the runtime's default)."""
    return {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", *QUIET_THREADS)}


def describe_allocator():
    """The malloc settings in effect here (None: not set), and GLIBC_TUNABLES when set."""
    names = (*KEEP_FREED_MEMORY, *(("GLIBC_TUNABLES",) if "GLIBC_TUNABLES" in os.environ else ()))
    return {name: os.environ.get(name) for name in names}


def rerun(argv):
    """rerun(argv)

    Run ``python -m cnnext._bench argv`` in a child process whose environment
    adds the ``missing()`` variables; return its exit status.
    """
    # -P: run from a checkout's root, the child would otherwise import the
    # uncompiled source tree instead of the package the parent runs.
    command = [sys.executable, "-P", "-m", "cnnext._bench", *argv]
    return subprocess.run(command, env={**os.environ, **missing()}, check=False).returncode

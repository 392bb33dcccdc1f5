"""OpenMP thread-count control for every cnnext kernel.

Semantics (as in scikit-learn's ``_openmp_helpers``):

* ``set_num_threads(n)`` fixes the count for all cnnext kernels, process-wide;
* ``set_num_threads(None)`` (the default state) follows OpenMP's own setting,
  ``omp_get_max_threads()``, which honours ``OMP_NUM_THREADS`` and
  ``threadpoolctl.threadpool_limits(user_api="openmp")``;
* a build without OpenMP always runs on one thread.

Every count goes through one range check, whatever its source: 1 to
``MAX_THREADS``.  ``set_num_threads`` refuses a count outside it; a count
OpenMP reports outside it (``OMP_NUM_THREADS=100000``, a value that
overflowed OpenMP's int, threadpoolctl asked for a million) is replaced by
the processor count, with a RuntimeWarning at import for the environment
variable.  Asked for 100,000 threads, libgomp's ``alloca`` of its per-thread
start data overflows the calling thread's stack: a segfault, not an error.

A worker stack size (``OMP_STACKSIZE``, else ``GOMP_STACKSIZE``, parsed as
the OpenMP runtime parses them) of the machine's memory or more cannot be
mapped, and the runtime exits the process when it fails to start a thread:
then the kernels run on the calling thread only (no worker is started),
with a RuntimeWarning at import.

LLVM's runtime (libomp: clang's, the macOS wheels') aborts the process on
values libgomp ignores (``OMP_NUM_THREADS=-1``, ``abc``, an empty value, an
``OMP_STACKSIZE`` beyond 2**64 bytes) and reads a thread count beyond int's
range as 1.  So a libomp build hides, while the runtime initialises (at this
module's import), the settings libgomp would ignore or find out of range
(``hidden_settings``), then restores them: both runtimes then start from the
same settings, and child processes still inherit the user's environment.
"""

import os
import re
import warnings

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CNNEXT_OPENMP_VERSION _OPENMP
    #else
    /* Stubs so a build without OpenMP compiles and runs single-threaded. */
    #define CNNEXT_OPENMP_VERSION 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_num_procs(void) { return 1; }
    #endif
    /* setup.py: 0 for CNNEXT_NO_OPENMP=1, else 1 (whether or not it was found). */
    #ifndef CNNEXT_OPENMP_REQUESTED
    #define CNNEXT_OPENMP_REQUESTED 1
    #endif
    /* LLVM's omp.h (libomp) defines KMP_VERSION_MAJOR; libgomp's does not. */
    #if defined(_OPENMP) && defined(KMP_VERSION_MAJOR)
    #define CNNEXT_LIBOMP 1
    #else
    #define CNNEXT_LIBOMP 0
    #endif
    """
    int CNNEXT_OPENMP_VERSION
    int CNNEXT_OPENMP_REQUESTED
    int CNNEXT_LIBOMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_num_procs() noexcept nogil

# The most threads any source may ask for: enough for any machine, few
# enough that a typo cannot ask the OpenMP runtime for millions.
cdef enum:
    _MAX_THREADS = 4096
MAX_THREADS = _MAX_THREADS

# 0 means "follow omp_get_max_threads()".
cdef int _requested_threads = 0
# Used instead of an out-of-range count from OpenMP (set at import, by
# _initialize_runtime: the first call into the runtime).
cdef int _fallback_threads = 1
# The OMP_NUM_THREADS count hidden from libomp as out of range (0: none).
cdef object _hidden_count = 0
# 1 when no worker thread can be started (see the module docstring).
cdef int _calling_thread_only = 0


cdef int effective_num_threads() noexcept nogil:
    cdef int n
    if CNNEXT_OPENMP_VERSION == 0 or _calling_thread_only:
        return 1
    if _requested_threads > 0:
        return _requested_threads
    n = omp_get_max_threads()
    if n < 1 or n > _MAX_THREADS:
        return _fallback_threads
    return n


def openmp_version():
    """openmp_version()

    The ``_OPENMP`` date macro the kernels were compiled with (e.g. 201511),
    or 0 for a build without OpenMP.
    """
    return CNNEXT_OPENMP_VERSION


def openmp_requested():
    """openmp_requested()

    Whether the build asked for OpenMP (it did unless CNNEXT_NO_OPENMP=1).
    True with ``openmp_version() == 0`` means the compiler had none: a serial
    build nobody asked for.
    """
    return bool(CNNEXT_OPENMP_REQUESTED)


def num_procs():
    """num_procs()

    Processors available to OpenMP (1 for a build without OpenMP).
    """
    return omp_get_num_procs()


def get_num_threads():
    """get_num_threads()

    Number of threads the next cnnext kernel call will use.
    """
    return effective_num_threads()


def set_num_threads(n):
    """set_num_threads(n)

    Set the number of threads of every cnnext kernel, process-wide.

    Parameters
    ----------
    n : int or None
        A positive thread count, or None to follow OpenMP's setting
        (``OMP_NUM_THREADS``, threadpoolctl).
    """
    global _requested_threads
    if n is None:
        _requested_threads = 0
        return
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(
            f"set_num_threads: n must be a positive int or None, got {type(n).__name__}")
    count = n.__index__()
    if count < 1:
        raise ValueError(f"set_num_threads: n must be >= 1 (or None for the default), got {count}")
    if count > _MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be <= {_MAX_THREADS}, got {count}")
    _requested_threads = count


_STACKSIZE = re.compile(r"\s*([+-]?)([0-9]+)\s*(?:([bkmgBKMG])\s*)?")
_SHIFTS = {"b": 0, "k": 10, "m": 20, "g": 30}


def parse_stacksize(text):
    """parse_stacksize(text)

    Bytes of a worker stack size setting as libgomp reads it (a number with an
    optional B, K (the default), M or G suffix; ``strtoul``'s wrap-around of a
    minus sign included), or None for a value the runtime ignores.
    """
    match = _STACKSIZE.fullmatch(text)
    if match is None:
        return None
    sign, digits, suffix = match.groups()
    value = int(digits)
    if value >= 2**64:
        return None
    if sign == "-":
        value = (2**64 - value) % 2**64
    value <<= _SHIFTS[(suffix or "k").lower()]
    return value if value < 2**64 else None


def _memory_bytes():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


_NUM_THREADS = re.compile(r"\s*([0-9]+)\s*(?:,\s*[0-9]+\s*)*")


def hidden_settings(environ=os.environ):
    """hidden_settings(environ=os.environ)

    The OpenMP settings of ``environ`` that a libomp build hides from its
    runtime while it initialises: name -> the thread count libgomp would
    report for it (OMP_NUM_THREADS beyond MAX_THREADS), or None (a value
    libgomp ignores: not a list of positive counts, a count or stack size of
    2**64 or more, a stack size it cannot parse).  Empty for a libgomp
    build's usual settings; computed the same on every build.
    """
    hidden = {}
    setting = environ.get("OMP_NUM_THREADS")
    if setting is not None:
        match = _NUM_THREADS.fullmatch(setting)
        counts = [] if match is None else [int(c) for c in setting.split(",")]
        if not counts or not all(0 < c < 2**64 for c in counts):
            hidden["OMP_NUM_THREADS"] = None
        elif counts[0] > _MAX_THREADS:
            hidden["OMP_NUM_THREADS"] = counts[0]
    for name in ("OMP_STACKSIZE", "GOMP_STACKSIZE"):
        if name in environ and parse_stacksize(environ[name]) is None:
            hidden[name] = None
    return hidden


def _initialize_runtime():
    global _fallback_threads, _hidden_count
    saved = {}
    if CNNEXT_LIBOMP:
        hidden = hidden_settings()
        _hidden_count = hidden.get("OMP_NUM_THREADS") or 0
        saved = {name: os.environ.pop(name) for name in hidden}
    try:
        # libomp reads the environment at its first call.
        _fallback_threads = max(1, min(omp_get_num_procs(), _MAX_THREADS))
        omp_get_max_threads()
    finally:
        os.environ.update(saved)


_initialize_runtime()


def check_environment(environ=os.environ):
    """check_environment(environ=os.environ)

    Check what the OpenMP runtime took from the environment, once, at import:

    * a default thread count (``OMP_NUM_THREADS``) outside 1..MAX_THREADS:
      the kernels use the processor count instead;
    * a worker stack size (``OMP_STACKSIZE``/``GOMP_STACKSIZE``) of the
      machine's memory or more: the kernels start no worker thread.

    Each warns (RuntimeWarning) saying what was found and what is done.
    Returns the warnings' texts (a list, empty when all is well).
    """
    global _calling_thread_only
    messages = []
    if CNNEXT_OPENMP_VERSION == 0:
        return messages
    # A count hidden from libomp is what libgomp would have reported.
    n = _hidden_count or omp_get_max_threads()
    if not 1 <= n <= _MAX_THREADS:
        setting = environ.get("OMP_NUM_THREADS")
        source = "OpenMP's default" if setting is None else f"OMP_NUM_THREADS={setting!r}"
        messages.append(
            f"{source} asks for {n} threads, outside the 1..{_MAX_THREADS} that "
            f"cnnext.set_num_threads accepts; cnnext's kernels use {_fallback_threads} "
            f"(the processor count) instead")
    for name in ("OMP_STACKSIZE", "GOMP_STACKSIZE"):
        size = None if name not in environ else parse_stacksize(environ[name])
        if size is None:
            continue  # unset, or ignored by the runtime: the next one counts
        memory = _memory_bytes()
        if memory is not None and size >= memory:
            _calling_thread_only = 1
            messages.append(
                f"{name}={environ[name]!r} asks for {size} bytes of stack per OpenMP thread, "
                f"more than this machine's {memory} bytes of memory: no thread could start, "
                f"and the OpenMP runtime would end the process; cnnext's kernels run on the "
                f"calling thread only")
        break
    for message in messages:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return messages

"""OpenMP thread-count control for every cnnext kernel.

Semantics (as in scikit-learn's ``_openmp_helpers``):

* ``set_num_threads(n)`` fixes the count for all cnnext kernels, process-wide;
* ``set_num_threads(None)`` (the default state) follows OpenMP's own setting,
  ``omp_get_max_threads()``, which honours ``OMP_NUM_THREADS`` and
  ``threadpoolctl.threadpool_limits(user_api="openmp")``;
* a build without OpenMP always runs on one thread.
"""

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
    """
    int CNNEXT_OPENMP_VERSION
    int omp_get_max_threads() noexcept nogil
    int omp_get_num_procs() noexcept nogil

# 0 means "follow omp_get_max_threads()".
cdef int _requested_threads = 0


cdef int effective_num_threads() noexcept nogil:
    if CNNEXT_OPENMP_VERSION == 0:
        return 1
    if _requested_threads > 0:
        return _requested_threads
    return omp_get_max_threads()


def openmp_version():
    """openmp_version()

    The ``_OPENMP`` date macro the kernels were compiled with (e.g. 201511),
    or 0 for a build without OpenMP.
    """
    return CNNEXT_OPENMP_VERSION


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
    # Bound it so a typo cannot ask the OpenMP runtime for millions of threads.
    if count > 4096:
        raise ValueError(f"set_num_threads: n must be <= 4096, got {count}")
    _requested_threads = count

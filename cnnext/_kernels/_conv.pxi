# Convolution kernels, shared source of the _conv_<isa> modules.
#
# Included by _conv_baseline.pyx, _conv_x86_64_v3.pyx and _conv_x86_64_v4.pyx;
# setup.py compiles each with its instruction-set flags.  Placeholder until
# the real kernels land: one trivial kernel proves the mechanism.

from cython cimport floating

cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define CNNEXT_COMPILED_ISA "x86-64-v4"
    #elif defined(__AVX2__)
    #define CNNEXT_COMPILED_ISA "x86-64-v3"
    #else
    #define CNNEXT_COMPILED_ISA "baseline"
    #endif
    """
    const char *CNNEXT_COMPILED_ISA


def compiled_isa():
    """compiled_isa()

    The instruction-set level this module was compiled for, read from the
    compiler's own macros (so it proves the build flags, not the file name).
    """
    return CNNEXT_COMPILED_ISA.decode("ascii")


def scale(const floating[::1] x,  # IN
          double alpha,
          floating[::1] out):      # OUT
    """scale(x, alpha, out)

    out = alpha * x.  The caller checks that x and out have the same length.
    """
    cdef Py_ssize_t i
    with nogil:
        for i in range(x.shape[0]):
            out[i] = <floating>(alpha * x[i])

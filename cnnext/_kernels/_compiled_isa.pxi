# compiled_isa(): included by every ISA-dispatched kernel family (_conv, _pool,
# ...), whose builds differ only in the compiler flags setup.py gives them.

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

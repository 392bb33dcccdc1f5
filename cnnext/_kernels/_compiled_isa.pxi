# compiled_isa(): included by every ISA-dispatched kernel family (_conv, _pool,
# ...), whose builds differ only in the compiler flags and the CNNEXT_ISA_*
# define setup.py gives them.  It reads the compiler's macros, not that
# define, so it checks the flags: __AVX512F__ and __AVX2__ are defined by
# gcc, clang and MSVC alike under their x86-64-v4 / v3 flags (-march=...,
# /arch:AVX512, /arch:AVX2); __ARM_FEATURE_SVE by gcc and clang with SVE.

cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define CNNEXT_COMPILED_ISA "x86-64-v4"
    #elif defined(__AVX2__)
    #define CNNEXT_COMPILED_ISA "x86-64-v3"
    #elif defined(__ARM_FEATURE_SVE)
    #define CNNEXT_COMPILED_ISA "aarch64-sve"
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

"""What this CPU can run and how these kernels were built.

``architecture()`` is the architecture these modules were compiled for, and
``cpu_features()`` what its CPU offers, the input of cnnext._dispatch's
choice among the instruction-set levels of that architecture.

x86-64: CPUID and, for the vector state, XCR0: a CPU that has AVX-512 but
whose OS does not save the zmm registers must not get the AVX-512 kernels.
(macOS enables AVX-512 state lazily, so XCR0 reports it off until first use
there; such Macs get the x86-64-v3 kernels, which is safe.)

arm64: NEON (Advanced SIMD) is part of the architecture; the optional
extensions are read from the kernel's hardware capabilities (getauxval on
Linux) or sysctl (macOS); elsewhere only NEON is reported.
"""

cdef extern from *:
    """
    #if defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)
    #define CNNEXT_X86_64 1
    #if defined(_MSC_VER)
    #include <intrin.h>
    #include <immintrin.h>
    static void cnnext_cpuid(int leaf, int sub, unsigned int r[4]) {
        int t[4];
        __cpuidex(t, leaf, sub);
        r[0] = (unsigned int)t[0]; r[1] = (unsigned int)t[1];
        r[2] = (unsigned int)t[2]; r[3] = (unsigned int)t[3];
    }
    static unsigned long long cnnext_xgetbv0(void) { return _xgetbv(0); }
    #else
    #include <cpuid.h>
    static void cnnext_cpuid(int leaf, int sub, unsigned int r[4]) {
        __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    }
    static unsigned long long cnnext_xgetbv0(void) {
        unsigned int lo, hi;
        __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        return ((unsigned long long)hi << 32) | lo;
    }
    #endif
    #else
    #define CNNEXT_X86_64 0
    static void cnnext_cpuid(int leaf, int sub, unsigned int r[4]) {
        (void)leaf; (void)sub; r[0] = r[1] = r[2] = r[3] = 0;
    }
    static unsigned long long cnnext_xgetbv0(void) { return 0; }
    #endif

    #if defined(__aarch64__) || defined(_M_ARM64)
    #define CNNEXT_ARCHITECTURE "aarch64"
    #elif CNNEXT_X86_64
    #define CNNEXT_ARCHITECTURE "x86_64"
    #else
    #define CNNEXT_ARCHITECTURE "other"
    #endif

    /* arm64 extensions, as bits of Linux's AT_HWCAP / AT_HWCAP2 (asm/hwcap.h). */
    #if (defined(__aarch64__) || defined(_M_ARM64)) && defined(__linux__)
    #include <sys/auxv.h>
    static unsigned long cnnext_hwcap(int second) {
        return getauxval(second ? AT_HWCAP2 : AT_HWCAP);
    }
    #define CNNEXT_HWCAP 1
    #else
    static unsigned long cnnext_hwcap(int second) { (void)second; return 0; }
    #define CNNEXT_HWCAP 0
    #endif
    #if (defined(__aarch64__) || defined(_M_ARM64)) && defined(__APPLE__)
    #include <sys/types.h>
    #include <sys/sysctl.h>
    static int cnnext_sysctl_flag(const char *name) {
        int value = 0;
        size_t size = sizeof value;
        if (sysctlbyname(name, &value, &size, NULL, 0) != 0) return 0;
        return value != 0;
    }
    #define CNNEXT_SYSCTL 1
    #else
    static int cnnext_sysctl_flag(const char *name) { (void)name; return 0; }
    #define CNNEXT_SYSCTL 0
    #endif

    #if defined(__clang__)
    #define CNNEXT_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define CNNEXT_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define CNNEXT_STR2(x) #x
    #define CNNEXT_STR(x) CNNEXT_STR2(x)
    #define CNNEXT_COMPILER "msvc " CNNEXT_STR(_MSC_FULL_VER)
    #else
    #define CNNEXT_COMPILER "unknown"
    #endif

    #if defined(__has_feature)
    #if __has_feature(address_sanitizer)
    #define CNNEXT_ASAN 1
    #endif
    #endif
    #if !defined(CNNEXT_ASAN) && defined(__SANITIZE_ADDRESS__)
    #define CNNEXT_ASAN 1
    #endif
    #ifndef CNNEXT_ASAN
    #define CNNEXT_ASAN 0
    #endif
    /* setup.py defines it to 1 for CNNEXT_DEBUG=1 builds. */
    #ifndef CNNEXT_DEBUG_BUILD
    #define CNNEXT_DEBUG_BUILD 0
    #endif
    """
    int CNNEXT_X86_64
    const char *CNNEXT_ARCHITECTURE
    int CNNEXT_HWCAP
    int CNNEXT_SYSCTL
    unsigned long cnnext_hwcap(int second) noexcept nogil
    int cnnext_sysctl_flag(const char *name) noexcept nogil
    int CNNEXT_ASAN
    int CNNEXT_DEBUG_BUILD
    const char *CNNEXT_COMPILER
    void cnnext_cpuid(int leaf, int sub, unsigned int r[4]) noexcept nogil
    unsigned long long cnnext_xgetbv0() noexcept nogil


cdef inline bint bit(unsigned long reg, int n) noexcept nogil:
    return (reg >> n) & 1


def architecture():
    """architecture()

    The architecture these kernels were compiled for: "x86_64", "aarch64" or
    "other" (the key of cnnext._dispatch.ARCHITECTURE_LEVELS).
    """
    return CNNEXT_ARCHITECTURE.decode("ascii")


def cpu_features():
    """cpu_features()

    This CPU's features relevant to the instruction-set levels of
    ``architecture()``, as a dict of name -> bool (empty where none matter).
    """
    arch = architecture()
    if arch == "x86_64":
        return x86_features()
    if arch == "aarch64":
        return arm64_features()
    return {}


# Linux's arm64 hwcap bits (AT_HWCAP, then AT_HWCAP2).
HWCAP_BITS = {"fphp": 9, "asimdhp": 10, "asimddp": 20, "sve": 22}
HWCAP2_BITS = {"sve2": 1, "i8mm": 13, "bf16": 14}
# The same extensions as macOS's sysctl names them.
SYSCTL_NAMES = {"fphp": "hw.optional.arm.FEAT_FP16", "asimdhp": "hw.optional.arm.FEAT_FP16",
                "asimddp": "hw.optional.arm.FEAT_DotProd", "i8mm": "hw.optional.arm.FEAT_I8MM",
                "bf16": "hw.optional.arm.FEAT_BF16", "sve": "hw.optional.arm.FEAT_SVE",
                "sve2": "hw.optional.arm.FEAT_SVE2"}


def arm64_features():
    """arm64_features()

    NEON ("asimd", always present on arm64) and the optional extensions
    that a later level could use (half-precision, dot product, SVE/SVE2, ...),
    as a dict of name -> bool; empty on other architectures.
    """
    if architecture() != "aarch64":
        return {}
    features = {"asimd": True}
    cdef unsigned long hwcap, hwcap2
    if CNNEXT_HWCAP:
        hwcap = cnnext_hwcap(0)
        hwcap2 = cnnext_hwcap(1)
        features["asimd"] = bit(hwcap, 1)
        features.update({name: bit(hwcap, n) for name, n in HWCAP_BITS.items()})
        features.update({name: bit(hwcap2, n) for name, n in HWCAP2_BITS.items()})
    elif CNNEXT_SYSCTL:
        features.update({name: bool(cnnext_sysctl_flag(key.encode()))
                         for name, key in SYSCTL_NAMES.items()})
    return features


def x86_features():
    """x86_features()

    Features relevant to the x86-64 micro-architecture levels, as a dict of
    name -> bool (empty on other architectures).  Vector features are only
    reported when the OS saves their registers.
    """
    if not CNNEXT_X86_64:
        return {}
    cdef unsigned int r[4]
    cdef unsigned int max_leaf, ecx1, ebx7, ecx_ext = 0
    cdef unsigned long long xcr0 = 0
    cnnext_cpuid(0, 0, r)
    max_leaf = r[0]
    cnnext_cpuid(1, 0, r)
    ecx1 = r[2]
    ebx7 = 0
    if max_leaf >= 7:
        cnnext_cpuid(7, 0, r)
        ebx7 = r[1]
    cnnext_cpuid(0x80000000, 0, r)
    if r[0] >= 0x80000001:
        cnnext_cpuid(0x80000001, 0, r)
        ecx_ext = r[2]
    if bit(ecx1, 27):  # OSXSAVE: xgetbv is usable
        xcr0 = cnnext_xgetbv0()
    cdef bint ymm_state = (xcr0 & 0x6) == 0x6
    cdef bint zmm_state = (xcr0 & 0xE6) == 0xE6
    return {
        "sse3": bit(ecx1, 0), "ssse3": bit(ecx1, 9), "sse4_1": bit(ecx1, 19),
        "sse4_2": bit(ecx1, 20), "popcnt": bit(ecx1, 23), "cx16": bit(ecx1, 13),
        "lahf": bit(ecx_ext, 0), "lzcnt": bit(ecx_ext, 5), "movbe": bit(ecx1, 22),
        "bmi1": bit(ebx7, 3), "bmi2": bit(ebx7, 8), "osxsave": bit(ecx1, 27),
        "avx": bit(ecx1, 28) and ymm_state, "fma": bit(ecx1, 12) and ymm_state,
        "f16c": bit(ecx1, 29) and ymm_state, "avx2": bit(ebx7, 5) and ymm_state,
        "avx512f": bit(ebx7, 16) and zmm_state, "avx512dq": bit(ebx7, 17) and zmm_state,
        "avx512cd": bit(ebx7, 28) and zmm_state, "avx512bw": bit(ebx7, 30) and zmm_state,
        "avx512vl": bit(ebx7, 31) and zmm_state,
    }


V2 = ("sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf")
V3 = V2 + ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "osxsave")
V4 = V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")


def x86_64_level():
    """x86_64_level()

    The highest x86-64 micro-architecture level this CPU and OS run: 4, 3, 2
    or 1, or 0 when this is not an x86-64 machine.
    """
    features = x86_features()
    if not features:
        return 0
    for level, needed in ((4, V4), (3, V3), (2, V2)):
        if all(features[name] for name in needed):
            return level
    return 1


def build_info():
    """build_info()

    How the compiled kernels were built: architecture, compiler, debug
    checks, sanitizer.
    """
    return {
        "architecture": architecture(),
        "compiler": CNNEXT_COMPILER.decode("utf-8", "replace"),
        "debug": bool(CNNEXT_DEBUG_BUILD),
        "address_sanitizer": bool(CNNEXT_ASAN),
    }

/* The instruction-set level of this build of a kernel family.
 *
 * setup.py compiles each build of a family (``_conv_x86_64_v3``, ...) with
 * that level's compiler flags and with exactly one of these defined:
 *
 *     CNNEXT_ISA_BASELINE      the architecture's default target
 *                              (SSE2 on x86-64, NEON on arm64)
 *     CNNEXT_ISA_X86_64_V3     AVX2 + FMA   (-march=x86-64-v3, /arch:AVX2)
 *     CNNEXT_ISA_X86_64_V4     AVX-512      (-march=x86-64-v4, /arch:AVX512)
 *
 * Code chooses its branches from the CNX_* macros below, which follow those
 * defines, and never from a compiler's feature macros alone: they differ
 * between compilers.  MSVC defines __AVX2__ under /arch:AVX2 but never
 * __FMA__ (its FMA intrinsics are available all the same), nor __SSE2__ on
 * x64, nor __aarch64__ on arm64 (_M_ARM64).  The compiler's macros are still
 * checked against the define, so a build whose flags do not give its level
 * fails to compile rather than running another level's code.
 *
 * Defines, for the code that includes this header:
 *   CNX_ARCH_X86_64 / CNX_ARCH_AARCH64   the target architecture (or neither)
 *   CNX_X86_AVX512 / CNX_X86_AVX2 / CNX_X86_SSE2 / CNX_ARM_NEON
 *                                        the vector instruction set to use
 *                                        (none: the compiler's generic vectors)
 *   CNX_ISA_NAME                         the level, as cnnext._dispatch names it
 *   CNX_VEC_REGISTERS                    vector registers of that instruction set
 */
#ifndef CNNEXT_ISA_H
#define CNNEXT_ISA_H

#if defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)
#define CNX_ARCH_X86_64 1
#elif defined(__aarch64__) || defined(_M_ARM64)
#define CNX_ARCH_AARCH64 1
#endif

#if defined(CNNEXT_ISA_X86_64_V4)
#if !defined(CNX_ARCH_X86_64) || !defined(__AVX512F__) || !defined(__AVX2__)
#error "CNNEXT_ISA_X86_64_V4: compile for x86-64 with AVX-512 (-march=x86-64-v4, /arch:AVX512)"
#endif
#define CNX_ISA_NAME "x86-64-v4"
#define CNX_X86_AVX512 1
#define CNX_VEC_REGISTERS 32

#elif defined(CNNEXT_ISA_X86_64_V3)
#if !defined(CNX_ARCH_X86_64) || !defined(__AVX2__)
#error "CNNEXT_ISA_X86_64_V3: compile for x86-64 with AVX2 (-march=x86-64-v3, /arch:AVX2)"
#endif
#if defined(__GNUC__) && !defined(__FMA__)
/* gcc and clang refuse FMA intrinsics without it; MSVC has no such macro. */
#error "CNNEXT_ISA_X86_64_V3: compile with FMA enabled (-march=x86-64-v3)"
#endif
#define CNX_ISA_NAME "x86-64-v3"
#define CNX_X86_AVX2 1
#define CNX_VEC_REGISTERS 16

#elif defined(CNNEXT_ISA_BASELINE)
#define CNX_ISA_NAME "baseline"
#if defined(CNX_ARCH_X86_64)
/* SSE2 is part of x86-64; whatever else the flags allow, the baseline build
   uses only it, so it runs on every x86-64 CPU. */
#define CNX_X86_SSE2 1
#define CNX_VEC_REGISTERS 16
#elif defined(CNX_ARCH_AARCH64)
#if !defined(__ARM_NEON) && !defined(_M_ARM64)
#error "CNNEXT_ISA_BASELINE on arm64: NEON (Advanced SIMD) must be enabled"
#endif
#define CNX_ARM_NEON 1
#define CNX_VEC_REGISTERS 32
#else
#define CNX_VEC_REGISTERS 16
#endif

#else
#error "compile with one of CNNEXT_ISA_BASELINE, CNNEXT_ISA_X86_64_V3, CNNEXT_ISA_X86_64_V4 defined (setup.py does)"
#endif

#endif /* CNNEXT_ISA_H */

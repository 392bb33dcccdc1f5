"""Audit the kernels' C for MSVC, on a machine without MSVC.

Usage: python tools/msvc_audit.py [--verbose]          (exit status 1 on a finding)

The Windows wheels are built by MSVC, which nothing here can run.  What it
would do with the preprocessor is knowable, though: its predefined macros
are documented (learn.microsoft.com, "Predefined macros": _MSC_VER, _WIN32,
_WIN64, _M_X64/_M_AMD64 or _M_ARM64, _OPENMP under /openmp; __AVX__ and
__AVX2__ under /arch:AVX2; those and __AVX512F__, __AVX512CD__,
__AVX512BW__, __AVX512DQ__, __AVX512VL__ under /arch:AVX512; never
__GNUC__, __SSE2__, __FMA__, __aarch64__ or __ARM_NEON).  For each
configuration setup.py builds on Windows (x64 baseline, /arch:AVX2,
/arch:AVX512, and arm64 for completeness), this script

1. runs every kernel header (isa.h, simd.h, simd_fused.h) and every ``cdef extern from *``
   C block of cnnext/_kernels through gcc's preprocessor with only MSVC's
   macros defined (``-undef``, system headers replaced by empty stubs), plus
   the define setup.py gives that build, and checks that each build takes
   its intended branch: the level isa.h names, the simd_*.h implementation
   and register width, the vector register count the dense tiles are sized
   for, compiled_isa()'s answer, the x86-64 CPUID path, the compiler name,
   the fp_contract pragma of the optimiser kernels;
2. checks that no GCC-only construct (``__attribute__``, ``__builtin_*``,
   inline ``asm``, ``typeof``, statement expressions, ``#pragma GCC``,
   ``__int128``) survives preprocessing, i.e. every one is behind a
   ``__GNUC__``/``__clang__`` guard;
3. when clang is installed, compiles simd.h, simd_fused.h and the _platform block for
   x64 in clang's MSVC mode (``--target=x86_64-pc-windows-msvc
   -fms-compatibility``: _MSC_VER, no __GNUC__), so the intrinsics' types
   and the MSVC-only code paths (__cpuidex, _xgetbv) are checked by a
   compiler.  (clang there still defines __FMA__ and friends: its own
   intrinsic headers need them, so step 1 is what checks the macros.)
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "cnnext" / "_kernels"

MSVC_X64 = {"_MSC_VER": "1942", "_MSC_FULL_VER": "194234435", "_WIN32": "1", "_WIN64": "1",
            "_M_X64": "100", "_M_AMD64": "100", "_OPENMP": "200203"}
MSVC_ARM64 = {"_MSC_VER": "1942", "_MSC_FULL_VER": "194234435", "_WIN32": "1", "_WIN64": "1",
              "_M_ARM64": "1", "_OPENMP": "200203"}
AVX2 = {"__AVX__": "1", "__AVX2__": "1"}
AVX512 = {**AVX2, **dict.fromkeys(
    ["__AVX512F__", "__AVX512CD__", "__AVX512BW__", "__AVX512DQ__", "__AVX512VL__"], "1")}

# name -> (predefined macros, setup.py's define, expected values)
CONFIGS = {
    "x64 baseline (/arch:SSE2, the default)": (MSVC_X64, "CNNEXT_ISA_BASELINE", {
        "CNX_ISA_NAME": '"baseline"', "CNX_VEC_BYTES": "16", "CNX_VEC_REGISTERS": "16",
        "simd": "simd_x86_sse2.h", "CNNEXT_COMPILED_ISA": '"baseline"',
        "CNX_DENSE_DOT_ROWS": "2", "CNNEXT_X86_64": "1", "CNNEXT_ARCHITECTURE": '"x86_64"'}),
    "x64 /arch:AVX2": ({**MSVC_X64, **AVX2}, "CNNEXT_ISA_X86_64_V3", {
        "CNX_ISA_NAME": '"x86-64-v3"', "CNX_VEC_BYTES": "32", "CNX_VEC_REGISTERS": "16",
        "simd": "simd_x86_avx2.h", "CNNEXT_COMPILED_ISA": '"x86-64-v3"',
        "CNX_DENSE_DOT_ROWS": "2", "CNNEXT_X86_64": "1", "CNNEXT_ARCHITECTURE": '"x86_64"'}),
    "x64 /arch:AVX512": ({**MSVC_X64, **AVX512}, "CNNEXT_ISA_X86_64_V4", {
        "CNX_ISA_NAME": '"x86-64-v4"', "CNX_VEC_BYTES": "64", "CNX_VEC_REGISTERS": "32",
        "simd": "simd_x86_avx512.h", "CNNEXT_COMPILED_ISA": '"x86-64-v4"',
        "CNX_DENSE_DOT_ROWS": "4", "CNNEXT_X86_64": "1", "CNNEXT_ARCHITECTURE": '"x86_64"'}),
    "arm64 baseline": (MSVC_ARM64, "CNNEXT_ISA_BASELINE", {
        "CNX_ISA_NAME": '"baseline"', "CNX_VEC_REGISTERS": "32",
        "CNNEXT_COMPILED_ISA": '"baseline"', "CNX_DENSE_DOT_ROWS": "4",
        "CNNEXT_X86_64": "0", "CNNEXT_ARCHITECTURE": '"aarch64"'}),
}

GCC_ONLY = [
    (re.compile(r"\b__attribute__\b"), "__attribute__"),
    (re.compile(r"\b__builtin_\w+"), "__builtin_*"),
    (re.compile(r"\b__asm__\b|\b__asm\b|\basm\s*\("), "inline asm"),
    (re.compile(r"\b(__typeof__|typeof)\b"), "typeof"),
    (re.compile(r"\(\s*\{"), "statement expression"),
    (re.compile(r"^\s*#\s*pragma\s+GCC\b", re.M), "#pragma GCC"),
    (re.compile(r"\b__int128\b"), "__int128"),
    (re.compile(r"\b__restrict__\b"), "__restrict__"),
]

VERBATIM = re.compile(r'cdef extern from \*[^:\n]*:\s*\n(\s*)"""\n(.*?)\n\s*"""', re.S)
DEFINE = re.compile(r"^\s*#\s*define\s+((?:CNNEXT|CNX)_\w+)(?!\()\b", re.M)


def c_blocks():
    """(label, C text) for each header and each verbatim C block of the kernels."""
    blocks = [(header, f'#include "{header}"\n') for header in ("simd.h", "simd_fused.h")]
    for path in sorted([*KERNELS.glob("*.pyx"), *KERNELS.glob("*.pxi")]):
        for n, match in enumerate(VERBATIM.finditer(path.read_text())):
            blocks.append((f"{path.name}[{n}]", textwrap.dedent(match.group(2)) + "\n"))
    return blocks


def stub_headers(directory, texts):
    """Empty stand-ins for every <system> header the C includes (only the
    kernels' own headers are preprocessed for real)."""
    for text in texts:
        for name in re.findall(r"#\s*include\s*<([^>]+)>", text):
            stub = directory / name
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.touch()


def preprocess(text, macros, define, tmp):
    defines = {**macros, define: "1"}
    # Every macro the block or a kernel header may define (those this
    # configuration leaves undefined come out unexpanded and are dropped).
    names = set(DEFINE.findall(text))
    for header in KERNELS.glob("*.h"):
        names |= set(DEFINE.findall(header.read_text()))
    probe = "".join(f"cnx_audit_{name} = {name};\n" for name in sorted(names))
    source = tmp / "block.c"
    source.write_text(text + "\n" + probe)
    command = ["gcc", "-E", "-undef", "-nostdinc", f"-I{tmp / 'stubs'}", f"-I{KERNELS}",
               *(f"-D{k}={v}" for k, v in defines.items()), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    return result.returncode, result.stdout, result.stderr


def audit_preprocessor(verbose):
    findings = []
    blocks = c_blocks()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        stub_headers(tmp / "stubs", [text for _, text in blocks] +
                     [p.read_text() for p in KERNELS.glob("*.h")])
        for config, (macros, define, expected) in CONFIGS.items():
            values, pragmas, headers = {}, [], set()
            for label, text in blocks:
                status, out, err = preprocess(text, macros, define, tmp)
                if status != 0:
                    findings.append(f"{config}: {label} does not preprocess: {err.strip()}")
                    continue
                headers |= {Path(h).name for h in re.findall(r'^# \d+ "([^"]+)"', out, re.M)}
                body = "\n".join(line for line in out.splitlines() if not line.startswith("# "))
                for pattern, what in GCC_ONLY:
                    for hit in pattern.finditer(body.split("cnx_audit_")[0]):
                        line = body[:hit.start()].count("\n") + 1
                        findings.append(f"{config}: {label}: {what} outside a __GNUC__ "
                                        f"guard (preprocessed line {line})")
                pragmas += re.findall(r"^\s*#\s*pragma\s+(.*)$", body, re.M)
                for name, value in re.findall(r"cnx_audit_(\w+) = (.*?);$", body, re.M):
                    if value != name:  # defined in this configuration
                        values.setdefault(name, value)
            simd = next((h for h in headers if h.startswith("simd_") and h != "simd_fused.h"), None)
            values["simd"] = simd
            for name, want in expected.items():
                if values.get(name) != want:
                    findings.append(f"{config}: {name} is {values.get(name)!r}, expected {want!r}")
            if not any(p.replace(" ", "") == "fp_contract(off)" for p in pragmas):
                findings.append(f"{config}: no '#pragma fp_contract(off)' for the optimiser "
                                "kernels (MSVC could fuse their multiply-adds)")
            if not values.get("CNNEXT_COMPILER", "").startswith('"msvc '):
                findings.append(f"{config}: compiler name {values.get('CNNEXT_COMPILER')!r}")
            shown = ", ".join(f"{k}={values.get(k)}" for k in ("CNX_ISA_NAME", "simd",
                              "CNX_VEC_BYTES", "CNX_VEC_REGISTERS", "CNX_DENSE_DOT_ROWS",
                              "CNNEXT_COMPILED_ISA", "CNNEXT_ARCHITECTURE"))
            print(f"{config:<40} {shown}")
            if verbose:
                print("    pragmas:", "; ".join(pragmas) or "-")
    return findings


# clang's own intrinsic headers, in MSVC mode, declare an instruction set's
# intrinsics only when its feature macro is defined, so the macros stay on
# here (step 1 checked the branches under MSVC's real macro set).
CLANG_FLAGS = {
    "x64 baseline (/arch:SSE2, the default)": ("CNNEXT_ISA_BASELINE", []),
    "x64 /arch:AVX2": ("CNNEXT_ISA_X86_64_V3", ["-march=x86-64-v3"]),
    "x64 /arch:AVX512": ("CNNEXT_ISA_X86_64_V4", ["-march=x86-64-v4"]),
}

CLANG_STUBS = {
    "string.h": "#include <stddef.h>\nvoid *memcpy(void *, const void *, size_t);\n"
                "void *memset(void *, int, size_t);\n",
    "malloc.h": "#include <stddef.h>\nvoid *_aligned_malloc(size_t, size_t);\n"
                "void _aligned_free(void *);\nvoid *malloc(size_t);\nvoid free(void *);\n",
    "stdlib.h": '#include "malloc.h"\n',
    "setjmp.h": "typedef int jmp_buf[64];\n",
    "stdint.h": "typedef unsigned int uint32_t; typedef unsigned long long uint64_t;\n"
                "typedef long long int64_t; typedef int int32_t;\n",
}


def audit_clang(verbose):
    clang = shutil.which("clang")
    if clang is None:
        print("clang not installed: MSVC-mode compilation skipped")
        return []
    findings = []
    platform_block = next(text for label, text in c_blocks() if label.startswith("_platform"))
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name, text in CLANG_STUBS.items():
            (tmp / name).write_text(text)
        (tmp / "simd_probe.c").write_text('#include "simd.h"\n')
        (tmp / "fused_probe.c").write_text('#include "simd_fused.h"\n')
        (tmp / "platform_probe.c").write_text(platform_block)
        for config, (define, flags) in CLANG_FLAGS.items():
            for probe in ("simd_probe.c", "fused_probe.c", "platform_probe.c"):
                command = [clang, "--target=x86_64-pc-windows-msvc", "-fms-compatibility",
                           "-fms-extensions", "-fsyntax-only", "-Wall", "-Wno-unused-function",
                           f"-D{define}=1", "-D_OPENMP=200203", *flags,
                           f"-I{tmp}", f"-I{KERNELS}", str(tmp / probe)]
                result = subprocess.run(command, capture_output=True, text=True)
                status = "ok" if result.returncode == 0 and not result.stderr else "FAILED"
                print(f"clang MSVC mode, {config:<40} {probe:<18} {status}")
                if status != "ok":
                    findings.append(f"clang MSVC mode {config} {probe}: {result.stderr.strip()}")
                elif verbose:
                    print("   ", " ".join(command))
    return findings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    findings = audit_preprocessor(args.verbose) + audit_clang(args.verbose)
    for finding in findings:
        print("FINDING:", finding)
    print(f"msvc audit: {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

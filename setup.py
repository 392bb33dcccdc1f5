"""Build the compiled kernels of cnnext.

Every ``cnnext/_kernels/*.pyx`` becomes one extension module.  A module whose
name ends in an ISA suffix (``_baseline``, ``_x86_64_v3``, ``_x86_64_v4``) is
one variant of a kernel family; on x86-64 targets it is compiled with that
level's instruction set, elsewhere only the ``_baseline`` variant is built.
``cnnext._dispatch`` picks the best variant the CPU runs at import.

Switches (environment variables, read at build time):

CNNEXT_DEBUG=1        Cython boundscheck/wraparound/initializedcheck on, -O1 -g.
CNNEXT_SANITIZE=address
                      -fsanitize=address,undefined (gcc/clang); implies the
                      debug directives.  Run with libasan preloaded.
CNNEXT_NO_OPENMP=1    build without OpenMP: kernels run on one thread.
CNNEXT_BASELINE_ONLY=1
                      build only the baseline variants (quicker debug builds).
"""

import os
import platform
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
KERNEL_DIR = Path("cnnext", "_kernels")


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


SANITIZE = os.environ.get("CNNEXT_SANITIZE", "").strip()
DEBUG = env_flag("CNNEXT_DEBUG") or bool(SANITIZE)
NO_OPENMP = env_flag("CNNEXT_NO_OPENMP")
BASELINE_ONLY = env_flag("CNNEXT_BASELINE_ONLY")

# Instruction-set levels: module suffix -> flags per compiler family.  Baseline
# is the platform's default target (SSE2 on x86-64, NEON on arm64).
ISA_FLAGS = {
    "_baseline": {"unix": [], "msvc": []},
    "_x86_64_v3": {"unix": ["-march=x86-64-v3"], "msvc": ["/arch:AVX2"]},
    "_x86_64_v4": {
        # gcc's generic tuning keeps AVX-512 code at 256-bit vectors; the
        # kernels are written for full-width registers.
        "unix": ["-march=x86-64-v4", "-mprefer-vector-width=512"],
        "msvc": ["/arch:AVX512"],
    },
}


def target_is_x86_64():
    """True when the wheel being built targets x86-64 (honours macOS ARCHFLAGS)."""
    archflags = os.environ.get("ARCHFLAGS", "")
    if "-arch" in archflags:
        return "x86_64" in archflags and "arm64" not in archflags
    plat = sysconfig.get_platform()
    return any(tag in plat for tag in ("x86_64", "amd64")) or (
        platform.machine().lower() in {"x86_64", "amd64"} and "arm" not in plat
    )


def isa_suffix(module_name):
    for suffix in ISA_FLAGS:
        if module_name.endswith(suffix):
            return suffix
    return None


def kernel_extensions():
    extensions = []
    for pyx in sorted((ROOT / KERNEL_DIR).glob("*.pyx")):
        suffix = isa_suffix(pyx.stem)
        if suffix not in (None, "_baseline") and (BASELINE_ONLY or not target_is_x86_64()):
            continue
        ext = Extension(
            name=".".join((*KERNEL_DIR.parts, pyx.stem)),
            sources=[str(KERNEL_DIR / pyx.name)],
            include_dirs=[np.get_include(), str(KERNEL_DIR)],
            define_macros=[
                ("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION"),
                # Compiled against NumPy 2, loadable by NumPy >= 1.25.
                ("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION"),
                ("CNNEXT_DEBUG_BUILD", "1" if DEBUG else "0"),
            ],
        )
        extensions.append(ext)
    return extensions


OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


class BuildExt(build_ext):
    """Per-compiler optimisation, ISA and OpenMP flags; parallel by default."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self):
        # setuptools skips extensions whose .so is newer than their sources,
        # which would keep a debug build after switching back to release.
        stamp = Path(self.build_temp, "cnnext-build-config.txt")
        wanted = repr((DEBUG, SANITIZE, NO_OPENMP, BASELINE_ONLY))
        if not stamp.exists() or stamp.read_text() != wanted:
            self.force = True
        super().run()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(wanted)

    def openmp_flags(self, family):
        """Return (compile, link) flags for OpenMP, or None when unavailable."""
        if NO_OPENMP:
            return None
        if family == "msvc":
            candidates = [(["/openmp"], [])]
        elif sys.platform == "darwin":
            # Apple clang has no driver flag; libomp comes from Homebrew (see
            # pyproject.toml, which points CPPFLAGS/LDFLAGS at it).
            candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
        else:
            candidates = [(["-fopenmp"], ["-fopenmp"])]
        for compile_flags, link_flags in candidates:
            if self.compiles(OPENMP_PROBE, compile_flags, link_flags):
                return compile_flags, link_flags
        self.warn("OpenMP not found: building single-threaded kernels")
        return None

    def compiles(self, source, compile_flags, link_flags):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp, "probe.c")
            src.write_text(source)
            try:
                objects = self.compiler.compile(
                    [str(src)], output_dir=tmp, extra_postargs=compile_flags
                )
                self.compiler.link_executable(
                    objects, "probe", output_dir=tmp, extra_postargs=link_flags
                )
            except Exception:
                return False
        return True

    def build_extensions(self):
        family = "msvc" if self.compiler.compiler_type == "msvc" else "unix"
        if family == "msvc":
            base = ["/Od", "/Zi"] if DEBUG else ["/O2"]
        else:
            # -g0: Python's CFLAGS carry -g, which would triple the wheel size.
            base = ["-O1", "-g"] if DEBUG else ["-O3", "-g0"]
            # Python's CFLAGS carry -Wall, and Cython's utility code leaves
            # unused static helpers behind in every module.
            base += ["-Wno-unused-function"]
        link = []
        if SANITIZE and family == "unix":
            sanitizers = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                          "-fno-sanitize-recover=undefined"]
            base += sanitizers
            link += sanitizers
        openmp = self.openmp_flags(family)
        self.cnnext_openmp = openmp is not None
        for ext in self.extensions:
            isa = isa_suffix(ext.name) or "_baseline"
            ext.extra_compile_args = base + ISA_FLAGS[isa][family]
            ext.extra_link_args = list(link)
            if openmp is not None:
                ext.extra_compile_args += openmp[0]
                ext.extra_link_args += openmp[1]
        super().build_extensions()


compiler_directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

setup(
    ext_modules=cythonize(
        kernel_extensions(),
        compiler_directives=compiler_directives,
        # A build directory per configuration, so debug and release C files
        # never overwrite each other in the source tree.
        build_dir=str(Path("build", "cython-debug" if DEBUG else "cython")),
        nthreads=os.cpu_count() or 1,
    ),
    cmdclass={"build_ext": BuildExt},
)

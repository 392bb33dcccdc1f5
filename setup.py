"""Build the compiled kernels of cnnext.

Two kinds of extension modules live in ``cnnext/_kernels``:

* plain modules: every ``<name>.pyx`` there becomes ``cnnext._kernels.<name>``,
  compiled for the architecture's baseline;
* kernel families: ``<family>.pxi`` (the source) and ``<family>.pyi`` (its
  interface) become one module per instruction-set level listed for the
  family in ``FAMILIES`` below, ``cnnext._kernels.<family>_<level>``.
  setup.py writes each build's one-line ``.pyx`` (under build/generated/)
  and its ``.pyi`` (into the wheel); none is written by hand.  Each build is
  compiled with its level's flags and with the define ``CNNEXT_ISA_<LEVEL>``
  (isa.h: C code chooses its branches from that define, never from compiler
  feature macros alone, which differ between gcc, clang and MSVC).
  ``cnnext._dispatch`` imports the best build the CPU runs.

Adding a kernel family: write ``<family>.pxi`` (starting with
``include "_compiled_isa.pxi"``; ``from .simd cimport *`` for the vector
layer of simd.h) and ``<family>.pyi``, add a ``FAMILIES`` row naming its
levels, and load it with ``cnnext._dispatch.load("<family>")``.  Tests that
iterate ``_dispatch.built_variants("<family>")`` then run on every build.

Adding an instruction-set level (e.g. an SVE level on arm64): an
``ISA_LEVELS`` row (architecture, flags per compiler); a branch keyed on its
define in cnnext/_kernels/isa.h, and in simd.h if it has its own vector
layer (simd_<isa>.h); its name in the ``FAMILIES`` rows that should have it;
its CPU check in cnnext/_kernels/_platform.pyx and its row in
``cnnext._dispatch.ARCHITECTURE_LEVELS``; the level compiled_isa() reports
in _compiled_isa.pxi.

Switches (environment variables, read at build time):

CNNEXT_DEBUG=1        Cython boundscheck/wraparound/initializedcheck on, -O1 -g.
CNNEXT_SANITIZE=address
                      -fsanitize=address,undefined (gcc/clang); implies the
                      debug directives.  Run with libasan preloaded.
CNNEXT_NO_OPENMP=1    build without OpenMP: kernels run on one thread.
CNNEXT_REQUIRE_OPENMP=1
                      fail the build when the compiler has no OpenMP (the
                      wheel builds set it) instead of building serial kernels
                      with a warning.
CNNEXT_BASELINE_ONLY=1
                      build only the baseline level of each family (quicker
                      debug builds).

Cross-compiling: the target architecture is read from the platform tag
(``_PYTHON_HOST_PLATFORM``, or ``ARCHFLAGS`` on macOS) and checked against
the compiler's own target before anything is compiled.
"""

import os
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
KERNEL_DIR = Path("cnnext", "_kernels")
# The generated per-level .pyx files (relative to ROOT, like every source).
GENERATED_DIR = Path("build", "generated")

# Instruction-set levels: name -> architecture it exists on (None: every
# one), and flags per compiler family.  The baseline is the architecture's
# default target (SSE2 on x86-64, NEON on arm64).
ISA_LEVELS = {
    "baseline": {"arch": None, "unix": [], "msvc": []},
    "x86_64_v3": {"arch": "x86_64", "unix": ["-march=x86-64-v3"], "msvc": ["/arch:AVX2"]},
    "x86_64_v4": {
        "arch": "x86_64",
        # gcc's generic tuning keeps AVX-512 code at 256-bit vectors; the
        # kernels are written for full-width registers.
        "unix": ["-march=x86-64-v4", "-mprefer-vector-width=512"],
        "msvc": ["/arch:AVX512"],
    },
}

# Kernel families x the levels each is built for (on the levels' architectures).
FAMILIES = {
    "_conv": ("baseline", "x86_64_v3", "x86_64_v4"),
    "_dense": ("baseline", "x86_64_v3", "x86_64_v4"),
    "_optim": ("baseline", "x86_64_v3", "x86_64_v4"),
    # AVX-512 did not pay for pooling (memory-bound).
    "_pool": ("baseline", "x86_64_v3"),
    "_norm": ("baseline", "x86_64_v3", "x86_64_v4"),
    "_depthwise": ("baseline", "x86_64_v3", "x86_64_v4"),
    "_compat": ("baseline", "x86_64_v3", "x86_64_v4"),
}


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


SANITIZE = os.environ.get("CNNEXT_SANITIZE", "").strip()
DEBUG = env_flag("CNNEXT_DEBUG") or bool(SANITIZE)
NO_OPENMP = env_flag("CNNEXT_NO_OPENMP")
REQUIRE_OPENMP = env_flag("CNNEXT_REQUIRE_OPENMP")
BASELINE_ONLY = env_flag("CNNEXT_BASELINE_ONLY")


def target_arch():
    """The architecture of the wheel being built: "x86_64", "aarch64" or another
    machine name (from the platform tag, so cross-builds and macOS ARCHFLAGS count)."""
    archflags = os.environ.get("ARCHFLAGS", "")
    if sys.platform == "darwin" and "-arch" in archflags:
        archs = set(archflags.split()) - {"-arch"}
        if archs == {"x86_64"}:
            return "x86_64"
        if archs == {"arm64"}:
            return "aarch64"
        return "universal"  # one file for two architectures: baseline only
    plat = sysconfig.get_platform().lower()
    if plat.endswith(("x86_64", "amd64")):
        return "x86_64"
    if plat.endswith(("aarch64", "arm64")):
        return "aarch64"
    return plat.rsplit("-", 1)[-1]


TARGET_ARCH = target_arch()


def isa_define(level):
    return f"CNNEXT_ISA_{level.upper()}"


def family_builds():
    """(family, level) for every build of a kernel family on this target."""
    builds = []
    for family, levels in FAMILIES.items():
        for level in levels:
            if level not in ISA_LEVELS:
                raise ValueError(f"FAMILIES[{family!r}]: unknown level {level!r}")
            arch = ISA_LEVELS[level]["arch"]
            if arch is None or (arch == TARGET_ARCH and not BASELINE_ONLY):
                builds.append((family, level))
    return builds


def write_if_changed(path, text):
    """Keep the mtime of an unchanged file, so Cython does not redo its module."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generated_pyx(family, level):
    path = GENERATED_DIR / KERNEL_DIR / f"{family}_{level}.pyx"
    write_if_changed(ROOT / path, (
        f"# Generated by setup.py (FAMILIES): the {level} build of {family}.pxi.\n"
        f'include "{family}.pxi"\n'))
    return path


def generated_pyi(family, level):
    interface = (ROOT / KERNEL_DIR / f"{family}.pyi").read_text()
    return (f"# Generated by setup.py: the {level} build of {family}, whose interface\n"
            f"# is {family}.pyi (copied below).\n" + interface)


def kernel_extensions():
    # The C headers: a change to one recompiles the modules (Cython's C
    # output does not change, so setuptools would not notice otherwise).
    headers = sorted(str(KERNEL_DIR / h.name) for h in (ROOT / KERNEL_DIR).glob("*.h"))

    def extension(name, source, level):
        ext = Extension(
            name=".".join((*KERNEL_DIR.parts, name)),
            sources=[str(source)],
            depends=headers,
            include_dirs=[str(KERNEL_DIR)],
            define_macros=[
                ("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION"),
                # Compiled against NumPy 2, loadable by NumPy >= 1.25.
                ("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION"),
                ("CNNEXT_DEBUG_BUILD", "1" if DEBUG else "0"),
                ("CNNEXT_OPENMP_REQUESTED", "0" if NO_OPENMP else "1"),
                (isa_define(level), "1"),
            ],
        )
        ext.cnnext_level = level
        return ext

    extensions = [extension(pyx.stem, KERNEL_DIR / pyx.name, "baseline")
                  for pyx in sorted((ROOT / KERNEL_DIR).glob("*.pyx"))]
    extensions += [extension(f"{family}_{level}", generated_pyx(family, level), level)
                   for family, level in family_builds()]
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

# The compiler's own target, to catch a cross-build whose platform tag and
# compiler disagree (the x86-64 levels' intrinsics would not even compile).
ARCH_PROBES = {
    "x86_64": "defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)",
    "aarch64": "defined(__aarch64__) || defined(_M_ARM64)",
}


def loud(lines):
    """A warning that stands out in a build log."""
    bar = "=" * 76
    return "\n".join(["", bar, *(f"cnnext: {line}" for line in lines), bar, ""])


class BuildExt(build_ext):
    """Per-compiler optimisation, ISA and OpenMP flags; Cython; parallel by default."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self):
        # setuptools skips extensions whose .so is newer than their sources,
        # which would keep a debug build after switching back to release.
        stamp = Path(self.build_temp, "cnnext-build-config.txt")
        wanted = repr((DEBUG, SANITIZE, NO_OPENMP, BASELINE_ONLY, TARGET_ARCH))
        if not stamp.exists() or stamp.read_text() != wanted:
            self.force = True
        # The compiler checks first: they take a second, Cython a minute.
        self.cnnext_checks()
        cythonize_kernels(self.extensions)
        super().run()
        self.drop_stale_modules()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(wanted)

    def cnnext_checks(self):
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler

        compiler = new_compiler(compiler=self.compiler, force=self.force)
        customize_compiler(compiler)
        self.cnnext_family = "msvc" if compiler.compiler_type == "msvc" else "unix"
        probe = ARCH_PROBES.get(TARGET_ARCH)
        if probe and not self.compiles(compiler, f"#if !({probe})\n#error\n#endif\n", [], None):
            raise SystemExit(
                f"cnnext: the platform tag ({sysconfig.get_platform()}) says {TARGET_ARCH}, "
                "but the C compiler does not target it (cross-compiling: set "
                "_PYTHON_HOST_PLATFORM and the compiler, CC and LDSHARED, together)")
        self.cnnext_openmp = self.openmp_flags(compiler)

    def openmp_flags(self, compiler):
        """Return (compile, link) flags for OpenMP, or None when unavailable."""
        if NO_OPENMP:
            return None
        if self.cnnext_family == "msvc":
            candidates = [(["/openmp"], [])]
        elif sys.platform == "darwin":
            # Apple clang has no driver flag; libomp comes from Homebrew (see
            # pyproject.toml, which points CPPFLAGS/LDFLAGS at it).
            candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
        else:
            candidates = [(["-fopenmp"], ["-fopenmp"])]
        for compile_flags, link_flags in candidates:
            if self.compiles(compiler, OPENMP_PROBE, compile_flags, link_flags):
                return compile_flags, link_flags
        tried = " or ".join(" ".join(flags) for flags, _ in candidates)
        message = [
            f"OpenMP NOT FOUND: the C compiler ({compiler.compiler_type}, "
            f"{' '.join(getattr(compiler, 'compiler_so', None) or ['?'])}) cannot "
            f"compile and link an OpenMP program with {tried}.",
            "On macOS install libomp (brew install libomp) and point CPPFLAGS/LDFLAGS "
            "at it; with clang on Linux install libomp-dev.",
        ]
        if REQUIRE_OPENMP:
            raise SystemExit(loud([*message, "CNNEXT_REQUIRE_OPENMP=1: stopping the build."]))
        message.append("Building SERIAL kernels: cnnext will run on one thread "
                       "(cnnext.show_config() says so too; CNNEXT_REQUIRE_OPENMP=1 "
                       "makes this an error).")
        print(loud(message), file=sys.stderr, flush=True)
        self.warn(" ".join(message))
        return None

    @staticmethod
    def compiles(compiler, source, compile_flags, link_flags):
        """True when ``source`` compiles (and links, unless link_flags is None)."""
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp, "probe.c")
            src.write_text(source)
            try:
                objects = compiler.compile(
                    [str(src)], output_dir=tmp, extra_postargs=compile_flags
                )
                if link_flags is not None:
                    compiler.link_executable(
                        objects, "probe", output_dir=tmp, extra_postargs=link_flags
                    )
            except Exception:
                return False
        return True

    def build_extensions(self):
        family = self.cnnext_family
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
        import numpy as np

        openmp = self.cnnext_openmp
        for ext in self.extensions:
            level = ext.cnnext_level
            ext.include_dirs.append(np.get_include())
            ext.extra_compile_args = base + ISA_LEVELS[level][family]
            ext.extra_link_args = list(link)
            if openmp is not None:
                ext.extra_compile_args += openmp[0]
                ext.extra_link_args += openmp[1]
        super().build_extensions()

    def drop_stale_modules(self):
        """Delete kernel modules in build_lib that this configuration does not
        build (another level set, a removed family), which install would copy."""
        wanted = {self.get_ext_filename(ext.name) for ext in self.extensions}
        kernels = Path(self.build_lib, KERNEL_DIR)
        suffixes = (".so", ".pyd")
        for built in kernels.glob("*"):
            rel = str(built.relative_to(self.build_lib))
            if built.name.endswith(suffixes) and rel not in wanted:
                built.unlink()


class BuildPy(build_py):
    """Write each family build's .pyi; the family's own interface file is not a module."""

    def run(self):
        super().run()
        kernels = Path(self.build_lib, KERNEL_DIR)
        built = family_builds()
        for family in FAMILIES:
            stale = kernels / f"{family}.pyi"
            if stale.exists():
                stale.unlink()
        for family in FAMILIES:
            for level in ISA_LEVELS:
                stub = kernels / f"{family}_{level}.pyi"
                if (family, level) not in built and stub.exists():
                    stub.unlink()
        for family, level in built:
            write_if_changed(kernels / f"{family}_{level}.pyi", generated_pyi(family, level))


compiler_directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}


def cythonize_kernels(extensions):
    """Turn the extensions' .pyx sources into C, in place (build_ext has
    already annotated these Extension objects)."""
    from Cython.Build import cythonize

    translated = cythonize(
        extensions,
        compiler_directives=compiler_directives,
        # The generated .pyx files include their family's .pxi from
        # KERNEL_DIR, and cimport the package's .pxd files from ".".
        include_path=[".", str(KERNEL_DIR)],
        # A build directory per configuration, so debug and release C files
        # never overwrite each other in the source tree.
        build_dir=str(Path("build", "cython-debug" if DEBUG else "cython")),
        nthreads=os.cpu_count() or 1,
    )
    sources = {ext.name: ext.sources for ext in translated}
    for ext in extensions:
        ext.sources = sources[ext.name]


setup(
    ext_modules=kernel_extensions(),
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)

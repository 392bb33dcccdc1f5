"""Choose, once per process, which instruction-set build of a kernel family to run.

A *family* (``_conv``, ...) is compiled by setup.py once per instruction-set
level of the target architecture into ``cnnext._kernels.<family><suffix>``
(setup.py's FAMILIES table).  The levels of each architecture, highest first,
are in ``ARCHITECTURE_LEVELS``: x86-64 has the baseline (SSE2), x86-64-v3
(AVX2 + FMA) and x86-64-v4 (AVX-512); arm64 has its baseline (NEON), and an
SVE level would go above it.  ``load(family)`` imports the highest level that
this CPU runs and that was built.  ``CNNEXT_ISA=<level>`` lowers the choice,
e.g. to compare results or to work around a CPU bug; asking for a level the
CPU cannot run, or one of another architecture, warns and is ignored, since
running it would crash.
"""

import importlib
import os
import warnings

import numpy as np

from ._kernels import _platform

# Per architecture (_platform.architecture()), highest first:
#   level name -> (module suffix, CPU features it needs, what it is)
ARCHITECTURE_LEVELS = {
    "x86_64": {
        "x86-64-v4": ("_x86_64_v4", _platform.V4, "AVX-512"),
        "x86-64-v3": ("_x86_64_v3", _platform.V3, "AVX2 + FMA"),
        "baseline": ("_baseline", (), "SSE2"),
    },
    "aarch64": {
        # NEON is part of every arm64 CPU.  An SVE level would go first:
        # "aarch64-sve": ("_aarch64_sve", ("sve",), "SVE").
        "baseline": ("_baseline", (), "NEON"),
    },
}
# Any other architecture: the compiler's own code for it.
OTHER_LEVELS = {"baseline": ("_baseline", (), "the compiler's generic vectors")}
ENV_VAR = "CNNEXT_ISA"

ARCHITECTURE = _platform.architecture()


def levels(architecture=None):
    """Level name -> (module suffix, features needed, description) of
    ``architecture`` (this build's by default), highest first."""
    return ARCHITECTURE_LEVELS.get(architecture or ARCHITECTURE, OTHER_LEVELS)


# This architecture's levels (the table the rest of the package uses).
ISA_LEVELS = levels()


def supported_isas(architecture=None, features=None):
    """Level names this CPU runs, highest first (always ends with 'baseline').

    ``architecture`` and ``features`` (a dict of feature -> bool) default to
    this machine's; tests pass others to check another architecture's table.
    """
    if features is None:
        features = _platform.cpu_features()
    return [name for name, (_, needed, _) in levels(architecture).items()
            if all(features.get(feature, False) for feature in needed)]


def requested_isas(environ=os.environ, architecture=None, supported=None):
    """The levels to try, highest first, after applying ``CNNEXT_ISA``."""
    architecture = architecture or ARCHITECTURE
    if supported is None:
        supported = supported_isas() if architecture == ARCHITECTURE else \
            supported_isas(architecture)
    request = environ.get(ENV_VAR, "").strip().lower()
    if not request:
        return supported
    if request not in levels(architecture):
        elsewhere = [arch for arch, table in ARCHITECTURE_LEVELS.items() if request in table]
        if elsewhere:
            message = (f"{ENV_VAR}={request!r} is a level of {' and '.join(elsewhere)}, "
                       f"not of this {architecture} build; using {supported[0]!r}")
        else:
            message = (f"{ENV_VAR}={request!r} is not one of "
                       f"{', '.join(levels(architecture))}; ignoring it")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return supported
    if request not in supported:
        warnings.warn(
            f"{ENV_VAR}={request!r} needs an instruction set this CPU lacks; "
            f"using {supported[0]!r}",
            RuntimeWarning,
            stacklevel=2,
        )
        return supported
    return supported[supported.index(request):]


_loaded = {}


def module_name(family, level):
    """The module of ``family``'s build for ``level`` on this architecture."""
    return f"cnnext._kernels.{family}{ISA_LEVELS[level][0]}"


def load(family):
    """Import and return the best available build of kernel family ``family``."""
    if family in _loaded:
        return _loaded[family][1]
    errors = []
    for name in requested_isas():
        try:
            module = importlib.import_module(module_name(family, name))
        except ModuleNotFoundError as exc:
            # Not built for this platform or build (CNNEXT_BASELINE_ONLY=1).
            errors.append(f"{module_name(family, name)}: {exc}")
            continue
        _loaded[family] = (name, module)
        return module
    raise ImportError(
        f"no compiled build of cnnext kernel family {family!r} could be imported "
        f"({'; '.join(errors)}). If you are running from a source checkout, "
        "install the package (pip install .) and run from outside the checkout."
    )


def by_dtype(kernel):
    """float32/float64 dtype -> the compiled specialisation of the fused-type
    ``kernel`` (calling one directly skips Cython's dispatch on the argument
    types, a fraction of a microsecond that per-image training pays per call)."""
    return {np.dtype(np.float32): kernel["float"], np.dtype(np.float64): kernel["double"]}


def specialisations(module, names):
    """dtype -> tuple of ``by_dtype`` specialisations of the kernels ``names``
    of ``module``, in that order."""
    per_kernel = [by_dtype(getattr(module, name)) for name in names]
    return {dtype: tuple(kernel[dtype] for kernel in per_kernel) for dtype in per_kernel[0]}


def built_variants(family):
    """ISA level name -> module, for every build of ``family`` that this CPU runs
    and that was built, highest first (tests run each one)."""
    modules = {}
    for name in supported_isas():
        try:
            modules[name] = importlib.import_module(module_name(family, name))
        except ModuleNotFoundError:  # not built here (CNNEXT_BASELINE_ONLY=1, another level set)
            continue
    return modules


def loaded_isas():
    """Family -> ISA level name, for the families loaded so far."""
    return {family: name for family, (name, _) in _loaded.items()}

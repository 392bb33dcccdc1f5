"""Choose, once per process, which instruction-set build of a kernel family to run.

A *family* (``_conv``, ...) is compiled once per ISA level by setup.py into
``cnnext._kernels.<family>_<suffix>``.  ``load(family)`` imports the highest
level that this CPU runs and that was built (non-x86 builds have only the
baseline).  ``CNNEXT_ISA=baseline|x86-64-v3|x86-64-v4`` lowers the choice,
e.g. to compare results or to work around a CPU bug; asking for a level the
CPU cannot run warns and is ignored, since running it would crash.
"""

import importlib
import os
import warnings

import numpy as np

from ._kernels import _platform

# Highest first.  name -> (module suffix, minimum x86-64 level)
ISA_LEVELS = {
    "x86-64-v4": ("_x86_64_v4", 4),
    "x86-64-v3": ("_x86_64_v3", 3),
    "baseline": ("_baseline", 0),
}
ENV_VAR = "CNNEXT_ISA"


def supported_isas():
    """ISA level names this CPU runs, highest first (always ends with 'baseline')."""
    level = _platform.x86_64_level()
    return [name for name, (_, needed) in ISA_LEVELS.items() if level >= needed]


def requested_isas(environ=os.environ):
    """The levels to try, highest first, after applying ``CNNEXT_ISA``."""
    supported = supported_isas()
    request = environ.get(ENV_VAR, "").strip().lower()
    if not request:
        return supported
    if request not in ISA_LEVELS:
        warnings.warn(
            f"{ENV_VAR}={request!r} is not one of {', '.join(ISA_LEVELS)}; ignoring it",
            RuntimeWarning,
            stacklevel=2,
        )
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


def load(family):
    """Import and return the best available build of kernel family ``family``."""
    if family in _loaded:
        return _loaded[family][1]
    errors = []
    for name in requested_isas():
        module_name = f"cnnext._kernels.{family}{ISA_LEVELS[name][0]}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Not built for this platform or build (CNNEXT_BASELINE_ONLY=1).
            errors.append(f"{module_name}: {exc}")
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
            modules[name] = importlib.import_module(
                f"cnnext._kernels.{family}{ISA_LEVELS[name][0]}")
        except ModuleNotFoundError:  # not built here (CNNEXT_BASELINE_ONLY=1, non-x86)
            continue
    return modules


def loaded_isas():
    """Family -> ISA level name, for the families loaded so far."""
    return {family: name for family, (name, _) in _loaded.items()}

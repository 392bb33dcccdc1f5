"""Threads and build configuration: ``show_config``, ``get/set_num_threads``."""

import pkgutil
import platform
import sys
from typing import Any, Literal

import numpy as np

from . import _dispatch, _kernels
from ._kernels import _openmp_helpers, _platform
from ._version import __version__

get_num_threads = _openmp_helpers.get_num_threads
set_num_threads = _openmp_helpers.set_num_threads
# OMP_NUM_THREADS is checked once, at import (the kernels check every call).
_openmp_helpers.check_environment()


def kernel_families():
    """Names of the ISA-dispatched kernel families in this build (e.g. "_conv")."""
    suffix = _dispatch.ISA_LEVELS["baseline"][0]
    return sorted(
        info.name[: -len(suffix)]
        for info in pkgutil.iter_modules(_kernels.__path__)
        if info.name.endswith(suffix)
    )


OPENMP_MISSING = ("OpenMP was requested at build time but the compiler had none: "
                  "every kernel runs on ONE thread (see the build log; with clang "
                  "install libomp, then rebuild)")


def openmp_config() -> dict[str, Any]:
    enabled = _openmp_helpers.openmp_version() > 0
    requested = _openmp_helpers.openmp_requested()
    info: dict[str, Any] = {
        "enabled": enabled,
        "requested": requested,
        "version": _openmp_helpers.openmp_version(),
        "threads": get_num_threads(),
        "processors": _openmp_helpers.num_procs(),
    }
    if requested and not enabled:
        info["WARNING"] = OPENMP_MISSING
    return info


def config() -> dict[str, dict[str, Any]]:
    """config()

    The configuration ``show_config`` prints, as a dict of dicts.
    """
    features = _platform.cpu_features()
    return {
        "cnnext": {"version": __version__, **_platform.build_info()},
        "openmp": openmp_config(),
        "simd": {
            "architecture": _dispatch.ARCHITECTURE,
            "levels": {name: description
                       for name, (_, _, description) in _dispatch.ISA_LEVELS.items()},
            "cpu_features": sorted(name for name, present in features.items() if present),
            "supported": _dispatch.supported_isas(),
            "in_use": {family: _isa_of(family) for family in kernel_families()},
        },
        "python": {"version": sys.version.split()[0], "platform": platform.platform()},
        "numpy": {"version": np.__version__},
    }


def _isa_of(family):
    _dispatch.load(family)
    return _dispatch.loaded_isas()[family]


def show_config(mode: Literal["stdout", "dicts"] = "stdout") -> dict[str, dict[str, Any]] | None:
    """show_config(mode="stdout")

    Print (or return) how cnnext was built and how it runs here: version,
    architecture and compiler, OpenMP on/off (with a warning when it was
    requested but missing) and thread count, the instruction-set levels of
    this architecture and those the CPU runs, its vector features, the build
    chosen for each kernel family, NumPy's version.

    Parameters
    ----------
    mode : {"stdout", "dicts"}
        "stdout" prints a readable report; "dicts" returns it as a dict.

    Examples
    --------
    >>> import cnnext
    >>> info = cnnext.show_config("dicts")
    >>> sorted(info)
    ['cnnext', 'numpy', 'openmp', 'python', 'simd']
    >>> info["cnnext"]["version"] == cnnext.__version__
    True
    >>> cnnext.show_config()                             # doctest: +ELLIPSIS
    cnnext:
      version ...
    """
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"show_config: mode must be 'stdout' or 'dicts', got {mode!r}")
    info = config()
    if mode == "dicts":
        return info
    for section, values in info.items():
        print(f"{section}:")
        for key, value in values.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, list):
                value = " ".join(str(v) for v in value) or "-"
            print(f"  {key:<18} {value}")
    return None

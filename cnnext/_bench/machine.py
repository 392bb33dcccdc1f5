"""What the benchmark ran on: CPU, cores, versions, BLAS, cnnext's build."""

import datetime
import os
import platform
import sys

import numpy as np

from .impls import Unavailable
from .timing import all_cores


def cpu():
    """``cnnext._cpuinfo.identify()`` plus ``kind``, the title its tables are kept under."""
    from .. import _cpuinfo

    return {**_cpuinfo.identify(), "kind": _cpuinfo.kind()}


def blas():
    """The BLAS libraries NumPy (and anything else loaded) uses, per threadpoolctl."""
    try:
        import threadpoolctl
    except ImportError:
        return "unknown (threadpoolctl not installed: BLAS threads are not pinned)"
    return [
        {key: info.get(key) for key in ("internal_api", "version", "architecture", "num_threads")}
        for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"
    ]


def cnnext_build():
    try:
        import cnnext

        return cnnext.show_config("dicts")
    except Exception as exc:  # a broken install is reported, not raised
        return f"unavailable: {type(exc).__name__}: {exc}"


def tuning():
    """cnnext's plan choices: the tuning mode and cache (cnnext._tuning), or why unknown."""
    try:
        from .. import _tuning

        return {"mode": _tuning.mode(), "cache": str(_tuning.cache_dir())}
    except Exception as exc:  # a bad CNNEXT_TUNE is reported, not raised here
        return {"mode": f"unavailable: {type(exc).__name__}: {exc}", "cache": None}


def load_average():
    """The 1-minute load average (other processes competing for the cores), or None."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Windows
        return None


def cpu_seconds():
    """(CPU seconds every process has used, CPU seconds this process has used), or None.

    From /proc/stat (Linux only): user, nice, system, irq, softirq and steal
    time, which includes what the hypervisor gave to other machines.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if fields[:1] != ["cpu"] or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    own = os.times()
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return busy, own.user + own.system


def other_cores(before, after, seconds):
    """How many cores other processes kept busy on average between two ``cpu_seconds()``."""
    if before is None or after is None or seconds <= 0:
        return None
    busy, own = after[0] - before[0], after[1] - before[1]
    return max(busy - own, 0.0) / seconds


def version(impl):
    try:
        return impl.version()
    except Unavailable as exc:
        return exc.status


def describe(impls):
    """A JSON-ready description of this machine and of the implementations' versions.

    Asking each implementation for its version imports its library now, so
    libraries (torch) are loaded before any thread count is pinned.
    """
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu()["name"],
        "cpu_info": cpu(),
        "cores": os.cpu_count() or all_cores(),
        "cores_usable": all_cores(),
        "load_average": {"start": load_average()},
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "blas": blas(),
        "implementations": {impl.name: version(impl) for impl in impls},
        "cnnext_build": cnnext_build(),
        "cnnext_tuning": tuning(),
    }

"""Shared pytest configuration: hypothesis profiles, the installed-package guard, torch.

There is no tests/__init__.py: pytest puts only tests/ on sys.path, so
``import cnnext`` finds the installed package, never the checkout.  Child
interpreters started with ``-c`` or ``-m`` get ``-P`` for the same reason:
without it they put the current directory first on sys.path, and from the
checkout's root that is the uncompiled source tree.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# ci: the default, enough examples to matter in a few minutes on 2 cores;
# nightly: HYPOTHESIS_PROFILE=nightly for long runs; dev: quick local loops.
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "nightly", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=15, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # Plans measured while testing (cnnext._tuning) go to a cache of this session's,
    # never the user's; child processes inherit it.
    if "CNNEXT_TUNE_DIR" not in os.environ:
        config._cnnext_tune_dir = tempfile.mkdtemp(prefix="cnnext-tune-")
        os.environ["CNNEXT_TUNE_DIR"] = config._cnnext_tune_dir

    import cnnext

    source_package = Path(str(config.rootpath), "cnnext").resolve()
    if Path(cnnext.__file__).resolve().parent == source_package:
        raise pytest.UsageError(
            f"cnnext was imported from the source checkout ({source_package}); the tests "
            "must run against the installed package: pip install . and run pytest with "
            "the checkout off sys.path (not `python -m pytest` from the checkout root)."
        )


def pytest_unconfigure(config):
    directory = getattr(config, "_cnnext_tune_dir", None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop("CNNEXT_TUNE_DIR", None)


def pytest_report_header(config):
    import cnnext
    from cnnext import _config

    info = _config.config()
    isas = ", ".join(f"{k}={v}" for k, v in info["simd"]["in_use"].items())
    return [
        f"cnnext {cnnext.__version__} from {Path(cnnext.__file__).parent}",
        f"cnnext build: {info['cnnext']['compiler']}, debug={info['cnnext']['debug']}, "
        f"asan={info['cnnext']['address_sanitizer']}, openmp={info['openmp']['version']}, "
        f"threads={info['openmp']['threads']}, isa: {isas}",
    ]


@pytest.fixture
def torch():
    """PyTorch on one thread, or skip the test when it is not installed."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(previous)


@pytest.fixture
def num_threads():
    """Call ``num_threads(n)`` to set cnnext's thread count for this test only."""
    import cnnext

    cnnext.set_num_threads(None)
    yield cnnext.set_num_threads
    cnnext.set_num_threads(None)

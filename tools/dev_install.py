"""Build and install the working tree into a virtual environment, from a private copy.

Usage: python tools/dev_install.py VENV [--debug] [--no-openmp] [--baseline-only]

Several people (or agents) can build the same checkout at once without sharing
``build/``: the tree is mirrored into ``VENV/.cnnext-src`` (changed files only,
so Cython and setuptools rebuild only what changed) and installed
from there with the build switches of setup.py.  The build requirements of
pyproject.toml are installed into VENV first (a Python 3.11 venv starts with
a setuptools too old for the project's metadata).
"""

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", ".asv"}
SKIP_SUFFIXES = {".so", ".pyd", ".c", ".o"}


def mirror(src: Path, dst: Path) -> None:
    wanted = set()
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        rel = Path(dirpath).relative_to(src)
        for name in filenames:
            if Path(name).suffix in SKIP_SUFFIXES:
                continue
            s, d = Path(dirpath, name), dst / rel / name
            wanted.add(d)
            if d.exists() and filecmp.cmp(s, d, shallow=False):
                continue
            # A fresh mtime: newer than the build outputs of the old copy, so
            # Cython and build_py redo exactly what this file feeds.
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s, d)
    for dirpath, dirnames, filenames in os.walk(dst):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            p = Path(dirpath, name)
            if p.suffix not in SKIP_SUFFIXES and p not in wanted:
                p.unlink()


def drop_stale_outputs(stage: Path) -> None:
    """Delete the built Python files: copying them again is cheap, and build_py
    trusts mtimes.  (setup.py itself drops kernel modules it no longer builds.)"""
    for built in stage.glob("build/lib*/**/*.py*"):
        built.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--debug", action="store_true", help="CNNEXT_DEBUG=1")
    parser.add_argument("--sanitize", action="store_true", help="CNNEXT_SANITIZE=address")
    parser.add_argument("--no-openmp", action="store_true", help="CNNEXT_NO_OPENMP=1")
    parser.add_argument("--baseline-only", action="store_true", help="CNNEXT_BASELINE_ONLY=1")
    args = parser.parse_args()
    python = args.venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        parser.error(f"{args.venv} is not a virtual environment (no {python})")
    stage = args.venv / ".cnnext-src"
    mirror(ROOT, stage)
    drop_stale_outputs(stage)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pip = [str(python), "-m", "pip", "install", "-q"]
    if subprocess.call([*pip, *requires]) != 0:
        return 1
    switches = [
        (args.debug, "CNNEXT_DEBUG", "1"),
        (args.sanitize, "CNNEXT_SANITIZE", "address"),
        (args.no_openmp, "CNNEXT_NO_OPENMP", "1"),
        (args.baseline_only, "CNNEXT_BASELINE_ONLY", "1"),
    ]
    env = dict(os.environ)
    env.update({var: value for flag, var, value in switches if flag})
    return subprocess.call([*pip, "--no-build-isolation", "--no-deps", str(stage)], env=env)


if __name__ == "__main__":
    sys.exit(main())

"""``cnnext bench``: cnnext beside PyTorch, ONNX Runtime, NumPy and the notebook's loops.

Shipped with the package so an installed wheel can measure itself.  The
command line (``cnnext bench`` in ``cnnext.cli``, or ``python -m
cnnext._bench``) calls ``add_arguments`` and ``run`` below.

Layers of this package, each calling only the ones below it:

=============== ==============================================================
__init__        command line: arguments, case selection, output files, exit code
suite           verify each implementation against the reference, then time it
report          text table, JSON, PNG chart
impl_*          the implementations (cnnext, torch, onnxruntime, numpy, notebook)
                behind one protocol (impls.py)
cases, nets     the named cases with their inputs, FLOP/byte counts and
                float64 references; the networks of the training steps
timing,         warm-up/repeats/median/spread and thread pinning; the
roofline,       measured SGEMM/DGEMM peak; the environment timing runs in
environment     (idle threads of every library spin briefly, then sleep)
=============== ==============================================================
"""

import argparse
import sys

from . import environment, report, suite
from .cases import CASES, DTYPES, QUICK, UnknownCaseError, select
from .impls import IMPLEMENTATIONS
from .timing import all_cores

__all__ = ["add_arguments", "main", "run"]

# Timing settings of the full and the quick suite.
FULL = {"repeats": 11, "budget_seconds": 0.6, "min_repeat_seconds": 0.02}
QUICK_TIMING = {"repeats": 5, "budget_seconds": 0.05, "min_repeat_seconds": 0.005,
                "gemm_sizes": (512, 1024)}


class UsageError(ValueError):
    pass


def add_arguments(parser):
    """add_arguments(parser)

    Add the ``bench`` options to the argparse ``parser`` and return it.
    """
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help="case names or globs, e.g. conv2d.forward.mid 'train.*' "
                             "(default: all cases, or the quick set with --quick); see --list")
    parser.add_argument("--quick", action="store_true",
                        help=f"the quick suite: {len(QUICK)} cases covering every family, "
                             "fewer repeats (under a minute)")
    parser.add_argument("--smoke", action="store_true",
                        help="run and verify every implementation once, time nothing "
                             "(default threads: 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--png", metavar="PATH",
                        help="also draw cnnext's speed-up over PyTorch (needs matplotlib)")
    parser.add_argument("--impls", metavar="LIST", default=",".join(IMPLEMENTATIONS),
                        help="comma-separated implementations (default: %(default)s)")
    parser.add_argument("--dtypes", metavar="LIST", default=",".join(DTYPES),
                        help="comma-separated dtypes (default: %(default)s)")
    parser.add_argument("--threads", metavar="LIST",
                        help="comma-separated thread counts, 'all' = every core "
                             "(default: 1,all; 1 with --smoke)")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help=f"timed repeats per measurement (default: {FULL['repeats']}, "
                             f"{QUICK_TIMING['repeats']} with --quick)")
    parser.add_argument("--keep-env", action="store_true",
                        help="time in this environment as it is: without GOMP_SPINCOUNT, "
                             "KMP_BLOCKTIME and OPENBLAS_THREAD_TIMEOUT, the libraries' idle "
                             "threads spin as long as their defaults say; without "
                             "MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_, glibc returns "
                             "freed memory to the system (see benchmarks/README.md)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser


def _names(option, text, known):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UsageError(f"{option}: unknown {', '.join(map(repr, unknown)) or 'empty list'} "
                         f"(choose from {', '.join(known)})")
    return names


def _threads(text):
    counts = []
    for part in text.split(","):
        part = part.strip()
        count = all_cores() if part == "all" else int(part) if part.isdigit() else 0
        if count < 1:
            raise UsageError(f"--threads: {part!r} is not a positive thread count or 'all'")
        if count not in counts:
            counts.append(count)
    return counts


def _list_cases():
    width = max(map(len, CASES))
    for name, case in CASES.items():
        quick = "quick" if name in QUICK else "     "
        print(f"{name:<{width}}  {quick}  {case.description}")


def command_line(args):
    """command_line(args)

    The options ``args`` (parsed by ``add_arguments``) as a command line again.
    """
    argv = ["--impls", args.impls, "--dtypes", args.dtypes]
    for flag in ("quick", "smoke", "keep_env", "list"):
        argv += [f"--{flag.replace('_', '-')}"] * getattr(args, flag)
    for option in ("json", "png", "threads", "repeats"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option}", str(value)]
    return [*argv, "--", *args.cases]


def run(args):
    """run(args)

    Run the benchmark suite with the options ``add_arguments`` parsed; print the
    table and write the requested files.  Returns the exit status: 0, 1 when an
    implementation did not match the reference (or cnnext could not run), 2 for
    a bad option or an unknown case name (one line on standard error).

    Timing runs in a child process when the variables that bound the spinning
    of idle threads and keep freed memory for reuse (``environment.wanted()``)
    are not all set yet (unless ``--keep-env``).
    """
    if args.list:
        _list_cases()
        return 0
    try:
        cases = select(args.cases, quick=args.quick)
        impls = [IMPLEMENTATIONS[name] for name in _names("--impls", args.impls,
                                                          list(IMPLEMENTATIONS))]
        dtypes = _names("--dtypes", args.dtypes, DTYPES)
        threads = _threads(args.threads or ("1" if args.smoke else "1,all"))
        timing = dict(QUICK_TIMING if args.quick else FULL)
        if args.repeats is not None:
            if args.repeats < 1:
                raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
            timing["repeats"] = args.repeats
    except (UnknownCaseError, UsageError) as exc:
        print(f"cnnext bench: error: {exc}", file=sys.stderr)
        return 2

    if not (args.smoke or args.keep_env) and environment.missing():
        # The thread runtimes read their settings when they load: too late here.
        return environment.rerun(command_line(args))
    settings = suite.Settings(**timing, smoke=args.smoke)
    doc = suite.run(cases, impls, dtypes, threads, settings)
    doc["settings"]["mode"] = "quick" if args.quick else "full"
    print(report.format_report(doc))
    if args.json:
        report.write_json(doc, args.json)
    if args.png:
        problem = report.write_png(doc, args.png)
        if problem:
            print(f"cnnext bench: {problem}", file=sys.stderr)
    failed = suite.failures(doc)
    for line in failed:
        print(f"cnnext bench: FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None):
    """main(argv=None)

    ``python -m cnnext._bench``: parse ``argv`` (default ``sys.argv[1:]``) and ``run``.
    """
    parser = argparse.ArgumentParser(prog="python -m cnnext._bench",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))

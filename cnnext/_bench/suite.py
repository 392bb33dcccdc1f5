"""Run the cases: verify every implementation against the reference, then time it.

For each case and dtype the inputs and the float64 reference are made once;
then, for each thread count (every library pinned to it), each
implementation that supports the case is bound, run once and checked, and
timed only when it matches.  Everything ends up in one JSON-ready document:
the machine, the measured GEMM roofline, the cases and one result row per
(case, dtype, threads, implementation), with the derived rates and ratios
and how many cores other processes kept busy while the case was timed.
"""

import io
import time
from dataclasses import asdict, dataclass

import numpy as np

from .. import _progress
from . import environment, machine, roofline
from .cases import CASES
from .impls import Unavailable
from .timing import clock_for, measure, pinned_threads

SCHEMA_VERSION = 2

# Largest error allowed, relative to the largest reference value (or to the
# scale a check names): loose enough for float32 accumulation order over
# ~10^5 terms, far below what a wrong index or stride produces.
TOLERANCE = {"float32": 1e-3, "float64": 1e-9}

# Implementations whose failure to run is a failure of the suite: the
# library being benchmarked.  The others (torch, onnxruntime, the notebook's
# loops) may be missing and are reported as such.
SUBJECTS = ("cnnext", "cnnext.compat")


@dataclass
class Settings:
    repeats: int = 11
    budget_seconds: float = 1.0  # per timing, once MIN_REPEATS are in
    min_repeat_seconds: float = 0.02
    smoke: bool = False  # verify only, no timing
    gemm_sizes: tuple = roofline.SIZES


def relative_error(got, want, scale=None):
    """max |got - want| / scale (default max |want|); 0 or inf for integer arrays."""
    if got is None:
        return float("inf")
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf")
    if want.dtype.kind in "iu":
        return 0.0 if np.array_equal(got, want) else float("inf")
    if want.size == 0:
        return 0.0
    difference = np.abs(got.astype(np.float64) - want).max()
    if scale is None:
        scale = np.abs(want).max()
    error = float(difference / max(scale, np.finfo(np.float64).tiny))
    return error if np.isfinite(error) else float("inf")


def one_line(exc):
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_one(impl, case, dtype, threads, inputs, reference):
    """Bind and verify one implementation; returns (result row, Bound or None when it failed)."""
    row = {"case": case.name, "dtype": dtype, "threads": threads, "impl": impl.name,
           "verified": False}
    try:
        bound = impl.bind(case, dtype, inputs, reference)
        start = time.perf_counter()
        checks = bound.check()
        row["check_seconds"] = time.perf_counter() - start
    except Unavailable as exc:
        return {**row, "status": exc.status, "detail": exc.detail}, None
    except (NotImplementedError, ImportError) as exc:
        return {**row, "status": "not available", "detail": one_line(exc)}, None
    except Exception as exc:  # any failure is one line in the report
        return {**row, "status": "error", "detail": one_line(exc)}, None

    errors = {name: relative_error(got, want, scale) for name, got, want, scale in checks}
    worst = max(errors, key=errors.get)
    row["max_error"] = errors[worst]
    if not errors[worst] <= TOLERANCE[dtype]:
        detail = f"{worst}: relative error {errors[worst]:.3g} > {TOLERANCE[dtype]:g}"
        return {**row, "status": "mismatch", "detail": detail}, None
    plan = bound.plan()
    if plan is not None:
        row["plan"] = plan
    return {**row, "status": "verified", "verified": True}, bound


def run_group(impls, case, dtype, threads, inputs, reference, settings):
    """Verify every implementation of one case, then time those that matched, side by side."""
    checked = [check_one(impl, case, dtype, threads, inputs, reference)
               for impl in impls if impl.supports(case, dtype)]
    timed = [(row, bound) for row, bound in checked if bound is not None]
    if not settings.smoke and timed:
        before, start = machine.cpu_seconds(), time.perf_counter()
        timings = measure([bound.run for _, bound in timed], settings.repeats,
                          settings.budget_seconds, settings.min_repeat_seconds,
                          clock=clock_for(threads)[1])
        others = machine.other_cores(before, machine.cpu_seconds(), time.perf_counter() - start)
        for (row, bound), timing in zip(timed, timings, strict=True):
            row.update(_timed_fields(timing, bound), other_cores=others)
    return [row for row, _ in checked]


def _timed_fields(timing, bound):
    if isinstance(timing, Exception):
        return {"status": "error", "detail": one_line(timing)}
    scale = bound.calls_per_run
    q1, q3 = timing.quartiles
    return {"status": "ok", "seconds": timing.median / scale, "q1": q1 / scale,
            "q3": q3 / scale, "spread": timing.spread,
            "samples": [sample / scale for sample in timing.samples], "loops": timing.loops,
            "calls_per_run": scale, "extrapolated": scale < 1,
            "faults_per_call": timing.faults_per_call / scale,
            "helper_cpu_seconds": timing.helper_cpu_per_call / scale}


def run(cases, impls, dtypes, threads, settings, progress=True):
    """Run ``cases`` x ``dtypes`` x ``threads`` x ``impls``; return the result document."""
    doc = {
        "schema": SCHEMA_VERSION,
        "machine": machine.describe(impls),
        "settings": {**asdict(settings), "threads": list(threads), "dtypes": list(dtypes),
                     "tolerance": TOLERANCE, "environment": environment.describe(),
                     "allocator": environment.describe_allocator(),
                     "clocks": {str(n): clock_for(n)[0] for n in threads}},
        "roofline": [],
        "cases": [],
        "results": [],
    }
    before, start = machine.cpu_seconds(), time.perf_counter()
    if not settings.smoke:
        for n in threads:
            with pinned_threads(n):
                for dtype in dtypes:
                    rate, size = roofline.gemm_rate(dtype, settings.repeats,
                                                    settings.budget_seconds, settings.gemm_sizes,
                                                    threads=n)
                    doc["roofline"].append({"threads": n, "dtype": dtype, "gflops": rate,
                                            "n": size})

    work = [(case, dtype) for case in cases for dtype in dtypes if dtype in case.dtypes]
    bar = _progress.ProgressBar(len(work), desc="cnnext bench", unit="case",
                                file=None if progress else io.StringIO())
    with bar:
        for case, dtype in work:
            bar.update(0, case=f"{case.name} {dtype}")
            inputs = case.make_inputs(dtype)
            reference = case.reference(inputs)
            for n in threads:
                # Single-threaded code (the notebook's loops) runs once.
                group = [impl for impl in impls if impl.threaded or n == threads[0]]
                with pinned_threads(n):
                    doc["results"] += run_group(group, case, dtype, n, inputs, reference,
                                                settings)
            bar.update()
    doc["machine"]["load_average"]["end"] = machine.load_average()
    doc["machine"]["other_cores"] = machine.other_cores(before, machine.cpu_seconds(),
                                                        time.perf_counter() - start)
    doc["cases"] = [describe_case(case) for case in cases]
    derive(doc)
    return doc


def describe_case(case):
    return {"name": case.name, "family": case.family, "op": case.op,
            "description": case.description, "images": case.images,
            "flops": case.flops(), "bytes": {dtype: case.nbytes(dtype) for dtype in case.dtypes},
            "dtypes": list(case.dtypes)}


def derive(doc):
    """Add rates, share of peak and ratios to every timed result row."""
    peaks = {(r["dtype"], r["threads"]): r["gflops"] for r in doc["roofline"]}
    timed = {(r["case"], r["dtype"], r["threads"], r["impl"]): r["seconds"]
             for r in doc["results"] if r["status"] == "ok"}
    for row in doc["results"]:
        if row["status"] != "ok":
            continue
        case, seconds = CASES[row["case"]], row["seconds"]
        key = (row["case"], row["dtype"], row["threads"])
        row["per_image_seconds"] = seconds / case.images
        if case.flops() is not None:
            row["gflops"] = case.flops() / seconds / 1e9
            if key[1:] in peaks:
                row["peak_fraction"] = row["gflops"] / peaks[key[1:]]
        if case.nbytes(row["dtype"]) is not None:
            row["gbytes_per_second"] = case.nbytes(row["dtype"]) / seconds / 1e9
            copy = timed.get(("copy.pool-input", row["dtype"], row["threads"], "numpy"))
            if copy is not None:
                row["copy_multiple"] = seconds / copy
        for other in ("torch", "onnxruntime", "numpy", "notebook", "unfused"):
            if (*key, other) in timed:
                row[f"vs_{other}"] = timed[(*key, other)] / seconds
        if case.family == "overhead" and row["impl"] == "cnnext" and (*key, "kernel") in timed:
            row["overhead_seconds"] = seconds - timed[(*key, "kernel")]


def failures(doc):
    """One line per result that makes the run fail (mismatch, error, cnnext unavailable)."""
    lines = []
    for row in doc["results"]:
        bad = row["status"] in ("mismatch", "error") or (
            row["impl"] in SUBJECTS and not row["verified"])
        if bad:
            lines.append(f"{row['case']} {row['dtype']} {row['threads']} thread(s) "
                         f"{row['impl']}: {row['status']}: {row.get('detail', '')}".rstrip(": "))
    return lines

"""Present a result document: a plain-text table, JSON, and an optional PNG chart.

The table has one block per (section, dtype, thread count) and one line per
case: cnnext's time and rate, the other implementations' times side by
side, and cnnext's speed-up over them.  Cells of implementations that could
not run say why ("not installed", "not available", "MISMATCH", "error");
"-" means the implementation does not do that case.
"""

import json
import math

from .cases import CONV_OPS, CONV_SHAPES

SECTIONS = (
    # title, families, columns after the case name
    ("convolution", ("conv2d",),
     ("cnnext", "GFLOP/s", "%peak", "torch", "numpy", "notebook", "vs torch", "vs numpy")),
    ("pooling (memory-bound; x copy = time / np.copyto of the input)",
     ("max_pool2d", "avg_pool2d", "copy"),
     ("cnnext", "GB/s", "x copy", "torch", "numpy", "notebook", "vs torch", "vs numpy")),
    ("fused convolution + max pooling (unfused: cnnext's conv2d, relu, max_pool2d)",
     ("fused",),
     ("cnnext", "GFLOP/s", "unfused", "torch", "vs unfused", "vs torch")),
    ("layers (a training step's forward and backward kernels)",
     ("batch_norm2d", "depthwise2d"),
     ("cnnext", "per image", "GB/s", "GFLOP/s", "torch", "vs torch")),
    ("training step (time per step; per image = step / batch)", ("train",),
     ("cnnext", "per image", "GFLOP/s", "torch", "numpy", "notebook",
      "vs torch", "vs numpy", "vs notebook")),
    ("inference (predict: time per call; per image = call / batch)", ("predict",),
     ("cnnext", "per image", "GFLOP/s", "torch", "onnxruntime", "vs torch", "vs onnxruntime")),
    ("call overhead (a call repeating the previous call's shapes; kernel: its step alone, "
     "run in one compiled loop; overhead = cnnext - kernel)", ("overhead",),
     ("cnnext", "kernel", "overhead")),
)
OTHERS = ("torch", "onnxruntime", "numpy", "notebook", "kernel", "unfused")
# Peers of the headline's geometric means, where a section has their timings.
PEERS = ("torch", "onnxruntime")
STATUS_CELLS = {"not installed": "not installed", "not available": "n/a",
                "mismatch": "MISMATCH", "error": "error", "verified": "verified"}

NOTES = """\
time: median per call; (+-x%): half the interquartile range over the median;
  ~: extrapolated from a few images (the notebook's loops are slow);
  vs X: X's time / cnnext's time (above 1: cnnext is faster);
  GFLOP/s: a direct convolution's FLOPs (2 per multiply-add) over the time, so an
  algorithm doing fewer (Winograd) can pass 100% of peak;
  %peak: share of the measured SGEMM (float32) or DGEMM (float64) rate at the same
  thread count."""


def format_seconds(seconds, extrapolated=False):
    prefix = "~" if extrapolated else ""
    for scale, unit in ((1e-6, "us"), (1e-3, "ms"), (1.0, "s")):
        if seconds < scale * 1000 or unit == "s":
            return f"{prefix}{seconds / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def format_ratio(ratio):
    digits = 2 if ratio < 10 else 1 if ratio < 100 else 0
    return f"{ratio:.{digits}f}x"


def _time_cell(row, spread=False):
    if row is None:
        return "-"
    if row["status"] != "ok":
        return STATUS_CELLS.get(row["status"], row["status"])
    text = format_seconds(row["seconds"], row.get("extrapolated", False))
    if spread:
        text += f" (+-{100 * row['spread'] / 2:.0f}%)"
    return text


def _value(row, key, fmt):
    if row is None or key not in row:
        return ""
    return fmt(row[key])


def _line(columns, subject, others):
    """The cells of one table line; ``subject`` is the row the rates and ratios are read from."""
    is_cnnext = subject is not None and subject["impl"].startswith("cnnext")
    cells = []
    for column in columns:
        if column == "cnnext":
            cells.append(_time_cell(subject, spread=True) if is_cnnext else "-")
        elif column in OTHERS:
            cells.append(_time_cell(others.get(column)))
        elif column == "GFLOP/s":
            cells.append(_value(subject, "gflops", lambda v: f"{v:.3g}"))
        elif column == "%peak":
            cells.append(_value(subject, "peak_fraction", lambda v: f"{100 * v:.0f}%"))
        elif column == "GB/s":
            cells.append(_value(subject, "gbytes_per_second", lambda v: f"{v:.3g}"))
        elif column == "x copy":
            cells.append(_value(subject, "copy_multiple", lambda v: f"{v:.2f}"))
        elif column == "per image":
            cells.append(_value(subject, "per_image_seconds", format_seconds))
        elif column == "overhead":
            cells.append(_value(subject, "overhead_seconds", format_seconds))
        else:  # "vs torch", ...
            key = "vs_" + column.split()[1]
            cells.append(_value(subject, key, format_ratio) if is_cnnext else "")
    return cells


def _table(header, lines):
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    render = [
        "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                  for i, (cell, width) in enumerate(zip(line, widths, strict=True))).rstrip()
        for line in [header, *lines]
    ]
    return [render[0], "-" * len(render[0]), *render[1:]]


def _block(doc, families, columns, dtype, threads):
    rows = {}
    for row in doc["results"]:
        if row["dtype"] == dtype and row["threads"] == threads:
            rows.setdefault(row["case"], {})[row["impl"]] = row
    lines = []
    for case in doc["cases"]:
        found = rows.get(case["name"])
        if case["family"] not in families or not found:
            continue
        others = {impl: found[impl] for impl in OTHERS if impl in found}
        # The copy yardstick's rate is NumPy's, its only implementation.
        subjects = [row for impl, row in found.items() if impl.startswith("cnnext")] or [
            found.get("numpy") if case["family"] == "copy" else None]
        # Pooling keeps its family in the name: max and avg share a block.
        short = case["name"].split(".", 1)[1] if case["family"] in (
            "conv2d", "train", "overhead", "fused") else case["name"]
        for subject in subjects:
            label = short if len(subjects) == 1 else f"{short} [{subject['impl']}]"
            lines.append([label, *_line(columns, subject, others)])
    return _table(["case", *columns], lines) if lines else []


def _cores_text(m):
    """The machine's cores, and how many this run could use when it was pinned to fewer."""
    usable = m.get("cores_usable", m["cores"])
    if usable == m["cores"]:
        return f"{m['cores']} cores"
    return f"{m['cores']} cores, this run pinned to {usable}"


def format_report(doc):
    """The whole result document as text."""
    m = doc["machine"]
    settings = doc["settings"]
    out = [f"cnnext bench  {m['date']}",
           f"cpu: {m['cpu']}, {_cores_text(m)}",
           f"machine: {m['platform']}",
           f"python {m['python']}, numpy {m['numpy']}, "
           + ", ".join(f"{k} {v}" for k, v in m["implementations"].items() if k != "numpy"),
           f"BLAS: {_blas_text(m['blas'])}"]
    if m.get("cnnext_tuning"):
        out.append(f"cnnext plans: tuning {m['cnnext_tuning']['mode']} (CNNEXT_TUNE; measured "
                   f"on the first call of a shape, kept in {m['cnnext_tuning']['cache']})")
    load = m["load_average"]
    if load["start"] is not None:
        out.append(f"1-minute load average: {load['start']:.1f} at the start, "
                   f"{load['end']:.1f} at the end (the run itself adds 1 to 2; the rest is "
                   f"other processes sharing the {m['cores']} cores)")
    if m["other_cores"] is not None:
        out.append(f"other processes kept {m['other_cores']:.1f} of the {m['cores']} cores busy "
                   "on average during the run")
    out.append("idle threads: " + _settings_text(settings["environment"]))
    if settings.get("allocator"):
        out.append("freed memory kept by malloc: " + _settings_text(settings["allocator"]))
    if settings["smoke"]:
        out.append("smoke mode: every implementation run once and checked, nothing timed")
    else:
        out.append(f"up to {settings['repeats']} repeats per timing "
                   f"(at least {settings['min_repeat_seconds'] * 1e3:.0f} ms each), threads "
                   "pinned for cnnext, torch and BLAS")
        clocks = settings.get("clocks", {})
        if clocks:
            out.append("clock: " + ", ".join(f"{clock} at {n} thread(s)"
                                             for n, clock in clocks.items()))
        for r in doc["roofline"]:
            name = "SGEMM" if r["dtype"] == "float32" else "DGEMM"
            out.append(f"roofline: {name} {r['gflops']:.1f} GFLOP/s on {r['threads']} "
                       f"thread(s) (np.matmul, n={r['n']})")
    for peer in PEERS:
        summary = headline(doc, peer)
        if summary:
            out += ["", f"cnnext's speed relative to {peer}:", *(f"  {line}" for line in summary)]
    targets = goals(doc)
    if targets:
        out += ["", "speed goals of the convolution kernels, float32 (every cnnext figure "
                "must reach its goal; notebook: the seed notebook's layer, 8 filters 3x3 on "
                "28x28 images):",
                *(f"  {line}" for line in targets)]
    out += _warnings(doc)
    for title, families, columns in SECTIONS:
        for dtype in settings["dtypes"]:
            for threads in settings["threads"]:
                block = _block(doc, families, columns, dtype, threads)
                if block:
                    heading = f"{title}: {dtype}, {threads} thread(s)"
                    others = _other_cores(doc, families, dtype, threads)
                    if others is not None:
                        heading += f"; other processes busy on {others:.1f} cores meanwhile"
                    out += ["", heading, *block]
    out += ["", NOTES]
    return "\n".join(out)


def _settings_text(values):
    return ", ".join(f"{name}={value}" if value is not None else f"{name} not set"
                     for name, value in values.items())


# A call faulting in this many pages (4 KiB) is spending a noticeable share of its
# time on fresh memory; a 1-thread call whose process used this share of its
# CPU time on other threads was not timed whole by the thread's clock.
FAULTS_NOTED = 256
HELPER_CPU_NOTED = 0.05


def _warnings(doc):
    """Lines naming timings the clock or fresh memory may have distorted (none: nothing)."""
    faulting, helped = [], []
    for row in doc["results"]:
        if row["status"] != "ok":
            continue
        name = f"{row['case']} {row['dtype']} {row['threads']}t {row['impl']}"
        if row.get("faults_per_call", 0) >= FAULTS_NOTED:
            faulting.append(f"{name} ({row['faults_per_call']:.0f})")
        if row["threads"] == 1 and row.get("helper_cpu_seconds", 0) >= (
                HELPER_CPU_NOTED * row["seconds"]):
            helped.append(f"{name} ({100 * row['helper_cpu_seconds'] / row['seconds']:.0f}%)")
    lines = []
    if faulting:
        lines += ["", f"page faults per call >= {FAULTS_NOTED} (fresh memory every call):",
                  *(f"  {line}" for line in faulting)]
    if helped:
        lines += ["", "1-thread timings where other threads of the process used CPU "
                  "(not counted by the thread clock):", *(f"  {line}" for line in helped)]
    return lines


def _other_cores(doc, families, dtype, threads):
    """The mean over a block's cases of the cores other processes kept busy while it was timed."""
    values = {(row["case"], row["dtype"]): row["other_cores"] for row in doc["results"]
              if row.get("other_cores") is not None and row["dtype"] == dtype
              and row["threads"] == threads and row["case"].split(".")[0] in families}
    return sum(values.values()) / len(values) if values else None


def _blas_text(blas):
    if isinstance(blas, str):
        return blas
    return ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']})" for b in blas) \
        or "none found"


def write_json(doc, path):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(doc, file, indent=1, allow_nan=False, default=_json_default)
        file.write("\n")


def _json_default(value):
    # NumPy scalars that slipped into a row.
    return value.item()


def write_png(doc, path):
    """A bar chart of cnnext's speed-up over PyTorch per case (log scale).

    Returns None, or one line saying why no chart was written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "no chart: matplotlib is not installed"
    bars = {}
    for row in doc["results"]:
        if row["impl"] == "cnnext" and "vs_torch" in row:
            series = f"{row['dtype']}, {row['threads']} thread(s)"
            bars.setdefault(series, {})[row["case"]] = row["vs_torch"]
    if not bars:
        return "no chart: no case has both cnnext and torch timings"
    names = [case["name"] for case in doc["cases"]
             if any(case["name"] in series for series in bars.values())]
    height = len(bars) and 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(9, 0.25 * len(names) * len(bars) + 1.5))
    for i, (series, values) in enumerate(sorted(bars.items())):
        positions = [j + i * height for j, name in enumerate(names) if name in values]
        # Bars grow from 1x: right when cnnext is faster, left when slower.
        ax.barh(positions, [values[name] - 1 for name in names if name in values], height,
                left=1, label=series)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(names))], names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("cnnext speed-up over PyTorch (torch time / cnnext time)")
    ax.set_title(f"cnnext vs PyTorch on {doc['machine']['cpu']} ({doc['machine']['date'][:10]})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def headline(doc, peer="torch"):
    """Geometric-mean speed-up of cnnext over ``peer`` per section, dtype and thread count."""
    lines = []
    for title, families, _ in SECTIONS:
        for dtype in doc["settings"]["dtypes"]:
            for threads in doc["settings"]["threads"]:
                ratios = [row[f"vs_{peer}"] for row in doc["results"]
                          if row["impl"].startswith("cnnext") and f"vs_{peer}" in row
                          and row["dtype"] == dtype and row["threads"] == threads
                          and row["case"].split(".")[0] in families]
                if ratios:
                    mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
                    lines.append(f"{title.split(' (')[0]}, {dtype}, {threads} thread(s): "
                                 f"{format_ratio(mean)} (geometric mean of {len(ratios)}; "
                                 f"{format_ratio(min(ratios))} to {format_ratio(max(ratios))})")
    return lines


# The convolution speed goals: the notebook layer against PyTorch, layers with 32+
# input channels against PyTorch and the single-core SGEMM rate, the
# small-channel layers cifar-1 and lenet-2 against PyTorch, and the
# scaling from 1 to 2 threads at batch 256.
WIDE = tuple(name for name, shape in CONV_SHAPES.items() if shape.c >= 32)
NARROW = ("cifar-1", "lenet-2")
BATCH_256 = (*(f"conv2d.{op}.{name}" for name, shape in CONV_SHAPES.items()
                if shape.n == 256 for op in CONV_OPS), "train.notebook.b256")


def _judged(label, values, goal, fmt):
    """One goal's line: its figures (name -> value), and whether all of them reach ``goal``."""
    if not values:
        return None
    low, high = min(values.values()), max(values.values())
    met = sum(value >= goal for value in values.values())
    if len(values) == 1:
        figures = fmt(low)
    else:
        mean = math.exp(sum(map(math.log, values.values())) / len(values))
        figures = (f"{fmt(low)} to {fmt(high)}, geometric mean {fmt(mean)}, "
                   f"{met} of {len(values)} reach it")
    verdict = "met" if met == len(values) else "missed"
    return f"{label}: {figures}: {verdict}"


def goals(doc):
    """The convolution kernels' speed goals, float32, judged on the timed cnnext rows (one line
    each)."""
    rows = {(row["case"], row["threads"]): row for row in doc["results"]
            if row["impl"] == "cnnext" and row["status"] == "ok" and row["dtype"] == "float32"}
    threads = doc["settings"]["threads"]

    def figures(cases, n, key="vs_torch"):
        return {case: rows[case, n][key] for case in cases
                if (case, n) in rows and key in rows[case, n]}

    wide = [f"conv2d.{op}.{name}" for name in WIDE for op in CONV_OPS]
    narrow = [f"conv2d.{op}.{name}" for name in NARROW for op in CONV_OPS]
    against_torch = (("notebook forward", ["conv2d.forward.notebook"], 5.0),
                     ("notebook forward+backward", ["conv2d.forward-backward.notebook"], 10.0),
                     (f"{'/'.join(WIDE)} (32+ input channels)", wide, 1.0),
                     ("/".join(NARROW), narrow, 1.0),
                     ("fused forward, notebook layer and pool", ["fused.forward.notebook"], 8.0))
    lines = [_judged(f"{label} vs torch >= {goal:g}x, {n} thread(s)", figures(cases, n), goal,
                     format_ratio)
             for label, cases, goal in against_torch for n in threads]
    # The fused kernels against cnnext's own unfused calls.
    if 1 in threads:
        lines += [_judged(f"{label} vs unfused >= 2x, 1 thread",
                          figures([case], 1, "vs_unfused"), 2.0, format_ratio)
                  for label, case in (("fused forward, notebook", "fused.forward.notebook"),
                                      ("fused backward, notebook", "fused.backward.notebook"))]
    if 1 in threads:
        lines.append(_judged(f"{'/'.join(WIDE)} share of the 1-thread SGEMM rate >= 80%",
                             figures(wide, 1, "peak_fraction"), 0.8,
                             lambda value: f"{100 * value:.0f}%"))
    if 1 in threads and len(threads) > 1:
        n = max(threads)
        speedups = {case: rows[case, 1]["seconds"] / rows[case, n]["seconds"]
                    for case in BATCH_256 if (case, 1) in rows and (case, n) in rows}
        lines.append(_judged(f"batch 256, {n} threads vs 1 >= 1.7x", speedups, 1.7,
                             format_ratio))
    return [line for line in lines if line]

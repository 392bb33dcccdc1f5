"""
Speed against PyTorch, from the benchmark JSON
==============================================

``cnnext bench --json results.json`` writes every measurement of a run; the
repository keeps the last full run on each kind of CPU in
``benchmarks/results/<cpu>.json``.  This example reads the newest of those
files with nothing but :mod:`json` and draws, for one thread and float32,
how many times faster than PyTorch cnnext ran each case
(PyTorch's median time over cnnext's, measured in the same process, repeats
interleaved; above 1, cnnext is faster).

To draw your own machine's chart, run ``cnnext bench --json mine.json`` (with
``torch`` installed) and point ``RESULTS`` at it.
"""

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt

# The repository's results, found from wherever in the checkout this runs.
folder = next(folder / "benchmarks" / "results" for folder in (Path.cwd(), *Path.cwd().parents)
              if (folder / "benchmarks" / "results").is_dir())
runs = []
for path in sorted(folder.glob("*.json")):
    with open(path, encoding="utf-8") as file:
        runs.append(json.load(file))
print("results:", ", ".join(f"{run['machine']['cpu']} ({run['machine']['date'][:10]})"
                            for run in runs))
doc = max(runs, key=lambda run: run["machine"]["date"])  # the newest run

machine = doc["machine"]
print(f"{machine['date'][:16]} UTC, {machine['cpu']}, {machine['cores']} cores, "
      f"torch {machine['implementations'].get('torch', 'absent')}")

# One row per (case, dtype, threads, implementation); "vs_torch" is set on
# cnnext's rows when both were timed.
rows = [row for row in doc["results"]
        if row["impl"] == "cnnext" and row["dtype"] == "float32" and row["threads"] == 1
        and "vs_torch" in row]
rows.sort(key=lambda row: row["vs_torch"])

FAMILY_COLOURS = {"conv2d": "tab:blue", "max_pool2d": "tab:orange", "avg_pool2d": "tab:green",
                  "train": "tab:red"}
fig, ax = plt.subplots(figsize=(8, 0.22 * len(rows) + 1.2), layout="constrained")
for i, row in enumerate(rows):
    family = row["case"].split(".")[0]
    # Bars grow from 1x: right when cnnext is faster, left when it is slower.
    ax.barh(i, row["vs_torch"] - 1, left=1, color=FAMILY_COLOURS.get(family, "tab:gray"))
ax.set_yticks(range(len(rows)), [row["case"] for row in rows], fontsize=6)
ax.set_xscale("log")
ax.axvline(1, color="black", linewidth=0.8)
ax.set_xlabel("cnnext's speed-up over PyTorch (float32, 1 thread; log scale)")
ax.set_title(f"cnnext vs PyTorch, {machine['cpu']}, {machine['date'][:10]}")
for family, colour in FAMILY_COLOURS.items():
    ax.barh([], [], color=colour, label=family)
ax.legend(loc="lower right", fontsize=7)

# %%
# Geometric means per family, the figure the benchmark report leads with:

by_family = {}
for row in rows:
    by_family.setdefault(row["case"].split(".")[0], []).append(row["vs_torch"])
for family, ratios in sorted(by_family.items()):
    mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"{family:>11}: {mean:.2f}x over {len(ratios)} cases "
          f"({min(ratios):.2f}x to {max(ratios):.2f}x)")

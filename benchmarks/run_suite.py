"""Run the benchmark suite on the installed cnnext and refresh the table in benchmarks/README.md.

Usage (after ``pip install .``; the suite always imports the installed package):

    python benchmarks/run_suite.py                 # the full suite, 1 thread and all cores
    python benchmarks/run_suite.py --quick         # any ``cnnext bench`` arguments pass through

Writes benchmarks/results/KIND.json and KIND.png, named after the CPU kind
(e.g. results/intel-emerald-rapids-xeon-5th-gen.json), and replaces, in
benchmarks/README.md, the table block of this CPU kind (the text between
``<!-- bench-table:start KIND -->`` and ``<!-- bench-table:end KIND -->``),
or adds one after the others: the README keeps one block per CPU
kind measured, so a regression on one CPU cannot hide behind another's
figures.  Run it on a quiet machine: other processes make the figures noisy.
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- bench-table:start {} -->", "<!-- bench-table:end {} -->"
ANY_END = re.compile(r"<!-- bench-table:end [^>]*-->")


def slug(kind):
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


def replace_block(text, kind, block):
    """``text`` with the table block of ``kind`` replaced by ``block``, or ``block``
    added after the last block; None when the README has no block at all."""
    start, end = START.format(kind), END.format(kind)
    framed = f"{start}\n{block}{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + framed + rest.split(end, 1)[1]
    ends = list(ANY_END.finditer(text))
    if not ends:
        return None
    cut = ends[-1].end()
    return text[:cut] + "\n\n" + framed + text[cut:]


def main(argv):
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    latest = results / "latest.json"
    command = [sys.executable, "-m", "cnnext._bench", *argv,
               "--json", str(latest), "--png", str(results / "latest.png")]
    # From a scratch directory, so the checkout is not on sys.path.
    with tempfile.TemporaryDirectory() as scratch:
        process = subprocess.run(command, cwd=scratch, stdout=subprocess.PIPE, text=True,
                                 check=False)
    print(process.stdout, end="")
    if not latest.exists():
        print("run_suite: the suite wrote no results; table not written", file=sys.stderr)
        return process.returncode or 1
    kind = json.loads(latest.read_text(encoding="utf-8"))["machine"]["cpu_info"]["kind"]
    for suffix in (".json", ".png"):
        if (results / f"latest{suffix}").exists():
            shutil.move(results / f"latest{suffix}", results / f"{slug(kind)}{suffix}")
    command_line = " ".join(["cnnext bench", *argv])
    block = f"### {kind}\n\n```text\n$ {command_line}\n{process.stdout}```\n"
    text = replace_block(README.read_text(encoding="utf-8"), kind, block)
    if text is None:
        print(f"run_suite: {README} has no bench-table markers; table not written",
              file=sys.stderr)
        return 1
    README.write_text(text, encoding="utf-8")
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

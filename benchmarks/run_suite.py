"""Run the benchmark suite on the installed cnnext and refresh the table in benchmarks/README.md.

Usage (after ``pip install .``; the suite always imports the installed package):

    python benchmarks/run_suite.py                 # the full suite, 1 thread and all cores
    python benchmarks/run_suite.py --quick         # any ``cnnext bench`` arguments pass through

Writes benchmarks/results/latest.json and latest.png and replaces the text
between the ``bench-table`` markers of benchmarks/README.md with the table.
Run it on a quiet machine: other processes make the all-core figures noisy.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def main(argv):
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "cnnext._bench", *argv,
               "--json", str(results / "latest.json"), "--png", str(results / "latest.png")]
    # From a scratch directory, so the checkout is not on sys.path.
    with tempfile.TemporaryDirectory() as scratch:
        process = subprocess.run(command, cwd=scratch, stdout=subprocess.PIPE, text=True,
                                 check=False)
    print(process.stdout, end="")
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"run_suite: {README} has no {START} ... {END} markers; table not written",
              file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    command_line = " ".join(["cnnext bench", *argv])
    table = f"{START}\n```text\n$ {command_line}\n{process.stdout}```\n{END}"
    README.write_text(head + table + tail, encoding="utf-8")
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

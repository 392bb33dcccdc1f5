"""Summarise the innermost loops of compiled kernels from their disassembly.

Usage: python tools/asm_loops.py MODULE.so [PATTERN ...] [--objdump aarch64-linux-gnu-objdump]

For every function whose name contains one of PATTERNs (default: the tile
microkernels), objdump's disassembly is cut into loops (a backward branch
and its target), and the innermost loops holding vector multiply-adds are
reported: instructions, vector FMAs, multiplies and adds, vector loads and
broadcasts, stores, and stack traffic (spills of the accumulator tile show up
as vector stores/loads addressed off sp/rsp).  FMAs per vector load is the
figure that matters for a register-tiled kernel: a tile of m x n accumulators
should give about m*n / (m + n) of them.  Works on aarch64 (NEON/SVE) and
x86-64 (SSE/AVX/AVX-512) objects; speed under emulation means nothing, the
instruction mix does.
"""

import argparse
import re
import subprocess
import sys
from collections import Counter

DEFAULT_PATTERNS = ["nn_tiles", "kfwd_tiles", "trn_tiles", "dot_tiles", "dot_tile", "axpy_tile",
                    "winograd_pass"]

INSTRUCTION = re.compile(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{2,8}\s)+\s*([a-z][\w.]*)\s*(.*)$")
FUNCTION = re.compile(r"^([0-9a-f]+) <(.+)>:$")
BRANCH_TARGET = re.compile(r"\b([0-9a-f]+) <")

ARM_VREG = re.compile(r"\b[vqz]\d+\b|\bq\d+\b")


def classify(mnemonic, operands, arch):
    """The categories one instruction counts in."""
    kinds = []
    ops = operands.split("//")[0].split("#")[0] if arch == "aarch64" else operands
    if arch == "aarch64":
        vector = bool(ARM_VREG.search(ops)) and (".4s" in ops or ".2d" in ops or
                                                 re.search(r"\b[qz]\d+", ops) or ".s[" in ops)
        if mnemonic in {"fmla", "fmls", "fmad", "fmsb"} or (mnemonic in {"fmadd"} and vector):
            kinds.append("fma")
        elif mnemonic == "fmul" and vector:
            kinds.append("mul")
        elif mnemonic in {"fadd", "fsub"} and vector:
            kinds.append("add")
        if mnemonic in {"ldr", "ldur", "ldp", "ld1", "ld1w", "ld1d", "ldnp"} and \
                re.search(r"\b[qz]\d+|\bv\d+\.", ops):
            kinds.append("vload")
            if "sp" in ops.split("[", 1)[-1].split(",")[0]:
                kinds.append("stack")
        if mnemonic in {"ld1r", "dup", "ld1rw", "ld1rd"} or (mnemonic == "ldr" and
                                                             re.match(r"\s*[sd]\d+,", ops)):
            kinds.append("broadcast")
        if mnemonic in {"str", "stur", "stp", "st1", "st1w", "st1d", "stnp"} and \
                re.search(r"\b[qz]\d+|\bv\d+\.", ops):
            kinds.append("vstore")
            if "[sp" in ops:
                kinds.append("stack")
    else:
        vector = bool(re.search(r"%[xyz]mm\d+", ops))
        packed = mnemonic.endswith(("ps", "pd")) and vector
        if mnemonic.startswith("vfmadd") or mnemonic.startswith("vfnmadd"):
            kinds.append("fma")
        elif packed and ("mul" in mnemonic):
            kinds.append("mul")
        elif packed and ("add" in mnemonic or "sub" in mnemonic):
            kinds.append("add")
        memory = "(" in ops
        if "broadcast" in mnemonic:
            kinds.append("broadcast")
        elif vector and memory and mnemonic.startswith(("vmovu", "vmova", "movu", "mova",
                                                         "vmaskmov", "vmov")):
            # AT&T: source first; a load has the memory operand first.
            if ops.index("(") < ops.index("%"):
                kinds.append("vload")
            else:
                kinds.append("vstore")
            if "%rsp" in ops:
                kinds.append("stack")
        elif vector and memory and ("fma" in kinds or "mul" in kinds or "add" in kinds):
            kinds.append("vload")  # folded memory operand
            if "%rsp" in ops:
                kinds.append("stack")
    return kinds


def disassemble(path, objdump, patterns):
    """name -> list of (address, mnemonic, operands) for the matching functions."""
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", path], capture_output=True,
                          text=True, check=True).stdout
    functions, current = {}, None
    for line in text.splitlines():
        match = FUNCTION.match(line)
        if match:
            name = match.group(2)
            current = name if any(p in name for p in patterns) else None
            if current:
                functions[current] = []
            continue
        if current is None:
            continue
        parts = re.match(r"^\s*([0-9a-f]+):\s+([a-z][\w.]*)\s*(.*)$", line)
        if parts:
            functions[current].append((int(parts.group(1), 16), parts.group(2), parts.group(3)))
    return functions


def loops(instructions):
    """(start, end) index ranges of loops: a backward branch to an address inside the function."""
    index = {address: i for i, (address, _, _) in enumerate(instructions)}
    found = []
    for i, (address, mnemonic, operands) in enumerate(instructions):
        if not (mnemonic.startswith(("b", "j", "cb", "tb")) and mnemonic not in {"bl", "blr"}):
            continue
        target = BRANCH_TARGET.search(operands)
        if target:
            destination = int(target.group(1), 16)
            if destination <= address and destination in index:
                found.append((index[destination], i))
    # Innermost: no other loop strictly inside.
    return [(s, e) for s, e in found
            if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in found)]


def report(path, patterns, objdump, arch):
    rows = []
    for name, instructions in disassemble(path, objdump, patterns).items():
        totals = Counter()
        for _, mnemonic, operands in instructions:
            totals.update(classify(mnemonic, operands, arch))
        best = None
        for start, end in loops(instructions):
            counts = Counter()
            for _, mnemonic, operands in instructions[start:end + 1]:
                counts.update(classify(mnemonic, operands, arch))
            if counts["fma"] + counts["mul"] and (best is None or
                                                  counts["fma"] + counts["mul"] >
                                                  best[1]["fma"] + best[1]["mul"]):
                best = (end - start + 1, counts)
        rows.append((name, len(instructions), totals, best))
    for name, size, totals, best in rows:
        short = re.sub(r"__pyx_f_6cnnext_8_kernels_\d+_", "", name)
        print(f"{short}  ({size} instructions; whole function: {totals['fma']} fma, "
              f"{totals['mul']} mul, {totals['add']} add, {totals['stack']} stack vector moves)")
        if best:
            length, c = best
            loads = c["vload"] + c["broadcast"]
            ratio = (c["fma"] + c["mul"]) / loads if loads else float("inf")
            print(f"    hottest inner loop: {length} instructions, {c['fma']} fma, {c['mul']} mul, "
                  f"{c['add']} add, {c['vload']} vector loads, {c['broadcast']} broadcasts, "
                  f"{c['vstore']} vector stores, {c['stack']} on the stack; "
                  f"{ratio:.2f} multiplies per load")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module")
    parser.add_argument("patterns", nargs="*", default=DEFAULT_PATTERNS)
    parser.add_argument("--objdump", default="objdump")
    args = parser.parse_args()
    header = subprocess.run([args.objdump, "-f", args.module], capture_output=True, text=True,
                            check=True).stdout
    arch = "aarch64" if "aarch64" in header else "x86_64"
    report(args.module, args.patterns, args.objdump, arch)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Run one kernel test file under valgrind memcheck and fail on any invalid
# memory access in cnnext's compiled kernels.
#
# Usage: tools/valgrind_memcheck.sh [PYTHON] [TEST_FILE] [extra pytest args...]
#   PYTHON     an interpreter with cnnext (a release build: bounds checks off,
#              so an out-of-bounds access is real) and pytest installed;
#              default: python3
#   TEST_FILE  default: tests/test_conv.py (the SIMD convolution kernels)
# Environment: VALGRIND_LOG=prefix keeps the logs, one per process as
# prefix.<pid> (child processes are traced too: the battery and the edge sweep
# run their cases in one); default: a temp directory.
#
# PYTHONMALLOC=malloc sends every Python allocation through malloc, so
# memcheck sees them all; hypothesis runs its small "dev" profile (memcheck
# is ~30x slower).  Errors are sorted into three groups:
#   cnnext    any error with a frame in cnnext's extension modules: FAIL;
#   invalid   any other invalid read/write/free outside the dynamic loader: FAIL;
#   noise     the rest: the dynamic loader's and glibc's vectorised string
#             functions (their aligned over-reads are valgrind's classic false
#             positives), CPython's own uninitialised-value reports: counted,
#             not failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${1:-python3}
TEST=${2:-$ROOT/tests/test_conv.py}
shift $(( $# < 2 ? $# : 2 ))
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 2; }
LOG=${VALGRIND_LOG:-$(mktemp -d /tmp/cnnext-valgrind.XXXXXX)/memcheck}
WORK=$(mktemp -d)  # run outside the checkout so the installed cnnext is tested

echo "valgrind memcheck: $PYTHON -m pytest $TEST (log: $LOG)"
set +e
(cd "$WORK" && PYTHONMALLOC=malloc HYPOTHESIS_PROFILE=dev OMP_NUM_THREADS=2 \
    valgrind --tool=memcheck --leak-check=no --num-callers=40 --error-limit=no \
    --trace-children=yes --log-file="$LOG.%p" "$PYTHON" -m pytest "$TEST" -q \
    -p no:cacheprovider "$@")
tests=$?
set -e

verdict=0
"$PYTHON" - "$LOG".* <<'PY' || verdict=$?
import re
import sys

text = "".join(open(path).read() for path in sys.argv[1:])
# One error report: a headline and its stack, up to a blank "==pid==" line.
reports = re.findall(r"==\d+== (\S[^\n]*)\n((?:==\d+==\s+(?:at|by) [^\n]*\n)+)", text)
groups = {"cnnext": [], "invalid": [], "noise": []}
vectorised_libc = re.compile(r"(at|by) 0x\w+: __\w*(mem|str|wmem|wcs)\w*_(avx2|evex|sse2|sse4)")
for headline, stack in reports:
    top = stack.splitlines()[0]
    if "cnnext" in stack or "__pyx_" in stack:
        groups["cnnext"].append((headline, stack))
    elif re.match(r"Invalid (read|write|free)|Mismatched free|Source and destination overlap",
                  headline) and not (re.search(r"ld-linux|dl-[a-z]+\.c|/ld-", stack)
                                     or vectorised_libc.search(top)):
        groups["invalid"].append((headline, stack))
    else:
        groups["noise"].append((headline, stack))
summary = re.findall(r"ERROR SUMMARY: (\d+) errors from (\d+) contexts", text)
errors, contexts = (sum(int(s[i]) for s in summary) for i in (0, 1))
print(f"valgrind: {len(summary)} processes, {errors} errors from {contexts} contexts")
for name, found in groups.items():
    print(f"  {name}: {len(found)} error contexts")
for name in ("cnnext", "invalid"):
    for headline, stack in groups[name][:5]:
        print(f"\n[{name}] {headline}\n{stack}")
sys.exit(1 if groups["cnnext"] or groups["invalid"] or not summary else 0)
PY
rm -rf "$WORK"
if [ "$tests" -ne 0 ]; then
    echo "FAIL: the tests failed under valgrind (pytest exit $tests)"
    exit 1
fi
[ "$verdict" -eq 0 ] && echo "OK: no invalid access in cnnext's kernels" || echo "FAIL: see above"
exit "$verdict"

"""Thread safety and thread-count invariance of every kernel, and of training.

* 8 Python threads calling every public kernel at once (released GIL, shared
  plan cache, per-thread scratch buffers) get exactly what serial calls get.
* OpenMP thread counts 1, 2 and 4 give bitwise-identical outputs for every
  kernel: partial sums are reduced in a fixed order, whatever the split; in
  this process and, in a child process each, on every instruction-set build
  of the kernels the CPU runs (CNNEXT_ISA).
* A model trained with 1 and with 2 threads ends with identical weights.

Bitwise equality, not a tolerance: any dependence on scheduling is a bug.
(In a build without OpenMP the thread count changes nothing, trivially.)
"""

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from reliability_testing import kernel_calls, scaled, subprocess_env

import cnnext
from cnnext import functional as F
from cnnext.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU

THREAD_COUNTS = (1, 2, 4)


def as_arrays(result):
    """A result as a flat list of arrays (tuples unpacked, floats wrapped, None dropped)."""
    if isinstance(result, tuple):
        return [a for item in result for a in as_arrays(item)]
    return [] if result is None else [np.asarray(result)]


def assert_bitwise_equal(got, expected, what):
    got, expected = as_arrays(got), as_arrays(expected)
    assert len(got) == len(expected), what
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.dtype == e.dtype and g.shape == e.shape, f"{what}[{i}]"
        assert g.tobytes() == e.tobytes(), f"{what}[{i}]: results differ bitwise"


def test_every_public_kernel_is_covered():
    assert set(kernel_calls(0)) == set(F.__all__)


def check_thread_counts(set_threads, dtype):
    """Every kernel at each of THREAD_COUNTS, compared bitwise with the first."""
    calls = kernel_calls(1, dtype)
    results = {}
    for threads in THREAD_COUNTS:
        set_threads(threads)
        assert cnnext.get_num_threads() == threads or not cnnext.show_config(
            "dicts")["openmp"]["enabled"]
        for name, call in calls.items():
            result = call()
            if threads == THREAD_COUNTS[0]:
                results[name] = result
            else:
                assert_bitwise_equal(result, results[name], f"{name} with {threads} threads")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_openmp_thread_counts_give_bitwise_identical_results(num_threads, dtype):
    check_thread_counts(num_threads, dtype)


@pytest.mark.parametrize("isa", cnnext.show_config("dicts")["simd"]["supported"])
def test_thread_counts_on_every_instruction_set_build(tmp_path, isa):
    proc = subprocess.run([sys.executable, __file__], cwd=tmp_path, capture_output=True,
                          text=True, timeout=scaled(120, 600),
                          env=subprocess_env(CNNEXT_ISA=isa))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The child ran the convolutions of the build asked for.
    assert proc.stdout.split() == ["bitwise", "identical", "on", isa], proc.stdout


def test_eight_python_threads_at_once_match_serial_calls(num_threads):
    """Every kernel from 8 threads at once, each on its own data, several rounds each."""
    num_threads(2)
    workers, rounds = 8, scaled(6, 2)
    per_thread = [kernel_calls(100 + t) for t in range(workers)]
    expected = [{name: call() for name, call in calls.items()} for calls in per_thread]
    start = threading.Barrier(workers)

    def work(t):
        start.wait()
        mismatches = []
        for _ in range(rounds):
            for name, call in per_thread[t].items():
                try:
                    assert_bitwise_equal(call(), expected[t][name], name)
                except AssertionError as exc:
                    mismatches.append(f"thread {t}: {exc}")
        return mismatches

    with ThreadPoolExecutor(workers) as pool:
        problems = [m for found in pool.map(work, range(workers)) for m in found]
    assert not problems, problems[:10]


def test_threads_sharing_one_input_and_sharing_the_plan_cache(num_threads):
    """All threads convolve the same arrays with many geometries at once: the per-shape
    plan cache is filled, read (and cleared when full) concurrently."""
    num_threads(1)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 12, 13)).astype(np.float32)
    geometries = [(k, s, p) for k in (1, 2, 3) for s in (1, 2) for p in (0, 1)]
    weights = {k: rng.standard_normal((4, 3, k, k)).astype(np.float32) for k in (1, 2, 3)}
    expected = {g: F.conv2d(x, weights[g[0]], stride=g[1], padding=g[2]) for g in geometries}
    start = threading.Barrier(8)

    def work(t):
        start.wait()
        bad = []
        for i in range(scaled(40, 10)):
            g = geometries[(i * 7 + t) % len(geometries)]
            if F.conv2d(x, weights[g[0]], stride=g[1], padding=g[2]).tobytes() != \
                    expected[g].tobytes():
                bad.append(g)
        return bad

    before = x.copy()
    with ThreadPoolExecutor(8) as pool:
        bad = [g for found in pool.map(work, range(8)) for g in found]
    assert not bad
    assert x.tobytes() == before.tobytes()


def train(threads, num_threads):
    num_threads(threads)
    rng = np.random.default_rng(3)
    model = cnnext.Sequential([
        Conv2D(1, 6, 3, padding=1, seed=1), ReLU(), MaxPool2D(2),
        Conv2D(6, 8, 3, seed=2), ReLU(), AvgPool2D(2), Flatten(), Dense(8 * 2 * 2, 10, seed=3),
    ])
    X = rng.integers(0, 256, (scaled(96, 32), 12, 12), dtype=np.uint8)
    y = rng.integers(0, 10, len(X))
    model.fit(X, y, epochs=2, batch_size=16, optimizer=cnnext.optim.Adam(lr=0.01), seed=5,
              progress=False)
    return model.parameters()


def test_training_with_one_and_two_threads_ends_with_identical_weights(num_threads):
    one, two = train(1, num_threads), train(2, num_threads)
    assert one.keys() == two.keys()
    for name in one:
        assert one[name].tobytes() == two[name].tobytes(), f"{name} differs"
    # Training moved the weights (identical by construction would prove nothing).
    assert not np.array_equal(one["0.weight"], Conv2D(1, 6, 3, padding=1, seed=1)
                              .params["weight"])


if __name__ == "__main__":
    for dtype in (np.float32, np.float64):
        check_thread_counts(cnnext.set_num_threads, dtype)
    print("bitwise identical on", cnnext.show_config("dicts")["simd"]["in_use"]["_conv"])

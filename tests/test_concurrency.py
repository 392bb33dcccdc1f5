"""Thread safety and thread-count invariance of every kernel, and of training.

* 8 Python threads calling every public kernel at once (released GIL, shared
  plan cache, per-thread scratch buffers) get exactly what serial calls get.
* OpenMP thread counts 1, 2 and 4 give bitwise-identical outputs for every
  kernel: partial sums are reduced in a fixed order, whatever the split; in
  this process and, in a child process each, on every instruction-set build
  of the kernels the CPU runs (CNNEXT_ISA).
* A model trained with 1 and with 2 threads ends with identical weights.
* Optimisers: 8 threads each stepping an optimiser of its own match serial
  runs bitwise; one optimiser stepped from two threads is refused
  (RuntimeError), never mixed.
* Datasets: 8 threads reading IDX files (raw, gzip), the bundled sample and
  the system Fashion-MNIST at once match serial reads; 8 threads downloading
  one file into one cache all get it, verified, and leave no partial file.

Bitwise equality, not a tolerance: any dependence on scheduling is a bug.
(In a build without OpenMP the thread count changes nothing, trivially.)
"""

import functools
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from reliability_testing import kernel_calls, scaled, subprocess_env

import cnnext
from cnnext import functional as F
from cnnext.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU

THREAD_COUNTS = (1, 2, 4)
FASHION_SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)


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


# ------------------------------------------------------------- optimisers
def optimiser_run(make, seed, steps):
    """``steps`` updates of a fresh optimiser on parameters of its own: the final
    parameters and state arrays, as bytes."""
    rng = np.random.default_rng(seed)
    params = {"0.weight": rng.standard_normal((64, 300)).astype(np.float32),
              "0.bias": rng.standard_normal(64)}
    optimizer = make()
    for _ in range(steps):
        grads = {name: rng.standard_normal(p.shape).astype(p.dtype) for name, p in params.items()}
        optimizer.step(params, grads)
    state = [v.tobytes() for entry in optimizer.state_dict()["state"].values()
             for v in entry.values() if isinstance(v, np.ndarray)]
    return [p.tobytes() for p in params.values()] + state


OPTIMISERS = {
    "SGD momentum nesterov": lambda: cnnext.optim.SGD(lr=0.01, momentum=0.9, nesterov=True,
                                                     weight_decay=1e-4),
    "Adam": lambda: cnnext.optim.Adam(lr=1e-3, weight_decay=1e-4),
}


@pytest.mark.parametrize("name", OPTIMISERS)
def test_eight_threads_with_optimisers_of_their_own_match_serial_runs(name):
    make, steps = OPTIMISERS[name], scaled(40, 10)
    expected = [optimiser_run(make, seed, steps) for seed in range(8)]
    start = threading.Barrier(8)

    def work(seed):
        start.wait()
        return optimiser_run(make, seed, steps)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(work, range(8)))
    assert got == expected


def test_one_optimiser_stepped_from_two_threads_is_refused_not_mixed():
    optimizer = cnnext.optim.Adam()
    params = {"w": np.ones(1 << 20, np.float32)}
    grads = {"w": np.ones(1 << 20, np.float32)}
    # Deterministic: another holder is inside the optimiser.
    with cnnext.optim.in_use(optimizer, "the test"), ThreadPoolExecutor(1) as pool:
        future = pool.submit(optimizer.step, params, grads)
        with pytest.raises(RuntimeError, match=r"Adam\.step: this Adam is being stepped by "
                                               r"another thread"):
            future.result()
    assert not optimizer.state  # the refused step changed nothing
    optimizer.step(params, grads)  # released: usable again
    # Under contention: every step either runs whole or is refused, never mixed.
    start = threading.Barrier(2)

    def hammer(_):
        start.wait()
        outcomes = []
        for _ in range(scaled(100, 20)):
            try:
                optimizer.step(params, grads)
                outcomes.append("ran")
            except RuntimeError as exc:
                assert "another thread" in str(exc)
                outcomes.append("refused")
        return outcomes

    with ThreadPoolExecutor(2) as pool:
        outcomes = [o for found in pool.map(hammer, range(2)) for o in found]
    ran = outcomes.count("ran")
    assert optimizer.state["w"]["step"] == 1 + ran


# --------------------------------------------------------------- datasets
def test_eight_threads_reading_datasets_match_serial_reads(tmp_path):
    """read_idx of raw and gzip files, parse_idx, load_sample and (when Debian's
    package is installed) load_fashion_mnist, 8 threads at once."""
    from data_testing import fake_mnist, gzipped, idx_bytes

    from cnnext import datasets
    from cnnext.datasets import _idx

    arrays = fake_mnist(n_train=300, n_test=50)
    paths = []
    for role, array in arrays.items():
        raw, packed = tmp_path / f"{role}.idx", tmp_path / f"{role}.idx.gz"
        raw.write_bytes(idx_bytes(array))
        packed.write_bytes(gzipped(idx_bytes(array)))
        paths += [raw, packed]
    blob = idx_bytes(arrays["train_images"])
    loaders = [functools.partial(datasets.read_idx, path) for path in paths]
    loaders += [functools.partial(_idx.parse_idx, blob), datasets.load_sample]
    if all(Path(d).is_dir() for d in FASHION_SYSTEM_DIRS):
        loaders.append(functools.partial(datasets.load_fashion_mnist, tmp_path / "home",
                                         download=False))

    def flat(result):
        if isinstance(result, tuple):
            return [b for item in result for b in flat(item)]
        return [result.dtype.str, result.shape, result.tobytes()]

    expected = [flat(load()) for load in loaders]
    start = threading.Barrier(8)

    def work(t):
        start.wait()
        return [flat(loaders[(t + i) % len(loaders)]()) for i in range(len(loaders))]

    with ThreadPoolExecutor(8) as pool:
        for t, got in enumerate(pool.map(work, range(8))):
            assert got == [expected[(t + i) % len(loaders)] for i in range(len(loaders))]


def test_eight_threads_downloading_one_file_into_one_cache(tmp_path, monkeypatch):
    """Concurrent downloads of the same file to the same destination: each returns the
    verified file, and no partial file is left."""
    from data_testing import LocalServer, Route, sha256

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.delenv("NO_PROXY", raising=False)

    from cnnext.datasets import _download

    body = np.random.default_rng(0).bytes(3 << 20)
    dest = tmp_path / "cache" / "data.bin"
    with LocalServer() as server:
        server.routes["/data.bin"] = Route(body)
        start = threading.Barrier(8)

        def work(_):
            start.wait()
            return _download.download([server.url("/data.bin")], dest, sha256(body),
                                      progress=False)

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(work, range(8))) == [dest] * 8
    assert dest.read_bytes() == body
    assert os.listdir(dest.parent) == ["data.bin"]


if __name__ == "__main__":
    for dtype in (np.float32, np.float64):
        check_thread_counts(cnnext.set_num_threads, dtype)
    print("bitwise identical on", cnnext.show_config("dicts")["simd"]["in_use"]["_conv"])

"""No leaks: resident memory stays flat over many kernel calls and over training.

RSS is read from /proc/self/smaps_rollup (Linux; elsewhere the tests skip).  The
bounds are generous on purpose: allocator caching moves RSS by a few MB,
while a leak of one output per call (kilobytes, times 10,000 calls) or of
one batch per step shows up as tens of MB.  Python-level allocations are
also checked with tracemalloc, which sees objects (plans, buffers, arrays)
kept alive by a cache that never lets go.

Under AddressSanitizer freed memory sits in ASan's quarantine (hundreds of
MB by design), so the RSS checks skip there; LeakSanitizer and valgrind
(tools/valgrind_memcheck.sh) cover that build instead.
"""

import gc
import mmap
import tracemalloc

import numpy as np
import pytest
from reliability_testing import SANITIZED, kernel_calls, rss_bytes, scaled

import cnnext
from cnnext.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

CALLS = scaled(10_000, 1_000)
MB = 1 << 20

pytestmark = [
    pytest.mark.skipif(rss_bytes() is None, reason="no /proc/self RSS: not Linux"),
    pytest.mark.skipif(SANITIZED, reason="ASan's quarantine holds freed memory: RSS is not "
                                         "flat by design under the sanitizer"),
]


def growth_over(calls, call, warmup=200, traced_calls=500):
    """(RSS growth over ``calls`` calls, traced Python growth over ``traced_calls``), bytes.

    tracemalloc slows every allocation, so it watches fewer calls: an object
    kept per call shows up after a few hundred as surely as after 10,000.
    """
    for _ in range(warmup):
        call()
    gc.collect()
    rss_before = rss_bytes()
    for _ in range(calls):
        call()
    gc.collect()
    rss = rss_bytes() - rss_before
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    for _ in range(traced_calls):
        call()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    return rss, traced


@pytest.mark.parametrize("name", sorted(kernel_calls(0, batch=1)))
def test_kernel_calls_do_not_grow_memory(name, num_threads):
    num_threads(2)
    call = kernel_calls(0, batch=1)[name]
    rss, traced = growth_over(CALLS, call)
    # A leaked output of the smallest kernel here (a few hundred bytes) over
    # 10,000 calls is several MB; a leaked scratch buffer far more.
    assert rss < 8 * MB, f"{name}: RSS grew by {rss / MB:.1f} MB over {CALLS} calls"
    assert traced < 64 * 1024, f"{name}: Python objects grew by {traced} bytes"


def test_kernel_calls_with_out_buffers_allocate_nothing_that_stays(num_threads):
    num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = np.empty((2, 4, 14, 14), np.float32)
    pooled = (np.empty((2, 4, 7, 7), np.float32), np.empty((2, 4, 7, 7), np.int64))

    def step():
        cnnext.functional.conv2d(x, w, out=y)
        cnnext.functional.max_pool2d(y, 2, return_indices=True, out=pooled)

    rss, traced = growth_over(CALLS, step)
    assert rss < 4 * MB and traced < 32 * 1024, (rss, traced)


def test_three_epochs_of_fit_keep_memory_flat():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (scaled(512, 128), 16, 16), dtype=np.uint8)
    y = rng.integers(0, 10, len(X))
    model = cnnext.Sequential([Conv2D(1, 4, 3, seed=0), ReLU(), MaxPool2D(2), Flatten(),
                               Dense(4 * 7 * 7, 10, seed=1)])
    after_epoch = []

    def record(model, epoch, logs):
        gc.collect()
        after_epoch.append(rss_bytes())

    model.fit(X, y, epochs=1, batch_size=8, progress=False)  # warm-up: workspaces, plans
    model.fit(X, y, epochs=3, batch_size=8, progress=False, callbacks=[record])
    growth = after_epoch[-1] - after_epoch[0]
    # One epoch is 64 steps here: a leaked batch per step would be well over 1 MB.
    assert growth < 4 * MB, f"RSS grew by {growth / MB:.1f} MB between epochs 1 and 3"


def test_the_rss_probe_sees_an_allocation():
    """The probe can fail: 64 MB of fresh pages written show up in RSS.

    The pages come from an anonymous mmap of their own: from malloc they
    may be pages the heap already holds (freed by earlier tests, kept at
    the top of the heap), which RSS rightly does not count twice.
    """
    region = mmap.mmap(-1, 64 * MB)
    try:
        before = rss_bytes()
        np.frombuffer(region, np.uint8)[:] = 1
        assert rss_bytes() - before > 48 * MB
    finally:
        region.close()

"""Helpers shared by the pooling, activation and loss tests."""

import bisect
import sys
import threading
import time

import numpy as np
from hypothesis import strategies as st

DTYPES = [np.float32, np.float64]

# Against the float64 reference: float32 kernels round each operation.
TOLERANCE = {
    np.dtype(np.float32): {"rtol": 2e-6, "atol": 1e-6},
    np.dtype(np.float64): {"rtol": 1e-13, "atol": 1e-14},
}


def assert_close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, **TOLERANCE[np.dtype(dtype)])


def layouts(array):
    """Arrays equal to ``array`` in other memory layouts, by name.

    Layouts that turn out C-contiguous anyway (length-1 axes) are left out.
    """
    fortran = np.asfortranarray(array)
    reversed_view = np.flip(np.flip(array, axis=-1).copy(), axis=-1)
    padded = np.zeros((*array.shape[:-1], 2 * array.shape[-1]), array.dtype)
    padded[..., ::2] = array
    variants = {"negative-stride": reversed_view, "strided": padded[..., ::2]}
    if array.ndim > 1:
        variants["fortran"] = fortran
    for variant in variants.values():
        np.testing.assert_array_equal(variant, array)
    return {name: v for name, v in variants.items() if not v.flags.c_contiguous}


def random_array(seed, shape, dtype, kind="normal"):
    """Test data: "normal" values (no ties), "ties" (few distinct values),
    "special" (ties plus NaN, +-inf)."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal(shape).astype(dtype)
    values = rng.integers(-2, 3, size=shape).astype(dtype)
    if kind == "special" and values.size:
        flat = values.reshape(-1)
        for value in (np.nan, np.inf, -np.inf):
            flat[rng.integers(0, flat.size, size=max(1, flat.size // 20))] = value
    return values


def poisoned_like(array):
    """An output buffer whose stale contents would show: NaN (or -1 for ints)."""
    if array.dtype.kind == "f":
        return np.full_like(array, np.nan)
    return np.full_like(array, -1)


@st.composite
def pool_problems(draw, padded=True):
    """(shape, kernel, stride, padding) for pooling, padding at most half the kernel."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    if padded:
        padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    else:
        padding = (0, 0)
    height = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 12))
    width = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 40))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), height, width)
    return shape, kernel, stride, padding


def as_argument(pair):
    """A pair as the caller may write it: an int when both entries agree."""
    return pair[0] if pair[0] == pair[1] else pair


def assert_releases_the_gil(call, attempts=20):
    """Assert that ``call`` runs without holding the GIL.

    A reader thread records the time and yields the GIL after every reading,
    and the interpreter's forced switches are pushed out of the way, so the
    reader can run only while the calling thread gives the GIL up itself:
    some readings must fall strictly inside a call.  The call is repeated
    until that happens, as on a busy machine the operating system may not
    schedule the reader during any one call.
    """
    done = threading.Event()
    readings = []

    def read_clock():
        while not done.is_set():
            readings.append(time.perf_counter())
            time.sleep(0)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    reader = threading.Thread(target=read_clock)
    reader.start()
    inside = 0
    try:
        for _ in range(attempts):
            start = time.perf_counter()
            call()
            end = time.perf_counter()
            # Readings increase: count those between start and end.
            inside = bisect.bisect_left(readings, end) - bisect.bisect_right(readings, start)
            if inside:
                break
    finally:
        done.set()
        reader.join()
        sys.setswitchinterval(interval)
    assert inside > 0

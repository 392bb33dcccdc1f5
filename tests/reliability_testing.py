"""Helpers shared by the reliability tests: build-aware sizes, comparisons, subprocesses.

The reliability suite also runs under the debug (bounds-checked) and
AddressSanitizer builds, which are several times slower than a release
build; ``scaled`` shrinks loop counts there so every build stays within the
CI budget.
"""

import json
import os
import subprocess
import sys

import numpy as np

import cnnext
from cnnext import functional as F

_BUILD = cnnext.show_config("dicts")["cnnext"]
SANITIZED = bool(_BUILD["address_sanitizer"])
DEBUG = bool(_BUILD["debug"])
OPENMP = bool(cnnext.show_config("dicts")["openmp"]["enabled"])


def scaled(release, checked):
    """``release`` in a release build, ``checked`` under the debug or sanitizer builds."""
    return checked if SANITIZED or DEBUG else release


def subprocess_env(**extra):
    """The environment for a child Python: this one, with ASan told that a failed
    allocation returns NULL (NumPy's MemoryError) instead of aborting."""
    env = dict(os.environ)
    if SANITIZED:
        options = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = ":".join(o for o in (options, "allocator_may_return_null=1") if o)
    env.update(extra)
    return env


def run_json_lines(script, *args, cwd, timeout, env=None):
    """Run ``script`` in a child Python; (return code, parsed JSON lines, stderr)."""
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=env or subprocess_env())
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, records, proc.stderr


def tolerance(dtype):
    """(rtol, atol) for comparing a result of ``dtype`` with the float64 reference."""
    return (2e-4, 2e-4) if np.dtype(dtype) == np.float32 else (1e-9, 1e-9)


def same_values(result, expected):
    """None, or why ``result`` differs from ``expected`` (arrays, tuples, scalars, NaN-aware)."""
    if isinstance(expected, (tuple, list)):
        if not isinstance(result, (tuple, list)) or len(result) != len(expected):
            return f"expected a sequence of {len(expected)}, got {type(result).__name__}"
        for i, (r, e) in enumerate(zip(result, expected, strict=True)):
            why = same_values(r, e)
            if why:
                return f"[{i}]: {why}"
        return None
    if expected is None or result is None:
        return None if result is expected else f"expected {expected!r}, got {type(result)}"
    result_array, expected_array = np.asarray(result), np.asarray(expected)
    if result_array.shape != expected_array.shape:
        return f"shape {result_array.shape}, expected {expected_array.shape}"
    if result_array.size > 1 << 24:
        # Huge (broadcast) views: compare a sample of positions, not a float64 copy.
        picks = np.random.default_rng(0).integers(0, result_array.size, 64)
        where = np.unravel_index(picks, result_array.shape)
        result_array, expected_array = result_array[where], expected_array[where]
    if expected_array.dtype.kind in "iub":
        return None if np.array_equal(result_array, expected_array) else "integers differ"
    if result_array.dtype.kind != "f":
        return f"dtype {result_array.dtype}, expected floats"
    rtol, atol = tolerance(result_array.dtype)
    expected_array = expected_array.astype(np.float64)
    # Where the exact value is near the end of the result's range, rounding
    # order decides between a huge finite value and inf: both are right.
    overflowing = np.abs(expected_array) > np.finfo(result_array.dtype).max / 64
    result_array = np.where(overflowing, 0.0, result_array)
    expected_array = np.where(overflowing, 0.0, expected_array)
    finite = expected_array[np.isfinite(expected_array)]
    scale = max(1.0, float(np.abs(finite).max(initial=0.0)))
    if np.allclose(result_array, expected_array, rtol=rtol, atol=atol * scale, equal_nan=True):
        return None
    diff = np.abs(result_array - expected_array)
    return f"values differ (max abs difference {np.nanmax(diff, initial=0.0):.3g})"


def rss_bytes():
    """This process's resident set size in bytes (Linux), else None.

    /proc/self/smaps_rollup walks the page tables, so it is exact at the
    moment it is read; /proc/self/statm reads the kernel's per-process
    counters, which recent kernels update lazily (a 64 MB allocation can
    stay invisible there), so it is only the fallback.
    """
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def kernel_calls(seed, dtype=np.float32, batch=6):
    """{name: zero-argument call} covering every function of cnnext.functional.

    With the default batch the inputs are big enough that OpenMP splits the
    work (several images, channels and rows); batch=1 makes each call cheap.
    The convolutions run two geometries: a strided, dilated, padded one, and a
    3x3 stride-1 one with 16 channels (the Winograd path).
    """
    rng = np.random.default_rng(seed)

    def fill(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x = fill(batch, 5, 17, 19)
    w = fill(7, 5, 3, 4)
    b = fill(7)
    gy = fill(batch, 7, 9, 9)
    y, idx = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    gy_pool = fill(*y.shape)
    logits = fill(64, 10)
    labels = rng.integers(0, 10, 64)
    pooled_gy = fill(*F.avg_pool2d(x, (3, 2), stride=(2, 1), padding=1).shape)
    x16, w16 = fill(batch, 16, 9, 11), fill(16, 16, 3, 3)
    gy16 = fill(batch, 16, 9, 11)
    fused_y, fused_idx = F.conv2d_max_pool2d(x, w, b, padding=(1, 2), relu=True, pool_size=3,
                                             pool_stride=2)
    fused_gy = fill(*fused_y.shape)
    features, weights, bias = fill(64 * batch, 700), fill(10, 700), fill(10)
    gy_linear = fill(64 * batch, 10)
    calls = {
        "conv2d": lambda: (F.conv2d(x, w, b, stride=2, padding=(1, 2), dilation=(1, 2)),
                           F.conv2d(x16, w16, padding=1)),
        "conv2d_backward": lambda: (
            F.conv2d_backward(gy, x, w, stride=2, padding=(1, 2), dilation=(1, 2)),
            F.conv2d_backward(gy16, x16, w16, padding=1)),
        "conv2d_max_pool2d": lambda: (
            F.conv2d_max_pool2d(x, w, b, padding=(1, 2), relu=True, pool_size=3, pool_stride=2),
            F.conv2d_max_pool2d(x16, w16, pool_size=2)),
        "conv2d_max_pool2d_backward": lambda: F.conv2d_max_pool2d_backward(
            fused_gy, fused_idx, x, w, padding=(1, 2), y=fused_y, relu=True, pool_size=3,
            pool_stride=2),
        "linear": lambda: F.linear(features, weights, bias),
        "linear_backward": lambda: F.linear_backward(gy_linear, features, weights),
        "max_pool2d": lambda: F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(gy_pool, idx, x.shape),
        "avg_pool2d": lambda: F.avg_pool2d(x, (3, 2), stride=(2, 1), padding=1),
        "avg_pool2d_backward": lambda: F.avg_pool2d_backward(
            pooled_gy, x.shape, (3, 2), stride=(2, 1), padding=1),
        "relu": lambda: F.relu(x),
        "relu_backward": lambda: F.relu_backward(x, x[::-1].copy()),
        "softmax": lambda: F.softmax(logits),
        "softmax_cross_entropy": lambda: F.softmax_cross_entropy(logits, labels),
    }
    # The modern layers' kernels: batch norm (training: batch statistics; the
    # running ones are left out so repeated calls compute the same), dropout,
    # global pooling, the smooth activations, and depthwise and grouped
    # convolutions through conv2d's groups.
    channel_scale, channel_shift = fill(5), fill(5)
    running_var = np.abs(fill(5)) + 0.5
    _, mean, invstd = F.batch_norm2d(x, None, None, channel_scale, channel_shift, True,
                                     return_stats=True)
    w_depthwise, w_grouped = fill(10, 1, 3, 3), fill(10, 2, 3, 2)
    gy_depthwise = fill(batch, 10, 17, 19)
    x_grouped, gy_grouped = fill(batch, 10, 8, 9), fill(batch, 10, 3, 10)
    calls.update({
        "conv2d": lambda: (F.conv2d(x, w, b, stride=2, padding=(1, 2), dilation=(1, 2)),
                           F.conv2d(x16, w16, padding=1),
                           F.conv2d(x, w_depthwise, b[:5].repeat(2), 1, 1, 1, 5),
                           F.conv2d(x_grouped, w_grouped, None, (2, 1), (0, 1), 1, 5)),
        "conv2d_backward": lambda: (
            F.conv2d_backward(gy, x, w, stride=2, padding=(1, 2), dilation=(1, 2)),
            F.conv2d_backward(gy16, x16, w16, padding=1),
            F.conv2d_backward(gy_depthwise, x, w_depthwise, 1, 1, groups=5),
            F.conv2d_backward(gy_grouped, x_grouped, w_grouped, (2, 1), (0, 1), groups=5)),
        "batch_norm2d": lambda: (
            F.batch_norm2d(x, None, None, channel_scale, channel_shift, True, return_stats=True),
            F.batch_norm2d(x, channel_shift, running_var, channel_scale, None, False)),
        "batch_norm2d_backward": lambda: (
            F.batch_norm2d_backward(x[::-1].copy(), x, mean, invstd, channel_scale),
            F.batch_norm2d_backward(x[::-1].copy(), x, mean, invstd, None, False)),
        "global_avg_pool2d": lambda: F.global_avg_pool2d(x),
        "global_avg_pool2d_backward": lambda: F.global_avg_pool2d_backward(x[:, :, 0, 0].copy(),
                                                                           x.shape),
        "leaky_relu": lambda: F.leaky_relu(x, 0.1),
        "leaky_relu_backward": lambda: F.leaky_relu_backward(x, x[::-1].copy(), 0.1),
        "sigmoid": lambda: F.sigmoid(x),
        "sigmoid_backward": lambda: F.sigmoid_backward(x, F.sigmoid(x[::-1])),
        "tanh": lambda: F.tanh(x),
        "tanh_backward": lambda: F.tanh_backward(x, F.tanh(x[::-1])),
        "dropout": lambda: F.dropout(x, 0.3, 12345),
        "dropout_backward": lambda: F.dropout_backward(x, 0.3, 12345),
    })
    return calls

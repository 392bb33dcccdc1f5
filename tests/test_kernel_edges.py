"""Every small convolution and pooling geometry, at the smallest input it accepts.

The edges of the index arithmetic (padding wider than the image, dilated
taps landing in the padding, one-pixel outputs, strides past the end) are
where a kernel with bounds checks off reads or writes out of bounds.  This
sweep runs conv2d, conv2d_backward, max_pool2d(+backward) and
avg_pool2d(+backward) over all kernel sizes 1-4, strides 1-3, paddings 0-2 and
dilations 1-2 per axis, each at the smallest image that fits and at one a
little larger (3x3 stride-1 convolutions also with 16 channels, the Winograd
path), against the float64 reference (half of the pairings of the two axes
in a release build, a sixth in the slower checked builds).  It runs once per
instruction-set build of the kernels, each time in a child process that names
each case on stderr before running it, so a crash fails the test and names
the geometry.  (This sweep finds the segfault of an earlier convolution
kernel's debug build: x (1, 1, 1, 1), w (1, 1, 1, 3), padding (0, 2),
dilation (1, 2).)
"""

import itertools
import subprocess
import sys

import numpy as np
import pytest
from reliability_testing import same_values, scaled, subprocess_env

import cnnext
from cnnext import _reference as R
from cnnext import functional as F


def geometries():
    axis = list(itertools.product(range(1, 5), range(1, 4), range(3), range(1, 3)))
    for (kh, sh, ph, dh), (kw, sw, pw, dw) in itertools.product(axis, axis):
        # Keep the sweep CI-sized: both axes vary, but not every pairing of them.
        if (kh + sh + ph + dh + kw + sw + pw + dw) % scaled(2, 6):
            continue
        yield (kh, kw), (sh, sw), (ph, pw), (dh, dw)


def smallest(kernel, padding, dilation):
    return tuple(max(d * (k - 1) + 1 - 2 * p, 1) for k, p, d in
                 zip(kernel, padding, dilation, strict=True))


def cases():
    for kernel, stride, padding, dilation in geometries():
        for grow in (0, 2):
            h, w = (s + grow for s in smallest(kernel, padding, dilation))
            yield "conv", kernel, stride, padding, dilation, (2, 2, h, w)
            if kernel == (3, 3) and stride == dilation == (1, 1):
                # 16 channels and filters: the Winograd path, odd and even outputs.
                for extra in (1, 3):
                    yield "conv", kernel, stride, padding, dilation, (2, 16, h + extra, w)
            if dilation == (1, 1) and all(2 * p <= k for p, k in zip(padding, kernel,
                                                                     strict=True)):
                yield "pool", kernel, stride, padding, dilation, (2, 2, h, w)


def run_case(kind, kernel, stride, padding, dilation, shape, rng):
    x = rng.standard_normal(shape)
    if kind == "conv":
        filters = 3 if shape[1] < 16 else 17
        w = rng.standard_normal((filters, shape[1], *kernel))
        b = rng.standard_normal(filters)
        args = (stride, padding, dilation)
        y = F.conv2d(x, w, b, *args)
        why = same_values(y, R.conv2d(x, w, b, *args))
        gy = rng.standard_normal(y.shape)
        why = why or same_values(F.conv2d_backward(gy, x, w, *args),
                                 R.conv2d_backward(gy, x, w, *args))
        return why
    y, idx = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    why = same_values((y, idx), R.max_pool2d(x, kernel, stride, padding, return_indices=True))
    gy = rng.standard_normal(y.shape)
    why = why or same_values(F.max_pool2d_backward(gy, idx, x.shape),
                             R.max_pool2d_backward(gy, idx, x.shape))
    why = why or same_values(F.avg_pool2d(x, kernel, stride, padding),
                             R.avg_pool2d(x, kernel, stride, padding))
    return why or same_values(F.avg_pool2d_backward(gy, x.shape, kernel, stride, padding),
                              R.avg_pool2d_backward(gy, x.shape, kernel, stride, padding))


def main():
    rng = np.random.default_rng(0)
    count = 0
    for case in cases():
        print(*case, file=sys.stderr, flush=True)
        why = run_case(*case, rng)
        if why:
            print(f"MISMATCH {case}: {why}", flush=True)
        count += 1
    print(f"ran {count} cases", flush=True)


@pytest.mark.parametrize("isa", cnnext.show_config("dicts")["simd"]["supported"])
def test_every_small_geometry_matches_the_reference_without_crashing(tmp_path, isa):
    """On every instruction-set build of the kernels this CPU runs (CNNEXT_ISA)."""
    proc = subprocess.run([sys.executable, __file__], cwd=tmp_path, capture_output=True,
                          text=True, timeout=scaled(300, 1200),
                          env=subprocess_env(CNNEXT_ISA=isa))
    last = proc.stderr.strip().splitlines()[-1:] or ["(before the first case)"]
    assert proc.returncode == 0, f"the sweep died (exit {proc.returncode}) at {last[0]}:\n" \
                                 f"{proc.stderr[-2000:]}"
    mismatches = [line for line in proc.stdout.splitlines() if line.startswith("MISMATCH")]
    assert not mismatches, "\n".join(mismatches[:20])
    assert proc.stdout.strip().endswith("cases") and int(proc.stdout.split()[-2]) > 500


if __name__ == "__main__":
    main()

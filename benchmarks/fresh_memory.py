"""Why PyTorch's forward-backward looked 2-3x slower in `cnnext bench` than in a plain loop.

Usage (torch installed):  python benchmarks/fresh_memory.py [--processes 6] [--case notebook]

Each trial is a fresh child process that does what a benchmark process does
before timing (a few other calls: PyTorch's backward operator alone, so
the heap holds what such calls leave behind), then times PyTorch's
forward-backward of the case through autograd (thread CPU time, 1 thread)
and counts the page faults per call (getrusage).  Trials run with glibc's
malloc as it is and with ``cnnext bench``'s ``KEEP_FREED_MEMORY`` settings,
alternating.

What it shows (benchmarks/README.md): with the defaults, some processes
fault ~39 MB of fresh pages in per call and run about twice as slowly,
others none, depending on where the heap's top ends up after the earlier
calls: glibc trims the top of the heap when more than its threshold is
free there, and the call's temporaries (oneDNN's scratch and the im2col
columns of autograd's backward) are then faulted in again on the next call.
With the freed memory kept, no process faults.
"""

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
N, C, H, W, K, R, pad = map(int, sys.argv[1:8])
warm = int(sys.argv[8])
rng = np.random.default_rng(0)
Ho, Wo = H + 2 * pad - R + 1, W + 2 * pad - R + 1
x, w, b, gy = (torch.from_numpy(rng.standard_normal(s).astype(np.float32))
               for s in ((N, C, H, W), (K, C, R, R), (K,), (N, K, Ho, Wo)))
leaves = [t.clone().requires_grad_() for t in (x, w, b)]

def forward_backward():
    for leaf in leaves:
        leaf.grad = None
    y = torch.nn.functional.conv2d(*leaves, 1, pad)
    y.backward(gy)

def backward():
    torch.ops.aten.convolution_backward(gy, x, w, [K], [1, 1], [pad, pad], [1, 1], False,
                                        [0, 0], 1, [True, True, True])

for _ in range(warm):
    backward()
for _ in range(3):
    forward_backward()
times, faults = [], []
for _ in range(5):
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.thread_time()
    for _ in range(5):
        forward_backward()
    times.append((time.thread_time() - t0) / 5)
    faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5)
print(sorted(times)[2], sorted(faults)[2])
"""

CASES = {  # N, C, H, W, K, R, padding (cnnext/_bench/cases.py)
    "notebook": (256, 1, 28, 28, 8, 3, 0),
    "mid": (32, 32, 16, 16, 64, 3, 1),
    "cifar-1": (64, 3, 32, 32, 32, 3, 1),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=6, help="trials per setting")
    parser.add_argument("--case", choices=CASES, default="notebook")
    parser.add_argument("--warm", type=int, default=40,
                        help="backward calls before timing (what the heap saw before)")
    args = parser.parse_args(argv)
    keep = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
    base = {k: v for k, v in os.environ.items() if k not in keep}
    settings = {"glibc defaults": base, "freed memory kept": {**base, **keep}}
    results = {name: [] for name in settings}
    for _ in range(args.processes):
        for name, env in settings.items():
            out = subprocess.run([sys.executable, "-c", CHILD, *map(str, CASES[args.case]),
                                  str(args.warm)], env=env, capture_output=True, text=True,
                                 check=True)
            seconds, faults = map(float, out.stdout.split())
            results[name].append((seconds, faults))
    print(f"torch forward-backward.{args.case}, float32, 1 thread, thread CPU time; "
          f"ms and page faults per call, one figure per process (median of 5 repeats)")
    for name, trials in results.items():
        cells = ", ".join(f"{1e3 * s:.2f} ms/{f:.0f}" for s, f in trials)
        median = statistics.median(s for s, _ in trials)
        print(f"  {name:17s} median {1e3 * median:6.2f} ms;  ms/faults per call: {cells}")


if __name__ == "__main__":
    main()

"""predict of models imported from ONNX, against onnxruntime on the same file.

Usage (after ``pip install . onnx onnxruntime torch``):

    python benchmarks/imported_predict.py                 # batch 1 and 64, 1 thread
    python benchmarks/imported_predict.py --rounds 51 --batches 1

For each network, written in PyTorch (LeNet-5; a small BatchNorm + residual net
when this cnnext has the layers), the module is exported with torch.onnx
(TorchScript exporter), the bytes are converted as ``cnnext.interop.from_onnx``
converts a file and loaded in an onnxruntime session (CPU provider, every graph optimisation,
sequential, intra- and inter-op threads 1, no spinning), both are checked
against each other (1e-5 relative), then timed in one process: rounds of
``calls`` calls of each, interleaved, thread CPU time per call
(``time.thread_time``: what other processes on a shared machine do not
inflate), median over the rounds.
"""

import argparse
import functools
import io
import statistics
import sys
import time
import warnings

import numpy as np


def lenet5(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def residual_net(torch):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels), nn.ReLU(),
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels))

        def forward(self, x):
            return torch.relu(self.body(x) + x)

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        Block(8), nn.MaxPool2d(2), Block(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 10))


def randomise_batchnorm(torch, module):
    """Running statistics that are not the initial 0 and 1."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5, generator=generator)
                layer.running_var.uniform_(0.5, 2.0, generator=generator)
                layer.weight.uniform_(0.5, 1.5, generator=generator)
                layer.bias.uniform_(-0.2, 0.2, generator=generator)
    return module


def export(torch, module, batch):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(batch, 1, 28, 28),), buffer, input_names=["x"],
                          output_names=["y"], dynamo=False)
    return buffer.getvalue()


def session(ort, data):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def per_call(call, calls):
    start = time.thread_time()
    for _ in range(calls):
        call()
    return (time.thread_time() - start) / calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    import cnnext
    from cnnext import layers
    from cnnext.interop._onnx_file import parse_model
    from cnnext.interop._onnx_import import convert_model, require_onnx

    cnnext.set_num_threads(1)
    torch.set_num_threads(1)
    nets = {"lenet5": lenet5}
    if hasattr(layers, "BatchNorm2D") and hasattr(layers, "Residual"):
        nets["bn-residual"] = residual_net
    else:
        print("(no BatchNorm2D/Residual layers in this cnnext: the residual net is skipped)")
    rows = []
    for name, make in nets.items():
        torch.manual_seed(0)
        module = randomise_batchnorm(torch, make(torch)).eval()
        for batch in (int(b) for b in args.batches.split(",")):
            data = export(torch, module, batch)
            model = convert_model(parse_model(require_onnx(), data, name), None, name)
            runtime = session(ort, data)
            x = np.random.default_rng(2).standard_normal((batch, 1, 28, 28)).astype(np.float32)
            ours, theirs = model.forward(x), runtime.run(None, {"x": x})[0]
            error = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
            assert error < 1e-5, (name, batch, error)
            runs = {"cnnext": functools.partial(model.predict, x),
                    "onnxruntime": functools.partial(runtime.run, None, {"x": x})}
            calls = max(1, 2000 // batch)
            timings = {key: [] for key in runs}
            for _ in range(args.rounds):
                for key, run in runs.items():
                    timings[key].append(per_call(run, calls))
            medians = {k: statistics.median(v) for k, v in timings.items()}
            rows.append((name, batch, medians["cnnext"], medians["onnxruntime"], error))
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info
                    if line.startswith("model name")), "unknown CPU")
    print(f"{cpu}; cnnext {cnnext.__version__}, onnxruntime {ort.__version__}, 1 thread, "
          f"thread CPU time, median of {args.rounds} interleaved rounds")
    print(f"{'network':<12} {'batch':>5} {'cnnext':>10} {'onnxruntime':>12} {'ratio':>6} "
          f"{'max rel. diff':>14}")
    for name, batch, ours, theirs, error in rows:
        print(f"{name:<12} {batch:>5} {ours * 1e6:>8.1f}us {theirs * 1e6:>10.1f}us "
              f"{theirs / ours:>5.2f}x {error:>14.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

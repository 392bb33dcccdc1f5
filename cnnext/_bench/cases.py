"""The named benchmark cases: what is computed, on which shapes, and how much work it is.

Case names read ``<family>.<op>.<shape>``: ``conv2d.forward.notebook``,
``max_pool2d.backward.3x3s2``, ``train.lenet5.b64``, ``predict.lenet5.b1``,
``batch_norm2d.forward-backward.b64``.  Every case runs in
float32 and float64 unless it says otherwise.  A case makes its inputs from a
fixed seed and computes its float64 reference outputs with
``cnnext._reference``, against which every implementation is checked before
it is timed.

Work is counted as FLOPs (2 per multiply-add) for convolutions, training
steps and inference, and as bytes read plus written for pooling and the copy yardstick,
which are memory-bound.
"""

import fnmatch
from dataclasses import dataclass

import numpy as np

from .. import _reference
from . import nets

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class ConvShape:
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: int
    padding: int

    @property
    def out_hw(self):
        return tuple(_reference.output_size(size, kernel, self.stride, self.padding)
                     for size, kernel in ((self.h, self.r), (self.w, self.s)))

    @property
    def macs(self):
        ho, wo = self.out_hw
        return self.n * self.k * ho * wo * self.c * self.r * self.s

    def __str__(self):
        return (f"N={self.n} C={self.c} {self.h}x{self.w} K={self.k} {self.r}x{self.s} "
                f"stride {self.stride} pad {self.padding}")


CONV_SHAPES = {
    "notebook": ConvShape(256, 1, 28, 28, 8, 3, 3, 1, 0),
    "lenet-2": ConvShape(256, 8, 13, 13, 16, 5, 5, 1, 0),
    "cifar-1": ConvShape(64, 3, 32, 32, 32, 3, 3, 1, 1),
    "mid": ConvShape(32, 32, 16, 16, 64, 3, 3, 1, 1),
    "deep": ConvShape(16, 64, 8, 8, 128, 3, 3, 1, 1),
    "strided": ConvShape(32, 16, 32, 32, 32, 3, 3, 2, 1),
    "notebook-b1": ConvShape(1, 1, 28, 28, 8, 3, 3, 1, 0),
    "mid-b1": ConvShape(1, 32, 16, 16, 64, 3, 3, 1, 1),
}

# op -> (MAC passes, what it computes).  "forward-backward" is a hidden
# layer's whole step: forward, then input, weight and bias gradients.
CONV_OPS = {
    "forward": (1, "y = conv2d(x, w, b)"),
    "backward": (2, "gx, gw, gb = conv2d_backward(gy, x, w)"),
    "backward-weights": (1, "gw, gb = conv2d_backward(gy, x, w, need_input_grad=False)"),
    "forward-backward": (3, "y = conv2d(x, w, b); gx, gw, gb = conv2d_backward(gy, x, w)"),
}

POOL_INPUT = (64, 32, 32, 32)
# name -> (kernel, stride)
POOL_WINDOWS = {"2x2": (2, 2), "3x3s2": (3, 2)}


def _rng(name, dtype):
    return np.random.default_rng(list(f"{name}/{dtype}".encode()))


class Case:
    """A benchmark case.  Subclasses set the attributes and the two methods below."""

    name = ""
    family = ""
    op = ""
    description = ""
    dtypes = DTYPES
    images = 1  # images per call, for the per-image column

    def flops(self):
        """Floating-point operations per call, or None for memory-bound cases."""
        return None

    def nbytes(self, dtype):
        """Bytes read and written per call, or None for compute-bound cases."""
        return None

    def make_inputs(self, dtype):
        """The arguments of one call, from a fixed seed (a dict)."""
        raise NotImplementedError

    def reference(self, inputs):
        """Float64 reference outputs (a dict name -> array) for ``inputs``."""
        raise NotImplementedError


class ConvCase(Case):
    family = "conv2d"

    def __init__(self, op, shape_name):
        self.op, self.shape_name, self.shape = op, shape_name, CONV_SHAPES[shape_name]
        self.name = f"conv2d.{op}.{shape_name}"
        self.description = f"{CONV_OPS[op][1]}; {self.shape}"
        self.images = self.shape.n

    @property
    def need_input_grad(self):
        return self.op != "backward-weights"

    def flops(self):
        return 2 * self.shape.macs * CONV_OPS[self.op][0]

    def make_inputs(self, dtype):
        sh = self.shape
        rng = _rng(self.name, dtype)
        x = rng.standard_normal((sh.n, sh.c, sh.h, sh.w)).astype(dtype)
        w = (rng.standard_normal((sh.k, sh.c, sh.r, sh.s)) / np.sqrt(sh.c * sh.r * sh.s))
        b = rng.standard_normal(sh.k)
        gy = rng.standard_normal((sh.n, sh.k, *sh.out_hw))
        return {"x": x, "w": w.astype(dtype), "b": b.astype(dtype), "gy": gy.astype(dtype),
                "stride": sh.stride, "padding": sh.padding}

    def reference(self, inputs):
        x, w, gy = inputs["x"], inputs["w"], inputs["gy"]
        geometry = {"stride": inputs["stride"], "padding": inputs["padding"]}
        outputs = {}
        if self.op in ("forward", "forward-backward"):
            outputs["y"] = _reference.conv2d(x, w, inputs["b"], **geometry)
        if self.op != "forward":
            gx, gw, gb = _reference.conv2d_backward(
                gy, x, w, need_input_grad=self.need_input_grad, **geometry)
            outputs.update(gw=gw, gb=gb)
            if gx is not None:
                outputs["gx"] = gx
        return outputs


class PoolCase(Case):
    def __init__(self, kind, op, window):
        self.kind, self.op, self.window = kind, op, window
        self.family = f"{kind}_pool2d"
        self.kernel, self.stride = POOL_WINDOWS[window]
        self.name = f"{self.family}.{op}.{window}"
        n, c, h, w = POOL_INPUT
        self.out_shape = (n, c, *(_reference.output_size(size, self.kernel, self.stride, 0)
                                  for size in (h, w)))
        what = "y, idx = max_pool2d(x, k, s, return_indices=True)" if kind == "max" else \
            "y = avg_pool2d(x, k, s)"
        if op == "backward":
            what = ("gx = max_pool2d_backward(gy, idx, x.shape)" if kind == "max" else
                    "gx = avg_pool2d_backward(gy, x.shape, k, s)")
        self.description = f"{what}; x {POOL_INPUT}, k={self.kernel} s={self.stride}"
        self.images = n

    def nbytes(self, dtype):
        itemsize = np.dtype(dtype).itemsize
        big, small = np.prod(POOL_INPUT), np.prod(self.out_shape)
        index_bytes = 8 * small if self.kind == "max" else 0
        return int((big + small) * itemsize + index_bytes)

    def make_inputs(self, dtype):
        rng = _rng(self.name, dtype)
        size = int(np.prod(POOL_INPUT))
        # Distinct values: no ties, so every max-pool rule picks the same element.
        x = (rng.permutation(size) / size - 0.5).reshape(POOL_INPUT).astype(dtype)
        inputs = {"x": x, "kernel_size": self.kernel, "stride": self.stride,
                  "gy": rng.standard_normal(self.out_shape).astype(dtype)}
        if self.kind == "max" and self.op == "backward":
            _, inputs["idx"] = _reference.max_pool2d(x, self.kernel, self.stride,
                                                     return_indices=True)
        return inputs

    def reference(self, inputs):
        x, k, s = inputs["x"], inputs["kernel_size"], inputs["stride"]
        if self.kind == "max" and self.op == "forward":
            y, idx = _reference.max_pool2d(x, k, s, return_indices=True)
            return {"y": y, "idx": idx}
        if self.kind == "max":
            return {"gx": _reference.max_pool2d_backward(inputs["gy"], inputs["idx"], x.shape)}
        if self.op == "forward":
            return {"y": _reference.avg_pool2d(x, k, s)}
        return {"gx": _reference.avg_pool2d_backward(inputs["gy"], x.shape, k, s)}


class CopyCase(Case):
    """np.copyto of the pooling input: the memory-speed yardstick of the pooling cases."""

    family = "copy"
    op = "copyto"
    name = "copy.pool-input"
    description = f"np.copyto(out, x); x {POOL_INPUT}, the pooling input"
    images = POOL_INPUT[0]

    def nbytes(self, dtype):
        return int(2 * np.prod(POOL_INPUT) * np.dtype(dtype).itemsize)

    def make_inputs(self, dtype):
        return {"x": _rng(self.name, dtype).standard_normal(POOL_INPUT).astype(dtype)}

    def reference(self, inputs):
        return {"out": inputs["x"].astype(np.float64)}


# Fused convolution + [ReLU] + 2x2 max pooling: name -> (convolution, ReLU,
# whether the backward needs the input gradient).  The notebook's layer has
# no ReLU and, being the first layer, no input gradient; so has LeNet-5's
# first pair, whose second needs all three gradients.
FUSED_SHAPES = {
    "notebook": (CONV_SHAPES["notebook"], False, False),
    "lenet-1": (ConvShape(64, 1, 28, 28, 6, 5, 5, 1, 2), True, False),
    "lenet-2": (ConvShape(64, 6, 14, 14, 16, 5, 5, 1, 0), True, True),
}
FUSED_POOL = 2


class FusedCase(Case):
    """conv2d_max_pool2d (and its backward) against the unfused conv2d -> relu -> max_pool2d.

    Inputs are small multiples of powers of two, so that every implementation
    computes the convolution exactly and the pooled indices agree
    everywhere (ties go to the first maximum in all of them).
    """

    family = "fused"

    def __init__(self, op, shape_name):
        self.op, self.shape_name = op, shape_name
        self.shape, self.relu, self.need_input_grad = FUSED_SHAPES[shape_name]
        self.name = f"fused.{op}.{shape_name}"
        relu = "relu, " if self.relu else ""
        if op == "forward":
            what = f"y, idx = conv2d_max_pool2d(x, w, b, {relu}pool_size={FUSED_POOL})"
        else:
            what = (f"gx, gw, gb = conv2d_max_pool2d_backward(gy, idx, x, w, {relu}"
                    f"need_input_grad={self.need_input_grad})")
        self.description = f"{what}; {self.shape}"
        self.images = self.shape.n

    def flops(self):
        passes = 1 if self.op == "forward" else 1 + self.need_input_grad
        return 2 * self.shape.macs * passes

    @property
    def geometry(self):
        return {"stride": self.shape.stride, "padding": self.shape.padding,
                "pool_size": FUSED_POOL, "relu": self.relu}

    def make_inputs(self, dtype):
        sh = self.shape
        rng = _rng(self.name, dtype)
        x = rng.integers(-16, 17, (sh.n, sh.c, sh.h, sh.w)) / 16
        w = rng.integers(-16, 17, (sh.k, sh.c, sh.r, sh.s)) / 64
        b = rng.integers(-16, 17, sh.k) / 16
        inputs = {"x": x.astype(dtype), "w": w.astype(dtype), "b": b.astype(dtype),
                  **self.geometry}
        if self.op == "backward":
            conv = _reference.conv2d(x, w, b, sh.stride, sh.padding)
            if self.relu:
                conv = _reference.relu(conv)
            y, idx = _reference.max_pool2d(conv, FUSED_POOL, return_indices=True)
            inputs.update(conv=conv.astype(dtype), y=y.astype(dtype), idx=idx,
                          gy=rng.standard_normal(y.shape).astype(dtype),
                          need_input_grad=self.need_input_grad)
        return inputs

    def reference(self, inputs):
        geometry = {"stride": inputs["stride"], "padding": inputs["padding"],
                    "pool_size": inputs["pool_size"], "relu": inputs["relu"]}
        if self.op == "forward":
            y, idx = _reference.conv2d_max_pool2d(inputs["x"], inputs["w"], inputs["b"],
                                                  **geometry)
            return {"y": y, "idx": idx}
        gx, gw, gb = _reference.conv2d_max_pool2d_backward(
            inputs["gy"], inputs["idx"], inputs["x"], inputs["w"], y=inputs["y"],
            need_input_grad=self.need_input_grad, **geometry)
        outputs = {"gw": gw, "gb": gb}
        if gx is not None:
            outputs["gx"] = gx
        return outputs
LAYER_INPUT = (64, 32, 16, 16)


class BatchNormCase(Case):
    """A BatchNorm2D training step's kernels: forward with the batch's statistics
    (updating the running ones), then the gradients of x, weight and bias."""

    family = "batch_norm2d"
    op = "forward-backward"
    name = "batch_norm2d.forward-backward.b64"
    description = (f"y = batch_norm2d(x, rm, rv, w, b, training=True); gx, gw, gb = "
                   f"batch_norm2d_backward(gy, x, ...); x {LAYER_INPUT}")
    images = LAYER_INPUT[0]

    def nbytes(self, dtype):
        # Reading x and gy, writing y and gx: the least any implementation moves.
        return int(4 * np.prod(LAYER_INPUT) * np.dtype(dtype).itemsize)

    def make_inputs(self, dtype):
        rng = _rng(self.name, dtype)
        c = LAYER_INPUT[1]
        return {"x": (rng.standard_normal(LAYER_INPUT) * 2 + 1).astype(dtype),
                "gy": rng.standard_normal(LAYER_INPUT).astype(dtype),
                "weight": rng.uniform(0.5, 1.5, c).astype(dtype),
                "bias": rng.standard_normal(c).astype(dtype),
                "running_mean": np.zeros(c, dtype), "running_var": np.ones(c, dtype)}

    def reference(self, inputs):
        x, w = inputs["x"], inputs["weight"]
        y, mean, invstd = _reference.batch_norm2d(x, None, None, w, inputs["bias"], True,
                                                  return_stats=True)
        gx, gw, gb = _reference.batch_norm2d_backward(inputs["gy"], x, mean, invstd, w)
        return {"y": y, "gx": gx, "gw": gw, "gb": gb}


class DepthwiseCase(Case):
    """A depthwise 3x3 convolution's training step: forward, then the input, weight
    and bias gradients (conv2d with groups == channels, padding 1)."""

    family = "depthwise2d"
    op = "forward-backward"
    images = LAYER_INPUT[0]

    def __init__(self, stride=1):
        self.stride = stride
        self.name = "depthwise2d.forward-backward.b64" + ("" if stride == 1 else f"-s{stride}")
        self.out_shape = (*LAYER_INPUT[:2], *((n - 1) // stride + 1 for n in LAYER_INPUT[2:]))
        self.description = (f"y = conv2d(x, w, b, {stride}, 1, groups=32); gx, gw, gb = "
                            f"conv2d_backward(gy, x, w, {stride}, 1, groups=32); x "
                            f"{LAYER_INPUT}, w (32, 1, 3, 3)")

    def flops(self):
        return 2 * 3 * int(np.prod(self.out_shape)) * 9

    def make_inputs(self, dtype):
        rng = _rng(self.name, dtype)
        c = LAYER_INPUT[1]
        return {"x": rng.standard_normal(LAYER_INPUT).astype(dtype),
                "w": (rng.standard_normal((c, 1, 3, 3)) / 3).astype(dtype),
                "b": rng.standard_normal(c).astype(dtype),
                "gy": rng.standard_normal(self.out_shape).astype(dtype),
                "stride": self.stride}

    def reference(self, inputs):
        x, w, gy, stride = inputs["x"], inputs["w"], inputs["gy"], inputs["stride"]
        ys, gxs, gws, gbs = [], [], [], []
        for c in range(x.shape[1]):
            part = slice(c, c + 1)
            ys.append(_reference.conv2d(x[:, part], w[part], inputs["b"][part], stride, 1))
            gx, gw, gb = _reference.conv2d_backward(gy[:, part], x[:, part], w[part], stride, 1)
            gxs.append(gx)
            gws.append(gw)
            gbs.append(gb)
        return {"y": np.concatenate(ys, axis=1), "gx": np.concatenate(gxs, axis=1),
                "gw": np.concatenate(gws), "gb": np.concatenate(gbs)}


class TrainCase(Case):
    """Training steps of a whole network: plain SGD on batches of ``batch`` images."""

    family = "train"
    op = "step"
    learning_rate = 0.005  # the notebook's
    per_call = False  # one fit call for all the steps of a timed run

    def __init__(self, network_name, batch):
        self.network = nets.NETWORKS[network_name]
        self.batch = batch
        self.images = batch
        self.name = f"train.{network_name}.b{batch}"
        self.description = (f"one SGD step of the {network_name} network "
                            f"({len(self.network.layers)} layers) on {batch} image(s)")
        # Steps per timed run of ``fit``: enough that its per-call work (checks,
        # history) is not what a batch of one measures.
        self.steps = max(2, 64 // batch)

    def flops(self):
        return self.batch * nets.training_flops_per_image(self.network)

    def make_inputs(self, dtype):
        rng = _rng(self.name, dtype)
        count = self.batch * self.steps
        images = rng.uniform(-0.5, 0.5, (count, *self.network.input_shape)).astype(dtype)
        return {
            "images": images,
            "labels": rng.integers(0, self.network.n_classes, count),
            "params": nets.init_params(self.network, rng),
            "lr": self.learning_rate,
        }

    def reference(self, inputs):
        """Loss and parameter changes of one step on the first batch from the initial parameters."""
        return train_reference(self.network, inputs["params"], inputs["images"][: self.batch],
                               inputs["labels"][: self.batch], inputs["lr"])


class FitCallsCase(TrainCase):
    """Per-image training as a user's own loop: one ``fit`` call of one step per image."""

    per_call = True

    def __init__(self, network_name):
        super().__init__(network_name, 1)
        self.name = f"train.{network_name}.b1-calls"
        self.description = (f"a loop calling fit once per image: one SGD step of the "
                            f"{network_name} network on one image per call")


class PredictCase(Case):
    """Inference of a whole network: class probabilities for a batch of ``batch`` images."""

    family = "predict"
    op = "predict"

    def __init__(self, network_name, batch):
        self.network = nets.NETWORKS[network_name]
        self.batch = batch
        self.images = batch
        self.name = f"predict.{network_name}.b{batch}"
        self.description = (f"probs = model.predict(x): softmax of the {network_name} network "
                            f"({len(self.network.layers)} layers) on {batch} image(s)")

    def flops(self):
        return self.batch * nets.inference_flops_per_image(self.network)

    def make_inputs(self, dtype):
        rng = _rng(self.name, dtype)
        images = rng.uniform(-0.5, 0.5, (self.batch, *self.network.input_shape)).astype(dtype)
        return {"images": images, "params": nets.init_params(self.network, rng)}

    def reference(self, inputs):
        logits = nets.forward(_reference, self.network, inputs["params"],
                              inputs["images"].astype(np.float64))
        return {"probs": _reference.softmax(logits)}


class OverheadCase(Case):
    """A repeated functional or layer call of the seed network at batch 1 (_bench/overhead.py)."""

    family = "overhead"

    def __init__(self, op):
        self.op = op
        self.name = f"overhead.{op}"
        self.description = (f"{op}, shapes and dtypes of the previous call: the time above "
                            f"its kernel (seed network, batch 1)")

    def make_inputs(self, dtype):
        from .overhead import OPS

        return OPS[self.op].make(dtype, _rng(self.name, dtype))

    def reference(self, inputs):
        from .overhead import OPS

        clean = {k: v.astype(np.float64) if v.dtype.kind == "f" else v
                 for k, v in inputs.items()}
        return OPS[self.op].reference(clean)


# A parameter change is compared relative to at least this fraction of the
# largest initial weight: w - lr * g rounds to the precision of w, so a tiny
# step cannot be checked more finely than that.
STEP_FLOOR = {"float32": 1e-3, "float64": 1e-6}


def train_reference(network, params, images, labels, lr):
    """Float64 reference of one SGD step: {"loss": ..., "<layer>.<param>": change}."""
    updated = [{name: value.copy() for name, value in p.items()} for p in params]
    loss = nets.sgd_step(_reference, network, updated, images.astype(np.float64), labels, lr)
    return {"loss": np.float64(loss), **_steps(params, updated)}


def _steps(initial, updated):
    return {f"{i}.{name}": np.asarray(new[name], dtype=np.float64)
            - old[name].astype(new[name].dtype).astype(np.float64)
            for i, (old, new) in enumerate(zip(initial, updated, strict=True)) for name in old}


def train_checks(reference, loss, initial, updated, dtype):
    """[(name, got, want, scale)] for a training step that took ``initial`` to ``updated``."""
    floor = STEP_FLOOR[dtype] * max(float(np.abs(v).max()) for p in initial for v in p.values())
    got = {"loss": np.float64(loss), **_steps(initial, updated)}
    return [(name, got[name], want, None if name == "loss" else max(np.abs(want).max(), floor))
            for name, want in reference.items()]


def _all_cases():
    cases = [ConvCase(op, shape) for shape in CONV_SHAPES for op in CONV_OPS]
    cases += [PoolCase(kind, op, window) for kind in ("max", "avg") for window in POOL_WINDOWS
              for op in ("forward", "backward")]
    cases.append(CopyCase())
    cases += [FusedCase(op, shape) for shape in FUSED_SHAPES for op in ("forward", "backward")]
    cases += [TrainCase("notebook", batch) for batch in (1, 64, 256)]
    cases.append(FitCallsCase("notebook"))
    cases.append(TrainCase("lenet5", 64))
    cases += [PredictCase(network, batch) for network in ("notebook", "lenet5")
              for batch in (1, 64)]
    from .overhead import OPS

    cases += [OverheadCase(op) for op in OPS]
    cases += [BatchNormCase(), DepthwiseCase(), DepthwiseCase(stride=2)]
    cases += [TrainCase("resnet8", batch) for batch in (1, 64)]
    cases += [PredictCase("resnet8", batch) for batch in (1, 64)]
    return {case.name: case for case in cases}


CASES = _all_cases()

# The --quick suite: every family (each conv op, each pooling op, the copy,
# the fused pair, training at batch 1 and 64 of both networks, inference of
# both at batch 1 and 64, the overhead of a functional and of a layer call) on
# the shapes that matter most.
QUICK = (
    "conv2d.forward.notebook", "conv2d.forward.mid", "conv2d.backward.mid",
    "conv2d.backward-weights.notebook", "conv2d.forward-backward.notebook",
    "conv2d.forward-backward.notebook-b1",
    "max_pool2d.forward.2x2", "max_pool2d.backward.2x2",
    "avg_pool2d.forward.2x2", "avg_pool2d.backward.2x2", "copy.pool-input",
    "fused.forward.notebook", "fused.backward.notebook",
    "train.notebook.b1", "train.notebook.b64", "train.lenet5.b64",
    "predict.notebook.b1", "predict.notebook.b64", "predict.lenet5.b1", "predict.lenet5.b64",
    "overhead.conv2d", "overhead.Conv2D.forward",
    "batch_norm2d.forward-backward.b64", "depthwise2d.forward-backward.b64",
)


class UnknownCaseError(ValueError):
    """A case pattern that matches no case."""


def select(patterns=None, quick=False):
    """The cases matching any of the glob ``patterns`` (all, or the quick set, when None).

    The copy yardstick comes along with any pooling case, since the pooling
    table is read relative to it.
    """
    pool = [CASES[name] for name in QUICK] if quick else list(CASES.values())
    if not patterns:
        chosen = pool
    else:
        chosen = []
        for pattern in patterns:
            matched = [case for case in CASES.values() if fnmatch.fnmatchcase(case.name, pattern)
                       or case.name.startswith(pattern + ".")]
            if not matched:
                raise UnknownCaseError(f"unknown case {pattern!r} (run with --list to see the "
                                       "case names; globs such as 'conv2d.*.mid' work)")
            chosen += [case for case in matched if case not in chosen]
    if any(case.family.endswith("pool2d") for case in chosen) and CASES["copy.pool-input"] \
            not in chosen:
        chosen.append(CASES["copy.pool-input"])
    return sorted(chosen, key=list(CASES.values()).index)

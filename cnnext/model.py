"""Sequential: a stack of layers with fit / evaluate / predict / summary / save.

Input images: uint8 arrays are scaled as the seed notebook does,
``x / 255 - 0.5`` (so pixels lie in [-0.5, 0.5]), computed in the model's
dtype; float arrays are used as given (cast to the model's dtype).
(N, H, W) arrays get a channel axis, (N, 1, H, W), unless the model declares
2-D examples.

Every pass runs on a *plan* (cnnext._plans): per (input shape, batch size,
dtype, mode) the network is validated once, its buffers allocated once and
its kernel calls recorded as compiled steps; ``predict``, ``evaluate`` and
``forward`` then run a whole pass, and ``fit`` a run of whole training steps
(staging, forward, loss, backward, optimiser update), in one call with the
GIL released, returning to Python only for the progress bar, the NaN rule
and the end of the epoch.  A network with a layer that has no compiled
steps runs layer by layer instead (``_run_forward`` / ``_run_backward``,
the reference the plans are tested against, bit for bit).  Both paths
compute a Conv2D [-> ReLU] -> MaxPool2D run with the fused kernels
(cnnext/_plans/fusion.py).

A ``fit`` call repeating the previous validated call (X and y of the same
shapes and dtypes, the same optimiser, loss, options and callbacks, with
nothing its set-up depended on changed since: layers, parameter, gradient
and buffer arrays, the optimiser's attributes and state) is recognised in C
(``_program.FitMemo``) and skips the checks and set-up but the labels'
range: a per-image loop of ``fit`` calls pays little above its steps.

Threads: concurrent ``predict``, ``evaluate`` and ``forward`` calls on one
model each run on a plan of their own (plans are never shared by two calls
at once), so each gets what a serial call gets; the layer-by-layer path
takes the model's lock instead.  ``fit`` refuses to start while the model,
or any of its layers, is being trained in another thread.

A pickled model carries its layers (weights), optimiser and loss, never its
plans or buffers.
"""

import contextlib
import functools
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np

from . import _backup, _checkpoint, _plans, _validation, losses, optim
from ._kernels import _program
from ._plans import folding, fusion  # noqa: F401 (they register their rewrites)
from ._progress import ProgressBar
from ._typing import ArrayLike, FloatArray, Path, Seed
from .history import History
from .layers.base import DTYPES, Layer, check_seed, has_compiled_steps, random_generator

__all__ = ["Sequential", "load_model"]

# Images per staging chunk: big enough to amortise the gather and scaling
# calls over many small batches, small enough to stay in cache.
_CHUNK_IMAGES = 1024
_NAN_POLICIES = ("raise", "skip")
# Images per compiled run of training steps: returns to Python (signals,
# such as Ctrl-C, are handled) at least every few milliseconds.
_RUN_IMAGES = 4096
# Training steps between updates of the progress bar's loss figure.
_POSTFIX_STEPS = 64
# Largest snapshot of the parameters a model keeps between fit calls (see
# _snapshot): a small network's, never a copy of a large one's for nothing.
_KEPT_SNAPSHOT_BYTES = 1 << 20
_UINT8 = np.dtype(np.uint8)
_NO_SWITCH = contextlib.nullcontext()  # reentrant: no state
_STAGEABLE = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))
_TABLES = {dtype: _plans.uint8_table(dtype) for dtype in DTYPES.values()}
# Layers being trained, id -> the model training them (one fit at a time each).
_training = {}
_training_lock = threading.Lock()
# Attributes a pickle leaves out (rebuilt on first use).
_TRANSIENT = ("_plans", "_lock", "_fit_lock", "_threads", "_layer_checks", "_known_shapes",
              "_layerwise", "_uncompiled", "_predict_memo", "_segments", "_snapshot_copies",
              "_fit_memo")


class Sequential:
    """Sequential(layers, input_shape=None)

    A network that applies ``layers`` one after the other.

    Parameters
    ----------
    layers : list of cnnext.layers.Layer
        At least one layer; layers with parameters must share one dtype.
    input_shape : tuple of int, optional
        Shape of one example, e.g. (1, 28, 28); checked against the layers
        and used by ``summary``.  Learnt from the data by ``fit`` otherwise.

    Attributes
    ----------
    layers : list
    optimizer : cnnext.optim.Optimizer or None
        The optimiser of the last ``fit`` (saved with the model; the next
        ``fit`` without an optimiser continues with it).
    loss : the loss of the last ``fit`` (softmax cross-entropy by default).

    Examples
    --------
    >>> import cnnext as cx
    >>> from cnnext.layers import Conv2D, Dense, Flatten, MaxPool2D
    >>> (X, y), (Xt, yt) = cx.datasets.load_sample()
    >>> model = cx.Sequential([Conv2D(1, 8, 3, seed=0), MaxPool2D(2), Flatten(),
    ...                        Dense(8 * 13 * 13, 10, seed=0)])
    >>> history = model.fit(X[:500], y[:500], epochs=2, batch_size=16,
    ...                     optimizer=cx.optim.Adam(), seed=0, progress=False)
    >>> history.epochs, sorted(history)
    (2, ['accuracy', 'loss', 'seconds'])
    >>> loss, accuracy = model.evaluate(Xt, yt)
    >>> model.predict(Xt[:3]).shape                      # class probabilities
    (3, 10)
    """

    def __init__(self, layers: Sequence[Layer], input_shape: Sequence[int] | None = None) -> None:
        if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
            raise TypeError(f"Sequential: layers must be a list of layers, got "
                            f"{type(layers).__name__}")
        if not layers:
            raise ValueError("Sequential: layers must not be empty")
        seen = set()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layers[{i}] is a {type(layer).__name__}, "
                                f"not a cnnext layer")
            for leaf in layer._leaves():
                # A layer keeps its last input for backward: it cannot appear twice.
                if id(leaf) in seen:
                    raise ValueError(f"Sequential: layers[{i}] ({leaf!r}) appears twice; "
                                     f"build a new layer for each position")
                seen.add(id(leaf))
        dtypes = {layer.dtype for layer in layers if layer.dtype is not None}
        if len(dtypes) > 1:
            raise TypeError(f"Sequential: the layers mix dtypes {sorted(d.name for d in dtypes)}; "
                            f"build them all with the same dtype")
        self.layers = list(layers)
        self._init_transient()
        self.dtype = dtypes.pop() if dtypes else DTYPES["float32"]
        self.input_shape = None
        if input_shape is not None:
            if not isinstance(input_shape, (tuple, list)):
                raise TypeError(f"Sequential: input_shape must be a tuple of ints such as "
                                f"(1, 28, 28), got {input_shape!r}")
            shape = tuple(_validation.to_int("Sequential", "input_shape", d) for d in input_shape)
            self._shapes("Sequential", shape)
            self.input_shape = shape
        self.optimizer = None
        self.loss = losses.get("softmax_cross_entropy")

    def _init_transient(self):
        self._plans = _plans.PlanCache()
        self._lock = threading.RLock()      # the layer-by-layer path
        self._fit_lock = threading.Lock()
        self._threads = threading.local()   # per thread: the plan of the last forward
        self._layer_checks = None
        self._known_shapes = {}
        self._layerwise = None
        # (plan key, the layers' modes) whose plan a layer had no steps for.
        self._uncompiled = set()
        # (X shape, X dtype, batch_size, result shape, runs, whether no layer
        # computes by mode) of the last predict whose X needed no conversion:
        # a call with the same is not re-checked.
        self._predict_memo = None
        self._segments = None
        self._snapshot_copies = {}  # name -> the arrays of the last _snapshot
        # The last validated fit call whose repeats may skip its checks and
        # set-up (a FitMemo, see _remember_fit), or None.
        self._fit_memo = None

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in _TRANSIENT:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_transient()

    # --------------------------------------------------------------- structure
    def __repr__(self) -> str:
        inner = "".join(f"\n    {layer!r}," for layer in self.layers)
        return f"Sequential([{inner}\n])"

    def __call__(self, x: ArrayLike) -> FloatArray:
        """model(x) is model.forward(x)."""
        return self.forward(x)

    @property
    def training(self) -> bool:
        """True in training mode (after ``train()``, the default), False after ``eval()``."""
        return all(layer.training for layer in self.layers)

    def train(self, mode: bool = True) -> "Sequential":
        """train(mode=True)

        Put every layer in training mode (BatchNorm2D normalises with the
        batch's statistics and updates its running ones, Dropout drops), or
        in evaluation mode with ``mode=False``.  ``forward`` and ``model(x)``
        compute in the current mode; ``fit`` trains in training mode and
        ``evaluate`` / ``predict`` run in evaluation mode whatever the
        current mode, which they leave as it was.  Returns the model.
        """
        if not isinstance(mode, (bool, np.bool_)):
            raise TypeError(f"Sequential.train: mode must be True or False, got {mode!r}")
        for layer in self.layers:
            layer.train(bool(mode))
        return self

    def eval(self) -> "Sequential":
        """eval()

        Put every layer in evaluation mode (``train(False)``).  Returns the model.
        """
        return self.train(False)

    def _in_mode(self, training):
        """Whether every layer that computes by mode is in training (or evaluation) mode."""
        for layer in self.layers:
            if layer.training != training and layer._depends_on_mode:
                return False
        return True

    def _mode(self, training):
        """A context running its body with every layer in training (or evaluation)
        mode, the layers' modes restored afterwards (nothing to do, the common
        case, costs no generator: a per-image fit call enters one)."""
        return _NO_SWITCH if self._in_mode(training) else self._switched_mode(training)

    @contextlib.contextmanager
    def _switched_mode(self, training):
        modes = [layer.training for layer in self.layers]
        for layer in self.layers:
            layer._set_training(training)
        try:
            yield
        finally:
            for layer, mode in zip(self.layers, modes, strict=True):
                layer._set_training(mode)

    def parameters(self) -> dict[str, FloatArray]:
        """Every parameter as {"<layer index>.<name>": array} (the arrays themselves)."""
        return {f"{i}.{name}": array for i, layer in enumerate(self.layers)
                for name, array in layer.params.items()}

    def gradients(self) -> dict[str, FloatArray]:
        """The gradient arrays of the last backward pass, named as ``parameters()``."""
        return {f"{i}.{name}": array for i, layer in enumerate(self.layers)
                for name, array in layer.grads.items()}

    def buffers(self) -> dict[str, np.ndarray]:
        """Every buffer (running statistics, ...) as {"<layer index>.<name>": array}
        (the arrays themselves)."""
        return {f"{i}.{name}": array for i, layer in enumerate(self.layers)
                for name, array in layer.buffers.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """state_dict()

        Copies of every parameter and buffer, keyed and laid out as the
        matching ``torch.nn.Sequential``'s ``state_dict()``: "0.weight",
        "1.running_mean", "3.block.0.weight", ...  Conv2D weights are
        (out_channels, in_channels / groups, kh, kw), Dense weights
        (out_features, in_features), BatchNorm2D's num_batches_tracked a 0-d
        int64 array.  ``{k: torch.from_numpy(v) for k, v in d.items()}``
        loads into that PyTorch model (a Residual is a module with
        ``nn.Sequential`` submodules ``block`` and ``shortcut``;
        GlobalAvgPool2D is ``nn.Sequential(nn.AdaptiveAvgPool2d(1),
        nn.Flatten())``).
        """
        return {f"{i}.{name}": array.copy() for i, layer in enumerate(self.layers)
                for name, array in layer.state_items()}

    def load_state_dict(self, state_dict: Any) -> None:
        """load_state_dict(state_dict)

        Copy the values of ``state_dict`` (a mapping with exactly the keys of
        ``state_dict()``; NumPy arrays, array-likes or PyTorch CPU tensors of
        the same shapes, finite real numbers) into the model's parameters
        and buffers, converted to their dtypes.  Everything is checked before
        anything is copied: on error the model is unchanged.
        """
        owner = "Sequential.load_state_dict"
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"{owner}: state_dict must be a mapping of names to arrays, got "
                            f"{type(state_dict).__name__}")
        own = {f"{i}.{name}": array for i, layer in enumerate(self.layers)
               for name, array in layer.state_items()}
        buffers = self.buffers()
        keys = list(state_dict.keys())
        missing = sorted(set(own) - set(keys))
        unexpected = sorted(set(keys) - set(own), key=str)
        if missing or unexpected:
            raise ValueError(f"{owner}: state_dict has missing keys {missing[:8]} and "
                             f"unexpected keys {unexpected[:8]}")
        values = {}
        for name, target in own.items():
            value = state_dict[name]
            if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
                value = value.detach().cpu().numpy()
            try:
                array = np.asarray(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{owner}: state_dict[{name!r}] is not an array ({exc})") from None
            if array.dtype.kind not in "iuf":
                raise TypeError(f"{owner}: state_dict[{name!r}] must hold real numbers, got "
                                f"dtype {array.dtype}")
            if array.shape != target.shape:
                raise ValueError(f"{owner}: state_dict[{name!r}] has shape {array.shape}, the "
                                 f"model needs {target.shape}")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise ValueError(f"{owner}: state_dict[{name!r}] holds NaN or infinite values")
            if target.dtype.kind != "f":
                if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
                    raise ValueError(f"{owner}: state_dict[{name!r}] must hold integers")
                if array.size and array.min() < 0:
                    raise ValueError(f"{owner}: state_dict[{name!r}] must be >= 0")
            if name in buffers:
                index, _, inner = name.partition(".")
                problem = self.layers[int(index)]._invalid_buffer(inner, array)
                if problem:
                    raise ValueError(f"{owner}: state_dict[{name!r}]: {problem}")
            values[name] = array
        for name, target in own.items():
            np.copyto(target, values[name], casting="unsafe")

    def num_parameters(self) -> int:
        return sum(layer.num_parameters() for layer in self.layers)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """output_shape(input_shape)

        Shape of one example's output for one example's input shape.
        """
        return self._shapes("Sequential.output_shape", tuple(input_shape))[-1]

    def _shapes(self, owner, example_shape):
        """Every layer's output shape for ``example_shape``, or a ValueError naming the layer."""
        self._check_layers()
        known = self._known_shapes.get(example_shape)
        if known is not None:
            return known
        shapes = [example_shape]
        for i, layer in enumerate(self.layers):
            try:
                shapes.append(tuple(layer.output_shape(shapes[-1])))
            except ValueError as exc:
                raise ValueError(f"{owner}: examples of shape {example_shape} do not fit "
                                 f"layer {i}: {exc}") from None
        if len(self._known_shapes) >= 64:
            self._known_shapes.clear()
        self._known_shapes[example_shape] = shapes
        return shapes

    # ------------------------------------------------------------------ plans
    def _check_layers(self):
        """The identity checks of the layer list, rebuilt (forgetting what was
        learnt about the old list) when it changed."""
        checks = self._layer_checks
        if checks is None or _program.changed(checks) >= 0:
            layers = self.layers
            if not isinstance(layers, list) or not all(isinstance(x, Layer) for x in layers):
                raise TypeError("Sequential: layers must be a list of cnnext layers")
            checks = ((self.__dict__, "layers", layers), (layers, None, len(layers)),
                      *((layers, i, layer) for i, layer in enumerate(layers)))
            self._layer_checks, self._known_shapes, self._layerwise = checks, {}, None
            self._uncompiled = set()
            self._segments = None
        return checks

    def _passes(self):
        """The layer-by-layer path's steps: the layers, with each run the plans
        fuse (Conv2D [-> ReLU] -> MaxPool2D, cnnext/_plans/fusion.py) as one."""
        self._check_layers()
        if self._segments is None:
            self._segments = fusion.segments(self.layers)
        return self._segments

    # True: every pass layer by layer (tests compare the plans with it).
    _force_layers = False

    def _compiled(self):
        """Whether the passes run on plans (every layer has compiled steps and the
        loss is the compiled one), rather than layer by layer."""
        self._check_layers()
        if self._force_layers:
            return False
        if self._layerwise is None:
            self._layerwise = not (
                type(self.loss) is losses.SoftmaxCrossEntropy
                and all(has_compiled_steps(layer) for layer in self.layers))
        return not self._layerwise

    def _acquire(self, mode, batch, example_shape):
        """A plan of ``mode`` for batches of ``batch`` examples of ``example_shape``,
        for this caller alone until ``_release``; None when the network runs
        layer by layer (in that mode: Dropout has steps in evaluation only)."""
        key = (mode, batch, example_shape)
        if self._uncompiled and (key, self._modes()) in self._uncompiled:
            return None
        try:
            return self._plans.acquire(key, self._build_plan)
        except _plans.NotCompiled:
            self._uncompiled.add((key, self._modes()))
            return None

    def _modes(self):
        return tuple(layer.training for layer in self.layers)

    def _build_plan(self, key):
        mode, batch, example_shape = key
        return _plans.NetworkPlan(self.layers, example_shape, batch, self.dtype, mode,
                                  self._check_layers())

    def _release(self, plan):
        self._plans.release(plan.key, plan)

    def _stageable(self, X):
        """``X`` as examples the plans stage: uint8/float32/float64, each example
        C-contiguous (a copy or a cast only when needed)."""
        if X.dtype not in _STAGEABLE:
            return X.astype(self.dtype)
        if not X.flags.c_contiguous and len(X) and not X[0].flags.c_contiguous:
            return np.ascontiguousarray(X)
        return X

    def summary(self, input_shape: Sequence[int] | None = None, file: IO[str] | None = None,
                ) -> None:
        """summary(input_shape=None, file=None)

        Print a table of the layers with their output shapes and parameter
        counts to ``file`` (standard output by default).  ``input_shape``
        defaults to the model's ``input_shape``; without either the output
        shapes are left out.
        """
        input_shape = self.input_shape if input_shape is None else tuple(input_shape)
        if input_shape is None:  # a first layer taking flat examples fixes their shape
            input_shape = _flat_input_shape(self.layers[0])
        shapes = self._shapes("Sequential.summary", input_shape) if input_shape else None
        rows = [("#", "layer", "output shape", "parameters")]
        for i, layer in enumerate(self.layers):
            shape = str(shapes[i + 1]) if shapes else "?"
            inner = getattr(layer, "sublayer_shapes", None)
            if inner is None:
                rows.append((str(i), repr(layer), shape, f"{layer.num_parameters():,}"))
                continue
            rows.append((str(i), type(layer).__name__, shape, f"{layer.num_parameters():,}"))
            if shapes:
                nested = inner(shapes[i])
            else:
                nested = [(f"{prefix}.{j}", sub, None) for prefix in ("block", "shortcut")
                          for j, sub in enumerate(getattr(layer, prefix) or ())]
            for name, sub, sub_shape in nested:
                rows.append((f"{i}.{name}", f"  {sub!r}", "?" if sub_shape is None
                             else str(sub_shape), f"{sub.num_parameters():,}"))
        widths = [max(len(row[k]) for row in rows) for k in range(4)]
        rule = "-" * (sum(widths) + 6)
        unknown = "? (pass input_shape=..., e.g. (1, 28, 28), or fit once to see the shapes)"
        lines = [f"Sequential, {self.dtype.name}, input {input_shape or unknown}", rule]
        for n, row in enumerate(rows):
            lines.append(f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}"
                         f"  {row[3]:>{widths[3]}}")
            if n == 0:
                lines.append(rule)
        lines += [rule, f"total parameters: {self.num_parameters():,}"]
        print("\n".join(lines), file=sys.stdout if file is None else file)

    # ----------------------------------------------------- forward / backward
    def forward(self, x: FloatArray) -> FloatArray:
        """forward(x)

        The network's raw outputs (e.g. logits) for a float batch ``x`` of
        the model's dtype; remembers what ``backward`` needs (per thread:
        ``backward`` follows the calling thread's last ``forward``).
        Returns a new array.
        """
        x = _validation.float_array("Sequential.forward", "x", x)
        if x.dtype != self.dtype:
            raise TypeError(f"Sequential.forward: x has dtype {x.dtype}, the model computes in "
                            f"{self.dtype}")
        if x.ndim < 1:
            raise ValueError("Sequential.forward: x must have a batch axis")
        self._shapes("Sequential.forward", x.shape[1:])
        last = getattr(self._threads, "plan", None)
        self._threads.plan = None
        if last is not None and last != "layers":
            self._release(last)
        plan = self._acquire("backward", len(x), x.shape[1:]) if (
            len(x) and self._compiled()) else None
        if plan is None:
            with self._lock:
                out = x
                for layer in self._passes():
                    out = layer._forward(out, reuse=False)
                self._threads.plan = "layers"
            return out.copy() if np.may_share_memory(out, x) else out
        plan.draw_keys(1)
        status, where = plan.runner.forward_batch(self._stageable(x))
        if status:
            self._release(plan)
            _plans.network.raise_status("Sequential.forward", status, where,
                                        plan.forward_program)
        self._threads.plan = plan
        return plan.output.copy()

    def backward(self, gy: FloatArray) -> FloatArray:
        """backward(gy)

        Back-propagate ``gy``, the gradient of the loss with respect to the
        calling thread's last ``forward``'s output: fills every layer's
        ``grads`` and returns the gradient with respect to that forward's
        input.
        """
        plan = getattr(self._threads, "plan", None)
        if plan is None:
            raise RuntimeError("Sequential.backward called before forward")
        if plan == "layers":
            with self._lock:
                for layer in reversed(self._passes()):
                    gy = layer.backward(gy)
            return gy
        if plan.stale():
            raise RuntimeError("Sequential.backward: the layers or their parameters changed "
                               "since the last forward; call forward again")
        gy = _validation.float_array("Sequential.backward", "gy", gy)
        if gy.shape != plan.output.shape or gy.dtype != self.dtype:
            raise ValueError(f"Sequential.backward: gy must have shape {plan.output.shape} and "
                             f"dtype {self.dtype} (the last forward's output), got shape "
                             f"{gy.shape} and dtype {gy.dtype}")
        np.copyto(plan.output_gradient, gy)
        status, where = plan.runner.backward_batch()
        if status:
            _plans.network.raise_status("Sequential.backward", status, where,
                                        plan.backward_program)
        return plan.input_gradient.copy()

    def _run_forward(self, x):
        for layer in self._passes():
            x = layer._forward(x, True)
        return x

    def _run_backward(self, gy):
        layers = self._passes()
        for i in range(len(layers) - 1, 0, -1):
            gy = layers[i]._backward(gy, True, True)
        layers[0]._backward(gy, False, True)

    # ------------------------------------------------------------ data checks
    def _images(self, owner, name, X):
        """``X`` as (N, ...) with a channel axis added to (N, H, W), whether it is uint8
        (to scale), and the shape of one example's output."""
        if not isinstance(X, np.ndarray):
            try:
                X = np.asarray(X)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{owner}: {name} must be an array, got {type(X).__name__} "
                                f"({exc})") from None
        if X.dtype.kind != "f" and X.dtype != np.uint8:
            raise TypeError(f"{owner}: {name} must be uint8 images (scaled as x / 255 - 0.5) or "
                            f"floats, got dtype {X.dtype}")
        if X.ndim == 3 and (self.input_shape is None or len(self.input_shape) == 3):
            X = X[:, None]  # grayscale (N, H, W) -> (N, 1, H, W)
        if X.ndim < 2:
            raise ValueError(f"{owner}: {name} must be a batch of examples (N, ...), got shape "
                             f"{X.shape}")
        if self.input_shape is not None and X.shape[1:] != self.input_shape:
            raise ValueError(f"{owner}: {name} has examples of shape {X.shape[1:]}, the model "
                             f"takes {self.input_shape}")
        shapes = self._shapes(owner, X.shape[1:])
        return X, X.dtype == np.uint8, shapes[-1]

    def _batches(self, X, scale, batch_size, order=None):
        """Yield (start, scaled batch) in the given order, staged a chunk at a time."""
        n = len(X)
        chunk = max(1, _CHUNK_IMAGES // batch_size) * batch_size
        staging = np.empty((min(chunk, n), *X.shape[1:]), dtype=self.dtype)
        for first in range(0, n, chunk):
            raw = X[first:first + chunk] if order is None else X[order[first:first + chunk]]
            staged = staging[:len(raw)]
            if scale:
                np.divide(raw, self.dtype.type(255), out=staged)
                np.subtract(staged, self.dtype.type(0.5), out=staged)
            else:
                np.copyto(staged, raw, casting="same_kind")
            for start in range(0, len(raw), batch_size):
                yield first + start, staged[start:start + batch_size]

    # ---------------------------------------------------------------- training
    def fit(self, X: ArrayLike, y: ArrayLike, epochs: int = 1, batch_size: int = 32,
            optimizer: optim.Optimizer | None = None, loss: str = "softmax_cross_entropy",
            validation_data: tuple[ArrayLike, ArrayLike] | None = None, shuffle: bool = True,
            seed: Seed = None, progress: bool = True,
            callbacks: Sequence[Callable[..., Any]] | None = None, on_nan: str = "raise",
            backup_dir: Path | None = None, backup_steps: int | None = None,
            backup_seconds: float | None = None,
            lr_schedule: Callable[[int, float], float] | None = None,
            validation_split: float | None = None) -> History:
        """fit(X, y, epochs=1, batch_size=32, optimizer=None, loss="softmax_cross_entropy",
        validation_data=None, shuffle=True, seed=None, progress=True, callbacks=None,
        on_nan="raise", backup_dir=None, backup_steps=None, backup_seconds=None,
        lr_schedule=None, validation_split=None)

        Train the network with mini-batch gradient descent.

        Parameters
        ----------
        X : ndarray, (N, H, W) or (N, C, H, W) (or (N, features))
            uint8 images (scaled as x / 255 - 0.5) or floats (used as given).
        y : ndarray of int, (N,)
            Class labels in [0, number of outputs).
        epochs : int
            Passes over the data, >= 0.
        batch_size : int
            Examples per step, >= 1 (the last batch of an epoch may be smaller).
        optimizer : cnnext.optim.Optimizer, optional
            Defaults to the model's optimiser from a previous ``fit`` or
            checkpoint, else ``optim.SGD(lr=0.01)``.
        loss : str
            "softmax_cross_entropy".
        validation_data : (X, y), optional
            Evaluated after every epoch (in evaluation mode).
        shuffle : bool
            Visit the examples in a new random order every epoch.
        seed : None, int >= 0 or numpy.random.Generator
            Source of the shuffling.
        progress : bool
            Show a progress bar on standard error (in place on a terminal,
            one line per epoch otherwise).
        callbacks : list of callables, optional
            Each is called as ``callback(model, epoch, logs)`` after every
            epoch (``logs``: that epoch's figures); returning True stops
            training.  A callback with an ``on_train_begin(model)`` or
            ``on_train_end(model)`` method has it called before the first
            epoch and after the last (see ``cnnext.callbacks``).
        on_nan : {"raise", "skip"}
            When a batch's loss is NaN or infinite: raise FloatingPointError
            naming the epoch and step, with the weights as they were before
            that step, or skip that step's update and carry on (counted in
            ``history["skipped_steps"]``).
        backup_dir : str or os.PathLike, optional
            Back the run up in this directory (created if needed): the
            model, optimiser state, random generators' states, position and
            history, written atomically at every epoch's end and, within
            epochs, every ``backup_steps`` steps and/or ``backup_seconds``
            seconds.  A later ``fit`` with the same ``backup_dir`` and
            arguments resumes from the last backup and ends with the weights
            an uninterrupted run ends with, bitwise; a backup of another run
            (other layers, data or arguments) is refused, naming what
            differs, before anything changes.  The backup is removed when
            training completes.  See ``cnnext._backup``.
        backup_steps : int > 0, optional
            Steps between backups within an epoch (default: none).
        backup_seconds : float > 0, optional
            Seconds between backups within an epoch (default: none).
        lr_schedule : callable, optional
            ``lr_schedule(epoch, base_lr) -> lr``: the optimiser's learning
            rate for each epoch (0-based), given its rate when ``fit`` began
            (see ``cnnext.schedules``).  The rate is restored when ``fit``
            returns.
        validation_split : float in (0, 1), optional
            Hold out this fraction of (X, y), the last examples as given
            (before any shuffling), and evaluate on it after every epoch as
            on ``validation_data`` (not both).

        Returns
        -------
        history : cnnext.history.History
            A dict of lists, one entry per epoch, of Python floats:
            "loss" and "accuracy" (running means over the epoch's batches,
            as the notebook prints them), "val_loss" and "val_accuracy"
            with validation data, "seconds", "lr" with an ``lr_schedule``,
            and with on_nan="skip" "skipped_steps" (ints).  ``history.plot()``
            draws the curves.

        Training runs in training mode (``train()``); the mode the model
        was in is restored when ``fit`` returns.

        If an exception interrupts training, the model stays usable: its
        weights are finite (restored to the start of the epoch if a step
        left them otherwise).
        """
        owner = "Sequential.fit"
        memo = self._fit_memo
        if (memo is not None and validation_data is None and validation_split is None
                and lr_schedule is None and backup_dir is None and backup_steps is None
                and backup_seconds is None
                and memo.repeats(X, y, epochs, batch_size, optimizer, loss, shuffle, seed,
                                 progress, callbacks, on_nan)):
            return self._fit_repeated(memo.setup, X, y)
        self._fit_memo = None
        given_X, given_y = X, y
        X, scale, out_shape = self._images(owner, "X", X)
        y = _validation.class_labels(owner, "y", y, len(X), out_shape)
        epochs = _validation.int_at_least(owner, "epochs", epochs, 0)
        batch_size = _validation.batch_size(owner, batch_size)
        if len(X) == 0:
            raise ValueError(f"{owner}: X holds no examples")
        if optimizer is None:
            optimizer = self.optimizer if self.optimizer is not None else optim.SGD(lr=0.01)
        if not isinstance(optimizer, optim.Optimizer):
            raise TypeError(f"{owner}: optimizer must be a cnnext.optim optimiser (e.g. "
                            f"optim.SGD(lr=0.01)), got {type(optimizer).__name__}")
        try:
            loss_fn = losses.get(loss)
        except ValueError as exc:
            raise ValueError(f"{owner}: {exc}") from None
        validation = None
        if validation_split is not None:
            if validation_data is not None:
                raise ValueError(f"{owner}: give validation_data or validation_split, not both")
            if isinstance(validation_split, (bool, np.bool_)) or not isinstance(
                    validation_split, (int, float, np.number)) or not (
                    0 < float(validation_split) < 1):
                raise ValueError(f"{owner}: validation_split must be a number in (0, 1), got "
                                 f"{validation_split!r}")
            split_at = int(len(X) * (1 - float(validation_split)))
            if split_at < 1 or split_at >= len(X):
                raise ValueError(f"{owner}: validation_split={validation_split!r} of "
                                 f"{len(X)} examples leaves no example to train or to validate "
                                 f"on")
            validation = (X[split_at:], scale, y[split_at:])
            X, y = X[:split_at], y[:split_at]
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError(f"{owner}: validation_data must be a pair (X, y)")
            Xv, scale_v, _ = self._images(owner, "validation_data[0]", validation_data[0])
            yv = _validation.class_labels(owner, "validation_data[1]", validation_data[1],
                                          len(Xv), out_shape)
            validation = (Xv, scale_v, yv)
        try:
            callbacks = iter(() if callbacks is None else callbacks)
        except TypeError:
            hint = " (put a single callback in a list)" if callable(callbacks) else ""
            raise TypeError(f"{owner}: callbacks must be None or a list of callables, got "
                            f"{type(callbacks).__name__}{hint}") from None
        callbacks = list(callbacks)
        for callback in callbacks:
            if not callable(callback):
                raise TypeError(f"{owner}: callbacks must be callables, got {callback!r}")
        if on_nan not in _NAN_POLICIES:
            raise ValueError(f"{owner}: on_nan must be one of {_NAN_POLICIES}, got {on_nan!r}")
        if lr_schedule is not None:
            if not callable(lr_schedule):
                raise TypeError(f"{owner}: lr_schedule must be a callable "
                                f"lr_schedule(epoch, base_lr) -> lr (e.g. "
                                f"cnnext.schedules.CosineDecay(epochs)), got {lr_schedule!r}")
            if not hasattr(optimizer, "lr"):
                raise TypeError(f"{owner}: lr_schedule needs an optimiser with an lr, got "
                                f"{type(optimizer).__name__}")
        check_seed(owner, seed)
        shuffled, rng = _shuffling(owner, shuffle, seed, len(X), backup_dir is not None)
        backup = None
        if backup_dir is not None:
            backup = _backup.Backup(owner, backup_dir, backup_steps, backup_seconds).open()
        try:
            with self._training_claim(owner):
                history = self._fit_run(X, scale, y, epochs, batch_size, optimizer, loss_fn,
                                        validation, shuffled, seed, rng, progress, callbacks,
                                        on_nan, backup, lr_schedule)
                if backup is None and validation is None and lr_schedule is None:
                    self._fit_memo = self._remember_fit(
                        given_X, given_y, X, out_shape,
                        (optimizer, epochs, batch_size, loss, shuffle, seed, progress, on_nan),
                        loss_fn, callbacks)
                return history
        finally:
            if backup is not None:
                backup.close()

    def _fit_run(self, X, scale, y, epochs, batch_size, optimizer, loss_fn, validation,
                 shuffle, seed, rng, progress, callbacks, on_nan, backup, lr_schedule=None,
                 setup=None):
        """fit's epochs, once its arguments are checked (``backup``: a Backup or None;
        ``setup``: a repeated call's _FitSetup, or None)."""
        run = None
        if backup is not None:
            arguments = {"epochs": epochs, "batch_size": batch_size, "shuffle": bool(shuffle),
                         "seed": seed if seed is None or isinstance(seed, (int, np.integer))
                         else "a Generator", "loss": loss_fn.name, "on_nan": on_nan,
                         "optimizer": [type(optimizer).__name__, optimizer.config()]}
            run = _backup.Run(backup, _backup.fingerprint(self, X, y, validation, arguments),
                              rng, callbacks)
        self.optimizer, self.loss = optimizer, loss_fn
        if self.input_shape is None:
            self.input_shape = tuple(X.shape[1:])
        history = History(["loss", "accuracy", "seconds"])
        if validation is not None:
            history.update(val_loss=[], val_accuracy=[])
        if on_nan == "skip":
            history["skipped_steps"] = []
        if lr_schedule is not None:
            history["lr"] = []
        X = self._stageable(X)
        first = 0
        base_lr = getattr(optimizer, "lr", None)
        if run is not None:
            first, history = run.start(self, optimizer, history)
        try:
            for callback in callbacks:
                if hasattr(callback, "on_train_begin"):
                    callback.on_train_begin(self)
            for epoch in range(first, epochs):
                if lr_schedule is not None:
                    optimizer.lr = _scheduled_lr("Sequential.fit", lr_schedule, epoch, base_lr)
                if setup is None:
                    params = self.parameters()
                    snapshot = self._snapshot(params)
                else:
                    params, snapshot = setup.params, setup.snapshot(self)
                try:
                    # A diverging step shows up as a non-finite loss, handled below
                    # per on_nan; NumPy's overflow warnings on the way add nothing.
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                        logs = self._fit_epoch(X, scale, y, batch_size, epoch, epochs, rng,
                                               shuffle, progress, on_nan, validation, run,
                                               params, setup)
                except BaseException:
                    self._restore_if_not_finite(snapshot)
                    raise
                if lr_schedule is not None:
                    logs["lr"] = optimizer.lr
                history.append(logs)
                if any([callback(self, epoch, logs) is True for callback in callbacks]):
                    break
                if run is not None and epoch + 1 < epochs:
                    run.epoch_ends(self, epoch)
            for callback in callbacks:
                if hasattr(callback, "on_train_end"):
                    callback.on_train_end(self)
        finally:
            if lr_schedule is not None:
                optimizer.lr = base_lr
        if run is not None:
            run.finish()
        return history

    def _fit_repeated(self, setup, X, y):
        """A fit call repeating the last validated one's arguments (``setup``, see
        _remember_fit): its checks and set-up skipped but the labels' range,
        the rest as ``fit`` does it."""
        owner = "Sequential.fit"
        if setup.channel_axis:
            X = X[:, None]
        y = _validation.class_labels(owner, "y", y, len(X), setup.classes)
        shuffled, rng = _shuffling(owner, setup.shuffle, setup.seed, len(X), False)
        with self._training_claim(owner):
            return self._fit_run(X, setup.scale, y, setup.epochs, setup.batch_size,
                                 setup.optimizer, setup.loss_fn, None, shuffled, setup.seed,
                                 rng, setup.progress, list(setup.callbacks), setup.on_nan,
                                 None, setup=setup)

    def _remember_fit(self, given_X, given_y, X, classes, arguments, loss_fn, callbacks):
        """A FitMemo of the fit call just made (``arguments``: its optimiser, as
        resolved, epochs, batch_size, loss, shuffle, seed, progress and on_nan
        as given), or None when its repeats would have nothing to skip: its
        X or y would need converting, or its epochs did not run on plans
        with the optimiser's compiled update.  The memo's checks hold while
        the layer list, every layer's params/grads/buffers dicts and their
        arrays (same objects, shapes, C-contiguous and writeable), the
        model's optimiser and input shape, and every attribute, state entry
        and state array of the optimiser are unchanged; a layer holding
        layers (whose dicts are built on each access) never passes them."""
        optimizer, epochs, batch_size, _, shuffle, seed, progress, on_nan = arguments
        if not (type(given_X) is np.ndarray and given_X.dtype in _STAGEABLE
                and given_X.flags.c_contiguous and given_X.ndim <= _program.MEMO_AXES
                and type(given_y) is np.ndarray and given_y.ndim == 1
                and given_y.dtype.kind in "iu"):
            return None
        update_memo = optimizer.__dict__.get("_update_memo")
        if (update_memo is None or type(optimizer).step is not optim.Optimizer.step
                or not self._compiled()):
            return None
        params, buffers = self.parameters(), self.buffers()
        if not update_memo.describes(optimizer, params, self.gradients()):
            return None
        checks = [*self._check_layers(), (self.__dict__, "optimizer", optimizer),
                  (self.__dict__, "input_shape", self.input_shape),
                  (optimizer.__dict__, "_update_memo", update_memo), *update_memo.checks]
        for layer in self.layers:
            for group in ("params", "grads", "buffers"):
                arrays = getattr(layer, group)
                checks += [(layer.__dict__, group, arrays), (arrays, None, len(arrays))]
                checks += [(arrays, name, array) for name, array in arrays.items()]
        checks += [(array, ..., array.shape) for array in buffers.values()]
        setup = _FitSetup(
            channel_axis=X.ndim != given_X.ndim, scale=X.dtype == _UINT8, classes=classes,
            epochs=epochs, batch_size=batch_size, optimizer=optimizer, loss_fn=loss_fn,
            shuffle=shuffle, seed=seed, progress=progress, callbacks=tuple(callbacks),
            on_nan=on_nan, params=params, buffers=buffers, update=update_memo.update)
        return _program.FitMemo(given_X, given_y, arguments, tuple(callbacks), tuple(checks),
                                setup)

    def _training_claim(self, owner):
        """A context holding this model, and each of its layers, for one fit:
        RuntimeError when another thread is training either."""
        return _TrainingClaim(self, owner)

    def _fit_epoch(self, X, scale, y, batch_size, epoch, epochs, rng, shuffle, progress,
                   on_nan, validation, run, params, setup=None):
        """One epoch; ``params``: the model's ``parameters()`` at its start."""
        began = time.perf_counter()
        n = len(X)
        # A resumed epoch: its shuffle is drawn from the generator's state at
        # its start, and it goes on after the steps its backup had done.
        resume = None if run is None else run.epoch_begins(epoch)
        order = rng.permutation(n) if shuffle else None
        labels = y if order is None else y[order]
        predicted = np.empty(n, dtype=np.intp)
        bar = ProgressBar(n, desc=f"epoch {epoch + 1}/{epochs}", unit="img",
                          enabled=None if progress else False)
        if resume is not None and resume.step:
            predicted[:len(resume.predicted)] = resume.predicted
            if progress:
                bar.update(len(resume.predicted))
        try:
            with self._mode(True):
                totals = None
                if self._compiled():
                    totals = self._fit_epoch_compiled(X, order, labels, batch_size, epoch,
                                                      progress, on_nan, predicted, bar, resume,
                                                      run, params, setup)
                if totals is None:
                    totals = self._fit_epoch_layers(X, scale, order, labels, batch_size, epoch,
                                                    progress, on_nan, predicted, bar, resume,
                                                    run)
        except BaseException:
            if progress:
                bar.close()  # end the bar's line before the error is shown
            raise
        total_loss, counted, skipped = totals
        logs = {"loss": total_loss / counted if counted else math.nan,
                "accuracy": np.count_nonzero(predicted == labels) / n}
        if on_nan == "skip":
            logs["skipped_steps"] = skipped
        if validation is not None:
            logs["val_loss"], logs["val_accuracy"] = self._evaluate(*validation, batch_size=256)
        logs["seconds"] = time.perf_counter() - began
        if progress:
            bar.set_postfix(**{k: v for k, v in logs.items() if k != "seconds"})
            bar.close()
        return logs

    def _fit_epoch_compiled(self, X, order, labels, batch_size, epoch, progress, on_nan,
                            predicted, bar, resume, backup, params, setup=None):
        """One epoch on plans: runs of whole training steps in one compiled call.
        Returns (total loss, examples counted, steps skipped), or None when the
        network turns out to run layer by layer.  ``setup``: a repeated call's
        _FitSetup, whose optimiser update its checks showed still valid."""
        n = len(X)
        full, rest = divmod(n, batch_size)
        runs = [(batch_size, 0, full), (rest, full * batch_size, 1)]
        plans = []
        try:
            for batch, _, count in runs:
                if count and batch:
                    plan = self._acquire("fit", batch, X.shape[1:])
                    if plan is None:
                        return None
                    plans.append(plan)
                else:
                    plans.append(None)
            optimizer, update, python_step = self.optimizer, None, None
            if setup is not None:
                update = setup.update
            elif type(optimizer).step is optim.Optimizer.step:
                update = optimizer._compiled_update(params, self.gradients())
            if update is None:  # a subclass with its own step: applied after each step
                grads = self.gradients()
                if type(optimizer).step is optim.Optimizer.step:
                    python_step = optimizer._bind(params, grads)
                else:
                    python_step = functools.partial(optimizer.step, params, grads)
            order = None if order is None else order.astype(np.int64, copy=False)
            table = _TABLES[self.dtype]
            skip = on_nan == "skip"
            show = progress and bar.enabled
            # total loss, counted, skipped: summed in step order (from a resumed
            # epoch's backup, when there is one)
            state = [0.0, 0, 0] if resume is None else list(resume.totals)
            # The optimiser's state is this loop's for the epoch (a subclass
            # with its own step holds it in its step).
            holding = (optim.in_use(optimizer, "Sequential.fit")
                       if type(optimizer).step is optim.Optimizer.step
                       else contextlib.nullcontext())
            with holding:
                self._run_epoch(runs, plans, X, order, labels, update, python_step, skip,
                                predicted, state, table, show, progress, bar, epoch,
                                0 if resume is None else resume.step, backup)
            return tuple(state)
        finally:
            for plan in plans:
                if plan is not None:
                    self._release(plan)

    def _run_epoch(self, runs, plans, X, order, labels, update, python_step, skip, predicted,
                   state, table, show, progress, bar, epoch, resumed=0, backup=None):
        """The runs of compiled steps of one epoch (see _fit_epoch_compiled), from step
        ``resumed`` on; after each run, a backup when one is due."""
        step = 0
        for plan, (batch, first, count) in zip(plans, runs, strict=True):
            if plan is None:
                continue
            runner = plan.runner
            run = max(1, _RUN_IMAGES // batch) if python_step is None else 1
            run = min(run, plan.max_passes or run)
            done_here = min(count, max(0, resumed - step))
            step += done_here
            while done_here < count:
                size = min(run, count - done_here)
                if backup is not None:  # stop where a backup by steps falls due
                    size = min(size, backup.steps_allowed(step) or size)
                if show:  # stop after each step whose loss the bar shows
                    size = min(size, _POSTFIX_STEPS + 1 - step % _POSTFIX_STEPS
                               if step % _POSTFIX_STEPS else 1)
                start = first + done_here * batch
                if update is not None:
                    update.load()
                keys = plan.draw_keys(size)
                try:
                    stop, status, done, total, counted, skipped, loss = runner.train(
                        X, order, labels, start, size,
                        None if update is None else update.program, skip, predicted,
                        state[0], state[1], state[2], table)
                finally:
                    if update is not None:
                        update.store()
                if stop != _program.STOP_DONE:  # the failed pass's forward ran
                    plan.undraw_keys(keys, done + 1)
                applied = counted != state[1]
                state[:] = [total, counted, skipped]
                if python_step is not None and applied:
                    python_step()
                if progress:
                    bar.update(done * batch)
                step += done
                done_here += done
                if stop == _program.STOP_NON_FINITE:
                    failed = start + done * batch
                    raise _non_finite_loss(loss, epoch, step, failed, failed + batch)
                if stop != _program.STOP_DONE:
                    _plans.network.raise_status("Sequential.fit", status, -1, None)
                if show and (step - 1) % _POSTFIX_STEPS == 0 and counted:
                    bar.set_postfix(loss=total / counted)
                reached = first + done_here * batch
                if backup is not None and reached < len(X):
                    backup.after_steps(self, epoch, step, tuple(state), predicted[:reached])

    def _fit_epoch_layers(self, X, scale, order, labels, batch_size, epoch, progress, on_nan,
                          predicted, bar, resume=None, backup=None):
        """One epoch layer by layer (the reference path, for networks without plans)."""
        with self._lock:
            return self._fit_epoch_layers_locked(X, scale, order, labels, batch_size, epoch,
                                                 progress, on_nan, predicted, bar, resume,
                                                 backup)

    def _fit_epoch_layers_locked(self, X, scale, order, labels, batch_size, epoch, progress,
                                 on_nan, predicted, bar, resume=None, backup=None):
        params, grads, optimizer = self.parameters(), self.gradients(), self.optimizer
        if type(optimizer).step is optim.Optimizer.step:
            optimizer_step = optimizer._bind(params, grads)  # checked once for the epoch
        else:  # a subclass with its own step
            optimizer_step = functools.partial(optimizer.step, params, grads)
        loss_fn = self.loss
        run_forward, run_backward = self._run_forward, self._run_backward
        total_loss, counted, skipped = (0.0, 0, 0) if resume is None else resume.totals
        resumed = 0 if resume is None else resume.step
        for step, (start, xb) in enumerate(self._batches(X, scale, batch_size, order)):
            size = len(xb)
            stop = start + size
            if step < resumed:  # done before the backup this epoch resumes from
                continue
            yb = labels[start:stop]
            logits = run_forward(xb)
            loss, glogits = loss_fn(logits, yb)
            logits.argmax(axis=1, out=predicted[start:stop])
            if not math.isfinite(loss):
                if on_nan == "raise":
                    raise _non_finite_loss(loss, epoch, step, start, stop)
                skipped += 1
            else:
                run_backward(glogits)
                optimizer_step()
                total_loss += loss * size
                counted += size
            if progress:
                bar.update(size)
                if bar.enabled and step % _POSTFIX_STEPS == 0 and counted:
                    bar.set_postfix(loss=total_loss / counted)
            if backup is not None and stop < len(X):
                backup.after_steps(self, epoch, step + 1, (total_loss, counted, skipped),
                                   predicted[:stop])
        return total_loss, counted, skipped

    def _snapshot(self, params, buffers=None):
        """Copies of ``params`` (the model's ``parameters()``), the buffers (its
        ``buffers()`` unless given) and the optimiser's state.  The copies of a
        small network are written into those of its last snapshot: allocating
        them anew costs a per-image ``fit`` call more than its training step."""
        kept, copies, size = self._snapshot_copies, {}, 0
        buffers = self.buffers() if buffers is None else buffers
        for name, array in (*params.items(), *buffers.items()):
            copy = kept.get(name)
            if copy is None or copy.shape != array.shape or copy.dtype != array.dtype:
                copy = array.copy()
            else:
                np.copyto(copy, array)
            copies[name] = copy
            size += copy.nbytes
        self._snapshot_copies = copies if size <= _KEPT_SNAPSHOT_BYTES else {}
        return copies, self.optimizer._state_copy()

    def _restore_if_not_finite(self, snapshot):
        current = {**self.parameters(), **self.buffers()}
        if all(np.isfinite(array).all() for array in current.values()):
            return
        params, optimizer_state = snapshot
        for name, array in current.items():
            np.copyto(array, params[name])
        # A repeated fit's snapshot builds the state's copy only when needed.
        self.optimizer.state = optimizer_state() if callable(optimizer_state) else optimizer_state

    # ------------------------------------------------------------- inference
    def evaluate(self, X: ArrayLike, y: ArrayLike, batch_size: int = 256) -> tuple[float, float]:
        """evaluate(X, y, batch_size=256)

        Mean loss and accuracy on (X, y), images scaled as in ``fit``,
        computed in evaluation mode (the model's mode is left as it was).

        Returns
        -------
        (loss, accuracy) : (float, float)
        """
        owner = "Sequential.evaluate"
        X, scale, out_shape = self._images(owner, "X", X)
        y = _validation.class_labels(owner, "y", y, len(X), out_shape)
        batch_size = _validation.batch_size(owner, batch_size)
        if len(X) == 0:
            raise ValueError(f"{owner}: X holds no examples")
        return self._evaluate(X, scale, y, batch_size)

    def _evaluate(self, X, scale, y, batch_size):
        with self._mode(False):
            return self._evaluate_in_mode(X, scale, y, batch_size)

    def _evaluate_in_mode(self, X, scale, y, batch_size):
        if self._compiled():
            X = self._stageable(X)
            total, correct = 0.0, 0
            for batch, first, count in _batch_runs(len(X), batch_size):
                plan = self._acquire("evaluate", batch, X.shape[1:])
                if plan is None:
                    break
                try:
                    status, where, total, correct = plan.runner.evaluate(
                        X, y, first, count, total, correct, _TABLES[self.dtype])
                finally:
                    self._release(plan)
                if status:
                    _plans.network.raise_status("Sequential.evaluate", status, where, None)
            else:
                return total / len(X), correct / len(X)
        with self._lock:
            total, correct = 0.0, 0
            for start, xb in self._batches(X, scale, batch_size):
                yb = y[start:start + len(xb)]
                logits = self._run_forward(xb)
                loss, _ = self.loss(logits, yb)
                total += loss * len(xb)
                correct += int(np.count_nonzero(np.argmax(logits, axis=1) == yb))
            return total / len(X), correct / len(X)

    def predict(self, X: ArrayLike, batch_size: int = 256) -> FloatArray:
        """predict(X, batch_size=256)

        Class probabilities for every example of X (images scaled as in
        ``fit``), computed ``batch_size`` examples at a time in evaluation
        mode (the model's mode is left as it was).

        Returns
        -------
        ndarray, (N, classes), the model's dtype
        """
        memo = self._predict_memo
        # A mode switch costs more than a small batch's kernels: none when no
        # layer computes by mode (as remembered for the same layers) or all
        # already compute as in evaluation.
        if memo is not None and memo.alike:
            result = memo.run(X, batch_size)
            if result is not None:
                return result
        if self._in_mode(False):
            return self._predict(X, batch_size)
        with self._mode(False):
            return self._predict(X, batch_size)

    def _predict(self, X, batch_size):
        memo = self._predict_memo
        if memo is not None:
            # The shapes of the last validated call, of the same layers: its
            # runs, on its plans (which check their parameters themselves).
            result = memo.run(X, batch_size)
            if result is not None:
                return result
        owner = "Sequential.predict"
        given = X
        X, scale, out_shape = self._images(owner, "X", X)
        batch_size = _validation.batch_size(owner, batch_size)
        result = np.empty((len(X), *out_shape), dtype=self.dtype)
        if len(X) and len(out_shape) == 1 and self._compiled():
            X = self._stageable(X)
            runs = [((batch, X.shape[1:]), first, count)
                    for batch, first, count in _batch_runs(len(X), batch_size)]
            if self._predict_runs(X, runs, result, owner):
                if (type(given) is np.ndarray and given.dtype in _STAGEABLE
                        and given.flags.c_contiguous and given.ndim <= _program.MEMO_AXES):
                    alike = all(type(layer)._depends_on_mode is False
                                and layer._depends_on_mode is False for layer in self.layers)
                    self._predict_memo = _program.PredictMemo(
                        given, batch_size, result.shape, self.dtype,
                        [(("predict", *shape), first, count) for shape, first, count in runs],
                        self._layer_checks, self._plans, _TABLES[self.dtype], alike)
                return result
        with self._lock:
            for start, xb in self._batches(X, scale, batch_size):
                result[start:start + len(xb)] = self.loss.predict(self._run_forward(xb))
        return result

    def _predict_runs(self, X, runs, result, owner="Sequential.predict"):
        """Probabilities of X into ``result`` over ``runs`` ((batch, example shape),
        first, count) on plans; False when the network runs layer by layer."""
        table, cache = _TABLES[self.dtype], self._plans
        for (batch, example_shape), first, count in runs:
            plan = self._acquire("predict", batch, example_shape)
            if plan is None:
                return False
            try:
                status, where = plan.runner.predict(X, first, count, result, table)
            finally:
                cache.release(plan.key, plan)
            if status:
                _plans.network.raise_status(owner, status, where, None)
        return True

    # ------------------------------------------------------------ checkpoints
    def save(self, path: Path) -> None:
        """save(path)

        Write the model (architecture, parameters, optimiser state) to one
        .npz file, atomically: an interrupted save leaves any previous file
        at ``path`` intact.  Read it back with ``cnnext.load_model``.
        """
        _checkpoint.save(self, path)


def _flat_input_shape(layer):
    """(in_features,) when ``layer`` takes flat examples of a fixed size (Dense), else None."""
    features = getattr(layer, "in_features", None)
    return (features,) if isinstance(features, int) else None


class _TrainingClaim:
    """Holds a model and its layers for one ``fit`` (see Sequential._training_claim)."""

    def __init__(self, model, owner):
        self.model, self.owner = model, owner

    def __enter__(self):
        model = self.model
        if not model._fit_lock.acquire(blocking=False):
            raise RuntimeError(f"{self.owner}: this model is being trained in another thread; "
                               f"train one model from one thread at a time")
        with _training_lock:
            for i, layer in enumerate(model.layers):
                other = _training.get(id(layer))
                if other is not None and other is not model:
                    model._fit_lock.release()
                    raise RuntimeError(f"{self.owner}: layer {i} ({layer!r}) is being trained "
                                       f"as part of another model; a layer shared by two "
                                       f"models can be trained by one of them at a time")
            for layer in model.layers:
                _training[id(layer)] = model
            self.claimed = list(model.layers)
        return self

    def __exit__(self, *exc):
        with _training_lock:
            for layer in self.claimed:
                if _training.get(id(layer)) is self.model:
                    del _training[id(layer)]
        self.model._fit_lock.release()


class _FitSetup:
    """What a repeated fit call runs with (Sequential._remember_fit): its
    validated arguments, the parameters and buffers by name, the optimiser's
    compiled update, and the copies its per-epoch snapshots are written to
    (a small network's: ``copies`` None otherwise)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)
        optimizer = self.optimizer
        self.entries = tuple(optimizer.state.items())
        arrays = {**self.params, **self.buffers}
        copies = {name: array.copy() for name, array in arrays.items()}
        # The state's arrays by (parameter name, key); its other entries are
        # immutable (else no copies) and only its counters change in a run.
        state = {(name, key): value for name, entry in self.entries
                 for key, value in entry.items() if isinstance(value, np.ndarray)}
        self.state_copies = {where: value.copy() for where, value in state.items()}
        plain = all(isinstance(value, (np.ndarray, optim._IMMUTABLE))
                    for _, entry in self.entries for value in entry.values())
        size = sum(copy.nbytes for copy in (*copies.values(), *self.state_copies.values()))
        self.copies = copies if plain and size <= _KEPT_SNAPSHOT_BYTES else None
        self.pairs = (*((array, copies[name]) for name, array in arrays.items()),
                      *((value, self.state_copies[where]) for where, value in state.items()))
        self.counters = tuple((name, entry, key) for name, entry in self.entries
                              for key in optimizer.counters)

    def snapshot(self, model):
        """As ``model._snapshot``: copies of the parameters, the buffers and the
        optimiser's state (the state's built when asked for: see
        _restore_if_not_finite)."""
        if self.copies is None:
            return model._snapshot(self.params, self.buffers)
        _program.copy_arrays(self.pairs)
        counts = tuple(entry[key] for _, entry, key in self.counters)
        return self.copies, functools.partial(self._state, counts)

    def _state(self, counts):
        state = {name: {key: value.copy() if (value := self.state_copies.get((name, key)))
                        is not None else entry[key] for key in entry}
                 for name, entry in self.entries}
        for (name, _, key), count in zip(self.counters, counts, strict=True):
            state[name][key] = count
        return state


def _shuffling(owner, shuffle, seed, n, backup):
    """(shuffle, generator) of a fit call: a generator only when shuffling can
    change the order (drawing a seed from the operating system costs ~10 us):
    one example in a fresh, unseeded generator dropped after the call (no
    backup keeps it) is its own order."""
    if shuffle and seed is None and n == 1 and not backup:
        return False, None
    return shuffle, random_generator(owner, seed) if shuffle else None


def _scheduled_lr(owner, schedule, epoch, base_lr):
    lr = schedule(epoch, base_lr)
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (int, float, np.floating,
                                                               np.integer)) or not (
            math.isfinite(lr) and lr >= 0):
        raise ValueError(f"{owner}: lr_schedule({epoch}, {base_lr}) returned {lr!r}; a learning "
                         f"rate must be a finite number >= 0")
    return float(lr)


def _batch_runs(n, batch_size):
    """(batch, first example, number of batches) of the full batches, then the
    last partial one."""
    full, rest = divmod(n, batch_size)
    runs = []
    if full:
        runs.append((batch_size, 0, full))
    if rest:
        runs.append((rest, full * batch_size, 1))
    return runs


def _non_finite_loss(loss, epoch, step, start, stop):
    return FloatingPointError(
        f"Sequential.fit: the loss is {loss} at epoch {epoch + 1}, step {step + 1} (examples "
        f"{start}..{stop - 1} of the epoch's order); the weights are those before that step. "
        f"Lower the learning rate, check the data for NaN/inf, or pass on_nan='skip' to skip "
        f"such steps")


def load_model(path: Path) -> Sequential:
    """load_model(path)

    Rebuild a model saved by ``Sequential.save``, with its optimiser state.
    The file is checked in full (no pickles, no code executed); anything
    unexpected raises ``cnnext.CheckpointError``.

    Examples
    --------
    >>> import os, tempfile
    >>> import cnnext as cx
    >>> model = cx.models.seed_cnn(seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "seed.npz")
    >>> model.save(path)
    >>> again = cx.load_model(path)
    >>> again.num_parameters(), again.input_shape
    (13602, (1, 28, 28))
    """
    return _checkpoint.load(path)

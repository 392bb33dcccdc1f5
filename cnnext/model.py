"""Sequential: a stack of layers with fit / evaluate / predict / summary / save.

Input images: uint8 arrays are scaled as the seed notebook does,
``x / 255 - 0.5`` (so pixels lie in [-0.5, 0.5]), computed in the model's
dtype; float arrays are used as given (cast to the model's dtype).
(N, H, W) arrays get a channel axis, (N, 1, H, W), unless the model declares
2-D examples.

The training loop checks the whole network's shapes once, then runs each
batch through the layers' workspace-reusing internals: one kernel call per
layer and direction, no large allocation per step.  Images are scaled a
chunk of batches at a time into a reused staging buffer.
"""

import functools
import math
import sys
import time

import numpy as np

from . import _checkpoint, losses, optim
from ._functional import _checks
from ._progress import ProgressBar
from .history import History
from .layers.base import DTYPES, Layer, check_seed, random_generator

__all__ = ["Sequential", "load_model"]

# Images per staging chunk: big enough to amortise the gather and scaling
# calls over many small batches, small enough to stay in cache.
_CHUNK_IMAGES = 1024
_NAN_POLICIES = ("raise", "skip")


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
    """

    def __init__(self, layers, input_shape=None):
        if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
            raise TypeError(f"Sequential: layers must be a list of layers, got "
                            f"{type(layers).__name__}")
        if not layers:
            raise ValueError("Sequential: layers must not be empty")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layers[{i}] is a {type(layer).__name__}, "
                                f"not a cnnext layer")
            if any(layer is other for other in layers[:i]):
                # A layer keeps its last input for backward: it cannot appear twice.
                raise ValueError(f"Sequential: layers[{i}] ({layer!r}) appears twice; "
                                 f"build a new layer for each position")
        dtypes = {layer.dtype for layer in layers if layer.dtype is not None}
        if len(dtypes) > 1:
            raise TypeError(f"Sequential: the layers mix dtypes {sorted(d.name for d in dtypes)}; "
                            f"build them all with the same dtype")
        self.layers = list(layers)
        self.dtype = dtypes.pop() if dtypes else DTYPES["float32"]
        self.input_shape = None
        if input_shape is not None:
            if not isinstance(input_shape, (tuple, list)):
                raise TypeError(f"Sequential: input_shape must be a tuple of ints such as "
                                f"(1, 28, 28), got {input_shape!r}")
            shape = tuple(_checks.to_int("Sequential", "input_shape", d) for d in input_shape)
            self._shapes("Sequential", shape)
            self.input_shape = shape
        self.optimizer = None
        self.loss = losses.get("softmax_cross_entropy")

    # --------------------------------------------------------------- structure
    def __repr__(self):
        inner = "".join(f"\n    {layer!r}," for layer in self.layers)
        return f"Sequential([{inner}\n])"

    def parameters(self):
        """Every parameter as {"<layer index>.<name>": array} (the arrays themselves)."""
        return {f"{i}.{name}": array for i, layer in enumerate(self.layers)
                for name, array in layer.params.items()}

    def gradients(self):
        """The gradient arrays of the last backward pass, named as ``parameters()``."""
        return {f"{i}.{name}": array for i, layer in enumerate(self.layers)
                for name, array in layer.grads.items()}

    def num_parameters(self):
        return sum(layer.num_parameters() for layer in self.layers)

    def output_shape(self, input_shape):
        """output_shape(input_shape)

        Shape of one example's output for one example's input shape.
        """
        return self._shapes("Sequential.output_shape", tuple(input_shape))[-1]

    def _shapes(self, owner, example_shape):
        """Every layer's output shape for ``example_shape``, or a ValueError naming the layer."""
        shapes = [example_shape]
        for i, layer in enumerate(self.layers):
            try:
                shapes.append(tuple(layer.output_shape(shapes[-1])))
            except ValueError as exc:
                raise ValueError(f"{owner}: examples of shape {example_shape} do not fit "
                                 f"layer {i}: {exc}") from None
        return shapes

    def summary(self, input_shape=None, file=None):
        """summary(input_shape=None, file=None)

        Print a table of the layers with their output shapes and parameter
        counts to ``file`` (standard output by default).  ``input_shape``
        defaults to the model's ``input_shape``; without either the output
        shapes are left out.
        """
        input_shape = self.input_shape if input_shape is None else tuple(input_shape)
        if input_shape is None:  # a first layer taking flat examples fixes their shape
            input_shape = _flat_input_shape(self.layers[0])
        shapes = self._shapes("Sequential.summary", input_shape)[1:] if input_shape else None
        rows = [("#", "layer", "output shape", "parameters")]
        for i, layer in enumerate(self.layers):
            shape = str(shapes[i]) if shapes else "?"
            rows.append((str(i), repr(layer), shape, f"{layer.num_parameters():,}"))
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
    def forward(self, x):
        """forward(x)

        The network's raw outputs (e.g. logits) for a float batch ``x`` of
        the model's dtype; remembers what ``backward`` needs.  Returns a new
        array.
        """
        x = _checks.float_array("Sequential.forward", "x", x)
        if x.dtype != self.dtype:
            raise TypeError(f"Sequential.forward: x has dtype {x.dtype}, the model computes in "
                            f"{self.dtype}")
        if x.ndim < 1:
            raise ValueError("Sequential.forward: x must have a batch axis")
        self._shapes("Sequential.forward", x.shape[1:])
        out = x
        for layer in self.layers:
            out = layer._forward(out, reuse=False)
        return out.copy() if np.may_share_memory(out, x) else out

    def backward(self, gy):
        """backward(gy)

        Back-propagate ``gy``, the gradient of the loss with respect to the
        last ``forward``'s output: fills every layer's ``grads`` and returns
        the gradient with respect to that forward's input.
        """
        for layer in reversed(self.layers):
            gy = layer.backward(gy)
        return gy

    def _run_forward(self, x):
        for layer in self.layers:
            x = layer._forward(x, True)
        return x

    def _run_backward(self, gy):
        layers = self.layers
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

    def _labels(self, owner, name, y, count, classes_shape):
        if len(classes_shape) != 1:
            raise ValueError(f"{owner}: the model's outputs have shape {classes_shape} per "
                             f"example; class labels need one score per class")
        classes = classes_shape[0]
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise TypeError(f"{owner}: {name} must hold integer class labels, got dtype {y.dtype}")
        if y.ndim != 1 or len(y) != count:
            raise ValueError(f"{owner}: {name} must have shape ({count},), one label per example, "
                             f"got {y.shape}")
        if count and (y.min() < 0 or y.max() >= classes):
            bad = y[(y < 0) | (y >= classes)][0]
            raise ValueError(f"{owner}: {name} holds label {bad}, outside [0, {classes}) for a "
                             f"model with {classes} outputs")
        return y.astype(np.int64)

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
    def fit(self, X, y, epochs=1, batch_size=32, optimizer=None, loss="softmax_cross_entropy",
            validation_data=None, shuffle=True, seed=None, progress=True, callbacks=None,
            on_nan="raise"):
        """fit(X, y, epochs=1, batch_size=32, optimizer=None, loss="softmax_cross_entropy",
        validation_data=None, shuffle=True, seed=None, progress=True, callbacks=None,
        on_nan="raise")

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
            Evaluated after every epoch.
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
            training.
        on_nan : {"raise", "skip"}
            When a batch's loss is NaN or infinite: raise FloatingPointError
            naming the epoch and step, with the weights as they were before
            that step, or skip that step's update and carry on (counted in
            ``history["skipped_steps"]``).

        Returns
        -------
        history : cnnext.history.History
            A dict of lists, one entry per epoch, of Python floats:
            "loss" and "accuracy" (running means over the epoch's batches,
            as the notebook prints them), "val_loss" and "val_accuracy"
            with validation data, "seconds", and with on_nan="skip"
            "skipped_steps" (ints).  ``history.plot()`` draws the curves.

        If an exception interrupts training, the model stays usable: its
        weights are finite (restored to the start of the epoch if a step
        left them otherwise).
        """
        owner = "Sequential.fit"
        X, scale, out_shape = self._images(owner, "X", X)
        y = self._labels(owner, "y", y, len(X), out_shape)
        epochs = _checks.to_int(owner, "epochs", epochs)
        if epochs < 0:
            raise ValueError(f"{owner}: epochs must be >= 0, got {epochs}")
        batch_size = _checks.to_int(owner, "batch_size", batch_size)
        if batch_size < 1:
            raise ValueError(f"{owner}: batch_size must be >= 1, got {batch_size}")
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
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError(f"{owner}: validation_data must be a pair (X, y)")
            Xv, scale_v, _ = self._images(owner, "validation_data[0]", validation_data[0])
            yv = self._labels(owner, "validation_data[1]", validation_data[1], len(Xv), out_shape)
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
        check_seed(owner, seed)
        # Drawing a seed from the operating system costs ~10 us: only when shuffling.
        rng = random_generator(owner, seed) if shuffle else None

        self.optimizer, self.loss = optimizer, loss_fn
        if self.input_shape is None:
            self.input_shape = tuple(X.shape[1:])
        history = History(["loss", "accuracy", "seconds"])
        if validation is not None:
            history.update(val_loss=[], val_accuracy=[])
        if on_nan == "skip":
            history["skipped_steps"] = []
        for epoch in range(epochs):
            snapshot = self._snapshot()
            try:
                # A diverging step shows up as a non-finite loss, handled below
                # per on_nan; NumPy's overflow warnings on the way add nothing.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    logs = self._fit_epoch(X, scale, y, batch_size, epoch, epochs, rng,
                                           shuffle, progress, on_nan, validation)
            except BaseException:
                self._restore_if_not_finite(snapshot)
                raise
            history.append(logs)
            if any([callback(self, epoch, logs) is True for callback in callbacks]):
                break
        return history

    def _fit_epoch(self, X, scale, y, batch_size, epoch, epochs, rng, shuffle, progress,
                   on_nan, validation):
        began = time.perf_counter()
        n = len(X)
        order = rng.permutation(n) if shuffle else None
        labels = y if order is None else y[order]
        predicted = np.empty(n, dtype=np.intp)
        params, grads, optimizer = self.parameters(), self.gradients(), self.optimizer
        if type(optimizer).step is optim.Optimizer.step:
            optimizer_step = optimizer._bind(params, grads)  # checked once for the epoch
        else:  # a subclass with its own step
            optimizer_step = functools.partial(optimizer.step, params, grads)
        loss_fn = self.loss
        run_forward, run_backward = self._run_forward, self._run_backward
        bar = ProgressBar(n, desc=f"epoch {epoch + 1}/{epochs}", unit="img",
                          enabled=None if progress else False)
        total_loss, counted, skipped = 0.0, 0, 0
        try:
            for step, (start, xb) in enumerate(self._batches(X, scale, batch_size, order)):
                size = len(xb)
                stop = start + size
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
                    if bar.enabled and step % 64 == 0 and counted:
                        bar.set_postfix(loss=total_loss / counted)
        except BaseException:
            if progress:
                bar.close()  # end the bar's line before the error is shown
            raise
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

    def _snapshot(self):
        params = {name: array.copy() for name, array in self.parameters().items()}
        return params, self.optimizer._state_copy()

    def _restore_if_not_finite(self, snapshot):
        current = self.parameters()
        if all(np.isfinite(array).all() for array in current.values()):
            return
        params, optimizer_state = snapshot
        for name, array in current.items():
            np.copyto(array, params[name])
        self.optimizer.state = optimizer_state

    # ------------------------------------------------------------- inference
    def evaluate(self, X, y, batch_size=256):
        """evaluate(X, y, batch_size=256)

        Mean loss and accuracy on (X, y), images scaled as in ``fit``.

        Returns
        -------
        (loss, accuracy) : (float, float)
        """
        owner = "Sequential.evaluate"
        X, scale, out_shape = self._images(owner, "X", X)
        y = self._labels(owner, "y", y, len(X), out_shape)
        batch_size = self._batch_size(owner, batch_size)
        if len(X) == 0:
            raise ValueError(f"{owner}: X holds no examples")
        return self._evaluate(X, scale, y, batch_size)

    def _evaluate(self, X, scale, y, batch_size):
        total, correct = 0.0, 0
        for start, xb in self._batches(X, scale, batch_size):
            yb = y[start:start + len(xb)]
            logits = self._run_forward(xb)
            loss, _ = self.loss(logits, yb)
            total += loss * len(xb)
            correct += int(np.count_nonzero(np.argmax(logits, axis=1) == yb))
        return total / len(X), correct / len(X)

    def predict(self, X, batch_size=256):
        """predict(X, batch_size=256)

        Class probabilities for every example of X (images scaled as in
        ``fit``), computed ``batch_size`` examples at a time.

        Returns
        -------
        ndarray, (N, classes), the model's dtype
        """
        owner = "Sequential.predict"
        X, scale, out_shape = self._images(owner, "X", X)
        batch_size = self._batch_size(owner, batch_size)
        result = np.empty((len(X), *out_shape), dtype=self.dtype)
        for start, xb in self._batches(X, scale, batch_size):
            result[start:start + len(xb)] = self.loss.predict(self._run_forward(xb))
        return result

    @staticmethod
    def _batch_size(owner, batch_size):
        batch_size = _checks.to_int(owner, "batch_size", batch_size)
        if batch_size < 1:
            raise ValueError(f"{owner}: batch_size must be >= 1, got {batch_size}")
        return batch_size

    # ------------------------------------------------------------ checkpoints
    def save(self, path):
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


def _non_finite_loss(loss, epoch, step, start, stop):
    return FloatingPointError(
        f"Sequential.fit: the loss is {loss} at epoch {epoch + 1}, step {step + 1} (examples "
        f"{start}..{stop - 1} of the epoch's order); the weights are those before that step. "
        f"Lower the learning rate, check the data for NaN/inf, or pass on_nan='skip' to skip "
        f"such steps")


def load_model(path):
    """load_model(path)

    Rebuild a model saved by ``Sequential.save``, with its optimiser state.
    The file is checked in full (no pickles, no code executed); anything
    unexpected raises ``cnnext.CheckpointError``.
    """
    return _checkpoint.load(path)

"""Callbacks for ``Sequential.fit(..., callbacks=[...])``: early stopping and checkpoints.

A callback is any callable ``callback(model, epoch, logs)``, called after
every epoch with that epoch's figures (``logs["loss"]``, ``"val_loss"``,
...); returning True stops training.  ``fit`` also calls a callback's
``on_train_begin(model)`` before the first epoch and ``on_train_end(model)``
after the last, when it has them: the classes here reset their state in the
first, so one instance can serve several ``fit`` calls.

=================  ======================================================
EarlyStopping      stop when a monitored figure stops improving
ModelCheckpoint    save the model (the best one, by default) atomically
=================  ======================================================
"""

import math
import os

import numpy as np

__all__ = ["EarlyStopping", "ModelCheckpoint"]

_MODES = ("auto", "min", "max")


def _mode(owner, monitor, mode):
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"{owner}: monitor must be the name of a logged figure such as "
                        f"'val_loss', got {monitor!r}")
    if mode not in _MODES:
        raise ValueError(f"{owner}: mode must be one of {_MODES}, got {mode!r}")
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    return mode


def _number(owner, name, value, minimum=0.0):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{owner}: {name} must be a finite number >= {minimum}, got {value!r}")
    return value


def _boolean(owner, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


class _Monitor:
    """Tracks the best value of one logged figure."""

    def __init__(self, owner, monitor, mode, min_delta):
        self.monitor = monitor
        self.mode = _mode(owner, monitor, mode)
        self.min_delta = _number(owner, "min_delta", min_delta)
        self._owner = owner
        self.best = None
        self.best_epoch = None

    def _current(self, logs):
        if self.monitor not in logs:
            hint = " (pass validation_data or validation_split to fit)" \
                if self.monitor.startswith("val_") else ""
            raise ValueError(f"{self._owner}: monitor={self.monitor!r} is not among the logged "
                             f"figures {sorted(logs)}{hint}")
        return float(logs[self.monitor])

    def _improves(self, value):
        """Whether ``value`` beats the best so far by more than min_delta (NaN never does)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """EarlyStopping(monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
    restore_best_weights=False)

    Stop training when ``monitor`` has not improved for ``patience`` epochs
    in a row, as Keras's callback of that name.

    Parameters
    ----------
    monitor : str
        The logged figure to watch: "val_loss", "val_accuracy", "loss", ...
    patience : int >= 0
        Epochs without improvement to wait before stopping.
    min_delta : float >= 0
        A change of at most this much is not an improvement.
    mode : {"auto", "min", "max"}
        Whether smaller or larger is better; "auto": larger for figures whose
        name holds "acc", smaller otherwise.
    restore_best_weights : bool
        When training ends (stopped or not), put back the parameters and
        buffers of the best epoch (the optimiser's state is not restored).

    Attributes
    ----------
    best, best_epoch : the best value seen and its epoch (0-based)
    stopped_epoch : the epoch after which training was stopped, or None
    wait : epochs since the last improvement
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        super().__init__("EarlyStopping", monitor, mode, min_delta)
        if isinstance(patience, (bool, np.bool_)) or not isinstance(patience, (int, np.integer)):
            raise TypeError(f"EarlyStopping: patience must be an int, got {patience!r}")
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.patience = int(patience)
        self.restore_best_weights = _boolean("EarlyStopping", "restore_best_weights",
                                             restore_best_weights)
        self.on_train_begin(None)

    def on_train_begin(self, model):
        self.best = self.best_epoch = self.stopped_epoch = None
        self.wait = 0
        self._best_state = None

    def __call__(self, model, epoch, logs):
        value = self._current(logs)
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_state = model.state_dict()
            return False
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, model):
        if self.restore_best_weights and self._best_state is not None:
            model.load_state_dict(self._best_state)

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, mode={self.mode!r}, "
                f"restore_best_weights={self.restore_best_weights})")


class ModelCheckpoint(_Monitor):
    """ModelCheckpoint(path, monitor="val_loss", mode="auto", save_best_only=True, min_delta=0.0)

    Save the model with ``model.save`` (atomically: an interrupted save
    leaves the previous file whole) after an epoch that improves
    ``monitor``, or after every epoch with ``save_best_only=False``.

    Parameters
    ----------
    path : str or os.PathLike
        Where to save; may hold ``str.format`` fields ``{epoch}`` (1-based)
        and any logged figure, e.g. ``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``.
    monitor, mode, min_delta :
        As in ``EarlyStopping``.
    save_best_only : bool
        Save only when ``monitor`` improves on the best so far.

    Attributes
    ----------
    best, best_epoch : the best value seen and its epoch (0-based)
    last_path : the path of the last save, or None
    """

    def __init__(self, path, monitor="val_loss", mode="auto", save_best_only=True,
                 min_delta=0.0):
        super().__init__("ModelCheckpoint", monitor, mode, min_delta)
        try:
            self.path = os.fspath(path)
        except TypeError:
            raise TypeError(f"ModelCheckpoint: path must be a str or os.PathLike, got "
                            f"{type(path).__name__}") from None
        if isinstance(self.path, bytes):
            raise TypeError("ModelCheckpoint: path must be a str, not bytes")
        self.save_best_only = _boolean("ModelCheckpoint", "save_best_only", save_best_only)
        self.on_train_begin(None)

    def on_train_begin(self, model):
        self.best = self.best_epoch = self.last_path = None

    def __call__(self, model, epoch, logs):
        if self.save_best_only:
            value = self._current(logs)
            if not self._improves(value):
                return False
            self.best, self.best_epoch = value, epoch
        try:
            path = self.path.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint: cannot fill in path {self.path!r} from epoch "
                             f"and the logged figures {sorted(logs)} ({exc})") from None
        model.save(path)
        self.last_path = path
        return False

    def __repr__(self):
        return (f"ModelCheckpoint({self.path!r}, monitor={self.monitor!r}, mode={self.mode!r}, "
                f"save_best_only={self.save_best_only})")

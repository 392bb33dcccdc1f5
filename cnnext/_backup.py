"""Backups of a training run: ``Sequential.fit(..., backup_dir=DIR)``.

A run killed part way (out of memory, a pre-empted machine, Ctrl-C) loses
nothing but the steps since its last backup: a later ``fit`` with the same
``backup_dir`` and the same arguments resumes from it and ends with the
weights an uninterrupted run ends with, bit for bit.

What a backup holds, in two files of one *generation* ``g`` (six digits):

* ``cnnext-backup-g.npz``: a checkpoint of the model and its optimiser
  state (``Sequential.save``'s format, read back by the strict reader);
* ``cnnext-backup-g.state.npz``: the run's position and what it needs to go
  on exactly as it would have: the epoch and the steps done in it, the
  shuffling generator's state at that epoch's start, the epoch's running
  sums and predictions so far, the history of the epochs done, the state of
  every random generator the layers hold (Dropout), the callbacks' state
  (``backup_state()`` / ``restore_state()`` where a callback has them), the
  run's *fingerprint*, and the SHA-256 of its checkpoint file.

Each file is written atomically (temporary file, fsync, rename); the state
file is written last and names its checkpoint, and generation ``g - 1`` is
removed only once ``g`` is whole: a kill at any moment leaves a complete
generation.  The fingerprint (the layers and their configurations, the
dtype, the data's shapes and BLAKE2 digests, epochs, batch size, shuffling,
seed, loss, the optimiser's type and hyper-parameters, ...) must equal the
new run's, or ``fit`` refuses the backup naming what differs, before
changing anything: a backup is applied whole or not at all.  Weights are
not part of it: an interrupted model resumes whatever its weights became.
When ``fit`` completes, the backup files are removed (the directory too,
when that leaves it empty).  A lock file keeps two runs from sharing one
directory at once.
"""

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import re
import time
import zipfile

import numpy as np

from . import _checkpoint, _files
from ._checkpoint import CheckpointError
from ._version import __version__

FORMAT = "cnnext-backup"
FORMAT_VERSION = 1
PREFIX = "cnnext-backup-"
_STATE = re.compile(rf"^{PREFIX}([0-9]{{6}})\.state\.npz$")
_LOCK = f"{PREFIX}lock"
MAX_STATE_BYTES = 1 << 30


class BackupMismatch(ValueError):
    """The backup in ``backup_dir`` is of another training run."""


# ------------------------------------------------------------ fingerprints
def digest(array):
    """A BLAKE2 digest of an array's dtype, shape and values (C order)."""
    array = np.ascontiguousarray(array)
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(memoryview(array).cast("B"))
    return hasher.hexdigest()


def data_fingerprint(X, y):
    return {"X": [list(X.shape), X.dtype.str, digest(X)],
            "y": [list(y.shape), y.dtype.str, digest(y)]}


def model_fingerprint(model):
    return {"layers": [[type(layer).__name__, _plain(layer.config())] for layer in model.layers],
            "dtype": model.dtype.name,
            "params": {name: [list(a.shape), a.dtype.str]
                       for name, a in model.parameters().items()}}


def _plain(value):
    """``value`` as JSON would give it back (tuples as lists), to compare fingerprints."""
    return json.loads(json.dumps(value, default=repr))


# -------------------------------------------------------------- generators
def generators(model):
    """(name, numpy.random.Generator) of every generator the model's layers hold, found
    through their attributes (nested layers included), in a fixed order."""
    found, seen = [], set()

    def walk(obj, name):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, np.random.Generator):
            found.append((name, obj))
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                walk(item, f"{name}[{i}]")
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("cnnext.layers"):
            for key in sorted(vars(obj)):
                walk(vars(obj)[key], f"{name}.{key}")

    for i, layer in enumerate(model.layers):
        walk(layer, str(i))
    return found


def _generator_state(generator):
    return _plain(generator.bit_generator.state)


def _set_generator_state(generator, state, where):
    try:
        generator.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{where}: a random generator's state does not fit ({exc})") \
            from None


# ----------------------------------------------------------- before a run
def check_directory(owner, directory):
    """check_directory(owner, directory)

    Refuse, before any work, a backup directory that could not be used: a
    path that is not a directory, or one that cannot be created or written
    (checked by creating a file in it, or in its nearest existing parent).
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{owner}: backup_dir must be a path (str or os.PathLike), got "
                        f"{type(directory).__name__}")
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(20, f"{owner}: backup_dir is not a directory", directory)
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(20, f"{owner}: backup_dir cannot be created ({existing} is "
                                 f"not a directory)", directory)
    _checkpoint.check_destination(owner, os.path.join(existing, _LOCK), "backup_dir")


def peek(directory):
    """The state (a dict: fingerprint, epoch, step, ...) of the newest backup in
    ``directory``, or None when it holds none; CheckpointError if it is damaged."""
    backup = Backup("peek", directory)
    found = sorted((int(m.group(1)), n) for n in backup._own_files() if (m := _STATE.match(n)))
    if not found:
        return None
    return backup._read_state(os.path.join(backup.directory, found[-1][1]))[0]


# --------------------------------------------------------------------- Backup
class Position:
    """Where a resumed run starts: ``epoch`` (0-based), ``step`` (steps done in it), the
    shuffling generator's state at that epoch's start, the epoch's running sums
    ``totals`` (loss sum, examples counted, steps skipped) and ``predicted``
    (the predictions of its first ``step`` batches, in the epoch's order), the
    ``history`` of the epochs done."""

    def __init__(self, epoch, step, epoch_rng, totals, predicted, history):
        self.epoch, self.step, self.epoch_rng = epoch, step, epoch_rng
        self.totals, self.predicted, self.history = totals, predicted, history


class Backup:
    """Backup(owner, directory, every_steps=None, every_seconds=None)

    The backups of one ``fit`` run in ``directory`` (created if missing): a
    backup at every epoch's end, and within an epoch every ``every_steps``
    steps and/or once ``every_seconds`` have passed since the last one.
    """

    def __init__(self, owner, directory, every_steps=None, every_seconds=None):
        self.owner = owner
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{owner}: backup_dir must be a path (str or os.PathLike), got "
                            f"{type(directory).__name__}")
        self.directory = os.fspath(directory)
        self.every_steps = _positive(owner, "backup_steps", every_steps, int)
        self.every_seconds = _positive(owner, "backup_seconds", every_seconds, float)
        self.generation = 0
        self._lock_file = None
        self._last_time = time.monotonic()
        self._last_step = 0

    # ------------------------------------------------------------ lifetime
    def open(self):
        """Create the directory if needed, check it can be written and lock it."""
        check_directory(self.owner, self.directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise type(exc)(exc.errno, f"{self.owner}: cannot create backup_dir "
                            f"({exc.strerror})", self.directory) from None
        _checkpoint.check_destination(self.owner, os.path.join(self.directory, _LOCK),
                                      "backup_dir")
        self._lock()
        return self

    def _lock(self):
        path = os.path.join(self.directory, _LOCK)
        file = open(path, "a+b")  # noqa: SIM115 - held until close()
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock; one run per directory is on the user
            self._lock_file = file
            return
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            raise RuntimeError(f"{self.owner}: backup_dir {self.directory} is in use by another "
                               f"training run; each run needs a backup_dir of its own") from None
        self._lock_file = file

    def close(self):
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def remove(self):
        """Delete every backup file (and the directory, when that leaves it empty)."""
        # The states first, newest first: a kill part-way through never leaves a
        # state whose checkpoint is gone (restore would find it and fail).
        names = self._own_files()
        states = sorted((n for n in names if _STATE.match(n)), reverse=True)
        for name in states + [n for n in names if not _STATE.match(n)]:
            _unlink(os.path.join(self.directory, name))
        self.close()
        _unlink(os.path.join(self.directory, _LOCK))
        with contextlib.suppress(OSError):  # not empty: it holds files that are not ours
            os.rmdir(self.directory)

    def _own_files(self):
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        return [n for n in names if (n.startswith(PREFIX) and n != _LOCK)
                or (n.startswith(f".{PREFIX}") and n.endswith(".tmp"))]

    # ----------------------------------------------------------------- due
    def due(self, step):
        """Whether a backup is due within an epoch after ``step`` steps of it."""
        if self.every_steps is not None and step - self._last_step >= self.every_steps:
            return True
        return (self.every_seconds is not None
                and time.monotonic() - self._last_time >= self.every_seconds)

    def steps_until_due(self, step):
        """How many steps may run from ``step`` before a backup by steps is due (None: no
        step rule)."""
        if self.every_steps is None:
            return None
        return max(1, self.every_steps - (step - self._last_step))

    # --------------------------------------------------------------- write
    def write(self, model, fingerprint, position, callbacks=()):
        """Write a new generation holding ``model`` at ``position``; then drop the old one."""
        generation = self.generation + 1
        checkpoint = f"{PREFIX}{generation:06d}.npz"
        checkpoint_path = os.path.join(self.directory, checkpoint)
        _checkpoint.save(model, checkpoint_path, owner=self.owner)
        with open(checkpoint_path, "rb") as file:
            sha = hashlib.file_digest(file, "sha256").hexdigest()
        state = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "cnnext_version": __version__,
            "fingerprint": fingerprint, "checkpoint": checkpoint, "checkpoint_sha256": sha,
            "epoch": position.epoch, "step": position.step, "epoch_rng": position.epoch_rng,
            "totals": list(position.totals), "history": position.history,
            "generators": {name: _generator_state(g) for name, g in generators(model)},
            "callbacks": [_callback_state(c) for c in callbacks],
        }
        text = json.dumps(state, allow_nan=True, sort_keys=True).encode("utf-8")
        members = {"state": np.frombuffer(text, np.uint8)}
        if position.step:
            members["predicted"] = np.ascontiguousarray(position.predicted, np.int64)
        _checkpoint.write_atomically(
            os.path.join(self.directory, f"{PREFIX}{generation:06d}.state.npz"),
            lambda file: np.savez(file, **members), owner=self.owner)
        for name in self._own_files():
            match = re.match(rf"^{PREFIX}([0-9]{{6}})", name)
            if (match and int(match.group(1)) < generation) or name.endswith(".tmp"):
                _unlink(os.path.join(self.directory, name))
        self.generation = generation
        self._last_time, self._last_step = time.monotonic(), position.step

    # ------------------------------------------------------------- restore
    def restore(self, model, optimizer, fingerprint, callbacks=()):
        """Apply the newest backup to ``model`` and ``optimizer``; its Position, or None
        when ``directory`` holds none.  BackupMismatch (naming what differs) or
        CheckpointError before anything is changed."""
        found = sorted((int(m.group(1)), n) for n in self._own_files()
                       if (m := _STATE.match(n)))
        if not found:
            return None
        generation, name = found[-1]
        path = os.path.join(self.directory, name)
        state, predicted = self._read_state(path)
        differs = _differences(state.get("fingerprint"), fingerprint)
        if differs:
            raise BackupMismatch(
                f"{self.owner}: {self.directory} holds a backup of another training run "
                f"(it differs in {', '.join(differs)}); pass the arguments of that run to "
                f"resume it, or another backup_dir (or delete this one) to start afresh")
        checkpoint_path = os.path.join(self.directory, str(state["checkpoint"]))
        if os.path.basename(checkpoint_path) != state["checkpoint"]:
            raise CheckpointError(f"{path}: invalid checkpoint name {state['checkpoint']!r}")
        try:
            file = _files.open_regular(checkpoint_path, CheckpointError)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: its checkpoint {checkpoint_path} is missing; the "
                                  f"backup is damaged") from None
        with file:
            sha = hashlib.sha256(_files.read_capped(file, 1 << 40, checkpoint_path,
                                                    CheckpointError)).hexdigest()
        if sha != state["checkpoint_sha256"]:
            raise CheckpointError(f"{checkpoint_path}: SHA-256 {sha} is not the one its backup "
                                  f"state {path} records; the backup is damaged")
        saved = _checkpoint.load(checkpoint_path)
        position = self._position(path, state, predicted)
        layer_generators = dict(generators(model))
        if set(layer_generators) != set(state["generators"]):
            raise CheckpointError(f"{path}: holds random generators {sorted(state['generators'])},"
                                  f" the model {sorted(layer_generators)}")
        for name, generator in layer_generators.items():  # on copies: nothing changes yet
            _set_generator_state(copy.deepcopy(generator), state["generators"][name], path)
        if len(state["callbacks"]) != len(callbacks):
            raise BackupMismatch(f"{self.owner}: the backup was made with "
                                 f"{len(state['callbacks'])} callbacks, this fit has "
                                 f"{len(callbacks)}")
        # Everything is read and checked: now apply it, all of it.
        _copy_arrays(saved, model)
        optimizer.state = saved.optimizer._state_copy() if saved.optimizer else {}
        for name, generator in layer_generators.items():
            _set_generator_state(generator, state["generators"][name], path)
        for callback, saved_state in zip(callbacks, state["callbacks"], strict=True):
            if saved_state is not None and hasattr(callback, "restore_state"):
                callback.restore_state(saved_state)
        self.generation = generation
        self._last_time, self._last_step = time.monotonic(), position.step
        return position

    def _read_state(self, path):
        with _files.open_regular(path, CheckpointError) as raw:
            data = _files.read_capped(raw, MAX_STATE_BYTES, path, CheckpointError)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                if set(archive.files) - {"state", "predicted"} or "state" not in archive.files:
                    raise CheckpointError(f"{path}: not a cnnext backup state (members "
                                          f"{sorted(archive.files)})")
                raw_state = archive["state"]
                predicted = archive["predicted"] if "predicted" in archive.files else None
            if raw_state.dtype != np.uint8 or raw_state.ndim != 1:
                raise ValueError("the state member is not bytes")
            state = json.loads(raw_state.tobytes().decode("utf-8"))
        except CheckpointError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
                RecursionError) as exc:
            raise CheckpointError(f"{path}: not a valid cnnext backup state ({exc})") from None
        keys = {"format", "format_version", "cnnext_version", "fingerprint", "checkpoint",
                "checkpoint_sha256", "epoch", "step", "epoch_rng", "totals", "history",
                "generators", "callbacks"}
        if not isinstance(state, dict) or set(state) != keys or state["format"] != FORMAT:
            raise CheckpointError(f"{path}: not a cnnext backup state")
        if state["format_version"] != FORMAT_VERSION:
            raise CheckpointError(f"{path}: backup format version {state['format_version']!r}; "
                                  f"this cnnext {__version__} reads {FORMAT_VERSION}")
        return state, predicted

    def _position(self, path, state, predicted):
        epoch, step, totals = state["epoch"], state["step"], state["totals"]
        if not (type(epoch) is int and epoch >= 0 and type(step) is int and step >= 0
                and isinstance(totals, list) and len(totals) == 3
                and isinstance(state["history"], dict) and isinstance(state["generators"], dict)
                and isinstance(state["callbacks"], list)):
            raise CheckpointError(f"{path}: invalid position in the backup state")
        if step and (predicted is None or predicted.ndim != 1 or predicted.dtype != np.int64):
            raise CheckpointError(f"{path}: a backup within an epoch must hold its predictions")
        total, counted, skipped = totals
        if not (isinstance(total, float) and type(counted) is int and type(skipped) is int):
            raise CheckpointError(f"{path}: invalid running sums {totals!r}")
        return Position(epoch, step, state["epoch_rng"], (total, counted, skipped),
                        None if predicted is None else predicted.astype(np.intp),
                        state["history"])


def _copy_arrays(source, model):
    """Copy the parameters (and buffers, where layers have them) of ``source`` into
    ``model``'s own arrays; the fingerprint made sure they have the same layout."""
    pairs = [(model.parameters(), source.parameters())]
    if hasattr(model, "buffers") and callable(model.buffers):
        pairs.append((model.buffers(), source.buffers()))
    for mine, theirs in pairs:
        for name, array in mine.items():
            np.copyto(array, theirs[name])


def _callback_state(callback):
    if hasattr(callback, "backup_state"):
        return _plain(callback.backup_state())
    return None


def _differences(saved, current):
    """The names of the fingerprint entries that differ (nested keys joined by '.')."""
    if not isinstance(saved, dict):
        return ["its format"]
    differs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), _plain(current.get(key))
        if isinstance(a, dict) and isinstance(b, dict):
            differs += [f"{key}.{inner}" for inner in _differences(a, b)]
        elif a != b:
            differs.append(f"{key} ({_short(a)} vs {_short(b)} now)")
    return differs


def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _positive(owner, name, value, kind):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{owner}: {name} must be a positive number or None, got {value!r}")
    if kind is int and not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}: {name} must be an int or None, got {value!r}")
    value = kind(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}: {name} must be > 0, got {value!r}")
    return value


def _unlink(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ------------------------------------------------------------------ the run
class Run:
    """Run(backup, fingerprint, rng, callbacks)

    ``fit``'s side of a backup: where the run starts, and the hooks that
    write backups as it goes.  ``rng`` is the shuffling generator (None
    without shuffling).
    """

    def __init__(self, backup, fingerprint, rng, callbacks):
        self.backup, self.fingerprint, self.rng = backup, fingerprint, rng
        self.callbacks = callbacks
        self.position = None
        self.epoch_rng = None
        self.history = None

    def start(self, model, optimizer, history):
        """Resume from the backup, if any: (first epoch, history to go on with)."""
        self.position = self.backup.restore(model, optimizer, self.fingerprint, self.callbacks)
        if self.position is None:
            self.history = history
            return 0, history
        for key in history:
            history[key] = list(self.position.history.get(key, []))
        self.history = history
        return self.position.epoch, history

    def epoch_begins(self, epoch):
        """Before the epoch's shuffle: put back the generator's state of a resumed epoch, and
        remember the state either way.  Returns the Position the epoch resumes from (its
        ``step``, ``totals`` and ``predicted``), or None for an epoch that starts afresh."""
        resumed = self.position is not None and self.position.epoch == epoch
        if self.rng is not None:
            if resumed and self.position.epoch_rng is not None:
                self.rng.bit_generator.state = self.position.epoch_rng
            self.epoch_rng = _generator_state(self.rng)
        if not resumed:
            return None
        position, self.position = self.position, None
        return position

    def steps_allowed(self, step):
        return self.backup.steps_until_due(step)

    def after_steps(self, model, epoch, step, totals, predicted):
        """After ``step`` steps of ``epoch``: a backup when one is due."""
        if self.backup.due(step):
            self.backup.write(model, self.fingerprint,
                              Position(epoch, step, self.epoch_rng, totals, predicted,
                                       dict(self.history)), self.callbacks)

    def epoch_ends(self, model, epoch):
        """After the epoch's figures were recorded and its callbacks ran."""
        rng = None if self.rng is None else _generator_state(self.rng)
        self.backup.write(model, self.fingerprint,
                          Position(epoch + 1, 0, rng, (0.0, 0, 0), None, dict(self.history)),
                          self.callbacks)

    def finish(self):
        self.backup.remove()


def fingerprint(model, X, y, validation, arguments):
    """The fingerprint of a ``fit`` run (see the module docstring)."""
    return {
        "model": model_fingerprint(model),
        "data": data_fingerprint(X, y),
        "validation": None if validation is None else data_fingerprint(validation[0],
                                                                        validation[2]),
        "arguments": _plain(arguments),
    }

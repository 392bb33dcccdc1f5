"""Model checkpoints: one .npz file, written atomically, read back strictly.

Format (version 1): an uncompressed zip of .npy members, as ``numpy.savez``
writes it:

* ``cnnext_checkpoint.npy``: uint8 bytes of a UTF-8 JSON document
  ``{"format": "cnnext-checkpoint", "format_version": 1, "cnnext_version",
  "model": {"input_shape", "loss", "layers": [{"type", "config"}, ...]},
  "params": {name: {"shape", "dtype"}}, "optimizer": null or {"type",
  "config", "state": {name: {"arrays": {slot: {"shape", "dtype"}},
  "counters": {counter: int}}}}}``, plus ``"buffers": {name: {"shape",
  "dtype"}}`` when the model has buffers (running statistics);
* ``params/<name>.npy`` for every parameter ("0.weight", "3.block.0.weight",
  ...);
* ``buffers/<name>.npy`` for every buffer ("1.running_mean", ...);
* ``optimizer/<name>/<slot>.npy`` for every optimiser array.

A layer holding others (``Residual``) has the specs of those layers in its
config: ``{"block": [{"type", "config"}, ...], "shortcut": null or [...]}``.

Writing goes to a temporary file in the destination directory, is flushed
to disk, then renamed over the destination: an interrupted save leaves
either the old file or the new one, never a broken one.

Reading trusts nothing: the zip directory is checked before any member is
read (only the expected members, stored or deflated, sizes bounded by the
declared arrays), every .npy header is parsed without pickles and must
match the JSON exactly (dtype, shape, byte count), values must be finite,
layer types come from a fixed table and their configs go through the
layers' own argument checks, and layer constructors may not allocate more
parameters than the file holds.  Any failure is a ``CheckpointError``.
"""

import errno
import io
import json
import math
import os
import re
import secrets
import warnings
import zipfile
import zlib

import numpy as np

from . import _files, losses, optim
from . import layers as _layers
from . import model as _model
from ._version import __version__
from .layers import base as _layer_base

FORMAT = "cnnext-checkpoint"
FORMAT_VERSION = 1
META_MEMBER = "cnnext_checkpoint.npy"
MAX_META_BYTES = 1 << 20
# An .npy header is padded to 64 bytes and rarely exceeds a few hundred.
MAX_NPY_HEADER = 4096
OPTIMIZERS = {cls.__name__: cls for cls in (optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop)}
# "<layer>.<name>", or "<layer>.block.<i>.<name>" inside Residuals (nested at most MAX_DEPTH).
MAX_DEPTH = 8
_PARAM_NAME = re.compile(
    rf"^[0-9]{{1,6}}(\.(block|shortcut)\.[0-9]{{1,6}}){{0,{MAX_DEPTH}}}\.[a-z_]{{1,32}}$")
BUFFER_DTYPES = ("float32", "float64", "int64")
_SLOT_NAME = re.compile(r"^[a-z_]{1,32}$")


class CheckpointError(ValueError):
    """A file is not a valid cnnext checkpoint (corrupt, truncated, foreign or tampered)."""


# ----------------------------------------------------------------------- save
def save(model, path, owner="Sequential.save"):
    """Write ``model`` to ``path`` atomically (see the module docstring).

    What is written is read back by ``load`` before it replaces ``path``:
    a file ``load_model`` would refuse never replaces one it accepts.
    Non-finite parameters or optimiser state (a diverged model) are refused
    up front, naming the parameter, and nothing is written.
    """
    path = _path(owner, path)
    params = model.parameters()
    _check_finite(owner, params, model.optimizer)
    arrays = {f"params/{name}": array for name, array in params.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cnnext_version": __version__,
        "model": {
            "input_shape": None if model.input_shape is None else list(model.input_shape),
            "loss": model.loss.name,
            "layers": [{"type": type(layer).__name__, "config": layer.config()}
                       for layer in model.layers],
        },
        "params": {name: _describe(array) for name, array in params.items()},
        "optimizer": None,
    }
    buffers = model.buffers()
    if buffers:
        meta["buffers"] = {name: _describe(array) for name, array in buffers.items()}
        arrays.update({f"buffers/{name}": array for name, array in buffers.items()})
    if model.optimizer is not None:
        state_dict = model.optimizer.state_dict()
        state = {}
        for name, entry in state_dict["state"].items():
            slots = {k: v for k, v in entry.items() if isinstance(v, np.ndarray)}
            state[name] = {"arrays": {k: _describe(v) for k, v in slots.items()},
                           "counters": {k: v for k, v in entry.items() if k not in slots}}
            arrays.update({f"optimizer/{name}/{k}": v for k, v in slots.items()})
        meta["optimizer"] = {"type": state_dict["type"], "config": state_dict["config"],
                             "state": state}
    try:
        text = json.dumps(meta, allow_nan=False, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{owner}: the model's configuration cannot be stored ({exc}); "
                         f"nothing was written to {path}") from None
    members = {META_MEMBER[:-4]: np.frombuffer(text, dtype=np.uint8), **arrays}
    write_atomically(path, lambda file: np.savez(file, **members), verify=_verify(owner, path),
                     owner=owner)


def _describe(array):
    return {"shape": list(array.shape), "dtype": array.dtype.name}


def _path(owner, path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{owner}: path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _check_finite(owner, params, optimizer):
    """Refuse to save what ``load`` refuses: NaN or infinity in a parameter or its state."""
    for name, array in params.items():
        if not np.isfinite(array).all():
            raise ValueError(f"{owner}: parameter {name!r} holds NaN or infinite values (the "
                             f"model diverged); a checkpoint of it could not be loaded, so "
                             f"nothing was written. Save before the divergence, or train with "
                             f"fit(on_nan='raise'), which keeps the last finite weights")
    if optimizer is None:
        return
    for name, entry in optimizer.state.items():
        for slot, value in entry.items():
            if isinstance(value, np.ndarray) and not np.isfinite(value).all():
                raise ValueError(f"{owner}: the optimiser's {slot!r} of parameter {name!r} "
                                 f"holds NaN or infinite values; a checkpoint of it could not "
                                 f"be loaded, so nothing was written")


def _verify(owner, path):
    def verify(temporary):
        try:
            load(temporary)
        except CheckpointError as exc:
            reason = str(exc).removeprefix(f"{temporary}: ")
            raise ValueError(f"{owner}: this model cannot be stored in a checkpoint that "
                             f"load_model accepts ({reason}); {path} was left as it was") from None
    return verify


def check_destination(owner, path, what="path"):
    """check_destination(owner, path, what="path")

    Refuse, before any work is done, a destination ``write_atomically``
    could not write: its directory missing or not writable, or ``path`` a
    directory.  The check creates and removes a temporary file beside
    ``path``, so permissions, read-only file systems and full quotas on
    creation all show up now, in an error naming the user's path.

    Returns
    -------
    str
        ``path`` as a str (``os.fspath``).
    """
    path = _path(owner, path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{owner}: {what} is a directory", path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(errno.ENOTDIR, f"{owner}: {directory} is not a directory",
                                 path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"{owner}: the directory of {what} does not exist "
                                f"({directory})", path)
    fd, temporary = _temporary(owner, path)
    os.close(fd)
    os.unlink(temporary)
    return path


def _temporary(owner, path):
    """A new temporary file beside ``path``: (fd, its path); an error names ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(
        directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL: never write through someone else's file; mode 0o666 lets the
        # umask decide the final permissions, as for any new file.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                     | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise type(exc)(exc.errno, f"{owner}: cannot write beside {path} ({exc.strerror})",
                        path) from None
    return fd, temporary


def write_atomically(path, write, verify=None, owner="Sequential.save"):
    """write_atomically(path, write, verify=None, owner="Sequential.save")

    ``write(file)`` into a temporary file beside ``path``, flushed to disk,
    checked by ``verify(temporary path)`` when given, then renamed over
    ``path`` (and the rename made durable): a reader of ``path`` sees the
    old file or the whole new one, never a part, and an error leaves the old
    file in place and no temporary file behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = _temporary(owner, path)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if verify is not None:
            verify(temporary)
        os.replace(temporary, path)
    except BaseException as exc:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(exc, OSError) and exc.filename == temporary:
            raise type(exc)(exc.errno, f"{owner}: cannot write {path} ({exc.strerror})",
                            path) from None
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------- load
def load(path):
    """Rebuild the model stored at ``path``; CheckpointError if anything is off."""
    path = os.fspath(path)
    # A device or FIFO is refused unread; the archive is read through a view
    # whose length is fixed now, so every read below is bounded by it.
    raw = _files.open_regular(path, CheckpointError)
    try:
        view = _files.BoundedFile(raw)
    except OSError as exc:  # a /proc file whose end cannot be sought
        raw.close()
        raise CheckpointError(f"{path}: not a cnnext checkpoint (its end cannot be found: "
                              f"{exc.strerror or exc})") from None
    with view as file:
        try:
            archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError,
                NotImplementedError) as exc:
            raise CheckpointError(f"{path}: not a cnnext checkpoint (not a valid .npz/zip "
                                  f"archive: {exc})") from None
        with archive:
            try:
                return _Reader(path, archive, file.length).model()
            # UnicodeDecodeError: a member's local header flags its name UTF-8 but it is not.
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
                    NotImplementedError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from None


class _Reader:
    def __init__(self, path, archive, file_size):
        self.path = path
        self.archive = archive
        self.members = self._directory(archive.infolist(), file_size)

    def fail(self, message):
        raise CheckpointError(f"{self.path}: {message}")

    def _directory(self, infos, file_size):
        members = {}
        for info in infos:
            if info.filename in members:
                self.fail(f"member {info.filename!r} appears twice")
            if info.flag_bits & 0x1:
                self.fail(f"member {info.filename!r} is encrypted")
            if info.compress_type == zipfile.ZIP_STORED:
                if info.file_size != info.compress_size:
                    self.fail(f"member {info.filename!r} declares {info.file_size} bytes but "
                              f"stores {info.compress_size}")
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                # Deflate cannot expand data by more than ~1032x.
                if info.file_size > 1032 * info.compress_size + 1024:
                    self.fail(f"member {info.filename!r} declares an impossible size")
            else:
                self.fail(f"member {info.filename!r} uses an unsupported compression")
            members[info.filename] = info
        if sum(info.compress_size for info in infos) > file_size:
            self.fail("the archive declares more data than the file holds (truncated?)")
        if META_MEMBER not in members:
            self.fail(f"not a cnnext checkpoint (no {META_MEMBER} member; members: "
                      f"{sorted(members)[:5]})")
        return members

    # ------------------------------------------------------------- members
    def _array(self, member, shape, dtype):
        """The .npy ``member``, which must hold exactly ``shape`` of ``dtype``.

        ``shape=None`` accepts any 1-D array of at most MAX_META_BYTES bytes.
        """
        info = self.members.get(member)
        if info is None:
            self.fail(f"member {member!r} is missing")
        dtype = np.dtype(dtype)
        limit = MAX_META_BYTES if shape is None else \
            math.prod(shape) * dtype.itemsize + MAX_NPY_HEADER
        if info.file_size > limit:
            self.fail(f"member {member!r} is larger ({info.file_size} bytes) than its declared "
                      f"contents allow ({limit})")
        data = self.archive.read(member)
        if len(data) != info.file_size:
            self.fail(f"member {member!r} is truncated")
        stream = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(stream)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy version {version}")
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            with warnings.catch_warnings():  # a damaged header's literal may warn as it fails
                warnings.simplefilter("ignore")
                header = read_header(stream, max_header_size=MAX_NPY_HEADER)
        except Exception as exc:  # NumPy's header parser raises many kinds on damaged input
            self.fail(f"member {member!r} is not a valid .npy array ({type(exc).__name__}: "
                      f"{exc})")
        found_shape, fortran_order, found_dtype = header
        if (found_dtype.hasobject or found_dtype.fields is not None or found_dtype.subdtype
                or found_dtype.kind != dtype.kind or found_dtype.itemsize != dtype.itemsize):
            self.fail(f"member {member!r} holds dtype {found_dtype}, expected {dtype}")
        if (shape is None and len(found_shape) != 1) or (
                shape is not None and tuple(found_shape) != tuple(shape)):
            self.fail(f"member {member!r} has shape {tuple(found_shape)}, expected "
                      f"{'1-D' if shape is None else tuple(shape)}")
        body = data[stream.tell():]
        expected = math.prod(found_shape) * dtype.itemsize
        if len(body) != expected:
            self.fail(f"member {member!r} holds {len(body)} bytes of data for shape "
                      f"{tuple(found_shape)}, expected {expected}")
        array = np.frombuffer(body, dtype=found_dtype).reshape(
            found_shape, order="F" if fortran_order else "C")
        return array.astype(dtype.newbyteorder("="), order="C", copy=True)

    def _meta(self):
        raw = self._array(META_MEMBER, None, np.uint8)

        def no_duplicates(pairs):
            keys = [k for k, _ in pairs]
            if len(keys) != len(set(keys)):
                raise ValueError(f"duplicate key in {keys}")
            return dict(pairs)

        def no_constants(name):
            raise ValueError(f"{name} is not allowed")

        try:
            meta = json.loads(raw.tobytes().decode("utf-8"), object_pairs_hook=no_duplicates,
                              parse_constant=no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self.fail(f"the checkpoint's JSON header is invalid ({exc})")
        return meta

    # ---------------------------------------------------------- the schema
    def _keys(self, where, value, required, optional=()):
        if not isinstance(value, dict):
            self.fail(f"{where} must be a JSON object, got {type(value).__name__}")
        missing = set(required) - set(value)
        unknown = set(value) - set(required) - set(optional)
        if missing or unknown:
            self.fail(f"{where} has missing keys {sorted(missing)} / unknown keys "
                      f"{sorted(unknown)}")
        return value

    def _shape(self, where, value):
        if not isinstance(value, list) or len(value) > 8 or not all(
                type(d) is int and 0 <= d < 2**40 for d in value):
            self.fail(f"{where} must be a list of at most 8 non-negative ints, got {value!r}")
        return tuple(value)

    def _spec(self, where, value, dtypes=tuple(_layer_base.DTYPES)):
        self._keys(where, value, ("shape", "dtype"))
        if not isinstance(value["dtype"], str) or value["dtype"] not in dtypes:
            self.fail(f"{where}.dtype must be one of {list(dtypes)}, got {value['dtype']!r}")
        return self._shape(f"{where}.shape", value["shape"]), value["dtype"]

    def model(self):
        meta = self._keys("the header", self._meta(),
                          ("format", "format_version", "cnnext_version", "model", "params",
                           "optimizer"), ("buffers",))
        if meta["format"] != FORMAT:
            self.fail(f"not a cnnext checkpoint (format {meta['format']!r})")
        if meta["format_version"] != FORMAT_VERSION:
            self.fail(f"checkpoint format version {meta['format_version']!r} (written by cnnext "
                      f"{meta['cnnext_version']!r}); this cnnext {__version__} reads version "
                      f"{FORMAT_VERSION}")
        params = self._params(meta["params"])
        buffers = self._buffers(meta.get("buffers", {}), "buffers" in meta)
        optimizer_meta = meta["optimizer"]
        optimizer_arrays = {} if optimizer_meta is None else self._optimizer_arrays(
            optimizer_meta, params)
        expected = {META_MEMBER, *(f"params/{n}.npy" for n in params),
                    *(f"buffers/{n}.npy" for n in buffers),
                    *(f"optimizer/{n}/{s}.npy" for n, s in optimizer_arrays)}
        if set(self.members) != expected:
            self.fail(f"unexpected members {sorted(set(self.members) - expected)[:5]} / missing "
                      f"members {sorted(expected - set(self.members))[:5]}")
        model = self._build(meta["model"], params, buffers)
        if optimizer_meta is not None:
            model.optimizer = self._optimizer(optimizer_meta, optimizer_arrays)
        return model

    def _params(self, declared):
        if not isinstance(declared, dict):
            self.fail("'params' must be a JSON object")
        params = {}
        for name, spec in declared.items():
            if not _PARAM_NAME.match(name):
                self.fail(f"invalid parameter name {name!r}")
            shape, dtype = self._spec(f"params[{name!r}]", spec)
            array = self._array(f"params/{name}.npy", shape, dtype)
            if not np.isfinite(array).all():
                self.fail(f"parameter {name!r} holds NaN or infinite values")
            params[name] = array
        return params

    def _buffers(self, declared, present):
        if not isinstance(declared, dict) or (present and not declared):
            self.fail("'buffers' must be a non-empty JSON object (left out when there are none)")
        buffers = {}
        for name, spec in declared.items():
            if not _PARAM_NAME.match(name):
                self.fail(f"invalid buffer name {name!r}")
            shape, dtype = self._spec(f"buffers[{name!r}]", spec, BUFFER_DTYPES)
            array = self._array(f"buffers/{name}.npy", shape, dtype)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                self.fail(f"buffer {name!r} holds NaN or infinite values")
            if array.dtype.kind == "i" and array.size and array.min() < 0:
                self.fail(f"buffer {name!r} holds negative counts")
            buffers[name] = array
        return buffers

    def _build(self, spec, params, buffers):
        spec = self._keys("'model'", spec, ("input_shape", "loss", "layers"))
        layer_specs = spec["layers"]
        if not isinstance(layer_specs, list) or not layer_specs or len(layer_specs) > 10_000:
            self.fail("'model.layers' must be a non-empty list")
        budget = [sum(array.size for array in (*params.values(), *buffers.values()))]
        token = _layer_base._parameter_budget.set(budget)
        try:
            built = [self._layer(i, s) for i, s in enumerate(layer_specs)]
        finally:
            _layer_base._parameter_budget.reset(token)
        input_shape = spec["input_shape"]
        if input_shape is not None:
            input_shape = self._shape("'model.input_shape'", input_shape)
        try:
            model = _model.Sequential(built, input_shape=input_shape)
            model.loss = losses.get(spec["loss"])
        except (TypeError, ValueError) as exc:
            self.fail(f"invalid model: {exc}")
        for kind, own, stored in (("parameter", model.parameters(), params),
                                  ("buffer", model.buffers(), buffers)):
            if set(own) != set(stored):
                self.fail(f"the layers have {kind}s {sorted(own)}, the file holds "
                          f"{sorted(stored)}")
            for name, array in own.items():
                if array.shape != stored[name].shape or array.dtype != stored[name].dtype:
                    self.fail(f"{kind} {name!r} has shape {stored[name].shape} and dtype "
                              f"{stored[name].dtype}; the layer needs {array.shape} "
                              f"{array.dtype}")
        for name, array in buffers.items():
            index, _, inner = name.partition(".")
            problem = model.layers[int(index)]._invalid_buffer(inner, array)
            if problem:
                self.fail(f"buffer {name!r}: {problem}")
        for own, stored in ((model.parameters(), params), (model.buffers(), buffers)):
            for name, array in own.items():
                np.copyto(array, stored[name])
        return model

    def _layer(self, index, spec, depth=0):
        where = f"layer {index}"
        spec = self._keys(where, spec, ("type", "config"))
        cls = _layers.LAYER_TYPES.get(spec["type"]) if isinstance(spec["type"], str) else None
        if cls is None:
            self.fail(f"{where}: unknown layer type {spec['type']!r}")
        config = spec["config"]
        if cls is _layers.Residual:
            return self._residual(where, index, config, depth)
        if not isinstance(config, dict) or "seed" in config or not all(
                _is_plain(v) for v in config.values()):
            self.fail(f"{where}: invalid config {config!r}")
        try:
            layer = cls(**config)
        except _layer_base.ParameterBudgetExceeded as exc:
            self.fail(f"{where}: {exc}")
        except (TypeError, ValueError) as exc:
            self.fail(f"{where}: invalid {spec['type']} config ({exc})")
        if layer.config() != config:
            self.fail(f"{where}: config {config!r} is not in canonical form")
        return layer

    def _residual(self, where, index, config, depth):
        if depth >= MAX_DEPTH:
            self.fail(f"{where}: Residual layers nested deeper than {MAX_DEPTH}")
        config = self._keys(f"{where} config", config, ("block", "shortcut"))
        parts = {}
        for part in ("block", "shortcut"):
            specs = config[part]
            if specs is None and part == "shortcut":
                parts[part] = None
                continue
            if not isinstance(specs, list) or not specs or len(specs) > 10_000:
                self.fail(f"{where}: Residual {part} must be a non-empty list of layers")
            parts[part] = [self._layer(f"{index}.{part}.{i}", s, depth + 1)
                           for i, s in enumerate(specs)]
        try:
            return _layers.Residual(parts["block"], parts["shortcut"])
        except (TypeError, ValueError) as exc:
            self.fail(f"{where}: invalid Residual ({exc})")

    def _optimizer_arrays(self, spec, params):
        spec = self._keys("'optimizer'", spec, ("type", "config", "state"))
        state = spec["state"]
        if not isinstance(state, dict):
            self.fail("'optimizer.state' must be a JSON object")
        arrays = {}
        for name, entry in state.items():
            where = f"optimizer state of {name!r}"
            if name not in params:
                self.fail(f"{where}: no such parameter")
            entry = self._keys(where, entry, ("arrays", "counters"))
            if not isinstance(entry["arrays"], dict):
                self.fail(f"{where}: 'arrays' must be a JSON object")
            for slot, slot_spec in entry["arrays"].items():
                if not _SLOT_NAME.match(slot):
                    self.fail(f"{where}: invalid slot name {slot!r}")
                shape, dtype = self._spec(f"{where}[{slot!r}]", slot_spec)
                if shape != params[name].shape or dtype != params[name].dtype.name:
                    self.fail(f"{where}: {slot!r} has shape {shape} and dtype {dtype}, the "
                              f"parameter {params[name].shape} and {params[name].dtype}")
                array = self._array(f"optimizer/{name}/{slot}.npy", shape, dtype)
                if not np.isfinite(array).all():
                    self.fail(f"{where}: {slot!r} holds NaN or infinite values")
                arrays[name, slot] = array
        return arrays

    def _optimizer(self, spec, arrays):
        cls = OPTIMIZERS.get(spec["type"]) if isinstance(spec["type"], str) else None
        if cls is None:
            self.fail(f"unknown optimizer type {spec['type']!r}")
        state = {}
        for name, entry in spec["state"].items():
            counters = entry["counters"]
            if not isinstance(counters, dict) or not all(
                    type(v) is int and 0 <= v < 2**62 for v in counters.values()):
                self.fail(f"optimizer state of {name!r}: counters must be non-negative ints")
            state[name] = {**counters, **{slot: arrays[name, slot] for slot in entry["arrays"]}}
        if not isinstance(spec["config"], dict) or not all(
                _is_plain(v) for v in spec["config"].values()):
            self.fail(f"invalid optimizer config {spec['config']!r}")
        optimizer = cls()
        try:
            optimizer.load_state_dict({"type": spec["type"], "config": spec["config"],
                                       "state": state})
        except (TypeError, ValueError) as exc:
            self.fail(f"invalid optimizer state ({exc})")
        return optimizer


def _is_plain(value, nested=True):
    """A JSON scalar, or a short list of scalars or (once nested, as padding
    ((top, bottom), (left, right))) of such lists: all a layer or optimiser
    config holds."""
    scalar = (bool, int, float, str, type(None))
    if isinstance(value, list):
        return len(value) <= 8 and all(
            isinstance(v, scalar) or (nested and _is_plain(v, nested=False) and isinstance(
                v, list)) for v in value)
    return isinstance(value, scalar) and (not isinstance(value, str) or len(value) <= 64)

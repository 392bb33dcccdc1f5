"""Measured plan choices: the convolution's algorithms timed once per shape and CPU, cached.

The convolution kernels can compute a shape several ways (``Plan``'s
``choices``: Winograd, filters or positions as the vector lanes with tiles of
one, half or all of the widest tile's vectors, im2col panels; the input
gradient as a convolution of gy or by col2im; the weight gradient by dot or
transposed tiles).  Built-in heuristics pick one from the shape; which is
fastest also depends on the CPU (two 512-bit FMA units per core on Intel's
server cores, one 256-bit pair on AMD's Zen 4, cache sizes).  This module,
like FFTW's wisdom or cuDNN's benchmark mode, times the candidates of a
shape on this CPU the first time the shape is used, and keeps the winner:

* in memory for the process, and
* on disk, one small JSON file per shape under
  ``<cache>/<cnnext version>/<CPU key>/<kernel build>/``, where ``<cache>``
  is ``$CNNEXT_TUNE_DIR`` or the user cache directory's ``tuning`` folder
  (``~/.cache/cnnext/tuning`` on Linux) and the CPU key names vendor, family
  and model (``cnnext._cpuinfo``): a choice timed on one CPU is never used
  on another.  The kernel build is its instruction-set level and a digest of
  the compiled module's bytes, so a rebuilt or upgraded module (whose
  kernels may rank differently) times its shapes afresh.  Files are written
  to a temporary name and linked into place (the first of two processes
  tuning one shape at once wins, and both then use its choice); a file that
  cannot be read or names an impossible choice is ignored (and, when tuning
  is on, replaced).

``CNNEXT_TUNE`` sets the mode: ``on`` (default: time a new shape on first
use), ``cached`` (use winners already on disk, never time) or ``off`` (the
built-in heuristics only: the deterministic mode, the same choice on every
machine for a given kernel build).  Shapes of fewer than ``MIN_FMAS``
multiply-adds keep the heuristics (timing them would cost more than it can
save), and so do calls with NaN or inf in their operands.

Rounding: the direct algorithms sum the same terms in the same order,
whichever the tile or window source, so their results agree to the bit;
Winograd, the input gradient as a convolution, and the two weight-gradient
kernels round differently (within the documented error bounds).  A tuned
choice can therefore change the last bits of results between machines; use
``CNNEXT_TUNE=off`` where results must be bitwise the same everywhere.
Nothing depends on the thread count: candidates are always timed on one
thread and a shape's choice is kept for every thread count.

Fusion: whether Sequential computes a Conv2D [-> ReLU] -> MaxPool2D run's
forward with the fused kernel (cnnext/_plans/fusion.py) is kept the same
way, per shape, pooling and CPU (``fusion``): the fused forward and the
unfused one (conv2d, then max_pool2d) are timed and the faster wins.  Both
compute the same sums wherever conv2d sums directly (bitwise the same
results); otherwise (Winograd) they differ by rounding, so the mode "off"
rule (always fused) is again the one that is the same everywhere.
"""

import contextlib
import functools
import hashlib
import json
import os
import platform
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from . import _cpuinfo, _dispatch, _files, _validation
from ._kernels import _openmp_helpers
from ._version import __version__

ENV_MODE = "CNNEXT_TUNE"
ENV_DIR = "CNNEXT_TUNE_DIR"
MODES = ("on", "cached", "off")
_ALIASES = {"": "on", "1": "on", "true": "on", "yes": "on", "auto": "on",
            "0": "off", "false": "off", "no": "off", "deterministic": "off"}
# Shapes below this many multiply-adds (per call, all passes alike) keep the heuristics.
MIN_FMAS = 1 << 21
# Each timing sample runs a candidate for at least this long (CPU seconds) ...
SAMPLE_SECONDS = 2e-3
# ... ROUNDS times, interleaved with the other candidates, the minimum kept
# (the least disturbed by other processes); a candidate whose first sample
# is PRUNE times the best one's is dropped, and a pass stops after two
# rounds once it has spent PASS_SECONDS.
ROUNDS = 4
PRUNE = 2.5
PASS_SECONDS = 1.0
SCHEMA = 1
# An entry file holds a few hundred bytes; anything much larger is not one.
MAX_ENTRY_BYTES = 1 << 16

PASSES = ("forward", "data", "filter")

_memo = {}
# Reentrant: timing a fusion runs conv2d, whose shape may be tuned first.
_lock = threading.RLock()


def mode() -> str:
    """mode()

    The tuning mode from ``CNNEXT_TUNE``: "on", "cached" or "off".  An
    unknown value warns (RuntimeWarning naming the variable, once per value)
    and counts as "off": a typo never makes a convolution fail, and the
    fallback is the deterministic mode.
    """
    setting = os.environ.get(ENV_MODE, "on")
    value = _ALIASES.get(setting.strip().lower(), setting.strip().lower())
    if value not in MODES:
        if setting not in _warned:
            _warned.add(setting)
            warnings.warn(f"{ENV_MODE}={setting!r} is not one of {', '.join(MODES)} (or 1/0); "
                          f"the built-in heuristics are used, as with 'off'", RuntimeWarning,
                          stacklevel=2)
        return "off"
    return value


_warned = set()


def cache_dir() -> Path:
    """cache_dir()

    The directory the choices are kept in: ``$CNNEXT_TUNE_DIR``, else the
    user cache directory's ``tuning`` folder (not created here); None when
    there is neither (no home directory): choices are then kept in memory
    only.
    """
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured)
    from .datasets._home import default_cache_dir

    try:
        return default_cache_dir() / "tuning"
    except FileNotFoundError:  # no home directory
        return None


def shape_key(args):
    """A file name for the Plan arguments ``args`` (N, C, H, W, K, R, S, stride, padding,
    dilation, itemsize)."""
    n, c, h, w, k, r, s, stride, padding, dilation, itemsize = args
    return (f"f{8 * itemsize}-n{n}c{c}h{h}w{w}-k{k}r{r}s{s}"
            f"-s{stride[0]}x{stride[1]}-p{padding[0]}x{padding[1]}-d{dilation[0]}x{dilation[1]}")


def entry_path(kernels, args, directory=None, fusion=None):
    """Where the choice of ``args`` for the kernel build ``kernels`` is kept (None: nowhere,
    see ``cache_dir``); with ``fusion`` (the pooling's key, see ``fusion``), the choice
    whether to fuse it."""
    cpu = _cpuinfo.identify()["key"]
    base = Path(directory) if directory is not None else cache_dir()
    if base is None:
        return None
    name = shape_key(args) if fusion is None else f"{shape_key(args)}-{fusion}"
    return base / __version__ / cpu / build_key(kernels) / f"{name}.json"


def build_key(kernels):
    """``<ISA level>-<digest of the compiled module's bytes>`` for the kernel build ``kernels``."""
    return f"{kernels.compiled_isa()}-{_module_digest(getattr(kernels, '__file__', None))}"


@functools.cache
def _module_digest(path):
    if path is None:
        return "unknown"
    digest = hashlib.blake2b(digest_size=6)
    try:
        with open(path, "rb") as module:
            for chunk in iter(lambda: module.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return "unknown"
    return digest.hexdigest()


def _fmas(args):
    n, c, h, w, k, r, s, stride, padding, dilation, _ = args
    ho = _validation.output_extent(h, r, stride[0], padding[0], dilation[0])
    wo = _validation.output_extent(w, s, stride[1], padding[1], dilation[1])
    return n * k * ho * wo * c * r * s


def choices(kernels, args):
    """choices(kernels, args)

    The measured choices for Plan arguments ``args`` on the kernel build
    ``kernels`` (a dict for ``Plan(..., choices=)``), or None for the
    built-in heuristics: mode "off", a shape too small to be worth it, or
    (mode "cached") nothing on disk yet.
    """
    if _forced is not None:
        return _forced_choices(kernels, args)
    request = getattr(_requests, "active", None)
    current = mode()
    if request is None:
        if current == "off" or _fmas(args) < MIN_FMAS:
            return None
        return _lookup(kernels, args, current == "on", False)[0]
    retune = request["retune"] and args not in request["seen"]
    found, source = _lookup(kernels, args, True, retune)
    request["seen"].setdefault(args, {"choices": found, "source": source})
    return None if current == "off" else found


def _lookup(kernels, args, may_tune, retune, fusion=None, runs=None):
    """(choices, where they came from: "memory", "cache", "timed"), or (None, None);
    with ``fusion``, the choice whether to fuse (timing ``runs()``)."""
    key = (kernels.compiled_isa(), args, fusion)
    with _lock:  # one tuning at a time in a process
        if not retune:
            found = _memo.get(key)
            if found is not None:
                return found, "memory"
            found = _read(kernels, args, fusion=fusion)
            if found is not None:
                _memo[key] = found
                return found, "cache"
        if not may_tune:
            return None, None
        if fusion is None:
            found = tune_shape(kernels, args, replace=retune)
        else:
            found = tune_fusion(kernels, args, fusion, runs, replace=retune)
        _memo[key] = found
        return found, "timed"


def fusion(kernels, args, pooling, runs):
    """fusion(kernels, args, pooling, runs)

    Whether Sequential computes the forward of the convolution of Plan
    arguments ``args`` and the max pooling after it (``pooling``: a file-name
    key of the pooling's window, stride and ReLU) with the fused kernel:
    True or False as timed on this CPU and kept like a shape's choices
    (``runs()`` gives the fused and the unfused forward as two callables), or
    as ``forced({"fusion": ...})`` says; None for the built-in rule: mode
    "off", a shape too small to be worth it, or (mode "cached") nothing on
    disk yet.
    """
    if _forced is not None:
        wanted, where = _forced
        if "fusion" in wanted and (where is None or where(args)):
            return wanted["fusion"]
        return None
    request = getattr(_requests, "active", None)
    current = mode()
    if request is None:
        if current == "off" or _fmas(args) < MIN_FMAS:
            return None
        return _lookup(kernels, args, current == "on", False, pooling, runs)[0]
    seen = (args, pooling)
    retune = request["retune"] and seen not in request["fusions"]
    request["fusions"].add(seen)
    found = _lookup(kernels, args, True, retune, pooling, runs)[0]
    return None if current == "off" else found


# While a forced() block runs: (choices, which Plan arguments they apply to).
_forced = None


@contextlib.contextmanager
def forced(wanted, where=None):
    """forced(wanted, where=None)

    A context manager: within it every convolution planned takes the Plan
    choices ``wanted`` (a dict, keys as in ``Plan``'s ``choices``; those left
    out follow the heuristics), whatever the mode and the shape's size, so
    that tests reach an algorithm the heuristics keep for larger shapes.
    The key "fusion" (True or False) is whether Sequential fuses a Conv2D
    [-> ReLU] -> MaxPool2D run's forward (see ``fusion``).
    ``where(args)`` (default: every shape) says which Plan arguments (N, C,
    H, W, K, R, S, stride, padding, dilation, itemsize) they apply to;
    shapes they cannot compute keep the heuristics.  Cached plans are
    dropped on entry and exit.  It applies to the whole process: one thread
    at a time.
    """
    global _forced
    from ._functional import conv

    if not isinstance(wanted, dict):
        raise TypeError(f"forced: wanted must be a dict of Plan choices, got {wanted!r}")
    if not isinstance(wanted.get("fusion", False), bool):
        raise TypeError(f"forced: wanted['fusion'] must be True or False, got "
                        f"{wanted['fusion']!r}")
    previous, _forced = _forced, (dict(wanted), where)
    conv.forget_plans()
    try:
        yield
    finally:
        _forced = previous
        conv.forget_plans()


def _forced_choices(kernels, args):
    wanted, where = _forced
    if where is not None and not where(args):
        return None
    wanted = {key: value for key, value in wanted.items() if key != "fusion"}
    try:
        return kernels.Plan(*args, True, wanted).choices
    except ValueError:  # not a choice of this shape
        return None


# tune() in progress in this thread: {"retune": bool, "seen": {args: result}}.
_requests = threading.local()


def tune(model: Any, input_shape: Sequence[int], dtype: DTypeLike = None,
         retune: bool = False) -> list[dict[str, Any]]:
    """tune(model, input_shape, dtype=None, retune=False)

    Measure and keep the fastest convolution algorithms for every
    convolution ``model`` runs on a batch of ``input_shape``, forward and
    backward, on this CPU: what the first call of each shape does anyway
    when ``CNNEXT_TUNE`` is "on", done ahead of time (whatever the mode, and
    for shapes of any size).  Whether a Sequential fuses its Conv2D [-> ReLU]
    -> MaxPool2D runs is measured alike (not listed).

    Parameters
    ----------
    model : Sequential or a layer
        Anything with ``forward(x)`` and ``backward(gy)``; a copy of it is
        run (its parameters and state are not changed).
    input_shape : tuple of int
        (N, C, H, W): the batch size matters, each batch size is its own shape.
    dtype : {"float32", "float64"}, optional
        Default: the model's ``dtype`` (float32 when it has none).
    retune : bool
        Time again shapes already in the cache, replacing their entries.

    Returns
    -------
    list of dict
        One per convolution shape: ``"x"`` (N, C, H, W), ``"w"`` (K, C, R, S),
        ``"stride"``, ``"padding"``, ``"dilation"``, ``"dtype"``, ``"choices"``
        and ``"source"`` ("timed", "cache" or "memory").

    Examples
    --------
    >>> import cnnext
    >>> model = cnnext.models.lenet5(seed=0)
    >>> found = cnnext.tune(model, (8, 1, 28, 28))
    >>> [(f["x"], f["w"]) for f in found]
    [((8, 1, 28, 28), (6, 1, 5, 5)), ((8, 6, 14, 14), (16, 6, 5, 5))]
    >>> sorted(found[0]["choices"])
    ['data', 'data_forward', 'data_vectors', 'filter', 'forward', 'forward_vectors']
    """
    import copy

    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 4
            or not all(isinstance(d, (int, np.integer)) and d > 0 for d in input_shape)):
        raise ValueError(f"tune: input_shape must be 4 positive ints (N, C, H, W), "
                         f"got {input_shape!r}")
    if dtype is None:
        dtype = getattr(model, "dtype", None) or np.float32
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"tune: dtype must be float32 or float64, got {dtype}")
    clone = copy.deepcopy(model)
    x = np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(dtype)
    request = {"retune": bool(retune), "seen": {}, "fusions": set()}
    _requests.active = request
    from ._functional import conv

    try:
        conv.forget_plans()
        y = clone.forward(x)
        clone.backward(np.ones_like(y))
    finally:
        _requests.active = None
        conv.forget_plans()
    results = []
    for args, found in request["seen"].items():
        n, c, h, w, k, r, s, stride, padding, dilation, itemsize = args
        results.append({"x": (n, c, h, w), "w": (k, c, r, s), "stride": stride,
                        "padding": padding, "dilation": dilation,
                        "dtype": "float32" if itemsize == 4 else "float64", **found})
    return results


def _read(kernels, args, directory=None, fusion=None):
    """The choices kept on disk for ``args`` (with ``fusion``: whether to fuse, a bool),
    or None when missing or unusable."""
    path = entry_path(kernels, args, directory, fusion)
    if path is None:
        return None
    try:
        # A regular file only, of a bounded size (a FIFO there would block, a
        # link to /dev/zero never end): anything else is ignored, and replaced
        # when tuning is on.
        with _files.open_regular(path, ValueError) as file:
            entry = json.loads(_files.read_capped(file, MAX_ENTRY_BYTES, str(path), ValueError))
        found = entry["choices"]
        if entry.get("schema") != SCHEMA:
            return None
        if fusion is not None:
            return found["fused"] if isinstance(found, dict) and isinstance(
                found.get("fused"), bool) else None
        if not isinstance(found, dict):
            return None
        plan = kernels.Plan(*args, True, found)  # ValueError/TypeError: not a choice here
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    return plan.choices


def _write(path, entry, usable, replace=False):
    """Write ``entry`` at ``path`` unless another process wrote a ``usable(path)`` one
    first (or ``replace``); True when this entry is the one there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(entry, file, indent=1, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
            temporary = None
            return True
        try:
            # Never replaces: of two processes tuning one shape, the first wins.
            os.link(temporary, path)
        except FileExistsError:
            if usable(path):
                return False
            os.replace(temporary, path)  # a corrupt file is replaced
            temporary = None
        except OSError:  # no hard links here (some Windows or network file systems)
            if os.path.exists(path) and usable(path):
                return False
            os.replace(temporary, path)
            temporary = None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return True


# ------------------------------------------------------------------ timing

def candidates(kernels, args, pass_name, fixed):
    """The distinct valid choice dicts of one pass, the others as in ``fixed``."""
    if pass_name == "forward":
        options = [{"forward": name, "forward_vectors": vectors}
                   for name in ("winograd", "positions", "panel")
                   for vectors in (0,)]
        options += [{"forward": "filters", "forward_vectors": v} for v in (1, 2, 4, 8)]
    elif pass_name == "data":
        options = [{"data": name, "data_forward": "auto", "data_vectors": 0}
                   for name in ("col2im", "phases")]
        options += [{"data": "conv", "data_forward": name, "data_vectors": 0}
                    for name in ("winograd", "positions", "panel")]
        options += [{"data": "conv", "data_forward": "filters", "data_vectors": v}
                    for v in (1, 2, 4, 8)]
    else:
        options = [{"filter": "dot"}, {"filter": "transposed"}]
    found, seen = [], set()
    for option in options:
        wanted = {**fixed, **option}
        try:
            plan = kernels.Plan(*args, True, wanted)
        except ValueError:
            continue
        chosen = plan.choices
        signature = json.dumps({key: chosen[key] for key in _pass_keys(pass_name)},
                               sort_keys=True)
        if signature not in seen:
            seen.add(signature)
            found.append(chosen)
    return found


def _pass_keys(pass_name):
    return {"forward": ("forward", "forward_vectors"),
            "data": ("data", "data_forward", "data_vectors"),
            "filter": ("filter",)}[pass_name]


class _Problem:
    """Random finite operands of one shape, and the calls that time a pass of a plan."""

    def __init__(self, kernels, args):
        n, c, h, w, k, r, s, *_, itemsize = args
        self.dtype = np.float32 if itemsize == 4 else np.float64
        self.kernels, self.args = kernels, args
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((n, c, h, w)).astype(self.dtype)
        self.w = rng.standard_normal((k, c, r, s)).astype(self.dtype)
        self.b = rng.standard_normal(k).astype(self.dtype)
        shape = kernels.Plan(*args).output_shape
        self.gy = rng.standard_normal(shape).astype(self.dtype)
        self.y = np.empty(shape, self.dtype)
        self.gx = np.empty_like(self.x)
        self.gw = np.empty_like(self.w)
        self.gb = np.empty_like(self.b)
        self.entries = dict(zip(("forward", "data", "filter"), _dispatch.specialisations(
            kernels, ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter")
        )[np.dtype(self.dtype)], strict=True))

    def call(self, plan, pass_name):
        entry = self.entries[pass_name]
        if pass_name == "forward":
            work = np.empty(max(plan.forward_workspace, 1), self.dtype)
            return lambda: entry(plan, self.x, self.w, self.b, self.y, work)
        if pass_name == "data":
            work = np.empty(max(plan.backward_data_workspace, 1), self.dtype)
            return lambda: entry(plan, self.gy, self.w, self.gx, work)
        work = np.empty(max(plan.backward_filter_workspace, 1), self.dtype)
        return lambda: entry(plan, self.gy, self.x, self.gw, self.gb, work)


def _sample(run):
    """CPU seconds of one call of ``run``, from a loop lasting at least SAMPLE_SECONDS."""
    loops, spent = 0, 0.0
    start = time.thread_time()
    while spent < SAMPLE_SECONDS:
        run()
        loops += 1
        spent = time.thread_time() - start
    return spent / loops


def time_candidates(runs):
    """Minimum CPU seconds per call of each callable, interleaved rounds; slow ones pruned."""
    start = time.thread_time()
    for run in runs:
        run()  # warm up: pages, caches
    best = [_sample(run) for run in runs]
    alive = [i for i, seconds in enumerate(best) if seconds <= PRUNE * min(best)]
    for round_ in range(1, ROUNDS):
        if round_ >= 2 and time.thread_time() - start > PASS_SECONDS:
            break
        for i in alive:
            best[i] = min(best[i], _sample(runs[i]))
    return best


@contextlib.contextmanager
def _one_thread():
    previous = _openmp_helpers.get_num_threads()
    _openmp_helpers.set_num_threads(1)
    try:
        yield
    finally:
        _openmp_helpers.set_num_threads(previous)


def tune_shape(kernels, args, directory=None, replace=False):
    """tune_shape(kernels, args, directory=None, replace=False)

    Time every candidate of each pass for Plan arguments ``args`` on one
    thread (forward, then the input gradient, then the weight gradient,
    each with the earlier passes' winners), keep the fastest on disk (unless
    another process kept one first, which is then used; ``replace``: replace
    it) and return its choices.
    """
    problem = _Problem(kernels, args)
    chosen, timings = {}, {}
    with _one_thread():
        for pass_name in PASSES:
            options = candidates(kernels, args, pass_name, chosen)
            plans = [kernels.Plan(*args, True, option) for option in options]
            seconds = time_candidates([problem.call(plan, pass_name) for plan in plans])
            winner = min(range(len(options)), key=seconds.__getitem__)
            chosen = options[winner]
            timings[pass_name] = [
                {"choices": {key: option[key] for key in _pass_keys(pass_name)},
                 "seconds": seconds[i]} for i, option in enumerate(options)]
    return _keep(kernels, args, chosen, timings, directory, replace)


def tune_fusion(kernels, args, pooling, runs, directory=None, replace=False):
    """tune_fusion(kernels, args, pooling, runs, directory=None, replace=False)

    Time the fused and the unfused forward (``runs()``) on one thread, keep
    which is faster on disk as ``tune_shape`` keeps a shape's choices, and
    return True when it is the fused one.
    """
    fused, unfused = runs()
    with _one_thread():
        seconds = time_candidates([fused, unfused])
    timings = {"fused": seconds[0], "unfused": seconds[1]}
    return _keep(kernels, args, {"fused": seconds[0] <= seconds[1]}, timings, directory,
                 replace, pooling)["fused"]


def _keep(kernels, args, chosen, timings, directory, replace, fusion=None):
    """Write the choices ``chosen`` of ``args`` with their ``timings``, unless another
    process kept some first; return the choices kept."""
    entry = {"schema": SCHEMA, "choices": chosen, "timings": timings,
             "cpu": _cpuinfo.identify()["name"], "kernels": build_key(kernels),
             "cnnext": __version__, "python": platform.python_version(),
             "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "fmas": _fmas(args)}
    path = entry_path(kernels, args, directory, fusion)
    if path is None:
        return chosen  # no cache directory: tuned for this process only
    try:
        if _write(path, entry, lambda _: _read(kernels, args, directory, fusion) is not None,
                  replace):
            return chosen
    except OSError:
        return chosen  # a read-only cache: tuned for this process only
    kept = _read(kernels, args, directory, fusion)
    if kept is None:
        return chosen
    return kept if fusion is None else {"fused": kept}


def forget() -> None:
    """forget()

    Drop the choices this process holds in memory (the disk cache stays);
    the next plan of each shape looks again.
    """
    with _lock:
        _memo.clear()

"""Convolution fused with ReLU and max pooling: argument checks, outputs, then the kernels.

``conv2d_max_pool2d`` computes ``max_pool2d(relu(conv2d(x, w, b)))`` (the
ReLU optional) without storing the convolution's output: the compiled
kernels (``cnnext/_kernels/_conv_fused.pxi``, in every build of the
``_conv`` family) pool register tiles of the convolution and store only the
pooled values and the argmax indices.  ``conv2d_max_pool2d_backward`` takes
those indices back: gy is scattered to them block by block in cache and the
convolution's own gradient kernels run on each block.

Both accept what ``conv2d`` and ``max_pool2d`` accept (any memory layout,
float32 or float64, int or pair geometry) and check everything the kernels
rely on first.  Each shape gets a cached ``FusedPlan`` (and, for the
backward, the convolution plans of its blocks of images).

Geometries that ``conv2d`` computes tap by tap (a padded copy that would be
mostly padding, see conv_taps) have no fused kernel and take the unfused
calls.  Sequential (``sequential_forward``, cnnext/_plans/fusion.py) takes
the fused forward only where it is the faster on this CPU for the shape
(``fuses``: timed and kept by cnnext._tuning); its backward is always the
fused one, which needs only the pooled output and the indices.

Results equal the unfused ``conv2d -> relu -> max_pool2d`` (and its
backward) wherever ``conv2d`` sums directly: the same sums in the same
order, so values, indices and the input gradient agree bitwise, and the
weight and bias gradients too when the layer has few filters (otherwise
they are summed per block of images and agree to rounding).  Where
``conv2d`` chooses Winograd's algorithm (many channels, 3x3, stride 1) its
values differ from the direct sums by rounding, and an index can differ
where rounding moves a tie.
"""


import numpy as np

from .. import _dispatch, _tuning, _validation
from .._typing import FloatArray, IntArray, IntPair
from . import conv as _conv
from . import conv_taps
from .activation import relu as _relu
from .pooling import int64_within, max_pool2d, max_pool2d_backward

_kernels = _dispatch.load("_conv")


def _specialised(kernels):
    """dtype -> (forward, backward) of one kernel module."""
    return _dispatch.specialisations(
        kernels, ("conv2d_max_pool2d_forward", "conv2d_max_pool2d_backward"))


_by_dtype = _specialised(_kernels)


def _narrow_build():
    """The AVX2 build of the kernels when the AVX-512 one runs (else None).

    The sparse weight gradient (the backward without the input gradient)
    takes filters as lanes: a layer of at most 8 float32 (4 float64)
    filters fills the AVX2 tile but leaves half of AVX-512's idle, and runs
    faster in the AVX2 build (on AMD Zen 4, 19-26% less time at 6 and 8
    filters).  Each filter's sum has the same terms in the same order in
    both builds, so the sparse results are bitwise equal; where that path
    does not apply (x not finite) the AVX2 build's other paths give the
    same sums to rounding."""
    if _dispatch.loaded_isas().get("_conv") != "x86-64-v4":
        return None
    return _dispatch.built_variants("_conv").get("x86-64-v3")


_narrow = _narrow_build()
_narrow_by_dtype = None if _narrow is None else _specialised(_narrow)
_NARROW_VECTOR_BYTES = 32

_PLAN_CACHE_SIZE = 128
_plans = {}
# (Their backward passes take conv plans, which conv.forget_plans drops.)
_conv.DEPENDENT_CACHES.append(_plans)
_INT64 = np.dtype(np.int64)
# The kernels track each window's winner as its offset in the convolution
# plane, a*Wo + t, an integer in the vector lanes of the data (int32 bits in
# float32 lanes); windows are kept within max_pool2d's span limit.
_MAX_WINDOW_OFFSET = 2**24

_X_LAYOUT = "(N, C, H, W)"
_Y_LAYOUT = "(N, K, Hq, Wq)"


class _Entry:
    """The plans of one geometry: the fused kernels' (None for a geometry
    conv2d computes tap by tap), with the convolution plans of its backward
    pass once asked for."""

    __slots__ = ("args", "conv_shape", "fused", "fuses", "narrow", "output_shape", "pool",
                 "pool_stride")

    def __init__(self, args, pool, pool_stride, output_shape, conv_shape, taps):
        self.args, self.pool, self.pool_stride = args, pool, pool_stride
        self.output_shape, self.conv_shape = output_shape, conv_shape
        self.fuses = [None, None]  # fuses(self, relu), once asked
        self.narrow = None  # weights_backward's, once asked (False: none)
        # Geometries conv2d computes tap by tap (mostly padding) have no fused
        # kernel: they take the unfused calls.
        self.fused = None if taps else _kernels.FusedPlan(*args[:-1], pool, pool_stride,
                                                          args[-1])

    def backward(self):
        """The fused plan, its backward pass set up (the convolution plans of its
        blocks of images, and those without reformulated passes)."""
        if not self.fused.backward_ready:
            self._set_backward(self.fused, _kernels)
        return self.fused

    def weights_backward(self):
        """(plan, kernels by dtype) of the backward without the input
        gradient: the narrow build's (``_narrow_build``) where its sparse
        weight gradient takes the layer, else the plan of ``backward``."""
        if self.narrow is None:
            self.narrow = False
            k, itemsize = self.args[4], self.args[-1]
            if (_narrow is not None and k <= _NARROW_VECTOR_BYTES // itemsize
                    and self.fused.weight_gradient == "sparse"):
                narrow = _narrow.FusedPlan(*self.args[:-1], self.pool, self.pool_stride,
                                           itemsize)
                if narrow.weight_gradient == "sparse":
                    self._set_backward(narrow, _narrow)
                    self.narrow = narrow
        if self.narrow:
            return self.narrow, _narrow_by_dtype
        return self.backward(), _by_dtype

    def _set_backward(self, fused, kernels):
        """Set up ``fused`` (a plan of the build ``kernels``) for the backward."""
        n, c, h, wd, k, r, s, stride, padding, dilation, itemsize = self.args
        rest = self.args[1:]
        # The blocks' passes take the algorithms conv2d_backward takes on
        # the whole batch (measured ones included, cnnext._tuning).
        whole = _conv._shape_plan("conv2d", (n, c, h, wd), (k, c, r, s),
                                  np.dtype(f"f{itemsize}"), stride, padding, dilation)
        if kernels is not _kernels:
            whole = kernels.Plan(*self.args, True, whole.choices)
        block = fused.block_images(whole)
        tail = n % block
        plans = [kernels.Plan(block, *rest, True, whole.choices),
                 kernels.Plan(tail, *rest, True, whole.choices) if tail else None]
        reformulated = any(plan is not None and (plan.data_kernel != "col2im")
                           for plan in plans)
        safe = [None if plan is None or not reformulated else
                kernels.Plan(images, *rest, False)
                for plan, images in zip(plans, (block, tail), strict=True)]
        fused.set_backward(block, *plans, *safe)


def fuses(entry, relu):
    """Whether Sequential computes the forward of ``entry``'s geometry (with
    ``relu``) with the fused kernel: where cnnext._tuning times it (on this
    CPU, for this shape), the faster of the fused and the unfused forward;
    elsewhere the fused one: the deterministic mode needs one choice on
    every machine, and the fused kernel writes a quarter of the memory
    (with 2x2 pooling) and wins on most CPUs measured; shapes too small to
    time cost microseconds either way.  Geometries without a fused kernel:
    never."""
    known = entry.fuses[relu]
    if known is None:
        if entry.fused is None:
            known = False
        else:
            (kh, kw), (qh, qw) = entry.pool, entry.pool_stride
            choice = _tuning.fusion(_kernels, entry.args,
                                    f"max{kh}x{kw}s{qh}x{qw}{'-relu' if relu else ''}",
                                    lambda: _forward_runs(entry, relu))
            known = True if choice is None else choice
        entry.fuses[relu] = known
    return known


def _forward_runs(entry, relu):
    """The fused and the unfused forward of ``entry``'s geometry on random
    operands, as two callables (what ``fuses`` times)."""
    n, c, h, wd, k, r, s, stride, padding, dilation, itemsize = entry.args
    dtype = np.dtype(f"f{itemsize}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = rng.standard_normal((k, c, r, s)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y, idx = np.empty(entry.output_shape, dtype), np.empty(entry.output_shape, _INT64)
    conv = np.empty(entry.conv_shape, dtype)
    work = np.empty(max(entry.fused.forward_workspace, 1), dtype)
    forward = _by_dtype[dtype][0]

    def fused():
        forward(entry.fused, x, w, b, relu, y, idx, work)

    def unfused():
        _unfused_forward(x, w, b, stride, padding, dilation, relu, entry, (y, idx), conv)

    return fused, unfused


def _unfused_forward(x, w, b, stride, padding, dilation, relu, entry, out, scratch):
    """conv2d (into ``scratch`` when given), relu in place, max_pool2d into ``out``."""
    conv = _conv.conv2d(x, w, b, stride, padding, dilation, out=scratch)
    max_pool2d(_relu(conv, inplace=True) if relu else conv, entry.pool, entry.pool_stride,
               return_indices=True, out=out)


def _pooled_size(func, axis, size, window, stride):
    if window > size:
        raise ValueError(f"{func}: the pooling window spans {window} along {axis} but the "
                         f"convolution's output has only {size}")
    return _validation.output_extent(size, window, stride, 0)


def _entry(func, x, w, stride, padding, dilation, pool_size, pool_stride):
    """The validated geometry's cached plans."""
    plain = all(_conv._plain(v) for v in (stride, padding, dilation, pool_size)) and (
        pool_stride is None or _conv._plain(pool_stride))
    if plain:
        key = (x.shape, w.shape, x.dtype.char, stride, padding, dilation, pool_size,
               pool_stride)
        entry = _plans.get(key)
        if entry is not None:
            return entry
    taps = conv_taps.plan(func, x, w, stride, padding, dilation) is not None
    args = _conv._plan_args(func, x.shape, w.shape, x.dtype, stride, padding, dilation)
    pool = _validation.pair(func, "pool_size", pool_size, 1)
    pool_stride = pool if pool_stride is None else _validation.pair(func, "pool_stride",
                                                                pool_stride, 1)
    n, _, h, wd, k, r, s, stride, padding, dilation, _ = args
    ho = _validation.output_extent(h, r, stride[0], padding[0], dilation[0])
    wo = _validation.output_extent(wd, s, stride[1], padding[1], dilation[1])
    hq = _pooled_size(func, "height", ho, pool[0], pool_stride[0])
    wq = _pooled_size(func, "width", wo, pool[1], pool_stride[1])
    if not taps and (pool[0] - 1) * wo + pool[1] > _MAX_WINDOW_OFFSET:
        raise ValueError(f"{func}: pool_size {pool} on a convolution output {wo} wide puts "
                         f"window elements more than 2**24 apart; use conv2d and max_pool2d")
    entry = _Entry(args, pool, pool_stride, (n, k, hq, wq), (n, k, ho, wo), taps)
    if plain:
        if len(_plans) >= _PLAN_CACHE_SIZE:
            _plans.clear()
        _plans[key] = entry
    return entry


def _bias(func, b, x, w):
    if b is None:
        return None
    b = _validation.float_array(func, "b", b, 1, "(K,)")
    if b.dtype != x.dtype:
        _validation.same_dtype(func, "x", x, b=b)
    if b.shape[0] != w.shape[0]:
        raise ValueError(f"{func}: b must have shape ({w.shape[0]},) (one value per filter "
                         f"of w, shape {w.shape}), got shape {b.shape}")
    return _validation.contiguous(b)


def conv2d_max_pool2d(x: FloatArray, w: FloatArray, b: FloatArray | None = None,
                      stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, *,
                      relu: bool = False, pool_size: IntPair = 2,
                      pool_stride: IntPair | None = None,
                      out: tuple[FloatArray | None, IntArray | None] | None = None,
                      ) -> tuple[FloatArray, IntArray]:
    """conv2d_max_pool2d(x, w, b=None, stride=1, padding=0, dilation=1, *, relu=False,
    pool_size=2, pool_stride=None, out=None)

    ``max_pool2d(relu(conv2d(x, w, b, stride, padding, dilation)), pool_size,
    pool_stride, return_indices=True)`` (without ``relu`` unless asked) in
    one pass that never stores the convolution's output.

    Parameters
    ----------
    x : ndarray of float32 or float64, shape (N, C, H, W)
        Input images.  Any memory layout; never modified.
    w : ndarray, shape (K, C, R, S), same dtype as x
        Filters.
    b : ndarray, shape (K,), same dtype as x, optional
        Bias added to each output channel.
    stride, padding, dilation : int or (int, int)
        The convolution's, as in ``conv2d``.
    relu : bool, default False
        Apply max(., 0) to the convolution's output before pooling.
    pool_size : int or (int, int), default 2
        The pooling window (no padding).
    pool_stride : int or (int, int), optional
        Step between windows; defaults to ``pool_size``.  Smaller steps
        (overlapping windows) are allowed.
    out : tuple (y, idx), optional
        C-contiguous buffers of the results' shapes and dtypes (None entries
        allocated), not overlapping the inputs or each other.

    Returns
    -------
    y : ndarray, shape (N, K, Hq, Wq), dtype of x
        The pooled maxima; ``Hq = (Ho - pool_h) // stride_h + 1`` of the
        convolution's output height ``Ho``, likewise ``Wq``.
    idx : ndarray of int64, shape (N, K, Hq, Wq)
        Where each maximum lies, as ``max_pool2d`` gives it: the flat index
        into the (Ho, Wo) plane of the convolution's output, the first
        maximum of a window in row-major order, a window's last NaN when it
        holds any.
    """
    return _forward("conv2d_max_pool2d", x, w, b, stride, padding, dilation, relu, pool_size,
                    pool_stride, out)


def sequential_forward(x, w, b, stride, padding, dilation, *, relu, pool_size, pool_stride,
                       out=None, scratch=None):
    """As ``conv2d_max_pool2d``, by the fused kernel only where Sequential
    takes it (``fuses``); otherwise by conv2d, relu and max_pool2d, the
    convolution's output in ``scratch(shape)`` (a buffer, or None: allocated)."""
    return _forward("Sequential", x, w, b, stride, padding, dilation, relu, pool_size,
                    pool_stride, out, True, scratch)


def _forward(func, x, w, b, stride, padding, dilation, relu, pool_size, pool_stride, out,
             measured=False, scratch=None):
    x, w = _conv._arrays(func, x, w)
    b = _bias(func, b, x, w)
    relu = _validation.boolean(func, "relu", relu)
    entry = _entry(func, x, w, stride, padding, dilation, pool_size, pool_stride)
    shape = entry.output_shape
    inputs = (x, w, b)
    if out is None:
        y, idx = np.empty(shape, x.dtype), np.empty(shape, _INT64)
    else:
        y_out, idx_out = _validation.out_tuple(func, out, 2)
        y = _validation.out_array(func, "out[0] (y)", y_out, shape, x.dtype, inputs)
        idx = _validation.out_array(func, "out[1] (idx)", idx_out, shape, _INT64,
                                inputs + ((y,) if y_out is not None else ()))
    if x.shape[0] and (entry.fused is None or (measured and not fuses(entry, relu))):
        _unfused_forward(x, w, b, stride, padding, dilation, relu, entry, (y, idx),
                         None if scratch is None else scratch(entry.conv_shape))
    elif x.shape[0]:
        forward = _by_dtype[x.dtype][0]
        forward(entry.fused, _validation.contiguous(x), _validation.contiguous(w), b, relu, y, idx,
                _conv._workspace(entry.fused.forward_workspace, x.dtype))
    return y, idx


def _indices(func, idx, gy):
    if not isinstance(idx, np.ndarray) or idx.dtype.kind not in "iu":
        kind = idx.dtype if isinstance(idx, np.ndarray) else type(idx).__name__
        raise TypeError(f"{func}: idx must be an integer ndarray (int64 indices from "
                        f"conv2d_max_pool2d), got {kind}")
    if idx.shape != gy.shape:
        raise ValueError(f"{func}: idx has shape {idx.shape} but gy has {gy.shape}; they must "
                         f"match")
    return idx


def conv2d_max_pool2d_backward(gy: FloatArray, idx: IntArray, x: FloatArray, w: FloatArray,
                               stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                               *, y: FloatArray | None = None, relu: bool = False,
                               pool_size: IntPair = 2, pool_stride: IntPair | None = None,
                               need_input_grad: bool = True,
                               out: tuple[FloatArray | None, FloatArray, FloatArray] | None = None,
                               ) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """conv2d_max_pool2d_backward(gy, idx, x, w, stride=1, padding=0, dilation=1, *, y=None,
    relu=False, pool_size=2, pool_stride=None, need_input_grad=True, out=None)

    Gradients of ``sum(gy * conv2d_max_pool2d(x, w, b, ...)[0])`` from the
    forward's indices: each pooled gradient goes to the convolution output
    its window picked (overlapping windows add up), through the ReLU when
    ``relu``, and on to x, w and b.

    Parameters
    ----------
    gy : ndarray of float32 or float64, shape (N, K, Hq, Wq)
        Gradient of the loss with respect to the pooled output.
    idx : ndarray of int, shape (N, K, Hq, Wq)
        The forward's indices, flat in each (Ho, Wo) convolution plane;
        every one must lie in [0, Ho*Wo).
    x : ndarray, shape (N, C, H, W), same dtype as gy
        The input the forward saw.
    w : ndarray, shape (K, C, R, S), same dtype as gy
        The filters the forward used.
    stride, padding, dilation, relu, pool_size, pool_stride
        As given to the forward.
    y : ndarray, shape (N, K, Hq, Wq), same dtype as gy
        The forward's pooled output; required with ``relu``: a gradient
        passes where y > 0 or y is NaN (where the ReLU passed its input).
    need_input_grad : bool
        False skips the input gradient (for a first layer) and returns None
        in its place; the weight and bias gradients are then summed over
        the argmax windows alone (a quarter of the work for 2x2 pooling),
        the same terms in another order: they agree with those of
        ``need_input_grad=True`` to rounding, not bitwise.
    out : tuple (gx, gw, gb), optional
        Buffers for the results, as in ``conv2d_backward``.

    Returns
    -------
    gx : ndarray, shape (N, C, H, W), or None
    gw : ndarray, shape (K, C, R, S)
    gb : ndarray, shape (K,)
        The bias gradient: the passed gradients summed per filter.
    """
    func = "conv2d_max_pool2d_backward"
    gy = _validation.float_array(func, "gy", gy, 4, _Y_LAYOUT)
    x, w = _conv._arrays(func, x, w)
    if gy.dtype != x.dtype:
        _validation.same_dtype(func, "x", x, gy=gy)
    relu = _validation.boolean(func, "relu", relu)
    need_input_grad = _validation.boolean(func, "need_input_grad", need_input_grad)
    entry = _entry(func, x, w, stride, padding, dilation, pool_size, pool_stride)
    shape = entry.output_shape
    if gy.shape != shape:
        raise ValueError(f"{func}: gy must have the shape of the pooled output {shape} "
                         f"{_Y_LAYOUT}, got shape {gy.shape}")
    idx = _indices(func, idx, gy)
    if y is not None:
        y = _validation.float_array(func, "y", y, 4, _Y_LAYOUT)
        if y.dtype != x.dtype:
            _validation.same_dtype(func, "x", x, y=y)
        if y.shape != shape:
            raise ValueError(f"{func}: y must be the forward's pooled output, of shape {shape} "
                             f"{_Y_LAYOUT}, got shape {y.shape}")
    elif relu:
        raise ValueError(f"{func}: relu=True needs y, the forward's pooled output (its sign "
                         f"is the ReLU's gradient)")
    plane = entry.conv_shape[2] * entry.conv_shape[3]
    if idx.dtype == _INT64:  # checked by the kernel, before it writes anything
        idx, bad = _validation.contiguous(idx), -1
    else:
        idx, bad = int64_within(idx, plane)
    if bad >= 0:
        raise _outside(func, idx, bad, plane)
    gx, gw, gb = _validation.gradient_out_buffers(func, out, need_input_grad, gy, x, w)
    if out is not None:
        _separate(func, (gx, gw, gb), out, (idx, y))
    if x.shape[0] == 0:
        gw.fill(0)
        gb.fill(0)
        return gx, gw, gb
    if entry.fused is None:
        if relu:
            gy = np.where(y <= 0, np.zeros((), gy.dtype), gy)
        dense = max_pool2d_backward(gy, idx, entry.conv_shape)
        return _conv.conv2d_backward(dense, x, w, stride, padding, dilation,
                                     need_input_grad, out=(gx, gw, gb))
    fused, kernels = (entry.backward(), _by_dtype) if need_input_grad else entry.weights_backward()
    work = _conv._workspace(fused.backward_workspace(need_input_grad), x.dtype)
    backward = kernels[x.dtype][1]
    contiguous = _validation.contiguous
    bad = backward(fused, contiguous(gy), idx, None if not relu else contiguous(y),
                   contiguous(x), contiguous(w), gx, gw, gb, work)
    if bad >= 0:
        raise _outside(func, idx, bad, plane)
    return gx, gw, gb


def _separate(func, buffers, given, inputs):
    """The given ``out=`` buffers overlap none of the other inputs (gy, x and w
    are checked with the buffers' shapes)."""
    for i, (buffer, requested) in enumerate(zip(buffers, given, strict=True)):
        if requested is None:
            continue
        for array in inputs:
            if array is not None and _validation.overlap(buffer, array):
                raise ValueError(f"{func}: out[{i}] overlaps an input array")


def _outside(func, idx, bad, plane):
    where = np.unravel_index(bad, idx.shape)
    return ValueError(f"{func}: idx{tuple(int(i) for i in where)} = {idx[where]} lies outside "
                      f"its convolution plane [0, {plane})")

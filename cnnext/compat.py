"""The seed notebook's own API, same numbers, on the compiled kernels.

``Conv``, ``MaxPool`` and ``Softmax`` keep the notebook's constructor
arguments, attribute names (``filters``, ``weights``, ``biases``,
``last_input``, ``last_input_shape``, ``last_totals``), shapes (one 2-D image
in, (h, w, num_filters) out, all float64), initial weights drawn with
``np.random.randn`` in the same order (so ``np.random.seed(s)`` gives the
same network), and the semantics of ``forward`` and ``backprop``, quirks
included:

* ``Conv.backprop`` updates the filters and returns None (it is meant to be
  the first layer);
* ``MaxPool(n)`` outputs (h // n, w // n) windows, but every window is 2x2
  with stride 2, whatever n is, and in ``backprop`` *every* element equal to
  its window's maximum receives the window's gradient (ties all get it,
  assigned, not split); elements outside every window get 0;
* ``Softmax.backprop`` uses only the first non-zero entry of the gradient
  it is given (the notebook passes -1 / p[label] at the label), updates the
  weights and biases in place, and returns None when the gradient is all
  zeros;
* no max-shift in the softmax: totals above ~709 overflow exactly as in the
  notebook.

Everything runs on ``cnnext.functional``: convolution and pooling in NCHW,
one image as a batch of one (the (h, w, c) arrays the notebook passes
around are transposed views of NCHW buffers, except the pooled output, a
copy); the softmax layer's dot products and its per-image weight update on
the dense-layer kernels, with its weights stored column-major (``weights.T``
is the C-contiguous (nodes, input_len) matrix those kernels take).  The
parameters stay float64 arrays updated in place, as in the notebook; an
array of another dtype or memory layout assigned to one of them is replaced
by a float64 copy in that layout at the next ``forward`` or ``backprop``.

``NotebookCNN`` bundles the notebook's network and training cell
(``forward(image, label)``, ``train_step(image, label, lr)``).
"""

import math

import numpy as np

from . import _validation, optim
from . import functional as F
from ._functional import conv as _conv
from ._functional import dense as _dense
from ._functional import pooling as _pooling

__all__ = ["Conv", "MaxPool", "NotebookCNN", "Softmax"]

_FLOAT64 = np.dtype(np.float64)
_UINT8 = np.dtype(np.uint8)
# image / 255 - 0.5 for every uint8 value: the same float64 operations, so
# looking an image up is exact (and quicker than computing it).
_UINT8_SCALED = np.arange(256) / 255 - 0.5
# The remembered-call keys of the functional calls below, as they pass their
# arguments: a valid convolution (stride 1, no padding, dilation 1), its
# filter gradient alone, and 2x2 max pooling without indices.
_VALID = (1, 0, 1)
_VALID_FILTERS = (1, 0, 1, False)
_POOL_2X2 = (2, None, 0, False, 1, False)
_ALL_MAXIMA_2X2 = (2, None)


def _float64(owner, name, value, ndim=None, shape=None):
    """``value`` as a float64 array (integers and floats accepted, as NumPy would)."""
    array = value
    if type(array) is not np.ndarray or array.dtype != _FLOAT64:
        array = _validation.real_array(owner, name, value).astype(np.float64)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{owner}: {name} must be {ndim}-D, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{owner}: {name} must have shape {shape}, got {array.shape}")
    return array


def _parameter(owner, layer, name, shape, column_major=False):
    """``layer.<name>`` as a writeable float64 array of ``shape``, C-contiguous (or
    column-major), replacing the attribute by such a copy when it is not one."""
    value = getattr(layer, name)
    if (type(value) is np.ndarray and value.dtype == _FLOAT64 and value.shape == shape
            and value.flags.writeable
            and (value.flags.f_contiguous if column_major else value.flags.c_contiguous)):
        return value
    array = np.array(_float64(owner, f"{type(layer).__name__}.{name}", value, shape=shape),
                     order="F" if column_major else "C")
    setattr(layer, name, array)
    return array


def _before_forward(owner):
    return RuntimeError(f"{owner} called before forward")


class Conv:
    """Conv(num_filters, filters_length)

    Valid convolution of one 2-D image with ``num_filters`` square filters
    of side ``filters_length``, no bias.

    Attributes
    ----------
    filters : ndarray, (num_filters, filters_length, filters_length)
        Drawn as ``np.random.randn(...) / filters_length**2``.
    last_input : the array given to the last ``forward``.
    """

    def __init__(self, num_filters, filters_length):
        self.num_filters = _validation.positive_int("Conv", "num_filters", num_filters)
        self.filters_length = _validation.positive_int("Conv", "filters_length", filters_length)
        shape = self._shape()
        _validation.check_nbytes(
            "Conv", "the filters (num_filters, filters_length, filters_length)", shape,
            np.float64)
        # The notebook's draws, from the legacy global generator.
        draws = np.random.randn(*shape)  # noqa: NPY002
        self.filters = draws / (self.filters_length * self.filters_length)

    # (image shape, filters, their (K, 1, L, L) view, their shape) of the last
    # validated forward: a call with the same image shape and the very same
    # filters needs no checks.
    _memo = None

    def _shape(self):
        return (self.num_filters, self.filters_length, self.filters_length)

    def _image(self, owner, name, value):
        """``value`` as a float64 2-D image at least as large as the filters."""
        image = _float64(owner, name, value, ndim=2)
        length = self.filters_length
        if image.shape[0] < length or image.shape[1] < length:
            raise ValueError(f"{owner}: the {image.shape} {name} is smaller than the "
                             f"{length}x{length} filters")
        return image

    def forward(self, input):
        """forward(input)

        Convolve the 2-D image ``input`` (h, w); returns (h - L + 1,
        w - L + 1, num_filters) float64.
        """
        memo = self._memo
        if (memo is not None and type(input) is np.ndarray and input.shape == memo[0]
                and input.dtype == _FLOAT64 and self.filters is memo[1]
                and memo[1].shape == memo[3]):
            # The image shape and the very filters of a validated call: the
            # kernel of F.conv2d's remembered call, or F.conv2d itself.
            self.last_input = input
            x = input[None, None]
            y = None
            if _conv._kernels is _conv._DISPATCHED:
                y = _conv._CONV2D.run((x, memo[2], None), _VALID)
            if y is None:
                y = F.conv2d(x, memo[2])
            return y[0].transpose(1, 2, 0)
        owner = "Conv.forward"
        image = self._image(owner, "input", input)
        filters = _parameter(owner, self, "filters", self._shape())
        self.last_input = input
        self._memo = (image.shape, filters, filters[:, None], filters.shape)
        return F.conv2d(image[None, None], filters[:, None])[0].transpose(1, 2, 0)

    def backprop(self, d_L_d_out, learn_rate):
        """backprop(d_L_d_out, learn_rate)

        Update the filters by one gradient step from ``d_L_d_out``, the loss
        gradient for the last output (h', w', num_filters).  Returns None.
        """
        memo = self._memo
        last_input = getattr(self, "last_input", None)
        if (memo is not None and type(d_L_d_out) is np.ndarray and type(last_input) is np.ndarray
                and d_L_d_out.ndim == 3 and self.filters is memo[1] and memo[1].shape == memo[3]
                and type(learn_rate) is float and math.isfinite(learn_rate)
                and _conv._kernels is _conv._DISPATCHED):
            # Remembered calls of F.conv2d_backward and of the descent step
            # match only arrays of the shapes, dtypes and layouts they were
            # validated with (gradient, image and filters consistent, the
            # filters writeable): anything else takes the checks below.
            grads = _conv._CONV2D_BACKWARD.run(
                (d_L_d_out.transpose(2, 0, 1)[None], last_input[None, None], memo[2]),
                _VALID_FILTERS)
            if (grads is not None
                    and optim._DESCEND.run((memo[1], grads[1]), learn_rate) is not None):
                return None
        owner = "Conv.backprop"
        try:
            last_input = self.last_input
        except AttributeError:
            raise _before_forward(owner) from None
        learn_rate = _validation.finite_real(owner, "learn_rate", learn_rate)
        image = self._image(owner, "last_input", last_input)
        filters = _parameter(owner, self, "filters", self._shape())
        gy = _float64(owner, "d_L_d_out", d_L_d_out, shape=self._out_shape(image.shape))
        _, grad_filters, _ = F.conv2d_backward(gy.transpose(2, 0, 1)[None], image[None, None],
                                               filters[:, None], need_input_grad=False)
        optim._descend(filters, grad_filters, learn_rate)
        return None

    def _out_shape(self, image_shape):
        """The (h', w', num_filters) output of an (h, w) image (the notebook's valid conv)."""
        return (*(_validation.output_extent(side, self.filters_length, 1, 0)
                  for side in image_shape[:2]), self.num_filters)


class MaxPool:
    """MaxPool(Pool_length)

    The notebook's max pooling of (h, w, num_filters) arrays: outputs
    (h // Pool_length, w // Pool_length, num_filters), where output (i, j) is
    the maximum of the 2x2 window at rows 2i, 2i+1 and columns 2j, 2j+1 (the
    notebook's window is 2x2 with stride 2 whatever Pool_length is).
    Pool_length must be >= 2 (with 1 the notebook's windows run past the
    input).
    """

    # The input shape of the last validated forward whose 2x2 windows cover
    # the whole input (Pool_length 2, even sides): the same again needs no checks.
    _memo = None
    _maxima_of = (None, None)

    def __init__(self, Pool_length):
        self.Pool_length = _validation.int_at_least("MaxPool", "Pool_length", Pool_length, 2)

    def _windows(self, x, owner, name):
        """x (h, w, c) as an NCHW view covering exactly the 2x2 windows, and the output shape."""
        array = _float64(owner, name, x, ndim=3)
        height, width, channels = array.shape
        out_shape = (height // self.Pool_length, width // self.Pool_length, channels)
        planes = array.transpose(2, 0, 1)[None]
        if self.Pool_length > 2:
            planes = planes[:, :, :2 * out_shape[0], :2 * out_shape[1]]
        return array, planes, out_shape

    def forward(self, input):
        """forward(input)

        Pool ``input`` (h, w, num_filters); returns (h // Pool_length,
        w // Pool_length, num_filters) float64.
        """
        maxima = None
        if type(input) is np.ndarray and input.shape == self._memo:
            # The shape of a validated call whose windows cover the input: the
            # kernel of F.max_pool2d's remembered call (it matches float64
            # NCHW-contiguous planes only), or F.max_pool2d itself.
            planes = input.transpose(2, 0, 1)[None]
            maxima = _pooling._MAX_CALLS.run((planes,), _POOL_2X2)
            if maxima is None and input.dtype == _FLOAT64:
                maxima = F.max_pool2d(planes, 2)
        if maxima is None:
            _, planes, out_shape = self._windows(input, "MaxPool.forward", "input")
            if 0 in out_shape:
                self.last_input = input
                return np.zeros(out_shape)
            maxima = F.max_pool2d(planes, 2)
            if (type(input) is np.ndarray and input.dtype == _FLOAT64
                    and planes.shape[2:] == input.shape[:2]):
                self._memo = input.shape
        self.last_input = input
        self._maxima_of = (input, maxima)
        # A copy: what the caller does with the output cannot touch the maxima kept here.
        return maxima[0].transpose(1, 2, 0).copy()

    def backprop(self, d_L_d_out):
        """backprop(d_L_d_out)

        The loss gradient for the last input: each window's gradient goes to
        every element equal to that window's maximum, 0 elsewhere.  The
        maxima ``forward`` found are reused while ``last_input`` is still the
        array it was given (modifying that array in place in between is not
        seen, unlike in the notebook, which recomputes them).
        """
        last_input = getattr(self, "last_input", None)
        seen, maxima = self._maxima_of
        if (seen is last_input and type(last_input) is np.ndarray
                and last_input.shape == self._memo and type(d_L_d_out) is np.ndarray
                and d_L_d_out.ndim == 3):
            # The input of the last forward, of a shape whose windows cover
            # it: the kernel of the remembered call, which matches only
            # float64 arrays of the shapes it was validated with.
            grad = _pooling._ALL_MAXIMA_CALLS.run(
                (np.ascontiguousarray(d_L_d_out.transpose(2, 0, 1))[None],
                 last_input.transpose(2, 0, 1)[None], maxima), _ALL_MAXIMA_2X2)
            if grad is not None:
                return grad[0].transpose(1, 2, 0)
        if (type(last_input) is np.ndarray and last_input.shape == self._memo
                and last_input.dtype == _FLOAT64 and type(d_L_d_out) is np.ndarray
                and d_L_d_out.dtype == _FLOAT64
                and d_L_d_out.shape == (last_input.shape[0] // 2, last_input.shape[1] // 2,
                                        last_input.shape[2])):
            planes = last_input.transpose(2, 0, 1)[None]
            if seen is not last_input:
                maxima = F.max_pool2d(planes, 2)
            gy = np.ascontiguousarray(d_L_d_out.transpose(2, 0, 1))[None]
            grad = _pooling.max_pool2d_backward_all_maxima(gy, planes, maxima, 2)
            return grad[0].transpose(1, 2, 0)
        owner = "MaxPool.backprop"
        try:
            last_input = self.last_input
        except AttributeError:
            raise _before_forward(owner) from None
        array, planes, out_shape = self._windows(last_input, owner, "last_input")
        gy = _float64(owner, "d_L_d_out", d_L_d_out, shape=out_shape)
        if 0 in out_shape:
            return np.zeros(array.shape)
        seen, maxima = getattr(self, "_maxima_of", (None, None))
        if seen is not last_input:
            maxima = F.max_pool2d(planes, 2)
        grad = _pooling.max_pool2d_backward_all_maxima(gy.transpose(2, 0, 1)[None], planes,
                                                       maxima, 2)
        if grad.shape[2:] != array.shape[:2]:
            covered = grad
            grad = np.zeros((1, array.shape[2], *array.shape[:2]))
            grad[:, :, :covered.shape[2], :covered.shape[3]] = covered
        return grad[0].transpose(1, 2, 0)


class Softmax:
    """Softmax(input_len, nodes)

    Fully connected layer with a softmax, on inputs of any shape holding
    ``input_len`` numbers (flattened in C order).

    Attributes
    ----------
    weights : ndarray, (input_len, nodes)
        Drawn as ``np.random.randn(input_len, nodes) / input_len``; stored
        column-major.
    biases : ndarray, (nodes,), zeros.
    last_input_shape, last_input (flattened copy), last_totals : from the
        last ``forward``.
    """

    def __init__(self, input_len, nodes):
        input_len = _validation.positive_int("Softmax", "input_len", input_len)
        nodes = _validation.positive_int("Softmax", "nodes", nodes)
        _validation.check_nbytes("Softmax", "the weights (input_len, nodes)", (input_len, nodes),
                                 np.float64)
        # Same draws as the notebook, stored column-major (see the module docstring).
        draws = np.random.randn(input_len, nodes)  # noqa: NPY002
        self.weights = np.asfortranarray(draws / input_len)
        self.biases = np.zeros(nodes)

    # (weights, biases, weights.T, weights.shape, (nodes,), (input_len,)) as
    # last checked: the same arrays again need no checks.
    _memo = None

    def _checked_parameters(self, owner, written):
        """_parameters, skipped for the very arrays of the last call: (weights,
        biases, weights.T (nodes, input_len), C-contiguous)."""
        memo = self._memo
        if (memo is not None and self.weights is memo[0] and self.biases is memo[1]
                and memo[0].shape == memo[3]
                and not (written and not (memo[0].flags.writeable
                                          and memo[1].flags.writeable))):
            return memo
        weights, biases = self._parameters(owner)
        memo = self._memo = (weights, biases, weights.T, weights.shape, weights.shape[1:],
                             weights.shape[:1])
        return memo

    def _parameters(self, owner):
        """The weights, column-major, and the biases, checked against each other."""
        weights, biases = self.weights, self.biases
        if (type(weights) is np.ndarray and type(biases) is np.ndarray
                and weights.dtype == _FLOAT64 and biases.dtype == _FLOAT64 and weights.ndim == 2
                and biases.shape == weights.shape[1:] and weights.flags.f_contiguous
                and biases.flags.c_contiguous and weights.flags.writeable
                and biases.flags.writeable):
            return weights, biases
        if np.ndim(weights) != 2:
            raise ValueError(f"{owner}: Softmax.weights must be 2-D (input_len, nodes), got "
                             f"shape {np.shape(weights)}")
        weights = _parameter(owner, self, "weights", np.shape(weights), column_major=True)
        biases = _parameter(owner, self, "biases", weights.shape[1:])
        return weights, biases

    def forward(self, input):
        """forward(input)

        Class probabilities (nodes,) for ``input`` (any shape, input_len
        numbers).
        """
        memo = self._memo
        totals = None
        if (memo is not None and self.weights is memo[0] and self.biases is memo[1]
                and memo[0].shape == memo[3] and type(input) is np.ndarray
                and _dense._KERNELS is _dense._DISPATCHED):
            # The very parameters of the last call: the kernel of F.linear's
            # remembered call, which matches only a float64 row of input_len.
            row = input.reshape(1, -1).copy() if input.size == memo[3][0] else None
            totals = None if row is None else _dense._LINEAR.run((row, memo[2], memo[1]))
            if totals is not None:
                self.last_input_shape = input.shape
                self.last_input = row[0]
                totals = totals[0]
        if totals is None:
            owner = "Softmax.forward"
            _, biases, weights_t, shape = self._checked_parameters(owner, False)[:4]
            array = _float64(owner, "input", input)
            if array.size != shape[0]:
                raise ValueError(f"{owner}: input must hold {shape[0]} numbers, got shape "
                                 f"{array.shape}")
            self.last_input_shape = array.shape
            self.last_input = array.flatten()
            totals = F.linear(self.last_input[None], weights_t, biases)[0]
        self.last_totals = totals
        exp = np.exp(totals)
        total = sum(exp.tolist())
        # backprop reuses exp and its sum while last_totals is still this array.
        self._exp_of = (totals, exp, total)
        return exp / total

    def backprop(self, d_L_d_out, learn_rate):
        """backprop(d_L_d_out, learn_rate)

        One gradient step from the first non-zero entry ``g`` of
        ``d_L_d_out`` (the loss gradient for the probabilities), at index i:
        the totals' gradient is g * d p_i / d totals.  Updates weights and
        biases in place and returns the loss gradient for the last input
        (its shape), computed with the weights before the update; None if
        ``d_L_d_out`` is all zeros.
        """
        owner = "Softmax.backprop"
        try:
            totals, last_input, last_shape = (self.last_totals, self.last_input,
                                              self.last_input_shape)
        except AttributeError:
            raise _before_forward(owner) from None
        memo = self._memo
        seen, t_exp, total = getattr(self, "_exp_of", (None, None, None))
        if (memo is not None and seen is totals and self.weights is memo[0]
                and self.biases is memo[1] and memo[0].shape == memo[3]
                and type(d_L_d_out) is np.ndarray and d_L_d_out.dtype == _FLOAT64
                and d_L_d_out.shape == memo[4] and type(last_input) is np.ndarray
                and last_input.shape == memo[5]
                and type(learn_rate) is float and math.isfinite(learn_rate)
                and _dense._KERNELS is _dense._DISPATCHED):
            # The totals of the last forward and the very parameters of the
            # last call: the first non-zero entry found in Python (NaN counts,
            # -0.0 does not, as in the notebook), the rest on the kernel of
            # the remembered step, which matches only a float64 input row and
            # writeable parameters of the shapes it was validated with.
            i = -1
            for j, g in enumerate(d_L_d_out.tolist()):
                if g:
                    i = j
                    break
            if i < 0:
                return None
            t_i = float(t_exp[i])
            d_L_d_t = t_exp * (-g * t_i / (total * total))
            d_L_d_t[i] = g * (t_i * (total - t_i) / (total * total))
            d_L_d_inputs = _dense._LINEAR_STEP.run((d_L_d_t[None], last_input[None], memo[2],
                                                    memo[1]), learn_rate)
            if d_L_d_inputs is not None:
                return d_L_d_inputs.reshape(last_shape)
        _, biases, weights_t, (input_len, nodes) = self._checked_parameters(owner, True)[:4]
        gradient = _float64(owner, "d_L_d_out", d_L_d_out, shape=(nodes,))
        learn_rate = _validation.finite_real(owner, "learn_rate", learn_rate)
        last_input = _float64(owner, "last_input", last_input, shape=(input_len,))
        nonzero = gradient.nonzero()[0]
        if not len(nonzero):
            return None
        i = int(nonzero[0])
        g = float(gradient[i])
        seen, t_exp, total = getattr(self, "_exp_of", (None, None, None))
        if seen is not totals:
            t_exp = np.exp(_float64(owner, "last_totals", totals, shape=(nodes,)))
            total = sum(t_exp.tolist())
        t_i = float(t_exp[i])
        # g * d p_i / d totals_j: -t_i t_j / S^2 off the diagonal, t_i (S - t_i) / S^2 on it.
        d_L_d_t = t_exp * (-g * t_i / (total * total))
        d_L_d_t[i] = g * (t_i * (total - t_i) / (total * total))
        d_L_d_inputs = _dense.linear_backward_step(d_L_d_t[None], last_input[None], weights_t,
                                                   biases, learn_rate)
        return d_L_d_inputs.reshape(last_shape)


class NotebookCNN:
    """NotebookCNN(num_filters=8, filters_length=3, pool_length=2, image_shape=(28, 28),
    classes=10)

    The notebook's network, Conv -> MaxPool -> Softmax, built in its order
    (so ``np.random.seed(s)`` beforehand gives its weights), and its
    training cell: images are scaled as ``image / 255 - 0.5``, the loss is
    -log p[label], one SGD step per image.
    """

    Conv, MaxPool, Softmax = Conv, MaxPool, Softmax

    def __init__(self, num_filters=8, filters_length=3, pool_length=2, image_shape=(28, 28),
                 classes=10):
        owner = "NotebookCNN"
        num_filters = _validation.positive_int(owner, "num_filters", num_filters)
        filters_length = _validation.positive_int(owner, "filters_length", filters_length)
        pool_length = _validation.int_at_least(owner, "pool_length", pool_length, 2)
        if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 2:
            raise TypeError(f"{owner}: image_shape must be a pair (height, width), got "
                            f"{image_shape!r}")
        image_shape = tuple(_validation.positive_int(owner, "image_shape", side)
                            for side in image_shape)
        self.classes = _validation.positive_int(owner, "classes", classes)
        # (Too small an image is reported below, in the notebook's terms.)
        convolved = [_validation.output_extent(side, filters_length, 1, 0)
                     for side in image_shape]
        if min(convolved) < pool_length:
            raise ValueError(f"{owner}: image_shape {image_shape} convolved with "
                             f"filters_length={filters_length} leaves {tuple(convolved)}, "
                             f"less than one pool_length={pool_length} window")
        self.image_shape = image_shape
        self.conv = self.Conv(num_filters, filters_length)
        self.pool = self.MaxPool(pool_length)
        pooled = (convolved[0] // pool_length) * (convolved[1] // pool_length) * num_filters
        self.softmax = self.Softmax(pooled, self.classes)

    def _scaled(self, owner, image):
        """``image / 255 - 0.5``, with the image checked against image_shape."""
        if type(image) is np.ndarray and image.dtype == _UINT8 and image.shape == self.image_shape:
            return _UINT8_SCALED.take(image)
        array = _validation.real_array(owner, "image", image)
        if array.shape != self.image_shape:
            raise ValueError(f"{owner}: image must have shape {self.image_shape}, got "
                             f"{array.shape}")
        return array / 255 - 0.5

    def _label(self, owner, label):
        label = _validation.to_int(owner, "label", label)
        if not 0 <= label < self.classes:
            raise ValueError(f"{owner}: label must be in [0, {self.classes}), got {label}")
        return label

    def _forward(self, owner, image, label):
        out = self.conv.forward(self._scaled(owner, image))
        out = self.pool.forward(out)
        out = self.softmax.forward(out)
        return out, -np.log(out[label]), 1 if out.argmax() == label else 0

    def forward(self, image, label):
        """forward(image, label)

        Probabilities, cross-entropy loss and accuracy (1 or 0) for one image.
        """
        owner = "NotebookCNN.forward"
        return self._forward(owner, image, self._label(owner, label))

    def train_step(self, image, label, lr=0.005):
        """train_step(image, label, lr=0.005)

        One SGD step on one image; returns its (loss, accuracy) before the step.
        """
        owner = "NotebookCNN.train_step"
        label = self._label(owner, label)
        lr = _validation.finite_real(owner, "lr", lr)
        out, loss, acc = self._forward(owner, image, label)
        gradient = np.zeros(self.classes)
        gradient[label] = -1 / out[label]
        gradient = self.softmax.backprop(gradient, lr)
        gradient = self.pool.backprop(gradient)
        self.conv.backprop(gradient, lr)
        return loss, acc

"""The seed notebook's own API, same numbers, on compiled kernels.

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
  its window's maximum (in ``last_input`` as it is then) receives the
  window's gradient (ties all get it, assigned, not split); elements outside
  every window get 0;
* ``Softmax.backprop`` uses only the first non-zero entry of the gradient
  it is given (the notebook passes -1 / p[label] at the label), updates the
  weights and biases in place, and returns None when the gradient is all
  zeros;
* no max-shift in the softmax: totals above ~709 overflow exactly as in the
  notebook.

Each ``forward`` and ``backprop`` is one call of a kernel of
``cnnext._kernels._compat`` (the build for this CPU), which works in the
notebook's (h, w, channels) layout, so every array returned is a new
C-contiguous float64 array.  A kernel takes only exact float64 arrays of the
layout and shapes it computes on and refuses anything else untouched; the
arguments are then checked (cnnext/_validation.py) and converted, and the
kernel called again.  The parameters stay float64 arrays updated in place, as
in the notebook; an array of another dtype or memory layout assigned to one
of them is replaced by a float64 copy at the next ``forward`` or
``backprop`` (C order, except the softmax weights: column-major, as the
kernel reads ``weights.T``, and as ``__init__`` stores them).

``NotebookCNN`` bundles the notebook's network and training cell
(``forward(image, label)``, ``train_step(image, label, lr)``).
"""

import numpy as np

from . import _dispatch, _validation

__all__ = ["Conv", "MaxPool", "NotebookCNN", "Softmax"]

_kernels = _dispatch.load("_compat")

_FLOAT64 = np.dtype(np.float64)
_UINT8 = np.dtype(np.uint8)
# image / 255 - 0.5 for every uint8 value: the same float64 operations, so
# looking an image up is exact (and quicker than computing it).
_UINT8_SCALED = np.arange(256) / 255 - 0.5


def _float64(owner, name, value, ndim=None, shape=None):
    """``value`` as a C-contiguous float64 array (integers and floats accepted, as
    NumPy would)."""
    array = value
    if type(array) is not np.ndarray or array.dtype != _FLOAT64:
        array = _validation.real_array(owner, name, value).astype(np.float64)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{owner}: {name} must be {ndim}-D, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{owner}: {name} must have shape {shape}, got {array.shape}")
    return np.ascontiguousarray(array)


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


def _read_copy(array, *written):
    """``array``, or a copy of it when it shares memory with one of the ``written`` arrays."""
    if any(np.shares_memory(array, other) for other in written):
        return array.copy()
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

    def _shape(self):
        return (self.num_filters, self.filters_length, self.filters_length)

    def _checked(self, owner):
        """(num_filters, filters_length, the filters), checked and made writeable float64."""
        num_filters = _validation.positive_int(owner, "Conv.num_filters", self.num_filters)
        length = _validation.positive_int(owner, "Conv.filters_length", self.filters_length)
        return num_filters, length, _parameter(owner, self, "filters", self._shape())

    def _image(self, owner, name, value, length):
        """``value`` as a float64 2-D image at least as large as the filters."""
        image = _float64(owner, name, value, ndim=2)
        if image.shape[0] < length or image.shape[1] < length:
            raise ValueError(f"{owner}: the {image.shape} {name} is smaller than the "
                             f"{length}x{length} filters")
        return image

    def forward(self, input):
        """forward(input)

        Convolve the 2-D image ``input`` (h, w); returns (h - L + 1,
        w - L + 1, num_filters) float64.
        """
        out = _kernels.conv_forward(input, self.filters, self.num_filters, self.filters_length)
        if out is None:
            owner = "Conv.forward"
            num_filters, length, filters = self._checked(owner)
            image = self._image(owner, "input", input, length)
            out = _kernels.conv_forward(image, filters, num_filters, length)
        self.last_input = input
        return out

    def backprop(self, d_L_d_out, learn_rate):
        """backprop(d_L_d_out, learn_rate)

        Update the filters by one gradient step from ``d_L_d_out``, the loss
        gradient for the last output (h', w', num_filters).  Returns None.
        """
        try:
            done = _kernels.conv_backward_step(d_L_d_out, self.last_input, self.filters,
                                               self.num_filters, self.filters_length,
                                               learn_rate)
        except AttributeError:
            raise _before_forward("Conv.backprop") from None
        if done is None:
            owner = "Conv.backprop"
            learn_rate = _validation.finite_real(owner, "learn_rate", learn_rate)
            num_filters, length, filters = self._checked(owner)
            image = self._image(owner, "last_input", self.last_input, length)
            out_shape = (*(_validation.output_extent(side, length, 1, 0)
                           for side in image.shape), num_filters)
            gy = _float64(owner, "d_L_d_out", d_L_d_out, shape=out_shape)
            _kernels.conv_backward_step(_read_copy(gy, filters), _read_copy(image, filters),
                                        filters, num_filters, length, learn_rate)
        return None


class MaxPool:
    """MaxPool(Pool_length)

    The notebook's max pooling of (h, w, num_filters) arrays: outputs
    (h // Pool_length, w // Pool_length, num_filters), where output (i, j) is
    the maximum of the 2x2 window at rows 2i, 2i+1 and columns 2j, 2j+1 (the
    notebook's window is 2x2 with stride 2 whatever Pool_length is).
    Pool_length must be >= 2 (with 1 the notebook's windows run past the
    input).
    """

    def __init__(self, Pool_length):
        self.Pool_length = _validation.int_at_least("MaxPool", "Pool_length", Pool_length, 2)

    def _pool_length(self, owner, x):
        """Pool_length, checked; beyond the sides of ``x`` (h, w, c) any length
        pools to nothing, as one past the longer side does."""
        length = _validation.int_at_least(owner, "MaxPool.Pool_length", self.Pool_length, 2)
        return min(length, max(x.shape[:2]) + 2)

    def forward(self, input):
        """forward(input)

        Pool ``input`` (h, w, num_filters); returns (h // Pool_length,
        w // Pool_length, num_filters) float64.
        """
        out = _kernels.max_pool_forward(input, self.Pool_length)
        if out is None:
            owner = "MaxPool.forward"
            x = _float64(owner, "input", input, ndim=3)
            out = _kernels.max_pool_forward(x, self._pool_length(owner, x))
        self.last_input = input
        return out

    def backprop(self, d_L_d_out):
        """backprop(d_L_d_out)

        The loss gradient for the last input: each window's gradient goes to
        every element equal to that window's maximum, 0 elsewhere.
        """
        try:
            grad = _kernels.max_pool_backward(d_L_d_out, self.last_input, self.Pool_length)
        except AttributeError:
            raise _before_forward("MaxPool.backprop") from None
        if grad is None:
            owner = "MaxPool.backprop"
            x = _float64(owner, "last_input", self.last_input, ndim=3)
            length = self._pool_length(owner, x)
            out_shape = (x.shape[0] // length, x.shape[1] // length, x.shape[2])
            gy = _float64(owner, "d_L_d_out", d_L_d_out, shape=out_shape)
            grad = _kernels.max_pool_backward(gy, x, length)
        return grad


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

    def _parameters(self, owner):
        """The weights, column-major, and the biases, checked against each other."""
        weights = self.weights
        if np.ndim(weights) != 2:
            raise ValueError(f"{owner}: Softmax.weights must be 2-D (input_len, nodes), got "
                             f"shape {np.shape(weights)}")
        weights = _parameter(owner, self, "weights", np.shape(weights), column_major=True)
        biases = _parameter(owner, self, "biases", weights.shape[1:])
        if np.shares_memory(weights, biases):
            raise ValueError(f"{owner}: Softmax.weights and Softmax.biases share memory")
        return weights, biases

    def forward(self, input):
        """forward(input)

        Class probabilities (nodes,) for ``input`` (any shape, input_len
        numbers).
        """
        results = _kernels.softmax_forward(input, self.weights, self.biases)
        if results is None:
            owner = "Softmax.forward"
            weights, biases = self._parameters(owner)
            input = _float64(owner, "input", input)
            if input.size != weights.shape[0]:
                raise ValueError(f"{owner}: input must hold {weights.shape[0]} numbers, got "
                                 f"shape {input.shape}")
            results = _kernels.softmax_forward(input, weights, biases)
        self.last_input_shape = input.shape
        self.last_input, self.last_totals, probs = results
        return probs

    def backprop(self, d_L_d_out, learn_rate):
        """backprop(d_L_d_out, learn_rate)

        One gradient step from the first non-zero entry ``g`` of
        ``d_L_d_out`` (the loss gradient for the probabilities), at index i:
        the totals' gradient is g * d p_i / d totals.  Updates weights and
        biases in place and returns the loss gradient for the last input
        (its shape), computed with the weights before the update; None if
        ``d_L_d_out`` is all zeros.
        """
        try:
            grad = _kernels.softmax_backward_step(d_L_d_out, self.last_totals, self.last_input,
                                                  self.weights, self.biases, learn_rate,
                                                  self.last_input_shape)
        except AttributeError:
            raise _before_forward("Softmax.backprop") from None
        if grad is None:
            grad = self._backprop_checked(d_L_d_out, learn_rate)
        return None if grad is False else grad

    def _backprop_checked(self, d_L_d_out, learn_rate):
        owner = "Softmax.backprop"
        weights, biases = self._parameters(owner)
        input_len, nodes = weights.shape
        gradient = _float64(owner, "d_L_d_out", d_L_d_out, shape=(nodes,))
        learn_rate = _validation.finite_real(owner, "learn_rate", learn_rate)
        last_input = _float64(owner, "last_input", self.last_input, shape=(input_len,))
        totals = _float64(owner, "last_totals", self.last_totals, shape=(nodes,))
        shape = self.last_input_shape
        if type(shape) is not tuple or not all(type(side) is int for side in shape):
            shape = tuple(_validation.to_int(owner, "last_input_shape", side)
                          for side in shape)
        if not gradient.any():  # (NaN counts as non-zero, as in the notebook)
            return False
        if int(np.prod(shape)) != input_len:
            raise ValueError(f"{owner}: last_input_shape {shape} does not hold "
                             f"{input_len} numbers")
        written = (weights, biases)
        return _kernels.softmax_backward_step(
            _read_copy(gradient, *written), _read_copy(totals, *written),
            _read_copy(last_input, *written), weights, biases, learn_rate, shape)


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

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

Convolution and pooling run on ``cnnext.functional`` (NCHW, one image as a
batch of one; the (h, w, c) arrays the notebook passes around are
transposed views of NCHW buffers, except the pooled output, a copy).  The
softmax layer is a handful of NumPy calls: its weights are stored
column-major (``weights.T`` is C-contiguous) so the outer product of the
per-image rank-1 update is one BLAS call in the weights' layout.

``NotebookCNN`` bundles the notebook's network and training cell
(``forward(image, label)``, ``train_step(image, label, lr)``).
"""

import operator

import numpy as np

from . import functional as F
from ._functional import pooling as _pooling

__all__ = ["Conv", "MaxPool", "NotebookCNN", "Softmax"]


def _size(owner, name, value, minimum):
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


_FLOAT64 = np.dtype(np.float64)


def _float64(owner, name, value, ndim=None, shape=None):
    """``value`` as a float64 array (integers and floats accepted, as NumPy would)."""
    array = value
    if type(array) is not np.ndarray or array.dtype != _FLOAT64:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{owner}: {name} must hold real numbers, got dtype {array.dtype}")
        array = array.astype(np.float64)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{owner}: {name} must be {ndim}-D, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{owner}: {name} must have shape {shape}, got {array.shape}")
    return array


def _last_input(layer, owner):
    try:
        return layer.last_input
    except AttributeError:
        raise RuntimeError(f"{owner} called before forward") from None


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
        self.num_filters = _size("Conv", "num_filters", num_filters, 1)
        self.filters_length = _size("Conv", "filters_length", filters_length, 1)
        shape = (self.num_filters, self.filters_length, self.filters_length)
        # The notebook's draws, from the legacy global generator.
        draws = np.random.randn(*shape)  # noqa: NPY002
        self.filters = draws / (self.filters_length * self.filters_length)

    def _kernel(self, owner):
        """The filters as a (K, 1, L, L) float64 view for F.conv2d."""
        shape = (self.num_filters, self.filters_length, self.filters_length)
        return _float64(owner, "Conv.filters", self.filters, shape=shape)[:, None]

    def forward(self, input):
        """forward(input)

        Convolve the 2-D image ``input`` (h, w); returns (h - L + 1,
        w - L + 1, num_filters) float64.
        """
        image = _float64("Conv.forward", "input", input, ndim=2)
        self.last_input = input
        length = self.filters_length
        if min(image.shape) < length:
            raise ValueError(f"Conv.forward: the {image.shape} image is smaller than the "
                             f"{length}x{length} filters")
        output = F.conv2d(image[None, None], self._kernel("Conv.forward"))
        return output[0].transpose(1, 2, 0)

    def backprop(self, d_L_d_out, learn_rate):
        """backprop(d_L_d_out, learn_rate)

        Update the filters by one gradient step from ``d_L_d_out``, the loss
        gradient for the last output (h', w', num_filters).  Returns None.
        """
        image = _float64("Conv.backprop", "last_input",
                         _last_input(self, "Conv.backprop"), ndim=2)
        height, width = image.shape
        length = self.filters_length
        out_shape = (height - length + 1, width - length + 1, self.num_filters)
        gy = _float64("Conv.backprop", "d_L_d_out", d_L_d_out, shape=out_shape)
        _, grad_filters, _ = F.conv2d_backward(
            gy.transpose(2, 0, 1)[None], image[None, None], self._kernel("Conv.backprop"),
            need_input_grad=False)
        self.filters -= learn_rate * grad_filters[:, 0]
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
        self.Pool_length = _size("MaxPool", "Pool_length", Pool_length, 2)

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
        _, planes, out_shape = self._windows(input, "MaxPool.forward", "input")
        self.last_input = input
        if 0 in out_shape:
            return np.zeros(out_shape)
        maxima = F.max_pool2d(planes, 2)
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
        array, planes, out_shape = self._windows(
            _last_input(self, "MaxPool.backprop"), "MaxPool.backprop", "last_input")
        gy = _float64("MaxPool.backprop", "d_L_d_out", d_L_d_out, shape=out_shape)
        if 0 in out_shape:
            return np.zeros(array.shape)
        seen, maxima = getattr(self, "_maxima_of", (None, None))
        if seen is not self.last_input:
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
        Drawn as ``np.random.randn(input_len, nodes) / input_len``.
    biases : ndarray, (nodes,), zeros.
    last_input_shape, last_input (flattened copy), last_totals : from the
        last ``forward``.
    """

    def __init__(self, input_len, nodes):
        input_len = _size("Softmax", "input_len", input_len, 1)
        nodes = _size("Softmax", "nodes", nodes, 1)
        # Same draws as the notebook, stored column-major (see the module docstring).
        draws = np.random.randn(input_len, nodes)  # noqa: NPY002
        self.weights = np.asfortranarray(draws / input_len)
        self.biases = np.zeros(nodes)

    def forward(self, input):
        """forward(input)

        Class probabilities (nodes,) for ``input`` (any shape, input_len
        numbers).
        """
        input_len = np.shape(self.weights)[0]
        array = _float64("Softmax.forward", "input", input)
        if array.size != input_len:
            raise ValueError(f"Softmax.forward: input must hold {input_len} numbers, got shape "
                             f"{array.shape}")
        self.last_input_shape = array.shape
        self.last_input = array.flatten()
        totals = np.dot(self.last_input, self.weights)
        totals += self.biases
        self.last_totals = totals
        exp = np.exp(totals)
        total = exp.sum()
        # backprop reuses exp and its sum while last_totals is still this array.
        self._exp_of = (totals, exp, float(total))
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
        nodes = np.shape(self.biases)[0]
        gradient = _float64("Softmax.backprop", "d_L_d_out", d_L_d_out, shape=(nodes,))
        try:
            totals, last_input = self.last_totals, self.last_input
        except AttributeError:
            raise RuntimeError("Softmax.backprop called before forward") from None
        i = next((j for j, g in enumerate(gradient.tolist()) if g != 0), None)
        if i is None:
            return None
        g = float(gradient[i])
        seen, t_exp, total = getattr(self, "_exp_of", (None, None, None))
        if seen is not totals:
            t_exp = np.exp(totals)
            total = float(t_exp.sum())
        t_i = float(t_exp[i])
        # g * d p_i / d totals_j: -t_i t_j / S^2 off the diagonal, t_i (S - t_i) / S^2 on it.
        d_L_d_t = t_exp * (-g * t_i / (total * total))
        d_L_d_t[i] = g * (t_i * (total - t_i) / (total * total))
        d_L_d_inputs = np.dot(self.weights, d_L_d_t)
        step = d_L_d_t * learn_rate
        # The rank-1 update as one BLAS call producing weights.T's layout.
        self.weights -= np.dot(step[:, None], last_input[None, :]).T
        self.biases -= step
        return d_L_d_inputs.reshape(self.last_input_shape)


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
        self.conv = self.Conv(num_filters, filters_length)
        self.pool = self.MaxPool(pool_length)
        height, width = (side - filters_length + 1 for side in image_shape)
        pooled = (height // pool_length) * (width // pool_length) * num_filters
        self.softmax = self.Softmax(pooled, classes)
        self.classes = classes

    def forward(self, image, label):
        """forward(image, label)

        Probabilities, cross-entropy loss and accuracy (1 or 0) for one image.
        """
        out = self.conv.forward(image / 255 - 0.5)
        out = self.pool.forward(out)
        out = self.softmax.forward(out)
        loss = -np.log(out[label])
        return out, loss, 1 if np.argmax(out) == label else 0

    def train_step(self, image, label, lr=0.005):
        """train_step(image, label, lr=0.005)

        One SGD step on one image; returns its (loss, accuracy) before the step.
        """
        out, loss, acc = self.forward(image, label)
        gradient = np.zeros(self.classes)
        gradient[label] = -1 / out[label]
        gradient = self.softmax.backprop(gradient, lr)
        gradient = self.pool.backprop(gradient)
        self.conv.backprop(gradient, lr)
        return loss, acc

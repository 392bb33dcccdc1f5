"""The seed notebook's algorithm as naive per-pixel Python loops: the "notebook" baseline.

A from-scratch rewrite of the notebook's math (not its code) with the same
structure and cost: every convolution window, pooling window and softmax
gradient entry is visited by a Python loop, one image at a time, float64.
It has the API of ``cnnext.compat`` (``Conv``, ``MaxPool``, ``Softmax``,
``NotebookCNN``) so the two are interchangeable: the benchmark suite times
it as the notebook, and the tests hold ``cnnext.compat`` to it.

The notebook's semantics it reproduces (see ``cnnext.compat``): filters
drawn from ``np.random.randn`` / L**2, softmax weights from
``np.random.randn`` / input_len, in that order; 2x2 stride-2 pooling
windows whatever the pool length, every tied maximum receiving the window's
gradient; the softmax step driven by the first non-zero gradient entry.
"""

import numpy as np

from .. import compat

__all__ = ["Conv", "MaxPool", "NotebookCNN", "Softmax"]


class Conv:
    """Conv(num_filters, filters_length): valid convolution, no bias, loops over positions."""

    def __init__(self, num_filters, filters_length):
        self.num_filters = num_filters
        self.filters_length = filters_length
        side = filters_length
        self.filters = np.random.randn(num_filters, side, side) / side**2  # noqa: NPY002

    def _patches(self, image):
        """Every (row, column, side x side patch) of ``image`` fully inside it."""
        side = self.filters_length
        rows, cols = image.shape
        for row in range(rows - side + 1):
            for col in range(cols - side + 1):
                yield row, col, image[row:row + side, col:col + side]

    def forward(self, input):
        self.last_input = input
        rows, cols = input.shape
        side = self.filters_length
        result = np.zeros((rows - side + 1, cols - side + 1, self.num_filters))
        for row, col, patch in self._patches(input):
            # One dot product per filter: patch . filter.
            result[row, col] = (self.filters * patch).sum(axis=2).sum(axis=1)
        return result

    def backprop(self, d_L_d_out, learn_rate):
        grad = np.zeros(self.filters.shape)
        for row, col, patch in self._patches(self.last_input):
            for k in range(self.num_filters):
                grad[k] += patch * d_L_d_out[row, col, k]
        self.filters -= learn_rate * grad
        return None


class MaxPool:
    """MaxPool(Pool_length): (h // n, w // n) outputs, each the max of a 2x2 stride-2 window."""

    def __init__(self, Pool_length):
        self.Pool_length = Pool_length

    def _windows(self, volume):
        rows, cols, _ = volume.shape
        for row in range(rows // self.Pool_length):
            for col in range(cols // self.Pool_length):
                yield row, col, volume[2 * row:2 * row + 2, 2 * col:2 * col + 2]

    def forward(self, input):
        self.last_input = input
        rows, cols, channels = input.shape
        result = np.zeros((rows // self.Pool_length, cols // self.Pool_length, channels))
        for row, col, window in self._windows(input):
            result[row, col] = window.max(axis=1).max(axis=0)
        return result

    def backprop(self, d_L_d_out):
        grad = np.zeros(self.last_input.shape)
        for row, col, window in self._windows(self.last_input):
            peak = window.max(axis=1).max(axis=0)
            height, width, channels = window.shape
            for dr in range(height):
                for dc in range(width):
                    for c in range(channels):
                        if window[dr, dc, c] == peak[c]:
                            grad[2 * row + dr, 2 * col + dc, c] = d_L_d_out[row, col, c]
        return grad


class Softmax:
    """Softmax(input_len, nodes): dense layer + softmax, the notebook's Jacobian-row update."""

    def __init__(self, input_len, nodes):
        self.weights = np.random.randn(input_len, nodes) / input_len  # noqa: NPY002
        self.biases = np.zeros(nodes)

    def forward(self, input):
        self.last_input_shape = input.shape
        self.last_input = input.flatten()
        self.last_totals = self.last_input @ self.weights + self.biases
        exp = np.exp(self.last_totals)
        return exp / exp.sum()

    def backprop(self, d_L_d_out, learn_rate):
        for index in range(len(d_L_d_out)):
            g = d_L_d_out[index]
            if g == 0:
                continue
            exp = np.exp(self.last_totals)
            total = exp.sum()
            # Row ``index`` of the softmax Jacobian: d p_index / d totals.
            jacobian_row = np.empty(len(exp))
            for j in range(len(exp)):
                if j == index:
                    jacobian_row[j] = exp[index] * (total - exp[index]) / total**2
                else:
                    jacobian_row[j] = -exp[index] * exp[j] / total**2
            d_L_d_totals = g * jacobian_row
            d_L_d_inputs = self.weights @ d_L_d_totals
            self.weights -= learn_rate * np.outer(self.last_input, d_L_d_totals)
            self.biases -= learn_rate * d_L_d_totals
            return d_L_d_inputs.reshape(self.last_input_shape)
        return None


class NotebookCNN(compat.NotebookCNN):
    """The notebook's network and training cell on these loops (as ``compat.NotebookCNN``)."""

    Conv, MaxPool, Softmax = Conv, MaxPool, Softmax

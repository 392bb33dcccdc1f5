"""cnnext.compat against the naive loops (cnnext._bench.notebook_loops): same API, same numbers."""

import numpy as np
import pytest

from cnnext import _dispatch, compat
from cnnext._bench import notebook_loops as loops
from cnnext.datasets import load_sample

MODULES = [compat, loops]


def digits(n, start=0):
    """``n`` real MNIST images (uint8, 28x28) and labels from the bundled sample, shuffled."""
    (images, labels), _ = load_sample()
    chosen = np.random.default_rng(0).permutation(len(images))[start:start + n]
    return images[chosen], labels[chosen]


def notebook_training_cell(nb, images, labels, seed, lr=0.005):
    """The notebook's training cell, written against the module ``nb`` (compat or the loops).

    Returns the (loss, accuracy) of every step.
    """
    np.random.seed(seed)  # noqa: NPY002 - the notebook draws from the global generator
    conv = nb.Conv(8, 3)
    pool = nb.MaxPool(2)
    softmax = nb.Softmax(13 * 13 * 8, 10)

    def forward(image, label):
        out = softmax.forward(pool.forward(conv.forward(image / 255 - 0.5)))
        return out, -np.log(out[label]), 1 if np.argmax(out) == label else 0

    def train(image, label):
        out, loss, acc = forward(image, label)
        gradient = np.zeros(10)
        gradient[label] = -1 / out[label]
        gradient = softmax.backprop(gradient, lr)
        gradient = pool.backprop(gradient)
        conv.backprop(gradient, lr)
        return loss, acc

    steps = [train(image, label) for image, label in zip(images, labels, strict=True)]
    return np.array(steps), (conv.filters, softmax.weights, softmax.biases)


def test_the_training_cell_gives_the_same_losses_step_after_step():
    images, labels = digits(250)
    fast, fast_weights = notebook_training_cell(compat, images, labels, seed=42)
    slow, slow_weights = notebook_training_cell(loops, images, labels, seed=42)
    np.testing.assert_allclose(fast[:, 0], slow[:, 0], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(fast[:, 1], slow[:, 1])
    for a, b in zip(fast_weights, slow_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    assert fast[-50:, 0].mean() < 0.85 * fast[:50, 0].mean()  # it learns


@pytest.mark.parametrize("nb", MODULES, ids=lambda m: m.__name__)
def test_notebook_cnn_is_the_training_cell(nb):
    images, labels = digits(6, start=300)
    steps, weights = notebook_training_cell(nb, images, labels, seed=7, lr=0.01)
    np.random.seed(7)  # noqa: NPY002
    net = nb.NotebookCNN()
    got = np.array([net.train_step(image, label, lr=0.01) for image, label in
                    zip(images, labels, strict=True)])
    np.testing.assert_array_equal(got, steps)
    np.testing.assert_array_equal(net.conv.filters, weights[0])
    out, loss, acc = net.forward(images[0], labels[0])
    assert out.shape == (10,) and loss == -np.log(out[labels[0]]) and acc in (0, 1)


def test_seeded_weights_shapes_and_attributes_are_the_notebooks():
    np.random.seed(5)  # noqa: NPY002
    conv, pool, softmax = compat.Conv(8, 3), compat.MaxPool(2), compat.Softmax(1352, 10)
    np.random.seed(5)  # noqa: NPY002
    filters = np.random.randn(8, 3, 3) / 9  # noqa: NPY002
    weights = np.random.randn(1352, 10) / 1352  # noqa: NPY002
    np.testing.assert_array_equal(conv.filters, filters)
    np.testing.assert_array_equal(softmax.weights, weights)
    np.testing.assert_array_equal(softmax.biases, np.zeros(10))
    assert (conv.num_filters, conv.filters_length, pool.Pool_length) == (8, 3, 2)
    image = digits(1)[0][0]
    out = conv.forward(image)  # the notebook also feeds raw uint8 images
    assert conv.last_input is image
    assert out.shape == (26, 26, 8) and out.dtype == np.float64
    pooled = pool.forward(out)
    assert pooled.shape == (13, 13, 8) and pool.last_input is out
    probs = softmax.forward(pooled)
    assert probs.shape == (10,) and softmax.last_input_shape == (13, 13, 8)
    assert softmax.last_input.shape == (1352,) and softmax.last_totals.shape == (10,)
    np.testing.assert_allclose(probs.sum(), 1)


@pytest.mark.parametrize("shape", [(28, 28), (9, 14), (7, 7)])
def test_each_layer_matches_the_loops(shape):
    rng = np.random.default_rng(3)
    image = rng.standard_normal(shape)
    gy_conv = rng.standard_normal((shape[0] - 2, shape[1] - 2, 4))
    layers = {}
    for nb in MODULES:
        np.random.seed(11)  # noqa: NPY002
        layers[nb] = nb.Conv(4, 3)
    outs = [layers[nb].forward(image) for nb in MODULES]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-13, atol=1e-14)
    assert [layers[nb].backprop(gy_conv, 0.1) for nb in MODULES] == [None, None]
    np.testing.assert_allclose(layers[compat].filters, layers[loops].filters, rtol=1e-13)


@pytest.mark.parametrize("pool_length", [2, 3, 4])
@pytest.mark.parametrize("shape", [(26, 26, 8), (9, 13, 2), (3, 2, 1)])
def test_max_pool_quirks_and_ties_match_the_loops(pool_length, shape):
    """Output (h // n, w // n) of 2x2 stride-2 windows; every tied maximum gets the gradient."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, shape).astype(np.float64)  # small integers: ties everywhere
    x.flat[rng.integers(0, x.size)] = np.nan
    out_shape = (shape[0] // pool_length, shape[1] // pool_length, shape[2])
    gy = rng.standard_normal(out_shape)
    fast, slow = compat.MaxPool(pool_length), loops.MaxPool(pool_length)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(fast.forward(x), slow.forward(x))
        np.testing.assert_array_equal(fast.backprop(gy), slow.backprop(gy))


def test_backprop_reads_the_last_input_attributes_as_the_notebook_does():
    """backprop works from last_input/last_totals set by hand, with no forward in between."""
    rng = np.random.default_rng(8)
    image, volume = rng.standard_normal((10, 10)), rng.standard_normal((8, 8, 3))
    flat = rng.standard_normal(12)
    results = []
    for nb in MODULES:
        np.random.seed(4)  # noqa: NPY002
        conv, pool, softmax = nb.Conv(3, 3), nb.MaxPool(2), nb.Softmax(12, 4)
        conv.last_input, pool.last_input = image, volume
        softmax.last_input, softmax.last_input_shape = flat, (3, 4)
        softmax.last_totals = flat @ softmax.weights + softmax.biases
        conv.backprop(np.linspace(-1, 1, 192).reshape(8, 8, 3), 0.1)
        results.append((conv.filters.copy(), pool.backprop(np.ones((4, 4, 3))),
                        softmax.backprop(np.array([0, 0.5, 0, 0]), 0.1), softmax.weights.copy()))
    for fast, slow in zip(*results, strict=True):
        np.testing.assert_allclose(fast, slow, rtol=1e-13, atol=1e-15)


def test_max_pool_backprop_follows_a_replaced_last_input():
    rng = np.random.default_rng(9)
    first, second = rng.standard_normal((6, 6, 2)), rng.standard_normal((6, 6, 2))
    gy = rng.standard_normal((3, 3, 2))
    fast, slow = compat.MaxPool(2), loops.MaxPool(2)
    slow.forward(first)
    out = fast.forward(first)
    out[...] = 1e9  # the caller's array: backprop does not depend on it
    np.testing.assert_array_equal(fast.backprop(gy), slow.backprop(gy))
    fast.last_input = slow.last_input = second
    np.testing.assert_array_equal(fast.backprop(gy), slow.backprop(gy))


def test_max_pool_gradient_goes_to_every_tied_maximum():
    x = np.array([[1.0, 5.0, 2.0], [5.0, 0.0, 7.0], [9.0, 9.0, 9.0]])[:, :, None]
    pool = compat.MaxPool(2)
    np.testing.assert_array_equal(pool.forward(x), [[[5.0]]])
    grad = pool.backprop(np.array([[[3.0]]]))
    np.testing.assert_array_equal(grad[:, :, 0], [[0, 3, 0], [3, 0, 0], [0, 0, 0]])


def test_softmax_backprop_uses_the_first_nonzero_entry_only():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4))
    results = []
    for gradient in ([0, 0, 0.5, 0, -2.0], [0, 0, 0.5, 0, 0], [0, 0, 0, 0, 0]):
        np.random.seed(1)  # noqa: NPY002
        softmax = compat.Softmax(12, 5)
        softmax.forward(x)
        weights = softmax.weights.copy()
        results.append((softmax.backprop(np.array(gradient), 0.1), softmax.weights.copy()))
        if not any(gradient):
            assert results[-1][0] is None
            np.testing.assert_array_equal(softmax.weights, weights)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][0].shape == (3, 4)


def test_softmax_without_max_shift_overflows_like_the_notebook():
    for nb in MODULES:
        np.random.seed(2)  # noqa: NPY002
        softmax = nb.Softmax(4, 3)
        softmax.weights[...] = 1000.0
        with np.errstate(over="ignore", invalid="ignore"):
            probs = softmax.forward(np.ones(4))
        assert np.isnan(probs).all()


def test_inputs_are_not_modified():
    image = digits(1, start=7)[0][0].astype(np.float64)
    saved = image.copy()
    np.random.seed(0)  # noqa: NPY002
    net = compat.NotebookCNN()
    net.train_step(image, 3)
    np.testing.assert_array_equal(image, saved)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: compat.Conv(8, 3).forward(np.zeros((28, 28, 1))), ValueError, "input must be 2-D"),
    (lambda: compat.Conv(8, 5).forward(np.zeros((4, 9))), ValueError, "smaller than the 5x5"),
    (lambda: compat.Conv(8, 3).forward(np.zeros((5, 5), complex)), TypeError, "real numbers"),
    (lambda: compat.Conv(0, 3), ValueError, "num_filters must be >= 1"),
    (lambda: compat.Conv(8, 2.5), TypeError, "filters_length must be an int"),
    (lambda: compat.Conv(8, 3).backprop(np.zeros((26, 26, 8)), 0.1), RuntimeError,
     "before forward"),
    (lambda: compat.MaxPool(1), ValueError, "Pool_length must be >= 2"),
    (lambda: compat.MaxPool(2).forward(np.zeros((4, 4))), ValueError, "input must be 3-D"),
    (lambda: compat.Softmax(1352, 10).forward(np.zeros((13, 13, 7))), ValueError,
     "must hold 1352 numbers"),
    (lambda: compat.Softmax(4, 3).backprop(np.zeros(3), 0.1), RuntimeError, "before forward"),
    (lambda: compat.Conv(True, 3), TypeError, "Conv: num_filters must be an int, got bool"),
    (lambda: compat.Softmax(2**62, 10), ValueError, r"Softmax: the weights \(input_len, nodes\)"),
    (lambda: compat.Conv(2**40, 2**40), ValueError, r"Conv: the filters \(num_filters, "),
    (lambda: compat.Conv(8, 3).forward([[1.0, 2.0], [1.0]]), TypeError,
     "Conv.forward: input must be an array of real numbers"),
    (lambda: compat.MaxPool(2).forward(np.zeros((4, 4, 2), complex)), TypeError,
     "MaxPool.forward: input must hold real numbers"),
])
def test_bad_input_raises_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backprop_rejects_gradients_of_the_wrong_shape():
    conv, pool, softmax = compat.Conv(2, 3), compat.MaxPool(2), compat.Softmax(8, 3)
    conv.forward(np.zeros((6, 6)))
    with pytest.raises(ValueError, match=r"d_L_d_out must have shape \(4, 4, 2\)"):
        conv.backprop(np.zeros((4, 4, 3)), 0.1)
    pool.forward(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match=r"d_L_d_out must have shape \(2, 2, 2\)"):
        pool.backprop(np.zeros((2, 2)))
    softmax.forward(np.zeros(8))
    with pytest.raises(ValueError, match=r"d_L_d_out must have shape \(3,\)"):
        softmax.backprop(np.zeros(4), 0.1)


def test_learn_rates_are_checked_before_anything_changes():
    np.random.seed(3)  # noqa: NPY002
    conv, softmax = compat.Conv(2, 3), compat.Softmax(8, 3)
    conv.forward(np.ones((4, 4)))
    softmax.forward(np.ones(8))
    filters, weights = conv.filters.copy(), softmax.weights.copy()
    for bad, error in [("0.1", TypeError), (None, TypeError), (np.ones(3), TypeError),
                       (True, TypeError), (float("nan"), ValueError), (np.inf, ValueError)]:
        with pytest.raises(error, match=r"Conv\.backprop: learn_rate must be"):
            conv.backprop(np.ones((2, 2, 2)), bad)
        with pytest.raises(error, match=r"Softmax\.backprop: learn_rate must be"):
            softmax.backprop(np.array([0, 1.0, 0]), bad)
    np.testing.assert_array_equal(conv.filters, filters)
    np.testing.assert_array_equal(softmax.weights, weights)
    conv.backprop(np.ones((2, 2, 2)), np.float32(0.5))  # any real scalar works
    assert not np.array_equal(conv.filters, filters)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"num_filters": 0}, ValueError, "NotebookCNN: num_filters must be >= 1"),
    ({"filters_length": 29}, ValueError,
     r"NotebookCNN: image_shape \(28, 28\) convolved with filters_length=29 leaves"),
    ({"pool_length": 1}, ValueError, "NotebookCNN: pool_length must be >= 2"),
    ({"image_shape": (2, 2)}, ValueError, r"NotebookCNN: image_shape \(2, 2\) convolved"),
    ({"image_shape": None}, TypeError, "NotebookCNN: image_shape must be a pair"),
    ({"image_shape": (28, 2.5)}, TypeError, "NotebookCNN: image_shape must be an int"),
    ({"classes": 0}, ValueError, "NotebookCNN: classes must be >= 1"),
    ({"classes": 1.5}, TypeError, "NotebookCNN: classes must be an int"),
])
def test_notebook_cnn_names_its_own_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        compat.NotebookCNN(**kwargs)


@pytest.mark.parametrize(("args", "error", "message"), [
    ((10,), ValueError, r"NotebookCNN.train_step: label must be in \[0, 10\), got 10"),
    ((-1,), ValueError, r"label must be in \[0, 10\), got -1"),
    ((1.5,), TypeError, "NotebookCNN.train_step: label must be an int"),
    ((3, "0.1"), TypeError, "NotebookCNN.train_step: lr must be a real number"),
    ((3, float("inf")), ValueError, "NotebookCNN.train_step: lr must be finite"),
])
def test_train_step_checks_label_and_lr(args, error, message):
    np.random.seed(0)  # noqa: NPY002
    net = compat.NotebookCNN()
    filters = net.conv.filters.copy()
    with pytest.raises(error, match=message):
        net.train_step(digits(1)[0][0], *args)
    np.testing.assert_array_equal(net.conv.filters, filters)


@pytest.mark.parametrize(("image", "error", "message"), [
    (np.zeros((27, 28), np.uint8), ValueError, r"image must have shape \(28, 28\), got \(27, 28\)"),
    (np.zeros((1, 28, 28)), ValueError, r"image must have shape \(28, 28\)"),
    (np.zeros((28, 28)).astype(str), TypeError, "image must hold real numbers"),
    (None, TypeError, "image must hold real numbers"),
])
def test_forward_checks_the_image(image, error, message):
    np.random.seed(0)  # noqa: NPY002
    with pytest.raises(error, match=f"NotebookCNN.forward: {message}"):
        compat.NotebookCNN().forward(image, 3)


def test_uint8_images_are_scaled_exactly_as_the_notebook_does():
    images, labels = digits(3, start=40)
    np.random.seed(1)  # noqa: NPY002
    net = compat.NotebookCNN()
    for image, label in zip(images, labels, strict=True):
        scaled = image / 255 - 0.5
        want = net.softmax.forward(net.pool.forward(net.conv.forward(scaled)))
        for given in (image, image.astype(np.int64), image.tolist()):
            np.testing.assert_array_equal(net.forward(given, label)[0], want)


def test_parameters_assigned_in_another_layout_or_dtype_are_converted():
    """The notebook's attributes can be replaced; training goes on with the same numbers."""
    images, labels = digits(4, start=60)
    nets = {}
    for nb in MODULES:
        np.random.seed(6)  # noqa: NPY002
        nets[nb] = nb.NotebookCNN()
        nets[nb].softmax.weights = np.ascontiguousarray(nets[nb].softmax.weights)
        nets[nb].conv.filters = np.asfortranarray(nets[nb].conv.filters)
    given = nets[compat].softmax.weights
    steps = {nb: [net.train_step(image, label) for image, label in
                  zip(images, labels, strict=True)] for nb, net in nets.items()}
    np.testing.assert_allclose(steps[compat], steps[loops], rtol=0, atol=1e-12)
    fast = nets[compat]
    assert fast.softmax.weights is not given and fast.softmax.weights.flags.f_contiguous
    assert fast.conv.filters.flags.c_contiguous
    np.testing.assert_allclose(fast.softmax.weights, nets[loops].softmax.weights, atol=1e-12)
    fast.softmax.biases = np.zeros(10, np.float32)  # float64 from the next call on
    fast.train_step(images[0], labels[0])
    assert fast.softmax.biases.dtype == np.float64 and np.any(fast.softmax.biases)
    fast.softmax.biases = np.zeros(9)
    with pytest.raises(ValueError, match=r"Softmax.forward: Softmax.biases must have shape "
                                         r"\(10,\)"):
        fast.softmax.forward(np.zeros(1352))


def test_repeat_paths_give_way_to_the_checks_for_what_they_do_not_match():
    """After steps that warm the fast paths: read-only parameters are still replaced
    by writeable copies, and gradients in another layout or dtype give the same
    numbers as the ones the network passes itself."""
    images, labels = digits(6, start=80)
    nets = []
    for _ in range(2):
        np.random.seed(7)  # noqa: NPY002
        nets.append(compat.NotebookCNN())
    plain, odd = nets
    for step, (image, label) in enumerate(zip(images, labels, strict=True)):
        if step >= 2:
            for layer, name in ((odd.conv, "filters"), (odd.softmax, "weights"),
                                (odd.softmax, "biases")):
                getattr(layer, name).flags.writeable = False
        assert plain.train_step(image, label) == odd.train_step(image, label)
    for a, b in ((plain.conv.filters, odd.conv.filters), (plain.softmax.weights,
                 odd.softmax.weights), (plain.softmax.biases, odd.softmax.biases)):
        assert b.flags.writeable
        np.testing.assert_array_equal(a, b)
    conv, pool = plain.conv, plain.pool
    pooled = pool.forward(conv.forward(images[0] / 255 - 0.5))
    gy = np.random.default_rng(1).standard_normal(pooled.shape).astype(np.float32)
    want = pool.backprop(gy.astype(np.float64))
    np.testing.assert_array_equal(pool.backprop(gy), want)
    before = conv.filters.copy()
    conv.backprop(want, 0.5)
    step = before - conv.filters
    conv.filters[...] = before
    conv.backprop(np.ascontiguousarray(want).astype(np.float32).astype(np.float64), 0.5)
    np.testing.assert_array_equal(before - conv.filters, step)
    assert np.any(step)


# The kernels of cnnext._kernels._compat, on every build this CPU runs, against
# float64 NumPy references (written here, in the notebook's (h, w, c) layout).
BUILDS = _dispatch.built_variants("_compat")
build_param = pytest.mark.parametrize("kernels", list(BUILDS.values()), ids=list(BUILDS))


def reference_conv(x, filters):
    length = filters.shape[1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (length, length))
    return np.einsum("ijab,fab->ijf", windows, filters)


def reference_filter_grad(gy, x, length):
    windows = np.lib.stride_tricks.sliding_window_view(x, (length, length))
    return np.einsum("ijab,ijf->fab", windows, gy)


def reference_pool(x, n):
    ho, wo = x.shape[0] // n, x.shape[1] // n
    windows = x[:2 * ho, :2 * wo].reshape(ho, 2, wo, 2, x.shape[2])
    with np.errstate(invalid="ignore"):
        return windows.max(axis=(1, 3))


def reference_pool_grad(gy, x, n):
    ho, wo = gy.shape[:2]
    windows = x[:2 * ho, :2 * wo].reshape(ho, 2, wo, 2, x.shape[2])
    with np.errstate(invalid="ignore"):
        hit = windows == windows.max(axis=(1, 3), keepdims=True)
    gx = np.zeros(x.shape)
    chosen = np.where(hit, gy[:, None, :, None], 0)
    gx[:2 * ho, :2 * wo] = chosen.reshape(2 * ho, 2 * wo, x.shape[2])
    return gx


def reference_probs(x, weights, biases):
    exp = np.exp(x.ravel() @ weights + biases)
    return exp / exp.sum()


def poisoned(*shape):
    return np.full(shape, np.nan)


@build_param
@pytest.mark.parametrize(("shape", "num_filters", "length"),
                         [((28, 28), 8, 3), ((9, 14), 4, 3), ((7, 5), 3, 2), ((6, 6), 16, 1),
                          ((11, 12), 9, 5), ((3, 3), 8, 3), ((10, 9), 12, 3)])
def test_conv_kernels_match_the_reference(kernels, shape, num_filters, length):
    rng = np.random.default_rng(sum(shape) + num_filters)
    x = rng.standard_normal(shape)
    filters = rng.standard_normal((num_filters, length, length))
    want = reference_conv(x, filters)
    out = poisoned(*want.shape)
    assert kernels.conv_forward(x, filters, num_filters, length, out) is out
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kernels.conv_forward(x, filters, num_filters, length), want,
                               rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(want.shape)
    before = filters.copy()
    assert kernels.conv_backward_step(gy, x, filters, num_filters, length, 0.25) is True
    np.testing.assert_allclose(before - filters, 0.25 * reference_filter_grad(gy, x, length),
                               rtol=1e-12, atol=1e-12)


@build_param
def test_conv_filter_gradient_matches_finite_differences(kernels):
    rng = np.random.default_rng(12)
    x, filters = rng.standard_normal((9, 8)), rng.standard_normal((8, 3, 3))
    gy = rng.standard_normal((7, 6, 8))

    def loss(f):
        return float((kernels.conv_forward(x, f, 8, 3) * gy).sum())

    numeric = np.zeros(filters.shape)
    for index in np.ndindex(filters.shape):
        step = np.zeros(filters.shape)
        step[index] = 1e-6
        numeric[index] = (loss(filters + step) - loss(filters - step)) / 2e-6
    stepped = filters.copy()
    kernels.conv_backward_step(gy, x, stepped, 8, 3, 1.0)
    np.testing.assert_allclose(filters - stepped, numeric, rtol=1e-6, atol=1e-7)


@build_param
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("shape", [(26, 26, 8), (9, 13, 2), (3, 2, 1), (8, 6, 5), (5, 7, 8)])
def test_pool_kernels_match_the_reference_with_ties_and_nan(kernels, shape, n):
    rng = np.random.default_rng(shape[0] * n)
    x = rng.integers(0, 3, shape).astype(np.float64)
    x.flat[rng.integers(0, x.size, 2)] = np.nan
    want = reference_pool(x, n)
    out = poisoned(*want.shape)
    assert kernels.max_pool_forward(x, n, out) is out
    np.testing.assert_array_equal(out, want)
    gy = rng.standard_normal(want.shape)
    gx = poisoned(*shape)
    assert kernels.max_pool_backward(gy, x, n, gx) is gx
    np.testing.assert_array_equal(gx, reference_pool_grad(gy, x, n))
    np.testing.assert_array_equal(kernels.max_pool_backward(gy, x, n), gx)


@build_param
@pytest.mark.parametrize(("n", "nodes"), [(1352, 10), (12, 4), (7, 1), (33, 17), (5, 8)])
def test_softmax_kernels_match_the_reference(kernels, n, nodes):
    rng = np.random.default_rng(n + nodes)
    x = rng.standard_normal(n)
    weights = np.asfortranarray(rng.standard_normal((n, nodes)) / n)
    biases = rng.standard_normal(nodes)
    outs = (poisoned(n), poisoned(nodes), poisoned(nodes))
    flat, totals, probs = kernels.softmax_forward(x, weights, biases, outs)
    assert all(got is given for got, given in zip((flat, totals, probs), outs, strict=True))
    np.testing.assert_array_equal(flat, x)
    np.testing.assert_allclose(totals, x @ weights + biases, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(probs, reference_probs(x, weights, biases), rtol=1e-12)
    # The notebook's step from the first non-zero entry g at i.
    i, g, lr = nodes - 1, -1.5, 0.3
    grad = np.zeros(nodes)
    grad[i] = g
    exp = np.exp(totals)
    total = exp.sum()
    dt = -exp[i] * exp / total**2 * g
    dt[i] = exp[i] * (total - exp[i]) / total**2 * g
    want_gx, want_w, want_b = weights @ dt, weights - lr * np.outer(x, dt), biases - lr * dt
    gx = poisoned(n)
    assert kernels.softmax_backward_step(grad, totals, x, weights, biases, lr, (n,), gx) is gx
    np.testing.assert_allclose(gx, want_gx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(weights, want_w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(biases, want_b, rtol=1e-12, atol=1e-14)
    before = weights.copy()
    assert kernels.softmax_backward_step(np.zeros(nodes), totals, x, weights, biases, lr,
                                         (n,)) is False
    np.testing.assert_array_equal(weights, before)


@build_param
def test_softmax_step_matches_finite_differences(kernels):
    """The input gradient and the weight step are g * d p_i / d(input, weights)."""
    rng = np.random.default_rng(21)
    n, nodes, i, g = 13, 5, 2, 0.7
    x = rng.standard_normal(n)
    weights = np.asfortranarray(rng.standard_normal((n, nodes)))
    biases = rng.standard_normal(nodes)

    def p_i(x, weights):
        return g * kernels.softmax_forward(x, np.asfortranarray(weights), biases)[2][i]

    grad = np.zeros(nodes)
    grad[i] = g
    totals = kernels.softmax_forward(x, weights, biases)[1]
    stepped = weights.copy(order="F")
    gx = kernels.softmax_backward_step(grad, totals, x, stepped, biases.copy(), 1.0, (n,))
    eps = 1e-6
    numeric_x = [(p_i(x + e, weights) - p_i(x - e, weights)) / (2 * eps)
                 for e in np.eye(n) * eps]
    np.testing.assert_allclose(gx, numeric_x, rtol=1e-6, atol=1e-8)
    numeric_w = np.zeros(weights.shape)
    for index in np.ndindex(weights.shape):
        e = np.zeros(weights.shape)
        e[index] = eps
        numeric_w[index] = (p_i(x, weights + e) - p_i(x, weights - e)) / (2 * eps)
    np.testing.assert_allclose(weights - stepped, numeric_w, rtol=1e-6, atol=1e-8)


@build_param
def test_kernels_refuse_what_they_do_not_take_and_change_nothing(kernels):
    """None for anything but exact float64 arrays of consistent shapes and layouts
    (the classes then check and convert): never a crash, nothing written."""
    rng = np.random.default_rng(30)
    x, filters = rng.standard_normal((8, 8)), rng.standard_normal((4, 3, 3))
    gy = rng.standard_normal((6, 6, 4))
    saved = filters.copy()
    readonly = filters.copy()
    readonly.flags.writeable = False
    for args in [(x.astype(np.float32), filters, 4, 3), (x.T, filters, 4, 3),
                 (x, filters, 5, 3), (x, filters, 4, 2), (x[:2], filters, 4, 3),
                 (x, readonly, 4, 3), (x.tolist(), filters, 4, 3), (x, filters, 4, 0),
                 (x[None], filters, 4, 3)]:
        assert kernels.conv_forward(*args) is None
    assert kernels.conv_forward(x, filters, 4, 3, np.zeros((6, 6, 3))) is None
    for args in [(gy[:5], x, filters, 4, 3, 0.1), (gy, x, filters, 4, 3, 1),
                 (gy, x, filters, 4, 3, float("nan")), (gy, x, readonly, 4, 3, 0.1),
                 (gy.astype(np.float32), x, filters, 4, 3, 0.1),
                 (gy, filters.reshape(6, 6), filters, 4, 3, 0.1),
                 (np.asfortranarray(gy), x, filters, 4, 3, 0.1)]:
        assert kernels.conv_backward_step(*args) is None
    np.testing.assert_array_equal(filters, saved)
    volume = rng.standard_normal((6, 6, 2))
    for args in [(volume, 1), (volume[:, :, :1], 2), (volume[0], 2), (volume.astype(int), 2)]:
        assert kernels.max_pool_forward(*args) is None
    assert kernels.max_pool_forward(volume, 2, np.zeros((3, 3, 3))) is None
    pooled = np.ones((3, 3, 2))
    for args in [(pooled[:2], volume, 2), (pooled, volume, 3), (pooled, volume, 1),
                 (pooled.transpose(1, 0, 2), volume, 2)]:
        assert kernels.max_pool_backward(*args) is None
    assert kernels.max_pool_backward(pooled, volume, 2, volume) is None  # gx is x
    weights = np.asfortranarray(rng.standard_normal((12, 3)))
    biases, flat = np.zeros(3), rng.standard_normal(12)
    for args in [(flat, np.ascontiguousarray(weights), biases), (flat[:11], weights, biases),
                 (flat, weights, biases[:2]), (flat.astype(np.float32), weights, biases),
                 (flat, weights, biases, (None, None))]:
        assert kernels.softmax_forward(*args) is None
    totals, grad = np.ones(3), np.array([0, 1.0, 0])
    saved_w = weights.copy()
    for args in [(grad, totals, flat, weights, biases, 0.1, (12, 2)),
                 (grad, totals, flat, weights, biases, 0.1, [12]),
                 (grad, totals, flat, weights, biases, 0.1, (12.0,)),
                 (grad, totals, flat, weights, biases, 0.1, (2**70,)),
                 (grad, totals, flat, weights, biases, "0.1", (12,)),
                 (grad[:2], totals, flat, weights, biases, 0.1, (12,)),
                 (grad, totals, flat, weights, weights[:3, 0], 0.1, (12,)),
                 (grad, totals, weights[:, 0], weights, biases, 0.1, (12,))]:
        assert kernels.softmax_backward_step(*args) is None
    np.testing.assert_array_equal(weights, saved_w)
    np.testing.assert_array_equal(biases, 0)


def test_layers_take_non_contiguous_and_other_dtype_inputs():
    """Views and other dtypes give the numbers of their contiguous float64 copies."""
    rng = np.random.default_rng(40)
    np.random.seed(9)  # noqa: NPY002
    conv, pool, softmax = compat.Conv(8, 3), compat.MaxPool(2), compat.Softmax(1352, 10)
    big = rng.standard_normal((56, 28))
    image = big[::2]
    want = conv.forward(image.copy())
    np.testing.assert_array_equal(conv.forward(image), want)
    assert conv.last_input is image
    volume = np.asfortranarray(want)
    pooled = pool.forward(want)
    np.testing.assert_array_equal(pool.forward(volume), pooled)
    np.testing.assert_array_equal(pool.forward(want.astype(np.float32)),
                                  pool.forward(want.astype(np.float32).astype(np.float64)))
    probs = softmax.forward(pooled)
    np.testing.assert_array_equal(softmax.forward(np.asfortranarray(pooled)), probs)
    grad = np.zeros(20)[::2]
    grad[3] = -1 / probs[3]
    weights = softmax.weights.copy()
    gp = softmax.backprop(grad, 0.01)
    softmax.weights[...] = weights
    softmax.biases[...] = 0
    np.testing.assert_array_equal(softmax.backprop(grad.copy(), 0.01), gp)
    pool.forward(want)
    gc = pool.backprop(gp[::-1][::-1])
    np.testing.assert_array_equal(pool.backprop(np.asfortranarray(gp)), gc)
    filters = conv.filters.copy()
    conv.last_input = image
    conv.backprop(np.asfortranarray(gc), 0.1)
    stepped = conv.filters.copy()
    conv.filters[...] = filters
    conv.last_input = image.copy()
    conv.backprop(gc, 0.1)
    np.testing.assert_array_equal(conv.filters, stepped)

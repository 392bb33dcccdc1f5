"""cnnext.interop: torch.nn modules in and out (from_torch, to_torch).

Weights copied bitwise both ways; outputs equal to PyTorch's in evaluation
mode; a residual module traced with torch.fx; state_dict keys as cnnext's;
refusals that name the module.  Skipped where torch is not installed.
"""

import numpy as np
import pytest

from cnnext import Sequential, models
from cnnext.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    Residual,
    Sigmoid,
    Tanh,
)

torch = pytest.importorskip("torch")
nn = torch.nn

from cnnext.interop import ConversionError, from_torch, to_torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _close(got, want, rtol=1e-5):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def _x(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _torch_out(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def lenet5_torch():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10)).eval()


def test_a_torch_sequential_comes_across_with_its_weights(tmp_path):
    module = lenet5_torch()
    model = from_torch(module, (1, 28, 28))
    assert [type(layer).__name__ for layer in model.layers] == [
        type(layer).__name__ for layer in models.lenet5().layers]
    for (name, tensor), (key, array) in zip(module.state_dict().items(),
                                            model.parameters().items(), strict=True):
        assert name == key
        np.testing.assert_array_equal(array, tensor.numpy())
    x = _x((4, 1, 28, 28))
    _close(model.forward(x), _torch_out(module, x))
    assert model.input_shape == (1, 28, 28)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_torch_and_back(dtype):
    model = models.lenet5(dtype=dtype, seed=3)
    module = to_torch(model)
    assert isinstance(module, nn.Sequential) and not module.training
    assert next(module.parameters()).dtype == getattr(torch, dtype)
    assert list(module.state_dict()) == list(model.parameters())
    x = _x((3, 1, 28, 28), dtype, seed=4)
    _close(_torch_out(module, x), model.forward(x), 1e-5 if dtype == "float32" else 1e-12)
    back = from_torch(module, (1, 28, 28))
    for key, array in model.parameters().items():
        np.testing.assert_array_equal(back.parameters()[key], array)
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


def test_the_pooling_options_and_one_sided_padding_cross_over():
    model = Sequential([
        Conv2D(2, 3, 3, padding=((1, 0), (0, 2)), dtype="float64", seed=5),
        MaxPool2D(3, 2, padding=1, dilation=2, ceil_mode=True),
        AvgPool2D(2, 1, padding=1, ceil_mode=True, count_include_pad=False),
        MaxPool2D(2, padding=((1, 0), (0, 1))),
        AvgPool2D(3, 1, padding=((2, 0), (0, 0))), Flatten()], input_shape=(2, 12, 11))
    module = to_torch(model)
    x = _x((2, 2, 12, 11), np.float64, seed=6)
    _close(_torch_out(module, x), model.forward(x), 1e-12)
    back = from_torch(module, (2, 12, 11))
    assert [layer.config() for layer in back.layers] == [layer.config()
                                                         for layer in model.layers]
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


class Block(nn.Module):
    """A residual block the way people write them: a forward that adds."""

    def __init__(self, channels, downsample=False):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(channels, channels * stride, 3, stride, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels * stride, channels * stride, 3, 1, 1)
        self.down = nn.Conv2d(channels, channels * stride, 1, stride) if downsample else None

    def forward(self, x):
        out = self.conv2(self.relu(self.conv1(x)))
        identity = x if self.down is None else self.down(x)
        return torch.relu(out + identity)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(Block(4), Block(4, downsample=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def test_a_residual_module_is_traced_into_residual_layers():
    torch.manual_seed(7)
    module = Net().eval()
    model = from_torch(module, (1, 12, 12))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Residual") == 2
    x = _x((3, 1, 12, 12), seed=8)
    _close(model.forward(x), _torch_out(module, x))
    again = to_torch(model)
    _close(_torch_out(again, x), _torch_out(module, x))


def test_unsupported_modules_are_named():
    with pytest.raises(ConversionError, match=r"module.1 \(GELU\) is not supported; cnnext "
                                              r"converts Conv1d, Conv2d"):
        from_torch(nn.Sequential(nn.Linear(4, 4), nn.GELU()), (4,))
    with pytest.raises(ConversionError, match="padding_mode 'reflect'"):
        from_torch(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
                   (1, 5, 5))
    with pytest.raises(ConversionError, match="return_indices=True"):
        from_torch(nn.Sequential(nn.MaxPool2d(2, return_indices=True)), (1, 4, 4))
    with pytest.raises(ConversionError, match="AdaptiveAvgPool2d\\(3\\)"):
        from_torch(nn.Sequential(nn.AdaptiveAvgPool2d(3)), (1, 6, 6))
    with pytest.raises(ConversionError, match=r"dtype torch\.float16"):
        from_torch(nn.Sequential(nn.Linear(4, 2).half()), (4,))
    with pytest.raises(ConversionError, match="does not take inputs of shape"):
        from_torch(nn.Sequential(nn.Linear(4, 2)), (5,))
    with pytest.raises(TypeError, match=r"from_torch: module must be a torch\.nn\.Module"):
        from_torch(lambda x: x, (4,))
    with pytest.raises(ValueError, match="from_torch: input_shape must be"):
        from_torch(nn.Sequential(nn.ReLU()), (0, 4))

    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2

    with pytest.raises(ConversionError, match=r"call_function mul"):
        from_torch(Branchy(), (4,))
    with pytest.raises(ConversionError, match=r"to_torch: layer 0 .* PyTorch's average pooling "
                                              r"has no dilation"):
        to_torch(Sequential([AvgPool2D(2, dilation=2)]))


def test_one_dimensional_modules_as_height_one():
    torch.manual_seed(9)
    module = nn.Sequential(nn.Conv1d(2, 3, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                           nn.AvgPool1d(3, 1, 1), nn.Flatten(), nn.Linear(3 * 10, 4)).eval()
    model = from_torch(module, (2, 20))
    assert model.input_shape == (2, 1, 20)
    x = _x((5, 2, 20), seed=10)
    _close(model.forward(x[:, :, None, :]), _torch_out(module, x))


def test_dense_only_models():
    torch.manual_seed(11)
    module = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.3), nn.Identity(),
                           nn.Linear(5, 3)).eval()
    model = from_torch(module, (6,))
    x = _x((4, 6), seed=12)
    _close(model.predict(x), torch.softmax(torch.from_numpy(_torch_out(module, x)), 1).numpy())
    assert isinstance(to_torch(Sequential([Dense(6, 3)]))[0], nn.Linear)


def test_every_layer_kind_crosses_both_ways():
    rng = np.random.default_rng(13)
    model = Sequential([
        Conv2D(2, 4, 3, padding=1, dtype="float64", seed=1), BatchNorm2D(4, dtype="float64"),
        LeakyReLU(0.2),
        Residual([Conv2D(4, 4, 3, padding=1, groups=2, bias=False, dtype="float64", seed=2),
                  BatchNorm2D(4, momentum=None, affine=False, dtype="float64"), Tanh()]),
        Residual([Conv2D(4, 8, 3, stride=2, padding=1, dtype="float64", seed=3), Sigmoid()],
                 [Conv2D(4, 8, 1, stride=2, bias=False, dtype="float64", seed=4)]),
        Dropout(0.25), GlobalAvgPool2D(), Dense(8, 3, dtype="float64", seed=5)],
        input_shape=(2, 8, 8))
    for layer in (model.layers[1], model.layers[3].block[1]):
        layer.buffers["running_mean"][...] = rng.uniform(-1, 1, layer.num_features)
        layer.buffers["running_var"][...] = rng.uniform(0.5, 2, layer.num_features)
    model.eval()
    module = to_torch(model)
    assert list(module.state_dict()) == list(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(module.state_dict()[key].numpy(), value)
    x = _x((3, 2, 8, 8), np.float64, seed=14)
    _close(_torch_out(module, x), model.forward(x), 1e-12)
    back = from_torch(module, (2, 8, 8))
    assert [type(layer).__name__ for layer in back.layers] == [
        type(layer).__name__ for layer in model.layers]
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


def test_a_torch_mobile_style_sequential_comes_across():
    """BatchNorm with trained statistics, depthwise and grouped convolutions, LeakyReLU,
    Tanh, Sigmoid, Dropout and global average pooling, from a plain nn.Sequential."""
    torch.manual_seed(5)
    module = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.LeakyReLU(0.1),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Tanh(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4, bias=False), nn.Sigmoid(),
        nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    module.train()
    with torch.no_grad():  # running statistics that are not 0 and 1
        for _ in range(3):
            module(torch.randn(8, 1, 12, 12))
    module.eval()
    model = from_torch(module, (1, 12, 12))
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "BatchNorm2D", "LeakyReLU", "Conv2D", "Tanh", "Conv2D", "Sigmoid", "Dropout",
        "GlobalAvgPool2D", "Dense"]
    assert not model.training
    # (AdaptiveAvgPool2d and Flatten become one GlobalAvgPool2D: the keys after it shift.)
    for (key, tensor), array in zip(module.state_dict().items(), model.state_dict().values(),
                                    strict=True):
        np.testing.assert_array_equal(array, tensor.numpy(), err_msg=key)
    x = _x((3, 1, 12, 12), seed=15)
    _close(model.forward(x), _torch_out(module, x))
    _close(_torch_out(to_torch(model), x), model.forward(x))

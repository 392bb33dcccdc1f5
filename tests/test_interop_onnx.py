"""cnnext.interop: ONNX import and export.

ONNX's own node test cases through from_onnx (conformance), models exported by
torch.onnx against onnxruntime, cnnext's exports in onnxruntime, round trips,
refusals that name what is unsupported, and hostile files.  Skipped where
onnx (and onnxruntime, torch for the tests that use them) are not installed;
.ci/run installs them.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
from onnx_testing import node_cases, run_case, spatial_rank

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
    ReLU,
    Residual,
    Sigmoid,
    Tanh,
)

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnnext.interop import ConversionError, from_onnx, to_onnx  # noqa: E402


@pytest.fixture(scope="module")
def node_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("node_cases")
    return {name: (spatial_rank(case), *run_case(case, folder))
            for name, case in node_cases().items()}


def test_onnx_node_cases_of_the_pooling_and_conv_operators(node_results):
    """Every Conv/MaxPool/AveragePool/GlobalAveragePool case of ONNX's suite passes or is
    refused by name; none gives a wrong result; at least 33 of the 35 2-D ones pass."""
    wrong = {name: detail for name, (_, outcome, detail) in node_results.items()
             if outcome == "wrong"}
    assert not wrong
    two_d = {name: outcome for name, (rank, outcome, _) in node_results.items() if rank == 2}
    assert len(two_d) == 35
    passed = sorted(name for name, outcome in two_d.items() if outcome == "pass")
    assert len(passed) >= 33, sorted(set(two_d) - set(passed))
    # The two refused: MaxPool's second output (the argmax indices).
    assert {name for name, outcome in two_d.items() if outcome == "refused"} <= {
        "test_maxpool_with_argmax_2d_precomputed_pads",
        "test_maxpool_with_argmax_2d_precomputed_strides"}
    one_d = [outcome for rank, outcome, _ in node_results.values() if rank == 1]
    assert one_d and all(outcome == "pass" for outcome in one_d)
    for name, (_, outcome, detail) in node_results.items():
        if outcome == "refused":
            assert "rank 5" in detail or "output" in detail, (name, detail)


@pytest.mark.parametrize("operators", [
    ("Relu", "Flatten", "Reshape", "Gemm", "MatMul", "Identity", "Dropout", "Softmax",
     "LogSoftmax", "Add", "BatchNormalization", "LeakyRelu", "Sigmoid", "Tanh")])
def test_onnx_node_cases_of_the_other_operators_are_never_wrong(operators, tmp_path):
    results = {name: run_case(case, tmp_path) for name, case in node_cases(operators).items()}
    assert results
    assert not {name: detail for name, (outcome, detail) in results.items()
                if outcome == "wrong"}
    passed = {name for name, (outcome, _) in results.items() if outcome == "pass"}
    # What cnnext's shapes allow: (N, features) Gemm/MatMul, Flatten(axis=1), Relu.
    assert {"test_relu", "test_flatten_axis1", "test_gemm_default_vector_bias",
            "test_gemm_transposeB", "test_matmul_2d", "test_reshape_reduced_dims"} <= passed


# ------------------------------------------------------------------ helpers

def _session(path):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort(path, x):
    session = _session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _assert_close(got, want, rtol=1e-5):
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def _rng(seed=0):
    return np.random.default_rng(seed)


def every_layer_model(dtype="float32"):
    """One of each exportable layer, with one-sided padding, ceil mode, dilation and
    padding excluded from an average."""
    rng = _rng(1)
    layers = [Conv2D(1, 4, 3, padding=((1, 0), (0, 1)), dtype=dtype, seed=1), ReLU(),
              MaxPool2D(3, 2, padding=1, dilation=(1, 2), ceil_mode=True),
              Conv2D(4, 6, 3, stride=(1, 2), padding=1, dilation=2, dtype=dtype, seed=2),
              AvgPool2D(2, 2, padding=((1, 0), (0, 1)), ceil_mode=True,
                        count_include_pad=False),
              Flatten()]
    model = Sequential(layers)
    features = model.output_shape((1, 28, 28))[0]
    layers += [Dense(features, 10, dtype=dtype, seed=3)]
    model = Sequential(layers, input_shape=(1, 28, 28))
    for layer in model.layers:
        for array in layer.params.values():
            array[...] = rng.standard_normal(array.shape) * 0.3
    return model


def new_layer_model(dtype="float32", affine=True):
    """BatchNorm (running statistics that are not 0 and 1; one without affine parameters
    unless ``affine``), depthwise and grouped convolutions, LeakyReLU, Sigmoid, Tanh,
    Dropout, global average pooling, and Residuals with the identity and with a
    convolution as shortcut."""
    rng = _rng(2)
    model = Sequential([
        Conv2D(1, 8, 3, padding=1, bias=False, dtype=dtype, seed=1), BatchNorm2D(8, dtype=dtype),
        LeakyReLU(0.2),
        Residual([Conv2D(8, 8, 3, padding=1, groups=8, dtype=dtype, seed=2),
                  BatchNorm2D(8, affine=affine, dtype=dtype), Tanh()]),
        Residual([Conv2D(8, 12, 3, stride=2, padding=1, groups=4, bias=False, dtype=dtype,
                         seed=3), BatchNorm2D(12, eps=1e-3, dtype=dtype), Sigmoid()],
                 [Conv2D(8, 12, 1, stride=2, bias=False, dtype=dtype, seed=4)]),
        Dropout(0.3, seed=5), GlobalAvgPool2D(), Dense(12, 10, dtype=dtype, seed=6)],
        input_shape=(1, 28, 28))
    for leaf in (leaf for layer in model.layers for leaf in layer._leaves()):
        for name, array in leaf.buffers.items():
            if name == "running_mean":
                array[...] = rng.uniform(-0.5, 0.5, array.shape)
            elif name == "running_var":
                array[...] = rng.uniform(0.5, 2.0, array.shape)
        if isinstance(leaf, BatchNorm2D) and leaf.params:
            leaf.params["weight"][...] = rng.uniform(0.5, 1.5, leaf.num_features)
            leaf.params["bias"][...] = rng.uniform(-0.2, 0.2, leaf.num_features)
    return model.eval()


# --------------------------------------------------------- cnnext -> ONNX -> cnnext

@pytest.mark.parametrize("make", [lambda: models.seed_cnn(seed=0),
                                  lambda: models.lenet5(seed=1),
                                  lambda: models.lenet5(dtype="float64", seed=2),
                                  every_layer_model, new_layer_model,
                                  lambda: new_layer_model("float64"),
                                  lambda: models.resnet8(seed=7).eval()])
def test_round_trip_keeps_weights_bitwise_and_outputs(make, tmp_path):
    model = make()
    path = tmp_path / "model.onnx"
    proto = to_onnx(model, path, input_shape=(1, 28, 28))  # resnet8 has none
    assert isinstance(proto, onnx.ModelProto)
    onnx.checker.check_model(onnx.load(path))
    back = from_onnx(path)
    # Dropout is dropped (inference); everything else comes back as it was.
    kept = [layer for layer in model.layers if not isinstance(layer, Dropout)]
    assert [type(a) for a in back.layers] == [type(b) for b in kept]
    state, back_state = model.state_dict(), back.state_dict()
    assert len(state) == len(back_state)
    for (key, value), (_, again) in zip(state.items(), back_state.items(), strict=True):
        assert value.dtype == again.dtype, key
        # num_batches_tracked has no ONNX counterpart: training state, not inference
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(again, value, err_msg=key)
    for a, b in zip(kept, back.layers, strict=True):
        # (How weights were first drawn is no part of the function; a pool's ceil mode
        # may come back as the floor mode that computes the same, see to_onnx.)
        if a.params:
            assert {k: v for k, v in a.config().items() if k != "init"} == {
                k: v for k, v in b.config().items() if k != "init"}
        for name in a.params:
            assert a.params[name].dtype == b.params[name].dtype
            np.testing.assert_array_equal(a.params[name], b.params[name])
    x = _rng(4).standard_normal((3, 1, 28, 28)).astype(model.dtype)
    np.testing.assert_array_equal(back.forward(x), model.forward(x))
    assert back.input_shape == (1, 28, 28) and back.onnx_output is None


@pytest.mark.parametrize("make", [lambda: models.lenet5(seed=5), every_layer_model,
                                  lambda: new_layer_model(affine=False),
                                  lambda: models.resnet8(seed=8).eval(),
                                  lambda: models.seed_cnn(dtype="float64", seed=6)])
def test_exports_run_in_onnxruntime_equal_to_cnnext(make, tmp_path):
    model = make()
    path = tmp_path / "model.onnx"
    to_onnx(model, path, input_shape=(1, 28, 28))
    x = _rng(7).standard_normal((5, 1, 28, 28)).astype(model.dtype)
    if model.dtype == np.float64 and any(isinstance(layer, Conv2D) for layer in model.layers):
        # onnxruntime's CPU provider has no float64 Conv: it must say so, not compute.
        with pytest.raises(Exception, match=r"Conv"):
            _ort(path, x)
        return
    _assert_close(_ort(path, x), model.forward(x))


def test_export_output_options(tmp_path):
    model = models.lenet5(seed=8)
    x = _rng(9).standard_normal((4, 1, 28, 28)).astype(np.float32)
    for output, want in (("probabilities", model.predict(x)),
                         ("log_probabilities", np.log(model.predict(x))),
                         ("logits", model.forward(x))):
        path = tmp_path / f"{output}.onnx"
        to_onnx(model, path, output=output)
        _assert_close(_ort(path, x), want, rtol=2e-5)
        back = from_onnx(path)
        assert back.onnx_output == {"probabilities": "Softmax", "logits": None,
                                    "log_probabilities": "LogSoftmax"}[output]
        np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-6)
        # Exporting the imported model again keeps its final operation.
        again = tmp_path / f"again-{output}.onnx"
        to_onnx(back, again)
        assert [n.op_type for n in onnx.load(again).graph.node][-1] == {
            "probabilities": "Softmax", "logits": "Gemm",
            "log_probabilities": "LogSoftmax"}[output]


def test_export_refuses_what_it_cannot_write(tmp_path):
    model = models.lenet5(seed=10)
    with pytest.raises(ValueError, match=r"to_onnx: opset 12 cannot hold this model"):
        to_onnx(model, tmp_path / "m.onnx", opset=12)
    with pytest.raises(ValueError, match="to_onnx: output must be one of"):
        to_onnx(model, tmp_path / "m.onnx", output="softmax")
    with pytest.raises(ValueError, match="to_onnx: the model has no input_shape"):
        to_onnx(Sequential([Flatten(), Dense(4, 2)]), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="to_onnx: the model does not take input_shape"):
        to_onnx(model, tmp_path / "m.onnx", input_shape=(1, 8, 8))
    with pytest.raises(TypeError, match="to_onnx: model must be a cnnext Sequential"):
        to_onnx([Flatten()], tmp_path / "m.onnx")
    dilated = Sequential([AvgPool2D(2, 1, dilation=2)], input_shape=(1, 6, 6))
    with pytest.raises(ValueError, match="opset 17 cannot hold this model: it needs 19"):
        to_onnx(dilated, tmp_path / "d.onnx", opset=17)
    assert to_onnx(dilated, tmp_path / "d.onnx").opset_import[0].version == 19
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------- torch.onnx -> cnnext

def _lenet5_torch(torch):
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        nn.Softmax(dim=1)).eval()


def _export(torch, module, example, path, dynamo=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["x"],
                          output_names=["y"], dynamo=dynamo,
                          dynamic_axes=None if dynamo else {"x": {0: "batch"}})


def test_a_torch_lenet5_exported_to_onnx_runs_as_onnxruntime_runs_it(torch, tmp_path):
    module = _lenet5_torch(torch)
    path = tmp_path / "lenet5.onnx"
    _export(torch, module, torch.zeros(1, 1, 28, 28), path)
    model = from_onnx(path)
    assert model.onnx_output == "Softmax"
    x = _rng(11).standard_normal((6, 1, 28, 28)).astype(np.float32)
    want = _ort(path, x)
    _assert_close(model.predict(x), want)
    # Its cnnext export runs in onnxruntime too.
    again = tmp_path / "again.onnx"
    to_onnx(model, again)
    _assert_close(_ort(again, x), want)


def _residual_torch(torch):
    """A small BatchNorm + residual net, with running statistics that are not 0 and 1."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, channels, down=False):
            super().__init__()
            stride = 2 if down else 1
            self.body = nn.Sequential(
                nn.Conv2d(channels, channels * stride, 3, stride, 1, bias=False),
                nn.BatchNorm2d(channels * stride), nn.ReLU(),
                nn.Conv2d(channels * stride, channels * stride, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels * stride))
            self.down = nn.Sequential(nn.Conv2d(channels, channels * stride, 1, stride,
                                                bias=False),
                                      nn.BatchNorm2d(channels * stride)) if down else None

        def forward(self, x):
            shortcut = x if self.down is None else self.down(x)
            return torch.relu(self.body(x) + shortcut)

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        Block(8), Block(8, down=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 10))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
    return net.eval()


@pytest.mark.parametrize("folded", [True, False])
def test_a_torch_batchnorm_residual_net_exported_to_onnx_runs_as_onnxruntime_runs_it(
        torch, tmp_path, folded):
    """torch.onnx folds BatchNorm into the convolutions by default; unfolded, the graph keeps
    its BatchNormalization nodes."""
    module = _residual_torch(torch)
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 1, 16, 16),), str(path), input_names=["x"],
                          output_names=["y"], dynamo=False, do_constant_folding=folded,
                          dynamic_axes={"x": {0: "batch"}})
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert ("BatchNormalization" in ops) is not folded and ops.count("Add") == 2
    model = from_onnx(path)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Residual") == 2 and ("BatchNorm2D" in kinds) is not folded
    x = _rng(16).standard_normal((5, 1, 16, 16)).astype(np.float32)
    want = _ort(path, x)
    _assert_close(model.forward(x), want)
    with torch.no_grad():
        _assert_close(model.forward(x), module(torch.from_numpy(x)).numpy())
    again = tmp_path / "again.onnx"
    to_onnx(model, again)
    _assert_close(_ort(again, x), want)
    back = from_onnx(again)
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


def test_a_torch_depthwise_net_exported_to_onnx_runs_as_onnxruntime_runs_it(torch, tmp_path):
    """Depthwise and grouped convolutions, LeakyReLU, Tanh, Sigmoid, Dropout (absent from the
    exported graph: evaluation mode) and global average pooling, from torch.onnx."""
    nn = torch.nn
    torch.manual_seed(3)
    module = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.LeakyReLU(0.1),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Tanh(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4, bias=False), nn.Sigmoid(),
        nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 1, 16, 16),), str(path), input_names=["x"],
                          output_names=["y"], dynamo=False, do_constant_folding=False,
                          dynamic_axes={"x": {0: "batch"}})
    model = from_onnx(path)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "BatchNorm2D", "LeakyReLU", "Conv2D", "Tanh", "Conv2D",
                     "Sigmoid", "GlobalAvgPool2D", "Dense"], kinds
    assert [layer.groups for layer in model.layers if isinstance(layer, Conv2D)] == [1, 8, 4]
    assert model.layers[2].negative_slope == 0.1 and model.layers[1].eps == 1e-5
    x = _rng(17).standard_normal((4, 1, 16, 16)).astype(np.float32)
    want = _ort(path, x)
    _assert_close(model.forward(x), want)
    with torch.no_grad():
        _assert_close(model.forward(x), module(torch.from_numpy(x)).numpy())
    again = tmp_path / "again.onnx"
    to_onnx(model, again)
    _assert_close(_ort(again, x), want)


def test_the_torch_export_based_exporter_too(torch, tmp_path):
    pytest.importorskip("onnxscript")  # what torch.onnx.export(dynamo=True) needs
    module = _lenet5_torch(torch)
    path = tmp_path / "lenet5-dynamo.onnx"
    _export(torch, module, torch.zeros(2, 1, 28, 28), path, dynamo=True)
    model = from_onnx(path)
    x = _rng(12).standard_normal((2, 1, 28, 28)).astype(np.float32)
    _assert_close(model.predict(x), _ort(path, x))


# ------------------------------------------------------------------ refusals

def _graph_file(path, nodes, inputs, outputs, initializers=(), opset=17, **model_fields):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model_fields.setdefault("opset_imports", [helper.make_opsetid("", opset)])
    model = helper.make_model(graph, **model_fields)
    path.write_bytes(model.SerializeToString())
    return path


def _value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def test_identities_of_weights_are_weights(tmp_path):
    """torch.onnx writes equal tensors once, the others as Identity nodes of it."""
    rng = _rng(21)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    initializers = [numpy_helper.from_array(a, n) for a, n in ((ones, "scale"), (zeros, "b"),
                                                                (w, "w"))]
    nodes = [helper.make_node("Identity", ["scale"], ["var"], name="same_var"),
             helper.make_node("Identity", ["b"], ["mean"], name="same_mean"),
             helper.make_node("Conv", ["x", "w"], ["c"], name="conv", group=3, pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c", "scale", "b", "mean", "var"], ["y"],
                              name="bn", epsilon=1e-3)]
    path = _graph_file(tmp_path / "m.onnx", nodes, [_value("x", ["N", 3, 5, 5])],
                       [_value("y", ["N", 3, 5, 5])], initializers)
    model = from_onnx(path)
    assert [type(layer).__name__ for layer in model.layers] == ["Conv2D", "BatchNorm2D"]
    assert model.layers[0].groups == 3 and model.layers[1].eps == 1e-3
    np.testing.assert_array_equal(model.layers[1].buffers["running_var"], ones)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    want = x.astype(np.float64)
    want = np.stack([np.sum([np.pad(want[:, c], ((0, 0), (1, 1), (1, 1)))[
        :, i:i + 5, j:j + 5] * w[c, 0, i, j] for i in range(3) for j in range(3)], axis=0)
        for c in range(3)], axis=1) / np.sqrt(1 + 1e-3)
    _assert_close(model.forward(x), want)


def test_unsupported_operators_are_named_with_what_is_supported(tmp_path):
    path = _graph_file(tmp_path / "m.onnx", [helper.make_node("Elu", ["x"], ["y"], name="act")],
                       [_value("x", [1, 3, 4, 4])], [_value("y", [1, 3, 4, 4])])
    with pytest.raises(ConversionError, match=r"node act \(Elu\): operator Elu is not "
                                              r"supported; cnnext converts Conv, MaxPool"):
        from_onnx(path)
    path = _graph_file(tmp_path / "a.onnx", [
        helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                         unknown_attribute=3)],
        [_value("x", [1, 3, 4, 4])], [_value("y", [1, 3, 2, 2])])
    with pytest.raises(ConversionError, match=r"node pool \(MaxPool\): attribute\(s\) "
                                              r"\['unknown_attribute'\] are not supported"):
        from_onnx(path)
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    path = _graph_file(tmp_path / "c.onnx", [
        helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_MIDDLE")],
        [_value("x", [1, 3, 4, 4])], [_value("y", [1, 2, 4, 4])], [w])
    with pytest.raises(ConversionError, match="auto_pad 'SAME_MIDDLE' is not one of"):
        from_onnx(path)
    path = _graph_file(tmp_path / "d.onnx", [
        helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
        [_value("x", [1, 3, 4, 4]), _value("w", [2, 3, 3, 3])], [_value("y", [1, 2, 2, 2])])
    with pytest.raises(ConversionError, match="2 input"):
        from_onnx(path)
    custom = _graph_file(tmp_path / "e.onnx", [
        helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.example")],
        [_value("x", [1, 4])], [_value("y", [1, 4])],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(ConversionError, match=r"operator domain 'com\.example'"):
        from_onnx(custom)


def test_a_graph_that_is_not_a_chain_is_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r1"),
             helper.make_node("Relu", ["x"], ["b"], name="r2"),
             helper.make_node("Relu", ["x"], ["c"], name="r3"),
             helper.make_node("Add", ["a", "b"], ["d"], name="add1"),
             helper.make_node("Add", ["d", "c"], ["y"], name="add2")]
    path = _graph_file(tmp_path / "m.onnx", nodes, [_value("x", [1, 4])], [_value("y", [1, 4])])
    with pytest.raises(ConversionError, match=r"value 'x' is read by r1 \(Relu\), r2 \(Relu\), "
                                              r"r3 \(Relu\)"):
        from_onnx(path)


# ------------------------------------------------------------- hostile files

def _bounded(call, limit_bytes=16 << 20):
    """Run ``call`` (which must raise ConversionError) with allocations traced: the
    peak stays under ``limit_bytes`` whatever the file declares."""
    tracemalloc.start()
    try:
        with pytest.raises(ConversionError) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit_bytes, peak
    return str(info.value)


def _lenet_bytes(tmp_path):
    path = tmp_path / "good.onnx"
    to_onnx(models.lenet5(seed=13), path)
    return path.read_bytes()


def test_truncated_empty_and_garbage_files(tmp_path):
    data = _lenet_bytes(tmp_path)
    cases = {"truncated.onnx": data[: len(data) // 2], "empty.onnx": b"",
             "garbage.onnx": bytes(range(256)) * 64, "text.onnx": b"not a model\n" * 100}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        message = _bounded(lambda path=path: from_onnx(path))
        assert str(path) in message
        assert "not an ONNX model" in message or "declares" in message, message
    with pytest.raises(FileNotFoundError):
        from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ConversionError, match="not a regular file"):
        from_onnx(tmp_path)


def test_huge_declared_tensors_are_refused_before_any_allocation(tmp_path):
    for dims, raw in (([2**40], b"\0" * 16), ([2**20, 2**20, 8], b""), ([3, 4], b"\0" * 8)):
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims, raw_data=raw)
        path = _graph_file(tmp_path / "huge.onnx",
                           [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                           [_value("x", [1, 4])], [_value("y", [1, 4])], [tensor])
        message = _bounded(lambda path=path: from_onnx(path))
        assert "tensor 'w' declares shape" in message
    negative = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[-1], raw_data=b"")
    path = _graph_file(tmp_path / "neg.onnx",
                       [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                       [_value("x", [1, 4])], [_value("y", [1, 4])], [negative])
    assert "negative dimension" in _bounded(lambda: from_onnx(path))


def _varint(value):
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_deeply_nested_graphs_are_refused(tmp_path):
    """Graphs inside attributes inside nodes inside graphs, 500 deep (wire format by hand:
    the protobuf library refuses to build it)."""
    graph = b""
    for _ in range(500):
        attribute = _field(1, b"then_branch") + _field(6, graph)  # AttributeProto.name, .g
        graph = _field(1, _field(5, attribute))  # GraphProto.node, NodeProto.attribute
    path = tmp_path / "deep.onnx"
    path.write_bytes(b"\x08\x07" + _field(7, graph))  # ModelProto.ir_version, .graph
    assert "not an ONNX model, or a truncated or corrupt one" in _bounded(
        lambda: from_onnx(path))


def test_cycles_and_undefined_values_are_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["x", "b"], ["a"], name="one"),
             helper.make_node("Relu", ["a"], ["b"], name="two"),
             helper.make_node("Relu", ["b"], ["y"], name="three")]
    path = _graph_file(tmp_path / "cycle.onnx", nodes, [_value("x", [1, 4])],
                       [_value("y", [1, 4])])
    assert "cycle through node one (Relu)" in _bounded(lambda: from_onnx(path))
    nodes = [helper.make_node("Relu", ["nothing"], ["y"], name="lost")]
    path = _graph_file(tmp_path / "undefined.onnx", nodes, [_value("x", [1, 4])],
                       [_value("y", [1, 4])])
    assert "uses 'nothing', which no node" in _bounded(lambda: from_onnx(path))
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"),
             helper.make_node("Relu", ["x"], ["y"], name="b")]
    path = _graph_file(tmp_path / "twice.onnx", nodes, [_value("x", [1, 4])],
                       [_value("y", [1, 4])])
    assert "value 'y' is defined twice" in _bounded(lambda: from_onnx(path))


def _external(tmp_path, location, offset=0, length=64, name="model.onnx"):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return _graph_file(tmp_path / name, [helper.make_node("MatMul", ["x", "w"], ["y"],
                                                          name="mm")],
                       [_value("x", [1, 4])], [_value("y", [1, 4])], [tensor])


def test_external_data_is_read_only_inside_the_model_folder(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(16, dtype=np.float32).tobytes())
    for location in ("../secret.bin", str(secret), "sub/../../secret.bin"):
        message = _bounded(lambda location=location: from_onnx(_external(folder, location)))
        assert "outside the model's folder" in message or "only relative paths" in message
    (folder / "link.bin").symlink_to(secret)
    assert "outside the model's folder" in _bounded(
        lambda: from_onnx(_external(folder, "link.bin")))
    weights = folder / "weights.bin"
    weights.write_bytes(np.arange(16, dtype=np.float32).tobytes())
    assert "holds bytes [0, 32)" in _bounded(
        lambda: from_onnx(_external(folder, "weights.bin", length=32)))
    assert "holds bytes [32, 96)" in _bounded(
        lambda: from_onnx(_external(folder, "weights.bin", offset=32)))
    assert "does not exist" in _bounded(lambda: from_onnx(_external(folder, "gone.bin")))
    (folder / "dir.bin").mkdir()
    assert "not a regular file" in _bounded(lambda: from_onnx(_external(folder, "dir.bin")))
    # The same reference inside the folder, with the right size, is read.
    model = from_onnx(_external(folder, "weights.bin"))
    np.testing.assert_array_equal(model.layers[0].params["weight"],
                                  np.arange(16, dtype=np.float32).reshape(4, 4).T)


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path):
    from cnnext.interop import _onnx_file

    path = tmp_path / "big.onnx"
    path.write_bytes(_lenet_bytes(tmp_path))
    with pytest.raises(ConversionError, match="more than the 1000 an ONNX model may have"):
        _onnx_file.read_model(path, max_bytes=1000)
    assert _onnx_file.MAX_FILE_BYTES == 2**31 - 1


# ------------------------------------------------------------- cnnext convert

def _cli(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-P", "-m", "cnnext", "convert", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300, check=False)


def test_cnnext_convert_both_ways(tmp_path):
    from cnnext import load_model

    model = models.lenet5(seed=14)
    model.save(tmp_path / "lenet5.npz")
    done = _cli("lenet5.npz", "lenet5.onnx", "--output", "probabilities", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("lenet5.npz -> lenet5.onnx: 12 layer(s), 61,706 parameters")
    x = _rng(15).standard_normal((3, 1, 28, 28)).astype(np.float32)
    _assert_close(_ort(tmp_path / "lenet5.onnx", x), model.predict(x))
    done = _cli("lenet5.onnx", "back.npz", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "its final Softmax is what predict applies" in done.stdout
    back = load_model(tmp_path / "back.npz")
    for key, array in model.parameters().items():
        np.testing.assert_array_equal(back.parameters()[key], array)


def test_cnnext_convert_errors_are_one_line(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07junk")
    done = _cli("bad.onnx", "out.npz", cwd=tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("python -m cnnext convert: error: ConversionError: bad.onnx: not an "
                           "ONNX model, or a truncated or corrupt one")
    assert "Traceback" not in done.stderr and not (tmp_path / "out.npz").exists()
    done = _cli("bad.onnx", "out.txt", cwd=tmp_path)
    assert done.returncode == 2
    assert "cannot convert bad.onnx to out.txt: give MODEL.onnx OUT.npz or MODEL.npz OUT.onnx" \
        in done.stderr
    done = _cli("bad.onnx", "out.npz", "--opset", "17", cwd=tmp_path)
    assert done.returncode == 2 and "--output and --opset apply to conversions to ONNX" \
        in done.stderr
    done = _cli("bad.onnx", "out.npz", "--input-shape", "1,x", cwd=tmp_path)
    assert done.returncode == 2 and "--input-shape" in done.stderr

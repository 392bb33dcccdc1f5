"""torch.nn <-> cnnext, module by module, weights copied bitwise.

``from_torch`` maps an ``nn.Sequential`` (nested ones flattened) of
supported modules directly; any other module is traced with ``torch.fx``
and its graph goes through the same walker as ONNX graphs (``_graph``), so
a module whose ``forward`` adds two branches becomes a ``Residual``.
``to_torch`` builds the ``nn.Sequential`` whose state_dict has the keys of
the cnnext model's (``Residual`` as a module with ``block`` and
``shortcut``), using the small modules of ``_torch_modules`` where PyTorch
has none (one-sided padding).  torch is imported only when they are called.
"""

import operator
from typing import Any

import numpy as np

from .. import layers as L
from ..model import Sequential
from ._errors import ConversionError, require
from ._graph import Op, Walker

SUPPORTED = ("Conv1d, Conv2d, MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, AdaptiveAvgPool2d(1), "
             "BatchNorm2d, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Linear, Dropout, Identity, "
             "nn.Sequential, and modules whose forward chains these and adds two branches")


def _torch():
    return require("torch", "torch")


def _array(tensor):
    return tensor.detach().cpu().numpy()


def _dtype_name(torch, tensor, where):
    if tensor.dtype == torch.float32:
        return "float32"
    if tensor.dtype == torch.float64:
        return "float64"
    raise ConversionError(f"from_torch: {where} has dtype {tensor.dtype}; cnnext computes in "
                          f"float32 or float64")


def from_torch(module: Any, input_shape: tuple[int, ...]) -> Sequential:
    """from_torch(module, input_shape)

    A cnnext ``Sequential`` computing what the torch module computes in
    evaluation mode, with its weights (bitwise) and, for BatchNorm, its
    running statistics.

    Parameters
    ----------
    module : torch.nn.Module
        An ``nn.Sequential`` of supported modules, or a module whose forward
        ``torch.fx`` can trace into a chain of them with skip connections
        (``block(x) + shortcut(x)``).
    input_shape : tuple of int
        One example's shape: (C, H, W), (C, L) for 1-D modules (the cnnext
        model then takes (N, C, 1, L) batches), or (features,).

    Returns
    -------
    Sequential, in evaluation mode.
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch: module must be a torch.nn.Module, got "
                        f"{type(module).__name__}")
    if not isinstance(input_shape, (tuple, list)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
            for d in input_shape) or len(input_shape) not in (1, 2, 3):
        raise ValueError(f"from_torch: input_shape must be (C, H, W), (C, L) or (features,) "
                         f"of positive ints, got {input_shape!r}")
    importer = _Importer(torch, len(input_shape) == 2)
    shape = [int(d) for d in input_shape]
    if importer.one_d:
        shape = [shape[0], 1, shape[1]]
    start = list(shape)
    layers, shape = importer.sequence(module, shape, "module")
    if not layers:
        raise ConversionError("from_torch: the module computes nothing cnnext has a layer for")
    model = Sequential(layers, input_shape=tuple(start))
    model.dtype = np.dtype(importer.dtype or "float32")
    if hasattr(model, "eval"):
        model.eval()
    return model


class _Importer:
    def __init__(self, torch, one_d):
        self.torch, self.nn, self.one_d = torch, torch.nn, one_d
        self.dtype = None

    def sequence(self, module, shape, where):
        """Layers for ``module`` (a Sequential, a leaf, or anything fx traces)."""
        nn = self.nn
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            layers = []
            i = 0
            while i < len(children):
                name, child = children[i]
                following = children[i + 1][1] if i + 1 < len(children) else None
                new, shape, used = self.module(child, shape, f"{where}.{name}", following)
                layers += new
                i += 1 + used
            return layers, shape
        if self._is_leaf(module):
            layers, shape, _ = self.module(module, shape, where, None)
            return layers, shape
        return self._traced(module, shape, where)

    def _is_leaf(self, module):
        return type(module).__name__ in _LEAVES or self._is_residual(module)

    def _is_residual(self, module):
        from . import _torch_modules

        return isinstance(module, _torch_modules.Residual)

    def module(self, module, shape, where, following):
        """(layers, shape, how many following siblings were used) for one child."""
        nn = self.nn
        if isinstance(module, nn.Sequential):
            layers, shape = self.sequence(module, shape, where)
            return layers, shape, 0
        if self._is_residual(module):
            block, out = self.sequence(module.block, shape, f"{where}.block")
            shortcut = None
            if module.shortcut is not None:
                shortcut, other = self.sequence(module.shortcut, shape, f"{where}.shortcut")
                if tuple(other) != tuple(out):
                    raise ConversionError(f"from_torch: {where}: block and shortcut give shapes "
                                          f"{tuple(out)} and {tuple(other)}")
            return [self._layer("Residual")(block, shortcut or None)], out, 0
        kind = type(module).__name__
        convert = getattr(self, f"_{kind}", None)
        if convert is None:
            if kind in _LEAVES:
                convert = getattr(self, f"_{_LEAVES[kind]}")
            elif not type(module).__module__.startswith("torch."):
                # A module of the user's own: its forward says what it computes.
                layers, shape = self._traced(module, shape, where)
                return layers, shape, 0
            else:
                raise ConversionError(f"from_torch: {where} ({kind}) is not supported; cnnext "
                                      f"converts {SUPPORTED}")
        result = convert(module, shape, where, following)
        return result if len(result) == 3 else (*result, 0)

    # --------------------------------------------------------- fx graphs
    def _traced(self, module, shape, where):
        import torch.fx

        try:
            graph = torch.fx.symbolic_trace(module)
        except Exception as exc:  # fx raises many kinds of errors on dynamic code
            raise ConversionError(f"from_torch: {where} ({type(module).__name__}) cannot be "
                                  f"traced by torch.fx ({type(exc).__name__}: {exc}); cnnext "
                                  f"converts {SUPPORTED}") from None
        ops, source, output = [], None, None
        for node in graph.graph.nodes:
            if node.op == "placeholder":
                if source is not None:
                    raise ConversionError(f"from_torch: {where} takes several inputs")
                source = node.name
            elif node.op == "output":
                args = node.args[0]
                if not isinstance(args, torch.fx.Node):
                    raise ConversionError(f"from_torch: {where} returns {args!r}, not one "
                                          f"tensor")
                output = args.name
            else:
                inputs = [a.name for a in node.args if isinstance(a, torch.fx.Node)]
                inputs += [a.name for a in node.kwargs.values() if isinstance(a, torch.fx.Node)]
                kind = _fx_kind(node)
                ops.append(Op(kind, node.name, inputs, [node.name], node,
                              {"graph": graph}))
        walker = Walker(ops, output, lambda op, value, shape: self._fx_op(op, value, shape,
                                                                            where, walker),
                        lambda block, shortcut, merge: self._layer("Residual")(block, shortcut),
                        f"from_torch: {where}")
        layers, _, shape, merge = walker.chain(source, shape)
        if merge is not None:
            raise ConversionError(f"from_torch: {where}: {merge.name} adds the input to "
                                  f"something else at the top level")
        return layers, shape

    def _fx_op(self, op, value, shape, where, walker):
        node = op.node
        if node.op == "call_module":
            module = op.extra["graph"].get_submodule(node.target)
            following = None
            after = walker.single_user(node.name)
            if after is not None and after.node.op == "call_module":
                following = op.extra["graph"].get_submodule(after.node.target)
            layers, shape, used = self.module(module, shape, f"{where}.{node.target}",
                                              following)
            if used:
                return layers, after.outputs[0], shape
            return layers, node.name, shape
        target = node.target
        if node.op == "call_function" and target in (self.torch.relu,
                                                     self.torch.nn.functional.relu):
            return self._emit([L.ReLU()], shape, f"{where}.{node.name}")[0], node.name, shape
        if (node.op == "call_function" and target is self.torch.flatten) or (
                node.op == "call_method" and target == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                raise ConversionError(f"from_torch: {where}.{node.name}: flatten({start}, {end})"
                                      f"; cnnext flattens (N, ...) to (N, features)")
            layers, shape = self._emit([L.Flatten()], shape, f"{where}.{node.name}")
            return layers, node.name, shape
        raise ConversionError(f"from_torch: {where}: {node.op} {_fx_name(target)} "
                              f"({node.name}) is not supported; cnnext converts {SUPPORTED}")

    # ------------------------------------------------------------ helpers
    def _layer(self, name):
        cls = getattr(L, name, None)
        if cls is None:
            raise ConversionError(f"from_torch: this cnnext has no {name} layer")
        return cls

    def _claim(self, tensor, where):
        name = _dtype_name(self.torch, tensor, where)
        if self.dtype is None:
            self.dtype = name
        elif name != self.dtype:
            raise ConversionError(f"from_torch: {where} has {name} weights, the modules before "
                                  f"it {self.dtype}")
        return name

    def _emit(self, layers, shape, where):
        for layer in layers:
            try:
                shape = list(layer.output_shape(tuple(shape)))
            except ValueError as exc:
                raise ConversionError(f"from_torch: {where} does not take inputs of shape "
                                      f"{tuple(shape)}: {exc}") from None
        return layers, shape

    def _spatial(self, value, where):
        value = tuple(value) if isinstance(value, (tuple, list)) else (value,) * (
            1 if self.one_d else 2)
        if self.one_d:
            if len(value) != 1:
                raise ConversionError(f"from_torch: {where}: {value} on a 1-D input")
            return (1, int(value[0]))
        return tuple(int(v) for v in value)

    def _check_rank(self, module, where, one_d):
        if one_d != self.one_d:
            raise ConversionError(f"from_torch: {where} ({type(module).__name__}) on a "
                                  f"{'1' if self.one_d else '2'}-D input (input_shape)")

    # ---------------------------------------------------------- converters
    def _conv(self, module, shape, where, following):
        self._check_rank(module, where, isinstance(module, self.nn.Conv1d))
        if module.padding_mode != "zeros":
            raise ConversionError(f"from_torch: {where}: padding_mode {module.padding_mode!r}; "
                                  f"cnnext pads with zeros")
        dtype = self._claim(module.weight, where)
        kernel = self._spatial(module.kernel_size, where)
        stride = self._spatial(module.stride, where)
        dilation = self._spatial(module.dilation, where)
        if hasattr(module, "pads"):  # to_torch's PaddedConv2d
            left, right, top, bottom = module.pads
            padding = ((top, bottom), (left, right))
        elif isinstance(module.padding, str):
            if module.padding == "valid":
                padding = (0, 0)
            else:  # "same": PyTorch puts the odd one at the end
                sides = []
                for k, d in zip(kernel, dilation, strict=True):
                    total = d * (k - 1)
                    sides.append((total // 2, total - total // 2))
                padding = tuple(sides)
        else:
            padding = self._spatial(module.padding, where)
            if self.one_d:
                padding = (0, padding[1])
        weight = _array(module.weight)
        if self.one_d:
            weight = weight[:, :, None, :]
        kwargs = {"groups": module.groups} if module.groups != 1 else {}
        layer = L.Conv2D(module.in_channels, module.out_channels, kernel, stride=stride,
                         padding=padding, dilation=dilation, bias=module.bias is not None,
                         dtype=dtype, **kwargs)
        layer.params["weight"][...] = weight
        if module.bias is not None:
            layer.params["bias"][...] = _array(module.bias)
        return self._emit([layer], shape, where)

    def _pool(self, module, shape, where, following, average):
        self._check_rank(module, where, type(module).__name__.endswith("1d"))
        kernel = self._spatial(module.kernel_size, where)
        stride = self._spatial(module.stride if module.stride is not None else
                               module.kernel_size, where)
        padding = self._spatial(module.padding, where)
        if self.one_d:
            padding = (0, padding[1])
        options = {"ceil_mode": bool(module.ceil_mode)}
        if average:
            if getattr(module, "divisor_override", None) is not None:
                raise ConversionError(f"from_torch: {where}: divisor_override is not "
                                      f"supported")
            options["count_include_pad"] = bool(module.count_include_pad)
            layer = L.AvgPool2D(kernel, stride, padding, **options)
        else:
            if module.return_indices:
                raise ConversionError(f"from_torch: {where}: return_indices=True (two "
                                      f"outputs)")
            layer = L.MaxPool2D(kernel, stride, padding,
                                dilation=self._spatial(module.dilation, where), **options)
        return self._emit([layer], shape, where)

    def _padded_pool(self, module, shape, where, following):
        # to_torch's PaddedMaxPool2d / PaddedAvgPool2d
        left, right, top, bottom = module.pads
        padding = ((top, bottom), (left, right))
        if type(module).__name__ == "PaddedAvgPool2d":
            layer = L.AvgPool2D(module.kernel_size, module.stride, padding)
        else:
            layer = L.MaxPool2D(module.kernel_size, module.stride, padding,
                                dilation=module.dilation)
        return self._emit([layer], shape, where)

    def _max_pool(self, module, shape, where, following):
        return self._pool(module, shape, where, following, average=False)

    def _avg_pool(self, module, shape, where, following):
        return self._pool(module, shape, where, following, average=True)

    def _AdaptiveAvgPool2d(self, module, shape, where, following):
        size = module.output_size
        if size not in (1, (1, 1), [1, 1]):
            raise ConversionError(f"from_torch: {where}: AdaptiveAvgPool2d({size}); cnnext "
                                  f"converts output size 1 (global average pooling)")
        flatten = following is not None and type(following).__name__ == "Flatten" and (
            following.start_dim, following.end_dim) == (1, -1)
        global_pool = getattr(L, "GlobalAvgPool2D", None)
        if flatten and global_pool is not None:
            layers, shape = self._emit([global_pool()], shape, where)
            return layers, shape, 1
        return self._emit([L.AvgPool2D(tuple(shape[1:]))], shape, where)

    def _BatchNorm2d(self, module, shape, where, following):
        if not module.track_running_stats or module.running_mean is None:
            raise ConversionError(f"from_torch: {where}: BatchNorm2d without running "
                                  f"statistics")
        dtype = self._claim(module.running_mean, where)
        layer = self._layer("BatchNorm2D")(module.num_features, eps=module.eps,
                                           momentum=module.momentum, affine=module.affine,
                                           dtype=dtype)
        if module.affine:
            layer.params["weight"][...] = _array(module.weight)
            layer.params["bias"][...] = _array(module.bias)
        layer.buffers["running_mean"][...] = _array(module.running_mean)
        layer.buffers["running_var"][...] = _array(module.running_var)
        if "num_batches_tracked" in layer.buffers and module.num_batches_tracked is not None:
            layer.buffers["num_batches_tracked"][...] = int(module.num_batches_tracked)
        return self._emit([layer], shape, where)

    def _ReLU(self, module, shape, where, following):
        return self._emit([L.ReLU()], shape, where)

    def _LeakyReLU(self, module, shape, where, following):
        return self._emit([self._layer("LeakyReLU")(negative_slope=module.negative_slope)],
                          shape, where)

    def _Sigmoid(self, module, shape, where, following):
        return self._emit([self._layer("Sigmoid")()], shape, where)

    def _Tanh(self, module, shape, where, following):
        return self._emit([self._layer("Tanh")()], shape, where)

    def _Flatten(self, module, shape, where, following):
        if (module.start_dim, module.end_dim) != (1, -1):
            raise ConversionError(f"from_torch: {where}: Flatten({module.start_dim}, "
                                  f"{module.end_dim}); cnnext flattens (N, ...) to "
                                  f"(N, features)")
        return self._emit([L.Flatten()], shape, where)

    def _Linear(self, module, shape, where, following):
        dtype = self._claim(module.weight, where)
        layer = L.Dense(module.in_features, module.out_features, bias=module.bias is not None,
                        dtype=dtype)
        layer.params["weight"][...] = _array(module.weight)
        if module.bias is not None:
            layer.params["bias"][...] = _array(module.bias)
        return self._emit([layer], shape, where)

    def _Dropout(self, module, shape, where, following):
        dropout = getattr(L, "Dropout", None)
        return self._emit([dropout(module.p)] if dropout is not None else [], shape, where)

    def _Identity(self, module, shape, where, following):
        return [], shape


_LEAVES = {"Conv1d": "conv", "Conv2d": "conv", "MaxPool1d": "max_pool", "MaxPool2d": "max_pool",
           "AvgPool1d": "avg_pool", "AvgPool2d": "avg_pool", "AdaptiveAvgPool2d":
           "AdaptiveAvgPool2d", "BatchNorm2d": "BatchNorm2d", "ReLU": "ReLU",
           "LeakyReLU": "LeakyReLU", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Flatten": "Flatten",
           "Linear": "Linear", "Dropout": "Dropout", "Identity": "Identity",
           "PaddedConv2d": "conv", "PaddedMaxPool2d": "padded_pool",
           "PaddedAvgPool2d": "padded_pool"}


def _fx_kind(node):
    """The Op kind of an fx node: Add for the additions of two tensors."""
    import torch

    if node.op in ("call_function", "call_method") and node.target in (
            operator.add, torch.add, "add", operator.iadd) and sum(
            isinstance(a, type(node)) for a in node.args) == 2 and not node.kwargs:
        return "Add"
    return node.op if node.op != "call_module" else "module"


def _fx_name(target):
    return getattr(target, "__name__", str(target))


# ------------------------------------------------------------------ to_torch

def to_torch(model: Sequential) -> Any:
    """to_torch(model)

    The ``torch.nn.Sequential`` computing what the cnnext ``model`` computes,
    with its weights (bitwise), in evaluation mode, of the model's dtype.
    Its ``state_dict()`` has the keys of the cnnext model's (a Residual is a
    module with ``block`` and ``shortcut``).
    """
    torch = _torch()
    layers = getattr(model, "layers", None)
    if not isinstance(layers, list) or not layers:
        raise TypeError(f"to_torch: model must be a cnnext Sequential, got "
                        f"{type(model).__name__}")
    dtype = torch.float64 if np.dtype(model.dtype) == np.float64 else torch.float32
    # Modules are built in the model's dtype, so the weights are copied, not rounded.
    module = torch.nn.Sequential(*[_module(torch, layer, str(i), dtype)
                                   for i, layer in enumerate(layers)])
    return module.eval()


def _tensor(torch, array):
    return torch.from_numpy(np.array(array, copy=True))


def _module(torch, layer, where, dtype):
    from . import _torch_modules as M

    nn = torch.nn
    kind = type(layer).__name__
    if kind == "Conv2D":
        groups = getattr(layer, "groups", 1)
        common = dict(stride=layer.stride, dilation=layer.dilation, groups=groups,
                      bias=layer.bias, dtype=dtype)
        if isinstance(layer.padding[0], tuple):
            (top, bottom), (left, right) = layer.padding
            module = M.PaddedConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                    pads=(left, right, top, bottom), **common)
        else:
            module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                               padding=layer.padding, **common)
        with torch.no_grad():
            module.weight.copy_(_tensor(torch, layer.params["weight"]))
            if layer.bias:
                module.bias.copy_(_tensor(torch, layer.params["bias"]))
        return module
    if kind in ("MaxPool2D", "AvgPool2D"):
        return _pool_module(torch, layer, where)
    if kind == "Dense":
        module = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias, dtype=dtype)
        with torch.no_grad():
            module.weight.copy_(_tensor(torch, layer.params["weight"]))
            if layer.bias:
                module.bias.copy_(_tensor(torch, layer.params["bias"]))
        return module
    if kind == "BatchNorm2D":
        module = nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                                affine=layer.affine, dtype=dtype)
        with torch.no_grad():
            if layer.affine:
                module.weight.copy_(_tensor(torch, layer.params["weight"]))
                module.bias.copy_(_tensor(torch, layer.params["bias"]))
            module.running_mean.copy_(_tensor(torch, layer.buffers["running_mean"]))
            module.running_var.copy_(_tensor(torch, layer.buffers["running_var"]))
            if "num_batches_tracked" in layer.buffers:
                module.num_batches_tracked.fill_(int(layer.buffers["num_batches_tracked"]))
        return module
    simple = {"ReLU": lambda: nn.ReLU(), "Flatten": lambda: nn.Flatten(),
              "Sigmoid": lambda: nn.Sigmoid(), "Tanh": lambda: nn.Tanh(),
              "LeakyReLU": lambda: nn.LeakyReLU(layer.negative_slope),
              "Dropout": lambda: nn.Dropout(layer.p),
              "GlobalAvgPool2D": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())}
    if kind in simple:
        return simple[kind]()
    if kind == "Residual":
        block = nn.Sequential(*[_module(torch, inner, f"{where}.block.{i}", dtype)
                                for i, inner in enumerate(layer.block)])
        shortcut = None if layer.shortcut is None else nn.Sequential(
            *[_module(torch, inner, f"{where}.shortcut.{i}", dtype)
              for i, inner in enumerate(layer.shortcut)])
        return M.Residual(block, shortcut)
    raise ConversionError(f"to_torch: layer {where} ({layer!r}) has no torch.nn counterpart "
                          f"here")


def _pool_module(torch, layer, where):
    from . import _torch_modules as M

    nn = torch.nn
    average = type(layer).__name__ == "AvgPool2D"
    padding = layer.padding
    sides = padding if isinstance(padding[0], tuple) else tuple((p, p) for p in padding)
    plain = all(before == after and 2 * before <= k
                for (before, after), k in zip(sides, layer.kernel_size, strict=True))
    ceil_mode = bool(layer.ceil_mode)
    if average and tuple(layer.dilation) != (1, 1):
        raise ConversionError(f"to_torch: layer {where} ({layer!r}): PyTorch's average pooling "
                              f"has no dilation")
    if plain:
        symmetric = tuple(before for before, _ in sides)
        if average:
            return nn.AvgPool2d(layer.kernel_size, layer.stride, symmetric, ceil_mode=ceil_mode,
                                count_include_pad=bool(layer.count_include_pad))
        return nn.MaxPool2d(layer.kernel_size, layer.stride, symmetric, layer.dilation,
                            ceil_mode=ceil_mode)
    if ceil_mode or (average and not layer.count_include_pad):
        raise ConversionError(f"to_torch: layer {where} ({layer!r}): one-sided padding or "
                              f"padding over half the kernel with ceil_mode or "
                              f"count_include_pad=False has no PyTorch module")
    (top, bottom), (left, right) = sides
    pads = (left, right, top, bottom)
    if average:
        return M.PaddedAvgPool2d(layer.kernel_size, layer.stride, pads)
    return M.PaddedMaxPool2d(layer.kernel_size, layer.stride, pads, layer.dilation)

"""Residual: output = block(x) + shortcut(x), for ResNet- and MobileNet-style nets."""

import numpy as np

from .base import Layer, has_compiled_steps


def _layer_list(owner, name, value):
    """A layer or a non-empty list of layers, as a list."""
    if isinstance(value, Layer):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{owner}: {name} must be a layer or a list of layers, got "
                        f"{type(value).__name__}")
    if not value:
        raise ValueError(f"{owner}: {name} must hold at least one layer"
                         + (" (shortcut=None is the identity)" if name == "shortcut" else ""))
    for i, layer in enumerate(value):
        if not isinstance(layer, Layer):
            raise TypeError(f"{owner}: {name}[{i}] is a {type(layer).__name__}, not a cnnext "
                            f"layer")
    return list(value)


def _named(prefix, layers, attribute):
    return {f"{prefix}.{i}.{name}": array for i, layer in enumerate(layers)
            for name, array in getattr(layer, attribute).items()}


class Residual(Layer):
    """Residual(block, shortcut=None)

    ``block(x) + shortcut(x)``: the skip connection of residual networks.

    ``block`` and ``shortcut`` are a layer or a list of layers applied in
    order; ``shortcut=None`` is the identity, so the block must keep the
    shape of its input.  A Residual is one layer of a ``Sequential`` (and may
    hold Residuals itself), so ResNet- and MobileNet-style nets are plain
    lists::

        Residual([Conv2D(16, 16, 3, padding=1, bias=False), BatchNorm2D(16), ReLU(),
                  Conv2D(16, 16, 3, padding=1, bias=False), BatchNorm2D(16)])

    Parameters
    ----------
    block : Layer or list of Layer
    shortcut : None, Layer or list of Layer
        A list holds at least one layer; no layer may appear twice.

    Attributes
    ----------
    block, shortcut : list of Layer, or None for an identity shortcut
    params, grads, buffers : dict
        Those of the layers held, named "block.<i>.<name>" and
        "shortcut.<i>.<name>": in a ``Sequential``'s ``state_dict`` they are
        the keys of a PyTorch module with ``nn.Sequential`` submodules
        ``block`` and ``shortcut`` (the identity holds no state).
    """

    def __init__(self, block, shortcut=None):
        self._init_done = False
        super().__init__()
        self.block = _layer_list("Residual", "block", block)
        self.shortcut = None if shortcut is None else _layer_list("Residual", "shortcut",
                                                                  shortcut)
        seen = set()
        for leaf in self._leaves():
            if id(leaf) in seen:
                raise ValueError(f"Residual: {leaf!r} appears twice; build a new layer for "
                                 f"each position")
            seen.add(id(leaf))
        dtypes = {leaf.dtype for leaf in self._leaves() if leaf.dtype is not None}
        if len(dtypes) > 1:
            raise TypeError(f"Residual: the layers mix dtypes {sorted(d.name for d in dtypes)}; "
                            f"build them all with the same dtype")
        self.dtype = dtypes.pop() if dtypes else None
        self._init_done = True

    # The state of the layers held, under dotted names, read afresh on each
    # access so that it always shows their current arrays.
    @property
    def params(self):
        return {**_named("block", self.block, "params"),
                **_named("shortcut", self.shortcut or (), "params")}

    @property
    def grads(self):
        return {**_named("block", self.block, "grads"),
                **_named("shortcut", self.shortcut or (), "grads")}

    @property
    def buffers(self):
        return {**_named("block", self.block, "buffers"),
                **_named("shortcut", self.shortcut or (), "buffers")}

    @params.setter
    def params(self, value):
        self._refuse_assignment("params", value)

    @grads.setter
    def grads(self, value):
        self._refuse_assignment("grads", value)

    @buffers.setter
    def buffers(self, value):
        self._refuse_assignment("buffers", value)

    def _refuse_assignment(self, name, value):
        # Layer.__init__ starts every layer with empty dicts; a Residual's come
        # from the layers it holds.
        if self._init_done or value != {}:
            raise AttributeError(f"Residual.{name} is the {name} of the layers it holds; "
                                 f"assign to theirs")

    def state_items(self):
        for prefix, layers in (("block", self.block), ("shortcut", self.shortcut or ())):
            for i, layer in enumerate(layers):
                for name, array in layer.state_items():
                    yield f"{prefix}.{i}.{name}", array

    def _children(self):
        return (*self.block, *(self.shortcut or ()))

    @property
    def _depends_on_mode(self):
        return any(layer._depends_on_mode for layer in self._children())

    def _invalid_buffer(self, name, value):
        prefix, index, inner = name.split(".", 2)
        return getattr(self, prefix)[int(index)]._invalid_buffer(inner, value)

    def config(self):
        def specs(layers):
            return [{"type": type(layer).__name__, "config": layer.config()} for layer in layers]

        return {"block": specs(self.block),
                "shortcut": None if self.shortcut is None else specs(self.shortcut)}

    def __repr__(self):
        def listing(layers):
            return repr(layers[0]) if len(layers) == 1 else \
                "[" + ", ".join(repr(layer) for layer in layers) + "]"

        shortcut = "" if self.shortcut is None else f", shortcut={listing(self.shortcut)}"
        return f"Residual({listing(self.block)}{shortcut})"

    def sublayer_shapes(self, input_shape):
        """[(name, layer, output shape)] of every layer held ("block.0", ...), for
        ``input_shape``; ValueError naming the layer that cannot take its input."""
        rows = []
        ends = {}
        for prefix, layers in (("block", self.block), ("shortcut", self.shortcut)):
            shape = tuple(input_shape)
            for i, layer in enumerate(layers or ()):
                try:
                    shape = tuple(layer.output_shape(shape))
                except ValueError as exc:
                    raise ValueError(f"Residual {prefix}[{i}]: {exc}") from None
                rows.append((f"{prefix}.{i}", layer, shape))
            ends[prefix] = shape
        if ends["block"] != ends["shortcut"]:
            what = "the input" if self.shortcut is None else "the shortcut's output"
            raise ValueError(f"Residual: the block's output has shape {ends['block']} but "
                             f"{what} has shape {ends['shortcut']}; they are added, so they "
                             f"must match")
        return rows

    def output_shape(self, input_shape):
        rows = self.sublayer_shapes(input_shape)
        return next(shape for name, _, shape in reversed(rows) if name.startswith("block"))

    def _forward(self, x, reuse):
        self._cache = (x.shape, x.dtype)
        out = x
        for layer in self.block:
            out = layer._forward(out, reuse)
        side = x
        for layer in self.shortcut or ():
            side = layer._forward(side, reuse)
        y = self._output("y", out.shape, out.dtype, reuse)
        return np.add(out, side, out=y)

    def _backward(self, gy, need_input_grad, reuse):
        g_block = gy
        for i in range(len(self.block) - 1, -1, -1):
            g_block = self.block[i]._backward(g_block, need_input_grad or i > 0, reuse)
        g_side = gy
        for i in range(len(self.shortcut or ()) - 1, -1, -1):
            g_side = self.shortcut[i]._backward(g_side, need_input_grad or i > 0, reuse)
        if not need_input_grad:
            return None
        gx = self._output("gx", self._cache[0], self._cache[1], reuse)
        return np.add(g_block, g_side, out=gx)

    def _build_steps(self, b, x, relu=False):
        # relu: the steps of a ReLU layer after the block too (ReLU applied
        # to the sum as it is stored, its gradient masked by that output).
        if not all(has_compiled_steps(layer) for layer in self._children()):
            return NotImplemented
        where, first = b.index, b.group()
        # Each branch reads x through a view of its own, whose gradient the
        # branch writes; x's gradient is their sum, added last in backward.
        x_block = b.branch(x)
        out = b.build_layers(self.block, x_block, f"{where}.block.")
        x_side = side = x
        if self.shortcut is not None and out is not NotImplemented:
            x_side = b.branch(x)
            side = b.build_layers(self.shortcut, x_side, f"{where}.shortcut.")
        if out is NotImplemented or side is NotImplemented:
            return NotImplemented
        b.layer(where, self)  # the sum, and the backward steps that run first
        y = b.buffer(out.shape)
        b.forward("add", (out, side, y), (y.size, relu))
        if b.gradients:
            if relu:
                gy = b.gradient(out)
                b.backward("relu_backward", (b.gradient(y), y, gy), (y.size,))
            else:
                b.share_gradient(y, out)  # the block's output gradient is y's
                gy = b.gradient(y)
            if self.shortcut is not None:
                b.backward("add", (gy, None, b.gradient(side)), (y.size,))
            gx = b.gradient(x)
            if gx is not None:
                g_side = gy if self.shortcut is None else b.gradient(x_side)
                b.backward("add", (b.gradient(x_block), g_side, gx), (gx.size,), group=first)
        return y

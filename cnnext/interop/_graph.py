"""From a dataflow graph to a list of layers: chains, and forks that meet again as Residuals.

Both importers (ONNX graphs, ``torch.fx`` traces) describe their graph as
``Op`` records: the values an operation reads and writes, and the frontend's
own node for its converter.  ``Walker.chain`` follows the single input value
forward.  A value with one user continues the chain through that user's
converter; a value with two users is a fork, each user starting a branch,
and the two branches must end in the same two-input ``Add`` (the merge):
the branch feeding the Add's first input becomes ``Residual``'s block, the
other its shortcut (an empty branch is the identity shortcut).  Branches may
hold forks of their own, which close first: skip connections nest, as they
do in residual networks.  Anything else (a value with three users, branches
ending in different places, a merge that is not an Add) is refused by name.
"""

from dataclasses import dataclass, field
from typing import Any

from ._errors import ConversionError


@dataclass(eq=False)
class Op:
    kind: str  # "Conv", "Add", ... or a torch module's class name
    name: str  # how messages name the node
    inputs: list  # the values read (constants excluded)
    outputs: list  # the values written
    node: Any = None  # the frontend's node
    extra: dict = field(default_factory=dict)

    @property
    def is_merge(self):
        return self.kind == "Add" and len(self.inputs) == 2


class Walker:
    """Turns a graph of ``Op``s into layers with ``convert(op, value, shape)``.

    ``convert`` returns (layers, the value the chain continues from, its
    per-example shape); it may look ahead through ``single_user`` and take
    several ops at once (a MatMul and the Add of its bias).
    """

    def __init__(self, ops, output, convert, residual, where):
        self.users = {}
        for op in ops:
            for value in op.inputs:
                self.users.setdefault(value, []).append(op)
        self.output, self.convert, self.residual, self.where = output, convert, residual, where

    def single_user(self, value):
        """The one op reading ``value``, or None (no user, several, or the graph's output)."""
        users = self.users.get(value, [])
        return users[0] if len(users) == 1 and value != self.output else None

    def chain(self, value, shape, first=None):
        """Follow ``value`` (through ``first`` when given) to the graph's output or a merge.

        Returns (layers, the last value, its shape, the merge op or None).
        """
        layers = []
        while True:
            users = [first] if first is not None else self.users.get(value, [])
            first = None
            if value == self.output and users:
                raise ConversionError(f"{self.where}: the graph's output {value!r} is also "
                                      f"read by {_names(users)}; cnnext models have one output")
            if not users:
                if value != self.output:
                    raise ConversionError(f"{self.where}: value {value!r} is computed but "
                                          f"neither used nor the graph's output")
                return layers, value, shape, None
            if len(users) == 1:
                op = users[0]
                if op.is_merge:
                    return layers, value, shape, op
                new, value, shape = self.convert(op, value, shape)
                layers += new
                continue
            if len(users) > 2 or users[0] is users[1]:
                raise ConversionError(
                    f"{self.where}: value {value!r} is read by {_names(users)}; cnnext "
                    f"converts chains of layers and skip connections that add two branches "
                    f"(Residual), not other graphs")
            layer, value, shape = self._fork(value, shape, users)
            layers.append(layer)

    def _fork(self, value, shape, users):
        ends = [self.chain(value, shape, first=user) for user in users]
        merge = ends[0][3]
        if merge is None or any(end[3] is not merge for end in ends):
            raise ConversionError(
                f"{self.where}: the two branches from {value!r} (through {_names(users)}) do "
                f"not meet in one Add; cnnext converts skip connections as "
                f"Residual(block, shortcut)")
        by_value = {end[1]: end for end in ends}
        if sorted(by_value) != sorted(merge.inputs):
            raise ConversionError(f"{self.where}: node {merge.name} (Add) does not add the "
                                  f"two branches from {value!r}")
        block, shortcut = by_value[merge.inputs[0]], by_value[merge.inputs[1]]
        if tuple(block[2]) != tuple(shortcut[2]):
            raise ConversionError(f"{self.where}: node {merge.name} (Add) adds shapes "
                                  f"{tuple(block[2])} and {tuple(shortcut[2])}; a Residual's "
                                  f"block and shortcut must give the same shape")
        if not block[0]:
            block, shortcut = shortcut, block
        layer = self.residual(block[0], shortcut[0] or None, merge)
        return layer, merge.outputs[0], block[2]


def _names(ops):
    return ", ".join(f"{op.name} ({op.kind})" for op in ops)

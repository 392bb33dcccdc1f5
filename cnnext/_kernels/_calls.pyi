# Stub of the repeat-call fast paths (_calls.pyx), used by cnnext/_functional.
from typing import Any

CapsuleType = Any  # a PyCapsule (types.CapsuleType from Python 3.13)

OUTPUT_ARRAY: int
OUTPUT_ZEROS: int
OUTPUT_SCALAR: int

def comparable(value: object) -> bool: ...

class Entry:
    def __init__(self, kernel: CapsuleType, operands: Any, outputs: Any, sizes: Any = (),
                 scalars: Any = (), plans: Any = (), keep: Any = (),
                 workspace: tuple[int, Any] | None = None, work_slot: int = -1,
                 extra: object = None) -> None: ...

class Calls:
    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def run(self, operands: tuple[Any, ...], extra: object = None,
            outs: tuple[Any, ...] | None = None) -> Any: ...
    def bound(self, operands: tuple[Any, ...],
              extra: object = None) -> tuple[Any, list[Any], list[int], list[float],
                                             list[Any]] | None: ...
    def remember(self, entry: Entry) -> None: ...
    def clear(self) -> None: ...

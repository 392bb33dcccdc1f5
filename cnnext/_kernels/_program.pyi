# Stub of the compiled executor (_program.pyx): Programs of step kernels and
# the Runner driving a plan's Programs over batches.  cnnext._plans builds
# and validates everything these take.
from typing import Any

import numpy as np
import numpy.typing as npt

CapsuleType = Any  # a PyCapsule (types.CapsuleType from Python 3.13)

STOP_DONE: int
STOP_NON_FINITE: int
STOP_KERNEL: int
MEMO_AXES: int

class Program:
    names: list[str]
    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def add(self, kernel: CapsuleType, arrays: Any = (), sizes: Any = (), scalars: Any = (),
            plans: Any = (), name: str = "") -> None: ...
    def keep(self, *objects: object) -> None: ...
    def run(self) -> tuple[int, int]: ...
    def run_repeated(self, times: int) -> int: ...
    def run_step_repeated(self, index: int, times: int) -> int: ...

def changed(checks: tuple[tuple[Any, Any, Any], ...]) -> int: ...

class Runner:
    def __init__(self, batch: int, elems: int, dtype: str, staged: npt.NDArray[Any],
                 forward: Program, logits: npt.NDArray[Any], *, loss: Program | None = None,
                 labels: npt.NDArray[np.int64] | None = None,
                 loss_value: npt.NDArray[np.float64] | None = None,
                 probabilities: npt.NDArray[Any] | None = None, softmax: Program | None = None,
                 backward: Program | None = None) -> None: ...
    def predict(self, X: npt.NDArray[Any], first: int, batches: int, out: npt.NDArray[Any],
                table: npt.NDArray[Any]) -> tuple[int, int]: ...
    def evaluate(self, X: npt.NDArray[Any], labels: npt.NDArray[np.int64], first: int,
                 batches: int, total: float, correct: int,
                 table: npt.NDArray[Any]) -> tuple[int, int, float, int]: ...
    def train(self, X: npt.NDArray[Any], order: npt.NDArray[np.int64] | None,
              labels: npt.NDArray[np.int64], first: int, batches: int, update: Program | None,
              skip_non_finite: bool, predicted: npt.NDArray[np.intp], total: float,
              counted: int, skipped: int,
              table: npt.NDArray[Any]) -> tuple[int, int, int, float, int, int, float]: ...
    def forward_batch(self, X: npt.NDArray[Any]) -> tuple[int, int]: ...
    def backward_batch(self) -> tuple[int, int]: ...

class PredictMemo:
    def __init__(self, X: npt.NDArray[Any], batch_size: int, result_shape: tuple[int, int],
                 dtype: Any, runs: Any, layer_checks: tuple[tuple[Any, Any, Any], ...],
                 cache: Any, table: npt.NDArray[Any], alike: bool) -> None: ...
    alike: bool
    def run(self, X: Any, batch_size: Any) -> npt.NDArray[Any] | None: ...

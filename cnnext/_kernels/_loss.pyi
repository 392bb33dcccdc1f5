# Stub of the loss kernels; arrays are C-contiguous (rows, classes), checked
# by the callers in cnnext/_functional/loss.py.
from typing import Any

import numpy as np
import numpy.typing as npt

CapsuleType = Any  # a PyCapsule (types.CapsuleType from Python 3.13)

def softmax(x: npt.NDArray[np.floating], out: npt.NDArray[np.floating]) -> None: ...
def softmax_cross_entropy(logits: npt.NDArray[np.floating], labels: npt.NDArray[np.int64],
                          grad: npt.NDArray[np.floating]) -> tuple[float | None, int]: ...

def step_kernels() -> dict[tuple[str, str], CapsuleType]: ...

# Stub of the activation kernels; arrays are flat and C-contiguous, checked
# by the callers in cnnext/_functional/activation.py.
from typing import Any

import numpy as np
import numpy.typing as npt

CapsuleType = Any  # a PyCapsule (types.CapsuleType from Python 3.13)

def relu(x: npt.NDArray[np.floating], y: npt.NDArray[np.floating]) -> None: ...
def relu_backward(gy: npt.NDArray[np.floating], x: npt.NDArray[np.floating],
                  gx: npt.NDArray[np.floating]) -> None: ...

def step_kernels() -> dict[tuple[str, str], CapsuleType]: ...

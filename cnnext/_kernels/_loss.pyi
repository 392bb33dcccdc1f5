# Stub of the loss kernels; arrays are C-contiguous (rows, classes), checked
# by the callers in cnnext/_functional/loss.py.
import numpy as np
import numpy.typing as npt

def softmax(x: npt.NDArray[np.floating], out: npt.NDArray[np.floating]) -> None: ...
def softmax_cross_entropy(logits: npt.NDArray[np.floating], labels: npt.NDArray[np.int64],
                          grad: npt.NDArray[np.floating]) -> tuple[float | None, int]: ...

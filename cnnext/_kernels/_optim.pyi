# Stub of the optimiser update kernels.  Arrays are flat, C-contiguous, of one
# length and dtype; cnnext.optim checks them first.
import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.floating]

def sgd_step(param: _Floats, grad: _Floats, buffer: _Floats | None, lr: float,
             momentum: float, weight_decay: float, nesterov: bool) -> None: ...
def adam_step(param: _Floats, grad: _Floats, exp_avg: _Floats, exp_avg_sq: _Floats,
              step_size: float, bias_correction2_sqrt: float, beta1: float, beta2: float,
              eps: float, weight_decay: float) -> None: ...

# Stub of the optimiser update kernels (_optim_baseline, _optim_x86_64_v3 and
# _optim_x86_64_v4 have this API).  Arrays are flat, C-contiguous, of one
# length and dtype; cnnext.optim checks them first.
import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.floating]

def compiled_isa() -> str: ...

def sgd_step(param: _Floats, grad: _Floats, buffer: _Floats | None, lr: float,
             momentum: float, weight_decay: float, nesterov: bool) -> None: ...
def adam_step(param: _Floats, grad: _Floats, exp_avg: _Floats, exp_avg_sq: _Floats,
              step_size: float, bias_correction2_sqrt: float, beta1: float, beta2: float,
              eps: float, weight_decay: float) -> None: ...

# Stub of the dense-layer kernels (_dense_baseline, _dense_x86_64_v3 and
# _dense_x86_64_v4 have this API).  Arrays are C-contiguous; the callers in
# cnnext/_functional/dense.py check everything first.
import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.floating]

def compiled_isa() -> str: ...

def linear_forward(x: _Floats, w: _Floats, b: _Floats | None, y: _Floats) -> None: ...
def linear_backward_input(gy: _Floats, w: _Floats, gx: _Floats) -> None: ...
def linear_backward_params(gy: _Floats, x: _Floats, alpha: float, accumulate: bool,
                           gw: _Floats, gb: _Floats | None) -> None: ...

# Stub of the pooling kernels (_pool_baseline and _pool_x86_64_v3 have this API).
# Arrays are C-contiguous (N, C, H, W); pairs are (h, w).  The callers in
# cnnext/_functional/pooling.py check everything first.
import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.floating]
_Indices = npt.NDArray[np.int64]
_Pair = tuple[int, int]

def compiled_isa() -> str: ...

def max_pool2d_forward(x: _Floats, y: _Floats, indices: _Indices | None,
                       kernel: _Pair, stride: _Pair, padding: _Pair) -> None: ...
def max_pool2d_backward(gy: _Floats, indices: _Indices, gx: _Floats) -> int: ...
def max_pool2d_backward_all_maxima(gy: _Floats, x: _Floats, y: _Floats, gx: _Floats,
                                   kernel: _Pair, stride: _Pair) -> None: ...
def avg_pool2d_forward(x: _Floats, y: _Floats, kernel: _Pair, stride: _Pair,
                       padding: _Pair) -> None: ...
def avg_pool2d_backward(gy: _Floats, gx: _Floats, kernel: _Pair, stride: _Pair,
                        padding: _Pair) -> None: ...

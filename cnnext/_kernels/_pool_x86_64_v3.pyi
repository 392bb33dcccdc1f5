# Stub of the pooling kernels (every ISA build, _pool_<isa>, has this API).
# Arrays are C-contiguous (N, C, H, W); pairs are (h, w).  The callers in
# cnnext/_functional/pooling.py check everything first.
import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.floating]
_Indices = npt.NDArray[np.int64]
_Pair = tuple[int, int]

def max_pool2d_forward(x: _Floats, y: _Floats, indices: _Indices | None,
                       kernel: _Pair, stride: _Pair, padding: _Pair) -> None: ...
def max_pool2d_backward(gy: _Floats, indices: _Indices, gx: _Floats) -> None: ...
def max_pool2d_backward_all_maxima(gy: _Floats, x: _Floats, y: _Floats, gx: _Floats,
                                   kernel: _Pair, stride: _Pair) -> None: ...
def avg_pool2d_forward(x: _Floats, y: _Floats, kernel: _Pair, stride: _Pair,
                       padding: _Pair) -> None: ...
def avg_pool2d_backward(gy: _Floats, gx: _Floats, kernel: _Pair, stride: _Pair,
                        padding: _Pair) -> None: ...
def first_index_outside(values: _Indices, stop: int) -> int: ...

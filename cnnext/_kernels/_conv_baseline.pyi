import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def compiled_isa() -> str: ...

class Plan:
    output_shape: tuple[int, int, int, int]
    forward_workspace: int
    backward_data_workspace: int
    backward_filter_workspace: int
    def __init__(
        self,
        N: int, C: int, H: int, W: int, K: int, R: int, S: int,
        stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
        itemsize: int, reformulate: bool = True,
    ) -> None: ...
    @property
    def source(self) -> str: ...
    @property
    def forward_lanes(self) -> str: ...
    @property
    def filters_per_tile(self) -> int: ...
    @property
    def data_kernel(self) -> str: ...
    @property
    def filter_kernel(self) -> str: ...

def conv2d_forward(
    plan: Plan, x: FloatArray, w: FloatArray, b: FloatArray | None, y: FloatArray,
    work: FloatArray,
) -> None: ...
def conv2d_backward_data(
    plan: Plan, gy: FloatArray, w: FloatArray, gx: FloatArray, work: FloatArray
) -> None: ...
def conv2d_backward_filter(
    plan: Plan, gy: FloatArray, x: FloatArray, gw: FloatArray, gb: FloatArray, work: FloatArray
) -> None: ...

"""Type aliases of the public API's annotations (read by type checkers, unused at run time)."""

from os import PathLike
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

#: A float32 or float64 array.
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]
#: An int64 array (max-pool indices, labels).
IntArray: TypeAlias = npt.NDArray[np.int64]
#: Anything np.asarray takes.
ArrayLike: TypeAlias = npt.ArrayLike
#: One int for both axes, or (height, width).
IntPair: TypeAlias = int | tuple[int, int]
#: An IntPair, or ((top, bottom), (left, right)) where the two sides differ.
Padding: TypeAlias = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]
#: "float32", "float64", or a NumPy dtype of them.
DTypeLike: TypeAlias = str | np.dtype[Any] | type[np.floating[Any]]
#: None (fresh entropy), an int >= 0, or a Generator.
Seed: TypeAlias = int | np.random.Generator | None
#: A file path.
Path: TypeAlias = str | PathLike[str]

# Stub of the memory-extent test used by cnnext._validation.
import numpy as np

def ranges_overlap(array: np.ndarray, others: tuple[np.ndarray | None, ...]) -> bool: ...

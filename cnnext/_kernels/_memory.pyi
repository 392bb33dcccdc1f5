# Stub of the memory-extent test used by cnnext._functional._checks.
import numpy as np

def ranges_overlap(array: np.ndarray, others: tuple[np.ndarray | None, ...]) -> bool: ...

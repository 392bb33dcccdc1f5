"""cnnext: small, fast convolutional networks on NumPy.

Convolution and pooling kernels are typed Cython; layers, models and
optimisers are plain Python on top of ``cnnext.functional``.
"""

from . import (
    callbacks,
    compat,
    datasets,
    functional,
    history,
    layers,
    losses,
    models,
    optim,
    schedules,
)
from ._checkpoint import CheckpointError
from ._config import get_num_threads, set_num_threads, show_config
from ._tuning import tune
from ._version import __version__
from .model import Sequential, load_model

__all__ = [
    "CheckpointError",
    "Sequential",
    "__version__",
    "callbacks",
    "compat",
    "datasets",
    "functional",
    "get_num_threads",
    "history",
    "layers",
    "load_model",
    "losses",
    "models",
    "optim",
    "schedules",
    "set_num_threads",
    "show_config",
    "tune",
]

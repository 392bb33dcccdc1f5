"""cnnext: small, fast convolutional networks on NumPy.

Convolution and pooling kernels are typed Cython; layers, models and
optimisers are plain Python on top of ``cnnext.functional``.
"""

from ._config import get_num_threads, set_num_threads, show_config
from ._version import __version__

__all__ = ["__version__", "get_num_threads", "set_num_threads", "show_config"]

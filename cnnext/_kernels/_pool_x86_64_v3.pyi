# Same interface as every build of the family (see _pool_baseline.pyi).
from cnnext._kernels._pool_baseline import *  # noqa: F403

# Same interface as every build of the family (see _dense_baseline.pyi).
from cnnext._kernels._dense_baseline import *  # noqa: F403

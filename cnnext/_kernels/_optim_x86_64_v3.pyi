# Same interface as every build of the family (see _optim_baseline.pyi).
from cnnext._kernels._optim_baseline import *  # noqa: F403

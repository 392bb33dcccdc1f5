# Same interface as every build of the family (see _conv_baseline.pyi).
from cnnext._kernels._conv_baseline import *  # noqa: F403

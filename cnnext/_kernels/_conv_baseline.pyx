# The baseline build of the convolution kernels (flags in setup.py, ISA_FLAGS).
include "_conv.pxi"

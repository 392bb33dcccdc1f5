# The x86_64_v4 build of the convolution kernels (flags in setup.py, ISA_FLAGS).
include "_conv.pxi"

# The x86-64-v4 build of the optimiser update kernels (flags in setup.py, ISA_FLAGS).
include "_optim.pxi"

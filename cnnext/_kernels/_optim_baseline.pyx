# The baseline build of the optimiser update kernels (flags in setup.py, ISA_FLAGS).
include "_optim.pxi"

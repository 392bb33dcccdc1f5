# The baseline build of the dense-layer kernels (flags in setup.py, ISA_FLAGS).
include "_dense.pxi"

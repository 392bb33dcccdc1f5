# The baseline build of the pooling kernels (flags in setup.py, ISA_FLAGS).
include "_pool.pxi"

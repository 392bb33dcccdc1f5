# The x86-64-v3 build of the pooling kernels (flags in setup.py, ISA_FLAGS).
include "_pool.pxi"

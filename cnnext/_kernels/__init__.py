"""Compiled kernels (Cython). Private: use ``cnnext.functional``.

A kernel family (``_conv``, ``_dense``, ``_optim``, ``_pool``) is one source,
``<family>.pxi``, compiled by setup.py once per instruction-set level into
modules ending in ``_baseline``, ``_x86_64_v3`` or ``_x86_64_v4`` (setup.py's
``FAMILIES`` table); ``cnnext._dispatch`` imports the best one the CPU runs.
The vector layer they share is the C header ``simd.h`` (``simd.pxd``).
"""

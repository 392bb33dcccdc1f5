"""Compiled kernels (Cython). Private: use ``cnnext.functional``.

Modules ending in ``_baseline``, ``_x86_64_v3`` or ``_x86_64_v4`` are variants
of one kernel family compiled for one instruction-set level each;
``cnnext._dispatch`` imports the best one the CPU runs.
"""

"""Implementation of ``cnnext.functional``, one module per kernel family.

Each public function validates its arguments and allocates its outputs here,
in Python, then calls a compiled kernel that only computes.
"""

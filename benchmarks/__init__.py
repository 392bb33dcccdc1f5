"""asv benchmarks of cnnext (see asv.conf.json at the repository root and README.md here).

The modules here track cnnext alone across commits, one thread, on the named
cases of ``cnnext._bench``; the side-by-side comparison with PyTorch, NumPy
and the notebook is ``cnnext bench`` (``run_suite.py``).
"""

"""asv regression benchmarks: cnnext on the named cases of ``cnnext._bench``, one thread.

Each benchmark times the same call ``cnnext bench`` times (``Bound.run`` of
the cnnext implementation), so asv's history and the comparison table
measure the same thing.  Correctness is checked by ``cnnext bench`` and the
test suite, not here.  A training benchmark times one run of ``steps`` SGD
steps (``train.notebook.b1``: 64 steps of one image; the others: 2 steps).
"""

import contextlib

from cnnext._bench.cases import CASES, CONV_OPS, CONV_SHAPES, DTYPES, POOL_WINDOWS
from cnnext._bench.impls import IMPLEMENTATIONS
from cnnext._bench.timing import pinned_threads


class _Case:
    """Binds ``CASES[case_name(*params)]`` to ``impl`` on one thread in ``setup``."""

    impl = "cnnext"
    timeout = 120

    def case_name(self, *params):
        raise NotImplementedError

    def setup(self, *params):
        case, dtype = CASES[self.case_name(*params)], params[-1]
        implementation = IMPLEMENTATIONS[self.impl]
        if not implementation.supports(case, dtype):
            raise NotImplementedError  # asv skips the combination
        self.threads = contextlib.ExitStack()
        self.threads.enter_context(pinned_threads(1))
        self.bound = implementation.bind(case, dtype, case.make_inputs(dtype), reference={})

    def teardown(self, *params):
        self.threads.close()


class Conv2d(_Case):
    params = (list(CONV_OPS), list(CONV_SHAPES), list(DTYPES))
    param_names = ("op", "shape", "dtype")

    def case_name(self, op, shape, dtype):
        return f"conv2d.{op}.{shape}"

    def time_conv2d(self, op, shape, dtype):
        self.bound.run()


class Pool2d(_Case):
    params = (["max_pool2d", "avg_pool2d"], ["forward", "backward"], list(POOL_WINDOWS),
              list(DTYPES))
    param_names = ("kind", "op", "window", "dtype")

    def case_name(self, kind, op, window, dtype):
        return f"{kind}.{op}.{window}"

    def time_pool2d(self, kind, op, window, dtype):
        self.bound.run()


_TRAIN = [name for name, case in CASES.items() if case.family == "train"]


class TrainFit(_Case):
    params = (_TRAIN, list(DTYPES))
    param_names = ("case", "dtype")

    def case_name(self, case, dtype):
        return case

    def time_fit_steps(self, case, dtype):
        self.bound.run()


class TrainCompat(_Case):
    """The notebook's per-image step through cnnext.compat, 64 images per run."""

    impl = "cnnext.compat"
    params = (["train.notebook.b1"], ["float64"])
    param_names = ("case", "dtype")

    def case_name(self, case, dtype):
        return case

    def time_compat_steps(self, case, dtype):
        self.bound.run()


_PREDICT = [name for name, case in CASES.items() if case.family == "predict"]


class Predict(_Case):
    """``Sequential.predict`` of one batch (1 or 64 images)."""

    params = (_PREDICT, list(DTYPES))
    param_names = ("case", "dtype")

    def case_name(self, case, dtype):
        return case

    def time_predict(self, case, dtype):
        self.bound.run()

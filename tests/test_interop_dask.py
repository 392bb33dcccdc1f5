"""Inference over a dask.array on a dask.distributed cluster, equal to in-process predict.

Models pickle (weights and configuration; plans and buffers are rebuilt where
they run), so ``map_blocks`` can ship one to worker processes.  The cluster
is two worker processes on 127.0.0.1.  Skipped where dask[distributed] is
not installed; .ci/run installs it.
"""

import pickle

import numpy as np
import pytest

from cnnext import models

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


def _predict_block(block, model):
    return model.predict(block, batch_size=len(block))


def test_a_model_pickles_without_its_plans():
    model = models.lenet5(seed=0)
    fresh = len(pickle.dumps(model))
    x = np.random.default_rng(1).standard_normal((256, 1, 28, 28)).astype(np.float32)
    want = model.predict(x)  # builds and caches plans and their buffers
    data = pickle.dumps(model)
    # Weights and gradients (61,706 float32 each) and little else: no plan, no buffer.
    assert len(data) <= fresh + 1024 and len(data) < 2 * 61_706 * 4 + 20_000
    np.testing.assert_array_equal(pickle.loads(data).predict(x), want)


def test_predict_over_a_dask_array_on_two_worker_processes():
    model = models.lenet5(seed=2)
    images = np.random.default_rng(3).uniform(0, 1, (1000, 1, 28, 28)).astype(np.float32)
    chunk = 256
    want = np.concatenate([_predict_block(images[i:i + chunk], model)
                           for i in range(0, len(images), chunk)])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        lazy = da.from_array(images, chunks=(chunk, 1, 28, 28))
        probs = lazy.map_blocks(_predict_block, model, dtype=np.float32, drop_axis=[2, 3],
                                chunks=(lazy.chunks[0], (10,)))
        probs = probs.persist()
        distributed.wait(probs)
        # The blocks were computed, and are held, by the worker processes.
        holders = {worker for where in client.who_has(probs).values() for worker in where}
        assert holders and holders <= set(client.scheduler_info()["workers"])
        got = probs.compute()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_a_model_with_running_statistics_pickles_them():
    """BatchNorm2D's running statistics are state, not plan memory: they travel."""
    model = models.resnet8(seed=4)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    model.fit(x, rng.integers(0, 10, 64), epochs=1, batch_size=32, progress=False, seed=0)
    want = model.eval().predict(x[:8])
    again = pickle.loads(pickle.dumps(model))
    assert not again.training  # the mode travels too
    for (key, value), (_, copied) in zip(model.state_dict().items(),
                                         again.state_dict().items(), strict=True):
        np.testing.assert_array_equal(copied, value, err_msg=key)
    np.testing.assert_array_equal(again.predict(x[:8]), want)

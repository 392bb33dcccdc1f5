"""A user's program, type-checked by mypy --strict against the installed cnnext.

CI runs ``python -m mypy --strict tests/typing/typed_example.py`` from outside
the checkout: every call below must be to an annotated function of cnnext's
public API (``--strict`` refuses calls to unannotated ones), and every
``reveal_type``-free assignment must agree with the annotations.  It also runs
as a plain script (it is quick).
"""

from typing import Any

import numpy as np
import numpy.typing as npt

import cnnext
from cnnext import functional as F
from cnnext import models, optim
from cnnext.datasets import load_sample
from cnnext.history import History

Floats = npt.NDArray[np.floating[Any]]


def features(x: Floats, w: Floats) -> tuple[Floats, npt.NDArray[np.int64]]:
    y: Floats = F.conv2d(x, w, padding=1)
    y = F.relu(y)
    pooled, indices = F.max_pool2d(y, 2, return_indices=True)
    only_pooled: Floats = F.max_pool2d(y, 2)
    assert only_pooled.shape == pooled.shape
    return pooled, indices


def gradients(x: Floats, w: Floats) -> float:
    y = F.conv2d(x, w)
    gx, gw, gb = F.conv2d_backward(np.ones_like(y), x, w)
    assert gx is not None
    loss, glogits = F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 2]))
    return float(gw.sum() + gb.sum()) + loss + float(glogits.sum())


def train() -> float:
    (X, y), (Xt, yt) = load_sample()
    model = models.seed_cnn(dtype="float32", seed=0)
    history: History = model.fit(X[:64], y[:64], epochs=1, batch_size=16,
                                 optimizer=optim.Adam(lr=0.001), progress=False)
    losses: list[float] = history["loss"]
    accuracy: float = model.evaluate(Xt[:32], yt[:32])[1]
    probabilities: Floats = model.predict(Xt[:4])
    assert probabilities.shape == (4, 10) and len(losses) == history.epochs == 1
    return accuracy


def configuration() -> int:
    info = cnnext.show_config("dicts")
    assert info is not None
    cnnext.set_num_threads(1)
    threads: int = cnnext.get_num_threads()
    cnnext.set_num_threads(None)
    return threads + len(info)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    print(features(x, w)[0].shape, gradients(x, w), train(), configuration())

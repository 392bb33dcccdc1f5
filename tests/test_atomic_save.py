"""SIGKILL during Sequential.save leaves the old checkpoint or the new one, never a broken one.

A child process saves two different models over the same path in a loop and
is killed with SIGKILL at random moments.  Afterwards the path holds a
checkpoint that loads and equals one of the models written (or, when no
save had finished yet, nothing at all).  Temporary files a killed save
leaves behind (``.<name>.<pid>.<random>.tmp`` in the same directory) are
never read by ``load_model``; finding some proves the kills did land
mid-write.

(A SIGKILLed download is tested in tests/test_download.py.)
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from reliability_testing import scaled

import cnnext
from cnnext.layers import Dense

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

CHILD = textwrap.dedent("""
    import sys
    import cnnext
    from cnnext.layers import Dense

    def model(seed):
        # ~4 MB of weights and 8 MB of Adam state: a save takes a while.
        m = cnnext.Sequential([Dense(1024, 1024, seed=seed)], input_shape=(1024,))
        m.optimizer = cnnext.optim.Adam()
        m.optimizer.step(m.parameters(), m.gradients())
        return m

    models = [model(1), model(2)]
    print("ready", flush=True)
    n = 0
    while True:
        models[n % 2].save(sys.argv[1])
        n += 1
""")


def weights(seed):
    return Dense(1024, 1024, seed=seed).params["weight"]


@pytest.mark.parametrize("existing", [True, False], ids=["over an old file", "first save"])
def test_sigkill_during_save_never_leaves_a_broken_checkpoint(tmp_path, existing):
    script = tmp_path / "saver.py"
    script.write_text(CHILD)
    path = tmp_path / "model.npz"
    old = cnnext.Sequential([Dense(1024, 1024, seed=0)], input_shape=(1024,))
    known = {"old": weights(0), "model 1": weights(1), "model 2": weights(2)}
    rng = np.random.default_rng(0)
    outcomes = []

    def leftovers():
        return [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    trial = 0
    # At least a few kills, and more until one has landed mid-write (slow builds
    # spend longer before the first save).
    while trial < scaled(8, 4) or (not leftovers() and trial < 40):
        trial += 1
        if path.exists():
            path.unlink()
        if existing:
            old.save(path)
        child = subprocess.Popen([sys.executable, str(script), str(path)], cwd=tmp_path,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        # The first save starts now; kill within the first few saves.
        time.sleep(float(rng.uniform(0.0, 0.25)))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        if not path.exists():
            assert not existing, f"trial {trial}: the old file vanished"
            outcomes.append("no file")
            continue
        loaded = cnnext.load_model(path)  # never a CheckpointError
        weight = loaded.parameters()["0.weight"]
        matches = [name for name, w in known.items() if np.array_equal(weight, w)]
        assert matches, f"trial {trial}: the file loads but holds weights nobody saved"
        outcomes.append(matches[0])
    interrupted = leftovers()
    print(f"after each kill: {outcomes}; saves interrupted mid-write: {len(interrupted)}")
    # The kills landed mid-write at least once (else this test proved nothing).
    assert interrupted, f"no kill interrupted a save: {outcomes}"
    assert all(name.startswith(".model.npz.") for name in interrupted)

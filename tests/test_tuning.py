"""cnnext._tuning: measured plan choices, their cache (corruption, two processes, another CPU).

Nothing here asserts a speed: which candidate wins is whatever this machine
measures; what is checked is that a winner is one of the candidates, is kept,
found again, shared, ignored when unusable or from another CPU, and that the
results stay right and independent of the thread count.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conv_testing import check_backward, check_forward

import cnnext
from cnnext import _cpuinfo, _tuning, models
from cnnext import _reference as reference
from cnnext import functional as F
from cnnext._functional import conv as conv_module

# mid-like: 32 -> 48 channels, 3x3, padding 1, on 2 images of 12x12 (5M multiply-adds).
X_SHAPE, W_SHAPE = (2, 32, 12, 12), (48, 32, 3, 3)
ARGS = (2, 32, 12, 12, 48, 3, 3, (1, 1), (1, 1), (1, 1), 4)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty tuning cache, tuning on, quick timings, nothing remembered in memory."""
    monkeypatch.setenv(_tuning.ENV_DIR, str(tmp_path))
    monkeypatch.setenv(_tuning.ENV_MODE, "on")
    monkeypatch.setattr(_tuning, "SAMPLE_SECONDS", 2e-4)
    monkeypatch.setattr(_tuning, "ROUNDS", 1)
    _tuning.forget()
    conv_module.forget_plans()
    yield tmp_path
    _tuning.forget()
    conv_module.forget_plans()


def operands(dtype="float32"):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(X_SHAPE).astype(dtype)
    w = rng.standard_normal(W_SHAPE).astype(dtype)
    return x, w


def entry_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_modes_from_the_environment(monkeypatch):
    for value, expected in (("on", "on"), ("1", "on"), ("", "on"), ("OFF", "off"),
                            ("0", "off"), ("deterministic", "off"), ("cached", "cached")):
        monkeypatch.setenv(_tuning.ENV_MODE, value)
        assert _tuning.mode() == expected
    monkeypatch.delenv(_tuning.ENV_MODE)
    assert _tuning.mode() == "on"
    # A typo warns (once per value) and counts as the deterministic mode, so that an
    # environment variable never makes a convolution fail.
    monkeypatch.setenv(_tuning.ENV_MODE, "sometimes")
    with pytest.warns(RuntimeWarning, match="CNNEXT_TUNE='sometimes' is not one of on, "
                                            "cached, off"):
        assert _tuning.mode() == "off"


def test_first_call_of_a_shape_tunes_and_keeps_the_winner(cache):
    x, w = operands()
    y = F.conv2d(x, w, None, 1, 1)
    check_forward(y, x, w, None, 1, 1, 1)
    (path,) = entry_files(cache)
    assert path == _tuning.entry_path(conv_module._kernels, ARGS)
    assert _cpuinfo.identify()["key"] in path.parts
    entry = json.loads(path.read_text())
    assert entry["schema"] == _tuning.SCHEMA and entry["cpu"] == _cpuinfo.identify()["name"]
    plan = conv_module._plan("test", x, w, 1, 1, 1)
    assert plan.choices == entry["choices"]
    # The winner is the fastest candidate measured, for each pass.
    for pass_name in _tuning.PASSES:
        timings = entry["timings"][pass_name]
        assert len(timings) == len(_tuning.candidates(conv_module._kernels, ARGS, pass_name,
                                                      entry["choices"]))
        fastest = min(timings, key=lambda t: t["seconds"])
        assert all(entry["choices"][key] == value for key, value in fastest["choices"].items())


def test_a_kept_choice_is_used_without_timing(cache, monkeypatch):
    x, w = operands()
    F.conv2d(x, w, None, 1, 1)
    kept = json.loads(entry_files(cache)[0].read_text())["choices"]
    _tuning.forget()
    conv_module.forget_plans()

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again")

    monkeypatch.setattr(_tuning, "tune_shape", no_timing)
    F.conv2d(x, w, None, 1, 1)
    assert conv_module._plan("test", x, w, 1, 1, 1).choices == kept


def test_off_and_cached_modes(cache, monkeypatch):
    x, w = operands()
    heuristic = conv_module._kernels.Plan(*ARGS).choices
    monkeypatch.setenv(_tuning.ENV_MODE, "off")
    F.conv2d(x, w, None, 1, 1)
    assert entry_files(cache) == []
    assert conv_module._plan("test", x, w, 1, 1, 1).choices == heuristic
    conv_module.forget_plans()
    monkeypatch.setenv(_tuning.ENV_MODE, "cached")
    F.conv2d(x, w, None, 1, 1)
    assert entry_files(cache) == []  # nothing kept yet: heuristics, nothing timed
    # A kept choice is used in "cached" mode, never in "off" mode.
    other = _other_choices(heuristic)
    _write_entry(cache, {"schema": _tuning.SCHEMA, "choices": other})
    conv_module.forget_plans()
    assert conv_module._plan("test", x, w, 1, 1, 1).choices == other
    monkeypatch.setenv(_tuning.ENV_MODE, "off")
    conv_module.forget_plans()
    assert conv_module._plan("test", x, w, 1, 1, 1).choices == heuristic


def test_small_shapes_keep_the_heuristics(cache):
    x = np.ones((1, 1, 28, 28), np.float32)
    w = np.ones((8, 1, 3, 3), np.float32)
    F.conv2d(x, w)
    assert entry_files(cache) == []


def _other_choices(choices):
    """Valid choices of ARGS that differ from ``choices`` in the forward pass."""
    kernels = conv_module._kernels
    for option in _tuning.candidates(kernels, ARGS, "forward", {}):
        if option["forward"] != choices["forward"]:
            return option
    raise AssertionError("one forward candidate only")


def _write_entry(root, entry, text=None):
    path = _tuning.entry_path(conv_module._kernels, ARGS, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry) if text is None else text)
    return path


@pytest.mark.parametrize("text", [
    "",                                                   # empty
    '{"schema": 1, "choices": {"forward": "win',          # truncated
    "\x00\xff garbage \x7f",                              # not JSON
    "[1, 2, 3]",                                          # JSON, not an entry
    '{"schema": 1, "choices": {"forward": "fastest"}}',   # not a choice
    '{"schema": 1, "choices": {"forward": "winograd", "forward_vectors": "x"}}',
    '{"schema": 1, "choices": {"warp": 9}}',              # unknown key
    '{"schema": 99, "choices": {}}',                      # another schema
    '{"schema": 1, "choices": {"forward": "positions"}, "timings": ' + "[" * 100000,
])
def test_a_corrupt_entry_is_ignored_and_replaced(cache, text, monkeypatch):
    path = _write_entry(cache, None, text)
    x, w = operands()
    monkeypatch.setenv(_tuning.ENV_MODE, "cached")
    assert conv_module._plan("test", x, w, 1, 1, 1).choices == \
        conv_module._kernels.Plan(*ARGS).choices  # unusable: the heuristics
    assert path.read_text() == text  # "cached" never writes
    conv_module.forget_plans()
    monkeypatch.setenv(_tuning.ENV_MODE, "on")
    y = F.conv2d(x, w, None, 1, 1)
    check_forward(y, x, w, None, 1, 1, 1)
    entry = json.loads(path.read_text())  # tuned again, replaced by a valid entry
    assert conv_module._kernels.Plan(*ARGS, True, entry["choices"]).choices == entry["choices"]
    assert [p.name for p in entry_files(cache)] == [path.name]  # no temporary left


def test_a_choice_from_another_cpu_is_not_used(cache, monkeypatch):
    x, w = operands()
    F.conv2d(x, w, None, 1, 1)
    (ours,) = entry_files(cache)
    heuristic = conv_module._kernels.Plan(*ARGS).choices
    # Another CPU's file, with a choice this one would not make; the CPU keys are
    # made up so that neither can be the machine the test runs on.
    mine = _cpuinfo.identify()
    other = dict(mine, key=f"not-{mine['key']}-1", name="another CPU")
    monkeypatch.setattr(_cpuinfo, "identify", lambda: other)
    theirs = _write_entry(cache, {"schema": _tuning.SCHEMA, "choices": _other_choices(heuristic)})
    assert theirs != ours and other["key"] in theirs.parts
    monkeypatch.setattr(_cpuinfo, "identify", lambda: dict(other, key=f"not-{mine['key']}-2"))
    _tuning.forget()
    conv_module.forget_plans()
    monkeypatch.setenv(_tuning.ENV_MODE, "cached")
    # Neither this machine's entry nor the other CPU's: a third CPU has nothing kept.
    assert conv_module._plan("test", x, w, 1, 1, 1).choices == heuristic
    monkeypatch.setenv(_tuning.ENV_MODE, "on")
    conv_module.forget_plans()
    F.conv2d(x, w, None, 1, 1)
    assert len(entry_files(cache)) == 3



def test_a_choice_from_another_kernel_build_is_not_used(cache, tmp_path_factory):
    """A rebuilt module (other bytes, same ISA level) keeps its choices apart."""
    kernels = conv_module._kernels
    builds = tmp_path_factory.mktemp("builds")
    built = [builds / "a.so", builds / "b.so", builds / "c.so"]
    for path, data in zip(built, (b"one build", b"another build", b"one build"), strict=True):
        path.write_bytes(data)

    class Build:
        def __init__(self, path):
            self.__file__ = str(path)

        def compiled_isa(self):
            return kernels.compiled_isa()

    paths = [_tuning.entry_path(Build(path), ARGS, cache) for path in built]
    assert paths[0] != paths[1] and paths[0] == paths[2]
    assert paths[0].parent.name.startswith(kernels.compiled_isa() + "-")
    x, w = operands()
    F.conv2d(x, w, None, 1, 1)
    (ours,) = entry_files(cache)
    assert ours == _tuning.entry_path(kernels, ARGS, cache)
    assert json.loads(ours.read_text())["kernels"] == _tuning.build_key(kernels)

CHILD = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from cnnext import _tuning, functional as F
    from cnnext._functional import conv
    _tuning.SAMPLE_SECONDS = 2e-3
    start = sys.argv[1]
    while not os.path.exists(start):  # both processes start tuning together
        time.sleep(0.001)
    rng = np.random.default_rng(3)
    x = rng.standard_normal({x}).astype(np.float32)
    w = rng.standard_normal({w}).astype(np.float32)
    y = F.conv2d(x, w, None, 1, 1)
    print(json.dumps({{"choices": conv._plan("t", x, w, 1, 1, 1).choices,
                      "sum": float(y.astype(np.float64).sum())}}))
""").format(x=X_SHAPE, w=W_SHAPE)


def test_two_processes_tuning_one_shape_at_once_agree(cache, tmp_path_factory):
    start = tmp_path_factory.mktemp("start") / "go"
    env = {**os.environ, _tuning.ENV_DIR: str(cache), _tuning.ENV_MODE: "on"}
    children = [subprocess.Popen([sys.executable, "-P", "-c", CHILD, str(start)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    start.touch()
    outputs = [child.communicate(timeout=300) for child in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    first, second = (json.loads(out) for out, _ in outputs)
    (path,) = entry_files(cache)  # one entry, no temporary left behind
    kept = json.loads(path.read_text())["choices"]
    assert first["choices"] == second["choices"] == kept
    assert first["sum"] == second["sum"]


def test_results_do_not_depend_on_the_thread_count(cache):
    x, w = operands()
    rng = np.random.default_rng(4)
    previous = cnnext.get_num_threads()
    try:
        cnnext.set_num_threads(2)
        y2 = F.conv2d(x, w, None, 1, 1)  # tunes (on one thread), then runs on two
        # Without OpenMP every kernel runs on the calling thread.
        assert cnnext.get_num_threads() == (2 if cnnext.show_config("dicts")["openmp"]["enabled"]
                                            else 1)
        gy = rng.standard_normal(y2.shape).astype(np.float32)
        g2 = F.conv2d_backward(gy, x, w, 1, 1)
        cnnext.set_num_threads(1)
        y1 = F.conv2d(x, w, None, 1, 1)
        g1 = F.conv2d_backward(gy, x, w, 1, 1)
    finally:
        cnnext.set_num_threads(previous)
    np.testing.assert_array_equal(y1, y2)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_array_equal(a, b)
    check_backward(g1, gy, x, w, 1, 1, 1)


def test_nan_operands_keep_the_direct_algorithms(cache):
    x, w = operands()
    F.conv2d(x, w, None, 1, 1)
    x[0, 0, 0, 0] = np.inf
    y = F.conv2d(x, w, None, 1, 1)
    # inf where the direct sum is inf, NaN nowhere (Winograd's transforms would add inf - inf).
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, 1, 1)
    assert not np.isnan(expected).any()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-3)


def test_tune_a_model_ahead_of_time(cache, monkeypatch):
    monkeypatch.setenv(_tuning.ENV_MODE, "cached")  # tune() times whatever the mode
    model = models.lenet5(seed=0)
    before = {name: array.copy() for name, array in model.parameters().items()}
    found = cnnext.tune(model, (8, 1, 28, 28))
    assert [(f["x"], f["w"]) for f in found] == [((8, 1, 28, 28), (6, 1, 5, 5)),
                                                 ((8, 6, 14, 14), (16, 6, 5, 5))]
    assert {f["source"] for f in found} == {"timed"}
    # The two convolutions' choices, and whether each fuses with its pooling.
    files = entry_files(cache)
    assert len(files) == 4 and sum("-max2x2s2x2-relu" in p.name for p in files) == 2
    for name, array in model.parameters().items():
        np.testing.assert_array_equal(array, before[name])
    again = cnnext.tune(model, (8, 1, 28, 28))
    assert {f["source"] for f in again} <= {"memory", "cache"}
    assert [f["choices"] for f in again] == [f["choices"] for f in found]
    assert {f["source"] for f in cnnext.tune(model, (8, 1, 28, 28), retune=True)} == {"timed"}
    with pytest.raises(ValueError, match="input_shape must be 4 positive ints"):
        cnnext.tune(model, (1, 28, 28))


def test_cli_tune(cache):
    env = {**os.environ, _tuning.ENV_DIR: str(cache)}
    process = subprocess.run([sys.executable, "-P", "-m", "cnnext", "tune", "--model", "lenet5",
                              "--batch-size", "4"], capture_output=True, text=True, env=env,
                             timeout=600, check=False)
    assert process.returncode == 0, process.stderr
    assert f"cache {cache}" in process.stdout
    assert process.stdout.count("[timed]") == 2
    assert len(entry_files(cache)) == 4  # with whether each convolution fuses its pooling


def test_forced_choices_apply_where_asked_and_end_with_the_block(cache):
    small = np.ones((1, 16, 6, 6), np.float32), np.ones((64, 16, 3, 3), np.float32)
    other = np.ones((1, 1, 6, 6), np.float32), np.ones((8, 1, 5, 5), np.float32)

    def lanes(x, w):
        return conv_module._plan("t", x, w, 1, 1, 1).forward_lanes

    before = lanes(*small)
    assert before != "winograd"  # too small for the heuristics
    wanted = {"forward": "winograd", "data": "conv", "data_forward": "winograd"}
    with _tuning.forced(wanted, lambda args: args[1] == 16):
        assert lanes(*small) == "winograd"
        assert conv_module._plan("t", *small, 1, 1, 1).data_kernel == "winograd"
        # A shape the choices cannot compute (5x5) keeps the heuristics.
        assert lanes(*other) == conv_module._kernels.Plan(1, 1, 6, 6, 8, 5, 5, (1, 1), (1, 1),
                                                            (1, 1), 4).forward_lanes
        x, w = small
        x = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
        check_forward(F.conv2d(x, w, padding=1), x, w, None, 1, 1, 1)
    with _tuning.forced({"forward": "panel"}):
        assert conv_module._plan("t", *small, 1, 1, 1).source == "panel"
    assert lanes(*small) == before
    assert entry_files(cache) == []  # nothing timed nor kept
    with pytest.raises(TypeError, match="wanted"), _tuning.forced("winograd"):
        pass


@pytest.mark.parametrize("isa", list(cnnext._dispatch.built_variants("_conv")))
def test_heuristics_keep_winograd_for_planes_it_pays_on(isa):
    kernels = cnnext._dispatch.built_variants("_conv")[isa]

    def forward(n, c, hw, k):
        return kernels.Plan(n, c, hw, hw, k, 3, 3, (1, 1), (1, 1), (1, 1), 4).forward_lanes

    assert forward(32, 32, 16, 64) == "winograd"
    assert forward(16, 64, 8, 8 * 16) == "winograd"     # 16 whole tiles per image
    assert forward(64, 64, 7, 64) != "winograd"         # 16 tiles, 23% of outputs past edges
    assert forward(64, 32, 6, 32) != "winograd"         # 9 tiles
    assert forward(64, 16, 28, 16) != "winograd"        # 16 channels

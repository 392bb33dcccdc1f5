"""Package foundation: version, show_config, thread control, ISA dispatch."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cnnext
from cnnext import _config, _dispatch
from cnnext._kernels import _platform


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter with extra environment variables (None:
    unset); return stdout."""
    environ = {**os.environ, **env}
    result = subprocess.run(
        [sys.executable, "-P", "-c", textwrap.dedent(code)],
        env={name: value for name, value in environ.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_version_is_single_sourced():
    from importlib.metadata import version

    from cnnext._version import __version__

    assert cnnext.__version__ == __version__ == version("cnnext")


def test_show_config_reports_version_openmp_threads_and_isa(capsys):
    assert cnnext.show_config() is None
    text = capsys.readouterr().out
    info = cnnext.show_config(mode="dicts")
    assert info["cnnext"]["version"] == cnnext.__version__
    assert cnnext.__version__ in text
    assert "openmp" in text and "threads" in text
    assert f"enabled            {info['openmp']['enabled']}" in text
    for family, isa in info["simd"]["in_use"].items():
        assert f"{family}={isa}" in text
    assert "_conv" in info["simd"]["in_use"]


def test_show_config_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        cnnext.show_config(mode="json")


def test_set_num_threads_round_trip(num_threads):
    num_threads(3)
    expected = 3 if cnnext.show_config("dicts")["openmp"]["enabled"] else 1
    assert cnnext.get_num_threads() == expected
    num_threads(None)
    assert cnnext.get_num_threads() >= 1


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (10**6, ValueError),
                                        (1.5, TypeError), ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects_bad_values(bad, error):
    with pytest.raises(error, match="set_num_threads"):
        cnnext.set_num_threads(bad)


def test_default_thread_count_follows_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not cnnext.show_config("dicts")["openmp"]["enabled"]:
        pytest.skip("built without OpenMP")
    cnnext.set_num_threads(None)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert cnnext.get_num_threads() == 1


def test_omp_num_threads_sets_the_default():
    out = run_python("import cnnext; print(cnnext.get_num_threads())", OMP_NUM_THREADS="1")
    assert out.stdout.strip() == "1"


def test_supported_isas_always_include_baseline():
    isas = _dispatch.supported_isas()
    assert isas[-1] == "baseline"
    assert isas == [name for name in _dispatch.ISA_LEVELS if name in isas]


@pytest.mark.parametrize("family", _config.kernel_families())
def test_each_built_variant_was_compiled_for_its_level(family):
    # compiled_isa() reads the compiler's own macros (__AVX2__, __AVX512F__).
    # A level this CPU lacks is only found, not imported: its module's own
    # initialisation may run the instructions it was built for (SIGILL).
    built = 0
    runnable = _dispatch.supported_isas()
    for name, (suffix, _, _) in _dispatch.ISA_LEVELS.items():
        module_name = f"cnnext._kernels.{family}{suffix}"
        if importlib.util.find_spec(module_name) is None:
            continue
        built += 1
        if name in runnable:
            assert importlib.import_module(module_name).compiled_isa() == name
    assert built >= 1
    assert _dispatch.built_variants(family), "no build of it runs on this CPU"


def test_forcing_baseline_gives_the_same_results():
    code = """
        import json, numpy as np
        from cnnext import _dispatch
        from cnnext import functional as F
        rng = np.random.default_rng(7)
        x = rng.standard_normal((2, 3, 19, 21))
        w = rng.standard_normal((5, 3, 3, 3))
        y = F.conv2d(x, w, padding=1)
        kernels = _dispatch.load("_conv")
        print(json.dumps({"isa": _dispatch.loaded_isas()["_conv"],
                          "compiled": kernels.compiled_isa(), "out": y.ravel().tolist()}))
    """
    forced = json.loads(run_python(code, CNNEXT_ISA="baseline").stdout)
    default = json.loads(run_python(code, CNNEXT_ISA=None).stdout)
    assert forced["isa"] == forced["compiled"] == "baseline"
    assert default["isa"] == _dispatch.supported_isas()[0] or default["isa"] == "baseline"
    # Baseline SSE2 rounds products and sums separately, AVX2/AVX-512 fuse them.
    np.testing.assert_allclose(forced["out"], default["out"], rtol=1e-12, atol=1e-12)


def test_show_config_describes_this_architectures_levels():
    simd = cnnext.show_config("dicts")["simd"]
    assert simd["architecture"] == cnnext.show_config("dicts")["cnnext"]["architecture"]
    assert simd["architecture"] == _dispatch.ARCHITECTURE
    assert list(simd["levels"]) == list(_dispatch.ISA_LEVELS)
    assert set(simd["supported"]) <= set(simd["levels"])
    assert set(simd["in_use"].values()) <= set(simd["supported"])
    if simd["architecture"] == "aarch64":
        assert "asimd" in simd["cpu_features"]
    if simd["architecture"] == "x86_64":
        assert "x86-64-v3" in simd["levels"]


X86_V3 = dict.fromkeys(_platform.V3, True)
X86_V4 = dict.fromkeys(_platform.V4, True)


@pytest.mark.parametrize("architecture, features, expected", [
    ("x86_64", {}, ["baseline"]),
    ("x86_64", X86_V3, ["x86-64-v3", "baseline"]),
    ("x86_64", {**X86_V4, "avx512bw": False}, ["x86-64-v3", "baseline"]),
    ("x86_64", X86_V4, ["x86-64-v4", "x86-64-v3", "baseline"]),
    ("aarch64", {"asimd": True, "sve": True}, ["baseline"]),
    ("aarch64", {}, ["baseline"]),
    ("riscv64", {}, ["baseline"]),
])
def test_levels_a_cpu_runs_per_architecture(architecture, features, expected):
    assert _dispatch.supported_isas(architecture, features) == expected


@pytest.mark.parametrize("architecture", [*_dispatch.ARCHITECTURE_LEVELS, "riscv64"])
def test_bad_isa_requests_warn_and_fall_back(architecture):
    table = _dispatch.levels(architecture)
    # A CPU that runs only the baseline: any higher level must be refused.
    only_baseline = ["baseline"]
    requests = [("avx9000", "not one of")]
    requests += [(name, "lacks") for name in table if name != "baseline"]
    requests += [(name, "is a level of") for arch, other in _dispatch.ARCHITECTURE_LEVELS.items()
                 if arch != architecture for name in other if name not in table]
    for value, message in requests:
        with pytest.warns(RuntimeWarning, match=message):
            isas = _dispatch.requested_isas({"CNNEXT_ISA": value}, architecture, only_baseline)
        assert isas == only_baseline
    assert _dispatch.requested_isas({"CNNEXT_ISA": "Baseline "}, architecture,
                                    only_baseline) == ["baseline"]


def test_bad_isa_request_on_this_machine(monkeypatch):
    # Pretend the CPU runs only the baseline, so asking for the highest level must be refused.
    monkeypatch.setattr(_dispatch, "supported_isas", lambda: ["baseline"])
    top = next(iter(_dispatch.ISA_LEVELS))
    if top == "baseline":
        pytest.skip("this architecture has only the baseline level")
    with pytest.warns(RuntimeWarning, match="lacks"):
        assert _dispatch.requested_isas({"CNNEXT_ISA": top}) == ["baseline"]


@pytest.mark.parametrize("level", _dispatch.supported_isas())
def test_cnnext_isa_selects_each_level_this_cpu_runs(level):
    code = """
        import json
        from cnnext import _config, _dispatch
        modules = {family: _dispatch.load(family) for family in _config.kernel_families()}
        print(json.dumps({family: [_dispatch.loaded_isas()[family], module.compiled_isa()]
                          for family, module in modules.items()}))
    """
    chosen = json.loads(run_python(code, CNNEXT_ISA=level).stdout)
    assert chosen
    levels = list(_dispatch.ISA_LEVELS)
    for family, (loaded, compiled) in chosen.items():
        # The requested level, or the next one down where the family has no such build.
        assert loaded == compiled, family
        assert levels.index(loaded) >= levels.index(level), family
        assert loaded in _dispatch.built_variants(family), family


def test_openmp_was_found_when_requested():
    # A build that asked for OpenMP and went serial (no libomp for clang, say)
    # must not pass as a working one.
    openmp = cnnext.show_config("dicts")["openmp"]
    assert openmp["enabled"] or not openmp["requested"], openmp.get("WARNING")
    assert ("WARNING" in openmp) == (openmp["requested"] and not openmp["enabled"])


def test_show_config_warns_loudly_about_missing_openmp(monkeypatch, capsys):
    monkeypatch.setattr(_config._openmp_helpers, "openmp_version", lambda: 0)
    monkeypatch.setattr(_config._openmp_helpers, "openmp_requested", lambda: True)
    info = cnnext.show_config("dicts")["openmp"]
    assert not info["enabled"] and info["requested"]
    cnnext.show_config()
    out = capsys.readouterr().out
    assert "WARNING" in out and "ONE thread" in out


def test_missing_compiled_family_gives_a_clear_import_error():
    with pytest.raises(ImportError, match="no compiled build"):
        _dispatch.load("_no_such_family")


@pytest.mark.parametrize("environ, hidden", [
    ({}, {}),
    ({"OMP_NUM_THREADS": "4"}, {}),
    ({"OMP_NUM_THREADS": " 3 "}, {}),
    ({"OMP_NUM_THREADS": "4,100000"}, {}),
    ({"OMP_NUM_THREADS": "4096"}, {}),
    ({"OMP_NUM_THREADS": "4097"}, {"OMP_NUM_THREADS": 4097}),
    ({"OMP_NUM_THREADS": "2147483648"}, {"OMP_NUM_THREADS": 2147483648}),
    ({"OMP_NUM_THREADS": "-1"}, {"OMP_NUM_THREADS": None}),
    ({"OMP_NUM_THREADS": "abc"}, {"OMP_NUM_THREADS": None}),
    ({"OMP_NUM_THREADS": ""}, {"OMP_NUM_THREADS": None}),
    ({"OMP_NUM_THREADS": "1e3"}, {"OMP_NUM_THREADS": None}),
    ({"OMP_NUM_THREADS": "0"}, {"OMP_NUM_THREADS": None}),
    ({"OMP_NUM_THREADS": "2,0"}, {"OMP_NUM_THREADS": None}),
    ({"OMP_NUM_THREADS": "18446744073709551617"}, {"OMP_NUM_THREADS": None}),
    ({"OMP_STACKSIZE": "16K", "GOMP_STACKSIZE": "1048576G"}, {}),
    ({"OMP_STACKSIZE": "100000000000000000000"}, {"OMP_STACKSIZE": None}),
    ({"OMP_STACKSIZE": "bogus", "GOMP_STACKSIZE": "1M"}, {"OMP_STACKSIZE": None}),
])
def test_settings_libomp_would_abort_on_are_found(environ, hidden):
    # libomp builds hide these from the runtime while it starts (it aborts on
    # values libgomp ignores); the classification is the same on every build.
    assert cnnext._kernels._openmp_helpers.hidden_settings(environ) == hidden


def test_hidden_settings_reach_child_processes():
    # Hidden from libomp only while it initialises: os.environ keeps them.
    out = run_python("""
        import os, cnnext
        print(os.environ["OMP_NUM_THREADS"], os.environ["OMP_STACKSIZE"])
        """, OMP_NUM_THREADS="abc", OMP_STACKSIZE="bogus").stdout
    assert out.split() == ["abc", "bogus"]

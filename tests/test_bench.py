"""The benchmark suite (cnnext._bench, ``cnnext bench``): coverage, verification, reporting.

Nothing here asserts a speed: the quick suite runs in smoke mode (every
implementation executed once and checked against the float64 reference),
and one tiny timed run checks that the reported figures are consistent.
"""

import argparse
import functools
import importlib.util
import json
import mmap
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cnnext import _bench, layers, models
from cnnext._bench import (
    environment,
    impl_cnnext,
    impl_onnxruntime,
    impl_torch,
    machine,
    nets,
    overhead,
    report,
    suite,
    timing,
)
from cnnext._bench.cases import CASES, DTYPES, QUICK, select
from cnnext._bench.impls import IMPLEMENTATIONS, Bound, Implementation


@pytest.fixture(scope="module")
def quick_smoke(tmp_path_factory):
    """``cnnext bench --quick --smoke --json PATH``, run as a user would: (process, document)."""
    path = tmp_path_factory.mktemp("bench") / "quick.json"
    process = subprocess.run(
        [sys.executable, "-P", "-m", "cnnext", "bench", "--quick", "--smoke", "--json", str(path)],
        capture_output=True, text=True, cwd=path.parent, timeout=600, check=False)
    document = json.loads(path.read_text()) if path.exists() else None
    return process, document


def test_quick_smoke_succeeds_without_traceback(quick_smoke):
    process, document = quick_smoke
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    assert document is not None
    assert "notebook.b1 [cnnext.compat]" in process.stdout


def test_quick_smoke_covers_every_case_dtype_and_implementation(quick_smoke):
    _, document = quick_smoke
    expected = {(name, dtype, impl.name)
                for name in QUICK for dtype in DTYPES if dtype in CASES[name].dtypes
                for impl in IMPLEMENTATIONS.values() if impl.supports(CASES[name], dtype)}
    rows = [(r["case"], r["dtype"], r["impl"]) for r in document["results"]]
    assert sorted(rows) == sorted(expected)
    assert {case["name"] for case in document["cases"]} == set(QUICK)
    families = {CASES[name].family for name in QUICK}
    assert families == {case.family for case in CASES.values()}


def test_quick_smoke_verifies_every_implementation(quick_smoke):
    _, document = quick_smoke
    for row in document["results"]:
        if row["impl"] in ("torch", "onnxruntime") and row["status"] == "not installed":
            continue
        if row["impl"] == "onnxruntime" and row["dtype"] == "float64":
            # onnxruntime's CPU provider has no float64 convolution.
            assert row["status"] == "not available", row
            assert "Conv" in row["detail"]
            continue
        assert row["status"] == "verified", row
        assert row["max_error"] <= suite.TOLERANCE[row["dtype"]]
        assert row["check_seconds"] > 0


class _Perturbed(Bound):
    def __init__(self, bound):
        self.bound = bound

    def run(self):
        self.bound.run()

    def check(self):
        checks = self.bound.check()
        name, got, want, scale = checks[0]
        wrong = np.array(got, dtype=np.float64, copy=True)
        wrong.flat[wrong.size // 2] += 1.0 + abs(wrong.flat[wrong.size // 2])
        return [(name, wrong, want, scale), *checks[1:]]


class _Wrong(Implementation):
    """A cnnext that gets one output element wrong (the NumPy baseline, perturbed)."""

    name = "cnnext"

    def version(self):
        return "test"

    def bind(self, case, dtype, inputs, reference):
        return _Perturbed(IMPLEMENTATIONS["numpy"].bind(case, dtype, inputs, reference))


class _Missing(Implementation):
    """A baseline that cannot run here."""

    name = "notebook"

    def version(self):
        return "test"

    def bind(self, case, dtype, inputs, reference):
        raise NotImplementedError("conv2d is not implemented yet")


class _Crashes(Bound):
    """Checks fine, then fails when timed."""

    def __init__(self, bound):
        self.bound = bound

    def check(self):
        return self.bound.check()

    def run(self):
        raise RuntimeError("lost the\nplot")


class _CrashesWhenTimed(Implementation):
    name = "cnnext"

    def version(self):
        return "test"

    def bind(self, case, dtype, inputs, reference):
        return _Crashes(IMPLEMENTATIONS["numpy"].bind(case, dtype, inputs, reference))


def _run(case_names, impls, dtypes=("float32",), **settings):
    timing = {"repeats": 3, "budget_seconds": 0.02, "min_repeat_seconds": 0.001,
              "gemm_sizes": (64,), **settings}
    return suite.run([CASES[name] for name in case_names], impls, list(dtypes), [1],
                     suite.Settings(**timing), progress=False)


def test_a_wrong_result_is_reported_and_not_timed():
    document = _run(["conv2d.forward.notebook-b1", "max_pool2d.backward.2x2"], [_Wrong()],
                    smoke=True)
    for row in document["results"]:
        assert row["status"] == "mismatch", row
        assert not row["verified"]
        assert "seconds" not in row
    assert len(suite.failures(document)) == len(document["results"]) == 2
    assert "MISMATCH" in report.format_report(document)


def test_a_crash_while_timing_is_one_line_and_spares_the_others():
    document = _run(["conv2d.forward.notebook-b1"], [_CrashesWhenTimed(), IMPLEMENTATIONS["numpy"]])
    crashed, numpy_row = document["results"]
    assert crashed["status"] == "error"
    assert crashed["detail"] == "RuntimeError: lost the plot"
    assert numpy_row["status"] == "ok"
    assert numpy_row["seconds"] > 0
    assert len(suite.failures(document)) == 1


def test_a_missing_implementation_is_one_line_not_a_traceback():
    document = _run(["conv2d.forward.notebook-b1"], [_Missing()], smoke=True)
    (row,) = document["results"]
    assert row["status"] == "not available"
    assert row["detail"] == "NotImplementedError: conv2d is not implemented yet"
    assert suite.failures(document) == []  # only cnnext itself must be there
    line = next(line for line in report.format_report(document).splitlines()
                if line.startswith("forward.notebook-b1"))
    assert line.split()[-1] == "n/a"


def test_cnnext_rows_record_the_conv_plan_that_ran():
    from cnnext._functional import conv

    document = _run(["conv2d.forward.notebook-b1", "max_pool2d.forward.2x2"],
                    [IMPLEMENTATIONS["cnnext"]], smoke=True)
    rows = {row["case"]: row for row in document["results"]}
    inputs = CASES["conv2d.forward.notebook-b1"].make_inputs("float32")
    want = conv._plan("conv2d", inputs["x"], inputs["w"], inputs["stride"], inputs["padding"],
                      1).choices
    assert rows["conv2d.forward.notebook-b1"]["plan"] == want
    assert set(want) >= {"forward", "data", "filter"}
    assert "plan" not in rows["max_pool2d.forward.2x2"]
    json.dumps(document)  # the plan goes into the result file as it is


def test_report_names_the_cores_a_pinned_run_could_use():
    document = _run(["max_pool2d.forward.2x2"], [IMPLEMENTATIONS["numpy"]], smoke=True)
    m = document["machine"]
    assert m["cores"] == os.cpu_count()
    assert m["cores_usable"] == len(os.sched_getaffinity(0))
    m["cores"], m["cores_usable"] = 2, 1
    assert ", 2 cores, this run pinned to 1\n" in report.format_report(document)
    m["cores_usable"] = 2
    assert report.format_report(document).splitlines()[1].endswith(", 2 cores")
    del m["cores_usable"]  # a result file written before the count was kept
    assert report.format_report(document).splitlines()[1].endswith(", 2 cores")


def test_torch_column_reads_not_installed_when_torch_is_missing(monkeypatch):
    monkeypatch.setattr(impl_torch.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(impl_torch.Torch, "_module", None)
    document = _run(["conv2d.forward.notebook-b1"], [impl_torch.Torch()], smoke=True)
    (row,) = document["results"]
    assert row["status"] == "not installed"
    assert document["machine"]["implementations"]["torch"] == "not installed"
    line = next(line for line in report.format_report(document).splitlines()
                if line.startswith("forward.notebook-b1"))
    assert "not installed" in line


def test_onnxruntime_column_reads_not_installed_when_it_is_missing(monkeypatch):
    monkeypatch.setattr(impl_onnxruntime.importlib.util, "find_spec", lambda name: None)
    document = _run(["predict.notebook.b1"], [impl_onnxruntime.OnnxRuntime()], smoke=True)
    (row,) = document["results"]
    assert row["status"] == "not installed"
    assert "pip install onnxruntime" in row["detail"]
    assert document["machine"]["implementations"]["onnxruntime"] == "not installed"
    line = next(line for line in report.format_report(document).splitlines()
                if line.startswith("predict.notebook.b1"))
    assert "not installed" in line


def test_onnxruntime_runs_only_inference_cases():
    impl = impl_onnxruntime.OnnxRuntime()
    assert [name for name, case in CASES.items() if impl.supports(case, "float32")] == [
        name for name in CASES if name.startswith("predict.")]


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_sessions_are_pinned_sequential_and_optimised(threads, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(environment, "missing", lambda: {})
    options = impl_onnxruntime.session_options(ort, threads)
    assert options.intra_op_num_threads == options.inter_op_num_threads == threads
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Bounded spinning, as for every library the suite times.
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    monkeypatch.setattr(environment, "missing", lambda: {"GOMP_SPINCOUNT": "1000"})
    options = impl_onnxruntime.session_options(ort, threads)
    with pytest.raises(Exception, match="does not have configuration"):
        options.get_session_config_entry("session.intra_op.allow_spinning")


def test_predict_rows_compare_cnnext_with_onnxruntime_and_torch(torch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    impls = [IMPLEMENTATIONS[name] for name in ("cnnext", "torch", "onnxruntime")]
    document = _run(["predict.lenet5.b1"], impls)
    rows = {row["impl"]: row for row in document["results"]}
    assert all(row["status"] == "ok" for row in rows.values()), rows
    cnnext = rows["cnnext"]
    for peer in ("torch", "onnxruntime"):
        assert cnnext[f"vs_{peer}"] == pytest.approx(rows[peer]["seconds"] / cnnext["seconds"])
    assert cnnext["gflops"] == pytest.approx(
        CASES["predict.lenet5.b1"].flops() / cnnext["seconds"] / 1e9)
    text = report.format_report(document)
    assert "cnnext's speed relative to onnxruntime:" in text
    assert "inference (predict" in text


def test_predict_reference_is_the_softmax_of_the_forward_pass():
    case = CASES["predict.lenet5.b64"]
    inputs = case.make_inputs("float64")
    probs = case.reference(inputs)["probs"]
    assert probs.shape == (64, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    model = models.lenet5(dtype="float64")
    impl_cnnext.load_params(model.layers, inputs["params"])
    np.testing.assert_allclose(model.predict(inputs["images"]), probs, rtol=1e-10, atol=1e-15)


def test_timed_rows_are_consistent(tmp_path):
    names = ["conv2d.forward.notebook-b1", "max_pool2d.forward.2x2", "copy.pool-input"]
    impls = [IMPLEMENTATIONS[name] for name in ("cnnext", "numpy")]
    document = _run(names, impls)
    path = tmp_path / "out.json"
    report.write_json(document, path)
    document = json.loads(path.read_text())
    (peak,) = document["roofline"]
    assert peak["gflops"] > 0
    rows = {(r["case"], r["impl"]): r for r in document["results"]}
    assert set(rows) == {(name, impl.name) for name in names
                         for impl in impls if impl.supports(CASES[name], "float32")}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert min(row["samples"]) > 0
        assert row["q1"] <= row["seconds"] <= row["q3"]
    conv, conv_numpy = rows[names[0], "cnnext"], rows[names[0], "numpy"]
    assert conv["gflops"] == pytest.approx(CASES[names[0]].flops() / conv["seconds"] / 1e9)
    assert conv["peak_fraction"] == pytest.approx(conv["gflops"] / peak["gflops"])
    assert conv["vs_numpy"] == pytest.approx(conv_numpy["seconds"] / conv["seconds"])
    pool, copy = rows[names[1], "cnnext"], rows["copy.pool-input", "numpy"]
    assert pool["copy_multiple"] == pytest.approx(pool["seconds"] / copy["seconds"])
    assert pool["gbytes_per_second"] == pytest.approx(
        CASES[names[1]].nbytes("float32") / pool["seconds"] / 1e9)
    assert report.format_seconds(conv["seconds"]) in report.format_report(document)


def test_goals_are_judged_on_every_figure():
    def row(case, threads, seconds, **figures):
        return {"case": case, "threads": threads, "dtype": "float32", "impl": "cnnext",
                "status": "ok", "seconds": seconds, **figures}

    document = {"settings": {"threads": [1, 2]}, "results": [
        row("conv2d.forward.notebook", 1, 4e-4, vs_torch=6.0),
        row("conv2d.forward.notebook", 2, 2e-4, vs_torch=4.0),
        {**row("conv2d.forward.notebook", 1, 1e-4, vs_torch=50.0), "dtype": "float64"},
        row("conv2d.forward.mid", 1, 1e-3, vs_torch=1.2, peak_fraction=0.8),
        row("conv2d.backward.deep", 1, 1e-3, vs_torch=0.9, peak_fraction=0.85),
        row("conv2d.forward.lenet-2", 1, 1e-3, vs_torch=1.1),
    ]}
    assert report.goals(document) == [
        "notebook forward vs torch >= 5x, 1 thread(s): 6.00x: met",
        "notebook forward vs torch >= 5x, 2 thread(s): 4.00x: missed",
        "mid/deep/mid-b1 (32+ input channels) vs torch >= 1x, 1 thread(s): 0.90x to 1.20x, "
        "geometric mean 1.04x, 1 of 2 reach it: missed",
        "cifar-1/lenet-2 vs torch >= 1x, 1 thread(s): 1.10x: met",
        "mid/deep/mid-b1 share of the 1-thread SGEMM rate >= 80%: 80% to 85%, "
        "geometric mean 82%, 2 of 2 reach it: met",
        "batch 256, 2 threads vs 1 >= 1.7x: 2.00x: met",
    ]


def test_unknown_case_is_one_clear_line(capsys):
    assert _bench.main(["conv2d.forward.nosuchshape"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "cnnext bench: error: unknown case 'conv2d.forward.nosuchshape' (run with --list to "
        "see the case names; globs such as 'conv2d.*.mid' work)"]
    assert captured.out == ""


@pytest.mark.parametrize("argv", [["--impls", "cnnext,tensorflow"], ["--dtypes", "float16"],
                                  ["--threads", "0"], ["--repeats", "0"]])
def test_bad_options_are_one_clear_line(argv, capsys):
    assert _bench.main([*argv, "--smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"cnnext bench: error: {argv[0]}")


@pytest.mark.parametrize("argv", [
    [], ["--quick", "--smoke"], ["conv2d.*.mid", "train", "--threads", "1,all", "--repeats", "3"],
    ["--impls", "cnnext,numpy", "--dtypes", "float64", "--json", "a b.json", "--png", "c.png"],
    ["--keep-env", "--list"]])
def test_command_line_gives_back_the_options(argv):
    parser = _bench.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(argv)
    assert parser.parse_args(_bench.command_line(args)) == args


def test_timing_runs_with_idle_threads_spinning_briefly(tmp_path):
    """Without the variables, `cnnext bench` times in a child that has them (set ones are
    kept), unless --keep-env."""
    path = tmp_path / "out.json"
    env = {name: value for name, value in os.environ.items()
           if name not in {**environment.describe(), **environment.KEEP_FREED_MEMORY,
                           "GLIBC_TUNABLES": None}}
    env["KMP_BLOCKTIME"] = "7"
    process = subprocess.run(
        [sys.executable, "-P", "-m", "cnnext", "bench", "conv2d.forward.notebook-b1", "--quick",
         "--impls", "cnnext", "--dtypes", "float32", "--threads", "1", "--repeats", "1",
         "--json", str(path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False)
    assert process.returncode == 0, process.stderr
    document = json.loads(path.read_text())
    assert document["settings"]["environment"] == {
        "OMP_WAIT_POLICY": None, **environment.QUIET_THREADS, "KMP_BLOCKTIME": "7"}
    assert ("idle threads: OMP_WAIT_POLICY not set, GOMP_SPINCOUNT=1000, KMP_BLOCKTIME=7"
            in process.stdout)
    (row,) = document["results"]
    assert row["status"] == "ok" and row["other_cores"] >= 0
    if environment._glibc():
        assert document["settings"]["allocator"] == environment.KEEP_FREED_MEMORY
        assert "freed memory kept by malloc: MALLOC_MMAP_THRESHOLD_=" in process.stdout
    assert document["settings"]["clocks"] == {"1": "thread CPU time"}

    process = subprocess.run(
        [sys.executable, "-P", "-m", "cnnext", "bench", "copy.pool-input", "--quick", "--keep-env",
         "--impls", "numpy", "--threads", "1", "--repeats", "1", "--json", str(path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False)
    assert process.returncode == 0, process.stderr
    settings = json.loads(path.read_text())["settings"]
    assert settings["environment"] == {
        "OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None, "KMP_BLOCKTIME": "7",
        "OPENBLAS_THREAD_TIMEOUT": None}
    assert settings["allocator"] == dict.fromkeys(environment.KEEP_FREED_MEMORY)


@pytest.mark.skipif(not environment._glibc(), reason="glibc's malloc variables")
def test_malloc_settings_of_the_users_are_kept(monkeypatch):
    for name in (*environment.describe(), *environment.KEEP_FREED_MEMORY, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert environment.missing() == {**environment.QUIET_THREADS,
                                     **environment.KEEP_FREED_MEMORY}
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert environment.missing() == {**environment.QUIET_THREADS,
                                     "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    assert environment.missing() == environment.QUIET_THREADS


def test_one_thread_is_timed_by_the_threads_cpu_time():
    """A call that sleeps costs no CPU time; one whose work runs on another thread shows
    as helper CPU; one that touches fresh memory shows its page faults."""
    assert timing.clock_for(1) == ("thread CPU time", time.thread_time)
    assert timing.clock_for(2)[1] is time.perf_counter

    def burn(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def helped():
        thread = threading.Thread(target=burn, args=(0.01,))
        thread.start()
        thread.join()

    def fresh():
        # 64 MB mapped anew, one write per 4 KiB page (no huge pages: not madvised).
        with mmap.mmap(-1, 64 << 20) as memory:
            np.frombuffer(memory, np.uint8)[::4096] = 1

    sleep, helper, faulting = timing.measure(
        [functools.partial(time.sleep, 0.005), helped, fresh], repeats=3, budget_seconds=0.1,
        min_repeat_seconds=0.005, clock=time.thread_time)
    assert sleep.median < 0.001
    assert helper.median < 0.005 and helper.helper_cpu_per_call > 0.005
    if timing.resource is not None:
        assert faulting.faults_per_call > 8000  # 16384 pages of 4 KiB
        assert sleep.faults_per_call < 100


def test_report_names_faulting_and_helped_timings():
    def row(impl, threads, **fields):
        return {"case": "conv2d.forward.mid", "dtype": "float32", "threads": threads,
                "impl": impl, "status": "ok", "seconds": 1e-3, **fields}

    lines = report._warnings({"results": [
        row("torch", 1, faults_per_call=9864.0, helper_cpu_seconds=0.0),
        row("cnnext", 1, faults_per_call=3.0, helper_cpu_seconds=2e-4),
        row("numpy", 2, faults_per_call=0.0, helper_cpu_seconds=5e-3),
    ]})
    assert "  conv2d.forward.mid float32 1t torch (9864)" in lines
    assert "  conv2d.forward.mid float32 1t cnnext (20%)" in lines
    assert not any("numpy" in line or "cnnext (3)" in line for line in lines)
    assert report._warnings({"results": [row("torch", 1)]}) == []


def _run_suite_module():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "run_suite.py"
    if not path.exists():
        pytest.skip("benchmarks/run_suite.py is not beside the tests")
    spec = importlib.util.spec_from_file_location("run_suite", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_keeps_one_table_block_per_cpu_kind():
    run_suite = _run_suite_module()
    amd = "<!-- bench-table:start AMD Zen 4 -->\nold amd\n<!-- bench-table:end AMD Zen 4 -->"
    text = f"# head\n\n{amd}\n\n## after\n"
    intel = run_suite.replace_block(text, "Intel Emerald Rapids (Xeon 5th gen)", "intel\n")
    assert intel.startswith(f"# head\n\n{amd}\n\n<!-- bench-table:start Intel Emerald")
    assert intel.endswith("intel\n<!-- bench-table:end Intel Emerald Rapids (Xeon 5th gen)"
                          " -->\n\n## after\n")
    again = run_suite.replace_block(intel, "AMD Zen 4", "new amd\n")
    assert "old amd" not in again and again.count("new amd") == 1
    assert again.count("intel\n") == 1 and again.index("new amd") < again.index("intel")
    assert run_suite.replace_block("no markers", "AMD Zen 4", "x") is None
    assert run_suite.slug("Intel Emerald Rapids (Xeon 5th gen)") == \
        "intel-emerald-rapids-xeon-5th-gen"


def test_a_wait_policy_of_the_users_stands_for_the_openmp_variables(monkeypatch):
    for name in environment.describe():
        monkeypatch.delenv(name, raising=False)
    for name in environment.KEEP_FREED_MEMORY:
        monkeypatch.setenv(name, "0")
    assert environment.missing() == environment.QUIET_THREADS
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert environment.missing() == {"OPENBLAS_THREAD_TIMEOUT": "4"}


@pytest.mark.skipif(machine.cpu_seconds() is None, reason="needs /proc/stat (Linux)")
def test_other_cores_sees_another_busy_process():
    # Spins until its parent is gone, so a killed test run leaves no spinner behind.
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"
    busy = subprocess.Popen([sys.executable, "-P", "-c", spin])
    try:
        time.sleep(0.3)  # the interpreter has started
        before, start = machine.cpu_seconds(), time.perf_counter()
        time.sleep(1.0)
        others = machine.other_cores(before, machine.cpu_seconds(), time.perf_counter() - start)
    finally:
        busy.kill()
        busy.wait()
    # At least most of a core (the spinning child, or load that displaced it), at most all.
    assert 0.5 <= others <= os.cpu_count() * 1.05


def test_case_selection():
    assert [case.name for case in select(["conv2d.*.mid-b1"])] == [
        f"conv2d.{op}.mid-b1" for op in ("forward", "backward", "backward-weights",
                                         "forward-backward")]
    # A family prefix selects the family; pooling brings its copy yardstick along.
    names = [case.name for case in select(["avg_pool2d"])]
    assert names == [name for name in CASES if name.startswith("avg_pool2d.")] + [
        "copy.pool-input"]
    assert len(select()) == len(CASES)


@pytest.mark.parametrize(("network", "model"), [("notebook", models.seed_cnn),
                                                ("lenet5", models.lenet5)])
def test_benchmarked_networks_are_the_shipped_models(network, model):
    def architecture(layer_list):
        return [(type(layer).__name__, {k: v for k, v in layer.config().items() if k != "init"})
                for layer in layer_list]

    built = impl_cnnext.build_layers(layers, nets.NETWORKS[network], "float64")
    assert architecture(built) == architecture(model(dtype="float64").layers)


def _speedup_document():
    impls = [IMPLEMENTATIONS[name] for name in ("cnnext", "torch")]
    return _run(["conv2d.forward.notebook-b1"], impls)


def test_png_chart(tmp_path, torch):
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    assert report.write_png(_speedup_document(), path) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_matplotlib_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    path = tmp_path / "chart.png"
    document = _run(["copy.pool-input"], [IMPLEMENTATIONS["numpy"]])
    assert report.write_png(document, path) == "no chart: matplotlib is not installed"
    assert not path.exists()


@pytest.mark.parametrize("name", sorted(overhead.OPS))
def test_every_overhead_op_binds_the_step_its_repeated_call_runs(name):
    # The kernel column reads "not available" when the case's repeat key no
    # longer matches the one the functional call remembers.
    op = overhead.OPS[name]
    inputs = op.make(np.dtype(np.float32), np.random.default_rng(0))
    bound = impl_cnnext.KernelRepeats(op, inputs, op.reference(inputs))
    for label, got, want, _ in bound.check():
        assert got is not None, label
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=label)


@pytest.mark.parametrize("name", sorted(nets.NETWORKS))
def test_inference_flops_equal_torchs_count(name):
    # Counted independently by PyTorch's FLOP counter (conv and matmul, 2 per
    # multiply-add), residual blocks and shortcuts included.
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    network = nets.NETWORKS[name]
    model = impl_torch.build_model(torch, network).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros((1, *network.input_shape)))
    assert nets.inference_flops_per_image(network) == counter.get_total_flops()

"""The plumbing every notebook stands on: presets, ledger, runner, registry, CLI, widgets."""

from __future__ import annotations

import importlib
import json
import math
import os
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import workbook
from workbook import hardware, plots, processes, profiling, registry, results, runner, widgets
from workbook.config import WorkbookError, check_range, resolve_preset

ROOT = Path(__file__).resolve().parent.parent
HAS_CUDA = torch.cuda.is_available()


# ----------------------------------------------------------------------------- presets


def test_preset_from_environment(monkeypatch):
    monkeypatch.setenv("WORKBOOK_PRESET", "small")
    assert resolve_preset() == "small"
    assert resolve_preset("full") == "full", "an explicit preset wins over the environment"


def test_preset_default_follows_hardware(monkeypatch):
    monkeypatch.delenv("WORKBOOK_PRESET", raising=False)
    assert resolve_preset() == ("full" if HAS_CUDA else "small")


def test_bad_preset_names_the_allowed_ones():
    with pytest.raises(WorkbookError, match="allowed: small, full"):
        resolve_preset("huge")


def test_check_range_message():
    check_range("seq_len", 512, 1, 1024)
    with pytest.raises(WorkbookError, match="allowed: 1 to 1024"):
        check_range("seq_len", 4096, 1, 1024)


# ----------------------------------------------------------------------------- ledger


def _rows(values, status="ok"):
    return pd.DataFrame({"size": [1, 2], "metric": "t", "value": values, "unit": "ms",
                         "status": status})


def test_record_fills_provenance(ledger_dir):
    path = results.record("demo", _rows([1.0, 2.0]), preset="small", seed=7)
    frame = pd.read_csv(path)
    for col in results.PROVENANCE_COLUMNS:
        assert frame[col].notna().all(), f"provenance column {col} must be filled automatically"
    assert list(frame.columns[:6]) == ["size", "metric", "value", "unit", "source", "status"], \
        "ledger order: parameter columns, then metric/value/unit/source/status"
    assert (frame["seed"] == 7).all() and (frame["preset"] == "small").all()


def test_a_commit_hash_of_digits_and_one_e_stays_text(ledger_dir):
    # 892e020 reads as the float 8.92e+22 unless the ledger is read as text: a later record()
    # wrote it back so once (precision_stagnation's CPU rows)
    path = results.record("demo", _rows([1.0, 2.0]), preset="small", seed=0)
    frame = pd.read_csv(path, dtype=str)
    frame["commit"] = "892e020"
    frame.to_csv(path, index=False)
    newer = _rows([3.0, 4.0]).assign(size=[5, 6])
    results.record("demo", newer, preset="small", seed=0)
    assert "892e020" in set(pd.read_csv(path, dtype=str)["commit"])
    assert "892e020" in set(results.load("demo")["commit"])


def test_failed_run_never_overwrites_good_rows(ledger_dir):
    results.record("demo", _rows([1.0, 2.0]), preset="small", seed=0)
    results.record("demo", _rows([math.nan, math.nan], status="oom"), preset="small", seed=0)
    frame = results.load("demo")
    assert sorted(frame["value"]) == [1.0, 2.0], "an oom row replaced a good measurement"
    assert (frame["status"] == "ok").all()


def test_new_good_rows_replace_same_configuration_and_keep_others(ledger_dir):
    results.record("demo", _rows([1.0, 2.0]), preset="small", seed=0)
    newer = pd.DataFrame({"size": [2, 3], "metric": "t", "value": [20.0, 30.0], "unit": "ms"})
    results.record("demo", newer, preset="small", seed=0)
    frame = results.load("demo").sort_values("size")
    assert frame["value"].tolist() == [1.0, 20.0, 30.0], \
        "size=1 must survive, size=2 must be replaced, size=3 appended"


def test_a_second_seed_is_kept_beside_the_first_and_a_rerun_of_one_seed_replaces_it(ledger_dir):
    results.record("demo", _rows([1.0, 2.0]), preset="small", seed=0)
    results.record("demo", _rows([5.0, 6.0]), preset="small", seed=1)
    frame = results.load("demo")
    assert sorted(frame["value"]) == [1.0, 2.0, 5.0, 6.0], "seed 1 replaced seed 0's rows"
    results.record("demo", _rows([7.0, 8.0]), preset="small", seed=1)
    by_seed = results.load("demo").groupby("seed")["value"].apply(sorted).to_dict()
    assert by_seed == {0: [1.0, 2.0], 1: [7.0, 8.0]}


def test_load_marks_measured_rows_as_recorded(ledger_dir):
    rows = pd.concat([_rows([1.0, 2.0]), _rows([3.0, 3.0]).assign(source="predicted")])
    results.record("demo", rows, preset="small", seed=0)
    sources = set(results.load("demo")["source"])
    assert sources == {"recorded", "predicted"}


def test_atomic_write_leaves_no_temp_files(ledger_dir):
    path = results.record("demo", _rows([1.0, 2.0]), preset="small", seed=0)
    left = sorted(p.name for p in ledger_dir.iterdir() if p != results.lock_path(path))
    assert left == ["demo.csv"], "only the ledger (and its lock file) may remain"


def test_ledger_rejects_bad_names_and_sources(ledger_dir):
    with pytest.raises(WorkbookError):
        results.ledger_path("../escape")
    with pytest.raises(WorkbookError, match="unknown source"):
        results.record("demo", _rows([1.0, 2.0]).assign(source="guessed"), preset="small",
                       seed=0)


def test_committed_ledgers_have_provenance():
    for path in sorted((ROOT / "data" / "results").glob("*.csv")):
        frame = pd.read_csv(path)
        missing = [c for c in results.PROVENANCE_COLUMNS if c not in frame.columns]
        assert not missing, f"{path.name} lacks provenance columns {missing}"
        measured = frame[frame["source"] == "measured"]
        assert measured["device"].notna().all(), f"{path.name}: a measured row has no device"


# ----------------------------------------------------------------------------- runner


def test_runner_returns_rows_from_a_fresh_process():
    rows = runner.call("tests._runner_targets:rows", {"n": 4, "scale": 3.0})
    assert rows["value"].tolist() == [0.0, 3.0, 6.0, 9.0]
    assert (rows["status"] == "ok").all(), "rows that came back fine say so"


def test_a_child_freezes_what_it_imported_before_the_call():
    # gc.freeze(): a sweep's gc.collect() between cases skips torch's and pandas' objects
    rows = runner.call("tests._runner_targets:frozen_objects", {})
    assert rows["value"].iloc[0] > 10_000, "torch and pandas alone leave more objects than that"


def test_runner_turns_a_crash_into_a_row():
    rows = runner.call("tests._runner_targets:crash", {})
    assert rows["status"].tolist() == ["crash"]
    assert "17" in rows["error"].iloc[0], "the exit code should be named"


def test_runner_turns_an_exception_into_a_row():
    rows = runner.call("tests._runner_targets:raise_error", {})
    assert rows["status"].tolist() == ["error"]
    assert "deliberate failure" in rows["error"].iloc[0]


def test_runner_enforces_its_timeout():
    rows = runner.call("tests._runner_targets:sleep", {"seconds": 60}, timeout_s=3)
    assert rows["status"].tolist() == ["timeout"]


def test_runner_rejects_non_json_arguments():
    with pytest.raises(WorkbookError, match="JSON"):
        runner.call("tests._runner_targets:rows", {"n": object()})


def test_two_gloo_ranks_gather_per_rank_rows():
    rows = runner.call_distributed("tests._runner_targets:all_reduce_rank", {}, nprocs=2,
                                   backend="gloo", timeout_s=120)
    assert sorted(rows["rank"].unique()) == [0, 1]
    sums = rows[rows["metric"] == "sum"]["value"]
    assert (sums == 3.0).all(), "all-reduce of 1 and 2 over two ranks must give 3 on each"


def test_one_rank_runs_without_torchrun_and_two_with_it():
    one = runner.call_distributed("tests._runner_targets:launcher", {}, nprocs=1,
                                  backend="gloo", timeout_s=120)
    assert one["value"].tolist() == [1.0] and one["rank"].tolist() == [0]
    assert not one["torchrun"].any(), "a world of one rank starts no torchrun"
    two = runner.call_distributed("tests._runner_targets:launcher", {}, nprocs=2,
                                  backend="gloo", timeout_s=120)
    assert two["value"].tolist() == [2.0, 2.0] and two["torchrun"].all()


@pytest.fixture
def spares(monkeypatch):
    """Spare children on (by default they are where a GPU is), none left afterwards."""
    monkeypatch.setenv(processes.SPARE_VAR, "1")
    processes.drop_spare()
    yield
    processes.drop_spare()


def _spare_pid() -> int:
    return processes.waiting_spare().pid


def test_the_next_call_runs_in_the_spare_started_during_the_last(spares):
    first = runner.call("tests._runner_targets:whoami", {})
    assert not first["spare"].iloc[0], "the first call has no spare to take: a fresh child"
    waiting = _spare_pid()
    second = runner.call("tests._runner_targets:whoami", {})
    assert second["spare"].iloc[0] and int(second["value"].iloc[0]) == waiting
    assert _spare_pid() != waiting, "each call leaves a new spare for the next"
    # one rank of a distributed call: the spare gets the rank's variables with its job
    one = runner.call_distributed("tests._runner_targets:launcher", {}, nprocs=1,
                                  backend="gloo", timeout_s=120)
    assert one["value"].tolist() == [1.0] and not one["torchrun"].any()


def test_a_spare_of_another_environment_is_not_used(spares):
    runner.call("tests._runner_targets:whoami", {})
    waiting = processes.waiting_spare()
    other = runner.call("tests._runner_targets:whoami", {}, env={"WORKBOOK_DEMO": "1"})
    assert int(other["value"].iloc[0]) != waiting.pid and not other["spare"].iloc[0]
    assert waiting.poll() is not None, "the spare that did not fit was killed"


def test_a_spare_that_times_out_dies_like_a_fresh_child(spares, tmp_path):
    runner.call("tests._runner_targets:whoami", {})
    waiting = _spare_pid()
    # 45 s: the spare may still be importing (torch, transformers) when it is taken, and a
    # 2-core CI machine is slow at it; the function must have started before the timeout
    rows = runner.call("tests._runner_targets:sleep_writing_pid",
                       {"path": str(tmp_path / "pid"), "seconds": 300}, timeout_s=45)
    assert rows["status"].tolist() == ["timeout"]
    assert int((tmp_path / "pid").read_text()) == waiting
    with pytest.raises(ProcessLookupError):
        os.kill(waiting, 0)


def test_spare_setting_is_checked(monkeypatch):
    monkeypatch.setenv(processes.SPARE_VAR, "yes")
    with pytest.raises(WorkbookError, match="allowed: 0"):
        processes.spares_on()
    monkeypatch.setenv(processes.SPARE_VAR, "0")
    assert not processes.spares_on()
    monkeypatch.delenv(processes.SPARE_VAR)
    assert processes.spares_on() == torch.cuda.is_available()


def test_nccl_with_more_ranks_than_gpus_is_a_clear_error():
    with pytest.raises(WorkbookError, match="needs"):
        runner.call_distributed("tests._runner_targets:all_reduce_rank", {},
                                nprocs=torch.cuda.device_count() + 1, backend="nccl")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
def test_runner_turns_cuda_oom_into_a_row_and_spares_this_process():
    before = torch.cuda.memory_allocated()
    rows = runner.call("tests._runner_targets:cuda_oom", {})
    assert rows["status"].tolist() == ["oom"]
    ok = runner.call("tests._runner_targets:cuda_allocate", {"n_bytes": 2**30})
    assert ok["status"].tolist() == ["ok"]
    assert torch.cuda.memory_allocated() == before, "the parent's GPU memory must not change"


# ----------------------------------------------------------------------------- registry & CLI


def test_every_module_imports():
    for info in pkgutil.iter_modules(workbook.__path__):
        importlib.import_module(f"workbook.{info.name}")


def test_every_experiment_has_both_presets_and_a_notebook():
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    for exp in registry.experiments().values():
        assert set(exp.presets) == {"small", "full"}, exp.name
        assert exp.notebook in notebooks, f"{exp.name} names missing notebook {exp.notebook}"


def test_unknown_override_names_the_fields():
    with pytest.raises(WorkbookError, match="allowed: copy_mb, matmul_n, repeats"):
        registry.get("roofline").config("small", bogus=1)


def test_out_of_range_override_is_rejected():
    with pytest.raises(WorkbookError, match="matmul_n"):
        registry.get("roofline").config("small", matmul_n=1)


def test_full_preset_without_gpu_says_so(monkeypatch):
    monkeypatch.setattr(registry, "gpu_count", lambda: 0)
    reason = registry.why_not_here("roofline", "full")
    assert reason and "needs a GPU" in reason


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbook", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_cli_help_lists_experiments():
    out = _cli("--help")
    assert out.returncode == 0 and "roofline" in out.stdout


def test_cli_unknown_experiment_is_one_line_and_nonzero(ledger_dir):
    out = _cli("run", "no_such_experiment")
    assert out.returncode != 0
    assert "allowed:" in out.stderr and "Traceback" not in out.stderr


def test_cli_runs_and_records_small_roofline(ledger_dir, monkeypatch):
    monkeypatch.setenv("WORKBOOK_PRESET", "small")
    out = _cli("run", "roofline", "--record", "--set", "matmul_n=256")
    assert out.returncode == 0, out.stderr
    frame = results.load("roofline")
    copy = frame[(frame["kind"] == "copy") & (frame["source"] == "recorded")]
    assert len(copy) == 1 and copy["value"].iloc[0] > 0


# ----------------------------------------------------------------------------- hardware


def test_datasheet_lookup_by_device_name():
    assert hardware.datasheet("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert hardware.datasheet("NVIDIA H100 PCIe").name == "H100 PCIe"
    assert hardware.datasheet("NVIDIA H200").tflops["bf16"] == pytest.approx(989.4)
    assert hardware.datasheet("NVIDIA A100-SXM4-40GB").hbm_gb_s == 1555.0
    assert "fp8" not in hardware.datasheet("NVIDIA A100-SXM4-80GB").tflops
    assert hardware.datasheet("Tesla T4").name == "T4"
    assert hardware.datasheet("AMD EPYC") is None


def test_dtype_support_by_capability():
    assert "fp8" in hardware.supported_dtypes((9, 0))
    assert "fp8" not in hardware.supported_dtypes((8, 0))
    assert "bf16" not in hardware.supported_dtypes((7, 5)), "T4 has no bf16 tensor cores"


def test_roofline_rows_are_positive_and_plausible():
    cfg = hardware.RooflineConfig(copy_mb=8, matmul_n=128, repeats=2)
    rows = hardware.measure_roofline(cfg, seed=0)
    measured = rows[(rows["source"] == "measured") & (rows["status"] == "ok")]
    assert (measured["value"] > 0).all()
    peaks = hardware.roofline_peaks(rows)
    assert "bandwidth" in peaks and "fp32" in peaks


# ----------------------------------------------------------------------------- widgets & plots


def test_explorer_updates_figure_in_place_and_shows_errors():
    from workbook import widgets

    def draw(fig, n):
        if n > 8:
            raise WorkbookError("n must be at most 8")
        if not fig.data:
            fig.add_scatter(x=[0, 1], y=[0, 0])
        fig.data[0].y = [n, 2 * n]

    explorer = widgets.Explorer({"n": widgets.slider("n", 1, 10, 1, 2)}, draw)
    trace = explorer.fig.data[0]
    explorer.set(n=5)
    assert explorer.fig.data[0] is trace, "the figure must be updated, not rebuilt"
    assert tuple(trace.y) == (5, 10)
    explorer.set(n=9)
    assert explorer.last_error and tuple(trace.y) == (5, 10), "bad input keeps the last figure"


def test_compare_styles_by_source():
    from workbook import plots

    rows = pd.DataFrame({"x": [1, 2, 1, 2], "value": [1.0, 2.0, 1.1, 2.1],
                         "source": ["predicted"] * 2 + ["recorded"] * 2, "status": "ok",
                         "device": "NVIDIA H100 80GB HBM3", "n_gpus": 1,
                         "recorded_at": "2026-11-22T00:00:00Z", "seed": 0})
    fig = plots.compare(rows, "x", title="t")
    assert {t.line.dash for t in fig.data} == {"dash", "solid"}
    assert "H100" in fig.layout.title.text and "2026-11-22" in fig.layout.title.text


def test_compare_does_not_name_the_source_twice():
    # 02's flops figure had a legend entry "peak: datasheet (datasheet)"
    from workbook import plots

    rows = pd.DataFrame({"x": [1, 2, 1, 2], "value": [1.0, 1.0, 2.0, 3.0],
                         "what": ["peak: datasheet"] * 2 + ["achieved"] * 2,
                         "source": ["datasheet"] * 2 + ["measured"] * 2, "status": "ok"})
    names = {t.name for t in plots.compare(rows, "x", group="what", title="t").data}
    assert names == {"peak: datasheet", "achieved (measured)"}, names


def test_compare_marks_out_of_memory_points_instead_of_dropping_them():
    # 07 on the H200: vanilla ran out of memory at N = 16384 and its curve just stopped
    from workbook import plots

    rows = pd.DataFrame({"n": [1024, 4096, 16384, 16384], "value": [1.0, 2.0, float("nan"), 3.0],
                         "variant": ["vanilla", "vanilla", "vanilla", "flash"],
                         "status": ["ok", "ok", "oom", "ok"], "source": "measured"})
    fig = plots.compare(rows, "n", group="variant", log_x=True)
    crosses = [a for a in fig.layout.annotations if a.text == "✕"]
    assert len(crosses) == 1 and abs(crosses[0].x - 4.2144) < 1e-3, "at log10(16384)"
    assert "vanilla: out of memory at n = 16384" in crosses[0].hovertext
    assert any("out of memory" in (t.name or "") for t in fig.data), "named in the legend"
    plain = plots.compare(rows[rows["status"] == "ok"], "n", group="variant")
    assert not plain.layout.annotations and len(plain.data) == 2, "no oom rows, no marks"
    names = [a for a in fig.layout.annotations if a.text == "vanilla"]
    assert len(names) == 1 and names[0].x == crosses[0].x and names[0].xanchor == "right", \
        "a screenshot has no hover text: the row of crosses is named beside its first cross"


def test_log_axes_write_their_minor_ticks_in_full():
    # 02 in Chromium: a sweep over 20M-400M parameters was labelled "2 3 4 5 100M 2 3 4"
    import plotly

    from workbook import plots

    fig = plots.figure("t", log_x=True, log_y=True)
    if tuple(int(v) for v in plotly.__version__.split(".")[:2]) < (5, 24):
        pytest.skip("plotly < 5.24 has no minorloglabels")
    assert fig.layout.xaxis.minorloglabels == "complete" == fig.layout.yaxis.minorloglabels
    assert plots.figure("t").layout.xaxis.minorloglabels is None, "linear axes untouched"


def test_on_top_keeps_a_coinciding_curve_in_sight():
    # 06 in Chromium: 1F1B's idle share equals GPipe's and its points vanished under GPipe's
    from workbook import plots

    rows = pd.DataFrame({"m": [1, 2, 4] * 2, "value": [0.5, 0.33, 0.2] * 2,
                         "curve": ["1f1b · here"] * 3 + ["gpipe · here"] * 3,
                         "schedule": ["1f1b"] * 3 + ["gpipe"] * 3, "source": "measured",
                         "status": "ok"})
    fig = plots.compare(rows, "m", group="curve", color="schedule")
    assert fig.data[0].name.startswith("1f1b"), "drawn first, so under gpipe's"
    fig = plots.on_top(fig, "1f1b")
    last, first = fig.data[-1], fig.data[0]
    assert last.name.startswith("1f1b") and first.name.startswith("gpipe"), "drawn last"
    assert last.marker.symbol.endswith("-open") and last.marker.size > first.marker.size
    assert last.line.dash == "dash" and first.line.dash == "solid"
    assert list(last.y) == [0.5, 0.33, 0.2], "its values untouched"


# ----------------------------------------------------------------------------- notebooks


def test_notebooks_are_committed_without_outputs():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        dirty = [i for i, c in enumerate(nb["cells"])
                 if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
        assert not dirty, (f"{path.name}: cells {dirty} carry outputs (JupyterLab saves them); "
                           "`make strip` removes them from every notebook")


def test_code_cells_are_at_most_ten_lines():
    # A cell shows one step; the idea's code lives in the package and is shown from there.
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        long = {i: len("".join(c["source"]).rstrip().splitlines()) for i, c in enumerate(cells)
                if c["cell_type"] == "code"}
        long = {i: n for i, n in long.items() if n > 10}
        assert not long, f"{path.name}: code cells over 10 lines (cell: lines): {long}"


def test_runs_on_different_gpu_counts_both_stay(ledger_dir, monkeypatch):
    real = results.provenance
    monkeypatch.setattr(results, "provenance", lambda p, s: {**real(p, s), "n_gpus": 2})
    results.record("demo", _rows([1.0, 2.0]), preset="full", seed=0)
    monkeypatch.setattr(results, "provenance", lambda p, s: {**real(p, s), "n_gpus": 8})
    results.record("demo", _rows([3.0, 4.0]), preset="full", seed=0)
    assert sorted(results.load("demo")["value"]) == [1.0, 2.0, 3.0, 4.0]


def test_rerecording_with_empty_cells_and_error_column(ledger_dir):
    first = pd.DataFrame({"size": [1, 2], "note": [None, "x"], "metric": "t",
                          "value": [1.0, math.nan], "status": ["ok", "oom"],
                          "error": ["", "CUDA out of memory"]})
    results.record("demo", first, preset="small", seed=0)
    again = first.assign(value=[1.5, 2.5], status="ok", error="")
    results.record("demo", again, preset="small", seed=0)
    frame = results.load("demo").sort_values("size")
    assert frame["value"].tolist() == [1.5, 2.5], "a good rerun replaces both the old and oom row"


def test_roofline_explorer_and_claims_from_recorded_rows():
    recorded = results.load("roofline", ok_only=True)
    assert not recorded.empty, "the H100 roofline must be recorded in data/results/roofline.csv"
    table = hardware.roofline_claims(recorded)  # one block of claims per recorded machine
    machines = recorded.groupby(["device", "n_gpus"]).ngroups
    assert len(table) == machines * (1 + len(hardware.MATMUL_DTYPES))
    explorer = hardware.roofline_explorer(recorded)
    explorer.set(dtype="bf16", intensity=1.0)
    low = explorer.fig.data[1].y[0]
    explorer.set(intensity=2000.0)
    assert explorer.fig.data[1].y[0] > low, "more FLOP per byte must reach higher on the roof"
    assert "compute-bound" in explorer.message.value


def test_json_lists_become_tuples_and_wrong_values_are_one_line():
    exp = registry.get("notebook_walltime")
    cfg = exp.config("small", notebooks=["00_setup"])
    assert cfg.notebooks == ("00_setup",), "a JSON list must arrive as the tuple the config holds"
    with pytest.raises(WorkbookError, match="copy_mb"):
        registry.get("roofline").config("small", copy_mb=[1, 2])


def test_failure_row_names_the_overrides_that_failed():
    row = runner.failure_row({"name": "mfu_benchmark", "seed": 0,
                              "overrides": {"runs": ("compiled:causal:liger",), "repeats": 5}},
                             "error", "boom")
    assert row.loc[0, "runs"] == '["compiled:causal:liger"]' and row.loc[0, "repeats"] == 5
    assert row.loc[0, "status"] == "error" and row.loc[0, "error"] == "boom"
    assert "overrides" not in row


def test_cli_help_names_every_experiment_without_importing_torch():
    import subprocess
    import sys

    from workbook.__main__ import experiment_names

    assert experiment_names() == list(registry.experiments()), (
        "the names --help reads from the source must be the registry's")
    probe = ("import sys; from workbook.__main__ import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip().endswith("False False"), f"--help must not import torch or pandas: {out}"


def test_an_interrupted_caller_leaves_no_child_running(tmp_path):
    """Ctrl-C (or a notebook's "Interrupt kernel") while runner.call waits kills the child."""
    import signal as sig

    def interrupt(*_):
        raise KeyboardInterrupt

    old = sig.signal(sig.SIGALRM, interrupt)
    sig.setitimer(sig.ITIMER_REAL, 3.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.call("tests._runner_targets:sleep_writing_pid",
                        {"path": str(tmp_path / "pid"), "seconds": 120}, timeout_s=300,
                        progress="sleeping")
    finally:
        sig.setitimer(sig.ITIMER_REAL, 0)
        sig.signal(sig.SIGALRM, old)
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):  # signal 0: is it still there?
        os.kill(pid, 0)


def test_the_progress_bar_ends_saying_the_run_ended(tmp_path, capsys):
    """A saved notebook keeps the bar's last text: it must say the run ended, not 'running'."""
    runner.call("tests._runner_targets:sleep_writing_pid",
                {"path": str(tmp_path / "pid"), "seconds": 1.5}, timeout_s=60,
                progress="sleeping")
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "sleeping: ended after" in text, text[-300:]


def test_live_rows_carry_the_device_like_recorded_ones(monkeypatch):
    """07 crashed on a GPU (KeyError 'device'): live rows had no provenance columns."""
    monkeypatch.setattr(registry, "run_isolated",
                        lambda *a, **k: pd.DataFrame({"metric": ["m"], "value": [1.0],
                                                      "status": ["ok"], "source": "measured"}))
    rows = registry.live_or_recorded("roofline", "small")
    assert rows.loc[0, "device"] == results.provenance("small", 0)["device"]
    assert {"n_gpus", "torch", "preset", "seed", "recorded_at"} <= set(rows.columns)


def test_a_recording_run_all_leaves_its_rows_in_the_ledger(monkeypatch, ledger_dir):
    """scripts/gpu_notebooks.sh sets WORKBOOK_RECORD=1: what a notebook measures live is
    recorded; a reader's run (unset) records nothing."""
    monkeypatch.delenv(registry.RECORD_ENV, raising=False)
    registry.live_or_recorded("roofline", "small", copy_mb=1, matmul_n=64, repeats=1)
    assert results.load("roofline").empty
    monkeypatch.setenv(registry.RECORD_ENV, "1")
    live = registry.live_or_recorded("roofline", "small", copy_mb=1, matmul_n=64, repeats=1)
    recorded = results.load("roofline")
    assert len(recorded) == len(live) and set(recorded["source"]) == {"recorded"}


def test_gpu_memory_cap_is_read_checked_and_reported(monkeypatch):
    # WORKBOOK_GPU_MEMORY_GB emulates a smaller card: a number of GB, else one line.
    monkeypatch.delenv(hardware.GPU_MEMORY_CAP_ENV, raising=False)
    assert hardware.gpu_memory_cap_gb() is None
    monkeypatch.setenv(hardware.GPU_MEMORY_CAP_ENV, "24")
    assert hardware.gpu_memory_cap_gb() == 24.0
    for bad in ("0", "-3", "nan", "inf", "lots"):
        monkeypatch.setenv(hardware.GPU_MEMORY_CAP_ENV, bad)
        with pytest.raises(WorkbookError, match="allowed: a number of GB from 1 to 10000"):
            hardware.gpu_memory_cap_gb()


def test_walltime_rows_name_the_memory_cap(monkeypatch):
    # A capped Run All must not replace the uncapped rows: the cap is part of the row's key.
    from workbook import walltime

    async def fake_run_all(names, cfg):
        return [{"notebook": n, "seconds": 1.0, "status": "ok", "detail": "", "size_mb": 0.1,
                 "peak_gb": 0.5, "slowest": ""} for n in names]

    monkeypatch.setattr(walltime, "run_all", fake_run_all)
    monkeypatch.setenv(hardware.GPU_MEMORY_CAP_ENV, "24")
    capped = walltime.run_walltime(walltime.WalltimeConfig(notebooks=("00_setup",)))
    assert set(capped["gpu_memory_cap_gb"]) == {24.0}
    assert set(capped["metric"]) == {"wall_time", "executed_size", "peak_memory"}
    monkeypatch.delenv(hardware.GPU_MEMORY_CAP_ENV)
    plain = walltime.run_walltime(walltime.WalltimeConfig(notebooks=("00_setup",)))
    merged = results.merge(results.tidy(capped.assign(preset="small", seed=0)),
                           results.tidy(plain.assign(preset="small", seed=0)))
    assert len(merged) == len(capped) + len(plain), "capped and uncapped rows must both stay"


def test_recorded_small_preset_peaks_fit_binder():
    # The README promises every notebook's small preset fits Binder's 2 GB: the ledger says so.
    rows = results.load("notebook_walltime")
    peaks = rows[(rows["metric"] == "peak_memory") & (rows["source"] == "recorded")
                 & (rows["run_preset"] == "small")]
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert set(peaks["notebook"]) == notebooks, "a notebook without a recorded peak"
    over = peaks[peaks["value"] >= 2.0]
    assert over.empty, f"over Binder's 2 GB: {over[['notebook', 'value']].to_dict('records')}"


def test_live_rows_are_the_numbers_and_recorded_devices_stand_beside(monkeypatch):
    # Issue 17's rule: rows measured here replace the ledger's rows of the same device; other
    # devices' rows stay as references, and the claims table names where each block comes from.
    recorded = results.load("roofline", ok_only=True)
    device = recorded["device"].iloc[0]
    mine = recorded[recorded["device"] == device]
    live = mine.assign(source=mine["source"].replace("recorded", "measured"),
                       value=mine["value"] * 1.01)
    shown = registry.with_references("roofline", live)
    here = shown[shown["device"] == device]
    assert len(here) == len(live) and (here["value"] == live["value"].to_numpy()).all(), \
        "the same device's recorded rows must give way to live ones"
    assert set(shown["device"]) == set(recorded["device"]), "other devices' rows stay beside"
    other = live.assign(device="NVIDIA B200 (no row of it recorded)")
    shown = registry.with_references("roofline", other)
    assert set(shown["device"]) == {*other["device"], *recorded["device"]}
    table = hardware.roofline_claims(shown)
    assert table["where"].iloc[0] == "this machine (NVIDIA B200 (no row of it recorded))", \
        "this machine's block first"
    assert table["where"].str.startswith("recorded on").any()
    explorer = hardware.roofline_explorer(shown)
    assert [t.name for t in explorer.fig.data if t.showlegend is not False][0].startswith(
        "this machine")


def test_a_recording_machine_is_its_device_and_its_gpu_count():
    # A 1-GPU H200 run replaces the recorded H200 ×1 rows; the H200 ×4 rows stay as references.
    rec = results.load("zero_stages", ok_only=True)
    h200 = rec[rec["device"] == "NVIDIA H200"]
    assert {1, 4} <= set(h200["n_gpus"].astype(int)), "the ledger lost its H200 ×1/×4 rows"
    live = h200[h200["n_gpus"].astype(int) == 1].assign(source="measured")
    shown = registry.with_references("zero_stages", live)
    refs = shown[shown["source"] == "recorded"]
    assert not ((refs["device"] == "NVIDIA H200") & (refs["n_gpus"].astype(int) == 1)).any()
    assert (refs["n_gpus"].astype(int) == 4).any()


def test_run_or_button_runs_quick_experiments_and_offers_slow_ones(monkeypatch):
    # Issue 17: no notebook hard-codes a preset; what takes over a minute here waits for a
    # button that says how long, so Run All stays quick on a GPU too.
    ran = []
    monkeypatch.setattr(registry, "why_not_here", lambda name, preset=None: None)
    monkeypatch.setattr(registry, "live_or_recorded",
                        lambda name, preset=None: ran.append((name, preset)) or "rows")
    monkeypatch.setattr(registry, "expected_seconds", lambda name, preset=None: (20.0, "last"))
    assert widgets.run_or_button("scaling_isoflop", lambda rows: f"fig({rows})",
                                 preset="small") == "fig(rows)"
    assert ran == [("scaling_isoflop", "small")]
    monkeypatch.setattr(registry, "expected_seconds", lambda name, preset=None: (300.0, "typ"))
    previewed = []
    button = widgets.run_or_button(
        "scaling_isoflop", lambda rows: previewed.append(rows) or f"fig({rows})", preset="full",
        references=True)
    assert isinstance(button, widgets.RunButton) and len(ran) == 1, "nothing runs before a click"
    # until the click, the button shows show() of no live rows: here the references, the
    # ledger's rows (device and date on each), and none of them passed off as live
    assert len(previewed) == 1 and (previewed[0]["source"] == "recorded").all()
    kept = []
    widgets.run_or_button("scaling_isoflop", kept.append, preset="full")
    assert len(kept) == 1 and kept[0].empty, "a show that keeps its rows is not given the ledger"
    drawn = []
    widgets.run_or_button("scaling_isoflop", kept.append, preset="full", preview=drawn.append)
    assert len(kept) == 1 and len(drawn) == 1 and len(drawn[0]) > 0
    assert "about 5 min" in button.button.description
    button = widgets.run_or_button("scaling_isoflop", lambda rows: f"fig({rows})", preset="full")
    assert button.click() == "fig(rows)" and ran[-1] == ("scaling_isoflop", "full")


def test_expected_seconds_prefers_this_machines_last_run(monkeypatch):
    monkeypatch.setattr(registry, "run_durations", lambda: {})
    assert registry.expected_seconds("scaling_isoflop", "full") == (
        float(registry.get("scaling_isoflop").typical_s["full"]),
        "typical; not yet timed in this checkout")
    assert registry.expected_seconds("roofline", "small")[0] is None
    key = f"roofline|small|{hardware.detect().name}|{{}}"
    monkeypatch.setattr(registry, "run_durations", lambda: {key: 12.5})
    assert registry.expected_seconds("roofline", "small") == (12.5, "its last run on this machine")


def test_run_or_button_refuses_bad_input_in_one_line():
    with pytest.raises(WorkbookError, match="unknown experiment 'bogus'"):
        widgets.run_or_button("bogus", print)
    with pytest.raises(WorkbookError, match="budget_s=-1"):
        widgets.run_or_button("roofline", print, budget_s=-1)


def test_runner_shares_the_cpu_threads_among_ranks():
    # One thread per core in each of two ranks oversubscribes a 2-core box (issue 20): the
    # runner gives each rank its share of what cpu_threads() allows ($WORKBOOK_THREADS here).
    one = runner.call("tests._runner_targets:thread_count", env={"WORKBOOK_THREADS": "3"})
    assert one["threads"].tolist() == [3]
    two = runner.call_distributed("tests._runner_targets:thread_count", nprocs=2,
                                  backend="gloo", env={"WORKBOOK_THREADS": "4"})
    assert sorted(two["threads"].tolist()) == [2, 2], two


def test_claims_judge_one_machine_never_a_mix():
    rec = results.load("roofline", ok_only=True)
    assert rec["device"].nunique() >= 2, "the roofline ledger holds H100 and H200 rows"
    latest = registry.main_rows(rec)
    assert latest["device"].nunique() == 1
    assert str(latest["recorded_at"].max()) == str(rec["recorded_at"].astype(str).max())
    live = rec[rec["device"] == rec["device"].iloc[0]].assign(source="measured",
                                                              device="this GPU")
    mixed = registry.with_references("roofline", live)
    assert set(registry.main_rows(mixed)["device"]) == {"this GPU"}
    assert registry.shown("roofline") is mixed or registry.shown("roofline").equals(mixed)


def test_a_figure_draws_one_trace_per_machine_named_by_it():
    rows = pd.DataFrame({"n": [1, 2, 1, 2, 1, 2], "value": [1.0, 2, 3, 4, 5, 6],
                         "variant": "a", "status": "ok",
                         "source": ["measured"] * 2 + ["recorded"] * 4,
                         "device": ["NVIDIA H200"] * 2 + ["NVIDIA H100 80GB HBM3"] * 2
                         + ["CPU (x86_64, 2 cores)"] * 2,
                         "n_gpus": [1, 1, 1, 1, 0, 0], "recorded_at": "2026-12-02", "seed": 0})
    names = [t.name for t in plots.compare(rows, x="n", group="variant").data]
    assert names == ["a (measured, H200)", "a (recorded, H100 80GB HBM3)", "a (recorded, CPU)"]
    one = rows[rows["device"] == "NVIDIA H200"]
    assert [t.name for t in plots.compare(one, x="n", group="variant").data] == ["a (measured)"]


def test_provenance_label_of_rows_a_view_derived_with_the_device_only():
    # 10's DPO curves keep the device but not n_gpus: the title named nothing, it raised.
    rows = pd.DataFrame({"device": ["NVIDIA H200"], "value": [1.0], "source": "recorded"})
    assert results.provenance_label(rows) == "recorded on NVIDIA H200, ?"


def test_a_measured_oom_point_survives_a_second_recording_beside_its_prediction(ledger_dir):
    """memory_fit and qlora_vram record an oom point beside the formula's ok row for the same
    configuration; the ledger key once left out the source, so recording the experiment a
    second time let the ok prediction replace the oom point."""
    rows = pd.DataFrame([{"size": "7b", "metric": "peak", "value": float("nan"),
                          "source": "measured", "status": "oom"},
                         {"size": "7b", "metric": "peak", "value": 80.0,
                          "source": "predicted", "status": "ok"}])
    for _ in range(2):
        results.record("oom_twice", rows, preset="small", seed=0)
    kept = pd.read_csv(results.ledger_path("oom_twice"))
    assert sorted(kept["status"]) == ["ok", "oom"] and len(kept) == 2


DISPATCHERS = [n for n, e in registry.experiments().items() if e.dispatches]


@pytest.mark.parametrize("name", DISPATCHERS)
def test_a_dispatcher_measures_only_in_the_processes_it_starts(monkeypatch, name):
    """run_isolated runs a ``dispatches`` experiment in the caller's process: that is only
    sound if its run() starts a fresh process for each measurement. With every start
    failing, it must still have started some, and come back with rows, not an exception."""
    started = []

    def fake_call(func, kwargs, **_):
        started.append(func)
        return runner.failure_row(kwargs, "crash", "exit code 1: deliberately not run")

    monkeypatch.setattr(runner, "call", fake_call)
    monkeypatch.setattr(runner, "call_distributed", fake_call)
    monkeypatch.setattr(registry, "why_not_here", lambda *a: None)
    rows = registry.run_isolated(name, "small")
    assert started, f"{name} says it dispatches but started no process"
    assert len(rows) and (rows["status"] != "ok").any()


def test_a_dispatcher_that_raises_is_a_row(monkeypatch):
    monkeypatch.setattr(registry, "execute", lambda **_: 1 / 0)
    monkeypatch.setattr(registry, "why_not_here", lambda *a: None)
    rows = registry.run_isolated(DISPATCHERS[0], "small")
    assert rows["status"].tolist() == ["error"] and "ZeroDivisionError" in rows["error"][0]

    def no_memory(**_):
        raise MemoryError("deliberate")

    monkeypatch.setattr(registry, "execute", no_memory)
    assert registry.run_isolated(DISPATCHERS[0], "small")["status"].tolist() == ["oom"], \
        "the same statuses as a child's: an out-of-memory error is an oom row"



def test_rows_measured_under_an_emulated_smaller_card_are_not_recorded(monkeypatch, ledger_dir):
    """A 24 GB-cap Run All recorded attention rows as the H200's (oom where it has room)."""
    monkeypatch.setenv("WORKBOOK_GPU_MEMORY_GB", "24")
    monkeypatch.setenv(registry.RECORD_ENV, "1")
    assert not registry.recording(), "a capped Run All must not record the experiments' rows"
    with pytest.raises(WorkbookError, match="WORKBOOK_GPU_MEMORY_GB is set"):
        results.record("demo", _rows([1.0, 2.0]), preset="small", seed=0)
    assert not (ledger_dir / "demo.csv").exists()
    # rows that carry the cap (notebook_walltime's) say what they were measured under
    results.record("demo", _rows([1.0, 2.0]).assign(gpu_memory_cap_gb=24.0), preset="small", seed=0)
    monkeypatch.delenv("WORKBOOK_GPU_MEMORY_GB")
    assert registry.recording()


def test_a_profiled_child_leaves_its_profile(monkeypatch, tmp_path):
    monkeypatch.setenv(runner.PROFILE_VAR, str(tmp_path / "profiles"))
    rows = runner.call("tests._runner_targets:sleep", {"seconds": 0.2})
    assert rows["status"].eq("ok").all()
    (report,) = (tmp_path / "profiles").glob("tests._runner_targets.sleep-*.txt")
    assert "cumulative" in report.read_text() and "time.sleep" in report.read_text()


def test_binders_memory_budget_is_the_small_presets_only(monkeypatch):
    """00's peak-memory figure drew a 2 GB 'budget, full' line beside GPU runs of 10+ GB."""
    from workbook import walltime

    async def fake_run_all(names, cfg):
        return [{"notebook": n, "seconds": 1.0, "status": "ok", "detail": "", "size_mb": 0.1,
                 "peak_gb": 12.0, "slowest": ""} for n in names]

    monkeypatch.setattr(walltime, "run_all", fake_run_all)
    budgets = {}
    for preset in ("small", "full"):
        rows = walltime.run_walltime(walltime.WalltimeConfig(notebooks=("00_setup",),
                                                             preset=preset))
        budgets[preset] = rows[(rows.source == "predicted") & (rows.metric == "peak_memory")]
    assert len(budgets["small"]) == 1 and budgets["full"].empty
    ledger = pd.concat([budgets["small"], budgets["small"].assign(run_preset="full")]).assign(
        device="budget")
    runs = walltime.figure(ledger, "peak_memory")
    assert [t.name for t in runs.data] == ["budget, small"]


def test_walltime_caption_adds_each_run_up_and_names_what_went_over():
    from workbook import walltime

    def row(nb, value, source="measured", status="ok", cap=float("nan"), device="GPU X"):
        return {"notebook": nb, "metric": "wall_time", "value": value, "source": source,
                "status": status, "run_preset": "full", "device": device,
                "gpu_memory_cap_gb": cap}
    ledger = pd.DataFrame([row("00_setup", 120.0, "predicted", device="budget"),
                           row("00_setup", 30.0), row("07_flash", 500.0), row("07_flash", 150.0),
                           row("00_setup", 40.0, cap=24.0), row("07_flash", 9.0, "measured",
                                                                "timeout", cap=24.0)])
    text = walltime.caption(ledger)
    assert "**GPU X, full**: 2 of 2 notebooks ok, 180 s in all; over the 120 s budget: " \
           "07_flash (150 s)." in text, "the latest row of each notebook, summed"
    assert "**GPU X ≤24 GB, full**: 1 of 2 notebooks ok, 40 s in all; each within the 120 s " \
           "budget; not ok: 07_flash (timeout)." in text, text
    assert "No notebook_walltime rows" in walltime.caption(ledger.iloc[0:0])
    bars = {t.name: dict(zip(t.x, t.text, strict=True))
            for t in walltime.figure(ledger).data}
    assert bars["GPU X, full"] == {"00_setup": "", "07_flash": "over"}, "150 s > 120 s"
    assert bars["budget, full"] == {"00_setup": ""}, bars
    # the budget rows of two machines (each run records its own): still one budget series,
    # and no run's name gains a device (00's figure read 'H200, full, H200' at 258327b)
    two = pd.concat([ledger, pd.DataFrame([row("07_flash", 120.0, "predicted", device="GPU Y")])])
    names = {t.name for t in walltime.figure(two).data}
    assert names == {"GPU X, full", "GPU X ≤24 GB, full", "budget, full"}, names


def test_interleaved_timing_takes_turns_and_keeps_each_ones_median():
    """lora_merge timed base, adapter and merged one after the other; a drift between them
    read as a cost of merging. Interleaved, a slow phase is shared by all of them."""
    from workbook import profiling

    calls, clock = [], {"slow": False}

    def make(name, ms):
        def fn():
            calls.append(name)
            time.sleep((ms + (20 if clock["slow"] else 0)) / 1e3)
            clock["slow"] = len(calls) > 12  # the second half of the run is slower for all
        return fn

    out = profiling.time_ms_interleaved({"a": make("a", 1), "b": make("b", 5)}, warmup=1,
                                        repeats=8, device="cpu")
    assert calls[:2] == ["a", "b"] and len(calls) == 2 + 16
    assert calls[2:6] == ["a", "b", "b", "a"], "each round rotates the order"
    assert out["b"] > out["a"], out
    with pytest.raises(WorkbookError, match="fns is empty"):
        profiling.time_ms_interleaved({})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_queued_timing_leaves_out_the_hosts_share_on_a_gpu():
    # each call: 3 ms of host work (as Python's launch overhead is), then ~20 ms of GPU work.
    # Call by call the clock counts both; queued, the host's 3 ms hide under the GPU's work.
    x = torch.randn(4096, 4096, device="cuda")

    def fn():
        time.sleep(0.003)
        for _ in range(10):
            x @ x

    alone, queued = (profiling.time_ms(fn, warmup=2, repeats=8, queued=q) for q in (False, True))
    assert queued < alone - 2, (alone, queued)


def test_recorded_oom_points_reach_the_reader_and_failed_runs_do_not(ledger_dir):
    """12's optimizer table showed NaN for the two configurations that ran out of memory under
    the 40 GB cap, and 07 drew no cross for the H100's out-of-memory vanilla run: recorded
    references were loaded with ok rows only. An oom row is a point (the boundary of what
    fits), an unsupported one a reason; an error or a timeout is not a result."""
    statuses = ["ok", "oom", "unsupported", "error", "timeout"]
    rows = pd.DataFrame({"size": ["a", "b", "c", "d", "e"], "metric": "peak",
                         "value": [1.0, float("nan"), float("nan"), float("nan"), float("nan")],
                         "source": "measured", "status": statuses})
    results.record("qlora_vram", rows, preset="full", seed=0)
    assert sorted(results.load_shown("qlora_vram")["status"]) == ["ok", "oom", "unsupported"]
    live = pd.DataFrame({"size": ["a"], "metric": ["peak"], "value": [2.0],
                         "source": ["measured"], "status": ["ok"], "device": ["another GPU"],
                         "n_gpus": [1]})
    shown = registry.with_references("qlora_vram", live)
    assert sorted(shown["status"]) == ["ok", "ok", "oom", "unsupported"]
    assert "error" not in set(registry.shown("qlora_vram")["status"])


def test_a_rerun_that_launched_other_kernels_replaces_the_old_rows(ledger_dir):
    """07's ledger held two H200 recordings of one configuration (2.554 and 2.413 GB): the
    kernel count, an outcome, was part of the row's key."""
    for kernels, value in ((5, 2.554), (6, 2.413)):
        rows = pd.DataFrame([{"variant": "triton", "seq_len": 16384, "kernels": kernels,
                              "metric": "hbm_total", "value": value, "source": "measured"}])
        results.record("rerun_kernels", rows, preset="full", seed=0)
    kept = pd.read_csv(results.ledger_path("rerun_kernels"))
    assert kept["value"].tolist() == [2.413] and kept["kernels"].tolist() == [6]


def test_machine_blocks_put_this_machine_first_then_the_latest_recording():
    """One split by machine for the per-machine tables (08 and 10 had a copy each)."""
    def rows(device, source, when, n=1):
        return pd.DataFrame({"metric": ["m"], "value": [1.0], "source": [source],
                             "device": [device], "n_gpus": [n], "recorded_at": [when]})

    mixed = pd.concat([rows("H100", "recorded", "2026-11-22"), rows("H200", "recorded",
                       "2026-12-03", 4), rows("GPU here", "measured", None),
                       rows("GPU here", "predicted", None)])   # a repeated index, as concat gives
    blocks = registry.machine_blocks(mixed)
    assert [len(part) for _, part in blocks] == [2, 1, 1]
    assert blocks[0][0].startswith("this machine")
    assert [str(part["device"].iloc[0]) for _, part in blocks] == ["GPU here", "H200", "H100"]
    recorded = registry.machine_blocks(mixed[mixed["source"] == "recorded"])
    assert [str(part["device"].iloc[0]) for _, part in recorded] == ["H200", "H100"]
    assert registry.machine_blocks(mixed.iloc[0:0]) == []


def test_parse_res_usage_reads_registers_and_spills_per_function():
    text = """
 Resource usage:
 Common:
  GLOBAL:11 CONSTANT[4]:8
 Function _attn_fwd_tma:
  REG:255 STACK:544 SHARED:1024 LOCAL:0 CONSTANT[0]:1344 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function other:
  REG:40 STACK:0 SHARED:0 LOCAL:16 CONSTANT[0]:900 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    found = profiling.parse_res_usage(text)
    assert found["_attn_fwd_tma"]["REG"] == 255 and found["_attn_fwd_tma"]["STACK"] == 544
    assert found["other"]["LOCAL"] == 16 and found["other"]["CONSTANT[0]"] == 900

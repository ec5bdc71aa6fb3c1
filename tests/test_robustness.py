"""The runner, the CLI and the ledger under abuse (issue 23), one test per line of its table:
bad values are refused in one line before anything runs, no process outlives its call, and
no ledger row is lost to concurrent or killed writers."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
import traceback
import typing
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from workbook import registry, results, runner
from workbook.__main__ import main
from workbook.config import MAY_BE_EMPTY, PROJECT_PATH, WorkbookError

ROOT = Path(__file__).resolve().parent.parent
HAS_PROC = Path("/proc/self/environ").exists()
needs_proc = pytest.mark.skipif(not HAS_PROC, reason="process checks read Linux's /proc")


# ------------------------------------------------------------------ every field, every kind


def _bad_values(hint: typing.Any) -> list[typing.Any]:
    """Values a field of this type must refuse: the wrong type, out of any sane range, not a
    finite number, empty. Derived from the type hint, so a new field is covered at once."""
    marks: tuple = ()
    if typing.get_origin(hint) is typing.Annotated:
        hint, *rest = typing.get_args(hint)
        marks = tuple(rest)
    args = typing.get_args(hint)
    if type(None) in args:  # `str | None`: None is allowed, the rest as for str
        return [v for v in _bad_values(args[0]) if v is not None]
    if typing.get_origin(hint) is tuple:
        bad = [5, "x", None, [None], [[1, 2]]]
        if MAY_BE_EMPTY not in marks:
            bad.append([])
        element = args[0]
        if element in (int, float):
            bad += [[True], [-5], [10**30], [math.nan]]
        if element is str:
            bad += [["no_such_choice"], [7]]
        if element is bool:
            bad += [[1], ["true"]]
        return bad
    if hint is bool:
        return [1, 0, "true", None, [], 1.5]
    if hint is int:
        return [True, False, 1.5, "7", None, [], -5, 10**30, math.nan]
    if hint is float:
        return [True, "0.1", None, [], -5.0, 1e30, math.nan, math.inf, -math.inf]
    if hint is str:
        free_text = PROJECT_PATH in marks  # any name is a path; only its place is checked
        return [5, None, True, []] + ([] if free_text else ["no_such_choice"])
    raise AssertionError(f"no bad values known for type {hint!r}: teach this test")


@pytest.mark.parametrize("name", list(registry.experiments()))
def test_every_field_refuses_bad_values_in_one_line(name):
    exp = registry.get(name)
    base = exp.presets["small"]
    hints = typing.get_type_hints(type(base), include_extras=True)
    accepted = []
    for field in dataclasses.fields(base):
        for value in _bad_values(hints[field.name]):
            try:
                exp.config("small", **{field.name: value})
            except WorkbookError as exc:
                text = str(exc)
                assert "\n" not in text and "allowed" in text, (
                    f"{name} --set {field.name}={value!r}: the error must be one line that "
                    f"says what is allowed, got {text!r}")
            else:
                accepted.append(f"{field.name}={value!r}")
    assert not accepted, f"{name} accepted bad values: {', '.join(accepted)}"


def test_type_errors_name_the_field_and_what_it_takes():
    exp = registry.get("mfu_benchmark")
    with pytest.raises(WorkbookError, match=r"^repeats=True has the wrong type; allowed: an int"):
        exp.config("small", repeats=True)
    with pytest.raises(WorkbookError, match=r"^repeats=1.5 has the wrong type"):
        exp.config("small", repeats=1.5)
    with pytest.raises(WorkbookError, match=r"^runs=\[\] is empty; allowed: a list of strings"):
        exp.config("small", runs=[])
    with pytest.raises(WorkbookError, match=r"^n_heads=-5 is out of range; allowed: 1 to 256"):
        registry.get("attention_gpt2_medium").config("small", n_heads=-5)


def test_good_values_are_converted_to_what_the_config_holds():
    cfg = registry.get("lora_sweep").config("small", lrs=[1, 0.01], ranks=[2], lr=1)
    assert cfg.lrs == (1.0, 0.01) and cfg.ranks == (2,) and cfg.lr == 1.0
    assert isinstance(cfg.lr, float), "an integer given for a float field becomes a float"


def test_preset_override_sets_the_field_or_says_there_is_none():
    """`--set preset=…` was a TypeError (preset is also the experiment's own argument)."""
    assert registry.get("lora_merge").config("small", preset="full").preset == "full"
    with pytest.raises(WorkbookError, match="preset='bogus' is not allowed"):
        registry.get("lora_merge").config("small", preset="bogus")
    with pytest.raises(WorkbookError, match=r"no parameter \['preset'\].*--preset"):
        registry.get("roofline").config("small", preset="full")


def test_paths_from_overrides_stay_inside_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBOOK_OUT", raising=False)
    exp = registry.get("scaling_isoflop")
    for outside in ("../../escape.csv", "/tmp/escape.csv", "data/../../escape.csv"):
        with pytest.raises(WorkbookError, match="outside the project"):
            exp.config("small", checkpoint=outside)
    inside = exp.config("small", checkpoint="data/cache/ck.csv").checkpoint
    assert inside == str(ROOT.resolve() / "data" / "cache" / "ck.csv"), (
        "a relative path counts from the project's root, whatever the working directory")
    monkeypatch.setenv("WORKBOOK_OUT", str(tmp_path))  # what scripts/gpu_scaling.sh does
    assert exp.config("small", checkpoint=str(tmp_path / "ck.csv")).checkpoint == str(
        (tmp_path / "ck.csv").resolve())


def test_a_notebook_showing_recorded_rows_still_refuses_a_bad_value(monkeypatch):
    monkeypatch.setattr(registry, "why_not_here", lambda *a: "needs a GPU (test)")
    with pytest.raises(WorkbookError, match="n_heads=-5 is out of range"):
        registry.live_or_recorded("attention_gpt2_medium", "small", n_heads=-5)


def test_a_run_without_rows_says_so_not_that_columns_are_missing(monkeypatch):
    """Issue 23: an accepted bad value that produced no rows read 'result rows lack columns'."""
    empty = dataclasses.replace(registry.get("roofline"), run=lambda cfg, seed: pd.DataFrame())
    monkeypatch.setitem(registry.experiments(), "roofline", empty)
    with pytest.raises(WorkbookError, match="roofline produced no rows"):
        registry.execute("roofline", "small")


# ------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("experiment,setting,field", [
    ("roofline", "repeats=true", "repeats"),             # bool for an int
    ("mfu_benchmark", "repeats=1.5", "repeats"),         # a float for an int
    ("flops_sweep", "d_models=[]", "d_models"),          # an empty list
    ("mfu_benchmark", "runs=[-1]", "runs"),              # a number for a run name
    ("zero_stages", "timeout_s=-5", "timeout_s"),        # a negative timeout
    ("attention_gpt2_medium", "n_heads=-5", "n_heads"),  # was: negative FLOPs, status ok
    ("roofline", "copy_mb=NaN", "copy_mb"),
    ("lora_merge", "preset=bogus", "preset"),            # was: a TypeError traceback
    ("roofline", "preset=full", "preset"),
    ("scaling_isoflop", "checkpoint=../../escape.csv", "checkpoint"),
    ("roofline", "no_such_field=1", "no_such_field"),
])
def test_cli_bad_value_exits_2_with_one_line(experiment, setting, field, capsys, ledger_dir):
    code = main(["run", experiment, "--preset", "small", "--set", setting])
    err = capsys.readouterr().err
    assert code == 2, f"--set {setting} must be refused before any run (exit 2), got {code}"
    assert err.startswith("error: ") and err.count("\n") == 1 and field in err, (
        f"one line naming {field!r} expected on stderr, got {err!r}")
    assert not list(ledger_dir.iterdir()), "nothing may be recorded"


def test_cli_bad_seed_exits_2(capsys):
    assert main(["run", "roofline", "--preset", "small", "--seed", "-1"]) == 2
    assert "seed=-1 is out of range" in capsys.readouterr().err


def test_cli_process_refuses_a_bad_preset_field_without_a_traceback():
    out = subprocess.run([sys.executable, "-m", "workbook", "run", "lora_merge", "--preset",
                          "small", "--set", "preset=fast"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr
    assert "preset='fast' is not allowed" in out.stderr


# --------------------------------------------------------------------------------- runner


def test_runner_names_a_missing_module_in_one_line():
    with pytest.raises(WorkbookError, match="there is no module 'no'"):
        runner.call("no.such.module:f")
    with pytest.raises(WorkbookError, match="has no function 'nope'"):
        runner.call("tests._runner_targets:nope")


@pytest.mark.parametrize("bad", [0, -5, math.nan, math.inf, True])
def test_runner_refuses_a_timeout_that_cannot_be_one(bad):
    with pytest.raises(WorkbookError, match="timeout_s"):
        runner.call("tests._runner_targets:rows", timeout_s=bad)


@pytest.mark.parametrize("target", ["raise_memory_error", "cpu_oom"])
def test_cpu_out_of_memory_is_oom_not_error(target):
    rows = runner.call(f"tests._runner_targets:{target}", {}, timeout_s=120)
    assert rows["status"].tolist() == ["oom"], f"{target}: {rows['error'].tolist()}"


def _alive(pid: int) -> bool:
    """Is ``pid`` a live process? A zombie (dead, not yet reaped by PID 1) is not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _wait_for(paths: list[Path], within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if all(p.exists() and p.read_text() for p in paths):
            return [int(p.read_text()) for p in paths]
        time.sleep(0.1)
    raise AssertionError(f"{[p.name for p in paths]} never appeared: the processes did not start")


def _still_alive(pids: list[int], within_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@needs_proc
def test_timed_out_two_rank_run_leaves_no_process(tmp_path):
    """torchrun gives each rank a session of its own: a process-group kill left them running."""
    rows = runner.call_distributed("tests._runner_targets:sleep_rank_writing_pid",
                                   {"folder": str(tmp_path), "seconds": 300}, nprocs=2,
                                   backend="gloo", timeout_s=10)
    pid_files = sorted(tmp_path.glob("rank*.pid"))
    assert len(pid_files) == 2, "both ranks must have started before the timeout, or this "\
        "test proves nothing (a very slow machine: raise timeout_s)"
    ranks = [int(p.read_text()) for p in pid_files]
    left = _still_alive(ranks, within_s=0)
    for pid in left:  # leave the machine clean even when this test fails
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"{len(left)} rank(s) outlived the timeout"
    assert rows["status"].tolist() == ["timeout", "timeout"]
    killed = re.search(r"with its (\d+) process", rows["error"].iloc[0])
    assert killed and int(killed.group(1)) >= 3, (
        f"the row must say that torchrun and both ranks were killed: {rows['error'].iloc[0]}")


@needs_proc
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_timed_out_nccl_run_frees_the_gpu(tmp_path):
    """The issue's case: orphaned ranks kept their GPU memory."""
    nprocs = torch.cuda.device_count()
    rows = runner.call_distributed("tests._runner_targets:cuda_hold_writing_pid",
                                   {"folder": str(tmp_path), "n_bytes": 2**30, "seconds": 300},
                                   nprocs=nprocs, backend="nccl", timeout_s=60)
    ranks = [int(p.read_text()) for p in sorted(tmp_path.glob("rank*.pid"))]
    assert len(ranks) == nprocs, "every rank must have started before the timeout"
    left = _still_alive(ranks, within_s=0)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [] and set(rows["status"]) == {"timeout"}, f"{len(left)} rank(s) left"


def _python(script: str) -> subprocess.Popen:
    """A caller of the runner in a process of its own (its own session, as a terminal's
    foreground job would be), with SIGINT's default handler even where the shell ignores it."""
    prelude = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    return subprocess.Popen([sys.executable, "-c", prelude + script], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)


@needs_proc
def test_ctrl_c_during_runner_call_leaves_no_child(tmp_path):
    caller = _python(
        "from workbook import runner\n"
        f"runner.call('tests._runner_targets:spawn_and_sleep', "
        f"{{'folder': {str(tmp_path)!r}, 'seconds': 300}}, timeout_s=600)\n")
    try:
        child, grandchild = _wait_for([tmp_path / "child.pid", tmp_path / "grandchild.pid"], 60)
        os.kill(caller.pid, signal.SIGINT)  # what Ctrl-C (or "Interrupt kernel") sends
        _, err = caller.communicate(timeout=60)
    finally:
        caller.kill()
    left = _still_alive([child, grandchild])
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], (
        f"{len(left)} left: the child and its grandchild (in a session of its own) must die "
        "with the interrupt")
    assert "KeyboardInterrupt" in err and "interrupted:" in err, err


@needs_proc
def test_a_killed_caller_takes_torchrun_and_its_ranks_along(tmp_path):
    """A notebook kernel killed (not interrupted) runs no cleanup: PR_SET_PDEATHSIG must."""
    caller = _python(
        "from workbook import runner\n"
        "runner.call_distributed('tests._runner_targets:sleep_rank_writing_pid', "
        f"{{'folder': {str(tmp_path)!r}, 'seconds': 300}}, nprocs=2, backend='gloo', "
        "timeout_s=600)\n")
    try:
        ranks = _wait_for([tmp_path / "rank0.pid", tmp_path / "rank1.pid"], 60)
        caller.kill()  # SIGKILL: no handler runs
        caller.wait(timeout=30)
    finally:
        caller.kill()
    left = _still_alive(ranks)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"{len(left)} rank(s) outlived the caller that started them"


# --------------------------------------------------------------------------------- ledger


@pytest.fixture
def fixed_provenance(monkeypatch):
    """Provenance without torch or git: forked writers must not touch CUDA, and 100 records
    must not spawn 200 git processes."""
    def fake(preset, seed):
        return {"device": "test CPU", "n_gpus": 0, "torch": "x", "cuda": "none",
                "preset": preset, "seed": seed, "recorded_at": "2026-01-01T00:00:00Z",
                "commit": "test"}
    monkeypatch.setattr(results, "provenance", fake)


def _row(writer: int, i: int) -> pd.DataFrame:
    return pd.DataFrame({"writer": [writer], "i": [i], "metric": ["m"], "value": [float(i)]})


def _fork(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child (cheap: pandas and workbook are already imported)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            work()
        except BaseException:  # noqa: BLE001 - report, and never return into pytest
            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def _record_many(writer: int, n: int) -> None:
    for i in range(n):
        results.record("demo", _row(writer, i), preset="small", seed=0)


def test_two_concurrent_writers_lose_no_row(ledger_dir, fixed_provenance):
    """Read-merge-rename without a lock lost 44–49 % of the rows here."""
    writers = [_fork(lambda w=w: _record_many(w, 50)) for w in range(2)]
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in writers]
    assert codes == [0, 0], "a writer failed (its traceback is above)"
    ledger = pd.read_csv(ledger_dir / "demo.csv")
    kept = set(zip(ledger["writer"], ledger["i"], strict=True))
    lost = {(w, i) for w in range(2) for i in range(50)} - kept
    assert not lost, f"{len(lost)} of 100 rows lost by concurrent writers"


def _slow_rename() -> None:
    """In a forked writer: wait a little before each rename, so that a kill lands between the
    temporary file and the rename often (a real kill -9, only more often mid-write)."""
    real = os.replace

    def slow(src, dst):
        time.sleep(0.02)
        real(src, dst)

    os.replace = slow


def test_kill_9_mid_record_loses_no_row_and_leaves_no_temp_file(ledger_dir, fixed_provenance):
    """Before: 0 rows lost, but a temp file left by most kills mid-write, and mode 0600."""
    path = results.record("demo", _row(-1, 0), preset="small", seed=0)
    path.chmod(0o644)
    rng, acknowledged, mid_write = random.Random(23), set(), 0
    for trial in range(25):
        read_end, write_end = os.pipe()

        def record_forever(trial=trial, write_end=write_end):
            _slow_rename()
            for i in itertools.count():
                results.record("demo", _row(trial, i), preset="small", seed=0)
                os.write(write_end, f"{i}\n".encode())  # only now is row i acknowledged

        before = set(ledger_dir.glob(".demo-*"))
        writer = _fork(record_forever)
        os.close(write_end)
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(writer, signal.SIGKILL)
        os.waitpid(writer, 0)
        with os.fdopen(read_end) as acks:
            acknowledged |= {(trial, int(line)) for line in acks.read().split()}
        mid_write += bool(set(ledger_dir.glob(".demo-*")) - before)
        ledger = pd.read_csv(path)  # parseable after every kill
        lost = acknowledged - set(zip(ledger["writer"], ledger["i"], strict=True))
        assert not lost, f"trial {trial}: acknowledged rows lost: {sorted(lost)}"
    assert mid_write, "no kill landed mid-write: this run tested nothing about temp files"
    results.record("demo", _row(-2, 0), preset="small", seed=0)  # the next writer tidies up
    assert not list(ledger_dir.glob(".demo-*")), "a killed writer's temp file was left"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644, "the ledger's mode must survive"


def test_a_stale_temp_file_is_removed_and_a_new_ledger_is_not_private(ledger_dir,
                                                                      fixed_provenance):
    stale = ledger_dir / ".demo-k1ll3d.csv"
    stale.write_text("metric,val")  # half a CSV, as a writer killed mid-write leaves it
    path = results.record("demo", _row(0, 0), preset="small", seed=0)
    assert not stale.exists()
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, "not mkstemp's 0600"


def _failed_run(overrides: dict) -> pd.DataFrame:
    return runner.failure_row({"name": "demo", "preset": "small", "seed": 0,
                               "overrides": overrides}, "timeout", "killed after 3 s")


def test_a_good_run_replaces_the_failure_row_of_the_same_run(ledger_dir, fixed_provenance):
    results.record("demo", _failed_run({"repeats": 5}), preset="small", seed=0,
                   overrides={"repeats": 5})
    results.record("demo", _failed_run({"repeats": 7}), preset="small", seed=0,
                   overrides={"repeats": 7})
    results.record("demo", pd.concat([_row(0, 0), _row(0, 1)]), preset="small", seed=0,
                   overrides={"repeats": 5})
    ledger = results.load("demo")
    failures = ledger[ledger["status"] != "ok"]
    assert failures["repeats"].tolist() == [7], (
        "the good run with repeats=5 answers its own failure, not the one with repeats=7")
    assert (ledger["status"] == "ok").sum() == 2


def test_a_failed_run_never_replaces_good_rows(ledger_dir, fixed_provenance):
    results.record("demo", pd.concat([_row(0, 0), _row(0, 1)]), preset="small", seed=0)
    results.record("demo", _failed_run({}), preset="small", seed=0)
    results.record("demo", _row(0, 0).assign(value=math.nan, status="oom"), preset="small",
                   seed=0)
    ledger = results.load("demo")
    good = ledger[ledger["status"] == "ok"]
    assert sorted(good["i"].tolist()) == [0, 1], "good rows must survive later failures"

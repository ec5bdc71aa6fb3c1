"""First use that cannot stall: a thread count for the machine, caches the CLI warms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from workbook import data, hardware, model, pretraining
from workbook.__main__ import main
from workbook.config import WorkbookError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def four_cores(monkeypatch):
    """A machine with 4 physical cores, all ours, no container quota, no overrides."""
    monkeypatch.delenv("WORKBOOK_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(hardware, "my_cpus", lambda: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(hardware, "physical_cores", lambda: 4)
    monkeypatch.setattr(hardware, "cgroup_cpus", lambda: None)

    def load(value):
        monkeypatch.setattr(hardware, "busy_cores", lambda: value)
    return load


def test_cpu_threads_leave_the_busy_cores_to_their_users(four_cores, monkeypatch):
    four_cores(0.0)
    assert hardware.cpu_threads() == 4, "an idle machine: one thread per physical core"
    four_cores(1.6)
    assert hardware.cpu_threads() == 2, "others keep 1.6 cores busy (rounds to 2): two threads"
    four_cores(9.0)
    assert hardware.cpu_threads() == 1, "an overloaded machine still gets one thread"
    monkeypatch.setattr(hardware, "my_cpus", lambda: {3})
    four_cores(0.0)
    assert hardware.cpu_threads() == 1, "pinned to one CPU (taskset): one thread"


def test_cpu_threads_honour_quota_and_overrides(four_cores, monkeypatch):
    four_cores(0.0)
    monkeypatch.setattr(hardware, "cgroup_cpus", lambda: 2.5)
    assert hardware.cpu_threads() == 2, "a container allowed 2.5 CPUs: two threads"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert hardware.cpu_threads() == 3, "the user's OMP_NUM_THREADS wins"
    monkeypatch.setenv("WORKBOOK_THREADS", "5")
    assert hardware.cpu_threads() == 5, "WORKBOOK_THREADS wins over everything"


def test_busy_cores_are_measured_while_we_sleep(monkeypatch):
    """Others' work between two reads of /proc/stat, scaled to our CPUs; reused for a while."""
    real_times, real_cpus = hardware.cpu_times, hardware.my_cpus
    samples = iter([(100, 1000), (100 + 150, 1000 + 200)])   # 150 of 200 jiffies busy
    monkeypatch.setattr(hardware, "cpu_times", lambda _cpus: next(samples))
    monkeypatch.setattr(hardware, "my_cpus", lambda: {0, 1})
    monkeypatch.setattr(hardware, "BUSY_CACHE", [])
    assert hardware.busy_cores(window_s=0) == pytest.approx(1.5), "3/4 of two CPUs busy"
    assert hardware.busy_cores(window_s=0) == pytest.approx(1.5), "reused, not sampled again"
    monkeypatch.setattr(hardware, "BUSY_CACHE", [])  # and now this machine's own numbers
    monkeypatch.setattr(hardware, "cpu_times", real_times)
    monkeypatch.setattr(hardware, "my_cpus", real_cpus)
    here = hardware.busy_cores(window_s=0.05)
    assert 0 <= here <= len(real_cpus()), here


def test_physical_cores_counts_each_core_once():
    assert 1 <= hardware.physical_cores() <= (hardware.os.cpu_count() or 1)


def test_torch_threads_restores_the_callers_setting():
    before = torch.get_num_threads()
    with hardware.torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(WorkbookError, match="allowed: 1 to"):
        with hardware.torch_threads(0):
            pass
    assert torch.get_num_threads() == before


def test_training_on_a_cpu_uses_the_chosen_thread_count(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_threads", lambda: 1)
    seen = []
    cfg = model.ModelConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, seq_len=8)
    ids = torch.randint(0, 64, (400,), generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    pretraining.train(model.build_model(cfg, 0), pretraining.TrainConfig(
        steps=2, batch_size=2, seq_len=8, warmup=0, eval_every=1, eval_batches=1), seed=0,
        vocab_size=64, device="cpu", train_ids=ids, val_ids=ids,
        on_log=lambda _row: seen.append(torch.get_num_threads()))
    assert set(seen) == {1}, f"training ran with {set(seen)} threads, chosen: 1"
    assert torch.get_num_threads() == before, "the caller's thread count must come back"


def test_prepare_builds_the_caches_once_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBOOK_CACHE", str(tmp_path))
    tiny = model.BaseRecipe(model.ModelConfig(vocab_size=512, d_model=16, n_layers=1,
                                              n_heads=2, seq_len=16),
                            steps=3, batch_size=2, lr=1e-3, warmup=1)
    monkeypatch.setitem(model.BASE_RECIPES, "small", tiny)
    assert main(["prepare", "--preset", "small"]) == 0
    first = capsys.readouterr().out
    assert "tokenizer and token ids: ready" in first and "small base model, seed 0: ready" in first
    assert (model.base_model_dir("small", 0) / "model.safetensors").exists()

    def rebuilt(*_args, **_kwargs):
        raise AssertionError("a warm cache must be loaded, not rebuilt")

    monkeypatch.setattr(model, "train_and_save", rebuilt)
    monkeypatch.setattr(data, "train_tokenizer", rebuilt)
    assert main(["prepare", "--preset", "small"]) == 0
    assert len(re.findall(r"ready \([\d.]+ s\)", capsys.readouterr().out)) == 2


def test_make_lab_warms_the_caches_before_jupyter_starts():
    recipe = re.search(r"^lab:.*?\n((?:\t.*\n|\s*#.*\n)+)", (ROOT / "Makefile").read_text(),
                       re.M).group(1)
    lines = [line.strip() for line in recipe.splitlines() if not line.strip().startswith("#")]
    prepare = next(i for i, line in enumerate(lines) if "-m workbook prepare" in line)
    lab = next(i for i, line in enumerate(lines) if "-m jupyter lab" in line)
    assert prepare < lab, f"make lab must run `workbook prepare` before JupyterLab: {lines}"


def test_prepare_on_a_gpu_compiles_the_experiments_kernels(tmp_path, monkeypatch, capsys):
    from workbook import registry

    monkeypatch.setenv("WORKBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(model, "load_tokenizer", lambda *a: None)
    monkeypatch.setattr(model, "token_ids", lambda *a: None)
    monkeypatch.setattr(model, "load_base_model", lambda *a: None)
    asked = []
    monkeypatch.setattr(registry, "warm_up", lambda preset: asked.append(preset) or {"x": 1.0})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model.prepare("full")
    assert asked == [] and "GPU kernels" not in capsys.readouterr().out, "no GPU: no warm-up"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seconds = model.prepare("full")
    assert asked == ["full"] and "GPU kernels the experiments compile" in seconds


def test_a_failing_warm_up_is_a_warning_and_the_others_still_run(monkeypatch):
    from workbook import registry

    def broken(cfg):
        raise RuntimeError("out of resources: shared memory\nmore")

    base = registry.get("attention_timing")
    table = {"a": replace_exp(base, "a", broken), "b": replace_exp(base, "b", lambda cfg: 3),
             "c": replace_exp(base, "c", lambda cfg: 0), "d": replace_exp(base, "d", None)}
    monkeypatch.setattr(registry, "experiments", lambda: table)
    monkeypatch.setattr(registry, "why_not_here", lambda name, preset: None)
    with pytest.warns(UserWarning, match=r"^a: warm-up skipped \(RuntimeError: out of resources"):
        seconds = registry.warm_up("full")
    assert list(seconds) == ["b"], "only a warm-up that ran something is timed"


def replace_exp(exp, name, warm_up):
    import dataclasses

    return dataclasses.replace(exp, name=name, warm_up=warm_up)

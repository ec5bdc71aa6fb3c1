"""LoRA's experiments: fine-tune the base model with adapters of several ranks, target modules
and learning rates (and fully, for reference), and time a merged adapter against an unmerged one.

Every run trains with :func:`workbook.training.train`: AdamW at a constant learning rate, no
weight decay, no clipping and no autocast (the model's own precision), the plain recipe of the
LoRA paper's comparisons.
"""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Annotated

import pandas as pd
import torch
from torch import nn

from workbook import runner, training
from workbook.config import MAY_BE_EMPTY, check_choice, check_range, resolve_preset
from workbook.data import random_batch, token_ids
from workbook.hardware import torch_device
from workbook.lora.adapter import (
    count_trainable,
    linear_shapes,
    lora_params,
    randomise_adapters,
    resolve_targets,
    with_lora,
)
from workbook.model import BASE_RECIPES, hf_config, load_base_model
from workbook.profiling import time_ms_interleaved
from workbook.registry import Experiment

# ----------------------------------------------------------------------- the fine-tune task


def task_ids(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The adaptation task: the held-out tail of the corpus, which pretraining never saw.

    Its first 80 % is for fine-tuning, its last 20 % for evaluation: a domain shift (other
    stdlib modules' docstrings), measured as loss on text neither stage trained on.
    """
    ids = token_ids("val", vocab_size)
    cut = int(0.8 * len(ids))
    return ids[:cut], ids[cut:]


def shifted(x: torch.Tensor) -> torch.Tensor:
    """The targets of windows ``x`` (B, T): every position but the last predicts the next
    token; the last predicts nothing (-100). What ``model(input_ids=x, labels=x)`` scores."""
    return torch.cat([x[:, 1:], torch.full_like(x[:, :1], -100)], 1)


@torch.no_grad()
def eval_loss(model: nn.Module, ids: torch.Tensor, batch_size: int, seq_len: int,
              n_batches: int, seed: int) -> float:
    """Mean next-token loss over fixed random windows of ``ids`` (same windows every call)."""
    gen = torch.Generator().manual_seed(seed + 12345)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(n_batches):
        batch = random_batch(ids, batch_size, seq_len, gen)
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x.to(device)
        losses.append(float(training.next_token_loss(model(input_ids=x).logits, shifted(x))))
    model.train(was_training)
    return sum(losses) / len(losses)


def finetune(model: nn.Module, ids: torch.Tensor, *, steps: int, lr: float, batch_size: int,
             seq_len: int, seed: int) -> dict[str, float]:
    """Train the trainable parameters on random windows of ``ids`` (:func:`training.train`:
    AdamW, constant ``lr``, no weight decay, no clipping, no autocast); returns the median step
    time (ms) and the peak memory (MB; NaN on a CPU, which has no allocator counter)."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    cfg = training.TrainConfig(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                               warmup=0, weight_decay=0.0, eval_every=steps,
                               schedule="constant")
    started: list[float] = []
    times: list[float] = []

    def batches(_step: int, gen: torch.Generator):
        x, _ = random_batch(ids, batch_size, seq_len, gen)
        started.append(time.perf_counter())
        return x, shifted(x)

    def step_done(row: dict) -> None:
        if row["split"] == "train":         # after the step's loss.item(): the GPU is done
            times.append((time.perf_counter() - started[-1]) * 1e3)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    training.train(model, cfg, seed=seed, device=device, batches=batches,
                   validate=lambda: math.nan, optimizer=opt, clip=None, amp=False, on_log=step_done)
    times.sort()
    peak = torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else math.nan
    return {"step_time": times[len(times) // 2], "peak_memory": peak}


# ------------------------------------------------------------------------ the experiments


@dataclass(frozen=True)
class LoraSweepConfig:
    """One sweep of fine-tuning runs: by rank, by target modules, and by learning rate."""

    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 64)
    targets: tuple[str, ...] = ("qv", "attention", "ffn", "all")
    target_rank: int = 8
    # LR sweep of both methods (one seed; lora_advice is the multi-seed, bracketed version)
    lrs: Annotated[tuple[float, ...], MAY_BE_EMPTY] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    lr: float = 1e-3                # LoRA's learning rate in the rank and target sweeps
    full_lr: float = 1e-4
    alpha_over_rank: float = 2.0    # alpha = 2 * rank, so the update's scale is fixed
    steps: int = 30
    batch_size: int = 8
    seq_len: int = 64
    eval_batches: int = 4
    preset: str | None = None       # the base model's preset (None: the workbook's preset)

    def __post_init__(self) -> None:
        for r in self.ranks + (self.target_rank,):
            check_range("rank", r, 1, 4096)
        for t in self.targets:
            resolve_targets(t)
        for lr in self.lrs + (self.lr, self.full_lr):
            check_range("lr", lr, 1e-7, 1.0)
        check_range("steps", self.steps, 1, 100_000)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seq_len", self.seq_len, 8, 8192)
        check_range("eval_batches", self.eval_batches, 1, 1000)
        check_range("alpha_over_rank", self.alpha_over_rank, 0.01, 1000.0)
        check_choice("preset", self.preset, (None, "small", "full"))


def base_on_cpu(preset: str | None, seed: int) -> nn.Module:
    """The workbook's pretrained base model, on the CPU (copies go to the device per run)."""
    model, _tok = load_base_model(preset=preset, seed=seed, device="cpu")
    return model


def _one_run(cfg: LoraSweepConfig, base: nn.Module, seed: int, *, method: str, rank: int,
             targets: str, lr: float, train: torch.Tensor, held_out: torch.Tensor) -> list[dict]:
    if method == "lora":
        model = with_lora(base, rank, cfg.alpha_over_rank * rank, targets, seed)
        predicted = lora_params(base.config, rank, targets)
    else:
        model = copy.deepcopy(base).requires_grad_(True)
        predicted = sum(p.numel() for p in model.parameters())
    model.to(torch_device())
    stats = finetune(model, train, steps=cfg.steps, lr=lr, batch_size=cfg.batch_size,
                     seq_len=cfg.seq_len, seed=seed)
    loss = eval_loss(model, held_out, cfg.batch_size, cfg.seq_len, cfg.eval_batches, seed)
    rows = [
        {"metric": "trainable_params", "value": count_trainable(model), "unit": "params",
         "source": "measured"},
        {"metric": "trainable_params", "value": predicted, "unit": "params",
         "source": "predicted"},
        {"metric": "eval_loss", "value": loss, "unit": "nats"},
        {"metric": "step_time", "value": stats["step_time"], "unit": "ms"},
    ]
    if stats["peak_memory"] == stats["peak_memory"]:        # NaN on a CPU: no counter
        rows.append({"metric": "peak_memory", "value": stats["peak_memory"], "unit": "MB"})
    return rows


def sweep_plan(cfg: LoraSweepConfig) -> list[tuple[str, str, int, str, float]]:
    """(sweep, method, rank, targets, lr) of every run; full fine-tuning has rank 0."""
    runs = [("rank", "full", 0, "-", cfg.full_lr)]
    runs += [("rank", "lora", r, "all", cfg.lr) for r in cfg.ranks]
    runs += [("targets", "lora", cfg.target_rank, t, cfg.lr) for t in cfg.targets]
    runs += [("lr", "lora", cfg.target_rank, "all", lr) for lr in cfg.lrs]
    runs += [("lr", "full", 0, "-", lr) for lr in cfg.lrs]
    return runs


def run_lora_sweep(cfg: LoraSweepConfig, seed: int) -> pd.DataFrame:
    """Rank sweep (+ full fine-tuning), target-module sweep and LR sweep on the base model.

    A configuration that appears in two sweeps is trained once and reported in both.
    """
    base = base_on_cpu(cfg.preset, seed)
    train, held_out = task_ids(base.config.vocab_size)
    base_loss = eval_loss(copy.deepcopy(base).to(torch_device()), held_out, cfg.batch_size,
                          cfg.seq_len, cfg.eval_batches, seed)
    rows = [{"sweep": "base", "method": "none", "rank": 0, "targets": "-", "lr": 0.0,
             "steps": 0, "metric": "eval_loss", "value": base_loss, "unit": "nats"}]
    done: dict[tuple, list[dict]] = {}
    for sweep, method, rank, targets, lr in sweep_plan(cfg):
        key = (method, rank, targets, lr)
        if key not in done:
            done[key] = _one_run(cfg, base, seed, method=method, rank=rank, targets=targets,
                                 lr=lr, train=train, held_out=held_out)
        params = {"sweep": sweep, "method": method, "rank": rank, "targets": targets,
                  "lr": lr, "steps": cfg.steps}
        rows += [{**params, **row} for row in done[key]]
    frame = pd.DataFrame(rows)
    frame["source"] = frame["source"].fillna("measured")
    return frame


LORA_SWEEP_PRESETS = {
    # A 2-core CPU: few, short runs (the recorded GPU sweep is the one to read).
    "small": LoraSweepConfig(ranks=(1, 4, 16, 64), targets=("attention", "ffn", "all"),
                             target_rank=16, lrs=(), steps=10, batch_size=4,
                             seq_len=32, eval_batches=2),
    # On a GPU, the small base model (1M parameters, carried in data/cache) with real budgets.
    # The learning-rate sweeps moved to lora_advice (three seeds, bracketed optima): here only
    # ranks and targets, ten runs instead of twenty-three.
    "full": LoraSweepConfig(lrs=(), steps=200, batch_size=32, seq_len=128, eval_batches=16,
                            preset="small"),
}


def panel_ranks(preset: str | None = None) -> tuple[int, ...]:
    """The ranks a reader may pick for ``lora_sweep`` at ``preset``: powers of two up to the
    narrow side of the narrowest matrix the sweep adapts in its base model (its width, d_model,
    where every projection is at least that wide): a larger rank holds no larger update."""
    check_choice("preset", preset, (None, "small", "full"))
    model = BASE_RECIPES[resolve_preset(LORA_SWEEP_PRESETS[resolve_preset(preset)].preset)]
    shapes = linear_shapes(hf_config(model.model))
    top = min(min(shapes[name]) for name in resolve_targets("all"))
    return tuple(2 ** k for k in range(int(math.log2(top)) + 1))


# ------------------------------------------------- the lecture's advice, over several seeds


def matched_ranks(config, rank: int) -> tuple[int, int]:
    """(attention rank, FFN rank) whose LoRA adapters train (nearly) the same number of
    parameters, the FFN rank close to ``rank``: the fair comparison of "which modules".

    Per rank, attention-only trains ``lora_params(config, 1, "attention")`` numbers and FFN-only
    ``lora_params(config, 1, "ffn")``; the pair with the smallest mismatch among FFN ranks from
    ``rank/2`` to ``2 rank`` wins (ties: the FFN rank nearest ``rank``).
    """
    check_range("rank", rank, 1, 4096)
    per_att, per_ffn = lora_params(config, 1, "attention"), lora_params(config, 1, "ffn")

    def mismatch(r_ffn: int) -> tuple[float, int]:
        r_att = max(1, round(r_ffn * per_ffn / per_att))
        return abs(r_att * per_att - r_ffn * per_ffn) / (r_ffn * per_ffn), abs(r_ffn - rank)

    r_ffn = min(range(max(1, rank // 2), 2 * rank + 1), key=mismatch)
    return max(1, round(r_ffn * per_ffn / per_att)), r_ffn


@dataclass(frozen=True)
class AdviceConfig:
    """The lecture's LoRA advice as three sweeps, each configuration over ``seeds`` seeds:
    learning rate of LoRA and of full fine-tuning (grids meant to bracket both optima), batch
    size at a fixed token budget, and FFN-only vs attention-only adapters at equal
    trainable-parameter count (:func:`matched_ranks`)."""

    seeds: int = 3                  # fine-tuning seeds seed, seed+1, ... (the base stays one)
    rank: int = 8                   # LoRA rank of the LR and batch sweeps (all projections)
    lora_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    full_lrs: tuple[float, ...] = (3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
    lr: float = 1e-3                # LoRA's learning rate in the batch and target sweeps
    batch_sizes: tuple[int, ...] = (8, 16, 32, 64)
    tokens: int = 819_200           # the batch sweep's budget: steps = tokens / (batch * seq)
    target_rank: int = 8            # FFN-only rank; attention-only gets the matching rank
    steps: int = 200
    batch_size: int = 32
    seq_len: int = 128
    eval_batches: int = 16
    alpha_over_rank: float = 2.0
    parallel: int = 1               # seeds trained at once, each in a process (GPU only)
    preset: str | None = None       # the base model's preset (None: the workbook's preset)

    def __post_init__(self) -> None:
        check_range("seeds", self.seeds, 1, 32)
        for r in (self.rank, self.target_rank):
            check_range("rank", r, 1, 4096)
        for lr in self.lora_lrs + self.full_lrs + (self.lr,):
            check_range("lr", lr, 1e-7, 1.0)
        check_range("steps", self.steps, 1, 100_000)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seq_len", self.seq_len, 8, 8192)
        for b in self.batch_sizes:
            check_range("batch_sizes", b, 1, 1024)
            check_range("tokens", self.tokens, b * self.seq_len, 10**9)   # >= one step each
        check_range("eval_batches", self.eval_batches, 1, 1000)
        check_range("alpha_over_rank", self.alpha_over_rank, 0.01, 1000.0)
        check_range("parallel", self.parallel, 1, 16)
        check_choice("preset", self.preset, (None, "small", "full"))


def advice_plan(cfg: AdviceConfig, config) -> list[dict]:
    """Every run of one seed: sweep, method, rank, targets, lr, batch_size, steps."""
    r_att, r_ffn = matched_ranks(config, cfg.target_rank)
    one = {"targets": "all", "rank": cfg.rank, "batch_size": cfg.batch_size, "steps": cfg.steps}
    runs = [{**one, "sweep": "lr", "method": "lora", "lr": lr} for lr in cfg.lora_lrs]
    runs += [{**one, "sweep": "lr", "method": "full", "rank": 0, "targets": "-", "lr": lr}
             for lr in cfg.full_lrs]
    runs += [{**one, "sweep": "batch", "method": "lora", "lr": cfg.lr, "batch_size": b,
              "steps": cfg.tokens // (b * cfg.seq_len)} for b in cfg.batch_sizes]
    runs += [{**one, "sweep": "targets", "method": "lora", "lr": cfg.lr, "rank": r, "targets": t}
             for t, r in (("attention", r_att), ("ffn", r_ffn))]
    return runs


def advice_rows(cfg: dict, seed: int, base_seed: int) -> pd.DataFrame:
    """One seed of :func:`run_lora_advice` (a config as a dict, so a child process can take
    it): every run of :func:`advice_plan`, its held-out loss and trainable-parameter count."""
    config = AdviceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    base = base_on_cpu(config.preset, base_seed)
    train, held_out = task_ids(base.config.vocab_size)
    rows = []
    for run in advice_plan(config, base.config):
        if run["method"] == "lora":
            model = with_lora(base, run["rank"], config.alpha_over_rank * run["rank"],
                              run["targets"], seed)
        else:
            model = copy.deepcopy(base).requires_grad_(True)
        model.to(torch_device())
        finetune(model, train, steps=run["steps"], lr=run["lr"], batch_size=run["batch_size"],
                 seq_len=config.seq_len, seed=seed)
        loss = eval_loss(model, held_out, config.batch_size, config.seq_len,
                         config.eval_batches, seed)
        rows += [{**run, "run_seed": seed, "metric": "eval_loss", "value": loss, "unit": "nats"},
                 {**run, "run_seed": seed, "metric": "trainable_params",
                  "value": count_trainable(model), "unit": "params"}]
        del model
    return pd.DataFrame(rows).assign(source="measured")


def run_lora_advice(cfg: AdviceConfig, seed: int) -> pd.DataFrame:
    """The lecture's advice measured over seeds ``seed .. seed + cfg.seeds - 1`` (the base
    model is the one of ``seed``). On a GPU, ``cfg.parallel`` seeds train at once, each in a
    process of its own (a 1M-parameter model leaves the GPU idle between kernel launches); the
    losses do not depend on what runs beside them."""
    seeds = [seed + i for i in range(cfg.seeds)]
    kwargs = [{"cfg": asdict(cfg), "seed": s, "base_seed": seed} for s in seeds]
    if cfg.parallel > 1 and torch.cuda.is_available():
        with ThreadPoolExecutor(max_workers=cfg.parallel) as pool:
            frames = list(pool.map(lambda kw: runner.call(
                "workbook.lora.experiments:advice_rows", kw, timeout_s=600), kwargs))
    else:
        frames = [advice_rows(**kw) for kw in kwargs]
    return pd.concat(frames, ignore_index=True)


ADVICE_PRESETS = {
    # A 2-core CPU: three seeds of very short runs, grids of three (a smoke test of the logic).
    "small": AdviceConfig(lora_lrs=(1e-3, 1e-2, 1e-1), full_lrs=(1e-4, 1e-3, 1e-2),
                          batch_sizes=(2, 8), tokens=256, steps=3, batch_size=4, seq_len=16,
                          eval_batches=1),
    # One GPU: the rank-sweep's budget (200 steps of 32 x 128 tokens), three seeds at once.
    "full": AdviceConfig(parallel=3, preset="small"),
}


# ------------------------------------------------------------------------------ merging


@dataclass(frozen=True)
class MergeConfig:
    rank: int = 8
    batch_size: int = 8
    seq_len: int = 64
    repeats: int = 10
    preset: str | None = None

    def __post_init__(self) -> None:
        check_range("rank", self.rank, 1, 4096)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seq_len", self.seq_len, 8, 8192)
        check_range("repeats", self.repeats, 1, 1000)
        check_choice("preset", self.preset, (None, "small", "full"))


def run_merge(cfg: MergeConfig, seed: int) -> pd.DataFrame:
    """Outputs before vs after ``merge_and_unload``; forward latency of base, unmerged, merged.

    The claim is "no added latency": merged must cost what the base costs, while the
    unmerged adapter pays two extra thin matmuls per adapted projection.
    """
    device = torch_device()
    pretrained = base_on_cpu(cfg.preset, seed)
    plain_model = copy.deepcopy(pretrained).to(device).eval()
    model = with_lora(pretrained, cfg.rank, 2.0 * cfg.rank, "all", seed)
    randomise_adapters(model, seed)
    model.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.config.vocab_size, (cfg.batch_size, cfg.seq_len),
                      generator=gen).to(device)
    with torch.no_grad():
        plain = plain_model(input_ids=x).logits
        before = model(input_ids=x).logits
        merged = copy.deepcopy(model).merge_and_unload()  # the adapter model stays to be timed
        after = merged(input_ids=x).logits
        # the three timed in turn, not one after the other: a drift in between (clocks, caches)
        # would read as a cost or a saving of merging
        times = time_ms_interleaved({"base": lambda: plain_model(input_ids=x),
                                     "unmerged": lambda: model(input_ids=x),
                                     "merged": lambda: merged(input_ids=x)},
                                    repeats=cfg.repeats, device=device)
    params = {"rank": cfg.rank, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len}
    diffs = {"merged vs adapter": after - before, "adapter vs base": before - plain}
    rows = [{**params, "variant": k, "metric": "max_abs_diff",
             "value": float(v.abs().max()), "unit": "logit"} for k, v in diffs.items()]
    rows += [{**params, "variant": k, "metric": "forward_time", "value": v, "unit": "ms",
              "timing": "interleaved"} for k, v in times.items()]
    return pd.DataFrame(rows)


MERGE_PRESETS = {"small": MergeConfig(batch_size=4, seq_len=32, repeats=5),
                 "full": MergeConfig(batch_size=32, seq_len=128, repeats=30, preset="small")}


EXPERIMENTS = [
    Experiment(
        name="lora_sweep",
        summary="LoRA rank and target-module sweeps vs full fine-tuning on the base model",
        notebook="11_lora",
        run=run_lora_sweep,
        presets=LORA_SWEEP_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=600,
        # full: ten trainings of 200 steps; 11's H200 Run All took 55.4 s for this sweep when
        # its preset also swept six lrs (about twenty trainings: ~2.5 s each)
        typical_s={"full": 35},
        # the panel's first Run: full fine-tuning and LoRA rank 8 on every module (the target
        # sweep's 'all' at target_rank 8 is the same run): two trainings
        panel_start={"full": {"ranks": (8,), "targets": ("all",)}},
        panel_s={"full": 15},
    ),
    Experiment(
        name="lora_advice",
        summary="LoRA's LR vs full FT's (bracketed), batch size at fixed tokens, FFN vs "
                "attention at equal parameters; 3 seeds each",
        notebook="11_lora",
        run=run_lora_advice,
        presets=ADVICE_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=900,
        typical_s={"small": 25, "full": 120},
    ),
    Experiment(
        name="lora_merge",
        summary="merging W + BA: outputs identical, forward latency merged vs unmerged",
        notebook="11_lora",
        run=run_merge,
        presets=MERGE_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=300,
    ),
]

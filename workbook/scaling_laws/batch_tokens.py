"""More data or a larger batch? One model size trained 2 × 2 ways: two batch sizes, each for two
numbers of tokens, so that each effect is measured with the other held fixed.

The IsoFLOP sweep trains every point for about the same number of steps, so a point that reads
more tokens also uses a larger batch. Read across budgets (:mod:`workbook.scaling_laws.by_tokens`)
the H200's sweeps show a stretch of ~3-10M tokens over which the loss of a 0.4-1.3M-parameter
model falls faster than before it; this experiment tells whether that is the tokens (a change in
what the model learns) or the batch (gradient noise at 14 sequences a step). The recipe (peak lr,
warm-up of N tokens, β2) is the sweep's own (:func:`~workbook.scaling_laws.experiments.
point_settings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from workbook.config import ProjectPath, WorkbookError, check_choice, check_range, takes_rows
from workbook.data import corpus_sha, corpus_token_ids
from workbook.hardware import torch_device
from workbook.model import count_params
from workbook.registry import Experiment
from workbook.scaling_laws.experiments import (
    ISOFLOP_PRESETS,
    IsoFlopConfig,
    check_shape,
    eval_windows,
    model_config,
    point_settings,
    print_point,
    run_isoflop,
    train_point,
)


@dataclass(frozen=True)
class BatchTokensConfig:
    """``shape`` (d_model, n_layers, n_heads) trained at each of ``batches`` (sequences per
    step) for each of ``tokens`` (tokens read); the corpus, vocabulary and recipe are those of
    the IsoFLOP preset ``sweep``."""

    shape: tuple[int, int, int]
    batches: tuple[int, ...]
    tokens: tuple[float, ...]
    sweep: str = "full"
    device: str = "auto"

    def __post_init__(self) -> None:
        check_choice("sweep", self.sweep, tuple(ISOFLOP_PRESETS))
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        check_shape(self.shape)
        if not self.batches or not self.tokens:
            raise WorkbookError("batches or tokens is empty; allowed: 1 to 6 values each")
        check_range("number of batches", len(self.batches), 1, 6)
        check_range("number of token counts", len(self.tokens), 1, 6)
        for b in self.batches:
            check_range("batch (sequences)", b, 1, 4096)
        for d in self.tokens:
            check_range("tokens", d, 1e3, 1e10)


BATCH_TOKENS_PRESETS = {
    # CPU, seconds: the small sweep's corpus and a 2-layer model, two batches × two lengths
    "small": BatchTokensConfig(shape=(32, 2, 2), batches=(8, 16), tokens=(15_360, 30_720),
                               sweep="small"),
    # One GPU, about a minute: d96×3 (0.53M parameters, the size whose loss fell fastest over
    # 3.5-8.6M tokens in the H200's sweeps) at its sweep batches 14 and 34, each for the tokens
    # of the 1.25e13 and 3.1e13 budgets' points
    "full": BatchTokensConfig(shape=(96, 3, 6), batches=(14, 34), tokens=(3.5e6, 8.6e6)),
}


def plan_runs(cfg: BatchTokensConfig) -> pd.DataFrame:
    """One row per (batch, tokens): the steps that read those tokens at that batch, and the
    sweep's recipe for the size (peak lr; warm-up of N tokens, at most a quarter of the run;
    β2 by the tokens per step)."""
    sweep = ISOFLOP_PRESETS[cfg.sweep]
    n_params = count_params(model_config(cfg.shape, sweep))
    rows = []
    for batch in cfg.batches:
        for tokens in cfg.tokens:
            steps = max(1, int(round(tokens / (batch * sweep.seq_len))))
            recipe = point_settings(n_params, tokens, sweep)
            warmup = math.ceil(sweep.warmup_tokens_per_param * n_params / (batch * sweep.seq_len))
            small = batch * sweep.seq_len < sweep.small_batch_tokens
            rows.append({"d_model": cfg.shape[0], "n_layers": cfg.shape[1],
                         "n_heads": cfg.shape[2], "n_params": n_params, "batch_size": batch,
                         "steps": steps, "n_tokens": steps * batch * sweep.seq_len,
                         "lr": recipe["lr"], "warmup": max(1, min(warmup, steps // 4)),
                         "beta2": sweep.beta2_small_batch if small else sweep.beta2})
    return pd.DataFrame(rows)


def run_batch_tokens(cfg: BatchTokensConfig, seed: int = 0) -> pd.DataFrame:
    """Train every run of :func:`plan_runs`; tidy rows (``val_loss``, ``train_loss``,
    ``train_s``, ``tokens_per_s``) with the run's batch, steps and tokens."""
    sweep = ISOFLOP_PRESETS[cfg.sweep]
    device = torch_device(cfg.device)
    train_ids = corpus_token_ids(sweep.corpus, "train", sweep.vocab_size).to(device)
    val = eval_windows(corpus_token_ids(sweep.corpus, "val", sweep.vocab_size),
                       sweep.eval_tokens, sweep.seq_len).to(device)
    extra = {"corpus": sweep.corpus, "corpus_sha": corpus_sha(sweep.corpus, sweep.vocab_size),
             "vocab_size": sweep.vocab_size, "seq_len": sweep.seq_len, "seed": seed,
             "device_type": device.type}
    out = []
    for run in plan_runs(cfg).to_dict("records"):
        measured = train_point(run, sweep, train_ids, val, seed, device)
        out += [{**run, **extra, "metric": metric, "value": value,
                 "unit": {"train_s": "s", "tokens_per_s": "tokens/s",
                          "graphed_steps": "steps"}.get(metric, "nats/token"),
                 "source": "measured", "status": "ok"} for metric, value in measured.items()]
    return pd.DataFrame(out)


def runs_by_seed(rows: pd.DataFrame) -> list[tuple[int, pd.DataFrame]]:
    """(seed, rows of that seed's newest run) for every seed in one device's rows, in order
    (rows without a seed column are seed 0)."""
    rows = rows.assign(seed=rows["seed"] if "seed" in rows.columns else 0)
    out = []
    for seed, run in rows.groupby("seed", sort=True):
        if "recorded_at" in run.columns and run["recorded_at"].notna().any():
            run = run[run["recorded_at"] == run["recorded_at"].max()]
        out.append((int(seed), run))
    return out


@takes_rows
def batch_token_effects(rows: pd.DataFrame) -> pd.DataFrame:
    """From :func:`run_batch_tokens`' rows (one device; each seed's newest run): per seed, the
    change of held-out loss from the fewer to the more tokens at each batch (the data's effect,
    batch fixed), and from the smaller to the larger batch at each token count (the batch's
    effect, tokens fixed: a token count is met to within one step, so each batch's runs are
    paired in order of tokens). Negative: the loss fell."""
    columns = ["seed", "held fixed", "at", "changed", "from", "to", "loss change"]
    loss = rows[(rows["metric"] == "val_loss") & (rows["status"] == "ok")]
    if loss.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for seed, runs in runs_by_seed(loss):
        by_batch = {b: g.sort_values("n_tokens") for b, g in runs.groupby("batch_size")}
        for batch, g in by_batch.items():
            if len(g) >= 2:
                out.append({"seed": seed, "held fixed": "batch (sequences)", "at": batch,
                            "changed": "tokens", "from": g["n_tokens"].iloc[0],
                            "to": g["n_tokens"].iloc[-1],
                            "loss change": g["value"].iloc[-1] - g["value"].iloc[0]})
        if len(by_batch) >= 2:
            low, high = min(by_batch), max(by_batch)
            for (_, a), (_, b) in zip(by_batch[low].iterrows(), by_batch[high].iterrows(),
                                      strict=False):
                out.append({"seed": seed, "held fixed": "tokens",
                            "at": (a["n_tokens"] + b["n_tokens"]) / 2,
                            "changed": "batch (sequences)", "from": low, "to": high,
                            "loss change": b["value"] - a["value"]})
    return pd.DataFrame(out, columns=columns)


@dataclass(frozen=True)
class OneBatchConfig:
    """The sizes the IsoFLOP preset ``sweep`` trains at ``budget``, every one at the same
    ``batch`` (sequences per step). The sweep gives each point the batch of ~1000 steps, so at
    one budget its smaller, token-richer models train at larger batches than its larger ones;
    here the batch is one, and the steps differ instead."""

    budget: float
    batch: int
    sweep: str = "full"
    time_limit_s: float = 540.0   # no point starts after this; the rest are skipped rows
    checkpoint: ProjectPath = ""  # CSV that keeps finished points, as the sweep's
    device: str = "auto"

    def __post_init__(self) -> None:
        check_choice("sweep", self.sweep, tuple(ISOFLOP_PRESETS))
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        check_range("budget (FLOPs)", self.budget, 1e6, 1e21)
        check_range("batch (sequences)", self.batch, 1, 4096)
        check_range("time_limit_s", self.time_limit_s, 1, 86_400)


ONE_BATCH_PRESETS = {
    # CPU, seconds: the small sweep's larger budget, its three sizes at 16 sequences a step
    "small": OneBatchConfig(budget=1e11, batch=16, sweep="small"),
    # One GPU, ~4 minutes: the full sweep's largest budget (where its tokens per parameter are
    # read), its five sizes at 39 sequences a step, the batch its largest size gets there (the
    # sweep's batches run from 39 to 105 at 2e14)
    "full": OneBatchConfig(budget=2e14, batch=39),
}


def one_batch_sweep(cfg: OneBatchConfig) -> IsoFlopConfig:
    """The IsoFLOP preset ``cfg.sweep`` cut to ``cfg.budget``, with its batch held at
    ``cfg.batch`` (lr, warm-up in tokens and β2 follow the sweep's per-size rules)."""
    return replace(ISOFLOP_PRESETS[cfg.sweep], budgets=(cfg.budget,), min_batch=cfg.batch,
                   max_batch=cfg.batch, checkpoint=cfg.checkpoint,
                   time_limit_s=cfg.time_limit_s, device=cfg.device)


def run_one_batch(cfg: OneBatchConfig, seed: int = 0) -> pd.DataFrame:
    """:func:`~workbook.scaling_laws.experiments.run_isoflop` on :func:`one_batch_sweep`: the
    sweep's rows (``val_loss`` per point, ``sweep_wall_s``), each with ``one_batch``."""
    return run_isoflop(one_batch_sweep(cfg), seed, on_point=print_point).assign(
        one_batch=cfg.batch)


EXPERIMENTS = [
    Experiment(name="scaling_batch_tokens", notebook="03_scaling_laws",
               summary="One size, 2 batches x 2 token counts: is it the data or the batch?",
               run=run_batch_tokens, presets=BATCH_TOKENS_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=600,
               # small: a few seconds on 2 CPU cores. full: 62 s of training on the H200
               # (2c77e70ee442, seed 1: 12.2 ms a step at batch 34, 13.4 at batch 14), plus
               # evaluation and the child's start-up
               typical_s={"small": 10, "full": 90}),
    Experiment(name="scaling_one_batch", notebook="03_scaling_laws",
               summary="The largest budget's sizes, every one at one batch: where is the minimum?",
               run=run_one_batch, presets=ONE_BATCH_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=600,
               # small: seconds on 2 CPU cores. full: 214 s on the H200 (e91c30b6c2f5, seed
               # 0: 194 s of training, 200 s of wall time inside the run); machines of one
               # name differ by ~25 % here (the sweep's), and a run of seed 1 on another H200
               # (c4c198dc2df5) had not finished after 330 s when it was killed
               typical_s={"small": 10, "full": 260}),
]

"""The IsoFLOP sweep (Chinchilla approach 2), the measurement: for each compute budget C,
models of several sizes are trained to exactly that budget (D = C / FLOPs-per-token) and scored
on held-out text.

FLOPs per token are the workbook's one count, :func:`workbook.flops.flops_per_token` with
``causal=True``: 6 per matmul parameter (the blocks and the output layer, whose vocab × d_model
matmul is a large share of a small model's work; the input lookup is free) plus attention's two
sequence-length matmuls. N is reported twice: the *total* parameter count (Chinchilla's) and
the *non-embedding* count (Kaplan's), which at small scale changes the fitted exponent
(Pearce & Song 2024).

The recipe follows Porian et al. 2024, who traced Kaplan's steep exponent to the way small runs
were set up: every point takes about ``target_steps`` optimizer steps (the batch is set per
point; a fixed batch would give the largest model of a budget only a few hundred steps), its
warm-up lasts as many tokens as the model has parameters, its peak learning rate falls with
size, and AdamW's β2 is 0.99 at small batches (0.95, the large-model default, below that
averages too few steps' gradients). Each point trains with
:func:`workbook.training.train_static`, the update of :func:`workbook.training.train` (warm-up
and cosine decay to the end of *its* run, bf16 autocast on a GPU, clipping at 1) with its
batches drawn on the device up front and its losses read once at the end; all points run in one
process. Eagerly, transformers still reads one value back per forward; ``cuda_graph=True``
replays each step from a CUDA graph instead (no launches, no read-back).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbook import results, training
from workbook.config import (
    ProjectPath,
    WorkbookError,
    check_choice,
    check_flag,
    check_range,
    takes_rows,
)
from workbook.data import CORPORA, corpus_sha, corpus_token_ids
from workbook.flops import flops_per_token
from workbook.hardware import torch_device
from workbook.model import ModelConfig, build_model, count_params, use_causal_sdpa
from workbook.registry import Experiment
from workbook.scaling_laws.fits import StepTime, fit_step_time
from workbook.scaling_laws.laws import TOKENS_PER_PARAM

BATCH_RULES = ("steps", "largest")   # IsoFlopConfig.batch_rule
LADDER: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1), (24, 1, 1), (32, 1, 2), (32, 2, 2), (48, 2, 3), (64, 2, 4), (64, 3, 4),
    (80, 3, 5), (96, 3, 6), (96, 4, 6), (128, 4, 4), (128, 5, 4), (160, 5, 5), (160, 6, 5),
    (192, 6, 6), (224, 6, 7), (256, 6, 8), (256, 8, 8), (320, 8, 10), (384, 8, 12),
)


def point_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token of one sweep model: the sum of the parts of
    :func:`workbook.flops.flops_per_token` (dense 6·N incl. the output layer, causal attention)."""
    return float(sum(flops_per_token(cfg, causal=True).values()))


def check_shape(shape: tuple[int, int, int], what: str = "shape") -> None:
    """A model shape (d_model, n_layers, n_heads) in range, d_model a multiple of n_heads;
    else one line that names the allowed values."""
    d_model, n_layers, n_heads = shape
    check_range(f"{what} d_model", d_model, 8, 16384)
    check_range(f"{what} n_layers", n_layers, 1, 256)
    check_range(f"{what} n_heads", n_heads, 1, 256)
    if d_model % n_heads:
        raise WorkbookError(f"{what} entry {tuple(shape)}: d_model must be a multiple of "
                            "n_heads; allowed: n_heads dividing d_model")


@dataclass(frozen=True)
class IsoFlopConfig:
    """An IsoFLOP sweep: for each budget, ``sizes_per_budget`` neighbouring ladder shapes
    centred where D/N ≈ ``center_tokens_per_param``, each trained for exactly that budget in
    about ``target_steps`` steps (the batch is chosen per point, within ``min_batch`` and
    ``max_batch`` sequences).

    Per-size optimizer settings (Porian et al. 2024): peak lr = ``lr`` · (N / 1e6)^-``lr_exponent``
    (at most ``lr_max``); warm-up of ``warmup_tokens_per_param`` · N tokens (at most a quarter of
    the run); AdamW β2 = ``beta2_small_batch`` below ``small_batch_tokens`` tokens per step,
    else ``beta2``."""

    budgets: tuple[float, ...]
    sizes_per_budget: int
    corpus: str
    vocab_size: int
    seq_len: int
    target_steps: int          # the batch is picked so each run takes about this many steps
    min_steps: int             # fewer steps than this: the budget is too small for the size
    max_batch: int
    lr: float                  # peak lr of a 1M-parameter model (total N)
    eval_tokens: int
    min_batch: int = 4
    lr_exponent: float = 1 / 3
    lr_max: float = 0.01
    warmup_tokens_per_param: float = 1.0
    beta2: float = 0.95
    beta2_small_batch: float = 0.99
    small_batch_tokens: int = 131_072
    center_tokens_per_param: float = TOKENS_PER_PARAM
    # "steps": each point's batch gives it about target_steps steps (the smaller, token-richer
    # sizes of a budget get larger batches); "largest": every size of a budget trains at the
    # batch its largest size gets that way, and the smaller ones take more steps
    batch_rule: str = "steps"
    ladder: tuple[tuple[int, int, int], ...] = LADDER
    # replay each point's step from a CUDA graph after its first 3 steps (a GPU only; elsewhere
    # ignored: workbook.training.train_static). On in the full preset.
    cuda_graph: bool = False
    time_limit_s: float = 540.0
    checkpoint: ProjectPath = ""  # CSV that keeps finished points; a rerun skips them
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.budgets:
            raise WorkbookError("budgets is empty; allowed: 1 to 12 budgets, each 1e6 to 1e21")
        check_range("number of budgets", len(self.budgets), 1, 12)
        for c in self.budgets:
            check_range("budget (FLOPs)", c, 1e6, 1e21)
        for shape in self.ladder:
            check_shape(shape, "ladder")
        check_range("sizes_per_budget", self.sizes_per_budget, 1, len(self.ladder))
        check_choice("corpus", self.corpus, CORPORA)
        check_range("vocab_size", self.vocab_size, 512, 65535)
        check_range("seq_len", self.seq_len, 8, 4096)
        check_range("target_steps", self.target_steps, 10, 100_000)
        check_range("min_steps", self.min_steps, 1, self.target_steps)
        check_range("max_batch", self.max_batch, 1, 4096)
        check_range("min_batch", self.min_batch, 1, self.max_batch)
        check_range("lr", self.lr, 1e-5, 0.1)
        check_range("lr_exponent", self.lr_exponent, 0.0, 1.0)
        check_range("lr_max", self.lr_max, 1e-5, 0.1)
        check_range("warmup_tokens_per_param", self.warmup_tokens_per_param, 0.0, 100.0)
        check_range("beta2", self.beta2, 0.5, 0.9999)
        check_range("beta2_small_batch", self.beta2_small_batch, 0.5, 0.9999)
        check_range("small_batch_tokens", self.small_batch_tokens, 0, 10**9)
        check_range("eval_tokens", self.eval_tokens, self.seq_len, 10_000_000)
        check_range("center_tokens_per_param", self.center_tokens_per_param, 0.1, 10_000)
        check_choice("batch_rule", self.batch_rule, BATCH_RULES)
        check_flag("cuda_graph", self.cuda_graph)
        check_range("time_limit_s", self.time_limit_s, 1, 86_400)
        check_choice("device", self.device, ("auto", "cpu", "cuda"))


ISOFLOP_PRESETS = {
    # CPU, seconds: 2 budgets x 3 sizes of 12k-50k-parameter models on the docstring corpus;
    # a live demonstration of the method (every code path of the full one), too small to fit
    # exponents on. Its β2 switch sits at 8192 tokens, so both β2 occur; the smaller sizes hit
    # max_batch and take more steps than the target.
    "small": IsoFlopConfig(budgets=(3e10, 1e11), sizes_per_budget=3, corpus="docstrings",
                           vocab_size=512, seq_len=64, target_steps=30, min_steps=10,
                           max_batch=128, min_batch=8, lr=2e-3, eval_tokens=8192,
                           small_batch_tokens=8192, time_limit_s=120),
    # One GPU, ≤ 10 minutes: 6 budgets x 5 sizes, 0.04M-3M parameters, stdlib source code,
    # every budget's sizes at one batch (its largest size's, ~1000 steps; the smaller sizes take
    # more steps), each step replayed from a CUDA graph. Why one batch: with a batch per point
    # (batch_rule "steps") two H200 sweeps put the largest budget's minimum at 9-11 tokens per
    # parameter (cbb140a65373, 130ac1be1319); at one batch it moved to 14.3
    # (scaling_one_batch, e91c30b6c2f5), but the plan grew to ~58,000 steps, 853-1,149 s
    # eager on the recorded H200s. These small models are launch-bound, and the CUDA graph
    # took the step from 20.7 ms to 1.5 ms in the GPU test and the 2e14 budget from 143 s to
    # 42 s on an H100 (same losses to 4 decimals; c5dc9a85dada), so the sweep took ~136 s there.
    # 5 sizes, not 7: every budget's minimum was bracketed by the 5 middle ones (7ab0ac19c5f8).
    # plan_sweep(..., step_time=fit_step_time(recorded rows)) predicts the time from the ledger.
    "full": IsoFlopConfig(budgets=(2e12, 5e12, 1.25e13, 3.1e13, 7.8e13, 2e14), sizes_per_budget=5,
                          corpus="stdlib_source", vocab_size=2048, seq_len=256,
                          target_steps=1000, min_steps=400, max_batch=512, min_batch=4,
                          lr=3e-3, eval_tokens=262_144, time_limit_s=540,
                          batch_rule="largest", cuda_graph=True,
                          # centred on 10 tokens/param, not 20: both H200 sweeps put the
                          # minima at 9-11 (4d7c149e4cad, dc39d910bf51), and centred on 20 the
                          # 7.8e13 budget's minimum lay past its largest size (dc39d910bf51);
                          # the parabola finds the minimum either way, if the sizes bracket it
                          center_tokens_per_param=10.0),
}


def model_config(shape: tuple[int, int, int], cfg: IsoFlopConfig) -> ModelConfig:
    """The sweep's model for a ladder entry (d_model, n_layers, n_heads), tied embeddings."""
    d_model, n_layers, n_heads = shape
    return ModelConfig(vocab_size=cfg.vocab_size, d_model=d_model, n_layers=n_layers,
                       n_heads=n_heads, seq_len=cfg.seq_len, tie_embeddings=True)


def point_settings(n_params: float, n_tokens: float, cfg: IsoFlopConfig) -> dict:
    """The per-point recipe: batch (sequences), steps, peak lr, warm-up steps and AdamW β2 for a
    model of ``n_params`` parameters trained on ``n_tokens`` tokens (Porian et al. 2024)."""
    check_range("n_params", n_params, 1, 1e13)
    check_range("n_tokens", n_tokens, 1, 1e16)
    batch = int(min(cfg.max_batch, max(cfg.min_batch, round(
        n_tokens / (cfg.seq_len * cfg.target_steps)))))
    steps = int(round(n_tokens / (batch * cfg.seq_len)))
    lr = min(cfg.lr_max, cfg.lr * (n_params / 1e6) ** -cfg.lr_exponent)
    warmup = int(math.ceil(cfg.warmup_tokens_per_param * n_params / (batch * cfg.seq_len)))
    small = batch * cfg.seq_len < cfg.small_batch_tokens
    return {"batch_size": batch, "steps": steps, "lr": round(lr, 6),
            "warmup": max(1, min(warmup, steps // 4)),
            "beta2": cfg.beta2_small_batch if small else cfg.beta2}


def plan_sweep(cfg: IsoFlopConfig, n_train_tokens: int | None = None,
               step_time: StepTime | None = None) -> pd.DataFrame:
    """Every (budget, shape) point: N, D, steps, batch, lr, warm-up, β2, and ``status``
    ``planned`` or ``skipped`` with the reason (a budget too small for a size is a row, not an
    error). With ``step_time`` (:func:`fit_step_time` of recorded rows) each point also gets
    ``predicted_s``, its training time on the device those rows came from."""
    if n_train_tokens is not None:
        check_range("n_train_tokens", n_train_tokens, 1, 10**13)

    shapes = [model_config(s, cfg) for s in cfg.ladder]
    n_of = [count_params(m) for m in shapes]
    fpt_of = [point_flops_per_token(m) for m in shapes]
    rows = []
    for budget in sorted(cfg.budgets):
        # Centre: the ladder shape whose tokens/param at this budget is nearest the target.
        ratio = [budget / f / n for n, f in zip(n_of, fpt_of, strict=True)]
        centre = int(np.argmin([abs(math.log(r / cfg.center_tokens_per_param)) for r in ratio]))
        lo = min(max(0, centre - cfg.sizes_per_budget // 2), len(shapes) - cfg.sizes_per_budget)
        rule = cfg
        if cfg.batch_rule == "largest":   # the budget's largest size sets everyone's batch
            top = lo + cfg.sizes_per_budget - 1
            batch = point_settings(n_of[top], budget / fpt_of[top], cfg)["batch_size"]
            rule = replace(cfg, min_batch=batch, max_batch=batch)
        for i in range(lo, lo + cfg.sizes_per_budget):
            m, n, fpt = shapes[i], n_of[i], fpt_of[i]
            tokens = budget / fpt
            recipe = point_settings(n, tokens, rule)
            row = {"budget": budget, "rank": abs(i - centre), "d_model": m.d_model,
                   "n_layers": m.n_layers, "n_heads": m.n_heads, "d_ff": m.d_ff, "n_params": n,
                   "n_params_non_embedding": count_params(m, non_embedding=True),
                   **recipe, "status": "planned", "error": ""}
            row["n_tokens"] = row["steps"] * row["batch_size"] * cfg.seq_len
            row["compute"] = fpt * row["n_tokens"]
            row["tokens_per_param"] = row["n_tokens"] / n
            if n_train_tokens:
                row["epochs"] = row["n_tokens"] / n_train_tokens
            if step_time is not None:
                row["predicted_s"] = step_time.seconds(row["steps"], m.n_layers,
                                                       row["compute"] / max(1, row["steps"]))
            if row["steps"] < cfg.min_steps:
                row.update(status="skipped", error=(
                    f"budget {budget:.3g} FLOPs buys a {n / 1e6:.2f}M-param model only "
                    f"{tokens:.3g} tokens = {row['steps']} steps of {row['batch_size']}x"
                    f"{cfg.seq_len}; needs >= {cfg.min_steps} steps: raise the budget or use "
                    "smaller sizes"))
            rows.append(row)
    # Run order: every budget's centre size first, then the neighbours, the far ends last;
    # a sweep cut short by its time limit then loses edge sizes, not a whole budget.
    plan = pd.DataFrame(rows).sort_values(["rank", "budget", "n_params"], kind="stable")
    return plan.drop(columns="rank").reset_index(drop=True)


@takes_rows
def predicted_seconds(cfg: IsoFlopConfig, rows: pd.DataFrame) -> float:
    """Training seconds of ``cfg``'s planned points, predicted from the timings in ``rows``
    (a recorded sweep: :func:`fit_step_time`), on the device those rows came from."""
    step_time = fit_step_time(rows)   # first: an empty ledger is one line
    plan = plan_sweep(cfg, step_time=step_time)
    return float(plan.loc[plan["status"] == "planned", "predicted_s"].sum())


def eval_windows(val_ids, n_tokens: int, seq_len: int):
    """The same evenly spaced, non-overlapping val windows for every point: (n, seq_len + 1)."""
    n = max(1, min(n_tokens // seq_len, (len(val_ids) - 1) // (seq_len + 1)))
    starts = torch.linspace(0, len(val_ids) - seq_len - 2, n).long()
    return val_ids[starts[:, None] + torch.arange(seq_len + 1)]


def train_point(point: dict, cfg: IsoFlopConfig, train_ids: torch.Tensor,
                val_windows: torch.Tensor, seed: int, device: torch.device) -> dict:
    """Train one model for ``point['steps']`` steps (:func:`workbook.training.train_static`);
    return its held-out loss, the mean loss of its last 10 % of steps, and its timing (with
    ``cfg.cuda_graph``, also how many steps replayed the CUDA graph).

    Every step's windows of the training stream are drawn up front on the device with a seeded
    generator, and no loss is read back until the end: tiny models are launch-bound, and a
    host-device sync per step would halve their speed. (transformers' Llama still reads one
    value per forward, to check for packed sequences, unless the step is replayed from a CUDA
    graph: ``cuda_graph=True`` removes that sync and the launches.)
    """
    shape = (int(point["d_model"]), int(point["n_layers"]), int(point["n_heads"]))
    model = use_causal_sdpa(build_model(model_config(shape, cfg), seed).to(device))
    steps, batch = int(point["steps"]), int(point["batch_size"])
    tcfg = training.TrainConfig(steps=steps, batch_size=batch, seq_len=cfg.seq_len,
                                lr=point["lr"], warmup=int(point["warmup"]), weight_decay=0.1,
                                eval_every=steps)
    gen = torch.Generator(device=device).manual_seed(seed)
    starts = torch.randint(0, len(train_ids) - cfg.seq_len - 1, (steps, batch), generator=gen,
                           device=device)
    graphed = cfg.cuda_graph and device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    losses, info = training.train_static(model, tcfg, train_ids, starts,
                                         betas=(0.9, float(point["beta2"])), cuda_graph=graphed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    if info["graph_error"]:
        print(f"CUDA graph capture failed, ran eagerly: {info['graph_error']}", flush=True)
    tail = losses[steps - max(1, steps // 10):]
    measured = {"val_loss": evaluate_windows(model, val_windows, device),
                "train_loss": float(tail.mean()), "train_s": train_s,
                "tokens_per_s": steps * batch * cfg.seq_len / train_s}
    if cfg.cuda_graph:
        measured["graphed_steps"] = info["graphed_steps"]
    return measured


@torch.no_grad()
def evaluate_windows(model: torch.nn.Module, windows: torch.Tensor, device: torch.device,
                     chunk: int = 64) -> float:
    """Mean next-token loss over fixed windows (n, seq_len + 1), ``chunk`` windows at a time."""
    model.eval()
    total = torch.zeros((), device=device)
    for part in windows.split(chunk):
        with training.autocast(device):
            logits = model(input_ids=part[:, :-1]).logits
        total += training.next_token_loss(logits, part[:, 1:]) * len(part)
    return float(total) / len(windows)


_POINT_KEY = ("budget", "d_model", "n_layers", "n_heads", "steps", "batch_size", "lr", "warmup",
              "beta2")
_UNITS = {"val_loss": "nats/token", "train_loss": "nats/token", "train_s": "s",
          "tokens_per_s": "tokens/s", "graphed_steps": "steps"}


def _point_rows(point: dict, measured: dict | None, extra: dict) -> pd.DataFrame:
    base = {k: v for k, v in point.items() if k not in ("status", "error")}
    base.update(extra)
    if measured is None:  # skipped / failed: one row that says why
        return pd.DataFrame([{**base, "metric": "val_loss", "value": math.nan,
                              "unit": _UNITS["val_loss"], "source": "measured",
                              "status": point["status"], "error": point["error"]}])
    return pd.DataFrame([{**base, "metric": m, "value": v, "unit": _UNITS[m],
                          "source": "measured", "status": "ok", "error": ""}
                         for m, v in measured.items()])


def _load_checkpoint(path: str) -> pd.DataFrame:
    if path and Path(path).exists():
        return pd.read_csv(path, dtype={"corpus_sha": str})   # hex digits, not a number
    return pd.DataFrame()


def _done(done: pd.DataFrame, point: dict, extra: dict) -> pd.DataFrame:
    """Finished rows of this exact point (same shape, steps, batch, lr, corpus, seed)."""
    if done.empty:
        return done
    if any(k not in done.columns for k in _POINT_KEY):  # a checkpoint of an older recipe
        return done.iloc[0:0]
    mask = done["status"] == "ok"
    for k in _POINT_KEY:
        mask &= np.isclose(done[k].astype(float), float(point[k]))
    for k, v in extra.items():   # a point of an older commit's run is reused by a resumed one
        if k != "sweep_commit":
            mask &= (done[k].astype(str) == str(v)) if k in done.columns else False
    return done[mask]


def run_isoflop(cfg: IsoFlopConfig, seed: int = 0,
                on_point: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """Train every planned point; return tidy rows (``val_loss``, ``train_loss``, ``train_s``,
    ``tokens_per_s`` per point; one ``skipped``/``oom`` row for a point that did not run).

    With ``cfg.checkpoint`` set, each finished point is written there at once, and a rerun
    reuses finished points: an interrupted sweep loses at most the point it was on.
    """
    device = torch_device(cfg.device)
    train_ids = corpus_token_ids(cfg.corpus, "train", cfg.vocab_size)
    val_windows = eval_windows(corpus_token_ids(cfg.corpus, "val", cfg.vocab_size),
                                cfg.eval_tokens, cfg.seq_len).to(device)
    train_dev = train_ids.to(device)
    plan = plan_sweep(cfg, len(train_ids))
    done = _load_checkpoint(cfg.checkpoint)
    # sweep_commit: part of each row's key in the ledger (results.merge), so that a sweep of
    # newer code never replaces the matching points of an older sweep: a sweep is kept whole
    extra = {"corpus": cfg.corpus, "corpus_sha": corpus_sha(cfg.corpus, cfg.vocab_size),
             "vocab_size": cfg.vocab_size, "seq_len": cfg.seq_len, "seed": seed,
             "device_type": device.type, "sweep_commit": results.git_commit(),
             # only where it is not the default: the ledger's older sweeps have no such column
             **({"batch_rule": cfg.batch_rule} if cfg.batch_rule != "steps" else {}),
             **({"cuda_graph": True} if cfg.cuda_graph else {})}
    frames, t_start, reused_s, n_reused = [], time.perf_counter(), 0.0, 0
    for point in plan.to_dict("records"):
        reused = _done(done, point, extra)
        if not reused.empty:
            frames.append(reused.assign(sweep_commit=extra["sweep_commit"]))
            n_reused += 1
            reused_s += float(reused.loc[reused["metric"] == "train_s", "value"].sum())
            continue
        measured = None
        if point["status"] == "planned":
            if time.perf_counter() - t_start > cfg.time_limit_s:
                point.update(status="skipped", error=f"sweep time limit {cfg.time_limit_s:g} "
                             "s reached; rerun with the same checkpoint to continue")
            else:
                try:
                    measured = train_point(point, cfg, train_dev, val_windows, seed, device)
                except torch.OutOfMemoryError as exc:
                    point.update(status="oom", error=str(exc).splitlines()[0][:200])
                    torch.cuda.empty_cache()
        rows = _point_rows(point, measured, extra)
        frames.append(rows)
        if cfg.checkpoint and measured is not None:  # saved before anything else can fail
            done = pd.concat([done, rows], ignore_index=True)
            results.write_atomic(done, Path(cfg.checkpoint))
        if on_point is not None:
            on_point(rows)
    # A resumed sweep's wall time is this run's plus the reused points' training time (their
    # runs' start-up and evaluation are not in the checkpoint: a lower bound, said so)
    note = (f"resumed: {n_reused} point{'s' * (n_reused != 1)} from the checkpoint, counted "
            "by their training time" if n_reused else "")
    wall = {"metric": "sweep_wall_s", "value": time.perf_counter() - t_start + reused_s,
            "unit": "s", "source": "measured", "status": "ok", "error": note, **extra}
    return pd.concat([*frames, pd.DataFrame([wall])], ignore_index=True)


def print_point(rows: pd.DataFrame) -> None:
    """One finished point of :func:`run_isoflop` as a line of the run's log."""
    r = rows.iloc[0]
    value = rows.set_index("metric")["value"]
    took = f" in {value['train_s']:.1f} s" if "train_s" in value else ""
    graphed = (f", {value['graphed_steps']:.0f} steps graphed" if "graphed_steps" in value
               else "")
    print(f"C={r['budget']:.2g} N={r['n_params'] / 1e6:.3f}M D={r['n_tokens'] / 1e6:.2f}M "
          f"steps={r['steps']} batch={r['batch_size']} -> val_loss={value['val_loss']:.4f} "
          f"[{r['status']}]{took}{graphed}", flush=True)


def _run_experiment(cfg: IsoFlopConfig, seed: int) -> pd.DataFrame:
    return run_isoflop(cfg, seed, on_point=print_point)


def record_checkpoint(path: str, preset: str = "full", seed: int = 0) -> Path:
    """Record the finished points of an interrupted sweep (its checkpoint CSV) in the ledger."""
    done = _load_checkpoint(path)
    if done.empty:
        raise WorkbookError(f"checkpoint {path!r} is missing or empty: no finished points")
    return results.record("scaling_isoflop", done.assign(preset=preset), preset=preset,
                          seed=seed)


EXPERIMENTS = [
    Experiment(name="scaling_isoflop", notebook="03_scaling_laws",
               summary="IsoFLOP sweep: models of several sizes trained to each compute budget",
               run=_run_experiment, presets=ISOFLOP_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900,
               # small: seconds to a minute on 2 CPU cores. full: the slowest recorded
               # device's training time for today's plan (time_table: 125 s on the H100 of
               # c5dc9a85dada, steps replayed from CUDA graphs), plus ~10 s of evaluation and
               # work between points (135-137 s of wall time there) and the child's start-up;
               # tests/test_review_03_05.py holds it to the time table. The H200 of
               # 258327b9a1c0 was a little faster: 120 s of training, 127-128 s of wall time
               # per seed (its eager sweeps, before the graphs, paid twice the H100's cost per
               # layer-step: 3.5 against 1.7 ms, 7ab0ac19c5f8)
               typical_s={"small": 30, "full": 160},
               # the panel's first Run: one IsoFLOP curve, three sizes at the smallest budget,
               # ~400 steps each: 24.6 s on the H200 (panel_walltime, d636f55b33ce; at 500
               # steps it took about 31 s)
               panel_start={"full": {"budgets": (2e12,), "sizes_per_budget": 3,
                                     "target_steps": 400}},
               panel_s={"full": 25}),
]

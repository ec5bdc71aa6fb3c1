"""The IsoFLOP sweep (Chinchilla approach 2), the measurement: for each compute budget C,
models of several sizes are trained to exactly that budget (D = C / FLOPs-per-token) and scored
on held-out text.

FLOPs per token are 6·N + 6·n_layers·seq_len·d_model (causal attention). N is the *total*
parameter count of a model with tied embeddings: the tied output matrix is the one matmul the
embedding takes part in (the input lookup is a gather, no FLOPs), so total N is, norms aside,
exactly the number of parameters that do 6 FLOPs per token. Chinchilla also counts total N;
Kaplan counts non-embedding N, which at small scale changes the fitted exponent (Pearce & Song
2024), so the sweep records both.

Each point trains with :func:`workbook.training.train` (AdamW, warm-up and cosine decay, bf16
autocast on a GPU, clipping at 1), with batches drawn on the device and no host sync per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbook import results, training
from workbook.config import ProjectPath, WorkbookError, check_choice, check_range
from workbook.data import CORPORA, corpus_token_ids
from workbook.flops import attention_flops_per_token
from workbook.hardware import torch_device
from workbook.model import ModelConfig, build_model, count_params
from workbook.registry import Experiment
from workbook.scaling_laws.laws import TOKENS_PER_PARAM

LADDER: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1), (24, 1, 1), (32, 1, 2), (32, 2, 2), (48, 2, 3), (64, 2, 4), (64, 3, 4),
    (80, 3, 5), (96, 3, 6), (96, 4, 6), (128, 4, 4), (128, 5, 4), (160, 5, 5), (160, 6, 5),
    (192, 6, 6), (224, 6, 7), (256, 6, 8), (256, 8, 8), (320, 8, 10), (384, 8, 12),
)

def flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token of one sweep model: 6·N (every weight: one multiply-add forward,
    two backward; N = :func:`workbook.model.count_params`, total, tied embeddings once) plus
    attention (:func:`workbook.flops.attention_flops_per_token`): QKᵀ and the weighted sum cost
    2·seq·d_model each per layer and token forward; the causal mask makes half of that
    unnecessary (FlashAttention skips it), leaving 6·seq·d_model per layer for training."""
    return 6.0 * count_params(cfg) + attention_flops_per_token(cfg.n_layers, cfg.seq_len,
                                                               cfg.d_model, causal=True)


@dataclass(frozen=True)
class IsoFlopConfig:
    """An IsoFLOP sweep: for each budget, ``sizes_per_budget`` neighbouring ladder shapes
    centred where D/N ≈ ``center_tokens_per_param``, each trained for exactly that budget."""

    budgets: tuple[float, ...]
    sizes_per_budget: int
    corpus: str
    vocab_size: int
    seq_len: int
    target_steps: int          # batch size is picked so each run takes about this many steps
    min_steps: int             # fewer steps than this: the budget is too small for the size
    max_batch: int
    lr: float                  # peak lr at d_model 128; scaled by sqrt(128 / d_model)
    eval_tokens: int
    center_tokens_per_param: float = TOKENS_PER_PARAM
    ladder: tuple[tuple[int, int, int], ...] = LADDER
    time_limit_s: float = 540.0
    checkpoint: ProjectPath = ""  # CSV that keeps finished points; a rerun skips them
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.budgets:
            raise WorkbookError("budgets is empty; allowed: 1 to 12 budgets, each 1e6 to 1e21")
        check_range("number of budgets", len(self.budgets), 1, 12)
        for c in self.budgets:
            check_range("budget (FLOPs)", c, 1e6, 1e21)
        for d_model, n_layers, n_heads in self.ladder:
            check_range("ladder d_model", d_model, 8, 16384)
            check_range("ladder n_layers", n_layers, 1, 256)
            check_range("ladder n_heads", n_heads, 1, 256)
            if d_model % n_heads:
                raise WorkbookError(f"ladder entry {(d_model, n_layers, n_heads)}: d_model must "
                                    "be a multiple of n_heads")
        check_range("sizes_per_budget", self.sizes_per_budget, 1, len(self.ladder))
        check_choice("corpus", self.corpus, CORPORA)
        check_range("vocab_size", self.vocab_size, 512, 65535)
        check_range("seq_len", self.seq_len, 8, 4096)
        check_range("target_steps", self.target_steps, 10, 100_000)
        check_range("min_steps", self.min_steps, 1, self.target_steps)
        check_range("max_batch", self.max_batch, 1, 4096)
        check_range("lr", self.lr, 1e-5, 0.1)
        check_range("eval_tokens", self.eval_tokens, self.seq_len, 10_000_000)
        check_range("center_tokens_per_param", self.center_tokens_per_param, 0.1, 10_000)
        check_range("time_limit_s", self.time_limit_s, 1, 86_400)
        check_choice("device", self.device, ("auto", "cpu", "cuda"))


ISOFLOP_PRESETS = {
    # CPU, ~20 s on 2 idle cores: 2 budgets x 3 sizes of 12k-50k-parameter models on the
    # docstring corpus; a live demonstration of the method, too small to fit exponents on.
    "small": IsoFlopConfig(budgets=(3e10, 1e11), sizes_per_budget=3, corpus="docstrings",
                           vocab_size=512, seq_len=64, target_steps=30, min_steps=10,
                           max_batch=128, lr=4e-3, eval_tokens=8192, time_limit_s=120),
    # One GPU, a few minutes: 5 budgets x 7 sizes, 0.05M-3M parameters, stdlib source code.
    "full": IsoFlopConfig(budgets=(3e12, 1e13, 3e13, 1e14, 3e14), sizes_per_budget=7,
                          corpus="stdlib_source", vocab_size=2048, seq_len=256,
                          target_steps=400, min_steps=100, max_batch=256, lr=3e-3,
                          eval_tokens=262_144, time_limit_s=540),
}


def model_config(shape: tuple[int, int, int], cfg: IsoFlopConfig) -> ModelConfig:
    """The sweep's model for a ladder entry (d_model, n_layers, n_heads), tied embeddings."""
    d_model, n_layers, n_heads = shape
    return ModelConfig(vocab_size=cfg.vocab_size, d_model=d_model, n_layers=n_layers,
                       n_heads=n_heads, seq_len=cfg.seq_len, tie_embeddings=True)


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(x, 1.0)))))


def plan_sweep(cfg: IsoFlopConfig, n_train_tokens: int | None = None) -> pd.DataFrame:
    """Every (budget, shape) point: N, D, steps, batch, lr, and ``status`` ``planned`` or
    ``skipped`` with the reason (a budget too small for a size is a row, not an error)."""
    if n_train_tokens is not None:
        check_range("n_train_tokens", n_train_tokens, 1, 10**13)

    shapes = [model_config(s, cfg) for s in cfg.ladder]
    n_of = [count_params(m) for m in shapes]
    fpt_of = [flops_per_token(m) for m in shapes]
    rows = []
    for budget in sorted(cfg.budgets):
        # Centre: the ladder shape whose tokens/param at this budget is nearest the target.
        ratio = [budget / f / n for n, f in zip(n_of, fpt_of, strict=True)]
        centre = int(np.argmin([abs(math.log(r / cfg.center_tokens_per_param)) for r in ratio]))
        lo = min(max(0, centre - cfg.sizes_per_budget // 2), len(shapes) - cfg.sizes_per_budget)
        # One batch size per budget (set by the centre size), so the sizes of one IsoFLOP
        # curve differ only in N and D; smaller models then take more steps.
        batch = min(cfg.max_batch, _pow2_floor(
            budget / fpt_of[centre] / (cfg.seq_len * cfg.target_steps)))
        for i in range(lo, lo + cfg.sizes_per_budget):
            m, n, fpt = shapes[i], n_of[i], fpt_of[i]
            tokens = budget / fpt
            steps = int(round(tokens / (batch * cfg.seq_len)))
            row = {"budget": budget, "rank": abs(i - centre), "d_model": m.d_model,
                   "n_layers": m.n_layers, "n_heads": m.n_heads, "d_ff": m.d_ff, "n_params": n,
                   "n_params_non_embedding": count_params(m, non_embedding=True),
                   "batch_size": batch, "steps": steps, "n_tokens": steps * batch * cfg.seq_len,
                   "lr": round(min(6e-3, cfg.lr * math.sqrt(128 / m.d_model)), 6),
                   "status": "planned", "error": ""}
            row["compute"] = fpt * row["n_tokens"]
            row["tokens_per_param"] = row["n_tokens"] / n
            if n_train_tokens:
                row["epochs"] = row["n_tokens"] / n_train_tokens
            if steps < cfg.min_steps:
                row.update(status="skipped", error=(
                    f"budget {budget:.3g} FLOPs buys a {n / 1e6:.2f}M-param model only "
                    f"{tokens:.3g} tokens = {steps} steps of {batch}x{cfg.seq_len}; needs "
                    f">= {cfg.min_steps} steps: raise the budget or use smaller sizes"))
            rows.append(row)
    # Run order: every budget's centre size first, then the neighbours, the far ends last;
    # a sweep cut short by its time limit then loses edge sizes, not a whole budget.
    plan = pd.DataFrame(rows).sort_values(["rank", "budget", "n_params"], kind="stable")
    return plan.drop(columns="rank").reset_index(drop=True)


def eval_windows(val_ids, n_tokens: int, seq_len: int):
    """The same evenly spaced, non-overlapping val windows for every point: (n, seq_len + 1)."""
    n = max(1, min(n_tokens // seq_len, (len(val_ids) - 1) // (seq_len + 1)))
    starts = torch.linspace(0, len(val_ids) - seq_len - 2, n).long()
    return val_ids[starts[:, None] + torch.arange(seq_len + 1)]


def train_point(point: dict, cfg: IsoFlopConfig, train_ids: torch.Tensor,
                val_windows: torch.Tensor, seed: int, device: torch.device) -> dict:
    """Train one model for ``point['steps']`` steps (:func:`workbook.training.train`); return
    its held-out loss, the mean loss of its last 10 % of steps, and its timing.

    Batches are random windows of the training stream drawn on the device with a seeded
    generator, and no loss is read back until the end: tiny models are launch-bound, and a
    host-device sync per step would halve their speed.
    """
    shape = (int(point["d_model"]), int(point["n_layers"]), int(point["n_heads"]))
    model = build_model(model_config(shape, cfg), seed).to(device).train()
    steps, batch = int(point["steps"]), int(point["batch_size"])
    tcfg = training.TrainConfig(steps=steps, batch_size=batch, seq_len=cfg.seq_len,
                                lr=point["lr"], warmup=max(1, steps // 20), weight_decay=0.1,
                                eval_every=steps)
    gen = torch.Generator(device=device).manual_seed(seed)
    offsets = torch.arange(cfg.seq_len + 1, device=device)

    def batches(_step: int, _cpu_gen: torch.Generator):
        starts = torch.randint(0, len(train_ids) - cfg.seq_len - 1, (batch,), generator=gen,
                               device=device)
        window = train_ids[starts[:, None] + offsets]           # (batch, seq_len + 1)
        return window[:, :-1], window[:, 1:]

    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    log = training.train(model, tcfg, seed=seed, device=device, batches=batches,
                         validate=lambda: math.nan)   # held-out loss: once, below
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    tail_from = steps - max(1, steps // 10)
    tail = log[(log["split"] == "train") & (log["step"] > tail_from)]["loss"]
    # summed in float32 in step order, as the losses were summed on the device before
    tail_sum = float(reduce(lambda acc, v: np.float32(acc + np.float32(v)), tail, np.float32(0)))
    return {"val_loss": evaluate_windows(model, val_windows, device),
            "train_loss": tail_sum / (steps - tail_from), "train_s": train_s,
            "tokens_per_s": steps * batch * cfg.seq_len / train_s}


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


_POINT_KEY = ("budget", "d_model", "n_layers", "n_heads", "steps", "batch_size", "lr")
_UNITS = {"val_loss": "nats/token", "train_loss": "nats/token", "train_s": "s",
          "tokens_per_s": "tokens/s"}


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
        return pd.read_csv(path)
    return pd.DataFrame()


def _done(done: pd.DataFrame, point: dict, extra: dict) -> pd.DataFrame:
    """Finished rows of this exact point (same shape, steps, batch, lr, corpus, seed)."""
    if done.empty:
        return done
    mask = done["status"] == "ok"
    for k in _POINT_KEY:
        mask &= np.isclose(done[k].astype(float), float(point[k]))
    for k, v in extra.items():
        mask &= done[k].astype(str) == str(v)
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
    extra = {"corpus": cfg.corpus, "vocab_size": cfg.vocab_size, "seq_len": cfg.seq_len,
             "seed": seed, "device_type": device.type}
    frames, t_start = [], time.perf_counter()
    for point in plan.to_dict("records"):
        reused = _done(done, point, extra)
        if not reused.empty:
            frames.append(reused)
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
    wall = {"metric": "sweep_wall_s", "value": time.perf_counter() - t_start, "unit": "s",
            "source": "measured", "status": "ok", "error": "", **extra}
    return pd.concat([*frames, pd.DataFrame([wall])], ignore_index=True)


def _run_experiment(cfg: IsoFlopConfig, seed: int) -> pd.DataFrame:
    def echo(rows: pd.DataFrame) -> None:
        r = rows.iloc[0]
        loss = rows.loc[rows["metric"] == "val_loss", "value"].iloc[0]
        print(f"C={r['budget']:.2g} N={r['n_params'] / 1e6:.3f}M D={r['n_tokens'] / 1e6:.2f}M "
              f"steps={r['steps']} batch={r['batch_size']} -> val_loss={loss:.4f} "
              f"[{r['status']}]", flush=True)

    return run_isoflop(cfg, seed, on_point=echo)


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
               # small: ~20 s on the H200's host, 15-90 s on 2 CPU cores; full: 293 s, H100
               typical_s={"small": 30, "full": 300}),
]

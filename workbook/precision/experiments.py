"""The precision experiments (notebook 08): underflow, stagnation, four-way training."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from workbook import profiling, runner
from workbook.config import check_choice, check_range
from workbook.data import random_batch, token_ids
from workbook.hardware import detect, torch_device
from workbook.model import ModelConfig, build_model, count_params, load_base_model
from workbook.precision.mixed_step import scaled_step
from workbook.precision.stagnation import MASTER_MODES, master_weight_training, stagnation_sweep
from workbook.precision.underflow import capture_gradients, gradscaler_trace, share_rows
from workbook.registry import Experiment
from workbook.training import next_token_loss

__all__ = ["UnderflowConfig", "UNDERFLOW_PRESETS", "run_underflow", "StagnationConfig",
           "STAGNATION_PRESETS", "run_stagnation", "TRAIN_MODES", "MODE_DTYPE",
           "TrainingConfig", "TRAINING_PRESETS", "train_one", "run_training", "EXPERIMENTS"]


@dataclass(frozen=True)
class UnderflowConfig:
    model_preset: str          # which base model: "small" or "full"
    batch_size: int
    seq_len: int
    log2_scales: tuple[int, ...]
    scaler_steps: int
    scaler_init_log2: int      # GradScaler's first scale, as a power of two
    growth_interval: int
    lr: float

    def __post_init__(self) -> None:
        check_choice("model_preset", self.model_preset, ("small", "full"))
        check_range("batch_size", self.batch_size, 1, 256)
        check_range("seq_len", self.seq_len, 8, 4096)
        for s in self.log2_scales:
            check_range("log2_scales", s, 0, 40)
        check_range("scaler_steps", self.scaler_steps, 1, 2000)
        check_range("scaler_init_log2", self.scaler_init_log2, 0, 40)
        check_range("growth_interval", self.growth_interval, 1, 10000)
        check_range("lr", self.lr, 1e-7, 1e-1)


UNDERFLOW_PRESETS = {
    "small": UnderflowConfig("small", batch_size=8, seq_len=128,
                             log2_scales=(0, 8, 10, 16, 24), scaler_steps=12,
                             scaler_init_log2=24, growth_interval=3, lr=1e-4),
    "full": UnderflowConfig("full", batch_size=32, seq_len=256,
                            log2_scales=(0, 8, 10, 16, 24), scaler_steps=60,
                            scaler_init_log2=24, growth_interval=10, lr=1e-4),
}



def run_underflow(cfg: UnderflowConfig, seed: int) -> pd.DataFrame:
    """Underflow shares of the base model's real gradients, and a GradScaler trace."""
    device = torch_device()
    model, _ = load_base_model(cfg.model_preset, seed=seed, device=device)
    model.train()
    ids = token_ids("train", model.config.vocab_size)
    x, y = (t.to(device) for t in random_batch(ids, cfg.batch_size, cfg.seq_len,
                                               torch.Generator().manual_seed(seed)))
    grads = capture_gradients(model, x, y)
    rows = [share_rows(grads, cfg.log2_scales)]
    trace = gradscaler_trace(model, ids, steps=cfg.scaler_steps, batch_size=cfg.batch_size,
                             seq_len=cfg.seq_len, lr=cfg.lr,
                             init_scale=2.0 ** cfg.scaler_init_log2,
                             growth_interval=cfg.growth_interval, seed=seed + 1, device=device)
    settled = int(math.log2(trace["loss_scale"].iloc[-1]))
    rows.append(share_rows(grads, (settled,), scaling="gradscaler"))
    long = trace.melt(id_vars="step", var_name="metric", value_name="value")
    long["unit"] = long["metric"].map({"loss_scale": "x", "skipped": "step", "loss": "nats"})
    rows.append(long.assign(part="gradscaler", kind="fp16_autocast", format="fp16",
                            scaling="gradscaler"))
    return pd.concat(rows, ignore_index=True).assign(model_preset=cfg.model_preset)


@dataclass(frozen=True)
class StagnationConfig:
    model_preset: str
    lrs: tuple[float, ...]     # the sweep's learning rates
    train_lr: float            # the training runs' learning rate
    steps: int
    batch_size: int
    seq_len: int

    def __post_init__(self) -> None:
        check_choice("model_preset", self.model_preset, ("small", "full"))
        for lr in self.lrs:
            check_range("lrs", lr, 1e-9, 1.0)
        check_range("train_lr", self.train_lr, 1e-7, 1e-1)
        check_range("steps", self.steps, 1, 5000)
        check_range("batch_size", self.batch_size, 1, 256)
        check_range("seq_len", self.seq_len, 8, 4096)


_SWEEP_LRS = tuple(10.0 ** (e / 2) for e in range(-14, -3))   # 1e-7 ... 3e-2
STAGNATION_PRESETS = {
    "small": StagnationConfig("small", _SWEEP_LRS, train_lr=3e-5, steps=12, batch_size=4,
                              seq_len=64),
    "full": StagnationConfig("full", _SWEEP_LRS, train_lr=3e-5, steps=100, batch_size=32,
                             seq_len=256),
}


def run_stagnation(cfg: StagnationConfig, seed: int) -> pd.DataFrame:
    """The update-lost sweep on the base model's real weights, then three training runs."""
    device = torch_device()
    model, _ = load_base_model(cfg.model_preset, seed=seed, device=device)
    ids = token_ids("train", model.config.vocab_size)
    x, y = (t.to(device) for t in random_batch(ids, cfg.batch_size, cfg.seq_len,
                                               torch.Generator().manual_seed(seed)))
    model.train()
    next_token_loss(model(x).logits, y).backward()
    params = [p for p in model.parameters() if p.grad is not None]
    weights = torch.cat([p.detach().flatten().cpu() for p in params])
    grads = torch.cat([p.grad.flatten().cpu() for p in params])
    model.zero_grad(set_to_none=True)
    rows = [stagnation_sweep(weights, grads, cfg.lrs)]
    for mode in MASTER_MODES:
        fresh, _ = load_base_model(cfg.model_preset, seed=seed, device=device)
        rows.append(master_weight_training(fresh.train(), ids, mode, steps=cfg.steps,
                                           batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                                           lr=cfg.train_lr, seed=seed + 1, device=device))
    return pd.concat(rows, ignore_index=True).assign(model_preset=cfg.model_preset)


# ------------------------------------------------------------------- four-way training

TRAIN_MODES: tuple[str, ...] = ("fp32", "tf32", "fp16_gradscaler", "bf16_autocast")
MODE_DTYPE = {"fp32": "fp32", "tf32": "tf32", "fp16_gradscaler": "fp16",
              "bf16_autocast": "bf16"}     # the matmul dtype each mode runs at (roofline key)


@dataclass(frozen=True)
class TrainingConfig:
    d_model: int
    n_layers: int
    n_heads: int
    vocab_size: int
    seq_len: int
    batch_size: int
    steps: int
    warmup: int                # steps excluded from the step-time median
    lr: float
    modes: tuple[str, ...] = TRAIN_MODES

    def __post_init__(self) -> None:
        check_range("d_model", self.d_model, 16, 8192)
        check_range("n_layers", self.n_layers, 1, 64)
        check_range("n_heads", self.n_heads, 1, 128)
        check_range("vocab_size", self.vocab_size, 512, 65536)
        check_range("seq_len", self.seq_len, 8, 8192)
        check_range("batch_size", self.batch_size, 1, 512)
        check_range("steps", self.steps, 2, 10000)
        check_range("warmup", self.warmup, 1, self.steps - 1)
        check_range("lr", self.lr, 1e-6, 1e-1)
        for mode in self.modes:
            check_choice("modes", mode, TRAIN_MODES)


TRAINING_PRESETS = {
    "small": TrainingConfig(d_model=64, n_layers=2, n_heads=2, vocab_size=4096, seq_len=64,
                            batch_size=4, steps=6, warmup=2, lr=1e-3),
    # ~105M parameters, 16k tokens a step: big enough to keep an H100 busy, so that the step
    # time is set by the matmuls, not by kernel launches. About 100 s for all four modes
    # on one H200 (typical_s below).
    "full": TrainingConfig(d_model=1024, n_layers=8, n_heads=16, vocab_size=4096, seq_len=1024,
                           batch_size=16, steps=50, warmup=5, lr=3e-4),
}


def _unsupported(mode: str, device: torch.device) -> str | None:
    """Why ``mode`` cannot run on ``device`` (None if it can)."""
    if mode == "tf32":
        machine = detect()
        if device.type != "cuda" or "tf32" not in machine.dtypes:
            return (f"tf32 needs an NVIDIA GPU with compute capability 8.0+ (Ampere or "
                    f"newer); this is {machine.name}")
    return None


def train_one(mode: str, cfg: dict, seed: int = 0) -> pd.DataFrame:
    """Train a fresh model ``cfg['steps']`` steps in ``mode``; run it in a fresh process.

    Rows: the loss per step, the median step time (after ``warmup`` steps), model TFLOP/s
    (6 N tokens / step time), peak allocated memory, GradScaler's scale and skipped steps.
    """
    check_choice("mode", mode, TRAIN_MODES)
    tc = TrainingConfig(**{**cfg, "modes": tuple(cfg.get("modes", TRAIN_MODES))})
    device = torch_device()
    base = {"mode": mode}
    reason = _unsupported(mode, device)
    if reason:
        return pd.DataFrame([{**base, "metric": "run", "value": math.nan,
                              "status": "unsupported", "error": reason}])
    # TF32 is a global switch: this process is fresh and trains one mode, so it is safe here.
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    mcfg = ModelConfig(vocab_size=tc.vocab_size, d_model=tc.d_model, n_layers=tc.n_layers,
                       n_heads=tc.n_heads, seq_len=tc.seq_len)
    model = build_model(mcfg, seed).to(device).train()
    n_params = count_params(model)
    ids = token_ids("train", tc.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    batches = [tuple(t.to(device) for t in random_batch(ids, tc.batch_size, tc.seq_len, gen))
               for _ in range(tc.steps)]
    profiling.reset_peak(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, fused=device.type == "cuda")
    amp = {"fp16_gradscaler": torch.float16, "bf16_autocast": torch.bfloat16}.get(mode)
    scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16_gradscaler")
    losses, scales, skipped = [], [], []

    def step() -> None:
        loss, scale, was_skipped = scaled_step(model, opt, scaler, *batches[len(losses)], amp)
        losses.append(loss)
        scales.append(scale)
        skipped.append(was_skipped)

    ms = profiling.time_ms(step, warmup=tc.warmup, repeats=tc.steps - tc.warmup, device=device)
    peak = profiling.peak_bytes(device)
    tokens = tc.batch_size * tc.seq_len
    rows = [{**base, "step": i, "metric": "loss", "value": float(v), "unit": "nats"}
            for i, v in enumerate(torch.stack(losses).cpu().tolist())]
    if scaler.is_enabled():
        rows += [{**base, "step": i, "metric": "loss_scale", "value": float(s), "unit": "x"}
                 for i, s in enumerate(scales)]
    rows += [{**base, "metric": m, "value": v, "unit": u} for m, v, u in (
        ("step_time", ms, "ms"), ("tokens_per_s", tokens / (ms / 1e3), "tokens/s"),
        ("model_tflops", 6 * n_params * tokens / (ms / 1e3) / 1e12, "TFLOP/s"),
        ("skipped_steps", float(sum(skipped)), "steps"), ("n_params", float(n_params), "params"))]
    if device.type == "cuda":  # PyTorch's allocator statistics exist only for CUDA
        rows.append({**base, "metric": "peak_memory", "value": peak / 2**30, "unit": "GiB"})
    return pd.DataFrame(rows)


def run_training(cfg: TrainingConfig, seed: int) -> pd.DataFrame:
    """Each mode in a fresh process (clean peak memory; a crash or OOM becomes a row)."""
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    frames = [runner.call("workbook.precision.experiments:train_one",
                          {"mode": mode, "cfg": args, "seed": seed}, timeout_s=300)
              for mode in cfg.modes]
    rows = pd.concat(frames, ignore_index=True)
    # A failed mode's row carries the call's scalar arguments; the seed is added by the caller.
    rows = rows.drop(columns=[c for c in ("seed",) if c in rows.columns])
    rows["status"] = rows["status"].fillna("ok") if "status" in rows else "ok"
    return rows


EXPERIMENTS = [
    Experiment(name="precision_underflow",
               summary="share of real gradients flushed to 0 in FP16/BF16/FP8, loss scale, "
                       "GradScaler trace", notebook="08_mixed_precision",
               run=run_underflow, presets=UNDERFLOW_PRESETS,
               min_gpus={"small": 0, "full": 0}, timeout_s=900,
               # full: the full base model's (6 x 256, from the cache) gradients on one batch,
               # five scales, a 60-step GradScaler trace; not yet timed on a GPU (08's Run All
               # showed its button): a process start and seconds of work
               typical_s={"full": 20},
               # the panel's first Run: one scale, a 20-step trace (the panel draws the
               # fixed-scale underflow, not the trace)
               panel_start={"full": {"log2_scales": (0,), "scaler_steps": 20}},
               panel_s={"full": 12}),
    Experiment(name="precision_stagnation",
               summary="updates lost to rounding in BF16/FP16 weights vs FP32 master weights",
               notebook="08_mixed_precision", run=run_stagnation, presets=STAGNATION_PRESETS,
               min_gpus={"small": 0, "full": 0}, timeout_s=900,
               # small: 19.7 s on 2 CPU cores (this checkout, 2026-12); full: about 40 s on one
               # H200 (gpu_record.sh of bff570afe043 recorded it 40 s after the run before it,
               # process starts included), so a GPU's Run All runs it live (<= 60 s)
               typical_s={"small": 20, "full": 40}),
    Experiment(name="precision_training",
               summary="FP32 vs TF32 vs FP16+GradScaler vs BF16 autocast: loss, step time, "
                         "peak memory", notebook="08_mixed_precision", run=run_training,
               presets=TRAINING_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=900,
               # small: 28.3 s on 2 CPU cores (four fresh processes); full: about 100 s on one
               # H200 (gpu_record.sh of bff570afe043 recorded it 103 s after the run before it),
               # so on a GPU it waits for its button
               typical_s={"small": 30, "full": 100}),
]

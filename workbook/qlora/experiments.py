"""QLoRA's experiments: peak VRAM of full fine-tuning, LoRA and QLoRA per model size (each in a
fresh process on a GPU), and LoRA vs QLoRA quality on the base model's task (same rank, steps,
learning rate and batches; both fine-tune through :func:`workbook.lora.finetune`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pandas as pd
import torch

from workbook import runner
from workbook.config import check_choice, check_range, takes_rows
from workbook.hardware import torch_device
from workbook.lora import SHAPES, base_on_cpu, eval_loss, finetune, shape, task_ids, with_lora
from workbook.qlora.vram import (
    METHODS,
    measure_vram,
    predicted_rows,
    quantize_linears,
    state_tensors_bytes,
)
from workbook.registry import Experiment

# -------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class VramConfig:
    sizes: tuple[str, ...]
    methods: tuple[str, ...] = METHODS
    rank: int = 64
    batch_size: int = 1
    seq_len: int = 512
    timeout_s: int = 240

    def __post_init__(self) -> None:
        for size in self.sizes:
            check_choice("size", size, SHAPES)
        for method in self.methods:
            check_choice("method", method, METHODS)
        check_range("rank", self.rank, 1, 1024)
        check_range("batch_size", self.batch_size, 1, 64)
        check_range("seq_len", self.seq_len, 16, 8192)
        check_range("timeout_s", self.timeout_s, 1, 86_400)


VRAM_PRESETS = {
    "small": VramConfig(sizes=("tiny",), rank=8, seq_len=64, timeout_s=120),
    "full": VramConfig(sizes=("1b", "3b", "7b")),
}


def _failure_rows(size: str, method: str, cfg: VramConfig, failed: pd.DataFrame) -> pd.DataFrame:
    """An OOM or crash of one configuration, as a ``peak`` row with its status."""
    first = failed.iloc[0]
    return pd.DataFrame([{"size": size, "n_params": shape(size).n_params, "method": method,
                          "rank": cfg.rank, "batch_size": cfg.batch_size,
                          "seq_len": cfg.seq_len, "metric": "peak", "value": math.nan,
                          "unit": "GB", "source": "measured", "status": first["status"],
                          "error": str(first.get("error", ""))[:200]}])


def run_vram(cfg: VramConfig, seed: int) -> pd.DataFrame:
    """Each (size, method) in its own fresh process; predictions beside; ratios at the end."""
    frames = [predicted_rows(cfg.sizes, cfg.methods, cfg.rank, cfg.batch_size, cfg.seq_len)]
    env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    on_gpu = torch.cuda.is_available()
    for size in cfg.sizes:
        for method in cfg.methods:
            kwargs = {"size": size, "method": method, "rank": cfg.rank,
                      "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "seed": seed}
            if on_gpu:     # the allocator's peak is clean only in a process of its own
                out = runner.call("workbook.qlora.vram:measure_vram", kwargs,
                                  timeout_s=cfg.timeout_s, env=env)
            else:          # a CPU run adds up tensor sizes: no allocator state to isolate
                out = measure_vram(**kwargs)
            if "status" in out and (out["status"] != "ok").all():
                out = _failure_rows(size, method, cfg, out)
            print(f"qlora_vram {size} {method}: "
                  f"{out.loc[out['metric'] == 'peak', 'value'].tolist()} GB "
                  f"{out.get('status', pd.Series(['ok'])).iloc[0]}", flush=True)
            frames.append(out)
    rows = pd.concat(frames, ignore_index=True)
    rows["rank"] = cfg.rank
    return pd.concat([rows, ratio_rows(rows)], ignore_index=True)


@takes_rows
def ratio_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """peak(full) / peak(method) per size and source: 'how many times less VRAM'."""
    out = []
    peaks = rows[rows["metric"] == "peak"]
    for (size, source), part in peaks.groupby(["size", "source"]):
        by_method = dict(zip(part["method"], part["value"], strict=True))
        full = by_method.get("full", math.nan)
        for method in ("lora", "qlora"):
            if method in by_method:
                ok = bool(full == full and by_method[method] == by_method[method])
                out.append({"size": size, "n_params": part["n_params"].iloc[0],
                            "method": method, "metric": "saving_vs_full",
                            "value": full / by_method[method] if ok else math.nan,
                            "unit": "x", "source": source,
                            "status": "ok" if ok else "oom"})
    return pd.DataFrame(out)


# ------------------------------------------------------------- quality: LoRA vs QLoRA


@dataclass(frozen=True)
class QualityConfig:
    rank: int = 16
    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 32
    seq_len: int = 128
    eval_batches: int = 16
    preset: str | None = "small"     # which base model (the workbook's small one by default)

    def __post_init__(self) -> None:
        check_range("rank", self.rank, 1, 1024)
        check_range("steps", self.steps, 1, 100_000)
        check_range("lr", self.lr, 1e-7, 1.0)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seq_len", self.seq_len, 8, 8192)
        check_range("eval_batches", self.eval_batches, 1, 1000)
        check_choice("preset", self.preset, (None, "small", "full"))


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the stored weights, quantisation constants included."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) + \
        state_tensors_bytes(model)


def run_quality(cfg: QualityConfig, seed: int) -> pd.DataFrame:
    """LoRA on the full-precision base vs QLoRA on its NF4 copy: same rank, steps, lr, data."""
    device = torch_device()
    base = base_on_cpu(cfg.preset, seed)
    train, held_out = task_ids(base.config.vocab_size)
    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    for method in ("lora", "qlora"):
        frozen = copy.deepcopy(base).to(device=device, dtype=compute)
        if method == "qlora":
            quantize_linears(frozen, compute_dtype=compute)
        common = {"method": method, "rank": cfg.rank, "steps": cfg.steps, "lr": cfg.lr}
        before = eval_loss(frozen, held_out, cfg.batch_size, cfg.seq_len, cfg.eval_batches,
                           seed)
        rows.append({**common, "stage": "before", "metric": "eval_loss", "value": before,
                     "unit": "nats"})
        rows.append({**common, "stage": "before", "metric": "weight_bytes",
                     "value": weight_bytes(frozen), "unit": "B"})
        model = with_lora(frozen, cfg.rank, 2.0 * cfg.rank, "all", seed).to(device)
        stats = finetune(model, train, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                         seq_len=cfg.seq_len, seed=seed)
        after = eval_loss(model, held_out, cfg.batch_size, cfg.seq_len, cfg.eval_batches, seed)
        rows.append({**common, "stage": "after", "metric": "eval_loss", "value": after,
                     "unit": "nats"})
        rows.append({**common, "stage": "after", "metric": "step_time",
                     "value": stats["step_time"], "unit": "ms"})
    frame = pd.DataFrame(rows)
    frame["source"] = "measured"
    return frame


QUALITY_PRESETS = {
    "small": QualityConfig(steps=10, batch_size=4, seq_len=32, eval_batches=2),
    "full": QualityConfig(),
}


EXPERIMENTS = [
    Experiment(
        name="qlora_vram",
        summary="peak VRAM of full FT vs LoRA vs QLoRA (NF4) for 1B/3B/7B Llama shapes",
        notebook="12_qlora",
        run=run_vram,
        presets=VRAM_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=900,
    ),
    Experiment(
        name="qlora_quality",
        summary="LoRA vs QLoRA (NF4 base) on the base model's task, same rank, steps and lr",
        notebook="12_qlora",
        run=run_quality,
        presets=QUALITY_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=300,
    ),
]

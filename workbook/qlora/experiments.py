"""QLoRA's experiments: peak VRAM of full fine-tuning, LoRA and QLoRA per model size (each in a
fresh process on a GPU), and LoRA vs QLoRA quality on the base model's task (same rank, steps,
learning rate and batches; both fine-tune through :func:`workbook.lora.finetune`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated

import pandas as pd
import torch

from workbook import runner
from workbook.config import MAY_BE_EMPTY, check_choice, check_range, takes_rows
from workbook.hardware import torch_device
from workbook.lora import SHAPES, base_on_cpu, eval_loss, finetune, task_ids, with_lora
from workbook.qlora.vram import (
    COMPONENTS,
    METHODS,
    OPTIMIZERS,
    failure_row,
    measure_many,
    predict_vram,
    predicted_rows,
    quantize_linears,
    state_tensors_bytes,
)
from workbook.registry import Experiment

# -------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class VramConfig:
    """Peak memory per (size, method) with fp32 AdamW; the other ``optimizers`` (bitsandbytes'
    8-bit and paged AdamW) at ``optimizer_sizes``; and a memory-pressure case: ``pressure_method``
    at ``pressure_size`` with every optimizer under a ``pressure_cap_gb`` allocator cap (0:
    none), where paging decides what fits."""

    sizes: tuple[str, ...]
    methods: tuple[str, ...] = METHODS
    rank: int = 64
    batch_size: int = 1
    seq_len: int = 512
    timeout_s: int = 240
    optimizers: tuple[str, ...] = ("adamw",)
    optimizer_sizes: Annotated[tuple[str, ...], MAY_BE_EMPTY] = ()
    pressure_cap_gb: float = 0.0
    pressure_size: str = "7b"
    pressure_method: str = "full"

    def __post_init__(self) -> None:
        for size in self.sizes + self.optimizer_sizes + (self.pressure_size,):
            check_choice("size", size, SHAPES)
        for method in self.methods + (self.pressure_method,):
            check_choice("method", method, METHODS)
        for optimizer in self.optimizers:
            check_choice("optimizer", optimizer, OPTIMIZERS)
        check_range("rank", self.rank, 1, 1024)
        check_range("batch_size", self.batch_size, 1, 64)
        check_range("seq_len", self.seq_len, 16, 8192)
        check_range("timeout_s", self.timeout_s, 1, 86_400)
        check_range("pressure_cap_gb", self.pressure_cap_gb, 0.0, 10_000.0)


VRAM_PRESETS = {
    "small": VramConfig(sizes=("tiny",), rank=8, seq_len=64, timeout_s=120,
                        optimizers=("adamw",), optimizer_sizes=()),
    # 9 sizes x methods with fp32 AdamW, the 3 bitsandbytes optimizers for each method at 7B,
    # and 7B full FT under a 40 GB allocator cap (an A100-40GB) with all four optimizers.
    "full": VramConfig(sizes=("1b", "3b", "7b"),
                       optimizers=("adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit"),
                       optimizer_sizes=("7b",), pressure_cap_gb=40.0),
}


def vram_plan(cfg: VramConfig, seed: int = 0) -> list[dict]:
    """The keyword arguments of every :func:`~workbook.qlora.vram.measure_vram` call."""
    common = {"rank": cfg.rank, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
              "seed": seed}
    plan = []
    for size in cfg.sizes + tuple(s for s in cfg.optimizer_sizes if s not in cfg.sizes):
        for method in cfg.methods:
            opts = cfg.optimizers if size in cfg.optimizer_sizes else ("adamw",)
            plan += [{**common, "size": size, "method": method, "optimizer": o, "cap_gb": 0.0}
                     for o in opts]
    if cfg.pressure_cap_gb > 0:
        plan += [{**common, "size": cfg.pressure_size, "method": cfg.pressure_method,
                  "optimizer": o, "cap_gb": cfg.pressure_cap_gb} for o in cfg.optimizers]
    return plan


def needs_own_process(kw: dict) -> bool:
    """Paged configurations run in a process apart from the others: bitsandbytes never frees
    managed memory, which would sit under every later configuration's device memory."""
    return kw["optimizer"].startswith("paged")


MANAGED_PER_PROCESS_GB = 60.0   # predicted paged state that one process may accumulate


def process_groups(plan: list[dict]) -> list[list[dict]]:
    """The configurations of one process each: every non-paged one together; the paged ones
    packed (largest first) so that the managed memory a process accumulates (bitsandbytes never
    frees it) stays under :data:`MANAGED_PER_PROCESS_GB`, far below an 80 GB card's memory."""
    groups = [[kw for kw in plan if not needs_own_process(kw)]]
    paged = sorted((kw for kw in plan if needs_own_process(kw)), key=lambda kw: -_managed(kw))
    bins: list[tuple[float, list[dict]]] = []
    for kw in paged:
        for i, (used, members) in enumerate(bins):
            if used + _managed(kw) <= MANAGED_PER_PROCESS_GB:
                bins[i] = (used + _managed(kw), members + [kw])
                break
        else:
            bins.append((_managed(kw), [kw]))
    return [g for g in groups + [members for _, members in bins] if g]


def _managed(kw: dict) -> float:
    return predict_vram(kw["size"], kw["method"], kw["rank"], kw["batch_size"], kw["seq_len"],
                        kw["optimizer"])["paged"] / 1e9


def predicted_plan_rows(plan: list[dict]) -> pd.DataFrame:
    """The formula for every planned configuration; under a cap also ``fits`` (1: the
    allocator's predicted peak is at most the cap)."""
    frames = []
    for kw in plan:
        rows = predicted_rows([kw["size"]], [kw["method"]], kw["rank"], kw["batch_size"],
                              kw["seq_len"], kw["optimizer"]).assign(cap_gb=kw["cap_gb"])
        if kw["cap_gb"] > 0:
            parts = predict_vram(kw["size"], kw["method"], kw["rank"], kw["batch_size"],
                                 kw["seq_len"], kw["optimizer"])
            peak = sum(parts[c] for c in COMPONENTS) / 1e9
            fits = rows.iloc[[0]].assign(metric="fits", value=float(peak <= kw["cap_gb"]),
                                         unit="1 = fits")
            rows = pd.concat([rows, fits], ignore_index=True)
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def run_vram(cfg: VramConfig, seed: int) -> pd.DataFrame:
    """Every planned configuration measured (:func:`vram_plan`), predictions beside, ratios.

    On a GPU a few processes (:func:`measure_many`, :func:`process_groups`): one CUDA start and
    one import of transformers, PEFT and bitsandbytes per group, instead of one per
    configuration (167 s for 9 configurations on an H200, most of it process starts); the
    allocator's peak is reset, memory freed and every number taken relative to the allocation
    at the configuration's start. On a CPU the stored tensors are added up, in this process.
    """
    plan = vram_plan(cfg, seed)
    frames = [predicted_plan_rows(plan)]
    env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    if torch.cuda.is_available():
        for group in process_groups(plan):
            if group:
                out = runner.call("workbook.qlora.vram:measure_many", {"configs": group},
                                  timeout_s=cfg.timeout_s * len(group), env=env)
                frames.append(out if (out.get("status", "ok") == "ok").any()
                              else _failure(group, out))
    else:
        frames.append(measure_many(plan))
    rows = pd.concat(frames, ignore_index=True)
    rows["rank"] = cfg.rank
    measured = rows[(rows["source"] == "measured") & (rows["cap_gb"] > 0)]
    for kw in plan:
        if kw["cap_gb"] > 0:
            hit = measured[(measured["optimizer"] == kw["optimizer"])
                           & (measured["metric"] == "peak")]
            ok = float((hit.get("status", pd.Series(dtype=str)) == "ok").any())
            rows = pd.concat([rows, failure_row(kw, "ok", "").assign(
                metric="fits", value=ok, unit="1 = fits", rank=cfg.rank, error=None)],
                ignore_index=True)
    return pd.concat([rows, ratio_rows(rows)], ignore_index=True)


def _failure(plan: list[dict], failed: pd.DataFrame) -> pd.DataFrame:
    """A process that died (crash, timeout, OOM outside the per-configuration catch): one
    failure row per configuration it held."""
    first = failed.iloc[0]
    return pd.concat([failure_row(kw, str(first.get("status", "error")),
                                  str(first.get("error", ""))) for kw in plan],
                     ignore_index=True)


@takes_rows
def default_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the default setting: fp32 AdamW, no memory cap (rows recorded before the
    optimizer sweep existed have neither column and are all default)."""
    keep = pd.Series(True, index=rows.index)
    if "optimizer" in rows.columns:
        keep &= rows["optimizer"].fillna("adamw") == "adamw"
    if "cap_gb" in rows.columns:
        keep &= rows["cap_gb"].fillna(0.0) == 0.0
    return rows[keep]


@takes_rows
def ratio_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """peak(full) / peak(method) per size and source: 'how many times less VRAM'."""
    out = []
    peaks = default_rows(rows)
    peaks = peaks[peaks["metric"] == "peak"]
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
    seeds: int = 3                   # fine-tuning seeds seed, seed+1, ... (one base model)

    def __post_init__(self) -> None:
        check_range("seeds", self.seeds, 1, 32)
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
    """LoRA on the full-precision base vs QLoRA on its NF4 copy: same rank, steps, lr, data,
    over seeds ``seed .. seed + cfg.seeds - 1``, in turn in this process; the first seed's
    step times are the ones reported. (Seeds in processes of their own, two at once, were slower
    on the H200: a process spent ~25 s starting against 12 s of training; 3ff62994f25e.)"""
    frames = [quality_rows(cfg, seed + i, seed, timed=i == 0) for i in range(cfg.seeds)]
    return pd.concat(frames, ignore_index=True)


def quality_rows(cfg: QualityConfig, seed: int, base_seed: int, timed: bool = True
                 ) -> pd.DataFrame:
    """One seed of :func:`run_quality`: the base model of ``base_seed``, adapters and batches
    of ``seed``; step times only where ``timed``."""
    device = torch_device()
    base = base_on_cpu(cfg.preset, base_seed)
    train, held_out = task_ids(base.config.vocab_size)
    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    for method in ("lora", "qlora"):
        frozen = copy.deepcopy(base).to(device=device, dtype=compute)
        if method == "qlora":
            quantize_linears(frozen, compute_dtype=compute)
        common = {"method": method, "rank": cfg.rank, "steps": cfg.steps, "lr": cfg.lr,
                  "run_seed": seed}
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
        if timed:
            rows.append({**common, "stage": "after", "metric": "step_time",
                         "value": stats["step_time"], "unit": "ms"})
    frame = pd.DataFrame(rows)
    frame["source"] = "measured"
    return frame


QUALITY_PRESETS = {
    "small": QualityConfig(steps=6, batch_size=4, seq_len=32, eval_batches=2),
    "full": QualityConfig(),
}


EXPERIMENTS = [
    Experiment(
        name="qlora_vram",
        summary="peak VRAM of full FT vs LoRA vs QLoRA (NF4) for 1B/3B/7B Llama shapes; 8-bit "
                "and paged AdamW at 7B",
        notebook="12_qlora",
        run=run_vram,
        presets=VRAM_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=900,
        typical_s={"small": 10, "full": 110},
        # the panel's first Run: QLoRA at 1B with plain AdamW, no pressure case: one of the 22
        # configurations, in one child process (run_vram's docstring: 167 s for 9
        # configurations on an H200 when each had its own process, mostly process starts)
        panel_start={"full": {"sizes": ("1b",), "methods": ("qlora",),
                              "optimizers": ("adamw",), "optimizer_sizes": (),
                              "pressure_cap_gb": 0.0}},
        panel_s={"full": 22},
    ),
    Experiment(
        name="qlora_quality",
        summary="LoRA vs QLoRA (NF4 base) on the base model's task, same rank, steps and lr",
        notebook="12_qlora",
        run=run_quality,
        presets=QUALITY_PRESETS,
        min_gpus={"small": 0, "full": 1},
        typical_s={"small": 15, "full": 60},
        timeout_s=300,
    ),
]

"""Notebook 05's experiment: every variant on every rank (measured, one torchrun launch per
group), with the paper's formulas and DeepSpeed's estimators beside them (predicted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from workbook import registry, results, runner
from workbook.config import WorkbookError, check_choice, check_range
from workbook.memory.experiments import check_gpt_shape, fill_params
from workbook.memory.formulas import gpt_params
from workbook.registry import Experiment
from workbook.zero.formulas import (
    VARIANTS,
    deepspeed_estimates,
    predicted_memory,
    variant_extras,
    zero_comm_formula,
)


@dataclass(frozen=True)
class ZeroConfig:
    variants: tuple[str, ...]
    n_layer: int
    d_model: int
    n_head: int
    vocab: int
    seq_len: int
    micro_batch: int
    steps: int
    bucket_elems: int           # reduce/all-gather bucket size (elements), stage 3 prefetch too
    n_ranks: int = 0            # 0: every GPU present (2 gloo ranks on a CPU)
    isolate: bool = False       # one fresh torchrun launch per variant (clean peaks, slower)
    dtype: str = "bf16"
    timeout_s: int = 600        # per launch
    record_each: str = ""       # a preset name: record each launch's rows as soon as it ends

    def __post_init__(self) -> None:
        for name in self.variants:
            check_choice("variant", name, VARIANTS)
        check_gpt_shape(self.n_layer, self.d_model, self.n_head, self.vocab)
        check_range("seq_len", self.seq_len, 2, 32768)
        check_range("micro_batch", self.micro_batch, 1, 1024)
        check_range("steps", self.steps, 2, 1000)
        check_range("bucket_elems", self.bucket_elems, 1000, 10**9)
        check_range("n_ranks", self.n_ranks, 0, 1024)
        check_choice("dtype", self.dtype, ("bf16", "fp16"))
        check_choice("record_each", self.record_each, ("", "small", "full"))
        check_range("timeout_s", self.timeout_s, 1, 86_400)


ZERO_PRESETS = {
    "small": ZeroConfig(variants=("ddp", "zero0", "zero1", "zero2", "zero2+reduce", "zero3"),
                        n_layer=2,
                        d_model=64, n_head=4, vocab=512, seq_len=32, micro_batch=2, steps=3,
                        bucket_elems=20_000, n_ranks=2),
    # GPT-2 medium-like (~0.35B): model states 16Ψ ≈ 5.7 GB, large against buckets. Stages
    # first, so that a slow offload variant at the end costs least. timeout_s: per launch.
    "full": ZeroConfig(variants=("zero0", "zero1", "zero2", "zero3", "ddp", "zero2+reduce",
                                 "zero2+offload_opt", "zero3+offload_opt",
                                 "zero3+offload_all"),
                       n_layer=24, d_model=1024, n_head=16, vocab=50304, seq_len=1024,
                       micro_batch=4, steps=3, bucket_elems=20_000_000, isolate=True,
                       timeout_s=150),
}


def world_size(cfg: ZeroConfig) -> tuple[int, str]:
    """(ranks, backend): every GPU present with NCCL, else ``n_ranks`` (default 2) gloo ranks."""
    gpus = registry.gpu_count()
    if gpus:
        n = cfg.n_ranks or gpus
        if n > gpus:
            raise WorkbookError(f"n_ranks={n} but this machine has {gpus} GPUs; allowed: "
                                f"0 (all) or 1 to {gpus}")
        return n, "nccl"
    offloads = [v for v in cfg.variants if VARIANTS[v]["offload"] != "none"]
    if offloads:
        raise WorkbookError(f"variants {offloads} offload GPU memory to the CPU and need a "
                            "GPU; on a CPU choose from ddp, zero0, zero1, zero2, zero3")
    return cfg.n_ranks or 2, "gloo"


def run_zero(cfg: ZeroConfig, seed: int) -> pd.DataFrame:
    """Every variant on every rank (measured), with the paper's formulas and DeepSpeed's
    estimators beside them (predicted)."""
    n, backend = world_size(cfg)
    common = {"n_layer": cfg.n_layer, "d_model": cfg.d_model, "n_head": cfg.n_head,
              "vocab": cfg.vocab, "seq_len": cfg.seq_len, "micro_batch": cfg.micro_batch,
              "steps": cfg.steps, "dtype": cfg.dtype, "bucket_elems": cfg.bucket_elems,
              "seed": seed}
    groups = [[v] for v in cfg.variants] if cfg.isolate else [list(cfg.variants)]
    frames = []
    for group in groups:
        rows = runner.call_distributed(
            "workbook.zero.engine:train_rank", {"variants": [VARIANTS[v] for v in group], **common},
            nprocs=n, backend=backend, timeout_s=cfg.timeout_s, env=_env_for(backend))
        frame = _with_predictions(rows, group, n, cfg).assign(seed=seed, backend=backend)
        frame = fill_params(frame)
        if cfg.record_each:  # a later hang or kill cannot lose the launches already done
            results.record("zero_stages", frame.assign(preset=cfg.record_each),
                           preset=cfg.record_each, seed=seed)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _with_predictions(rows: pd.DataFrame, group: list[str], n: int,
                      cfg: ZeroConfig) -> pd.DataFrame:
    """One launch's measured rows plus the formula rows of its variants."""
    if "engine" not in rows:  # the whole launch failed: say so for each variant
        rows = pd.concat([rows.assign(**_core(VARIANTS[v]), tweak=",".join(
            f"{k}={x}" for k, x in variant_extras(VARIANTS[v]).items())) for v in group],
            ignore_index=True)
    rows = rows.copy()
    rows["variant"] = [_variant_name(r) for r in rows.to_dict("records")]
    rows["n_ranks"] = n
    ok = rows[rows["status"] == "ok"]
    psi = gpt_params(cfg.n_layer, cfg.d_model, cfg.vocab, cfg.seq_len)
    n_params = int(ok["n_params"].iloc[0]) if len(ok) else psi
    largest = int(ok["largest_layer"].iloc[0]) if len(ok) else cfg.vocab * cfg.d_model
    predicted = predicted_rows(tuple(group), n_params, largest, n, cfg.dtype)
    predicted = predicted.assign(dtype=cfg.dtype, micro_batch=cfg.micro_batch,
                                 seq_len=cfg.seq_len, largest_layer=largest, rank=-1)
    return pd.concat([rows, predicted], ignore_index=True)


def _variant_name(row: dict[str, Any]) -> str:
    for name, v in VARIANTS.items():
        tweaked = str(row.get("tweak") or "-") not in ("-", "nan")
        if all(row.get(k) == v[k] for k in ("engine", "stage", "offload")) and (
                tweaked == bool(variant_extras(v))):
            return name
    return "?"


def predicted_rows(variants: tuple[str, ...], n_params: int, largest: int, n_gpus: int,
                   dtype: str) -> pd.DataFrame:
    """The paper's per-rank model states and communication for each variant, and DeepSpeed's
    estimate where it has one (stages 2 and 3), as ``predicted`` rows."""
    rows = []
    for name in variants:
        v = VARIANTS[name]
        tweak = ",".join(f"{k}={x}" for k, x in variant_extras(v).items())
        base = {**_core(v), "tweak": tweak, "variant": name, "n_ranks": n_gpus,
                "n_params": n_params,
                "source": "predicted", "status": "ok", "unit": "bytes"}
        for key, value in predicted_memory(name, n_params, n_gpus).items():
            metric = "grads+buffers" if key == "grads" else key
            rows.append({**base, "metric": f"{metric}_bytes", "value": value})
        elem = 4 if v["engine"] == "ddp" else 2  # DDP all-reduces fp32 gradients
        comm = zero_comm_formula(n_params, n_gpus, v["stage"], bytes_per_elem=elem)
        rows.append({**base, "metric": "comm_bytes", "value": comm["paper"]})
        estimate = _ds_estimate(v, n_params, largest, n_gpus)
        if estimate is not None:
            rows.append({**base, "metric": "ds_estimate_bytes", "value": estimate})
    return pd.DataFrame(rows)


def _core(v: dict[str, Any]) -> dict[str, Any]:
    return {k: v[k] for k in ("engine", "stage", "offload")}


def _ds_estimate(v: dict[str, Any], n_params: int, largest: int, n_gpus: int) -> float | None:
    """DeepSpeed's estimator for stage 2 and 3 (it has none for 0 and 1)."""
    if v["engine"] != "deepspeed" or v["stage"] < 2:
        return None
    table = deepspeed_estimates(n_params, max(largest, 1), n_gpus)
    hit = table[(table["stage"] == v["stage"]) & (table["offload"] == v["offload"])]
    return float(hit["gpu_bytes"].iloc[0]) if len(hit) else None


def _env_for(backend: str) -> dict[str, str]:
    return {"DS_ACCELERATOR": "cpu" if backend == "gloo" else "cuda",
            "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}


EXPERIMENTS = [
    Experiment(
        name="zero_stages",
        summary="DDP and DeepSpeed ZeRO 0-3 (+offload): per-rank memory, comm bytes, step time",
        notebook="05_data_parallel_zero",
        run=run_zero,
        presets=ZERO_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=1800,
        # full: one torchrun launch per variant; 05's H200 Run All took 118.4 s for four
        # variants (steps=2) of the 24 x 1024 model, ~30 s a launch, and the preset has nine
        typical_s={"full": 270},
        # the panel's first Run: one launch, one stage, two steps, GPT-2 small's size (12 x
        # 768; the preset's 16 heads stay, so d_model takes the preset's multiples of 16). It
        # took 35 s on the H200 through torchrun, 23.3 s as one rank without it
        # (panel_walltime, d636f55b33ce)
        panel_start={"full": {"variants": ("zero2",), "steps": 2, "n_layer": 12,
                              "d_model": 768}},
        panel_s={"full": 23},
    ),
]

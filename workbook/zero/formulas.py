"""ZeRO's formulas (pure, CPU; what the explorer drives): the paper's per-rank model-state
bytes for stages 0-3 (Rajbhandari et al. 2020, Fig. 1 and Sec. 5), its per-rank communication
volume (Sec. 7), DeepSpeed's own estimators, and what each measured variant should hold."""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbook.config import WorkbookError, check_choice, check_range

STAGES: tuple[int, ...] = (0, 1, 2, 3)
ENGINES: tuple[str, ...] = ("ddp", "deepspeed")
OFFLOADS: tuple[str, ...] = ("none", "optimizer", "optimizer+params")
K_ADAM_MIXED = 12  # fp32 master weights + Adam momentum + variance: 4 + 4 + 4 bytes/param


def zero_memory_formula(n_params: float, n_gpus: int, stage: int, *,
                        k: int = K_ADAM_MIXED) -> dict[str, float]:
    """Per-rank model-state bytes of mixed-precision training (ZeRO paper, Fig. 1).

    Ψ = ``n_params``; fp16/bf16 parameters 2Ψ, fp16/bf16 gradients 2Ψ, optimizer K·Ψ. Stage 1
    shards the optimizer (K·Ψ/N_d), stage 2 also the gradients, stage 3 also the parameters.
    """
    check_choice("stage", stage, STAGES)
    check_range("n_gpus", n_gpus, 1, 1_000_000)
    check_range("n_params", n_params, 1, 1e15)
    n = float(n_gpus)
    params = 2 * n_params / (n if stage >= 3 else 1)
    grads = 2 * n_params / (n if stage >= 2 else 1)
    optim = k * n_params / (n if stage >= 1 else 1)
    return {"params": params, "grads": grads, "optimizer": optim,
            "total": params + grads + optim}


def zero_comm_formula(n_params: float, n_gpus: int, stage: int,
                      bytes_per_elem: int = 2) -> dict[str, float]:
    """Per-rank communication volume per step in bytes (ZeRO paper, Sec. 7).

    Data parallelism all-reduces the gradients: a reduce-scatter plus an all-gather, Ψ elements
    each, so 2Ψ. Stages 1 and 2 keep that volume (reduce-scatter of gradients, all-gather of
    updated parameters); stage 3 all-gathers parameters twice (forward and backward) and
    reduce-scatters gradients once: 3Ψ. A ring moves (N_d-1)/N_d of that per rank; the paper
    drops the factor. Both are returned.
    """
    check_choice("stage", stage, STAGES)
    check_range("n_gpus", n_gpus, 1, 1_000_000)
    factor = 3.0 if stage == 3 else 2.0
    volume = factor * n_params * bytes_per_elem
    ring = volume * (n_gpus - 1) / n_gpus
    return {"paper": volume, "ring": ring}


def formula_table(n_params: float, n_gpus: int, *, k: int = K_ADAM_MIXED) -> pd.DataFrame:
    """Stages 0-3 side by side: per-rank GB of each model state and the communication volume."""
    check_range("k", k, 0, 64)
    rows = []
    for stage in STAGES:
        mem = zero_memory_formula(n_params, n_gpus, stage, k=k)
        comm = zero_comm_formula(n_params, n_gpus, stage)
        rows.append({"stage": stage, **{f"{key} (GB)": v / 1e9 for key, v in mem.items()},
                     "comm per step (GB)": comm["paper"] / 1e9,
                     "vs stage 0": zero_memory_formula(n_params, n_gpus, 0, k=k)["total"]
                     / mem["total"]})
    return pd.DataFrame(rows)


def deepspeed_estimates(n_params: int, n_largest_layer: int, n_gpus: int) -> pd.DataFrame:
    """DeepSpeed's own estimators (``estimate_zero2/3_model_states_mem_needs``), per GPU bytes.

    They take Ψ and, for stage 3, the largest layer (gathered whole during its forward), and
    return per-GPU and CPU bytes with and without offload (nodes of 8 GPUs here). The CPU
    bytes are a node's, except ZeRO-2 with optimizer offload: DeepSpeed's estimator multiplies
    Ψ by every GPU of the job there (Ψ · max(4 · N_d, 16) · 1.5), so that row is the whole
    job's CPU memory; ``cpu_counts`` says which, per row.
    Unlike the paper they count 18Ψ/N_d of sharded state: 2 (bf16 grads) + 4 (fp32 grads,
    made at step time) + 12 (Adam, K).
    """
    check_range("n_params", n_params, 1, 1e15)
    check_range("n_largest_layer", n_largest_layer, 1, n_params)
    check_range("n_gpus", n_gpus, 1, 1_000_000)
    for name, value in (("n_params", n_params), ("n_largest_layer", n_largest_layer),
                        ("n_gpus", n_gpus)):
        if not float(value).is_integer():  # DeepSpeed's estimators count whole parameters
            raise WorkbookError(f"{name}={value!r} must be a whole number")
    n_params, n_largest_layer, n_gpus = int(n_params), int(n_largest_layer), int(n_gpus)
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    per_node = min(n_gpus, 8)  # nodes of 8 GPUs: the estimators' CPU side is per node
    nodes = -(-n_gpus // per_node)
    rows = []
    for offload in (False, True):
        cpu, gpu = estimate_zero2_model_states_mem_needs(
            n_params, num_gpus_per_node=per_node, num_nodes=nodes, cpu_offload=offload)
        rows.append({"stage": 2, "offload": "optimizer" if offload else "none",
                     "gpu_bytes": gpu, "cpu_bytes": cpu,
                     "cpu_counts": f"all {n_gpus} GPUs of the job" if offload
                     else f"one node ({per_node} GPUs)"})
    for offload, params in ((False, False), (True, False), (True, True)):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            n_params, n_largest_layer, num_gpus_per_node=per_node, num_nodes=nodes,
            cpu_offload=offload, cpu_offload_params=params, zero_init=True)
        what = "optimizer+params" if params else "optimizer" if offload else "none"
        rows.append({"stage": 3, "offload": what, "gpu_bytes": gpu, "cpu_bytes": cpu,
                     "cpu_counts": f"one node ({per_node} GPUs)"})
    return pd.DataFrame(rows)


# The runs notebook 05 measures: an engine, a ZeRO stage, an offload, and any other
# zero_optimization keys (see variant_extras).
VARIANTS: dict[str, dict[str, Any]] = {
    "ddp": {"engine": "ddp", "stage": 0, "offload": "none"},
    "zero0": {"engine": "deepspeed", "stage": 0, "offload": "none"},
    "zero1": {"engine": "deepspeed", "stage": 1, "offload": "none"},
    "zero2": {"engine": "deepspeed", "stage": 2, "offload": "none"},
    # DeepSpeed all-reduces each gradient bucket by default; this reduces to the owner instead
    "zero2+reduce": {"engine": "deepspeed", "stage": 2, "offload": "none",
                     "use_multi_rank_bucket_allreduce": False},
    "zero3": {"engine": "deepspeed", "stage": 3, "offload": "none"},
    "zero2+offload_opt": {"engine": "deepspeed", "stage": 2, "offload": "optimizer"},
    "zero3+offload_opt": {"engine": "deepspeed", "stage": 3, "offload": "optimizer"},
    "zero3+offload_all": {"engine": "deepspeed", "stage": 3, "offload": "optimizer+params"},
}


def variant_extras(variant: dict[str, Any]) -> dict[str, Any]:
    """zero_optimization keys a variant sets beyond engine, stage and offload."""
    return {k: v for k, v in variant.items() if k not in ("engine", "stage", "offload")}


def predicted_memory(variant: str, n_params: float, n_gpus: int) -> dict[str, float]:
    """Per-rank GPU model-state bytes the paper predicts for a variant.

    DDP here is PyTorch AMP: fp32 parameters (4Ψ) and gradients (4Ψ), Adam's two fp32 moments
    (8Ψ): the same 16Ψ as the paper's 2+2+12, split differently. Offloaded states leave the GPU
    (ZeRO-Offload): the optimizer (K) and, with stage 2/3, the gradient partition go to the CPU;
    offloading parameters too leaves nothing resident but the layer being computed.
    """
    check_choice("variant", variant, VARIANTS)
    check_range("n_params", n_params, 1, 1e15)
    v = VARIANTS[variant]
    if v["engine"] == "ddp":
        return {"params": 4 * n_params, "grads": 4 * n_params, "optimizer": 8 * n_params,
                "total": 16 * n_params}
    mem = zero_memory_formula(n_params, n_gpus, v["stage"])
    if v["offload"] != "none":
        mem["optimizer"] = 0.0
        mem["grads"] = 0.0
    if v["offload"] == "optimizer+params":
        mem["params"] = 0.0
    mem["total"] = mem["params"] + mem["grads"] + mem["optimizer"]
    return mem


"""Data parallelism and ZeRO: the paper's memory and communication formulas beside DeepSpeed.

Two halves, kept apart:

* formulas (pure, CPU, what the sliders drive): :func:`zero_memory_formula` gives the ZeRO
  paper's per-rank model-state bytes for stages 0-3 (Rajbhandari et al. 2020, Fig. 1 and
  Sec. 5), :func:`zero_comm_formula` its per-rank communication volume (Sec. 7);
* measurements (real engines, one process per rank): :func:`train_step_rank` builds a small
  transformers GPT-2, wraps it in torch DDP or ``deepspeed.initialize`` with ZeRO stage 0-3
  (optionally offloading optimizer states / parameters to the CPU), runs a few steps and
  reports, per rank: model-state bytes split into parameters / gradients+buffers / optimizer
  states, peak bytes, collective bytes per step (every ``torch.distributed`` collective is
  counted by a wrapper installed before the engine starts) and step time.

Memory is counted two ways. A *tensor census* walks every live tensor the Python heap can reach
(deduplicated by storage) and classifies it as parameter, optimizer state or the rest; this
works on a CPU too. On a GPU the allocator's own counters (``torch.cuda.memory_allocated``,
``max_memory_allocated``) are reported beside it.
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from workbook.claims import verdict
from workbook.config import WorkbookError, check_choice, check_range, takes_rows
from workbook.registry import Experiment

STAGES: tuple[int, ...] = (0, 1, 2, 3)
ENGINES: tuple[str, ...] = ("ddp", "deepspeed")
OFFLOADS: tuple[str, ...] = ("none", "optimizer", "optimizer+params")
K_ADAM_MIXED = 12  # fp32 master weights + Adam momentum + variance: 4 + 4 + 4 bytes/param


# ------------------------------------------------------------------------------ formulas


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
    return per-GPU and per-node CPU bytes with and without offload (nodes of 8 GPUs here).
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
                     "gpu_bytes": gpu, "cpu_bytes": cpu})
    for offload, params in ((False, False), (True, False), (True, True)):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            n_params, n_largest_layer, num_gpus_per_node=per_node, num_nodes=nodes,
            cpu_offload=offload, cpu_offload_params=params, zero_init=True)
        what = "optimizer+params" if params else "optimizer" if offload else "none"
        rows.append({"stage": 3, "offload": what, "gpu_bytes": gpu, "cpu_bytes": cpu})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------- counting collectives

# Each collective's payload in the paper's accounting: an all-reduce of S bytes counts 2S (it
# is a reduce-scatter plus an all-gather); reduce-scatter counts its input, all-gather its
# output, a broadcast its tensor.
_COLLECTIVES: dict[str, Callable[[tuple, dict], tuple[str, int]]] = {}


def _nbytes(t: Any) -> int:
    return int(t.numel() * t.element_size()) if hasattr(t, "numel") else 0


def _arg(args: tuple, kwargs: dict, index: int, *names: str) -> Any:
    for name in names:
        if name in kwargs:
            return kwargs[name]
    return args[index] if len(args) > index else None


def _measure(name: str, args: tuple, kwargs: dict, world: int) -> tuple[str, int]:
    if name in ("all_reduce",):
        return "all_reduce", 2 * _nbytes(_arg(args, kwargs, 0, "tensor"))
    if name in ("all_reduce_coalesced",):
        tensors = _arg(args, kwargs, 0, "tensors") or []
        return "all_reduce", 2 * sum(_nbytes(t) for t in tensors)
    if name in ("reduce_scatter_tensor", "_reduce_scatter_base"):
        return "reduce_scatter", _nbytes(_arg(args, kwargs, 1, "input", "input_tensor"))
    if name == "reduce_scatter":
        inputs = _arg(args, kwargs, 1, "input_list") or []
        return "reduce_scatter", sum(_nbytes(t) for t in inputs)
    if name in ("all_gather_into_tensor", "_all_gather_base"):
        return "all_gather", _nbytes(_arg(args, kwargs, 0, "output_tensor", "output"))
    if name == "all_gather":
        return "all_gather", world * _nbytes(_arg(args, kwargs, 1, "tensor"))
    if name in ("broadcast", "reduce"):
        return name, _nbytes(_arg(args, kwargs, 0, "tensor"))
    return name, 0


_WRAPPED = ("all_reduce", "all_reduce_coalesced", "reduce_scatter_tensor", "_reduce_scatter_base",
            "reduce_scatter", "all_gather_into_tensor", "_all_gather_base", "all_gather",
            "broadcast", "reduce")


@dataclass
class CommCounter:
    """Bytes per collective kind, from wrappers around ``torch.distributed``'s functions."""

    bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    active: bool = False


_COUNTERS: list[CommCounter] = []   # the innermost open count_collectives() counts
_DEPTH = [0]                        # a wrapped collective calling another counts once


def _wrap(name: str, fn: Callable) -> Callable:
    import torch.distributed as dist

    def counted(*args: Any, **kwargs: Any) -> Any:
        if _COUNTERS and _COUNTERS[-1].active and _DEPTH[0] == 0:
            kind, n = _measure(name, args, kwargs, dist.get_world_size())
            _COUNTERS[-1].bytes[kind] += n
            _COUNTERS[-1].calls[kind] += 1
        _DEPTH[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _DEPTH[0] -= 1
    counted._workbook_counted = True  # type: ignore[attr-defined]
    return counted


def install_counting() -> None:
    """Wrap ``torch.distributed``'s collectives, once per process (idempotent).

    The wrappers stay for the life of the (fresh, per-run) process: DeepSpeed looks some of
    these functions up once when it starts, so they must be in place before and stay after.
    Outside :func:`count_collectives` they only pass calls through.
    """
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    for module in (dist, c10d):
        for name in _WRAPPED:
            fn = getattr(module, name, None)
            if fn is not None and not getattr(fn, "_workbook_counted", False):
                setattr(module, name, _wrap(name, fn))


@contextmanager
def count_collectives() -> Iterator[CommCounter]:
    """Count the payload bytes of every ``torch.distributed`` collective while ``active``."""
    install_counting()
    counter = CommCounter()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)


# ------------------------------------------------------------------------ tensor census


def _storage_key(t: Any) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def live_tensor_bytes(device_type: str) -> dict[tuple[int, int], Any]:
    """Every live tensor storage on ``device_type`` the Python heap reaches, by storage."""
    import torch

    out: dict[tuple[int, int], Any] = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type == device_type:
                key = _storage_key(obj)
                if key[1] > 0:
                    out[key] = obj
        except Exception:  # noqa: BLE001 - some objects refuse introspection; skip them
            continue
    return out


def census(model: Any, optimizer: Any, device_type: str,
           exclude: dict[tuple[int, int], Any] | None = None) -> dict[str, int]:
    """Model-state bytes on ``device_type`` split into params / optimizer / grads+buffers.

    Parameters: the storages of the module's parameters (ZeRO-3: their ``ds_tensor`` shards).
    Optimizer: the inner torch optimizer's parameters (the fp32 master copy, when there is one)
    and its state (Adam's exp_avg, exp_avg_sq). Everything else that is live (gradients,
    DeepSpeed's flat buffers and buckets) is "grads+buffers".
    """
    live = {k: v for k, v in live_tensor_bytes(device_type).items()
            if k not in (exclude or {})}
    params = set()
    for p in model.parameters():
        for t in (p, getattr(p, "ds_tensor", None)):
            if t is not None and t.device.type == device_type and t.numel() > 0:
                params.add(_storage_key(t))
    optim = set()
    for name in _MASTER_ATTRS:  # DeepSpeed's fp32 master partitions, by wrapper
        for t in getattr(optimizer, name, None) or []:
            if hasattr(t, "untyped_storage") and t.device.type == device_type and t.numel():
                optim.add(_storage_key(t))
    inner = _inner_optimizer(optimizer)
    for group in inner.param_groups:
        for p in group["params"]:
            if p.device.type == device_type and p.numel() > 0:
                optim.add(_storage_key(p))
    for state in inner.state.values():
        for t in state.values():
            if hasattr(t, "untyped_storage") and t.device.type == device_type and t.numel() > 1:
                optim.add(_storage_key(t))
    optim -= params  # plain DDP: the optimizer's params are the model's params
    total = sum(key[1] for key in live)
    p_bytes = sum(key[1] for key in live if key in params)
    o_bytes = sum(key[1] for key in live if key in optim)
    return {"params": p_bytes, "optimizer": o_bytes, "grads+buffers": total - p_bytes - o_bytes,
            "total": total}


# Where DeepSpeed keeps the fp32 master weights (part of K): ZeRO-3, ZeRO-1/2, BF16_Optimizer.
_MASTER_ATTRS = ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups",
                 "fp32_groups_flat_partition")


def _inner_optimizer(optimizer: Any) -> Any:
    """The torch optimizer under DeepSpeed's wrappers (ZeRO, BF16_Optimizer)."""
    seen = 0
    while hasattr(optimizer, "optimizer") and seen < 4:
        optimizer = optimizer.optimizer
        seen += 1
    return optimizer


# ----------------------------------------------------------------------- one rank's run


def build_gpt2(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int,
               seed: int, device: Any = "cpu") -> Any:
    """The memory notebook's GPT-2 (``workbook.memory.build_model``), dropout off so that every
    rank computes the same step."""
    from workbook.memory import build_model

    return build_model(n_layer, d_model, n_head, vocab, seq_len, attention="sdpa", seed=seed,
                       dropout=0.0, device=device)


def count_params(model: Any) -> int:
    """Ψ: parameters counted once (GPT-2 ties the embedding and the LM head)."""
    return sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())


def largest_layer_params(model: Any) -> int:
    return max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())


def ds_config(stage: int, offload: str, micro_batch: int, dtype: str, device: str,
              bucket_elems: int) -> dict[str, Any]:
    """The DeepSpeed config of one run. Keys that move the memory are set explicitly."""
    zero: dict[str, Any] = {
        "stage": stage,
        "contiguous_gradients": True,       # grads land in one flat buffer, not fragments
        "overlap_comm": False,              # True adds a second set of buckets
        "reduce_bucket_size": bucket_elems,  # elements per gradient bucket
        "allgather_bucket_size": bucket_elems,
    }
    if stage == 3:
        zero.update({"stage3_param_persistence_threshold": 0,  # shard even tiny params
                     "stage3_prefetch_bucket_size": bucket_elems,
                     "stage3_max_live_parameters": bucket_elems,
                     "stage3_max_reuse_distance": 0})
    if offload in ("optimizer", "optimizer+params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": device == "cuda"}
    if offload == "optimizer+params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": device == "cuda"}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        dtype: {"enabled": True},
        "zero_optimization": zero,
        # torch.optim.AdamW: runs without compiling DeepSpeed's fused/CPU Adam extensions.
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gpu_bytes(device: Any, peak: bool = False) -> float:
    import torch

    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) if peak
                 else torch.cuda.memory_allocated(device))


def _wrap_engine(engine: str, stage: int, offload: str, extra: dict[str, Any], model: Any,
                 micro_batch: int,
                 dtype: str, device: Any, bucket_elems: int) -> tuple[Any, Any, Callable]:
    """(module to call, optimizer, backward+step function) for DDP or DeepSpeed."""
    import torch

    if engine == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = model.to(device)
        # gradient_as_bucket_view: grads live inside DDP's buckets instead of beside them (-4Ψ)
        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                  gradient_as_bucket_view=True, bucket_cap_mb=bucket_elems * 4 / 2**20)
        ddp.register_comm_hook(None, _allreduce_hook)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def backward(loss: Any) -> None:
            loss.backward()

        def step() -> None:
            opt.step()
            opt.zero_grad(set_to_none=False)  # keep the grad buffers: steady state holds them
        return ddp, opt, (backward, step)
    import deepspeed

    skip_shm_build()
    config = ds_config(stage, offload, micro_batch, dtype, device.type, bucket_elems)
    config["zero_optimization"].update(extra)
    eng, opt, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                          config=config)
    return eng, eng.optimizer, (eng.backward, eng.step)


def skip_shm_build() -> None:
    """Stop DeepSpeed from JIT-compiling its shared-memory all-reduce on a CPU.

    ``deepspeed.comm.TorchBackend`` builds ``deepspeed_shm_comm`` with g++ and ninja when it
    starts (minutes on a small machine, a compiler and 5 GB of RAM needed at run time, redone
    whenever the venv moves). The workbook's collectives go through torch.distributed/gloo, so
    the op is never needed. The module is taken from ``importlib``: ``import
    deepspeed.comm.torch as m`` binds the *torch* package (``deepspeed.comm`` re-exports it
    under the name ``torch``), and patching that silently did nothing.
    """
    import importlib

    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def _allreduce_hook(_state, bucket):  # noqa: ANN001, ANN202 - DDP inspects these annotations
    """DDP's default all-reduce, called through ``torch.distributed`` so it is counted."""
    import torch.distributed as dist

    buf = bucket.buffer().div_(dist.get_world_size())
    return dist.all_reduce(buf, async_op=True).get_future().then(lambda fut: fut.value()[0])


def train_rank(variants: list[dict[str, Any]], n_layer: int, d_model: int, n_head: int,
               vocab: int, seq_len: int, micro_batch: int, steps: int, dtype: str,
               bucket_elems: int, seed: int) -> pd.DataFrame:
    """One rank of one or more data-parallel runs (``runner.call_distributed`` calls this).

    ``variants``: ``[{"engine": "ddp"|"deepspeed", "stage": 0-3, "offload": ...}, ...]``, run
    one after the other in this process. Each is measured against what was live before it
    started (tensors of earlier variants are excluded from its census; the GPU allocator's
    count at its start is subtracted), and an out-of-memory variant becomes an ``oom`` row.
    """
    import torch

    frames = []
    for variant in variants:
        params = {"engine": variant["engine"], "stage": variant["stage"],
                  "offload": variant["offload"]}
        try:
            frames.append(_one_variant(**params, extra=_extra(variant), n_layer=n_layer,
                                       d_model=d_model, n_head=n_head, vocab=vocab,
                                       seq_len=seq_len,
                                       micro_batch=micro_batch, steps=steps, dtype=dtype,
                                       bucket_elems=bucket_elems, seed=seed))
        except Exception as exc:  # noqa: BLE001 - a failed variant is a row, the rest go on
            status = "oom" if isinstance(exc, torch.OutOfMemoryError) else "error"
            tweak = ",".join(f"{k}={v}" for k, v in _extra(variant).items())
            frames.append(pd.DataFrame([{**params, "tweak": tweak, "metric": "run",
                                         "value": float("nan"), "unit": "",
                                         "source": "measured", "status": status,
                                         "error": f"{type(exc).__name__}: {exc}"[:300]}]))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return pd.concat(frames, ignore_index=True)


def _extra(variant: dict[str, Any]) -> dict[str, Any]:
    """zero_optimization keys a variant sets beyond engine, stage and offload."""
    return {k: v for k, v in variant.items() if k not in ("engine", "stage", "offload")}


def _one_variant(engine: str, stage: int, offload: str, extra: dict[str, Any], n_layer: int,
                 d_model: int, n_head: int, vocab: int, seq_len: int, micro_batch: int,
                 steps: int, dtype: str, bucket_elems: int, seed: int) -> pd.DataFrame:
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    device = (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
              and dist.get_backend() == "nccl" else torch.device("cpu"))
    gc.collect()
    before = live_tensor_bytes(device.type)  # held, so their addresses cannot be reused
    base_alloc = _gpu_bytes(device)
    with count_collectives() as comm:
        model = build_gpt2(n_layer, d_model, n_head, vocab, seq_len, seed, device)
        n_params, largest = count_params(model), largest_layer_params(model)
        module, opt, (backward, step) = _wrap_engine(engine, stage, offload, extra, model,
                                                     micro_batch, dtype, device, bucket_elems)
        gen = torch.Generator().manual_seed(seed * 1000 + rank)  # each rank its own data
        times, mem, comm_steps = [], {}, 0
        autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                  enabled=engine == "ddp" and dtype == "bf16")
        for i in range(steps):
            ids = torch.randint(0, vocab, (micro_batch, seq_len), generator=gen).to(device)
            last = i == steps - 1
            comm.active = i >= 1  # step 0 builds optimizer state and buckets; not typical
            if last and device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            t0 = time.perf_counter()
            with autocast:
                loss = module(input_ids=ids, labels=ids).loss
            backward(loss)
            if last:
                # after backward: activations are freed; params + grads + optimizer remain
                _sync(device)
                t_pause = time.perf_counter()
                mem["census"] = census(model, opt, device.type, exclude=before)
                mem["allocated"] = _gpu_bytes(device) - base_alloc
                t0 += time.perf_counter() - t_pause
            step()
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
            comm_steps += int(comm.active)
        mem["peak"] = _gpu_bytes(device, peak=True) - base_alloc
        comm.active = False
        if hasattr(module, "destroy"):
            module.destroy()  # DeepSpeed engines release hooks and buffers
    del module, opt, model, before
    params = {"engine": engine, "stage": stage, "offload": offload, "n_ranks": world,
              "n_params": n_params, "largest_layer": largest, "dtype": dtype,
              "micro_batch": micro_batch, "seq_len": seq_len}
    rows = [{"metric": f"{k}_bytes", "value": float(v), "unit": "bytes"}
            for k, v in mem["census"].items()]
    rows += [{"metric": "allocated_bytes", "value": mem["allocated"], "unit": "bytes"},
             {"metric": "peak_bytes", "value": mem["peak"], "unit": "bytes"},
             {"metric": "step_ms", "value": float(pd.Series(times[1:] or times).median()),
              "unit": "ms"},
             {"metric": "loss", "value": float(loss.detach().float()), "unit": ""}]
    per_step = max(comm_steps, 1)
    total = 0.0
    for kind, n in sorted(comm.bytes.items()):
        rows.append({"metric": f"comm_{kind}_bytes", "value": n / per_step, "unit": "bytes"})
        total += n / per_step
    rows.append({"metric": "comm_bytes", "value": total, "unit": "bytes"})
    tweak = ",".join(f"{k}={v}" for k, v in extra.items())
    return pd.DataFrame(rows).assign(**params, tweak=tweak, source="measured", status="ok",
                                     seed=seed)




# --------------------------------------------------------------------------- experiment

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


def check_gpt_shape(n_layer: int, d_model: int, n_head: int, vocab: int) -> None:
    """The GPT-2 shapes the memory and ZeRO experiments accept, or a one-line error."""
    check_range("n_layer", n_layer, 1, 200)
    check_range("d_model", d_model, 8, 16384)
    check_range("n_head", n_head, 1, 256)
    if d_model % n_head:
        raise WorkbookError(f"d_model={d_model} must be a multiple of n_head={n_head}")
    check_range("vocab", vocab, 16, 300_000)


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
    from workbook.registry import gpu_count

    gpus = gpu_count()
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
    from workbook import runner

    n, backend = world_size(cfg)
    common = {"n_layer": cfg.n_layer, "d_model": cfg.d_model, "n_head": cfg.n_head,
              "vocab": cfg.vocab, "seq_len": cfg.seq_len, "micro_batch": cfg.micro_batch,
              "steps": cfg.steps, "dtype": cfg.dtype, "bucket_elems": cfg.bucket_elems,
              "seed": seed}
    groups = [[v] for v in cfg.variants] if cfg.isolate else [list(cfg.variants)]
    frames = []
    for group in groups:
        rows = runner.call_distributed(
            "workbook.zero:train_rank", {"variants": [VARIANTS[v] for v in group], **common},
            nprocs=n, backend=backend, timeout_s=cfg.timeout_s, env=_env_for(backend))
        frame = _with_predictions(rows, group, n, cfg).assign(seed=seed, backend=backend)
        frame = fill_params(frame)
        if cfg.record_each:  # a later hang or kill cannot lose the launches already done
            from workbook import results

            results.record("zero_stages", frame.assign(preset=cfg.record_each),
                           preset=cfg.record_each, seed=seed)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _with_predictions(rows: pd.DataFrame, group: list[str], n: int,
                      cfg: ZeroConfig) -> pd.DataFrame:
    """One launch's measured rows plus the formula rows of its variants."""
    if "engine" not in rows:  # the whole launch failed: say so for each variant
        rows = pd.concat([rows.assign(**_core(VARIANTS[v]), tweak=",".join(
            f"{k}={x}" for k, x in _extra(VARIANTS[v]).items())) for v in group],
            ignore_index=True)
    rows = rows.copy()
    rows["variant"] = [_variant_name(r) for r in rows.to_dict("records")]
    rows["n_ranks"] = n
    ok = rows[rows["status"] == "ok"]
    h = cfg.d_model
    psi = cfg.n_layer * (12 * h * h + 13 * h) + (cfg.vocab + cfg.seq_len + 2) * h  # GPT-2's Ψ
    n_params = int(ok["n_params"].iloc[0]) if len(ok) else psi
    largest = int(ok["largest_layer"].iloc[0]) if len(ok) else cfg.vocab * h
    predicted = predicted_rows(tuple(group), n_params, largest, n, cfg.dtype)
    predicted = predicted.assign(dtype=cfg.dtype, micro_batch=cfg.micro_batch,
                                 seq_len=cfg.seq_len, largest_layer=largest, rank=-1)
    return pd.concat([rows, predicted], ignore_index=True)


def fill_params(frame: pd.DataFrame) -> pd.DataFrame:
    """No NaN or empty text in parameter columns: the ledger keys rows by them, and with
    pandas 3 a NaN (or an empty string, read back from CSV as NaN) breaks that key. Every frame
    carries an ``error`` column ("-" when fine), so ledgers of good and failed runs merge."""
    from workbook.results import param_columns

    frame = frame.copy()
    if "error" not in frame:
        frame["error"] = "-"
    for col in param_columns(frame):
        if col == "seed":
            continue
        if pd.api.types.is_numeric_dtype(frame[col]):
            frame[col] = frame[col].fillna(-1)
        else:
            frame[col] = frame[col].fillna("-").astype(str).replace("", "-")
    return frame


def _variant_name(row: dict[str, Any]) -> str:
    for name, v in VARIANTS.items():
        tweaked = str(row.get("tweak") or "-") not in ("-", "nan")
        if all(row.get(k) == v[k] for k in ("engine", "stage", "offload")) and (
                tweaked == bool(_extra(v))):
            return name
    return "?"


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


def predicted_rows(variants: tuple[str, ...], n_params: int, largest: int, n_gpus: int,
                   dtype: str) -> pd.DataFrame:
    rows = []
    for name in variants:
        v = VARIANTS[name]
        tweak = ",".join(f"{k}={x}" for k, x in _extra(v).items())
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


# Why DeepSpeed's measured model-state bytes differ from the paper, and the key that moves it.
GAP_CAUSES: dict[str, str] = {
    "ddp": "PyTorch AMP keeps fp32 params+grads (4+4) and Adam moments (8): 16Ψ like the paper, "
           "split differently. gradient_as_bucket_view=True puts grads inside DDP's buckets; "
           "the default (False) adds a second 4Ψ copy.",
    "zero0": "bf16 stage 0 runs DeepSpeed's FP16_Optimizer in bf16 mode: bf16 params and "
             "grads (2+2), fp32 master + moments (12), the paper's 16Ψ; fp32 grads exist only "
             "inside step() (peak, not steady). data_types.grad_accum_dtype='fp32' would add a "
             "persistent 4Ψ fp32 accumulator (BF16_Optimizer).",
    "zero1": "DeepSpeed's stage 1 copies its own gradient slice into a contiguous buffer and "
             "frees the rest after the all-reduce (contiguous_gradients), so it holds less "
             "than the paper's full 2Ψ of gradients.",
    "zero2": "reduce bucket of reduce_bucket_size elements (bf16) beside the 2Ψ/N_d gradient "
             "partition; overlap_comm=true would double it.",
    "zero2+reduce": "as zero2; use_multi_rank_bucket_allreduce=false changes only traffic.",
    "zero3": "reduce bucket (reduce_bucket_size) and parameters gathered at the moment of "
             "measurement (stage3_max_live_parameters, stage3_prefetch_bucket_size); "
             "stage3_param_persistence_threshold>0 keeps small parameters whole on every rank.",
    "zero2+offload_opt": "pinned CPU staging and the GPU reduce bucket (reduce_bucket_size); "
                         "the optimizer and fp32 grads live on the CPU.",
    "zero3+offload_opt": "as zero3; optimizer and fp32 grads on the CPU.",
    "zero3+offload_all": "only gathered layers and buckets stay on the GPU "
                         "(stage3_max_live_parameters, stage3_prefetch_bucket_size).",
}
COMM_CAUSES: dict[str, str] = {
    "ddp": "all-reduce of fp32 gradients: 2Ψ elements at 4 bytes",
    "zero0": "all-reduce of bf16 gradients: 2Ψ",
    "zero1": "all-reduce of the whole gradient (stage 1 cannot reduce-scatter) + all-gather of "
             "updated params: 3Ψ, not 2Ψ",
    "zero2": "use_multi_rank_bucket_allreduce=true (default) all-reduces every bucket: 2Ψ, "
             "then the all-gather of params: Ψ",
    "zero2+reduce": "use_multi_rank_bucket_allreduce=false: each slice reduced to its owner "
                    "(Ψ) + all-gather (Ψ) = the paper's 2Ψ",
    "zero3": "all-gather in forward and backward + reduce-scatter; parameters still resident "
             "when backward starts are not gathered again (stage3_max_reuse_distance)",
}


@takes_rows
def model_state_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per variant: measured steady model-state bytes per rank (mean over ranks) vs the paper.

    "Steady" = after backward of the last step: parameters, gradients and optimizer states are
    all live, activations are freed. GPU runs use the allocator's count, CPU runs the census.
    """
    ok = rows[rows["status"] == "ok"]
    out = []
    for variant, part in ok.groupby("variant", sort=False):
        meas = part[part["source"].isin(["measured", "recorded"])]
        pred = part[part["source"] == "predicted"]
        if meas.empty or pred.empty:
            continue

        def m(metric: str, frame: pd.DataFrame = meas) -> float:
            vals = frame.loc[frame["metric"] == metric, "value"].dropna()
            return float(vals.mean()) if len(vals) else float("nan")
        alloc = m("allocated_bytes")
        measured = alloc if alloc == alloc else m("total_bytes")
        formula = m("total_bytes", pred)
        n_params = float(part["n_params"].dropna().iloc[0])
        elem = 4 if part["engine"].iloc[0] == "ddp" else 2  # bytes per communicated element
        out.append({
            "variant": variant, "n_ranks": int(part["n_ranks"].dropna().iloc[0]),
            "params (meas/formula GB)": f"{m('params_bytes') / 1e9:.3f} / "
                                        f"{m('params_bytes', pred) / 1e9:.3f}",
            "grads+buffers": f"{m('grads+buffers_bytes') / 1e9:.3f} / "
                             f"{m('grads+buffers_bytes', pred) / 1e9:.3f}",
            "optimizer": f"{m('optimizer_bytes') / 1e9:.3f} / "
                         f"{m('optimizer_bytes', pred) / 1e9:.3f}",
            "model states measured (GB)": measured / 1e9,
            "formula (GB)": formula / 1e9,
            "DeepSpeed estimate (GB)": m("ds_estimate_bytes", pred) / 1e9,
            "measured/formula": measured / formula if formula else float("nan"),
            "gap (Ψ units)": (measured - formula) / n_params,
            "peak (GB)": m("peak_bytes") / 1e9,
            "comm measured (Ψ)": m("comm_bytes") / n_params / elem,
            "comm formula (Ψ)": m("comm_bytes", pred) / n_params / elem,
            "step (ms)": m("step_ms"),
            "why they differ": GAP_CAUSES.get(variant, ""),
        })
    return pd.DataFrame(out)


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
    ),
]


# ------------------------------------------------------------------ views for the notebook


def formula_explorer() -> Any:
    """Sliders for Ψ and N_d, bars of per-GPU model states per stage (the paper's Fig. 1)."""
    from workbook import plots, widgets

    fig = plots.figure("ZeRO per-GPU model states (formula, K = 12)", "stage", "GB per GPU")
    parts = ("params", "grads", "optimizer")
    for i, part in enumerate(parts):
        fig.add_bar(x=[], y=[], name=part, marker_color=plots.COLORS[i])
    fig.update_layout(barmode="stack")

    def draw(fig: Any, psi_billion: float, n_gpus: int, gpu_gb: float) -> str:
        psi = psi_billion * 1e9
        mems = [zero_memory_formula(psi, n_gpus, s) for s in STAGES]
        labels = ["baseline", "P_os (1)", "P_os+g (2)", "P_os+g+p (3)"]
        for trace, part in zip(fig.data, parts, strict=True):
            trace.x, trace.y = labels, [m[part] / 1e9 for m in mems]
        fits = [lab for lab, m in zip(labels, mems, strict=True) if m["total"] / 1e9 <= gpu_gb]
        totals = ", ".join(f"{lab} {m['total'] / 1e9:,.1f} GB"
                           for lab, m in zip(labels, mems, strict=True))
        return (f"Ψ = {psi_billion:g}B on {n_gpus} GPUs: " + totals
                + f". Fits a {gpu_gb:g} GB GPU (model states only): {', '.join(fits) or 'none'}")

    return widgets.Explorer({
        "psi_billion": widgets.slider("Ψ (billions)", 0.1, 1000, 0.01, 7.5, log=True),
        "n_gpus": widgets.slider("N_d (GPUs)", 1, 1024, 1, 64),
        "gpu_gb": widgets.slider("GPU memory (GB)", 16, 192, 8, 80),
    }, draw, fig)


@takes_rows
def plot_model_states(table: pd.DataFrame, title: str = "") -> Any:
    """Measured vs formula model-state GB per rank, one pair of bars per variant."""
    from workbook import plots

    fig = plots.figure(title or "Per-rank model states: measured vs formula", "variant",
                       "GB per rank")
    x = [f"{v} (N={n})" for v, n in zip(table["variant"], table["n_ranks"], strict=True)]
    fig.add_bar(x=x, y=table["model states measured (GB)"], name="measured",
                marker_color=plots.COLORS[0])
    fig.add_bar(x=x, y=table["formula (GB)"], name="ZeRO formula", marker_color=plots.COLORS[1])
    if table["DeepSpeed estimate (GB)"].notna().any():
        fig.add_bar(x=x, y=table["DeepSpeed estimate (GB)"], name="DeepSpeed estimator",
                    marker_color=plots.COLORS[2])
    fig.update_layout(barmode="group")
    return fig


@takes_rows
def plot_comm(table: pd.DataFrame, title: str = "") -> Any:
    """Measured communication per step (in units of Ψ elements) vs the paper's 2Ψ / 3Ψ."""
    from workbook import plots

    fig = plots.figure(title or "Communication per step per rank", "variant", "× Ψ elements")
    x = [f"{v} (N={n})" for v, n in zip(table["variant"], table["n_ranks"], strict=True)]
    fig.add_bar(x=x, y=table["comm measured (Ψ)"], name="measured",
                marker_color=plots.COLORS[0])
    fig.add_bar(x=x, y=table["comm formula (Ψ)"], name="paper (2Ψ or 3Ψ)",
                marker_color=plots.COLORS[1])
    fig.update_layout(barmode="group")
    return fig


@takes_rows
def recorded_tables(rows: pd.DataFrame) -> pd.DataFrame:
    """model_state_table per (device, rank count) of recorded rows, with the device named."""
    if rows.empty:
        return pd.DataFrame()
    frames = []
    for (device, _n), part in rows.groupby(["device", "n_ranks"], dropna=True):
        table = model_state_table(part)
        prov = {c: part[c].dropna().astype(str).max() for c in ("n_gpus", "recorded_at", "seed")
                if c in part and part[c].notna().any()}
        frames.append(table.assign(device=device, **prov))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@takes_rows
def claims(table: pd.DataFrame) -> pd.DataFrame:
    """The lecture's ZeRO claims against the paper's formula and this table's measurement."""
    def get(variant: str, col: str) -> float:
        hit = table.loc[table["variant"] == variant, col]
        return float(hit.iloc[0]) if len(hit) else float("nan")

    n = int(table["n_ranks"].iloc[0]) if len(table) else 0
    base = get("zero0", "model states measured (GB)")
    if base != base:  # no stage-0 run: DDP holds the same 16Ψ
        base = get("ddp", "model states measured (GB)")
    rows = []
    for stage, lecture in ((1, "4x"), (2, "8x"), (3, "12x")):
        pred = 16 / (zero_memory_formula(1.0, max(n, 1), stage)["total"])
        meas = base / get(f"zero{stage}", "model states measured (GB)")
        rows.append({"claim": f"ZeRO-{stage} memory '{lecture} better'",
                     "source": "lecture table; ZeRO paper Fig. 1 (as N_d grows: 4x, 8x, N_d)",
                     "predicted": f"{pred:.2f}x at N_d={n}", "measured here": f"{meas:.2f}x",
                     "verdict": verdict(pred, meas)})
    for v, paper in (("zero1", 2.0), ("zero2", 2.0), ("zero3", 3.0)):
        meas = get(v, "comm measured (Ψ)")
        rows.append({"claim": f"{v} communication per step",
                     "source": "lecture: None < ZeRO-1 < ZeRO-2 < ZeRO-3; paper Sec. 7",
                     "predicted": f"{paper:g}Ψ", "measured here": f"{meas:.2f}Ψ",
                     "verdict": verdict(paper, meas)})
    return pd.DataFrame(rows)


@takes_rows
def comm_kinds(rows: pd.DataFrame) -> pd.DataFrame:
    """Per variant and rank count: each collective's bytes per step, in units of Ψ elements."""
    ok = rows[(rows["status"] == "ok") & rows["metric"].str.startswith("comm_")
              & rows["source"].isin(["measured", "recorded"])]
    if ok.empty:
        return pd.DataFrame()
    elem = ok["engine"].map(lambda e: 4 if e == "ddp" else 2)
    ok = ok.assign(psi=ok["value"] / ok["n_params"] / elem,
                   kind=ok["metric"].str.removeprefix("comm_").str.removesuffix("_bytes")
                   .replace({"bytes": "total"}))
    table = ok.pivot_table(index=["n_ranks", "variant"], columns="kind", values="psi",
                           aggfunc="mean")
    return table.round(3).reset_index()


@takes_rows
def plot_scaling(tables: pd.DataFrame) -> Any:
    """Per-rank model states against N_d: recorded points, the paper's curve dashed."""
    from workbook import plots

    if tables.empty:
        return plots.compare(pd.DataFrame(), "n_ranks", title="no recorded rows yet")
    stages = tables[tables["variant"].isin(["zero0", "zero1", "zero2", "zero3"])]
    rows = [{"variant": r["variant"], "n_ranks": r["n_ranks"], "source": "recorded",
             "value": r["model states measured (GB)"], "status": "ok",
             **{c: r.get(c) for c in ("device", "n_gpus", "recorded_at", "seed")}}
            for _, r in stages.iterrows()]
    psi = {v: r["formula (GB)"] * 1e9 / (zero_memory_formula(1.0, int(r["n_ranks"]),
                                                            int(v[-1]))["total"])
           for v, r in stages.set_index("variant").iterrows()}
    top = max(8, int(tables["n_ranks"].max()))
    for v, n_params in psi.items():
        for n in range(1, top + 1):
            rows.append({"variant": v, "n_ranks": n, "source": "predicted", "status": "ok",
                         "value": zero_memory_formula(n_params, n, int(v[-1]))["total"] / 1e9})
    frame = pd.DataFrame(rows)
    return plots.compare(frame, "n_ranks", group="variant", y_title="GB per rank",
                         title="Per-rank model states vs N_d (points: recorded; dashes: paper)",
                         x_title="N_d (ranks)")

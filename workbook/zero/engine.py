"""One rank's data-parallel run (``runner.call_distributed`` launches it): a small
transformers GPT-2 wrapped in torch DDP or ``deepspeed.initialize`` with ZeRO stage 0-3
(optionally offloading optimizer states / parameters to the CPU), a few steps, and per rank:
model-state bytes split into parameters / gradients+buffers / optimizer states, peak bytes,
collective bytes per step and step time.

The step loop is written out here, not taken from ``workbook.training.train``: the engine's
``backward``/``step`` and the measurement between them are what notebook 05 is about.
"""

from __future__ import annotations

import gc
import importlib
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from workbook.memory.measure import allocated_bytes, build_model
from workbook.model import count_params
from workbook.zero.census import census, live_tensor_bytes
from workbook.zero.collectives import count_collectives
from workbook.zero.formulas import variant_extras


def build_gpt2(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int,
               seed: int, device: Any = "cpu") -> Any:
    """The memory notebook's GPT-2 (``workbook.memory.build_model``), dropout off so that every
    rank computes the same step."""
    return build_model(n_layer, d_model, n_head, vocab, seq_len, attention="sdpa", seed=seed,
                       dropout=0.0, device=device)


def largest_layer_params(model: Any) -> int:
    """Parameters of the largest single module: what ZeRO-3 gathers whole in its forward."""
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
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wrap_engine(engine: str, stage: int, offload: str, extra: dict[str, Any], model: Any,
                 micro_batch: int,
                 dtype: str, device: Any, bucket_elems: int) -> tuple[Any, Any, Callable]:
    """(module to call, optimizer, backward+step function) for DDP or DeepSpeed."""
    if engine == "ddp":
        model = model.to(device)
        # gradient_as_bucket_view: grads live inside DDP's buckets instead of beside them (-4Ψ)
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=True, bucket_cap_mb=bucket_elems * 4 / 2**20)
        ddp.register_comm_hook(None, _allreduce_hook)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def backward(loss: Any) -> None:
            loss.backward()

        def step() -> None:
            opt.step()
            opt.zero_grad(set_to_none=False)  # keep the grad buffers: steady state holds them
        return ddp, opt, (backward, step)
    import deepspeed  # optional and heavy: only the DeepSpeed variants need it

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
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def _allreduce_hook(_state, bucket):  # noqa: ANN001, ANN202 - DDP inspects these annotations
    """DDP's default all-reduce, called through ``torch.distributed`` so it is counted."""
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
    frames = []
    for variant in variants:
        params = {"engine": variant["engine"], "stage": variant["stage"],
                  "offload": variant["offload"]}
        try:
            frames.append(_one_variant(**params, extra=variant_extras(variant), n_layer=n_layer,
                                       d_model=d_model, n_head=n_head, vocab=vocab,
                                       seq_len=seq_len,
                                       micro_batch=micro_batch, steps=steps, dtype=dtype,
                                       bucket_elems=bucket_elems, seed=seed))
        except Exception as exc:  # noqa: BLE001 - a failed variant is a row, the rest go on
            status = "oom" if isinstance(exc, torch.OutOfMemoryError) else "error"
            tweak = ",".join(f"{k}={v}" for k, v in variant_extras(variant).items())
            frames.append(pd.DataFrame([{**params, "tweak": tweak, "metric": "run",
                                         "value": float("nan"), "unit": "",
                                         "source": "measured", "status": status,
                                         "error": f"{type(exc).__name__}: {exc}"[:300]}]))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return pd.concat(frames, ignore_index=True)


def _one_variant(engine: str, stage: int, offload: str, extra: dict[str, Any], n_layer: int,
                 d_model: int, n_head: int, vocab: int, seq_len: int, micro_batch: int,
                 steps: int, dtype: str, bucket_elems: int, seed: int) -> pd.DataFrame:
    rank, world = dist.get_rank(), dist.get_world_size()
    device = (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
              and dist.get_backend() == "nccl" else torch.device("cpu"))
    gc.collect()
    before = live_tensor_bytes(device.type)  # held, so their addresses cannot be reused
    base_alloc = allocated_bytes(device)
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
                mem["allocated"] = allocated_bytes(device) - base_alloc
                t0 += time.perf_counter() - t_pause
            step()
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
            comm_steps += int(comm.active)
        mem["peak"] = allocated_bytes(device, peak=True) - base_alloc
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

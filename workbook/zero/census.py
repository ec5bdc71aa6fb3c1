"""The tensor census: every live tensor the Python heap reaches (deduplicated by storage),
classified as parameter, optimizer state or the rest. Works on a CPU too, where there is no
allocator counter; on a GPU ``torch.cuda.memory_allocated`` is reported beside it."""

from __future__ import annotations

import gc
from typing import Any

import torch


def _storage_key(t: Any) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def live_tensor_bytes(device_type: str) -> dict[tuple[int, int], Any]:
    """Every live tensor storage on ``device_type`` the Python heap reaches, by storage."""
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


"""Where training memory goes, measured (a fresh process each, :mod:`workbook.runner`).

A transformers GPT-2 is built, trained for two steps, and each component is measured on its
own: the allocator's count before and after the model, after the forward, after the backward,
after the optimizer step (GPU), and, on any device, the bytes of the tensors themselves and the
activations autograd saved for backward (``torch.autograd.graph.saved_tensors_hooks``).

The steps are written out here, not taken from ``workbook.training.train``: the measurement
sits between forward, backward and optimizer step, which is the point of this notebook.
"""

from __future__ import annotations

import gc
from typing import Any

import pandas as pd
import torch

from workbook.config import WorkbookError
from workbook.hardware import torch_device
from workbook.memory.formulas import gpt_params
from workbook.model import count_params


def build_model(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int,
                attention: str, seed: int, dropout: float = 0.1, device: str = "cpu") -> Any:
    """A random transformers GPT-2 (no download), built directly on ``device``; dropout as in
    GPT-2 (its masks are activations too)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=d_model, n_head=n_head, vocab_size=vocab,
                     n_positions=seq_len, resid_pdrop=dropout, embd_pdrop=dropout,
                     attn_pdrop=dropout, activation_function="gelu_pytorch_tanh",
                     attn_implementation=attention)
    with torch.device(device):
        return GPT2LMHeadModel(cfg)


def _enable_checkpointing(model: Any) -> None:
    """Recompute each block's activations in backward (transformers' own switch)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    enable = enable or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})


class SavedTensors:
    """Counts the bytes autograd saves for backward, each storage once, parameters excluded."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.seen: dict[int, int] = {}

    def pack(self, t: Any) -> Any:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.exclude and storage.nbytes() > 0:
            self.seen[ptr] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self.seen.values())


def allocated_bytes(device: torch.device, peak: bool = False) -> float:
    """The CUDA allocator's count (``memory_allocated``, or its peak), after a sync; NaN on a
    CPU, which has no such counter."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) if peak
                 else torch.cuda.memory_allocated(device))


def _tensor_bytes(tensors: Any) -> float:
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors
            if t is not None}
    return float(sum(seen.values()))


def _make_optimizer(model: Any, optimizer: str) -> Any:
    if optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
    return torch.optim.SGD(model.parameters(), lr=1e-4)


def measure_breakdown(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int,
                      batch: int, precision: str, optimizer: str, checkpointing: bool,
                      attention: str, seed: int) -> pd.DataFrame:
    """Two training steps of a GPT-2; each memory component measured on its own.

    Runs in a fresh process (``runner.call``). ``method`` says how: ``allocator`` (GPU,
    differences of ``torch.cuda.memory_allocated``), ``tensors`` (bytes of the parameter,
    gradient and optimizer-state tensors themselves) and ``saved`` (what autograd saved for
    backward, counted by a saved-tensors hook).
    """
    if precision == "mixed":
        raise WorkbookError("precision='mixed' (fp32 master copy) is DeepSpeed's recipe: see "
                            "05_data_parallel_zero; measured here: fp32, amp_bf16, bf16")
    device = torch_device()
    gen = torch.Generator().manual_seed(seed)
    a0 = allocated_bytes(device)
    model = build_model(n_layer, d_model, n_head, vocab, seq_len, attention, seed,
                        device=device.type)
    model = model.to(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    if checkpointing:
        _enable_checkpointing(model)
    model.train()
    a_model = allocated_bytes(device)
    opt = _make_optimizer(model, optimizer)
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision == "amp_bf16")
    out: dict[str, float] = {}
    for step in range(2):  # step 1: optimizer states exist, as in every later step
        ids = torch.randint(0, vocab, (batch, seq_len), generator=gen).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before_fwd = allocated_bytes(device)
        saved = SavedTensors(param_ptrs)
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), autocast:
            loss = model(input_ids=ids, labels=ids).loss
        after_fwd = allocated_bytes(device)
        loss.backward()
        after_bwd = allocated_bytes(device)
        opt.step()
        after_step = allocated_bytes(device)
        if step == 0:
            out["grads_alloc"] = after_bwd - a_model
            out["optimizer_alloc"] = after_step - after_bwd
        else:
            out["activations_alloc"] = after_fwd - before_fwd
            out["activations_saved"] = float(saved.bytes)
            out["peak_alloc"] = (float(torch.cuda.max_memory_allocated(device)) - a0
                                 if device.type == "cuda" else float("nan"))
            out["grads_tensors"] = _tensor_bytes(p.grad for p in model.parameters())
        opt.zero_grad(set_to_none=step == 0)  # keep grads after step 1: steady state
    out["params_alloc"] = a_model - a0
    out["params_tensors"] = _tensor_bytes(model.parameters())
    out["optimizer_tensors"] = _tensor_bytes(t for st in opt.state.values()
                                             for t in st.values() if t.numel() > 1)
    return _breakdown_rows(out, count_params(model), device.type)


def _breakdown_rows(out: dict[str, float], n_params: int, device: str) -> pd.DataFrame:
    rows = []
    for key, value in out.items():
        component, method = key.rsplit("_", 1)
        method = {"alloc": "allocator", "tensors": "tensors", "saved": "saved"}[method]
        if method == "allocator" and device != "cuda":
            continue  # a CPU has no allocator counters; the other methods stand
        rows.append({"component": component, "method": method, "metric": "bytes",
                     "value": value, "unit": "bytes", "source": "measured"})
    return pd.DataFrame(rows).assign(n_params=n_params, status="ok")


# --------------------------------------------------------------- the largest that fits


def _try_fit(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int, batch: int,
             precision: str, checkpointing: bool, seed: int) -> tuple[str, float, int]:
    """(status, peak bytes, Ψ) of two training steps, or ``oom``; memory freed after."""
    model = opt = loss = None
    try:
        model = build_model(n_layer, d_model, n_head, vocab, seq_len, "sdpa", seed,
                            dropout=0.0, device="cuda")
        n_params = count_params(model)
        device = torch.device("cuda")
        model = model.to(device, torch.bfloat16 if precision == "bf16" else torch.float32)
        if checkpointing:
            _enable_checkpointing(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        torch.cuda.reset_peak_memory_stats()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "amp_bf16")
        for _ in range(2):
            ids = torch.randint(0, vocab, (batch, seq_len), device=device)
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return "ok", float(torch.cuda.max_memory_allocated()), n_params
    except torch.OutOfMemoryError:
        return "oom", float("nan"), gpt_params(n_layer, d_model, vocab, seq_len)
    finally:
        del model, opt, loss
        gc.collect()
        torch.cuda.empty_cache()


def largest_fit(d_model: int, n_head: int, vocab: int, seq_len: int, batch: int,
                precision: str, checkpointing: bool, max_layers: int, seed: int) -> pd.DataFrame:
    """Grow n_layer (doubling, then bisection) until two training steps no longer fit.

    Runs in a fresh process on a GPU; every probe is a row (``status`` ok or oom).
    """
    if not torch.cuda.is_available():
        raise WorkbookError("the largest-fit search needs a GPU (a CPU has no memory limit to "
                            "hit); recorded rows are shown instead")
    rows: list[dict[str, Any]] = []

    def probe(n: int) -> bool:
        status, peak, n_params = _try_fit(n, d_model, n_head, vocab, seq_len, batch,
                                          precision, checkpointing, seed)
        gc.collect()
        torch.cuda.empty_cache()
        rows.append({"n_layer": n, "n_params": n_params, "metric": "peak_bytes", "value": peak,
                     "unit": "bytes", "source": "measured", "status": status})
        return status == "ok"

    lo, hi = 0, None
    n = 1
    while n <= max_layers and probe(n):
        lo, n = n, n * 2
    hi = min(n, max_layers + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if probe(mid) else (lo, mid)
    total = float(torch.cuda.get_device_properties(0).total_memory)
    frame = pd.DataFrame(rows).assign(d_model=d_model, seq_len=seq_len, batch=batch,
                                      precision=precision, checkpointing=checkpointing,
                                      largest_fitting_layers=lo, gpu_bytes=total)
    return frame

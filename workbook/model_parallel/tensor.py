"""Tensor parallelism (Megatron-LM, Shoeybi et al. 2019): the first matmul of the MLP and the
Q/K/V projection are split by output columns, the second matmul and the attention output
projection by input rows, so each sub-layer needs exactly one all-reduce in the forward pass
(Megatron's ``g``) and one in the backward pass (``f``); both operators live in :mod:`.comm`.
Output and gradients equal one device's; the all-reduces are counted (``CommLog``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from workbook.config import WorkbookError, check_choice, check_range
from workbook.model_parallel.comm import (
    BYTES,
    DTYPES,
    CommLog,
    f,
    g,
    median_ms,
    rank_device,
    rank_world,
    ring_allreduce_bytes,
)


def tp_comm_per_layer(batch: int, seq_len: int, d_model: int, tp: int,
                      dtype: str = "bf16") -> dict[str, float]:
    """Megatron tensor parallelism, one transformer block, one training step.

    Forward: one all-reduce after attention, one after the MLP (operator ``g``); backward: the
    same two on the input gradients (operator ``f``). Each carries ``batch*seq_len*d_model``
    activations, whatever ``tp`` is; only the ring share ``2(tp-1)/tp`` grows with ``tp``.
    """
    check_range("tp", tp, 1, 1024)
    check_range("batch", batch, 1, 1_000_000)
    check_range("seq_len", seq_len, 1, 10_000_000)
    check_range("d_model", d_model, 1, 1_000_000)
    check_choice("dtype", dtype, list(BYTES))
    payload = batch * seq_len * d_model * BYTES[dtype]
    n = 4 if tp > 1 else 0
    return {"allreduces": n, "payload_bytes": payload, "total_payload_bytes": n * payload,
            "ring_bytes_per_rank": n * ring_allreduce_bytes(payload, tp)}


class Block(nn.Module):
    """A pre-LayerNorm transformer block: causal self-attention, then a GELU MLP.

    The same class is the single-device reference and, with ``tp > 1`` (heads and MLP columns
    sharded, ``f``/``g`` inserted), the tensor-parallel version: one code path, two layouts.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, *, tp: int = 1,
                 log: CommLog | None = None) -> None:
        super().__init__()
        if n_heads % tp or d_ff % tp or d_model % n_heads:
            raise WorkbookError(f"tp={tp} must divide n_heads={n_heads} and d_ff={d_ff}, and "
                                f"n_heads must divide d_model={d_model}")
        self.tp, self.log = tp, log or CommLog()
        self.head_dim, self.local_heads = d_model // n_heads, n_heads // tp
        local = self.local_heads * self.head_dim
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * local)           # column-parallel (by heads)
        self.proj = nn.Linear(local, d_model, bias=tp == 1)  # row-parallel
        self.fc1 = nn.Linear(d_model, d_ff // tp)           # column-parallel
        self.fc2 = nn.Linear(d_ff // tp, d_model, bias=tp == 1)  # row-parallel
        if tp > 1:  # row-parallel biases are added once, after the all-reduce
            self.proj_bias = nn.Parameter(torch.zeros(d_model))
            self.fc2_bias = nn.Parameter(torch.zeros(d_model))

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        return f(x, self.log) if self.tp > 1 else x

    def _g(self, x: torch.Tensor, bias: str) -> torch.Tensor:
        return g(x, self.log) + getattr(self, bias) if self.tp > 1 else x

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.qkv(self._f(self.ln1(x)))                   # (b, s, 3 * local)
        q, k, v = qkv.view(b, s, 3, self.local_heads, self.head_dim).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))      # (b, local_heads, s, head_dim)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self._g(self.proj(y.transpose(1, 2).reshape(b, s, -1)), "proj_bias")

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self._g(self.fc2(F.gelu(self.fc1(self._f(self.ln2(x))))), "fc2_bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(x)
        return x + self.mlp(x)


def shard_block(full: Block, tp: int, rank: int, log: CommLog) -> Block:
    """Rank ``rank``'s tensor-parallel shard of ``full``, weights copied (not re-drawn).

    Column-parallel layers keep a slice of output rows of ``weight`` (heads ``rank*h/tp`` ...);
    row-parallel layers keep the matching slice of input columns.
    """
    d_model = full.ln1.normalized_shape[0]
    n_heads, d_ff = full.local_heads, full.fc1.out_features
    part = Block(d_model, n_heads, d_ff, tp=tp, log=log).to(full.qkv.weight)
    hd, lh = full.head_dim, n_heads // tp
    heads = slice(rank * lh * hd, (rank + 1) * lh * hd)
    cols = slice(rank * d_ff // tp, (rank + 1) * d_ff // tp)
    with torch.no_grad():
        for ln in ("ln1", "ln2"):
            getattr(part, ln).load_state_dict(getattr(full, ln).state_dict())
        # qkv rows are [q heads | k heads | v heads]: take this rank's heads from each third
        w3, b3 = full.qkv.weight.view(3, -1, d_model), full.qkv.bias.view(3, -1)
        part.qkv.weight.copy_(w3[:, heads].reshape(-1, d_model))
        part.qkv.bias.copy_(b3[:, heads].reshape(-1))
        part.proj.weight.copy_(full.proj.weight[:, heads])
        part.fc1.weight.copy_(full.fc1.weight[cols])
        part.fc1.bias.copy_(full.fc1.bias[cols])
        part.fc2.weight.copy_(full.fc2.weight[:, cols])
        if tp > 1:
            part.proj_bias.copy_(full.proj.bias)
            part.fc2_bias.copy_(full.fc2.bias)
        else:
            part.proj.bias.copy_(full.proj.bias)
            part.fc2.bias.copy_(full.fc2.bias)
    return part


def unshard_grads(part: Block, full: Block) -> dict[str, torch.Tensor]:
    """The slices of ``full``'s gradients that correspond to ``part``'s parameters."""
    rank, tp = rank_world()[0], part.tp
    d_model, hd, lh = full.ln1.normalized_shape[0], full.head_dim, part.local_heads
    heads = slice(rank * lh * hd, (rank + 1) * lh * hd)
    d_ff = full.fc1.out_features
    cols = slice(rank * d_ff // tp, (rank + 1) * d_ff // tp)
    grads = {n: p.grad for n, p in full.named_parameters()}
    return {
        "qkv.weight": grads["qkv.weight"].view(3, -1, d_model)[:, heads].reshape(-1, d_model),
        "proj.weight": grads["proj.weight"][:, heads],
        "fc1.weight": grads["fc1.weight"][cols],
        "fc2.weight": grads["fc2.weight"][:, cols],
        "ln1.weight": grads["ln1.weight"],
    }


def reference_block(d_model: int, n_heads: int, d_ff: int, seed: int,
                    device: torch.device, dtype: torch.dtype) -> Block:
    """The full block, identical on every rank because it is drawn from the same seed."""
    gen = torch.Generator().manual_seed(seed)
    block = Block(d_model, n_heads, d_ff)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.02 if p.dim() > 1 else 0.1))
    return block.to(device=device, dtype=dtype)


def _torch_tp_output(full: Block, x: torch.Tensor) -> torch.Tensor:
    """The same block sharded by PyTorch's own tensor-parallel API (DTensor), for comparison."""
    # here, not at the top: a second of imports that only this cross-check needs
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    rank, tp = rank_world()
    block = copy.deepcopy(full)
    mesh = init_device_mesh(x.device.type, (tp,))
    plan = {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()}
    parallelize_module(block, mesh, plan)
    # attention left whole: only the MLP is sharded by the library here, which is enough to
    # check the column-then-row rule against an independent implementation
    with torch.no_grad():
        return block(x)


def tp_worker(d_model: int, n_heads: int, d_ff: int, batch: int, seq_len: int, dtype: str,
              seed: int, repeats: int, check_torch_tp: bool = True) -> pd.DataFrame:
    """One rank of a tensor-parallel block: correctness, counted communication, timing."""
    rank, tp = rank_world()
    device, dt = rank_device(), DTYPES[dtype]
    log = CommLog()
    full = reference_block(d_model, n_heads, d_ff, seed, device, dt)
    part = shard_block(full, tp, rank, log)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, seq_len, d_model, generator=gen).to(device=device, dtype=dt)
    x_ref, x_tp = x.clone().requires_grad_(), x.clone().requires_grad_()

    y_ref = full(x_ref)
    y_ref.float().square().mean().backward()
    log.reset()
    y_tp = part(x_tp)
    fwd_calls, fwd_bytes = log.count("all_reduce"), log.bytes("all_reduce")
    y_tp.float().square().mean().backward()
    calls, payload = log.count("all_reduce"), log.bytes("all_reduce")

    ref_grads = unshard_grads(part, full)
    grad_err = max(float((dict(part.named_parameters())[n].grad.float() - g.float()).abs().max())
                   for n, g in ref_grads.items())
    pred = tp_comm_per_layer(batch, seq_len, d_model, tp, dtype)
    base = {"tp": tp, "d_model": d_model, "n_heads": n_heads, "d_ff": d_ff, "batch": batch,
            "seq_len": seq_len, "dtype": dtype}
    rows = [
        ("max_abs_err_output", float((y_tp - y_ref).abs().max()), "", "measured"),
        ("max_abs_err_input_grad", float((x_tp.grad - x_ref.grad).abs().max()), "",
         "measured"),
        ("max_abs_err_weight_grad", grad_err, "", "measured"),
        ("allreduce_calls_forward", fwd_calls, "", "measured"),
        ("allreduce_calls_forward", pred["allreduces"] // 2, "", "predicted"),
        ("allreduce_calls", calls, "", "measured"),
        ("allreduce_calls", pred["allreduces"], "", "predicted"),
        ("allreduce_payload_forward", fwd_bytes, "B", "measured"),
        ("allreduce_payload", payload, "B", "measured"),
        ("allreduce_payload", pred["total_payload_bytes"], "B", "predicted"),
        ("ring_bytes_sent_per_rank", ring_allreduce_bytes(payload / max(calls, 1), tp) * calls,
         "B", "measured"),
        ("ring_bytes_sent_per_rank", pred["ring_bytes_per_rank"], "B", "predicted"),
        ("weight_elements_per_rank", sum(p.numel() for p in part.parameters()), "", "measured"),
    ]
    if check_torch_tp and tp > 1:
        with torch.no_grad():
            # library reference: MLP sublayer only, on the same input
            ln = full.ln2(x)
            mlp_ref = full.fc2(F.gelu(full.fc1(ln)))
        mlp_lib = _torch_tp_output(_mlp_only(full), ln)
        rows.append(("max_abs_err_torch_tp_mlp", float((mlp_lib - mlp_ref).abs().max()), "",
                     "measured"))
    rows += _tp_timing(part, full, x, device, repeats, log)
    return pd.DataFrame([{**base, "metric": m, "value": float(v), "unit": u, "source": s}
                         for m, v, u, s in rows])


class _MLP(nn.Module):
    def __init__(self, fc1: nn.Linear, fc2: nn.Linear) -> None:
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _mlp_only(full: Block) -> nn.Module:
    return _MLP(full.fc1, full.fc2)


def _tp_timing(part: Block, full: Block, x: torch.Tensor, device: torch.device, repeats: int,
               log: CommLog) -> list[tuple[str, float, str, str]]:
    """Forward+backward time of the shard vs the whole block, and one all-reduce alone."""
    if repeats <= 0:
        return []
    log.enabled = False
    xg = x.detach().requires_grad_()

    def step(block: nn.Module) -> Callable[[], None]:
        def run() -> None:
            block.zero_grad(set_to_none=True)
            block(xg).float().square().mean().backward()
        return run

    full_ms = median_ms(step(full), device, repeats)
    tp_ms = median_ms(step(part), device, repeats)
    buf = torch.randn_like(x)
    ar_ms = median_ms(lambda: dist.all_reduce(buf), device, repeats) if part.tp > 1 else 0.0
    log.enabled = True
    n_ar = tp_comm_per_layer(1, 1, 1, part.tp)["allreduces"]
    return [("step_ms_one_device", full_ms, "ms", "measured"),
            ("step_ms_tensor_parallel", tp_ms, "ms", "measured"),
            ("allreduce_ms", ar_ms, "ms", "measured"),
            ("comm_share_estimate", n_ar * ar_ms / tp_ms if tp_ms else 0.0, "", "measured")]

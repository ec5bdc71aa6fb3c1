"""Model parallelism: split one model's work across ranks (notebook 06).

Three ways to split, each measured with ``torch.distributed`` (NCCL on GPUs, gloo on CPU), one
process per rank, launched by :func:`workbook.runner.call_distributed`:

* **tensor parallelism** (Megatron-LM): the first matmul of the MLP and the Q/K/V projection
  are split by output columns, the second matmul and the attention output projection by input
  rows, so each block needs exactly one all-reduce in the forward pass and one in the backward
  pass per sub-layer. Output and gradients equal one device's; the all-reduces are counted.
* **pipeline parallelism** (GPipe): consecutive layers on consecutive ranks, the batch cut into
  ``m`` micro-batches; every stage idles for ``(p-1)/(m+p-1)`` of a step (the bubble).
* **expert parallelism** (Switch/GShard MoE): experts live on different ranks, a router sends
  each token to its top-k experts with an all-to-all, tokens beyond an expert's capacity are
  dropped.

Pure analytic functions (what the sliders drive) come first; the per-rank workers follow; the
experiments that launch them sit at the bottom. World size is always taken from what is
present: every GPU with NCCL, or ``n_ranks`` gloo processes on a CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from workbook.config import WorkbookError, check_choice, check_range, takes_rows
from workbook.registry import Experiment

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

# =============================================================================== analytic


def bubble_fraction(p: int, m: int) -> float:
    """GPipe's idle share of a step: ``(p-1)/(m+p-1)`` for ``p`` stages and ``m`` micro-batches.

    Each stage computes ``m`` slots forward and ``m`` backward; filling and draining the pipe
    costs ``p-1`` slots of each, during which the stage waits.
    """
    check_range("p (pipeline stages)", p, 1, 4096)
    check_range("m (micro-batches)", m, 1, 1_000_000)
    return (p - 1) / (m + p - 1)


def ring_allreduce_bytes(payload_bytes: float, n: int) -> float:
    """Bytes each rank sends in a ring all-reduce: ``2(n-1)/n`` of the payload."""
    return 0.0 if n <= 1 else 2 * (n - 1) / n * payload_bytes


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


def moe_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """Switch Transformer capacity: ``ceil(capacity_factor * n_tokens * top_k / n_experts)``."""
    check_range("n_tokens", n_tokens, 1, 1e12)
    check_range("n_experts", n_experts, 1, 65536)
    check_range("top_k", top_k, 1, n_experts)
    check_range("capacity_factor", capacity_factor, 0.01, 1000)
    return math.ceil(capacity_factor * n_tokens * top_k / n_experts)


def expected_drop_fraction(n_tokens: int, n_experts: int, top_k: int,
                           capacity_factor: float) -> float:
    """Share of token->expert assignments dropped if routing were uniform and independent.

    An expert's load is then Binomial(n_tokens*top_k, 1/n_experts) (top-k picks distinct experts,
    so this is an approximation for k>1); it drops ``E[max(0, load - capacity)]``.
    """
    from scipy.stats import binom

    trials, cap = n_tokens * top_k, moe_capacity(n_tokens, n_experts, top_k, capacity_factor)
    if cap >= trials:
        return 0.0
    loads = torch.arange(cap + 1, trials + 1, dtype=torch.float64).numpy()
    over = float(((loads - cap) * binom.pmf(loads, trials, 1 / n_experts)).sum())
    return over * n_experts / trials


def analytic_view(p: int, m: int, tp: int, d_model: int, *, seq_len: int = 2048,
                  micro_batch: int = 1, dtype: str = "bf16") -> pd.DataFrame:
    """What the sliders show: bubble share and bytes moved per layer, for each parallelism."""
    check_range("d_model", d_model, 64, 65536)
    check_choice("dtype", dtype, list(BYTES))
    tpc = tp_comm_per_layer(micro_batch, seq_len, d_model, tp, dtype)
    act = micro_batch * seq_len * d_model * BYTES[dtype]
    rows = [
        ("pipeline", "bubble fraction", bubble_fraction(p, m), ""),
        ("pipeline", "p2p bytes per stage boundary per step", 2 * m * act if p > 1 else 0, "B"),
        ("tensor", "all-reduces per layer per step", tpc["allreduces"], ""),
        ("tensor", "all-reduce payload per layer per step", tpc["total_payload_bytes"], "B"),
        ("tensor", "ring bytes sent per rank per layer per step", tpc["ring_bytes_per_rank"],
         "B"),
        ("tensor", "weights per rank (share of a layer)", 1 / tp, ""),
    ]
    return pd.DataFrame([{"parallelism": k, "p": p, "m": m, "tp": tp, "d_model": d_model,
                          "metric": name, "value": float(v), "unit": u, "source": "predicted"}
                         for k, name, v, u in rows])


def bubble_curve(p_values: Sequence[int], m_values: Sequence[int]) -> pd.DataFrame:
    """Predicted bubble fraction on a (p, m) grid, tidy."""
    return pd.DataFrame([{"p": p, "m": m, "metric": "idle_fraction",
                          "value": bubble_fraction(p, m), "unit": "", "source": "predicted"}
                         for p in p_values for m in m_values])


# =========================================================================== rank helpers


class CommLog:
    """Every collective and point-to-point call a worker makes goes through here, so the
    communication is counted as it happens (calls and bytes), not inferred afterwards."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.enabled = True

    def _note(self, op: str, n_bytes: int) -> None:
        if self.enabled:
            self.calls.append((op, int(n_bytes)))

    def all_reduce(self, t: torch.Tensor, group=None) -> torch.Tensor:
        self._note("all_reduce", t.numel() * t.element_size())
        dist.all_reduce(t, group=group)
        return t

    def all_to_all(self, out: torch.Tensor, inp: torch.Tensor, out_splits: list[int],
                   in_splits: list[int]) -> None:
        rank = dist.get_rank()
        row = inp[0].numel() * inp.element_size() if inp.numel() else 0
        # bytes that leave this rank (the share kept locally never touches the network)
        self._note("all_to_all", row * (sum(in_splits) - in_splits[rank]))
        dist.all_to_all_single(out, inp, out_splits, in_splits)

    def count(self, op: str) -> int:
        return sum(1 for o, _ in self.calls if o == op)

    def bytes(self, op: str) -> int:
        return sum(b for o, b in self.calls if o == op)

    def reset(self) -> None:
        self.calls.clear()


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device() -> torch.device:
    if torch.cuda.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    from workbook.profiling import time_ms

    return time_ms(fn, warmup=2, repeats=repeats, device=device)


# ====================================================================== tensor parallelism


class _CopyToTP(torch.autograd.Function):
    """Megatron's ``f``: identity forward; all-reduce of the input gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, log: CommLog) -> torch.Tensor:
        ctx.log = log
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.log.all_reduce(grad.clone(memory_format=torch.contiguous_format)), None


class _ReduceFromTP(torch.autograd.Function):
    """Megatron's ``g``: all-reduce of the partial sums forward; identity backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, log: CommLog) -> torch.Tensor:
        return log.all_reduce(x.clone(memory_format=torch.contiguous_format))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


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
        return _CopyToTP.apply(x, self.log) if self.tp > 1 else x

    def _g(self, x: torch.Tensor, bias: str) -> torch.Tensor:
        return _ReduceFromTP.apply(x, self.log) + getattr(self, bias) if self.tp > 1 else x

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
    rank, tp = _world()[0], part.tp
    d_model, hd, lh = full.ln1.normalized_shape[0], full.head_dim, part.local_heads
    heads = slice(rank * lh * hd, (rank + 1) * lh * hd)
    d_ff = full.fc1.out_features
    cols = slice(rank * d_ff // tp, (rank + 1) * d_ff // tp)
    g = {n: p.grad for n, p in full.named_parameters()}
    return {
        "qkv.weight": g["qkv.weight"].view(3, -1, d_model)[:, heads].reshape(-1, d_model),
        "proj.weight": g["proj.weight"][:, heads],
        "fc1.weight": g["fc1.weight"][cols],
        "fc2.weight": g["fc2.weight"][:, cols],
        "ln1.weight": g["ln1.weight"],
    }


def _reference_block(d_model: int, n_heads: int, d_ff: int, seed: int,
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
    import copy

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    rank, tp = _world()
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
    rank, tp = _world()
    device, dt = _device(), DTYPES[dtype]
    log = CommLog()
    full = _reference_block(d_model, n_heads, d_ff, seed, device, dt)
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

    full_ms = _median_ms(step(full), device, repeats)
    tp_ms = _median_ms(step(part), device, repeats)
    buf = torch.randn_like(x)
    ar_ms = _median_ms(lambda: dist.all_reduce(buf), device, repeats) if part.tp > 1 else 0.0
    log.enabled = True
    n_ar = tp_comm_per_layer(1, 1, 1, part.tp)["allreduces"]
    return [("step_ms_one_device", full_ms, "ms", "measured"),
            ("step_ms_tensor_parallel", tp_ms, "ms", "measured"),
            ("allreduce_ms", ar_ms, "ms", "measured"),
            ("comm_share_estimate", n_ar * ar_ms / tp_ms if tp_ms else 0.0, "", "measured")]


# ==================================================================== pipeline parallelism


class MLPLayer(nn.Module):
    """A residual GELU MLP: a pipeline stage is a stack of these (compute-bound matmuls)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.fc1, self.fc2 = nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.ln(x))))


def build_pipeline_model(n_layers: int, d_model: int, seed: int) -> nn.Sequential:
    """The whole model, drawn from ``seed``: every rank builds it and keeps its own stage."""
    torch.manual_seed(seed)
    return nn.Sequential(*[MLPLayer(d_model) for _ in range(n_layers)])


def stage_layers(n_layers: int, p: int, stage: int) -> range:
    """Layers of ``stage`` when ``n_layers`` are cut into ``p`` contiguous, near-equal parts."""
    bounds = [round(i * n_layers / p) for i in range(p + 1)]
    return range(bounds[stage], bounds[stage + 1])


class _Clock:
    """Busy intervals of one stage.

    On a GPU: CUDA events (they time what the GPU did, not when Python asked). On a CPU: wall
    time (``perf_counter``) and, beside it, the thread's own CPU time, which does not grow while
    the OS has parked the process to run someone else - the only duration that stays honest on
    a machine shared with other jobs.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[object, object]] = []
        self.cpu_ms: list[float] = []
        self._cpu0 = 0.0

    def now(self) -> object:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def begin(self) -> object:
        self._cpu0 = time.thread_time()
        return self.now()

    def end(self, start: object) -> None:
        self.marks.append((start, self.now()))
        self.cpu_ms.append((time.thread_time() - self._cpu0) * 1e3)

    def ms(self, a: object, b: object) -> float:
        if self.cuda:
            return a.elapsed_time(b)  # type: ignore[union-attr]
        return (b - a) * 1e3  # type: ignore[operator]

    def durations_ms(self) -> list[float]:
        """Per-op durations in schedule order: GPU time on a GPU, thread CPU time on a CPU."""
        return [self.ms(a, b) for a, b in self.marks] if self.cuda else list(self.cpu_ms)

    def busy_ms(self) -> float:
        return sum(self.ms(a, b) for a, b in self.marks)


def gpipe_step(stage: nn.Module, batch: torch.Tensor | None, m: int, shape: tuple[int, ...],
               device: torch.device, dtype: torch.dtype) -> dict:
    """One GPipe training step of this rank's stage: all ``m`` forwards, then all backwards.

    ``batch`` (only on the first stage) has ``m`` micro-batches along dim 0. Activations go
    forward with send/recv, their gradients come back the same way. Returns this stage's busy
    and span milliseconds (span runs from a common start to a common end: all ranks meet in an
    all-reduce on both sides) and each op's duration, forwards then backwards.
    """
    rank, p = _world()
    clock, flag = _Clock(device), torch.zeros(1, device=device)
    sends: list = []
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    if p > 1:
        dist.all_reduce(flag)
    start = clock.now()
    for i in range(m):
        if rank == 0:
            x = batch[i]  # type: ignore[index]
        else:
            x = torch.empty(shape, device=device, dtype=dtype)
            dist.recv(x, src=rank - 1)
            x.requires_grad_()
        t0 = clock.begin()
        y = stage(x)
        clock.end(t0)
        if rank < p - 1:
            sends.append(dist.isend(y.detach().contiguous(), dst=rank + 1))
        inputs.append(x)
        outputs.append(y)
    for i in reversed(range(m)):
        if rank == p - 1:
            t0 = clock.begin()
            outputs[i].float().square().mean().backward()
        else:
            grad = torch.empty(shape, device=device, dtype=dtype)
            dist.recv(grad, src=rank + 1)
            t0 = clock.begin()
            outputs[i].backward(grad)
        clock.end(t0)
        if rank > 0:
            sends.append(dist.isend(inputs[i].grad.contiguous(), dst=rank - 1))
    for work in sends:
        work.wait()
    if p > 1:
        dist.all_reduce(flag)
    end = clock.now()
    _sync(device)
    return {"busy_ms": clock.busy_ms(), "span_ms": clock.ms(start, end),
            "durations_ms": clock.durations_ms()}


def replay_gpipe(durations: Sequence[Sequence[float]]) -> list[float]:
    """Idle fraction of each stage when its measured ops are placed as early as GPipe allows.

    ``durations[s]`` lists stage ``s``'s ``m`` forward then ``m`` backward durations (backwards
    in the order run: last micro-batch first). Forward ``i`` on stage ``s`` waits for forward
    ``i`` on ``s-1``; backward ``i`` waits for backward ``i`` on ``s+1``; a stage runs one op at
    a time. Communication is taken as free. With equal durations this is exactly
    ``(p-1)/(m+p-1)``; with measured ones it shows what unequal stages or slow backwards do.
    """
    p, m = len(durations), len(durations[0]) // 2
    f_end = [[0.0] * m for _ in range(p)]
    b_end = [[0.0] * m for _ in range(p)]
    for s in range(p):
        t = 0.0
        for i in range(m):
            t = max(t, f_end[s - 1][i] if s else 0.0) + durations[s][i]
            f_end[s][i] = t
    for s in reversed(range(p)):
        t = f_end[s][m - 1]
        for j, i in enumerate(reversed(range(m))):
            t = max(t, b_end[s + 1][i] if s < p - 1 else 0.0) + durations[s][m + j]
            b_end[s][i] = t
    span = max(b_end[s][0] for s in range(p))
    return [1 - sum(durations[s]) / span for s in range(p)]


def _gather_durations(durations: list[float], device: torch.device) -> list[list[float]]:
    _, p = _world()
    mine = torch.tensor(durations, dtype=torch.float64, device=device)
    if p == 1:
        return [durations]
    every = [torch.empty_like(mine) for _ in range(p)]
    dist.all_gather(every, mine)
    return [t.tolist() for t in every]


def _median(values: Sequence[float]) -> float:
    return sorted(values)[len(values) // 2]


def pp_worker(n_layers: int, d_model: int, micro_batch: int, seq_len: int,
              n_microbatches: list[int], steps: int, dtype: str, seed: int) -> pd.DataFrame:
    """One pipeline stage (this rank): idle fraction per ``m``, beside the bubble formula.

    Two measured idle fractions: ``idle_fraction`` from wall clocks (CUDA events on a GPU), and
    ``idle_fraction_replay`` from each op's own duration placed by the schedule's dependencies.
    """
    from workbook.profiling import peak_bytes, reset_peak

    rank, p = _world()
    device, dt = _device(), DTYPES[dtype]
    model = build_pipeline_model(n_layers, d_model, seed)
    stage = nn.Sequential(*[model[i] for i in stage_layers(n_layers, p, rank)]).to(device, dt)
    del model
    shape = (micro_batch, seq_len, d_model)
    gen = torch.Generator().manual_seed(seed + 1)
    rows = []
    for m in n_microbatches:
        batch = torch.randn((m, *shape), generator=gen).to(device, dt) if rank == 0 else None
        samples, replays = [], []
        for step in range(steps + 1):  # step 0 warms up (allocator, NCCL channels)
            reset_peak(device)
            stage.zero_grad(set_to_none=True)
            try:
                out = gpipe_step(stage, batch, m, shape, device, dt)
            except torch.OutOfMemoryError:
                if p > 1:  # the other stages wait on this one: let the runner's timeout act
                    raise
                break
            replay = replay_gpipe(_gather_durations(out["durations_ms"], device))[rank]
            if step:
                samples.append(out)
                replays.append(replay)
        base = {"p": p, "m": m, "n_layers": n_layers, "d_model": d_model,
                "micro_batch": micro_batch, "seq_len": seq_len, "dtype": dtype}
        if len(samples) < steps:  # one stage holds all m micro-batches' activations: OOM
            rows.append({**base, "metric": "idle_fraction", "value": math.nan, "unit": "",
                         "source": "measured", "status": "oom"})
            batch = None
            torch.cuda.empty_cache()
            continue
        durs = [d for s in samples for d in s["durations_ms"]]
        values = [
            ("idle_fraction", _median([1 - s["busy_ms"] / s["span_ms"] for s in samples]), "",
             "measured"),
            ("idle_fraction", bubble_fraction(p, m), "", "predicted"),
            ("idle_fraction_replay", _median(replays), "", "measured"),
            ("busy_ms", _median([s["busy_ms"] for s in samples]), "ms", "measured"),
            ("step_ms", _median([s["span_ms"] for s in samples]), "ms", "measured"),
            ("forward_ms", _median([d for s in samples for d in s["durations_ms"][:m]]), "ms",
             "measured"),
            ("backward_ms", _median([d for s in samples for d in s["durations_ms"][m:]]),
             "ms", "measured"),
            ("op_ms_spread", (max(durs) - min(durs)) / _median(durs), "", "measured"),
            # CPU: thread CPU time over wall time of the same ops; below 1 means the OS parked
            # this rank mid-op (other jobs on the cores). GPU: 1 by construction.
            ("cpu_share_of_busy", _median([sum(s["durations_ms"]) / s["busy_ms"]
                                           for s in samples]), "", "measured"),
            ("stage_layers", len(stage), "", "measured"),
        ]
        if device.type == "cuda":
            values.append(("peak_memory", peak_bytes(device) / 2**30, "GiB", "measured"))
        rows += [{**base, "metric": k, "value": float(v), "unit": u, "source": src}
                 for k, v, u, src in values]
    return pd.DataFrame(rows)


def pipeline_reference_grads(n_layers: int, d_model: int, batch: torch.Tensor,
                             seed: int) -> list[torch.Tensor]:
    """Single-device gradients of the loss GPipe computes (sum over micro-batches)."""
    model = build_pipeline_model(n_layers, d_model, seed).to(batch.dtype)
    for micro in batch:
        model(micro).float().square().mean().backward()
    return [p.grad for p in model.parameters()]


def _torch_gpipe_grads(stage: nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    """The same step through PyTorch's own ``torch.distributed.pipelining.ScheduleGPipe``."""
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    rank, p = _world()
    m = batch.shape[0]
    pipe_stage = PipelineStage(stage, rank, p, batch.device)
    # the schedule divides gradients by m (a mean over micro-batches); ours sums, so scale back
    sched = ScheduleGPipe(pipe_stage, n_microbatches=m,
                          loss_fn=lambda out, _target: out.float().square().mean() * m)
    whole = batch.reshape(-1, *batch.shape[2:])          # (m * micro_batch, seq_len, d_model)
    if rank == 0 and p == 1:
        sched.step(whole, target=torch.zeros_like(whole))
    elif rank == 0:
        sched.step(whole)
    elif rank == p - 1:
        sched.step(target=torch.zeros_like(whole))
    else:
        sched.step()
    return [q.grad for q in stage.parameters()]


def pp_grad_check_worker(n_layers: int, d_model: int, micro_batch: int, seq_len: int, m: int,
                         seed: int) -> pd.DataFrame:
    """GPipe across the ranks must give one device's gradients, and PyTorch's GPipe's."""
    import copy

    rank, p = _world()
    model = build_pipeline_model(n_layers, d_model, seed)
    mine = list(stage_layers(n_layers, p, rank))
    stage = nn.Sequential(*[model[i] for i in mine])
    twin = copy.deepcopy(stage)
    gen = torch.Generator().manual_seed(seed + 1)
    batch = torch.randn(m, micro_batch, seq_len, d_model, generator=gen)
    gpipe_step(stage, batch if rank == 0 else None, m, tuple(batch.shape[1:]),
               torch.device("cpu"), torch.float32)
    ref = pipeline_reference_grads(n_layers, d_model, batch, seed)
    per_layer = len(list(model[0].parameters()))
    ref_mine = ref[mine[0] * per_layer:(mine[-1] + 1) * per_layer] if mine else []
    ours = [q.grad for q in stage.parameters()]

    def gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max((float((x - y).abs().max()) for x, y in zip(a, b, strict=True)), default=0.0)

    rows = [("max_abs_err_grad", gap(ours, ref_mine)),
            ("max_abs_err_vs_torch_pipelining", gap(ours, _torch_gpipe_grads(twin, batch)))]
    return pd.DataFrame([{"p": p, "m": m, "metric": k, "value": v, "unit": "",
                          "source": "measured"} for k, v in rows])


# ====================================================================== expert parallelism


def route(x: torch.Tensor, router: torch.Tensor, bias: torch.Tensor, top_k: int,
          capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k routing with a per-expert capacity, first come first served (Switch Transformer).

    x: (T, d); router: (E, d). Returns ``expert`` (T, k), ``gate`` (T, k) and ``keep`` (T, k),
    where ``keep`` is False for assignments past the expert's capacity (the token then skips
    that expert; the residual connection carries it on).
    """
    probs = torch.softmax((x @ router.T).float() + bias, dim=-1)   # (T, E)
    gate, expert = probs.topk(top_k, dim=-1)                       # (T, k)
    # slot of each assignment in its expert's queue, in token order, choice 1 before choice 2
    onehot = F.one_hot(expert.T.reshape(-1), router.shape[0])     # (k*T, E)
    position = (onehot.cumsum(0) * onehot).sum(-1).view(top_k, -1).T - 1  # (T, k)
    return expert, gate, position < capacity


def _expert_mlp(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    return F.gelu(x @ w1) @ w2


def moe_reference(x: torch.Tensor, weights: dict[str, torch.Tensor], bias: torch.Tensor,
                  top_k: int, capacity: int) -> torch.Tensor:
    """The MoE layer on one device, all experts local: what expert parallelism must equal."""
    expert, gate, keep = route(x, weights["router"], bias, top_k, capacity)
    out = torch.zeros_like(x)
    for e in range(weights["router"].shape[0]):
        tok, slot = ((expert == e) & keep).nonzero(as_tuple=True)
        if len(tok):
            y = _expert_mlp(x[tok], weights["w1"][e], weights["w2"][e])
            out.index_add_(0, tok, (gate[tok, slot, None] * y.float()).to(x.dtype))
    return out


def moe_forward_ep(x: torch.Tensor, weights: dict[str, torch.Tensor], bias: torch.Tensor,
                   top_k: int, capacity: int, log: CommLog) -> tuple[torch.Tensor, dict]:
    """The MoE layer with experts spread over the ranks: route, all-to-all, compute, return.

    Rank ``r`` holds experts ``r*E/W ... (r+1)*E/W - 1`` (global ids). Two all-to-alls move
    token vectors: dispatch (to the expert's rank) and combine (back to the token's rank).
    """
    rank, world = _world()
    n_experts, d = weights["router"].shape
    per_rank = n_experts // world
    expert, gate, keep = route(x, weights["router"], bias, top_k, capacity)
    tok, slot = keep.nonzero(as_tuple=True)
    dest = expert[tok, slot]
    order = torch.argsort(dest, stable=True)            # group assignments by expert
    tok, slot, dest = tok[order], slot[order], dest[order]
    sent_per_expert = torch.bincount(dest, minlength=n_experts)         # (E,)
    # everyone learns how many tokens each of its experts gets from each rank
    recv_per_expert = torch.empty_like(sent_per_expert)
    dist.all_to_all_single(recv_per_expert, sent_per_expert)            # (W * E/W,)
    in_splits = sent_per_expert.view(world, per_rank).sum(1).tolist()
    out_splits = recv_per_expert.view(world, per_rank).sum(1).tolist()
    recv = x.new_empty(sum(out_splits), d)
    log.all_to_all(recv, x[tok].contiguous(), out_splits, in_splits)     # dispatch
    # received rows: per source rank, grouped by my local experts
    local_ids = torch.arange(per_rank, device=x.device).repeat(world)
    owner = torch.repeat_interleave(local_ids, recv_per_expert.view(-1))
    y = torch.empty_like(recv)
    for e in range(per_rank):
        rows = (owner == e).nonzero(as_tuple=True)[0]
        g = rank * per_rank + e
        y[rows] = _expert_mlp(recv[rows], weights["w1"][g], weights["w2"][g])
    back = x.new_empty(len(tok), d)
    log.all_to_all(back, y, in_splits, out_splits)                     # combine
    out = torch.zeros_like(x)
    out.index_add_(0, tok, (gate[tok, slot, None] * back.float()).to(x.dtype))
    stats = {"sent_per_expert": sent_per_expert, "received_tokens": int(sum(out_splits)),
             "received_per_local_expert": recv_per_expert.view(world, per_rank).sum(0),
             "received_from_others": int(sum(out_splits) - out_splits[rank]),
             "dropped": int((~keep).sum()), "assignments": int(keep.numel())}
    return out, stats


def moe_weights(n_experts: int, d_model: int, d_ff: int, seed: int, device: torch.device,
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """All experts' weights from ``seed`` (every rank draws the same; each uses its own).

    Router rows get equal norm so that, on isotropic tokens, no expert is favoured by its
    initialisation alone: imbalance then comes from the bias (``skew``) and from chance.
    """
    gen = torch.Generator().manual_seed(seed)
    router = torch.randn(n_experts, d_model, generator=gen)
    router = router / router.norm(dim=1, keepdim=True)
    w1 = torch.randn(n_experts, d_model, d_ff, generator=gen) / math.sqrt(d_model)
    w2 = torch.randn(n_experts, d_ff, d_model, generator=gen) / math.sqrt(d_ff)
    return {k: v.to(device, dtype) for k, v in {"router": router, "w1": w1, "w2": w2}.items()}


def skew_bias(n_experts: int, skew: float, device: torch.device) -> torch.Tensor:
    """Router logit bias ``skew * (1 ... 0)`` over experts: a stand-in for a router that has
    learned to prefer some experts (0 = no preference)."""
    return skew * torch.linspace(1.0, 0.0, n_experts, device=device)


def ep_worker(experts_per_rank: int, d_model: int, d_ff: int, tokens_per_rank: int,
              top_k: int, capacity_factors: list[float], skews: list[float], dtype: str,
              seed: int, repeats: int) -> pd.DataFrame:
    """One rank of an expert-parallel MoE layer: routing counts, drops, bytes, equality."""
    rank, world = _world()
    device, dt = _device(), DTYPES[dtype]
    n_experts = experts_per_rank * world
    if top_k > n_experts:
        raise WorkbookError(f"top_k={top_k} exceeds the {n_experts} experts; allowed: 1 to "
                            f"{n_experts}")
    weights = moe_weights(n_experts, d_model, d_ff, seed, device, dt)
    gen = torch.Generator().manual_seed(seed + 1 + rank)  # each rank has its own tokens
    x = torch.randn(tokens_per_rank, d_model, generator=gen).to(device, dt)
    rows: list[dict] = []
    for skew in skews:
        bias = skew_bias(n_experts, skew, device)
        for cf in capacity_factors:
            cap = moe_capacity(tokens_per_rank, n_experts, top_k, cf)
            base = {"world": world, "n_experts": n_experts, "top_k": top_k,
                    "capacity_factor": cf, "skew": skew, "tokens_per_rank": tokens_per_rank,
                    "d_model": d_model, "dtype": dtype}
            rows += _ep_rows(x, weights, bias, top_k, cap, base, device, repeats)
    return pd.DataFrame(rows)


def _ep_rows(x: torch.Tensor, weights: dict, bias: torch.Tensor, top_k: int, cap: int,
             base: dict, device: torch.device, repeats: int) -> list[dict]:
    rank, world = _world()
    log = CommLog()
    out, st = moe_forward_ep(x, weights, bias, top_k, cap, log)
    ref = moe_reference(x, weights, bias, top_k, cap)
    n_experts, d = weights["router"].shape
    sent = st["sent_per_expert"]
    row_bytes = d * x.element_size()
    per_rank = n_experts // world
    leaving = int(sent.sum() - sent[rank * per_rank:(rank + 1) * per_rank].sum())
    uniform = 2 * len(x) * top_k * (world - 1) / world * row_bytes

    def r(metric: str, value: float, unit: str = "", source: str = "measured",
          **extra: object) -> dict:
        return {**base, **extra, "metric": metric, "value": float(value), "unit": unit,
                "source": source}

    rows = [r("max_abs_err_vs_one_device", (out.float() - ref.float()).abs().max()),
            r("capacity", cap, "tokens"),
            r("dropped_fraction", st["dropped"] / st["assignments"]),
            r("dropped_fraction", expected_drop_fraction(len(x), n_experts, top_k,
                                                         base["capacity_factor"]),
              source="predicted"),
            r("received_tokens", st["received_tokens"], "tokens"),
            r("alltoall_bytes", log.bytes("all_to_all"), "B"),
            # dispatch sends the tokens routed away; combine returns those received from others
            r("alltoall_bytes", (leaving + st["received_from_others"]) * row_bytes, "B",
              "predicted"),
            r("alltoall_bytes_if_uniform", uniform, "B", "predicted"),
            r("alltoall_calls", log.count("all_to_all"))]
    rows += [r("routed_tokens", int(c), "tokens", expert=e) for e, c in enumerate(sent.tolist())]
    rows += [r("expert_load", int(c), "tokens", expert=rank * per_rank + e)
             for e, c in enumerate(st["received_per_local_expert"].tolist())]
    if repeats > 0:
        log.enabled = False
        ms = _median_ms(lambda: moe_forward_ep(x, weights, bias, top_k, cap, log), device,
                        repeats)
        rows.append(r("moe_forward_ms", ms, "ms"))
    return rows


def load_imbalance(rows: pd.DataFrame, metric: str = "routed_tokens") -> pd.DataFrame:
    """Max over mean tokens per expert, per configuration: 1.0 is perfect balance.

    ``routed_tokens``: what the router asked for (before capacity); ``expert_load``: what the
    experts computed (after drops, so never above capacity times the number of ranks).
    """
    load = rows[rows["metric"] == metric]
    keys = [c for c in ("world", "n_experts", "top_k", "capacity_factor", "skew",
                        "tokens_per_rank", "device") if c in load.columns]
    per_expert = load.groupby([*keys, "expert"], dropna=False)["value"].sum().reset_index()
    out = per_expert.groupby(keys, dropna=False)["value"].agg(lambda v: v.max() / v.mean())
    return out.rename("max_over_mean").reset_index()


# ============================================================================ experiments


def world_size(n_ranks: int) -> tuple[int, str]:
    """(ranks, backend): every GPU present with NCCL, else ``n_ranks`` gloo CPU processes.

    ``n_ranks=0`` means "all that is present" (2 on a CPU). More ranks than GPUs is an error.
    """
    check_range("n_ranks", n_ranks, 0, 1024)
    if not float(n_ranks).is_integer():
        raise WorkbookError(f"n_ranks={n_ranks!r} must be a whole number: 0 (all) or more")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        if n_ranks > gpus:
            raise WorkbookError(f"n_ranks={n_ranks} but this machine has {gpus} GPUs; "
                                f"allowed: 0 (all) or 1 to {gpus}")
        return (n_ranks or gpus), "nccl"
    return (n_ranks or 2), "gloo"


def degrees(world: int, divides: int | None = None) -> list[int]:
    """1, 2, 4, ... up to ``world``, and ``world`` itself; only those dividing ``divides``."""
    out = sorted({2**i for i in range(world.bit_length()) if 2**i <= world} | {world})
    return [d for d in out if divides is None or divides % d == 0]


def _launch(func: str, kwargs: dict, nprocs: int, backend: str, timeout_s: int) -> pd.DataFrame:
    from workbook import runner

    rows = runner.call_distributed(f"workbook.model_parallel:{func}", kwargs, nprocs=nprocs,
                                   backend=backend, timeout_s=timeout_s)
    return rows.assign(world=nprocs, backend=backend)


@dataclass(frozen=True)
class TPConfig:
    d_model: int
    n_heads: int
    d_ff: int
    batch: int
    seq_len: int
    dtype: str
    repeats: int
    n_ranks: int = 0             # 0: every GPU present (2 gloo ranks on a CPU)
    all_degrees: bool = True     # also run tp = 1, 2, 4, ... below the world size

    def __post_init__(self) -> None:
        check_range("d_model", self.d_model, 16, 32768)
        check_range("n_heads", self.n_heads, 1, 256)
        check_range("d_ff", self.d_ff, 16, 131072)
        check_range("batch", self.batch, 1, 256)
        check_range("seq_len", self.seq_len, 1, 32768)
        check_choice("dtype", self.dtype, list(DTYPES))
        check_range("repeats", self.repeats, 0, 100)
        check_range("n_ranks", self.n_ranks, 0, 64)
        if self.d_model % self.n_heads:
            raise WorkbookError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")


def run_tp(cfg: TPConfig, seed: int) -> pd.DataFrame:
    world, backend = world_size(cfg.n_ranks)
    kwargs = {k: getattr(cfg, k) for k in ("d_model", "n_heads", "d_ff", "batch", "seq_len",
                                           "dtype", "repeats")}
    usable = degrees(world, math.gcd(cfg.n_heads, cfg.d_ff))
    if cfg.n_ranks and world not in usable:
        raise WorkbookError(f"tensor parallelism over {world} ranks needs n_heads and d_ff "
                            f"divisible by {world}; allowed n_ranks: {usable}")
    # with all GPUs (n_ranks=0) on an odd count, the largest degree that divides the heads
    tps = usable if cfg.all_degrees else usable[-1:]
    frames = [_launch("tp_worker", {**kwargs, "seed": seed}, t, backend, 300) for t in tps]
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class PPConfig:
    n_layers: int
    d_model: int
    micro_batch: int
    seq_len: int
    n_microbatches: tuple[int, ...]
    steps: int
    dtype: str
    n_ranks: int = 0
    all_degrees: bool = True     # also p = 2, 4, ... below the world size
    grad_check: bool = True      # one run checking GPipe's gradients against one device

    def __post_init__(self) -> None:
        check_range("n_layers", self.n_layers, 1, 512)
        check_range("d_model", self.d_model, 8, 32768)
        check_range("micro_batch", self.micro_batch, 1, 1024)
        check_range("seq_len", self.seq_len, 1, 32768)
        for m in self.n_microbatches:
            check_range("n_microbatches", m, 1, 1024)
        check_range("steps", self.steps, 1, 100)
        check_choice("dtype", self.dtype, list(DTYPES))
        check_range("n_ranks", self.n_ranks, 0, 64)


def run_pp(cfg: PPConfig, seed: int) -> pd.DataFrame:
    world, backend = world_size(cfg.n_ranks)
    if cfg.n_layers < world:
        raise WorkbookError(f"n_layers={cfg.n_layers} cannot fill {world} stages; allowed: "
                            f">= {world}")
    kwargs = {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "micro_batch": cfg.micro_batch,
              "seq_len": cfg.seq_len, "n_microbatches": list(cfg.n_microbatches),
              "steps": cfg.steps, "dtype": cfg.dtype, "seed": seed}
    ps = [p for p in degrees(world) if p > 1 or world == 1] if cfg.all_degrees else [world]
    frames = [_launch("pp_worker", kwargs, p, backend, 300) for p in ps]
    if cfg.grad_check and backend == "gloo":
        check = {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "micro_batch": 2,
                 "seq_len": 4, "m": 3, "seed": seed}
        frames.append(_launch("pp_grad_check_worker", check, world, backend, 300))
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class EPConfig:
    experts_per_rank: int
    d_model: int
    d_ff: int
    tokens_per_rank: int
    top_k: int
    capacity_factors: tuple[float, ...]
    skews: tuple[float, ...]
    dtype: str
    repeats: int
    n_ranks: int = 0

    def __post_init__(self) -> None:
        check_range("experts_per_rank", self.experts_per_rank, 1, 64)
        check_range("d_model", self.d_model, 8, 32768)
        check_range("d_ff", self.d_ff, 8, 131072)
        check_range("tokens_per_rank", self.tokens_per_rank, 1, 1_000_000)
        check_range("top_k", self.top_k, 1, 8)
        for cf in self.capacity_factors:
            check_range("capacity_factor", cf, 0.1, 64.0)
        for s in self.skews:
            check_range("skew", s, 0.0, 20.0)
        check_choice("dtype", self.dtype, list(DTYPES))
        check_range("repeats", self.repeats, 0, 100)
        check_range("n_ranks", self.n_ranks, 0, 64)


def run_ep(cfg: EPConfig, seed: int) -> pd.DataFrame:
    world, backend = world_size(cfg.n_ranks)
    kwargs = {"experts_per_rank": cfg.experts_per_rank, "d_model": cfg.d_model,
              "d_ff": cfg.d_ff, "tokens_per_rank": cfg.tokens_per_rank, "top_k": cfg.top_k,
              "capacity_factors": list(cfg.capacity_factors), "skews": list(cfg.skews),
              "dtype": cfg.dtype, "seed": seed, "repeats": cfg.repeats}
    return _launch("ep_worker", kwargs, world, backend, 300)


TP_PRESETS = {
    "small": TPConfig(d_model=64, n_heads=4, d_ff=256, batch=2, seq_len=16, dtype="fp32",
                      repeats=3, n_ranks=2, all_degrees=False),
    "full": TPConfig(d_model=4096, n_heads=32, d_ff=16384, batch=4, seq_len=2048,
                     dtype="bf16", repeats=10),
}
PP_PRESETS = {
    # sized so one micro-batch forward takes a few ms on one CPU thread: compute dominates
    # send/recv and the Python overhead, so the measured idle share follows the formula
    "small": PPConfig(n_layers=2, d_model=256, micro_batch=4, seq_len=64,
                      n_microbatches=(1, 2, 4, 8), steps=3, dtype="fp32", n_ranks=2,
                      grad_check=False),  # tests/test_model_parallel.py checks gradients
    # 16 layers of d_model 2048: ~0.4 ms per layer per micro-batch forward on an H100, so even
    # at p=8 (2 layers a stage) an op is far longer than a send; m=16 fits one 80 GB GPU at p=1
    "full": PPConfig(n_layers=16, d_model=2048, micro_batch=4, seq_len=1024,
                     n_microbatches=(1, 2, 4, 8, 16), steps=4, dtype="bf16",
                     grad_check=False),
}
EP_PRESETS = {
    "small": EPConfig(experts_per_rank=2, d_model=32, d_ff=64, tokens_per_rank=512, top_k=2,
                      capacity_factors=(0.5, 1.0, 1.25, 2.0), skews=(0.0, 2.0), dtype="fp32",
                      repeats=0, n_ranks=2),
    "full": EPConfig(experts_per_rank=4, d_model=2048, d_ff=4096, tokens_per_rank=16384,
                     top_k=2, capacity_factors=(0.5, 1.0, 1.25, 2.0),
                     skews=(0.0, 1.0, 2.0, 4.0), dtype="bf16", repeats=5),
}

EXPERIMENTS = [
    Experiment(name="tensor_parallel", notebook="06_model_parallel", run=run_tp,
               summary="Megatron column/row-parallel block: equality, all-reduces, step time",
               presets=TP_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=1200),
    Experiment(name="pipeline_bubble", notebook="06_model_parallel", run=run_pp,
               summary="GPipe idle fraction per stage vs (p-1)/(m+p-1) as micro-batches vary",
               presets=PP_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=1200),
    Experiment(name="expert_parallel", notebook="06_model_parallel", run=run_ep,
               summary="MoE all-to-all: tokens per expert, imbalance, capacity drops, bytes",
               presets=EP_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=900),
]

__all__ = ["bubble_fraction", "tp_comm_per_layer", "moe_capacity", "expected_drop_fraction",
           "analytic_view", "Block", "shard_block", "gpipe_step", "route", "moe_reference",
           "moe_forward_ep", "EXPERIMENTS"]


# ========================================================================= summaries, views


_PROVENANCE = ("device", "n_gpus", "recorded_at", "seed")


def _mean_over_ranks(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over ranks per ``keys``; provenance columns are kept so plots can label the source."""
    ok = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
    keys = list(dict.fromkeys([k for k in [*keys, *_PROVENANCE] if k in ok.columns]))
    return ok.groupby(keys, dropna=False)["value"].mean().reset_index()


@takes_rows
def tp_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (tp, metric): measured and predicted side by side, averaged over ranks."""
    out = _mean_over_ranks(rows, ["device", "tp", "metric", "source"])
    return out.pivot_table(index=[c for c in ("device", "tp", "metric") if c in out.columns],
                           columns="source", values="value").reset_index()


def pp_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Idle fraction per (p, m): wall clock, op-duration replay and the formula, rank mean."""
    idle = rows[rows["metric"].isin(["idle_fraction", "idle_fraction_replay"])].copy()
    idle["kind"] = idle["metric"].where(idle["source"] != "predicted", "formula")
    idle["kind"] = idle["kind"].map({"idle_fraction": "wall clock",
                                     "idle_fraction_replay": "op-duration replay",
                                     "formula": "(p-1)/(m+p-1)"})
    out = _mean_over_ranks(idle, ["device", "p", "m", "kind", "source"])
    return out.assign(metric="idle_fraction", stages="p=" + out["p"].astype(int).astype(str))


@takes_rows
def ep_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (skew, capacity factor): dropped share measured vs uniform-routing prediction,
    imbalance (max/mean tokens per expert, before capacity), all-to-all bytes per rank."""
    keys = [k for k in ("world", "skew", "capacity_factor") if k in rows.columns]
    drops = _mean_over_ranks(rows[rows["metric"] == "dropped_fraction"], [*keys, "source"])
    table = drops.pivot_table(index=keys, columns="source", values="value").add_prefix(
        "dropped_").reset_index()
    imb = load_imbalance(rows)[[*keys, "max_over_mean"]]
    a2a = _mean_over_ranks(rows[rows["metric"] == "alltoall_bytes"], [*keys, "source"])
    a2a = a2a.pivot_table(index=keys, columns="source", values="value").add_prefix(
        "alltoall_B_").reset_index()
    return table.merge(imb, on=keys).merge(a2a, on=keys)


def gpu_rows(name: str) -> pd.DataFrame:
    """Rows recorded on GPUs for experiment ``name``, from one device: the one recorded with
    the most GPUs (latest first on a tie), so that no plot averages two machines. Empty if none.
    """
    from workbook import registry, results

    registry.get(name)  # an unknown name: one line listing the experiments
    rows = results.load(name)
    rows = rows[pd.to_numeric(rows["n_gpus"], errors="coerce").fillna(0) > 0]
    if rows.empty:
        return rows
    best = rows.sort_values(["n_gpus", "recorded_at"]).iloc[-1]["device"]
    return rows[rows["device"] == best].reset_index(drop=True)


def bubble_explorer():
    """Sliders p, m, tp, d_model -> bubble curve and bytes per layer (pure formulas)."""
    from workbook import plots, widgets

    ms = [1, 2, 4, 8, 16, 32, 64, 128]
    fig = plots.figure("Pipeline bubble (p-1)/(m+p-1)", "micro-batches m", "idle fraction",
                       log_x=True)

    def draw(fig, p: int, m: int, tp: int, d_model: int) -> str:
        if not fig.data:
            fig.add_scatter(name="bubble at this p", mode="lines", line={"dash": "dash"})
            fig.add_scatter(name="your m", mode="markers", marker={"size": 14})
        fig.data[0].update(x=ms, y=[bubble_fraction(p, x) for x in ms])
        fig.data[1].update(x=[m], y=[bubble_fraction(p, m)])
        view = analytic_view(p, m, tp, d_model).set_index("metric")["value"]
        return (f"p={p}, m={m}: idle {view['bubble fraction']:.1%} of each step; "
                f"tp={tp}, d_model={d_model}, 1×2048 tokens: "
                f"{view['all-reduces per layer per step']:.0f} all-reduces per layer, "
                f"{view['ring bytes sent per rank per layer per step'] / 2**20:.1f} MiB sent "
                f"per rank per layer; pipeline sends "
                f"{view['p2p bytes per stage boundary per step'] / 2**20:.1f} MiB per boundary")

    controls = {"p": widgets.slider("stages p", 1, 64, 1, 4),
                "m": widgets.slider("micro-batches m", 1, 128, 1, 8),
                "tp": widgets.slider("tensor-parallel degree", 1, 64, 1, 8),
                "d_model": widgets.slider("d_model", 512, 16384, 512, 4096)}
    return widgets.Explorer(controls, draw, fig)


@takes_rows
def plot_bubble(rows: pd.DataFrame, title: str = "Pipeline idle fraction vs micro-batches"):
    from workbook import plots

    summary = pp_summary(rows)
    return plots.compare(summary, "m", group=["stages", "kind"], title=title, log_x=True,
                         x_title="micro-batches m", y_title="idle fraction of a step")


def _largest_world(rows: pd.DataFrame) -> pd.DataFrame:
    """Expert-parallel rows of the run with the most ranks (E grows with the world size)."""
    if "world" not in rows.columns or rows.empty:
        return rows
    return rows[rows["world"] == rows["world"].max()]


@takes_rows
def plot_routing(rows: pd.DataFrame, capacity_factor: float | None = None):
    """Tokens the router sends to each expert (before capacity), one bar group per skew."""
    from workbook import plots

    routed = _largest_world(rows[rows["metric"] == "routed_tokens"])
    cf = capacity_factor if capacity_factor is not None else routed["capacity_factor"].max()
    part = routed[routed["capacity_factor"] == cf]
    keys = [k for k in ("skew", "expert", "source", *_PROVENANCE) if k in part.columns]
    per = part.groupby(keys, dropna=False)["value"].sum().reset_index()  # sum over ranks
    per["expert"] = per["expert"].astype(int)
    per["skew"] = "skew " + per["skew"].astype(str)
    return plots.bars(per, "expert", group="skew", y_title="tokens",
                      title=f"Tokens routed to each expert, all ranks (capacity factor {cf})")


@takes_rows
def plot_drops(rows: pd.DataFrame):
    from workbook import plots

    drops = _mean_over_ranks(_largest_world(rows[rows["metric"] == "dropped_fraction"]),
                             ["skew", "capacity_factor", "source"])
    drops = drops.assign(skew="skew " + drops["skew"].astype(str))
    return plots.compare(drops, "capacity_factor", group="skew",
                         title="Dropped token->expert assignments",
                         x_title="capacity factor", y_title="dropped fraction")


@takes_rows
def plot_tp_time(rows: pd.DataFrame):
    """Step time of one block vs tensor-parallel degree, and the all-reduce share."""
    from workbook import plots

    t = rows[rows["metric"].isin(["step_ms_one_device", "step_ms_tensor_parallel"])]
    t = _mean_over_ranks(t, ["tp", "metric", "source"])
    return plots.compare(t, "tp", group="metric", title="One transformer block, forward + "
                         "backward", x_title="tensor-parallel degree", y_title="ms")


@takes_rows
def claims(tp: pd.DataFrame, pp: pd.DataFrame, ep: pd.DataFrame, where: str = "") -> list:
    """The lecture's and the papers' claims, checked against the rows given."""
    from workbook.claims import Claim

    def pick(rows: pd.DataFrame, metric: str, source: str = "measured", **where_) -> float:
        sel = (rows["metric"] == metric) & rows["source"].isin(
            [source] if source == "predicted" else ["measured", "recorded"])
        for k, v in where_.items():
            sel &= rows[k] == v
        vals = rows.loc[sel, "value"]
        return float(vals.mean()) if len(vals) else math.nan

    def within_rounding(err: float, rows: pd.DataFrame) -> float:
        """1.0 if ``err`` is float rounding for the rows' dtype, else 0.0 (NaN: not run)."""
        if math.isnan(err):
            return err
        low = "dtype" in rows and set(rows["dtype"].dropna()) & {"bf16", "fp16"}
        return float(err <= (0.1 if low else 1e-4))

    tp_max = int(tp["tp"].max()) if "tp" in tp and len(tp) else 1
    out = [Claim("TP output equals one device (1 = within float rounding)", "Megatron-LM",
                 1.0, within_rounding(pick(tp, "max_abs_err_output", tp=tp_max), tp), "",
                 where, rel_tol=0),
           Claim(f"TP all-reduces per block per step (tp={tp_max})", "Megatron-LM §3",
                 pick(tp, "allreduce_calls", "predicted", tp=tp_max),
                 pick(tp, "allreduce_calls", tp=tp_max), "", where, rel_tol=0)]
    if "p" in pp and len(pp):
        p, m = int(pp["p"].max()), int(pp["m"].max())
        # idle shares of a step: 2 points of idle time is agreement (p = 1 predicts exactly 0)
        out.append(Claim(f"GPipe bubble (p={p}, m={m}), op-duration replay", "GPipe paper",
                         bubble_fraction(p, m), pick(pp, "idle_fraction_replay", p=p, m=m),
                         "", where, rel_tol=0.25, abs_tol=0.02))
        out.append(Claim(f"GPipe bubble (p={p}, m={m}), wall clock", "GPipe paper",
                         bubble_fraction(p, m), pick(pp, "idle_fraction", p=p, m=m), "",
                         where, rel_tol=0.25, abs_tol=0.02))
    if "skew" in ep and len(ep):
        ep = _largest_world(ep)
        cfs = sorted(set(ep["capacity_factor"].dropna()))
        cf = 1.25 if 1.25 in cfs else cfs[-1]
        # shares of assignments: within 0.001 of the prediction (1e-8 vs 0) is agreement
        out.append(Claim(f"MoE dropped share at capacity factor {cf} (unbiased router)",
                         "Switch Transformer", pick(ep, "dropped_fraction", "predicted",
                                                    skew=0.0, capacity_factor=cf),
                         pick(ep, "dropped_fraction", skew=0.0, capacity_factor=cf),
                         "", where, rel_tol=0.5, abs_tol=0.001))
        out.append(Claim("EP output equals one device (1 = within float rounding)",
                         "GShard", 1.0, within_rounding(pick(ep, "max_abs_err_vs_one_device"),
                                                        ep), "", where, rel_tol=0))
    return out

"""Measuring one training step: FLOPs counted by PyTorch, milliseconds, peak memory, MFU.

* **counted** - ``torch.utils.flop_counter.FlopCounterMode`` adds up the FLOPs of every matmul
  and attention kernel PyTorch actually dispatched (:func:`count_step_flops`);
* **measured** - the step's wall time (:func:`time_train_step`), run as a :class:`RunSpec`
  says; FLOPs / time is the *achieved* FLOP/s, and achieved / peak is the model FLOPs
  utilisation (MFU), against the datasheet and the measured roofline (:func:`step_rows`).

The step's update is the workbook's one, ``workbook.training.backward_step`` (backward, then the
optimizer step), with the gradients cleared after it; only the forward changes with the run.
"""

from __future__ import annotations

import contextlib
import math

import pandas as pd
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from workbook import results
from workbook.config import WorkbookError
from workbook.flops.formulas import matmul_params, step_flops
from workbook.flops.runs import COMPILE_OPTIONS, MODES, RunSpec
from workbook.hardware import datasheet, roofline_peaks, torch_device
from workbook.model import (
    ModelConfig,
    build_model,
    fuse_projections,
    use_causal_sdpa,
    use_rope_table,
)
from workbook.profiling import allocated_bytes, peak_bytes, reset_peak, time_ms
from workbook.training import (
    MasterWeightAdamW,
    backward_step,
    capture_graph,
    next_token_loss,
    warm_up_for_graph,
)

__all__ = ["make_loss_fn", "setup_step", "count_step_flops", "count_flops", "apply_liger",
           "kernel_family", "kernel_times", "kernel_breakdown", "make_train_step",
           "time_train_step", "step_rows"]


def make_loss_fn(model: torch.nn.Module, device: torch.device, fusion: str = "none",
                 loss: str = "torch_ce"):
    """x, y -> next-token loss; bf16 autocast on a GPU (fp32 master weights), fp32 on a CPU.

    ``loss="triton_ce"``: the output layer and the loss run as
    :func:`workbook.flops.fused_ce.linear_cross_entropy` (the loss's gradient computed in the
    forward, in the logits' own buffer), outside torch.compile (a Triton kernel of its own).

    ``fusion="liger"``: the output layer and the loss run as Liger-Kernel's fused linear
    cross-entropy (chunks of tokens; the full logits never exist), on a model whose RMSNorm,
    rotary embedding and SwiGLU :func:`apply_liger` swapped for Liger's Triton kernels."""
    if fusion == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        fused = LigerFusedLinearCrossEntropyLoss()

        def liger_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                hidden = model.model(input_ids=x, use_cache=False).last_hidden_state
            weight = model.lm_head.weight.to(hidden.dtype)   # the tied embedding, as bf16
            return fused(weight, hidden.flatten(0, 1), y.flatten())

        return liger_loss

    if loss == "triton_ce":
        from workbook.flops.fused_ce import linear_cross_entropy  # imports triton

        head = torch.compiler.disable(linear_cross_entropy)

        def fused_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                hidden = model.model(input_ids=x, use_cache=False).last_hidden_state
                return head(hidden, model.lm_head.weight, y)

        return fused_loss

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=x, use_cache=False).logits   # (batch, seq, vocab)
        return next_token_loss(logits, y)

    return loss_fn


def setup_step(cfg: ModelConfig, batch_size: int, seed: int, device: torch.device,
               spec: RunSpec | None = None, capturable: bool = False):
    """(model, x, y, optimizer) for ``spec``'s attention, weights, optimizer, rope and
    projections (its mode and fusion are applied by :func:`make_train_step`); ``capturable``: an
    optimizer whose step can be recorded into a CUDA graph (its step count lives on the GPU)."""
    spec = spec or RunSpec()
    model = build_model(cfg, seed, device=device).train()
    if spec.attention != "sdpa":
        use_causal_sdpa(model)
    if spec.rope == "rope_table":
        use_rope_table(model)
    if spec.projections != "separate":
        fuse_projections(model, attention=spec.projections == "fused_proj")
    gen = torch.Generator().manual_seed(seed)
    # Random token ids (never all zeros): the cost of a step does not depend on the text.
    x = torch.randint(0, cfg.vocab_size, (batch_size, cfg.seq_len), generator=gen).to(device)
    y = torch.randint(0, cfg.vocab_size, (batch_size, cfg.seq_len), generator=gen).to(device)
    compiled = spec.optimizer == "compiled_opt"
    extra = {"capturable": True} if capturable else {}
    if spec.weights == "bf16":
        model = model.to(torch.bfloat16)
        opt = MasterWeightAdamW(model.parameters(), lr=1e-4, compile=compiled, **extra)
    elif compiled:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True, **extra)
        opt.step = torch.compile(opt.step)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda",
                                **extra)
    return model, x, y, opt


def count_step_flops(cfg: ModelConfig, batch_size: int, seed: int = 0,
                     device: torch.device | str | None = None) -> dict[str, float]:
    """FLOPs of one eager forward + backward as counted by ``FlopCounterMode``, by op family:
    ``matmul`` (mm/addmm/bmm), ``attention`` (scaled-dot-product kernels) and ``total``."""
    device = torch.device(device) if device is not None else torch_device()
    model, x, y, _ = setup_step(cfg, batch_size, seed, device)
    return count_flops(model, x, y, device)


def _cpu_attention_formulas() -> dict:
    """PyTorch's counter knows the GPU attention kernels but not the CPU one; count it with
    the same formulas (forward 4·b·h·s²·d, backward 8·b·h·s²·d) so CPU and GPU agree."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count  # triton

    aten = torch.ops.aten

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def count_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                device: torch.device) -> dict[str, float]:
    """FLOPs of one forward + backward of ``model`` on (x, y), as ``FlopCounterMode`` counts
    them: ``matmul``, ``attention`` (scaled-dot-product kernels) and ``total``."""
    from torch.utils.flop_counter import FlopCounterMode  # imports triton: only here

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas())
    with counter:
        make_loss_fn(model, device)(x, y).backward()
    model.zero_grad(set_to_none=True)
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    attention = sum(n for op, n in by_op.items() if "attention" in op)
    total = float(counter.get_total_flops())
    return {"matmul": total - attention, "attention": float(attention), "total": total}


def _peaks(device: torch.device) -> dict[str, float]:
    """bf16 peaks to divide by: the datasheet's and the measured (or recorded) roofline's."""
    if device.type != "cuda":
        return {}
    name = torch.cuda.get_device_name(device)
    out = {}
    if (sheet := datasheet(name)) is not None:
        out["datasheet"] = sheet.tflops["bf16"]
    recorded = results.load("roofline", device=name, ok_only=True)
    if not recorded.empty and "bf16" in (peaks := roofline_peaks(recorded)):
        out["roofline"] = peaks["bf16"]
    return out


def apply_liger(model: torch.nn.Module) -> torch.nn.Module:
    """Swap the Llama model's RMSNorm, rotary embedding and SwiGLU MLP for Liger-Kernel's
    Triton kernels, in place. The rotary patch is module-wide: it stays for the process."""
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
    except ImportError as err:
        raise WorkbookError("fusion='liger' needs liger-kernel (pip install liger-kernel) and a "
                            "GPU with Triton; allowed without it: fusion='none'") from err
    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=False, model=model)
    return model


def kernel_family(name: str) -> str:
    """Which part of a training step a CUDA kernel belongs to, read from its name."""
    low = name.lower()
    if any(k in low for k in ("flash", "fmha", "attention", "sdpa", "cudnn::fusion")):
        return "attention"
    if "adam" in low:
        return "optimizer"
    if any(k in low for k in ("gemm", "nvjet", "xmma", "cutlass", "cublas", "triton_tem",
                              "mm_kernel", "splitk")):
        return "matmul"
    if "memcpy" in low or "memset" in low:
        return "copy"
    return "elementwise"   # norms, rotary, SwiGLU, casts, the loss, residual adds (fused or not)


def kernel_times(step, steps: int = 3) -> pd.DataFrame:
    """Every CUDA kernel of ``steps`` calls of ``step`` (already warm), from ``torch.profiler``:
    name, family (:func:`kernel_family`), GPU ms and launches per step, longest first."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", None)
        if us is None:
            us = getattr(event, "self_cuda_time_total", 0.0)
        if us > 0:
            rows.append({"kernel": event.key, "family": kernel_family(event.key),
                         "ms_per_step": us / 1e3 / steps, "calls_per_step": event.count / steps})
    frame = pd.DataFrame(rows, columns=["kernel", "family", "ms_per_step", "calls_per_step"])
    return frame.sort_values("ms_per_step", ascending=False, ignore_index=True)


def kernel_breakdown(step, steps: int = 3) -> dict[str, float]:
    """GPU milliseconds per step by :func:`kernel_family` (see :func:`kernel_times`)."""
    return kernel_times(step, steps).groupby("family")["ms_per_step"].sum().to_dict()


def make_train_step(cfg: ModelConfig, batch_size: int, spec: RunSpec, seed: int,
                    device: torch.device, count: bool = False):
    """(step, counted FLOPs): one full training step (forward, loss, backward, AdamW) of a
    fresh model run as ``spec`` says; the first call compiles. FLOPs are counted on the
    unfused model (Liger's Triton kernels are opaque to the counter)."""
    if device.type != "cuda":
        for axis, allowed in (("attention", ("sdpa", "causal")), ("fusion", ("none",)),
                              ("mode", tuple(m for m in MODES if m != "step_graph"))):
            if (value := getattr(spec, axis)) not in allowed:
                raise WorkbookError(f"{axis}={value!r} needs a CUDA GPU; allowed here: "
                                    f"{', '.join(allowed)}")
    whole_graph = spec.mode == "step_graph"
    model, x, y, opt = setup_step(cfg, batch_size, seed, device, spec, capturable=whole_graph)
    counted = count_flops(model, x, y, device) if count else {}
    if spec.fusion == "liger":
        apply_liger(model)
    loss_fn = make_loss_fn(model, device, spec.fusion, spec.loss)
    options = COMPILE_OPTIONS[spec.mode]
    forward = loss_fn if options is None else torch.compile(loss_fn, **options)

    def backends():
        # the backend is picked when the forward runs (or is traced): the backward follows it
        only = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}
        return (sdpa_kernel([only[spec.attention]]) if spec.attention in only
                else contextlib.nullcontext())

    def step() -> None:
        with backends():
            loss = forward(x, y)
        backward_step(loss, opt, zero_grad=False)   # backward, AdamW step
        opt.zero_grad(set_to_none=True)

    if whole_graph:
        step = _graph_whole_step(forward, backends, opt, x, y)
    # for inspection (tests, the curious): what the step trains, and on which batch tensors
    step.model, step.optimizer, step.batch = model, opt, (x, y)
    return step, counted


def _graph_whole_step(forward, backends, opt, x: torch.Tensor, y: torch.Tensor):
    """Record forward, backward and optimizer step into one CUDA graph; return the step that
    copies a batch into the graph's inputs and replays it. The recipe of PyTorch's CUDA-graph
    notes: warm up on a side stream (compiles, creates the optimizer state), then capture with
    the gradients unset, so that the backward writes them afresh at every replay.

    The step's ``memory`` (GB): ``warmup_peak`` (the three eager-launched compiled steps),
    ``capture_peak`` (while the graph is recorded: its private pool plus everything held) and
    ``held`` (allocated once it is recorded, the pool included: what every replay keeps)."""
    static_x, static_y = x.clone(), y.clone()
    memory = {}
    reset_peak(x.device)

    def body() -> None:
        with backends():
            loss = forward(static_x, static_y)
        backward_step(loss, opt, zero_grad=False)   # backward, AdamW step

    def clear() -> None:
        opt.zero_grad(set_to_none=True)

    warm_up_for_graph(body, clear, 3)
    memory["warmup_peak"] = peak_bytes(x.device) / 1e9
    reset_peak(x.device)
    graph = capture_graph(body, clear)
    memory["capture_peak"] = peak_bytes(x.device) / 1e9
    memory["held"] = allocated_bytes(x.device) / 1e9

    def step() -> None:
        static_x.copy_(x, non_blocking=True)   # the next batch, as a training loop would
        static_y.copy_(y, non_blocking=True)
        graph.replay()

    step.memory = memory
    return step


def time_train_step(cfg: ModelConfig, batch_size: int, run: str | RunSpec = "eager", *,
                    seed: int = 0, repeats: int = 10, device: torch.device | str | None = None,
                    count: bool = False, breakdown: bool = False) -> dict:
    """Median milliseconds of one full training step (forward, loss, backward, AdamW step)
    run as ``run`` says (:class:`RunSpec` or its text), and the peak memory; with ``count``,
    also the FLOPs counted on one eager step first; with ``breakdown`` (GPU only), the kernel
    time per :func:`kernel_family`. Compilation happens in the warm-up, untimed."""
    device = torch.device(device) if device is not None else torch_device()
    spec = run if isinstance(run, RunSpec) else RunSpec.parse(run)
    step, counted = make_train_step(cfg, batch_size, spec, seed, device, count)
    memory = getattr(step, "memory", {})
    if not memory:
        reset_peak(device)   # the FLOP-counting eager step is not this run's memory
    ms = time_ms(step, warmup=3, repeats=repeats, device=device)
    kernels = kernel_breakdown(step) if breakdown and device.type == "cuda" else {}
    # step_graph: a replay allocates nothing; its peak is its warm-up's or its recording's,
    # taken after the FLOP-counting step (see _graph_whole_step)
    peak = (max(memory["warmup_peak"], memory["capture_peak"]) if memory
            else peak_bytes(device) / 1e9)
    return {"step_ms": ms, "peak_gb": peak, "counted": counted, "kernels": kernels,
            "graph_memory": memory}



def step_rows(cfg: ModelConfig, batch_size: int, run: str | RunSpec, seed: int, repeats: int,
              count: bool = True, breakdown: bool = False) -> pd.DataFrame:
    """Tidy rows for one shape and run: predicted, counted, time, achieved TFLOP/s, MFU, and
    with ``breakdown`` the GPU time per kernel family (``kernel_ms_<family>``)."""
    device = torch_device()
    spec = run if isinstance(run, RunSpec) else RunSpec.parse(run)
    base = {**spec.columns(), "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
            "d_model": cfg.d_model, "vocab_size": cfg.vocab_size, "seq_len": cfg.seq_len,
            "batch_size": batch_size, "n_params": matmul_params(cfg)}
    flops = step_flops(cfg, batch_size)
    rows = [{**base, "metric": "step_flops", "value": flops, "unit": "FLOP",
             "source": "predicted"}]
    try:
        timing = time_train_step(cfg, batch_size, spec, seed=seed, repeats=repeats,
                                 device=device, count=count, breakdown=breakdown)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return pd.DataFrame(rows + [{**base, "metric": "step_time", "value": math.nan,
                                     "unit": "ms", "source": "measured", "status": "oom"}])
    except WorkbookError:
        raise                    # bad input or a missing package: the caller's message
    except Exception as err:     # a kernel that fails (e.g. a CUDA fault) is a row, not a crash
        return pd.DataFrame(rows + [{**base, "metric": "step_time", "value": math.nan,
                                     "unit": "ms", "source": "measured", "status": "error",
                                     "error": f"{type(err).__name__}: {err}"[:300]}])
    if count:
        for part in ("total", "attention"):
            rows.append({**base, "metric": f"step_flops_counted_{part}",
                         "value": timing["counted"][part], "unit": "FLOP"})
    achieved = flops / (timing["step_ms"] * 1e-3) / 1e12
    rows += [
        {**base, "metric": "step_time", "value": timing["step_ms"], "unit": "ms"},
        {**base, "metric": "tokens_per_s", "value": batch_size * cfg.seq_len /
         (timing["step_ms"] * 1e-3), "unit": "tokens/s"},
        {**base, "metric": "achieved_tflops", "value": achieved, "unit": "TFLOP/s"},
        {**base, "metric": "peak_memory", "value": timing["peak_gb"], "unit": "GB"},
    ]
    rows += [{**base, "metric": f"kernel_ms_{family}", "value": ms, "unit": "ms"}
             for family, ms in sorted(timing["kernels"].items())]
    for against, peak in _peaks(device).items():
        # The ledger takes no 'recorded' rows, so the roofline's own peak is not repeated here
        # (it lives in data/results/roofline.csv); the datasheet's is.
        if against == "datasheet":
            rows.append({**base, "metric": "peak_datasheet", "value": peak, "unit": "TFLOP/s",
                         "source": "datasheet"})
        rows.append({**base, "metric": f"mfu_{against}", "value": 100 * achieved / peak,
                     "unit": "%"})
    frame = pd.DataFrame(rows)
    frame["source"] = frame["source"].fillna("measured")
    return frame


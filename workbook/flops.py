"""FLOPs (work) versus FLOP/s (speed): 6·N·D, the attention term, counted FLOPs, and MFU.

Three ways to know how much arithmetic one training step is:

* **predicted** - the formula: every matmul parameter costs 2 FLOPs per token forward and 4
  backward (6·N), plus attention's two sequence-length matmuls, 12·n_layers·seq_len·d_model
  per token (Kaplan et al. 2020; PaLM appendix B);
* **counted** - ``torch.utils.flop_counter.FlopCounterMode`` adds up the FLOPs of every matmul
  and attention kernel PyTorch actually dispatched;
* **measured** - the step's wall time; FLOPs / time is the *achieved* FLOP/s, and achieved /
  peak is the model FLOPs utilisation (MFU), against the datasheet and the measured roofline.

Pure formulas (what sliders drive) come first; measurements (which run a model) after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from dataclasses import dataclass

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_range, takes_rows
from workbook.model import ModelConfig
from workbook.registry import Experiment

# ------------------------------------------------------------------------------ formulas


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul for every token: the blocks' projections and the
    output layer. The input embedding is a lookup (no FLOPs); norms are negligible."""
    per_layer = 4 * cfg.d_model**2 + 3 * cfg.d_model * cfg.d_ff
    return cfg.n_layers * per_layer + cfg.vocab_size * cfg.d_model


def attention_flops_per_token(n_layers: int, seq_len: int, d_model: int, *,
                              causal: bool = False) -> float:
    """Training FLOPs per token of QKᵀ and A·V: 2·2·seq_len·d_model per layer forward, ×3 with
    the backward. MFU is conventionally counted without the causal mask's saving; with
    ``causal=True`` the half that a FlashAttention kernel skips is left out."""
    full = 12.0 * n_layers * seq_len * d_model
    return full / 2 if causal else full


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> dict[str, float]:
    """Training FLOPs per token: ``dense`` = 6·N (N = :func:`matmul_params`) and
    ``attention`` (:func:`attention_flops_per_token`, no causal saving, as for MFU)."""
    if seq_len is not None:
        check_range("seq_len", seq_len, 1, 10_000_000)
    seq_len = cfg.seq_len if seq_len is None else seq_len
    return {"dense": 6.0 * matmul_params(cfg),
            "attention": attention_flops_per_token(cfg.n_layers, seq_len, cfg.d_model)}


def step_flops(cfg: ModelConfig, batch_size: int, seq_len: int | None = None) -> float:
    """Predicted FLOPs of one training step (forward + backward) on batch_size × seq_len."""
    seq_len = cfg.seq_len if seq_len is None else seq_len
    return sum(flops_per_token(cfg, seq_len).values()) * batch_size * seq_len


def training_flops(n_params: float, n_tokens: float) -> float:
    """The lecture's rule: C ≈ 6·N·D (forward 2·N·D, backward 4·N·D)."""
    return 6.0 * n_params * n_tokens


def gpu_peak_tflops(gpu: str, dtype: str = "bf16") -> float:
    """Dense datasheet TFLOP/s of a GPU named as in ``workbook.hardware.DATASHEET``."""
    from workbook.hardware import DATASHEET, datasheet

    peaks = datasheet(gpu)
    if peaks is None or dtype not in peaks.tflops:
        having = [name for name, p in DATASHEET if dtype in p.tflops]
        raise WorkbookError(f"no datasheet peak for gpu={gpu!r}, dtype={dtype!r}; allowed: the "
                            f"GPUs with a {dtype} peak: {', '.join(having) or 'none'} "
                            "(workbook.hardware.DATASHEET)")
    return peaks.tflops[dtype]


def training_dtype(gpu: str) -> str:
    """The 16-bit format a GPU trains in: bf16 where it has it, else fp16 (the T4, pre-Ampere)."""
    from workbook.hardware import datasheet

    peaks = datasheet(gpu)
    return "bf16" if peaks is None or "bf16" in peaks.tflops else "fp16"


def training_time(n_params: float, n_tokens: float, *, gpu: str = "A100", n_gpus: int = 1,
                  utilization: float = 0.4, dtype: str = "bf16") -> dict[str, float]:
    """Wall time of a training run: 6·N·D / (peak × n_gpus × utilization).

    Returns FLOPs, seconds, hours, days and GPU-hours. ``utilization`` is the MFU (0-1).
    """
    check_range("n_params", n_params, 1, 1e15)
    check_range("n_tokens", n_tokens, 1, 1e16)
    check_range("n_gpus", n_gpus, 1, 10_000_000)
    check_range("utilization", utilization, 0.01, 1.0)
    flops = training_flops(n_params, n_tokens)
    seconds = flops / (gpu_peak_tflops(gpu, dtype) * 1e12 * n_gpus * utilization)
    return {"flops": flops, "seconds": seconds, "hours": seconds / 3600,
            "days": seconds / 86400, "gpu_hours": seconds * n_gpus / 3600}


@dataclass(frozen=True)
class RunExample:
    name: str
    n_params: float
    n_tokens: float
    gpu: str
    n_gpus: int
    utilization: float
    dtype: str
    claim: str          # what the source says, to compare against


# The lecture's worked examples (notes 001, section 2.3): same inputs, so the same answers.
LECTURE_EXAMPLES: tuple[RunExample, ...] = (
    RunExample("GPT-3 175B", 175e9, 300e9, "A100", 10_000, 0.5, "bf16",
               "lecture: 6ND ≈ 3.15e23 FLOPs; 10,000 A100 at 312 TFLOP/s, 50 % -> "
               "≈ 202,000 s ≈ 56 h ≈ 2.3 days"),
    RunExample("Llama 3 405B", 405e9, 15e12, "H100", 16_384, 0.4, "bf16",
               "lecture: 6ND ≈ 3.6e25 FLOPs; Meta (Llama 3 paper): 16K H100 at 38-43 % "
               "MFU, 30.84M GPU-hours for the 405B model"),
)


def lecture_examples() -> pd.DataFrame:
    """The worked examples through :func:`training_time`, one row per example."""
    rows = []
    for ex in LECTURE_EXAMPLES:
        t = training_time(ex.n_params, ex.n_tokens, gpu=ex.gpu, n_gpus=ex.n_gpus,
                          utilization=ex.utilization, dtype=ex.dtype)
        rows.append({"run": ex.name, "n_params": ex.n_params, "n_tokens": ex.n_tokens,
                     "gpu": ex.gpu, "n_gpus": ex.n_gpus, "utilization": ex.utilization,
                     **t, "source says": ex.claim})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- measurement


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _loss_fn(model: torch.nn.Module, device: torch.device, fusion: str = "none",
             loss: str = "torch_ce"):
    """x, y -> next-token loss; bf16 autocast on a GPU (fp32 master weights), fp32 on a CPU.

    ``loss="triton_ce"``: the output layer and the loss run as
    :func:`workbook.fused_ce.linear_cross_entropy` (the loss's gradient computed in the forward,
    in the logits' own buffer), outside torch.compile (it is a Triton kernel of its own).

    ``fusion="liger"``: the output layer and the loss run as Liger-Kernel's fused linear
    cross-entropy (chunks of tokens; the full logits never exist), on a model whose RMSNorm,
    rotary embedding and SwiGLU :func:`apply_liger` swapped for Liger's Triton kernels."""
    from workbook.training import next_token_loss

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
        from workbook.fused_ce import linear_cross_entropy

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


def _setup(cfg: ModelConfig, batch_size: int, seed: int, device: torch.device,
           spec: RunSpec | None = None, capturable: bool = False):
    """(model, x, y, optimizer) for ``spec``'s attention, weights, optimizer, rope and
    projections (its mode and fusion are applied by :func:`_train_step`); ``capturable``: an
    optimizer whose step can be recorded into a CUDA graph (its step count lives on the GPU)."""
    from workbook.model import build_model, fuse_projections, use_causal_sdpa, use_rope_table
    from workbook.training import MasterWeightAdamW

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
    device = torch.device(device) if device is not None else _device()
    model, x, y, _ = _setup(cfg, batch_size, seed, device)
    return _count(model, x, y, device)


def _cpu_attention_formulas() -> dict:
    """PyTorch's counter knows the GPU attention kernels but not the CPU one; count it with
    the same formulas (forward 4·b·h·s²·d, backward 8·b·h·s²·d) so CPU and GPU agree."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def _count(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
           device: torch.device) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas())
    with counter:
        _loss_fn(model, device)(x, y).backward()
    model.zero_grad(set_to_none=True)
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    attention = sum(n for op, n in by_op.items() if "attention" in op)
    total = float(counter.get_total_flops())
    return {"matmul": total - attention, "attention": float(attention), "total": total}


def _peaks(device: torch.device) -> dict[str, float]:
    """bf16 peaks to divide by: the datasheet's and the measured (or recorded) roofline's."""
    from workbook import results
    from workbook.hardware import datasheet, roofline_peaks

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


# How each mode runs the loss function (forward + loss; backward follows the compiled graph;
# the optimizer step stays outside, compiled or not, see OPTIMIZERS).
# "graphs": CUDA graphs around forward and backward (one launch each instead of hundreds).
# "graphs_tuned": the same, and every Triton kernel's block sizes tuned by coordinate descent.
# "autotune": also searches matmul implementations and tile configurations (cuBLAS against
# Triton templates, which can fuse the elementwise work around them): minutes of compile on the
# first step; "autotune_graphs" with CUDA graphs.
# "step_graph": the compiled forward, the backward and the optimizer step recorded into one CUDA
# graph together (torch.cuda.graph): a step is one launch, as in MLPerf training submissions.
# Each step copies its batch into the graph's input buffers first, as a training loop would.
COMPILE_OPTIONS: dict[str, dict | None] = {
    "eager": None,
    "compiled": {},
    "autotune": {"mode": "max-autotune-no-cudagraphs"},
    "graphs": {"mode": "reduce-overhead"},
    "graphs_tuned": {"options": {"triton.cudagraphs": True, "coordinate_descent_tuning": True}},
    "autotune_graphs": {"mode": "max-autotune"},
    "step_graph": {},
}
MODES = tuple(COMPILE_OPTIONS)
# "sdpa": transformers' own SDPA integration. Under torch.compile (torch < 2.14) it passes SDPA
# an explicit causal mask, which rules FlashAttention out. "causal": workbook.model's
# CAUSAL_SDPA, which passes is_causal=True instead (no padding in these batches), and SDPA picks
# its kernel (on an H100 with torch 2.11: cuDNN's). "cudnn" and "flash": the same, with SDPA
# restricted to its cuDNN backend or to its FlashAttention-2 backend (GPU only).
ATTENTIONS = ("sdpa", "causal", "cudnn", "flash")
# "liger": Liger-Kernel's Triton kernels for RMSNorm, rotary embedding and SwiGLU, and its
# fused linear cross-entropy for the output layer + loss (GPU only, `pip install liger-kernel`).
FUSIONS = ("none", "liger")
# Where the weights live. "fp32": FP32 weights under BF16 autocast (nanoGPT's way): every matmul
# casts its weight to BF16, and the residual stream, norms and rotary embedding stay FP32.
# "bf16": the model is BF16 and AdamW keeps FP32 master weights (Megatron-LM's way,
# workbook.precision.MasterWeightAdamW): every activation is half the bytes.
WEIGHTS = ("fp32", "bf16")
# The optimizer step. "fused": torch's fused AdamW kernel (with BF16 weights, plus two
# multi-tensor copies to and from the FP32 masters). "compiled_opt": the whole step, copies
# included, compiled by torch.compile into a few Triton kernels.
OPTIMIZERS = ("fused", "compiled_opt")
# The rotary embedding's cos and sin. "angles": computed from the positions at every forward, as
# transformers does (under torch.compile, inside every kernel that rotates q or k).
# "rope_table": read from tables built once (workbook.model.RopeTable).
ROPES = ("angles", "rope_table")
# The projections. "separate": q, k, v (and gate, up) as transformers runs them, one matmul each.
# "fused_proj": one matmul for q, k, v and one for gate, up (workbook.model.fuse_projections;
# the same parameters, concatenated in the forward). "fused_mlp": gate and up only (on the H100
# the fused q, k, v matmul gained 0.4 ms, but gathering its gradient cost 2 ms more).
PROJECTIONS = ("separate", "fused_proj", "fused_mlp")
# The output layer and the loss. "torch_ce": logits, then F.cross_entropy (compiled with the rest:
# the forward reads the logits, the backward reads them again and writes their gradient).
# "triton_ce": workbook.fused_ce, whose Triton kernel writes the gradient in the forward, over
# the logits, in one read and one write (GPU; PyTorch arithmetic on a CPU).
LOSSES = ("torch_ce", "triton_ce")
# Every option axis, with its allowed values; the first is the default (torch and transformers
# as they come) and is left out of a run's name.
OPTION_AXES: dict[str, tuple[str, ...]] = {
    "fusion": FUSIONS, "weights": WEIGHTS, "optimizer": OPTIMIZERS, "rope": ROPES,
    "projections": PROJECTIONS, "loss": LOSSES}


@dataclass(frozen=True)
class RunSpec:
    """One way to run the training step: a mode (:data:`COMPILE_OPTIONS`), an attention path
    (:data:`ATTENTIONS`) and one value per option axis (:data:`OPTION_AXES`).

    Written ``mode:attention[:option+option...]``, e.g. ``graphs:causal:bf16+rope_table``
    (:meth:`parse`, ``str()``); its fields are the columns of the recorded rows."""

    mode: str = "eager"
    attention: str = "sdpa"
    fusion: str = "none"
    weights: str = "fp32"
    optimizer: str = "fused"
    rope: str = "angles"
    projections: str = "separate"
    loss: str = "torch_ce"

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("attention", self.attention, ATTENTIONS)
        for axis, values in OPTION_AXES.items():
            check_choice(axis, getattr(self, axis), values)
        if self.fusion == "liger" and self.loss != "torch_ce":
            raise WorkbookError("fusion 'liger' brings its own fused loss; with it the loss "
                                f"must be 'torch_ce', not {self.loss!r}")

    @classmethod
    def parse(cls, run: str) -> RunSpec:
        """"mode[:attention[:options]]", ``options`` joined with "+", at most one per axis, in
        any order; attention defaults to "sdpa", each axis to its first value."""
        parts = run.split(":")
        if len(parts) > 3:
            raise WorkbookError(f"run={run!r}: write mode[:attention[:option+option...]], e.g. "
                                "'compiled:causal', 'graphs:causal:bf16' or "
                                "'graphs:causal:liger'")
        mode, attention = (parts + ["sdpa"])[:2]
        check_choice("mode", mode, MODES)
        check_choice("attention", attention, ATTENTIONS)
        chosen = {}
        for option in (parts[2].split("+") if len(parts) == 3 else []):
            axis = next((a for a, values in OPTION_AXES.items() if option in values), None)
            if axis is None:
                check_choice("option", option,
                             [v for values in OPTION_AXES.values() for v in values[1:]])
            chosen[axis] = option
        return cls(mode, attention, **chosen)

    def __str__(self) -> str:
        options = [getattr(self, axis) for axis, values in OPTION_AXES.items()
                   if getattr(self, axis) != values[0]]
        return f"{self.mode}:{self.attention}" + (":" + "+".join(options) if options else "")

    def columns(self) -> dict[str, str]:
        return dataclasses.asdict(self)


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
    from torch.profiler import ProfilerActivity, profile

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


def _train_step(cfg: ModelConfig, batch_size: int, spec: RunSpec, seed: int,
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
    model, x, y, opt = _setup(cfg, batch_size, seed, device, spec, capturable=whole_graph)
    counted = _count(model, x, y, device) if count else {}
    if spec.fusion == "liger":
        apply_liger(model)
    loss_fn = _loss_fn(model, device, spec.fusion, spec.loss)
    options = COMPILE_OPTIONS[spec.mode]
    forward = loss_fn if options is None else torch.compile(loss_fn, **options)

    def backends():
        # the backend is picked when the forward runs (or is traced): the backward follows it
        from torch.nn.attention import SDPBackend, sdpa_kernel

        only = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}
        return (sdpa_kernel([only[spec.attention]]) if spec.attention in only
                else contextlib.nullcontext())

    def step() -> None:
        with backends():
            loss = forward(x, y)
        loss.backward()
        opt.step()
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
    from workbook.profiling import allocated_bytes, peak_bytes, reset_peak

    static_x, static_y = x.clone(), y.clone()
    memory = {}
    reset_peak(x.device)

    def body() -> None:
        with backends():
            loss = forward(static_x, static_y)
        loss.backward()
        opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            body()
            opt.zero_grad(set_to_none=True)
    torch.cuda.current_stream().wait_stream(side)
    memory["warmup_peak"] = peak_bytes(x.device) / 1e9
    reset_peak(x.device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
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
    from workbook.profiling import peak_bytes, reset_peak, time_ms

    device = torch.device(device) if device is not None else _device()
    spec = run if isinstance(run, RunSpec) else RunSpec.parse(run)
    step, counted = _train_step(cfg, batch_size, spec, seed, device, count)
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


def top_kernels(run: str = "compiled:causal", cfg: ModelConfig | None = None,
                batch_size: int | None = None, n: int = 20, seed: int = 0) -> pd.DataFrame:
    """The ``n`` longest CUDA kernels of one training step for ``run`` (see :func:`parse_run`),
    at the full MFU preset's shape unless ``cfg``/``batch_size`` are given. GPU only."""
    if not torch.cuda.is_available():
        raise WorkbookError("top_kernels profiles CUDA kernels and needs a GPU")
    preset = MFU_PRESETS["full"]
    step, _ = _train_step(cfg or preset.model(), batch_size or preset.batch_size,
                          RunSpec.parse(run), seed, torch.device("cuda"))
    for _ in range(3):
        step()   # compile and warm up
    return kernel_times(step).head(n)


def step_rows(cfg: ModelConfig, batch_size: int, run: str | RunSpec, seed: int, repeats: int,
              count: bool = True, breakdown: bool = False) -> pd.DataFrame:
    """Tidy rows for one shape and run: predicted, counted, time, achieved TFLOP/s, MFU, and
    with ``breakdown`` the GPU time per kernel family (``kernel_ms_<family>``)."""
    device = _device()
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


# ------------------------------------------------------------------------- experiments

def parse_run(run: str) -> RunSpec:
    """The :class:`RunSpec` a run's text names, checked (see :meth:`RunSpec.parse`)."""
    return RunSpec.parse(run)


@dataclass(frozen=True)
class MfuConfig:
    """One model shape, one training step timed per run ("mode:attention[:options]", see
    :class:`RunSpec`)."""

    n_layers: int
    n_heads: int
    d_model: int
    vocab_size: int
    seq_len: int
    batch_size: int
    runs: tuple[str, ...] = ("eager:sdpa", "compiled:sdpa")
    repeats: int = 10
    breakdown: bool = True       # GPU time per kernel family (torch.profiler), GPU only

    def __post_init__(self) -> None:
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("repeats", self.repeats, 1, 200)
        if not self.runs:
            raise WorkbookError("runs is empty; give at least one, e.g. ('eager:sdpa',)")
        for run in self.runs:
            parse_run(run)
        self.model()  # range checks of the shape

    def model(self) -> ModelConfig:
        return ModelConfig(vocab_size=self.vocab_size, d_model=self.d_model,
                           n_layers=self.n_layers, n_heads=self.n_heads, seq_len=self.seq_len)


# The options that made the compiled H100 step clearly faster (BF16 weights with FP32 masters, a
# compiled optimizer step, tabulated rotary angles); see data/results/mfu_benchmark.csv. On top:
# "triton_ce" (-0.4 to -0.7 ms) and then "fused_mlp" (-0.1 to -0.4 ms), the ladder's last rungs.
BEST_OPTIONS = "bf16+compiled_opt+rope_table"

MFU_PRESETS = {
    "small": MfuConfig(n_layers=2, n_heads=4, d_model=64, vocab_size=512, seq_len=64,
                       batch_size=4, runs=("eager:sdpa", "eager:causal", "eager:causal:bf16"),
                       repeats=3),
    # nanoGPT's benchmark shape (bench.py): GPT-2 small, 1024 tokens, batch 12, bf16.
    # eager:causal is the control (eager sdpa already skips the mask, so it must match).
    # The runs in the order of the notebook's ladder: each adds one change to the one before.
    "full": MfuConfig(n_layers=12, n_heads=12, d_model=768, vocab_size=50304, seq_len=1024,
                      batch_size=12, runs=(
                          "eager:sdpa", "eager:causal", "compiled:sdpa", "compiled:causal",
                          "compiled:cudnn", "graphs:causal", "compiled:causal:bf16",
                          "graphs:causal:bf16", "graphs:causal:bf16+compiled_opt",
                          "graphs:causal:" + BEST_OPTIONS,
                          "graphs:causal:" + BEST_OPTIONS + "+triton_ce",
                          "graphs:flash:" + BEST_OPTIONS,
                          "graphs_tuned:causal:" + BEST_OPTIONS,
                          "autotune_graphs:causal:" + BEST_OPTIONS,
                          "step_graph:causal:" + BEST_OPTIONS,
                          "step_graph:causal:" + BEST_OPTIONS + "+triton_ce",
                          "step_graph:causal:" + BEST_OPTIONS + "+fused_mlp+triton_ce",
                          "step_graph:flash:" + BEST_OPTIONS + "+fused_mlp+triton_ce",
                          "step_graph:causal:" + BEST_OPTIONS + "+fused_mlp",
                          "step_graph:causal:" + BEST_OPTIONS + "+fused_proj"),
                      repeats=20),
}


# What the notebook's button runs on a GPU: the runs that tell the story in about two minutes
# (max-autotune alone can compile for more than four).
QUICK_RUNS = ("eager:sdpa", "compiled:sdpa", "graphs:causal",
              "step_graph:causal:" + BEST_OPTIONS,
              "step_graph:causal:" + BEST_OPTIONS + "+triton_ce")


def quick_config(preset: str) -> MfuConfig:
    """The preset's shape with :data:`QUICK_RUNS` (the small preset as it is)."""
    check_choice("preset", preset, MFU_PRESETS)
    cfg = MFU_PRESETS[preset]
    return cfg if preset == "small" else dataclasses.replace(cfg, runs=QUICK_RUNS)


def run_mfu_benchmark(cfg: MfuConfig, seed: int) -> pd.DataFrame:
    """Achieved TFLOP/s and MFU of one training step per run, eager next to compiled."""
    frames = []
    for i, run in enumerate(cfg.runs):
        if i:
            _release_previous_run()
        frames.append(step_rows(cfg.model(), cfg.batch_size, run, seed, cfg.repeats,
                                count=i == 0, breakdown=cfg.breakdown))
    return pd.concat(frames, ignore_index=True)


def _release_previous_run() -> None:
    """Drop what an earlier run of this process still holds (torch.compile's caches keep its
    model alive, CUDA graphs their pools), so that the next run's peak memory is its own."""
    import gc

    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class FlopsSweepConfig:
    """Several model widths at one depth, eager: how FLOP/s and MFU grow with size."""

    d_models: tuple[int, ...]
    n_layers: int
    head_dim: int
    vocab_size: int
    seq_len: int
    batch_size: int
    repeats: int = 5

    def __post_init__(self) -> None:
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("repeats", self.repeats, 1, 200)
        check_range("head_dim", self.head_dim, 8, 256)
        check_range("n_layers", self.n_layers, 1, 256)
        check_range("vocab_size", self.vocab_size, 16, 262144)
        check_range("seq_len", self.seq_len, 2, 131072)
        for d in self.d_models:
            check_range("d_model", d, self.head_dim, 16384)
            if d % self.head_dim:
                raise WorkbookError(f"d_model={d} must be a multiple of head_dim={self.head_dim}")

    def shapes(self) -> list[ModelConfig]:
        return [ModelConfig(vocab_size=self.vocab_size, d_model=d, n_layers=self.n_layers,
                            n_heads=d // self.head_dim, seq_len=self.seq_len)
                for d in self.d_models]


FLOPS_PRESETS = {
    "small": FlopsSweepConfig(d_models=(32, 64, 128), n_layers=2, head_dim=16, vocab_size=512,
                              seq_len=64, batch_size=4, repeats=3),
    "full": FlopsSweepConfig(d_models=(256, 512, 768, 1024, 1536), n_layers=12,
                             head_dim=64, vocab_size=50304, seq_len=1024, batch_size=8),
}


def run_flops_sweep(cfg: FlopsSweepConfig, seed: int) -> pd.DataFrame:
    """Predicted vs counted FLOPs and achieved TFLOP/s per model width (eager)."""
    frames = [step_rows(shape, cfg.batch_size, "eager", seed, cfg.repeats)
              for shape in cfg.shapes()]
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class LossKernelConfig:
    """The loss alone, forward and backward over a (rows, vocab) block of logits: PyTorch's
    cross-entropy (compiled on a GPU) against workbook.fused_ce's kernel per tile shape."""

    rows: int
    vocab_size: int
    blocks: tuple[int, ...] = (4096, 8192)
    warps: tuple[int, ...] = (16, 32)
    per_sm: tuple[int, ...] = (0, 4)          # programs per SM; 0: one program per row
    evict: tuple[bool, ...] = (False, True)   # L2 eviction hints on the two passes
    repeats: int = 20

    def __post_init__(self) -> None:
        check_range("rows", self.rows, 1, 1 << 20)
        check_range("vocab_size", self.vocab_size, 2, 1 << 20)
        check_range("repeats", self.repeats, 1, 200)
        for block in self.blocks:
            if not (16 <= block <= 65536 and block & (block - 1) == 0):
                raise WorkbookError(f"block={block!r}: allowed powers of two from 16 to 65536")
        for warps in self.warps:
            check_choice("warps", warps, (1, 2, 4, 8, 16, 32))
        for per_sm in self.per_sm:
            check_range("per_sm", per_sm, 0, 64)


LOSS_KERNEL_PRESETS = {
    "small": LossKernelConfig(rows=256, vocab_size=512, blocks=(64, 256), warps=(4,),
                              per_sm=(0,), evict=(False,), repeats=3),
    # nanoGPT's step: 12 x 1024 tokens, 50 304 words, BF16 logits (1.24 GB).
    "full": LossKernelConfig(rows=12 * 1024, vocab_size=50304),
}


def run_loss_kernel(cfg: LossKernelConfig, seed: int) -> pd.DataFrame:
    """Milliseconds of the loss's forward + backward over the logits (the output layer's
    matmuls excluded), next to the bytes each must move: PyTorch's cross-entropy reads the
    logits twice and writes their gradient once; workbook.fused_ce's kernel reads them once
    (its second pass over a row mostly hits L2) and writes the gradient over them."""
    import torch.nn.functional as F

    from workbook import fused_ce
    from workbook.profiling import time_ms

    device = _device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device).manual_seed(seed)
    base = {"rows": cfg.rows, "vocab_size": cfg.vocab_size, "dtype": str(dtype).split(".")[-1]}
    logits_bytes = cfg.rows * cfg.vocab_size * (2 if dtype == torch.bfloat16 else 4)
    try:
        logits = (2 * torch.randn(cfg.rows, cfg.vocab_size, generator=gen, device=device)
                  ).to(dtype)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return pd.DataFrame([{**base, "variant": "all", "metric": "ms", "value": math.nan,
                              "unit": "ms", "status": "oom"}])
    targets = torch.randint(0, cfg.vocab_size, (cfg.rows,), generator=gen, device=device)
    n_valid = torch.tensor(cfg.rows, device=device)

    def torch_ce():
        leaf = logits.detach().requires_grad_(True)
        F.cross_entropy(leaf.float(), targets).backward()

    variants = [("torch_ce", {}, 3, torch.compile(torch_ce) if device.type == "cuda"
                 else torch_ce)]
    work = logits.clone()
    if fused_ce.why_not(work) is None:
        for block, warps, per_sm, evict in itertools.product(cfg.blocks, cfg.warps, cfg.per_sm,
                                                             cfg.evict):
            variants.append(("triton_ce", {"block": block, "warps": warps, "per_sm": per_sm,
                                           "evict": evict}, 2,
                             lambda b=block, w=warps, p=per_sm, e=evict: fused_ce.softmax_grad_(
                                 work, targets, n_valid, block=b, num_warps=w, per_sm=p,
                                 evict=e)))
    else:
        variants.append(("pytorch_reference", {}, 2,
                         lambda: fused_ce.softmax_grad_reference_(work, targets, n_valid)))
    rows = []
    for name, knobs, passes, fn in variants:
        row = {**base, "variant": name, "block": knobs.get("block"),
               "warps": knobs.get("warps"), "per_sm": knobs.get("per_sm"),
               "evict": knobs.get("evict"), "passes": passes}
        try:
            ms = time_ms(fn, warmup=3, repeats=cfg.repeats, device=device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            rows.append({**row, "metric": "ms", "value": math.nan, "unit": "ms",
                         "status": "oom"})
            continue
        moved = passes * logits_bytes
        rows += [{**row, "metric": "ms", "value": ms, "unit": "ms"},
                 {**row, "metric": "bytes_moved", "value": moved, "unit": "B",
                  "source": "predicted"},
                 {**row, "metric": "achieved_gbps", "value": moved / (ms * 1e-3) / 1e9,
                  "unit": "GB/s"}]
    frame = pd.DataFrame(rows)
    frame["source"] = frame.get("source", pd.Series(index=frame.index)).fillna("measured")
    frame["status"] = frame.get("status", pd.Series(index=frame.index)).fillna("ok")
    return frame


@takes_rows
def loss_kernel_table(rows: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """One row per launch of the recorded loss_kernel sweep (the latest measurement of each):
    ms, the bytes it must move, and the bandwidth that implies, with the commit that measured
    it (the kernel changed between commits). The baselines (F.cross_entropy, the PyTorch twin)
    first, then the kernel's launches, fastest first; ``top``: only that many launches."""
    if rows.empty:
        return rows
    keys = [k for k in ("variant", "block", "warps", "per_sm", "evict", "commit") if k in rows]
    ok = rows[rows["status"] == "ok"]
    table = ok.pivot_table(index=keys, columns="metric", values="value", aggfunc="last",
                           dropna=False).dropna(how="all").reset_index()
    table["GB moved (predicted)"] = table["bytes_moved"] / 1e9
    table = table.rename(columns={"ms": "ms (measured)", "achieved_gbps": "GB/s"})
    cols = keys + ["ms (measured)", "GB moved (predicted)", "GB/s"]
    table = table[cols].sort_values("ms (measured)", ignore_index=True).round(3)
    kernel = table["variant"] == "triton_ce"
    launches = table[kernel] if top is None else table[kernel].head(top)
    return pd.concat([table[~kernel], launches], ignore_index=True)


EXPERIMENTS = [
    Experiment(name="loss_kernel", notebook="02_flops", run=run_loss_kernel,
               summary="the loss's forward+backward over the logits: F.cross_entropy vs a "
                       "Triton kernel that writes the gradient in the forward",
               presets=LOSS_KERNEL_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=600),
    Experiment(name="mfu_benchmark", notebook="02_flops", run=run_mfu_benchmark,
               summary="training-step TFLOP/s and MFU at nanoGPT's shape, eager vs compile",
               presets=MFU_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=600),
    Experiment(name="flops_sweep", notebook="02_flops", run=run_flops_sweep,
               summary="6ND+attention vs FlopCounterMode vs step time across model widths",
               presets=FLOPS_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=600),
]


# ------------------------------------------------------------------- notebook helpers


def formula_vs_counted(cfg: ModelConfig, batch_size: int, seed: int = 0) -> pd.DataFrame:
    """One training step of ``cfg`` (eager, this machine): formula next to FlopCounterMode."""
    check_range("batch_size", batch_size, 1, 1024)
    check_range("seed", seed, 0, 2**31 - 1)
    counted = count_step_flops(cfg, batch_size, seed)
    tokens = batch_size * cfg.seq_len
    per_token = flops_per_token(cfg)
    rows = [("matmuls (6·N per token)", per_token["dense"] * tokens, counted["matmul"]),
            ("attention (12·L·T·d per token)", per_token["attention"] * tokens,
             counted["attention"]),
            ("total", step_flops(cfg, batch_size), counted["total"])]
    frame = pd.DataFrame(rows, columns=["part", "predicted FLOPs", "counted FLOPs"])
    frame["counted / predicted"] = frame["counted FLOPs"] / frame["predicted FLOPs"]
    return frame


def recorded_or_note(name: str) -> pd.DataFrame:
    """The ledger's rows of ``name``, printing where they come from (or that there are none)."""
    from workbook import registry, results

    registry.get(name)  # an unknown name: one line listing the experiments
    rows = results.load(name)
    if rows.empty:
        print(f"{name}: no recorded rows yet; run `python -m workbook run {name} --preset full "
              "--record` on a GPU.")
    else:
        label = results.provenance_label(rows[rows["source"] == "recorded"])
        print(f"{name}: {len(rows)} rows, {label}")
    return rows


@takes_rows
def mfu_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Eager vs compiled side by side: step time, TFLOP/s, MFU vs datasheet and roofline."""
    if rows.empty:
        return pd.DataFrame()
    keep = ["step_time", "tokens_per_s", "achieved_tflops", "mfu_datasheet", "mfu_roofline",
            "peak_memory"]
    ok = rows[rows["metric"].isin(keep) & (rows["status"] == "ok")]
    ok = ok.assign(run=run_labels(ok))
    table = ok.pivot_table(index="metric", columns="run", values="value", aggfunc="last")
    order = [r for r in RUN_ORDER if r in table.columns]
    table = table[order + [c for c in table.columns if c not in order]]
    return table.reindex([k for k in keep if k in table.index]).round(2)


RUN_ORDER = [str(RunSpec(m, a, f, w, o, r, p, c)) for m in MODES for a in ATTENTIONS
             for w in WEIGHTS for o in OPTIMIZERS for r in ROPES for p in PROJECTIONS
             for c in LOSSES for f in FUSIONS if not (f == "liger" and c != "torch_ce")]


def run_labels(rows: pd.DataFrame) -> pd.Series:
    """The run (:class:`RunSpec`'s text) of each row; rows recorded before a column existed
    took its default (the field's default in :class:`RunSpec`)."""
    fields = [f.name for f in dataclasses.fields(RunSpec)]
    present = [f for f in fields if f in rows]
    specs = rows[present].astype(object).where(rows[present].notna(), None)
    labels = [str(RunSpec(**{k: v for k, v in zip(present, values, strict=True)
                             if v is not None}))
              for values in specs.itertuples(index=False, name=None)]
    return pd.Series(labels, index=rows.index, dtype=object)


@takes_rows
def kernel_table(rows: pd.DataFrame) -> pd.DataFrame:
    """GPU ms per step by kernel family (rows), per run (columns), with the step time."""
    if rows.empty or not rows["metric"].astype(str).str.startswith("kernel_ms_").any():
        return pd.DataFrame()
    ok = rows[(rows["status"] == "ok") & (rows["metric"].astype(str).str.startswith("kernel_ms_")
                                          | (rows["metric"] == "step_time"))]
    ok = ok.assign(run=run_labels(ok),
                   part=ok["metric"].astype(str).str.replace("kernel_ms_", "", regex=False))
    table = ok.pivot_table(index="part", columns="run", values="value", aggfunc="last")
    table = table[[r for r in RUN_ORDER if r in table.columns]]
    kernels = table.drop(index="step_time", errors="ignore")
    table.loc["kernels total"] = kernels.sum()
    if "step_time" in table.index:
        table.loc["GPU idle (step - kernels)"] = table.loc["step_time"] - table.loc["kernels total"]
    return table.round(2)


@takes_rows
def sweep_figure(rows: pd.DataFrame):
    """Achieved TFLOP/s vs model size, with the datasheet and measured-roofline peaks."""
    from workbook import plots

    ok = rows[rows["status"] == "ok"] if not rows.empty else rows
    achieved = ok[ok["metric"] == "achieved_tflops"].assign(what="achieved")
    peaks = ok[ok["metric"].isin(["peak_datasheet", "peak_roofline"])]
    peaks = peaks.assign(what=peaks["metric"].str.replace("peak_", "peak: "))
    both = pd.concat([achieved, peaks], ignore_index=True)
    return plots.compare(both, x="n_params", group="what", log_x=True,
                         title="Training-step FLOP/s grows with model size (eager, bf16)",
                         x_title="matmul parameters N", y_title="TFLOP/s")


def calculator():
    """The training-time calculator: parameters, tokens, GPU, count, utilisation -> time."""
    import numpy as np

    from workbook import plots, widgets

    gpus = ["A100", "H100", "H200", "L4", "T4"]
    controls = {
        "n_params": widgets.slider("parameters", 1e8, 2e12, 0.01, 175e9, log=True),
        "n_tokens": widgets.slider("tokens", 1e9, 1e14, 0.01, 300e9, log=True),
        "gpu": widgets.dropdown("GPU", gpus, "A100"),
        "n_gpus": widgets.slider("GPUs", 1, 1e5, 0.01, 10_000, log=True),
        "utilization": widgets.slider("MFU", 0.05, 1.0, 0.01, 0.5),
    }
    fig = plots.figure("Training time vs utilisation (6·N·D / (peak × GPUs × MFU))",
                       "model FLOPs utilisation (MFU)", "days", log_y=True)
    fig.add_scatter(name="this run", mode="lines")
    fig.add_scatter(name="chosen MFU", mode="markers", marker={"size": 12})

    def draw(fig, n_params, n_tokens, gpu, n_gpus, utilization) -> str:
        n_gpus = int(round(n_gpus))
        grid = np.linspace(0.05, 1.0, 96)
        dtype = training_dtype(gpu)
        days = [training_time(n_params, n_tokens, gpu=gpu, n_gpus=n_gpus,
                              utilization=float(u), dtype=dtype)["days"] for u in grid]
        t = training_time(n_params, n_tokens, gpu=gpu, n_gpus=n_gpus, utilization=utilization,
                          dtype=dtype)
        fig.data[0].x, fig.data[0].y = grid, days
        fig.data[1].x, fig.data[1].y = [utilization], [t["days"]]
        return (f"C = 6·N·D = {t['flops']:.3g} FLOPs on {n_gpus:,} × {gpu} "
                f"({gpu_peak_tflops(gpu, dtype):g} TFLOP/s {dtype} dense) at {utilization:.0%} "
                f"MFU: "
                f"{t['seconds']:,.0f} s = {t['hours']:,.1f} h = {t['days']:,.2f} days, "
                f"{t['gpu_hours']:,.0f} GPU-hours")

    return widgets.Explorer(controls, draw, fig)


@takes_rows
def claims(mfu_rows: pd.DataFrame, counted: pd.DataFrame) -> pd.DataFrame:
    """The lecture's and the issue's claims, checked against this notebook's numbers; every
    verdict computed by :func:`workbook.claims.verdict`."""
    from workbook.claims import Claim, claims_table
    from workbook.hardware import datasheet
    from workbook.results import where_label

    ex = lecture_examples().set_index("run")
    gpt3, llama = ex.loc["GPT-3 175B"], ex.loc["Llama 3 405B"]
    h100 = datasheet("H100").tflops
    total = counted.set_index("part").loc["total", "counted / predicted"]
    out = [
        Claim("GPT-3: 6·N·D ≈ 3.15e23 FLOPs", "lecture", 3.15e23, float(gpt3["flops"]), "FLOPs",
              "6·N·D with N, D as published", rel_tol=0.02),
        Claim("GPT-3 on 10,000 A100 at 50 % ≈ 2.3 days (no restarts, no communication)",
              "lecture", 2.3, float(gpt3["days"]), "days", "training_time()", rel_tol=0.05),
        Claim("Llama 3 405B: 6·N·D ≈ 3.6e25 FLOPs", "lecture", 3.6e25, float(llama["flops"]),
              "FLOPs", "6·N·D with N, D as published", rel_tol=0.05),
        # The lecture's 1,979 is the 2:4-sparse figure; the datasheet's dense peak is half.
        Claim("H100 BF16 = 1,979 TFLOP/s (dense)", "lecture", 1979.0, float(h100["bf16"]),
              "TFLOP/s", "NVIDIA datasheet, dense", rel_tol=0.05),
        Claim("6·N·D (+ attention) is the FLOPs of a step (counted / predicted)",
              "Kaplan 2020, PaLM", 1.0, float(total), "×", "FlopCounterMode, this machine",
              rel_tol=0.05),
    ]
    table = mfu_table(mfu_rows)
    compiled = [c for c in table.columns if not str(c).startswith("eager")]
    mfu_c = float("nan")
    if compiled and "eager:sdpa" in table.columns and "mfu_datasheet" in table.index:
        mfu = table.loc["mfu_datasheet"]
        mfu_c = float(mfu[compiled].max())
    where = where_label(mfu_rows)
    out.append(Claim("MFU ≥ 40 % of the bf16 dense peak at nanoGPT's shape (compiled)",
                     "issue (nanoGPT: 38 %)", 40.0, mfu_c, "%", where, kind="at_least"))
    return claims_table(out)

"""QLoRA's memory, by formula and by building the model: what full fine-tuning, LoRA and QLoRA
keep on the GPU for a published Llama shape.

:func:`predict_vram` itemises the bytes (weights, adapters, gradients, optimizer,
activations); :func:`measure_vram` builds the model (random weights: bytes do not depend on
values), quantises it to NF4 with bitsandbytes, adds PEFT adapters, takes two training steps
and reads the allocator between them. It trains two explicit steps, not a loop: reading memory
between ``backward``, ``step`` and ``zero_grad`` is the measurement.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_range, check_values
from workbook.hardware import torch_device
from workbook.lora import SHAPES, TARGET_GROUPS, llama_config, shape
from workbook.qlora.nf4 import bits_per_param, bnb_functional, state_bytes

# What a VRAM table or dropdown offers: the papers' models. "tiny" is for CPU tests; its
# VRAM rounds to 0.0 GB and would only look like a bug.
VRAM_SIZES: tuple[str, ...] = tuple(name for name in SHAPES if name != "tiny")
METHODS: tuple[str, ...] = ("full", "lora", "qlora")
COMPONENTS: tuple[str, ...] = ("weights", "adapters", "gradients", "optimizer", "activations")


def predict_vram(size: str, method: str, rank: int = 64, batch_size: int = 1,
                 seq_len: int = 512) -> dict[str, float]:
    """Bytes per component, by formula. Gradient checkpointing on, bf16 everywhere, fp32 Adam.

    * full: bf16 weights (2 B) + bf16 gradients (2 B) + fp32 Adam m and v (8 B) = 12 B/param,
      the QLoRA paper's accounting of 16-bit full fine-tuning;
    * lora: bf16 frozen weights; adapters carry 2 + 2 + 8 = 12 B per adapter parameter;
    * qlora: projections at :func:`bits_per_param` (NF4 + double quantisation), embeddings,
      LM head and norms stay bf16; adapters as LoRA.

    Activations: each layer's bf16 input is kept (checkpointing), one layer is recomputed
    during backward, and the logits pass through fp32 for the loss (about 16 B per logit:
    bf16 logits, fp32 copy, log-softmax, fp32 and bf16 gradients). QLoRA also holds one
    dequantised bf16 weight at a time.
    """
    s = shape(size)
    check_choice("method", method, METHODS)
    check_range("rank", rank, 1, 4096)
    check_range("batch_size", batch_size, 1, 4096)
    check_range("seq_len", seq_len, 1, 1_048_576)
    n, n_adapt = s.n_params, (0 if method == "full" else s.n_lora(rank))
    tokens = batch_size * seq_len
    if method == "qlora":
        weights = s.n_linear * bits_per_param() / 8 + 2 * (n - s.n_linear)
    else:
        weights = 2 * n
    trained = n if method == "full" else n_adapt
    per_layer = tokens * (2 * (10 * s.d_model + 4 * s.d_ff) + 16 * s.d_model)
    activations = (s.n_layers * tokens * s.d_model * 2 + per_layer
                   + 16 * tokens * s.vocab_size)
    if method == "qlora":
        activations += 2 * s.d_model * s.d_ff
    return {"weights": float(weights), "adapters": 2.0 * n_adapt,
            "gradients": 2.0 * trained, "optimizer": 8.0 * trained,
            "activations": float(activations)}


def predicted_rows(sizes: Sequence[str], methods: Sequence[str] = METHODS, rank: int = 64,
                   batch_size: int = 1, seq_len: int = 512) -> pd.DataFrame:
    """Tidy predicted rows: one per (size, method, component) plus the total ``peak``."""
    check_values("sizes", sizes)
    check_values("methods", methods)
    rows = []
    for size in sizes:
        s = shape(size)
        for method in methods:
            parts = predict_vram(size, method, rank, batch_size, seq_len)
            base = {"size": size, "n_params": s.n_params, "method": method, "rank": rank,
                    "batch_size": batch_size, "seq_len": seq_len, "unit": "GB",
                    "source": "predicted"}
            for comp, value in parts.items():
                rows.append({**base, "metric": comp, "value": value / 1e9})
            rows.append({**base, "metric": "peak", "value": sum(parts.values()) / 1e9})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------- the optimiser


class Fp32Adam(torch.optim.Optimizer):
    """Adam with fp32 moments whatever the parameter dtype (here: bf16 parameters).

    ``torch.optim.Adam`` keeps its moments in the parameter's dtype; the QLoRA paper's
    accounting (and mixed-precision practice) keeps them in fp32. The update runs in chunks of
    ``chunk`` elements so its fp32 temporaries stay small even for a 131M-entry embedding.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, chunk: int = 2**24) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.chunk = chunk

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, dtype=torch.float32)
                    state["v"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                t = state["step"]
                bc1, bc2 = 1 - b1**t, 1 - b2**t
                parts = (p.view(-1), p.grad.view(-1), state["m"].view(-1), state["v"].view(-1))
                chunks = (x.split(self.chunk) for x in parts)
                for pc, grad_c, mc, vc in zip(*chunks, strict=True):
                    g = grad_c.float()
                    mc.mul_(b1).add_(g, alpha=1 - b1)
                    vc.mul_(b2).addcmul_(g, g, value=1 - b2)
                    denom = (vc / bc2).sqrt_().add_(group["eps"])
                    pc.add_((mc / denom).mul_(-group["lr"] / bc1).to(pc.dtype))
        return None


# ------------------------------------------------------------------------- building models


def check_4bit_device(device: torch.device) -> None:
    """bitsandbytes 4-bit runs on CUDA (and, since 0.45, on CPUs); say so for anything else."""
    allowed = ("cuda", "cpu")
    if device.type not in allowed:
        raise WorkbookError(f"4-bit quantisation is not supported on {device.type!r} by "
                            f"bitsandbytes here; allowed devices: {', '.join(allowed)}")
    bnb_functional()


def quantize_linears(model: torch.nn.Module, compute_dtype: torch.dtype,
                     double_quant: bool = True) -> int:
    """Replace every projection inside the decoder layers by a bitsandbytes NF4 ``Linear4bit``.

    Layer by layer, so the bf16 copy of one matrix at a time is all that is ever duplicated.
    Embeddings and the LM head stay in 16 bit, as in QLoRA. Returns the number replaced.
    """
    import bitsandbytes as bnb

    device = next(model.parameters()).device
    check_4bit_device(device)
    replaced = 0
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if not isinstance(child, torch.nn.Linear):
                    continue
                new = bnb.nn.Linear4bit(child.in_features, child.out_features,
                                        bias=child.bias is not None, compute_dtype=compute_dtype,
                                        compress_statistics=double_quant, quant_type="nf4",
                                        device="meta")
                new.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False,
                                               compress_statistics=double_quant,
                                               quant_type="nf4").to(device)
                if child.bias is not None:
                    new.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, new)
                del child
                replaced += 1
    return replaced


def build_llama(size: str, device: torch.device, dtype: torch.dtype, seed: int):
    """A randomly initialised ``LlamaForCausalLM`` of a published shape, built on ``device``.

    Random weights are fine for memory: bytes do not depend on values. Built directly on the
    device in ``dtype`` (no fp32 CPU copy), so a 7B model appears in seconds.
    """
    from transformers import LlamaForCausalLM

    config = llama_config(size)
    config.max_position_embeddings, config.use_cache = 4096, False
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)       # a fresh child process; restored below anyway
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    return model


def add_adapters(model: torch.nn.Module, rank: int, dtype: torch.dtype):
    """PEFT LoRA on all seven projections (as QLoRA does), adapters kept in ``dtype``."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=16, lora_dropout=0.0,
                        target_modules=list(TARGET_GROUPS["all"]))
    model = get_peft_model(model, config, autocast_adapter_dtype=False)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(dtype)
    return model


# ---------------------------------------------------------------------- measuring memory


def state_tensors_bytes(model: torch.nn.Module) -> int:
    """Bytes of bitsandbytes quantisation constants, which live outside ``parameters()``."""
    total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        if state is not None:
            total += state_bytes(state)
    return total


def _accounted_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """On a CPU there is no allocator counter: add up the stored tensors instead."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()
                if p.grad is not None)
    opt = 0
    if optimizer is not None:
        opt = sum(v.numel() * v.element_size() for st in optimizer.state.values()
                  for v in st.values() if isinstance(v, torch.Tensor))
    return {"params": params + state_tensors_bytes(model), "grads": grads, "opt": opt}


def _allocated(device: torch.device, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer | None = None) -> int:
    if device.type == "cuda":
        gc.collect()
        torch.cuda.synchronize(device)
        return int(torch.cuda.memory_allocated(device))
    return sum(_accounted_bytes(model, optimizer).values())


def _train_step(model, optimizer, ids: torch.Tensor) -> float:
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def measure_vram(size: str, method: str, rank: int = 64, batch_size: int = 1,
                 seq_len: int = 512, seed: int = 0) -> pd.DataFrame:
    """Train two steps of one method on one model size and itemise the memory. Fresh process!

    weights: allocated after the model is built (and quantised); adapters: added by PEFT;
    gradients and optimizer: allocated by the first step (before/after ``zero_grad``);
    activations: the second step's peak minus all of the above (activations plus temporaries).
    On a CPU the stored tensors are added up instead and activations are not measured.
    """
    check_choice("method", method, METHODS)
    s = shape(size)
    device = torch_device()
    dtype = torch.bfloat16
    if method == "qlora":
        check_4bit_device(device)
    model = build_llama(size, device, dtype, seed)
    if method == "qlora":
        quantize_linears(model, compute_dtype=dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    model.requires_grad_(method == "full")
    weights = _allocated(device, model)
    if method != "full":
        model = add_adapters(model, rank, dtype)
    adapters = _allocated(device, model) - weights
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = Fp32Adam(trainable, lr=1e-5)
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = torch.randint(0, s.vocab_size, (batch_size, seq_len), device=device, generator=gen)

    _train_step(model, optimizer, ids)
    with_grads = _allocated(device, model, optimizer)
    optimizer.zero_grad(set_to_none=True)
    without_grads = _allocated(device, model, optimizer)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    _train_step(model, optimizer, ids)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    step_s = time.perf_counter() - t0
    measured = {"weights": weights, "adapters": adapters,
                "gradients": with_grads - without_grads,
                "optimizer": without_grads - weights - adapters}
    base = {"size": size, "n_params": s.n_params, "method": method, "rank": rank,
            "batch_size": batch_size, "seq_len": seq_len, "source": "measured"}
    rows = [{**base, "metric": k, "value": v / 1e9, "unit": "GB"} for k, v in measured.items()]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        rows.append({**base, "metric": "activations", "value": (peak - with_grads) / 1e9,
                     "unit": "GB"})
        rows.append({**base, "metric": "peak", "value": peak / 1e9, "unit": "GB"})
        rows.append({**base, "metric": "reserved", "unit": "GB",
                     "value": torch.cuda.max_memory_reserved(device) / 1e9})
    else:
        rows.append({**base, "metric": "peak", "value": with_grads / 1e9, "unit": "GB"})
    rows.append({**base, "metric": "step_time", "value": step_s * 1e3, "unit": "ms"})
    rows.append({**base, "metric": "trainable_params", "value": float(sum(
        p.numel() for p in trainable)), "unit": "params"})
    return pd.DataFrame(rows)

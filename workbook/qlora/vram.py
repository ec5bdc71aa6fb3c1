"""QLoRA's memory, by formula and by building the model: what full fine-tuning, LoRA and QLoRA
keep on the GPU for a published Llama shape.

:func:`predict_vram` itemises the bytes (weights, adapters, gradients, optimizer,
activations); :func:`measure_vram` builds the model (random weights: bytes do not depend on
values), quantises it to NF4 with bitsandbytes, adds PEFT adapters, takes two training steps
and reads the allocator between them. It trains two explicit steps, not a loop: reading memory
between ``backward``, ``step`` and ``zero_grad`` is the measurement. Each step is the
workbook's one update, ``workbook.training.backward_step``, with the clearing left to the probe.
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
from workbook.training import backward_step

# What a VRAM table or dropdown offers: the papers' models. "tiny" is for CPU tests; its
# VRAM rounds to 0.0 GB and would only look like a bug.
VRAM_SIZES: tuple[str, ...] = tuple(name for name in SHAPES if name != "tiny")
METHODS: tuple[str, ...] = ("full", "lora", "qlora")
COMPONENTS: tuple[str, ...] = ("weights", "adapters", "gradients", "optimizer", "activations")
# adamw: fp32 moments (:class:`Fp32Adam`); the others are bitsandbytes': 8-bit blockwise
# moments, and "paged" moments in CUDA managed memory (outside PyTorch's allocator, evicted to
# CPU RAM by the driver when the GPU runs out).
OPTIMIZERS: tuple[str, ...] = ("adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit")
BNB_MIN_8BIT = 4096        # bitsandbytes keeps smaller tensors' moments in fp32
BNB_MIN_PAGED = 100_000    # ... and pages only tensors of at least this many elements
BNB_BLOCK = 256            # 8-bit moments: one fp32 absmax per 256 values, per moment


def optimizer_state_bytes(numels: Sequence[int], optimizer: str) -> dict[str, float]:
    """Adam's two moments for tensors of ``numels`` elements, by bitsandbytes' rules:
    ``device`` bytes (PyTorch's allocator) and ``paged`` bytes (CUDA managed memory).

    fp32: 8 B per element. 8-bit (tensors of at least 4096 elements): 2 B per element plus two
    fp32 absmax per block of 256, and once the two 256-entry fp32 code tables (qmaps). Paged
    optimizers page a tensor's moments only from 100,000 elements on; the absmax stay on the
    device.
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    device = paged = 0.0
    if optimizer.endswith("8bit") and any(n >= BNB_MIN_8BIT for n in numels):
        device += 2 * 256 * 4
    for n in numels:
        check_range("numel", n, 1, 10**13)
        eight = optimizer.endswith("8bit") and n >= BNB_MIN_8BIT
        moments = 2.0 * n if eight else 8.0 * n
        absmax = 8.0 * -(-n // BNB_BLOCK) if eight else 0.0
        if optimizer.startswith("paged") and n >= BNB_MIN_PAGED:
            paged += moments
            device += absmax
        else:
            device += moments + absmax
    return {"device": device, "paged": paged}


def trainable_numels(size: str, method: str, rank: int = 64) -> list[int]:
    """Element counts of the tensors a method trains: every weight (full), else LoRA's A
    (rank x in) and B (out x rank) of all seven projections in every layer."""
    s = shape(size)
    check_choice("method", method, METHODS)
    if method != "full":
        return [n for i, o in s.linear_shapes().values() for n in (rank * i, o * rank)] \
            * s.n_layers
    per_layer = [i * o for i, o in s.linear_shapes().values()] + [s.d_model, s.d_model]
    return per_layer * s.n_layers + [s.d_model] + [s.vocab_size * s.d_model] * 2


def predict_vram(size: str, method: str, rank: int = 64, batch_size: int = 1,
                 seq_len: int = 512, optimizer: str = "adamw") -> dict[str, float]:
    """Bytes per component, by formula. Gradient checkpointing on, bf16 everywhere, fp32 Adam
    (``optimizer``: or bitsandbytes' 8-bit and paged AdamW, :func:`optimizer_state_bytes`).

    ``optimizer`` is what PyTorch's allocator holds of the moments; ``paged`` what sits in
    CUDA managed memory instead (0 unless the optimizer is paged). The allocator's peak is the
    sum of :data:`COMPONENTS`; all values together are every byte.

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
    check_choice("optimizer", optimizer, OPTIMIZERS)
    trained = n if method == "full" else n_adapt
    state = optimizer_state_bytes(trainable_numels(size, method, rank), optimizer)
    per_layer = tokens * (2 * (10 * s.d_model + 4 * s.d_ff) + 16 * s.d_model)
    activations = (s.n_layers * tokens * s.d_model * 2 + per_layer
                   + 16 * tokens * s.vocab_size)
    if method == "qlora":
        activations += 2 * s.d_model * s.d_ff
    return {"weights": float(weights), "adapters": 2.0 * n_adapt,
            "gradients": 2.0 * trained, "optimizer": state["device"],
            "activations": float(activations), "paged": state["paged"]}


def predicted_rows(sizes: Sequence[str], methods: Sequence[str] = METHODS, rank: int = 64,
                   batch_size: int = 1, seq_len: int = 512,
                   optimizer: str = "adamw") -> pd.DataFrame:
    """Tidy predicted rows: one per (size, method, component) plus the allocator's ``peak``
    (the sum of :data:`COMPONENTS`; ``paged`` bytes lie outside it)."""
    check_values("sizes", sizes)
    check_values("methods", methods)
    rows = []
    for size in sizes:
        s = shape(size)
        for method in methods:
            parts = predict_vram(size, method, rank, batch_size, seq_len, optimizer)
            base = {"size": size, "n_params": s.n_params, "method": method, "rank": rank,
                    "batch_size": batch_size, "seq_len": seq_len, "optimizer": optimizer,
                    "unit": "GB", "source": "predicted"}
            for comp, value in parts.items():
                rows.append({**base, "metric": comp, "value": value / 1e9})
            rows.append({**base, "metric": "peak",
                         "value": sum(parts[c] for c in COMPONENTS) / 1e9})
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


def make_optimizer(name: str, params: list, lr: float = 1e-5) -> torch.optim.Optimizer:
    """The optimizer ``name`` (:data:`OPTIMIZERS`) over ``params``: :class:`Fp32Adam`, or
    bitsandbytes' ``AdamW8bit`` / ``PagedAdamW`` / ``PagedAdamW8bit`` (no weight decay)."""
    check_choice("optimizer", name, OPTIMIZERS)
    if name == "adamw":
        return Fp32Adam(params, lr=lr)
    import bitsandbytes as bnb

    cls = {"adamw8bit": bnb.optim.AdamW8bit, "paged_adamw": bnb.optim.PagedAdamW,
           "paged_adamw8bit": bnb.optim.PagedAdamW8bit}[name]
    return cls(params, lr=lr, weight_decay=0.0)


def state_split(optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of an optimizer's state tensors: on the allocator (``device``) and paged."""
    out = {"device": 0, "paged": 0}
    seen: set[int] = set()
    for st in optimizer.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor) and id(v) not in seen:
                seen.add(id(v))
                out["paged" if getattr(v, "is_paged", False) else "device"] += \
                    v.numel() * v.element_size()
    return out


def _train_step(model, optimizer, ids: torch.Tensor) -> float:
    loss = model(input_ids=ids, labels=ids).loss
    backward_step(loss, optimizer, zero_grad=False)   # backward, step: the caller clears
    return float(loss.detach())


def measure_vram(size: str, method: str, rank: int = 64, batch_size: int = 1,
                 seq_len: int = 512, seed: int = 0, optimizer: str = "adamw",
                 cap_gb: float = 0.0) -> pd.DataFrame:
    """Train two steps of one method on one model size and itemise the memory.

    weights: allocated after the model is built (and quantised); adapters: added by PEFT;
    gradients and optimizer: allocated by the first step (before/after ``zero_grad``);
    activations: the second step's peak minus all of the above (activations plus temporaries).
    ``optimizer_state`` and ``paged`` count the optimizer's state tensors (paged ones live in
    CUDA managed memory, which the allocator does not see); ``device_used`` is the driver's
    view (``cudaMemGetInfo``), managed pages resident on the GPU included. Every number is
    relative to what was allocated when the call began, so configurations can follow one
    another in one process (:func:`measure_many`). ``cap_gb`` > 0 caps PyTorch's allocator
    (``set_per_process_memory_fraction``), a smaller card for everything but managed memory.
    On a CPU the stored tensors are added up instead and activations are not measured.
    """
    check_choice("method", method, METHODS)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_range("cap_gb", cap_gb, 0.0, 10_000.0)
    s = shape(size)
    device = torch_device()
    dtype = torch.bfloat16
    if method == "qlora":
        check_4bit_device(device)
    cuda = device.type == "cuda"
    if cuda and device.index is None:  # mem_get_info and the cap want an index, not "cuda"
        device = torch.device("cuda", torch.cuda.current_device())
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        start = int(torch.cuda.memory_allocated(device))
        free, total = torch.cuda.mem_get_info(device)
        used0 = total - free
        if cap_gb > 0:
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 1e9 / total), device)
        paged = optimizer_state_bytes(trainable_numels(size, method, rank), optimizer)["paged"]
        if paged > 0.9 * free:
            # Managed memory beyond what the card has free can hang the GPU: not run.
            raise torch.OutOfMemoryError(
                f"paged state {paged / 1e9:.1f} GB > 90 % of the {free / 1e9:.1f} GB free: "
                "not run (managed memory beyond the card's free memory can hang the GPU)")
    else:
        start = 0
    model = build_llama(size, device, dtype, seed)
    if method == "qlora":
        quantize_linears(model, compute_dtype=dtype)
    if cuda:
        torch.cuda.empty_cache()
    model.requires_grad_(method == "full")
    weights = _allocated(device, model) - start
    if method != "full":
        model = add_adapters(model, rank, dtype)
    adapters = _allocated(device, model) - start - weights
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, trainable)
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = torch.randint(0, s.vocab_size, (batch_size, seq_len), device=device, generator=gen)

    _train_step(model, opt, ids)
    with_grads = _allocated(device, model, opt) - start
    opt.zero_grad(set_to_none=True)
    without_grads = _allocated(device, model, opt) - start
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    _train_step(model, opt, ids)
    if cuda:
        torch.cuda.synchronize(device)
    step_s = time.perf_counter() - t0
    split = state_split(opt)
    measured = {"weights": weights, "adapters": adapters,
                "gradients": with_grads - without_grads,
                "optimizer": without_grads - weights - adapters,
                "optimizer_state": split["device"] + split["paged"], "paged": split["paged"]}
    base = {"size": size, "n_params": s.n_params, "method": method, "rank": rank,
            "batch_size": batch_size, "seq_len": seq_len, "optimizer": optimizer,
            "cap_gb": cap_gb, "source": "measured"}
    rows = [{**base, "metric": k, "value": v / 1e9, "unit": "GB"} for k, v in measured.items()]
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - start
        free, total = torch.cuda.mem_get_info(device)
        rows.append({**base, "metric": "activations", "value": (peak - with_grads) / 1e9,
                     "unit": "GB"})
        rows.append({**base, "metric": "peak", "value": peak / 1e9, "unit": "GB"})
        rows.append({**base, "metric": "reserved", "unit": "GB",
                     "value": torch.cuda.max_memory_reserved(device) / 1e9})
        rows.append({**base, "metric": "device_used", "unit": "GB",
                     "value": (total - free - used0) / 1e9})
    else:
        rows.append({**base, "metric": "peak", "value": with_grads / 1e9, "unit": "GB"})
    rows.append({**base, "metric": "step_time", "value": step_s * 1e3, "unit": "ms"})
    rows.append({**base, "metric": "trainable_params", "value": float(sum(
        p.numel() for p in trainable)), "unit": "params"})
    del model, opt, trainable, ids
    return pd.DataFrame(rows).assign(status="ok")


def measure_many(configs: list[dict]) -> pd.DataFrame:
    """:func:`measure_vram` for each of ``configs`` (its keyword arguments) in this one process:
    the model, optimizer and cached blocks of one are freed and the allocator's peak is reset
    before the next, and every number is relative to what was allocated at its start. An
    out-of-memory configuration becomes an ``oom`` row and the next one runs; a cap is lifted
    after its configuration. Paged optimizers: bitsandbytes never frees its managed memory, so
    in one process a paged configuration's ``device_used`` counts from what the earlier ones
    left resident (its allocator numbers and state bytes are its own): run them apart from the
    rest."""
    frames = []
    for kw in configs:
        try:
            frames.append(measure_vram(**kw))
        except torch.OutOfMemoryError as exc:
            frames.append(failure_row(kw, "oom", str(exc)))
        peak = frames[-1].query("metric == 'peak'")
        print(f"qlora_vram {kw['size']} {kw['method']} {kw.get('optimizer', 'adamw')} cap "
              f"{kw.get('cap_gb', 0.0)}: peak {peak['value'].round(2).tolist()} GB "
              f"{peak['status'].tolist()}", flush=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(1.0)   # a cap ends with its config
            torch.cuda.empty_cache()
    return pd.concat(frames, ignore_index=True)


def failure_row(kw: dict, status: str, error: str) -> pd.DataFrame:
    """One configuration that did not run (``oom``, ``error``), as a NaN ``peak`` row."""
    size = kw["size"]
    return pd.DataFrame([{"size": size, "n_params": shape(size).n_params,
                          "method": kw["method"], "rank": kw.get("rank", 64),
                          "batch_size": kw.get("batch_size", 1),
                          "seq_len": kw.get("seq_len", 512),
                          "optimizer": kw.get("optimizer", "adamw"),
                          "cap_gb": kw.get("cap_gb", 0.0), "metric": "peak",
                          "value": float("nan"), "unit": "GB", "source": "measured",
                          "status": status, "error": error[:200]}])

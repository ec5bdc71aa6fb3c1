"""QLoRA: a 4-bit NormalFloat (NF4) frozen base with bf16 LoRA adapters, and what it saves.

Three ideas, each beside the library that does it for real (bitsandbytes, PEFT):

* **NF4** - 16 code values placed at quantiles of N(0, 1), so that normally distributed weights
  fill the 16 bins about equally. Built from scratch in :func:`nf4_codebook` and checked equal
  to bitsandbytes' table; :func:`quantize_blockwise` is the blockwise-absmax quantiser.
* **Double quantisation** - the per-block fp32 absmax constants are themselves quantised to
  8 bits: :func:`bits_per_param` computes the cost, :func:`stored_bits_per_param` measures it
  from the tensors bitsandbytes actually stores.
* **VRAM** - :func:`predict_vram` (a formula, itemised) and :func:`measure_vram` (one method
  on one model size, in a fresh process on the GPU) for full fine-tuning, LoRA and QLoRA.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_range, check_values, takes_rows
from workbook.registry import Experiment

# ------------------------------------------------------------------------------ NF4 codebook


def nf4_offset(n_negative: int = 8, n_positive: int = 9) -> float:
    """The outermost quantile used for NF4: halfway between 1 - 1/(2*15) and 1 - 1/(2*16).

    ``norm.ppf(1)`` is infinite, so the extreme codes sit at a quantile just below 1; QLoRA
    takes the mean of the two natural choices for a 15- and a 16-value grid (0.9677...).
    """
    n_total = n_negative + n_positive - 1          # 16 codes, zero shared by both halves
    return 0.5 * ((1 - 1 / (2 * (n_total - 1))) + (1 - 1 / (2 * n_total)))


def nf4_codebook(offset: float | None = None) -> torch.Tensor:
    """The 16 NF4 code values in [-1, 1], sorted, built from normal quantiles.

    Asymmetric on purpose: 8 positive and 7 negative values plus an exact zero (a symmetric
    grid of 16 values would have no zero, and padding and ReLU-like weights need one).
    Positive half: quantiles at 9 evenly spaced probabilities from ``offset`` down to 0.5
    (the last one, 0.5, is the zero); negative half: 8 from ``offset`` to 0.5, negated.
    Both halves are scaled so the largest magnitude is exactly 1.
    """
    p = nf4_offset() if offset is None else offset
    check_range("offset", p, 0.5001, 0.9999)
    ppf = torch.special.ndtri                       # the inverse CDF of N(0, 1)
    positive = ppf(torch.linspace(p, 0.5, 9, dtype=torch.float64)[:-1])   # 8 values > 0
    negative = -ppf(torch.linspace(p, 0.5, 8, dtype=torch.float64)[:-1])  # 7 values < 0
    values = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive])
    values = values.sort().values
    return (values / values.max()).float()


def _bnb_functional():
    try:
        import bitsandbytes.functional as bnb_f
    except ImportError as exc:
        raise WorkbookError("4-bit quantisation needs bitsandbytes (pip install bitsandbytes); "
                            f"it failed to import: {exc}") from None
    return bnb_f


def bnb_codebook(kind: str = "nf4") -> torch.Tensor:
    """bitsandbytes' own 16-value table for ``nf4`` or ``fp4`` (sorted)."""
    check_choice("kind", kind, ("nf4", "fp4"))
    table = _bnb_functional().get_4bit_type(kind, device="cpu").float()
    return table.sort().values


def int_codebook(bits: int) -> torch.Tensor:
    """Uniform symmetric absmax grid: k / (2^(bits-1) - 1) for |k| <= 2^(bits-1) - 1.

    INT4 uses 15 of its 16 codes (-8 is left out to keep the grid symmetric), INT8 255 of 256.
    """
    check_range("bits", bits, 2, 8)
    top = 2 ** (bits - 1) - 1
    return torch.arange(-top, top + 1, dtype=torch.float32) / top


FORMATS: tuple[str, ...] = ("nf4", "fp4", "int4", "int8")


def codebook(fmt: str) -> torch.Tensor:
    """The code values of a format: NF4 built here, FP4 from bitsandbytes, INT4/INT8 uniform."""
    check_choice("format", fmt, FORMATS)
    if fmt == "nf4":
        return nf4_codebook()
    if fmt == "fp4":
        return bnb_codebook("fp4")
    return int_codebook(int(fmt.removeprefix("int")))


# ------------------------------------------------------------------ blockwise absmax quantiser


def quantize_blockwise(x: torch.Tensor, code: torch.Tensor,
                       blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantisation to the nearest code value.

    Returns ``(index, absmax)``: index (n_blocks, blocksize) uint8 into ``code``, absmax
    (n_blocks,) fp32. Each block is divided by its largest magnitude, so one outlier only
    spoils the 63 neighbours in its block, not the whole tensor.
    """
    check_range("blocksize", blocksize, 16, 4096)
    flat = x.detach().float().reshape(-1)
    if flat.numel() % blocksize:
        raise WorkbookError(f"{flat.numel()} values do not split into blocks of {blocksize}; "
                            "allowed: a multiple of the blocksize")
    blocks = flat.view(-1, blocksize)                                # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    normed = blocks / absmax[:, None]                                # in [-1, 1]
    # Nearest code by midpoints: searchsorted on the boundaries between sorted codes.
    code = code.float().sort().values
    bounds = (code[1:] + code[:-1]) / 2
    index = torch.searchsorted(bounds, normed.contiguous(), right=False)
    return index.to(torch.uint8), absmax


def dequantize_blockwise(index: torch.Tensor, absmax: torch.Tensor,
                         code: torch.Tensor) -> torch.Tensor:
    """Code value times block absmax; shape (n_blocks, blocksize), fp32."""
    return code.float().sort().values[index.long()] * absmax[:, None]


def roundtrip(x: torch.Tensor, fmt: str, blocksize: int = 64) -> torch.Tensor:
    """``x`` quantised to ``fmt`` and back, in x's shape (fp32)."""
    code = codebook(fmt)
    index, absmax = quantize_blockwise(x, code, blocksize)
    return dequantize_blockwise(index, absmax, code).reshape(x.shape)


def bnb_roundtrip(x: torch.Tensor, fmt: str = "nf4", blocksize: int = 64) -> torch.Tensor:
    """The same round trip through bitsandbytes' ``quantize_4bit``/``dequantize_4bit``."""
    check_choice("format", fmt, ("nf4", "fp4"))
    bnb_f = _bnb_functional()
    packed, state = bnb_f.quantize_4bit(x.detach().float().contiguous(), blocksize=blocksize,
                                        quant_type=fmt)
    return bnb_f.dequantize_4bit(packed, state).float().reshape(x.shape)


def quantization_error(weights: Mapping[str, torch.Tensor], blocksize: int = 64,
                       formats: Sequence[str] = FORMATS) -> pd.DataFrame:
    """Error of each format on each weight matrix: relative RMSE and mean |error|.

    Relative RMSE is RMSE / std(w): 0.1 means the rounding noise is a tenth of the weights'
    own spread. Rows: tensor, format, blocksize, metric, value, unit, source.
    """
    check_values("formats", formats)
    for fmt in formats:
        check_choice("format", fmt, FORMATS)
    rows = []
    for name, w in weights.items():
        w = w.detach().float()
        std = w.std().item()
        for fmt in formats:
            err = roundtrip(w, fmt, blocksize) - w
            rmse = err.pow(2).mean().sqrt().item()
            common = {"tensor": name, "format": fmt, "blocksize": blocksize,
                      "n_params": w.numel(), "source": "measured"}
            rows.append({**common, "metric": "rel_rmse", "value": rmse / std, "unit": "1"})
            rows.append({**common, "metric": "mean_abs_err", "value": err.abs().mean().item(),
                         "unit": "1"})
    return pd.DataFrame(rows)


def bin_occupancy(x: torch.Tensor, fmt: str = "nf4", blocksize: int = 64) -> pd.DataFrame:
    """How often each of the 16 codes is used: NF4 spreads normal weights evenly, INT4 not."""
    code = codebook(fmt)
    index, _ = quantize_blockwise(x, code, blocksize)
    counts = torch.bincount(index.reshape(-1).long(), minlength=code.numel()).float()
    return pd.DataFrame({"format": fmt, "code": code.tolist(),
                         "share": (counts / counts.sum()).tolist()})


# ------------------------------------------------------------------- double quantisation


def bits_per_param(blocksize: int = 64, double_quant: bool = True, blocksize2: int = 256,
                   code_bits: int = 4, const_bits: int = 32, const2_bits: int = 8) -> float:
    """Storage per weight: the 4-bit code plus its share of the block constants.

    Without double quantisation each block of 64 carries an fp32 absmax: 4 + 32/64 = 4.5 bits.
    With it the absmax is stored in 8 bits and every 256 of those share one fp32 constant:
    4 + 8/64 + 32/(64*256) = 4.127 bits.
    """
    check_range("blocksize", blocksize, 16, 4096)
    check_range("blocksize2", blocksize2, 1, 65536)
    check_range("code_bits", code_bits, 1, 32)
    check_range("const_bits", const_bits, 1, 64)
    check_range("const2_bits", const2_bits, 1, 64)
    check_choice("double_quant", double_quant, (False, True))
    if not double_quant:
        return code_bits + const_bits / blocksize
    return code_bits + const2_bits / blocksize + const_bits / (blocksize * blocksize2)


def _state_bytes(state) -> int:
    """Bytes of every tensor a bitsandbytes QuantState holds (absmax, code, nested state)."""
    total = 0
    for attr in ("absmax", "code", "offset"):
        value = getattr(state, attr, None)
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
    nested = getattr(state, "state2", None)
    if getattr(state, "nested", False) and nested is not None:
        total += _state_bytes(nested)
    return total


BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # what quantize_4bit accepts


def stored_bits_per_param(shape: tuple[int, int] = (4096, 4096), blocksize: int = 64,
                          double_quant: bool = True, seed: int = 0) -> pd.DataFrame:
    """Quantise a weight with bitsandbytes and count the bytes it really stores, per weight.

    Measured = 8 * (packed codes + absmax + nested absmax + code tables + offset) / n_params;
    the code tables are a fixed ~1 KiB, so a large matrix sits just above the formula.
    """
    check_choice("blocksize", blocksize, BNB_BLOCKSIZES)
    check_choice("double_quant", double_quant, (False, True))
    check_range("seed", seed, 0, 2**31 - 1)
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise WorkbookError(f"shape={shape!r} is not allowed; allowed: (rows, columns)")
    check_range("rows", shape[0], 1, 65536)
    check_range("columns", shape[1], 1, 65536)
    bnb_f = _bnb_functional()
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen) * 0.02
    packed, state = bnb_f.quantize_4bit(w, blocksize=blocksize, quant_type="nf4",
                                        compress_statistics=double_quant)
    n = w.numel()
    stored = packed.numel() * packed.element_size() + _state_bytes(state)
    base = {"shape": f"{shape[0]}x{shape[1]}", "blocksize": blocksize,
            "double_quant": double_quant, "metric": "bits_per_param", "unit": "bit"}
    return pd.DataFrame([
        {**base, "value": 8 * stored / n, "source": "measured"},
        {**base, "value": bits_per_param(blocksize, double_quant), "source": "predicted"},
    ])


# ------------------------------------------------------------------ model shapes and formula


@dataclass(frozen=True)
class LlamaShape:
    """A Llama-architecture size: published shapes, built here with random weights."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab_size: int
    like: str                       # whose shape this is

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each projection in one decoder layer."""
        h, q, kv, f = self.d_model, self.n_heads * self.head_dim, \
            self.n_kv_heads * self.head_dim, self.d_ff
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}

    @property
    def n_linear(self) -> int:
        """Parameters in the decoder layers' projections: what QLoRA quantises."""
        return self.n_layers * sum(i * o for i, o in self.linear_shapes().values())

    @property
    def n_params(self) -> int:
        """All parameters: projections, norms, untied embedding and LM head."""
        norms = self.n_layers * 2 * self.d_model + self.d_model
        return self.n_linear + norms + 2 * self.vocab_size * self.d_model

    def n_lora(self, rank: int) -> int:
        """LoRA parameters with rank ``rank`` on every projection: r * (in + out) each."""
        return self.n_layers * sum(rank * (i + o) for i, o in self.linear_shapes().values())


SHAPES: dict[str, LlamaShape] = {s.name: s for s in (
    LlamaShape("tiny", 64, 2, 4, 4, 172, 512, "a toy for CPU tests"),
    LlamaShape("1b", 2048, 22, 32, 4, 5632, 32000, "TinyLlama-1.1B"),
    LlamaShape("3b", 3200, 26, 32, 32, 8640, 32000, "OpenLLaMA-3B"),
    LlamaShape("7b", 4096, 32, 32, 32, 11008, 32000, "Llama-2-7B"),
    LlamaShape("13b", 5120, 40, 40, 40, 13824, 32000, "Llama-2-13B"),
    LlamaShape("33b", 6656, 60, 52, 52, 17920, 32000, "LLaMA-33B"),
    LlamaShape("65b", 8192, 80, 64, 64, 22016, 32000, "LLaMA-65B"),
)}
# What a VRAM table or dropdown offers: the papers' models. "tiny" is for CPU tests; its
# VRAM rounds to 0.0 GB and would only look like a bug.
VRAM_SIZES: tuple[str, ...] = tuple(name for name in SHAPES if name != "tiny")
METHODS: tuple[str, ...] = ("full", "lora", "qlora")
COMPONENTS: tuple[str, ...] = ("weights", "adapters", "gradients", "optimizer", "activations")


def shape(name: str) -> LlamaShape:
    check_choice("size", name, SHAPES)
    return SHAPES[name]


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
    _bnb_functional()


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

    from workbook.lora import llama_config

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

    from workbook.lora import TARGET_GROUPS

    config = LoraConfig(r=rank, lora_alpha=16, lora_dropout=0.0,
                        target_modules=list(TARGET_GROUPS["all"]))
    model = get_peft_model(model, config, autocast_adapter_dtype=False)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(dtype)
    return model


# ---------------------------------------------------------------------- measuring memory


def _state_tensors_bytes(model: torch.nn.Module) -> int:
    """Bytes of bitsandbytes quantisation constants, which live outside ``parameters()``."""
    total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        if state is not None:
            total += _state_bytes(state)
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
    return {"params": params + _state_tensors_bytes(model), "grads": grads, "opt": opt}


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
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


# -------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class VramConfig:
    sizes: tuple[str, ...]
    methods: tuple[str, ...] = METHODS
    rank: int = 64
    batch_size: int = 1
    seq_len: int = 512
    timeout_s: int = 240

    def __post_init__(self) -> None:
        for size in self.sizes:
            check_choice("size", size, SHAPES)
        for method in self.methods:
            check_choice("method", method, METHODS)
        check_range("rank", self.rank, 1, 1024)
        check_range("batch_size", self.batch_size, 1, 64)
        check_range("seq_len", self.seq_len, 16, 8192)
        check_range("timeout_s", self.timeout_s, 1, 86_400)


VRAM_PRESETS = {
    "small": VramConfig(sizes=("tiny",), rank=8, seq_len=64, timeout_s=120),
    "full": VramConfig(sizes=("1b", "3b", "7b")),
}


def _failure_rows(size: str, method: str, cfg: VramConfig, failed: pd.DataFrame) -> pd.DataFrame:
    """An OOM or crash of one configuration, as a ``peak`` row with its status."""
    first = failed.iloc[0]
    return pd.DataFrame([{"size": size, "n_params": shape(size).n_params, "method": method,
                          "rank": cfg.rank, "batch_size": cfg.batch_size,
                          "seq_len": cfg.seq_len, "metric": "peak", "value": math.nan,
                          "unit": "GB", "source": "measured", "status": first["status"],
                          "error": str(first.get("error", ""))[:200]}])


def run_vram(cfg: VramConfig, seed: int) -> pd.DataFrame:
    """Each (size, method) in its own fresh process; predictions beside; ratios at the end."""
    from workbook import runner

    frames = [predicted_rows(cfg.sizes, cfg.methods, cfg.rank, cfg.batch_size, cfg.seq_len)]
    env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    on_gpu = torch.cuda.is_available()
    for size in cfg.sizes:
        for method in cfg.methods:
            kwargs = {"size": size, "method": method, "rank": cfg.rank,
                      "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "seed": seed}
            if on_gpu:     # the allocator's peak is clean only in a process of its own
                out = runner.call("workbook.qlora:measure_vram", kwargs,
                                  timeout_s=cfg.timeout_s, env=env)
            else:          # a CPU run adds up tensor sizes: no allocator state to isolate
                out = measure_vram(**kwargs)
            if "status" in out and (out["status"] != "ok").all():
                out = _failure_rows(size, method, cfg, out)
            print(f"qlora_vram {size} {method}: "
                  f"{out.loc[out['metric'] == 'peak', 'value'].tolist()} GB "
                  f"{out.get('status', pd.Series(['ok'])).iloc[0]}", flush=True)
            frames.append(out)
    rows = pd.concat(frames, ignore_index=True)
    rows["rank"] = cfg.rank
    return pd.concat([rows, ratio_rows(rows)], ignore_index=True)


@takes_rows
def ratio_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """peak(full) / peak(method) per size and source: 'how many times less VRAM'."""
    out = []
    peaks = rows[rows["metric"] == "peak"]
    for (size, source), part in peaks.groupby(["size", "source"]):
        by_method = dict(zip(part["method"], part["value"], strict=True))
        full = by_method.get("full", math.nan)
        for method in ("lora", "qlora"):
            if method in by_method:
                ok = bool(full == full and by_method[method] == by_method[method])
                out.append({"size": size, "n_params": part["n_params"].iloc[0],
                            "method": method, "metric": "saving_vs_full",
                            "value": full / by_method[method] if ok else math.nan,
                            "unit": "x", "source": source,
                            "status": "ok" if ok else "oom"})
    return pd.DataFrame(out)


# ------------------------------------------------------------- quality: LoRA vs QLoRA


@dataclass(frozen=True)
class QualityConfig:
    rank: int = 16
    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 32
    seq_len: int = 128
    eval_batches: int = 16
    preset: str | None = "small"     # which base model (the workbook's small one by default)

    def __post_init__(self) -> None:
        check_range("rank", self.rank, 1, 1024)
        check_range("steps", self.steps, 1, 100_000)
        check_range("lr", self.lr, 1e-7, 1.0)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seq_len", self.seq_len, 8, 8192)
        check_range("eval_batches", self.eval_batches, 1, 1000)
        check_choice("preset", self.preset, (None, "small", "full"))


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the stored weights, quantisation constants included."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) + \
        _state_tensors_bytes(model)


def run_quality(cfg: QualityConfig, seed: int) -> pd.DataFrame:
    """LoRA on the full-precision base vs QLoRA on its NF4 copy: same rank, steps, lr, data."""
    import copy

    from workbook.lora import _base, _device, eval_loss, finetune, task_ids, with_lora

    device = _device()
    base = _base(cfg.preset, seed)
    train, held_out = task_ids(base.config.vocab_size)
    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    for method in ("lora", "qlora"):
        frozen = copy.deepcopy(base).to(device=device, dtype=compute)
        if method == "qlora":
            quantize_linears(frozen, compute_dtype=compute)
        common = {"method": method, "rank": cfg.rank, "steps": cfg.steps, "lr": cfg.lr}
        before = eval_loss(frozen, held_out, cfg.batch_size, cfg.seq_len, cfg.eval_batches,
                           seed)
        rows.append({**common, "stage": "before", "metric": "eval_loss", "value": before,
                     "unit": "nats"})
        rows.append({**common, "stage": "before", "metric": "weight_bytes",
                     "value": weight_bytes(frozen), "unit": "B"})
        model = with_lora(frozen, cfg.rank, 2.0 * cfg.rank, "all", seed).to(device)
        stats = finetune(model, train, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                         seq_len=cfg.seq_len, seed=seed)
        after = eval_loss(model, held_out, cfg.batch_size, cfg.seq_len, cfg.eval_batches, seed)
        rows.append({**common, "stage": "after", "metric": "eval_loss", "value": after,
                     "unit": "nats"})
        rows.append({**common, "stage": "after", "metric": "step_time",
                     "value": stats["step_time"], "unit": "ms"})
    frame = pd.DataFrame(rows)
    frame["source"] = "measured"
    return frame


QUALITY_PRESETS = {
    "small": QualityConfig(steps=10, batch_size=4, seq_len=32, eval_batches=2),
    "full": QualityConfig(),
}


EXPERIMENTS = [
    Experiment(
        name="qlora_vram",
        summary="peak VRAM of full FT vs LoRA vs QLoRA (NF4) for 1B/3B/7B Llama shapes",
        notebook="12_qlora",
        run=run_vram,
        presets=VRAM_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=900,
    ),
    Experiment(
        name="qlora_quality",
        summary="LoRA vs QLoRA (NF4 base) on the base model's task, same rank, steps and lr",
        notebook="12_qlora",
        run=run_quality,
        presets=QUALITY_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=300,
    ),
]


@takes_rows
def claims(ratios: pd.DataFrame, quality: pd.DataFrame, bits: pd.DataFrame,
           where: str) -> pd.DataFrame:
    """The QLoRA paper's and the lecture's claims: codebook, stored bits, quality, VRAM.

    ``ratios``: ``qlora_vram`` rows of metric ``saving_vs_full``; ``quality``: ``qlora_quality``
    rows; ``bits``: :func:`stored_bits_per_param` rows. "QLoRA matches LoRA" is judged against
    what fine-tuning gained: the two final losses must agree within a tenth of LoRA's gain (a
    tolerance of 1 % of the loss itself was larger than half that gain).
    """
    from workbook.claims import Claim, claims_table
    from workbook.results import where_label

    nan = float("nan")

    def ratio(size: str, source: str) -> float:
        hit = ratios[(ratios["size"] == size) & (ratios["method"] == "qlora")
                     & (ratios["source"] == source)] if len(ratios) else ratios
        return float(hit["value"].iloc[0]) if len(hit) else nan

    def loss(method: str, stage: str) -> float:
        hit = quality[(quality["method"] == method) & (quality["stage"] == stage)
                      & (quality["metric"] == "eval_loss")] if len(quality) else quality
        return float(hit["value"].iloc[0]) if len(hit) else nan

    same = int(((nf4_codebook() - bnb_codebook("nf4")).abs() < 1e-6).sum())
    stored = bits[(bits["double_quant"]) & (bits["source"] == "measured")]["value"]
    gain = loss("lora", "before") - loss("lora", "after")
    pred65 = sum(predict_vram("65b", "qlora").values()) / 1e9
    return claims_table([
        Claim("NF4 = normal quantiles: codes equal to bitsandbytes' (to 1e-6)", "QLoRA paper",
              16, same, "codes", "this machine", rel_tol=0),
        Claim("double quantisation: 4.127 bits per weight", "QLoRA paper", bits_per_param(),
              float(stored.iloc[0]) if len(stored) else nan, "bits", "stored by bitsandbytes"),
        Claim("QLoRA matches 16-bit LoRA (final held-out loss, same budget; tolerance: a "
              "tenth of LoRA's fine-tuning gain)", "QLoRA paper", loss("lora", "after"),
              loss("qlora", "after"), "nats", where_label(quality), rel_tol=0,
              abs_tol=0.1 * gain if gain == gain and gain > 0 else 0.0),
        Claim("QLoRA vs full FT VRAM at 7B: formula", "qlora.predict_vram",
              ratio("7b", "predicted"), ratio("7b", "recorded"), "x", where),
        Claim("QLoRA saves ≈16× VRAM", "lecture", 16.0, ratio("7b", "recorded"), "x", where),
        Claim("65B QLoRA fits in under 48 GB (formula)", "QLoRA paper", 48.0, pred65, "GB",
              "formula only (no 65B run)", kind="at_most"),
    ])

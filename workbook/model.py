"""The workbook's base model: a small Llama-style decoder built with ``transformers``.

Because it is a real ``LlamaForCausalLM`` (RMSNorm, RoPE, SwiGLU, SDPA attention), PEFT,
bitsandbytes and the Hugging Face ``generate`` API work on it unchanged, and the same loading
code reads a real checkpoint (:func:`load_pretrained`).

:func:`load_base_model` trains the base model for a preset once (deterministic by seed) and
caches it as safetensors under ``data/cache/``; later calls, from any notebook, load it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_flag, check_range, resolve_preset
from workbook.data import cache_dir, cache_lock, corpus_sha256, load_tokenizer, token_ids
from workbook.hardware import cpu_threads, torch_device
from workbook.training import TrainConfig, train

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast


def swiglu_hidden(d_model: int, multiple_of: int = 64) -> int:
    """Llama's MLP width: 2/3 of 4·d_model (three matrices instead of two keep the parameter
    count of a 4·d_model GELU MLP), rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * 4 * d_model / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Llama-style decoder. ``d_ff=None`` means :func:`swiglu_hidden(d_model)`."""

    vocab_size: int = 4096
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    seq_len: int = 128
    d_ff: int | None = None
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        check_range("vocab_size", self.vocab_size, 16, 262144)
        check_range("d_model", self.d_model, 8, 16384)
        check_range("n_layers", self.n_layers, 1, 256)
        check_range("n_heads", self.n_heads, 1, 256)
        check_range("seq_len", self.seq_len, 2, 131072)
        check_flag("tie_embeddings", self.tie_embeddings)
        if self.d_model % self.n_heads:
            raise WorkbookError(f"d_model={self.d_model} must be a multiple of "
                                f"n_heads={self.n_heads}")
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", swiglu_hidden(self.d_model))
        check_range("d_ff", self.d_ff, 8, 131072)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def hf_config(cfg: ModelConfig, attn_implementation: str = "sdpa"):
    """The ``transformers.LlamaConfig`` for ``cfg`` (no biases, full multi-head attention)."""
    from transformers import LlamaConfig

    # workbook.data's tokenizer puts its special tokens first: EOS (also BOS) = 0, PAD = 1.
    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads, max_position_embeddings=cfg.seq_len,
        rms_norm_eps=1e-5, tie_word_embeddings=cfg.tie_embeddings, bos_token_id=0,
        eos_token_id=0, pad_token_id=1, attn_implementation=attn_implementation)


# transformers' own attention implementations, and the workbook's (see CAUSAL_SDPA below)
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3",
                        "flex_attention", "workbook_causal_sdpa")


def build_model(cfg: ModelConfig, seed: int, attn_implementation: str = "sdpa",
                device: str | torch.device | None = None) -> LlamaForCausalLM:
    """A freshly initialised model; the same ``seed`` (and device) gives identical weights.

    ``device`` initialises the weights there directly (a GPU draws different random numbers
    than a CPU; the default, the CPU, is what the cached base models use). The global RNG is
    forked, so building a model changes no caller's random state.
    """
    from transformers import LlamaForCausalLM

    check_range("seed", seed, 0, 2**63 - 1)
    check_choice("attn_implementation", attn_implementation, ATTN_IMPLEMENTATIONS)
    device = torch.device(device or "cpu")
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), torch.device(device):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(hf_config(cfg, attn_implementation))
    return model


# transformers' SDPA integration builds the causal mask as a tensor whenever it runs under
# torch.compile on torch < 2.14 (masking_utils._ignore_causal_mask_sdpa refuses to skip it while
# dynamo traces), and SDPA given an explicit ``attn_mask`` cannot pick FlashAttention: it falls
# back to the memory-efficient kernel with a bias. Eager runs skip the mask and get flash. This
# implementation, registered through transformers' own AttentionInterface and
# AttentionMaskInterface, passes no mask (so SDPA's ``is_causal=True`` path, FlashAttention on a
# GPU) whenever the caller passes no padding mask, and transformers' own mask otherwise.
CAUSAL_SDPA = "workbook_causal_sdpa"


def register_causal_sdpa() -> str:
    """Register :data:`CAUSAL_SDPA` with transformers (idempotent) and return its name.

    Only right for batches without padding when no ``attention_mask`` is given (pre-training
    on packed sequences, benchmarks); a given ``attention_mask`` is honoured exactly as "sdpa".
    """
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import sdpa_mask

    def mask_or_none(*args, attention_mask=None, **kwargs):
        if attention_mask is None:
            return None          # -> sdpa_attention_forward sets is_causal=True
        return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)

    AttentionInterface.register(CAUSAL_SDPA, sdpa_attention_forward)
    AttentionMaskInterface.register(CAUSAL_SDPA, mask_or_none)
    return CAUSAL_SDPA


def use_causal_sdpa(model: torch.nn.Module) -> torch.nn.Module:
    """Switch a transformers model to :data:`CAUSAL_SDPA` in place (see the note above it)."""
    model.set_attn_implementation(register_causal_sdpa())
    return model


class RopeTable(torch.nn.Module):
    """A drop-in for transformers' rotary embedding module: cos and sin read from tables built
    once, for positions 0..max_positions-1, instead of computed from the positions at every
    forward. Same values (the tables come from the original module); cheaper under
    torch.compile, which otherwise recomputes cos and sin inside every kernel that rotates q or k.
    Positions must stay below ``max_positions`` (the model's ``max_position_embeddings``)."""

    def __init__(self, rotary: torch.nn.Module, max_positions: int):
        super().__init__()
        device = rotary.inv_freq.device
        positions = torch.arange(max_positions, device=device)[None]
        cos, sin = rotary(torch.empty(0, device=device), positions)   # fp32, (1, T, head_dim)
        self.cos = torch.nn.Buffer(cos[0], persistent=False)
        self.sin = torch.nn.Buffer(sin[0], persistent=False)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        return self.cos[position_ids].to(x.dtype), self.sin[position_ids].to(x.dtype)


def use_rope_table(model: torch.nn.Module) -> torch.nn.Module:
    """Swap a transformers Llama model's rotary embedding for a :class:`RopeTable`, in place."""
    inner = model.model
    inner.rotary_emb = RopeTable(inner.rotary_emb, model.config.max_position_embeddings)
    return model


def _fused_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    # gate and up in one matmul: x @ [W_gate; W_up]ᵀ, then split (same weights, same result)
    both = torch.cat([self.gate_proj.weight, self.up_proj.weight])
    gate, up = torch.nn.functional.linear(x, both).chunk(2, dim=-1)
    return self.down_proj(self.act_fn(gate) * up)


def _fused_qkv_attention_forward(self, hidden_states, position_embeddings=None,
                                 attention_mask=None, past_key_values=None, **kwargs):
    # transformers' LlamaAttention.forward (5.x), with q, k and v in one matmul
    from transformers.models.llama.modeling_llama import (
        ALL_ATTENTION_FUNCTIONS,
        apply_rotary_pos_emb,
        eager_attention_forward,
    )

    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
    sizes = [self.q_proj.out_features, self.k_proj.out_features, self.v_proj.out_features]
    q, k, v = (t.view(hidden_shape).transpose(1, 2) for t in
               torch.nn.functional.linear(hidden_states, weight).split(sizes, dim=-1))
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    if past_key_values is not None:
        k, v = past_key_values.update(k, v, self.layer_idx)
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                   eager_attention_forward)
    out, weights = attend(self, q, k, v, attention_mask,
                          dropout=0.0 if not self.training else self.attention_dropout,
                          scaling=self.scaling, **kwargs)
    return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


def fuse_projections(model: torch.nn.Module, attention: bool = True,
                     mlp: bool = True) -> torch.nn.Module:
    """Run each layer's q, k, v projections as one matmul (``attention``) and gate, up as one
    (``mlp``), in place.

    The parameters stay where transformers put them (q_proj, k_proj, ... so PEFT, saving and
    loading see the same model); only the forward concatenates them first. Fewer, wider matmuls
    keep an H100 busier at d_model 768 (the 768-wide weight gradients otherwise need split-K).
    Needs a model without biases, like the workbook's.
    """
    for layer in model.model.layers:
        attn, ffn = layer.self_attn, layer.mlp
        if any(m.bias is not None for m in (attn.q_proj, attn.k_proj, attn.v_proj,
                                            ffn.gate_proj, ffn.up_proj)):
            raise WorkbookError("fuse_projections needs projections without bias")
        if attention:
            attn.forward = types.MethodType(_fused_qkv_attention_forward, attn)
        if mlp:
            ffn.forward = types.MethodType(_fused_mlp_forward, ffn)
    return model


def _analytic_params(cfg: ModelConfig, non_embedding: bool) -> int:
    d, ff = cfg.d_model, cfg.d_ff
    per_layer = 4 * d * d + 3 * d * ff + 2 * d          # q,k,v,o + gate,up,down + 2 RMSNorms
    embedding = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    body = cfg.n_layers * per_layer + d                 # + the final RMSNorm
    return body if non_embedding else body + embedding


def count_params(cfg_or_model: ModelConfig | torch.nn.Module, non_embedding: bool = False) -> int:
    """Parameters (tied weights counted once). ``non_embedding`` drops the token embedding and
    an untied output matrix, as Kaplan et al. (2020) count N."""
    check_flag("non_embedding", non_embedding)
    if isinstance(cfg_or_model, ModelConfig):
        return _analytic_params(cfg_or_model, non_embedding)
    model = cfg_or_model
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    if non_embedding:
        emb = model.get_input_embeddings().weight
        out = model.get_output_embeddings()
        total -= emb.numel()
        if out is not None and out.weight is not emb:
            total -= out.weight.numel()
    return total


# ---------------------------------------------------------------------------- base model


@dataclass(frozen=True)
class BaseRecipe:
    """How a preset's base model is trained: the shape plus the optimisation recipe."""

    model: ModelConfig
    steps: int
    batch_size: int
    lr: float
    warmup: int

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, 1_000_000)
        check_range("batch_size", self.batch_size, 1, 4096)
        check_range("lr", self.lr, 1e-6, 1.0)
        check_range("warmup", self.warmup, 0, self.steps)


BASE_RECIPES: dict[str, BaseRecipe] = {
    # ~1.0M parameters. Cold, tokenizer included, on a shared 2-core box: 30 s when its cores
    # are free (2 threads); with another process holding one core, 48 s on the 1 thread that
    # hardware.cpu_threads picks, 148 s on PyTorch's default 2 (`python -m workbook prepare`).
    "small": BaseRecipe(ModelConfig(vocab_size=4096, d_model=128, n_layers=2, n_heads=4,
                                    seq_len=128), steps=200, batch_size=16, lr=3e-3, warmup=20),
    # ~6M parameters; ~15 s on one H100 (bf16 autocast). 500 steps = 4M tokens, about 9 passes
    # over the 0.46M-token corpus. The recorded 500-step run (pretraining_curve) was still
    # improving on held-out text at its end (01 prints the story from its rows); a longer run
    # would repeat the same small corpus more times, and repeated tokens are worth less.
    "full": BaseRecipe(ModelConfig(vocab_size=4096, d_model=256, n_layers=6, n_heads=4,
                                   seq_len=256), steps=500, batch_size=32, lr=2e-3, warmup=50),
}

_RECIPE_VERSION = 1  # bump when the training code changes what a cached model would be


def base_model_dir(preset: str | None = None, seed: int = 0) -> Path:
    """Where the trained base model of ``preset`` and ``seed`` is cached."""
    chosen = resolve_preset(preset)
    recipe = BASE_RECIPES[chosen]
    key = json.dumps([dataclasses.asdict(recipe), corpus_sha256(), _RECIPE_VERSION, seed],
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / f"base-{chosen}-seed{seed}-{digest}"


def train_and_save(recipe: BaseRecipe, seed: int, folder: Path, device: torch.device) -> None:
    tokenizer = load_tokenizer(recipe.model.vocab_size)
    model = build_model(recipe.model, seed).to(device)
    cfg = TrainConfig(steps=recipe.steps, batch_size=recipe.batch_size,
                      seq_len=recipe.model.seq_len, lr=recipe.lr, warmup=recipe.warmup,
                      eval_every=max(1, recipe.steps // 10))
    log = train(model, cfg, seed=seed, vocab_size=recipe.model.vocab_size, device=device,
                progress=True, desc="training the base model (cached afterwards)")
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to("cpu").save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    log.to_csv(tmp / "train_log.csv", index=False)
    (tmp / "recipe.json").write_text(json.dumps(
        {"recipe": dataclasses.asdict(recipe), "seed": seed, "device": str(device)}, indent=2))
    tmp.rename(folder)


def load_base_model(preset: str | None = None, seed: int = 0,
                    device: str | torch.device | None = None
                    ) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The workbook's trained base model and its tokenizer, in eval mode on ``device``.

    Trained on first use (``small``: CPU, seconds) and cached as safetensors; every later call
    loads the cache. The same preset and seed always give the same weights.
    """
    chosen = resolve_preset(preset)
    check_range("seed", seed, 0, 2**31 - 1)
    folder = base_model_dir(chosen, seed)
    target = torch_device() if device is None else torch.device(device)
    with cache_lock(folder.name):
        if not (folder / "model.safetensors").exists():
            # The small model always trains on the CPU, so every machine caches the same
            # weights; the full one uses a GPU where there is one.
            use_gpu = chosen == "full" and torch.cuda.is_available()
            train_on = torch_device("cuda" if use_gpu else "cpu")
            train_and_save(BASE_RECIPES[chosen], seed, folder, train_on)
    model, tokenizer = load_pretrained(str(folder))
    return model.to(target).eval(), tokenizer


def prepare(preset: str | None = None, seed: int = 0) -> dict[str, float]:
    """Build the caches a notebook's first run would otherwise build, and say how long each took.

    The corpus's tokenizer and token ids, then the base model of ``preset`` and, for a larger
    preset, the small one its fine-tuning experiments start from (each trained once, with
    a progress bar, on :func:`workbook.hardware.cpu_threads` threads on a CPU), and on a GPU
    the kernels the experiments compile (:func:`workbook.registry.warm_up`). Already cached
    parts take well under a second. ``python -m workbook prepare`` runs this; ``make lab`` runs
    that before JupyterLab starts, so no notebook cell has to wait for it.
    """
    chosen = resolve_preset(preset)
    recipe = BASE_RECIPES[chosen]
    seconds: dict[str, float] = {}
    steps = [("tokenizer and token ids", lambda: (load_tokenizer(recipe.model.vocab_size),
                                                  token_ids("train", recipe.model.vocab_size))),
             (f"{chosen} base model, seed {seed}", lambda: load_base_model(chosen, seed, "cpu"))]
    if chosen != "small":  # the full preset's LoRA, QLoRA, SFT and alignment runs fine-tune it
        steps.append((f"small base model, seed {seed}",
                      lambda: load_base_model("small", seed, "cpu")))
    if torch.cuda.is_available():  # 07's Triton kernels, compiled into Triton's disk cache
        from workbook import registry

        steps.append(("GPU kernels the experiments compile", lambda: registry.warm_up(chosen)))
    print(f"preparing the workbook's caches in {base_model_dir(chosen, seed).parent} "
          f"(CPU threads: {cpu_threads()})", flush=True)
    for what, build in steps:
        start = time.monotonic()
        build()
        seconds[what] = round(time.monotonic() - start, 1)
        print(f"  {what}: ready ({seconds[what]} s)", flush=True)
    return seconds


def base_model_log(preset: str | None = None, seed: int = 0):
    """The loss curve recorded while the cached base model was trained (a DataFrame)."""
    load_base_model(preset, seed, device="cpu")
    return pd.read_csv(base_model_dir(preset, seed) / "train_log.csv")


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' log lines and progress bars off inside the block, as they were after it: a
    cached model's 'Loading weights 0/56' bar or a resize's note would otherwise be saved in a
    notebook as output no cell asked for (errors still show)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_pretrained(name_or_path: str, local_files_only: bool = True,
                    dtype: torch.dtype | None = None
                    ) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a causal LM and its tokenizer the standard Hugging Face way.

    ``name_or_path`` is a local folder (``save_pretrained`` output) or, with
    ``local_files_only=False`` and a network, a Hub name such as ``"gpt2"``. Only safetensors
    weights are accepted and no repository code is ever run (``trust_remote_code=False``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name_or_path)
    looks_local = path.exists() or name_or_path.startswith((".", "/", "~"))
    if looks_local and not (path / "config.json").exists():
        raise WorkbookError(f"{name_or_path!r} is not a saved model folder (no config.json); "
                            "pass a folder written by save_pretrained or a Hub name")
    try:
        with quiet_transformers():   # no frozen 'Loading weights' bar saved in a notebook
            model = AutoModelForCausalLM.from_pretrained(
                name_or_path, local_files_only=local_files_only, use_safetensors=True,
                trust_remote_code=False, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(
                name_or_path, local_files_only=local_files_only, trust_remote_code=False)
    except OSError as exc:
        where = "locally" if local_files_only else "locally or on the Hub"
        raise WorkbookError(f"cannot load {name_or_path!r} {where} as safetensors: "
                            f"{str(exc).splitlines()[0]}") from None
    return model, tokenizer

"""Published Llama shapes (1B to 65B) as configs and parameter counts: what LoRA (11) and
QLoRA (12) count trainable parameters and memory for, without building the weights."""

from __future__ import annotations

from dataclasses import dataclass

from workbook.config import check_choice
from workbook.lora.adapter import linear_shapes


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


def shape(name: str) -> LlamaShape:
    check_choice("size", name, SHAPES)
    return SHAPES[name]


def n_params_of(config) -> int:
    """All parameters of a Llama config: projections, norms, embedding (+ untied head)."""
    h = config.hidden_size
    per_layer = sum(i * o for i, o in linear_shapes(config).values()) + 2 * h
    heads = 1 if getattr(config, "tie_word_embeddings", False) else 2
    return config.num_hidden_layers * per_layer + h + heads * config.vocab_size * h


def llama_config(size: str):
    """A ``LlamaConfig`` with a published shape (:data:`SHAPES`); no weights."""
    from transformers import LlamaConfig

    s = shape(size)
    return LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.d_model, intermediate_size=s.d_ff,
                       num_hidden_layers=s.n_layers, num_attention_heads=s.n_heads,
                       num_key_value_heads=s.n_kv_heads, tie_word_embeddings=False)

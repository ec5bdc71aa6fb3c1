"""LoRA, the idea: freeze W, learn a low-rank update B @ A beside it.

``y = x W^T + (alpha / r) * x A^T B^T`` with A (r, in) and B (out, r). B starts at zero, so
training starts from exactly the base model; only ``r * (in + out)`` numbers per matrix learn.

:class:`LoRALinear` is the from-scratch version (a dozen lines); :func:`add_peft_lora` is the
library (PEFT) that the experiments use. ``tests/test_lora.py`` checks that they agree.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from workbook.config import WorkbookError, check_range

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
FFN = ("gate_proj", "up_proj", "down_proj")
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "qv": ("q_proj", "v_proj"),          # the LoRA paper's choice
    "attention": ATTENTION,
    "ffn": FFN,
    "all": ATTENTION + FFN,              # QLoRA's choice
}
MODULE_NAMES: tuple[str, ...] = ATTENTION + FFN


def resolve_targets(targets: str | Sequence[str]) -> tuple[str, ...]:
    """A group name (qv, attention, ffn, all) or a list of projection names -> names."""
    if isinstance(targets, str):
        if targets in TARGET_GROUPS:
            return TARGET_GROUPS[targets]
        targets = [targets]
    names = tuple(targets)
    unknown = [t for t in names if t not in MODULE_NAMES]
    if unknown or not names:
        raise WorkbookError(f"unknown target modules {unknown or '[]'}; allowed: groups "
                            f"{', '.join(TARGET_GROUPS)} or modules {', '.join(MODULE_NAMES)}")
    return names


def check_rank(rank: int, in_features: int, out_features: int) -> None:
    """A rank above min(in, out) adds parameters without adding expressiveness."""
    check_range("rank", rank, 1, min(in_features, out_features))
    if not isinstance(rank, int):
        raise WorkbookError(f"rank={rank!r} must be an integer from 1 to "
                            f"{min(in_features, out_features)}")


# ------------------------------------------------------------------ from scratch, and PEFT


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update, from scratch.

    Initialised like PEFT: A Kaiming-uniform, B zeros (so the model is unchanged at step 0);
    the update is scaled by alpha / rank so changing the rank does not change the step size.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        check_rank(rank, base.in_features, base.out_features)
        self.base = base.requires_grad_(False)
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **kw))   # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **kw))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) * B @ A, shape (out, in): what merging adds to W."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        # Two thin matmuls (in -> r -> out) instead of forming the (out, in) update.
        return y + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + (alpha / r) B A: one matrix again, no extra latency at inference."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


def add_lora(model: nn.Module, rank: int, alpha: float = 16.0,
             targets: str | Sequence[str] = "all", dropout: float = 0.0) -> nn.Module:
    """Freeze ``model`` and wrap each targeted projection in a :class:`LoRALinear` (in place)."""
    names = resolve_targets(targets)
    model.requires_grad_(False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in names and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha, dropout))
    return model


def add_peft_lora(model: nn.Module, rank: int, alpha: float = 16.0,
                  targets: str | Sequence[str] = "all", dropout: float = 0.0,
                  adapter_name: str = "default"):
    """The same with PEFT: returns a ``PeftModel`` whose only trainable weights are A and B."""
    from peft import LoraConfig, get_peft_model

    names = resolve_targets(targets)
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in names and isinstance(module, nn.Linear):
            check_rank(rank, module.in_features, module.out_features)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(names))
    return get_peft_model(model, config, adapter_name=adapter_name)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def linear_shapes(config) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection of one decoder layer, from a ``LlamaConfig``."""
    h, f = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q = config.num_attention_heads * head_dim
    kv = (config.num_key_value_heads or config.num_attention_heads) * head_dim
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}


def lora_params(config, rank: int, targets: str | Sequence[str] = "all") -> int:
    """Formula: n_layers * sum over targeted projections of rank * (in + out)."""
    check_range("rank", rank, 1, 65536)
    shapes = linear_shapes(config)
    names = resolve_targets(targets)
    return config.num_hidden_layers * sum(rank * sum(shapes[n]) for n in names)


def with_lora(base: nn.Module, rank: int, alpha: float, targets: str | Sequence[str],
              seed: int) -> nn.Module:
    """A PEFT-LoRA copy of ``base`` whose adapter init depends on ``seed`` only."""
    model = copy.deepcopy(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return add_peft_lora(model, rank, alpha=alpha, targets=targets)


def randomise_adapters(model: nn.Module, seed: int, scale: float = 0.02,
                       adapter: str | None = None) -> None:
    """Give every B (of ``adapter`` only, if named) nonzero values, as if trained, so that
    merging or swapping adapters has something to show."""
    key = "lora_B" if adapter is None else f"lora_B.{adapter}."
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if key in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)

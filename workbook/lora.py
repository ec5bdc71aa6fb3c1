"""LoRA: freeze W, learn a low-rank update B @ A beside it.

``y = x W^T + (alpha / r) * x A^T B^T`` with A (r, in) and B (out, r). B starts at zero, so
training starts from exactly the base model; only ``r * (in + out)`` numbers per matrix learn.

:class:`LoRALinear` is the from-scratch version (a dozen lines); :func:`add_peft_lora` is the
library (PEFT) that the experiments use. ``tests/test_lora.py`` checks that they agree.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from workbook.config import WorkbookError, check_choice, check_range, takes_rows
from workbook.registry import Experiment

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


def _check_demo(rank: int, seed: int, seq_len: int) -> None:
    """The demos' own arguments, checked before a model is copied."""
    check_range("rank", rank, 1, 4096)
    check_range("seed", seed, 0, 2**63 - 1)
    check_range("seq_len", seq_len, 1, 4096)


def scratch_vs_peft(model: nn.Module, rank: int = 4, seed: int = 0,
                    seq_len: int = 16) -> pd.DataFrame:
    """The from-scratch LoRA and PEFT's on copies of ``model``, given the same A and B.

    Returns the largest logit difference (float rounding only) and both trainable counts.
    """
    _check_demo(rank, seed, seq_len)
    peft_model = with_lora(model, rank, 2.0 * rank, "all", seed)
    _randomise_adapters(peft_model, seed + 1)
    ours = add_lora(copy.deepcopy(model), rank, alpha=2.0 * rank, targets="all")
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "lora_" in name:          # ...q_proj.lora_A  <->  ...q_proj.lora_A.default.weight
                p.copy_(theirs[f"base_model.model.{name}.default.weight"])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.config.vocab_size, (2, seq_len), generator=gen)
    with torch.no_grad():
        diff = (ours(input_ids=x).logits - peft_model(input_ids=x).logits).abs().max()
    return pd.DataFrame([
        {"what": "max |logits(scratch) - logits(PEFT)|", "value": float(diff)},
        {"what": "trainable params, scratch", "value": count_trainable(ours)},
        {"what": "trainable params, PEFT", "value": count_trainable(peft_model)},
    ])


def trainable_summary(configs: dict, rank: int, targets: str | Sequence[str]) -> pd.DataFrame:
    """Per model: full fine-tuning vs LoRA trainable parameters and their training state.

    Training state = gradient (2 B, bf16) + fp32 Adam moments (8 B) per trainable parameter;
    the frozen weights are paid for either way.
    """
    rows = []
    for name, config in configs.items():
        for method in ("full", "lora"):
            if method == "full":
                n = _n_params_of(config)
            else:
                for i, o in linear_shapes(config).values():
                    check_rank(rank, i, o)
                n = lora_params(config, rank, targets)
            rows.append({"model": name, "method": method, "trainable_params": n,
                         "train_state_GB": 10 * n / 1e9})
    return pd.DataFrame(rows)


@takes_rows
def summary_note(table: pd.DataFrame) -> str:
    """One line per model of :func:`trainable_summary`: share trained and training state."""
    lo = table[table.method == "lora"].set_index("model")
    full = table[table.method == "full"].set_index("model")
    return " · ".join(
        f"{m}: {lo.trainable_params[m]:,} trainable "
        f"({100 * lo.trainable_params[m] / full.trainable_params[m]:.3f} %), training state "
        f"{lo.train_state_GB[m]:.3g} GB vs {full.train_state_GB[m]:.3g} GB" for m in lo.index)


def _n_params_of(config) -> int:
    """All parameters of a Llama config: projections, norms, embedding (+ untied head)."""
    h = config.hidden_size
    per_layer = sum(i * o for i, o in linear_shapes(config).values()) + 2 * h
    heads = 1 if getattr(config, "tie_word_embeddings", False) else 2
    return config.num_hidden_layers * per_layer + h + heads * config.vocab_size * h


def llama_config(size: str):
    """A ``LlamaConfig`` with a published shape (see ``workbook.qlora.SHAPES``); no weights."""
    from transformers import LlamaConfig

    from workbook.qlora import shape

    s = shape(size)
    return LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.d_model, intermediate_size=s.d_ff,
                       num_hidden_layers=s.n_layers, num_attention_heads=s.n_heads,
                       num_key_value_heads=s.n_kv_heads, tie_word_embeddings=False)


# ----------------------------------------------------------------------- the fine-tune task


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def task_ids(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The adaptation task: the held-out tail of the corpus, which pretraining never saw.

    Its first 80 % is for fine-tuning, its last 20 % for evaluation: a domain shift (other
    stdlib modules' docstrings), measured as loss on text neither stage trained on.
    """
    from workbook.data import token_ids

    ids = token_ids("val", vocab_size)
    cut = int(0.8 * len(ids))
    return ids[:cut], ids[cut:]


@torch.no_grad()
def eval_loss(model: nn.Module, ids: torch.Tensor, batch_size: int, seq_len: int,
              n_batches: int, seed: int) -> float:
    """Mean next-token loss over fixed random windows of ``ids`` (same windows every call)."""
    from workbook.data import random_batch

    gen = torch.Generator().manual_seed(seed + 12345)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(n_batches):
        batch = random_batch(ids, batch_size, seq_len, gen)
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x.to(device)
        losses.append(float(model(input_ids=x, labels=x).loss))
    model.train(was_training)
    return sum(losses) / len(losses)


def finetune(model: nn.Module, ids: torch.Tensor, *, steps: int, lr: float, batch_size: int,
             seq_len: int, seed: int) -> dict[str, float]:
    """AdamW on the trainable parameters; returns median step time (ms) and peak memory."""
    from workbook.data import random_batch

    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    model.train()
    for _ in range(steps):
        batch = random_batch(ids, batch_size, seq_len, gen)
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x.to(device)
        t0 = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    peak = torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else math.nan
    return {"step_time": times[len(times) // 2], "peak_memory": peak}


# ------------------------------------------------------------------------ the experiments


@dataclass(frozen=True)
class LoraSweepConfig:
    """One sweep of fine-tuning runs: by rank, by target modules, and by learning rate."""

    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 64)
    targets: tuple[str, ...] = ("qv", "attention", "ffn", "all")
    target_rank: int = 8
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    lr: float = 1e-3                # LoRA's learning rate in the rank and target sweeps
    full_lr: float = 1e-4
    alpha_over_rank: float = 2.0    # alpha = 2 * rank, so the update's scale is fixed
    steps: int = 30
    batch_size: int = 8
    seq_len: int = 64
    eval_batches: int = 4
    preset: str | None = None       # the base model's preset (None: the workbook's preset)

    def __post_init__(self) -> None:
        for r in self.ranks + (self.target_rank,):
            check_range("rank", r, 1, 4096)
        for t in self.targets:
            resolve_targets(t)
        for lr in self.lrs + (self.lr, self.full_lr):
            check_range("lr", lr, 1e-7, 1.0)
        check_range("steps", self.steps, 1, 100_000)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seq_len", self.seq_len, 8, 8192)
        check_range("eval_batches", self.eval_batches, 1, 1000)
        check_range("alpha_over_rank", self.alpha_over_rank, 0.01, 1000.0)
        check_choice("preset", self.preset, (None, "small", "full"))


def _base(preset: str | None, seed: int) -> nn.Module:
    """The workbook's pretrained base model, on the CPU (copies go to the device per run)."""
    from workbook.model import load_base_model

    model, _tok = load_base_model(preset=preset, seed=seed, device="cpu")
    return model


def with_lora(base: nn.Module, rank: int, alpha: float, targets: str | Sequence[str],
              seed: int) -> nn.Module:
    """A PEFT-LoRA copy of ``base`` whose adapter init depends on ``seed`` only."""
    model = copy.deepcopy(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return add_peft_lora(model, rank, alpha=alpha, targets=targets)


def _one_run(cfg: LoraSweepConfig, base: nn.Module, seed: int, *, method: str, rank: int,
             targets: str, lr: float, train: torch.Tensor, held_out: torch.Tensor) -> list[dict]:
    if method == "lora":
        model = with_lora(base, rank, cfg.alpha_over_rank * rank, targets, seed)
        predicted = lora_params(base.config, rank, targets)
    else:
        model = copy.deepcopy(base).requires_grad_(True)
        predicted = sum(p.numel() for p in model.parameters())
    model.to(_device())
    stats = finetune(model, train, steps=cfg.steps, lr=lr, batch_size=cfg.batch_size,
                     seq_len=cfg.seq_len, seed=seed)
    loss = eval_loss(model, held_out, cfg.batch_size, cfg.seq_len, cfg.eval_batches, seed)
    rows = [
        {"metric": "trainable_params", "value": count_trainable(model), "unit": "params",
         "source": "measured"},
        {"metric": "trainable_params", "value": predicted, "unit": "params",
         "source": "predicted"},
        {"metric": "eval_loss", "value": loss, "unit": "nats"},
        {"metric": "step_time", "value": stats["step_time"], "unit": "ms"},
    ]
    if stats["peak_memory"] == stats["peak_memory"]:        # NaN on a CPU: no counter
        rows.append({"metric": "peak_memory", "value": stats["peak_memory"], "unit": "MB"})
    return rows


def sweep_plan(cfg: LoraSweepConfig) -> list[tuple[str, str, int, str, float]]:
    """(sweep, method, rank, targets, lr) of every run; full fine-tuning has rank 0."""
    runs = [("rank", "full", 0, "-", cfg.full_lr)]
    runs += [("rank", "lora", r, "all", cfg.lr) for r in cfg.ranks]
    runs += [("targets", "lora", cfg.target_rank, t, cfg.lr) for t in cfg.targets]
    runs += [("lr", "lora", cfg.target_rank, "all", lr) for lr in cfg.lrs]
    runs += [("lr", "full", 0, "-", lr) for lr in cfg.lrs]
    return runs


def run_lora_sweep(cfg: LoraSweepConfig, seed: int) -> pd.DataFrame:
    """Rank sweep (+ full fine-tuning), target-module sweep and LR sweep on the base model.

    A configuration that appears in two sweeps is trained once and reported in both.
    """
    base = _base(cfg.preset, seed)
    train, held_out = task_ids(base.config.vocab_size)
    base_loss = eval_loss(copy.deepcopy(base).to(_device()), held_out, cfg.batch_size,
                          cfg.seq_len, cfg.eval_batches, seed)
    rows = [{"sweep": "base", "method": "none", "rank": 0, "targets": "-", "lr": 0.0,
             "steps": 0, "metric": "eval_loss", "value": base_loss, "unit": "nats"}]
    done: dict[tuple, list[dict]] = {}
    for sweep, method, rank, targets, lr in sweep_plan(cfg):
        key = (method, rank, targets, lr)
        if key not in done:
            done[key] = _one_run(cfg, base, seed, method=method, rank=rank, targets=targets,
                                 lr=lr, train=train, held_out=held_out)
        params = {"sweep": sweep, "method": method, "rank": rank, "targets": targets,
                  "lr": lr, "steps": cfg.steps}
        rows += [{**params, **row} for row in done[key]]
    frame = pd.DataFrame(rows)
    frame["source"] = frame["source"].fillna("measured")
    return frame


LORA_SWEEP_PRESETS = {
    # A 2-core CPU: few, short runs (the recorded GPU sweep is the one to read).
    "small": LoraSweepConfig(ranks=(1, 4, 16, 64), targets=("attention", "ffn", "all"),
                             target_rank=16, lrs=(1e-3, 1e-2), steps=10, batch_size=4,
                             seq_len=32, eval_batches=2),
    # On a GPU, the small base model (1M parameters, carried in data/cache) with real budgets.
    "full": LoraSweepConfig(lrs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2), steps=200,
                            batch_size=32, seq_len=128, eval_batches=16, preset="small"),
}


# --------------------------------------------------------------------- merging and adapters


@dataclass(frozen=True)
class MergeConfig:
    rank: int = 8
    batch_size: int = 8
    seq_len: int = 64
    repeats: int = 10
    preset: str | None = None

    def __post_init__(self) -> None:
        check_range("rank", self.rank, 1, 4096)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seq_len", self.seq_len, 8, 8192)
        check_range("repeats", self.repeats, 1, 1000)
        check_choice("preset", self.preset, (None, "small", "full"))


def _randomise_adapters(model: nn.Module, seed: int, scale: float = 0.02) -> None:
    """Give B nonzero values (as if trained), so merging has something to merge."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def run_merge(cfg: MergeConfig, seed: int) -> pd.DataFrame:
    """Outputs before vs after ``merge_and_unload``; forward latency of base, unmerged, merged.

    The claim is "no added latency": merged must cost what the base costs, while the
    unmerged adapter pays two extra thin matmuls per adapted projection.
    """
    from workbook.profiling import time_ms

    device = _device()
    pretrained = _base(cfg.preset, seed)
    plain_model = copy.deepcopy(pretrained).to(device).eval()
    model = with_lora(pretrained, cfg.rank, 2.0 * cfg.rank, "all", seed)
    _randomise_adapters(model, seed)
    model.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.config.vocab_size, (cfg.batch_size, cfg.seq_len),
                      generator=gen).to(device)
    with torch.no_grad():
        plain = plain_model(input_ids=x).logits
        t_base = time_ms(lambda: plain_model(input_ids=x), repeats=cfg.repeats, device=device)
        before = model(input_ids=x).logits
        t_unmerged = time_ms(lambda: model(input_ids=x), repeats=cfg.repeats, device=device)
        merged = model.merge_and_unload()
        after = merged(input_ids=x).logits
        t_merged = time_ms(lambda: merged(input_ids=x), repeats=cfg.repeats, device=device)
    params = {"rank": cfg.rank, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len}
    diffs = {"merged vs adapter": after - before, "adapter vs base": before - plain}
    times = {"base": t_base, "unmerged": t_unmerged, "merged": t_merged}
    rows = [{**params, "variant": k, "metric": "max_abs_diff",
             "value": float(v.abs().max()), "unit": "logit"} for k, v in diffs.items()]
    rows += [{**params, "variant": k, "metric": "forward_time", "value": v, "unit": "ms"}
             for k, v in times.items()]
    return pd.DataFrame(rows)


MERGE_PRESETS = {"small": MergeConfig(batch_size=4, seq_len=32, repeats=5),
                 "full": MergeConfig(batch_size=32, seq_len=128, repeats=30, preset="small")}


def multi_adapter_demo(model: nn.Module, rank: int = 4, seed: int = 0,
                       seq_len: int = 16) -> pd.DataFrame:
    """Two adapters on one base: swap between them, then combine them linearly.

    The combination uses PEFT's ``add_weighted_adapter(..., combination_type="cat")``, which
    stacks the two A's and B's: exactly W + dW_spam + dW_sentiment, for any ranks.
    """
    _check_demo(rank, seed, seq_len)
    peft_model = add_peft_lora(model, rank, alpha=2 * rank, adapter_name="spam")
    peft_model.add_adapter("sentiment", peft_model.peft_config["spam"])
    for i, name in enumerate(("spam", "sentiment")):
        peft_model.set_adapter(name)
        _randomise_adapters_named(peft_model, name, seed + i)
    gen = torch.Generator().manual_seed(seed)
    device = next(peft_model.parameters()).device
    x = torch.randint(0, peft_model.config.vocab_size, (2, seq_len), generator=gen).to(device)
    out, rows = {}, []
    with torch.no_grad():
        with peft_model.disable_adapter():
            out["base"] = peft_model(input_ids=x).logits
        for name in ("spam", "sentiment"):
            peft_model.set_adapter(name)
            out[name] = peft_model(input_ids=x).logits
        peft_model.add_weighted_adapter(["spam", "sentiment"], [1.0, 1.0], "both",
                                        combination_type="cat")
        peft_model.set_adapter("both")
        out["both"] = peft_model(input_ids=x).logits
        peft_model.base_model.set_adapter(["spam", "sentiment"])   # both active at once
        out["together"] = peft_model(input_ids=x).logits
    for name in ("spam", "sentiment", "both"):
        rows.append({"adapter": name, "metric": "max_abs_diff_vs_base",
                     "value": float((out[name] - out["base"]).abs().max()), "unit": "logit"})
    rows.append({"adapter": "both (cat) vs spam+sentiment active", "metric": "max_abs_diff",
                 "value": float((out["both"] - out["together"]).abs().max()), "unit": "logit"})
    rows.append({"adapter": "spam vs sentiment", "metric": "max_abs_diff",
                 "value": float((out["spam"] - out["sentiment"]).abs().max()), "unit": "logit"})
    stored = sum(p.numel() for n, p in peft_model.named_parameters() if ".spam" in n)
    rows.append({"adapter": "spam", "metric": "adapter_params", "value": stored,
                 "unit": "params"})
    return pd.DataFrame(rows)


def _randomise_adapters_named(model: nn.Module, adapter: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f"lora_B.{adapter}." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


EXPERIMENTS = [
    Experiment(
        name="lora_sweep",
        summary="LoRA rank / target-module / LR sweeps vs full fine-tuning on the base model",
        notebook="11_lora",
        run=run_lora_sweep,
        presets=LORA_SWEEP_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=600,
    ),
    Experiment(
        name="lora_merge",
        summary="merging W + BA: outputs identical, forward latency merged vs unmerged",
        notebook="11_lora",
        run=run_merge,
        presets=MERGE_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=300,
    ),
]


@takes_rows
def best_lr(rows: pd.DataFrame, method: str) -> tuple[float, str]:
    """The learning rate with the lowest held-out loss for ``method`` in an LR sweep's
    ``eval_loss`` rows, and where it sits in the grid: 'inside', or 'lowest'/'highest' (then
    the true optimum may lie beyond the grid, and any ratio built on it is only a bound)."""
    part = rows[(rows["method"] == method) & (rows["metric"] == "eval_loss")]
    if part.empty:
        return float("nan"), "not measured"
    best = float(part.loc[part["value"].idxmin(), "lr"])
    grid = sorted(part["lr"].unique())
    edge = "lowest" if best == grid[0] else "highest" if best == grid[-1] else "inside"
    return best, edge


@takes_rows
def claims(rank_rows: pd.DataFrame, lr_rows: pd.DataFrame, timing: pd.DataFrame,
           where: str) -> pd.DataFrame:
    """The lecture's and the LoRA paper's claims against this notebook's rows: parameter counts
    (exact), the learning-rate ratio (only where both optima lie inside the sweep's grid;
    otherwise the ratio is a bound and the claim is not measured), the merge's latency."""
    from workbook.claims import Claim, claims_table

    nan = float("nan")
    pred = rank_rows[rank_rows["source"] == "predicted"]["value"].sum()
    counted = rank_rows[rank_rows["source"] != "predicted"]["value"].sum()
    (lr_lora, edge_lora), (lr_full, edge_full) = best_lr(lr_rows, "lora"), best_lr(lr_rows, "full")
    bracketed = edge_lora == edge_full == "inside"
    ratio = lr_lora / lr_full
    t = timing[timing["metric"] == "forward_time"].groupby("variant")["value"].first()
    lr_where = where if bracketed else (
        f"{where}; best LR at the grid's edge (lora: {edge_lora}, full: {edge_full}), "
        f"so {ratio:.3g}× is only a bound")
    return claims_table([
        Claim("1024x1024 at rank 8 trains ~16K numbers", "lecture", 16_000, 8 * (1024 + 1024),
              "params"),
        Claim("PEFT example: r=8 on q,v of a 7B model trains 4,194,304", "lecture (PEFT print)",
              4_194_304, lora_params(llama_config("7b"), 8, "qv"), "params",
              "formula, Llama-2-7B shape"),
        Claim("trainable params = r(d_in+d_out) per matrix", "LoRA paper", pred, counted,
              "params (sum over the sweep)", "counted by PEFT"),
        Claim("LoRA's best LR is higher than full FT's", "lecture", 1.0, ratio, "× (ratio)",
              lr_where, kind="at_least"),
        Claim("... by about 10×", "lecture", 10.0, ratio if bracketed else nan, "×", lr_where,
              rel_tol=0.5),
        Claim("merged adapter adds no latency (merged / base forward time)", "LoRA paper", 1.0,
              t.get("merged", nan) / t.get("base", nan), "ratio", where),
    ])

"""Pre-training: next-token prediction, its loss, and the loop that minimises it.

The loss is the mean cross-entropy of the model's predicted distribution for token t+1 given
tokens 1..t; its exponential is the perplexity, "how many tokens the model is choosing
between". :func:`train` is the whole loop: random windows of the corpus, AdamW with warm-up
and cosine decay, bf16 autocast on a GPU, and a held-out loss every few steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from workbook.config import check_range


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.1
    eval_every: int = 20
    eval_batches: int = 4

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, 1_000_000)
        check_range("batch_size", self.batch_size, 1, 4096)
        check_range("seq_len", self.seq_len, 2, 131072)
        check_range("lr", self.lr, 1e-6, 1.0)
        check_range("warmup", self.warmup, 0, self.steps)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("eval_every", self.eval_every, 1, 1_000_000)
        check_range("eval_batches", self.eval_batches, 1, 1000)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor,
                    ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (batch, seq, vocab) against ``targets`` (batch, seq).

    ``targets`` are the inputs shifted by one (see ``workbook.data.random_batch``): position t
    is scored on how much probability it gave to the token that actually came next.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           ignore_index=ignore_index)


def perplexity(loss: float) -> float:
    """exp(cross-entropy in nats): a loss of ln(V) is a uniform guess over V tokens."""
    return math.exp(loss)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to 10 % of it."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms), fused on a GPU."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=fused)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(model: torch.nn.Module, ids: torch.Tensor, batch_size: int, seq_len: int,
             n_batches: int, device: torch.device, seed: int = 1234) -> float:
    """Mean next-token loss over ``n_batches`` fixed random windows of ``ids``."""
    from workbook.data import random_batch

    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n_batches):
        x, y = random_batch(ids, batch_size, seq_len, gen)
        with _autocast(device):
            logits = model(input_ids=x.to(device), use_cache=False).logits
        losses.append(next_token_loss(logits, y.to(device)).item())
    model.train(was_training)
    return sum(losses) / len(losses)


def train(model: torch.nn.Module, cfg: TrainConfig, *, seed: int, vocab_size: int,
          device: torch.device | str | None = None, train_ids: torch.Tensor | None = None,
          val_ids: torch.Tensor | None = None, progress: bool = False, desc: str = "training",
          on_log: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Train ``model`` in place on the corpus (or on ``train_ids``); return the loss log.

    Rows: ``step, split ('train'|'val'), loss, lr, tokens``. ``on_log(row)`` is called for each
    row as it appears (the notebook's live plot). The batches depend only on ``seed``.
    """
    from tqdm.auto import tqdm

    from workbook.data import random_batch, token_ids

    device = torch.device(device or next(model.parameters()).device)
    train_ids = token_ids("train", vocab_size) if train_ids is None else train_ids
    val_ids = token_ids("val", vocab_size) if val_ids is None else val_ids
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, cfg)
    rows: list[dict] = []

    def log(step: int, split: str, loss: float, lr: float) -> None:
        row = {"step": step, "split": split, "loss": loss, "lr": lr,
               "tokens": step * cfg.batch_size * cfg.seq_len}
        rows.append(row)
        if on_log is not None:
            on_log(row)

    model.train()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress)
    for step in bar:
        if step % cfg.eval_every == 0:
            log(step, "val", evaluate(model, val_ids, cfg.batch_size, cfg.seq_len,
                                      cfg.eval_batches, device), lr_at(step, cfg))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, y = random_batch(train_ids, cfg.batch_size, cfg.seq_len, gen)
        with _autocast(device):
            logits = model(input_ids=x.to(device), use_cache=False).logits
        loss = next_token_loss(logits, y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        log(step + 1, "train", loss.item(), lr_at(step, cfg))
    log(cfg.steps, "val", evaluate(model, val_ids, cfg.batch_size, cfg.seq_len,
                                   cfg.eval_batches, device), lr_at(cfg.steps - 1, cfg))
    model.eval()
    return pd.DataFrame(rows)

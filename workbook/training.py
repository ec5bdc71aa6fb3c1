"""The one training loop, its loss and its optimizer: plumbing every topic trains with.

Pre-training (01) introduces these ideas; the topics after it reuse them instead of writing
their own loop. :func:`train` is the whole loop: batches (random windows of the corpus, or
any ``batches(step, generator)`` a topic supplies), AdamW with warm-up and cosine decay, bf16
autocast on a GPU, gradient clipping, and a held-out loss every few steps; ``loss_fn`` swaps the
next-token loss for another objective (DPO's). :func:`backward_step` is its update (clear,
backward, clip, step), public so that a probe timing or measuring single steps takes the same
update instead of writing its own. :func:`train_static` is the same pre-training update with
every per-step value held in device tensors (:class:`StaticStep`), so that the scaling sweep's
launch-bound tiny models can replay it from a CUDA graph.
:class:`MasterWeightAdamW` is the optimizer of pure-BF16 training (08 explains it; 02 times
it).

This module imports plumbing only (config, hardware, data), never a topic.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from workbook.config import WorkbookError, check_choice, check_range
from workbook.data import random_batch, token_ids
from workbook.hardware import torch_threads

__all__ = ["TrainConfig", "next_token_loss", "lr_at", "make_optimizer", "autocast",
           "evaluate", "backward_step", "train", "warm_up_for_graph", "capture_graph", "StaticStep",
           "train_static", "MasterWeightAdamW"]


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
    schedule: str = "cosine"   # "cosine": warm-up then cosine decay; "constant": lr every step

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, 1_000_000)
        check_range("batch_size", self.batch_size, 1, 4096)
        check_range("seq_len", self.seq_len, 2, 131072)
        check_range("lr", self.lr, 1e-7, 1.0)
        check_range("warmup", self.warmup, 0, self.steps)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("eval_every", self.eval_every, 1, 1_000_000)
        check_range("eval_batches", self.eval_batches, 1, 1000)
        check_choice("schedule", self.schedule, ("cosine", "constant"))


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor,
                    ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (batch, seq, vocab) against ``targets`` (batch, seq).

    ``targets`` are the inputs shifted by one (see ``workbook.data.random_batch``): position t
    is scored on how much probability it gave to the token that actually came next. Targets
    equal to ``ignore_index`` (a prompt token in SFT, padding) count for nothing.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           ignore_index=ignore_index)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to 10 % of it (``schedule="constant"``:
    ``lr`` at every step, as fine-tuning loops often run)."""
    if cfg.schedule == "constant":
        return cfg.lr
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, *, betas=(0.9, 0.95),
                   master_weights: bool = False, lr: torch.Tensor | None = None):
    """AdamW with weight decay on matrices only (not on norms), fused on a GPU.

    ``master_weights=True``: :class:`MasterWeightAdamW` (FP32 copies of BF16 weights).
    ``lr``: a 0-d tensor on the model's device that every group reads its learning rate from
    (fused, and capturable on a GPU): a step that sets it in place can be replayed from a CUDA
    graph (:class:`StaticStep`).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise WorkbookError("the model has no trainable parameters (requires_grad is off)")
    if master_weights:
        return MasterWeightAdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True,
                                 capturable=lr.device.type == "cuda")
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=fused)


def autocast(device: torch.device):
    """bf16 autocast on a GPU, nothing on a CPU (where bf16 matmuls are slow)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=x, use_cache=False)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def evaluate(model: torch.nn.Module, ids: torch.Tensor, batch_size: int, seq_len: int,
             n_batches: int, device: torch.device, seed: int = 1234) -> float:
    """Mean next-token loss over ``n_batches`` fixed random windows of ``ids``."""
    check_range("n_batches", n_batches, 1, 100_000)
    check_range("seed", seed, 0, 2**63 - 1)

    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n_batches):
        x, y = random_batch(ids, batch_size, seq_len, gen)
        with autocast(device):
            logits = _logits(model, x.to(device))
        losses.append(next_token_loss(logits, y.to(device)).item())
    model.train(was_training)
    return sum(losses) / len(losses)


def backward_step(loss: torch.Tensor, optimizer, *, params=None, clip: float | None = None,
                  zero_grad: bool = True, before_step: Callable[[], None] | None = None
                  ) -> None:
    """One update from ``loss``: clear the old gradients (``zero_grad``, set to None), backward,
    clip the global gradient norm of ``params`` to ``clip`` (None: no clipping), optimizer step.

    :func:`train` runs it every step. ``zero_grad=False`` leaves the clearing to the caller (a
    probe that reads memory with or without the gradients); ``before_step()`` runs between the
    backward (and clipping) and the optimizer step, where such a probe reads the allocator.
    """
    if clip is not None and params is None:
        raise WorkbookError("backward_step: clip needs params (the tensors whose gradient norm "
                            "is clipped)")
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    if before_step is not None:
        before_step()
    optimizer.step()


Batches = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.nn.Module, object], torch.Tensor]


def train(model: torch.nn.Module, cfg: TrainConfig, *, seed: int, vocab_size: int | None = None,
          device: torch.device | str | None = None, train_ids: torch.Tensor | None = None,
          val_ids: torch.Tensor | None = None, batches: Batches | None = None,
          validate: Callable[[], float] | None = None, optimizer=None,
          master_weights: bool = False, clip: float | None = 1.0, amp: bool = True,
          loss_fn: LossFn | None = None, progress: bool = False,
          desc: str = "training", on_log: Callable[[dict], None] | None = None
          ) -> pd.DataFrame:
    """Train ``model`` in place; return the loss log.

    Batches: random windows of ``train_ids`` (default: the corpus), or ``batches(step,
    generator)`` returning ``(inputs, targets)`` (targets of -100 are ignored: loss masking).
    The held-out loss: ``validate()`` if given, else windows of ``val_ids``; ``cfg.eval_every=
    cfg.steps`` evaluates only at the start and end. ``optimizer``: any object with ``step``
    and ``zero_grad`` and ``param_groups`` (default :func:`make_optimizer`). ``clip=None``:
    no gradient clipping; ``amp=False``: no bf16 autocast on a GPU (the model's own dtype).
    ``loss_fn(model, batch)``: the training loss of whatever ``batches`` returned (default: the
    next-token loss of ``(inputs, targets)``), under the autocast that ``amp`` says.

    Rows: ``step, split ('train'|'val'), loss, lr, tokens``. ``on_log(row)`` is called for each
    row as it appears (a notebook's live plot). Without ``on_log``, on a GPU, the train losses
    stay on the device until the end: no host-device sync per step (tiny models are
    launch-bound, and a sync per step would stall them). The batches depend only on ``seed``.
    """
    from workbook.progress import each

    device = torch.device(device or next(model.parameters()).device)
    if batches is None:
        if vocab_size is None and (train_ids is None or (val_ids is None and validate is None)):
            raise WorkbookError("train needs vocab_size (the corpus's tokenizer) or train_ids "
                                "and val_ids")
        ids = token_ids("train", vocab_size) if train_ids is None else train_ids

        def batches(step: int, gen: torch.Generator):
            return random_batch(ids, cfg.batch_size, cfg.seq_len, gen)
    if validate is None:
        held_out = token_ids("val", vocab_size) if val_ids is None else val_ids

        def validate() -> float:
            return evaluate(model, held_out, cfg.batch_size, cfg.seq_len, cfg.eval_batches,
                            device)
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer if optimizer is not None else make_optimizer(
        model, cfg, master_weights=master_weights)
    params = [p for p in model.parameters() if p.requires_grad]
    rows: list[dict] = []
    # Train losses as device tensors, read once at the end: a GPU then never waits for the
    # host. On a CPU there is no such wait, and a small tensor kept per step pins the freed
    # activations around it (the heap grew ~7 GB over 1000 steps of a 4096-vocab model).
    deferred = on_log is None and device.type == "cuda"

    def log(step: int, split: str, loss: float, lr: float) -> None:
        row = {"step": step, "split": split, "loss": loss, "lr": lr,
               "tokens": step * cfg.batch_size * cfg.seq_len}
        rows.append(row)
        if on_log is not None:
            on_log(row)

    def set_lr(lr: float) -> None:
        for group in opt.param_groups:
            group["lr"] = lr

    # On a CPU, as many threads as there are idle cores (hardware.cpu_threads): PyTorch's
    # default of one per core makes a loaded machine three times slower, not faster.
    threads = torch_threads() if device.type == "cpu" else contextlib.nullcontext()
    with threads:
        model.train()
        for step in each(range(cfg.steps), desc=desc, disable=not progress):
            if step % cfg.eval_every == 0:
                log(step, "val", validate(), lr_at(step, cfg))
            set_lr(lr_at(step, cfg))
            batch = batches(step, gen)
            if loss_fn is None:
                x, y = batch
                with autocast(device) if amp else contextlib.nullcontext():
                    logits = _logits(model, x.to(device))
                loss = next_token_loss(logits, y.to(device))
            else:
                with autocast(device) if amp else contextlib.nullcontext():
                    loss = loss_fn(model, batch)
            backward_step(loss, opt, params=params, clip=clip)
            log(step + 1, "train", loss.detach() if deferred else loss.item(), lr_at(step, cfg))
        log(cfg.steps, "val", validate(), lr_at(cfg.steps - 1, cfg))
    model.eval()
    if deferred:
        train_rows = [r for r in rows if r["split"] == "train"]
        for row, value in zip(train_rows, torch.stack([r["loss"] for r in train_rows]).tolist(),
                              strict=True):
            row["loss"] = value
    return pd.DataFrame(rows)


def warm_up_for_graph(body: Callable[[], None], clear: Callable[[], None], steps: int) -> None:
    """Run ``clear(); body()`` ``steps`` times on a side stream, as PyTorch's CUDA-graph notes
    ask before a capture (libraries initialise, an optimizer creates its state), then make the
    current stream wait for them. ``clear`` unsets the gradients (``zero_grad(set_to_none=True)``).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(steps):
            clear()
            body()
    torch.cuda.current_stream().wait_stream(side)


def capture_graph(body: Callable[[], None], clear: Callable[[], None]) -> torch.cuda.CUDAGraph:
    """Record ``body()`` (forward, backward, optimizer step) into a CUDA graph; nothing runs until
    ``replay()``. ``clear()`` first: with the gradients unset, the captured backward writes them
    afresh at every replay instead of adding to the last replay's."""
    graph = torch.cuda.CUDAGraph()
    clear()
    with torch.cuda.graph(graph):
        body()
    return graph


class StaticStep:
    """One pre-training step whose every input is a tensor on the device, read at a step counter
    that is itself a device tensor: the window starts of each step (``starts``, (steps, batch)),
    the learning rates (:func:`lr_at`, precomputed), the loss written to ``losses[step]``.
    Nothing in it reads a value back to Python, so it can be captured once in a CUDA graph and
    replayed (:func:`train_static`); called directly, it is the same update as :func:`train`'s
    on the same batches (AdamW with decay on matrices, clipping, bf16 autocast on a GPU).

    The model should run :data:`workbook.model.CAUSAL_SDPA` attention: under capture,
    transformers' own "sdpa" builds an explicit mask (it cannot check for packed sequences
    there), which costs SDPA its FlashAttention kernel.
    """

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, ids: torch.Tensor,
                 starts: torch.Tensor, *, betas=(0.9, 0.95), clip: float | None = 1.0):
        if starts.dim() != 2 or tuple(starts.shape) != (cfg.steps, cfg.batch_size):
            raise WorkbookError(f"starts must be (steps, batch_size) = ({cfg.steps}, "
                                f"{cfg.batch_size}); got {tuple(starts.shape)}")
        last = len(ids) - cfg.seq_len - 1      # a window reads seq_len + 1 tokens
        if ids.dim() != 1 or last < 0 or int(starts.min()) < 0 or int(starts.max()) > last:
            raise WorkbookError(f"starts must lie in 0 to {last} (a 1-D stream of {len(ids)} "
                                f"tokens, windows of {cfg.seq_len} + 1); got "
                                f"{int(starts.min())} to {int(starts.max())}")
        self.model, self.ids, self.clip = model, ids, clip
        self.device = ids.device
        self.starts = starts.to(self.device)
        self.lrs = torch.tensor([lr_at(i, cfg) for i in range(cfg.steps)], device=self.device)
        self.lr = torch.zeros((), device=self.device)
        self.step = torch.zeros((), dtype=torch.long, device=self.device)
        self.losses = torch.zeros(cfg.steps, device=self.device)
        self.offsets = torch.arange(cfg.seq_len + 1, device=self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(model, cfg, betas=betas, lr=self.lr)

    def __call__(self) -> None:
        at = self.step.view(1)
        self.lr.copy_(self.lrs.index_select(0, at).view(()))
        window = self.ids[self.starts.index_select(0, at).view(-1, 1) + self.offsets]
        # no autocast cache: a graph must not keep casts made outside it
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.device.type == "cuda", cache_enabled=False):
            logits = _logits(self.model, window[:, :-1])
        loss = next_token_loss(logits, window[:, 1:])
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        self.optimizer.step()
        self.losses.index_copy_(0, at, loss.detach().float().view(1))
        self.step.add_(1)


def train_static(model: torch.nn.Module, cfg: TrainConfig, ids: torch.Tensor,
                 starts: torch.Tensor, *, betas=(0.9, 0.95), clip: float | None = 1.0,
                 cuda_graph: bool = False, eager_steps: int = 3) -> tuple[torch.Tensor, dict]:
    """Pre-train ``model`` for ``cfg.steps`` steps of :class:`StaticStep` on windows of ``ids``
    (a token stream on the device) starting at ``starts`` (steps, batch_size); return the
    per-step train losses (on the device) and ``{"graphed_steps", "graph_error"}``.

    ``cuda_graph=True`` (a GPU): the first ``eager_steps`` run as usual (they create the
    optimizer's state and warm up the libraries, on a side stream as CUDA graphs need), then one
    step is captured in a CUDA graph and the rest replay it: no Python, no kernel launches, no
    host sync per step. That is what a launch-bound tiny model's step is mostly made of. Where
    capture fails, the error is returned and the rest runs eagerly (``graphed_steps`` 0).
    """
    check_range("eager_steps", eager_steps, 1, 1000)
    cuda = ids.device.type == "cuda"
    if cuda_graph and not cuda:
        raise WorkbookError("cuda_graph needs the token stream on a GPU; allowed on a CPU: "
                            "cuda_graph=False")
    step = StaticStep(model, cfg, ids, starts, betas=betas, clip=clip)

    def clear() -> None:
        step.optimizer.zero_grad(set_to_none=True)

    def eagerly(n: int) -> None:
        with contextlib.nullcontext() if cuda else torch_threads():
            for _ in range(n):
                clear()
                step()

    model.train()
    info = {"graphed_steps": 0, "graph_error": ""}
    if not cuda_graph:
        eagerly(cfg.steps)
    else:
        warm_up_for_graph(step, clear, min(cfg.steps, eager_steps))
        rest = cfg.steps - min(cfg.steps, eager_steps)
        try:
            graph = capture_graph(step, clear) if rest else None
        except RuntimeError as exc:   # an op that cannot be captured: the rest runs eagerly
            info["graph_error"] = str(exc).splitlines()[0][:200]
            torch.cuda.synchronize()   # a broken capture must not leave the device broken
            eagerly(rest)
        else:
            for _ in range(rest):
                graph.replay()
            info["graphed_steps"] = rest
    model.eval()
    return step.losses, info


class MasterWeightAdamW:
    """AdamW for a model whose weights are BF16, on FP32 master copies of them.

    This is how large-scale mixed precision is usually run (Megatron-LM's ``--bf16``, DeepSpeed
    BF16 + ZeRO): the model itself is BF16, so every activation, residual and gradient it touches
    is half the bytes of the autocast way (FP32 weights cast to BF16 at every matmul, FP32
    residual stream); the optimizer keeps the FP32 weights and moments that small updates
    need. One :meth:`step`: copy the BF16 gradients into FP32, fused AdamW on the FP32 masters,
    round the masters back into the model.

    Model states per parameter: 2 (BF16 weight) + 2 (BF16 gradient) + 4 (FP32 master) + 4
    (FP32 gradient copy) + 8 (Adam moments) = 20 bytes, against autocast's 4 + 4 + 8 = 16 plus
    the transient BF16 weight copies: speed bought with memory.
    """

    def __init__(self, params, lr: float = 1e-3, compile: bool = False, **adamw_kwargs):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise WorkbookError("MasterWeightAdamW got no trainable parameters")
        self.master = [p.detach().float().clone() for p in self.params]
        if compile:
            # torch.compile fuses the two copies and the (multi-tensor) AdamW arithmetic into a
            # few Triton kernels: one pass over the parameters instead of three.
            adamw_kwargs.update(foreach=True, fused=False)
        else:
            adamw_kwargs.setdefault("fused", self.master[0].is_cuda)
        self.optimizer = torch.optim.AdamW(self.master, lr=lr, **adamw_kwargs)
        self.param_groups = self.optimizer.param_groups
        self._update = torch.compile(self._copy_step_copy) if compile else self._copy_step_copy

    def _copy_step_copy(self) -> None:
        pairs = [(p.grad, m.grad) for p, m in zip(self.params, self.master, strict=True)
                 if p.grad is not None]
        if pairs:
            torch._foreach_copy_([m for _, m in pairs], [g for g, _ in pairs])
        self.optimizer.step()
        torch._foreach_copy_(self.params, self.master)   # round the FP32 masters into BF16

    @torch.no_grad()
    def step(self) -> None:
        for p, m in zip(self.params, self.master, strict=True):
            if p.grad is None:
                m.grad = None             # no gradient this step: AdamW skips it, as in torch
            elif m.grad is None:
                m.grad = torch.empty_like(m)
        self._update()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

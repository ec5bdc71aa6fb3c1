"""Evaluation's experiments, both fine-tuning the workbook's base model:

* ``test_task_training`` - two SFT runs of the same base model with the same step budget, one
  on a general task mix, one on the same mix plus data *shaped like the benchmark* (never its
  items). The benchmark score jumps; the general tasks and the pre-training loss do not.
* ``mid_training`` - continued pre-training (the same next-token loss on raw text) on a domain
  slice of the corpus, the docstrings with doctest examples: domain loss falls, general loss
  rises; replaying some general text holds the regression back. Trained with
  :func:`workbook.training.train` (AdamW at a constant learning rate, no weight decay, no
  clipping, no autocast).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbook import sft, training
from workbook.config import check_choice, check_range
from workbook.data import load_corpus, random_batch, token_ids
from workbook.hardware import torch_device
from workbook.registry import Experiment

# -------------------------------------------------------------------- exact-match benchmarks


def exact_match_eval(model: torch.nn.Module, tokenizer, records: Sequence[dict],
                     max_new_tokens: int = 12) -> dict[str, float]:
    """Greedy replies to held-out single-turn task records; the fraction exactly right."""
    items = sft.task_items(records)
    replies = sft.generate_replies(model, tokenizer, [p for p, _ in items], max_new_tokens)
    return sft.score_replies(replies, items, tokenizer)


def per_task_exact_match(model: torch.nn.Module, tokenizer, tasks: Sequence[str], n: int,
                         seed: int) -> dict[str, float]:
    """Exact match per task family on ``n`` held-out items each (seeded, never trained on)."""
    return {task: exact_match_eval(model, tokenizer, heldout(task, n, seed))["exact_match"]
            for task in tasks}


def heldout(task: str, n: int, seed: int) -> list[dict]:
    """The held-out items of one task family (the same for every caller with this seed)."""
    return sft.task_records([task], n, seed + 1000 + stable_hash(task), prefix=f"eval-{task}")


def stable_hash(text: str) -> int:
    """A number from ``text`` that is the same in every process (``hash`` is salted)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:6], 16)


def corpus_loss(model: torch.nn.Module, ids: torch.Tensor, seq_len: int, n_windows: int = 32
                ) -> float:
    """Mean next-token loss on ``n_windows`` evenly spaced windows of a token stream."""
    device = next(model.parameters()).device
    seq_len = min(seq_len, len(ids) - 1)
    starts = torch.linspace(0, len(ids) - seq_len - 1, n_windows).long()
    windows = torch.stack([ids[s:s + seq_len + 1] for s in starts]).to(device)   # (W, T+1)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits
        loss = training.next_token_loss(logits, windows[:, 1:])
    return loss.item()


# ---------------------------------------------------------------- training on the test task


@dataclass(frozen=True)
class TestTaskConfig:
    """Benchmark = held-out items of ``benchmark``; general = the other task families."""

    benchmark: str
    general: tuple[str, ...]
    model_preset: str
    n_train: int
    n_eval: int
    steps: int
    batch_size: int
    lr: float
    test_share: float           # share of the second run's training chats shaped like the test
    max_turns: int = 1          # exchanges per training chat (more: more answers per step)

    def __post_init__(self) -> None:
        check_choice("benchmark", self.benchmark, list(sft.TASKS))
        for task in self.general:
            check_choice("general task", task, [t for t in sft.TASKS if t != self.benchmark])
        check_choice("model_preset", self.model_preset, ("small", "full"))
        check_range("n_train", self.n_train, 8, 1_000_000)
        check_range("n_eval", self.n_eval, 4, 10_000)
        check_range("steps", self.steps, 1, 100_000)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("lr", self.lr, 1e-6, 1e-1)
        check_range("test_share", self.test_share, 0.0, 0.9)
        check_range("max_turns", self.max_turns, 1, 8)


def training_mix(cfg: TestTaskConfig, seed: int, with_test: bool) -> list[dict]:
    banned = {p for p, _ in sft.task_items(heldout(cfg.benchmark, cfg.n_eval, seed))}
    for task in cfg.general:
        banned |= {p for p, _ in sft.task_items(heldout(task, cfg.n_eval, seed))}
    n_test = round(cfg.n_train * cfg.test_share) if with_test else 0
    general = sft.task_records(cfg.general, cfg.n_train - n_test, seed, exclude=banned,
                               max_turns=cfg.max_turns, prefix="general")
    shaped = sft.task_records([cfg.benchmark], n_test, seed + 1, exclude=banned,
                              max_turns=cfg.max_turns, prefix="test-shaped") if n_test else []
    mixed = general + shaped
    random.Random(seed).shuffle(mixed)
    return mixed


def run_test_task(cfg: TestTaskConfig, seed: int) -> pd.DataFrame:
    """Base model, general SFT, and general SFT with test-shaped data: scores side by side."""
    device = torch_device()
    val = token_ids("val")
    rows = []
    for variant in ("base", "general_sft", "test_task_sft"):
        torch.manual_seed(seed)
        model, tok = sft.base_model(cfg.model_preset, seed, device)
        if variant != "base":
            train = training_mix(cfg, seed, with_test=variant == "test_task_sft")
            sft.train_sft(model, tok, train, policy="answer_only", steps=cfg.steps,
                          batch_size=cfg.batch_size, lr=cfg.lr, seed=seed)
        scores = per_task_exact_match(model, tok, (cfg.benchmark, *cfg.general), cfg.n_eval,
                                      seed)
        general = float(np.mean([scores[t] for t in cfg.general]))
        seq_len = model.config.max_position_embeddings
        for metric, value, unit in (
                ("benchmark_exact_match", scores[cfg.benchmark], "fraction"),
                ("general_exact_match", general, "fraction"),
                ("pretraining_val_loss", corpus_loss(model, val, seq_len), "nats/token")):
            rows.append({"variant": variant, "metric": metric, "value": value, "unit": unit})
        rows += [{"variant": variant, "metric": f"exact_match_{t}", "value": v,
                  "unit": "fraction"} for t, v in scores.items()]
        del model
    frame = pd.DataFrame(rows)
    frame["benchmark"] = cfg.benchmark
    frame["model_preset"] = cfg.model_preset
    frame["source"] = "measured"
    return frame[["benchmark", "model_preset", "variant", "metric", "value", "unit", "source"]]


TEST_TASK_PRESETS = {
    "small": TestTaskConfig(benchmark="last", general=("add", "count"), model_preset="small",
                            n_train=2000, n_eval=96, steps=60, batch_size=16, lr=3e-3,
                            test_share=0.5, max_turns=3),
    "full": TestTaskConfig(benchmark="last", general=("count", "sort", "reverse"),
                           model_preset="full", n_train=20000, n_eval=200, steps=500,
                           batch_size=64, lr=1e-3, test_share=0.3),
}


# ----------------------------------------------------------------------------- mid-training


def domain_split(seed: int = 0) -> dict[str, str]:
    """The corpus cut into a domain (docstrings with doctest examples, ``>>>``) and the rest,
    each with a held-out tenth chosen by a hash of the text (stable across machines)."""
    docs = [d for d in load_corpus().split("\n\n") if d.strip()]
    parts: dict[str, list[str]] = {"domain_train": [], "domain_val": [], "general_train": [],
                                   "general_val": []}
    for doc in docs:
        kind = "domain" if ">>>" in doc else "general"
        held = int(hashlib.sha256(f"{seed}:{doc}".encode()).hexdigest()[:8], 16) % 10 == 0
        parts[f"{kind}_{'val' if held else 'train'}"].append(doc)
    return {k: "\n\n".join(v) for k, v in parts.items()}


@dataclass(frozen=True)
class MidTrainingConfig:
    model_preset: str
    replay: tuple[float, ...]    # share of each batch drawn from general text
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    eval_every: int

    def __post_init__(self) -> None:
        check_choice("model_preset", self.model_preset, ("small", "full"))
        for share in self.replay:
            check_range("replay", share, 0.0, 0.9)
        check_range("steps", self.steps, 1, 100_000)
        check_range("batch_size", self.batch_size, 2, 1024)
        check_range("seq_len", self.seq_len, 8, 4096)
        check_range("lr", self.lr, 1e-6, 1e-1)
        check_range("eval_every", self.eval_every, 1, 100_000)


def continue_pretraining(model: torch.nn.Module, streams: dict[str, torch.Tensor],
                         cfg: MidTrainingConfig, replay: float, seed: int) -> list[dict]:
    """Train ``model`` on domain text with a ``replay`` share of general text in each batch;
    domain and general held-out loss every ``eval_every`` steps (and at the end) as rows."""
    seq_len = min(cfg.seq_len, model.config.max_position_embeddings)
    n_general = round(cfg.batch_size * replay)
    rows: list[dict] = []
    done = [0]                    # batches drawn so far: the step an evaluation comes after

    def batches(_step: int, gen: torch.Generator):
        done[0] += 1
        x, y = random_batch(streams["domain_train"], cfg.batch_size - n_general, seq_len, gen)
        if n_general:
            gx, gy = random_batch(streams["general_train"], n_general, seq_len, gen)
            x, y = torch.cat([x, gx]), torch.cat([y, gy])
        return x, y

    def validate() -> float:
        losses = {split: corpus_loss(model, streams[f"{split}_val"], seq_len)
                  for split in ("domain", "general")}
        rows.extend({"replay": replay, "step": done[0], "metric": f"{split}_val_loss",
                     "value": value} for split, value in losses.items())
        model.train()
        return losses["domain"]

    tcfg = training.TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, seq_len=seq_len,
                                lr=cfg.lr, warmup=0, weight_decay=0.0,
                                eval_every=cfg.eval_every, schedule="constant")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    training.train(model, tcfg, seed=seed, batches=batches, validate=validate, optimizer=opt,
                   clip=None, amp=False)
    return rows


def run_mid_training(cfg: MidTrainingConfig, seed: int) -> pd.DataFrame:
    """Continued pre-training on the domain slice; domain and general loss against step."""
    device = torch_device()
    _, tok = sft.base_model(cfg.model_preset, seed, "cpu")
    streams = {k: torch.tensor(tok(v, add_special_tokens=False)["input_ids"])
               for k, v in domain_split(seed).items()}
    rows = []
    for replay in cfg.replay:
        model, _ = sft.base_model(cfg.model_preset, seed, device)
        rows += continue_pretraining(model, streams, cfg, replay, seed)
        del model
    frame = pd.DataFrame(rows)
    frame["model_preset"] = cfg.model_preset
    frame["unit"] = "nats/token"
    frame["source"] = "measured"
    return frame[["model_preset", "replay", "step", "metric", "value", "unit", "source"]]


MID_PRESETS = {
    "small": MidTrainingConfig(model_preset="small", replay=(0.0, 0.5), steps=30,
                               batch_size=8, seq_len=64, lr=1e-3, eval_every=10),
    "full": MidTrainingConfig(model_preset="full", replay=(0.0, 0.25, 0.5), steps=300,
                              batch_size=32, seq_len=256, lr=1e-3, eval_every=50),
}


EXPERIMENTS = [
    Experiment(name="test_task_training",
               summary="SFT with benchmark-shaped data lifts the benchmark, not general skill",
               notebook="10_evaluation_alignment", run=run_test_task,
               presets=TEST_TASK_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=900),
    Experiment(name="mid_training",
               summary="continued pre-training on a domain slice: domain vs general loss",
               notebook="10_evaluation_alignment", run=run_mid_training, presets=MID_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900),
]

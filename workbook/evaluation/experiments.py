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

import copy
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbook import sft, training
from workbook.config import WorkbookError, check_choice, check_range
from workbook.data import load_corpus, random_batch, token_ids
from workbook.evaluation import dpo, preferences
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
    """The corpus cut into a domain (docstrings with doctest examples, ``>>>``) and the rest.

    By a hash of each document (stable across machines): the domain keeps a tenth as ``dev``
    (early stopping looks only at it) and a tenth as ``test`` (the claim looks only at it,
    never trained on nor chosen by); general text keeps a tenth as ``val``.
    """
    docs = [d for d in load_corpus().split("\n\n") if d.strip()]
    parts: dict[str, list[str]] = {"domain_train": [], "domain_dev": [], "domain_test": [],
                                   "general_train": [], "general_val": []}
    for doc in docs:
        bucket = int(hashlib.sha256(f"{seed}:{doc}".encode()).hexdigest()[:8], 16) % 10
        if ">>>" in doc:
            parts["domain_" + ("test" if bucket == 0 else "dev" if bucket == 1 else "train")
                  ].append(doc)
        else:
            parts["general_" + ("val" if bucket == 0 else "train")].append(doc)
    return {k: "\n\n".join(v) for k, v in parts.items()}


@dataclass(frozen=True)
class MidTrainingConfig:
    """Continued pre-training on the domain slice, sized so the comparison is fair: at most
    ``epochs`` passes over the domain's training tokens (a tiny slice read 80 times is
    memorised, and its held-out loss rises for that reason alone), a lower learning rate than
    pre-training, early stopping on the domain's dev split, ``seeds`` training seeds."""

    model_preset: str
    replay: tuple[float, ...]    # share of each batch drawn from general text
    epochs: float                # passes over the domain's training tokens
    batch_size: int
    seq_len: int
    lr: float
    eval_every: int
    seeds: int = 3

    def __post_init__(self) -> None:
        check_choice("model_preset", self.model_preset, ("small", "full"))
        for share in self.replay:
            check_range("replay", share, 0.0, 0.9)
        check_range("epochs", self.epochs, 0.05, 20.0)
        check_range("batch_size", self.batch_size, 2, 1024)
        check_range("seq_len", self.seq_len, 8, 4096)
        check_range("lr", self.lr, 1e-6, 1e-1)
        check_range("eval_every", self.eval_every, 1, 100_000)
        check_range("seeds", self.seeds, 1, 20)


def mid_training_steps(cfg: MidTrainingConfig, domain_tokens: int, seq_len: int,
                       replay: float) -> int:
    """Steps that read the domain's training tokens ``cfg.epochs`` times at this replay share
    (replay takes batch rows from the domain, so it gets more steps for the same passes)."""
    per_step = max(cfg.batch_size - round(cfg.batch_size * replay), 1) * seq_len
    return max(1, math.ceil(cfg.epochs * domain_tokens / per_step))


def continue_pretraining(model: torch.nn.Module, streams: dict[str, torch.Tensor],
                         cfg: MidTrainingConfig, replay: float, seed: int) -> list[dict]:
    """Train ``model`` on domain text with a ``replay`` share of general text in each batch;
    domain dev/test and general held-out loss every ``eval_every`` steps (and at the end)."""
    seq_len = min(cfg.seq_len, model.config.max_position_embeddings)
    n_general = round(cfg.batch_size * replay)
    steps = mid_training_steps(cfg, len(streams["domain_train"]), seq_len, replay)
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
        losses = {split: corpus_loss(model, streams[split], seq_len)
                  for split in ("domain_dev", "domain_test", "general_val")}
        rows.extend({"replay": replay, "train_seed": seed, "step": done[0],
                     "metric": f"{split}_loss", "value": value}
                    for split, value in losses.items())
        model.train()
        return losses["domain_dev"]

    tcfg = training.TrainConfig(steps=steps, batch_size=cfg.batch_size, seq_len=seq_len,
                                lr=cfg.lr, warmup=0, weight_decay=0.0,
                                eval_every=min(cfg.eval_every, steps), schedule="constant")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    training.train(model, tcfg, seed=seed, batches=batches, validate=validate, optimizer=opt,
                   clip=None, amp=False)
    return rows


def run_mid_training(cfg: MidTrainingConfig, seed: int) -> pd.DataFrame:
    """Continued pre-training on the domain slice; domain dev/test and general loss against
    step, for each replay share and training seed (the base model and split stay the same)."""
    device = torch_device()
    _, tok = sft.base_model(cfg.model_preset, 0, "cpu")
    streams = {k: torch.tensor(tok(v, add_special_tokens=False)["input_ids"])
               for k, v in domain_split(0).items()}
    rows = [{"replay": 0.0, "train_seed": seed, "step": 0, "metric": f"{k}_tokens",
             "value": float(len(v))} for k, v in streams.items()]
    for train_seed in range(seed, seed + cfg.seeds):
        for replay in cfg.replay:
            torch.manual_seed(train_seed)
            model, _ = sft.base_model(cfg.model_preset, 0, device)
            rows += continue_pretraining(model, streams, cfg, replay, train_seed)
            del model
    frame = pd.DataFrame(rows)
    frame["model_preset"] = cfg.model_preset
    frame["unit"] = np.where(frame["metric"].str.endswith("_tokens"), "tokens", "nats/token")
    frame["source"] = "measured"
    return frame[["model_preset", "replay", "train_seed", "step", "metric", "value", "unit",
                  "source"]]


MID_PRESETS = {
    # the domain's training slice holds ~24k tokens: 0.3 passes of batch 8 x 64 are ~15 steps
    "small": MidTrainingConfig(model_preset="small", replay=(0.0, 0.5), epochs=0.3,
                               batch_size=8, seq_len=64, lr=3e-4, eval_every=10, seeds=3),
    # 2 passes of batch 8 x 128: ~47 steps without replay, ~94 with half the rows replayed
    "full": MidTrainingConfig(model_preset="full", replay=(0.0, 0.25, 0.5), epochs=2.0,
                              batch_size=8, seq_len=128, lr=3e-4, eval_every=8, seeds=3),
}


# ------------------------------------------------------------------------------------- DPO


@dataclass(frozen=True)
class DPOConfig:
    """SFT once from the base model, then DPO ``seeds`` times from that SFT model on pairs of
    its own wrong answers; the interval covers DPO's seeds (pair split, batch order), not the
    SFT run. ``safety``: the safety chats join the SFT mix and the safety pairs the DPO data,
    and a second SFT model without them is the "before" of the refusal rates."""

    tasks: tuple[str, ...]
    model_preset: str
    n_sft: int                  # SFT training chats
    sft_steps: int
    sft_lr: float
    n_pair_prompts: int         # fresh prompts the SFT model answers; its wrong answers = pairs
    n_eval: int                 # held-out exact-match items per task family
    steps: int                  # DPO steps
    batch_size: int             # pairs per DPO step (and chats per SFT step)
    lr: float
    beta: float
    eval_every: int
    heldout_share: float        # share of the task pairs kept for the reward curves
    safety: bool = True         # mix safety chats into SFT and safety pairs into DPO
    safety_copies: int = 3      # each safety chat this often in the SFT mix (presets: ~20 %)
    seeds: int = 3
    max_new_tokens: int = 10

    def __post_init__(self) -> None:
        for task in self.tasks:
            check_choice("task", task, list(sft.TASKS))
        check_choice("model_preset", self.model_preset, ("small", "full"))
        check_range("n_sft", self.n_sft, 8, 1_000_000)
        check_range("sft_steps", self.sft_steps, 1, 100_000)
        check_range("sft_lr", self.sft_lr, 1e-6, 1e-1)
        check_range("n_pair_prompts", self.n_pair_prompts, 16, 100_000)
        check_range("n_eval", self.n_eval, 4, 10_000)
        check_range("steps", self.steps, 1, 100_000)
        check_range("batch_size", self.batch_size, 2, 1024)
        check_range("lr", self.lr, 1e-7, 1e-2)
        check_range("beta", self.beta, 1e-3, 10.0)
        check_range("eval_every", self.eval_every, 1, 100_000)
        check_range("heldout_share", self.heldout_share, 0.05, 0.5)
        check_range("seeds", self.seeds, 1, 20)
        check_range("max_new_tokens", self.max_new_tokens, 4, 64)
        check_range("safety_copies", self.safety_copies, 1, 100)


def _replies_right(model: torch.nn.Module, tok, items: Sequence[tuple[str, str]],
                   max_new_tokens: int) -> list[bool]:
    replies = sft.generate_replies(model, tok, [p for p, _ in items], max_new_tokens)
    return [r["reply"] == a.strip() for r, (_, a) in zip(replies, items, strict=True)]


def alignment_scores(model: torch.nn.Module, tok, items: Sequence[tuple[str, str]],
                     max_new_tokens: int) -> tuple[dict[str, float], list[bool]]:
    """Exact match on held-out task items, refusal on held-out unsafe requests, over-refusal
    on held-out harmless look-alikes and on the task items; and which items it got right."""
    right = _replies_right(model, tok, items, max_new_tokens)
    scores = {
        "exact_match": sum(right) / len(right),
        "refusal_rate_unsafe": preferences.refusal_rate(
            model, tok, preferences.safety_prompts("heldout", "unsafe"), max_new_tokens),
        "refusal_rate_safe": preferences.refusal_rate(
            model, tok, preferences.safety_prompts("heldout", "safe"), max_new_tokens),
        "refusal_rate_tasks": preferences.refusal_rate(model, tok, [p for p, _ in items],
                                                       max_new_tokens),
    }
    return scores, right


def train_dpo(policy: torch.nn.Module, tok, train: Sequence[dict], heldout: Sequence[dict],
              cfg: DPOConfig, seed: int) -> list[dict]:
    """DPO from ``policy`` (its frozen copy is the reference) through the workbook's one loop,
    :func:`workbook.training.train`, with the DPO loss (:func:`~workbook.evaluation.dpo.
    pairs_loss`) as its ``loss_fn``: batches of pairs drawn by ``random.Random(seed)``, AdamW
    without weight decay at a constant ``lr``, gradient norm clipped to 1, no autocast. Held-out
    reward rows at step 0, every ``eval_every`` steps and at the end."""
    reference = dpo.frozen_reference(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    order = random.Random(seed)
    rows: list[dict] = []
    stats: dict[str, float] = {}

    def batches(step: int, gen: torch.Generator) -> list[dict]:
        return order.sample(list(train), min(cfg.batch_size, len(train)))

    def validate() -> float:
        stats.update(dpo.reward_stats(policy, reference, tok, heldout, cfg.beta))
        policy.train()                 # reward_stats left it in eval mode
        return stats["dpo_loss"]

    def on_log(row: dict) -> None:     # each row as train logs it: the order of the steps
        if row["split"] == "train":
            rows.append({"step": row["step"], "metric": "train_dpo_loss", "value": row["loss"]})
        else:
            rows.extend({"step": row["step"], "metric": k, "value": v} for k, v in stats.items())

    loop = training.TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                warmup=0, weight_decay=0.0, eval_every=cfg.eval_every,
                                schedule="constant")
    training.train(policy, loop, seed=seed, batches=batches, validate=validate, optimizer=opt,
                   clip=1.0, amp=False, on_log=on_log,
                   loss_fn=lambda model, pairs: dpo.pairs_loss(model, reference, tok, pairs,
                                                               cfg.beta))
    return rows


def run_dpo(cfg: DPOConfig, seed: int) -> pd.DataFrame:
    """SFT model -> its own wrong answers as rejected -> DPO (safety chats in the SFT mix and
    safety pairs in the DPO data); reward curves on held-out pairs, and SFT without safety
    data, SFT and DPO on held-out items and requests."""
    device = torch_device()
    _, tok = sft.base_model(cfg.model_preset, 0, "cpu")
    evals = [item for t in cfg.tasks for item in sft.task_items(heldout(t, cfg.n_eval, seed))]
    banned = {p for p, _ in evals}
    tasks = sft.task_records(cfg.tasks, cfg.n_sft, seed, exclude=banned, max_turns=1,
                             prefix="sft")

    def sft_model(with_safety: bool) -> torch.nn.Module:
        torch.manual_seed(seed)
        model, _ = sft.base_model(cfg.model_preset, 0, device)
        chats = tasks + (preferences.safety_chats(seed, cfg.safety_copies) if with_safety
                         else [])
        sft.train_sft(model, tok, chats, policy="answer_only", steps=cfg.sft_steps,
                      batch_size=cfg.batch_size, lr=cfg.sft_lr, seed=seed)
        return model

    rows = []
    if cfg.safety:                 # "before" the safety data: the same SFT without it
        plain = sft_model(False)
        rows += [{"train_seed": seed, "model": "sft_no_safety", "step": 0, "metric": k,
                  "value": v} for k, v in alignment_scores(plain, tok, evals,
                                                          cfg.max_new_tokens)[0].items()]
        del plain
    model = sft_model(cfg.safety)
    prompts = sft.task_records(cfg.tasks, cfg.n_pair_prompts, seed + 7, exclude=banned,
                               prefix="pairs")
    pairs = preferences.task_pairs(model, tok, prompts, cfg.max_new_tokens)
    if len(pairs) < 4:
        raise WorkbookError(f"the SFT model got all but {len(pairs)} of {cfg.n_pair_prompts} "
                            "pair prompts right: no rejected answers to learn from; allowed: "
                            "fewer sft_steps or more n_pair_prompts")
    sft_scores, sft_right = alignment_scores(model, tok, evals, cfg.max_new_tokens)
    rows += [{"train_seed": seed, "model": "sft", "step": 0, "metric": k, "value": v}
            for k, v in sft_scores.items()]
    rows += [{"train_seed": seed, "model": "sft", "step": 0, "metric": k, "value": float(v)}
             for k, v in (("task_pairs", len(pairs)), ("eval_items", len(evals)),
                          ("heldout_requests", len(preferences.safety_prompts("heldout",
                                                                              "safe"))))]
    for train_seed in range(seed, seed + cfg.seeds):
        shuffled = list(pairs)
        random.Random(train_seed).shuffle(shuffled)
        n_held = max(2, round(len(shuffled) * cfg.heldout_share))
        train = shuffled[n_held:] + (preferences.safety_pairs(train_seed) if cfg.safety else [])
        torch.manual_seed(train_seed)
        policy = copy.deepcopy(model)
        curve = train_dpo(policy, tok, train, shuffled[:n_held], cfg, train_seed)
        rows += [{"train_seed": train_seed, "model": "dpo", **r} for r in curve]
        scores, right = alignment_scores(policy, tok, evals, cfg.max_new_tokens)
        scores["win_rate_vs_sft"] = preferences.win_rate(right, sft_right)
        rows += [{"train_seed": train_seed, "model": "dpo", "step": cfg.steps, "metric": k,
                  "value": v} for k, v in scores.items()]
        del policy
    frame = pd.DataFrame(rows)
    frame["model_preset"] = cfg.model_preset
    frame["unit"] = frame["metric"].map(_DPO_UNITS).fillna("fraction")
    frame["source"] = "measured"
    return frame[["model_preset", "model", "train_seed", "step", "metric", "value", "unit",
                  "source"]]


_DPO_UNITS = {"dpo_loss": "nats", "train_dpo_loss": "nats", "reward_margin": "nats (x beta)",
              "chosen_reward": "nats (x beta)", "rejected_reward": "nats (x beta)",
              "task_pairs": "pairs", "eval_items": "items", "heldout_requests": "requests"}

DPO_PRESETS = {
    # seconds on a CPU: the small base model, a short SFT, 30 DPO steps per seed
    "small": DPOConfig(tasks=("add", "last"), model_preset="small", n_sft=1000, sft_steps=40,
                       sft_lr=3e-3, n_pair_prompts=160, n_eval=32, steps=24, batch_size=16,
                       lr=5e-4, beta=0.1, eval_every=8, heldout_share=0.2, seeds=3,
                       max_new_tokens=7),
    "full": DPOConfig(tasks=("last", "count", "reverse"), model_preset="full", n_sft=8000,
                      sft_steps=300, sft_lr=1e-3, n_pair_prompts=2000, n_eval=200, steps=200,
                      batch_size=32, lr=1e-4, beta=0.1, eval_every=20, heldout_share=0.2,
                      seeds=3, max_new_tokens=10, safety_copies=20),
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
    Experiment(name="dpo_alignment",
               summary="DPO on the SFT model's own wrong answers (+ refusal pairs): margin, "
                       "exact answers, refusals",
               notebook="10_evaluation_alignment", run=run_dpo, presets=DPO_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900,
               typical_s={"small": 30, "full": 120}),
]

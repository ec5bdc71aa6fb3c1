"""Evaluation and alignment: exact-match benchmarks, training on the test task, mid-training,
and pairwise preferences turned into a leaderboard.

* ``test_task_training`` - two SFT runs of the same base model with the same step budget, one
  on a general task mix, one on the same mix plus data *shaped like the benchmark* (never its
  items). The benchmark score jumps; the general tasks and the pre-training loss do not.
* ``mid_training`` - continued pre-training (the same next-token loss on raw text) on a domain
  slice of the corpus, the docstrings with doctest examples: domain loss falls, general loss
  rises; replaying some general text holds the regression back.
* :func:`simulate_arena` / :func:`fit_bradley_terry` / :func:`online_elo` - a Chatbot-Arena
  style leaderboard from simulated votes, with knobs for comparison noise, verbosity bias and
  identity leaks, so one sees how a ranking moves for reasons other than quality.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbook import sft
from workbook.config import WorkbookError, check_choice, check_range, check_values, takes_rows
from workbook.registry import Experiment
from workbook.results import preset_of

ELO_SCALE = 400 / math.log(10)     # one Bradley-Terry logit = 173.7 Elo points
ELO_BASE = 1000.0


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
    return sft.task_records([task], n, seed + 1000 + _stable(task), prefix=f"eval-{task}")


def _stable(text: str) -> int:
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
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(),
                                                 windows[:, 1:].flatten())
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


def _mix(cfg: TestTaskConfig, seed: int, with_test: bool) -> list[dict]:
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
    from workbook.data import token_ids

    device = "cuda" if torch.cuda.is_available() else "cpu"
    val = token_ids("val")
    rows = []
    for variant in ("base", "general_sft", "test_task_sft"):
        torch.manual_seed(seed)
        model, tok = sft.base_model(cfg.model_preset, seed, device)
        if variant != "base":
            train = _mix(cfg, seed, with_test=variant == "test_task_sft")
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
    from workbook.data import load_corpus

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


def run_mid_training(cfg: MidTrainingConfig, seed: int) -> pd.DataFrame:
    """Continued pre-training on the domain slice; domain and general loss against step."""
    from workbook.data import random_batch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    _, tok = sft.base_model(cfg.model_preset, seed, "cpu")
    streams = {k: torch.tensor(tok(v, add_special_tokens=False)["input_ids"])
               for k, v in domain_split(seed).items()}
    rows = []
    for replay in cfg.replay:
        model, _ = sft.base_model(cfg.model_preset, seed, device)
        seq_len = min(cfg.seq_len, model.config.max_position_embeddings)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(seed)
        n_general = round(cfg.batch_size * replay)
        for step in range(cfg.steps + 1):
            if step % cfg.eval_every == 0 or step == cfg.steps:
                for split in ("domain", "general"):
                    rows.append({"replay": replay, "step": step, "metric": f"{split}_val_loss",
                                 "value": corpus_loss(model, streams[f"{split}_val"], seq_len)})
            if step == cfg.steps:
                break
            x, y = random_batch(streams["domain_train"], cfg.batch_size - n_general, seq_len, gen)
            if n_general:
                gx, gy = random_batch(streams["general_train"], n_general, seq_len, gen)
                x, y = torch.cat([x, gx]), torch.cat([y, gy])
            model.train()
            logits = model(input_ids=x.to(device)).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(),
                                                     y.to(device).flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
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


# ------------------------------------------------------------------ preferences, leaderboard


@dataclass(frozen=True)
class ArenaConfig:
    """Simulated pairwise votes between models of known quality.

    ``noise``: how unsure a voter is (the logistic temperature; 1 = the Bradley-Terry model
    itself). ``verbosity_bias``: logit bonus per unit of length difference, given to the longer
    answer. ``identity_leak``: share of votes where the voter recognises the models (e.g. asks
    "who are you?") and votes for the favoured one whenever it is in the pair.
    """

    n_models: int = 8
    n_battles: int = 1000
    noise: float = 1.0
    verbosity_bias: float = 0.0
    identity_leak: float = 0.0
    favoured: int = 5            # which model the leak favours (0 = the best)
    k_factor: float = 16.0

    def __post_init__(self) -> None:
        check_range("n_models", self.n_models, 2, 100)
        check_range("n_battles", self.n_battles, 1, 1_000_000)
        check_range("noise", self.noise, 0.05, 20.0)
        check_range("verbosity_bias", self.verbosity_bias, 0.0, 5.0)
        check_range("identity_leak", self.identity_leak, 0.0, 1.0)
        check_range("favoured", self.favoured, 0, self.n_models - 1)
        check_range("k_factor", self.k_factor, 0.1, 200.0)


def arena_models(cfg: ArenaConfig, seed: int) -> pd.DataFrame:
    """The models' true quality (evenly spaced logits, best first) and verbosity (random)."""
    rng = np.random.default_rng(seed)
    quality = np.linspace(1.5, -1.5, cfg.n_models)
    verbosity = rng.normal(0.0, 1.0, cfg.n_models)
    names = [f"model-{chr(ord('A') + i)}" if i < 26 else f"model-{i}"
             for i in range(cfg.n_models)]
    return pd.DataFrame({"model": names, "quality": quality, "verbosity": verbosity,
                         "favoured": np.arange(cfg.n_models) == cfg.favoured})


def simulate_arena(cfg: ArenaConfig, seed: int) -> pd.DataFrame:
    """``n_battles`` votes: columns ``a``, ``b`` (model indices) and ``a_wins`` (0/1)."""
    models = arena_models(cfg, seed)
    rng = np.random.default_rng(seed + 1)
    a = rng.integers(0, cfg.n_models, cfg.n_battles)
    b = (a + rng.integers(1, cfg.n_models, cfg.n_battles)) % cfg.n_models   # never a == b
    q, v = models["quality"].to_numpy(), models["verbosity"].to_numpy()
    logit = (q[a] - q[b]) / cfg.noise + cfg.verbosity_bias * (v[a] - v[b])
    a_wins = rng.random(cfg.n_battles) < 1 / (1 + np.exp(-logit))
    leaked = rng.random(cfg.n_battles) < cfg.identity_leak
    a_wins = np.where(leaked & (a == cfg.favoured), True, a_wins)
    a_wins = np.where(leaked & (b == cfg.favoured), False, a_wins)
    return pd.DataFrame({"a": a, "b": b, "a_wins": a_wins.astype(int)})


def fit_bradley_terry(battles: pd.DataFrame, n_models: int, iters: int = 500,
                      prior: float = 0.5) -> np.ndarray:
    """Maximum-likelihood Bradley-Terry strengths by Hunter's MM updates, in Elo points.

    P(i beats j) = p_i / (p_i + p_j). ``prior`` adds that many virtual half-wins against a
    model of average strength, so a model that never lost still gets a finite score.
    """
    wins = np.zeros((n_models, n_models))          # wins[i, j]: times i beat j
    np.add.at(wins, (battles["a"], battles["b"]), battles["a_wins"])
    np.add.at(wins, (battles["b"], battles["a"]), 1 - battles["a_wins"])
    games = wins + wins.T
    p = np.ones(n_models)
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :])).sum(1) + 2 * prior / (p + 1.0)
        p = (wins.sum(1) + prior) / denom
        p /= np.exp(np.log(p).mean())              # fix the scale: geometric mean 1
    return ELO_BASE + ELO_SCALE * np.log(p)


def fit_bradley_terry_logistic(battles: pd.DataFrame, n_models: int,
                               prior: float = 0.5) -> np.ndarray:
    """The same model fitted as a logistic regression by a generic optimiser (scipy): the
    reference :func:`fit_bradley_terry` is tested against."""
    from scipy.optimize import minimize

    a, b, y = (battles[c].to_numpy() for c in ("a", "b", "a_wins"))

    def nll(theta: np.ndarray) -> float:
        d = theta[a] - theta[b]
        loglik = y * -np.logaddexp(0, -d) + (1 - y) * -np.logaddexp(0, d)
        # The MM prior: ``prior`` half-wins and half-losses against a strength-0 model.
        pri = prior * (-np.logaddexp(0, -theta) - np.logaddexp(0, theta))
        return -(loglik.sum() + pri.sum())

    theta = minimize(nll, np.zeros(n_models), method="L-BFGS-B").x
    return ELO_BASE + ELO_SCALE * (theta - theta.mean())


def online_elo(battles: pd.DataFrame, n_models: int, k_factor: float = 16.0) -> np.ndarray:
    """Classic sequential Elo: each vote moves both ratings by K·(result - expected).
    Unlike Bradley-Terry it depends on the order of the votes."""
    rating = np.full(n_models, ELO_BASE)
    for a, b, a_wins in battles[["a", "b", "a_wins"]].itertuples(index=False):
        expected = 1 / (1 + 10 ** ((rating[b] - rating[a]) / 400))
        delta = k_factor * (a_wins - expected)
        rating[a] += delta
        rating[b] -= delta
    return rating


def leaderboard(cfg: ArenaConfig, seed: int = 0) -> pd.DataFrame:
    """True ranking next to the Bradley-Terry and online-Elo rankings from simulated votes."""
    models = arena_models(cfg, seed)
    battles = simulate_arena(cfg, seed)
    board = models.assign(
        true_elo=ELO_BASE + ELO_SCALE * (models["quality"] - models["quality"].mean()),
        bt_elo=fit_bradley_terry(battles, cfg.n_models),
        online_elo=online_elo(battles, cfg.n_models, cfg.k_factor))
    for col in ("true", "bt", "online"):
        board[f"{col}_rank"] = board[f"{col}_elo"].rank(ascending=False, method="min").astype(int)
    return board


def rank_agreement(board: pd.DataFrame, column: str = "bt_rank") -> float:
    """Kendall's tau between the true ranking and ``column`` (1 = identical order)."""
    from scipy.stats import kendalltau

    return float(kendalltau(board["true_rank"], board[column]).statistic)


def leaderboard_explorer(seed: int = 0):
    """Sliders for the arena's knobs; the bars show true vs fitted Elo, ranks in the labels."""
    from workbook import plots, widgets

    check_range("seed", seed, 0, 2**31 - 1)

    fig = plots.figure("Arena leaderboard: true quality vs fitted from votes", "model",
                       "Elo")
    fig.add_bar(x=[], y=[], name="true")
    fig.add_bar(x=[], y=[], name="Bradley-Terry fit")
    fig.add_bar(x=[], y=[], name="online Elo")

    def draw(fig, n_battles: int, noise: float, verbosity_bias: float,
             identity_leak: float) -> str:
        cfg = ArenaConfig(n_battles=n_battles, noise=noise, verbosity_bias=verbosity_bias,
                          identity_leak=identity_leak)
        board = leaderboard(cfg, seed)
        labels = [f"{m}{' ★' if f else ''}<br>v={v:+.1f}" for m, f, v in
                  zip(board["model"], board["favoured"], board["verbosity"], strict=True)]
        for trace, col in zip(fig.data, ("true_elo", "bt_elo", "online_elo"), strict=True):
            trace.x, trace.y = labels, board[col].round(0)
        return (f"Kendall tau with the true order: Bradley-Terry {rank_agreement(board):.2f}, "
                f"online Elo {rank_agreement(board, 'online_rank'):.2f}. "
                f"★ = the model an identity leak favours; v = verbosity.")

    fig.update_layout(barmode="group")
    return widgets.Explorer({
        "n_battles": widgets.slider("battles", 50, 20000, 50, 1000),
        "noise": widgets.slider("comparison noise", 0.25, 5.0, 0.25, 1.0),
        "verbosity_bias": widgets.slider("verbosity bias", 0.0, 2.0, 0.1, 0.0),
        "identity_leak": widgets.slider("identity leak", 0.0, 0.5, 0.05, 0.0),
    }, draw, fig)


def knob_sweep(knob: str, values: Sequence[float], seeds: Sequence[int] = (0, 1, 2, 3, 4)
               ) -> pd.DataFrame:
    """Rank agreement (Kendall tau) and the favoured model's rank as one knob moves."""
    check_choice("knob", knob, ("noise", "verbosity_bias", "identity_leak", "n_battles"))
    check_values("values", values)
    check_values("seeds", seeds)
    rows = []
    for value in values:
        if knob == "n_battles":  # a count: checked here, before int() can fail on NaN or text
            check_range("n_battles", value, 1, 1_000_000)
            value = int(value)
        for seed in seeds:
            check_range("seed", seed, 0, 2**31 - 1)
            cfg = ArenaConfig(**{knob: value})
            board = leaderboard(cfg, seed)
            fav = board[board["favoured"]]
            rows += [{knob: value, "seed": seed, "metric": "kendall_tau",
                      "value": rank_agreement(board), "source": "measured"},
                     {knob: value, "seed": seed, "metric": "favoured_rank_shift",
                      "value": int(fav["true_rank"].iloc[0] - fav["bt_rank"].iloc[0]),
                      "source": "measured"}]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- pipeline


@takes_rows
def test_task_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: benchmark and general exact match, pre-training loss."""
    keys = [c for c in ("variant", "source") if c in rows.columns]
    table = rows.pivot_table(index=keys, columns="metric", values="value", sort=False)
    wanted = ["benchmark_exact_match", "general_exact_match", "pretraining_val_loss"]
    return table[[c for c in wanted if c in table.columns]].round(3).reset_index()


@takes_rows
def test_task_caption(rows: pd.DataFrame) -> str:
    """What the test-task rows measured, in words made from the rows and their preset's config:
    the benchmark and general families, the budget, and the pre-training loss next to uniform
    guessing (ln V), so the notebook's text cannot drift from its data."""
    import math

    from workbook.model import BASE_RECIPES
    from workbook.results import where_label

    preset = preset_of(rows)
    cfg = TEST_TASK_PRESETS[preset if preset in TEST_TASK_PRESETS else "small"]
    bench = rows["benchmark"].dropna().iloc[0] if "benchmark" in rows and \
        rows["benchmark"].notna().any() else cfg.benchmark
    uniform = math.log(BASE_RECIPES[cfg.model_preset].model.vocab_size)
    loss = {v: _value(rows, variant=v, metric="pretraining_val_loss")
            for v in ("base", "general_sft", "test_task_sft")}
    names = {"general_sft": "general SFT", "test_task_sft": "test-task SFT"}
    worse = [names[v] for v in names if loss[v] > uniform]
    text = (f"*{where_label(rows)}, {preset} preset:* benchmark **{bench}** (held-out items); "
            f"general families **{', '.join(cfg.general)}**; {cfg.steps} steps of batch "
            f"{cfg.batch_size}, {cfg.test_share:.0%} of the test-task model's chats shaped like "
            f"the benchmark. Pre-training loss on ordinary text: base {loss['base']:.2f} nats, "
            f"general SFT {loss['general_sft']:.2f}, test-task SFT {loss['test_task_sft']:.2f}; "
            f"a uniform guess over the {BASE_RECIPES[cfg.model_preset].model.vocab_size:,} "
            f"tokens scores ln V = {uniform:.2f}.")
    if worse:
        text += (f" **{' and '.join(worse)} predict ordinary text worse than a uniform guess**: "
                 "confidently wrong, not merely unsure: the narrow fine-tuning has overwritten "
                 "what pre-training taught.")
    return text


@takes_rows
def mid_training_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per replay share: domain and general held-out loss before and after mid-training."""
    first, last = rows["step"].min(), rows["step"].max()
    part = rows[rows["step"].isin([first, last])]
    table = part.pivot_table(index="replay", columns=["metric", "step"], values="value")
    table.columns = [f"{m} @ step {s}" for m, s in table.columns]
    return table.round(3).reset_index()


def _value(rows: pd.DataFrame, **where: object) -> float:
    part = rows
    for col, val in where.items():
        part = part[part[col] == val]
    return float(part["value"].mean()) if len(part) else float("nan")


@takes_rows
def claims(test_task: pd.DataFrame, mid: pd.DataFrame,
           sweeps: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The notebook's claims, each verdict computed from the rows (never typed in)."""

    def where(rows: pd.DataFrame) -> str:
        from workbook.results import where_label

        return f"{where_label(rows)}, {preset_of(rows)} preset"

    bench = {v: _value(test_task, variant=v, metric="benchmark_exact_match")
             for v in ("general_sft", "test_task_sft")}
    gen = {v: _value(test_task, variant=v, metric="general_exact_match")
           for v in ("general_sft", "test_task_sft")}
    end, start = mid["step"].max() if len(mid) else 0, 0
    dom = (_value(mid, replay=0.0, step=start, metric="domain_val_loss"),
           _value(mid, replay=0.0, step=end, metric="domain_val_loss"))
    gl0 = (_value(mid, replay=0.0, step=start, metric="general_val_loss"),
           _value(mid, replay=0.0, step=end, metric="general_val_loss"))
    replays = sorted(mid["replay"].unique()) if len(mid) else [0.0]
    gl_rep = _value(mid, replay=replays[-1], step=end, metric="general_val_loss")
    leak = sweeps.get("identity_leak", pd.DataFrame(columns=["metric", "value"]))
    shift = leak[leak["metric"] == "favoured_rank_shift"].groupby("identity_leak")["value"].mean()
    noise = sweeps.get("noise", pd.DataFrame(columns=["metric", "value"]))
    tau = noise[noise["metric"] == "kendall_tau"].groupby("noise")["value"].mean()
    from workbook.claims import Claim, claims_table

    # Exact match over n_eval items per family: a gap under two standard errors of a difference
    # of shares is noise. Losses: 1 % of the loss. The arena sweeps have seeds: their spread.
    n = TEST_TASK_PRESETS.get(preset_of(test_task), TEST_TASK_PRESETS["small"]).n_eval

    def share_noise(p: float, q: float, items: int) -> float:
        return 2 * math.sqrt((p * (1 - p) + q * (1 - q)) / items) if p == p and q == q else 0.0

    def seed_noise(frame: pd.DataFrame, knob: str, metric: str) -> tuple[float, float]:
        """Mean change from the knob's first to its last value, and 2 SE over seeds."""
        part = frame[frame["metric"] == metric] if len(frame) else frame
        if part.empty or part[knob].nunique() < 2:
            return float("nan"), 0.0
        lo, hi = part[part[knob] == part[knob].min()], part[part[knob] == part[knob].max()]
        diff = hi.set_index("seed")["value"] - lo.set_index("seed")["value"]
        return float(diff.mean()), float(2 * diff.std(ddof=1) / math.sqrt(len(diff)))

    leak = sweeps.get("identity_leak", pd.DataFrame())
    noise = sweeps.get("noise", pd.DataFrame())
    shift, shift_se = seed_noise(leak, "identity_leak", "favoured_rank_shift")
    tau, tau_se = seed_noise(noise, "noise", "kendall_tau")
    seeds = len(set(leak["seed"])) if len(leak) else 0
    sim = (f"simulation, {seeds} seeds: the bias is put in by design, so this shows its size "
           "on a leaderboard, not that a real arena has it")
    gap = gen["test_task_sft"] - gen["general_sft"]
    return claims_table([
        Claim("training on the test task lifts the benchmark", "lecture", bench["general_sft"],
              bench["test_task_sft"], "share", where(test_task), kind="at_least",
              abs_tol=share_noise(bench["general_sft"], bench["test_task_sft"], n)),
        Claim("... without a general gain (change in general exact match)", "lecture", 0.0,
              gap, "share", where(test_task), rel_tol=0,
              abs_tol=share_noise(gen["general_sft"], gen["test_task_sft"], n)),
        Claim("mid-training lowers the domain loss", "lecture", dom[0], dom[1], "nats",
              where(mid), kind="at_most", abs_tol=0.01 * dom[0] if dom[0] == dom[0] else 0.0),
        Claim("mid-training without replay raises the general loss",
              "continual-learning folklore", gl0[0], gl0[1], "nats", where(mid),
              kind="at_least", abs_tol=0.01 * gl0[0] if gl0[0] == gl0[0] else 0.0),
        Claim(f"replaying {replays[-1]:.0%} general text limits that regression",
              "common practice", gl0[1], gl_rep, "nats", where(mid), kind="at_most",
              abs_tol=0.01 * gl0[1] if gl0[1] == gl0[1] else 0.0),
        Claim("an identity leak lifts the favoured model's rank (places, leak vs none)",
              "lecture (Chatbot Arena caveats)", 0.0, shift, "places", sim, kind="at_least",
              abs_tol=shift_se),
        Claim("noisy comparisons scramble the ranking (change in Kendall tau)",
              "lecture (Chatbot Arena caveats)", 0.0, tau, "tau", sim, kind="at_most",
              abs_tol=tau_se),
    ])


def results_label(rows: pd.DataFrame) -> str:
    from workbook.results import provenance_label

    return provenance_label(rows[rows["source"] == "recorded"])


def pipeline_table() -> pd.DataFrame:
    """The alignment pipeline: what each stage optimises, on what data, where this workbook
    measures it."""
    rows = [
        ("pre-training", "next-token loss on every token", "broad raw text (trillions of "
         "tokens)", "01_pretraining: the base model"),
        ("mid-training", "the same loss, unchanged", "a domain/task slice, often with replay "
         "of general text", "10: mid_training"),
        ("SFT", "next-token loss on answer tokens only", "instruction-answer pairs (10K-10M)",
         "09: sft_masking"),
        ("preference tuning", "push chosen above rejected (reward model + PPO, or DPO)",
         "pairwise human or AI preferences", "10: the arena leaderboard (the data side)"),
        ("evaluation", "exact-match benchmarks, pairwise human votes", "held-out tasks",
         "10: test_task_training, the leaderboard"),
    ]
    return pd.DataFrame(rows, columns=["stage", "objective", "data", "measured in"])


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


def check_battles(battles: pd.DataFrame, n_models: int) -> None:
    """Votes must name two different models in range and say who won (0/1)."""
    for col in ("a", "b", "a_wins"):
        if col not in battles.columns:
            raise WorkbookError(f"battles need columns a, b, a_wins; missing {col!r}")
    bad = (battles["a"] == battles["b"]) | ~battles["a"].between(0, n_models - 1) | \
        ~battles["b"].between(0, n_models - 1) | ~battles["a_wins"].isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise WorkbookError(f"battle row {row} is malformed; allowed: a != b in 0..{n_models - 1}"
                            ", a_wins 0 or 1")

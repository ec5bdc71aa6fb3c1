"""Pairwise preferences turned into a leaderboard, Chatbot-Arena style: simulated votes with
knobs for comparison noise, verbosity bias and identity leaks, fitted by Bradley-Terry (Hunter's
MM updates, checked against a logistic regression) and by online Elo, so one sees how a ranking
moves for reasons other than quality. Pure NumPy: no model is trained here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import kendalltau

from workbook.config import WorkbookError, check_choice, check_range, check_values

ELO_SCALE = 400 / math.log(10)     # one Bradley-Terry logit = 173.7 Elo points
ELO_BASE = 1000.0


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
    return float(kendalltau(board["true_rank"], board[column]).statistic)


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

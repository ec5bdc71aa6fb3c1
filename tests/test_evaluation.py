"""Evaluation: Bradley-Terry (MM) against a generic logistic fit, Elo, the arena's knobs moving
rankings the way they should, the corpus domain split, and the experiments' rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbook import evaluation as ev
from workbook import sft
from workbook.config import WorkbookError


def test_bradley_terry_mm_matches_a_generic_logistic_fit():
    cfg = ev.ArenaConfig(n_models=6, n_battles=2000, noise=1.0)
    battles = ev.simulate_arena(cfg, seed=0)
    mm = ev.fit_bradley_terry(battles, 6, iters=2000)
    ref = ev.fit_bradley_terry_logistic(battles, 6)
    np.testing.assert_allclose(mm - mm.mean(), ref - ref.mean(), atol=1.0,
                               err_msg="MM updates and scipy's optimiser must find the same MLE")


def test_bradley_terry_recovers_the_true_order_without_biases():
    board = ev.leaderboard(ev.ArenaConfig(n_models=6, n_battles=20000), seed=1)
    assert ev.rank_agreement(board) == pytest.approx(1.0), board[["model", "true_rank", "bt_rank"]]
    gap = (board["bt_elo"] - board["bt_elo"].mean()) - (board["true_elo"] - board["true_elo"]
                                                        .mean())
    assert gap.abs().max() < 40, "with many clean votes the fitted Elo must be near the truth"


def test_elo_is_zero_sum_and_moves_toward_the_winner():
    battles = pd.DataFrame({"a": [0, 0, 1], "b": [1, 2, 2], "a_wins": [1, 1, 0]})
    rating = ev.online_elo(battles, 3, k_factor=32)
    assert rating.sum() == pytest.approx(3 * ev.ELO_BASE), "Elo moves points, never makes them"
    assert rating[0] > ev.ELO_BASE > rating[1], rating
    assert rating[0] - ev.ELO_BASE == pytest.approx(16 + 32 * (1 - 1 / (1 + 10 ** (-16 / 400))))


def test_identity_leak_lifts_the_favoured_model():
    clean = ev.leaderboard(ev.ArenaConfig(n_battles=6000, favoured=5), seed=0)
    leaky = ev.leaderboard(ev.ArenaConfig(n_battles=6000, favoured=5, identity_leak=0.3),
                           seed=0)
    fav = lambda b: int(b.loc[b["favoured"], "bt_rank"].iloc[0])  # noqa: E731
    assert fav(leaky) < fav(clean) - 1, (fav(clean), fav(leaky))


def test_verbosity_bias_rewards_the_verbose_model():
    base = ev.ArenaConfig(n_battles=6000)
    board = ev.leaderboard(ev.ArenaConfig(n_battles=6000, verbosity_bias=1.0), seed=0)
    verbose = board["verbosity"].idxmax()
    neutral = ev.leaderboard(base, seed=0)
    assert board.loc[verbose, "bt_elo"] > neutral.loc[verbose, "bt_elo"] + 50


def test_more_noise_scrambles_the_ranking_more():
    sweep = ev.knob_sweep("noise", [0.5, 4.0], seeds=range(4))
    tau = sweep[sweep["metric"] == "kendall_tau"].groupby("noise")["value"].mean()
    assert tau[0.5] > tau[4.0], tau


def test_bad_arena_input_is_one_line():
    with pytest.raises(WorkbookError, match="noise"):
        ev.ArenaConfig(noise=0)
    with pytest.raises(WorkbookError, match="battle row 1"):
        ev.check_battles(pd.DataFrame({"a": [0, 1], "b": [1, 1], "a_wins": [1, 0]}), 3)


def test_explorer_moves_with_the_knobs():
    explorer = ev.leaderboard_explorer()
    before = list(explorer.fig.data[1].y)
    explorer.set(identity_leak=0.4)
    assert list(explorer.fig.data[1].y) != before, "the fitted Elo must change with the leak"
    assert "Kendall" in explorer.message.value


def test_domain_split_is_disjoint_and_domain_has_doctests():
    parts = ev.domain_split()
    assert all(parts.values()), {k: len(v) for k, v in parts.items()}
    assert ">>>" in parts["domain_val"] and ">>>" not in parts["general_train"]
    val_docs = set(parts["domain_val"].split("\n\n"))
    assert not val_docs & set(parts["domain_train"].split("\n\n")), "held-out domain docs leak"


def test_heldout_items_are_stable_and_never_in_the_training_mix():
    cfg = ev.TEST_TASK_PRESETS["small"]
    held = {p for t in (cfg.benchmark, *cfg.general) for p, _ in sft.task_items(
        ev.heldout(t, cfg.n_eval, 0))}
    assert held == {p for t in (cfg.benchmark, *cfg.general) for p, _ in sft.task_items(
        ev.heldout(t, cfg.n_eval, 0))}, "held-out items must not change between calls"
    mix = ev.training_mix(cfg, 0, with_test=True)
    prompts = {m["content"] for r in mix for m in r["messages"] if m["role"] == "user"}
    assert not prompts & held, "a benchmark item leaked into training"
    shaped = sum(r["id"].startswith("test-shaped") for r in mix)
    assert shaped == round(cfg.n_train * cfg.test_share)


def test_pipeline_names_every_stage():
    stages = list(ev.pipeline_table()["stage"])
    assert stages[:4] == ["pre-training", "mid-training", "SFT", "preference tuning"]

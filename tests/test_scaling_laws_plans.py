"""Scaling laws: which plan a sweep's time claim judges, the recipe in every claim's label, and
recorded sweeps drawn as references (hollow, named), never as this machine's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from workbook import scaling_laws as sl


def _rows(points: pd.DataFrame, source: str, recipe: bool) -> pd.DataFrame:
    """A full-preset sweep of ``points`` (budget, n_params, n_tokens), its loss from a known
    law, and its wall time: 420 s."""
    law = sl.CHINCHILLA_REPLICATION
    rows = points.assign(
        n_params_non_embedding=points["n_params"], compute=points["budget"],
        value=law.loss(points["n_params"], points["n_tokens"]), metric="val_loss", status="ok",
        source=source, device="GPU", preset="full", commit="abc", n_gpus=1, seed=0,
        recorded_at="2026-12-01T00:00:00Z")
    if recipe:
        rows["beta2"] = 0.99
    wall = {"metric": "sweep_wall_s", "value": 420.0, "status": "ok", "source": source,
            "device": "GPU", "preset": "full", "commit": "abc", "n_gpus": 1, "seed": 0,
            "recorded_at": "2026-12-01T00:00:00Z"}
    return pd.concat([rows, pd.DataFrame([wall])], ignore_index=True)


def _todays_plan() -> pd.DataFrame:
    plan = sl.plan_sweep(sl.ISOFLOP_PRESETS["full"])
    return plan.loc[plan["status"] == "planned", ["budget", "n_params", "n_tokens"]]


def _timed(rows: pd.DataFrame) -> pd.Series:
    table = sl.claims(rows, sl.fit_summary(rows, n_boot=20))
    return table[table["claim"].str.startswith("IsoFLOP sweep")].iloc[0]


def test_a_sweep_of_todays_plan_is_judged_as_the_full_preset(ledger_dir):
    plan = _todays_plan()
    timed = _timed(_rows(plan, "measured", recipe=True))
    assert f"today's {len(plan)}-point full preset" in timed["where"], timed["where"]
    assert "per-size recipe" in timed["where"] and "its own" not in timed["where"]


def test_a_sweep_of_another_plan_says_it_is_not_todays_full_preset(ledger_dir):
    """The retired 7-sizes-per-budget plan: its time is its own plan's, not the preset's."""
    n_today = len(_todays_plan())
    points = pd.DataFrame([{"budget": c, "n_params": n, "n_tokens": c / (6 * n)}
                           for c in (3e12, 1e13, 3e13)
                           for n in sl.CHINCHILLA.optimal(c)[0] * np.geomspace(0.25, 4, 7)])
    rows = _rows(points, "recorded", recipe=False)
    timed = _timed(rows)
    assert "full preset" not in timed["claim"], "the claim names no preset; `where` says which"
    assert (f"its own 21-point plan (7 sizes per budget), not today's {n_today}-point full "
            "preset") in timed["where"], timed["where"]
    table = sl.claims(rows, sl.fit_summary(rows, n_boot=20))
    mine = table[table["where"] != "published sizes"]
    assert mine["where"].str.contains("older recipe").all(), "every row names its recipe"


def test_a_recorded_sweep_is_drawn_hollow_and_named_even_when_it_is_the_only_one():
    # the full preset's plan centred on 20 tokens/param, near the synthetic law's (Epoch's
    # replication) minima, so that every minimum lies inside the sizes
    # (a minimum outside them is drawn crossed: tested with the frontier's key)
    cfg = dataclasses.replace(sl.ISOFLOP_PRESETS["full"], center_tokens_per_param=20.0)
    plan = sl.plan_sweep(cfg)
    rows = _rows(plan.loc[plan["status"] == "planned", ["budget", "n_params", "n_tokens"]],
                 "recorded", recipe=True)
    fig = sl.isoflop_figure(rows)
    points = [t for t in fig.data if t.mode == "markers" and t.showlegend is False]
    assert {t.marker.symbol for t in points} == {"circle-open"}
    assert all("recorded on GPU" in t.name for t in points), [t.name for t in points]
    frontier = sl.frontier_figure(rows)
    # its minima take the sweep's own shape, the subtitle's key ('circle: recorded on GPU')
    assert {t.marker.symbol for t in frontier.data if t.mode == "markers"} == {"circle-open"}


def test_a_sweep_of_todays_budgets_but_other_sizes_is_not_todays_plan():
    # the full preset moved its centre (20 -> 10 tokens/param): the sweeps recorded before ran
    # the same budgets and number of points, on other model sizes
    cfg = dataclasses.replace(sl.ISOFLOP_PRESETS["full"], center_tokens_per_param=40.0)
    plan = sl.plan_sweep(cfg)
    other = plan.loc[plan["status"] == "planned", ["budget", "n_params", "n_tokens"]]
    assert len(other) == len(_todays_plan())
    label = sl.plan_judged(_rows(other, "recorded", recipe=True), len(other))
    assert label == f"its own {len(other)}-point plan (today's budgets, other sizes), not today's"
    today = _todays_plan()
    assert sl.plan_judged(_rows(today, "recorded", recipe=True), len(today)).startswith("today's")

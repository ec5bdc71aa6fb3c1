"""More data or a larger batch (workbook/scaling_laws/batch_tokens.py, batch_views.py): the
effects per seed, one budget's ratio with its interval, and the one-batch comparison against
the sweep's fit of the same budget, sizes and seed, on synthetic rows whose answers are known."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from workbook import results
from workbook import scaling_laws as sl
from workbook.config import WorkbookError

BUDGET, SIZES, SEQ = 1e13, [1e5, 2e5, 4e5, 8e5, 1.6e6], 256


def _point(n: float, batch: int, centre: float, seed: int, base: float = 2.0,
           **extra) -> list[dict]:
    tokens = BUDGET / (6 * n)
    steps = round(tokens / (batch * SEQ))
    loss = base + 0.1 * (math.log(n) - math.log(centre)) ** 2 + 0.001 * seed
    base = {"budget": BUDGET, "n_params": n, "n_params_non_embedding": n, "n_tokens": tokens,
            "compute": BUDGET, "batch_size": batch, "steps": steps, "status": "ok",
            "source": "recorded", "device": "GPU there", "preset": "full", "n_gpus": 1,
            "seed": seed, "beta2": 0.99, **extra}
    return [{**base, "metric": "val_loss", "value": loss, "unit": "nats/token"},
            {**base, "metric": "train_s", "value": steps / 100, "unit": "s"}]


def _sweep(seed: int) -> pd.DataFrame:
    """Each size at the batch of ~1000 steps (the largest the smallest batch)."""
    rows = []
    for n in SIZES:
        batch = max(1, round(BUDGET / (6 * n) / (1000 * SEQ)))
        rows += _point(n, batch, 8e5, seed, commit=f"sweep{seed}",
                       recorded_at=f"2026-12-0{seed + 1}T00:00:00Z")
    return pd.DataFrame(rows)


def _one_batch(seed: int) -> pd.DataFrame:
    """Every size at the largest's batch: a parabola whose minimum lies lower (at 4e5 rather
    than 8e5), lowered so that the largest size's loss is the sweep's (it trains alike)."""
    largest = max(1, round(BUDGET / (6 * SIZES[-1]) / (1000 * SEQ)))
    top = math.log(SIZES[-1])
    base = 2.0 + 0.1 * ((top - math.log(8e5)) ** 2 - (top - math.log(4e5)) ** 2)
    rows = []
    for n in SIZES:
        rows += _point(n, largest, 4e5, seed, base, commit="one", one_batch=largest,
                       recorded_at=f"2026-12-0{seed + 3}T00:00:00Z")
    frame = pd.DataFrame(rows)
    big = frame["n_params"] == SIZES[-1]   # the same loss as the sweep's: a parabola at 8e5
    frame.loc[big, "value"] = _sweep(seed).set_index(["n_params", "metric"]).loc[
        [(SIZES[-1], m) for m in frame.loc[big, "metric"]], "value"].to_numpy()
    return frame


def test_budget_ratio_finds_a_known_minimum_and_its_interval_holds_it():
    points = sl.ok_points(_sweep(0))
    fit = sl.budget_ratio(points, n_boot=200)
    assert fit["n_opt"] == pytest.approx(8e5, rel=1e-6)
    assert fit["ratio"] == pytest.approx(BUDGET / (6 * 8e5) / 8e5, rel=1e-6)
    assert fit["low"] <= fit["ratio"] <= fit["high"] and fit["bracketed"]
    assert sl.budget_ratio(points.iloc[:2]) == {}
    with pytest.raises(WorkbookError, match="one budget"):
        sl.budget_ratio(pd.concat([points, points.assign(budget=2 * BUDGET)]))


def test_one_batch_sets_every_size_to_one_batch_and_keeps_the_sweeps_sizes_and_recipe():
    for name, cfg in sl.ONE_BATCH_PRESETS.items():
        sweep = sl.ISOFLOP_PRESETS[cfg.sweep]
        plan = sl.plan_sweep(sl.one_batch_sweep(cfg))
        theirs = sl.plan_sweep(sweep)
        theirs = theirs[np.isclose(theirs["budget"], cfg.budget)]
        assert (plan["batch_size"] == cfg.batch).all(), name
        assert sorted(plan["n_params"]) == sorted(theirs["n_params"]), name
        assert set(plan["lr"]) == set(theirs["lr"]), name   # lr per size, as in the sweep
    full = sl.ONE_BATCH_PRESETS["full"]   # the batch the largest size gets in the sweep
    theirs = sl.plan_sweep(sl.ISOFLOP_PRESETS["full"])
    top = theirs[np.isclose(theirs["budget"], full.budget)]
    assert full.batch == top.loc[top["n_params"].idxmax(), "batch_size"]
    with pytest.raises(WorkbookError, match="allowed"):
        sl.OneBatchConfig(budget=1e13, batch=0)


def test_one_batch_runs_on_the_cpu():
    rows = sl.run_one_batch(sl.ONE_BATCH_PRESETS["small"])
    loss = rows[rows["metric"] == "val_loss"]
    assert len(loss) == 3 and (loss["batch_size"] == 16).all()
    assert loss["value"].between(0, 10).all()
    assert (rows["one_batch"] == 16).all()


def test_batch_effects_pair_runs_whose_tokens_differ_by_a_step_and_keep_each_seed():
    rows = []
    for seed in (0, 1):
        for batch, tokens in ((14, [3_501_568, 8_601_600]), (34, [3_499_008, 8_599_552])):
            for d, value in zip(tokens, [3.4, 2.7] if batch == 14 else [3.7, 2.9], strict=True):
                rows.append({"batch_size": batch, "n_tokens": d, "n_params": 5e5, "seed": seed,
                             "metric": "val_loss", "value": value + 0.01 * seed,
                             "status": "ok", "device": "GPU there", "source": "recorded"})
    effects = sl.batch_token_effects(pd.DataFrame(rows))
    assert len(effects) == 8 and effects["loss change"].notna().all()
    data = effects[effects["changed"] == "tokens"].set_index(["seed", "at"])["loss change"]
    assert data[(0, 14)] == pytest.approx(-0.7) and data[(1, 34)] == pytest.approx(-0.8)
    batch = effects[effects["changed"] != "tokens"]
    assert batch["loss change"].round(6).tolist() == [0.3, 0.2, 0.3, 0.2]
    table = sl.effects_table(pd.DataFrame(rows))
    assert len(table) == 4 and (table["seeds"] == "0, 1").all()
    text = sl.effects_caption(pd.DataFrame(rows))
    assert "+0.30" in text and "cost loss at equal tokens" in text, text
    flipped = pd.DataFrame(rows)
    flipped.loc[(flipped["batch_size"] == 34) & (flipped["seed"] == 1), "value"] -= 1.0
    assert "changes sign" in sl.effects_caption(flipped)


def test_one_batch_table_sets_each_seed_beside_the_sweeps_fit_of_the_same_budget_and_sizes():
    sweeps = pd.concat([_sweep(0), _sweep(1)], ignore_index=True)
    one = pd.concat([_one_batch(0), _one_batch(1)], ignore_index=True)
    table = sl.one_batch_table(one, sweeps)
    assert table["seeds"].tolist() == ["0", "0", "1", "1", "0, 1 pooled", "0, 1 pooled"]
    mine = table[table["batches"].str.startswith("one batch")]
    theirs = table[~table["batches"].str.startswith("one batch")]
    assert (mine["tokens/param"].to_numpy() > theirs["tokens/param"].to_numpy()).all()
    assert theirs["N_opt"].iloc[0] == pytest.approx(8e5, rel=1e-6)
    batches = _sweep(0)["batch_size"]
    assert theirs["batches"].iloc[0] == f"the sweep's ({batches.min()}–{batches.max()})"
    assert (mine["batches"] == f"one batch ({batches.min()})").all()
    claims = sl.one_batch_claims(table)
    assert len(claims) == 6 and claims["measured"].tolist() == table["tokens/param"].tolist()
    text = sl.one_batch_caption(one, sweeps)
    check = [x for x in text.splitlines() if "in both" in x]
    assert len(check) == 2 and all(x.count("2.") >= 2 for x in check), text
    loss = check[0].split("loss ")[1]
    assert loss.split(" here, ")[0] == loss.split(" here, ")[1].split(" in the")[0]
    # a sweep of another seed or other sizes is no match: the one-batch rows stand alone
    alone = sl.one_batch_table(one, sweeps[sweeps["seed"] == 1].assign(seed=5))
    assert set(alone["batches"].str[:9]) == {"one batch"}
    # nor is a sweep already at one batch per budget (batch_rule "largest"): no contrast
    at_one = sl.one_batch_table(one, sweeps.assign(batch_rule="largest"))
    assert set(at_one["batches"].str[:9]) == {"one batch"}
    assert sl.one_batch_per_budget(sweeps.assign(batch_rule="largest"))
    assert not sl.one_batch_per_budget(sweeps.assign(batch_rule="steps"))
    assert not sl.one_batch_per_budget(sweeps), "recorded before the column: a batch per point"
    assert "no sweep of this seed" in sl.one_batch_caption(one, sweeps.iloc[0:0])


def test_the_ratio_caption_names_the_one_batch_result_of_the_main_sweeps_device():
    """On the committed ledger: the bullet's numbers are one_batch_table's."""
    rows = results.load_shown("scaling_isoflop")
    one = results.load_shown("scaling_one_batch")
    if rows.empty or one.empty:
        pytest.skip("no recorded sweep or one-batch rows")
    text = sl.ratio_caption(rows, sl.fit_summary(rows, n_boot=20))
    line = next(x for x in text.splitlines() if x.startswith("* **Which batch:**"))
    table = sl.one_batch_table(one, rows)
    pick = table[table["seeds"] == table["seeds"].iloc[-1]]
    for value in pick["tokens/param"]:
        assert f"{value:.1f} " in line, line


def test_batch_rule_largest_gives_every_size_of_a_budget_its_largest_sizes_batch():
    cfg = sl.ISOFLOP_PRESETS["full"]
    steps = sl.plan_sweep(dataclasses.replace(cfg, batch_rule="steps"))
    one = sl.plan_sweep(dataclasses.replace(cfg, batch_rule="largest"))
    for budget, g in one.groupby("budget"):
        theirs = steps[steps["budget"] == budget]
        assert g["batch_size"].nunique() == 1
        assert g["batch_size"].iloc[0] == theirs.loc[theirs["n_params"].idxmax(), "batch_size"]
        assert sorted(g["n_params"]) == sorted(theirs["n_params"])
        mine = g.set_index("n_params")["steps"].sort_index()
        assert (np.diff(mine.to_numpy()) < 0).all()   # smaller sizes: more steps
    # the largest budget's batch is the one-batch experiment's
    top = one[one["budget"] == one["budget"].max()]
    assert top["batch_size"].iloc[0] == sl.ONE_BATCH_PRESETS["full"].batch
    with pytest.raises(WorkbookError, match="allowed"):
        dataclasses.replace(cfg, batch_rule="smallest")


def test_a_sweep_at_one_batch_per_budget_is_labelled_and_never_pooled_with_the_other_rule():
    a = _sweep(0).assign(commit="a", sweep_commit="a")
    b = _sweep(1).assign(commit="b", sweep_commit="b", batch_rule="largest")
    found = sl.sweeps(pd.concat([a, b], ignore_index=True))
    labels = [where for where, _ in found]
    assert sum("one batch per budget (its largest size's)" in w for w in labels) == 1, labels
    assert sl.seed_pools(found) == []
    c = _sweep(1).assign(commit="c", sweep_commit="c")
    assert len(sl.seed_pools(sl.sweeps(pd.concat([a, c], ignore_index=True)))) == 1


def test_a_minimum_outside_its_sizes_is_not_compared():
    one = _one_batch(0)
    sweep = _sweep(0)
    loss = sweep["metric"] == "val_loss"   # falling all the way: the minimum past the largest
    sweep.loc[loss, "value"] = 3.0 - 0.1 * np.log(sweep.loc[loss, "n_params"])
    text = sl.one_batch_caption(one, sweep)
    assert "the two are not compared" in text and "moved the ratio" not in text, text
    claims = sl.one_batch_claims(sl.one_batch_table(one, sweep)).set_index("claim")
    outside = claims[claims.index.str.contains("sweep's")]
    assert outside["measured"].isna().all() and outside["verdict"].str.startswith("n/a").all()
    assert claims.loc[~claims.index.str.contains("sweep's"), "measured"].notna().all()
    assert "moved the ratio" in sl.one_batch_caption(one, _sweep(0))


def test_a_straight_line_has_no_minimum_inside_and_no_overflow():
    n = np.array(SIZES)
    x, loss, inside = sl.parabola_minimum(n, 3.0 - 0.1 * np.log(n))
    assert not inside and x == pytest.approx(SIZES[-1]) and math.isfinite(loss)


def test_the_plan_at_a_batch_per_point_is_not_todays_plan_and_one_batchs_time_is_predicted():
    cfg = sl.ISOFLOP_PRESETS["full"]
    assert cfg.batch_rule == "largest"

    def timed(plan: pd.DataFrame, graphed: bool = True) -> pd.DataFrame:
        return plan.assign(metric="train_s", value=1.0, status="ok", cuda_graph=graphed)

    assert sl.ran_todays_plan(timed(sl.plan_sweep(cfg)))
    # the same points run eagerly take other times: not today's plan's timing
    assert not sl.ran_todays_plan(timed(sl.plan_sweep(cfg), graphed=False))
    # asked for graphs, but every capture failed and the steps ran eagerly: not graphed either
    plan = timed(sl.plan_sweep(cfg))
    failed = pd.concat([plan, plan.assign(metric="graphed_steps", value=0.0)])
    assert not sl.ran_todays_plan(failed)
    assert sl.ran_todays_plan(pd.concat([plan, plan.assign(metric="graphed_steps", value=9.0)]))
    per_point = dataclasses.replace(cfg, batch_rule="steps")
    assert not sl.ran_todays_plan(timed(sl.plan_sweep(per_point)))
    rows = results.load_shown("scaling_isoflop")
    if rows.empty:
        pytest.skip("no recorded sweep")
    # a plan at a batch per point: the caption also says what one batch per budget would take
    text = sl.time_caption(rows, per_point)
    table = sl.time_table(rows, per_point)
    for (_, row), sweep in zip(table.iterrows(), sl.latest_sweeps(rows), strict=True):
        if np.isfinite(row["predicted training s"]):   # graphed as the plan is
            one = sl.predicted_seconds(cfg, sweep)
            assert f"it predicts {one:.0f} s." in text, text
    assert "With one batch per budget" not in sl.time_caption(rows)


def test_a_seed_swept_twice_counts_once_in_its_pool():
    # a repeat (same seed, another commit) is the same run again: counted twice it would
    # narrow the pooled interval with no new information
    a = _sweep(0).assign(commit="a", sweep_commit="a")
    c = _sweep(1).assign(commit="c", sweep_commit="c")
    again = _sweep(1).assign(commit="d", sweep_commit="d")
    (label, pool), = sl.seed_pools(sl.sweeps(pd.concat([a, c], ignore_index=True)))
    (label2, pool2), = sl.seed_pools(sl.sweeps(pd.concat([a, c, again], ignore_index=True)))
    assert "seeds 0, 1 pooled (2 sweeps" in label2 and len(pool2) == len(pool), label2

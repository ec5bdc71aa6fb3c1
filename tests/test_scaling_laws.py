"""Scaling laws: published numbers, the fits against laws with known answers, the sweep's
plan and bookkeeping (skipped points, checkpoints), and 6·N FLOPs against a FLOP counter."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from workbook import claims, results
from workbook import scaling_laws as sl
from workbook.config import WorkbookError

# --------------------------------------------------------------------------- published laws


def test_chinchilla_fit_implies_its_published_exponents():
    # Hoffmann et al. Table 2, approach 3: a = 0.46, b = 0.54 (from unrounded alpha, beta;
    # the rounded 0.34 / 0.28 of eq. 10 give 0.452 / 0.548).
    assert abs(sl.CHINCHILLA.a - 0.46) < 0.01, f"a = beta/(alpha+beta) = {sl.CHINCHILLA.a:.3f}"
    assert abs(sl.CHINCHILLA.b - 0.54) < 0.01
    assert sl.CHINCHILLA.a + sl.CHINCHILLA.b == pytest.approx(1.0), "C = 6ND forces a + b = 1"
    # The Epoch replication puts the exponents back near approach 1/2's 0.50.
    assert 0.49 < sl.CHINCHILLA_REPLICATION.a < 0.53


@pytest.mark.parametrize("law", [sl.CHINCHILLA, sl.CHINCHILLA_REPLICATION])
def test_closed_form_optimum_is_the_minimum_along_the_isoflop_line(law):
    compute = 5.76e23  # Gopher's (and Chinchilla's) budget
    n_opt, d_opt = law.optimal(compute)
    assert 6 * n_opt * d_opt == pytest.approx(compute), "the optimum must spend exactly C"
    grid = np.geomspace(n_opt / 30, n_opt * 30, 20001)          # brute force, the reference
    brute = grid[np.argmin(law.loss(grid, compute / (6 * grid)))]
    assert brute == pytest.approx(n_opt, rel=1e-3), (
        f"{law.name}: eq. 4 gives N_opt={n_opt:.3g}, a grid search along 6ND=C gives "
        f"{brute:.3g}")


def test_rule_of_thumb_reproduces_the_lectures_table():
    # Lecture: 400M params -> 8B tokens, 1.9e19 FLOPs; Chinchilla 70B -> 1.4T tokens.
    n, d = sl.rule_of_thumb_optimal(6 * 400e6 * 8e9)
    assert n == pytest.approx(400e6) and d == pytest.approx(8e9)
    assert 6 * 400e6 * 8e9 == pytest.approx(1.9e19, rel=0.02)
    n, d = sl.rule_of_thumb_optimal(6 * 70e9 * 1.4e12)
    assert n == pytest.approx(70e9) and d / n == pytest.approx(20)


def test_kaplan_allocates_more_to_parameters_than_chinchilla():
    for compute in (1e21, 1e23, 1e25):
        n_kaplan, _ = sl.kaplan_optimal(compute)
        n_chin, _ = sl.CHINCHILLA_REPLICATION.optimal(compute)
        assert n_kaplan > 2 * n_chin, (
            f"at C={compute:.0e} Kaplan's N_opt {n_kaplan:.3g} should far exceed "
            f"Chinchilla's {n_chin:.3g}: that gap is the 'GPT-3 is under-trained' story")
    # Kaplan's L(N, D) falls with both N and D.
    assert sl.kaplan_loss(1e9, 1e11) > sl.kaplan_loss(1e10, 1e11) > sl.kaplan_loss(1e10, 1e12)


def test_placement_matches_the_lecture():
    table = sl.placement("20 tokens/param").set_index("model")
    assert table.loc["GPT-3 175B", "tokens_per_param"] == pytest.approx(1.71, abs=0.01)
    assert table.loc["GPT-3 175B", "verdict"].startswith("under-trained")
    assert table.loc["Chinchilla 70B", "verdict"] == "near compute-optimal"
    assert table.loc["Llama 3 8B", "verdict"].startswith("over-trained")
    assert table.loc["Llama 3 8B", "tokens_per_param"] > 1000


def test_allocation_rejects_absurd_budgets():
    with pytest.raises(WorkbookError, match="allowed"):
        sl.allocation(0.0)
    frame = sl.allocation(1e24)
    assert set(frame["law"]) == set(sl.LAWS)


def test_overtraining_pays_once_inference_dominates():
    loss = 2.2
    alone = sl.overtraining_costs(loss, inference_tokens=0)
    served = sl.overtraining_costs(loss, inference_tokens=1e14)
    best_alone = alone.loc[alone["total_flops"].idxmin()]
    best_served = served.loc[served["total_flops"].idxmin()]
    assert best_served["n_params"] < best_alone["n_params"], "serving favours a smaller model"
    assert best_served["tokens_per_param"] > 2 * best_alone["tokens_per_param"], (
        "the cheapest model to own is trained on many more tokens per parameter")
    with pytest.raises(WorkbookError, match="floor"):
        sl.overtraining_costs(1.0, 0)


# -------------------------------------------------------------------------------------- fits


def test_power_law_and_parabola_recover_known_answers():
    x = np.geomspace(1e3, 1e6, 7)
    p, k = sl.fit_power_law(x, 3.0 * x**0.42)
    assert p == pytest.approx(0.42) and k == pytest.approx(3.0)
    n = np.geomspace(1e5, 1e7, 5)
    x_min, l_min, inside = sl.parabola_minimum(n, 2.0 + 0.1 * (np.log(n) - np.log(1e6)) ** 2)
    assert x_min == pytest.approx(1e6) and l_min == pytest.approx(2.0) and inside
    _, _, inside = sl.parabola_minimum(n, 3.0 - 0.1 * np.log(n))   # monotone: no minimum
    assert not inside


def _synthetic_sweep(law: sl.ParametricLaw, budgets, noise: float = 0.0, seed: int = 0):
    """IsoFLOP points drawn from a known law: 7 sizes from N_opt/4 to 4·N_opt per budget."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        n_opt, _ = law.optimal(c)
        for n in n_opt * np.geomspace(0.25, 4, 7):
            d = c / (6 * n)
            loss = float(law.loss(n, d)) * (1 + noise * rng.standard_normal())
            rows.append({"budget": c, "n_params": n, "n_params_non_embedding": n,
                         "n_tokens": d, "compute": c, "loss": loss})
    return pd.DataFrame(rows)


def test_isoflop_fit_recovers_the_exponent_of_a_known_law():
    points = _synthetic_sweep(sl.CHINCHILLA, [1e18, 1e19, 1e20, 1e21], noise=0.002)
    fit = sl.fit_exponents(points, n_boot=200, seed=0)
    assert fit.a == pytest.approx(sl.CHINCHILLA.a, abs=0.02), (
        f"approach 2 on data from a law with a={sl.CHINCHILLA.a:.3f} gave {fit.a:.3f}")
    assert fit.a_low <= fit.a <= fit.a_high
    assert fit.a + fit.b == pytest.approx(1.0, abs=0.05), "N_opt·D_opt ∝ C means a + b ≈ 1"


def test_tokens_per_param_at_the_largest_budget_and_no_interval_from_three_sizes():
    law = sl.CHINCHILLA_REPLICATION
    budgets = [1e18, 1e19, 1e20]
    fit = sl.fit_exponents(_synthetic_sweep(law, budgets, noise=0.001), n_boot=100)
    n_opt, d_opt = law.optimal(budgets[-1])
    assert fit.ratio_budget == budgets[-1]
    assert fit.ratio == pytest.approx(d_opt / n_opt, rel=0.1), "D_opt/N_opt at the top budget"
    assert fit.ratio_low <= fit.ratio <= fit.ratio_high
    three = _synthetic_sweep(law, budgets).groupby("budget").head(3)
    bare = sl.fit_exponents(three, n_boot=100)
    assert bare.n_boot == 0 and math.isnan(bare.a_low), (
        "3 sizes per budget have one resample with 3 distinct sizes: no interval, not a "
        "zero-width one")


def test_parametric_fit_recovers_alpha_beta_and_the_floor():
    points = _synthetic_sweep(sl.CHINCHILLA_REPLICATION, [1e18, 1e19, 1e20, 1e21])
    law = sl.fit_parametric(points["n_params"], points["n_tokens"], points["loss"])
    ref = sl.CHINCHILLA_REPLICATION
    assert law.alpha == pytest.approx(ref.alpha, abs=0.03), f"alpha {law.alpha:.3f}"
    assert law.beta == pytest.approx(ref.beta, abs=0.03), f"beta {law.beta:.3f}"
    assert law.E == pytest.approx(ref.E, abs=0.05), f"E {law.E:.3f}"
    fitted = law.loss(points["n_params"], points["n_tokens"])
    np.testing.assert_allclose(fitted, points["loss"], rtol=2e-3)


def test_fits_refuse_too_few_points():
    points = _synthetic_sweep(sl.CHINCHILLA, [1e19])
    with pytest.raises(WorkbookError, match="at least 2 budgets"):
        sl.fit_exponents(points)
    with pytest.raises(WorkbookError, match="≥5 points"):
        sl.fit_parametric([1, 2], [3, 4], [5, 6])


# --------------------------------------------------------------------------------- the sweep


def test_six_n_plus_attention_matches_torch_flop_counter():
    """FLOPs per token of the formula vs torch.utils.flop_counter on a real forward+backward."""
    from torch.utils.flop_counter import FlopCounterMode

    from workbook.model import ModelConfig, build_model

    cfg = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, seq_len=64)
    # Eager attention: explicit matmuls the counter sees (CPU SDPA kernels are not counted).
    model = build_model(cfg, seed=0, attn_implementation="eager")
    assert model.lm_head.weight is model.model.embed_tokens.weight, "tied: total N = matmul N"
    x = torch.randint(0, 512, (2, cfg.seq_len))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=x).logits.sum().backward()
    per_token = counter.get_total_flops() / x.numel()
    predicted = sl.point_flops_per_token(cfg)
    # Eager attention also computes the masked half of QKᵀ and AV: 6·L·T·d more than useful.
    masked_half = 6 * cfg.n_layers * cfg.seq_len * cfg.d_model
    assert per_token == pytest.approx(predicted + masked_half, rel=0.01), (
        f"counted {per_token:.4g} FLOPs/token; 6N + 6·L·T·d (causal) + 6·L·T·d (masked half "
        f"computed anyway) predicts {predicted + masked_half:.4g}")


def test_sweep_counts_flops_with_the_one_flops_per_token_output_layer_included():
    """Issue 16: one FLOPs-per-token. Porian et al.: the output layer's matmul counts."""
    from workbook import flops
    from workbook.model import ModelConfig

    cfg = ModelConfig(vocab_size=2048, d_model=64, n_layers=2, n_heads=4, seq_len=256)
    parts = flops.flops_per_token(cfg, causal=True)
    assert sl.point_flops_per_token(cfg) == pytest.approx(sum(parts.values()))
    blocks = cfg.n_layers * (4 * 64**2 + 3 * 64 * cfg.d_ff)
    assert parts["dense"] == pytest.approx(6 * (blocks + 2048 * 64)), (
        "dense FLOPs must include the vocab x d_model output layer (6 FLOPs per weight)")
    assert parts["attention"] == pytest.approx(6 * 2 * 256 * 64), "causal: half of 12·L·T·d"


def test_plan_spends_each_budget_with_the_per_size_recipe():
    cfg = sl.ISOFLOP_PRESETS["full"]
    plan = sl.plan_sweep(cfg)
    ok = plan[plan["status"] == "planned"]
    assert len(ok) >= 30, "the full preset promises at least 5 budgets x 6 sizes"
    np.testing.assert_allclose(ok["compute"], ok["budget"], rtol=0.03,
                               err_msg="every point must be trained to its budget")
    assert cfg.batch_rule == "largest"
    top = ok.loc[ok.groupby("budget")["n_params"].idxmax()]
    free = top[(top["batch_size"] > cfg.min_batch) & (top["batch_size"] < cfg.max_batch)]
    assert len(free) and free["steps"].between(0.9 * cfg.target_steps,
                                               1.1 * cfg.target_steps).all(), (
        "a budget's largest size, its batch not clamped, takes about target_steps: large "
        "models of a budget are not starved of optimizer steps")
    assert (ok["steps"] >= 0.9 * cfg.target_steps).all(), "the smaller sizes take more steps"
    warm_tokens = ok["warmup"] * ok["batch_size"] * cfg.seq_len
    short = ok["warmup"] < ok["steps"] // 4
    np.testing.assert_allclose(warm_tokens[short], ok.loc[short, "n_params"], rtol=0.5,
                               err_msg="warm-up lasts about N tokens (Porian et al.)")
    by_size = ok.drop_duplicates("n_params").sort_values("n_params")
    assert (np.diff(by_size["lr"]) <= 0).all(), "peak lr falls with model size"
    tiny = dataclasses.replace(cfg, budgets=(1e9,), sizes_per_budget=3)
    skipped = sl.plan_sweep(tiny)
    assert (skipped["status"] == "skipped").all()
    assert "raise the budget" in skipped["error"].iloc[0]


def test_point_settings_beta2_lr_and_batch_rules():
    cfg = sl.ISOFLOP_PRESETS["full"]
    small = sl.point_settings(1e5, 3e6, cfg)
    assert small["beta2"] == cfg.beta2_small_batch, "small batch: the higher beta2"
    assert small["batch_size"] * small["steps"] * cfg.seq_len == pytest.approx(3e6, rel=0.05)
    big = sl.point_settings(1e5, 1e11, cfg)
    assert big["batch_size"] == cfg.max_batch and big["beta2"] == cfg.beta2, (
        f"{cfg.max_batch}x{cfg.seq_len} tokens per step is a large batch: beta2 {cfg.beta2}")
    assert sl.point_settings(1e3, 3e6, cfg)["lr"] == cfg.lr_max, "the lr rule is capped"
    ratio = sl.point_settings(8e6, 3e6, cfg)["lr"] / sl.point_settings(1e6, 3e6, cfg)["lr"]
    assert ratio == pytest.approx(8 ** -cfg.lr_exponent, rel=1e-3)
    with pytest.raises(WorkbookError, match="allowed"):
        sl.point_settings(float("nan"), 3e6, cfg)


def _timed_rows(truth: sl.StepTime) -> pd.DataFrame:
    plan = sl.plan_sweep(sl.ISOFLOP_PRESETS["full"])
    plan = plan[plan["status"] == "planned"]
    seconds = [truth.seconds(r.steps, r.n_layers, r.compute / r.steps)
               for r in plan.itertuples()]
    return plan.assign(metric="train_s", value=seconds, status="ok", device="GPU X",
                       cuda_graph=sl.ISOFLOP_PRESETS["full"].cuda_graph)


def test_step_time_model_recovers_its_coefficients_and_predicts_the_sweep():
    truth = sl.StepTime(fixed_ms=5.0, per_layer_ms=1.5, per_gflop_ms=0.02)
    rows = _timed_rows(truth)
    fit = sl.fit_step_time(rows)
    assert (fit.fixed_ms, fit.per_layer_ms, fit.per_gflop_ms) == pytest.approx(
        (5.0, 1.5, 0.02), rel=1e-6) and fit.device == "GPU X"
    assert sl.predicted_seconds(sl.ISOFLOP_PRESETS["full"], rows) == pytest.approx(
        rows["value"].sum(), rel=1e-6)
    with pytest.raises(WorkbookError, match="≥3 finished points"):
        sl.fit_step_time(rows.head(2))
    table = sl.time_table(rows.assign(preset="full"))
    assert len(table) == 1 and table["sweep"].iloc[0].startswith("this machine (GPU X)")
    assert table["predicted training s"].iloc[0] == pytest.approx(rows["value"].sum(), rel=1e-6)
    assert table["training_s"].iloc[0] == pytest.approx(rows["value"].sum())
    assert np.isnan(table["wall_s"].iloc[0]), "no sweep_wall_s row: NaN, shown as '–' + reason"
    assert sl.time_table(rows.iloc[0:0]).empty, "nothing recorded yet: an empty table"
    # steps run eagerly predict nothing for a plan of CUDA graphs: NaN, and said so
    eager = rows.assign(preset="full", cuda_graph=False)
    assert np.isnan(sl.time_table(eager)["predicted training s"].iloc[0])
    text = sl.time_caption(eager)
    assert "its steps ran eagerly, the plan's run from CUDA graphs" in text and "nan" not in text


def test_step_time_costs_are_never_negative():
    """03's time table: a free least-squares fit of the H200's launch-bound sweep gave a
    negative cost per GFLOP (-0.0083 ms), so that more FLOPs made a step faster."""
    rows = _timed_rows(sl.StepTime(fixed_ms=5.0, per_layer_ms=2.0, per_gflop_ms=0.0))
    gflops = rows["compute"] / rows["steps"] / 1e9
    # step time that falls a little with FLOPs per step: a free fit follows it below zero
    rows["value"] -= 0.004 * gflops * rows["steps"] / 1e3
    free = np.linalg.lstsq(np.stack([np.ones(len(rows)), rows["n_layers"], gflops], 1),
                           rows["value"] / rows["steps"] * 1e3, rcond=None)[0]
    assert free[2] < 0, "the case the old fit got wrong"
    fit = sl.fit_step_time(rows)
    assert min(fit.fixed_ms, fit.per_layer_ms, fit.per_gflop_ms) >= 0, fit
    assert fit.per_gflop_ms == 0.0, "the constraint binds: FLOPs did not cost time here"


def _recorded_timings(truth: sl.StepTime, commit: str, when: str, wall: float):
    rows = _timed_rows(truth).assign(source="recorded", preset="full", commit=commit,
                                     recorded_at=when, n_gpus=1, seed=0)
    wall_row = {"metric": "sweep_wall_s", "value": wall, "status": "ok", "source": "recorded",
                "device": "GPU X", "preset": "full", "commit": commit, "recorded_at": when,
                "n_gpus": 1, "seed": 0}
    return pd.concat([rows, pd.DataFrame([wall_row])], ignore_index=True)


def test_time_table_fits_each_device_on_its_latest_sweep_alone():
    """03's time table pooled an older, slower sweep of the H200 with the newest one."""
    slow, fast = sl.StepTime(9.0, 4.0, 0.05), sl.StepTime(5.0, 2.0, 0.01)
    old_wall = round(_timed_rows(slow)["value"].sum()) + 30.0   # start-up, evaluation
    new_wall = round(_timed_rows(fast)["value"].sum()) + 10.0
    old = _recorded_timings(slow, "old", "2026-11-01T00:00:00Z", old_wall)
    new = _recorded_timings(fast, "new", "2026-12-03T00:00:00Z", new_wall)
    rows = pd.concat([new, old], ignore_index=True)
    table = sl.time_table(rows)
    assert len(table) == 1 and "commit new" in table["sweep"].iloc[0], table
    row = table.iloc[0]
    assert (row["fixed_ms"], row["per_layer_ms"], row["per_gflop_ms"]) == pytest.approx(
        (5.0, 2.0, 0.01), rel=1e-6)
    train = new.loc[new["metric"] == "train_s", "value"].sum()
    assert row["predicted training s"] == pytest.approx(train, rel=1e-6)
    assert row["training_s"] == pytest.approx(train) and row["wall_s"] == new_wall
    assert row["predicted training s"] <= row["wall_s"], "training fits inside the wall time"
    text = sl.time_caption(rows)
    assert "ran today's plan" in text and f"{train:.0f} s" in text and "nan" not in text
    assert "from start to end" in text and "resumed" not in text
    old_train = old.loc[old["metric"] == "train_s", "value"].sum()
    assert (f"Today's plan ran on this device name 1 more time: recorded on GPU X ×1, "
            f"2026-11-01, seed 0: {old_train:.0f} s of training, {old_wall:.0f} s in all."
            ) in text, text
    note = "resumed: 20 points from the checkpoint, counted by their training time"
    rows.loc[(rows["metric"] == "sweep_wall_s") & (rows["commit"] == "new"), "error"] = note
    text = sl.time_caption(rows)   # a resumed sweep's time is a count, not one run's
    assert f"it counts {new_wall:.0f} s ({note}" in text and "from start to end" not in text, text


def test_recorded_time_table_has_no_negative_cost_and_predicts_within_the_wall():
    """The ledger's sweeps: every fitted cost ≥ 0, and a sweep of today's plan is predicted
    to train for no longer than it took from start to end."""
    from workbook import results

    table = sl.time_table(results.load("scaling_isoflop", ok_only=True))
    if table.empty:
        pytest.skip("no recorded full sweep")
    assert (table[["fixed_ms", "per_layer_ms", "per_gflop_ms"]] >= 0).all().all(), table
    today = table["sweep"].str.contains("4d7c149e4cad")
    assert (table.loc[today, "predicted training s"] <= table.loc[today, "wall_s"]).all()


def test_full_preset_fits_its_time_limit_on_every_recorded_device():
    """Issue 21: the full sweep in ≤ 10 minutes. Predicted from each device's recorded step
    times (the sweep trains every point in one process; start-up and evaluation come on top)."""
    from workbook import results

    recorded = results.load("scaling_isoflop", ok_only=True)
    recorded = recorded[recorded["preset"] == "full"]
    if recorded.empty:
        pytest.skip("no full-preset sweep recorded yet")
    cfg = sl.ISOFLOP_PRESETS["full"]
    # each device's latest sweep, where it ran its steps as the preset does (eager step times
    # say nothing about CUDA graphs'): time_table's prediction
    table = sl.time_table(recorded).dropna(subset=["predicted training s"])
    if table.empty:
        pytest.skip("no full-preset sweep recorded with the preset's CUDA-graph setting yet")
    for _, row in table.iterrows():
        seconds = row["predicted training s"]
        assert seconds <= cfg.time_limit_s, (
            f"the full preset needs ~{seconds:.0f} s of training on {row['sweep']}; its limit "
            f"is {cfg.time_limit_s:.0f} s: fewer sizes, budgets or steps")


@pytest.mark.parametrize("field,value", [("budgets", ()), ("sizes_per_budget", 0),
                                         ("corpus", "wikipedia"), ("budgets", (1e30,))])
def test_bad_config_is_one_line(field, value):
    with pytest.raises(WorkbookError, match="allowed"):
        dataclasses.replace(sl.ISOFLOP_PRESETS["small"], **{field: value})


def _micro(tmp_path, **kw):
    base = dataclasses.replace(
        sl.ISOFLOP_PRESETS["small"], budgets=(2e9,), sizes_per_budget=3, target_steps=12,
        min_steps=4, eval_tokens=1024, ladder=((16, 1, 1), (24, 1, 1), (32, 1, 2)),
        checkpoint=str(tmp_path / "ck.csv"))
    return dataclasses.replace(base, **kw)


def test_sweep_rows_checkpoint_and_resume(tmp_path):
    cfg = _micro(tmp_path)
    seen: list[pd.DataFrame] = []

    def stop_after_first(rows: pd.DataFrame) -> None:
        seen.append(rows)
        if len(seen) == 1:
            raise KeyboardInterrupt  # the reader presses stop, or the box is taken away

    with pytest.raises(KeyboardInterrupt):
        sl.run_isoflop(cfg, seed=0, on_point=stop_after_first)
    kept = pd.read_csv(tmp_path / "ck.csv")
    assert kept["d_model"].nunique() == 1, "the finished point survives the interruption"

    trained: list[int] = []
    rows = sl.run_isoflop(cfg, seed=0, on_point=lambda r: trained.append(int(r["d_model"][0])))
    assert 16 not in trained, "a rerun with the checkpoint must not retrain a finished point"
    loss = rows[rows["metric"] == "val_loss"]
    assert len(loss) == 3 and (loss["status"] == "ok").all()
    assert loss["value"].between(1.0, math.log(512) + 1).all(), "val loss in nats, below ln V"
    assert {"n_params", "n_tokens", "compute", "seed", "corpus"} <= set(rows.columns)
    wall = rows[rows["metric"] == "sweep_wall_s"].iloc[0]
    first = kept.loc[kept["metric"] == "train_s", "value"].sum()
    assert wall["value"] > first and "resumed: 1 point from" in wall["error"], \
        "a resumed sweep's wall time counts the reused points' training"
    from workbook.data import corpus_sha256
    assert set(loss["corpus_sha"]) == {corpus_sha256()[:12]}, "the text each point read"


def test_checkpoint_rows_can_be_recorded(tmp_path, ledger_dir):
    cfg = _micro(tmp_path, sizes_per_budget=1)
    sl.run_isoflop(cfg, seed=0)
    path = sl.record_checkpoint(cfg.checkpoint, preset="small", seed=0)
    recorded = pd.read_csv(path)
    assert (recorded["metric"] == "val_loss").sum() == 1 and "device" in recorded
    with pytest.raises(WorkbookError, match="no finished points"):
        sl.record_checkpoint(str(tmp_path / "missing.csv"))


def test_explorers_update_from_python():
    budget = sl.allocation_explorer()
    budget.set(compute=3.15e23, law="20 tokens/param")
    n_opt = math.sqrt(3.15e23 / 120)
    assert f"N = {claims.fixed(n_opt)}," in budget.message.value, budget.message.value
    loss = float(sl.CHINCHILLA_REPLICATION.loss(n_opt, 20 * n_opt))
    assert f"loss by the Epoch replication {loss:.3f}" in budget.message.value, (
        "the explorer scores with the replication, as the notebook says it predicts with it")
    assert budget.fig.data[3].x[0] == pytest.approx(n_opt), "the star moves to the optimum"
    owning = sl.overtraining_explorer()
    before = owning.fig.data[3].x[0]
    owning.set(inference_tokens=1e15)
    assert owning.fig.data[3].x[0] < before, "more tokens served: a smaller model is cheaper"
    shown = owning.values["target_loss"]
    with pytest.raises(WorkbookError, match="allowed: 1.9 to 3"):  # below the law's floor
        owning.set(target_loss=1.5)  # E = 1.82; said in one line, not clamped to 1.9 silently
    assert owning.values["target_loss"] == shown, "a refused value leaves the slider as it was"
    assert owning.last_error and "target_loss=1.5" in owning.last_error


# ------------------------------------------------------------------- sweeps, claims, caption


def _sweep_rows(law: sl.ParametricLaw, source: str, device: str, recipe: bool) -> pd.DataFrame:
    points = _synthetic_sweep(law, [1e12, 1e13, 1e14], noise=0.001)
    rows = points.rename(columns={"loss": "value"}).assign(
        metric="val_loss", status="ok", source=source, device=device, preset="full",
        commit="abc", recorded_at="2026-12-01T00:00:00Z", n_gpus=1, seed=0)
    if recipe:
        rows["beta2"] = 0.99
    wall = {"metric": "sweep_wall_s", "value": 420.0, "status": "ok", "source": source,
            "device": device, "preset": "full", "commit": "abc", "n_gpus": 1, "seed": 0,
            "recorded_at": "2026-12-01T00:00:00Z"}
    return pd.concat([rows, pd.DataFrame([wall])], ignore_index=True)


def test_sweeps_put_this_machine_first_and_claims_judge_each_by_its_interval():
    here = _sweep_rows(sl.CHINCHILLA_REPLICATION, "measured", "GPU here", recipe=True)
    there = _sweep_rows(sl.CHINCHILLA, "recorded", "GPU there", recipe=False)
    rows = pd.concat([there, here], ignore_index=True)
    found = sl.sweeps(rows)
    assert [g["device"].iloc[0] for _, g in found] == ["GPU here", "GPU there"]
    assert found[0][0].startswith("this machine (GPU here)"), found[0][0]
    assert "older recipe" in found[1][0] and "recorded on GPU there" in found[1][0]
    assert (found[0][1]["metric"] == "sweep_wall_s").any(), "the wall row stays with its sweep"

    summary = sl.fit_summary(rows, n_boot=100)
    assert list(summary["sweep"].unique()) == [found[0][0], found[1][0]]
    table = sl.claims(rows, summary)
    a_row = table[(table["claim"].str.contains("a ≈ 0.5"))
                  & table["where"].str.startswith("this machine")].iloc[0]
    mine = summary.iloc[0]
    assert a_row["measured"] == pytest.approx(mine["a"])
    assert a_row["verdict"] == claims.verdict(0.5, mine["a"], abs_tol=0.05,
                                              interval=(mine["a_low"], mine["a_high"]))
    assert (table["verdict"].str.startswith("holds (420")).sum() == 2, "both sweeps ≤ 600 s"
    fig = sl.isoflop_figure(rows)
    symbols = {t.marker.symbol for t in fig.data if t.mode == "markers"}
    assert symbols == {None, "circle-open"}, "this machine's points filled, references hollow"
    frontier = sl.frontier_figure(rows, summary)
    assert any(f"[{mine['a_low']:.2f}, {mine['a_high']:.2f}]" in t.name for t in frontier.data)
    text = sl.caption(rows, summary)
    assert f"$a$ = {mine['a']:.2f}" in text and "recorded on GPU there" in text
    assert sl.caption(rows.iloc[0:0], summary.iloc[0:0]) == "No sweep with finished points yet."


def test_a_sweep_cut_by_its_time_limit_is_timed_as_if_it_had_finished():
    rows = _sweep_rows(sl.CHINCHILLA_REPLICATION, "measured", "GPU here", recipe=True)
    loss = rows.index[rows["metric"] == "val_loss"]
    cut = loss[-len(loss) // 4:]     # the last quarter of the points: cut by the time limit
    rows.loc[cut, ["status", "value"]] = ["skipped", float("nan")]
    rows.loc[cut, "error"] = "sweep time limit 540 s reached; rerun with the same checkpoint"
    table = sl.claims(rows, sl.fit_summary(rows, n_boot=50))
    timed = table[table["claim"].str.startswith("IsoFLOP sweep")].iloc[0]
    trained = len(loss) - len(cut)
    assert timed["measured"] == pytest.approx(420.0 * len(loss) / trained)
    assert f"{len(cut)} of {len(loss)} points cut by the time limit" in timed["where"]
    text = sl.caption(rows, sl.fit_summary(rows, n_boot=50))
    assert f"{trained} trained points" in text and f"({len(cut)} more were planned" in text


def test_a_recorded_sweep_finds_its_cut_points_in_the_ledger(ledger_dir):
    """References come as ok rows only: the skipped ones are counted in the ledger."""
    from workbook import results

    rows = _sweep_rows(sl.CHINCHILLA_REPLICATION, "measured", "GPU there", recipe=True)
    loss = rows.index[rows["metric"] == "val_loss"]
    rows.loc[loss[-3:], ["status", "value"]] = ["skipped", float("nan")]
    rows.loc[loss[-3:], "error"] = "sweep time limit 540 s reached"
    results.record("scaling_isoflop", rows.drop(columns=["recorded_at", "commit"]),
                   preset="full", seed=0)
    shown = results.load("scaling_isoflop", ok_only=True)
    assert (shown["status"] == "ok").all() and (shown["source"] == "recorded").any()
    table = sl.claims(shown, sl.fit_summary(shown, n_boot=20))
    timed = table[table["claim"].str.startswith("IsoFLOP sweep")].iloc[0]
    assert f"3 of {len(loss)} points cut" in timed["where"], timed["where"]


def test_a_sweep_without_a_wall_time_never_prints_nan():
    """03 printed 'nan s × 12/6, extrapolated' for a sweep with cut points and no
    sweep_wall_s row."""
    rows = _sweep_rows(sl.CHINCHILLA_REPLICATION, "measured", "GPU here", recipe=True)
    rows = rows[rows["metric"] != "sweep_wall_s"].reset_index(drop=True)
    loss = rows.index[rows["metric"] == "val_loss"]
    rows.loc[loss[-3:], ["status", "value"]] = ["skipped", float("nan")]
    rows.loc[loss[-3:], "error"] = "sweep time limit 540 s reached"
    summary = sl.fit_summary(rows, n_boot=20)
    table = sl.claims(rows, summary)
    timed = table[table["claim"].str.startswith("IsoFLOP sweep")].iloc[0]
    assert "nan" not in timed["where"] and "no wall time recorded" in timed["where"], timed
    assert timed["verdict"].startswith("n/a")
    texts = [sl.caption(rows, summary), sl.verdict_caption(rows, summary)]
    assert not any("nan" in t for t in texts), texts
    assert np.isnan(sl.wall_seconds(rows))


def test_verdict_caption_says_which_edge_each_interval_crosses():
    rows = _sweep_rows(sl.CHINCHILLA_REPLICATION, "measured", "GPU here", recipe=True)
    summary = sl.fit_summary(rows, n_boot=50)
    mine = summary[summary["N counted as"] == "total N"].iloc[0].copy()
    fake = summary.copy()
    total = fake["N counted as"] == "total N"
    # the H200's numbers at 4d7c149e4cad: a 0.521 [0.464, 0.583], 10.8 [9.69, 12.0]
    fake.loc[total, ["a", "a_low", "a_high"]] = [0.521, 0.464, 0.583]
    fake.loc[total, ["ratio", "ratio_low", "ratio_high"]] = [10.8, 9.69, 12.0]
    text = sl.verdict_caption(rows, fake)
    a_line, ratio_line = (next(line for line in text.splitlines() if key in line)
                          for key in ("a ≈ 0.5 (total N)", "tokens ≈ 20"))
    assert "**inconclusive**" in a_line and "reaches above 0.55" in a_line, a_line
    assert "**off**" in ratio_line and "lies below 13.3" in ratio_line, ratio_line
    assert "**holds**" in next(line for line in text.splitlines() if "600 s" in line)
    assert mine["a"] != 0.521, "the fake numbers are not the synthetic sweep's own"


def test_ratio_caption_states_row_facts_and_the_published_sizes():
    rows = _sweep_rows(sl.CHINCHILLA_REPLICATION, "measured", "GPU here", recipe=True)
    summary = sl.fit_summary(rows, n_boot=20)
    text = sl.ratio_caption(rows, summary)
    points = sl.ok_points(rows)
    assert f"{points['n_params'].min():,.0f}" in text and "70 million to 16 billion" in text
    top = summary.iloc[0]["ratio_budget"]
    replication = sl.CHINCHILLA_REPLICATION.optimal(top)
    assert f"{replication[1] / replication[0]:.0f}" in text
    assert sl.ratio_caption(rows.iloc[0:0], summary.iloc[0:0]).startswith("Too few")
    # three sizes per budget (the small preset): no interval, so no reading of the ratio
    loss = rows[rows["metric"] == "val_loss"]
    three = pd.concat([g.sort_values("n_params").iloc[2:5] for _, g in loss.groupby("budget")])
    small = sl.ratio_caption(three, sl.fit_summary(three, n_boot=20))
    assert "cannot say where its optimum sits" in small and "level" not in small, small
    assert "no interval" in small, small


def test_frontier_minima_take_their_sweeps_shape_from_the_subtitles_key():
    """03's frontier figure keyed 'circle: H200 … square: H100' but drew every minimum as a
    diamond."""
    here = _sweep_rows(sl.CHINCHILLA_REPLICATION, "measured", "GPU here", recipe=True)
    there = _sweep_rows(sl.CHINCHILLA, "recorded", "GPU there", recipe=True)
    third = _sweep_rows(sl.CHINCHILLA, "recorded", "GPU third", recipe=True)
    third["recorded_at"] = "2026-10-01T00:00:00Z"
    rows = pd.concat([there, here, third], ignore_index=True)
    fig = sl.frontier_figure(rows)
    minima = {t.name: t.marker.symbol for t in fig.data if t.name.startswith("minima")}
    assert minima == {"minima, this machine (GPU here) (here)": "circle",
                      "minima, GPU there ×1 (recorded)": "circle-open",
                      "minima, GPU third ×1 (recorded)": "square-open"}, minima
    title = fig.layout.title.text
    assert "circle: recorded on GPU there" in title and "square: recorded on GPU third" in title
    iso = {t.marker.symbol for t in sl.isoflop_figure(rows).data
           if t.mode == "markers" and t.showlegend is False}   # not the budgets' legend keys
    assert set(minima.values()) == {s or "circle" for s in iso}, "one key for both figures"
    edge, law = there.copy(), sl.CHINCHILLA
    top = (edge["budget"] == edge["budget"].max()) & (edge["metric"] == "val_loss")
    edge.loc[top, "n_params"] *= 16   # every size of the top budget above its N_opt
    edge.loc[top, "n_tokens"] = edge.loc[top, "budget"] / (6 * edge.loc[top, "n_params"])
    edge.loc[top, "value"] = law.loss(edge.loc[top, "n_params"], edge.loc[top, "n_tokens"])
    edge["n_params_non_embedding"] = edge["n_params"]
    crossed = sl.frontier_figure(edge)
    symbols = next(t.marker.symbol for t in crossed.data if t.name.startswith("minima"))
    assert list(symbols) == ["circle-open", "circle-open", "circle-x-open"], symbols
    assert "a cross inside the shape" in crossed.layout.title.text


def test_band_verdict_needs_the_whole_interval_inside_the_tolerance():
    assert claims.verdict(0.5, 0.5, abs_tol=0.05, interval=(0.46, 0.53)).startswith("holds")
    assert claims.verdict(0.5, 0.5, abs_tol=0.05, interval=(0.40, 0.53)).startswith(
        "inconclusive"), "an interval reaching past the band does not exclude the alternative"
    assert claims.verdict(0.5, 0.7, abs_tol=0.05, interval=(0.6, 0.8)).startswith("off")
    assert claims.verdict(20, 25, factor=1.5, interval=(14, 29)).startswith("holds")
    assert claims.verdict(20, 40, factor=1.5, interval=(31, 50)).startswith("off")
    with pytest.raises(WorkbookError, match="allowed"):
        claims.verdict(20, 25, factor=0.5, interval=(14, 29))


def test_the_text_a_sweep_read_and_how_often_its_largest_budget_repeats_it():
    """The H200's sweep at 4d7c149e4cad ran on its image's stdlib (Debian's, without the test
    suite): 3.3M tokens instead of 10.0M, read up to 13.6 times at the largest budget."""
    from workbook.data import STDLIB_SOURCE

    rows = _sweep_rows(sl.CHINCHILLA_REPLICATION, "measured", "GPU here", recipe=True)
    assert math.isnan(sl.text_tokens(rows)) and sl.text_note(rows) == ""   # no epochs column
    summary = sl.fit_summary(rows, n_boot=20)
    assert "do not say how large" in sl.ratio_caption(rows, summary)
    full = STDLIB_SOURCE["n_train_v2048"]
    for size, other in ((full, False), (full / 3, True)):
        sized = rows.assign(corpus="stdlib_source", vocab_size=2048, epochs=rows["n_tokens"] / size)
        assert sl.text_tokens(sized) == pytest.approx(size)
        assert ("another stdlib's text" in sl.text_note(sized)) == other
        assert ("another stdlib's text" in sl.sweeps(sized)[0][0]) == other
        text = sl.ratio_caption(sized, sl.fit_summary(sized, n_boot=20))
        line = next(x for x in text.splitlines() if "Which text" in x)
        top = sized[sized["budget"] == sized["budget"].max()]
        heaviest = top["n_tokens"].max() / size
        assert f"its most data-heavy point {heaviest:.1f} times" in line, line
        assert ("worth less than new ones" in line) == (heaviest > 4), line
    docstrings = rows.assign(corpus="docstrings", vocab_size=2048, epochs=rows["n_tokens"] / 5e5)
    assert sl.text_note(docstrings) == ""
    # two sweeps on texts of two sizes: the main one's line gives the other's ratio
    there = _sweep_rows(sl.CHINCHILLA, "recorded", "GPU there", recipe=True)
    both = pd.concat([rows.assign(corpus="stdlib_source", vocab_size=2048,
                                  epochs=rows["n_tokens"] / full),
                      there.assign(corpus="stdlib_source", vocab_size=2048,
                                   epochs=there["n_tokens"] / (full / 3))], ignore_index=True)
    summary = sl.fit_summary(both, n_boot=20)
    line = next(x for x in sl.ratio_caption(both, summary).splitlines() if "Which text" in x)
    other = summary[(summary["N counted as"] == "total N")].iloc[1]
    assert f"Measured on other texts: {other['ratio']:.1f} tokens per parameter on a 3.3M" \
        in line, line


def test_two_seeds_of_one_machine_and_commit_are_two_sweeps_told_apart():
    """A second seed (scripts/gpu_scaling.sh, SEED=1) on the same commit had merged into the
    first seed's sweep: two points per shape in one parabola, one label for both."""
    first = _sweep_rows(sl.CHINCHILLA_REPLICATION, "recorded", "GPU there", recipe=True)
    second = first.assign(seed=1, recorded_at="2026-12-01T01:00:00Z")
    second["value"] = second["value"] * 1.01
    found = sl.sweeps(pd.concat([first, second], ignore_index=True))
    assert len(found) == 2 and {int(g["seed"].iloc[0]) for _, g in found} == {0, 1}
    assert "seed 1" in found[0][0] and "seed 0" in found[1][0], [w for w, _ in found]
    names = {t.name for t in sl.frontier_figure(pd.concat([first, second])).data
             if t.name.startswith("minima")}
    assert len(names) == 2, names


def test_sweeps_of_one_plan_under_several_seeds_are_pooled_and_judged_together():
    first = _sweep_rows(sl.CHINCHILLA_REPLICATION, "recorded", "GPU there", recipe=True)
    second = first.assign(seed=1, commit="def", recorded_at="2026-12-02T00:00:00Z")
    second["value"] = second["value"] * 1.01
    other = _sweep_rows(sl.CHINCHILLA, "recorded", "GPU third", recipe=True)
    resized = first.assign(seed=2, commit="ghi", n_params=first["n_params"] * 2,
                           recorded_at="2026-12-03T00:00:00Z")
    rows = pd.concat([first, second, other, resized], ignore_index=True)
    pools = sl.seed_pools(sl.sweeps(rows))
    assert len(pools) == 1, [w for w, _ in pools]   # GPU third: one seed; seed 2: other sizes
    label, pool = pools[0]
    assert label.startswith("recorded on GPU there ×1, seeds 0, 1 pooled (2 sweeps"), label
    loss = pool[pool["metric"] == "val_loss"]
    assert len(loss) == 2 * (first["metric"] == "val_loss").sum()
    assert "sweep_wall_s" not in set(pool["metric"]), "a pool has no one wall time"
    summary = sl.fit_summary(rows, n_boot=50)
    assert label in set(summary["sweep"])
    table = sl.claims(rows, summary)
    pooled = table[table["where"] == label]
    assert len(pooled) == 3 and not pooled["claim"].str.contains("600 s").any()
    text = sl.verdict_caption(rows, summary)
    assert "seed 2" in text.split("\n")[0] and "Its seeds pooled" not in text, (
        "the main sweep (seed 2, other sizes) has no pool")
    text = sl.verdict_caption(pd.concat([first, second]), summary)
    assert f"**Its seeds pooled ({label})**" in text, text
    gap = sl.seed_spread(pool)   # seed 1's losses are seed 0's × 1.01
    loss = first.loc[first["metric"] == "val_loss", "value"]
    assert gap["points"] == len(loss) and gap["max"] == pytest.approx(0.01 * loss.max())
    assert gap["median"] == pytest.approx(0.01 * loss.median())
    assert f"differ by a median {gap['median']:.3f} nats over {len(loss)} points" in text
    assert sl.seed_spread(first) == {}, "one seed: no spread"


def test_a_newer_sweep_keeps_an_older_one_whole_and_a_resumed_one_takes_its_points(
        tmp_path, monkeypatch):
    """The H200's sweep at cbb140a65373 replaced 23 of dc39d910bf51's 30 points in the ledger
    (same shapes, steps and seed: the same configuration to results.merge), leaving a
    '7-point plan'. Rows now carry sweep_commit, part of the key."""
    from workbook.scaling_laws.experiments import ISOFLOP_PRESETS, run_isoflop

    cfg = dataclasses.replace(ISOFLOP_PRESETS["small"], budgets=(3e10,), sizes_per_budget=2,
                              checkpoint=str(tmp_path / "ck.csv"))
    monkeypatch.setenv("WORKBOOK_COMMIT", "older")
    old = run_isoflop(cfg)
    assert set(old["sweep_commit"]) == {"older"}
    monkeypatch.setenv("WORKBOOK_COMMIT", "newer")
    resumed = run_isoflop(cfg)   # every point from the checkpoint: stamped with this run
    assert set(resumed["sweep_commit"]) == {"newer"}
    assert "resumed: 2 points" in resumed.loc[resumed["metric"] == "sweep_wall_s", "error"].iloc[0]
    both = results.merge(old, resumed)
    assert len(both) == len(old) + len(resumed), "an older sweep is kept whole"
    again = results.merge(both, resumed.assign(value=resumed["value"] + 1))
    assert len(again) == len(both), "a rerun of the same commit replaces its own rows"


def test_a_resumed_sweep_says_its_time_is_counted_and_an_estimate_outside_its_interval_is_named():
    rows = _sweep_rows(sl.CHINCHILLA_REPLICATION, "recorded", "GPU there", recipe=True)
    wall = rows["metric"] == "sweep_wall_s"
    assert sl.resumed_note(rows) == ""
    rows.loc[wall, "error"] = ("resumed: 27 points from the checkpoint, counted by their "
                               "training time")
    assert sl.resumed_note(rows).startswith("resumed: 27 points")
    summary = sl.fit_summary(rows, n_boot=50)
    assert "in 420 s (resumed: 27 points" in sl.caption(rows, summary)
    timed = sl.claims(rows, summary).query("claim.str.startswith('IsoFLOP sweep')").iloc[0]
    assert "; resumed: 27 points" in timed["where"], timed["where"]
    moved = summary.copy()
    moved.loc[moved["N counted as"] == "total N", ["a_low", "a_high"]] = [0.9, 1.0]
    assert "[0.90, 1.00: the estimate lies outside it]" in sl.caption(rows, moved)


def test_two_sweeps_of_one_machine_date_and_seed_are_named_by_their_commits():
    """03's frontier legend named the H200's sweeps at cbb140a65373 and dc39d910bf51 alike
    ('H200 ×1, 2026-12-04, seed 0'): same machine, day and seed."""
    first = _sweep_rows(sl.CHINCHILLA_REPLICATION, "recorded", "GPU there", recipe=True)
    second = first.assign(commit="def", recorded_at="2026-12-01T05:00:00Z")
    rows = pd.concat([first, second], ignore_index=True)
    labels = [w for w, _ in sl.sweeps(rows)]
    assert labels[0].startswith("recorded on GPU there ×1, 2026-12-01, seed 0, commit def,")
    assert ", commit abc, full preset" in labels[1], labels
    fig = sl.frontier_figure(rows)
    names = [t.name for t in fig.data if t.name.startswith("minima")]
    assert len(set(names)) == 2 and "commit abc" in names[1], names
    assert "seed 0, commit def, full preset" in fig.layout.title.text
    alone = [w for w, _ in sl.sweeps(first)]
    assert "commit" not in alone[0], "a sweep needing no commit to be told apart shows none"


def test_ratio_caption_says_how_far_the_extrapolated_budgets_move_a():
    rows, law = _sweep_rows(sl.CHINCHILLA, "recorded", "GPU there", recipe=True), sl.CHINCHILLA
    rows["n_params_non_embedding"] = rows["n_params"]
    low = (rows["budget"] == rows["budget"].min()) & (rows["metric"] == "val_loss")
    rows.loc[low, "n_params"] *= 16   # every size of the smallest budget above its N_opt
    rows.loc[low, "n_params_non_embedding"] = rows.loc[low, "n_params"]
    rows.loc[low, "n_tokens"] = rows.loc[low, "budget"] / (6 * rows.loc[low, "n_params"])
    rows.loc[low, "value"] = law.loss(rows.loc[low, "n_params"], rows.loc[low, "n_tokens"])
    text = sl.ratio_caption(rows, sl.fit_summary(rows, n_boot=50))
    assert "1 of 3 budgets' minima lie outside" in text, text
    assert "Its largest budget's minimum lies inside its sizes: the tokens per parameter " \
        "there is measured" in text, "the early branch's 'largest budget inside' sentence"
    inside = sl.ok_points(rows)
    inside = inside[inside["budget"] > inside["budget"].min()]
    again = sl.fit_exponents(inside, n_boot=500)
    assert (f"Fitted to the 2 budgets whose minimum lies inside their sizes alone, $a$ = "
            f"{again.a:.2f} [{again.a_low:.2f}, {again.a_high:.2f}") in text, text
    (n1, _), (n2, _) = law.optimal(1e13), law.optimal(1e14)
    assert again.a == pytest.approx(math.log(n2 / n1) / math.log(10), abs=0.05), (
        "without the extrapolated budget the fit finds the law's own a")


def _shared_sizes(law: sl.ParametricLaw, budgets, sizes) -> pd.DataFrame:
    """A recorded sweep whose sizes repeat at every budget (as the full preset's partly do),
    its losses drawn from ``law``."""
    rows = [{"budget": c, "n_params": n, "n_params_non_embedding": n, "n_tokens": c / (6 * n),
             "metric": "val_loss", "value": float(law.loss(n, c / (6 * n))), "status": "ok",
             "source": "recorded", "device": "GPU there", "preset": "full", "commit": "abc",
             "recorded_at": "2026-12-01T00:00:00Z", "n_gpus": 1, "seed": 0, "beta2": 0.99}
            for c in budgets for n in sizes]
    return pd.DataFrame(rows)


def test_loss_against_tokens_finds_a_stretch_that_falls_faster_than_the_one_before():
    budgets, sizes = [1e12, 2.5e12, 6.25e12, 1.5e13], [1e5, 2e5, 4e5]
    smooth = _shared_sizes(sl.CHINCHILLA, budgets, sizes)
    slopes = sl.token_slopes(sl.ok_points(smooth))
    assert len(slopes) == 3 * 3 and (slopes["slope"] < 0).all()
    for _, g in slopes.groupby("n_params"):   # a power law in D: slower at every step
        assert (np.diff(g["slope"]) > 0).all(), g
    text = sl.tokens_caption(smooth)
    assert "0 of 3 sizes fell faster" in text, text
    kinked = smooth.copy()
    hit = (kinked["n_params"] == 2e5) & (kinked["budget"] >= 6.25e12)
    kinked.loc[hit, "value"] -= 2.0          # from the third budget on: a sudden drop
    text = sl.tokens_caption(kinked)
    assert "1 of 3 sizes fell faster" in text, text
    line = next(x for x in text.splitlines() if x.startswith("* N = 200,000"))
    assert "before it" in line and "after it" in line, line
    fig = sl.tokens_figure(kinked)
    assert [t.name for t in fig.data] == ["N = 100,000", "N = 200,000", "N = 400,000"]
    assert all(len(t.x) == 4 for t in fig.data)
    assert sl.tokens_caption(smooth.iloc[0:0]).startswith("No sweep has a model size")
    # a live sweep of two budgets (the small preset) has no such size: the recording stands in
    live = _shared_sizes(sl.CHINCHILLA, budgets[:2], sizes).assign(
        source="measured", device="cpu", preset="small")
    text = sl.tokens_caption(pd.concat([live, kinked], ignore_index=True))
    assert text.startswith("**recorded on GPU there") and "1 of 3 sizes" in text, text


def test_batch_tokens_plan_holds_each_effect_fixed_and_keeps_the_sweeps_recipe():
    cfg = sl.BATCH_TOKENS_PRESETS["full"]
    plan = sl.plan_runs(cfg)
    sweep = sl.ISOFLOP_PRESETS["full"]
    assert len(plan) == 4 and plan["n_params"].nunique() == 1
    for _, run in plan.iterrows():
        target = min(cfg.tokens, key=lambda d: abs(d - run["n_tokens"]))
        assert abs(run["n_tokens"] - target) <= run["batch_size"] * sweep.seq_len  # one step
        assert run["lr"] == sl.point_settings(run["n_params"], target, sweep)["lr"]
        assert 1 <= run["warmup"] <= run["steps"] // 4
    with pytest.raises(WorkbookError, match="allowed"):
        sl.BatchTokensConfig(shape=(96, 3, 5), batches=(14,), tokens=(1e6,))
    with pytest.raises(WorkbookError, match="allowed"):
        sl.BatchTokensConfig(shape=(96, 3, 6), batches=(), tokens=(1e6,))


def test_batch_tokens_runs_on_the_cpu_and_its_effects_come_from_its_rows():
    rows = sl.run_batch_tokens(sl.BATCH_TOKENS_PRESETS["small"])
    loss = rows[rows["metric"] == "val_loss"]
    assert len(loss) == 4 and loss["value"].between(0, 10).all()
    effects = sl.batch_token_effects(rows)
    assert list(effects["held fixed"]) == ["batch (sequences)"] * 2 + ["tokens"] * 2
    grid = loss.set_index(["batch_size", "n_tokens"])["value"]
    assert effects.iloc[0]["loss change"] == pytest.approx(grid[(8, 30720)] - grid[(8, 15360)])
    assert effects.iloc[3]["loss change"] == pytest.approx(grid[(16, 30720)] - grid[(8, 30720)])
    assert sl.batch_token_effects(rows.iloc[0:0]).empty


def test_the_lectures_chinchilla_table_is_read_against_both_published_laws():
    table = sl.lecture_chinchilla_table()
    assert len(table) == 7 and (table["6ND / compute"] - 1).abs().max() < 0.04
    assert table["tokens_per_param"].between(19, 21).all(), "the lecture's rows are D = 20 N"
    replication = table["N_opt / N (Chinchilla (Epoch replication))"]
    published = table["N_opt / N (Chinchilla (approach 3))"]
    assert replication.between(0.85, 1.15).all() and (published < 0.8).all()
    text = sl.lecture_chinchilla_caption(table)
    assert f"within {(table['6ND / compute'] - 1).abs().max():.1%}" in text
    assert f"{replication.min():.2f}–{replication.max():.2f}× the lecture's N" in text
    half = table.assign(**{"N_opt / N (Chinchilla (Epoch replication))": replication / 2})
    assert f"{replication.min() / 2:.2f}–" in sl.lecture_chinchilla_caption(half)
    assert sl.lecture_chinchilla_caption(table.iloc[:3]).startswith("*No table")


def test_reference_slopes_span_every_sweep_and_go_through_the_largest_sweeps_middle():
    """A small live sweep (two budgets) beside a recorded full one: Chinchilla's slope, Kaplan's
    and 20 tokens/param run across both sweeps' budgets, anchored on the sweep with more."""
    there = _sweep_rows(sl.CHINCHILLA, "recorded", "GPU there", recipe=True)
    points = _synthetic_sweep(sl.CHINCHILLA, [1e9, 1e10], noise=0.001)
    here = points.rename(columns={"loss": "value"}).assign(
        metric="val_loss", status="ok", source="measured", device="CPU (x86_64, 2 cores)",
        preset="small",
        commit="abc", recorded_at="2026-12-05T00:00:00Z", n_gpus=1, seed=0, beta2=0.99)
    rows = pd.concat([here, there], ignore_index=True)
    fig = sl.frontier_figure(rows)
    refs = {t.name: t for t in fig.data if "slope" in t.name or "tokens/param" in t.name}
    assert len(refs) == 3, [t.name for t in fig.data]
    for trace in refs.values():
        assert min(trace.x) == pytest.approx(1e9 / 2) and max(trace.x) == pytest.approx(2e14)
    middle = sl.isoflop_minima(sl.ok_points(there)).iloc[1]   # of 1e12, 1e13, 1e14
    slope = refs["Chinchilla slope a = 0.50"]
    through = np.interp(np.log(middle["budget"]), np.log(slope.x), np.log(slope.y))
    assert np.exp(through) == pytest.approx(middle["n_opt"], rel=0.02)
    # a device name with a comma inside its brackets stays whole in the legend
    fits = [t.name for t in fig.data if t.name.startswith("fit")]
    assert fits[0].startswith("fit, this machine (CPU (x86_64, 2 cores)): a = "), fits


def test_the_fit_runs_without_the_jupyter_stack():
    # scripts/gpu_scaling.sh fits on the GPU machine, where ipywidgets may be absent: the
    # H100 call at eb13f3fa5bb8 recorded its 90 points, then its report died importing it
    import subprocess
    import sys
    code = ("import sys; sys.modules['ipywidgets'] = None\n"
            "from workbook import results, scaling_laws as sl\n"
            "rows = results.load('scaling_isoflop')\n"
            "where, sweep = next(iter(sl.sweeps(rows[rows['preset'] == 'full'])))\n"
            "fit = sl.fit_exponents(sl.ok_points(sweep), n_boot=20, progress='bootstrap')\n"
            "print('a =', round(fit.a, 3))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "a = " in done.stdout, done.stderr[-2000:]

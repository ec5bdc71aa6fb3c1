"""Notebooks 11 and 12 as a reader sees them (the H200 review of 3c073cf4ea6e): no NaN in a
table, units in the headers, integers as integers, one notation per column, this machine's
rows first with recorded machines labelled by device and date, and verdicts that follow the
intervals the captions print."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from workbook import lora, qlora

H100 = {"source": "recorded", "device": "NVIDIA H100 80GB HBM3", "n_gpus": 1,
        "recorded_at": "2026-11-22T16:22:00Z", "seed": 0, "status": "ok"}
HERE = {"source": "measured", "device": "NVIDIA H200", "n_gpus": 1, "seed": 0, "status": "ok"}


def no_nan(table: pd.DataFrame) -> None:
    assert not table.isna().any().any(), f"a reader never sees NaN:\n{table}"
    assert not table.astype(str).apply(lambda c: c.str.contains("nan")).any().any(), table


# ------------------------------------------------------------------- notebook 12


def optimizer_rows(with_oom_rows: bool) -> pd.DataFrame:
    """The 7B optimizer sweep as recorded on the H200: the formula for every configuration,
    measured rows for those that fit, fits = 0 for the two that did not, and (once the
    registry keeps them) their oom rows, whose peak is NaN."""
    plan = qlora.vram_plan(qlora.VRAM_PRESETS["full"])
    rows = qlora.predicted_plan_rows(plan)
    rows = rows[rows["optimizer"].notna()].assign(device="NVIDIA H200", n_gpus=1,
                                                   status="ok")
    capped = rows["cap_gb"].fillna(0) > 0
    failing = capped & (rows["method"] == "full") & rows["optimizer"].isin(["adamw",
                                                                           "adamw8bit"])
    measured = rows[~failing & rows["metric"].isin(["peak", "optimizer", "paged"])]
    measured = measured.assign(source="recorded", value=measured["value"] * 0.99)
    fits = rows[capped & (rows["metric"] == "fits")].assign(source="recorded")
    fits.loc[fits["value"] == 0, "value"] = 0.0
    frames = [rows, measured, fits]
    if with_oom_rows:
        oom = rows[failing & (rows["metric"] == "peak")].assign(
            source="recorded", value=math.nan, status="oom")
        frames.append(oom)
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("with_oom_rows", [False, True])
def test_optimizer_table_shows_oom_without_nan(with_oom_rows):
    table = qlora.optimizer_table(optimizer_rows(with_oom_rows))
    no_nan(table)
    peak = qlora.OPTIMIZER_COLUMNS["peak"]
    for optimizer in ("adamw", "adamw8bit"):
        assert table.loc[("40 GB", "full", optimizer), (peak, "recorded")] == qlora.OOM
    assert table.loc[("40 GB", "full", "paged_adamw"), (peak, "recorded")] != qlora.OOM
    assert all("(" in c[0] for c in table.columns), "every header names its unit"
    fits = qlora.OPTIMIZER_COLUMNS["fits"]
    assert table.loc[("40 GB", "full", "adamw"), (fits, "recorded")] == "0"
    assert table.loc[("none", "full", "adamw"), (fits, "recorded")] == "– (no cap)"
    numbers = table[(peak, "predicted")]
    assert numbers.str.fullmatch(r"\d+\.\d\d").all(), "one number of decimals per column"


@pytest.mark.parametrize("with_oom_rows", [False, True])
def test_fit_caption_counts_the_configurations_that_did_not_fit(with_oom_rows):
    text = qlora.fit_caption(optimizer_rows(with_oom_rows))
    assert "every" not in text and "2 of the" in text, text
    assert "7b full with adamw under a 40 GB allocator cap: out of memory" in text, text
    assert "predicted it would not fit either" in text, text
    fine = optimizer_rows(False)
    fine = fine[~((fine["metric"] == "fits") & (fine["value"] == 0))]
    assert "every one of the" in qlora.fit_caption(fine)


def test_fit_caption_counts_configurations_not_ratio_rows():
    """A ``saving_vs_full`` row (no optimizer, no cap) is a ratio between configurations: the
    H200 recording has 22 configurations and 6 ratio rows, and the caption said "of the 28"."""
    rows = optimizer_rows(True)
    configs = rows[rows["source"] != "predicted"].drop_duplicates(
        ["size", "method", "optimizer", "cap_gb"])
    ratios = pd.DataFrame([{**HERE, "source": "recorded", "size": "7b", "method": m,
                            "metric": "saving_vs_full", "value": 10.0, "unit": "x",
                            "status": status}
                           for m, status in (("lora", "ok"), ("qlora", "oom"))])
    text = qlora.fit_caption(pd.concat([rows, ratios], ignore_index=True))
    assert f"2 of the {len(configs)} configurations" in text, text
    assert "under no cap" not in text, "a ratio row is no configuration that failed"
    counts = qlora.row_counts(pd.concat([rows, ratios], ignore_index=True))
    assert counts["configurations that did not fit"].tolist() == [2]


def test_row_counts_put_this_machine_first_and_date_the_references():
    rows = pd.concat([pd.DataFrame([{**H100, "metric": "peak", "value": 1.0}] * 2),
                      pd.DataFrame([{**HERE, "metric": "peak", "value": 1.0},
                                    {**HERE, "source": "predicted", "metric": "peak",
                                     "value": 1.0}])], ignore_index=True)
    table = qlora.row_counts(rows)
    assert table["where"].tolist() == [
        "this machine (NVIDIA H200)", "recorded on NVIDIA H100 80GB HBM3 ×1, 2026-11-22, seed 0"]
    assert table["measured rows"].tolist() == [1, 2] and table["formula rows"].tolist() == [1, 0]


def test_saving_table_puts_this_machine_right_after_the_formula():
    def saving(extra: dict, value: float) -> list[dict]:
        return [{**extra, "size": s, "method": m, "metric": "saving_vs_full", "value": value}
                for s in ("1b", "7b") for m in ("lora", "qlora")]

    rows = pd.DataFrame(saving(H100, 13.4) + saving(HERE, 13.6)
                        + saving({**HERE, "source": "predicted"}, 12.7))
    table = qlora.saving_table(rows)
    wheres = table.columns.get_level_values("where").tolist()
    assert wheres[0] == "formula" and wheres[1].startswith("this machine"), wheres
    assert wheres[2].startswith("recorded on NVIDIA H100") and "2026-11-22" in wheres[2]
    assert table.columns[0][0].endswith("(×)") and table.iloc[0, 0] == "12.70"


def quality_rows() -> pd.DataFrame:
    rows = []
    for extra, seeds in ((HERE, (0, 1, 2)), ({**H100, "seed": 0}, (None,))):
        for seed in seeds:
            for method in ("lora", "qlora"):
                base = {**extra, "method": method, "run_seed": seed}
                rows += [{**base, "stage": "before", "metric": "eval_loss", "unit": "nats",
                          "value": 5.7 + 0.01 * (seed or 0)},
                         {**base, "stage": "before", "metric": "weight_bytes", "unit": "B",
                          "value": 1_901_824.0},
                         {**base, "stage": "after", "metric": "eval_loss", "unit": "nats",
                          "value": 5.6 + 0.03 * (seed or 0)}]
                if seed in (0, None):
                    rows.append({**base, "stage": "after", "metric": "step_time",
                                 "unit": "ms", "value": 15.0106})
    return pd.DataFrame(rows)


def test_quality_table_compares_machines_seed_by_seed_without_nan():
    table = qlora.quality_table(quality_rows())
    no_nan(table)
    wheres = list(dict.fromkeys(table.columns.get_level_values("where")))
    assert wheres[0].startswith("this machine") and "2026-11-22" in wheres[1], wheres
    here = table[wheres[0]]
    assert here.loc[("lora", "after"), "held-out loss (nats), mean over seeds"] == "5.6300"
    assert here.loc[("lora", "after"), "held-out loss (nats), seed 0"] == "5.6000"
    assert here.loc[("lora", "after"), "seeds"] == 3 and table[wheres[1]].loc[
        ("lora", "after"), "seeds"] == 1, "the number of seeds beside each mean"
    assert here.loc[("lora", "before"), "frozen base stored (MB)"] == "1.902"
    assert here.loc[("lora", "before"), "step time (ms), seed 0"].startswith("– (")
    assert here.loc[("lora", "after"), "step time (ms), seed 0"] == "15.01"


def test_codebook_gap_is_written_without_e_notation():
    text = qlora.codebook_gap()
    assert "e-0" not in text and ("×10⁻" in text or text.endswith(" 0")), text


# ------------------------------------------------------------------- notebook 11


def advice_rows() -> pd.DataFrame:
    rows = []
    for seed in range(3):
        for lr, loss in ((3e-6, 5.69), (1e-5, 5.66), (3e-5, 5.62), (1e-4, 5.615)):
            rows.append({**HERE, "sweep": "lr", "method": "full", "targets": "-", "rank": 0,
                         "batch_size": 32, "lr": lr, "run_seed": seed, "metric": "eval_loss",
                         "value": loss + 0.01 * seed})
    recorded = [{**r, **H100} for r in rows[:4]]
    return pd.DataFrame(rows + recorded)


def test_advice_table_tells_learning_rates_apart_and_names_its_unit():
    table = lora.advice_table(advice_rows())
    assert table["learning rate"].iloc[:4].tolist() == ["3×10⁻⁶", "1×10⁻⁵", "3×10⁻⁵", "1×10⁻⁴"]
    assert table["where"].iloc[0].startswith("this machine"), "this machine's rows first"
    assert "2026-11-22" in table["where"].iloc[-1], "a reference says when it was recorded"
    assert "held-out loss (nats), mean" in table.columns and table["seeds"].iloc[0] == 3
    assert table["95 % low (nats)"].iloc[-1].startswith("– (one seed"), "no NaN interval"
    no_nan(table)


def test_power_of_ten_is_one_notation_for_a_grid():
    assert [lora.power_of_ten(x) for x in (3e-6, 1e-3, 0.03, 9.9996e-4)] == [
        "3×10⁻⁶", "1×10⁻³", "3×10⁻²", "1×10⁻³"]
    assert lora.power_of_ten(math.nan) == "–"


def sweep_rows() -> pd.DataFrame:
    rows = []
    for extra in (H100, HERE):
        for method, rank, loss, params in (("none", 0, 5.69, None), ("full", 0, 5.586, 950912),
                                           ("lora", 1, 5.624, 5120), ("lora", 8, 5.612, 40960)):
            sweep = "base" if method == "none" else "rank"
            rows.append({**extra, "sweep": sweep, "method": method, "rank": rank,
                         "metric": "eval_loss", "value": loss, "unit": "nats"})
            if params is not None:
                rows += [{**extra, "sweep": sweep, "method": method, "rank": rank,
                          "metric": m, "value": v, "unit": u}
                         for m, v, u in (("trainable_params", float(params), "params"),
                                         ("step_time", 9.115931, "ms"),
                                         ("peak_memory", 445.801984, "MB"))]
    for target, loss in (("attention", 5.649), ("ffn", 5.612), ("all", 5.63)):
        rows.append({**HERE, "sweep": "targets", "method": "lora", "rank": 8, "targets": target,
                     "metric": "eval_loss", "value": loss, "unit": "nats"})
    return pd.DataFrame(rows)


def test_rank_table_has_units_integers_and_this_machine_first():
    table = lora.rank_table(sweep_rows())
    no_nan(table)
    headers = list(dict.fromkeys(table.columns.get_level_values(0)))
    assert headers == ["held-out loss (nats)", "trainable params", "step time (ms)",
                       "peak memory (MB)"]
    assert table.columns[0][1].startswith("this machine"), table.columns[0]
    assert "2026-11-22" in table.columns[1][1]
    first = table.columns[0][1]
    assert table.loc[("full", 0), ("trainable params", first)] == "950,912"
    assert table.loc[("full", 0), ("peak memory (MB)", first)] == "445.8"
    assert table.loc[("none", 0), ("step time (ms)", first)].startswith("– (")


def test_share_table_has_a_header():
    table = lora.share_table(sweep_rows())
    assert table.columns[0][0] == "share of full fine-tuning's gain"
    share = (5.69 - 5.624) / (5.69 - 5.586)
    assert table.index.name == "LoRA rank" and table.iloc[0, 0] == f"{share:.2f}"


def test_targets_figure_spans_the_data_not_zero():
    fig = lora.targets_figure(sweep_rows())
    low, high = fig.layout.yaxis.range
    assert 5.5 < low < 5.612 and 5.649 < high < 5.8, (low, high)
    # points on a cut axis, never bars (a bar's height would misstate the ratio)
    assert {t.type for t in fig.data} == {"scatter"} and all(t.mode == "markers"
                                                             for t in fig.data)


def test_rank_figure_names_a_device_once():
    fig = lora.rank_figure(sweep_rows(), "eval_loss", "t", "held-out loss (nats)")
    names = [t.name for t in fig.data]
    assert all(n.count("H100") <= 1 for n in names), names
    assert sum(n.startswith("lora") for n in names) == 2, names


def test_rank_figure_draws_the_base_and_full_fine_tuning_of_each_machine():
    """The prose reads the ranks "against the base model's loss and full fine-tuning's": the
    loss figure draws both, flat across the ranks, per machine; the other metrics do not."""
    fig = lora.rank_figure(sweep_rows(), "eval_loss", "t", "held-out loss (nats)")
    flat = {t.name: set(t.y) for t in fig.data if not t.name.startswith("lora")}
    assert flat == {"base model (recorded, H100 80GB HBM3)": {5.69},
                    "base model (measured, H200)": {5.69},
                    "full (recorded, H100 80GB HBM3)": {5.586},
                    "full (measured, H200)": {5.586}}, flat
    line = next(t for t in fig.data if t.name == "full (measured, H200)")
    assert list(line.x) == [1.0, 8.0], "across the ranks swept"
    assert "full fine-tuning" in line.hovertemplate
    one = sweep_rows()
    one = one[one["device"] == "NVIDIA H200"]
    names = {t.name for t in lora.rank_figure(one, "eval_loss", "t", "y").data}
    assert {"base model (measured)", "full (measured)"} <= names, names
    step = lora.rank_figure(sweep_rows(), "step_time", "t", "step time (ms)")
    assert all(t.name.startswith("lora") for t in step.data)


def test_readable_values_keep_counts_integer():
    demo = pd.DataFrame({"what": ["gap", "params"], "value": [6.2e-6, 118272.0],
                         "unit": ["logit", "params"]})
    shown = lora.readable_values(demo)["value"].tolist()
    assert shown[1] == "118,272" and "e-" not in shown[0] and "×10⁻⁶" in shown[0], shown


def lr_advice(lora_best: float, seeds: int = 3) -> pd.DataFrame:
    """A bracketed LR sweep of both methods: full FT's optimum at 10^-4.2, LoRA's at
    10^(lora_best + 0.1 * seed)."""
    rows = []
    for seed in range(seeds):
        for method, best in (("lora", lora_best + 0.1 * seed), ("full", -4.2)):
            for lr in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
                rows.append({"sweep": "lr", "method": method, "lr": lr, "run_seed": seed,
                             "metric": "eval_loss", "value": (math.log10(lr) - best) ** 2})
    return pd.DataFrame(rows).assign(source="measured", device="cpu")


def test_exact_counts_are_judged_exactly_and_the_lr_claim_by_its_interval():
    timing = pd.DataFrame({"metric": [], "variant": [], "value": []})
    off_by_one = pd.DataFrame({"source": ["predicted", "measured"], "value": [100, 101]})
    advice = lr_advice(-3.0)   # LoRA's optimum 1.2-1.4 decades above full's: interval > 1
    table = lora.claims(off_by_one, advice, timing).set_index("claim")
    exact = table.loc["trainable params = r(d_in+d_out) per matrix"]
    assert exact["holds if"] == "equal" and not exact["verdict"].startswith("holds"), exact
    ten = table.loc["LoRA's best LR ≥ 10× full FT's (log10 ratio ≥ 1)"]
    r = lora.lr_ratio(advice)
    assert r["low"] > 1 and "interval" in ten["holds if"], (r, ten)
    # ... but a refined optimum is no finer than its grid: the claim is judged on the seeds'
    # interval widened by half a grid step at each end, which reaches below 1
    assert ten["low"] == pytest.approx(r["low"] - lora.GRID_TOL) and ten["low"] < 1, (r, ten)
    assert ten["high"] == pytest.approx(r["high"] + lora.GRID_TOL)
    assert ten["verdict"].startswith("inconclusive"), ten
    assert "half step" in ten["where"], ten
    above = table.loc["LoRA's best LR is higher than full FT's (log10 of the ratio > 0)"]
    assert above["low"] == ten["low"] and above["verdict"].startswith("holds"), above


def test_every_lr_claim_is_judged_on_the_interval_widened_by_the_grid():
    timing = pd.DataFrame({"metric": [], "variant": [], "value": []})
    none = pd.DataFrame({"source": [], "value": []})
    far = lora.claims(none, lr_advice(-2.5), timing).set_index("claim")   # 1.7-1.9 decades
    ten = far.loc["LoRA's best LR ≥ 10× full FT's (log10 ratio ≥ 1)"]
    assert ten["low"] > 1 and ten["verdict"].startswith("holds"), ten
    one = lora.lr_ratio(lr_advice(-3.0, seeds=1))          # one seed: the ratio ± half a step
    assert one["judged_low"] == pytest.approx(one["mean"] - lora.GRID_TOL)
    assert one["judged_high"] == pytest.approx(one["mean"] + lora.GRID_TOL)
    single = lora.claims(none, lr_advice(-3.0, seeds=1), timing).set_index("claim")
    assert single.loc["LoRA's best LR ≥ 10× full FT's (log10 ratio ≥ 1)",
                      "verdict"].startswith("inconclusive")
    text = lora.advice_caption(lr_advice(-3.0))
    r = lora.lr_ratio(lr_advice(-3.0))
    assert f"log10 [{r['judged_low']:.2f}, {r['judged_high']:.2f}]" in text, text
    edge = lr_advice(-3.0)
    edge = edge[~((edge["method"] == "full") & (edge["lr"] < 1e-4))]   # full's best at an edge
    text = lora.advice_caption(edge)
    assert "do not judge it" in text and "judge the ratio on" not in text, text
    row = lora.claims(none, edge, timing).set_index("claim").loc[
        "LoRA's best LR ≥ 10× full FT's (log10 ratio ≥ 1)"]
    assert row["verdict"].startswith("n/a") and "half step" not in row["where"], row


def test_lecture_saving_caption_says_when_the_verdict_sits_at_the_tolerance_edge():
    def ratios(measured: float) -> pd.DataFrame:
        return pd.DataFrame([{**HERE, "size": "7b", "method": "qlora",
                              "metric": "saving_vs_full", "value": measured},
                             {**HERE, "source": "predicted", "size": "7b", "method": "qlora",
                              "metric": "saving_vs_full", "value": 12.73}])

    edge = qlora.lecture_saving_caption(ratios(13.56))
    assert "13.56×" in edge and "15.25 % below" in edge and "ends at 13.60×" in edge, edge
    assert "outside it by 0.25 percentage points, at the tolerance's edge" in edge, edge
    assert "12.73×" in edge
    far = qlora.lecture_saving_caption(ratios(8.0))
    assert "edge" not in far and "outside it by 35.00 percentage points" in far, far
    inside = qlora.lecture_saving_caption(ratios(13.7))
    assert "inside it by" in inside and "edge" in inside, inside
    assert "No measured" in qlora.lecture_saving_caption(ratios(13.56).iloc[1:])

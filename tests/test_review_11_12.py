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


def test_rank_figure_names_a_device_once():
    fig = lora.rank_figure(sweep_rows(), "eval_loss", "t", "held-out loss (nats)")
    names = [t.name for t in fig.data]
    assert all(n.count("H100") <= 1 and n.startswith("lora") for n in names), names


def test_readable_values_keep_counts_integer():
    demo = pd.DataFrame({"what": ["gap", "params"], "value": [6.2e-6, 118272.0],
                         "unit": ["logit", "params"]})
    shown = lora.readable_values(demo)["value"].tolist()
    assert shown[1] == "118,272" and "e-" not in shown[0] and "×10⁻⁶" in shown[0], shown


def test_exact_counts_are_judged_exactly_and_the_lr_claim_by_its_interval():
    timing = pd.DataFrame({"metric": [], "variant": [], "value": []})
    off_by_one = pd.DataFrame({"source": ["predicted", "measured"], "value": [100, 101]})
    rows = []
    for seed in range(3):   # LoRA's optimum 1.1-1.3 decades above full's: an interval > 1
        for method, best in (("lora", -3.0 + 0.1 * seed), ("full", -4.2)):
            for lr in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
                rows.append({"sweep": "lr", "method": method, "lr": lr, "run_seed": seed,
                             "metric": "eval_loss", "value": (math.log10(lr) - best) ** 2})
    advice = pd.DataFrame(rows).assign(source="measured", device="cpu")
    table = lora.claims(off_by_one, advice, timing).set_index("claim")
    exact = table.loc["trainable params = r(d_in+d_out) per matrix"]
    assert exact["holds if"] == "equal" and not exact["verdict"].startswith("holds"), exact
    ten = table.loc["LoRA's best LR ≥ 10× full FT's (log10 ratio ≥ 1)"]
    r = lora.lr_ratio(advice)
    assert r["low"] > 1 and ten["low"] == pytest.approx(r["low"]), (r, ten)
    assert ten["verdict"].startswith("holds") and "interval" in ten["holds if"], ten

"""The review of notebooks 08-10 on the H200: times on every button, this machine's roofline,
readable tables with units and provenance, intervals that never have width 0 where counts bound
them, and prose that matches the figures."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from workbook import evaluation as ev
from workbook import plots, precision, registry, sft
from workbook.claims import claims_table

# ------------------------------------------------------------------------------------ 08


def test_precision_experiments_state_their_time_on_every_preset():
    for name in ("precision_stagnation", "precision_training"):
        exp = registry.get(name)
        assert set(exp.typical_s) == {"small", "full"}, f"{name}: a button with no time"
    assert registry.get("precision_stagnation").typical_s["full"] <= 60, "runs live on a GPU"
    assert registry.get("precision_training").typical_s["full"] > 60, "a button on a GPU"


def test_the_zero_line_is_half_the_smallest_subnormal_and_matches_share_zero():
    lines = precision.format_lines().set_index("format")
    assert lines.loc["fp16", "log2_flush_below"] == -25
    assert lines.loc["fp16", "log2_smallest_subnormal"] == -24
    gen = torch.Generator().manual_seed(0)
    grads = {kind: torch.randn(20000, generator=gen) * 2.0 ** -22
             for kind in precision.GRAD_KINDS}
    hist = precision.log2_histogram(grads)
    logit = hist[hist["kind"] == "logit_grad"]
    left = logit.loc[logit["log2_abs"] < -25, "share"].sum()
    shares = precision.share_rows(grads, (0,)).set_index(["kind", "format", "metric"])
    zero = shares.loc[("logit_grad", "fp16", "share_zero"), "value"]
    assert left == pytest.approx(zero, abs=1e-3), "left of the dotted line = flushed to 0"


def test_histogram_labels_do_not_overlap_and_far_lines_do_not_stretch_the_axis():
    gen = torch.Generator().manual_seed(0)
    grads = {kind: torch.randn(5000, generator=gen) * 1e-6 for kind in precision.GRAD_KINDS}
    with plots.fresh_colours():
        fig = precision.histogram_figure(precision.log2_histogram(grads),
                                         precision.format_lines())
    shapes = [s.x0 for s in fig.layout.shapes]
    assert len(shapes) == len(set(shapes)), "one line and one label per position"
    texts = [a.text for a in fig.layout.annotations]
    assert any("fp16, fp8_e5m2" in t for t in texts), "fp16 and e5m2 share 2^-14: one label"
    low, high = fig.layout.xaxis.range
    assert low > -60 and all(low <= x <= high for x in shapes), "BF16's -134 is not drawn"
    assert any(t.startswith("off the chart") and "bf16" in t for t in texts)


def _training_rows(device: str, source: str, when: str, fp32_ms: float) -> pd.DataFrame:
    rows = []
    for mode, ms, mem, skipped in (("fp32", fp32_ms, 12.5, 0), ("bf16_autocast", fp32_ms / 4,
                                                                  9.75, 0),
                                   ("fp16_gradscaler", fp32_ms / 4, 9.75, 2)):
        rows += [{"mode": mode, "metric": m, "value": v, "step": math.nan}
                 for m, v in (("step_time", ms), ("peak_memory", mem), ("model_tflops", 100.0),
                              ("skipped_steps", float(skipped)))]
        rows += [{"mode": mode, "metric": "loss", "value": 6.0 + i / 10, "step": i}
                 for i in range(6)]
    return pd.DataFrame(rows).assign(source=source, status="ok", device=device, n_gpus=1,
                                     recorded_at=when, preset="full", seed=0)


def _roofline(device: str, source: str) -> pd.DataFrame:
    return pd.DataFrame([{"kind": "matmul", "dtype": d, "size": 8192, "metric": "throughput",
                          "value": v, "source": source, "status": "ok", "device": device,
                          "n_gpus": 1, "recorded_at": "2026-12-03T10:00:00Z", "seed": 0}
                         for d, v in (("fp32", 50.0), ("bf16", 750.0), ("fp16", 750.0))])


def test_training_summary_has_units_provenance_and_this_machine_first():
    rows = pd.concat([_training_rows("NVIDIA H100", "recorded", "2026-11-22T10:00:00Z", 280.0),
                      _training_rows("NVIDIA A100", "measured", None, 400.0)], ignore_index=True)
    roofline = pd.concat([_roofline("NVIDIA A100", "measured"),
                          _roofline("NVIDIA H100", "recorded")], ignore_index=True)
    table = precision.training_summary(rows, roofline)
    assert "metric" not in table.columns and "step time (ms)" in table.columns
    assert table["measured on"].iloc[0] == "this machine (NVIDIA A100)"
    assert table["measured on"].iloc[-1].startswith("recorded on NVIDIA H100 ×1, 2026-11-22")
    assert set(table["skipped steps"]) == {"0", "2"}, "a count is an integer"
    bound = table.set_index(["measured on", "mode"])["roofline bound (ms)"]
    assert bound.iloc[0] == "400.0" and bound.iloc[1] == "26.7", "A100's own roofline: 400/15"
    assert not table.isna().any().any()


def test_stagnation_summary_reads_in_percent_with_its_machine():
    rows = pd.DataFrame([{"part": "training", "mode": m, "step": s, "metric": metric,
                          "value": v, "source": "recorded", "device": "NVIDIA H200",
                          "n_gpus": 1, "recorded_at": "2026-12-03T06:14:49Z", "seed": 0}
                         for m, lost in (("fp32", 1e-5), ("bf16_pure", 0.78))
                         for s in range(3)
                         for metric, v in (("updates_lost", lost), ("loss", 3.0 - s / 10))])
    table = precision.stagnation_summary(rows).set_index("mode")
    assert table.loc["fp32", "updates lost (% of weights, mean over steps)"] == "0.001"
    assert table.loc["bf16_pure", "updates lost (% of weights, mean over steps)"] == "78.000"
    assert table["measured on"].iloc[0].startswith("recorded on NVIDIA H200 ×1, 2026-12-03")
    assert set(table["model (preset)"]) == {"–"}, "no preset column: no model named"
    small = precision.stagnation_summary(rows.assign(model_preset="small"))
    assert set(small["model (preset)"]) == {"small"}, "a CPU's small-preset run says so"


def test_matmul_figure_names_its_source_alike_in_title_and_legend():
    with plots.fresh_colours():
        here = precision.matmul_figure(_roofline("NVIDIA A100", "measured"))
        there = precision.matmul_figure(_roofline("NVIDIA H200", "recorded"))
    # no datasheet rows (a CPU has none): the title promises none
    assert here.layout.title.text.startswith("matmul throughput per dtype (8192³): measured here")
    assert "datasheet" not in here.layout.title.text
    assert [t.name for t in here.data] == ["measured here"]
    assert [t.name for t in there.data] == ["recorded"]
    sheet = _roofline("NVIDIA H200", "datasheet").assign(value=989.0)
    with plots.fresh_colours():
        both = precision.matmul_figure(pd.concat([_roofline("NVIDIA H200", "recorded"), sheet]))
    assert "recorded vs datasheet" in both.layout.title.text
    assert [t.name for t in both.data] == ["recorded", "datasheet"]


def test_claims_use_this_machines_roofline():
    roofline = pd.concat([_roofline("NVIDIA A100", "measured"),
                          _roofline("NVIDIA H200", "recorded").assign(value=1.0)])
    table = precision.claims(pd.DataFrame(), roofline, pd.DataFrame())
    assert table["measured"].iloc[0] == pytest.approx(15.0)
    assert table["where"].iloc[0] == "this machine (NVIDIA A100)"


def test_settled_caption_names_the_skips_at_the_settled_scale():
    trace = [(0, 2.0 ** 24, 1), (1, 2.0 ** 23, 1), (2, 2.0 ** 22, 0), (3, 2.0 ** 22, 1),
             (4, 2.0 ** 21, 0), (5, 2.0 ** 22, 0)]
    rows = [{"part": "gradscaler", "step": s, "metric": m, "value": v}
            for s, scale, skipped in trace for m, v in (("loss_scale", scale),
                                                        ("skipped", float(skipped)))]
    rows += [{"part": "underflow", "scaling": "gradscaler", "metric": "share_overflow",
              "value": 0.0, "step": math.nan}]
    text = precision.settled_caption(pd.DataFrame(rows).assign(
        source="measured", device="cpu", preset="small"))
    assert "ended at 2^22" in text and "(step 3)" in text and "0.00000" in text
    assert "3 of its 6 steps" in text


# ------------------------------------------------------------------------------------ 09


def _sft_rows(exact: dict[str, list[float]], **prov) -> pd.DataFrame:
    rows = [{"policy": p, "seed": s, "step": step, "metric": "writes_user_turn",
             "value": v if step else 0.0, "unit": "fraction", "status": "ok",
             "preset": "full", **prov}
            for p, values in exact.items() for s, v in enumerate(values) for step in (0, 600)]
    return pd.DataFrame(rows)


def test_a_share_of_0_against_1_still_has_an_interval():
    one = _sft_rows({"answer_only": [0.0], "whole_sequence": [1.0]}, source="recorded",
                    device="NVIDIA H100", n_gpus=1, recorded_at="2026-11-22T10:00:00Z")
    row = sft.paired_differences(one).iloc[0]
    assert row["low"] == -1.0 and -1.0 < row["high"] < 0, "Agresti-Caffo: not [-1, -1]"
    three = _sft_rows({"answer_only": [0.0] * 3, "whole_sequence": [1.0] * 3},
                      source="measured", device="NVIDIA H200", n_gpus=1)
    row = sft.paired_differences(three).iloc[0]
    assert row["high"] > row["low"], "three seeds alike: the items still give a width"
    assert sft.agresti_caffo(0.0, 1.0, 256)[1] > -1.0


def test_curves_put_the_latest_first_and_tell_machines_apart_by_dash():
    def curve(device, when, seeds):
        return pd.DataFrame([{"policy": p, "seed": s, "step": step, "metric": "answer_loss",
                              "value": 1.0, "unit": "nats/token", "source": "recorded",
                              "device": device, "n_gpus": 1, "recorded_at": when,
                              "preset": "full", "status": "ok"}
                             for p in ("answer_only", "whole_sequence") for s in seeds
                             for step in (0, 100)])

    rows = pd.concat([curve("NVIDIA H100 80GB HBM3", "2026-11-22T10:00:00Z", [0]),
                      curve("NVIDIA H200", "2026-12-02T10:00:00Z", [0, 1, 2])])
    with plots.fresh_colours():
        fig = sft.curves_figure(rows, "answer_loss", "answer loss")
    title = fig.layout.title.text
    assert title.index("H200") < title.index("H100"), "the latest recording first"
    assert "mean of seeds 0,1,2" in title and "H100 80GB HBM3 ×1, 2026-11-22, seed 0, full " \
        "preset: seed 0" in title
    dashes = {t.name: t.line.dash for t in fig.data}
    h100 = "answer_only (recorded, H100 80GB HBM3)"
    assert dashes["answer_only (recorded, H200)"] != dashes[h100]


def test_the_masking_panel_title_names_the_seeds_a_run_uses(monkeypatch):
    monkeypatch.setenv("WORKBOOK_PRESET", "full")
    assert "seed 0 only" in sft.masking_panel_title()
    monkeypatch.setenv("WORKBOOK_PRESET", "small")
    assert "mean over seeds 0, 1, 2" in sft.masking_panel_title("exact_match")


# ------------------------------------------------------------------------------------ 10


def _dpo_rows(unsafe: list[float], safe: list[float]) -> pd.DataFrame:
    data = [("sft", 0, 0, "exact_match", 0.7), ("sft", 0, 0, "refusal_rate_unsafe", 1.0),
            ("sft", 0, 0, "refusal_rate_safe", 0.0), ("sft", 0, 0, "eval_items", 600.0),
            ("sft_no_safety", 0, 0, "refusal_rate_unsafe", 0.0),
            ("sft_no_safety", 0, 0, "refusal_rate_safe", 0.0)]
    for seed in range(len(unsafe)):
        data += [("dpo", seed, 10, "reward_margin", 4.0 + seed / 10),
                 ("dpo", seed, 10, "exact_match", 0.3 + seed / 100),
                 ("dpo", seed, 10, "win_rate_vs_sft", 0.3),
                 ("dpo", seed, 10, "refusal_rate_unsafe", unsafe[seed]),
                 ("dpo", seed, 10, "refusal_rate_safe", safe[seed])]
    return pd.DataFrame(data, columns=["model", "train_seed", "step", "metric", "value"]
                        ).assign(source="recorded", device="NVIDIA H200", n_gpus=1,
                                 recorded_at="2026-12-02T16:59:50Z", preset="full")


def test_dpo_claims_keep_shares_in_range_and_bound_over_refusal_by_its_counts():
    claims = ev.dpo_claims(_dpo_rows([0.583, 0.0, 0.167], [0.0, 0.0, 0.0]))
    refuse, over = claims[2], claims[3]
    assert refuse.low >= -1.0 and refuse.high <= 1.0, "a change of shares is cut at -1 and 1"
    assert over.high > ev.OVER_REFUSAL_TOLERANCE, "0 of 24 requests cannot rule out 10 %"
    table = claims_table([over])
    assert table["verdict"].iloc[0].startswith("inconclusive"), table["verdict"].iloc[0]


def test_dpo_summary_says_why_a_cell_is_empty_and_where_it_was_measured():
    table = ev.dpo_summary(_dpo_rows([0.5, 0.0, 0.2], [0.0] * 3)).set_index("model")
    win = "win rate vs sft (share, a tie half)"
    assert table.loc["sft", win] == "– (the reference)"
    assert table.loc["sft_no_safety", win].startswith("– (")
    assert table["measured on"].iloc[0].startswith("recorded on NVIDIA H200 ×1, 2026-12-02")
    assert table.loc["dpo", "refuses unsafe requests (share)"].startswith("0.233 [0.000,")


def test_replay_claim_is_the_paired_difference_with_its_own_interval():
    from tests.test_evaluation import _mid_rows

    table = ev.claims(pd.DataFrame({"variant": ["x"], "metric": ["x"], "value": [0.0],
                                    "source": ["measured"]}),
                      _mid_rows({0.0: [0.2, 0.3, 0.25], 0.5: [0.05, 0.06, 0.04]}), {})
    row = table[table["claim"].str.startswith("replaying")].iloc[0]
    mean, low, high = ev.mean_interval([0.05 - 0.2, 0.06 - 0.3, 0.04 - 0.25])
    assert (row["measured"], row["low"], row["high"]) == pytest.approx((mean, low, high))
    assert "minus without" in row["claim"] and row["predicted"] == 0.0


def test_arena_claims_use_the_t_interval_over_seeds():
    sweeps = {"identity_leak": ev.knob_sweep("identity_leak", [0.0, 0.3], seeds=(0, 1, 2))}
    table = ev.claims(pd.DataFrame({"variant": ["x"], "metric": ["x"], "value": [0.0],
                                    "source": ["measured"]}), pd.DataFrame(), sweeps)
    row = table[table["claim"].str.startswith("an identity leak")].iloc[0]
    leak = sweeps["identity_leak"]
    part = leak[leak["metric"] == "favoured_rank_shift"].set_index("seed")
    diff = part[part["identity_leak"] == 0.3]["value"] - part[part["identity_leak"] == 0.0][
        "value"]
    _, low, high = ev.mean_interval(diff.tolist())
    if low == low and high > low:
        assert (row["low"], row["high"]) == pytest.approx((low, high))


def test_test_task_summary_has_units_and_fixed_notation():
    rows = pd.DataFrame([{"variant": v, "metric": m, "value": x}
                         for v, vals in (("base", (0.0, 0.0, 5.1449)),
                                         ("general_sft", (0.0, 0.768, 11.68)))
                         for m, x in zip(("benchmark_exact_match", "general_exact_match",
                                          "pretraining_val_loss"), vals, strict=True)])
    table = ev.test_task_summary(rows).set_index("variant")
    assert "metric" not in table.columns and table.columns.name is None
    assert table.loc["base", "benchmark exact match (share of items)"] == "0.000"
    assert table.loc["general_sft", "pre-training val loss (nats/token)"] == "11.680"

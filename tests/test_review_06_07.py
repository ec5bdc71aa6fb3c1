"""Review of notebooks 06 and 07 as run on a one-GPU H200: what a one-rank machine may claim,
tables without NaN or float counts, machines named as the claims name them; the FLOP model of
FlashAttention's backward, the exactness table's dashes, the GPT-2 table per machine, units."""

from __future__ import annotations

import pandas as pd
import pytest

from workbook import attention as A
from workbook import model_parallel as mp


def _rec(n_gpus: int, **extra) -> dict:
    return {"device": "NVIDIA H200", "n_gpus": n_gpus, "recorded_at": "2026-11-22T16:51:28Z",
            "seed": 0, "rank": 0, "status": "ok", "source": "recorded", **extra}


def _here(**extra) -> dict:
    return {"device": "NVIDIA H200", "n_gpus": 1, "recorded_at": "2026-12-03T17:34:07Z",
            "seed": 0, "rank": 0, "status": "ok", "source": "measured", **extra}


def _tp_rows() -> pd.DataFrame:
    rows = []
    for make, tp in ((_here, 1), (lambda **kw: _rec(2, **kw), 2)):
        rows += [make(tp=tp, metric="max_abs_err_output", value=0.0),
                 make(tp=tp, metric="allreduce_calls", value=4.0 * (tp > 1)),
                 {**make(tp=tp, metric="allreduce_calls", value=4.0 * (tp > 1)),
                  "source": "predicted"},
                 make(tp=tp, metric="allreduce_payload", value=2.0**28 * (tp > 1), unit="B")]
        if tp > 1:
            rows.append(make(tp=tp, metric="max_abs_err_torch_tp_mlp", value=0.0078))
    return pd.DataFrame(rows)


def _pp_rows() -> pd.DataFrame:
    rows = []
    for m in (1, 4):
        for sched, held in (("gpipe", m), ("1f1b", 1)):
            rows += [_here(p=1, m=m, schedule=sched, metric="idle_fraction_replay", value=0.0),
                     _here(p=1, m=m, schedule=sched, metric="idle_fraction", value=0.0),
                     {**_here(p=1, m=m, schedule=sched, metric="idle_fraction", value=0.0),
                      "source": "predicted"},
                     _here(p=1, m=m, schedule=sched, metric="peak_in_flight", value=held),
                     _here(p=1, m=m, schedule=sched, metric="peak_activation_bytes",
                           value=held * 2.0**20)]
        # a recording of 4 GPUs from before 1F1B: GPipe alone, no held counts
        rows += [_rec(4, p=4, m=m, metric="idle_fraction_replay", value=0.8 / m),
                 _rec(4, p=4, m=m, metric="idle_fraction", value=0.8 / m),
                 {**_rec(4, p=4, m=m, metric="idle_fraction", value=3 / (m + 3)),
                  "source": "predicted"}]
    return pd.DataFrame(rows)


def test_one_rank_claims_are_not_tested_and_multi_rank_recordings_judge():
    table = mp.claims(_tp_rows(), _pp_rows(), pd.DataFrame())
    here = table[table["where"] == "this machine (NVIDIA H200)"]
    untested = here[here["verdict"].str.startswith("not tested here (1 rank)")]
    assert set(untested["claim"].str[:5]) == {"TP ou", "TP al", "GPipe", "1F1B "}, untested
    assert untested["measured"].isna().all(), "a number that cannot fail is not shown"
    assert not here["verdict"].str.startswith("holds").any() or all(
        "activations" in c or "activation bytes" in c
        for c in here.loc[here["verdict"].str.startswith("holds"), "claim"]), here
    four = table[table["where"].str.startswith("recorded on NVIDIA H200 ×4")]
    assert (four["claim"].str.startswith("1F1B") & (four["verdict"].str.startswith(
        "not measured: these rows ran GPipe alone"))).any(), four[["claim", "verdict"]]
    two = table[table["where"].str.startswith("recorded on NVIDIA H200 ×2")]
    assert two["verdict"].str.startswith("holds").all(), "tp=2 recorded: judged, and holds"


def test_schedules_caption_says_where_1f1b_ran_with_more_stages():
    caption = mp.schedules_caption(_pp_rows())
    assert "1F1B with more than one stage is measured nowhere" in caption, caption
    assert "recorded on NVIDIA H200 ×4, 2026-11-22, seed 0 (p=4)" in caption, caption
    fig = mp.plot_schedules(_pp_rows())
    assert "this machine (NVIDIA H200)" in fig.layout.title.text and "one stage" in \
        fig.layout.title.text, "a figure says where its rows come from, and that p=1 is 0"


def test_06_tables_name_machines_like_the_claims_and_show_no_nan_or_float_counts():
    tp = mp.tp_summary(_tp_rows())
    assert tp["where"].tolist() == ["this machine (NVIDIA H200)",
                                    "recorded on NVIDIA H200 ×2, 2026-11-22, seed 0"]
    assert tp["allreduce_calls"].tolist() == [0, 4], "counts as whole numbers, not 4.0"
    assert tp["allreduce_payload (MiB)"].tolist() == [0, 256], "bytes in MiB, unit in the header"
    assert tp.loc[0, "max_abs_err_torch_tp_mlp"].startswith("– (tp=1")
    summary = mp.schedule_summary(_pp_rows())
    assert not summary.isna().any().any(), summary
    recorded = summary[summary["where"].str.startswith("recorded")]
    assert (recorded["held_measured"] == "– (recorded before it was counted)").all()
    view = mp.analytic_view(p=4, m=8, tp=2, d_model=4096, seq_len=2048).set_index("metric")
    assert view.loc["bubble fraction", "value"] == 0.2727
    assert view.loc["p2p bytes per stage boundary per step", ["value", "unit"]].tolist() == [
        256, "MiB"]


def _ep_rows(world: int, prov) -> list[dict]:
    rows = []
    for cf in (1.0, 2.0):
        for metric, value, source in (("alltoall_bytes", 2.0**20 * (world > 1), "measured"),
                                      ("alltoall_bytes_if_uniform", 2.0**20 * (world > 1),
                                       "predicted"), ("alltoall_calls", 2.0, "measured"),
                                      ("dropped_fraction", 0.01, "measured"),
                                      ("dropped_fraction", 0.01, "predicted")):
            row = prov(world=world, skew=0.0, capacity_factor=cf, metric=metric, value=value)
            rows.append({**row, "source": source if source == "predicted" else row["source"]})
    return rows


def test_tradeoff_table_takes_this_machines_ep_row_first_and_dashes_with_reasons():
    ep = pd.DataFrame(_ep_rows(4, lambda **kw: _rec(4, **kw)) + _ep_rows(1, _here))
    table = mp.tradeoff_table(pd.DataFrame(columns=["dp", "tp", "pp", "status"]), ep)
    assert table["where"].tolist() == ["this machine (NVIDIA H200)",
                                       "recorded on NVIDIA H200 ×4, 2026-11-22, seed 0"]
    assert table["layout"].tolist() == ["ep1", "ep4"]
    assert not table.isna().any().any(), table
    assert table.loc[0, "ms in calls measured"].startswith("– (EP:")
    names = [t.name for t in mp.plot_drops(ep).data]
    assert sum("prediction" in n for n in names) == 1, f"one uniform prediction: {names}"


# ------------------------------------------------------------------------------- notebook 07


def test_flop_model_counts_the_recomputation_once():
    fwd = A.flops(1024, 64, batch=64, n_heads=16)
    assert A.flops(1024, 64, batch=64, n_heads=16, mode="fwd+bwd") == 3.5 * fwd
    assert A.flops(1024, 64, batch=64, n_heads=16, mode="fwd+bwd", recompute=False) == 3 * fwd
    cases = [A.Case(v, 1024, 64, 64, 16, "float16", False, "fwd+bwd")
             for v in ("vanilla", "sdpa_math", "sdpa_flash", "triton")]
    got = {r["variant"]: r["value"] for r in A.gpt2_flops_rows(cases)}
    assert got["vanilla"] == got["sdpa_math"] == pytest.approx(3 * fwd / 1e9)
    assert got["sdpa_flash"] == got["triton"] == pytest.approx(3.5 * fwd / 1e9)
    assert got["triton"] / got["vanilla"] == pytest.approx(7 / 6)


def test_recorded_gpt2_flops_rows_follow_the_model():
    from workbook import results

    rows = results.load("attention_gpt2_medium")
    flops = rows[(rows["metric"] == "flops") & (rows["source"] == "predicted")]
    if flops.empty:
        pytest.skip("no GPT-2 rows recorded")
    for r in flops.itertuples():
        want = A.flops(r.seq_len, r.head_dim, batch=r.batch, n_heads=r.n_heads, mode="fwd+bwd",
                       recompute=A.RECOMPUTES.get(r.variant, True)) / 1e9
        assert r.value == pytest.approx(want), (r.variant, r.device)
    limits = A.gpt2_limits(rows)  # the ledger as a CPU notebook shows it: recorded machines
    assert limits["where"].nunique() == rows["device"].nunique(), limits
    # one measured number per configuration and machine: no superseded older duplicates
    for name in ("attention_gpt2_medium", "attention_traffic"):
        ok = results.load(name)
        ok = ok[ok["source"] == "recorded"]
        key = ["variant", "seq_len", "head_dim", "mode", "metric", "device", "n_gpus"]
        assert not ok.duplicated(key).any(), ok[ok.duplicated(key, keep=False)]


def test_exactness_table_dashes_say_why_and_list_every_variant():
    rows = pd.DataFrame([
        {"variant": v, "dtype": "float32", "band": 1e-5, "metric": m, "value": val,
         "status": st, "error": err, "device": "NVIDIA H200", "source": "measured"}
        for v, val, st, err in (("vanilla", 1e-7, "ok", ""),
                                ("flash_attn", float("nan"), "unsupported",
                                 "the optional flash_attn package is not installed"),
                                ("triton", float("nan"), "unsupported",
                                 "the Triton kernel has no float32 kernel; allowed: float16"))
        for m in ("rel_error", "rel_error_grad")])
    table = A.exactness_table(rows)
    assert list(table.columns) == ["vanilla", "flash_attn", "triton"]
    assert set(table["flash_attn"]) == {"– (not installed)"}
    assert set(table["triton"]) == {"– (no float32 kernel)"}
    caption = A.exactness_caption(rows)
    assert "flash_attn (float32): the optional flash_attn package is not installed" in caption


def test_gpt2_table_puts_this_machine_first_and_keeps_the_references():
    def block(device: str, source: str, ms: float) -> list[dict]:
        return [{"variant": v, "metric": m, "value": val, "source": src, "status": "ok",
                 "device": device, "n_gpus": 1, "recorded_at": "2026-11-22T16:13:01Z",
                 "seed": 0}
                for v in ("vanilla", "sdpa_flash")
                for m, val, src in (("time", ms, source), ("hbm_bytes", 3.0, source),
                                    ("flops", 900.0, "predicted"))]
    rows = pd.DataFrame(block("NVIDIA H100 80GB HBM3", "recorded", 10.0)
                        + block("NVIDIA H200", "measured", 5.0))
    table = A.gpt2_table(rows)
    assert table["where"].iloc[0] == "this machine (NVIDIA H200)" and len(table) == 4
    assert table.loc[0, "runtime ms"] == 5.0
    assert table["where"].iloc[-1].startswith("recorded on NVIDIA H100")
    limits = A.gpt2_limits(rows)
    assert limits.groupby("where")["datasheet"].first().to_dict() == {
        "this machine (NVIDIA H200)": "H200 SXM",
        "recorded on NVIDIA H100 80GB HBM3 ×1, 2026-11-22, seed 0": "H100 SXM"}


def test_timing_lines_state_a_level_band():
    rows = pd.DataFrame([{"variant": v, "seq_len": 1024, "head_dim": 128, "causal": False,
                          "mode": "fwd+bwd", "metric": "throughput", "value": val,
                          "status": "ok", "source": "measured", "device": "NVIDIA H200"}
                         for v, val in (("vanilla", 100.0), ("triton", 104.0),
                                        ("sdpa_flash", 160.0), ("sdpa_efficient", 80.0))])
    text = A.timing_caption(rows)
    assert "level (within ±5%): triton 1.04×" in text, text
    assert "faster: sdpa_flash 1.60×" in text and "slower: sdpa_efficient 0.80×" in text


def test_memory_units_are_one_system():
    table = A.memory_hierarchy("H200").set_index("memory")["size (MiB)"]
    assert table.iloc[0] == pytest.approx(141e9 / 2**20)
    facts = A.s_matrix_vs_memory(16384, 128, 4, 16, 256, device_name="H200")
    assert facts["s_mib"] == 4 * 16 * 16384**2 * 2 / 2**20
    assert facts["s_over_sram"] == pytest.approx(1115, abs=1)

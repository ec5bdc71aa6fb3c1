"""Each figure, caption and claims row names the machine its numbers come from: this machine's
live rows as 'this machine (<device>)', the ledger's as 'recorded on <device> ×<GPUs> (date)',
and rows of two machines (device *and* GPU count) never folded into one number. From an audit
of the H200 Run-All of 2026-12-02 (each test is one finding)."""
from __future__ import annotations

import pandas as pd
import pytest

from workbook import evaluation, plots, precision, pretraining, results, zero
from workbook import model_parallel as mp

H100 = {"device": "NVIDIA H100 80GB HBM3", "n_gpus": 1, "recorded_at": "2026-11-22T16:00:00Z",
        "seed": 0}
H200 = {"device": "NVIDIA H200", "n_gpus": 1, "recorded_at": "2026-12-02T22:00:00Z", "seed": 0}


def _as_live(rows: pd.DataFrame) -> pd.DataFrame:
    """Ledger rows as a live run in this kernel would give them (measured, not recorded)."""
    return rows.assign(source=rows["source"].replace({"recorded": "measured"}))


def test_a_subtitle_names_this_machine_before_the_references():
    rows = pd.DataFrame([{"x": 1, "value": 2.0, "source": "measured", **H200},
                         {"x": 1, "value": 3.0, "source": "recorded", **H100}])
    title = plots.title_with_source("T", rows)
    assert title == ("T<br><sup>this machine (NVIDIA H200); recorded on NVIDIA H100 80GB HBM3 "
                     "×1, 2026-11-22, seed 0</sup>")
    assert plots.title_with_source("T", rows.iloc[:1]) == "T", "live rows alone need no label"
    fig = plots.compare(rows, x="x", title="T")
    assert "this machine (NVIDIA H200)" in fig.layout.title.text


def test_bars_of_two_machines_in_one_group_are_two_bar_groups():
    rows = pd.DataFrame([{"dtype": d, "value": v, "source": "recorded", "status": "ok", **m}
                         for m, v in ((H100, 700.0), (H200, 760.0)) for d in ("bf16", "fp16")])
    fig = plots.bars(rows, "dtype", group="source", title="matmul")
    assert [t.name for t in fig.data] == ["recorded, H100 80GB HBM3", "recorded, H200"]
    assert [list(t.y) for t in fig.data] == [[700.0, 700.0], [760.0, 760.0]]
    one = plots.bars(rows[rows["device"] == "NVIDIA H200"], "dtype", group="source")
    assert [t.name for t in one.data] == ["recorded"], "one machine: the group's own name"


def test_a_run_over_three_seeds_says_three_seeds():
    """lora_advice's rows carry seed 0 (the run's) and run_seed 0, 1, 2 (each fine-tuning's):
    its claims rows said 'seed 0' of a mean over three seeds."""
    rows = pd.DataFrame([{"device": "NVIDIA H200", "n_gpus": 1, "seed": 0, "run_seed": r,
                          "recorded_at": "2026-12-03T03:17:32Z"} for r in (2, 0, 1, 10)])
    assert results.provenance_label(rows) == (
        "recorded on NVIDIA H200 ×1, 2026-12-03, seeds 0,1,2,10")
    assert results.provenance_label(rows.drop(columns="run_seed")).endswith(", seed 0")


def test_a_cpu_recording_states_no_gpu_count():
    cpu = pd.DataFrame([{"device": "CPU (x86_64, 2 cores)", "n_gpus": 0,
                         "recorded_at": "2026-11-22T17:27:00Z", "seed": 0}])
    assert results.provenance_label(cpu) == "recorded on CPU (x86_64, 2 cores), 2026-11-22, seed 0"
    assert "NVIDIA H200 ×1, 2026-12-02" in results.provenance_label(pd.DataFrame([H200]))


def _underflow(source: str) -> pd.DataFrame:
    return pd.DataFrame([{"part": "underflow", "format": f, "kind": "logit_grad",
                          "log2_scale": s, "metric": "share_zero", "value": v,
                          "source": source, "status": "ok", **H200}
                         for f, s, v in (("bf16", 0, 0.0), ("fp16", 0, 0.01), ("fp16", 10, 0.0))])


def test_precision_claims_call_live_rows_this_machine():
    empty = pd.DataFrame()
    live = precision.claims(empty, empty, _underflow("measured")).set_index("claim")
    rows = live[live.index.str.contains("BF16 is more stable|loss scale of 1024")]
    assert (rows["where"] == "this machine (NVIDIA H200)").all(), rows["where"].tolist()
    recorded = precision.claims(empty, empty, _underflow("recorded")).set_index("claim")
    assert recorded.loc[rows.index, "where"].str.startswith("recorded on NVIDIA H200").all()


def _transfer(steps: int, source: str, machine: dict) -> list[dict]:
    return [{"metric": "steps_to_scratch_final", "init": "pretrained", "value": steps,
             "source": source, **machine},
            {"metric": "steps_to_scratch_final", "init": "scratch", "value": 120,
             "source": source, **machine}]


def test_transfer_claim_judges_one_machine_and_says_which():
    live = pd.DataFrame(_transfer(10, "measured", H200))
    row = pretraining.claims(4096, 8.34, 5.13, live).iloc[-1]
    assert row["where"] == "this machine (NVIDIA H200)" and row["verdict"].startswith("holds")
    # two recordings (no run here): the latest machine's, never both in one Series
    ledger = pd.DataFrame(_transfer(30, "recorded", H100) + _transfer(10, "recorded", H200))
    row = pretraining.claims(4096, 8.34, 5.13, ledger).iloc[-1]
    assert row["where"].startswith("recorded on NVIDIA H200 ×1, 2026-12-02")
    assert row["measured"] == pytest.approx(10)


def test_dpo_figure_names_the_date_and_the_seeds_it_averages():
    rows = pd.DataFrame([{"metric": "reward_margin", "step": s, "value": v, "unit": "nats",
                          "train_seed": t, "source": "recorded", **H200}
                         for s in (0, 200) for t, v in ((0, 1.0), (1, 2.0))])
    curves = evaluation.dpo_curves(rows)
    assert curves["value"].tolist() == [1.5, 1.5], "the mean over DPO seeds"
    title = evaluation.dpo_figure(rows).layout.title.text
    assert "mean over seeds" in title and "NVIDIA H200 ×1, 2026-12-02, seeds 0,1" in title, (
        "a mean over DPO seeds 0 and 1 names both, not the run's seed 0 alone")
    assert "?" not in title


def test_zero_tables_never_average_two_machines():
    recorded = results.load("zero_stages")
    four = recorded[(recorded["n_gpus"].astype(str) == "4") & (recorded["n_ranks"] == 1)]
    if four.empty:
        pytest.skip("no H200 ×4 N_d=1 rows in the ledger")
    # a 1-GPU run of the same device here: its own numbers (10 % lower), beside the recording
    live = _as_live(four).assign(n_gpus=1, recorded_at="2026-12-02T22:24:00Z")
    live["value"] = live["value"].where(live["source"] == "predicted", live["value"] * 0.9)
    tables = zero.recorded_tables(pd.concat([live, four], ignore_index=True))
    mine, theirs = (tables[tables["source"] == s] for s in ("measured", "recorded"))
    expected = zero.model_state_table(live).set_index("variant")["model states measured (GB)"]
    got = mine.set_index("variant")["model states measured (GB)"]
    assert got.to_dict() == pytest.approx(expected.to_dict()), "this machine's own numbers"
    assert set(theirs["n_gpus"].astype(str)) == {"4"} and len(theirs) == len(mine)
    assert zero.where_of(mine) == "this machine (NVIDIA H200)"
    names = [t.name for t in zero.plot_scaling(tables).data]
    assert any(n.endswith("(measured)") for n in names), "live points are not 'recorded'"


def test_pipeline_caption_reads_this_machine_not_a_larger_recording_of_its_device():
    recorded = results.load("pipeline_bubble")
    one = recorded[recorded["n_gpus"].astype(str) == "1"]
    if one.empty or "schedule" not in one or not (one["schedule"] == "1f1b").any():
        pytest.skip("no 1-GPU GPipe/1F1B rows in the ledger")
    shown = pd.concat([_as_live(one), recorded[recorded["n_gpus"].astype(str) != "1"]],
                      ignore_index=True)
    caption = mp.schedules_caption(shown)
    assert caption.startswith("*this machine (NVIDIA H200)") and "1F1B" in caption, caption
    names = [t.name for t in mp.plot_schedules(shown).data]
    assert any("· here" in n for n in names), names


def test_latest_device_is_the_one_tables_list_first():
    rows = pd.DataFrame([H200, H100])  # the ledger's order is not the recording's
    assert results.latest_device(rows) == H200["device"]
    assert results.latest_device(rows.iloc[::-1]) == H200["device"]
    assert results.latest_device(rows.drop(columns="recorded_at")) == H200["device"], "first row"
    assert results.latest_device(pd.DataFrame(), "H100") == "H100"
    later = rows.assign(recorded_at=[H200["recorded_at"], "2026-12-05T00:00:00Z"])
    assert results.latest_device(later) == H100["device"]
    assert results.provenance_label(later).startswith("recorded on " + H100["device"])


def test_size_explorer_defaults_to_the_latest_recorded_gpu(monkeypatch):
    from workbook import attention
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(results, "load", lambda name: pd.DataFrame([H200, H100]))
    assert attention.recorded_device() == H200["device"]
    monkeypatch.setattr(results, "load", lambda name: pd.DataFrame())
    assert attention.recorded_device() == "H100"

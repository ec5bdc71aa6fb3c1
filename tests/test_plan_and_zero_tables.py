"""What a reader sees in 00's plan and 05's tables: a number, or a dash with its reason, never
NaN; no stray index-axis name over a column."""

from __future__ import annotations

import pandas as pd
import pytest

from workbook import registry
from workbook.zero import comm_kinds, model_state_table, readable

PSI = 1_000_000


def _rows(variant: str, engine: str, measured: dict[str, float],
          predicted: dict[str, float]) -> list[dict]:
    base = {"variant": variant, "engine": engine, "n_ranks": 2, "n_params": PSI, "status": "ok"}
    return ([{**base, "source": "measured", "metric": m, "value": v} for m, v in measured.items()]
            + [{**base, "source": "predicted", "metric": m, "value": v}
               for m, v in predicted.items()])


@pytest.fixture
def state_rows() -> pd.DataFrame:
    parts = {"params_bytes": 2 * PSI, "grads+buffers_bytes": 2 * PSI,
             "optimizer_bytes": 12 * PSI, "total_bytes": 16 * PSI}
    rows = _rows("ddp", "ddp", {**parts, "allocated_bytes": 16.5 * PSI, "comm_bytes": 8 * PSI,
                                "comm_all_reduce_bytes": 8 * PSI},
                 {**parts, "comm_bytes": 8 * PSI})
    zero = {k: 0.0 for k in parts}
    rows += _rows("zero3+offload_all", "deepspeed",
                  {**zero, "allocated_bytes": 0.1 * PSI, "comm_bytes": 6 * PSI,
                   "comm_all_gather_bytes": 4 * PSI, "comm_reduce_scatter_bytes": 2 * PSI},
                  {**zero, "comm_bytes": 6 * PSI, "ds_estimate_bytes": 0.2 * PSI})
    return pd.DataFrame(rows)


def test_model_state_table_says_why_a_cell_is_empty(state_rows) -> None:
    table = model_state_table(state_rows)
    assert table["DeepSpeed estimate (GB)"].isna().iloc[0]  # numbers stay numbers for plots
    shown = readable(table).set_index("variant")
    assert not shown.isna().any().any(), shown
    assert shown.loc["ddp", "DeepSpeed estimate (GB)"].startswith("– (")
    assert shown.loc["zero3+offload_all", "measured/formula"] == "– (formula is 0)"
    assert shown.loc["zero3+offload_all", "DeepSpeed estimate (GB)"] == pytest.approx(0.0, abs=1e-3)
    assert "peak (GB)" in shown and shown["peak (GB)"].str.startswith("–").all()
    assert "why they differ" not in shown
    for part in ("grads+buffers", "optimizer"):
        assert f"{part} (meas/formula GB)" in shown, list(shown)


def test_comm_kinds_dashes_the_collectives_never_called(state_rows) -> None:
    table = comm_kinds(state_rows)
    assert table.columns.name is None, table.columns.name
    assert not table.isna().any().any(), table
    ddp = table.set_index("variant").loc["ddp"]
    assert ddp["all_gather"] == "–" and ddp["all_reduce"] == pytest.approx(2.0)


def test_plan_shows_a_time_or_a_reason(monkeypatch) -> None:
    plan = registry.plan("small")
    assert plan["expected s"].notna().all(), plan[plan["expected s"].isna()]
    for value in plan["expected s"]:
        assert pd.api.types.is_integer(value) or str(value).startswith("– ("), value
    monkeypatch.setattr(registry, "expected_seconds", lambda *a, **k: (None, "not yet run"))
    untimed = registry.plan("small")
    can = untimed[untimed["here"] != "recorded only"]   # what this machine can run
    assert len(can) and (can["expected s"] == "– (not yet timed)").all(), can


def test_the_plan_says_what_each_notebook_does_with_an_experiment():
    """00's plan said 'can run here' for experiments no notebook runs: 01 only loads the
    pretraining curve, 02 the FLOP sweep and the loss kernel."""
    from workbook import registry

    assert registry.shown_as("pretraining_curve") == \
        "recorded; script: scripts/gpu_pretraining.sh"
    assert registry.shown_as("loss_kernel") == "recorded; script: scripts/gpu_loss_kernel.sh"
    assert registry.shown_as("transfer_learning") == "live in Run All"
    assert registry.shown_as("mfu_benchmark").startswith("Run button")
    # a call spread over lines is still found (08's precision_underflow)
    assert registry.shown_as("precision_underflow").startswith("Run button")
    # a call inside a RunButton's callback runs when pressed (04's largest fit)
    assert registry.shown_as("memory_fit") == "Run button (runs when pressed)"

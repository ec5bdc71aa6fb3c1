"""Notebook 05's views: the formula explorer, measured-vs-formula tables and figures, why
DeepSpeed's numbers differ from the paper's, and the closing claims table."""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from workbook.claims import Claim, claims_table
from workbook.config import takes_rows
from workbook.memory import gpu_gb_default
from workbook.results import dashed, provenance_label, where_label
from workbook.zero.formulas import STAGES, zero_memory_formula

GAP_CAUSES: dict[str, str] = {
    "ddp": "PyTorch AMP keeps fp32 params+grads (4+4) and Adam moments (8): 16Ψ like the paper, "
           "split differently. gradient_as_bucket_view=True puts grads inside DDP's buckets; "
           "the default (False) adds a second 4Ψ copy.",
    "zero0": "bf16 stage 0 runs DeepSpeed's FP16_Optimizer in bf16 mode: bf16 params and "
             "grads (2+2), fp32 master + moments (12), the paper's 16Ψ; fp32 grads exist only "
             "inside step() (peak, not steady). data_types.grad_accum_dtype='fp32' would add a "
             "persistent 4Ψ fp32 accumulator (BF16_Optimizer).",
    "zero1": "DeepSpeed's stage 1 copies its own gradient slice into a contiguous buffer and "
             "frees the rest after the all-reduce (contiguous_gradients), so it holds less "
             "than the paper's full 2Ψ of gradients.",
    "zero2": "reduce bucket of reduce_bucket_size elements (bf16) beside the 2Ψ/N_d gradient "
             "partition; overlap_comm=true would double it.",
    "zero2+reduce": "as zero2; use_multi_rank_bucket_allreduce=false changes only traffic.",
    "zero3": "reduce bucket (reduce_bucket_size) and parameters gathered at the moment of "
             "measurement (stage3_max_live_parameters, stage3_prefetch_bucket_size); "
             "stage3_param_persistence_threshold>0 keeps small parameters whole on every rank.",
    "zero2+offload_opt": "pinned CPU staging and the GPU reduce bucket (reduce_bucket_size); "
                         "the optimizer and fp32 grads live on the CPU.",
    "zero3+offload_opt": "as zero3; optimizer and fp32 grads on the CPU.",
    "zero3+offload_all": "only gathered layers and buckets stay on the GPU "
                         "(stage3_max_live_parameters, stage3_prefetch_bucket_size).",
}
COMM_CAUSES: dict[str, str] = {
    "ddp": "all-reduce of fp32 gradients: 2Ψ elements at 4 bytes",
    "zero0": "all-reduce of bf16 gradients: 2Ψ",
    "zero1": "all-reduce of the whole gradient (stage 1 cannot reduce-scatter) + all-gather of "
             "updated params: 3Ψ, not 2Ψ",
    "zero2": "use_multi_rank_bucket_allreduce=true (default) all-reduces every bucket: 2Ψ, "
             "then the all-gather of params: Ψ",
    "zero2+reduce": "use_multi_rank_bucket_allreduce=false: each slice reduced to its owner "
                    "(Ψ) + all-gather (Ψ) = the paper's 2Ψ",
    "zero3": "all-gather in forward and backward + reduce-scatter; parameters still resident "
             "when backward starts are not gathered again (stage3_max_reuse_distance)",
}


@takes_rows
def model_state_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per variant: measured steady model-state bytes per rank (mean over ranks) vs the paper.

    "Steady" = after backward of the last step: parameters, gradients and optimizer states are
    all live, activations are freed. GPU runs use the allocator's count, CPU runs the census.
    """
    ok = rows[rows["status"] == "ok"]
    out = []
    for variant, part in ok.groupby("variant", sort=False):
        meas = part[part["source"].isin(["measured", "recorded"])]
        pred = part[part["source"] == "predicted"]
        if meas.empty or pred.empty:
            continue

        def m(metric: str, frame: pd.DataFrame = meas) -> float:
            vals = frame.loc[frame["metric"] == metric, "value"].dropna()
            return float(vals.mean()) if len(vals) else float("nan")
        alloc = m("allocated_bytes")
        measured = alloc if alloc == alloc else m("total_bytes")
        formula = m("total_bytes", pred)
        n_params = float(part["n_params"].dropna().iloc[0])
        elem = 4 if part["engine"].iloc[0] == "ddp" else 2  # bytes per communicated element
        out.append({
            "variant": variant, "n_ranks": int(part["n_ranks"].dropna().iloc[0]),
            "params (meas/formula GB)": f"{m('params_bytes') / 1e9:.3f} / "
                                        f"{m('params_bytes', pred) / 1e9:.3f}",
            "grads+buffers (meas/formula GB)": f"{m('grads+buffers_bytes') / 1e9:.3f} / "
                                               f"{m('grads+buffers_bytes', pred) / 1e9:.3f}",
            "optimizer (meas/formula GB)": f"{m('optimizer_bytes') / 1e9:.3f} / "
                                           f"{m('optimizer_bytes', pred) / 1e9:.3f}",
            "model states measured (GB)": measured / 1e9,
            "formula (GB)": formula / 1e9,
            "DeepSpeed estimate (GB)": m("ds_estimate_bytes", pred) / 1e9,
            "measured/formula": measured / formula if formula else float("nan"),
            "gap (Ψ units)": (measured - formula) / n_params,
            "peak (GB)": m("peak_bytes") / 1e9,
            "comm measured (Ψ)": m("comm_bytes") / n_params / elem,
            "comm formula (Ψ)": m("comm_bytes", pred) / n_params / elem,
            "step (ms)": m("step_ms"),
            "why they differ": GAP_CAUSES.get(variant, ""),
        })
    return pd.DataFrame(out)


# What a model-state table's empty cell means, said in the cell instead of NaN
NO_VALUE: dict[str, str] = {
    "DeepSpeed estimate (GB)": "– (none below stage 2)",
    "measured/formula": "– (formula is 0)",
    "peak (GB)": "– (no allocator on a CPU)",
}


@takes_rows
def readable(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A :func:`model_state_table` (or :func:`recorded_tables`) as a reader sees it: rounded,
    without the long 'why they differ' (the gap table has it), and where a cell has no number
    a dash with the reason (:data:`NO_VALUE`) instead of NaN."""
    hidden = ["why they differ"] + (list(PROVENANCE) if "where" in table else [])
    return dashed(table.drop(columns=hidden, errors="ignore").round(digits), NO_VALUE)


# Columns a `where` label says in words (this machine, or the recording's device and date).
PROVENANCE = ("device", "source", "n_gpus", "recorded_at", "seed")


def formula_explorer() -> Any:
    """Sliders for Ψ and N_d, bars of per-GPU model states per stage (the paper's Fig. 1)."""
    from workbook import plots, widgets

    fig = plots.figure("ZeRO per-GPU model states (formula, K = 12)", "stage", "GB per GPU")
    parts = ("params", "grads", "optimizer")
    for part in parts:
        fig.add_bar(x=[], y=[], name=part, marker_color=plots.color_for(part))
    fig.update_layout(barmode="stack")

    def draw(fig: Any, psi_billion: float, n_gpus: int, gpu_gb: float) -> str:
        psi = psi_billion * 1e9
        mems = [zero_memory_formula(psi, n_gpus, s) for s in STAGES]
        labels = ["baseline", "P_os (1)", "P_os+g (2)", "P_os+g+p (3)"]
        for trace, part in zip(fig.data, parts, strict=True):
            trace.x, trace.y = labels, [m[part] / 1e9 for m in mems]
        fits = [lab for lab, m in zip(labels, mems, strict=True) if m["total"] / 1e9 <= gpu_gb]
        totals = ", ".join(f"{lab} {m['total'] / 1e9:,.1f} GB"
                           for lab, m in zip(labels, mems, strict=True))
        return (f"Ψ = {psi_billion:g}B on {n_gpus} GPUs: " + totals
                + f". Fits a {gpu_gb:g} GB GPU (model states only): {', '.join(fits) or 'none'}")

    return widgets.Explorer({
        "psi_billion": widgets.slider("Ψ (billions)", 0.1, 1000, 0.01, 7.5, log=True),
        "n_gpus": widgets.slider("N_d (GPUs)", 1, 1024, 1, 64),
        "gpu_gb": widgets.slider("GPU memory (GB)", 16, 192, 1, gpu_gb_default()),
    }, draw, fig)


@takes_rows
def plot_model_states(table: pd.DataFrame, title: str = "") -> Any:
    """Measured vs formula model-state GB per rank, one group of bars per variant: colour is
    the variant (as in every figure of the notebook), the pattern the source (measured solid,
    the formula hatched, DeepSpeed's estimator crossed)."""
    from workbook import plots

    fig = plots.figure(title or "Per-rank model states: measured vs formula", "variant",
                       "GB per rank")
    x = [f"{v} (N={n})" for v, n in zip(table["variant"], table["n_ranks"], strict=True)]
    colors = [plots.color_for(v) for v in table["variant"]]
    fig.add_bar(x=x, y=table["model states measured (GB)"], name="measured",
                marker_color=colors)
    fig.add_bar(x=x, y=table["formula (GB)"], name="ZeRO formula", marker_color=colors,
                marker_pattern_shape="/")
    if table["DeepSpeed estimate (GB)"].notna().any():
        fig.add_bar(x=x, y=table["DeepSpeed estimate (GB)"], name="DeepSpeed estimator",
                    marker_color=colors, marker_pattern_shape="x")
    fig.update_layout(barmode="group")
    return fig


_MACHINE_FILLS = ("", ".", "x", "+", "-")   # one per machine; the paper's bars are '/'


@takes_rows
def plot_comm(table: pd.DataFrame, title: str = "") -> Any:
    """Communication per step (in units of Ψ elements) of every machine in ``table`` (a
    :func:`recorded_tables`), beside the paper's 2Ψ / 3Ψ: colour is the variant, one bar
    group per machine named where it ran ('this machine (…)', 'recorded on …'), the paper's
    number hatched; the subtitle names the sources."""
    from workbook import plots

    title = title or "Communication per step per rank"
    has_where = "source" in table and "device" in table
    fig = plots.figure(plots.title_with_source(title, table) if has_where else title,
                       "variant", "× Ψ elements")
    if table.empty:
        return fig
    keys = [c for c in ("device", "n_gpus", "source") if c in table]
    parts = table.groupby(keys, sort=False, dropna=False) if keys else [((), table)]
    # the colour is the variant, so each machine has a fill of its own (solid, dots, crosses…)
    for (_, part), fill in zip(parts, itertools.cycle(_MACHINE_FILLS)):
        name = (part["where"].iloc[0] if "where" in part else where_of(part)) if keys \
            else "measured"
        fig.add_bar(x=[f"{v} (N={n})" for v, n in zip(part["variant"], part["n_ranks"],
                                                      strict=True)],
                    y=part["comm measured (Ψ)"], name=name, marker_pattern_shape=fill,
                    marker_color=[plots.color_for(v) for v in part["variant"]])
    # the paper's number once per variant and rank count: two machines at N = 2 share it (one
    # bar each stacked to twice the paper's 2Ψ before)
    paper = table.drop_duplicates(["variant", "n_ranks"])
    x = [f"{v} (N={n})" for v, n in zip(paper["variant"], paper["n_ranks"], strict=True)]
    fig.add_bar(x=x, y=paper["comm formula (Ψ)"], name="paper (2Ψ or 3Ψ)",
                marker_color=[plots.color_for(v) for v in paper["variant"]],
                marker_pattern_shape="/")
    fig.update_layout(barmode="group")
    return fig


@takes_rows
def recorded_tables(rows: pd.DataFrame) -> pd.DataFrame:
    """model_state_table per machine (device and GPU count) and rank count, with the device
    named: this machine's live tables (``source='measured'``) and the recorded ones side by side."""
    if rows.empty:
        return pd.DataFrame()
    rows = rows if "source" in rows else rows.assign(source="recorded")
    # One table per machine (device *and* GPU count): this machine's live N_d = 1 rows and an
    # H200 ×4 recording's N_d = 1 rows are two tables, never one mean of both.
    keys = ["device"] + (["n_gpus"] if "n_gpus" in rows else []) + ["n_ranks"]
    frames = []
    for key, part in rows.groupby(keys, dropna=False, sort=False):
        device = key[0]
        if part["n_ranks"].isna().all() or device != device:
            continue
        table = model_state_table(part)
        source = "measured" if (part["source"] == "measured").any() else "recorded"
        prov = {c: part[c].dropna().astype(str).max() for c in ("n_gpus", "recorded_at", "seed")
                if c in part and part[c].notna().any()}
        where = (f"this machine ({device})" if source == "measured"
                 else provenance_label(part[part["source"] == "recorded"]))
        frames.append(table.assign(where=where, device=device, source=source, **prov))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)  # this machine's tables first, `where` first
    out = out[["where"] + [c for c in out.columns if c != "where"]]
    return out.sort_values("source", key=lambda s: s != "measured", kind="stable",
                           ignore_index=True)


@takes_rows
def where_of(table: pd.DataFrame) -> str:
    """Where a table of model states was measured: 'this machine (…)' or the recording."""
    if "device" not in table or not len(table):
        return "this machine"
    if "source" in table and (table["source"] == "measured").all():
        return f"this machine ({', '.join(sorted(map(str, table['device'].dropna().unique())))})"
    if all(c in table for c in ("n_gpus", "recorded_at", "seed")):
        return provenance_label(table)
    return "recorded on " + ", ".join(sorted(map(str, table["device"].dropna().unique())))


@takes_rows
def claims_rows(tables: pd.DataFrame) -> pd.DataFrame:
    """The table the claims are checked on: the largest rank count measured, this machine's
    rows where it ran that count, else the first recording of it."""
    if tables.empty:
        return tables
    top = tables[tables["n_ranks"] == tables["n_ranks"].max()]
    mine = top[top["source"] == "measured"] if "source" in top else top.iloc[0:0]
    return mine if len(mine) else top[top["device"] == top["device"].iloc[0]]


@takes_rows
def claims(table: pd.DataFrame) -> pd.DataFrame:
    """The lecture's ZeRO claims against the paper's formula and this table's measurement
    (a :func:`model_state_table` or :func:`recorded_tables` of one rank count)."""
    def get(variant: str, col: str) -> float:
        hit = table.loc[table["variant"] == variant, col]
        return float(hit.iloc[0]) if len(hit) else float("nan")

    n = int(table["n_ranks"].iloc[0]) if len(table) else 0
    where = f"{where_of(table)}, N_d={n}"
    base = get("zero0", "model states measured (GB)")
    if base != base:  # no stage-0 run: DDP holds the same 16Ψ
        base = get("ddp", "model states measured (GB)")
    out = []
    for stage, lecture in ((1, "4x"), (2, "8x"), (3, "12x")):
        pred = 16 / (zero_memory_formula(1.0, max(n, 1), stage)["total"])
        meas = base / get(f"zero{stage}", "model states measured (GB)")
        out.append(Claim(f"ZeRO-{stage} memory '{lecture} better' (at N_d={n})",
                         "lecture table; ZeRO paper Fig. 1 (as N_d grows: 4x, 8x, N_d)",
                         pred, meas, "×", where))
    for v, paper in (("zero1", 2.0), ("zero2", 2.0), ("zero3", 3.0)):
        out.append(Claim(f"{v} communication per step",
                         "lecture: grows with the stage, from DDP to ZeRO-3; paper Sec. 7",
                         paper, get(v, "comm measured (Ψ)"), "Ψ", where))
    return claims_table(out)


@takes_rows
def comm_kinds(rows: pd.DataFrame) -> pd.DataFrame:
    """Per machine (device and GPU count: this machine's first, each recording labelled with
    its device and date in ``where``), rank count and variant: each collective's bytes per
    step, in units of Ψ elements ("–" where the engine never called that collective). Two
    machines' rows are never averaged into one."""
    ok = rows[(rows["status"] == "ok") & rows["metric"].str.startswith("comm_")
              & rows["source"].isin(["measured", "recorded"])]
    if ok.empty:
        return pd.DataFrame()
    elem = ok["engine"].map(lambda e: 4 if e == "ddp" else 2)
    ok = ok.assign(psi=ok["value"] / ok["n_params"] / elem,
                   kind=ok["metric"].str.removeprefix("comm_").str.removesuffix("_bytes")
                   .replace({"bytes": "total"}))
    keys = [c for c in ("device", "n_gpus", "source") if c in ok]
    frames = []
    for _, part in (ok.groupby(keys, sort=False, dropna=False) if keys else [((), ok)]):
        table = part.pivot_table(index=["n_ranks", "variant"], columns="kind", values="psi",
                                 aggfunc="mean").round(3).reset_index()
        frames.append(table.assign(where=where_label(part)))
    table = pd.concat(frames, ignore_index=True)
    table = table.sort_values("where", key=lambda w: ~w.str.startswith("this machine"),
                              kind="stable", ignore_index=True)
    kinds = sorted(c for c in table.columns if c not in ("where", "n_ranks", "variant", "total"))
    table = table[["where", "n_ranks", "variant", *kinds, *(["total"] if "total" in table
                                                             else [])]]
    # a collective the engine never called is "–" (0.0: one called with a few bytes)
    table = dashed(table)
    table.columns.name = None  # no stray "kind" over the index column
    return table


@takes_rows
def plot_scaling(tables: pd.DataFrame) -> Any:
    """Per-rank model states against N_d in bytes per parameter (Ψ units: the model states
    divided by the model's Ψ), so that machines that trained models of different sizes (a
    CPU's small one, a GPU's GPT-2 medium) share one axis and the paper's curve: measured
    points (this machine's live ones as 'measured', the ledger's as 'recorded'), the paper's
    curve dashed (16, 4 + 12/N, 2 + 14/N, 16/N for K = 12)."""
    from workbook import plots

    if tables.empty:
        return plots.compare(pd.DataFrame(), "n_ranks", title="no recorded rows yet")
    stages = tables[tables["variant"].isin(["zero0", "zero1", "zero2", "zero3"])]
    # Ψ of each row's model, from its own formula column (formula = Ψ × bytes per parameter)
    per_param = [zero_memory_formula(1.0, int(r["n_ranks"]), int(r["variant"][-1]))["total"]
                 for _, r in stages.iterrows()]
    psi = stages["formula (GB)"] * 1e9 / per_param
    # this machine's live points stay 'measured' (its colour, its marker); the rest are recorded
    rows = [{"variant": r["variant"], "n_ranks": r["n_ranks"],
             "source": "measured" if r.get("source") == "measured" else "recorded",
             "value": r["model states measured (GB)"] * 1e9 / n_params, "status": "ok",
             **{c: r.get(c) for c in ("device", "n_gpus", "recorded_at", "seed")}}
            for (_, r), n_params in zip(stages.iterrows(), psi, strict=True)]
    top = max(8, int(tables["n_ranks"].max()))
    for v in stages["variant"].unique():
        for n in range(1, top + 1):
            rows.append({"variant": v, "n_ranks": n, "source": "predicted", "status": "ok",
                         "value": zero_memory_formula(1.0, n, int(v[-1]))["total"]})
    return plots.compare(pd.DataFrame(rows), "n_ranks", group="variant",
                         y_title="model states per rank (bytes per parameter)",
                         title="Per-rank model states vs N_d, per parameter of each machine's "
                               "model (points: measured; dashes: paper)",
                         x_title="N_d (ranks)")

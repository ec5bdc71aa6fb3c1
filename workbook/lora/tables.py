"""LoRA's tables and figures as a reader sees them: units in the headers, integers as integers,
one notation per column, "–" with its reason instead of NaN, and this machine's rows first with
the recorded references beside them, labelled by device and date (``where``)."""

from __future__ import annotations

import math

import pandas as pd

from workbook.claims import readable
from workbook.config import takes_rows
from workbook.lora.views import power_of_ten, seed_summary
from workbook.results import where_label


@takes_rows
def where_column(rows: pd.DataFrame) -> pd.Series:
    """Per row, where its number comes from: 'formula' (a predicted row), 'this machine
    (NVIDIA H200)' (measured here) or, per recorded machine, 'recorded on NVIDIA H100 80GB
    HBM3 ×1, 2026-11-22, seed 0' (``results.where_label``: device, GPUs, date, seeds)."""
    out = pd.Series("this machine", index=rows.index, dtype=object)
    if rows.empty:
        return out
    source = rows["source"] if "source" in rows.columns else pd.Series("measured", rows.index)
    out[source == "predicted"] = "formula"
    key = [c for c in ("device", "n_gpus") if c in rows.columns]
    for src in ("measured", "recorded"):
        part = rows[source == src]
        if part.empty:
            continue
        for _, group in (part.groupby(key, dropna=False, sort=False) if key else [((), part)]):
            out[group.index] = where_label(group)
    return out


def where_order(labels) -> list[str]:
    """``labels`` (of :func:`where_column`) in the order a table shows them: this machine
    first, then the formula, then the recorded machines in the order they appear."""
    unique = list(dict.fromkeys(str(x) for x in labels))
    return sorted(unique, key=lambda w: (0 if w.startswith("this machine") else
                                         1 if w == "formula" else 2, unique.index(w)))


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"].fillna("ok") == "ok"] if "status" in rows.columns else rows


# metric -> (header with its unit, how a value reads)
RANK_COLUMNS = {
    "eval_loss": ("held-out loss (nats)", lambda v: f"{v:.4f}"),
    "trainable_params": ("trainable params", lambda v: f"{int(round(v)):,}"),
    "step_time": ("step time (ms)", lambda v: f"{v:.2f}"),
    "peak_memory": ("peak memory (MB)", lambda v: f"{v:,.1f}"),
}


@takes_rows
def rank_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The rank sweep (``lora_sweep`` rows of sweeps 'rank' and 'base') per method and rank:
    held-out loss, trainable parameters, step time and peak memory, each with its unit, this
    machine's column first and each recorded machine's beside it (device and date)."""
    part = _ok(rows[rows["sweep"].isin(["rank", "base"]) & (rows["source"] != "predicted")])
    part = part[part["metric"].isin(list(RANK_COLUMNS))]
    if part.empty:
        return pd.DataFrame()
    part = part.assign(where=where_column(part), rank=part["rank"].astype(int))
    wide = part.pivot_table(index=["method", "rank"], columns=["metric", "where"],
                            values="value", aggfunc="first")
    wheres = where_order(part["where"])
    ran = {where: set(part.loc[part["where"] == where, ["method", "rank"]].itertuples(
        index=False, name=None)) for where in wheres}

    def gap(metric: str, where: str, key: tuple) -> str:
        if key[0] == "none":
            return "– (the base model: no fine-tuning)"
        if key not in ran[where]:
            return "– (not in this machine's sweep)"
        return "– (no GPU allocator counter)" if metric == "peak_memory" else \
            "– (not in these rows)"

    out = {}
    for metric, (header, show) in RANK_COLUMNS.items():
        for where in wheres:
            values = wide[(metric, where)] if (metric, where) in wide.columns else \
                pd.Series(math.nan, index=wide.index)
            out[(header, where)] = [show(v) if v == v else gap(metric, where, key)
                                    for key, v in values.items()]
    table = pd.DataFrame(out, index=wide.index)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["", "where"])
    return table


@takes_rows
def share_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Each LoRA rank's held-out-loss gain over the base model as a share of full fine-tuning's
    gain (1.00: as good as full fine-tuning), per machine that ran the rank sweep."""
    loss = _ok(rows[(rows["metric"] == "eval_loss") & rows["sweep"].isin(["rank", "base"])
                    & (rows["source"] != "predicted")])
    loss = loss.assign(where=where_column(loss))
    shares = {}
    for where in where_order(loss["where"]):
        by = loss[loss["where"] == where].groupby(["method", "rank"])["value"].first()
        if ("none", 0) not in by.index or ("full", 0) not in by.index or "lora" not in by:
            continue
        base, full = by[("none", 0)], by[("full", 0)]
        share = (base - by["lora"]) / (base - full)
        shares[("share of full fine-tuning's gain", where)] = share.map(lambda v: f"{v:.2f}")
    if not shares:
        return pd.DataFrame()
    table = pd.DataFrame(shares).fillna("– (not in this machine's sweep)")
    table.index = table.index.astype(int).rename("LoRA rank")
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["", "where"])
    return table


@takes_rows
def advice_table(rows: pd.DataFrame) -> pd.DataFrame:
    """``lora_advice``'s held-out loss per configuration over its seeds: mean and 95 %
    interval in nats, the number of seeds, learning rates as 3×10⁻⁶; one block per machine,
    this machine's first, each recorded one named with its device and date."""
    loss = _ok(rows[rows["metric"] == "eval_loss"])
    if loss.empty:
        return pd.DataFrame()
    loss = loss.assign(where=where_column(loss))
    by = ["where", "sweep", "method", "targets", "rank", "batch_size", "lr"]
    summary = seed_summary(loss, by)
    order = {w: i for i, w in enumerate(where_order(loss["where"]))}
    summary = summary.assign(_at=summary["where"].map(order)).sort_values(
        ["_at", "sweep", "method", "lr", "batch_size"], kind="stable").drop(columns="_at")
    one = "– (one seed: no interval)"
    return pd.DataFrame({
        "where": summary["where"], "sweep": summary["sweep"], "method": summary["method"],
        "targets": summary["targets"], "rank": summary["rank"].astype(int),
        "batch size": summary["batch_size"].astype(int),
        "learning rate": summary["lr"].map(power_of_ten),
        "held-out loss (nats), mean": summary["mean"].map(lambda v: f"{v:.4f}"),
        "95 % low (nats)": summary["low"].map(lambda v: f"{v:.4f}" if v == v else one),
        "95 % high (nats)": summary["high"].map(lambda v: f"{v:.4f}" if v == v else one),
        "seeds": summary["n"].astype(int),
    }).reset_index(drop=True)


@takes_rows
def readable_values(table: pd.DataFrame) -> pd.DataFrame:
    """A demo's rows with their ``value`` column as a reader reads it: a count (unit
    'params') as an integer (118,272, never 118272.0), a float rounding gap as 6.2×10⁻⁶,
    others to 4 significant digits (``claims.readable``)."""
    if "value" not in table.columns:
        return table
    units = table["unit"] if "unit" in table.columns else pd.Series("", index=table.index)
    shown = [f"{int(round(v)):,}" if u == "params" and v == v else readable(float(v)) or "–"
             for v, u in zip(table["value"], units, strict=True)]
    return table.assign(value=shown)


@takes_rows
def targets_figure(rows: pd.DataFrame):
    """Held-out loss by target modules (``lora_sweep`` rows of the 'targets' sweep, one seed):
    a point per target set and machine, the y axis around the data (from 0 the 0.04-nat
    differences would not show; points, not bars, since a bar's height from a cut axis
    misstates the ratio between two losses)."""
    from workbook import plots

    part = _ok(rows[(rows["sweep"] == "targets") & (rows["metric"] == "eval_loss")])
    part = part.assign(where=where_column(part))
    fig = plots.figure(plots.title_with_source(
        "Held-out loss by target modules (same rank, one seed)", part), "targets",
        "held-out loss (nats)")
    for where, points in part.groupby("where", sort=False):
        fig.add_scatter(x=points["targets"].astype(str), y=points["value"], mode="markers",
                        name=str(where), marker={"size": 12})
    if len(part):
        low, high = float(part["value"].min()), float(part["value"].max())
        pad = max(0.25 * (high - low), 0.005)
        fig.update_yaxes(range=[low - pad, high + pad])
    return fig


@takes_rows
def rank_figure(rows: pd.DataFrame, metric: str, title: str, y_title: str):
    """One ``lora_sweep`` metric over LoRA's rank: one trace per machine, named by method,
    source and device ('lora (recorded, H100 80GB HBM3)'), never the device twice. For the
    held-out loss, the base model's (no fine-tuning) and full fine-tuning's losses of the same
    machine are horizontal reference lines across the ranks: what a rank is read against."""
    from workbook import plots
    from workbook.config import check_choice

    check_choice("metric", metric, tuple(RANK_COLUMNS))
    part = rows[(rows["sweep"] == "rank") & (rows["metric"] == metric)
                & (rows["method"] == "lora")] if len(rows) else rows
    fig = plots.compare(part, "rank", group="method", log_x=True, title=title,
                        y_title=y_title)
    if metric == "eval_loss" and len(part):
        for trace in _reference_lines(rows, (float(part["rank"].min()),
                                            float(part["rank"].max()))):
            fig.add_trace(trace)
    return fig


# method -> (trace label: 'full' takes full fine-tuning's colour, words on hover, dash)
REFERENCES = {"none": ("base model", "base model (no fine-tuning)", "dot"),
              "full": ("full", "full fine-tuning", "dash")}


def _reference_lines(rows: pd.DataFrame, span: tuple[float, float]) -> list:
    """Horizontal lines at the base model's held-out loss (no fine-tuning) and full
    fine-tuning's, one per machine of ``rows`` (``lora_sweep``, sweeps 'base' and 'rank'),
    from ``span``'s first rank to its last; named 'full (recorded, H100 80GB HBM3)', a
    machine told apart by its marker shape as in :func:`workbook.plots.compare`."""
    import plotly.graph_objects as go

    from workbook.plots import machine_symbols, short_device

    ref = rows.assign(**{c: rows[c] if c in rows.columns else d
                         for c, d in (("source", "measured"), ("device", "this machine"))})
    ref = _ok(ref[ref["sweep"].isin(["rank", "base"]) & ref["method"].isin(list(REFERENCES))
                  & (ref["metric"] == "eval_loss") & (ref["source"] != "predicted")
                  & ref["value"].notna()])
    machines = ref["device"].nunique() > 1
    symbol = machine_symbols(ref["device"])
    lines = []
    for method, (label, words, dash) in REFERENCES.items():
        for (device, source), one in ref[ref["method"] == method].groupby(
                ["device", "source"], sort=False, dropna=False):
            said = f"{source}, {short_device(device)}" if machines else str(source)
            value = float(one["value"].iloc[0])
            lines.append(go.Scatter(
                x=list(span), y=[value, value], mode="lines+markers", name=f"{label} ({said})",
                line={"dash": dash}, marker={"symbol": symbol.get(device, "circle"), "size": 5},
                hovertemplate=f"{words}: {value:.4f} nats<extra></extra>"))
    return lines

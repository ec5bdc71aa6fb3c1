"""Notebook 06's expert-parallel views (routing, imbalance, drops, the caption) and the closing
TP / PP / EP trade-off table."""

from __future__ import annotations

import math

import pandas as pd

from workbook.config import takes_rows
from workbook.model_parallel.machines import (
    PROVENANCE,
    first_block,
    here_first,
    largest_world,
    machine_blocks,
    mean_over_ranks,
    pick,
    shown,
    subtitled,
    where_labels,
    where_of,
)


def load_imbalance(rows: pd.DataFrame, metric: str = "requested_tokens") -> pd.DataFrame:
    """Max over mean tokens per expert, per configuration and machine: 1.0 is perfect balance.

    ``requested_tokens``: what the router picked (before capacity); ``routed_tokens``: the
    assignments sent to the experts (after capacity: rows recorded before ``requested_tokens``
    existed have only these); ``expert_load``: what the experts computed (the same, counted on
    the receiving rank, so never above capacity times the number of ranks).
    """
    load = rows[rows["metric"] == metric]
    keys = [c for c in ("where", "world", "n_experts", "top_k", "capacity_factor", "skew",
                        "tokens_per_rank", "device", "n_gpus") if c in load.columns]
    per_expert = load.groupby([*keys, "expert"], dropna=False)["value"].sum().reset_index()
    out = per_expert.groupby(keys, dropna=False)["value"].agg(lambda v: v.max() / v.mean())
    return out.rename("max_over_mean").reset_index()


@takes_rows
def ep_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (machine, world, skew, capacity factor): dropped share measured vs uniform-routing
    prediction; imbalance, max/mean tokens per expert, as the router asked (``requested``,
    before capacity; NaN in rows recorded before it was counted) and as sent (``sent``, after
    capacity); all-to-all bytes per rank. This machine first; "–" with the reason where a
    machine's rows have no such number."""
    rows = rows.assign(where=where_labels(rows), kind=rows["source"].where(
        rows["source"] == "predicted", "measured"))
    keys = [k for k in ("where", "world", "skew", "capacity_factor") if k in rows.columns]

    def wide(metric: str, prefix: str) -> pd.DataFrame:
        part = mean_over_ranks(rows[rows["metric"] == metric], [*keys, "kind"])
        return part.pivot_table(index=keys, columns="kind", values="value").add_prefix(
            prefix).reset_index().rename_axis(columns=None)

    table = wide("dropped_fraction", "dropped_")
    for metric, name in (("requested_tokens", "requested"), ("routed_tokens", "sent")):
        imb = load_imbalance(rows, metric).rename(
            columns={"max_over_mean": f"max_over_mean_{name}"})
        table = table.merge(imb[[*keys, f"max_over_mean_{name}"]], on=keys, how="left") \
            if len(imb) else table.assign(**{f"max_over_mean_{name}": math.nan})
    table = table.merge(wide("alltoall_bytes", "alltoall_MiB_"), on=keys, how="left")
    for col in [c for c in table.columns if c.startswith("alltoall_MiB_")]:
        table[col] = table[col] / 2**20
    return shown(here_first(table), {
        **{c: "– (not counted in these rows)" for c in table.columns},
        "max_over_mean_requested": "– (recorded before it was counted)"})


@takes_rows
def moe_times(ep: pd.DataFrame) -> pd.DataFrame:
    """The MoE layer's forward (dispatch, experts, combine), ms, median over ranks and
    capacity factors, per machine ('here' first), world size and skew."""
    ms = ep[ep["metric"] == "moe_forward_ms"]
    if ms.empty:
        return ms
    out = ms.assign(where=where_labels(ms)).groupby(["where", "world", "skew"],
                                                    sort=False)["value"].median()
    return shown(here_first(out.rename("MoE forward ms (median)").reset_index()), digits=3)


@takes_rows
def plot_routing(rows: pd.DataFrame, capacity_factor: float | None = None):
    """Tokens the router asks of each expert (before capacity; rows recorded before that was
    counted: the assignments sent, after capacity), one bar group per skew."""
    from workbook import plots

    metric = "requested_tokens" if (rows["metric"] == "requested_tokens").any() \
        else "routed_tokens"
    routed = largest_world(first_block(rows[rows["metric"] == metric]))
    cf = capacity_factor if capacity_factor is not None else routed["capacity_factor"].max()
    part = routed[routed["capacity_factor"] == cf]
    keys = [k for k in ("skew", "expert", "source", *PROVENANCE) if k in part.columns]
    per = part.groupby(keys, dropna=False)["value"].sum().reset_index()  # sum over ranks
    per["expert"] = per["expert"].astype(int)
    per["skew"] = "skew " + per["skew"].astype(str)
    what = ("asked of each expert by the router (before capacity)"
            if metric == "requested_tokens" else "sent to each expert (after capacity)")
    return plots.bars(per, "expert", group="skew", y_title="tokens", title=subtitled(
        f"Tokens {what}, all ranks, capacity factor {cf}", part))


@takes_rows
def plot_drops(rows: pd.DataFrame):
    from workbook import plots

    drops = first_block(rows[rows["metric"] == "dropped_fraction"])
    drops = mean_over_ranks(largest_world(drops), ["skew", "capacity_factor", "source"])
    # the prediction assumes uniform routing: one curve whatever the skew, not one per skew
    formula = drops["source"] == "predicted"
    drops = drops.assign(skew=("skew " + drops["skew"].astype(str)).where(
        ~formula, "uniform prediction"))
    drops = drops[~(formula & drops.duplicated(["skew", "capacity_factor", "source"]))]
    return plots.compare(drops, "capacity_factor", group="skew",
                         title=subtitled("Dropped token->expert assignments", drops),
                         x_title="capacity factor", y_title="dropped fraction")


_WHAT = {"dp": ("DP", "gradients (all-reduce)", "once per step (one bucket)",
                "a whole copy of its stage's shard"),
         "tp": ("TP", "activations (all-reduce, f and g)", "2 per layer per micro-batch",
                "1/tp of each weight matrix"),
         "pp": ("PP", "activations forward, gradients back (send/recv)",
                "1 per micro-batch per neighbour", "its stage's layers")}


def _dimension_rows(d3: pd.DataFrame) -> list[dict]:
    """The trade-off table's DP, TP and PP rows of one machine's 3D run."""
    out = []
    ok = d3[d3["status"] == "ok"] if "status" in d3.columns else d3
    for dim, (name, what, often, holds) in _WHAT.items():
        use = ok[ok[dim] > 1] if dim in ok.columns else ok.iloc[0:0]
        if use.empty:
            continue
        full = use[(use[["dp", "tp", "pp"]] > 1).sum(axis=1)
                   == (use[["dp", "tp", "pp"]] > 1).sum(axis=1).max()]
        part = full[full["layout"] == full["layout"].iloc[0]]

        def get(metric: str, source: str = "measured", by_dim: bool = True, part=part,
                dim=dim) -> float:
            return pick(part, metric, source, **({"dim": dim} if by_dim else {}))

        out.append({"parallelism": name, "layout": part["layout"].iloc[0],
                    "where": where_of(part), "communicates": what, "how often": often,
                    "messages predicted": get("calls", "predicted"),
                    "messages measured": get("calls"),
                    "MiB sent predicted": get("bytes_sent", "predicted") / 2**20,
                    "MiB sent measured": get("bytes_sent") / 2**20,
                    "ms in calls measured": get("comm_ms"), "each rank holds": holds,
                    "weight elements per rank predicted": get("param_elements", "predicted", False),
                    "weight elements per rank measured": get("param_elements", by_dim=False),
                    "activation MiB predicted": get("peak_activation_bytes", "predicted",
                                                    False) / 2**20,
                    "activation MiB measured": get("peak_activation_bytes", by_dim=False)
                    / 2**20})
    return out


def _ep_row(ep: pd.DataFrame) -> dict:
    """The trade-off table's EP row from one machine's MoE rows (its largest world)."""
    part = largest_world(ep)
    part = part[(part["skew"] == 0.0)
                & (part["capacity_factor"] == part["capacity_factor"].max())]
    return {"parallelism": "EP", "layout": f"ep{int(part['world'].max())}",
            "where": where_of(part), "communicates": "tokens (all-to-all)",
            "how often": "2 per MoE layer forward",
            "messages predicted": 2.0, "messages measured": pick(part, "alltoall_calls"),
            "MiB sent predicted": pick(part, "alltoall_bytes_if_uniform", "predicted") / 2**20,
            "MiB sent measured": pick(part, "alltoall_bytes") / 2**20,
            "ms in calls measured": math.nan, "each rank holds": "E/world of the experts"}


_TRADEOFF_GAPS = {
    # the MoE forward is timed whole (moe_forward_ms), not its all-to-alls
    "ms in calls measured": "– (EP: the MoE forward is timed whole, not its all-to-alls)",
    **{f"{c} {k}": "– (EP: not counted for the MoE layer)"
       for c in ("weight elements per rank", "activation MiB")
       for k in ("predicted", "measured")}}


@takes_rows
def tradeoff_table(d3: pd.DataFrame, ep: pd.DataFrame | None = None) -> pd.DataFrame:
    """The lecture's TP/PP/EP comparison with numbers: per dimension of the 3D run (the layout
    using it, rank mean), messages, MiB sent and milliseconds per step, weights and activations
    per rank, predicted beside measured; EP from the MoE layer's forward. One block per machine,
    this machine's first, each row saying where its numbers come from."""
    out = []
    for _, part in machine_blocks(d3):
        out += _dimension_rows(part)
    if ep is not None and not ep.empty and "skew" in ep.columns:
        out += [_ep_row(part) for _, part in machine_blocks(ep)]
    if not out:
        return pd.DataFrame()
    table = pd.DataFrame(out)
    here = table["where"].str.startswith("this machine")
    table = pd.concat([table[here], table[~here]], ignore_index=True)
    return shown(table, _TRADEOFF_GAPS, 3)


@takes_rows
def drops_caption(ep: pd.DataFrame) -> str:
    """The expert-parallel paragraph's numbers, read from the rows (Markdown): the dropped
    share measured against the uniform-routing prediction at every capacity factor, without
    skew and at the largest skew, and in how many settings the all-to-all bytes equal the
    count from the routing decisions. This machine's rows first, else one recorded device's."""
    blocks = machine_blocks(ep)
    if not blocks:
        return "*No expert-parallel rows yet.*"
    where, part = blocks[0]
    if "world" in part.columns:
        part = part[part["world"] == part["world"].max()]
    ok = part[part["status"] == "ok"] if "status" in part.columns else part
    ok = ok.assign(kind=ok["source"].where(ok["source"] == "predicted", "measured"))
    drops = ok[ok["metric"] == "dropped_fraction"].pivot_table(
        index=["skew", "capacity_factor"], columns="kind", values="value")
    if not {"measured", "predicted"} <= set(drops.columns):
        return f"*{where}: no measured and predicted drops to compare yet.*"
    skews = sorted(drops.index.get_level_values("skew").unique())
    cfs = sorted(drops.index.get_level_values("capacity_factor").unique())
    lines, pct = [], "{:.1%}".format
    for skew in dict.fromkeys([skews[0], skews[-1]]):
        at = drops.loc[skew].reindex(cfs)
        lines.append(f"skew {skew:g}: dropped {' / '.join(map(pct, at['measured']))} "
                     f"(uniform prediction {' / '.join(map(pct, at['predicted']))})")
    a2a = ok[ok["metric"] == "alltoall_bytes"].pivot_table(
        index=["skew", "capacity_factor", "rank"], columns="kind", values="value")
    same = ""
    if {"measured", "predicted"} <= set(a2a.columns):
        equal = (a2a["measured"] == a2a["predicted"]).groupby(
            level=["skew", "capacity_factor"]).all()
        same = (f" All-to-all bytes equal the count from the routing decisions in "
                f"{int(equal.sum())} of {len(equal)} settings.")
    if "world" in part.columns and part["world"].max() == 1:
        same += " (One rank: no token leaves it, so the all-to-all moves nothing.)"
    return (f"*{where}:* at capacity factor {' / '.join(f'{c:g}' for c in cfs)}, "
            + "; ".join(lines) + "." + same)

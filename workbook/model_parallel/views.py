"""Notebook 06's views: the formulas behind the sliders, summaries of the ranks' rows, figures,
and the closing claims table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from workbook import registry, results
from workbook.claims import Claim, claims_table
from workbook.config import check_choice, check_range, takes_rows
from workbook.model_parallel.comm import BYTES
from workbook.model_parallel.pipeline import bubble_fraction
from workbook.model_parallel.tensor import tp_comm_per_layer


def analytic_view(p: int, m: int, tp: int, d_model: int, *, seq_len: int = 2048,
                  micro_batch: int = 1, dtype: str = "bf16") -> pd.DataFrame:
    """What the sliders show: bubble share and bytes moved per layer, for each parallelism."""
    check_range("d_model", d_model, 64, 65536)
    check_choice("dtype", dtype, list(BYTES))
    tpc = tp_comm_per_layer(micro_batch, seq_len, d_model, tp, dtype)
    act = micro_batch * seq_len * d_model * BYTES[dtype]
    rows = [
        ("pipeline", "bubble fraction", bubble_fraction(p, m), ""),
        ("pipeline", "p2p bytes per stage boundary per step", 2 * m * act if p > 1 else 0, "B"),
        ("tensor", "all-reduces per layer per step", tpc["allreduces"], ""),
        ("tensor", "all-reduce payload per layer per step", tpc["total_payload_bytes"], "B"),
        ("tensor", "ring bytes sent per rank per layer per step", tpc["ring_bytes_per_rank"],
         "B"),
        ("tensor", "weights per rank (share of a layer)", 1 / tp, ""),
    ]
    return pd.DataFrame([{"parallelism": k, "p": p, "m": m, "tp": tp, "d_model": d_model,
                          "metric": name, "value": float(v), "unit": u, "source": "predicted"}
                         for k, name, v, u in rows])


def bubble_curve(p_values: Sequence[int], m_values: Sequence[int]) -> pd.DataFrame:
    """Predicted bubble fraction on a (p, m) grid, tidy."""
    return pd.DataFrame([{"p": p, "m": m, "metric": "idle_fraction",
                          "value": bubble_fraction(p, m), "unit": "", "source": "predicted"}
                         for p in p_values for m in m_values])


_PROVENANCE = ("device", "n_gpus", "recorded_at", "seed")


def _mean_over_ranks(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over ranks per ``keys``; provenance columns are kept so plots can label the source."""
    ok = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
    keys = list(dict.fromkeys([k for k in [*keys, *_PROVENANCE] if k in ok.columns]))
    return ok.groupby(keys, dropna=False)["value"].mean().reset_index()


@takes_rows
def tp_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (tp, metric): measured and predicted side by side, averaged over ranks."""
    out = _mean_over_ranks(rows, ["device", "tp", "metric", "source"])
    return out.pivot_table(index=[c for c in ("device", "tp", "metric") if c in out.columns],
                           columns="source", values="value").reset_index()


def pp_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Idle fraction per (p, m): wall clock, op-duration replay and the formula, rank mean."""
    idle = rows[rows["metric"].isin(["idle_fraction", "idle_fraction_replay"])].copy()
    idle["kind"] = idle["metric"].where(idle["source"] != "predicted", "formula")
    idle["kind"] = idle["kind"].map({"idle_fraction": "wall clock",
                                     "idle_fraction_replay": "op-duration replay",
                                     "formula": "(p-1)/(m+p-1)"})
    out = _mean_over_ranks(idle, ["device", "p", "m", "kind", "source"])
    return out.assign(metric="idle_fraction", stages="p=" + out["p"].astype(int).astype(str))


def load_imbalance(rows: pd.DataFrame, metric: str = "routed_tokens") -> pd.DataFrame:
    """Max over mean tokens per expert, per configuration: 1.0 is perfect balance.

    ``routed_tokens``: what the router asked for (before capacity); ``expert_load``: what the
    experts computed (after drops, so never above capacity times the number of ranks).
    """
    load = rows[rows["metric"] == metric]
    keys = [c for c in ("world", "n_experts", "top_k", "capacity_factor", "skew",
                        "tokens_per_rank", "device") if c in load.columns]
    per_expert = load.groupby([*keys, "expert"], dropna=False)["value"].sum().reset_index()
    out = per_expert.groupby(keys, dropna=False)["value"].agg(lambda v: v.max() / v.mean())
    return out.rename("max_over_mean").reset_index()


@takes_rows
def ep_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (skew, capacity factor): dropped share measured vs uniform-routing prediction,
    imbalance (max/mean tokens per expert, before capacity), all-to-all bytes per rank."""
    keys = [k for k in ("world", "skew", "capacity_factor") if k in rows.columns]
    drops = _mean_over_ranks(rows[rows["metric"] == "dropped_fraction"], [*keys, "source"])
    table = drops.pivot_table(index=keys, columns="source", values="value").add_prefix(
        "dropped_").reset_index()
    imb = load_imbalance(rows)[[*keys, "max_over_mean"]]
    a2a = _mean_over_ranks(rows[rows["metric"] == "alltoall_bytes"], [*keys, "source"])
    a2a = a2a.pivot_table(index=keys, columns="source", values="value").add_prefix(
        "alltoall_B_").reset_index()
    return table.merge(imb, on=keys).merge(a2a, on=keys)


def gpu_rows(name: str) -> pd.DataFrame:
    """Rows recorded on GPUs for experiment ``name``, from one device: the one recorded with
    the most GPUs (latest first on a tie), so that no plot averages two machines. Empty if none.
    """
    registry.get(name)  # an unknown name: one line listing the experiments
    rows = results.load(name)
    rows = rows[pd.to_numeric(rows["n_gpus"], errors="coerce").fillna(0) > 0]
    if rows.empty:
        return rows
    best = rows.sort_values(["n_gpus", "recorded_at"]).iloc[-1]["device"]
    return rows[rows["device"] == best].reset_index(drop=True)


def bubble_explorer():
    """Sliders p, m, tp, d_model -> bubble curve and bytes per layer (pure formulas)."""
    from workbook import plots, widgets

    ms = [1, 2, 4, 8, 16, 32, 64, 128]
    fig = plots.figure("Pipeline bubble (p-1)/(m+p-1)", "micro-batches m", "idle fraction",
                       log_x=True)

    def draw(fig, p: int, m: int, tp: int, d_model: int) -> str:
        if not fig.data:
            fig.add_scatter(name="bubble at this p", mode="lines", line={"dash": "dash"})
            fig.add_scatter(name="your m", mode="markers", marker={"size": 14})
        fig.data[0].update(x=ms, y=[bubble_fraction(p, x) for x in ms])
        fig.data[1].update(x=[m], y=[bubble_fraction(p, m)])
        view = analytic_view(p, m, tp, d_model).set_index("metric")["value"]
        return (f"p={p}, m={m}: idle {view['bubble fraction']:.1%} of each step; "
                f"tp={tp}, d_model={d_model}, 1×2048 tokens: "
                f"{view['all-reduces per layer per step']:.0f} all-reduces per layer, "
                f"{view['ring bytes sent per rank per layer per step'] / 2**20:.1f} MiB sent "
                f"per rank per layer; pipeline sends "
                f"{view['p2p bytes per stage boundary per step'] / 2**20:.1f} MiB per boundary")

    controls = {"p": widgets.slider("stages p", 1, 64, 1, 4),
                "m": widgets.slider("micro-batches m", 1, 128, 1, 8),
                "tp": widgets.slider("tensor-parallel degree", 1, 64, 1, 8),
                "d_model": widgets.slider("d_model", 512, 16384, 512, 4096)}
    return widgets.Explorer(controls, draw, fig)


@takes_rows
def plot_bubble(rows: pd.DataFrame, title: str = "Pipeline idle fraction vs micro-batches"):
    from workbook import plots

    summary = pp_summary(rows)
    return plots.compare(summary, "m", group=["stages", "kind"], title=title, log_x=True,
                         x_title="micro-batches m", y_title="idle fraction of a step")


def _largest_world(rows: pd.DataFrame) -> pd.DataFrame:
    """Expert-parallel rows of the run with the most ranks (E grows with the world size)."""
    if "world" not in rows.columns or rows.empty:
        return rows
    return rows[rows["world"] == rows["world"].max()]


@takes_rows
def plot_routing(rows: pd.DataFrame, capacity_factor: float | None = None):
    """Tokens the router sends to each expert (before capacity), one bar group per skew."""
    from workbook import plots

    routed = _largest_world(rows[rows["metric"] == "routed_tokens"])
    cf = capacity_factor if capacity_factor is not None else routed["capacity_factor"].max()
    part = routed[routed["capacity_factor"] == cf]
    keys = [k for k in ("skew", "expert", "source", *_PROVENANCE) if k in part.columns]
    per = part.groupby(keys, dropna=False)["value"].sum().reset_index()  # sum over ranks
    per["expert"] = per["expert"].astype(int)
    per["skew"] = "skew " + per["skew"].astype(str)
    return plots.bars(per, "expert", group="skew", y_title="tokens",
                      title=f"Tokens routed to each expert, all ranks (capacity factor {cf})")


@takes_rows
def plot_drops(rows: pd.DataFrame):
    from workbook import plots

    drops = _mean_over_ranks(_largest_world(rows[rows["metric"] == "dropped_fraction"]),
                             ["skew", "capacity_factor", "source"])
    drops = drops.assign(skew="skew " + drops["skew"].astype(str))
    return plots.compare(drops, "capacity_factor", group="skew",
                         title="Dropped token->expert assignments",
                         x_title="capacity factor", y_title="dropped fraction")


@takes_rows
def plot_tp_time(rows: pd.DataFrame):
    """Step time of one block vs tensor-parallel degree, and the all-reduce share."""
    from workbook import plots

    t = rows[rows["metric"].isin(["step_ms_one_device", "step_ms_tensor_parallel"])]
    t = _mean_over_ranks(t, ["tp", "metric", "source"])
    return plots.compare(t, "tp", group="metric", title="One transformer block, forward + "
                         "backward", x_title="tensor-parallel degree", y_title="ms")


@takes_rows
def claims(tp: pd.DataFrame, pp: pd.DataFrame, ep: pd.DataFrame,
           where: str = "") -> pd.DataFrame:
    """The lecture's and the papers' claims, checked against the rows given (``where``: the
    rows' provenance, shown in each row)."""
    def pick(rows: pd.DataFrame, metric: str, source: str = "measured", **where_) -> float:
        sel = (rows["metric"] == metric) & rows["source"].isin(
            [source] if source == "predicted" else ["measured", "recorded"])
        for k, v in where_.items():
            sel &= rows[k] == v
        vals = rows.loc[sel, "value"]
        return float(vals.mean()) if len(vals) else math.nan

    def within_rounding(err: float, rows: pd.DataFrame) -> float:
        """1.0 if ``err`` is float rounding for the rows' dtype, else 0.0 (NaN: not run)."""
        if math.isnan(err):
            return err
        low = "dtype" in rows and set(rows["dtype"].dropna()) & {"bf16", "fp16"}
        return float(err <= (0.1 if low else 1e-4))

    tp_max = int(tp["tp"].max()) if "tp" in tp and len(tp) else 1
    out = [Claim("TP output equals one device (1 = within float rounding)", "Megatron-LM",
                 1.0, within_rounding(pick(tp, "max_abs_err_output", tp=tp_max), tp), "",
                 where, rel_tol=0),
           Claim(f"TP all-reduces per block per step (tp={tp_max})", "Megatron-LM §3",
                 pick(tp, "allreduce_calls", "predicted", tp=tp_max),
                 pick(tp, "allreduce_calls", tp=tp_max), "", where, rel_tol=0)]
    if "p" in pp and len(pp):
        p, m = int(pp["p"].max()), int(pp["m"].max())
        # idle shares of a step: 2 points of idle time is agreement (p = 1 predicts exactly 0)
        out.append(Claim(f"GPipe bubble (p={p}, m={m}), op-duration replay", "GPipe paper",
                         bubble_fraction(p, m), pick(pp, "idle_fraction_replay", p=p, m=m),
                         "", where, rel_tol=0.25, abs_tol=0.02))
        out.append(Claim(f"GPipe bubble (p={p}, m={m}), wall clock", "GPipe paper",
                         bubble_fraction(p, m), pick(pp, "idle_fraction", p=p, m=m), "",
                         where, rel_tol=0.25, abs_tol=0.02))
    if "skew" in ep and len(ep):
        ep = _largest_world(ep)
        cfs = sorted(set(ep["capacity_factor"].dropna()))
        cf = 1.25 if 1.25 in cfs else cfs[-1]
        # shares of assignments: within 0.001 of the prediction (1e-8 vs 0) is agreement
        out.append(Claim(f"MoE dropped share at capacity factor {cf} (unbiased router)",
                         "Switch Transformer", pick(ep, "dropped_fraction", "predicted",
                                                    skew=0.0, capacity_factor=cf),
                         pick(ep, "dropped_fraction", skew=0.0, capacity_factor=cf),
                         "", where, rel_tol=0.5, abs_tol=0.001))
        out.append(Claim("EP output equals one device (1 = within float rounding)",
                         "GShard", 1.0, within_rounding(pick(ep, "max_abs_err_vs_one_device"),
                                                        ep), "", where, rel_tol=0))
    return claims_table(out)

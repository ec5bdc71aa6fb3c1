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
from workbook.model_parallel.schedules import SCHEDULES
from workbook.model_parallel.tensor import tp_comm_per_layer
from workbook.results import where_label


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
    """One row per (machine, tp, metric): measured and predicted side by side, averaged over
    ranks; a machine is its device and GPU count ('NVIDIA H200 ×4'), this machine first."""
    out = _mean_over_ranks(rows, ["tp", "metric", "source"])
    out = out.assign(where=_curve_label(out)).pivot_table(
        index=["where", "tp", "metric"], columns="source", values="value").reset_index()
    return out.sort_values("where", key=lambda w: w != "here", kind="stable", ignore_index=True)


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
def plot_bubble(rows: pd.DataFrame, title: str = "GPipe idle fraction vs micro-batches"):
    from workbook import plots

    rows = _with_schedule(rows)
    s = pp_summary(rows[rows["schedule"] == "gpipe"])
    formula = s["source"] == "predicted"  # the same on every machine: one curve per p
    curve = s["stages"] + " " + s["kind"]
    s = s.assign(curve=curve.where(formula, curve + " · " + _curve_label(s)))
    if "device" in s.columns:  # the formula named after one machine (this one), never split
        s["device"] = s["device"].where(~formula, pd.concat(
            [s.loc[s["source"] == "measured", "device"], s["device"]]).iloc[0])
    return plots.compare(s[~(formula & s.duplicated(["p", "m", "kind"]))], "m", group="curve",
                         title=title, log_x=True, x_title="micro-batches m",
                         y_title="idle fraction of a step", color="stages")


def _first_block(rows: pd.DataFrame) -> pd.DataFrame:
    """This machine's rows where it measured any, else the first recorded device's."""
    blocks = _blocks(rows)
    return blocks[0][1] if blocks else rows


def _largest_world(rows: pd.DataFrame) -> pd.DataFrame:
    """Expert-parallel rows of the run with the most ranks (E grows with the world size)."""
    has = "world" in rows.columns and not rows.empty
    return rows[rows["world"] == rows["world"].max()] if has else rows


@takes_rows
def plot_routing(rows: pd.DataFrame, capacity_factor: float | None = None):
    """Tokens the router sends to each expert (before capacity), one bar group per skew."""
    from workbook import plots

    routed = _largest_world(_first_block(rows[rows["metric"] == "routed_tokens"]))
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

    drops = _first_block(rows[rows["metric"] == "dropped_fraction"])
    drops = _mean_over_ranks(_largest_world(drops), ["skew", "capacity_factor", "source"])
    drops = drops.assign(skew="skew " + drops["skew"].astype(str))
    return plots.compare(drops, "capacity_factor", group="skew",
                         title="Dropped token->expert assignments",
                         x_title="capacity factor", y_title="dropped fraction")


@takes_rows
def plot_tp_time(rows: pd.DataFrame):
    """Step time of one block vs tensor-parallel degree, and the all-reduce share."""
    from workbook import plots

    t = rows[rows["metric"].isin(["step_ms_one_device", "step_ms_tensor_parallel"])]
    t = t.assign(curve=t["metric"] + " · " + _curve_label(t))  # one trace per machine
    t = _mean_over_ranks(t, ["tp", "curve", "metric", "source"])
    return plots.compare(t, "tp", group="curve", color="metric", title="One transformer block, "
                         "forward + backward", x_title="tensor-parallel degree", y_title="ms")


def _blocks(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(where, rows) per machine (device and GPU count): this machine's live rows first."""
    if rows is None or rows.empty:
        return []
    keys = [k for k in ("device", "n_gpus") if k in rows.columns]
    if not keys:
        return [(_where(rows), rows)]
    parts = [part for _, part in rows.groupby(keys, sort=False, dropna=False)]
    parts.sort(key=lambda part: not (part["source"] == "measured").any())
    return [(_where(part), part) for part in parts]


def _where(rows: pd.DataFrame) -> str:
    """:func:`results.where_label`, plus 'gloo ranks on the CPU' where a GPU machine ran these
    ranks as CPU processes (more ranks than GPUs), so that its name is not read as its GPUs'."""
    if not {"backend", "n_gpus"} <= set(rows.columns):
        return where_label(rows)
    gpus = (pd.to_numeric(rows["n_gpus"], errors="coerce") > 0).any()
    gloo = gpus and set(rows["backend"].dropna()) == {"gloo"}
    return where_label(rows) + (", gloo ranks on the CPU" if gloo else "")


def _pick(rows: pd.DataFrame, metric: str, source: str = "measured", how: str = "mean",
          **where_) -> float:
    sel = (rows["metric"] == metric) & rows["source"].isin(
        [source] if source == "predicted" else ["measured", "recorded"])
    for k, v in where_.items():
        if k not in rows.columns:
            return math.nan
        sel &= rows[k] == v
    vals = rows.loc[sel, "value"]
    return float(getattr(vals, how)()) if len(vals) else math.nan


def _with_schedule(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows recorded before 1F1B existed were GPipe's."""
    sched = rows["schedule"] if "schedule" in rows.columns else pd.Series("gpipe", rows.index)
    return rows.assign(schedule=sched.fillna("gpipe"))


def _pp_claims(pp: pd.DataFrame, where: str) -> list[Claim]:
    pp = _with_schedule(pp)
    p, m = int(pp["p"].max()), int(pp["m"].max())
    out = []
    for sched in ("gpipe", "1f1b"):
        if not (pp["schedule"] == sched).any():
            continue
        name = "GPipe" if sched == "gpipe" else "1F1B"
        # idle shares of a step: 2 points of idle time is agreement (p = 1 predicts exactly 0)
        out.append(Claim(f"{name} bubble (p={p}, m={m}), op-duration replay", "GPipe paper",
                         bubble_fraction(p, m), _pick(pp, "idle_fraction_replay", p=p, m=m,
                                                      schedule=sched),
                         "", where, rel_tol=0.25, abs_tol=0.02))
        if sched == "gpipe":
            out.append(Claim(f"GPipe bubble (p={p}, m={m}), wall clock", "GPipe paper",
                             bubble_fraction(p, m), _pick(pp, "idle_fraction", p=p, m=m,
                                                          schedule=sched),
                             "", where, rel_tol=0.25, abs_tol=0.02))
    if not {"gpipe", "1f1b"} <= set(pp["schedule"]):
        return out
    idle = {s: _pick(pp, "idle_fraction_replay", p=p, m=m, schedule=s) for s in SCHEDULES}
    stage0 = pp[pp["rank"] == 0] if "rank" in pp.columns else pp
    ratio = (_pick(stage0, "peak_activation_bytes", p=p, m=m, schedule="1f1b")
             / _pick(stage0, "peak_activation_bytes", p=p, m=m, schedule="gpipe"))
    return out + [
        # predicted: GPipe's idle share measured in the same run; 3 points of a step (or a
        # quarter of it) is the noise of op durations on a shared CPU
        Claim(f"1F1B has GPipe's bubble (p={p}, m={m}): predicted = GPipe's measured idle",
              "Narayanan et al. 2021 (PipeDream-flush)", idle["gpipe"], idle["1f1b"], "", where,
              rel_tol=0.25, abs_tol=0.03),
        Claim(f"GPipe holds all m={m} micro-batches' activations (p={p})", "GPipe paper",
              m, _pick(pp, "peak_in_flight", how="max", p=p, m=m, schedule="gpipe"),
              "micro-batches", where, rel_tol=0),
        Claim(f"1F1B holds at most p={p} micro-batches' activations (m={m})",
              "Narayanan et al. 2021", p, _pick(pp, "peak_in_flight", how="max", p=p, m=m,
                                                schedule="1f1b"),
              "micro-batches", where, kind="at_most"),
        Claim(f"stage 0 activation bytes, 1F1B / GPipe = min(p, m)/m (p={p}, m={m})",
              "Narayanan et al. 2021", min(p, m) / m, ratio, "", where)]


def _composed_claims(d3: pd.DataFrame, where: str) -> list[Claim]:
    sizes = d3[["dp", "tp", "pp"]].drop_duplicates()
    full = sizes[(sizes > 1).sum(axis=1) == (sizes > 1).sum(axis=1).max()].iloc[0]
    layout = f"dp{int(full.dp)}·tp{int(full.tp)}·pp{int(full.pp)}"
    part = d3[d3["layout"] == layout]
    # float32 rounding of a sum in another order: 1e-4 is far above it and far below a bug
    out = [Claim(f"{layout} gradients equal one process (max |Δ|)", "Megatron-LM 3D", 0.0,
                 _pick(part, "max_abs_err_grad", how="max"), "", where, abs_tol=1e-4),
           Claim(f"{layout} loss equals one process (|Δ|)", "Megatron-LM 3D", 0.0,
                 _pick(part, "abs_err_loss", how="max"), "", where, abs_tol=1e-4)]
    for dim in ("tp", "pp", "dp"):
        with_dim = d3[d3[dim] > 1]
        if with_dim.empty:
            continue
        lay = with_dim["layout"].iloc[0]
        one = d3[d3["layout"] == lay]
        out.append(Claim(f"{dim.upper()} bytes sent per step, all ranks ({lay})",
                         "count from the layout", _pick(one, "bytes_sent", "predicted", "sum",
                                                        dim=dim),
                         _pick(one, "bytes_sent", how="sum", dim=dim), "B", where, rel_tol=0))
    return out


@takes_rows
def claims(tp: pd.DataFrame, pp: pd.DataFrame, ep: pd.DataFrame,
           d3: pd.DataFrame | None = None) -> pd.DataFrame:
    """The lecture's and the papers' claims, checked against the rows given: one block per
    device, this machine's live rows first, each row saying where its numbers come from."""
    def within_rounding(err: float, rows: pd.DataFrame) -> float:
        """1.0 if ``err`` is float rounding for the rows' dtype, else 0.0 (NaN: not run)."""
        if math.isnan(err):
            return err
        low = "dtype" in rows and set(rows["dtype"].dropna()) & {"bf16", "fp16"}
        return float(err <= (0.1 if low else 1e-4))

    out, live = [], set()

    def blocks(rows: pd.DataFrame | None) -> list[tuple[str, pd.DataFrame]]:
        found = _blocks(rows if rows is not None else pd.DataFrame())
        live.update(where for where, part in found if (part["source"] == "measured").any())
        return found

    for where, part in blocks(tp):
        tp_max = int(part["tp"].max())
        out += [Claim("TP output equals one device (1 = within float rounding)", "Megatron-LM",
                      1.0, within_rounding(_pick(part, "max_abs_err_output", tp=tp_max), part),
                      "", where, rel_tol=0),
                Claim(f"TP all-reduces per block per step (tp={tp_max})", "Megatron-LM §3",
                      _pick(part, "allreduce_calls", "predicted", tp=tp_max),
                      _pick(part, "allreduce_calls", tp=tp_max), "", where, rel_tol=0)]
    for where, part in blocks(pp):
        out += _pp_claims(part, where)
    for where, part in blocks(ep):
        part = _largest_world(part)
        cfs = sorted(set(part["capacity_factor"].dropna()))
        # at capacity factor 1 only chance overflows an expert: a share the draw can measure
        # (above 1, the binomial tail predicts ~0; below 1, the capacity forces the drops)
        cf = 1.0 if 1.0 in cfs else cfs[-1]
        # a share of assignments from one draw: half the prediction either way, or 0.001
        out.append(Claim(f"MoE dropped share at capacity factor {cf} (unbiased router)",
                         "Switch Transformer", _pick(part, "dropped_fraction", "predicted",
                                                     skew=0.0, capacity_factor=cf),
                         _pick(part, "dropped_fraction", skew=0.0, capacity_factor=cf),
                         "", where, rel_tol=0.5, abs_tol=0.001))
        out.append(Claim("EP output equals one device (1 = within float rounding)",
                         "GShard", 1.0, within_rounding(_pick(part, "max_abs_err_vs_one_device"),
                                                        part), "", where, rel_tol=0))
    for where, part in blocks(d3):
        out += _composed_claims(part, where)
    wheres = list(dict.fromkeys(c.where for c in out))  # this machine's blocks first
    order = [w for w in wheres if w in live] + [w for w in wheres if w not in live]
    return claims_table(sorted(out, key=lambda c: order.index(c.where)))


def _curve_label(rows: pd.DataFrame) -> pd.Series:
    """'here' for this machine's rows, else the recorded machine ('NVIDIA H200 ×4'): one trace
    per source. A machine is its device and GPU count: an H200 ×4 recording beside a live
    1-GPU H200 run is a reference, not 'here' (06's 1F1B caption looked for 1F1B at p=4)."""
    if "device" not in rows.columns or "source" not in rows.columns:
        return pd.Series("here", rows.index)
    count = (rows["n_gpus"] if "n_gpus" in rows.columns else pd.Series(None, rows.index))
    count = count.map(lambda n: "" if pd.isna(n) else f" ×{int(float(n))}")
    machine = rows["device"].astype(str) + count
    here = set(machine[(rows["source"] == "measured") & rows["device"].notna()])
    return pd.Series([("here" if m in here or pd.isna(d) else m)
                      for m, d in zip(machine, rows["device"], strict=True)],
                     index=rows.index, dtype=str)


@takes_rows
def schedule_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (where, p, schedule, m): idle share (op-duration replay, rank mean) beside the
    formula; micro-batches held (most over the stages) and stage 0's activation MiB, measured
    beside the schedule's count (and, on a GPU, the allocator's peak above the step's start)."""
    pp = _with_schedule(rows[rows["status"] == "ok"] if "status" in rows.columns else rows)
    pp = pp.assign(where=_curve_label(pp), src=pp["source"].where(
        pp["source"] == "predicted", "measured"))
    keys = ["where", "p", "schedule", "m"]

    def agg(metric: str, src: str, how: str, stage0: bool = False) -> pd.Series:
        part = pp[(pp["metric"] == metric) & (pp["src"] == src)]
        if stage0 and "rank" in part.columns:
            part = part[part["rank"] == 0]
        return part.groupby(keys)["value"].agg(how)

    cols = {"idle_measured": agg("idle_fraction_replay", "measured", "mean"),
            "idle_formula": agg("idle_fraction", "predicted", "mean"),
            "held_measured": agg("peak_in_flight", "measured", "max"),
            "held_predicted": agg("peak_in_flight", "predicted", "max"),
            "stage0_MiB_measured": agg("peak_activation_bytes", "measured", "mean", True) / 2**20,
            "stage0_MiB_predicted": agg("peak_activation_bytes", "predicted", "mean",
                                        True) / 2**20,
            "stage0_alloc_GiB_measured": agg("peak_memory_above_start", "measured", "mean",
                                             True)}
    cols = {k: v for k, v in cols.items() if len(v)}
    if not cols:
        return pd.DataFrame(columns=keys)
    return pd.DataFrame(cols).reset_index()


def _main_p(rows: pd.DataFrame) -> int:
    """The largest p measured here (else recorded): the figures' stage count."""
    if rows.empty:
        return 0
    here = rows[rows["source"] == "measured"] if "source" in rows.columns else rows
    return int((here if len(here) else rows)["p"].max())


@takes_rows
def plot_schedules(rows: pd.DataFrame):
    """Idle share vs m, GPipe beside 1F1B at the largest p (replay of measured op durations,
    and the formula both share); other devices as labelled references."""
    from workbook import plots

    pp = _with_schedule(rows)
    pp = pp[pp["metric"].isin(["idle_fraction_replay", "idle_fraction"])]
    pp = pp[(pp["metric"] == "idle_fraction_replay") | (pp["source"] == "predicted")]
    p = _main_p(pp)
    pp = pp[pp["p"] == p].assign(where=_curve_label(pp[pp["p"] == p]))
    first = "here" if (pp["where"] == "here").any() else pp["where"].min()
    formula = pp[(pp["source"] == "predicted") & (pp["where"] == first)]
    pp = pd.concat([pp[pp["source"] != "predicted"].assign(
        curve=lambda t: t["schedule"] + " · " + t["where"]),
        formula.assign(curve="(p-1)/(m+p-1)", schedule="(p-1)/(m+p-1)")])
    summary = _mean_over_ranks(pp, ["curve", "schedule", "p", "m", "source"])
    return plots.compare(summary, "m", group="curve", log_x=True, color="schedule",
                         title=f"GPipe and 1F1B idle share, p={p}",
                         x_title="micro-batches m", y_title="idle fraction of a step")


@takes_rows
def plot_activations(rows: pd.DataFrame):
    """Stage 0's activation memory vs m: GPipe grows with m, 1F1B stops at p micro-batches."""
    from workbook import plots

    pp = _with_schedule(rows)
    pp = pp[pp["metric"] == "peak_activation_bytes"]
    pp = pp[pp["rank"] == 0] if "rank" in pp.columns else pp
    p = _main_p(pp)
    pp = pp[pp["p"] == p]
    pp = pp.assign(value=pp["value"] / 2**20, unit="MiB",
                   curve=pp["schedule"] + " · " + _curve_label(pp))
    summary = _mean_over_ranks(pp, ["curve", "schedule", "p", "m", "source"])
    return plots.compare(summary, "m", group="curve", log_x=True, color="schedule",
                         title=f"Activations held by stage 0, p={p}",
                         x_title="micro-batches m", y_title="peak activation MiB")


_WHAT = {"dp": ("DP", "gradients (all-reduce)", "once per step (one bucket)",
                "a whole copy of its stage's shard"),
         "tp": ("TP", "activations (all-reduce, f and g)", "2 per layer per micro-batch",
                "1/tp of each weight matrix"),
         "pp": ("PP", "activations forward, gradients back (send/recv)",
                "1 per micro-batch per neighbour", "its stage's layers")}


@takes_rows
def tradeoff_table(d3: pd.DataFrame, ep: pd.DataFrame | None = None) -> pd.DataFrame:
    """The lecture's TP/PP/EP comparison with numbers: per dimension of the 3D run (the layout
    using it, rank mean), messages, bytes sent and milliseconds per step, weights and
    activations per rank, predicted beside measured; EP from the MoE layer's forward."""
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
            return _pick(part, metric, source, **({"dim": dim} if by_dim else {}))

        out.append({"parallelism": name, "layout": part["layout"].iloc[0],
                    "where": _where(part), "communicates": what, "how often": often,
                    "messages predicted": get("calls", "predicted"),
                    "messages measured": get("calls"),
                    "bytes sent predicted": get("bytes_sent", "predicted"),
                    "bytes sent measured": get("bytes_sent"),
                    "comm ms measured": get("comm_ms"), "each rank holds": holds,
                    "weights per rank predicted": get("param_elements", "predicted", False),
                    "weights per rank measured": get("param_elements", by_dim=False),
                    "activation B predicted": get("peak_activation_bytes", "predicted", False),
                    "activation B measured": get("peak_activation_bytes", by_dim=False)})
    if ep is not None and not ep.empty and "skew" in ep.columns:
        part = _largest_world(ep)
        part = part[(part["skew"] == 0.0)
                    & (part["capacity_factor"] == part["capacity_factor"].max())]
        out.append({"parallelism": "EP", "layout": f"ep{int(part['world'].max())}",
                    "where": _where(part), "communicates": "tokens (all-to-all)",
                    "how often": "2 per MoE layer forward",
                    "messages predicted": 2.0, "messages measured": _pick(part, "alltoall_calls"),
                    "bytes sent predicted": _pick(part, "alltoall_bytes_if_uniform",
                                                  "predicted"),
                    "bytes sent measured": _pick(part, "alltoall_bytes"),
                    "comm ms measured": math.nan, "each rank holds": "E/world of the experts"})
    return pd.DataFrame(out)


@takes_rows
def schedules_caption(rows: pd.DataFrame) -> str:
    """The 1F1B paragraph's numbers, read from the rows (Markdown)."""
    table = schedule_summary(rows)
    if table.empty or "held_measured" not in table.columns:
        return "*No GPipe/1F1B rows to compare yet.*"
    here = table[table["where"] == ("here" if (table["where"] == "here").any()
                                    else table["where"].iloc[0])]
    here = here[here["p"] == here["p"].max()]
    m = int(here["m"].max())
    row = here[here["m"] == m].set_index("schedule")
    if not {"gpipe", "1f1b"} <= set(row.index):
        return "*No GPipe/1F1B rows to compare yet.*"
    where, p = _blocks(rows)[0][0], int(here["p"].max())
    # one stage has no pipe to fill or drain: a zero bubble there says nothing about the schedules
    alone = (" With one stage there is no pipe to fill or drain, so both bubbles are zero by "
             "construction; only the memory tells the schedules apart here.") if p == 1 else ""
    return (f"*{where}:* at p={p} stages and m={m} micro-batches, GPipe "
            f"idled {row.loc['gpipe', 'idle_measured']:.1%} of a step and 1F1B "
            f"{row.loc['1f1b', 'idle_measured']:.1%} (formula "
            f"{row.loc['gpipe', 'idle_formula']:.1%}); GPipe held "
            f"{row.loc['gpipe', 'held_measured']:.0f} micro-batches' activations "
            f"({row.loc['gpipe', 'stage0_MiB_measured']:.1f} MiB on stage 0), 1F1B "
            f"{row.loc['1f1b', 'held_measured']:.0f} "
            f"({row.loc['1f1b', 'stage0_MiB_measured']:.1f} MiB).{alone}")


@takes_rows
def composed_caption(d3: pd.DataFrame) -> str:
    """The 3D paragraph's numbers, read from the rows (Markdown)."""
    blocks = _blocks(d3)
    if not blocks:
        return "*No DP × TP × PP rows yet.*"
    where, part = blocks[0]
    layouts = ", ".join(dict.fromkeys(part["layout"]))
    backend = ", ".join(sorted(set(part["backend"].dropna()))) if "backend" in part else ""
    return (f"*{where}:* {int(part['world'].max()) if 'world' in part else '?'} ranks "
            f"({backend}), layouts {layouts}; largest gradient difference from one process "
            f"{_pick(part, 'max_abs_err_grad', how='max'):.1e}, loss "
            f"{_pick(part, 'abs_err_loss', how='max'):.1e}.")


@takes_rows
def drops_caption(ep: pd.DataFrame) -> str:
    """The expert-parallel paragraph's numbers, read from the rows (Markdown): the dropped
    share measured against the uniform-routing prediction at every capacity factor, without
    skew and at the largest skew, and in how many settings the all-to-all bytes equal the
    count from the routing decisions. This machine's rows first, else one recorded device's."""
    blocks = _blocks(ep)
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

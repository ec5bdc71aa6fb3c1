"""Notebook 06's views: the formulas behind the sliders, summaries of the ranks' rows, figures,
and the closing claims table (expert-parallel views and the trade-off table: :mod:`.moe_views`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from workbook import registry, results
from workbook.claims import Claim, claims_table
from workbook.config import check_choice, check_range, takes_rows
from workbook.model_parallel.comm import BYTES
from workbook.model_parallel.machines import (
    curve_label,
    here_first,
    largest_world,
    machine_blocks,
    mean_over_ranks,
    pick,
    shown,
    subtitled,
    where_labels,
    with_schedule,
)
from workbook.model_parallel.pipeline import bubble_fraction
from workbook.model_parallel.schedules import SCHEDULES
from workbook.model_parallel.tensor import tp_comm_per_layer


def analytic_view(p: int, m: int, tp: int, d_model: int, *, seq_len: int = 2048,
                  micro_batch: int = 1, dtype: str = "bf16") -> pd.DataFrame:
    """What the sliders show: bubble share and bytes moved per layer, for each parallelism.
    Tensor parallelism pays its all-reduces once per micro-batch: its rows say so, and one more
    multiplies by ``m`` so that it compares with the pipeline's bytes per step. Bytes are in
    MiB (the ``unit`` column), counts whole numbers, shares rounded to 4 decimals."""
    check_range("d_model", d_model, 64, 65536)
    check_choice("dtype", dtype, list(BYTES))
    tpc = tp_comm_per_layer(micro_batch, seq_len, d_model, tp, dtype)
    mib = micro_batch * seq_len * d_model * BYTES[dtype] / 2**20  # one micro-batch's activations
    rows = [
        ("pipeline", "bubble fraction", bubble_fraction(p, m), ""),
        ("pipeline", "p2p bytes per stage boundary per step", 2 * m * mib if p > 1 else 0,
         "MiB"),
        ("tensor", "all-reduces per layer per micro-batch", tpc["allreduces"], ""),
        ("tensor", "all-reduce payload per layer per micro-batch",
         tpc["total_payload_bytes"] / 2**20, "MiB"),
        ("tensor", "ring bytes sent per rank per layer per micro-batch",
         tpc["ring_bytes_per_rank"] / 2**20, "MiB"),
        ("tensor", "ring bytes sent per rank per layer per step (m micro-batches)",
         m * tpc["ring_bytes_per_rank"] / 2**20, "MiB"),
        ("tensor", "weights per rank (share of a layer)", 1 / tp, ""),
    ]

    def number(v: float) -> int | float:  # 4 all-reduces, not 4.0; 0.2727, not 2.727273e-01
        return int(v) if float(v).is_integer() else round(float(v), 4)

    frame = pd.DataFrame([{"parallelism": k, "p": p, "m": m, "tp": tp, "d_model": d_model,
                           "metric": name, "unit": u, "source": "predicted"}
                          for k, name, _, u in rows])
    frame.insert(6, "value", pd.Series([number(v) for _, _, v, _ in rows], dtype=object))
    return frame


def bubble_curve(p_values: Sequence[int], m_values: Sequence[int]) -> pd.DataFrame:
    """Predicted bubble fraction on a (p, m) grid, tidy."""
    return pd.DataFrame([{"p": p, "m": m, "metric": "idle_fraction",
                          "value": bubble_fraction(p, m), "unit": "", "source": "predicted"}
                         for p in p_values for m in m_values])


# tp_summary's columns: equality with one device first, then the counts, then the times
_TP_ORDER = ("max_abs_err_output", "max_abs_err_input_grad", "max_abs_err_weight_grad",
             "max_abs_err_torch_tp_mlp", "allreduce_calls", "allreduce_calls_forward",
             "allreduce_payload", "allreduce_payload_forward", "ring_bytes_sent_per_rank",
             "weight_elements_per_rank", "step_ms_one_device", "step_ms_tensor_parallel",
             "allreduce_ms", "comm_share_estimate")


# bytes shown in MiB, the column saying so
_BYTE_METRICS = ("allreduce_payload", "allreduce_payload_forward", "ring_bytes_sent_per_rank")


@takes_rows
def tp_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (machine, tp), a column per metric, averaged over ranks: the value measured
    (here) or recorded (on the machine ``where`` names, as the claims name it), and
    ``<metric>_predicted`` beside it where the formula predicts one; bytes in MiB, counts as
    whole numbers, "–" with the reason where a machine has no number. This machine first."""
    rows = rows.assign(where=where_labels(rows), kind=rows["source"].where(
        rows["source"] == "predicted", "measured"))
    mib = rows["metric"].isin(_BYTE_METRICS)
    rows = rows.assign(value=rows["value"].where(~mib, rows["value"] / 2**20),
                       metric=rows["metric"].where(~mib, rows["metric"] + " (MiB)"))
    out = mean_over_ranks(rows, ["where", "tp", "metric", "kind"])
    wide = out.pivot_table(index=["where", "tp"], columns=["metric", "kind"], values="value",
                           sort=False)
    shown_as = {m: f"{m} (MiB)" if m in _BYTE_METRICS else m for m in _TP_ORDER}
    metrics = [shown_as[m] for m in _TP_ORDER if shown_as[m] in set(out["metric"])]
    order = [(m, k) for m in dict.fromkeys([*metrics, *out["metric"]])
             for k in ("measured", "predicted") if (m, k) in wide.columns]
    wide = wide[order]
    wide.columns = [m if k == "measured" else
                    (f"{m[:-6]}_predicted (MiB)" if m.endswith(" (MiB)") else f"{m}_predicted")
                    for m, k in order]
    wide = here_first(wide.reset_index())
    return shown(wide, {"max_abs_err_torch_tp_mlp": "– (tp=1: nothing to compare)"}, 6)


@takes_rows
def stage_times(pp: pd.DataFrame) -> pd.DataFrame:
    """Per machine (this one first), schedule, p and stage (rank), at each machine's largest m:
    forward and backward ms per micro-batch and the CPU share of busy time, rank means.
    Rows recorded before 1F1B existed were GPipe's."""
    ops = with_schedule(pp[pp["metric"].isin(["forward_ms", "backward_ms",
                                              "cpu_share_of_busy"])])
    ops = ops.assign(where=where_labels(ops))
    ops = ops[ops["m"] == ops.groupby("where")["m"].transform("max")]
    keys = ["where", "schedule", "p", "m", "rank"]
    out = ops.groupby([*keys, "metric"], sort=False)["value"].mean().unstack()
    return shown(here_first(out.rename_axis(columns=None).reset_index()), digits=3)


@takes_rows
def peak_memory_table(pp: pd.DataFrame) -> pd.DataFrame:
    """The largest stage's peak GPU memory (GiB) per machine (this one first), schedule and p,
    one column per m; empty where no GPU recorded it."""
    mem = with_schedule(pp[pp["metric"] == "peak_memory"])
    if mem.empty:
        return mem
    mem = mem.assign(where=where_labels(mem))
    out = mem.groupby(["where", "schedule", "p", "m"], sort=False)["value"].max().unstack()
    out.columns = [f"m={int(m)} (GiB)" for m in out.columns]
    return shown(here_first(out.reset_index()), {c: "– (not run)" for c in out.columns}, 1)


@takes_rows
def comm_table(d3: pd.DataFrame) -> pd.DataFrame:
    """The 3D run's communication per machine (this one first), layout and dimension, rank
    means: messages and MiB sent, counted beside the layout's count, and ms inside the calls
    (measured only: no formula predicts a time)."""
    part = d3[d3["metric"].isin(["calls", "bytes_sent", "comm_ms"])]
    part = part.assign(where=where_labels(part), kind=part["source"].where(
        part["source"] == "predicted", "measured"))
    part = part.assign(value=part["value"].where(part["metric"] != "bytes_sent",
                                                 part["value"] / 2**20))
    keys = [k for k in ("where", "backend", "layout", "dim") if k in part.columns]
    wide = part.groupby([*keys, "metric", "kind"], dropna=False, sort=False)["value"].mean() \
        .unstack(["metric", "kind"]).dropna(axis=1, how="all")
    names = {"calls": "messages", "bytes_sent": "MiB sent", "comm_ms": "ms in calls"}
    order = [(m, k) for m in names for k in ("predicted", "measured")]
    wide = wide[[c for c in order if c in wide.columns]]
    wide.columns = [f"{names[m]} {k}" for m, k in wide.columns]
    return shown(here_first(wide.reset_index()), digits=3)


def pp_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Idle fraction per (p, m): wall clock, op-duration replay and the formula, rank mean."""
    idle = rows[rows["metric"].isin(["idle_fraction", "idle_fraction_replay"])].copy()
    idle["kind"] = idle["metric"].where(idle["source"] != "predicted", "formula")
    idle["kind"] = idle["kind"].map({"idle_fraction": "wall clock",
                                     "idle_fraction_replay": "op-duration replay",
                                     "formula": "(p-1)/(m+p-1)"})
    out = mean_over_ranks(idle, ["device", "p", "m", "kind", "source"])
    return out.assign(metric="idle_fraction", stages="p=" + out["p"].astype(int).astype(str))


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
        view = analytic_view(p, m, tp, d_model).set_index("metric")["value"].astype(float)
        mib = view  # analytic_view gives bytes in MiB
        return (f"p={p}, m={m}: idle {view['bubble fraction']:.1%} of each step; "
                f"tp={tp}, d_model={d_model}, 1×2048 tokens a micro-batch: "
                f"{view['all-reduces per layer per micro-batch']:.0f} all-reduces and "
                f"{mib['ring bytes sent per rank per layer per micro-batch']:.1f} MiB sent per "
                f"rank per layer per micro-batch, "
                f"{mib['ring bytes sent per rank per layer per step (m micro-batches)']:.1f} MiB "
                f"per layer per step (× m={m}); pipeline sends "
                f"{mib['p2p bytes per stage boundary per step']:.1f} MiB per stage boundary "
                "per step")

    controls = {"p": widgets.slider("stages p", 1, 64, 1, 4),
                "m": widgets.slider("micro-batches m", 1, 128, 1, 8),
                "tp": widgets.slider("tensor-parallel degree", 1, 64, 1, 8),
                "d_model": widgets.slider("d_model", 512, 16384, 512, 4096)}
    return widgets.Explorer(controls, draw, fig)


@takes_rows
def plot_bubble(rows: pd.DataFrame, title: str = "GPipe idle fraction vs micro-batches"):
    from workbook import plots

    rows = with_schedule(rows)
    s = pp_summary(rows[rows["schedule"] == "gpipe"])
    formula = s["source"] == "predicted"  # the same on every machine: one curve per p
    curve = s["stages"] + " " + s["kind"]
    s = s.assign(curve=curve.where(formula, curve + " · " + curve_label(s)))
    if "device" in s.columns:  # the formula named after one machine (this one), never split
        s["device"] = s["device"].where(~formula, pd.concat(
            [s.loc[s["source"] == "measured", "device"], s["device"]]).iloc[0])
    return plots.compare(s[~(formula & s.duplicated(["p", "m", "kind"]))], "m", group="curve",
                         title=title, log_x=True, x_title="micro-batches m",
                         y_title="idle fraction of a step", color="stages")


_TP_CURVES = {"step_ms_one_device": "whole block on one device",
              "step_ms_tensor_parallel": "tensor-parallel shard + all-reduce"}


@takes_rows
def plot_tp_time(rows: pd.DataFrame):
    """Step time of one block vs tensor-parallel degree, and the all-reduce share."""
    from workbook import plots

    t = rows[rows["metric"].isin(list(_TP_CURVES))]
    # one trace per machine, named in words (not the ledger's metric names)
    t = t.assign(metric=t["metric"].map(_TP_CURVES))
    t = t.assign(curve=t["metric"] + " · " + curve_label(t))
    t = mean_over_ranks(t, ["tp", "curve", "metric", "source"])
    return plots.compare(t, "tp", group="curve", color="metric", title="One transformer block, "
                         "forward + backward", x_title="tensor-parallel degree", y_title="ms")


# the verdict of a claim that one rank cannot test (it would hold by construction)
ONE_RANK = "not tested here (1 rank): {why}; the recorded multi-GPU rows judge it"
NO_1F1B = "not measured: these rows ran GPipe alone (recorded before 1F1B was added)"


def _pp_claims(pp: pd.DataFrame, where: str, notes: dict[int, str]) -> list[Claim]:
    pp = with_schedule(pp)
    p, m = int(pp["p"].max()), int(pp["m"].max())
    out = []
    one_stage = ONE_RANK.format(why="one stage has no pipe to fill or drain")
    for sched in ("gpipe", "1f1b"):
        if not (pp["schedule"] == sched).any():
            continue
        name = "GPipe" if sched == "gpipe" else "1F1B"
        # idle shares of a step: 2 points of idle time is agreement (p = 1 predicts exactly 0)
        out.append(Claim(f"{name} bubble (p={p}, m={m}), op-duration replay", "GPipe paper",
                         bubble_fraction(p, m), pick(pp, "idle_fraction_replay", p=p, m=m,
                                                      schedule=sched),
                         "", where, rel_tol=0.25, abs_tol=0.02))
        if sched == "gpipe":
            out.append(Claim(f"GPipe bubble (p={p}, m={m}), wall clock", "GPipe paper",
                             bubble_fraction(p, m), pick(pp, "idle_fraction", p=p, m=m,
                                                          schedule=sched),
                             "", where, rel_tol=0.25, abs_tol=0.02))
    if p == 1:  # the bubble claims (all so far) hold by construction
        notes.update({id(c): one_stage for c in out})
    if not {"gpipe", "1f1b"} <= set(pp["schedule"]):
        out.append(Claim(f"1F1B has GPipe's bubble (p={p}, m={m})", "Narayanan et al. 2021 "
                         "(PipeDream-flush)", bubble_fraction(p, m), math.nan, "", where))
        notes[id(out[-1])] = NO_1F1B
        return out
    idle = {s: pick(pp, "idle_fraction_replay", p=p, m=m, schedule=s) for s in SCHEDULES}
    stage0 = pp[pp["rank"] == 0] if "rank" in pp.columns else pp
    ratio = (pick(stage0, "peak_activation_bytes", p=p, m=m, schedule="1f1b")
             / pick(stage0, "peak_activation_bytes", p=p, m=m, schedule="gpipe"))
    same = Claim(f"1F1B has GPipe's bubble (p={p}, m={m}): predicted = GPipe's measured idle",
                 "Narayanan et al. 2021 (PipeDream-flush)", idle["gpipe"], idle["1f1b"], "",
                 where, rel_tol=0.25, abs_tol=0.03)
    if p == 1:
        notes[id(same)] = one_stage
    return out + [
        # predicted: GPipe's idle share measured in the same run; 3 points of a step (or a
        # quarter of it) is the noise of op durations on a shared CPU
        same,
        Claim(f"GPipe holds all m={m} micro-batches' activations (p={p})", "GPipe paper",
              m, pick(pp, "peak_in_flight", how="max", p=p, m=m, schedule="gpipe"),
              "micro-batches", where, rel_tol=0),
        Claim(f"1F1B holds at most p={p} micro-batches' activations (m={m})",
              "Narayanan et al. 2021", p, pick(pp, "peak_in_flight", how="max", p=p, m=m,
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
                 pick(part, "max_abs_err_grad", how="max"), "", where, abs_tol=1e-4),
           Claim(f"{layout} loss equals one process (|Δ|)", "Megatron-LM 3D", 0.0,
                 pick(part, "abs_err_loss", how="max"), "", where, abs_tol=1e-4)]
    for dim in ("tp", "pp", "dp"):
        with_dim = d3[d3[dim] > 1]
        if with_dim.empty:
            continue
        lay = with_dim["layout"].iloc[0]
        one = d3[d3["layout"] == lay]
        out.append(Claim(f"{dim.upper()} bytes sent per step, all ranks ({lay})",
                         "count from the layout", pick(one, "bytes_sent", "predicted", "sum",
                                                        dim=dim),
                         pick(one, "bytes_sent", how="sum", dim=dim), "B", where, rel_tol=0))
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
        found = machine_blocks(rows if rows is not None else pd.DataFrame())
        live.update(where for where, part in found if (part["source"] == "measured").any())
        return found

    notes: dict[int, str] = {}  # id(claim) -> the verdict it gets instead (untestable here)
    for where, part in blocks(tp):
        tp_max = int(part["tp"].max())
        tp_claims = [
            Claim("TP output equals one device (1 = within float rounding)", "Megatron-LM",
                  1.0, within_rounding(pick(part, "max_abs_err_output", tp=tp_max), part),
                  "", where, rel_tol=0),
            Claim(f"TP all-reduces per block per step (tp={tp_max})", "Megatron-LM §3",
                  pick(part, "allreduce_calls", "predicted", tp=tp_max),
                  pick(part, "allreduce_calls", tp=tp_max), "", where, rel_tol=0)]
        if tp_max == 1:  # one rank: the 'tensor-parallel' block is the one-device block
            notes.update({id(c): ONE_RANK.format(why="tp=1 is the one-device computation, "
                                                     "nothing is split or sent")
                          for c in tp_claims})
        out += tp_claims
    for where, part in blocks(pp):
        out += _pp_claims(part, where, notes)
    for where, part in blocks(ep):
        part = largest_world(part)
        cfs = sorted(set(part["capacity_factor"].dropna()))
        # at capacity factor 1 only chance overflows an expert: a share the draw can measure
        # (above 1, the binomial tail predicts ~0; below 1, the capacity forces the drops)
        cf = 1.0 if 1.0 in cfs else cfs[-1]
        # a share of assignments from one draw: half the prediction either way, or 0.001
        out.append(Claim(f"MoE dropped share at capacity factor {cf} (unbiased router)",
                         "Switch Transformer", pick(part, "dropped_fraction", "predicted",
                                                     skew=0.0, capacity_factor=cf),
                         pick(part, "dropped_fraction", skew=0.0, capacity_factor=cf),
                         "", where, rel_tol=0.5, abs_tol=0.001))
        out.append(Claim("EP output equals one device (1 = within float rounding)",
                         "GShard", 1.0, within_rounding(pick(part, "max_abs_err_vs_one_device"),
                                                        part), "", where, rel_tol=0))
        if "world" in part.columns and part["world"].max() == 1:
            notes[id(out[-1])] = ONE_RANK.format(why="no token leaves its rank")
    for where, part in blocks(d3):
        out += _composed_claims(part, where)
    wheres = list(dict.fromkeys(c.where for c in out))  # this machine's blocks first
    order = [w for w in wheres if w in live] + [w for w in wheres if w not in live]
    out = sorted(out, key=lambda c: order.index(c.where))
    table = claims_table(out)
    for i, claim in enumerate(out):
        if id(claim) in notes:  # a number that cannot fail (or none) is no verdict
            table.loc[table.index[i], ["measured", "verdict"]] = [math.nan, notes[id(claim)]]
    return table


def _schedule_numbers(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`schedule_summary`'s numbers, NaN where a machine has none."""
    pp = with_schedule(rows[rows["status"] == "ok"] if "status" in rows.columns else rows)
    pp = pp.assign(where=where_labels(pp), src=pp["source"].where(
        pp["source"] == "predicted", "measured"))
    keys = ["where", "p", "schedule", "m"]

    def agg(metric: str, src: str, how: str, stage0: bool = False) -> pd.Series:
        part = pp[(pp["metric"] == metric) & (pp["src"] == src)]
        if stage0 and "rank" in part.columns:
            part = part[part["rank"] == 0]
        return part.groupby(keys, sort=False)["value"].agg(how)

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
    return here_first(pd.DataFrame(cols).reset_index())


_NOT_COUNTED = "– (recorded before it was counted)"


@takes_rows
def schedule_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (where, p, schedule, m): idle share (op-duration replay, rank mean) beside the
    formula; micro-batches held (most over the stages) and stage 0's activation MiB, measured
    beside the schedule's count (and, on a GPU, the allocator's peak above the step's start).
    "–" with its reason where a machine's rows have no such number."""
    reasons = {c: _NOT_COUNTED for c in ("held_measured", "held_predicted",
                                          "stage0_MiB_measured", "stage0_MiB_predicted")}
    reasons["stage0_alloc_GiB_measured"] = "– (no GPU allocator, or recorded before it was " \
        "counted)"
    return shown(_schedule_numbers(rows), reasons)


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

    pp = with_schedule(rows)
    pp = pp[pp["metric"].isin(["idle_fraction_replay", "idle_fraction"])]
    pp = pp[(pp["metric"] == "idle_fraction_replay") | (pp["source"] == "predicted")]
    p = _main_p(pp)
    pp = pp[pp["p"] == p].assign(where=curve_label(pp[pp["p"] == p]))
    first = "here" if (pp["where"] == "here").any() else pp["where"].min()
    formula = pp[(pp["source"] == "predicted") & (pp["where"] == first)]
    pp = pd.concat([pp[pp["source"] != "predicted"].assign(
        curve=lambda t: t["schedule"] + " · " + t["where"]),
        formula.assign(curve="(p-1)/(m+p-1)", schedule="(p-1)/(m+p-1)")])
    summary = mean_over_ranks(pp, ["curve", "schedule", "p", "m", "source"])
    title = subtitled(f"GPipe and 1F1B idle share, p={p}", summary, _ONE_STAGE * (p == 1))
    fig = plots.compare(summary, "m", group="curve", log_x=True, color="schedule",
                        title=title, x_title="micro-batches m", y_title="idle fraction of a step")
    return plots.on_top(fig, "1f1b")  # same bubble as GPipe: drawn on it, it vanished


# what a one-stage figure is: the bubble of one stage is 0 whatever the schedule
_ONE_STAGE = "one stage: no pipe to fill or drain, every idle share is 0"


@takes_rows
def plot_activations(rows: pd.DataFrame):
    """Stage 0's activation memory vs m: GPipe grows with m, 1F1B stops at p micro-batches."""
    from workbook import plots

    pp = with_schedule(rows)
    pp = pp[pp["metric"] == "peak_activation_bytes"]
    pp = pp[pp["rank"] == 0] if "rank" in pp.columns else pp
    p = _main_p(pp)
    pp = pp[pp["p"] == p]
    pp = pp.assign(value=pp["value"] / 2**20, unit="MiB",
                   curve=pp["schedule"] + " · " + curve_label(pp))
    summary = mean_over_ranks(pp, ["curve", "schedule", "p", "m", "source"])
    return plots.compare(summary, "m", group="curve", log_x=True, color="schedule",
                         title=subtitled(f"Activations held by stage 0, p={p}", summary),
                         x_title="micro-batches m", y_title="peak activation MiB")


@takes_rows
def schedules_caption(rows: pd.DataFrame) -> str:
    """The 1F1B paragraph's numbers, read from the rows (Markdown), and which machines ran
    1F1B with more than one stage (rows recorded before 1F1B existed ran GPipe alone)."""
    table = _schedule_numbers(rows)
    if table.empty or "held_measured" not in table.columns:
        return "*No GPipe/1F1B rows to compare yet.*"
    here = table[table["where"] == table["where"].iloc[0]]  # this machine's, else the first
    here = here[here["p"] == here["p"].max()]
    m = int(here["m"].max())
    row = here[here["m"] == m].set_index("schedule")
    if not {"gpipe", "1f1b"} <= set(row.index):
        return "*No GPipe/1F1B rows to compare yet.*"
    where, p = machine_blocks(rows)[0][0], int(here["p"].max())
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
            f"({row.loc['1f1b', 'stage0_MiB_measured']:.1f} MiB).{alone}"
            + _multi_stage_1f1b(table))


def _multi_stage_1f1b(table: pd.DataFrame) -> str:
    """Where 1F1B ran with p > 1, or that no machine of these rows did."""
    multi = table[table["p"] > 1]
    ran = multi[multi["schedule"] == "1f1b"]
    if len(ran):
        return " 1F1B with more than one stage: " + "; ".join(
            f"{w} (p={', '.join(str(int(p)) for p in sorted(set(part['p'])))})"
            for w, part in ran.groupby("where", sort=False)) + "."
    if multi.empty:
        return " No machine of these rows ran more than one stage."
    gpipe = "; ".join(f"{w} (p={', '.join(str(int(p)) for p in sorted(set(part['p'])))})"
                      for w, part in multi.groupby("where", sort=False))
    return (f" 1F1B with more than one stage is measured nowhere in these rows: the rows with "
            f"more stages, {gpipe}, ran GPipe alone (recorded before 1F1B was added).")


@takes_rows
def composed_caption(d3: pd.DataFrame) -> str:
    """The 3D paragraph's numbers, read from the rows (Markdown)."""
    blocks = machine_blocks(d3)
    if not blocks:
        return "*No DP × TP × PP rows yet.*"
    where, part = blocks[0]
    layouts = ", ".join(dict.fromkeys(part["layout"]))
    backend = ", ".join(sorted(set(part["backend"].dropna()))) if "backend" in part else ""
    return (f"*{where}:* {int(part['world'].max()) if 'world' in part else '?'} ranks "
            f"({backend}), layouts {layouts}; largest gradient difference from one process "
            f"{pick(part, 'max_abs_err_grad', how='max'):.1e}, loss "
            f"{pick(part, 'abs_err_loss', how='max'):.1e}.")

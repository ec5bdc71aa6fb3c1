"""What notebook 07 shows: rows live or recorded, the kernels' source, the size explorer,
tables and the closing claims. plotly and ipywidgets are imported inside the view functions
(a GPU machine may have neither)."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pandas as pd
import torch

from workbook import registry, results
from workbook.attention.io_model import (
    BACKWARD_FACTOR,
    BACKWARD_FACTOR_STORED,
    RECOMPUTES,
    flops,
    io_bytes,
    s_matrix_vs_memory,
)
from workbook.claims import Claim, claims_table
from workbook.config import WorkbookError, check_choice, check_flag, takes_rows
from workbook.hardware import datasheet, detect

__all__ = ["PAPER_FIG2", "PAPER_FIG2_SHAPE", "notebook_rows", "KERNELS", "kernel_source",
           "recorded_device", "size_explorer", "exactness_table", "targets", "gpt2_table",
           "gpt2_limits", "claims", "timing_caption", "traffic_caption", "speedup_caption",
           "gpt2_caption", "machines_caption", "flops_note"]

# FlashAttention (Dao et al. 2022), Fig. 2 left: GPT-2 medium attention, fwd+bwd, on an A100
PAPER_FIG2: dict[str, dict[str, float]] = {
    "standard": {"hbm_gb": 40.3, "runtime_ms": 41.7, "gflops": 66.6},
    "flash": {"hbm_gb": 4.4, "runtime_ms": 7.3, "gflops": 75.2},
}
PAPER_FIG2_SHAPE: dict[str, int] = {"batch": 64, "n_heads": 16, "seq_len": 1024, "head_dim": 64}
HOPPER = r"H100|H200|H800|H20\b|GH200"   # GPU names of the Hopper generation
LECTURE_SPEEDUP = {512: 1.7, 2048: 5.1, 8192: 5.4}   # the lecture's table: FA's gain by N


def notebook_rows(name: str, *, live_on_cpu: bool) -> pd.DataFrame:
    """What 07 shows, by the workbook's one rule (``registry.with_references``): a GPU runs the
    full preset live and its rows are the numbers, the recorded GPUs beside them; a CPU shows
    the recorded GPU rows, beside a live small run only where that means something on a CPU
    (``live_on_cpu``)."""
    registry.get(name)  # an unknown name: one line listing the experiments
    check_flag("live_on_cpu", live_on_cpu)
    if torch.cuda.is_available():
        return registry.with_references(name, registry.live_or_recorded(name))
    recorded = results.load(name)
    if live_on_cpu or recorded.empty:
        if recorded.empty:
            print(f"{name}: no recorded GPU rows yet; running the small preset on this CPU.")
        live = registry.live_or_recorded(name, "small")
        if "device" not in live.columns:  # live rows carry no provenance until recorded
            live = live.assign(device=detect().name)
        return registry.with_references(name, live)
    print(f"{name}: no GPU here; showing the rows recorded on a GPU.")
    return recorded


KERNELS = {"forward": ("flash_triton.py", ("_tile_loop", "_attn_fwd")),
           "backward": ("flash_triton_backward.py", ("_attn_bwd_delta", "_dkdv_tiles",
                                                     "_attn_bwd_dkdv", "_dq_tiles",
                                                     "_attn_bwd_dq")),
           # the same two kernels with their tiles fetched by TMA (Hopper, whole 128-row tiles)
           "backward_tma": ("flash_triton_backward.py", ("_dkdv_tiles_tma", "_attn_bwd_dkdv_tma",
                                                         "_dq_tiles_tma", "_attn_bwd_dq_tma")),
           # FlashAttention-3's arrangement in Gluon: the producer warp and a consumer warpgroup
           "forward_fa3": ("flash_gluon.py", ("_producer", "_consumer"))}


def kernel_source(part: str = "forward") -> str:
    """The Triton kernels' source text, ``forward``, ``backward``, ``backward_tma`` or
    ``forward_fa3`` (the Gluon forward's two roles); readable without Triton installed."""
    check_choice("part", part, tuple(KERNELS))
    filename, names = KERNELS[part]
    text = Path(__file__).with_name(filename).read_text()
    lines, found = text.splitlines(), {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef) and node.name in names:
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            found[node.name] = "\n".join(line[4:] for line in lines[start:node.end_lineno])
    if len(found) != len(names):
        raise WorkbookError(f"the Triton {part} kernels were not found in "
                            f"workbook/attention/{filename}")
    return "\n\n\n".join(found[name] for name in names)


def recorded_device(default: str = "H100") -> str:
    """This GPU's name, else the GPU of the latest attention rows, else ``default``."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return results.latest_device(results.load("attention_timing"), default)


def size_explorer(device_name: str | None = None):
    """Sliders over the IO model: HBM bytes vs seq_len (the chosen one dotted); S vs memory."""
    from workbook import plots, widgets

    device_name = device_name or recorded_device()
    seq_lens = [2**k for k in range(8, 17)]
    fig = plots.figure(f"Attention forward HBM traffic by the IO model ({device_name})",
                       "seq_len", "GB moved (bf16)", log_x=True, log_y=True)
    names = {"vanilla": "vanilla: Θ(Nd + N²)", "flash_no_l2": "flash, no L2: Θ(N²d²/M)",
             "minimum": "minimum: Q, K, V in, O out"}
    for key, name in names.items():  # vanilla keeps its colour from the measured plots
        fig.add_scatter(name=name, mode="lines", line={"color": plots.color_for(key)})

    def draw(fig, seq_len, head_dim, batch, tile):
        facts = s_matrix_vs_memory(seq_len, head_dim, batch, 16, tile,
                                   device_name=device_name)
        for trace, algorithm in zip(fig.data, names, strict=True):
            trace.x, trace.y = seq_lens, [io_bytes(algorithm, n, head_dim, batch=batch,
                                                   n_heads=16, block_m=tile) / 1e9
                                          for n in seq_lens]
        fig.layout.shapes = [{"type": "line", "x0": seq_len, "x1": seq_len, "y0": 0, "y1": 1,
                              "yref": "paper", "line": {"dash": "dot", "color": "#888"}}]
        fig.layout.annotations = [dict(x=math.log10(seq_len), y=1, yref="paper", xshift=4,
                                       text=f"seq_len = {seq_len:,}", xanchor="left",
                                       showarrow=False)]
        fits = "fits" if facts["tile_kib"] <= facts["sram_per_sm_kib"] else "does NOT fit"
        return (f"S for batch {batch} × 16 heads at N={seq_len}: {facts['s_mib']:,.0f} MiB = "
                f"{facts['s_over_sram']:,.0f}× all SRAM, {facts['s_over_hbm']:.1%} of HBM. "
                f"One tile (Q, K, V {tile}×{head_dim} + S {tile}×{tile} fp32) is "
                f"{facts['tile_kib']:.0f} KiB: it {fits} in one SM's "
                f"{facts['sram_per_sm_kib']:.0f} KiB.")

    return widgets.Explorer({
        "seq_len": widgets.dropdown("seq_len", seq_lens, 4096),
        "head_dim": widgets.dropdown("head_dim", [64, 128, 256], 128),
        "batch": widgets.slider("batch", 1, 64, 1, 4),
        "tile": widgets.dropdown("tile rows", [16, 32, 64, 128, 256], 128)}, draw, fig)


@takes_rows
def exactness_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Relative error per variant (columns), of the output and of the gradients, per dtype with
    its band, per device, each device labelled where it was measured ('this machine (…)', or
    'recorded on …, date'). A variant that has no number for a dtype reads "–" with the short
    reason its rows give (the caption lists the full ones)."""
    ok = _exactness_rows(rows)
    index = ["where", "dtype", "band", "of"]
    table = ok.pivot_table(index=index, columns="variant", values="value", aggfunc="max",
                           sort=False).map(lambda x: f"{x:.1e}" if x == x else None)
    failed = _exactness_rows(rows, failed=True)
    if len(failed):
        why = failed.assign(why="– (" + failed["error"].map(_short_reason) + ")").pivot_table(
            index=index, columns="variant", values="why", aggfunc="first", sort=False)
        table = table.combine_first(why) if len(table) else why
        table = table.reindex(index=list(dict.fromkeys([*ok.set_index(index).index,
                                                        *failed.set_index(index).index])),
                              columns=list(dict.fromkeys([*ok["variant"], *failed["variant"]])))
        table.index.names = index
    table = table.map(lambda x: x if isinstance(x, str) else "– (no row)")
    return table.rename_axis(columns="variant")


_ERROR_OF = {"rel_error": "output", "rel_error_grad": "gradients"}


def _short_reason(error: object) -> str:
    """A table cell's reason, from a row's one-line error: 'not installed', 'no float32
    kernel', else the error's first clause."""
    text = str(error) if error == error else "no number"
    for key in ("not installed", "no float32 kernel", "no float16 kernel", "no bfloat16 kernel"):
        if key in text:
            return key
    return text.split(";")[0][:40]


def _exactness_rows(rows: pd.DataFrame, failed: bool = False) -> pd.DataFrame:
    """The ok error rows (``failed``: those with no number, and why), with ``of`` (output or
    gradients) and ``where`` (per device: :func:`results.where_label`, this machine's rows first
    as they come)."""
    good = rows["status"] == "ok"
    ok = rows[(~good if failed else good) & rows["metric"].isin(list(_ERROR_OF))]
    ok = ok.assign(of=ok["metric"].map(_ERROR_OF))
    if failed and "error" not in ok.columns:
        ok = ok.assign(error=ok["status"])
    if "device" not in ok.columns or ok.empty:
        return ok.assign(where=results.where_label(ok) if len(ok) else "this machine")
    labels = {d: results.where_label(part) for d, part in rows[rows["metric"].isin(
        list(_ERROR_OF))].groupby("device", sort=False)}
    return ok.assign(where=ok["device"].map(labels))


@takes_rows
def exactness_caption(rows: pd.DataFrame) -> str:
    """Markdown: per device (this machine, or recorded on which GPU and date), how many of the
    errors (output and gradients) lie inside their dtype's band, and which do not."""
    ok = _exactness_rows(rows)
    if ok.empty:
        return "*No exactness rows yet.*"
    outside = ok[ok["value"] > ok["band"]]
    counts = [f"{where}: {(part['value'] <= part['band']).sum()} of {len(part)}"
              for where, part in ok.groupby("where", sort=False)]
    text = ("Errors (output and gradients, every variant and dtype) inside their dtype's band, "
            "per device: " + "; ".join(counts))
    if outside.empty:
        return text + "." + _no_number_note(rows)
    worst = "; ".join(f"{r.variant} {r.dtype} {r.of} {r.value:.1e} > {r.band:.0e} ({r.where})"
                      for r in outside.itertuples())
    return f"{text}. Outside: {worst}." + _no_number_note(rows)


def _no_number_note(rows: pd.DataFrame) -> str:
    """' A dash in the table: <variant> (<dtypes>): <the rows' reason>; …' (Markdown)."""
    failed = _exactness_rows(rows, failed=True)
    if failed.empty:
        return ""
    parts = [f"{variant} ({', '.join(dict.fromkeys(part['dtype']))}): {error}"
             for (variant, error), part in failed.groupby(["variant", "error"], sort=False)]
    return " A dash in the table has no number, for the reason its rows give: " + \
        "; ".join(parts) + "."


def _value(rows: pd.DataFrame, **where) -> float:
    hit = rows[rows["status"] == "ok"]
    for key, value in where.items():
        hit = hit[hit[key] == value]
    return float(hit["value"].iloc[0]) if len(hit) else math.nan


def _met(value: float, ok: bool) -> str:
    return "not measured" if value != value else "yes" if ok else "NO"


def _kernel_targets(timing: pd.DataFrame) -> list[tuple[str, str, float, str]]:
    """Issue 22's targets (d 128, non-causal): the forward ≥ 0.9× cuDNN at N ≥ 4096, and
    forward + backward ≥ 1.0× FlashAttention-2 and ≥ 0.8× cuDNN at N = 16384; each call
    timed alone (``throughput``) and, where recorded, the GPU's own time (``gpu_throughput``,
    calls queued)."""
    wanted = [("fwd", 4096, "sdpa_cudnn", 0.9), ("fwd", 16384, "sdpa_cudnn", 0.9),
              ("fwd+bwd", 16384, "sdpa_flash", 1.0), ("fwd+bwd", 16384, "sdpa_cudnn", 0.8)]
    rows = []
    for (mode, n, ref, bound), (metric, how) in itertools.product(
            wanted, (("throughput", "each call"), ("gpu_throughput", "GPU time, queued"))):
        sel = {"seq_len": n, "head_dim": 128, "causal": False, "mode": mode, "metric": metric}
        ratio = _value(timing, variant="triton", **sel) / _value(timing, variant=ref, **sel)
        if metric == "gpu_throughput" and ratio != ratio:
            continue   # rows recorded before the queued time existed
        rows.append((f"Triton / {ref} {mode} TFLOP/s (N={n}, d=128; {how})", f"≥ {bound}",
                     ratio, _met(ratio, ratio >= bound)))
    return rows


@takes_rows
def targets(traffic: pd.DataFrame, timing: pd.DataFrame, gpt2: pd.DataFrame) -> pd.DataFrame:
    """The FlashAttention issues' targets, computed from one machine's rows
    (``registry.main_rows``)."""
    traffic, timing, gpt2 = (registry.main_rows(r) for r in (traffic, timing, gpt2))
    at = {"seq_len": 4096, "head_dim": 128, "mode": "fwd"}
    minimum = _value(traffic, variant="model: minimum", metric="hbm_bytes", **at)
    reads = _value(traffic, variant="triton", metric="hbm_read", **at)
    total = _value(traffic, variant="triton", metric="hbm_bytes", **at)
    rows = [("Triton fwd HBM bytes / minimum (N=4096, d=128, bf16)", "≤ 1.15", total / minimum,
             _met(total, total / minimum <= 1.15)),
            ("  of which reads / minimum reads (Q, K, V once)", "≈ 1", reads / (minimum * 3 / 4),
             _met(reads, reads / (minimum * 3 / 4) <= 1.15))]
    for head_dim, causal in itertools.product((64, 128), (False, True)):
        sel = {"seq_len": 4096, "head_dim": head_dim, "causal": causal, "mode": "fwd",
               "metric": "throughput"}
        ratio = _value(timing, variant="triton", **sel) / _value(timing, variant="sdpa_flash",
                                                                   **sel)
        rows.append((f"Triton / SDPA FA2 fwd TFLOP/s (N=4096, d={head_dim}, causal={causal})",
                     "≥ 0.8", ratio, _met(ratio, ratio >= 0.8)))
    rows += _kernel_targets(timing)
    both = {"seq_len": 4096, "head_dim": 128, "mode": "fwd+bwd", "metric": "hbm_bytes"}
    ratio = _value(traffic, variant="triton", **both) / _value(traffic, variant="sdpa_flash",
                                                               **both)
    rows.append(("Triton / SDPA FA2 fwd+bwd HBM bytes (N=4096, d=128)", "≤ 1.3", ratio,
                 _met(ratio, ratio <= 1.3)))
    ratio = (_value(gpt2, variant="vanilla", metric="hbm_bytes")
             / _value(gpt2, variant="sdpa_flash", metric="hbm_bytes"))
    paper = PAPER_FIG2["standard"]["hbm_gb"] / PAPER_FIG2["flash"]["hbm_gb"]
    rows.append(("GPT-2 medium fwd+bwd HBM: vanilla / FlashAttention", f"paper {paper:.1f}×",
                 ratio, "reported" if ratio == ratio else "not measured"))
    frame = pd.DataFrame(rows, columns=["target", "wanted", "measured", "met"])
    frame["measured"] = frame["measured"].round(3)
    return frame


@takes_rows
def claims(traffic: pd.DataFrame, timing: pd.DataFrame, gpt2: pd.DataFrame,
           recompute: pd.DataFrame) -> pd.DataFrame:
    """The lecture's claims about FlashAttention, each against one machine's measurement:
    this machine's live rows where it has them, else the latest recording
    (``registry.main_rows``), never a mix of devices."""
    traffic, timing, gpt2, recompute = (registry.main_rows(r)
                                        for r in (traffic, timing, gpt2, recompute))
    std, fa = PAPER_FIG2["standard"], PAPER_FIG2["flash"]
    gpt = {m: _value(gpt2, variant="vanilla", metric=m) / _value(gpt2, variant="sdpa_flash",
                                                                 metric=m)
           for m in ("hbm_bytes", "time", "extra_peak_memory")}    # vanilla over FA2
    where = results.where_label(gpt2)

    def t(variant: str, n: int) -> float:
        return _value(timing, variant=variant, seq_len=n, head_dim=128, mode="fwd+bwd",
                      causal=False, metric="time")

    def mem(variant: str, n: int) -> float:
        return _value(recompute, variant=variant, seq_len=n, metric="extra_peak_memory")

    n_hi = max(recompute.loc[recompute["status"] == "ok", "seq_len"], default=0)
    flash_growth = mem("sdpa_flash", n_hi) / mem("sdpa_flash", n_hi // 2)
    # the lecture's FA generations at the longest N all three were timed; cuDNN stands in for FA3
    n_gen = max([n for n in timing["seq_len"].unique()
                 if all(t(v, n) == t(v, n) for v in ("vanilla", "sdpa_flash", "sdpa_cudnn"))],
                default=0)
    at = f"fwd+bwd, N = {n_gen:,}"
    fa3 = t("sdpa_cudnn", n_gen) if timing.get("device", pd.Series(dtype=str)).astype(
        str).str.contains(HOPPER).any() else math.nan    # FA3's scheduling is Hopper's only
    return claims_table([
        Claim("HBM reads+writes ~10× fewer (GPT-2 medium, fwd+bwd)", "paper Fig. 2 / lecture",
              std["hbm_gb"] / fa["hbm_gb"], gpt["hbm_bytes"], "×", where),
        Claim("runtime ~5× faster (GPT-2 medium, fwd+bwd)", "paper Fig. 2 / lecture",
              std["runtime_ms"] / fa["runtime_ms"], gpt["time"], "×", where),
        Claim("extra memory ~4.7× less (GPT-2 medium, fwd+bwd; 4.2 vs 0.9 GB)", "lecture table",
              4.2 / 0.9, gpt["extra_peak_memory"], "×", where),
        # no "more FLOPs" row: nothing here measures FLOPs (flops_note prints the two counts)
        Claim("extra memory O(N): doubling N doubles it", "lecture", 2.0, flash_growth, "×",
              where),
        *(Claim(f"longer sequences gain more: speedup at N={n}", "lecture table", x,
                t("vanilla", n) / t("sdpa_flash", n), "×", where, rel_tol=0.25)
          for n, x in LECTURE_SPEEDUP.items()),
        Claim(f"FlashAttention-2 ~10× standard attention ({at})", "lecture's FA chart", 10.0,
              t("vanilla", n_gen) / t("sdpa_flash", n_gen), "×", where),
        Claim(f"FlashAttention-3 a further 1.5-2× over FlashAttention-2 ({at}; cuDNN's "
              "Hopper kernel for FA3)", "lecture", 1.75,
              t("sdpa_flash", n_gen) / fa3, "×", where, rel_tol=0.25 / 1.75),
        Claim(f"FlashAttention-3 ~20× standard attention ({at}; cuDNN for FA3)",
              "lecture's FA chart", 20.0, t("vanilla", n_gen) / fa3, "×", where),
    ])


@takes_rows
def gpt2_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per machine and variant: measured HBM GB, ms, model GFLOPs beside the paper's
    A100 numbers. This machine's rows first (else the latest recording), the other recorded
    machines beside them, each row's ``where`` saying which."""
    frames = []
    for where, part in registry.machine_blocks(rows[rows["status"] == "ok"]):
        wide = part.pivot_table(index="variant", columns="metric", values="value",
                                aggfunc="first", sort=False)
        wide = wide.reindex(columns=["hbm_bytes", "time", "flops", "extra_peak_memory"])
        wide.columns = ["HBM GB", "runtime ms", "GFLOPs (model)", "extra memory GB"]
        frames.append(wide.reset_index().assign(where=where, device=str(
            part["device"].iloc[0]) if "device" in part.columns else ""))
    if not frames:
        return pd.DataFrame(columns=["where", "variant"])
    table = pd.concat(frames, ignore_index=True)
    # The paper's FlashAttention is fused forward and backward: so are the SDPA kernels and,
    # since 7121e58, the workbook's triton variant (rows recorded before timed a PyTorch backward).
    paper = {"vanilla": PAPER_FIG2["standard"], "sdpa_math": PAPER_FIG2["standard"],
             **{v: PAPER_FIG2["flash"] for v in ("sdpa_flash", "sdpa_efficient", "sdpa_cudnn",
                                                  "triton")}}
    table["paper HBM GB (A100)"] = [paper.get(v, {}).get("hbm_gb", math.nan)
                                    for v in table["variant"]]
    table["paper ms (A100)"] = [paper.get(v, {}).get("runtime_ms", math.nan)
                                for v in table["variant"]]
    return table[["where", *[c for c in table.columns if c not in ("where", "device")]]]


@takes_rows
def gpt2_limits(rows: pd.DataFrame) -> pd.DataFrame:
    """Which limit each variant of the GPT-2 table runs into on the GPU that measured it (each
    machine's own datasheet): its achieved HBM bandwidth (bytes moved / time) and its achieved
    matmul rate (model FLOPs / time), each as a share of that GPU's peak (fp16, dense)."""
    out = []
    for where, part in registry.machine_blocks(rows[rows["status"] == "ok"]):
        table = gpt2_table(part)
        device = str(part["device"].dropna().iloc[0]) if "device" in part and \
            part["device"].notna().any() else ""
        peaks = datasheet(device) if device else None
        seconds = table["runtime ms"] / 1e3
        one = pd.DataFrame({"where": where, "variant": table["variant"],
                            "HBM GB/s": table["HBM GB"] / seconds,
                            "TFLOP/s": table["GFLOPs (model)"] / 1e3 / seconds})
        if peaks is not None:
            one["share of HBM peak"] = one["HBM GB/s"] / peaks.hbm_gb_s
            one["share of fp16 peak"] = one["TFLOP/s"] / peaks.tflops["fp16"]
        out.append(one.assign(datasheet=peaks.name if peaks is not None else "– (no entry)"))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["where"])


@takes_rows
def timing_caption(timing: pd.DataFrame) -> str:
    """Markdown: at the longest sequence timed, each variant's TFLOP/s (non-causal,
    head_dim 128) forward and forward + backward, and the Triton kernel against SDPA's
    FlashAttention-2 and cuDNN, on one machine (``registry.main_rows``), said where; then, per
    N, vanilla's forward + backward beside each fused kernel's."""
    rows = registry.main_rows(timing)
    kept = rows[(rows["status"] == "ok") & (rows["head_dim"] == 128)
                & ~rows["causal"].astype(bool)]
    ok = kept[kept["metric"] == "throughput"]
    if ok.empty:
        return "*No timing rows yet.*"
    n = int(ok["seq_len"].max())
    lines = [f"At N = {n:,} ({results.where_label(rows)}), TFLOP/s by FlashAttention-2's FLOP "
             "count (the same for every variant), each call timed alone:"]

    def at_n(metric: str, mode: str) -> pd.Series:
        part = kept[(kept["metric"] == metric) & (kept["mode"] == mode)
                    & (kept["seq_len"] == n)]
        return part.groupby("variant")["value"].max()

    def ratios(at: pd.Series) -> list[str]:
        return [f"{at['triton'] / at[ref]:.2f}× {ref}" for ref in ("sdpa_flash", "sdpa_cudnn")
                if "triton" in at and ref in at]

    for mode in ("fwd", "fwd+bwd"):
        at = at_n("throughput", mode)
        if at.empty:
            continue
        ranked = ", ".join(f"{v} {t:,.0f}" for v, t in at.sort_values(ascending=False).items())
        line = f"* {mode}: {ranked}" + (f"; triton is {', '.join(ratios(at))}."
                                        if ratios(at) else ".")
        queued = ratios(at_n("gpu_throughput", mode))
        if queued:   # the host's launch hidden under the previous call: the kernels alone
            line += f" The GPU's own time (calls queued): triton is {', '.join(queued)}."
        lines.append(line)
    return "\n".join(lines + _vanilla_lines(ok))


_FUSED = ("sdpa_cudnn", "triton", "sdpa_flash", "sdpa_efficient", "flash_attn")


# A ratio of two medians within this of 1 is "level": the rows keep no spread over repeats, and
# back-to-back sweeps on one GPU moved single timings by a few per cent
LEVEL = 0.05


def _vanilla_lines(ok: pd.DataFrame) -> list[str]:
    """'* vanilla, fwd+bwd, per N' and a line per N: vanilla's TFLOP/s and, as a multiple of
    it, each fused kernel's, split into those faster than vanilla, level with it (within
    ±``LEVEL``) and slower."""
    both = ok[ok["mode"] == "fwd+bwd"].groupby(["seq_len", "variant"])["value"].max()
    both = both.unstack()
    if "vanilla" not in both:
        return []
    parts = []
    for n, at in both.dropna(subset=["vanilla"]).iterrows():
        ratio = {v: at[v] / at["vanilla"] for v in _FUSED if v in at and at[v] == at[v]}
        split = {"faster": [v for v, r in ratio.items() if r > 1 + LEVEL],
                 f"level (within ±{LEVEL:.0%})": [v for v, r in ratio.items()
                                                  if abs(r - 1) <= LEVEL],
                 "slower": [v for v, r in ratio.items() if r < 1 - LEVEL]}
        said = "; ".join(f"{k}: " + ", ".join(f"{v} {ratio[v]:.2f}×" for v in vs)
                         for k, vs in split.items() if vs)
        parts.append(f"N = {int(n):,}: vanilla {at['vanilla']:,.0f}; {said or 'no fused kernel'}")
    head = ("* vanilla, fwd+bwd, per N (its TFLOP/s; each fused kernel's as a multiple of it, "
            f"level where within ±{LEVEL:.0%} of it, a tolerance for the timing noise):")
    return [head] + [f"  * {p}" for p in parts] if parts else []


@takes_rows
def traffic_caption(traffic: pd.DataFrame) -> str:
    """Markdown: per sequence length, the Triton forward's HBM reads over Q + K + V and its
    writes over O (3/4 and 1/4 of the IO minimum), on one machine (``registry.main_rows``)."""
    rows = registry.main_rows(traffic)
    fwd = rows[rows["mode"] == "fwd"] if "mode" in rows else rows.iloc[0:0]
    parts = []
    for n in sorted(fwd.loc[fwd["variant"] == "triton", "seq_len"].unique()):
        minimum = _value(fwd, variant="model: minimum", metric="hbm_bytes", seq_len=n)
        read = _value(fwd, variant="triton", metric="hbm_read", seq_len=n) / (minimum * 3 / 4)
        write = _value(fwd, variant="triton", metric="hbm_write", seq_len=n) / (minimum / 4)
        if read == read and write == write:
            parts.append(f"N = {int(n):,}: read {read:.2f}×, wrote {write:.2f}×")
    if not parts:
        return "*No Triton forward traffic rows yet.*"
    return (f"Triton forward ({results.where_label(rows)}), HBM reads over Q + K + V and writes "
            f"over O: " + "; ".join(parts) + "." + _kernel_counts(rows))


def _kernel_counts(rows: pd.DataFrame) -> str:
    """' Kernels launched at the shortest N: forward … ; forward + backward …' from the rows."""
    if "kernels" not in rows.columns:
        return ""
    ok = rows[(rows["status"] == "ok") & rows["kernels"].notna()]
    if ok.empty:
        return ""
    n = ok["seq_len"].min()
    parts = []
    for mode, name in (("fwd", "forward"), ("fwd+bwd", "forward + backward")):
        counts = ok[(ok["seq_len"] == n) & (ok["mode"] == mode)].groupby("variant")["kernels"]
        if len(counts):
            parts.append(f"{name}: " + ", ".join(f"{v} {int(k)}"
                                                 for v, k in counts.max().items()))
    return f" Kernels launched at N = {int(n):,}, " + "; ".join(parts) + "."


@takes_rows
def speedup_caption(timing: pd.DataFrame) -> str:
    """Markdown: forward + backward time of vanilla over sdpa_flash per sequence length
    (head_dim 128, non-causal), the lecture's "longer sequences gain more", on one machine."""
    rows = registry.main_rows(timing)
    sel = {"head_dim": 128, "mode": "fwd+bwd", "causal": False, "metric": "time"}
    ratios = {}
    for n in sorted(rows.loc[rows["variant"] == "vanilla", "seq_len"].unique()):
        ratio = (_value(rows, variant="vanilla", seq_len=n, **sel)
                 / _value(rows, variant="sdpa_flash", seq_len=n, **sel))
        if ratio == ratio:
            ratios[int(n)] = ratio
    if not ratios:
        return "*No vanilla and sdpa_flash timings to compare yet.*"
    best = max(ratios, key=ratios.get)
    return (f"Forward + backward time, vanilla / sdpa_flash ({results.where_label(rows)}): "
            + ", ".join(f"N = {n:,}: {r:.2f}×" for n, r in ratios.items())
            + f". The largest gain is at N = {best:,}, "
            + ("the longest N timed." if best == max(ratios) else "not at the longest N timed."))


@takes_rows
def gpt2_caption(gpt2: pd.DataFrame) -> str:
    """Markdown: the GPT-2 medium rows as ratios to sdpa_flash (FlashAttention-2), for vanilla
    (the paper's comparison) and the workbook's triton: HBM bytes, time, extra memory."""
    rows = registry.main_rows(gpt2)
    names = {"hbm_bytes": "HBM bytes", "time": "time", "extra_peak_memory": "extra memory"}
    lines = []
    for variant in ("vanilla", "triton"):
        got = [(name, _value(rows, variant=variant, metric=m)
                / _value(rows, variant="sdpa_flash", metric=m)) for m, name in names.items()]
        got = [f"{name} {r:.2f}×" for name, r in got if r == r]
        if got:
            lines.append(f"* {variant} / sdpa_flash: " + ", ".join(got))
    if not lines:
        return "*No GPT-2 medium rows beside sdpa_flash yet.*"
    return (f"GPT-2 medium, forward + backward ({results.where_label(rows)}):\n"
            + "\n".join(lines) + "\n\n" + flops_note())


@takes_rows
def machines_caption(gpt2: pd.DataFrame) -> str:
    """Markdown: vanilla's and sdpa_flash's GPT-2 medium time on each other recorded machine
    beside the judged one's (``registry.main_rows``), with the HBM bandwidth each reached
    (bytes counted / time) and the datasheets' peaks: how much of a newer GPU's bandwidth a
    variant turns into speed."""
    blocks = registry.machine_blocks(gpt2[gpt2["status"] == "ok"]) if len(gpt2) else []
    if len(blocks) < 2:
        return "*GPT-2 medium rows of one machine only: no other GPU to set beside it.*"
    (here, main), lines = blocks[0], []
    for where, part in blocks[1:]:
        for variant in ("vanilla", "sdpa_flash"):
            (ms_a, bw_a, peak_a), (ms_b, bw_b, peak_b) = (_speed(p, variant)
                                                          for p in (part, main))
            if ms_a != ms_a or ms_b != ms_b:
                continue
            peaks = (f"; the datasheets' peaks {peak_a:,.0f} → {peak_b:,.0f} GB/s "
                     f"({peak_b / peak_a:.2f}×)" if peak_a == peak_a and peak_b == peak_b
                     else "")
            lines.append(f"* {variant}: {ms_a:.2f} ms ({where}) → {ms_b:.2f} ms ({here}), "
                         f"{ms_a / ms_b:.2f}× the speed; the HBM bandwidth it reached "
                         f"{bw_a:,.0f} → {bw_b:,.0f} GB/s ({bw_b / bw_a:.2f}×){peaks}")
    if not lines:
        return "*No vanilla or sdpa_flash GPT-2 rows on two machines to set side by side.*"
    return "GPT-2 medium, forward + backward, machine beside machine:\n" + "\n".join(lines)


def _speed(rows: pd.DataFrame, variant: str) -> tuple[float, float, float]:
    """(ms, HBM GB/s reached, the datasheet's HBM GB/s) of one variant's GPT-2 rows."""
    ms = _value(rows, variant=variant, metric="time")
    reached = _value(rows, variant=variant, metric="hbm_bytes") / (ms / 1e3)
    device = str(rows["device"].dropna().iloc[0]) if "device" in rows and \
        rows["device"].notna().any() else ""
    sheet = datasheet(device) if device else None
    return ms, reached, sheet.hbm_gb_s if sheet is not None else math.nan


def flops_note() -> str:
    """What 'GFLOPs (model)' counts, from the FLOP model's constants, and how it stands beside
    the paper's GFLOPs at the paper's own shape (Markdown)."""
    recompute, stored = 1 + BACKWARD_FACTOR, 1 + BACKWARD_FACTOR_STORED
    ours = {key: flops(**PAPER_FIG2_SHAPE, mode="fwd+bwd", recompute=key == "flash") / 1e9
            for key in ("standard", "flash")}
    paper = {key: PAPER_FIG2[key]["gflops"] for key in ours}
    shape = ("batch {batch}, {n_heads} heads, N = {seq_len}, head_dim {head_dim}"
             .format(**PAPER_FIG2_SHAPE))
    return (f"*GFLOPs (model)* counts the N²·d matmuls: the forward's two, and a backward of "
            f"{BACKWARD_FACTOR:g}× the forward where it recomputes P (FlashAttention-2's count: "
            f"the recomputed Q Kᵀ plus the four gradient products), {BACKWARD_FACTOR_STORED:g}× "
            f"where P was stored ({', '.join(v for v, r in RECOMPUTES.items() if not r)}): "
            f"{recompute:g}× and {stored:g}× the forward in all, a ratio of "
            f"{recompute / stored:.3f}. It is the same for every fused variant, whatever extra "
            "products its kernel does: the workbook's triton backward computes dQ in a pass of "
            "its own and rebuilds P and dP there, two more products per tile pair, which the "
            "model does not count. Softmax, mask and dropout (elementwise) are not counted.\n\n"
            f"The paper's GFLOPs are on another basis, which it does not state: at its own shape "
            f"({shape}) this model gives {ours['standard']:,.1f} (standard) and "
            f"{ours['flash']:,.1f} (FlashAttention), the paper {paper['standard']:g} and "
            f"{paper['flash']:g}: {ours['standard'] / paper['standard']:.1f}× and "
            f"{ours['flash'] / paper['flash']:.1f}× smaller. Adding the elementwise work to this "
            "model would only widen that gap, so it is not what separates them. Compare ratios, "
            "not absolute GFLOPs: FlashAttention over standard is "
            f"{ours['flash'] / ours['standard']:.3f} by this model and "
            f"{paper['flash'] / paper['standard']:.3f} by the paper's numbers, "
            "two counts beside each other, not a measurement.")

"""QLoRA's claims table: codebook, stored bits, quality and VRAM, verdicts computed."""

from __future__ import annotations

import pandas as pd

from workbook.claims import Claim, claims_table, readable
from workbook.config import takes_rows
from workbook.lora import seed_interval
from workbook.qlora.nf4 import bits_per_param, bnb_codebook, nf4_codebook
from workbook.qlora.vram import COMPONENTS, predict_vram
from workbook.results import where_label

LECTURE_SAVING = 16.0     # the lecture's "≈16× less VRAM"
SAVING_TOLERANCE = 0.15   # the claims table's tolerance for it
EDGE_POINTS = 1.0         # a verdict decided by less than this many percentage points


@takes_rows
def claims(ratios: pd.DataFrame, quality: pd.DataFrame, bits: pd.DataFrame,
           where: str, vram: pd.DataFrame | None = None) -> pd.DataFrame:
    """The QLoRA paper's and the lecture's claims: codebook, stored bits, quality, VRAM.

    ``ratios``: ``qlora_vram`` rows of metric ``saving_vs_full``; ``quality``: ``qlora_quality``
    rows (several seeds); ``bits``: :func:`stored_bits_per_param` rows. "QLoRA matches LoRA"
    is an equivalence over seeds: the 95 % interval of the paired final-loss difference
    (QLoRA − LoRA, same seed) must lie inside ± a tenth of LoRA's mean fine-tuning gain (a
    tolerance of 1 % of the loss itself was larger than half that gain).
    """
    nan = float("nan")

    def ratio(size: str, source: str) -> float:
        hit = _qlora_ratio(ratios, size, source)
        return float(hit["value"].iloc[0]) if len(hit) else nan

    def loss(method: str, stage: str) -> float:
        hit = quality[(quality["method"] == method) & (quality["stage"] == stage)
                      & (quality["metric"] == "eval_loss")] if len(quality) else quality
        return float(hit["value"].mean()) if len(hit) else nan

    diff = quality_gap(quality)

    same = int(((nf4_codebook() - bnb_codebook("nf4")).abs() < 1e-6).sum())
    stored = bits[(bits["double_quant"]) & (bits["source"] == "measured")]["value"]
    gain = loss("lora", "before") - loss("lora", "after")
    pred65 = sum(predict_vram("65b", "qlora").values()) / 1e9
    return claims_table([
        Claim("NF4 = normal quantiles: codes equal to bitsandbytes' (to 1e-6)", "QLoRA paper",
              16, same, "codes", "this machine", rel_tol=0),
        Claim("double quantisation: 4.127 bits per weight", "QLoRA paper", bits_per_param(),
              float(stored.iloc[0]) if len(stored) else nan, "bits", "stored by bitsandbytes",
              rel_tol=0, abs_tol=0.01),   # without double quantisation: 4.5 bits, off
        Claim("QLoRA matches 16-bit LoRA: the 95 % interval of the final-loss gap (QLoRA − "
              "LoRA, paired by seed) lies within ± a tenth of LoRA's fine-tuning gain "
              "(measured: the interval's end farthest from 0)", "QLoRA paper",
              0.1 * gain if gain == gain and gain > 0 else nan, diff["farthest"], "nats",
              f"{where_label(quality)}; {diff['n']} seeds", kind="at_most"),
        Claim("QLoRA vs full FT VRAM at 7B: formula", "qlora.predict_vram",
              ratio("7b", "predicted"), ratio("7b", "measured"), "x", where),
        Claim("QLoRA saves ≈16× VRAM", "lecture", LECTURE_SAVING, ratio("7b", "measured"), "x",
              where, rel_tol=SAVING_TOLERANCE),
        Claim("65B QLoRA fits in under 48 GB (formula)", "QLoRA paper", 48.0, pred65, "GB",
              "formula only (no 65B run)", kind="at_most"),
        *(paging_claims(vram) if vram is not None else []),
    ])


def _qlora_ratio(ratios: pd.DataFrame, size: str, source: str) -> pd.DataFrame:
    """QLoRA's ``saving_vs_full`` row at ``size``: predicted, or measured (this machine's where
    there is one, else recorded); an empty frame where there is none."""
    if ratios.empty or not {"size", "method", "source", "value"} <= set(ratios.columns):
        return ratios.iloc[0:0]
    hit = ratios[(ratios["size"] == size) & (ratios["method"] == "qlora")
                 & ratios["value"].notna()]
    for src in (["predicted"] if source == "predicted" else ["measured", "recorded"]):
        part = hit[hit["source"] == src]
        if len(part):
            return part.iloc[:1]
    return hit.iloc[0:0]


@takes_rows
def lecture_saving_caption(ratios: pd.DataFrame, size: str = "7b") -> str:
    """How far the measured saving at ``size`` sits from the lecture's ≈16× and from the edge
    of the claims table's tolerance (Markdown): a verdict decided by a fraction of a point is
    said to be one. ``ratios``: ``qlora_vram`` rows of metric ``saving_vs_full``."""
    from workbook.config import check_choice
    from workbook.qlora.vram import VRAM_SIZES

    check_choice("size", size, tuple(VRAM_SIZES))
    hit = _qlora_ratio(ratios, size, "measured")
    if hit.empty:
        return f"*No measured {size} saving yet (record qlora_vram on a GPU).*"
    value = float(hit["value"].iloc[0])
    off = value / LECTURE_SAVING - 1          # the claims table's relative gap
    low, high = (LECTURE_SAVING * (1 - SAVING_TOLERANCE), LECTURE_SAVING * (1 + SAVING_TOLERANCE))
    edge = low if off < 0 else high
    margin = (abs(off) - SAVING_TOLERANCE) * 100   # points beyond (> 0) or inside (< 0)
    side = "below" if off < 0 else "above"
    text = (f"*{where_label(hit)}, {size}:* QLoRA's measured saving is {value:.2f}×, "
            f"{abs(off) * 100:.2f} % {side} the lecture's {LECTURE_SAVING:g}×; the claims "
            f"table's tolerance of {SAVING_TOLERANCE * 100:g} % ends at {edge:.2f}×, "
            f"{abs(value - edge):.2f}× from the measurement")
    where_it = f"{'outside' if margin > 0 else 'inside'} it by {abs(margin):.2f} percentage points"
    if abs(margin) >= EDGE_POINTS:
        text += f" ({where_it})"
    elif margin > 0:
        text += (f": {where_it}, at the tolerance's edge. Its \"off\" says the saving is about "
                 f"{SAVING_TOLERANCE * 100:g} % {'short of' if off < 0 else 'over'} the claim, "
                 "not that it is far from it")
    else:
        text += f": {where_it}, at the tolerance's edge; its \"holds\" rests on that fraction"
    predicted = _qlora_ratio(ratios, size, "predicted")
    if len(predicted):
        text += f". The formula's saving at {size}: {float(predicted['value'].iloc[0]):.2f}×"
    return text + "."


@takes_rows
def quality_gap(quality: pd.DataFrame) -> dict:
    """Final held-out loss, QLoRA minus LoRA, paired by seed: mean, 95 % interval, the
    interval's end farthest from zero, and the number of seeds."""
    after = quality[(quality["stage"] == "after") & (quality["metric"] == "eval_loss")] \
        if len(quality) else quality
    nan = float("nan")
    if after.empty:
        return {"mean": nan, "low": nan, "high": nan, "farthest": nan, "n": 0}
    seed = after["run_seed"] if "run_seed" in after.columns else 0
    wide = after.assign(run_seed=seed).pivot_table(index="run_seed", columns="method",
                                                   values="value")
    gaps = (wide.get("qlora") - wide.get("lora")).dropna().tolist() \
        if {"lora", "qlora"} <= set(wide.columns) else []
    if not gaps:
        return {"mean": nan, "low": nan, "high": nan, "farthest": nan, "n": 0}
    mean, low, high = seed_interval(gaps)
    far = max(abs(low), abs(high)) if low == low else nan
    return {"mean": mean, "low": low, "high": high, "farthest": far, "n": len(gaps)}


@takes_rows
def quality_caption(quality: pd.DataFrame) -> str:
    """Markdown: the paired final-loss gap (:func:`quality_gap`) and, beside it, the gap the
    NF4 base starts with before any fine-tuning, from the same rows."""
    gap = quality_gap(quality)
    if gap["n"] == 0:
        return "*No paired LoRA and QLoRA runs yet.*"
    text = (f"*{where_label(quality)}:* QLoRA − LoRA final held-out loss, paired by seed: "
            f"{gap['mean']:+.4f} nats "
            f"over {gap['n']} seeds")
    if gap["low"] == gap["low"]:
        text += f", 95 % interval [{gap['low']:+.4f}, {gap['high']:+.4f}]"
    before = quality[(quality["stage"] == "before") & (quality["metric"] == "eval_loss")]
    means = before.groupby("method")["value"].mean()
    if {"lora", "qlora"} <= set(means.index):
        cost = means["qlora"] - means["lora"]
        text += (f". Before fine-tuning, the NF4 base's loss is {cost:+.4f} nats from the "
                 "16-bit base's: the cost of quantising alone")
    return text + "."


@takes_rows
def paging_claims(rows: pd.DataFrame, size: str = "7b", cap_gb: float = 40.0) -> list[Claim]:
    """Paged AdamW: the allocator's peak drops by the paged state (formula vs measured at the
    optimizer sweep's size, ``size`` where the rows have none); under the cap (``cap_gb`` where
    the rows have none), whether AdamW and paged AdamW fit. The predictions come from
    :func:`predict_vram` at the rows' rank, batch and sequence length (64, 1, 512 without)."""
    nan = float("nan")
    has = "optimizer" in rows.columns and "cap_gb" in rows.columns
    sweep = rows[rows["optimizer"].notna() & (rows["cap_gb"].fillna(0) == 0)] if has \
        else rows.iloc[0:0]

    def measured(method: str, optimizer: str, metric: str, frame: pd.DataFrame) -> float:
        if frame.empty or "optimizer" not in frame.columns:
            return nan
        hit = frame[(frame["method"] == method) & (frame["optimizer"] == optimizer)
                    & (frame["metric"] == metric)
                    & frame["source"].isin(["measured", "recorded"])]
        hit = hit[hit.get("status", pd.Series("ok", index=hit.index)).fillna("ok") == "ok"]
        return float(hit["value"].iloc[-1]) if len(hit) else nan

    swept = sweep.groupby("size")["optimizer"].nunique() if len(sweep) else pd.Series()
    swept = swept[swept > 1]
    size = str(swept.index[-1]) if len(swept) else size   # the optimizer sweep's size
    sweep = sweep[sweep["size"] == size] if len(sweep) else sweep
    capped = rows[rows["cap_gb"].fillna(0) > 0] if has else rows.iloc[0:0]
    cap = float(capped["cap_gb"].iloc[0]) if len(capped) else cap_gb
    setting = {k: int(sweep[k].dropna().iloc[0]) if k in sweep and sweep[k].notna().any()
               else d for k, d in (("rank", 64), ("batch_size", 1), ("seq_len", 512))}

    def peak(method: str, optimizer: str) -> float:
        parts = predict_vram(size, method, setting["rank"], setting["batch_size"],
                             setting["seq_len"], optimizer)
        return sum(parts[c] for c in COMPONENTS) / 1e9

    where = where_label(sweep[sweep["source"] != "predicted"]) if len(sweep) else "no rows yet"
    out = []
    for method in ("full", "qlora"):
        meas = measured(method, "adamw", "peak", sweep) - measured(method, "paged_adamw", "peak",
                                                                   sweep)
        out.append(Claim(f"paged AdamW takes Adam's state off the allocator: {method} at {size}, "
                         "peak(AdamW) − peak(paged AdamW)", "bitsandbytes / QLoRA paper",
                         peak(method, "adamw") - peak(method, "paged_adamw"), meas, "GB", where))
    for optimizer in ("adamw", "paged_adamw"):
        out.append(Claim(f"full FT at {size} under a {cap:g} GB allocator cap with {optimizer} "
                         "fits (1) or not (0)", "qlora.predict_vram",
                         float(peak("full", optimizer) <= cap),
                         measured("full", optimizer, "fits", capped), "1 = fits",
                         where_label(capped[capped["source"] != "predicted"])
                         if len(capped) else "no rows yet", rel_tol=0))
    return out


@takes_rows
def error_caption(errors: pd.DataFrame) -> str:
    """The quantisation-error paragraph's numbers, from ``quantization_error``'s rows
    (Markdown): the formats ranked by mean relative RMSE, and how many times smaller INT8's
    error is than the best 4-bit format's."""
    rel = errors[errors["metric"] == "rel_rmse"] if "metric" in errors.columns else errors
    if rel.empty:
        return "*No quantisation errors computed yet.*"
    mean = rel.groupby("format")["value"].mean().sort_values()
    blocks = ", ".join(f"{b:g}" for b in sorted(rel["blocksize"].unique())) \
        if "blocksize" in rel.columns else "?"
    text = (f"*Mean relative RMSE over {rel['tensor'].nunique() if 'tensor' in rel else '?'} "
            f"matrices, blocks of {blocks}:* "
            + " < ".join(f"{f.upper()} {v:.4f}" for f, v in mean.items()) + ".")
    four = mean.drop("int8", errors="ignore")
    if "int8" in mean.index and len(four):
        text += (f" INT8's error is {four.iloc[0] / mean['int8']:.1f}× smaller than the best "
                 f"4-bit format's ({four.index[0].upper()}).")
    return text


@takes_rows
def vram_gap_caption(rows: pd.DataFrame, size: str = "7b") -> str:
    """Measured against the formula, component by component, at one model size (Markdown):
    the largest gap of the exact byte counts (weights, adapters, gradients) in MB, and
    measured / formula of the optimizer state, the activations and the peak per method.
    ``rows``: one machine's ``qlora_vram`` rows (``registry.main_rows``), default setting."""
    from workbook.config import check_choice
    from workbook.qlora.vram import VRAM_SIZES

    check_choice("size", size, tuple(VRAM_SIZES))
    ok = rows[(rows["size"] == size) & rows["value"].notna()] if "size" in rows else rows
    if "status" in ok.columns:
        ok = ok[ok["status"].fillna("ok") == "ok"]
    measured, predicted = ok[ok["source"] != "predicted"], ok[ok["source"] == "predicted"]
    if measured.empty or predicted.empty:
        return (f"*No measured {size} rows beside the formula yet (record qlora_vram on a "
                "GPU).*")
    m = measured.groupby(["method", "metric"])["value"].mean().unstack()
    p = predicted.groupby(["method", "metric"])["value"].mean().unstack()
    methods = [x for x in ("full", "lora", "qlora") if x in m.index and x in p.index]
    pieces = []
    exact = [c for c in ("weights", "adapters", "gradients") if c in m and c in p]
    if methods and exact:
        gap = (m.loc[methods, exact] - p.loc[methods, exact]).abs().max().max()
        pieces.append(f"weights, adapters and gradients differ from the formula by at most "
                      f"{gap * 1000:,.1f} MB")
    for comp in ("optimizer", "activations", "peak"):
        if comp in m and comp in p and methods:
            pieces.append(f"{comp} measured / formula: " + ", ".join(
                f"{x} {m.loc[x, comp] / p.loc[x, comp]:.3f}×" for x in methods))
    return f"*{where_label(measured)}, {size}:* " + "; ".join(pieces) + "."


def codebook_gap() -> str:
    """How far bitsandbytes' NF4 table is from :func:`nf4_codebook`, in words: float rounding
    (a few 10⁻⁷) where the two are the same table."""
    gap = float((nf4_codebook() - bnb_codebook("nf4")).abs().max())
    return f"bitsandbytes' codebook differs from ours by at most {readable(gap)}"

"""QLoRA's claims table: codebook, stored bits, quality and VRAM, verdicts computed."""

from __future__ import annotations

import pandas as pd

from workbook.claims import Claim, claims_table
from workbook.config import takes_rows
from workbook.qlora.nf4 import bits_per_param, bnb_codebook, nf4_codebook
from workbook.qlora.vram import predict_vram
from workbook.results import where_label


@takes_rows
def claims(ratios: pd.DataFrame, quality: pd.DataFrame, bits: pd.DataFrame,
           where: str) -> pd.DataFrame:
    """The QLoRA paper's and the lecture's claims: codebook, stored bits, quality, VRAM.

    ``ratios``: ``qlora_vram`` rows of metric ``saving_vs_full``; ``quality``: ``qlora_quality``
    rows; ``bits``: :func:`stored_bits_per_param` rows. "QLoRA matches LoRA" is judged against
    what fine-tuning gained: the two final losses must agree within a tenth of LoRA's gain (a
    tolerance of 1 % of the loss itself was larger than half that gain).
    """
    nan = float("nan")

    def ratio(size: str, source: str) -> float:
        hit = ratios[(ratios["size"] == size) & (ratios["method"] == "qlora")
                     & (ratios["source"] == source)] if len(ratios) else ratios
        return float(hit["value"].iloc[0]) if len(hit) else nan

    def loss(method: str, stage: str) -> float:
        hit = quality[(quality["method"] == method) & (quality["stage"] == stage)
                      & (quality["metric"] == "eval_loss")] if len(quality) else quality
        return float(hit["value"].iloc[0]) if len(hit) else nan

    same = int(((nf4_codebook() - bnb_codebook("nf4")).abs() < 1e-6).sum())
    stored = bits[(bits["double_quant"]) & (bits["source"] == "measured")]["value"]
    gain = loss("lora", "before") - loss("lora", "after")
    pred65 = sum(predict_vram("65b", "qlora").values()) / 1e9
    return claims_table([
        Claim("NF4 = normal quantiles: codes equal to bitsandbytes' (to 1e-6)", "QLoRA paper",
              16, same, "codes", "this machine", rel_tol=0),
        Claim("double quantisation: 4.127 bits per weight", "QLoRA paper", bits_per_param(),
              float(stored.iloc[0]) if len(stored) else nan, "bits", "stored by bitsandbytes"),
        Claim("QLoRA matches 16-bit LoRA (final held-out loss, same budget; tolerance: a "
              "tenth of LoRA's fine-tuning gain)", "QLoRA paper", loss("lora", "after"),
              loss("qlora", "after"), "nats", where_label(quality), rel_tol=0,
              abs_tol=0.1 * gain if gain == gain and gain > 0 else 0.0),
        Claim("QLoRA vs full FT VRAM at 7B: formula", "qlora.predict_vram",
              ratio("7b", "predicted"), ratio("7b", "recorded"), "x", where),
        Claim("QLoRA saves ≈16× VRAM", "lecture", 16.0, ratio("7b", "recorded"), "x", where),
        Claim("65B QLoRA fits in under 48 GB (formula)", "QLoRA paper", 48.0, pred65, "GB",
              "formula only (no 65B run)", kind="at_most"),
    ])

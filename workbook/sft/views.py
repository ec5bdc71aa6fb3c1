"""SFT's views: tokens coloured by role with the ones carrying loss marked, the masking
explorer, curves per policy, final scores and the claims tables."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from workbook.claims import Claim, claims_table
from workbook.config import check_range, takes_rows
from workbook.results import preset_of
from workbook.sft.experiments import MASKING_PRESETS
from workbook.sft.masking import IGNORE_INDEX, POLICIES, Encoded, encode_chat, token_losses


@takes_rows
def final_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per policy: the last evaluation's metrics side by side."""
    evals = rows[rows["metric"].isin(["exact_match", "prompt_echo", "writes_user_turn",
                                      "answer_loss", "prompt_loss"])]
    last = evals[evals["step"] == evals["step"].max()]
    keys = [c for c in ("policy", "source", "device") if c in last.columns]
    return last.pivot_table(index=keys, columns="metric", values="value").reset_index()


_ROLE_COLORS = {"prompt": "#dbe9f6", "response": "#fde2c8", "pad": "#eeeeee"}


def token_view_html(encoded: Encoded, tokenizer: Any, losses: Sequence[float] | None = None,
                    pad_to: int = 0) -> str:
    """Tokens as coloured boxes (prompt blue, response orange, padding grey); a bold border
    marks tokens that carry loss; ``losses`` (per token, the loss of predicting it) go in the
    tooltip and under the token."""
    cells = []
    ids = encoded.input_ids + [tokenizer.pad_token_id] * max(0, pad_to - len(encoded.input_ids))
    for i, tok_id in enumerate(ids):
        role = encoded.roles[i] if i < len(encoded.roles) else "pad"
        learn = i < len(encoded.labels) and encoded.labels[i] != IGNORE_INDEX and i > 0
        text = tokenizer.decode([tok_id]).replace(" ", "·").replace("\n", "⏎")
        loss = "" if losses is None or i == 0 or i >= len(losses) + 1 else f"{losses[i - 1]:.2f}"
        border = "2px solid #c0392b" if learn else "1px solid #bbb"
        cells.append(
            f"<span title='{html.escape(role)} · loss {loss or '-'}' style='display:inline-block;"
            f"background:{_ROLE_COLORS[role]};border:{border};margin:1px;padding:1px 3px;"
            f"font-family:monospace;font-size:12px;text-align:center'>{html.escape(text)}"
            f"<br><small style='color:#555'>{loss or '&nbsp;'}</small></span>")
    legend = ("<div style='font-size:12px'>blue: prompt · orange: response · grey: padding · "
              "red border: carries loss</div>")
    return legend + "<div style='line-height:2.2'>" + "".join(cells) + "</div>"


def masking_explorer(records: Sequence[dict], tokenizer: Any,
                     model: torch.nn.Module | None = None) -> Any:
    """Pick a conversation and a policy; the tokens redraw with the ones carrying loss marked,
    and a bar chart shows each token's loss (from ``model``, when given) with ignored ones 0."""
    from workbook import plots, widgets

    by_id = {r["id"]: r for r in records}
    fig = plots.figure("loss per token under the chosen mask", "token position",
                       "loss counted (nats)")
    fig.add_bar(x=[], y=[], name="carries loss")

    def draw(fig: Any, example: str, policy: str) -> str:
        enc = encode_chat(by_id[example], tokenizer, policy)
        losses = _model_token_losses(model, enc) if model is not None else None
        counted = [(lab != IGNORE_INDEX) * (1.0 if losses is None else losses[i - 1])
                   for i, lab in enumerate(enc.labels) if i > 0]
        fig.data[0].x = list(range(1, len(enc.labels)))
        fig.data[0].y = counted
        fig.data[0].marker.color = ["#e67e22" if r == "response" else "#5b9bd5"
                                    for r in enc.roles[1:]]
        share = enc.n_loss_tokens / len(enc.labels)
        return token_view_html(enc, tokenizer, losses) + (
            f"<p>{enc.n_loss_tokens} of {len(enc.labels)} tokens carry loss ({share:.0%}).</p>")

    return widgets.Explorer({"example": widgets.dropdown("example", list(by_id), records[0]["id"]),
                             "policy": widgets.dropdown("policy", list(POLICIES), "answer_only")},
                            draw, fig)


def _model_token_losses(model: torch.nn.Module, enc: Encoded) -> list[float]:
    device = next(model.parameters()).device
    ids = torch.tensor([enc.input_ids], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    everything = torch.tensor([enc.input_ids], device=device)   # loss on every token, for view
    return token_losses(logits, everything)[0].tolist()


@takes_rows
def curves_figure(rows: pd.DataFrame, metric: str, title: str) -> Any:
    """One metric against step, a line per policy (measured here or recorded)."""
    from workbook import plots

    part = rows[rows["metric"] == metric]
    return plots.compare(part, x="step", group="policy", title=title, x_title="SFT step",
                         y_title=f"{metric} ({part['unit'].iloc[0] if len(part) else ''})")


def final_value(rows: pd.DataFrame, policy: str, metric: str) -> float:
    """The last evaluation's ``metric`` for ``policy``; NaN when there are no such rows."""
    part = rows[(rows["policy"] == policy) & (rows["metric"] == metric)] if len(rows) else rows
    if part.empty:
        return float("nan")
    return float(part[part["step"] == part["step"].max()]["value"].mean())


def _eval_items(rows: pd.DataFrame) -> int:
    """How many held-out records each exact-match evaluation used (the rows' preset's
    ``n_eval``); 0 if unknown."""
    cfg = MASKING_PRESETS.get(preset_of(rows, default=""))
    return int(cfg.n_eval) if cfg is not None else 0


@takes_rows
def masking_claims(rows: pd.DataFrame, where: str) -> pd.DataFrame:
    """The masking experiment's claims, verdicts computed from ``rows`` (never typed in)."""
    em = {p: final_value(rows, p, "exact_match") for p in ("answer_only", "whole_sequence")}
    ans = {p: final_value(rows, p, "answer_loss") for p in ("answer_only", "whole_sequence")}
    user = {p: final_value(rows, p, "writes_user_turn") for p in ("answer_only",
                                                                  "whole_sequence")}
    # Exact match is a share of n_eval held-out items: a gap under two standard errors of a
    # difference of two such shares is noise. Losses: a 2 % gap. Both stated in the table.
    n = _eval_items(rows)
    p1, p2 = em["answer_only"], em["whole_sequence"]
    em_noise = 2 * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n) if n and p1 == p1 \
        and p2 == p2 else 0.0
    return claims_table([
        Claim("answer-only loss: more exact answers at the same budget",
              "lecture (SFT section)", em["whole_sequence"], em["answer_only"], "share", where,
              abs_tol=em_noise, kind="at_least"),
        Claim("answer-only loss: lower held-out answer loss", "lecture (SFT section)",
              ans["whole_sequence"], ans["answer_only"], "nats", where,
              abs_tol=0.02 * ans["whole_sequence"] if ans["whole_sequence"] == ans[
                  "whole_sequence"] else 0.0, kind="at_most"),
        Claim("whole-sequence loss trains the model to write the prompt (user turn)",
              "lecture: 'do not train prompt echoing'", user["answer_only"],
              user["whole_sequence"], "share", where, kind="at_least",
              abs_tol=0.01),
    ])


def loss_claims(library_loss: float, our_loss: float, grad_masked: float) -> pd.DataFrame:
    """The masked loss's two claims: it equals transformers' ``LlamaForCausalLM(labels=)`` loss
    on the same batch, and a masked position gets exactly zero gradient."""
    check_range("library_loss", library_loss, 0.0, 1e4)
    check_range("our_loss", our_loss, 0.0, 1e4)
    check_range("grad_masked", grad_masked, 0.0, 1e30)
    return claims_table([
        Claim("our masked loss = the library's loss", "transformers LlamaForCausalLM(labels=)",
              library_loss, our_loss, "nats", "this machine", rel_tol=1e-4),
        Claim("masked positions get zero gradient", "lecture: no loss on the prompt",
              0.0, grad_masked, "", "this machine"),
    ])

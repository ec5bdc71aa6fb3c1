"""SFT's views: tokens coloured by role with the ones carrying loss marked, the masking
explorer, curves per policy, final scores and the claims tables."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from scipy import stats

from workbook import registry
from workbook import stats as wstats  # scipy.stats is `stats` here
from workbook.claims import Claim, ClaimsTable, claims_table
from workbook.config import check_range, check_rows, takes_rows
from workbook.results import preset_of, where_label
from workbook.sft.experiments import MASKING_PRESETS, UNITS
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


POLICY_PAIR = ("answer_only", "whole_sequence")   # the claim: the first beats the second
_SCORES = ("exact_match", "answer_loss", "writes_user_turn")
# what the per-seed table shows: the scores the claims judge, and prompt echo beside them
_SHOWN = ("exact_match", "answer_loss", "prompt_echo", "writes_user_turn")


def _by_provenance(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The rows split by where they were measured, this machine's first, then the recordings
    from the latest to the oldest, each labelled as a claims table labels it
    (:func:`workbook.results.where_label`) and with the preset the rows say was run:
    'this machine (NVIDIA H200), full preset'."""
    if rows.empty:
        return []
    keys = [c for c in ("source", "device", "preset") if c in rows.columns]
    parts = [part for _, part in rows.groupby(keys, dropna=False, sort=False)] if keys else [rows]
    # the latest recording before older ones (an H200's run of tonight before an H100's of last
    # week: the block registry.main_rows judges first), then this machine's before all of them
    if "recorded_at" in rows.columns:
        parts.sort(key=lambda part: str(part["recorded_at"].astype(str).max()), reverse=True)
    parts.sort(key=lambda part: "source" in part and (part["source"] != "measured").any())
    return [(_label(part), part) for part in parts]


def _label(part: pd.DataFrame) -> str:
    preset = preset_of(part, default="")
    return where_label(part) + (f", {preset} preset" if preset else "")


def _last_eval(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric`` at the last evaluation, one row per (policy, seed)."""
    part = rows[rows["metric"] == metric]
    if "status" in part.columns:
        part = part[part["status"] == "ok"]
    part = part[part["step"] == part["step"].max()] if len(part) else part
    if "seed" not in part.columns:
        part = part.assign(seed=0)
    return part.groupby(["policy", "seed"], as_index=False)["value"].mean()


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float,
                                                                                 float]:
    """(mean, low, high): Student's t interval of the mean of ``values`` (independent seeds;
    :func:`workbook.stats.t_interval`); NaN bounds for fewer than two values, where no spread
    can be measured; one line for an empty list or a NaN."""
    return wstats.t_interval(values, confidence)


@takes_rows
def seed_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per place measured and policy, each score at the last evaluation: the mean over seeds
    and its 95 % interval (Student's t over the seeds; none for a single seed). A fraction's
    interval is cut to [0, 1]: a share of replies cannot lie below 0 or above 1, whatever the
    t interval of three seeds near 0 says."""
    out = []
    for where, part in _by_provenance(rows):
        for metric in _SHOWN:
            last = _last_eval(part, metric)
            unit = UNITS.get(metric, "")
            for policy, group in last.groupby("policy", sort=False):
                mean, low, high = mean_interval(group["value"].tolist())
                if unit == "fraction" and math.isfinite(low) and math.isfinite(high):
                    low, high = max(low, 0.0), min(high, 1.0)
                out.append({"where": where, "policy": policy, "metric": metric, "unit": unit,
                            "seeds": len(group), "mean": mean, "low": low, "high": high})
    return pd.DataFrame(out, columns=["where", "policy", "metric", "unit", "seeds", "mean",
                                      "low", "high"])


@takes_rows
def seed_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`seed_summary` for reading: one row per place measured and policy, each score as
    'mean [low, high]' (95 %, over the seeds; the mean alone for one seed), shown in full."""
    summary = seed_summary(rows)
    if summary.empty:
        return ClaimsTable(summary)

    def cell(row: pd.Series) -> str:
        if not (math.isfinite(row["low"]) and math.isfinite(row["high"])):
            return f"{row['mean']:.3f}"
        return f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"

    summary = summary.assign(cell=summary.apply(cell, axis=1),
                             metric=summary["metric"] + " (" + summary["unit"] + ")")
    wide = summary.pivot_table(index=["where", "policy", "seeds"], columns="metric",
                               values="cell", aggfunc="first", sort=False)
    return ClaimsTable(wide.reset_index().rename_axis(columns=None))


def agresti_caffo(p1: float, p2: float, n: int, confidence: float = 0.95
                  ) -> tuple[float, float]:
    """The interval of ``p1 - p2``, two shares over ``n`` items each, at ``confidence``
    (:func:`workbook.stats.share_gap_interval`: Agresti–Caffo, one right and one wrong answer
    added to each share, so that a share of 0 or 1 still has an error), cut to [-1, 1]."""
    check_range("confidence", confidence, 0.5, 0.999)
    return wstats.share_gap_interval(p2, p1, n, n, z=float(stats.norm.ppf(0.5 + confidence / 2)))


@takes_rows
def paired_differences(rows: pd.DataFrame) -> pd.DataFrame:
    """Per place measured and score: answer-only minus whole-sequence, seed by seed (both
    policies of a seed saw the same chats and held-out items), its mean and 95 % interval
    (Student's t over the seeds). A share's interval where the seeds give none comes from the
    held-out items (:func:`agresti_caffo`): one seed (its ``n_eval`` items), or seeds that all
    differ by exactly the same amount (shares of 0 and 1: a t interval of width 0; each seed
    drew its own held-out items, so all of them count). A loss of one seed gets none. A
    difference of two fractions lies in [-1, 1], and so does its interval (cut there)."""
    a, b = POLICY_PAIR
    out = []
    for where, part in _by_provenance(rows):
        for metric in _SCORES:
            last = _last_eval(part, metric).pivot(index="seed", columns="policy",
                                                  values="value")
            if a not in last or b not in last:
                continue
            pairs = last[[a, b]].dropna()
            diffs = pairs[a] - pairs[b]
            if diffs.empty:
                continue
            mean, low, high = mean_interval(diffs.tolist())
            method = f"t over {len(diffs)} seeds" if len(diffs) > 1 else "one seed: no interval"
            n = _eval_items(part) * len(diffs)
            flat = not (math.isfinite(low) and high > low)
            if flat and UNITS.get(metric) == "fraction" and n:
                low, high = agresti_caffo(float(pairs[a].mean()), float(pairs[b].mean()), n)
                seeds = "one seed: its" if len(diffs) == 1 else f"{len(diffs)} seeds alike: their"
                method = f"{seeds} {n} held-out items give the interval (Agresti-Caffo)"
            if UNITS.get(metric) == "fraction" and math.isfinite(low) and math.isfinite(high):
                low, high = max(low, -1.0), min(high, 1.0)   # two shares differ by at most 1
            out.append({"where": where, "metric": metric, "unit": UNITS.get(metric, ""),
                        "seeds": len(diffs), "difference": mean, "low": low, "high": high,
                        "interval": method})
    return pd.DataFrame(out, columns=["where", "metric", "unit", "seeds", "difference", "low",
                                      "high", "interval"])


class MaskingRows:
    """The rows notebook 09 shows, by the workbook's one rule (``registry.with_references``):
    the rows of a run on this machine are *the* numbers; the ledger's rows of other devices
    stand beside them as labelled references. Give :meth:`keep` to
    ``widgets.run_or_button("sft_masking", ...)``: it keeps the rows (at once where the run is
    quick, else when its button is pressed) and shows the per-seed summary."""

    experiment = "sft_masking"

    def __init__(self) -> None:
        self.live = pd.DataFrame()

    def keep(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Keep ``rows`` (a live run's, or the recorded ones where this machine cannot run
        it) and return :func:`seed_table` of what the notebook now shows."""
        check_rows("rows", rows)
        self.live = rows
        return seed_table(self.shown())

    def shown(self) -> pd.DataFrame:
        """This machine's rows (none until the run has finished), then the references."""
        return registry.with_references(self.experiment, self.live)


def _interval_words(row: pd.Series, better: str) -> str:
    """'+0.012 [−0.031, +0.055]: the data cannot tell them apart' and the like."""
    text = f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"
    if not (math.isfinite(row["low"]) and math.isfinite(row["high"])):
        return f"{row['difference']:+.3f} (one seed: no spread between seeds to judge it by)"
    if row["low"] <= 0 <= row["high"]:
        return f"{text}: the interval holds 0, so the data cannot tell the two policies apart"
    wins = (row["low"] > 0) == (better == "higher")
    return f"{text}: answer-only is {'better' if wins else 'worse'} beyond the noise"


@takes_rows
def masking_caption(rows: pd.DataFrame) -> str:
    """Markdown: what the rows say about answer-only against whole-sequence loss, per place
    measured, every number from the rows (a notebook shows it with ``Markdown``)."""
    diffs = paired_differences(rows)
    if diffs.empty:
        return "_No rows with both policies yet: nothing to compare._"
    lines = []
    for where, part in diffs.groupby("where", sort=False):
        em = part[part["metric"] == "exact_match"]
        loss = part[part["metric"] == "answer_loss"]
        text = f"**{where}** ({part['interval'].iloc[0]}, 95 %): answer-only minus whole-sequence"
        if len(em):
            text += f" exact match {_interval_words(em.iloc[0], 'higher')}"
        if len(loss):
            text += f"; held-out answer loss (nats) {_interval_words(loss.iloc[0], 'lower')}"
        lines.append(f"- {text}.")
    return "\n".join(lines)


_MACHINE_DASHES = ("solid", "dash", "dot", "dashdot")


@takes_rows
def curves_figure(rows: pd.DataFrame, metric: str, title: str) -> Any:
    """One metric against step, a line per policy: the mean over each machine's SFT seeds.
    Where rows of several machines stand side by side (this machine's first, then the
    recordings from the latest), a policy keeps its colour and each machine has its own dash
    and marker shape; the subtitle names every machine in that order with the seeds its lines
    average."""
    from workbook import plots

    part = rows[rows["metric"] == metric]
    blocks = _by_provenance(part)
    mean = pd.concat([mean_over_seeds(p) for _, p in blocks], ignore_index=True) \
        if blocks else part
    fig = plots.compare(mean, x="step", group="policy", title=title, x_title="SFT step",
                        y_title=f"{metric} ({part['unit'].iloc[0] if len(part) else ''})")
    if not blocks:
        return fig
    names, lines = [], []
    for i, (label, block) in enumerate(blocks):
        dash = _MACHINE_DASHES[i % len(_MACHINE_DASHES)]
        seeds = sorted({int(s) for s in block["seed"].dropna()}) if "seed" in block else []
        what = (f"mean of seeds {','.join(map(str, seeds))}" if len(seeds) > 1
                else f"seed {seeds[0]}" if seeds else "one run")
        device = plots.short_device(block["device"].iloc[0]) if "device" in block else ""
        names.append((device, dash))
        style = {"solid": "solid", "dash": "dashed", "dot": "dotted"}.get(dash, "dash-dot")
        lines.append(f"{label}: {what}" + (f" ({style} lines)" if len(blocks) > 1 else ""))
    for trace in fig.data:
        for device, dash in names:
            if len(names) > 1 and str(trace.name).endswith(f", {device})"):
                trace.line.dash = dash
    return fig.update_layout(title_text=f"{title}<br><sup>{'<br>'.join(lines)}</sup>")


def masking_panel_title(metric: str = "answer_loss") -> str:
    """The masking panel's title: the score by policy and the SFT seeds a Run of the panel
    uses on this machine's preset (its start, ``registry.panel_start``: the seeds are no
    control of the panel, so every Run keeps them; one seed on a GPU, to stay quick)."""
    from workbook.config import check_choice, resolve_preset

    check_choice("metric", metric, tuple(_SCORE_WORDS))
    preset = resolve_preset()
    seeds = registry.panel_start("sft_masking", preset).get("seeds",
                                                           MASKING_PRESETS[preset].seeds)
    what = (f"seed {seeds[0]} only: no spread between seeds" if len(seeds) == 1
            else f"mean over seeds {', '.join(map(str, seeds))}")
    return f"{_SCORE_WORDS[metric]} by masking policy ({what})"


_SCORE_WORDS = {"answer_loss": "Held-out answer loss", "prompt_loss": "Loss on the user's tokens",
                "exact_match": "Held-out exact match"}


@takes_rows
def mean_over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with each value the mean over the SFT seeds (every other column kept): one point
    per step and policy for a figure, e.g. an ``ExperimentPanel``'s ``view``."""
    if rows.empty or "seed" not in rows.columns:
        return rows
    keys = [c for c in rows.columns if c not in ("value", "seed", "recorded_at", "commit")]
    how = {"value": "mean", "seed": _joined}
    how.update({c: "first" for c in ("recorded_at", "commit") if c in rows.columns})
    mean = rows.groupby(keys, dropna=False, sort=False).agg(how).reset_index()
    return mean[[c for c in rows.columns if c in mean.columns]]


def _joined(values: pd.Series) -> str:
    """'0,1,2': the distinct values of a column, for a label."""
    return ",".join(sorted({str(v) for v in values.dropna()}))


def final_value(rows: pd.DataFrame, policy: str, metric: str) -> float:
    """The last evaluation's ``metric`` for ``policy`` (the mean over seeds); NaN when there
    are no such rows."""
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
def masking_claims(rows: pd.DataFrame, where: str | None = None) -> pd.DataFrame:
    """The masking experiment's claims, one row per claim and place measured (this machine
    first), verdicts computed from ``rows`` (never typed in). "Answer-only beats whole-sequence"
    is judged on the paired difference over seeds: it holds only when its 95 % interval lies
    wholly on the claimed side of 0. ``where`` labels all rows as one place (older callers)."""
    parts = [(where, rows)] if where is not None else _by_provenance(rows)
    claims = []
    for label, part in parts:
        diffs = paired_differences(part)
        diff = {m: diffs[diffs["metric"] == m].iloc[0] if (diffs["metric"] == m).any() else None
                for m in _SCORES}
        claims.append(_difference_claim("answer-only loss: more exact answers at the same "
                                        "budget", diff["exact_match"], "fraction", "at_least",
                                        label))
        # One seed gives a loss gap no interval, and a share of the loss is no stand-in for
        # one: the spread between seeds is what the gap must beat, so no verdict without it.
        claims.append(_difference_claim("answer-only loss: lower held-out answer loss",
                                        diff["answer_loss"], "nats/token", "at_most", label,
                                        needs_interval=True))
        claims.append(_difference_claim(
            "whole-sequence loss trains the model to write the user's turn (answer-only does "
            "so less often)", diff["writes_user_turn"], "fraction", "at_most", label,
            source="lecture: 'do not train prompt echoing'"))
    return claims_table(claims)   # a claim without an interval shows '–' in low/high


def _difference_claim(text: str, row: pd.Series | None, unit: str, kind: str, where: str,
                      source: str = "lecture (SFT section)",
                      needs_interval: bool = False) -> Claim:
    """Answer-only minus whole-sequence against 0, with the difference's interval (a single
    seed has none: then a claim that ``needs_interval`` gets no verdict)."""
    if row is None:
        return Claim(text, source, 0.0, math.nan, unit, where, kind=kind)
    return Claim(text, source, 0.0, float(row["difference"]),
                 f"{unit}, answer-only − whole-sequence", where, kind=kind,
                 low=float(row["low"]), high=float(row["high"]),
                 needs_interval=needs_interval)


def loss_claims(library_loss: float, our_loss: float, grad_masked: float) -> pd.DataFrame:
    """The masked loss's two claims: it equals transformers' ``LlamaForCausalLM(labels=)`` loss
    on the same batch, and a masked position gets exactly zero gradient."""
    check_range("library_loss", library_loss, 0.0, 1e4)
    check_range("our_loss", our_loss, 0.0, 1e4)
    check_range("grad_masked", grad_masked, 0.0, 1e30)
    return claims_table([
        Claim("our masked loss = the library's loss", "transformers LlamaForCausalLM(labels=)",
              library_loss, our_loss, "nats", "this machine", rel_tol=1e-4),
        Claim("masked positions get zero gradient (the largest |∂loss/∂logit| at one)",
              "lecture: no loss on the prompt", 0.0, grad_masked, "nats per logit",
              "this machine"),
    ])

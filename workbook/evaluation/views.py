"""Evaluation's views: the arena explorer, the test-task and mid-training summaries in words
and tables, the alignment pipeline, and the claims table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workbook import registry, stats
from workbook.claims import Claim, claims_table
from workbook.config import check_range, takes_rows
from workbook.evaluation.arena import ArenaConfig, leaderboard, rank_agreement
from workbook.evaluation.experiments import MID_PRESETS, TEST_TASK_PRESETS
from workbook.model import BASE_RECIPES
from workbook.results import preset_of, provenance_label, where_label


def leaderboard_explorer(seed: int = 0):
    """Sliders for the arena's knobs; the bars show true vs fitted Elo, ranks in the labels."""
    from workbook import plots, widgets

    check_range("seed", seed, 0, 2**31 - 1)

    fig = plots.figure("Arena leaderboard: true quality vs fitted from votes", "model",
                       "Elo")
    fig.add_bar(x=[], y=[], name="true")
    fig.add_bar(x=[], y=[], name="Bradley-Terry fit")
    fig.add_bar(x=[], y=[], name="online Elo")

    def draw(fig, n_battles: int, noise: float, verbosity_bias: float,
             identity_leak: float) -> str:
        cfg = ArenaConfig(n_battles=n_battles, noise=noise, verbosity_bias=verbosity_bias,
                          identity_leak=identity_leak)
        board = leaderboard(cfg, seed)
        labels = [f"{m}{' ★' if f else ''}<br>v={v:+.1f}" for m, f, v in
                  zip(board["model"], board["favoured"], board["verbosity"], strict=True)]
        for trace, col in zip(fig.data, ("true_elo", "bt_elo", "online_elo"), strict=True):
            trace.x, trace.y = labels, board[col].round(0)
        return (f"Kendall tau with the true order: Bradley-Terry {rank_agreement(board):.2f}, "
                f"online Elo {rank_agreement(board, 'online_rank'):.2f}. "
                f"★ = the model an identity leak favours; v = verbosity.")

    fig.update_layout(barmode="group")
    return widgets.Explorer({
        "n_battles": widgets.slider("battles", 50, 20000, 50, 1000),
        "noise": widgets.slider("comparison noise", 0.25, 5.0, 0.25, 1.0),
        "verbosity_bias": widgets.slider("verbosity bias", 0.0, 2.0, 0.1, 0.0),
        "identity_leak": widgets.slider("identity leak", 0.0, 0.5, 0.05, 0.0),
    }, draw, fig)


# ----------------------------------------------------------------------------- pipeline


_TEST_TASK_COLUMNS = {"benchmark_exact_match": "benchmark exact match (share of items)",
                      "general_exact_match": "general exact match (share of items)",
                      "pretraining_val_loss": "pre-training val loss (nats/token)"}


@takes_rows
def test_task_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: benchmark and general exact match (shares of the held-out items)
    and the pre-training validation loss (nats/token), all in fixed notation with three
    decimals, units in the headers."""
    from workbook.claims import ClaimsTable

    table = rows.pivot_table(index="variant", columns="metric", values="value", sort=False)
    table = table[[c for c in _TEST_TASK_COLUMNS if c in table.columns]]
    shown = table.apply(lambda col: col.map(lambda v: f"{v:.3f}" if v == v else "–"))
    return ClaimsTable(shown.rename(columns=_TEST_TASK_COLUMNS).rename_axis(columns=None)
                       .reset_index())


@takes_rows
def test_task_caption(rows: pd.DataFrame) -> str:
    """What the test-task rows measured, in words made from the rows and their preset's config:
    the benchmark and general families, the budget, and the pre-training loss next to uniform
    guessing (ln V), so the notebook's text cannot drift from its data."""
    preset = preset_of(rows)
    cfg = TEST_TASK_PRESETS[preset if preset in TEST_TASK_PRESETS else "small"]
    bench = rows["benchmark"].dropna().iloc[0] if "benchmark" in rows and \
        rows["benchmark"].notna().any() else cfg.benchmark
    uniform = math.log(BASE_RECIPES[cfg.model_preset].model.vocab_size)
    loss = {v: _value(rows, variant=v, metric="pretraining_val_loss")
            for v in ("base", "general_sft", "test_task_sft")}
    names = {"general_sft": "general SFT", "test_task_sft": "test-task SFT"}
    worse = [names[v] for v in names if loss[v] > uniform]
    text = (f"*{where_label(rows)}, {preset} preset:* benchmark **{bench}** (held-out items); "
            f"general families **{', '.join(cfg.general)}**; {cfg.steps} steps of batch "
            f"{cfg.batch_size}, {cfg.test_share:.0%} of the test-task model's chats shaped like "
            f"the benchmark. Pre-training loss on ordinary text: base {loss['base']:.2f} nats, "
            f"general SFT {loss['general_sft']:.2f}, test-task SFT {loss['test_task_sft']:.2f}; "
            f"a uniform guess over the {BASE_RECIPES[cfg.model_preset].model.vocab_size:,} "
            f"tokens scores ln V = {uniform:.2f}.")
    if worse:
        text += (f" **{' and '.join(worse)} predict ordinary text worse than a uniform guess**: "
                 "confidently wrong, not merely unsure: the narrow fine-tuning has overwritten "
                 "what pre-training taught.")
    return text


@takes_rows
def shown_numbers(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that are *the* numbers of a table or claim, by the rule of
    :func:`workbook.registry.main_rows`: those measured on this machine where there are any,
    else the most recently recorded machine's (never a mix of devices)."""
    main = registry.main_rows(rows.reset_index(drop=True))  # a concat's duplicate index confuses it
    if "source" in main.columns and (main["source"] == "measured").any():
        return main[main["source"] == "measured"]
    return main


def mean_interval(values: pd.Series | list[float], level: float = 0.95
                  ) -> tuple[float, float, float]:
    """Mean and its Student-t interval over seeds (:func:`workbook.stats.t_interval`), a NaN
    seed left out; NaN bounds for fewer than two values, NaN throughout for none."""
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if len(arr) == 0:
        check_range("level", level, 0.5, 0.999)
        return math.nan, math.nan, math.nan
    return stats.t_interval(arr.tolist(), level)


def share_interval(values: pd.Series | list[float]) -> tuple[float, float, float]:
    """:func:`mean_interval` of a share, its bounds cut at 0 and 1 (a t interval over a few
    seeds can reach past them; no share can)."""
    mean, low, high = mean_interval(values)
    return mean, max(low, 0.0) if low == low else low, min(high, 1.0) if high == high else high


def share_gap_interval(p: float, q: float, n_p: int, n_q: int) -> tuple[float, float]:
    """Two standard errors around the difference ``q - p`` of two shares over ``n_p`` and
    ``n_q`` items (:func:`workbook.stats.share_gap_interval`, Agresti–Caffo), cut at -1 and 1;
    NaN where a share is not known."""
    if p != p or q != q:
        return math.nan, math.nan
    return stats.share_gap_interval(p, q, n_p, n_q, z=2.0)


@takes_rows
def mid_training_effects(rows: pd.DataFrame) -> pd.DataFrame:
    """Per replay share and training seed: the step early stopping picks (lowest *dev* loss),
    and there the change from step 0 of the domain *test* loss and of the general loss."""
    metrics = {"domain_dev_loss", "domain_test_loss", "general_val_loss"}
    part = shown_numbers(rows)
    part = part[part["metric"].isin(metrics)] if "metric" in part.columns else part.iloc[0:0]
    out = []
    for (replay, seed), run in part.groupby(["replay", "train_seed"]):
        curve = run.pivot_table(index="step", columns="metric", values="value")
        if not metrics <= set(curve.columns) or 0 not in curve.index:
            continue
        best = int(curve["domain_dev_loss"].idxmin())
        out.append({"replay": replay, "train_seed": seed, "stopped_at_step": best,
                    "last_step": int(curve.index.max()),
                    "domain_test_change": curve.at[best, "domain_test_loss"]
                    - curve.at[0, "domain_test_loss"],
                    "general_change": curve.at[best, "general_val_loss"]
                    - curve.at[0, "general_val_loss"]})
    return pd.DataFrame(out, columns=["replay", "train_seed", "stopped_at_step", "last_step",
                                      "domain_test_change", "general_change"])


@takes_rows
def mid_training_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per replay share: mean change in held-out domain (test split) and general loss at the
    early-stopped step, with the 95 % interval over seeds (nats/token)."""
    effects = mid_training_effects(rows)
    table = []
    for replay, part in effects.groupby("replay"):
        row: dict = {"replay": replay, "seeds": len(part),
                     "stopped at step (mean)": round(part["stopped_at_step"].mean(), 1)}
        for col, name in (("domain_test_change", "Δ domain test loss"),
                          ("general_change", "Δ general loss")):
            mean, low, high = mean_interval(part[col])
            row[name] = f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        table.append(row)
    return pd.DataFrame(table)


@takes_rows
def mid_training_caption(rows: pd.DataFrame) -> str:
    """The mid-training design in numbers from its rows: split sizes, steps, passes, seeds,
    where early stopping stopped."""
    part = shown_numbers(rows)
    tokens = {m[:-len("_tokens")]: _value(part, metric=m) for m in
              ("domain_train_tokens", "domain_dev_tokens", "domain_test_tokens",
               "general_train_tokens")}
    effects = mid_training_effects(part)
    preset = preset_of(part)
    cfg = MID_PRESETS[preset if preset in MID_PRESETS else "small"]
    steps = ", ".join(f"replay {r:.0%}: {int(p['last_step'].max())} steps, stopped at "
                      f"{p['stopped_at_step'].mean():.0f} on average"
                      for r, p in effects.groupby("replay"))
    return (f"*{where_label(part)}, {preset} preset:* domain text {tokens['domain_train']:,.0f} "
            f"training tokens (dev {tokens['domain_dev']:,.0f}, test "
            f"{tokens['domain_test']:,.0f}); general text {tokens['general_train']:,.0f}. "
            f"{cfg.epochs:g} passes over the domain at learning rate {cfg.lr:g}, "
            f"{effects['train_seed'].nunique()} seeds; {steps}.")


_DPO_HEADERS = {"exact_match": "exact match (share)",
                "win_rate_vs_sft": "win rate vs sft (share, a tie half)",
                "refusal_rate_unsafe": "refuses unsafe requests (share)",
                "refusal_rate_safe": "refuses harmless look-alikes (share)",
                "refusal_rate_tasks": "refuses task prompts (share)"}
# why a cell has no number: the win rate compares DPO's replies with sft's
_DPO_GAPS = {("sft", "win_rate_vs_sft"): "– (the reference)",
             ("sft_no_safety", "win_rate_vs_sft"): "– (only DPO is compared with sft)"}


@takes_rows
def dpo_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """SFT without safety data (the "before" of the refusal rates), SFT and DPO on held-out
    items and requests, one block per machine (this machine's first, then each recording,
    labelled with device, date and preset): mean over DPO seeds [95 % interval, cut at 0 and
    1: all are shares]; a cell without a number says why."""
    from workbook.claims import ClaimsTable

    table = []
    for _, part in registry.machine_blocks(rows):
        where = f"{where_label(part)}, {preset_of(part)} preset"
        final = part[part["metric"].isin(_DPO_FINAL)]
        final = final[(final["model"] != "dpo") | (final["step"] == final["step"].max())]
        for model in [m for m in ("sft_no_safety", "sft", "dpo") if m in set(final["model"])]:
            row: dict = {"measured on": where, "model": model}
            for metric in _DPO_FINAL:
                mean, low, high = share_interval(final[(final["model"] == model)
                                                       & (final["metric"] == metric)]["value"])
                row[_DPO_HEADERS[metric]] = (
                    _DPO_GAPS.get((model, metric), "– (not measured)") if mean != mean
                    else f"{mean:.3f}" if math.isnan(low) else
                    f"{mean:.3f} [{low:.3f}, {high:.3f}]")
            table.append(row)
    return ClaimsTable(pd.DataFrame(table, columns=["measured on", "model",
                                                    *_DPO_HEADERS.values()]))


_DPO_FINAL = ("exact_match", "win_rate_vs_sft", "refusal_rate_unsafe", "refusal_rate_safe",
              "refusal_rate_tasks")


@takes_rows
def dpo_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Held-out reward margin and implicit reward accuracy against DPO step, mean over seeds
    (one curve per source: this machine, or each recorded device)."""
    part = rows[rows["metric"].isin(["reward_margin", "reward_accuracy"])]
    keys = [c for c in ("source", "device", "n_gpus", "metric", "step", "unit")
            if c in part.columns]
    # the date and run seed stay, so a figure's subtitle can say when (not 'recorded on …, ?')
    how = {"value": "mean", **{c: "max" for c in ("recorded_at", "seed") if c in part.columns}}
    return part.groupby(keys, dropna=False, as_index=False).agg(how)


@takes_rows
def dpo_figure(rows: pd.DataFrame):
    """:func:`dpo_curves` drawn against DPO step; the subtitle names the rows' device, date and
    the DPO seeds the curves average (read from the rows before averaging)."""
    from workbook import plots

    title = "DPO on held-out pairs (mean over seeds)"
    fig = plots.compare(dpo_curves(rows), x="step", group="metric", title=title,
                        x_title="DPO step",
                        y_title="reward margin (nats x beta) / implicit reward accuracy")
    curves = rows[rows["metric"].isin(["reward_margin", "reward_accuracy"])]
    return fig.update_layout(title_text=plots.title_with_source(title, curves))


@takes_rows
def dpo_caption(rows: pd.DataFrame) -> str:
    """The DPO run in words made from its rows: pairs, seeds, margin and accuracy at the end."""
    part = shown_numbers(rows)
    pairs = _value(part, model="sft", metric="task_pairs")
    end = part["step"].max()
    seeds = part.loc[part["model"] == "dpo", "train_seed"].nunique()
    margin = mean_interval(part[(part["metric"] == "reward_margin") & (part["step"] == end)]
                           ["value"])
    acc = share_interval(part[(part["metric"] == "reward_accuracy") & (part["step"] == end)]
                         ["value"])
    final = part[(part["step"] == end) & (part["model"] == "dpo")]

    def mean(metric: str, model: str | None = None) -> float:
        rows_ = part[part["model"] == model] if model else final
        return float(rows_.loc[rows_["metric"] == metric, "value"].mean())

    text = (f"*{where_label(part)}, {preset_of(part)} preset:* the SFT model answered wrongly "
            f"on {pairs:.0f} fresh prompts: those are the task pairs (chosen = the right "
            f"answer, rejected = its own). {seeds} DPO seeds of {end:.0f} steps; on held-out "
            f"pairs after training: reward margin {margin[0]:.3f} [{margin[1]:.3f}, "
            f"{margin[2]:.3f}], implicit reward accuracy {acc[0]:.2f} [{acc[1]:.2f}, "
            f"{acc[2]:.2f}] (95 % intervals over seeds; both are 0 at step 0, where the policy "
            "is its reference).")
    chosen, rejected = mean("chosen_reward"), mean("rejected_reward")
    if chosen < 0 < margin[0]:
        text += (f" **The margin grew while the chosen answers became less likely** (their "
                 f"implicit reward {chosen:.3f}, the rejected ones' {rejected:.3f}): DPO only "
                 "asks for the gap, and a right and a wrong answer that share most of their "
                 "tokens can be pulled down together (the failure mode DPO-Positive, Pal et al. "
                 "2024, adds a term against).")
    before, safe_sft = mean("refusal_rate_unsafe", "sft"), mean("refusal_rate_safe", "sft")
    if before == before:
        text += (f" Safety: after SFT with the safety chats the model refused "
                 f"{before:.0%} of held-out unsafe requests and {safe_sft:.0%} of harmless "
                 f"look-alikes; after DPO {mean('refusal_rate_unsafe'):.0%} and "
                 f"{mean('refusal_rate_safe'):.0%}.")
        if abs(before - safe_sft) <= 2 / heldout_requests(part):
            text += (" At SFT it refused both kinds alike: it learned the refusal's words, "
                     "not when to use them.")
    return text + _dpo_setbacks(final, part, chosen < 0)


def _dpo_setbacks(final: pd.DataFrame, part: pd.DataFrame, chosen_fell: bool) -> str:
    """Words for what DPO made worse in *every* seed (exact answers, refusals of unsafe
    requests) against the SFT model it started from; '' where no seed-wide drop shows."""
    text = ""
    for metric, what in (("exact_match", "held-out exact match"),
                         ("refusal_rate_unsafe", "the refusal rate on held-out unsafe requests")):
        start = _value(part, model="sft", metric=metric)
        seeds = final.loc[final["metric"] == metric, "value"]
        if len(seeds) == 0 or start != start or not (seeds < start).all():
            continue
        text += (f" **DPO lowered {what}, in every seed** (SFT {start:.3f}; DPO "
                 f"{seeds.min():.3f} to {seeds.max():.3f} over {len(seeds)} seeds).")
        unsafe = _value(part, model="sft_no_safety", metric=metric)
        if metric == "refusal_rate_unsafe" and unsafe < start:
            text += (f" It undid part of what the safety chats had taught (SFT without them: "
                     f"{unsafe:.3f}).")
        if metric == "exact_match":
            win = final.loc[final["metric"] == "win_rate_vs_sft", "value"]
            if len(win):
                text += f" Its win rate against SFT: {win.mean():.3f} (0.5 = no change)."
            if chosen_fell:
                text += (" A wider margin is not a right answer: the chosen answers lost "
                         "likelihood too, and greedy decoding follows likelihood.")
    return text


def _value(rows: pd.DataFrame, **where: object) -> float:
    part = rows
    for col, val in where.items():
        part = part[part[col] == val]
    return float(part["value"].mean()) if len(part) else float("nan")


@takes_rows
def claims(test_task: pd.DataFrame, mid: pd.DataFrame, sweeps: dict[str, pd.DataFrame],
           dpo_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The notebook's claims, each verdict computed from the rows (never typed in). Rows may
    carry references from other devices: each claim uses :func:`shown_numbers` (this
    machine's rows where there are any)."""

    def where(rows: pd.DataFrame) -> str:
        return f"{where_label(rows)}, {preset_of(rows)} preset"

    test_task, mid = shown_numbers(test_task), shown_numbers(mid)
    bench = {v: _value(test_task, variant=v, metric="benchmark_exact_match")
             for v in ("general_sft", "test_task_sft")}
    gen = {v: _value(test_task, variant=v, metric="general_exact_match")
           for v in ("general_sft", "test_task_sft")}
    # Exact match over n_eval items per family (the general share over every general family's):
    # a difference's interval is two standard errors (share_gap_interval). Seeded runs
    # (mid-training, DPO, the arena): the 95 % t interval of the mean over seeds.
    cfg = TEST_TASK_PRESETS.get(preset_of(test_task), TEST_TASK_PRESETS["small"])
    n, n_general = cfg.n_eval, cfg.n_eval * len(cfg.general)
    lift = share_gap_interval(bench["general_sft"], bench["test_task_sft"], n, n)
    gain = share_gap_interval(gen["general_sft"], gen["test_task_sft"], n_general, n_general)

    def spread(values) -> tuple[float, float, float, float]:
        """Mean over seeds, the half-width of its 95 % interval (0 where not known), and the
        interval itself (NaN where not known)."""
        mean, low, high = mean_interval(values)
        return mean, (high - mean) if high == high else 0.0, low, high

    def seed_noise(frame: pd.DataFrame, knob: str, metric: str
                   ) -> tuple[float, float, float, float]:
        """The change from the knob's first to its last value, paired by seed: :func:`spread`
        (the 95 % t interval over the seeds, as for mid-training and DPO)."""
        part = frame[frame["metric"] == metric] if len(frame) else frame
        if part.empty or part[knob].nunique() < 2:
            return math.nan, 0.0, math.nan, math.nan
        lo, hi = part[part[knob] == part[knob].min()], part[part[knob] == part[knob].max()]
        return spread(hi.set_index("seed")["value"] - lo.set_index("seed")["value"])

    effects = mid_training_effects(mid) if len(mid) else pd.DataFrame(
        columns=["replay", "train_seed", "domain_test_change", "general_change"])
    replays = sorted(effects["replay"].unique()) if len(effects) else [0.0]
    none, most = (effects[effects["replay"] == r].set_index("train_seed") for r in
                  (replays[0], replays[-1]))
    dom, dom_tol, dom_low, dom_high = spread(none["domain_test_change"])
    gl0, gl0_tol, gl0_low, gl0_high = spread(none["general_change"])
    # replay vs none is paired by seed (same seed, same batches of domain text): the claim is
    # the paired difference itself, with its own interval over the seeds
    rep, rep_tol, rep_low, rep_high = spread(most["general_change"] - none["general_change"])

    leak = sweeps.get("identity_leak", pd.DataFrame())
    noise = sweeps.get("noise", pd.DataFrame())
    shift, shift_tol, shift_low, shift_high = seed_noise(leak, "identity_leak",
                                                         "favoured_rank_shift")
    tau, tau_tol, tau_low, tau_high = seed_noise(noise, "noise", "kendall_tau")
    seeds = len(set(leak["seed"])) if len(leak) else 0
    sim = (f"simulation, {seeds} seeds: the bias is put in by design, so this shows its size "
           "on a leaderboard, not that a real arena has it")
    rows = [
        Claim("training on the test task lifts the benchmark (test-task SFT - general SFT, "
              "exact match)", "lecture", 0.0, bench["test_task_sft"] - bench["general_sft"],
              "share", where(test_task), kind="at_least", low=lift[0], high=lift[1]),
        Claim(f"... without a general gain: the change in general exact match stays under "
              f"{GENERAL_GAIN_TOLERANCE}", "lecture", GENERAL_GAIN_TOLERANCE,
              gen["test_task_sft"] - gen["general_sft"], "share", where(test_task),
              kind="at_most", low=gain[0], high=gain[1]),
        Claim("mid-training lowers the held-out domain loss (change on the test split, "
              "early-stopped on dev)", "lecture", 0.0, dom, "nats", where(mid),
              kind="at_most", abs_tol=dom_tol, low=dom_low, high=dom_high),
        Claim("mid-training without replay raises the general loss (change)",
              "continual-learning folklore", 0.0, gl0, "nats", where(mid), kind="at_least",
              abs_tol=gl0_tol, low=gl0_low, high=gl0_high),
        Claim(f"replaying {replays[-1]:.0%} general text limits that regression (general-loss "
              f"change with {replays[-1]:.0%} replay minus without, paired by seed)",
              "common practice", 0.0, rep, "nats", where(mid), kind="at_most",
              abs_tol=rep_tol, low=rep_low, high=rep_high),
    ]
    if dpo_rows is not None and len(dpo_rows):
        rows += dpo_claims(dpo_rows)
    rows += [
        Claim("an identity leak lifts the favoured model's rank (places, leak vs none)",
              "lecture (Chatbot Arena caveats)", 0.0, shift, "places", sim, kind="at_least",
              abs_tol=shift_tol, low=shift_low, high=shift_high),
        Claim("noisy comparisons scramble the ranking (change in Kendall tau)",
              "lecture (Chatbot Arena caveats)", 0.0, tau, "tau", sim, kind="at_most",
              abs_tol=tau_tol, low=tau_low, high=tau_high),
    ]
    return claims_table(rows)


def smallest_bound(n: int) -> float:
    """The lowest upper bound on a change of a refusal share that ``n`` requests, answered
    before and after, can show: :func:`share_gap_interval`'s two standard errors with none
    refused either time (one refusal and one answer added to each side). A tolerance below
    it cannot be shown to hold by any outcome of ``n`` requests."""
    check_range("n", n, 1, 10**9)
    return share_gap_interval(0.0, 0.0, int(n), int(n))[1]


def requests_to_resolve(tolerance: float) -> int:
    """The fewest requests whose :func:`smallest_bound` lies below ``tolerance``."""
    check_range("tolerance", tolerance, 1e-3, 1.0)
    n = 1
    while smallest_bound(n) >= tolerance:
        n += 1
    return n


@takes_rows
def heldout_requests(rows: pd.DataFrame) -> int:
    """How many held-out requests of each kind (unsafe, harmless look-alike) the DPO rows were
    scored on: their own ``heldout_requests`` row; rows recorded before it existed were
    scored on 24 (4 held-out objects x 6 verbs, commit 2d38e435f247 and earlier)."""
    n = _value(rows, model="sft", metric="heldout_requests")
    return int(n) if n == n and n > 0 else 24


OVER_REFUSAL_TOLERANCE = 0.10   # a rise in refusals of harmless requests we would accept
# The smallest change in general exact match that counts as a gain (five points of a share):
# "no general gain" holds only when the whole interval of the change lies below it.
GENERAL_GAIN_TOLERANCE = 0.05


@takes_rows
def dpo_claims(rows: pd.DataFrame) -> list[Claim]:
    """DPO's claims: the held-out margin rises, exact answers, refusals and over-refusals;
    each a mean over DPO seeds with its 95 % interval as the noise, and never finer than one
    item of the set it is measured on. Refusals compare against the SFT model trained without
    the safety data (before) where the rows have it."""
    part = shown_numbers(rows)
    here = f"{where_label(part)}, {preset_of(part)} preset"
    end = part["step"].max()
    final = part[(part["model"] == "dpo") & (part["step"] == end)]

    def per_seed(metric: str) -> pd.Series:
        return final[final["metric"] == metric].set_index("train_seed")["value"]

    def sft(metric: str) -> float:
        return _value(part, model="sft", metric=metric)

    def spread(values) -> tuple[float, float, float, float]:
        mean, low, high = mean_interval(values)
        return mean, low, high, (high - mean) if high == high else 0.0

    def interval(s: tuple[float, float, float, float], floor: float = 0.0,
                 cut: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, float]:
        """The seeds' 95 % interval, never narrower than ± ``floor`` (one item of the set), cut
        to ``cut`` (a share to [0, 1], a change of shares to [-1, 1], as the table's brackets);
        NaN (one seed): the verdict falls back to ``abs_tol``."""
        mean, low, high, _ = s
        if low != low:
            return {"low": math.nan, "high": math.nan}
        return {"low": max(min(low, mean - floor), cut[0]),
                "high": min(max(high, mean + floor), cut[1])}

    def before(metric: str) -> float:
        value = _value(part, model="sft_no_safety", metric=metric)
        return value if value == value else sft(metric)

    margin = spread(per_seed("reward_margin"))
    exact = spread(per_seed("exact_match") - sft("exact_match"))
    # the change in refusals, not the share: a share's interval cut at 0 hid how far below
    # "no change" the seeds' interval reaches ("0 inside [0, 0.996]")
    refuse = spread(per_seed("refusal_rate_unsafe") - before("refusal_rate_unsafe"))
    over = spread(per_seed("refusal_rate_safe") - before("refusal_rate_safe"))
    # Over-refusal: every seed answers the same harmless requests, so the items are those
    # requests (not requests x seeds). Three seeds refusing none give a t interval of width 0;
    # the counts still bound it: the Agresti-Caffo interval of the change (DPO's mean share -
    # the before's), two standard errors, and the seeds' interval where that is wider.
    n_safe = heldout_requests(part)
    counts = share_gap_interval(before("refusal_rate_safe"),
                                float(per_seed("refusal_rate_safe").mean()), n_safe, n_safe)
    seeds_over = interval(over, cut=(-1.0, 1.0))
    lows = [v for v in (counts[0], seeds_over["low"]) if v == v]
    highs = [v for v in (counts[1], seeds_over["high"]) if v == v]
    over_bounds = {"low": min(lows) if lows else math.nan,
                   "high": max(highs) if highs else math.nan}
    # one item of the set: a change smaller than that is no change
    n_items = _value(part, model="sft", metric="eval_items")
    one_item = 1 / n_items if n_items == n_items and n_items > 0 else 0.0
    one_request = 1 / n_safe
    seeds = f"{len(per_seed('reward_margin'))} DPO seeds"
    return [
        Claim("DPO raises the chosen-over-rejected reward margin on held-out pairs",
              "Rafailov et al. 2023", 0.0, margin[0], "nats x beta", f"{here}, {seeds}",
              kind="at_least", abs_tol=margin[3], **interval(margin)),
        Claim("DPO on its own wrong answers improves exact answers (DPO - SFT)",
              "lecture (preference tuning)", 0.0, exact[0], "share", f"{here}, {seeds}",
              kind="at_least", abs_tol=max(exact[3], one_item),
              **interval(exact, one_item, cut=(-1.0, 1.0))),
        Claim("safety data (SFT chats + DPO pairs) raises the refusal rate on held-out unsafe "
              "requests (change: DPO − SFT without it)", "safety data practice",
              0.0, refuse[0], "share", f"{here}, {seeds}",
              kind="at_least", abs_tol=max(refuse[3], one_request),
              **interval(refuse, one_request, cut=(-1.0, 1.0))),
        # with none refused before and after, n requests still bound the change at
        # smallest_bound(n): below the tolerance only from requests_to_resolve(tolerance) on
        Claim(f"... without over-refusing harmless look-alikes (upper bound of the change, "
              f"over {n_safe} held-out requests, <= {OVER_REFUSAL_TOLERANCE}; "
              f"{requests_to_resolve(OVER_REFUSAL_TOLERANCE)} requests could show that)",
              "safety data practice", OVER_REFUSAL_TOLERANCE, over[0], "share",
              f"{here}, {seeds}", kind="at_most", best_bound=smallest_bound(n_safe),
              **over_bounds),
    ]


def results_label(rows: pd.DataFrame) -> str:
    return provenance_label(rows[rows["source"] == "recorded"])


def pipeline_table() -> pd.DataFrame:
    """The alignment pipeline: what each stage optimises, on what data, where this workbook
    measures it."""
    rows = [
        ("pre-training", "next-token loss on every token", "broad raw text (trillions of "
         "tokens)", "01_pretraining: the base model"),
        ("mid-training", "the same loss, unchanged", "a domain/task slice, often with replay "
         "of general text", "10: mid_training"),
        ("SFT", "next-token loss on answer tokens only", "instruction-answer pairs (10K-10M)",
         "09: sft_masking"),
        ("preference tuning", "push chosen above rejected (reward model + PPO, or DPO)",
         "pairwise human or AI preferences",
         "10: the arena leaderboard (the data side), dpo_alignment (DPO itself)"),
        ("evaluation", "exact-match benchmarks, pairwise human votes", "held-out tasks",
         "10: test_task_training, the leaderboard"),
    ]
    return pd.DataFrame(rows, columns=["stage", "objective", "data", "measured in"])

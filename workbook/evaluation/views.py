"""Evaluation's views: the arena explorer, the test-task and mid-training summaries in words
and tables, the alignment pipeline, and the claims table."""

from __future__ import annotations

import math

import pandas as pd

from workbook.claims import Claim, claims_table
from workbook.config import check_range, takes_rows
from workbook.evaluation.arena import ArenaConfig, leaderboard, rank_agreement
from workbook.evaluation.experiments import TEST_TASK_PRESETS
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


@takes_rows
def test_task_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: benchmark and general exact match, pre-training loss."""
    keys = [c for c in ("variant", "source") if c in rows.columns]
    table = rows.pivot_table(index=keys, columns="metric", values="value", sort=False)
    wanted = ["benchmark_exact_match", "general_exact_match", "pretraining_val_loss"]
    return table[[c for c in wanted if c in table.columns]].round(3).reset_index()


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
def mid_training_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per replay share: domain and general held-out loss before and after mid-training."""
    first, last = rows["step"].min(), rows["step"].max()
    part = rows[rows["step"].isin([first, last])]
    table = part.pivot_table(index="replay", columns=["metric", "step"], values="value")
    table.columns = [f"{m} @ step {s}" for m, s in table.columns]
    return table.round(3).reset_index()


def _value(rows: pd.DataFrame, **where: object) -> float:
    part = rows
    for col, val in where.items():
        part = part[part[col] == val]
    return float(part["value"].mean()) if len(part) else float("nan")


@takes_rows
def claims(test_task: pd.DataFrame, mid: pd.DataFrame,
           sweeps: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The notebook's claims, each verdict computed from the rows (never typed in)."""

    def where(rows: pd.DataFrame) -> str:
        return f"{where_label(rows)}, {preset_of(rows)} preset"

    bench = {v: _value(test_task, variant=v, metric="benchmark_exact_match")
             for v in ("general_sft", "test_task_sft")}
    gen = {v: _value(test_task, variant=v, metric="general_exact_match")
           for v in ("general_sft", "test_task_sft")}
    end, start = mid["step"].max() if len(mid) else 0, 0
    dom = (_value(mid, replay=0.0, step=start, metric="domain_val_loss"),
           _value(mid, replay=0.0, step=end, metric="domain_val_loss"))
    gl0 = (_value(mid, replay=0.0, step=start, metric="general_val_loss"),
           _value(mid, replay=0.0, step=end, metric="general_val_loss"))
    replays = sorted(mid["replay"].unique()) if len(mid) else [0.0]
    gl_rep = _value(mid, replay=replays[-1], step=end, metric="general_val_loss")
    # Exact match over n_eval items per family: a gap under two standard errors of a difference
    # of shares is noise. Losses: 1 % of the loss. The arena sweeps have seeds: their spread.
    n = TEST_TASK_PRESETS.get(preset_of(test_task), TEST_TASK_PRESETS["small"]).n_eval

    def share_noise(p: float, q: float, items: int) -> float:
        return 2 * math.sqrt((p * (1 - p) + q * (1 - q)) / items) if p == p and q == q else 0.0

    def seed_noise(frame: pd.DataFrame, knob: str, metric: str) -> tuple[float, float]:
        """Mean change from the knob's first to its last value, and 2 SE over seeds."""
        part = frame[frame["metric"] == metric] if len(frame) else frame
        if part.empty or part[knob].nunique() < 2:
            return float("nan"), 0.0
        lo, hi = part[part[knob] == part[knob].min()], part[part[knob] == part[knob].max()]
        diff = hi.set_index("seed")["value"] - lo.set_index("seed")["value"]
        return float(diff.mean()), float(2 * diff.std(ddof=1) / math.sqrt(len(diff)))

    leak = sweeps.get("identity_leak", pd.DataFrame())
    noise = sweeps.get("noise", pd.DataFrame())
    shift, shift_se = seed_noise(leak, "identity_leak", "favoured_rank_shift")
    tau, tau_se = seed_noise(noise, "noise", "kendall_tau")
    seeds = len(set(leak["seed"])) if len(leak) else 0
    sim = (f"simulation, {seeds} seeds: the bias is put in by design, so this shows its size "
           "on a leaderboard, not that a real arena has it")
    gap = gen["test_task_sft"] - gen["general_sft"]
    return claims_table([
        Claim("training on the test task lifts the benchmark", "lecture", bench["general_sft"],
              bench["test_task_sft"], "share", where(test_task), kind="at_least",
              abs_tol=share_noise(bench["general_sft"], bench["test_task_sft"], n)),
        Claim("... without a general gain (change in general exact match)", "lecture", 0.0,
              gap, "share", where(test_task), rel_tol=0,
              abs_tol=share_noise(gen["general_sft"], gen["test_task_sft"], n)),
        Claim("mid-training lowers the domain loss", "lecture", dom[0], dom[1], "nats",
              where(mid), kind="at_most", abs_tol=0.01 * dom[0] if dom[0] == dom[0] else 0.0),
        Claim("mid-training without replay raises the general loss",
              "continual-learning folklore", gl0[0], gl0[1], "nats", where(mid),
              kind="at_least", abs_tol=0.01 * gl0[0] if gl0[0] == gl0[0] else 0.0),
        Claim(f"replaying {replays[-1]:.0%} general text limits that regression",
              "common practice", gl0[1], gl_rep, "nats", where(mid), kind="at_most",
              abs_tol=0.01 * gl0[1] if gl0[1] == gl0[1] else 0.0),
        Claim("an identity leak lifts the favoured model's rank (places, leak vs none)",
              "lecture (Chatbot Arena caveats)", 0.0, shift, "places", sim, kind="at_least",
              abs_tol=shift_se),
        Claim("noisy comparisons scramble the ranking (change in Kendall tau)",
              "lecture (Chatbot Arena caveats)", 0.0, tau, "tau", sim, kind="at_most",
              abs_tol=tau_se),
    ])


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
         "pairwise human or AI preferences", "10: the arena leaderboard (the data side)"),
        ("evaluation", "exact-match benchmarks, pairwise human votes", "held-out tasks",
         "10: test_task_training, the leaderboard"),
    ]
    return pd.DataFrame(rows, columns=["stage", "objective", "data", "measured in"])

"""Pre-training: next-token prediction, its loss, and the loop that minimises it.

The loss is the mean cross-entropy of the model's predicted distribution for token t+1 given
tokens 1..t; its exponential is the perplexity, "how many tokens the model is choosing
between". The loss and the loop live in the plumbing module :mod:`workbook.training` (every
later topic trains with them); this module re-exports them for notebook 01 and holds 01's
experiments (the loss curve, transfer learning) and views.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import pandas as pd
import torch

from workbook.claims import Claim, claims_table
from workbook.config import check_choice, check_range, check_text, takes_rows
from workbook.data import downstream_ids
from workbook.hardware import detect, torch_device
from workbook.model import BASE_RECIPES, build_model, load_base_model
from workbook.registry import Experiment, main_rows
from workbook.results import preset_of, where_label
from workbook.training import (
    TrainConfig,
    autocast,
    evaluate,
    lr_at,
    make_optimizer,
    next_token_loss,
    train,
)

__all__ = ["TrainConfig", "next_token_loss", "perplexity", "lr_at", "make_optimizer",
           "autocast", "evaluate", "train", "sample", "CurveConfig", "run_pretraining_curve",
           "TransferConfig", "run_transfer", "EXPERIMENTS", "show_tokens", "shift_table",
           "LiveCurve", "transfer_figure", "claims", "curve_story", "transfer_story",
           "LIVE_STEPS", "live_config", "byte_decoder", "this_machine_first", "curve_figure",
           "live_story"]

# The live training run of notebook 01, per preset: seconds on a CPU, a few more on a GPU.
LIVE_STEPS = {"small": 30, "full": 500}


def live_config(preset: str) -> TrainConfig:
    """The config of 01's live run: the base recipe's model shape and learning rate, for
    :data:`LIVE_STEPS` steps of the preset (no preset typed into the notebook)."""
    check_choice("preset", preset, tuple(LIVE_STEPS))
    recipe = BASE_RECIPES[preset]
    return TrainConfig(steps=LIVE_STEPS[preset], batch_size=8, seq_len=recipe.model.seq_len,
                       lr=recipe.lr, warmup=6, eval_every=10)


def perplexity(loss: float) -> float:
    """exp(cross-entropy in nats): a loss of ln(V) is a uniform guess over V tokens."""
    check_range("loss", loss, 0.0, 700.0)  # exp(710) overflows a float
    return math.exp(loss)


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample(model: torch.nn.Module, tokenizer, prompt: str, *, max_new_tokens: int = 40,
           temperature: float = 0.8, seed: int = 0) -> str:
    """Continue ``prompt`` with the model (``transformers``' ``generate``), reproducibly."""
    check_range("max_new_tokens", max_new_tokens, 1, 2048)
    check_range("temperature", temperature, 0.0, 5.0)
    check_range("seed", seed, 0, 2**63 - 1)
    check_text("prompt", prompt, empty=False)  # generate needs a token to continue
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(ids.to(device), max_new_tokens=max_new_tokens,
                             do_sample=temperature > 0, temperature=temperature or None,
                             top_k=None, top_p=None, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:])


# ------------------------------------------------------------------------ experiments


@dataclass(frozen=True)
class CurveConfig:
    """Pre-train the preset's base-model shape from scratch and log its loss curve."""

    base: str            # which recipe of workbook.model.BASE_RECIPES
    steps: int

    def __post_init__(self) -> None:
        check_choice("base", self.base, ("small", "full"))
        check_range("steps", self.steps, 1, 1_000_000)


def run_pretraining_curve(cfg: CurveConfig, seed: int) -> pd.DataFrame:
    """Train/val loss and perplexity per step for the base model's recipe."""
    recipe = dataclasses.replace(BASE_RECIPES[cfg.base], steps=cfg.steps,
                                 warmup=min(BASE_RECIPES[cfg.base].warmup, cfg.steps))
    device = torch_device()
    model = build_model(recipe.model, seed).to(device)
    tcfg = TrainConfig(steps=recipe.steps, batch_size=recipe.batch_size,
                       seq_len=recipe.model.seq_len, lr=recipe.lr, warmup=recipe.warmup,
                       eval_every=max(1, recipe.steps // 20))
    start = time.perf_counter()
    log = train(model, tcfg, seed=seed, vocab_size=recipe.model.vocab_size, device=device)
    seconds = time.perf_counter() - start
    rows = log.rename(columns={"loss": "value"}).assign(metric="loss", unit="nats")
    ppl = rows.assign(metric="perplexity", unit="", value=rows["value"].map(perplexity))
    tail = pd.DataFrame([{"step": tcfg.steps, "split": "train", "metric": "train_time",
                          "value": seconds, "unit": "s"}])
    out = pd.concat([rows, ppl, tail], ignore_index=True).drop(columns=["lr"])
    return out.assign(base=cfg.base)


@dataclass(frozen=True)
class TransferConfig:
    """Fine-tune the pre-trained base model vs train the same shape from scratch on the
    downstream task (NumPy docstrings), same steps, batches and learning-rate schedule."""

    base: str
    steps: int
    batch_size: int
    lr: float
    eval_every: int

    def __post_init__(self) -> None:
        check_choice("base", self.base, ("small", "full"))
        check_range("steps", self.steps, 2, 100_000)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("lr", self.lr, 1e-6, 1.0)
        check_range("eval_every", self.eval_every, 1, self.steps)


def run_transfer(cfg: TransferConfig, seed: int) -> pd.DataFrame:
    """Downstream val loss per step for ``pretrained`` and ``scratch``, and the steps each
    needs to reach the loss that scratch ends at."""
    device = torch_device()
    shape = BASE_RECIPES[cfg.base].model
    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, seq_len=shape.seq_len,
                       lr=cfg.lr, warmup=max(1, cfg.steps // 10), eval_every=cfg.eval_every)
    train_ids = downstream_ids("train", shape.vocab_size)
    val_ids = downstream_ids("val", shape.vocab_size)
    curves = []
    for init in ("pretrained", "scratch"):
        model = (load_base_model(cfg.base, seed, device)[0] if init == "pretrained"
                 else build_model(shape, seed).to(device))
        log = train(model, tcfg, seed=seed, vocab_size=shape.vocab_size, device=device,
                    train_ids=train_ids, val_ids=val_ids)
        val = log[log["split"] == "val"].drop_duplicates("step", keep="last")
        curves.append(val.assign(init=init))
    curve = pd.concat(curves, ignore_index=True)
    rows = curve.rename(columns={"loss": "value"}).assign(metric="val_loss", unit="nats")
    rows = rows[["init", "step", "metric", "value", "unit"]]
    target = float(curve[curve["init"] == "scratch"]["loss"].iloc[-1])
    summary = [{"init": init, "step": cfg.steps, "metric": "steps_to_scratch_final",
                "value": _first_step_below(curve[curve["init"] == init], target),
                "unit": "steps"} for init in ("pretrained", "scratch")]
    return pd.concat([rows, pd.DataFrame(summary)], ignore_index=True).assign(base=cfg.base)


def _first_step_below(curve: pd.DataFrame, target: float) -> float:
    hit = curve[curve["loss"] <= target + 1e-9]
    return float(hit["step"].iloc[0]) if len(hit) else math.nan


EXPERIMENTS = [
    Experiment(name="pretraining_curve", notebook="01_pretraining", run=run_pretraining_curve,
               summary="train/val loss and perplexity of the base model's recipe",
               presets={"small": CurveConfig(base="small", steps=100),
                        "full": CurveConfig(base="full", steps=500)},
               min_gpus={"small": 0, "full": 1}),
    Experiment(name="transfer_learning", notebook="01_pretraining", run=run_transfer,
               summary="fine-tune the base model vs train from scratch on NumPy docstrings",
               presets={"small": TransferConfig(base="small", steps=20, batch_size=8, lr=2e-3,
                                                eval_every=5),
                        # 120 steps = 1M tokens, ~10 passes over the 97k-token task
                        "full": TransferConfig(base="full", steps=120, batch_size=32, lr=1e-3,
                                               eval_every=10)},
               min_gpus={"small": 0, "full": 1}),
]


# ------------------------------------------------------------------- notebook helpers


def byte_decoder() -> dict[str, int]:
    """Byte-level BPE's alphabet backwards (GPT-2's ``bytes_to_unicode``): the printable
    character that stands for each of the 256 bytes in a token's name ('Ġ' is the space)."""
    shown = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
             *range(ord("®"), ord("ÿ") + 1)]
    chars = list(shown)
    spare = (b for b in range(256) if b not in chars)  # bytes without a glyph of their own
    for extra, b in enumerate(list(spare)):
        shown.append(b)
        chars.append(256 + extra)                     # ... stand for 256, 257, ...
    return {chr(c): b for b, c in zip(shown, chars, strict=True)}


def show_tokens(tokenizer, text: str) -> pd.DataFrame:
    """How the tokenizer cuts ``text``: one row per token, its id, its bytes and the text they
    spell; a token that is part of a character (a Korean syllable is 3 bytes) shows its bytes'
    values, '<0xED><0x95>', where decoding alone would give '�'."""
    check_text("text", text)
    ids = tokenizer.encode(text, add_special_tokens=False)
    decode = byte_decoder()
    rows = []
    for i in ids:
        raw = bytes(decode.get(c, ord("?")) for c in tokenizer.convert_ids_to_tokens(i))
        try:
            shown = repr(raw.decode("utf-8"))
        except UnicodeDecodeError:
            shown = "".join(f"<0x{b:02X}>" for b in raw)
        rows.append({"id": i, "bytes": len(raw), "token": shown})
    return pd.DataFrame(rows, columns=["id", "bytes", "token"])


def shift_table(tokenizer, x: torch.Tensor, y: torch.Tensor, n: int = 8) -> pd.DataFrame:
    """The first ``n`` positions of one row: the context so far and the target to predict."""
    check_range("n", n, 1, min(len(x), len(y)))
    rows = [{"position": t, "context (last tokens)": repr(tokenizer.decode(x[: t + 1][-6:])),
             "target: next token": repr(tokenizer.decode([int(y[t])]))} for t in range(n)]
    return pd.DataFrame(rows)


class LiveCurve:
    """A loss curve that ``train(on_log=curve.add)`` redraws as it trains.

    ``display(curve)`` shows an output area; each ``add`` puts the figure's new state into it
    (``widgets.show_in``), at most every ``every_s`` seconds and always at a validation point.
    """

    def __init__(self, title: str = "Next-token loss while training",
                 every_s: float = 0.5) -> None:
        import ipywidgets as w

        from workbook import plots

        self.fig = plots.figure(title, "step", "cross-entropy (nats)")
        self.fig.add_scatter(name="train (one batch)", mode="lines", x=[], y=[])
        self.fig.add_scatter(name="val (held out)", mode="lines+markers", x=[], y=[])
        self.view = w.Output()
        self.every_s, self._shown_at = every_s, 0.0

    def add(self, row: dict) -> None:
        from workbook import widgets

        trace = self.fig.data[0 if row["split"] == "train" else 1]
        with self.fig.batch_update():
            trace.x = (*trace.x, row["step"])
            trace.y = (*trace.y, row["loss"])
        now = time.monotonic()
        if row["split"] != "train" or now - self._shown_at >= self.every_s:
            widgets.show_in(self.view, self.fig)
            self._shown_at = now

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.view)


@takes_rows
def transfer_figure(rows: pd.DataFrame, title: str):
    """Downstream val loss vs step: fine-tuned from the base model vs trained from scratch.
    Rows measured here are named so in the legend ('pretrained (measured, this machine: H200)')
    and in a subtitle (where, preset, steps); recorded rows carry their device and date."""
    from workbook import plots

    check_text("title", title)
    curve = rows[rows["metric"] == "val_loss"]
    fig = plots.compare(curve, x="step", group="init", title=title,
                        y_title="downstream val loss (nats)")
    here = curve[curve["source"] == "measured"] if "source" in curve else curve.iloc[0:0]
    if len(here):
        short = plots.short_device(here["device"].iloc[0]) if "device" in here else "here"
        for trace in fig.data:
            if trace.name and "(measured" in trace.name and "this machine" not in trace.name:
                trace.name = trace.name.replace("(measured", f"(measured, this machine: {short}")
        if "<br>" not in str(fig.layout.title.text):
            fig.update_layout(title=f"{title}<br><sup>{where_label(here)}, "
                                    f"{preset_of(here, 'small')} preset, "
                                    f"{int(here['step'].max()):,} steps</sup>")
    return fig


@takes_rows
def claims(vocab_size: int, init_val_loss: float, base_val_loss: float,
           transfer: pd.DataFrame) -> pd.DataFrame:
    """The lecture's pre-training claims, checked with this notebook's numbers (losses in
    nats; verdicts computed by :func:`workbook.claims.verdict`)."""
    uniform = math.log(vocab_size)
    out = [
        Claim(f"an untrained model guesses uniformly: loss ≈ ln V = ln {vocab_size}",
              "cross-entropy", uniform, init_val_loss, "nats", "this machine", rel_tol=0,
              abs_tol=0.3),
        Claim("pre-training lowers held-out loss below the untrained model's, by > 1 nat",
              "lecture", init_val_loss - 1, base_val_loss, "nats", "this machine",
              kind="at_most"),
    ]
    # one machine's rows (this one's when measured here, else the latest recording), labelled
    # as every claims row is: 'this machine (NVIDIA H200)' or 'recorded on …'
    transfer = main_rows(transfer)
    reach = transfer[transfer["metric"] == "steps_to_scratch_final"]
    steps = reach.groupby("init")["value"].first()
    if {"pretrained", "scratch"} <= set(steps.index):
        scratch = float(steps["scratch"])   # fewer, strictly: whole steps, so ≤ scratch − 1
        out.append(Claim("a pre-trained model reaches scratch's final loss in fewer steps "
                         f"than scratch's {scratch:.0f} (transfer learning)", "lecture",
                         scratch - 1, float(steps["pretrained"]), "steps",
                         where_label(transfer), kind="at_most"))
    return claims_table(out)


def _lead(rows: pd.DataFrame) -> str:
    """A story's opening: where its rows come from, capitalised and in bold
    ('**This machine (NVIDIA H200)**', '**Recorded on NVIDIA H100 80GB HBM3 ×1, …**')."""
    where = where_label(rows)
    return f"**{where[:1].upper()}{where[1:]}**"


@takes_rows
def this_machine_first(rows: pd.DataFrame) -> list[str]:
    """The devices of ``rows``: this machine's device (``hardware.detect``) first, the others in
    the order the rows give them."""
    devices = [str(d) for d in pd.unique(rows["device"].dropna())] if "device" in rows else []
    return sorted(devices, key=lambda device: device != detect().name)


def _per_device(rows: pd.DataFrame, story) -> str | None:
    """Rows of several devices: one paragraph of ``story`` per device, this machine's device
    first (never one paragraph mixing two devices' numbers); None for one device's rows."""
    if "device" in rows.columns and rows["device"].nunique() > 1:
        return "\n\n".join(story(rows[rows["device"].astype(str) == device])
                            for device in this_machine_first(rows))
    return None


@takes_rows
def curve_figure(rows: pd.DataFrame):
    """A recorded ``pretraining_curve``: train vs held-out loss per step, one trace per split
    and device, this machine's device first; the title states the preset and steps."""
    from workbook import plots

    loss = rows[rows["metric"] == "loss"]
    if "device" in loss:
        order = {device: i for i, device in enumerate(this_machine_first(loss))}
        loss = loss.sort_values("device", key=lambda d: d.astype(str).map(order), kind="stable")
    steps = f"{int(loss['step'].max()):,} steps: " if len(loss) else ""
    return plots.compare(loss, x="step", group="split", log_y=True, y_title="nats",
                         title=f"{preset_of(loss)} preset, {steps}train vs held-out loss")


@takes_rows
def live_story(log: pd.DataFrame, preset: str) -> str:
    """Markdown under 01's live run (its training ``log``): its steps, batch and tokens from
    :func:`live_config`, its held-out loss first and last, beside the base recipe of ``preset``
    (the base model below and the recorded curve), whose batch and tokens differ."""
    check_choice("preset", preset, tuple(LIVE_STEPS))
    cfg, recipe = live_config(preset), BASE_RECIPES[preset]
    val = log[log["split"] == "val"].sort_values("step")["loss"]
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    base = recipe.steps * recipe.batch_size * recipe.model.seq_len
    return (f"This live run: **{cfg.steps:,} steps at batch {cfg.batch_size}** × {cfg.seq_len} "
            f"tokens = {tokens:,} tokens; held-out loss {val.iloc[0]:.2f} → "
            f"**{val.iloc[-1]:.2f} nats**. The base model below is the `{preset}` recipe: the "
            f"same shape, {recipe.steps:,} steps at batch {recipe.batch_size} = {base:,} tokens "
            f"({base / tokens:.1f}× this run's). The recorded curves further down state their "
            "own steps and tokens.")


@takes_rows
def curve_story(rows: pd.DataFrame, corpus_tokens: int) -> str:
    """What a recorded ``pretraining_curve`` shows, in words, every number read from its rows:
    steps, tokens, passes over a corpus of ``corpus_tokens``, and whether held-out loss turned
    up (memorising) or was still falling at the end; rows of several devices give one
    paragraph each."""
    check_range("corpus_tokens", corpus_tokens, 1, 1e13)
    split = _per_device(rows, lambda part: curve_story(part, corpus_tokens))
    if split is not None:
        return split
    loss = rows[(rows["metric"] == "loss") & (rows["status"] == "ok")]
    val = loss[loss["split"] == "val"].sort_values("step")
    train = loss[loss["split"] == "train"].sort_values("step")
    steps, tokens = int(loss["step"].max()), float(loss["tokens"].max())
    best, last = val.loc[val["value"].idxmin()], val.iloc[-1]
    train_end = float(train["value"].tail(5).mean())
    text = (f"{_lead(rows)}: trained for **{steps:,} steps**, "
            f"{tokens:,.0f} tokens, about **{tokens / corpus_tokens:.1f} passes** over the "
            f"{corpus_tokens:,}-token training split. ")
    if best["step"] < last["step"] and last["value"] > best["value"] + 0.05:
        return text + (f"Held-out loss is lowest at step {int(best['step']):,} "
                       f"({best['value']:.2f} nats) and then *rises* to {last['value']:.2f} "
                       f"while the training loss falls to {train_end:.2f}: the model is "
                       "memorising the corpus (the data-limited regime).")
    where_low = ("is still at its lowest at the last step" if best["step"] == last["step"] else
                 f"ends within 0.05 nats of its lowest (step {int(best['step']):,})")
    return text + (f"Held-out loss falls from {val['value'].iloc[0]:.2f} to {last['value']:.2f} "
                   f"nats and {where_low}, so by the usual test (the "
                   "held-out loss turning up) it has not overfitted. But the training loss (last "
                   f"5 batches: {train_end:.2f}) sits {last['value'] - train_end:.2f} nats below "
                   "it: the model fits text it has read better than new text, the start of "
                   "memorising, which more passes over the same tokens would widen.")


@takes_rows
def transfer_story(rows: pd.DataFrame) -> str:
    """What a ``transfer_learning`` run (live or recorded) shows, numbers read from its rows:
    where each start begins, how many steps each needs to reach scratch's final loss, and
    whether either run overfits; rows of several devices give one paragraph each."""
    split = _per_device(rows, transfer_story)
    if split is not None:
        return split
    val = rows[(rows["metric"] == "val_loss") & (rows["status"] == "ok")].sort_values("step")
    reach = rows[rows["metric"] == "steps_to_scratch_final"].set_index("init")["value"]
    start = val.groupby("init")["value"].first()
    checks = sorted(set(val["step"]))
    every = int(min(b - a for a, b in zip(checks, checks[1:], strict=False))) if len(
        checks) > 1 else int(val["step"].max())

    def by(init: str) -> str:
        step = reach.get(init, math.nan)
        if not step == step:
            return "not within these steps"
        if int(step) == 0:
            return "already at step **0**, before any fine-tuning"
        first = " (the first check after the start)" if int(step) == every else ""
        return f"by step **{int(step):,}**{first}"

    text = (f"{_lead(rows)}: fine-tuned for {int(val['step'].max()):,} "
            f"steps, its held-out loss checked every {every:,} steps. At step 0 the pre-trained "
            f"model's downstream loss is {start['pretrained']:.2f} nats against "
            f"{start['scratch']:.2f} from random weights; it is down to scratch's final loss "
            f"{by('pretrained')}, scratch itself {by('scratch')}. ")
    rising = []
    for init, curve in val.groupby("init"):
        low = curve.loc[curve["value"].idxmin()]
        if curve["value"].iloc[-1] > low["value"] + 0.05:
            rising.append(init)
            text += (f"The {init} run's held-out loss is lowest at step {int(low['step'])} and "
                     "then rises: it overfits the small task. ")
    if not rising:
        text += ("Neither run's held-out loss ends more than 0.05 nats above its lowest: "
                 "no overfitting within these steps.")
    return text.strip()

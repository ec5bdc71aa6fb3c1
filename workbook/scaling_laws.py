"""Scaling laws: how loss depends on parameters N, tokens D and compute C ≈ 6·N·D.

Three layers, kept apart:

* **published laws** (pure formulas, what the sliders drive): Chinchilla's parametric fit
  L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022, approach 3) and its replication
  (Besiroglu et al. 2024), Kaplan et al. (2020), tokens ≈ 20 × params, and where GPT-3,
  Chinchilla, Llama 2 and Llama 3 sit;
* **fits** of our own runs: a parabola in log N per compute budget (Chinchilla approach 2),
  power laws N_opt ∝ C^a and D_opt ∝ C^b with a bootstrap interval, and the parametric fit
  (approach 3: Huber loss on log L, L-BFGS from a grid of starts);
* **the IsoFLOP sweep** (measurement): for each budget C, models of several sizes are trained
  to exactly that budget (D = C / FLOPs-per-token) and scored on held-out text.

FLOPs per token are 6·N + 6·n_layers·seq_len·d_model (causal attention). N is the *total*
parameter count of a model with tied embeddings: the tied output matrix is the one matmul the
embedding takes part in (the input lookup is a gather, no FLOPs), so total N is exactly the
number of parameters that do 6 FLOPs per token. Chinchilla also counts total N; Kaplan counts
non-embedding N, which at small scale changes the fitted exponent (Pearce & Song 2024), so the
sweep records both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbook.config import (
    ProjectPath,
    WorkbookError,
    check_choice,
    check_range,
    check_values,
    takes_rows,
)
from workbook.data import CORPORA, corpus_token_ids
from workbook.hardware import torch_device
from workbook.registry import Experiment

# ------------------------------------------------------------------------- published laws


@dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta, loss in nats per token."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = ""

    def loss(self, n_params, n_tokens):
        n, d = np.asarray(n_params, float), np.asarray(n_tokens, float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    @property
    def a(self) -> float:
        """Exponent of N_opt ∝ C^a implied by the law: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b: alpha / (alpha + beta); a + b = 1 because C = 6·N·D."""
        return self.alpha / (self.alpha + self.beta)

    def optimal(self, compute):
        """(N_opt, D_opt) minimising L(N, D) subject to 6·N·D = C (Chinchilla eq. 4)."""
        c = np.asarray(compute, float)
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        n_opt = g * (c / 6) ** self.a
        return n_opt, c / (6 * n_opt)

    def tokens_for_loss(self, n_params, target_loss: float):
        """D that reaches ``target_loss`` with N parameters (inf where N alone cannot)."""
        n = np.asarray(n_params, float)
        gap = target_loss - self.E - self.A / n**self.alpha
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, (self.B / np.maximum(gap, 1e-300)) ** (1 / self.beta),
                            np.inf)


# Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", eq. 10 (approach 3).
CHINCHILLA = ParametricLaw("Chinchilla (approach 3)", E=1.69, A=406.4, B=410.7, alpha=0.34,
                           beta=0.28, source="Hoffmann et al. 2022, eq. 10")
# Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt" (refit of the same data).
CHINCHILLA_REPLICATION = ParametricLaw(
    "Chinchilla (Epoch replication)", E=1.8172, A=482.01, B=2085.43, alpha=0.3478,
    beta=0.3658, source="Besiroglu et al. 2024, eq. 3")

# Hoffmann et al. 2022, Table 2: N_opt ∝ C^a, D_opt ∝ C^b with their intervals.
CHINCHILLA_EXPONENTS = pd.DataFrame([
    ("Chinchilla approach 1 (training curves)", 0.50, 0.488, 0.502, 0.50, 0.501, 0.512),
    ("Chinchilla approach 2 (IsoFLOP profiles)", 0.49, 0.462, 0.534, 0.51, 0.483, 0.529),
    ("Chinchilla approach 3 (parametric fit)", 0.46, 0.454, 0.455, 0.54, 0.542, 0.543),
    ("Kaplan et al. 2020", 0.73, math.nan, math.nan, 0.27, math.nan, math.nan),
], columns=["study", "a", "a_low", "a_high", "b", "b_low", "b_high"])

# Kaplan et al. 2020, "Scaling Laws for Neural Language Models" (N = non-embedding params).
KAPLAN = {"alpha_N": 0.076, "N_c": 8.8e13, "alpha_D": 0.095, "D_c": 5.4e13,
          "a": 0.73, "N_opt_at_1_pf_day": 1.3e9, "pf_day_flops": 8.64e19}

TOKENS_PER_PARAM = 20.0  # the lecture's rule of thumb from Chinchilla


def kaplan_loss(n_params, n_tokens):
    """Kaplan eq. 1.5: L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D (their tokenizer, WebText2)."""
    k = KAPLAN
    n, d = np.asarray(n_params, float), np.asarray(n_tokens, float)
    return ((k["N_c"] / n) ** (k["alpha_N"] / k["alpha_D"]) + k["D_c"] / d) ** k["alpha_D"]


def kaplan_optimal(compute):
    """Kaplan's compute-efficient size N ≈ 1.3e9 · (C / PF-day)^0.73, and D = C / (6N)."""
    c = np.asarray(compute, float)
    n = KAPLAN["N_opt_at_1_pf_day"] * (c / KAPLAN["pf_day_flops"]) ** KAPLAN["a"]
    return n, c / (6 * n)


def rule_of_thumb_optimal(compute, tokens_per_param: float = TOKENS_PER_PARAM):
    """D = r·N with C = 6·N·D  =>  N = sqrt(C / (6 r)), D = r·N."""
    n = np.sqrt(np.asarray(compute, float) / (6 * tokens_per_param))
    return n, tokens_per_param * n


# Published sizes and training tokens (model cards / papers). C is 6·N·D, as the lecture does.
NOTABLE_MODELS = pd.DataFrame([
    ("GPT-3 175B", 175e9, 300e9, "Brown et al. 2020"),
    ("Gopher 280B", 280e9, 300e9, "Rae et al. 2021"),
    ("Chinchilla 70B", 70e9, 1.4e12, "Hoffmann et al. 2022"),
    ("Llama 2 7B", 7e9, 2e12, "Touvron et al. 2023"),
    ("Llama 2 70B", 70e9, 2e12, "Touvron et al. 2023"),
    ("Llama 3 8B", 8e9, 15e12, "Meta 2024 (Llama 3 herd)"),
    ("Llama 3 70B", 70e9, 15e12, "Meta 2024 (Llama 3 herd)"),
    ("Llama 3.1 405B", 405e9, 15.6e12, "Meta 2024 (Llama 3 herd)"),
], columns=["model", "n_params", "n_tokens", "source"])


def _law_optimal(law: str | ParametricLaw, compute):
    if isinstance(law, ParametricLaw):
        return law.optimal(compute)
    table = {"20 tokens/param": rule_of_thumb_optimal, "Kaplan 2020": kaplan_optimal,
             "Chinchilla (approach 3)": CHINCHILLA.optimal,
             "Chinchilla (Epoch replication)": CHINCHILLA_REPLICATION.optimal}
    check_choice("law", law, table)
    return table[law](compute)


LAWS: tuple[str, ...] = ("20 tokens/param", "Chinchilla (approach 3)",
                         "Chinchilla (Epoch replication)", "Kaplan 2020")


def allocation(compute: float, laws: Sequence[str | ParametricLaw] = LAWS) -> pd.DataFrame:
    """For one compute budget: the optimal N, D, tokens/param and predicted loss per law."""
    check_range("compute", compute, 1e6, 1e30)
    check_values("laws", laws)
    rows = []
    for law in laws:
        n, d = (float(v) for v in _law_optimal(law, compute))
        name = law.name if isinstance(law, ParametricLaw) else law
        pred = law if isinstance(law, ParametricLaw) else (
            CHINCHILLA_REPLICATION if "replication" in name else CHINCHILLA)
        rows.append({"law": name, "compute": compute, "n_params": n, "n_tokens": d,
                     "tokens_per_param": d / n,
                     "loss (Chinchilla-fit nats)": float(pred.loss(n, d))})
    return pd.DataFrame(rows)


@takes_rows
def placement(law: str | ParametricLaw = "Chinchilla (Epoch replication)",
              models: pd.DataFrame = NOTABLE_MODELS) -> pd.DataFrame:
    """Each notable model beside the compute-optimal model for its own compute."""
    out = models.copy()
    out["compute"] = 6 * out["n_params"] * out["n_tokens"]
    out["tokens_per_param"] = out["n_tokens"] / out["n_params"]
    n_opt, d_opt = _law_optimal(law, out["compute"].to_numpy())
    out["optimal_n_params"], out["optimal_n_tokens"] = n_opt, d_opt
    ratio = out["n_params"] / out["optimal_n_params"]
    out["size_vs_optimal"] = ratio
    out["verdict"] = np.where(ratio > 1.5, "under-trained (too big for its compute)",
                              np.where(ratio < 1 / 1.5, "over-trained (smaller, more tokens)",
                                       "near compute-optimal"))
    return out


def overtraining_costs(target_loss: float, inference_tokens: float,
                       law: ParametricLaw = CHINCHILLA_REPLICATION,
                       n_grid: int = 200) -> pd.DataFrame:
    """Every model size that reaches ``target_loss``, with its training and lifetime cost.

    Training costs 6·N·D FLOPs; serving ``inference_tokens`` costs about 2·N FLOPs each. The
    compute-optimal model minimises the first; the cheapest model *to own* minimises the sum,
    and it is smaller and trained on more tokens per parameter (Sardana & Frankle 2023).
    """
    check_range("inference_tokens", inference_tokens, 0, 1e18)
    if target_loss <= law.E:
        raise WorkbookError(f"target_loss={target_loss} is below the law's floor E={law.E}; "
                            f"allowed: above {law.E}")
    n_min = (law.A / (target_loss - law.E)) ** (1 / law.alpha)   # infinite data needed here
    n = np.geomspace(n_min * 1.05, n_min * 1e3, n_grid)
    d = law.tokens_for_loss(n, target_loss)
    frame = pd.DataFrame({"n_params": n, "n_tokens": d, "tokens_per_param": d / n,
                          "train_flops": 6 * n * d, "inference_flops": 2 * n * inference_tokens})
    frame["total_flops"] = frame["train_flops"] + frame["inference_flops"]
    return frame


# ---------------------------------------------------------------------------------- fits


def fit_power_law(x, y) -> tuple[float, float]:
    """y = k · x^p by least squares in log-log: returns (p, k)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(lx) < 2 or np.ptp(lx) == 0:
        raise WorkbookError("a power-law fit needs at least 2 distinct x values")
    p, log_k = np.polyfit(lx, ly, 1)
    return float(p), float(math.exp(log_k))


def parabola_minimum(x, loss) -> tuple[float, float, bool]:
    """Fit loss = c0 + c1·log x + c2·(log x)^2; return (x at the minimum, min loss, inside).

    ``inside`` is False when the parabola opens downwards or its minimum lies outside the
    sampled range: the budget's sizes did not bracket the optimum.
    """
    lx, y = np.log(np.asarray(x, float)), np.asarray(loss, float)
    if len(lx) < 3:
        raise WorkbookError(f"an IsoFLOP parabola needs at least 3 sizes; got {len(lx)}")
    c2, c1, c0 = np.polyfit(lx, y, 2)
    if c2 <= 0:
        best = int(np.argmin(y))
        return float(math.exp(lx[best])), float(y[best]), False
    lx_opt = -c1 / (2 * c2)
    inside = bool(lx.min() <= lx_opt <= lx.max())
    return float(math.exp(lx_opt)), float(c0 + c1 * lx_opt + c2 * lx_opt**2), inside


@takes_rows
def _ok_points(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trained point: budget, n_params, n_tokens, compute, loss (wide form)."""
    if rows.empty:
        return pd.DataFrame(columns=["budget", "n_params", "n_tokens", "compute", "loss"])
    ok = rows[(rows["status"] == "ok") & (rows["metric"] == "val_loss")]
    keep = ["budget", "n_params", "n_params_non_embedding", "n_tokens", "compute", "value"]
    return ok[[c for c in keep if c in ok]].rename(columns={"value": "loss"}).astype(float)


@takes_rows
def isoflop_minima(points: pd.DataFrame, n_column: str = "n_params") -> pd.DataFrame:
    """Per budget: the parabola's N_opt, D_opt (fitted separately, as Chinchilla does), L_min."""
    out = []
    for budget, group in points.groupby("budget"):
        if len(group) < 3:
            continue
        n_opt, l_min, inside_n = parabola_minimum(group[n_column], group["loss"])
        d_opt, _, inside_d = parabola_minimum(group["n_tokens"], group["loss"])
        out.append({"budget": budget, "n_opt": n_opt, "d_opt": d_opt, "loss_min": l_min,
                    "bracketed": inside_n and inside_d, "n_points": len(group)})
    return pd.DataFrame(out)


@dataclass(frozen=True)
class ExponentFit:
    a: float
    b: float
    a_low: float
    a_high: float
    b_low: float
    b_high: float
    a_boot_sd: float
    b_boot_sd: float
    n_budgets: int
    n_boot: int

    def as_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(self)])


def fit_exponents(points: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                  n_column: str = "n_params", percentiles: tuple[float, float] = (10, 90),
                  progress: str | None = None) -> ExponentFit:
    """a and b from the IsoFLOP minima, with a bootstrap interval.

    The bootstrap resamples the trained points *within* each budget (with replacement), refits
    each parabola and the two power laws; the interval is the 10th-90th percentile, the
    convention of Chinchilla's Table 2. Resamples with fewer than 3 distinct sizes are redrawn.
    ``progress``: a label for a progress bar over the resamples (seconds on a small CPU).
    """
    from workbook.widgets import progress as bar

    minima = isoflop_minima(points, n_column)
    if len(minima) < 2:
        raise WorkbookError(f"fitting N_opt ∝ C^a needs at least 2 budgets with ≥3 finished "
                            f"sizes; got {len(minima)}")
    a, _ = fit_power_law(minima["budget"], minima["n_opt"])
    b, _ = fit_power_law(minima["budget"], minima["d_opt"])
    rng = np.random.default_rng(seed)
    groups = [g for _, g in points.groupby("budget") if len(g) >= 3]
    boot_a, boot_b = [], []
    for _ in bar(range(n_boot), desc=progress or "", disable=progress is None):
        parts = []
        for g in groups:
            while True:
                pick = g.iloc[rng.integers(0, len(g), len(g))]
                if pick[n_column].nunique() >= 3:
                    break
            parts.append(pick)
        m = isoflop_minima(pd.concat(parts), n_column)
        boot_a.append(fit_power_law(m["budget"], m["n_opt"])[0])
        boot_b.append(fit_power_law(m["budget"], m["d_opt"])[0])
    lo, hi = percentiles
    a_lo, a_hi = (float(v) for v in np.percentile(boot_a, [lo, hi]))
    b_lo, b_hi = (float(v) for v in np.percentile(boot_b, [lo, hi]))
    return ExponentFit(a, b, a_lo, a_hi, b_lo, b_hi, float(np.std(boot_a)),
                       float(np.std(boot_b)), len(minima), n_boot)


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    small = np.abs(r) <= delta
    return np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))


def _linear_start(ln: np.ndarray, ld: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """A starting point for the Huber fit: for fixed (alpha, beta) the law is linear in
    (E, A, B), so a grid over the two exponents with least squares for the rest is cheap."""
    best, best_err = None, math.inf
    for alpha in np.linspace(0.05, 1.5, 30):
        for beta in np.linspace(0.05, 1.5, 30):
            design = np.stack([np.ones_like(ln), np.exp(-alpha * ln), np.exp(-beta * ld)], 1)
            coef, *_ = np.linalg.lstsq(design, loss, rcond=None)
            if (coef <= 0).any():
                continue
            err = float(np.sum((design @ coef - loss) ** 2))
            if err < best_err:
                best, best_err = np.log([coef[1], coef[2], coef[0], 1, 1]), err
                best[3:] = alpha, beta
    if best is None:  # no positive (E, A, B) anywhere: start from Chinchilla's values
        return np.array([6.0, 6.0, 0.5, 0.34, 0.28])
    return best


def fit_parametric(n_params, n_tokens, loss, *, delta: float = 1e-3,
                   name: str = "this workbook's fit") -> ParametricLaw:
    """Chinchilla approach 3: minimise Σ Huber_δ(LSE(a − α log N, b − β log D, e) − log L)
    over (a, b, e, α, β) with L-BFGS; A = e^a, B = e^b, E = e^e.

    Chinchilla starts L-BFGS from a grid of ~4500 points; here a least-squares grid over
    (α, β) picks the start and a few perturbed starts guard against a local minimum.
    """
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    ln, ld = np.log(np.asarray(n_params, float)), np.log(np.asarray(n_tokens, float))
    y = np.asarray(loss, float)
    ll = np.log(y)
    if len(ll) < 5:
        raise WorkbookError(f"the parametric fit has 5 unknowns; it needs ≥5 points, got {len(ll)}")

    def objective(p: np.ndarray) -> float:
        a, b, e, alpha, beta = p
        pred = logsumexp(np.stack([a - alpha * ln, b - beta * ld, np.full_like(ln, e)]), axis=0)
        return float(_huber(pred - ll, delta).sum())

    start = _linear_start(ln, ld, y)
    e_max = float(ll.min())  # the floor E lies below every measured loss
    bounds = [(-5, 40), (-5, 40), (-5, e_max), (0.01, 3), (0.01, 3)]
    starts = [start] + [start + shift for shift in
                        ([1, 0, 0, 0.1, 0], [0, 1, 0, 0, 0.1], [-1, -1, -0.3, -0.1, -0.1])]
    best = None
    for x0 in starts:
        x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
        res = minimize(objective, x0, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    return ParametricLaw(name, E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)),
                         alpha=float(alpha), beta=float(beta),
                         source=f"Huber(δ={delta}) on log L, {len(ll)} points")


# -------------------------------------------------------------------------------- corpora
#
# ---------------------------------------------------------------------------- the sweep

# A ladder of Llama shapes, ~1.3-1.6x apart in parameters at vocab 2048; (d_model, n_layers,
# n_heads). Width and depth grow together, as in Chinchilla's and Kaplan's model families.
LADDER: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1), (24, 1, 1), (32, 1, 2), (32, 2, 2), (48, 2, 3), (64, 2, 4), (64, 3, 4),
    (80, 3, 5), (96, 3, 6), (96, 4, 6), (128, 4, 4), (128, 5, 4), (160, 5, 5), (160, 6, 5),
    (192, 6, 6), (224, 6, 7), (256, 6, 8), (256, 8, 8), (320, 8, 10), (384, 8, 12),
)


def flops_per_token(n_params: float, n_layers: int, seq_len: int, d_model: int) -> float:
    """Training FLOPs per token: 6·N (every weight: one multiply-add forward, two backward)
    plus attention. QKᵀ and the weighted sum cost 2·seq·d_model each per layer and token in the
    forward pass; the causal mask makes half of that unnecessary (FlashAttention skips it),
    leaving 2·seq·d_model forward and 6·seq·d_model for training, per layer."""
    from workbook.flops import attention_flops_per_token

    return 6.0 * n_params + attention_flops_per_token(n_layers, seq_len, d_model, causal=True)


@dataclass(frozen=True)
class IsoFlopConfig:
    """An IsoFLOP sweep: for each budget, ``sizes_per_budget`` neighbouring ladder shapes
    centred where D/N ≈ ``center_tokens_per_param``, each trained for exactly that budget."""

    budgets: tuple[float, ...]
    sizes_per_budget: int
    corpus: str
    vocab_size: int
    seq_len: int
    target_steps: int          # batch size is picked so each run takes about this many steps
    min_steps: int             # fewer steps than this: the budget is too small for the size
    max_batch: int
    lr: float                  # peak lr at d_model 128; scaled by sqrt(128 / d_model)
    eval_tokens: int
    center_tokens_per_param: float = TOKENS_PER_PARAM
    ladder: tuple[tuple[int, int, int], ...] = LADDER
    time_limit_s: float = 540.0
    checkpoint: ProjectPath = ""  # CSV that keeps finished points; a rerun skips them
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.budgets:
            raise WorkbookError("budgets is empty; allowed: 1 to 12 budgets, each 1e6 to 1e21")
        check_range("number of budgets", len(self.budgets), 1, 12)
        for c in self.budgets:
            check_range("budget (FLOPs)", c, 1e6, 1e21)
        for d_model, n_layers, n_heads in self.ladder:
            check_range("ladder d_model", d_model, 8, 16384)
            check_range("ladder n_layers", n_layers, 1, 256)
            check_range("ladder n_heads", n_heads, 1, 256)
            if d_model % n_heads:
                raise WorkbookError(f"ladder entry {(d_model, n_layers, n_heads)}: d_model must "
                                    "be a multiple of n_heads")
        check_range("sizes_per_budget", self.sizes_per_budget, 1, len(self.ladder))
        check_choice("corpus", self.corpus, CORPORA)
        check_range("vocab_size", self.vocab_size, 512, 65535)
        check_range("seq_len", self.seq_len, 8, 4096)
        check_range("target_steps", self.target_steps, 10, 100_000)
        check_range("min_steps", self.min_steps, 1, self.target_steps)
        check_range("max_batch", self.max_batch, 1, 4096)
        check_range("lr", self.lr, 1e-5, 0.1)
        check_range("eval_tokens", self.eval_tokens, self.seq_len, 10_000_000)
        check_range("center_tokens_per_param", self.center_tokens_per_param, 0.1, 10_000)
        check_range("time_limit_s", self.time_limit_s, 1, 86_400)
        check_choice("device", self.device, ("auto", "cpu", "cuda"))


ISOFLOP_PRESETS = {
    # CPU, ~20 s on 2 idle cores: 2 budgets x 3 sizes of 12k-50k-parameter models on the
    # docstring corpus; a live demonstration of the method, too small to fit exponents on.
    "small": IsoFlopConfig(budgets=(3e10, 1e11), sizes_per_budget=3, corpus="docstrings",
                           vocab_size=512, seq_len=64, target_steps=30, min_steps=10,
                           max_batch=128, lr=4e-3, eval_tokens=8192, time_limit_s=120),
    # One GPU, a few minutes: 5 budgets x 7 sizes, 0.05M-3M parameters, stdlib source code.
    "full": IsoFlopConfig(budgets=(3e12, 1e13, 3e13, 1e14, 3e14), sizes_per_budget=7,
                          corpus="stdlib_source", vocab_size=2048, seq_len=256,
                          target_steps=400, min_steps=100, max_batch=256, lr=3e-3,
                          eval_tokens=262_144, time_limit_s=540),
}


def _model_config(shape: tuple[int, int, int], cfg: IsoFlopConfig):
    from workbook.model import ModelConfig

    d_model, n_layers, n_heads = shape
    return ModelConfig(vocab_size=cfg.vocab_size, d_model=d_model, n_layers=n_layers,
                       n_heads=n_heads, seq_len=cfg.seq_len, tie_embeddings=True)


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(x, 1.0)))))


def plan_sweep(cfg: IsoFlopConfig, n_train_tokens: int | None = None) -> pd.DataFrame:
    """Every (budget, shape) point: N, D, steps, batch, lr, and ``status`` ``planned`` or
    ``skipped`` with the reason (a budget too small for a size is a row, not an error)."""
    from workbook.model import count_params

    if n_train_tokens is not None:
        check_range("n_train_tokens", n_train_tokens, 1, 10**13)

    shapes = [_model_config(s, cfg) for s in cfg.ladder]
    n_of = [count_params(m) for m in shapes]
    fpt_of = [flops_per_token(n, m.n_layers, cfg.seq_len, m.d_model)
              for n, m in zip(n_of, shapes, strict=True)]
    rows = []
    for budget in sorted(cfg.budgets):
        # Centre: the ladder shape whose tokens/param at this budget is nearest the target.
        ratio = [budget / f / n for n, f in zip(n_of, fpt_of, strict=True)]
        centre = int(np.argmin([abs(math.log(r / cfg.center_tokens_per_param)) for r in ratio]))
        lo = min(max(0, centre - cfg.sizes_per_budget // 2), len(shapes) - cfg.sizes_per_budget)
        # One batch size per budget (set by the centre size), so the sizes of one IsoFLOP
        # curve differ only in N and D; smaller models then take more steps.
        batch = min(cfg.max_batch, _pow2_floor(
            budget / fpt_of[centre] / (cfg.seq_len * cfg.target_steps)))
        for i in range(lo, lo + cfg.sizes_per_budget):
            m, n, fpt = shapes[i], n_of[i], fpt_of[i]
            tokens = budget / fpt
            steps = int(round(tokens / (batch * cfg.seq_len)))
            row = {"budget": budget, "rank": abs(i - centre), "d_model": m.d_model,
                   "n_layers": m.n_layers, "n_heads": m.n_heads, "d_ff": m.d_ff, "n_params": n,
                   "n_params_non_embedding": count_params(m, non_embedding=True),
                   "batch_size": batch, "steps": steps, "n_tokens": steps * batch * cfg.seq_len,
                   "lr": round(min(6e-3, cfg.lr * math.sqrt(128 / m.d_model)), 6),
                   "status": "planned", "error": ""}
            row["compute"] = fpt * row["n_tokens"]
            row["tokens_per_param"] = row["n_tokens"] / n
            if n_train_tokens:
                row["epochs"] = row["n_tokens"] / n_train_tokens
            if steps < cfg.min_steps:
                row.update(status="skipped", error=(
                    f"budget {budget:.3g} FLOPs buys a {n / 1e6:.2f}M-param model only "
                    f"{tokens:.3g} tokens = {steps} steps of {batch}x{cfg.seq_len}; needs "
                    f">= {cfg.min_steps} steps: raise the budget or use smaller sizes"))
            rows.append(row)
    # Run order: every budget's centre size first, then the neighbours, the far ends last;
    # a sweep cut short by its time limit then loses edge sizes, not a whole budget.
    plan = pd.DataFrame(rows).sort_values(["rank", "budget", "n_params"], kind="stable")
    return plan.drop(columns="rank").reset_index(drop=True)


def _eval_windows(val_ids, n_tokens: int, seq_len: int):
    """The same evenly spaced, non-overlapping val windows for every point: (n, seq_len + 1)."""
    import torch

    n = max(1, min(n_tokens // seq_len, (len(val_ids) - 1) // (seq_len + 1)))
    starts = torch.linspace(0, len(val_ids) - seq_len - 2, n).long()
    return val_ids[starts[:, None] + torch.arange(seq_len + 1)]


def train_point(point: dict, cfg: IsoFlopConfig, train_ids, val_windows, seed: int, device
                ) -> dict:
    """Train one model for ``point['steps']`` steps; return its losses and timing.

    The loop never calls ``.item()`` inside a step (no host-GPU sync): tiny models are
    launch-bound, and a sync per step would halve their speed. Batches are random windows of
    the training stream drawn on the device with a seeded generator.
    """
    import torch

    from workbook.model import build_model
    from workbook.training import TrainConfig, lr_at, make_optimizer
    from workbook.training import autocast as _autocast
    from workbook.training import next_token_loss as ce

    shape = (int(point["d_model"]), int(point["n_layers"]), int(point["n_heads"]))
    model = build_model(_model_config(shape, cfg), seed).to(device).train()
    steps, batch = int(point["steps"]), int(point["batch_size"])
    tcfg = TrainConfig(steps=steps, batch_size=batch, seq_len=cfg.seq_len, lr=point["lr"],
                       warmup=max(1, steps // 20), weight_decay=0.1)
    opt = make_optimizer(model, tcfg)
    gen = torch.Generator(device=device).manual_seed(seed)
    offsets = torch.arange(cfg.seq_len + 1, device=device)
    tail, tail_from = torch.zeros((), device=device), steps - max(1, steps // 10)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tcfg)
        starts = torch.randint(0, len(train_ids) - cfg.seq_len - 1, (batch,), generator=gen,
                               device=device)
        window = train_ids[starts[:, None] + offsets]          # (batch, seq_len + 1)
        with _autocast(device):
            logits = model(input_ids=window[:, :-1]).logits
        loss = ce(logits, window[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= tail_from:
            tail += loss.detach()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    val = _evaluate(model, val_windows, device)
    return {"val_loss": val, "train_loss": float(tail) / (steps - tail_from),
            "train_s": train_s, "tokens_per_s": steps * batch * cfg.seq_len / train_s}


def _evaluate(model, windows, device, chunk: int = 64) -> float:
    import torch

    from workbook.training import autocast as _autocast
    from workbook.training import next_token_loss as ce

    model.eval()
    total = torch.zeros((), device=device)
    with torch.no_grad():
        for part in windows.split(chunk):
            with _autocast(device):
                logits = model(input_ids=part[:, :-1]).logits
            total += ce(logits, part[:, 1:]) * len(part)
    return float(total) / len(windows)


_POINT_KEY = ("budget", "d_model", "n_layers", "n_heads", "steps", "batch_size", "lr")
_UNITS = {"val_loss": "nats/token", "train_loss": "nats/token", "train_s": "s",
          "tokens_per_s": "tokens/s"}


def _point_rows(point: dict, measured: dict | None, extra: dict) -> pd.DataFrame:
    base = {k: v for k, v in point.items() if k not in ("status", "error")}
    base.update(extra)
    if measured is None:  # skipped / failed: one row that says why
        return pd.DataFrame([{**base, "metric": "val_loss", "value": math.nan,
                              "unit": _UNITS["val_loss"], "source": "measured",
                              "status": point["status"], "error": point["error"]}])
    return pd.DataFrame([{**base, "metric": m, "value": v, "unit": _UNITS[m],
                          "source": "measured", "status": "ok", "error": ""}
                         for m, v in measured.items()])


def _load_checkpoint(path: str) -> pd.DataFrame:
    if path and Path(path).exists():
        return pd.read_csv(path)
    return pd.DataFrame()


def _done(done: pd.DataFrame, point: dict, extra: dict) -> pd.DataFrame:
    """Finished rows of this exact point (same shape, steps, batch, lr, corpus, seed)."""
    if done.empty:
        return done
    mask = done["status"] == "ok"
    for k in _POINT_KEY:
        mask &= np.isclose(done[k].astype(float), float(point[k]))
    for k, v in extra.items():
        mask &= done[k].astype(str) == str(v)
    return done[mask]


def run_isoflop(cfg: IsoFlopConfig, seed: int = 0,
                on_point: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """Train every planned point; return tidy rows (``val_loss``, ``train_loss``, ``train_s``,
    ``tokens_per_s`` per point; one ``skipped``/``oom`` row for a point that did not run).

    With ``cfg.checkpoint`` set, each finished point is written there at once, and a rerun
    reuses finished points: an interrupted sweep loses at most the point it was on.
    """
    import torch

    from workbook.results import write_atomic

    device = torch_device(cfg.device)
    train_ids = corpus_token_ids(cfg.corpus, "train", cfg.vocab_size)
    val_windows = _eval_windows(corpus_token_ids(cfg.corpus, "val", cfg.vocab_size),
                                cfg.eval_tokens, cfg.seq_len).to(device)
    train_dev = train_ids.to(device)
    plan = plan_sweep(cfg, len(train_ids))
    done = _load_checkpoint(cfg.checkpoint)
    extra = {"corpus": cfg.corpus, "vocab_size": cfg.vocab_size, "seq_len": cfg.seq_len,
             "seed": seed, "device_type": device.type}
    frames, t_start = [], time.perf_counter()
    for point in plan.to_dict("records"):
        reused = _done(done, point, extra)
        if not reused.empty:
            frames.append(reused)
            continue
        measured = None
        if point["status"] == "planned":
            if time.perf_counter() - t_start > cfg.time_limit_s:
                point.update(status="skipped", error=f"sweep time limit {cfg.time_limit_s:g} "
                             "s reached; rerun with the same checkpoint to continue")
            else:
                try:
                    measured = train_point(point, cfg, train_dev, val_windows, seed, device)
                except torch.OutOfMemoryError as exc:
                    point.update(status="oom", error=str(exc).splitlines()[0][:200])
                    torch.cuda.empty_cache()
        rows = _point_rows(point, measured, extra)
        frames.append(rows)
        if cfg.checkpoint and measured is not None:  # saved before anything else can fail
            done = pd.concat([done, rows], ignore_index=True)
            write_atomic(done, Path(cfg.checkpoint))
        if on_point is not None:
            on_point(rows)
    wall = {"metric": "sweep_wall_s", "value": time.perf_counter() - t_start, "unit": "s",
            "source": "measured", "status": "ok", "error": "", **extra}
    return pd.concat([*frames, pd.DataFrame([wall])], ignore_index=True)


@takes_rows
def fit_summary(rows: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The sweep's headline numbers: a and b (bootstrap 10-90 %), and the parametric fit,
    once with total N (Chinchilla's convention) and once with non-embedding N (Kaplan's)."""
    points = _ok_points(rows)
    out = []
    for label, col in (("total N", "n_params"), ("non-embedding N", "n_params_non_embedding")):
        fit = fit_exponents(points, n_boot=n_boot, seed=seed, n_column=col,
                            progress=f"bootstrap, {label}")
        law = fit_parametric(points[col], points["n_tokens"], points["loss"])
        out.append({"N counted as": label, **asdict(fit), "alpha": law.alpha, "beta": law.beta,
                    "E": law.E, "A": law.A, "B": law.B, "a from alpha, beta": law.a})
    return pd.DataFrame(out)


@takes_rows
def claims(rows: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The lecture's scaling claims against a sweep's ``rows`` and their ``fit_summary``:
    the exponent judged by its bootstrap interval, the sweep's time as a budget."""
    from workbook.claims import Claim, claims_table
    from workbook.results import where_label

    nan = float("nan")
    fit = summary.iloc[0] if len(summary) else pd.Series(dtype=float)
    minima = isoflop_minima(_ok_points(rows)) if len(rows) else pd.DataFrame()
    ratio = float((minima["d_opt"] / minima["n_opt"]).median()) if len(minima) else nan
    wall = rows.loc[rows["metric"] == "sweep_wall_s", "value"] if len(rows) else []
    where = where_label(rows)
    interval = {"low": fit.get("a_low", nan), "high": fit.get("a_high", nan)}
    gpt3 = placement("20 tokens/param").set_index("model").loc["GPT-3 175B"]
    return claims_table([
        Claim("compute-optimal N grows as C^0.5", "Chinchilla Table 2 (approach 2)", 0.49,
              fit.get("a", nan), where=where, **interval),
        Claim("Kaplan: N grows as C^0.73", "Kaplan et al. 2020", 0.73, fit.get("a", nan),
              where=where, **interval),
        Claim("tokens ≈ 20 × params at the optimum", "lecture", 20.0, ratio, where=where,
              rel_tol=0.5),
        Claim("GPT-3 saw ~1.7 tokens per parameter", "lecture", 1.7,
              float(gpt3["tokens_per_param"]), where="published sizes"),
        Claim("IsoFLOP sweep ≤ 600 s on one H100", "issue target", 600.0,
              float(max(wall)) if len(wall) else nan, "s", where, kind="at_most"),
    ])


def _run_experiment(cfg: IsoFlopConfig, seed: int) -> pd.DataFrame:
    def echo(rows: pd.DataFrame) -> None:
        r = rows.iloc[0]
        loss = rows.loc[rows["metric"] == "val_loss", "value"].iloc[0]
        print(f"C={r['budget']:.2g} N={r['n_params'] / 1e6:.3f}M D={r['n_tokens'] / 1e6:.2f}M "
              f"steps={r['steps']} batch={r['batch_size']} -> val_loss={loss:.4f} "
              f"[{r['status']}]", flush=True)

    return run_isoflop(cfg, seed, on_point=echo)


def record_checkpoint(path: str, preset: str = "full", seed: int = 0) -> Path:
    """Record the finished points of an interrupted sweep (its checkpoint CSV) in the ledger."""
    from workbook import results

    done = _load_checkpoint(path)
    if done.empty:
        raise WorkbookError(f"checkpoint {path!r} is missing or empty: no finished points")
    return results.record("scaling_isoflop", done.assign(preset=preset), preset=preset,
                          seed=seed)


EXPERIMENTS = [
    Experiment(name="scaling_isoflop", notebook="03_scaling_laws",
               summary="IsoFLOP sweep: models of several sizes trained to each compute budget",
               run=_run_experiment, presets=ISOFLOP_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900,
               # small: ~20 s on the H200's host, 15-90 s on 2 CPU cores; full: 293 s, H100
               typical_s={"small": 30, "full": 300}),
]


# ------------------------------------------------------------------------- tables and views


def published_laws() -> pd.DataFrame:
    """Chinchilla's parametric fit and its replication, with the exponents they imply."""
    return pd.DataFrame([{"law": law.name, "E": law.E, "A": law.A, "B": law.B,
                          "alpha": law.alpha, "beta": law.beta, "a = β/(α+β)": law.a,
                          "b = α/(α+β)": law.b, "source": law.source}
                         for law in (CHINCHILLA, CHINCHILLA_REPLICATION)])


def _style(source: str) -> dict:
    return {"measured": {"mode": "markers", "marker": {"size": 9}},
            "recorded": {"mode": "markers", "marker": {"size": 9, "symbol": "circle-open",
                                                       "line": {"width": 2}}}}[source]


@takes_rows
def isoflop_figure(rows: pd.DataFrame, n_column: str = "n_params"):
    """Loss against N, one colour per budget; dashed: the parabola fitted in log N."""
    from workbook import plots

    points = _ok_points(rows)
    source = "recorded" if (rows.get("source") == "recorded").any() else "measured"
    fig = plots.figure(plots.title_with_source("IsoFLOP profiles: loss vs model size", rows),
                       "parameters N", "held-out loss (nats/token)", log_x=True)
    for i, (budget, group) in enumerate(points.groupby("budget")):
        color = plots.COLORS[i % len(plots.COLORS)]
        group = group.sort_values(n_column)
        fig.add_scatter(x=group[n_column], y=group["loss"], name=f"C={budget:.0e} ({source})",
                        marker_color=color, **_style(source))
        if len(group) >= 3:
            c2, c1, c0 = np.polyfit(np.log(group[n_column]), group["loss"], 2)
            x = np.geomspace(group[n_column].min(), group[n_column].max(), 50)
            fig.add_scatter(x=x, y=c0 + c1 * np.log(x) + c2 * np.log(x) ** 2, mode="lines",
                            line={"dash": "dash", "color": color}, showlegend=False)
    return fig


@takes_rows
def frontier_figure(rows: pd.DataFrame, fit: ExponentFit | None = None):
    """The IsoFLOP minima N_opt(C) with the fitted power law, Chinchilla's and Kaplan's slopes
    drawn through the middle budget, and N at 20 tokens/param."""
    from workbook import plots

    minima = isoflop_minima(_ok_points(rows))
    fig = plots.figure(plots.title_with_source("Compute-optimal model size N_opt(C)", rows),
                       "compute C (FLOPs)", "N_opt (parameters)", log_x=True, log_y=True)
    if minima.empty:
        return fig
    fit = fit or fit_exponents(_ok_points(rows), n_boot=1000)  # as fit_summary: same numbers
    c = np.geomspace(minima["budget"].min() / 2, minima["budget"].max() * 2, 30)
    mid = minima.iloc[len(minima) // 2]
    fig.add_scatter(x=minima["budget"], y=minima["n_opt"], mode="markers", name="parabola minima",
                    marker={"size": 10, "symbol": "diamond"})
    _, k = fit_power_law(minima["budget"], minima["n_opt"])
    lines = [(f"fit: a = {fit.a:.2f} [{fit.a_low:.2f}, {fit.a_high:.2f}]", k * c**fit.a, "solid"),
             ("Chinchilla slope a = 0.50", mid["n_opt"] * (c / mid["budget"]) ** 0.5, "dash"),
             ("Kaplan slope a = 0.73", mid["n_opt"] * (c / mid["budget"]) ** 0.73, "dot"),
             ("20 tokens/param", rule_of_thumb_optimal(c)[0], "dashdot")]
    for name, y, dash in lines:
        fig.add_scatter(x=c, y=y, mode="lines", name=name, line={"dash": dash})
    return fig


def allocation_explorer(compute: float = 5.76e23):
    """Slider: compute budget -> optimal N and D per law, and where famous models sit."""
    import plotly.graph_objects as go

    check_range("compute", compute, 1e18, 1e27)  # the slider's range

    from workbook import plots, widgets

    fig = plots.figure("Parameters vs training tokens", "parameters N", "training tokens D",
                       log_x=True, log_y=True)
    models = placement("20 tokens/param")
    fig.add_scatter(x=models["n_params"], y=models["n_tokens"], mode="markers+text",
                    text=[f"{m} ({r:.0f} tok/param)" for m, r in
                          zip(models["model"], models["tokens_per_param"], strict=True)],
                    textposition="top center", name="published models", marker={"size": 9})
    for name in ("frontier", "IsoFLOP line (this budget)", "optimum"):
        fig.add_trace(go.Scatter(x=[], y=[], name=name))
    c_range = np.geomspace(1e18, 1e27, 60)

    def draw(fig, compute: float, law: str) -> str:
        n, d = (float(v) for v in _law_optimal(law, compute))
        fn, fd = _law_optimal(law, c_range)
        fig.data[1].update(x=fn, y=fd, mode="lines", line={"dash": "dash"}, name=f"{law} frontier")
        line_n = np.geomspace(n / 100, n * 100, 40)
        fig.data[2].update(x=line_n, y=compute / (6 * line_n), mode="lines",
                           line={"dash": "dot", "color": "#7f7f7f"})
        fig.data[3].update(x=[n], y=[d], mode="markers", marker={"size": 14, "symbol": "star"})
        loss = float(CHINCHILLA.loss(n, d))
        return (f"C = {compute:.3g} FLOPs → N = {n:.3g}, D = {d:.3g}, D/N = {d / n:.1f}, "
                f"Chinchilla-fit loss {loss:.3f} nats")

    return widgets.Explorer({"compute": widgets.slider("compute (FLOPs)", 1e18, 1e27, 0.1,
                                                       compute, log=True),
                             "law": widgets.dropdown("law", list(LAWS), LAWS[0])}, draw, fig)


def overtraining_explorer(target_loss: float = 2.2, inference_tokens: float = 1e13):
    """Sliders: target loss and lifetime inference tokens -> the cheapest model to own."""
    import plotly.graph_objects as go

    check_range("target_loss", target_loss, 1.9, 3.0)  # the sliders' ranges
    check_range("inference_tokens", inference_tokens, 1e9, 1e15)

    from workbook import plots, widgets

    fig = plots.figure("Same loss, different sizes: training + inference FLOPs",
                       "parameters N", "FLOPs", log_x=True, log_y=True)
    for name, dash in (("training 6·N·D", "dash"), ("inference 2·N per token", "dot"),
                       ("total", "solid"), ("cheapest to own", None), ("compute-optimal", None)):
        fig.add_trace(go.Scatter(x=[], y=[], name=name,
                                 mode="lines" if dash else "markers",
                                 line={"dash": dash} if dash else None,
                                 marker={"size": 13, "symbol": "star"} if not dash else None))

    def draw(fig, target_loss: float, inference_tokens: float) -> str:
        costs = overtraining_costs(target_loss, inference_tokens)
        best = costs.loc[costs["total_flops"].idxmin()]
        train_best = costs.loc[costs["train_flops"].idxmin()]
        for i, col in enumerate(("train_flops", "inference_flops", "total_flops")):
            fig.data[i].update(x=costs["n_params"], y=costs[col])
        fig.data[3].update(x=[best["n_params"]], y=[best["total_flops"]])
        fig.data[4].update(x=[train_best["n_params"]], y=[train_best["train_flops"]])
        return (f"cheapest to own: N = {best['n_params']:.3g} trained on "
                f"{best['tokens_per_param']:.0f} tokens/param; compute-optimal: "
                f"N = {train_best['n_params']:.3g} at {train_best['tokens_per_param']:.0f} "
                "tokens/param (Epoch-replication law)")

    return widgets.Explorer({
        "target_loss": widgets.slider("target loss (nats)", 1.9, 3.0, 0.01, target_loss),
        "inference_tokens": widgets.slider("tokens served", 1e9, 1e15, 0.1, inference_tokens,
                                           log=True)}, draw, fig)

"""Fits of our own runs: a parabola in log N per compute budget (Chinchilla approach 2), power
laws N_opt ∝ C^a and D_opt ∝ C^b and the tokens per parameter at the largest budget, each with
a bootstrap interval, the parametric fit (approach 3: Huber loss on log L, L-BFGS from a grid
of starts), and a model of a sweep's step time fitted to its recorded timings (each cost ≥ 0)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize, nnls
from scipy.special import logsumexp

from workbook.config import WorkbookError, takes_rows
from workbook.scaling_laws.laws import ParametricLaw


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
    lx_opt = -c1 / (2 * c2) if c2 > 0 else math.inf
    if abs(lx_opt) > 700:   # no minimum, or one so far off (a straight line's rounding
        best = int(np.argmin(y))   # error as its curvature) that exp() overflows
        return float(math.exp(lx[best])), float(y[best]), False
    inside = bool(lx.min() <= lx_opt <= lx.max())
    return float(math.exp(lx_opt)), float(c0 + c1 * lx_opt + c2 * lx_opt**2), inside


@takes_rows
def one_batch_per_budget(sweep: pd.DataFrame) -> bool:
    """Whether ``sweep`` trained every size of a budget at one batch (its ``batch_rule``
    "largest"), not each point at its own batch ("steps", and sweeps recorded before the
    column)."""
    return "batch_rule" in sweep.columns and bool((sweep["batch_rule"] == "largest").any())


@takes_rows
def ok_points(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trained point: budget, n_params, n_tokens, compute, loss (wide form)."""
    if rows.empty:
        return pd.DataFrame(columns=["budget", "n_params", "n_tokens", "compute", "loss"])
    ok = rows[(rows["status"] == "ok") & (rows["metric"] == "val_loss")]
    keep = ["budget", "n_params", "n_params_non_embedding", "n_tokens", "compute", "value"]
    return ok[[c for c in keep if c in ok]].rename(columns={"value": "loss"}).astype(float)


@takes_rows
def text_tokens(sweep: pd.DataFrame) -> float:
    """The size in tokens of the text a sweep trained on (each point's tokens over its epochs;
    NaN where the rows have no epochs)."""
    if "epochs" not in sweep.columns:
        return math.nan
    rows = sweep[(sweep["metric"] == "val_loss") & (sweep["status"] == "ok")]
    epochs = pd.to_numeric(rows["epochs"], errors="coerce")
    tokens = pd.to_numeric(rows["n_tokens"], errors="coerce")
    ratio = (tokens / epochs)[epochs > 0]
    return float(ratio.median()) if len(ratio) else math.nan


@takes_rows
def text_note(sweep: pd.DataFrame) -> str:
    """'' for a sweep on the stdlib text the full preset was recorded on; else a label's tail
    saying that the text differs and how large it was (a sweep on another text is another
    experiment: its losses, and how often its largest budgets repeat the text, differ)."""
    from workbook.data import STDLIB_SOURCE

    if sweep.empty or "corpus" not in sweep.columns or sweep["corpus"].iloc[0] != "stdlib_source":
        return ""
    size, expected = text_tokens(sweep), STDLIB_SOURCE["n_train_v2048"]
    vocab = pd.to_numeric(sweep.get("vocab_size", pd.Series(dtype=float)),
                          errors="coerce").dropna()
    if math.isnan(size) or vocab.empty or vocab.iloc[0] != 2048 or abs(size / expected - 1) < 0.01:
        return ""
    return (f", on another stdlib's text ({size / 1e6:.1f}M training tokens; CPython "
            f"{STDLIB_SOURCE['python']}'s has {expected / 1e6:.1f}M)")


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


def wiggle(n_params: np.ndarray, loss: np.ndarray) -> float:
    """How far an IsoFLOP curve strays from a convex one (nats): the largest height of an
    inner point *above* the straight line (in log N) through its two neighbours (a convex
    curve's points all lie on or below theirs: its minimum's dip is no stray), where the
    curve changes direction more than once (falls, rises, falls again); 0 for a curve that
    falls to one minimum and rises after it."""
    order = np.argsort(n_params)
    x, y = np.log(np.asarray(n_params, float)[order]), np.asarray(loss, float)[order]
    turns = int(np.sum(np.diff(np.sign(np.diff(y))) != 0))
    if len(y) < 3 or turns <= 1:
        return 0.0
    t = (x[1:-1] - x[:-2]) / (x[2:] - x[:-2])
    return float(max(0.0, np.max(y[1:-1] - (y[:-2] + t * (y[2:] - y[:-2])))))


@dataclass(frozen=True)
class ExponentFit:
    """a, b and D_opt/N_opt at the largest budget (``ratio``), each with its bootstrap
    interval (``*_low``, ``*_high``: the percentiles asked for) and standard deviation."""

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
    ratio: float = math.nan
    ratio_low: float = math.nan
    ratio_high: float = math.nan
    ratio_budget: float = math.nan

    def as_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(self)])


@takes_rows
def wall_seconds(sweep: pd.DataFrame) -> float:
    """A sweep's wall time from its ``sweep_wall_s`` row; NaN where it has none (or only NaN),
    which a claim shows as not measured and a caption leaves out, never as "nan s"."""
    wall = sweep.loc[sweep["metric"] == "sweep_wall_s", "value"].astype(float)
    wall = wall[np.isfinite(wall)]
    return float(wall.max()) if len(wall) else float("nan")


@takes_rows
def resumed_note(sweep: pd.DataFrame) -> str:
    """The note a resumed sweep's ``sweep_wall_s`` row carries ('resumed: 27 points from the
    checkpoint, counted by their training time'; :func:`~workbook.scaling_laws.experiments.
    run_isoflop`): its wall time is then a count, not one run's; '' for a sweep run whole."""
    wall = sweep[sweep["metric"] == "sweep_wall_s"]
    notes = wall["error"].dropna().astype(str) if "error" in wall.columns else wall["metric"]
    return next((n for n in notes if n.startswith("resumed")), "")


def seed_pools(found: list[tuple[str, pd.DataFrame]]) -> list[tuple[str, pd.DataFrame]]:
    """Pools of sweeps that differ only in their seed: for every device whose ``found``
    sweeps (:func:`~workbook.scaling_laws.views.sweeps`) ran one plan (the same budgets and
    model sizes, recipe and text) under two or more seeds, one (label, rows) item holding all
    their trained points, without their wall times. Fitting a pool averages each point over
    the seeds: what one seed's noise at a single shape did to a parabola shrinks. A seed
    swept twice counts once, its first sweep in ``found`` (this machine's, else the newest):
    training is deterministic (an H100 repeat at another commit gave the same losses to the
    last digit), so a second copy would only narrow the interval."""
    groups: dict[tuple, dict[int, tuple[str, pd.DataFrame]]] = {}
    for where, sweep in found:
        loss = sweep[(sweep["metric"] == "val_loss") & (sweep["status"] == "ok")]
        if loss.empty or "seed" not in sweep.columns or sweep["seed"].isna().all():
            continue
        plan = frozenset(zip(loss["budget"], loss["n_params"].astype(float).round(),
                             strict=True))
        text = set(sweep["corpus_sha"].dropna().astype(str)) if "corpus_sha" in sweep else set()
        tuned = "beta2" in sweep.columns and sweep["beta2"].notna().any()
        rule = set(sweep["batch_rule"].dropna()) if "batch_rule" in sweep.columns else set()
        key = (where.split(", ")[0], sweep["preset"].iloc[0], plan, frozenset(text), tuned,
               frozenset(rule))
        seed = int(float(sweep["seed"].dropna().iloc[0]))
        groups.setdefault(key, {}).setdefault(seed, (where, sweep))
    pools = []
    for (machine, preset, *_), by_seed in groups.items():
        members, seeds = list(by_seed.values()), sorted(by_seed)
        if len(seeds) < 2:
            continue
        rows = pd.concat([g[g["metric"] != "sweep_wall_s"] for _, g in members],
                         ignore_index=True)
        pools.append((f"{machine}, seeds {', '.join(map(str, seeds))} pooled ({len(members)} "
                      f"sweeps of one plan), {preset} preset", rows))
    return pools


def pool_of(where: str, sweep: pd.DataFrame,
            pools: list[tuple[str, pd.DataFrame]]) -> tuple[str, pd.DataFrame] | None:
    """The pool of :func:`seed_pools` that holds the sweep ``where``/``sweep`` (the same
    machine, and its seed among the pool's), or None."""
    for label, pool in pools:
        if label.split(", ")[0] == where.split(", ")[0] and (
                pool["seed"] == sweep["seed"].iloc[0]).any():
            return label, pool
    return None


@takes_rows
def seed_spread(pool: pd.DataFrame) -> dict:
    """How far a pool's seeds (:func:`seed_pools`) disagree at one point: the median and the
    largest spread (highest minus lowest validation loss, nats) over the points every seed
    trained, with the budget and size of the largest; empty where no point has two seeds."""
    loss = pool[(pool["metric"] == "val_loss") & (pool["status"] == "ok")]
    spread = loss.groupby(["budget", "n_params"])["value"].agg(["max", "min", "count"])
    spread = spread[spread["count"] >= 2]
    if spread.empty:
        return {}
    gap = spread["max"] - spread["min"]
    (budget, n_params), worst = gap.idxmax(), float(gap.max())
    return {"median": float(gap.median()), "max": worst, "budget": float(budget),
            "n_params": float(n_params), "points": len(gap)}


def _resample(ln: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of one bootstrap resample of a budget's points (with replacement), redrawn
    until it holds at least 3 distinct sizes (a parabola needs 3)."""
    while True:
        pick = rng.integers(0, len(ln), len(ln))
        if len(np.unique(ln[pick])) >= 3:
            return pick


def _vertex(lx: np.ndarray, y: np.ndarray) -> float:
    """log x at the parabola's minimum, as :func:`parabola_minimum` picks it (arrays only)."""
    c2, c1, _ = np.polyfit(lx, y, 2)
    return float(-c1 / (2 * c2)) if c2 > 0 else float(lx[np.argmin(y)])


def fit_exponents(points: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                  n_column: str = "n_params", percentiles: tuple[float, float] = (10, 90),
                  progress: str | None = None) -> ExponentFit:
    """a and b from the IsoFLOP minima, and D_opt/N_opt at the largest budget, with a bootstrap
    interval.

    The bootstrap resamples the trained points *within* each budget (with replacement), refits
    each parabola and the two power laws; the interval is the 10th-90th percentile, the
    convention of Chinchilla's Table 2. Resamples with fewer than 3 distinct sizes are redrawn.
    A budget with only 3 sizes has one such resample (itself): then there is no interval
    (NaN), since the bootstrap would only repeat the point estimate.
    ``progress``: a label for a progress bar over the resamples.
    """
    # the plain progress module: this fit also runs in scripts, without the Jupyter stack
    from workbook.progress import each as bar

    minima = isoflop_minima(points, n_column)
    if len(minima) < 2:
        raise WorkbookError(f"fitting N_opt ∝ C^a needs at least 2 budgets with ≥3 finished "
                            f"sizes; got {len(minima)}")
    a, _ = fit_power_law(minima["budget"], minima["n_opt"])
    b, _ = fit_power_law(minima["budget"], minima["d_opt"])
    top = minima.loc[minima["budget"].idxmax()]
    rng = np.random.default_rng(seed)
    groups = [(math.log(c), np.log(g[n_column].to_numpy(float)),
               np.log(g["n_tokens"].to_numpy(float)), g["loss"].to_numpy(float))
              for c, g in points.groupby("budget") if len(g) >= 3]
    log_c = np.array([g[0] for g in groups])
    boot = np.full((n_boot if min(len(g[1]) for g in groups) > 3 else 0, 3), np.nan)
    for i in bar(range(len(boot)), desc=progress or "", disable=progress is None or not len(boot)):
        ln_opt, ld_opt = [], []
        for _, ln, ld, loss in groups:
            pick = _resample(ln, rng)
            ln_opt.append(_vertex(ln[pick], loss[pick]))
            ld_opt.append(_vertex(ld[pick], loss[pick]))
        boot[i] = (np.polyfit(log_c, ln_opt, 1)[0], np.polyfit(log_c, ld_opt, 1)[0],
                   math.exp(ld_opt[-1] - ln_opt[-1]))
    lo, hi = percentiles
    if len(boot):
        (a_lo, b_lo, r_lo), (a_hi, b_hi, r_hi) = np.percentile(boot, [lo, hi], axis=0)
        a_sd, b_sd = np.std(boot[:, 0]), np.std(boot[:, 1])
    else:
        a_lo = b_lo = r_lo = a_hi = b_hi = r_hi = a_sd = b_sd = math.nan
    return ExponentFit(a, b, float(a_lo), float(a_hi), float(b_lo), float(b_hi), float(a_sd),
                       float(b_sd), len(minima), len(boot), float(top["d_opt"] / top["n_opt"]),
                       float(r_lo), float(r_hi), float(top["budget"]))


def budget_ratio(points: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                 percentiles: tuple[float, float] = (10, 90)) -> dict:
    """One budget's IsoFLOP minimum (:func:`ok_points` of a single budget; seeds may be pooled):
    N_opt, D_opt, D_opt/N_opt with a bootstrap interval as :func:`fit_exponents` draws it
    (the points resampled with replacement, each resample with ≥3 distinct sizes; none with
    only 3 sizes), the minimum loss and whether the sizes bracket it; {} with < 3 sizes."""
    if points.empty or points["n_params"].nunique() < 3:
        return {}
    if points["budget"].nunique() != 1:
        raise WorkbookError(f"budget_ratio takes one budget's points; got "
                            f"{points['budget'].nunique()} budgets")
    top = isoflop_minima(points).iloc[0]
    ln = np.log(points["n_params"].to_numpy(float))
    ld = np.log(points["n_tokens"].to_numpy(float))
    loss = points["loss"].to_numpy(float)
    rng, ratios = np.random.default_rng(seed), []
    for _ in range(n_boot if len(np.unique(ln)) > 3 else 0):
        pick = _resample(ln, rng)
        # in logs: a nearly flat resample puts its vertex far away, past a float's range
        ratios.append(_vertex(ld[pick], loss[pick]) - _vertex(ln[pick], loss[pick]))
    low, high = np.exp(np.percentile(ratios, percentiles)) if ratios else (math.nan, math.nan)
    return {"budget": float(top["budget"]), "n_opt": float(top["n_opt"]),
            "d_opt": float(top["d_opt"]), "ratio": float(top["d_opt"] / top["n_opt"]),
            "low": float(low), "high": float(high), "loss_min": float(top["loss_min"]),
            "bracketed": bool(top["bracketed"]), "points": len(points)}


@dataclass(frozen=True)
class StepTime:
    """Seconds of one training step of a small model, as a sweep measured them: a fixed cost
    (kernel launches, the optimizer), a cost per layer, and a cost per FLOP:
    ``ms = fixed_ms + per_layer_ms · n_layers + per_gflop_ms · GFLOPs per step``."""

    fixed_ms: float
    per_layer_ms: float
    per_gflop_ms: float
    device: str = ""

    def seconds(self, steps: float, n_layers: float, flops_per_step: float) -> float:
        ms = (self.fixed_ms + self.per_layer_ms * n_layers
              + self.per_gflop_ms * flops_per_step / 1e9)
        return float(steps * ms / 1e3)


@takes_rows
def fit_step_time(rows: pd.DataFrame) -> StepTime:
    """Non-negative least squares of ms per step on (1, n_layers, GFLOPs per step) over a
    sweep's finished points (``train_s`` rows): how long a planned point will take on the
    device they came from. Each cost is ≥ 0: a step cannot get faster for more layers or
    FLOPs, and a free fit gave the H200's launch-bound sweep a negative cost per GFLOP (the
    per-layer and fixed costs had absorbed the time; a cost of 0 says FLOPs did not show)."""
    wide = rows[(rows["status"] == "ok") & (rows["metric"] == "train_s")]
    if len(wide) < 3:
        raise WorkbookError(f"a step-time model needs ≥3 finished points with train_s; got "
                            f"{len(wide)}")
    steps = wide["steps"].to_numpy(float)
    design = np.stack([np.ones(len(wide)), wide["n_layers"].to_numpy(float),
                       wide["compute"].to_numpy(float) / steps / 1e9], axis=1)
    coef, _ = nnls(design, wide["value"].to_numpy(float) / steps * 1e3)
    device = ", ".join(sorted({str(d) for d in wide.get("device", pd.Series()).dropna()}))
    return StepTime(*(float(c) for c in coef), device=device)


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
                         source=f"Huber(δ={delta}) on log L, {len(ll)} points",
                         at_bounds=at_bounds(best.x, bounds))


# The fit's variables as the law names them: (a, b, e) are the logs of (A, B, E).
_FITTED = (("A", True), ("B", True), ("E", True), ("alpha", False), ("beta", False))


def at_bounds(x, bounds, rel: float = 1e-6) -> tuple[str, ...]:
    """Which of the parametric fit's variables ``x`` (log A, log B, log E, α, β) sit on a bound
    of ``bounds``, each in words with the law's value there: 'E at its lower bound (0.0067)'.
    A variable on a bound was stopped there, not fitted: every number derived from it (E, the
    implied a = β/(α+β)) is the bound's as much as the data's."""
    found = []
    for value, (low, high), (name, logged) in zip(x, bounds, _FITTED, strict=True):
        for side, edge in (("lower", low), ("upper", high)):
            if abs(value - edge) <= rel * max(1.0, abs(edge)):
                shown = math.exp(edge) if logged else edge
                found.append(f"{name} at its {side} bound ({shown:.4g})")
    return tuple(found)

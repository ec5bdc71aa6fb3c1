"""Published scaling laws, pure formulas (what the notebook's sliders drive): Chinchilla's
parametric fit L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022, approach 3) and its
replication (Besiroglu et al. 2024), Kaplan et al. (2020), tokens ≈ 20 × params, where GPT-3,
Chinchilla, Llama 2 and Llama 3 sit, and what over-training buys at inference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbook.config import WorkbookError, check_choice, check_range, check_values, takes_rows


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
    # A fitted law's parameters that ended on a bound of the fit's search (a bound, not a
    # minimum: the value is where the search stopped, and what is derived from it is too),
    # e.g. "E at its lower bound (0.0067)". Empty for a published law or a fit inside them.
    at_bounds: tuple[str, ...] = ()

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


def law_optimal(law: str | ParametricLaw, compute):
    """(N_opt, D_opt) at ``compute`` by a law given by name (:data:`LAWS`) or as an object."""
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
    """For one compute budget: the optimal N, D and tokens/param per law, and the loss of each
    law's choice as *two* fixed judges predict it: Chinchilla's approach-3 fit and its Epoch
    replication. Each loss column is one law for every row, so a column ranks the choices;
    a row's choice scored by its own law (approach 3's optimum by approach 3) would make the
    ranking an artefact of which fit scored it."""
    check_range("compute", compute, 1e6, 1e30)
    check_values("laws", laws)
    rows = []
    for law in laws:
        n, d = (float(v) for v in law_optimal(law, compute))
        name = law.name if isinstance(law, ParametricLaw) else law
        rows.append({"law": name, "compute": compute, "n_params": n, "n_tokens": d,
                     "tokens_per_param": d / n,
                     LOSS_BY[CHINCHILLA.name]: float(CHINCHILLA.loss(n, d)),
                     LOSS_BY[CHINCHILLA_REPLICATION.name]:
                         float(CHINCHILLA_REPLICATION.loss(n, d))})
    return pd.DataFrame(rows)


# The loss columns of :func:`allocation`: which published fit predicts them (nats per token).
LOSS_BY = {CHINCHILLA.name: "loss by approach 3 (nats/token)",
           CHINCHILLA_REPLICATION.name: "loss by the Epoch replication (nats/token)"}


@takes_rows
def placement(law: str | ParametricLaw = "Chinchilla (Epoch replication)",
              models: pd.DataFrame = NOTABLE_MODELS) -> pd.DataFrame:
    """Each notable model beside the compute-optimal model for its own compute."""
    out = models.copy()
    out["compute"] = 6 * out["n_params"] * out["n_tokens"]
    out["tokens_per_param"] = out["n_tokens"] / out["n_params"]
    n_opt, d_opt = law_optimal(law, out["compute"].to_numpy())
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


def published_laws() -> pd.DataFrame:
    """Chinchilla's parametric fit and its replication, with the exponents they imply."""
    return pd.DataFrame([{"law": law.name, "E": law.E, "A": law.A, "B": law.B,
                          "alpha": law.alpha, "beta": law.beta, "a = β/(α+β)": law.a,
                          "b = α/(α+β)": law.b, "source": law.source}
                         for law in (CHINCHILLA, CHINCHILLA_REPLICATION)])


# The model sizes (parameters, total) the published studies trained, from their papers:
# Hoffmann et al. 2022, abstract ("70 million to over 16 billion parameters"); Porian et al.
# 2024, their grids of models from 5M to 901M parameters.
STUDIED_SIZES = {"Chinchilla's runs (Hoffmann et al. 2022)": (7e7, 1.6e10),
                 "Porian et al.'s (2024)": (5e6, 9.01e8)}


# The lecture's Chinchilla table (section 2.5): parameters, their compute-optimal tokens, and
# the training FLOPs, as the lecture prints them.
LECTURE_CHINCHILLA = pd.DataFrame([
    (400e6, 8e9, 1.9e19), (1e9, 20e9, 1.2e20), (10e9, 200e9, 1.2e22), (67e9, 1.3e12, 5.4e23),
    (175e9, 3.5e12, 3.7e24), (280e9, 5.6e12, 9.4e24), (520e9, 10.4e12, 3.2e25),
], columns=["n_params", "n_tokens", "compute"])


def lecture_chinchilla_table() -> pd.DataFrame:
    """The lecture's Chinchilla table row by row: its tokens per parameter, 6·N·D from its own
    N and D over its FLOPs, and at its FLOPs the compute-optimal N of each published parametric
    law (Chinchilla's approach 3 as published, and its replication) over the lecture's N."""
    out = LECTURE_CHINCHILLA.copy()
    out["tokens_per_param"] = out["n_tokens"] / out["n_params"]
    out["6ND / compute"] = 6 * out["n_params"] * out["n_tokens"] / out["compute"]
    for law in (CHINCHILLA, CHINCHILLA_REPLICATION):
        n_opt, d_opt = law.optimal(out["compute"].to_numpy())
        out[f"N_opt / N ({law.name})"] = n_opt / out["n_params"]
        out[f"tokens/param ({law.name})"] = d_opt / n_opt
    return out

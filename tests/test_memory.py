"""Memory formulas against the lecture and the papers; the measurement against tensor sizes."""

from __future__ import annotations

import pytest

from workbook.config import WorkbookError
from workbook.memory import (
    activation_bytes,
    bytes_per_param,
    lecture_175b,
    measure_breakdown,
    training_memory,
)


def test_bytes_per_param() -> None:
    assert sum(bytes_per_param("fp32").values()) == 16, "fp32 Adam: 4 + 4 + 8"
    assert bytes_per_param("mixed") == {"params": 2, "grads": 2, "optimizer": 12}, (
        "the ZeRO paper's mixed-precision Adam: K = 12")
    assert sum(bytes_per_param("bf16").values()) == 8
    with pytest.raises(WorkbookError, match="precision"):
        bytes_per_param("int3")


def test_lecture_175b_needs_about_3_tb() -> None:
    table = lecture_175b().set_index("component")["GB"]
    assert table["parameters (fp32)"] == pytest.approx(700)
    assert table["Adam m + v (fp32)"] == pytest.approx(1400)
    states = table.iloc[:3].sum()
    assert 2700 < states + table["activations, 1 sequence of 2048"] < 3300, (
        "the lecture's ~3 TB: 2.8 TB of model states plus activations")
    ratio = (states + table["activations, 1 sequence of 2048"]) / 80
    assert 35 < ratio < 41, f"the lecture: ~38x one H100's 80 GB; formula says {ratio:.0f}x"


def test_activation_formula_is_korthikanti() -> None:
    s, b, h, a, L = 2048, 1, 12288, 96, 96
    got = activation_bytes(L, h, a, s, b, act_bytes=2)["layers"]
    assert got == pytest.approx(L * s * b * h * (34 + 5 * a * s / h)), "sbh(34 + 5as/h) per layer"
    ckpt = activation_bytes(L, h, a, s, b, act_bytes=2, checkpointing=True)["layers"]
    assert ckpt == L * 2 * s * b * h, "full recomputation keeps 2sbh per layer"
    assert training_memory(1e9, "mixed")["bytes"].sum() == 16e9


@pytest.fixture(scope="module")
def breakdown():
    return {ckpt: measure_breakdown(2, 64, 4, 512, 64, 2, "fp32", "adamw", ckpt, "eager", 0)
            for ckpt in (False, True)}


def test_measured_states_are_the_formula(breakdown) -> None:
    rows = breakdown[False]
    psi = int(rows["n_params"].iloc[0])
    got = rows[rows["method"] == "tensors"].set_index("component")["value"]
    assert got["params"] == 4 * psi and got["grads"] == 4 * psi, "fp32: 4 bytes each"
    assert got["optimizer"] == 8 * psi, "AdamW keeps exp_avg and exp_avg_sq in fp32: 8Ψ"


def test_activations_measured_near_formula_and_checkpointing_saves(breakdown) -> None:
    full = breakdown[False].set_index(["component", "method"])["value"]
    ckpt = breakdown[True].set_index(["component", "method"])["value"]
    predicted = activation_bytes(2, 64, 4, 64, 2, act_bytes=4, vocab=512)["total"]
    measured = full[("activations", "saved")]
    assert measured == pytest.approx(predicted, rel=0.25), (
        f"saved-for-backward {measured:.0f} B vs Korthikanti's formula {predicted:.0f} B")
    assert ckpt[("activations", "saved")] < 0.5 * measured, (
        "checkpointing keeps only each layer's input during the forward")

"""Number formats, underflow, stagnation and the four-way training, checked on a CPU."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from workbook import precision as P
from workbook.config import WorkbookError

# --------------------------------------------------------------------------- formats


def test_format_table_matches_published_ieee_and_ocp_numbers():
    t = P.format_table().set_index("format")
    published = {  # IEEE 754 binary16/32, bfloat16, OCP FP8 (E4M3 "fn", E5M2)
        "fp32": (3.4028234663852886e38, 2.0**-126, 2.0**-149, 2.0**-23),
        "tf32": ((2 - 2.0**-10) * 2.0**127, 2.0**-126, 2.0**-136, 2.0**-10),
        "fp16": (65504.0, 2.0**-14, 2.0**-24, 2.0**-10),
        "bf16": ((2 - 2.0**-7) * 2.0**127, 2.0**-126, 2.0**-133, 2.0**-7),
        "fp8_e4m3": (448.0, 2.0**-6, 2.0**-9, 2.0**-3),
        "fp8_e5m2": (57344.0, 2.0**-14, 2.0**-16, 2.0**-2),
    }
    for fmt, (mx, normal, sub, eps) in published.items():
        got = t.loc[fmt, ["max", "smallest_normal", "smallest_subnormal", "epsilon"]].tolist()
        assert got == pytest.approx([mx, normal, sub, eps], rel=1e-12), (
            f"{fmt}: (max, smallest normal, smallest subnormal, eps) should be "
            f"{(mx, normal, sub, eps)}, the table computed {got}")
    assert (t.loc["fp16", "exponent_bits"], t.loc["bf16", "exponent_bits"]) == (5, 8), (
        "BF16 keeps FP32's 8 exponent bits (same range); FP16 has 5")
    assert t.loc["int8", "max"] == 127 and t.loc["int8", "min"] == -128


def test_bits_of_simple_values():
    rows = P.explore(-2.0).set_index("format")
    assert rows.loc["bf16", "bits"] == "1 10000000 0000000", "-2 = sign 1, exponent 127+1"
    assert rows.loc["fp16", "bits"] == "1 10000 0000000000", "-2 = sign 1, exponent 15+1"
    assert rows.loc["int8", "bits"] == "1 1111110", "two's complement of -2"
    assert (rows["stored"] == -2.0).all() and (rows["status"] == "exact").all()


def _tf32_reference(x: float) -> float:
    """Round to 11 significant bits (1 implicit + 10 stored), ties away from zero."""
    if x == 0 or not math.isfinite(x):
        return x
    m, e = math.frexp(abs(x))                 # abs(x) = m * 2**e, 0.5 <= m < 1
    return math.copysign(math.floor(m * 2**11 + 0.5) / 2**11 * 2.0**e, x)


def test_tf32_emulation_matches_a_reference_rounding():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, generator=gen) * torch.exp2(torch.randint(-30, 30, (2000,),
                                                                    generator=gen).float())
    got = P.round_trip(x, "tf32")
    want = torch.tensor([_tf32_reference(v) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=0,
                               msg="TF32 keeps 10 mantissa bits, rounded to nearest")


def test_overflow_is_shown_not_hidden():
    rows = P.explore(70000.0).set_index("format")
    assert math.isinf(rows.loc["fp16", "stored"]), "70000 > 65504 must become inf in FP16"
    assert "overflow" in rows.loc["fp16", "status"] and "inf" in rows.loc["fp16", "status"]
    assert rows.loc["bf16", "status"] == "rounded", "BF16 has FP32's range: 70000 fits"
    assert rows.loc["int8", "stored"] == 127, "int8 saturates; a plain cast would wrap to 112"
    assert "no inf" in rows.loc["fp8_e4m3", "status"]


def test_underflow_is_named():
    rows = P.explore(1e-8).set_index("format")
    assert rows.loc["fp16", "stored"] == 0 and "underflow" in rows.loc["fp16", "status"]
    assert rows.loc["bf16", "stored"] == pytest.approx(1e-8, rel=4e-3), "BF16 keeps 1e-8"


def test_bad_input_is_one_line():
    for bad in (lambda: P.parse_value("abc"), lambda: P.explore("0.1"),
                lambda: P.cast(torch.ones(1), "fp4"),
                lambda: P.TrainingConfig(64, 2, 2, 4096, 64, batch_size=0, steps=4, warmup=1,
                                         lr=1e-3),
                lambda: P.underflow_shares(torch.zeros(4), "fp16")):
        with pytest.raises(WorkbookError) as info:
            bad()
        assert "\n" not in str(info.value)


def test_fp8_support_is_named_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("CPU-only message")
    text = P.fp8_support()
    assert "not supported" in text and "FP8" in text


# ------------------------------------------------------------------------- underflow


def test_underflow_shares_against_hand_counted_values():
    g = torch.tensor([1e-9, 1e-6, 1e-3, 1e5])       # below subnormal, subnormal, normal, >max
    fp16 = P.underflow_shares(g, "fp16")
    assert fp16 == {"share_zero": 0.25, "share_subnormal": 0.25, "share_overflow": 0.25}
    scaled = P.underflow_shares(g, "fp16", scale=2.0**10)
    assert scaled["share_zero"] == 0, "x1024 lifts 1e-9 to 1e-6: a subnormal, not zero"
    assert P.underflow_shares(g, "bf16") == {"share_zero": 0.0, "share_subnormal": 0.0,
                                             "share_overflow": 0.0}


@pytest.fixture(scope="module")
def base_grads():
    from workbook.data import random_batch, token_ids
    from workbook.model import load_base_model

    model, _ = load_base_model("small", seed=0, device="cpu")
    ids = token_ids("train", model.config.vocab_size)
    x, y = random_batch(ids, 4, 64, torch.Generator().manual_seed(0))
    return P.capture_gradients(model.train(), x, y)


def test_real_gradients_underflow_in_fp16_not_bf16(base_grads):
    logit = base_grads["logit_grad"]
    fp16, bf16 = P.underflow_shares(logit, "fp16"), P.underflow_shares(logit, "bf16")
    assert fp16["share_zero"] > 0.05, (
        f"dLoss/dlogits are ~p/N for N tokens: many fall below FP16's 2^-24 "
        f"(got {fp16['share_zero']:.3f} flushed)")
    assert bf16["share_zero"] == 0, "BF16 reaches 2^-133: no real gradient is flushed"
    scaled = P.underflow_shares(logit, "fp16", scale=2.0**16)
    assert scaled["share_zero"] < fp16["share_zero"] / 10, "a loss scale of 2^16 rescues them"
    assert set(base_grads) == set(P.GRAD_KINDS)


def test_gradscaler_backs_off_after_overflow():
    from workbook.data import token_ids
    from workbook.model import ModelConfig, build_model

    model = build_model(ModelConfig(d_model=32, n_layers=1, n_heads=2, seq_len=32), 0)
    trace = P.gradscaler_trace(model, token_ids("train"), steps=3, batch_size=2, seq_len=16,
                               lr=1e-3, init_scale=2.0**60, growth_interval=100, seed=0,
                               device=torch.device("cpu"))
    assert trace["skipped"].iloc[0] == 1, "2^60 x gradients overflow FP16: step 0 is skipped"
    assert trace["loss_scale"].iloc[1] == 2.0**59, "after a skipped step the scale halves"


# ------------------------------------------------------------------------ stagnation


def test_update_lost_rule_predicts_the_measurement():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(20000, generator=gen) * 0.05
    u = -3e-5 * torch.sign(torch.randn(20000, generator=gen))
    shares = {f: P.update_lost_share(w, u, f) for f in ("fp32", "fp16", "bf16")}
    for fmt, s in shares.items():
        assert abs(s["measured"] - s["predicted"]) < 0.01, (
            f"{fmt}: an update is lost iff |u| < ulp(w)/2; measured {s['measured']:.4f}, "
            f"predicted {s['predicted']:.4f}")
    assert shares["fp32"]["measured"] == 0, "FP32 weights keep every 3e-5 update"
    assert shares["bf16"]["measured"] > shares["fp16"]["measured"] > 0, (
        "BF16 has 3 fewer mantissa bits than FP16: it loses more small updates")


# -------------------------------------------------------------------------- training


def test_train_one_rows_and_unsupported_tf32_on_cpu(ledger_dir):
    cfg = {"d_model": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 4096, "seq_len": 16,
           "batch_size": 2, "steps": 3, "warmup": 1, "lr": 1e-3}
    rows = P.train_one("bf16_autocast", cfg, seed=0)
    assert (rows["metric"] == "loss").sum() == 3 and rows["value"].notna().all()
    assert {"step_time", "model_tflops", "skipped_steps"} <= set(rows["metric"])
    if not torch.cuda.is_available():
        tf32 = P.train_one("tf32", cfg, seed=0)
        assert tf32["status"].iloc[0] == "unsupported" and "8.0" in tf32["error"].iloc[0]


def test_predicted_step_time_scales_by_roofline_ratio():
    rows = pd.DataFrame({"mode": ["fp32", "bf16_autocast"], "metric": "step_time",
                         "value": [300.0, 60.0], "status": "ok", "device": "GPU X"})
    roofline = pd.DataFrame({"kind": "matmul", "dtype": ["fp32", "bf16"],
                             "value": [50.0, 800.0], "source": "recorded", "status": "ok",
                             "device": "GPU X"})
    pred = P.predicted_step_times(rows, roofline).set_index("mode")["value"]
    assert pred["bf16_autocast"] == pytest.approx(300.0 * 50 / 800), (
        "if only matmuls mattered, BF16 would be 16x faster than FP32")
    assert P.predicted_step_times(rows, roofline.assign(device="GPU Y")).empty, (
        "a roofline from another device must not predict this one")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_autocast_uses_less_memory_than_fp32_on_gpu():
    cfg = {"d_model": 256, "n_layers": 2, "n_heads": 4, "vocab_size": 4096, "seq_len": 256,
           "batch_size": 8, "steps": 3, "warmup": 1, "lr": 1e-3}
    peak = {m: P.train_one(m, cfg).set_index("metric").loc["peak_memory", "value"]
            for m in ("fp32", "bf16_autocast")}
    assert peak["bf16_autocast"] < peak["fp32"], "16-bit activations take half the bytes"


def test_explorers_react_to_values_set_from_python():
    pytest.importorskip("ipywidgets")   # in requirements.txt; absent from bare GPU images
    explorer = P.format_explorer("0.1")
    explorer.set(value="70000")
    assert "stored as inf" in explorer.message.value, "FP16 overflow must be said in the table"
    explorer.set(value="abc")
    assert explorer.last_error and "not a number" in explorer.last_error
    grads = {"logit_grad": torch.tensor([1e-9, 1e-3]), "hidden_grad": torch.tensor([1e-3]),
             "weight_grad": torch.tensor([1e3])}
    scale = P.loss_scale_explorer(grads, log2_scale=0)
    assert "50.0% of the logit" in scale.message.value, "1e-9 of the two is flushed at scale 1"
    scale.set(log2_scale=10)
    assert "turns 100.00% of the weight" in scale.message.value, "1e3 x 1024 > 65504: inf"
    fp16_zero = scale.fig.data[0]   # fp16, share flushed to 0: none at scale 2^10
    assert fp16_zero.name == "fp16 zero" and list(fp16_zero.text) == ["0", "0", "0"]


def _master_pair(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(16, 8, generator=gen), torch.randn(8, generator=gen)]
    fp32 = [torch.nn.Parameter(w.clone()) for w in weights]
    bf16 = [torch.nn.Parameter(w.to(torch.bfloat16)) for w in weights]
    grads = [torch.randn(w.shape, generator=gen).to(torch.bfloat16) for w in weights]
    return fp32, bf16, grads


def test_master_weight_adamw_is_adamw_on_fp32_masters():
    """Same steps, same gradients: the FP32 masters follow torch's AdamW on FP32 weights
    that started from the same (BF16-rounded) values, and the model holds them rounded."""
    _, bf16, grads = _master_pair()
    fp32 = [torch.nn.Parameter(p.detach().float()) for p in bf16]
    ref = torch.optim.AdamW(fp32, lr=1e-2, weight_decay=0.1)
    opt = P.MasterWeightAdamW(bf16, lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        for p, q, g in zip(fp32, bf16, grads, strict=True):
            p.grad, q.grad = g.float(), g.clone()
        ref.step()
        opt.step()
        opt.zero_grad()
    for p, m, q in zip(fp32, opt.master, bf16, strict=True):
        torch.testing.assert_close(m, p.detach(), rtol=1e-6, atol=1e-7)
        assert q.dtype == torch.bfloat16 and q.grad is None
        assert torch.equal(q.detach(), m.to(torch.bfloat16))


def test_master_weights_keep_updates_that_bf16_weights_round_away():
    _, bf16, grads = _master_pair(1)
    pure = [torch.nn.Parameter(p.detach().clone()) for p in bf16]
    start = [p.detach().clone() for p in bf16]
    opt = P.MasterWeightAdamW(bf16, lr=1e-5)
    plain = torch.optim.AdamW(pure, lr=1e-5, weight_decay=0.0)
    for p, q, g in zip(pure, bf16, grads, strict=True):
        p.grad, q.grad = g.clone(), g.clone()
    opt.step()
    plain.step()
    # an update of 1e-5 is below half of BF16's spacing for weights of size ~1: it rounds away
    assert all(torch.equal(p.detach(), s) for p, s in zip(pure, start, strict=True))
    moved = sum((m != s.float()).sum().item() for m, s in zip(opt.master, start, strict=True))
    assert moved > 0.9 * sum(s.numel() for s in start)


def test_master_weight_adamw_skips_parameters_without_a_gradient():
    _, bf16, grads = _master_pair(2)
    opt = P.MasterWeightAdamW(bf16, lr=1e-1)
    bf16[0].grad = grads[0]
    before = [p.detach().clone() for p in bf16]
    opt.step()
    assert torch.equal(bf16[1].detach(), before[1]), "no gradient: untouched"
    assert not torch.equal(bf16[0].detach(), before[0]), "a gradient: updated"
    with pytest.raises(WorkbookError, match="no trainable parameters"):
        P.MasterWeightAdamW([torch.nn.Parameter(torch.ones(2), requires_grad=False)])


def test_speedup_caption_reads_both_baselines_from_the_rows():
    def rows(step_time):
        return pd.DataFrame([{"mode": m, "metric": metric, "value": v, "status": "ok",
                              "source": "recorded", "device": "NVIDIA H200", "n_gpus": 1,
                              "step": math.nan}
                             for m, t, peak in step_time
                             for metric, v in (("step_time", t), ("peak_memory", peak))])

    text = P.speedup_caption(rows([("fp32", 240.0, 10.0), ("tf32", 80.0, 10.0),
                                   ("bf16_autocast", 40.0, 8.0)]))
    assert "speed-up over fp32: tf32 3.00×, bf16_autocast 6.00×" in text, text
    assert "over tf32: bf16_autocast 2.00×" in text, text
    assert "Peak memory over fp32: tf32 1.00×, bf16_autocast 0.80×" in text, text
    no_tf32 = P.speedup_caption(rows([("fp32", 100.0, 10.0), ("bf16_autocast", 50.0, 8.0)]))
    assert "over tf32" not in no_tf32 and "bf16_autocast 2.00×" in no_tf32, no_tf32
    assert "No training rows" in P.speedup_caption(rows([("bf16_autocast", 50.0, 8.0)]))


def test_format_table_shows_int8s_missing_subnormal_in_words():
    t = P.format_table()
    assert math.isnan(t.set_index("format").loc["int8", "smallest_subnormal"]), (
        "a number to code: NaN, the column stays numeric")
    assert "none (integer)" in t._repr_html_() and "NaN" not in t._repr_html_()
    assert "none (integer)" in repr(t)


def test_every_precision_claim_names_a_unit():
    empty = pd.DataFrame()
    table = P.claims(empty, empty, empty)
    assert table["unit"].str.len().gt(0).all(), table[["claim", "unit"]].to_string()

"""Memory formulas against the lecture and the papers; the measurement against tensor sizes."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from workbook import results
from workbook.config import WorkbookError
from workbook.memory import (
    EXPONENT_TOL,
    RecomputeConfig,
    SweepConfig,
    activation_bytes,
    batch_for_gpu,
    breakdown_table,
    build_model,
    bytes_per_param,
    claims,
    fit_exponent,
    forward_activations,
    gap_caption,
    gap_items,
    gap_table,
    lecture_175b,
    measure_breakdown,
    plot_breakdown,
    plot_seq_sweep,
    recompute_caption,
    recompute_claims,
    recompute_overhead,
    recompute_table,
    run_activation_sweep,
    run_recompute,
    scenario,
    sweep_caption,
    sweep_claims,
    sweep_exponents,
    sweep_table,
    train_steps,
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


# --------------------------------------------------------------- activations vs seq_len


def test_fit_exponent_recovers_a_power_law() -> None:
    xs = [64, 128, 256, 512]
    assert fit_exponent(xs, [3 * x**1.5 for x in xs]) == pytest.approx(1.5), "y = 3·x^1.5"
    with pytest.raises(WorkbookError, match="positive"):
        fit_exponent([1, 2], [1, 0])
    with pytest.raises(WorkbookError, match="two different"):
        fit_exponent([4, 4], [1, 2])


def test_a_forward_without_backward_leaves_no_activation_behind() -> None:
    # The H100 Run All (85d830f626cc): SavedTensors' pack hook handed back each op's own
    # output, a reference cycle through C++; every length's activations stayed allocated and
    # sdpa at seq_len 1024 ran out of memory behind eager's leftovers.
    import gc
    import weakref

    model = build_model(2, 64, 4, 128, 32, "eager", 0, dropout=0.0)
    outputs: list[weakref.ref] = []
    model.transformer.h[0].register_forward_hook(
        lambda mod, inp, out: outputs.append(weakref.ref(out[0] if isinstance(out, tuple)
                                                         else out)))
    got = forward_activations(model, 128, 32, 2, "fp32", 0)
    gc.collect()
    assert got["saved"] > 0 and len(outputs) == 1
    assert outputs[0]() is None, "block 0's output outlived the forward: a leak per length"


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_saved_activations_match_the_formula_without_dropout(attention) -> None:
    n_layer, d, a, vocab, s, b = 2, 64, 4, 512, 64, 2
    model = build_model(n_layer, d, a, vocab, s, attention, 0, dropout=0.0)
    got = forward_activations(model, vocab, s, b, "fp32", 0)
    want = activation_bytes(n_layer, d, a, s, b, act_bytes=4, vocab=vocab, dropout=False,
                            attention_matrix=attention == "eager")
    assert got["scores"] == want["scores"], (
        f"{attention}: the s×s tensors saved ({got['scores']:.0f} B) are the formula's "
        f"L·a·s²·b·4 ({want['scores']:.0f} B); fused attention stores none")
    assert got["saved"] == pytest.approx(want["total"], rel=0.15), (
        f"{attention}: saved {got['saved']:.0f} B vs formula {want['total']:.0f} B")


def test_seq_sweep_eager_quadratic_sdpa_linear() -> None:
    cfg = SweepConfig(n_layer=1, d_model=32, n_head=4, vocab=128, seq_lens=(32, 64, 128),
                      batch=1, precision="fp32")
    rows = run_activation_sweep(cfg, seed=0).assign(device="cpu-test")
    k = sweep_exponents(rows).set_index("series")
    assert k.loc["sdpa", "measured k"] == pytest.approx(1.0, abs=0.02), "SDPA keeps O(s)"
    assert k.loc["eager s×s", "measured k"] == pytest.approx(2.0, abs=1e-6), "s×s grows as s²"
    assert k.loc["eager", "measured k"] > k.loc["sdpa", "measured k"] + 0.1
    table = sweep_table(rows)
    assert set(table["status"]) == {"ok"} and len(table) == 6
    verdicts = sweep_claims(rows)
    assert len(verdicts) == 4 and all(c.abs_tol == EXPONENT_TOL for c in verdicts[:3])
    assert "eager" in sweep_caption(rows) and "k =" in sweep_caption(rows)
    fig = plot_seq_sweep(rows)
    assert len(fig.data) == 4, "formula line + measured points for each attention"
    # a recorded device beside it: its own model's formula (dotted) and its name in the title
    there = rows.assign(device="GPU-y", source=rows["source"].replace("measured", "recorded"),
                        value=rows["value"] * 10, recorded_at="2026-12-01T00:00:00Z",
                        n_gpus=1, seed=0)
    both = plot_seq_sweep(pd.concat([rows, there], ignore_index=True))
    formulas = [t for t in both.data if "formula" in t.name]
    assert [t.line.dash for t in formulas] == ["dash", "dash", "dot", "dot"]
    assert "GPU-y" in both.layout.title.text and both.layout.title.text.count("<sup>") == 2


def test_sweep_oom_rows_are_points_not_a_crash() -> None:
    rows = pd.DataFrame([
        {"attention": "eager", "seq_len": s, "method": m, "value": v, "status": "ok",
         "metric": "bytes", "source": src, "device": "GPU-x", "n_layer": 1, "n_head": 1,
         "batch": 1, "precision": "fp32"}
        for s, m, v, src in [(64, "formula", 1e6, "predicted"), (128, "formula", 4e6,
                                                                  "predicted"),
                             (256, "formula", 16e6, "predicted"), (64, "peak", 1.1e6,
                                                                   "measured"),
                             (128, "peak", 4.2e6, "measured")]]
        + [{"attention": "eager", "seq_len": 256, "method": "peak", "value": float("nan"),
            "status": "oom", "metric": "bytes", "source": "measured", "device": "GPU-x",
            "n_layer": 1, "n_head": 1, "batch": 1, "precision": "fp32"}])
    fig = plot_seq_sweep(rows)
    oom = [t for t in fig.data if "oom" in t.name]
    assert len(oom) == 1 and list(oom[0].y) == [16.0], "oom drawn at the formula's value"
    assert "did not fit (oom): eager at 256" in sweep_caption(rows)


def test_explorer_flash_drops_the_s_squared_term() -> None:
    eager = scenario("GPT-2 small (124M)", "bf16", 8192, 1, False, "eager")
    flash = scenario("GPT-2 small (124M)", "bf16", 8192, 1, False, "flash")
    acts = {k: t.set_index("component").loc["activations", "bytes"]
            for k, t in (("eager", eager), ("flash", flash))}
    s2 = activation_bytes(12, 768, 12, 8192, 1, act_bytes=2)["scores"]
    assert acts["eager"] - acts["flash"] == pytest.approx(s2), "only the s² term differs"
    with pytest.raises(WorkbookError, match="attention"):
        scenario("GPT-2 small (124M)", "bf16", 8192, 1, False, "ring")


# --------------------------------------------------------------- checkpointing's time


def test_recompute_overhead_formula() -> None:
    got = recompute_overhead(12, 768, 50304, 1024)
    assert got["lecture"] == pytest.approx(1 / 3)
    h, s, L, V = 768, 1024, 12, 50304
    blocks = L * (24 * h * h + 4 * s * h)
    assert got["blocks"] == pytest.approx(blocks / (3 * (blocks + 2 * V * h))), (
        "blocks' forward over (forward + backward) of blocks and LM head")
    assert recompute_overhead(12, 768, 1, 8)["blocks"] == pytest.approx(1 / 3, rel=1e-3), (
        "without an LM head to skip, one extra forward is a third of the step")


def test_claims_check_the_model_states_bytes() -> None:
    def row(optimizer_bytes: float) -> pd.Series:
        data = [(c, m, v) for c, v in (("params", 4000.0), ("grads", 4000.0))
                for m in ("formula", "tensors")]
        data += [("optimizer", "formula", 8000.0), ("optimizer", "tensors", optimizer_bytes)]
        rows = pd.DataFrame([{"component": c, "method": m, "value": v, "device": "cpu-test",
                              "status": "ok", "source": "measured", "seq_len": 64,
                              "checkpointing": False, "precision": "fp32"} for c, m, v in data])
        table = claims(rows)
        return table[table["claim"].str.startswith("parameters, gradients and Adam")].iloc[0]

    same = row(8000.0)
    assert same["verdict"] == "holds" and same["predicted"] == pytest.approx(0.016), same
    assert row(8008.0)["verdict"].startswith("off"), "equal means equal: 8 bytes more is off"


def test_recompute_rows_table_and_claims() -> None:
    cfg = RecomputeConfig(n_layer=1, d_model=32, n_head=4, vocab=128, seq_len=32, batch=2,
                          precision="fp32", steps=1, repeats=3)
    rows = run_recompute(cfg, seed=0).assign(device="cpu-test")
    timed = rows[rows["metric"] == "step_ms"]
    assert len(timed) == 6 and (timed["value"] > 0).all(), "3 repeats × with/without"
    table = recompute_table(rows).iloc[0]
    assert table["saved MB (ckpt)"] < table["saved MB (no ckpt)"], "checkpointing saves"
    low, high = table["overhead % (pairs: min)"], table["overhead % (pairs: max)"]
    assert low <= table["overhead % (median of pairs)"] <= high
    made = recompute_claims(rows)
    assert len(made) == 2 and all(c.low == table["overhead % (median: low)"] for c in made)
    assert made[0].predicted == pytest.approx(33.33, abs=0.01), "one more forward: +33 %"
    assert "ms without checkpointing" in recompute_caption(rows)


def test_train_steps_goes_through_the_training_loop() -> None:
    model = build_model(1, 32, 4, 128, 16, "sdpa", 0, dropout=0.0)
    log = train_steps(model, 2, 128, 2, 16, "fp32")
    assert list(log[log["split"] == "train"]["step"]) == [1, 2], "two steps, one row each"


def test_batch_for_gpu_scales_with_memory(monkeypatch) -> None:
    from workbook.hardware import Machine
    from workbook.memory import experiments

    assert batch_for_gpu(8) == 8 or torch.cuda.is_available(), "a CPU keeps the batch"
    card = Machine("cuda", "card", 1, 24.0, (8, 9), ("bf16",))
    monkeypatch.setattr(experiments, "detect", lambda: card)
    assert batch_for_gpu(8) == 2, "24 of 80 GB: 8 × 0.3 → 2 (a power of two, rounded down)"
    assert batch_for_gpu(1) == 1, "never below one"
    monkeypatch.setattr(experiments, "detect", lambda: Machine("cuda", "big", 1, 141.0, (9, 0),
                                                               ("bf16",)))
    assert batch_for_gpu(8) == 8, "a larger card than the preset's keeps the preset"


# --------------------------------------------------------------- the gap, item by item


def test_gap_table_items_sum_to_the_measured_peak() -> None:
    rec = results.load("memory_breakdown", ok_only=True)
    if rec.empty or not (rec["method"] == "allocator").any():
        pytest.skip("no recorded GPU breakdown in the ledger")
    t = gap_table(rec)
    first = t[t["where"] == t["where"].iloc[0]].set_index("item")
    parts = ["parameters", "gradients (+ first backward's buffers)", "optimizer states",
             "activations (all)", "transients at the peak"]
    assert first.loc[parts, "measured GB"].sum() == pytest.approx(
        first.loc["peak (allocated)", "measured GB"], abs=0.01), "the items make the peak"
    assert first.loc[parts, "Δ GB"].sum() == pytest.approx(
        first.loc["peak (allocated)", "Δ GB"], abs=0.01), "the Δs make the gap"
    caption = gap_caption(rec)
    assert f"{first.loc['peak (allocated)', 'measured GB']:.2f} GB" in caption


def test_breakdown_split_on_cpu(breakdown) -> None:
    rows = breakdown[False].set_index(["component", "method"])["value"]
    assert 0 < rows[("attention scores", "saved")] < rows[("activations", "saved")], (
        "eager attention's s×s matrices are part of what is saved")
    here = breakdown[False].assign(device="cpu-test", seq_len=64, checkpointing=False)
    assert gap_caption(here).startswith("No breakdown")
    other = here.assign(device="other", seq_len=4096)
    fig = plot_breakdown(pd.concat([here, other], ignore_index=True))
    assert len(fig.data) > 0 and "cpu-test" in fig.layout.title.text, (
        "the first device's own longest seq_len, not the longest of all devices")


def test_breakdown_table_says_mb_and_dashes_what_a_method_has_not(breakdown) -> None:
    here = breakdown[False].assign(device="cpu-test", seq_len=64, checkpointing=False)
    table = breakdown_table(here)
    assert table.columns.name is None, "no stray 'method' over the index"
    values = [c for c in table.columns if c.endswith(" (MB)")]
    assert {"saved (MB)", "tensors (MB)"} <= set(values)
    assert not table.isna().any().any(), "a missing value reads '–', not NaN"
    cells = table.set_index("component")
    assert cells.loc["params", "saved (MB)"] == "– (activations only)", "a dash says why"
    assert cells.loc["activations", "tensors (MB)"] == "– (model states only)"
    psi = int(breakdown[False]["n_params"].iloc[0])
    assert float(cells.loc["params", "tensors (MB)"].replace(",", "")) == pytest.approx(
        4 * psi / 1e6, abs=0.01)


def test_gap_table_splits_scores_and_names_the_peak_phase() -> None:
    shape = {"n_params": 1000, "n_layer": 1, "d_model": 8, "n_head": 2, "vocab": 16,
             "seq_len": 4, "batch": 1, "precision": "fp32", "optimizer": "adamw",
             "checkpointing": "False", "attention": "eager", "device": "GPU-x",
             "status": "ok", "source": "measured"}
    got = {("params", "allocator"): 4000, ("grads", "allocator"): 4100,
           ("optimizer", "allocator"): 8000, ("activations", "allocator"): 3000,
           ("attention scores", "saved"): 1000, ("peak", "allocator"): 21000,
           ("peak in forward", "allocator"): 19500, ("peak in backward", "allocator"): 21000,
           ("peak in step", "allocator"): 20000, ("allocator reserve", "allocator"): 500,
           ("CUDA context", "allocator"): 700}
    rows = pd.DataFrame([{**shape, "component": c, "method": m, "value": float(v)}
                         for (c, m), v in got.items()])
    t = gap_items(rows).set_index("item")["measured GB"] * 1e9
    assert t["activations: the rest"] == pytest.approx(2000), "activations minus the s×s part"
    assert t["transients at the peak"] == pytest.approx(21000 - 19100), "peak minus held"
    caption = gap_caption(rows)
    assert "The peak falls in the backward" in caption and "CUDA context" in caption
    # an older recording measured fewer items: the table shows the ones it has, never a NaN
    old = rows[~rows["component"].isin(["attention scores", "allocator reserve", "CUDA context",
                                        "peak in forward", "peak in backward", "peak in step"])]
    old = old.assign(device="GPU-old", source="recorded", n_gpus=1, seed=0,
                     recorded_at="2026-11-22T00:00:00Z")
    shown = gap_table(pd.concat([rows, old], ignore_index=True))
    assert not shown.isna().any().any(), shown
    items = shown.groupby("where")["item"].apply(set)
    here, then = items["this machine (GPU-x)"], items.drop("this machine (GPU-x)").iloc[0]
    assert "CUDA context (not in the count)" in here and "activations (all)" in then
    assert not {"CUDA context (not in the count)", "activations: the rest"} & then
    assert not any(i.startswith("peak in") for i in here), "the phases are in the caption"
    assert "one fp32 logits tensor GB" not in shown, "one number for every row: the caption's"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the allocator's peak needs a GPU")
def test_gpu_sweep_peak_and_breakdown_gap_items() -> None:
    cfg = SweepConfig(n_layer=2, d_model=64, n_head=4, vocab=512, seq_lens=(128, 256, 512),
                      batch=2, precision="amp_bf16")
    rows = run_activation_sweep(cfg, seed=0).assign(device="gpu-test")
    peak = rows[rows["method"] == "peak"].set_index(["attention", "seq_len"])["value"]
    saved = rows[rows["method"] == "saved"].set_index(["attention", "seq_len"])["value"]
    assert (peak > 0.9 * saved).all(), "the forward's peak holds what it saved for backward"
    got = measure_breakdown(2, 64, 4, 512, 128, 2, "amp_bf16", "adamw", False, "eager", 0)
    got = got.assign(n_layer=2, d_model=64, n_head=4, vocab=512, seq_len=128, batch=2,
                     precision="amp_bf16", optimizer="adamw", checkpointing="False",
                     attention="eager", device="gpu-test", source="measured")
    t = gap_items(got).set_index("item")["measured GB"]
    assert t[["peak in forward", "peak in backward", "peak in step"]].max() == pytest.approx(
        t["peak (allocated)"]), "the peak is the largest phase's"
    assert t["CUDA context (not in the count)"] > 0


def test_plot_fit_titles_only_the_device_it_draws() -> None:
    from workbook.memory import plot_fit

    def search(device: str, gpu_gb: float) -> pd.DataFrame:
        return pd.DataFrame([{"n_layer": n, "n_params": 4e8 * n, "d_model": 4096,
                              "seq_len": 2048, "batch": 4, "precision": "amp_bf16",
                              "checkpointing": False, "largest_fitting_layers": 2,
                              "gpu_bytes": gpu_gb * 1e9, "metric": "peak_bytes",
                              "value": 1e10 * n, "unit": "bytes", "source": "recorded",
                              "status": "ok" if n <= 2 else "oom", "device": device,
                              "n_gpus": 1, "seed": 0, "recorded_at": "2026-11-22T00:00:00Z"}
                             for n in (1, 2, 4)])
    both = pd.concat([search("NVIDIA H100 80GB HBM3", 85.0), search("NVIDIA H200", 150.0)])
    fig = plot_fit(both)
    title = fig.layout.title.text
    assert "H100" in title and "H200" not in title  # the figure draws the first device only
    assert list(fig.data[0].x) == [1, 2]
    # the capacity in both units: an '80GB' card holds 85 GB, which is 79 GiB
    line = fig.layout.annotations[-1].text
    assert line == "NVIDIA H100 80GB HBM3: 85 GB (79 GiB)", line
    assert "H200" in plot_fit(both[both["device"] == "NVIDIA H200"]).layout.title.text


# ------------------------------------------- the median's interval, bytes per element, probes


def test_median_interval_takes_order_statistics_not_the_extremes() -> None:
    from workbook.memory import median_interval

    pairs = [0.334, 0.978, 0.654, 0.542, 0.645, 0.667, 0.692]  # one fast repeat, one slow
    low, high, cover = median_interval(pairs)
    assert (low, high) == (0.542, 0.692), "the 2nd and 6th of 7: neither extreme decides"
    assert cover == pytest.approx(1 - 2 * 8 / 128), "1 − 2·P(Binomial(7, ½) ≤ 1)"
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0, 0.75), "too few: min and max"
    with pytest.raises(WorkbookError, match="no NaN"):
        median_interval([1.0, float("nan")])


def test_recompute_claims_judge_the_median_by_its_interval() -> None:
    no_ckpt = [30.0, 27.0, 28.0, 32.0, 32.0, 32.0, 30.0]
    overhead = [0.334, 0.978, 0.654, 0.542, 0.645, 0.667, 0.692]
    rows = [{"metric": "step_ms", "checkpointing": c, "repeat": i, "value": v, "batch": 8,
             "seq_len": 1024, "status": "ok", "source": "measured", "device": "GPU",
             "method": "time"}
            for i, (t, o) in enumerate(zip(no_ckpt, overhead, strict=True))
            for c, v in ((False, t), (True, t * (1 + o)))]
    rows.append({"metric": "overhead", "method": "formula (lecture)", "value": 1 / 3,
                 "status": "ok", "source": "predicted", "device": "GPU", "checkpointing": False})
    rows = pd.DataFrame(rows)
    table = recompute_table(rows).iloc[0]
    assert table["overhead % (pairs: min)"] == pytest.approx(33.4), "the fast repeat"
    assert (table["overhead % (median: low)"], table["overhead % (median: high)"]) == (
        pytest.approx(54.2), pytest.approx(69.2))
    verdict = claims(pd.DataFrame(), None, rows)["verdict"].iloc[-2]
    assert verdict == "off: 33.3 lies below the measured [54.2, 69.2]", verdict
    assert "+54% to +69% (a confidence interval of 87.5%" in recompute_caption(rows)


def test_gap_caption_prints_bytes_per_attention_element() -> None:
    shape = {"n_params": 1000, "n_layer": 2, "d_model": 8, "n_head": 2, "vocab": 16,
             "seq_len": 4, "batch": 1, "precision": "amp_bf16", "optimizer": "adamw",
             "checkpointing": "False", "attention": "eager", "device": "GPU-x",
             "status": "ok", "source": "measured"}
    n = 2 * 2 * 1 * 4**2  # layers × heads × batch × s²
    got = {("params", "allocator"): 4000, ("grads", "allocator"): 4000,
           ("optimizer", "allocator"): 8000, ("activations", "allocator"): 3000,
           ("attention scores", "saved"): 7 * n, ("peak", "allocator"): 21000}
    rows = pd.DataFrame([{**shape, "component": c, "method": m, "value": float(v)}
                         for (c, m), v in got.items()])
    caption = gap_caption(rows)
    assert f"{n:,} elements): 7.00 bytes measured, 5.00 by the formula" in caption, caption


def test_sweep_caption_names_sdpa_constant_beside_the_weight_copies() -> None:
    from workbook.memory import matmul_weights

    w = matmul_weights(2, 64, 512)
    assert w == 2 * 12 * 64 * 64 + 512 * 64
    base = {"attention": "sdpa", "status": "ok", "metric": "bytes", "n_layer": 2,
            "d_model": 64, "n_head": 4, "vocab": 512, "batch": 2, "precision": "amp_bf16",
            "device": "GPU-x", "source": "measured"}
    rows = pd.DataFrame([{**base, "seq_len": s, "method": m, "value": v}
                         for s in (128, 256, 512)
                         for m, v in (("saved", 1000.0 * s + 2 * w), ("peak", 1500.0 * s + 2 * w),
                                      ("saved scores", 0.0), ("formula", 900.0 * s))])
    text = sweep_caption(rows)
    assert f"c = {2 * w / 1e6:,.1f} MB (peak), {2 * w / 1e6:,.1f} MB (saved)" in text, text
    assert f"2 bytes × {w / 1e6:,.1f}M = {2 * w / 1e6:,.1f} MB" in text
    assert "pulls the fitted k below 1" in text
    flat = rows.assign(value=lambda f: f["value"] - 2 * w * f["method"].isin(["saved", "peak"]))
    assert "c ≈ 0" in sweep_caption(flat) and "below 1" not in sweep_caption(flat)


def test_fit_rows_say_which_probe_made_them() -> None:
    from workbook.memory import FIT_PROBE_SINCE, fit_caption, fit_probe, fit_summary

    assert fit_probe("2026-11-22T16:17:38Z").startswith("older probe: before 169b8b5")
    assert fit_probe(FIT_PROBE_SINCE[1]).startswith("current") and fit_probe(None).startswith(
        "current"), "a live row (no recorded_at) is the current probe's"
    base = {"d_model": 4096, "seq_len": 2048, "batch": 4, "precision": "amp_bf16",
            "checkpointing": False, "gpu_bytes": 80e9, "largest_fitting_layers": 2,
            "metric": "peak_bytes", "status": "ok", "source": "recorded",
            "device": "GPU old", "n_gpus": 1, "recorded_at": "2026-11-22T00:00:00Z", "seed": 0,
            "n_params": 1e9}
    rows = pd.DataFrame([{**base, "n_layer": k, "value": 10e9 * k} for k in (1, 2)])
    assert fit_summary(rows)["probe"].iloc[0].startswith("older probe")
    assert "(older probe: before 169b8b5" in fit_caption(rows)

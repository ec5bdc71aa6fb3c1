"""QLoRA: NF4 from normal quantiles equals bitsandbytes' table, the blockwise quantiser agrees
with bitsandbytes, double quantisation's bits are what the tensors store, the VRAM formula
adds up, and the memory measurement works end to end on a toy model."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from workbook import qlora
from workbook.config import WorkbookError


def test_nf4_offset_is_qlora_s_constant():
    assert qlora.nf4_offset() == pytest.approx(0.9677083, abs=1e-7), (
        "offset = mean of 1 - 1/(2*15) and 1 - 1/(2*16)")


def test_nf4_codebook_equals_bitsandbytes():
    ours, theirs = qlora.nf4_codebook(), qlora.bnb_codebook("nf4")
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0,
                               msg="NF4 from normal quantiles should be bitsandbytes' table")


def test_nf4_is_asymmetric_with_an_exact_zero():
    code = qlora.nf4_codebook()
    assert code.numel() == 16 and (code == 0).sum() == 1, "16 codes, one of them exactly 0"
    assert (code > 0).sum() == 8 and (code < 0).sum() == 7, "8 positive, 7 negative codes"
    assert code.min() == -1 and code.max() == 1


@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
def test_blockwise_roundtrip_matches_bitsandbytes(fmt):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=gen) * 0.02
    torch.testing.assert_close(qlora.roundtrip(w, fmt), qlora.bnb_roundtrip(w, fmt),
                               atol=1e-6, rtol=1e-5,
                               msg=f"our blockwise absmax {fmt} != bitsandbytes' quantize_4bit")


def test_error_ranking_on_normal_weights():
    """Normal weights: NF4 < INT4 < FP4 error, and INT8 far below all 4-bit formats."""
    gen = torch.Generator().manual_seed(0)
    rows = qlora.quantization_error({"w": torch.randn(256, 256, generator=gen)})
    err = rows[rows.metric == "rel_rmse"].set_index("format")["value"]
    assert err["nf4"] < err["int4"] < err["fp4"], f"unexpected ranking {err.to_dict()}"
    assert err["int8"] < err["nf4"] / 10, "8 bits should be >10x more accurate than 4"


def test_nf4_uses_its_codes_more_evenly_than_int4():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(512, 512, generator=gen)
    spread = {f: qlora.bin_occupancy(w, f)["share"].std() for f in ("nf4", "int4")}
    assert spread["nf4"] < spread["int4"], f"NF4 should fill its bins more evenly: {spread}"


def test_double_quant_bits_formula():
    assert qlora.bits_per_param(64, double_quant=False) == 4.5
    assert qlora.bits_per_param(64, double_quant=True) == pytest.approx(4 + 8 / 64 + 32 / 16384)


@pytest.mark.parametrize("dq", [False, True])
def test_stored_bits_match_formula(dq):
    rows = qlora.stored_bits_per_param((1024, 1024), double_quant=dq).set_index("source")
    measured, predicted = rows.loc["measured", "value"], rows.loc["predicted", "value"]
    # code tables (~1 KiB) are the only extra: < 0.01 bit per weight at 1M weights
    assert predicted <= measured < predicted + 0.01, f"stored {measured} vs formula {predicted}"


def test_llama_7b_shape_has_the_published_parameter_count():
    assert qlora.SHAPES["7b"].n_params == 6_738_415_616, "Llama-2-7B has 6,738,415,616"


def test_vram_formula_full_is_12_bytes_per_param_plus_activations():
    parts = qlora.predict_vram("7b", "full")
    n = qlora.SHAPES["7b"].n_params
    static = parts["weights"] + parts["gradients"] + parts["optimizer"]
    assert static == 12 * n and parts["adapters"] == 0


def test_qlora_65b_fits_48gb_by_formula():
    total = sum(qlora.predict_vram("65b", "qlora", rank=64).values()) / 1e9
    assert total < 48, f"the QLoRA paper fits 65B in 48 GB; the formula says {total:.1f} GB"


def test_fp32_adam_matches_torch_adam():
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(1000, generator=gen))
    b = torch.nn.Parameter(a.detach().clone())
    ours, ref = qlora.Fp32Adam([a], lr=1e-2, chunk=300), torch.optim.Adam([b], lr=1e-2)
    for _ in range(3):
        g = torch.randn(1000, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, msg="chunked fp32-moment Adam must equal torch's Adam")
    assert ours.state[a]["m"].dtype == torch.float32


def test_measure_vram_on_cpu_itemises_memory():
    rows = {m: qlora.measure_vram("tiny", m, rank=4, seq_len=32).set_index("metric")["value"]
            for m in qlora.METHODS}
    n = qlora.SHAPES["tiny"].n_params
    assert rows["full"]["weights"] * 1e9 == pytest.approx(2 * n), "bf16 weights: 2 B/param"
    assert rows["full"]["optimizer"] * 1e9 == pytest.approx(8 * n), "fp32 Adam: 8 B/param"
    assert rows["lora"]["trainable_params"] == qlora.SHAPES["tiny"].n_lora(4)
    assert rows["qlora"]["weights"] < rows["lora"]["weights"], "NF4 base must be smaller"
    assert rows["qlora"]["peak"] < rows["lora"]["peak"] < rows["full"]["peak"]


def test_ratio_rows_mark_oom_as_missing():
    import pandas as pd

    rows = pd.DataFrame([
        {"size": "7b", "n_params": 1, "method": "full", "metric": "peak", "value": math.nan,
         "source": "measured"},
        {"size": "7b", "n_params": 1, "method": "qlora", "metric": "peak", "value": 5.0,
         "source": "measured"},
    ])
    out = qlora.ratio_rows(rows)
    assert out["status"].tolist() == ["oom"], "no ratio can be measured when full FT OOMs"


def test_bad_input_names_the_options():
    with pytest.raises(WorkbookError, match="allowed devices: cuda, cpu"):
        qlora.check_4bit_device(torch.device("meta"))
    with pytest.raises(WorkbookError, match="choose one of"):
        qlora.predict_vram("70b", "qlora")
    with pytest.raises(WorkbookError, match="allowed"):
        qlora.VramConfig(sizes=("7b",), rank=0)


def test_small_preset_runs_end_to_end_with_predictions_beside():
    rows = qlora.run_vram(qlora.VRAM_PRESETS["small"], seed=0)
    saving = rows[rows.metric == "saving_vs_full"].set_index(["method", "source"])["value"]
    for method in ("lora", "qlora"):
        for source in ("measured", "predicted"):
            assert saving[(method, source)] > 1, f"{method} ({source}) must save vs full FT"
    assert set(rows["source"]) == {"measured", "predicted"}


# --------------------------------------------------------------- paged and 8-bit AdamW


def test_optimizer_state_bytes_follow_bitsandbytes_rules():
    big, mid, small = 1_000_000, 10_000, 100
    assert qlora.optimizer_state_bytes([big], "adamw") == {"device": 8e6, "paged": 0.0}
    eight = qlora.optimizer_state_bytes([big], "adamw8bit")
    qmaps = 2 * 256 * 4
    assert eight["device"] == 2 * big + 8 * -(-big // 256) + qmaps and eight["paged"] == 0
    paged = qlora.optimizer_state_bytes([big, mid, small], "paged_adamw")
    assert paged == {"device": 8.0 * (mid + small), "paged": 8.0 * big}, "only >= 1e5 paged"
    p8 = qlora.optimizer_state_bytes([big, small], "paged_adamw8bit")
    assert p8["paged"] == 2 * big and p8["device"] == 8 * -(-big // 256) + 8 * small + qmaps
    with pytest.raises(WorkbookError, match="choose one of"):
        qlora.optimizer_state_bytes([big], "sgd")


def test_paged_adamw_moves_the_state_off_the_allocator_in_the_formula():
    plain = qlora.predict_vram("7b", "full", optimizer="adamw")
    paged = qlora.predict_vram("7b", "full", optimizer="paged_adamw")
    assert paged["paged"] == pytest.approx(plain["optimizer"], rel=1e-3)
    assert plain["optimizer"] == pytest.approx(8 * qlora.SHAPES["7b"].n_params)
    peak = {o: qlora.predicted_rows(["7b"], ["full"], optimizer=o).set_index("metric")
            .loc["peak", "value"] for o in qlora.OPTIMIZERS}
    assert peak["paged_adamw"] < 40 < peak["adamw8bit"] < peak["adamw"], peak


def test_full_vram_plan_and_its_processes():
    plan = qlora.vram_plan(qlora.VRAM_PRESETS["full"])
    assert len(plan) == 9 + 9 + 4, "9 fp32, 3 methods x 3 optimizers at 7B, 4 under the cap"
    capped = [kw for kw in plan if kw["cap_gb"] > 0]
    assert {kw["optimizer"] for kw in capped} == set(qlora.OPTIMIZERS)
    assert sum(qlora.needs_own_process(kw) for kw in plan) == 6 + 2
    fits = qlora.predicted_plan_rows(capped).query("metric == 'fits'")
    assert fits.set_index("optimizer")["value"].to_dict() == {
        "adamw": 0.0, "adamw8bit": 0.0, "paged_adamw": 1.0, "paged_adamw8bit": 1.0}


def test_quality_gap_is_an_equivalence_over_seeds():
    import pandas as pd

    rows = pd.DataFrame([{"method": m, "stage": "after", "metric": "eval_loss", "run_seed": s,
                          "value": 5.0 + (0.001 * s if m == "qlora" else 0.0)}
                         for m in ("lora", "qlora") for s in range(3)])
    gap = qlora.quality_gap(rows)
    assert gap["n"] == 3 and gap["mean"] == pytest.approx(0.001)
    assert gap["farthest"] >= abs(gap["high"]) and gap["low"] < gap["mean"] < gap["high"]


def test_quality_caption_prints_the_gap_and_the_quantisation_cost():
    import pandas as pd

    rows = pd.DataFrame([{"method": m, "stage": st, "metric": "eval_loss", "run_seed": s,
                          "value": 5.0 + (0.001 * s + (0.002 if st == "before" else 0.0)
                                          if m == "qlora" else 0.0)}
                         for m in ("lora", "qlora") for s in range(3)
                         for st in ("before", "after")])
    text = qlora.quality_caption(rows)
    assert "+0.0010 nats over 3 seeds" in text and "95 % interval" in text
    assert "NF4 base's loss is +0.0030 nats" in text, text
    assert qlora.quality_caption(rows.iloc[0:0]).startswith("*No paired")


def test_double_quantisation_claim_fails_without_double_quantisation():
    import pandas as pd

    def verdict(stored_bits: float) -> str:
        bits = pd.DataFrame([{"double_quant": True, "source": "measured", "value": stored_bits}])
        table = qlora.claims(pd.DataFrame(), pd.DataFrame(), bits, "here")
        return table[table["claim"].str.startswith("double quantisation")]["verdict"].iloc[0]

    assert verdict(qlora.bits_per_param()).startswith("holds")
    assert verdict(4.5).startswith("off"), "4.5 bits is what NF4 stores without it"


def test_measure_many_on_cpu_counts_state_as_predicted():
    configs = [{"size": "tiny", "method": "full", "rank": 4, "seq_len": 32, "optimizer": o}
               for o in ("adamw", "adamw8bit")]
    rows = qlora.measure_many(configs).set_index(["optimizer", "metric"])["value"]
    numels = qlora.trainable_numels("tiny", "full", 4)
    assert sum(numels) == qlora.SHAPES["tiny"].n_params
    for o in ("adamw", "adamw8bit"):
        predicted = qlora.optimizer_state_bytes(numels, o)["device"]
        assert rows[(o, "optimizer_state")] * 1e9 == pytest.approx(predicted, abs=0.5), o
    assert rows[("adamw8bit", "paged")] == 0


def test_process_groups_keep_managed_memory_bounded():
    plan = qlora.vram_plan(qlora.VRAM_PRESETS["full"])
    groups = qlora.process_groups(plan)
    assert sorted(map(str, (kw for g in groups for kw in g))) == sorted(map(str, plan))
    assert not any(qlora.needs_own_process(kw) for kw in groups[0]), "paged apart"
    for group in groups[1:]:
        managed = sum(qlora.predict_vram(kw["size"], kw["method"], kw["rank"], kw["batch_size"],
                                         kw["seq_len"], kw["optimizer"])["paged"]
                      for kw in group) / 1e9
        assert managed <= 60, (managed, group)


def test_paging_claims_read_the_swept_size_and_the_cap():
    import pandas as pd

    plan = qlora.vram_plan(qlora.VRAM_PRESETS["full"])
    rows = qlora.predicted_plan_rows(plan)
    measured = rows[rows.metric.isin(["peak", "fits"])].assign(source="measured", status="ok",
                                                                device="H200")
    claims = {c.claim: c for c in qlora.paging_claims(pd.concat([rows, measured]))}
    drop = [c for name, c in claims.items() if "full at 7b" in name][0]
    assert drop.predicted == pytest.approx(drop.measured) and drop.predicted > 50
    fits = {name.split(" with ")[1]: c for name, c in claims.items() if "cap" in name}
    assert fits["adamw fits (1) or not (0)"].predicted == 0
    assert fits["paged_adamw fits (1) or not (0)"].predicted == 1


def test_error_caption_ranks_the_formats_from_the_rows():
    errors = pd.DataFrame([
        {"tensor": t, "format": f, "blocksize": 64, "metric": "rel_rmse", "value": v}
        for t in ("a", "b") for f, v in (("nf4", 0.09), ("int4", 0.10), ("fp4", 0.12),
                                         ("int8", 0.006))])
    text = qlora.error_caption(errors)
    assert "over 2 matrices, blocks of 64" in text, text
    assert "INT8 0.0060 < NF4 0.0900 < INT4 0.1000 < FP4 0.1200" in text, text
    assert "15.0× smaller than the best 4-bit format's (NF4)" in text, text
    assert "No quantisation errors" in qlora.error_caption(errors.iloc[0:0])


def test_vram_gap_caption_compares_each_component_with_the_formula():
    rows = []
    for method, opt, act in (("full", 54.0, 0.2), ("qlora", 1.3, 0.3)):
        for source, o, a, w in (("recorded", opt, act, 13.478), ("predicted", 53.9, 0.6, 13.477)):
            rows += [{"size": "7b", "method": method, "metric": k, "value": v, "source": source,
                      "status": "ok", "device": "H100", "n_gpus": 1, "seed": 0,
                      "recorded_at": "2026-11-22T00:00:00Z"}
                     for k, v in (("optimizer", o), ("activations", a), ("weights", w))]
    text = qlora.vram_gap_caption(pd.DataFrame(rows))
    assert "differ from the formula by at most 1.0 MB" in text, text
    assert f"optimizer measured / formula: full {54.0 / 53.9:.3f}×, qlora {1.3 / 53.9:.3f}×" \
        in text, text
    assert "activations measured / formula: full 0.333×, qlora 0.500×" in text, text
    only_formula = pd.DataFrame(rows).query("source == 'predicted'")
    assert "No measured 7b rows" in qlora.vram_gap_caption(only_formula)
    with pytest.raises(WorkbookError):
        qlora.vram_gap_caption(pd.DataFrame(rows), size="8b")


def test_optimizer_table_says_no_cap_and_oom_in_words():
    plan = qlora.vram_plan(qlora.VRAM_PRESETS["full"])
    rows = qlora.predicted_plan_rows(plan)
    rows = rows[rows["optimizer"].notna()]
    measured = rows[rows.metric.isin(["peak", "fits"])].assign(source="measured", status="ok")
    capped = measured["cap_gb"].fillna(0) > 0
    oom = (capped & (measured["optimizer"] == "adamw") & (measured["method"] == "full")
           & (measured["metric"] == "peak"))
    measured.loc[oom, ["value", "status"]] = [float("nan"), "oom"]
    table = qlora.optimizer_table(pd.concat([rows, measured]))
    assert table.index.get_level_values(0)[0] == "none", "no cap reads 'none', never 0.0"
    assert table.index.names[0] == "allocator cap"
    fits = [c for c in table.columns if c[0] == qlora.OPTIMIZER_COLUMNS["fits"]]
    assert (table.xs("none", level=0)[fits] == "– (no cap)").all().all()
    cap = [c for c in table.index.get_level_values(0) if c != "none"][0]
    peak = qlora.OPTIMIZER_COLUMNS["peak"]
    assert table.loc[(cap, "full", "adamw"), (peak, "measured")] == qlora.OOM
    assert not table.isna().any().any(), "a reader never sees NaN"

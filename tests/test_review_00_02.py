"""The H200 review of notebooks 00-02: each finding as a test that fails on the old behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from IPython.lib.pretty import pretty

from workbook import data, data_scale, flops, hardware, pretraining
from workbook.hardware import Machine

ROOT = Path(__file__).resolve().parent.parent
H200, H100 = "NVIDIA H200", "NVIDIA H100 80GB HBM3"


def _roof(device: str, value: float, source: str, when: str = "2026-12-03T00:00:00",
          size: int = 8192) -> dict:
    return {"device": device, "kind": "matmul", "dtype": "bf16", "size": size, "value": value,
            "unit": "TFLOP/s", "source": source, "status": "ok", "recorded_at": when}


def _mfu_rows(device: str, source: str, achieved: float, stored_roofline_mfu: float,
              mfu: float = 43.449) -> pd.DataFrame:
    base = {"mode": "graphs", "attention": "causal", "d_model": 768, "n_layers": 12,
            "seq_len": 1024, "device": device, "source": source, "status": "ok",
            "recorded_at": "2026-12-03T00:00:00"}
    return pd.DataFrame([{**base, "metric": m, "value": v} for m, v in (
        ("step_time", 24.43), ("tokens_per_s", 203478.26), ("achieved_tflops", achieved),
        ("mfu_datasheet", mfu), ("mfu_roofline", stored_roofline_mfu), ("peak_memory", 7.3))])


def _notebook(name: str) -> list[dict]:
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]


def _markdown(name: str) -> str:
    return "\n".join("".join(c["source"]) for c in _notebook(name) if c["cell_type"] == "markdown")


# --- 1, 5, 7, 10: MFU against the roofline measured now, units, unrounded captions -------------

def test_mfu_vs_roofline_is_computed_from_the_current_roofline_live_first():
    rows = _mfu_rows(H200, "recorded", 400.0, stored_roofline_mfu=53.8)  # 400 / 743.5: stale
    recorded = pd.DataFrame([_roof(H200, 770.9, "recorded", "2026-12-01T00:00:00"),
                             _roof(H200, 800.0, "recorded", "2026-12-03T00:00:00"),
                             _roof(H200, 999.0, "recorded", "2026-12-04T00:00:00", size=512)])
    table = flops.mfu_values(rows, recorded)
    assert table.loc["mfu_roofline"].iloc[0] == pytest.approx(50.0), \
        "the latest full-size recording of the same GPU (800), not the run's stale row"
    live = pd.concat([recorded, pd.DataFrame([_roof(H200, 775.5, "measured")])])
    assert flops.mfu_values(rows, live).loc["mfu_roofline"].iloc[0] == pytest.approx(
        100 * 400 / 775.5), "this machine's live roofline wins over the recordings"
    caption = flops.mfu_caption(rows, live)
    assert "(776 TFLOP/s, this machine's live run)" in caption
    assert "(800 TFLOP/s, recorded on NVIDIA H200, 2026-12-03)" in flops.mfu_caption(rows,
                                                                                       recorded)
    none = flops.mfu_values(rows, pd.DataFrame([_roof(H100, 790.0, "recorded")]))
    assert "mfu_roofline" not in none.index, "never another GPU's roofline"


def test_mfu_table_has_units_and_the_caption_reads_unrounded_values():
    rows = _mfu_rows(H200, "measured", 429.9, 0.0, mfu=43.449)
    roof = pd.DataFrame([_roof(H200, 775.5, "measured")])
    table = flops.mfu_table(rows, roof)
    assert list(table.index) == ["step time (ms)", "tokens/s", "achieved TFLOP/s",
                                 "MFU vs datasheet bf16 dense (%)",
                                 "MFU vs measured bf16 roofline (%)",
                                 "measured bf16 roofline (TFLOP/s)", "peak memory (GB)"]
    column = table.iloc[:, 0]
    assert column["tokens/s"] == "203,478" and column["step time (ms)"] == "24.43"
    assert column["MFU vs datasheet bf16 dense (%)"] == "43.4"
    caption = flops.mfu_caption(rows, roof)
    assert "**43.4 %**" in caption and "43.5" not in caption, "43.449 is 43.4, not 43.45 → 43.5"


def test_kernel_table_labels_carry_the_unit():
    base = {"mode": "compiled", "attention": "causal", "device": H200, "source": "recorded",
            "status": "ok", "recorded_at": "2026-12-03"}
    rows = pd.DataFrame([{**base, "metric": m, "value": v} for m, v in (
        ("step_time", 30.004), ("kernel_ms_matmul", 10.004), ("kernel_ms_attention", 3.0))])
    table = flops.kernel_table(rows)
    assert {"matmul (ms)", "step time (ms)", "kernels total (ms)",
            "GPU idle: step − kernels (ms)"} <= set(table.index)
    assert flops.kernel_values(rows).loc["matmul"].iloc[0] == pytest.approx(10.004)


# --- 2, 4, 6: the claims and whose rows they judge -------------------------------------------

def test_claims_caption_says_when_no_row_is_this_machines():
    recorded = _mfu_rows(H200, "recorded", 400.0, 50.0)
    caption = flops.claims_caption(recorded, recorded.iloc[0:0])
    assert "no row from this machine yet" in caption and "Press Run" in caption
    live = _mfu_rows(H200, "measured", 400.0, 50.0)
    caption = flops.claims_caption(live, None)
    assert "`mfu_benchmark`: this machine (NVIDIA H200)" in caption
    assert "`energy_per_token`: no row from this machine yet" in caption


def test_the_lectures_1979_is_checked_as_the_sparse_datasheet_figure_not_a_measurement():
    counted = pd.DataFrame({"part": ["total"], "counted / predicted": [1.0]})
    roof = pd.DataFrame([_roof(H200, 775.5, "measured")])
    table = flops.claims(_mfu_rows(H200, "recorded", 400.0, 50.0), counted, None, roof)
    sparse = table[table["claim"].str.startswith("H100 BF16 = 1,979")].iloc[0]
    assert sparse["measured"] == pytest.approx(2 * 989.4) and sparse["verdict"] == "holds"
    assert "not a measurement" in sparse["where"]
    dense = table[table["claim"].str.startswith("dense BF16")].iloc[0]
    assert dense["measured"] == pytest.approx(775.5) and dense["verdict"].startswith("holds")
    assert dense["where"].startswith("this machine's live run (NVIDIA H200)")


# --- 3: what Run All does with each experiment is said, not "runs live" --------------------

def test_recorded_rows_name_the_script_that_records_them(capsys):
    flops.recorded_or_note("flops_sweep")
    said = capsys.readouterr().out
    assert "scripts/gpu_pretraining.sh" in said
    if "rows, recorded on" in said:
        assert "not run here" in said
    assert "The other experiments run live\nin Run All" not in _markdown("00_setup")
    assert "The other experiments run live in Run All" not in _markdown("00_setup")


# --- 8, 9: readable numbers, GB against this machine ---------------------------------------

def test_lecture_tables_read_without_scientific_notation():
    shown = data_scale.readable(data_scale.lecture_table()).to_string()
    assert "570 GB" in shown and "300B" in shown and "44 TB" in shown
    assert "e+" not in shown and "0000000" not in shown
    predicted = data_scale.readable(data_scale.predicted_tokens(data_scale.lecture_table(), 3.5))
    assert "e+" not in predicted.to_string() and "–" in set(predicted["published tokens"])
    examples = flops.lecture_examples()[["run", "n_params", "n_tokens", "flops"]]
    for text in (examples._repr_html_(), pretty(examples)):
        assert "3.15×10²³" in text and "e+" not in text
    assert examples["flops"].iloc[0] == pytest.approx(3.15e23), "numbers stay numbers to code"


def test_tensor_caption_compares_with_this_machines_memory_in_gb(monkeypatch):
    monkeypatch.setattr(data_scale, "detect", lambda: Machine("cuda", H200, 1, 150.1, (9, 0),
                                                              ("fp32", "bf16")))
    text = data_scale.tensor_caption(data_scale.input_tensor_table())
    assert "54 % of the 150.1 GB of this machine's GPU memory (NVIDIA H200)" in text
    assert "1.01× the 80.0 GB of an H100 SXM (datasheet), more than all of it" in text
    assert "MiB" not in text and "nearly all" not in text


# --- 11, 12: integer settings, units -------------------------------------------------------

def test_loss_kernel_table_shows_each_devices_fastest_launches_as_integers():
    rows = []
    for device, shift in ((H200, 0.0), (H100, 0.5)):
        for variant, block, ms in (("torch_ce", None, 2.0), ("triton_ce", 4096, 1.0),
                                   ("triton_ce", 8192, 1.1)):
            for metric, value in (("ms", ms + shift), ("bytes_moved", 2e9),
                                  ("achieved_gbps", 2e9 / (ms + shift) / 1e6)):
                rows.append({"variant": variant, "block": block, "warps": 16, "per_sm": 0,
                             "evict": False, "commit": "abc", "metric": metric, "value": value,
                             "status": "ok", "device": device, "source": "recorded",
                             "recorded_at": "2026-12-03" if device == H200 else "2026-11-22"})
    table = flops.loss_kernel_table(pd.DataFrame(rows), top=1)
    assert list(table["device"]) == [H200, H200, H100, H100], "each device's fastest launch"
    assert table.loc[1, "block"] == 4096 and str(table.loc[1, "block"]) == "4096"
    assert str(table.loc[1, "warps"]) == "16" and str(table.loc[1, "per_sm"]) == "0"
    assert table.loc[0, "block"] == "–"


def test_roofline_table_names_sizes_and_units():
    rows = pd.DataFrame([
        {"device": H200, "kind": "copy", "dtype": "uint8", "size": 4294967296, "value": 4262.6,
         "unit": "GB/s", "source": "measured", "status": "ok"},
        {"device": H200, "kind": "copy", "dtype": "uint8", "size": 4294967296, "value": 4800.0,
         "unit": "GB/s", "source": "datasheet", "status": "ok"},
        {**_roof(H200, 775.49234, "measured"), "unit": "TFLOP/s"},
        {**_roof(H200, 989.4, "datasheet"), "unit": "TFLOP/s"}])
    table = hardware.roofline_table(rows)
    assert list(table["operation"]) == ["copy (read + write), 4,096 MiB", "bf16 matmul, 8192³"]
    assert list(table["measured"]) == ["4,263", "775.5"]
    assert list(table["measured / datasheet (%)"]) == [89, 78]


# --- 13, 14, 21: counted FLOPs, prose, one notation -----------------------------------------

def test_counted_caption_says_exact_or_by_how_much():
    exact = pd.DataFrame({"part": ["matmuls"], "predicted FLOPs": [1.459618e9],
                          "counted FLOPs": [1.459618e9]})
    assert "agrees exactly" in flops.counted_caption(exact)
    close = exact.assign(**{"counted FLOPs": [1.459618e9 + 4096]})
    assert "agrees to 3 ppm (4,096 FLOPs more" in flops.counted_caption(close)
    same = [flops.ReadableTable(t)._repr_html_() for t in (exact, close)]
    assert same[0] == same[1], "the checked table reads the same on a CPU and a GPU"
    prose = _markdown("02_flops")
    assert "The matmul part agrees exactly" not in prose
    assert "as nanoGPT's `bench.py` does" not in prose


def test_calculator_writes_flops_in_fixed_notation():
    calc = flops.calculator()
    calc.set(n_params=175e9, n_tokens=300e9, gpu="A100", n_gpus=10_000, utilization=0.5)
    assert "C = 6·N·D = 3.15×10²³ FLOPs" in calc.message.value and "e+" not in calc.message.value


# --- 15, 17, 19, 20: notebook 01 ---------------------------------------------------------

def test_live_story_states_the_live_batch_beside_the_recipe():
    log = pd.DataFrame({"step": [0, 500], "split": ["val", "val"], "loss": [8.34, 5.61]})
    text = pretraining.live_story(log, "full")
    cfg = pretraining.live_config("full")
    assert f"at batch {cfg.batch_size}**" in text and "at batch 32 =" in text
    assert "8.34 → **5.61 nats**" in text


def test_this_machines_device_comes_first(monkeypatch):
    monkeypatch.setattr(pretraining, "detect", lambda: Machine("cuda", H200, 1, 150.0, (9, 0),
                                                               ("fp32",)))
    rows = pd.DataFrame({"device": [H100, H200, H100]})
    assert pretraining.this_machine_first(rows) == [H200, H100]


def _transfer_rows(source: str) -> pd.DataFrame:
    rows = []
    for init, losses in (("pretrained", [5.0, 3.0, 2.9]), ("scratch", [8.3, 4.0, 3.1])):
        rows += [{"init": init, "step": s, "metric": "val_loss", "value": v, "status": "ok",
                  "device": H200, "source": source, "preset": "full"}
                 for s, v in zip((0, 10, 20), losses, strict=True)]
    rows += [{"init": "pretrained", "step": 20, "metric": "steps_to_scratch_final", "value": 10,
              "status": "ok", "device": H200, "source": source, "preset": "full"},
             {"init": "scratch", "step": 20, "metric": "steps_to_scratch_final", "value": 20,
              "status": "ok", "device": H200, "source": source, "preset": "full"}]
    return pd.DataFrame(rows)


def test_transfer_story_and_figure_say_when_and_where():
    rows = _transfer_rows("measured")
    text = pretraining.transfer_story(rows)
    assert "checked every 10 steps" in text
    assert "by step **10** (the first check after the start)" in text
    fig = pretraining.transfer_figure(rows, "Downstream")
    assert {t.name for t in fig.data} == {"pretrained (measured, this machine: H200)",
                                          "scratch (measured, this machine: H200)"}
    assert "this machine (NVIDIA H200), full preset, 20 steps" in fig.layout.title.text


def test_show_tokens_gives_byte_values_not_replacement_characters():
    table = pretraining.show_tokens(data.load_tokenizer(), "def 한")
    shown = " ".join(table["token"])
    assert "�" not in shown and "<0xED>" in shown
    assert table["bytes"].sum() == len("def 한".encode())


# --- 16, 18: notebook 00 ---------------------------------------------------------------------

def test_recorded_devices_are_labelled_recorded_on():
    rows = pd.DataFrame([{**_roof(H100, 790.0, "recorded", "2026-11-22T00:00:00"),
                          "n_gpus": 1, "seed": 0}])
    assert hardware.device_labels(rows)[H100].startswith("recorded on NVIDIA H100")


def test_describe_does_not_call_fp32_a_tensor_core_dtype(monkeypatch):
    monkeypatch.setattr(hardware, "detect", lambda: Machine(
        "cuda", H200, 1, 150.1, (9, 0), hardware.supported_dtypes((9, 0))))
    facts = hardware.describe().set_index("fact")["value"]
    assert facts["matmul dtypes"] == "fp32; on tensor cores: tf32, bf16, fp16, fp8"

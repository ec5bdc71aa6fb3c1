"""Data and scale (notebook 01): the lecture's table, bytes per token, input tensor sizes."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from workbook import data, data_scale
from workbook.config import WorkbookError


def test_bytes_per_token_is_what_the_tokenizer_itself_encodes():
    tok = data.load_tokenizer()
    text = "Return the number of items in a container.\n\n    Raises ValueError: größe ✓"
    got = data_scale.bytes_per_token(tok, text)
    ids = tok.encode(text)
    # by hand: 42 + 2 newlines + 23 + "größe " (6 characters, ö and ß 2 bytes each: 8) + ✓ (3)
    assert got["bytes"] == len(text.encode("utf-8")) == 78
    assert got["tokens"] == len(ids)
    assert got["bytes_per_token"] == pytest.approx(78 / len(ids))
    assert got["tokens_per_byte"] * got["bytes_per_token"] == pytest.approx(1.0)
    # byte-level BPE: a token covers at least one byte, and the text comes back whole
    assert 1.0 <= got["bytes_per_token"] and tok.decode(ids) == text
    with pytest.raises(WorkbookError, match="non-empty text"):
        data_scale.bytes_per_token(tok, "")


def test_input_tensor_against_hand_arithmetic():
    gpt1 = data_scale.input_tensor(64, 512, 768)
    assert gpt1 == {"tokens": 32_768, "elements": 25_165_824, "bytes": 50_331_648}  # 48 MiB
    gpt3 = data_scale.input_tensor(1600, 2048, 12288)
    assert gpt3["tokens"] == 3_276_800                   # the lecture's "3.2M tokens"
    assert gpt3["elements"] == 40_265_318_400
    assert gpt3["bytes"] == 80_530_636_800               # 80.5 GB in bf16: one H100's memory
    assert data_scale.input_tensor(2, 3, 4, bytes_per_element=4)["bytes"] == 96
    table = data_scale.input_tensor_table().set_index("model")
    assert table.loc["GPT-1", "bytes"] == 50_331_648
    assert table.loc["GPT-3", "GB"] == pytest.approx(80.53, abs=0.01)
    with pytest.raises(WorkbookError, match="allowed"):
        data_scale.input_tensor(0, 512, 768)


def test_lecture_table_and_predictions():
    table = data_scale.lecture_table().set_index("model")
    assert table.loc["GPT-1", "bytes"] == 5e9 and table.loc["FineWeb", "bytes"] == 44e12
    assert table.loc["Llama 3", "tokens"] == 15e12 and math.isnan(table.loc["Llama 1", "bytes"])
    assert table["source"].str.len().min() > 0, "every row says where it comes from"
    pred = data_scale.predicted_tokens(data_scale.lecture_table(), 2.0).set_index("model")
    assert pred.loc["GPT-3", "predicted tokens"] == pytest.approx(285e9)
    assert set(pred.index) == {"GPT-1", "GPT-2", "GPT-3", "FineWeb"}, "only rows with bytes"
    rows = data_scale.scale_rows()
    assert len(rows) == 9 and set(rows["metric"]) == {"bytes", "tokens"}


def test_claims_have_computed_verdicts():
    measured = pd.DataFrame([{"corpus": "text", "tokenizer": "t", "bytes": 400, "tokens": 100,
                              "bytes_per_token": 4.0, "tokens_per_byte": 0.25}])
    pred = data_scale.predicted_tokens(data_scale.lecture_table(), 4.0)
    table = data_scale.claims(measured, pred).set_index("claim")
    verdicts = table["verdict"]
    assert verdicts.iloc[0] == "holds"                   # 4 bytes/token, exactly the rule
    assert verdicts.str.startswith("off").sum() >= 1     # 1.4 bytes/token is 2.9× off 4.0
    # GPT-3's 300B are tokens trained on, not the 570 GB's count: no claim predicts them
    assert not any(c.startswith("GPT-3: 570 GB") for c in verdicts.index)
    fineweb = next(v for c, v in verdicts.items() if c.startswith("FineWeb: 44 TB of text"))
    assert fineweb.startswith("holds")                  # 11T predicted vs 15T, within 30 %
    assert (table["holds if"] != "").all()
    text = data_scale.summary(measured, table.reset_index())
    assert "4.00 bytes/token" in text and "Refuted here" in text
    unseen = measured.assign(corpus="unseen", tokens=200, bytes_per_token=2.0,
                             tokens_per_byte=0.5)
    both = data_scale.summary(pd.concat([measured, unseen]), table.reset_index())
    assert "**2.00×** the tokens per byte on unseen as on text" in both

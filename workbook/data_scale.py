"""Data and scale: how much text the lecture's models read, in bytes and in tokens.

Three small pieces, each a table a notebook can show and a claims row can check:

* :func:`lecture_table`: the lecture's dataset sizes (bytes where it gives bytes, tokens where
  it gives tokens), each row with its source;
* :func:`bytes_per_token`: how many bytes of UTF-8 text one token of *our* tokenizer covers,
  measured by encoding a text, and :func:`predicted_tokens`, which uses that ratio to turn the
  table's bytes into tokens;
* :func:`input_tensor`: the size of one batch's ``batch × seq × d_model`` input activations.

Sizes are decimal: 1 GB = 1e9 bytes, 1 TB = 1e12 bytes.
"""

from __future__ import annotations

import math

import pandas as pd

from workbook import data
from workbook.claims import Claim, claims_table
from workbook.config import check_range, check_text, takes_rows
from workbook.hardware import datasheet, detect

GB, TB = 1e9, 1e12
NAN = math.nan
LECTURE = "lecture notes (Training GPTs: large datasets)"

# model, year, dataset, bytes (NaN: not given), tokens (NaN: not given), source
_DATASETS = [
    ("GPT-1", 2018, "BooksCorpus", 5 * GB, NAN, LECTURE),
    ("GPT-2", 2019, "WebText", 40 * GB, NAN, LECTURE),
    ("GPT-3", 2020, "Common Crawl (filtered), WebText2, books, Wikipedia", 570 * GB, 300e9,
     LECTURE + "; 300B tokens: lecture overview (tokens trained on)"),
    ("Llama 1", 2023, "Common Crawl, C4, Wikipedia, books, GitHub, Stack Exchange", NAN,
     1.4e12, LECTURE),
    ("Llama 2", 2023, "web, papers, code, books, Wikipedia, news, multilingual", NAN, 2e12,
     LECTURE),
    ("Llama 3", 2024, "not disclosed", NAN, 15e12, LECTURE),
    ("FineWeb", 2024, "Common Crawl, filtered and deduplicated (open)", 44 * TB, 15e12,
     LECTURE + " (15T tokens, 44 TB of disk)"),
]

# Rows whose token count is what the model was trained on (a weighted mix, some of it repeated),
# not the token count of the bytes beside it: no claim predicts one from the other.
TRAINED_ON_TOKENS = frozenset({"GPT-3"})

# The one published bytes-and-tokens pair for the same text that the lecture's 570 GB belongs to.
GPT3_CC = {"bytes": 570 * GB, "tokens": 400e9,
           "source": "GPT-3 paper (Brown et al. 2020), §2.2: filtered Common Crawl, "
                     "570 GB ≈ 400B BPE tokens"}
RULE_OF_THUMB = 4.0  # bytes (≈ characters) of English per BPE token; the lecture states none
RULE_SOURCE = "common rule of thumb for English BPE (~4 characters per token)"


def lecture_table() -> pd.DataFrame:
    """The lecture's pre-training datasets: one row per model, bytes and/or tokens, source."""
    return pd.DataFrame(_DATASETS, columns=["model", "year", "dataset", "bytes", "tokens",
                                            "source"])


def scale_rows() -> pd.DataFrame:
    """:func:`lecture_table` as tidy rows (metric ``bytes`` or ``tokens``) for a figure."""
    table = lecture_table().melt(id_vars=["model", "year", "source"],
                                 value_vars=["bytes", "tokens"], var_name="metric")
    table = table.dropna(subset=["value"]).reset_index(drop=True)
    return table.assign(unit=table["metric"], status="ok")


def bytes_per_token(tokenizer, text: str) -> dict:
    """Encode ``text`` once: its UTF-8 bytes, its tokens and the two ratios between them."""
    check_text("text", text, empty=False)
    n_bytes = len(text.encode("utf-8"))
    n_tokens = len(tokenizer.encode(text, add_special_tokens=False))
    return {"bytes": n_bytes, "tokens": n_tokens, "bytes_per_token": n_bytes / n_tokens,
            "tokens_per_byte": n_tokens / n_bytes}


def measure_corpora(vocab_size: int = 4096) -> pd.DataFrame:
    """Bytes per token of the workbook's tokenizer (byte-level BPE, ``vocab_size``) on the
    corpus it was trained on and on the downstream text it never saw (NumPy docstrings)."""
    check_range("vocab_size", vocab_size, 512, 65536)
    tok = data.load_tokenizer(vocab_size)
    texts = {"CPython docstrings (its training text)": data.load_corpus(),
             "NumPy docstrings (unseen text)": data.load_downstream()}
    rows = [{"corpus": name, "tokenizer": f"workbook byte-level BPE, V = {len(tok)}",
             **bytes_per_token(tok, text), "source": "measured", "status": "ok"}
            for name, text in texts.items()]
    return pd.DataFrame(rows)


@takes_rows
def predicted_tokens(table: pd.DataFrame, bytes_per_token: float) -> pd.DataFrame:
    """Tokens predicted from bytes (``bytes / bytes_per_token``) for every row of ``table``
    that gives bytes, beside the published token count where there is one."""
    check_range("bytes_per_token", bytes_per_token, 0.1, 100.0)
    known = table.dropna(subset=["bytes"])
    return pd.DataFrame({"model": known["model"], "bytes": known["bytes"],
                         "predicted tokens": known["bytes"] / bytes_per_token,
                         "published tokens": known["tokens"]}).reset_index(drop=True)


def input_tensor(batch: int, seq_len: int, d_model: int, bytes_per_element: int = 2) -> dict:
    """One batch of input activations, ``batch × seq_len × d_model``: elements and bytes
    (2 bytes per element: bf16)."""
    check_range("batch", batch, 1, 1e7)
    check_range("seq_len", seq_len, 1, 1e7)
    check_range("d_model", d_model, 1, 1e6)
    check_range("bytes_per_element", bytes_per_element, 1, 8)
    elements = batch * seq_len * d_model
    return {"tokens": batch * seq_len, "elements": elements,
            "bytes": elements * bytes_per_element}


# The lecture's table of input shapes (GPT-3's "3.2M tokens" batch is 1600 × 2048 = 3.28M).
LECTURE_SHAPES = [("GPT-1", 64, 512, 768), ("GPT-2", 512, 1024, 1600),
                  ("GPT-3", 1600, 2048, 12288)]


def input_tensor_table() -> pd.DataFrame:
    """:func:`input_tensor` for the lecture's GPT-1/2/3 shapes, in bf16."""
    rows = [{"model": name, "batch": b, "seq_len": s, "d_model": d, **input_tensor(b, s, d)}
            for name, b, s, d in LECTURE_SHAPES]
    frame = pd.DataFrame(rows)
    return frame.assign(GB=frame["bytes"] / GB)


def size(n_bytes: float) -> str:
    """'570 GB', '44 TB': decimal units, as the lecture writes them."""
    return f"{n_bytes / TB:,.3g} TB" if n_bytes >= TB else f"{n_bytes / GB:,.3g} GB"


def count(n_tokens: float) -> str:
    """'300B', '1.4T': a token count as the lecture writes it."""
    return f"{n_tokens / 1e12:.3g}T" if n_tokens >= 1e12 else f"{n_tokens / 1e9:.3g}B"


@takes_rows
def readable(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`lecture_table` or :func:`predicted_tokens` as a reader reads it: sizes in GB or
    TB ('570 GB'), token counts in B or T ('300B', '1.44B'), "–" where none is published;
    compute on the table, show this."""
    out = table.copy()
    for column in out.columns:
        if column == "bytes" or "tokens" in str(column):
            write = size if column == "bytes" else count
            out[column] = [write(v) if pd.notna(v) else "–" for v in out[column]]
    return out.rename(columns={"bytes": "size (1 GB = 10⁹ bytes)"})


@takes_rows
def tensor_caption(shapes: pd.DataFrame) -> str:
    """Markdown: one layer's input (:func:`input_tensor_table`) of GPT-1 and GPT-3 in GB, and
    GPT-3's against this machine's memory (``hardware.detect``) and an H100's (datasheet)."""
    by = shapes.set_index("model")
    small, big = by.loc["GPT-1", "bytes"] / GB, by.loc["GPT-3", "bytes"] / GB
    machine, h100 = detect(), datasheet("H100")
    memory = "this machine's " + ("GPU memory" if machine.device == "cuda" else "RAM")

    def against(name: str, gb: float) -> str:
        if gb <= 0:
            return f"{name} reports no memory size"
        share = big / gb
        return (f"{share:.2f}× the {gb:,.1f} GB of {name}, more than all of it" if share > 1
                else f"{100 * share:.0f} % of the {gb:,.1f} GB of {name}")

    return (f"One layer's input in bf16: GPT-1 **{small:,.3f} GB**, GPT-3 **{big:,.1f} GB**, "
            f"{big / small:,.0f}× more. GPT-3's alone is "
            f"{against(f'{memory} ({machine.name})', machine.memory_gb)}; "
            f"{against(f'an {h100.name} (datasheet)', h100.memory_gb)}, before weights, other "
            "layers' activations or attention scores (notebook 04).")


@takes_rows
def scale_figure(rows: pd.DataFrame):
    """The lecture's datasets on a log axis: bytes and tokens side by side per model."""
    from workbook import plots

    return plots.bars(rows, x="model", group="metric", log_y=True, y_title="bytes or tokens",
                      title="Pre-training data, from GPT-1 to FineWeb (log scale)")


@takes_rows
def claims(measured: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Bytes per token: the rule of thumb and published pairs vs this tokenizer's measurement,
    and tokens predicted from bytes vs published counts (verdicts computed)."""
    own = measured.iloc[0]
    bpt, where = float(own["bytes_per_token"]), f"this machine, {own['corpus']}"
    fineweb = lecture_table().set_index("model").loc["FineWeb"]
    out = [Claim("English BPE: about 4 bytes per token", RULE_SOURCE, RULE_OF_THUMB, bpt,
                 "bytes/token", where, rel_tol=0.25),
           Claim("FineWeb: 44 TB hold 15T tokens (2.9 bytes/token)", LECTURE,
                 fineweb["bytes"] / fineweb["tokens"], bpt, "bytes/token", where, rel_tol=0.25),
           Claim("GPT-3's 570 GB ≈ 400B tokens (1.4 bytes/token)", GPT3_CC["source"],
                 GPT3_CC["bytes"] / GPT3_CC["tokens"], bpt, "bytes/token", where, rel_tol=0.25)]
    for _, row in predictions.dropna(subset=["published tokens"]).iterrows():
        if row["model"] in TRAINED_ON_TOKENS:
            continue
        out.append(Claim(f"{row['model']}: {size(row['bytes'])} of text ≈ "
                         f"{count(row['published tokens'])} tokens (tokens predicted from its "
                         "bytes at the measured bytes/token)", LECTURE, row["published tokens"],
                         row["predicted tokens"], "tokens", where, rel_tol=0.3))
    return claims_table(out)


@takes_rows
def summary(measured: pd.DataFrame, checked: pd.DataFrame) -> str:
    """The section's findings as Markdown, every number read from the rows: the measured
    ratios, then each claim the data refutes, said plainly."""
    lines = [f"* **{r['corpus']}**: {r['bytes']:,} bytes → {r['tokens']:,} tokens = "
             f"**{r['bytes_per_token']:.2f} bytes/token** ({r['tokens_per_byte']:.3f} "
             f"tokens/byte; {r['tokenizer']})" for _, r in measured.iterrows()]
    if len(measured) > 1:
        first, other = measured.iloc[0], measured.iloc[-1]
        ratio = other["tokens_per_byte"] / first["tokens_per_byte"]
        lines.append(f"* The same tokenizer needs **{ratio:.2f}×** the tokens per byte on "
                     f"{other['corpus']} as on {first['corpus']}: the ratio is a property of "
                     "the tokenizer *and* the text.")
    held = checked["verdict"].str.startswith("holds")
    lines.append(f"* {int(held.sum())} of {len(checked)} claims hold within their stated "
                 "tolerance.")
    lines += [f"* **Refuted here:** {r['claim']} ({r['holds if']}; {r['verdict']})."
              for _, r in checked[~held].iterrows()]
    return "\n".join(lines)

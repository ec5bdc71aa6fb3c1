"""NF4 and double quantisation, the ideas of QLoRA's storage.

* **NF4** - 16 code values placed at quantiles of N(0, 1), so that normally distributed weights
  fill the 16 bins about equally. Built from scratch in :func:`nf4_codebook` and checked equal
  to bitsandbytes' table; :func:`quantize_blockwise` is the blockwise-absmax quantiser.
* **Double quantisation** - the per-block fp32 absmax constants are themselves quantised to
  8 bits: :func:`bits_per_param` computes the cost, :func:`stored_bits_per_param` measures it
  from the tensors bitsandbytes actually stores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_range, check_values

# ------------------------------------------------------------------------------ NF4 codebook


def nf4_offset(n_negative: int = 8, n_positive: int = 9) -> float:
    """The outermost quantile used for NF4: halfway between 1 - 1/(2*15) and 1 - 1/(2*16).

    ``norm.ppf(1)`` is infinite, so the extreme codes sit at a quantile just below 1; QLoRA
    takes the mean of the two natural choices for a 15- and a 16-value grid (0.9677...).
    """
    n_total = n_negative + n_positive - 1          # 16 codes, zero shared by both halves
    return 0.5 * ((1 - 1 / (2 * (n_total - 1))) + (1 - 1 / (2 * n_total)))


def nf4_codebook(offset: float | None = None) -> torch.Tensor:
    """The 16 NF4 code values in [-1, 1], sorted, built from normal quantiles.

    Asymmetric on purpose: 8 positive and 7 negative values plus an exact zero (a symmetric
    grid of 16 values would have no zero, and padding and ReLU-like weights need one).
    Positive half: quantiles at 9 evenly spaced probabilities from ``offset`` down to 0.5
    (the last one, 0.5, is the zero); negative half: 8 from ``offset`` to 0.5, negated.
    Both halves are scaled so the largest magnitude is exactly 1.
    """
    p = nf4_offset() if offset is None else offset
    check_range("offset", p, 0.5001, 0.9999)
    ppf = torch.special.ndtri                       # the inverse CDF of N(0, 1)
    positive = ppf(torch.linspace(p, 0.5, 9, dtype=torch.float64)[:-1])   # 8 values > 0
    negative = -ppf(torch.linspace(p, 0.5, 8, dtype=torch.float64)[:-1])  # 7 values < 0
    values = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive])
    values = values.sort().values
    return (values / values.max()).float()


def bnb_functional():
    """``bitsandbytes.functional``, or one line saying how to install it."""
    try:
        import bitsandbytes.functional as bnb_f
    except ImportError as exc:
        raise WorkbookError("4-bit quantisation needs bitsandbytes (pip install bitsandbytes); "
                            f"it failed to import: {exc}") from None
    return bnb_f


def bnb_codebook(kind: str = "nf4") -> torch.Tensor:
    """bitsandbytes' own 16-value table for ``nf4`` or ``fp4`` (sorted)."""
    check_choice("kind", kind, ("nf4", "fp4"))
    table = bnb_functional().get_4bit_type(kind, device="cpu").float()
    return table.sort().values


def int_codebook(bits: int) -> torch.Tensor:
    """Uniform symmetric absmax grid: k / (2^(bits-1) - 1) for |k| <= 2^(bits-1) - 1.

    INT4 uses 15 of its 16 codes (-8 is left out to keep the grid symmetric), INT8 255 of 256.
    """
    check_range("bits", bits, 2, 8)
    top = 2 ** (bits - 1) - 1
    return torch.arange(-top, top + 1, dtype=torch.float32) / top


FORMATS: tuple[str, ...] = ("nf4", "fp4", "int4", "int8")


def codebook(fmt: str) -> torch.Tensor:
    """The code values of a format: NF4 built here, FP4 from bitsandbytes, INT4/INT8 uniform."""
    check_choice("format", fmt, FORMATS)
    if fmt == "nf4":
        return nf4_codebook()
    if fmt == "fp4":
        return bnb_codebook("fp4")
    return int_codebook(int(fmt.removeprefix("int")))


# ------------------------------------------------------------------ blockwise absmax quantiser


def quantize_blockwise(x: torch.Tensor, code: torch.Tensor,
                       blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantisation to the nearest code value.

    Returns ``(index, absmax)``: index (n_blocks, blocksize) uint8 into ``code``, absmax
    (n_blocks,) fp32. Each block is divided by its largest magnitude, so one outlier only
    spoils the 63 neighbours in its block, not the whole tensor.
    """
    check_range("blocksize", blocksize, 16, 4096)
    flat = x.detach().float().reshape(-1)
    if flat.numel() % blocksize:
        raise WorkbookError(f"{flat.numel()} values do not split into blocks of {blocksize}; "
                            "allowed: a multiple of the blocksize")
    blocks = flat.view(-1, blocksize)                                # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    normed = blocks / absmax[:, None]                                # in [-1, 1]
    # Nearest code by midpoints: searchsorted on the boundaries between sorted codes.
    code = code.float().sort().values
    bounds = (code[1:] + code[:-1]) / 2
    index = torch.searchsorted(bounds, normed.contiguous(), right=False)
    return index.to(torch.uint8), absmax


def dequantize_blockwise(index: torch.Tensor, absmax: torch.Tensor,
                         code: torch.Tensor) -> torch.Tensor:
    """Code value times block absmax; shape (n_blocks, blocksize), fp32."""
    return code.float().sort().values[index.long()] * absmax[:, None]


def roundtrip(x: torch.Tensor, fmt: str, blocksize: int = 64) -> torch.Tensor:
    """``x`` quantised to ``fmt`` and back, in x's shape (fp32)."""
    code = codebook(fmt)
    index, absmax = quantize_blockwise(x, code, blocksize)
    return dequantize_blockwise(index, absmax, code).reshape(x.shape)


def bnb_roundtrip(x: torch.Tensor, fmt: str = "nf4", blocksize: int = 64) -> torch.Tensor:
    """The same round trip through bitsandbytes' ``quantize_4bit``/``dequantize_4bit``."""
    check_choice("format", fmt, ("nf4", "fp4"))
    bnb_f = bnb_functional()
    packed, state = bnb_f.quantize_4bit(x.detach().float().contiguous(), blocksize=blocksize,
                                        quant_type=fmt)
    return bnb_f.dequantize_4bit(packed, state).float().reshape(x.shape)


def quantization_error(weights: Mapping[str, torch.Tensor], blocksize: int = 64,
                       formats: Sequence[str] = FORMATS) -> pd.DataFrame:
    """Error of each format on each weight matrix: relative RMSE and mean |error|.

    Relative RMSE is RMSE / std(w): 0.1 means the rounding noise is a tenth of the weights'
    own spread. Rows: tensor, format, blocksize, metric, value, unit, source.
    """
    check_values("formats", formats)
    for fmt in formats:
        check_choice("format", fmt, FORMATS)
    rows = []
    for name, w in weights.items():
        w = w.detach().float()
        std = w.std().item()
        for fmt in formats:
            err = roundtrip(w, fmt, blocksize) - w
            rmse = err.pow(2).mean().sqrt().item()
            common = {"tensor": name, "format": fmt, "blocksize": blocksize,
                      "n_params": w.numel(), "source": "measured"}
            rows.append({**common, "metric": "rel_rmse", "value": rmse / std, "unit": "1"})
            rows.append({**common, "metric": "mean_abs_err", "value": err.abs().mean().item(),
                         "unit": "1"})
    return pd.DataFrame(rows)


def bin_occupancy(x: torch.Tensor, fmt: str = "nf4", blocksize: int = 64) -> pd.DataFrame:
    """How often each of the 16 codes is used: NF4 spreads normal weights evenly, INT4 not."""
    code = codebook(fmt)
    index, _ = quantize_blockwise(x, code, blocksize)
    counts = torch.bincount(index.reshape(-1).long(), minlength=code.numel()).float()
    return pd.DataFrame({"format": fmt, "code": code.tolist(),
                         "share": (counts / counts.sum()).tolist()})


# ------------------------------------------------------------------- double quantisation


def bits_per_param(blocksize: int = 64, double_quant: bool = True, blocksize2: int = 256,
                   code_bits: int = 4, const_bits: int = 32, const2_bits: int = 8) -> float:
    """Storage per weight: the 4-bit code plus its share of the block constants.

    Without double quantisation each block of 64 carries an fp32 absmax: 4 + 32/64 = 4.5 bits.
    With it the absmax is stored in 8 bits and every 256 of those share one fp32 constant:
    4 + 8/64 + 32/(64*256) = 4.127 bits.
    """
    check_range("blocksize", blocksize, 16, 4096)
    check_range("blocksize2", blocksize2, 1, 65536)
    check_range("code_bits", code_bits, 1, 32)
    check_range("const_bits", const_bits, 1, 64)
    check_range("const2_bits", const2_bits, 1, 64)
    check_choice("double_quant", double_quant, (False, True))
    if not double_quant:
        return code_bits + const_bits / blocksize
    return code_bits + const2_bits / blocksize + const_bits / (blocksize * blocksize2)


def state_bytes(state) -> int:
    """Bytes of every tensor a bitsandbytes QuantState holds (absmax, code, nested state)."""
    total = 0
    for attr in ("absmax", "code", "offset"):
        value = getattr(state, attr, None)
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
    nested = getattr(state, "state2", None)
    if getattr(state, "nested", False) and nested is not None:
        total += state_bytes(nested)
    return total


BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # what quantize_4bit accepts


def stored_bits_per_param(shape: tuple[int, int] = (4096, 4096), blocksize: int = 64,
                          double_quant: bool = True, seed: int = 0) -> pd.DataFrame:
    """Quantise a weight with bitsandbytes and count the bytes it really stores, per weight.

    Measured = 8 * (packed codes + absmax + nested absmax + code tables + offset) / n_params;
    the code tables are a fixed ~1 KiB, so a large matrix sits just above the formula.
    """
    check_choice("blocksize", blocksize, BNB_BLOCKSIZES)
    check_choice("double_quant", double_quant, (False, True))
    check_range("seed", seed, 0, 2**31 - 1)
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise WorkbookError(f"shape={shape!r} is not allowed; allowed: (rows, columns)")
    check_range("rows", shape[0], 1, 65536)
    check_range("columns", shape[1], 1, 65536)
    bnb_f = bnb_functional()
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen) * 0.02
    packed, state = bnb_f.quantize_4bit(w, blocksize=blocksize, quant_type="nf4",
                                        compress_statistics=double_quant)
    n = w.numel()
    stored = packed.numel() * packed.element_size() + state_bytes(state)
    base = {"shape": f"{shape[0]}x{shape[1]}", "blocksize": blocksize,
            "double_quant": double_quant, "metric": "bits_per_param", "unit": "bit"}
    return pd.DataFrame([
        {**base, "value": 8 * stored / n, "source": "measured"},
        {**base, "value": bits_per_param(blocksize, double_quant), "source": "predicted"},
    ])

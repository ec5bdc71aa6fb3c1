"""QLoRA (notebook 12): a 4-bit NormalFloat (NF4) frozen base with bf16 LoRA adapters, and what
it saves. Each idea sits beside the library that does it for real (bitsandbytes, PEFT):

* :mod:`~workbook.qlora.nf4` - the NF4 codebook from normal quantiles, the blockwise absmax
  quantiser, double quantisation's bits per weight;
* :mod:`~workbook.qlora.vram` - VRAM by formula (:func:`predict_vram`) and measured on a built
  model (:func:`measure_vram`, one method and size in a fresh process on a GPU);
* :mod:`~workbook.qlora.experiments` - ``qlora_vram`` and ``qlora_quality`` (``EXPERIMENTS``);
* :mod:`~workbook.qlora.views` - the claims table and captions;
* :mod:`~workbook.qlora.tables` - the tables as a reader sees them (units, "OOM (did not fit)"
  and "–" with reasons, this machine first, references by device and date).

The Llama shapes (:data:`SHAPES`) live in :mod:`workbook.lora.shapes` (notebook 11 counts
with them first).
"""

from workbook.lora.shapes import SHAPES, LlamaShape, shape
from workbook.qlora.experiments import (
    EXPERIMENTS,
    QUALITY_PRESETS,
    VRAM_PRESETS,
    QualityConfig,
    VramConfig,
    default_rows,
    needs_own_process,
    predicted_plan_rows,
    process_groups,
    quality_rows,
    ratio_rows,
    run_quality,
    run_vram,
    vram_plan,
    weight_bytes,
)
from workbook.qlora.nf4 import (
    BNB_BLOCKSIZES,
    FORMATS,
    bin_occupancy,
    bits_per_param,
    bnb_codebook,
    bnb_functional,
    bnb_roundtrip,
    codebook,
    dequantize_blockwise,
    int_codebook,
    nf4_codebook,
    nf4_offset,
    quantization_error,
    quantize_blockwise,
    roundtrip,
    state_bytes,
    stored_bits_per_param,
)
from workbook.qlora.tables import (
    OOM,
    OPTIMIZER_COLUMNS,
    fit_caption,
    optimizer_table,
    quality_table,
    row_counts,
    saving_table,
)
from workbook.qlora.views import (
    claims,
    codebook_gap,
    error_caption,
    lecture_saving_caption,
    paging_claims,
    quality_caption,
    quality_gap,
    vram_gap_caption,
)
from workbook.qlora.vram import (
    COMPONENTS,
    METHODS,
    OPTIMIZERS,
    VRAM_SIZES,
    Fp32Adam,
    add_adapters,
    build_llama,
    check_4bit_device,
    failure_row,
    make_optimizer,
    measure_many,
    measure_vram,
    optimizer_state_bytes,
    predict_vram,
    predicted_rows,
    quantize_linears,
    state_split,
    state_tensors_bytes,
    trainable_numels,
)

__all__ = [
    "SHAPES", "LlamaShape", "shape",
    "EXPERIMENTS", "QUALITY_PRESETS", "VRAM_PRESETS", "QualityConfig", "VramConfig",
    "default_rows", "needs_own_process", "predicted_plan_rows", "process_groups",
    "quality_rows", "ratio_rows", "run_quality", "run_vram", "vram_plan", "weight_bytes",
    "BNB_BLOCKSIZES", "FORMATS", "bin_occupancy", "bits_per_param", "bnb_codebook",
    "bnb_functional", "bnb_roundtrip", "codebook", "dequantize_blockwise", "int_codebook",
    "nf4_codebook", "nf4_offset", "quantization_error", "quantize_blockwise", "roundtrip",
    "state_bytes", "stored_bits_per_param",
    "OOM", "OPTIMIZER_COLUMNS", "fit_caption", "optimizer_table", "quality_table", "row_counts",
    "saving_table",
    "claims", "codebook_gap", "error_caption", "lecture_saving_caption",
    "paging_claims", "quality_gap",
    "quality_caption",
    "vram_gap_caption",
    "COMPONENTS", "METHODS", "OPTIMIZERS", "VRAM_SIZES", "Fp32Adam", "add_adapters",
    "build_llama", "check_4bit_device", "failure_row", "make_optimizer", "measure_many",
    "measure_vram", "optimizer_state_bytes", "predict_vram", "predicted_rows",
    "quantize_linears", "state_split", "state_tensors_bytes", "trainable_numels",
]

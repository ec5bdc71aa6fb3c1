"""Data parallelism and ZeRO: the paper's memory and communication formulas beside DeepSpeed (05).

* :mod:`.formulas`: the ZeRO paper's per-rank model-state bytes (Fig. 1) and communication
  volume (Sec. 7), DeepSpeed's estimators, the measured variants and what each should hold;
* :mod:`.collectives`: every ``torch.distributed`` collective counted as it runs;
* :mod:`.census`: every live tensor classified as parameter, optimizer state or the rest;
* :mod:`.engine`: one rank's run under torch DDP or DeepSpeed ZeRO 0-3 (+ CPU offload);
* :mod:`.experiments`: the ``zero_stages`` experiment; :mod:`.views`: tables, figures, claims.
"""

from workbook.zero.census import census, live_tensor_bytes
from workbook.zero.collectives import CommCounter, count_collectives, install_counting
from workbook.zero.engine import (
    build_gpt2,
    ds_config,
    largest_layer_params,
    skip_shm_build,
    train_rank,
)
from workbook.zero.experiments import (
    EXPERIMENTS,
    ZERO_PRESETS,
    ZeroConfig,
    predicted_rows,
    run_zero,
    world_size,
)
from workbook.zero.formulas import (
    ENGINES,
    K_ADAM_MIXED,
    OFFLOADS,
    STAGES,
    VARIANTS,
    deepspeed_estimates,
    formula_table,
    predicted_memory,
    variant_extras,
    zero_comm_formula,
    zero_memory_formula,
)
from workbook.zero.views import (
    COMM_CAUSES,
    GAP_CAUSES,
    claims,
    claims_rows,
    comm_kinds,
    formula_explorer,
    model_state_table,
    plot_comm,
    plot_model_states,
    plot_scaling,
    readable,
    recorded_tables,
    where_of,
)

__all__ = [
    "COMM_CAUSES", "ENGINES", "EXPERIMENTS", "GAP_CAUSES", "K_ADAM_MIXED", "OFFLOADS", "STAGES",
    "VARIANTS", "ZERO_PRESETS", "CommCounter", "ZeroConfig", "build_gpt2", "census", "claims",
    "comm_kinds", "count_collectives", "deepspeed_estimates", "ds_config", "formula_explorer",
    "formula_table", "install_counting", "largest_layer_params", "live_tensor_bytes",
    "model_state_table", "plot_comm", "plot_model_states", "plot_scaling", "predicted_memory",
    "predicted_rows", "readable", "recorded_tables", "where_of", "claims_rows", "run_zero",
    "skip_shm_build", "train_rank",
    "variant_extras", "world_size", "zero_comm_formula", "zero_memory_formula",
]

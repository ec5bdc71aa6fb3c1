"""Model parallelism: split one model's work across ranks (notebook 06), as picotron lays it out.

* :mod:`.comm`: ranks, devices, clocks, :class:`CommLog` (every message counted as it is sent)
  and Megatron's two operators ``f`` (:class:`CopyToTP`) and ``g`` (:class:`ReduceFromTP`);
* :mod:`.tensor`: Megatron tensor parallelism: a block sharded by columns then rows, one
  all-reduce per sub-layer each way, equal to one device;
* :mod:`.pipeline`: GPipe: layers on consecutive ranks, ``m`` micro-batches, the bubble
  ``(p-1)/(m+p-1)``; :mod:`.schedules`: GPipe and 1F1B in one executor, activations counted;
* :mod:`.composed`: DP × TP × PP on one grid of ranks, bytes counted per dimension;
* :mod:`.expert`: Switch/GShard MoE: experts on different ranks, top-k routing with a capacity,
  two all-to-alls;
* :mod:`.experiments`: configs, ``run_*`` and ``EXPERIMENTS`` (one process per rank: every GPU
  with NCCL, or ``n_ranks`` gloo processes on a CPU); :mod:`.views`: formulas behind the
  sliders, summaries, figures and ``claims``; :mod:`.moe_views`: the expert-parallel views and
  the trade-off table; :mod:`.machines`: which machine rows came from, shared by both.
"""

from workbook.model_parallel.comm import (
    BYTES,
    DTYPES,
    Clock,
    CommLog,
    CopyToTP,
    ReduceFromTP,
    f,
    g,
    median_ms,
    rank_device,
    rank_world,
    ring_allreduce_bytes,
    sync,
)
from workbook.model_parallel.composed import (
    DIMS,
    TPMLPLayer,
    composed_worker,
    grid_coords,
    grid_groups,
    predicted_comm,
)
from workbook.model_parallel.experiments import (
    COMPOSED_PRESETS,
    EP_PRESETS,
    EXPERIMENTS,
    PP_PRESETS,
    TP_PRESETS,
    ComposedConfig,
    EPConfig,
    PPConfig,
    TPConfig,
    degrees,
    parse_layout,
    run_composed,
    run_ep,
    run_pp,
    run_tp,
    world_size,
)
from workbook.model_parallel.expert import (
    ep_worker,
    expected_drop_fraction,
    moe_capacity,
    moe_forward_ep,
    moe_reference,
    moe_weights,
    route,
    skew_bias,
)
from workbook.model_parallel.moe_views import (
    drops_caption,
    ep_summary,
    load_imbalance,
    moe_times,
    plot_drops,
    plot_routing,
    tradeoff_table,
)
from workbook.model_parallel.pipeline import (
    MLPLayer,
    bubble_fraction,
    build_pipeline_model,
    gpipe_step,
    pipeline_reference_grads,
    pp_grad_check_worker,
    pp_worker,
    replay_gpipe,
    stage_layers,
)
from workbook.model_parallel.schedules import (
    SCHEDULES,
    SavedBytes,
    in_flight,
    pipeline_step,
    replay_schedule,
    schedule_order,
    warmup_forwards,
)
from workbook.model_parallel.tensor import (
    Block,
    reference_block,
    shard_block,
    tp_comm_per_layer,
    tp_worker,
    unshard_grads,
)
from workbook.model_parallel.views import (
    analytic_view,
    bubble_curve,
    bubble_explorer,
    claims,
    comm_table,
    composed_caption,
    gpu_rows,
    peak_memory_table,
    plot_activations,
    plot_bubble,
    plot_schedules,
    plot_tp_time,
    pp_summary,
    schedule_summary,
    schedules_caption,
    stage_times,
    tp_summary,
)

__all__ = [
    # comm
    "BYTES", "DTYPES", "Clock", "CommLog", "CopyToTP", "ReduceFromTP", "f", "g", "median_ms",
    "rank_device", "rank_world", "ring_allreduce_bytes", "sync",
    # tensor
    "Block", "reference_block", "shard_block", "tp_comm_per_layer", "tp_worker",
    "unshard_grads",
    # pipeline
    "MLPLayer", "bubble_fraction", "build_pipeline_model", "gpipe_step",
    "pipeline_reference_grads", "pp_grad_check_worker", "pp_worker", "replay_gpipe",
    "stage_layers",
    # schedules
    "SCHEDULES", "SavedBytes", "in_flight", "pipeline_step", "replay_schedule",
    "schedule_order", "warmup_forwards",
    # composed
    "DIMS", "TPMLPLayer", "composed_worker", "grid_coords", "grid_groups", "predicted_comm",
    # expert
    "ep_worker", "expected_drop_fraction", "moe_capacity", "moe_forward_ep", "moe_reference",
    "moe_weights", "route", "skew_bias",
    # experiments
    "COMPOSED_PRESETS", "EP_PRESETS", "EXPERIMENTS", "PP_PRESETS", "TP_PRESETS",
    "ComposedConfig", "EPConfig", "PPConfig", "TPConfig", "degrees", "parse_layout",
    "run_composed", "run_ep", "run_pp", "run_tp", "world_size",
    # views
    "analytic_view", "bubble_curve", "bubble_explorer", "claims", "composed_caption",
    "drops_caption", "ep_summary", "gpu_rows", "load_imbalance", "plot_activations", "plot_bubble",
    "plot_drops", "plot_routing", "plot_schedules", "plot_tp_time", "pp_summary",
    "schedule_summary", "schedules_caption", "tp_summary", "tradeoff_table", "comm_table",
    "moe_times", "peak_memory_table", "stage_times",
]

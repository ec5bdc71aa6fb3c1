"""DP × TP × PP in one run (Megatron-LM's 3D layout, Narayanan et al. 2021).

``world = dp · tp · pp`` ranks on a grid, tensor-parallel neighbours adjacent (the fastest
links), then data-parallel replicas, then pipeline stages. Each dimension gets its own process
groups (``torch.distributed.new_group``) and its own :class:`CommLog`, so every byte is counted
where it goes: TP's all-reduces inside a layer (Megatron's ``f``/``g``), PP's activations and
gradients between stages (:func:`pipeline_step`), DP's gradient all-reduce after the step.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from workbook.config import WorkbookError
from workbook.model_parallel.comm import (
    BYTES,
    DTYPES,
    CommLog,
    f,
    g,
    rank_device,
    rank_world,
    ring_allreduce_bytes,
)
from workbook.model_parallel.pipeline import MLPLayer, build_pipeline_model, stage_layers
from workbook.model_parallel.schedules import in_flight, pipeline_step, schedule_order

DIMS = ("dp", "tp", "pp")


def grid_coords(rank: int, dp: int, tp: int, pp: int) -> dict[str, int]:
    """This rank's place on the grid: ``rank = (pp_i · dp + dp_i) · tp + tp_i``."""
    if not 0 <= rank < dp * tp * pp:
        raise WorkbookError(f"rank={rank} is outside a {dp}×{tp}×{pp} grid; allowed: 0 to "
                            f"{dp * tp * pp - 1}")
    return {"tp": rank % tp, "dp": rank // tp % dp, "pp": rank // (tp * dp)}


def grid_groups(dp: int, tp: int, pp: int) -> dict[str, list[list[int]]]:
    """Every group of each dimension: the ranks that differ only in that coordinate."""
    world = dp * tp * pp
    sizes = {"dp": dp, "tp": tp, "pp": pp}
    out: dict[str, list[list[int]]] = {}
    for dim in DIMS:
        groups: dict[tuple, list[int]] = {}
        for r in range(world):
            c = grid_coords(r, dp, tp, pp)
            groups.setdefault(tuple(c[d] for d in DIMS if d != dim), []).append(r)
        out[dim] = sorted(sorted(v, key=lambda r, d=dim: grid_coords(r, dp, tp, pp)[d])
                          for v in groups.values())
        assert all(len(v) == sizes[dim] for v in out[dim])
    return out


class TPMLPLayer(nn.Module):
    """:class:`MLPLayer` split Megatron's way over ``tp`` ranks: ``fc1`` by output columns,
    ``fc2`` by input rows, ``f`` before and ``g`` after; LayerNorm and ``fc2``'s bias whole."""

    def __init__(self, full: MLPLayer, tp: int, tp_rank: int, log: CommLog) -> None:
        super().__init__()
        d_model, hidden = full.fc1.in_features, full.fc1.out_features
        if hidden % tp:
            raise WorkbookError(f"tp={tp} must divide the MLP's {hidden} hidden units")
        cols = slice(tp_rank * hidden // tp, (tp_rank + 1) * hidden // tp)
        self.tp, self.log = tp, log
        self.ln = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, hidden // tp)
        self.fc2 = nn.Linear(hidden // tp, d_model, bias=False)
        self.fc2_bias = nn.Parameter(full.fc2.bias.detach().clone())
        with torch.no_grad():
            self.ln.load_state_dict(full.ln.state_dict())
            self.fc1.weight.copy_(full.fc1.weight[cols])
            self.fc1.bias.copy_(full.fc1.bias[cols])
            self.fc2.weight.copy_(full.fc2.weight[:, cols])
        self.to(full.fc1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        h = f(h, self.log) if self.tp > 1 else h
        out = self.fc2(F.gelu(self.fc1(h)))
        return x + (g(out, self.log) if self.tp > 1 else out) + self.fc2_bias

    def reference_grads(self, full: MLPLayer, tp_rank: int) -> dict[str, torch.Tensor]:
        """``full``'s gradients cut the way this shard's parameters are, by parameter name."""
        hidden = full.fc1.out_features
        cols = slice(tp_rank * hidden // self.tp, (tp_rank + 1) * hidden // self.tp)
        return {"ln.weight": full.ln.weight.grad, "ln.bias": full.ln.bias.grad,
                "fc1.weight": full.fc1.weight.grad[cols], "fc1.bias": full.fc1.bias.grad[cols],
                "fc2.weight": full.fc2.weight.grad[:, cols], "fc2_bias": full.fc2.bias.grad}


def predicted_comm(dp: int, tp: int, pp: int, coords: dict[str, int], n_layers: int,
                   d_model: int, micro_batch: int, seq_len: int, m: int,
                   dtype: str) -> dict[str, dict[str, float]]:
    """Per dimension, this rank's messages and bytes sent in one step, from the layout alone.

    TP: 2 all-reduces per layer per micro-batch (``g`` forward, ``f`` backward) of one
    activation, ``2(tp-1)/tp`` of each sent (ring). PP: each micro-batch's activation to the
    next stage and its gradient to the previous one. DP: one all-reduce of this rank's gradients
    (one bucket), ring share ``2(dp-1)/dp``.
    """
    act = micro_batch * seq_len * d_model * BYTES[dtype]
    layers = len(stage_layers(n_layers, pp, coords["pp"]))
    params = layers * (2 * d_model + 4 * d_model * (d_model + 1) // tp
                       + 4 * d_model * d_model // tp + d_model)
    tp_calls = 2 * layers * m if tp > 1 else 0
    neighbours = (coords["pp"] > 0) + (coords["pp"] < pp - 1)
    return {"tp": {"calls": tp_calls, "bytes_sent": tp_calls * ring_allreduce_bytes(act, tp)},
            "pp": {"calls": m * neighbours, "bytes_sent": m * neighbours * act},
            "dp": {"calls": int(dp > 1),
                   "bytes_sent": ring_allreduce_bytes(params * BYTES[dtype], dp)},
            "params": {"elements": params}}


def _reference(n_layers: int, d_model: int, batch: torch.Tensor, seed: int):
    """One process, the whole model and batch: loss per replica (sum over micro-batches of the
    mean square), gradients of their mean (what DP's averaged all-reduce gives)."""
    model = build_pipeline_model(n_layers, d_model, seed).to(batch.dtype)
    losses = [sum(model(micro).float().square().mean() for micro in replica)
              for replica in batch]
    (sum(losses) / len(losses)).backward()
    return model, [float(v) for v in losses]


def composed_worker(layouts: Sequence[Sequence[int]], n_layers: int, d_model: int,
                    micro_batch: int, seq_len: int, m: int, schedule: str, dtype: str,
                    seed: int, steps: int = 1) -> pd.DataFrame:
    """Each ``[dp, tp, pp]`` layout of this world in turn: one training step on the grid,
    checked against one process, with every dimension's messages, bytes and time counted."""
    rank, world = rank_world()
    device, dt = rank_device(), DTYPES[dtype]
    rows: list[dict] = []
    for dp, tp, pp in layouts:
        if dp * tp * pp != world:
            raise WorkbookError(f"layout dp={dp}, tp={tp}, pp={pp} needs {dp * tp * pp} ranks; "
                                f"this run has {world}")
        c = grid_coords(rank, dp, tp, pp)
        mine: dict[str, list[int]] = {}
        groups = {}
        for dim, all_groups in grid_groups(dp, tp, pp).items():
            for ranks in all_groups:  # every rank creates every group, in the same order
                made = dist.new_group(ranks) if world > 1 else None
                if rank in ranks:
                    mine[dim], groups[dim] = ranks, made
        logs = {dim: CommLog(groups[dim]) for dim in DIMS}
        model = build_pipeline_model(n_layers, d_model, seed)
        layer_ids = list(stage_layers(n_layers, pp, c["pp"]))
        stage = nn.Sequential(*[TPMLPLayer(model[i], tp, c["tp"], logs["tp"])
                                for i in layer_ids]).to(device, dt)
        gen = torch.Generator().manual_seed(seed + 1)
        batch = torch.randn(dp, m, micro_batch, seq_len, d_model, generator=gen).to(dt)
        shape = (micro_batch, seq_len, d_model)
        for _ in range(steps):  # the last step's counts and times are kept
            for log in logs.values():
                log.reset()
            stage.zero_grad(set_to_none=True)
            out = pipeline_step(stage, batch[c["dp"]].to(device) if c["pp"] == 0 else None, m,
                                shape, device, dt, schedule, ranks=mine["pp"], log=logs["pp"])
            grads = [q.grad for q in stage.parameters()]
            if dp > 1:  # one bucket: every gradient of this rank in one all-reduce, averaged
                flat = torch.cat([q.flatten() for q in grads])
                logs["dp"].all_reduce(flat)
                flat /= dp
                for q, part in zip(grads, flat.split([q.numel() for q in grads]), strict=True):
                    q.copy_(part.view_as(q))
        ref, losses = _reference(n_layers, d_model, batch, seed)
        err = max(float((q.grad.float().cpu()
                         - layer.reference_grads(ref[i], c["tp"])[name].float()).abs().max())
                  for layer, i in zip(stage, layer_ids, strict=True)
                  for name, q in layer.named_parameters())
        pred = predicted_comm(dp, tp, pp, c, n_layers, d_model, micro_batch, seq_len, m, dtype)
        base = {"layout": f"dp{dp}·tp{tp}·pp{pp}", "dp": dp, "tp": tp, "pp": pp,
                "dp_rank": c["dp"], "tp_rank": c["tp"], "pp_rank": c["pp"], "m": m,
                "schedule": schedule, "n_layers": n_layers, "d_model": d_model,
                "micro_batch": micro_batch, "seq_len": seq_len, "dtype": dtype}
        vals = [("max_abs_err_grad", "", err, "", "measured"),
                ("step_ms", "", out["span_ms"], "ms", "measured"),
                ("param_elements", "", sum(q.numel() for q in stage.parameters()), "",
                 "measured"),
                ("param_elements", "", pred["params"]["elements"], "", "predicted"),
                ("peak_activation_bytes", "", out["peak_activation_bytes"], "B", "measured"),
                ("peak_activation_bytes", "",
                 in_flight(schedule_order(schedule, pp, c["pp"], m))
                 * (len(layer_ids) * (2 + 8 / tp) + 1) * micro_batch * seq_len * d_model
                 * BYTES[dtype], "B", "predicted")]
        if c["pp"] == pp - 1:
            vals.append(("abs_err_loss", "", abs(out["loss"] - losses[c["dp"]]), "",
                         "measured"))
        for dim in DIMS:
            log = logs[dim]
            sent = (sum(1 for op, b in log.calls if op == "p2p" and b > 0) if dim == "pp"
                    else log.count("all_reduce"))
            wire = (log.bytes("p2p") if dim == "pp" else sum(
                ring_allreduce_bytes(b, len(mine[dim])) for op, b in log.calls
                if op == "all_reduce"))
            vals += [("calls", dim, sent, "", "measured"),
                     ("calls", dim, pred[dim]["calls"], "", "predicted"),
                     ("bytes_sent", dim, wire, "B", "measured"),
                     ("bytes_sent", dim, pred[dim]["bytes_sent"], "B", "predicted"),
                     ("comm_ms", dim, log.milliseconds("p2p" if dim == "pp" else "all_reduce"),
                      "ms", "measured")]
        rows += [{**base, "metric": k, "dim": d, "value": float(v), "unit": u, "source": s}
                 for k, d, v, u, s in vals]
    return pd.DataFrame(rows)

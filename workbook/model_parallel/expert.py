"""Expert parallelism (Switch Transformer, GShard): experts live on different ranks, a router
sends each token to its top-k experts with an all-to-all, tokens beyond an expert's capacity
are dropped (the residual connection carries them on).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

from workbook.config import WorkbookError, check_range
from workbook.model_parallel.comm import DTYPES, CommLog, median_ms, rank_device, rank_world


def moe_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """Switch Transformer capacity: ``ceil(capacity_factor * n_tokens * top_k / n_experts)``."""
    check_range("n_tokens", n_tokens, 1, 1e12)
    check_range("n_experts", n_experts, 1, 65536)
    check_range("top_k", top_k, 1, n_experts)
    check_range("capacity_factor", capacity_factor, 0.01, 1000)
    return math.ceil(capacity_factor * n_tokens * top_k / n_experts)


def expected_drop_fraction(n_tokens: int, n_experts: int, top_k: int,
                           capacity_factor: float) -> float:
    """Share of token->expert assignments dropped if routing were uniform and independent.

    An expert's load is then Binomial(n_tokens*top_k, 1/n_experts) (top-k picks distinct experts,
    so this is an approximation for k>1); it drops ``E[max(0, load - capacity)]``.
    """
    from scipy.stats import binom  # here, not at the top: half a second for one formula

    trials, cap = n_tokens * top_k, moe_capacity(n_tokens, n_experts, top_k, capacity_factor)
    if cap >= trials:
        return 0.0
    loads = torch.arange(cap + 1, trials + 1, dtype=torch.float64).numpy()
    over = float(((loads - cap) * binom.pmf(loads, trials, 1 / n_experts)).sum())
    return over * n_experts / trials


def route(x: torch.Tensor, router: torch.Tensor, bias: torch.Tensor, top_k: int,
          capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k routing with a per-expert capacity, first come first served (Switch Transformer).

    x: (T, d); router: (E, d). Returns ``expert`` (T, k), ``gate`` (T, k) and ``keep`` (T, k),
    where ``keep`` is False for assignments past the expert's capacity (the token then skips
    that expert; the residual connection carries it on).
    """
    probs = torch.softmax((x @ router.T).float() + bias, dim=-1)   # (T, E)
    gate, expert = probs.topk(top_k, dim=-1)                       # (T, k)
    # slot of each assignment in its expert's queue, in token order, choice 1 before choice 2
    onehot = F.one_hot(expert.T.reshape(-1), router.shape[0])     # (k*T, E)
    position = (onehot.cumsum(0) * onehot).sum(-1).view(top_k, -1).T - 1  # (T, k)
    return expert, gate, position < capacity


def _expert_mlp(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    return F.gelu(x @ w1) @ w2


def moe_reference(x: torch.Tensor, weights: dict[str, torch.Tensor], bias: torch.Tensor,
                  top_k: int, capacity: int) -> torch.Tensor:
    """The MoE layer on one device, all experts local: what expert parallelism must equal."""
    expert, gate, keep = route(x, weights["router"], bias, top_k, capacity)
    out = torch.zeros_like(x)
    for e in range(weights["router"].shape[0]):
        tok, slot = ((expert == e) & keep).nonzero(as_tuple=True)
        if len(tok):
            y = _expert_mlp(x[tok], weights["w1"][e], weights["w2"][e])
            out.index_add_(0, tok, (gate[tok, slot, None] * y.float()).to(x.dtype))
    return out


def moe_forward_ep(x: torch.Tensor, weights: dict[str, torch.Tensor], bias: torch.Tensor,
                   top_k: int, capacity: int, log: CommLog) -> tuple[torch.Tensor, dict]:
    """The MoE layer with experts spread over the ranks: route, all-to-all, compute, return.

    Rank ``r`` holds experts ``r*E/W ... (r+1)*E/W - 1`` (global ids). Two all-to-alls move
    token vectors: dispatch (to the expert's rank) and combine (back to the token's rank).
    """
    rank, world = rank_world()
    n_experts, d = weights["router"].shape
    per_rank = n_experts // world
    expert, gate, keep = route(x, weights["router"], bias, top_k, capacity)
    tok, slot = keep.nonzero(as_tuple=True)
    dest = expert[tok, slot]
    order = torch.argsort(dest, stable=True)            # group assignments by expert
    tok, slot, dest = tok[order], slot[order], dest[order]
    sent_per_expert = torch.bincount(dest, minlength=n_experts)         # (E,)
    # everyone learns how many tokens each of its experts gets from each rank
    recv_per_expert = torch.empty_like(sent_per_expert)
    dist.all_to_all_single(recv_per_expert, sent_per_expert)            # (W * E/W,)
    in_splits = sent_per_expert.view(world, per_rank).sum(1).tolist()
    out_splits = recv_per_expert.view(world, per_rank).sum(1).tolist()
    recv = x.new_empty(sum(out_splits), d)
    log.all_to_all(recv, x[tok].contiguous(), out_splits, in_splits)     # dispatch
    # received rows: per source rank, grouped by my local experts
    local_ids = torch.arange(per_rank, device=x.device).repeat(world)
    owner = torch.repeat_interleave(local_ids, recv_per_expert.view(-1))
    y = torch.empty_like(recv)
    for e in range(per_rank):
        rows = (owner == e).nonzero(as_tuple=True)[0]
        g = rank * per_rank + e
        y[rows] = _expert_mlp(recv[rows], weights["w1"][g], weights["w2"][g])
    back = x.new_empty(len(tok), d)
    log.all_to_all(back, y, in_splits, out_splits)                     # combine
    out = torch.zeros_like(x)
    out.index_add_(0, tok, (gate[tok, slot, None] * back.float()).to(x.dtype))
    stats = {"sent_per_expert": sent_per_expert, "received_tokens": int(sum(out_splits)),
             "requested_per_expert": torch.bincount(expert.flatten(), minlength=n_experts),
             "received_per_local_expert": recv_per_expert.view(world, per_rank).sum(0),
             "received_from_others": int(sum(out_splits) - out_splits[rank]),
             "dropped": int((~keep).sum()), "assignments": int(keep.numel())}
    return out, stats


def moe_weights(n_experts: int, d_model: int, d_ff: int, seed: int, device: torch.device,
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """All experts' weights from ``seed`` (every rank draws the same; each uses its own).

    Router rows get equal norm so that, on isotropic tokens, no expert is favoured by its
    initialisation alone: imbalance then comes from the bias (``skew``) and from chance.
    """
    gen = torch.Generator().manual_seed(seed)
    router = torch.randn(n_experts, d_model, generator=gen)
    router = router / router.norm(dim=1, keepdim=True)
    w1 = torch.randn(n_experts, d_model, d_ff, generator=gen) / math.sqrt(d_model)
    w2 = torch.randn(n_experts, d_ff, d_model, generator=gen) / math.sqrt(d_ff)
    return {k: v.to(device, dtype) for k, v in {"router": router, "w1": w1, "w2": w2}.items()}


def skew_bias(n_experts: int, skew: float, device: torch.device) -> torch.Tensor:
    """Router logit bias ``skew * (1 ... 0)`` over experts: a stand-in for a router that has
    learned to prefer some experts (0 = no preference)."""
    return skew * torch.linspace(1.0, 0.0, n_experts, device=device)


def ep_worker(experts_per_rank: int, d_model: int, d_ff: int, tokens_per_rank: int,
              top_k: int, capacity_factors: list[float], skews: list[float], dtype: str,
              seed: int, repeats: int) -> pd.DataFrame:
    """One rank of an expert-parallel MoE layer: routing counts, drops, bytes, equality."""
    rank, world = rank_world()
    device, dt = rank_device(), DTYPES[dtype]
    n_experts = experts_per_rank * world
    if top_k > n_experts:
        raise WorkbookError(f"top_k={top_k} exceeds the {n_experts} experts; allowed: 1 to "
                            f"{n_experts}")
    weights = moe_weights(n_experts, d_model, d_ff, seed, device, dt)
    gen = torch.Generator().manual_seed(seed + 1 + rank)  # each rank has its own tokens
    x = torch.randn(tokens_per_rank, d_model, generator=gen).to(device, dt)
    rows: list[dict] = []
    for skew in skews:
        bias = skew_bias(n_experts, skew, device)
        for cf in capacity_factors:
            cap = moe_capacity(tokens_per_rank, n_experts, top_k, cf)
            base = {"world": world, "n_experts": n_experts, "top_k": top_k,
                    "capacity_factor": cf, "skew": skew, "tokens_per_rank": tokens_per_rank,
                    "d_model": d_model, "dtype": dtype}
            rows += _ep_rows(x, weights, bias, top_k, cap, base, device, repeats)
    return pd.DataFrame(rows)


def _ep_rows(x: torch.Tensor, weights: dict, bias: torch.Tensor, top_k: int, cap: int,
             base: dict, device: torch.device, repeats: int) -> list[dict]:
    rank, world = rank_world()
    log = CommLog()
    out, st = moe_forward_ep(x, weights, bias, top_k, cap, log)
    ref = moe_reference(x, weights, bias, top_k, cap)
    n_experts, d = weights["router"].shape
    sent = st["sent_per_expert"]
    row_bytes = d * x.element_size()
    per_rank = n_experts // world
    leaving = int(sent.sum() - sent[rank * per_rank:(rank + 1) * per_rank].sum())
    uniform = 2 * len(x) * top_k * (world - 1) / world * row_bytes

    def r(metric: str, value: float, unit: str = "", source: str = "measured",
          **extra: object) -> dict:
        return {**base, **extra, "metric": metric, "value": float(value), "unit": unit,
                "source": source}

    rows = [r("max_abs_err_vs_one_device", (out.float() - ref.float()).abs().max()),
            r("capacity", cap, "tokens"),
            r("dropped_fraction", st["dropped"] / st["assignments"]),
            r("dropped_fraction", expected_drop_fraction(len(x), n_experts, top_k,
                                                         base["capacity_factor"]),
              source="predicted"),
            r("received_tokens", st["received_tokens"], "tokens"),
            r("alltoall_bytes", log.bytes("all_to_all"), "B"),
            # dispatch sends the tokens routed away; combine returns those received from others
            r("alltoall_bytes", (leaving + st["received_from_others"]) * row_bytes, "B",
              "predicted"),
            r("alltoall_bytes_if_uniform", uniform, "B", "predicted"),
            r("alltoall_calls", log.count("all_to_all"))]
    # routed_tokens: assignments sent to each expert, after capacity (what the ledger has always
    # held under that name); requested_tokens: what the router picked, before capacity
    rows += [r("routed_tokens", int(c), "tokens", expert=e) for e, c in enumerate(sent.tolist())]
    rows += [r("requested_tokens", int(c), "tokens", expert=e)
             for e, c in enumerate(st["requested_per_expert"].tolist())]
    rows += [r("expert_load", int(c), "tokens", expert=rank * per_rank + e)
             for e, c in enumerate(st["received_per_local_expert"].tolist())]
    if repeats > 0:
        log.enabled = False
        ms = median_ms(lambda: moe_forward_ep(x, weights, bias, top_k, cap, log), device,
                        repeats)
        rows.append(r("moe_forward_ms", ms, "ms"))
    return rows

"""The idea: Direct Preference Optimization (Rafailov et al. 2023), written out.

A reward model plus PPO needs a second network and a sampling loop. DPO shows that the policy
itself defines an *implicit reward*, r(x, y) = β · (log πθ(y|x) − log πref(y|x)), measured
against a frozen copy of the starting model (the reference). The Bradley–Terry likelihood of
"chosen beats rejected" under that reward is the whole loss:

    L = −log σ( β · [(log πθ(yw|x) − log πref(yw|x)) − (log πθ(yl|x) − log πref(yl|x))] )

Sequence log-probabilities are sums over the *answer* tokens only (the prompt is the same on
both sides and would cancel). Two numbers watch training on held-out pairs: the reward margin
r(x, yw) − r(x, yl) and the implicit reward accuracy, the share of pairs whose margin is > 0.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from workbook.config import check_range
from workbook.sft import collate, encode_chat, token_losses
from workbook.training import backward_step


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean DPO loss over a batch of pairs, and each pair's implicit rewards (chosen, rejected).

    Inputs are sequence log-probabilities, shape (B,). The rewards are detached: they are for
    watching, the loss is for training.
    """
    check_range("beta", beta, 1e-4, 100.0)
    chosen_reward = beta * (policy_chosen - ref_chosen)              # (B,)
    rejected_reward = beta * (policy_rejected - ref_rejected)        # (B,)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, chosen_reward.detach(), rejected_reward.detach()


def pair_record(prompt: str, answer: str) -> dict:
    """One exchange as a chat record (what :func:`workbook.sft.encode_chat` takes)."""
    return {"id": "pair", "messages": [{"role": "user", "content": prompt},
                                       {"role": "assistant", "content": answer}]}


def sequence_logps(model: torch.nn.Module, tokenizer: Any,
                   items: Sequence[tuple[str, str]]) -> torch.Tensor:
    """log π(answer | prompt) per item, summed over the answer's tokens (end marker included),
    shape (B,). Gradients flow when the caller allows them."""
    encoded = [encode_chat(pair_record(p, a), tokenizer, "answer_only") for p, a in items]
    batch = collate(encoded, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    logits = model(input_ids=batch["input_ids"].to(device),
                   attention_mask=batch["attention_mask"].to(device)).logits
    return -token_losses(logits, batch["labels"].to(device)).sum(-1)


def frozen_reference(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` that never trains: πref."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def pair_logps(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer: Any,
               pairs: Sequence[dict]) -> tuple[torch.Tensor, ...]:
    """Policy and reference log-probs of each pair's chosen and rejected answer (four (B,)
    tensors: policy chosen, policy rejected, reference chosen, reference rejected)."""
    chosen = [(p["prompt"], p["chosen"]) for p in pairs]
    rejected = [(p["prompt"], p["rejected"]) for p in pairs]
    both = sequence_logps(policy, tokenizer, chosen + rejected)
    with torch.no_grad():
        ref = sequence_logps(reference, tokenizer, chosen + rejected)
    n = len(pairs)
    return both[:n], both[n:], ref[:n], ref[n:]


def pairs_loss(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer: Any,
               pairs: Sequence[dict], beta: float) -> torch.Tensor:
    """The DPO loss of ``policy`` on a batch of pairs, with gradients: what
    :func:`workbook.training.train` minimises as its ``loss_fn`` in DPO training."""
    return dpo_loss(*pair_logps(policy, reference, tokenizer, pairs), beta)[0]


def dpo_step(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer: Any,
             pairs: Sequence[dict], optimizer: torch.optim.Optimizer, beta: float) -> float:
    """One optimizer step of DPO on a batch of pairs (the workbook's update,
    :func:`workbook.training.backward_step`, gradient norm clipped to 1); returns the loss."""
    policy.train()
    loss = pairs_loss(policy, reference, tokenizer, pairs, beta)
    backward_step(loss, optimizer, params=list(policy.parameters()), clip=1.0)
    return loss.item()


@torch.no_grad()
def reward_stats(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer: Any,
                 pairs: Sequence[dict], beta: float, batch_size: int = 64) -> dict[str, float]:
    """On (held-out) pairs: the DPO loss, mean reward margin, implicit reward accuracy, and the
    mean implicit reward of the chosen and of the rejected answers (below 0: that answer is now
    less likely than under the reference)."""
    policy.eval()
    losses, margins, chosens = [], [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        loss, chosen, rejected = dpo_loss(*pair_logps(policy, reference, tokenizer, chunk),
                                          beta)
        losses.append(loss.item() * len(chunk))
        margins.append(chosen - rejected)
        chosens.append(chosen)
    margin, chosen = torch.cat(margins), torch.cat(chosens)
    return {"dpo_loss": sum(losses) / len(pairs), "reward_margin": margin.mean().item(),
            "reward_accuracy": (margin > 0).float().mean().item(),
            "chosen_reward": chosen.mean().item(),
            "rejected_reward": (chosen - margin).mean().item()}

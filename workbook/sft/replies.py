"""Scoring an SFT model: greedy replies to held-out prompts (exact match, prompt echo, writing
the user's turn) and teacher-forced losses on answer and prompt tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from workbook.sft.masking import (
    END,
    IGNORE_INDEX,
    USER,
    Encoded,
    collate,
    encode_chat,
    render,
    token_losses,
)
from workbook.sft.records import task_items


def answer_loss(model: torch.nn.Module, tokenizer: Any, records: Sequence[dict],
                batch_size: int = 64) -> float:
    """Mean loss on assistant tokens only (teacher forcing): the SFT evaluation loss."""
    return _policy_loss(model, tokenizer, records, "answer_only", batch_size)


def _policy_loss(model: torch.nn.Module, tokenizer: Any, records: Sequence[dict], policy: str,
                 batch_size: int) -> float:
    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(records), batch_size):
            enc = [encode_chat(r, tokenizer, policy) for r in records[start:start + batch_size]]
            batch = {k: v.to(device) for k, v in collate(enc, tokenizer.pad_token_id).items()}
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits
            total += token_losses(logits, batch["labels"]).sum().item()
            count += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return total / max(count, 1)


def generate_replies(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str],
                     max_new_tokens: int = 12, batch_size: int = 64) -> list[dict]:
    """Greedy replies to single-turn prompts: the text up to the end-of-turn token, and what
    the model writes right after it (a user turn means it learned to write the user's part)."""
    end_id = tokenizer.convert_tokens_to_ids(END)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        texts = [render([{"role": "user", "content": p}], tokenizer, add_generation_prompt=True)
                 for p in chunk]
        for row in greedy(model, [tokenizer(t, add_special_tokens=False)["input_ids"]
                                  for t in texts], max_new_tokens, tokenizer.pad_token_id):
            cut = row.index(end_id) if end_id in row else len(row)
            out.append({"reply_ids": row[:cut], "after_ids": row[cut + 1:cut + 4],
                        "reply": tokenizer.decode(row[:cut]).strip(), "stopped": cut < len(row)})
    return out


@torch.no_grad()
def greedy(model: torch.nn.Module, prompts: Sequence[list[int]], max_new_tokens: int,
           pad_id: int) -> list[list[int]]:
    """Greedy decoding of a left-padded batch, recomputing the (short) context each step.

    Without a KV cache this is O(T^2), which for replies of a dozen tokens is cheaper than
    ``generate``'s per-step bookkeeping on a CPU. Positions skip the padding.
    """
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    attn = (torch.arange(width, device=device)[None, :] >=
            torch.tensor([width - len(p) for p in prompts], device=device)[:, None]).long()
    model.eval()
    for _ in range(max_new_tokens):
        pos = (attn.cumsum(-1) - 1).clamp(min=0)                       # (B, T)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)                   # (B, 1)
        ids, attn = torch.cat([ids, nxt], 1), torch.cat([attn, torch.ones_like(nxt)], 1)
    return ids[:, width:].tolist()


def score_replies(replies: Sequence[dict], items: Sequence[tuple[str, str]],
                  tokenizer: Any, echo_ngram: int = 3) -> dict[str, float]:
    """Exact match, prompt echo and 'writes the user turn' rates over (prompt, answer) items.

    Echo: the reply copies ``echo_ngram`` consecutive tokens of the prompt (its words or the
    user marker) that are not also in the correct answer.
    """
    user_id = tokenizer.convert_tokens_to_ids(USER)
    exact = echo = user_turn = 0
    for reply, (prompt, answer) in zip(replies, items, strict=True):
        exact += reply["reply"] == answer.strip()
        prompt_ids = tokenizer(USER + prompt, add_special_tokens=False)["input_ids"]
        answer_grams = _ngrams(tokenizer(answer, add_special_tokens=False)["input_ids"],
                               echo_ngram)
        copied = _ngrams(reply["reply_ids"], echo_ngram) & _ngrams(prompt_ids, echo_ngram)
        echo += bool(copied - answer_grams) or user_id in reply["reply_ids"]
        user_turn += user_id in reply["after_ids"][:1]
    n = max(len(items), 1)
    return {"exact_match": exact / n, "prompt_echo": echo / n, "writes_user_turn": user_turn / n}


def _ngrams(ids: Sequence[int], n: int) -> set[tuple[int, ...]]:
    return {tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)}


def make_evaluator(model: torch.nn.Module, tokenizer: Any, eval_records: Sequence[dict],
                   max_new_tokens: int) -> Callable[[int], dict[str, float]]:
    """A closure measuring exact match, echo and answer/prompt-token loss on held-out records."""
    items = task_items(eval_records)
    encoded = [encode_chat(r, tokenizer, "whole_sequence") for r in eval_records]

    def evaluate(_step: int) -> dict[str, float]:
        replies = generate_replies(model, tokenizer, [p for p, _ in items], max_new_tokens)
        scores = score_replies(replies, items, tokenizer)
        scores.update(role_losses(model, encoded, tokenizer.pad_token_id))
        return scores

    return evaluate


def role_losses(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int,
                batch_size: int = 64) -> dict[str, float]:
    """Teacher-forced mean loss on answer tokens and on prompt tokens, in one forward pass.

    ``answer_loss`` is what SFT is for; ``prompt_loss`` (the user's tokens and markers) is
    what whole-sequence training also spends its steps on. ``encoded`` must label every token
    (policy ``whole_sequence``); the roles split them.
    """
    device = next(model.parameters()).device
    sums = {"response": 0.0, "prompt": 0.0}
    counts = {"response": 0, "prompt": 0}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits
            losses = token_losses(logits, batch["labels"]).cpu()   # (B, T-1), target t+1
            for row, e in enumerate(chunk):
                for role in sums:
                    mask = torch.tensor([r == role for r in e.roles[1:]])
                    sums[role] += losses[row, :len(mask)][mask].sum().item()
                    counts[role] += int(mask.sum())
    return {"answer_loss": sums["response"] / max(counts["response"], 1),
            "prompt_loss": sums["prompt"] / max(counts["prompt"], 1)}

"""Supervised fine-tuning's idea: a chat template, and the loss mask.

Pre-training and SFT use the same next-token loss; they differ only in *which* tokens carry
it. Here a conversation becomes token ids plus labels, where ``-100`` (PyTorch's
``ignore_index``) marks a token that carries no loss:

* ``whole_sequence`` - every real token, the pre-training objective applied to chat text;
* ``answer_only``    - the assistant's tokens (and the end-of-turn token that stops it);
* ``last_turn``      - only the final assistant turn of a multi-turn chat.

Padding never carries loss. The from-scratch masking (:func:`encode_chat`) is checked against
transformers' own ``apply_chat_template(..., return_assistant_tokens_mask=True)`` and the
hand-written loss (:func:`masked_lm_loss`) against ``LlamaForCausalLM(labels=...)``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from workbook.config import WorkbookError, check_choice, check_flag, check_range
from workbook.model import quiet_transformers
from workbook.sft.records import validate_record

IGNORE_INDEX = -100
POLICIES: tuple[str, ...] = ("answer_only", "whole_sequence", "last_turn")
USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
# The assistant's text and its end-of-turn token sit inside {% generation %}: transformers then
# reports them in ``assistant_masks``, which is the library's answer to "what carries loss".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}" + USER + "{{ m['content'] }}" + END +
    "{% else %}" + ASSISTANT + "{% generation %}{{ m['content'] }}" + END +
    "{% endgeneration %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def chat_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` with the chat markers as special tokens and the chat template.

    Special tokens keep the markers single tokens, so the prompt/answer boundary is always a
    token boundary (no BPE merge can straddle it).
    """
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": [USER, ASSISTANT, END]})
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": "<|pad|>"})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def render(messages: Sequence[dict], tokenizer: Any, *, add_generation_prompt: bool = False
           ) -> str:
    """The conversation as the text the model reads."""
    if isinstance(messages, str) or not isinstance(messages, Sequence) or not messages:
        raise WorkbookError(f"messages={messages!r} is not allowed; allowed: a non-empty list "
                            "of {'role': ..., 'content': ...} dicts")
    check_flag("add_generation_prompt", add_generation_prompt)
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


@dataclass(frozen=True)
class Encoded:
    """One conversation as tokens: ids, labels (``-100`` = no loss) and each token's role."""

    record_id: str
    input_ids: list[int]
    labels: list[int]
    roles: list[str]          # "prompt" or "response" per token ("pad" after collation)

    @property
    def n_loss_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def _segments(messages: Sequence[dict], tokenizer: Any) -> list[tuple[str, str, int]]:
    """(text, role, turn) pieces in template order; role is 'prompt' or 'response'."""
    pieces = [(tokenizer.bos_token or "", "prompt", -1)]
    for turn, msg in enumerate(messages):
        if msg["role"] == "user":
            pieces.append((USER + msg["content"] + END, "prompt", turn))
        else:
            pieces.append((ASSISTANT, "prompt", turn))
            pieces.append((msg["content"] + END, "response", turn))
    return [p for p in pieces if p[0]]


def encode_chat(record: dict, tokenizer: Any, policy: str = "answer_only",
                max_len: int | None = None) -> Encoded:
    """From scratch: tokenize piece by piece, label the pieces the policy trains on.

    Labels are not shifted here; the model (or :func:`masked_lm_loss`) shifts them.
    """
    check_choice("policy", policy, POLICIES)
    if max_len is not None:
        check_range("max_len", max_len, 1, 1_048_576)
    validate_record(record)
    messages = record["messages"]
    last_turn = len(messages) - 1
    ids, labels, roles = [], [], []
    segments = _segments(messages, tokenizer)
    # One batched call (tokenizers runs it in Rust); each piece is still tokenized on its own.
    pieces = tokenizer([text for text, _, _ in segments], add_special_tokens=False)["input_ids"]
    for (_text, role, turn), piece in zip(segments, pieces, strict=True):
        learn = (policy == "whole_sequence" or (role == "response" and (
            policy == "answer_only" or turn == last_turn)))
        ids += piece
        labels += piece if learn else [IGNORE_INDEX] * len(piece)
        roles += [role] * len(piece)
    if max_len is not None:
        ids, labels, roles = ids[:max_len], labels[:max_len], roles[:max_len]
    encoded = Encoded(str(record.get("id", "?")), ids, labels, roles)
    # Position 0 is never a target (nothing precedes it), so it does not count.
    if sum(label != IGNORE_INDEX for label in labels[1:]) == 0:
        raise WorkbookError(f"record {encoded.record_id!r}: no token left to learn after "
                            f"masking with policy {policy!r} (max_len={max_len}); allowed: a "
                            "record whose answer fits in max_len")
    return encoded


def library_assistant_mask(record: dict, tokenizer: Any) -> tuple[list[int], list[int]]:
    """transformers' view: (input_ids, assistant_masks) from the ``{% generation %}`` blocks."""
    validate_record(record)
    out = tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    if not any(out["assistant_masks"]):
        raise WorkbookError(f"record {record.get('id', '?')!r}: the chat template marks no "
                            "assistant tokens; allowed: a template that wraps the assistant's "
                            "turn in {% generation %} ... {% endgeneration %}")
    return list(out["input_ids"]), list(out["assistant_masks"])


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest: padding gets attention 0 and label -100. Shapes (B, T)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        attention[row, :n] = 1
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose label is not -100.

    ``logits`` (B, T, V) at position t predict token t+1, so labels shift left by one.
    """
    per_token = token_losses(logits, labels)                 # (B, T-1), 0 where ignored
    n_loss = (labels[:, 1:] != IGNORE_INDEX).sum()
    if n_loss == 0:
        raise WorkbookError("no position carries loss in this batch; allowed: at least one "
                            "label that is not -100")
    return per_token.sum() / n_loss


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position loss (B, T-1) of predicting token t+1; exactly 0 where the label is -100."""
    shift_logits = logits[:, :-1, :].float()                 # (B, T-1, V)
    shift_labels = labels[:, 1:]                             # (B, T-1)
    logp = F.log_softmax(shift_logits, dim=-1)
    keep = shift_labels != IGNORE_INDEX
    safe = shift_labels.clamp(min=0)                         # -100 is not a valid index
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(keep, nll, torch.zeros_like(nll))


def objective_table(record: dict, tokenizer: Any) -> pd.DataFrame:
    """Token by token: which tokens the pre-training objective and SFT put loss on. Position 0
    is a target of neither (nothing precedes it: the loss shifts its label away)."""
    pre = encode_chat(record, tokenizer, "whole_sequence")
    sft = encode_chat(record, tokenizer, "answer_only")
    pieces = tokenizer.convert_ids_to_tokens(pre.input_ids)
    return pd.DataFrame({
        "token": [tokenizer.convert_tokens_to_string([p]) for p in pieces],
        "role": pre.roles,
        "pre-training loss": [i > 0 and lab != IGNORE_INDEX for i, lab in enumerate(pre.labels)],
        "SFT loss": [i > 0 and lab != IGNORE_INDEX for i, lab in enumerate(sft.labels)],
    })


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Unshifted labels (B, T) as the targets of each position (B, T): position t is scored on
    token t+1, the last position on nothing (-100). What :func:`workbook.training.train` and
    ``next_token_loss`` take; the same loss as :func:`masked_lm_loss`."""
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], 1)


def prepare_model(model: torch.nn.Module, tokenizer: Any) -> tuple[torch.nn.Module, Any]:
    """The base model and its tokenizer made chat-ready: markers added, embeddings resized."""
    tok = chat_tokenizer(tokenizer)
    if model.get_input_embeddings().weight.shape[0] < len(tok):
        with quiet_transformers():   # its note on the (mean-resizing) init is no cell's output
            model.resize_token_embeddings(len(tok))
    return model, tok

"""Supervised fine-tuning: instruction data, a chat template, and the loss mask.

Pre-training and SFT use the same next-token loss; they differ only in *which* tokens carry
it. Here a conversation becomes token ids plus labels, where ``-100`` (PyTorch's
``ignore_index``) marks a token that carries no loss:

* ``whole_sequence`` - every real token, the pre-training objective applied to chat text;
* ``answer_only``    - the assistant's tokens (and the end-of-turn token that stops it);
* ``last_turn``      - only the final assistant turn of a multi-turn chat.

Padding never carries loss. The from-scratch masking (:func:`encode_chat`) is checked against
transformers' own ``apply_chat_template(..., return_assistant_tokens_mask=True)`` and the
hand-written loss (:func:`masked_lm_loss`) against ``LlamaForCausalLM(labels=...)``.

The experiment ``sft_masking`` fine-tunes the workbook's base model (``workbook.model``) on
procedurally generated tasks whose answers can be checked exactly, once with the loss on the
answers and once on the whole sequence, with the same steps, batches and learning rate.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from workbook.config import (
    WorkbookError,
    check_choice,
    check_flag,
    check_range,
    check_text,
    check_values,
    takes_rows,
)
from workbook.registry import Experiment

IGNORE_INDEX = -100
POLICIES: tuple[str, ...] = ("answer_only", "whole_sequence", "last_turn")
ROLES: tuple[str, ...] = ("user", "assistant")
CATEGORIES: tuple[str, ...] = ("qa", "story", "poem", "list", "explanation", "math", "code",
                               "safety", "chat", "task")
USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
INSTRUCTIONS_DIR = Path(__file__).resolve().parent.parent / "data" / "instructions"

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


# ------------------------------------------------------------------------ instruction records


def validate_record(record: Any, where: str = "record") -> dict:
    """Check one conversation record; a bad one raises a one-line error naming it.

    A record is ``{"id", "category", "messages": [{"role", "content"}, ...]}``: turns alternate
    user/assistant, start with the user and end with the assistant (something to learn).
    """
    if not isinstance(record, dict):
        raise WorkbookError(f"{where}: expected a JSON object, got {type(record).__name__}")
    name = f"record {record.get('id', where)!r}"
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WorkbookError(f"{name}: 'messages' must be a non-empty list of turns")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            raise WorkbookError(f"{name}: turn {i} needs a role, one of {', '.join(ROLES)}")
        if not isinstance(msg.get("content"), str) or not msg["content"].strip():
            raise WorkbookError(f"{name}: turn {i} ({msg['role']}) has empty content")
        if msg["role"] != ROLES[i % 2]:
            raise WorkbookError(f"{name}: turn {i} is {msg['role']!r}; turns must alternate "
                                "user, assistant, user, ...")
    if messages[-1]["role"] != "assistant":
        raise WorkbookError(f"{name}: no assistant turn at the end, so nothing to learn")
    if "category" in record:
        check_choice(f"{name} category", record["category"], CATEGORIES)
    return record


def load_instructions(path: str | Path | None = None) -> list[dict]:
    """The hand-written instruction set (``data/instructions/handwritten.jsonl``), checked."""
    path = Path(path) if path else INSTRUCTIONS_DIR / "handwritten.jsonl"
    if not path.exists():
        raise WorkbookError(f"instruction file {path} is missing; restore data/instructions/")
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkbookError(f"{path.name} line {line_no}: not JSON ({exc.msg})") from None
        records.append(validate_record(record, f"{path.name} line {line_no}"))
    return records


def category_counts(records: Sequence[dict]) -> pd.DataFrame:
    """How many records and turns per category: the composition of an SFT mix."""
    frame = pd.DataFrame({"category": [r.get("category", "?") for r in records],
                          "turns": [len(r["messages"]) // 2 for r in records]})
    return (frame.groupby("category", sort=False)
            .agg(records=("turns", "size"), assistant_turns=("turns", "sum")).reset_index())


def instructgpt_sizes() -> pd.DataFrame:
    """InstructGPT's dataset sizes in prompts (Ouyang et al. 2022, Table 6)."""
    rows = [("SFT", "train", "labeler", 11295), ("SFT", "train", "customer", 1430),
            ("SFT", "valid", "labeler", 1550), ("SFT", "valid", "customer", 103),
            ("RM", "train", "labeler", 6623), ("RM", "train", "customer", 26584),
            ("RM", "valid", "labeler", 3488), ("RM", "valid", "customer", 14399),
            ("PPO", "train", "customer", 31144), ("PPO", "valid", "customer", 16185)]
    return pd.DataFrame(rows, columns=["stage", "split", "source", "prompts"])


# ------------------------------------------------------------- tasks checkable by exact match

WORDS: tuple[str, ...] = ("red", "blue", "cat", "dog", "sun", "tree", "fish", "bird", "milk",
                          "book", "door", "rain", "star", "ship", "king", "cold")
LETTERS = "abcdefgh"


def _letters(rng: random.Random, low: int = 3, high: int = 5) -> list[str]:
    return [rng.choice(LETTERS) for _ in range(rng.randint(low, high))]


def _task_add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"Add: {a} + {b}", str(a + b)


def _task_reverse(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng)
    return f"Reverse: {' '.join(letters)}", " ".join(reversed(letters))


def _task_sort(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng)
    return f"Sort: {' '.join(letters)}", " ".join(sorted(letters))


def _task_last(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(WORDS, rng.randint(3, 5))
    return f"Last word: {' '.join(words)}", words[-1]


def _task_count(rng: random.Random) -> tuple[str, str]:
    words = [rng.choice(WORDS[:4]) for _ in range(rng.randint(2, 7))]
    target = rng.choice(words)
    return f"Count {target}: {' '.join(words)}", str(words.count(target))


TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "add": _task_add, "reverse": _task_reverse, "sort": _task_sort, "last": _task_last,
    "count": _task_count,
}


def task_records(tasks: Sequence[str], n: int, seed: int, *, max_turns: int = 1,
                 exclude: set[str] | None = None, prefix: str = "task") -> list[dict]:
    """``n`` conversations of 1..``max_turns`` exchanges drawn from ``tasks``.

    Every answer is exactly checkable. ``exclude`` holds prompts that must not appear (a
    held-out set), so train and test never share an item.
    """
    check_values("tasks", tasks)
    for task in tasks:
        check_choice("task", task, list(TASKS))
    check_range("n", n, 1, 1_000_000)
    check_range("seed", seed, 0, 2**63 - 1)
    check_text("prefix", prefix)
    check_range("max_turns", max_turns, 1, 8)
    rng, exclude, records = random.Random(seed), exclude or set(), []
    while len(records) < n:
        messages = []
        for _ in range(rng.randint(1, max_turns)):
            prompt, answer = _fresh_item(rng, tasks, exclude)
            messages += [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": answer}]
        records.append({"id": f"{prefix}-{seed}-{len(records)}", "category": "task",
                        "messages": messages})
    return records


def _fresh_item(rng: random.Random, tasks: Sequence[str], exclude: set[str]) -> tuple[str, str]:
    for _ in range(1000):
        prompt, answer = TASKS[rng.choice(list(tasks))](rng)
        if prompt not in exclude:
            return prompt, answer
    raise WorkbookError(f"tasks {list(tasks)}: every item drawn is in the held-out set; "
                        "allowed: a held-out set smaller than the task's item space")


# ------------------------------------------------------------------------- template and masks


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
    """Token by token: which tokens the pre-training objective and SFT put loss on."""
    pre = encode_chat(record, tokenizer, "whole_sequence")
    sft = encode_chat(record, tokenizer, "answer_only")
    pieces = tokenizer.convert_ids_to_tokens(pre.input_ids)
    return pd.DataFrame({
        "token": [tokenizer.convert_tokens_to_string([p]) for p in pieces],
        "role": pre.roles,
        "pre-training loss": [lab != IGNORE_INDEX for lab in pre.labels],
        "SFT loss": [lab != IGNORE_INDEX for lab in sft.labels],
    })


# ---------------------------------------------------------------------- model, train, evaluate


def prepare_model(model: torch.nn.Module, tokenizer: Any) -> tuple[torch.nn.Module, Any]:
    """The base model and its tokenizer made chat-ready: markers added, embeddings resized."""
    tok = chat_tokenizer(tokenizer)
    if model.get_input_embeddings().weight.shape[0] < len(tok):
        model.resize_token_embeddings(len(tok))
    return model, tok


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


def train_sft(model: torch.nn.Module, tokenizer: Any, records: Sequence[dict], *, policy: str,
              steps: int, batch_size: int, lr: float, seed: int,
              on_eval: Callable[[int], dict[str, float]] | None = None,
              eval_every: int = 0) -> pd.DataFrame:
    """AdamW on ``records`` with the policy's mask; the batch order depends only on ``seed``.

    Returns the curve: train loss every step, and ``on_eval(step)``'s metrics every
    ``eval_every`` steps (and at step 0 and the last step).
    """
    check_choice("policy", policy, POLICIES)
    device = next(model.parameters()).device
    encoded = [encode_chat(r, tokenizer, policy) for r in records]
    order = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rows: list[dict] = []

    def evaluate(step: int) -> None:
        if on_eval is not None:
            rows.extend({"step": step, "metric": k, "value": v} for k, v in on_eval(step).items())

    evaluate(0)
    for step in range(1, steps + 1):
        model.train()
        batch = collate(order.sample(encoded, batch_size), tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = masked_lm_loss(logits, batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rows.append({"step": step, "metric": "train_loss", "value": loss.item()})
        if eval_every and (step % eval_every == 0 or step == steps):
            evaluate(step)
    return pd.DataFrame(rows)


def task_items(records: Sequence[dict]) -> list[tuple[str, str]]:
    """(prompt, answer) of every exchange in single-turn task records."""
    return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in records]


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


# ----------------------------------------------------------------------- the masking experiment


@dataclass(frozen=True)
class MaskingConfig:
    """Same base model, same batches, same steps; only the loss mask differs."""

    tasks: tuple[str, ...]
    policies: tuple[str, ...]
    model_preset: str          # which base model workbook.model.load_base_model builds
    n_train: int
    n_eval: int
    max_turns: int             # training chats hold 1..max_turns exchanges
    steps: int
    batch_size: int
    lr: float
    eval_every: int
    max_new_tokens: int = 12

    def __post_init__(self) -> None:
        for task in self.tasks:
            check_choice("task", task, list(TASKS))
        for policy in self.policies:
            check_choice("policy", policy, POLICIES)
        check_choice("model_preset", self.model_preset, ("small", "full"))
        check_range("n_train", self.n_train, 8, 1_000_000)
        check_range("n_eval", self.n_eval, 4, 10_000)
        check_range("max_turns", self.max_turns, 1, 8)
        check_range("steps", self.steps, 1, 100_000)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("lr", self.lr, 1e-6, 1e-1)
        check_range("eval_every", self.eval_every, 0, 100_000)
        check_range("max_new_tokens", self.max_new_tokens, 1, 256)


def split_tasks(tasks: Sequence[str], n_train: int, n_eval: int, seed: int,
                max_turns: int) -> tuple[list[dict], list[dict]]:
    """Held-out single-turn eval records, then training chats that never contain them."""
    held_out = task_records(tasks, n_eval, seed + 1000, prefix="eval")
    banned = {p for p, _ in task_items(held_out)}
    train = task_records(tasks, n_train, seed, max_turns=max_turns, exclude=banned,
                         prefix="train")
    return train, held_out


def base_model(preset: str, seed: int, device: str | None = None) -> tuple[Any, Any]:
    """The workbook's pre-trained base model and tokenizer, made chat-ready."""
    from workbook.model import load_base_model

    model, tok = load_base_model(preset=preset, seed=seed, device=device)
    return prepare_model(model, tok)


def run_masking(cfg: MaskingConfig, seed: int) -> pd.DataFrame:
    """SFT once per policy from the same base model; curves and final scores as rows."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, held_out = split_tasks(cfg.tasks, cfg.n_train, cfg.n_eval, seed, cfg.max_turns)
    frames = []
    for policy in cfg.policies:
        torch.manual_seed(seed)
        model, tok = base_model(cfg.model_preset, seed, device)
        evaluate = make_evaluator(model, tok, held_out, cfg.max_new_tokens)
        start = time.perf_counter()
        curve = train_sft(model, tok, train, policy=policy, steps=cfg.steps,
                          batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
                          on_eval=evaluate, eval_every=cfg.eval_every)
        wall = time.perf_counter() - start
        sample = train[:500]          # enough for the mean, without re-encoding everything
        n_loss = sum(encode_chat(r, tok, policy).n_loss_tokens for r in sample)
        extra = pd.DataFrame([{"step": cfg.steps, "metric": "wall_s", "value": wall},
                              {"step": 0, "metric": "loss_tokens_per_record",
                               "value": n_loss / len(sample)}])
        frames.append(pd.concat([curve, extra]).assign(policy=policy))
        del model
    rows = pd.concat(frames, ignore_index=True)
    rows["unit"] = rows["metric"].map(_UNITS).fillna("")
    rows["tasks"] = "+".join(cfg.tasks)
    rows["model_preset"] = cfg.model_preset
    rows["source"] = "measured"
    return rows[["tasks", "model_preset", "policy", "step", "metric", "value", "unit", "source"]]


_UNITS = {"train_loss": "nats/token", "answer_loss": "nats/token", "prompt_loss": "nats/token",
          "exact_match": "fraction", "prompt_echo": "fraction", "writes_user_turn": "fraction",
          "wall_s": "s", "loss_tokens_per_record": "tokens"}

MASKING_PRESETS = {
    # Two families a 1M-parameter model starts to learn in 60 steps on a CPU (under a minute).
    "small": MaskingConfig(tasks=("add", "last"), policies=("answer_only", "whole_sequence"),
                           model_preset="small", n_train=2000, n_eval=64, max_turns=3,
                           steps=60, batch_size=16, lr=3e-3, eval_every=30,
                           max_new_tokens=6),
    "full": MaskingConfig(tasks=("add", "last", "count", "sort", "reverse"), policies=POLICIES,
                          model_preset="full", n_train=4000, n_eval=256, max_turns=3,
                          steps=600, batch_size=64, lr=1e-3, eval_every=100,
                          max_new_tokens=10),
}

EXPERIMENTS = [
    Experiment(name="sft_masking",
               summary="SFT with loss on answers only vs the whole sequence: accuracy, echo",
               notebook="09_sft", run=run_masking, presets=MASKING_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900),
]


@takes_rows
def final_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per policy: the last evaluation's metrics side by side."""
    evals = rows[rows["metric"].isin(["exact_match", "prompt_echo", "writes_user_turn",
                                      "answer_loss", "prompt_loss"])]
    last = evals[evals["step"] == evals["step"].max()]
    keys = [c for c in ("policy", "source", "device") if c in last.columns]
    return last.pivot_table(index=keys, columns="metric", values="value").reset_index()


# ------------------------------------------------------------------------------------- views


_ROLE_COLORS = {"prompt": "#dbe9f6", "response": "#fde2c8", "pad": "#eeeeee"}


def token_view_html(encoded: Encoded, tokenizer: Any, losses: Sequence[float] | None = None,
                    pad_to: int = 0) -> str:
    """Tokens as coloured boxes (prompt blue, response orange, padding grey); a bold border
    marks tokens that carry loss; ``losses`` (per token, the loss of predicting it) go in the
    tooltip and under the token."""
    import html

    cells = []
    ids = encoded.input_ids + [tokenizer.pad_token_id] * max(0, pad_to - len(encoded.input_ids))
    for i, tok_id in enumerate(ids):
        role = encoded.roles[i] if i < len(encoded.roles) else "pad"
        learn = i < len(encoded.labels) and encoded.labels[i] != IGNORE_INDEX and i > 0
        text = tokenizer.decode([tok_id]).replace(" ", "·").replace("\n", "⏎")
        loss = "" if losses is None or i == 0 or i >= len(losses) + 1 else f"{losses[i - 1]:.2f}"
        border = "2px solid #c0392b" if learn else "1px solid #bbb"
        cells.append(
            f"<span title='{html.escape(role)} · loss {loss or '-'}' style='display:inline-block;"
            f"background:{_ROLE_COLORS[role]};border:{border};margin:1px;padding:1px 3px;"
            f"font-family:monospace;font-size:12px;text-align:center'>{html.escape(text)}"
            f"<br><small style='color:#555'>{loss or '&nbsp;'}</small></span>")
    legend = ("<div style='font-size:12px'>blue: prompt · orange: response · grey: padding · "
              "red border: carries loss</div>")
    return legend + "<div style='line-height:2.2'>" + "".join(cells) + "</div>"


def masking_explorer(records: Sequence[dict], tokenizer: Any,
                     model: torch.nn.Module | None = None) -> Any:
    """Pick a conversation and a policy; the tokens redraw with the ones carrying loss marked,
    and a bar chart shows each token's loss (from ``model``, when given) with ignored ones 0."""
    from workbook import plots, widgets

    by_id = {r["id"]: r for r in records}
    fig = plots.figure("loss per token under the chosen mask", "token position",
                       "loss counted (nats)")
    fig.add_bar(x=[], y=[], name="carries loss")

    def draw(fig: Any, example: str, policy: str) -> str:
        enc = encode_chat(by_id[example], tokenizer, policy)
        losses = _model_token_losses(model, enc) if model is not None else None
        counted = [(lab != IGNORE_INDEX) * (1.0 if losses is None else losses[i - 1])
                   for i, lab in enumerate(enc.labels) if i > 0]
        fig.data[0].x = list(range(1, len(enc.labels)))
        fig.data[0].y = counted
        fig.data[0].marker.color = ["#e67e22" if r == "response" else "#5b9bd5"
                                    for r in enc.roles[1:]]
        share = enc.n_loss_tokens / len(enc.labels)
        return token_view_html(enc, tokenizer, losses) + (
            f"<p>{enc.n_loss_tokens} of {len(enc.labels)} tokens carry loss ({share:.0%}).</p>")

    return widgets.Explorer({"example": widgets.dropdown("example", list(by_id), records[0]["id"]),
                             "policy": widgets.dropdown("policy", list(POLICIES), "answer_only")},
                            draw, fig)


def _model_token_losses(model: torch.nn.Module, enc: Encoded) -> list[float]:
    device = next(model.parameters()).device
    ids = torch.tensor([enc.input_ids], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    everything = torch.tensor([enc.input_ids], device=device)   # loss on every token, for view
    return token_losses(logits, everything)[0].tolist()


@takes_rows
def curves_figure(rows: pd.DataFrame, metric: str, title: str) -> Any:
    """One metric against step, a line per policy (measured here or recorded)."""
    from workbook import plots

    part = rows[rows["metric"] == metric]
    return plots.compare(part, x="step", group="policy", title=title, x_title="SFT step",
                         y_title=f"{metric} ({part['unit'].iloc[0] if len(part) else ''})")


def final_value(rows: pd.DataFrame, policy: str, metric: str) -> float:
    """The last evaluation's ``metric`` for ``policy``; NaN when there are no such rows."""
    part = rows[(rows["policy"] == policy) & (rows["metric"] == metric)] if len(rows) else rows
    if part.empty:
        return float("nan")
    return float(part[part["step"] == part["step"].max()]["value"].mean())


def _eval_items(rows: pd.DataFrame) -> int:
    """How many held-out records each exact-match evaluation used (the rows' preset's
    ``n_eval``); 0 if unknown."""
    from workbook.results import preset_of

    cfg = MASKING_PRESETS.get(preset_of(rows, default=""))
    return int(cfg.n_eval) if cfg is not None else 0


@takes_rows
def masking_claims(rows: pd.DataFrame, where: str) -> pd.DataFrame:
    """The masking experiment's claims, verdicts computed from ``rows`` (never typed in)."""
    em = {p: final_value(rows, p, "exact_match") for p in ("answer_only", "whole_sequence")}
    ans = {p: final_value(rows, p, "answer_loss") for p in ("answer_only", "whole_sequence")}
    user = {p: final_value(rows, p, "writes_user_turn") for p in ("answer_only",
                                                                  "whole_sequence")}


    from workbook.claims import Claim, claims_table

    # Exact match is a share of n_eval held-out items: a gap under two standard errors of a
    # difference of two such shares is noise. Losses: a 2 % gap. Both stated in the table.
    n = _eval_items(rows)
    p1, p2 = em["answer_only"], em["whole_sequence"]
    em_noise = 2 * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n) if n and p1 == p1 \
        and p2 == p2 else 0.0
    return claims_table([
        Claim("answer-only loss: more exact answers at the same budget",
              "lecture (SFT section)", em["whole_sequence"], em["answer_only"], "share", where,
              abs_tol=em_noise, kind="at_least"),
        Claim("answer-only loss: lower held-out answer loss", "lecture (SFT section)",
              ans["whole_sequence"], ans["answer_only"], "nats", where,
              abs_tol=0.02 * ans["whole_sequence"] if ans["whole_sequence"] == ans[
                  "whole_sequence"] else 0.0, kind="at_most"),
        Claim("whole-sequence loss trains the model to write the prompt (user turn)",
              "lecture: 'do not train prompt echoing'", user["answer_only"],
              user["whole_sequence"], "share", where, kind="at_least",
              abs_tol=0.01),
    ])

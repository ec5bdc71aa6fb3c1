"""SFT data: hand-written instruction records (checked), and procedurally generated tasks
whose answers can be checked exactly (add, reverse, sort, last word, count)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workbook.config import WorkbookError, check_choice, check_range, check_text, check_values

ROLES: tuple[str, ...] = ("user", "assistant")
CATEGORIES: tuple[str, ...] = ("qa", "story", "poem", "list", "explanation", "math", "code",
                               "safety", "chat", "task")
INSTRUCTIONS_DIR = Path(__file__).resolve().parents[2] / "data" / "instructions"


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


def task_items(records: Sequence[dict]) -> list[tuple[str, str]]:
    """(prompt, answer) of every exchange in single-turn task records."""
    return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in records]


def split_tasks(tasks: Sequence[str], n_train: int, n_eval: int, seed: int,
                max_turns: int) -> tuple[list[dict], list[dict]]:
    """Held-out single-turn eval records, then training chats that never contain them."""
    held_out = task_records(tasks, n_eval, seed + 1000, prefix="eval")
    banned = {p for p, _ in task_items(held_out)}
    train = task_records(tasks, n_train, seed, max_turns=max_turns, exclude=banned,
                         prefix="train")
    return train, held_out

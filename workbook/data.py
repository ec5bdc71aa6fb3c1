"""The workbook's offline corpus, its byte-level BPE tokenizer and batches of token ids.

The corpus is committed under ``data/corpus/`` with a manifest (source, license, size,
sha256): the docstrings of CPython's standard library (PSF-2.0). Nothing is downloaded. The
tokenizer is trained on it with Hugging Face ``tokenizers`` and cached, like the encoded token
ids, under ``data/cache/`` (git-ignored; safe to delete, it is rebuilt in seconds).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sysconfig
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import torch

from workbook.config import WorkbookError, check_choice, check_flag, check_range

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = REPO_ROOT / "data" / "corpus"
SPLITS = ("train", "val")
VAL_FRACTION = 0.1              # the last 10 % of the token stream is held out
EOS = "<|endoftext|>"
PAD = "<|pad|>"


def cache_dir() -> Path:
    """``$WORKBOOK_CACHE`` or ``data/cache/``: trained tokenizers, token ids, base models."""
    path = Path(os.environ.get("WORKBOOK_CACHE") or REPO_ROOT / "data" / "cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive file lock, so parallel notebooks/tests build a cache entry only once."""
    lock_path = cache_dir() / f".{name}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def manifest() -> dict:
    """The corpus manifest: file, source, license, n_bytes, sha256."""
    path = CORPUS_DIR / "manifest.json"
    if not path.exists():
        raise WorkbookError(f"corpus manifest {path} is missing; restore data/corpus/ from git")
    return json.loads(path.read_text())


def corpus_path() -> Path:
    """The committed corpus file named by the manifest."""
    return CORPUS_DIR / manifest()["file"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corpus_sha256() -> str:
    return manifest()["sha256"]


def load_corpus(verify: bool = True) -> str:
    """The corpus text; with ``verify``, a missing or altered file raises ``WorkbookError``."""
    check_flag("verify", verify)
    path, expected = corpus_path(), corpus_sha256()
    if not path.exists():
        raise WorkbookError(f"corpus file {path.name} is missing from data/corpus/; "
                            "restore it with `git checkout -- data/corpus`")
    if verify and (actual := _sha256(path)) != expected:
        raise WorkbookError(f"corpus file {path.name} was altered: sha256 {actual[:12]}... "
                            f"but the manifest says {expected[:12]}...; restore it from git")
    return path.read_text(encoding="utf-8")


def load_downstream(verify: bool = True) -> str:
    """The downstream task's text (NumPy docstrings, BSD-3-Clause), checksum-verified."""
    entry = manifest()["downstream"]
    path = CORPUS_DIR / entry["file"]
    if not path.exists():
        raise WorkbookError(f"downstream file {path.name} is missing from data/corpus/; "
                            "restore it with `git checkout -- data/corpus`")
    if verify and (actual := _sha256(path)) != entry["sha256"]:
        raise WorkbookError(f"downstream file {path.name} was altered: sha256 {actual[:12]}... "
                            f"but the manifest says {entry['sha256'][:12]}...; restore it")
    return path.read_text(encoding="utf-8")


def _tokenizer_dir(vocab_size: int) -> Path:
    return cache_dir() / f"tokenizer-v{vocab_size}-{corpus_sha256()[:12]}"


def train_tokenizer(text: str, vocab_size: int):
    """Byte-level BPE (GPT-2 style): every byte is a base token, so nothing is ever unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # One "document" per docstring (they are separated by blank lines) keeps training fast.
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    return tok


@cache
def _tokenizer_file(vocab_size: int) -> Path:
    """Train (once, under a lock) and cache the tokenizer; return its tokenizer.json."""
    folder = _tokenizer_dir(vocab_size)
    with cache_lock(folder.name):
        if not (folder / "tokenizer.json").exists():
            raw = train_tokenizer(load_corpus(), vocab_size)
            tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            raw.save(str(tmp / "tokenizer.json"))
            tmp.rename(folder)
    return folder / "tokenizer.json"


def load_tokenizer(vocab_size: int = 4096):
    """A ``PreTrainedTokenizerFast`` trained on the corpus (cached; built in a few seconds).

    It has ``eos_token`` (also used as ``bos``) and a separate ``pad_token``; ``encode`` adds
    no special tokens, so ``decode(encode(text)) == text`` for any text. Each call returns a
    new object, so a caller that changes it (padding side, chat template) changes no one else's.
    """
    from transformers import PreTrainedTokenizerFast

    check_range("vocab_size", vocab_size, 512, 65536)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(_tokenizer_file(vocab_size)), eos_token=EOS, bos_token=EOS,
        pad_token=PAD, clean_up_tokenization_spaces=False, model_max_length=1 << 20)


def _all_ids(vocab_size: int) -> torch.Tensor:
    path = cache_dir() / f"ids-v{vocab_size}-{corpus_sha256()[:12]}.pt"
    with cache_lock(path.name):
        if not path.exists():
            tok = load_tokenizer(vocab_size)
            ids = tok(load_corpus(), add_special_tokens=False)["input_ids"]
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(torch.tensor(ids, dtype=torch.int64), tmp)
            tmp.rename(path)
    return torch.load(path, weights_only=True)


@cache
def _split_ids(split: str, vocab_size: int) -> torch.Tensor:
    ids = _all_ids(vocab_size)
    cut = int(len(ids) * (1 - VAL_FRACTION))
    return ids[:cut] if split == "train" else ids[cut:]


@cache
def _downstream_split(split: str, vocab_size: int) -> torch.Tensor:
    ids = load_tokenizer(vocab_size)(load_downstream(), add_special_tokens=False)["input_ids"]
    ids = torch.tensor(ids, dtype=torch.int64)
    cut = int(len(ids) * (1 - VAL_FRACTION))
    return ids[:cut] if split == "train" else ids[cut:]


def downstream_ids(split: str, vocab_size: int = 4096) -> torch.Tensor:
    """The downstream task (NumPy docstrings) in the corpus tokenizer's ids, 90/10 split."""
    check_choice("split", split, SPLITS)
    return _downstream_split(split, vocab_size).clone()


def token_ids(split: str, vocab_size: int = 4096) -> torch.Tensor:
    """The corpus as one int64 stream of token ids: ``train`` (first 90 %) or ``val``."""
    check_choice("split", split, SPLITS)
    check_range("vocab_size", vocab_size, 512, 65536)
    return _split_ids(split, vocab_size).clone()


def random_batch(ids: torch.Tensor, batch_size: int, seq_len: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of the stream: inputs ``x`` and targets ``y = x`` shifted
    by one token, both ``(batch_size, seq_len)``. Token t's target is token t+1."""
    check_range("batch_size", batch_size, 1, 4096)
    check_range("seq_len", seq_len, 1, len(ids) - 1)
    starts = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len + 1)
    windows = ids[starts[:, None] + offsets]            # (batch_size, seq_len + 1)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


# ------------------------------------------------------- the scaling sweep's larger corpus

# The workbook's corpus (CPython's docstrings, ~0.5 M tokens) is enough for the small preset.
# The full sweep needs tens of millions of token *reads* without repeating the data dozens of
# times, so it uses the source code of the local CPython standard library (same origin,
# same PSF-2.0 license, ~20x larger). It is built from the local Python's stdlib once and
# cached as token ids under data/cache/. The recorded sweep ran on CPython 3.11.7's (checksum
# below; the GPU box got that cache); another Python's stdlib works too, with a warning that its
# losses are not comparable point by point.

STDLIB_SOURCE = {"python": "3.11.7", "n_files": 1786, "n_bytes": 31561570,
                 "sha256": "6b7ef0208459508dcfbf96ee0b19b8e3af28de765c88406bd9818845e78074f3",
                 "n_train_v2048": 10_014_318}   # train tokens with the full preset's 2048 BPE
# Not every Python has all of it: Debian's python3 packages the test suite apart (the H200
# image's stdlib gave a 3.3M-token train text, a third of this one), so the GPU box gets this
# cache carried (scripts/gpu_scaling.sh refuses to record a sweep on another text).
CORPORA: tuple[str, ...] = ("docstrings", "stdlib_source")


def _stdlib_files() -> list[Path]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in lib.rglob("*.py") if "site-packages" not in p.parts)


def _stdlib_documents() -> tuple[list[str], str]:
    """Every stdlib .py file as one document, in path order, and the sha256 of their text."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    docs, digest = [], hashlib.sha256()
    for path in _stdlib_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        doc = f"# {path.relative_to(lib)}\n{text}"
        docs.append(doc)
        digest.update(doc.encode())
    return docs, digest.hexdigest()


def _warn_if_other_text(sha: str) -> None:
    """Another Python's stdlib is a different corpus: the sweep still runs (any Python 3.10-3.12
    has one), but its losses are not comparable point by point with the recorded sweep."""
    if sha != STDLIB_SOURCE["sha256"]:
        warnings.warn(f"the stdlib_source corpus here (sha256 {sha[:12]}...) is not CPython "
                      f"{STDLIB_SOURCE['python']}'s ({STDLIB_SOURCE['sha256'][:12]}...), on "
                      "which the recorded sweep ran: compare fitted exponents, not losses",
                      stacklevel=3)


def _stdlib_cache(vocab_size: int) -> Path:
    return cache_dir() / "scaling" / f"stdlib-source-v{vocab_size}"


def build_stdlib_source(vocab_size: int) -> Path:
    """Train a byte-level BPE on the stdlib source and store train/val ids (uint16).

    Every 20th file is held out: validation text comes from the same mix of modules.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = _stdlib_cache(vocab_size)
    with cache_lock(folder.name):
        if (folder / "manifest.json").exists():
            return folder
        docs, sha = _stdlib_documents()
        _warn_if_other_text(sha)
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(docs, trainer=trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        eos = tok.token_to_id(EOS)
        encoded = tok.encode_batch(docs)
        splits: dict[str, list[int]] = {"train": [], "val": []}
        for i, enc in enumerate(encoded):
            splits["val" if i % 20 == 19 else "train"].extend([*enc.ids, eos])
        folder.mkdir(parents=True, exist_ok=True)
        for split, ids in splits.items():
            np.save(folder / f"{split}.npy", np.asarray(ids, dtype=np.uint16))
        tok.save(str(folder / "tokenizer.json"))
        info = {"source": f"CPython {STDLIB_SOURCE['python']} standard library, every .py file",
                "license": "PSF-2.0", "n_files": len(docs),
                "n_bytes": sum(len(d.encode()) for d in docs), "text_sha256": sha,
                "vocab_size": vocab_size, "n_train": len(splits["train"]),
                "n_val": len(splits["val"])}
        (folder / "manifest.json").write_text(json.dumps(info, indent=2))
    return folder


def corpus_sha(corpus: str, vocab_size: int) -> str:
    """The first 12 hex digits of the sha256 of the text ``corpus`` is tokenized from (the
    sweep's rows record it: a sweep on another text is not the same experiment)."""
    check_choice("corpus", corpus, CORPORA)
    if corpus == "docstrings":
        return corpus_sha256()[:12]
    folder = build_stdlib_source(vocab_size)
    return json.loads((folder / "manifest.json").read_text())["text_sha256"][:12]


def corpus_token_ids(corpus: str, split: str, vocab_size: int) -> torch.Tensor:
    """int64 token ids of ``split`` of ``corpus`` (``docstrings``: the workbook's corpus;
    ``stdlib_source``: the scaling sweep's larger one), a CPU tensor."""
    check_choice("corpus", corpus, CORPORA)
    if corpus == "docstrings":
        return token_ids(split, vocab_size)
    folder = _stdlib_cache(vocab_size)
    if not (folder / "manifest.json").exists():
        build_stdlib_source(vocab_size)
    info = json.loads((folder / "manifest.json").read_text())
    _warn_if_other_text(info["text_sha256"])
    return torch.from_numpy(np.load(folder / f"{split}.npy").astype(np.int64))

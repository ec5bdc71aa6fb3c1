"""The Gluon forward's own source, run on the CPU in a small model of one Hopper SM.

Triton's interpreter does not run Gluon, so the kernel of :mod:`.flash_gluon` could be compiled
here but never run: whether its barriers deadlock, whether a consumer can read a K/V buffer
the producer is overwriting, whether its arithmetic is the online softmax, all waited for a
GPU. :func:`run_gluon_on_cpu` runs the kernel's *source text* (the ``@gluon.jit`` functions of
``flash_gluon.py``, not a copy) with :mod:`.gluon_model`'s stand-ins for what it calls, every
program of the launch, one seeded interleaving of its partitions each. In exact mode (float64
inputs) every ``.to(dtype)`` is a no-op and "float32" accumulators are float64, so the outputs
compare with the definition to 1e-10.

:data:`PROTOCOL_EDITS` removes or changes one line of the kernel's barrier protocol at a time;
:func:`gluon_protocol_table` runs each edited kernel and reports what the model saw go wrong: what
each barrier is there for.
"""

from __future__ import annotations
import __future__

import ast
import hashlib
import itertools
import linecache
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from workbook.attention.flash_gluon import BLOCK_M, input_problem, launch_arguments
from workbook.attention.gluon_model import (
    Descriptor,
    KernelFault,
    Machine,
    Pointer,
    kernel_globals,
)
from workbook.attention.tiled import causal_mask, reference_attention
from workbook.config import WorkbookError, check_flag, check_range

SOURCE = Path(__file__).with_name("flash_gluon.py")

# what the model runs besides the GPU's fp16/bf16 at head_dim 64/128: float64 (exact arithmetic)
MODEL_DTYPES = (torch.float64, torch.float16, torch.bfloat16)
MODEL_HEAD_DIMS = tuple(range(16, 257, 16))


# ---- the kernel's source, and one launch -------------------------------------------------


def _is_gluon_jit(node: ast.AST) -> bool:
    return any(isinstance(d, ast.Attribute) and d.attr == "jit" and
               isinstance(d.value, ast.Name) and d.value.id == "gluon"
               for d in getattr(node, "decorator_list", []))


def kernel_code(source: str | None = None):
    """The ``@gluon.jit`` functions of ``flash_gluon.py`` (or of ``source``, an edited copy of
    that file's text), compiled as plain Python with their decorators removed and their line
    numbers kept, so a fault names the kernel's own file and line."""
    text = SOURCE.read_text() if source is None else source
    filename = str(SOURCE) if source is None else f"{SOURCE} (edited)"
    if source is not None:
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    defs = [node for top in ast.parse(text).body if isinstance(top, ast.If)
            for node in top.body if isinstance(node, ast.FunctionDef) and _is_gluon_jit(node)]
    if not defs:
        raise WorkbookError(f"no @gluon.jit function in {filename}")
    for node in defs:
        node.decorator_list = []
    return compile(ast.Module(body=defs, type_ignores=[]), filename, "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)


@dataclass
class CpuRun:
    """One launch of the kernel's source in the model: its outputs and how it went."""
    out: torch.Tensor
    lse: torch.Tensor
    turns: int                      # scheduler turns, all programs together
    order: str                      # a fingerprint of who ran in which turn (the interleaving)
    trace: list | None              # (program, turn, who, what), when asked for


def run_gluon_on_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                     causal: bool = False, scale: float | None = None, block_n: int = 128,
                     stages: int = 2, pingpong: bool = False, seed: int = 0,
                     source: str | None = None, trace: bool = False) -> CpuRun:
    """Launch ``flash_gluon``'s kernel with the arguments ``flash_forward_gluon`` gives it
    (:func:`.flash_gluon.launch_arguments`, with the model's descriptors), every program of
    the grid in the model, its interleaving drawn from ``seed``. float64 inputs: exact
    arithmetic (compare with the definition); float16/bfloat16: rounded where the GPU rounds."""
    if scale is not None:
        check_range("scale", scale, 1e-6, 1e3)
    for name, flag in (("causal", causal), ("pingpong", pingpong), ("trace", trace)):
        check_flag(name, flag)
    _check_count("seed", seed, 0, 2**31 - 1)
    problem = input_problem(q, k, v, block_n, stages, dtypes=MODEL_DTYPES,
                            head_dims=MODEL_HEAD_DIMS)
    if problem:
        raise WorkbookError(problem)
    batch, heads, seq_len, _ = q.shape
    code = kernel_code(source)   # before any work: an edit that does not parse fails here
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.zeros_like(q)
    lse = torch.zeros(batch, heads, seq_len, dtype=acc)
    grid, args, constexprs = launch_arguments(
        q.contiguous(), k.contiguous(), v.contiguous(), out, Pointer(lse.view(-1)),
        scale=scale, causal=causal, store_lse=True, block_n=block_n, stages=stages,
        pingpong=pingpong, descriptor=Descriptor)
    return CpuRun(out, lse, *run_launch(grid, args, constexprs, acc=acc, seed=seed,
                                        code=code, trace=trace))


def run_launch(grid: tuple[int, ...], args: tuple, constexprs: dict, *, acc: torch.dtype,
               seed: int = 0, code=None, trace: bool = False) -> tuple[int, str, list | None]:
    """Every program of one launch of the kernel (``code``: :func:`kernel_code`'s, by default
    the file's) in the model, one after another, each under its own seeded interleaving;
    ``args`` hold the model's descriptors and pointers. Returns (scheduler turns, a
    fingerprint of the interleavings, the trace or None)."""
    code = kernel_code() if code is None else code
    events: list | None = [] if trace else None
    turns, orders = 0, []
    for program in itertools.product(*map(range, grid)):
        machine = Machine(random.Random(f"{seed}:{program[0]}:{program[1]}"), code.co_filename,
                          events)
        machine.program = program
        names = kernel_globals(machine, acc)
        exec(code, names)  # noqa: S102 - the workbook's own kernel source, see kernel_code
        names["_attn_fwd_gluon"](*args, **constexprs)
        turns += machine.steps
        orders.append(tuple(machine.order))
    return turns, hashlib.sha256(repr(orders).encode()).hexdigest()[:16], events


# ---- what each line of the protocol is there for ---------------------------------------------

_LOOP_K_READY = "            mbarrier.wait(k_ready.index(stage), (j // STAGES) & 1)\n"
_LOOP_V_READY = "            mbarrier.wait(v_ready.index(prev), ((j - 1) // STAGES) & 1)\n"
_S_WAIT = "            s, _ = warpgroup_mma_wait(1, deps=(s_tok, k_smem.index(stage)))\n"
_K_FREE = "            mbarrier.arrive(k_empty.index(stage), count=1)\n"
_O_WAIT = "            o, _, _ = warpgroup_mma_wait(0, deps=(o_tok, p_op, v_smem.index(prev)))\n"
_V_FREE = "            mbarrier.arrive(v_empty.index(prev), count=1)\n"

# (what the edit does, the kernel's text, what it becomes): one change to flash_gluon.py each
PROTOCOL_EDITS: tuple[tuple[str, str, str], ...] = (
    ("producer: no wait for a K buffer to be empty",
     "            mbarrier.wait(k_empty.index(stage), phase ^ 1)\n", ""),
    ("producer: no wait for a V buffer to be empty",
     "            mbarrier.wait(v_empty.index(stage), phase ^ 1)\n", ""),
    ("producer: waits for parity `phase`, forgetting that a fresh barrier passes parity 1",
     "mbarrier.wait(k_empty.index(stage), phase ^ 1)",
     "mbarrier.wait(k_empty.index(stage), phase)"),
    ("producer: expects the bytes of one Q half, not two",
     "mbarrier.expect(q_bar, 2 * desc_q.block_type.nbytes)",
     "mbarrier.expect(q_bar, desc_q.block_type.nbytes)"),
    ("K buffers free after one warpgroup's arrival, not both",
     "mbarrier.init(k_empty.index(i), count=2)", "mbarrier.init(k_empty.index(i), count=1)"),
    ("consumer: no wait for K_j to land", _LOOP_K_READY, ""),
    ("consumer: no wait for V_(j-1) to land", _LOOP_V_READY, ""),
    ("consumer: K_j freed before S_j is retired", _S_WAIT + _K_FREE, _K_FREE + _S_WAIT),
    ("consumer: V_(j-1) freed before P·V is retired", _O_WAIT + _V_FREE, _V_FREE + _O_WAIT),
    ("consumer: P not kept alive (not in the wait's deps) while P·V reads it",
     _O_WAIT, "            o, _ = warpgroup_mma_wait(0, deps=(o_tok, v_smem.index(prev)))\n"),
    ("consumer: waits for 2 products outstanding, not 1, before using S_j",
     "warpgroup_mma_wait(1, deps=(s_tok", "warpgroup_mma_wait(2, deps=(s_tok"),
    ("consumer: no fence between storing O and the TMA store",
     "        fence_async_shared()\n", ""),
    ("consumer: returns without waiting for its TMA store", "        tma.store_wait(0)\n", ""),
    ("pingpong: both warpgroups wait for the other to go first",
     "(n & 1) ^ (1 - WG)", "(n & 1)"),
)


def edited_source(edit: tuple[str, str, str]) -> str:
    """flash_gluon.py's text with one of :data:`PROTOCOL_EDITS` applied (its text must be
    there exactly once: an edit that no longer matches the kernel is an error, not a no-op)."""
    _, old, new = edit
    text = SOURCE.read_text()
    if text.count(old) != 1:
        raise WorkbookError(f"the edit {edit[0]!r} matches flash_gluon.py "
                            f"{text.count(old)} times, not once")
    return text.replace(old, new)


def _check_count(name: str, value, low: int, high: int) -> None:
    check_range(name, value, low, high)
    if not isinstance(value, int):
        raise WorkbookError(f"{name}={value!r}; allowed: an integer {low} to {high}")


def _inputs(seq_len: int, head_dim: int = 32, heads: int = 1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(1, heads, seq_len, head_dim, generator=gen, dtype=torch.float64)
            .to(dtype) for _ in range(3)]


def _definition(q, k, v, causal: bool):
    """The definition's O (:func:`.tiled.reference_attention`) and its log-sum-exp per row."""
    s = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if causal:
        s = s.masked_fill(causal_mask(q.shape[-2], q.device), float("-inf"))
    return reference_attention(q, k, v, causal=causal), torch.logsumexp(s, -1)


def gluon_on_cpu_table(seeds: int = 3, seq_len: int = 512):
    """Every configuration of the kernel (tile width, ring depth, pingpong, causal), run in
    the model under ``seeds`` interleavings each: its largest error against the definition
    (float64), and any fault the model saw."""
    import pandas as pd

    _check_count("seeds", seeds, 1, 50)
    _check_count("seq_len", seq_len, BLOCK_M, 2048)
    q, k, v = _inputs(seq_len)
    rows = []
    for causal in (False, True):
        o_ref, lse_ref = _definition(q, k, v, causal)
        for block_n in (64, 128):
            for stages in (2, 3):
                for pingpong in (False, True):
                    row = {"causal": causal, "block_n": block_n, "stages": stages,
                           "pingpong": pingpong, "seeds": 0, "distinct interleavings": 0,
                           "max |O - definition|": 0.0, "max |lse - definition|": 0.0,
                           "fault": ""}
                    orders = set()
                    for seed in range(seeds):
                        try:
                            run = run_gluon_on_cpu(q, k, v, causal=causal, block_n=block_n,
                                                   stages=stages, pingpong=pingpong, seed=seed)
                        except KernelFault as fault:
                            row["fault"] = f"seed {seed}: {fault}"
                            break
                        row["seeds"] += 1
                        orders.add(run.order)
                        row["distinct interleavings"] = len(orders)
                        row["max |O - definition|"] = max(row["max |O - definition|"],
                                                          (run.out - o_ref).abs().max().item())
                        row["max |lse - definition|"] = max(
                            row["max |lse - definition|"], (run.lse - lse_ref).abs().max().item())
                    rows.append(row)
    return pd.DataFrame(rows)


def gluon_protocol_table(seeds: int = 8, seq_len: int = 512):
    """Each of :data:`PROTOCOL_EDITS` applied alone, the edited kernel run under up to
    ``seeds`` interleavings (pingpong, ring of 2, 64-wide tiles): the first fault the model
    reports, in its words, or how far the outputs moved when none is seen."""
    import pandas as pd

    _check_count("seeds", seeds, 1, 50)
    _check_count("seq_len", seq_len, BLOCK_M, 2048)
    q, k, v = _inputs(seq_len)
    o_ref, _ = _definition(q, k, v, False)
    rows = []
    for edit in PROTOCOL_EDITS:
        source = edited_source(edit)
        row = {"edit": edit[0], "seeds run": 0, "fault seen": "none",
               "max |O - definition|": 0.0}
        for seed in range(seeds):
            row["seeds run"] += 1
            try:
                run = run_gluon_on_cpu(q, k, v, block_n=64, stages=2, pingpong=True,
                                       seed=seed, source=source)
            except KernelFault as fault:
                row["fault seen"] = str(fault).split(": ", 1)[1]
                row["max |O - definition|"] = float("nan")
                break
            row["max |O - definition|"] = max(row["max |O - definition|"],
                                              (run.out - o_ref).abs().max().item())
        rows.append(row)
    return pd.DataFrame(rows)


def gluon_trace_table(seed: int = 0, turns: int = 40, pingpong: bool = True):
    """One interleaving, turn by turn, of the first program (query rows 0-127 of 512, tiles of
    64 keys, a ring of 2; bfloat16 and head_dim 128, so the bytes each barrier expects are the
    GPU's): what each partition and the copy engine did in each turn, one column each, for the
    first ``turns`` turns."""
    import pandas as pd

    _check_count("turns", turns, 1, 2000)
    check_flag("pingpong", pingpong)
    q, k, v = _inputs(512, head_dim=128, dtype=torch.bfloat16)
    run = run_gluon_on_cpu(q, k, v, block_n=64, stages=2, pingpong=pingpong, seed=seed,
                           trace=True)
    cells: dict[tuple[int, str], list[str]] = {}
    for program, turn, who, what in run.trace:
        if program == (0, 0) and 0 < turn <= turns:
            cells.setdefault((turn, who), []).append(what)
    table = pd.Series({key: "; ".join(found) for key, found in cells.items()}).unstack()
    table = table.reindex(columns=["producer", "copy engine", "consumer 0", "consumer 1"])
    return table.fillna("").rename_axis(index="turn", columns=None)

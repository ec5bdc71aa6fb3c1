"""Measuring attention: time, extra peak memory, bytes saved for the backward, HBM bytes.

A :class:`Case` is one configuration (variant, shape, dtype, causal, fwd or fwd+bwd); every
function here turns cases into tidy rows, and a case that fails (out of memory, a variant
that cannot run here) becomes rows with its ``status``, never a lost sweep. HBM bytes are
counted by Nsight Compute through ``workbook.profiling``'s ncu harness.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from workbook import profiling
from workbook.attention.io_model import MODES, flops, io_bytes
from workbook.attention.variants import DTYPES, VARIANTS, attention, unsupported
from workbook.config import WorkbookError, check_choice, check_range
from workbook.hardware import torch_device

__all__ = ["Case", "make_inputs", "make_step", "WARM_SEQ_LEN", "warm_triton", "saved_bytes",
           "free_memory", "time_and_memory", "UNITS", "row", "failure_rows", "measure_cases",
           "ncu_child", "measure_hbm", "hbm_rows", "predicted_hbm_rows"]


@dataclass(frozen=True)
class Case:
    """One measured configuration."""

    variant: str
    seq_len: int
    head_dim: int = 128
    batch: int = 1
    n_heads: int = 16
    dtype: str = "bfloat16"
    causal: bool = False
    mode: str = "fwd"

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("mode", self.mode, MODES)
        check_range("seq_len", self.seq_len, 1, 131072)
        check_range("head_dim", self.head_dim, 8, 256)
        check_range("batch", self.batch, 1, 4096)
        check_range("n_heads", self.n_heads, 1, 1024)
        check_choice("causal", self.causal, (False, True))

    @property
    def params(self) -> dict:
        return asdict(self)



def make_inputs(case: Case, seed: int, device: torch.device | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v and an upstream gradient dO: standard normal, never all zeros."""
    device = device or torch_device()
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (case.batch, case.n_heads, case.seq_len, case.head_dim)
    dtype = DTYPES[case.dtype]
    q, k, v, dout = (torch.randn(shape, generator=gen, device=device).to(dtype)
                     for _ in range(4))
    return q, k, v, dout


def make_step(case: Case, seed: int = 0, tuned: bool = True) -> Callable[[], None]:
    """A closure running the case once (forward, or forward+backward) on fresh inputs;
    ``tuned=False``: the Triton kernel's fixed tiles (:func:`.variants.attention`)."""
    q, k, v, dout = make_inputs(case, seed)
    reason = unsupported(case.variant, q.device.type, case.dtype, case.head_dim)
    if reason:
        raise WorkbookError(reason)
    if case.mode == "fwd":
        def step() -> None:
            with torch.no_grad():
                attention(q, k, v, variant=case.variant, causal=case.causal, tuned=tuned)
        return step
    for t in (q, k, v):
        t.requires_grad_(True)

    def step_bwd() -> None:
        for t in (q, k, v):
            t.grad = None  # fresh gradients each call: no accumulation kernel in the region
        attention(q, k, v, variant=case.variant, causal=case.causal, tuned=tuned).backward(dout)
    return step_bwd


# The length the warm-up runs whole-tile cases at: whole 128-row tiles, as the Hopper kernels
# need, and a length no preset measures, so the autotuner's pick that Triton stores for it
# (per length) is never the pick a measured length reads back.
WARM_SEQ_LEN = 256


def warm_triton(cases: Iterable[Case], seed: int = 0, tuned: bool = True) -> int:
    """Compile the Triton kernels that ``cases`` will launch, by running each once, small: one
    sequence of the case's heads, and :data:`WARM_SEQ_LEN` tokens where its length is whole
    128-row tiles. The integers the kernels see keep their divisibility by 16 (what Triton
    specialises a binary on), so the measured run can load these binaries from Triton's disk
    cache instead of compiling them (on a fresh H200 at 258327b9a1c0, all 61 that 07 needs;
    CONTRIBUTING has the history). ``workbook prepare`` runs it through the experiments'
    ``warm_up``. Returns how many cases ran: 0 without a GPU and Triton."""
    if not (torch.cuda.is_available() and profiling.triton_available()):
        return 0
    small = {replace(c, batch=1, seq_len=WARM_SEQ_LEN if c.seq_len % 128 == 0 else c.seq_len)
             for c in cases if c.variant == "triton"
             and unsupported(c.variant, "cuda", c.dtype, c.head_dim) is None}
    for case in sorted(small, key=str):
        make_step(case, seed, tuned)()
    torch.cuda.synchronize()
    free_memory()
    return len(small)


def saved_bytes(case: Case, seed: int = 0) -> int:
    """Bytes autograd keeps for the backward, beyond the inputs q, k, v themselves.

    Counted with ``saved_tensors_hooks``: each distinct storage once. Vanilla keeps P (N²);
    FlashAttention keeps O and the log-sum-exp (N·d + N).
    """
    q, k, v, _ = make_inputs(case, seed)
    reason = unsupported(case.variant, q.device.type, case.dtype, case.head_dim)
    if reason:
        raise WorkbookError(reason)
    for t in (q, k, v):
        t.requires_grad_(True)
    inputs = {t.untyped_storage().data_ptr() for t in (q, k, v)}
    seen: dict[int, int] = {}
    kept: list[torch.Tensor] = []  # alive until counted, so no address is reused meanwhile

    def pack(t: torch.Tensor) -> None:
        # Return nothing to the graph: a pack hook that hands back an op's own output makes a
        # reference cycle through C++ that the garbage collector cannot free (a leak of P).
        storage = t.untyped_storage()
        if storage.data_ptr() not in inputs:
            seen[storage.data_ptr()] = storage.nbytes()
        kept.append(t)

    def unpack(_: None) -> torch.Tensor:
        raise WorkbookError("saved_bytes only counts; it never runs the backward")

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = attention(q, k, v, variant=case.variant, causal=case.causal)
    kept.clear()
    del out
    return int(sum(seen.values()))


def free_memory() -> None:
    """Collect garbage and return cached GPU memory: between cases of a sweep."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def time_and_memory(case: Case, seed: int, repeats: int) -> dict[str, float]:
    """Median ms (CUDA events), TFLOP/s and extra peak memory (GB above the inputs); on a GPU
    also the GPU's own time and TFLOP/s (``gpu_time``, ``gpu_throughput``: calls queued, so
    the host's Python launch hides under the previous call, as kernel benchmarks time):
    ``time`` is what one call costs a reader, ``gpu_time`` what the kernels cost."""
    step = make_step(case, seed)
    step()  # warm-up: compilation, autotuning, cuDNN plans
    profiling.reset_peak()
    before = profiling.allocated_bytes()
    step()
    extra = profiling.peak_bytes() - before
    ms = profiling.time_ms(step, warmup=1, repeats=repeats)
    work = flops(case.seq_len, case.head_dim, batch=case.batch, n_heads=case.n_heads,
                 causal=case.causal, mode=case.mode)
    out = {"time": ms, "throughput": work / (ms * 1e-3) / 1e12, "extra_peak_memory": extra / 1e9}
    if torch_device().type == "cuda":
        gpu_ms = profiling.time_ms(step, warmup=1, repeats=repeats, queued=True)
        out.update(gpu_time=gpu_ms, gpu_throughput=work / (gpu_ms * 1e-3) / 1e12)
    return out


UNITS = {"time": "ms", "throughput": "TFLOP/s", "gpu_time": "ms", "gpu_throughput": "TFLOP/s",
         "extra_peak_memory": "GB", "hbm_bytes": "GB", "hbm_read": "GB", "hbm_write": "GB",
         "saved_bytes": "MB", "flops": "GFLOP", "rel_error": "", "rel_error_grad": ""}


def row(case: Case, metric: str, value: float, *, source: str = "measured",
        status: str = "ok", error: str = "", **extra) -> dict:
    """One tidy row: the case's parameters, ``extra`` columns, then the metric and its value."""
    return {**case.params, **extra, "metric": metric, "value": value,
            "unit": UNITS.get(metric, ""), "source": source, "status": status, "error": error}


def failure_rows(case: Case, metrics: Iterable[str], exc: BaseException) -> list[dict]:
    """A case that failed, one row per metric: ``oom``, ``unsupported`` (a WorkbookError) or
    ``error``, with the reason in one line."""
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        status, error = "oom", "out of memory"
    elif isinstance(exc, WorkbookError):
        status, error = "unsupported", str(exc)
    else:
        status, error = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return [row(case, m, math.nan, status=status, error=error) for m in metrics]


def measure_cases(cases: Iterable[Case], seed: int, repeats: int) -> list[dict]:
    """Time and memory per case; an OOM or an unsupported variant becomes rows, not a crash."""
    rows: list[dict] = []
    for case in cases:
        try:
            result = time_and_memory(case, seed, repeats)
            rows += [row(case, metric, value) for metric, value in result.items()]
        except Exception as exc:  # noqa: BLE001 - a failed case is a row, not a lost sweep
            rows += failure_rows(case, ("time", "throughput", "extra_peak_memory"), exc)
        free_memory()
    return rows


# --------------------------------------------------------------------- HBM bytes with ncu


def ncu_child(spec_path: str, out_path: str) -> None:
    """Runs under ncu (:func:`workbook.profiling.run_ncu`). Per case: warm up outside the
    counted region, then run the case once inside :func:`workbook.profiling.ncu_region`."""
    spec = json.loads(Path(spec_path).read_text())
    report = []
    for params in spec["cases"]:
        case, entry = Case(**params), {"profiled": False, "status": "ok", "error": ""}
        try:
            step = make_step(case, spec["seed"])
            step()
            step()
            with profiling.ncu_region():
                entry["profiled"] = True
                step()
        except Exception as exc:  # noqa: BLE001 - a failed case is a row, not a lost sweep
            failed = failure_rows(case, ["x"], exc)[0]
            entry.update(status=failed["status"], error=failed["error"])
        step = None
        free_memory()
        report.append(entry)
    Path(out_path).write_text(json.dumps(report))


def measure_hbm(cases: list[Case], seed: int = 0, timeout_s: float = 600) -> list[dict]:
    """HBM bytes read and written per case, counted by ncu in one child process."""
    reason = profiling.ncu_unavailable()
    if reason:
        return [r for c in cases for r in failure_rows(c, ("hbm_bytes",), WorkbookError(reason))]
    report, text, tail = profiling.run_ncu(
        "workbook.attention.measure:ncu_child",
        {"seed": seed, "cases": [c.params for c in cases]}, timeout_s)
    return hbm_rows(cases, report, profiling.parse_ncu_csv(text), text + tail)


def hbm_rows(cases: list[Case], report: list[dict] | None, kernels: list[dict],
             log: str) -> list[dict]:
    """Rows of HBM GB per case from the child's ``report`` (one entry per case: profiled,
    status, error) and ncu's kernels in launch order (split into cases by the marker)."""
    if report is None:
        err = "ncu run produced no report: " + " ".join(log.split())[-200:]
        return [row(c, "hbm_bytes", math.nan, status="error", error=err) for c in cases]
    segments = iter(profiling.split_by_marker(kernels))
    n_profiled = sum(e["profiled"] for e in report)
    counted = len(profiling.split_by_marker(kernels)) == n_profiled
    rows: list[dict] = []
    for case, entry in zip(cases, report, strict=True):
        seg = next(segments, None) if entry["profiled"] else None
        if entry["status"] != "ok":
            rows += [row(case, m, math.nan, status=entry["status"], error=entry["error"])
                     for m in ("hbm_bytes", "hbm_read", "hbm_write")]
            continue
        if not counted or seg is None:
            err = ("ERR_NVGPUCTRPERM: no counter permission" if "ERR_NVGPUCTRPERM" in log else
                   f"ncu returned {len(kernels)} kernels for {n_profiled} profiled cases")
            rows += [row(case, "hbm_bytes", math.nan, status="error", error=err)]
            continue
        read, write = sum(k["read"] for k in seg), sum(k["write"] for k in seg)
        rows += [row(case, "hbm_bytes", (read + write) / 1e9, kernels=len(seg)),
                 row(case, "hbm_read", read / 1e9, kernels=len(seg)),
                 row(case, "hbm_write", write / 1e9, kernels=len(seg))]
    return rows


def predicted_hbm_rows(case: Case, block_m: int = 128) -> list[dict]:
    """The analytic model's bytes for a case, one row per algorithm, source 'predicted'."""
    size = DTYPES[case.dtype].itemsize
    rows = []
    for algorithm in ("minimum", "vanilla", "flash_no_l2"):
        value = io_bytes(algorithm, case.seq_len, case.head_dim, batch=case.batch,
                         n_heads=case.n_heads, dtype_bytes=size, mode=case.mode, block_m=block_m)
        rows.append({**case.params, "variant": f"model: {algorithm}", "metric": "hbm_bytes",
                     "value": value / 1e9, "unit": "GB", "source": "predicted", "status": "ok",
                     "error": ""})
    return rows

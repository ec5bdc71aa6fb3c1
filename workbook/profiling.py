"""Timing and memory measurement helpers shared by every experiment.

GPU work is asynchronous: time with CUDA events after a warm-up and take the median of
repeats. On a CPU, a monotonic clock does the same job. Below those: whether Triton kernels can
run here (and its interpreter on a CPU), and the one Nsight Compute harness that counts the HBM
bytes a region of GPU work moves.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from workbook.config import WorkbookError, check_range


def time_ms(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 10,
            device: torch.device | str | None = None, queued: bool = False) -> float:
    """Median wall time of ``fn()`` in milliseconds, warm-up excluded.

    On a GPU each call is timed alone by default: the clock starts, the host prepares and
    launches the work, the GPU runs it, the clock stops; Python's launch overhead counts, as a
    reader calling ``fn`` once sees it. ``queued=True`` enqueues all repeats before waiting, so
    the host prepares call i+1 while the GPU runs call i: what is left is the GPU's time per
    call (how kernel benchmarks such as ``triton.testing.do_bench`` time), and the difference
    of the two is the host's share. On a CPU both are the same clock.
    """
    device = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    for _ in range(warmup):
        fn()
    samples = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            if not queued:
                end.synchronize()
            events.append((start, end))
        torch.cuda.synchronize(device)
        samples = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def time_ms_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 3,
                        repeats: int = 10, device: torch.device | str | None = None
                        ) -> dict[str, float]:
    """Median wall time (ms) of each of ``fns``, timed in turn: round r times every function
    once, in an order rotated by r. Timed one after the other instead (all of A, then all of
    B), a drift of the clocks or the caches in between reads as a difference of A and B;
    interleaved, each sees the same conditions."""
    if not fns:
        raise WorkbookError("fns is empty; allowed: a dict of at least one name -> function")
    check_range("warmup", warmup, 0, 10_000)
    check_range("repeats", repeats, 1, 100_000)
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(time_ms(fns[name], warmup=0, repeats=1, device=device))
    return {name: statistics.median(values) for name, values in samples.items()}


def _on_cuda(device: torch.device | str | None) -> bool:
    """A CUDA device is asked about (None: the current one, if there is a GPU)."""
    if not torch.cuda.is_available():
        return False
    return device is None or torch.device(device).type == "cuda"


def reset_peak(device: torch.device | str | None = None) -> None:
    """Start a new peak-memory window (nothing to do for a CPU device)."""
    if _on_cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device | str | None = None) -> int:
    """Peak bytes held by PyTorch's allocator since the last :func:`reset_peak` (0 on CPU)."""
    if not _on_cuda(device):
        return 0
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def allocated_bytes(device: torch.device | str | None = None) -> int:
    if not _on_cuda(device):
        return 0
    torch.cuda.synchronize(device)
    return int(torch.cuda.memory_allocated(device))


# ----------------------------------------------------------- Triton: present, interpreted


def triton_available() -> bool:
    """Triton is importable (it does not say a GPU is present)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """``TRITON_INTERPRET=1``: Triton kernels run on the CPU through Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreter_numpy_fix() -> None:
    """Triton 3.6's interpreter turns a loop bound into ``int(array([x]))``, which NumPy >= 2.4
    refuses (only 0-d arrays convert). Patch its tensor ``__index__`` to take the one element.
    Interpreter only; compiled kernels never see this. Every kernel launch of the workbook
    calls it first when :func:`interpreting`."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_workbook_fixed", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._workbook_fixed = True
    interpreter._patch_lang_tensor = patched


# ------------------------------------------------- Nsight Compute: HBM bytes per region
#
# The one ncu harness: :func:`run_ncu` runs a child function under ``ncu`` with profiling off;
# the child wraps each region it wants counted in :func:`ncu_region` (a marker kernel, then the
# work); :func:`parse_ncu_csv` and :func:`split_by_marker` turn ncu's CSV into one list of
# kernels (name, DRAM bytes read and written) per region.

NCU_METRICS = ("dram__bytes_read.sum", "dram__bytes_write.sum")
MARKER = "spin_kernel"  # torch.cuda._sleep's kernel: separates one region from the next


def ncu_path() -> str | None:
    """Where Nsight Compute's ``ncu`` is, or None."""
    return shutil.which("ncu") or next(
        (p for p in ("/usr/local/cuda/bin/ncu", "/opt/nvidia/nsight-compute/ncu")
         if os.path.exists(p)), None)


def ncu_status() -> str:
    """'missing', 'present, counters readable' or 'present, counters denied' (no GPU: 'no GPU')."""
    if ncu_path() is None:
        return "missing"
    if not torch.cuda.is_available():
        return "present, no GPU"
    try:
        text = Path("/proc/driver/nvidia/params").read_text()
    except OSError:
        text = ""
    restricted = "RmProfilingAdminOnly: 1" in text
    if restricted and os.geteuid() != 0:
        return "present, counters need root (RmProfilingAdminOnly=1)"
    return "present, counters readable"


def ncu_unavailable() -> str | None:
    """Why HBM bytes cannot be counted here, or None."""
    if not torch.cuda.is_available():
        return "HBM counters need an NVIDIA GPU with Nsight Compute (ncu); none here"
    if ncu_path() is None:
        return "Nsight Compute (ncu) is not installed; HBM bytes are shown from recorded rows"
    status = ncu_status()
    return None if status == "present, counters readable" else f"ncu {status}"


@contextmanager
def ncu_region() -> Iterator[None]:
    """Count the GPU work inside the ``with`` block (warm it up before). The profiler is
    started process-wide, so the autograd thread's backward kernels are included, which an
    NVTX range pushed on this thread would miss; the marker kernel opens the region."""
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    try:
        torch.cuda._sleep(1000)
        yield
        torch.cuda.synchronize()
    finally:
        torch.cuda.profiler.stop()


def run_ncu(child: str, spec: dict, timeout_s: float = 600) -> tuple[object, str, str]:
    """Run ``child`` ("module:function", called as ``function(spec_path, out_path)``) in a
    fresh Python under ncu, with ``spec`` as JSON in ``spec_path``. Returns (what the child
    wrote to ``out_path`` as JSON, or None; ncu's CSV text; the tail of ncu's output)."""
    module, func = child.split(":")
    with tempfile.TemporaryDirectory(prefix="workbook-ncu-") as tmp:
        spec_path, out, log = (Path(tmp) / n for n in ("spec.json", "out.json", "ncu.csv"))
        spec_path.write_text(json.dumps(spec))
        cmd = [ncu_path(), "--profile-from-start", "off", "--target-processes", "all",
               "--metrics", ",".join(NCU_METRICS), "--csv", "--print-units", "base",
               "--log-file", str(log), sys.executable, "-c",
               # gc.freeze(), as runner's children do: the child's cleanups between cases
               # need not walk every object torch's import made
               f"import gc; from {module} import {func}; gc.freeze(); "
               f"{func}({str(spec_path)!r}, {str(out)!r})"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parent.parent),
                        os.environ.get("PYTHONPATH", "")) if p)}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
            tail = (proc.stdout + proc.stderr)[-300:]
            stdout = proc.stdout
        except subprocess.TimeoutExpired:
            tail, stdout = f"ncu timed out after {timeout_s:g} s", ""
        report = json.loads(out.read_text()) if out.exists() else None
        text = log.read_text(errors="replace") if log.exists() else ""
        text = text if '"ID"' in text else stdout  # older ncu print results to stdout
    return report, text, tail


def parse_ncu_csv(text: str) -> list[dict]:
    """Kernels in launch order: [{'name', 'read', 'write'}] from ``ncu --csv`` output."""
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]
    if not lines:
        return []
    kernels: dict[int, dict] = {}
    for rec in csv.DictReader(io.StringIO("\n".join(lines))):
        if not rec.get("ID", "").strip().isdigit():
            continue  # a units row
        kernel = kernels.setdefault(int(rec["ID"]), {"name": rec.get("Kernel Name", ""),
                                                     "read": 0.0, "write": 0.0})
        pairs = ([(rec["Metric Name"], rec["Metric Value"], rec.get("Metric Unit", "byte"))]
                 if "Metric Name" in rec else [(m, rec.get(m, ""), "byte") for m in NCU_METRICS])
        for name, value, unit in pairs:
            key = {"dram__bytes_read.sum": "read", "dram__bytes_write.sum": "write"}.get(name)
            if key and value:
                kernel[key] += float(value.replace(",", "")) * _unit_scale(unit)
    return [kernels[i] for i in sorted(kernels)]


def _unit_scale(unit: str) -> float:
    unit = (unit or "byte").strip().lower()
    return {"byte": 1, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12}.get(unit, 1.0)


def split_by_marker(kernels: list[dict]) -> list[list[dict]]:
    """Kernels after each marker kernel, one list per :func:`ncu_region`."""
    segments: list[list[dict]] = []
    for kernel in kernels:
        if MARKER in kernel["name"]:
            segments.append([])
        elif segments:
            segments[-1].append(kernel)
    return segments


# ---------------------------------------------- a kernel's registers and spills, offline

def parse_res_usage(text: str) -> dict[str, dict[str, int]]:
    """``cuobjdump -res-usage`` output → {function: {"REG": .., "STACK": .., "LOCAL": .., ..}}.
    STACK or LOCAL above 0 means the compiler spilled registers to local memory."""
    found: dict[str, dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Function "):
            name = line.removeprefix("Function ").rstrip(":")
        elif name and line.startswith("REG:"):
            found[name] = {k: int(v) for k, v in (f.split(":") for f in line.split())
                           if v.isdigit()}
    return found


def kernel_resources(fn, signature: dict[str, str], constexprs: dict, *, num_warps: int,
                     num_stages: int = 3, arch: int = 90, maxnreg: int | None = None
                     ) -> dict[str, int]:
    """Compile a Triton (or Gluon) kernel for ``sm_<arch>`` here, with no GPU needed (Triton's
    own ptxas), and read the cubin's registers per thread (at launch: a warp-specialised kernel
    moves them between its partitions later), spill bytes (STACK, LOCAL) and the shared memory
    the launch asks for. What one Triton version builds: another may allocate differently."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource
    if getattr(fn, "is_gluon", lambda: False)():
        from triton.experimental.gluon._runtime import GluonASTSource as source
    options = {"num_warps": num_warps, "num_stages": num_stages}
    if maxnreg is not None:
        options["maxnreg"] = maxnreg
    kernel = triton.compile(source(fn, signature=signature, constexprs=constexprs),
                            target=GPUTarget("cuda", arch, 32), options=options)
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        out = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True,
                             text=True, check=True).stdout
    usage = parse_res_usage(out).get(fn.__name__)
    if usage is None:
        raise WorkbookError(f"cuobjdump reported no function {fn.__name__!r}")
    return {"registers": usage["REG"], "spill_bytes": usage["STACK"] + usage.get("LOCAL", 0),
            "shared_bytes": int(kernel.metadata.shared)}

"""What this machine is, what its vendor says it can do, and what it measurably does.

Three things live here, and every MFU or roofline elsewhere uses them rather than a literal:

* :func:`detect` - the devices, their count, memory and the dtypes they support;
* :data:`DATASHEET` / :func:`datasheet` - published dense peaks keyed by device name;
* :func:`measure_roofline` - this machine's own copy bandwidth and matmul throughput.
"""

from __future__ import annotations

import importlib.util
import math
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_range, check_rows, takes_rows
from workbook.profiling import ncu_status  # the one ncu harness lives in profiling
from workbook.registry import Experiment


@dataclass(frozen=True)
class Peaks:
    """Vendor datasheet numbers: dense (no 2:4 sparsity) TFLOP/s, HBM GB/s, sizes."""

    name: str
    tflops: dict[str, float]      # dtype -> dense TFLOP/s on the matrix units
    hbm_gb_s: float
    memory_gb: float
    n_sm: int
    smem_per_sm_kb: int           # shared memory (SRAM) per SM, configurable max
    l2_mb: float
    source: str


# Dense peaks, from the vendors' datasheets / whitepapers (sparse figures are 2x these).
# Matching is by substring of torch.cuda.get_device_name(), most specific first.
DATASHEET: tuple[tuple[str, Peaks], ...] = (
    ("H100 PCIe", Peaks("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0,
                                      "fp16": 756.0, "fp8": 1513.0, "int8": 1513.0},
                        2000.0, 80, 114, 228, 50, "NVIDIA H100 datasheet (PCIe)")),
    ("H100 NVL", Peaks("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0,
                                    "fp16": 835.0, "fp8": 1670.5, "int8": 1670.5},
                       3900.0, 94, 132, 228, 50, "NVIDIA H100 datasheet (NVL)")),
    ("H100", Peaks("H100 SXM", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4,
                                "fp8": 1978.9, "int8": 1978.9},
                   3350.0, 80, 132, 228, 50, "NVIDIA H100 datasheet (SXM5)")),
    ("H200", Peaks("H200 SXM", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4,
                                "fp8": 1978.9, "int8": 1978.9},
                   4800.0, 141, 132, 228, 50, "NVIDIA H200 datasheet (SXM)")),
    ("A100-SXM4-40GB", Peaks("A100 SXM 40GB", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0,
                                                "fp16": 312.0, "int8": 624.0},
                             1555.0, 40, 108, 164, 40, "NVIDIA A100 datasheet")),
    ("A100", Peaks("A100 80GB", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0,
                                 "int8": 624.0},
                   2039.0, 80, 108, 164, 40, "NVIDIA A100 datasheet (SXM 80GB)")),
    ("L4", Peaks("L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0,
                        "fp8": 242.0, "int8": 242.0},
                 300.0, 24, 58, 100, 48, "NVIDIA L4 datasheet")),
    ("T4", Peaks("T4", {"fp32": 8.1, "fp16": 65.0, "int8": 130.0},
                 320.0, 16, 40, 64, 4, "NVIDIA T4 datasheet")),
)

MATMUL_DTYPES: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16", "fp8")


def datasheet(device_name: str) -> Peaks | None:
    """Published peaks for a device name, or None (CPUs and unknown GPUs)."""
    if not isinstance(device_name, str) or not device_name.strip():
        raise WorkbookError(f"device_name={device_name!r} must name a device, such as "
                            f"{', '.join(key for key, _ in DATASHEET)}, or a CPU")
    for key, peaks in DATASHEET:
        if key.lower() in device_name.lower():
            return peaks
    return None


@dataclass(frozen=True)
class Machine:
    device: str                   # "cuda" or "cpu"
    name: str
    n_gpus: int
    memory_gb: float
    capability: tuple[int, int] | None
    dtypes: tuple[str, ...]       # matmul dtypes with a fast path here

    @property
    def peaks(self) -> Peaks | None:
        return datasheet(self.name) if self.device == "cuda" else None


def supported_dtypes(capability: tuple[int, int] | None) -> tuple[str, ...]:
    """Matmul dtypes this device runs: tf32/bf16 from Ampere (8.0), fp8 from Ada/Hopper (8.9)."""
    if capability is None:
        return ("fp32", "bf16", "fp16")  # CPUs compute these, without tensor cores
    out = ["fp32", "fp16"]
    if capability >= (8, 0):
        out[1:1] = ["tf32", "bf16"]
    if capability >= (8, 9):
        out.append("fp8")
    return tuple(out)


GPU_MEMORY_CAP_ENV = "WORKBOOK_GPU_MEMORY_GB"


def gpu_memory_cap_gb() -> float | None:
    """The GPU memory a run may use, from ``$WORKBOOK_GPU_MEMORY_GB`` (None: the whole card).

    Set it to see how the workbook behaves on a smaller card than the one you have, e.g. 24 for
    an RTX 4090 or 16 for a T4: the runner caps every fresh process it starts at that many GB
    (:func:`apply_gpu_memory_cap`), and :func:`detect` reports the capped size.
    """
    raw = os.environ.get(GPU_MEMORY_CAP_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (1 <= value <= 10_000):  # also refuses nan and inf
        raise WorkbookError(f"{GPU_MEMORY_CAP_ENV}={raw!r} is out of range; allowed: a number "
                            "of GB from 1 to 10000, or unset for the whole card")
    return value


def apply_gpu_memory_cap() -> float | None:
    """Make this process's CUDA allocator refuse to hold more than the cap on every GPU
    (``torch.cuda.set_per_process_memory_fraction``): allocations past it raise
    ``torch.OutOfMemoryError`` as on a smaller card. Returns the cap in GB, or None."""
    cap = gpu_memory_cap_gb()
    if cap is None or not torch.cuda.is_available():
        return None
    for index in range(torch.cuda.device_count()):
        total = torch.cuda.get_device_properties(index).total_memory
        if cap * 1e9 > total:
            raise WorkbookError(f"{GPU_MEMORY_CAP_ENV}={cap:g} is out of range; allowed: 1 to "
                                f"{total / 1e9:.0f} GB on this card")
        torch.cuda.set_per_process_memory_fraction(cap * 1e9 / total, index)
    return cap


def detect() -> Machine:
    """The first device PyTorch would use, and how many GPUs there are; its memory is the
    :func:`gpu_memory_cap_gb` where one is set."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        cap = (props.major, props.minor)
        memory = props.total_memory / 1e9
        limit = gpu_memory_cap_gb()
        return Machine("cuda", props.name, torch.cuda.device_count(),
                       round(min(memory, limit or memory), 1), cap, supported_dtypes(cap))
    mem_gb = 0.0
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        pass
    name = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return Machine("cpu", name, 0, round(mem_gb, 1), None, supported_dtypes(None))


def torch_device(name: str = "auto") -> torch.device:
    """The one device choice: ``auto`` is the GPU when there is one, else the CPU."""
    check_choice("device", name, ("auto", "cuda", "cpu"))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise WorkbookError("device='cuda' but this machine has no GPU; allowed here: cpu, auto")
    return torch.device(name)


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads counted once), from /proc/cpuinfo; else os.cpu_count()."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    cores, package = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            cores.add((package, value.strip()))
    return len(cores) or os.cpu_count() or 1


def cgroup_cpus() -> float | None:
    """The CPU quota of this container (cgroup v2 ``cpu.max``), in cores; None if unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def my_cpus() -> set[int]:
    """The CPUs this process may run on (taskset, cgroup cpusets); all of them where the OS
    cannot say (macOS has no ``sched_getaffinity``)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cpu_times(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies of the CPUs ``cpus`` since boot, from /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(values)
            busy += sum(values) - values[3] - values[4]
    return busy, total


BUSY_CACHE: list[float] = []  # [measured at (monotonic s), busy cores]


def busy_cores(window_s: float = 0.3, reuse_s: float = 30.0) -> float:
    """How many of this process's CPUs other work keeps busy now (0.0 to their count).

    Sampled from /proc/stat over ``window_s`` while this process sleeps, so its own earlier
    work (which the load average still counts for a minute: a notebook kernel's previous
    cell) is not taken for someone else's. Reused for ``reuse_s``; without /proc/stat, the
    1-minute load average.
    """
    now = time.monotonic()
    if BUSY_CACHE and now - BUSY_CACHE[0] < reuse_s:
        return BUSY_CACHE[1]
    cpus = my_cpus()
    try:
        busy0, total0 = cpu_times(cpus)
        time.sleep(window_s)
        busy1, total1 = cpu_times(cpus)
        busy = len(cpus) * (busy1 - busy0) / max(1, total1 - total0)
    except (OSError, ValueError, IndexError):
        busy = os.getloadavg()[0]
    BUSY_CACHE[:] = [now, busy]
    return busy


def cpu_threads() -> int:
    """How many threads PyTorch should use for CPU work on this machine, now.

    PyTorch's default (one per core) oversubscribes a machine others are using: measured on a
    loaded 2-core box, a base-model training step took 8 s with 2 threads and 2.9 s with 1,
    because each step waits for its slowest thread. So: the cores this process may run on
    (affinity, container quota, physical cores, the least of them) minus the cores other work
    keeps busy now (:func:`busy_cores`, rounded), at least 1. ``$WORKBOOK_THREADS`` (or the
    standard ``$OMP_NUM_THREADS``) overrides the choice.
    """
    for var in ("WORKBOOK_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").strip().isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    usable = min(len(my_cpus()), physical_cores())
    quota = cgroup_cpus()
    if quota is not None:
        usable = min(usable, max(1, int(quota)))
    return max(1, usable - round(busy_cores()))


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run a block with ``n`` torch threads (default :func:`cpu_threads`), then restore the
    caller's setting: a notebook kernel's thread count is its own business."""
    before = torch.get_num_threads()
    n = cpu_threads() if n is None else n
    check_range("threads", n, 1, 4096)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def tools() -> pd.DataFrame:
    """Which optional tools are present: what decides live vs recorded in later notebooks."""
    machine = detect()
    rows = [
        ("GPUs", str(machine.n_gpus), "ZeRO/DDP/TP/PP run live with this many ranks"),
        ("ncu (Nsight Compute)", ncu_status(), "HBM traffic of attention (07)"),
        ("triton", "present" if _has("triton") else "missing", "the workbook's flash kernel"),
        ("flash_attn", "present" if _has("flash_attn") else "missing (optional)",
         "FlashAttention package variant (07)"),
        ("bitsandbytes", "present" if _has("bitsandbytes") else "missing", "NF4, QLoRA (12)"),
        ("deepspeed", "present" if _has("deepspeed") else "missing", "ZeRO stages (05)"),
        ("peft", "present" if _has("peft") else "missing", "LoRA (11, 12)"),
        ("fp8 matmul", "yes" if "fp8" in machine.dtypes else "no", "roofline, precision (08)"),
    ]
    return pd.DataFrame(rows, columns=["tool", "status", "used for"])


def describe() -> pd.DataFrame:
    """One-row-per-fact table of this machine and its software."""
    machine = detect()
    peaks = machine.peaks
    facts = {
        "device": machine.name,
        "GPUs": machine.n_gpus,
        "memory (GB)": machine.memory_gb,
        "compute capability": ".".join(map(str, machine.capability)) if machine.capability
        else "-",
        "matmul dtypes": ("fp32; on tensor cores: " + ", ".join(machine.dtypes[1:])
                          if (machine.capability or (0, 0)) >= (7, 0) else
                          ", ".join(machine.dtypes) + " (no tensor cores)"),
        "datasheet entry": peaks.source if peaks else "none (CPU or unknown GPU)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
    }
    return pd.DataFrame({"fact": list(facts), "value": [str(v) for v in facts.values()]})


# ----------------------------------------------------------------------- measured roofline


@dataclass(frozen=True)
class RooflineConfig:
    copy_mb: int            # size of the buffer copied device-to-device
    matmul_n: int           # square matmul size n x n x n
    repeats: int

    def __post_init__(self) -> None:
        check_range("copy_mb", self.copy_mb, 1, 16384)
        check_range("matmul_n", self.matmul_n, 64, 32768)
        check_range("repeats", self.repeats, 1, 1000)


ROOFLINE_PRESETS = {
    "small": RooflineConfig(copy_mb=64, matmul_n=512, repeats=5),
    "full": RooflineConfig(copy_mb=4096, matmul_n=8192, repeats=20),
}


def _matmul_fn(dtype: str, n: int, device: torch.device, gen: torch.Generator):
    """A zero-argument closure doing one n^3 matmul in ``dtype`` on random data."""
    def rand(dt: torch.dtype) -> torch.Tensor:
        return torch.randn(n, n, device=device, generator=gen).to(dt)

    if dtype in ("fp32", "tf32"):
        a, b = rand(torch.float32), rand(torch.float32)
        return lambda: torch.matmul(a, b)
    if dtype in ("bf16", "fp16"):
        dt = torch.bfloat16 if dtype == "bf16" else torch.float16
        a, b = rand(dt), rand(dt)
        return lambda: torch.matmul(a, b)
    if dtype == "fp8":
        # cuBLAS fp8 wants the second operand column-major: transpose a row-major tensor.
        a = rand(torch.float8_e4m3fn)
        b = rand(torch.float8_e4m3fn).t()
        one = torch.ones((), device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    raise WorkbookError(f"dtype={dtype!r}; allowed: {', '.join(MATMUL_DTYPES)}")


def _copy_gb_s(n_bytes: int, repeats: int, device: torch.device,
               gen: torch.Generator) -> float:
    """Device-to-device copy bandwidth; a copy reads each byte once and writes it once, and
    the datasheet counts both, so we do too."""
    from workbook.profiling import time_ms

    src = torch.randint(0, 255, (n_bytes,), dtype=torch.uint8, device=device, generator=gen)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), repeats=repeats, device=device)
    return 2 * n_bytes / (ms * 1e-3) / 1e9


def measure_roofline(cfg: RooflineConfig, seed: int = 0) -> pd.DataFrame:
    """Copy bandwidth and matmul TFLOP/s per dtype, measured here, beside the datasheet."""
    from workbook.profiling import time_ms

    machine = detect()
    device = torch.device(machine.device)
    gen = torch.Generator(device=device).manual_seed(seed)
    rows: list[dict] = []
    peaks = machine.peaks

    n_bytes = cfg.copy_mb * 2**20
    rows.append({"kind": "copy", "dtype": "uint8", "size": n_bytes, "metric": "bandwidth",
                 "value": _copy_gb_s(n_bytes, cfg.repeats, device, gen), "unit": "GB/s",
                 "source": "measured"})
    if peaks:
        rows.append({"kind": "copy", "dtype": "uint8", "size": n_bytes, "metric": "bandwidth",
                     "value": peaks.hbm_gb_s, "unit": "GB/s", "source": "datasheet"})

    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for dtype in MATMUL_DTYPES:
            base = {"kind": "matmul", "dtype": dtype, "size": cfg.matmul_n,
                    "metric": "throughput", "unit": "TFLOP/s"}
            if dtype not in machine.dtypes:
                rows.append({**base, "value": float("nan"), "source": "measured",
                             "status": "unsupported"})
                continue
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
            fn = _matmul_fn(dtype, cfg.matmul_n, device, gen)
            ms = time_ms(fn, repeats=cfg.repeats, device=device)
            rows.append({**base, "value": 2 * cfg.matmul_n**3 / (ms * 1e-3) / 1e12,
                         "source": "measured"})
            if peaks and dtype in peaks.tflops:
                rows.append({**base, "value": peaks.tflops[dtype], "source": "datasheet"})
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    frame = pd.DataFrame(rows)
    frame["status"] = frame.get("status", pd.Series(dtype=object)).fillna("ok")
    return frame


@takes_rows
def roofline_peaks(rows: pd.DataFrame) -> dict[str, float]:
    """{'bandwidth': GB/s, 'bf16': TFLOP/s, ...} from measured (or recorded) roofline rows.

    No rows (none recorded yet) give no peaks: ``{}``.
    """
    check_rows("rows", rows, ("kind", "dtype", "value", "source", "status"))
    if rows.empty:
        return {}
    good = rows[(rows["source"].isin(["measured", "recorded"])) & (rows["status"] == "ok")]
    out = {}
    for _, row in good.iterrows():
        out["bandwidth" if row["kind"] == "copy" else row["dtype"]] = float(row["value"])
    return out


EXPERIMENTS = [
    Experiment(
        name="roofline",
        summary="device-to-device copy GB/s and matmul TFLOP/s per dtype vs datasheet",
        notebook="00_setup",
        run=measure_roofline,
        presets=ROOFLINE_PRESETS,
        min_gpus={"small": 0, "full": 1},
        timeout_s=600,
    ),
]


# ----------------------------------------------------------------------------------- views


def roofline_by_device(rows: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Each device's roofline peaks in ``rows``, labelled 'this machine (…)' for rows measured
    here (first), 'recorded on NVIDIA H100 …, 2026-11-22' for recorded ones; devices whose
    rows lack the copy bandwidth or every matmul dtype are left out."""
    out = {}
    live_first = rows.assign(live=rows["source"] != "measured").sort_values("live", kind="stable")
    labels = device_labels(live_first)
    for device, part in live_first.groupby("device", sort=False):
        peaks = roofline_peaks(part)
        if "bandwidth" in peaks and any(d in peaks for d in MATMUL_DTYPES):
            out[labels[device]] = peaks
    return out


def device_labels(rows: pd.DataFrame) -> dict[str, str]:
    """Each device's name in 00's figures, and so its colour (``plots.color_for``): 'this
    machine' for rows measured here, else where and when it was recorded ('recorded on NVIDIA
    H100 …, 2026-11-22, seed 0'); its datasheet rows take its label."""
    from workbook.results import where_label

    out = {}
    for device, part in rows.groupby("device", sort=False):
        ran = part[part["source"].isin(["measured", "recorded"])]
        out[device] = (where_label(ran) if len(ran)
                       else str(device))  # a datasheet alone: the device's own name
    return out


@takes_rows
def roofline_explorer(rows: pd.DataFrame, dtype: str = "bf16", intensity: float = 16.0):
    """A slider for arithmetic intensity (FLOP per byte) over the rooflines in ``rows``: this
    machine's (measured here) and each recorded device's, attainable TFLOP/s =
    min(peak, intensity × bandwidth)."""
    from workbook import plots, widgets

    devices = roofline_by_device(rows)
    dtypes = [d for d in MATMUL_DTYPES if any(d in p for p in devices.values())]
    if not devices:
        raise WorkbookError("no roofline rows to draw; run `python -m workbook run roofline`")
    xs = [2.0**k for k in range(-4, 13)]

    def draw(fig, dtype: str, intensity: float) -> str:
        if not fig.data:
            for label in devices:
                color = plots.color_for(label)
                fig.add_scatter(name=label, mode="lines", line_color=color)
                fig.add_scatter(name=f"your kernel: {label}", mode="markers",
                                marker_size=14, marker_color=color, showlegend=False)
        said = []
        for i, (label, peaks) in enumerate(devices.items()):
            if dtype not in peaks:  # this device has no fast path for the dtype
                fig.data[2 * i].update(x=[], y=[])
                fig.data[2 * i + 1].update(x=[], y=[])
                continue
            bw, peak = peaks["bandwidth"] * 1e9, peaks[dtype] * 1e12
            fig.data[2 * i].update(x=xs, y=[min(peak, x * bw) / 1e12 for x in xs])
            fig.data[2 * i + 1].update(x=[intensity], y=[min(peak, intensity * bw) / 1e12])
            ridge = peak / bw
            bound = "memory-bound" if intensity < ridge else "compute-bound"
            said.append(f"{label}: ridge {ridge:.0f} FLOP/byte, {bound}")
        return f"at {intensity:.3g} FLOP/byte — " + "; ".join(said)

    fig = plots.figure("Roofline: this machine and the recorded GPUs", "FLOP per byte",
                       "attainable TFLOP/s", log_x=True, log_y=True)
    controls = {"dtype": widgets.dropdown("dtype", dtypes, dtype if dtype in dtypes else
                                          dtypes[0]),
                "intensity": widgets.slider("FLOP/byte", 0.1, 4096, 0.05, intensity, log=True)}
    return widgets.Explorer(controls, draw, fig)


@takes_rows
def roofline_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`measure_roofline`'s rows as a reader reads them: per device and operation, the
    size with its unit (the copy's buffer in MiB, the matmul's n), measured beside the
    datasheet and their ratio, numbers in fixed notation; "–" where there is none."""
    from workbook.claims import readable
    from workbook.results import dashed

    check_rows("rows", rows, ("device", "kind", "dtype", "size", "value", "unit", "source",
                              "status"))
    if rows.empty:
        return pd.DataFrame()
    out = []
    for (device, kind, dtype), part in rows.groupby(["device", "kind", "dtype"], sort=False):
        ran = part[part["source"].isin(["measured", "recorded"])]
        sheet = part.loc[part["source"] == "datasheet", "value"]
        got = float(ran["value"].iloc[0]) if len(ran) else math.nan
        peak = float(sheet.iloc[0]) if len(sheet) else math.nan
        size = int(part["size"].iloc[0])
        out.append({"device": device, "operation": f"copy (read + write), {size / 2**20:,.0f} MiB"
                    if kind == "copy" else f"{dtype} matmul, {size}³",
                    "measured": readable(got) or None, "datasheet": readable(peak) or None,
                    "unit": part["unit"].iloc[0],
                    "measured / datasheet (%)": round(100 * got / peak) if got == got and
                    peak == peak else None,
                    "status": ran["status"].iloc[0] if len(ran) else "datasheet only"})
    return dashed(pd.DataFrame(out, columns=["device", "operation", "measured", "datasheet", "unit",
                               "measured / datasheet (%)", "status"]), {"datasheet": "– (none)"})


@takes_rows
def roofline_bars(rows: pd.DataFrame):
    """Matmul TFLOP/s per dtype: measured here, recorded on each GPU, and each datasheet."""
    from workbook import plots

    mm = rows[(rows["kind"] == "matmul") & (rows["status"] == "ok")]
    short = mm["device"].astype(str).str.replace("NVIDIA ", "", regex=False)
    label = mm["source"].map({"measured": "this machine", "recorded": "recorded",
                              "datasheet": "datasheet"}).fillna(mm["source"]) + ", " + short
    # a machine's colour as in the roofline explorer; its datasheet bars hatched
    return plots.bars(mm.assign(run=label, machine=mm["device"].map(device_labels(rows))),
                      "dtype", group="run", title="Matmul throughput: measured vs datasheet",
                      y_title="TFLOP/s (dense)", log_y=True, color="machine")


@takes_rows
def roofline_claims(rows: pd.DataFrame) -> pd.DataFrame:
    """Datasheet peaks checked against the roofline in ``rows``, one block of claims per device:
    this machine's live rows first (its numbers), then each recorded device as a reference.
    A device without a datasheet entry (a CPU) has nothing to check and no block."""
    from workbook.claims import Claim, claims_table
    from workbook.results import where_label

    seen = ("measured", "recorded")
    ok = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
    claims = []
    order = ok.assign(live=ok["source"] != "measured").sort_values("live", kind="stable")
    for _device, part in order.groupby("device", sort=False):
        def value(kind: str, dtype: str, sources: tuple[str, ...], part=part) -> float:
            hit = part[(part["kind"] == kind) & (part["dtype"] == dtype)
                       & part["source"].isin(sources)]
            return float(hit["value"].iloc[0]) if len(hit) else float("nan")

        if not (part["source"] == "datasheet").any():
            continue
        where = where_label(part[part["source"].isin(seen)])
        claims.append(Claim("HBM bandwidth (copy, read + write)", "datasheet",
                            value("copy", "uint8", ("datasheet",)),
                            value("copy", "uint8", seen), "GB/s", where))
        claims += [Claim(f"dense {d} matmul peak", "datasheet",
                         value("matmul", d, ("datasheet",)), value("matmul", d, seen),
                         "TFLOP/s", where) for d in MATMUL_DTYPES
                   if not math.isnan(value("matmul", d, ("datasheet",)))]
    if not claims:
        return pd.DataFrame(columns=["claim", "source", "predicted", "measured", "unit",
                                     "where", "holds if", "verdict"])
    return claims_table(claims)

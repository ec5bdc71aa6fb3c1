"""Run a measurement in a fresh Python process, or in one process per rank under ``torchrun``.

Why a fresh process: peak-memory numbers are clean only in a process that has done nothing
else, an out-of-memory error or a crash there cannot kill the notebook's kernel, and a rerun
cannot grow the kernel's GPU memory. What comes back is a tidy DataFrame; what went wrong comes
back as a row whose ``status`` says so (``oom``, ``error``, ``crash``, ``timeout``).

The measurement is named by a dotted path ``"package.module:function"``; its keyword arguments
must be JSON values. It returns a DataFrame (see ``workbook.results`` for the columns). Rows
travel back as JSON, never as pickles.

No process outlives its call. Every process a call starts carries ``WORKBOOK_RUN_TAG`` in its
environment, so on a timeout or an interrupt (Ctrl-C, "Interrupt kernel") all of them are
found and killed, torchrun's ranks included (each runs in a session of its own, out of reach
of a process-group kill). If the caller itself dies (a kernel killed), Linux kills the child
(``PR_SET_PDEATHSIG``), and torchrun's death kills each rank the same way. How processes
start and die, and the spare child that waits for the next call: :mod:`workbook.processes`.

    >>> call("workbook.hardware:measure_roofline", {"preset": "small", "seed": 0})
    >>> call_distributed("workbook.parallel:ddp_step", {...}, nprocs=2, backend="gloo")
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from workbook.config import WorkbookError, check_choice, check_range
from workbook.processes import (
    PARENT_VAR,
    REPO_ROOT,
    SPARE_FLAG,
    TAG_VAR,
    die_with_parent,
    keep_spare,
    kill_tagged,
    spare_imports,
    start,
    take_spare,
)

BACKENDS = ("gloo", "nccl")
# Never let a child use NVLink multicast: on shared hosts it can take GPUs out of service.
_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
             "NVSHMEM_DISABLE_NVLS": "1"}
_TORCHRUN = "--torchrun"              # `python -m workbook.runner --torchrun ARGS`: torchrun


def import_function(path: str) -> Any:
    """``"workbook.hardware:measure_roofline"`` -> the function object."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise WorkbookError(f"function path {path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module named here (or a package above it) being absent is the caller's
        # typo; a missing dependency inside an existing module stays a real ImportError.
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise WorkbookError(f"function path {path!r}: there is no module {exc.name!r}; "
                                "allowed: an importable 'package.module:function'") from None
        raise
    if not callable(getattr(module, attr, None)):
        raise WorkbookError(f"function path {path!r}: module {module_name!r} has no function "
                            f"{attr!r}")
    return getattr(module, attr)


def call(func: str, kwargs: Mapping[str, Any] | None = None, *, timeout_s: float = 600,
         env: Mapping[str, str] | None = None, echo: bool = False,
         progress: str | None = None, expected_s: float | None = None) -> pd.DataFrame:
    """Run ``func(**kwargs)`` in a fresh Python process and return its rows.

    With ``progress`` (a label) a bar counts the seconds while the child runs, against
    ``expected_s`` where known (an ETA), so a long cell never sits silent.
    """
    return _launch(func, dict(kwargs or {}), nprocs=1, backend=None, timeout_s=timeout_s,
                   env=env, echo=echo, progress=progress, expected_s=expected_s)


def call_distributed(func: str, kwargs: Mapping[str, Any] | None = None, *, nprocs: int,
                     backend: str, timeout_s: float = 600, env: Mapping[str, str] | None = None,
                     echo: bool = False) -> pd.DataFrame:
    """Run ``func(**kwargs)`` on ``nprocs`` ranks (``torchrun``, one process each).

    Each rank's process group is initialised before ``func`` runs (``backend`` ``gloo`` on CPU,
    ``nccl`` on GPUs, one GPU per rank) and destroyed after. DeepSpeed runs under the same
    launcher: ``deepspeed.initialize`` reuses the process group. Rows come back with a ``rank``
    column. A rank that hangs is killed with the others when ``timeout_s`` runs out.
    """
    check_choice("backend", backend, BACKENDS)
    if not isinstance(nprocs, int) or nprocs < 1:
        raise WorkbookError(f"nprocs={nprocs!r}; allowed: an integer >= 1")
    if backend == "nccl":
        import torch

        available = torch.cuda.device_count()
        if nprocs > available:
            raise WorkbookError(
                f"nprocs={nprocs} needs {nprocs} GPUs with nccl; this machine has {available}. "
                f"Allowed: 1 to {available} (or backend='gloo' on the CPU)")
    return _launch(func, dict(kwargs or {}), nprocs=nprocs, backend=backend,
                   timeout_s=timeout_s, env=env, echo=echo)


def _launch(func: str, kwargs: dict[str, Any], *, nprocs: int, backend: str | None,
            timeout_s: float, env: Mapping[str, str] | None, echo: bool,
            progress: str | None = None, expected_s: float | None = None) -> pd.DataFrame:
    import_function(func)  # a typo fails here, in one line, not in a child's traceback
    check_range("timeout_s", timeout_s, 0.1, 7 * 86_400)
    try:
        spec_json = json.dumps({"func": func, "kwargs": kwargs, "backend": backend})
    except TypeError as exc:
        raise WorkbookError(f"arguments of {func} must be JSON values: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="workbook-run-") as tmp:
        spec_path, out_dir = Path(tmp) / "spec.json", Path(tmp) / "out"
        out_dir.mkdir()
        spec_path.write_text(spec_json)
        child = [str(spec_path), str(out_dir)]
        child_env = _child_env(env, backend, nprocs)
        if backend is None or nprocs == 1:
            # One rank needs no torchrun: the child is that rank, with the variables torchrun
            # would give it (saves a Python start-up, a torch import and a rendezvous)
            rank_env = _one_rank_env() if backend is not None else {}
            proc, spare_tag = take_spare(child_env)
            if proc is not None:  # warm already: it is handed its job (see take_spare)
                child_env[TAG_VAR] = spare_tag
                proc.stdin.write(json.dumps({"spec": child[0], "out": child[1],
                                             "env": rank_env}) + "\n")
                proc.stdin.close()
            else:
                proc = start([sys.executable, "-m", "workbook.runner", *child],
                              {**child_env, **rank_env})
            keep_spare(child_env)
        else:  # torchrun, started through this module so that it too dies with its caller
            proc = start([sys.executable, "-m", "workbook.runner", _TORCHRUN, "--standalone",
                           f"--nproc-per-node={nprocs}", "--module", "workbook.runner", *child],
                          child_env)
        returncode, log_tail, killed = _run_with_timeout(proc, child_env, timeout_s, echo,
                                                         progress, expected_s, label=func)
        per_rank = {int(p.stem.removeprefix("rank")): json.loads(p.read_text())
                    for p in sorted(out_dir.glob("rank*.json"))}
    return _collect(per_rank, nprocs=nprocs, distributed=backend is not None, kwargs=kwargs,
                    returncode=returncode, log_tail=log_tail, timeout_s=timeout_s,
                    killed=killed)


def _one_rank_env() -> dict[str, str]:
    """The environment torchrun gives a world of one rank: rank 0 of 1, on a free local port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
            "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def _child_env(env: Mapping[str, str] | None, backend: str | None, nprocs: int) -> dict:
    child_env = dict(os.environ)
    child_env.update(_SAFE_ENV)
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    if backend == "gloo" and nprocs > 1:
        # Ranks share the CPU cores; without this each one spawns a thread per core.
        child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nprocs)))
    child_env.update(env or {})
    # After the caller's env: no call shares a tag. A call made inside a child (zero_stages
    # launches torchrun from one) adds its own tag to the one it inherited, so killing the
    # outer call reaches the inner call's processes too.
    inherited = os.environ.get(TAG_VAR, "")
    child_env[TAG_VAR] = ":".join(t for t in (inherited, uuid.uuid4().hex) if t)
    child_env[PARENT_VAR] = str(os.getpid())
    return child_env


def _run_with_timeout(proc: subprocess.Popen, env: dict, timeout_s: float, echo: bool,
                      progress: str | None = None, expected_s: float | None = None,
                      label: str = "") -> tuple[int | None, str, int]:
    """Wait for ``proc`` (from :func:`workbook.processes.start`, ``env`` its environment);
    return its exit code (None: timed out), the tail of its output and how many processes had
    to be killed. On timeout, or when the caller is interrupted (Ctrl-C, a notebook's
    "Interrupt kernel"), every process of the call dies."""
    own_tag = env[TAG_VAR].rsplit(":", 1)[-1]
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            del lines[:-200]
            if echo:
                print(line, end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed = 0
    try:
        returncode: int | None = _wait(proc, timeout_s, progress, expected_s)
    except subprocess.TimeoutExpired:
        killed = kill_tagged(proc, own_tag)
        returncode = None
    except BaseException:  # KeyboardInterrupt included: never leave the child running
        killed = kill_tagged(proc, own_tag)
        print(f"interrupted: {label or proc.args[-1]} stopped, {killed} process(es) killed",
              file=sys.stderr, flush=True)
        raise
    else:
        # The child ended by itself; a process it left behind (a rank torchrun did not stop)
        # must not outlive the call either.
        killed = kill_tagged(None, own_tag)
    reader.join(timeout=5)
    return returncode, "".join(lines[-40:]), killed


def _wait(proc: subprocess.Popen, timeout_s: float, progress: str | None,
          expected_s: float | None) -> int:
    """``proc.wait(timeout_s)``, with a bar of elapsed seconds when ``progress`` is given."""
    if not progress:
        return proc.wait(timeout=timeout_s)
    from workbook.progress import bar as progress_bar

    total = max(1, round(expected_s)) if expected_s else None
    fmt = ("{desc}: {bar} {n}/{total} s, about {remaining} left (from the last run here)"
           if total else "{desc}: running, {n} s so far (first run here: no estimate yet)")
    start = time.monotonic()

    def ended() -> str:   # the line that replaces the bar (a saved notebook keeps it)
        return f"{progress}: ended after {time.monotonic() - start:.0f} s"

    with progress_bar(total, progress, bar_format=fmt, end=ended) as shown:
        while True:
            try:
                code = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed >= timeout_s:
                    raise
                shown.n = min(int(elapsed), total) if total else int(elapsed)
                shown.refresh()
    return code


def _collect(per_rank: dict[int, dict], *, nprocs: int, distributed: bool, kwargs: dict,
             returncode: int | None, log_tail: str, timeout_s: float,
             killed: int = 0) -> pd.DataFrame:
    frames = []
    for rank in range(nprocs):
        report = per_rank.get(rank)
        if report is None:
            if returncode is None:
                status = "timeout"
                error = f"killed after {timeout_s:g} s with its {killed} process(es)"
            else:
                status, error = "crash", f"exit code {returncode}: {_last_line(log_tail)}"
            report = {"status": status, "error": error, "rows": []}
        if report["rows"]:
            frame = pd.DataFrame(report["rows"])
            if "status" not in frame.columns:  # every row says whether it worked
                frame["status"] = "ok"
        else:
            frame = failure_row(kwargs, report["status"], report["error"])
        if distributed:
            frame.insert(0, "rank", rank)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def failure_row(params: Mapping[str, Any], status: str, error: str) -> pd.DataFrame:
    """One ledger row saying that a configuration did not produce numbers, and why.

    Scalar parameters become columns; so do those of a nested ``overrides`` mapping (what
    ``--set`` changed), lists as JSON, so the row names the configuration that failed."""
    flat = {**params, **dict(params.get("overrides") or {})}
    scalars = {k: (json.dumps(list(v)) if isinstance(v, (list, tuple)) else v)
               for k, v in flat.items() if isinstance(v, (str, int, float, bool, list, tuple))}
    return pd.DataFrame([{**scalars, "metric": "run", "value": math.nan, "unit": "",
                          "source": "measured", "status": status, "error": error}])


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


# --------------------------------------------------------------------------- child side


_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory")


def _is_oom(exc: BaseException) -> bool:
    """A GPU or CPU out-of-memory error: ``torch.OutOfMemoryError``, Python's ``MemoryError``,
    or the allocators' messages ("DefaultCPUAllocator: can't allocate memory: ...")."""
    if isinstance(exc, MemoryError) or any(t in str(exc).lower() for t in _OOM_TEXT):
        return True
    torch = sys.modules.get("torch")  # a child that never imported torch had no CUDA OOM
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def failure_of(exc: BaseException) -> tuple[str, str]:
    """(status, one-line error) of a measurement that raised: ``oom`` for an out-of-memory
    error, else ``error`` (a WorkbookError's own words, any other with its type)."""
    if _is_oom(exc):
        return "oom", str(exc).splitlines()[0][:300]
    if isinstance(exc, WorkbookError):
        return "error", str(exc)
    return "error", f"{type(exc).__name__}: {exc}"[:300]


def _torchrun_main(args: list[str]) -> int:
    """torchrun in this process, after :func:`die_with_parent`; its ranks die with it."""
    die_with_parent()
    os.environ[PARENT_VAR] = str(os.getpid())  # the ranks' parent is this process
    from torch.distributed.run import main as torchrun

    torchrun(args)
    return 0


def _jsonable(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # to_json handles numpy scalars and NaN (-> null) without pickling anything.
    return json.loads(frame.to_json(orient="records"))


def _share_cpu_threads() -> None:
    """Give this process its share of the idle cores for CPU work (``hardware.cpu_threads``
    divided among the ranks on this machine): PyTorch's default of one thread per core in every
    rank oversubscribes a small machine, and every step then waits for its slowest thread.
    A CUDA run's work is on the GPU and keeps the default."""
    import torch

    if torch.cuda.is_available() and os.environ.get("LOCAL_WORLD_SIZE") is None:
        return
    from workbook.hardware import cpu_threads

    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    share = max(1, cpu_threads() // ranks)
    # Pinned for the rest of this process: code that asks cpu_threads() again (pretraining.train)
    # gets this rank's share instead of sampling the machine afresh.
    os.environ["WORKBOOK_THREADS"] = str(share)
    torch.set_num_threads(share)


PROFILE_VAR = "WORKBOOK_PROFILE"  # a folder: each child leaves a cProfile of its function there


def _profiled(func: Any, kwargs: dict[str, Any]) -> Any:
    """``func(**kwargs)``; under ``$WORKBOOK_PROFILE`` also ``<function>-<pid>.txt`` there: the
    40 entries of most cumulative time (where a slow cell's seconds go on a GPU run). It slows
    Python-heavy code: for finding where time goes, not for numbers that get recorded."""
    folder = os.environ.get(PROFILE_VAR, "")
    if not folder:
        return func(**kwargs)
    import cProfile
    import io
    import pstats

    profile = cProfile.Profile()
    try:
        return profile.runcall(func, **kwargs)
    finally:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(40)
        path = Path(folder) / f"{func.__module__}.{func.__name__}-{os.getpid()}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.getvalue())


def _child_main(spec_path: str, out_dir: str) -> int:
    die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    report: dict[str, Any] = {"status": "ok", "error": "", "rows": []}
    initialised = False
    try:
        if spec["backend"]:
            import torch
            import torch.distributed as dist

            if spec["backend"] == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend=spec["backend"])
            initialised = True
        if spec["backend"] != "nccl":
            _share_cpu_threads()
        if os.environ.get("WORKBOOK_GPU_MEMORY_GB"):  # emulate a smaller card (hardware.py)
            from workbook.hardware import apply_gpu_memory_cap

            apply_gpu_memory_cap()
        func = import_function(spec["func"])
        # Everything imported so far (torch, transformers, the topics: millions of objects)
        # leaves the collector's view: a sweep's gc.collect() between cases then looks at the
        # sweep's own objects, 0.25 s -> milliseconds each on an H200 Run All (07's timing
        # sweep spent 23 of its 57 s in 90 such calls). Nothing imported is garbage.
        gc.freeze()
        frame = _profiled(func, spec["kwargs"])
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{spec['func']} returned {type(frame).__name__}, not a DataFrame")
        report["rows"] = _jsonable(frame)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row, by design
        status, error = failure_of(exc)
        report.update(status=status, error=error)
        if status == "error" and not isinstance(exc, WorkbookError):
            traceback.print_exc()
    finally:
        if initialised:
            import torch.distributed as dist

            dist.destroy_process_group()
    out = Path(out_dir) / f"rank{rank}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, out)
    return 0


def _spare_main() -> int:
    """A spare child: import what every child imports, then wait for a job on stdin (one JSON
    line: spec path, out dir, the variables of its rank) and run it as :func:`_child_main`."""
    die_with_parent()
    spare_imports()
    line = sys.stdin.readline()
    if not line:  # the caller went away, or dropped this spare
        return 0
    job = json.loads(line)
    os.environ.update(job["env"])
    return _child_main(job["spec"], job["out"])


if __name__ == "__main__":
    if sys.argv[1] == SPARE_FLAG:
        sys.exit(_spare_main())
    if sys.argv[1] == _TORCHRUN:
        sys.exit(_torchrun_main(sys.argv[2:]))
    sys.exit(_child_main(sys.argv[1], sys.argv[2]))

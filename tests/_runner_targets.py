"""Functions the runner tests launch in child processes (importable as tests._runner_targets)."""

from __future__ import annotations

import os
import time

import pandas as pd


def rows(n: int = 3, scale: float = 2.0) -> pd.DataFrame:
    return pd.DataFrame({"i": range(n), "metric": "double", "value": [scale * i for i in range(n)]})


def crash() -> pd.DataFrame:
    os._exit(17)  # dies without a word, as a segfault would


def raise_error() -> pd.DataFrame:
    raise RuntimeError("deliberate failure")


def sleep(seconds: float) -> pd.DataFrame:
    time.sleep(seconds)
    return rows()


def sleep_writing_pid(path: str, seconds: float) -> pd.DataFrame:
    from pathlib import Path

    Path(path).write_text(str(os.getpid()))
    return sleep(seconds)


def cuda_oom() -> pd.DataFrame:
    import torch

    # Ask for twice the GPU's memory: a real CUDA out-of-memory error, not a simulated one.
    total = torch.cuda.get_device_properties(0).total_memory
    torch.empty(2 * total, dtype=torch.uint8, device="cuda")
    return rows()


def cuda_allocate(n_bytes: int) -> pd.DataFrame:
    import torch

    x = torch.empty(n_bytes, dtype=torch.uint8, device="cuda")
    return pd.DataFrame([{"metric": "allocated", "value": float(x.numel())}])


def all_reduce_rank() -> pd.DataFrame:
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    return pd.DataFrame([{"world_size": world, "metric": "sum", "value": float(t.item())},
                         {"world_size": world, "metric": "rank_seen", "value": float(rank)}])


def launcher() -> pd.DataFrame:
    """Which launcher started this rank: torchrun sets TORCHELASTIC_RUN_ID, the runner's
    one-rank path does not."""
    import os

    import torch.distributed as dist

    return pd.DataFrame([{"metric": "world_size", "value": float(dist.get_world_size()),
                          "torchrun": "TORCHELASTIC_RUN_ID" in os.environ}])


def raise_memory_error() -> pd.DataFrame:
    raise MemoryError("deliberate: as a NumPy or Python allocation that does not fit")


def cpu_oom() -> pd.DataFrame:
    import torch

    # 4 EiB: more than any address space, so the CPU allocator refuses it at once (a real
    # "DefaultCPUAllocator: can't allocate memory", whatever the machine's overcommit policy).
    torch.empty(2**62, dtype=torch.uint8)
    return rows()


def sleep_rank_writing_pid(folder: str, seconds: float) -> pd.DataFrame:
    """Under call_distributed: each rank writes rank<N>.pid, then sleeps (a hung rank)."""
    from pathlib import Path

    Path(folder, f"rank{os.environ.get('RANK', '0')}.pid").write_text(str(os.getpid()))
    return sleep(seconds)


def spawn_and_sleep(folder: str, seconds: float) -> pd.DataFrame:
    """Start a grandchild in a session of its own (as torchrun starts its ranks: out of reach
    of a process-group kill), write both pids, then sleep."""
    import subprocess
    import sys
    from pathlib import Path

    grandchild = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"],
                                  start_new_session=True)
    Path(folder, "grandchild.pid").write_text(str(grandchild.pid))
    Path(folder, "child.pid").write_text(str(os.getpid()))
    return sleep(seconds)


def cuda_hold_writing_pid(folder: str, n_bytes: int, seconds: float) -> pd.DataFrame:
    """A rank that holds GPU memory and hangs: what a timed-out GPU run leaves if not killed."""
    import torch

    held = torch.empty(n_bytes, dtype=torch.uint8, device="cuda")  # noqa: F841 - held on purpose
    return sleep_rank_writing_pid(folder, seconds)


def thread_count() -> pd.DataFrame:
    """The torch thread count the runner gave this process (and its rank)."""
    import torch

    return pd.DataFrame([{"which": int(os.environ.get("RANK", "0")),
                          "threads": torch.get_num_threads()}])


def whoami() -> pd.DataFrame:
    """This process's pid and parent, and what the runner's rank variables say."""
    import sys

    return pd.DataFrame([{"metric": "pid", "value": float(os.getpid()),
                          "rank_env": os.environ.get("RANK", ""),
                          "spare": "--spare" in sys.argv}])


def frozen_objects() -> pd.DataFrame:
    """How many objects the child's collector ignores (runner freezes what was imported)."""
    import gc

    return pd.DataFrame({"metric": ["frozen"], "value": [gc.get_freeze_count()]})

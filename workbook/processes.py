"""The processes a call starts: how they start, how they die, and the spare that waits.

:mod:`workbook.runner` runs each measurement in a fresh process; this module holds what is
about processes as such. Every process a call starts carries ``WORKBOOK_RUN_TAG`` in its
environment (:data:`TAG_VAR`), so on a timeout or an interrupt all of them are found and killed
(:func:`kill_tagged`), and each dies with its parent (:func:`die_with_parent`). A *spare*
(:func:`keep_spare`, :func:`take_spare`) is the next call's process, started early so that its
imports overlap the call before it.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbook.config import WorkbookError

__all__ = ["REPO_ROOT", "TAG_VAR", "PARENT_VAR", "SPARE_VAR", "SPARE_FLAG", "start",
           "spares_on", "take_spare", "keep_spare", "waiting_spare", "drop_spare",
           "tagged_processes", "kill_tagged", "die_with_parent", "spare_imports"]

REPO_ROOT = Path(__file__).resolve().parent.parent
TAG_VAR = "WORKBOOK_RUN_TAG"          # marks every process of one call (see kill_tagged)
PARENT_VAR = "WORKBOOK_PARENT_PID"    # the pid a child must die with (see die_with_parent)


def start(cmd: list[str], env: dict, stdin: int | None = None) -> subprocess.Popen:
    """``cmd`` in a session of its own, its output (stdout and stderr) on one pipe."""
    return subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)


# A spare child. A child spends seconds importing torch, pandas, transformers and every topic
# before it measures anything, and a GPU Run All starts some forty. So while a call runs, the
# next call's child starts beside it, imports all that (no GPU), and waits on its stdin; the
# next single-process call with the same environment hands it its job, any other kills it.
# Each measurement still runs in a process that has run nothing else. On where a GPU is
# present; WORKBOOK_SPARE=0 turns it off, =1 on (a CPU's measurements share its cores).
SPARE_VAR = "WORKBOOK_SPARE"
SPARE_FLAG = "--spare"              # `python -m workbook.runner --spare`: a spare child
_spare: dict[str, Any] = {}         # {"proc": Popen, "env": its environment less the tag,
                                    #  "tag": its tag}
_spare_lock = threading.Lock()


def spares_on() -> bool:
    """Whether calls keep a spare child (:data:`SPARE_VAR`; unset: where a GPU is present).
    Never inside a call's own process: a measurement there (lora_advice's threads, a
    dispatcher's children) would share its CPU with a spare's imports, for little gain."""
    value = os.environ.get(SPARE_VAR, "")
    if value and value not in ("0", "1"):
        raise WorkbookError(f"{SPARE_VAR}={value!r}; allowed: 0 (off), 1 (on) or unset")
    if TAG_VAR in os.environ:
        return False
    if value:
        return value == "1"
    torch = sys.modules.get("torch")  # never imported here just to ask
    return torch is not None and torch.cuda.is_available()


def _untagged(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != TAG_VAR}


def take_spare(env: Mapping[str, str]) -> tuple[subprocess.Popen | None, str]:
    """(the waiting spare, its tag) if it is alive and was started with ``env`` (its tag
    aside), else (None, ""); a spare that does not match is killed. No spare is left."""
    with _spare_lock:
        proc, spare_env, tag = (_spare.pop(k, None) for k in ("proc", "env", "tag"))
    if proc is None:
        return None, ""
    if proc.poll() is None and spare_env == _untagged(env):
        return proc, tag
    _drop(proc)
    return None, ""


def keep_spare(env: Mapping[str, str]) -> None:
    """Start a spare with ``env`` (a fresh tag of its own) for the next call, if they are on."""
    if not spares_on():
        return
    spare_env = {**env, TAG_VAR: ":".join(
        t for t in (os.environ.get(TAG_VAR, ""), uuid.uuid4().hex) if t)}
    proc = start([sys.executable, "-m", "workbook.runner", SPARE_FLAG], spare_env,
                  stdin=subprocess.PIPE)
    with _spare_lock:  # the call that takes it is known by its tag
        old = _spare.get("proc")
        _spare.update(proc=proc, env=_untagged(env), tag=spare_env[TAG_VAR])
    if old is not None:
        _drop(old)


def _drop(proc: subprocess.Popen) -> None:
    """End a spare that will not be used (it has started nothing: a kill is enough)."""
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def waiting_spare() -> subprocess.Popen | None:
    """The spare waiting for the next call, if any."""
    return _spare.get("proc")


@atexit.register
def drop_spare() -> None:
    """Kill the waiting spare, if any (at exit, and for tests)."""
    with _spare_lock:
        proc = _spare.pop("proc", None)
        _spare.clear()
    if proc:
        _drop(proc)


def tagged_processes(tag: str) -> set[int]:
    """The live processes whose environment carries ``WORKBOOK_RUN_TAG=tag``: a call's child,
    its children and theirs, in whatever session, even after being reparented to PID 1.
    Empty where there is no ``/proc`` (not Linux): there the process group is all we reach."""
    prefix, wanted = f"{TAG_VAR}=".encode(), tag.encode()
    found = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()  # a zombie's reads empty: it is not counted
        except OSError:  # gone meanwhile, or another user's
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(prefix) and wanted in entry[len(prefix):].split(b":"):
                found.add(int(name))
    return found


def kill_tagged(proc: subprocess.Popen | None, tag: str, wait_s: float = 10.0) -> int:
    """SIGKILL ``proc`` and every process tagged ``tag``; return how many were killed.

    They are stopped (SIGSTOP) first, then looked for again, so that none can start another
    process between the search and the kill; then all get SIGKILL at once."""
    victims = tagged_processes(tag) | ({proc.pid} if proc and proc.poll() is None else set())
    try:
        for _ in range(5):
            for pid in victims:
                _signal(pid, signal.SIGSTOP)
            more = tagged_processes(tag) - victims
            if not more:
                break
            victims |= more
    finally:  # a second Ctrl-C must not leave stopped processes behind
        for pid in victims:
            _signal(pid, signal.SIGKILL)
    if proc is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # where /proc is missing, the group at least
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    deadline = time.monotonic() + wait_s
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(victims)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``), so a killed
    notebook kernel leaves no measurement running, nor torchrun's ranks. No-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return
    expected = os.environ.get(PARENT_VAR)
    if expected and os.getppid() != int(expected):  # the parent died before prctl took hold
        os._exit(1)


def spare_imports() -> None:
    """What a spare does before its job comes: import what every child imports (no GPU)."""
    import importlib
    import importlib.util

    import torch  # noqa: F401 - the import is the point

    from workbook import registry

    registry.experiments()  # every topic's module (and what it imports)
    # transformers' model code, which most experiments build on (seconds to import). Not peft:
    # it imports bitsandbytes, which asks the GPU its capability and so starts CUDA here.
    if importlib.util.find_spec("transformers") is not None:
        for module in ("transformers.modeling_utils", "transformers.models.llama.modeling_llama",
                       "transformers.models.gpt2.modeling_gpt2"):
            importlib.import_module(module)

"""Run a test function in a child Python under TRITON_INTERPRET=1 (Triton's CPU interpreter).

Triton reads the variable when a kernel is decorated, i.e. at import: the checks must run in a
fresh process, not in the pytest process, whose modules are already imported.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not installed (make test installs it on Linux x86-64)")
needs_gpu_and_triton = pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_TRITON), reason="needs a GPU and triton")


def run_in_triton_interpreter(module: str, function: str, timeout: int = 300) -> None:
    """Call ``module.function()`` in a child with TRITON_INTERPRET=1; fail with its stderr."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", f"from {module} import {function}; {function}()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{module}.{function} under the Triton interpreter:\n"
                                  + proc.stderr[-2000:])

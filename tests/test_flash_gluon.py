"""The FA3-style forward in Gluon (workbook.attention.flash_gluon).

On a CPU: the order its consumer runs the online softmax in equals the definition (in float64),
and the kernel compiles for Hopper (sm_90) without spilling and within the shared memory a
block may use, with its ring of K/V buffers really allocated. On a Hopper GPU: its outputs
and log-sum-exp equal PyTorch's, run in a child process so that a kernel that never returns
(a barrier waited on forever) fails the test instead of stalling it.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
import torch

from tests._interpreter import ROOT
from workbook import attention as A
from workbook.attention import flash_gluon as G
from workbook.config import WorkbookError

needs_gluon = pytest.mark.skipif(not G.gluon_available(),
                                 reason="Triton's Gluon is not installed")
HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability(0)[0] >= 9
SHARED_MAX = 227 * 1024   # shared memory one block may use on sm_90 (H100, H200)


def definition(q, k, v, causal=False):
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1),
                          float("-inf"))
    return torch.softmax(s, dim=-1) @ v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_len,block_m,block_n", [(64, 16, 16), (100, 32, 16), (37, 8, 16),
                                                     (48, 48, 16)])
def test_fa3_order_equals_the_definition(causal, seq_len, block_m, block_n):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, seq_len, 32, generator=gen, dtype=torch.float64)
               for _ in range(3))
    got = A.overlapped_attention_forward(q, k, v, causal=causal, block_m=block_m,
                                         block_n=block_n)
    torch.testing.assert_close(got, definition(q, k, v, causal), rtol=1e-10, atol=1e-12,
                               msg="adding P_(j-1)V_(j-1) in m_(j-1)'s units and then "
                                   "rescaling by alpha_j must give the exact softmax")


@pytest.mark.parametrize("kwargs,allowed", [
    ({"block_n": 32}, "allowed: 64, 128"), ({"stages": 5}, "allowed: 2, 3"),
    ({"pingpong": "yes"}, "allowed: True or False"), ({"causal": 1}, "allowed: True or False"),
    ({"scale": 0.0}, "allowed")])
def test_bad_tiles_are_one_line_errors(kwargs, allowed):
    q = torch.zeros(1, 1, 128, 64, dtype=torch.bfloat16)
    with pytest.raises(WorkbookError, match=allowed) as err:
        G.flash_forward_gluon(q, q, q, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape,dtype,allowed", [
    ((1, 1, 128, 32), torch.bfloat16, "allowed: 64, 128"),
    ((1, 1, 128, 64), torch.float32, "allowed: float16, bfloat16"),
    ((1, 1, 100, 64), torch.bfloat16, "multiple of 128")])
def test_bad_inputs_are_one_line_errors(shape, dtype, allowed):
    q = torch.zeros(shape, dtype=dtype)
    with pytest.raises(WorkbookError, match=allowed):
        G.flash_forward_gluon(q, q, q)


@pytest.mark.skipif(HOPPER, reason="this machine has a Hopper GPU")
def test_without_hopper_it_says_so():
    q = torch.zeros(1, 1, 128, 64, dtype=torch.bfloat16)
    with pytest.raises(WorkbookError, match="Hopper|Gluon"):
        G.flash_forward_gluon(q, q, q)


@needs_gluon
@pytest.mark.parametrize("block_n,stages,causal,head_dim,dtype,pingpong", [
    (128, 2, False, 128, torch.bfloat16, False), (128, 3, False, 128, torch.bfloat16, True),
    (64, 3, True, 128, torch.float16, True), (128, 2, True, 64, torch.bfloat16, False)])
def test_compiles_for_hopper_without_spills(block_n, stages, causal, head_dim, dtype, pingpong):
    found = G.resources(block_n, stages, causal, head_dim, dtype, pingpong=pingpong)
    ring = 2 * (G.BLOCK_M * head_dim + stages * 2 * block_n * head_dim)   # Q + K/V stages
    assert found["spill_bytes"] == 0, "registers spilled to local memory: a slow kernel"
    assert ring <= found["shared_bytes"] <= SHARED_MAX, (
        f"shared memory {found['shared_bytes']} B: the Q tile and {stages} K/V stages need "
        f"{ring} B, and a block may use {SHARED_MAX} B")


def gpu_cases() -> None:
    """Every tile option, causal or not, both head sizes and dtypes, against PyTorch, simplest
    first (one tile, no loop; then the ring wrapping; then pingpong; then causal), each
    announced before it runs, so a hang's log names the case (run in a child process by the
    test below)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    for (n, causal, d, dtype), (bn, st, pp) in zip(
            [(128, False, 64, torch.bfloat16), (2048, False, 128, torch.bfloat16),
             (1024, False, 128, torch.float16), (2048, False, 128, torch.bfloat16),
             (384, True, 128, torch.bfloat16), (1024, True, 64, torch.float16),
             (640, True, 128, torch.bfloat16), (1024, True, 128, torch.float16)],
            [(128, 2, False), (128, 2, False), (128, 3, False), (128, 3, True),
             (64, 3, False), (64, 2, True), (64, 2, True), (128, 2, False)], strict=True):
        label = f"N={n} causal={causal} d={d} {dtype} block_n={bn} stages={st} pingpong={pp}"
        print(label, "...", flush=True)
        q, k, v = (torch.randn(2, 3, n, d, generator=gen, device="cuda").to(dtype)
                   for _ in range(3))
        out, lse = G.flash_forward_gluon(q, k, v, causal=causal, block_n=bn, stages=st,
                                         pingpong=pp)
        torch.cuda.synchronize()
        ref = definition(q.cpu(), k.cpu(), v.cpu(), causal).to(out.device)
        err = (out.double() - ref).abs().max().item()
        s = q.double() @ k.double().transpose(-2, -1) / math.sqrt(d)
        if causal:
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device="cuda").triu(1),
                              float("-inf"))
        lse_err = (lse.double() - torch.logsumexp(s, dim=-1)).abs().max().item()
        assert err < 2e-2 and lse_err < 1e-3, f"{label}: |O err| {err:.1e}, |lse err| {lse_err:.1e}"
        print(label, f"ok (|O err| {err:.1e}, |lse err| {lse_err:.1e})", flush=True)


@pytest.mark.skipif(not (HOPPER and G.gluon_available()), reason="needs a Hopper GPU and Gluon")
def test_gluon_forward_equals_pytorch_on_hopper():
    try:
        proc = subprocess.run([sys.executable, "-c",
                               "from tests.test_flash_gluon import gpu_cases; gpu_cases()"],
                              cwd=ROOT, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as hung:   # what it printed names the case that hung
        out = hung.stdout.decode() if isinstance(hung.stdout, bytes) else (hung.stdout or "")
        pytest.fail(f"no answer in {hung.timeout} s (a barrier waited on forever?):\n{out}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    print(proc.stdout)   # each case's errors, for the device log (pytest -s)



def test_flash_forward_runs_gluon_only_where_it_runs():
    """flash_forward's default picks the Gluon kernel on Hopper with Gluon, else the TMA kernel
    (whole 128-row tiles) or the portable one; never Gluon on a CPU or for odd lengths."""
    from workbook.attention import flash_triton as FT

    whole, odd = (torch.zeros(1, 2, n, 64, dtype=torch.bfloat16) for n in (256, 200))
    assert FT.forward_kernel(odd, odd, odd) == "portable"
    assert FT.forward_kernel(whole, whole, whole) == "portable"   # CPU: interpreter or none
    if HOPPER and G.gluon_available():
        whole = whole.cuda()
        assert FT.forward_kernel(whole, whole, whole) == "gluon"
        assert FT.forward_kernel(odd.cuda(), odd.cuda(), odd.cuda()) == "portable"


@pytest.mark.skipif(not (HOPPER and G.gluon_available()), reason="needs a Hopper GPU and Gluon")
def test_attention_with_gluon_forward_has_the_reference_gradients():
    """The autograd Function on Hopper: Gluon forward (its log-sum-exp) + the Triton backward."""
    from workbook.attention.flash_triton_backward import flash_attention

    gen = torch.Generator(device="cuda").manual_seed(1)
    for causal in (False, True):
        q, k, v = (torch.randn(2, 3, 512, 128, generator=gen, device="cuda",
                               dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        grad = torch.randn_like(q)
        got = torch.autograd.grad(flash_attention(q, k, v, causal=causal), (q, k, v), grad)
        ref = torch.autograd.grad(definition(q.double(), k.double(), v.double(), causal),
                                  (q, k, v), grad.double())
        for name, g, r in zip("qkv", got, ref, strict=True):
            err = ((g.double() - r).norm() / r.norm()).item()
            assert err < 2e-2, f"d{name} causal={causal}: relative error {err:.1e}"

# ------------------------------------------------ the exponentials' budget (attention.budget)


def test_exp_ceilings_follow_from_the_rates():
    """Per score: 4d matmul FLOPs and one exponential, at rates r to 1."""
    at_128, at_64, at_32 = (A.exp_ceilings(d, ratio=256.0) for d in (128, 64, 32))
    assert at_128["taking turns"] == pytest.approx(2 / 3) and at_128["overlapped"] == 1.0
    assert at_64["taking turns"] == pytest.approx(1 / 2) and at_64["overlapped"] == 1.0
    assert at_32["overlapped"] == pytest.approx(1 / 2), "exponential-bound below d = 64"
    with pytest.raises(WorkbookError, match="allowed"):
        A.exp_ceilings(0)


def _timing(rows):
    base = {"head_dim": 128, "mode": "fwd", "causal": False, "dtype": "bfloat16",
            "metric": "throughput", "status": "ok", "source": "recorded", "n_gpus": 1,
            "recorded_at": "2026-12-04T00:00:00Z", "seed": 0}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_exp_budget_sets_each_forward_beside_the_lines():
    timing = _timing([
        {"variant": "sdpa_cudnn", "seq_len": 16384, "value": 760.0, "device": "NVIDIA H200"},
        {"variant": "triton", "seq_len": 16384, "value": 500.0, "device": "NVIDIA H200"},
        {"variant": "triton", "seq_len": 4096, "value": 900.0, "device": "NVIDIA H200"},
        {"variant": "triton", "seq_len": 16384, "value": 100.0, "device": "NVIDIA L4"},
        {"variant": "triton", "seq_len": 16384, "value": 999.0, "device": "NVIDIA H200",
         "mode": "fwd+bwd"}])
    table = A.exp_budget(timing)
    h200 = table[table["where"].str.contains("H200")].set_index("variant")
    assert list(h200.index) == ["sdpa_cudnn", "triton"], "the longest N only, forward only"
    assert h200.loc["triton", "% of peak"] == pytest.approx(100 * 500 / 989.4)
    assert bool(h200.loc["sdpa_cudnn", "above the taking-turns line"])     # 76.8 % > 66.9 %
    assert not bool(h200.loc["triton", "above the taking-turns line"])     # 50.5 %
    l4 = table[table["where"].str.contains("L4")]
    assert l4["taking turns ≤ %"].isna().all(), "no known rate ratio: no line for the L4"
    caption = A.exp_budget_caption(table)
    assert "Above the first line: sdpa_cudnn 760; below it: triton 500" in caption
    assert "0.9× cuDNN, is 684 TFLOP/s" in caption and "above the taking-turns line" in caption
    assert "no ratio of tensor-core to special-function rates" in caption
    assert "No forward here is above" not in caption


def test_exp_budget_without_rows_says_so():
    assert A.exp_budget(pd.DataFrame()).empty
    assert A.exp_budget_caption(A.exp_budget(pd.DataFrame())) == "*No forward timing rows yet.*"
    with pytest.raises(WorkbookError, match="exp_budget"):
        A.exp_budget("attention_timing")          # a name, not the rows

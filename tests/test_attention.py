"""FlashAttention: every variant computes the same function; the IO model and the ncu plumbing.

The reference is written here, in float64, from the definition softmax(QKᵀ/√d)V.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests._interpreter import needs_gpu_and_triton, needs_triton, run_in_triton_interpreter
from workbook import attention as A
from workbook import profiling, registry
from workbook.config import WorkbookError

HAS_CUDA = torch.cuda.is_available()


def reference(q, k, v, causal=False):
    """The definition, in float64, written out independently of the package."""
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        future = torch.triu(torch.ones(n, n, dtype=torch.bool, device=q.device), diagonal=1)
        s = s.masked_fill(future, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def inputs(shape, dtype=torch.float32, seed=0, device="cpu"):
    gen = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(shape, generator=gen, device=device).to(dtype) for _ in range(4)]


def rel(out, ref):
    return float((out.double() - ref.double()).norm() / ref.double().norm())


# --------------------------------------------------------------- the tiled algorithm (CPU)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_len,block_m,block_n", [(64, 16, 16), (100, 32, 16), (37, 64, 8)])
def test_tiled_forward_equals_the_definition(causal, seq_len, block_m, block_n):
    q, k, v, _ = inputs((2, 3, seq_len, 32), torch.float64)
    out, lse = A.tiled_attention_forward(q, k, v, causal=causal, block_m=block_m,
                                         block_n=block_n)
    ref = reference(q, k, v, causal)
    assert rel(out, ref) < 1e-6, (
        "the online softmax must give the exact softmax: rescaling the running sum and output "
        "by exp(m_old - m_new) whenever a tile raises the row max")
    s = q @ k.transpose(-2, -1) / math.sqrt(32)
    if causal:
        s = s.masked_fill(torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1), -math.inf)
    torch.testing.assert_close(lse.double(), torch.logsumexp(s, dim=-1), rtol=1e-5, atol=1e-5,
                               msg="lse must be the row's log-sum-exp: the backward rebuilds P "
                                   "from it as exp(s - lse)")


@pytest.mark.parametrize("causal", [False, True])
def test_recomputation_backward_equals_autograd_of_the_definition(causal):
    q, k, v, dout = inputs((1, 2, 90, 16), torch.float64, seed=1)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    reference(*leaves, causal=causal).backward(dout)
    out, lse = A.tiled_attention_forward(q, k, v, causal=causal, block_m=32, block_n=32)
    grads = A.tiled_attention_backward(q, k, v, out, lse, dout, causal=causal, block_m=40)
    for name, got, leaf in zip("qkv", grads, leaves, strict=True):
        torch.testing.assert_close(got.double(), leaf.grad, rtol=1e-5, atol=1e-6,
                                   msg=f"d{name} from P recomputed out of the saved "
                                       f"log-sum-exp must equal autograd's d{name}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("variant", ["vanilla", "sdpa_math", "sdpa_flash", "tiled"])
def test_cpu_variants_agree_with_float64(variant, dtype):
    q, k, v, _ = inputs((1, 2, 70, 64), A.DTYPES[dtype], seed=2)
    for causal in (False, True):
        out = A.attention(q, k, v, variant=variant, causal=causal)
        err = rel(out, reference(q, k, v, causal))
        assert err < A.TOLERANCE[dtype], (
            f"{variant} ({dtype}, causal={causal}) is off by {err:.2e}; rounding in {dtype} "
            f"explains at most {A.TOLERANCE[dtype]:.0e}")


def test_bad_input_is_one_line():
    q, k, v, _ = inputs((1, 2, 16, 64))
    with pytest.raises(WorkbookError, match="share one shape"):
        A.attention(q, k[:, :, :8], v)
    with pytest.raises(WorkbookError, match="choose one of"):
        A.attention(q, k, v, variant="fastest")
    with pytest.raises(WorkbookError, match="no float32 kernel"):
        A.attention(q, k, v, variant="triton")
    with pytest.raises(WorkbookError, match="head_dim=96"):
        A.attention(*inputs((1, 1, 8, 96), torch.bfloat16)[:3], variant="triton")
    if not HAS_CUDA:
        with pytest.raises(WorkbookError, match="only on an NVIDIA GPU"):
            A.attention(q, k, v, variant="sdpa_efficient")


def test_bad_head_dim_for_the_triton_kernel():
    reason = A.unsupported("triton", "cuda", "bfloat16", 96)
    assert reason is not None and "allowed: 64, 128" in reason, reason


def test_launch_options_the_kernel_would_not_take_or_would_ignore_are_one_line(monkeypatch):
    # a timing of an option that did not run would read as that option's (issue 22's scripts)
    from workbook.attention import flash_triton as F

    F.check_launch({"num_warps": 8, "PAIR": True, "LAZY": True}, tma=True, fixed_tiles=True)
    cases = [({"OVERLAP": True}, False, "allowed: num_warps, num_stages .the rest need the TMA"),
             ({"OVERLAPP": True}, True, r"\['OVERLAPP'\] are not taken here; allowed: "),
             ({"LAZY": True}, True, "LAZY changes PAIR's plain loop only"),
             ({"PAIR": True, "OVERLAP": True, "EXP16": True}, True, "EXP16 changes PAIR's")]
    for launch, tma, message in cases:
        with pytest.raises(WorkbookError, match=message):
            F.check_launch(launch, tma=tma, fixed_tiles=True)
    with pytest.raises(WorkbookError, match="launch options go with fixed tiles"):
        F.check_launch({"num_warps": 4}, tma=False, fixed_tiles=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(WorkbookError, match="EXP16 is PTX inline assembly: on an NVIDIA GPU"):
        F.check_launch({"PAIR": True, "EXP16": True}, tma=True, fixed_tiles=True)
    monkeypatch.delenv("TRITON_INTERPRET")


# ----------------------------------------------------------------------- the analytic model


def test_io_model_counts():
    n, d = 1024, 64
    assert A.io_bytes("minimum", n, d, dtype_bytes=2) == 4 * n * d * 2, "Q, K, V in; O out"
    steps = A.vanilla_io_steps(n, d)
    assert steps["reads"].sum() + steps["writes"].sum() == 6 * n * d + 4 * n * n, (
        "vanilla forward: S written, read by softmax, P written, read by PV: 4 N² elements")
    fb = A.vanilla_io_steps(n, d, mode="fwd+bwd")
    assert fb["reads"].sum() + fb["writes"].sum() == 16 * n * d + 11 * n * n
    tiles = A.io_bytes("flash_no_l2", 4096, 128, block_m=128, dtype_bytes=1)
    assert tiles == 2 * 4096 * 128 + 2 * 4096 * 128 * 32, "K, V re-read once per Q tile"
    ratio = [A.io_bytes("vanilla", m, d) / A.io_bytes("minimum", m, d) for m in (512, 4096)]
    assert ratio[1] > 5 * ratio[0], "vanilla's excess grows with N (the N² term)"


def test_gpt2_medium_model_against_the_paper():
    """Paper Fig. 2: standard attention moved 40.3 GB. Our kernel-by-kernel model of the same
    shape is a lower bound (the paper's version also masks and applies dropout)."""
    kw = dict(batch=64, n_heads=16, dtype_bytes=2, mode="fwd+bwd")
    vanilla = A.io_bytes("vanilla", 1024, 64, **kw) / 1e9
    minimum = A.io_bytes("minimum", 1024, 64, **kw) / 1e9
    assert 20 < vanilla < A.PAPER_FIG2["standard"]["hbm_gb"], vanilla
    assert minimum < A.PAPER_FIG2["flash"]["hbm_gb"], "FlashAttention can't beat the minimum"
    assert A.flops(1024, 64, batch=64, n_heads=16) == 4 * 1024**2 * 64 * 64 * 16


def test_flops_causal_and_backward():
    assert A.flops(256, 64, causal=True) == A.flops(256, 64) / 2
    assert A.flops(256, 64, mode="fwd+bwd") == 3.5 * A.flops(256, 64)


def test_memory_hierarchy_of_an_h100():
    table = A.memory_hierarchy("NVIDIA H100 80GB HBM3")
    sram = table.iloc[2]
    assert 25 < sram["size (MiB)"] < 35, "132 SMs × 228 KiB ≈ 29 MiB of SRAM"
    assert table.iloc[0]["times SRAM"] > 2000, "HBM is thousands of times larger than SRAM"
    # the datasheet has HBM's bandwidth only: a dash for L2 and SRAM, never NaN
    assert table["bandwidth (GB/s)"].tolist()[1:] == ["–", "–"]
    assert table.iloc[0]["bandwidth (GB/s)"] > 1000
    facts = A.s_matrix_vs_memory(4096, 128, 4, 16, 128)
    assert facts["s_over_sram"] > 50 and facts["tile_kib"] < 228


# ------------------------------------------------------------------------ recomputation


def test_saved_bytes_vanilla_keeps_p_flash_keeps_o_and_lse():
    n, d = 256, 64
    vanilla = A.saved_bytes(A.Case("vanilla", n, d, 1, 2, "float32", mode="fwd+bwd"))
    tiled = A.saved_bytes(A.Case("tiled", n, d, 1, 2, "float32", mode="fwd+bwd"))
    assert vanilla == 2 * (n * n + n * d) * 4, "vanilla saves P (N²) and Q·scale (N·d) per head"
    assert tiled == 2 * (n * d * 4 + n * 4), "the tiled version saves only O and the lse"


# --------------------------------------------------------------------- ncu plumbing


SPIN = "at::cuda::(anonymous namespace)::spin_kernel(long)"
READ, WRITE = "dram__bytes_read.sum", "dram__bytes_write.sum"


def _ncu_line(*fields: str) -> str:
    """One row of ncu's --csv 'details' page: ID, process, host, kernel, ..., metric."""
    i, kernel, metric, unit, value = fields
    cells = (i, "1", "python", "h", kernel, "1", "7", "Command line profiler metrics",
             metric, unit, value)
    return ",".join(f'"{c}"' for c in cells)


NCU_CSV = "\n".join([
    "==PROF== Connected to process 1",
    _ncu_line("ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value").replace(
        '"1","python","h"', '"Process ID","Process Name","Host Name"').replace(
        '"1","7","Command line profiler metrics"', '"Context","Stream","Section Name"'),
    _ncu_line("0", SPIN, READ, "byte", "0"), _ncu_line("0", SPIN, WRITE, "byte", "0"),
    _ncu_line("1", "_attn_fwd", READ, "byte", "1,000,000"),
    _ncu_line("1", "_attn_fwd", WRITE, "byte", "250,000"),
    _ncu_line("2", SPIN, READ, "byte", "0"),
    _ncu_line("3", "gemm", READ, "Kbyte", "2"),
    _ncu_line("4", "softmax", WRITE, "byte", "500"),
])


def test_ncu_csv_is_split_into_cases_by_the_marker_kernel():
    kernels = profiling.parse_ncu_csv(NCU_CSV)
    assert [k["name"][:5] for k in kernels] == ["at::c", "_attn", "at::c", "gemm", "softm"]
    segments = profiling.split_by_marker(kernels)
    assert [len(s) for s in segments] == [1, 2], "one segment per profiled case"
    assert segments[0][0]["read"] == 1e6 and segments[1][0]["read"] == 2e3, (
        "thousands separators and units (Kbyte) must be read as bytes")
    cases = [A.Case("triton", 64), A.Case("vanilla", 64), A.Case("vanilla", 10**5)]
    report = [{"profiled": True, "status": "ok", "error": ""},
              {"profiled": True, "status": "ok", "error": ""},
              {"profiled": False, "status": "oom", "error": "out of memory"}]
    rows = pd.DataFrame(A.hbm_rows(cases, report, kernels, ""))
    total = rows[rows["metric"] == "hbm_bytes"].set_index("seq_len")["value"]
    assert total[64].tolist() == [1.25e-3, 2.5e-6], "GB per case: read + write"
    assert (rows[rows["seq_len"] == 10**5]["status"] == "oom").all(), "OOM is a row"


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU fallback")
def test_no_gpu_means_unsupported_rows_not_a_crash():
    rows = pd.DataFrame(A.measure_hbm([A.Case("vanilla", 128)]))
    assert rows["status"].tolist() == ["unsupported"] and "GPU" in rows["error"][0]


# ------------------------------------------------------------------ experiments (small)


@pytest.mark.parametrize("name", ["attention_exactness", "attention_traffic",
                                  "attention_gpt2_medium", "attention_recompute",
                                  "attention_timing"])
def test_small_presets_give_tidy_rows(name):
    rows = registry.execute(name, "small", seed=0)
    assert {"variant", "seq_len", "metric", "value", "source", "status"} <= set(rows.columns)
    ok = rows[rows["status"] == "ok"]
    assert len(ok) > 0, f"{name} produced no good rows on a CPU"
    if name == "attention_exactness":
        bad = ok[ok["value"] > ok["band"]]
        assert bad.empty, f"variants outside their dtype's error band:\n{bad}"
    if name == "attention_traffic":
        assert set(ok["source"]) == {"predicted"}, "no GPU: only the model's bytes are numbers"


def test_bad_config_is_one_line():
    with pytest.raises(WorkbookError, match="seq_len"):
        registry.get("attention_traffic").config("small", seq_lens=(8,))


def test_gpt2_table_sets_paper_numbers_beside_ours():
    rows = pd.DataFrame([
        {"variant": "vanilla", "metric": "hbm_bytes", "value": 30.0, "status": "ok"},
        {"variant": "sdpa_flash", "metric": "hbm_bytes", "value": 3.0, "status": "ok"}])
    table = A.gpt2_table(rows).set_index("variant")
    assert table.loc["vanilla", "paper HBM GB (A100)"] == 40.3
    assert table.loc["sdpa_flash", "paper HBM GB (A100)"] == 4.4


# -------------------------------------------------------------- the Triton kernel


def _interpreter_checks() -> None:
    """Run in a child with TRITON_INTERPRET=1 (Triton reads it when the kernel is decorated).

    float16 only: the 3.6 interpreter computes bf16 tl.dot wrongly; the GPU test covers bf16.
    """
    from workbook.attention import flash_triton, flash_triton_backward

    for head_dim, causal, seq_len in ((64, False, 50), (128, True, 97), (64, True, 64)):
        q, k, v, _ = inputs((1, 2, seq_len, head_dim), torch.float16, seed=3)
        out, lse = flash_triton.flash_forward(q, k, v, causal=causal)
        err = rel(out, reference(q, k, v, causal))
        assert err < A.TOLERANCE["float16"], (
            f"Triton kernel (hd={head_dim}, causal={causal}, N={seq_len}) is off by {err:.1e}")
        _, lse_ref = A.tiled_attention_forward(q, k, v, causal=causal)
        torch.testing.assert_close(lse, lse_ref, rtol=1e-4, atol=1e-4,
                                   msg="kernel and tiled PyTorch must agree on the lse")
    # The backward kernels against float64 autograd: in float32 the algorithm alone is tested
    # (no half-precision rounding), in float16 what a GPU run computes. Sequence lengths that
    # the tiles do not divide, causal and not, both head sizes.
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 5e-3)):
        for head_dim, causal, seq_len in ((64, False, 50), (64, True, 97), (128, True, 40)):
            q, k, v, dout = inputs((1, 2, seq_len, head_dim), dtype, seed=4)
            leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
            flash_triton_backward.flash_attention(*leaves, causal=causal).backward(dout)
            ref = [t.double().requires_grad_(True) for t in (q, k, v)]
            reference(*ref, causal=causal).backward(dout.double())
            for name, got, want in zip("qkv", leaves, ref, strict=True):
                err = rel(got.grad, want.grad)
                assert err < tol, (f"Triton backward d{name} ({dtype}, hd={head_dim}, "
                                   f"causal={causal}, N={seq_len}) is off by {err:.1e}")
    # The TMA kernel asked for where it cannot run (no GPU here): one line naming what it needs.
    with pytest.raises(WorkbookError, match="use_tma=True: the TMA kernel needs a Hopper"):
        flash_triton.flash_forward(q, k, v, use_tma=True)
    print("interpreter checks passed")


@needs_triton
def test_triton_kernel_in_the_interpreter():
    run_in_triton_interpreter("tests.test_attention", "_interpreter_checks")


def _atomic_dq_checks() -> None:
    """dq_mode="atomic" (dQ added by atomics inside the dK/dV kernel) gives the gradients of
    the separate dQ pass and of float64 autograd: partial tiles, causal and not."""
    from workbook.attention import flash_triton
    from workbook.attention import flash_triton_backward as B

    for head_dim, causal, seq_len in ((64, False, 50), (64, True, 97), (128, True, 40)):
        q, k, v, dout = inputs((1, 2, seq_len, head_dim), torch.float32, seed=5)
        out, lse = flash_triton.flash_forward(q, k, v, causal=causal)
        ref = [t.double().requires_grad_(True) for t in (q, k, v)]
        reference(*ref, causal=causal).backward(dout.double())
        split = B.flash_backward(q, k, v, out, lse, dout, causal=causal)
        fused = B.flash_backward(q, k, v, out, lse, dout, causal=causal, dq_mode="atomic")
        for name, a, b, want in zip("qkv", split, fused, ref, strict=True):
            assert rel(b, want.grad) < 1e-5 and rel(a, b) < 1e-5, (
                f"atomic d{name} (hd={head_dim}, causal={causal}, N={seq_len}): "
                f"{rel(b, want.grad):.1e} from float64, {rel(a, b):.1e} from the dQ pass")
    with pytest.raises(WorkbookError, match="dq_mode='both'; allowed: 'pass', 'atomic'"):
        B.flash_backward(q, k, v, out, lse, dout, dq_mode="both")
    print("atomic dQ checks passed")


def _tma_overlap_checks() -> None:
    """The TMA forward, plain, hand-pipelined (OVERLAP: tile j+1's QKᵀ issued before tile j's
    softmax), persistent (PERSISTENT: 3 programs here, each looping over the 8 tiles of two
    heads) and paired (PAIR: a program's 32 rows are two halves of 16 that share each K/V
    tile; with OVERLAP, pipelined half against half), against float64: outputs and
    log-sum-exp, causal and not, both head sizes."""
    from workbook.attention import flash_triton as F

    options = ({}, {"OVERLAP": True}, {"PERSISTENT": 3}, {"PERSISTENT": 3, "OVERLAP": True},
               {"PAIR": True}, {"PAIR": True, "OVERLAP": True}, {"PAIR": True, "PERSISTENT": 3},
               {"PAIR": True, "LAZY": True})
    for head_dim, causal in ((64, False), (64, True), (128, False), (128, True)):
        q, k, v, _ = inputs((1, 2, 128, head_dim), torch.float32, seed=6)
        s = q.double() @ k.double().transpose(-2, -1) / math.sqrt(head_dim)
        if causal:
            s = s.masked_fill(torch.ones(128, 128, dtype=torch.bool).triu(1), float("-inf"))
        for option in options:
            out, lse = F.flash_forward(q, k, v, causal=causal, block_m=32, block_n=16,
                                       use_tma=True, launch=option)
            where = f"TMA {option} hd={head_dim} causal={causal}"
            assert rel(out, reference(q, k, v, causal)) < 1e-5, where
            assert (lse.double() - torch.logsumexp(s, -1)).abs().max() < 1e-5, where
    # LAZY keeps a stale max until a row's max grows by more than 2^8: keys whose scores grow
    # along the sequence make it rescale at some tiles and not at others
    q, k, v, _ = inputs((1, 2, 256, 64), torch.float32, seed=8)
    k = k * torch.linspace(0.5, 12.0, 256)[:, None]
    for causal in (False, True):
        s = q.double() @ k.double().transpose(-2, -1) / 8.0
        if causal:
            s = s.masked_fill(torch.ones(256, 256, dtype=torch.bool).triu(1), float("-inf"))
        out, lse = F.flash_forward(q, k, v, causal=causal, block_m=32, block_n=16,
                                   use_tma=True, launch={"PAIR": True, "LAZY": True})
        assert rel(out, reference(q, k, v, causal)) < 1e-5, f"LAZY causal={causal}"
        assert (lse.double() - torch.logsumexp(s, -1)).abs().max() < 1e-4, f"LAZY lse {causal}"
    with pytest.raises(WorkbookError, match="launch options go with fixed tiles"):
        F.flash_forward(q, k, v, launch={"num_warps": 4})
    with pytest.raises(WorkbookError, match="EXP16 is PTX inline assembly"):
        F.flash_forward(q, k, v, block_m=32, block_n=16, use_tma=True,
                        launch={"PAIR": True, "EXP16": True})
    with pytest.raises(WorkbookError, match="PAIR: half of block_m=32 must be a multiple of "
                                            "block_n=32"):
        F.flash_forward(q, k, v, block_m=32, block_n=32, use_tma=True, launch={"PAIR": True})
    print("TMA overlap checks passed")


def _tma_backward_checks() -> None:
    """The TMA backward (Q/dO and K/V tiles fetched by descriptors) against float64 autograd
    and against the portable kernels: causal and not, both head sizes, two tilings; asked for
    where it cannot run, one line."""
    from workbook.attention import flash_triton as F
    from workbook.attention import flash_triton_backward as B

    for head_dim, causal, seq_len in ((64, False, 128), (64, True, 256), (128, True, 128)):
        q, k, v, dout = inputs((1, 2, seq_len, head_dim), torch.float32, seed=7)
        out, lse = F.flash_forward(q, k, v, causal=causal)
        ref = [t.double().requires_grad_(True) for t in (q, k, v)]
        reference(*ref, causal=causal).backward(dout.double())
        portable = B.flash_backward(q, k, v, out, lse, dout, causal=causal, use_tma=False)
        for tiles in ((16, 32, 32, 16), (32, 32, 32, 32)):
            got = B.flash_backward(q, k, v, out, lse, dout, causal=causal, tiles=tiles,
                                   use_tma=True)
            for name, g, want, p in zip("qkv", got, ref, portable, strict=True):
                where = f"TMA backward d{name} hd={head_dim} causal={causal} tiles={tiles}"
                assert rel(g, want.grad) < 1e-5 and rel(g, p) < 1e-5, where
    with pytest.raises(WorkbookError, match="use_tma=True: the TMA backward needs"):
        B.flash_backward(q, k, v, out, lse, dout, use_tma=True, dq_mode="atomic")
    with pytest.raises(WorkbookError, match="launch options go with fixed tiles"):
        B.flash_backward(q, k, v, out, lse, dout, launch={"num_warps": 4})
    with pytest.raises(WorkbookError, match="allowed: num_warps, num_stages"):
        B.flash_backward(q, k, v, out, lse, dout, tiles=(16, 32, 32, 16), launch={"PAIR": True})
    for use_tma in (True, False):  # one check of the tiles, before either path's kernels
        with pytest.raises(WorkbookError, match=r"tiles=\(32, 16, 32, 16\): the dK/dV tile's"):
            B.flash_backward(q, k, v, out, lse, dout, tiles=(32, 16, 32, 16), use_tma=use_tma)
    q, k, v, dout = inputs((1, 1, 50, 64), torch.float32, seed=7)
    out, lse = F.flash_forward(q, k, v)
    with pytest.raises(WorkbookError, match="seq_len a multiple of 128 .* got seq_len=50"):
        B.flash_backward(q, k, v, out, lse, dout, use_tma=True)
    print("TMA backward checks passed")


@needs_triton
def test_tma_backward_in_the_interpreter():
    # Issue 22: the backward's tiles fetched by the Tensor Memory Accelerator, as the forward's
    run_in_triton_interpreter("tests.test_attention", "_tma_backward_checks")


@needs_triton
def test_tma_forward_overlapped_and_persistent_in_the_interpreter():
    # Issue 22: FA3's overlap of one tile's softmax with the next tile's QKᵀ, written by hand,
    # and a persistent grid (a program per SM slot, looping over tiles)
    run_in_triton_interpreter("tests.test_attention", "_tma_overlap_checks")


@needs_gpu_and_triton
@pytest.mark.parametrize("causal", [False, True])
def test_atomic_dq_backward_on_the_gpu(causal):
    # the autotuned fused kernel (its trials reset the float32 dQ: reset_to_zero) in bf16
    from workbook.attention import flash_triton
    from workbook.attention import flash_triton_backward as B
    q, k, v, dout = inputs((2, 3, 384, 128), torch.bfloat16, device="cuda")
    out, lse = flash_triton.flash_forward(q, k, v, causal=causal)
    split = B.flash_backward(q, k, v, out, lse, dout, causal=causal)
    fused = B.flash_backward(q, k, v, out, lse, dout, causal=causal, dq_mode="atomic")
    for name, a, b in zip("qkv", split, fused, strict=True):
        assert rel(b, a) < A.TOLERANCE["bfloat16"], f"d{name}: {rel(b, a):.1e} from the dQ pass"


@needs_triton
def test_atomic_dq_backward_in_the_interpreter():
    # Issue 22: FlashAttention-2 adds dQ by atomics (5 products per tile pair, not 7); the
    # GPU decides which is faster, the interpreter that both are right
    run_in_triton_interpreter("tests.test_attention", "_atomic_dq_checks")


@needs_gpu_and_triton
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_len", [333, 384])  # odd: the pointer kernel; 3 x 128: TMA on Hopper
@pytest.mark.parametrize("tuned", [True, False])  # autotuned, or the fixed tiles exactness uses
def test_triton_kernels_on_the_gpu(dtype, head_dim, causal, seq_len, tuned):
    # forward and backward through the Triton kernels against float64
    q, k, v, dout = inputs((2, 3, seq_len, head_dim), A.DTYPES[dtype], device="cuda")
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = A.attention(*leaves, variant="triton", causal=causal, tuned=tuned)
    ref = [t.double().requires_grad_(True) for t in (q, k, v)]
    ref_out = reference(*ref, causal=causal)
    err = rel(out, ref_out)
    assert err < A.TOLERANCE[dtype], f"Triton {dtype} hd={head_dim} causal={causal}: {err:.1e}"
    out.backward(dout)
    ref_out.backward(dout.double())
    for name, got, want in zip("qkv", leaves, ref, strict=True):
        err = rel(got.grad, want.grad)
        assert err < 2 * A.TOLERANCE[dtype], (
            f"d{name} {dtype} hd={head_dim} causal={causal}: {err:.1e}")


@needs_gpu_and_triton
def test_remembered_autotune_picks_give_the_first_calls_numbers():
    # The first call autotunes; later calls launch the remembered picks directly (forward:
    # flash_triton_hopper._TUNED_TMA, backward: TUNED_BACKWARD): same kernels, same numbers
    from workbook.attention import flash_triton as F
    from workbook.attention import flash_triton_backward as B
    q, k, v, dout = inputs((2, 3, 384, 128), torch.bfloat16, device="cuda")
    runs = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = A.attention(*leaves, variant="triton", causal=True)
        out.backward(dout)
        runs.append([out.detach(), *(t.grad for t in leaves)])
    if F.tma_applies(q, k, v):
        assert (384, 128, True, torch.bfloat16, q.device) in B.TUNED_BACKWARD
    for name, first, later in zip(("out", "dq", "dk", "dv"), *runs, strict=True):
        assert torch.equal(first, later), f"{name} differs once the picks are remembered"


@needs_triton
def test_each_element_type_has_its_own_tma_autotuners():
    # Triton's autotuner adds its arguments' dtypes to the shape key, but a tensor descriptor
    # has none: one autotuner for all types gave bfloat16 the pick it timed for float16, and
    # compiled no other bfloat16 binary (07's Run All compiled three mid-notebook, H100)
    from workbook.attention import flash_triton_backward as B
    from workbook.attention import flash_triton_hopper as H
    for tuned in (H.tuned_forward_tma, B.tuned_backward_tma):
        assert tuned(torch.float16) is tuned(torch.float16)
        assert tuned(torch.float16) is not tuned(torch.bfloat16)


@needs_gpu_and_triton
def test_bfloat16_is_autotuned_after_float16_at_the_same_shape():
    from workbook.attention import flash_triton as F
    from workbook.attention import flash_triton_backward as B
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v, dout = inputs((1, 2, 640, 64), dtype, device="cuda")
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        A.attention(*leaves, variant="triton", causal=True).backward(dout)
    if F.tma_applies(q, k, v):
        for tuner in B.tuned_backward_tma(torch.bfloat16):
            assert any(key[:3] == (640, 64, True) for key in tuner.cache), tuner.cache


@needs_gpu_and_triton
# WARP_SPEC at 8 warps: at 4 it does not compile with triton 3.6 (the H200, b349a260868c:
# "PassManager::run failed" in NVGPUWarpSpecialization), as FORWARD_TMA_CONFIGS' notes say
@pytest.mark.parametrize("option", [{"WARP_SPEC": False}, {"WARP_SPEC": True, "num_warps": 8},
                                    {"OVERLAP": True}, {"OVERLAP": True, "num_warps": 8},
                                    {"PERSISTENT": 2}, {"PERSISTENT": 1, "OVERLAP": True},
                                    {"PAIR": True, "num_warps": 8},
                                    {"PAIR": True, "LAZY": True, "num_warps": 8},
                                    {"PAIR": True, "EXP16": True, "num_warps": 8}])
def test_tma_kernel_with_fixed_tiles_matches_the_reference(option):
    """use_tma=True with fixed tiles: the configuration a tuning script tries (Hopper only)."""
    from workbook.attention import flash_triton as F

    q, k, v, _ = inputs((2, 3, 384, 128), torch.bfloat16, device="cuda")
    if not F.tma_applies(q, k, v):
        pytest.skip("the TMA kernel needs a Hopper GPU or newer")
    launch = {"num_warps": 4, "num_stages": 3, **option}
    for causal in (False, True):
        out, _ = F.flash_forward(q, k, v, causal=causal, block_m=128, block_n=64,
                                 use_tma=True, launch=launch)
        assert rel(out, reference(q, k, v, causal)) < A.TOLERANCE["bfloat16"]


@needs_triton
def test_fixed_tiles_are_configurations_the_autotuner_offers():
    """tuned=False (attention_exactness) runs one configuration per kernel: it must be one the
    autotuned kernels may pick (so it fits where they fit) and obey each kernel's divisibility."""
    from workbook.attention import flash_triton as F
    from workbook.attention import flash_triton_backward as B

    def offered(configs, tiles, launch):
        return any(c.kwargs == tiles and c.num_warps == launch["num_warps"]
                   and c.num_stages == launch["num_stages"] for c in configs)

    fwd = {k: v for k, v in F.FIXED_FORWARD.items() if k.startswith("BLOCK")}
    assert offered(F.FORWARD_CONFIGS, fwd, F.FIXED_FORWARD)
    assert fwd["BLOCK_M"] % fwd["BLOCK_N"] == 0
    m1, n1, m2, n2 = B.FIXED_BACKWARD
    assert offered(B.DKDV_CONFIGS, {"BLOCK_M": m1, "BLOCK_N": n1}, B.FIXED_BACKWARD_LAUNCH)
    assert offered(B.DQ_CONFIGS, {"BLOCK_M": m2, "BLOCK_N": n2}, B.FIXED_BACKWARD_LAUNCH)
    assert n1 % m1 == 0 and m2 % n2 == 0


def test_tuned_is_a_flag():
    q = torch.zeros(1, 1, 4, 8)
    with pytest.raises(WorkbookError, match="tuned"):
        A.attention(q, q, q, variant="vanilla", tuned="no")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
@pytest.mark.parametrize("variant", ["vanilla", "sdpa_math", "sdpa_efficient", "sdpa_flash",
                                     "sdpa_cudnn", "flash_attn", "tiled"])
def test_gpu_variants_agree_with_float64(variant):
    q, k, v, _ = inputs((2, 4, 300, 64), torch.bfloat16, device="cuda")
    try:
        out = A.attention(q, k, v, variant=variant, causal=True)
    except WorkbookError as exc:
        pytest.skip(str(exc))
    assert rel(out, reference(q, k, v, True)) < A.TOLERANCE["bfloat16"]


# --------------------------------------------------------------------- notebook helpers


def test_size_explorer_moves_with_the_sliders():
    explorer = A.size_explorer("H100")
    before = list(explorer.fig.data[0].y)
    explorer.set(head_dim=64, tile=64)
    assert explorer.last_error is None, explorer.last_error
    assert list(explorer.fig.data[0].y) != before, "the vanilla curve must follow head_dim"
    explorer.set(seq_len=65536, batch=64)
    assert "all SRAM" in explorer.message.value
    (line,), (name,) = explorer.fig.layout.shapes, explorer.fig.layout.annotations
    assert line.x0 == 65536 and name.text == "seq_len = 65,536", "the dotted line is named"
    assert abs(name.x - math.log10(65536)) < 1e-9, "annotations on a log axis take log10(x)"


def test_targets_are_computed_from_rows_not_typed_in():
    def row(variant, metric, value, **kw):
        base = {"seq_len": 4096, "head_dim": 128, "mode": "fwd", "causal": False}
        return {**base, **kw, "variant": variant, "metric": metric, "value": value,
                "status": "ok"}

    minimum = A.io_bytes("minimum", 4096, 128, batch=2, n_heads=16) / 1e9
    traffic = pd.DataFrame([row("model: minimum", "hbm_bytes", minimum),
                            row("triton", "hbm_bytes", 1.3 * minimum),
                            row("triton", "hbm_read", 0.75 * minimum)])
    timing = pd.DataFrame([row(v, "throughput", tf, head_dim=d, causal=c)
                           for d in (64, 128) for c in (False, True)
                           for v, tf in (("triton", 200.0), ("sdpa_flash", 300.0))])
    gpt2 = pd.DataFrame([row("vanilla", "hbm_bytes", 30.0), row("sdpa_flash", "hbm_bytes", 3.0)])
    table = A.targets(traffic, timing, gpt2).set_index("target")
    assert table["met"].iloc[0] == "NO", "1.3× the minimum misses the ≤ 1.15× target"
    assert set(table["met"].iloc[2:6]) == {"NO"}, "2/3 of FA2's throughput misses ≥ 0.8×"
    assert table["measured"].iloc[-1] == 10.0
    kernel = table[table.index.str.contains("sdpa_cudnn|fwd\\+bwd TFLOP")]
    assert len(kernel) == 4 and set(kernel["met"]) == {"not measured"}, kernel
    # issue 22's rows, each call alone and queued: 0.85× cuDNN misses 0.9, 0.95× meets it
    timing = pd.concat([timing[(timing["head_dim"] != 128) | timing["causal"]], pd.DataFrame(
        [row(v, metric, tf, seq_len=n, mode=mode)
         for n, mode in ((4096, "fwd"), (16384, "fwd"), (16384, "fwd+bwd"))
         for metric, scale in (("throughput", 0.85), ("gpu_throughput", 0.95))
         for v, tf in (("triton", 100.0 * scale), ("sdpa_cudnn", 100.0),
                       ("sdpa_flash", 100.0))])])
    table = A.targets(traffic, timing, gpt2).set_index("target")
    fwd = table[table.index.str.contains("sdpa_cudnn fwd TFLOP")]
    assert list(fwd["met"]) == ["NO", "yes", "NO", "yes"], fwd
    both = table[table.index.str.contains("fwd\\+bwd TFLOP")]
    assert list(both["met"]) == ["NO", "NO", "yes", "yes"], both
    # fwd+bwd HBM bytes against FlashAttention-2's: 1.4x misses the 1.3x bound, 1.2x meets it
    target = "Triton / SDPA FA2 fwd+bwd HBM bytes (N=4096, d=128)"
    assert table.loc[target, "met"] == "not measured"
    for triton_gb, met in ((1.4, "NO"), (1.2, "yes")):
        extra = pd.DataFrame([row(v, "hbm_bytes", gb, mode="fwd+bwd")
                              for v, gb in (("triton", triton_gb), ("sdpa_flash", 1.0))])
        table = A.targets(pd.concat([traffic, extra]), timing, gpt2).set_index("target")
        assert table.loc[target, "met"] == met and table.loc[target, "measured"] == triton_gb


def test_kernel_source_shows_forward_and_backward_kernels():
    forward, backward = A.kernel_source("forward"), A.kernel_source("backward")
    assert "def _attn_fwd(" in forward and "def _tile_loop(" in forward
    for name in A.KERNELS["backward"][1]:
        assert f"def {name}(" in backward, f"07 must show {name}"
    fa3 = A.kernel_source("forward_fa3")
    assert "def _producer" in fa3 and "def _consumer" in fa3 and "warpgroup_mma_wait(1" in fa3
    tma = A.kernel_source("backward_tma")
    for name in ("_attn_bwd_dkdv_tma", "_attn_bwd_dq_tma"):
        assert f"def {name}(" in tma and f"def {name}(" not in backward, name
    with pytest.raises(WorkbookError, match="part='sideways'"):
        A.kernel_source("sideways")


def _row(variant, metric, value, **kw):
    base = {"seq_len": 4096, "head_dim": 128, "mode": "fwd", "causal": False,
            "device": "NVIDIA H200", "source": "recorded", "n_gpus": 1}
    return {**base, **kw, "variant": variant, "metric": metric, "value": value, "status": "ok"}


def test_traffic_caption_prints_reads_and_writes_against_q_k_v_and_o():
    traffic = pd.DataFrame([_row("model: minimum", "hbm_bytes", 4.0, seq_len=n)
                            for n in (512, 4096)]
                           + [_row("triton", "hbm_read", 3.3, seq_len=4096),
                              _row("triton", "hbm_write", 0.5, seq_len=4096),
                              _row("triton", "hbm_read", 3.0, seq_len=512),
                              _row("triton", "hbm_write", 0.0, seq_len=512)])
    text = A.traffic_caption(traffic)
    assert "N = 512: read 1.00×, wrote 0.00×; N = 4,096: read 1.10×, wrote 0.50×" in text, text
    assert "No Triton" in A.traffic_caption(traffic[traffic["variant"] != "triton"])


def test_speedup_caption_says_where_the_gain_is_largest():
    def timing(vanilla):
        return pd.DataFrame([_row(v, "time", t, seq_len=n, mode="fwd+bwd")
                             for n, tv in zip((512, 8192), vanilla, strict=True)
                             for v, t in (("vanilla", tv), ("sdpa_flash", 1.0))])

    falls = A.speedup_caption(timing((3.0, 1.5)))
    assert "N = 512: 3.00×, N = 8,192: 1.50×" in falls, falls
    assert "largest gain is at N = 512, not at the longest" in falls, falls
    assert "at N = 8,192, the longest N timed" in A.speedup_caption(timing((1.5, 5.0)))
    assert "No vanilla" in A.speedup_caption(timing((1.5, 5.0)).query("variant == 'vanilla'"))


def test_the_lectures_generations_are_judged_at_the_longest_n_all_three_were_timed():
    times = {4096: (10.0, 1.0, 0.6), 8192: (40.0, 4.0, 2.5), 16384: (None, 16.0, 9.0)}
    timing = pd.DataFrame([_row(v, "time", t, seq_len=n, mode="fwd+bwd")
                           for n, ts in times.items()
                           for v, t in zip(("vanilla", "sdpa_flash", "sdpa_cudnn"), ts,
                                           strict=True) if t is not None])
    empty = pd.DataFrame(columns=list(_row("x", "time", 0.0)))
    table = A.claims(empty, timing, empty, empty).set_index("claim")
    rows = table[table.index.str.contains("N = 8,192")]
    assert len(rows) == 3, "vanilla has no time at 16,384: the three are judged at 8,192"
    fa2, fa3, fa3_std = (rows.filter(like=k, axis=0).iloc[0] for k in
                         ("FlashAttention-2 ~10×", "further 1.5-2×", "FlashAttention-3 ~20×"))
    assert (fa2["measured"], fa2["verdict"]) == (10.0, "holds")
    assert (fa3["measured"], fa3["verdict"]) == (1.6, "holds")
    assert fa3_std["measured"] == 16.0 and fa3_std["verdict"].startswith("off")
    ampere = A.claims(empty, timing.assign(device="NVIDIA A100-SXM4-80GB"), empty, empty)
    fa3_rows = ampere[ampere["claim"].str.startswith("FlashAttention-3")]
    assert len(fa3_rows) == 2 and fa3_rows["measured"].isna().all(), "no FA3 before Hopper"


def test_the_lectures_memory_row_and_its_speedups_by_n_come_from_the_rows():
    gpt2 = pd.DataFrame([_row(v, m, x, mode="fwd+bwd") for v, xs in
                         {"vanilla": (40.0, 40.0, 8.4), "sdpa_flash": (4.0, 8.0, 1.8)}.items()
                         for m, x in zip(("hbm_bytes", "time", "extra_peak_memory"), xs,
                                         strict=True)])
    timing = pd.DataFrame([_row(v, "time", t, seq_len=n, mode="fwd+bwd")
                           for n, (tv, tf) in {512: (1.7, 1.0), 2048: (3.0, 1.0),
                                               8192: (5.4, 1.0)}.items()
                           for v, t in (("vanilla", tv), ("sdpa_flash", tf))])
    empty = pd.DataFrame(columns=list(_row("x", "time", 0.0)))
    table = A.claims(empty, timing, gpt2, empty).set_index("claim")
    memory = table.loc["extra memory ~4.7× less (GPT-2 medium, fwd+bwd; 4.2 vs 0.9 GB)"]
    assert memory["measured"] == pytest.approx(8.4 / 1.8) and memory["verdict"] == "holds"
    speedups = table[table.index.str.startswith("longer sequences")]
    assert list(speedups["predicted"]) == [1.7, 5.1, 5.4]
    assert list(speedups["measured"]) == [1.7, 3.0, 5.4]
    assert list(speedups["verdict"].str[:3]) == ["hol", "off", "hol"]


def test_gpt2_caption_compares_vanilla_and_triton_with_flash_attention_2():
    values = {"vanilla": (30.0, 9.0, 8.0), "sdpa_flash": (3.0, 4.0, 0.5),
              "triton": (2.4, 3.0, 0.1)}
    gpt2 = pd.DataFrame([_row(v, m, x, mode="fwd+bwd")
                         for v, xs in values.items()
                         for m, x in zip(("hbm_bytes", "time", "extra_peak_memory"), xs,
                                         strict=True)])
    text = A.gpt2_caption(gpt2)
    assert "vanilla / sdpa_flash: HBM bytes 10.00×, time 2.25×, extra memory 16.00×" in text
    assert "triton / sdpa_flash: HBM bytes 0.80×, time 0.75×, extra memory 0.20×" in text
    assert "No GPT-2" in A.gpt2_caption(gpt2.query("variant != 'sdpa_flash'"))


def test_exactness_caption_counts_output_and_gradients_against_their_band():
    rows = pd.DataFrame([
        {"variant": "triton", "dtype": "float16", "band": 2e-3, "metric": "rel_error",
         "value": 1e-3, "status": "ok", "device": "GPU"},
        {"variant": "triton", "dtype": "float16", "band": 2e-3, "metric": "rel_error_grad",
         "value": 3e-3, "status": "ok", "device": "GPU"}])
    text = A.exactness_caption(rows)
    assert "this machine (GPU): 1 of 2" in text
    assert "triton float16 gradients 3.0e-03 > 2e-03 (this machine (GPU))" in text
    assert set(A.exactness_table(rows).index.get_level_values("of")) == {"output", "gradients"}


def test_exactness_counts_and_labels_each_device_apart():
    """Live rows read 'this machine (…)', recorded ones 'recorded on <device>, <date>'; the
    caption counts each device's errors on their own, this machine's first."""
    base = {"variant": "triton", "dtype": "float16", "band": 2e-3, "status": "ok", "n_gpus": 1}
    rows = pd.DataFrame([
        {**base, "metric": m, "value": 1e-3, "source": "measured", "device": "GPU A"}
        for m in ("rel_error", "rel_error_grad")] + [
        {**base, "metric": m, "value": v, "source": "recorded", "device": "GPU B",
         "recorded_at": "2026-11-22T10:00:00", "seed": 0}
        for m, v in (("rel_error", 1e-3), ("rel_error_grad", 5e-3))])
    text = A.exactness_caption(rows)
    assert "this machine (GPU A): 2 of 2; recorded on GPU B ×1, 2026-11-22, seed 0: 1 of 2" in text
    assert "(recorded on GPU B ×1, 2026-11-22, seed 0)" in text.split("Outside:")[1]
    wheres = A.exactness_table(rows).index.get_level_values("where")
    assert list(dict.fromkeys(wheres)) == ["this machine (GPU A)",
                                           "recorded on GPU B ×1, 2026-11-22, seed 0"]


def test_timing_caption_sets_vanilla_beside_each_fused_kernel_per_n():
    base = {"head_dim": 128, "causal": False, "status": "ok", "source": "measured",
            "device": "GPU", "n_gpus": 1, "metric": "throughput", "mode": "fwd+bwd"}
    values = {512: {"vanilla": 40, "triton": 30, "sdpa_flash": 100, "sdpa_efficient": 70},
              2048: {"vanilla": 180, "triton": 270, "sdpa_flash": 250, "sdpa_efficient": 130}}
    rows = pd.DataFrame([{**base, "seq_len": n, "variant": v, "value": x}
                         for n, at in values.items() for v, x in at.items()])
    text = A.timing_caption(rows)
    assert ("N = 512: vanilla 40; faster: triton" not in text
            and "N = 512: vanilla 40; faster: sdpa_flash 2.50×, sdpa_efficient 1.75×; "
                "slower: triton 0.75×" in text)
    assert "N = 2,048: vanilla 180; faster: triton 1.50×, sdpa_flash 1.39×; " \
           "slower: sdpa_efficient 0.72×" in text


def test_traffic_caption_prints_the_kernel_counts_per_mode():
    base = {"head_dim": 128, "causal": False, "status": "ok", "source": "measured",
            "device": "GPU", "n_gpus": 1, "seq_len": 512}
    rows = pd.DataFrame([
        {**base, "variant": "model: minimum", "metric": "hbm_bytes", "value": 4.0, "mode": "fwd"},
        {**base, "variant": "triton", "metric": "hbm_read", "value": 3.0, "mode": "fwd",
         "kernels": 1},
        {**base, "variant": "triton", "metric": "hbm_write", "value": 1.0, "mode": "fwd",
         "kernels": 1},
        {**base, "variant": "vanilla", "metric": "hbm_bytes", "value": 9.0, "mode": "fwd+bwd",
         "kernels": 12}])
    text = A.traffic_caption(rows)
    assert "forward: triton 1" in text and "forward + backward: vanilla 12" in text, text


# ------------------------------------------------- the FLOP counts, and one variant per machine


def _gpt2_block(device: str, source: str, when: str, ms: dict[str, float]) -> list[dict]:
    return [{"variant": v, "metric": m, "value": val, "source": src, "status": "ok",
             "device": device, "n_gpus": 1, "recorded_at": when, "seed": 0}
            for v, t in ms.items()
            for m, val, src in (("time", t, source), ("hbm_bytes", 30.0, source),
                                ("flops", 900.0, "predicted"))]


def test_flops_note_sets_two_counts_side_by_side_from_the_model():
    text = A.flops_note()
    shape = A.PAPER_FIG2_SHAPE
    ours = A.flops(shape["seq_len"], shape["head_dim"], batch=shape["batch"],
                   n_heads=shape["n_heads"], mode="fwd+bwd", recompute=False) / 1e9
    assert f"{ours:,.1f} (standard)" in text, text
    paper = A.PAPER_FIG2["standard"]["gflops"]
    assert f"{ours / paper:.1f}× and" in text and ours / paper > 10, "the paper counts less"
    ratio = A.PAPER_FIG2["flash"]["gflops"] / paper
    assert f"{ratio:.3f} by the paper's numbers" in text and "not a measurement" in text
    assert "include them" not in text, "the paper's count cannot be this model + elementwise"


def test_claims_hold_no_flop_row_the_device_cannot_measure():
    from workbook import results

    names = ("attention_traffic", "attention_timing", "attention_gpt2_medium",
             "attention_recompute")
    tables = [results.load(name) for name in names]
    if any(t.empty for t in tables):
        pytest.skip("no recorded attention rows")
    table = A.claims(*tables)
    assert not table["claim"].str.contains("FLOP").any(), table["claim"].tolist()
    assert table["claim"].str.startswith("runtime").any(), "the measured claims stay"


def test_machines_caption_sets_each_variant_beside_its_reached_bandwidth():
    rows = pd.DataFrame(
        _gpt2_block("NVIDIA H100 80GB HBM3", "recorded", "2026-11-22T00:00:00Z",
                    {"vanilla": 12.0, "sdpa_flash": 4.0})
        + _gpt2_block("NVIDIA H200", "measured", "2026-12-03T00:00:00Z",
                      {"vanilla": 8.0, "sdpa_flash": 4.0}))
    text = A.machines_caption(rows)
    assert "* vanilla: 12.00 ms (recorded on NVIDIA H100" in text, text
    assert "8.00 ms (this machine (NVIDIA H200)), 1.50× the speed" in text, text
    assert "2,500 → 3,750 GB/s (1.50×)" in text, "30 GB in 12 ms and in 8 ms"
    assert "3,350 → 4,800 GB/s (1.43×)" in text, "the two datasheets' HBM peaks"
    assert "sdpa_flash: 4.00 ms" in text and "1.00× the speed" in text
    one = rows[rows["device"] == "NVIDIA H200"]
    assert A.machines_caption(one).startswith("*GPT-2 medium rows of one machine only")


@needs_triton
def test_a_configurations_registers_and_shared_memory_are_read_without_a_gpu():
    # scripts/sm90_resources.py: compiled for sm_90 here (no GPU), before any device time.
    # PAIR 256x128 w8 s3 ran at half speed on the H200 (spills); its tiles also ask for more
    # shared memory than a Hopper block may use; the offered PAIR 256x64 fits
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "sm90_resources", Path(__file__).parents[1] / "scripts" / "sm90_resources.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    big = script.forward(256, 128, 8, 3, PAIR=True)
    offered = script.forward(256, 64, 8, 3, PAIR=True)
    assert big["shared_bytes"] > script.SHARED_MAX >= offered["shared_bytes"]
    assert 0 < offered["registers"] <= 255 and big["registers"] <= 255


def test_launch_kwargs_drop_the_pre_hook_of_a_pick_or_a_dict():
    # One helper for the forward's and the backward's remembered picks (they had each
    # filtered the pre_hook out of the autotuner's Config on their own)
    triton = pytest.importorskip("triton")
    from workbook.attention.flash_triton_hopper import launch_kwargs
    pick = triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3,
                         pre_hook=lambda nargs: None)
    kwargs = launch_kwargs(pick)
    assert kwargs["BLOCK_M"] == 128 and kwargs["num_warps"] == 8 and kwargs["num_stages"] == 3
    assert "pre_hook" not in kwargs
    assert launch_kwargs({"BLOCK_M": 64, "pre_hook": print}) == {"BLOCK_M": 64}


def test_warm_up_shapes_compile_what_the_full_presets_launch(monkeypatch):
    """The warm-up's small cases keep what a Triton binary is specialised on (dtype, head_dim,
    causal, fwd or fwd+bwd, heads, tuned or fixed, the length's divisibility by 16 and whole
    128-row tiles), and its length is one no preset measures (Triton stores the autotuner's
    pick per length)."""
    from workbook import registry
    from workbook.attention import measure

    ran: list[tuple[A.Case, bool]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(measure.profiling, "triton_available", lambda: True)
    monkeypatch.setattr(measure, "unsupported", lambda v, dev, dtype, d: (
        "no float32" if dtype == "float32" else None))
    monkeypatch.setattr(measure, "make_step", lambda case, seed, tuned: (
        lambda: ran.append((case, tuned))))
    measured_lengths: set[int] = set()
    for name in ("attention_exactness", "attention_traffic", "attention_timing",
                 "attention_gpt2_medium", "attention_recompute"):
        exp = registry.get(name)
        cfg = exp.config("full")
        ran.clear()
        assert exp.warm_up(cfg) == len(ran) > 0, name
        launched = {c for c in {"attention_exactness": A.exactness_cases,
                                "attention_traffic": A.traffic_cases,
                                "attention_timing": A.timing_cases,
                                "attention_gpt2_medium": A.gpt2_cases,
                                "attention_recompute": A.recompute_cases}[name](cfg)
                    if c.variant == "triton" and c.dtype != "float32"}
        measured_lengths |= {c.seq_len for c in launched}

        def kind(c: A.Case) -> tuple:
            return (c.dtype, c.head_dim, c.causal, c.mode, c.n_heads, c.seq_len % 16 == 0,
                    c.seq_len % 128 == 0)
        assert {kind(c) for c, _ in ran} == {kind(c) for c in launched}, name
        assert {tuned for _, tuned in ran} == {name != "attention_exactness"}, name
        assert all(c.batch == 1 and c.seq_len <= 1024 for c, _ in ran), name
    assert measure.WARM_SEQ_LEN not in measured_lengths
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert A.warm_triton([A.Case("triton", 512)]) == 0, "no GPU: nothing runs"

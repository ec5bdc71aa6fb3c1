"""The Gluon forward's own source, run on the CPU in the model of one SM (gluon_cpu, gluon_model).

The model first (its barriers, copies and products do what the GPU's do, and it reports what it
must), then the kernel: its outputs equal the definition in every configuration and under many
interleavings, and each edit of its barrier protocol is caught with the fault it causes.
"""

from __future__ import annotations

import random
import re
import threading

import pytest
import torch

from workbook.attention import flash_gluon as G
from workbook.attention import gluon_cpu as C
from workbook.attention.gluon_model import Descriptor, KernelFault, Machine, Pointer, kernel_globals
from workbook.config import WorkbookError


def definition(q, k, v, causal=False):
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


def inputs(seq_len=512, head_dim=32, heads=2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(1, heads, seq_len, head_dim, generator=gen, dtype=torch.float64)
            .to(dtype) for _ in range(3)]


# ---- the model on its own: two hand-written partitions ----------------------------------------


def run_partitions(*partitions, seed=0, count=1):
    machine = Machine(random.Random(seed), __file__, [])
    names = kernel_globals(machine, torch.float64)
    bar = names["gl"].allocate_shared_memory("int64", [1], None)
    names["mbarrier"].init(bar, count=count)
    names["gl"].warp_specialize([(p, (names, bar)) for p in partitions], [4], [240])
    return machine


def _waits_for_phase_0(names, bar):
    names["mbarrier"].wait(bar, 0)


def _arrives(names, bar):
    names["mbarrier"].arrive(bar, count=1)


def _waits_for_phase_1(names, bar):
    names["mbarrier"].wait(bar, 1)


def test_a_wait_passes_once_the_phase_of_its_parity_completed():
    for seed in range(5):      # in either order, the waiter gets through after the arrival
        trace = run_partitions(_waits_for_phase_0, _arrives, seed=seed).trace
        assert "bar completes phase 0" in [what for *_, what in trace]
    run_partitions(_waits_for_phase_1)    # a fresh barrier counts its phase "1" as completed


def test_a_wait_nobody_arrives_for_is_a_deadlock_naming_the_barrier_and_the_line():
    with pytest.raises(KernelFault, match=r"deadlock: waits for phase 0 test_gluon_cpu.py:\d+ "
                                          r"\(_waits_for_phase_0\) waits for bar parity 0"):
        run_partitions(_waits_for_phase_0)


def test_one_partition_arriving_twice_in_one_phase_is_a_fault():
    """A barrier of count 2 stands for two partitions' arrivals (the consumers freeing a
    buffer): two from the same one would free it early. With count 1, two arrivals are two
    phases, which is no fault."""
    def twice(names, bar):
        _arrives(names, bar)
        _arrives(names, bar)

    with pytest.raises(KernelFault, match="twice on bar in its phase 0"):
        run_partitions(twice, count=2)
    trace = run_partitions(twice, count=1).trace
    assert [what for *_, what in trace].count("bar completes phase 1") == 1


# ---- the kernel ------------------------------------------------------------------------------


def test_the_model_runs_the_kernel_file_itself():
    code = C.kernel_code()
    assert code.co_filename == str(C.SOURCE)
    names = {c.co_name for c in code.co_consts if hasattr(c, "co_name")}
    assert {"_producer", "_consumer", "_consumer_1", "_attn_fwd_gluon"} <= names


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block_n,stages", [(64, 2), (64, 3), (128, 2), (128, 3)])
@pytest.mark.parametrize("pingpong", [False, True])
def test_the_kernel_equals_the_definition_under_several_interleavings(causal, block_n, stages,
                                                                      pingpong):
    q, k, v = inputs()
    out, lse = definition(q, k, v, causal)
    for seed in range(2):
        run = C.run_gluon_on_cpu(q, k, v, causal=causal, block_n=block_n, stages=stages,
                           pingpong=pingpong, seed=seed)
        torch.testing.assert_close(run.out, out, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(run.lse, lse, rtol=1e-10, atol=1e-12)


def test_in_bfloat16_it_rounds_where_the_gpu_rounds_and_stays_within_bf16():
    q, k, v = inputs(seq_len=256, head_dim=64, heads=1, dtype=torch.bfloat16)
    out, lse = definition(q, k, v)
    run = C.run_gluon_on_cpu(q, k, v, pingpong=True, seed=3)
    assert run.out.dtype == torch.bfloat16 and run.lse.dtype == torch.float32
    torch.testing.assert_close(run.out.double(), out, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(run.lse.double(), lse, rtol=1e-3, atol=1e-3)


def test_a_seed_is_one_interleaving_reproduced_and_seeds_differ():
    q, k, v = inputs(seq_len=256, heads=1)
    first, again = (C.run_gluon_on_cpu(q, k, v, block_n=64, seed=7, trace=True) for _ in range(2))
    assert first.order == again.order and first.trace == again.trace
    orders = {C.run_gluon_on_cpu(q, k, v, block_n=64, seed=s).order for s in range(6)}
    assert len(orders) >= 4


# what the model must say when one line of the protocol is changed (PROTOCOL_EDITS, by name)
CAUGHT_AS = {
    "producer: no wait for a K buffer to be empty": "arrives twice on k_ready|TMA copy into k_smem",
    "producer: no wait for a V buffer to be empty": "v_smem|v_ready",
    "producer: waits for parity `phase`, forgetting that a fresh barrier passes parity 1":
        "deadlock:.*producer .* waits for k_empty",
    "producer: expects the bytes of one Q half, not two": "q_bar: more bytes landed|q_smem",
    "K buffers free after one warpgroup's arrival, not both": "deadlock|k_smem",
    "consumer: no wait for K_j to land": "wgmma reads k_smem.* before its TMA copy landed",
    "consumer: no wait for V_(j-1) to land": "wgmma reads v_smem.* before its TMA copy landed",
    "consumer: V_(j-1) freed before P·V is retired":
        "TMA copy into v_smem.* while a product.* still uses it",
    "consumer: P not kept alive (not in the wait's deps) while P·V reads it":
        "register operand is not among its deps",
    "consumer: waits for 2 products outstanding, not 1, before using S_j":
        "returns a product still in flight",
    "consumer: no fence between storing O and the TMA store":
        "TMA store of q_smem.*fence_async_shared",
    "consumer: returns without waiting for its TMA store": "TMA stores in flight",
    "pingpong: both warpgroups wait for the other to go first":
        "deadlock: consumer 0 .*turn\\[0\\].* consumer 1 .*turn\\[1\\]",
}
SAFE = "consumer: K_j freed before S_j is retired"


def first_fault(source, seeds=16):
    q, k, v = inputs(heads=1)
    for seed in range(seeds):
        try:
            C.run_gluon_on_cpu(q, k, v, block_n=64, stages=2, pingpong=True, seed=seed,
                               source=source)
        except KernelFault as fault:
            return str(fault)
    return None


def test_every_protocol_edit_has_its_expected_fault():
    assert {name for name, *_ in C.PROTOCOL_EDITS} == set(CAUGHT_AS) | {SAFE}


@pytest.mark.parametrize("edit", [e for e in C.PROTOCOL_EDITS if e[0] != SAFE],
                         ids=lambda e: e[0][:40])
def test_each_edit_of_the_barrier_protocol_is_caught(edit):
    threads = threading.active_count()
    fault = first_fault(C.edited_source(edit))
    assert fault is not None, f"{edit[0]}: no fault in 16 interleavings"
    assert re.search(CAUGHT_AS[edit[0]], fault), fault
    assert threading.active_count() == threads, "a fault left partition threads behind"


def test_freeing_k_before_s_retires_is_safe_behind_the_producers_order():
    """K_(j+2) is copied into S_j's buffer only after V_(j+1) was issued, which waited for
    V_(j-1)'s buffer, freed after P·V_(j-1) retired, itself after S_j: the one producer's order
    keeps the early release harmless. The model agrees, in 20 interleavings, outputs exact."""
    source = C.edited_source(next(e for e in C.PROTOCOL_EDITS if e[0] == SAFE))
    q, k, v = inputs(heads=1)
    out, _ = definition(q, k, v)
    for seed in range(20):
        run = C.run_gluon_on_cpu(q, k, v, block_n=64, pingpong=True, seed=seed, source=source)
        torch.testing.assert_close(run.out, out, rtol=1e-10, atol=1e-12)


def test_an_edit_that_no_longer_matches_the_kernel_is_an_error():
    with pytest.raises(WorkbookError, match="matches flash_gluon.py 0 times"):
        C.edited_source(("nothing", "this text is not in the kernel", ""))


@pytest.mark.parametrize("shape,kwargs,allowed", [
    # the kernel's own checks (flash_gluon.input_problem, tested with the host function) ...
    ((1, 1, 128, 32), {"block_n": 32}, "allowed: 64, 128"),
    ((1, 1, 100, 32), {}, "multiple of 128"),
    # ... with the model's wider dtypes and head_dims, and its seed
    ((1, 1, 128, 24), {}, "allowed: 16, 32, 48"), ((1, 1, 128, 32), {"seed": -1}, "0 to"),
    ((1, 1, 128, 32), {"seed": 1.5}, "an integer"), ((1, 1, 128, 32), {"pingpong": "y"}, "True")])
def test_bad_arguments_are_one_line_errors(shape, kwargs, allowed):
    q = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(WorkbookError, match=allowed) as err:
        C.run_gluon_on_cpu(q, q, q, **kwargs)
    assert "\n" not in str(err.value)
    with pytest.raises(WorkbookError, match="allowed: float64, float16, bfloat16"):
        C.run_gluon_on_cpu(*(torch.zeros(1, 1, 128, 32) for _ in range(3)))


def test_the_tables_report_every_configuration_and_every_edit():
    models = C.gluon_on_cpu_table(seeds=1, seq_len=256)
    assert len(models) == 16 and (models["fault"] == "").all()
    assert (models["max |O - definition|"] < 1e-12).all()
    edits = C.gluon_protocol_table(seeds=4, seq_len=256)
    assert list(edits["edit"]) == [name for name, *_ in C.PROTOCOL_EDITS]
    assert edits.set_index("edit").loc[SAFE, "fault seen"] == "none"


def test_the_trace_shows_each_partition_in_its_column_with_the_gpus_bytes():
    table = C.gluon_trace_table(seed=0, turns=30)
    assert list(table.columns) == ["producer", "copy engine", "consumer 0", "consumer 1"]
    assert len(table) <= 30 and (table != "").any().all()
    # bfloat16 at head_dim 128: two 64-row halves of Q, 2 bytes each, as the compiled PTX expects
    assert "expects 32768 bytes on q_bar" in table["producer"].tolist()


@pytest.mark.skipif(not G.gluon_available(), reason="Triton's Gluon is not installed")
def test_the_host_function_on_the_cpu_with_its_launch_handed_to_the_model(monkeypatch):
    """flash_forward_gluon end to end but for the GPU launch itself: its checks, Triton's
    TensorDescriptors, the grid, the constexprs and the launch options, the kernel then run in
    the model from those very descriptors (their base tensors and block rows)."""
    launches = []

    class ModelKernel:
        def __getitem__(self, grid):
            def launch(*args, num_warps, maxnreg, **constexprs):
                launches.append((grid, num_warps, maxnreg, constexprs))
                model_args = [Descriptor(a.base, a.block_shape[0]) if hasattr(a, "block_shape")
                              else Pointer(a.view(-1)) if isinstance(a, torch.Tensor) else a
                              for a in args]
                C.run_launch(grid, tuple(model_args), constexprs, acc=torch.float32, seed=2)
            return launch

    monkeypatch.setattr(G, "GLUON_FORWARD_KERNEL", ModelKernel())
    monkeypatch.setattr(G, "why_not", lambda *args: None)     # the CPU is not a Hopper GPU
    q, k, v = inputs(seq_len=256, head_dim=64, dtype=torch.float16)
    out, lse = G.flash_forward_gluon(q, k, v, causal=True, block_n=64, stages=3, pingpong=True)
    want_out, want_lse = definition(q, k, v, causal=True)
    torch.testing.assert_close(out.double(), want_out, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(lse.double(), want_lse, rtol=1e-3, atol=1e-3)
    assert launches == [((2, 2), G.CONSUMER_WARPS, G.MAX_REGS, {
        "HEAD_DIM": 64, "BLOCK_N": 64, "STAGES": 3, "CAUSAL": True, "STORE_LSE": True,
        "PINGPONG": True})]

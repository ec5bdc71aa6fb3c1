"""The FlashAttention forward written the way FlashAttention-3 arranges it on Hopper, in Gluon.

Triton decides for a ``@triton.jit`` kernel which warps load and which multiply, and how deep
the loads run ahead (:mod:`.flash_triton_hopper` tried every option it offers; issue 22's logs).
Gluon, Triton's lower-level dialect, lets the kernel say it itself, which is what FA3 does in
CUDA. This file is that arrangement, written to be read beside FA3's paper (Shah et al. 2024):

* **Warp specialisation.** One *producer* warp does nothing but issue TMA copies: the Q tile
  once, then K and V tiles into a ring of ``STAGES`` shared-memory buffers, each with a
  "ready" mbarrier (the copy landed) and an "empty" one (the consumers are done with it).
  The producer gives most of its registers away (24 per thread), so the consumers get 240.
* **Two consumer warpgroups** (4 warps each: the default partition and a second worker): each
  owns 64 of the tile's 128 query rows, issues its own ``wgmma`` (S = Q·Kᵀ from shared memory,
  O += P·V with P in registers: it never goes back to shared memory) and writes its own rows
  of O. They share every K/V buffer, which is free again when both have arrived on its
  "empty" barrier; nothing else makes one wait for the other.
* **Intra-warpgroup overlap** (FA3's Algorithm 2): the tensor cores compute S for tile j+1
  and P·V for tile j while the same warps run the softmax of tile j+1, by issuing both
  ``wgmma`` asynchronously and waiting for them one at a time. The softmax's exponentials
  (the special-function unit) then hide under the matrix products instead of between them.
* **Pingpong** (``pingpong=True``; FA3's inter-warpgroup overlap): the two warpgroups take
  turns issuing their products, through a pair of "turn" mbarriers, so that one's softmax
  runs while the other's products hold the tensor cores.

The online softmax itself is the one of :mod:`.flash_triton` (read that first): a running row
maximum ``m`` and sum ``l`` in log2 units, O rescaled by ``alpha = 2^(m_old - m_new)``.

Gluon kernels run on Hopper or newer GPUs only: Triton's interpreter does not run them, so the
CPU tests compile this kernel for sm_90 and read its registers, spills and shared memory
(:func:`workbook.profiling.kernel_resources`), and run this file's source in a model of one SM
(:mod:`.gluon_cpu`: barriers, copies in flight, interleavings; the outputs against the
definition); the GPU test checks its outputs against PyTorch's.

Timed on the H200 (2026-12-05, Triton 3.6, B4 H16 d 128 bf16, calls queued; ``scripts/
gpu_flash_forward_tuning.py --gluon``, log ``data/results/logs/flash_gluon_fa72692c5360.txt``):
ring 2 with 128-row K/V tiles ran 696/655/638 TFLOP/s at N = 4k/8k/16k beside cuDNN's
681/632/623 and the TMA kernel's best 553/558/540; a ring of 3 and pingpong gained nothing,
64-row K/V tiles lost. So :func:`.flash_triton.flash_forward` runs this kernel (ring 2,
128-row tiles) on Hopper wherever it applies.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from workbook.config import WorkbookError, check_flag, check_range

HEAD_DIMS: tuple[int, ...] = (64, 128)
BLOCK_M = 128          # query rows per program: two consumer warpgroups of 64 rows each
HALF_M = BLOCK_M // 2  # the rows of one warpgroup (wgmma's M is 64 per warpgroup)
CONSUMER_WARPS = 4     # the default partition is one consumer warpgroup, a worker the other
# Registers per thread at launch: 12 warps (two consumer warpgroups, the producer's warp
# padded to a warpgroup) of 32 threads share the SM's 65,536, so at most 170 each (168, a
# multiple of 8); the producer then keeps 24 (the minimum) and the consumers get 240 each
# (setmaxnreg; the kernel's warp_specialize call asks for these two numbers).
MAX_REGS = 168
STAGES_ALLOWED: tuple[int, ...] = (2, 3)
BLOCK_N_ALLOWED: tuple[int, ...] = (64, 128)


@functools.cache
def gluon_available() -> bool:
    """Triton with its Gluon dialect and Hopper's primitives is importable (Triton 3.5 on;
    an older Triton, or none, has no ``triton.experimental.gluon``)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        return importlib.util.find_spec("triton.experimental.gluon.language.nvidia.hopper") \
            is not None
    except ImportError:  # a parent package missing
        return False


if gluon_available():
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )

    # TMA copies: async_copy_global_to_shared / async_copy_shared_to_global in 3.6, renamed
    # async_load / async_store later (the old names then raise)
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global

    @gluon.jit
    def _producer(desc_q, desc_k, desc_v, q_smem, k_smem, v_smem, bars, row_q, row_kv,
                  n_tiles, BLOCK_N: gl.constexpr):
        """One warp: both halves of the Q tile, then every K and V tile through the ring."""
        q_bar, k_ready, v_ready, k_empty, v_empty, _ = bars
        STAGES: gl.constexpr = k_smem.type.shape[0]
        HALF: gl.constexpr = desc_q.block_type.shape[0]
        mbarrier.expect(q_bar, 2 * desc_q.block_type.nbytes)
        _tma_load(desc_q, [row_q, 0], q_bar, q_smem.index(0))
        _tma_load(desc_q, [row_q + HALF, 0], q_bar, q_smem.index(1))
        for j in range(n_tiles):
            stage = j % STAGES
            phase = (j // STAGES) & 1
            # a fresh mbarrier counts as having completed phase 1: the first STAGES waits pass
            mbarrier.wait(k_empty.index(stage), phase ^ 1)
            mbarrier.expect(k_ready.index(stage), desc_k.block_type.nbytes)
            _tma_load(desc_k, [row_kv + j * BLOCK_N, 0], k_ready.index(stage),
                      k_smem.index(stage))
            mbarrier.wait(v_empty.index(stage), phase ^ 1)
            mbarrier.expect(v_ready.index(stage), desc_v.block_type.nbytes)
            _tma_load(desc_v, [row_kv + j * BLOCK_N, 0], v_ready.index(stage),
                      v_smem.index(stage))

    @gluon.jit
    def _softmax_step(s, m_i, l_i, qk_scale):
        """One tile's online-softmax update from its unscaled scores: (P, alpha, l, m)."""
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))   # scale folded into one FMA
        alpha = gl.exp2(m_i - m_new)
        return p, alpha, l_i * alpha + gl.sum(p, 1), m_new

    @gluon.jit
    def _causal_mask(s, j, first_row, n_full, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
        """-inf above the diagonal, on the tiles that cross it (index >= n_full) only."""
        if CAUSAL:
            if j >= n_full:
                ROWS: gl.constexpr = s.type.shape[0]
                rows = first_row + gl.arange(0, ROWS, gl.SliceLayout(1, s.type.layout))
                cols = j * BLOCK_N + gl.arange(0, BLOCK_N, gl.SliceLayout(0, s.type.layout))
                keep = gl.expand_dims(rows, 1) >= gl.expand_dims(cols, 0)
                s = gl.where(keep, s, float("-inf"))
        return s

    @gluon.jit
    def _my_turn(turn, n, WG: gl.constexpr, PINGPONG: gl.constexpr):
        """Pingpong: warpgroup WG's n-th issue of matrix products waits until the other one
        has issued its own (warpgroup 0 goes first: a fresh barrier passes a parity-1 wait)."""
        if PINGPONG:
            mbarrier.wait(turn.index(WG), (n & 1) ^ (1 - WG))

    @gluon.jit
    def _your_turn(turn, WG: gl.constexpr, PINGPONG: gl.constexpr):
        """Pingpong: this warpgroup's products are issued; the other may issue its own."""
        if PINGPONG:
            mbarrier.arrive(turn.index(1 - WG), count=1)

    @gluon.jit
    def _consumer(desc_o, LSE, q_smem, k_smem, v_smem, bars, n_tiles, n_full, first_row,
                  row_kv, qk_scale, WG: gl.constexpr, BLOCK_N: gl.constexpr,
                  HEAD_DIM: gl.constexpr, CAUSAL: gl.constexpr, STORE_LSE: gl.constexpr,
                  PINGPONG: gl.constexpr):
        """Warpgroup WG, 64 query rows (its half of the tile): S = Q·Kᵀ and O += P·V on the
        tensor cores, the softmax between; tile j's P·V and tile j+1's S in flight while tile
        j+1's softmax runs. Then its rows of O (and the log-sum-exp) out. PINGPONG: the two
        warpgroups take turns issuing their products (FA3's inter-warpgroup overlap), so
        that one's softmax runs while the other's products occupy the tensor cores."""
        q_bar, k_ready, v_ready, k_empty, v_empty, turn = bars
        STAGES: gl.constexpr = k_smem.type.shape[0]
        ROWS: gl.constexpr = q_smem.type.shape[1]
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16])
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout,
                                                     k_width=2)
        dtype: gl.constexpr = q_smem.dtype
        q = q_smem.index(WG)
        s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)

        mbarrier.wait(q_bar, 0)
        # tile 0: its scores and softmax, before the loop
        mbarrier.wait(k_ready.index(0), 0)
        _my_turn(turn, 0, WG, PINGPONG)
        s = warpgroup_mma(q, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False)
        _your_turn(turn, WG, PINGPONG)
        mbarrier.arrive(k_empty.index(0), count=1)      # one of the two warpgroups' arrivals
        s = _causal_mask(s, 0, first_row, n_full, BLOCK_N, CAUSAL)
        m_i = gl.full([ROWS], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
        l_i = gl.zeros([ROWS], gl.float32, gl.SliceLayout(1, s_layout))
        p, alpha, l_i, m_i = _softmax_step(s, m_i, l_i, qk_scale)
        p_op = gl.convert_layout(p.to(dtype), p_layout)
        o = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
        for j in range(1, n_tiles):
            stage = j % STAGES
            prev = (j - 1) % STAGES
            # issue S_j = Q·K_jᵀ, then O += P_(j-1)·V_(j-1), both asynchronous
            mbarrier.wait(k_ready.index(stage), (j // STAGES) & 1)
            mbarrier.wait(v_ready.index(prev), ((j - 1) // STAGES) & 1)
            _my_turn(turn, j, WG, PINGPONG)
            s_tok = warpgroup_mma(q, k_smem.index(stage).permute((1, 0)), s_zero,
                                  use_acc=False, is_async=True)
            o_tok = warpgroup_mma(p_op, v_smem.index(prev), o, is_async=True)
            _your_turn(turn, WG, PINGPONG)
            # the older of the two (S_j) done, P·V may still run: softmax of tile j under it
            s, _ = warpgroup_mma_wait(1, deps=(s_tok, k_smem.index(stage)))
            mbarrier.arrive(k_empty.index(stage), count=1)
            s = _causal_mask(s, j, first_row, n_full, BLOCK_N, CAUSAL)
            p, alpha, l_i, m_i = _softmax_step(s, m_i, l_i, qk_scale)
            # P_(j-1) stays live until its product is done (wgmma reads it from registers)
            o, _, _ = warpgroup_mma_wait(0, deps=(o_tok, p_op, v_smem.index(prev)))
            mbarrier.arrive(v_empty.index(prev), count=1)
            o = o * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
            p_op = gl.convert_layout(p.to(dtype), p_layout)
        last = (n_tiles - 1) % STAGES
        mbarrier.wait(v_ready.index(last), ((n_tiles - 1) // STAGES) & 1)
        _my_turn(turn, n_tiles, WG, PINGPONG)
        o = warpgroup_mma(p_op, v_smem.index(last), o)
        _your_turn(turn, WG, PINGPONG)
        l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
        # the epilogue: O through shared memory (this half's Q buffer, free now), one TMA store
        q.store((o / gl.expand_dims(l_o, 1)).to(desc_o.dtype))
        fence_async_shared()
        _tma_store(desc_o, [row_kv + first_row, 0], q)
        if STORE_LSE:   # natural-log units, as the backward reads it
            lse2 = gl.convert_layout(m_i, gl.SliceLayout(1, o_layout)) + gl.log2(l_o)
            rows = first_row + gl.arange(0, ROWS, gl.SliceLayout(1, o_layout))
            gl.store(LSE + row_kv + rows, lse2 / 1.4426950408889634)
        tma.store_wait(0)

    @gluon.jit
    def _consumer_1(desc_o, LSE, q_smem, k_smem, v_smem, bars, n_tiles, n_full, first_row,
                    row_kv, qk_scale, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                    CAUSAL: gl.constexpr, STORE_LSE: gl.constexpr, PINGPONG: gl.constexpr):
        """The second warpgroup: the tile's lower 64 rows."""
        _consumer(desc_o, LSE, q_smem, k_smem, v_smem, bars, n_tiles, n_full,
                  first_row + q_smem.type.shape[1], row_kv, qk_scale, 1, BLOCK_N, HEAD_DIM,
                  CAUSAL, STORE_LSE, PINGPONG)

    @gluon.jit
    def _attn_fwd_gluon(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len,
                        HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                        CAUSAL: gl.constexpr, STORE_LSE: gl.constexpr,
                        PINGPONG: gl.constexpr = False):
        """One program: 2 x 64 query rows of one (batch, head), grid (tiles, batch·heads), over
        (batch·heads·seq_len, HEAD_DIM) views; Q and O descriptors are 64-row halves."""
        HALF: gl.constexpr = desc_q.block_type.shape[0]
        start_m = gl.program_id(0)
        off_bh = gl.program_id(1)
        row_kv = off_bh * seq_len                                   # this head's first row
        first_row = start_m * 2 * HALF
        # causal: the tiles wholly below the diagonal, then the ones that cross it
        n_full = first_row // BLOCK_N if CAUSAL else seq_len // BLOCK_N
        n_tiles = (first_row + 2 * HALF) // BLOCK_N if CAUSAL else seq_len // BLOCK_N

        q_smem = gl.allocate_shared_memory(desc_q.dtype, [2] + desc_q.block_type.shape,
                                           desc_q.layout)
        k_smem = gl.allocate_shared_memory(desc_k.dtype, [STAGES] + desc_k.block_type.shape,
                                           desc_k.layout)
        v_smem = gl.allocate_shared_memory(desc_v.dtype, [STAGES] + desc_v.block_type.shape,
                                           desc_v.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        for i in gl.static_range(STAGES):
            mbarrier.init(k_ready.index(i), count=1)
            mbarrier.init(v_ready.index(i), count=1)
            mbarrier.init(k_empty.index(i), count=2)    # freed when both warpgroups are done
            mbarrier.init(v_empty.index(i), count=2)
        turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        mbarrier.init(turn.index(0), count=1)
        mbarrier.init(turn.index(1), count=1)
        bars = (q_bar, k_ready, v_ready, k_empty, v_empty, turn)

        gl.warp_specialize([
            (_consumer, (desc_o, LSE, q_smem, k_smem, v_smem, bars, n_tiles, n_full, first_row,
                         row_kv, qk_scale, 0, BLOCK_N, HEAD_DIM, CAUSAL, STORE_LSE, PINGPONG)),
            (_consumer_1, (desc_o, LSE, q_smem, k_smem, v_smem, bars, n_tiles, n_full,
                           first_row, row_kv, qk_scale, BLOCK_N, HEAD_DIM, CAUSAL, STORE_LSE,
                           PINGPONG)),
            (_producer, (desc_q, desc_k, desc_v, q_smem, k_smem, v_smem, bars,
                         row_kv + first_row, row_kv, n_tiles, BLOCK_N)),
        ], [4, 1], [240, 24])


def input_problem(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_n: int, stages: int,
                  *, dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16),
                  head_dims: tuple[int, ...] = HEAD_DIMS) -> str | None:
    """What is wrong with these inputs and tiles for the kernel, in one line naming what is
    allowed, or None. The CPU model (:mod:`.gluon_cpu`) allows more dtypes and head_dims."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        return f"q, k, v must share one shape (batch, n_heads, seq_len, head_dim); got " \
               f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
    if q.shape[-1] not in head_dims:
        return f"head_dim={q.shape[-1]}; allowed: {', '.join(map(str, head_dims))}"
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        return f"dtype {q.dtype}; allowed: {names} (one dtype for q, k and v)"
    if q.shape[2] % BLOCK_M or not all(t.is_contiguous() for t in (q, k, v)):
        return f"seq_len must be a multiple of {BLOCK_M} and q, k, v contiguous; got " \
               f"seq_len={q.shape[2]}"
    if block_n not in BLOCK_N_ALLOWED:
        return f"block_n={block_n}; allowed: {', '.join(map(str, BLOCK_N_ALLOWED))}"
    if stages not in STAGES_ALLOWED:
        return f"stages={stages}; allowed: {', '.join(map(str, STAGES_ALLOWED))}"
    return None


def why_not(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_n: int = 128,
            stages: int = 2) -> str | None:
    """None if the Gluon forward runs on these tensors here, else why not, in one line (bad
    input first, whatever the machine; then what this machine lacks)."""
    problem = input_problem(q, k, v, block_n, stages)
    if problem:
        return problem
    if not gluon_available():
        return "the Gluon forward needs Triton with triton.experimental.gluon (3.5 or newer)"
    if q.device.type != "cuda" or torch.cuda.get_device_capability(q.device)[0] < 9:
        return "the Gluon forward needs a Hopper or newer GPU (wgmma, TMA); Triton's " \
               "interpreter does not run Gluon"
    return None


def descriptor_layout(block: list[int], dtype: torch.dtype):
    """The swizzled shared-memory layout a TMA tile of ``block`` lands in (wgmma reads it).
    Made once per block and dtype: a layout is immutable, and making it is a third of the
    host's Python work per call (the host path is what a reader's single call waits for)."""
    return _shared_layout(tuple(block), dtype)


@functools.cache
def _shared_layout(block: tuple[int, ...], dtype: torch.dtype):
    from triton.experimental.gluon import language as gl
    return gl.NVMMASharedLayout.get_default_for(
        list(block), gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)


def flash_forward_gluon(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                        causal: bool = False, scale: float | None = None,
                        store_lse: bool = True, block_n: int = 128, stages: int = 2,
                        pingpong: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(O, log-sum-exp per row or None), as :func:`.flash_triton.flash_forward` returns them.
    ``block_n``: K/V rows per tile; ``stages``: K/V tiles the producer may run ahead;
    ``pingpong``: the two consumer warpgroups take turns issuing their matrix products."""
    for name, flag in (("causal", causal), ("store_lse", store_lse), ("pingpong", pingpong)):
        check_flag(name, flag)
    if scale is not None:
        check_range("scale", scale, 1e-6, 1e3)
    reason = why_not(q, k, v, block_n, stages)
    if reason:
        raise WorkbookError(reason)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    batch, n_heads, seq_len, head_dim = q.shape
    out = torch.empty_like(q)
    lse = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32) \
        if store_lse else torch.empty(1, device=q.device, dtype=torch.float32)

    def desc(rows: torch.Tensor, block_rows: int):
        block = [block_rows, head_dim]
        return TensorDescriptor(rows, list(rows.shape), [head_dim, 1], block,
                                descriptor_layout(block, q.dtype))

    grid, args, constexprs = launch_arguments(
        q, k, v, out, lse, scale=scale, causal=causal, store_lse=store_lse, block_n=block_n,
        stages=stages, pingpong=pingpong, descriptor=desc)
    GLUON_FORWARD_KERNEL[grid](*args, **constexprs, num_warps=CONSUMER_WARPS,
                               maxnreg=MAX_REGS)
    return out, (lse if store_lse else None)


def launch_arguments(q, k, v, out, lse, *, scale: float | None, causal: bool, store_lse: bool,
                     block_n: int, stages: int, pingpong: bool, descriptor):
    """The grid, arguments and constexprs of one launch: one program per 128 query rows of one
    (batch, head); Q and O through descriptors of 64-row halves (one per consumer warpgroup), K
    and V of ``block_n`` rows, all over (batch·heads·seq_len, head_dim) views.
    ``descriptor(rows, block_rows)`` makes a descriptor: Triton's on the GPU, the model's in
    :mod:`.gluon_cpu`, which launches the kernel through this function too."""
    batch, n_heads, seq_len, head_dim = q.shape
    rows = [t.view(batch * n_heads * seq_len, head_dim) for t in (q, k, v, out)]
    scale = head_dim ** -0.5 if scale is None else scale
    args = (descriptor(rows[0], HALF_M), descriptor(rows[1], block_n),
            descriptor(rows[2], block_n), descriptor(rows[3], HALF_M), lse,
            scale * 1.4426950408889634, seq_len)
    constexprs = {"HEAD_DIM": head_dim, "BLOCK_N": block_n, "STAGES": stages,
                  "CAUSAL": causal, "STORE_LSE": store_lse, "PINGPONG": pingpong}
    return (seq_len // BLOCK_M, batch * n_heads), args, constexprs


def resources(block_n: int = 128, stages: int = 2, causal: bool = False, head_dim: int = 128,
              dtype: torch.dtype = torch.bfloat16, arch: int = 90, pingpong: bool = False
              ) -> dict[str, int]:
    """Registers at launch, spill bytes and shared memory of one configuration, compiled for
    ``sm_<arch>`` on this machine (no GPU needed): what scripts/sm90_resources.py prints and
    the CPU tests check (no spills; shared memory within the 227 KiB a block may use)."""
    from workbook.profiling import kernel_resources

    short = {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]

    def desc(rows: int) -> str:
        layout = descriptor_layout([rows, head_dim], dtype)
        return f"tensordesc<{short}[{rows},{head_dim}],{layout!r}>"

    signature = {"desc_q": desc(HALF_M), "desc_k": desc(block_n), "desc_v": desc(block_n),
                 "desc_o": desc(HALF_M), "LSE": "*fp32", "qk_scale": "fp32", "seq_len": "i32"}
    constexprs = {"HEAD_DIM": head_dim, "BLOCK_N": block_n, "STAGES": stages, "CAUSAL": causal,
                  "STORE_LSE": True, "PINGPONG": pingpong}
    signature.update(dict.fromkeys(constexprs, "constexpr"))
    return kernel_resources(_attn_fwd_gluon, signature, constexprs, num_warps=CONSUMER_WARPS,
                            arch=arch, maxnreg=MAX_REGS)


# the kernel flash_forward_gluon launches (the CPU model's test hands this launch to the model)
GLUON_FORWARD_KERNEL = _attn_fwd_gluon if gluon_available() else None

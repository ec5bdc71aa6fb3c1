"""The workbook's FlashAttention forward on Hopper (and newer) GPUs, through TMA.

The algorithm of :mod:`workbook.attention.flash_triton` (read that first), with two Hopper
habits: K and V tiles are fetched by the Tensor Memory Accelerator from host-side tensor
descriptors (one asynchronous instruction per tile, which lets Triton pipeline the loads
under the wgmma matmuls), and the softmax scale is folded into the exponent (one FMA per score
instead of a multiply and a subtract). Beside the plain loop, the launch options FA3 and FA4
suggest, each timed on an H200 by ``scripts/gpu_flash_forward_tuning.py`` (the notes above
:data:`FORWARD_TMA_CONFIGS` and the logs in ``data/results/logs/``): the hand-pipelined loop
(OVERLAP), a persistent grid (PERSISTENT), programs of two halves sharing each K/V tile
(PAIR), lazy rescaling (LAZY) and float16 exponentials (EXP16).

:func:`workbook.attention.flash_triton.flash_forward` calls :func:`flash_forward_tma` when the
GPU is Hopper or newer and the sequence splits into whole 128-row tiles (a TMA tile must not
straddle two heads): :func:`tma_applies`; where Triton has Gluon it runs the Gluon forward
(:mod:`.flash_gluon`, faster on the H200) instead, and ``use_tma=True`` still picks this one.
``TRITON_INTERPRET=1`` runs it on a CPU, slowly.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from workbook.profiling import interpreting, triton_available

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _tma_tiles(acc, l_i, m_i, q, desc_k, desc_v, row0, offs_m, offs_n, lo, hi, qk_scale,
                   BLOCK_N: tl.constexpr, CAUSAL_MASK: tl.constexpr, WARP_SPEC: tl.constexpr):
        # WARP_SPEC: producer warps issue the TMA loads, consumer warps do the math (FA3's idea)
        for start_n in tl.range(lo, hi, BLOCK_N, warp_specialize=WARP_SPEC):
            k = desc_k.load([row0 + start_n, 0])                   # (BLOCK_N, HEAD_DIM), TMA
            s = tl.dot(q, k.T)                                     # unscaled scores
            if CAUSAL_MASK:
                s = tl.where(offs_m[:, None] >= (start_n + offs_n)[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            p = tl.math.exp2(s * qk_scale - m_new[:, None])        # scale folded: one FMA
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = desc_v.load([row0 + start_n, 0])
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _exp2_f16x2(x):
        """2^x for float16 ``x``, two values per instruction of the GPU's special-function
        unit (PTX ``ex2.approx.f16x2``), where float32's ``exp2`` takes one instruction each.
        PTX inline assembly: on an NVIDIA GPU only, not in Triton's interpreter."""
        return tl.inline_asm_elementwise("ex2.approx.f16x2 $0, $1;", "=r,r", [x],
                                         dtype=tl.float16, is_pure=True, pack=2)

    @triton.jit
    def _softmax_pv(acc, l_i, m_i, s, v, qk_scale, LAZY: tl.constexpr = False,
                    EXP16: tl.constexpr = False):
        """One tile's online-softmax update from its (unscaled) scores ``s``, then P·V.

        LAZY (FlashAttention-4's habit): the running max, and with it the rescaling of acc
        and l, moves only when some row's max has grown by more than 8 (log2 units, a factor
        of 256); until then P is taken against the stale max, its entries at most 256, which
        fp32 sums and bf16 hold. Exact all the same: the output divides by l, and the
        log-sum-exp is m + log2(l), whichever m was used.

        EXP16: the exponentials in float16, two per instruction (:func:`_exp2_f16x2`): P
        goes to the P·V product in 16 bits anyway, and the sum l takes the same rounded
        values, so the softmax stays normalised; the arguments (≤ 0) lose float32's digits."""
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        if LAZY:
            if tl.max(m_new - m_i, 0) > 8.0:
                alpha = tl.math.exp2(m_i - m_new)
                acc = acc * alpha[:, None]
                l_i = l_i * alpha
                m_i = m_new
            p = tl.math.exp2(s * qk_scale - m_i[:, None])
            l_i = l_i + tl.sum(p, 1)
            return tl.dot(p.to(v.dtype), v, acc), l_i, m_i
        if EXP16:
            p16 = _exp2_f16x2((s * qk_scale - m_new[:, None]).to(tl.float16))
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p16.to(tl.float32), 1)
            return tl.dot(p16.to(v.dtype), v, acc * alpha[:, None]), l_i, m_new
        p = tl.math.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        return tl.dot(p.to(v.dtype), v, acc * alpha[:, None]), l_i, m_new

    @triton.jit
    def _tma_tiles_overlap(acc, l_i, m_i, q, desc_k, desc_v, row0, lo, hi, qk_scale,
                           BLOCK_N: tl.constexpr):
        """:func:`_tma_tiles` without masks, software-pipelined by hand (FA3's intra-warpgroup
        overlap): tile j+1's Q·Kᵀ is issued before tile j's softmax, so the asynchronous
        matmul runs on the tensor cores while the exponentials run on the other units."""
        if hi > lo:
            s = tl.dot(q, desc_k.load([row0 + lo, 0]).T)
            for start_n in range(lo, hi - BLOCK_N, BLOCK_N):
                s_next = tl.dot(q, desc_k.load([row0 + start_n + BLOCK_N, 0]).T)
                acc, l_i, m_i = _softmax_pv(acc, l_i, m_i, s, desc_v.load([row0 + start_n, 0]),
                                            qk_scale)
                s = s_next
            acc, l_i, m_i = _softmax_pv(acc, l_i, m_i, s, desc_v.load([row0 + hi - BLOCK_N, 0]),
                                        qk_scale)
        return acc, l_i, m_i

    @triton.jit
    def _tma_tiles_pair(acc0, l0, m0, acc1, l1, m1, q0, q1, desc_k, desc_v, row0, lo, hi,
                        qk_scale, BLOCK_N: tl.constexpr, WARP_SPEC: tl.constexpr,
                        LAZY: tl.constexpr, EXP16: tl.constexpr):
        """Two query tiles of one program against each K/V tile, without masks (PAIR): K and
        V are fetched once for both (half the loads per FLOP), and the two halves are
        independent chains, so one half's exponentials can run under the other's matmul
        (FA3's ping-pong of two warpgroups, here left to the compiler's scheduling)."""
        for start_n in tl.range(lo, hi, BLOCK_N, warp_specialize=WARP_SPEC):
            k = desc_k.load([row0 + start_n, 0]).T
            s0 = tl.dot(q0, k)
            s1 = tl.dot(q1, k)
            v = desc_v.load([row0 + start_n, 0])
            acc0, l0, m0 = _softmax_pv(acc0, l0, m0, s0, v, qk_scale, LAZY, EXP16)
            acc1, l1, m1 = _softmax_pv(acc1, l1, m1, s1, v, qk_scale, LAZY, EXP16)
        return acc0, l0, m0, acc1, l1, m1

    @triton.jit
    def _tma_tiles_pair_overlap(acc0, l0, m0, acc1, l1, m1, q0, q1, desc_k, desc_v, row0, lo,
                                hi, qk_scale, BLOCK_N: tl.constexpr):
        """:func:`_tma_tiles_pair` software-pipelined by hand (PAIR and OVERLAP): each half's
        next Q·Kᵀ is issued right after its own softmax, so it runs on the tensor cores while
        the other half's exponentials run (FA3's ping-pong, written out in one program)."""
        if hi > lo:
            k = desc_k.load([row0 + lo, 0]).T
            s0 = tl.dot(q0, k)
            s1 = tl.dot(q1, k)
            for start_n in range(lo, hi - BLOCK_N, BLOCK_N):
                k = desc_k.load([row0 + start_n + BLOCK_N, 0]).T
                v = desc_v.load([row0 + start_n, 0])
                acc0, l0, m0 = _softmax_pv(acc0, l0, m0, s0, v, qk_scale)
                s0 = tl.dot(q0, k)
                acc1, l1, m1 = _softmax_pv(acc1, l1, m1, s1, v, qk_scale)
                s1 = tl.dot(q1, k)
            v = desc_v.load([row0 + hi - BLOCK_N, 0])
            acc0, l0, m0 = _softmax_pv(acc0, l0, m0, s0, v, qk_scale)
            acc1, l1, m1 = _softmax_pv(acc1, l1, m1, s1, v, qk_scale)
        return acc0, l0, m0, acc1, l1, m1

    @triton.jit
    def _tma_tile_pair(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len, start_m, off_bh,
                       HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr, WARP_SPEC: tl.constexpr,
                       OVERLAP: tl.constexpr, LAZY: tl.constexpr, EXP16: tl.constexpr):
        """:func:`_tma_tile` for a program that owns two halves of BLOCK_M rows (PAIR); the
        causal diagonal is then done half by half with the masked loop."""
        HALF: tl.constexpr = BLOCK_M // 2
        row0 = off_bh * seq_len
        first = start_m * BLOCK_M
        offs0 = first + tl.arange(0, HALF)
        offs_n = tl.arange(0, BLOCK_N)
        q0 = desc_q.load([row0 + first, 0])
        q1 = desc_q.load([row0 + first + HALF, 0])
        m0 = tl.full([HALF], float("-inf"), dtype=tl.float32)
        m1 = tl.full([HALF], float("-inf"), dtype=tl.float32)
        l0 = tl.zeros([HALF], dtype=tl.float32)
        l1 = tl.zeros([HALF], dtype=tl.float32)
        acc0 = tl.zeros([HALF, HEAD_DIM], dtype=tl.float32)
        acc1 = tl.zeros([HALF, HEAD_DIM], dtype=tl.float32)
        if OVERLAP:
            acc0, l0, m0, acc1, l1, m1 = _tma_tiles_pair_overlap(
                acc0, l0, m0, acc1, l1, m1, q0, q1, desc_k, desc_v, row0, 0,
                first if CAUSAL else seq_len, qk_scale, BLOCK_N)
        else:
            acc0, l0, m0, acc1, l1, m1 = _tma_tiles_pair(
                acc0, l0, m0, acc1, l1, m1, q0, q1, desc_k, desc_v, row0, 0,
                first if CAUSAL else seq_len, qk_scale, BLOCK_N, WARP_SPEC, LAZY, EXP16)
        if CAUSAL:
            acc0, l0, m0 = _tma_tiles(acc0, l0, m0, q0, desc_k, desc_v, row0, offs0, offs_n,
                                      first, first + HALF, qk_scale, BLOCK_N, True, WARP_SPEC)
            acc1, l1, m1 = _tma_tiles(acc1, l1, m1, q1, desc_k, desc_v, row0, offs0 + HALF,
                                      offs_n, first, first + BLOCK_M, qk_scale, BLOCK_N, True,
                                      WARP_SPEC)
        desc_o.store([row0 + first, 0], (acc0 / l0[:, None]).to(desc_o.dtype))
        desc_o.store([row0 + first + HALF, 0], (acc1 / l1[:, None]).to(desc_o.dtype))
        if STORE_LSE:
            tl.store(LSE + off_bh * seq_len + offs0, (m0 + tl.math.log2(l0)) / 1.4426950408889634)
            tl.store(LSE + off_bh * seq_len + offs0 + HALF,
                     (m1 + tl.math.log2(l1)) / 1.4426950408889634)

    @triton.jit
    def _tma_tile(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len, start_m, off_bh,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr, WARP_SPEC: tl.constexpr,
                  OVERLAP: tl.constexpr, PAIR: tl.constexpr, LAZY: tl.constexpr,
                  EXP16: tl.constexpr):
        """One tile of BLOCK_M query rows (``start_m``) of one head (``off_bh``), start to end."""
        if PAIR:
            _tma_tile_pair(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len, start_m,
                           off_bh, HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, STORE_LSE, WARP_SPEC,
                           OVERLAP, LAZY, EXP16)
        else:
            _tma_tile_one(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len, start_m,
                          off_bh, HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, STORE_LSE, WARP_SPEC,
                          OVERLAP)

    @triton.jit
    def _tma_tile_one(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len, start_m, off_bh,
                      HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr, WARP_SPEC: tl.constexpr,
                      OVERLAP: tl.constexpr):
        """:func:`_tma_tile` for one tile of BLOCK_M rows."""
        row0 = off_bh * seq_len                                    # this head's first row
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        q = desc_q.load([row0 + start_m * BLOCK_M, 0])
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        full_end = start_m * BLOCK_M if CAUSAL else seq_len
        if OVERLAP:
            acc, l_i, m_i = _tma_tiles_overlap(acc, l_i, m_i, q, desc_k, desc_v, row0,
                                               0, full_end, qk_scale, BLOCK_N)
        else:
            acc, l_i, m_i = _tma_tiles(acc, l_i, m_i, q, desc_k, desc_v, row0, offs_m, offs_n,
                                       0, full_end, qk_scale, BLOCK_N, False, WARP_SPEC)
        if CAUSAL:
            acc, l_i, m_i = _tma_tiles(acc, l_i, m_i, q, desc_k, desc_v, row0, offs_m, offs_n,
                                       full_end, (start_m + 1) * BLOCK_M, qk_scale, BLOCK_N,
                                       True, WARP_SPEC)
        desc_o.store([row0 + start_m * BLOCK_M, 0], (acc / l_i[:, None]).to(desc_o.dtype))
        if STORE_LSE:
            tl.store(LSE + off_bh * seq_len + offs_m,
                     (m_i + tl.math.log2(l_i)) / 1.4426950408889634)

    @triton.jit
    def _attn_fwd_tma(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len, n_bh,
                      HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr,
                      WARP_SPEC: tl.constexpr = False, OVERLAP: tl.constexpr = False,
                      PERSISTENT: tl.constexpr = 0, PAIR: tl.constexpr = False,
                      LAZY: tl.constexpr = False, EXP16: tl.constexpr = False):
        """:func:`_attn_fwd` on (batch·heads·seq_len, HEAD_DIM) views fetched by TMA.

        PERSISTENT = k > 0: a *persistent* kernel, k programs per SM, each looping over
        tiles (head by head, so the tiles running at once share K and V in L2; causal tiles
        longest first within a head); else one program per tile, grid (tiles, heads)."""
        if PERSISTENT:
            m_tiles = seq_len // BLOCK_M
            for tile in tl.range(tl.program_id(0), m_tiles * n_bh, tl.num_programs(0)):
                start_m = tile % m_tiles
                if CAUSAL:
                    start_m = m_tiles - 1 - start_m
                _tma_tile(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len, start_m,
                          tile // m_tiles, HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, STORE_LSE,
                          WARP_SPEC, OVERLAP, PAIR, LAZY, EXP16)
        else:
            _tma_tile(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len, tl.program_id(0),
                      tl.program_id(1), HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, STORE_LSE,
                      WARP_SPEC, OVERLAP, PAIR, LAZY, EXP16)

    def _tma_blocks(nargs: dict) -> None:
        """Autotuner pre-hook: the descriptors' tile shapes follow the configuration."""
        bm, bn, d = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["HEAD_DIM"]
        if nargs.get("PAIR"):  # a program's two halves are fetched and stored one by one
            bm //= 2
        nargs["desc_q"].block_shape = nargs["desc_o"].block_shape = [bm, d]
        nargs["desc_k"].block_shape = nargs["desc_v"].block_shape = [bn, d]

    # The winners of a wider search on an H200 (B4 H16 bf16, N 1k-16k, d 64 and 128). BLOCK_M
    # must be a multiple of BLOCK_N: the causal split at start_m·BLOCK_M must fall on a K/V
    # tile's edge, or the unmasked loop reads keys from the future (64×128, picked at d = 64,
    # gave wrong causal outputs on the H200: it is not offered). The sweep of 72ad24de8360
    # (`scripts/gpu_flash_forward_tuning.py --sweep`, d 128, TF/s at N = 16384 / 4096, cuDNN
    # 608 / 604): 128x64 w4 s2 528 / 423, 128x128 w8 s3 504 / 402, every other one lower;
    # warp specialisation gained nothing at 8 warps and failed to compile at 4 (triton 3.6).
    # The hand-pipelined loop (OVERLAP, :func:`_tma_tiles_overlap`) and the persistent grid
    # (PERSISTENT), timed by `--overlap` on the H200 at 5b6b96bd303b (d 128, TF/s each call
    # alone / queued; N = 4096, 16384, causal 16384): OVERLAP lifts 128x128 w8 s2 from
    # 398/448, 484/492, 467/471 to 436/487, 511/498, 498/514 (it replaces the plain one here),
    # and drops 128x64 w4 to a third (161/179 at 4096; not examined: two score tiles in
    # flight may not fit 4 warps' registers); PERSISTENT (1 or 2 programs per SM) was slower
    # in every case (P1 339-478, P2 281-430) and is not offered. cuDNN: 620/689, 624/617, 628/587.
    # PAIR (one program, two 128-row halves sharing each K/V tile), `--pair` at 864295a, same
    # cells, N = 4096 / 8192 / 16384 / causal 16384: 256x64 w8 s3 457/552, 523/541, 539/545,
    # 440/447 against 128x128 w8 s2 OVERLAP 406/441, 457/479, 487/477, 465/478 (it joins the
    # list; the causal key keeps the others); 256x128 spills (262-310), 4 warps fall to ~110,
    # warp specialisation does not compile at 4 warps, and PAIR with OVERLAP lost (264-381).
    # cuDNN 640/688, 670/614, 621/616, 615/585. LAZY (FA4's lazy rescaling, `--lazy` at
    # 566dd84) lost at every shape: PAIR 256x64 w8 s3 496/551, 526/545, 549/540, 428/447
    # plain against 331/399, 392/406, 406/414, 392/401 with LAZY (the data-dependent branch
    # in the loop costs more than the multiplies it skips); it stays an option, not offered.
    # EXP16 (float16 exponentials, two per instruction; `--exp16` at d5f9934) did not gain
    # either: PAIR 256x64 w8 s3 440/549, 498/549, 533/531, 430/447 plain against 426/529,
    # 491/515, 509/505, 427/443 with EXP16, so the special-function unit is not what holds
    # this kernel back; an option, not offered.
    FORWARD_TMA_CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, **({"OVERLAP": True} if o else {}),
                       **({"PAIR": True} if pair else {})},
                      num_warps=w, num_stages=st, pre_hook=_tma_blocks)
        for bm, bn, w, st, o, pair in (
            (128, 64, 4, 2, 0, 0), (128, 128, 8, 3, 0, 0), (64, 64, 4, 3, 0, 0),
            (128, 64, 8, 3, 0, 0), (128, 128, 8, 2, 1, 0), (256, 64, 8, 3, 0, 1))]

    def _whole_tiles(configs: list, named_args: dict, **kwargs) -> list:
        """Autotuner pruning: only the configurations whose BLOCK_M divides the sequence."""
        seq_len = {**named_args, **kwargs}["seq_len"]
        return [c for c in configs if seq_len % c.kwargs["BLOCK_M"] == 0]

    # The kernel itself, for tools that compile it apart from a launch (scripts/sm90_resources)
    TMA_FORWARD_KERNEL = _attn_fwd_tma

    @functools.cache
    def tuned_forward_tma(dtype: torch.dtype):
        """The autotuned kernel for one element type. Triton's autotuner adds its arguments'
        dtypes to the shape key, but a tensor descriptor has no dtype: one autotuner for every
        type would hand bfloat16 the pick it timed for float16, and compile only that binary
        for it (07's Run All then compiled the others mid-notebook)."""
        return triton.autotune(
            FORWARD_TMA_CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"], cache_results=True,
            prune_configs_by={"early_config_prune": _whole_tiles})(_attn_fwd_tma)


# The autotuner's pick per shape, remembered here so that later calls launch the kernel
# directly; with tma_applies' checks cached, the host's time per call of the autotuned
# forward fell from 139 to 101 µs on the H200 (`--host`, b349a260868c and 0bc82d6).
_TUNED_TMA: dict[tuple, dict] = {}


def launch_kwargs(config) -> dict:
    """An autotuner's pick (a ``triton.Config``) or a configuration dict as the keyword
    arguments of a direct launch: tiles, warps and stages, without its ``pre_hook`` (the
    caller sets the descriptors' block shapes itself)."""
    kwargs = config.all_kwargs() if hasattr(config, "all_kwargs") else dict(config)
    return {k: v for k, v in kwargs.items() if k != "pre_hook"}


@functools.cache
def _has_tensor_descriptors() -> bool:
    return importlib.util.find_spec("triton.tools.tensor_descriptor") is not None


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def tma_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """The TMA forward applies: Hopper or newer (or Triton's interpreter, which runs it slowly
    on a CPU for the tests), whole 128-row tiles, contiguous tensors."""
    if not triton_available() or not _has_tensor_descriptors():
        return False
    if q.shape[2] % 128 or not all(t.is_contiguous() for t in (q, k, v)):
        return False
    if interpreting():
        return True
    return q.device.type == "cuda" and _capability(q.device.index or 0)[0] >= 9


def flash_forward_tma(q, k, v, out, lse, qk_scale: float, causal: bool, store_lse: bool,
                      config: dict | None = None):
    """The TMA kernel into ``out`` (and ``lse``), autotuned, or with ``config`` (BLOCK_M,
    BLOCK_N, launch options); ``qk_scale`` is the softmax scale times log2(e)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    batch, n_heads, seq_len, head_dim = q.shape
    rows = batch * n_heads * seq_len
    descs = [TensorDescriptor(t.view(rows, head_dim), [rows, head_dim], [head_dim, 1],
                              [1, head_dim]) for t in (q, k, v, out)]  # tiles set per config

    def grid(meta: dict) -> tuple[int, int]:
        tiles = seq_len // meta["BLOCK_M"]
        if meta.get("PERSISTENT", 0):  # k programs per SM, each looping over tiles
            sms = 1 if interpreting() else torch.cuda.get_device_properties(
                q.device).multi_processor_count
            return (min(tiles * batch * n_heads, meta["PERSISTENT"] * sms), 1)
        return (tiles, batch * n_heads)

    args = (*descs, lse, qk_scale, seq_len, batch * n_heads)
    key = (seq_len, head_dim, causal, store_lse, q.dtype, q.device)
    if config is None and key in _TUNED_TMA:
        config = _TUNED_TMA[key]
    if config is None:
        tuned = tuned_forward_tma(q.dtype)
        tuned[grid](*args, HEAD_DIM=head_dim, CAUSAL=causal, STORE_LSE=store_lse)
        if not interpreting():
            _TUNED_TMA[key] = launch_kwargs(tuned.best_config)
    else:
        config = launch_kwargs(config)
        _tma_blocks({**config, "HEAD_DIM": head_dim, "desc_q": descs[0], "desc_k": descs[1],
                     "desc_v": descs[2], "desc_o": descs[3]})
        _attn_fwd_tma[grid(config)](*args, HEAD_DIM=head_dim, CAUSAL=causal,
                                    STORE_LSE=store_lse, **config)
    return out, (lse if store_lse else None)

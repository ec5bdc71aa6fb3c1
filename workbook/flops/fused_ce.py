"""The output layer and the cross-entropy loss, with the loss's gradient computed in the forward.

Why: at nanoGPT's shape the logits are 12 288 tokens × 50 304 words, 1.24 GB in BF16. The usual
loss (``F.cross_entropy``, compiled or not) reads them in the forward to get the log-sum-exp,
then reads them again in the backward and writes their gradient: three passes over 1.24 GB, about
1.7 ms of an H100's 26 ms step. But the gradient of the mean cross-entropy with respect to one
row of logits needs nothing the forward does not already have::

    d loss / d logits[i, j] = (softmax(logits[i])[j] - [j == target[i]]) / n_valid

So one Triton program per row computes the row's log-sum-exp (an online max and sum over chunks
of the row), its loss, and then overwrites the row with that gradient, in place. The logits
buffer becomes the gradient buffer: no extra memory, and one read plus one write instead of
two reads plus one write. (Liger-Kernel's cross-entropy does the same trick; this is the
workbook's own, short, version.) The backward is then just the output layer's two matmuls::

    d hidden = G @ W          d W = G^T @ hidden          (G: the gradient left in the buffer)

each times the incoming gradient of the loss (1 for a plain ``loss.backward()``).

:func:`linear_cross_entropy` is the entry point: the Triton kernel on a GPU (or on a CPU under
``TRITON_INTERPRET=1``, slowly), and the same arithmetic in PyTorch otherwise
(:func:`softmax_grad_reference_`), which is also the version to read first. The tests check
both against ``F.cross_entropy``'s autograd.
"""

from __future__ import annotations

import torch

from workbook.config import WorkbookError, check_range
from workbook.profiling import interpreter_numpy_fix, interpreting, triton_available

IGNORE_INDEX = -100
# Masked lanes read this instead of -inf, so that (sentinel - sentinel) is 0, never inf - inf:
# a lane that only ever saw the sentinel ends with m = sentinel, weighted exp(sentinel - max) = 0.
_FAR_BELOW = -1.0e30


def softmax_grad_reference_(logits: torch.Tensor, targets: torch.Tensor,
                            n_valid: torch.Tensor, ignore_index: int = IGNORE_INDEX
                            ) -> torch.Tensor:
    """PyTorch version of the kernel: return each row's loss (FP32 or wider, 0 where the target is
    ``ignore_index``) and overwrite ``logits`` (rows, vocab) with the gradient of the mean loss,
    ``(softmax - one_hot) / n_valid`` (0 on ignored rows)."""
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))   # FP32, or FP64 if given
    lse = torch.logsumexp(x, dim=-1)
    valid = targets != ignore_index
    safe = torch.where(valid, targets, 0)
    losses = torch.where(valid, lse - x.gather(1, safe[:, None]).squeeze(1), 0.0)
    grad = torch.exp(x - lse[:, None])
    grad[torch.arange(len(targets), device=logits.device), safe] -= 1.0
    grad = grad * (valid.to(x.dtype)[:, None] / n_valid)
    logits.copy_(grad)
    return losses


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _softmax_grad_kernel(logits_ptr, stride_row, targets_ptr, losses_ptr, n_valid_ptr,
                             n_rows, n_cols, ignore_index, far_below, BLOCK: tl.constexpr,
                             EVICT: tl.constexpr):
        # Each program takes rows pid, pid + programs, ... (a persistent grid when the launch
        # has fewer programs than rows: fewer rows in flight, so a row read by pass 1 is still
        # in L2 when pass 2 reads it again).
        offs = tl.arange(0, BLOCK)
        scale_valid = 1.0 / tl.load(n_valid_ptr).to(tl.float32)
        first = tl.program_id(0).to(tl.int64)   # 64-bit row offsets: rows x vocab can pass 2**31
        for row in range(first, n_rows, tl.num_programs(0)):
            row_ptr = logits_ptr + row * stride_row
            target = tl.load(targets_ptr + row).to(tl.int64)
            valid = target != ignore_index
            # Pass 1: per lane, a running maximum m and a running sum s of exp(x - m); the
            # lanes are combined once at the end. (Two exps per logit; a running max and sum
            # per chunk costs one, but was no faster on the H100 at its best and slower at 32
            # warps: its two block-wide reductions per chunk. Rows of commit c75aeca in the git
            # history of data/results/loss_kernel.csv.)
            m = tl.full([BLOCK], far_below, tl.float32)
            s = tl.zeros([BLOCK], tl.float32)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                x = tl.load(row_ptr + cols, mask=cols < n_cols, other=far_below,
                            eviction_policy="evict_last" if EVICT else "").to(tl.float32)
                m_new = tl.maximum(m, x)
                s = s * tl.exp(m - m_new) + tl.exp(x - m_new)
                m = m_new
            row_max = tl.max(m, 0)
            lse = row_max + tl.log(tl.sum(s * tl.exp(m - row_max), 0))
            # A target outside [0, vocab) is never read: its row's loss is nan (raising would
            # need the host to wait for the GPU).
            in_range = (target >= 0) & (target < n_cols)
            x_target = tl.load(row_ptr + target, mask=valid & in_range, other=0.0).to(tl.float32)
            loss = tl.where(in_range, lse - x_target, float("nan"))
            tl.store(losses_ptr + row, tl.where(valid, loss, 0.0))
            # Pass 2: overwrite the row with (softmax - one_hot) / n_valid (zeros if ignored).
            # The row (100 KB at V = 50 304) was read a moment ago: this read hits L2 if not
            # too many rows are in flight at once.
            scale = tl.where(valid, scale_valid, 0.0)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                inside = cols < n_cols
                x = tl.load(row_ptr + cols, mask=inside, other=0.0,
                            eviction_policy="evict_first" if EVICT else "").to(tl.float32)
                g = tl.exp(x - lse)
                g = tl.where(cols == target, g - 1.0, g) * scale
                tl.store(row_ptr + cols, g.to(logits_ptr.dtype.element_ty), mask=inside)


def why_not(logits: torch.Tensor) -> str | None:
    """None if the Triton kernel can run on ``logits`` here, else the reason."""
    if not triton_available():
        return "the Triton kernel needs the 'triton' package (GPU machines have it)"
    if logits.device.type != "cuda" and not interpreting():
        return "the Triton kernel needs a CUDA tensor (or TRITON_INTERPRET=1, slowly, on a CPU)"
    return None


# Chunk of a row per loop step, warps per program, programs per SM (0: one program per row), L2
# hints: swept on the H100 at V = 50 304 by the loss_kernel experiment (data/results/
# loss_kernel.csv). 8192 wide with 32 warps was ahead of 16 warps in all three sweeps that had
# both (1.14-1.23 ms against F.cross_entropy's 1.9-2.0 ms), and the hints helped it a little in
# two of two (~0.03-0.06 ms), less than the ~0.1 ms spread between calls; a persistent grid
# (per_sm > 0) never helped.
DEFAULT_BLOCK = 8192
DEFAULT_WARPS = 32
DEFAULT_PER_SM = 0
DEFAULT_EVICT = True   # L2 hints: keep a row after pass 1 (evict_last), drop it after pass 2


def softmax_grad_(logits: torch.Tensor, targets: torch.Tensor, n_valid: torch.Tensor,
                  ignore_index: int = IGNORE_INDEX, *, block: int | None = None,
                  num_warps: int | None = None, per_sm: int | None = None,
                  evict: bool | None = None) -> torch.Tensor:
    """The Triton kernel: per-row losses (FP32); ``logits`` (rows, vocab), contiguous rows,
    is overwritten with the gradient of the mean loss (see :func:`softmax_grad_reference_`).
    ``n_valid``: a one-element tensor on the same device (no host synchronisation).
    ``block``, ``num_warps``, ``per_sm``, ``evict``: the launch (left out: the defaults above).
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise WorkbookError(f"logits must be (rows, vocab) and targets (rows,); got "
                            f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    if logits.stride(1) != 1:
        raise WorkbookError("the kernel needs each row of logits contiguous (stride 1)")
    reason = why_not(logits)
    if reason:
        raise WorkbookError(reason)
    if interpreting():
        interpreter_numpy_fix()
    rows, n_cols = logits.shape
    block = block or min(DEFAULT_BLOCK, triton.next_power_of_2(n_cols))
    if block & (block - 1) or not 16 <= block <= 65536:
        raise WorkbookError(f"block={block} must be a power of two in [16, 65536]")
    per_sm = DEFAULT_PER_SM if per_sm is None else per_sm
    check_range("per_sm", per_sm, 0, 64)
    programs = rows
    if per_sm:   # the interpreter counts as one SM
        sms = (torch.cuda.get_device_properties(logits.device).multi_processor_count
               if logits.device.type == "cuda" else 1)
        programs = min(rows, per_sm * sms)
    losses = torch.empty(rows, device=logits.device, dtype=torch.float32)
    if rows:
        _softmax_grad_kernel[(programs,)](logits, logits.stride(0), targets, losses, n_valid,
                                          rows, n_cols, ignore_index, _FAR_BELOW, BLOCK=block,
                                          EVICT=DEFAULT_EVICT if evict is None else evict,
                                          num_warps=num_warps or DEFAULT_WARPS)
    return losses


class LinearCrossEntropy(torch.autograd.Function):
    """loss = mean cross-entropy of ``hidden @ weight.T`` against ``targets``; the logits'
    gradient is computed in the forward (see the module docstring) and kept in their buffer."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index: int, use_triton: bool):  # noqa: D102
        logits = hidden @ weight.t()                      # (rows, vocab), in hidden's dtype
        n_valid = (targets != ignore_index).sum().clamp_min(1)
        grad_of = softmax_grad_ if use_triton else softmax_grad_reference_
        losses = grad_of(logits, targets, n_valid, ignore_index)
        ctx.save_for_backward(hidden, weight, logits)     # logits now hold d loss / d logits
        return losses.sum() / n_valid

    @staticmethod
    def backward(ctx, grad_loss):  # noqa: D102
        hidden, weight, grad_logits = ctx.saved_tensors
        scale = grad_loss.to(hidden.dtype)   # 1 for loss.backward(): exact in any dtype
        d_hidden = (grad_logits @ weight).mul_(scale) if ctx.needs_input_grad[0] else None
        d_weight = (grad_logits.t() @ (hidden * scale)) if ctx.needs_input_grad[1] else None
        return d_hidden, d_weight, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = IGNORE_INDEX, use_triton: bool | None = None
                         ) -> torch.Tensor:
    """Mean next-token cross-entropy of ``hidden`` (..., d) through the output layer ``weight``
    (vocab, d), against ``targets`` (...); ``ignore_index`` targets do not count (and if every
    target is ignored the loss is 0, where ``F.cross_entropy`` gives nan). A target outside
    [0, vocab): a WorkbookError for CPU targets, a nan loss from the kernel on a GPU.

    ``use_triton``: None picks the Triton kernel wherever it can run (:func:`why_not`), True
    insists on it, False uses the PyTorch version. Same value and gradients either way."""
    if hidden.shape[:-1] != targets.shape or hidden.shape[-1] != weight.shape[-1]:
        raise WorkbookError(f"hidden (..., d), weight (vocab, d) and targets (...) do not match: "
                            f"{tuple(hidden.shape)}, {tuple(weight.shape)}, "
                            f"{tuple(targets.shape)}")
    if targets.device.type == "cpu":   # checked here without a wait; on a GPU: a nan loss
        outside = (targets != ignore_index) & ((targets < 0) | (targets >= weight.shape[0]))
        if outside.any():
            raise WorkbookError(f"target {int(targets[outside][0])} is not a token id; allowed: "
                                f"0 to {weight.shape[0] - 1}, or {ignore_index} to ignore")
    if torch.is_autocast_enabled(hidden.device.type):
        # one dtype for the Function (its backward runs outside autocast): autocast's
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    if use_triton is None:
        use_triton = why_not(hidden) is None
    elif use_triton and (reason := why_not(hidden)):
        raise WorkbookError(reason)
    weight = weight.to(hidden.dtype)
    return LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight,
                                    targets.reshape(-1), ignore_index, use_triton)

"""workbook.flops.fused_ce: the output layer + cross-entropy whose forward writes the gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests._interpreter import needs_gpu_and_triton, needs_triton, run_in_triton_interpreter
from workbook.config import WorkbookError
from workbook.flops import fused_ce

HAS_CUDA = torch.cuda.is_available()


def inputs(rows, vocab, d, dtype=torch.float64, device="cpu", seed=0, ignored=(2,)):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, d, generator=gen, dtype=torch.float64)
    weight = torch.randn(vocab, d, generator=gen, dtype=torch.float64) / d ** 0.5
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    for i in ignored:
        targets[i] = fused_ce.IGNORE_INDEX
    return hidden.to(device, dtype), weight.to(device, dtype), targets.to(device)


def autograd_reference(hidden, weight, targets, grad_loss=1.0):
    """F.cross_entropy on the full logits, float64, gradients by autograd."""
    h = hidden.detach().double().requires_grad_(True)
    w = weight.detach().double().requires_grad_(True)
    loss = F.cross_entropy(h @ w.t(), targets)
    loss.backward(torch.tensor(grad_loss, dtype=torch.float64, device=h.device))
    return loss.detach(), h.grad, w.grad


def fused(hidden, weight, targets, grad_loss=1.0, **kwargs):
    h = hidden.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    loss = fused_ce.linear_cross_entropy(h, w, targets, **kwargs)
    loss.backward(torch.tensor(grad_loss, dtype=loss.dtype, device=h.device))
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("grad_loss", [1.0, 0.25])
def test_pytorch_version_matches_autograd(grad_loss):
    hidden, weight, targets = inputs(13, 37, 8)
    for got, want in zip(fused(hidden, weight, targets, grad_loss, use_triton=False),
                         autograd_reference(hidden, weight, targets, grad_loss), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_the_forward_leaves_the_gradient_of_the_logits_in_their_buffer():
    hidden, weight, targets = inputs(5, 11, 4, ignored=(1,))
    logits = hidden @ weight.t()
    n_valid = (targets != fused_ce.IGNORE_INDEX).sum()
    want = torch.softmax(logits, -1) - F.one_hot(targets.clamp_min(0), 11)
    want[1] = 0.0                          # an ignored row has no gradient
    losses = fused_ce.softmax_grad_reference_(logits, targets, n_valid)
    torch.testing.assert_close(logits, want / n_valid)
    assert losses[1] == 0 and (losses > 0).sum() == 4


def test_every_target_ignored_gives_zero_not_nan():
    hidden, weight, targets = inputs(3, 7, 4, ignored=(0, 1, 2))
    loss, d_hidden, d_weight = fused(hidden, weight, targets, use_triton=False)
    assert loss == 0 and not d_hidden.any() and not d_weight.any()


def test_bad_input_is_refused_with_the_shapes():
    hidden, weight, targets = inputs(4, 9, 8)
    with pytest.raises(WorkbookError, match=r"do not match: \(4, 8\), \(9, 7\), \(4,\)"):
        fused_ce.linear_cross_entropy(hidden, weight[:, :7], targets)
    with pytest.raises(WorkbookError, match="target 9 is not a token id; allowed: 0 to 8, or -100"):
        fused_ce.linear_cross_entropy(hidden, weight, torch.tensor([0, 9, 1, 2]))
    with pytest.raises(WorkbookError, match="logits must be"):
        fused_ce.softmax_grad_(hidden, targets[:3], torch.tensor(3))


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU refusal")
def test_insisting_on_triton_without_a_gpu_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    hidden, weight, targets = inputs(4, 9, 8)
    with pytest.raises(WorkbookError, match="needs (a CUDA tensor|the 'triton' package)"):
        fused_ce.linear_cross_entropy(hidden, weight, targets, use_triton=True)
    # left to choose, it runs the PyTorch version
    assert torch.isfinite(fused_ce.linear_cross_entropy(hidden, weight, targets))


def _interpreter_checks() -> None:
    """In a child with TRITON_INTERPRET=1: the kernel, with rows split into several chunks (and
    a last, partial one), one program per row or a few programs looping over the rows, gives
    the PyTorch version's losses and gradients."""
    for vocab, block, per_sm, dtype, tol in ((50, 16, 0, torch.float32, 1e-5),
                                             (300, 64, 2, torch.float32, 1e-5),
                                             (77, 32, 4, torch.bfloat16, 1e-2)):
        hidden, weight, targets = inputs(9, vocab, 8, seed=vocab)
        logits = (hidden @ weight.t()).to(dtype)
        n_valid = (targets != fused_ce.IGNORE_INDEX).sum()
        want = logits.clone()
        want_losses = fused_ce.softmax_grad_reference_(want, targets, n_valid)
        # per_sm > 0: fewer programs than rows, each taking every per_sm-th row
        losses = fused_ce.softmax_grad_(logits, targets, n_valid, block=block, per_sm=per_sm)
        torch.testing.assert_close(losses, want_losses, rtol=tol, atol=tol)
        torch.testing.assert_close(logits.float(), want.float(), rtol=tol, atol=tol / 10)
    # a target outside the vocabulary is never read: that row's loss is nan, the others stand
    logits = torch.zeros(3, 20)
    losses = fused_ce.softmax_grad_(logits, torch.tensor([1, 20, -7]), torch.tensor(3), block=16)
    assert losses[0] == pytest.approx(torch.log(torch.tensor(20.0)).item())
    assert losses[1:].isnan().all()
    hidden, weight, targets = inputs(6, 40, 8, dtype=torch.float32)
    for got, want in zip(fused(hidden, weight, targets, 0.5, use_triton=True),
                         autograd_reference(hidden, weight, targets, 0.5), strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    print("interpreter checks passed")


@needs_triton
def test_triton_kernel_in_the_interpreter():
    run_in_triton_interpreter("tests.test_fused_ce", "_interpreter_checks")


@needs_gpu_and_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernel_on_the_gpu_at_gpt2_vocab(dtype):
    """50 304 words (nanoGPT's padded GPT-2 vocabulary), several rows ignored."""
    hidden, weight, targets = inputs(64, 50304, 64, dtype=dtype, device="cuda",
                                     ignored=(0, 5, 63))
    got = fused(hidden, weight, targets, use_triton=True)
    want = autograd_reference(hidden, weight, targets)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert abs(got[0].double() - want[0]) < tol * want[0]
    for g, w in zip(got[1:], want[1:], strict=True):
        gap = (g.double() - w).norm() / w.norm()
        assert gap < tol, f"relative gradient gap {gap:.2e} in {dtype}"

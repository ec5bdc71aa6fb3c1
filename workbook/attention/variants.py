"""One attention function, many implementations: :func:`attention` with a ``variant``.

Vanilla (:mod:`.tiled`), PyTorch SDPA with each backend forced, the optional ``flash_attn``
package, the workbook's Triton kernel (:mod:`.flash_triton`) and the tiled algorithm in plain
PyTorch all compute softmax(Q Kᵀ · scale) V; :func:`unsupported` says, in one line, why one
cannot run here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from workbook.attention.tiled import tiled_attention, vanilla_attention
from workbook.config import WorkbookError, check_choice
from workbook.profiling import interpreting, triton_available

__all__ = ["VARIANTS", "DTYPES", "TOLERANCE", "unsupported", "attention", "dtype_name",
           "relative_error"]

VARIANTS: tuple[str, ...] = ("vanilla", "sdpa_math", "sdpa_efficient", "sdpa_flash",
                             "sdpa_cudnn", "flash_attn", "tiled", "triton")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                  "bfloat16": torch.bfloat16}
# ‖out − ref‖ / ‖ref‖ against a float64 reference: a few units of each dtype's rounding error
# (fp32 2^-24, fp16 2^-11, bf16 2^-8). Anything above means a wrong algorithm, not rounding.
TOLERANCE: dict[str, float] = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}

_SDPA_BACKENDS = {"sdpa_math": "MATH", "sdpa_efficient": "EFFICIENT_ATTENTION",
                  "sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION"}


def _sdpa(backend: str) -> Callable[..., torch.Tensor]:
    def run(q, k, v, *, causal=False, scale=None):
        with sdpa_kernel(getattr(SDPBackend, _SDPA_BACKENDS[backend])):
            try:
                return torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=causal, scale=scale)
            except RuntimeError as exc:
                if "No viable backend" in str(exc) or "No available kernel" in str(exc):
                    raise WorkbookError(
                        f"{backend} cannot run {q.dtype} head_dim={q.shape[-1]} on "
                        f"{q.device.type} here; try 'sdpa_math' or 'tiled'") from None
                raise
    return run


def _flash_attn_package(q, k, v, *, causal=False, scale=None):
    from flash_attn import flash_attn_func  # optional; (B, N, H, d) layout

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                          causal=causal, softmax_scale=scale)
    return out.transpose(1, 2)


def _triton(q, k, v, *, causal=False, scale=None, tuned=True):
    from workbook.attention.flash_triton_backward import flash_attention  # imports triton

    return flash_attention(q, k, v, causal=causal, scale=scale, tuned=tuned)


_IMPLEMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "vanilla": vanilla_attention, "tiled": tiled_attention,
    "triton": _triton, "flash_attn": _flash_attn_package,
    **{name: _sdpa(name) for name in _SDPA_BACKENDS},
}


def unsupported(variant: str, device: str, dtype: str, head_dim: int) -> str | None:
    """Why ``variant`` cannot run here with this dtype/head_dim, or None if it should."""
    check_choice("variant", variant, VARIANTS)
    if variant in ("sdpa_efficient", "sdpa_cudnn", "flash_attn") and device != "cuda":
        return f"{variant} runs only on an NVIDIA GPU"
    if variant == "flash_attn" and importlib.util.find_spec("flash_attn") is None:
        return "the optional flash_attn package is not installed"
    if variant in ("flash_attn", "sdpa_cudnn") and dtype == "float32":
        return f"{variant} has no float32 kernel; allowed: float16, bfloat16"
    if variant == "sdpa_flash" and device == "cuda" and dtype == "float32":
        return "sdpa_flash has no float32 kernel on GPUs; allowed: float16, bfloat16"
    if variant == "triton":
        from workbook.attention.flash_triton import HEAD_DIMS  # imports triton: only here

        if dtype == "float32":
            return "the Triton kernel has no float32 kernel; allowed: float16, bfloat16"
        if head_dim not in HEAD_DIMS:
            return f"head_dim={head_dim} is not supported by the Triton kernel; allowed: 64, 128"
        if not triton_available():
            return "the Triton kernel needs the 'triton' package (GPU machines)"
        if device != "cuda" and not interpreting():
            return "the Triton kernel needs a GPU (or TRITON_INTERPRET=1, slowly, on a CPU)"
    return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, variant: str = "sdpa_flash",
              causal: bool = False, scale: float | None = None,
              tuned: bool = True) -> torch.Tensor:
    """softmax(Q Kᵀ · scale) V, computed by ``variant``; all variants compute the same function.

    Shapes (batch, n_heads, seq_len, head_dim), q, k, v alike. A variant that cannot run here
    (no GPU, no kernel for this dtype or head_dim) raises a one-line WorkbookError.
    ``tuned=False``: the Triton kernel runs fixed tiles instead of autotuning (a numerical
    check); the other variants have nothing to tune and ignore it.
    """
    check_choice("variant", variant, VARIANTS)
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise WorkbookError(f"q, k, v must share one shape (batch, n_heads, seq_len, head_dim); "
                            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise WorkbookError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    reason = unsupported(variant, q.device.type, dtype_name(q.dtype), q.shape[-1])
    if reason:
        raise WorkbookError(reason)
    check_choice("tuned", tuned, (True, False))
    if variant == "triton":
        return _triton(q, k, v, causal=causal, scale=scale, tuned=tuned)
    return _IMPLEMENTATIONS[variant](q, k, v, causal=causal, scale=scale)


def dtype_name(dtype: torch.dtype) -> str:
    """The key of :data:`DTYPES` for a torch dtype (one line for any other)."""
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    raise WorkbookError(f"dtype {dtype} is not supported; allowed: {', '.join(DTYPES)}")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64."""
    return float((out.double() - ref.double()).norm() / ref.double().norm())

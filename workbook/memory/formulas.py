"""Where training memory goes, as formulas (pure; what the explorer drives).

* model states per parameter: ``bytes_per_param(precision, optimizer)``; fp32 Adam is
  4 + 4 + 8 = 16 bytes, the paper's mixed-precision Adam 2 + 2 + 12 = 16 bytes, pure bf16
  2 + 2 + 4 = 8 bytes;
* activations of a GPT layer (Korthikanti et al. 2022, "Reducing Activation Recomputation",
  Sec. 4.1): ``s·b·h·(34 + 5·a·s/h)`` bytes with 2-byte activations and 1-byte dropout masks;
  with full activation checkpointing only each layer's input, ``2·s·b·h``, is kept.
"""

from __future__ import annotations

import pandas as pd

from workbook.config import WorkbookError, check_choice, check_range

PRECISIONS: tuple[str, ...] = ("fp32", "amp_bf16", "bf16", "mixed")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
GB = 1e9

# Shapes for the explorer: (n_layer, d_model, n_head, vocab)
MODEL_SHAPES: dict[str, tuple[int, int, int, int]] = {
    "GPT-2 small (124M)": (12, 768, 12, 50257),
    "GPT-2 XL (1.5B)": (48, 1600, 25, 50257),
    "7B (32 x 4096)": (32, 4096, 32, 32000),
    "GPT-3 (175B)": (96, 12288, 96, 50257),
}


def bytes_per_param(precision: str, optimizer: str = "adamw") -> dict[str, float]:
    """Bytes per parameter of each model state.

    fp32 and amp_bf16 (PyTorch autocast: fp32 weights, bf16 matmuls) keep fp32 params, grads
    and Adam moments. bf16 keeps everything in bf16 (torch's AdamW stores its moments in the
    parameter's dtype). "mixed" is the ZeRO paper's recipe: bf16/fp16 params and grads, fp32
    master weights + moments (K = 12). SGD without momentum keeps no state (a master copy only
    in "mixed").
    """
    check_choice("precision", precision, PRECISIONS)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    adam = optimizer == "adamw"
    if precision in ("fp32", "amp_bf16"):
        return {"params": 4.0, "grads": 4.0, "optimizer": 8.0 if adam else 0.0}
    if precision == "bf16":
        return {"params": 2.0, "grads": 2.0, "optimizer": 4.0 if adam else 0.0}
    return {"params": 2.0, "grads": 2.0, "optimizer": 12.0 if adam else 4.0}


def activation_bytes(n_layer: int, d_model: int, n_head: int, seq_len: int, batch: int, *,
                     act_bytes: int = 2, checkpointing: bool = False,
                     attention_matrix: bool = True, vocab: int = 0,
                     dropout: bool = True) -> dict[str, float]:
    """Activations saved for backward (Korthikanti et al. 2022), in bytes.

    Per layer with ``e``-byte activations and 1-byte dropout masks: ``s·b·h·(16e + 2)``
    (for e = 2 the paper's 34·sbh) plus, when the attention matrix is stored (eager
    attention), ``a·s²·b·(2e + 1)`` (the paper's 5·a·s²·b: softmax output, dropout mask,
    dropout output). Fused attention (FlashAttention, SDPA) stores no s×s matrix. Without
    dropout (``dropout=False``) the masks go and the softmax output is saved once:
    ``16e·sbh + e·a·s²·b``. With full checkpointing only each layer's input is kept
    (``e·s·b·h``). Outside the layers: the embedding's dropout mask, the inputs of the final
    norm and of the LM head (``s·b·h·(2e + 1)``) and the loss's fp32 log-softmax (``4·b·s·V``).
    ``scores`` is the s×s part alone (zero for fused attention or with checkpointing).
    """
    s, b, h, a, e = seq_len, batch, d_model, n_head, act_bytes
    mask = 1 if dropout else 0
    scores = a * s * s * b * ((2 * e + 1) if dropout else e) if attention_matrix else 0
    if checkpointing:
        per_layer, scores = e * s * b * h, 0
    else:
        per_layer = s * b * h * (16 * e + 2 * mask) + scores
    head = 4 * b * s * vocab + s * b * h * (2 * e + mask)
    return {"layers": n_layer * per_layer, "head": float(head),
            "total": n_layer * per_layer + head, "scores": float(n_layer * scores)}


def fit_exponent(x: list[float], y: list[float]) -> float:
    """k of ``y ∝ x^k``: the least-squares slope of log y against log x (≥ 2 points)."""
    import numpy as np

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) != len(ys) or len(xs) < 2 or not (np.all(xs > 0) and np.all(ys > 0)):
        raise WorkbookError(f"fit_exponent needs ≥ 2 positive (x, y) pairs; got {len(xs)} x "
                            f"and {len(ys)} y")
    if len(set(xs.tolist())) < 2:
        raise WorkbookError("fit_exponent needs at least two different x values")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def recompute_overhead(n_layer: int, d_model: int, vocab: int, seq_len: int) -> dict[str, float]:
    """Extra FLOPs of a training step with activation checkpointing, as a fraction of the step.

    A step is forward (2 FLOPs per matmul parameter per token) + backward (4): 6·N per token,
    plus attention's QKᵀ and A·V (4·s·h per layer per token forward, ×3 with backward).
    ``lecture``: recomputing the whole forward adds 2/6 = 1/3. ``blocks``: transformers
    checkpoints each block, so the LM head (V·h parameters) is not recomputed and the
    overhead is the blocks' forward over the whole step.
    """
    check_range("n_layer", n_layer, 1, 10_000)
    check_range("d_model", d_model, 1, 1_000_000)
    check_range("vocab", vocab, 1, 10_000_000)
    check_range("seq_len", seq_len, 1, 10_000_000)
    h, s = d_model, seq_len
    blocks_fwd = n_layer * (2 * 12 * h * h + 4 * s * h)   # per token
    head_fwd = 2 * vocab * h
    step = 3 * (blocks_fwd + head_fwd)
    return {"lecture": 1 / 3, "blocks": blocks_fwd / step}


def gpt_params(n_layer: int, d_model: int, vocab: int, seq_len: int) -> int:
    """Ψ of a GPT-2 style model: 12·h² per layer (+13h biases/norms), tied embeddings."""
    h = d_model
    return n_layer * (12 * h * h + 13 * h) + vocab * h + seq_len * h + 2 * h


def matmul_weights(n_layer: int, d_model: int, vocab: int) -> int:
    """The weights of a GPT-2's matmuls: 12·h² per layer (QKV, attention out, the MLP's two)
    and the LM head's V·h. Under autocast each is cast to a bf16 copy that autograd keeps for
    the backward, 2 bytes apiece, whatever the sequence length."""
    return n_layer * 12 * d_model * d_model + vocab * d_model


def training_memory(n_params: float, precision: str = "mixed", optimizer: str = "adamw", *,
                    activations: float = 0.0) -> pd.DataFrame:
    """Bytes of each component for ``n_params`` parameters (the explorer's table)."""
    check_range("n_params", n_params, 1, 1e15)
    check_range("activations", activations, 0, 1e18)
    per = bytes_per_param(precision, optimizer)
    rows = [{"component": k, "bytes": v * n_params} for k, v in per.items()]
    rows.append({"component": "activations", "bytes": float(activations)})
    frame = pd.DataFrame(rows)
    frame["GB"] = frame["bytes"] / GB
    return frame


def lecture_175b() -> pd.DataFrame:
    """The lecture's GPT-3 example: 175B parameters in fp32 with Adam, vs one 80 GB H100.

    GPT-3 175B: 96 layers, d_model 12288, 96 heads, 2048 tokens of context. Activations for
    one sequence from the formula above (fp16, eager attention), with and without
    checkpointing.
    """
    n = 175e9
    acts = activation_bytes(96, 12288, 96, 2048, 1, act_bytes=2, vocab=50257)
    ckpt = activation_bytes(96, 12288, 96, 2048, 1, act_bytes=2, vocab=50257,
                            checkpointing=True)
    per = bytes_per_param("fp32", "adamw")
    rows = [("parameters (fp32)", per["params"] * n, "700 GB"),
            ("gradients (fp32)", per["grads"] * n, "700 GB"),
            ("Adam m + v (fp32)", per["optimizer"] * n, "1,400 GB"),
            ("activations, 1 sequence of 2048", acts["total"], "100+ GB"),
            ("activations, checkpointed", ckpt["total"], "-")]
    frame = pd.DataFrame(rows, columns=["component", "bytes", "lecture"])
    frame["GB"] = frame["bytes"] / GB
    return frame


def predicted_breakdown(n_params: int, n_layer: int, d_model: int, n_head: int, vocab: int,
                        seq_len: int, batch: int, precision: str, optimizer: str,
                        checkpointing: bool, attention: str) -> pd.DataFrame:
    """The formula's rows beside a measured breakdown: each state, activations and the peak."""
    per = bytes_per_param(precision, optimizer)
    e = 4 if precision == "fp32" else 2
    acts = activation_bytes(n_layer, d_model, n_head, seq_len, batch, act_bytes=e,
                            checkpointing=checkpointing, attention_matrix=attention == "eager",
                            vocab=vocab)
    rows = [{"component": k, "value": v * n_params} for k, v in per.items()]
    rows.append({"component": "activations", "value": acts["total"]})
    rows.append({"component": "attention scores", "value": acts["scores"]})
    rows.append({"component": "peak", "value": sum(per.values()) * n_params + acts["total"]})
    # not in the formula's peak: one b×s×V tensor of fp32 logits (the loss upcasts them), the
    # unit the loss's transients come in
    rows.append({"component": "logits (fp32)", "value": 4.0 * batch * seq_len * vocab})
    return pd.DataFrame(rows).assign(method="formula", metric="bytes", unit="bytes",
                                     source="predicted", n_params=n_params, status="ok")


ATTENTIONS: tuple[str, ...] = ("eager", "flash")


def scenario(model: str, precision: str, seq_len: int, batch: int,
             checkpointing: bool, attention: str = "eager") -> pd.DataFrame:
    """Formula bytes per component for one of :data:`MODEL_SHAPES`; ``attention="flash"``
    (FlashAttention, SDPA) stores no s×s attention matrix, so the activations lose their
    s² term."""
    check_choice("model", model, MODEL_SHAPES)
    check_choice("precision", precision, PRECISIONS)
    check_range("seq_len", seq_len, 1, 1_048_576)
    check_range("batch", batch, 1, 65_536)
    check_choice("checkpointing", checkpointing, (False, True))
    check_choice("attention", attention, ATTENTIONS)
    n_layer, d_model, n_head, vocab = MODEL_SHAPES[model]
    psi = gpt_params(n_layer, d_model, vocab, seq_len)
    e = 4 if precision == "fp32" else 2
    acts = activation_bytes(n_layer, d_model, n_head, seq_len, batch, act_bytes=e,
                            checkpointing=checkpointing, vocab=vocab,
                            attention_matrix=attention == "eager")
    return training_memory(psi, precision, activations=acts["total"]).assign(n_params=psi)


def formula_fit(d_model: int, n_head: int, vocab: int, seq_len: int, batch: int,
                precision: str, checkpointing: bool, gpu_bytes: float) -> int:
    """The largest n_layer the formula lets fit (model states + activations <= GPU)."""
    e = 4 if precision == "fp32" else 2
    per = sum(bytes_per_param(precision).values())
    n = 0
    while n < 1000:
        psi = gpt_params(n + 1, d_model, vocab, seq_len)
        acts = activation_bytes(n + 1, d_model, n_head, seq_len, batch, act_bytes=e,
                                checkpointing=checkpointing, attention_matrix=False,
                                vocab=vocab)["total"]
        if per * psi + acts > gpu_bytes:
            return n
        n += 1
    return n

"""Where training memory goes: parameters, gradients, optimizer states, activations.

Formulas (pure, what the widget drives):

* model states per parameter: ``bytes_per_param(precision, optimizer)``; fp32 Adam is
  4 + 4 + 8 = 16 bytes, the paper's mixed-precision Adam 2 + 2 + 12 = 16 bytes, pure bf16
  2 + 2 + 4 = 8 bytes;
* activations of a GPT layer (Korthikanti et al. 2022, "Reducing Activation Recomputation",
  Sec. 4.1): ``s·b·h·(34 + 5·a·s/h)`` bytes with 2-byte activations and 1-byte dropout masks;
  with full activation checkpointing only each layer's input, ``2·s·b·h``, is kept.

Measurements (a fresh process each, :mod:`workbook.runner`): a transformers GPT-2 is built,
trained for two steps, and each component is measured on its own: the allocator's count
before and after the model, after the forward, after the backward, after the optimizer step
(GPU), and, on any device, the bytes of the tensors themselves and the activations autograd
saved for backward (``torch.autograd.graph.saved_tensors_hooks``).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import pandas as pd

from workbook.config import WorkbookError, check_choice, check_range, takes_rows
from workbook.registry import Experiment
from workbook.zero import check_gpt_shape, fill_params

PRECISIONS: tuple[str, ...] = ("fp32", "amp_bf16", "bf16", "mixed")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
GB = 1e9


# ------------------------------------------------------------------------------ formulas


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
                     attention_matrix: bool = True, vocab: int = 0) -> dict[str, float]:
    """Activations saved for backward (Korthikanti et al. 2022), in bytes.

    Per layer with ``e``-byte activations and 1-byte dropout masks: ``s·b·h·(16e + 2)``
    (for e = 2 the paper's 34·sbh) plus, when the attention matrix is stored (eager
    attention), ``a·s²·b·(2e + 1)`` (the paper's 5·a·s²·b). Fused attention (FlashAttention,
    SDPA) stores no s×s matrix. With full checkpointing only each layer's input is kept
    (``e·s·b·h``). Outside the layers: the embedding's dropout mask, the inputs of the final
    norm and of the LM head (``s·b·h·(2e + 1)``) and the loss's fp32 log-softmax (``4·b·s·V``).
    """
    s, b, h, a, e = seq_len, batch, d_model, n_head, act_bytes
    if checkpointing:
        per_layer = e * s * b * h
    else:
        per_layer = s * b * h * (16 * e + 2) + (a * s * s * b * (2 * e + 1)
                                                if attention_matrix else 0)
    head = 4 * b * s * vocab + s * b * h * (2 * e + 1)
    return {"layers": n_layer * per_layer, "head": float(head),
            "total": n_layer * per_layer + head}


def gpt_params(n_layer: int, d_model: int, vocab: int, seq_len: int) -> int:
    """Ψ of a GPT-2 style model: 12·h² per layer (+13h biases/norms), tied embeddings."""
    h = d_model
    return n_layer * (12 * h * h + 13 * h) + vocab * h + seq_len * h + 2 * h


def training_memory(n_params: float, precision: str = "mixed", optimizer: str = "adamw", *,
                    activations: float = 0.0) -> pd.DataFrame:
    """Bytes of each component for ``n_params`` parameters (the widget's table)."""
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


# --------------------------------------------------------------------------- measurement


def build_model(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int,
                attention: str, seed: int, dropout: float = 0.1, device: str = "cpu") -> Any:
    """A random transformers GPT-2 (no download), built directly on ``device``; dropout as in
    GPT-2 (its masks are activations too)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=d_model, n_head=n_head, vocab_size=vocab,
                     n_positions=seq_len, resid_pdrop=dropout, embd_pdrop=dropout,
                     attn_pdrop=dropout, activation_function="gelu_pytorch_tanh",
                     attn_implementation=attention)
    with torch.device(device):
        return GPT2LMHeadModel(cfg)


def _enable_checkpointing(model: Any) -> None:
    """Recompute each block's activations in backward (transformers' own switch)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    enable = enable or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})


class SavedTensors:
    """Counts the bytes autograd saves for backward, each storage once, parameters excluded."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.seen: dict[int, int] = {}

    def pack(self, t: Any) -> Any:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.exclude and storage.nbytes() > 0:
            self.seen[ptr] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self.seen.values())


def _alloc(device: Any) -> float:
    import torch

    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    return float(torch.cuda.memory_allocated(device))


def _tensor_bytes(tensors: Any) -> float:
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors
            if t is not None}
    return float(sum(seen.values()))


def _make_optimizer(model: Any, optimizer: str) -> Any:
    import torch

    if optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
    return torch.optim.SGD(model.parameters(), lr=1e-4)


def measure_breakdown(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int,
                      batch: int, precision: str, optimizer: str, checkpointing: bool,
                      attention: str, seed: int) -> pd.DataFrame:
    """Two training steps of a GPT-2; each memory component measured on its own.

    Runs in a fresh process (``runner.call``). ``method`` says how: ``allocator`` (GPU,
    differences of ``torch.cuda.memory_allocated``), ``tensors`` (bytes of the parameter,
    gradient and optimizer-state tensors themselves) and ``saved`` (what autograd saved for
    backward, counted by a saved-tensors hook).
    """
    import torch

    if precision == "mixed":
        raise WorkbookError("precision='mixed' (fp32 master copy) is DeepSpeed's recipe: see "
                            "05_data_parallel_zero; measured here: fp32, amp_bf16, bf16")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(seed)
    a0 = _alloc(device)
    model = build_model(n_layer, d_model, n_head, vocab, seq_len, attention, seed,
                        device=device.type)
    model = model.to(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    if checkpointing:
        _enable_checkpointing(model)
    model.train()
    a_model = _alloc(device)
    opt = _make_optimizer(model, optimizer)
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision == "amp_bf16")
    out: dict[str, float] = {}
    for step in range(2):  # step 1: optimizer states exist, as in every later step
        ids = torch.randint(0, vocab, (batch, seq_len), generator=gen).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before_fwd = _alloc(device)
        saved = SavedTensors(param_ptrs)
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), autocast:
            loss = model(input_ids=ids, labels=ids).loss
        after_fwd = _alloc(device)
        loss.backward()
        after_bwd = _alloc(device)
        opt.step()
        after_step = _alloc(device)
        if step == 0:
            out["grads_alloc"] = after_bwd - a_model
            out["optimizer_alloc"] = after_step - after_bwd
        else:
            out["activations_alloc"] = after_fwd - before_fwd
            out["activations_saved"] = float(saved.bytes)
            out["peak_alloc"] = (float(torch.cuda.max_memory_allocated(device)) - a0
                                 if device.type == "cuda" else float("nan"))
            out["grads_tensors"] = _tensor_bytes(p.grad for p in model.parameters())
        opt.zero_grad(set_to_none=step == 0)  # keep grads after step 1: steady state
    out["params_alloc"] = a_model - a0
    out["params_tensors"] = _tensor_bytes(model.parameters())
    out["optimizer_tensors"] = _tensor_bytes(t for st in opt.state.values()
                                             for t in st.values() if t.numel() > 1)
    n_params = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
    return _breakdown_rows(out, n_params, device.type)


def _breakdown_rows(out: dict[str, float], n_params: int, device: str) -> pd.DataFrame:
    rows = []
    for key, value in out.items():
        component, method = key.rsplit("_", 1)
        method = {"alloc": "allocator", "tensors": "tensors", "saved": "saved"}[method]
        if method == "allocator" and device != "cuda":
            continue  # a CPU has no allocator counters; the other methods stand
        rows.append({"component": component, "method": method, "metric": "bytes",
                     "value": value, "unit": "bytes", "source": "measured"})
    return pd.DataFrame(rows).assign(n_params=n_params, status="ok")


def predicted_breakdown(n_params: int, n_layer: int, d_model: int, n_head: int, vocab: int,
                        seq_len: int, batch: int, precision: str, optimizer: str,
                        checkpointing: bool, attention: str) -> pd.DataFrame:
    per = bytes_per_param(precision, optimizer)
    e = 4 if precision == "fp32" else 2
    acts = activation_bytes(n_layer, d_model, n_head, seq_len, batch, act_bytes=e,
                            checkpointing=checkpointing, attention_matrix=attention == "eager",
                            vocab=vocab)
    rows = [{"component": k, "value": v * n_params} for k, v in per.items()]
    rows.append({"component": "activations", "value": acts["total"]})
    rows.append({"component": "peak", "value": sum(per.values()) * n_params + acts["total"]})
    return pd.DataFrame(rows).assign(method="formula", metric="bytes", unit="bytes",
                                     source="predicted", n_params=n_params, status="ok")


@dataclass(frozen=True)
class BreakdownConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab: int
    seq_lens: tuple[int, ...]
    batch: int
    precision: str
    optimizer: str
    checkpointing: tuple[bool, ...] = (False, True)
    attention: str = "eager"
    timeout_s: int = 300

    def __post_init__(self) -> None:
        check_gpt_shape(self.n_layer, self.d_model, self.n_head, self.vocab)
        for s in self.seq_lens:
            check_range("seq_len", s, 2, 32768)
        check_range("batch", self.batch, 1, 1024)
        check_choice("precision", self.precision, PRECISIONS[:3])
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("attention", self.attention, ("eager", "sdpa"))
        check_range("timeout_s", self.timeout_s, 1, 86_400)


BREAKDOWN_PRESETS = {
    "small": BreakdownConfig(n_layer=2, d_model=64, n_head=4, vocab=512, seq_lens=(128,),
                             batch=2, precision="fp32", optimizer="adamw"),
    "full": BreakdownConfig(n_layer=12, d_model=768, n_head=12, vocab=50304,
                            seq_lens=(256, 512, 1024), batch=8, precision="amp_bf16",
                            optimizer="adamw"),
}


def run_breakdown(cfg: BreakdownConfig, seed: int) -> pd.DataFrame:
    """Each (seq_len, checkpointing) in a fresh process, with the formula beside it."""
    from workbook import runner

    frames = []
    for seq_len in cfg.seq_lens:
        for ckpt in cfg.checkpointing:
            kw = {"n_layer": cfg.n_layer, "d_model": cfg.d_model, "n_head": cfg.n_head,
                  "vocab": cfg.vocab, "seq_len": seq_len, "batch": cfg.batch,
                  "precision": cfg.precision, "optimizer": cfg.optimizer,
                  "checkpointing": ckpt, "attention": cfg.attention}
            rows = runner.call("workbook.memory:measure_breakdown", {**kw, "seed": seed},
                               timeout_s=cfg.timeout_s)
            n = int(rows["n_params"].iloc[0]) if "n_params" in rows and rows[
                "status"].eq("ok").any() else gpt_params(cfg.n_layer, cfg.d_model, cfg.vocab,
                                                         seq_len)
            frames.append(pd.concat([rows, predicted_breakdown(n, **kw)], ignore_index=True)
                          .assign(**kw))
    return fill_params(pd.concat(frames, ignore_index=True).assign(seed=seed))


@takes_rows
def breakdown_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per component: formula beside each measurement method, in MB."""
    ok = rows[rows["status"] == "ok"]
    table = ok.pivot_table(index=["seq_len", "checkpointing", "component"],
                           columns="method", values="value", aggfunc="mean") / 1e6
    return table.round(2).reset_index()


# --------------------------------------------------------------- the largest that fits


def _try_fit(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int, batch: int,
             precision: str, checkpointing: bool, seed: int) -> tuple[str, float, int]:
    """(status, peak bytes, Ψ) of two training steps, or ``oom``; memory freed after."""
    import torch

    model = opt = loss = None
    try:
        model = build_model(n_layer, d_model, n_head, vocab, seq_len, "sdpa", seed,
                            dropout=0.0, device="cuda")
        n_params = sum(p.numel() for p in model.parameters())
        device = torch.device("cuda")
        model = model.to(device, torch.bfloat16 if precision == "bf16" else torch.float32)
        if checkpointing:
            _enable_checkpointing(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        torch.cuda.reset_peak_memory_stats()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "amp_bf16")
        for _ in range(2):
            ids = torch.randint(0, vocab, (batch, seq_len), device=device)
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return "ok", float(torch.cuda.max_memory_allocated()), n_params
    except torch.OutOfMemoryError:
        return "oom", float("nan"), gpt_params(n_layer, d_model, vocab, seq_len)
    finally:
        del model, opt, loss
        gc.collect()
        torch.cuda.empty_cache()


def largest_fit(d_model: int, n_head: int, vocab: int, seq_len: int, batch: int,
                precision: str, checkpointing: bool, max_layers: int, seed: int) -> pd.DataFrame:
    """Grow n_layer (doubling, then bisection) until two training steps no longer fit.

    Runs in a fresh process on a GPU; every probe is a row (``status`` ok or oom).
    """
    import torch

    if not torch.cuda.is_available():
        raise WorkbookError("the largest-fit search needs a GPU (a CPU has no memory limit to "
                            "hit); recorded rows are shown instead")
    rows: list[dict[str, Any]] = []

    def probe(n: int) -> bool:
        status, peak, n_params = _try_fit(n, d_model, n_head, vocab, seq_len, batch,
                                          precision, checkpointing, seed)
        gc.collect()
        torch.cuda.empty_cache()
        rows.append({"n_layer": n, "n_params": n_params, "metric": "peak_bytes", "value": peak,
                     "unit": "bytes", "source": "measured", "status": status})
        return status == "ok"

    lo, hi = 0, None
    n = 1
    while n <= max_layers and probe(n):
        lo, n = n, n * 2
    hi = min(n, max_layers + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if probe(mid) else (lo, mid)
    total = float(torch.cuda.get_device_properties(0).total_memory)
    frame = pd.DataFrame(rows).assign(d_model=d_model, seq_len=seq_len, batch=batch,
                                      precision=precision, checkpointing=checkpointing,
                                      largest_fitting_layers=lo, gpu_bytes=total)
    return frame


@dataclass(frozen=True)
class FitConfig:
    d_model: int
    n_head: int
    vocab: int
    seq_len: int
    batch: int
    precision: str
    checkpointing: tuple[bool, ...]
    max_layers: int
    timeout_s: int = 300

    def __post_init__(self) -> None:
        check_gpt_shape(1, self.d_model, self.n_head, self.vocab)  # layers: what the fit finds
        check_range("max_layers", self.max_layers, 1, 512)
        check_range("seq_len", self.seq_len, 2, 32768)
        check_range("batch", self.batch, 1, 1024)
        check_choice("precision", self.precision, PRECISIONS[:3])
        check_range("timeout_s", self.timeout_s, 1, 86_400)


FIT_PRESETS = {
    "small": FitConfig(d_model=256, n_head=4, vocab=8192, seq_len=256, batch=4,
                       precision="amp_bf16", checkpointing=(False,), max_layers=64),
    "full": FitConfig(d_model=4096, n_head=32, vocab=50304, seq_len=2048, batch=4,
                      precision="amp_bf16", checkpointing=(False, True), max_layers=64),
}


def run_fit(cfg: FitConfig, seed: int) -> pd.DataFrame:
    from workbook import runner

    frames = []
    for ckpt in cfg.checkpointing:
        frames.append(runner.call("workbook.memory:largest_fit", {
            "d_model": cfg.d_model, "n_head": cfg.n_head, "vocab": cfg.vocab,
            "seq_len": cfg.seq_len, "batch": cfg.batch, "precision": cfg.precision,
            "checkpointing": ckpt, "max_layers": cfg.max_layers, "seed": seed},
            timeout_s=cfg.timeout_s))
    return fill_params(pd.concat(frames, ignore_index=True).assign(seed=seed))


EXPERIMENTS = [
    Experiment(name="memory_breakdown",
               summary="params, grads, Adam states, activations of a GPT-2, measured vs formula",
               notebook="04_memory", run=run_breakdown, presets=BREAKDOWN_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900),
    Experiment(name="memory_fit",
               summary="largest GPT (n_layer at fixed width) whose training step fits this GPU",
               notebook="04_memory", run=run_fit, presets=FIT_PRESETS,
               min_gpus={"small": 1, "full": 1}, timeout_s=900),
]


# ------------------------------------------------------------------ views for the notebook

# Shapes for the widget: (n_layer, d_model, n_head, vocab)
MODEL_SHAPES: dict[str, tuple[int, int, int, int]] = {
    "GPT-2 small (124M)": (12, 768, 12, 50257),
    "GPT-2 XL (1.5B)": (48, 1600, 25, 50257),
    "7B (32 x 4096)": (32, 4096, 32, 32000),
    "GPT-3 (175B)": (96, 12288, 96, 50257),
}


def scenario(model: str, precision: str, seq_len: int, batch: int,
             checkpointing: bool) -> pd.DataFrame:
    """Formula bytes per component for one of :data:`MODEL_SHAPES`."""
    check_choice("model", model, MODEL_SHAPES)
    check_choice("precision", precision, PRECISIONS)
    check_range("seq_len", seq_len, 1, 1_048_576)
    check_range("batch", batch, 1, 65_536)
    check_choice("checkpointing", checkpointing, (False, True))
    n_layer, d_model, n_head, vocab = MODEL_SHAPES[model]
    psi = gpt_params(n_layer, d_model, vocab, seq_len)
    e = 4 if precision == "fp32" else 2
    acts = activation_bytes(n_layer, d_model, n_head, seq_len, batch, act_bytes=e,
                            checkpointing=checkpointing, vocab=vocab)
    return training_memory(psi, precision, activations=acts["total"]).assign(n_params=psi)


def memory_explorer() -> Any:
    """The formula at any scale: stacked GB per component against one GPU's memory."""
    from workbook import plots, widgets

    fig = plots.figure("Training memory (formula)", "component", "GB")
    fig.add_bar(x=[], y=[], name="needed", marker_color=plots.COLORS[0])
    fig.add_bar(x=[], y=[], name="one GPU", marker_color=plots.COLORS[1])

    def draw(fig: Any, model: str, precision: str, seq_len: int, batch: int,
             checkpointing: bool, gpu_gb: int) -> str:
        table = scenario(model, precision, seq_len, batch, checkpointing)
        total = table["GB"].sum()
        fig.data[0].x, fig.data[0].y = list(table["component"]) + ["total"], list(
            table["GB"]) + [total]
        fig.data[1].x, fig.data[1].y = ["total"], [gpu_gb]
        psi = table["n_params"].iloc[0]
        return (f"{model}: Ψ = {psi / 1e9:.2f}B, {total:,.0f} GB to train "
                f"({precision}, batch {batch} × {seq_len}, checkpointing {checkpointing}) = "
                f"{total / gpu_gb:.1f}× one {gpu_gb} GB GPU")

    return widgets.Explorer({
        "model": widgets.dropdown("model", list(MODEL_SHAPES), "GPT-3 (175B)"),
        "precision": widgets.dropdown("precision", list(PRECISIONS), "fp32"),
        "seq_len": widgets.slider("seq_len", 128, 32768, 128, 2048),
        "batch": widgets.slider("batch", 1, 64, 1, 1),
        "checkpointing": widgets.dropdown("checkpointing", [False, True], False),
        "gpu_gb": widgets.slider("GPU GB", 16, 192, 8, 80),
    }, draw, fig)


@takes_rows
def plot_breakdown(rows: pd.DataFrame, seq_len: int, title: str = "") -> Any:
    """Grouped bars per component: formula vs each measurement method, ckpt off and on."""
    from workbook import plots

    ok = rows[(rows["status"] == "ok") & (rows["seq_len"] == seq_len)]
    fig = plots.figure(plots.title_with_source(title or f"Memory by component, seq_len "
                                               f"{seq_len}", ok), "component", "MB")
    for i, ((ckpt, method), part) in enumerate(ok.groupby(["checkpointing", "method"])):
        fig.add_bar(x=part["component"], y=part["value"] / 1e6,
                    name=f"{method}{' (ckpt)' if ckpt in (True, 'True') else ''}",
                    marker_color=plots.COLORS[i % len(plots.COLORS)])
    fig.update_layout(barmode="group")
    return fig


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


@takes_rows
def fit_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Largest fitting n_layer measured beside the formula's, per checkpointing setting."""
    if rows.empty:
        return pd.DataFrame()
    out = []
    for (device, ckpt), part in rows.groupby(["device", "checkpointing"]):
        r = part.iloc[0]
        fits = part[part["status"] == "ok"]
        best = fits.loc[fits["n_layer"].idxmax()] if len(fits) else None
        out.append({
            "device": device, "checkpointing": ckpt, "d_model": r["d_model"],
            "batch x seq": f"{r['batch']} x {r['seq_len']}",
            "largest n_layer measured": int(r["largest_fitting_layers"]),
            "params (B)": best["n_params"] / 1e9 if best is not None else float("nan"),
            "peak (GB)": best["value"] / 1e9 if best is not None else float("nan"),
            "largest n_layer by formula": formula_fit(
                int(r["d_model"]), 32, 50304, int(r["seq_len"]), int(r["batch"]),
                str(r["precision"]), ckpt in (True, "True"), float(r["gpu_bytes"])),
        })
    return pd.DataFrame(out)


@takes_rows
def claims(rows: pd.DataFrame) -> pd.DataFrame:
    """The lecture's memory claims: predicted, measured here (or recorded), verdict."""
    from workbook.claims import Claim, claims_table
    from workbook.results import where_label

    lect = lecture_175b().set_index("component")["GB"]
    need = float(lect.iloc[:4].sum())
    out = [Claim("175B needs ~3 TB to train (≈ 38 H100s of 80 GB)", "lecture, sec. 3.2",
                 3000.0, need, "GB", "formula only (no 175B run)", rel_tol=0.1)]
    ok = rows[(rows["status"] == "ok")] if len(rows) else rows
    where = where_label(ok)
    if len(ok):
        t = ok[ok["method"] == "tensors"]
        opt = t[t["component"] == "optimizer"]["value"].mean()
        par = t[t["component"] == "params"]["value"].mean()
        out.append(Claim("Adam's states take twice the parameters' memory",
                         "lecture, sec. 3.1 (1,400 GB vs 700 GB)", 2.0, float(opt / par), "×",
                         where))
        saved = ok[(ok["method"] == "saved") & (ok["component"] == "activations")]
        seq = saved["seq_len"].max()
        on = saved[(saved["seq_len"] == seq) & (saved["checkpointing"].astype(str) == "True")]
        off = saved[(saved["seq_len"] == seq) & (saved["checkpointing"].astype(str) == "False")]
        pred = ok[(ok["method"] == "formula") & (ok["component"] == "activations")
                  & (ok["seq_len"] == seq)]
        if len(on) and len(off):
            r_meas = off["value"].mean() / on["value"].mean()
            p_off = pred[pred["checkpointing"].astype(str) == "False"]["value"].mean()
            p_on = pred[pred["checkpointing"].astype(str) == "True"]["value"].mean()
            out.append(Claim(f"recomputation (checkpointing) saves activation memory "
                             f"(× less at seq_len {seq})", "lecture (recomputation)",
                             float(p_off / p_on), float(r_meas), "×", where))
    return claims_table(out)


@takes_rows
def plot_fit(rows: pd.DataFrame) -> Any:
    """The largest-fit search: each probe's peak (oom probes at the GPU's size, marked x),
    the formula's curve and the GPU's memory."""
    from workbook import plots

    fig = plots.figure(plots.title_with_source("Peak memory of two training steps vs depth",
                                               rows), "n_layer", "GB")
    if rows.empty:
        return fig
    if "device" in rows:  # one device's search per figure
        rows = rows[rows["device"] == rows["device"].iloc[0]]
    r = rows.iloc[0]
    gpu = float(r["gpu_bytes"]) / GB
    ok, oom = rows[rows["status"] == "ok"], rows[rows["status"] == "oom"]
    fig.add_scatter(x=ok["n_layer"], y=ok["value"] / GB, mode="markers", name="fits (peak)",
                    marker={"size": 9, "color": plots.COLORS[0]})
    fig.add_scatter(x=oom["n_layer"], y=[gpu] * len(oom), mode="markers", name="oom",
                    marker={"symbol": "x", "size": 11, "color": plots.COLORS[1]})
    n = list(range(1, int(rows["n_layer"].max()) + 1))
    e = 4 if r["precision"] == "fp32" else 2
    ckpt = r["checkpointing"] in (True, "True")
    need = [(sum(bytes_per_param(str(r["precision"])).values())
             * gpt_params(k, int(r["d_model"]), 50304, int(r["seq_len"]))
             + activation_bytes(k, int(r["d_model"]), 32, int(r["seq_len"]), int(r["batch"]),
                                act_bytes=e, checkpointing=ckpt, attention_matrix=False,
                                vocab=50304)["total"]) / GB for k in n]
    fig.add_scatter(x=n, y=need, mode="lines", name="formula: states + activations",
                    line={"dash": "dash", "color": plots.COLORS[2]})
    fig.add_hline(y=gpu, line={"dash": "dot", "color": "#555"},
                  annotation_text=f"{r['device']}: {gpu:.0f} GB")
    return fig

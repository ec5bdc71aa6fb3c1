"""Where training memory goes, measured (a fresh process each, :mod:`workbook.runner`).

A transformers GPT-2 is built, trained for two steps, and each component is measured on its
own: the allocator's count before and after the model, after the forward, after the backward,
after the optimizer step (GPU), and, on any device, the bytes of the tensors themselves and the
activations autograd saved for backward (``torch.autograd.graph.saved_tensors_hooks``).

:func:`measure_breakdown` writes its two steps out, not through ``workbook.training.train``:
the measurement sits between forward, backward and optimizer step, which is the point of this
notebook. The update itself is the workbook's one, ``workbook.training.backward_step``, whose
``before_step`` hook reads the allocator after the backward. Where a model simply trains (the
largest-fit probes, the checkpointing timings), it trains through ``workbook.training.train``;
the activation sweep is one forward.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import pandas as pd
import torch

from workbook.config import WorkbookError
from workbook.hardware import detect, torch_device
from workbook.memory.formulas import gpt_params
from workbook.model import count_params
from workbook.training import TrainConfig, backward_step, make_optimizer, train


def build_model(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int,
                attention: str, seed: int, dropout: float = 0.1, device: str = "cpu") -> Any:
    """A random transformers GPT-2 (no download), built directly on ``device``; dropout as in
    GPT-2 (its masks are activations too)."""
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
    """Counts the bytes autograd saves for backward, each storage once, parameters excluded.

    With ``seq_len`` and ``n_matrices`` (batch × heads) it also counts, apart, the storages
    of saved tensors that hold exactly ``n_matrices`` matrices of ``seq_len × seq_len``
    (shape ``(…, s, s)``): the attention matrix that eager attention keeps and fused attention
    does not.
    """

    def __init__(self, exclude: set[int], seq_len: int = 0, n_matrices: int = 0) -> None:
        self.exclude = exclude
        self.seq_len = seq_len
        self.n_matrices = n_matrices
        self.seen: dict[int, int] = {}
        self.square: set[int] = set()

    def pack(self, t: Any) -> Any:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.exclude and storage.nbytes() > 0:
            self.seen[ptr] = storage.nbytes()
            s = self.seq_len
            if (s and t.dim() >= 2 and t.shape[-1] == t.shape[-2] == s
                    and t.numel() == self.n_matrices * s * s):
                self.square.add(ptr)
        # The graph keeps the tensor's storage (what is measured) but not the tensor itself:
        # an op's own output handed back is a reference cycle through C++ that no garbage
        # collection frees. After a forward with no backward (forward_activations) every
        # activation then leaked: on an 80 GB H100 the sweep's leftovers ran sdpa at 1024 out
        # of memory (85d830f626cc).
        return t.detach()

    @property
    def bytes(self) -> int:
        return sum(self.seen.values())

    @property
    def score_bytes(self) -> int:
        """Bytes of the saved s×s tensors alone."""
        return sum(self.seen[p] for p in self.square)


def allocated_bytes(device: torch.device, peak: bool = False) -> float:
    """The CUDA allocator's count (``memory_allocated``, or its peak), after a sync; NaN on a
    CPU, which has no such counter."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) if peak
                 else torch.cuda.memory_allocated(device))


def _tensor_bytes(tensors: Any) -> float:
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors
            if t is not None}
    return float(sum(seen.values()))


def _make_optimizer(model: Any, optimizer: str) -> Any:
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
    if precision == "mixed":
        raise WorkbookError("precision='mixed' (fp32 master copy) is DeepSpeed's recipe: see "
                            "05_data_parallel_zero; measured here: fp32, amp_bf16, bf16")
    device = torch_device()
    gen = torch.Generator().manual_seed(seed)
    a0 = allocated_bytes(device)
    model = build_model(n_layer, d_model, n_head, vocab, seq_len, attention, seed,
                        device=device.type)
    model = model.to(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    if checkpointing:
        _enable_checkpointing(model)
    model.train()
    a_model = allocated_bytes(device)
    opt = _make_optimizer(model, optimizer)
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision == "amp_bf16")
    out: dict[str, float] = {}
    cuda = device.type == "cuda"
    at_backward: dict[str, float] = {}

    def read_backward() -> None:   # after the backward, before the optimizer step
        at_backward["after"] = allocated_bytes(device)
        at_backward["peak"] = allocated_bytes(device, peak=True)
        at_backward["reserved"] = (float(torch.cuda.max_memory_reserved(device)) if cuda
                                   else float("nan"))
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)

    # This loop is the measurement (not workbook.training.train): the allocator is read between
    # forward, backward and optimizer step, and each phase's peak is taken on its own.
    for step in range(2):  # step 1: optimizer states exist, as in every later step
        ids = torch.randint(0, vocab, (batch, seq_len), generator=gen).to(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        before_fwd = allocated_bytes(device)
        saved = SavedTensors(param_ptrs, seq_len, batch * n_head)
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), autocast:
            loss = model(input_ids=ids, labels=ids).loss
        after_fwd, peak_fwd = allocated_bytes(device), allocated_bytes(device, peak=True)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        # backward, read_backward(), optimizer step; the gradients are cleared below
        backward_step(loss, opt, zero_grad=False, before_step=read_backward)
        after_bwd, peak_bwd = at_backward["after"], at_backward["peak"]
        reserved_bwd = at_backward["reserved"]
        after_step, peak_step = allocated_bytes(device), allocated_bytes(device, peak=True)
        if step == 0:
            out["grads_alloc"] = after_bwd - a_model
            out["optimizer_alloc"] = after_step - after_bwd
        else:
            peaks = {"forward": peak_fwd, "backward": peak_bwd, "step": peak_step}
            out["activations_alloc"] = after_fwd - before_fwd
            out["activations_saved"] = float(saved.bytes)
            out["attention scores_saved"] = float(saved.score_bytes)
            for phase, value in peaks.items():
                out[f"peak in {phase}_alloc"] = value - a0
            out["peak_alloc"] = max(peaks.values()) - a0
            # what the caching allocator holds beyond the live tensors at the backward's peak
            # (freed blocks kept for reuse, blocks split and rounded)
            out["allocator reserve_alloc"] = reserved_bwd - peak_bwd
            out["grads_tensors"] = _tensor_bytes(p.grad for p in model.parameters())
        opt.zero_grad(set_to_none=step == 0)  # keep grads after step 1: steady state
    if cuda:
        # CUDA context, kernels and library handles: used on the device but outside the
        # allocator's count (a fresh process on an otherwise idle GPU)
        free, total = torch.cuda.mem_get_info(device)
        out["CUDA context_alloc"] = float(total - free) - float(torch.cuda.memory_reserved(device))
    out["params_alloc"] = a_model - a0
    out["params_tensors"] = _tensor_bytes(model.parameters())
    out["optimizer_tensors"] = _tensor_bytes(t for st in opt.state.values()
                                             for t in st.values() if t.numel() > 1)
    return _breakdown_rows(out, count_params(model), device.type)


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


# --------------------------------------------------------------- the largest that fits


def random_batches(vocab: int, batch: int, seq_len: int, device: torch.device) -> Any:
    """``batches(step, generator)`` for :func:`workbook.training.train`: random token ids
    (memory and time do not depend on which tokens), the targets the inputs shifted by one."""
    def batches(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, vocab, (batch, seq_len + 1), generator=gen).to(device)
        return ids[:, :-1], ids[:, 1:]
    return batches


def train_steps(model: Any, steps: int, vocab: int, batch: int, seq_len: int, precision: str,
                optimizer: Any = None, seed: int = 0) -> pd.DataFrame:
    """``steps`` plain training steps through the workbook's one loop
    (:func:`workbook.training.train`): no validation, no clipping, constant learning rate;
    autocast only for ``amp_bf16``."""
    device = next(model.parameters()).device
    cfg = TrainConfig(steps=steps, batch_size=batch, seq_len=seq_len, lr=1e-4, warmup=0,
                      eval_every=steps, schedule="constant")
    return train(model, cfg, seed=seed, batches=random_batches(vocab, batch, seq_len, device),
                 validate=lambda: float("nan"), optimizer=optimizer, clip=None,
                 amp=precision == "amp_bf16")


def _try_fit(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int, batch: int,
             precision: str, checkpointing: bool, seed: int) -> tuple[str, float, int]:
    """(status, peak bytes, Ψ) of two training steps, or ``oom``; memory freed after."""
    model = None
    try:
        model = build_model(n_layer, d_model, n_head, vocab, seq_len, "sdpa", seed,
                            dropout=0.0, device="cuda")
        n_params = count_params(model)
        model = model.to(torch.device("cuda"),
                         torch.bfloat16 if precision == "bf16" else torch.float32)
        if checkpointing:
            _enable_checkpointing(model)
        torch.cuda.reset_peak_memory_stats()
        train_steps(model, 2, vocab, batch, seq_len, precision, seed=seed)
        return "ok", float(torch.cuda.max_memory_allocated()), n_params
    except torch.OutOfMemoryError:
        return "oom", float("nan"), gpt_params(n_layer, d_model, vocab, seq_len)
    finally:
        del model
        gc.collect()
        torch.cuda.empty_cache()


# The largest-fit probe changed once: until commit 169b8b5 its two steps were a loop of its own
# (fused AdamW, autocast, fresh random ids); since then they go through workbook.training.train
# (:func:`train_steps`). Rows recorded before that commit's date came from the older probe.
FIT_PROBE_SINCE = ("169b8b5", "2026-12-02T16:16:13Z")


def fit_probe(recorded_at: object) -> str:
    """Which largest-fit probe made a row recorded at ``recorded_at`` (ISO 8601, UTC, as the
    ledger writes it; a live row has none): the current one or the older one."""
    commit, since = FIT_PROBE_SINCE
    if isinstance(recorded_at, str) and recorded_at and recorded_at < since:
        return f"older probe: before {commit}, a two-step loop of its own"
    return f"current probe: training.train, since {commit}"


def largest_fit(d_model: int, n_head: int, vocab: int, seq_len: int, batch: int,
                precision: str, checkpointing: bool, max_layers: int, seed: int) -> pd.DataFrame:
    """Grow n_layer (doubling, then bisection) until two training steps no longer fit.

    Runs in a fresh process on a GPU; every probe is a row (``status`` ok or oom).
    """
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
    total = detect().memory_gb * 1e9  # the card, or $WORKBOOK_GPU_MEMORY_GB where set
    frame = pd.DataFrame(rows).assign(d_model=d_model, seq_len=seq_len, batch=batch,
                                      precision=precision, checkpointing=checkpointing,
                                      largest_fitting_layers=lo, gpu_bytes=total)
    return frame


# --------------------------------------------------------------- activations against seq_len


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        "can't allocate memory" in str(exc))


def _free(device: torch.device) -> None:
    """Give freed GPU memory back before the next measurement (a CPU has no cache to clear,
    and a full ``gc.collect`` costs a second there)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def forward_activations(model: Any, vocab: int, seq_len: int, batch: int, precision: str,
                        seed: int) -> dict[str, float]:
    """One training-mode forward (with the loss) of ``model``: what it leaves for backward.

    ``saved``/``scores``: bytes autograd saved (all, and the s×s tensors alone; any device).
    On a GPU also ``held`` (allocated after the forward minus before) and ``peak`` (the
    forward's ``max_memory_allocated`` minus what was allocated before it). A single forward
    is the measurement, so no training loop here.
    """
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=gen).to(device)
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = SavedTensors(param_ptrs, seq_len, batch * model.config.n_head)
    model.train()  # transformers checkpoints only in training mode
    _free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = allocated_bytes(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision == "amp_bf16")
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), autocast:
        loss = model(input_ids=ids, labels=ids).loss
    out = {"saved": float(saved.bytes), "scores": float(saved.score_bytes),
           "held": allocated_bytes(device) - before,
           "peak": allocated_bytes(device, peak=True) - before}
    del loss
    _free(device)
    return out


def activation_sweep(n_layer: int, d_model: int, n_head: int, vocab: int,
                     seq_lens: list[int], batch: int, precision: str, attentions: list[str],
                     seed: int) -> pd.DataFrame:
    """Activations of one forward across ``seq_lens``, for each attention implementation
    (``eager`` stores the s×s matrix, ``sdpa`` does not), without dropout (so SDPA takes a
    fused kernel on a CPU as on a GPU).

    Rows per (attention, seq_len): ``method`` ``saved`` (bytes saved for backward),
    ``saved scores`` (its s×s part) and, on a GPU, ``peak`` (the forward's
    ``max_memory_allocated`` above what was allocated before). A length that does not fit is an
    ``oom`` row, and the longer ones after it are ``oom`` rows without a try.
    """
    device = torch_device()
    rows: list[dict[str, Any]] = []
    for attention in attentions:
        failed = ""
        for seq_len in sorted(seq_lens):
            base = {"attention": attention, "seq_len": seq_len, "metric": "bytes",
                    "unit": "bytes", "source": "measured"}
            if failed:
                rows.append({**base, "method": "peak", "value": float("nan"), "status": "oom",
                             "error": f"not tried: seq_len {failed} already ran out of memory"})
                continue
            model = None
            try:
                model = build_model(n_layer, d_model, n_head, vocab, seq_len, attention, seed,
                                    dropout=0.0, device=device.type)
                model = model.to(device, torch.bfloat16 if precision == "bf16" else
                                 torch.float32).train()
                got = forward_activations(model, vocab, seq_len, batch, precision, seed)
            except Exception as exc:  # noqa: BLE001 - an OOM is a row; anything else is raised
                if not _is_oom(exc):
                    raise
                failed = str(seq_len)
                rows.append({**base, "method": "peak", "value": float("nan"), "status": "oom",
                             "error": str(exc).splitlines()[0][:200]})
                continue
            finally:
                del model
                _free(device)
            methods = {"saved": got["saved"], "saved scores": got["scores"]}
            if device.type == "cuda":
                methods["peak"] = got["peak"]
            rows += [{**base, "method": m, "value": v, "status": "ok"}
                     for m, v in methods.items()]
    return pd.DataFrame(rows).assign(error=lambda f: f.get("error", "-"))


# --------------------------------------------------------------- checkpointing: time


def time_recompute(n_layer: int, d_model: int, n_head: int, vocab: int, seq_len: int,
                   batch: int, precision: str, steps: int, repeats: int,
                   seed: int) -> pd.DataFrame:
    """Step time and memory of training with and without activation checkpointing.

    Two copies of the same model (same seed), one with transformers' checkpointing on. Each
    repeat trains each copy ``steps`` steps through :func:`workbook.training.train`, the two
    interleaved so that a slow spell of a shared machine hits both; the time per step is the
    call's wall time (after a sync) over ``steps``. One untimed call per copy first (kernels,
    optimizer states). Memory: the peak allocated during one call (GPU) above what was
    allocated before it, and the bytes one forward saves for backward (any device).
    """
    device = torch_device()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    models, opts = {}, {}
    for ckpt in (False, True):
        model = build_model(n_layer, d_model, n_head, vocab, seq_len, "sdpa", seed,
                            dropout=0.0, device=device.type).to(device, dtype)
        if ckpt:
            _enable_checkpointing(model)
        models[ckpt] = model
        opts[ckpt] = make_optimizer(model, TrainConfig(lr=1e-4))
    rows: list[dict[str, Any]] = []

    def run(ckpt: bool, n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_steps(models[ckpt], n, vocab, batch, seq_len, precision, opts[ckpt], seed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1e3 / n

    for ckpt in (False, True):  # warm-up (kernels, optimizer states), then one call's memory
        run(ckpt, 1)
        _free(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = allocated_bytes(device)
        run(ckpt, 1)
        peak = allocated_bytes(device, peak=True) - before
        got = forward_activations(models[ckpt], vocab, seq_len, batch, precision, seed)
        mem = {"saved": got["saved"]} | ({"peak": peak} if device.type == "cuda" else {})
        rows += [{"checkpointing": ckpt, "metric": "bytes", "method": m, "value": v,
                  "unit": "bytes", "repeat": -1} for m, v in mem.items()]
    for r in range(repeats):
        for ckpt in (False, True) if r % 2 == 0 else (True, False):
            rows.append({"checkpointing": ckpt, "metric": "step_ms", "method": "timed",
                         "value": run(ckpt, steps), "unit": "ms", "repeat": r})
    return pd.DataFrame(rows).assign(source="measured", status="ok", steps=steps,
                                     n_params=count_params(models[False]))

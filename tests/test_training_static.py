"""workbook.training.StaticStep / train_static: the pre-training step with every per-step value
on the device, which the scaling sweep can replay from a CUDA graph.

On a CPU: the static step trains exactly as :func:`workbook.training.train` does on the same
batches, and while a capture is (simulated to be) under way it reads no value back to Python,
which is what a CUDA graph's capture needs. On a GPU: the captured step really replays and
trains as the eager one does.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from workbook import scaling_laws as sl
from workbook import training
from workbook.config import WorkbookError
from workbook.model import ModelConfig, build_model, use_causal_sdpa

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, seq_len=16)
READS = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "numpy"}


class HostData(TorchDispatchMode):
    """Records tensors made from Python data (``torch.tensor(...)``): on a GPU, a copy from the
    host, which a CUDA graph would freeze at its capture-time value."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "lift_fresh" in str(func):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


class ReadBacks(TorchFunctionMode):
    """Records every tensor method that hands a value to Python (a host sync on a GPU)."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in READS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


def stream_and_starts(steps: int, batch: int, device="cpu"):
    gen = torch.Generator().manual_seed(3)
    ids = torch.arange(3000) * 5 % CFG.vocab_size      # a learnable stream: t + 1 follows t
    starts = torch.randint(0, len(ids) - CFG.seq_len - 1, (steps, batch), generator=gen)
    return ids.to(device), starts.to(device)


def test_the_static_step_trains_as_train_does_on_the_same_batches():
    tcfg = training.TrainConfig(steps=20, batch_size=4, seq_len=CFG.seq_len, lr=1e-2, warmup=3,
                                eval_every=20)
    ids, starts = stream_and_starts(tcfg.steps, tcfg.batch_size)
    offsets = torch.arange(CFG.seq_len + 1)

    def batches(step, _gen):
        window = ids[starts[step][:, None] + offsets]
        return window[:, :-1], window[:, 1:]

    reference = build_model(CFG, 0)     # transformers' own SDPA, the loop every topic uses
    opt = training.make_optimizer(reference, tcfg, betas=(0.9, 0.99))
    log = training.train(reference, tcfg, seed=0, batches=batches, validate=lambda: math.nan,
                         optimizer=opt, device="cpu")
    static = use_causal_sdpa(build_model(CFG, 0))
    losses, info = training.train_static(static, tcfg, ids, starts, betas=(0.9, 0.99))

    want = torch.tensor(log.loc[log["split"] == "train", "loss"].to_numpy(), dtype=torch.float32)
    assert info == {"graphed_steps": 0, "graph_error": ""}
    assert torch.allclose(losses, want, rtol=1e-5, atol=1e-5), (losses, want)
    assert losses[-1] < losses[0] - 0.5           # it learned, both ways alike
    for a, b in zip(reference.parameters(), static.parameters(), strict=True):
        assert torch.allclose(a, b, atol=2e-5), (a - b).abs().max()


def test_under_capture_the_static_step_reads_nothing_back(monkeypatch):
    """A CUDA graph cannot capture a step that reads a value back (``bool(tensor)``,
    ``.item()``). Eagerly, transformers reads one per forward (its check for packed sequences);
    under capture it skips that check, and so must everything else in the step; nor may the
    step make a tensor from Python data (a host copy the graph would freeze)."""
    from transformers import masking_utils

    tcfg = training.TrainConfig(steps=4, batch_size=2, seq_len=CFG.seq_len, warmup=1)
    ids, starts = stream_and_starts(tcfg.steps, tcfg.batch_size)
    step = training.StaticStep(use_causal_sdpa(build_model(CFG, 0)), tcfg, ids, starts)
    with ReadBacks() as eager:
        step()
    assert eager.seen, "the spy saw no read: it would not see one under capture either"
    monkeypatch.setitem(masking_utils.is_tracing.__globals__, "is_cuda_stream_capturing",
                        lambda: True)
    step.optimizer.zero_grad(set_to_none=True)
    with ReadBacks() as captured, HostData() as host:
        step()
    assert captured.seen == [] and host.seen == []
    with HostData() as control:
        torch.ones(2) * torch.tensor(2.0)
    assert control.seen, "the spy missed torch.tensor(...): it proves nothing"
    assert int(step.step) == 2 and bool((step.losses[:2] > 0).all())


def test_bad_input_is_one_line():
    tcfg = training.TrainConfig(steps=4, batch_size=2, seq_len=CFG.seq_len, warmup=1)
    ids, starts = stream_and_starts(tcfg.steps, tcfg.batch_size)
    model = build_model(CFG, 0)
    with pytest.raises(WorkbookError, match=r"cuda_graph needs .* allowed on a CPU"):
        training.train_static(model, tcfg, ids, starts, cuda_graph=True)
    with pytest.raises(WorkbookError, match=r"starts must be \(steps, batch_size\) = \(4, 2\)"):
        training.train_static(model, tcfg, ids, starts[:3])
    past_the_end = torch.zeros_like(starts)
    past_the_end[0, 0] = 2990              # its window would read tokens 2990 to 3006 of 3000
    with pytest.raises(WorkbookError, match=r"starts must lie in 0 to 2983 .* got 0 to 2990"):
        training.train_static(model, tcfg, ids, past_the_end)
    with pytest.raises(WorkbookError, match="eager_steps"):
        training.train_static(model, tcfg, ids, starts, eager_steps=0)


def test_a_sweep_asked_for_cuda_graphs_says_how_many_steps_replayed_one(tmp_path):
    cfg = sl.IsoFlopConfig(**{**sl.ISOFLOP_PRESETS["small"].__dict__, "budgets": (3e10,),
                              "sizes_per_budget": 1, "cuda_graph": True, "device": "cpu"})
    rows = sl.run_isoflop(cfg)
    graphed = rows[rows["metric"] == "graphed_steps"]
    assert len(graphed) == 1 and graphed["value"].iloc[0] == 0   # a CPU replays none
    assert bool(rows["cuda_graph"].dropna().all())
    with pytest.raises(WorkbookError, match="cuda_graph"):
        sl.IsoFlopConfig(**{**cfg.__dict__, "cuda_graph": 1})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures a CUDA graph")
def test_on_a_gpu_the_graphed_step_replays_and_trains_as_the_eager_one():
    device = torch.device("cuda")
    cfg = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, seq_len=256)
    tcfg = training.TrainConfig(steps=200, batch_size=16, seq_len=cfg.seq_len, lr=3e-3,
                                warmup=20, eval_every=200)
    gen = torch.Generator(device=device).manual_seed(0)
    # every other token random, the next one follows from it: half of the loss can be learned,
    # and a graph that replayed stale windows would memorise them and fall far below the eager
    ids = torch.randint(0, cfg.vocab_size, (200_000,), generator=gen, device=device)
    ids[1::2] = ids[0::2] * 5 % cfg.vocab_size
    starts = torch.randint(0, len(ids) - cfg.seq_len - 1, (tcfg.steps, tcfg.batch_size),
                           generator=gen, device=device)
    out, seconds = {}, {}
    for graph in (False, True):
        model = use_causal_sdpa(build_model(cfg, 0, device=device))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses, info = training.train_static(model, tcfg, ids, starts, cuda_graph=graph)
        torch.cuda.synchronize()
        seconds[graph] = time.perf_counter() - t0
        out[graph] = (losses.cpu(), info, torch.cat([p.detach().flatten().float()
                                                     for p in model.parameters()]).cpu())
    print(f"eager {seconds[False] * 1e3 / tcfg.steps:.2f} ms/step, "
          f"graphed {seconds[True] * 1e3 / tcfg.steps:.2f} ms/step")
    (eager, _, w_eager), (graphed, info, w_graphed) = out[False], out[True]
    assert info == {"graphed_steps": tcfg.steps - 3, "graph_error": ""}
    assert bool((graphed > 0).all()), "a replay wrote no loss"
    assert graphed[-20:].mean() < graphed[0] - 1.0                 # it learned the half
    assert torch.allclose(graphed, eager, atol=0.05), (graphed - eager).abs().max()
    assert (w_graphed - w_eager).norm() / w_eager.norm() < 0.05

"""Next-token loss, perplexity, the schedule and the training loop."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from workbook import data, pretraining, training
from workbook.config import WorkbookError
from workbook.model import ModelConfig, build_model
from workbook.pretraining import TrainConfig

TINY = ModelConfig(vocab_size=4096, d_model=32, n_layers=1, n_heads=2, seq_len=32)


def test_next_token_loss_is_mean_negative_log_probability():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=gen)
    targets = torch.randint(0, 11, (2, 5), generator=gen)
    # Reference: probability of the token that came next, by hand.
    probs = logits.softmax(-1)
    manual = -probs.gather(-1, targets[..., None]).log().mean()
    torch.testing.assert_close(pretraining.next_token_loss(logits, targets), manual)


def test_uniform_guess_has_perplexity_vocab_size():
    vocab = 4096
    uniform_loss = pretraining.next_token_loss(torch.zeros(1, 3, vocab),
                                               torch.tensor([[5, 6, 7]])).item()
    assert uniform_loss == pytest.approx(math.log(vocab))
    assert pretraining.perplexity(uniform_loss) == pytest.approx(vocab, rel=1e-5), \
        "perplexity = the number of equally likely choices"


def test_schedule_warms_up_then_decays_to_a_tenth():
    cfg = TrainConfig(steps=100, warmup=10, lr=1e-3)
    lrs = [pretraining.lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3)
    assert lrs[9] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4, rel=0.01)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)), "monotone decay"


def test_training_lowers_the_loss_and_is_reproducible():
    cfg = TrainConfig(steps=30, batch_size=8, seq_len=32, lr=3e-3, warmup=3, eval_every=30,
                      eval_batches=2)
    logs = [pretraining.train(build_model(TINY, seed=0), cfg, seed=0, vocab_size=4096,
                              device="cpu") for _ in range(2)]
    val = logs[0][logs[0]["split"] == "val"]["loss"].tolist()
    assert val[-1] < val[0] - 0.5, f"val loss {val[0]:.2f} -> {val[-1]:.2f}: did not learn"
    torch.testing.assert_close(torch.tensor(logs[0]["loss"].values),
                               torch.tensor(logs[1]["loss"].values),
                               msg="same seed, same batches, same losses")


def _token_batches(vocab: int, batch: int, seq_len: int):
    def batches(step, gen):
        ids = torch.randint(0, vocab, (batch, seq_len + 1), generator=gen)
        return ids[:, :-1], ids[:, 1:]
    return batches


def test_train_loss_fn_replaces_the_loss_and_gets_the_batch_as_given():
    small = ModelConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, seq_len=8)
    cfg = TrainConfig(steps=4, batch_size=2, seq_len=8, lr=1e-2, warmup=0, eval_every=4,
                      schedule="constant")
    make = _token_batches(64, 2, 8)
    seen = []

    def as_dict(step, gen):              # any batch shape: loss_fn is the one that reads it
        x, y = make(step, gen)
        return {"x": x, "y": y}

    def loss_fn(model, batch):
        seen.append(sorted(batch))
        return training.next_token_loss(model(input_ids=batch["x"]).logits, batch["y"])

    args = dict(seed=3, device="cpu", validate=lambda: 0.0, clip=None)
    plain = training.train(build_model(small, seed=0), cfg, batches=make, **args)
    swapped = training.train(build_model(small, seed=0), cfg, batches=as_dict,
                             loss_fn=loss_fn, **args)
    assert seen == [["x", "y"]] * cfg.steps
    torch.testing.assert_close(torch.tensor(swapped["loss"].values),
                               torch.tensor(plain["loss"].values),
                               msg="loss_fn = the next-token loss must train exactly as default")
    doubled = training.train(build_model(small, seed=0), cfg, batches=as_dict,
                             loss_fn=lambda m, b: 2 * loss_fn(m, b), **args)
    first = doubled[doubled["split"] == "train"]["loss"].iloc[0]
    assert first == pytest.approx(2 * plain[plain["split"] == "train"]["loss"].iloc[0])


def test_backward_step_clears_clips_then_steps():
    lin = torch.nn.Linear(3, 1)
    params = list(lin.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    x = torch.ones(4, 3)
    seen = {}

    def before_step():
        seen["norm"] = torch.nn.utils.get_total_norm([p.grad for p in params]).item()
        seen["weight"] = lin.weight.detach().clone()
        seen["grads"] = torch.cat([p.grad.flatten() for p in params])

    lin.weight.grad = torch.tensor([[1e6, 0.0, 0.0]])   # stale: a clearing step drops it
    lin.bias.grad = torch.zeros(1)
    start = lin.weight.detach().clone()
    training.backward_step((1000 * lin(x)).sum(), opt, params=params, clip=1.0,
                           before_step=before_step)
    assert seen["norm"] == pytest.approx(1.0, rel=1e-5), "clipped to 1 before the step"
    # four equal fresh gradients (x is all ones), scaled to norm 1: 0.5 each, nothing stale
    torch.testing.assert_close(seen["grads"], torch.full((4,), 0.5))
    torch.testing.assert_close(seen["weight"], start, msg="before_step runs before the step")
    assert not torch.equal(lin.weight, start), "the optimizer stepped"
    # zero_grad=False: the caller clears; this backward adds to what is there
    opt.zero_grad(set_to_none=True)
    training.backward_step(lin(x).sum(), opt, zero_grad=False)
    once = lin.weight.grad.clone()
    training.backward_step(lin(x).sum(), opt, zero_grad=False)
    torch.testing.assert_close(lin.weight.grad, 2 * once)
    with pytest.raises(WorkbookError, match="clip needs params"):
        training.backward_step(lin(x).sum(), opt, clip=1.0)


def test_sampling_is_reproducible_and_decodes():
    model = build_model(TINY, seed=0)
    tok = data.load_tokenizer()
    a = pretraining.sample(model, tok, "def ", max_new_tokens=8, seed=1)
    b = pretraining.sample(model, tok, "def ", max_new_tokens=8, seed=1)
    assert a == b and isinstance(a, str) and len(a) > 0


def test_bad_train_config_names_the_range():
    with pytest.raises(WorkbookError, match="warmup"):
        TrainConfig(steps=10, warmup=20)


def _curve(val_losses, train_losses):
    rows = [{"step": 10 * i, "split": split, "tokens": 1000.0 * i, "metric": "loss",
             "value": v, "status": "ok", "source": "measured", "device": "cpu"}
            for split, losses in (("val", val_losses), ("train", train_losses))
            for i, v in enumerate(losses)]
    return pd.DataFrame(rows)


def test_curve_story_reads_its_numbers_from_the_rows():
    falling = pretraining.curve_story(_curve([8.0, 7.0, 6.0, 5.5, 5.2, 5.0],
                                             [8.0, 6.0, 5.0, 4.2, 4.0, 3.8]), 500)
    assert "**50 steps**, 5,000 tokens" in falling and "**10.0 passes** over the 500-" in falling
    # the training loss is the mean of the last 5 batches: 4.6, 0.40 nats below held-out 5.0
    assert "not overfitted" in falling and "4.60) sits 0.40 nats below" in falling
    overfit = pretraining.curve_story(_curve([8.0, 5.0, 6.0], [8.0, 3.0, 1.0]), 1000)
    assert "lowest at step 10 (5.00 nats)" in overfit and "*rises* to 6.00" in overfit
    # a last point within 0.05 nats above the lowest is not called "at its lowest"
    near = pretraining.curve_story(_curve([8.0, 5.0, 5.02], [8.0, 3.0, 1.0]), 1000)
    assert "ends within 0.05 nats of its lowest (step 10)" in near and "at its lowest" not in near


def test_curve_story_gives_each_device_its_own_paragraph():
    here = _curve([8.0, 6.0, 5.0], [8.0, 4.0, 3.0])
    other = _curve([8.0, 7.0, 6.5], [8.0, 6.0, 5.5]).assign(
        device="NVIDIA H200", source="recorded", recorded_at="2026-12-01", n_gpus=1, seed=0)
    first, second = pretraining.curve_story(pd.concat([here, other]), 1000).split("\n\n")
    # each paragraph's numbers are its own device's (never one device's start, the other's end)
    assert first.startswith("**This machine (cpu)**") and "from 8.00 to 5.00" in first
    assert second.startswith("**Recorded on NVIDIA H200") and "from 8.00 to 6.50" in second
    assert "5.00" not in second


def test_transfer_story_reads_its_numbers_from_the_rows():
    rows = [{"init": init, "step": s, "metric": "val_loss", "value": v, "status": "ok",
             "source": "measured", "device": "cpu"}
            for init, losses in (("pretrained", [5.0, 3.0, 3.5]), ("scratch", [8.3, 6.0, 4.0]))
            for s, v in zip((0, 10, 20), losses, strict=True)]
    rows += [{"init": init, "step": 20, "metric": "steps_to_scratch_final", "value": v,
              "status": "ok", "source": "measured", "device": "cpu"}
             for init, v in (("pretrained", 10.0), ("scratch", 20.0))]
    text = pretraining.transfer_story(pd.DataFrame(rows))
    assert "5.00 nats against 8.30" in text
    # held-out loss is checked every 10 steps: "by step 10", not "in 10 steps"
    assert "by step **10** (the first check after the start), scratch itself by step **20**" \
        in text and "checked every 10 steps" in text
    assert "pretrained run's held-out loss is lowest at step 10" in text
    assert "scratch run" not in text
    # rows of two devices (this machine's live run and a recorded GPU): one paragraph each
    other = pd.DataFrame(rows).assign(device="NVIDIA H200", source="recorded",
                                      recorded_at="2026-12-01", n_gpus=1, seed=0)
    both = pretraining.transfer_story(pd.concat([pd.DataFrame(rows), other]))
    first, second = both.split("\n\n")
    assert first.startswith("**This machine (cpu)**: fine-tuned")
    assert second.startswith("**Recorded on NVIDIA H200") and "by step **10**" in second
    # neither run turning up is said, not left out
    flat = pd.DataFrame(rows)
    flat.loc[(flat["init"] == "pretrained") & (flat["step"] == 20), "value"] = 2.9
    assert "Neither run's held-out loss ends more than 0.05 nats above" in (
        pretraining.transfer_story(flat))
    assert "Neither run" not in text


def test_live_config_follows_the_preset_and_refuses_others():
    import pytest

    from workbook import model, pretraining
    from workbook.config import WorkbookError

    assert pretraining.live_config("small").steps == pretraining.LIVE_STEPS["small"]
    assert pretraining.live_config("full").seq_len == model.BASE_RECIPES["full"].model.seq_len
    with pytest.raises(WorkbookError, match="allowed|choose"):
        pretraining.live_config("medium")


def test_transfer_claim_fewer_steps_is_strict():
    """'Fewer steps' is not 'as many': the same step as scratch misses, one fewer holds."""
    def rows(pretrained: float) -> pd.DataFrame:
        return pd.DataFrame([{"metric": "steps_to_scratch_final", "init": init, "value": v,
                              "source": "measured", "device": "cpu"}
                             for init, v in (("pretrained", pretrained), ("scratch", 120.0))])

    same = pretraining.claims(4096, 8.3, 5.1, rows(120.0)).iloc[-1]
    assert "than scratch's 120" in same["claim"] and same["verdict"].startswith("missed")
    assert pretraining.claims(4096, 8.3, 5.1, rows(100.0)).iloc[-1]["verdict"].startswith("holds")

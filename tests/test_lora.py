"""LoRA: the from-scratch layer agrees with PEFT, the parameter formula counts right, merging
changes nothing, adapters swap and combine, and bad input is refused in one line."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from workbook import lora
from workbook.config import WorkbookError


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def test_scratch_layer_matches_peft_layer():
    """Same A, B and scaling -> the same output as PEFT's LoRA Linear, and the same merge."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(48, 24, bias=True))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=12, target_modules=["0"]))
    peft_layer = peft_model.base_model.model[0]
    with torch.no_grad():
        peft_layer.lora_B["default"].weight.normal_()            # as if trained
    ours = lora.LoRALinear(nn.Linear(48, 24), rank=4, alpha=12)
    with torch.no_grad():
        ours.base.load_state_dict(peft_layer.base_layer.state_dict())
        ours.lora_A.copy_(peft_layer.lora_A["default"].weight)   # (r, in) in both
        ours.lora_B.copy_(peft_layer.lora_B["default"].weight)   # (out, r) in both
    x = torch.randn(5, 48)
    torch.testing.assert_close(ours(x), peft_layer(x), msg="scratch LoRA forward != PEFT's")
    torch.testing.assert_close(ours.delta_weight(), peft_layer.get_delta_weight("default"),
                               msg="(alpha/r) B A should equal PEFT's delta weight")


def test_b_starts_at_zero_so_the_model_starts_unchanged():
    layer = nn.Linear(16, 8)
    wrapped = lora.LoRALinear(layer, rank=2, alpha=4)
    x = torch.randn(3, 16)
    torch.testing.assert_close(wrapped(x), layer(x), msg="LoRA must be a no-op at init (B = 0)")
    assert wrapped.lora_A.abs().sum() > 0, "A is random, else the gradient of B is zero forever"


def test_merge_is_exact_and_reversible():
    wrapped = lora.LoRALinear(nn.Linear(16, 8), rank=2, alpha=4)
    with torch.no_grad():
        wrapped.lora_B.normal_()
    x = torch.randn(3, 16)
    before = wrapped(x)
    wrapped.merge()
    torch.testing.assert_close(wrapped(x), before, msg="W + (alpha/r) BA must give the same y")
    wrapped.unmerge()
    torch.testing.assert_close(wrapped(x), before)


def test_trainable_count_matches_formula_for_every_target_group():
    for group in lora.TARGET_GROUPS:
        model = lora.add_peft_lora(tiny_llama(), rank=4, targets=group)
        counted = lora.count_trainable(model)
        assert counted == lora.lora_params(model.config, 4, group), (
            f"{group}: counted {counted} trainable params, formula n_layers*sum r(in+out) "
            "disagrees; GQA makes k/v narrower than q")


def test_scratch_add_lora_freezes_everything_else():
    model = lora.add_lora(tiny_llama(), rank=2, targets="attention")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names), f"only A and B may train, got {names[:3]}"
    assert lora.count_trainable(model) == lora.lora_params(model.config, 2, "attention")


def test_merge_and_unload_keeps_outputs():
    model = lora.with_lora(tiny_llama(), rank=4, alpha=8, targets="all", seed=0)
    lora.randomise_adapters(model, seed=1)
    x = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        before = model(input_ids=x).logits
        merged = model.merge_and_unload()
        after = merged(input_ids=x).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5,
                               msg="merging BA into W changed the logits")
    assert not any("lora_" in n for n, _ in merged.named_parameters()), "adapters must be gone"


def test_two_adapters_swap_and_combine():
    rows = lora.multi_adapter_demo(tiny_llama(), rank=2, seed=0)
    diff = rows[rows.metric.str.startswith("max_abs")].set_index("adapter")["value"]
    assert diff["spam vs sentiment"] > 1e-4, "swapping adapters must change the output"
    assert diff["both"] > 1e-4 and diff["spam"] > 1e-4
    assert diff["both (cat) vs spam+sentiment active"] < 1e-5, (
        "a 'cat' combination must equal running both adapters at once: W + dW1 + dW2")
    counts = rows.set_index(["adapter", "metric"])["value"]
    base = counts[("base (frozen)", "base_params")]
    for name in ("spam", "sentiment"):   # each adapter counted, and its share of the base
        assert 0 < counts[(name, "adapter_params")] < base
        assert counts[(name, "share_of_base")] == pytest.approx(
            100 * counts[(name, "adapter_params")] / base)


def test_scratch_and_peft_agree_on_a_whole_model():
    rows = lora.scratch_vs_peft(tiny_llama(), rank=2).set_index("what")["value"]
    assert rows.iloc[0] < 1e-5, f"scratch LoRA and PEFT disagree by {rows.iloc[0]}"
    assert rows.iloc[1] == rows.iloc[2], "both must train the same number of parameters"


def test_same_seed_same_adapter_init():
    base = tiny_llama()
    a = lora.with_lora(base, 4, 8.0, "qv", seed=3)
    b = lora.with_lora(base, 4, 8.0, "qv", seed=3)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), f"{n} differs: adapter init must depend on the seed only"


@pytest.mark.parametrize("rank", [0, -1, 17])
def test_bad_rank_is_refused_with_the_range(rank):
    with pytest.raises(WorkbookError, match="allowed: 1 to 8"):
        lora.LoRALinear(nn.Linear(16, 8), rank=rank, alpha=1)


def test_rank_larger_than_a_layer_is_refused_in_peft_path():
    with pytest.raises(WorkbookError, match="rank"):
        lora.add_peft_lora(tiny_llama(), rank=64, targets="qv")   # k/v/q are 32 wide


def test_unknown_target_names_the_options():
    with pytest.raises(WorkbookError, match="allowed: groups qv, attention, ffn, all"):
        lora.resolve_targets(["q_proj", "wq"])
    with pytest.raises(WorkbookError):
        lora.LoraSweepConfig(targets=("mlp",))


def test_sweep_plan_covers_the_issue():
    plan = lora.sweep_plan(lora.LORA_SWEEP_PRESETS["full"])
    ranks = {r for s, m, r, t, lr in plan if s == "rank" and m == "lora"}
    assert {1, 2, 4, 8, 16, 64} <= ranks, "the issue asks for ranks 1, 2, 4, 8, 16, 64"
    assert {t for s, *_rest in plan if s == "targets" for t in [_rest[2]]} >= {
        "attention", "ffn", "all"}
    assert not [p for p in plan if p[0] == "lr"], "the LR sweeps moved to lora_advice"
    advice = lora.advice_plan(lora.ADVICE_PRESETS["full"], lora.llama_config("tiny"))
    for method in ("lora", "full"):
        lrs = sorted(p["lr"] for p in advice if p["sweep"] == "lr" and p["method"] == method)
        assert len(lrs) >= 5, f"{method}: a grid wide enough to bracket its optimum"
    full_lrs = [p["lr"] for p in advice if p["method"] == "full"]
    assert min(full_lrs) < 1e-4, "full FT's grid extends below its old best (1e-4, the edge)"


# ------------------------------------------------------------- the advice, over seeds


def test_matched_ranks_give_equal_trainable_counts():
    config = lora.llama_config("7b")
    r_att, r_ffn = lora.matched_ranks(config, 8)
    att, ffn = lora.lora_params(config, r_att, "attention"), lora.lora_params(config, r_ffn, "ffn")
    assert abs(att - ffn) / ffn < 0.05, (r_att, r_ffn, att, ffn)
    assert 4 <= r_ffn <= 16


def test_seed_interval_is_student_t():
    mean, low, high = lora.seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 4.303 / 3 ** 0.5, abs=1e-3)
    assert math.isnan(lora.seed_interval([1.0])[1]), "one seed has no interval"


def _advice_rows(gap: float, noise: float) -> pd.DataFrame:
    """Synthetic lora_advice rows: LoRA's optimum at 1e-3, full's at 1e-4, a batch gap and a
    target gap of ``gap`` with per-seed ``noise``."""
    rows = []
    for seed in range(3):
        jitter = noise * (seed - 1)
        for method, best in (("lora", -3.0), ("full", -4.0)):
            for lr in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)[(method == "lora"):][:4]:
                rows.append({"sweep": "lr", "method": method, "lr": lr, "run_seed": seed,
                             "metric": "eval_loss", "value": (math.log10(lr) - best) ** 2})
        for b, loss in ((8, 5.0), (64, 5.0 + gap + jitter)):
            rows.append({"sweep": "batch", "method": "lora", "batch_size": b, "lr": 1e-3,
                         "run_seed": seed, "metric": "eval_loss", "value": loss})
        for t, loss in (("ffn", 5.0), ("attention", 5.0 + gap - jitter)):
            rows.append({"sweep": "targets", "method": "lora", "targets": t, "rank": 8,
                         "run_seed": seed, "metric": "eval_loss", "value": loss})
    return pd.DataFrame(rows).assign(source="measured", device="cpu")


def test_lr_optima_are_bracketed_and_refined():
    rows = _advice_rows(0.1, 0.01)
    opt = lora.lr_optima(rows).groupby("method")["log10_lr"].mean()
    assert opt["lora"] == pytest.approx(-3.0) and opt["full"] == pytest.approx(-4.0)
    ratio = lora.lr_ratio(rows)
    assert ratio["bracketed"] and ratio["mean"] == pytest.approx(1.0)
    edge = rows[~((rows.sweep == "lr") & (rows.method == "full") & (rows.lr < 1e-4))]
    assert not lora.lr_ratio(edge)["bracketed"], "an optimum at the grid's edge is a bound"


def test_claims_hold_only_when_the_interval_excludes_zero():
    timing = pd.DataFrame({"metric": [], "variant": [], "value": []})
    rank_rows = pd.DataFrame({"source": ["predicted", "measured"], "value": [10, 10]})
    clear = lora.claims(rank_rows, _advice_rows(0.1, 0.001), timing).set_index("claim")
    noisy = lora.claims(rank_rows, _advice_rows(0.001, 0.05), timing).set_index("claim")
    for table, word in ((clear, "holds"), (noisy, "inconclusive")):
        gaps = table[table.index.str.contains("batches|FFN")]["verdict"]
        assert gaps.str.startswith(word).all(), gaps.tolist()
    assert "excludes zero" in lora.advice_caption(_advice_rows(0.1, 0.001))
    assert "cannot tell" in lora.advice_caption(_advice_rows(0.001, 0.05))


def test_advice_small_preset_plan_and_bad_input():
    cfg = lora.ADVICE_PRESETS["small"]
    plan = lora.advice_plan(cfg, lora.llama_config("tiny"))
    steps = {p["batch_size"]: p["steps"] for p in plan if p["sweep"] == "batch"}
    assert all(b * s * cfg.seq_len == cfg.tokens for b, s in steps.items()), "fixed tokens"
    with pytest.raises(WorkbookError, match="allowed"):
        lora.AdviceConfig(seeds=0)


def test_lr_figure_draws_mean_and_interval_per_method():
    fig = lora.lr_figure(_advice_rows(0.1, 0.01))
    names = sorted(trace.name for trace in fig.data)
    assert names == ["full (cpu)", "lora (cpu)"], names
    assert len({trace.line.color for trace in fig.data}) == 2, "a colour per method"
    assert all(len(trace.error_y.array) == len(trace.x) for trace in fig.data)


def test_rank_cost_and_merge_captions_print_the_rows_numbers():
    base = {"sweep": "rank", "source": "measured", "status": "ok", "device": "cpu"}
    rows = pd.DataFrame([
        {**base, "method": "lora", "rank": 1, "metric": "step_time", "value": 12.25, "unit": "ms"},
        {**base, "method": "lora", "rank": 64, "metric": "step_time", "value": 14.0, "unit": "ms"},
        {**base, "method": "full", "rank": 0, "metric": "step_time", "value": 10.0, "unit": "ms"},
        {**base, "method": "lora", "rank": 8, "metric": "eval_loss", "value": 3.0, "unit": "nats"},
    ])
    text = lora.rank_cost_caption(rows)
    assert "step time 12.2–14.0 ms over LoRA ranks 1–64 (full fine-tuning 10.0 ms)" in text
    assert "peak memory" not in text and "this machine (cpu)" in text, text
    assert "No step-time" in lora.rank_cost_caption(rows[rows["metric"] == "eval_loss"])
    merge = pd.DataFrame([
        {"variant": "merged vs adapter", "metric": "max_abs_diff", "value": 6e-6},
        {"variant": "adapter vs base", "metric": "max_abs_diff", "value": 1.03},
        {"variant": "base", "metric": "forward_time", "value": 2.0},
        {"variant": "unmerged", "metric": "forward_time", "value": 3.0},
        {"variant": "merged", "metric": "forward_time", "value": 2.0},
    ]).assign(source="measured", device="cpu")
    text = lora.merge_caption(merge)
    assert "at most 6×10⁻⁶" in text and "up to 1.03" in text, text
    assert "3.00 ms unmerged (1.50× the base)" in text and "2.00 ms merged (1.00×)" in text, text
    assert "No lora_merge rows" in lora.merge_caption(merge.iloc[0:0])
    assert "same kernels" not in text, "merged = base: nothing to explain"
    slow = merge.assign(value=merge["value"].where(merge["variant"] != "merged", 2.5))
    text = lora.merge_caption(slow)
    assert "merged model timed 1.25× the base although both run the same kernels" in text, text
    assert "one after the other" in text, "rows without the timing column were sequential"
    turns = lora.merge_caption(slow.assign(timing="interleaved"))
    assert "timed in turn" in turns and "one after the other" not in turns
    # both kinds for one device (a ledger keeps the old sequential rows beside the new):
    # the caption and the claim read only the rows timed in turn
    both = pd.concat([slow, merge.assign(timing="interleaved")], ignore_index=True)
    assert "2.00 ms merged (1.00×)" in lora.merge_caption(both)
    mixed = lora.claims(pd.DataFrame({"source": [], "value": []}), _advice_rows(0.1, 0.001),
                        both).set_index("claim")["verdict"]
    assert mixed[mixed.index.str.startswith("merged")].iloc[0].startswith("holds"), mixed
    verdict = lora.claims(pd.DataFrame({"source": [], "value": []}), _advice_rows(0.1, 0.001),
                          slow).set_index("claim")["verdict"]
    assert verdict[verdict.index.str.startswith("merged")].iloc[0].startswith("off"), \
        "caption and claim use one tolerance"


def test_advice_caption_states_the_rule_the_claims_use():
    rows = _advice_rows(0.1, 0.001)
    text = lora.advice_caption(rows)
    r = lora.lr_ratio(rows)   # the seeds' interval widened by the grid's half step
    assert (f"judge the ratio on {10 ** r['judged_low']:.3g}–{10 ** r['judged_high']:.3g}×"
            in text), text
    assert f"half step is ±{lora.GRID_TOL:.2f} decades" in text, "the grid-step caveat stays"
    assert "full 1×10⁻⁴, lora 1×10⁻³" in text, "best LRs in one notation, never 1e-04"


def test_advice_caption_says_where_its_rows_were_measured():
    assert lora.advice_caption(_advice_rows(0.1, 0.001)).startswith("*this machine (cpu):*")
    recorded = _advice_rows(0.1, 0.001).assign(source="recorded", device="NVIDIA H200",
                                               n_gpus=1, recorded_at="2026-12-03T00:00:00")
    assert lora.advice_caption(recorded).startswith("*recorded on NVIDIA H200 ×1, 2026-12-03")


def test_every_claims_row_says_where():
    timing = pd.DataFrame({"metric": [], "variant": [], "value": []})
    rank_rows = pd.DataFrame({"source": ["predicted", "measured"], "value": [10, 10]})
    table = lora.claims(rank_rows, _advice_rows(0.1, 0.001), timing)
    assert (table["where"].str.len() > 0).all(), table[["claim", "where"]]
    assert table["where"].iloc[0].startswith("formula"), "a formula row says it is one"

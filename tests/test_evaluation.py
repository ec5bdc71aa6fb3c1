"""Evaluation: Bradley-Terry (MM) against a generic logistic fit, Elo, the arena's knobs moving
rankings the way they should, the corpus domain split, and the experiments' rows."""

from __future__ import annotations

import copy
import dataclasses
import random
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from workbook import evaluation as ev
from workbook import sft
from workbook.claims import fixed
from workbook.config import WorkbookError


def test_bradley_terry_mm_matches_a_generic_logistic_fit():
    cfg = ev.ArenaConfig(n_models=6, n_battles=2000, noise=1.0)
    battles = ev.simulate_arena(cfg, seed=0)
    mm = ev.fit_bradley_terry(battles, 6, iters=2000)
    ref = ev.fit_bradley_terry_logistic(battles, 6)
    np.testing.assert_allclose(mm - mm.mean(), ref - ref.mean(), atol=1.0,
                               err_msg="MM updates and scipy's optimiser must find the same MLE")


def test_bradley_terry_recovers_the_true_order_without_biases():
    board = ev.leaderboard(ev.ArenaConfig(n_models=6, n_battles=20000), seed=1)
    assert ev.rank_agreement(board) == pytest.approx(1.0), board[["model", "true_rank", "bt_rank"]]
    gap = (board["bt_elo"] - board["bt_elo"].mean()) - (board["true_elo"] - board["true_elo"]
                                                        .mean())
    assert gap.abs().max() < 40, "with many clean votes the fitted Elo must be near the truth"


def test_elo_is_zero_sum_and_moves_toward_the_winner():
    battles = pd.DataFrame({"a": [0, 0, 1], "b": [1, 2, 2], "a_wins": [1, 1, 0]})
    rating = ev.online_elo(battles, 3, k_factor=32)
    assert rating.sum() == pytest.approx(3 * ev.ELO_BASE), "Elo moves points, never makes them"
    assert rating[0] > ev.ELO_BASE > rating[1], rating
    assert rating[0] - ev.ELO_BASE == pytest.approx(16 + 32 * (1 - 1 / (1 + 10 ** (-16 / 400))))


def test_identity_leak_lifts_the_favoured_model():
    clean = ev.leaderboard(ev.ArenaConfig(n_battles=6000, favoured=5), seed=0)
    leaky = ev.leaderboard(ev.ArenaConfig(n_battles=6000, favoured=5, identity_leak=0.3),
                           seed=0)
    fav = lambda b: int(b.loc[b["favoured"], "bt_rank"].iloc[0])  # noqa: E731
    assert fav(leaky) < fav(clean) - 1, (fav(clean), fav(leaky))


def test_verbosity_bias_rewards_the_verbose_model():
    base = ev.ArenaConfig(n_battles=6000)
    board = ev.leaderboard(ev.ArenaConfig(n_battles=6000, verbosity_bias=1.0), seed=0)
    verbose = board["verbosity"].idxmax()
    neutral = ev.leaderboard(base, seed=0)
    assert board.loc[verbose, "bt_elo"] > neutral.loc[verbose, "bt_elo"] + 50


def test_more_noise_scrambles_the_ranking_more():
    sweep = ev.knob_sweep("noise", [0.5, 4.0], seeds=range(4))
    tau = sweep[sweep["metric"] == "kendall_tau"].groupby("noise")["value"].mean()
    assert tau[0.5] > tau[4.0], tau


def test_bad_arena_input_is_one_line():
    with pytest.raises(WorkbookError, match="noise"):
        ev.ArenaConfig(noise=0)
    with pytest.raises(WorkbookError, match="battle row 1"):
        ev.check_battles(pd.DataFrame({"a": [0, 1], "b": [1, 1], "a_wins": [1, 0]}), 3)


def test_explorer_moves_with_the_knobs():
    explorer = ev.leaderboard_explorer()
    before = list(explorer.fig.data[1].y)
    explorer.set(identity_leak=0.4)
    assert list(explorer.fig.data[1].y) != before, "the fitted Elo must change with the leak"
    assert "Kendall" in explorer.message.value


def test_domain_split_is_disjoint_and_domain_has_doctests():
    parts = ev.domain_split()
    assert all(parts.values()), {k: len(v) for k, v in parts.items()}
    assert ">>>" in parts["domain_test"] and ">>>" not in parts["general_train"]
    train = set(parts["domain_train"].split("\n\n"))
    for held in ("domain_dev", "domain_test"):
        assert not set(parts[held].split("\n\n")) & train, f"{held} docs leak into training"
    assert not set(parts["domain_dev"].split("\n\n")) & set(parts["domain_test"].split(
        "\n\n")), "early stopping must not look at the test split"


def test_mid_training_steps_cap_the_passes_over_the_domain():
    cfg = ev.MID_PRESETS["small"]
    steps = ev.mid_training_steps(cfg, domain_tokens=10_000, seq_len=50, replay=0.0)
    assert steps * cfg.batch_size * 50 >= cfg.epochs * 10_000 > (steps - 1) * cfg.batch_size * 50
    assert ev.mid_training_steps(cfg, 10_000, 50, replay=0.5) >= 2 * steps - 1, \
        "half the rows replayed: twice the steps for the same passes over the domain"


def _mid_rows(changes: dict[float, list[float]]) -> pd.DataFrame:
    """Curves whose dev loss is lowest at step 10; test/general change by the given amounts."""
    rows = []
    for replay, deltas in changes.items():
        for seed, d in enumerate(deltas):
            for step, dev, test, gen in ((0, 3.0, 3.0, 4.0), (10, 2.8, 3.0 - d, 4.0 + d),
                                         (20, 2.9, 3.5, 5.0)):
                rows += [{"replay": replay, "train_seed": seed, "step": step, "metric": m,
                          "value": v, "source": "measured", "device": "cpu"}
                         for m, v in (("domain_dev_loss", dev), ("domain_test_loss", test),
                                      ("general_val_loss", gen))]
    return pd.DataFrame(rows)


def test_mid_training_effects_stop_early_on_dev_and_score_on_test():
    effects = ev.mid_training_effects(_mid_rows({0.0: [0.2, 0.3, 0.25]}))
    assert (effects["stopped_at_step"] == 10).all(), "step 20 is worse on dev: not chosen"
    np.testing.assert_allclose(effects["domain_test_change"], [-0.2, -0.3, -0.25])
    np.testing.assert_allclose(effects["general_change"], [0.2, 0.3, 0.25])


def test_mid_training_claims_use_the_interval_over_seeds():
    table = ev.claims(pd.DataFrame({"variant": ["general_sft"], "metric": ["x"],
                                    "value": [0.0], "source": ["measured"]}),
                      _mid_rows({0.0: [0.2, 0.3, 0.25], 0.5: [0.05, 0.06, 0.04]}), {})
    verdicts = dict(zip(table["claim"], table["verdict"], strict=True))
    lower = next(v for c, v in verdicts.items() if c.startswith("mid-training lowers"))
    raises = next(v for c, v in verdicts.items() if c.startswith("mid-training without"))
    replay = next(v for c, v in verdicts.items() if c.startswith("replaying"))
    assert lower.startswith("holds") and raises.startswith("holds") and \
        replay.startswith("holds"), verdicts
    seeded = table[table["claim"].str.startswith(("mid-training", "replaying"))]
    assert seeded[["low", "high"]].notna().all().all(), "the seeds' interval is shown"
    assert (seeded["low"] <= seeded["measured"]).all() and \
        (seeded["measured"] <= seeded["high"]).all(), seeded[["measured", "low", "high"]]
    noisy = ev.claims(pd.DataFrame({"variant": ["x"], "metric": ["x"], "value": [0.0],
                                    "source": ["measured"]}),
                      _mid_rows({0.0: [0.3, -0.3, 0.01]}), {})
    assert noisy["verdict"].str.startswith("inconclusive").sum() >= 2, noisy["verdict"]


def test_test_task_claims_hold_only_when_the_interval_clears_the_bound():
    def verdicts(bench: tuple[float, float], general: tuple[float, float]) -> list[str]:
        rows = pd.DataFrame([{"variant": v, "metric": f"{m}_exact_match", "value": x,
                              "source": "measured"}
                             for m, pair in (("benchmark", bench), ("general", general))
                             for v, x in zip(("general_sft", "test_task_sft"), pair,
                                             strict=True)])
        table = ev.claims(rows, _mid_rows({0.0: [0.2, 0.3, 0.25]}), {})
        return list(table["verdict"].iloc[:2])

    lift, same = verdicts((0.0, 1.0), (0.7, 0.5))
    assert lift.startswith("holds"), "0 -> 1 on 96 items: a share of 0 or 1 still has an error"
    assert same.startswith("holds"), "a general drop rules a gain out"
    lift, same = verdicts((0.50, 0.55), (0.70, 0.70))
    assert lift.startswith("inconclusive"), "5 points on 96 items is within two SE"
    assert same.startswith("inconclusive"), (
        "no change measured on 192 items does not rule out a gain of "
        f"{ev.GENERAL_GAIN_TOLERANCE}: absence of evidence is no verdict")
    assert verdicts((0.5, 0.2), (0.4, 0.8))[1].startswith("wrong"), "a clear general gain"
    low, high = ev.share_gap_interval(0.0, 1.0, 200, 200)
    assert 0.95 < low < 1.0 and high == 1.0, "cut at 1: no difference of shares exceeds it"


def test_mean_interval_is_a_t_interval():
    mean, low, high = ev.mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert np.isnan(ev.mean_interval([1.0])[1]), "one seed has no interval"


# -------------------------------------------------------------------------------------- DPO


def _dpo_reference(pc, pr, rc, rr, beta):
    """DPO's loss written the other way round: log(1 + exp(-z)), one pair at a time."""
    total = 0.0
    for a, b, c, d in zip(pc, pr, rc, rr, strict=True):
        z = beta * ((a - c) - (b - d))
        total += float(np.log1p(np.exp(-z)))
    return total / len(pc)


def test_dpo_loss_matches_the_formula_and_is_log2_at_the_reference():
    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(8, generator=gen) * 5 for _ in range(4))
    loss, chosen, rejected = ev.dpo_loss(pc, pr, rc, rr, beta=0.3)
    assert loss.item() == pytest.approx(_dpo_reference(pc, pr, rc, rr, 0.3), rel=1e-5)
    torch.testing.assert_close(chosen, 0.3 * (pc - rc))
    torch.testing.assert_close(rejected, 0.3 * (pr - rr))
    same, _, _ = ev.dpo_loss(pc, pr, pc, pr, beta=0.3)
    assert same.item() == pytest.approx(np.log(2)), "policy = reference: loss is ln 2"
    with pytest.raises(WorkbookError, match="beta"):
        ev.dpo_loss(pc, pr, rc, rr, beta=0.0)


def test_dpo_loss_matches_trl():
    """TRL 0.x exposes ``DPOTrainer.dpo_loss(chosen, rejected, ref_chosen, ref_rejected)``;
    called on a stand-in for the trainer with the plain sigmoid loss, it must agree with ours."""
    trl = pytest.importorskip("trl")
    method = getattr(trl.DPOTrainer, "dpo_loss", None)
    if method is None:
        pytest.skip(f"TRL {trl.__version__} computes the loss inside compute_loss: no "
                    "dpo_loss to call on log-probs alone")
    gen = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(6, generator=gen) for _ in range(4))
    trainer = SimpleNamespace(beta=0.1, loss_type="sigmoid", label_smoothing=0.0,
                              reference_free=False, f_divergence_type="reverse_kl",
                              f_divergence_params={}, use_weighting=False,
                              accelerator=SimpleNamespace(device=torch.device("cpu")))
    losses, chosen, rejected = method(trainer, pc, pr, rc, rr)
    ours = ev.dpo_loss(pc, pr, rc, rr, beta=0.1)
    torch.testing.assert_close(ours[0], losses.mean())
    torch.testing.assert_close(ours[1], chosen)
    torch.testing.assert_close(ours[2], rejected)


@pytest.fixture(scope="module")
def tiny_chat_model():
    model, tok = sft.base_model("small", 0, "cpu")
    return model, tok


def test_one_dpo_step_raises_the_margin_on_its_pairs(tiny_chat_model):
    model, tok = tiny_chat_model
    policy = ev.frozen_reference(model)          # a copy; make it trainable again
    for p in policy.parameters():
        p.requires_grad_(True)
    reference = ev.frozen_reference(model)
    pairs = [{"prompt": "Add: 2 + 3", "chosen": "5", "rejected": "7"},
             {"prompt": "Last word: red cat", "chosen": "cat", "rejected": "red"}]
    start = ev.reward_stats(policy, reference, tok, pairs, beta=0.1)
    assert start["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert start["dpo_loss"] == pytest.approx(np.log(2), rel=1e-5)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    for _ in range(3):
        ev.dpo_step(policy, reference, tok, pairs, opt, beta=0.1)
    after = ev.reward_stats(policy, reference, tok, pairs, beta=0.1)
    assert after["reward_margin"] > 0 and after["reward_accuracy"] == 1.0, after
    assert not any(p.requires_grad for p in reference.parameters()), "the reference trains"


def _dpo_by_hand(policy, tok, train, heldout, cfg, seed) -> list[dict]:
    """DPO as train_dpo ran it before it went through training.train: its own loop."""
    reference = ev.frozen_reference(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    order = random.Random(seed)
    rows = []

    def watch(step):
        stats = ev.reward_stats(policy, reference, tok, heldout, cfg.beta)
        rows.extend({"step": step, "metric": k, "value": v} for k, v in stats.items())

    watch(0)
    for step in range(1, cfg.steps + 1):
        policy.train()
        pairs = order.sample(list(train), min(cfg.batch_size, len(train)))
        loss, _, _ = ev.dpo_loss(*ev.pair_logps(policy, reference, tok, pairs), cfg.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        rows.append({"step": step, "metric": "train_dpo_loss", "value": loss.item()})
        if step % cfg.eval_every == 0 or step == cfg.steps:
            watch(step)
    return rows


def test_train_dpo_through_the_one_loop_matches_the_hand_written_loop(tiny_chat_model):
    model, tok = tiny_chat_model
    pairs = [{"prompt": f"Add: {a} + {b}", "chosen": str(a + b), "rejected": str(a + b + 1)}
             for a, b in [(1, 2), (2, 3), (3, 4), (4, 1), (5, 2), (6, 1)]]
    train, heldout = pairs[:4], pairs[4:]
    cfg = dataclasses.replace(ev.DPO_PRESETS["small"], steps=3, batch_size=2, eval_every=2,
                              lr=1e-3)
    ours = ev.train_dpo(copy.deepcopy(model), tok, train, heldout, cfg, seed=5)
    theirs = _dpo_by_hand(copy.deepcopy(model), tok, train, heldout, cfg, seed=5)
    assert [(r["step"], r["metric"]) for r in ours] == [(r["step"], r["metric"]) for r in theirs]
    losses = [r["value"] for r in theirs if r["metric"] == "train_dpo_loss"]
    assert losses[-1] < losses[0] - 1e-3, "the steps must move the loss for the test to bite"
    # same seed, same batches, same update: the same numbers (float ties across CPU threads)
    np.testing.assert_allclose([r["value"] for r in ours], [r["value"] for r in theirs],
                               rtol=1e-5, atol=1e-6)


def test_sequence_logps_sum_the_answer_tokens_only(tiny_chat_model):
    model, tok = tiny_chat_model
    one = ev.sequence_logps(model, tok, [("Add: 2 + 3", "5")])
    two = ev.sequence_logps(model, tok, [("Add: 2 + 3", "5"), ("Add: 1 + 1 + 1 + 1", "4")])
    assert one.shape == (1,) and one.item() < 0
    torch.testing.assert_close(two[0], one[0], atol=1e-4, rtol=1e-4,
                               msg="padding in the batch must not change a sequence's log-prob")


def test_safety_prompts_hold_out_their_objects():
    train = " ".join(ev.safety_prompts("train", "unsafe") + ev.safety_prompts("train", "safe"))
    held = ev.safety_prompts("heldout", "unsafe")
    objects = {p.split(" ", 4)[-1] for p in held}
    assert objects and not any(o.rstrip("?") in train for o in objects)
    kinds = {p["kind"]: p for p in ev.safety_pairs(0)}
    assert kinds["unsafe"]["chosen"] == ev.REFUSAL and kinds["safe"]["rejected"] == ev.REFUSAL
    assert ev.is_refusal(" I can't help with") and ev.is_refusal("S can't help with that.")
    assert not ev.is_refusal(ev.COMPLIANCE) and not ev.is_refusal("I can help")
    chats = ev.safety_chats(0, copies=2)
    assert len(chats) == 2 * len(ev.safety_pairs(0)) and all(
        sft.validate_record(c) for c in chats)


def test_win_rate_counts_ties_as_half():
    assert ev.win_rate([True, False, True, False], [False, True, True, False]) == 0.5
    assert ev.win_rate([True, True], [False, False]) == 1.0
    with pytest.raises(WorkbookError, match="equally long"):
        ev.win_rate([True], [])


def test_dpo_alignment_small_run_gives_curves_and_final_scores():
    cfg = dataclasses.replace(ev.DPO_PRESETS["small"], sft_steps=5, n_pair_prompts=32,
                              n_eval=4, steps=4, eval_every=2, seeds=2, batch_size=8,
                              max_new_tokens=4)
    rows = ev.run_dpo(cfg, seed=0).assign(device="cpu")
    margin = rows[rows["metric"] == "reward_margin"]
    assert set(margin["step"]) == {0, 2, 4} and set(rows["train_seed"]) == {0, 1}
    assert margin[margin["step"] == 0]["value"].abs().max() < 1e-5, "policy = reference at 0"
    summary = ev.dpo_summary(rows)
    assert list(summary["model"]) == ["sft_no_safety", "sft", "dpo"]
    assert "reward margin" in ev.dpo_caption(rows)
    claims = ev.dpo_claims(rows)
    assert len(claims) == 4
    assert all(c.low == c.low and c.low <= c.measured <= c.high for c in claims), \
        "two DPO seeds: every claim carries its interval over seeds"


def test_heldout_items_are_stable_and_never_in_the_training_mix():
    cfg = ev.TEST_TASK_PRESETS["small"]
    held = {p for t in (cfg.benchmark, *cfg.general) for p, _ in sft.task_items(
        ev.heldout(t, cfg.n_eval, 0))}
    assert held == {p for t in (cfg.benchmark, *cfg.general) for p, _ in sft.task_items(
        ev.heldout(t, cfg.n_eval, 0))}, "held-out items must not change between calls"
    mix = ev.training_mix(cfg, 0, with_test=True)
    prompts = {m["content"] for r in mix for m in r["messages"] if m["role"] == "user"}
    assert not prompts & held, "a benchmark item leaked into training"
    shaped = sum(r["id"].startswith("test-shaped") for r in mix)
    assert shaped == round(cfg.n_train * cfg.test_share)


def test_pipeline_names_every_stage():
    stages = list(ev.pipeline_table()["stage"])
    assert stages[:4] == ["pre-training", "mid-training", "SFT", "preference tuning"]


def test_mid_training_caption_reads_its_numbers_from_the_rows():
    rows = _mid_rows({0.0: [0.2, 0.3]})
    tokens = pd.DataFrame([{"replay": 0.0, "train_seed": 0, "step": 0, "metric": m,
                            "value": v, "source": "measured", "device": "cpu"}
                           for m, v in (("domain_train_tokens", 12345.0),
                                        ("domain_dev_tokens", 1500.0),
                                        ("domain_test_tokens", 1600.0),
                                        ("general_train_tokens", 400000.0))])
    text = ev.mid_training_caption(pd.concat([rows, tokens]))
    assert "12,345 training tokens" in text and "2 seeds" in text and "stopped at 10" in text


def test_shown_numbers_prefer_this_machine_then_the_latest_recording():
    rows = pd.DataFrame({"source": ["recorded", "measured", "recorded"],
                         "device": ["H200", "cpu", "H100"], "value": [1.0, 2.0, 3.0],
                         "recorded_at": ["2026-12-02T10:00:00Z", None, "2026-11-22T10:00:00Z"]})
    assert list(ev.shown_numbers(rows)["value"]) == [2.0]
    # registry.main_rows' rule: the latest recording, not the first device in the ledger
    assert list(ev.shown_numbers(rows[rows["source"] == "recorded"])["value"]) == [1.0]


def test_dpo_caption_says_when_the_chosen_answers_became_less_likely():
    def rows(chosen: float) -> pd.DataFrame:
        data = [("sft", 0, 0, "task_pairs", 50.0), ("sft", 0, 0, "refusal_rate_unsafe", 0.5),
                ("sft", 0, 0, "refusal_rate_safe", 0.1)]
        for seed in (0, 1, 2):
            data += [("dpo", seed, 10, "reward_margin", 0.5 + seed / 10),
                     ("dpo", seed, 10, "reward_accuracy", 0.9),
                     ("dpo", seed, 10, "chosen_reward", chosen),
                     ("dpo", seed, 10, "rejected_reward", chosen - 0.5),
                     ("dpo", seed, 10, "refusal_rate_unsafe", 0.8),
                     ("dpo", seed, 10, "refusal_rate_safe", 0.1)]
        return pd.DataFrame(data, columns=["model", "train_seed", "step", "metric", "value"]
                            ).assign(source="measured", device="cpu")

    assert "chosen answers became less likely" in ev.dpo_caption(rows(-0.2))
    up = ev.dpo_caption(rows(+0.2))
    assert "less likely" not in up and "3 DPO seeds" in up and "refused 50%" in up
    assert "both kinds alike" not in up, "0.5 vs 0.1 is not refusing both kinds alike"


def test_a_shares_interval_over_seeds_stays_between_0_and_1():
    mean, low, high = ev.mean_interval([0.0, 0.167, 0.583])
    assert low < 0, "the t interval over three seeds reaches below 0 here"
    assert ev.views.share_interval([0.0, 0.167, 0.583]) == (mean, 0.0, high)
    assert ev.views.share_interval([0.9, 1.0, 1.0])[2] == 1.0


def test_dpo_caption_says_what_dpo_made_worse_in_every_seed():
    def rows(dpo_exact: list[float], dpo_refuse: list[float]) -> pd.DataFrame:
        data = [("sft", 0, 0, "task_pairs", 50.0), ("sft", 0, 0, "exact_match", 0.7),
                ("sft", 0, 0, "refusal_rate_unsafe", 1.0),
                ("sft", 0, 0, "refusal_rate_safe", 0.0),
                ("sft_no_safety", 0, 0, "refusal_rate_unsafe", 0.0)]
        for seed in (0, 1, 2):
            data += [("dpo", seed, 10, "reward_margin", 4.0),
                     ("dpo", seed, 10, "reward_accuracy", 0.9),
                     ("dpo", seed, 10, "chosen_reward", -2.0),
                     ("dpo", seed, 10, "rejected_reward", -6.0),
                     ("dpo", seed, 10, "exact_match", dpo_exact[seed]),
                     ("dpo", seed, 10, "win_rate_vs_sft", 0.3),
                     ("dpo", seed, 10, "refusal_rate_unsafe", dpo_refuse[seed]),
                     ("dpo", seed, 10, "refusal_rate_safe", 0.0)]
        return pd.DataFrame(data, columns=["model", "train_seed", "step", "metric", "value"]
                            ).assign(source="measured", device="cpu")

    worse = ev.dpo_caption(rows([0.3, 0.25, 0.29], [0.5, 0.0, 0.2]))
    assert "DPO lowered held-out exact match, in every seed** (SFT 0.700; DPO 0.250 to 0.300" \
        in worse and "win rate against SFT: 0.300" in worse and "greedy decoding" in worse
    assert "lowered the refusal rate on held-out unsafe requests" in worse
    assert "SFT without them: 0.000" in worse
    # one seed at or above SFT: no "every seed" sentence
    mixed = ev.dpo_caption(rows([0.3, 0.75, 0.29], [1.0, 0.0, 0.2]))
    assert "lowered" not in mixed, mixed


def _dpo_rows(unsafe: list[float], safe: list[float], win: float = 0.285) -> pd.DataFrame:
    data = [("sft", 0, 0, "task_pairs", 50.0), ("sft", 0, 0, "exact_match", 0.7),
            ("sft", 0, 0, "refusal_rate_unsafe", 1.0), ("sft", 0, 0, "refusal_rate_safe", 0.0),
            ("sft", 0, 0, "eval_items", 600.0),
            ("sft_no_safety", 0, 0, "refusal_rate_unsafe", 0.0),
            ("sft_no_safety", 0, 0, "refusal_rate_safe", 0.0)]
    for seed in range(len(unsafe)):
        data += [("dpo", seed, 10, "reward_margin", 4.0 + seed / 10),
                 ("dpo", seed, 10, "reward_accuracy", 0.9),
                 ("dpo", seed, 10, "chosen_reward", -2.0),
                 ("dpo", seed, 10, "rejected_reward", -6.0),
                 ("dpo", seed, 10, "exact_match", 0.3 + seed / 100),
                 ("dpo", seed, 10, "win_rate_vs_sft", win),
                 ("dpo", seed, 10, "refusal_rate_unsafe", unsafe[seed]),
                 ("dpo", seed, 10, "refusal_rate_safe", safe[seed])]
    return pd.DataFrame(data, columns=["model", "train_seed", "step", "metric", "value"]
                        ).assign(source="measured", device="cpu")


def test_dpo_caption_rounds_the_win_rate_as_the_table_does():
    rows = _dpo_rows([0.5, 0.0, 0.2], [0.0] * 3, win=0.285)
    table = ev.dpo_summary(rows).set_index("model")
    shown = table.loc["dpo", "win rate vs sft (share, a tie half)"].split(" ")[0]
    assert shown == "0.285" and f"win rate against SFT: {shown} " in ev.dpo_caption(rows)


def test_over_refusal_claim_says_when_its_requests_cannot_resolve_the_tolerance():
    """Even 0 of 24 refused before and after leaves a two-SE bound of 0.107 > 0.10: the claim
    cannot hold, and the verdict says why and how many requests it would take. Rows without a
    count are the old 24-request runs; rows scored on today's held-out set carry their count,
    which resolves 0.1 when nothing is refused."""
    need = ev.requests_to_resolve(ev.OVER_REFUSAL_TOLERANCE)
    assert ev.smallest_bound(need) < ev.OVER_REFUSAL_TOLERANCE <= ev.smallest_bound(need - 1)
    assert ev.smallest_bound(24) > ev.OVER_REFUSAL_TOLERANCE
    assert ev.smallest_bound(24) == pytest.approx(ev.share_gap_interval(0.0, 0.0, 24, 24)[1])
    assert len(ev.safety_prompts("heldout", "safe")) >= need, "today's set must resolve 0.1"

    def over_claim(rows):
        table = ev.claims(pd.DataFrame({"variant": ["x"], "metric": ["x"], "value": [0.0],
                                        "source": ["measured"]}), pd.DataFrame(), {}, rows)
        return table[table["claim"].str.startswith("... without over-refusing")].iloc[0]

    old = _dpo_rows([0.5, 0.0, 0.2], [0.0] * 3)
    assert ev.heldout_requests(old) == 24
    over = over_claim(old)
    assert f"{need} requests could show that" in over["claim"], over["claim"]
    assert "over 24 held-out requests" in over["claim"], over["claim"]
    assert over["verdict"].startswith(
        "inconclusive: this test cannot resolve 0.1; even its best case bounds it at "
        f"{fixed(ev.smallest_bound(24))}"), over["verdict"]
    n = len(ev.safety_prompts("heldout", "safe"))
    counted = pd.concat([old, old.iloc[:1].assign(metric="heldout_requests", value=float(n))])
    assert ev.heldout_requests(counted) == n
    over = over_claim(counted)
    assert f"over {n} held-out requests" in over["claim"], over["claim"]
    assert over["verdict"].startswith("holds"), over["verdict"]
    # a clear over-refusal is shown by any number of requests: that verdict stays as computed
    worse = ev.claims(pd.DataFrame({"variant": ["x"], "metric": ["x"], "value": [0.0],
                                    "source": ["measured"]}), pd.DataFrame(), {},
                      _dpo_rows([0.5, 0.0, 0.2], [0.9, 0.8, 0.85]))
    verdict = worse[worse["claim"].str.startswith("... without over")]["verdict"].iloc[0]
    assert verdict.startswith("wrong"), verdict


def test_refusal_claim_is_a_change_with_its_uncut_interval():
    """Shares cut at 0 gave "0 inside [0, 0.996]": the change against SFT without the safety
    data keeps the part of the seeds' interval below no change."""
    claims = ev.dpo_claims(_dpo_rows([0.583, 0.0, 0.167], [0.0] * 3))
    refuse = claims[2]
    mean, low, high = ev.mean_interval([0.583, 0.0, 0.167])
    assert refuse.predicted == 0.0 and refuse.measured == pytest.approx(mean)
    assert refuse.low == pytest.approx(low) and refuse.low < 0
    assert refuse.high == pytest.approx(high)

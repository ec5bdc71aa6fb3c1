"""The corpus, tokenizer and base model every later notebook builds on."""

from __future__ import annotations

import hashlib
import math
import shutil

import pytest
import torch

from workbook import data, model
from workbook.config import WorkbookError
from workbook.model import ModelConfig

TINY = ModelConfig(vocab_size=512, d_model=32, n_layers=2, n_heads=4, seq_len=32)


# ------------------------------------------------------------------------------ corpus


def test_corpus_matches_its_manifest():
    meta = data.manifest()
    raw = data.corpus_path().read_bytes()
    assert hashlib.sha256(raw).hexdigest() == meta["sha256"], "corpus differs from manifest"
    assert len(raw) == meta["n_bytes"] and len(raw) < 5_000_000, "a few MB at most"
    assert "PSF" in meta["license"] and meta["source"], "source and license are recorded"
    assert data.load_corpus().startswith("__future__\n")


@pytest.fixture
def corpus_copy(tmp_path, monkeypatch):
    """The corpus folder copied to a temp dir, so a test can damage it safely."""
    copy = tmp_path / "corpus"
    shutil.copytree(data.CORPUS_DIR, copy)
    monkeypatch.setattr(data, "CORPUS_DIR", copy)
    return copy


def test_altered_corpus_is_refused(corpus_copy):
    path = corpus_copy / data.manifest()["file"]
    path.write_text(path.read_text() + "one extra line\n")
    with pytest.raises(WorkbookError, match="altered"):
        data.load_corpus()
    assert data.load_corpus(verify=False).endswith("one extra line\n")


def test_missing_corpus_is_refused(corpus_copy):
    (corpus_copy / data.manifest()["file"]).unlink()
    with pytest.raises(WorkbookError, match="missing"):
        data.load_corpus()


def test_downstream_task_is_verified_too(corpus_copy):
    assert "Parameters\n----------" in data.load_downstream(), "NumPy docstrings expected"
    (corpus_copy / data.manifest()["downstream"]["file"]).write_text("tampered")
    with pytest.raises(WorkbookError, match="altered"):
        data.load_downstream()


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_is_byte_level_and_lossless():
    tok = data.load_tokenizer()
    assert len(tok) == 4096
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1), "model config assumes these ids"
    text = 'def f(x):\n    """Return x²."""  — 한국어 🙂'
    ids = tok.encode(text)
    assert tok.decode(ids) == text, "byte-level BPE must round-trip any text, emoji included"
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    tok.padding_side = "left"
    assert data.load_tokenizer().padding_side == "right", "callers must not share one object"


def test_bpe_compresses_the_corpus():
    ids = data.token_ids("train")
    chars = len(data.load_corpus()) * (1 - data.VAL_FRACTION)
    assert 2.5 < chars / len(ids) < 6, f"{chars / len(ids):.2f} chars/token: BPE merges failed?"


def test_token_ids_split_and_dtype():
    train, val = data.token_ids("train"), data.token_ids("val")
    assert train.dtype == val.dtype == torch.int64
    assert abs(len(val) / (len(train) + len(val)) - data.VAL_FRACTION) < 1e-3
    with pytest.raises(WorkbookError, match="split"):
        data.token_ids("test")


def test_random_batch_targets_are_inputs_shifted_by_one():
    ids = torch.arange(1000)
    x, y = data.random_batch(ids, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16)
    torch.testing.assert_close(y[:, :-1], x[:, 1:], msg="y[t] must be x[t+1]")
    x2, _ = data.random_batch(ids, 4, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2), "same generator seed, same batch"
    with pytest.raises(WorkbookError, match="seq_len"):
        data.random_batch(ids, 4, 5000, torch.Generator())


# ------------------------------------------------------------------------------ model


def test_model_config_checks_ranges():
    with pytest.raises(WorkbookError, match="n_layers"):
        ModelConfig(n_layers=0)
    with pytest.raises(WorkbookError, match="multiple of n_heads"):
        ModelConfig(d_model=100, n_heads=3)
    assert ModelConfig(d_model=768).d_ff == 2048, "Llama's 8/3·d rounded up to 64"


@pytest.mark.parametrize("tie", [True, False])
def test_count_params_formula_matches_the_model(tie):
    cfg = ModelConfig(**{**TINY.__dict__, "tie_embeddings": tie})
    built = model.build_model(cfg, seed=0)
    assert model.count_params(cfg) == model.count_params(built)
    assert model.count_params(cfg, non_embedding=True) == model.count_params(
        built, non_embedding=True)
    emb = cfg.vocab_size * cfg.d_model * (1 if tie else 2)
    assert model.count_params(cfg) - model.count_params(cfg, True) == emb


def test_build_model_is_deterministic_and_leaves_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = model.build_model(TINY, seed=7), model.build_model(TINY, seed=7)
    c = model.build_model(TINY, seed=8)
    assert torch.equal(torch.get_rng_state(), before), "building must not move the global RNG"
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa), "same seed, same weights"
    assert not torch.equal(pa["model.layers.0.self_attn.q_proj.weight"],
                           pc["model.layers.0.self_attn.q_proj.weight"])
    assert a.config._attn_implementation == "sdpa"


def test_load_pretrained_reads_a_saved_folder(tmp_path):
    tok = data.load_tokenizer(512)
    saved = model.build_model(TINY, seed=0).eval()
    saved.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded, tok2 = model.load_pretrained(str(tmp_path))
    x = torch.tensor([tok2.encode("def main():")])
    torch.testing.assert_close(loaded(input_ids=x).logits, saved(input_ids=x).logits)
    with pytest.raises(WorkbookError, match="not a saved model folder"):
        model.load_pretrained(str(tmp_path / "nowhere"))


def test_small_base_model_learned_something():
    base, tok = model.load_base_model("small", seed=0, device="cpu")
    assert model.base_model_dir("small", 0).joinpath("model.safetensors").exists()
    x, y = data.random_batch(data.token_ids("val"), 8, 64, torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = base(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    uniform = math.log(len(tok))
    assert loss < uniform - 2, f"val loss {loss:.2f} vs a uniform guess {uniform:.2f}"
    again, _ = model.load_base_model("small", seed=0, device="cpu")
    assert all(torch.equal(p, q) for p, q in zip(base.parameters(), again.parameters(),
                                                  strict=True)), "cached model must reload"


def _sdpa_calls_under_dynamo(m, x, **kwargs):
    """(attn_mask given?, is_causal) of every SDPA call in the graph torch.compile traces."""
    seen = []

    def backend(gm, example_inputs):
        for node in gm.graph.nodes:
            if "scaled_dot_product" in str(node.target):
                seen.append((node.kwargs.get("attn_mask") is not None,
                             node.kwargs.get("is_causal")))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(lambda x: m(input_ids=x, **kwargs).logits, backend=backend)(x)
    return seen


def test_causal_sdpa_matches_sdpa_and_keeps_flash_eligible_under_compile():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=16)
    m = model.build_model(cfg, seed=0)
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    pad = torch.ones(2, 16, dtype=torch.long)
    pad[1, :4] = 0
    with torch.no_grad():
        ref, ref_pad = m(input_ids=x).logits, m(input_ids=x, attention_mask=pad).logits
    model.use_causal_sdpa(m)
    assert m.config._attn_implementation == model.CAUSAL_SDPA
    with torch.no_grad():
        torch.testing.assert_close(m(input_ids=x).logits, ref, rtol=0, atol=0)
        torch.testing.assert_close(m(input_ids=x, attention_mask=pad).logits, ref_pad,
                                   rtol=0, atol=0)
    # under torch.compile: no mask tensor, SDPA's is_causal path (what FlashAttention needs)
    assert _sdpa_calls_under_dynamo(m, x) == [(False, True)] * 2
    # a padding mask is still honoured
    assert all(has_mask for has_mask, _ in _sdpa_calls_under_dynamo(m, x, attention_mask=pad))


def test_rope_table_gives_the_same_logits_and_gradients():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, seq_len=16)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    out = {}
    for table in (False, True):
        m = model.build_model(cfg, seed=0)
        if table:
            model.use_rope_table(m)
            assert isinstance(m.model.rotary_emb, model.RopeTable)
            assert m.model.rotary_emb.cos.shape == (16, cfg.head_dim)
        logits = m(input_ids=ids).logits
        logits.square().mean().backward()
        out[table] = (logits.detach(), m.model.layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-4, atol=1e-7)
    # the tables travel with the model, to BF16 as well
    bf16 = model.use_rope_table(model.build_model(cfg, seed=0)).to(torch.bfloat16)
    assert bf16(input_ids=ids).logits.dtype == torch.bfloat16


def test_fused_projections_give_the_same_logits_and_gradients():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, seq_len=16)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    out = {}
    for fused in (False, True, "mlp"):
        m = model.build_model(cfg, seed=0)
        if fused:
            model.fuse_projections(m, attention=fused is True)
        logits = m(input_ids=ids).logits
        logits.square().mean().backward()
        layer = m.model.layers[1]
        out[fused] = (logits.detach(), layer.self_attn.k_proj.weight.grad,
                      layer.mlp.up_proj.weight.grad)
    for variant in (True, "mlp"):
        for fused, plain in zip(out[variant], out[False], strict=True):
            torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-6)
    m = model.fuse_projections(model.build_model(cfg, seed=0))
    assert sorted(k for k in m.state_dict() if "layers.0." in k) == sorted(
        k for k in model.build_model(cfg, seed=0).state_dict() if "layers.0." in k)
    plain = model.build_model(cfg, seed=0)
    assert torch.equal(m.generate(ids[:, :4], max_new_tokens=5, do_sample=False),
                       plain.generate(ids[:, :4], max_new_tokens=5, do_sample=False))

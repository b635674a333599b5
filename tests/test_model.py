"""The LLaMA model: shapes, causality, RoPE, GQA, init, config validation."""

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from model import LLaMA, ModelConfig
from model.llama import apply_rope, rope_tables


def tiny(**kw) -> ModelConfig:
    base = dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, ffn_multiple_of=32, vocab_size=101, seq_len=32)
    return ModelConfig(**{**base, **kw})


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = LLaMA(tiny())
    idx = torch.randint(0, 101, (3, 17))
    logits = model(idx)
    assert logits.shape == (3, 17, 101)
    logits2, loss = model(idx, idx)
    assert torch.equal(logits, logits2)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 101), idx.reshape(-1)).item())
    # std 0.006 makes the initial logits tiny, so the first loss is that of a uniform guess.
    assert loss.item() == pytest.approx(math.log(101), abs=0.02)


def test_longer_than_seq_len_is_an_error():
    with pytest.raises(ValueError, match="seq_len"):
        LLaMA(tiny())(torch.zeros(1, 33, dtype=torch.long))


def test_causality():
    torch.manual_seed(0)
    model = LLaMA(tiny(init_std=0.3))  # large weights so that any leak would show
    idx = torch.randint(0, 101, (2, 24))
    changed = idx.clone()
    changed[:, 10:] = torch.randint(0, 101, (2, 14))
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert (a[:, 10:] - b[:, 10:]).abs().max() > 1e-2


def test_rope_score_depends_only_on_relative_position():
    torch.manual_seed(0)
    D, T = 16, 64
    cos, sin = rope_tables(D, T, 10000.0)
    q, k = torch.randn(D), torch.randn(D)

    def score(m: int, n: int) -> torch.Tensor:
        return apply_rope(q, cos[m], sin[m]) @ apply_rope(k, cos[n], sin[n])

    for m, n in [(5, 2), (9, 9), (3, 20)]:
        for shift in (1, 7, 40):
            torch.testing.assert_close(score(m + shift, n + shift), score(m, n), rtol=1e-5, atol=1e-5)
    assert abs(score(5, 2) - score(5, 4)) > 1e-3  # but it does depend on the distance
    # Rotation preserves norms, and position 0 is the identity.
    torch.testing.assert_close(apply_rope(q, cos[11], sin[11]).norm(), q.norm())
    torch.testing.assert_close(apply_rope(q, cos[0], sin[0]), q)


def test_rope_buffers_not_in_state_dict():
    model = LLaMA(tiny())
    assert not any("rope" in k for k in model.state_dict())


def test_gqa_equals_mha_with_repeated_kv_heads():
    torch.manual_seed(0)
    gqa = LLaMA(tiny(n_head=8, n_kv_head=2, init_std=0.1))
    mha = LLaMA(tiny(n_head=8, n_kv_head=8))
    group, D, C = 8 // 2, 64 // 8, 64
    state = {}
    for name, w in gqa.state_dict().items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            w = w.view(2, D, C).repeat_interleave(group, dim=0).reshape(8 * D, C)  # KV head j serves queries j*group..
        state[name] = w
    mha.load_state_dict(state)
    idx = torch.randint(0, 101, (2, 32))
    torch.testing.assert_close(mha(idx), gqa(idx), rtol=1e-5, atol=1e-5)


def test_deepseek_init_statistics():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=4, d_model=256, n_head=4, n_kv_head=2, vocab_size=1000, seq_len=16)
    model = LLaMA(cfg)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or "layernorm" in name:
            assert torch.all(p == 1), name
        else:
            assert p.std().item() == pytest.approx(0.006, rel=0.03), name
            assert abs(p.mean().item()) < 4 * 0.006 / math.sqrt(p.numel()) + 1e-6, name
    assert model.lm_head.weight.data_ptr() != model.embed_tokens.weight.data_ptr()


def test_scaled_init_shrinks_residual_projections():
    torch.manual_seed(0)
    model = LLaMA(ModelConfig(n_layer=8, d_model=256, n_head=4, vocab_size=1000, seq_len=16, init_scheme="scaled"))
    for name, p in model.named_parameters():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            assert p.std().item() == pytest.approx(0.006 / math.sqrt(16), rel=0.03), name
        elif name.endswith(("q_proj.weight", "gate_proj.weight", "embed_tokens.weight")):
            assert p.std().item() == pytest.approx(0.006, rel=0.03), name


def test_tied_embeddings_share_one_matrix():
    model = LLaMA(tiny(tie_embeddings=True))
    assert model.lm_head.weight is model.embed_tokens.weight


def test_ffn_default_follows_llama_rounding():
    assert ModelConfig(n_layer=1, d_model=4096, n_head=32, vocab_size=8, seq_len=8).ffn_hidden == 11008
    assert tiny().ffn_hidden == 192  # floor(8/3 * 64) = 170 -> next multiple of 32
    assert tiny(ffn_hidden=100).ffn_hidden == 100
    assert tiny().n_kv_head == 2 and tiny(n_kv_head=None).n_kv_head == 4


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(d_model=60, n_head=8), "divisible by n_head"),
        (dict(n_head=4, n_kv_head=3), "divisible by n_kv_head"),
        (dict(n_layer=0), "n_layer must be a positive integer"),
        (dict(vocab_size=-5), "vocab_size must be a positive integer"),
        (dict(ffn_hidden=0), "ffn_hidden must be a positive integer"),
        (dict(seq_len=2.5), "seq_len must be a positive integer"),
        (dict(norm_eps=0.0), "norm_eps must be a positive number"),
        (dict(d_model=12, n_head=4, n_kv_head=4), "must be even"),
        (dict(init_scheme="xavier"), "init_scheme"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_from_dict():
    d = tiny().to_dict()
    assert ModelConfig.from_dict(d) == tiny()
    with pytest.raises(ValueError, match=r"unknown ModelConfig key\(s\) \['n_layers'\].*valid keys.*n_layer"):
        ModelConfig.from_dict({**d, "n_layers": 3})
    with pytest.raises(ValueError, match="missing required key.*vocab_size"):
        ModelConfig.from_dict({k: v for k, v in d.items() if k != "vocab_size"})


def test_autocast_bf16_runs_in_bf16():
    model = LLaMA(tiny())
    idx = torch.randint(0, 101, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_hf_helpers_without_transformers_say_how_to_install(monkeypatch, tmp_path):
    from model.hf import export_hf

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install -e \.\[hf\]"):
        export_hf(LLaMA(tiny()), tmp_path / "out")

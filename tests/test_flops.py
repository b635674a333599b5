"""FLOP and parameter accounting against DeepSeek LLM's own numbers (arXiv 2401.02954)."""

import pytest
from omegaconf import OmegaConf

from model import LLaMA, ModelConfig, count_flops
from model.flops import flops_from_shapes
from scaling.base.configs import conf_dir, load_model_config

CONF = conf_dir() / "model"

# Table 3 (n_vocab 102400, l_seq 4096): n_layer, d_model, N1, N2, M, 6N1/M, 6N2/M, as printed.
# The 24 x 1024 row: 72*24*1024^2 + 12*24*1024*4096 = 3.02e9, and 0.60 / 0.81 are the ratios that M
# implies; a figure of 2.54B (ratios 0.71 / 0.96) for that row contradicts the paper's own formula.
TABLE3 = [
    (8, 512, "25.2M", "77.6M", "352M", "0.43", "1.32"),
    (12, 768, "84.9M", "164M", "963M", "0.53", "1.02"),
    (24, 1024, "302M", "407M", "3.02B", "0.60", "0.81"),
    (24, 2048, "1.21B", "1.42B", "9.66B", "0.75", "0.88"),
    (32, 4096, "6.44B", "6.86B", "45.1B", "0.86", "0.91"),
    (40, 5120, "12.6B", "13.1B", "85.6B", "0.88", "0.92"),
    (80, 8192, "64.4B", "65.3B", "419B", "0.92", "0.94"),
]


def printed(x: float) -> str:
    """Three significant digits with the paper's M/B suffix."""
    value, suffix = (x / 1e9, "B") if x >= 1e9 else (x / 1e6, "M")
    digits = max(0, 2 - len(str(int(value))) + 1)
    return f"{value:.{digits}f}{suffix}"


@pytest.mark.parametrize("n_layer,d,N1,N2,M,r1,r2", TABLE3)
def test_table3(n_layer, d, N1, N2, M, r1, r2):
    # The paper's shapes are idealised: MHA, head-count irrelevant, FFN exactly 8/3 d (fractional at d=512).
    f = flops_from_shapes(
        n_layer=n_layer, d_model=d, d_attn=d, d_kv=d, ffn_hidden=8 * d / 3, vocab_size=102400, seq_len=4096
    )
    assert (printed(f.N1), printed(f.N2), printed(f.M)) == (N1, N2, M)
    assert (f"{f.M_6N1 / f.M:.2f}", f"{f.M_6N2 / f.M:.2f}") == (r1, r2)
    assert f.M == pytest.approx(f.M_formula, rel=1e-12)
    assert f.M_6N1 == 6 * f.N1 and f.M_6N2 == 6 * f.N2


def test_printed_format():
    assert [printed(x) for x in (25_165_824, 163_577_856, 3.0199e9, 418.76e9)] == ["25.2M", "164M", "3.02B", "419B"]


@pytest.mark.parametrize("n_layer,d,n_head", [(2, 96, 4), (3, 384, 6), (4, 768, 12)])
def test_real_mha_at_eight_thirds_matches_formula(n_layer, d, n_head):
    # d divisible by 3 so that ffn_hidden = 8/3 d is an integer a real model can have.
    cfg = ModelConfig(n_layer=n_layer, d_model=d, n_head=n_head, ffn_hidden=8 * d // 3, vocab_size=1000, seq_len=128)
    f = count_flops(cfg)
    assert f.M == f.M_formula
    assert f.N1 == 12 * n_layer * d * d
    assert f.M - f.M_6N1 == 12 * n_layer * d * cfg.seq_len


def load(name: str, vocab_size: int = 512) -> ModelConfig:
    return load_model_config(name, vocab_size=vocab_size)


def test_deepseek_7b():
    cfg = load("deepseek_7b")
    f = count_flops(cfg)
    # embed + head 2*102400*4096, 30 * (4*4096^2 + 3*4096*11008 + 2*4096), final norm 4096
    assert f.params == 6_910_365_696
    assert round(f.params / 1e9, 2) == 6.91
    assert f.M == 6 * f.N1 + 12 * 30 * 4096 * 4096 == 42_467_328_000
    assert f.M > f.M_formula  # ffn 11008 is wider than 8/3 * 4096 = 10922.7
    assert f.train_flops_per_token == f.M + 6 * 4096 * 102400


def test_deepseek_67b_gqa():
    cfg = load("deepseek_67b")
    f = count_flops(cfg)
    per_layer = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 22016  # q, o; k, v (8 KV heads of 128); FFN
    assert f.N1 == 95 * per_layer
    assert f.params == 67_425_001_472
    # 67.425001e9: "67.42B" truncated to two decimals (67.43B if rounded half-up).
    assert 67.42e9 <= f.params < 67.43e9
    assert f.M < f.M_formula  # GQA shrinks k and v, so the MHA formula overstates 67B's compute
    assert f.M == 6 * f.N1 + 12 * 95 * 8192 * 4096


def test_yaml_keys_are_model_config_fields():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for path in sorted(CONF.glob("*.yaml")):
        assert set(OmegaConf.load(path).keys()) == fields, path.name


@pytest.mark.parametrize("name", ["tiny", "small", "base_124m"])
def test_trainable_configs_take_vocab_from_data(name):
    assert load(name, vocab_size=777).vocab_size == 777


@pytest.mark.parametrize(
    "kw",
    [
        dict(n_layer=2, d_model=64, n_head=4, vocab_size=97, seq_len=16),
        dict(n_layer=3, d_model=96, n_head=6, n_kv_head=2, ffn_hidden=200, vocab_size=50, seq_len=8),
        dict(n_layer=1, d_model=32, n_head=2, n_kv_head=1, vocab_size=40, seq_len=8, tie_embeddings=True),
    ],
)
def test_params_match_instantiated_model(kw):
    cfg = ModelConfig(**kw)
    model = LLaMA(cfg)
    assert sum(p.numel() for p in model.parameters()) == count_flops(cfg).params
    matmul = sum(p.numel() for n, p in model.layers.named_parameters() if n.endswith("proj.weight"))
    assert matmul == count_flops(cfg).N1

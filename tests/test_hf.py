"""Logits parity with Hugging Face's LlamaForCausalLM (skipped without the `hf` extra)."""

import json

import pytest
import torch

pytest.importorskip("safetensors")
transformers = pytest.importorskip("transformers")

from model import LLaMA, ModelConfig  # noqa: E402
from model.hf import export_hf, import_hf, to_hf_config  # noqa: E402

TOL = 1e-4


def gqa_config(**kw) -> ModelConfig:
    base = dict(
        n_layer=2,
        d_model=64,
        n_head=8,
        n_kv_head=2,
        ffn_hidden=96,
        vocab_size=97,
        seq_len=48,
        rope_theta=5000.0,
        norm_eps=1e-5,
        init_std=0.2,
    )  # large init: differences would show
    return ModelConfig(**{**base, **kw})


def hf_logits(hf_model, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(input_ids=idx).logits


@pytest.mark.parametrize("tie", [False, True])
def test_export_import_parity(tmp_path, tie):
    torch.manual_seed(0)
    ours = LLaMA(gqa_config(tie_embeddings=tie)).eval()
    idx = torch.randint(0, 97, (2, 48))
    with torch.no_grad():
        expected = ours(idx)

    out = export_hf(ours, tmp_path / "export")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_key_value_heads"] == 2 and cfg["intermediate_size"] == 96 and cfg["tie_word_embeddings"] is tie
    hf = transformers.LlamaForCausalLM.from_pretrained(out).float().eval()
    assert (expected - hf_logits(hf, idx)).abs().max().item() < TOL
    assert expected.abs().max().item() > 1.0  # a meaningful comparison, not two near-zero tensors

    back = import_hf(out).eval()
    assert back.cfg == ours.cfg
    with torch.no_grad():
        assert (expected - back(idx)).abs().max().item() < TOL
    assert (back.lm_head.weight is back.embed_tokens.weight) is tie


def test_import_of_a_model_saved_by_hf(tmp_path):
    torch.manual_seed(1)
    hf_cfg = to_hf_config(gqa_config())
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # HF's own init leaves norms at 1; randomise everything to test every mapping
            p.normal_(0.0, 0.2 if p.ndim > 1 else 1.0)
    hf.save_pretrained(tmp_path / "hf")
    ours = import_hf(tmp_path / "hf").eval()
    idx = torch.randint(0, 97, (3, 40))
    with torch.no_grad():
        assert (ours(idx) - hf_logits(hf, idx)).abs().max().item() < TOL


def test_export_replaces_an_existing_directory(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "stale.bin").write_text("old")
    export_hf(LLaMA(gqa_config()), out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary directories left behind


def test_import_without_weights_is_a_clear_error(tmp_path):
    to_hf_config(gqa_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        import_hf(tmp_path)

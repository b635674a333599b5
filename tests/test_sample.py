"""KV-cached generation (== full recomputation, == Hugging Face greedy `generate`) and scaling.sample on a run dir."""

from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from model import LLaMA, ModelConfig
from model.llama import KVCache
from scaling.base.record import config_hash
from scaling.run.checkpoint import save_checkpoint
from scaling.run.sampling import sample
from scaling.sample import main


def gqa(**kw) -> ModelConfig:
    # Large init so that any difference between the two paths would show in the logits and in argmax choices.
    base = dict(n_layer=2, d_model=64, n_head=8, n_kv_head=2, ffn_hidden=96, vocab_size=97, seq_len=24, init_std=0.3)
    return ModelConfig(**{**base, **kw})


def test_cache_holds_kv_heads_and_incremental_logits_equal_full_forward():
    torch.manual_seed(0)
    model = LLaMA(gqa()).eval()
    idx = torch.randint(0, 97, (2, 24))
    cache = KVCache(model.cfg, 2)
    assert cache.k[0].shape == (2, 2, 24, 8)  # K=2 key/value heads, not H=8: GQA stays grouped in the cache
    with torch.no_grad():
        full = model(idx)
        # A 5-token prefill, a 4-token chunk (the masked path: queries after cached positions), then single tokens.
        parts = [model(idx[:, :5], cache=cache), model(idx[:, 5:9], cache=cache)]
        parts += [model(idx[:, t : t + 1], cache=cache) for t in range(9, 24)]
    inc = torch.cat(parts, dim=1)
    assert cache.pos == 24
    assert full.abs().max() > 1.0  # a meaningful comparison
    assert (full - inc).abs().max().item() < 1e-4  # float32 summation order only (the HF parity tolerance)
    with pytest.raises(ValueError, match="max_len"):
        model(idx[:, :1], cache=cache)  # the cache is full


@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.7, 5)])
def test_cached_decoding_equals_uncached(temperature, top_k):
    torch.manual_seed(1)
    model = LLaMA(gqa()).eval()
    prompt = torch.randint(0, 97, (2, 7))
    # 60 new tokens with seq_len 24: the window fills and is refilled from its tail several times.
    kw = dict(max_new_tokens=60, temperature=temperature, top_k=top_k)
    cached = model.generate(prompt, **kw, generator=torch.Generator().manual_seed(3))
    uncached = model.generate(prompt, **kw, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert cached.shape == (2, 67) and torch.equal(cached[:, :7], prompt)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0, 7:].tolist())) > 3  # not a degenerate constant continuation


def test_greedy_equals_hf_generate(tmp_path):
    pytest.importorskip("safetensors")
    transformers = pytest.importorskip("transformers")
    from model.hf import export_hf

    torch.manual_seed(2)
    model = LLaMA(gqa(seq_len=48)).eval()
    prompt = torch.randint(0, 97, (2, 6))
    hf = transformers.LlamaForCausalLM.from_pretrained(export_hf(model, tmp_path / "hf")).float().eval()
    with torch.no_grad():
        expected = hf.generate(
            prompt, max_new_tokens=40, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(prompt)
        )
    ours = model.generate(prompt, 40)
    assert len(set(ours[0, 6:].tolist())) > 3
    assert torch.equal(ours, expected)


def test_generate_refuses_bad_arguments():
    model = LLaMA(gqa())
    with pytest.raises(ValueError):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 4)
    with pytest.raises(ValueError):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 4, temperature=-1.0)


@pytest.fixture
def run_dir(make_cfg, tmp_path):
    """A checkpointed run dir as scaling.train leaves it (config.yaml, ckpt.pt + sidecar), without training."""
    cfg = OmegaConf.to_container(make_cfg("model=tiny", "model.init_std=0.05"), resolve=True)
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    torch.manual_seed(0)
    model = LLaMA(ModelConfig.from_dict(cfg["model"]))
    save_checkpoint(d, {"config_hash": config_hash(cfg), "model": model.state_dict(), "step": 7})
    return d, model


def test_sample_continues_the_prompt_with_the_runs_model(run_dir):
    d, model = run_dir
    a = sample(d, "The Congress", max_new_tokens=12, temperature=1.0, top_k=20, seed=5)
    b = sample(d, "The Congress", max_new_tokens=12, temperature=1.0, top_k=20, seed=5)
    c = sample(d, "The Congress", max_new_tokens=12, temperature=1.0, top_k=20, seed=6)
    assert len(a.tokens) == 12 and a.tokens == b.tokens and a.tokens != c.tokens
    assert a.text.startswith("The Congress") and a.step == 7 and a.status == "unfinished"
    greedy = sample(d, "The Congress", max_new_tokens=12, temperature=0.0)
    from scaling.data import prepare_data

    data = prepare_data(OmegaConf.to_container(OmegaConf.load(d / "config.yaml"), resolve=True)["data"])
    prompt = torch.tensor([[data.bos_id, *data.encode("The Congress")]])
    assert greedy.tokens == model.generate(prompt, 12)[0, prompt.shape[1] :].tolist()


def test_sample_cli_bad_input_is_one_line_exit_2(run_dir, tmp_path, capsys):
    d, _ = run_dir
    for bad, why in [(tmp_path / "nope", "not a directory"), (tmp_path, "no config.yaml")]:
        with pytest.raises(SystemExit) as e:
            main([str(bad), "--prompt", "x"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and why in err and len(err.strip().splitlines()) == 1
    assert main([str(d), "--prompt", "The", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("The")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_that_would_run_code_is_refused(run_dir, capsys):
    d, model = run_dir
    chash = json.loads((d / "ckpt.json").read_text())["config_hash"]
    (d / "ckpt.pt").write_bytes(pickle.dumps({"config_hash": chash, "model": model.state_dict(), "x": _Evil()}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the one-line error says it all: no warning about "training from step 0"
        with pytest.raises(ValueError, match="unreadable"):
            sample(d, "x", max_new_tokens=2)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "bad",
    [
        ["--temperature", "nan"],
        ["--temperature", "inf"],
        ["--top-k", "-1"],
        ["--device", "bogus"],
        ["--device", "cuda:99"],
    ],
)
def test_sample_cli_bad_option_is_one_line_exit_2(run_dir, capsys, bad):
    d, _ = run_dir
    with pytest.raises(SystemExit) as e:
        main([str(d), "--prompt", "x", "--max-new-tokens", "2", *bad])
    err = capsys.readouterr().err
    assert e.value.code == 2 and bad[0] in err and len(err.strip().splitlines()) == 1


def test_generate_refuses_non_finite_temperature():
    model = LLaMA(gqa())
    for t in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            model.generate(torch.zeros(1, 2, dtype=torch.long), 2, temperature=t)


def test_best_run_of_each_isoflop_budget_is_sampled(run_dir, tmp_path, capsys):
    import shutil

    from scaling.run.sampling import best_per_budget

    d, _ = run_dir
    root = tmp_path / "study"
    recs = {
        "a": (1e10, 4.0, "completed"),
        "b": (1e10, 3.5, "completed"),
        "c": (3e10, 3.0, "completed"),
        "d": (3e10, 2.0, "diverged"),
    }
    for name, (budget, loss, status) in recs.items():
        shutil.copytree(d, root / "isoflop" / name)
        rec = {"sweep": "isoflop", "budget": budget, "val_loss": loss, "status": status}
        (root / "isoflop" / name / "result.json").write_text(json.dumps(rec))
    (root / "isoflop" / "e").mkdir()
    (root / "isoflop" / "e" / "result.json").write_text("{garbage")  # unreadable: never the best, never a crash
    assert [(b, p.name, v) for b, p, v in best_per_budget(root)] == [(1e10, "b", 3.5), (3e10, "c", 3.0)]
    assert main([str(root), "--best-per-budget", "--prompt", "The", "--max-new-tokens", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.split(":")[0] for x in lines] == ["C=1e+10  b (val_loss 3.5000)", "C=3e+10  c (val_loss 3.0000)"]
    # Bad options are bad input for every budget at once (was one "cannot sample" line per budget and exit 0) ...
    with pytest.raises(SystemExit) as e:
        main([str(root), "--best-per-budget", "--temperature", "nan"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    # ... and a budget whose best run cannot be sampled is not success.
    (root / "isoflop" / "c" / "ckpt.pt").unlink()
    assert main([str(root), "--best-per-budget", "--prompt", "The", "--max-new-tokens", "3"]) == 1
    assert "cannot sample" in capsys.readouterr().out


def test_sample_reads_a_sharded_checkpoint_in_one_process(run_dir, capsys):
    """An FSDP run leaves ckpt_dcp/ (DCP shards) and ckpt_dcp.json instead of ckpt.pt: sampled on one CPU process."""
    from scaling.run.distributed import Dist
    from scaling.run.parallel import save_sharded
    from scaling.run.step import build_optimizer

    d, model = run_dir
    want = sample(d, "The Congress", max_new_tokens=8, temperature=0.0).tokens
    chash = json.loads((d / "ckpt.json").read_text())["config_hash"]
    optimizer = build_optimizer(model, 1e-3, (0.9, 0.95), 1e-8, 0.1, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP: no process group, one process assumed (as intended)
        save_sharded(d, model, optimizer, {"config_hash": chash, "step": 7}, Dist())
    (d / "ckpt.pt").unlink()
    (d / "ckpt.json").unlink()
    got = sample(d, "The Congress", max_new_tokens=8, temperature=0.0)
    assert got.tokens == want and got.step == 7
    assert main([str(d), "--prompt", "The", "--max-new-tokens", "3"]) == 0
    assert "checkpoint at step 7" in capsys.readouterr().err
    (d / "ckpt_dcp" / "step_7" / ".metadata").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ValueError, match="sharded checkpoint refused"):
        sample(d, "x", max_new_tokens=2)
    assert "this must never run" not in capsys.readouterr().out

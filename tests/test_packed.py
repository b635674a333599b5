"""Packed training (scaling.run.pack): K same-shape runs trained as one stacked model give the numbers and records of
the same runs trained alone.

Tolerance. The stacked step does the single step's arithmetic in another order (bmm instead of mm, the RMSNorm
weight as a separate multiply, AdamW as tensor ops instead of the fused kernel, the gradient norm over one flat
buffer): one step differs by ~1e-7 relative (fp32 rounding). Training amplifies such differences like any
perturbation — slowly at stable learning rates, fast in the unstable regime (measured: 4e-5 after 64 steps at
lr 2e-3, 3% at lr 0.1) — so the loss curves are compared at stable learning rates with PACK_RTOL, and a diverging
run must diverge at the same step with the same tokens trained.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from model import LLaMA, ModelConfig
from scaling.run.pack import train_pack
from scaling.run.pack.model import PackedParams, packed_losses
from scaling.run.pack.optim import PackedAdamW, clip_per_run
from scaling.run.single import train_run
from scaling.run.step import build_optimizer
from tests.helpers import (
    ONE_THREAD,
    PACK_RTOL,
    SMALL_MODEL,
    TINY_DATA,
    TINY_HPARAMS_GRID,
    TINY_SWEEP,
    assert_resumed_alike,
    metrics,
    python_m,
    record,
    records,
    run_cmd,
    spawn_script,
)

# A tiny run: 32 steps of 4 x 32 tokens (d 32: a second per run on one CPU core).
SMALL = [*SMALL_MODEL, "train.tokens=4096", "train.log_every=2", "train.eval_every=16"]
STABLE_LRS = [1e-3, 2e-3, 3e-3, 4e-3]
# Diverging mid-way, the same way packed and alone: a run's decoupled weight decay multiplies its matrices by
# 1 - lr*wd each step; with lr ramping up over half the run, |1 - lr*wd| passes 1 around step 8 and the weights
# then grow geometrically, so the loss crosses the divergence threshold sharply (at step 15 of 32: checked below).
# A large learning rate alone would diverge too, but through a chaotic phase where fp32 rounding moves the step.
WARMUP = ["optim.warmup_frac=0.5"]
DIVERGING = ["optim.lr=2e-3", "optim.weight_decay=3000"]


def assert_same_run(single: dict, packed: dict, single_dir: Path, packed_dir: Path) -> None:
    assert packed["status"] == single["status"]
    assert packed["D"] == single["D"] and packed["steps"] == single["steps"]
    assert packed.get("diverged_at_step") == single.get("diverged_at_step")
    assert packed["config_hash"] == single["config_hash"]
    a, b = metrics(single_dir), metrics(packed_dir)
    assert [r["step"] for r in a] == [r["step"] for r in b] and a
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=PACK_RTOL), (x["step"], x["loss"], y["loss"])
        assert y["lr"] == x["lr"] and ("val_loss" in x) == ("val_loss" in y)
        if "val_loss" in x:  # the periodic evaluation
            assert y["val_loss"] == pytest.approx(x["val_loss"], rel=PACK_RTOL)
    if single["status"] == "completed":
        assert packed["val_loss"] == pytest.approx(single["val_loss"], rel=PACK_RTOL)
        assert packed["train_loss"] == pytest.approx(single["train_loss"], rel=PACK_RTOL)
    # analysis.fit reads the same record: the same keys, plus who the run was packed with
    assert set(packed) - set(single) == {"packed_with"} and set(single) - set(packed) == set()


STABLE = [[f"optim.lr={lr}"] for lr in STABLE_LRS]


@pytest.mark.parametrize("runs", [STABLE[:1], STABLE[:2], [*STABLE, DIVERGING]], ids=["K1", "K2", "K5-one-diverges"])
def test_packed_runs_equal_the_same_runs_trained_alone(make_cfg, tmp_path, runs):
    cfgs = [make_cfg(*SMALL, *WARMUP, *run, f"run.id=r{i}") for i, run in enumerate(runs)]
    packed = train_pack(cfgs, [tmp_path / "packed" / f"r{i}" for i in range(len(runs))])
    for i, cfg in enumerate(cfgs):
        single = train_run(cfg, tmp_path / "single" / f"r{i}")
        assert_same_run(single, packed[i], tmp_path / "single" / f"r{i}", tmp_path / "packed" / f"r{i}")
        assert packed[i]["packed_with"] == [f"r{j}" for j in range(len(runs)) if j != i]
    if len(runs) == 5:
        bad = packed[-1]
        assert bad["status"] == "diverged" and 0.25 * bad["steps"] < bad["diverged_at_step"] < 0.9 * bad["steps"]
        assert all(r["status"] == "completed" for r in packed[:-1])  # the others went on to the end


def test_finished_runs_are_skipped_whether_they_were_trained_alone_or_packed(make_cfg, tmp_path):
    cfgs = [make_cfg(*SMALL, f"optim.lr={lr}", f"run.id=r{i}") for i, lr in enumerate(STABLE_LRS[:3])]
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    done = train_run(cfgs[0], dirs[0])  # finished alone before the pack
    first = train_pack(cfgs, dirs)
    assert first[0].get("skipped") and first[0]["val_loss"] == done["val_loss"]
    assert not first[1].get("skipped") and first[2]["status"] == "completed"
    again = train_pack(cfgs, dirs)
    assert all(r.get("skipped") for r in again)
    assert [r["val_loss"] for r in again] == [r["val_loss"] for r in first]


def test_runs_checkpointed_at_different_steps_resume_as_separate_packs(make_cfg, tmp_path, monkeypatch):
    import scaling.run.pack.train as packed

    cfgs = [
        make_cfg(*SMALL, "train.ckpt_every_s=0", f"optim.lr={lr}", f"run.id=r{i}")
        for i, lr in enumerate(STABLE_LRS[:2])
    ]
    ref = train_pack(cfgs, [tmp_path / "ref" / f"r{i}" for i in range(2)])
    dirs = [tmp_path / "run" / f"r{i}" for i in range(2)]
    real, calls = packed.save_checkpoint, []

    def dies_between_two_runs_checkpoints(run_dir, state, name="ckpt.pt"):
        calls.append(state["step"])  # r0 and r1 at step 2, then at 4, then r0 at 6 -- and r1 at 6 never comes
        if len(calls) == 6:
            raise OSError("simulated crash between two runs' checkpoints")
        real(run_dir, state, name)

    monkeypatch.setattr(packed, "save_checkpoint", dies_between_two_runs_checkpoints)
    with pytest.raises(OSError, match="simulated crash"):
        train_pack(cfgs, dirs)
    assert [record(d)["status"] for d in dirs] == ["failed", "failed"]
    assert [torch.load(d / "ckpt.pt", weights_only=True)["step"] for d in dirs] == [6, 4]
    monkeypatch.setattr(packed, "save_checkpoint", real)
    out = train_pack(cfgs, dirs)
    for i in range(2):
        assert out[i]["status"] == ref[i]["status"] == "completed" and out[i]["D"] == ref[i]["D"]
        assert out[i]["val_loss"] == pytest.approx(ref[i]["val_loss"], rel=PACK_RTOL)
        assert [r["step"] for r in metrics(dirs[i])] == [r["step"] for r in metrics(tmp_path / "ref" / f"r{i}")]


def test_runs_that_differ_in_more_than_optimizer_scalars_are_refused(make_cfg, tmp_path):
    cfgs = [make_cfg(*SMALL, "run.id=a"), make_cfg(*SMALL, "run.id=b", "train.batch_size=256")]
    with pytest.raises(ValueError, match=r"cannot be packed: they differ in train\.batch_size"):
        train_pack(cfgs, [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything was written


@pytest.mark.parametrize("kv,tied", [(2, False), (1, True)], ids=["mha", "gqa-tied"])
def test_stacked_forward_equals_each_model(kv, tied):
    cfg = ModelConfig(
        n_layer=2, d_model=32, n_head=2, n_kv_head=kv, vocab_size=64, seq_len=16, ffn_multiple_of=8, tie_embeddings=tied
    )
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(LLaMA(cfg))
    params = PackedParams(models[0], [dict(m.named_parameters()) for m in models], torch.device("cpu"))
    x, y = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    with torch.no_grad():
        got = packed_losses(params.views, cfg, models[0].rope_cos, models[0].rope_sin, x, y)
        want = torch.stack([m(x, y)[1] for m in models])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    assert len(set(want.tolist())) == 3  # three different models, not one compared with itself


def test_packed_adamw_and_clipping_equal_torch_per_run():
    cfg = ModelConfig(n_layer=1, d_model=16, n_head=2, vocab_size=32, seq_len=8, ffn_multiple_of=8)
    torch.manual_seed(0)
    lrs, wds, clips = [1e-3, 3e-2, 0.5], [0.1, 0.0, 0.3], [1.0, 0.05, 1e9]
    models = [LLaMA(cfg) for _ in lrs]
    opts = [build_optimizer(m, lr, (0.9, 0.95), 1e-8, wd, torch.device("cpu")) for m, lr, wd in zip(models, lrs, wds)]
    params = PackedParams(
        models[0], [{n: p.detach().clone() for n, p in m.named_parameters()} for m in models], torch.device("cpu")
    )
    adam = PackedAdamW(3, params.flat.shape[1], params.n_decay, (0.9, 0.95), 1e-8, torch.device("cpu"))
    for _ in range(3):
        grads = [{n: torch.randn_like(p) for n, p in m.named_parameters()} for m in models]
        norms = []
        for m, o, g, c in zip(models, opts, grads, clips):
            for n, p in m.named_parameters():
                p.grad = g[n].clone()
            norms.append(torch.nn.utils.clip_grad_norm_(m.parameters(), c))
            o.step()
        flat_grad = torch.stack([torch.cat([g[n].reshape(-1) for n in params.names]) for g in grads])
        got_norms = clip_per_run(flat_grad, torch.tensor(clips))
        adam.step(params.flat, flat_grad, lrs, wds)
        torch.testing.assert_close(got_norms, torch.stack(norms), rtol=1e-5, atol=0)
    for k, m in enumerate(models):
        row = params.row(k)
        for n, p in m.named_parameters():
            torch.testing.assert_close(row[n], p.detach(), rtol=1e-5, atol=1e-7)


KILL_SCRIPT = """
import sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from scaling.run.pack import train_pack
conf, out, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
lrs = [1e-3, 2e-3, 3e-3]
with initialize_config_dir(config_dir=conf, version_base=None):
    cfgs = [compose("run", overrides=[*overrides, f"optim.lr={lr}", f"run.id=r{i}"]) for i, lr in enumerate(lrs)]
train_pack(cfgs, [out / f"r{i}" for i in range(len(lrs))])
"""


@pytest.mark.slow
def test_a_pack_killed_with_sigkill_resumes_to_the_same_records(make_cfg, cache_dir, tmp_path):
    overrides = [
        *TINY_DATA,
        f"data.cache_dir={cache_dir}",
        "train.progress=false",
        *SMALL,
        "train.tokens=16384",
        "train.ckpt_every_s=0",
    ]
    script = tmp_path / "pack.py"
    script.write_text(KILL_SCRIPT)
    ref = spawn_script(script, tmp_path / "ref", overrides)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    victim = spawn_script(script, tmp_path / "killed", overrides)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once every run has logged a few steps (and checkpointed: every window)
        paths = [tmp_path / "killed" / f"r{i}" / "metrics.jsonl" for i in range(3)]
        if all(p.exists() and len(p.read_text().splitlines()) >= 6 for p in paths):
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert all(not (tmp_path / "killed" / f"r{i}" / "result.json").exists() for i in range(3)), "killed too late"
    assert all((tmp_path / "killed" / f"r{i}" / "ckpt.pt").exists() for i in range(3))  # so the rerun resumes
    again = spawn_script(script, tmp_path / "killed", overrides)
    assert again.wait(timeout=300) == 0, again.stderr.read()
    for i in range(3):
        assert_resumed_alike(tmp_path / "ref" / f"r{i}", tmp_path / "killed" / f"r{i}")


# ---- the sweep: sweep.pack=auto|off|K ----


def hparams_points():
    from omegaconf import OmegaConf

    from model.shapes import ShapeRule
    from scaling.base.configs import conf_dir
    from sweeps.laws import Laws
    from sweeps.plan import SweepSettings, plan

    sweep = OmegaConf.load(conf_dir() / "sweep.yaml").sweep
    rule = ShapeRule.from_cfg("width", OmegaConf.to_container(sweep.shape_rules.width))
    base = ModelConfig(n_layer=2, d_model=64, n_head=4, vocab_size=512, seq_len=64, ffn_multiple_of=32)
    s = SweepSettings(lr_points=5, batch_points=3)
    return plan("hparams", 2e10, Laws.deepseek(), rule, base, s) + plan("isoflop", 2e11, Laws.deepseek(), rule, base, s)


def test_sweep_packs_runs_of_one_batch_size_only_where_it_pays():
    from sweeps.packing import parse_pack, plan_units

    points = hparams_points()
    hp = [i for i, p in enumerate(points) if p.sweep == "hparams"]
    todo = list(range(len(points)))
    asked = []

    def gain(p, K):  # packs of the smallest batch pay, the others do not
        asked.append((p.batch_size, K))
        return 2.0 if p.batch_size == min(points[i].batch_size for i in hp) else 1.0

    auto = plan_units(points, todo, "auto", gain)
    packs = [u for u in auto if u.packed]
    assert len(packs) == 1 and len(packs[0].members) == 5 and packs[0].speedup == 2.0
    assert {points[i].batch_size for i in packs[0].members} == {min(points[i].batch_size for i in hp)}
    assert sorted(i for u in auto for i in u.members) == todo  # every run once, packed or alone
    assert {K for _, K in asked} == {5}
    # smallest batch first; once a batch size does not pay, the larger ones of that shape are not measured
    batches = sorted({points[i].batch_size for i in hp})
    assert [b for b, _ in asked] == batches[:2]
    # K = 2 with the first run already done: that batch's 4 runs make 2 packs, the other two batches' 5 runs make
    # 2 packs and one run alone each; IsoFLOP points (different shapes) never pack
    fixed = plan_units(points, todo[1:], 2, lambda p, K: None)
    assert [len(u.members) for u in fixed if u.packed] == [2] * 6
    assert sum(not u.packed for u in fixed) == 2 + len(points) - len(hp)
    assert all(
        points[i].sweep == "hparams" and points[i].batch_size == points[u.members[0]].batch_size
        for u in fixed
        if u.packed
        for i in u.members
    )
    assert not any(u.packed for u in plan_units(points, todo, "off", gain))
    assert not any(u.packed for u in plan_units(points, todo, "auto", lambda p, K: None))  # unmeasurable: alone
    for bad in ("0", "-2", "fast", "2.5"):
        with pytest.raises(ValueError, match="sweep.pack="):
            parse_pack(bad)


@pytest.mark.slow
def test_a_packed_hparams_sweep_writes_the_same_records_and_reruns_skip(tmp_path, cache_dir):
    # sweep.extend=0: the grid as planned (extension rounds add runs after the packs; tested in test_sweep_loop.py)
    cmd = python_m("scaling.sweep", "+hparams=2e9", *TINY_SWEEP, *TINY_HPARAMS_GRID, "sweep.extend=0")

    def sweep(out: Path, pack: str) -> subprocess.CompletedProcess:
        r = run_cmd([*cmd, f"sweep.dir={out}", f"sweep.pack={pack}"], env=ONE_THREAD, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r

    packed = sweep(tmp_path / "packed", "3")
    assert "packs (sweep.pack; scaling.run.pack): 3 packs of 9 runs" in packed.stdout
    alone = sweep(tmp_path / "alone", "off")
    recs, refs = records(tmp_path / "packed"), records(tmp_path / "alone")
    assert sorted(recs) == sorted(refs) and len(recs) == 9  # pack job dirs hold no record
    for rid, r in recs.items():
        assert len(r["packed_with"]) == 2 and rid not in r["packed_with"]
        assert set(r) - set(refs[rid]) == {"packed_with"}
        assert r["config_hash"] == refs[rid]["config_hash"] and r["status"] == refs[rid]["status"]
        if r["status"] == "completed":
            # Hundreds of steps at 4 sequences a batch amplify fp32 rounding to the run's own noise floor: the SAME
            # run with train.micro_batch_size halved (identical maths) moved val_loss by 0.3% here. The curves'
            # equality is tested above at PACK_RTOL; here the records must agree within that noise.
            assert r["val_loss"] == pytest.approx(refs[rid]["val_loss"], rel=0.05)
    again = sweep(tmp_path / "packed", "3")
    assert "9 skipped" in again.stdout and "packs (" not in again.stdout
    assert "packs (" not in alone.stdout

"""Trunks packed together (scaling.run.trunk.train_trunks; sweep.pack with sweep.reuse): each branch's record and
curve equal those of the same run trained alone.

Tolerance: PACK_RTOL (tests/helpers.py), the packed runs' own. Several trunks train as one stacked model
(scaling.run.pack), and their branches at one branch point as one too; the stacked step does a single step's
arithmetic in another order (bmm, the RMSNorm weight as a separate multiply, AdamW as tensor ops), ~1e-7 relative a
step, which training amplifies slowly at stable learning rates (tests/test_packed.py). So curves and final losses are
compared at PACK_RTOL, everything else in the record exactly, and a diverging trunk must diverge at the same step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scaling.base.record import TRUNK_RECORD
from scaling.run.single import train_run
from scaling.run.trunk import TrunkPlan, branch_point, train_trunks
from tests.helpers import (
    DIVERGING_TRUNK,
    ONE_THREAD,
    PACK_RTOL,
    SMALL_MODEL,
    TIMING,
    TINY_DATA,
    TINY_HPARAMS_GRID,
    TINY_SWEEP,
    TRUNK_TOKENS,
    assert_resumed_alike,
    killed_when,
    metrics,
    python_m,
    records,
    run_cmd,
    spawn_script,
    without,
)

SMALL = [*SMALL_MODEL, "train.log_every=3"]
STABLE = [["optim.lr=1e-3"], ["optim.lr=2e-3"], ["optim.lr=3e-3"]]
SLOW_WARMUP = ["optim.warmup_steps=12"]
BRANCH_ONLY = {"trunk", "shared_tokens", "C_spent", "packed_with"}  # a packed branch's own keys
# Measured, not recomputed: the losses (and the divergence message quoting one) round as the pack does.
LOSSES = {"val_loss", "val_bpb", "train_loss", "initial_loss", "error"}


def assert_same_run(alone: dict, branch: dict, alone_dir: Path, branch_dir: Path) -> None:
    """A branch trained in a pack of trunks records what the run trained alone records (losses at PACK_RTOL)."""
    assert without(branch, TIMING | BRANCH_ONLY | LOSSES) == without(alone, TIMING | LOSSES)
    assert set(branch) - set(alone) <= BRANCH_ONLY and {"trunk", "shared_tokens", "C_spent"} <= set(branch)
    for key in ("val_loss", "train_loss"):
        assert (branch[key] is None) == (alone[key] is None)
        if alone[key] is not None:
            assert branch[key] == pytest.approx(alone[key], rel=PACK_RTOL), key
    if alone["status"] == "diverged":
        assert f"at step {alone['diverged_at_step']} " in branch["error"]
    a, b = metrics(alone_dir), metrics(branch_dir)
    assert [r["step"] for r in a] == [r["step"] for r in b] and a
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=PACK_RTOL), (x["step"], x["loss"], y["loss"])
        assert y["lr"] == x["lr"]


def trained(make_cfg, tmp_path: Path, trunks: list[list[str]], tokens: list[int]):
    """The runs of `trunks` (one list of overrides each) at `tokens`, trained alone and as branches of one pack
    of trunks: (records alone, records packed, the plans), records by trunk and branch."""

    def cfgs(j: int) -> list:
        return [make_cfg(*SMALL, *trunks[j], f"train.tokens={t}", f"run.id=t{j}r{i}") for i, t in enumerate(tokens)]

    alone = [
        [train_run(c, tmp_path / "alone" / f"t{j}r{i}") for i, c in enumerate(cfgs(j))] for j in range(len(trunks))
    ]
    plans = [
        TrunkPlan(
            f"t{j}",
            tmp_path / "sweep" / "trunks" / f"t{j}",
            cfgs(j),
            [tmp_path / "sweep" / f"t{j}r{i}" for i in range(len(tokens))],
        )
        for j in range(len(trunks))
    ]
    return alone, train_trunks(plans), plans


@pytest.mark.parametrize(
    "trunks,tokens",
    [
        ([[*s, "optim.warmup_steps=4"] for s in STABLE[:2]], TRUNK_TOKENS),
        # the diverging trunk fails between its branch points 10 and 32, packed with stable trunks that warm up alike
        ([*([*s, *SLOW_WARMUP] for s in STABLE[:2]), [*DIVERGING_TRUNK, *SLOW_WARMUP]], [12 * 128, *TRUNK_TOKENS[1:]]),
    ],
    ids=["K2-three-branches", "K3-one-trunk-diverges"],
)
def test_branches_of_packed_trunks_record_what_their_runs_alone_record(make_cfg, tmp_path, trunks, tokens):
    alone, packed, plans = trained(make_cfg, tmp_path, trunks, tokens)
    for j, plan in enumerate(plans):
        for i, (a, b) in enumerate(zip(alone[j], packed[j], strict=True)):
            assert_same_run(a, b, tmp_path / "alone" / f"t{j}r{i}", plan.run_dirs[i])
            assert b["trunk"] == f"t{j}"
            if b["status"] == "completed":
                assert b["shared_tokens"] == branch_point(a["steps"]) * 128
                # packed with the branches of the same length of every other trunk still training there
                others = {f"t{k}r{i}" for k in range(len(plans)) if k != j and packed[k][i]["status"] == "completed"}
                assert set(b.get("packed_with", [])) == others
        trunk = json.loads((plan.dir / TRUNK_RECORD).read_text())
        assert trunk["packed_with"] == [f"t{k}" for k in range(len(plans)) if k != j]
        assert not list(plan.dir.glob("branch_*"))  # removed once their branches finished
    statuses = [[r["status"] for r in rs] for rs in packed]
    if len(trunks) == 3:  # the third trunk diverged after its first branch point; the others went on
        assert statuses == [["completed"] * 3, ["completed"] * 3, ["completed", "diverged", "diverged"]]
    again = train_trunks(plans)  # a rerun trains nothing
    assert all(r.get("skipped") for rs in again for r in rs)
    assert [[r["val_loss"] for r in rs] for rs in again] == [[r["val_loss"] for r in rs] for rs in packed]


def test_trunks_that_differ_in_more_than_optimizer_scalars_are_not_packed(make_cfg, tmp_path):
    plans = [
        TrunkPlan(
            f"t{j}",
            tmp_path / "trunks" / f"t{j}",
            [make_cfg(*SMALL, *o, "train.tokens=2560", f"run.id=r{j}")],
            [tmp_path / f"r{j}"],
        )
        for j, o in enumerate([["optim.warmup_steps=4"], ["optim.warmup_steps=8"]])
    ]
    with pytest.raises(ValueError, match=r"cannot be packed: they differ in optim\.warmup_steps"):
        train_trunks(plans)
    assert not (tmp_path / "r0").exists() and not (tmp_path / "trunks").exists()  # refused before anything was written


def test_a_sweep_packs_the_trunks_of_one_batch_size():
    """sweep.pack with sweep.reuse: trunks that differ only in lr and serve the same budgets share a job, as many as
    sweep.pack allows (auto: where the measured gain pays); other batch sizes never join them."""
    from sweeps.packing import Unit
    from sweeps.trunk_packs import trunk_job_overrides, trunk_units

    points, trunks = reused_points()
    todo = list(range(len(points)))
    seconds = [1.0] * len(points)
    by_batch = {}
    for t in trunks:
        by_batch.setdefault(points[t.members[0]].batch_size, []).append(t)
    assert len(by_batch) == 3 and all(len(ts) == 5 for ts in by_batch.values())  # a 3 x 5 grid at two budgets

    def covers(units: list[Unit]) -> None:  # every trunk in exactly one job, every branch with its trunk
        assert sorted(t for u in units for t in u.trunks) == sorted(t.id for t in trunks)
        assert sorted(i for u in units for i in u.members) == sorted(i for t in trunks for i in t.members)

    off = trunk_units(points, trunks, todo, "off", lambda p, K: 9.0, seconds)
    covers(off)
    assert all(len(u.trunks) == 1 for u in off)
    two = trunk_units(points, trunks, todo, 2, lambda p, K: None, seconds)
    covers(two)
    assert sorted(len(u.trunks) for u in two) == [1, 1, 1, 2, 2, 2, 2, 2, 2]
    by_id = {t.id: t for t in trunks}
    for u in two:
        assert len({points[by_id[t].members[0]].batch_size for t in u.trunks}) == 1
    smallest = min(by_batch)
    auto = trunk_units(points, trunks, todo, "auto", lambda p, K: 2.0 if p.batch_size == smallest else 1.0, seconds)
    covers(auto)
    packs = [u for u in auto if len(u.trunks) > 1]
    assert len(packs) == 1 and set(packs[0].trunks) == {t.id for t in by_batch[smallest]}
    alone = next(u for u in off if u.trunks == packs[0].trunks[:1])
    assert packs[0].speedup == pytest.approx(2.0 * alone.speedup)  # the trunk's reuse, times the measured gain
    job = trunk_job_overrides([], points, by_id, packs[0])
    assert f"run.id={packs[0].trunk}" in job and f"hydra.sweep.subdir=trunks/{packs[0].trunk}" in job
    assert next(o for o in job if o.startswith("+trunk.run_ids=")).count("[") == 1 + 5  # one list per trunk


def reused_points():
    """An hparams grid (3 batches x 5 lrs) at two budgets on one model and lattice, and its trunks (sweeps.reuse)."""
    from omegaconf import OmegaConf

    from model import ModelConfig
    from model.shapes import ShapeRule
    from scaling.base.configs import conf_dir
    from sweeps.laws import Laws
    from sweeps.plan import SweepSettings, plan
    from sweeps.reuse import budget_groups, plan_trunks

    sweep = OmegaConf.load(conf_dir() / "sweep.yaml").sweep
    rule = ShapeRule.from_cfg("width", OmegaConf.to_container(sweep.shape_rules.width))
    base = ModelConfig(n_layer=2, d_model=64, n_head=4, vocab_size=512, seq_len=64, ffn_multiple_of=32)
    s = SweepSettings(lr_points=5, batch_points=3, lattice=True)
    model_C = budget_groups([2e10, 4e10], 1.0)
    points = [p for C in (2e10, 4e10) for p in plan("hparams", C, Laws.deepseek(), rule, base, s, model_C[C])]
    return plan_trunks(points, 0.1, 2000)


KILL_SCRIPT = """
import sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from scaling.run.trunk import TrunkPlan, train_trunks

conf, out, *overrides = sys.argv[1:]
out = Path(out)
tokens = [20 * 128, 40 * 128, 64 * 128]
plans = []
with initialize_config_dir(config_dir=conf, version_base=None):
    for j, lr in enumerate([1e-3, 2e-3]):
        cfgs = [
            compose("run", overrides=[*overrides, f"optim.lr={lr}", f"train.tokens={t}", f"run.id=t{j}r{i}"])
            for i, t in enumerate(tokens)
        ]
        plans.append(TrunkPlan(f"t{j}", out / "trunks" / f"t{j}", cfgs, [out / f"t{j}r{i}" for i in range(3)]))
train_trunks(plans)
"""


@pytest.mark.slow
def test_kill_9_in_a_pack_of_trunks_and_in_its_branches_then_rerun_gives_the_same_records(tmp_path, cache_dir):
    overrides = [
        *TINY_DATA,
        f"data.cache_dir={cache_dir}",
        "train.progress=false",
        *SMALL,
        "optim.warmup_steps=4",
        "train.ckpt_every_s=0",
    ]
    script = tmp_path / "trunks.py"
    script.write_text(KILL_SCRIPT)
    ref = spawn_script(script, tmp_path / "ref", overrides)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    out = tmp_path / "killed"
    trunk_dir = out / "trunks" / "t1"

    def rows(p: Path) -> int:
        return len(p.read_text().splitlines()) if p.exists() else 0

    kills = [
        lambda: rows(trunk_dir / "metrics.jsonl") >= 3,  # in the trunks, before the first branch point (16)
        lambda: rows(out / "t1r1" / "metrics.jsonl") >= 12,  # in the pack of branches at 32 (their decay)
        lambda: (out / "t1r1" / "result.json").exists() and rows(trunk_dir / "metrics.jsonl") >= 14,  # trunks to 52
        lambda: rows(out / "t0r2" / "metrics.jsonl") >= 19,  # in the last pack of branches
    ]
    for k, ready in enumerate(kills):
        assert killed_when(spawn_script(script, out, overrides), ready) == -9, f"kill {k} came too late"
    again = spawn_script(script, out, overrides)
    assert again.wait(timeout=300) == 0, again.stderr.read()
    for name in (f"t{j}r{i}" for j in range(2) for i in range(3)):
        want, got = assert_resumed_alike(tmp_path / "ref" / name, out / name)
        assert got["shared_tokens"] == want["shared_tokens"] and got["trunk"] == want["trunk"]
    for j in range(2):
        assert json.loads((out / "trunks" / f"t{j}" / TRUNK_RECORD).read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_reused_and_packed_hparams_sweep_trains_its_trunks_in_packs_and_reruns_skip(tmp_path, cache_dir):
    cmd = python_m(
        "scaling.sweep",
        "+hparams=[1e9,2e9]",
        *TINY_SWEEP,
        *TINY_HPARAMS_GRID,
        "sweep.pack=3",
        "sweep.extend=0",
        f"sweep.dir={tmp_path / 'sweep'}",
    )
    r = run_cmd(cmd, env=ONE_THREAD, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "trunk packs (sweep.pack with sweep.reuse; scaling.run.trunk): 3 packs of 9 trunks" in r.stdout
    recs = records(tmp_path / "sweep")
    assert len(recs) == 18  # pack and trunk dirs (sweep/trunks/) hold no result.json
    for rid, rec in recs.items():
        assert rec["trunk"] and rec["shared_tokens"] > 0
        twins = {re.sub(r"_lr[^_]+$", "", o) for o in rec["packed_with"]}  # the same budget and batch, other lrs
        assert len(rec["packed_with"]) == 2 and twins == {re.sub(r"_lr[^_]+$", "", rid)}
    again = run_cmd(cmd, env=ONE_THREAD, timeout=900)
    assert again.returncode == 0 and "18 skipped" in again.stdout and "trunk packs" not in again.stdout
    # the smallest lr is the stable one: its branches agree with their runs trained alone at PACK_RTOL
    rid = min(recs, key=lambda k: (recs[k]["lr"], -recs[k]["steps"]))
    from omegaconf import OmegaConf

    alone = train_run(OmegaConf.load(tmp_path / "sweep" / rid / "config.yaml"), tmp_path / "alone")
    assert_same_run(alone, recs[rid], tmp_path / "alone", tmp_path / "sweep" / rid)


def test_each_seed_of_a_point_trains_its_own_trunk_dir():
    """With sweep.seeds=2 the two seeds of a (batch, lr) are two trunks; one id would make them share a trunk dir."""
    from sweeps.reuse import plan_trunks
    from sweeps.seeds import with_seeds

    points, trunks = reused_points()
    seeded, seeded_trunks = plan_trunks(with_seeds(points, 2, 1337), 0.1, 2000)
    ids = [t.id for t in seeded_trunks]
    assert len(ids) == 2 * len(trunks) and len(set(ids)) == len(ids)
    for t in seeded_trunks:  # a trunk serves one seed, and says which
        assert len({seeded[i].seed for i in t.members}) == 1

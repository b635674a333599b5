"""Trunks and branches (scaling.run.trunk): a branch's record and curve equal those of the same run trained alone.

Tolerance: none. A branch runs the very ops of the run trained alone, in the same order, on the same batches: the
trunk's weights and optimizer state are handed over as tensors (never recomputed), and the trunk's snapshot is
restored by copying. So on one machine with one thread the losses are bitwise equal, and the tests compare them
with ==. Only timing keys (wall and train time, tokens/s, start-up) and the branch's own keys differ.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from scaling.base.record import TRUNK_RECORD
from scaling.run.single import train_run
from scaling.run.trunk import branch_point, train_trunk
from tests.helpers import (
    DIVERGING_TRUNK,
    ONE_THREAD,
    ROOT,
    SMALL_MODEL,
    TIMING,
    TINY_DATA,
    TINY_HPARAMS_GRID,
    TINY_SWEEP,
    TRUNK_TOKENS,
    killed_when,
    metrics,
    python_m,
    record,
    records,
    run_cmd,
    spawn_script,
    torchrun_script,
    without,
)

# 2 layers of d 32, 4 x 32-token batches, fixed warmup: 20, 40 and 64 steps in a second or two each.
SMALL = [*SMALL_MODEL, "train.log_every=3", "optim.warmup_steps=4", "optim.lr=3e-3"]
BRANCH_ONLY = {"trunk", "shared_tokens", "C_spent"}  # a branch's own keys: the run alone has none
DIVERGING = [*DIVERGING_TRUNK, "optim.warmup_steps=12"]  # diverging mid-trunk


def same(a: dict, b: dict) -> None:
    assert without(a, TIMING | BRANCH_ONLY) == without(b, TIMING | BRANCH_ONLY)


def alone_and_branched(make_cfg, tmp_path: Path, tokens: list[int], extra: list[str] = ()):
    alone = [
        train_run(make_cfg(*SMALL, *extra, f"train.tokens={t}", f"run.id=r{i}"), tmp_path / "alone" / f"r{i}")
        for i, t in enumerate(tokens)
    ]
    cfgs = [make_cfg(*SMALL, *extra, f"train.tokens={t}", f"run.id=r{i}") for i, t in enumerate(tokens)]
    dirs = [tmp_path / "sweep" / f"r{i}" for i in range(len(tokens))]
    branched = train_trunk(cfgs, dirs, tmp_path / "sweep" / "trunks" / "t", "t")
    return alone, branched, dirs


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_branch_records_what_the_run_trained_alone_records(make_cfg, tmp_path, n):
    alone, branched, dirs = alone_and_branched(make_cfg, tmp_path, TRUNK_TOKENS[:n])
    for i, (a, b) in enumerate(zip(alone, branched)):
        assert b["status"] == "completed" and b["trunk"] == "t"
        same(a, b)
        assert b["shared_tokens"] == branch_point(a["steps"]) * 128
        assert b["C_spent"] == pytest.approx(a["M"] * (a["D"] - b["shared_tokens"]))
        assert metrics(dirs[i]) == [
            {k: v for k, v in r.items() if k != "tokens_per_s"} | {"tokens_per_s": m["tokens_per_s"]}
            for r, m in zip(metrics(tmp_path / "alone" / f"r{i}"), metrics(dirs[i]))
        ]
    trunk = json.loads((tmp_path / "sweep" / "trunks" / "t" / TRUNK_RECORD).read_text())
    assert trunk["status"] == "completed" and trunk["steps"] == max(branch_point(t // 128) for t in TRUNK_TOKENS[:n])
    assert not list((tmp_path / "sweep" / "trunks" / "t").glob("branch_*.pt"))  # removed once their branch finished


def test_a_diverging_trunk_records_every_later_branch_diverged_at_its_step(make_cfg, tmp_path):
    tokens = [12 * 128, 40 * 128, 64 * 128]  # branch points 10, 32, 52; the trunk diverges in between
    alone, branched, _ = alone_and_branched(make_cfg, tmp_path, tokens, DIVERGING)
    assert alone[0]["status"] == "completed", alone[0]  # branched before the divergence
    assert [a["status"] for a in alone[1:]] == ["diverged", "diverged"]
    for a, b in zip(alone, branched):
        same(a, b)
    trunk = json.loads((tmp_path / "sweep" / "trunks" / "t" / TRUNK_RECORD).read_text())
    assert trunk["status"] == "diverged" and trunk["diverged_at_step"] == alone[1]["diverged_at_step"]


def test_finished_branches_are_skipped_and_a_rerun_changes_nothing(make_cfg, tmp_path):
    _, branched, dirs = alone_and_branched(make_cfg, tmp_path, TRUNK_TOKENS[:2])
    cfgs = [make_cfg(*SMALL, f"train.tokens={t}", f"run.id=r{i}") for i, t in enumerate(TRUNK_TOKENS[:2])]
    again = train_trunk(cfgs, dirs, tmp_path / "sweep" / "trunks" / "t", "t")
    assert all(r.get("skipped") for r in again)
    assert [r["val_loss"] for r in again] == [r["val_loss"] for r in branched]


def test_runs_that_differ_in_more_than_their_length_cannot_share_a_trunk(make_cfg, tmp_path):
    cfgs = [
        make_cfg(*SMALL, "train.tokens=2560", "run.id=a"),
        make_cfg(*SMALL, "train.tokens=5120", "run.id=b", "optim.lr=1e-3"),
    ]
    with pytest.raises(ValueError, match=r"cannot share a trunk: they differ in optim\.lr"):
        train_trunk(cfgs, [tmp_path / "a", tmp_path / "b"], tmp_path / "trunks" / "t", "t")
    assert not (tmp_path / "a").exists() and not (tmp_path / "trunks").exists()


KILL_SCRIPT = """
import sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from scaling.run.trunk import train_trunk

conf, out, *overrides = sys.argv[1:]
out = Path(out)
tokens = [20 * 128, 40 * 128, 64 * 128]
with initialize_config_dir(config_dir=conf, version_base=None):
    cfgs = [compose("run", overrides=[*overrides, f"train.tokens={t}", f"run.id=r{i}"]) for i, t in enumerate(tokens)]
train_trunk(cfgs, [out / f"r{i}" for i in range(3)], out / "trunks" / "t", "t")
"""


@pytest.mark.slow
def test_kill_9_in_the_trunk_and_in_a_branch_then_rerun_gives_identical_records(tmp_path, cache_dir):
    overrides = [*TINY_DATA, f"data.cache_dir={cache_dir}", "train.progress=false", *SMALL, "train.ckpt_every_s=0"]
    script = tmp_path / "trunk.py"
    script.write_text(KILL_SCRIPT)
    ref = spawn_script(script, tmp_path / "ref", overrides)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    out = tmp_path / "killed"
    trunk_dir = out / "trunks" / "t"

    def rows(p: Path) -> int:
        return len(p.read_text().splitlines()) if p.exists() else 0

    kills = [
        lambda: rows(trunk_dir / "metrics.jsonl") >= 3,  # in the trunk, before the first branch point (16)
        lambda: rows(out / "r1" / "metrics.jsonl") >= 12,  # in branch r1's decay (its branch point is 32)
        lambda: (out / "r1" / "result.json").exists() and rows(trunk_dir / "metrics.jsonl") >= 14,  # trunk to 52
        lambda: rows(out / "r2" / "metrics.jsonl") >= 19,  # in branch r2's decay
    ]
    for k, ready in enumerate(kills):
        assert killed_when(spawn_script(script, out, overrides), ready) == -9, (
            f"kill {k} came too late: the run had finished"
        )
    again = spawn_script(script, out, overrides)
    assert again.wait(timeout=300) == 0, again.stderr.read()
    for i in range(3):
        want, got = record(tmp_path / "ref" / f"r{i}"), record(out / f"r{i}")
        assert got["status"] == "completed"
        same(want, got)
        assert [r["loss"] for r in metrics(out / f"r{i}")] == [r["loss"] for r in metrics(tmp_path / "ref" / f"r{i}")]
    assert json.loads((trunk_dir / TRUNK_RECORD).read_text())["status"] == "completed"


# Two budgets whose grids (hparams) or profiles (IsoFLOP, sweep.reuse=all) hold the same runs but for their length.
REUSED_SWEEPS = {
    "hparams": ["+hparams=[1e9,2e9]", *TINY_HPARAMS_GRID, "sweep.pack=off"],
    "isoflop": ["+isoflop=[1e9,2e9]", "sweep.n_shapes=3", "sweep.span=1.0", "sweep.shape_rule=width"]
    + ["sweep.reuse=all", "sweep.extend=0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(REUSED_SWEEPS))
def test_a_reused_sweep_through_joblib_records_branches_equal_to_their_runs_alone(tmp_path, cache_dir, kind):
    """sweep.reuse on two budgets, launched by joblib (two workers): the plan names trunks and shared tokens,
    each trunk job trains its branches after their branch points (one job: the ordering holds with any launcher),
    a rerun skips everything, and a branch equals its own config trained alone from step 0."""
    import csv

    from omegaconf import OmegaConf

    from sweeps.reuse import reuse_cost

    cmd = python_m(
        "scaling.sweep",
        *REUSED_SWEEPS[kind],
        *TINY_SWEEP,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"sweep.dir={tmp_path / 'sweep'}",
    )
    r = run_cmd(cmd, env=ONE_THREAD, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = list(csv.DictReader((tmp_path / "sweep" / "plan.csv").open()))
    first = [p for p in plan if not p["added"]]  # the plan the reuse line was printed for (before sweep.extend)
    tokens = f"tokens {reuse_cost(first, 'D'):.3g} with reuse vs {sum(float(p['D']) for p in first):.3g} without"
    assert "reuse (sweep.reuse; scaling.run.trunk):" in r.stdout and tokens in r.stdout
    branched = [p for p in plan if p["trunk"]]
    assert branched and all(int(p["shared_tokens"]) > 0 for p in branched)
    assert all(p["sweep"] == kind for p in branched)
    recs = records(tmp_path / "sweep")
    assert len(recs) == len(plan)  # trunk dirs (sweep/trunks/) hold trunk.json, never result.json
    for p in branched:
        rec = recs[p["run_id"]]
        assert rec["trunk"] == p["trunk"] and rec["shared_tokens"] == int(p["shared_tokens"])
        assert (tmp_path / "sweep" / "trunks" / p["trunk"] / TRUNK_RECORD).exists()
        assert len({rec["budget"] for rec in recs.values() if rec.get("trunk") == p["trunk"]}) >= 2
    again = run_cmd(cmd, env=ONE_THREAD, timeout=900)
    assert again.returncode == 0 and f"{len(plan)} skipped" in again.stdout, again.stdout[-2000:]
    one = next(p for p in branched if recs[p["run_id"]]["status"] == "completed")
    cfg = OmegaConf.load(tmp_path / "sweep" / one["run_id"] / "config.yaml")
    alone = train_run(cfg, tmp_path / "alone")
    same(alone, recs[one["run_id"]])


# ---- a trunk over two ranks: DDP, and FSDP2 (branch points and snapshots as sharded checkpoints) ----


def two_ranks(script_dir: Path, out: Path, overrides: list[str]) -> None:
    """KILL_SCRIPT's trunk and branches trained by 2 gloo ranks to the end."""
    script = script_dir / "trunk.py"
    script.write_text(KILL_SCRIPT)
    r = run_cmd(torchrun_script(script, out, overrides), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_a_trunk_over_two_ranks_gives_the_branches_of_one_process(make_cfg, tmp_path, cache_dir, mode):
    """The tolerances of tests/test_parallel.py (two ranks sum gradients in another fp32 order than one process):
    losses equal to 1e-6 over the first steps, 1e-4 later, final losses 2e-4 (measured here: 1.4e-7 and 5e-8)."""
    cfgs = [make_cfg(*SMALL, f"train.tokens={t}", f"run.id=r{i}") for i, t in enumerate(TRUNK_TOKENS)]
    single = train_trunk(cfgs, [tmp_path / "single" / f"r{i}" for i in range(3)], tmp_path / "single" / "t", "t")
    out = tmp_path / mode
    two_ranks(tmp_path, out, [*TINY_DATA, f"data.cache_dir={cache_dir}", *SMALL, f"train.parallel={mode}"])
    for i, want in enumerate(single):
        got = record(out / f"r{i}")
        assert got["status"] == "completed" and got["parallel"] == mode and got["world_size"] == 2
        for key in ("D", "config_hash", "trunk", "shared_tokens", "C_spent"):
            assert got[key] == want[key], key
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=2e-4)
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=2e-4)
        a, b = metrics(tmp_path / "single" / f"r{i}"), metrics(out / f"r{i}")
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for x, y in zip(a, b, strict=True):
            assert y["loss"] == pytest.approx(x["loss"], rel=1e-6 if x["step"] <= 12 else 1e-4), x["step"]
    trunk_dir = out / "trunks" / "t"
    assert json.loads((trunk_dir / TRUNK_RECORD).read_text())["status"] == "completed"
    assert not list(trunk_dir.glob("branch_*")) and not (trunk_dir / "snapshot").exists()  # nothing left behind


@pytest.mark.slow
def test_an_fsdp_trunk_killed_in_a_branch_resumes_from_its_sharded_checkpoints(tmp_path, cache_dir):
    """kill -9 of torchrun and both ranks while branch r1 trains: the rerun resumes r1 from its own sharded
    checkpoint and the trunk from its sharded branch point, to the records of an uninterrupted run."""
    from tests.test_parallel import _alive, _descendants

    overrides = [*TINY_DATA, f"data.cache_dir={cache_dir}", *SMALL, "train.parallel=fsdp", "train.ckpt_every_s=0"]
    two_ranks(tmp_path, tmp_path / "ref", overrides)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        torchrun_script(tmp_path / "trunk.py", out, overrides),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=os.environ | ONE_THREAD,
    )
    rows = out / "r1" / "metrics.jsonl"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:  # r1's decay (its branch point is 32), checkpointed
        if (out / "r1" / "ckpt_dcp.json").exists() and rows.exists() and len(rows.read_text().splitlines()) >= 12:
            break
        time.sleep(0.05)
    victims = [proc.pid, *_descendants(proc.pid)]  # as a node failure would: no handler runs
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    while any(_alive(pid) for pid in victims):
        time.sleep(0.05)
    assert not (out / "r1" / "result.json").exists(), "killed too late: r1 had finished"
    assert list((out / "trunks" / "t").glob("branch_*/ckpt_dcp.json"))  # the sharded branch point it resumes from
    r = run_cmd(torchrun_script(tmp_path / "trunk.py", out, overrides), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    for i in range(3):
        want, got = record(tmp_path / "ref" / f"r{i}"), record(out / f"r{i}")
        assert got["status"] == "completed" and got["D"] == want["D"] and got["shared_tokens"] == want["shared_tokens"]
        assert got["val_loss"] == pytest.approx(want["val_loss"], abs=1e-6)  # as tests/test_parallel.py's resume
        steps = [row["step"] for row in metrics(out / f"r{i}")]
        assert steps == sorted(set(steps)) == [row["step"] for row in metrics(tmp_path / "ref" / f"r{i}")]
    assert not list((out / "trunks" / "t").glob("branch_*"))

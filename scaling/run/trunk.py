"""Trunks and branches: DeepSeek LLM's "reusing the first stage" of the multi-step schedule (§3.1).

Under the multi-step schedule a run holds its peak learning rate until 80% of its tokens, so the runs of one shape,
batch size, peak lr, warmup, seed and data order that differ only in their length D are, up to their own 0.8·D, the
same computation. A *trunk* trains that shared part once, at constant peak lr, and stops at each *branch point*: the
first step at which a branch's schedule leaves the peak (`branch_point`). There the branch takes the trunk's weights
and optimizer state, trains its two decay stages alone, is evaluated and recorded in its own run directory, exactly as
the run trained alone from step 0 would be (same ops in the same order: tests/test_trunk.py checks equality), plus
`trunk` (the trunk's id), `shared_tokens` (tokens of its D that the trunk trained) and `C_spent` (what it cost itself).
Then the trunk goes on from where it stopped (a snapshot kept in memory) to the next branch point.

One process trains a trunk and all its branches in turn, so with any launcher (basic, joblib, submitit, SLURM arrays)
a branch never starts before its branch point exists: they are one launcher job. A kill anywhere is resumed by the
same job: a branch resumes from its own checkpoint; a branch without one starts from the trunk's checkpoint at its
branch point (`branch_<step>.pt` in the trunk's directory, kept until the branch has its final record); the trunk
resumes from its newest checkpoint. Branches already finished are skipped; each directory (trunk and branches) has
its one-owner lock.

If the trunk diverges at step d, every branch whose branch point lies at or after d is recorded `diverged` at d, with
the record the run trained alone would have written (its window, its `steps_done`); earlier branches were trained
before and are not affected.

The trunk's directory (`<sweep dir>/trunks/<trunk id>/`) holds config.yaml, metrics.jsonl (the shared curve), its
checkpoints and `trunk.json` (never result.json: it is not a run the analysis fits).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from scaling.base.atomic import write_atomic
from scaling.base.lock import RunLocked
from scaling.base.record import FINISHED, METRICS_NAME, config_hash, read_metrics, write_json
from scaling.run.checkpoint import has_checkpoint, sidecar
from scaling.run.lifecycle import RunDir
from scaling.run.loop import LoopSpec, LoopState, Member, run_loop
from scaling.run.setup import RunSetup, loop_spec, setup_run
from scaling.run.single import SingleStepper, train_claimed

log = logging.getLogger(__name__)

TRUNKS_DIR = "trunks"  # below a sweep dir: one directory per trunk
TRUNK_RECORD = "trunk.json"
# Config keys in which the branches of one trunk differ; everything else must be equal.
BRANCH_KEYS = {("train", "tokens"), ("run", "id"), ("run", "sweep"), ("run", "budget")}


def branch_point(steps: int) -> int:
    """The first step (0-based) whose multi-step learning rate is below the peak: step/steps >= 0.8, computed as
    scaling.run.schedule.lr_at computes it (so float rounding cannot put the two one step apart)."""
    s = max(0, int(0.8 * steps) - 2)
    while s < steps and s / steps < 0.8:
        s += 1
    return s


def trunk_key(resolved: dict) -> str:
    """What the branches of one trunk share: the resolved config without train.tokens and run.* (canonical)."""
    shared = {
        g: {k: v for k, v in vs.items() if (g, k) not in BRANCH_KEYS} if isinstance(vs, dict) else vs
        for g, vs in resolved.items()
        if g not in ("trunk", "pack")
    }
    return repr(sorted(shared.items(), key=lambda kv: kv[0]))


def trunk_hash(resolved: dict) -> str:
    """The config hash of a trunk's checkpoints: its branches' config without their length."""
    c = {g: dict(v) if isinstance(v, dict) else v for g, v in resolved.items()}
    c["train"]["tokens"] = None
    return "trunk-" + config_hash(c)


def check_branchable(runs: Sequence[RunSetup]) -> None:
    """One-line ValueError unless the runs can share a trunk: equal but for their length, on the multi-step
    schedule, with one warmup (optim.warmup_steps fixed: a fraction of each run's steps would differ)."""
    first = runs[0]
    for r in runs:
        if trunk_key(r.resolved) != trunk_key(first.resolved):
            diff = sorted(
                f"{g}.{k}"
                for g in r.resolved
                if isinstance(r.resolved[g], dict)
                for k in r.resolved[g]
                if (g, k) not in BRANCH_KEYS and r.resolved[g].get(k) != (first.resolved.get(g) or {}).get(k)
            )
            raise ValueError(
                f"runs {first.record['run_id']} and {r.record['run_id']} cannot share a trunk: they differ in "
                f"{', '.join(diff) or 'their config'}; branches differ only in train.tokens and run.*"
            )
        if r.optim.schedule != "multistep":
            raise ValueError(f"optim.schedule={r.optim.schedule}: only the multi-step schedule has a stage to reuse")
    warmups = {loop_spec(r).warmup for r in runs}
    if len(warmups) > 1:
        raise ValueError(
            f"the branches of a trunk would warm up for {sorted(warmups)} steps; set optim.warmup_steps so that they "
            f"warm up alike (sweep.reuse does)"
        )
    if first.parallel == "fsdp":
        raise ValueError(
            "trunk/branch training keeps a branch point in memory, which FSDP2 shards; use DDP or sweep.reuse=off"
        )


class TrunkDir(RunDir):
    """A trunk's directory: a run directory whose record is trunk.json (the analysis never reads it as a run)."""

    def __init__(self, run: RunSetup, branches: list[str]):
        super().__init__(run, {"branches": branches})

    def finish(self, state: LoopState, val_loss, val_tokens, bpb) -> dict:
        return self.write_trunk(state)

    def write_trunk(self, state: LoopState) -> dict:
        record = {
            "trunk": self.run_id,
            "status": state.status if state.status == "diverged" else "completed",
            "error": state.reason,
            "steps": state.step,
            "tokens": state.step * self.run.batch_size,
            "C_spent": self.run.record["M"] * state.step * self.run.batch_size,
            "diverged_at_step": state.diverged_at_step,
            "config_hash": self.run.config_hash,
        } | self.extra
        if self.is_main:
            write_json(self.path / TRUNK_RECORD, record)
        self.close()
        self.result = record
        return record

    def fail(self, e: BaseException) -> None:
        if self.is_main:
            try:
                write_json(self.path / TRUNK_RECORD, {"trunk": self.run_id, "status": "failed", "error": f"{e}"})
            except OSError as w:
                log.error("could not record the failure in %s: %s", self.path / TRUNK_RECORD, w)


@dataclasses.dataclass
class Branch:
    index: int  # in the job's list of runs
    run: RunSetup
    dir: RunDir
    spec: LoopSpec
    at: int  # its branch point (step)


def train_trunk(cfgs: Sequence[DictConfig], run_dirs: Sequence[Path], trunk_dir: Path, trunk_id: str) -> list[dict]:
    """Train (or resume, or skip) the runs described by cfgs in run_dirs as branches of one trunk in trunk_dir;
    returns their records in order (finished ones marked skipped, ones another process owns skipped with the reason)."""
    results: dict[int, dict] = {}
    setups: dict[int, RunSetup] = {}
    for i, (cfg, d) in enumerate(zip(cfgs, run_dirs, strict=True)):
        s = setup_run(cfg, Path(d))
        if isinstance(s, dict):
            results[i] = s
        else:
            setups[i] = s
    if setups:
        check_branchable(list(setups.values()))
    order = sorted(setups, key=lambda i: setups[i].steps)
    branches: list[Branch] = []
    trunk: TrunkDir | None = None
    try:
        if order:
            longest = setups[order[-1]]
            trunk = TrunkDir(
                _trunk_setup(longest, trunk_dir, trunk_id), [str(setups[i].record["run_id"]) for i in order]
            )
            trunk.claim()  # RunLocked: another process trains this trunk (and so its branches)
        for i in order:
            rd = RunDir(setups[i], {"trunk": trunk_id})
            try:
                done = rd.claim()
            except RunLocked as e:
                results[i] = {"run_id": str(setups[i].record["run_id"]), "skipped": True, "error": str(e)}
                continue
            if done is not None:
                results[i] = done
                continue
            branches.append(Branch(i, setups[i], rd, loop_spec(setups[i]), branch_point(setups[i].steps)))
        if branches:
            assert trunk is not None
            _train_branches(trunk, branches, results)
    except Exception as e:
        for b in branches:
            if b.dir.result is None:
                b.dir.fail(e)
        if trunk is not None and trunk.result is None:
            trunk.fail(e)
        raise
    finally:
        for b in branches:
            b.dir.release()
        if trunk is not None:
            trunk.release()
    return [results[i] for i in range(len(cfgs))]


def _trunk_setup(longest: RunSetup, trunk_dir: Path, trunk_id: str) -> RunSetup:
    """The trunk as a run: the longest branch's config (its lr is the peak up to every branch point) under the
    trunk's own id, directory and hash."""
    resolved = {g: dict(v) if isinstance(v, dict) else v for g, v in longest.resolved.items()}
    resolved["run"] = dict(resolved["run"]) | {"id": trunk_id, "sweep": "trunk"}
    return dataclasses.replace(
        longest,
        resolved=resolved,
        run_dir=trunk_dir,
        config_hash=trunk_hash(longest.resolved),
        record=longest.record | {"run_id": trunk_id},
    )


def _train_branches(trunk: TrunkDir, branches: list[Branch], results: dict[int, dict]) -> None:
    run = trunk.run
    spec = loop_spec(run)
    stepper = SingleStepper(run, spec)
    state = _resume_trunk(stepper, trunk)
    trunk.open(state)
    member = Member(dir=trunk, spec=spec, state=state)
    for b in sorted(branches, key=lambda b: b.at):
        b.dir.extra |= _shared(b, b.at)
        if has_checkpoint(b.run.run_dir, b.run.config_hash):  # killed mid-branch: resume it, the trunk waits
            with _kept(stepper):
                _train_branch(b, stepper.resume(b.run.run_dir, b.run.config_hash), stepper)
        elif member.state.status == "diverged" or member.state.step <= b.at:
            if member.state.status != "diverged" and member.state.step < b.at:
                if run_loop([member], stepper, stepper.micro_batch, run.dist_env, run.device, stop_at=b.at):
                    stepper.save(0, member, name=branch_ckpt(b.at))  # so that a kill during the branch resumes here
            if member.state.status == "diverged":
                _record_diverged(trunk, member.state, b)
            else:
                with _kept(stepper):
                    _copy_curve(trunk.path, b.run.run_dir, b.at, b.dir.is_main)
                    start = dataclasses.replace(member.state, wall_time_s=trunk.wall_time())
                    _train_branch(b, start, stepper)
        elif has_checkpoint(trunk.path, run.config_hash, branch_ckpt(b.at)):  # the trunk went on while it was busy
            with _kept(stepper):
                start = stepper.resume(trunk.path, run.config_hash, branch_ckpt(b.at))
                _copy_curve(trunk.path, b.run.run_dir, b.at, b.dir.is_main)
                _train_branch(b, start, stepper)
        else:  # the trunk passed this branch point while another process held the branch: train it alone
            for key in ("trunk", "shared_tokens", "C_spent"):
                b.dir.extra.pop(key, None)
            train_claimed(b.run, b.dir)
        record = b.dir.result
        assert record is not None
        results[b.index] = record
        if record.get("status") in FINISHED and all(o.at != b.at or o.dir.result is not None for o in branches):
            for name in (branch_ckpt(b.at), sidecar(branch_ckpt(b.at))):
                (trunk.path / name).unlink(missing_ok=True)
    if member.state.status != "diverged":
        trunk.write_trunk(member.state)


@contextlib.contextmanager
def _kept(stepper: SingleStepper) -> Iterator[None]:
    """The trunk's weights and optimizer state, put back after a branch has used the model."""
    snap = stepper.snapshot()
    yield
    stepper.restore(snap)


def _train_branch(b: Branch, start: LoopState, stepper: SingleStepper) -> None:
    """Train branch b from `start` (the trunk at its branch point, or its own checkpoint) to its final record."""
    b.dir.open(start)
    run_loop([Member(b.dir, b.spec, start)], stepper, stepper.micro_batch, b.run.dist_env, b.run.device)


def _record_diverged(trunk: TrunkDir, tstate: LoopState, b: Branch) -> None:
    """The record of branch b when the trunk diverged at or before its branch point: what the run trained alone
    would have recorded, which notices the divergence at the end of its own logging window."""
    d = cast(int, tstate.diverged_at_step)
    spec = b.spec
    w = d
    while not (w % spec.log_every == 0 or w == spec.steps or (spec.eval_every and w % spec.eval_every == 0)):
        w += 1
    state = dataclasses.replace(tstate, step=w)
    _copy_curve(trunk.path, b.run.run_dir, d - 1, b.dir.is_main)
    b.dir.extra |= {"shared_tokens": w * b.run.batch_size, "C_spent": 0.0}  # all it trained was the trunk's
    b.dir.open(state)
    b.dir.finish(state, None, None, None)


def _shared(b: Branch, step: int) -> dict[str, Any]:
    shared = step * b.run.batch_size
    return {"shared_tokens": shared, "C_spent": b.run.record["M"] * (b.run.record["D"] - shared)}


def _copy_curve(trunk_dir: Path, run_dir: Path, upto: int, is_main: bool) -> None:
    """A branch's metrics.jsonl starts with the trunk's rows up to its branch point: the whole curve of the run."""
    if not is_main:
        return
    rows, _ = read_metrics(trunk_dir / METRICS_NAME)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / METRICS_NAME, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= upto))


def branch_ckpt(step: int) -> str:
    """The trunk's checkpoint at a branch point, kept until every branch from it has its final record."""
    return f"branch_{step:09d}.pt"


def _resume_trunk(stepper: SingleStepper, trunk: TrunkDir) -> LoopState:
    """The trunk's newest state: its periodic checkpoint or a kept branch point, whichever is further."""
    run = trunk.run
    state = stepper.resume(trunk.path, run.config_hash)
    kept = [int(p.stem.split("_")[1]) for p in trunk.path.glob("branch_*.pt") if p.stem.split("_")[1].isdigit()]
    newest = max((s for s in kept if has_checkpoint(trunk.path, run.config_hash, branch_ckpt(s))), default=-1)
    if newest > state.step:
        return stepper.resume(trunk.path, run.config_hash, branch_ckpt(newest))
    return state


def trunk_job(cfg: DictConfig, sweep_dir: Path) -> list[dict]:
    """The sweep's task for a trunk: cfg is the trunk job's config with `trunk.run_ids`, `trunk.tokens` and
    `trunk.budgets` (one per branch); each branch is cfg with its own run.id, train.tokens and run.budget, trained in
    sweep_dir/<run id>; the trunk itself in sweep_dir/trunks/<run.id of the job>."""
    run_ids, tokens, budgets = list(cfg.trunk.run_ids), list(cfg.trunk.tokens), list(cfg.trunk.budgets)
    if not run_ids or not (len(run_ids) == len(tokens) == len(budgets)):
        raise ValueError("trunk.run_ids, trunk.tokens and trunk.budgets must be non-empty and of one length")
    base: dict[str, Any] = cast(dict, OmegaConf.to_container(cfg, resolve=False))
    base.pop("trunk", None)
    cfgs = []
    for rid, tok, budget in zip(run_ids, tokens, budgets, strict=True):
        c = OmegaConf.create(base)
        c.run.id, c.train.tokens, c.run.budget = rid, tok, budget
        cfgs.append(c)
    trunk_id = str(cfg.run.id)
    return train_trunk(cfgs, [sweep_dir / rid for rid in run_ids], sweep_dir / TRUNKS_DIR / trunk_id, trunk_id)

"""Trunks and branches: DeepSeek LLM's "reusing the first stage" of the multi-step schedule (§3.1).

Under the multi-step schedule a run holds its peak learning rate until 80% of its tokens, so the runs of one shape,
batch size, peak lr, warmup, seed and data order that differ only in their length D are, up to their own 0.8·D, the
same computation. A *trunk* trains that shared part once, at constant peak lr, and stops at each *branch point*: the
first step at which a branch's schedule leaves the peak (`branch_point`). There the branch takes the trunk's weights
and optimizer state, trains its two decay stages alone, is evaluated and recorded in its own run directory, exactly as
the run trained alone from step 0 would be (same ops in the same order: tests/test_trunk.py checks equality), plus
`trunk` (the trunk's id), `shared_tokens` (tokens of its D that the trunk trained) and `C_spent` (what it cost itself).
Then the trunk goes on from where it stopped (a snapshot: in memory, or a sharded checkpoint for FSDP2) to the next
branch point.

The trunk trains on a Stepper (scaling.run.loop): one trunk on a SingleStepper (one device, or one run over DDP/FSDP2
ranks), several trunks that differ only in optimizer scalars on one PackStepper (scaling.run.pack), their branches at
one branch point then trained as one pack too (`train_trunks`). The logic here is the same for both: the trunks are
the stepper's rows.

One process trains a trunk (or a pack of them) and all its branches in turn, so with any launcher (basic, joblib,
submitit, SLURM arrays) a branch never starts before its branch point exists: they are one launcher job. A kill
anywhere is resumed by the same job: a branch resumes from its own checkpoint; a branch without one starts from the
trunk's checkpoint at its branch point (`branch_<step>.pt` in the trunk's directory, or `branch_<step>/` sharded, kept
until the branch has its final record); the trunk resumes from its newest checkpoint. Branches already finished are
skipped; each directory (trunk and branches) has its one-owner lock.

If the trunk diverges at step d, every branch whose branch point lies at or after d is recorded `diverged` at d, with
the record the run trained alone would have written (its window, its `steps_done`); earlier branches were trained
before and are not affected. In a pack the trunk leaves it and the others go on.

The trunk's directory (`<sweep dir>/trunks/<trunk id>/`) holds config.yaml, metrics.jsonl (the shared curve), its
checkpoints and `trunk.json` (never result.json: it is not a run the analysis fits).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from omegaconf import DictConfig, OmegaConf

from scaling.base.atomic import write_atomic
from scaling.base.lock import RunLocked
from scaling.base.record import (
    FINISHED,
    METRICS_NAME,
    TRUNK_RECORD,
    TRUNKS_DIR,
    config_hash,
    read_metrics,
    write_json,
)
from scaling.run.checkpoint import CKPT_NAME, has_checkpoint
from scaling.run.lifecycle import RunDir
from scaling.run.loop import LoopSpec, LoopState, Member, Stepper, run_loop
from scaling.run.pack.train import PackStepper, Start, by_step, check_packable, fresh, pack_template, read_start
from scaling.run.setup import RunSetup, differing_keys, loop_spec, setup_run, shared_key
from scaling.run.single import SingleStepper, train_claimed
from scaling.run.step import Batch

log = logging.getLogger(__name__)

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
    return shared_key(resolved, BRANCH_KEYS)


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
            diff = differing_keys(first.resolved, r.resolved, BRANCH_KEYS)
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
    index: int  # in its trunk's list of runs
    run: RunSetup
    dir: RunDir
    spec: LoopSpec
    at: int  # its branch point (step)


@dataclasses.dataclass
class Row:
    """A trunk this process trains, the branches it serves that are still to do, and the loop's view of it."""

    dir: TrunkDir
    results: dict[int, dict]  # its runs' records by index, the branches' once they have one
    branches: list[Branch] = dataclasses.field(default_factory=list)
    member: Member | None = None  # once its start is known


@dataclasses.dataclass(frozen=True)
class TrunkPlan:
    """One trunk of a job: its id and directory, and its runs (configs and run dirs), the branches."""

    id: str
    dir: Path
    cfgs: Sequence[DictConfig]
    run_dirs: Sequence[Path]


class TrunkStepper(Stepper, Protocol):
    """What a trunk needs of its Stepper besides the loop's: checkpoints by name (branch points), read into a row,
    and the batches. SingleStepper (one trunk, one device or DDP/FSDP2 ranks) and PackStepper (a pack of trunks)."""

    def micro_batch(self, step: int, micro: int) -> Batch: ...

    def save(self, k: int, member: Member, name: str = CKPT_NAME) -> None: ...

    def load(self, k: int, run_dir: Path, config_hash: str, name: str = CKPT_NAME) -> LoopState: ...

    def has(self, run_dir: Path, config_hash: str, name: str = CKPT_NAME) -> bool: ...

    def drop(self, run_dir: Path, name: str) -> None: ...


def train_trunk(cfgs: Sequence[DictConfig], run_dirs: Sequence[Path], trunk_dir: Path, trunk_id: str) -> list[dict]:
    """Train (or resume, or skip) the runs described by cfgs in run_dirs as branches of one trunk in trunk_dir;
    returns their records in order (finished ones marked skipped, ones another process owns skipped with the reason)."""
    return train_trunks([TrunkPlan(trunk_id, trunk_dir, cfgs, run_dirs)])[0]


def train_trunks(plans: Sequence[TrunkPlan]) -> list[list[dict]]:
    """Train the trunks of `plans` with their branches: one trunk alone (one device, or DDP/FSDP2 ranks), several
    as one pack (scaling.run.pack: they may differ only in lr, weight decay and clipping, and train one process on
    one device); each trunk's branches at one branch point and length train as a pack too. Returns each trunk's
    records in the order of its runs."""
    results: list[dict[int, dict]] = [{} for _ in plans]
    setups = [_setups(plan, res) for plan, res in zip(plans, results, strict=True)]
    _check_together(plans, setups)
    rows: list[Row] = []
    try:
        for plan, ss, res in zip(plans, setups, results, strict=True):
            row = _claim(plan, ss, res)
            if row is not None:
                rows.append(row)
        if len(plans) == 1 and rows:
            _train_alone(rows[0])
        elif rows:
            _train_packed(rows)
    except Exception as e:
        for row in rows:
            for b in row.branches:
                if b.dir.result is None:
                    b.dir.fail(e)
            if row.dir.result is None:
                row.dir.fail(e)
        raise
    finally:
        for row in rows:
            for b in row.branches:
                b.dir.release()
            row.dir.release()
    for row in rows:
        for b in row.branches:
            row.results[b.index] = cast(dict, b.dir.result)
    return [[res[i] for i in range(len(plan.cfgs))] for plan, res in zip(plans, results, strict=True)]


def _setups(plan: TrunkPlan, results: dict[int, dict]) -> dict[int, RunSetup]:
    """The plan's runs still to train, validated (nothing written); finished ones go to results, marked skipped."""
    setups: dict[int, RunSetup] = {}
    for i, (cfg, d) in enumerate(zip(plan.cfgs, plan.run_dirs, strict=True)):
        s = setup_run(cfg, Path(d))
        if isinstance(s, dict):
            results[i] = s
        else:
            setups[i] = s
    if setups:
        check_branchable(list(setups.values()))
    return setups


def _check_together(plans: Sequence[TrunkPlan], setups: Sequence[dict[int, RunSetup]]) -> None:
    """Several trunks train as one pack: one-line ValueError unless they could (before anything is written)."""
    todo = [(plan, ss) for plan, ss in zip(plans, setups, strict=True) if ss]
    if len(plans) > 1 and todo:
        check_packable([_trunk_setup(ss[max(ss, key=lambda i: ss[i].steps)], p.dir, p.id) for p, ss in todo])


def _claim(plan: TrunkPlan, setups: dict[int, RunSetup], results: dict[int, dict]) -> Row | None:
    """Lock the trunk's directory and its branches' still to do; None when nothing is left for this process (the
    trunk owned by another one: its branches are skipped with the reason)."""
    if not setups:
        return None
    order = sorted(setups, key=lambda i: setups[i].steps)
    longest = setups[order[-1]]
    trunk = TrunkDir(_trunk_setup(longest, plan.dir, plan.id), [str(setups[i].record["run_id"]) for i in order])
    try:
        trunk.claim()
    except RunLocked as e:
        for i in order:
            results[i] = {"run_id": str(setups[i].record["run_id"]), "skipped": True, "error": str(e)}
        return None
    row = Row(trunk, results)
    for i in order:
        rd = RunDir(setups[i], {"trunk": plan.id})
        try:
            done = rd.claim()
        except RunLocked as e:
            results[i] = {"run_id": str(setups[i].record["run_id"]), "skipped": True, "error": str(e)}
            continue
        if done is not None:
            results[i] = done
            continue
        row.branches.append(Branch(i, setups[i], rd, loop_spec(setups[i]), branch_point(setups[i].steps)))
    if not row.branches:
        trunk.release()
        return None
    return row


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


def _train_alone(row: Row) -> None:
    """One trunk on its own Stepper (one device, or one run over DDP/FSDP2 ranks), from its newest checkpoint."""
    run = row.dir.run
    spec = loop_spec(run)
    stepper = SingleStepper(run, spec)
    state = _newest(
        row.dir, stepper.has, lambda name: stepper.load(0, row.dir.path, run.config_hash, name), lambda s: s.step
    )
    row.dir.open(state)
    row.member = Member(dir=row.dir, spec=spec, state=state)
    _train_rows([row], stepper)


def _train_packed(rows: list[Row]) -> None:
    """Several trunks as one pack: each from its newest checkpoint; trunks that a kill left at different steps
    train as separate packs, one after the other."""
    first = rows[0].dir.run
    template, opt, init = pack_template(first)
    starts: dict[int, Start] = {}
    for j, row in enumerate(rows):
        read = functools.partial(read_start, template, opt, row.dir.path, row.dir.run.config_hash)
        starts[j] = _newest(row.dir, has_checkpoint, read, lambda s: s.state.step if s else 0) or fresh(init)
    for group in by_step(starts):
        others = [rows[j].dir.run_id for j in group]
        members = []
        for j in group:
            row = rows[j]
            row.dir.extra["packed_with"] = [t for t in others if t != row.dir.run_id]
            row.dir.open(starts[j].state)
            row.member = Member(dir=row.dir, spec=loop_spec(row.dir.run), state=starts[j].state)
            members.append(row.member)
        _train_rows([rows[j] for j in group], PackStepper(members, [starts[j] for j in group], template, opt))


T = TypeVar("T")


def _newest(
    trunk: TrunkDir, has: Callable[[Path, str, str], bool], load: Callable[[str], T], step: Callable[[T], int]
) -> T:
    """The trunk's newest state, loaded by name: its periodic checkpoint or a kept branch point, whichever is
    further."""
    own = load(CKPT_NAME)
    kept = [s for s in _kept_points(trunk.path) if has(trunk.path, trunk.run.config_hash, branch_ckpt(s))]
    newest = max(kept, default=-1)
    return load(branch_ckpt(newest)) if newest > step(own) else own


def _kept_points(trunk_dir: Path) -> list[int]:
    """Steps of the branch points kept in the trunk's dir (branch_<step>.pt files, or directories when sharded)."""
    found = (re.fullmatch(r"branch_(\d+)(\.pt)?", p.name) for p in trunk_dir.glob("branch_*"))
    return sorted({int(m.group(1)) for m in found if m})


def _train_rows(rows: list[Row], stepper: TrunkStepper) -> None:
    """Train trunks (the stepper's rows, all at one step) to each branch point of their branches, and the branches
    from there: a branch killed mid-way resumes from its own checkpoint (the trunk waits), the others start from
    the trunk, together as a pack when several trunks reach the point, each alone when the trunk passed its point."""
    active = list(rows)
    for at in sorted({b.at for r in rows for b in r.branches}):
        here = [(r, b) for r in rows for b in r.branches if b.at == at]
        for _, b in here:
            b.dir.extra |= _shared(b, at)
        waiting = []
        for r, b in here:
            if stepper.has(b.run.run_dir, b.run.config_hash):  # killed mid-branch: resume it, the trunk waits
                _from_file(stepper, active, r, b, b.run.run_dir, b.run.config_hash, CKPT_NAME)
            else:
                waiting.append((r, b))
        if any(_state(r).status != "diverged" and _state(r).step < at for r, _ in waiting):
            active = _advance(active, stepper, at, [r for r, _ in waiting])
        live = []
        for r, b in waiting:
            state = _state(r)
            if state.status == "diverged":
                _record_diverged(r.dir, state, b)
            elif state.step == at:
                live.append((r, b))
            elif stepper.has(r.dir.path, r.dir.run.config_hash, branch_ckpt(at)):  # the trunk went on while it was busy
                _from_file(stepper, active, r, b, r.dir.path, r.dir.run.config_hash, branch_ckpt(at))
            else:  # the trunk passed this branch point while another process held the branch: train it alone
                _alone(b)
        for group in _same_length(live):
            _train_live(stepper, active, group)
        for r in rows:
            if any(b.at == at for b in r.branches) and all(_finished(b) for b in r.branches if b.at == at):
                stepper.drop(r.dir.path, branch_ckpt(at))
    for r in active:
        if _state(r).status != "diverged":
            r.dir.write_trunk(_state(r))


def _state(row: Row) -> LoopState:
    assert row.member is not None
    return row.member.state


def _finished(b: Branch) -> bool:
    return b.dir.result is not None and b.dir.result.get("status") in FINISHED


def _advance(active: list[Row], stepper: TrunkStepper, at: int, waiting: list[Row]) -> list[Row]:
    """The trunks (all at one step) trained on to branch point `at`; a trunk that diverges is recorded and leaves.
    Each one with a branch waiting there keeps its state at `at` on disk, so that a kill during the branch resumes
    from it. Returns the trunks still training, in row order."""
    run = active[0].dir.run
    left = run_loop([_member(r) for r in active], stepper, stepper.micro_batch, run.dist_env, run.device, stop_at=at)
    active = [r for r in active if any(r.member is m for m in left)]
    for k, r in enumerate(active):
        if any(r is w for w in waiting):
            stepper.save(k, _member(r), name=branch_ckpt(at))
    return active


def _member(row: Row) -> Member:
    assert row.member is not None
    return row.member


def _same_length(live: list[tuple[Row, Branch]]) -> list[list[tuple[Row, Branch]]]:
    """Branches that start at one branch point and end at one step: they share every step, so they train as one
    pack (of one, for a single trunk)."""
    groups: dict[int, list[tuple[Row, Branch]]] = {}
    for r, b in live:
        groups.setdefault(b.spec.steps, []).append((r, b))
    return [groups[s] for s in sorted(groups)]


def _train_live(stepper: TrunkStepper, active: list[Row], group: list[tuple[Row, Branch]]) -> None:
    """Branches taking their trunks' weights and optimizer state at the branch point (the stepper's rows, in
    memory), trained to their final records; the trunks' state is put back after."""
    with _kept(stepper):
        stepper.keep([cast(int, _row_index(active, r)) for r, _ in group])
        members = []
        for r, b in group:
            if len(group) > 1:
                b.dir.extra["packed_with"] = [str(o.run.record["run_id"]) for _, o in group if o is not b]
            _copy_curve(r.dir.path, b.run.run_dir, b.at, b.dir.is_main)
            start = dataclasses.replace(_state(r), wall_time_s=0.0)  # a branch's wall time is its own part's
            b.dir.open(start)
            members.append(Member(b.dir, b.spec, start))
        run = group[0][1].run
        run_loop(members, stepper, stepper.micro_batch, run.dist_env, run.device)


def _from_file(
    stepper: TrunkStepper, active: list[Row], r: Row, b: Branch, run_dir: Path, config_hash: str, name: str
) -> None:
    """Branch b from a checkpoint on disk (its own, or its trunk's at its branch point), in its trunk's row (the
    trunk's state is put back after); alone from step 0 when that cannot be read."""
    k = _row_index(active, r)
    if k is not None:
        with _kept(stepper):
            stepper.keep([k])
            start = stepper.load(0, run_dir, config_hash, name)
            if start.step:
                if name != CKPT_NAME:  # from the trunk: the branch's curve starts with the trunk's, its clock at 0
                    _copy_curve(r.dir.path, b.run.run_dir, b.at, b.dir.is_main)
                    start = dataclasses.replace(start, wall_time_s=0.0)
                b.dir.open(start)
                run_loop([Member(b.dir, b.spec, start)], stepper, stepper.micro_batch, b.run.dist_env, b.run.device)
                return
    _alone(b)


def _row_index(active: list[Row], row: Row) -> int | None:
    return next((k for k, r in enumerate(active) if r is row), None)


def _alone(b: Branch) -> None:
    """Branch b trained as the run alone (from its own checkpoint, else from step 0): not a branch any more."""
    for key in ("trunk", "shared_tokens", "C_spent"):
        b.dir.extra.pop(key, None)
    train_claimed(b.run, b.dir)


@contextlib.contextmanager
def _kept(stepper: TrunkStepper) -> Iterator[None]:
    """The trunks' weights and optimizer state, put back after branches have used the stepper's rows."""
    snap = stepper.snapshot()
    yield
    stepper.restore(snap)


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


def trunk_job(cfg: DictConfig, sweep_dir: Path) -> list[dict]:
    """The sweep's task for a trunk, or a pack of trunks: cfg is the job's config with `trunk.run_ids`,
    `trunk.tokens` and `trunk.budgets` (one per branch); each branch is cfg with its own run.id, train.tokens and
    run.budget, trained in sweep_dir/<run id>; the trunk in sweep_dir/trunks/<run.id of the job>. A pack of K
    trunks adds `trunk.ids` and `trunk.lrs` (one per trunk: its id and peak lr) and gives `trunk.run_ids` as K lists,
    one per trunk, over the same tokens and budgets. Returns every branch's record, trunk after trunk."""
    job = cfg.trunk
    tokens, budgets = list(job.tokens), list(job.budgets)
    packed = "ids" in job
    ids = [str(t) for t in job.ids] if packed else [str(cfg.run.id)]
    lrs = [float(x) for x in job.lrs] if packed else [float(cfg.optim.lr)]
    run_ids = [[str(r) for r in rs] for rs in job.run_ids] if packed else [[str(r) for r in job.run_ids]]
    if not tokens or not (len(tokens) == len(budgets)) or not (len(ids) == len(lrs) == len(run_ids)):
        raise ValueError(
            "trunk.tokens and trunk.budgets must be non-empty and of one length, and trunk.ids, "
            "trunk.lrs and trunk.run_ids (one list per trunk) of another"
        )
    if any(len(rs) != len(tokens) for rs in run_ids):
        raise ValueError("each trunk's trunk.run_ids must name one run per entry of trunk.tokens")
    base: dict[str, Any] = cast(dict, OmegaConf.to_container(cfg, resolve=False))
    base.pop("trunk", None)
    plans = []
    for tid, lr, rids in zip(ids, lrs, run_ids, strict=True):
        cfgs = []
        for rid, tok, budget in zip(rids, tokens, budgets, strict=True):
            c = OmegaConf.create(base)
            c.run.id, c.train.tokens, c.run.budget = rid, tok, budget
            if packed:
                c.optim.lr = lr
            cfgs.append(c)
        plans.append(TrunkPlan(tid, sweep_dir / TRUNKS_DIR / tid, cfgs, [sweep_dir / rid for rid in rids]))
    return [r for records in train_trunks(plans) for r in records]

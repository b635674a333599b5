"""The progress of sweeps and studies read from their run directories (what `python -m scaling.status` prints): each
run's state (sweeps.run_state), its sweep's trunks, per-sweep counts and an ETA. Reads files only, never the
launcher."""

from __future__ import annotations

import csv
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from scaling.base.cli import fmt_seconds
from scaling.base.record import TRUNKS_DIR
from scaling.base.safe_read import NotARegularFile, open_regular

from .run_state import DONE, RUN_FILES, Run, num, run_state, trunk_states

PROG = "python -m scaling.status"
STATES = ("completed", "running", "stalled", "interrupted", "diverged", "failed", "not started", "problem")
TO_TRAIN = ("not started", "interrupted", "stalled", "failed")  # states whose work is still to do
MAX_DEPTH = 6  # runs/<study>/<stage>/<run>: a few levels, never the run dirs' own subdirectories
# trunks/: a sweep's trunk dirs (scaling.run.trunk) are not runs (trunk_states reads them from the plan); their
# branches are, in the sweep dir itself.
SKIP_DIRS = {"analysis", "plots", "wandb", "mlruns", "tb", "__pycache__", TRUNKS_DIR}
PLAN_CAP = 16 * 2**20  # a plan is ~250 bytes a row: 16 MiB is ~80,000 runs, far past any real grid
# the columns the view uses
PLAN_KEYS = ("run_id", "steps", "batch_size", "D", "lr", "est_seconds", "trunk", "shared_tokens")
WALK_CAP = 20_000  # directories without run files walked before the view stops: not a runs directory


@dataclass
class Sweep:
    path: Path
    runs: list[Run] = field(default_factory=list)
    planned: int | None = None  # rows of plan.csv, None without one
    notes: list[str] = field(default_factory=list)  # plan.csv problems, run dirs outside the plan
    plan_unusable: bool = False  # plan.csv exists but cannot be read: not-started runs are unknown
    eta_s: float | None = None
    work_left_s: float | None = None
    trunks: list[Run] = field(default_factory=list)  # the trunks its plan names (scaling.run.trunk)

    def counts(self) -> Counter[str]:
        return Counter(r.state for r in self.runs)


# --------------------------------------------------------------------------------------------------- discovery
class NotARunsDir(ValueError):
    """The root given to the view is not a runs directory (the filesystem's root, or a tree too big to walk)."""


def find_run_dirs(root: Path) -> dict[Path, list[tuple[str, str, set[str]]]]:
    """{sweep dir: [(run dir, its name, its file names)]}, including sweep dirs that only have a plan.csv so far.

    Symlinks below root are not followed (a link to / inside a runs dir is not a tree to walk); root itself may
    be a link (runs -> /scratch/runs) but not to /; after WALK_CAP directories without run files the walk stops
    with NotARunsDir instead of listing a whole filesystem."""
    if Path(root).resolve() == Path(Path(root).resolve().anchor):
        raise NotARunsDir(f"{root} is the filesystem's root, not a runs directory; give the directory a sweep writes")
    sweeps: dict[Path, list[tuple[str, str, set[str]]]] = {}
    walked = 0

    def walk(d: Path, depth: int) -> None:
        nonlocal walked
        walked += 1
        if walked > WALK_CAP:
            raise NotARunsDir(
                f"{root}: walked {WALK_CAP:,} directories without run files below it; it is not a runs directory "
                f"(give the directory a sweep or study writes, e.g. runs/)"
            )
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        names = {e.name for e in entries}
        if "plan.csv" in names:
            sweeps.setdefault(d, [])
        for e in entries:
            if e.name.startswith(".") or e.name in SKIP_DIRS or not e.is_dir(follow_symlinks=False):
                continue
            try:
                sub = set(os.listdir(e.path))
            except OSError:
                continue
            if sub & RUN_FILES:
                sweeps.setdefault(d, []).append((e.path, e.name, sub))
            elif depth < MAX_DEPTH:
                walk(Path(e.path), depth + 1)

    walk(root, 0)
    return sweeps


def read_plan(sweep_dir: Path) -> tuple[dict[str, dict[str, str]] | None, str]:
    """plan.csv rows by run_id (the columns the view uses), or (None, why it cannot be used). A plan over PLAN_CAP
    bytes, or one that is not a regular file (a FIFO would block), is named and not read."""
    path = sweep_dir / "plan.csv"
    if not os.path.lexists(path):
        return None, ""
    try:
        fd = open_regular(path)
        with os.fdopen(fd, newline="") as f:
            size = os.fstat(fd).st_size
            if size > PLAN_CAP:
                return None, (
                    f"plan.csv is {size / 2**20:,.0f} MiB, over the {PLAN_CAP // 2**20} MiB limit for a plan (~80,000 "
                    f"runs); not read, so not-started runs cannot be counted"
                )
            reader = csv.DictReader(f)
            plan = {}
            for r in reader:
                if r.get("run_id"):
                    plan[r["run_id"]] = {k: r[k] for k in PLAN_KEYS if r.get(k)}
            header = reader.fieldnames
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        why = str(e) if isinstance(e, NotARegularFile) else f"{type(e).__name__}: {e}"
        return None, f"plan.csv unreadable ({why}); not-started runs cannot be counted"
    if not header:  # an empty file (cut off, or truncated by hand) is not a plan of zero runs
        return None, "plan.csv is empty (cut off?); not-started runs cannot be counted"
    if "run_id" not in header:
        return None, "plan.csv has no run_id column (not written by scaling.sweep); not-started runs cannot be counted"
    return plan, ""


# -------------------------------------------------------------------------------------------------- the view
def collect(root: Path, stall_s: float = 600.0, now: float | None = None) -> list[Sweep]:
    """Every sweep below root with its runs' and trunks' states and its ETA."""
    now = time.time() if now is None else now
    out, plans = [], []
    for sweep_dir, run_dirs in sorted(find_run_dirs(Path(root)).items()):
        plan, plan_note = read_plan(sweep_dir)
        s = Sweep(sweep_dir, planned=len(plan) if plan is not None else None)
        if plan_note:
            s.notes.append(plan_note)
            s.plan_unusable = True
        seen = set()
        outside = []
        for run_dir, rid, names in run_dirs:
            row = plan.get(rid) if plan is not None else None
            if plan is not None and row is None:
                outside.append(rid)
            seen.add(rid)
            s.runs.append(run_state(run_dir, rid, names, row, now, stall_s))
        if plan is not None:
            s.runs += [Run(rid, os.path.join(sweep_dir, rid), "not started") for rid in plan if rid not in seen]
            s.trunks = trunk_states(sweep_dir, trunk_tokens(plan), now, stall_s)
        if outside:
            s.notes.append(f"{len(outside)} run dir(s) not in plan.csv (an older plan?): {_some(outside)}")
        s.runs.sort(key=lambda r: r.run_id)
        out.append(s)
        plans.append(plan)
    # A sweep none of whose runs has finished yet (a study's next stage) is calibrated by the others' finished runs:
    # the throughput measured under today's load, not the plan's cached one.
    pooled = [_calibration(s, p) for s, p in zip(out, plans)]
    took, planned = sum(t for t, _ in pooled), sum(p for _, p in pooled)
    for s, plan in zip(out, plans):
        _eta(s, plan, took / planned if planned > 0 else None)
    return out


def trunk_tokens(plan: dict[str, dict[str, str]]) -> dict[str, float]:
    """trunk id -> the tokens it trains: the most shared_tokens of its branches in the plan."""
    need: dict[str, float] = {}
    for row in plan.values():
        if row.get("trunk"):
            need[row["trunk"]] = max(need.get(row["trunk"], 0.0), num(row.get("shared_tokens")) or 0.0)
    return need


def own_share(row: dict[str, str] | None) -> float:
    """The part of a run it trains itself: 1 - shared_tokens/D for a branch of a trunk, 1 for a run alone."""
    shared, D = num((row or {}).get("shared_tokens")), num((row or {}).get("D"))
    return 1 - shared / D if shared and D else 1.0


def _calibration(s: Sweep, plan: dict[str, dict[str, str]] | None) -> tuple[float, float]:
    """(seconds finished runs really took, seconds their plan estimated): a branch's record times its own part
    only, so it is held against its own share of the plan's estimate."""
    took, planned = 0.0, 0.0
    for r in s.runs:
        row = (plan or {}).get(r.run_id)
        e = num((row or {}).get("est_seconds"))
        if r.state == "completed" and e and r.wall_s:
            took, planned = took + r.wall_s, planned + e * own_share(row)
    return took, planned


def _eta(s: Sweep, plan: dict[str, dict[str, str]] | None, pooled: float | None = None) -> None:
    """Work left (seconds of one worker) and the ETA at the current parallelism. A pack (runs or trunks sharing one
    live process) is one process, which finishes when its last member does. With reuse, a run still to train costs
    its own share of its estimate, and each trunk what it has left to train up to its last branch still waiting
    (at the seconds per token of that branch's estimate, or the trunk's own measured tokens/s while it trains)."""
    plan = plan or {}
    took, planned = _calibration(s, plan)
    scale = took / planned if planned > 0 else (pooled or 1.0)  # the plan's estimates, calibrated by today's runs
    left, unknown = 0.0, 0
    procs: dict[str, float] = {}
    waiting: dict[str, tuple[float, float]] = {}  # trunk -> (tokens it must reach, seconds per token)
    need = trunk_tokens(plan)  # what each trunk's done_frac is a fraction of (trunk_states)
    for r in s.runs:
        row = plan.get(r.run_id) or {}
        if r.state == "running":
            if r.eta_s is None:
                unknown += 1
            elif r.proc is not None:
                procs[r.proc] = max(procs.get(r.proc, 0.0), r.eta_s)
            else:
                left += r.eta_s
        elif r.state in TO_TRAIN:
            e, own = num(row.get("est_seconds")), own_share(row)
            if e is None:
                unknown += 1
                continue
            left += scale * e * min(own, 1 - (r.done_frac or 0.0))
            if row.get("trunk") and not r.done_frac:  # never opened: its trunk must still reach its branch point
                shared, D = num(row.get("shared_tokens")) or 0.0, num(row.get("D")) or 1.0
                reach, _ = waiting.get(row["trunk"], (0.0, 0.0))
                if shared > reach:
                    waiting[row["trunk"]] = (shared, scale * e / D)
    for t in s.trunks:
        if t.run_id not in waiting or t.state in DONE:
            continue
        reach, per_token = waiting[t.run_id]
        trained = (t.done_frac or 0.0) * need.get(t.run_id, reach)
        tokens = max(0.0, reach - trained)
        if t.state == "running" and t.tokens_per_s and t.proc is not None:
            procs[t.proc] = max(procs.get(t.proc, 0.0), tokens / t.tokens_per_s)
        else:
            left += tokens * per_token
    left += sum(procs.values())
    s.work_left_s = left if unknown == 0 else None
    n_running = processes(s)
    s.eta_s = s.work_left_s / n_running if s.work_left_s is not None and n_running else None


def processes(s: Sweep) -> int:
    """Processes training this sweep's runs and trunks now: a pack's members, and a trunk and the branch it is
    training, share one (their lock's host:pid)."""
    running = [r for r in s.runs + s.trunks if r.state == "running"]
    return len({r.proc for r in running if r.proc is not None}) + sum(r.proc is None for r in running)


def finished(sweeps: list[Sweep]) -> bool:
    """Every run completed or diverged, and every plan.csv readable (else runs not started could be missing)."""
    return all(r.state in DONE for s in sweeps for r in s.runs) and not any(s.plan_unusable for s in sweeps)


def _some(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _summary(c: Counter[str]) -> str:
    return ", ".join(f"{c[k]} {k}" for k in STATES if c[k] or k in ("completed", "running", "not started"))


def _run_line(r: Run) -> str:
    parts = [f"{r.state:<12}", r.run_id]
    if r.done_frac is not None and r.state != "completed":
        parts.append(f"{100 * r.done_frac:.0f}%")
    if r.state == "running":
        parts.append(f"{r.tokens_per_s:,.0f} tok/s" if r.tokens_per_s else "no log line yet")
        parts.append(f"ETA {fmt_seconds(r.eta_s)}")
    elif r.state in ("stalled", "interrupted") and r.idle_s is not None:
        parts.append(f"last log {fmt_seconds(r.idle_s)} ago")
    if r.note:
        parts.append(r.note)
    return "  " + "  ".join(parts)


def render(sweeps: list[Sweep], root: Path, max_lines: int = 10) -> str:
    lines = []
    total: Counter[str] = Counter()
    work, running = 0.0, 0
    for s in sweeps:
        c = s.counts()
        total += c
        name = os.path.relpath(s.path, root) if s.path != root else str(root)
        plan = (
            f"plan.csv: {s.planned} runs"
            if s.planned is not None
            else ("plan.csv unusable" if s.plan_unusable else "no plan.csv")
        )
        if s.eta_s is not None:
            eta = f"ETA {fmt_seconds(s.eta_s)}"
        elif c.keys() <= set(DONE):
            eta = "runs found done, others unknown" if s.plan_unusable else "done"
        elif s.work_left_s is not None:  # nothing running: say how much is left for whoever restarts it
            eta = f"nothing running, {fmt_seconds(s.work_left_s)} of work left"
        else:
            eta = "ETA ?"
        lines.append(f"{name}  ({plan})  {_summary(c)}  {eta}")
        if s.trunks:
            tc = Counter(t.state for t in s.trunks)
            lines.append(f"  trunks ({TRUNKS_DIR}/): " + ", ".join(f"{tc[k]} {k}" for k in STATES if tc[k]))
        for state in ("running", "stalled", "interrupted", "failed", "problem"):
            those = [r for r in s.trunks if r.state == state] + [r for r in s.runs if r.state == state]
            lines += [_run_line(r) for r in those[:max_lines]]
            if len(those) > max_lines:
                lines.append(f"  ... and {len(those) - max_lines} more {state} (--max-lines)")
        lines += [f"  note: {n}" for n in s.notes]
        if s.work_left_s is not None:
            work += s.work_left_s
        running += processes(s)  # a pack is one process
    n = sum(total.values())
    eta_all = work / running if running and all(s.work_left_s is not None for s in sweeps) else None
    lines.append(
        f"total: {len(sweeps)} sweep(s), {n} runs: {_summary(total)}"
        + (f"; ETA {fmt_seconds(eta_all)} at {running} running process(es)" if eta_all is not None else "")
    )
    return "\n".join(lines)

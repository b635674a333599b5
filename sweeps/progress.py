"""The progress of sweeps and studies read from their run directories (what `python -m scaling.status` prints): each
run's state, per-sweep counts and an ETA. Reads files only, never the launcher."""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaling.base.cli import fmt_seconds
from scaling.base.record import parse_metrics_line
from scaling.base.safe_read import FileTooBig, NotARegularFile, open_regular, read_capped

PROG = "python -m scaling.status"
STATES = ("completed", "running", "stalled", "interrupted", "diverged", "failed", "not started", "problem")
DONE = ("completed", "diverged")
RUN_FILES = {"config.yaml", "result.json", "metrics.jsonl", "ckpt.pt"}
LOCK_NAME = ".lock"  # scaling.base.lock's file: {host, pid, start, ...} of the process training the run
TAIL_BYTES = 8192  # the last lines of metrics.jsonl are all a status needs; never read the whole log
MAX_DEPTH = 6  # runs/<study>/<stage>/<run>: a few levels, never the run dirs' own subdirectories
# trunks/: a sweep's trunk dirs (scaling.run.trunk) are not runs; their branches are, in the sweep dir itself.
SKIP_DIRS = {"analysis", "plots", "wandb", "mlruns", "tb", "__pycache__", "trunks"}
# Caps on what one status reads, whatever a shared directory holds: a record is KBs, a plan ~250 bytes a row
# (16 MiB: ~80,000 runs, far past any real grid), a log line well under 1 KB (a longer one is searched for up to
# LINE_CAP).
RECORD_CAP = 16 * 2**20
PLAN_CAP = 16 * 2**20
LINE_CAP = 2**20
PLAN_KEYS = ("run_id", "steps", "batch_size", "D", "lr", "est_seconds")  # the columns the view uses
WALK_CAP = 20_000  # directories without run files walked before the view stops: not a runs directory


@dataclass
class Run:
    run_id: str
    path: str  # os path strings, not pathlib: 10,000 Path objects cost more than reading the records
    state: str
    done_frac: float | None = None  # tokens trained / planned
    tokens_per_s: float | None = None
    eta_s: float | None = None  # seconds left for this run alone
    idle_s: float | None = None  # seconds since its last log line
    note: str = ""  # why it failed / is a problem, or a warning about its files
    wall_s: float | None = None  # a finished run's wall time (calibrates the plan's estimates)
    proc: str | None = None  # host:pid of the live process training it: the runs of a pack share one
    C: float | None = None  # a finished run's FLOPs (M*D): with wall_s, the throughput measured under today's load


@dataclass
class Sweep:
    path: Path
    runs: list[Run] = field(default_factory=list)
    planned: int | None = None  # rows of plan.csv, None without one
    notes: list[str] = field(default_factory=list)  # plan.csv problems, run dirs outside the plan
    plan_unusable: bool = False  # plan.csv exists but cannot be read: not-started runs are unknown
    eta_s: float | None = None
    work_left_s: float | None = None

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


# ------------------------------------------------------------------------------------------------------ one run
def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def tail_rows(path: str | Path) -> tuple[list[dict], str]:
    """The last (up to two) readable rows of a metrics.jsonl, newest first, and a note naming unreadable lines.

    Reads the last TAIL_BYTES, and further back (doubling, up to LINE_CAP) only while the window holds fewer than
    two whole lines: a long line is read, and memory stays bounded whatever the file holds."""
    try:
        fd = open_regular(path)
    except NotARegularFile as e:
        return [], f"{e}; skipped"
    except OSError as e:
        return [], f"metrics.jsonl unreadable ({type(e).__name__})"
    with os.fdopen(fd, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        window = TAIL_BYTES
        while True:
            start = max(0, size - window)
            f.seek(start)
            data = f.read(size - start)
            whole = data.count(b"\n") - (start > 0)  # lines that end in the window and start in it
            if start == 0 or whole >= 2 or window >= LINE_CAP:
                break
            window *= 2
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first piece may start mid-line
    rows: list[dict] = []
    bad: list[int] = []
    cut_off = bool(lines) and lines[-1].strip() != b""  # a line without its newline: the writer was stopped mid-write
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if not line:
            continue
        row = parse_metrics_line(line)
        if row is None:
            bad.append(i)
        elif len(rows) < 2:
            rows.append(row)
    note = ""
    if bad:
        # Line numbers need a count of the whole file: paid only when something is wrong.
        n_before = _count_lines(path, start) if start else 0
        where = ", ".join(str(n_before + i + 1) for i in sorted(bad)[:3]) + (" ..." if len(bad) > 3 else "")
        last = bad[0] == len(lines) - 1 or (bad[0] == len(lines) - 2 and not lines[-1].strip())
        note = f"metrics.jsonl line {where} unreadable" + (" (cut off mid-write)" if cut_off and last else "")
    elif not rows and start > 0:
        note = f"metrics.jsonl's last line is over {LINE_CAP // 2**20} MiB; not read"
    return rows, note


def _count_lines(path: str | Path, upto: int) -> int:
    with os.fdopen(open_regular(path), "rb") as f:
        n = 0
        while upto > 0:  # in blocks: a long log is counted, never read whole
            block = f.read(min(upto, 1 << 20))
            if not block:
                break
            n, upto = n + block.count(b"\n"), upto - len(block)
        return n


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _lock_state(run_dir: str, names: set[str]) -> str:
    """'live' (a process holds the run, or one on another host we cannot check), 'dead', or 'none'."""
    if LOCK_NAME not in names:
        return "none"
    try:
        from scaling.base.lock import is_stale, read_holder
    except ImportError:  # an install without run locks: fall back to the log's age alone
        return "none"
    holder = read_holder(Path(run_dir))
    if holder is None:
        return "none"
    return "dead" if holder and is_stale(holder) else "live"


def _planned_tokens(run_dir: str, plan_row: dict[str, str] | None) -> float | None:
    if plan_row is not None:
        steps, batch = _num(plan_row.get("steps")), _num(plan_row.get("batch_size"))
        if steps and batch:
            return steps * batch
        if _num(plan_row.get("D")):
            return _num(plan_row.get("D"))
    try:  # only unfinished runs outside a plan get here: a handful, so parsing YAML is affordable
        train = (yaml.safe_load(read_capped(os.path.join(run_dir, "config.yaml"), RECORD_CAP)) or {}).get("train") or {}
        tokens, batch = _num(train.get("tokens")), _num(train.get("batch_size"))
        return round(tokens / batch) * batch if tokens and batch else tokens
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None


def _short(e: object, run_dir: str) -> str:
    """An error naming a run's file by its full path, shortened to the file's name (the run is on the line)."""
    return str(e).replace(run_dir + os.sep, "")


def _machine_seconds(rec: dict) -> float | None:
    """A finished run's share of machine time: a packed run (scaling.run.pack) trained alongside `packed_with`."""
    wall = _num(rec.get("wall_time_s"))
    others = rec.get("packed_with")
    return wall / (1 + len(others)) if wall is not None and isinstance(others, list) else wall


def _mismatch(rec: dict, plan_row: dict[str, str]) -> str:
    """What of a record disagrees with its plan.csv row (empty when they match)."""
    diffs = []
    for key in ("lr", "batch_size", "steps"):
        want, got = _num(plan_row.get(key)), _num(rec.get(key))
        if want is not None and got is not None and not math.isclose(want, got, rel_tol=1e-6):
            diffs.append(f"{key} {got:g} != plan {want:g}")
    return "; ".join(diffs)


def run_state(
    run_dir: str, rid: str, names: set[str], plan_row: dict[str, str] | None, now: float, stall_s: float
) -> Run:
    """One run's state from its files: its record when that settles it, else its log's age and its lock."""
    if "result.json" in names:
        recorded = _recorded_state(run_dir, rid, names, plan_row)
        if recorded is not None:
            return recorded
        # a failed run being retrained, or a "running" record: its log tells the state
    if "config.yaml" not in names:
        return Run(rid, run_dir, "problem", note="no config.yaml (half-created or copied run dir); not counted")
    return _logged_state(run_dir, rid, names, plan_row, now, stall_s)


def _recorded_state(run_dir: str, rid: str, names: set[str], plan_row: dict[str, str] | None) -> Run | None:
    """The state a run's result.json settles (finished, or a problem with it); None when its log must tell."""
    try:
        rec = json.loads(read_capped(os.path.join(run_dir, "result.json"), RECORD_CAP))
        status = rec["status"]
    except (NotARegularFile, FileTooBig) as e:  # a FIFO would block, a 1 GB record would cost GBs: named
        return Run(rid, run_dir, "problem", note=f"{_short(e, run_dir)}; not counted as done")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return Run(rid, run_dir, "problem", note=f"result.json unreadable ({type(e).__name__}); not counted as done")
    if "config.yaml" not in names:
        return Run(rid, run_dir, "problem", note="no config.yaml: the run cannot be reproduced or resumed")
    if status not in ("completed", "diverged", "failed", "running"):  # what scaling.train writes
        return Run(rid, run_dir, "problem", note=f"result.json has an unknown status {status!r}; not counted")
    if plan_row is not None and (diff := _mismatch(rec, plan_row)):
        return Run(rid, run_dir, "problem", note=f"does not match plan.csv ({diff})")
    retrying = status == "failed" and _lock_state(run_dir, names) == "live"  # a rerun is training it again
    if status not in ("completed", "diverged", "failed") or retrying:
        return None
    err = str(rec.get("error") or "").splitlines()
    note = err[0][:160] if err and status != "completed" else ""
    return Run(
        rid,
        run_dir,
        status,
        done_frac=1.0 if status == "completed" else None,
        note=note,
        wall_s=_machine_seconds(rec),
        C=_num(rec.get("C")),
    )


def _logged_state(
    run_dir: str, rid: str, names: set[str], plan_row: dict[str, str] | None, now: float, stall_s: float
) -> Run:
    """An unfinished run's state from its log's last rows and age and its lock: running, stalled or interrupted."""
    rows, note = tail_rows(os.path.join(run_dir, "metrics.jsonl")) if "metrics.jsonl" in names else ([], "")
    if " not a regular file" in note:  # a FIFO or device named metrics.jsonl: named, never read, not progress
        return Run(rid, run_dir, "problem", note=_short(note, run_dir))
    last_write = _last_write(run_dir, names)
    idle = now - last_write if last_write is not None else None
    total = _planned_tokens(run_dir, plan_row)
    tokens = _num(rows[0].get("tokens")) if rows else None
    tok_s = _num(rows[0].get("tokens_per_s")) if rows else None
    frac = tokens / total if tokens is not None and total else (0.0 if total else None)
    threshold = stall_s
    if len(rows) == 2 and tok_s:  # a slow run logs rarely: allow it 5 of its own log intervals
        per_line = (_num(rows[0].get("tokens")) or 0) - (_num(rows[1].get("tokens")) or 0)
        threshold = max(stall_s, 5 * per_line / tok_s)
    eta = (total - tokens) / tok_s if total and tokens is not None and tok_s else None
    lock = _lock_state(run_dir, names)
    quiet = idle is not None and idle > threshold
    if lock == "dead":
        state = "interrupted"
    elif quiet:
        state = "stalled" if lock == "live" else "interrupted"
    else:
        state = "running"
    proc = _holder_id(run_dir) if state == "running" and lock == "live" else None
    return Run(rid, run_dir, state, done_frac=frac, tokens_per_s=tok_s, eta_s=eta, idle_s=idle, note=note, proc=proc)


def _last_write(run_dir: str, names: set[str]) -> float | None:
    """When the run last wrote one of its files (its log, config or checkpoint), None when it has none."""
    if not names & RUN_FILES:
        return None
    return max(
        t
        for t in (_mtime(os.path.join(run_dir, n)) for n in ("metrics.jsonl", "config.yaml", "ckpt.pt") if n in names)
        if t is not None
    )


def _holder_id(run_dir: str) -> str | None:
    """host:pid of a running run's live holder: runs trained together in one process (a pack) share it."""
    try:
        from scaling.base.lock import read_holder
    except ImportError:
        return None
    h = read_holder(Path(run_dir)) or {}
    return f"{h.get('host')}:{h.get('pid')}" if h.get("pid") is not None else None


# -------------------------------------------------------------------------------------------------- the view
def collect(root: Path, stall_s: float = 600.0, now: float | None = None) -> list[Sweep]:
    """Every sweep below root with its runs' states and ETA."""
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


def _calibration(s: Sweep, plan: dict[str, dict[str, str]] | None) -> tuple[float, float]:
    """(seconds finished runs really took, seconds their plan estimated)."""
    est = {rid: _num(r.get("est_seconds")) for rid, r in (plan or {}).items()}
    took, planned = 0.0, 0.0
    for r in s.runs:
        e = est.get(r.run_id)
        if r.state == "completed" and e and r.wall_s:
            took, planned = took + r.wall_s, planned + e
    return took, planned


def _eta(s: Sweep, plan: dict[str, dict[str, str]] | None, pooled: float | None = None) -> None:
    """Work left (seconds of one worker) and the ETA at the current parallelism: a pack (runs sharing one live
    process) is one process, which finishes when its last run does."""
    est = {rid: _num(r.get("est_seconds")) for rid, r in (plan or {}).items()}
    # How long finished runs really took against their plan estimate: the plan's numbers, calibrated.
    took, planned = _calibration(s, plan)
    scale = took / planned if planned > 0 else (pooled or 1.0)
    left, unknown = 0.0, 0
    procs: dict[str, float] = {}
    for r in s.runs:
        if r.state == "running":
            if r.eta_s is None:
                unknown += 1
            elif r.proc is not None:
                procs[r.proc] = max(procs.get(r.proc, 0.0), r.eta_s)
            else:
                left += r.eta_s
        elif r.state in ("not started", "interrupted", "stalled", "failed"):
            e = est.get(r.run_id)
            if e is None:
                unknown += 1
            else:
                left += scale * e * (1 - (r.done_frac or 0.0))
    left += sum(procs.values())
    s.work_left_s = left if unknown == 0 else None
    n_running = processes(s)
    s.eta_s = s.work_left_s / n_running if s.work_left_s is not None and n_running else None


def processes(s: Sweep) -> int:
    """Processes training this sweep's runs now: a pack's runs share one (their lock's host:pid)."""
    running = [r for r in s.runs if r.state == "running"]
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
        for state in ("running", "stalled", "interrupted", "failed", "problem"):
            those = [r for r in s.runs if r.state == state]
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

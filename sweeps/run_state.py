"""One run's state read from its directory (what `python -m scaling.status` shows per run): its record when that
settles it, else its log's last rows, their age and its lock. Trunk directories (scaling.run.trunk) are read the same
way, their record being trunk.json. Reads files only, bounded, never the launcher."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scaling.base.record import TRUNK_RECORD, TRUNKS_DIR, parse_metrics_line
from scaling.base.safe_read import FileTooBig, NotARegularFile, open_regular, read_capped

DONE = ("completed", "diverged")
RUN_FILES = {"config.yaml", "result.json", "metrics.jsonl", "ckpt.pt"}
LOCK_NAME = ".lock"  # scaling.base.lock's file: {host, pid, start, ...} of the process training the run
TAIL_BYTES = 8192  # the last lines of metrics.jsonl are all a status needs; never read the whole log
# Caps on what one status reads, whatever a shared directory holds: a record is KBs, a log line well under 1 KB (a
# longer one is searched for up to LINE_CAP).
RECORD_CAP = 16 * 2**20
LINE_CAP = 2**20


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
    C: float | None = None  # FLOPs a finished run spent itself (M*D, a branch's C_spent): with wall_s, the throughput
    # measured under today's load


def num(x: Any) -> float | None:
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
        steps, batch = num(plan_row.get("steps")), num(plan_row.get("batch_size"))
        if steps and batch:
            return steps * batch
        if num(plan_row.get("D")):
            return num(plan_row.get("D"))
    try:  # only unfinished runs outside a plan get here: a handful, so parsing YAML is affordable
        train = (yaml.safe_load(read_capped(os.path.join(run_dir, "config.yaml"), RECORD_CAP)) or {}).get("train") or {}
        tokens, batch = num(train.get("tokens")), num(train.get("batch_size"))
        return round(tokens / batch) * batch if tokens and batch else tokens
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None


def _short(e: object, run_dir: str) -> str:
    """An error naming a run's file by its full path, shortened to the file's name (the run is on the line)."""
    return str(e).replace(run_dir + os.sep, "")


def _machine_seconds(rec: dict) -> float | None:
    """A finished run's share of machine time: a packed run (scaling.run.pack) trained alongside `packed_with`."""
    wall = num(rec.get("wall_time_s"))
    others = rec.get("packed_with")
    return wall / (1 + len(others)) if wall is not None and isinstance(others, list) else wall


def _mismatch(rec: dict, plan_row: dict[str, str]) -> str:
    """What of a record disagrees with its plan.csv row (empty when they match)."""
    diffs = []
    for key in ("lr", "batch_size", "steps"):
        want, got = num(plan_row.get(key)), num(rec.get(key))
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
        C=num(rec.get("C_spent", rec.get("C"))),  # a branch's wall time is its own part's: so are its FLOPs
    )


def _logged_state(
    run_dir: str,
    rid: str,
    names: set[str],
    plan_row: dict[str, str] | None,
    now: float,
    stall_s: float,
    total: float | None = None,
) -> Run:
    """An unfinished run's state from its log's last rows and age and its lock: running, stalled or interrupted.
    `total`: the tokens it will train, when known (a trunk's); else from its plan row or config."""
    rows, note = tail_rows(os.path.join(run_dir, "metrics.jsonl")) if "metrics.jsonl" in names else ([], "")
    if " not a regular file" in note:  # a FIFO or device named metrics.jsonl: named, never read, not progress
        return Run(rid, run_dir, "problem", note=_short(note, run_dir))
    last_write = _last_write(run_dir, names)
    idle = now - last_write if last_write is not None else None
    total = total if total is not None else _planned_tokens(run_dir, plan_row)
    tokens = num(rows[0].get("tokens")) if rows else None
    tok_s = num(rows[0].get("tokens_per_s")) if rows else None
    frac = tokens / total if tokens is not None and total else (0.0 if total else None)
    threshold = stall_s
    if len(rows) == 2 and tok_s:  # a slow run logs rarely: allow it 5 of its own log intervals
        per_line = (num(rows[0].get("tokens")) or 0) - (num(rows[1].get("tokens")) or 0)
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


# ------------------------------------------------------------------------------------------------------ trunks
def trunk_states(sweep_dir: Path, need: dict[str, float], now: float, stall_s: float) -> list[Run]:
    """The state of each trunk a sweep's plan names (`need`: trunk id -> the tokens it trains, its longest branch's
    shared_tokens). A trunk with a completed or diverged trunk.json is done; one without a directory is not started;
    otherwise its log and lock tell, as for a run (`done_frac` is tokens trained / need). One process trains a trunk
    and its branches in turn, so while a branch trains, the trunk's log is quiet and its proc is the branch's."""
    out = []
    for tid, total in sorted(need.items()):
        tdir = os.path.join(sweep_dir, TRUNKS_DIR, tid)
        try:
            names = set(os.listdir(tdir))
        except OSError:
            out.append(Run(tid, tdir, "not started", done_frac=0.0))
            continue
        if TRUNK_RECORD in names:
            try:
                rec = json.loads(read_capped(os.path.join(tdir, TRUNK_RECORD), RECORD_CAP))
                status = rec["status"]
            except (OSError, ValueError, KeyError, TypeError):  # a refused file (FIFO, too big) is an OSError too
                status = None
            if status in DONE:
                out.append(Run(tid, tdir, str(status), done_frac=1.0))
                continue
        out.append(_logged_state(tdir, tid, names, None, now, stall_s, total=total))
    return out

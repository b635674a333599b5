"""Who owns a study's stages: one live `scaling.study` per study directory, and which of a stage's runs other
processes still train.

A study runs each stage as a child `scaling.sweep` process. A kill -9 of the study runs no handler, so:
- its child sweep is started to die with it (Linux: PR_SET_PDEATHSIG, see `die_with_parent`); the sweep's own local
  workers die with the sweep (scaling.base.lock.run_watchdog);
- what cannot die with it (a sweep on a system without PDEATHSIG, jobs on a cluster) is found by a rerun: the
  study's lock `<study dir>/.study/.lock` (scaling.base.lock: a stale one is taken over), the child sweep it had
  recorded in `.study/stage.json` (pid and start time, so a reused pid is not mistaken for it), and the run locks of
  the stage's runs. A rerun waits `GRACE_S` for them to go (a dying worker's watchdog takes a second), then refuses
  with one line naming them: it never fits, nor reports "done", over runs another process still trains.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scaling.base.atomic import write_atomic
from scaling.base.lock import RunLocked, acquire, describe, live_holder, release, running
from scaling.base.record import FINISHED
from scaling.base.safe_read import read_capped

STUDY_DIR = ".study"  # a dot dir: the status view and the sweeps never take it for a run
STAGE_FILE = "stage.json"
GRACE_S = 10.0  # how long a rerun waits for a killed study's processes to go before it refuses
POLL_S = 0.5


class StageBusy(RuntimeError):
    """Another live process still works on this study: one line naming it."""


# ------------------------------------------------------------------------------------------------ the study lock
def claim_study(root: Path) -> dict:
    """Take the study's lock (StageBusy naming the other study when one is live)."""
    try:
        return acquire(Path(root) / STUDY_DIR)
    except RunLocked as e:
        holder = live_holder(Path(root) / STUDY_DIR)
        who = describe(holder) if holder else str(e)
        raise StageBusy(
            f"another scaling.study runs {root} ({who}); wait for it (python -m scaling.status {root}) or stop it"
        ) from None


def release_study(root: Path, mine: dict) -> None:
    release(Path(root) / STUDY_DIR, mine)


# ------------------------------------------------------------------------------------------- the child sweep
def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record_stage(root: Path, stage: str, pid: int) -> None:
    """Note the child sweep that runs `stage` now (read by a rerun if this study is killed)."""
    info = {"stage": stage, "pid": pid, "start": _start_time(pid), "host": socket.gethostname()}
    write_atomic(Path(root) / STUDY_DIR / STAGE_FILE, json.dumps(info) + "\n")


def clear_stage(root: Path) -> None:
    (Path(root) / STUDY_DIR / STAGE_FILE).unlink(missing_ok=True)


def live_stage(root: Path) -> dict | None:
    """The child sweep a killed study left running ({stage, pid, ...}), None when there is none (or it is gone)."""
    try:
        info = json.loads(read_capped(Path(root) / STUDY_DIR / STAGE_FILE, 1 << 16))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int) or info.get("host") != socket.gethostname():
        return None  # another host's sweep cannot be checked from here; its runs' locks still can
    pid = info["pid"]
    if pid == os.getpid() or not running(pid) or _start_time(pid) != info.get("start"):
        return None
    return info


# ---------------------------------------------------------------------------------------------- a stage's runs
def planned_runs(sweep_dir: Path) -> list[str]:
    """run_ids of the stage's plan.csv (empty without one)."""
    import csv
    import io

    try:
        text = read_capped(Path(sweep_dir) / "plan.csv", 64 << 20).decode()
    except (OSError, UnicodeDecodeError):
        return []
    return [r["run_id"] for r in csv.DictReader(io.StringIO(text)) if r.get("run_id")]


def held_runs(sweep_dir: Path) -> list[tuple[str, dict]]:
    """(run_id, holder) of the stage's unfinished runs that a live process other than this one trains."""
    held = []
    for rid in planned_runs(sweep_dir):
        run_dir = Path(sweep_dir) / rid
        holder = live_holder(run_dir)
        if holder is None or holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            continue
        if _status(run_dir) not in FINISHED:
            held.append((rid, holder))
    return held


def unfinished_runs(sweep_dir: Path) -> list[str]:
    """run_ids of the stage's plan that have no finished record."""
    return [r for r in planned_runs(sweep_dir) if _status(Path(sweep_dir) / r) not in FINISHED]


def _status(run_dir: Path) -> str | None:
    """The status its result.json records (None without a readable one)."""
    try:
        rec = json.loads(read_capped(Path(run_dir) / "result.json"))
    except (OSError, ValueError):
        return None
    return rec.get("status") if isinstance(rec, dict) else None


def _wait(check: Callable[[], Any], grace_s: float) -> Any:
    """Poll check() until it is falsy or grace_s passed; its last value."""
    deadline = time.monotonic() + grace_s
    found = check()
    while found and time.monotonic() < deadline:
        time.sleep(POLL_S)
        found = check()
    return found


def check_no_live_stage(root: Path, grace_s: float | None = None) -> None:
    """Before a rerun starts anything: StageBusy when a killed study's sweep still runs."""
    info = _wait(lambda: live_stage(root), GRACE_S if grace_s is None else grace_s)
    if info:
        raise StageBusy(
            f"stage {info.get('stage')} of a killed study is still running in {root} (its sweep, pid "
            f"{info['pid']} on {info['host']}); wait for it to end or stop it (kill {info['pid']}), then rerun"
        )


def check_stage_free(stage: str, sweep_dir: Path, grace_s: float | None = None) -> None:
    """StageBusy when runs of the stage are still trained by other processes (after a short wait for them)."""
    held = _wait(lambda: held_runs(sweep_dir), GRACE_S if grace_s is None else grace_s)
    if held:
        rid, holder = held[0]
        more = f" and {len(held) - 1} more" if len(held) > 1 else ""
        raise StageBusy(
            f"stage {stage}: {len(held)} run(s) in {sweep_dir} are still being trained by other processes ({rid} by "
            f"{describe(holder)}{more}); rerun the study when they finish (python -m scaling.status {sweep_dir})"
        )


def check_stage_done(stage: str, sweep_dir: Path, grace_s: float | None = None) -> None:
    """After a stage's sweep: every planned run is finished, or StageBusy/RuntimeError says which are not."""
    check_stage_free(stage, sweep_dir, grace_s)
    left = unfinished_runs(sweep_dir)
    if left:
        raise RuntimeError(
            f"stage {stage}: {len(left)} planned run(s) in {sweep_dir} have no finished record (e.g. {left[0]}); "
            f"rerun the study to train them"
        )


# ------------------------------------------------------------------------------------------- dying together
_PR_SET_PDEATHSIG = 1
_libc: Any = None


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn making a child process get SIGKILL when this process dies (Linux); None elsewhere."""
    global _libc
    if not os.path.exists("/proc/self"):
        return None
    try:
        import ctypes

        _libc = _libc or ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent: never in the fork
    except OSError:
        return None
    parent = os.getpid()
    prctl = _libc.prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the prctl: nobody would kill us later
            os._exit(1)

    return preexec

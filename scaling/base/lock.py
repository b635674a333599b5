"""One owner per run directory: an exclusive lock file, created atomically, that names its holder.

`<run dir>/.lock` is created with O_CREAT|O_EXCL (exactly one process can create it) and holds JSON
{host, pid, start, nonce}. A process that finds it held by a live process does not touch the run (RunLocked, a
clear line for the user). A lock whose holder is gone -- same host, and that pid no longer runs, or runs a process
started at another time (a reused pid) -- is stale: it is taken over. Takeover goes through a second, short-lived
O_EXCL file (`.lock.break`) and re-checks that the lock is still the stale one it saw, so two processes breaking
the same stale lock never both win. A lock held on another host is never broken automatically (its pid means
nothing here): the message says which file to remove once that process is known to be gone.

`run_watchdog()` is the other half of "one owner": a sweep's local worker processes (joblib) kill themselves when
the sweep that started them dies, instead of training on as orphans.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from scaling.base.atomic import remove_stale_temps
from scaling.base.safe_read import FileTooBig, NotARegularFile, read_capped

LOCK_NAME = ".lock"
BREAK_NAME = ".lock.break"
BREAK_STALE_S = 30.0  # a breaker older than this belongs to a process killed mid-takeover (it takes microseconds)
SWEEP_PID_ENV = "SCALING_SWEEP_PID"
SWEEP_HOST_ENV = "SCALING_SWEEP_HOST"
LOCK_CAP = 1 << 16  # a lock is ~150 bytes of JSON


class RunLocked(RuntimeError):
    """The run directory is owned by another live process; this launcher leaves it alone."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of pid (Linux /proc; None elsewhere): tells a live holder from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def running(pid: int) -> bool:
    """Whether pid is a running process (a zombie, killed but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc: os.kill said it exists


def describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since', '?')})"


def is_stale(holder: dict) -> bool:
    """True when the holder is provably gone: same host, and its pid is dead or belongs to a newer process."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    pid = holder["pid"]
    if not running(pid):
        return True
    start = holder.get("start")
    return start is not None and _start_time(pid) not in (None, start)


def _read_lock(path: Path) -> str:
    """A lock file's text, read bounded and never blocking (a FIFO planted as .lock raises NotARegularFile)."""
    return read_capped(path, LOCK_CAP).decode(errors="replace")


def read_holder(run_dir: Path) -> dict | None:
    """The lock's content; {} for an unreadable lock (created but not yet written, or not a file), None when
    there is no lock."""
    try:
        text = _read_lock(Path(run_dir) / LOCK_NAME)
    except FileNotFoundError:
        return None
    except OSError:  # a FIFO, a directory, a huge file: not a lock this project wrote; nobody is known to hold it
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def live_holder(run_dir: Path) -> dict | None:
    """The live process holding run_dir's lock, or None when the run is free (no lock, or a stale one)."""
    holder = read_holder(run_dir)
    if holder is None or (holder and is_stale(holder)):
        return None
    return holder


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _create(path: Path, content: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, content)
        os.fsync(fd)
    except BaseException:  # a full disk: leave no empty lock that others would wait on
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


def _break_stale(run_dir: Path, seen: str) -> None:
    """Remove the lock if it still has exactly the stale content `seen` (one breaker at a time)."""
    breaker = run_dir / BREAK_NAME
    if _age(breaker) > BREAK_STALE_S:
        breaker.unlink(missing_ok=True)
    if not _create(breaker, f"{os.getpid()}\n".encode()):
        time.sleep(0.05)  # another process is breaking it right now
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            if _read_lock(run_dir / LOCK_NAME) == seen:
                (run_dir / LOCK_NAME).unlink()
    finally:
        breaker.unlink(missing_ok=True)


def acquire(run_dir: Path, timeout_s: float = 5.0) -> dict:
    """Take run_dir's lock (creating run_dir) and return what it holds; RunLocked when a live process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mine = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": _start_time(os.getpid()),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "nonce": uuid.uuid4().hex,
    }
    content = json.dumps(mine)
    deadline = time.monotonic() + timeout_s
    while True:
        if _create(run_dir / LOCK_NAME, content.encode()):
            remove_stale_temps(run_dir)  # half-written files of a killed previous owner: nobody else writes here now
            return mine
        try:
            seen = _read_lock(run_dir / LOCK_NAME)
        except FileNotFoundError:
            continue  # released between our create and our read: try again
        except (NotARegularFile, FileTooBig) as e:  # never taken over: removing it is the user's call
            raise RunLocked(f"{e}; it is not a lock this project writes: remove it to train {run_dir}") from None
        try:
            holder = json.loads(seen)
        except ValueError:
            holder = {}
        if not isinstance(holder, dict):
            holder = {}
        if (holder and is_stale(holder)) or (not holder and _age(run_dir / LOCK_NAME) > BREAK_STALE_S):
            _break_stale(run_dir, seen)  # a dead holder, or one killed between creating and writing the lock
            continue
        # Held by a live process, or just created and not yet written (a few microseconds): wait a moment.
        if holder or time.monotonic() > deadline:
            if not holder:
                raise RunLocked(
                    f"{run_dir / LOCK_NAME} is unreadable (being written, or left by a process killed while creating "
                    f"it); it is taken over once it is {BREAK_STALE_S:.0f} s old, or remove it if nothing trains "
                    f"{run_dir}"
                )
            if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
                raise RunLocked(
                    f"{run_dir} is being trained by {describe(holder)}; if that process is gone, "
                    f"remove {run_dir / LOCK_NAME}"
                )
            raise RunLocked(f"{run_dir} is being trained by {describe(holder)}")
        time.sleep(0.01)


def release(run_dir: Path, mine: dict) -> None:
    """Remove the lock if it is still ours (never someone else's that took over a lock we lost)."""
    path = Path(run_dir) / LOCK_NAME
    with contextlib.suppress(OSError, ValueError):
        if json.loads(_read_lock(path)).get("nonce") == mine["nonce"]:
            path.unlink()


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[dict]:
    """Hold run_dir's lock for the duration of the block (RunLocked when a live process owns it)."""
    mine = acquire(run_dir)
    try:
        yield mine
    finally:
        release(run_dir, mine)


def mark_sweep_process() -> None:
    """Called by a sweep before it launches: its local workers find its pid here (run_watchdog)."""
    os.environ[SWEEP_PID_ENV] = str(os.getpid())
    os.environ[SWEEP_HOST_ENV] = socket.gethostname()  # a pid means something on this host only


def run_watchdog(poll_s: float = 1.0) -> None:
    """In a local worker of a sweep (a child of the sweep process), die with the sweep.

    A kill -9 of the sweep runs no handler, and joblib's workers would train on as orphans, racing the rerun. The
    kill is SIGKILL on purpose: the orphan stops as the sweep did, leaving files a rerun resumes from."""
    sweep_pid = os.environ.get(SWEEP_PID_ENV)
    if not sweep_pid or int(sweep_pid) == os.getpid():
        return  # not in a sweep, or the basic launcher (it runs jobs in the sweep process itself)
    if os.getppid() != int(sweep_pid):
        # Not a direct worker -- or one whose sweep died before this job began (a worker still starting up when
        # the sweep was killed is re-parented first): that job must not start training as an orphan.
        if os.environ.get(SWEEP_HOST_ENV) == socket.gethostname() and not running(int(sweep_pid)):
            os.kill(os.getpid(), signal.SIGKILL)
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    if not getattr(run_watchdog, "started", False):
        threading.Thread(target=watch, name="sweep-watchdog", daemon=True).start()
        run_watchdog.started = True  # type: ignore[attr-defined]

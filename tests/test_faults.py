"""Fault injection: kills at random points, two owners of one run dir, planted checkpoints, broken
metrics lines, a full or read-only disk, bad values. Each case checks the behaviour a careful user expects: the
same records after a rerun, one owner per run dir, one line instead of a traceback, data never run as code."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from scaling.base import lock
from scaling.run.checkpoint import (
    CKPT_NAME,
    CKPT_SCHEMA,
    META_NAME,
    load_checkpoint,
    save_checkpoint,
    truncate_metrics,
)
from scaling.run.single import train_run
from tests.helpers import (
    FAST,
    ONE_THREAD,
    RESUMABLE,
    ROOT,
    TIMING,
    TINY_DATA,
    TINY_SWEEP,
    dead_pid,
    metrics,
    python_m,
    record,
    records,
    run_cmd,
    without,
)

LONG = [*RESUMABLE, "run.id=long"]
ENV = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **ONE_THREAD}


def env() -> dict[str, str]:
    return os.environ | ENV


def train_cli(run_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = python_m("scaling.train", *TINY_DATA, "train.progress=false", "train.threads=1", *args)
    return run_cmd([*cmd, f"hydra.run.dir={run_dir}"], env=ENV, timeout=timeout)


def same_record(a: dict, b: dict) -> None:
    """The same record but for what may differ between an interrupted-and-resumed run and an uninterrupted one."""
    assert without(a, TIMING) == without(b, TIMING)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def temp_files(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.name.endswith(".tmp")]


def interrupted(make_cfg, run_dir: Path) -> dict:
    """A finished run turned into an interrupted one (config.yaml, metrics.jsonl and ckpt.pt stay)."""
    result = train_run(make_cfg(*FAST), run_dir)
    (run_dir / "result.json").unlink()
    return result


# ---- 2. a broken last line in metrics.jsonl ----


def test_truncate_metrics_drops_a_broken_last_line_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in (4, 8, 12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 16, "lo')  # a write cut by a kill
    with pytest.warns(UserWarning, match="dropped 1 unreadable line"):
        truncate_metrics(path, 8)
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows[:2]


@pytest.mark.slow  # trains a run (seconds)
def test_resume_over_a_broken_metrics_line_completes(make_cfg, tmp_path):
    ref = interrupted(make_cfg, tmp_path / "run")
    with (tmp_path / "run" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 36, "tokens": 3')  # what kill -9 or a full disk leaves
    with pytest.warns(UserWarning, match="unreadable line"):
        again = train_run(make_cfg(*FAST), tmp_path / "run")
    same_record(again, ref)
    steps = [r["step"] for r in metrics(tmp_path / "run")]
    assert steps == sorted(set(steps))


@pytest.mark.slow  # trains a run (seconds)
def test_a_resumed_run_counts_the_wall_time_of_every_segment(make_cfg, tmp_path):
    first = interrupted(make_cfg, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / CKPT_NAME, map_location="cpu", weights_only=True).get("wall_time_s", 0)
    assert 0.5 * first["wall_time_s"] < saved <= first["wall_time_s"]  # the first segment, up to its checkpoint
    again = train_run(make_cfg(*FAST), tmp_path / "run")
    assert again["wall_time_s"] > saved  # the first segment plus this one, not this one alone


# ---- 3. checkpoints are data, never code ----


class Planted:
    """Unpickling this runs code: what a malicious ckpt.pt would do."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def test_loading_a_planted_checkpoint_runs_no_code(tmp_path):
    sentinel = tmp_path / "code_ran"
    torch.save({"config_hash": "h", "step": 1, "payload": Planted(sentinel)}, tmp_path / CKPT_NAME)
    (tmp_path / META_NAME).write_text(json.dumps({"schema": CKPT_SCHEMA, "config_hash": "h"}))
    with pytest.warns(UserWarning, match="ignoring unreadable checkpoint"):
        assert load_checkpoint(tmp_path, "h") is None
    assert not sentinel.exists(), "unpickling the planted checkpoint ran code"


@pytest.mark.slow  # trains a run (seconds)
def test_a_planted_checkpoint_never_runs_code(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    ref = interrupted(make_cfg, run_dir)
    sentinel = tmp_path / "code_ran"
    good = torch.load(run_dir / CKPT_NAME, map_location="cpu", weights_only=True)
    # A planted file that passes every config check (right hash, right sidecar) but carries code.
    torch.save(good | {"payload": Planted(sentinel)}, run_dir / CKPT_NAME)
    (run_dir / META_NAME).write_text(json.dumps({"schema": CKPT_SCHEMA, "config_hash": good["config_hash"]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = train_run(make_cfg(*FAST), run_dir)
    assert not sentinel.exists(), "unpickling the planted checkpoint ran code"
    assert any("ignoring unreadable checkpoint" in str(w.message) for w in caught)
    same_record(again, ref)  # trained afresh from step 0, to the same numbers


def test_a_checkpoint_without_its_sidecar_is_not_even_opened(tmp_path, monkeypatch):
    torch.save({"config_hash": "abc", "step": 3}, tmp_path / CKPT_NAME)  # e.g. copied in from elsewhere
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran before the config check"))
    with pytest.warns(UserWarning, match=f"its {META_NAME} is missing"):
        assert load_checkpoint(tmp_path, "abc") is None


# ---- 4. one owner per run dir ----


def _write_lock(run_dir: Path, **holder) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / lock.LOCK_NAME).write_text(json.dumps(holder))


def test_the_lock_names_its_holder_and_refuses_a_second_owner(tmp_path):
    with lock.run_lock(tmp_path / "run") as mine:
        held = json.loads((tmp_path / "run" / lock.LOCK_NAME).read_text())
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid() == mine["pid"]
        with pytest.raises(lock.RunLocked, match=f"pid {os.getpid()} on host"):
            lock.acquire(tmp_path / "run")
    assert not (tmp_path / "run" / lock.LOCK_NAME).exists()  # released


def test_a_stale_lock_is_taken_over(tmp_path):
    _write_lock(tmp_path / "dead", host=socket.gethostname(), pid=dead_pid(), nonce="x")
    _write_lock(tmp_path / "reused", host=socket.gethostname(), pid=os.getppid(), start="1", nonce="y")  # pid reused
    for name in ("dead", "reused"):
        with lock.run_lock(tmp_path / name):
            assert json.loads((tmp_path / name / lock.LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_lock_of_another_host_is_never_broken(tmp_path):
    _write_lock(tmp_path / "run", host="elsewhere.example", pid=dead_pid(), nonce="z")
    with pytest.raises(lock.RunLocked, match=r"on host elsewhere\.example.*remove .*\.lock"):
        lock.acquire(tmp_path / "run")


def test_an_unusable_lock_says_which_file_to_remove(tmp_path):
    """A fresh unreadable lock said "being trained by pid None on host None"; one with a non-integer pid on this
    host can never be proven stale, and gave no hint either."""
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / lock.LOCK_NAME).write_text("{not json")
    with pytest.raises(lock.RunLocked, match=r"\.lock is unreadable.*remove it") as e:
        lock.acquire(tmp_path / "garbage", timeout_s=0.05)
    assert "pid None" not in str(e.value)
    _write_lock(tmp_path / "strpid", host=socket.gethostname(), pid="12345", nonce="q")
    with pytest.raises(lock.RunLocked, match=r"remove .*\.lock"):
        lock.acquire(tmp_path / "strpid", timeout_s=0.05)


def test_a_new_owner_removes_the_temp_files_of_a_killed_one(make_cfg, tmp_path):
    """kill -9 between atomic_file's mkstemp and its rename leaves `.ckpt.json.<random>.tmp`; no rerun wrote that
    name again, so it stayed for ever (found by the random-kill sweep test)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = [run_dir / ".ckpt.json.3xpcl45o.tmp", run_dir / ".result.json.abc.tmp"]
    for p in stale:
        p.write_text("half")
    (run_dir / "keep.tmp").write_text("not ours")  # not atomic_file's pattern
    (run_dir / ".odd.tmp").mkdir()  # a directory is never removed
    with lock.run_lock(run_dir):
        assert not any(p.exists() for p in stale)
    assert (run_dir / "keep.tmp").exists() and (run_dir / ".odd.tmp").is_dir()
    (run_dir / ".odd.tmp").rmdir()
    (run_dir / ".metrics.jsonl.zz.tmp").write_text("half")
    train_run(make_cfg(*FAST), run_dir)
    assert [p for p in temp_files(run_dir) if p.name != "keep.tmp"] == []


def test_a_run_owned_by_a_live_process_is_left_alone(make_cfg, tmp_path):
    ppid = os.getppid()  # alive, on this host: the run's owner
    _write_lock(tmp_path / "run", host=socket.gethostname(), pid=ppid, start=lock._start_time(ppid), nonce="w")
    with pytest.raises(lock.RunLocked, match=f"being trained by pid {ppid}"):
        train_run(make_cfg(*FAST), tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [lock.LOCK_NAME]  # nothing written


@pytest.mark.slow
def test_a_second_launcher_of_a_live_run_skips_it_with_one_line(tmp_path, cache_dir):
    with lock.run_lock(tmp_path / "run"):  # this test process is the live owner
        r = train_cli(tmp_path / "run", *FAST, f"data.cache_dir={cache_dir}")
    assert r.returncode == 0, r.stderr
    assert f"skipped: {tmp_path / 'run'} is being trained by pid {os.getpid()}" in one_line(r.stdout)
    hydra_own = [".hydra", "train.log"]  # Hydra's bookkeeping, written before any of our code runs
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name not in hydra_own] == []  # not a byte of the run


def test_checkpoint_temp_names_are_unique(tmp_path):
    # A fixed temp name (what a naive writer would use) taken by another writer: a directory, so writing to it fails.
    (tmp_path / f".{CKPT_NAME}.tmp").mkdir()
    save_checkpoint(tmp_path, {"config_hash": "h", "step": 1, "w": torch.ones(2)})
    assert load_checkpoint(tmp_path, "h")["step"] == 1


_RACE = """
import json, sys, time
from scaling.base import lock
time.sleep(float(sys.argv[2]) - time.time())
try:
    with lock.run_lock(sys.argv[1]):
        time.sleep(0.5)
    print("won")
except lock.RunLocked:
    print("lost")
"""


@pytest.mark.slow
def test_processes_racing_for_a_stale_lock_elect_exactly_one(tmp_path):
    for seed in range(3):
        run_dir = tmp_path / f"run{seed}"
        _write_lock(run_dir, host=socket.gethostname(), pid=dead_pid(), nonce="stale")
        start = time.time() + 2.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RACE, str(run_dir), str(start)],
                cwd=ROOT,
                env=env(),
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert sorted(outs) == ["lost"] * 5 + ["won"], outs


# ---- 6. a full or read-only disk ----


def test_a_failed_checkpoint_write_leaves_no_temp_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"config_hash": "h", "step": 1, "w": torch.ones(2)})
    before = (tmp_path / CKPT_NAME).read_bytes()

    def full_disk(obj, f, *a, **k):  # writes a little, then the disk is full
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(f, "wb")) if isinstance(f, (str, Path)) else f
            out.write(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, {"config_hash": "h", "step": 2, "w": torch.ones(2)})
    assert temp_files(tmp_path) == [] and (tmp_path / CKPT_NAME).read_bytes() == before


@contextlib.contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False):
    """A small tmpfs at path: a real full (or read-only) disk. Needs root (CI containers run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the patched-writer test covers the writer")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.slow
def test_train_on_a_full_disk_records_the_failure_in_one_line(tmp_path, cache_dir):
    with tmpfs(tmp_path / "disk", "160k") as disk:  # config, metrics and result fit; the checkpoint does not
        r = train_cli(disk / "run", *FAST, "train.ckpt_every_s=0", f"data.cache_dir={cache_dir}")
        assert r.returncode == 1, r.stdout + r.stderr
        line = one_line(r.stderr)
        assert "No space left on device" in line and "Traceback" not in r.stderr
        rec = record(disk / "run")
        assert rec["status"] == "failed" and "No space left" in rec["error"]
        assert temp_files(disk) == []


@pytest.mark.slow
def test_a_sweep_on_a_full_disk_records_each_failure_in_one_line(tmp_path, cache_dir):
    with tmpfs(tmp_path / "disk", "200k") as disk:  # plan, configs and logs fit; no checkpoint does
        r = sweep_cli(disk / "runs")
        assert r.returncode == 1, r.stdout + r.stderr
        # stderr may start with the tokenizer's progress (a fresh cache); the error itself is its one last line
        assert "5 of 5 runs failed" in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stdout + r.stderr
        failed = [x for x in r.stdout.splitlines() if ": failed: " in x]
        assert len(failed) == 5 and all("No space left on device" in x for x in failed), r.stdout
        recs = records(disk / "runs")
        assert len(recs) == 5 and all(x["status"] == "failed" and "No space left" in x["error"] for x in recs.values())
        assert temp_files(disk) == [] and not list(disk.glob(f"runs/*/{lock.LOCK_NAME}"))


@pytest.mark.slow
def test_train_on_a_read_only_dir_is_one_line(tmp_path, cache_dir):
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as ro:
        r = train_cli(ro / "run", *FAST, f"data.cache_dir={cache_dir}")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Read-only file system" in one_line(r.stderr)


@pytest.mark.slow
def test_a_sweep_on_a_read_only_dir_is_one_line(tmp_path, cache_dir):
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as ro:
        r = sweep_cli(ro / "runs")
        assert r.returncode == 2, r.stdout + r.stderr
        assert "cannot write to sweep.dir" in one_line(r.stderr)


# ---- 5 and 7. bad input: one line naming the key, exit 2, nothing written or launched ----


def sweep_cmd(sweep_dir: Path, *args: str) -> list[str]:
    """A tiny IsoFLOP sweep (5 runs of seconds each), as in test_sweep_run; a +isoflop/+hparams in args replaces it."""
    budget = [] if any(a.startswith(("+isoflop=", "+hparams=")) for a in args) else ["+isoflop=2e9"]
    return python_m("scaling.sweep", *budget, *TINY_SWEEP, "train.ckpt_every_s=0", f"sweep.dir={sweep_dir}", *args)


def sweep_cli(sweep_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cmd(sweep_cmd(sweep_dir, *args), env=ENV, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, match",
    [
        (["model.vocab_size=999"], "disagrees with data.vocab_size"),
        (["data=files"], "needs data.path"),
        (["data=files", "data.path=/nonexistent/corpus"], "/nonexistent/corpus"),
        (["optim.lr=1e-3"], "'optim.lr=1e-3': the sweep plan sets optim.lr"),
        (["train.batch_size=64"], "'train.batch_size=64': the sweep plan sets train.batch_size"),
        (["train.eval_tokens=0"], "train.eval_tokens"),
        (["+isoflop=1e40"], "above the largest budget"),
    ],
)
def test_a_sweep_refuses_what_cannot_run_before_launching(tmp_path, cache_dir, args, match):
    r = sweep_cli(tmp_path / "runs", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_line(r.stderr)
    assert line.startswith("scaling.sweep: error:") and match in line, line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, match",
    [
        ("train.batch_size=abc", "train.batch_size"),
        ("optim.lr=abc", "optim.lr"),
        ("train.tokens=nan", "train.tokens"),
        ("optim.lr=-1", "optim.lr"),
        ("train.eval_tokens=0", "train.eval_tokens"),
        ("nosuchkey=1", "nosuchkey"),
        ("train.nosuchkey=1", "nosuchkey"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, cache_dir, override, match):
    r = train_cli(tmp_path / "run", *FAST, override, f"data.cache_dir={cache_dir}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert match in one_line(r.stderr)
    assert not (tmp_path / "run").exists()  # no record, no run dir


# ---- kill -9 at random points: a rerun gives identical records ----


def _kill_at_random(cmd: list[str], seed: int, window: float, watch: Path) -> None:
    """Start cmd, kill -9 its whole process group at a random instant once it has started writing under watch."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not any(watch.rglob("config.yaml")):
            time.sleep(0.01)
        time.sleep(random.Random(seed).uniform(0, window))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_a_run_killed_at_random_points_reruns_to_an_identical_record(make_cfg, tmp_path, cache_dir):
    # One thread on both sides (the reruns below use one): the in-process reference must not inherit a thread count.
    reference = train_run(make_cfg(*LONG, "train.threads=1"), tmp_path / "reference")
    args = [*TINY_DATA, "train.progress=false", "train.threads=1", *LONG, f"data.cache_dir={cache_dir}"]
    for seed in range(3):
        run_dir = tmp_path / f"killed{seed}"
        cmd = python_m("scaling.train", *args, f"hydra.run.dir={run_dir}")
        _kill_at_random(cmd, seed, window=reference["wall_time_s"], watch=run_dir)
        _kill_at_random(cmd, seed + 100, window=reference["wall_time_s"], watch=run_dir)  # killed again on resume
        r = train_cli(run_dir, *LONG, f"data.cache_dir={cache_dir}")
        assert r.returncode == 0, r.stderr
        same_record(record(run_dir), reference)
        steps = [r["step"] for r in metrics(run_dir)]
        assert steps == sorted(set(steps)) and temp_files(run_dir) == []


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory, cache_dir) -> dict[str, dict]:
    d = tmp_path_factory.mktemp("reference_sweep")
    r = sweep_cli(d, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return records(d)


@pytest.mark.slow
def test_a_sweep_killed_at_random_points_reruns_to_identical_records(reference_sweep, tmp_path, cache_dir):
    for seed in range(2):
        d = tmp_path / f"sweep{seed}"
        _kill_at_random(sweep_cmd(d), seed, window=8.0, watch=d)
        r = sweep_cli(d, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        got = records(d)
        assert got.keys() == reference_sweep.keys()
        for rid in got:
            same_record(got[rid], reference_sweep[rid])
        assert temp_files(d) == [] and not list(d.glob(f"*/{lock.LOCK_NAME}"))


@pytest.mark.slow
def test_two_concurrent_sweeps_on_one_dir_train_every_run_once(reference_sweep, tmp_path, cache_dir):
    procs = [
        subprocess.Popen(
            sweep_cmd(tmp_path), cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    got = records(tmp_path)
    assert got.keys() == reference_sweep.keys()
    stdout = "".join(o for o, _ in outs)
    for rid in got:
        assert stdout.count(f"] {rid}: completed") == 1, stdout  # trained by exactly one of the two sweeps
        same_record(got[rid], reference_sweep[rid])
        steps = [r["step"] for r in metrics(tmp_path / rid)]
        assert steps == sorted(set(steps))


@pytest.mark.slow
def test_killing_a_sweep_stops_its_joblib_workers(tmp_path, cache_dir):
    cmd = sweep_cmd(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    workers: set[int] = set()
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not workers:
            for p in tmp_path.glob(f"*/{lock.LOCK_NAME}"):
                with contextlib.suppress(OSError, ValueError):
                    pid = json.loads(p.read_text())["pid"]
                    if pid != proc.pid:
                        workers.add(pid)
            time.sleep(0.01)
        assert workers, "no worker took a run dir before the sweep ended"
        os.kill(proc.pid, signal.SIGKILL)  # the sweep only, as a user's kill -9 <pid> does
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(lock.running(w) for w in workers):
            time.sleep(0.1)
        assert not any(lock.running(w) for w in workers), "orphaned workers kept training"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)

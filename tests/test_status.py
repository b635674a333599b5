"""The status view (scaling.status) on a sweep with runs in every state, bad files, and a real run killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from scaling.status import main
from sweeps.progress import collect, render
from tests.helpers import ROOT, TINY_DATA, dead_pid, python_m

PLAN = {"run_id": None, "steps": 10, "batch_size": 1000, "lr": 0.001, "D": 10000, "est_seconds": 100}
OLD = time.time() - 3 * 3600


def _write(
    d: Path,
    *,
    result: dict | None = None,
    config: bool = True,
    log: list | None = None,
    tail: str = "",
    lock_pid: int | None = None,
    age: float | None = None,
) -> None:
    d.mkdir(parents=True)
    if config:
        (d / "config.yaml").write_text("train:\n  tokens: 10000\n  batch_size: 1000\n")
    if log is not None:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + tail)
    if result is not None:
        rec = {"status": "completed", "lr": 0.001, "batch_size": 1000, "steps": 10, "wall_time_s": 200.0} | result
        (d / "result.json").write_text(json.dumps(rec))
    if lock_pid is not None:
        (d / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": lock_pid, "start": None}))
    if age is not None:
        for f in d.iterdir():
            os.utime(f, (time.time() - age, time.time() - age))


def _rows(*tokens: int) -> list[dict]:
    return [{"step": t // 1000, "tokens": t, "loss": 5.0, "tokens_per_s": 100.0} for t in tokens]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    s = tmp_path / "runs" / "isoflop"
    ids = ["done", "div", "fail", "retry", "run", "stall", "killed", "gone", "cut", "noconf", "moved", "todo"]
    (s).mkdir(parents=True)
    head = ",".join(PLAN)
    (s / "plan.csv").write_text(
        "\n".join([head] + [",".join(str(v) for v in {**PLAN, "run_id": i}.values()) for i in ids]) + "\n"
    )
    # Trained in a pack of two (scaling.run.pack): its wall time counts half, 200 s of machine time like the others.
    _write(s / "done", result={"wall_time_s": 400.0, "packed_with": ["other"]}, log=_rows(5000, 10000))
    _write(s / "div", result={"status": "diverged", "error": "loss 99 at step 3 exceeds 3x the initial loss"})
    _write(s / "fail", result={"status": "failed", "error": "RuntimeError: boom\ntraceback..."})
    # failed before, and a rerun holds it now: the old record does not hide that it is training again
    # (another live process than "run"'s: two runs held by one pid are one pack)
    _write(s / "retry", result={"status": "failed"}, log=_rows(1000, 2000), lock_pid=os.getppid())
    _write(s / "run", log=_rows(2000, 4000), lock_pid=os.getpid())  # a live holder, logging now
    _write(s / "stall", log=_rows(2000, 4000), lock_pid=os.getpid(), age=3600)  # live holder, silent for 1 h
    _write(s / "killed", log=_rows(2000, 4000), lock_pid=dead_pid())  # its process is gone
    _write(s / "gone", log=_rows(2000), age=3600)  # no lock, silent for 1 h
    _write(s / "cut", log=_rows(2000, 3000), tail='{"step": 4, "tok')  # killed mid-write
    _write(s / "noconf", result={}, config=False)
    _write(s / "moved", result={"lr": 0.002})  # plan.csv was rewritten
    _write(s / "extra", result={})  # not in plan.csv
    return s


def test_every_state_is_told_apart(sweep):
    (s,) = collect(sweep.parent)
    state = {r.run_id: r for r in s.runs}
    expected = {
        "done": "completed",
        "div": "diverged",
        "fail": "failed",
        "retry": "running",
        "run": "running",
        "stall": "stalled",
        "killed": "interrupted",
        "gone": "interrupted",
        "cut": "running",
        "noconf": "problem",
        "moved": "problem",
        "todo": "not started",
        "extra": "completed",
    }
    assert {k: r.state for k, r in state.items()} == expected
    assert state["run"].done_frac == pytest.approx(0.4) and state["run"].eta_s == pytest.approx(60.0)
    assert state["cut"].done_frac == pytest.approx(0.3) and "line 3 unreadable (cut off" in state["cut"].note
    assert "lr 0.002 != plan 0.001" in state["moved"].note and "no config.yaml" in state["noconf"].note
    assert state["fail"].note == "RuntimeError: boom"
    assert state["retry"].done_frac == pytest.approx(0.2)
    assert s.planned == 12 and any("not in plan.csv" in n and "extra" in n for n in s.notes)
    # Work left: the three running runs (6000, 7000 and 8000 tokens to go at 100 tok/s) + the others at the plan's
    # 100 s, scaled by the finished runs' real 200 s per 100 s planned, for their unfinished part; ETA at 3 running.
    left = 60 + 70 + 80 + 2 * 200 * (1 - 0.4) + 200 * (1 - 0.2) + 200 + 200
    assert s.work_left_s == pytest.approx(left) and s.eta_s == pytest.approx(left / 3)


def test_render_names_every_problem_and_exit_code_says_not_finished(sweep, capsys):
    text = render(collect(sweep.parent), sweep.parent)
    for needle in (
        "isoflop  (plan.csv: 12 runs)",
        "2 completed",
        "2 interrupted",
        "1 not started",
        "2 problem",
        "stalled       stall",
        "noconf",
        "moved",
        "cut off mid-write",
        "not in plan.csv",
        "total: 1 sweep(s), 13 runs",
    ):
        assert needle in text, needle
    assert main([str(sweep.parent)]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_all_finished_exits_0_and_bad_input_exits_2(tmp_path, capsys):
    s = tmp_path / "runs"
    _write(s / "a", result={})
    _write(s / "b", result={"status": "diverged"})
    assert main([str(s)]) == 0
    assert "1 completed" in capsys.readouterr().out
    assert main([str(s), "--watch", "0.01"]) == 0  # --watch stops by itself once everything is finished
    assert "done" in capsys.readouterr().out
    (s / "plan.csv").write_text("run_id,steps\na,10\n")  # b is outside the plan: noted, but nothing is left to do
    assert main([str(s)]) == 0 and "1 run dir(s) not in plan.csv" in capsys.readouterr().out
    (s / "plan.csv").write_text("what,is,this\n1,2,3\n")  # unreadable plan: runs not started could be missing
    assert main([str(s)]) == 1 and "no run_id column" in capsys.readouterr().out
    for bad in ([str(tmp_path / "nope")], [str(tmp_path / "runs" / "a" / "result.json")]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "empty")])
    assert e.value.code == 2


def test_empty_or_headerless_plan_is_unusable_not_a_finished_plan(tmp_path, capsys):
    s = tmp_path / "runs"
    _write(s / "a", result={})
    for text in ("", "\n", "what,is,this\n"):  # cut off / header without run_id: runs not started are unknown
        (s / "plan.csv").write_text(text)
        assert main([str(s)]) == 1
        out = capsys.readouterr().out
        assert "plan.csv unusable" in out and "no plan.csv" not in out and "  done" not in out, (text, out)
    (s / "plan.csv").write_text("run_id,steps\n")  # a real plan with no rows left is fine
    assert main([str(s)]) == 0


@pytest.mark.parametrize("bad", [["--stall", "nan"], ["--stall", "inf"], ["--watch", "nan"]])
def test_non_finite_stall_or_watch_is_bad_input(tmp_path, capsys, bad):
    _write(tmp_path / "runs" / "a", result={})
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "runs"), *bad])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_garbage_everywhere_is_named_never_a_traceback(tmp_path):
    s = tmp_path / "runs"
    _write(s / "a", log=[], tail="not json at all\n\x00\x01garbage")
    _write(s / "b", result=None, log=_rows(1000))
    (s / "b" / "result.json").write_text("{truncated")
    (s / "plan.csv").write_text("what,is,this\n1,2,3\n")
    (sweep,) = collect(s)
    state = {r.run_id: r for r in sweep.runs}
    assert state["a"].state == "running" and "line 1, 2 unreadable" in state["a"].note
    assert state["b"].state == "problem" and "result.json unreadable" in state["b"].note
    assert any("no run_id column" in n for n in sweep.notes)


def test_a_record_with_an_unknown_status_is_a_problem_not_running(tmp_path):
    s = tmp_path / "runs"
    _write(s / "weird", result={"status": "weird"}, log=_rows(1000), age=3 * 3600)  # was "interrupted"/"running"
    _write(s / "none", result={"status": None}, log=_rows(1000))
    state = {r.run_id: r for r in collect(s)[0].runs}
    assert state["weird"].state == "problem" and "unknown status 'weird'" in state["weird"].note
    assert state["none"].state == "problem"


def test_bench_generator_and_view_agree(tmp_path):
    from scaling.benchmarks.status import generate

    kinds = generate(tmp_path, 200, sweeps=2)
    c = sum((s.counts() for s in collect(tmp_path)), start=Counter())
    assert c["completed"] == kinds["completed"] and c["problem"] == kinds["no_config"]
    assert c["running"] == kinds["running"] + kinds["cut_off"] and c["interrupted"] == kinds["killed"]
    assert c["not started"] == kinds["not started (plan rows)"]


@pytest.mark.slow
def test_a_run_killed_mid_run_is_interrupted_with_its_progress(tmp_path, cache_dir):
    run_dir = tmp_path / "runs" / "killed"
    args = [
        *TINY_DATA,
        "train.progress=false",
        "train.tokens=400000",
        "train.batch_size=1024",
        "train.log_every=2",
        f"data.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(
        python_m("scaling.train", *args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    metrics = run_dir / "metrics.jsonl"
    while (
        (not metrics.exists() or metrics.read_text().count("\n") < 3) and time.time() < deadline and proc.poll() is None
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "result.json").exists(), "the run finished before it could be killed; make it longer"
    (during,) = collect(tmp_path / "runs", stall_s=3600)
    # With a run lock its dead process is seen at once; without one the run looks alive until the stall threshold.
    assert during.runs[0].state in ("interrupted", "running")
    time.sleep(1.2)
    (after,) = collect(tmp_path / "runs", stall_s=1.0)
    r = after.runs[0]
    assert r.state == "interrupted" and 0 < r.done_frac < 1 and r.idle_s >= 1.0
    assert "killed" in render([after], tmp_path / "runs")


# ------------------------------------------------ bounded memory, no hangs: what a shared runs directory may hold
def _collect_within(root: Path, seconds: float = 60.0, fifos: tuple[Path, ...] = ()) -> list:
    """collect(root) in a thread: a hang fails the test (and the FIFOs are opened for writing to free the reader)."""
    import threading

    out: list = []
    t = threading.Thread(target=lambda: out.append(collect(root)), daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        for f in fifos:  # unblock a reader stuck in open(): a writer appears and leaves at once
            os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"collect({root}) still running after {seconds:.0f} s")
    return out[0]


def test_a_fifo_named_result_json_or_metrics_jsonl_is_named_and_skipped(tmp_path):
    s = tmp_path / "runs"
    _write(s / "rec", log=_rows(1000))
    os.mkfifo(s / "rec" / "result.json")
    _write(s / "log")
    os.mkfifo(s / "log" / "metrics.jsonl")
    _write(s / "ok", result={})
    (s / "plan.csv").unlink(missing_ok=True)
    state = {
        r.run_id: r for r in _collect_within(s, fifos=(s / "rec" / "result.json", s / "log" / "metrics.jsonl"))[0].runs
    }
    assert state["rec"].state == "problem" and "result.json is a FIFO" in state["rec"].note
    assert state["log"].state == "problem" and "metrics.jsonl is a FIFO" in state["log"].note
    assert state["ok"].state == "completed"
    os.mkfifo(s / "plan.csv")
    (sweep,) = _collect_within(s, fifos=(s / "plan.csv",))
    assert sweep.plan_unusable and any("plan.csv is a FIFO" in n for n in sweep.notes)


def test_oversized_records_and_plans_are_refused_by_name(tmp_path, monkeypatch):
    import sweeps.progress as progress
    import sweeps.run_state as run_state

    # The caps are MiBs; here they are shrunk so that tiny files stand for a 1 GB record and a 1,000,000-row plan.
    monkeypatch.setattr(run_state, "RECORD_CAP", 4096)
    monkeypatch.setattr(progress, "PLAN_CAP", 4096)
    s = tmp_path / "runs"
    _write(s / "big", result={"pad": "x" * 5000})
    _write(s / "ok", result={})
    (s / "plan.csv").write_text("run_id,steps\n" + "".join(f"r{i},10\n" for i in range(1000)))
    (sweep,) = collect(s)
    state = {r.run_id: r for r in sweep.runs}
    assert state["big"].state == "problem" and "over the 4,096 bytes a result.json may be" in state["big"].note
    assert state["ok"].state == "completed"
    assert sweep.plan_unusable and any("plan.csv is" in n and "limit" in n for n in sweep.notes)


def test_a_log_line_over_8_kb_is_read(tmp_path):
    s = tmp_path / "runs"
    long_rows = [r | {"note": "x" * 20_000} for r in _rows(2000, 4000)]
    _write(s / "run", log=long_rows, lock_pid=os.getpid())
    (run,) = collect(s)[0].runs
    assert run.state == "running" and run.tokens_per_s == 100.0 and run.done_frac == 0.4, run
    assert "no log line yet" not in render(collect(s), s)


def test_the_walk_stays_in_the_tree_it_was_given(tmp_path, capsys, monkeypatch):
    import sweeps.progress as progress

    s = tmp_path / "runs"
    _write(s / "a", result={})
    (s / "escape").symlink_to("/", target_is_directory=True)  # a link inside: never followed
    assert [r.run_id for r in _collect_within(s)[0].runs] == ["a"]
    (tmp_path / "root").symlink_to("/", target_is_directory=True)  # a root that is the filesystem's: refused at once
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "root")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "filesystem's root" in err and len(err.strip().splitlines()) == 1
    # Any other huge tree: the walk gives up after WALK_CAP directories without run files, by name.
    monkeypatch.setattr(progress, "WALK_CAP", 50, raising=False)
    for i in range(60):
        (tmp_path / "big" / f"d{i}").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "big")])
    assert e.value.code == 2 and "not a runs directory" in capsys.readouterr().err


def test_a_fifo_named_lock_is_not_read_blocking(tmp_path):
    from scaling.base.lock import RunLocked, acquire

    s = tmp_path / "runs"
    _write(s / "run", log=_rows(1000))
    os.mkfifo(s / "run" / ".lock")
    (sweep,) = _collect_within(s, fifos=(s / "run" / ".lock",))
    assert sweep.runs[0].state == "running"  # nobody is known to hold it: its log decides
    with pytest.raises(RunLocked, match="is a FIFO"):
        acquire(s / "run")  # training refuses it by name instead of waiting on it forever

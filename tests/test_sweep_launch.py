"""How the sweeper launches its jobs: one launcher call for joblib (free workers take the next job), live progress
from the run dirs meanwhile, and jobs a dead worker's aborted call never finished launched again."""

from __future__ import annotations

import time
import types
from pathlib import Path

import pytest

from analysis.synthetic import make_study
from scaling.base.record import RunRecord
from sweeps.packing import Unit
from sweeps.sweeper import ScalingSweeper, SweepFailed, _Watcher


def _records(n: int) -> list[dict]:
    recs = [r for r in make_study(budgets=(1e17,), n_sizes=n, n_diverged=0, n_failed=0) if r["sweep"] == "isoflop"]
    return recs[:n]


class FakeJoblib:
    """Stands in for Hydra's joblib launcher: each call 'trains' jobs by writing their records; the first call
    dies after `die_after` jobs, as a joblib call does when a worker is killed."""

    def __init__(self, dirs: list[Path], recs: list[dict], die_after: int | None):
        self.dirs, self.recs, self.die_after, self.calls = dirs, recs, die_after, []

    def launch(self, job_overrides, initial_job_idx):
        self.calls.append([o[0] for o in job_overrides])
        for n, (job, *_) in enumerate(job_overrides):  # the sweep adds train.progress=false to parallel jobs
            if self.die_after is not None and n == self.die_after:
                self.die_after = None
                raise RuntimeError("A worker process managed by the executor was unexpectedly terminated.")
            i = int(job)
            RunRecord.from_dict(self.recs[i]).write(self.dirs[i])
        return [None] * len(job_overrides)


def _sweeper(launcher) -> ScalingSweeper:
    s = ScalingSweeper()
    s.launcher = launcher
    return s


def _launch(tmp_path: Path, die_after: int | None, n: int = 6, est: list[float] | None = None):
    recs = _records(n)
    dirs = [tmp_path / r["run_id"] for r in recs]
    launcher = FakeJoblib(dirs, recs, die_after)
    points = [types.SimpleNamespace(run_id=r["run_id"]) for r in recs]
    units = [Unit((i,)) for i in range(n)]
    jobs = [[str(i)] for i in range(n)]
    summary = _sweeper(launcher)._launch(points, units, jobs, est or [1.0] * n, dirs, tmp_path)
    return launcher, summary


def test_joblib_jobs_go_in_one_call(tmp_path):
    launcher, summary = _launch(tmp_path, die_after=None)
    assert launcher.calls == [[str(i) for i in range(6)]]
    assert summary["completed"] == 6


def test_longest_jobs_go_first_so_no_long_job_starts_last(tmp_path):
    # Free workers take the next job: plan order would leave a 9 s job for last while the other worker idles.
    launcher, summary = _launch(tmp_path, die_after=None, est=[1.0, 3.0, 2.0, 2.0, 1.0, 9.0])
    assert launcher.calls == [["5", "1", "2", "3", "0", "4"]]  # ties keep plan order
    assert summary["completed"] == 6


def test_jobs_a_dead_workers_call_never_finished_are_launched_again(tmp_path, capsys):
    launcher, summary = _launch(tmp_path, die_after=2)
    assert launcher.calls == [[str(i) for i in range(6)], [str(i) for i in range(2, 6)]]
    assert summary["completed"] == 6 and summary["failed"] == 0
    out = capsys.readouterr().out
    assert "launch failed for 6 run(s): RuntimeError" in out and "relaunching 4 job(s)" in out
    assert out.count(": completed") == 6  # every run reported once


def test_a_call_that_finished_nothing_is_not_retried(tmp_path, capsys):
    with pytest.raises(SweepFailed, match="6 of 6 runs failed"):
        _launch(tmp_path, die_after=0)
    assert "relaunching" not in capsys.readouterr().out


def test_the_watcher_reports_runs_as_their_records_appear(tmp_path, capsys):
    recs = _records(3)
    dirs = [tmp_path / r["run_id"] for r in recs]
    w = _Watcher([Unit((0,)), Unit((1, 2))], dirs, [10.0, 5.0, 5.0], time.time(), 0.0, 20.0, poll_s=0.02)
    try:
        RunRecord.from_dict(recs[0]).write(dirs[0])
        deadline = time.time() + 10
        while "1/3 runs" not in capsys.readouterr().out:
            assert time.time() < deadline
            time.sleep(0.02)
        for i in (1, 2):
            RunRecord.from_dict(recs[i]).write(dirs[i])
        while "3/3 runs" not in (out := capsys.readouterr().out):
            assert time.time() < deadline
            time.sleep(0.02)
        assert "ETA 0.0s" in out
    finally:
        w.stop()

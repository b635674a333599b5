"""The status view under reuse (sweep.reuse): trunks are shown, a running trunk counts as a running process, and the
work left pays each trunk once and each branch its own share, calibrated on branches' own wall times."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from sweeps.progress import collect, render

# One trunk T serving three branches (shared 80% of each D) and one run alone; est_seconds = D / 1000 s.
COLS = ("run_id", "steps", "batch_size", "lr", "D", "est_seconds", "trunk", "shared_tokens")
ROWS = [
    ("b1", 10, 1000, 0.001, 10000, 10.0, "T", 8000),
    ("b2", 20, 1000, 0.001, 20000, 20.0, "T", 16000),
    ("b3", 40, 1000, 0.001, 40000, 40.0, "T", 32000),
    ("alone", 10, 1000, 0.002, 10000, 10.0, "", 0),
]


def _sweep(tmp_path: Path) -> Path:
    s = tmp_path / "runs" / "hparams"
    s.mkdir(parents=True)
    lines = [",".join(COLS)] + [",".join(str(v) for v in row) for row in ROWS]
    (s / "plan.csv").write_text("\n".join(lines) + "\n")
    return s


def _trunk(s: Path, tokens: int, *, live: bool, record: str | None = None) -> Path:
    d = s / "trunks" / "T"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("train:\n  tokens: 40000\n  batch_size: 1000\n")
    rows = [{"step": t // 1000, "tokens": t, "loss": 5.0, "tokens_per_s": 1000.0} for t in (tokens - 1000, tokens)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if live:
        (d / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": None}))
    if record is not None:
        (d / "trunk.json").write_text(json.dumps({"trunk": "T", "status": record}))
    return d


def _branch_done(s: Path, rid: str, wall: float, shared: int, D: int) -> None:
    d = s / rid
    d.mkdir()
    (d / "config.yaml").write_text("train:\n  tokens: 1\n")
    rec = {"status": "completed", "lr": 0.001, "batch_size": 1000, "steps": D // 1000, "wall_time_s": wall}
    (d / "result.json").write_text(json.dumps(rec | {"trunk": "T", "shared_tokens": shared, "D": D}))


def test_nothing_started_pays_each_trunk_once_and_each_branch_its_own_share(tmp_path):
    s = _sweep(tmp_path)
    (sweep,) = collect(tmp_path / "runs")
    assert [t.state for t in sweep.trunks] == ["not started"]
    # own shares 2 + 4 + 8 s, the trunk to 32,000 tokens at b3's 1 ms per token: 32 s; the run alone 10 s.
    assert sweep.work_left_s == pytest.approx(2 + 4 + 8 + 32 + 10)
    assert sum(r[5] for r in ROWS) == 80  # what the same runs would cost trained alone: the view no longer says 80
    assert "trunks (trunks/): 1 not started" in render([sweep], tmp_path / "runs")
    assert s.exists()


def test_a_running_trunk_is_a_running_process_with_its_own_eta(tmp_path):
    s = _sweep(tmp_path)
    _trunk(s, 16000, live=True)
    # b1 finished: its record times its own part (4 s) against its own share of the estimate (2 s): today runs 2x.
    _branch_done(s, "b1", wall=4.0, shared=8000, D=10000)
    (sweep,) = collect(tmp_path / "runs")
    (trunk,) = sweep.trunks
    assert trunk.state == "running" and trunk.done_frac == pytest.approx(0.5)
    # b2 and b3: own shares 4 and 8 s at 2x; the trunk 16,000 tokens more at its measured 1,000 tokens/s: 16 s;
    # the run alone 10 s at 2x.
    assert sweep.work_left_s == pytest.approx(2 * (4 + 8) + 16 + 2 * 10)
    assert sweep.eta_s == pytest.approx(sweep.work_left_s)  # one process: the trunk's
    text = render([sweep], tmp_path / "runs")
    assert "trunks (trunks/): 1 running" in text and "running       T  50%" in text
    assert "nothing running" not in text and "at 1 running process(es)" in text


def test_a_trunk_and_the_branch_it_trains_are_one_process(tmp_path):
    s = _sweep(tmp_path)
    _trunk(s, 16000, live=True)
    d = s / "b2"
    d.mkdir()
    (d / "config.yaml").write_text("train:\n  tokens: 20000\n  batch_size: 1000\n")
    rows = [{"step": k, "tokens": 1000 * k, "loss": 5.0, "tokens_per_s": 1000.0} for k in (17, 18)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": None}))
    (sweep,) = collect(tmp_path / "runs")
    assert {r.run_id: r.state for r in sweep.runs}["b2"] == "running"
    assert "at 1 running process(es)" in render([sweep], tmp_path / "runs")


@pytest.mark.parametrize("status", ["completed", "diverged"])
def test_a_finished_trunk_costs_nothing_more(tmp_path, status):
    s = _sweep(tmp_path)
    old = time.time() - 3600
    t = _trunk(s, 32000, live=False, record=status)
    for f in t.iterdir():
        os.utime(f, (old, old))
    (sweep,) = collect(tmp_path / "runs")
    assert [x.state for x in sweep.trunks] == [status]
    assert sweep.work_left_s == pytest.approx(2 + 4 + 8 + 10)


def test_an_interrupted_trunk_is_named_and_its_rest_is_counted(tmp_path):
    s = _sweep(tmp_path)
    t = _trunk(s, 24000, live=False)
    old = time.time() - 3600
    for f in t.iterdir():
        os.utime(f, (old, old))
    (sweep,) = collect(tmp_path / "runs")
    assert [x.state for x in sweep.trunks] == ["interrupted"]
    # 8,000 trunk tokens to b3's branch point at 1 ms each, plus every run's own share
    assert sweep.work_left_s == pytest.approx(8 + 2 + 4 + 8 + 10)
    assert "interrupted   T" in render([sweep], tmp_path / "runs")

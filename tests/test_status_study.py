"""scaling.status on a study: its stages (done, running, planned next), an ETA that counts a pack as one process and
times what is left by the throughput this study's finished runs measured (sweeps.study_view, sweeps.progress)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from scaling.base.studyfile import write_study
from scaling.status import main
from sweeps.progress import collect

HEAD = "run_id,steps,batch_size,lr,D,est_seconds"


def plan(d: Path, rows: dict[str, float]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "plan.csv").write_text(HEAD + "\n" + "".join(f"{r},10,1000,0.001,10000,{e}\n" for r, e in rows.items()))


def run(d: Path, *, result: dict | None = None, tokens: int | None = None, pid: int | None = None) -> None:
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("train:\n  tokens: 10000\n  batch_size: 1000\n")
    if tokens is not None:
        (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "tokens": tokens, "tokens_per_s": 100.0}) + "\n")
    if result is not None:
        rec = {"status": "completed", "lr": 0.001, "batch_size": 1000, "steps": 10} | result
        (d / "result.json").write_text(json.dumps(rec))
    if pid is not None:
        (d / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "start": None}))


def test_a_pack_is_one_process_that_ends_with_its_last_run(tmp_path):
    s = tmp_path / "hparams"
    plan(s, {"a": 100, "b": 100, "c": 100, "d": 100})
    for rid, tokens in (("a", 4000), ("b", 4000), ("c", 2000)):  # one pack: 60 s, 60 s and 80 s to go
        run(s / rid, tokens=tokens, pid=os.getpid())
    (sweep,) = collect(tmp_path)
    assert {r.proc for r in sweep.runs if r.state == "running"} == {f"{socket.gethostname()}:{os.getpid()}"}
    assert sweep.work_left_s == pytest.approx(80 + 100)  # the pack's last run, then d at its plan estimate
    assert sweep.eta_s == pytest.approx(180)  # one process, not three


def study(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    stages = [
        {"kind": "hparams", "dir": "hparams", "budgets": [1e9], "runs_per_budget": 2},
        {"kind": "isoflop", "dir": "isoflop", "budgets": [1e11, 2e11], "runs_per_budget": 5},
    ]
    write_study(root, {"name": "mini", "stages": stages, "analysis": {}})
    plan(root / "hparams", {"h1": 5, "h2": 5})
    for rid in ("h1", "h2"):  # 1e9 FLOPs in 10 s each (one of them packed with another run: 20 s of wall time)
        extra = {"wall_time_s": 20.0, "packed_with": ["x"]} if rid == "h1" else {"wall_time_s": 10.0}
        run(root / "hparams" / rid, result={"C": 1e9} | extra)
    return root


def test_a_study_shows_its_stages_and_times_the_next_by_todays_throughput(tmp_path, capsys):
    root = study(tmp_path)
    assert main([str(root)]) == 1  # stage 2 is still to come: not finished
    out = capsys.readouterr().out
    assert "study mini" in out and "stage 1/2 hparams: done: 2 completed" in out
    # 5 runs x (1e11 + 2e11) FLOPs at the 1e8 FLOP/s the finished runs measured (2e9 FLOPs in 20 s)
    line = next(x for x in out.splitlines() if "stage 2/2 isoflop" in x)
    assert "planned next: 2 budget(s) x 5 runs (before sweep.extend)" in line and "~4.2h of work" in line
    assert "at the 1e+08 FLOP/s this study's runs measured" in line and "nothing running: 4.2h of work left" in out


def test_a_stage_with_no_finished_run_is_calibrated_by_the_others(tmp_path, capsys):
    root = study(tmp_path)
    plan(root / "isoflop", {"i1": 100, "i2": 100})  # planned at a cached throughput; nothing finished yet
    run(root / "isoflop" / "i1", tokens=5000, pid=os.getpid())
    sweeps = {s.path.name: s for s in collect(root)}
    # the study's finished runs took 2x their plan (20 s of machine time for 10 s planned): today's load
    assert sweeps["isoflop"].work_left_s == pytest.approx(50 + 2 * 100)
    assert main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "stage 2/2 isoflop: running: 0 completed, 1 running, 1 not started, 4.2m of work left" in out
    assert "study ETA 4.2m at the 1 process(es) running now" in out

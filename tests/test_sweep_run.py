"""Real tiny IsoFLOP sweeps (seconds per run): basic and joblib launchers, and a sweep killed mid-way then resumed."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, TINY_SWEEP, python_m, record_keys, records, run_cmd

pytestmark = pytest.mark.slow  # every test here runs scaling.sweep in a subprocess

C = 2e9  # with a 32-token context and >= 10 steps a run: 5 shapes from 1 layer x 16 to 3 layers x 48
TINY = [f"+isoflop={C}", *TINY_SWEEP, "train.ckpt_every_s=0"]
RECORD_KEYS = record_keys(
    "schema_version",
    "run_id",
    "status",
    "sweep",
    "budget",
    "model",
    "M",
    "D",
    "C",
    "lr",
    "batch_size",
    "steps",
    "val_loss",
    "val_bpb",
    "config_hash",
    "wall_time_s",
)


def sweep_cmd(sweep_dir: Path, *extra: str) -> list[str]:
    return python_m("scaling.sweep", *TINY, f"sweep.dir={sweep_dir}", *extra)


def run_sweep(sweep_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    r = run_cmd(sweep_cmd(sweep_dir, *extra), env={"PYTHONPATH": str(ROOT)}, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """The uninterrupted sweep through the basic (sequential) launcher."""
    d = tmp_path_factory.mktemp("basic")
    return d, run_sweep(d)


def check_complete(sweep_dir: Path) -> dict[str, dict]:
    plan = (sweep_dir / "plan.csv").read_text().splitlines()[1:]
    res = records(sweep_dir)
    assert len(res) == len(plan) >= 5
    for rid, r in res.items():
        assert RECORD_KEYS <= set(r) and r["status"] == "completed" and r["run_id"] == rid
        assert abs(r["C"] / C - 1) <= 0.01 and r["C"] == pytest.approx(r["M"] * r["D"])
        assert r["sweep"] == "isoflop" and r["budget"] == C and r["val_loss"] > 0
    return res


def test_basic_launcher_sweep(reference):
    d, r = reference
    check_complete(d)
    assert (
        f"sweep summary: {len(records(d))} runs: {len(records(d))} completed, 0 diverged, 0 failed, 0 skipped"
        in r.stdout
    )
    assert "ETA" in r.stdout


def test_joblib_launcher_sweep_matches_basic(reference, tmp_path):
    run_sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    res, ref = check_complete(tmp_path), records(reference[0])
    assert res.keys() == ref.keys()
    for rid in res:
        assert res[rid]["val_loss"] == pytest.approx(ref[rid]["val_loss"], abs=1e-6)


def test_killed_sweep_resumes_without_loss(reference, tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        sweep_cmd(tmp_path),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            done = list(tmp_path.glob("*/result.json"))
            ckpts = [p for p in tmp_path.glob("*/ckpt.pt") if not (p.parent / "result.json").exists()]
            if done and ckpts:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # a real kill: no handler runs, files are left as they are
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("*/result.json")}
    interrupted = [p.parent.name for p in tmp_path.glob("*/ckpt.pt") if p.parent.name not in finished]
    assert finished and interrupted

    r = run_sweep(tmp_path)
    res, ref = check_complete(tmp_path), records(reference[0])
    assert res.keys() == ref.keys()
    for rid, mtime in finished.items():  # finished runs were not retrained
        assert (tmp_path / rid / "result.json").stat().st_mtime_ns == mtime
    assert f"{len(finished)} skipped" in r.stdout
    for rid in res:  # and every number equals the uninterrupted sweep's
        assert res[rid]["val_loss"] == pytest.approx(ref[rid]["val_loss"], abs=1e-6), rid
        assert res[rid]["D"] == ref[rid]["D"] and res[rid]["config_hash"] == ref[rid]["config_hash"]

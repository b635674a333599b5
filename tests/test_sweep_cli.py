"""`python -m scaling.sweep` as a user runs it: dry-run plan.csv, estimates, one-line errors before anything runs."""

import csv
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, python_m, run_cmd

pytestmark = pytest.mark.slow  # every test here runs scaling.sweep in a subprocess


def sweep(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cmd(python_m("scaling.sweep", *args), cwd=cwd, env={"PYTHONPATH": str(ROOT)}, timeout=timeout)


def test_dry_run_1e17_plan_csv(tmp_path, cache_dir):
    r = sweep("+isoflop=1e17", "sweep.dry_run=true", f"sweep.dir={tmp_path}", "hydra/launcher=slurm_gpu")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "plan.csv").open()))
    assert {
        "run_id",
        "n_layer",
        "d_model",
        "n_head",
        "n_kv_head",
        "M",
        "D",
        "C",
        "lr",
        "batch_size",
        "N2",
        "steps",
        "est_seconds",
    } <= set(rows[0])
    Ms = [float(x["M"]) for x in rows]
    assert min(Ms) < 1.4e8 < max(Ms)
    assert all(abs(float(x["C"]) / 1e17 - 1) <= 0.01 for x in rows)
    assert rows[0]["run_id"].startswith("iso_C1e+17_L") and "shape rule gpu" in r.stdout and "assumed" in r.stdout
    assert "launcher SlurmLauncher" in r.stdout  # the preset composes; a dry run submits nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.csv"]  # trained nothing


def test_dry_run_estimates_from_measured_throughput(tmp_path, cache_dir):
    r = sweep("+isoflop=2e9", "model.seq_len=32", "sweep.dry_run=true", f"sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "plan.csv").open()))
    assert all(x["est_measured"] == "True" and float(x["est_seconds"]) > 0 for x in rows)
    assert "measured" in r.stdout and "FLOP/s at M=" in r.stdout and "grid slid" in r.stdout
    assert (cache_dir / "throughput.json").exists()


def test_a_cached_throughput_is_rechecked_under_todays_load(tmp_path, cache_dir):
    args = ("+isoflop=2e9", "model.seq_len=32", "sweep.dry_run=true", f"sweep.throughput_cache={tmp_path / 't.json'}")
    first = sweep(*args, f"sweep.dir={tmp_path / 'a'}")
    again = sweep(*args, f"sweep.dir={tmp_path / 'b'}")
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert "throughput re-checked now" not in first.stdout  # measured now: nothing to re-check
    assert re.search(r"throughput re-checked now: [0-9.]+x of the cached table", again.stdout), again.stdout


@pytest.mark.parametrize(
    "args, match",
    [
        (["+isoflop=abc"], "is not a number"),
        (["+isoflop=-1"], "must be a positive"),
        (["+isoflop=1e6"], "smallest feasible budget is"),
        (["+hparams=1e17", "sweep.lr_points=2"], "at least 3 points"),
        (["+isoflop=1e17", "hydra/launcher=nope"], "hydra/launcher/nope"),
        (["+isoflop=1e17", "sweep.laws=/nonexistent/report.json"], "cannot read"),
        (["+isoflop=1e17", "+sweep.n_shape=5"], "sweep.n_shape is not a sweep key: did you mean sweep.n_shapes?"),
        (["+isoflop=1e17", "sweep.n_shape=5"], "sweep.n_shape is not a sweep key: did you mean sweep.n_shapes?"),
    ],
)
def test_bad_input_is_one_line_before_anything_runs(tmp_path, cache_dir, args, match):
    r = sweep(*args, f"sweep.dir={tmp_path / 'runs'}")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and lines[0].startswith("scaling.sweep: error:"), r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

"""Files planted in a runs tree: a FIFO named result.json or metrics.jsonl is named and skipped (it used to block
analysis.fit forever), an oversized file is refused by name before it is read, and the walk does not follow links
out of the tree it was given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import files
from analysis.curves import load_curves
from analysis.load import InputError, load_runs
from analysis.synthetic import make_study, write_study
from scaling.base.safe_read import Refused

ROOT = Path(__file__).resolve().parents[1]
fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")


def _study(root: Path) -> list[dict]:
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_sizes=5, lr_steps=3, bs_steps=3, n_diverged=0, n_failed=0)
    write_study(recs, root)
    for r in recs:  # a short training log per run, for the training-curve figures
        (root / r["run_id"] / "metrics.jsonl").write_text(
            "".join(f'{{"step": {s}, "tokens": {s * 1000}, "loss": {5 - s / 10}, "loss_ema": 5}}\n' for s in (1, 2))
        )
    return recs


@fifo
def test_fifos_named_like_run_files_are_named_and_skipped_not_waited_on(tmp_path):
    root = tmp_path / "runs"
    _study(root)
    (root / "planted").mkdir()
    os.mkfifo(root / "planted" / "result.json")
    os.mkfifo(root / "planted" / "metrics.jsonl")
    run = next(p for p in root.iterdir() if p.name.endswith("00000"))
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    cmd = [sys.executable, "-m", "analysis.fit", str(root), "--bootstrap", "10", "--out", str(tmp_path / "out")]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)  # blocked forever before
    assert p.returncode == 0, p.stderr
    assert f"skipping {root / 'planted' / 'result.json'} is a FIFO, not a regular file" in p.stderr
    assert f"training curves: {run / 'metrics.jsonl'} is a FIFO, not a regular file; skipped" in p.stderr
    assert (tmp_path / "out" / "plots" / "isoflop_training_curves.png").is_file()
    # The FIFO given as the input itself: one line, exit 2.
    cmd = [sys.executable, "-m", "analysis.fit", str(root / "planted" / "result.json"), "--out", str(tmp_path / "o2")]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "is a FIFO, not a regular file" in p.stderr and not (tmp_path / "o2").exists()


@fifo
def test_a_fifo_csv_input_is_one_line_error(tmp_path):
    os.mkfifo(tmp_path / "table.csv")
    with pytest.raises(InputError, match="table.csv is a FIFO, not a regular file"):
        load_runs([tmp_path / "table.csv"])


def test_oversized_files_are_refused_by_name_before_reading(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    recs = _study(root)
    big = root / recs[0]["run_id"] / "result.json"
    big.write_text(big.read_text() + " " * 5000)  # still valid JSON: only its size is wrong
    log = root / recs[1]["run_id"] / "metrics.jsonl"
    log.write_text(log.read_text() * 100)
    monkeypatch.setitem(files.CAPS, "result.json", 4096)
    monkeypatch.setitem(files.CAPS, "metrics.jsonl", 4096)
    df, warns = load_runs([root])
    assert len(df) == len(recs) - 1 and recs[0]["run_id"] not in set(df.run_id)
    size = f"{big.stat().st_size:,} bytes"
    assert any(f"skipping {big} is {size}, over the 4,096 bytes a result.json may be" in w for w in warns), warns
    curves = load_curves(root)
    # The big log's run, and the run whose record is too big to join its log with, are left out.
    assert recs[1]["run_id"] not in set(curves.run_id) and curves.run_id.nunique() == len(recs) - 2
    assert any(f"{log} is {log.stat().st_size:,} bytes, over the 4,096 bytes" in w for w in curves.attrs["warnings"])


def test_caps_are_checked_against_the_bytes_not_only_fstat(tmp_path):
    f = tmp_path / "result.json"
    f.write_text("x" * 100)
    with pytest.raises(Refused, match="over the"):
        files.read_bytes(f, cap=10)
    assert files.read_bytes(f, cap=100) == b"x" * 100


def test_the_walk_does_not_follow_links_out_of_the_tree(tmp_path):
    root, outside = tmp_path / "runs", tmp_path / "elsewhere"
    recs = _study(root)
    other = make_study(budgets=(1e17,), n_sizes=3, lr_steps=1, bs_steps=1, n_diverged=0, n_failed=0, dataset="x@1")
    write_study(other, outside)
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "linked_file").mkdir()
    (root / "linked_file" / "result.json").symlink_to(outside / other[0]["run_id"] / "result.json")
    (root / "loop").symlink_to(root, target_is_directory=True)  # a link back into the tree: not walked twice
    df, warns = load_runs([root])
    assert len(df) == len(recs) and set(df.dataset) == {"synthetic@00000000"}
    assert any("1 linked directory below" in w and "linked_dir" in w for w in warns), warns
    assert any("linked_file/result.json: links outside" in w for w in warns), warns
    inside = root / "alias"
    (inside / "x").mkdir(parents=True)
    (inside / "x" / "result.json").symlink_to(root / recs[0]["run_id"] / "result.json")  # stays inside: read
    df2, _ = load_runs([root])
    assert len(df2) == len(recs) + 1

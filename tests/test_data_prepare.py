"""The prepare step: parallel over processes with the same bytes as one process, resumable after kill -9 with an
identical cache, a lock so a concurrent preparer waits, and the `python -m scaling.prepare` command."""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_data import cfg, write_docs

from scaling.data import prepare_data
from scaling.data.cache import locked

pytestmark = pytest.mark.slow  # every test here starts processes


def snapshot(entry: Path) -> dict[str, str]:
    """Every file of a cache entry by content; meta.json without its build timings (the only non-deterministic
    field: seconds the build took)."""
    out = {}
    for f in sorted(entry.iterdir()):
        raw = f.read_bytes()
        if f.name == "meta.json":
            meta = json.loads(raw)
            meta.pop("build_s")
            raw = json.dumps(meta, sort_keys=True).encode()
        out[f.name] = hashlib.sha256(raw).hexdigest()
    return out


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    write_docs(tmp_path / "corpus", 60, n_bytes=8000)
    return tmp_path / "corpus"


def rebuilt(c: dict) -> dict[str, str]:
    """Build `c` from scratch in its cache (the same path: tokenizer.model records where it was trained)."""
    data = prepare_data(c)
    found = snapshot(data.dir)
    shutil.rmtree(data.dir)
    return found


def test_parallel_matches_one_process(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv("SCALING_PREPARE_UNIT_BYTES", "40000")  # 60 x 8 kB -> 12 units
    one = rebuilt(cfg(tmp_path, corpus, num_proc=1))
    assert rebuilt(cfg(tmp_path, corpus, num_proc=3)) == one
    monkeypatch.setenv("SCALING_PREPARE_UNIT_BYTES", str(1 << 30))  # one unit: the units do not change the bytes
    assert rebuilt(cfg(tmp_path, corpus, num_proc=1)) == one


def _prepare_cmd(tmp_path: Path, corpus: Path, num_proc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scaling.prepare",
        "data=files",
        f"data.path={corpus}",
        "data.vocab_size=320",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"+data.num_proc={num_proc}",
        "data.val_fraction=0.2",
    ]


@pytest.mark.parametrize("num_proc", [1, 2])
def test_kill_9_then_rerun_gives_the_identical_cache(tmp_path, corpus, num_proc):
    env = os.environ | {"SCALING_PREPARE_UNIT_BYTES": "8000", "OMP_NUM_THREADS": "1"}  # 60 units
    cmd = _prepare_cmd(tmp_path, corpus, num_proc)
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    root = tmp_path / "cache" / "data"
    (entry,) = [p for p in root.iterdir() if p.name.startswith("files-")]
    reference = snapshot(entry)
    os.rename(entry, tmp_path / "reference")

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    units = root / ".work" / entry.name / "units"
    deadline = time.time() + 120
    while len(list(units.glob("*.json"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the preparer and its workers, mid-build
    proc.wait()
    done = len(list(units.glob("*.json")))
    assert not entry.exists() and 3 <= done < 60, f"the kill came too late to test a resume ({done} units done)"

    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{done}/60 units done before, resuming" in result.stderr  # the rerun starts from the finished units
    assert snapshot(entry) == reference
    assert not (root / ".work" / entry.name).exists()


def _hold_then_publish(lock: Path, built: Path, entry: Path, ready) -> None:
    """Another preparer: holds the lock, publishes the entry a moment later, then releases the lock."""
    with locked(lock):
        ready.set()
        time.sleep(1.0)
        os.rename(built, entry)


def test_second_preparer_waits_on_the_lock(tmp_path, corpus, capsys):
    first = prepare_data(cfg(tmp_path, corpus))
    expected = snapshot(first.dir) | {"build_s": json.dumps(first.meta["build_s"])}
    lock = first.dir.parent / ".locks" / f"{first.dir.name}.lock"
    os.rename(first.dir, tmp_path / "built")  # not published yet: the other process is still building it
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    other = ctx.Process(target=_hold_then_publish, args=(lock, tmp_path / "built", first.dir, ready))
    other.start()
    assert ready.wait(30)
    again = prepare_data(cfg(tmp_path, corpus))  # waits for the lock, then finds the entry built: builds nothing
    other.join(30)
    assert "waiting for another process preparing the same data" in capsys.readouterr().err
    assert snapshot(again.dir) | {"build_s": json.dumps(again.meta["build_s"])} == expected  # same build timings
    assert not (first.dir.parent / ".work" / first.dir.name).exists()


def test_prepare_command_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaling.prepare",
            "data=files",
            f"data.path={bad}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("scaling.prepare: error: ") and "rows.jsonl:2 has no string 'text' field" in r.stderr
    work = tmp_path / "cache" / "data" / ".work"
    assert not work.exists() or not any(work.iterdir())


def test_sweep_prepares_once_and_shows_epochs(tmp_path, cache_dir):
    """The sweep tokenizes before launching and its dry run shows each point's epochs, warning when data repeats."""
    tiny = ["data.max_bytes=300000", "data.vocab_size=512", f"data.cache_dir={tmp_path / 'cache'}"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaling.sweep",
            "+isoflop=2e10",
            "model.seq_len=32",
            "sweep.dry_run=true",
            f"sweep.dir={tmp_path / 'sweep'}",
            *tiny,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    data = prepare_data(
        {
            "name": "sotu",
            "path": None,
            "vocab_size": 512,
            "val_fraction": 0.05,
            "max_bytes": 300000,
            "tokenizer": None,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    rows = list(csv.DictReader((tmp_path / "sweep" / "plan.csv").open()))
    epochs = [float(x["epochs"]) for x in rows]
    assert epochs == pytest.approx([int(x["D"]) / data.train_tokens_count for x in rows], rel=1e-3)
    assert any(line.startswith("run_id") and "epochs" in line for line in r.stdout.splitlines())  # a plan column
    repeats = sum(e > 1 for e in epochs)
    assert repeats > 0 and f"warning: {repeats} of {len(rows)} runs repeat their training data" in r.stdout

"""What several test files share: the repository root, the tiny-run overrides, the commands run as a user runs them
(in a subprocess) and the readers of a run directory's files. Fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scaling.base.configs import conf_dir
from scaling.base.record import METRICS_NAME, RESULT_NAME, RunRecord

ROOT = Path(__file__).resolve().parent.parent
CONF = str(conf_dir())  # the same configs every entry point finds (scaling.base.configs)
# A 300 kB slice of the default corpus and a 512-piece tokenizer: trains in well under a second.
TINY_DATA = ["data.max_bytes=300000", "data.vocab_size=512"]
# A one-run config that trains 32 steps of 1024 tokens in a second or two.
FAST = ["train.tokens=32768", "train.batch_size=1024", "train.eval_tokens=8192", "train.log_every=4"]
# A run long enough to be killed mid-way (96 steps), checkpointed at every step: the kill-and-resume tests.
RESUMABLE = ["train.tokens=98304", "train.batch_size=1024", "train.eval_tokens=8192", "train.ckpt_every_s=0"]
# 2 layers of d 32 on 4 x 32-token batches, one thread: the packed and trunk tests, a second or two a run.
SMALL_MODEL = [
    "model.d_model=32",
    "model.n_head=2",
    "model.seq_len=32",
    "train.batch_size=128",
    "train.eval_tokens=2048",
    "train.threads=1",
]
# A sweep of runs of seconds each: a 32-token context and >= 10 steps a run; one thread (no OpenMP spinning on busy
# CPUs), no throughput measurement (the CLI tests measure). Add the budget (+isoflop=/+hparams=) and sweep.dir.
TINY_SWEEP = [
    "model.seq_len=32",
    "sweep.min_steps=10",
    *TINY_DATA,
    "train.eval_tokens=2048",
    "train.progress=false",
    "train.threads=1",
    "sweep.measure_max_params=0",
]
# An hparams grid of 3 x 3 points per budget on one width-scaled shape.
TINY_HPARAMS_GRID = ["sweep.lr_points=3", "sweep.batch_points=3", "sweep.shape_rule=width"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# The trunk tests' runs: 20, 40 and 64 steps of SMALL_MODEL's 128-token batches (branch points 16, 32, 52), and
# the overrides of a trunk that diverges between its branch points: decoupled weight decay with |1 - lr*wd| > 1 grows
# the weights geometrically once warmup has raised lr, so the loss crosses the threshold sharply (tests/test_packed.py
# uses the same construction).
TRUNK_TOKENS = [20 * 128, 40 * 128, 64 * 128]
DIVERGING_TRUNK = ["optim.lr=2e-3", "optim.weight_decay=3000"]
# Loss curves of packed runs vs the same runs alone, at stable learning rates: the stacked step rounds differently
# from a single run's (~1e-7 relative a step), which training amplifies slowly (tests/test_packed.py says how much).
PACK_RTOL = 2e-4


def record_keys(*names: str) -> set[str]:
    """Keys of the run record as RunRecord names them: a test listing a key the record no longer has fails here,
    not by comparing against a stale name."""
    unknown = [n for n in names if n not in RunRecord.FIELDS]
    assert not unknown, f"not RunRecord fields: {unknown}"
    return set(names)


# What may differ between two runs that computed the same thing: timings and provenance.
TIMING = record_keys("wall_time_s", "startup_s", "tokens_per_s", "git_sha")


def python_m(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_cmd(
    cmd: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """cmd run to the end, its output captured as text; `env` is added to this process's environment."""
    return subprocess.run(cmd, cwd=cwd, env=os.environ | (env or {}), capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(run_dir: Path, *args: str) -> list[str]:
    """scaling.train in 2 processes on a free port, on the tiny data with one thread each."""
    return [
        *python_m("torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"),
        *("-m", "scaling.train", *TINY_DATA, "train.progress=false", "train.threads=1", *args),
        f"hydra.run.dir={run_dir}",
    ]


def spawn_script(script: Path, out: Path, overrides: list[str]) -> subprocess.Popen:
    """`python <script> CONF <out> <overrides...>` in the background with one thread, stderr kept for the failure
    message: the kill-and-resume tests run it to the end once, then kill it, then run it again."""
    return subprocess.Popen(
        [sys.executable, str(script), CONF, str(out), *overrides],
        cwd=ROOT,
        env=os.environ | ONE_THREAD,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def torchrun_script(script: Path, out: Path, overrides: list[str]) -> list[str]:
    """`python <script> CONF <out> <overrides...>` (as spawn_script runs it) in 2 processes on a free port: the
    multi-rank tests of what is not a command (a trunk and its branches)."""
    return [
        *python_m("torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"),
        *(str(script), CONF, str(out), *overrides),
    ]


def killed_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120.0) -> int:
    """SIGKILL proc as soon as ready() holds (as kill -9 would: no cleanup runs); its exit code."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    return proc.wait()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def metrics(run_dir: Path) -> list[dict]:
    """Every line of the run's metrics.jsonl, parsed (a broken line fails the test)."""
    return [json.loads(line) for line in (Path(run_dir) / METRICS_NAME).read_text().splitlines()]


def record(run_dir: Path) -> dict:
    """The run's result.json as written."""
    return json.loads((Path(run_dir) / RESULT_NAME).read_text())


def assert_resumed_alike(ref_dir: Path, got_dir: Path, rtol: float = PACK_RTOL) -> tuple[dict, dict]:
    """A packed run killed with SIGKILL and rerun records what its uninterrupted twin records: completed, the same D,
    val_loss within rtol, and a curve with every step once, the twin's steps. Returns (twin's record, its record)."""
    want, got = record(ref_dir), record(got_dir)
    assert got["status"] == want["status"] == "completed" and got["D"] == want["D"]
    assert got["val_loss"] == pytest.approx(want["val_loss"], rel=rtol)
    steps = [r["step"] for r in metrics(got_dir)]
    assert steps == sorted(set(steps)) == [r["step"] for r in metrics(ref_dir)]
    return want, got


def records(sweep_dir: Path) -> dict[str, dict]:
    """run dir name -> result.json of every run directly under sweep_dir."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob(f"*/{RESULT_NAME}"))}


def shifted_isoflop_study(shift: dict[float, float], seed: int = 2) -> list[dict]:
    """A synthetic study at budgets 1e17..1e21 whose IsoFLOP grid at each budget C in `shift` is moved shift[C]
    decades above the true M_opt (1.0: the optimum beyond the grid's edge; 0.5: off-centre but inside it), each
    run's loss the true L(M, D) without noise."""
    from analysis.synthetic import Truth, make_study

    truth = Truth()
    recs = make_study(budgets=(1e17, 1e18, 1e19, 1e20, 1e21), n_diverged=0, n_failed=0, seed=seed)
    for C, s in shift.items():
        iso = [r for r in recs if r["sweep"] == "isoflop" and r["budget"] == C]
        for r, x in zip(iso, np.linspace(-0.6, 0.6, len(iso))):
            r["M"] = float(truth.M_opt(C) * 10 ** (s + x))
            r["D"] = C / r["M"]
            r["val_loss"] = float(truth.loss(r["M"], r["D"]))
    return recs


def without(rec: dict, keys: set[str]) -> dict:
    return {k: v for k, v in rec.items() if k not in keys}

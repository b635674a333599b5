"""One training run end to end: the record, determinism, resume after a kill, divergence, bad input, DDP, and the
typed train/optim configs. Tests that spawn processes are in the slow tier (`pytest -m slow`)."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.run.config import OptimConfig, TrainConfig
from scaling.run.single import train_run
from tests.helpers import (
    FAST,
    RESUMABLE,
    ROOT,
    TINY_DATA,
    metrics,
    python_m,
    record,
    record_keys,
    run_cmd,
    torchrun_cmd,
)

REQUIRED = record_keys(
    "status",
    "model",
    "N1",
    "N2",
    "M",
    "M_formula",
    "D",
    "C",
    "lr",
    "batch_size",
    "seq_len",
    "val_loss",
    "val_bpb",
    "train_loss",
    "epochs",
    "tokens_per_s",
    "wall_time_s",
    "dataset",
    "tokenizer",
    "seed",
    "git_sha",
    "torch",
    "device",
    "config_hash",
)


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = python_m("scaling.train", *TINY_DATA, "train.progress=false", *args)
    return run_cmd(cmd, cwd=cwd, env={"PYTHONUNBUFFERED": "1"}, timeout=timeout)


def test_run_record_is_complete_and_consistent(make_cfg, tmp_path):
    result = train_run(make_cfg(*FAST), tmp_path / "run")
    on_disk = record(tmp_path / "run")
    assert on_disk == result
    assert result["status"] == "completed"
    assert all(result[k] is not None for k in REQUIRED if k != "git_sha")
    assert result["D"] == 32 * 1024 and result["steps"] == 32  # exactly D tokens in steps of B
    assert result["C"] == pytest.approx(result["M"] * result["D"])
    # bits per byte is the same loss in other units: loss/ln2 bits per token times tokens per byte (< 1 for BPE)
    assert 0 < result["val_bpb"] < result["val_loss"] / math.log(2)
    assert result["val_loss"] < result["initial_loss"] - 0.5  # it learned something
    assert result["dataset"].startswith("sotu@") and result["epochs"] > 0
    lines = metrics(tmp_path / "run")
    assert [x["step"] for x in lines] == [4, 8, 12, 16, 20, 24, 28, 32]
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "ckpt.pt").exists()


def test_same_seed_same_numbers_and_finished_runs_are_skipped(make_cfg, tmp_path):
    a = train_run(make_cfg(*FAST), tmp_path / "a")
    b = train_run(make_cfg(*FAST), tmp_path / "b")
    assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]
    again = train_run(make_cfg(*FAST), tmp_path / "a")
    assert again.get("skipped") and again["val_loss"] == a["val_loss"]
    c = train_run(make_cfg(*FAST, "seed=7"), tmp_path / "c")
    assert c["val_loss"] != a["val_loss"]


def test_a_run_dir_never_mixes_two_configs(make_cfg, tmp_path):
    train_run(make_cfg(*FAST), tmp_path / "run")
    before = (tmp_path / "run" / "result.json").read_text()
    with pytest.raises(ValueError, match="already holds a run with another config"):
        train_run(make_cfg(*FAST, "optim.lr=1e-3"), tmp_path / "run")
    assert (tmp_path / "run" / "result.json").read_text() == before


def test_divergence_ends_cleanly_with_a_record(make_cfg, tmp_path):
    result = train_run(make_cfg(*FAST, "optim.lr=50", "optim.grad_clip=1e9", "optim.warmup_frac=0"), tmp_path / "run")
    assert result["status"] == "diverged"
    assert result["val_loss"] is None and "initial loss" in result["error"]
    # Losses are read from the device every train.log_every (4) steps: the run stops within 4 steps of the first
    # bad one, and the record names that step.
    bad = result["diverged_at_step"]
    assert f"at step {bad} " in result["error"]
    assert 1 <= bad <= result["steps_done"] < bad + 4 and result["D"] == result["steps_done"] * result["batch_size"]
    assert record(tmp_path / "run")["status"] == "diverged"


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(make_cfg, tmp_path, cache_dir):
    # One thread on both sides: the in-process reference would otherwise run with whatever thread count earlier
    # tests left set, and two threads split the reductions differently (4.091647 vs 4.091444 on this CPU).
    args = [*RESUMABLE, "train.threads=1", f"data.cache_dir={cache_dir}"]
    reference = train_run(make_cfg(*args), tmp_path / "reference")
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        python_m("scaling.train", *TINY_DATA, "train.progress=false", *args, f"hydra.run.dir={run_dir}"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (run_dir / "ckpt.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "result.json").exists(), "the run finished before it could be killed; make it longer"
    done = cli(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    resumed = record(run_dir)
    assert resumed["val_loss"] == pytest.approx(reference["val_loss"], abs=1e-6)
    steps = [r["step"] for r in metrics(run_dir)]
    assert steps == sorted(set(steps))  # no step logged twice


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=1000", "must be a positive multiple of model.seq_len=128"),
        ("train.tokens=512", "smaller than one batch"),
        ("data.name=nosuchcorpus", "nosuchcorpus"),
        ("model.vocab_size=999", "disagrees with data.vocab_size"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, cache_dir, override, message):
    run_dir = tmp_path / "runs" / "train" / "run"  # nested, as Hydra's default runs/train/<time>
    out = cli(*FAST, override, f"hydra.run.dir={run_dir}", f"data.cache_dir={cache_dir}", cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("scaling.train: error: "), out.stderr
    assert not (tmp_path / "runs").exists()  # not even the empty parents Hydra made


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path below root with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _users_dir(d: Path) -> None:
    """A directory of the user's own: logs and a .hydra/ of an earlier run, and a log Hydra would append to."""
    (d / ".hydra").mkdir(parents=True)
    (d / "notes.log").write_text("my own notes\n")
    (d / "train.log").write_bytes(b"x" * (2 << 20))  # over hydra_outputs.SMALL: restored by its size
    (d / ".hydra" / "config.yaml").write_text("mine: 1\n")
    (d / ".hydra" / "hydra.yaml").write_text("also: mine\n")


@pytest.mark.slow
def test_bad_input_leaves_an_existing_directory_exactly_as_it_was(tmp_path, cache_dir):
    d = tmp_path / "logs"
    _users_dir(d)
    before = _tree(d)
    out = cli("optim.lr=-1", f"hydra.run.dir={d}", f"data.cache_dir={cache_dir}", cwd=tmp_path)
    assert out.returncode == 2 and "optim.lr must be > 0" in out.stderr
    assert _tree(d) == before  # not removed, not rewritten, no log line added, no new file
    (tmp_path / "empty").mkdir()
    out = cli("optim.lr=-1", f"hydra.run.dir={tmp_path / 'empty'}", f"data.cache_dir={cache_dir}", cwd=tmp_path)
    assert out.returncode == 2 and (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_hydra_outputs_are_taken_back_exactly(tmp_path):
    """What Hydra does before the task runs (mkdir, .hydra/*.yaml, a log opened for appending), taken back."""
    from scaling.base import hydra_outputs

    d = tmp_path / "logs"
    _users_dir(d)
    (d / "sub").mkdir()
    before = _tree(d)
    hydra_outputs.record(d, ".hydra")
    (d / ".hydra" / "config.yaml").write_text("the bad invocation's config\n")
    (d / ".hydra" / "overrides.yaml").write_text("- optim.lr=-1\n")
    with (d / "train.log").open("ab") as f:
        f.write(b"[INFO] a line\n")
    (d / "sweep.log").write_text("[INFO] new\n")
    hydra_outputs.undo(d)
    assert _tree(d) == before
    # A new nested run dir: everything Hydra made goes, parents included, up to what existed.
    new = tmp_path / "runs" / "train" / "t0"
    hydra_outputs.record(new, ".hydra")
    (new / ".hydra").mkdir(parents=True)
    (new / ".hydra" / "config.yaml").write_text("x")
    (new / "train.log").write_text("")
    hydra_outputs.undo(new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    # Without a record of this directory nothing is touched.
    (d / "other.log").write_text("?")
    hydra_outputs.undo(d)
    assert (d / "other.log").exists()


@pytest.mark.slow
def test_a_python_tag_in_a_config_group_is_one_line_exit_2(tmp_path, cache_dir):
    marker = tmp_path / "ran"
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "evil.yaml").write_text(
        f'n_layer: !!python/object/apply:os.system ["touch {marker}"]\nd_model: 64\n'
    )
    for args in (["model=evil"], ["--multirun", "model=evil"]):
        out = subprocess.run(  # Hydra's flags first: cli() puts overrides before them
            [sys.executable, "-m", "scaling.train", "--config-dir", str(tmp_path / "conf"), *args]
            + [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'run'}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2, out.stderr[-2000:]
        assert (
            len(out.stderr.strip().splitlines()) == 1 and "evil.yaml" in out.stderr and "not plain YAML" in out.stderr
        )
        assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_processes_train_like_one(make_cfg, tmp_path, cache_dir):
    args = [*FAST, f"data.cache_dir={cache_dir}"]
    single = train_run(make_cfg(*args), tmp_path / "single")
    out = run_cmd(torchrun_cmd(tmp_path / "ddp", *args))
    assert out.returncode == 0, out.stderr[-2000:]
    ddp = record(tmp_path / "ddp")
    assert ddp["world_size"] == 2 and ddp["D"] == single["D"]
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    assert ddp["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)


def test_an_interrupted_run_is_not_overwritten_by_another_config(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    train_run(make_cfg(*FAST), run_dir)
    (run_dir / "result.json").unlink()  # as if killed before the end: config.yaml and ckpt remain
    before = (run_dir / "config.yaml").read_text()
    with pytest.raises(ValueError, match="already holds a run with another config"):
        train_run(make_cfg(*FAST, "optim.lr=1e-3"), run_dir)
    assert (run_dir / "config.yaml").read_text() == before
    assert train_run(make_cfg(*FAST), run_dir)["status"] == "completed"  # the same config resumes


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.log_every=0", "train.log_every must be an integer >= 1"),
        ("train.dtype=fp16", "train.dtype='fp16' is unknown"),
        ("train.parallel=zero3", "train.parallel='zero3' is unknown"),
        ("optim.beta2=1.5", "optim.beta2=1.5 must lie in [0, 1)"),
        ("optim.schedule=linear", "optim.schedule='linear' is unknown"),
        ("+train.lr=1e-3", "unknown train key(s) ['lr']"),
    ],
)
def test_train_and_optim_configs_are_validated_before_anything_is_written(make_cfg, tmp_path, override, message):
    with pytest.raises(ValueError) as e:
        train_run(make_cfg(*FAST, override), tmp_path / "run")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_typed_configs_hold_the_shipped_defaults(make_cfg):
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(make_cfg(), resolve=True)
    train, optim = TrainConfig.from_dict(cfg["train"]), OptimConfig.from_dict(cfg["optim"])
    assert train.parallel == "auto" and train.activation_checkpointing is False and train.log_every == 10
    assert optim.betas == (0.9, 0.95) and optim.schedule == "multistep"

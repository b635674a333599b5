"""Parallel training: train.parallel=auto's choice, the submitit environment export, and on CPU with gloo (slow
tier: they spawn processes) FSDP2 == DDP == one process, an FSDP2 run killed with SIGKILL resuming to the
uninterrupted result, a 2-task submitit job being one run of world size 2, and activation checkpointing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from scaling.run.parallel import choose_mode
from scaling.run.single import train_run
from tests.helpers import FAST, ONE_THREAD, RESUMABLE, ROOT, TINY_DATA, metrics, python_m, record, run_cmd, torchrun_cmd

COMMON = [*TINY_DATA, "train.progress=false", "train.threads=1"]


def torchrun(run_dir: Path, *args: str, output: list[str] | None = None) -> dict:
    """Train with 2 processes; the run's result.json (its stdout and stderr appended to `output`)."""
    out = run_cmd(torchrun_cmd(run_dir, *args), env=ONE_THREAD)
    assert out.returncode == 0, out.stderr[-3000:]
    if output is not None:
        output.append(out.stdout + out.stderr)
    return record(run_dir)


def _descendants(pid: int) -> list[int]:
    """pid's children, grandchildren, ... (Linux /proc): torchrun starts its workers in sessions of their own."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has stopped running; its parent (or init) reaps it


def test_auto_shards_only_what_does_not_fit_one_device():
    import torch

    cpu = torch.device("cpu")
    assert choose_mode("auto", 1, 10**9, cpu) == "single"
    assert choose_mode("auto", 2, 10**9, cpu) == "ddp"  # CPUs have no per-device budget: DDP keeps exact numbers
    assert choose_mode("fsdp", 2, 10, cpu) == "fsdp" and choose_mode("ddp", 2, 10**12, cpu) == "ddp"
    with pytest.raises(ValueError, match="train.parallel='zero3' is unknown"):
        choose_mode("zero3", 2, 10, cpu)


def test_a_multi_task_submitit_job_exports_one_process_group(monkeypatch):
    from scaling.run.distributed import export_submitit_env

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(key, "")  # recorded, so that what the export sets is undone after the test
        monkeypatch.delenv(key)
    assert not export_submitit_env()  # not in a submitit job: nothing to export
    job = {
        "SUBMITIT_LOCAL_JOB_ID": "4242",
        "SUBMITIT_LOCAL_NTASKS": "8",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_GLOBALID": "5",
        "SUBMITIT_LOCAL_LOCALID": "5",
        "SUBMITIT_EXECUTOR": "local",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
    }
    for key, value in job.items():
        monkeypatch.setenv(key, value)
    assert export_submitit_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("5", "8", "5")
    port = os.environ["MASTER_PORT"]  # derived from the job id: every task of the job computes the same one
    assert 20000 <= int(port) <= 60000 and os.environ["MASTER_ADDR"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"  # each task picks cuda:LOCAL_RANK itself
    assert not export_submitit_env()  # already exported (or launched by torchrun): left alone
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")
    for key in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(key)
    assert not export_submitit_env()  # a one-task job is a plain single-process run


@pytest.mark.slow
def test_activation_checkpointing_changes_memory_not_numbers(make_cfg, tmp_path):
    plain = train_run(make_cfg(*FAST, "train.threads=1"), tmp_path / "plain")
    checkpointed = train_run(make_cfg(*FAST, "train.threads=1", "train.activation_checkpointing=true"), tmp_path / "ac")
    assert checkpointed["config_hash"] == plain["config_hash"]  # an execution choice: the same run
    assert checkpointed["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-6)
    assert checkpointed["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)


@pytest.mark.slow
def test_fsdp_ddp_and_one_process_train_alike(make_cfg, tmp_path, cache_dir):
    single = train_run(make_cfg(*FAST, "train.threads=1"), tmp_path / "single")
    ddp = torchrun(tmp_path / "ddp", *FAST, "train.parallel=ddp", f"data.cache_dir={cache_dir}")
    fsdp = torchrun(tmp_path / "fsdp", *FAST, "train.parallel=fsdp", f"data.cache_dir={cache_dir}")
    assert ddp["parallel"] == "ddp" and fsdp["parallel"] == "fsdp" and "parallel" not in single
    # Two ranks sum their gradients in another fp32 order than one process (see below); after 96 steps the final
    # losses differ by that rounding, amplified: 6.4e-5 relative on an x86 CPU without AVX-512 BF16 (the same numbers
    # from the code before the run-lifecycle refactor), below 1e-5 on another. 2e-4 bounds it with room, and stays
    # far below what a wrong batch split or a missed all-reduce moves (percents).
    for run in (ddp, fsdp):
        assert run["world_size"] == 2 and run["D"] == single["D"] and run["config_hash"] == single["config_hash"]
        assert run["val_loss"] == pytest.approx(single["val_loss"], rel=2e-4)
        assert run["train_loss"] == pytest.approx(single["train_loss"], rel=2e-4)
    # The whole curve, not just the end: same seed, same global batch. Summing gradients over two ranks rounds
    # differently from one process, and training amplifies that: the first steps agree to fp32 rounding, later
    # ones drift (measured: grad norms 1e-7 apart at step 4; late grad norms 7e-4 apart on one x86 CPU, 9.4e-3 on one
    # without AVX-512 BF16, with the same numbers before the run-lifecycle refactor); FSDP2 and DDP stay close.
    curves = {name: metrics(tmp_path / name) for name in ("single", "ddp", "fsdp")}
    for name, reference in (("ddp", "single"), ("fsdp", "single"), ("fsdp", "ddp")):
        assert [r["step"] for r in curves[name]] == [r["step"] for r in curves[reference]]
        for got, want in zip(curves[name], curves[reference], strict=True):
            early = got["step"] <= 12
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-6 if early else 1e-4)
            assert got["grad_norm"] == pytest.approx(
                want["grad_norm"], rel=1e-5 if early or reference == "ddp" else 2e-2
            )
    assert (tmp_path / "fsdp" / "ckpt_dcp.json").exists() and not (tmp_path / "fsdp" / "ckpt.pt").exists()


@pytest.mark.slow
def test_killed_fsdp_run_resumes_to_the_same_result(make_cfg, tmp_path, cache_dir):
    args = [
        *RESUMABLE,
        "train.log_every=4",
        "train.parallel=fsdp",
        f"data.cache_dir={cache_dir}",
    ]
    reference = torchrun(tmp_path / "reference", *args)
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        torchrun_cmd(run_dir, *args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=os.environ | ONE_THREAD,
    )
    deadline = time.time() + 200
    while not (run_dir / "ckpt_dcp.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    # SIGKILL to torchrun and both workers at once, as a node failure would: no handler runs, nothing is flushed.
    victims = [proc.pid, *_descendants(proc.pid)]
    assert len(victims) >= 3, f"expected torchrun and 2 workers, found pids {victims}"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    while any(_alive(pid) for pid in victims):
        time.sleep(0.05)
    assert not (run_dir / "result.json").exists(), "the run finished before it could be killed; make it longer"
    saved_at = json.loads((run_dir / "ckpt_dcp.json").read_text())["step"]
    assert 0 < saved_at < 96
    with pytest.raises(ValueError, match=f"holds a sharded checkpoint at step {saved_at} of an FSDP run on 2"):
        train_run(make_cfg(*args), run_dir)  # one process cannot resume it: refused, not restarted from step 0
    log: list[str] = []
    resumed = torchrun(run_dir, *args, output=log)
    assert f"resuming from step {saved_at} of 96 (sharded checkpoint)" in log[0]  # not retrained from scratch
    assert resumed["status"] == "completed" and resumed["D"] == reference["D"]
    assert resumed["val_loss"] == pytest.approx(reference["val_loss"], abs=1e-6)
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], abs=1e-6)
    steps = [r["step"] for r in metrics(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == 96  # no step logged twice


@pytest.mark.slow
def test_a_two_task_submitit_job_is_one_run_of_world_size_two(tmp_path, cache_dir):
    out = run_cmd(
        python_m(
            "scaling.train",
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.timeout_min=5",
            f"hydra.launcher.submitit_folder={tmp_path / 'submitit'}",
            f"hydra.sweep.dir={tmp_path}",
            "hydra.sweep.subdir=run",
            *COMMON,
            *FAST,
            f"data.cache_dir={cache_dir}",
        ),
        env=ONE_THREAD,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = record(tmp_path / "run")
    assert result["status"] == "completed" and result["world_size"] == 2
    assert [r["step"] for r in metrics(tmp_path / "run")] == [4, 8, 12, 16, 20, 24, 28, 32]  # one writer, not two


# ----------------------------------------------------------------- sharded checkpoints are data (no process group)
class _Payload:
    """Unpickled, this writes a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _sharded_run(run_dir: Path):
    """A DCP checkpoint at step 3 (after one optimizer step, so AdamW state exists), saved as save_sharded saves it
    (here in one process: DCP needs no process group); the model, its optimizer and a fresh pair to load into."""
    import warnings

    import torch

    from model import LLaMA, ModelConfig
    from scaling.run.distributed import Dist
    from scaling.run.parallel import save_sharded
    from scaling.run.step import build_optimizer

    cfg = ModelConfig(n_layer=1, d_model=32, n_head=2, vocab_size=64, seq_len=16)

    def fresh(seed: int):
        torch.manual_seed(seed)
        m = LLaMA(cfg)
        return m, build_optimizer(m, 1e-3, (0.9, 0.95), 1e-8, 0.1, torch.device("cpu"))

    model, opt = fresh(0)
    x = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
    opt.step()
    run_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP: "torch.distributed is disabled ... assuming a single process"
        save_sharded(run_dir, model, opt, {"config_hash": "h", "step": 3}, Dist())
    return model, opt, fresh(1)


def _load(run_dir: Path, model, opt):
    import warnings

    from scaling.run.parallel import load_sharded

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        meta = load_sharded(run_dir, model, opt, "h")
    ours = [str(x.message) for x in w if "sharded checkpoint" in str(x.message)]
    return meta, ours


def _same(a, b) -> bool:
    import torch

    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_sharded_checkpoint_round_trips_without_a_process_group(tmp_path):
    model, opt, (model2, opt2) = _sharded_run(tmp_path / "run")
    meta, warned = _load(tmp_path / "run", model2, opt2)
    assert meta is not None and meta["step"] == 3 and not warned
    assert _same(model, model2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert all(all((v == s2["state"][k][n]).all() for n, v in st.items()) for k, st in s1["state"].items())


def test_a_planted_dcp_metadata_pickle_runs_no_code(tmp_path):
    run_dir = tmp_path / "run"
    _, _, (model2, opt2) = _sharded_run(run_dir)
    before = {k: v.clone() for k, v in model2.state_dict().items()}
    marker = tmp_path / "marker"
    import pickle

    (run_dir / "ckpt_dcp" / "step_3" / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    meta, warned = _load(run_dir, model2, opt2)
    assert not marker.exists(), "the planted .metadata ran code"
    assert meta is None and len(warned) == 1 and "exec" in warned[0] and "training from step 0" in warned[0]
    assert all((before[k] == v).all() for k, v in model2.state_dict().items())  # nothing loaded


def test_a_dcp_path_outside_the_run_dir_is_refused(tmp_path):
    import pickle

    run_dir = tmp_path / "a" / "b" / "run"
    _, _, (model2, opt2) = _sharded_run(run_dir)
    marker = tmp_path / "marker"
    outside = run_dir.parent / "x"  # what "../../x" reaches from run_dir/ckpt_dcp
    outside.mkdir()
    (outside / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    meta_file = run_dir / "ckpt_dcp.json"
    saved = json.loads(meta_file.read_text())
    for path in ("../../x", "/abs/step_3", "step_3/../../../x"):
        meta_file.write_text(json.dumps(saved | {"path": path}))
        meta, warned = _load(run_dir, model2, opt2)
        assert meta is None and len(warned) == 1 and repr(path) in warned[0], (path, warned)
    # A checkpoint directory that is a symlink out of the run dir (the name itself is fine).
    (run_dir / "ckpt_dcp" / "step_9").symlink_to(outside, target_is_directory=True)
    meta_file.write_text(json.dumps(saved | {"path": "step_9"}))
    meta, warned = _load(run_dir, model2, opt2)
    assert meta is None and len(warned) == 1 and "outside the run dir" in warned[0]
    assert not marker.exists()


def test_shard_files_named_in_the_metadata_stay_in_the_checkpoint_dir(tmp_path):
    import pickle

    run_dir = tmp_path / "run"
    _, _, (model2, opt2) = _sharded_run(run_dir)
    md_path = run_dir / "ckpt_dcp" / "step_3" / ".metadata"
    md = pickle.loads(md_path.read_bytes())  # our own file: trusted here, to plant an edited copy
    info = next(iter(md.storage_data.values()))
    good = info.relative_path
    for rel, why in (("../../../evil.distcp", "not a plain file name"), ("/etc/passwd", "not a plain file name")):
        info.relative_path = rel
        md_path.write_bytes(pickle.dumps(md))
        meta, warned = _load(run_dir, model2, opt2)
        assert meta is None and len(warned) == 1 and why in warned[0], warned
    info.relative_path = good
    md_path.write_bytes(pickle.dumps(md))
    assert _load(run_dir, model2, opt2)[0] is not None  # the same file, unedited, loads


def test_a_pickled_non_tensor_entry_in_a_shard_file_runs_no_code(tmp_path):
    """DCP loads non-tensor entries (optimizer settings) with torch.load(weights_only=False)."""
    import io
    import pickle

    import torch
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    run_dir = tmp_path / "run"
    _, _, (model2, opt2) = _sharded_run(run_dir)
    before = {k: v.clone() for k, v in model2.state_dict().items()}
    ckpt = run_dir / "ckpt_dcp" / "step_3"
    md = pickle.loads((ckpt / ".metadata").read_bytes())
    marker = tmp_path / "marker"
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    (ckpt / "__9_0.distcp").write_bytes(buf.getvalue())
    index = next(i for i in md.storage_data if isinstance(md.state_dict_metadata[i.fqn], BytesStorageMetadata))
    info = md.storage_data[index]
    info.relative_path, info.offset, info.length = "__9_0.distcp", 0, len(buf.getvalue())
    (ckpt / ".metadata").write_bytes(pickle.dumps(md))
    meta, warned = _load(run_dir, model2, opt2)
    assert not marker.exists(), "a pickled optimizer entry ran code"
    assert meta is None and len(warned) == 1 and index.fqn in warned[0]
    assert all((before[k] == v).all() for k, v in model2.state_dict().items())  # refused before any tensor loaded


def test_a_fifo_named_dcp_metadata_does_not_hang(tmp_path):
    run_dir = tmp_path / "run"
    _, _, (model2, opt2) = _sharded_run(run_dir)
    md_path = run_dir / "ckpt_dcp" / "step_3" / ".metadata"
    md_path.unlink()
    os.mkfifo(md_path)
    meta, warned = _load(run_dir, model2, opt2)
    assert meta is None and len(warned) == 1 and "FIFO" in warned[0]


@pytest.mark.slow
def test_a_planted_sharded_checkpoint_is_refused_and_the_run_trains_from_step_0(tmp_path, cache_dir):
    import pickle

    args = [*FAST, "train.parallel=fsdp", f"data.cache_dir={cache_dir}"]
    run_dir = tmp_path / "run"
    first = torchrun(run_dir, *args)
    from scaling.run.sampling import sample

    # The two ranks' shards, gathered whole in this one CPU process: scaling.sample reads a sharded run.
    assert sample(run_dir, "The", max_new_tokens=4, temperature=0.0).step == 32 and not (run_dir / "ckpt.pt").exists()
    (run_dir / "result.json").unlink()  # as if killed after its last checkpoint: a rerun resumes from it
    meta = json.loads((run_dir / "ckpt_dcp.json").read_text())
    marker = tmp_path / "marker"
    (run_dir / "ckpt_dcp" / meta["path"] / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    log: list[str] = []
    again = torchrun(run_dir, *args, output=log)
    assert not marker.exists(), "the planted .metadata ran code on a rank"
    assert log[0].count("ignoring the sharded checkpoint") == 1, log[0][-3000:]  # one warning, not one per rank
    assert "resuming from step" not in log[0]
    assert again["status"] == "completed" and again["val_loss"] == pytest.approx(first["val_loss"], abs=1e-6)
    assert [r["step"] for r in metrics(run_dir)] == [4, 8, 12, 16, 20, 24, 28, 32]  # trained from step 0, once
    for path in ("../../x", "/etc"):  # a pointer out of the run dir: refused the same way
        (run_dir / "result.json").unlink()
        (run_dir / "ckpt_dcp.json").write_text(json.dumps(meta | {"path": path}))
        log.clear()
        assert torchrun(run_dir, *args, output=log)["status"] == "completed"
        assert log[0].count("ignoring the sharded checkpoint") == 1 and repr(path) in log[0]

"""The CUDA path (bf16 autocast, fused AdamW, per-block torch.compile, the sync-free train step) and the GPU check.

The CUDA tests skip cleanly on machines without a GPU; the last test checks that `python -m scaling.gpucheck` does
too (one line, exit 0), and runs only there."""

from __future__ import annotations

import pytest
import torch

from model import LLaMA, ModelConfig
from scaling.run.parallel import compile_blocks
from scaling.run.step import TrainStep, build_optimizer


def needs_cuda(test):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


def _cfg() -> ModelConfig:
    return ModelConfig(n_layer=2, d_model=128, n_head=4, n_kv_head=2, vocab_size=512, seq_len=64, ffn_multiple_of=64)


def _batch(model: torch.nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randint(0, model.cfg.vocab_size, (8, model.cfg.seq_len + 1), generator=g).to(device)
    return x[:, :-1], x[:, 1:]


def _bf16_step(model: torch.nn.Module, device: torch.device, lr: float) -> TrainStep:
    opt = build_optimizer(model, lr, (0.9, 0.95), 1e-8, 0.1, device)
    return TrainStep(model, opt, device=device, amp=torch.bfloat16, grad_clip=1.0)


def _train_steps(model: torch.nn.Module, device: torch.device, steps: int = 20) -> list[float]:
    step = _bf16_step(model, device, 3e-3)
    batch = _batch(model, device)
    return torch.cat([step([batch], 3e-3).losses for _ in range(steps)]).tolist()


@needs_cuda
def test_bf16_compiled_training_learns_and_matches_eager():
    device = torch.device("cuda")
    torch.manual_seed(0)
    eager = LLaMA(_cfg()).to(device)
    compiled = LLaMA(_cfg()).to(device)
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled)
    a, b = _train_steps(eager, device), _train_steps(compiled, device)
    assert a[-1] < a[0] - 1.0  # it memorises the batch
    assert b[-1] == pytest.approx(a[-1], rel=0.05)  # compile changes speed, not the numbers (bf16 noise)
    assert all(p.dtype == torch.float32 for p in compiled.parameters())  # master weights stay fp32 under autocast


@needs_cuda
def test_the_train_step_never_waits_for_the_device():
    """CUDA's sync debug mode turns every host-device synchronisation into an error: the step must have none."""
    device = torch.device("cuda")
    model = LLaMA(_cfg()).to(device)
    step = _bf16_step(model, device, 1e-3)
    batch = _batch(model, device)
    step([batch, batch], 1e-3)  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outputs = [step([batch, batch], 1e-3) for _ in range(3)]  # two micro-batches: accumulation included
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(o.losses.is_cuda and o.grad_norm.is_cuda for o in outputs)  # read later, at the logging cadence


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip path of a machine without a GPU")
def test_gpucheck_skips_cleanly_without_a_gpu(capsys):
    from scaling.gpucheck import main

    main([])  # returns: exit status 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "skipped: no CUDA device" in out[0]


@pytest.mark.slow
def test_gpucheck_allow_cpu_runs_every_part_at_toy_sizes(tmp_path, cache_dir):
    """--allow-cpu exercises every part (GPU tests, bench, FSDP smoke, sweep + fit) at toy sizes: minutes at most.
    The timeout is a hang guard, not a speed claim (it trained a 1e16 sweep, > 10 minutes here, before)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run(
        [sys.executable, "-m", "scaling.gpucheck", "--allow-cpu", "--out", str(tmp_path / "gc")],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    kv = dict(x.split("=", 1) for x in out.stdout.strip().splitlines()[-1].split())
    assert kv["device"] == "cpu" and kv["gpu_tests"] == "passed" and kv["fsdp_smoke"] == "ok"
    assert {"d64_tokens_per_s", "d128_tokens_per_s", "d256_tokens_per_s"} <= set(kv)
    assert kv["sweep_exit"] == "0" and kv["sweep_runs"] == "5/5" and "fit_M_opt" in kv  # the fit ran on 5 runs

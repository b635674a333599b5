"""python -m scaling.gpucheck: what a GPU machine must show, in one command that fits 10 minutes.

1. the GPU tests (tests/test_gpu.py: bf16 + compile numerics, the sync-free step);
2. the benchmark (scaling.bench) at three widths with bf16 + torch.compile, with MFU = model FLOP/s over the
   GPU's nominal dense bf16 peak (a table by device name; unknown devices print the measured matmul peak instead);
3. an FSDP2 smoke test: one process group of size 1, a sharded model, three train steps, a sharded checkpoint
   saved and loaded back (the multi-GPU paths are exercised on CPU by tests/test_parallel.py);
4. a small real IsoFLOP sweep (`--shapes` shapes at `--budget` FLOPs, default 5 at 1e16) end to end, and the
   analysis's IsoFLOP parabola fit of that budget (M_opt with its bootstrap CI; a law needs several budgets).
The last line is `key=value` pairs. Without a CUDA device it prints one line saying so and exits 0.

`--allow-cpu` runs the same plumbing on a CPU at toy sizes (for testing this script; numbers mean nothing there):
every part still runs (tests/test_gpu.py skips its CUDA tests cleanly), with CPU defaults of widths 64,128,256 and
a 5-shape IsoFLOP sweep at C = 3e9 (2-layer models of width 16-80) instead of the GPU's 1e16.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scaling.base.cli import fail

PROG = "scaling.gpucheck"
GPU_WIDTHS, GPU_BUDGET = "512,1024,2048", 1e16
# --allow-cpu: toy sizes that exercise the same code in about two minutes in all on a 2-core machine.
CPU_WIDTHS, CPU_BUDGET = "64,128,256", 3e9
# Nominal dense bf16 tensor-core peaks (vendor datasheets, no sparsity), matched on the device name in order.
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("L4", 121e12),
)


def nominal_peak(device_name: str) -> float | None:
    for key, peak in PEAK_BF16:
        if key in device_name:
            return peak
    return None


def run_tests() -> str:
    """pytest on tests/test_gpu.py in a subprocess: 'passed', or 'failed (see above)'."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"],
        cwd=Path(__file__).resolve().parent.parent,
        text=True,
    )
    return "passed" if out.returncode == 0 else "failed"


def run_bench(d_model: int, device: str, cpu: bool) -> dict[str, str]:
    """scaling.bench at one width: head_dim 128 and up to 16 layers on a GPU (d 2048: 0.8B parameters, twice:
    the benchmark also holds the per-step-sync reference), 2 layers of head_dim 16 on a CPU."""
    from scaling.benchmarks import step as bench

    n_layer, head_dim = (2, 16) if cpu else (min(16, max(2, d_model // 64)), 128)
    args = argparse.Namespace(
        model="tiny" if cpu else "base_124m",
        vocab=512 if cpu else 32000,
        seq_len=64 if cpu else 1024,
        d_model=d_model,
        n_layer=n_layer,
        n_head=max(1, d_model // head_dim),
        batch_seqs=2 if cpu else 8,
        steps=3 if cpu else 10,
        warmup=1 if cpu else 3,
        device=device,
        dtype="fp32" if cpu else "bf16",
        compile=not cpu,
        no_hf=True,
        threads=None,
        pack=None,
    )
    return bench.run(args)


def fsdp_smoke(device: torch.device) -> str:
    """Three FSDP2 steps in a 1-process group, a DCP checkpoint round trip; 'ok' or the error."""
    import torch.distributed as dist

    from model import LLaMA, ModelConfig
    from scaling.run.distributed import Dist
    from scaling.run.parallel import load_sharded, resolve_amp, save_sharded, shard
    from scaling.run.step import TrainStep, build_optimizer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
    )
    try:
        torch.manual_seed(0)
        cfg = ModelConfig(n_layer=2, d_model=128, n_head=2, vocab_size=512, seq_len=64)
        model = LLaMA(cfg).to(device)
        amp = resolve_amp("auto", device)
        shard(model, amp)
        optimizer = build_optimizer(model, 1e-3, (0.9, 0.95), 1e-8, 0.1, device)
        step = TrainStep(model, optimizer, device=device, amp=amp, grad_clip=1.0)
        x = torch.randint(0, 512, (4, 65), generator=torch.Generator().manual_seed(0))
        losses = [step([(x[:, :-1], x[:, 1:])], 1e-3).losses for _ in range(3)]
        with tempfile.TemporaryDirectory() as tmp:
            meta = {"config_hash": "smoke", "step": 3}
            save_sharded(Path(tmp), model, optimizer, meta, Dist())
            back = load_sharded(Path(tmp), model, optimizer, "smoke")
        first, last = float(losses[0][0]), float(losses[-1][0])
        if back is None or back["step"] != 3 or not last < first:
            return f"failed (loss {first:.3f} -> {last:.3f}, checkpoint {'read' if back else 'missing'})"
        return "ok"
    finally:
        dist.destroy_process_group()


def run_sweep(out: Path, budget: float, shapes: int, cpu: bool) -> dict[str, str]:
    """An IsoFLOP sweep at one budget and analysis.fit on it; returns key=value results."""
    sweep_dir = out / "isoflop"
    t0 = time.perf_counter()
    sweep = _launch_sweep(sweep_dir, budget, shapes, cpu)
    sweep_s = time.perf_counter() - t0
    results = [json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")]
    done = [r for r in results if r.get("status") == "completed"]
    try:  # the runs the sweep planned: distinct shapes can be fewer than --shapes at small budgets
        planned = len((sweep_dir / "plan.csv").read_text().splitlines()) - 1
    except OSError:
        planned = shapes
    kv = {"sweep_runs": f"{len(done)}/{planned}", "sweep_s": f"{sweep_s:.0f}", "sweep_exit": str(sweep.returncode)}
    if done:
        best = min(done, key=lambda r: r["val_loss"])
        kv |= {"sweep_best_loss": f"{best['val_loss']:.4f}", "sweep_best_M": f"{best['M']:.3g}"}
    if len(done) >= 3:  # the budget's IsoFLOP parabola, fitted by the analysis's own code (no law from one budget)
        kv |= _fit_kv(done)
    return kv


def _launch_sweep(sweep_dir: Path, budget: float, shapes: int, cpu: bool) -> subprocess.CompletedProcess:
    """`python -m scaling.sweep +isoflop=<budget>` into sweep_dir, at toy sizes on a CPU."""
    overrides = (
        [
            "sweep.shape_rule=width",  # 2 layers, width varies: five distinct toy shapes at a toy budget
            "data.max_bytes=300000",
            "data.vocab_size=512",
            "train.eval_tokens=8192",
            "model.seq_len=32",  # toy runs of a second or two each (the test suite's miniature study's settings)
            "sweep.min_steps=10",
            "train.threads=1",
        ]
        if cpu
        else ["sweep.shape_rule=gpu", "model.seq_len=512", "data.vocab_size=8192", "train.eval_tokens=262144"]
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "scaling.sweep",
            f"+isoflop={budget:g}",
            f"sweep.n_shapes={shapes}",
            f"sweep.dir={sweep_dir}",
            "train.progress=false",
            *overrides,
        ],
        cwd=Path(__file__).resolve().parent.parent,
        text=True,
    )


def _fit_kv(done: list[dict]) -> dict[str, str]:
    """The IsoFLOP parabola of the completed runs (M_opt and its bootstrap CI); its warnings are printed."""
    import numpy as np

    from analysis.isoflop import fit_budget

    fit = fit_budget(
        np.log10([r["M"] for r in done]),
        np.array([r["C"] for r in done]),
        np.array([r["val_loss"] for r in done]),
        200,
        np.random.default_rng(0),
    )
    ci = fit.get("ci95", {}).get("M_opt")
    for warning in fit["warnings"]:
        print(f"{PROG}: IsoFLOP fit: {warning}")
    return {
        "fit_M_opt": f"{fit['M_opt']:.3g}" if fit["M_opt"] else "none",
        "fit_M_opt_ci95": f"{ci[0]:.3g}..{ci[1]:.3g}" if ci else "none",
        "fit_warnings": str(len(fit["warnings"])),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpucheck", help="directory for the sweep and its analysis")
    p.add_argument(
        "--widths", help="d_model of the benchmarked models, comma-separated (512,1024,2048; CPU 64,128,256)"
    )
    p.add_argument("--budget", type=float, help="FLOPs of the IsoFLOP sweep (1e16; CPU 3e9)")
    p.add_argument("--shapes", type=int, default=5, help="shapes of the IsoFLOP sweep (>= 5 for a useful parabola)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: tests,bench,fsdp,sweep")
    p.add_argument("--allow-cpu", action="store_true", help="run the plumbing on a CPU at toy sizes (testing only)")
    args = p.parse_args(argv)
    cpu = not torch.cuda.is_available()
    if cpu and not args.allow_cpu:
        print(f"{PROG}: skipped: no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)")
        return
    args.widths = args.widths or (CPU_WIDTHS if cpu else GPU_WIDTHS)
    args.budget = args.budget if args.budget is not None else (CPU_BUDGET if cpu else GPU_BUDGET)
    try:
        widths = [int(w) for w in args.widths.split(",") if w]
    except ValueError:
        fail(PROG, f"--widths {args.widths!r} must be comma-separated integers, e.g. 512,1024,2048")
    skip = {s for s in args.skip.split(",") if s}
    if skip - {"tests", "bench", "fsdp", "sweep"} or args.shapes < 3 or args.budget <= 0:
        fail(PROG, "use --skip among tests,bench,fsdp,sweep, --shapes >= 3 and --budget > 0")
    device = torch.device("cpu" if cpu else "cuda")
    name = "cpu" if cpu else torch.cuda.get_device_name(device)
    peak = None if cpu else nominal_peak(name)
    kv: dict[str, str] = {"device": name.replace(" ", "_"), "torch": torch.__version__}
    if "tests" not in skip:  # on a CPU its CUDA tests skip: the path is still run
        kv["gpu_tests"] = run_tests()
    if "bench" not in skip:
        for width in widths:
            bench = run_bench(width, device.type, cpu)
            achieved = float(bench["achieved_flops"])
            kv[f"d{width}_tokens_per_s"] = bench["tokens_per_s"]
            kv[f"d{width}_mfu"] = f"{achieved / peak:.3f}" if peak else "nan"
            kv[f"d{width}_fraction_of_matmul_peak"] = bench["fraction_of_peak"]
            kv[f"d{width}_shared_step_vs_synced"] = bench["shared_step_vs_synced"]
    if "fsdp" not in skip:
        kv["fsdp_smoke"] = fsdp_smoke(device)
    if "sweep" not in skip:
        kv |= run_sweep(Path(args.out), args.budget, args.shapes, cpu)
    print(" ".join(f"{k}={v}" for k, v in kv.items()))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

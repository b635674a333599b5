"""The status-view benchmark behind `python -m scaling.status_bench`: generate many run directories, time the view
against reading every result.json in the same run."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from sweeps.progress import collect, render

RECORD = {
    "schema_version": 1,
    "status": "completed",
    "error": None,
    "sweep": "isoflop",
    "budget": 1e17,
    "model": {
        "n_layer": 8,
        "d_model": 768,
        "n_head": 12,
        "n_kv_head": 12,
        "ffn_hidden": 2048,
        "vocab_size": 32000,
        "seq_len": 2048,
    },
    "N1": 5.6e7,
    "N2": 8.1e7,
    "params": 1.05e8,
    "M": 4.3e8,
    "M_formula": 4.3e8,
    "M_6N1": 3.4e8,
    "M_6N2": 4.9e8,
    "D": 2.3e8,
    "D_planned": 2.3e8,
    "C": 1e17,
    "lr": 1.2e-3,
    "batch_size": 524288,
    "seq_len": 2048,
    "steps": 440,
    "epochs": 0.02,
    "dataset": "files@0123abcd",
    "tokenizer": "bpe32000@89abcdef",
    "seed": 1337,
    "git_sha": "0" * 40,
    "torch": "2.13.0",
    "device": "cuda:0 (NVIDIA H100 80GB HBM3)",
    "world_size": 1,
    "config_hash": "0123456789abcdef",
    "val_loss": 3.21,
    "val_bpb": 1.02,
    "val_tokens": 65536,
    "train_loss": 3.2,
    "initial_loss": 10.4,
    "tokens_per_s": 3.1e5,
    "wall_time_s": 742.0,
    "startup_s": 3.1,
}
CONFIG = "".join(
    f"{section}:\n" + "".join(f"  key_{i}: value_{i}\n" for i in range(12))
    for section in ("model", "data", "optim", "train", "run")
)  # ~1.4 kB, as a resolved config.yaml


def _log(n_lines: int, batch: int) -> str:
    return "".join(
        json.dumps(
            {
                "step": 10 * i,
                "tokens": 10 * i * batch,
                "loss": 5.0 - 0.01 * i,
                "loss_ema": 5.0,
                "lr": 1e-3,
                "grad_norm": 0.5,
                "tokens_per_s": 3.0e5,
            }
        )
        + "\n"
        for i in range(1, n_lines + 1)
    )


def generate(root: Path, n: int, sweeps: int = 10) -> dict[str, int]:
    """n run dirs under root/<sweep i>/, plus 5% more plan rows not started; returns how many of each kind."""
    kinds: dict[str, int] = {}
    old = time.time() - 7200
    per = -(-n // sweeps)
    log = _log(20, 524288)
    for s in range(sweeps):
        sweep = root / "study" / f"sweep_{s}"
        sweep.mkdir(parents=True)
        ids = [f"iso_C1e+17_run{s}_{i}" for i in range(min(per, n - s * per))]
        plan = ["run_id,steps,batch_size,lr,D,est_seconds"]
        plan += [f"{rid},440,524288,0.0012,230686720,700" for rid in ids]
        plan += [f"{rid}_todo,440,524288,0.0012,230686720,700" for rid in ids[: len(ids) // 20]]
        (sweep / "plan.csv").write_text("\n".join(plan) + "\n")
        for i, rid in enumerate(ids):
            d = sweep / rid
            d.mkdir()
            k = i % 100
            kind = (
                "running"
                if k < 3
                else "killed"
                if k < 5
                else "diverged"
                if k < 8
                else "failed"
                if k < 9
                else "cut_off"
                if k == 9
                else "no_config"
                if k == 10
                else "completed"
            )
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind != "no_config":
                (d / "config.yaml").write_text(CONFIG)
            half = log[: len(log) // 2]
            (d / "metrics.jsonl").write_text(half[: half.rfind("\n") + 1] + ('{"step": 1' if kind == "cut_off" else ""))
            if kind in ("completed", "diverged", "failed", "no_config"):
                (d / "metrics.jsonl").write_text(log)
                status = "completed" if kind == "no_config" else kind
                (d / "result.json").write_text(json.dumps(RECORD | {"status": status}, indent=2))
            if kind == "killed":
                os.utime(d / "metrics.jsonl", (old, old))
                os.utime(d / "config.yaml", (old, old))
    kinds["not started (plan rows)"] = sum(len(range(min(per, n - s * per))) // 20 for s in range(sweeps))
    return kinds


def _reference(root: Path) -> int:
    """Read and parse every result.json below root: the floor for any record-based status."""
    n = 0
    for dirpath, _, files in os.walk(root):
        if "result.json" in files:
            json.loads(Path(dirpath, "result.json").read_bytes())
            n += 1
    return n


def bench(n: int = 10_000, rounds: int = 3) -> int:
    with tempfile.TemporaryDirectory(prefix="status-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        kinds = generate(root, n)
        print(
            f"generated {n:,} run dirs in {time.perf_counter() - t0:.1f}s: "
            + ", ".join(f"{v} {k}" for k, v in kinds.items())
        )
        view, ref = [], []
        for _ in range(rounds):  # alternate, so both see the same machine load
            t = time.perf_counter()
            sweeps = collect(root)
            text = render(sweeps, root)
            view.append(time.perf_counter() - t)
            t = time.perf_counter()
            _reference(root)
            ref.append(time.perf_counter() - t)
        v, r = statistics.median(view), statistics.median(ref)
        print(text.splitlines()[-1])
        print(
            f"status view: {v:.2f}s for {n:,} run dirs (median of {rounds}); reading every result.json alone: "
            f"{r:.2f}s -> {v / r:.1f}x the reference; {v / 2.0:.2f}x the 2 s budget"
        )
        print(f"seconds={v:.3f} reference_seconds={r:.3f} ratio_to_reference={v / r:.2f} budget_fraction={v / 2.0:.2f}")
    return 0

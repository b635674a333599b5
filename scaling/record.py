"""The run record: atomic writes, config hashing and provenance for result.json."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from scaling.atomic import write_atomic

SCHEMA_VERSION = 1
FINISHED = ("completed", "diverged")  # a run in one of these states is never retrained
# Keys that change how a run is executed or logged but not what it computes: they stay out of the config hash,
# so that a run resumed on another device, or with a progress bar, is recognised as the same run.
EXECUTION_ONLY = {"device", "compile", "threads", "progress", "log_every", "ckpt_every_s", "micro_batch_size"}


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_result(run_dir: Path) -> dict | None:
    """The run's result.json, or None when absent or unreadable (a rerun then trains it again)."""
    try:
        return json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None


def config_hash(cfg: dict) -> str:
    """Hash of everything that determines a run's numbers (model, data, optim, train, seed)."""
    train = {k: v for k, v in cfg["train"].items() if k not in EXECUTION_ONLY}
    data = {k: v for k, v in cfg["data"].items() if k != "cache_dir"}  # where the cache lives changes no number
    key = {"model": cfg["model"], "data": data, "optim": cfg["optim"], "train": train, "seed": cfg["seed"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)

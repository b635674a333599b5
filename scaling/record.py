"""The run record: atomic writes, config hashing and provenance for result.json."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

SCHEMA_VERSION = 1
FINISHED = ("completed", "diverged")  # a run in one of these states is never retrained
# Keys that change how a run is executed or logged but not what it computes: they stay out of the config hash,
# so that a run resumed on another device, or with a progress bar, is recognised as the same run.
EXECUTION_ONLY = {"device", "compile", "threads", "progress", "log_every", "ckpt_every_s", "micro_batch_size"}


def write_atomic(path: Path, text: str) -> None:
    """Write text so that readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; records are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def seconds_since_process_start() -> float | None:
    """Wall time since this process started (imports included), from /proc; None where /proc is absent."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


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

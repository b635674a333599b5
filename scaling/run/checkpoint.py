"""Checkpoints that survive a kill at any instant and are data, never code.

`ckpt.pt` holds only tensors and plain values and is read with `torch.load(weights_only=True)`, which refuses
anything that would run code. Its sidecar `ckpt.json` ({schema, config_hash}) is plain JSON and is checked first:
a checkpoint of another config (or one planted without a sidecar) is never even unpickled. Both are written
atomically under unique temp names (scaling.base.atomic), so a kill, a full disk or a second writer leaves no half file.

`truncate_metrics` belongs here too: on resume it cuts `metrics.jsonl` back to the checkpoint's step, tolerating the
broken last line a kill or a full disk leaves behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from scaling.base.atomic import atomic_file, write_atomic
from scaling.base.record import read_metrics

CKPT_NAME = "ckpt.pt"
META_NAME = "ckpt.json"
CKPT_SCHEMA = 2  # 1 was a pickled dict with no sidecar, which needs weights_only=False to load: never trusted


def sidecar(name: str) -> str:
    """The JSON sidecar of a checkpoint file: ckpt.pt -> ckpt.json (a trunk's branch_12.pt -> branch_12.json)."""
    return META_NAME if name == CKPT_NAME else Path(name).stem + ".json"


def save_checkpoint(run_dir: Path, state: dict[str, Any], name: str = CKPT_NAME) -> None:
    """Write state (tensors and plain values, with its "config_hash") as run_dir/name (ckpt.pt), with its JSON
    sidecar (ckpt.json)."""
    meta = json.dumps({"schema": CKPT_SCHEMA, "config_hash": state["config_hash"]}) + "\n"
    # The config hash is fixed for a run dir (train_run refuses any other), so the sidecar can go first: a kill
    # between the two writes leaves a valid pair either way.
    if _read_meta(run_dir, name) != json.loads(meta):
        write_atomic(run_dir / sidecar(name), meta)
    path = run_dir / name
    try:
        with atomic_file(path, "wb") as f:
            torch.save(state, f)
    except RuntimeError as e:  # torch's zip writer reports a failed write (a full disk, a quota) as RuntimeError
        free = shutil.disk_usage(run_dir).free
        code = errno.ENOSPC if free < _nbytes(state) else errno.EIO
        raise OSError(
            code, f"{os.strerror(code)} writing {path} ({free:,} bytes free): {str(e).splitlines()[0]}"
        ) from e


def load_checkpoint(run_dir: Path, config_hash: str, name: str = CKPT_NAME) -> dict[str, Any] | None:
    """The run's checkpoint (run_dir/name) when it belongs to this exact config, else None (start afresh)."""
    path = run_dir / name
    if not path.exists():
        return None
    meta = _read_meta(run_dir, name)
    if meta != {"schema": CKPT_SCHEMA, "config_hash": config_hash}:
        warnings.warn(
            f"ignoring {path}: its {sidecar(name)} is missing or names another config/schema "
            f"({meta}); training from step 0",
            stacklevel=2,
        )
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises many types for a truncated or non-tensor file: retrain
        warnings.warn(
            f"ignoring unreadable checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            f"training from step 0",
            stacklevel=2,
        )
        return None
    return state if isinstance(state, dict) and state.get("config_hash") == config_hash else None


def has_checkpoint(run_dir: Path, config_hash: str, name: str = CKPT_NAME) -> bool:
    """Whether run_dir holds a checkpoint `name` of this config (its sidecar says so; nothing is unpickled)."""
    return (run_dir / name).is_file() and _read_meta(run_dir, name) == {
        "schema": CKPT_SCHEMA,
        "config_hash": config_hash,
    }


def drop_checkpoint(run_dir: Path, name: str) -> None:
    """Remove checkpoint `name` and its sidecar (the sidecar last: a kill in between leaves no file that could load)."""
    (run_dir / name).unlink(missing_ok=True)
    (run_dir / sidecar(name)).unlink(missing_ok=True)


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state dict: what a checkpoint needs on disk, roughly."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _read_meta(run_dir: Path, name: str = CKPT_NAME) -> dict | None:
    try:
        meta = json.loads((run_dir / sidecar(name)).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, keep only the log lines up to the checkpoint's step, so no step is logged twice; broken lines
    (what a kill or a full disk leaves mid-write) are dropped with a warning instead of failing every rerun."""
    if not path.exists():
        return
    rows, bad = read_metrics(path)
    broken = len(bad)
    if broken:
        warnings.warn(
            f"{path}: dropped {broken} unreadable line(s) (an interrupted write); resuming from step {step}",
            stacklevel=2,
        )
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))

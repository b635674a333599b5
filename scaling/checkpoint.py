"""Checkpoints that survive a kill at any instant: written to a temp file, then renamed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CKPT_NAME = "ckpt.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    path = run_dir / CKPT_NAME
    tmp = path.with_name(f".{CKPT_NAME}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(run_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """The run's checkpoint when it belongs to this exact config, else None (start afresh)."""
    path = run_dir / CKPT_NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a truncated file from a crash on an older writer: retrain rather than trust it
        return None
    return state if state.get("config_hash") == config_hash else None

"""What Hydra writes before a command can validate its input, and how to take back exactly that and nothing more.

Hydra creates the run's output directory (with any missing parents), writes `<output_subdir>/` (.hydra: config.yaml,
hydra.yaml, overrides.yaml) and opens `<job>.log` in it before the task function runs. When the task then refuses
its input, a user's directory must be left exactly as it was: `hydra.run.dir=/`, or a directory of the user's own
logs, or a finished run's directory given by mistake. So `OutputsGuard` (a Hydra callback, conf/run.yaml) records,
before Hydra creates anything, which of those paths existed and what Hydra's files held, and `undo()` removes only
what this invocation created and puts back what it overwrote or appended to. Without a record (another entry
point, a multirun job) `undo()` touches nothing: never deleting what the project did not create comes first.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SMALL = 1 << 20  # Hydra's .hydra files are KBs; a larger file is a log Hydra only appends to: its size suffices


@dataclass
class _Before:
    out_dir: Path  # absolute
    subdir: Path | None  # out_dir/.hydra, or None when hydra.output_subdir=null
    created: list[Path] = field(default_factory=list)  # directories that did not exist: Hydra's if they do after
    files: dict[Path, bytes | int] = field(default_factory=dict)  # what existed: its bytes, or its size when large


_before: _Before | None = None


def record(out_dir: str | Path, subdir: str | None) -> None:
    """Remember the state of out_dir and of what Hydra will write in it (call before Hydra creates anything)."""
    global _before
    out = Path(os.path.abspath(out_dir))
    state = _Before(out, out / subdir if subdir else None)
    p = out
    while not os.path.lexists(p) and p != p.parent:
        state.created.append(p)
        p = p.parent
    if state.subdir is not None and not os.path.lexists(state.subdir):
        state.created.append(state.subdir)
    for path in _hydras(state):
        if (before := _snapshot(path)) is not None:
            state.files[path] = before
    _before = state


def _hydras(state: _Before) -> list[Path]:
    """The files Hydra writes or may have written: <job>.log at the top of out_dir, anything in its subdir."""
    found = [state.out_dir / n for n in _names(state.out_dir) if n.endswith(".log")]
    if state.subdir is not None:
        found += [state.subdir / n for n in _names(state.subdir)]
    return [p for p in found if p.is_file() and not p.is_symlink()]  # links and special files: never touched


def _names(d: Path) -> list[str]:
    try:
        return os.listdir(d) if d.is_dir() and not d.is_symlink() else []
    except OSError:
        return []


def _snapshot(path: Path) -> bytes | int | None:
    try:
        size = path.stat().st_size
        return size if size > SMALL else path.read_bytes()
    except OSError:
        return None


def undo(out_dir: str | Path) -> None:
    """Take back what Hydra wrote for this invocation in out_dir: files and directories it created are removed,
    files it rewrote get their old bytes back, logs it appended to are cut back to their old size."""
    global _before
    state, _before = _before, None
    if state is None or state.out_dir != Path(os.path.abspath(out_dir)):
        return  # no record of what was there before: leave everything as it is
    for path in _hydras(state):
        before = state.files.get(path)
        with contextlib.suppress(OSError):
            if before is None:  # created by this invocation
                path.unlink()
            elif isinstance(before, bytes):
                if path.read_bytes() != before:
                    path.write_bytes(before)
            elif path.stat().st_size > before:  # a large log Hydra appended to
                os.truncate(path, before)
    for d in sorted(state.created, key=lambda p: len(p.parts), reverse=True):  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()  # fails, leaving it, when anything else is in it


class OutputsGuard(Callback):
    """Hydra callback (hydra.callbacks in conf/run.yaml): `record` the output dir before Hydra creates it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            HydraConfig.instance().set_config(config)  # what run_job does next: ${hydra:...} resolves the same
            out_dir = OmegaConf.select(config, "hydra.run.dir")
            subdir = OmegaConf.select(config, "hydra.output_subdir")
        except Exception:  # noqa: BLE001 -- a dir Hydra itself cannot resolve fails there; nothing recorded
            return
        if out_dir is not None:
            record(str(out_dir), None if subdir is None else str(subdir))

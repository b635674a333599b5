"""Atomic file writes: readers see the old file or the new one, never half of one (a kill can come at any time).

Every write goes to a temp file with a unique name in the target's directory (two writers never share one), is
fsynced, then renamed over the target. On any failure (a full or read-only disk, an exception mid-write) the temp
file is removed, so a failed write leaves the directory exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a unique temp file next to `path` for writing (mode "w" or "wb"); on a clean exit it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600 files; records are meant to be shared
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write text to a temp file in the same directory, fsync it, then rename it over `path`."""
    with atomic_file(path, "w") as f:
        f.write(text)


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """The bytes variant of write_atomic."""
    with atomic_file(path, "wb") as f:
        f.write(data)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the temp files atomic_file left in `directory` when its writer was killed between creating and
    renaming one (kill -9 runs no cleanup). Only its owner may call this: another live writer's temp would go too."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        if not tmp.is_file() or tmp.is_symlink():
            continue  # not one of atomic_file's temps
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

"""Reading the files of a runs tree, which anyone with write access to it may have planted: regular files only,
size-capped, found by a walk that stays inside the tree it was given.

- Reads go through `scaling.base.safe_read` (non-blocking open, fstat on the open descriptor, refused by name when
  not a regular file); here each kind of file the loaders read gets its own cap, so memory follows the work.
- `find_named` does not descend into linked directories and skips a linked file whose target lies outside the
  root: a link to `/` never makes a walk read the whole filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

from scaling.base.safe_read import RECORD_CAP, MiB, read_capped

# A result.json is ~2 kB and a config.yaml ~3 kB; a metrics.jsonl line is ~150 bytes (256 MiB: ~1.7M logged steps);
# a CSV row ~200 bytes (1 GiB: ~5M runs, beyond what the fits are benchmarked for).
CAPS = {"result.json": RECORD_CAP, "config.yaml": RECORD_CAP, "metrics.jsonl": 256 * MiB, "csv": 1024 * MiB}


def cap_for(path: Path) -> int:
    return CAPS.get(path.name, CAPS["csv"] if path.suffix.lower() == ".csv" else RECORD_CAP)


def read_bytes(path: Path, cap: int | None = None) -> bytes:
    """The bytes of a regular file of at most `cap` bytes (default: its kind's cap); Refused/OSError otherwise."""
    return read_capped(path, cap_for(Path(path)) if cap is None else cap)


def read_text(path: Path, cap: int | None = None, errors: str = "strict") -> str:
    return read_bytes(path, cap).decode("utf-8", errors=errors)


def find_named(root: Path, name: str, warnings: list[str]) -> list[Path]:
    """Every entry called `name` below `root` (root included), sorted, without following linked directories; a
    linked `name` whose target is outside root is skipped and named in warnings. Entries are not checked for
    being regular files here: the reader refuses those by name."""
    root = Path(root)
    top = root.resolve()
    found: list[Path] = []
    outside: list[str] = []

    def unreadable(e: OSError) -> None:
        warnings.append(f"{e.filename}: not searched ({type(e).__name__}: {e.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        dirnames.sort()
        for d in dirnames:
            link = Path(dirpath, d)
            if link.is_symlink() and not link.resolve().is_relative_to(top):
                outside.append(f"{link} -> {link.resolve()}")
        if name not in filenames:
            continue
        p = Path(dirpath, name)
        if p.is_symlink() and not p.resolve().is_relative_to(top):
            warnings.append(f"{p}: links outside {root} (to {p.resolve()}); skipped")
            continue
        found.append(p)
    if outside:
        warnings.append(
            f"{len(outside)} linked director{'y' if len(outside) == 1 else 'ies'} below {root} point outside it and "
            f"were not searched (e.g. {outside[0]}); pass a target as an input to include its runs"
        )
    return sorted(found)

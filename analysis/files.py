"""Reading the files of a runs tree, which anyone with write access to it may have planted: regular files only,
size-capped, found by a walk that stays inside the tree it was given.

- A FIFO, device or socket named result.json or metrics.jsonl would block a plain `open` forever (a FIFO waits for
  a writer): files are opened non-blocking, checked with fstat on the open descriptor (no window between the check
  and the read), and refused by name when they are not regular files.
- A file over its cap (a 1 GB result.json) is refused by name before it is read, so memory follows the work.
- `find_named` does not descend into linked directories and skips a linked file whose target lies outside the
  root: a link to `/` never makes a walk read the whole filesystem.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MiB = 2**20
# A result.json is ~2 kB and a config.yaml ~3 kB; a metrics.jsonl line is ~150 bytes (256 MiB: ~1.7M logged steps);
# a CSV row ~200 bytes (1 GiB: ~5M runs, beyond what the fits are benchmarked for).
CAPS = {"result.json": 16 * MiB, "config.yaml": 16 * MiB, "metrics.jsonl": 256 * MiB, "csv": 1024 * MiB}


class Refused(OSError):
    """A file the loaders will not read: not a regular file, or over its size cap. The message names it."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path, cap: int) -> int:
    """A blocking read descriptor on `path` once fstat says it is a regular file of at most `cap` bytes.

    Raises Refused (naming the file and why) or OSError (missing, permissions)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: opening a FIFO must not wait for a writer
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{path} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > cap:
            raise Refused(f"{path} is {_size(st.st_size)}, over the {_size(cap)} a {_what(path)} may be")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < MiB else f"{n / MiB:,.1f} MiB"


def _what(path: Path) -> str:
    return "CSV" if path.suffix.lower() == ".csv" else path.name


def cap_for(path: Path) -> int:
    return CAPS.get(path.name, CAPS["csv"] if path.suffix.lower() == ".csv" else 16 * MiB)


def read_bytes(path: Path, cap: int | None = None) -> bytes:
    """The bytes of a regular file of at most `cap` bytes (default: its kind's cap); Refused/OSError otherwise."""
    cap = cap_for(Path(path)) if cap is None else cap
    with os.fdopen(open_regular(Path(path), cap), "rb") as f:
        data = f.read(cap + 1)  # a file that grew since fstat is still cut at the cap
    if len(data) > cap:
        raise Refused(f"{path} grew past the {_size(cap)} a {_what(Path(path))} may be while being read")
    return data


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

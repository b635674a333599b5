"""Reading files that anyone with write access to a runs directory may have planted: bounded and never blocking.

A run dir's records are data written by this project, but a shared directory can hold anything under their names:
a FIFO named result.json (an `open()` for reading waits forever for a writer), a device, or a 1 GB file where a
1 KB record belongs (read whole, it costs GBs). `read_capped` reads a regular file of at most `cap` bytes, and
raises `Refused` (an OSError that names the file and the problem) otherwise, so a caller can say "skipping
result.json: it is a FIFO" and go on. The file is opened with O_NONBLOCK (a FIFO's open returns at once) and checked
with fstat on the descriptor it reads (a swap between a check and the open changes nothing).

This is the one bounded reader of the project: the status view, training's lock and the analysis loaders
(`analysis.files`, which adds their per-kind caps and the walk of a runs tree) all read through it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MiB = 2**20
RECORD_CAP = 16 * MiB  # a result.json, config.yaml, .lock or report.json is KBs; 16 MiB is far past any real one


class Refused(OSError):
    """A file the readers will not read: not a regular file, or over its size cap. The message names it."""

    def __str__(self) -> str:  # the message alone: it already names the file ("[Errno 22]" says nothing more)
        return str(self.strerror)


class NotARegularFile(Refused):
    """A FIFO, socket, device or directory where a file belongs: never opened for a blocking read."""


class FileTooBig(Refused):
    """Larger than the reader's cap: refused by name instead of read into memory."""


def kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < MiB else f"{n / MiB:,.1f} MiB"


def _over(path: str | Path, cap: int) -> str:
    """The cap in a refusal, with the kind of file it is for: "16.0 MiB a result.json may be", "... a CSV may be"."""
    what = "CSV" if Path(path).suffix.lower() == ".csv" else Path(path).name
    return f"{_size(cap)} a {what} may be"


_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: str | Path, cap: int | None = None) -> int:
    """An O_RDONLY descriptor of path when it is a regular file (following symlinks) of at most `cap` bytes
    (any size without one); NotARegularFile or FileTooBig otherwise, OSError when missing or unreadable.

    O_NONBLOCK makes the open of a FIFO return at once (a plain open waits for a writer); fstat on the descriptor
    decides, so swapping the file between a check and the open changes nothing. O_NONBLOCK does nothing to reads
    of a regular file."""
    fd = os.open(path, _FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(errno.EINVAL, f"{path} is {kind(st.st_mode)}, not a regular file")
        if cap is not None and st.st_size > cap:
            raise FileTooBig(errno.EFBIG, f"{path} is {_size(st.st_size)}, over the {_over(path, cap)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_capped(path: str | Path, cap: int = RECORD_CAP) -> bytes:
    """The whole content of a regular file of at most `cap` bytes; NotARegularFile or FileTooBig (OSErrors that
    name the file and the problem) otherwise. Memory is bounded by cap whatever the file claims or grows to.
    Plain os calls: the status view reads 10,000 records with it, as fast as a plain open().read()."""
    fd = open_regular(path, cap)
    try:
        size = os.fstat(fd).st_size
        chunks, got = [], 0
        while got <= cap:  # the file may have grown since the fstat: read to its end, or just past the cap
            chunk = os.read(fd, size - got + 1 if got < size else min(cap + 1 - got, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    if got > cap:
        raise FileTooBig(errno.EFBIG, f"{path} grew past the {_over(path, cap)} while being read")
    return b"".join(chunks)

"""Reading files that anyone with write access to a runs directory may have planted: bounded and never blocking.

A run dir's records are data written by this project, but a shared directory can hold anything under their names:
a FIFO named result.json (an `open()` for reading waits forever for a writer), a device, or a 1 GB file where a
1 KB record belongs (read whole, it costs GBs). `read_capped` reads a regular file of at most `cap` bytes, and
raises an OSError that names the problem otherwise, so a caller can say "skipped: result.json is a FIFO" and go
on. The file is opened with O_NONBLOCK (a FIFO's open returns at once) and checked with fstat on the descriptor
it reads (a swap between a check and the open changes nothing).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

RECORD_CAP = 16 * 2**20  # a result.json, config.yaml, .lock or report.json is KBs; 16 MiB is far past any real one


class _Named(OSError):
    def __str__(self) -> str:  # the message alone: it already names the file ("[Errno 22]" says nothing more)
        return str(self.strerror)


class NotARegularFile(_Named):
    """A FIFO, socket, device or directory where a file belongs: never opened for a blocking read."""


class FileTooBig(_Named):
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


_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: str | Path) -> int:
    """An O_RDONLY descriptor of path when it is a regular file (following symlinks), else NotARegularFile.

    O_NONBLOCK makes the open of a FIFO return at once (a plain open waits for a writer); fstat on the descriptor
    decides, so swapping the file between a check and the open changes nothing. O_NONBLOCK does nothing to reads
    of a regular file."""
    fd = os.open(path, _FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(errno.EINVAL, f"{path} is {kind(st.st_mode)}, not a file; skipped")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_capped(path: str | Path, cap: int = RECORD_CAP) -> bytes:
    """The whole content of a regular file of at most `cap` bytes; NotARegularFile or FileTooBig (OSErrors that
    name the file and the problem) otherwise. Memory is bounded by cap whatever the file claims or grows to.
    Plain os calls: the status view reads 10,000 records with it, as fast as a plain open().read()."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise FileTooBig(errno.EFBIG, f"{path} is {size:,} bytes, over the {cap:,}-byte limit for it; not read")
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
        raise FileTooBig(errno.EFBIG, f"{path} grew past the {cap:,}-byte limit for it while read; not read")
    return b"".join(chunks)


def size_of(path: str | Path) -> int:
    """The size of a regular file (following symlinks); NotARegularFile for anything else."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(errno.EINVAL, f"{path} is {kind(st.st_mode)}, not a file; skipped")
    return st.st_size

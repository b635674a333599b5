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


class NotARegularFile(OSError):
    """A FIFO, socket, device or directory where a file belongs: never opened for a blocking read."""


class FileTooBig(OSError):
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


def open_regular(path: str | Path) -> int:
    """An O_RDONLY descriptor of path when it is a regular file (following symlinks), else NotARegularFile.

    stat() first, so a device is not even opened (opening some devices has effects); O_NONBLOCK so that a file
    swapped for a FIFO after the stat still cannot block the open; fstat on the descriptor decides."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(errno.EINVAL, f"{path} is {kind(st.st_mode)}, not a file; skipped")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(errno.EINVAL, f"{path} is {kind(st.st_mode)}, not a file; skipped")
        os.set_blocking(fd, True)  # a regular file never blocks anyway; plain reads from here on
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_capped(path: str | Path, cap: int = RECORD_CAP) -> bytes:
    """The whole content of a regular file of at most `cap` bytes; NotARegularFile or FileTooBig (OSErrors that
    name the file and the problem) otherwise. Memory is bounded by cap whatever the file claims or grows to."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size > cap:
            raise FileTooBig(errno.EFBIG, f"{path} is {size:,} bytes, over the {cap:,}-byte limit for it; not read")
        data = f.read(cap + 1)  # the file may have grown since the fstat
    if len(data) > cap:
        raise FileTooBig(errno.EFBIG, f"{path} grew past the {cap:,}-byte limit for it while read; not read")
    return data


def size_of(path: str | Path) -> int:
    """The size of a regular file (following symlinks); NotARegularFile for anything else."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(errno.EINVAL, f"{path} is {kind(st.st_mode)}, not a file; skipped")
    return st.st_size

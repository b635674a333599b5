"""Reading a sharded (torch.distributed.checkpoint) checkpoint as data, never as code.

DCP's own reader unpickles `.metadata` with plain `pickle.load` and its non-tensor entries (optimizer settings) with
`torch.load(weights_only=False)`: a file planted in a shared runs directory would run code on every rank. Here:

- `.metadata` goes through `MetadataUnpickler`, which admits DCP's metadata dataclasses, torch.Size, torch dtypes
  and layouts, and pathlib paths, and nothing else (no callable that could run code is reachable);
- the unpickled Metadata is checked: its types, and every shard file it names is a plain file name inside the
  checkpoint directory (no `..`, no absolute path, no symlink out of the run dir), without stream transforms;
- `SafeReader` hands DCP that checked Metadata (DCP never reads the file itself) and `SafePlanner` loads the
  non-tensor entries with `torch.load(weights_only=True)`; tensors already are.

`checkpoint_dir` resolves `ckpt_dcp.json`'s "path" only to `ckpt_dcp/step_<N>` inside the run dir.
Anything refused raises `UntrustedCheckpoint` (one line naming the file and why).
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import ReadItem

from scaling.base.safe_read import open_regular, read_capped

DCP_DIR = "ckpt_dcp"
STEP_DIR = re.compile(r"step_\d{1,12}")
METADATA_CAP = 1 << 30  # a 67B model's metadata is a few MB; a GiB is far past any real one
BYTES_CAP = 1 << 20  # a non-tensor entry is one optimizer setting (a float, a list of names): bytes to KBs
_META_MODULE = "torch.distributed.checkpoint.metadata"
_ALLOWED = {
    (_META_MODULE, name)
    for name in (
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "StorageMeta",
        "MetadataIndex",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a lookup in torch's table of layouts by name
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}


class UntrustedCheckpoint(ValueError):
    """A sharded checkpoint that is not what this project writes: refused before any of it is used."""


class MetadataUnpickler(pickle.Unpickler):
    """pickle.Unpickler for DCP's `.metadata`: only DCP's metadata classes and the plain torch values they hold."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a DCP metadata file never holds")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds a persistent id, which a DCP metadata file never does")


def checkpoint_dir(run_dir: Path, name: Any) -> Path:
    """run_dir/ckpt_dcp/<name> for a name DCP checkpoints get here (step_<N>), resolved inside run_dir."""
    if not isinstance(name, str) or not STEP_DIR.fullmatch(name):
        raise UntrustedCheckpoint(f"its path {name!r} is not a checkpoint name this project writes (step_<N>)")
    path = Path(run_dir) / DCP_DIR / name
    _inside(path, Path(run_dir))
    return path


def _inside(path: Path, run_dir: Path) -> None:
    """The file or directory, symlinks followed, lies inside run_dir."""
    root = run_dir.resolve()
    if not path.resolve().is_relative_to(root):
        raise UntrustedCheckpoint(f"{path} leads outside the run dir {run_dir} (a symlink?)")


def read_metadata(ckpt_dir: Path, run_dir: Path) -> Metadata:
    """The checked Metadata of the DCP checkpoint in ckpt_dir; UntrustedCheckpoint when it is anything else."""
    path = ckpt_dir / ".metadata"
    try:
        data = read_capped(path, METADATA_CAP)
    except OSError as e:
        raise UntrustedCheckpoint(f"{path} is unreadable ({e.strerror or e})") from None
    try:
        md = MetadataUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 -- refused classes, truncated or garbage pickles are all the same: refused
        raise UntrustedCheckpoint(f"{path} was not read ({type(e).__name__}: {_line(e)})") from None
    _check(md, path, ckpt_dir, run_dir)
    return md


def _check(md: Any, path: Path, ckpt_dir: Path, run_dir: Path) -> None:
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    def bad(why: str) -> UntrustedCheckpoint:
        return UntrustedCheckpoint(f"{path}: {why}")

    if not isinstance(md, Metadata) or not isinstance(md.state_dict_metadata, dict):
        raise bad(f"holds a {type(md).__name__}, not DCP Metadata")
    for key, entry in md.state_dict_metadata.items():
        if not isinstance(key, str) or not isinstance(entry, (TensorStorageMetadata, BytesStorageMetadata)):
            raise bad(f"entry {key!r} is a {type(entry).__name__}, not tensor or bytes metadata")
        if isinstance(entry, TensorStorageMetadata) and not all(
            isinstance(c, ChunkStorageMetadata) for c in entry.chunks
        ):
            raise bad(f"entry {key!r} has chunks that are not chunk metadata")
    if not isinstance(md.storage_data, dict):
        raise bad("has no storage map")
    files = set()
    for index, info in md.storage_data.items():
        if not isinstance(index, MetadataIndex) or not isinstance(info, _StorageInfo):
            raise bad(f"its storage map holds a {type(info).__name__}")
        rel = info.relative_path
        if not isinstance(rel, str) or not rel or "/" in rel or "\\" in rel or rel in (".", ".."):
            raise bad(f"names the shard file {rel!r}, which is not a plain file name in {ckpt_dir}")
        if not (isinstance(info.offset, int) and isinstance(info.length, int) and info.offset >= 0 <= info.length):
            raise bad(f"has a bad offset/length for {rel!r}")
        if info.transform_descriptors:  # this project writes plain shards; a transform would run extension code
            raise bad(f"asks for stream transforms {info.transform_descriptors!r}")
        files.add(rel)
    for rel in files:
        _inside(ckpt_dir / rel, run_dir)
    # Non-tensor entries (optimizer settings) are small pickles inside the shard files: each is read now, as data,
    # so that a refused one stops the load before any tensor has been copied into the model.
    for index, info in md.storage_data.items():
        if isinstance(md.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            _check_bytes(ckpt_dir / info.relative_path, info.offset, info.length, index.fqn)


def _check_bytes(shard: Path, offset: int, length: int, fqn: str) -> None:
    if length > BYTES_CAP:
        raise UntrustedCheckpoint(f"{shard}: entry {fqn!r} is {length:,} bytes, not a small setting")
    try:
        fd = open_regular(shard)
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # noqa: BLE001 -- unreadable, truncated or refused by weights_only: not trusted
        raise UntrustedCheckpoint(f"{shard}: entry {fqn!r} was not read ({type(e).__name__}: {_line(e)})") from None


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


class SafeReader(FileSystemReader):
    """DCP's file reader, with the checked Metadata handed in instead of unpickled from disk by DCP."""

    def __init__(self, ckpt_dir: Path, metadata: Metadata):
        super().__init__(str(ckpt_dir))
        self._metadata = metadata

    def read_metadata(self) -> Metadata:  # type: ignore[override]  # no **kwargs: no per-rank fallback file
        from torch.distributed.checkpoint.metadata import StorageMeta

        md = self._metadata
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = StorageMeta()
        assert md.storage_meta is not None
        md.storage_meta.load_id = self.load_id
        return md


class SafePlanner(DefaultLoadPlanner):
    """DCP's default load planner, reading non-tensor entries (optimizer settings) as data (weights_only=True)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element  # what DCP's planner itself uses

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def load_checked(state: dict[str, Any], ckpt_dir: Path, run_dir: Path, metadata: Metadata | None = None) -> None:
    """dcp.load(state) from ckpt_dir through the checks above (metadata: already read by read_metadata)."""
    import torch.distributed.checkpoint as dcp

    md = metadata if metadata is not None else read_metadata(ckpt_dir, run_dir)
    dcp.load(state, storage_reader=SafeReader(ckpt_dir, md), planner=SafePlanner())

"""Streamed readers for corpus shards: .txt/.md, JSON lines (.jsonl, optionally .gz or .zst) and .parquet.

Every reader yields (doc_id, text) one document at a time from a stream, so memory stays bounded whatever the
shard size; every failure names the file (and line or row) and what to do. Compressed JSON lines also come as
`.json.gz`/`.json.zst` (Dolma's naming). pyarrow and zstandard are imported only when such a shard is read.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
CHUNK_CHARS = 16_000  # text files are cut into documents of about this size, so one book still splits by document
PARQUET_BATCH_ROWS = 1024
Doc = tuple[str, str]  # (doc_id, text); the id decides the train/val split, so it must be stable


def shard_suffix(path: Path) -> str | None:
    """The readable format of `path` (one of SUFFIXES), or None."""
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def read_shard(path: Path, rel: str, text_field: str = "text", id_field: str | None = None) -> Iterator[Doc]:
    """Documents of one shard; `rel` (its path relative to the corpus root) prefixes every id."""
    suffix = shard_suffix(path)
    if suffix in TEXT_SUFFIXES:
        for k, chunk in enumerate(_chunks(_text_lines(path))):
            yield f"{rel}#{k}", chunk
    elif suffix in JSONL_SUFFIXES:
        yield from _jsonl(path, rel, text_field, id_field)
    elif suffix in PARQUET_SUFFIXES:
        yield from _parquet(path, rel, text_field, id_field)
    else:
        raise ValueError(f"{path} is not a readable shard ({'/'.join(SUFFIXES)}); convert it or remove it")


def optional(module: str, path: Path):
    """A reader's library, imported when a shard needs it; a one-line error when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"reading {path} needs {module.split('.')[0]}: pip install 'scaling-lab[corpora]'") from None


def read_text(path: Path) -> str:
    """A whole UTF-8 file (for corpora whose documents are whole files)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8 or remove it"
        ) from None
    except OSError as e:
        raise ValueError(f"cannot read {path} ({e.strerror}); check data.path and its permissions") from None


def doc_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _text_lines(path: Path) -> Iterator[str]:
    """Lines (with their '\n') of a UTF-8 file; split on b'\n' only, so the pieces join back to the file exactly."""
    n = 0  # not enumerate(): its reused result tuple would keep the last line alive
    with _open(path, "rb") as fh:
        for raw in fh:
            n += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{n} is not UTF-8 text (bad byte at column {e.start + 1}); convert the "
                    "file to UTF-8 or remove it"
                ) from None
            del raw  # a 100 MB line is not held twice while it is encoded
            yield line


def _chunks(lines: Iterator[str]) -> Iterator[str]:
    """Consecutive pieces of the text (joined, they are the text), each ending at a blank line once it holds
    CHUNK_CHARS characters, or at any line end once it holds 4x that (text without paragraphs)."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line)
        if size >= 4 * CHUNK_CHARS or (size >= CHUNK_CHARS and (not line or line.isspace())):
            text = "".join(chunk)
            chunk, size, line = [], 0, ""  # the lines are not held beside their join while it is encoded
            yield text
    if chunk:
        yield "".join(chunk)


def _open(path: Path, mode: str) -> IO[bytes]:
    try:
        return open(path, mode)
    except OSError as e:
        raise ValueError(f"cannot read {path} ({e.strerror}); check data.path and its permissions") from None


def _binary_lines(path: Path) -> Iterator[bytes]:
    """Raw lines of a possibly compressed file, decompressed as a stream; a damaged shard is named."""
    name = path.name.lower()
    fh = _open(path, "rb")
    try:
        if name.endswith(".gz"):
            stream: IO[bytes] = gzip.GzipFile(fileobj=fh)  # type: ignore[assignment]
        elif name.endswith(".zst"):
            stream = io.BufferedReader(_ZstdFrames(fh, optional("zstandard", path)), 1 << 20)
        else:
            stream = fh
        yield from stream
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(
            f"cannot decompress {path} ({e}); the shard is damaged or truncated: fetch it again or remove it"
        ) from None
    except Exception as e:
        if type(e).__name__ == "ZstdError":
            raise ValueError(
                f"cannot decompress {path} ({e}); the shard is damaged or truncated: fetch it again or remove it"
            ) from None
        raise
    finally:
        fh.close()


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a .zst file, frame after frame. A file that ends inside a frame raises EOFError:
    zstandard's stream_reader reads a truncated file as a shorter corpus without a word. Compressed input is fed
    FEED bytes at a time, which bounds what one call can expand to (~32x FEED x 1000 for the most compressible
    data) whatever the file holds."""

    FEED = 4096

    def __init__(self, fh: IO[bytes], zstandard: Any):
        self.fh, self.zstandard = fh, zstandard
        self.frame: Any = None  # the current frame's decompressor; None between frames
        self.compressed = b""  # read from the file, not yet fed
        self.out, self.at = b"", 0  # decompressed, returned up to `at`

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self.at == len(self.out):
            if not self.compressed:
                self.compressed = self.fh.read(self.FEED)
                if not self.compressed:
                    if self.frame is not None:
                        raise EOFError("the file ends inside a zstd frame")
                    return 0
            if self.frame is None:
                self.frame = self.zstandard.ZstdDecompressor().decompressobj()
            chunk, self.compressed = self.compressed, b""
            self.out, self.at = self.frame.decompress(chunk), 0
            if self.frame.eof:  # the frame is complete; what follows it starts the next one
                self.compressed, self.frame = self.frame.unused_data, None
        n = min(len(buffer), len(self.out) - self.at)
        buffer[:n] = self.out[self.at : self.at + n]
        self.at += n
        return n


def _utf8(text: str, where: str, what: str) -> None:
    """Refuse text that is not Unicode text (a lone surrogate such as "\\ud800" in JSON): it has no UTF-8 bytes."""
    if not text.isascii():  # O(1): only non-ASCII text can hold a surrogate
        try:
            text.encode()
        except UnicodeEncodeError as e:
            raise ValueError(
                f"{where} has a lone surrogate ({text[e.start]!r}) in {what} at character {e.start + 1}, which is "
                "not Unicode text; fix or remove that line"
            ) from None


def _jsonl(path: Path, rel: str, text_field: str, id_field: str | None) -> Iterator[Doc]:
    """One document per line: {text_field: ...} with an optional id; without one the text's hash is the id,
    so duplicated documents always fall into the same split."""
    n = 0  # not enumerate(): its reused result tuple would keep the last line alive
    for line in _binary_lines(path):
        n += 1
        if not line or line.isspace():
            continue
        try:
            row = json.loads(line)
            del line  # the raw line is not held while its document is encoded
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not valid JSON ({e.msg}); write one JSON object per line") from None
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}:{n} is not UTF-8 text (bad byte at column {e.start + 1}); convert the file to "
                "UTF-8 or remove the line"
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            keys = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
            raise ValueError(
                f"{path}:{n} has no string '{text_field}' field (got {keys}); "
                f'write each line as {{"{text_field}": "..."}} or set data.text_field'
            ) from None
        _utf8(row[text_field], f"{path}:{n}", f"'{text_field}'")
        doc_id = _doc_id(row, text_field, id_field, f"{path}:{n}")
        _utf8(doc_id, f"{path}:{n}", "its id")
        yield f"{rel}#{doc_id}", row[text_field]


def _doc_id(row: dict[str, Any], text_field: str, id_field: str | None, where: str) -> str:
    if id_field is not None:
        if row.get(id_field) is None:
            raise ValueError(
                f"{where} has no '{id_field}' field (data.id_field); add it to every row or leave "
                "data.id_field unset (ids then come from 'id' or a hash of the text)"
            )
        return str(row[id_field])
    return str(row["id"]) if row.get("id") is not None else doc_hash(row[text_field])


def _parquet(path: Path, rel: str, text_field: str, id_field: str | None) -> Iterator[Doc]:
    pa = optional("pyarrow", path)
    pq = optional("pyarrow.parquet", path)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise ValueError(
            f"cannot read {path} as parquet ({_first_line(e)}); the shard is damaged or not parquet: "
            "fetch it again or remove it"
        ) from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise ValueError(
            f"{path} has no column '{text_field}' (columns: {', '.join(names)}); set data.text_field "
            "to the column that holds the text"
        )
    if not pa.types.is_string(pf.schema_arrow.field(text_field).type) and not pa.types.is_large_string(
        pf.schema_arrow.field(text_field).type
    ):
        raise ValueError(
            f"{path} column '{text_field}' holds {pf.schema_arrow.field(text_field).type}, not text; set "
            "data.text_field to a string column"
        )
    if id_field is not None and id_field not in names:
        raise ValueError(
            f"{path} has no column '{id_field}' (data.id_field; columns: {', '.join(names)}); fix "
            "data.id_field or leave it unset"
        )
    id_col = id_field or ("id" if "id" in names else None)
    columns = [text_field] + ([id_col] if id_col else [])
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            texts = batch.column(0).to_pylist()
            ids = batch.column(1).to_pylist() if id_col else [None] * len(texts)
            for text, doc_id in zip(texts, ids):
                if text is None:
                    raise ValueError(f"{path} row {row} has a null '{text_field}'; drop such rows or fill them")
                yield f"{rel}#{doc_hash(text) if doc_id is None else doc_id}", text
                row += 1
    except (OSError, pa.ArrowException) as e:
        raise ValueError(
            f"cannot read {path} near row {row} ({_first_line(e)}); the shard is damaged: fetch it again or remove it"
        ) from None


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


# Consecutive small shards are grouped into units of at most this many bytes on disk; a larger shard is a unit of its
# own. A unit is the grain of parallelism and of resuming: small enough that typical 30 MB - 2 GB shards each get a
# process, large enough that thousands of tiny files do not become thousands of units. The environment variable
# exists so tests can cut a small corpus into many units.
UNIT_BYTES = 16 << 20


@dataclass(frozen=True)
class Corpus:
    name: str
    label: str  # human-readable origin, for messages and meta.json
    files: tuple[Path, ...]  # every file whose bytes define the corpus (content-hashed for the cache key)
    units: tuple[Any, ...]  # descriptions of independent pieces, in corpus order
    unit_bytes: tuple[int, ...]  # bytes on disk per unit (for the progress bar)
    read_unit: Callable[[Any], Iterator[Doc]]  # documents of one unit in a fixed order, empty ones included

    def read(self) -> Iterator[Doc]:
        for unit in self.units:
            yield from self.read_unit(unit)

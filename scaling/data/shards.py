"""Tokenize one work unit of a corpus into its own train/val token files, written atomically.

A unit's outputs are `<i>.train.bin`, `<i>.val.bin` and `<i>.json` (its counts), each renamed into place when
complete and the JSON last, so a unit is finished exactly when its JSON exists: a build killed at any moment keeps
its finished units and redoes only the rest. Documents go to the validation split by a hash of their id alone
(`split_key`), so the split never depends on how the corpus was cut into units.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from scaling.base.atomic import atomic_file, write_atomic
from scaling.data.sources import Doc

# Text encoded per tokenizer call: large enough for the tokenizer's batching, small enough that its per-token
# bookkeeping (HF Encoding objects are ~100 B/token) stays well under the 1 GB memory goal.
ENCODE_CHUNK_BYTES = 1 << 20
# A longer document (a 100 MB line) is encoded in pieces of at most this many characters, so memory does not grow
# with its length. Cut before a space, the pieces give the whole text's tokens; smaller pieces also encode faster
# with SentencePiece (2.0 MB/s at 4K characters, 1.5 at 64K, 0.8 at 1M, measured here), not slower with HF.
PIECE_CHARS = 1 << 16
SPLITS = ("train", "val")


class Encoder(Protocol):
    vocab_size: int
    bos_id: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def token_bytes(self) -> np.ndarray: ...

    def token_pieces(self) -> list[bytes]: ...


class Spelling:
    """The bytes every token id stands for: `spells(ids, text)` checks that a token stream stands for exactly these
    bytes (the lossless check; bits per byte divides by their number), `spell(ids)` gives them (for the message).

    The check is vectorised 8 bytes at a time: each token's first bytes as little-endian uint64 words, compared
    with the text read as uint64 at every token's start (an unaligned view) under a mask of the token's length.
    Measured here: 3% of the time a one-thread byte-level BPE (8,192 ids) takes to encode the same 8 MB (0.35 s vs
    12.5 s); spelling every byte out with numpy cost ~20%. Tokens over WORDS * 8 bytes are compared one by one."""

    WORDS = 8  # uint64 words per token in the table: tokens up to 64 bytes are checked vectorised
    _MASKS = np.array([(1 << (8 * r)) - 1 for r in range(8)] + [2**64 - 1], dtype=np.uint64)

    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces
        self.lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        words = min(self.WORDS, max(1, -(-int(self.lengths.max(initial=0)) // 8)))
        table = np.zeros((len(pieces), words * 8), dtype=np.uint8)
        for i, piece in enumerate(pieces):
            head = piece[: words * 8]
            table[i, : len(head)] = np.frombuffer(head, dtype=np.uint8)
        as_words = table.view("<u8")
        self.columns = [np.ascontiguousarray(as_words[:, k]) for k in range(words)]
        self.masks = [self._MASKS[np.clip(self.lengths - 8 * k, 0, 8)] for k in range(words)]
        self.long = words * 8  # tokens longer than this are compared whole, one by one

    def spells(self, ids: np.ndarray, text: bytes) -> bool:
        """Whether the tokens `ids`, in order, stand for exactly the bytes `text`."""
        ids = np.asarray(ids, dtype=np.intp)
        lens = np.take(self.lengths, ids)
        if int(lens.sum()) != len(text):
            return False
        starts = np.cumsum(lens) - lens
        padded = np.frombuffer(text + bytes(8), dtype=np.uint8)
        at = np.ndarray(shape=(len(text) + 1,), dtype="<u8", buffer=padded, strides=(1,))  # uint64 at every byte
        sel: np.ndarray | None = None  # k = 0: every token
        for k, (column, mask) in enumerate(zip(self.columns, self.masks)):
            if k:
                sel = np.flatnonzero(lens > 8 * k)
                if not len(sel):
                    break
            pos, tok = (starts, ids) if sel is None else (starts[sel] + 8 * k, ids[sel])
            if np.any((np.take(at, pos) ^ np.take(column, tok)) & np.take(mask, tok)):
                return False
        return all(
            text[a : a + n] == self.pieces[i]
            for a, n, i in zip(*(x[lens > self.long].tolist() for x in (starts, lens, ids)))
        )

    def spell(self, ids: np.ndarray) -> np.ndarray:
        """uint8 bytes of the tokens `ids`, in order."""
        ids = np.asarray(ids, dtype=np.intp)
        lens = self.lengths[ids]
        offsets = np.cumsum(self.lengths) - self.lengths
        out_starts = np.cumsum(lens) - lens
        flat = np.frombuffer(b"".join(self.pieces), dtype=np.uint8)
        # byte j of the output is byte (j - out_start) of its token, i.e. flat[offset + j - out_start]
        index = np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(offsets[ids] - out_starts, lens)
        return flat[index]


def text_pieces(text: str, size: int | None = None) -> list[str] | None:
    """None when `text` is encoded whole (at most `size` characters), else its consecutive pieces (joined, they
    are the text) of at most `size` characters, each cut before a space in the window's second half where there
    is one: word-level pre-tokenizers (byte-level BPE, SentencePiece) start a token there anyway, so the tokens
    differ from the whole text's only where no space was found."""
    size = size or PIECE_CHARS
    if len(text) <= size:
        return None
    out, start = [], 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind(" ", start + size // 2, end)
        cut = cut if cut > start else end
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def split_key(doc_id: str) -> float:
    """Uniform in [0, 1) from the document id alone: a document never changes split when others are added."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") / 2**64


@dataclass(frozen=True)
class UnitJob:
    out_dir: Path  # the build's units/ folder
    val_fraction: float
    overrides: dict[str, str]  # doc_id -> split, to guarantee a non-empty split in tiny corpora (see prepare.py)
    dtype: str
    tokenizer: str = "(trained SentencePiece)"  # named when it is not lossless


def unit_stem(out_dir: Path, index: int) -> Path:
    return out_dir / f"{index:06d}"


def read_unit_stats(out_dir: Path, index: int, dtype: str) -> dict[str, Any] | None:
    """The finished unit's counts, or None when it is not finished (or its files do not match them)."""
    stem = unit_stem(out_dir, index)
    try:
        stats = json.loads(stem.with_suffix(".json").read_text())
        size = np.dtype(dtype).itemsize
        if all(Path(f"{stem}.{k}.bin").stat().st_size == stats["tokens"][k] * size for k in SPLITS):
            return stats
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def encode_unit(
    docs: Iterator[Doc],
    index: int,
    job: UnitJob,
    encoder: Encoder,
    spelling: Spelling,
    where: str,
    on_text: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Tokenize `docs` into unit `index` of job.out_dir; returns the counts also written to its JSON. `on_text` is
    called with the bytes of text of each encoded batch (progress)."""
    stem = unit_stem(job.out_dir, index)
    stats: dict[str, Any] = {k: {s: 0 for s in SPLITS} for k in ("docs", "bytes", "tokens")}
    stats |= {"min_key": None, "max_val_key": None, "ids": [], "overrides": job.overrides}
    with atomic_file(Path(f"{stem}.train.bin"), "wb") as f_train, atomic_file(Path(f"{stem}.val.bin"), "wb") as f_val:
        files = {"train": f_train, "val": f_val}
        # (doc_id, the text or a piece of it, the piece's byte offset in its document) waiting to be encoded
        pending: dict[str, list[tuple[str, str, int]]] = {s: [] for s in SPLITS}
        pending_chars = dict.fromkeys(SPLITS, 0)

        def flush(split: str) -> None:
            if not pending[split]:
                return
            texts = [t for _, t, _ in pending[split]]
            encoded = encoder.encode_batch(texts)
            arr = _stream(encoded, [offset == 0 for _, _, offset in pending[split]], encoder.bos_id, job.dtype)
            raw = [t.encode() for t in texts]
            _check_lossless(arr, encoded, encoder.bos_id, spelling, raw, pending[split], where, job.tokenizer)
            arr.tofile(files[split])  # documents are separated by the bos token; windows may span documents
            stats["tokens"][split] += len(arr)
            pending[split], pending_chars[split] = [], 0
            if on_text is not None:
                on_text(sum(map(len, raw)))

        for doc_id, text in docs:
            key = split_key(doc_id)
            split = job.overrides.get(doc_id) or ("val" if key < job.val_fraction else "train")
            if stats["min_key"] is None or key < stats["min_key"][0]:
                stats["min_key"] = [key, doc_id]
            if split == "val" and (stats["max_val_key"] is None or key > stats["max_val_key"][0]):
                stats["max_val_key"] = [key, doc_id]
            if len(stats["ids"]) < 2 and doc_id not in stats["ids"]:
                stats["ids"].append(doc_id)  # two distinct ids are enough to know a split is possible
            stats["docs"][split] += 1
            offset = 0  # bytes of the document so far: its pieces are counted, not a UTF-8 copy of all of it
            for piece in text_pieces(text) or [text]:
                pending[split].append((doc_id, piece, offset))
                offset += utf8_size(piece)
                pending_chars[split] += len(piece)
                if pending_chars[split] >= ENCODE_CHUNK_BYTES:
                    flush(split)
            stats["bytes"][split] += offset  # of the whole document: bits per byte stays exact
        for split in SPLITS:
            flush(split)
    write_atomic(stem.with_suffix(".json"), json.dumps(stats) + "\n")  # last: marks the unit finished
    return stats


def _stream(encoded: list[list[int]], starts_doc: list[bool], bos: int, dtype: str) -> np.ndarray:
    """[bos, *doc] for every document, as one array: a piece that continues a document gets no bos."""
    lengths = np.fromiter((len(e) + f for e, f in zip(encoded, starts_doc)), dtype=np.int64, count=len(encoded))
    out = np.empty(int(lengths.sum()), dtype=dtype)
    starts = np.cumsum(lengths) - lengths
    for s, e, f in zip(starts.tolist(), encoded, starts_doc):
        if f:
            out[s] = bos
        out[s + f : s + f + len(e)] = e
    return out


def _check_lossless(
    arr: np.ndarray,
    encoded: list[list[int]],
    bos: int,
    spelling: Spelling,
    raw: list[bytes],
    items: list[tuple[str, str, int]],
    where: str,
    tokenizer: str,
) -> None:
    """Bits per byte divides by the bytes the target tokens stand for: they must be each document's bytes, byte for
    byte (a tokenizer that lowercases keeps the byte count but not the text)."""
    n_docs = sum(offset == 0 for _, _, offset in items)
    if int(np.count_nonzero(arr == bos)) != n_docs:  # the separator appeared inside a document
        k = next(j for j, ids in enumerate(encoded) if bos in ids)
        detail = "the document separator token appears inside the text"
    else:
        joined = b"".join(raw)
        if spelling.spells(arr, joined):
            return
        spelled, text = spelling.spell(arr), np.frombuffer(joined, dtype=np.uint8)
        n = min(len(spelled), len(text))
        diff = np.flatnonzero(spelled[:n] != text[:n])
        at = int(diff[0]) if len(diff) else n  # the first byte where they part
        ends = np.cumsum([len(r) for r in raw])
        k = min(int(np.searchsorted(ends, at, side="right")), len(raw) - 1)  # the piece
        offset = items[k][2] + at - int(ends[k - 1] if k else 0)  # in its document
        if len(diff):
            has, spell = bytes(text[at : at + 8]), bytes(spelled[at : at + 8])
            detail = f"at byte {offset} the text has {has!r}, its tokens spell {spell!r}"
        else:
            detail = f"its tokens spell {len(spelled)} bytes of text, the text has {len(text)}"
    raise ValueError(
        f"the tokenizer {tokenizer} is not lossless on document {items[k][0]} of {where} ({detail}), so bits per "
        "byte would be wrong; use a byte-level BPE tokenizer.json without a normaliser or added prefix space"
    )
